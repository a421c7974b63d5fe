//! Streaming inference with a character language model (d2l's `RNNModel`:
//! one recurrent cell over token ids, then a dense layer to the vocabulary):
//! feed one token, get the next token's logits, probabilities or a sample.
//!
//! Memory is O(1) and the caller's: a recurrent state of [`state_len`] f32
//! and a workspace of [`workspace_len`] f32 ([`sample_workspace_len`] to
//! sample), sized once from the [`ModelLayout`]; nothing grows with the
//! length of the stream. The weights are borrowed in their storage type `W`,
//! `f32` or [`half::f16`] (half the bytes, the same f32 arithmetic), so they
//! can sit in flash or in an `include_bytes!` blob.
//!
//! The free functions are the contract; [`Stream`] bundles a model with its
//! two buffers for callers that keep them together.
//!
//! ```
//! use recur_core::stream::{self, Stream, StreamModel};
//! use recur_core::{CellKind, ModelLayout};
//!
//! let layout = ModelLayout { cell: CellKind::GruResetAfter, vocab: 5, hidden: 4 };
//! let params = [0.01f32; 5 * 12 + 4 * 12 + 2 * 12 + 5 * 4 + 5];
//! let model = StreamModel::new(layout, &params)?;
//! let mut state = [0.0f32; 4];
//! let mut workspace = [0.0f32; 58];
//! assert_eq!(stream::state_len(&layout), state.len());
//! assert_eq!(stream::sample_workspace_len(&layout), workspace.len());
//! let mut s = Stream::new(model, &mut state, &mut workspace)?;
//! let logits = s.feed(3)?;
//! assert_eq!(logits.len(), 5);
//! # Ok::<(), recur_core::Error>(())
//! ```

pub(crate) mod matvec;

/// The matrix-vector kernel of the step (output layer and, at batch 1, the
/// cells' recurrent product), chosen at run time (`Kernel::detect()`;
/// `Kernel::select` picks another, to compare them).
pub use matvec::Kernel;

use rand_core::RngCore;

use crate::cell::{self, Input};
use crate::error::{check_len, Error};
use crate::fmath;
use crate::layout::{CellParams, ModelLayout};
use crate::sample;
use crate::weight::Weight;

/// A language model's weights, borrowed, in storage type `W`.
#[derive(Debug, Clone, Copy)]
pub struct StreamModel<'a, W = f32> {
    layout: ModelLayout,
    cell: CellParams<'a, W>,
    dense_weight: &'a [W],
    dense_bias: &'a [W],
}

impl<'a, W: Weight> StreamModel<'a, W> {
    /// The model over a flat buffer in [`ModelLayout`] order (the six
    /// tensors `rnn.weight_ih_l0` … `dense.bias`, PyTorch's layout).
    pub fn new(layout: ModelLayout, params: &'a [W]) -> Result<Self, Error> {
        let (cell, dense_weight, dense_bias) = layout.split(params)?;
        Ok(StreamModel {
            layout,
            cell,
            dense_weight,
            dense_bias,
        })
    }

    /// The model from separately stored tensors: the cell's parameters,
    /// `dense.weight` (V, H) and `dense.bias` (V).
    pub fn from_parts(
        layout: ModelLayout,
        cell: CellParams<'a, W>,
        dense_weight: &'a [W],
        dense_bias: &'a [W],
    ) -> Result<Self, Error> {
        layout.validate()?;
        cell.check(&layout.cell_dims())?;
        check_len("dense weight", dense_weight, layout.vocab * layout.hidden)?;
        check_len("dense bias", dense_bias, layout.vocab)?;
        Ok(StreamModel {
            layout,
            cell,
            dense_weight,
            dense_bias,
        })
    }

    /// The model's shape.
    pub fn layout(&self) -> ModelLayout {
        self.layout
    }
}

/// Elements of the recurrent state: `h` (H), then `c` (H) for the LSTM.
pub const fn state_len(layout: &ModelLayout) -> usize {
    if layout.cell.has_cell_state() {
        2 * layout.hidden
    } else {
        layout.hidden
    }
}

/// Elements of the logits / probabilities of one step (V).
pub const fn logits_len(layout: &ModelLayout) -> usize {
    layout.vocab
}

/// Elements of the workspace of [`step_logits`] and [`step_probs`]: the
/// next state (the cell step may not write over its input) and the cell
/// step's scratch. `usize::MAX` for dimensions that overflow (no buffer can
/// match it, so the call reports the dimension).
pub fn workspace_len(layout: &ModelLayout) -> usize {
    cell::step_workspace_len(&layout.cell_dims(), 1).saturating_add(state_len(layout))
}

