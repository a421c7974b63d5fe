//! Running a sequence: the recurrent layer over T steps, then (for a
//! language model) the output layer and the softmax cross-entropy loss.
//!
//! The caller owns the device buffers ([`SeqBuffers`], allocated once for
//! given T and B); every call queues work on the stream and returns, and
//! reading a result back waits for it.

use std::ffi::c_void;

use cust::memory::DeviceBuffer;
use recur_core::error::{check_len, check_tokens};
use recur_core::CellKind;

use crate::error::Error;
use crate::gpu::Gpu;
use crate::mem::{addr, alloc, download, elems, fill32, upload, Activations, BARRIER_WORDS, NAN32};
use crate::model::DeviceModel;
use crate::params::RecParams;
use crate::plan::{
    cluster_kernel, kernel_name, plan_sequence, Occupancy, Path, Plan, PlanOptions, Precision,
};

/// What feeds the cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Token ids `< input size`: the input product is a row gather of `W_ihᵀ`.
    Tokens,
    /// Dense vectors (T, B, I): the input product for all steps is one
    /// matrix product before the recurrence (stored in the activation precision).
    Dense,
}

/// Device buffers for T steps of B rows through one model.
pub struct SeqBuffers {
    steps: usize,
    batch: usize,
    hidden: usize,
    input: usize,
    vocab: usize,
    cell: CellKind,
    precision: Precision,
    kind: InputKind,
    /// (T, B) token ids (token input).
    tokens: DeviceBuffer<u32>,
    /// (T, B, I) dense input (dense input).
    inputs: Option<Activations>,
    /// (T, B, G·H) input projections (dense input).
    pregates: Option<DeviceBuffer<f32>>,
    h0: DeviceBuffer<f32>,
    c0: DeviceBuffer<f32>,
    hs: Activations,
    h_last: DeviceBuffer<f32>,
    c_last: DeviceBuffer<f32>,
    rh: DeviceBuffer<f32>,
    zb: DeviceBuffer<f32>,
    barrier: DeviceBuffer<u32>,
    /// `Path::PersistentMmaFlagged`: h exchanged as (2, B, H/2) words of
    /// {half2, flag} (ptx/src/flag_exchange.cuh), as u32 pairs;
    /// `Path::PersistentMmaBlockFlags`: one flag per block, the first
    /// words. Never poisoned (NaN bits would be a flag). Two u32 in f32
    /// mode.
    xchg: DeviceBuffer<u32>,
    /// The last flag a launch on `xchg` may have written.
    epoch: u32,
    /// The path of the last launch on `xchg`: the other one's words are
    /// not its flags, so a change of path zeroes the buffer first.
    xchg_path: Option<Path>,
    /// (T·B) targets, logits (T·B, V), per-row losses, mean loss (language models).
    targets: Option<DeviceBuffer<u32>>,
    logits: Option<DeviceBuffer<f32>>,
    row_loss: Option<DeviceBuffer<f32>>,
    loss: Option<DeviceBuffer<f32>>,
    // Last: the context outlives the buffers above.
    gpu: Gpu,
}

