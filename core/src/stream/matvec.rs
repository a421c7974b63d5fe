//! The output layer of one stream step: `out = W x + b` for a single vector
//! `x`, weights stored as `f32` or `f16` and converted on the fly, sums in
//! f32.
//!
//! A step at batch 1 reads every weight once and does two flops per weight,
//! so it is bound by memory bandwidth: what matters is loading wide and
//! converting `f16` cheaply. On x86-64 with AVX2, FMA and F16C (checked at
//! run time, no `std`) the rows go four at a time through 8-lane registers
//! with a hardware half-to-single conversion; elsewhere (Cortex-M, older
//! x86) a portable loop the compiler vectorises as the target allows.

use core::any::TypeId;

use crate::weight::Weight;

/// Independent partial sums of the portable dot product (lets it vectorise).
const LANES: usize = 8;

/// `out[r] = bias[r] + Σ_k w[r·K + k] · x[k]` with `K = x.len()`.
///
/// - `out`: out, (R); overwritten, never read.
/// - `w`: (R, K) row-major. `bias`: (R). `x`: (K).
///
/// Lengths are the caller's to check: `w.len() == out.len() * x.len()`,
/// `bias.len() == out.len()`; extra rows or elements are ignored, missing
/// ones leave outputs unwritten (never out-of-bounds).
pub(crate) fn affine<W: Weight>(out: &mut [f32], w: &[W], bias: &[W], x: &[f32]) {
    if product_x86(out, w, x) {
        add_bias(out, bias);
        return;
    }
    affine_portable(out, w, bias, x);
}

