//! The training API's semantics on the GPU, one test binary (each binary
//! embeds every kernel; call 1 of a GPU session carries them all):
//! - `clip`: the clip whose factor the updates apply as they read;
//! - `state`: the carried state across mini-batches;
//! - `determinism`: two runs bit for bit alike.
//!
//! Skips go straight to stderr: the test harness captures println!, and a
//! skipped GPU test must say so in CI's log.

#[path = "../engine_support/mod.rs"]
mod engine_support;

mod clip;
mod determinism;
mod state;

use recur::core::ModelLayout;
use recur::engine::{DeviceTrainer, Gpu, Precision, TrainOptimizer};

/// A trainer of `layout` over (`steps`, `batch`) at the random parameters
/// of `seed`.
fn trainer_at(
    gpu: &Gpu,
    layout: ModelLayout,
    (steps, batch): (usize, usize),
    optimizer: TrainOptimizer,
    precision: Precision,
    seed: u64,
) -> DeviceTrainer {
    let mut t =
        DeviceTrainer::new_with_precision(gpu, layout, batch, steps, optimizer, precision).unwrap();
    t.upload_params(&engine_support::random_params(&layout, seed))
        .unwrap();
    t
}
