//! Backward through time: output layer and loss gradient, the time loop
//! (cluster, persistent or per-step), then the weight gradients as products
//! over all T·B rows. What the time loop does not need runs beside it on
//! the side stream: the output layer's weight gradients during the loop,
//! the bias sums and dW_ih during dW_hh's product.

use super::persist_mma::MmaLoopPlan;
use super::*;

/// The form of the backward's time loop, with its plan
/// ([`DeviceTrainer::backward_loop`]): chosen once per backward, for
/// W_hhᵀ's transpose and for the loop.
#[derive(Debug, Clone, Copy)]
pub(super) enum BackwardLoop {
    Cluster(ClusterPlan),
    PersistentMma(MmaLoopPlan),
    Persistent,
    PerStep,
}

impl DeviceTrainer {
    /// Queues the gradients of the last forward's loss with respect to every
    /// parameter (the graph cut at the batch's initial state). With
    /// `freeze_bias_hh` the gradient of `bias_hh` is zero. No host wait.
    pub fn backward(&mut self, freeze_bias_hh: bool) -> Result<(), Error> {
        if !self.forward_done {
            return Err(Error::Mismatch {
                what: "call order",
                expected: "a forward before backward".to_owned(),
                actual: "backward without a new forward".to_owned(),
            });
        }
        self.forward_done = false;
        // The backward rewrites every gradient: a clip of the last ones is void.
        self.clip_pending.set(false);
        self.gpu.bind()?;
        // Joined whatever happens: nothing queued after may race the side
        // stream's writes of the gradients.
        let queued = self.queue_backward(freeze_bias_hh);
        let joined = self.join_side();
        queued.and(joined)?;
        self.mark(Mark::BackwardEnd)
    }

