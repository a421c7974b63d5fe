//! Matrix products. Every dense product in recur-core goes through the
//! [`Gemm`] trait so that std code can plug in a multithreaded or vendor
//! implementation; [`Portable`] is the allocation-free, single-threaded one
//! that recur-core ships.

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

/// recur-core's own single-threaded, allocation-free matrix product.
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
        check_gemm(m, n, k, a, b, c)?;
        naive(ta, tb, m, n, k, alpha, a, b, beta, c);
        Ok(())
    }
}

/// Reference product: three loops, f32 accumulation. Lengths already checked.
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
