//! Training on the GPU, f32: a language model's parameters, gradients and
//! optimizer state resident on the device, one mini-batch's forward (with
//! the cache its backward needs), backward through time, global-norm
//! clipping, SGD and Adam, all queued on the stream (kernels in
//! `ptx/src/train.cu`). Only scalars (loss, norm) and, on request, whole
//! buffers cross to the host.
//!
//! Per time step the recurrent product is one tiled matrix product and the
//! gates one pointwise kernel (two of each for GRU reset-before); the
//! weight gradients are formed after the time loop as products over all
//! T·B rows (the input weights' by a scatter to the tokens' columns).

use std::ffi::c_void;

use cust::memory::{DeviceBuffer, DeviceCopy};
use cust::sys;
use recur_core::optim::AdamConfig;
use recur_core::{CellKind, ModelLayout};

use crate::error::{check, Error};
use crate::gpu::Gpu;
use crate::mem::{addr, alloc, download, fill32, upload};

/// The update rule of a [`DeviceTrainer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainOptimizer {
    /// Plain SGD.
    Sgd,
    /// Adam (keeps two moment buffers).
    Adam,
}

/// A kernel argument (each passed by address from its own 8-byte slot).
#[derive(Clone, Copy)]
enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl Arg {
    fn bits(self) -> u64 {
        match self {
            Arg::Ptr(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::I64(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
        }
    }
}

/// A language model (cell + output layer) in training on the GPU.
pub struct DeviceTrainer {
    layout: ModelLayout,
    batch: usize,
    steps: usize,
    optimizer: TrainOptimizer,
    /// (P) parameters, recur-core's flat layout.
    params: DeviceBuffer<f32>,
    /// (P) gradients of the last backward.
    grads: DeviceBuffer<f32>,
    /// (P) each: Adam's moments (one element for SGD).
    exp_avg: DeviceBuffer<f32>,
    exp_avg_sq: DeviceBuffer<f32>,
    /// (T, B) inputs and targets of the last forward.
    tokens: DeviceBuffer<u32>,
    targets: DeviceBuffer<u32>,
    /// (T·B, G·H) input part of every gate, b_ih included.
    xp: DeviceBuffer<f32>,
    /// (B, G·H) one step's recurrent product.
    hp: DeviceBuffer<f32>,
    /// (T·B, G·H) post-activation gates.
    gates: DeviceBuffer<f32>,
    /// (T·B, H) W_hn·h + b_hn (GRU reset-after), r⊙h (reset-before), tanh c (LSTM).
    aux: DeviceBuffer<f32>,
    /// ((T+1)·B, H): slot 0 the batch's initial h, slot t+1 step t's h.
    hcat: DeviceBuffer<f32>,
    /// ((T+1)·B, H): the same for the LSTM cell state.
    ccat: DeviceBuffer<f32>,
    /// (B, H) the carried state.
    state_h: DeviceBuffer<f32>,
    state_c: DeviceBuffer<f32>,
    /// (T·B, V) logits, then the gradient of the mean loss.
    logits: DeviceBuffer<f32>,
    /// (T·B) per-row losses and (1) their mean.
    row_loss: DeviceBuffer<f32>,
    loss: DeviceBuffer<f32>,
    /// (T·B, H) gradient on every h; (B, H) on the initial h (a sink).
    dhs: DeviceBuffer<f32>,
    dh0: DeviceBuffer<f32>,
    /// (B, H) gradient on the LSTM cell state; (B, H) dn·W_hn (reset-before).
    dc: DeviceBuffer<f32>,
    drh: DeviceBuffer<f32>,
    /// (T·B, G·H) pre-activation gradients, input and recurrent side.
    dih: DeviceBuffer<f32>,
    dhh: DeviceBuffer<f32>,
    /// (1) Σ g² in f64; (1) the global norm.
    sumsq: DeviceBuffer<f64>,
    norm: DeviceBuffer<f32>,
    /// Whether the logits hold the gradient of a forward not yet backed.
    forward_done: bool,
    // Last: the context outlives the buffers above.
    gpu: Gpu,
}

impl DeviceTrainer {
    /// Allocates every buffer for `batch` × `steps` mini-batches of the
    /// model `layout`; parameters and state start at zero.
    pub fn new(
        gpu: &Gpu,
        layout: ModelLayout,
        batch: usize,
        steps: usize,
        optimizer: TrainOptimizer,
    ) -> Result<DeviceTrainer, Error> {
        layout.validate()?;
        for (what, value) in [("batch", batch), ("steps", steps)] {
            if value == 0 {
                return Err(recur_core::Error::Dim { what, value }.into());
            }
        }
        gpu.bind()?;
        let p = layout.len();
        let h = layout.hidden;
        let gh = layout.cell_dims().gate_rows();
        let tb = recur_core::error::mul("steps", steps, batch)?;
        let bh = batch * h;
        let lstm = layout.cell == CellKind::Lstm;
        let moments = if optimizer == TrainOptimizer::Adam {
            p
        } else {
            1
        };
        let mut t = DeviceTrainer {
            layout,
            batch,
            steps,
            optimizer,
            params: alloc(p, "parameters")?,
            grads: alloc(p, "gradients")?,
            exp_avg: alloc(moments, "Adam exp_avg")?,
            exp_avg_sq: alloc(moments, "Adam exp_avg_sq")?,
            tokens: alloc(tb, "inputs")?,
            targets: alloc(tb, "targets")?,
            xp: alloc(tb * gh, "input projections")?,
            hp: alloc(batch * gh, "recurrent product")?,
            gates: alloc(tb * gh, "gates")?,
            aux: alloc(tb * h, "gate cache")?,
            hcat: alloc((tb + batch) * h, "hidden states")?,
            ccat: alloc(if lstm { (tb + batch) * h } else { 1 }, "cell states")?,
            state_h: alloc(bh, "carried h")?,
            state_c: alloc(bh, "carried c")?,
            logits: alloc(tb * layout.vocab, "logits")?,
            row_loss: alloc(tb, "row losses")?,
            loss: alloc(1, "loss")?,
            dhs: alloc(tb * h, "hidden-state gradients")?,
            dh0: alloc(bh, "initial-state gradient")?,
            dc: alloc(bh, "cell-state gradient")?,
            drh: alloc(bh, "reset gradient")?,
            dih: alloc(tb * gh, "input-side gate gradients")?,
            dhh: alloc(tb * gh, "recurrent-side gate gradients")?,
            sumsq: alloc(1, "squared norm")?,
            norm: alloc(1, "norm")?,
            forward_done: false,
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
        ] {
            fill32(gpu, b, 0)?;
        }
        Ok(t)
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

    /// Replaces the parameters ([`ModelLayout::len`] elements).
    pub fn upload_params(&mut self, flat: &[f32]) -> Result<(), Error> {
        recur_core::error::check_len("parameters", flat, self.layout.len())?;
        upload(&self.gpu, &mut self.params, flat, "parameters")
    }

    /// The parameters ([`ModelLayout::len`] elements).
    pub fn download_params(&self) -> Result<Vec<f32>, Error> {
        download(&self.gpu, &self.params, self.layout.len())
    }

    /// The gradients of the last backward (after clipping, if any).
    pub fn download_grads(&self) -> Result<Vec<f32>, Error> {
        download(&self.gpu, &self.grads, self.layout.len())
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
        upload(&self.gpu, &mut self.state_h, h, "carried h")?;
        if self.layout.cell == CellKind::Lstm {
            recur_core::error::check_len("cell state c", c, bh)?;
            upload(&self.gpu, &mut self.state_c, c, "carried c")?;
        }
        Ok(())
    }

    /// The carried state: h (B, H) and c (B, H, empty unless LSTM).
    pub fn download_state(&self) -> Result<(Vec<f32>, Vec<f32>), Error> {
        let bh = self.batch * self.layout.hidden;
        let h = download(&self.gpu, &self.state_h, bh)?;
        let c = if self.layout.cell == CellKind::Lstm {
            download(&self.gpu, &self.state_c, bh)?
        } else {
            Vec::new()
        };
        Ok((h, c))
    }

    /// Sets the carried state to zeros (queued).
    pub fn reset_state(&mut self) -> Result<(), Error> {
        fill32(&self.gpu, &mut self.state_h, 0)?;
        fill32(&self.gpu, &mut self.state_c, 0)
    }

    /// Queues a mini-batch forward from the carried state, which it advances
    /// to the batch's final state, and the mean softmax cross-entropy
    /// (read with [`DeviceTrainer::loss`]). `inputs`, `targets`: (T, B).
    pub fn forward(&mut self, inputs: &[u32], targets: &[u32]) -> Result<(), Error> {
        self.forward_done = false;
        let l = self.layout;
        let tb = self.steps * self.batch;
        recur_core::error::check_len("inputs", inputs, tb)?;
        recur_core::error::check_len("targets", targets, tb)?;
        recur_core::error::check_tokens("inputs", inputs, l.vocab)?;
        recur_core::error::check_tokens("targets", targets, l.vocab)?;
        upload(&self.gpu, &mut self.tokens, inputs, "inputs")?;
        upload(&self.gpu, &mut self.targets, targets, "targets")?;
        let (b, h, v) = (self.batch, l.hidden, l.vocab);
        let gh = l.cell_dims().gate_rows();
        let bh = b * h;
        let w = self.weight_addrs(&self.params);
        let lstm = l.cell == CellKind::Lstm;
        self.copy(addr(&self.hcat), addr(&self.state_h), bh)?;
        if lstm {
            self.copy(addr(&self.ccat), addr(&self.state_c), bh)?;
        }
        self.launch(
            "tr_gather",
            elementwise(tb * gh),
            &[
                Arg::Ptr(addr(&self.xp)),
                Arg::Ptr(w.w_ih),
                Arg::Ptr(w.b_ih),
                Arg::Ptr(addr(&self.tokens)),
                Arg::I32(tb as i32),
                Arg::I32(gh as i32),
                Arg::I32(v as i32),
            ],
        )?;
        let cell = l.cell as i32;
        let (hcat, ccat) = (addr(&self.hcat), addr(&self.ccat));
        let (xp, hp, gates, aux) = (
            addr(&self.xp),
            addr(&self.hp),
            addr(&self.gates),
            addr(&self.aux),
        );
        for t in 0..self.steps {
            let h_prev = hcat + f32_off(t * bh);
            let h_out = hcat + f32_off((t + 1) * bh);
            let (c_prev, c_out) = if lstm {
                (ccat + f32_off(t * bh), ccat + f32_off((t + 1) * bh))
            } else {
                (ccat, ccat)
            };
            let gates_t = gates + f32_off(t * b * gh);
            let aux_t = aux + f32_off(t * bh);
            let xp_t = xp + f32_off(t * b * gh);
            let fwd = |this: &Self, phase: i32| {
                this.launch(
                    "tr_cell_fwd",
                    elementwise(bh),
                    &[
                        Arg::Ptr(h_out),
                        Arg::Ptr(c_out),
                        Arg::Ptr(gates_t),
                        Arg::Ptr(aux_t),
                        Arg::Ptr(xp_t),
                        Arg::Ptr(hp),
                        Arg::Ptr(w.b_hh),
                        Arg::Ptr(h_prev),
                        Arg::Ptr(c_prev),
                        Arg::I32(cell),
                        Arg::I32(phase),
                        Arg::I32(b as i32),
                        Arg::I32(h as i32),
                    ],
                )
            };
            // hp (B, rows) = h_prev (B, H) · W_hh[rows]ᵀ
            let rows = if l.cell == CellKind::GruResetBefore {
                2 * h
            } else {
                gh
            };
            self.gemm(Gemm {
                c: hp,
                a: h_prev,
                b: w.w_hh,
                bias: 0,
                m: b,
                n: rows,
                k: h,
                sam: h,
                sak: 1,
                sbk: 1,
                sbn: h,
                ldc: gh,
                accumulate: false,
            })?;
            if l.cell == CellKind::GruResetBefore {
                fwd(self, 1)?;
                // hp[:, 2H..] = (r⊙h) · W_hnᵀ
                self.gemm(Gemm {
                    c: hp + f32_off(2 * h),
                    a: aux_t,
                    b: w.w_hh + f32_off(2 * h * h),
                    bias: 0,
                    m: b,
                    n: h,
                    k: h,
                    sam: h,
                    sak: 1,
                    sbk: 1,
                    sbn: h,
                    ldc: gh,
                    accumulate: false,
                })?;
                fwd(self, 2)?;
            } else {
                fwd(self, 0)?;
            }
        }
        let last_h = hcat + f32_off(self.steps * bh);
        self.copy(addr(&self.state_h), last_h, bh)?;
        if lstm {
            self.copy(addr(&self.state_c), ccat + f32_off(self.steps * bh), bh)?;
        }
        // logits (T·B, V) = hs · W_dᵀ + b_d
        self.gemm(Gemm {
            c: addr(&self.logits),
            a: hcat + f32_off(bh),
            b: w.w_d,
            bias: w.b_d,
            m: tb,
            n: v,
            k: h,
            sam: h,
            sak: 1,
            sbk: 1,
            sbn: h,
            ldc: v,
            accumulate: false,
        })?;
        self.launch(
            "tr_xent",
            (tb as u32, 1),
            &[
                Arg::Ptr(addr(&self.logits)),
                Arg::Ptr(addr(&self.row_loss)),
                Arg::Ptr(addr(&self.targets)),
                Arg::I32(tb as i32),
                Arg::I32(v as i32),
            ],
        )?;
        self.launch(
            "tr_mean",
            (1, 1),
            &[
                Arg::Ptr(addr(&self.loss)),
                Arg::Ptr(addr(&self.row_loss)),
                Arg::I32(tb as i32),
            ],
        )?;
        self.forward_done = true;
        Ok(())
    }

    /// The mean loss of the last [`DeviceTrainer::forward`] (waits for it).
    pub fn loss(&self) -> Result<f32, Error> {
        Ok(download(&self.gpu, &self.loss, 1)?[0])
    }

    /// Queues the gradients of the last forward's loss with respect to every
    /// parameter (the graph cut at the batch's initial state). With
    /// `freeze_bias_hh` the gradient of `bias_hh` is zero.
    pub fn backward(&mut self, freeze_bias_hh: bool) -> Result<(), Error> {
        if !self.forward_done {
            return Err(Error::Mismatch {
                what: "call order",
                expected: "a forward before backward".to_owned(),
                actual: "backward without a new forward".to_owned(),
            });
        }
        self.forward_done = false;
        let l = self.layout;
        let (b, h, v) = (self.batch, l.hidden, l.vocab);
        let gh = l.cell_dims().gate_rows();
        let (bh, tb) = (b * h, self.steps * b);
        let w = self.weight_addrs(&self.params);
        let g = self.weight_addrs(&self.grads);
        let lstm = l.cell == CellKind::Lstm;
        let before = l.cell == CellKind::GruResetBefore;
        fill32(&self.gpu, &mut self.grads, 0)?;
        fill32(&self.gpu, &mut self.dh0, 0)?;
        fill32(&self.gpu, &mut self.dc, 0)?;
        let (hcat, ccat, dl) = (addr(&self.hcat), addr(&self.ccat), addr(&self.logits));
        let (dhs, dih, dhh) = (addr(&self.dhs), addr(&self.dih), addr(&self.dhh));
        // dW_d (V, H) = dlᵀ · hs; db_d = Σ rows of dl; dhs = dl · W_d.
        self.gemm(Gemm {
            c: g.w_d,
            a: dl,
            b: hcat + f32_off(bh),
            bias: 0,
            m: v,
            n: h,
            k: tb,
            sam: 1,
            sak: v,
            sbk: h,
            sbn: 1,
            ldc: h,
            accumulate: true,
        })?;
        self.colsum(g.b_d, dl, tb, v, v)?;
        self.gemm(Gemm {
            c: dhs,
            a: dl,
            b: w.w_d,
            bias: 0,
            m: tb,
            n: h,
            k: v,
            sam: v,
            sak: 1,
            sbk: h,
            sbn: 1,
            ldc: h,
            accumulate: false,
        })?;
        let cell = l.cell as i32;
        let (gates, aux, dc, drh) = (
            addr(&self.gates),
            addr(&self.aux),
            addr(&self.dc),
            addr(&self.drh),
        );
        for t in (0..self.steps).rev() {
            let dh_in = dhs + f32_off(t * bh);
            // Where the gradient on h_prev goes: the previous step's, or the sink.
            let dh_out = if t == 0 {
                addr(&self.dh0)
            } else {
                dhs + f32_off((t - 1) * bh)
            };
            let h_prev = hcat + f32_off(t * bh);
            let c_prev = if lstm { ccat + f32_off(t * bh) } else { ccat };
            let (dih_t, dhh_t) = (dih + f32_off(t * b * gh), dhh + f32_off(t * b * gh));
            let bwd = |this: &Self, phase: i32| {
                this.launch(
                    "tr_cell_bwd",
                    elementwise(bh),
                    &[
                        Arg::Ptr(dih_t),
                        Arg::Ptr(dhh_t),
                        Arg::Ptr(dh_out),
                        Arg::Ptr(dc),
                        Arg::Ptr(dh_in),
                        Arg::Ptr(drh),
                        Arg::Ptr(gates + f32_off(t * b * gh)),
                        Arg::Ptr(aux + f32_off(t * bh)),
                        Arg::Ptr(h_prev),
                        Arg::Ptr(c_prev),
                        Arg::I32(cell),
                        Arg::I32(phase),
                        Arg::I32(b as i32),
                        Arg::I32(h as i32),
                    ],
                )
            };
            let rows = if before {
                bwd(self, 2)?;
                // drh (B, H) = dn (B, H; row stride G·H) · W_hn
                self.gemm(Gemm {
                    c: drh,
                    a: dhh_t + f32_off(2 * h),
                    b: w.w_hh + f32_off(2 * h * h),
                    bias: 0,
                    m: b,
                    n: h,
                    k: h,
                    sam: gh,
                    sak: 1,
                    sbk: h,
                    sbn: 1,
                    ldc: h,
                    accumulate: false,
                })?;
                bwd(self, 1)?;
                2 * h
            } else {
                bwd(self, 0)?;
                gh
            };
            // dh_prev += dhh[:, rows] · W_hh[rows]
            self.gemm(Gemm {
                c: dh_out,
                a: dhh_t,
                b: w.w_hh,
                bias: 0,
                m: b,
                n: h,
                k: rows,
                sam: gh,
                sak: 1,
                sbk: h,
                sbn: 1,
                ldc: h,
                accumulate: true,
            })?;
        }
        // dW_hh[rows] (rows, H) += dhh[:, rows]ᵀ · h_prev over all T·B rows;
        // reset-before's n block takes r⊙h_prev instead.
        let rows = if before { 2 * h } else { gh };
        self.gemm(Gemm {
            c: g.w_hh,
            a: dhh,
            b: hcat,
            bias: 0,
            m: rows,
            n: h,
            k: tb,
            sam: 1,
            sak: gh,
            sbk: h,
            sbn: 1,
            ldc: h,
            accumulate: true,
        })?;
        if before {
            self.gemm(Gemm {
                c: g.w_hh + f32_off(2 * h * h),
                a: dhh + f32_off(2 * h),
                b: aux,
                bias: 0,
                m: h,
                n: h,
                k: tb,
                sam: 1,
                sak: gh,
                sbk: h,
                sbn: 1,
                ldc: h,
                accumulate: true,
            })?;
        }
        self.colsum(g.b_ih, dih, tb, gh, gh)?;
        if !freeze_bias_hh {
            self.colsum(g.b_hh, dhh, tb, gh, gh)?;
        }
        self.launch(
            "tr_scatter",
            elementwise(tb * gh),
            &[
                Arg::Ptr(g.w_ih),
                Arg::Ptr(dih),
                Arg::Ptr(addr(&self.tokens)),
                Arg::I32(tb as i32),
                Arg::I32(gh as i32),
                Arg::I32(v as i32),
            ],
        )
    }

    /// The gradients' global L2 norm (waits for it); with `Some(theta)` the
    /// gradients are scaled to norm θ when it is larger (recur-core's
    /// `clip_global_norm`). Returns the norm before clipping.
    pub fn clip(&mut self, theta: Option<f32>) -> Result<f32, Error> {
        if let Some(th) = theta {
            if !(th.is_finite() && th > 0.0) {
                return Err(recur_core::Error::Value { what: "theta" }.into());
            }
        }
        let n = self.layout.len();
        fill32_f64(&self.gpu, &mut self.sumsq)?;
        self.launch(
            "tr_sumsq",
            elementwise(n),
            &[
                Arg::Ptr(addr(&self.sumsq)),
                Arg::Ptr(addr(&self.grads)),
                Arg::I64(n as i64),
            ],
        )?;
        self.launch(
            "tr_clip",
            elementwise(n),
            &[
                Arg::Ptr(addr(&self.grads)),
                Arg::Ptr(addr(&self.norm)),
                Arg::Ptr(addr(&self.sumsq)),
                Arg::F32(theta.unwrap_or(0.0)),
                Arg::I64(n as i64),
            ],
        )?;
        Ok(download(&self.gpu, &self.norm, 1)?[0])
    }

    /// Queues `params -= lr · grads`.
    pub fn sgd_step(&mut self, lr: f32) -> Result<(), Error> {
        if !lr.is_finite() {
            return Err(recur_core::Error::Value { what: "lr" }.into());
        }
        let n = self.layout.len();
        self.launch(
            "tr_sgd",
            elementwise(n),
            &[
                Arg::Ptr(addr(&self.params)),
                Arg::Ptr(addr(&self.grads)),
                Arg::F32(lr),
                Arg::I64(n as i64),
            ],
        )
    }

    /// Queues Adam update number `step` (from 1), as recur-core's `adam_step`.
    pub fn adam_step(&mut self, step: u64, cfg: &AdamConfig) -> Result<(), Error> {
        self.expect_adam()?;
        cfg.validate()?;
        if step == 0 {
            return Err(recur_core::Error::Value { what: "step" }.into());
        }
        let exp = i32::try_from(step).unwrap_or(i32::MAX);
        let bias_correction1 = 1.0 - cfg.beta1.powi(exp);
        let bias_correction2 = 1.0 - cfg.beta2.powi(exp);
        let n = self.layout.len();
        self.launch(
            "tr_adam",
            elementwise(n),
            &[
                Arg::Ptr(addr(&self.params)),
                Arg::Ptr(addr(&self.exp_avg)),
                Arg::Ptr(addr(&self.exp_avg_sq)),
                Arg::Ptr(addr(&self.grads)),
                Arg::F32((cfg.lr / bias_correction1) as f32),
                Arg::F32(bias_correction2.sqrt() as f32),
                Arg::F32((1.0 - cfg.beta1) as f32),
                Arg::F32((1.0 - cfg.beta2) as f32),
                Arg::F32(cfg.beta2 as f32),
                Arg::F32(cfg.eps as f32),
                Arg::F32(cfg.weight_decay as f32),
                Arg::I64(n as i64),
            ],
        )
    }

    fn weight_addrs(&self, flat: &DeviceBuffer<f32>) -> Weights {
        let base = addr(flat);
        let t = self.layout.tensors();
        let at = |i: usize| base + f32_off(t[i].offset);
        Weights {
            w_ih: at(0),
            w_hh: at(1),
            b_ih: at(2),
            b_hh: at(3),
            w_d: at(4),
            b_d: at(5),
        }
    }

    fn launch(&self, name: &'static str, grid: (u32, u32), args: &[Arg]) -> Result<(), Error> {
        self.gpu.bind()?;
        let mut slots: Vec<u64> = args.iter().map(|a| a.bits()).collect();
        let mut ptrs: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        let l = self.layout;
        let shape = || {
            format!(
                "T={} B={} H={} V={} {:?}",
                self.steps, self.batch, l.hidden, l.vocab, l.cell
            )
        };
        // SAFETY: every call site passes the kernel's parameters of
        // ptx/src/train.cu in order (pointers and 64-bit integers as 8-byte
        // slots, ints and floats in the low 4 bytes of theirs, little-endian),
        // and every address is inside a buffer of this trainer sized for its
        // (T, B, H, V) as allocated in `new`.
        unsafe { self.gpu.launch(name, grid, 0, false, &mut ptrs, shape) }
    }

    fn gemm(&self, g: Gemm) -> Result<(), Error> {
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let grid = (g.n.div_ceil(64) as u32, g.m.div_ceil(64) as u32);
        self.launch(
            "tr_gemm",
            grid,
            &[
                Arg::Ptr(g.c),
                Arg::Ptr(g.a),
                Arg::Ptr(g.b),
                Arg::Ptr(g.bias),
                Arg::I32(g.m as i32),
                Arg::I32(g.n as i32),
                Arg::I32(g.k as i32),
                Arg::I64(g.sam as i64),
                Arg::I64(g.sak as i64),
                Arg::I64(g.sbk as i64),
                Arg::I64(g.sbn as i64),
                Arg::I32(g.ldc as i32),
                Arg::I32(g.accumulate as i32),
            ],
        )
    }

    /// out (cols) += column sums of `input` (rows, cols; row stride ld).
    fn colsum(
        &self,
        out: u64,
        input: u64,
        rows: usize,
        cols: usize,
        ld: usize,
    ) -> Result<(), Error> {
        self.launch(
            "tr_colsum",
            (cols.div_ceil(256) as u32, 1),
            &[
                Arg::Ptr(out),
                Arg::Ptr(input),
                Arg::I32(rows as i32),
                Arg::I32(cols as i32),
                Arg::I32(ld as i32),
                Arg::I32(1),
            ],
        )
    }

    /// Queues a device-to-device copy of `n` f32.
    fn copy(&self, dst: u64, src: u64, n: usize) -> Result<(), Error> {
        self.gpu.bind()?;
        // SAFETY: both ranges lie inside buffers of this trainer (callers
        // pass (B, H) slots of buffers sized for them); they do not overlap.
        let r =
            unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, n * 4, self.gpu.inner.stream.as_inner()) };
        check(r, "copying on the device", None, || format!("{n} floats"))
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

/// One `tr_gemm`: C(m, n) [+]= Σ_k A(m, k)·B(k, n) [+ bias(n)], A(m, k) at
/// `a + (m·sam + k·sak)` floats, B(k, n) at `b + (k·sbk + n·sbn)`, C's rows
/// `ldc` apart.
struct Gemm {
    c: u64,
    a: u64,
    b: u64,
    bias: u64,
    m: usize,
    n: usize,
    k: usize,
    sam: usize,
    sak: usize,
    sbk: usize,
    sbn: usize,
    ldc: usize,
    accumulate: bool,
}

fn f32_off(elements: usize) -> u64 {
    (elements * 4) as u64
}

/// A grid-stride launch over `n` elements.
fn elementwise(n: usize) -> (u32, u32) {
    (n.div_ceil(256).clamp(1, 4096) as u32, 1)
}

fn fill32_f64<T: DeviceCopy>(gpu: &Gpu, buf: &mut DeviceBuffer<T>) -> Result<(), Error> {
    gpu.bind()?;
    let words = buf.len() * std::mem::size_of::<T>() / 4;
    // SAFETY: the range is exactly the buffer's bytes.
    let r = unsafe { sys::cuMemsetD32Async(addr(buf), 0, words, gpu.inner.stream.as_inner()) };
    check(r, "zeroing device memory", None, String::new)
}
