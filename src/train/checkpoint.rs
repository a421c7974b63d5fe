//! Checkpoints in safetensors: the parameters under PyTorch's names in d2l's
//! `RNNModel` (`rnn.weight_ih_l0`, …, `dense.bias`), the optimizer's moments
//! and the carried hidden state beside them, and the configuration,
//! vocabulary, epoch, RNG position and per-epoch history in the metadata.
//! Written atomically: a temporary file in the same folder, synced, then
//! renamed over the target, so a crash never leaves a half-written file.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use recur_core::ModelLayout;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::Value;

use super::backend::{HiddenState, OptimizerState};
use super::config::{OptimizerKind, TrainConfig};
use super::error::TrainError;
use super::metrics::EpochRecord;
use super::rng::RngState;

/// The `format` metadata value of this version.
pub const FORMAT: &str = "recur-checkpoint-1";

const EXP_AVG: &str = "optimizer.exp_avg";
const EXP_AVG_SQ: &str = "optimizer.exp_avg_sq";
const STATE_H: &str = "state.h";
const STATE_C: &str = "state.c";

/// Everything needed to continue a run bit-identically, or to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The vocabulary: `vocabulary[id]` is the character of token `id`.
    pub vocabulary: Vec<char>,
    /// Epochs completed.
    pub epoch: usize,
    /// Flat parameters ([`ModelLayout`] order).
    pub params: Vec<f32>,
    /// The optimizer's state.
    pub optimizer: OptimizerState,
    /// The hidden state carried into the next epoch (kept only when the
    /// state policy carries it across epochs).
    pub state: Option<HiddenState>,
    /// The RNG position after the last completed epoch.
    pub rng: RngState,
    /// The figures of every completed epoch.
    pub history: Vec<EpochRecord>,
}

impl Checkpoint {
    /// The model's layout, from the configuration and the vocabulary.
    pub fn layout(&self) -> ModelLayout {
        ModelLayout {
            cell: self.config.cell,
            vocab: self.vocabulary.len(),
            hidden: self.config.hidden,
        }
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let bytes = self.to_bytes()?;
        write_atomically(path, &bytes)
    }

