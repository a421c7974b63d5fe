//! A multithreaded [`Gemm`] for std builds: splits the product into
//! contiguous blocks of C's rows (or, for a single row, of its columns) and
//! runs recur-core's [`Portable`] kernel on each block in its own thread.
//!
//! Deterministic: every element of C is one dot product whose summation
//! order does not depend on where its block starts (the kernels sum along
//! `k` in the same order for every tile), so the result is bit-for-bit the
//! single-threaded [`Portable`] result, for any thread count.

use std::num::NonZeroUsize;
use std::sync::Arc;

use recur_core::gemm::{check_gemm, gemm_strided, Gemm, Portable, Trans};
use recur_core::Error;

mod pool;

use pool::Pool;

/// Below this many multiply-adds per thread, splitting costs more than it
/// saves (the hand-off to a worker takes a few microseconds).
const MIN_WORK_PER_THREAD: usize = 1 << 19;

/// The multithreaded matrix product: `threads` ≥ 1 threads in total, the
/// calling thread included (it computes the first block itself).
#[derive(Clone)]
pub struct Threaded {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Threaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threaded")
            .field("threads", &self.threads())
            .finish()
    }
}

impl Threaded {
    /// A product on `threads` threads (the caller's plus `threads − 1`
    /// persistent workers, started now and stopped when the last clone is
    /// dropped).
    pub fn new(threads: NonZeroUsize) -> Threaded {
        Threaded {
            pool: Arc::new(Pool::new(threads.get() - 1)),
        }
    }

    /// A product on as many threads as the machine offers.
    pub fn available() -> Threaded {
        let n = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        Threaded::new(n)
    }

    /// Total threads, the caller's included.
    pub fn threads(&self) -> usize {
        self.pool.workers() + 1
    }
}

/// One block of the split: rows `i0..i1` and columns `j0..j1` of C.
#[derive(Debug, Clone, Copy)]
struct Part {
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
}

/// Even contiguous split of `len` into `parts` ranges (the first ones one
/// longer when it does not divide).
fn split(len: usize, parts: usize, index: usize) -> (usize, usize) {
    let base = len / parts;
    let extra = len % parts;
    let start = index * base + index.min(extra);
    let size = base + usize::from(index < extra);
    (start, start + size)
}

impl Gemm for Threaded {
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
        let work = m.saturating_mul(n).saturating_mul(k);
        // Split rows when there are rows to split, else the columns of the
        // single row (both give disjoint, contiguous pieces of C).
        let splittable = if m > 1 { m } else { n };
        let parts = self
            .threads()
            .min(work / MIN_WORK_PER_THREAD)
            .min(splittable)
            .max(1);
        if parts == 1 {
            return Portable.gemm(ta, tb, m, n, k, alpha, a, b, beta, c);
        }
        let part = |index: usize| {
            if m > 1 {
                let (i0, i1) = split(m, parts, index);
                Part {
                    i0,
                    i1,
                    j0: 0,
                    j1: n,
                }
            } else {
                let (j0, j1) = split(n, parts, index);
                Part {
                    i0: 0,
                    i1: 1,
                    j0,
                    j1,
                }
            }
        };
        let (lda, ldb) = (
            match ta {
                Trans::N => k,
                Trans::T => m,
            },
            match tb {
                Trans::N => n,
                Trans::T => k,
            },
        );
        let block = |p: Part, c_block: &mut [f32]| -> Result<(), Error> {
            let a_off = match ta {
                Trans::N => p.i0 * lda,
                Trans::T => p.i0,
            };
            let b_off = match tb {
                Trans::N => p.j0,
                Trans::T => p.j0 * ldb,
            };
            gemm_strided(
                ta,
                tb,
                p.i1 - p.i0,
                p.j1 - p.j0,
                k,
                alpha,
                &a[a_off..],
                lda,
                &b[b_off..],
                ldb,
                beta,
                c_block,
                n,
            )
        };
        // Cut C into the parts' disjoint pieces, in order.
        let mut pieces: Vec<(Part, &mut [f32])> = Vec::with_capacity(parts);
        let mut rest = c;
        for index in 0..parts {
            let p = part(index);
            let len = if m > 1 {
                (p.i1 - p.i0) * n
            } else {
                p.j1 - p.j0
            };
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut(len);
            pieces.push((p, piece));
            rest = tail;
        }
        self.pool.run(pieces, |(p, piece)| block(p, piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                    / 16_777_216.0
                    - 0.5
            })
            .collect()
    }

    #[test]
    fn bitwise_equal_to_portable_for_any_thread_count() {
        let shapes = [
            (1, 900, 600),
            (2, 5, 3),
            (32, 768, 256),
            (97, 130, 70),
            (300, 40, 513),
        ];
        let trans = [
            (Trans::N, Trans::N),
            (Trans::N, Trans::T),
            (Trans::T, Trans::N),
            (Trans::T, Trans::T),
        ];
        let pools: Vec<Threaded> = (1..=4)
            .map(|t| Threaded::new(NonZeroUsize::new(t).unwrap()))
            .collect();
        for (m, n, k) in shapes {
            for (ta, tb) in trans {
                let a = data(m * k, 1);
                let b = data(k * n, 2);
                let c0 = data(m * n, 3);
                let mut want = c0.clone();
                Portable
                    .gemm(ta, tb, m, n, k, 0.5, &a, &b, 0.25, &mut want)
                    .unwrap();
                for pool in &pools {
                    let mut c = c0.clone();
                    pool.gemm(ta, tb, m, n, k, 0.5, &a, &b, 0.25, &mut c)
                        .unwrap();
                    assert!(
                        c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{ta:?}{tb:?} {m}x{n}x{k} on {} threads",
                        pool.threads()
                    );
                    // beta = 0 does not read C.
                    let mut c = vec![f32::NAN; m * n];
                    pool.gemm(ta, tb, m, n, k, 1.0, &a, &b, 0.0, &mut c)
                        .unwrap();
                    assert!(c.iter().all(|x| x.is_finite()));
                }
            }
        }
    }

    #[test]
    fn checks_lengths_and_survives_reuse() {
        let pool = Threaded::new(NonZeroUsize::new(3).unwrap());
        let mut c = vec![0.0f32; 4];
        assert!(matches!(
            pool.gemm(
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
        // Many small jobs back to back through the same workers.
        let (m, n, k) = (64, 64, 256);
        let a = data(m * k, 5);
        let b = data(k * n, 6);
        let mut want = vec![0.0f32; m * n];
        Portable
            .gemm(Trans::N, Trans::N, m, n, k, 1.0, &a, &b, 0.0, &mut want)
            .unwrap();
        for _ in 0..200 {
            let mut c = vec![f32::NAN; m * n];
            pool.gemm(Trans::N, Trans::N, m, n, k, 1.0, &a, &b, 0.0, &mut c)
                .unwrap();
            assert_eq!(c, want);
        }
        let clone = pool.clone();
        drop(pool);
        assert_eq!(clone.threads(), 3);
    }

    #[test]
    fn split_covers_the_range() {
        for len in [1usize, 2, 7, 32, 1027] {
            for parts in 1..=len.min(9) {
                let mut next = 0;
                for i in 0..parts {
                    let (s, e) = split(len, parts, i);
                    assert_eq!(s, next);
                    assert!(e > s);
                    next = e;
                }
                assert_eq!(next, len);
            }
        }
    }
}
