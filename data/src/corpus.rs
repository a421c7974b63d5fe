//! The corpus: UTF-8 text read from a `.txt` file or from a member of a
//! `.zip`, with d2l's optional clean-up (newlines to spaces, first N
//! characters).

use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::{Path, PathBuf};

use crate::archive::read_member;
use crate::error::{Error, SizeSource};
use crate::limited::{read_limited, LimitedError};

/// How many characters d2l's chapter keeps (`corpus_chars[0:10000]`).
pub const D2L_CHARS: usize = 10_000;

/// Default of [`CorpusOptions::max_bytes`]: 64 MiB, some 400 times the
/// Jay Chou corpus.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// How to read a corpus. [`Default`] reads the whole text as it is;
/// [`CorpusOptions::d2l`] reproduces the d2l chapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusOptions {
    /// The zip member to read, by its full name in the archive (any file
    /// entry). `None`: the archive's only *text member*, a file entry whose
    /// name ends in `.txt` (any case) outside `__MACOSX/`; none or several
    /// of them is an error. Ignored for plain text files.
    pub member: Option<String>,
    /// Replace every `\n` and every `\r` by a space (so `\r\n` becomes two
    /// spaces, as in d2l).
    pub newlines_to_spaces: bool,
    /// Keep only the first N characters (Unicode scalar values, not bytes).
    /// `None`: the whole text. Must not be `Some(0)`.
    pub max_chars: Option<usize>,
    /// Refuse a corpus of more bytes than this: the file's size, a zip
    /// member's declared uncompressed size and the bytes actually read are
    /// all checked against it (zip-bomb guard). Must not be 0.
    pub max_bytes: u64,
}

impl Default for CorpusOptions {
    fn default() -> Self {
        CorpusOptions {
            member: None,
            newlines_to_spaces: false,
            max_chars: None,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl CorpusOptions {
    /// d2l's chapter: newlines and carriage returns replaced by spaces, then
    /// the first [`D2L_CHARS`] characters. On the Jay Chou lyrics this gives
    /// a vocabulary of 1,027 characters.
    pub fn d2l() -> Self {
        CorpusOptions {
            newlines_to_spaces: true,
            max_chars: Some(D2L_CHARS),
            ..CorpusOptions::default()
        }
    }

    /// The same options, reading the zip member `name`.
    pub fn with_member(mut self, name: impl Into<String>) -> Self {
        self.member = Some(name.into());
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if self.max_chars == Some(0) {
            return Err(Error::InvalidOption {
                what: "max_chars",
                reason: "keeping 0 characters leaves no corpus",
            });
        }
        if self.max_bytes == 0 {
            return Err(Error::InvalidOption {
                what: "max_bytes",
                reason: "a limit of 0 bytes refuses every corpus",
            });
        }
        Ok(())
    }
}

/// How the bytes of a corpus are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The file is the UTF-8 text.
    Text,
    /// The file is a zip archive; the text is one of its members.
    Zip,
}

impl Format {
    /// [`Format::Zip`] for a path ending in `.zip` (any case), else
    /// [`Format::Text`].
    pub fn of_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("zip") => Format::Zip,
            _ => Format::Text,
        }
    }
}

/// A corpus read into memory, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    path: PathBuf,
    member: Option<String>,
    text: String,
    chars: usize,
}

impl Corpus {
    /// Reads the corpus at `path`: a zip archive when the name ends in `.zip`
    /// (see [`Format::of_path`]), UTF-8 text otherwise. Reads only; every
    /// bad input is an [`Error`] naming the path and the reason.
    pub fn load(path: impl AsRef<Path>, options: &CorpusOptions) -> Result<Corpus, Error> {
        let path = path.as_ref();
        options.validate()?;
        let io_error = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: path.to_path_buf(),
            },
            _ => Error::Io {
                path: path.to_path_buf(),
                source,
            },
        };
        let meta = std::fs::metadata(path).map_err(io_error)?;
        if meta.is_dir() {
            return Err(Error::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        let file = File::open(path).map_err(io_error)?;
        match Format::of_path(path) {
            Format::Zip => {
                let (member, bytes) = read_member(
                    path,
                    BufReader::new(file),
                    options.member.as_deref(),
                    options.max_bytes,
                )?;
                Corpus::from_utf8(path, Some(member), bytes, options)
            }
            Format::Text => {
                if meta.len() > options.max_bytes {
                    return Err(Error::TooLarge {
                        path: path.to_path_buf(),
                        member: None,
                        size: meta.len(),
                        limit: options.max_bytes,
                        source: SizeSource::File,
                    });
                }
                let bytes = match read_limited(file, options.max_bytes, meta.len()) {
                    Ok(bytes) => bytes,
                    Err(LimitedError::Over { read }) => {
                        return Err(Error::TooLarge {
                            path: path.to_path_buf(),
                            member: None,
                            size: read,
                            limit: options.max_bytes,
                            source: SizeSource::Read,
                        })
                    }
                    Err(LimitedError::Io(source)) => return Err(io_error(source)),
                };
                Corpus::from_utf8(path, None, bytes, options)
            }
        }
    }

    /// The same as [`Corpus::load`] on bytes already in memory; `path` only
    /// names them in errors and in [`Corpus::path`].
    pub fn from_bytes(
        path: impl Into<PathBuf>,
        format: Format,
        bytes: &[u8],
        options: &CorpusOptions,
    ) -> Result<Corpus, Error> {
        let path = path.into();
        options.validate()?;
        match format {
            Format::Zip => {
                let (member, text) = read_member(
                    &path,
                    Cursor::new(bytes),
                    options.member.as_deref(),
                    options.max_bytes,
                )?;
                Corpus::from_utf8(&path, Some(member), text, options)
            }
            Format::Text => {
                if bytes.len() as u64 > options.max_bytes {
                    return Err(Error::TooLarge {
                        path,
                        member: None,
                        size: bytes.len() as u64,
                        limit: options.max_bytes,
                        source: SizeSource::File,
                    });
                }
                Corpus::from_utf8(&path, None, bytes.to_vec(), options)
            }
        }
    }

    /// Decodes and cleans up the raw bytes. The whole text is decoded before
    /// it is cut to `max_chars`, as d2l does: invalid UTF-8 anywhere is an
    /// error.
    fn from_utf8(
        path: &Path,
        member: Option<String>,
        bytes: Vec<u8>,
        options: &CorpusOptions,
    ) -> Result<Corpus, Error> {
        if bytes.is_empty() {
            return Err(Error::Empty {
                path: path.to_path_buf(),
                member,
            });
        }
        let mut text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                return Err(Error::InvalidUtf8 {
                    path: path.to_path_buf(),
                    member,
                    offset: e.utf8_error().valid_up_to(),
                })
            }
        };
        if options.newlines_to_spaces && text.contains(['\n', '\r']) {
            text = text.replace(['\n', '\r'], " ");
        }
        let mut chars = text.chars().count();
        if let Some(keep) = options.max_chars {
            if let Some((cut, _)) = text.char_indices().nth(keep) {
                text.truncate(cut);
                chars = keep;
            }
        }
        Ok(Corpus {
            path: path.to_path_buf(),
            member,
            text,
            chars,
        })
    }

    /// The text, cleaned up as the options asked.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text, taken out of the corpus.
    pub fn into_text(self) -> String {
        self.text
    }

    /// Number of characters (Unicode scalar values) of [`Corpus::text`].
    pub fn chars(&self) -> usize {
        self.chars
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The zip member it was read from, for an archive.
    pub fn member(&self) -> Option<&str> {
        self.member.as_deref()
    }
}
