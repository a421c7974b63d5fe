//! Elman RNN gate rows: `h' = act(pre)` with `pre = W_ih x + b_ih + W_hh h + b_hh`
//! already summed by the caller.
//!
//! Every slice here is one batch row of `H` elements (the caller slices
//! them to exactly `H`, which lets the bounds checks fold away).

use super::act::{relu, tanh};

/// Forward: `h = act(pre)`.
///
/// - `h`: out, (H).
/// - `pre`: (H) pre-activation.
#[inline(always)]
pub(crate) fn forward_row(h: &mut [f32], pre: &[f32], use_relu: bool) {
    let n = h.len();
    let pre = &pre[..n];
    if use_relu {
        for j in 0..n {
            h[j] = relu(pre[j]);
        }
    } else {
        for j in 0..n {
            h[j] = tanh(pre[j]);
        }
    }
}

/// Backward: `dpre = dh · act'(pre)`, from the post-activation `h`
/// (tanh' = 1 − h², relu' = [h > 0]).
///
/// - `dpre`: out, (H) pre-activation gradient (overwritten).
/// - `dh`: (H) gradient on `h`.
/// - `h`: (H) the forward output.
#[inline(always)]
pub(crate) fn backward_row(dpre: &mut [f32], dh: &[f32], h: &[f32], use_relu: bool) {
    let n = dpre.len();
    let (dh, h) = (&dh[..n], &h[..n]);
    if use_relu {
        for j in 0..n {
            dpre[j] = if h[j] > 0.0 { dh[j] } else { 0.0 };
        }
    } else {
        for j in 0..n {
            dpre[j] = dh[j] * (1.0 - h[j] * h[j]);
        }
    }
}
