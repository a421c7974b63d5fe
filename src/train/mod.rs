//! The training loop of recur: d2l's character language model trainer,
//! device-independent over the [`Backend`] trait, with the CPU backend on
//! recur-core, presets reproducing the chapter's experiments, safetensors
//! checkpoints, JSON-lines metrics and perplexity plots.
//!
//! `examples/train.rs` and `examples/generate.rs` are thin wrappers over
//! [`cli::run_train`] and [`generate::run_generate`].

pub mod backend;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod cpu;
pub mod cuda;
pub mod error;
pub mod generate;
pub mod init;
pub mod metrics;
pub mod plot;
pub mod rng;
pub mod trainer;

pub use backend::{Backend, BackendSpec, BatchStats, Decode, HiddenState, OptimizerState};
pub use checkpoint::Checkpoint;
pub use config::{InitScheme, OptimizerKind, Sampling, StatePolicy, TrainConfig, PRESETS};
pub use cpu::CpuBackend;
pub use cuda::CudaBackend;
pub use error::TrainError;
pub use metrics::EpochRecord;
pub use trainer::Trainer;

/// The matrix product the CPU trainer uses: [`Threaded`](crate::gemm_threaded::Threaded)
/// on `threads` threads (bit-identical to one thread, so a run's result
/// depends on its seed only).
pub fn cpu_gemm(threads: usize) -> Result<crate::gemm_threaded::Threaded, TrainError> {
    let threads = std::num::NonZeroUsize::new(threads)
        .ok_or_else(|| TrainError::Config("--threads must be at least 1".into()))?;
    Ok(crate::gemm_threaded::Threaded::new(threads))
}
