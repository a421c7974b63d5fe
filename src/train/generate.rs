//! The command line of `examples/generate.rs`: text from a checkpoint.

use std::path::PathBuf;

use clap::Parser;
use recur_data::Vocab;

use super::backend::Decode;
use super::checkpoint::Checkpoint;
use super::cli::{DeviceArg, PrecisionArg};
use super::cpu::generate_cpu;
use super::cuda::generate_cuda;
use super::error::TrainError;
use super::rng::TrainRng;

/// Generate lyrics from a trained checkpoint: feed the prefix, then pick
/// each next character greedily (default) or by sampling.
#[derive(Debug, Clone, Parser)]
#[command(name = "generate", version, args_override_self = true)]
pub struct GenerateArgs {
    /// A checkpoint written by `train --checkpoint`.
    #[arg(long)]
    pub checkpoint: PathBuf,

    /// The text to continue; every character must be in the checkpoint's
    /// vocabulary.
    #[arg(long, default_value = "分开")]
    pub prefix: String,

    /// Characters to generate after the prefix.
    #[arg(long, default_value_t = 50)]
    pub len: usize,

    /// Sample from softmax(logits / T) instead of taking the argmax;
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,

    /// With --temperature: draw only among the K most likely characters
    /// (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,

    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Where to generate: recur-core on the CPU, or recur-engine's loop on
    /// the GPU (one wait for the whole text; greedy gives the CPU's text,
    /// sampling its own random numbers, so another text for the same seed;
    /// no --top-k).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,

    /// The weights' storage on the GPU (f16: f32 sums; `--device cuda` only).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
}

/// Loads the checkpoint and returns the prefix and its continuation.
pub fn run_generate(args: &GenerateArgs) -> Result<String, TrainError> {
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        return Err(TrainError::Config(format!(
            "--temperature must be 0 (greedy) or a positive number, got {}",
            args.temperature
        )));
    }
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let vocab = Vocab::from_chars(ckpt.vocabulary.iter().copied())
        .map_err(|e| TrainError::Checkpoint(format!("vocabulary: {e}")))?;
    if args.prefix.is_empty() {
        return Err(TrainError::Config("--prefix may not be empty".into()));
    }
    let prefix = vocab
        .encode(&args.prefix)
        .map_err(|e| TrainError::Config(format!("--prefix {:?}: {e}", args.prefix)))?;
    let decode = if args.temperature == 0.0 {
        Decode::Greedy
    } else {
        Decode::Sample {
            temperature: args.temperature,
            top_k: args.top_k,
        }
    };
    let f16 = args.precision == PrecisionArg::F16;
    let ids = match args.device {
        DeviceArg::Cuda => generate_cuda(
            &ckpt.params,
            &ckpt.layout(),
            &prefix,
            args.len,
            decode,
            args.seed,
            f16,
        )?,
        DeviceArg::Cpu if f16 => {
            return Err(TrainError::Config(
                "--precision f16 generates on the GPU only (add --device cuda)".into(),
            ))
        }
        DeviceArg::Cpu => generate_cpu(
            &ckpt.params,
            &ckpt.layout(),
            &prefix,
            args.len,
            decode,
            &mut TrainRng::from_seed(args.seed),
        )?,
    };
    vocab
        .decode(&ids)
        .map_err(|e| TrainError::Data(e.to_string()))
}
