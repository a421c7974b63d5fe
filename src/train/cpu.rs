//! The CPU [`Backend`]: recur-core's cells, output layer, clipping and
//! optimizers on buffers allocated once, with any [`Gemm`] (the threaded
//! one for training).

use recur_core::cell::{self, Input, SeqDims};
use recur_core::clip;
use recur_core::optim::{self, AdamConfig};
use recur_core::output::{self, DenseDims};
use recur_core::sample;
use recur_core::{Gemm, ModelLayout};

use super::backend::{
    check_flat, Backend, BackendSpec, BatchStats, Decode, HiddenState, OptimizerState,
    StatsAccumulator,
};
use super::config::OptimizerKind;
use super::error::TrainError;
use super::rng::TrainRng;

/// Training on the CPU with the matrix products of `G`.
pub struct CpuBackend<G: Gemm> {
    spec: BackendSpec,
    gemm: G,
    /// (P) parameters, PyTorch layout.
    params: Vec<f32>,
    /// (P) gradients of the last backward.
    grads: Vec<f32>,
    /// (P) each: Adam's moments (empty for SGD).
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    /// Updates taken.
    step: u64,
    /// (B, H) the carried state (the next batch starts from it); `c` empty
    /// unless LSTM.
    state_h: Vec<f32>,
    state_c: Vec<f32>,
    /// (B, H) the state the last forward started from (backward reads it).
    batch_h0: Vec<f32>,
    batch_c0: Vec<f32>,
    /// (T, B) the last forward's inputs and targets.
    inputs: Vec<u32>,
    targets: Vec<u32>,
    /// (T, B, H) hidden states of the last forward.
    hs: Vec<f32>,
    /// (B, H) final cell state (LSTM), else empty.
    c_last: Vec<f32>,
    /// Cell cache and workspace (recur-core's sizes).
    cache: Vec<f32>,
    workspace: Vec<f32>,
    /// (T·B, V) logits, then probabilities, then their gradient, in place.
    logits: Vec<f32>,
    /// (T, B, H) gradient on every hidden state.
    dhs: Vec<f32>,
    /// (B, H) gradients of the initial state (computed, not used: the
    /// graph is cut there).
    dh0: Vec<f32>,
    dc0: Vec<f32>,
    /// Whether `logits` holds probabilities of the current forward (so that
    /// a backward without a forward is refused).
    forward_done: bool,
    /// The last forward's mean loss and the last clip's norm.
    last_loss: f32,
    last_norm: f32,
    /// Sums since the last `take_stats`.
    stats: StatsAccumulator,
}

impl<G: Gemm> CpuBackend<G> {
    /// Allocates every buffer for `spec`; parameters start at zero (upload
    /// the initial ones with [`Backend::upload_params`]).
    pub fn new(spec: BackendSpec, gemm: G) -> Result<Self, TrainError> {
        let layout = spec.layout;
        layout.validate()?;
        let seq = seq_dims(&spec)?;
        let (b, t, h, v) = (spec.batch, spec.steps, layout.hidden, layout.vocab);
        let state_len = b * h;
        let c_len = if layout.cell.has_cell_state() {
            state_len
        } else {
            0
        };
        let p = layout.len();
        let adam = spec.optimizer == OptimizerKind::Adam;
        let rows = t
            .checked_mul(b)
            .ok_or_else(|| TrainError::Config("steps × batch overflows".into()))?;
        DenseDims {
            rows,
            hidden: h,
            vocab: v,
        }
        .validate()?;
        Ok(CpuBackend {
            gemm,
            params: vec![0.0; p],
            grads: vec![0.0; p],
            exp_avg: if adam { vec![0.0; p] } else { Vec::new() },
            exp_avg_sq: if adam { vec![0.0; p] } else { Vec::new() },
            step: 0,
            state_h: vec![0.0; state_len],
            state_c: vec![0.0; c_len],
            batch_h0: vec![0.0; state_len],
            batch_c0: vec![0.0; c_len],
            inputs: vec![0; rows],
            targets: vec![0; rows],
            hs: vec![0.0; rows * h],
            c_last: vec![0.0; c_len],
            cache: vec![0.0; cell::cache_len(&seq)],
            workspace: vec![0.0; cell::workspace_len(&seq)],
            logits: vec![0.0; rows * v],
            dhs: vec![0.0; rows * h],
            dh0: vec![0.0; state_len],
            dc0: vec![0.0; c_len],
            forward_done: false,
            last_loss: f32::NAN,
            last_norm: f32::NAN,
            stats: StatsAccumulator::default(),
            spec,
        })
    }

