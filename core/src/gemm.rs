//! Matrix products. Every dense product in recur-core goes through the
//! [`Gemm`] trait so that std code can plug in a multithreaded or vendor
//! implementation; [`Portable`] is the allocation-free, single-threaded one
//! that recur-core ships.
//!
//! [`Portable`] packs operands into fixed-size blocks on the stack (about
//! 90 KiB of stack at most; no heap) and runs a cache-blocked loop around a
//! micro-kernel: AVX2 + FMA on x86-64 processors that have them (detected at
//! run time, see [`Isa`]), plain Rust elsewhere.

mod driver;
mod isa;
mod pack;

#[cfg(target_arch = "x86_64")]
mod avx2;

pub use isa::Isa;

use crate::error::{check_len, mul, Error};

/// Whether an operand is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trans {
    /// Use as stored.
    N,
    /// Use transposed.
    T,
}

/// A single-precision matrix product on row-major, tightly packed matrices.
pub trait Gemm {
    /// `C (m×n) = alpha · op(A) · op(B) + beta · C`.
    ///
    /// - `a`: op(A) is m×k; stored (m, k) for [`Trans::N`], (k, m) for [`Trans::T`].
    /// - `b`: op(B) is k×n; stored (k, n) for [`Trans::N`], (n, k) for [`Trans::T`].
    /// - `c`: (m, n). With `beta == 0` C is overwritten without being read
    ///   (a NaN in C does not propagate). `c` may not alias `a` or `b`
    ///   (Rust's borrow rules enforce it).
    ///
    /// Implementations must check the lengths with [`check_gemm`] and
    /// return its error.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        ta: Trans,
        tb: Trans,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: &mut [f32],
    ) -> Result<(), Error>;
}

/// Checks the slice lengths of a [`Gemm::gemm`] call.
pub fn check_gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &[f32],
) -> Result<(), Error> {
    check_len("gemm a", a, mul("gemm m", m, k)?)?;
    check_len("gemm b", b, mul("gemm k", k, n)?)?;
    check_len("gemm c", c, mul("gemm m", m, n)?)
}

/// recur-core's own single-threaded, allocation-free matrix product, on the
/// best [`Isa`] the processor supports.
///
/// Conventions beyond [`Gemm::gemm`]'s: with `k == 0` or `alpha == 0` the
/// product is not formed (`C = beta · C`, as in BLAS), so NaNs in A or B do
/// not reach C then.
#[derive(Debug, Clone, Copy, Default)]
pub struct Portable;

impl Gemm for Portable {
    fn gemm(
        &self,
        ta: Trans,
        tb: Trans,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: &mut [f32],
    ) -> Result<(), Error> {
        gemm_with_isa(Isa::detect(), ta, tb, m, n, k, alpha, a, b, beta, c)
    }
}

/// [`Portable`]'s product on a chosen instruction set, for tests and
/// benchmarks that compare the kernels. [`Error::Value`] (`"isa"`) when the
/// processor does not support `isa`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_with_isa(
    isa: Isa,
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) -> Result<(), Error> {
    if !isa.is_supported() {
        return Err(Error::Value { what: "isa" });
    }
    check_gemm(m, n, k, a, b, c)?;
    let (lda, ldb) = stored_cols(ta, tb, m, n, k);
    run(isa, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, n);
    Ok(())
}

