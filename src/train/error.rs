//! The trainer's error: every failure a user can cause (bad flags, missing
//! files, a mismatched checkpoint, a diverging run) is a value with a message
//! that names what is wrong, never a panic.

use std::fmt;
use std::path::PathBuf;

/// What stopped a training or generation run.
#[derive(Debug)]
pub enum TrainError {
    /// An invalid combination of settings.
    Config(String),
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The corpus could not be turned into training data.
    Data(String),
    /// A recur-core routine refused its arguments (a bug in the trainer if
    /// it ever shows).
    Core(recur_core::Error),
    /// A checkpoint is unreadable or malformed.
    Checkpoint(String),
    /// A checkpoint does not fit the requested model or corpus.
    Mismatch(String),
    /// The loss became NaN or infinite.
    Diverged {
        /// 1-based epoch in which it happened.
        epoch: usize,
        /// 0-based mini-batch within the epoch.
        batch: usize,
        /// The loss value.
        loss: f32,
    },
    /// The requested device cannot run training.
    Device(String),
    /// A plot could not be drawn.
    Plot(String),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Config(m) => write!(f, "invalid settings: {m}"),
            TrainError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            TrainError::Data(m) => write!(f, "corpus: {m}"),
            TrainError::Core(e) => write!(f, "internal error in recur-core: {e}"),
            TrainError::Checkpoint(m) => write!(f, "checkpoint: {m}"),
            TrainError::Mismatch(m) => write!(f, "checkpoint does not match: {m}"),
            TrainError::Diverged { epoch, batch, loss } => write!(
                f,
                "training diverged: loss {loss} in epoch {epoch}, mini-batch {batch}; \
                 stopped (the last checkpoint written, if any, is intact). \
                 Try a smaller --lr or turn on --clip"
            ),
            TrainError::Device(m) => write!(f, "device: {m}"),
            TrainError::Plot(m) => write!(f, "plot: {m}"),
        }
    }
}

impl std::error::Error for TrainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrainError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<recur_core::Error> for TrainError {
    fn from(e: recur_core::Error) -> Self {
        TrainError::Core(e)
    }
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
