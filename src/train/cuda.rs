//! The GPU [`Backend`]: recur-engine's [`DeviceTrainer`] (parameters,
//! gradients, Adam's moments and the carried state resident on the device;
//! f32, or f16 storage with f32 masters and sums). Nothing comes back to the host per mini-batch: the token ids go
//! up through pinned staging, and the losses and norms are summed on the
//! device until [`Backend::take_stats`], the one wait per epoch. Generation runs
//! on the CPU from the downloaded parameters (recur-core, the same code as
//! the CPU backend's), so its output does not depend on the device.

use recur_core::optim::AdamConfig;
use recur_core::ModelLayout;
use recur_engine::{
    DeviceModel, DeviceTrainer, GenBuffers, Gpu, Precision, Sampling, TrainOptimizer,
};

use super::backend::{
    check_flat, Backend, BackendSpec, BatchStats, Decode, HiddenState, OptimizerState,
};
use super::config::OptimizerKind;
use super::cpu::generate_cpu;
use super::error::TrainError;
use super::rng::TrainRng;

/// [`generate_cpu`] on the GPU: `prefix` and `len` tokens after it from
/// the flat parameters `params` of `layout` (recur-engine: the weights
/// uploaded once, the whole loop on the device, one wait at the end; f16
/// weights with `f16`). Greedy takes the CPU's rule (the first maximum);
/// sampling draws the engine's random numbers, seeded by `seed`, and has
/// no top-k.
pub fn generate_cuda(
    params: &[f32],
    layout: &ModelLayout,
    prefix: &[u32],
    len: usize,
    decode: Decode,
    seed: u64,
    f16: bool,
) -> Result<Vec<u32>, TrainError> {
    if prefix.is_empty() {
        return Err(TrainError::Config("the prefix may not be empty".into()));
    }
    let sampling = match decode {
        Decode::Greedy => Sampling::Greedy,
        Decode::Sample {
            top_k: 0,
            temperature,
        } => Sampling::Temperature { temperature, seed },
        Decode::Sample { .. } => {
            return Err(TrainError::Config(
                "--top-k samples on the CPU only (drop --device cuda)".into(),
            ))
        }
    };
    let gpu = Gpu::new().map_err(device_error)?;
    let precision = if f16 { Precision::F16 } else { Precision::F32 };
    let model = DeviceModel::upload(&gpu, *layout, params, precision).map_err(device_error)?;
    let mut out = prefix.to_vec();
    if len == 0 {
        return Ok(out);
    }
    let mut bufs = GenBuffers::new(&model, 1, prefix.len(), len).map_err(device_error)?;
    bufs.set_prefix(prefix).map_err(device_error)?;
    model
        .generate(&mut bufs, sampling, false)
        .map_err(device_error)?;
    out.extend(bufs.tokens().map_err(device_error)?);
    Ok(out)
}

/// Training on the GPU.
pub struct CudaBackend {
    spec: BackendSpec,
    trainer: DeviceTrainer,
    /// Updates taken (the device skips those after a non-finite batch;
    /// training stops at the end of that epoch, so the count is not kept).
    step: u64,
}

/// The engine's error as the trainer's, naming the device.
fn device_error(e: recur_engine::Error) -> TrainError {
    if e.is_no_device() {
        TrainError::Device(
            "--device cuda: no CUDA device is available (no NVIDIA driver or no GPU); \
             use --device cpu"
                .to_string(),
        )
    } else if e.is_out_of_memory() {
        TrainError::Device(format!(
            "--device cuda: {e}; a smaller --hidden, --batch-size or --steps needs less"
        ))
    } else {
        TrainError::Device(format!("--device cuda: {e}"))
    }
}

impl CudaBackend {
    /// Opens the GPU and allocates every buffer for `spec`; parameters start
    /// at zero. A clear [`TrainError::Device`] without a GPU or when the
    /// buffers do not fit in its memory.
    pub fn new(spec: BackendSpec) -> Result<Self, TrainError> {
        Self::with_precision(spec, false)
    }

    /// [`CudaBackend::new`], with `f16`: f16 copies of the weights and f16
    /// saved activations (f32 products, master weights, gradients and
    /// Adam moments; recur-engine's fp16 training).
    pub fn with_precision(spec: BackendSpec, f16: bool) -> Result<Self, TrainError> {
        spec.layout.validate()?;
        let gpu = Gpu::new().map_err(device_error)?;
        let optimizer = match spec.optimizer {
            OptimizerKind::Sgd => TrainOptimizer::Sgd,
            OptimizerKind::Adam => TrainOptimizer::Adam,
        };
        let precision = if f16 { Precision::F16 } else { Precision::F32 };
        let trainer = DeviceTrainer::new_with_precision(
            &gpu,
            spec.layout,
            spec.batch,
            spec.steps,
            optimizer,
            precision,
        )
        .map_err(device_error)?;
        Ok(CudaBackend {
            spec,
            trainer,
            step: 0,
        })
    }
}

