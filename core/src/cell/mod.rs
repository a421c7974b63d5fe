//! Recurrent cells: batched, fused forward and backward steps, and the
//! sequence level (BPTT) built from them.
//!
//! CONTRACT (shared with the engine and the trainer; keep these signatures):
//! - [`sequence_forward`] / [`sequence_backward`]: T steps, input projection
//!   hoisted before the time loop, weight gradients formed after it.
//! - [`step_forward`]: one step for streaming inference, weights `f32` or `f16`.
//! - Sizes: [`cache_len`], [`workspace_len`], [`step_workspace_len`].
//!
//! Errors: a slice of the wrong length is [`Error::Length`] naming it; a zero
//! or overflowing dimension [`Error::Dim`]; a token id `≥ I`
//! [`Error::Token`]; a non-empty cell-state slice for a cell without one
//! (anything but the LSTM) [`Error::Cell`]; a `dinput` for token input
//! [`Error::Value`]. Nothing panics on caller input and nothing allocates.
//!
//! Layout of the work (see `plan.rs` for the buffers): the input projection
//! of all `T·B` rows is one gemm (dense) or a gather of `weight_ih` columns
//! (tokens); each step is the recurrent gemm plus one fused pass of gate
//! nonlinearities, which saves the post-activation gates in the cache. BPTT
//! writes the pre-activation gate gradients of all steps to the workspace
//! and, after the loop, forms `dW_ih` (one gemm, or a scatter-add for
//! tokens), `dW_hh` (gemms over all `T·B` rows) and the bias sums. The gate
//! loops run an AVX2 build where the processor has it (same results).

mod act;
mod gru;
mod input;
mod lstm;
mod plan;
mod rnn;
mod sequence;
mod step;
#[cfg(test)]
mod tests;

use crate::error::{check_len, check_tokens, Error};
use crate::gemm::Gemm;
use crate::layout::{CellDims, CellGrads, CellKind, CellParams};
use crate::weight::Weight;
use plan::Plan;

/// The input of a sequence or of a step.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Dense vectors: (T, B, I) for a sequence, (B, I) for a step.
    Dense(&'a [f32]),
    /// Token ids, each `< I`: (T, B) for a sequence, (B) for a step. The
    /// input product is then a gather of column `id` of `weight_ih`, which is
    /// exactly the product with a one-hot vector, without building it.
    Tokens(&'a [u32]),
}

/// Dimensions of a T-step, B-row sequence through one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqDims {
    /// The cell's parameter shape.
    pub cell: CellDims,
    /// Time steps `T` (≥ 1).
    pub steps: usize,
    /// Batch rows `B` (≥ 1).
    pub batch: usize,
}

/// Length of the cache that [`sequence_forward`] fills and
/// [`sequence_backward`] reads.
pub fn cache_len(dims: &SeqDims) -> usize {
    plan::cache_len(dims)
}

/// Length of the scratch workspace both [`sequence_forward`] and
/// [`sequence_backward`] need (its contents are not kept between calls).
pub fn workspace_len(dims: &SeqDims) -> usize {
    plan::workspace_len(dims)
}

/// Length of the scratch workspace [`step_forward`] needs for `batch` rows.
pub fn step_workspace_len(cell: &CellDims, batch: usize) -> usize {
    plan::step_workspace_len(cell, batch)
}

/// Forward through `T` steps.
///
/// - `hs`: out, (T, B, H): the hidden state after every step.
/// - `c_last`: out, (B, H) the final cell state for the LSTM; empty otherwise.
/// - `input`: (T, B, I) dense or (T, B) token ids.
/// - `h0`, `c0`: (B, H) initial states (`c0` empty unless LSTM). The caller
///   carries or resets them between batches; nothing here keeps state.
/// - `cache`: out, [`cache_len`] elements, saved for the backward pass.
/// - `workspace`: scratch, [`workspace_len`] elements.
#[allow(clippy::too_many_arguments)]
pub fn sequence_forward(
    hs: &mut [f32],
    c_last: &mut [f32],
    input: Input<'_>,
    h0: &[f32],
    c0: &[f32],
    params: CellParams<'_, f32>,
    cache: &mut [f32],
    workspace: &mut [f32],
    dims: &SeqDims,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    let p = Plan::new(dims)?;
    params.check(&dims.cell)?;
    check_input(input, p.tb, p.i)?;
    check_len("hs", hs, p.tbh())?;
    check_state("c_last", c_last, p.kind, p.bh)?;
    check_len("h0", h0, p.bh)?;
    check_state("c0", c0, p.kind, p.bh)?;
    check_len("cache", cache, p.cache_len)?;
    check_len("workspace", workspace, p.workspace_len)?;
    sequence::forward(
        hs, c_last, input, h0, c0, params, cache, workspace, &p, gemm,
    )
}

