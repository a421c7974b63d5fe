//! A bare cell trained on dense input vectors ([`DeviceCellTrainer`]): the
//! layer of a stacked or sequence-to-sequence model, or of cuDNN's and
//! nn.LSTM's benchmarks, where the input is (T, B, I) vectors and the
//! gradient arrives on every hidden state.
//!
//! It runs the language model's kernels unchanged. The input part of every
//! step is one product before the time loop, the projections
//! P = W_ih·xᵀ (G·H, T·B), stored transposed so that row (t, b)'s part is
//! column t·B + b of P, exactly where the token loops gather a token's
//! column of W_ih: the time loops read P with the row indices 0..T·B as
//! tokens (the kernels add b_ih as always). After the time loop,
//! dW_ih = dihᵀ·x and dx = dih·W_ih are two products over all T·B rows, beside
//! dW_hh's. Internally it is a [`DeviceTrainer`] whose layout has
//! `vocab` = I and whose output layer is never read nor written (its
//! parameters stay zero, and its gradients, so clipping and the updates
//! leave them alone).
//!
//! In f16 mode the inputs and P are stored in f16 like the other saved
//! activations (P is formed in f32 and rounded once); the gradients are f32.

use super::*;
use crate::mem::{elems, Activations};
use recur_core::CellDims;

/// The dense inputs and gradients of a [`DeviceCellTrainer`].
struct DenseIo {
    /// (T·B, I) the inputs (storage type).
    x: Activations,
    /// (G·H, T·B) the input projections W_ih·xᵀ of the last forward in
    /// f16 (f16 mode); in f32 mode they are formed in `dih`, which the
    /// backward overwrites only after the time loops have read them.
    proj16: Option<Stored>,
    /// (T·B, H) the gradient on every hidden state (f32).
    dy: DeviceBuffer<f32>,
    /// (T·B, I) the inputs' gradient of the last backward (f32).
    dx: DeviceBuffer<f32>,
    /// Whether the inputs and the hidden states' gradient were uploaded.
    has_x: bool,
    has_dy: bool,
}

impl DenseIo {
    fn new(layout: ModelLayout, tb: usize, precision: Precision) -> Result<DenseIo, Error> {
        let (i, h) = (layout.vocab, layout.hidden);
        let gh = layout.cell_dims().gate_rows();
        let f16 = precision == Precision::F16;
        Ok(DenseIo {
            x: Activations::new(elems(&[tb, i]), f16, "dense inputs")?,
            proj16: match precision {
                Precision::F32 => None,
                Precision::F16 => Some(Stored::new(
                    elems(&[gh, tb]),
                    precision,
                    "input projections",
                )?),
            },
            dy: alloc(elems(&[tb, h]), "hidden-state gradients (upstream)")?,
            dx: alloc(elems(&[tb, i]), "input gradients")?,
            has_x: false,
            has_dy: false,
        })
    }
}

/// One cell layer in training on the GPU, fed dense (T, B, I) vectors, the
/// gradient given on every hidden state (module docs). Parameters in
/// recur-core's cell layout (`weight_ih` (G·H, I), `weight_hh` (G·H, H),
/// `bias_ih`, `bias_hh`: PyTorch's), f32 or f16 storage as
/// [`DeviceTrainer`]; the same time loops, clipping and updates.
///
/// ```no_run
/// use recur_core::{CellDims, CellKind};
/// use recur_engine::{DeviceCellTrainer, Gpu, Precision, TrainOptimizer};
///
/// # fn main() -> Result<(), recur_engine::Error> {
/// let gpu = Gpu::new()?;
/// let dims = CellDims { cell: CellKind::Lstm, input: 768, hidden: 768 };
/// let (batch, steps) = (16, 1024);
/// let mut t = DeviceCellTrainer::new(&gpu, dims, batch, steps, TrainOptimizer::Sgd, Precision::F16)?;
/// t.upload_params(&vec![0.01; t.params_len()])?;
/// t.upload_inputs(&vec![0.5; steps * batch * dims.input])?; // (T, B, I)
/// t.forward()?;
/// let hs = t.download_hidden_states()?; // (T, B, H)
/// t.upload_hidden_grads(&vec![1e-3; hs.len()])?; // dLoss/dh for every step
/// t.backward()?;
/// let (grads, dx) = (t.download_grads()?, t.download_input_grads()?);
/// t.sgd_step(0.1)?;
/// # Ok(())
/// # }
/// ```
pub struct DeviceCellTrainer {
    io: DenseIo,
    /// The buffers and loops (`dense_input`, layout `vocab` = I). Last: it
    /// holds the context, which must outlive `io`'s buffers.
    inner: DeviceTrainer,
}