impl SeqBuffers {
    /// Buffers for `steps` × `batch` through `model`, states zeroed.
    pub fn new(
        model: &DeviceModel,
        steps: usize,
        batch: usize,
        kind: InputKind,
    ) -> Result<SeqBuffers, Error> {
        let gpu = model.gpu().clone();
        gpu.bind()?;
        for (what, value) in [("steps", steps), ("batch", batch)] {
            if value == 0 {
                return Err(recur_core::Error::Dim { what, value }.into());
            }
        }
        let layout = model.layout();
        let (h, input) = (layout.hidden, layout.vocab);
        let gh = layout.cell_dims().gate_rows();
        let tb = recur_core::error::mul("steps", steps, batch)?;
        let bh = elems(&[batch, h]);
        let f16 = model.precision() == Precision::F16;
        let lm = model.has_output_layer();
        let mut bufs = SeqBuffers {
            steps,
            batch,
            hidden: h,
            input,
            vocab: if lm { layout.vocab } else { 0 },
            cell: layout.cell,
            precision: model.precision(),
            kind,
            tokens: alloc(if kind == InputKind::Tokens { tb } else { 1 }, "tokens")?,
            inputs: match kind {
                InputKind::Dense => Some(Activations::new(elems(&[tb, input]), f16, "inputs")?),
                InputKind::Tokens => None,
            },
            pregates: match kind {
                InputKind::Dense => Some(alloc(elems(&[tb, gh]), "input projections")?),
                InputKind::Tokens => None,
            },
            h0: alloc(bh, "h0")?,
            c0: alloc(bh, "c0")?,
            hs: Activations::new(elems(&[tb, h]), f16, "hs")?,
            h_last: alloc(bh, "h_last")?,
            c_last: alloc(bh, "c_last")?,
            rh: alloc(bh, "r⊙h")?,
            zb: alloc(bh, "z")?,
            barrier: alloc(BARRIER_WORDS, "barrier")?,
            xchg: alloc(if f16 { elems(&[2, bh]) } else { 2 }, "h exchange")?,
            epoch: 0,
            xchg_path: None,
            targets: if lm {
                Some(alloc(tb, "targets")?)
            } else {
                None
            },
            logits: if lm {
                Some(alloc(elems(&[tb, layout.vocab]), "logits")?)
            } else {
                None
            },
            row_loss: if lm {
                Some(alloc(tb, "row losses")?)
            } else {
                None
            },
            loss: if lm { Some(alloc(1, "loss")?) } else { None },
            gpu,
        };
        fill32(&bufs.gpu, &mut bufs.barrier, 0)?;
        fill32(&bufs.gpu, &mut bufs.xchg, 0)?;
        fill32(&bufs.gpu, &mut bufs.h0, 0)?;
        fill32(&bufs.gpu, &mut bufs.c0, 0)?;
        fill32(&bufs.gpu, &mut bufs.tokens, 0)?;
        Ok(bufs)
    }

    /// Steps T.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Batch rows B.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Sets the (T, B) token ids (each `<` the input size).
    pub fn set_tokens(&mut self, tokens: &[u32]) -> Result<(), Error> {
        self.expect_kind(InputKind::Tokens)?;
        check_len("tokens", tokens, self.steps * self.batch)?;
        check_tokens("tokens", tokens, self.input)?;
        upload(&self.gpu, &mut self.tokens, tokens, "tokens")
    }

    /// Sets the (T, B, I) dense input (rounded to f16 in f16 mode).
    pub fn set_inputs(&mut self, inputs: &[f32]) -> Result<(), Error> {
        self.expect_kind(InputKind::Dense)?;
        check_len("inputs", inputs, self.steps * self.batch * self.input)?;
        let gpu = self.gpu.clone();
        self.inputs
            .as_mut()
            .map_or(Ok(()), |b| b.upload(&gpu, inputs, "inputs"))
    }

    /// Sets the (B, H) initial states (`c0` ignored unless LSTM; empty = zeros).
    pub fn set_state(&mut self, h0: &[f32], c0: &[f32]) -> Result<(), Error> {
        let bh = self.batch * self.hidden;
        check_len("h0", h0, bh)?;
        upload(&self.gpu, &mut self.h0, h0, "h0")?;
        if self.cell == CellKind::Lstm {
            check_len("c0", c0, bh)?;
            upload(&self.gpu, &mut self.c0, c0, "c0")?;
        }
        Ok(())
    }

    /// Sets the (T·B) targets of the loss (language models; each `< V`).
    pub fn set_targets(&mut self, targets: &[u32]) -> Result<(), Error> {
        let vocab = self.vocab;
        let n = self.steps * self.batch;
        let gpu = self.gpu.clone();
        let buf = self.targets.as_mut().ok_or(no_output_layer())?;
        check_len("targets", targets, n)?;
        check_tokens("targets", targets, vocab)?;
        upload(&gpu, buf, targets, "targets")
    }

