//! Training on the GPU, f32 or f16 storage: a language model's parameters, gradients and
//! optimizer state resident on the device, one mini-batch's forward (with
//! the cache its backward needs), backward through time, global-norm
//! clipping, SGD and Adam, all queued on the GPU's streams (kernels in
//! `ptx/src/train.cu`) without a host wait: tokens go up through
//! page-locked staging ([`staging`]), and the loss and norm stay on the
//! device, summed until [`DeviceTrainer::take_stats`] (the one wait).
//!
//! The time loops, each direction, take the first form that fits (where
//! allowed): thread-block clusters (sm_90, [`ClusterLoops`]; one launch,
//! the CTAs of a cluster share h or the gate gradients through distributed
//! shared memory, one mbarrier-counted exchange per step, ptx/src/train_cluster.cu;
//! where they take the layer, the forward for every cell and the backward
//! for the RNN cells hold W_hh in registers instead,
//! ptx/src/train_cluster_regs.cuh, [`TimeLoop::ClusterRegs`];
//! [`DeviceTrainer::set_mma_forward`] lets the forward take the same with
//! the product on tensor cores, ptx/src/train_cluster_mma.cuh,
//! [`TimeLoop::ClusterMma`];
//! [`DeviceTrainer::set_reduce_scatter_backward`] gives the GRU and LSTM
//! backward a reduce-scatter exchange instead of the gather,
//! ptx/src/train_cluster_rs.cuh, [`TimeLoop::ClusterReduce`]),
//! a cooperative persistent kernel (one launch, a grid barrier per step;
//! not GRU reset-before; in f16 with the product on tensor cores,
//! [`TimeLoop::PersistentMma`], where the CUDA-core one does not fit or
//! where asked by [`DeviceTrainer::set_mma_forward`] and
//! [`DeviceTrainer::set_mma_backward`], ptx/src/train_mma.cu), or one
//! launch per step (two for GRU reset-before) with the recurrent product
//! and the cell fused.
//! [`DeviceTrainer::set_persistent`]`(false)` forces the per-step form,
//! [`DeviceTrainer::set_cluster`] allows, forbids or requires the
//! clusters, and [`DeviceTrainer::time_loops`] says which form the last
//! forward and backward took. The weight gradients are formed after the
//! time loop as products over all T·B rows (the input weights' as each
//! token's column summed over its rows), on tensor cores at f32 accuracy
//! (3xTF32, `ptx/src/train_gemm.cuh`). No kernel adds floats atomically:
//! the same inputs give the same gradients, bit for bit.
//!
//! [`DeviceCellTrainer`] (dense.rs) trains a bare cell on dense inputs
//! through the same time loops: the input projections of all steps are one
//! product before the loop, stored where the loops gather a token's W_ih
//! column.
//!
//! Two streams: what the time loops do not wait for (W_hhᵀ, the output
//! layer's weight gradients, the bias sums, dW_ih, the mean loss)
//! runs on the GPU's low-priority side stream beside them
//! (`beside` in launch.rs); the backward ends joined to it,
//! and clip, the updates and the next forward join it first.
//!
//! Precision ([`DeviceTrainer::new_with_precision`]): in f16 mode the
//! parameters, gradients, Adam's moments, clipping and the updates stay
//! f32 (the masters); the weights the products read (W_ih for the token
//! gather, W_hh and its transpose, the output layer's W) are read from an
//! f16 mirror of the masters, rewritten on the device by the update kernels
//! in the same pass (and after an upload); the saved activations the
//! backward reads (hidden states, gates, the gate cache) are stored in f16.
//! Every product and sum accumulates in f32, and the LSTM cell state, the
//! logits and their gradient, the loss and every gradient are f32: the
//! gradient of the mean loss, (p − onehot)/(T·B), is of order 1/(T·B·V)
//! and would fall into f16's subnormals. Both the persistent and the
//! per-step time loops have f16 forms (the same kernels instantiated on
//! the storage type).

mod backward;
mod cluster;
mod dense;
mod forward;
mod launch;
mod optim;
mod persist_mma;
mod probe;
mod staging;
mod stats;
mod store;
mod timing;

use std::cell::{Cell, RefCell};

use cust::memory::{DeviceBuffer, DeviceCopy, DeviceSlice};
use recur_core::optim::AdamConfig;
use recur_core::{CellKind, ModelLayout};

