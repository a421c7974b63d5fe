//! Choosing and reading the corpus member of a zip archive.
//!
//! A *text member* is a file entry (not a directory, not a symlink) whose
//! name ends in `.txt`, any case, outside the `__MACOSX/` resource-fork
//! folder that macOS adds. Without a named member the archive must hold
//! exactly one; a named member may be any file entry, `.txt` or not.

use std::io::{Read, Seek};
use std::path::Path;

use zip::ZipArchive;

use crate::error::{Error, SizeSource};
use crate::limited::{read_limited, LimitedError};

/// One entry of the archive's directory.
struct Entry {
    index: usize,
    name: String,
    is_file: bool,
}

impl Entry {
    fn is_text(&self) -> bool {
        self.is_file
            && !self.name.starts_with("__MACOSX/")
            && self.name.to_ascii_lowercase().ends_with(".txt")
    }
}

fn bad_zip(path: &Path, member: Option<&str>, err: impl std::fmt::Display) -> Error {
    let reason = match member {
        Some(member) => format!("member `{member}`: {err}"),
        None => err.to_string(),
    };
    Error::BadZip {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads the corpus member of the archive in `reader`: the one named
/// `member`, or else the only text member. Returns its name and its
/// (decompressed) bytes, at most `max_bytes` of them.
pub(crate) fn read_member<R: Read + Seek>(
    path: &Path,
    reader: R,
    member: Option<&str>,
    max_bytes: u64,
) -> Result<(String, Vec<u8>), Error> {
    // Every failure here, I/O included, is reported as an unreadable archive:
    // on a file that opened fine, a short read means a truncated archive.
    let mut archive = ZipArchive::new(reader).map_err(|e| bad_zip(path, None, e))?;

    let mut entries = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let entry = archive
            .by_index_data(index)
            .map_err(|e| bad_zip(path, None, e))?;
        let name = match entry.name() {
            Ok(name) => name.into_owned(),
            Err(_) => String::from_utf8_lossy(entry.name_raw()).into_owned(),
        };
        entries.push(Entry {
            index,
            name,
            is_file: entry.is_file(),
        });
    }
    let names = || entries.iter().map(|e| e.name.clone()).collect::<Vec<_>>();

    let chosen: Vec<&Entry> = match member {
        Some(wanted) => entries
            .iter()
            .filter(|e| e.is_file && e.name == wanted)
            .collect(),
        None => entries.iter().filter(|e| e.is_text()).collect(),
    };
    let chosen = match (chosen.as_slice(), member) {
        ([one], _) => *one,
        ([], Some(wanted)) => {
            return Err(Error::MemberNotFound {
                path: path.to_path_buf(),
                member: wanted.to_owned(),
                members: names(),
            })
        }
        ([], None) => {
            return Err(Error::NoTextMember {
                path: path.to_path_buf(),
                members: names(),
            })
        }
        (several, _) => {
            return Err(Error::AmbiguousMember {
                path: path.to_path_buf(),
                candidates: several.iter().map(|e| e.name.clone()).collect(),
            })
        }
    };
    let name = chosen.name.clone();

    let file = archive
        .by_index(chosen.index)
        .map_err(|e| bad_zip(path, Some(&name), e))?;
    let declared = file.size();
    if declared > max_bytes {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            member: Some(name),
            size: declared,
            limit: max_bytes,
            source: SizeSource::Declared,
        });
    }
    // The zip reader itself refuses to decompress past the declared size;
    // the limit is enforced again here on the bytes actually produced so that
    // the guard does not rest on that.
    match read_limited(file, max_bytes, declared) {
        Ok(bytes) => Ok((name, bytes)),
        Err(LimitedError::Over { read }) => Err(Error::TooLarge {
            path: path.to_path_buf(),
            member: Some(name),
            size: read,
            limit: max_bytes,
            source: SizeSource::Read,
        }),
        Err(LimitedError::Io(e)) => Err(bad_zip(path, Some(&name), e)),
    }
}