    fn layout(&self) -> ModelLayout {
        self.spec.layout
    }

    fn dense_dims(&self) -> DenseDims {
        DenseDims {
            rows: self.spec.steps * self.spec.batch,
            hidden: self.layout().hidden,
            vocab: self.layout().vocab,
        }
    }
}

fn seq_dims(spec: &BackendSpec) -> Result<SeqDims, TrainError> {
    for (what, v) in [("batch", spec.batch), ("steps", spec.steps)] {
        if v == 0 {
            return Err(TrainError::Config(format!("{what} must be at least 1")));
        }
    }
    Ok(SeqDims {
        cell: spec.layout.cell_dims(),
        steps: spec.steps,
        batch: spec.batch,
    })
}

impl<G: Gemm> Backend for CpuBackend<G> {
    fn spec(&self) -> &BackendSpec {
        &self.spec
    }

    fn upload_params(&mut self, params: &[f32]) -> Result<(), TrainError> {
        check_flat("parameters", params.len(), &self.layout())?;
        self.params.copy_from_slice(params);
        Ok(())
    }

    fn download_params(&self, params: &mut [f32]) -> Result<(), TrainError> {
        check_flat("parameters", params.len(), &self.layout())?;
        params.copy_from_slice(&self.params);
        Ok(())
    }

    fn upload_optimizer(&mut self, state: &OptimizerState) -> Result<(), TrainError> {
        if self.spec.optimizer == OptimizerKind::Adam {
            check_flat("Adam exp_avg", state.exp_avg.len(), &self.layout())?;
            check_flat("Adam exp_avg_sq", state.exp_avg_sq.len(), &self.layout())?;
            self.exp_avg.copy_from_slice(&state.exp_avg);
            self.exp_avg_sq.copy_from_slice(&state.exp_avg_sq);
        }
        self.step = state.step;
        Ok(())
    }

    fn download_optimizer(&self) -> Result<OptimizerState, TrainError> {
        Ok(OptimizerState {
            step: self.step,
            exp_avg: self.exp_avg.clone(),
            exp_avg_sq: self.exp_avg_sq.clone(),
        })
    }

    fn reset_state(&mut self) -> Result<(), TrainError> {
        self.state_h.fill(0.0);
        self.state_c.fill(0.0);
        Ok(())
    }

    fn detach_state(&mut self) -> Result<(), TrainError> {
        // The backward of a batch ends at the state it started from
        // (`batch_h0`), so nothing reaches further back: already detached.
        Ok(())
    }

    fn upload_state(&mut self, state: &HiddenState) -> Result<(), TrainError> {
        if state.h.len() != self.state_h.len() || state.c.len() != self.state_c.len() {
            return Err(TrainError::Mismatch(format!(
                "hidden state has {} + {} elements, the model needs {} + {}",
                state.h.len(),
                state.c.len(),
                self.state_h.len(),
                self.state_c.len()
            )));
        }
        self.state_h.copy_from_slice(&state.h);
        self.state_c.copy_from_slice(&state.c);
        Ok(())
    }

    fn download_state(&self) -> Result<HiddenState, TrainError> {
        Ok(HiddenState {
            h: self.state_h.clone(),
            c: self.state_c.clone(),
        })
    }

