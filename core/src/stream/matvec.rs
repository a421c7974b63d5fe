//! The output layer of one stream step: `out = W x + b` for a single vector
//! `x`, weights stored as `f32` or `f16` and converted on the fly, sums in
//! f32; and the same product for the cells' batch-1 step.
//!
//! A step at batch 1 reads every weight once and does two flops per weight,
//! so it is bound by memory bandwidth: what matters is loading wide and
//! converting `f16` cheaply. On x86-64 the kernel is chosen at run time (no
//! `std`, see [`Kernel`]): AVX2 + FMA + F16C (8 lanes) by default, AVX-512F
//! (16 lanes, 16-wide hardware f16 conversion) on request where the
//! processor has it (measured no faster on the Xeon at hand); both run
//! eight rows at a time (`kernel.rs`). Elsewhere (Cortex-M,
//! older x86) a portable loop the compiler vectorises as the target allows,
//! the reference the tests hold the kernels to.

use core::any::TypeId;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::error::{check_len, mul, Error};

use crate::weight::Weight;

pub(crate) mod kernel;

pub(crate) use kernel::Side;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Independent partial sums of the portable dot product (lets it vectorise).
const LANES: usize = 8;

/// The matrix-vector kernel a processor runs (detected once at run time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust, whatever the compiler vectorises for the build target.
    Portable,
    /// x86-64 AVX2 + FMA + F16C, 8 lanes.
    Avx2,
    /// x86-64 AVX-512F, 16 lanes.
    Avx512,
}

/// 0: none selected (the detected kernel runs); else 1 + the index of the
/// kernel [`Kernel::select`] chose.
static SELECTED: AtomicU8 = AtomicU8::new(0);

impl Kernel {
    /// The widest kernel this processor (and its operating system) supports.
    pub fn widest() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        return x86::detect();
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Portable
    }

    /// The kernel the steps run unless [`Kernel::select`] chose another:
    /// AVX2 where the processor has it, also where it has AVX-512F. On the
    /// AVX-512 machine measured (a Sapphire/Emerald Rapids-class Xeon, see
    /// docs/edge.md) the 16-lane kernel was no faster: f16 is bound by the
    /// conversion instruction at the same rate for both widths, and f32 ran
    /// slower at 16 lanes.
    pub fn detect() -> Kernel {
        match Kernel::widest() {
            Kernel::Avx512 => Kernel::Avx2,
            k => k,
        }
    }

    /// Whether this processor can run the kernel.
    pub fn is_supported(self) -> bool {
        matches!(
            (self, Kernel::widest()),
            (Kernel::Portable, _)
                | (Kernel::Avx2, Kernel::Avx2 | Kernel::Avx512)
                | (Kernel::Avx512, Kernel::Avx512)
        )
    }

    /// The kernel the steps run: the one [`Kernel::select`] chose, else
    /// [`Kernel::detect`]'s.
    pub fn active() -> Kernel {
        match SELECTED.load(Ordering::Relaxed) {
            1 => Kernel::Portable,
            2 => Kernel::Avx2,
            3 => Kernel::Avx512,
            _ => Kernel::detect(),
        }
    }

    /// Makes every later step of this process run `kernel` (`None`: the
    /// detected one again), to compare the kernels on one machine (the
    /// benchmark does). Results differ between kernels in the order of
    /// the sums. [`Error::Value`] (`"kernel"`) where the processor lacks it.
    pub fn select(kernel: Option<Kernel>) -> Result<(), Error> {
        let code = match kernel {
            None => 0,
            Some(k) if !k.is_supported() => return Err(Error::Value { what: "kernel" }),
            Some(Kernel::Portable) => 1,
            Some(Kernel::Avx2) => 2,
            Some(Kernel::Avx512) => 3,
        };
        SELECTED.store(code, Ordering::Relaxed);
        Ok(())
    }

    /// `out = W x` on this kernel, the product of the step's output layer
    /// (and of the cells' batch-1 step), for benchmarks that compare the
    /// kernels on one matrix.
    ///
    /// - `out`: out, (R); overwritten.
    /// - `w`: (R, K) row-major, `f32` or `f16`. `x`: (K).
    ///
    /// Errors: `w` not R·K long ([`Error::Length`]), a kernel the processor
    /// lacks ([`Error::Value`], `"kernel"`).
    pub fn matvec<W: Weight>(self, out: &mut [f32], w: &[W], x: &[f32]) -> Result<(), Error> {
        check_len("w", w, mul("rows", out.len(), x.len())?)?;
        if !self.is_supported() {
            return Err(Error::Value { what: "kernel" });
        }
        if !product_on(self, out, w, x, &mut Side::none()) {
            match x.len() {
                0 => out.fill(0.0),
                k => {
                    for (o, row) in out.iter_mut().zip(w.chunks_exact(k)) {
                        *o = dot(row, x);
                    }
                }
            }
        }
        Ok(())
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2+fma+f16c, 8 lanes",
            Kernel::Avx512 => "avx512f, 16 lanes",
        }
    }
}