    /// Fills every output with NaN (tests: a value a kernel forgets to
    /// write cannot pass for a result).
    pub fn poison(&mut self) -> Result<(), Error> {
        let gpu = self.gpu.clone();
        self.hs.poison(&gpu)?;
        for b in [
            &mut self.h_last,
            &mut self.c_last,
            &mut self.rh,
            &mut self.zb,
        ] {
            fill32(&gpu, b, NAN32)?;
        }
        for b in [
            &mut self.pregates,
            &mut self.logits,
            &mut self.row_loss,
            &mut self.loss,
        ]
        .into_iter()
        .flatten()
        {
            fill32(&gpu, b, NAN32)?;
        }
        Ok(())
    }

    /// Tests: the last flag written on the h exchange buffer
    /// (`Path::PersistentMmaFlagged`), as if that many had gone out, to run
    /// a launch across the point where the flags start again.
    #[doc(hidden)]
    pub fn set_exchange_epoch_for_tests(&mut self, last: u32) {
        self.epoch = last;
    }

    /// (T, B, H) hidden states (as stored: f16 values exactly in f16 mode).
    pub fn hs(&self) -> Result<Vec<f32>, Error> {
        self.hs
            .to_host(&self.gpu, self.steps * self.batch * self.hidden)
    }

    /// (B, H) h after the last step.
    pub fn h_last(&self) -> Result<Vec<f32>, Error> {
        download(&self.gpu, &self.h_last, self.batch * self.hidden)
    }

    /// (B, H) LSTM cell state after the last step.
    pub fn c_last(&self) -> Result<Vec<f32>, Error> {
        download(&self.gpu, &self.c_last, self.batch * self.hidden)
    }

    /// (T·B, V) logits of the last [`DeviceModel::output_loss`].
    pub fn logits(&self) -> Result<Vec<f32>, Error> {
        let b = self.logits.as_ref().ok_or(no_output_layer())?;
        download(&self.gpu, b, self.steps * self.batch * self.vocab)
    }

    /// (T·B) per-row losses of the last [`DeviceModel::output_loss`].
    pub fn row_losses(&self) -> Result<Vec<f32>, Error> {
        let b = self.row_loss.as_ref().ok_or(no_output_layer())?;
        download(&self.gpu, b, self.steps * self.batch)
    }

    /// Mean softmax cross-entropy of the last [`DeviceModel::output_loss`].
    pub fn loss(&self) -> Result<f32, Error> {
        let b = self.loss.as_ref().ok_or(no_output_layer())?;
        Ok(download(&self.gpu, b, 1)?[0])
    }

    fn expect_kind(&self, kind: InputKind) -> Result<(), Error> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(Error::Mismatch {
                what: "buffers' input kind",
                expected: format!("{kind:?}"),
                actual: format!("{:?}", self.kind),
            })
        }
    }
}

/// The epoch of a flagged launch of `steps` steps after flags up to `last`
/// (its flags are epoch + 1 ..= epoch + steps − 1), and whether the exchange
/// buffer must be zeroed first: 32-bit flags must never repeat on one
/// buffer, so before they would wrap they start again from 0 on a zeroed
/// buffer (whose words then carry no step's flag).
pub(crate) fn flag_epoch(last: u32, steps: usize) -> (u32, bool) {
    match u32::try_from(steps).ok().and_then(|s| last.checked_add(s)) {
        Some(_) => (last, false),
        None => (0, true),
    }
}

fn no_output_layer() -> Error {
    Error::Mismatch {
        what: "model",
        expected: "a language model with an output layer".to_owned(),
        actual: "a bare cell".to_owned(),
    }
}

impl Occupancy for Gpu {
    fn blocks_per_sm(&self, kernel: &'static str, smem: usize) -> usize {
        Gpu::blocks_per_sm(self, kernel, smem).unwrap_or(0)
    }
    fn max_clusters(&self, kernel: &'static str, cluster: usize, smem: usize) -> usize {
        Gpu::max_active_clusters(self, kernel, cluster, smem).unwrap_or(0)
    }
}

