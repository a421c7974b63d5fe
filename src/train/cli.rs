//! The command line of `examples/train.rs`: flags, how they combine with
//! presets and checkpoints, and the run itself with its d2l-style output,
//! progress bar, metrics, plot and checkpoints.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use recur_core::{CellKind, Gemm};
use recur_data::{Corpus, CorpusOptions, Sampler, Vocab};

use super::backend::{Backend, BackendSpec};
use super::checkpoint::Checkpoint;
use super::config::{
    InitScheme, OptimizerKind, Sampling, StatePolicy, TrainConfig, DEFAULT_PRESET, PRESETS,
};
use super::cpu::CpuBackend;
use super::error::TrainError;
use super::metrics::{EpochRecord, MetricsWriter};
use super::plot::{plot_perplexity, PlotFormat};
use super::trainer::{model_layout, sampler_kind, Trainer};

/// The corpus used when `--corpus` is not given (from the repository root).
pub const DEFAULT_CORPUS: &str = "../shared/data/jaychou_lyrics.txt.zip";

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// recur-core on the CPU (threaded matrix products).
    Cpu,
    /// recur-engine on an NVIDIA GPU.
    Cuda,
}

/// `--precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// f32 everywhere.
    F32,
    /// GPU only: f16 copies of the weights and f16 saved activations, f32
    /// products, master weights, gradients and optimizer state.
    F16,
}

/// `--cell`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CellArg {
    /// Elman RNN, tanh.
    RnnTanh,
    /// Elman RNN, relu (seed 002).
    RnnRelu,
    /// GRU, reset gate before the recurrent product (d2l scratch).
    GruResetBefore,
    /// GRU, reset gate after the recurrent product (PyTorch nn.GRU).
    GruResetAfter,
    /// LSTM.
    Lstm,
}

impl From<CellArg> for CellKind {
    fn from(c: CellArg) -> CellKind {
        match c {
            CellArg::RnnTanh => CellKind::RnnTanh,
            CellArg::RnnRelu => CellKind::RnnRelu,
            CellArg::GruResetBefore => CellKind::GruResetBefore,
            CellArg::GruResetAfter => CellKind::GruResetAfter,
            CellArg::Lstm => CellKind::Lstm,
        }
    }
}

/// `--activation` of the plain RNN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActivationArg {
    /// tanh (d2l's default).
    Tanh,
    /// relu (seed 002's MXNet RNN).
    Relu,
}

/// `--init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    /// normal(0, 0.01) weights, zero biases, one bias per gate (bias_hh frozen at 0).
    Scratch,
    /// PyTorch's uniform(−1/√H, 1/√H) for every tensor.
    Pytorch,
}

/// `--sampling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SamplingArg {
    /// Shuffled, independent windows.
    Random,
    /// B parallel streams read left to right.
    Consecutive,
}

/// `--state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Zeros before every mini-batch.
    PerBatch,
    /// Zeros at each epoch's start, carried (detached) between its batches.
    PerEpoch,
    /// Zeros once, carried (detached) across batches and epochs.
    Once,
}

/// `--optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// p −= lr·g.
    Sgd,
    /// Adam, β = (0.9, 0.999), ε = 1e-8.
    Adam,
}