/// Elements of the workspace of [`step_sample`]: [`workspace_len`] plus the
/// logits and the sampler's scratch (V each).
pub fn sample_workspace_len(layout: &ModelLayout) -> usize {
    workspace_len(layout)
        .saturating_add(layout.vocab)
        .saturating_add(sample::sample_scratch_len(layout.vocab))
}

/// Sets the state to zeros, the start of a new text (d2l's `begin_state`).
pub fn reset(state: &mut [f32]) {
    state.fill(0.0);
}

/// Feeds `token` and writes the logits of the next token.
///
/// - `logits`: out, (V); overwritten, never read.
/// - `state`: in/out, [`state_len`]: the state before `token` on entry, after
///   it on return; left unchanged when an error is returned.
/// - `token`: the token id, `< V`.
/// - `model`: the weights.
/// - `workspace`: scratch, [`workspace_len`] elements.
pub fn step_logits<W: Weight>(
    logits: &mut [f32],
    state: &mut [f32],
    token: u32,
    model: &StreamModel<'_, W>,
    workspace: &mut [f32],
) -> Result<(), Error> {
    let layout = model.layout;
    check_len("logits", logits, logits_len(&layout))?;
    check_len("state", state, state_len(&layout))?;
    check_len("workspace", workspace, workspace_len(&layout))?;
    if token as usize >= layout.vocab {
        return Err(Error::Token {
            what: "token",
            index: 0,
            value: token,
            limit: layout.vocab,
        });
    }
    let hidden = layout.hidden;
    let (next, step_ws) = workspace.split_at_mut(state_len(&layout));
    {
        let (h_prev, c_prev) = state.split_at(hidden);
        let (h, c) = next.split_at_mut(hidden);
        cell::step_forward(
            h,
            c,
            Input::Tokens(&[token]),
            h_prev,
            c_prev,
            model.cell,
            step_ws,
            &layout.cell_dims(),
            1,
        )?;
    }
    state.copy_from_slice(next);
    matvec::affine(
        logits,
        model.dense_weight,
        model.dense_bias,
        &state[..hidden],
    );
    Ok(())
}

/// Feeds `token` and writes the next token's distribution,
/// `softmax(logits / temperature)`.
///
/// - `probs`: out, (V); overwritten, never read; sums to 1.
/// - `state`, `token`, `model`, `workspace`: as in [`step_logits`].
/// - `temperature`: finite and positive (1 is the model's own distribution);
///   otherwise [`Error::Value`] and the state is left unchanged.
pub fn step_probs<W: Weight>(
    probs: &mut [f32],
    state: &mut [f32],
    token: u32,
    temperature: f32,
    model: &StreamModel<'_, W>,
    workspace: &mut [f32],
) -> Result<(), Error> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::Value {
            what: "temperature",
        });
    }
    step_logits(probs, state, token, model, workspace)?;
    softmax_in_place(probs, 1.0 / temperature);
    Ok(())
}

/// Feeds `token` and draws the next token from the logits with
/// [`sample::sample`] (`temperature` 0 is greedy, `top_k` 0 keeps all).
///
/// - `state`, `token`, `model`: as in [`step_logits`].
/// - `rng`: the random source (untouched when greedy).
/// - `workspace`: scratch, [`sample_workspace_len`] elements.
///
/// A bad `temperature` is reported before the step (the state is left
/// unchanged); logits the sampler rejects (NaN from diverged weights) are
/// reported after it.
#[allow(clippy::too_many_arguments)]
pub fn step_sample<W: Weight>(
    state: &mut [f32],
    token: u32,
    temperature: f32,
    top_k: usize,
    rng: &mut impl RngCore,
    model: &StreamModel<'_, W>,
    workspace: &mut [f32],
) -> Result<u32, Error> {
    let layout = model.layout;
    check_len("workspace", workspace, sample_workspace_len(&layout))?;
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(Error::Value {
            what: "temperature",
        });
    }
    let (step_ws, rest) = workspace.split_at_mut(workspace_len(&layout));
    let (logits, scratch) = rest.split_at_mut(layout.vocab);
    step_logits(logits, state, token, model, step_ws)?;
    // `sample` returns an index < V, which fits the u32 ids.
    sample::sample(logits, temperature, top_k, rng, scratch).map(|i| i as u32)
}

