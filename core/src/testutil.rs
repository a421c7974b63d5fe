//! Helpers shared by the unit tests of this crate (compiled for tests only).

extern crate std;
use std::vec::Vec;

/// The crate's SplitMix64, under the tests' short name, with helpers for
/// test data (it implements `rand_core::RngCore` for the sampling tests).
pub(crate) use crate::rng::SplitMix64 as SplitMix;

impl SplitMix {
    /// Uniform in [-1, 1).
    pub(crate) fn symmetric(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values uniform in [-scale, scale).
    pub(crate) fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.symmetric() * scale).collect()
    }

    /// Uniform in [0, n).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A buffer of `n` NaNs, for outputs that must be fully written.
pub(crate) fn nans(n: usize) -> Vec<f32> {
    std::vec![f32::NAN; n]
}