use crate::error::Error;
use crate::gpu::{Gpu, Lane, StreamEvent};
use crate::half::F16;
use crate::mem::{alloc, download, elems, fill32, upload};
use crate::plan::Precision;
use cluster::ClusterPlan;
pub use cluster::{has_reduce_scatter_backward, ClusterLoops, TimeLoop};
pub use dense::DeviceCellTrainer;
use launch::{elementwise, f32_at, step_chunk, Arg, Gemm, COLSUM_CHUNK, MAX_SPLITS};
pub use persist_mma::{persistent_mma_takes, ForwardSync};
#[doc(hidden)]
pub use probe::ProductOperands;
use staging::TokenRing;
pub use stats::TrainStats;
use stats::STATS_WORDS;
use store::{f16_at, Stored};
use timing::{Mark, PhaseTimer};
pub use timing::{StepTimes, STEP_PHASES};

fn addr<T: DeviceCopy>(buf: &DeviceSlice<T>) -> u64 {
    crate::mem::addr(buf)
}

/// The update rule of a [`DeviceTrainer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainOptimizer {
    /// Plain SGD.
    Sgd,
    /// Adam (keeps two moment buffers).
    Adam,
}

/// Blocks of the per-step kernels: hidden units per block (ptx/src/
/// train_step.cuh: TS_JF, TS_JB) and batch rows per block.
const STEP_UNITS_FWD: usize = 2;
const STEP_UNITS_BWD: usize = 4;
const STEP_ROWS: usize = 32;
/// Weight rows per block of the per-step kernels (up to 4 gates × units).
const STEP_W_ROWS_FWD: usize = 4 * STEP_UNITS_FWD;
const STEP_W_ROWS_BWD: usize = STEP_UNITS_BWD;
/// Whether a new trainer runs its time loops on clusters where they fit
/// ([`ClusterLoops::IfFits`]).
const CLUSTER_DEFAULT: ClusterLoops = ClusterLoops::IfFits;

