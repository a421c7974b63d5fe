//! PyTorch interop: character language models in safetensors under the
//! names of d2l's `RNNModel` (`rnn.weight_ih_l0`, `rnn.weight_hh_l0`,
//! `rnn.bias_ih_l0`, `rnn.bias_hh_l0`, `dense.weight`, `dense.bias`), the
//! names the trainer's checkpoints use.
//!
//! [`load_model`] reads
//! - a file PyTorch wrote with `safetensors.torch.save_file(model.state_dict())`
//!   for an `nn.RNN` / `nn.GRU` / `nn.LSTM` plus `nn.Linear` model: the six
//!   tensors, F32, F16 or BF16, and optionally the metadata `vocabulary` (a
//!   JSON string, as the trainer writes it) and `cell` (a
//!   [`CellKind::name`]); without `cell` the kind is PyTorch's for the
//!   number of gate blocks: `nn.RNN` (tanh), `nn.GRU` (reset-after),
//!   `nn.LSTM`;
//! - a trainer checkpoint (`format = recur-checkpoint-1`), whose cell comes
//!   from its `config` and whose optimizer moments and carried state are
//!   skipped.
//!
//! Every missing, extra, mis-shaped or mis-typed tensor is named in one
//! [`InteropError::Tensors`]. [`save_model`] writes the other way: the six
//! tensors and the metadata, loadable by `safetensors.torch.load_file` into
//! the same PyTorch modules (see `tests/torch_interop.py`).
//!
//! This file depends only on `recur_core`, `safetensors`, `serde_json` and
//! `half`, so the edge example's build script compiles it too (`#[path]`).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use recur_core::{CellKind, ModelLayout};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// The tensor names of d2l's `RNNModel`, in [`ModelLayout`] order.
pub const TENSOR_NAMES: [&str; 6] = [
    "rnn.weight_ih_l0",
    "rnn.weight_hh_l0",
    "rnn.bias_ih_l0",
    "rnn.bias_hh_l0",
    "dense.weight",
    "dense.bias",
];

/// The trainer's checkpoint format tag (its extra tensors are skipped).
const CHECKPOINT_FORMAT: &str = "recur-checkpoint-1";

/// A language model read from (or to be written to) safetensors.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchModel {
    /// Cell, vocabulary size and hidden size.
    pub layout: ModelLayout,
    /// `vocabulary[id]` is the character of token `id`, when the file has one.
    pub vocabulary: Option<Vec<char>>,
    /// Flat parameters in [`ModelLayout`] order (f32; F16/BF16 files are
    /// widened exactly).
    pub params: Vec<f32>,
}

/// How [`save_model`] stores the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDtype {
    /// 32-bit floats.
    F32,
    /// IEEE half (round to nearest even).
    F16,
}

/// What is wrong with a model file.
#[derive(Debug, Clone, PartialEq)]
pub enum InteropError {
    /// Not a safetensors file, or unreadable.
    Format(String),
    /// A metadata entry is malformed or contradicts the tensors.
    Metadata(String),
    /// The tensors do not form a model: every problem, by tensor name.
    Tensors {
        /// Required tensors that are absent.
        missing: Vec<String>,
        /// Tensors that are neither required nor known extras.
        extra: Vec<String>,
        /// `(name, shape in the file, shape required)`.
        misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
        /// `(name, dtype in the file)` for dtypes other than F32/F16/BF16.
        wrong_dtype: Vec<(String, String)>,
    },
    /// The dimensions are not a valid model (zero, overflow).
    Dims(recur_core::Error),
}

impl fmt::Display for InteropError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InteropError::Format(m) => write!(f, "not a model file: {m}"),
            InteropError::Metadata(m) => write!(f, "metadata: {m}"),
            InteropError::Dims(e) => write!(f, "model dimensions: {e}"),
            InteropError::Tensors {
                missing,
                extra,
                misshaped,
                wrong_dtype,
            } => {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!("missing tensors: {}", missing.join(", ")));
                }
                if !extra.is_empty() {
                    parts.push(format!("unexpected tensors: {}", extra.join(", ")));
                }
                for (name, got, want) in misshaped {
                    if want.is_empty() {
                        parts.push(format!(
                            "tensor `{name}` has shape {got:?}, expected (gates·hidden, hidden)"
                        ));
                    } else {
                        parts.push(format!(
                            "tensor `{name}` has shape {got:?}, expected {want:?}"
                        ));
                    }
                }
                for (name, dtype) in wrong_dtype {
                    parts.push(format!(
                        "tensor `{name}` is {dtype}, expected F32, F16 or BF16"
                    ));
                }
                write!(f, "{}", parts.join("; "))
            }
        }
    }
}

