//! Storage types for weights: `f32` for training and inference, `f16`
//! (IEEE half, from the `half` crate) for inference with f32 compute.

/// A weight storage type that converts to `f32` for computation.
pub trait Weight: Copy + Send + Sync + 'static {
    /// The value as `f32` (exact for both implementations).
    fn to_f32(self) -> f32;
    /// Rounds an `f32` to this storage type (round to nearest even).
    fn from_f32(v: f32) -> Self;
}

impl Weight for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Weight for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // `half`'s own conversion only uses F16C when std can detect it;
        // without std it is a branchy scalar routine, so use ours.
        f16_bits_to_f32(self.to_bits())
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

/// IEEE binary16 bits to f32, exactly and without branches: the 15 low bits
/// shifted into an f32's place are the value times 2^-112 (normal numbers
/// and subnormals alike), so one multiplication rescales them; values that
/// land at 2^16 or above were infinities or NaNs and get the all-ones
/// exponent back.
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let scaled = f32::from_bits((h & 0x7fff) << 13) * f32::from_bits((127 + 112) << 23);
    let bits = if scaled >= 65_536.0 {
        scaled.to_bits() | (0xff << 23)
    } else {
        scaled.to_bits()
    };
    f32::from_bits(bits | ((h & 0x8000) << 16))
}