/// [`Portable`]'s product on sub-matrices: each operand is row-major with
/// its rows `ld*` elements apart (`ld* ≥` its stored column count), so a
/// block of a larger matrix can be passed without copying (the threaded
/// product in the `recur` crate splits its work this way).
///
/// - `a`: op(A) is m×k, stored (m, k) for [`Trans::N`], (k, m) for
///   [`Trans::T`], rows `lda` apart; at least `(rows−1)·lda + cols` elements.
/// - `b`: op(B) is k×n, stored (k, n) or (n, k), rows `ldb` apart.
/// - `c`: (m, n), rows `ldc` apart; elements between rows are not touched.
///   With `beta == 0` C is not read.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
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
) -> Result<(), Error> {
    let (a_rows, a_cols) = match ta {
        Trans::N => (m, k),
        Trans::T => (k, m),
    };
    let (b_rows, b_cols) = match tb {
        Trans::N => (k, n),
        Trans::T => (n, k),
    };
    check_strided("gemm a", "gemm lda", a.len(), a_rows, a_cols, lda)?;
    check_strided("gemm b", "gemm ldb", b.len(), b_rows, b_cols, ldb)?;
    check_strided("gemm c", "gemm ldc", c.len(), m, n, ldc)?;
    run(
        Isa::detect(),
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
    Ok(())
}

/// Checks one strided operand: `ld ≥ cols` and `len ≥ (rows−1)·ld + cols`.
fn check_strided(
    what: &'static str,
    what_ld: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<(), Error> {
    if ld < cols {
        return Err(Error::Dim {
            what: what_ld,
            value: ld,
        });
    }
    let needed = if rows == 0 || cols == 0 {
        0
    } else {
        mul(what, rows - 1, ld)?
            .checked_add(cols)
            .ok_or(Error::Dim { what, value: rows })?
    };
    if len < needed {
        return Err(Error::Length {
            what,
            expected: needed,
            actual: len,
        });
    }
    Ok(())
}

/// Leading dimensions of tightly packed A and B.
fn stored_cols(ta: Trans, tb: Trans, m: usize, n: usize, k: usize) -> (usize, usize) {
    let lda = match ta {
        Trans::N => k,
        Trans::T => m,
    };
    let ldb = match tb {
        Trans::N => n,
        Trans::T => k,
    };
    (lda, ldb)
}

/// Dispatch after the checks; `isa` is supported.
#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
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
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        for i in 0..m {
            let row = &mut c[i * ldc..i * ldc + n];
            if beta == 0.0 {
                row.fill(0.0);
            } else if beta != 1.0 {
                row.iter_mut().for_each(|x| *x *= beta);
            }
        }
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` is supported (checked by every caller).
        Isa::Avx2Fma => unsafe { avx2::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) },
        _ => driver::packed(
            driver::generic_kernel,
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
        ),
    }
}

/// Reference product: three loops, f32 accumulation. Lengths already checked.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn naive(
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                let av = match ta {
                    Trans::N => a[i * k + p],
                    Trans::T => a[p * m + i],
                };
                let bv = match tb {
                    Trans::N => b[p * n + j],
                    Trans::T => b[j * k + p],
                };
                acc += av * bv;
            }
            let out = &mut c[i * n + j];
            *out = if beta == 0.0 {
                alpha * acc
            } else {
                alpha * acc + beta * *out
            };
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::testutil::SplitMix;
    use std::vec::Vec;

    /// f64 reference and a bound on the f32 rounding error of each entry.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        ta: Trans,
        tb: Trans,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: &[f32],
    ) -> (Vec<f64>, Vec<f64>) {
        let mut want = std::vec![0.0f64; m * n];
        let mut bound = std::vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let (mut acc, mut mag) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let av = match ta {
                        Trans::N => a[i * k + p],
                        Trans::T => a[p * m + i],
                    } as f64;
                    let bv = match tb {
                        Trans::N => b[p * n + j],
                        Trans::T => b[j * k + p],
                    } as f64;
                    acc += av * bv;
                    mag += (av * bv).abs();
                }
                let old = if beta == 0.0 {
                    0.0
                } else {
                    beta as f64 * c[i * n + j] as f64
                };
                want[i * n + j] = alpha as f64 * acc + old;
                // f32 accumulation: error ≤ ~k·ε·Σ|ab|; 2k for slack on the
                // blocked summation order, plus the final scaling.
                let eps = f32::EPSILON as f64;
                bound[i * n + j] =
                    (2.0 * k as f64 + 4.0) * eps * (alpha.abs() as f64 * mag + old.abs()) + 1e-30;
            }
        }
        (want, bound)
    }

    fn isas() -> Vec<Isa> {
        let mut v = std::vec![Isa::Generic];
        if Isa::Avx2Fma.is_supported() {
            v.push(Isa::Avx2Fma);
        } else {
            std::println!("AVX2+FMA not available: only the generic kernel is tested");
        }
        v
    }

    #[allow(clippy::too_many_arguments)]
    fn check_case(
        isa: Isa,
        ta: Trans,
        tb: Trans,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        beta: f32,
        rng: &mut SplitMix,
    ) {
        let a = rng.vec(m * k, 1.0);
        let b = rng.vec(k * n, 1.0);
        let c0: Vec<f32> = if beta == 0.0 {
            std::vec![f32::NAN; m * n]
        } else {
            rng.vec(m * n, 1.0)
        };
        let (want, bound) = reference(ta, tb, m, n, k, alpha, &a, &b, beta, &c0);
        let mut c = c0.clone();
        gemm_with_isa(isa, ta, tb, m, n, k, alpha, &a, &b, beta, &mut c).unwrap();
        for idx in 0..m * n {
            let err = (c[idx] as f64 - want[idx]).abs();
            assert!(
                err <= bound[idx],
                "{isa:?} {ta:?}{tb:?} m={m} n={n} k={k} alpha={alpha} beta={beta}: \
                 C[{idx}] = {} want {} (err {err:.3e} > {:.3e})",
                c[idx],
                want[idx],
                bound[idx]
            );
        }
    }

    const TRANS: [(Trans, Trans); 4] = [
        (Trans::N, Trans::N),
        (Trans::N, Trans::T),
        (Trans::T, Trans::N),
        (Trans::T, Trans::T),
    ];

    #[test]
    fn random_small_shapes_match_reference() {
        let mut rng = SplitMix(11);
        for isa in isas() {
            for _ in 0..300 {
                let (m, n, k) = (1 + rng.below(40), 1 + rng.below(40), 1 + rng.below(40));
                let (ta, tb) = TRANS[rng.below(4)];
                let alpha = [1.0, -0.5, 2.0][rng.below(3)];
                let beta = [0.0, 1.0, 0.75][rng.below(3)];
                check_case(isa, ta, tb, m, n, k, alpha, beta, &mut rng);
            }
        }
    }

    #[test]
    fn block_boundaries_match_reference() {
        // Sizes straddling MR=6, NR=16, MC=72, KC=256 and the dot path's
        // 3×4 tiles, MD=96, KD=512.
        let shapes = [
            (1, 1, 1),
            (1, 300, 7),
            (300, 1, 9),
            (7, 17, 257),
            (73, 33, 300),
            (97, 5, 513),
            (145, 47, 520),
            (32, 64, 256),
        ];
        let mut rng = SplitMix(5);
        for isa in isas() {
            for &(m, n, k) in &shapes {
                for (ta, tb) in TRANS {
                    check_case(isa, ta, tb, m, n, k, 1.0, 0.0, &mut rng);
                    check_case(isa, ta, tb, m, n, k, 0.5, 1.0, &mut rng);
                }
            }
        }
    }

    #[test]
    fn degenerate_cases() {
        for isa in isas() {
            // k = 0: C = beta · C, and beta = 0 writes zeros over NaN.
            let mut c = [f32::NAN; 6];
            gemm_with_isa(isa, Trans::N, Trans::N, 2, 3, 0, 1.0, &[], &[], 0.0, &mut c).unwrap();
            assert_eq!(c, [0.0; 6]);
            let mut c = [2.0f32; 6];
            gemm_with_isa(isa, Trans::N, Trans::N, 2, 3, 0, 1.0, &[], &[], 0.5, &mut c).unwrap();
            assert_eq!(c, [1.0; 6]);
            // Empty outputs are fine.
            gemm_with_isa(
                isa,
                Trans::T,
                Trans::N,
                0,
                3,
                2,
                1.0,
                &[],
                &[0.0; 6],
                0.0,
                &mut [],
            )
            .unwrap();
            // Wrong lengths are errors, not panics.
            let mut c = [0.0f32; 4];
            assert!(matches!(
                gemm_with_isa(
                    isa,
                    Trans::N,
                    Trans::N,
                    2,
                    2,
                    2,
                    1.0,
                    &[0.0; 3],
                    &[0.0; 4],
                    0.0,
                    &mut c
                ),
                Err(Error::Length { what: "gemm a", .. })
            ));
            assert!(matches!(
                gemm_with_isa(
                    isa,
                    Trans::N,
                    Trans::N,
                    2,
                    2,
                    2,
                    1.0,
                    &[0.0; 4],
                    &[0.0; 4],
                    0.0,
                    &mut c[..3]
                ),
                Err(Error::Length { what: "gemm c", .. })
            ));
        }
        assert!(matches!(
            Portable.gemm(
                Trans::N,
                Trans::N,
                usize::MAX,
                2,
                2,
                1.0,
                &[],
                &[],
                0.0,
                &mut []
            ),
            Err(Error::Dim { .. })
        ));
    }

    #[test]
    fn strided_blocks_match_the_whole_product() {
        // Compute a 40×50 product as a 2×2 grid of blocks of the same
        // matrices through gemm_strided; C's untouched gaps keep their NaN.
        let (m, n, k) = (40, 50, 30);
        let mut rng = SplitMix(21);
        for (ta, tb) in TRANS {
            let a = rng.vec(m * k, 1.0);
            let b = rng.vec(k * n, 1.0);
            let mut whole = std::vec![f32::NAN; m * n];
            Portable
                .gemm(ta, tb, m, n, k, 1.0, &a, &b, 0.0, &mut whole)
                .unwrap();
            let (lda, ldb) = stored_cols(ta, tb, m, n, k);
            let mut blocks = std::vec![f32::NAN; m * n];
            for (i0, i1) in [(0, 17), (17, 40)] {
                for (j0, j1) in [(0, 23), (23, 50)] {
                    let a_off = match ta {
                        Trans::N => i0 * lda,
                        Trans::T => i0,
                    };
                    let b_off = match tb {
                        Trans::N => j0,
                        Trans::T => j0 * ldb,
                    };
                    gemm_strided(
                        ta,
                        tb,
                        i1 - i0,
                        j1 - j0,
                        k,
                        1.0,
                        &a[a_off..],
                        lda,
                        &b[b_off..],
                        ldb,
                        0.0,
                        &mut blocks[i0 * n + j0..],
                        n,
                    )
                    .unwrap();
                }
            }
            assert_eq!(whole, blocks, "{ta:?}{tb:?}");
        }
        // Leading dimension too small, slice too short.
        let mut c = [0.0f32; 4];
        assert_eq!(
            gemm_strided(
                Trans::N,
                Trans::N,
                2,
                2,
                3,
                1.0,
                &[0.0; 6],
                2,
                &[0.0; 6],
                2,
                0.0,
                &mut c,
                2
            ),
            Err(Error::Dim {
                what: "gemm lda",
                value: 2
            })
        );
        assert!(matches!(
            gemm_strided(
                Trans::N,
                Trans::N,
                2,
                2,
                3,
                1.0,
                &[0.0; 6],
                3,
                &[0.0; 6],
                2,
                0.0,
                &mut c[..3],
                2
            ),
            Err(Error::Length { what: "gemm c", .. })
        ));
    }

    #[test]
    fn isas_agree_with_naive_on_a_cell_shape() {
        let (m, n, k) = (32, 96, 64);
        let mut rng = SplitMix(9);
        let a = rng.vec(m * k, 1.0);
        let b = rng.vec(n * k, 1.0);
        let mut want = std::vec![0.0f32; m * n];
        naive(Trans::N, Trans::T, m, n, k, 1.0, &a, &b, 0.0, &mut want);
        for isa in isas() {
            let mut c = std::vec![f32::NAN; m * n];
            gemm_with_isa(isa, Trans::N, Trans::T, m, n, k, 1.0, &a, &b, 0.0, &mut c).unwrap();
            let worst = c
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-4, "{isa:?}: {worst}");
        }
    }
}
