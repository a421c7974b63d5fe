//! Gradient clipping by the global norm, d2l's `grad_clipping`: when the
//! L2 norm of all gradients together exceeds `θ`, scale them by `θ / norm`.
//! All gradients live in one flat buffer (see [`crate::layout::ModelLayout`]),
//! so "all parameters" is one slice here.

use crate::error::Error;
use crate::fmath;

/// The L2 norm of `grads`, accumulated in f64.
pub fn global_norm(grads: &[f32]) -> f32 {
    // Four partial sums let the compiler vectorise the loop.
    let mut acc = [0.0f64; 4];
    let mut chunks = grads.chunks_exact(4);
    for c in &mut chunks {
        for (a, &g) in acc.iter_mut().zip(c) {
            *a += g as f64 * g as f64;
        }
    }
    let mut total = acc[0] + acc[1] + acc[2] + acc[3];
    for &g in chunks.remainder() {
        total += g as f64 * g as f64;
    }
    fmath::sqrt_f64(total) as f32
}

/// Scales `grads` in place by `theta / norm` when their global norm exceeds
/// `theta` (d2l's `grad_clipping`), and returns the norm before clipping.
///
/// `theta` must be positive and finite (else [`Error::Value`]). A non-finite
/// norm (NaN or infinite gradients) leaves `grads` untouched — as in d2l,
/// where `norm > theta` is false for NaN — and is returned so the caller can
/// detect the divergence.
pub fn clip_global_norm(grads: &mut [f32], theta: f32) -> Result<f32, Error> {
    if !(theta.is_finite() && theta > 0.0) {
        return Err(Error::Value { what: "theta" });
    }
    let norm = global_norm(grads);
    if norm.is_finite() && norm > theta {
        let scale = theta / norm;
        for g in grads.iter_mut() {
            *g *= scale;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_of_known_vector() {
        assert_eq!(global_norm(&[3.0, 4.0]), 5.0);
        assert_eq!(global_norm(&[]), 0.0);
        let v = [1.0f32; 9];
        assert_eq!(global_norm(&v), 3.0);
    }

    #[test]
    fn clips_above_theta_only() {
        let mut g = [3.0f32, 0.0, -4.0, 0.0, 0.0];
        let n = clip_global_norm(&mut g, 1.0).unwrap();
        assert_eq!(n, 5.0);
        assert_eq!(g, [0.6, 0.0, -0.8, 0.0, 0.0]);
        assert!((global_norm(&g) - 1.0).abs() < 1e-6);

        let mut g = [3.0f32, -4.0];
        let n = clip_global_norm(&mut g, 5.0).unwrap();
        assert_eq!(n, 5.0);
        assert_eq!(g, [3.0, -4.0], "norm == theta is not clipped (strict >)");
        let n = clip_global_norm(&mut g, 10.0).unwrap();
        assert_eq!((n, g), (5.0, [3.0, -4.0]));
    }

    #[test]
    fn bad_theta_and_nan_grads() {
        let mut g = [1.0f32, 2.0];
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert_eq!(
                clip_global_norm(&mut g, bad),
                Err(Error::Value { what: "theta" })
            );
        }
        let mut g = [1.0f32, f32::NAN];
        let n = clip_global_norm(&mut g, 1.0).unwrap();
        assert!(n.is_nan());
        assert_eq!(g[0], 1.0);
    }
}
