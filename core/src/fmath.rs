//! Scalar math that `core` lacks without `std`: `exp`, `ln`, `sqrt`, integer
//! powers. Used by the output layer, the optimizers, clipping and sampling.
//!
//! `exp` and `ln` are Cephes-style: Cody–Waite range reduction and a short
//! minimax polynomial, accurate to about 1–2 ulp over the whole `f32` range
//! (the unit tests compare them with std's). `sqrt` is the hardware
//! instruction on x86-64 (SSE2 is part of the baseline) and Newton's iteration
//! elsewhere.

// The polynomial coefficients are quoted as published (Cephes), so that
// they can be checked against the source; they round to the same f32.
#![allow(clippy::excessive_precision)]

/// `ln 2` split in a part exact in few bits and the rest (Cody–Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const LOG2_E: f32 = core::f32::consts::LOG2_E;

/// `2^k` for `k` in the normal exponent range [-126, 127].
#[inline(always)]
fn pow2_normal(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// e^x in f32 over the whole range: `+inf` above ln(f32::MAX), 0 far below
/// the smallest subnormal, NaN for NaN.
///
/// Branch-free (comparisons become selects), so loops over slices of it
/// vectorise: the softmax over a 1,027-token vocabulary spends its time here.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Clamping keeps the integer exponent in range; the bounds are far
    // enough out that the results there are exactly +inf and 0. A NaN fails
    // both comparisons and flows through to the result.
    let x = if x > 89.0 { 89.0 } else { x };
    let x = if x < -110.0 { -110.0 } else { x };
    // Round x·log2(e) to the nearest integer with the 1.5·2^23 trick: the
    // sum lies in [2^23, 2^24), where the low mantissa bits hold k + 2^22.
    const ROUND: f32 = 12_582_912.0;
    let shifted = x * LOG2_E + ROUND;
    let kf = shifted - ROUND;
    let r = x - kf * LN2_HI - kf * LN2_LO;
    let r2 = r * r;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1)
        * r2
        + r
        + 1.0;
    // k lies in [-159, 129]; splitting it keeps both factors normal, so the
    // subnormal and overflow ends scale correctly.
    // Integer k from the bits (an `as` cast would not vectorise).
    let k = (shifted.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000;
    let k1 = k >> 1;
    p * pow2_normal(k1) * pow2_normal(k - k1)
}

/// Natural logarithm in f32 (NaN for negative input, -inf for zero).
#[inline]
pub(crate) fn ln(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x == f32::INFINITY {
        return x;
    }
    let mut x = x;
    let mut e_adj = 0i32;
    if x < f32::MIN_POSITIVE {
        // Subnormal: scale into the normal range first.
        x *= 8_388_608.0; // 2^23
        e_adj = -23;
    }
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126 + e_adj;
    // Mantissa in [0.5, 1).
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    if m < core::f32::consts::FRAC_1_SQRT_2 {
        e -= 1;
        m = m + m - 1.0;
    } else {
        m -= 1.0;
    }
    let z = m * m;
    let mut y = ((((((((7.037_683_6e-2 * m - 1.151_461e-1) * m + 1.167_699_9e-1) * m
        - 1.242_014_1e-1)
        * m
        + 1.424_932_3e-1)
        * m
        - 1.666_805_8e-1)
        * m
        + 2.000_071_4e-1)
        * m
        - 2.499_999_4e-1)
        * m
        + 3.333_333_1e-1)
        * m
        * z;
    let ef = e as f32;
    y += ef * LN2_LO;
    y += -0.5 * z;
    let r = m + y;
    r + ef * LN2_HI
}

/// Square root in f32 (NaN for negative input).
#[inline]
pub(crate) fn sqrt(x: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_cvtss_f32, _mm_set_ss, _mm_sqrt_ss};
        // SAFETY: SSE is part of the x86-64 baseline, so the instructions
        // exist on every x86-64 processor; they touch no memory.
        unsafe { _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(x))) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        sqrt_f64(x as f64) as f32
    }
}

/// Square root in f64 (NaN for negative input).
#[inline]
pub(crate) fn sqrt_f64(x: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_cvtsd_f64, _mm_set_sd, _mm_sqrt_sd};
        // SAFETY: SSE2 is part of the x86-64 baseline; no memory access.
        unsafe {
            let v = _mm_set_sd(x);
            _mm_cvtsd_f64(_mm_sqrt_sd(v, v))
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        if x.is_nan() || x < 0.0 {
            return f64::NAN;
        }
        if x == 0.0 || x == f64::INFINITY {
            return x;
        }
        // Halving the exponent gives a guess within a factor of 2; Newton's
        // iteration doubles the correct bits each round.
        let mut g = f64::from_bits((x.to_bits() >> 1) + (1023u64 << 51));
        for _ in 0..8 {
            g = 0.5 * (g + x / g);
        }
        g
    }
}

/// `base^n` by repeated squaring.
pub(crate) fn powi_f64(base: f64, mut n: u64) -> f64 {
    let mut acc = 1.0f64;
    let mut b = base;
    while n > 0 {
        if n & 1 == 1 {
            acc *= b;
        }
        b *= b;
        n >>= 1;
    }
    acc
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn ulp_diff(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_matches_std() {
        let mut worst = 0u32;
        let mut x = -103.0f32;
        while x < 88.7 {
            let got = exp(x);
            let want = (x as f64).exp() as f32;
            let d = ulp_diff(got, want);
            // Subnormal results lose relative precision by nature.
            if want >= f32::MIN_POSITIVE {
                worst = worst.max(d);
            } else {
                assert!((got - want).abs() <= 2.0 * f32::from_bits(1), "exp({x})");
            }
            x += 0.000_97;
        }
        assert!(worst <= 2, "exp worst ulp error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(88.72).is_finite());
    }

    #[test]
    fn ln_matches_std() {
        let mut worst = 0u32;
        let mut bits = 1u32; // smallest subnormal upward
        while bits < f32::INFINITY.to_bits() {
            let x = f32::from_bits(bits);
            let got = ln(x);
            let want = (x as f64).ln() as f32;
            worst = worst.max(ulp_diff(got, want));
            bits += 9_973;
        }
        assert!(worst <= 2, "ln worst ulp error {worst}");
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert_eq!(ln(f32::INFINITY), f32::INFINITY);
        assert!(ln(-1.0).is_nan());
        assert!(ln(f32::NAN).is_nan());
    }

    #[test]
    fn sqrt_and_powi() {
        for &x in &[0.0f32, 1e-30, 0.25, 2.0, 1e30, f32::MAX] {
            assert_eq!(sqrt(x), x.sqrt());
            assert_eq!(sqrt_f64(x as f64), (x as f64).sqrt());
        }
        assert!(sqrt(-1.0).is_nan());
        assert_eq!(powi_f64(0.9, 0), 1.0);
        assert_eq!(powi_f64(2.0, 10), 1024.0);
        // Python's `beta ** step` is libm's pow. Squaring loses a few bits
        // for large n, far below what the f32 bias correction `1 − β^t` sees.
        for n in [1u64, 7, 1000, 123_456] {
            let want = 0.999f64.powf(n as f64);
            assert!((powi_f64(0.999, n) - want).abs() <= 1e-13, "{n}");
        }
    }
}
