//! What a training run does: the seeds' experiments as named presets, and
//! the configuration every field of which a command-line flag can override.

use recur_core::CellKind;
use serde_json::{json, Value};

use super::error::TrainError;

/// How mini-batches are drawn from the corpus (d2l's two samplers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// `data_iter_random`: non-overlapping windows in a shuffled order.
    Random,
    /// `data_iter_consecutive`: B parallel streams read left to right.
    Consecutive,
}

impl Sampling {
    /// The name used on the command line and in checkpoints.
    pub const fn name(self) -> &'static str {
        match self {
            Sampling::Random => "random",
            Sampling::Consecutive => "consecutive",
        }
    }

    /// The inverse of [`Sampling::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Sampling::Random, Sampling::Consecutive]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// When the hidden state goes back to zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatePolicy {
    /// Before every mini-batch (d2l's scratch trainer with random sampling).
    PerBatch,
    /// At the start of every epoch, carried (detached) between the epoch's
    /// batches (d2l's scratch trainer with consecutive sampling).
    PerEpoch,
    /// Once before the first epoch, then carried (detached) across batches
    /// *and* epochs (d2l's concise trainer: `state = None` before its epoch
    /// loop).
    Once,
}

impl StatePolicy {
    /// The name used on the command line and in checkpoints.
    pub const fn name(self) -> &'static str {
        match self {
            StatePolicy::PerBatch => "per-batch",
            StatePolicy::PerEpoch => "per-epoch",
            StatePolicy::Once => "once",
        }
    }

    /// The inverse of [`StatePolicy::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [
            StatePolicy::PerBatch,
            StatePolicy::PerEpoch,
            StatePolicy::Once,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// The parameter update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Plain SGD, `p -= lr · g` (d2l's `sgd(params, lr, 1)`).
    Sgd,
    /// Adam with PyTorch's defaults (β = 0.9, 0.999, ε = 1e-8).
    Adam,
}

impl OptimizerKind {
    /// The name used on the command line and in checkpoints.
    pub const fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        }
    }

    /// The inverse of [`OptimizerKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [OptimizerKind::Sgd, OptimizerKind::Adam]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// How the parameters start, and which of them train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitScheme {
    /// d2l's from-scratch models: weights normal(0, 0.01), biases zero, and a
    /// single bias per gate. The layout has two (`bias_ih`, `bias_hh`), so
    /// `bias_hh` stays frozen at zero: training both would double the
    /// bias's effective step and count its gradient twice in the clipping
    /// norm.
    Scratch,
    /// PyTorch's defaults for `nn.RNN/GRU/LSTM` and `nn.Linear`: every
    /// tensor uniform(−1/√H, 1/√H), both biases trained.
    Pytorch,
}

impl InitScheme {
    /// The name used on the command line and in checkpoints.
    pub const fn name(self) -> &'static str {
        match self {
            InitScheme::Scratch => "scratch",
            InitScheme::Pytorch => "pytorch",
        }
    }

    /// The inverse of [`InitScheme::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [InitScheme::Scratch, InitScheme::Pytorch]
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// Whether `rnn.bias_hh_l0` is frozen at zero.
    pub const fn freezes_bias_hh(self) -> bool {
        matches!(self, InitScheme::Scratch)
    }
}

/// Everything that defines a training run. Presets fill it; flags override
/// single fields; checkpoints store it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The preset the run started from (informational).
    pub preset: String,
    /// The recurrent cell.
    pub cell: CellKind,
    /// Initialisation and trainable biases.
    pub init: InitScheme,
    /// Mini-batch sampler.
    pub sampling: Sampling,
    /// When the hidden state is reset.
    pub state: StatePolicy,
    /// Update rule.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// Gradient clipping threshold θ, or `None` for no clipping.
    pub clip: Option<f32>,
    /// Total number of epochs (a resumed run continues up to it).
    pub epochs: usize,
    /// Hidden size H.
    pub hidden: usize,
    /// Batch size B.
    pub batch: usize,
    /// Time steps per mini-batch T.
    pub steps: usize,
    /// How many characters of the corpus are used (d2l: the first 10,000).
    pub corpus_chars: usize,
    /// Print a perplexity line and samples every this many epochs.
    pub sample_every: usize,
    /// Characters generated after each prefix.
    pub sample_len: usize,
    /// Prefixes of the samples.
    pub prefixes: Vec<String>,
    /// Seed of every random choice (initialisation, random sampler).
    pub seed: u64,
}

/// The seeds' experiments by name.
pub const PRESETS: [&str; 7] = [
    "d2l-rnn-random",
    "d2l-rnn-consecutive",
    "d2l-gru",
    "d2l-lstm",
    "d2l-concise-rnn",
    "d2l-concise-gru",
    "d2l-concise-lstm",
];

/// The preset used when none is named.
pub const DEFAULT_PRESET: &str = "d2l-gru";