impl DeviceModel {
    fn check_buffers(&self, bufs: &SeqBuffers) -> Result<(), Error> {
        let l = self.layout();
        let mine = (l.cell, l.hidden, l.vocab, self.precision());
        let theirs = (bufs.cell, bufs.hidden, bufs.input, bufs.precision);
        if mine != theirs {
            return Err(Error::Mismatch {
                what: "buffers (cell, hidden, input, precision)",
                expected: format!("{mine:?}"),
                actual: format!("{theirs:?}"),
            });
        }
        Ok(())
    }

    /// The plan [`DeviceModel::forward`] would use for `batch` rows.
    pub fn plan(&self, batch: usize, opts: PlanOptions) -> Result<Plan, Error> {
        let l = self.layout();
        let gpu = self.gpu();
        plan_sequence(
            &gpu.limits(),
            gpu,
            l.cell,
            l.hidden,
            batch,
            self.precision(),
            opts,
        )
        .ok_or(Error::Limit {
            what: "hidden size (no kernel configuration fits the device)",
            value: l.hidden,
            limit: 0,
        })
    }

    /// Queues the recurrent layer over the T steps of `bufs`: `hs`,
    /// `h_last`, `c_last` from the inputs and initial states. Returns the
    /// plan it ran.
    pub fn forward(&self, bufs: &mut SeqBuffers, opts: PlanOptions) -> Result<Plan, Error> {
        self.check_buffers(bufs)?;
        let gpu = self.gpu();
        gpu.bind()?;
        let l = self.layout();
        let (t, b, h) = (bufs.steps, bufs.batch, l.hidden);
        let gh = l.cell_dims().gate_rows();
        let w = self.weights();
        if bufs.kind == InputKind::Dense {
            // pregates (T·B, G·H) = inputs (T·B, I) · W_ihᵀ, no bias (the cell adds it).
            let inputs = bufs.inputs.as_ref().map(Activations::addr).unwrap_or(0);
            let pregates = bufs.pregates.as_ref().map(|p| addr(p)).unwrap_or(0);
            self.gemm(
                pregates,
                inputs,
                w.w_ih,
                0,
                t * b,
                gh,
                l.vocab,
                "input projection",
            )?;
        }
        let plan = self.plan(b, opts)?;
        let kernel = match plan.path {
            Path::Cluster => cluster_kernel(plan.cluster, l.cell, self.precision()),
            _ => kernel_name(plan.path, l.cell, self.precision()),
        };
        let mut p = RecParams {
            tokens: if bufs.kind == InputKind::Tokens {
                addr(&bufs.tokens)
            } else {
                0
            },
            pregates: bufs.pregates.as_ref().map(|p| addr(p)).unwrap_or(0),
            table: w.table,
            w_hh: w.w_hh,
            b_ih: w.b_ih,
            b_hh: w.b_hh,
            h0: addr(&bufs.h0),
            c0: addr(&bufs.c0),
            hs: bufs.hs.addr(),
            h_last: addr(&bufs.h_last),
            c_last: addr(&bufs.c_last),
            rh: addr(&bufs.rh),
            zb: addr(&bufs.zb),
            barrier: addr(&bufs.barrier),
            xchg: addr(&bufs.xchg),
            t: t as i32,
            b: b as i32,
            h: h as i32,
            units: plan.units as i32,
            ldb: plan.ldb as i32,
            aux: plan.ntc as i32,
            ..RecParams::default()
        };
        let shape = || {
            format!(
                "T={t} B={b} H={h} {:?} units={} blocks={}",
                self.precision(),
                plan.units,
                plan.blocks
            )
        };
        let grid = (plan.blocks as u32, 1);
        match plan.path {
            Path::Cluster | Path::ClusterRegs | Path::ClusterMma => {
                let mut args: [*mut c_void; 1] = [&mut p as *mut _ as *mut c_void];
                // SAFETY: one RecParams by value (units = hidden units per CTA,
                // ldb = batch rows per cluster); every address is a live buffer
                // sized for (T, B, H); the grid is whole clusters of the
                // kernel's compiled size.
                unsafe { gpu.launch(kernel, grid, plan.smem, false, &mut args, shape)? };
            }
            Path::PersistentMmaFlagged | Path::PersistentMmaBlockFlags => {
                let (epoch, reset) = flag_epoch(bufs.epoch, t);
                if reset || bufs.xchg_path != Some(plan.path) {
                    fill32(gpu, &mut bufs.xchg, 0)?;
                    bufs.xchg_path = Some(plan.path);
                }
                p.epoch = epoch;
                if plan.path == Path::PersistentMmaBlockFlags {
                    // The barrier kernel, on flags: ceil(H / U) words of
                    // the 2·B·H (U ≥ 4).
                    (p.flags, p.xchg) = (p.xchg, 0);
                }
                // Flags epoch + 1 ..= epoch + T - 1 go out; the next launch
                // starts past them even if this one fails.
                bufs.epoch = epoch + t as u32;
                let mut args: [*mut c_void; 1] = [&mut p as *mut _ as *mut c_void];
                // SAFETY: one RecParams by value; every address is a live buffer
                // sized for (T, B, H), `xchg` for (2, B, H/2) words or
                // `flags` for more than one per block.
                unsafe { gpu.launch(kernel, grid, plan.smem, true, &mut args, shape)? };
            }
            Path::PersistentSimt | Path::PersistentMma => {
                let mut args: [*mut c_void; 1] = [&mut p as *mut _ as *mut c_void];
                // SAFETY: one RecParams by value; every address is a live buffer
                // sized for (T, B, H) as checked above.
                unsafe { gpu.launch(kernel, grid, plan.smem, true, &mut args, shape)? };
            }
            Path::PerStep => {
                let phases: &[i32] = if l.cell == CellKind::GruResetBefore {
                    &[1, 2]
                } else {
                    &[0]
                };
                for step in 0..t {
                    for &phase in phases {
                        p.t0 = step as i32;
                        p.phase = phase;
                        let mut args: [*mut c_void; 1] = [&mut p as *mut _ as *mut c_void];
                        // SAFETY: as above, one step.
                        unsafe { gpu.launch(kernel, grid, plan.smem, false, &mut args, shape)? };
                    }
                }
            }
        }
        Ok(plan)
    }

