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

/// Weight rows handled together by the gather and the scatter: 16 rows of
/// a vocabulary-wide matrix stay in L2 while all `T·B` ids are served, and
/// 16 f32 are one cache line of the (rows, G·H) side.
const ROW_BLOCK: usize = 16;

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
    let full = r - r % ROW_BLOCK;
    for j0 in (0..full).step_by(ROW_BLOCK) {
        let w_block = &w[j0 * in_dim..(j0 + ROW_BLOCK) * in_dim];
        let b_block: &[f32; ROW_BLOCK] = bias[j0..j0 + ROW_BLOCK]
            .try_into()
            .unwrap_or(&[0.0; ROW_BLOCK]);
        for (row, &id) in out.chunks_exact_mut(r).zip(ids) {
            let id = id as usize;
            if let Ok(o) = <&mut [f32; ROW_BLOCK]>::try_from(&mut row[j0..j0 + ROW_BLOCK]) {
                for jj in 0..ROW_BLOCK {
                    o[jj] = b_block[jj] + w_block[jj * in_dim + id].to_f32();
                }
            }
        }
    }
    // The last rows, fewer than a block.
    for j in full..r {
        let w_row = &w[j * in_dim..(j + 1) * in_dim];
        for (row, &id) in out.chunks_exact_mut(r).zip(ids) {
            row[j] = bias[j] + w_row[id as usize].to_f32();
        }
    }
}

/// Gradients through the input projection of one block of gate rows
/// `[off, off + w)`, accumulated (`+=`).
///
/// (The bias gradient is the column sum of `dg`, see [`add_column_sums`].)
///
/// - `dweight_ih`: (G·H, I) the whole gradient; rows `[off, off + w)` change.
/// - `dinput`: (rows, I) gradient of a dense input, or `None`.
/// - `dg`: (rows, w) pre-activation gradients of the block.
/// - `input`, `weight_ih`: as in [`project`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_block(
    dweight_ih: &mut [f32],
    dinput: Option<&mut [f32]>,
    dg: &[f32],
    input: Input<'_>,
    weight_ih: &[f32],
    off: usize,
    w: usize,
    rows: usize,
    in_dim: usize,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    let block = off * in_dim..(off + w) * in_dim;
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
            let full = w - w % ROW_BLOCK;
            for j0 in (0..full).step_by(ROW_BLOCK) {
                let dw_block = &mut dw[j0 * in_dim..(j0 + ROW_BLOCK) * in_dim];
                for (row, &id) in dg.chunks_exact(w).zip(ids) {
                    let id = id as usize;
                    if let Ok(g) = <&[f32; ROW_BLOCK]>::try_from(&row[j0..j0 + ROW_BLOCK]) {
                        for jj in 0..ROW_BLOCK {
                            dw_block[jj * in_dim + id] += g[jj];
                        }
                    }
                }
            }
            for j in full..w {
                let dw_row = &mut dw[j * in_dim..(j + 1) * in_dim];
                for (row, &id) in dg.chunks_exact(w).zip(ids) {
                    dw_row[id as usize] += row[j];
                }
            }
            Ok(())
        }
    }
}

/// `db[j] += Σ_r m[r, j]` for `m` (rows, `db.len()`).
#[inline(always)]
pub(crate) fn add_column_sums(db: &mut [f32], m: &[f32]) {
    let w = db.len();
    for row in m.chunks_exact(w) {
        for (d, &v) in db.iter_mut().zip(row) {
            *d += v;
        }
    }
}

/// [`add_column_sums`] into two bias gradients at once (both biases of a
/// block whose input-side and recurrent-side gradients coincide).
#[inline(always)]
pub(crate) fn add_column_sums2(db1: &mut [f32], db2: &mut [f32], m: &[f32]) {
    let w = db1.len();
    let db2 = &mut db2[..w];
    for row in m.chunks_exact(w) {
        let row = &row[..w];
        for j in 0..w {
            db1[j] += row[j];
            db2[j] += row[j];
        }
    }
}
