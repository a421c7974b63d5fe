//! The sequence level: `T` steps forward with the input projection hoisted
//! before the time loop, and back-propagation through time with the weight
//! gradients formed after it. Arguments are already checked by `mod.rs`.

use super::input::{add_column_sums, backward_block, project};
use super::plan::Plan;
use super::{gru, lstm, rnn, Input};
use crate::error::Error;
use crate::gemm::{Gemm, Trans};
use crate::layout::{CellGrads, CellKind, CellParams};

/// `h_{t-1}` of all batch rows: `h0` for the first step.
#[inline]
fn prev<'a>(h0: &'a [f32], hs: &'a [f32], t: usize, bh: usize) -> &'a [f32] {
    if t == 0 {
        h0
    } else {
        &hs[(t - 1) * bh..t * bh]
    }
}

/// `C (B, n) += or = a (B, k) · Wᵀ` with `W` (n, k): the recurrent product.
#[allow(clippy::too_many_arguments)]
#[inline]
fn mul_wt(
    c: &mut [f32],
    a: &[f32],
    w: &[f32],
    b: usize,
    n: usize,
    k: usize,
    beta: f32,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    gemm.gemm(Trans::N, Trans::T, b, n, k, 1.0, a, w, beta, c)
}

/// `C (B, H) += or = dg (B, w) · W` with `W` (w, H): the gradient on `h_prev`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn mul_w(
    c: &mut [f32],
    dg: &[f32],
    w: &[f32],
    b: usize,
    h: usize,
    k: usize,
    beta: f32,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    gemm.gemm(Trans::N, Trans::N, b, h, k, 1.0, dg, w, beta, c)
}

/// See [`super::sequence_forward`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    hs: &mut [f32],
    c_last: &mut [f32],
    input: Input<'_>,
    h0: &[f32],
    c0: &[f32],
    params: CellParams<'_, f32>,
    cache: &mut [f32],
    workspace: &mut [f32],
    p: &Plan,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    let (h, gh, bh, bgh) = (p.h, p.gh, p.bh, p.bgh);
    let (xp_all, rest) = workspace.split_at_mut(p.xp_len);
    let (hp, rest) = rest.split_at_mut(bgh);
    let bias = &mut rest[..gh];
    // Both biases sum outside the gates, except reset-after's b_hn, which
    // the reset gate multiplies.
    for ((s, &a), &b) in bias.iter_mut().zip(params.bias_ih).zip(params.bias_hh) {
        *s = a + b;
    }
    if p.kind == CellKind::GruResetAfter {
        bias[2 * h..].copy_from_slice(&params.bias_ih[2 * h..]);
    }
    project(xp_all, input, params.weight_ih, bias, p.tb, p.i, gemm)?;

    let (gates_all, extra) = cache.split_at_mut(p.gates_len);
    let w_hh = params.weight_hh;
    for t in 0..p.t {
        let (done, rest) = hs.split_at_mut(t * bh);
        let h_prev = prev(h0, done, t, bh);
        let h_out = &mut rest[..bh];
        let xp = &mut xp_all[t * bgh..(t + 1) * bgh];
        match p.kind {
            CellKind::RnnTanh | CellKind::RnnRelu => {
                mul_wt(xp, h_prev, w_hh, p.b, gh, h, 1.0, gemm)?;
                let relu = p.kind == CellKind::RnnRelu;
                for (ho, pre) in h_out.chunks_exact_mut(h).zip(xp.chunks_exact(h)) {
                    rnn::forward_row(ho, pre, relu);
                }
            }
            CellKind::Lstm => {
                mul_wt(xp, h_prev, w_hh, p.b, gh, h, 1.0, gemm)?;
                let gates = &mut gates_all[t * bgh..(t + 1) * bgh];
                let (cs, tcs) = extra.split_at_mut(p.extra_len);
                let (c_done, c_rest) = cs.split_at_mut(t * bh);
                let c_prev = prev(c0, c_done, t, bh);
                let c_out = &mut c_rest[..bh];
                let tc = &mut tcs[t * bh..(t + 1) * bh];
                for (k, ho) in h_out.chunks_exact_mut(h).enumerate() {
                    let r = k * h..(k + 1) * h;
                    let g = k * gh..(k + 1) * gh;
                    lstm::forward_row(
                        ho,
                        &mut c_out[r.clone()],
                        &mut gates[g.clone()],
                        &mut tc[r.clone()],
                        &xp[g],
                        &c_prev[r],
                    );
                }
            }
            CellKind::GruResetAfter => {
                mul_wt(hp, h_prev, w_hh, p.b, gh, h, 0.0, gemm)?;
                let gates = &mut gates_all[t * bgh..(t + 1) * bgh];
                let hn = &mut extra[t * bh..(t + 1) * bh];
                let b_hn = &params.bias_hh[2 * h..];
                for (k, ho) in h_out.chunks_exact_mut(h).enumerate() {
                    let r = k * h..(k + 1) * h;
                    let g = k * gh..(k + 1) * gh;
                    gru::after_forward_row(
                        ho,
                        &mut gates[g.clone()],
                        &mut hn[r.clone()],
                        &xp[g.clone()],
                        &hp[g],
                        b_hn,
                        &h_prev[r],
                    );
                }
            }
            CellKind::GruResetBefore => {
                let (w_rz, w_n) = w_hh.split_at(2 * h * h);
                let (hp_rz, hp_n) = hp.split_at_mut(2 * bh);
                let hp_n = &mut hp_n[..bh];
                mul_wt(hp_rz, h_prev, w_rz, p.b, 2 * h, h, 0.0, gemm)?;
                let gates = &mut gates_all[t * bgh..(t + 1) * bgh];
                let rh = &mut extra[t * bh..(t + 1) * bh];
                for k in 0..p.b {
                    let r = k * h..(k + 1) * h;
                    let g = k * gh..k * gh + 2 * h;
                    gru::before_forward_rz_row(
                        &mut gates[g.clone()],
                        &mut rh[r.clone()],
                        &xp[g],
                        &hp_rz[2 * k * h..2 * (k + 1) * h],
                        &h_prev[r],
                    );
                }
                mul_wt(hp_n, rh, w_n, p.b, h, h, 0.0, gemm)?;
                for (k, ho) in h_out.chunks_exact_mut(h).enumerate() {
                    let r = k * h..(k + 1) * h;
                    let (gz, gn) = gates[k * gh + h..(k + 1) * gh].split_at_mut(h);
                    gru::before_forward_n_row(
                        ho,
                        gn,
                        &xp[k * gh + 2 * h..(k + 1) * gh],
                        &hp_n[r.clone()],
                        gz,
                        &h_prev[r],
                    );
                }
            }
        }
    }
    if p.kind == CellKind::Lstm {
        let last = (p.t - 1) * bh;
        c_last.copy_from_slice(&extra[last..last + bh]);
    }
    Ok(())
}

