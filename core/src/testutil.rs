//! Helpers shared by the unit tests of this crate (compiled for tests only).

extern crate std;
use std::vec::Vec;

/// SplitMix64: a tiny seeded generator, enough for test data and for the
/// sampling tests (it implements `rand_core::RngCore`).
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    /// Uniform in [-1, 1).
    pub(crate) fn symmetric(&mut self) -> f32 {
        use rand_core::RngCore;
        ((self.next_u32() >> 8) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values uniform in [-scale, scale).
    pub(crate) fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.symmetric() * scale).collect()
    }

    /// Uniform in [0, n).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        use rand_core::RngCore;
        (self.next_u64() % n as u64) as usize
    }
}

impl rand_core::RngCore for SplitMix {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A buffer of `n` NaNs, for outputs that must be fully written.
pub(crate) fn nans(n: usize) -> Vec<f32> {
    std::vec![f32::NAN; n]
}
