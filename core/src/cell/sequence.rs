//! The sequence level: `T` steps forward with the input projection hoisted
//! before the time loop, and back-propagation through time with the weight
//! gradients formed after it. Arguments are already checked by `mod.rs`.

use super::input::{add_column_sums, add_column_sums2, backward_block, project};
use super::plan::Plan;
use super::{gru, lstm, rnn, Input};
use crate::error::Error;
#[cfg(target_arch = "x86_64")]
use crate::gemm::Isa;
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

/// See [`super::sequence_forward`]. Runs the AVX2 + FMA build of
/// [`forward_body`] where the processor has them (same results: Rust does
/// not contract `a * b + c` into FMAs, so only the vector width differs).
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
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() == Isa::Avx2Fma {
        // SAFETY: the processor supports AVX2 and FMA (detected just above).
        return unsafe {
            forward_avx2(hs, c_last, input, h0, c0, params, cache, workspace, p, gemm)
        };
    }
    forward_body(hs, c_last, input, h0, c0, params, cache, workspace, p, gemm)
}

/// [`forward_body`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_avx2(
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
    forward_body(hs, c_last, input, h0, c0, params, cache, workspace, p, gemm)
}

/// The forward pass, for the build target's instruction set (inlined into
/// [`forward_avx2`] for AVX2).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_body(
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

/// Which matrix of previous states a recurrent block multiplies.
#[derive(Clone, Copy)]
enum HiddenIn<'a> {
    /// `h_{t-1}`: `h0` then `hs[..T-1]`.
    Prev,
    /// A packed (T·B, H) cache section (reset-before's `r ⊙ h_prev`).
    Cached(&'a [f32]),
}

/// See [`super::sequence_backward`]; dispatches like [`forward`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    grads: &mut CellGrads<'_>,
    dinput: Option<&mut [f32]>,
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
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() == Isa::Avx2Fma {
        // SAFETY: the processor supports AVX2 and FMA (detected just above).
        return unsafe {
            backward_avx2(
                grads, dinput, dh0, dc0, dhs, input, h0, c0, params, hs, cache, workspace, p, gemm,
            )
        };
    }
    backward_body(
        grads, dinput, dh0, dc0, dhs, input, h0, c0, params, hs, cache, workspace, p, gemm,
    )
}

/// [`backward_body`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_avx2(
    grads: &mut CellGrads<'_>,
    dinput: Option<&mut [f32]>,
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
    backward_body(
        grads, dinput, dh0, dc0, dhs, input, h0, c0, params, hs, cache, workspace, p, gemm,
    )
}

/// The backward pass, for the build target's instruction set (inlined into
/// [`backward_avx2`] for AVX2).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_body(
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
                let bgh = p.bgh;
                let gates = &gates_all[t * bgh..(t + 1) * bgh];
                let hn = &extra[t * bh..(t + 1) * bh];
                let (dih_all, dhh_all) = dg_all.split_at_mut(p.xp_len);
                let dih = &mut dih_all[t * bgh..(t + 1) * bgh];
                let dhh = &mut dhh_all[t * bgh..(t + 1) * bgh];
                for k in 0..p.b {
                    let r = k * h..(k + 1) * h;
                    let g = k * gh..(k + 1) * gh;
                    gru::after_backward_row(
                        &mut dih[g.clone()],
                        &mut dhh[g.clone()],
                        &mut dh[r.clone()],
                        &gates[g],
                        &hn[r.clone()],
                        &h_prev[r],
                    );
                }
                carry(dh, dh0, first, true, &[(&*dhh, w_hh, gh)], p, gemm)?;
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

    // Weight and bias gradients over all T·B rows at once, block by block:
    // `(gate row offset, input-side dg, recurrent-side dg, recurrent input)`.
    let tbh = p.tbh();
    let blocks: [(usize, &[f32], &[f32], HiddenIn<'_>); 2] = match p.kind {
        CellKind::RnnTanh | CellKind::RnnRelu | CellKind::Lstm => {
            let all = &dg_all[..p.xp_len];
            [
                (0, all, all, HiddenIn::Prev),
                (gh, &[], &[], HiddenIn::Prev),
            ]
        }
        CellKind::GruResetAfter => {
            let (dih, dhh) = dg_all.split_at(p.xp_len);
            [
                (0, dih, dhh, HiddenIn::Prev),
                (gh, &[], &[], HiddenIn::Prev),
            ]
        }
        CellKind::GruResetBefore => {
            let (drz, dn) = dg_all[..3 * tbh].split_at(2 * tbh);
            let rh = &extra[..tbh];
            [
                (0, drz, drz, HiddenIn::Prev),
                (2 * h, dn, dn, HiddenIn::Cached(rh)),
            ]
        }
    };
    for &(off, dih, dhh, hin) in blocks.iter().filter(|b| !b.1.is_empty()) {
        let w = dih.len() / tb;
        let cols = off..off + w;
        if core::ptr::eq(dih, dhh) {
            add_column_sums2(
                &mut grads.bias_ih[cols.clone()],
                &mut grads.bias_hh[cols],
                dih,
            );
        } else {
            add_column_sums(&mut grads.bias_ih[cols.clone()], dih);
            add_column_sums(&mut grads.bias_hh[cols], dhh);
        }
        backward_block(
            grads.weight_ih,
            dinput.as_deref_mut(),
            dih,
            input,
            params.weight_ih,
            off,
            w,
            tb,
            p.i,
            gemm,
        )?;
        let dw = &mut grads.weight_hh[off * h..(off + w) * h];
        match hin {
            HiddenIn::Cached(m) => {
                gemm.gemm(Trans::T, Trans::N, w, h, tb, 1.0, dhh, m, 1.0, dw)?;
            }
            HiddenIn::Prev => {
                let b = p.b;
                let (dg0, dg_rest) = dhh.split_at(b * w);
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
