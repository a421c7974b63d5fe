//! Per-epoch figures: what the d2l lines print, the `--metrics` JSON lines
//! and the history a checkpoint keeps for plots.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::error::TrainError;

/// The figures of one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// `exp(loss)`, d2l's perplexity.
    pub perplexity: f64,
    /// Mean cross-entropy over the epoch's predictions: Σ(loss·n) / Σn.
    pub loss: f64,
    /// Wall-clock seconds of the epoch's training (not of the samples).
    pub seconds: f64,
    /// Predicted tokens per second (T·B per mini-batch).
    pub tokens_per_s: f64,
    /// Mean over the epoch's mini-batches of the gradients' global L2 norm
    /// before clipping.
    pub grad_norm: f64,
}

impl EpochRecord {
    /// The record as a JSON object (non-finite numbers become `null`).
    pub fn to_json(&self) -> Value {
        json!({
            "epoch": self.epoch,
            "perplexity": finite(self.perplexity),
            "loss": finite(self.loss),
            "seconds": finite(self.seconds),
            "tokens_per_s": finite(self.tokens_per_s),
            "grad_norm": finite(self.grad_norm),
        })
    }

    /// The inverse of [`EpochRecord::to_json`] (`null` reads as NaN).
    pub fn from_json(v: &Value) -> Option<Self> {
        let num = |k: &str| -> Option<f64> {
            match v.get(k)? {
                Value::Null => Some(f64::NAN),
                x => x.as_f64(),
            }
        };
        Some(EpochRecord {
            epoch: usize::try_from(v.get("epoch")?.as_u64()?).ok()?,
            perplexity: num("perplexity")?,
            loss: num("loss")?,
            seconds: num("seconds")?,
            tokens_per_s: num("tokens_per_s")?,
            grad_norm: num("grad_norm")?,
        })
    }

    /// d2l's line: `epoch 40, perplexity 151.275457, time 0.39 sec`.
    pub fn d2l_line(&self) -> String {
        format!(
            "epoch {}, perplexity {:.6}, time {:.2} sec",
            self.epoch, self.perplexity, self.seconds
        )
    }
}

fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

/// The `--metrics` file: one JSON object per line, flushed after each epoch
/// so that a crash or divergence leaves every finished epoch on disk.
pub struct MetricsWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, TrainError> {
        let file = File::create(path).map_err(|e| TrainError::io(path, e))?;
        Ok(MetricsWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        })
    }

    /// Appends one epoch's line.
    pub fn write(&mut self, record: &EpochRecord) -> Result<(), TrainError> {
        writeln!(self.out, "{}", record.to_json())
            .and_then(|_| self.out.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}
