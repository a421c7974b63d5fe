//! Parameter updates on the flat parameter buffer: d2l's `sgd` and PyTorch's
//! `torch.optim.Adam`. Optimizer state lives in caller slices of the same
//! length as the parameters.

use crate::error::{check_len, Error};
use crate::fmath;

/// `params -= lr · grads` (d2l's `sgd` with batch divisor 1: the loss is
/// already a mean, as in d2l's `train_epoch_ch8`).
///
/// - `params`: (P) updated in place.
/// - `grads`: (P).
pub fn sgd_step(params: &mut [f32], grads: &[f32], lr: f32) -> Result<(), Error> {
    if !lr.is_finite() {
        return Err(Error::Value { what: "lr" });
    }
    check_len("grads", grads, params.len())?;
    for (p, &g) in params.iter_mut().zip(grads) {
        *p -= lr * g;
    }
    Ok(())
}

/// Hyperparameters of [`adam_step`]; [`Default`] is PyTorch's. They are
/// f64 like PyTorch's (Python floats), so `1 − β` rounds the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// Decay of the first moment (0.9).
    pub beta1: f64,
    /// Decay of the second moment (0.999).
    pub beta2: f64,
    /// Added to `sqrt(v̂)` in the denominator (1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient, PyTorch's (not AdamW's) form (0).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    /// Checks every field's domain.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.lr.is_finite() {
            return Err(Error::Value { what: "lr" });
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return Err(Error::Value { what: "beta1" });
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return Err(Error::Value { what: "beta2" });
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::Value { what: "eps" });
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::Value {
                what: "weight_decay",
            });
        }
        Ok(())
    }
}