/// `out[r] = bias[r] + Σ_k w[r·K + k] · x[k]` with `K = x.len()`.
///
/// - `out`: out, (R); overwritten, never read.
/// - `w`: (R, K) row-major. `bias`: (R). `x`: (K).
///
/// Lengths are the caller's to check: `w.len() == out.len() * x.len()`,
/// `bias.len() == out.len()`; extra rows or elements are ignored, missing
/// ones leave outputs unwritten (never out-of-bounds).
pub(crate) fn affine<W: Weight>(out: &mut [f32], w: &[W], bias: &[W], x: &[f32]) {
    if product_x86(out, w, x, &mut Side::none()) {
        add_bias(out, bias);
        return;
    }
    affine_portable(out, w, bias, x);
}

/// `out[r] = Σ_k w[r·K + k] · x[k]` (`K = x.len()`, shapes as in
/// [`affine`]) on the active x86-64 kernel, when there is one and `W` is
/// `f32` or `f16`: `true`. Otherwise `false`, `out` untouched, for the
/// caller's portable loop. f32 and f16 weights of the same values give the
/// same bits here (exact conversion, one summation order per kernel), which
/// the cells' step relies on. `side`: lines of another array to prefetch on
/// the way, updated to those left ([`Side`]).
pub(crate) fn product_x86<W: Weight>(out: &mut [f32], w: &[W], x: &[f32], side: &mut Side) -> bool {
    product_on(Kernel::active(), out, w, x, side)
}

