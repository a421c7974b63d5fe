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
        half::f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}
