//! GRU gate rows, gates `r, z, n` (PyTorch's order), `h' = (1 − z) ⊙ n + z ⊙ h`
//! (written `n + z ⊙ (h − n)`), in the two variants:
//!
//! - reset-after (PyTorch `nn.GRU`): `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`;
//! - reset-before (Cho et al., d2l's scratch GRU):
//!   `n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)`, which needs `r` before
//!   the n-block of the recurrent product, so its rows come in two phases.
//!
//! `xp` rows hold the input projection plus the biases that sit outside the
//! reset gate; `hp` rows the recurrent product. Every slice is one batch row.

use super::act::{sigmoid, tanh};

/// Reset-after forward.
///
/// - `h`: out, (H).
/// - `gates`: out, (3H) post-activation `r, z, n`.
/// - `hn`: out, (H) `W_hn h + b_hn`, kept for `dr`.
/// - `xp`: (3H) `W_ih x + b_ih`, plus `b_hh` in the r and z blocks.
/// - `hp`: (3H) `W_hh h` (no bias).
/// - `b_hn`: (H) the n-block of `bias_hh`.
/// - `h_prev`: (H).
#[inline(always)]
pub(crate) fn after_forward_row(
    h: &mut [f32],
    gates: &mut [f32],
    hn: &mut [f32],
    xp: &[f32],
    hp: &[f32],
    b_hn: &[f32],
    h_prev: &[f32],
) {
    let n = h.len();
    let (hn, b_hn, h_prev) = (&mut hn[..n], &b_hn[..n], &h_prev[..n]);
    let (gr, rest) = gates[..3 * n].split_at_mut(n);
    let (gz, gn) = rest.split_at_mut(n);
    let (xr, rest) = xp[..3 * n].split_at(n);
    let (xz, xn) = rest.split_at(n);
    let (hr, rest) = hp[..3 * n].split_at(n);
    let (hz, hpn) = rest.split_at(n);
    for j in 0..n {
        let r = sigmoid(xr[j] + hr[j]);
        let z = sigmoid(xz[j] + hz[j]);
        let hnj = hpn[j] + b_hn[j];
        let nj = tanh(xn[j] + r * hnj);
        gr[j] = r;
        gz[j] = z;
        gn[j] = nj;
        hn[j] = hnj;
        h[j] = nj + z * (h_prev[j] - nj);
    }
}

/// Reset-after backward. The n block has different pre-activation gradients
/// on the input side (`dn`) and on the recurrent side (`r ⊙ dn`), so both
/// sides get a full row (the r and z blocks are the same in both).
///
/// - `dih`: out, (3H) pre-activation gradients, input side.
/// - `dhh`: out, (3H) pre-activation gradients, recurrent side.
/// - `dh`: in/out, (H): in the gradient on `h'`, out its direct share of
///   the gradient on `h_prev` (`dh' ⊙ z`); the product share is the caller's.
/// - `gates`, `hn`: (3H), (H) from the forward row.
/// - `h_prev`: (H).
#[inline(always)]
pub(crate) fn after_backward_row(
    dih: &mut [f32],
    dhh: &mut [f32],
    dh: &mut [f32],
    gates: &[f32],
    hn: &[f32],
    h_prev: &[f32],
) {
    let n = dh.len();
    let (hn, h_prev) = (&hn[..n], &h_prev[..n]);
    let (ir, rest) = dih[..3 * n].split_at_mut(n);
    let (iz, i_n) = rest.split_at_mut(n);
    let (hr, rest) = dhh[..3 * n].split_at_mut(n);
    let (hz, h_n) = rest.split_at_mut(n);
    let (gr, rest) = gates[..3 * n].split_at(n);
    let (gz, gn) = rest.split_at(n);
    for j in 0..n {
        let (r, z, nj, d) = (gr[j], gz[j], gn[j], dh[j]);
        let dnp = d * (1.0 - z) * (1.0 - nj * nj);
        let dz = d * (h_prev[j] - nj) * z * (1.0 - z);
        let dr = dnp * hn[j] * r * (1.0 - r);
        ir[j] = dr;
        iz[j] = dz;
        i_n[j] = dnp;
        hr[j] = dr;
        hz[j] = dz;
        h_n[j] = dnp * r;
        dh[j] = d * z;
    }
}

