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