impl DeviceCellTrainer {
    /// Allocates every buffer for `batch` × `steps` sequences through the
    /// cell `dims`; parameters and state start at zero.
    pub fn new(
        gpu: &Gpu,
        dims: CellDims,
        batch: usize,
        steps: usize,
        optimizer: TrainOptimizer,
        precision: Precision,
    ) -> Result<DeviceCellTrainer, Error> {
        dims.validate()?;
        let layout = ModelLayout {
            cell: dims.cell,
            vocab: dims.input,
            hidden: dims.hidden,
        };
        let inner = DeviceTrainer::build(gpu, layout, batch, steps, optimizer, precision, true)?;
        let io = DenseIo::new(layout, batch * steps, precision)?;
        Ok(DeviceCellTrainer { io, inner })
    }

    /// The cell's dimensions.
    pub fn dims(&self) -> CellDims {
        self.inner.layout.cell_dims()
    }

    /// Batch rows B.
    pub fn batch(&self) -> usize {
        self.inner.batch
    }

    /// Time steps T.
    pub fn steps(&self) -> usize {
        self.inner.steps
    }

    /// The storage precision chosen at construction.
    pub fn precision(&self) -> Precision {
        self.inner.precision
    }

    /// The GPU.
    pub fn gpu(&self) -> &Gpu {
        &self.inner.gpu
    }

    /// Device operations queued since the trainer was made.
    pub fn device_ops(&self) -> u64 {
        self.inner.device_ops()
    }

    /// [`DeviceTrainer::set_persistent`].
    pub fn set_persistent(&mut self, allowed: bool) {
        self.inner.set_persistent(allowed);
    }

    /// [`DeviceTrainer::set_cluster`].
    pub fn set_cluster(&mut self, mode: ClusterLoops) {
        self.inner.set_cluster(mode);
    }

    /// [`DeviceTrainer::set_register_loops`].
    pub fn set_register_loops(&mut self, allowed: bool) {
        self.inner.set_register_loops(allowed);
    }

    /// [`DeviceTrainer::set_reduce_scatter_backward`].
    pub fn set_reduce_scatter_backward(&mut self, on: bool) {
        self.inner.set_reduce_scatter_backward(on);
    }

    /// [`DeviceTrainer::set_mma_forward`].
    pub fn set_mma_forward(&mut self, on: bool) {
        self.inner.set_mma_forward(on);
    }

    /// [`DeviceTrainer::set_mma_backward`].
    pub fn set_mma_backward(&mut self, on: bool) {
        self.inner.set_mma_backward(on);
    }

    /// [`DeviceTrainer::set_forward_sync`].
    pub fn set_forward_sync(&mut self, sync: ForwardSync) {
        self.inner.set_forward_sync(sync);
    }

    /// [`DeviceTrainer::set_flagged_backward`].
    pub fn set_flagged_backward(&mut self, on: bool) {
        self.inner.set_flagged_backward(on);
    }

    /// [`DeviceTrainer::set_mma_units`].
    #[doc(hidden)]
    pub fn set_mma_units(&mut self, units: Option<usize>) {
        self.inner.set_mma_units(units);
    }

    /// The form the last forward's and backward's time loops took.
    pub fn time_loops(&self) -> (TimeLoop, TimeLoop) {
        self.inner.time_loops()
    }

    /// Elements of the cell's flat parameters (and gradients).
    pub fn params_len(&self) -> usize {
        self.inner.layout.tensors()[4].offset
    }

    /// Replaces the parameters (recur-core's cell layout, [`Self::params_len`]
    /// elements).
    pub fn upload_params(&mut self, cell_params: &[f32]) -> Result<(), Error> {
        recur_core::error::check_len("cell parameters", cell_params, self.params_len())?;
        // The cell's tensors lead the flat layout; the unused output layer
        // after them stays zero.
        let t = &mut self.inner;
        upload(&t.gpu, &mut t.params, cell_params, "cell parameters")?;
        t.refresh_mirror()
    }

