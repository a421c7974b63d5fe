//! Text generation with the loop on the device: a prefix of P tokens, then
//! N tokens sampled one after the other (each fed back as the next input),
//! as d2l's `predict`: the logits after the last prefix token give the
//! first generated token. The host queues the work and waits once, when it
//! reads the tokens.

use std::ffi::c_void;

use cust::memory::DeviceBuffer;
use recur_core::error::{check_len, check_tokens};
use recur_core::CellKind;

use crate::error::Error;
use crate::gpu::Gpu;
use crate::mem::{addr, alloc, download, elems, fill32, upload, Activations, BARRIER_WORDS, NAN32};
use crate::model::DeviceModel;
use crate::params::{GenParams, RecParams, GEN_AHEAD, GEN_BLOCK_SENDS, GEN_SPLIT_ARGMAX};
use crate::plan::{
    gen_cluster_kernel, gen_reg_cluster_kernel, generate_kernel, kernel_name, plan_generate,
    plan_generate_cluster, plan_generate_cluster_regs, plan_sequence, GenPlan, Path, PlanOptions,
    Precision,
};
use crate::rng::row_seed;

/// How each token is chosen from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The first maximum (d2l's `argmax`).
    Greedy,
    /// A draw from `softmax(logits / temperature)`, recur-core's sampler with
    /// the numbers of [`crate::rng`] (`temperature` 0 = greedy).
    Temperature {
        /// Finite, ≥ 0.
        temperature: f32,
        /// Seed of the random numbers.
        seed: u64,
    },
}

/// How generation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenPath {
    /// One cooperative launch for everything.
    Persistent,
    /// Launches per step, queued back to back.
    PerStep,
    /// One launch of thread-block clusters (sm_90), no grid-wide barrier.
    Cluster,
    /// One launch of clusters of 16 holding W_hh in registers (sm_90; H ≤
    /// 256). Not chosen automatically yet: it has not run on a GPU
    /// (ptx/src/generate_cluster_regs.cu); tests and benches force it.
    ClusterRegs,
}

/// Device buffers for generating `count` tokens after a `prefix_len`-token
/// prefix, for `batch` rows at once.
pub struct GenBuffers {
    batch: usize,
    prefix_len: usize,
    count: usize,
    hidden: usize,
    vocab: usize,
    cell: CellKind,
    precision: Precision,
    prefix: DeviceBuffer<u32>,
    out: DeviceBuffer<u32>,
    feed: DeviceBuffer<u32>,
    logits: DeviceBuffer<f32>,
    hx: Activations,
    h0: DeviceBuffer<f32>,
    c0: DeviceBuffer<f32>,
    h_last: DeviceBuffer<f32>,
    c_last: DeviceBuffer<f32>,
    rh: DeviceBuffer<f32>,
    zb: DeviceBuffer<f32>,
    barrier: DeviceBuffer<u32>,
    product_ahead: bool,
    block_sends: bool,
    split_argmax: bool,
    gpu: Gpu,
}