    fn forward(&mut self, inputs: &[u32], targets: &[u32]) -> Result<(), TrainError> {
        self.forward_done = false;
        let dims = seq_dims(&self.spec)?;
        let dense = self.dense_dims();
        let layout = self.layout();
        check_flat_tokens("inputs", inputs, self.inputs.len())?;
        check_flat_tokens("targets", targets, self.targets.len())?;
        recur_core::error::check_tokens("inputs", inputs, layout.vocab)?;
        recur_core::error::check_tokens("targets", targets, layout.vocab)?;
        self.inputs.copy_from_slice(inputs);
        self.targets.copy_from_slice(targets);
        // The batch starts from the carried state; keep it for backward.
        self.batch_h0.copy_from_slice(&self.state_h);
        self.batch_c0.copy_from_slice(&self.state_c);
        let (cell_params, dense_w, dense_b) = layout.split(&self.params)?;
        cell::sequence_forward(
            &mut self.hs,
            &mut self.c_last,
            Input::Tokens(&self.inputs),
            &self.batch_h0,
            &self.batch_c0,
            cell_params,
            &mut self.cache,
            &mut self.workspace,
            &dims,
            &self.gemm,
        )?;
        output::dense_forward(
            &mut self.logits,
            &self.hs,
            dense_w,
            dense_b,
            &dense,
            &self.gemm,
        )?;
        let loss = softmax_xent_in_halves(&mut self.logits, &self.targets, &dense)?;
        // Carry the final state to the next batch.
        let bh = self.state_h.len();
        self.state_h.copy_from_slice(&self.hs[self.hs.len() - bh..]);
        self.state_c.copy_from_slice(&self.c_last);
        self.forward_done = true;
        self.last_loss = loss;
        self.stats.record_loss(loss, self.targets.len());
        Ok(())
    }

    fn loss(&self) -> Result<f32, TrainError> {
        Ok(self.last_loss)
    }

    fn backward(&mut self) -> Result<(), TrainError> {
        if !self.forward_done {
            return Err(TrainError::Config(
                "backward called without a forward before it".into(),
            ));
        }
        self.forward_done = false;
        let dims = seq_dims(&self.spec)?;
        let dense = self.dense_dims();
        let layout = self.layout();
        output::softmax_xent_backward_in_place(&mut self.logits, &self.targets, &dense)?;
        recur_core::zero(&mut self.grads);
        recur_core::zero(&mut self.dhs);
        recur_core::zero(&mut self.dh0);
        recur_core::zero(&mut self.dc0);
        let (cell_params, dense_w, _) = layout.split(&self.params)?;
        let (mut cell_grads, dense_dw, dense_db) = layout.split_mut(&mut self.grads)?;
        output::dense_backward(
            dense_dw,
            dense_db,
            &mut self.dhs,
            &self.logits,
            &self.hs,
            dense_w,
            &dense,
            &self.gemm,
        )?;
        cell::sequence_backward(
            &mut cell_grads,
            None,
            &mut self.dh0,
            &mut self.dc0,
            &self.dhs,
            Input::Tokens(&self.inputs),
            &self.batch_h0,
            &self.batch_c0,
            cell_params,
            &self.hs,
            &self.cache,
            &mut self.workspace,
            &dims,
            &self.gemm,
        )?;
        if self.spec.freeze_bias_hh {
            self.grads[layout.tensors()[3].range()].fill(0.0);
        }
        Ok(())
    }

    fn clip_grads(&mut self, theta: Option<f32>) -> Result<(), TrainError> {
        let norm = match theta {
            Some(theta) => clip::clip_global_norm(&mut self.grads, theta)?,
            None => clip::global_norm(&self.grads),
        };
        self.last_norm = norm;
        self.stats.record_norm(norm);
        Ok(())
    }

    fn norm(&self) -> Result<f32, TrainError> {
        Ok(self.last_norm)
    }

    fn take_stats(&mut self) -> Result<BatchStats, TrainError> {
        Ok(self.stats.take())
    }

    fn step(&mut self) -> Result<(), TrainError> {
        if self.stats.diverged() {
            // A non-finite loss or norm: keep the last good parameters.
            return Ok(());
        }
        self.step += 1;
        match self.spec.optimizer {
            OptimizerKind::Sgd => {
                optim::sgd_step(&mut self.params, &self.grads, self.spec.lr as f32)?
            }
            OptimizerKind::Adam => optim::adam_step(
                &mut self.params,
                &mut self.exp_avg,
                &mut self.exp_avg_sq,
                &self.grads,
                self.step,
                &AdamConfig {
                    lr: self.spec.lr,
                    ..AdamConfig::default()
                },
            )?,
        }
        Ok(())
    }

    fn generate(
        &mut self,
        prefix: &[u32],
        len: usize,
        decode: Decode,
        rng: &mut TrainRng,
    ) -> Result<Vec<u32>, TrainError> {
        generate_cpu(&self.params, &self.layout(), prefix, len, decode, rng)
    }
}