/// One block of pre-activation gradients: gate rows `[off, off + w)` of all
/// `T·B` rows, stored packed (T·B, w) so that every product over it is one
/// gemm.
struct Block<'a> {
    off: usize,
    dg: &'a [f32],
}

/// Which matrix of previous states a recurrent block multiplies.
#[derive(Clone, Copy)]
enum HiddenIn<'a> {
    /// `h_{t-1}`: `h0` then `hs[..T-1]`.
    Prev,
    /// A packed (T·B, H) cache section (reset-before's `r ⊙ h_prev`).
    Cached(&'a [f32]),
}

/// See [`super::sequence_backward`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    grads: &mut CellGrads<'_>,
    mut dinput: Option<&mut [f32]>,
    dh0: &mut [f32],
    dc0: &mut [f32],
    dhs: &[f32],
    input: Input<'_>,
    h0: &[f32],
    c0: &[f32],
    params: CellParams<'_, f32>,
    hs: &[f32],
    cache: &[f32],
    workspace: &mut [f32],
    p: &Plan,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    let (h, gh, bh, tb) = (p.h, p.gh, p.bh, p.tb);
    let (dg_all, rest) = workspace.split_at_mut(p.dg_len);
    let (dh, rest) = rest.split_at_mut(bh);
    let (dc, rest) = rest.split_at_mut(bh);
    let tmp = &mut rest[..bh];
    let (gates_all, extra) = cache.split_at(p.gates_len);
    let w_hh = params.weight_hh;
    dc.fill(0.0);

    for t in (0..p.t).rev() {
        let dh_t = &dhs[t * bh..(t + 1) * bh];
        if t + 1 == p.t {
            dh.copy_from_slice(dh_t);
        } else {
            for (d, &u) in dh.iter_mut().zip(dh_t) {
                *d += u;
            }
        }
        let h_prev = prev(h0, hs, t, bh);
        let first = t == 0;
        match p.kind {
            CellKind::RnnTanh | CellKind::RnnRelu => {
                let relu = p.kind == CellKind::RnnRelu;
                let dg = &mut dg_all[t * bh..(t + 1) * bh];
                let h_t = &hs[t * bh..(t + 1) * bh];
                for ((d, g), ht) in dg
                    .chunks_exact_mut(h)
                    .zip(dh.chunks_exact(h))
                    .zip(h_t.chunks_exact(h))
                {
                    rnn::backward_row(d, g, ht, relu);
                }
                carry(dh, dh0, first, false, &[(&*dg, w_hh, gh)], p, gemm)?;
            }
            CellKind::Lstm => {
                let bgh = p.bgh;
                let dg = &mut dg_all[t * bgh..(t + 1) * bgh];
                let gates = &gates_all[t * bgh..(t + 1) * bgh];
                let (cs, tcs) = extra.split_at(p.extra_len);
                let c_prev = prev(c0, cs, t, bh);
                let tc = &tcs[t * bh..(t + 1) * bh];
                for k in 0..p.b {
                    let r = k * h..(k + 1) * h;
                    let g = k * gh..(k + 1) * gh;
                    lstm::backward_row(
                        &mut dg[g.clone()],
                        &mut dc[r.clone()],
                        &dh[r.clone()],
                        &gates[g],
                        &tc[r.clone()],
                        &c_prev[r],
                    );
                }
                if first {
                    for (d, &v) in dc0.iter_mut().zip(dc.iter()) {
                        *d += v;
                    }
                }
                carry(dh, dh0, first, false, &[(&*dg, w_hh, gh)], p, gemm)?;
            }
            CellKind::GruResetAfter => {
                let gates = &gates_all[t * p.bgh..(t + 1) * p.bgh];
                let hn = &extra[t * bh..(t + 1) * bh];
                let (drz_all, rest) = dg_all.split_at_mut(2 * p.tbh());
                let (dn_ih_all, dn_hh_all) = rest.split_at_mut(p.tbh());
                let drz = &mut drz_all[2 * t * bh..2 * (t + 1) * bh];
                let dn_ih = &mut dn_ih_all[t * bh..(t + 1) * bh];
                let dn_hh = &mut dn_hh_all[t * bh..(t + 1) * bh];
                for k in 0..p.b {
                    let r = k * h..(k + 1) * h;
                    gru::after_backward_row(
                        &mut drz[2 * k * h..2 * (k + 1) * h],
                        &mut dn_ih[r.clone()],
                        &mut dn_hh[r.clone()],
                        &mut dh[r.clone()],
                        &gates[k * gh..(k + 1) * gh],
                        &hn[r.clone()],
                        &h_prev[r],
                    );
                }
                let (w_rz, w_n) = w_hh.split_at(2 * h * h);
                carry(
                    dh,
                    dh0,
                    first,
                    true,
                    &[(&*drz, w_rz, 2 * h), (&*dn_hh, w_n, h)],
                    p,
                    gemm,
                )?;
            }
            CellKind::GruResetBefore => {
                let gates = &gates_all[t * p.bgh..(t + 1) * p.bgh];
                let (drz_all, dn_all) = dg_all.split_at_mut(2 * p.tbh());
                let drz = &mut drz_all[2 * t * bh..2 * (t + 1) * bh];
                let dn = &mut dn_all[t * bh..(t + 1) * bh];
                for k in 0..p.b {
                    let r = k * h..(k + 1) * h;
                    gru::before_backward_zn_row(
                        &mut drz[2 * k * h + h..2 * (k + 1) * h],
                        &mut dn[r.clone()],
                        &dh[r.clone()],
                        &gates[k * gh..(k + 1) * gh],
                        &h_prev[r],
                    );
                }
                let (w_rz, w_n) = w_hh.split_at(2 * h * h);
                // drh = dn · W_hn, the gradient on r ⊙ h_prev.
                mul_w(tmp, dn, w_n, p.b, h, h, 0.0, gemm)?;
                for k in 0..p.b {
                    let r = k * h..(k + 1) * h;
                    gru::before_backward_r_row(
                        &mut drz[2 * k * h..2 * k * h + h],
                        &mut dh[r.clone()],
                        &tmp[r.clone()],
                        &gates[k * gh..(k + 1) * gh],
                        &h_prev[r],
                    );
                }
                carry(dh, dh0, first, true, &[(&*drz, w_rz, 2 * h)], p, gemm)?;
            }
        }
    }

    // Weight and bias gradients over all T·B rows at once.
    let tbh = p.tbh();
    let (ih, hh): ([Block<'_>; 2], [(Block<'_>, HiddenIn<'_>); 2]) = match p.kind {
        CellKind::RnnTanh | CellKind::RnnRelu | CellKind::Lstm => {
            let all = &dg_all[..tb * gh];
            (
                [Block { off: 0, dg: all }, Block { off: gh, dg: &[] }],
                [
                    (Block { off: 0, dg: all }, HiddenIn::Prev),
                    (Block { off: gh, dg: &[] }, HiddenIn::Prev),
                ],
            )
        }
        CellKind::GruResetAfter => {
            let (drz, rest) = dg_all.split_at(2 * tbh);
            let (dn_ih, dn_hh) = rest.split_at(tbh);
            (
                [
                    Block { off: 0, dg: drz },
                    Block {
                        off: 2 * h,
                        dg: dn_ih,
                    },
                ],
                [
                    (Block { off: 0, dg: drz }, HiddenIn::Prev),
                    (
                        Block {
                            off: 2 * h,
                            dg: dn_hh,
                        },
                        HiddenIn::Prev,
                    ),
                ],
            )
        }
        CellKind::GruResetBefore => {
            let (drz, dn) = dg_all[..3 * tbh].split_at(2 * tbh);
            let rh = &extra[..tbh];
            (
                [Block { off: 0, dg: drz }, Block { off: 2 * h, dg: dn }],
                [
                    (Block { off: 0, dg: drz }, HiddenIn::Prev),
                    (Block { off: 2 * h, dg: dn }, HiddenIn::Cached(rh)),
                ],
            )
        }
    };
    for blk in ih.iter().filter(|b| !b.dg.is_empty()) {
        let w = blk.dg.len() / tb;
        backward_block(
            grads.weight_ih,
            &mut grads.bias_ih[blk.off..blk.off + w],
            dinput.as_deref_mut(),
            blk.dg,
            input,
            params.weight_ih,
            blk.off,
            tb,
            p.i,
            gemm,
        )?;
    }
    for (blk, hin) in hh.iter().filter(|(b, _)| !b.dg.is_empty()) {
        let w = blk.dg.len() / tb;
        add_column_sums(&mut grads.bias_hh[blk.off..blk.off + w], blk.dg);
        let dw = &mut grads.weight_hh[blk.off * h..(blk.off + w) * h];
        match *hin {
            HiddenIn::Cached(m) => {
                gemm.gemm(Trans::T, Trans::N, w, h, tb, 1.0, blk.dg, m, 1.0, dw)?;
            }
            HiddenIn::Prev => {
                let b = p.b;
                let (dg0, dg_rest) = blk.dg.split_at(b * w);
                gemm.gemm(Trans::T, Trans::N, w, h, b, 1.0, dg0, h0, 1.0, dw)?;
                if p.t > 1 {
                    let k = tb - b;
                    let hs_prev = &hs[..k * h];
                    gemm.gemm(Trans::T, Trans::N, w, h, k, 1.0, dg_rest, hs_prev, 1.0, dw)?;
                }
            }
        }
    }
    Ok(())
}

/// Forms the gradient on `h_{t-1}` from the step's gate-gradient blocks:
/// into the carried `dh` for `t > 0`, accumulated into `dh0` for `t = 0`.
/// With `direct`, `dh` already holds the non-product share (GRU), which is
/// kept (t > 0) or added to `dh0`; otherwise `dh` is overwritten.
///
/// `blocks`: `(dg (B, w), W_hh rows of the block (w, H), w)`.
fn carry(
    dh: &mut [f32],
    dh0: &mut [f32],
    first: bool,
    direct: bool,
    blocks: &[(&[f32], &[f32], usize)],
    p: &Plan,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    let target = if first {
        if direct {
            for (d, &v) in dh0.iter_mut().zip(dh.iter()) {
                *d += v;
            }
        }
        dh0
    } else {
        dh
    };
    let mut beta = if first || direct { 1.0 } else { 0.0 };
    for &(dg, w, k) in blocks {
        mul_w(target, dg, w, p.b, p.h, k, beta, gemm)?;
        beta = 1.0;
    }
    Ok(())
}
