//! # recur-engine
//!
//! The GPU engine of recur, on the CUDA driver API through `cust`.
//!
//! - [`Gpu`]: the context, the stream and the kernel modules (the PTX in
//!   `ptx/`, embedded at build time), set up once.
//! - Every failure is an [`Error`] naming what was being done, which kernel
//!   and which shapes; [`Error::NoDevice`] where there is no GPU (the build
//!   links recur's no-device driver stub on machines without a driver).

pub mod error;
pub mod gpu;

pub use cust;
pub use error::Error;
pub use gpu::Gpu;
