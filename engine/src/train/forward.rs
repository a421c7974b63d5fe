//! A mini-batch's forward: token upload, input part, the time loop (cluster,
//! persistent or per-step) with the cache the backward reads, output layer
//! and loss into the device's statistics.

use super::*;

impl DeviceTrainer {
    /// Queues a mini-batch forward from the carried state, which it advances
    /// to the batch's final state, and the mean softmax cross-entropy (added
    /// to the statistics; [`DeviceTrainer::loss`] reads it back). No host
    /// wait. `inputs`, `targets`: (T, B).
    pub fn forward(&mut self, inputs: &[u32], targets: &[u32]) -> Result<(), Error> {
        self.forward_done = false;
        let l = self.layout;
        let tb = self.steps * self.batch;
        recur_core::error::check_len("inputs", inputs, tb)?;
        recur_core::error::check_len("targets", targets, tb)?;
        recur_core::error::check_tokens("inputs", inputs, l.vocab)?;
        recur_core::error::check_tokens("targets", targets, l.vocab)?;
        self.gpu.bind()?;
        // The last forward's mean (side stream) has read its row losses.
        self.join_side()?;
        self.mark(Mark::ForwardStart)?;
        let (d_tokens, d_targets) = (addr(&self.tokens), self.token_addrs().0);
        self.staging.upload(&self.gpu, d_tokens, inputs, targets)?;
        self.ops.set(self.ops.get() + 1);
        let batch_index = self.batches;
        self.batches += 1;
        let (b, h, v) = (self.batch, l.hidden, l.vocab);
        let bh = b * h;
        let w = self.read_weights();
        self.carried_state_in()?;
        self.mark(Mark::ForwardLoopStart)?;
        self.forward_time_loop(w, d_tokens, v)?;
        self.mark(Mark::ForwardLoopEnd)?;
        // The carried state is now the last step's slot (see
        // carried_in_last_slot): no copy out.
        self.carried_in_last_slot.set(true);
        // logits (T·B, V) = hs · W_dᵀ + b_d
        self.gemm(Gemm {
            operands: self.gemm_operands(true),
            c: addr(&self.logits),
            a: self.hcat.at(bh),
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
            (tb.div_ceil(8) as u32, 1),
            &[
                Arg::Ptr(addr(&self.logits)),
                Arg::Ptr(addr(&self.row_loss)),
                Arg::Ptr(d_targets),
                Arg::I32(tb as i32),
                Arg::I32(v as i32),
            ],
        )?;
        // The mean loss beside the backward (nothing on the main stream
        // reads it before the side stream is joined: at the end of the
        // backward, or by clip and the updates).
        self.beside(|| {
            self.launch(
                "tr_mean",
                (1, 1),
                &[
                    Arg::Ptr(addr(&self.loss)),
                    Arg::Ptr(addr(&self.row_loss)),
                    Arg::I32(tb as i32),
                    Arg::Ptr(addr(&self.stats)),
                    Arg::I64(batch_index as i64),
                ],
            )
        })?;
        self.mark(Mark::ForwardEnd)?;
        self.forward_done = true;
        Ok(())
    }

    /// The token buffer's targets (T, B) and rows grouped by input token,
    /// `order` (T·B) and `starts` (V + 1), as staging.rs lays them out.
    pub(super) fn token_addrs(&self) -> (u64, u64, u64) {
        let (targets, order, starts) = staging::upload_offsets(self.steps * self.batch);
        let at = |words: usize| addr(&self.tokens) + (words * 4) as u64;
        (at(targets), at(order), at(starts))
    }

    /// Queues the carried state into slot 0 of the saved states (h in the
    /// storage type, the LSTM's c in f32), the time loop's initial state:
    /// from the last forward's last slot where it still is (a copy within
    /// the buffers, the stored values as they are), else from `state_h`.
    pub(super) fn carried_state_in(&self) -> Result<(), Error> {
        let bh = self.batch * self.layout.hidden;
        let lstm = self.layout.cell == CellKind::Lstm;
        if self.carried_in_last_slot.get() {
            let last = self.steps * bh;
            let h_bytes = self.hcat.bytes_of(bh);
            self.copy_bytes(self.hcat.at(0), self.hcat.at(last), h_bytes)?;
            if lstm {
                self.copy(addr(&self.ccat), f32_at(addr(&self.ccat), last), bh)?;
            }
            return Ok(());
        }
        self.state_in(self.hcat.at(0), addr(&self.state_h), bh)?;
        if lstm {
            self.copy(addr(&self.ccat), addr(&self.state_c), bh)?;
        }
        Ok(())
    }

    /// Queues the last forward's last slot into `state_h` (and `state_c`)
    /// where the carried state still is there, for a reader of the state.
    pub(super) fn settle_carried_state(&self) -> Result<(), Error> {
        if !self.carried_in_last_slot.replace(false) {
            return Ok(());
        }
        let last = self.steps * self.batch * self.layout.hidden;
        let bh = self.batch * self.layout.hidden;
        self.state_out(addr(&self.state_h), self.hcat.at(last), bh)?;
        if self.layout.cell == CellKind::Lstm {
            self.copy(addr(&self.state_c), f32_at(addr(&self.ccat), last), bh)?;
        }
        Ok(())
    }

    /// The forward's time loop over the batch's T steps (cluster,
    /// persistent on tensor cores or CUDA cores, or per-step; the first
    /// that fits and is allowed, the tensor-core persistent loop before
    /// the CUDA-core one only where asked or where that does not fit), from
    /// the initial state in slot 0 of the saved states: every step's h
    /// (and c), gates and gate cache. The input part of row (t, b) is
    /// column `d_tokens[t·B + b]` of `w.w_ih` (G·H, `v`): a token's column
    /// of W_ih, or the dense input's projection (dense.rs).
    pub(super) fn forward_time_loop(
        &self,
        w: Weights,
        d_tokens: u64,
        v: usize,
    ) -> Result<(), Error> {
        let l = self.layout;
        let (b, h) = (self.batch, l.hidden);
        let (hcat, ccat) = (self.hcat.at(0), addr(&self.ccat));
        let grid = (
            h.div_ceil(STEP_UNITS_FWD) as u32,
            b.div_ceil(STEP_ROWS) as u32,
        );
        let (gates, aux) = (self.gates.at(0), self.aux.at(0));
        let max_smem = self.gpu.limits().max_smem_per_block;
        let (kc, smem) = step_chunk(h, STEP_W_ROWS_FWD, max_smem);
        let blocks = (grid.0 * grid.1) as usize;
        let persist = self.kernel("tr_fwd_persist", "tr_fwd_persist_f16");
        let cluster = self.cluster_plan(false)?;
        // The persistent loops' plans are asked only where no cluster runs.
        let simt_persistent =
            cluster.is_none() && self.use_persistent(persist, blocks, h, (kc, smem))?;
        let mma = match cluster {
            None if self.mma_forward || !simt_persistent => self.mma_loop_plan(false)?,
            _ => None,
        };
        // The kernels' sequence parameters (train_fwd_item.cuh: TrFwdArgs;
        // tr_fwd_persist takes the cell after the tokens).
        let sequence = [
            Arg::Ptr(hcat),
            Arg::Ptr(ccat),
            Arg::Ptr(gates),
            Arg::Ptr(aux),
            Arg::Ptr(w.w_hh),
            Arg::Ptr(w.w_ih),
            Arg::Ptr(w.b_ih),
            Arg::Ptr(w.b_hh),
            Arg::Ptr(d_tokens),
            Arg::I32(b as i32),
            Arg::I32(h as i32),
            Arg::I32(v as i32),
            Arg::I32(self.steps as i32),
        ];
        if let Some(cp) = cluster {
            self.note_loop(false, cp.form);
            self.launch_smem(
                cp.kernel,
                ((cp.clusters * cp.cluster) as u32, 1),
                cp.smem,
                &[
                    &sequence[..],
                    &[Arg::I32(cp.units as i32), Arg::I32(cp.rows as i32)],
                ]
                .concat(),
            )?;
        } else if let Some(mp) = mma {
            self.note_loop(false, TimeLoop::PersistentMma);
            let mut args = [
                &sequence[..],
                &[
                    Arg::I32(mp.units as i32),
                    Arg::I32(mp.ntc as i32),
                    Arg::Ptr(addr(&self.barrier)),
                ],
            ]
            .concat();
            // The flagged words pair units (2i, 2i + 1): even H only.
            let sync = match self.forward_sync {
                ForwardSync::FlaggedWords if h % 2 == 1 => ForwardSync::BlockFlags,
                sync => sync,
            };
            let (kernel, (flags, epoch)) = match sync {
                ForwardSync::GridBarrier => (mp.kernel, (0, 0)),
                ForwardSync::BlockFlags => {
                    let what = "tensor-core forward flags";
                    let flags = self.flag_words(&self.forward_flags, mp.blocks, what)?;
                    (mp.kernel, flags)
                }
                ForwardSync::FlaggedWords => {
                    let what = "tensor-core forward's flagged words";
                    let words = self.flag_words(&self.forward_flags, 2 * b * h, what)?;
                    (persist_mma::flagged_forward_kernel(l.cell), words)
                }
            };
            // The kernel's unsigned epoch, bit for bit.
            args.extend([Arg::Ptr(flags), Arg::I32(epoch as i32)]);
            self.launch_coop(kernel, (mp.blocks as u32, 1), mp.smem, &args)?;
        } else if simt_persistent {
            self.note_loop(false, TimeLoop::Persistent);
            self.launch_coop(
                persist,
                grid,
                smem,
                &[
                    &sequence[..9],
                    &[Arg::I32(l.cell as i32)],
                    &sequence[9..],
                    &[Arg::I32(kc as i32), Arg::Ptr(addr(&self.barrier))],
                ]
                .concat(),
            )?;
        } else {
            self.note_loop(false, TimeLoop::PerStep);
            self.forward_steps(grid, (kc, smem), w, d_tokens, v)?;
        }
        Ok(())
    }

    /// The forward's time loop, one launch per step (two for GRU
    /// reset-before).
    fn forward_steps(
        &self,
        grid: (u32, u32),
        (kc, smem): (usize, usize),
        w: Weights,
        d_tokens: u64,
        v: usize,
    ) -> Result<(), Error> {
        let l = self.layout;
        let (b, h) = (self.batch, l.hidden);
        let gh = l.cell_dims().gate_rows();
        let bh = b * h;
        let lstm = l.cell == CellKind::Lstm;
        let ccat = addr(&self.ccat);
        let kernel = self.kernel("tr_step_fwd", "tr_step_fwd_f16");
        for t in 0..self.steps {
            let h_prev = self.hcat.at(t * bh);
            let h_out = self.hcat.at((t + 1) * bh);
            let (c_prev, c_out) = if lstm {
                (f32_at(ccat, t * bh), f32_at(ccat, (t + 1) * bh))
            } else {
                (ccat, ccat)
            };
            let aux_t = self.aux.at(t * bh);
            let step = |phase: i32, a: u64| {
                self.launch_smem(
                    kernel,
                    grid,
                    smem,
                    &[
                        Arg::Ptr(h_out),
                        Arg::Ptr(c_out),
                        Arg::Ptr(self.gates.at(t * b * gh)),
                        Arg::Ptr(aux_t),
                        Arg::Ptr(a),
                        Arg::Ptr(w.w_hh),
                        Arg::Ptr(w.w_ih),
                        Arg::Ptr(w.b_ih),
                        Arg::Ptr(w.b_hh),
                        Arg::Ptr(d_tokens + (t * b * 4) as u64),
                        Arg::Ptr(h_prev),
                        Arg::Ptr(c_prev),
                        Arg::I32(l.cell as i32),
                        Arg::I32(phase),
                        Arg::I32(b as i32),
                        Arg::I32(h as i32),
                        Arg::I32(v as i32),
                        Arg::I32(kc as i32),
                    ],
                )
            };
            if l.cell == CellKind::GruResetBefore {
                step(1, h_prev)?;
                step(2, aux_t)?;
            } else {
                step(0, h_prev)?;
            }
        }
        Ok(())
    }
}
