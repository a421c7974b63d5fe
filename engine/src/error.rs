//! The engine's error type: every failure names what was being done, which
//! kernel (if any) and the shapes involved, around the driver's own error.

use std::ffi::CStr;
use std::fmt;
use std::os::raw::c_char;

use cust::error::CudaError;
use cust::sys;

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
        /// The driver's error code (`CUresult`).
        code: u32,
        /// The driver's name and text for it.
        message: String,
    },
    /// A device buffer did not fit in the GPU's memory (or its size in
    /// bytes is beyond `usize`). Nothing was changed on the device: the
    /// buffers allocated before it are freed, and the GPU stays usable.
    OutOfMemory {
        /// Which buffer, e.g. `"parameters"`.
        what: &'static str,
        /// The bytes it needs (saturated at `usize::MAX`).
        bytes: usize,
        /// The device's free and total memory in bytes when it failed, if
        /// the driver said.
        free_total: Option<(usize, usize)>,
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
    /// Wraps a driver error code; `CUDA_ERROR_NO_DEVICE` becomes [`Error::NoDevice`].
    pub(crate) fn driver(
        code: u32,
        doing: &'static str,
        kernel: Option<&'static str>,
        shape: impl FnOnce() -> String,
    ) -> Error {
        if code == CudaError::NoDevice as u32 {
            return Error::NoDevice;
        }
        Error::Cuda {
            doing,
            kernel,
            shape: shape(),
            code,
            message: driver_text(code),
        }
    }

    /// Whether this is [`Error::NoDevice`] (tests and benches skip on it).
    pub fn is_no_device(&self) -> bool {
        matches!(self, Error::NoDevice)
    }

    /// Whether this is [`Error::OutOfMemory`].
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, Error::OutOfMemory { .. })
    }
}

/// Bytes in GiB with two decimals; MiB below one GiB, TiB and up above
/// 1,024 GiB (a saturated size reads as 16.00 EiB).
fn gib(bytes: usize) -> String {
    let mut v = bytes as f64 / (1024.0 * 1024.0);
    if v < 1024.0 {
        return format!("{v:.1} MiB");
    }
    v /= 1024.0;
    for unit in ["GiB", "TiB", "PiB"] {
        if v < 1024.0 {
            return format!("{v:.2} {unit}");
        }
        v /= 1024.0;
    }
    format!("{v:.2} EiB")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoDevice => write!(f, "no CUDA device"),
            Error::Cuda {
                doing,
                kernel,
                shape,
                code,
                message,
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
                write!(f, ": error {code}, {message}")
            }
            Error::OutOfMemory {
                what,
                bytes,
                free_total,
            } => {
                write!(
                    f,
                    "out of device memory for the {what}: {} needed",
                    gib(*bytes)
                )?;
                if let Some((free, total)) = free_total {
                    write!(f, ", {} free of {}", gib(*free), gib(*total))?;
                }
                Ok(())
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

impl std::error::Error for Error {}

/// `"NAME: text"` for a driver error code, from the driver itself.
fn driver_text(code: u32) -> String {
    if code >= 1000 {
        // cust's own codes (e.g. 100100, invalid allocation), not the driver's.
        return match code {
            100_100 => "invalid memory allocation (cust)".to_owned(),
            _ => "cust error".to_owned(),
        };
    }
    let ask = |f: unsafe extern "C" fn(sys::CUresult, *mut *const c_char) -> sys::CUresult| {
        let mut ptr: *const c_char = std::ptr::null();
        // SAFETY: the driver writes a pointer to a static, NUL-terminated
        // string or fails; the code is passed as the enum's u32 value, and
        // codes the enum does not name are never produced by the driver.
        unsafe {
            let raw: sys::CUresult = std::mem::transmute::<u32, sys::CUresult>(code);
            if f(raw, &mut ptr) == sys::CUresult::CUDA_SUCCESS && !ptr.is_null() {
                Some(CStr::from_ptr(ptr).to_string_lossy().into_owned())
            } else {
                None
            }
        }
    };
    match (ask(sys::cuGetErrorName), ask(sys::cuGetErrorString)) {
        (Some(name), Some(text)) => format!("{name}: {text}"),
        (Some(name), None) => name,
        _ => "unrecognised CUDA error".to_owned(),
    }
}

/// Turns a raw driver result into a `Result`.
pub(crate) fn check(
    result: sys::CUresult,
    doing: &'static str,
    kernel: Option<&'static str>,
    shape: impl FnOnce() -> String,
) -> Result<(), Error> {
    if result == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::driver(result as u32, doing, kernel, shape))
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
        self.map_err(|e| Error::driver(e as u32, doing, None, String::new))
    }
}

#[cfg(test)]
mod tests {
    use super::gib;

    #[test]
    fn sizes_read_in_their_unit() {
        assert_eq!(gib(512 << 20), "512.0 MiB");
        assert_eq!(gib(80 << 30), "80.00 GiB");
        assert_eq!(gib(3 << 40), "3.00 TiB");
        assert_eq!(gib(usize::MAX), "16.00 EiB");
    }
}
