//! The sampler's random numbers, identical on the host and the device.
//!
//! Batch row `b` of a generation draws its i-th number (i = index of the
//! generated token) from the SplitMix64 stream seeded with
//! [`row_seed`]`(seed, b)`; the device computes the i-th output directly
//! (counter-based), the host by stepping [`SplitMix64`]. Handing a fresh
//! `SplitMix64::new(row_seed(seed, b))` to `recur_core::sample::sample` for each
//! token in turn therefore reproduces the device's draws exactly.

use rand_core::{impls, RngCore};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The stream seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The i-th output (from 0) of the stream seeded with `seed`, as the device computes it.
pub fn nth(seed: u64, i: u64) -> u64 {
    mix(seed.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// The seed of batch row `row`'s stream.
pub fn row_seed(seed: u64, row: usize) -> u64 {
    seed ^ (row as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

impl RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        impls::fill_bytes_via_next(self, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stepping_matches_the_counter_form() {
        let seed = row_seed(42, 3);
        let mut rng = SplitMix64::new(seed);
        for i in 0..100 {
            assert_eq!(rng.next_u64(), nth(seed, i));
        }
    }

    #[test]
    fn known_splitmix64_output() {
        // Reference value of SplitMix64 seeded with 0 (first output).
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }
}