impl Backend for CudaBackend {
    fn spec(&self) -> &BackendSpec {
        &self.spec
    }

    fn upload_params(&mut self, params: &[f32]) -> Result<(), TrainError> {
        check_flat("parameters", params.len(), &self.spec.layout)?;
        self.trainer.upload_params(params).map_err(device_error)
    }

    fn download_params(&self, params: &mut [f32]) -> Result<(), TrainError> {
        check_flat("parameters", params.len(), &self.spec.layout)?;
        let host = self.trainer.download_params().map_err(device_error)?;
        params.copy_from_slice(&host);
        Ok(())
    }

    fn upload_optimizer(&mut self, state: &OptimizerState) -> Result<(), TrainError> {
        if self.spec.optimizer == OptimizerKind::Adam {
            check_flat("Adam exp_avg", state.exp_avg.len(), &self.spec.layout)?;
            check_flat("Adam exp_avg_sq", state.exp_avg_sq.len(), &self.spec.layout)?;
            self.trainer
                .upload_moments(&state.exp_avg, &state.exp_avg_sq)
                .map_err(device_error)?;
        }
        self.step = state.step;
        Ok(())
    }

    fn download_optimizer(&self) -> Result<OptimizerState, TrainError> {
        let (exp_avg, exp_avg_sq) = if self.spec.optimizer == OptimizerKind::Adam {
            self.trainer.download_moments().map_err(device_error)?
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(OptimizerState {
            step: self.step,
            exp_avg,
            exp_avg_sq,
        })
    }

    fn reset_state(&mut self) -> Result<(), TrainError> {
        self.trainer.reset_state().map_err(device_error)
    }

    fn detach_state(&mut self) -> Result<(), TrainError> {
        // The backward of a batch ends at the state it started from.
        Ok(())
    }

    fn upload_state(&mut self, state: &HiddenState) -> Result<(), TrainError> {
        let bh = self.spec.batch * self.spec.layout.hidden;
        let c_len = if self.spec.layout.cell.has_cell_state() {
            bh
        } else {
            0
        };
        if state.h.len() != bh || state.c.len() != c_len {
            return Err(TrainError::Mismatch(format!(
                "hidden state has {} + {} elements, the model needs {bh} + {c_len}",
                state.h.len(),
                state.c.len(),
            )));
        }
        self.trainer
            .upload_state(&state.h, &state.c)
            .map_err(device_error)
    }

    fn download_state(&self) -> Result<HiddenState, TrainError> {
        let (h, c) = self.trainer.download_state().map_err(device_error)?;
        Ok(HiddenState { h, c })
    }

    fn forward(&mut self, inputs: &[u32], targets: &[u32]) -> Result<(), TrainError> {
        self.trainer.forward(inputs, targets).map_err(device_error)
    }

    fn loss(&self) -> Result<f32, TrainError> {
        self.trainer.loss().map_err(device_error)
    }

    fn backward(&mut self) -> Result<(), TrainError> {
        self.trainer
            .backward(self.spec.freeze_bias_hh)
            .map_err(device_error)
    }

    fn clip_grads(&mut self, theta: Option<f32>) -> Result<(), TrainError> {
        self.trainer.clip(theta).map_err(device_error)
    }

    fn norm(&self) -> Result<f32, TrainError> {
        self.trainer.norm().map_err(device_error)
    }

    fn take_stats(&mut self) -> Result<BatchStats, TrainError> {
        let s = self.trainer.take_stats().map_err(device_error)?;
        Ok(BatchStats {
            loss_sum: s.loss_sum,
            norm_sum: s.norm_sum,
            first_non_finite: s.first_non_finite,
        })
    }

    fn step(&mut self) -> Result<(), TrainError> {
        self.step += 1;
        match self.spec.optimizer {
            OptimizerKind::Sgd => self.trainer.sgd_step(self.spec.lr as f32),
            OptimizerKind::Adam => self.trainer.adam_step(
                self.step,
                &AdamConfig {
                    lr: self.spec.lr,
                    ..AdamConfig::default()
                },
            ),
        }
        .map_err(device_error)
    }

    fn generate(
        &mut self,
        prefix: &[u32],
        len: usize,
        decode: Decode,
        rng: &mut TrainRng,
    ) -> Result<Vec<u32>, TrainError> {
        let params = self.trainer.download_params().map_err(device_error)?;
        generate_cpu(&params, &self.spec.layout, prefix, len, decode, rng)
    }
}