impl GenBuffers {
    /// Buffers for `model` (a language model), zero initial state.
    pub fn new(
        model: &DeviceModel,
        batch: usize,
        prefix_len: usize,
        count: usize,
    ) -> Result<GenBuffers, Error> {
        if !model.has_output_layer() {
            return Err(Error::Mismatch {
                what: "model",
                expected: "a language model with an output layer".to_owned(),
                actual: "a bare cell".to_owned(),
            });
        }
        for (what, value) in [
            ("batch", batch),
            ("prefix length", prefix_len),
            ("count", count),
        ] {
            if value == 0 {
                return Err(recur_core::Error::Dim { what, value }.into());
            }
        }
        let gpu = model.gpu().clone();
        gpu.bind()?;
        let l = model.layout();
        let bh = elems(&[batch, l.hidden]);
        let steps = prefix_len.saturating_add(count - 1);
        let mut bufs = GenBuffers {
            batch,
            prefix_len,
            count,
            hidden: l.hidden,
            vocab: l.vocab,
            cell: l.cell,
            precision: model.precision(),
            prefix: alloc(elems(&[prefix_len, batch]), "prefix")?,
            out: alloc(elems(&[count, batch]), "generated tokens")?,
            feed: alloc(batch, "fed tokens")?,
            logits: alloc(elems(&[batch, l.vocab]), "logits")?,
            // The per-step path keeps every step's h; the persistent one two.
            hx: Activations::new(
                elems(&[steps.max(2), bh]),
                model.precision() == Precision::F16,
                "h",
            )?,
            h0: alloc(bh, "h0")?,
            c0: alloc(bh, "c0")?,
            h_last: alloc(bh, "h_last")?,
            c_last: alloc(bh, "c_last")?,
            rh: alloc(bh, "r⊙h")?,
            zb: alloc(bh, "z")?,
            barrier: alloc(BARRIER_WORDS, "barrier")?,
            product_ahead: false,
            block_sends: false,
            split_argmax: false,
            gpu,
        };
        fill32(&bufs.gpu, &mut bufs.barrier, 0)?;
        fill32(&bufs.gpu, &mut bufs.h0, 0)?;
        fill32(&bufs.gpu, &mut bufs.c0, 0)?;
        Ok(bufs)
    }

    /// Sets the (P, B) prefix: `prefix[s·B + b]` is row b's token at step s.
    pub fn set_prefix(&mut self, prefix: &[u32]) -> Result<(), Error> {
        check_len("prefix", prefix, self.prefix_len * self.batch)?;
        check_tokens("prefix", prefix, self.vocab)?;
        upload(&self.gpu, &mut self.prefix, prefix, "prefix")
    }

    /// Sets the (B, H) initial states (`c0` ignored unless LSTM).
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

    /// On the cluster paths ([`GenPath::Cluster`], [`GenPath::ClusterRegs`]):
    /// whether each step's recurrent product runs ahead, during the
    /// previous step's logits exchange, instead of after the draw. The
    /// product depends on h only, not on the drawn token, so ahead it
    /// leaves the draw followed by the token's input gather and the cell
    /// alone. The shared-memory kernel takes it where a cluster's batch
    /// rows fit one product pass (8 rows, and units · rows ≤ 256); GRU
    /// reset-before takes its r and z products ahead, its n product still
    /// follows the draw. Same sums, same tokens. Off by default until a GPU
    /// has timed it (`benches/engine_generate.rs`); the other paths ignore
    /// it.
    pub fn set_product_ahead(&mut self, on: bool) {
        self.product_ahead = on;
    }

    /// On the cluster paths: whether each exchange (h, GRU reset-before's
    /// r ⊙ h, the logits) is written into the CTA's own buffer and then,
    /// after a block barrier, sent to the other CTAs by every thread (16
    /// bytes at a time where the block is aligned), instead of each value's
    /// thread storing it into every CTA while the other warps wait. The
    /// register kernel ([`GenPath::ClusterRegs`]) takes it for the logits
    /// only: its h already goes out from every copy of an item. Same
    /// values. Off by default until a GPU has timed it; the other paths
    /// ignore it.
    pub fn set_block_sends(&mut self, on: bool) {
        self.block_sends = on;
    }

    /// On the cluster paths, for greedy generation (temperature 0): whether
    /// the draw is split across the cluster. Each CTA sends the first
    /// maximum of its own logits rows (one {value, index} pair to every
    /// CTA) instead of the rows themselves, and one warp per batch row
    /// takes the token from the cluster's pairs, instead of a block-wide
    /// scan of all V logits in every CTA. The same token (ties to the lowest
    /// index; a NaN or an infinite maximum gives V as before). Off by
    /// default until a GPU has timed it; temperature sampling and the other
    /// paths ignore it.
    pub fn set_split_argmax(&mut self, on: bool) {
        self.split_argmax = on;
    }