/// Backward through the `T` steps of the matching [`sequence_forward`]
/// call. Every gradient is **accumulated** (`+=`).
///
/// - `grads`: the cell's parameter gradients.
/// - `dinput`: (T, B, I) gradient of a dense input, or `None` (not wanted;
///   always `None` for token input).
/// - `dh0`, `dc0`: (B, H) gradients of the initial states (`dc0` empty unless LSTM).
/// - `dhs`: (T, B, H) upstream gradient on every `h_t` (from the output layer);
///   the final state is not used beyond it.
/// - `input`, `h0`, `c0`, `params`, `hs`: as given to / produced by the forward call.
/// - `cache`: as the forward call left it; `workspace`: scratch.
#[allow(clippy::too_many_arguments)]
pub fn sequence_backward(
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
    dims: &SeqDims,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    let p = Plan::new(dims)?;
    grads.check(&dims.cell)?;
    params.check(&dims.cell)?;
    check_input(input, p.tb, p.i)?;
    if let Some(dx) = dinput.as_deref() {
        match input {
            Input::Dense(_) => check_len("dinput", dx, p.tb * p.i)?,
            // A token id has no gradient.
            Input::Tokens(_) => return Err(Error::Value { what: "dinput" }),
        }
    }
    check_len("dh0", dh0, p.bh)?;
    check_state("dc0", dc0, p.kind, p.bh)?;
    check_len("dhs", dhs, p.tbh())?;
    check_len("h0", h0, p.bh)?;
    check_state("c0", c0, p.kind, p.bh)?;
    check_len("hs", hs, p.tbh())?;
    check_len("cache", cache, p.cache_len)?;
    check_len("workspace", workspace, p.workspace_len)?;
    sequence::backward(
        grads, dinput, dh0, dc0, dhs, input, h0, c0, params, hs, cache, workspace, &p, gemm,
    )
}

/// One step for streaming inference, weights stored as `W` (`f32` or `f16`),
/// computed in f32.
///
/// - `h`, `c`: out, (B, H) new states (`c` empty unless LSTM); they may not
///   alias `h_prev`, `c_prev` (double-buffer them).
/// - `input`: (B, I) dense or (B) token ids.
/// - `h_prev`, `c_prev`: (B, H).
/// - `workspace`: scratch, [`step_workspace_len`] elements.
#[allow(clippy::too_many_arguments)]
pub fn step_forward<W: Weight>(
    h: &mut [f32],
    c: &mut [f32],
    input: Input<'_>,
    h_prev: &[f32],
    c_prev: &[f32],
    params: CellParams<'_, W>,
    workspace: &mut [f32],
    cell: &CellDims,
    batch: usize,
) -> Result<(), Error> {
    params.check(cell)?;
    if batch == 0 {
        return Err(Error::Dim {
            what: "batch",
            value: 0,
        });
    }
    let (bgh, ws_len) = plan::step_sizes(cell, batch).ok_or(Error::Dim {
        what: "batch",
        value: batch,
    })?;
    let bh = batch * cell.hidden;
    check_input(input, batch, cell.input)?;
    check_len("h", h, bh)?;
    check_state("c", c, cell.cell, bh)?;
    check_len("h_prev", h_prev, bh)?;
    check_state("c_prev", c_prev, cell.cell, bh)?;
    check_len("workspace", workspace, ws_len)?;
    step::forward(
        h, c, input, h_prev, c_prev, params, workspace, cell, batch, bgh,
    );
    Ok(())
}

/// Checks an input of `rows` rows: (rows, I) dense or (rows) ids `< I`.
fn check_input(input: Input<'_>, rows: usize, in_dim: usize) -> Result<(), Error> {
    match input {
        Input::Dense(x) => check_len(
            "input",
            x,
            rows.checked_mul(in_dim).ok_or(Error::Dim {
                what: "input",
                value: in_dim,
            })?,
        ),
        Input::Tokens(ids) => {
            check_len("input", ids, rows)?;
            check_tokens("input", ids, in_dim)
        }
    }
}

/// Checks a cell-state slice: (B, H) for the LSTM, empty for the others
/// (a non-empty one is [`Error::Cell`]).
fn check_state(what: &'static str, s: &[f32], kind: CellKind, bh: usize) -> Result<(), Error> {
    if kind.has_cell_state() {
        check_len(what, s, bh)
    } else if s.is_empty() {
        Ok(())
    } else {
        Err(Error::Cell { what })
    }
}
