//! One step for streaming inference with weights stored as `f32` or `f16`.
//!
//! [`Gemm`](crate::Gemm) is f32-only, so the products here are an
//! allocation-free matrix-vector loop over the weight rows, accumulating in
//! f32. Up to [`KERNEL_BATCH`] batch rows, on x86-64 with AVX2, FMA and
//! F16C or with AVX-512F (detected at run time), the products run on the
//! stream's kernel (`stream::matvec`), which converts f16 in hardware: batch
//! 1 is bound by reading the weights, and f16 then costs what f32 does for
//! half the bytes. Elsewhere, f16 weights are widened by an exact,
//! branch-free bit routine that vectorises (`half`'s own, without `std`, is
//! a scalar routine with branches, ~4× slower here); for more than one batch
//! row a chunk of each f16 row is widened once into a stack buffer and
//! reused for every batch row. Like the sequence loops, the step runs an
//! AVX2 build where the processor has it (an AVX-512F build where the
//! stream's kernel is AVX-512).
//!
//! A GRU fed one token reads one column of `weight_ih`: G·H values a row
//! apart, each on its own cache line and rarely cached (a different token
//! each step). That gather waits for the first recurrent product, which
//! prefetches those lines on the way, so their latency overlaps its work.

use core::any::Any;

use half::f16;

use super::input::gather_add;
use super::{gru, lstm, rnn, Input};
#[cfg(target_arch = "x86_64")]
use crate::gemm::Isa;
use crate::layout::{CellDims, CellKind, CellParams};
use crate::stream::matvec::{product_x86, Kernel, Side};
use crate::weight::{f16_bits_to_f32, Weight};

/// Elements per group of the dot product and the conversion: two 8-lane
/// vectors of partial sums, so that the additions do not wait on each other.
const GROUP: usize = 16;

/// f16 weights widened at a time per row (1 KiB of stack).
const CHUNK: usize = 256;

/// The most batch rows that take the x86 kernel, one matrix-vector product
/// per batch row (each reads all the weights again, from the cache); more
/// rows take the loop below that reads each weight row once for all of them.
const KERNEL_BATCH: usize = 4;

/// Output rows of one kernel call: its sums land in a stack buffer (1 KiB)
/// before they are added to the caller's rows.
const KERNEL_ROWS: usize = 256;

/// A group of weights as f32: the f16 bit routine for f16 (the type test is
/// a constant after inlining), `to_f32` otherwise.
#[inline(always)]
fn widen<W: Weight>(group: &[W; GROUP]) -> [f32; GROUP] {
    match (group as &dyn Any).downcast_ref::<[f16; GROUP]>() {
        Some(halves) => core::array::from_fn(|l| f16_bits_to_f32(halves[l].to_bits())),
        None => core::array::from_fn(|l| group[l].to_f32()),
    }
}

/// One weight as f32, f16 by the bit routine (the biases: `half`'s scalar
/// conversion took a few µs of a batch-1 step).
#[inline(always)]
fn weight_to_f32<W: Weight>(v: W) -> f32 {
    match (&v as &dyn Any).downcast_ref::<f16>() {
        Some(half) => f16_bits_to_f32(half.to_bits()),
        None => v.to_f32(),
    }
}