impl std::error::Error for InteropError {}

/// Reads a model file (see the module docs).
pub fn load_model_file(path: &Path) -> Result<TorchModel, InteropError> {
    let bytes = std::fs::read(path)
        .map_err(|e| InteropError::Format(format!("{}: {e}", path.display())))?;
    load_model(&bytes)
}

/// Parses a model file's bytes (see the module docs).
pub fn load_model(bytes: &[u8]) -> Result<TorchModel, InteropError> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| InteropError::Format(format!("not a safetensors file ({e})")))?;
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| InteropError::Format(format!("not a safetensors file ({e})")))?;
    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    let is_checkpoint = meta.get("format").map(String::as_str) == Some(CHECKPOINT_FORMAT);

    // Names first: missing and extra tensors, all of them.
    let present: Vec<String> = tensors.names().iter().map(|s| s.to_string()).collect();
    let mut missing: Vec<String> = TENSOR_NAMES
        .iter()
        .filter(|n| !present.iter().any(|p| p == *n))
        .map(|n| n.to_string())
        .collect();
    let mut extra: Vec<String> = present
        .iter()
        .filter(|p| !TENSOR_NAMES.contains(&p.as_str()))
        .filter(|p| !(is_checkpoint && is_checkpoint_extra(p)))
        .cloned()
        .collect();
    missing.sort();
    extra.sort();

    // The dimensions come from the recurrent weight (G·H, H) and, for the
    // vocabulary size, the metadata or the input weight (G·H, V).
    let shape = |name: &str| tensors.tensor(name).ok().map(|v| v.shape().to_vec());
    let vocabulary = read_vocabulary(meta)?;
    let hh = shape("rnn.weight_hh_l0");
    let (rows, hidden) = match hh.as_deref() {
        Some(&[rows, hidden]) if hidden > 0 && rows % hidden == 0 => (rows, hidden),
        Some(other) => {
            // No shape to expect without the hidden size: an empty one
            // reads as "(gates·hidden, hidden)".
            return Err(InteropError::Tensors {
                missing,
                extra,
                misshaped: vec![("rnn.weight_hh_l0".into(), other.to_vec(), Vec::new())],
                wrong_dtype: Vec::new(),
            });
        }
        None => {
            return Err(InteropError::Tensors {
                missing,
                extra,
                misshaped: Vec::new(),
                wrong_dtype: Vec::new(),
            })
        }
    };
    let cell = read_cell(meta, rows / hidden)?;
    let vocab = match (&vocabulary, shape("rnn.weight_ih_l0").as_deref()) {
        (Some(v), _) => v.len(),
        (None, Some(&[_, v])) => v,
        (None, _) => {
            return Err(InteropError::Metadata(format!(
                "no `vocabulary` metadata and no 2-D `rnn.weight_ih_l0` to take the \
                 vocabulary size from{}",
                describe_names(&missing, &extra)
            )))
        }
    };
    let layout = ModelLayout {
        cell,
        vocab,
        hidden,
    };
    layout.validate().map_err(InteropError::Dims)?;

    let mut misshaped = Vec::new();
    let mut wrong_dtype = Vec::new();
    for span in layout.tensors() {
        let Ok(view) = tensors.tensor(span.name) else {
            continue;
        };
        let want = if span.cols == 0 {
            vec![span.rows]
        } else {
            vec![span.rows, span.cols]
        };
        if view.shape() != want.as_slice() {
            misshaped.push((span.name.to_string(), view.shape().to_vec(), want));
        }
        if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            wrong_dtype.push((span.name.to_string(), format!("{:?}", view.dtype())));
        }
    }
    if !(missing.is_empty() && extra.is_empty() && misshaped.is_empty() && wrong_dtype.is_empty()) {
        return Err(InteropError::Tensors {
            missing,
            extra,
            misshaped,
            wrong_dtype,
        });
    }

    let mut params = vec![0.0f32; layout.len()];
    for span in layout.tensors() {
        let view = tensors
            .tensor(span.name)
            .map_err(|e| InteropError::Format(format!("tensor `{}`: {e}", span.name)))?;
        widen(&mut params[span.range()], &view);
    }
    Ok(TorchModel {
        layout,
        vocabulary,
        params,
    })
}