    /// Fills the outputs with NaN / an out-of-range token (tests).
    pub fn poison(&mut self) -> Result<(), Error> {
        let gpu = self.gpu.clone();
        fill32(&gpu, &mut self.out, u32::MAX)?;
        for b in [&mut self.logits, &mut self.h_last, &mut self.c_last] {
            fill32(&gpu, b, NAN32)?;
        }
        self.hx.poison(&gpu)
    }

    /// The (N, B) generated tokens: `tokens[i·B + b]` is row b's i-th. Waits
    /// for the generation. A row whose logits became NaN or infinite has
    /// the vocabulary size in its place: this is reported as an error.
    pub fn tokens(&self) -> Result<Vec<u32>, Error> {
        let t = download(&self.gpu, &self.out, self.count * self.batch)?;
        match t.iter().position(|&x| x as usize >= self.vocab) {
            None => Ok(t),
            Some(_) => Err(recur_core::Error::Value { what: "logits" }.into()),
        }
    }

    /// (B, H) h after the last cell step.
    pub fn h_last(&self) -> Result<Vec<f32>, Error> {
        download(&self.gpu, &self.h_last, self.batch * self.hidden)
    }

    /// (B, V) logits that gave the last generated token.
    pub fn last_logits(&self) -> Result<Vec<f32>, Error> {
        download(&self.gpu, &self.logits, self.batch * self.vocab)
    }
}

impl DeviceModel {
    /// Queues the generation of `bufs`' N tokens. `per_step` forces the
    /// fallback path (tests); otherwise the cluster kernel (sm_90) or the
    /// persistent kernel runs where the weights fit on chip.
    pub fn generate(
        &self,
        bufs: &mut GenBuffers,
        sampling: Sampling,
        per_step: bool,
    ) -> Result<GenPath, Error> {
        let path = if per_step {
            Some(GenPath::PerStep)
        } else {
            None
        };
        self.generate_on(bufs, sampling, path, None)
    }