/// [`product_x86`] on a chosen kernel: `false` (and `out` untouched) for
/// the portable one, one the processor lacks, or another `W`.
pub(crate) fn product_on<W: Weight>(
    kernel: Kernel,
    out: &mut [f32],
    w: &[W],
    x: &[f32],
    side: &mut Side,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if kernel != Kernel::Portable && kernel.is_supported() {
        let avx512 = kernel == Kernel::Avx512;
        if let Some(w32) = cast::<W, f32>(w) {
            // SAFETY: the processor supports the kernel (checked above).
            unsafe {
                if avx512 {
                    x86::avx512_f32(out, w32, x, side)
                } else {
                    x86::avx2_f32(out, w32, x, side)
                }
            };
            return true;
        }
        if let Some(w16) = cast::<W, half::f16>(w) {
            // SAFETY: as above.
            unsafe {
                if avx512 {
                    x86::avx512_f16(out, w16, x, side)
                } else {
                    x86::avx2_f16(out, w16, x, side)
                }
            };
            return true;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (kernel, out, w, x, side);
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

    /// `W x` on one of the kernels under test: `None` where it cannot run.
    #[derive(Debug, Clone, Copy)]
    enum Under {
        Hw(Kernel),
        /// The kernel's code on emulated 16-lane vectors.
        Soft16,
    }

    fn product<W: Weight>(under: Under, out: &mut [f32], w: &[W], x: &[f32]) -> Option<()> {
        product_side(under, out, w, x, &mut Side::none())
    }

    fn product_side<W: Weight>(
        under: Under,
        out: &mut [f32],
        w: &[W],
        x: &[f32],
        side: &mut Side,
    ) -> Option<()> {
        match under {
            Under::Hw(kernel) => product_on(kernel, out, w, x, side).then_some(()),
            Under::Soft16 => {
                // SAFETY: the emulation needs no processor feature.
                if let Some(w32) = cast::<W, f32>(w) {
                    unsafe { kernel::soft::product_f32(out, w32, x, side) };
                } else {
                    let w16 = cast::<W, f16>(w)?;
                    unsafe { kernel::soft::product_f16(out, w16, x, side) };
                }
                Some(())
            }
        }
    }

    const UNDER: [Under; 3] = [
        Under::Soft16,
        Under::Hw(Kernel::Avx2),
        Under::Hw(Kernel::Avx512),
    ];

    /// A line on stderr itself, past the harness's capture of `eprintln!`,
    /// so that CI's log shows it.
    fn note(line: std::fmt::Arguments<'_>) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{line}");
    }

    /// Says which kernels this processor skips.
    fn note_skipped() {
        for k in [Kernel::Avx2, Kernel::Avx512] {
            if !k.is_supported() {
                note(format_args!(
                    "stream::matvec: skipped the {} kernel (not on this processor)",
                    k.name()
                ));
            }
        }
    }

    fn check(rows: usize, k: usize, seed: u64) {
        let mut rng = SplitMix(seed);
        let w16: Vec<f16> = rng
            .vec(rows * k, 1.0)
            .into_iter()
            .map(f16::from_f32)
            .collect();
        let w32: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
        let b: Vec<f32> = rng.vec(rows, 1.0);
        let x = rng.vec(k, 1.0);
        let want = reference(&w32, &b, &x);
        let mut portable = nans(rows);
        affine_portable(&mut portable, &w32, &b, &x);
        // f32 sums of k products of magnitude ≤ 1: error ≲ k·2⁻²⁴·k.
        let tol = 1e-6 * (k * k) as f64 + 1e-6;
        for r in 0..rows {
            assert!(
                (portable[r] as f64 - want[r]).abs() < tol,
                "portable row {r}"
            );
        }
        for under in UNDER {
            let mut o32 = nans(rows);
            let mut o16 = nans(rows);
            if product(under, &mut o32, &w32, &x).is_none() {
                continue;
            }
            product(under, &mut o16, &w16, &x).expect("f16 runs where f32 does");
            for r in 0..rows {
                let got = o32[r] + b[r];
                assert!(
                    (got as f64 - want[r]).abs() < tol,
                    "{under:?} rows {rows} k {k}: row {r} {got} vs {}",
                    want[r]
                );
                // Same values stored as f16: the same bits.
                assert_eq!(o16[r].to_bits(), o32[r].to_bits(), "{under:?} f16 row {r}");
            }
        }
        // The dispatching entry point agrees with the portable loop.
        let mut fast = nans(rows);
        affine(&mut fast, &w32, &b, &x);
        for r in 0..rows {
            assert!((fast[r] as f64 - want[r]).abs() < tol, "affine row {r}");
        }
    }

    #[test]
    fn every_kernel_matches_the_reference_for_every_shape() {
        note_skipped();
        // Row counts around the 8-row block, widths around the 8- and
        // 16-lane chunks; 256 is d2l's hidden size.
        let rows = [1usize, 3, 7, 8, 9, 16, 17, 23];
        let ks = [1usize, 7, 8, 9, 15, 16, 17, 37, 256];
        for (i, &r) in rows.iter().enumerate() {
            for (j, &k) in ks.iter().enumerate() {
                check(r, k, (i * 10 + j) as u64);
            }
        }
    }

    #[test]
    fn kernels_leave_rows_beyond_w_alone_and_zero_for_empty_x() {
        note_skipped();
        let (rows, k) = (11, 16);
        let w: Vec<f32> = SplitMix(3).vec(9 * k, 1.0);
        for under in UNDER {
            // `out` longer than `w` holds rows for: the last two untouched.
            let mut out = nans(rows);
            if product(under, &mut out, &w, &SplitMix(4).vec(k, 1.0)).is_none() {
                continue;
            }
            assert!(out[..9].iter().all(|v| v.is_finite()), "{under:?}");
            assert!(out[9..].iter().all(|v| v.is_nan()), "{under:?}");
            let mut out = nans(3);
            product(under, &mut out, &w[..0], &[]).unwrap();
            assert_eq!(out, [0.0; 3], "{under:?}");
        }
    }

    #[test]
    fn side_prefetches_change_nothing_and_are_used_up() {
        note_skipped();
        let (rows, k) = (64, 40);
        let w = SplitMix(5).vec(rows * k, 1.0);
        let x = SplitMix(6).vec(k, 1.0);
        let other = std::vec![0u8; 100 * 256];
        for under in UNDER {
            let mut plain = nans(rows);
            if product(under, &mut plain, &w, &x).is_none() {
                continue;
            }
            let mut side = Side {
                ptr: other.as_ptr(),
                stride: 256,
                count: 100,
            };
            let mut with_side = nans(rows);
            product_side(under, &mut with_side, &w, &x, &mut side).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&with_side), bits(&plain), "{under:?}");
            // 8 blocks of rows, kernel::SIDE_PER_BLOCK lines each.
            let issued = (rows / kernel::ROWS) * kernel::SIDE_PER_BLOCK;
            assert_eq!(side.count, 100 - issued, "{under:?}");
            assert_eq!(side.ptr, other.as_ptr().wrapping_add(issued * 256));
        }
    }

    #[test]
    fn the_public_product_runs_every_supported_kernel() {
        let (rows, k) = (19, 33);
        let w16: Vec<f16> = SplitMix(8)
            .vec(rows * k, 1.0)
            .into_iter()
            .map(f16::from_f32)
            .collect();
        let w32: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
        let x = SplitMix(9).vec(k, 1.0);
        let want = reference(&w32, &std::vec![0.0f32; rows], &x);
        for kernel in [Kernel::Portable, Kernel::Avx2, Kernel::Avx512] {
            let mut o32 = nans(rows);
            let mut o16 = nans(rows);
            match kernel.matvec(&mut o32, &w32, &x) {
                Ok(()) => kernel.matvec(&mut o16, &w16, &x).unwrap(),
                Err(e) => {
                    assert!(!kernel.is_supported());
                    assert_eq!(e, Error::Value { what: "kernel" });
                    continue;
                }
            }
            for r in 0..rows {
                assert!((o32[r] as f64 - want[r]).abs() < 1e-4, "{kernel:?} row {r}");
            }
            assert_eq!(o16, o32, "{kernel:?}");
        }
        assert!(matches!(
            Kernel::Portable.matvec(&mut nans(rows), &w32[1..], &x),
            Err(Error::Length { what: "w", .. })
        ));
    }

    #[test]
    fn selecting_a_missing_kernel_is_an_error() {
        // (Selecting a supported one would change the kernel under the
        // other tests running in parallel: only the error is tested.)
        for k in [Kernel::Avx2, Kernel::Avx512] {
            if !k.is_supported() {
                assert_eq!(
                    Kernel::select(Some(k)),
                    Err(Error::Value { what: "kernel" })
                );
                assert_eq!(Kernel::active(), Kernel::detect());
            }
        }
    }

    #[test]
    fn detection_is_consistent() {
        let (k, w) = (Kernel::detect(), Kernel::widest());
        note(format_args!(
            "stream::matvec: default kernel on this processor: {}; widest: {}",
            k.name(),
            w.name()
        ));
        assert!(k.is_supported() && w.is_supported());
        assert!(Kernel::Portable.is_supported());
        if w == Kernel::Avx512 {
            assert!(Kernel::Avx2.is_supported());
            assert_eq!(k, Kernel::Avx2);
        } else {
            assert_eq!(k, w);
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