/// A language model (cell + output layer) in training on the GPU.
pub struct DeviceTrainer {
    layout: ModelLayout,
    batch: usize,
    steps: usize,
    optimizer: TrainOptimizer,
    /// Storage of the weights the products read and of the saved activations.
    precision: Precision,
    /// (P) parameters, recur-core's flat layout (the f32 masters).
    params: DeviceBuffer<f32>,
    /// (P) their f16 mirror (f16 mode; the kernels read its W_ih, W_hh, W_d).
    params_f16: Option<DeviceBuffer<F16>>,
    /// (P) gradients of the last backward.
    grads: DeviceBuffer<f32>,
    /// (P) each: Adam's moments (one element for SGD).
    exp_avg: DeviceBuffer<f32>,
    exp_avg_sq: DeviceBuffer<f32>,
    /// The last forward's inputs (T, B), targets (T, B), and rows grouped
    /// by input token (staging.rs): one buffer, one upload; `token_addrs`.
    tokens: DeviceBuffer<u32>,
    /// (T·B, G·H) post-activation gates (storage type).
    gates: Stored,
    /// (T·B, H) W_hn·h + b_hn (GRU reset-after), r⊙h (reset-before), tanh c
    /// (LSTM) (storage type).
    aux: Stored,
    /// ((T+1)·B, H): slot 0 the batch's initial h, slot t+1 step t's h
    /// (storage type).
    hcat: Stored,
    /// ((T+1)·B, H): the same for the LSTM cell state (f32).
    ccat: DeviceBuffer<f32>,
    /// (B, H) the carried state.
    state_h: DeviceBuffer<f32>,
    state_c: DeviceBuffer<f32>,
    /// Whether the carried state is still the last forward's last slot of
    /// `hcat` / `ccat` rather than `state_h` / `state_c`: the next forward
    /// copies it to slot 0 from there, a reader has it copied out first
    /// (forward.rs, `settle_carried_state`), a new state replaces it.
    carried_in_last_slot: Cell<bool>,
    /// (T·B, V) logits, then the gradient of the mean loss.
    logits: DeviceBuffer<f32>,
    /// (T·B) per-row losses and (1) their mean.
    row_loss: DeviceBuffer<f32>,
    loss: DeviceBuffer<f32>,
    /// (T·B, H) gradient on every h.
    dhs: DeviceBuffer<f32>,
    /// (B, H) gradient on the LSTM cell state.
    dc: DeviceBuffer<f32>,
    /// (T·B, G·H) pre-activation gradients, input and recurrent side.
    dih: DeviceBuffer<f32>,
    dhh: DeviceBuffer<f32>,
    /// (H, G·H) W_hhᵀ, refreshed by every backward (storage type).
    w_hh_t: Stored,
    /// Partial products of split-K and partial column sums: of the main
    /// stream's work, and of the side stream's (backward.rs).
    work: DeviceBuffer<f32>,
    work_side: DeviceBuffer<f32>,
    /// Arrival words of the kernels whose last block finishes their work
    /// (a tile of a split product, a column strip of a sum, the norm; zero
    /// between launches): the main stream's, and the side stream's.
    arrivals: DeviceBuffer<u32>,
    arrivals_side: DeviceBuffer<u32>,
    /// The stream the launches, copies and fills queued now go to.
    lane: Cell<Lane>,
    /// The events that fork work onto the side stream and join it back.
    fork_event: StreamEvent,
    join_event: StreamEvent,
    /// Recorded on the side stream after the backward's W_hhᵀ.
    transposed: StreamEvent,
    /// The persistent kernels' grid barrier (64 words, zeroed once).
    barrier: DeviceBuffer<u32>,
    /// Whether the persistent time loops may be used (where they fit).
    persistent: bool,
    /// Whether the cluster time loops may or must be used.
    cluster: ClusterLoops,
    /// Whether the forward may use the register cluster kernel.
    register_loops: bool,
    /// Whether the cluster backward takes the reduce-scatter kernel.
    reduce_scatter: bool,
    /// Whether the forward takes its tensor-core kernels where a CUDA-core
    /// one fits too ([`Self::set_mma_forward`]).
    mma_forward: bool,
    /// Whether the products take the ring kernels (`tr_gemm_ring*`).
    ring_products: bool,
    /// The cluster plans (forward, backward), made at first need.
    cluster_plans: Cell<Option<[Option<ClusterPlan>; 2]>>,
    /// Whether the backward takes its tensor-core persistent kernel where
    /// the CUDA-core one fits too ([`Self::set_mma_backward`]).
    mma_backward: bool,
    /// The hidden units per block the persistent tensor-core loops must
    /// take (none: the fewest that fit; [`Self::set_mma_units`]).
    mma_units: Option<usize>,
    /// The persistent tensor-core loops' plans, forward and backward
    /// (none: it does not fit), each made at first need.
    mma_plans: Cell<[Option<Option<persist_mma::MmaLoopPlan>>; 2]>,
    /// The tensor-core backward's partial products, made at first need.
    mma_partials: RefCell<Option<DeviceBuffer<f32>>>,
    /// How the tensor-core forward's blocks wait for each other's h
    /// ([`Self::set_forward_sync`]).
    forward_sync: ForwardSync,
    /// Its flags (one word per block, or the flagged words: (2, B, H / 2)
    /// u64) and their epochs, remade when the form changes.
    forward_flags: persist_mma::FlagWords,
    /// Whether the tensor-core backward waits on per-block flags instead
    /// of a grid barrier ([`Self::set_flagged_backward`]).
    flagged_backward: bool,
    /// Its flag words (one per block) and their epochs
    /// (ptx/src/train_mma_bwd.cuh).
    backward_flags: persist_mma::FlagWords,
    /// The form of the last forward's and backward's time loop.
    loops: Cell<(TimeLoop, TimeLoop)>,
    /// The clip's per-block partial sums of g² (f64; one per block it
    /// may launch), the global norm, and the factor the updates scale the
    /// gradients by.
    norm_partials: DeviceBuffer<f64>,
    norm: DeviceBuffer<f32>,
    clip_scale: DeviceBuffer<f32>,
    /// Whether the gradients in memory still lack the last clip's factor
    /// (optim.rs): the updates apply it as they read them, other readers
    /// have them scaled first, a backward rewrites them.
    clip_pending: Cell<bool>,
    /// The statistics record (stats.rs), zeroed by every take.
    stats: DeviceBuffer<u64>,
    /// Forward calls since the last take.
    batches: u64,
    /// Whether the logits hold the gradient of a forward not yet backed.
    forward_done: bool,
    /// Device operations (launches, copies, fills) queued so far.
    ops: Cell<u64>,
    /// Whether this is a [`DeviceCellTrainer`]'s: a bare cell on dense
    /// inputs, no output layer, `layout.vocab` the input size.
    dense_input: bool,
    /// Page-locked token staging (before `gpu`: freed in the context).
    staging: TokenRing,
    /// The phase timer's events, where on (before `gpu`, as `staging`).
    phase_timer: Option<PhaseTimer>,
    // Last: the context outlives the buffers above.
    gpu: Gpu,
}