/// `Σ w[k] · x[k]` in f32 over the shorter slice, `w` widened on the fly.
#[inline(always)]
fn dot<W: Weight>(w: &[W], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    let mut acc = [0.0f32; GROUP];
    let mut wc = w.chunks_exact(GROUP);
    let mut xc = x.chunks_exact(GROUP);
    for (wg, xg) in (&mut wc).zip(&mut xc) {
        if let (Ok(wg), Ok(xg)) = (<&[W; GROUP]>::try_from(wg), <&[f32; GROUP]>::try_from(xg)) {
            let wf = widen(wg);
            for l in 0..GROUP {
                acc[l] += wf[l] * xg[l];
            }
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

/// `dst = src` as f32 (equal lengths).
#[inline(always)]
fn widen_into<W: Weight>(dst: &mut [f32], src: &[W]) {
    let mut d = dst.chunks_exact_mut(GROUP);
    let mut s = src.chunks_exact(GROUP);
    for (dg, sg) in (&mut d).zip(&mut s) {
        if let Ok(sg) = <&[W; GROUP]>::try_from(sg) {
            dg.copy_from_slice(&widen(sg));
        }
    }
    for (o, v) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *o = v.to_f32();
    }
}

/// `out (B, R) += x (B, K) · Wᵀ` with `w` (R, K); `R = out.len() / batch`.
///
/// f32 and f16 weights of the same values give the same bits on every path
/// (the choice of path does not depend on `W`).
#[inline(always)]
pub(crate) fn matvec_add<W: Weight>(out: &mut [f32], x: &[f32], w: &[W], batch: usize, k: usize) {
    matvec_add_side(out, x, w, batch, k, &mut Side::none());
}

/// [`matvec_add`], prefetching the lines of `side` on the way where the x86
/// kernel runs (a hint only: the results are the same).
#[inline(always)]
fn matvec_add_side<W: Weight>(
    out: &mut [f32],
    x: &[f32],
    w: &[W],
    batch: usize,
    k: usize,
    side: &mut Side,
) {
    if batch <= KERNEL_BATCH && matvec_add_kernel(out, x, w, batch, k, side) {
        return;
    }
    matvec_add_portable(out, x, w, batch, k);
}

/// [`matvec_add`] in plain Rust (vectorised as the build target allows).
#[inline(always)]
fn matvec_add_portable<W: Weight>(out: &mut [f32], x: &[f32], w: &[W], batch: usize, k: usize) {
    let r = out.len() / batch;
    let is_f16 = w.first().is_some_and(|v| (v as &dyn Any).is::<f16>());
    if batch > 1 && is_f16 {
        // Widen each chunk of a row once, for all batch rows.
        let mut buf = [0.0f32; CHUNK];
        for (j, row) in w.chunks_exact(k).take(r).enumerate() {
            for (c, part) in row.chunks(CHUNK).enumerate() {
                let wf = &mut buf[..part.len()];
                widen_into(wf, part);
                for (b, xb) in x.chunks_exact(k).take(batch).enumerate() {
                    out[b * r + j] += dot(wf, &xb[c * CHUNK..]);
                }
            }
        }
    } else {
        for (j, row) in w.chunks_exact(k).take(r).enumerate() {
            for (b, xb) in x.chunks_exact(k).take(batch).enumerate() {
                out[b * r + j] += dot(row, xb);
            }
        }
    }
}

/// [`matvec_add`] on the stream's x86 kernel, one batch row and
/// [`KERNEL_ROWS`] output rows per call: `true`, or `false` with `out`
/// untouched where the kernel cannot run (the portable loop's turn).
#[inline(always)]
fn matvec_add_kernel<W: Weight>(
    out: &mut [f32],
    x: &[f32],
    w: &[W],
    batch: usize,
    k: usize,
    side: &mut Side,
) -> bool {
    let r = out.len() / batch;
    let mut sums = [0.0f32; KERNEL_ROWS];
    for (b, (out_b, x_b)) in out.chunks_exact_mut(r).zip(x.chunks_exact(k)).enumerate() {
        for (o, w_part) in out_b.chunks_mut(KERNEL_ROWS).zip(w.chunks(KERNEL_ROWS * k)) {
            let s = &mut sums[..o.len()];
            // Zeros for rows a short `w` would leave unwritten (the lengths
            // are checked before, so this is only never-garbage).
            s.fill(0.0);
            if !product_x86(s, w_part, x_b, side) {
                // Only the first call can say no: detection is fixed.
                debug_assert!(b == 0);
                return false;
            }
            for (ov, sv) in o.iter_mut().zip(s.iter()) {
                *ov += *sv;
            }
        }
    }
    true
}

/// See [`super::step_forward`]; lengths are checked there. Dispatches to
/// the AVX2 build like the sequence loops, or an AVX-512F build where the
/// stream's active kernel is AVX-512 (the gate loops 16 lanes wide; the same
/// results, as no operation is fused or reordered).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<W: Weight>(
    h: &mut [f32],
    c: &mut [f32],
    input: Input<'_>,
    h_prev: &[f32],
    c_prev: &[f32],
    params: CellParams<'_, W>,
    workspace: &mut [f32],
    cell: &CellDims,
    batch: usize,
    bgh: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if Kernel::active() == Kernel::Avx512 {
            // SAFETY: the processor supports AVX-512F (and AVX2, FMA, F16C).
            return unsafe {
                forward_avx512(
                    h, c, input, h_prev, c_prev, params, workspace, cell, batch, bgh,
                )
            };
        }
        if Isa::detect() == Isa::Avx2Fma {
            // SAFETY: the processor supports AVX2 and FMA (detected just above).
            return unsafe {
                forward_avx2(
                    h, c, input, h_prev, c_prev, params, workspace, cell, batch, bgh,
                )
            };
        }
    }
    forward_generic(
        h, c, input, h_prev, c_prev, params, workspace, cell, batch, bgh,
    )
}