/// Train a character-level language model on the Jay Chou lyrics, as the
/// recurrent chapter of Dive into Deep Learning does.
///
/// A preset reproduces one of the chapter's experiments; any flag below
/// overrides the preset's value for that field. Prints d2l's lines
/// (`epoch 40, perplexity 151.275457, time 0.39 sec` and greedy samples
/// after each prefix) every --sample-every epochs.
#[derive(Debug, Clone, Parser)]
#[command(name = "train", version, args_override_self = true)]
pub struct TrainArgs {
    /// The experiment to start from [default: d2l-gru; with --resume: the
    /// checkpoint's own settings].
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PRESETS))]
    pub preset: Option<String>,

    /// Corpus: a UTF-8 .txt file or a .zip holding one.
    #[arg(long, default_value = DEFAULT_CORPUS)]
    pub corpus: PathBuf,

    /// Total number of epochs (a resumed run continues up to it).
    #[arg(long)]
    pub epochs: Option<usize>,

    /// Where to train.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,

    /// Storage precision of the weights the products read and of the saved
    /// activations (f16: `--device cuda` only; checkpoints stay f32).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,

    /// CPU threads for the matrix products [default: all cores]. The same
    /// seed and thread count give the same result.
    #[arg(long)]
    pub threads: Option<usize>,

    /// Seed of the initialisation and of the random sampler [preset: 0].
    #[arg(long)]
    pub seed: Option<u64>,

    /// Write one JSON object per epoch here (epoch, perplexity, loss,
    /// seconds, tokens_per_s, grad_norm).
    #[arg(long)]
    pub metrics: Option<PathBuf>,

    /// Draw perplexity against epoch into this .png or .svg at the end.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Save a safetensors checkpoint here at every sample point and at the
    /// end (written atomically).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,

    /// Continue bit-identically from this checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,

    /// Recurrent cell.
    #[arg(long, value_enum)]
    pub cell: Option<CellArg>,

    /// Activation of the plain RNN cell (relu: seed 002's RNN).
    #[arg(long, value_enum)]
    pub activation: Option<ActivationArg>,

    /// Initialisation (and whether bias_hh trains).
    #[arg(long, value_enum)]
    pub init: Option<InitArg>,

    /// Mini-batch sampler.
    #[arg(long, value_enum)]
    pub sampling: Option<SamplingArg>,

    /// When the hidden state goes back to zeros.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,

    /// Update rule.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,

    /// Learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,

    /// Clip the gradients' global norm to --clip-theta (the concise presets
    /// do not clip: d2l's call there is a no-op).
    #[arg(long, conflicts_with = "no_clip")]
    pub clip: bool,

    /// Do not clip the gradients.
    #[arg(long)]
    pub no_clip: bool,

    /// Clipping threshold θ [preset: 0.01]; implies --clip.
    #[arg(long, conflicts_with = "no_clip", allow_negative_numbers = true)]
    pub clip_theta: Option<f32>,

    /// Hidden size H.
    #[arg(long)]
    pub hidden: Option<usize>,

    /// Batch size B.
    #[arg(long)]
    pub batch_size: Option<usize>,

    /// Time steps per mini-batch T.
    #[arg(long)]
    pub steps: Option<usize>,

    /// Characters of the corpus used (newlines become spaces first).
    #[arg(long)]
    pub corpus_chars: Option<usize>,

    /// Print perplexity and samples (and checkpoint) every N epochs.
    #[arg(long)]
    pub sample_every: Option<usize>,

    /// Characters generated after each prefix.
    #[arg(long)]
    pub sample_len: Option<usize>,

    /// A sample prefix; repeat for several [preset: 分开, 不分开].
    #[arg(long = "prefix")]
    pub prefixes: Vec<String>,

    /// Print only the final line (no per-sample-point lines).
    #[arg(long)]
    pub quiet: bool,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The settings the run used.
    pub config: TrainConfig,
    /// Every epoch's figures (including those before a resume).
    pub history: Vec<EpochRecord>,
    /// The last samples printed (prefix + continuation).
    pub samples: Vec<String>,
}