    /// [`DeviceModel::generate`] on a forced path (`None`: the fastest that
    /// fits, [`GenPath::ClusterRegs`] excepted) and, for [`GenPath::Cluster`],
    /// a forced cluster size (8 or 16). A forced path that does not fit the
    /// device or the model is an error.
    pub fn generate_on(
        &self,
        bufs: &mut GenBuffers,
        sampling: Sampling,
        path: Option<GenPath>,
        cluster: Option<usize>,
    ) -> Result<GenPath, Error> {
        let l = self.layout();
        let mine = (l.cell, l.hidden, l.vocab, self.precision());
        let theirs = (bufs.cell, bufs.hidden, bufs.vocab, bufs.precision);
        if mine != theirs {
            return Err(Error::Mismatch {
                what: "buffers (cell, hidden, vocab, precision)",
                expected: format!("{mine:?}"),
                actual: format!("{theirs:?}"),
            });
        }
        let (inv_temp, seed) = match sampling {
            Sampling::Greedy => (0.0, 0),
            Sampling::Temperature { temperature, seed } => {
                if !(temperature.is_finite() && temperature >= 0.0) {
                    return Err(recur_core::Error::Value {
                        what: "temperature",
                    }
                    .into());
                }
                (
                    if temperature == 0.0 {
                        0.0
                    } else {
                        1.0 / temperature
                    },
                    seed,
                )
            }
        };
        let gpu = self.gpu();
        gpu.bind()?;
        let (b, h, v) = (bufs.batch, l.hidden, l.vocab);
        let limits = gpu.limits();
        let cluster_plan = || {
            plan_generate_cluster(&limits, gpu, l.cell, h, v, b, self.precision(), cluster)
                .map(|p| (GenPath::Cluster, p))
        };
        let persistent_plan = || {
            plan_generate(&limits, gpu, l.cell, h, v, b, self.precision())
                .map(|p| (GenPath::Persistent, p))
        };
        let reg_cluster_plan = || {
            plan_generate_cluster_regs(&limits, gpu, l.cell, h, v, b, self.precision())
                .map(|p| (GenPath::ClusterRegs, p))
        };
        let plan: Option<(GenPath, GenPlan)> = match path {
            None => cluster_plan().or_else(persistent_plan),
            Some(GenPath::ClusterRegs) => Some(reg_cluster_plan().ok_or(too_large(h))?),
            Some(GenPath::Cluster) => Some(cluster_plan().ok_or(too_large(h))?),
            Some(GenPath::Persistent) => Some(persistent_plan().ok_or(too_large(h))?),
            Some(GenPath::PerStep) => None,
        };
        let w = self.weights();
        let shape = || format!("B={b} H={h} V={v} P={} N={}", bufs.prefix_len, bufs.count);
        if let Some((gen_path, plan)) = plan {
            let mut p = GenParams {
                prefix: addr(&bufs.prefix),
                table: w.table,
                w_hh: w.w_hh,
                b_ih: w.b_ih,
                b_hh: w.b_hh,
                w_d: w.w_d,
                b_d: w.b_d,
                h0: addr(&bufs.h0),
                c0: addr(&bufs.c0),
                out: addr(&bufs.out),
                logits: addr(&bufs.logits),
                hx: bufs.hx.addr(),
                h_last: addr(&bufs.h_last),
                c_last: addr(&bufs.c_last),
                rh: addr(&bufs.rh),
                zb: addr(&bufs.zb),
                barrier: addr(&bufs.barrier),
                seed,
                inv_temp,
                p: bufs.prefix_len as i32,
                n: bufs.count as i32,
                b: b as i32,
                h: h as i32,
                v: v as i32,
                units: plan.units as i32,
                vrows: plan.vrows as i32,
                ldb: plan.ldb as i32,
                opts: if bufs.product_ahead { GEN_AHEAD } else { 0 }
                    | if bufs.block_sends { GEN_BLOCK_SENDS } else { 0 }
                    | if bufs.split_argmax {
                        GEN_SPLIT_ARGMAX
                    } else {
                        0
                    },
            };
            let mut args: [*mut c_void; 1] = [&mut p as *mut _ as *mut c_void];
            let (kernel, cooperative) = match gen_path {
                GenPath::ClusterRegs => (
                    gen_reg_cluster_kernel(l.cell, self.precision(), plan.ldb),
                    false,
                ),
                GenPath::Cluster => (
                    gen_cluster_kernel(plan.cluster, l.cell, self.precision()),
                    false,
                ),
                _ => (generate_kernel(l.cell, self.precision()), true),
            };
            // SAFETY: one GenParams by value (GenClusterParams of
            // gen_cluster_params.cuh has the same layout); every buffer was
            // sized for (B, H, V, P, N) by GenBuffers::new and checked above;
            // a cluster grid is whole clusters of the kernel's compiled size.
            unsafe {
                gpu.launch(
                    kernel,
                    (plan.blocks as u32, 1),
                    plan.smem,
                    cooperative,
                    &mut args,
                    shape,
                )?
            };
            return Ok(gen_path);
        }
        self.generate_per_step(bufs, inv_temp, seed)?;
        Ok(GenPath::PerStep)
    }

