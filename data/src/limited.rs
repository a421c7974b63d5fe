//! Reading a whole stream into memory under a byte limit: the guard that
//! holds whatever a file or an archive claims about its size.

use std::io::{self, Read};

/// Why [`read_limited`] stopped.
#[derive(Debug)]
pub(crate) enum LimitedError {
    /// More than the limit came; `read` bytes had been read when it stopped
    /// (at most the limit plus one).
    Over {
        /// Bytes read.
        read: u64,
    },
    /// The reader failed.
    Io(io::Error),
}

/// Reads `reader` to its end, or fails as soon as more than `limit` bytes
/// came: memory stays bounded by `limit` + 1 bytes whatever the reader is
/// (an endless special file, a zip member decompressing past what it
/// declared). `size_hint` (e.g. a declared size) only sizes the first
/// allocation, clamped to the limit.
pub(crate) fn read_limited<R: Read>(
    reader: R,
    limit: u64,
    size_hint: u64,
) -> Result<Vec<u8>, LimitedError> {
    let capacity = size_hint.min(limit).min(usize::MAX as u64) as usize;
    let mut bytes = Vec::with_capacity(capacity);
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(LimitedError::Io)?;
    let read = bytes.len() as u64;
    if read > limit {
        return Err(LimitedError::Over { read });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_reader_stops_one_byte_past_the_limit() {
        match read_limited(io::repeat(b'a'), 1000, 0) {
            Err(LimitedError::Over { read }) => assert_eq!(read, 1001),
            other => panic!("expected Over, got {other:?}"),
        }
    }

    #[test]
    fn reader_at_the_limit_is_accepted_whatever_the_hint() {
        let data = vec![7u8; 1000];
        let bytes = read_limited(&data[..], 1000, u64::MAX).expect("at the limit");
        assert_eq!(bytes, data);
        let bytes = read_limited(&data[..1], 1000, 0).expect("under the limit");
        assert_eq!(bytes, [7]);
    }

    #[test]
    fn reader_errors_are_passed_on() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        match read_limited(Failing, 10, 10) {
            Err(LimitedError::Io(e)) => assert_eq!(e.to_string(), "disk on fire"),
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
