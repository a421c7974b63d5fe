//! The engine's error type: every failure names what was being done, which
//! kernel (if any) and the shapes involved, around the driver's own error.

use std::fmt;

use cust::error::CudaError;

/// What went wrong in the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// No usable CUDA device: no NVIDIA driver (the build linked recur's
    /// no-device stub), or a driver without devices.
    NoDevice,
    /// A driver call failed.
    Cuda {
        /// What the engine was doing, e.g. `"launching the forward kernel"`.
        doing: &'static str,
        /// The kernel involved, if the call concerned one.
        kernel: Option<&'static str>,
        /// The shapes involved, e.g. `"T=35 B=32 H=256 V=1027"`.
        shape: String,
        /// The driver's error.
        source: CudaError,
    },
    /// The caller's arguments are wrong (lengths, token ids, dimensions);
    /// recur-core's check names what.
    Input(recur_core::Error),
    /// A size is beyond what a kernel supports.
    Limit {
        /// Which size, e.g. `"batch"`.
        what: &'static str,
        /// The value asked for.
        value: usize,
        /// The largest value supported.
        limit: usize,
    },
    /// A buffer set or model was made for other dimensions or another
    /// precision than the call's.
    Mismatch {
        /// What does not match, e.g. `"buffers' hidden size"`.
        what: &'static str,
        /// The value the call needs.
        expected: String,
        /// The value found.
        actual: String,
    },
}

impl Error {
    /// Wraps a driver error; [`CudaError::NoDevice`] becomes [`Error::NoDevice`].
    pub(crate) fn cuda(
        source: CudaError,
        doing: &'static str,
        kernel: Option<&'static str>,
        shape: impl FnOnce() -> String,
    ) -> Error {
        if source == CudaError::NoDevice {
            Error::NoDevice
        } else {
            Error::Cuda {
                doing,
                kernel,
                shape: shape(),
                source,
            }
        }
    }

    /// Whether this is [`Error::NoDevice`] (tests and benches skip on it).
    pub fn is_no_device(&self) -> bool {
        matches!(self, Error::NoDevice)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoDevice => write!(f, "no CUDA device"),
            Error::Cuda {
                doing,
                kernel,
                shape,
                source,
            } => {
                write!(f, "CUDA error while {doing}")?;
                if let Some(k) = kernel {
                    write!(f, " (kernel `{k}`")?;
                    if !shape.is_empty() {
                        write!(f, ", {shape}")?;
                    }
                    write!(f, ")")?;
                } else if !shape.is_empty() {
                    write!(f, " ({shape})")?;
                }
                write!(f, ": {source}")
            }
            Error::Input(e) => write!(f, "invalid input: {e}"),
            Error::Limit { what, value, limit } => write!(
                f,
                "`{what}` = {value} is beyond the engine's limit of {limit}"
            ),
            Error::Mismatch {
                what,
                expected,
                actual,
            } => write!(f, "{what}: expected {expected}, found {actual}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Cuda { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<recur_core::Error> for Error {
    fn from(e: recur_core::Error) -> Error {
        Error::Input(e)
    }
}

/// Adds context to a driver result.
pub(crate) trait Context<T> {
    /// Wraps the error with what was being done (no kernel, no shapes).
    fn doing(self, doing: &'static str) -> Result<T, Error>;
}

impl<T> Context<T> for Result<T, CudaError> {
    fn doing(self, doing: &'static str) -> Result<T, Error> {
        self.map_err(|e| Error::cuda(e, doing, None, String::new))
    }
}
