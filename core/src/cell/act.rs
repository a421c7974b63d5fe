//! Gate nonlinearities in plain `f32` arithmetic.
//!
//! `core` has no `exp` or `tanh` without `std`, and `libm`'s scalar routines
//! do not vectorise, so these are written out: branch-free (selects, not
//! jumps) so that the gate loops calling them auto-vectorise. Accuracy: a few
//! ulp over the whole range (checked against `std` in the tests below).

/// Rounds to the nearest integer (ties to even) for `|x| < 2^22` by the
/// 1.5·2^23 trick, which vectorises where `round` is not available.
#[inline(always)]
fn round_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// `e^x` for `x` clamped to [-87, 88] (no overflow, no subnormal results):
/// Cody–Waite reduction `x = n·ln2 + r`, `|r| ≤ ln2/2`, then Cephes' degree-6
/// polynomial for `e^r`, scaled by `2^n` through the exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    // ln 2 split in a part exact in few bits and a correction.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let n = round_small(x * LOG2E);
    let r = x - n * LN2_HI - n * LN2_LO;
    // The polynomial by Estrin's scheme rather than Horner's: the same
    // coefficients, half the dependency chain (the gate loops are bound by
    // its latency, not by the number of operations).
    let r2 = r * r;
    let a = 0.5 + 1.666_666_5e-1 * r;
    let b = 4.166_579_6e-2 + 8.333_452e-3 * r;
    let c = 1.398_199_9e-3 + 1.987_569_1e-4 * r;
    let p = a + r2 * (b + r2 * c);
    let er = p * r2 + r + 1.0;
    // 2^n through the exponent field: n + 127 is an integer in [1, 254], so
    // adding 2^23 puts it in the low mantissa bits, and the shift moves it to
    // the exponent (the 2^23's own bits fall off the top). No float→int cast:
    // Rust's saturating `as i32` would not vectorise.
    let biased = (n + 127.0) + 8_388_608.0;
    let scale = f32::from_bits(biased.to_bits() << 23);
    er * scale
}

/// The logistic function `1 / (1 + e^-x)`.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    // Beyond ±80 the result is 0 or 1 to f32 precision; the clamp keeps
    // e^-x finite and the quotient out of the subnormals.
    let x = if x < -80.0 { -80.0 } else { x };
    1.0 / (1.0 + exp(-x))
}

/// The hyperbolic tangent.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    const SIGN: u32 = 0x8000_0000;
    let bits = x.to_bits();
    let ax = f32::from_bits(bits & !SIGN);
    // Large |x|: (1 - e)/(1 + e) with e = e^(-2|x|) in (0, 1]: no overflow
    // and an absolute error below one ulp of 1.
    let e = exp(-2.0 * ax);
    let big = (1.0 - e) / (1.0 + e);
    // Small |x|: the odd Taylor series, where 1 - e would cancel.
    let x2 = ax * ax;
    let poly = 62.0 / 2835.0;
    let poly = poly * x2 - 17.0 / 315.0;
    let poly = poly * x2 + 2.0 / 15.0;
    let poly = poly * x2 - 1.0 / 3.0;
    let small = ax + ax * x2 * poly;
    let t = if ax < 0.25 { small } else { big };
    f32::from_bits(t.to_bits() | (bits & SIGN))
}

/// `max(x, 0)`, NaN passing through (as in PyTorch).
#[inline(always)]
pub(crate) fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// Relative error with an absolute floor (for results near zero).
    fn err(got: f32, want: f64) -> f64 {
        (got as f64 - want).abs() / want.abs().max(1e-30)
    }

    fn sweep(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |k| lo + (hi - lo) * k as f32 / n as f32)
    }

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        for x in sweep(-87.0, 88.0, 200_000) {
            worst = worst.max(err(exp(x), (x as f64).exp()));
        }
        assert!(worst < 4e-7, "exp relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(1000.0).is_finite() && exp(-1000.0) > 0.0);
    }

    #[test]
    fn tanh_matches_std() {
        let mut worst = 0.0f64;
        for x in sweep(-20.0, 20.0, 400_000) {
            let want = (x as f64).tanh();
            // Relative near zero, absolute (ulp of 1) near saturation.
            let e = (tanh(x) as f64 - want).abs() / want.abs().clamp(1e-30, 1.0);
            worst = worst.max(e);
        }
        assert!(worst < 4e-7, "tanh error {worst}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(1e-20), 1e-20);
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn sigmoid_matches_std() {
        let mut worst = 0.0f64;
        for x in sweep(-80.0, 30.0, 200_000) {
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            worst = worst.max(err(sigmoid(x), want));
        }
        assert!(worst < 4e-7, "sigmoid relative error {worst}");
        assert_eq!(sigmoid(200.0), 1.0);
        assert!(sigmoid(-200.0) >= 0.0 && sigmoid(-200.0) < 1e-30);
        assert!(sigmoid(f32::NAN).is_nan());
    }
}
