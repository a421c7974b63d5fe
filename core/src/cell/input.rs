//! The input side of a cell: the projection `x W_ihᵀ + bias` of all `T·B`
//! rows before the time loop, and its twin, the gradients of `weight_ih`,
//! `bias_ih` and of a dense input after the loop.
//!
//! Token ids are one-hot vectors never built: the forward product is a
//! gather of column `id` of `weight_ih`, the weight gradient a scatter-add
//! into that column. Ids are checked by the callers.

use super::Input;
use crate::error::Error;
use crate::gemm::{Gemm, Trans};
use crate::weight::Weight;

/// `xp (rows, G·H) = input · W_ihᵀ + bias`, overwriting `xp`.
///
/// - `xp`: out, (rows, G·H).
/// - `input`: (rows, I) dense or (rows) checked token ids.
/// - `weight_ih`: (G·H, I).
/// - `bias`: (G·H) the row added to every projection.
pub(crate) fn project(
    xp: &mut [f32],
    input: Input<'_>,
    weight_ih: &[f32],
    bias: &[f32],
    rows: usize,
    in_dim: usize,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    let gh = bias.len();
    match input {
        Input::Dense(x) => {
            for row in xp.chunks_exact_mut(gh) {
                row.copy_from_slice(bias);
            }
            gemm.gemm(
                Trans::N,
                Trans::T,
                rows,
                gh,
                in_dim,
                1.0,
                x,
                weight_ih,
                1.0,
                xp,
            )
        }
        Input::Tokens(ids) => {
            gather_add(xp, ids, weight_ih, bias, in_dim);
            Ok(())
        }
    }
}

/// `out[r] = bias + column ids[r] of w`, for every row `r`, converting `W`.
///
/// - `out`: out, (rows, R) with R = `bias.len()`.
/// - `ids`: (rows), each `< in_dim` (checked by the caller).
/// - `w`: (R, in_dim).
pub(crate) fn gather_add<W: Weight>(
    out: &mut [f32],
    ids: &[u32],
    w: &[W],
    bias: &[f32],
    in_dim: usize,
) {
    let r = bias.len();
    for (row, &id) in out.chunks_exact_mut(r).zip(ids) {
        let col = w.get(id as usize..).unwrap_or(&[]);
        for ((o, &b), wv) in row.iter_mut().zip(bias).zip(col.iter().step_by(in_dim)) {
            *o = b + wv.to_f32();
        }
    }
}

/// Gradients through the input projection of one block of gate rows
/// `[off, off + w)`, accumulated (`+=`).
///
/// - `dweight_ih`: (G·H, I) the whole gradient; rows `[off, off + w)` change.
/// - `dbias`: (w) the block's part of `grad bias_ih`.
/// - `dinput`: (rows, I) gradient of a dense input, or `None`.
/// - `dg`: (rows, w) pre-activation gradients of the block.
/// - `input`, `weight_ih`: as in [`project`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_block(
    dweight_ih: &mut [f32],
    dbias: &mut [f32],
    dinput: Option<&mut [f32]>,
    dg: &[f32],
    input: Input<'_>,
    weight_ih: &[f32],
    off: usize,
    rows: usize,
    in_dim: usize,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    let w = dbias.len();
    let block = off * in_dim..(off + w) * in_dim;
    add_column_sums(dbias, dg);
    match input {
        Input::Dense(x) => {
            gemm.gemm(
                Trans::T,
                Trans::N,
                w,
                in_dim,
                rows,
                1.0,
                dg,
                x,
                1.0,
                &mut dweight_ih[block.clone()],
            )?;
            if let Some(dx) = dinput {
                gemm.gemm(
                    Trans::N,
                    Trans::N,
                    rows,
                    in_dim,
                    w,
                    1.0,
                    dg,
                    &weight_ih[block],
                    1.0,
                    dx,
                )?;
            }
            Ok(())
        }
        Input::Tokens(ids) => {
            let dw = &mut dweight_ih[block];
            for (row, &id) in dg.chunks_exact(w).zip(ids) {
                let col = dw.get_mut(id as usize..).unwrap_or(&mut []);
                for (d, g) in col.iter_mut().step_by(in_dim).zip(row) {
                    *d += g;
                }
            }
            Ok(())
        }
    }
}

/// `db[j] += Σ_r m[r, j]` for `m` (rows, `db.len()`).
pub(crate) fn add_column_sums(db: &mut [f32], m: &[f32]) {
    let w = db.len();
    for row in m.chunks_exact(w) {
        for (d, &v) in db.iter_mut().zip(row) {
            *d += v;
        }
    }
}