    /// Queues the input product of a dense-input sequence for all steps at
    /// once, `W_ih·x` (T·B, G·H), no bias: the first part of
    /// [`DeviceModel::forward`], public for timing it alone.
    pub fn input_projection(&self, bufs: &mut SeqBuffers) -> Result<(), Error> {
        self.check_buffers(bufs)?;
        bufs.expect_kind(InputKind::Dense)?;
        self.gpu().bind()?;
        let l = self.layout();
        let w = self.weights();
        let inputs = bufs.inputs.as_ref().map(Activations::addr).unwrap_or(0);
        let pregates = bufs.pregates.as_ref().map(|p| addr(p)).unwrap_or(0);
        let rows = bufs.steps * bufs.batch;
        let gh = l.cell_dims().gate_rows();
        self.gemm(
            pregates,
            inputs,
            w.w_ih,
            0,
            rows,
            gh,
            l.vocab,
            "input projection",
        )
    }

    /// Queues the output layer and the loss on the `hs` of the last
    /// [`DeviceModel::forward`]: logits (T·B, V) = hs · W_dᵀ + b_d, then the
    /// mean softmax cross-entropy against the targets.
    pub fn output_loss(&self, bufs: &mut SeqBuffers) -> Result<(), Error> {
        self.check_buffers(bufs)?;
        if !self.has_output_layer() {
            return Err(no_output_layer());
        }
        let gpu = self.gpu();
        gpu.bind()?;
        let l = self.layout();
        let n = bufs.steps * bufs.batch;
        let w = self.weights();
        let logits = bufs.logits.as_ref().map(|b| addr(b)).unwrap_or(0);
        self.gemm(
            logits,
            bufs.hs.addr(),
            w.w_d,
            w.b_d,
            n,
            l.vocab,
            l.hidden,
            "output layer",
        )?;
        let mut loss_rows = bufs.row_loss.as_ref().map(|b| addr(b)).unwrap_or(0);
        let mut logits_arg = logits;
        let mut targets = bufs.targets.as_ref().map(|b| addr(b)).unwrap_or(0);
        let (mut n_arg, mut v_arg) = (n as i32, l.vocab as i32);
        let mut args: [*mut c_void; 5] = [
            &mut loss_rows as *mut _ as *mut c_void,
            &mut logits_arg as *mut _ as *mut c_void,
            &mut targets as *mut _ as *mut c_void,
            &mut n_arg as *mut _ as *mut c_void,
            &mut v_arg as *mut _ as *mut c_void,
        ];
        let shape = || format!("N={n} V={}", l.vocab);
        // SAFETY: xent_rows(float* loss (N), const float* logits (N·V), const int* targets (N), int N, int V).
        unsafe { gpu.launch("xent_rows", (n as u32, 1), 0, false, &mut args, shape)? };
        let mut out = bufs.loss.as_ref().map(|b| addr(b)).unwrap_or(0);
        let mut args: [*mut c_void; 3] = [
            &mut out as *mut _ as *mut c_void,
            &mut loss_rows as *mut _ as *mut c_void,
            &mut n_arg as *mut _ as *mut c_void,
        ];
        // SAFETY: mean_rows(float* out (1), const float* v (N), int N).
        unsafe { gpu.launch("mean_rows", (1, 1), 0, false, &mut args, shape) }
    }

