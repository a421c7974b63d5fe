//! The device-independent interface the training loop drives. The CPU
//! implementation ([`super::cpu::CpuBackend`]) sits on recur-core; the GPU
//! engine plugs in by implementing the same trait over resident buffers.
//!
//! A backend owns the parameters, their gradients, the optimizer's state and
//! the carried hidden state; the loop only moves token ids in and scalars
//! out, plus the flat [`ModelLayout`] buffers for checkpoints.

use recur_core::ModelLayout;

use super::config::OptimizerKind;
use super::error::TrainError;
use super::rng::TrainRng;

/// What a backend is built for: the model, the mini-batch shape and the
/// update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendSpec {
    /// The model's parameter layout.
    pub layout: ModelLayout,
    /// Batch rows B of a training mini-batch.
    pub batch: usize,
    /// Time steps T of a training mini-batch.
    pub steps: usize,
    /// The update rule.
    pub optimizer: OptimizerKind,
    /// Its learning rate (f64 like PyTorch's Python float; SGD applies it
    /// as f32).
    pub lr: f64,
    /// Keep `rnn.bias_hh_l0` at its value (zero): the from-scratch models
    /// have one bias per gate (see [`super::config::InitScheme::Scratch`]).
    pub freeze_bias_hh: bool,
}

/// The optimizer's state, for checkpoints.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OptimizerState {
    /// Updates taken so far (Adam's `t`; counted for SGD too).
    pub step: u64,
    /// Adam's first moments, [`ModelLayout::len`] elements; empty for SGD.
    pub exp_avg: Vec<f32>,
    /// Adam's second moments, [`ModelLayout::len`] elements; empty for SGD.
    pub exp_avg_sq: Vec<f32>,
}

/// The carried hidden state, for checkpoints: (B, H) each; `c` is empty
/// unless the cell is an LSTM.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HiddenState {
    /// Hidden state h, (B, H).
    pub h: Vec<f32>,
    /// Cell state c, (B, H), LSTM only.
    pub c: Vec<f32>,
}

/// How the next token is picked during generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decode {
    /// The most likely token (d2l's `predict`: argmax).
    Greedy,
    /// A draw from `softmax(logits / temperature)` over the `top_k` most
    /// likely tokens (`top_k == 0`: all of them).
    Sample {
        /// Softmax temperature (> 0).
        temperature: f32,
        /// Candidates kept; 0 keeps all.
        top_k: usize,
    },
}

/// Sums over the mini-batches since the last [`Backend::take_stats`]: what
/// an epoch's log line needs, gathered where the work happens so that a
/// device backend is waited for once per epoch, not once per batch.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BatchStats {
    /// Σ over batches of (the batch's mean loss × its T·B predictions).
    pub loss_sum: f64,
    /// Σ over batches of the gradients' global norm before clipping
    /// (batches where [`Backend::clip_grads`] ran).
    pub norm_sum: f64,
    /// The first batch (0-based since the last take) whose loss or gradient
    /// norm was NaN or infinite, and that value. From that batch on the
    /// backend applies no update until the stats are taken.
    pub first_non_finite: Option<(u64, f32)>,
}

/// The host-side bookkeeping of [`BatchStats`] for backends that see every
/// loss and norm on the host anyway (the CPU).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StatsAccumulator {
    stats: BatchStats,
    /// Forwards since the last take (the index of the next batch).
    batches: u64,
}

impl StatsAccumulator {
    /// Records a batch's mean loss over `rows` predictions.
    pub(crate) fn record_loss(&mut self, loss: f32, rows: usize) {
        self.stats.loss_sum += loss as f64 * rows as f64;
        self.batches += 1;
        self.check(loss);
    }

    /// Records the current batch's gradient norm.
    pub(crate) fn record_norm(&mut self, norm: f32) {
        self.stats.norm_sum += norm as f64;
        self.check(norm);
    }

    fn check(&mut self, value: f32) {
        if !value.is_finite() && self.stats.first_non_finite.is_none() {
            self.stats.first_non_finite = Some((self.batches.saturating_sub(1), value));
        }
    }

    /// Whether updates are suspended (a non-finite value was seen).
    pub(crate) fn diverged(&self) -> bool {
        self.stats.first_non_finite.is_some()
    }

    /// The sums so far; starts new ones.
    pub(crate) fn take(&mut self) -> BatchStats {
        core::mem::take(self).stats
    }
}