impl TrainArgs {
    /// Applies every flag that was given to `c`.
    pub fn apply(&self, c: &mut TrainConfig) -> Result<(), TrainError> {
        if let Some(v) = self.epochs {
            c.epochs = v;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        if let Some(v) = self.cell {
            c.cell = v.into();
        }
        if let Some(a) = self.activation {
            c.cell = match (c.cell, a) {
                (CellKind::RnnTanh | CellKind::RnnRelu, ActivationArg::Tanh) => CellKind::RnnTanh,
                (CellKind::RnnTanh | CellKind::RnnRelu, ActivationArg::Relu) => CellKind::RnnRelu,
                (other, _) => {
                    return Err(TrainError::Config(format!(
                        "--activation applies to the plain RNN cell, not to {}",
                        other.name()
                    )))
                }
            };
        }
        if let Some(v) = self.init {
            c.init = match v {
                InitArg::Scratch => InitScheme::Scratch,
                InitArg::Pytorch => InitScheme::Pytorch,
            };
        }
        if let Some(v) = self.sampling {
            c.sampling = match v {
                SamplingArg::Random => Sampling::Random,
                SamplingArg::Consecutive => Sampling::Consecutive,
            };
        }
        if let Some(v) = self.state {
            c.state = match v {
                StateArg::PerBatch => StatePolicy::PerBatch,
                StateArg::PerEpoch => StatePolicy::PerEpoch,
                StateArg::Once => StatePolicy::Once,
            };
        }
        if let Some(v) = self.optimizer {
            c.optimizer = match v {
                OptimizerArg::Sgd => OptimizerKind::Sgd,
                OptimizerArg::Adam => OptimizerKind::Adam,
            };
        }
        if let Some(v) = self.lr {
            c.lr = v;
        }
        if self.no_clip {
            c.clip = None;
        }
        if let Some(theta) = self.clip_theta {
            c.clip = Some(theta);
        } else if self.clip && c.clip.is_none() {
            c.clip = Some(0.01);
        }
        if let Some(v) = self.hidden {
            c.hidden = v;
        }
        if let Some(v) = self.batch_size {
            c.batch = v;
        }
        if let Some(v) = self.steps {
            c.steps = v;
        }
        if let Some(v) = self.corpus_chars {
            c.corpus_chars = v;
        }
        if let Some(v) = self.sample_every {
            c.sample_every = v;
        }
        if let Some(v) = self.sample_len {
            c.sample_len = v;
        }
        if !self.prefixes.is_empty() {
            c.prefixes = self.prefixes.clone();
        }
        Ok(())
    }

    /// The number of threads to use.
    pub fn thread_count(&self) -> Result<usize, TrainError> {
        match self.threads {
            Some(0) => Err(TrainError::Config("--threads must be at least 1".into())),
            Some(n) => Ok(n),
            None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }
}

/// Loads the corpus as the configuration says (d2l's clean-up: newlines to
/// spaces, the first `corpus_chars` characters).
pub fn load_corpus(path: &Path, corpus_chars: usize) -> Result<Corpus, TrainError> {
    let options = CorpusOptions {
        newlines_to_spaces: true,
        max_chars: Some(corpus_chars),
        ..CorpusOptions::default()
    };
    Corpus::load(path, &options).map_err(|e| TrainError::Data(e.to_string()))
}

/// Refuses a checkpoint that does not fit the requested model or corpus,
/// naming every field that differs.
pub fn check_resume(
    config: &TrainConfig,
    vocab: &Vocab,
    ckpt: &Checkpoint,
) -> Result<(), TrainError> {
    let saved = &ckpt.config;
    let mut problems = Vec::new();
    if saved.cell != config.cell {
        problems.push(format!(
            "cell: checkpoint {}, requested {}",
            saved.cell.name(),
            config.cell.name()
        ));
    }
    if saved.hidden != config.hidden {
        problems.push(format!(
            "hidden size: checkpoint {}, requested {}",
            saved.hidden, config.hidden
        ));
    }
    if saved.optimizer != config.optimizer {
        problems.push(format!(
            "optimizer: checkpoint {}, requested {}",
            saved.optimizer.name(),
            config.optimizer.name()
        ));
    }
    if ckpt.state.is_some() && saved.batch != config.batch {
        problems.push(format!(
            "batch size (of the carried hidden state): checkpoint {}, requested {}",
            saved.batch, config.batch
        ));
    }
    if ckpt.vocabulary.as_slice() != vocab.chars() {
        let first_diff = ckpt
            .vocabulary
            .iter()
            .zip(vocab.chars())
            .position(|(a, b)| a != b)
            .unwrap_or(ckpt.vocabulary.len().min(vocab.len()));
        problems.push(format!(
            "vocabulary: checkpoint has {} characters, this corpus gives {} (first difference at id {})",
            ckpt.vocabulary.len(),
            vocab.len(),
            first_diff
        ));
    }
    if ckpt.epoch > config.epochs {
        problems.push(format!(
            "epochs: the checkpoint has already trained {} epochs, more than --epochs {}",
            ckpt.epoch, config.epochs
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TrainError::Mismatch(problems.join("; ")))
    }
}

/// Runs `examples/train.rs` with the threaded CPU backend, or with
/// recur-engine's with `--device cuda`.
pub fn run_train(args: &TrainArgs) -> Result<RunSummary, TrainError> {
    if args.device == DeviceArg::Cuda {
        let f16 = args.precision == PrecisionArg::F16;
        return run_train_on(args, |spec| {
            super::cuda::CudaBackend::with_precision(spec, f16)
        });
    }
    if args.precision == PrecisionArg::F16 {
        return Err(TrainError::Config(
            "--precision f16 trains on the GPU only (add --device cuda); the CPU trains in f32"
                .into(),
        ));
    }
    let threads = args.thread_count()?;
    let gemm = super::cpu_gemm(threads)?;
    run_train_on(args, |spec| CpuBackend::new(spec, gemm))
}

/// [`run_train`] on the CPU with a given matrix product.
pub fn run_train_with<G: Gemm>(args: &TrainArgs, gemm: G) -> Result<RunSummary, TrainError> {
    run_train_on(args, |spec| CpuBackend::new(spec, gemm))
}

/// [`run_train`] on any [`Backend`]: `make_backend` builds it for the
/// model, mini-batch shape and optimizer the settings call for (the GPU
/// engine plugs in here).
pub fn run_train_on<B: Backend>(
    args: &TrainArgs,
    make_backend: impl FnOnce(BackendSpec) -> Result<B, TrainError>,
) -> Result<RunSummary, TrainError> {
    if let Some(path) = &args.plot {
        PlotFormat::of(path)?;
    }
    let resume = match &args.resume {
        Some(path) => Some(Checkpoint::load(path)?),
        None => None,
    };
    let mut config = match (&args.preset, &resume) {
        (Some(name), _) => TrainConfig::preset(name)?,
        (None, Some(ckpt)) => ckpt.config.clone(),
        (None, None) => TrainConfig::preset(DEFAULT_PRESET)?,
    };
    args.apply(&mut config)?;
    config.validate()?;

    let corpus = load_corpus(&args.corpus, config.corpus_chars)?;
    let vocab = match &resume {
        Some(ckpt) => {
            let from_corpus =
                Vocab::from_text(corpus.text()).map_err(|e| TrainError::Data(e.to_string()))?;
            check_resume(&config, &from_corpus, ckpt)?;
            from_corpus
        }
        None => Vocab::from_text(corpus.text()).map_err(|e| TrainError::Data(e.to_string()))?,
    };
    for prefix in &config.prefixes {
        vocab
            .encode(prefix)
            .map_err(|e| TrainError::Config(format!("sample prefix {prefix:?}: {e}")))?;
    }
    let tokens = vocab
        .encode(corpus.text())
        .map_err(|e| TrainError::Data(e.to_string()))?;
    let sampler = Sampler::new(
        sampler_kind(config.sampling),
        tokens,
        config.batch,
        config.steps,
        config.seed,
    )
    .map_err(|e| TrainError::Data(e.with_path(&args.corpus).to_string()))?;
    let spec = BackendSpec {
        layout: model_layout(&config, vocab.len()),
        batch: config.batch,
        steps: config.steps,
        optimizer: config.optimizer,
        lr: config.lr,
        freeze_bias_hh: config.init.freezes_bias_hh(),
    };
    let backend = make_backend(spec)?;
    let mut trainer = match &resume {
        Some(ckpt) => Trainer::resume(config.clone(), vocab, sampler, backend, ckpt)?,
        None => Trainer::fresh(config.clone(), vocab, sampler, backend)?,
    };

    let mut metrics = match &args.metrics {
        Some(path) => {
            let mut w = MetricsWriter::create(path)?;
            for record in trainer.history() {
                w.write(record)?;
            }
            Some(w)
        }
        None => None,
    };
    if !args.quiet {
        println!(
            "preset {}: {} (hidden {}, vocabulary {}), {} sampling, {} lr {}, clip {}, {} epochs{}{}",
            config.preset,
            config.cell.name(),
            config.hidden,
            trainer.vocab().len(),
            config.sampling.name(),
            config.optimizer.name(),
            config.lr,
            config.clip.map_or("off".to_string(), |t| t.to_string()),
            config.epochs,
            if args.precision == PrecisionArg::F16 {
                ", f16 storage"
            } else {
                ""
            },
            if trainer.epoch() > 0 {
                format!(", resuming after epoch {}", trainer.epoch())
            } else {
                String::new()
            }
        );
    }

    let bar = progress_bar(trainer.batches_per_epoch() * (config.epochs - trainer.epoch()));
    let mut samples = Vec::new();
    let mut saved_at = None;
    while trainer.epoch() < config.epochs {
        let done_before = (trainer.epoch() - resume.as_ref().map_or(0, |c| c.epoch))
            * trainer.batches_per_epoch();
        if let Some(bar) = &bar {
            bar.set_message(format!("epoch {}/{}", trainer.epoch() + 1, config.epochs));
        }
        let record = trainer.train_epoch(&mut |done, _| {
            if let Some(bar) = &bar {
                bar.set_position((done_before + done) as u64);
            }
        });
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                return Err(e);
            }
        };
        if let Some(w) = &mut metrics {
            w.write(&record)?;
        }
        if record.epoch.is_multiple_of(config.sample_every) {
            samples = trainer.samples()?;
            if !args.quiet {
                let print = || {
                    println!("{}", record.d2l_line());
                    for s in &samples {
                        println!(" - {s}");
                    }
                };
                match &bar {
                    Some(bar) => bar.suspend(print),
                    None => print(),
                }
            }
            if let Some(path) = &args.checkpoint {
                trainer.checkpoint()?.save(path)?;
                saved_at = Some(record.epoch);
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(path) = &args.checkpoint {
        if saved_at != Some(trainer.epoch()) {
            trainer.checkpoint()?.save(path)?;
        }
    }
    if samples.is_empty() {
        samples = trainer.samples()?;
    }
    if let Some(path) = &args.plot {
        let title = format!("{}: perplexity", config.preset);
        plot_perplexity(path, trainer.history(), &title)?;
    }
    if let Some(last) = trainer.history().last() {
        println!(
            "final: epoch {}, perplexity {:.6}, {:.3} s/epoch, {:.0} tokens/s",
            last.epoch, last.perplexity, last.seconds, last.tokens_per_s
        );
    }
    Ok(RunSummary {
        config,
        history: trainer.history().to_vec(),
        samples,
    })
}

/// A progress bar over `total` mini-batches, only when stderr is a terminal.
fn progress_bar(total: usize) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() || total == 0 {
        return None;
    }
    let bar = ProgressBar::new(total as u64);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} batches, eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    Some(bar)
}
