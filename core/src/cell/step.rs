//! One step for streaming inference with weights stored as `f32` or `f16`.
//!
//! [`Gemm`](crate::Gemm) is f32-only, so the products here are an
//! allocation-free matrix-vector loop over the weight rows, accumulating in
//! f32. f16 weights are widened by an exact, branch-free bit routine that
//! vectorises (`half`'s own, without `std`, is a scalar routine with
//! branches, ~4× slower here); for more than one batch row a chunk of each
//! f16 row is widened once into a stack buffer and reused for every batch
//! row. Like the sequence loops, the step runs an AVX2 build where the
//! processor has it.

use core::any::Any;

use half::f16;

use super::input::gather_add;
use super::{gru, lstm, rnn, Input};
#[cfg(target_arch = "x86_64")]
use crate::gemm::Isa;
use crate::layout::{CellDims, CellKind, CellParams};
use crate::weight::Weight;

/// Elements per group of the dot product and the conversion: two 8-lane
/// vectors of partial sums, so that the additions do not wait on each other.
const GROUP: usize = 16;

/// f16 weights widened at a time per row (1 KiB of stack).
const CHUNK: usize = 256;

/// IEEE binary16 bits to f32, exactly and without branches: the 15 low bits
/// shifted into an f32's place are the value times 2^-112 (normal numbers
/// and subnormals alike), so one multiplication rescales them; values that
/// land at 2^16 or above were infinities or NaNs and get the all-ones
/// exponent back.
#[inline(always)]
pub(crate) fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let scaled = f32::from_bits((h & 0x7fff) << 13) * f32::from_bits((127 + 112) << 23);
    let bits = if scaled >= 65_536.0 {
        scaled.to_bits() | (0xff << 23)
    } else {
        scaled.to_bits()
    };
    f32::from_bits(bits | ((h & 0x8000) << 16))
}

/// A group of weights as f32: the f16 bit routine for f16 (the type test is
/// a constant after inlining), `to_f32` otherwise.
#[inline(always)]
fn widen<W: Weight>(group: &[W; GROUP]) -> [f32; GROUP] {
    match (group as &dyn Any).downcast_ref::<[f16; GROUP]>() {
        Some(halves) => core::array::from_fn(|l| f16_bits_to_f32(halves[l].to_bits())),
        None => core::array::from_fn(|l| group[l].to_f32()),
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
#[inline(always)]
pub(crate) fn matvec_add<W: Weight>(out: &mut [f32], x: &[f32], w: &[W], batch: usize, k: usize) {
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

/// See [`super::step_forward`]; lengths are checked there. Dispatches to
/// the AVX2 build like the sequence loops.
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
    if Isa::detect() == Isa::Avx2Fma {
        // SAFETY: the processor supports AVX2 and FMA (detected just above).
        return unsafe {
            forward_avx2(
                h, c, input, h_prev, c_prev, params, workspace, cell, batch, bgh,
            )
        };
    }
    forward_body(
        h, c, input, h_prev, c_prev, params, workspace, cell, batch, bgh,
    )
}

/// [`forward_body`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn forward_avx2<W: Weight>(
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
        *s = a.to_f32() + b.to_f32();
    }
    if cell.cell == CellKind::GruResetAfter {
        for (s, a) in bias[2 * hd..].iter_mut().zip(&params.bias_ih[2 * hd..]) {
            *s = a.to_f32();
        }
    }
    match input {
        Input::Dense(x) => {
            for row in xp.chunks_exact_mut(gh) {
                row.copy_from_slice(bias);
            }
            matvec_add(xp, x, params.weight_ih, batch, i);
        }
        Input::Tokens(ids) => gather_add(xp, ids, params.weight_ih, bias, i),
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
            matvec_add(hp, h_prev, params.weight_hh, batch, hd);
            // b_hn as f32, in the second extra section's first row.
            let b_hn = &mut ex1[..hd];
            for (s, b) in b_hn.iter_mut().zip(&params.bias_hh[2 * hd..]) {
                *s = b.to_f32();
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
            matvec_add(hp_rz, h_prev, w_rz, batch, hd);
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
    use super::*;

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
}