/// One training device.
///
/// The call sequence of a mini-batch is [`forward`](Backend::forward),
/// [`backward`](Backend::backward), [`clip_grads`](Backend::clip_grads),
/// [`step`](Backend::step); [`take_stats`](Backend::take_stats) once per
/// epoch collects the losses and norms. None of these but `take_stats`
/// needs to wait for a device. Token ids are laid out time-major, (T, B):
/// element `t·B + b` is step `t` of row `b`, as d2l's loss sees them after
/// its transpose.
pub trait Backend {
    /// What the backend was built for.
    fn spec(&self) -> &BackendSpec;

    /// Replaces the parameters with `params` ([`ModelLayout::len`] elements,
    /// PyTorch layout).
    fn upload_params(&mut self, params: &[f32]) -> Result<(), TrainError>;

    /// Copies the parameters into `params` ([`ModelLayout::len`] elements).
    fn download_params(&self, params: &mut [f32]) -> Result<(), TrainError>;

    /// Replaces the optimizer's state (resume).
    fn upload_optimizer(&mut self, state: &OptimizerState) -> Result<(), TrainError>;

    /// The optimizer's state (checkpoint).
    fn download_optimizer(&self) -> Result<OptimizerState, TrainError>;

    /// Sets the carried hidden state to zeros.
    fn reset_state(&mut self) -> Result<(), TrainError>;

    /// Cuts the graph at the carried state: the next mini-batch's gradients
    /// stop there (d2l's `detach`). Backends whose backward never reaches
    /// past a batch's initial state implement it as a no-op.
    fn detach_state(&mut self) -> Result<(), TrainError>;

    /// Replaces the carried hidden state (resume).
    fn upload_state(&mut self, state: &HiddenState) -> Result<(), TrainError>;

    /// The carried hidden state (checkpoint).
    fn download_state(&self) -> Result<HiddenState, TrainError>;

    /// Runs a mini-batch forward from the carried state, which it advances
    /// to the batch's final state; its mean softmax cross-entropy goes into
    /// the [`BatchStats`]. `inputs`, `targets`: (T, B) token ids.
    fn forward(&mut self, inputs: &[u32], targets: &[u32]) -> Result<(), TrainError>;

    /// The last forward's mean loss (a device backend waits for it).
    fn loss(&self) -> Result<f32, TrainError>;

    /// [`forward`](Backend::forward), then [`loss`](Backend::loss).
    fn forward_loss(&mut self, inputs: &[u32], targets: &[u32]) -> Result<f32, TrainError> {
        self.forward(inputs, targets)?;
        self.loss()
    }

    /// Sets the gradients to those of the last [`forward`](Backend::forward).
    fn backward(&mut self) -> Result<(), TrainError>;

    /// Computes the gradients' global L2 norm (into the [`BatchStats`]);
    /// with `Some(theta)` the gradients are then scaled to norm θ if it is
    /// larger (d2l's `grad_clipping`).
    fn clip_grads(&mut self, theta: Option<f32>) -> Result<(), TrainError>;

    /// The norm before clipping of the last [`clip_grads`](Backend::clip_grads)
    /// (a device backend waits for it).
    fn norm(&self) -> Result<f32, TrainError>;

    /// [`clip_grads`](Backend::clip_grads), then [`norm`](Backend::norm).
    fn clip(&mut self, theta: Option<f32>) -> Result<f32, TrainError> {
        self.clip_grads(theta)?;
        self.norm()
    }

    /// Applies the update rule to the parameters, unless a loss or norm
    /// since the last [`take_stats`](Backend::take_stats) was not finite:
    /// then the parameters and the optimizer's moments stay as they were.
    fn step(&mut self) -> Result<(), TrainError>;

    /// The sums since the last call (or since the backend was made), and
    /// new ones started; updates resume.
    fn take_stats(&mut self) -> Result<BatchStats, TrainError>;

    /// d2l's `predict`: from a zero state, feeds `prefix`, then appends
    /// `len` tokens each chosen by `decode` from the output after the
    /// previous one. Returns prefix + generated ids. Leaves the carried
    /// training state untouched.
    fn generate(
        &mut self,
        prefix: &[u32],
        len: usize,
        decode: Decode,
        rng: &mut TrainRng,
    ) -> Result<Vec<u32>, TrainError>;
}

/// Checks a flat buffer's length against the layout.
pub(crate) fn check_flat(
    what: &str,
    buf_len: usize,
    layout: &ModelLayout,
) -> Result<(), TrainError> {
    if buf_len == layout.len() {
        Ok(())
    } else {
        Err(TrainError::Config(format!(
            "{what} has {buf_len} elements, the model has {}",
            layout.len()
        )))
    }
}