    /// The parameters (cell layout).
    pub fn download_params(&self) -> Result<Vec<f32>, Error> {
        download(&self.inner.gpu, &self.inner.params, self.params_len())
    }

    /// The gradients of the last backward (after clipping, if any).
    pub fn download_grads(&self) -> Result<Vec<f32>, Error> {
        self.inner.grads_to_host(self.params_len())
    }

    /// Replaces the carried (B, H) state; `c` is ignored unless LSTM. Each
    /// forward starts from it and leaves its last step's state there.
    pub fn upload_state(&mut self, h: &[f32], c: &[f32]) -> Result<(), Error> {
        self.inner.upload_state(h, c)
    }

    /// The carried state: h (B, H) and c (B, H, empty unless LSTM).
    pub fn download_state(&self) -> Result<(Vec<f32>, Vec<f32>), Error> {
        self.inner.download_state()
    }

    /// Sets the carried state to zeros (queued).
    pub fn reset_state(&mut self) -> Result<(), Error> {
        self.inner.reset_state()
    }

    /// Replaces the inputs of the next forwards, (T, B, I) (rounded to f16
    /// in f16 mode). Waits for the queued work (which may read them).
    pub fn upload_inputs(&mut self, x: &[f32]) -> Result<(), Error> {
        let n = self.steps() * self.batch() * self.dims().input;
        recur_core::error::check_len("inputs", x, n)?;
        self.io.x.upload(&self.inner.gpu, x, "dense inputs")?;
        self.io.has_x = true;
        Ok(())
    }

    /// Replaces the gradient on every hidden state that the next backwards
    /// start from, (T, B, H) (f32). Waits for the queued work.
    pub fn upload_hidden_grads(&mut self, dhs: &[f32]) -> Result<(), Error> {
        let n = self.steps() * self.batch() * self.dims().hidden;
        recur_core::error::check_len("hidden-state gradients", dhs, n)?;
        upload(
            &self.inner.gpu,
            &mut self.io.dy,
            dhs,
            "hidden-state gradients",
        )?;
        self.io.has_dy = true;
        Ok(())
    }

    /// Queues the forward through the T steps from the carried state, which
    /// it advances to the last step's, saving what the backward reads. No
    /// host wait.
    pub fn forward(&mut self) -> Result<(), Error> {
        if !self.io.has_x {
            return Err(order("inputs uploaded before forward", "no inputs"));
        }
        self.inner.forward_dense(&self.io)
    }

    /// Queues the gradients of every parameter and of the inputs for the
    /// uploaded hidden-state gradients, through the last forward's steps
    /// (the graph cut at its initial state). No host wait.
    pub fn backward(&mut self) -> Result<(), Error> {
        if !self.io.has_dy {
            return Err(order(
                "hidden-state gradients uploaded before backward",
                "none",
            ));
        }
        self.inner.backward_dense(&self.io)
    }

    /// The hidden state after every step of the last forward, (T, B, H)
    /// (the stored values: f16-rounded in f16 mode).
    pub fn download_hidden_states(&self) -> Result<Vec<f32>, Error> {
        self.inner.download_hidden_states()
    }

    /// The inputs' gradient of the last backward, (T, B, I).
    pub fn download_input_grads(&self) -> Result<Vec<f32>, Error> {
        let n = self.steps() * self.batch() * self.dims().input;
        download(&self.inner.gpu, &self.io.dx, n)
    }

    /// [`DeviceTrainer::clip`]: global-norm clipping of the gradients.
    pub fn clip(&mut self, theta: Option<f32>) -> Result<(), Error> {
        self.inner.clip(theta)
    }

    /// [`DeviceTrainer::norm`]: the last clip's global norm (a host wait).
    pub fn norm(&self) -> Result<f32, Error> {
        self.inner.norm()
    }

    /// [`DeviceTrainer::sgd_step`].
    pub fn sgd_step(&mut self, lr: f32) -> Result<(), Error> {
        self.inner.sgd_step(lr)
    }

    /// [`DeviceTrainer::adam_step`].
    pub fn adam_step(&mut self, step: u64, cfg: &AdamConfig) -> Result<(), Error> {
        self.inner.adam_step(step, cfg)
    }
}

