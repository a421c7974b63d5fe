//! LSTM gate rows, gates `i, f, g, o` (PyTorch's order):
//! `c' = f ⊙ c + i ⊙ g`, `h' = o ⊙ tanh(c')`.
//!
//! Every slice is one batch row; `H` is taken from `h`.

use super::act::{sigmoid, tanh};

/// Forward.
///
/// - `h`: out, (H) new hidden state.
/// - `c`: out, (H) new cell state.
/// - `gates`: out, (4H) post-activation `i, f, g, o`.
/// - `tanh_c`: out, (H) `tanh(c')`.
/// - `pre`: (4H) pre-activations (both products and both biases summed).
/// - `c_prev`: (H).
#[inline(always)]
pub(crate) fn forward_row(
    h: &mut [f32],
    c: &mut [f32],
    gates: &mut [f32],
    tanh_c: &mut [f32],
    pre: &[f32],
    c_prev: &[f32],
) {
    let n = h.len();
    let (c, tanh_c, c_prev) = (&mut c[..n], &mut tanh_c[..n], &c_prev[..n]);
    let (gi, rest) = gates[..4 * n].split_at_mut(n);
    let (gf, rest) = rest.split_at_mut(n);
    let (gg, go) = rest.split_at_mut(n);
    let (pi, rest) = pre[..4 * n].split_at(n);
    let (pf, rest) = rest.split_at(n);
    let (pg, po) = rest.split_at(n);
    for j in 0..n {
        let i = sigmoid(pi[j]);
        let f = sigmoid(pf[j]);
        let g = tanh(pg[j]);
        let o = sigmoid(po[j]);
        let cj = f * c_prev[j] + i * g;
        let tc = tanh(cj);
        gi[j] = i;
        gf[j] = f;
        gg[j] = g;
        go[j] = o;
        c[j] = cj;
        tanh_c[j] = tc;
        h[j] = o * tc;
    }
}

/// Backward. `dc` enters as the gradient carried from the next step on
/// `c'` and leaves as the gradient on `c_prev` (`dc' · f`).
///
/// - `dpre`: out, (4H) pre-activation gradients (overwritten).
/// - `dc`: in/out, (H).
/// - `dh`: (H) gradient on `h'`.
/// - `gates`, `tanh_c`: (4H), (H) from the forward row.
/// - `c_prev`: (H).
#[inline(always)]
pub(crate) fn backward_row(
    dpre: &mut [f32],
    dc: &mut [f32],
    dh: &[f32],
    gates: &[f32],
    tanh_c: &[f32],
    c_prev: &[f32],
) {
    let n = dc.len();
    let (dh, tanh_c, c_prev) = (&dh[..n], &tanh_c[..n], &c_prev[..n]);
    let (di, rest) = dpre[..4 * n].split_at_mut(n);
    let (df, rest) = rest.split_at_mut(n);
    let (dg, dout) = rest.split_at_mut(n);
    let (gi, rest) = gates[..4 * n].split_at(n);
    let (gf, rest) = rest.split_at(n);
    let (gg, go) = rest.split_at(n);
    for j in 0..n {
        let (i, f, g, o, tc) = (gi[j], gf[j], gg[j], go[j], tanh_c[j]);
        let dcj = dc[j] + dh[j] * o * (1.0 - tc * tc);
        di[j] = dcj * g * i * (1.0 - i);
        df[j] = dcj * c_prev[j] * f * (1.0 - f);
        dg[j] = dcj * i * (1.0 - g * g);
        dout[j] = dh[j] * tc * o * (1.0 - o);
        dc[j] = dcj * f;
    }
}
