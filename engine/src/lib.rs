//! # recur-engine
//!
//! The GPU engine of recur, on the CUDA driver API through `cust`.
//!
//! - [`Gpu`]: context, stream and the kernel modules (the PTX in `ptx/`,
//!   embedded at build time and loaded once).
//! - [`DeviceModel`]: the weights, resident on the GPU for the model's whole
//!   life in recur-core's flat [`recur_core::ModelLayout`] (f32, plus f16
//!   copies in f16 mode).
//! - [`SeqBuffers`] + [`DeviceModel::forward`] / [`DeviceModel::output_loss`]:
//!   the recurrent layer over a sequence (fused kernels: the token gather of
//!   the input weights, the recurrent product and the gates; the whole
//!   sequence in one persistent launch where the weights fit on chip), the
//!   output layer and the softmax cross-entropy.
//! - [`GenBuffers`] + [`DeviceModel::generate`]: prefix → N tokens, greedy
//!   or with a temperature, the loop on the device.
//! - [`DeviceTrainer`]: training, f32 or f16 storage (forward with its cache, backward
//!   through time, clipping, SGD / Adam) queued without host waits; the
//!   loss and norm sums stay on the device until
//!   [`DeviceTrainer::take_stats`] ([`TrainStats`]).
//! - [`DeviceCellTrainer`]: a bare cell trained on dense (T, B, I) inputs
//!   from a gradient on every hidden state (a layer of a larger model, or
//!   cuDNN's and nn.LSTM's benchmark shape): every parameter gradient and
//!   the inputs' gradient, through the same time loops.
//!
//! Every failure is an [`Error`] naming what was being done, which kernel and
//! which shapes; [`Error::NoDevice`] where there is no GPU (the build links
//! recur's no-device driver stub on machines without a driver).

pub mod error;
mod generate;
pub mod gpu;
pub mod half;
mod mem;
mod model;
mod params;
pub mod plan;
mod ptx;
pub mod rng;
mod sequence;
mod train;

pub use cust;
pub use error::Error;
pub use generate::{sampler_seed, GenBuffers, GenPath, Sampling};
pub use gpu::{DeviceLimits, Gpu};
pub use mem::Activations;
pub use model::DeviceModel;
pub use plan::{
    every_cta_owns_a_unit, reg_cluster_rows, Path, Plan, PlanOptions, Precision, MMA_CLUSTER_ROWS,
    REG_CLUSTER_MAX_HIDDEN,
};
pub use sequence::{InputKind, SeqBuffers};
#[doc(hidden)]
pub use train::ProductOperands;
pub use train::{
    has_reduce_scatter_backward, persistent_mma_takes, ClusterLoops, DeviceCellTrainer,
    DeviceTrainer, ForwardSync, StepTimes, TimeLoop, TrainOptimizer, TrainStats, STEP_PHASES,
};