fn order(expected: &str, actual: &str) -> Error {
    Error::Mismatch {
        what: "call order",
        expected: expected.to_owned(),
        actual: actual.to_owned(),
    }
}

impl DeviceTrainer {
    /// The dense forward ([`DeviceCellTrainer::forward`]): the input
    /// projections for all steps, then the token loops reading them.
    fn forward_dense(&mut self, io: &DenseIo) -> Result<(), Error> {
        self.forward_done = false;
        let l = self.layout;
        let (tb, i) = (self.steps * self.batch, l.vocab);
        let gh = l.cell_dims().gate_rows();
        self.gpu.bind()?;
        // The last backward's side work (dW_ih reads x) is done.
        self.join_side()?;
        let w = self.read_weights();
        // P (G·H, T·B) = W_ih · xᵀ, formed in f32 in dih (the same size,
        // free until the backward's time loop writes it), rounded to f16 in
        // f16 mode.
        let p32 = addr(&self.dih);
        self.gemm(Gemm {
            operands: self.gemm_operands(true),
            c: p32,
            a: w.w_ih,
            b: io.x.addr(),
            bias: 0,
            m: gh,
            n: tb,
            k: i,
            sam: i,
            sak: 1,
            sbk: 1,
            sbn: i,
            ldc: tb,
            accumulate: false,
        })?;
        let p = match &io.proj16 {
            None => p32,
            Some(p16) => {
                self.launch(
                    "tr_to_f16",
                    elementwise(gh * tb),
                    &[
                        Arg::Ptr(p16.at(0)),
                        Arg::Ptr(p32),
                        Arg::I64((gh * tb) as i64),
                    ],
                )?;
                p16.at(0)
            }
        };
        self.carried_state_in()?;
        let projections = Weights { w_ih: p, ..w };
        self.forward_time_loop(projections, addr(&self.tokens), tb)?;
        self.carried_in_last_slot.set(true);
        self.forward_done = true;
        Ok(())
    }

    /// The dense backward ([`DeviceCellTrainer::backward`]); joined to the
    /// side stream at the end whatever happens.
    fn backward_dense(&mut self, io: &DenseIo) -> Result<(), Error> {
        if !self.forward_done {
            return Err(order(
                "a forward before backward",
                "backward without a new forward",
            ));
        }
        self.forward_done = false;
        // The backward rewrites every gradient: a clip of the last ones is void.
        self.clip_pending.set(false);
        self.gpu.bind()?;
        let queued = self.queue_backward_dense(io);
        let joined = self.join_side();
        queued.and(joined)
    }

    fn queue_backward_dense(&self, io: &DenseIo) -> Result<(), Error> {
        let l = self.layout;
        let (tb, h, i) = (self.steps * self.batch, l.hidden, l.vocab);
        let gh = l.cell_dims().gate_rows();
        let w = self.read_weights();
        let g = self.weight_addrs(addr(&self.grads));
        let form = self.backward_loop()?;
        self.transpose_beside(w, form)?;
        // The time loop may consume dhs: a copy of the upstream gradient.
        self.copy(addr(&self.dhs), addr(&io.dy), tb * h)?;
        self.backward_time_loop(form)?;
        let dih = addr(&self.dih);
        // Beside dW_hh's and dx's products: the biases' and dW_ih
        // (G·H, I) = dihᵀ · x.
        self.beside(|| {
            self.bias_grads(g, false)?;
            self.gemm(Gemm {
                operands: self.gemm_operands(false),
                c: g.w_ih,
                a: dih,
                b: io.x.addr(),
                bias: 0,
                m: gh,
                n: i,
                k: tb,
                sam: 1,
                sak: gh,
                sbk: i,
                sbn: 1,
                ldc: i,
                accumulate: false,
            })
        })?;
        self.recurrent_weight_grads(g)?;
        // dx (T·B, I) = dih · W_ih.
        self.gemm(Gemm {
            operands: self.gemm_operands(false),
            c: addr(&io.dx),
            a: dih,
            b: w.w_ih,
            bias: 0,
            m: tb,
            n: i,
            k: gh,
            sam: gh,
            sak: 1,
            sbk: i,
            sbn: 1,
            ldc: i,
            accumulate: false,
        })
    }
}
