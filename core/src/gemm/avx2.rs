//! AVX2 + FMA kernels (x86-64), used only after run-time detection
//! ([`super::Isa::detect`]).
//!
//! - Products with `op(B) = Bᵀ` (the recurrent and output-layer products,
//!   `X · Wᵀ`) read both operands along their contiguous depth: a 3 × 4
//!   tile of dot products, no packing at all.
//! - The other three combinations go through the packed, blocked driver with
//!   a 6 × 16 outer-product micro-kernel (12 accumulators, two `B` vectors,
//!   one broadcast of `A`).

use core::arch::x86_64::*;

use super::driver::{packed, store_tile};
use super::pack::{MR, NR};

/// 8-lane vectors per micro-tile row.
const NV: usize = NR / 8;
use crate::gemm::Trans;

/// `C = alpha · op(A)·op(B) + beta · C` with leading dimensions; lengths
/// checked, `m, n, k ≥ 1`.
///
/// # Safety
/// The processor must support AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm(
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    if ta == Trans::N && tb == Trans::T {
        gemm_nt(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else {
        packed(
            // SAFETY: this function's own precondition (AVX2 and FMA).
            // Edge slivers with fewer rows run a shorter kernel instead of
            // multiplying padding (32 rows = 5 full slivers + one of 2).
            |kc, ap, bp, ct, ldc, mr, nr, al, be| unsafe {
                match mr {
                    6 => kernel_mr_nr::<6>(kc, ap, bp, ct, ldc, nr, al, be),
                    5 => kernel_mr_nr::<5>(kc, ap, bp, ct, ldc, nr, al, be),
                    4 => kernel_mr_nr::<4>(kc, ap, bp, ct, ldc, nr, al, be),
                    3 => kernel_mr_nr::<3>(kc, ap, bp, ct, ldc, nr, al, be),
                    2 => kernel_mr_nr::<2>(kc, ap, bp, ct, ldc, nr, al, be),
                    _ => kernel_mr_nr::<1>(kc, ap, bp, ct, ldc, nr, al, be),
                }
            },
            ta,
            tb,
            m,
            n,
            k,
            alpha,
            a,
            lda,
            b,
            ldb,
            beta,
            c,
            ldc,
        );
    }
}

/// The R × NR micro-kernel (R ≤ MR rows of the sliver) over packed slivers
/// (see [`super::driver`]).
///
/// # Safety
/// AVX2 and FMA must be available.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn kernel_mr_nr<const R: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
) {
    // Checked once per tile: the loads and stores below rely on them.
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    assert!((1..=MR).contains(&R) && (1..=NR).contains(&nr));
    assert!(c.len() >= (R - 1) * ldc + nr);
    let ap = a.as_ptr();
    let bp = b.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); NV]; R];
    for p in 0..kc {
        // SAFETY: p < kc, so p·NR + NR ≤ kc·NR ≤ b.len() and
        // p·MR + r < kc·MR ≤ a.len().
        unsafe {
            let mut bv = [_mm256_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(bp.add(p * NR + 8 * v));
            }
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add(p * MR + r));
                for (x, &bx) in acc_row.iter_mut().zip(&bv) {
                    *x = _mm256_fmadd_ps(av, bx, *x);
                }
            }
        }
    }
    if nr == NR {
        let va = _mm256_set1_ps(alpha);
        let vb = _mm256_set1_ps(beta);
        for (r, acc_row) in acc.iter().enumerate() {
            for (v, &x) in acc_row.iter().enumerate() {
                // SAFETY: row r < R starts at r·ldc and has NR = nr
                // elements inside c (asserted above).
                unsafe {
                    let cp = c.as_mut_ptr().add(r * ldc + 8 * v);
                    let x = _mm256_mul_ps(va, x);
                    if beta == 0.0 {
                        _mm256_storeu_ps(cp, x);
                    } else {
                        _mm256_storeu_ps(cp, _mm256_fmadd_ps(vb, _mm256_loadu_ps(cp), x));
                    }
                }
            }
        }
    } else {
        let mut tile = [[0.0f32; NR]; MR];
        for (t, acc_row) in tile.iter_mut().zip(&acc) {
            for (v, &x) in acc_row.iter().enumerate() {
                // SAFETY: each tile row holds NR = 8·NV floats.
                unsafe { _mm256_storeu_ps(t.as_mut_ptr().add(8 * v), x) };
            }
        }
        store_tile(&tile, c, ldc, R, nr, alpha, beta);
    }
}

/// Depth block of the dot-product path: 4 `B` rows of `KD` floats stay in L1.
const KD: usize = 512;
/// Rows of `A` swept per `B` quad: `MD · KD · 4` ≤ 192 KiB (L2).
const MD: usize = 96;

