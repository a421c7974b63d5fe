//! Property tests of the matrix products: recur-core's [`Portable`] (on
//! every kernel the processor supports) against an f64 reference over
//! random shapes, transpositions and scalars, and the threaded product
//! against [`Portable`] bit for bit.

use std::num::NonZeroUsize;

use proptest::prelude::*;
use recur::gemm_threaded::Threaded;
use recur_core::gemm::{gemm_with_isa, Gemm, Isa, Portable, Trans};

fn trans() -> impl Strategy<Value = Trans> {
    prop_oneof![Just(Trans::N), Just(Trans::T)]
}

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// f64 product and a per-element bound on f32 rounding (2k+4 ulps of the
/// magnitude sum).
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
) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (mut acc, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let av = f64::from(if ta == Trans::N {
                    a[i * k + p]
                } else {
                    a[p * m + i]
                });
                let bv = f64::from(if tb == Trans::N {
                    b[p * n + j]
                } else {
                    b[j * k + p]
                });
                acc += av * bv;
                mag += (av * bv).abs();
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                f64::from(beta) * f64::from(c[i * n + j])
            };
            let bound = (2.0 * k as f64 + 4.0)
                * f64::from(f32::EPSILON)
                * (f64::from(alpha.abs()) * mag + old.abs())
                + 1e-30;
            out.push((f64::from(alpha) * acc + old, bound));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn portable_matches_reference(
        m in 1usize..90, n in 1usize..90, k in 1usize..300,
        ta in trans(), tb in trans(),
        alpha in prop_oneof![Just(1.0f32), Just(-0.5), Just(3.0)],
        beta in prop_oneof![Just(0.0f32), Just(1.0), Just(-0.25)],
        seed in any::<u64>(),
    ) {
        let a = values(seed, m * k);
        let b = values(seed ^ 1, k * n);
        let c0 = if beta == 0.0 { vec![f32::NAN; m * n] } else { values(seed ^ 2, m * n) };
        let want = reference(ta, tb, m, n, k, alpha, &a, &b, beta, &c0);
        for isa in [Isa::Generic, Isa::Avx2Fma] {
            if !isa.is_supported() {
                continue;
            }
            let mut c = c0.clone();
            gemm_with_isa(isa, ta, tb, m, n, k, alpha, &a, &b, beta, &mut c).unwrap();
            for (idx, (&got, &(w, bound))) in c.iter().zip(&want).enumerate() {
                prop_assert!(
                    (f64::from(got) - w).abs() <= bound,
                    "{:?} {:?}{:?} {}x{}x{} C[{}] = {} want {}", isa, ta, tb, m, n, k, idx, got, w
                );
            }
        }
    }

    #[test]
    fn threaded_is_bitwise_portable(
        m in 1usize..200, n in 1usize..300, k in 1usize..300,
        ta in trans(), tb in trans(), threads in 1usize..5, seed in any::<u64>(),
    ) {
        let a = values(seed, m * k);
        let b = values(seed ^ 1, k * n);
        let mut want = values(seed ^ 2, m * n);
        let mut got = want.clone();
        Portable.gemm(ta, tb, m, n, k, 1.5, &a, &b, 0.5, &mut want).unwrap();
        let pool = Threaded::new(NonZeroUsize::new(threads).unwrap());
        pool.gemm(ta, tb, m, n, k, 1.5, &a, &b, 0.5, &mut got).unwrap();
        prop_assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