impl TrainConfig {
    /// The configuration of a named preset (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        // Common to all seven: d2l's hyper-parameters.
        let mut c = TrainConfig {
            preset: name.to_string(),
            cell: CellKind::GruResetBefore,
            init: InitScheme::Scratch,
            sampling: Sampling::Consecutive,
            state: StatePolicy::PerEpoch,
            optimizer: OptimizerKind::Sgd,
            lr: 100.0,
            clip: Some(0.01),
            epochs: 160,
            hidden: 256,
            batch: 32,
            steps: 35,
            corpus_chars: 10_000,
            sample_every: 40,
            sample_len: 50,
            prefixes: vec!["分开".to_string(), "不分开".to_string()],
            seed: 0,
        };
        let scratch_rnn = |c: &mut TrainConfig| {
            c.cell = CellKind::RnnTanh;
            c.epochs = 250;
            c.sample_every = 50;
        };
        // The concise trainer: Adam, state carried across epochs, and a
        // clipping call that never clips (its generator argument is used up
        // by the norm loop before the scaling loop runs).
        let concise = |c: &mut TrainConfig, cell: CellKind, lr: f64| {
            c.cell = cell;
            c.init = InitScheme::Pytorch;
            c.state = StatePolicy::Once;
            c.optimizer = OptimizerKind::Adam;
            c.lr = lr;
            c.clip = None;
        };
        match name {
            "d2l-rnn-random" => {
                scratch_rnn(&mut c);
                c.sampling = Sampling::Random;
                c.state = StatePolicy::PerBatch;
            }
            "d2l-rnn-consecutive" => scratch_rnn(&mut c),
            "d2l-gru" => {}
            "d2l-lstm" => c.cell = CellKind::Lstm,
            "d2l-concise-rnn" => {
                concise(&mut c, CellKind::RnnTanh, 1e-3);
                c.epochs = 250;
                c.sample_every = 50;
            }
            "d2l-concise-gru" => concise(&mut c, CellKind::GruResetAfter, 1e-2),
            "d2l-concise-lstm" => concise(&mut c, CellKind::Lstm, 1e-2),
            _ => {
                return Err(TrainError::Config(format!(
                    "unknown preset `{name}`; the presets are: {}",
                    PRESETS.join(", ")
                )))
            }
        }
        Ok(c)
    }

    /// Checks that the run can start: non-zero sizes, finite positive rates.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        for (what, v) in [
            ("epochs", self.epochs),
            ("hidden", self.hidden),
            ("batch-size", self.batch),
            ("steps", self.steps),
            ("corpus-chars", self.corpus_chars),
            ("sample-every", self.sample_every),
        ] {
            if v == 0 {
                return bad(format!("--{what} must be at least 1"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {}", self.lr));
        }
        if let Some(theta) = self.clip {
            if !(theta.is_finite() && theta > 0.0) {
                return bad(format!(
                    "--clip-theta must be a positive number, got {theta}"
                ));
            }
        }
        if self.prefixes.iter().any(|p| p.is_empty()) {
            return bad("a sample prefix may not be empty".to_string());
        }
        Ok(())
    }

    /// The configuration as JSON (stored in checkpoints).
    pub fn to_json(&self) -> Value {
        json!({
            "preset": self.preset,
            "cell": self.cell.name(),
            "init": self.init.name(),
            "sampling": self.sampling.name(),
            "state": self.state.name(),
            "optimizer": self.optimizer.name(),
            "lr": self.lr,
            "clip": self.clip,
            "epochs": self.epochs,
            "hidden": self.hidden,
            "batch": self.batch,
            "steps": self.steps,
            "corpus_chars": self.corpus_chars,
            "sample_every": self.sample_every,
            "sample_len": self.sample_len,
            "prefixes": self.prefixes,
            "seed": self.seed,
        })
    }

    /// The inverse of [`TrainConfig::to_json`]; names the first field that
    /// is missing or malformed.
    pub fn from_json(v: &Value) -> Result<Self, TrainError> {
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| TrainError::Checkpoint(format!("config field `{k}` is missing")))
        };
        let bad = |k: &str| TrainError::Checkpoint(format!("config field `{k}` is malformed"));
        let string = |k: &str| -> Result<String, TrainError> {
            field(k)?.as_str().map(str::to_string).ok_or_else(|| bad(k))
        };
        let count = |k: &str| -> Result<usize, TrainError> {
            field(k)?
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(k))
        };
        let real =
            |k: &str| -> Result<f64, TrainError> { field(k)?.as_f64().ok_or_else(|| bad(k)) };
        Ok(TrainConfig {
            preset: string("preset")?,
            cell: CellKind::from_name(&string("cell")?).ok_or_else(|| bad("cell"))?,
            init: InitScheme::from_name(&string("init")?).ok_or_else(|| bad("init"))?,
            sampling: Sampling::from_name(&string("sampling")?).ok_or_else(|| bad("sampling"))?,
            state: StatePolicy::from_name(&string("state")?).ok_or_else(|| bad("state"))?,
            optimizer: OptimizerKind::from_name(&string("optimizer")?)
                .ok_or_else(|| bad("optimizer"))?,
            lr: real("lr")?,
            clip: match field("clip")? {
                Value::Null => None,
                x => Some(x.as_f64().ok_or_else(|| bad("clip"))? as f32),
            },
            epochs: count("epochs")?,
            hidden: count("hidden")?,
            batch: count("batch")?,
            steps: count("steps")?,
            corpus_chars: count("corpus_chars")?,
            sample_every: count("sample_every")?,
            sample_len: count("sample_len")?,
            prefixes: field("prefixes")?
                .as_array()
                .ok_or_else(|| bad("prefixes"))?
                .iter()
                .map(|p| {
                    p.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("prefixes"))
                })
                .collect::<Result<_, _>>()?,
            seed: field("seed")?.as_u64().ok_or_else(|| bad("seed"))?,
        })
    }
}