impl DeviceTrainer {
    /// Allocates every buffer for `batch` × `steps` mini-batches of the
    /// model `layout`, f32 throughout; parameters and state start at zero.
    pub fn new(
        gpu: &Gpu,
        layout: ModelLayout,
        batch: usize,
        steps: usize,
        optimizer: TrainOptimizer,
    ) -> Result<DeviceTrainer, Error> {
        Self::new_with_precision(gpu, layout, batch, steps, optimizer, Precision::F32)
    }

    /// [`DeviceTrainer::new`] with the storage `precision` of the weights
    /// the products read and of the saved activations (module docs:
    /// [`Precision::F16`] keeps f32 masters, gradients, moments, logits and
    /// loss, and accumulates in f32).
    pub fn new_with_precision(
        gpu: &Gpu,
        layout: ModelLayout,
        batch: usize,
        steps: usize,
        optimizer: TrainOptimizer,
        precision: Precision,
    ) -> Result<DeviceTrainer, Error> {
        Self::build(gpu, layout, batch, steps, optimizer, precision, false)
    }

    /// [`Self::new_with_precision`]; with `dense`, for a bare cell fed
    /// dense vectors of `layout.vocab` (dense.rs): no logits buffer, the
    /// tokens the identity.
    fn build(
        gpu: &Gpu,
        layout: ModelLayout,
        batch: usize,
        steps: usize,
        optimizer: TrainOptimizer,
        precision: Precision,
        dense: bool,
    ) -> Result<DeviceTrainer, Error> {
        layout.validate()?;
        for (what, value) in [("batch", batch), ("steps", steps)] {
            if value == 0 {
                return Err(recur_core::Error::Dim { what, value }.into());
            }
        }
        gpu.bind()?;
        let p = layout.len();
        let (h, v) = (layout.hidden, layout.vocab);
        let gh = layout.cell_dims().gate_rows();
        let tb = recur_core::error::mul("steps", steps, batch)?;
        // Element counts saturate (`elems`): one beyond memory fails its
        // allocation as out of memory, it does not wrap.
        let n = |a: usize, b: usize| elems(&[a, b]);
        let bh = n(batch, h);
        let lstm = layout.cell == CellKind::Lstm;
        let moments = if optimizer == TrainOptimizer::Adam {
            p
        } else {
            1
        };
        // The largest product output (dW_d, dhs, dW_hh, logits are not
        // split: they have tiles enough or fall under these) times the
        // splits, and the column sums' partials.
        let work_len = n(MAX_SPLITS, n(v, h).max(n(gh, h)).max(n(tb, h)))
            .max(n(tb.div_ceil(COLSUM_CHUNK), v.max(gh)));
        // Arrival words: one per tile of a split product (split only while
        // the tiles are fewer than the SMs), per 32 columns of a column sum,
        // one for the norm.
        let arrival_words = gpu
            .limits()
            .sm_count
            .max(v.div_ceil(32))
            .max(gh.div_ceil(32))
            .max(1);
        let mut t = DeviceTrainer {
            layout,
            batch,
            steps,
            optimizer,
            precision,
            params: alloc(p, "parameters")?,
            params_f16: match precision {
                Precision::F32 => None,
                Precision::F16 => Some(alloc(p, "f16 parameter mirror")?),
            },
            grads: alloc(p, "gradients")?,
            exp_avg: alloc(moments, "Adam exp_avg")?,
            exp_avg_sq: alloc(moments, "Adam exp_avg_sq")?,
            tokens: alloc(staging::upload_len(tb, v), "inputs and targets")?,
            gates: Stored::new(n(tb, gh), precision, "gates")?,
            aux: Stored::new(n(tb, h), precision, "gate cache")?,
            hcat: Stored::new(n(tb.saturating_add(batch), h), precision, "hidden states")?,
            ccat: alloc(
                if lstm {
                    n(tb.saturating_add(batch), h)
                } else {
                    1
                },
                "cell states",
            )?,
            state_h: alloc(bh, "carried h")?,
            state_c: alloc(bh, "carried c")?,
            carried_in_last_slot: Cell::new(false),
            logits: alloc(if dense { 1 } else { n(tb, v) }, "logits")?,
            row_loss: alloc(tb, "row losses")?,
            loss: alloc(1, "loss")?,
            dhs: alloc(n(tb, h), "hidden-state gradients")?,
            dc: alloc(bh, "cell-state gradient")?,
            dih: alloc(n(tb, gh), "input-side gate gradients")?,
            dhh: alloc(n(tb, gh), "recurrent-side gate gradients")?,
            w_hh_t: Stored::new(n(h, gh), precision, "transposed recurrent weights")?,
            work: alloc(work_len, "product workspace")?,
            work_side: alloc(work_len, "side product workspace")?,
            arrivals: alloc(arrival_words, "split-product arrivals")?,
            arrivals_side: alloc(arrival_words, "side split-product arrivals")?,
            lane: Cell::new(Lane::Main),
            fork_event: gpu.event()?,
            join_event: gpu.event()?,
            transposed: gpu.event()?,
            barrier: alloc(crate::mem::BARRIER_WORDS, "grid barrier")?,
            persistent: true,
            cluster: CLUSTER_DEFAULT,
            register_loops: true,
            reduce_scatter: false,
            mma_forward: false,
            ring_products: true,
            cluster_plans: Cell::new(None),
            mma_backward: false,
            mma_units: None,
            mma_plans: Cell::new([None, None]),
            mma_partials: RefCell::new(None),
            forward_sync: ForwardSync::GridBarrier,
            forward_flags: Default::default(),
            flagged_backward: false,
            backward_flags: Default::default(),
            loops: Cell::new((TimeLoop::PerStep, TimeLoop::PerStep)),
            norm_partials: alloc(2 * gpu.limits().sm_count.max(1), "norm partials")?,
            norm: alloc(1, "norm")?,
            clip_scale: alloc(1, "clip factor")?,
            clip_pending: Cell::new(false),
            stats: alloc(STATS_WORDS, "training statistics")?,
            batches: 0,
            forward_done: false,
            ops: Cell::new(0),
            dense_input: dense,
            staging: TokenRing::new(if dense { 1 } else { tb }, if dense { 1 } else { v })?,
            phase_timer: None,
            gpu: gpu.clone(),
        };
        for b in [
            &mut t.params,
            &mut t.grads,
            &mut t.exp_avg,
            &mut t.exp_avg_sq,
            &mut t.state_h,
            &mut t.state_c,
            &mut t.ccat,
            &mut t.loss,
            &mut t.norm,
        ] {
            fill32(gpu, b, 0)?;
        }
        fill32(gpu, &mut t.arrivals, 0)?;
        fill32(gpu, &mut t.arrivals_side, 0)?;
        fill32(gpu, &mut t.barrier, 0)?;
        t.zero(addr(&t.stats), STATS_WORDS * 2)?;
        t.refresh_mirror()?;
        if dense {
            // Row (t, b) reads column t·B + b of the input projections.
            let rows: Vec<u32> = (0..tb as u32).collect();
            upload(gpu, &mut t.tokens, &rows, "input rows")?;
        }
        Ok(t)
    }