/// `out[r] = Σ_k w[r·K + k] · x[k]` (`K = x.len()`, shapes as in
/// [`affine`]) on the x86-64 kernel, when the processor has AVX2, FMA and
/// F16C and `W` is `f32` or `f16`: `true`. Otherwise `false`, `out`
/// untouched, for the caller's portable loop. f32 and f16 weights of the
/// same values give the same bits here (exact conversion, one summation
/// order), which the cells' step relies on.
pub(crate) fn product_x86<W: Weight>(out: &mut [f32], w: &[W], x: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        if let Some(w32) = cast::<W, f32>(w) {
            // SAFETY: `available` checked AVX2, FMA and F16C.
            unsafe { x86::affine_f32(out, w32, x) };
            return true;
        }
        if let Some(w16) = cast::<W, half::f16>(w) {
            // SAFETY: as above.
            unsafe { x86::affine_f16(out, w16, x) };
            return true;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (out, w, x);
    false
}

/// The portable path of [`affine`] (also the reference the tests hold the
/// x86 path to).
pub(crate) fn affine_portable<W: Weight>(out: &mut [f32], w: &[W], bias: &[W], x: &[f32]) {
    let k = x.len();
    if k == 0 {
        for (o, b) in out.iter_mut().zip(bias) {
            *o = b.to_f32();
        }
        return;
    }
    for ((o, row), b) in out.iter_mut().zip(w.chunks_exact(k)).zip(bias) {
        *o = b.to_f32() + dot(row, x);
    }
}

fn add_bias<W: Weight>(out: &mut [f32], bias: &[W]) {
    for (o, b) in out.iter_mut().zip(bias) {
        *o += b.to_f32();
    }
}

/// `Σ w[k] · x[k]` in f32 with [`LANES`] partial sums.
#[inline(always)]
fn dot<W: Weight>(w: &[W], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut wc = w.chunks_exact(LANES);
    let mut xc = x.chunks_exact(LANES);
    for (wl, xl) in (&mut wc).zip(&mut xc) {
        for l in 0..LANES {
            acc[l] += wl[l].to_f32() * xl[l];
        }
    }
    let mut s = 0.0f32;
    for (&wv, &xv) in wc.remainder().iter().zip(xc.remainder()) {
        s += wv.to_f32() * xv;
    }
    for a in acc {
        s += a;
    }
    s
}

/// `w` as a slice of `T` when `W` is `T` (the dispatch on the storage type
/// without widening the public `Weight` bound).
fn cast<W: 'static, T: 'static>(w: &[W]) -> Option<&[T]> {
    if TypeId::of::<W>() == TypeId::of::<T>() {
        // SAFETY: `W` and `T` are the same type, so layout and validity match.
        Some(unsafe { core::slice::from_raw_parts(w.as_ptr().cast::<T>(), w.len()) })
    } else {
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;
    use core::sync::atomic::{AtomicU8, Ordering};

    /// Rows per block: four independent accumulators hide the FMA latency.
    const ROWS: usize = 4;

    /// 0 unknown, 1 no, 2 yes.
    static DETECTED: AtomicU8 = AtomicU8::new(0);

    /// Whether AVX2, FMA and F16C can run here (CPU and OS).
    pub(super) fn available() -> bool {
        match DETECTED.load(Ordering::Relaxed) {
            1 => false,
            2 => true,
            _ => {
                let yes = crate::gemm::Isa::detect() == crate::gemm::Isa::Avx2Fma
                    && __cpuid(1).ecx & (1 << 29) != 0;
                DETECTED.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                yes
            }
        }
    }

    /// Sum of the 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Generates `out[r] = Σ_k w[r, k] x[k]` for one weight type, `$load`
    /// turning a chunk of 8 weights into 8 f32 lanes.
    macro_rules! affine_kernel {
        ($name:ident, $ty:ty, $load:expr, $scalar:expr) => {
            /// # Safety
            /// The CPU must support AVX2, FMA and F16C ([`available`]).
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn $name(out: &mut [f32], w: &[$ty], x: &[f32]) {
                let k = x.len();
                if k == 0 {
                    out.fill(0.0);
                    return;
                }
                let k8 = k - k % 8;
                let mut blocks = out.chunks_exact_mut(ROWS);
                let mut rows = w.chunks_exact(ROWS * k);
                for (o, wb) in (&mut blocks).zip(&mut rows) {
                    let (r0, rest) = wb.split_at(k);
                    let (r1, rest) = rest.split_at(k);
                    let (r2, r3) = rest.split_at(k);
                    let mut a = [_mm256_setzero_ps(); ROWS];
                    let mut i = 0;
                    while i < k8 {
                        let xv = _mm256_loadu_ps(x[i..i + 8].as_ptr());
                        a[0] = _mm256_fmadd_ps($load(&r0[i..i + 8]), xv, a[0]);
                        a[1] = _mm256_fmadd_ps($load(&r1[i..i + 8]), xv, a[1]);
                        a[2] = _mm256_fmadd_ps($load(&r2[i..i + 8]), xv, a[2]);
                        a[3] = _mm256_fmadd_ps($load(&r3[i..i + 8]), xv, a[3]);
                        i += 8;
                    }
                    for (r, (acc, row)) in a.iter().zip([r0, r1, r2, r3]).enumerate() {
                        let mut s = hsum(*acc);
                        for (wv, xv) in row[k8..].iter().zip(&x[k8..]) {
                            s += $scalar(*wv) * xv;
                        }
                        o[r] = s;
                    }
                }
                for (o, row) in blocks
                    .into_remainder()
                    .iter_mut()
                    .zip(rows.remainder().chunks_exact(k))
                {
                    let mut acc = _mm256_setzero_ps();
                    let mut i = 0;
                    while i < k8 {
                        let xv = _mm256_loadu_ps(x[i..i + 8].as_ptr());
                        acc = _mm256_fmadd_ps($load(&row[i..i + 8]), xv, acc);
                        i += 8;
                    }
                    let mut s = hsum(acc);
                    for (wv, xv) in row[k8..].iter().zip(&x[k8..]) {
                        s += $scalar(*wv) * xv;
                    }
                    *o = s;
                }
            }
        };
    }

    // The helpers carry the kernels' target features: without them the
    // intrinsics inside could not be inlined (LLVM does not inline a callee
    // with more features than its caller), and each load became a call.

    /// 8 f32 from a chunk of exactly 8.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f32(c: &[f32]) -> __m256 {
        debug_assert_eq!(c.len(), 8);
        _mm256_loadu_ps(c.as_ptr())
    }

    /// 8 f16 (16 bytes) converted by F16C, from a chunk of exactly 8.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f16(c: &[half::f16]) -> __m256 {
        debug_assert_eq!(c.len(), 8);
        _mm256_cvtph_ps(_mm_loadu_si128(c.as_ptr().cast::<__m128i>()))
    }

    affine_kernel!(affine_f32, f32, load_f32, |v: f32| v);
    affine_kernel!(affine_f16, half::f16, load_f16, |v: half::f16| v.to_f32());
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::testutil::{nans, SplitMix};
    use half::f16;
    use std::vec::Vec;

    /// `W x + b` in f64 from the weights as stored.
    fn reference<W: Weight>(w: &[W], b: &[W], x: &[f32]) -> Vec<f64> {
        let k = x.len();
        b.iter()
            .enumerate()
            .map(|(r, bv)| {
                bv.to_f32() as f64
                    + (0..k)
                        .map(|i| w[r * k + i].to_f32() as f64 * x[i] as f64)
                        .sum::<f64>()
            })
            .collect()
    }

    fn check<W: Weight>(rows: usize, k: usize, seed: u64) {
        let mut rng = SplitMix(seed);
        let w: Vec<W> = rng
            .vec(rows * k, 1.0)
            .into_iter()
            .map(W::from_f32)
            .collect();
        let b: Vec<W> = rng.vec(rows, 1.0).into_iter().map(W::from_f32).collect();
        let x = rng.vec(k, 1.0);
        let want = reference(&w, &b, &x);
        let mut fast = nans(rows);
        affine(&mut fast, &w, &b, &x);
        let mut portable = nans(rows);
        affine_portable(&mut portable, &w, &b, &x);
        for r in 0..rows {
            // f32 sums of k products of magnitude ≤ 1: error ≲ k·2⁻²⁴·k.
            let tol = 1e-6 * (k * k) as f64 + 1e-6;
            assert!((fast[r] as f64 - want[r]).abs() < tol, "fast row {r}");
            assert!(
                (portable[r] as f64 - want[r]).abs() < tol,
                "portable row {r}"
            );
        }
    }

    #[test]
    fn matches_f64_reference_for_every_shape() {
        // Row counts around the 4-row block, widths around the 8-lane chunk.
        for (i, &rows) in [1usize, 3, 4, 5, 8, 11].iter().enumerate() {
            for (j, &k) in [1usize, 7, 8, 9, 16, 37].iter().enumerate() {
                check::<f32>(rows, k, (i * 10 + j) as u64);
                check::<f16>(rows, k, (i * 10 + j + 100) as u64);
            }
        }
    }

    #[test]
    fn f16_specials_convert_exactly() {
        // Subnormal, largest, negative zero, infinity: the hardware and the
        // software conversions agree, so both paths give the same sums.
        let vals = [
            f16::from_bits(0x0001),
            f16::MAX,
            f16::NEG_ZERO,
            f16::from_f32(-0.333),
            f16::MIN_POSITIVE,
            f16::from_f32(2.5),
            f16::from_f32(-7.0),
            f16::from_f32(1e-3),
            f16::INFINITY,
        ];
        let x: Vec<f32> = (0..vals.len())
            .map(|i| if i == 8 { 0.5 } else { 1.0 })
            .collect();
        let mut fast = nans(1);
        let mut portable = nans(1);
        affine(&mut fast, &vals, &[f16::ZERO], &x);
        affine_portable(&mut portable, &vals, &[f16::ZERO], &x);
        assert_eq!(fast[0], f32::INFINITY);
        assert_eq!(portable[0], f32::INFINITY);
        let finite = &vals[..8];
        affine(&mut fast, finite, &[f16::ONE], &x[..8]);
        affine_portable(&mut portable, finite, &[f16::ONE], &x[..8]);
        let want: f64 = 1.0 + finite.iter().map(|v| v.to_f32() as f64).sum::<f64>();
        assert!(
            (fast[0] as f64 - want).abs() < 1e-2,
            "{} vs {want}",
            fast[0]
        );
        assert!((portable[0] as f64 - want).abs() < 1e-2);
    }
}