    fn generate_per_step(
        &self,
        bufs: &mut GenBuffers,
        inv_temp: f32,
        seed: u64,
    ) -> Result<(), Error> {
        let gpu = self.gpu();
        let l = self.layout();
        let (b, h, v) = (bufs.batch, l.hidden, l.vocab);
        let opts = PlanOptions {
            path: Some(Path::PerStep),
            ..PlanOptions::default()
        };
        let plan = plan_sequence(&gpu.limits(), gpu, l.cell, h, b, self.precision(), opts).ok_or(
            Error::Limit {
                what: "hidden size (no kernel configuration fits the device)",
                value: h,
                limit: 0,
            },
        )?;
        let kernel = kernel_name(Path::PerStep, l.cell, self.precision());
        let w = self.weights();
        let steps = bufs.prefix_len + bufs.count - 1;
        let bh = (b * h) as u64 * self.precision().bytes() as u64;
        let shape = || format!("B={b} H={h} V={v} per-step generation");
        let mut p = RecParams {
            pregates: 0,
            table: w.table,
            w_hh: w.w_hh,
            b_ih: w.b_ih,
            b_hh: w.b_hh,
            h0: addr(&bufs.h0),
            c0: addr(&bufs.c0),
            hs: bufs.hx.addr(),
            h_last: addr(&bufs.h_last),
            c_last: addr(&bufs.c_last),
            rh: addr(&bufs.rh),
            zb: addr(&bufs.zb),
            barrier: addr(&bufs.barrier),
            t: steps as i32,
            b: b as i32,
            h: h as i32,
            units: plan.units as i32,
            ldb: plan.ldb as i32,
            ..RecParams::default()
        };
        let phases: &[i32] = if l.cell == CellKind::GruResetBefore {
            &[1, 2]
        } else {
            &[0]
        };
        for s in 0..steps {
            // Prefix steps read the prefix (row s); later ones the fed tokens.
            if s < bufs.prefix_len {
                p.tokens = addr(&bufs.prefix);
                p.tok_fixed = 0;
            } else {
                p.tokens = addr(&bufs.feed);
                p.tok_fixed = 1;
            }
            for &phase in phases {
                p.t0 = s as i32;
                p.phase = phase;
                let mut args: [*mut c_void; 1] = [&mut p as *mut _ as *mut c_void];
                // SAFETY: RecParams over the (steps, B, H) h buffer of bufs.
                unsafe {
                    gpu.launch(
                        kernel,
                        (plan.blocks as u32, 1),
                        plan.smem,
                        false,
                        &mut args,
                        shape,
                    )?
                };
            }
            if s + 1 < bufs.prefix_len {
                continue;
            }
            let index = s + 1 - bufs.prefix_len;
            let h_s = bufs.hx.addr() + s as u64 * bh;
            self.gemm(
                addr(&bufs.logits),
                h_s,
                w.w_d,
                w.b_d,
                b,
                v,
                h,
                "generation logits",
            )?;
            let mut out = addr(&bufs.out) + (index * b * 4) as u64;
            let mut feed = addr(&bufs.feed);
            let mut logits = addr(&bufs.logits);
            let mut v_arg = v as i32;
            let mut seed_arg = seed;
            let mut inv = inv_temp;
            let mut index_arg = index as i32;
            let mut args: [*mut c_void; 7] = [
                &mut out as *mut _ as *mut c_void,
                &mut feed as *mut _ as *mut c_void,
                &mut logits as *mut _ as *mut c_void,
                &mut v_arg as *mut _ as *mut c_void,
                &mut seed_arg as *mut _ as *mut c_void,
                &mut inv as *mut _ as *mut c_void,
                &mut index_arg as *mut _ as *mut c_void,
            ];
            // SAFETY: gen_sample(int* out (B), int* feed (B), const float* logits (B·V),
            // int V, unsigned long long seed, float inv_temp, int index), B blocks.
            unsafe { gpu.launch("gen_sample", (b as u32, 1), 0, false, &mut args, shape)? };
        }
        Ok(())
    }
}

fn too_large(hidden: usize) -> Error {
    Error::Limit {
        what: "hidden size (the forced generation path does not take it on this device)",
        value: hidden,
        limit: 0,
    }
}

/// The seed of row `b`'s random numbers (see [`crate::rng`]).
pub fn sampler_seed(seed: u64, row: usize) -> u64 {
    row_seed(seed, row)
}
