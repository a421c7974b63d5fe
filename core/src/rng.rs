//! A random source for sampling where no other is at hand: SplitMix64
//! (Steele, Lea, Flood 2014), one `u64` of state, no allocation, no `std`.
//! Any `rand_core::RngCore` works with [`crate::sample`]; this one serves
//! embedded callers (the edge example) and the tests, which must be able to
//! draw the same numbers from a seed.

/// SplitMix64; the field is the state (the seed at first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits (also [`rand_core::RngCore::next_u64`]).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl rand_core::RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (SplitMix64::next_u64(self) >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        SplitMix64::next_u64(self)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = SplitMix64::next_u64(self).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::RngCore;

    /// The reference sequence of SplitMix64 seeded with 0 (as published
    /// with the algorithm), through the trait as through the inherent call.
    #[test]
    fn matches_the_reference_sequence() {
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(RngCore::next_u64(&mut r), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
        let mut bytes = [0u8; 12];
        SplitMix64(0).fill_bytes(&mut bytes);
        assert_eq!(bytes[..8], 0xe220_a839_7b1d_cdafu64.to_le_bytes());
        assert_eq!(bytes[8..], 0x6e78_9e6a_a1b9_65f4u64.to_le_bytes()[..4]);
        assert_eq!(SplitMix64(0).next_u32(), 0xe220_a839);
    }
}