    /// [`Self::backward`]'s work, some of it left running on the side
    /// stream.
    fn queue_backward(&mut self, freeze_bias_hh: bool) -> Result<(), Error> {
        let l = self.layout;
        let (b, h, v) = (self.batch, l.hidden, l.vocab);
        let gh = l.cell_dims().gate_rows();
        let (bh, tb) = (b * h, self.steps * b);
        let w = self.read_weights();
        let g = self.weight_addrs(addr(&self.grads));
        // W_hhᵀ for the time loop, beside dhs's product.
        let form = self.backward_loop()?;
        self.transpose_beside(w, form)?;
        let (dl, dhs, dih) = (addr(&self.logits), addr(&self.dhs), addr(&self.dih));
        // Beside the time loop (they read only dl and hs): dW_d (V, H) =
        // dlᵀ · hs and db_d = Σ rows of dl (every gradient is written
        // whole: none is zeroed first).
        self.on_side(|| {
            self.gemm(Gemm {
                operands: self.gemm_operands(false),
                c: g.w_d,
                a: dl,
                b: self.hcat.at(bh),
                bias: 0,
                m: v,
                n: h,
                k: tb,
                sam: 1,
                sak: v,
                sbk: h,
                sbn: 1,
                ldc: h,
                accumulate: false,
            })?;
            self.colsum(g.b_d, dl, tb, v, v, false)
        })?;
        // dhs = dl · W_d.
        self.gemm(Gemm {
            operands: self.gemm_operands(false),
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
        self.mark(Mark::BackwardLoopStart)?;
        self.backward_time_loop(form)?;
        self.mark(Mark::BackwardLoopEnd)?;
        // Beside dW_hh's product: the bias gradients and dW_ih, each
        // token's column the sum of its rows' input-side gradients.
        self.beside(|| {
            self.bias_grads(g, freeze_bias_hh)?;
            let (_, order, starts) = self.token_addrs();
            self.launch(
                "tr_token_grads",
                (v.div_ceil(32) as u32, gh.div_ceil(256) as u32),
                &[
                    Arg::Ptr(g.w_ih),
                    Arg::Ptr(dih),
                    Arg::Ptr(order),
                    Arg::Ptr(starts),
                    Arg::I32(gh as i32),
                    Arg::I32(v as i32),
                ],
            )
        })?;
        self.recurrent_weight_grads(g)
    }

    /// Queues W_hhᵀ (the backward time loop's weights) on the side stream
    /// and records `transposed` after it; the reduce-scatter loops (on
    /// clusters, or persistent on tensor cores) read W_hh itself, and only
    /// the event is recorded.
    pub(super) fn transpose_beside(&self, w: Weights, form: BackwardLoop) -> Result<(), Error> {
        let h = self.layout.hidden;
        let gh = self.layout.cell_dims().gate_rows();
        let reads_w_hh = match form {
            BackwardLoop::Cluster(cp) => cp.form == TimeLoop::ClusterReduce,
            BackwardLoop::PersistentMma(_) => true,
            BackwardLoop::Persistent | BackwardLoop::PerStep => false,
        };
        if reads_w_hh {
            return self.gpu.record(&self.transposed, Lane::Side);
        }
        self.beside(|| {
            self.launch(
                self.kernel("tr_transpose", "tr_transpose_f16"),
                (h.div_ceil(32) as u32, gh.div_ceil(32) as u32),
                &[
                    Arg::Ptr(self.w_hh_t.at(0)),
                    Arg::Ptr(w.w_hh),
                    Arg::I32(gh as i32),
                    Arg::I32(h as i32),
                ],
            )
        })?;
        self.gpu.record(&self.transposed, Lane::Side)
    }

    /// The CUDA-core backward's grid (blocks of units, of batch rows) and
    /// its product's chunk and shared memory per phase: all gates (phase
    /// 0), reset-before's r, z (phase 2) and n (phase 1).
    fn simt_backward_shape(&self, phase: i32) -> ((u32, u32), (usize, usize)) {
        let (b, h) = (self.batch, self.layout.hidden);
        let k = match phase {
            0 => self.layout.cell_dims().gate_rows(),
            2 => 2 * h,
            _ => h,
        };
        let grid = (
            h.div_ceil(STEP_UNITS_BWD) as u32,
            b.div_ceil(STEP_ROWS) as u32,
        );
        let max_smem = self.gpu.limits().max_smem_per_block;
        (grid, step_chunk(k, STEP_W_ROWS_BWD, max_smem))
    }

    /// The form the backward's time loop takes: a cluster loop where one is
    /// allowed and fits; else the persistent tensor-core loop where asked
    /// or where the CUDA-core one does not fit (and it does); else the
    /// CUDA-core persistent loop where it fits; else a launch per step.
    pub(super) fn backward_loop(&self) -> Result<BackwardLoop, Error> {
        if let Some(cp) = self.cluster_plan(true)? {
            return Ok(BackwardLoop::Cluster(cp));
        }
        let (grid, chunk) = self.simt_backward_shape(0);
        let gh = self.layout.cell_dims().gate_rows();
        let persist = self.kernel("tr_bwd_persist", "tr_bwd_persist_f16");
        let simt = self.use_persistent(persist, (grid.0 * grid.1) as usize, gh, chunk)?;
        if self.mma_backward || !simt {
            if let Some(mp) = self.mma_loop_plan(true)? {
                return Ok(BackwardLoop::PersistentMma(mp));
            }
        }
        Ok(if simt {
            BackwardLoop::Persistent
        } else {
            BackwardLoop::PerStep
        })
    }

    /// The backward's time loop ([`Self::backward_loop`] says which form),
    /// after W_hhᵀ ([`Self::transpose_beside`]):
    /// from the upstream gradient on every h in `dhs` to the pre-activation
    /// gradients `dih` and `dhh` of every step. `dhs` is left undefined:
    /// the per-step and persistent forms add each step's recurrent share
    /// into the slot of the step before.
    pub(super) fn backward_time_loop(&self, form: BackwardLoop) -> Result<(), Error> {
        let l = self.layout;
        let (b, h) = (self.batch, l.hidden);
        let gh = l.cell_dims().gate_rows();
        let bh = b * h;
        let lstm = l.cell == CellKind::Lstm;
        let before = l.cell == CellKind::GruResetBefore;
        let (hcat, ccat) = (self.hcat.at(0), addr(&self.ccat));
        let (dhs, dih, dhh) = (addr(&self.dhs), addr(&self.dih), addr(&self.dhh));
        let (gates, aux, dc, wt) = (
            self.gates.at(0),
            self.aux.at(0),
            addr(&self.dc),
            self.w_hh_t.at(0),
        );
        // The CUDA-core loops carry the LSTM's dc in global memory.
        if lstm && matches!(form, BackwardLoop::Persistent | BackwardLoop::PerStep) {
            self.zero(dc, bh)?;
        }
        self.gpu.wait(Lane::Main, &self.transposed)?;
        let (grid, (kc0, smem0)) = self.simt_backward_shape(0);
        // The loop kernels' parameters: the gradients, the recurrent
        // weights (W_hhᵀ, or W_hh itself for the reduce-scatter loops), the
        // forward's cache; then B, H, T.
        let sequence = |w: u64| {
            [
                Arg::Ptr(dih),
                Arg::Ptr(dhh),
                Arg::Ptr(dhs),
                Arg::Ptr(w),
                Arg::Ptr(gates),
                Arg::Ptr(aux),
                Arg::Ptr(hcat),
                Arg::Ptr(ccat),
            ]
        };
        let dims = [
            Arg::I32(b as i32),
            Arg::I32(h as i32),
            Arg::I32(self.steps as i32),
        ];
        let w_hh = self.read_weights().w_hh;
        match form {
            BackwardLoop::Cluster(cp) => {
                self.note_loop(true, cp.form);
                let reduce = cp.form == TimeLoop::ClusterReduce;
                self.launch_smem(
                    cp.kernel,
                    ((cp.clusters * cp.cluster) as u32, 1),
                    cp.smem,
                    &[
                        &sequence(if reduce { w_hh } else { wt })[..],
                        &dims,
                        &[Arg::I32(cp.units as i32), Arg::I32(cp.rows as i32)],
                    ]
                    .concat(),
                )?;
            }
            BackwardLoop::PersistentMma(mp) => {
                self.note_loop(true, TimeLoop::PersistentMma);
                let part = self.mma_partials(mp)?;
                let (flags, epoch) = if self.flagged_backward {
                    let what = "tensor-core backward flags";
                    self.flag_words(&self.backward_flags, mp.blocks, what)?
                } else {
                    (0, 0)
                };
                self.launch_coop(
                    mp.kernel,
                    (mp.blocks as u32, 1),
                    mp.smem,
                    &[
                        &sequence(w_hh)[..],
                        &[Arg::Ptr(part)],
                        &dims,
                        &[
                            Arg::I32(mp.units as i32),
                            Arg::Ptr(addr(&self.barrier)),
                            Arg::Ptr(flags),
                            // The kernel's unsigned epoch, bit for bit.
                            Arg::I32(epoch as i32),
                        ],
                    ]
                    .concat(),
                )?;
            }
            BackwardLoop::Persistent => {
                self.note_loop(true, TimeLoop::Persistent);
                let seq = sequence(wt);
                self.launch_coop(
                    self.kernel("tr_bwd_persist", "tr_bwd_persist_f16"),
                    grid,
                    smem0,
                    &[
                        &seq[..3],
                        &[Arg::Ptr(dc)],
                        &seq[3..],
                        &[Arg::I32(l.cell as i32)],
                        &dims,
                        &[Arg::I32(kc0 as i32), Arg::Ptr(addr(&self.barrier))],
                    ]
                    .concat(),
                )?;
            }
            BackwardLoop::PerStep => {
                self.note_loop(true, TimeLoop::PerStep);
                let kernel = self.kernel("tr_step_bwd", "tr_step_bwd_f16");
                for t in (0..self.steps).rev() {
                    let dh_t = f32_at(dhs, t * bh);
                    let dh_prev = if t == 0 { 0 } else { f32_at(dhs, (t - 1) * bh) };
                    let dhh_t = f32_at(dhh, t * b * gh);
                    // dhh of the step after (none after the last).
                    let dhh_next = if t + 1 == self.steps {
                        0
                    } else {
                        f32_at(dhh, (t + 1) * b * gh)
                    };
                    let step = |phase: i32, a: u64| {
                        let (_, (kc, smem)) = self.simt_backward_shape(phase);
                        self.launch_smem(
                            kernel,
                            grid,
                            smem,
                            &[
                                Arg::Ptr(f32_at(dih, t * b * gh)),
                                Arg::Ptr(dhh_t),
                                Arg::Ptr(dh_prev),
                                Arg::Ptr(dc),
                                Arg::Ptr(dh_t),
                                Arg::Ptr(a),
                                Arg::Ptr(wt),
                                Arg::Ptr(self.gates.at(t * b * gh)),
                                Arg::Ptr(self.aux.at(t * bh)),
                                Arg::Ptr(self.hcat.at(t * bh)),
                                Arg::Ptr(if lstm { f32_at(ccat, t * bh) } else { ccat }),
                                Arg::I32(l.cell as i32),
                                Arg::I32(phase),
                                Arg::I32(b as i32),
                                Arg::I32(h as i32),
                                Arg::I32(kc as i32),
                            ],
                        )
                    };
                    if before {
                        step(2, dhh_next)?;
                        step(1, f32_at(dhh_t, 2 * h))?;
                    } else {
                        step(0, dhh_next)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues the bias gradients, the column sums of `dih` and `dhh` over
    /// all T·B rows (`b_hh`'s zero when frozen).
    pub(super) fn bias_grads(&self, g: Weights, freeze_bias_hh: bool) -> Result<(), Error> {
        let gh = self.layout.cell_dims().gate_rows();
        let tb = self.steps * self.batch;
        self.colsum(g.b_ih, addr(&self.dih), tb, gh, gh, false)?;
        if freeze_bias_hh {
            self.zero(g.b_hh, gh)
        } else {
            self.colsum(g.b_hh, addr(&self.dhh), tb, gh, gh, false)
        }
    }

    /// Queues dW_hh, products over all T·B rows of the recurrent-side gate
    /// gradients and the previous h (reset-before's n block: r⊙h_prev).
    pub(super) fn recurrent_weight_grads(&self, g: Weights) -> Result<(), Error> {
        let l = self.layout;
        let h = l.hidden;
        let gh = l.cell_dims().gate_rows();
        let tb = self.steps * self.batch;
        let before = l.cell == CellKind::GruResetBefore;
        let (hcat, aux, dhh) = (self.hcat.at(0), self.aux.at(0), addr(&self.dhh));
        // dW_hh[rows] (rows, H) = dhh[:, rows]ᵀ · h_prev over all T·B rows;
        // reset-before's n block takes r⊙h_prev instead.
        let rows = if before { 2 * h } else { gh };
        self.gemm(Gemm {
            operands: self.gemm_operands(false),
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
            accumulate: false,
        })?;
        if before {
            self.gemm(Gemm {
                operands: self.gemm_operands(false),
                c: f32_at(g.w_hh, 2 * h * h),
                a: f32_at(dhh, 2 * h),
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
                accumulate: false,
            })?;
        }
        Ok(())
    }
}
