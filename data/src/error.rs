//! The one error type of recur-data: every bad input (path, archive, text,
//! vocabulary, sampler dimensions) is answered with a value naming what is
//! wrong and where, never a panic. Loading never writes anything.

use std::fmt;
use std::path::PathBuf;

use crate::sampler::SamplerKind;

/// How many member names a message lists before eliding the rest.
const NAMES_SHOWN: usize = 8;
/// How many unknown characters a message lists before eliding the rest.
const CHARS_SHOWN: usize = 16;

/// Which size went over [`CorpusOptions::max_bytes`](crate::CorpusOptions::max_bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSource {
    /// The file's size on disk (plain text).
    File,
    /// The uncompressed size a zip member declares in the archive's
    /// directory, checked before anything is decompressed.
    Declared,
    /// The bytes actually read (decompressed), counted while reading: the
    /// guard against a member, or a special file, that lies about its size.
    Read,
}

/// What recur-data found wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The path does not exist.
    NotFound {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// The path is a directory, not a file.
    IsDirectory {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// Any other failure of the operating system while opening or reading.
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file, or the chosen zip member, holds no bytes.
    Empty {
        /// The file.
        path: PathBuf,
        /// The zip member, when the file is a zip.
        member: Option<String>,
    },
    /// A `.zip` path that is not a readable zip archive: not a zip at all,
    /// truncated, corrupt (bad checksum, a member larger than it declares),
    /// encrypted or compressed with a method other than stored / deflate.
    BadZip {
        /// The archive.
        path: PathBuf,
        /// What the zip reader said, with the member when one was concerned.
        reason: String,
    },
    /// The archive has no text member (a file whose name ends in `.txt`).
    NoTextMember {
        /// The archive.
        path: PathBuf,
        /// Every entry of the archive, as named there.
        members: Vec<String>,
    },
    /// The archive has several text members and none was named
    /// ([`CorpusOptions::member`](crate::CorpusOptions::member)).
    AmbiguousMember {
        /// The archive.
        path: PathBuf,
        /// The text members, in archive order.
        candidates: Vec<String>,
    },
    /// The named member is not in the archive (or is a directory).
    MemberNotFound {
        /// The archive.
        path: PathBuf,
        /// The name that was asked for.
        member: String,
        /// Every entry of the archive, as named there.
        members: Vec<String>,
    },
    /// The corpus is larger than [`CorpusOptions::max_bytes`](crate::CorpusOptions::max_bytes)
    /// (the zip-bomb guard).
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The zip member, when the file is a zip.
        member: Option<String>,
        /// The size found; for [`SizeSource::Read`], the bytes read when
        /// reading stopped (one chunk past the limit at most).
        size: u64,
        /// The limit in force.
        limit: u64,
        /// Which size it is.
        source: SizeSource,
    },
    /// The bytes are not UTF-8.
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// The zip member, when the file is a zip.
        member: Option<String>,
        /// Byte offset of the first invalid sequence, from the start of the
        /// (decompressed) text.
        offset: usize,
    },
    /// An option is out of its domain (e.g. keeping the first 0 characters
    /// of a corpus, a replacement character outside the vocabulary).
    InvalidOption {
        /// The option's name.
        what: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The corpus is too short for even one batch of the chosen sampler.
    TooShort {
        /// The corpus file, when known (see [`Error::with_path`]).
        path: Option<PathBuf>,
        /// The sampler that was asked for.
        sampler: SamplerKind,
        /// `B`.
        batch_size: usize,
        /// `T`.
        num_steps: usize,
        /// The fewest tokens that give one batch.
        needed: usize,
        /// The tokens there are.
        actual: usize,
    },
    /// A dimension is zero, or products of dimensions overflow `usize`.
    Dim {
        /// The dimension's name, e.g. `"batch_size"`.
        what: &'static str,
        /// The value that was passed.
        value: usize,
    },
    /// A caller slice has the wrong length.
    Length {
        /// The argument's name, e.g. `"inputs"`.
        what: &'static str,
        /// The length needed.
        expected: usize,
        /// The length passed.
        actual: usize,
    },
    /// A batch index is not below the number of batches of an epoch.
    BatchIndex {
        /// The index asked for.
        index: usize,
        /// Batches per epoch.
        epoch_size: usize,
    },
    /// Text to encode holds characters that are not in the vocabulary.
    UnknownChars {
        /// The distinct unknown characters, in order of first appearance.
        chars: Vec<char>,
        /// Character position (not byte offset) of the first one in the text.
        first_position: usize,
    },
    /// A token id is not below the vocabulary size.
    UnknownId {
        /// Position of the id in the slice.
        index: usize,
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A serialised vocabulary lists a character twice.
    DuplicateChar {
        /// The character.
        ch: char,
        /// Its first id.
        first: usize,
        /// Its second id.
        second: usize,
    },
    /// A vocabulary would be empty (empty text or empty serialised form).
    EmptyVocab,
}

impl Error {
    /// Fills in the corpus path of an error that has a slot for one and no
    /// path yet ([`Error::TooShort`] from a sampler built on token ids), so
    /// the trainer's message names the file.
    pub fn with_path(self, corpus_path: impl Into<PathBuf>) -> Error {
        match self {
            Error::TooShort {
                path: None,
                sampler,
                batch_size,
                num_steps,
                needed,
                actual,
            } => Error::TooShort {
                path: Some(corpus_path.into()),
                sampler,
                batch_size,
                num_steps,
                needed,
                actual,
            },
            other => other,
        }
    }

    /// The file the error is about, when there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::NotFound { path }
            | Error::IsDirectory { path }
            | Error::Io { path, .. }
            | Error::Empty { path, .. }
            | Error::BadZip { path, .. }
            | Error::NoTextMember { path, .. }
            | Error::AmbiguousMember { path, .. }
            | Error::MemberNotFound { path, .. }
            | Error::TooLarge { path, .. }
            | Error::InvalidUtf8 { path, .. } => Some(path),
            Error::TooShort { path, .. } => path.as_deref(),
            _ => None,
        }
    }
}