/// recur-core's softmax cross-entropy forward over the (N, V) logits, in
/// place, on two threads: the rows are cut into two fixed halves (the same
/// cut whatever `--threads` says, so results do not depend on it), each
/// half's mean loss comes from recur-core, and the halves are combined by
/// row count. The exponentials of 1,120 × 1,027 logits per mini-batch are
/// the largest serial part of a training step otherwise.
fn softmax_xent_in_halves(
    logits: &mut [f32],
    targets: &[u32],
    dims: &DenseDims,
) -> Result<f32, TrainError> {
    const MIN_PARALLEL: usize = 1 << 16;
    let rows_a = dims.rows / 2;
    if rows_a == 0 || logits.len() < MIN_PARALLEL {
        return Ok(output::softmax_xent_forward_in_place(
            logits, targets, dims,
        )?);
    }
    recur_core::error::check_len("logits", logits, dims.logits_len())?;
    recur_core::error::check_len("targets", targets, dims.rows)?;
    let rows_b = dims.rows - rows_a;
    let (logits_a, logits_b) = logits.split_at_mut(rows_a * dims.vocab);
    let (targets_a, targets_b) = targets.split_at(rows_a);
    let half = |rows| DenseDims { rows, ..*dims };
    let (loss_a, loss_b) = std::thread::scope(|scope| {
        let worker = scope
            .spawn(|| output::softmax_xent_forward_in_place(logits_b, targets_b, &half(rows_b)));
        let a = output::softmax_xent_forward_in_place(logits_a, targets_a, &half(rows_a));
        let b = worker.join().unwrap_or(Err(recur_core::Error::Value {
            what: "softmax worker",
        }));
        (a, b)
    });
    let total = loss_a? as f64 * rows_a as f64 + loss_b? as f64 * rows_b as f64;
    Ok((total / dims.rows as f64) as f32)
}

fn check_flat_tokens(what: &'static str, ids: &[u32], expected: usize) -> Result<(), TrainError> {
    recur_core::error::check_len(what, ids, expected).map_err(TrainError::from)
}

/// d2l's `predict` on the CPU from a flat parameter buffer: batch 1, zero
/// initial state, the prefix fed one token at a time, then `len` tokens
/// chosen by `decode`, each fed back. Returns prefix + generated ids.
pub fn generate_cpu(
    params: &[f32],
    layout: &ModelLayout,
    prefix: &[u32],
    len: usize,
    decode: Decode,
    rng: &mut TrainRng,
) -> Result<Vec<u32>, TrainError> {
    let Some(&first) = prefix.first() else {
        return Err(TrainError::Config("the prefix may not be empty".into()));
    };
    recur_core::error::check_tokens("prefix", prefix, layout.vocab)?;
    let (cell_params, dense_w, dense_b) = layout.split(params)?;
    let cell_dims = layout.cell_dims();
    let h_len = layout.hidden;
    let c_len = if layout.cell.has_cell_state() {
        h_len
    } else {
        0
    };
    let (mut h, mut h_next) = (vec![0.0f32; h_len], vec![0.0f32; h_len]);
    let (mut c, mut c_next) = (vec![0.0f32; c_len], vec![0.0f32; c_len]);
    let mut workspace = vec![0.0f32; cell::step_workspace_len(&cell_dims, 1)];
    let mut logits = vec![0.0f32; layout.vocab];
    let mut scratch = vec![0.0f32; sample::sample_scratch_len(layout.vocab)];
    let dense = DenseDims {
        rows: 1,
        hidden: h_len,
        vocab: layout.vocab,
    };
    let gemm = recur_core::Portable;
    let mut out = Vec::with_capacity(prefix.len() + len);
    out.push(first);
    for t in 0..prefix.len() + len - 1 {
        let token = [out[out.len() - 1]];
        cell::step_forward(
            &mut h_next,
            &mut c_next,
            Input::Tokens(&token),
            &h,
            &c,
            cell_params,
            &mut workspace,
            &cell_dims,
            1,
        )?;
        std::mem::swap(&mut h, &mut h_next);
        std::mem::swap(&mut c, &mut c_next);
        if t + 1 < prefix.len() {
            out.push(prefix[t + 1]);
            continue;
        }
        output::dense_forward(&mut logits, &h, dense_w, dense_b, &dense, &gemm)?;
        let next = match decode {
            Decode::Greedy => sample::argmax(&logits)?,
            Decode::Sample { temperature, top_k } => {
                sample::sample(&logits, temperature, top_k, rng, &mut scratch)?
            }
        };
        out.push(next as u32);
    }
    Ok(out)
}