/// One build of [`forward_body`] per instruction set: the same body, its
/// attributes (target features, inlining) chosen by the caller's dispatch.
macro_rules! forward_build {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        fn $name<W: Weight>(
            h: &mut [f32],
            c: &mut [f32],
            input: Input<'_>,
            h_prev: &[f32],
            c_prev: &[f32],
            params: CellParams<'_, W>,
            workspace: &mut [f32],
            cell: &CellDims,
            batch: usize,
            bgh: usize,
        ) {
            forward_body(
                h, c, input, h_prev, c_prev, params, workspace, cell, batch, bgh,
            )
        }
    };
}

forward_build!(
    /// [`forward_body`] for the build target, out of line: inlined, its frame
    /// (over 1 KiB of stack buffers) would sit under the AVX builds' own.
    #[inline(never)]
    forward_generic
);

forward_build!(
    /// [`forward_body`] compiled for AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    forward_avx2
);

forward_build!(
    /// [`forward_body`] compiled for AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    forward_avx512
);

/// The lines of column `id` of `w` (rows, `in_dim`), one per row: what the
/// token's input projection reads, scattered a row apart.
fn column_lines<W: Weight>(w: &[W], id: usize, in_dim: usize, rows: usize) -> Side {
    match w.get(id) {
        Some(first) => Side {
            ptr: (first as *const W).cast::<u8>(),
            stride: in_dim * core::mem::size_of::<W>(),
            count: rows,
        },
        None => Side::none(),
    }
}

/// `xp[j] = bias[j] + w[j, id]` for one token (the gather of
/// `input::gather_add` for a single row: the same sum).
#[inline(always)]
fn gather_column<W: Weight>(xp: &mut [f32], id: usize, w: &[W], bias: &[f32], in_dim: usize) {
    for (j, (o, b)) in xp.iter_mut().zip(bias).enumerate() {
        if let Some(v) = w.get(j * in_dim + id) {
            *o = b + weight_to_f32(*v);
        }
    }
}

