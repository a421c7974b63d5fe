//! One step for streaming inference with weights stored as `f32` or `f16`.
//!
//! [`Gemm`](crate::Gemm) is f32-only, so the products here are an
//! allocation-free matrix-vector loop over the weight rows, converting each
//! weight once and accumulating in f32. Each weight row is read once for all
//! batch rows (inference batches are small, so they stay in L1).

use super::input::gather_add;
use super::{gru, lstm, rnn, Input};
use crate::layout::{CellDims, CellKind, CellParams};
use crate::weight::Weight;

/// Number of independent partial sums in [`dot`] (lets it vectorise).
const LANES: usize = 8;

/// `Σ w[k] · x[k]` in f32, `w` converted on the fly.
#[inline(always)]
fn dot<W: Weight>(w: &[W], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    let mut acc = [0.0f32; LANES];
    let mut wc = w.chunks_exact(LANES);
    let mut xc = x.chunks_exact(LANES);
    for (wl, xl) in (&mut wc).zip(&mut xc) {
        for l in 0..LANES {
            acc[l] += wl[l].to_f32() * xl[l];
        }
    }
    let mut tail = 0.0f32;
    for (&wv, &xv) in wc.remainder().iter().zip(xc.remainder()) {
        tail += wv.to_f32() * xv;
    }
    let mut s = tail;
    for a in acc {
        s += a;
    }
    s
}

/// `out (B, R) += x (B, K) · Wᵀ` with `w` (R, K); `R = out.len() / batch`.
pub(crate) fn matvec_add<W: Weight>(out: &mut [f32], x: &[f32], w: &[W], batch: usize, k: usize) {
    let r = out.len() / batch;
    for (j, row) in w.chunks_exact(k).take(r).enumerate() {
        for (b, xb) in x.chunks_exact(k).take(batch).enumerate() {
            out[b * r + j] += dot(row, xb);
        }
    }
}

/// See [`super::step_forward`]; lengths are checked there.
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