    /// The storage precision chosen at construction.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// `name` of ptx/src/train.cu for this trainer's storage: the f32
    /// kernel, or the `_f16` instance.
    fn kernel(&self, f32_name: &'static str, f16_name: &'static str) -> &'static str {
        match self.precision {
            Precision::F32 => f32_name,
            Precision::F16 => f16_name,
        }
    }

    /// The f16 mirror's address (0 in f32 mode: the update kernels skip it).
    fn mirror_addr(&self) -> u64 {
        self.params_f16.as_ref().map_or(0, |m| addr(m))
    }

    /// Queues the f16 mirror's rewrite from the masters (f16 mode).
    fn refresh_mirror(&self) -> Result<(), Error> {
        if self.precision == Precision::F32 {
            return Ok(());
        }
        let n = self.layout.len();
        self.launch(
            "tr_to_f16",
            elementwise(n),
            &[
                Arg::Ptr(self.mirror_addr()),
                Arg::Ptr(addr(&self.params)),
                Arg::I64(n as i64),
            ],
        )
    }

    /// Queues `n` carried f32 values at `src` into the storage slot `dst`
    /// (a copy, or the rounding to f16).
    fn state_in(&self, dst: u64, src: u64, n: usize) -> Result<(), Error> {
        match self.precision {
            Precision::F32 => self.copy(dst, src, n),
            Precision::F16 => self.launch(
                "tr_to_f16",
                elementwise(n),
                &[Arg::Ptr(dst), Arg::Ptr(src), Arg::I64(n as i64)],
            ),
        }
    }

    /// Queues `n` stored values at `src` into the carried f32 `dst`.
    fn state_out(&self, dst: u64, src: u64, n: usize) -> Result<(), Error> {
        match self.precision {
            Precision::F32 => self.copy(dst, src, n),
            Precision::F16 => self.launch(
                "tr_from_f16",
                elementwise(n),
                &[Arg::Ptr(dst), Arg::Ptr(src), Arg::I64(n as i64)],
            ),
        }
    }

    /// The product operands for an f32 or stored A (B is always stored).
    fn gemm_operands(&self, a_stored: bool) -> ProductOperands {
        match (self.precision, a_stored) {
            (Precision::F32, _) => ProductOperands::F32,
            (Precision::F16, true) => ProductOperands::F16,
            (Precision::F16, false) => ProductOperands::F32F16,
        }
    }

    /// The model's layout.
    pub fn layout(&self) -> ModelLayout {
        self.layout
    }

    /// Batch rows B.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Time steps T.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The GPU.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Device operations (kernel launches, copies, fills) queued since the
    /// trainer was made: the benchmarks' launches per step.
    pub fn device_ops(&self) -> u64 {
        self.ops.get()
    }

    /// Allows (default) or forbids the persistent time loops (one
    /// cooperative launch per direction, the weights kept on chip) where
    /// they fit; forbidden, every step is its own launch (tests compare
    /// both).
    pub fn set_persistent(&mut self, allowed: bool) {
        self.persistent = allowed;
    }

    /// Allows (default: [`ClusterLoops::IfFits`]), forbids or requires the
    /// thread-block-cluster time loops (sm_90); with persistent loops
    /// forbidden ([`Self::set_persistent`]) every step is its own launch
    /// whatever this says.
    pub fn set_cluster(&mut self, mode: ClusterLoops) {
        self.cluster = mode;
    }

    /// Whether the forward may take the cluster kernel with W_hh in
    /// registers where it fits (default true; tests turn it off to run the
    /// shared-memory cluster forward).
    pub fn set_register_loops(&mut self, allowed: bool) {
        self.register_loops = allowed;
        self.cluster_plans.set(None);
    }

    /// Whether the cluster backward of the GRUs and the LSTM takes the
    /// reduce-scatter kernel ([`TimeLoop::ClusterReduce`]: G times fewer
    /// bytes exchanged per step than the gather, the same products; other
    /// cells keep their kernel). Default false until a GPU has timed it
    /// against the gather (docs/gpu-pending.md).
    pub fn set_reduce_scatter_backward(&mut self, on: bool) {
        self.reduce_scatter = on;
        self.cluster_plans.set(None);
    }

    /// Whether the forward takes its tensor-core kernels where a CUDA-core
    /// one fits too: the cluster forward ([`TimeLoop::ClusterMma`], every
    /// cell, H ≤ 256, at most 8 batch rows per cluster; W_hh in registers
    /// as mma fragments, f32 through 3×TF32) before the register kernel,
    /// and without clusters the persistent one ([`TimeLoop::PersistentMma`],
    /// f16) before the CUDA-core persistent loop. Default false until a GPU
    /// has timed them against those kernels (docs/gpu-pending.md); where
    /// no CUDA-core persistent loop fits, the forward takes
    /// `PersistentMma` either way rather than a launch per step.
    pub fn set_mma_forward(&mut self, on: bool) {
        self.mma_forward = on;
        self.cluster_plans.set(None);
    }

    /// Whether the backward takes its persistent tensor-core kernel
    /// ([`TimeLoop::PersistentMma`], f16, every cell but GRU reset-before:
    /// each block's partial products of every unit's dh reduced through L2)
    /// where the CUDA-core persistent loop fits too. Default false until a
    /// GPU has timed the two (docs/gpu-pending.md); where no CUDA-core
    /// persistent loop fits, the backward takes `PersistentMma` either way
    /// rather than a launch per step. The cluster loops come first.
    pub fn set_mma_backward(&mut self, on: bool) {
        self.mma_backward = on;
    }

    /// How the persistent tensor-core forward's blocks wait for each
    /// other's h_t: a grid barrier per step (the default), per-block
    /// flags, or h_t in flagged words ([`ForwardSync`]). Not yet timed on
    /// a GPU (docs/gpu-pending.md); the cell benchmark prints all three.
    pub fn set_forward_sync(&mut self, sync: ForwardSync) {
        if sync != self.forward_sync {
            // One form's words are not the other's flags.
            self.forward_flags = persist_mma::FlagWords::default();
        }
        self.forward_sync = sync;
    }

    /// Whether the persistent tensor-core backward waits on each source
    /// block's flag (a release store per block and step, acquire polls by
    /// its readers) instead of a grid barrier per step. Default false: not
    /// yet timed on a GPU (docs/gpu-pending.md); the cell benchmark prints
    /// both.
    pub fn set_flagged_backward(&mut self, on: bool) {
        self.flagged_backward = on;
    }

    /// The hidden units per block of the persistent tensor-core loops
    /// (4, 8, 16 or 32; `None`, the default: the fewest whose blocks are
    /// all resident). A count the kernels' limits refuse leaves a loop
    /// without its tensor-core form. For the benchmark's sweep.
    #[doc(hidden)]
    pub fn set_mma_units(&mut self, units: Option<usize>) {
        self.mma_units = units;
        self.mma_plans.set([None, None]);
    }

    /// Whether the products (logits, dhs, every weight gradient) take the
    /// ring kernels (default true): each thread's share of a k slice copied
    /// by cp.async 3 slices ahead of the one being multiplied, one block
    /// barrier per slice (ptx/src/train_gemm_ring.cuh), instead of
    /// `tr_gemm`'s one slice ahead in registers and two barriers. The same
    /// C bit for bit. Not yet timed on a GPU (docs/gpu-pending.md); the
    /// benchmark times both.
    pub fn set_ring_products(&mut self, on: bool) {
        self.ring_products = on;
    }

    /// Whether the products take the ring kernels.
    pub fn ring_products(&self) -> bool {
        self.ring_products
    }

    /// The form the last forward's and backward's time loops took.
    pub fn time_loops(&self) -> (TimeLoop, TimeLoop) {
        self.loops.get()
    }

    /// The cluster plan of the forward or backward loop, if the loops may
    /// run on clusters and fit; an error where they are required and do not.
    fn cluster_plan(&self, backward: bool) -> Result<Option<ClusterPlan>, Error> {
        if !self.persistent || self.cluster == ClusterLoops::Never {
            return Ok(None);
        }
        let plans = match self.cluster_plans.get() {
            Some(p) => p,
            None => {
                let l = self.layout;
                let p = self.precision;
                let opts = cluster::LoopOptions {
                    registers: self.register_loops,
                    mma_forward: self.mma_forward,
                    reduce_scatter: self.reduce_scatter,
                };
                let of = |bwd| cluster::plan(&self.gpu, l.cell, l.hidden, self.batch, p, bwd, opts);
                let plans = if self.gpu.limits().cluster == 0 {
                    [None, None]
                } else {
                    [of(false)?, of(true)?]
                };
                self.cluster_plans.set(Some(plans));
                plans
            }
        };
        let plan = plans[usize::from(backward)];
        if plan.is_none() && self.cluster == ClusterLoops::Required {
            return Err(Error::Mismatch {
                what: "cluster time loop",
                expected: "a device with thread-block clusters and a layer that fits".to_owned(),
                actual: format!(
                    "none for H={} B={} on {}",
                    self.layout.hidden,
                    self.batch,
                    self.gpu.name()
                ),
            });
        }
        Ok(plan)
    }

    /// Records the form of the forward's (`backward` false) or backward's loop.
    fn note_loop(&self, backward: bool, form: TimeLoop) {
        let (f, b) = self.loops.get();
        self.loops.set(if backward { (f, form) } else { (form, b) });
    }

    /// Whether the time loops run persistent: allowed, a cell with one
    /// phase per step, the product in one shared-memory chunk, every block
    /// resident at once.
    fn use_persistent(
        &self,
        kernel: &'static str,
        blocks: usize,
        k: usize,
        smem_kc: (usize, usize),
    ) -> Result<bool, Error> {
        let lim = self.gpu.limits();
        if !self.persistent
            || self.layout.cell == CellKind::GruResetBefore
            || !lim.cooperative
            || smem_kc.0 < k
        {
            return Ok(false);
        }
        let per_sm = self.gpu.blocks_per_sm(kernel, smem_kc.1)?;
        Ok(blocks <= per_sm * lim.sm_count)
    }

    /// Replaces the parameters ([`ModelLayout::len`] elements).
    pub fn upload_params(&mut self, flat: &[f32]) -> Result<(), Error> {
        recur_core::error::check_len("parameters", flat, self.layout.len())?;
        upload(&self.gpu, &mut self.params, flat, "parameters")?;
        self.refresh_mirror()
    }

    /// The parameters ([`ModelLayout::len`] elements).
    pub fn download_params(&self) -> Result<Vec<f32>, Error> {
        download(&self.gpu, &self.params, self.layout.len())
    }

    /// The gradients of the last backward (after clipping, if any).
    pub fn download_grads(&self) -> Result<Vec<f32>, Error> {
        self.grads_to_host(self.layout.len())
    }

    /// The first `len` gradients, a pending clip applied first.
    pub(super) fn grads_to_host(&self, len: usize) -> Result<Vec<f32>, Error> {
        self.gpu.bind()?;
        self.apply_pending_clip()?;
        download(&self.gpu, &self.grads, len)
    }

    /// Replaces Adam's moments (each [`ModelLayout::len`] elements).
    pub fn upload_moments(&mut self, exp_avg: &[f32], exp_avg_sq: &[f32]) -> Result<(), Error> {
        self.expect_adam()?;
        let p = self.layout.len();
        recur_core::error::check_len("Adam exp_avg", exp_avg, p)?;
        recur_core::error::check_len("Adam exp_avg_sq", exp_avg_sq, p)?;
        upload(&self.gpu, &mut self.exp_avg, exp_avg, "Adam exp_avg")?;
        upload(
            &self.gpu,
            &mut self.exp_avg_sq,
            exp_avg_sq,
            "Adam exp_avg_sq",
        )
    }

    /// Adam's moments.
    pub fn download_moments(&self) -> Result<(Vec<f32>, Vec<f32>), Error> {
        self.expect_adam()?;
        let p = self.layout.len();
        Ok((
            download(&self.gpu, &self.exp_avg, p)?,
            download(&self.gpu, &self.exp_avg_sq, p)?,
        ))
    }

    fn expect_adam(&self) -> Result<(), Error> {
        if self.optimizer == TrainOptimizer::Adam {
            Ok(())
        } else {
            Err(Error::Mismatch {
                what: "optimizer",
                expected: "Adam (moments)".to_owned(),
                actual: format!("{:?}", self.optimizer),
            })
        }
    }

    /// Replaces the carried (B, H) state; `c` is ignored unless LSTM.
    pub fn upload_state(&mut self, h: &[f32], c: &[f32]) -> Result<(), Error> {
        let bh = self.batch * self.layout.hidden;
        recur_core::error::check_len("hidden state h", h, bh)?;
        if self.layout.cell == CellKind::Lstm {
            recur_core::error::check_len("cell state c", c, bh)?;
        }
        self.carried_in_last_slot.set(false);
        upload(&self.gpu, &mut self.state_h, h, "carried h")?;
        if self.layout.cell == CellKind::Lstm {
            upload(&self.gpu, &mut self.state_c, c, "carried c")?;
        }
        Ok(())
    }

    /// The carried state: h (B, H) and c (B, H, empty unless LSTM).
    pub fn download_state(&self) -> Result<(Vec<f32>, Vec<f32>), Error> {
        let bh = self.batch * self.layout.hidden;
        self.gpu.bind()?;
        self.settle_carried_state()?;
        let h = download(&self.gpu, &self.state_h, bh)?;
        let c = if self.layout.cell == CellKind::Lstm {
            download(&self.gpu, &self.state_c, bh)?
        } else {
            Vec::new()
        };
        Ok((h, c))
    }

    /// The hidden state after every step of the last forward, (T, B, H)
    /// (the stored values: f16-rounded in f16 mode).
    pub fn download_hidden_states(&self) -> Result<Vec<f32>, Error> {
        let bh = self.batch * self.layout.hidden;
        self.hcat.to_host(&self.gpu, bh, self.steps * bh)
    }

    /// Sets the carried state to zeros (queued).
    pub fn reset_state(&mut self) -> Result<(), Error> {
        self.carried_in_last_slot.set(false);
        fill32(&self.gpu, &mut self.state_h, 0)?;
        fill32(&self.gpu, &mut self.state_c, 0)
    }

    /// The tensors the forward and backward read: W_ih, W_hh and W_d from
    /// the f16 mirror in f16 mode, else (and the biases always) the masters.
    fn read_weights(&self) -> Weights {
        let w = self.weight_addrs(addr(&self.params));
        match &self.params_f16 {
            None => w,
            Some(m) => {
                let t = self.layout.tensors();
                let at = |i: usize| f16_at(addr(m), t[i].offset);
                Weights {
                    w_ih: at(0),
                    w_hh: at(1),
                    w_d: at(4),
                    ..w
                }
            }
        }
    }

    fn weight_addrs(&self, base: u64) -> Weights {
        let t = self.layout.tensors();
        let at = |i: usize| f32_at(base, t[i].offset);
        Weights {
            w_ih: at(0),
            w_hh: at(1),
            b_ih: at(2),
            b_hh: at(3),
            w_d: at(4),
            b_d: at(5),
        }
    }
}

/// Addresses of the six tensors in a flat buffer.
#[derive(Clone, Copy)]
struct Weights {
    w_ih: u64,
    w_hh: u64,
    b_ih: u64,
    b_hh: u64,
    w_d: u64,
    b_d: u64,
}
