//! Global-norm clipping, SGD and Adam on the resident parameters (updates
//! skipped on the device after a non-finite batch; the f16 mirror rewritten
//! in the same pass).

use super::*;

impl DeviceTrainer {
    /// Queues the gradients' global L2 norm (added to the statistics;
    /// [`DeviceTrainer::norm`] reads it back); with `Some(theta)` the
    /// gradients are scaled to norm θ when it is larger (recur-core's
    /// `clip_global_norm`). No host wait.
    ///
    /// One launch: the norm and the factor θ / norm (or 1) stay on the
    /// device, and an update applies the factor as it reads each gradient,
    /// without a pass that rewrites them. Anything else that reads the
    /// gradients ([`DeviceTrainer::download_grads`], a second clip) has
    /// them scaled in memory first, so every reader sees them clipped.
    pub fn clip(&mut self, theta: Option<f32>) -> Result<(), Error> {
        if let Some(th) = theta {
            if !(th.is_finite() && th > 0.0) {
                return Err(recur_core::Error::Value { what: "theta" }.into());
            }
        }
        self.gpu.bind()?;
        // The statistics and gradients as the side stream leaves them.
        self.join_side()?;
        // A second clip measures the gradients the first one left.
        self.apply_pending_clip()?;
        let n = self.layout.len();
        // A few blocks per SM, one f64 partial each.
        let blocks = n.div_ceil(256).clamp(1, self.norm_partials.len());
        let (_, arrivals, _) = self.scratch();
        self.launch(
            "tr_norm",
            (blocks as u32, 1),
            &[
                Arg::Ptr(addr(&self.norm)),
                Arg::Ptr(addr(&self.clip_scale)),
                Arg::Ptr(addr(&self.norm_partials)),
                Arg::Ptr(arrivals),
                Arg::Ptr(addr(&self.grads)),
                Arg::I64(n as i64),
                Arg::F32(theta.unwrap_or(0.0)),
                Arg::Ptr(addr(&self.stats)),
                Arg::I64(self.batches.saturating_sub(1) as i64),
            ],
        )?;
        self.clip_pending.set(theta.is_some());
        self.mark(Mark::ClipEnd)
    }

    /// The factor of a clip the gradients in memory do not have yet, for
    /// an update to apply as it reads them (null: none).
    fn clip_scale_arg(&self) -> u64 {
        if self.clip_pending.get() {
            addr(&self.clip_scale)
        } else {
            0
        }
    }

    /// Queues the pending clip's scaling of the gradients in memory, for a
    /// reader other than the updates.
    pub(super) fn apply_pending_clip(&self) -> Result<(), Error> {
        let scale = self.clip_scale_arg();
        if scale == 0 {
            return Ok(());
        }
        self.clip_pending.set(false);
        let n = self.layout.len();
        self.launch(
            "tr_scale_grads",
            elementwise(n),
            &[
                Arg::Ptr(addr(&self.grads)),
                Arg::Ptr(scale),
                Arg::I64(n as i64),
            ],
        )
    }

    /// Queues `params -= lr · grads`, skipped on the device once a
    /// non-finite loss or norm is in the statistics. No host wait.
    pub fn sgd_step(&mut self, lr: f32) -> Result<(), Error> {
        if !lr.is_finite() {
            return Err(recur_core::Error::Value { what: "lr" }.into());
        }
        self.gpu.bind()?;
        self.join_side()?;
        let n = self.layout.len();
        self.launch(
            "tr_sgd",
            elementwise(n),
            &[
                Arg::Ptr(addr(&self.params)),
                Arg::Ptr(self.mirror_addr()),
                Arg::Ptr(addr(&self.grads)),
                Arg::Ptr(self.clip_scale_arg()),
                Arg::F32(lr),
                Arg::I64(n as i64),
                Arg::Ptr(addr(&self.stats)),
            ],
        )?;
        self.mark(Mark::UpdateEnd)
    }

    /// Queues Adam update number `step` (from 1), as recur-core's
    /// `adam_step`; skipped on the device (parameters and moments
    /// untouched) once a non-finite loss or norm is in the statistics. No
    /// host wait.
    pub fn adam_step(&mut self, step: u64, cfg: &AdamConfig) -> Result<(), Error> {
        self.expect_adam()?;
        cfg.validate()?;
        if step == 0 {
            return Err(recur_core::Error::Value { what: "step" }.into());
        }
        self.gpu.bind()?;
        self.join_side()?;
        let exp = i32::try_from(step).unwrap_or(i32::MAX);
        let bias_correction1 = 1.0 - cfg.beta1.powi(exp);
        let bias_correction2 = 1.0 - cfg.beta2.powi(exp);
        let n = self.layout.len();
        self.launch(
            "tr_adam",
            elementwise(n),
            &[
                Arg::Ptr(addr(&self.params)),
                Arg::Ptr(self.mirror_addr()),
                Arg::Ptr(addr(&self.exp_avg)),
                Arg::Ptr(addr(&self.exp_avg_sq)),
                Arg::Ptr(addr(&self.grads)),
                Arg::Ptr(self.clip_scale_arg()),
                Arg::F32((cfg.lr / bias_correction1) as f32),
                Arg::F32(bias_correction2.sqrt() as f32),
                Arg::F32((1.0 - cfg.beta1) as f32),
                Arg::F32((1.0 - cfg.beta2) as f32),
                Arg::F32(cfg.beta2 as f32),
                Arg::F32(cfg.eps as f32),
                Arg::F32(cfg.weight_decay as f32),
                Arg::I64(n as i64),
                Arg::Ptr(addr(&self.stats)),
            ],
        )?;
        self.mark(Mark::UpdateEnd)
    }
}
