//! The cache-blocked loop nest around a micro-kernel (Goto's scheme):
//! depth blocks of `KC`, row blocks of `MC` packed once, column slivers of
//! `NR` packed once per row block, micro-tiles of `MR × NR`.

use super::pack::{pack_a, pack_b, Block, KC, MC, MR, NR};
use crate::gemm::Trans;

/// `C = alpha · op(A)·op(B) + beta · C` through packed blocks, operands
/// with leading dimensions `lda`, `ldb`, `ldc` (see [`crate::gemm::gemm_strided`]);
/// lengths are checked by the caller, `m, n, k ≥ 1`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn packed(
    kernel: impl Fn(usize, &[f32], &[f32], &mut [f32], usize, usize, usize, f32, f32),
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
    let mut a_block = Block::<{ MC * KC }>::new();
    let mut b_block = Block::<{ KC * NR }>::new();
    let mut p0 = 0;
    while p0 < k {
        let kc = KC.min(k - p0);
        // Later depth blocks add to what the first one stored.
        let beta_block = if p0 == 0 { beta } else { 1.0 };
        let mut i0 = 0;
        while i0 < m {
            let mc = MC.min(m - i0);
            let a_pack = pack_a(&mut a_block, ta, a, lda, i0, mc, p0, kc);
            let mut j0 = 0;
            while j0 < n {
                let nr = NR.min(n - j0);
                let b_pack = pack_b(&mut b_block, tb, b, ldb, j0, nr, p0, kc);
                for (s, a_sliver) in a_pack.chunks_exact(MR * kc).enumerate() {
                    let row = i0 + s * MR;
                    let mr = MR.min(m - row);
                    let tile = &mut c[row * ldc + j0..];
                    kernel(kc, a_sliver, b_pack, tile, ldc, mr, nr, alpha, beta_block);
                }
                j0 += NR;
            }
            i0 += MC;
        }
        p0 += KC;
    }
}

/// Writes `alpha · acc + beta · C` into the `mr × nr` corner of a tile
/// (`beta == 0`: C is not read).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn store_tile(
    acc: &[[f32; NR]; MR],
    c: &mut [f32],
    ldc: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
) {
    for (r, acc_row) in acc.iter().enumerate().take(mr) {
        let row = &mut c[r * ldc..r * ldc + nr];
        if beta == 0.0 {
            for (out, &v) in row.iter_mut().zip(acc_row) {
                *out = alpha * v;
            }
        } else {
            for (out, &v) in row.iter_mut().zip(acc_row) {
                *out = alpha * v + beta * *out;
            }
        }
    }
}

/// The portable micro-kernel: plain loops over an `MR × NR` accumulator
/// that the compiler vectorises for the build target.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn generic_kernel(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
) {
    let mut acc = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for (acc_row, &av) in acc.iter_mut().zip(ap) {
            for (x, &bv) in acc_row.iter_mut().zip(bp) {
                *x += av * bv;
            }
        }
    }
    store_tile(&acc, c, ldc, mr, nr, alpha, beta);
}