/// `−ln softmax(logits)[target]`, the cross-entropy of one step (perplexity
/// is `exp` of its mean over a text).
///
/// Errors: `target ≥ V` ([`Error::Token`]), empty logits ([`Error::Dim`]).
pub fn neg_log_prob(logits: &[f32], target: u32) -> Result<f32, Error> {
    if logits.is_empty() {
        return Err(Error::Dim {
            what: "vocab",
            value: 0,
        });
    }
    let Some(&x) = logits.get(target as usize) else {
        return Err(Error::Token {
            what: "target",
            index: 0,
            value: target,
            limit: logits.len(),
        });
    };
    let max = lane_max(logits);
    let mut sum = 0.0f32;
    let mut acc = [0.0f32; SUM_LANES];
    let mut chunks = logits.chunks_exact(SUM_LANES);
    for c in &mut chunks {
        for l in 0..SUM_LANES {
            acc[l] += fmath::exp(c[l] - max);
        }
    }
    for &v in chunks.remainder() {
        sum += fmath::exp(v - max);
    }
    for a in acc {
        sum += a;
    }
    Ok(max + fmath::ln(sum) - x)
}

/// Independent partial maxima and sums over the vocabulary: serial ones are
/// a chain of 1,027 dependent operations; lanes vectorise.
const SUM_LANES: usize = 16;

/// The largest value (NaN ignored, as `f32::max` does; −∞ when empty).
fn lane_max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; SUM_LANES];
    let mut chunks = v.chunks_exact(SUM_LANES);
    for c in &mut chunks {
        for l in 0..SUM_LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    let rest = chunks.remainder().iter().copied();
    acc.into_iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `v ← softmax(v · scale)`, against the maximum so nothing overflows.
fn softmax_in_place(v: &mut [f32], scale: f32) {
    let max = lane_max(v);
    let mut acc = [0.0f32; SUM_LANES];
    let mut chunks = v.chunks_exact_mut(SUM_LANES);
    for c in &mut chunks {
        for l in 0..SUM_LANES {
            c[l] = fmath::exp((c[l] - max) * scale);
            acc[l] += c[l];
        }
    }
    let mut sum = 0.0f32;
    for x in chunks.into_remainder() {
        *x = fmath::exp((*x - max) * scale);
        sum += *x;
    }
    for a in acc {
        sum += a;
    }
    let inv = 1.0 / sum;
    for x in v.iter_mut() {
        *x *= inv;
    }
}

/// A model with its state and workspace: the free functions of this module
/// with the buffers held.
#[derive(Debug)]
pub struct Stream<'a, W = f32> {
    model: StreamModel<'a, W>,
    state: &'a mut [f32],
    workspace: &'a mut [f32],
}

impl<'a, W: Weight> Stream<'a, W> {
    /// A stream at the start of a text (the state is zeroed).
    ///
    /// - `state`: [`state_len`] elements.
    /// - `workspace`: [`sample_workspace_len`] elements (room for the
    ///   logits, which [`Stream::feed`] returns borrowed from it).
    pub fn new(
        model: StreamModel<'a, W>,
        state: &'a mut [f32],
        workspace: &'a mut [f32],
    ) -> Result<Self, Error> {
        let layout = model.layout;
        check_len("state", state, state_len(&layout))?;
        check_len("workspace", workspace, sample_workspace_len(&layout))?;
        reset(state);
        Ok(Stream {
            model,
            state,
            workspace,
        })
    }

    /// Back to the start of a text.
    pub fn reset(&mut self) {
        reset(self.state);
    }

    /// The current state: `h`, then `c` for the LSTM.
    pub fn state(&self) -> &[f32] {
        self.state
    }

    /// The model.
    pub fn model(&self) -> &StreamModel<'a, W> {
        &self.model
    }

    /// Feeds `token`; returns the next token's logits (V).
    pub fn feed(&mut self, token: u32) -> Result<&[f32], Error> {
        let layout = self.model.layout;
        let (step_ws, rest) = self.workspace.split_at_mut(workspace_len(&layout));
        let logits = &mut rest[..layout.vocab];
        step_logits(logits, self.state, token, &self.model, step_ws)?;
        Ok(logits)
    }

    /// Feeds `token`; returns a draw of the next token (see [`step_sample`]).
    pub fn feed_sample(
        &mut self,
        token: u32,
        temperature: f32,
        top_k: usize,
        rng: &mut impl RngCore,
    ) -> Result<u32, Error> {
        step_sample(
            self.state,
            token,
            temperature,
            top_k,
            rng,
            &self.model,
            self.workspace,
        )
    }
}

#[cfg(test)]
mod tests;