/// The safetensors bytes of `model`: the six tensors in `dtype` and the
/// metadata `cell` and (when known) `vocabulary`.
pub fn save_model(model: &TorchModel, dtype: StoreDtype) -> Result<Vec<u8>, InteropError> {
    let layout = model.layout;
    layout.validate().map_err(InteropError::Dims)?;
    if model.params.len() != layout.len() {
        return Err(InteropError::Format(format!(
            "{} parameters for a model of {}",
            model.params.len(),
            layout.len()
        )));
    }
    let mut metadata = HashMap::from([("cell".to_string(), layout.cell.name().to_string())]);
    if let Some(v) = &model.vocabulary {
        if v.len() != layout.vocab {
            return Err(InteropError::Metadata(format!(
                "{} vocabulary characters for a vocabulary size of {}",
                v.len(),
                layout.vocab
            )));
        }
        let text: String = v.iter().collect();
        metadata.insert(
            "vocabulary".into(),
            serde_json::Value::String(text).to_string(),
        );
    }
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = layout
        .tensors()
        .iter()
        .map(|span| {
            let shape = if span.cols == 0 {
                vec![span.rows]
            } else {
                vec![span.rows, span.cols]
            };
            let values = &model.params[span.range()];
            let bytes = match dtype {
                StoreDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                StoreDtype::F16 => values
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
            };
            (span.name.to_string(), shape, bytes)
        })
        .collect();
    let st_dtype = match dtype {
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::F16 => Dtype::F16,
    };
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(st_dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| InteropError::Format(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| InteropError::Format(format!("cannot serialise: {e}")))
}

/// The parameters rounded to f16 (the storage of f16 inference).
pub fn to_f16(params: &[f32]) -> Vec<half::f16> {
    params.iter().map(|&v| half::f16::from_f32(v)).collect()
}

/// The trainer checkpoint's tensors beside the model's.
fn is_checkpoint_extra(name: &str) -> bool {
    name.starts_with("optimizer.") || name.starts_with("state.")
}

fn describe_names(missing: &[String], extra: &[String]) -> String {
    let mut s = String::new();
    if !missing.is_empty() {
        s += &format!("; missing tensors: {}", missing.join(", "));
    }
    if !extra.is_empty() {
        s += &format!("; unexpected tensors: {}", extra.join(", "));
    }
    s
}

/// `vocabulary`: a JSON string whose characters are the tokens.
fn read_vocabulary(meta: &HashMap<String, String>) -> Result<Option<Vec<char>>, InteropError> {
    let Some(raw) = meta.get("vocabulary") else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| InteropError::Metadata(format!("`vocabulary` is not JSON ({e})")))?;
    let text = value
        .as_str()
        .ok_or_else(|| InteropError::Metadata("`vocabulary` is not a JSON string".into()))?;
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if chars[..i].contains(c) {
            return Err(InteropError::Metadata(format!(
                "`vocabulary` repeats the character {c:?} (token {i})"
            )));
        }
    }
    Ok(Some(chars))
}

/// The cell kind: metadata `cell`, else the trainer's `config`, else
/// PyTorch's module for the number of gate blocks.
fn read_cell(meta: &HashMap<String, String>, gates: usize) -> Result<CellKind, InteropError> {
    let named = if let Some(name) = meta.get("cell") {
        Some(name.clone())
    } else if let Some(config) = meta.get("config") {
        let v: serde_json::Value = serde_json::from_str(config)
            .map_err(|e| InteropError::Metadata(format!("`config` is not JSON ({e})")))?;
        Some(
            v.get("cell")
                .and_then(|c| c.as_str())
                .ok_or_else(|| InteropError::Metadata("`config` has no `cell`".into()))?
                .to_string(),
        )
    } else {
        None
    };
    let cell = match named {
        Some(name) => CellKind::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = CellKind::ALL.iter().map(|k| k.name()).collect();
            InteropError::Metadata(format!(
                "cell `{name}` is unknown; the cells are: {}",
                known.join(", ")
            ))
        })?,
        None => match gates {
            1 => CellKind::RnnTanh,
            3 => CellKind::GruResetAfter,
            4 => CellKind::Lstm,
            g => {
                return Err(InteropError::Metadata(format!(
                    "`rnn.weight_hh_l0` stacks {g} gate blocks; nn.RNN has 1, nn.GRU 3, \
                     nn.LSTM 4"
                )))
            }
        },
    };
    if cell.gates() != gates {
        return Err(InteropError::Metadata(format!(
            "cell `{}` has {} gate blocks but `rnn.weight_hh_l0` stacks {gates}",
            cell.name(),
            cell.gates()
        )));
    }
    Ok(cell)
}

/// Little-endian F32 / F16 / BF16 data widened to f32 (exact).
fn widen(out: &mut [f32], view: &TensorView<'_>) {
    let data = view.data();
    match view.dtype() {
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        _ => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
}