/// Reset-before forward, phase 1 (after the r,z-block product).
///
/// - `grz`: out, (2H) post-activation `r, z`.
/// - `rh`: out, (H) `r ⊙ h_prev`, the input of the n-block product.
/// - `xp`: (2H) r,z blocks of the input projection with both biases.
/// - `hp`: (2H) `W_hr h, W_hz h`.
/// - `h_prev`: (H).
#[inline(always)]
pub(crate) fn before_forward_rz_row(
    grz: &mut [f32],
    rh: &mut [f32],
    xp: &[f32],
    hp: &[f32],
    h_prev: &[f32],
) {
    let n = rh.len();
    let h_prev = &h_prev[..n];
    let (gr, gz) = grz[..2 * n].split_at_mut(n);
    let (xr, xz) = xp[..2 * n].split_at(n);
    let (hr, hz) = hp[..2 * n].split_at(n);
    for j in 0..n {
        let r = sigmoid(xr[j] + hr[j]);
        gr[j] = r;
        gz[j] = sigmoid(xz[j] + hz[j]);
        rh[j] = r * h_prev[j];
    }
}

/// Reset-before forward, phase 2 (after the n-block product on `r ⊙ h`).
///
/// - `h`: out, (H).
/// - `gn`: out, (H) post-activation `n`.
/// - `xp`: (H) n block of the input projection with both biases.
/// - `hp`: (H) `W_hn (r ⊙ h)`.
/// - `gz`: (H) `z` from phase 1.
/// - `h_prev`: (H).
#[inline(always)]
pub(crate) fn before_forward_n_row(
    h: &mut [f32],
    gn: &mut [f32],
    xp: &[f32],
    hp: &[f32],
    gz: &[f32],
    h_prev: &[f32],
) {
    let n = h.len();
    let (gn, xp, hp, gz, h_prev) = (&mut gn[..n], &xp[..n], &hp[..n], &gz[..n], &h_prev[..n]);
    for j in 0..n {
        let nj = tanh(xp[j] + hp[j]);
        gn[j] = nj;
        h[j] = nj + gz[j] * (h_prev[j] - nj);
    }
}

/// Reset-before backward, phase 1: the z and n pre-activation gradients
/// (the n block is the same on both sides here).
///
/// - `dz`: out, (H).
/// - `dn`: out, (H).
/// - `dh`: (H) gradient on `h'`.
/// - `gates`: (3H) `r, z, n` from the forward rows.
/// - `h_prev`: (H).
#[inline(always)]
pub(crate) fn before_backward_zn_row(
    dz: &mut [f32],
    dn: &mut [f32],
    dh: &[f32],
    gates: &[f32],
    h_prev: &[f32],
) {
    let n = dz.len();
    let (dn, dh, h_prev) = (&mut dn[..n], &dh[..n], &h_prev[..n]);
    let (gz, gn) = gates[n..3 * n].split_at(n);
    for j in 0..n {
        let (z, nj, d) = (gz[j], gn[j], dh[j]);
        dz[j] = d * (h_prev[j] - nj) * z * (1.0 - z);
        dn[j] = d * (1.0 - z) * (1.0 - nj * nj);
    }
}

/// Reset-before backward, phase 2, once `drh = dn · W_hn` (the gradient on
/// `r ⊙ h_prev`) is known.
///
/// - `dr`: out, (H) pre-activation gradient of `r`.
/// - `dh`: in/out, (H): in the gradient on `h'`, out the non-product share
///   of the gradient on `h_prev`: `dh' ⊙ z + drh ⊙ r`.
/// - `drh`: (H).
/// - `gates`: (3H).
/// - `h_prev`: (H).
#[inline(always)]
pub(crate) fn before_backward_r_row(
    dr: &mut [f32],
    dh: &mut [f32],
    drh: &[f32],
    gates: &[f32],
    h_prev: &[f32],
) {
    let n = dr.len();
    let (dh, drh, h_prev) = (&mut dh[..n], &drh[..n], &h_prev[..n]);
    let (gr, gz) = gates[..2 * n].split_at(n);
    for j in 0..n {
        let (r, z) = (gr[j], gz[j]);
        dr[j] = drh[j] * h_prev[j] * r * (1.0 - r);
        dh[j] = dh[j] * z + drh[j] * r;
    }
}