    /// The safetensors file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let layout = self.layout();
        layout.validate()?;
        if self.params.len() != layout.len() {
            return Err(TrainError::Checkpoint(format!(
                "{} parameters for a model of {}",
                self.params.len(),
                layout.len()
            )));
        }
        // (name, shape, little-endian bytes) of every tensor.
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for span in layout.tensors() {
            tensors.push((
                span.name.to_string(),
                shape_of(&span),
                le_bytes(&self.params[span.range()]),
            ));
        }
        if !self.optimizer.exp_avg.is_empty() {
            tensors.push((
                EXP_AVG.into(),
                vec![layout.len()],
                le_bytes(&self.optimizer.exp_avg),
            ));
            tensors.push((
                EXP_AVG_SQ.into(),
                vec![layout.len()],
                le_bytes(&self.optimizer.exp_avg_sq),
            ));
        }
        if let Some(state) = &self.state {
            let b = self.config.batch;
            tensors.push((STATE_H.into(), vec![b, layout.hidden], le_bytes(&state.h)));
            if !state.c.is_empty() {
                tensors.push((STATE_C.into(), vec![b, layout.hidden], le_bytes(&state.c)));
            }
        }
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| TrainError::Checkpoint(format!("tensor `{name}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let history: Vec<Value> = self.history.iter().map(EpochRecord::to_json).collect();
        let vocabulary: String = self.vocabulary.iter().collect();
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("config".to_string(), self.config.to_json().to_string()),
            (
                "vocabulary".to_string(),
                Value::String(vocabulary).to_string(),
            ),
            ("epoch".to_string(), self.epoch.to_string()),
            (
                "optimizer_step".to_string(),
                self.optimizer.step.to_string(),
            ),
            ("rng".to_string(), self.rng.to_text()),
            ("history".to_string(), Value::Array(history).to_string()),
        ]);
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| TrainError::Checkpoint(format!("cannot serialise: {e}")))
    }

    /// Reads and checks a checkpoint file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let bytes = fs::read(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            TrainError::Checkpoint(m) => TrainError::Checkpoint(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and checks a checkpoint's bytes: every tensor present, F32,
    /// with the shape the configuration and vocabulary call for.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TrainError> {
        let bad = |m: String| TrainError::Checkpoint(m);
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let empty = HashMap::new();
        let meta = meta.metadata().as_ref().unwrap_or(&empty);
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| {
                bad(format!(
                    "metadata `{k}` is missing (not a recur checkpoint?)"
                ))
            })
        };
        let format = get("format")?;
        if format != FORMAT {
            return Err(bad(format!("format `{format}` is not {FORMAT}")));
        }
        let json = |k: &str| -> Result<Value, TrainError> {
            serde_json::from_str(get(k)?).map_err(|e| bad(format!("metadata `{k}`: {e}")))
        };
        let number = |k: &str| -> Result<u64, TrainError> {
            get(k)?
                .parse()
                .map_err(|_| bad(format!("metadata `{k}` is not a count")))
        };
        let config = TrainConfig::from_json(&json("config")?)?;
        let vocabulary: Vec<char> = json("vocabulary")?
            .as_str()
            .ok_or_else(|| bad("metadata `vocabulary` is not a string".into()))?
            .chars()
            .collect();
        let epoch = usize::try_from(number("epoch")?)
            .map_err(|_| bad("metadata `epoch` is too large".into()))?;
        let rng = RngState::from_text(get("rng")?)
            .ok_or_else(|| bad("metadata `rng` is malformed".into()))?;
        let history = json("history")?
            .as_array()
            .ok_or_else(|| bad("metadata `history` is not an array".into()))?
            .iter()
            .map(|v| {
                EpochRecord::from_json(v)
                    .ok_or_else(|| bad("metadata `history` holds a malformed record".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let layout = ModelLayout {
            cell: config.cell,
            vocab: vocabulary.len(),
            hidden: config.hidden,
        };
        layout
            .validate()
            .map_err(|e| bad(format!("model dimensions: {e}")))?;

        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>, TrainError> {
            let view = tensors
                .tensor(name)
                .map_err(|_| bad(format!("tensor `{name}` is missing")))?;
            if view.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor `{name}` is {:?}, not F32",
                    view.dtype()
                )));
            }
            if view.shape() != shape {
                return Err(TrainError::Mismatch(format!(
                    "tensor `{name}` has shape {:?}, the checkpoint's own config ({}, hidden {}, \
                     vocabulary {}) needs {shape:?}",
                    view.shape(),
                    config.cell.name(),
                    config.hidden,
                    vocabulary.len()
                )));
            }
            Ok(from_le_bytes(view.data()))
        };
        let mut params = vec![0.0f32; layout.len()];
        for span in layout.tensors() {
            params[span.range()].copy_from_slice(&read(span.name, &shape_of(&span))?);
        }
        let optimizer = OptimizerState {
            step: number("optimizer_step")?,
            exp_avg: match config.optimizer {
                OptimizerKind::Adam => read(EXP_AVG, &[layout.len()])?,
                OptimizerKind::Sgd => Vec::new(),
            },
            exp_avg_sq: match config.optimizer {
                OptimizerKind::Adam => read(EXP_AVG_SQ, &[layout.len()])?,
                OptimizerKind::Sgd => Vec::new(),
            },
        };
        let state_shape = [config.batch, config.hidden];
        let state = match tensors.tensor(STATE_H) {
            Err(_) => None,
            Ok(_) => Some(HiddenState {
                h: read(STATE_H, &state_shape)?,
                c: if config.cell.has_cell_state() {
                    read(STATE_C, &state_shape)?
                } else {
                    Vec::new()
                },
            }),
        };
        Ok(Checkpoint {
            config,
            vocabulary,
            epoch,
            params,
            optimizer,
            state,
            rng,
            history,
        })
    }
}

fn shape_of(span: &recur_core::TensorSpan) -> Vec<usize> {
    if span.cols == 0 {
        vec![span.rows]
    } else {
        vec![span.rows, span.cols]
    }
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it
/// over `path`: readers see the old file or the new one, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| TrainError::Config(format!("{}: not a file path", path.display())))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(TrainError::io(path, e));
    }
    Ok(())
}
