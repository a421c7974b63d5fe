//! f16 values on the device.
//!
//! cust's own f16 support (feature `impl_half`) is for `half` 1.x while the
//! workspace uses `half` 2.x, so device buffers hold [`F16`]: the IEEE half
//! bit pattern in a `#[repr(transparent)]` `u16`, converted with `half` 2.x.

use cust::memory::DeviceCopy;

/// An IEEE binary16 value as stored on the device.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct F16(pub u16);

// SAFETY: a plain 16-bit value with no pointers or invariants; any bit
// pattern is a valid `F16`.
unsafe impl DeviceCopy for F16 {}

impl F16 {
    /// A quiet NaN, used to poison outputs in tests.
    pub const NAN: F16 = F16(0x7E00);

    /// Rounds to nearest even.
    pub fn from_f32(v: f32) -> F16 {
        F16(half::f16::from_f32(v).to_bits())
    }

    /// Exact.
    pub fn to_f32(self) -> f32 {
        half::f16::from_bits(self.0).to_f32()
    }
}

/// `v` rounded to f16 and back: the value f16 storage keeps.
pub fn round_f16(v: f32) -> f32 {
    F16::from_f32(v).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_to_nearest_even_and_keep_nan() {
        assert_eq!(F16::from_f32(1.0).0, 0x3C00);
        assert_eq!(round_f16(1.0 + 1.0 / 4096.0), 1.0); // below half an ulp (2^-11)
        assert_eq!(round_f16(65504.0), 65504.0);
        assert!(F16::NAN.to_f32().is_nan());
        assert_eq!(F16::from_f32(-0.5).to_f32(), -0.5);
    }
}