/// The step, for the build target's instruction set.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_body<W: Weight>(
    h: &mut [f32],
    c: &mut [f32],
    input: Input<'_>,
    h_prev: &[f32],
    c_prev: &[f32],
    params: CellParams<'_, W>,
    workspace: &mut [f32],
    cell: &CellDims,
    batch: usize,
    bgh: usize,
) {
    let (hd, i) = (cell.hidden, cell.input);
    let gh = cell.gate_rows();
    let bh = batch * hd;
    let (xp, rest) = workspace.split_at_mut(bgh);
    let (hp, rest) = rest.split_at_mut(bgh);
    let (gates, rest) = rest.split_at_mut(bgh);
    let (ex0, rest) = rest.split_at_mut(bh);
    let ex1 = &mut rest[..bh];

    // Bias row (both biases outside the gates except reset-after's b_hn),
    // kept in the gates section until the gates overwrite it.
    let bias = &mut gates[..gh];
    for ((s, a), b) in bias.iter_mut().zip(params.bias_ih).zip(params.bias_hh) {
        *s = weight_to_f32(*a) + weight_to_f32(*b);
    }
    if cell.cell == CellKind::GruResetAfter {
        for (s, a) in bias[2 * hd..].iter_mut().zip(&params.bias_ih[2 * hd..]) {
            *s = weight_to_f32(*a);
        }
    }
    // One token into a GRU: its column of `weight_ih` (G·H lines a row
    // apart, rarely cached) is gathered after the first recurrent product,
    // which prefetches those lines on the way, so their latency hides behind
    // the product's work instead of stalling the step.
    let deferred = match input {
        Input::Tokens(&[id])
            if matches!(
                cell.cell,
                CellKind::GruResetAfter | CellKind::GruResetBefore
            ) =>
        {
            Some(id as usize)
        }
        _ => None,
    };
    let mut side = Side::none();
    match (input, deferred) {
        (_, Some(id)) => side = column_lines(params.weight_ih, id, i, gh),
        (Input::Dense(x), None) => {
            for row in xp.chunks_exact_mut(gh) {
                row.copy_from_slice(bias);
            }
            matvec_add(xp, x, params.weight_ih, batch, i);
        }
        (Input::Tokens(ids), None) => gather_add(xp, ids, params.weight_ih, bias, i),
    }

    match cell.cell {
        CellKind::RnnTanh | CellKind::RnnRelu => {
            matvec_add(xp, h_prev, params.weight_hh, batch, hd);
            let relu = cell.cell == CellKind::RnnRelu;
            for (ho, pre) in h.chunks_exact_mut(hd).zip(xp.chunks_exact(hd)) {
                rnn::forward_row(ho, pre, relu);
            }
        }
        CellKind::Lstm => {
            matvec_add(xp, h_prev, params.weight_hh, batch, hd);
            for k in 0..batch {
                let r = k * hd..(k + 1) * hd;
                let g = k * gh..(k + 1) * gh;
                lstm::forward_row(
                    &mut h[r.clone()],
                    &mut c[r.clone()],
                    &mut gates[g.clone()],
                    &mut ex0[r.clone()],
                    &xp[g],
                    &c_prev[r],
                );
            }
        }
        CellKind::GruResetAfter => {
            hp.fill(0.0);
            matvec_add_side(hp, h_prev, params.weight_hh, batch, hd, &mut side);
            if let Some(id) = deferred {
                gather_column(xp, id, params.weight_ih, &gates[..gh], i);
            }
            // b_hn as f32, in the second extra section's first row.
            let b_hn = &mut ex1[..hd];
            for (s, b) in b_hn.iter_mut().zip(&params.bias_hh[2 * hd..]) {
                *s = weight_to_f32(*b);
            }
            for k in 0..batch {
                let r = k * hd..(k + 1) * hd;
                let g = k * gh..(k + 1) * gh;
                gru::after_forward_row(
                    &mut h[r.clone()],
                    &mut gates[g.clone()],
                    &mut ex0[r.clone()],
                    &xp[g.clone()],
                    &hp[g],
                    b_hn,
                    &h_prev[r],
                );
            }
        }
        CellKind::GruResetBefore => {
            let (w_rz, w_n) = params.weight_hh.split_at(2 * hd * hd);
            let (hp_rz, hp_n) = hp.split_at_mut(2 * bh);
            let hp_n = &mut hp_n[..bh];
            hp_rz.fill(0.0);
            matvec_add_side(hp_rz, h_prev, w_rz, batch, hd, &mut side);
            if let Some(id) = deferred {
                gather_column(xp, id, params.weight_ih, &gates[..gh], i);
            }
            let rh = ex0;
            for k in 0..batch {
                let r = k * hd..(k + 1) * hd;
                let g = k * gh..k * gh + 2 * hd;
                gru::before_forward_rz_row(
                    &mut gates[g.clone()],
                    &mut rh[r.clone()],
                    &xp[g],
                    &hp_rz[2 * k * hd..2 * (k + 1) * hd],
                    &h_prev[r],
                );
            }
            hp_n.fill(0.0);
            matvec_add(hp_n, rh, w_n, batch, hd);
            for k in 0..batch {
                let r = k * hd..(k + 1) * hd;
                let (gz, gn) = gates[k * gh + hd..(k + 1) * gh].split_at_mut(hd);
                gru::before_forward_n_row(
                    &mut h[r.clone()],
                    gn,
                    &xp[k * gh + 2 * hd..(k + 1) * gh],
                    &hp_n[r.clone()],
                    gz,
                    &h_prev[r],
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::testutil::SplitMix;
    use std::vec::Vec;

    #[test]
    fn f16_bits_convert_like_half_for_every_pattern() {
        for bits in 0..=u16::MAX {
            let want = f16::from_bits(bits).to_f32();
            let got = f16_bits_to_f32(bits);
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn widening_and_dot_take_the_f16_path_and_the_tail() {
        let src: [f16; 37] = core::array::from_fn(|k| f16::from_f32(k as f32 * 0.37 - 5.0));
        let mut dst = [f32::NAN; 37];
        widen_into(&mut dst, &src);
        for (d, s) in dst.iter().zip(&src) {
            assert_eq!(*d, s.to_f32());
        }
        let x: [f32; 37] = core::array::from_fn(|k| 1.0 / (k as f32 + 1.0));
        let want: f64 = dst.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
        assert!((dot(&src, &x) as f64 - want).abs() < 1e-5);
        assert!((dot(&dst, &x) as f64 - want).abs() < 1e-5);
    }

    /// `out + x Wᵀ` in f64 from the weights as stored.
    fn reference<W: Weight>(out: &[f32], x: &[f32], w: &[W], batch: usize, k: usize) -> Vec<f64> {
        let r = out.len() / batch;
        (0..batch * r)
            .map(|br| {
                let (b, j) = (br / r, br % r);
                out[br] as f64
                    + (0..k)
                        .map(|i| w[j * k + i].to_f32() as f64 * x[b * k + i] as f64)
                        .sum::<f64>()
            })
            .collect()
    }

    #[test]
    fn matvec_add_kernel_and_loop_agree_and_f16_equals_f32_bitwise() {
        // 301 rows: more than one kernel call, a partial 4-row block; 37
        // columns: an 8-lane tail. Batches on both sides of KERNEL_BATCH.
        let (r, k) = (KERNEL_ROWS + 45, 37);
        let mut rng = SplitMix(7);
        let w16: Vec<f16> = rng.vec(r * k, 1.0).into_iter().map(f16::from_f32).collect();
        let w32: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
        for batch in [1, 2, KERNEL_BATCH, KERNEL_BATCH + 1] {
            let x = rng.vec(batch * k, 1.0);
            let start = rng.vec(batch * r, 1.0);
            let want = reference(&start, &x, &w32, batch, k);
            let run = |kernel: bool, f16w: bool| {
                let mut out = start.clone();
                match (kernel, f16w) {
                    (false, false) => matvec_add_portable(&mut out, &x, &w32, batch, k),
                    (false, true) => matvec_add_portable(&mut out, &x, &w16, batch, k),
                    (true, false) => matvec_add(&mut out, &x, &w32, batch, k),
                    (true, true) => matvec_add(&mut out, &x, &w16, batch, k),
                }
                out
            };
            for kernel in [false, true] {
                let (o32, o16) = (run(kernel, false), run(kernel, true));
                for (j, (&got, &want)) in o32.iter().zip(&want).enumerate() {
                    // Sums of 37 products of magnitude ≤ 1 plus one term.
                    assert!((got as f64 - want).abs() < 1e-4, "batch {batch} row {j}");
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&o16), bits(&o32), "batch {batch} kernel {kernel}");
            }
        }
    }

    /// One step of `kind` with `input`, weights `W` rounded from `seed`.
    fn one_step<W: Weight>(kind: CellKind, input: Input<'_>, in_dim: usize) -> Vec<f32> {
        let cell = CellDims {
            cell: kind,
            input: in_dim,
            hidden: 40,
        };
        let (gh, hd) = (cell.gate_rows(), cell.hidden);
        let mut rng = SplitMix(kind as u64 + 5);
        let mut w = |n: usize| -> Vec<W> { rng.vec(n, 0.5).into_iter().map(W::from_f32).collect() };
        let (w_ih, w_hh, b_ih, b_hh) = (w(gh * in_dim), w(gh * hd), w(gh), w(gh));
        let params = CellParams {
            weight_ih: &w_ih,
            weight_hh: &w_hh,
            bias_ih: &b_ih,
            bias_hh: &b_hh,
        };
        let c_len = if kind.has_cell_state() { hd } else { 0 };
        let h_prev = SplitMix(9).vec(hd, 0.9);
        let c_prev = SplitMix(10).vec(c_len, 0.9);
        let mut h = std::vec![f32::NAN; hd];
        let mut c = std::vec![f32::NAN; c_len];
        let mut ws = std::vec![f32::NAN; super::super::step_workspace_len(&cell, 1)];
        super::super::step_forward(
            &mut h, &mut c, input, &h_prev, &c_prev, params, &mut ws, &cell, 1,
        )
        .unwrap();
        h.extend_from_slice(&c);
        h
    }

    #[test]
    fn one_token_step_equals_its_one_hot_dense_step_bitwise() {
        // A GRU's token column is gathered after its first recurrent
        // product (prefetched on the way); the sums are the same as the
        // dense product with a one-hot row (all other terms are +0).
        let in_dim = 37;
        for kind in CellKind::ALL {
            for id in [0u32, 17, 36] {
                let mut one_hot = std::vec![0.0f32; in_dim];
                one_hot[id as usize] = 1.0;
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                let tok32 = one_step::<f32>(kind, Input::Tokens(&[id]), in_dim);
                let tok16 = one_step::<f16>(kind, Input::Tokens(&[id]), in_dim);
                let dense32 = one_step::<f32>(kind, Input::Dense(&one_hot), in_dim);
                assert!(tok32.iter().all(|v| v.is_finite()), "{kind:?}");
                assert_eq!(bits(tok32.clone()), bits(dense32), "{kind:?} token {id}");
                // f16 weights are other values: not equal, but close.
                let d = tok16
                    .iter()
                    .zip(&tok32)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(d > 0.0 && d < 1e-2, "{kind:?} token {id}: f16 vs f32 {d}");
            }
        }
    }
}