/// `path` or `path!member`, the way messages name a corpus.
struct Place<'a>(&'a std::path::Path, Option<&'a str>);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(member) => write!(f, "{} (member `{member}`)", self.0.display()),
            None => write!(f, "{}", self.0.display()),
        }
    }
}

/// A list of names, the first [`NAMES_SHOWN`] of them.
struct Names<'a>(&'a [String]);

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, name) in self.0.iter().take(NAMES_SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{name}`")?;
        }
        if self.0.len() > NAMES_SHOWN {
            write!(f, " and {} more", self.0.len() - NAMES_SHOWN)?;
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound { path } => write!(f, "{}: no such file", path.display()),
            Error::IsDirectory { path } => {
                write!(f, "{}: is a directory, not a corpus file", path.display())
            }
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Empty { path, member } => {
                write!(f, "{}: empty corpus", Place(path, member.as_deref()))
            }
            Error::BadZip { path, reason } => {
                write!(
                    f,
                    "{}: not a readable zip archive: {reason}",
                    path.display()
                )
            }
            Error::NoTextMember { path, members } => write!(
                f,
                "{}: the archive has no text member (`*.txt`); its entries: {}",
                path.display(),
                Names(members)
            ),
            Error::AmbiguousMember { path, candidates } => write!(
                f,
                "{}: the archive has {} text members ({}); name the one to read",
                path.display(),
                candidates.len(),
                Names(candidates)
            ),
            Error::MemberNotFound {
                path,
                member,
                members,
            } => write!(
                f,
                "{}: no file member `{member}` in the archive; its entries: {}",
                path.display(),
                Names(members)
            ),
            Error::TooLarge {
                path,
                member,
                size,
                limit,
                source,
            } => {
                let what = match source {
                    SizeSource::File => "the file has",
                    SizeSource::Declared => "the member declares",
                    SizeSource::Read => "reading gave at least",
                };
                write!(
                    f,
                    "{}: too large: {what} {size} bytes, over the limit of {limit} bytes",
                    Place(path, member.as_deref())
                )
            }
            Error::InvalidUtf8 {
                path,
                member,
                offset,
            } => write!(
                f,
                "{}: not UTF-8: invalid byte sequence at byte offset {offset}",
                Place(path, member.as_deref())
            ),
            Error::InvalidOption { what, reason } => {
                write!(f, "option `{what}`: {reason}")
            }
            Error::TooShort {
                path,
                sampler,
                batch_size,
                num_steps,
                needed,
                actual,
            } => {
                if let Some(path) = path {
                    write!(f, "{}: ", path.display())?;
                }
                write!(
                    f,
                    "corpus too short: {actual} tokens, the {} sampler needs at least \
                     {needed} for one batch of {batch_size} sequences of {num_steps} steps",
                    sampler.name()
                )
            }
            Error::Dim { what, value } => {
                write!(f, "dimension `{what}` = {value} is not allowed")
            }
            Error::Length {
                what,
                expected,
                actual,
            } => write!(
                f,
                "slice `{what}` has length {actual}, the dimensions need {expected}"
            ),
            Error::BatchIndex { index, epoch_size } => write!(
                f,
                "batch index {index} is not below the {epoch_size} batches of an epoch"
            ),
            Error::UnknownChars {
                chars,
                first_position,
            } => {
                write!(
                    f,
                    "{} character(s) not in the vocabulary (first at character {first_position}):",
                    chars.len()
                )?;
                for ch in chars.iter().take(CHARS_SHOWN) {
                    write!(f, " {ch:?}")?;
                }
                if chars.len() > CHARS_SHOWN {
                    write!(f, " and {} more", chars.len() - CHARS_SHOWN)?;
                }
                Ok(())
            }
            Error::UnknownId {
                index,
                id,
                vocab_size,
            } => write!(
                f,
                "token id {id} at index {index} is not below the vocabulary size {vocab_size}"
            ),
            Error::DuplicateChar { ch, first, second } => write!(
                f,
                "vocabulary lists {ch:?} twice, at ids {first} and {second}"
            ),
            Error::EmptyVocab => f.write_str("vocabulary would be empty"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