/// `C = alpha · A·Bᵀ + beta · C` with `a` (m, k), `b` (n, k), both read
/// along `k` without packing.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_nt(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let mut p0 = 0;
    while p0 < k {
        let kc = KD.min(k - p0);
        let beta_block = if p0 == 0 { beta } else { 1.0 };
        let mut i0 = 0;
        while i0 < m {
            let i_end = m.min(i0 + MD);
            let mut j = 0;
            while j < n {
                let cols = 4.min(n - j);
                let mut i = i0;
                while i < i_end {
                    let rows = 3.min(i_end - i);
                    let at = &a[i * lda + p0..];
                    let bt = &b[j * ldb + p0..];
                    let ct = &mut c[i * ldc + j..];
                    // SAFETY: AVX2 and FMA (this function's precondition).
                    unsafe {
                        match (rows, cols) {
                            (3, 4) => {
                                dot_tile::<3, 4>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                            (3, 3) => {
                                dot_tile::<3, 3>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                            (3, 2) => {
                                dot_tile::<3, 2>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                            (3, _) => {
                                dot_tile::<3, 1>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                            (2, 4) => {
                                dot_tile::<2, 4>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                            (2, 3) => {
                                dot_tile::<2, 3>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                            (2, 2) => {
                                dot_tile::<2, 2>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                            (2, _) => {
                                dot_tile::<2, 1>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                            (_, 4) => {
                                dot_tile::<1, 4>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                            (_, 3) => {
                                dot_tile::<1, 3>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                            (_, 2) => {
                                dot_tile::<1, 2>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                            (_, _) => {
                                dot_tile::<1, 1>(kc, at, lda, bt, ldb, ct, ldc, alpha, beta_block)
                            }
                        }
                    }
                    i += 3;
                }
                j += 4;
            }
            i0 = i_end;
        }
        p0 += KD;
    }
}

/// Sums of the 8 lanes of each of four vectors: `[Σx0, Σx1, Σx2, Σx3]`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum4(x: [__m256; 4]) -> __m128 {
    let t01 = _mm256_hadd_ps(x[0], x[1]);
    let t23 = _mm256_hadd_ps(x[2], x[3]);
    let t = _mm256_hadd_ps(t01, t23);
    _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1))
}

/// An `R × C` tile of dot products, `R ≤ 3` rows of A against `C ≤ 4` rows
/// of B over depth `kc`: `c[i·ldc + j] = alpha · Σ_p a[i·lda+p]·b[j·ldb+p] + beta · c[..]`.
///
/// # Safety
/// AVX2 and FMA must be available.
// Index loops: the j-outer, i-inner order keeps one `B` vector live at a
// time (12 accumulators + 3 `A` vectors + 1 `B` vector = 16 registers).
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_tile<const R: usize, const C: usize>(
    kc: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    // Checked once per tile: the unchecked loads below rely on them.
    assert!(R >= 1 && C >= 1 && C <= 4);
    assert!(a.len() >= (R - 1) * lda + kc && b.len() >= (C - 1) * ldb + kc);
    assert!(c.len() >= (R - 1) * ldc + C);
    let ap = a.as_ptr();
    let bp = b.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let k8 = kc & !7;
    let mut p = 0;
    while p < k8 {
        // SAFETY: p + 8 ≤ kc, so every row read stays inside its row of
        // `kc` elements (asserted above).
        unsafe {
            let mut av = [_mm256_setzero_ps(); R];
            for (i, v) in av.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(ap.add(i * lda + p));
            }
            for j in 0..C {
                let bv = _mm256_loadu_ps(bp.add(j * ldb + p));
                for i in 0..R {
                    acc[i][j] = _mm256_fmadd_ps(av[i], bv, acc[i][j]);
                }
            }
        }
        p += 8;
    }
    let mut sums = [[0.0f32; 4]; R];
    for (s, acc_row) in sums.iter_mut().zip(&acc) {
        let mut x = [_mm256_setzero_ps(); 4];
        x[..C].copy_from_slice(acc_row);
        // SAFETY: `s` holds 4 floats.
        unsafe { _mm_storeu_ps(s.as_mut_ptr(), hsum4(x)) };
    }
    for p in k8..kc {
        for (i, s) in sums.iter_mut().enumerate() {
            for (j, sj) in s.iter_mut().enumerate().take(C) {
                *sj += a[i * lda + p] * b[j * ldb + p];
            }
        }
    }
    for (i, s) in sums.iter().enumerate() {
        let row = &mut c[i * ldc..i * ldc + C];
        if beta == 0.0 {
            for (out, &v) in row.iter_mut().zip(s) {
                *out = alpha * v;
            }
        } else {
            for (out, &v) in row.iter_mut().zip(s) {
                *out = alpha * v + beta * *out;
            }
        }
    }
}