/// One Adam update, the same arithmetic as `torch.optim.Adam` (single-tensor
/// path, `amsgrad=False`):
///
/// ```text
/// g  = grad + weight_decay · param
/// m  = lerp(m, g, 1 − β1)            v = β2 · v + (1 − β2) · g²
/// param −= lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
/// ```
///
/// - `params`: (P) updated in place.
/// - `m`, `v`: (P) first and second moments, zero before step 1, updated in place.
/// - `grads`: (P).
/// - `step`: the 1-based step number `t` (the count *after* this update).
pub fn adam_step(
    params: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grads: &[f32],
    step: u64,
    cfg: &AdamConfig,
) -> Result<(), Error> {
    cfg.validate()?;
    if step == 0 {
        return Err(Error::Value { what: "step" });
    }
    let n = params.len();
    check_len("adam m", m, n)?;
    check_len("adam v", v, n)?;
    check_len("grads", grads, n)?;
    // Scalars in f64 as PyTorch computes them (Python floats).
    // The tensor arithmetic is f32 (PyTorch casts scalars to the tensor's type).
    let bias_correction1 = 1.0 - fmath::powi_f64(cfg.beta1, step);
    let bias_correction2 = 1.0 - fmath::powi_f64(cfg.beta2, step);
    let step_size = (cfg.lr / bias_correction1) as f32;
    let bc2_sqrt = fmath::sqrt_f64(bias_correction2) as f32;
    let w1 = (1.0 - cfg.beta1) as f32;
    let w2 = (1.0 - cfg.beta2) as f32;
    let (beta2, eps, wd) = (cfg.beta2 as f32, cfg.eps as f32, cfg.weight_decay as f32);
    for (((p, mi), vi), &g) in params.iter_mut().zip(m).zip(v).zip(grads) {
        let g = if wd != 0.0 { g + wd * *p } else { g };
        // torch's lerp for weight < 0.5.
        *mi += w1 * (g - *mi);
        *vi = *vi * beta2 + w2 * (g * g);
        let denom = fmath::sqrt(*vi) / bc2_sqrt + eps;
        *p -= step_size * (*mi / denom);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn sgd_by_hand() {
        let mut p = [1.0f32, -2.0, 0.5];
        sgd_step(&mut p, &[0.5, 1.0, -4.0], 0.1).unwrap();
        assert_eq!(p, [1.0 - 0.05, -2.0 - 0.1, 0.5 + 0.4]);
        assert!(matches!(
            sgd_step(&mut p, &[0.0; 2], 0.1),
            Err(Error::Length { what: "grads", .. })
        ));
        assert_eq!(
            sgd_step(&mut p, &[0.0; 3], f32::NAN),
            Err(Error::Value { what: "lr" })
        );
    }

    /// Adam in f64 written from the paper's formulas, for the comparison.
    fn adam_f64(p: &mut f64, m: &mut f64, v: &mut f64, g: f64, t: i32, c: &AdamConfig) {
        let (b1, b2) = (c.beta1, c.beta2);
        let g = g + c.weight_decay * *p;
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let mhat = *m / (1.0 - b1.powi(t));
        let vhat = *v / (1.0 - b2.powi(t));
        *p -= c.lr * mhat / (vhat.sqrt() + c.eps);
    }

    #[test]
    fn first_step_moves_by_lr_times_sign() {
        // At t = 1, m̂ = g and v̂ = g², so the step is lr · g / (|g| + eps).
        let cfg = AdamConfig::default();
        let mut p = [1.0f32, 1.0, 1.0];
        let (mut m, mut v) = ([0.0f32; 3], [0.0f32; 3]);
        adam_step(&mut p, &mut m, &mut v, &[0.5, -3.0, 0.0], 1, &cfg).unwrap();
        assert!((p[0] - 0.999).abs() < 1e-7);
        assert!((p[1] - 1.001).abs() < 1e-7);
        assert_eq!(p[2], 1.0);
        assert!((m[0] - 0.05).abs() < 1e-8 && (v[1] - 0.009).abs() < 1e-8);
    }

    #[test]
    fn matches_f64_reference_over_steps() {
        let cfg = AdamConfig {
            lr: 0.01,
            weight_decay: 0.01,
            ..AdamConfig::default()
        };
        let mut p = [0.3f32, -1.2, 2.0, 0.0];
        let (mut m, mut v) = ([0.0f32; 4], [0.0f32; 4]);
        let mut p64 = p.map(|x| x as f64);
        let (mut m64, mut v64) = ([0.0f64; 4], [0.0f64; 4]);
        for t in 1..=50u64 {
            let g: [f32; 4] = core::array::from_fn(|i| {
                ((t as f32 * 0.37 + i as f32).sin()) * (1.0 + i as f32) * 1e-2f32.powi(i as i32)
            });
            adam_step(&mut p, &mut m, &mut v, &g, t, &cfg).unwrap();
            for i in 0..4 {
                adam_f64(
                    &mut p64[i],
                    &mut m64[i],
                    &mut v64[i],
                    g[i] as f64,
                    t as i32,
                    &cfg,
                );
            }
        }
        for i in 0..4 {
            assert!(
                (p[i] as f64 - p64[i]).abs() < 1e-5,
                "param {i}: {} vs {}",
                p[i],
                p64[i]
            );
        }
    }

    #[test]
    fn adam_errors() {
        let mut p = [0.0f32; 2];
        let (mut m, mut v) = ([0.0f32; 2], [0.0f32; 2]);
        let c = AdamConfig::default();
        assert_eq!(
            adam_step(&mut p, &mut m, &mut v, &[0.0; 2], 0, &c),
            Err(Error::Value { what: "step" })
        );
        assert!(matches!(
            adam_step(&mut p, &mut m[..1], &mut v, &[0.0; 2], 1, &c),
            Err(Error::Length { what: "adam m", .. })
        ));
        let bad = AdamConfig { beta2: 1.0, ..c };
        assert_eq!(
            adam_step(&mut p, &mut m, &mut v, &[0.0; 2], 1, &bad),
            Err(Error::Value { what: "beta2" })
        );
        let bad = AdamConfig { eps: f64::NAN, ..c };
        assert_eq!(bad.validate(), Err(Error::Value { what: "eps" }));
    }
}