    /// Queues `c (M, N) f32 = a (M, K) · b (N, K)ᵀ + bias`, `a`, `b`, `bias`
    /// in the model's storage precision (`bias` 0: none).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        c: u64,
        a: u64,
        b: u64,
        bias: u64,
        m: usize,
        n: usize,
        k: usize,
        what: &'static str,
    ) -> Result<(), Error> {
        let (kernel, tile) = match self.precision() {
            Precision::F32 => ("gemm_nt_f32", 64),
            Precision::F16 => ("gemm_nt_f16", 128),
        };
        let (mut c, mut a, mut b, mut bias) = (c, a, b, bias);
        let (mut mi, mut ni, mut ki) = (m as i32, n as i32, k as i32);
        let mut args: [*mut c_void; 7] = [
            &mut c as *mut _ as *mut c_void,
            &mut a as *mut _ as *mut c_void,
            &mut b as *mut _ as *mut c_void,
            &mut bias as *mut _ as *mut c_void,
            &mut mi as *mut _ as *mut c_void,
            &mut ni as *mut _ as *mut c_void,
            &mut ki as *mut _ as *mut c_void,
        ];
        let grid = (n.div_ceil(tile) as u32, m.div_ceil(tile) as u32);
        let shape = || format!("{what}: M={m} N={n} K={k}");
        // SAFETY: gemm_nt_*(float* c (M·N), const T* a (M·K), const T* b (N·K),
        // const T* bias (N) or null, int M, int N, int K); callers pass
        // buffers of those sizes.
        unsafe { self.gpu().launch(kernel, grid, 0, false, &mut args, shape) }
    }
}

#[cfg(test)]
mod tests {
    use super::flag_epoch;

    #[test]
    fn flag_epochs_never_repeat_a_flag_and_restart_zeroed_before_wrapping() {
        // Consecutive launches: each starts past the last flag of the one before.
        let mut last = 0u32;
        for steps in [1usize, 35, 1024, 7] {
            let (epoch, reset) = flag_epoch(last, steps);
            assert!(!reset);
            assert_eq!(epoch, last);
            last = epoch + steps as u32;
        }
        assert_eq!(last, 1 + 35 + 1024 + 7);
        // The highest flag fits exactly: no reset.
        assert_eq!(flag_epoch(u32::MAX - 10, 10), (u32::MAX - 10, false));
        // One more would wrap: zero the buffer, start again.
        assert_eq!(flag_epoch(u32::MAX - 10, 11), (0, true));
        assert_eq!(flag_epoch(u32::MAX, 1), (0, true));
    }
}
