//! # recur
//!
//! Fast recurrent networks in Rust. This facade re-exports the workspace's
//! crates and will hold the training loop shared by the CPU and GPU paths.

pub use recur_core as core;
pub use recur_data as data;
pub use recur_engine as engine;

pub mod gemm_threaded;
pub mod interop;
pub mod train;
