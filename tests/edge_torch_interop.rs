//! PyTorch interop through safetensors (d2l's RNNModel names):
//! - PyTorch → recur: the committed golden files of `tests/torch_interop.py`
//!   (nn.RNN, nn.GRU, nn.LSTM, and an f16-saved nn.GRU) load with
//!   `recur::interop` and recur-core's streaming logits match PyTorch's over
//!   50 characters, and so do recur-engine's on a GPU (skipped without one);
//! - missing, extra and mis-shaped tensors are named in the error;
//! - recur → PyTorch: a trainer checkpoint and a `save_model` file written
//!   here load into PyTorch modules and give recur's logits (run when a
//!   Python with torch and safetensors is found, else skipped with a reason).

// Skips go straight to stderr: the test harness captures println!, and a
// skipped GPU test must say so in CI's log.
use std::io::Write as _;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use half::f16;
use recur::core::stream::{self, StreamModel};
use recur::core::{CellKind, ModelLayout, Weight};
use recur::interop::{self, InteropError, StoreDtype, TorchModel};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// `(tokens, logits (T, V))` of a golden logits file.
fn read_logits(path: &Path) -> (Vec<u32>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tokens = st.tensor("tokens").unwrap();
    assert_eq!(tokens.dtype(), Dtype::I32);
    let tokens = tokens
        .data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    let logits = st.tensor("logits").unwrap();
    assert_eq!(logits.dtype(), Dtype::F32);
    let logits = logits
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (tokens, logits)
}

/// recur-core's logits for every step of `tokens`, from a zero state.
fn stream_logits<W: Weight>(layout: ModelLayout, params: &[W], tokens: &[u32]) -> Vec<f32> {
    let model = StreamModel::new(layout, params).unwrap();
    let mut state = vec![0.0f32; stream::state_len(&layout)];
    let mut ws = vec![f32::NAN; stream::workspace_len(&layout)];
    let mut out = Vec::new();
    for &t in tokens {
        let mut logits = vec![f32::NAN; layout.vocab];
        stream::step_logits(&mut logits, &mut state, t, &model, &mut ws).unwrap();
        out.extend_from_slice(&logits);
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pytorch_models_load_and_give_pytorchs_logits() {
    let vocabulary: Vec<char> = "abcdefghijklmnopqrstuvwxyz ,.\n".chars().collect();
    for (name, cell) in [
        ("rnn", CellKind::RnnTanh),
        ("gru", CellKind::GruResetAfter),
        ("lstm", CellKind::Lstm),
        ("gru_f16", CellKind::GruResetAfter),
    ] {
        let model = interop::load_model_file(&golden(&format!("interop_{name}.safetensors")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            model.layout,
            ModelLayout {
                cell,
                vocab: 30,
                hidden: 16
            },
            "{name}"
        );
        assert_eq!(model.vocabulary.as_deref(), Some(&vocabulary[..]));
        let (tokens, want) = read_logits(&golden(&format!("interop_{name}_logits.safetensors")));
        assert_eq!(tokens.len(), 50);
        let got = stream_logits(model.layout, &model.params, &tokens);
        let d = max_abs_diff(&got, &want);
        println!("PyTorch -> recur {name}: max |logit diff| {d:.2e}");
        assert!(d < 1e-4, "{name}: max |logit diff| {d}");
        // The logits are not flat: a wrong weight order would show.
        assert!(want.iter().any(|&v| (v - want[0]).abs() > 0.5));

        // The same model stored as f16 in recur-core.
        let p16 = interop::to_f16(&model.params);
        let got16 = stream_logits(model.layout, &p16, &tokens);
        let d16 = max_abs_diff(&got16, &want);
        println!("PyTorch -> recur {name}, f16 weights: max |logit diff| {d16:.2e}");
        if name == "gru_f16" {
            // Saved in f16 by PyTorch: the f16 copy is the same weights.
            assert!(d16 < 1e-4, "{name}: f16 {d16}");
        } else {
            assert!(d16 < 1e-2, "{name}: f16 {d16}");
        }
    }
}

/// A tensor as (name, shape, little-endian bytes).
type RawTensor = (String, Vec<usize>, Vec<u8>);

/// The golden GRU's tensors (F32), sorted by name, and its metadata.
fn golden_tensors() -> (Vec<RawTensor>, HashMap<String, String>) {
    let bytes = std::fs::read(golden("interop_gru.safetensors")).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    out.sort();
    (out, meta)
}

fn rebuild(tensors: &[RawTensor], meta: HashMap<String, String>) -> Vec<u8> {
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let (mut t, meta) = golden_tensors();
    // Drop one, add two, cut one short.
    t.retain(|(n, _, _)| n != "rnn.bias_hh_l0");
    t.push(("rnn.weight_ih_l1".into(), vec![2], vec![0; 8]));
    t.push(("linear.weight".into(), vec![2], vec![0; 8]));
    let db = t.iter_mut().find(|(n, _, _)| n == "dense.bias").unwrap();
    db.1 = vec![29];
    db.2.truncate(29 * 4);
    let err = interop::load_model(&rebuild(&t, meta.clone())).unwrap_err();
    let InteropError::Tensors {
        missing,
        extra,
        misshaped,
        wrong_dtype,
    } = &err
    else {
        panic!("expected a tensor error, got {err}");
    };
    assert_eq!(missing, &["rnn.bias_hh_l0"]);
    assert_eq!(extra, &["linear.weight", "rnn.weight_ih_l1"]);
    assert_eq!(misshaped, &[("dense.bias".to_string(), vec![29], vec![30])]);
    assert!(wrong_dtype.is_empty());
    let msg = err.to_string();
    println!("{msg}");
    for name in [
        "rnn.bias_hh_l0",
        "rnn.weight_ih_l1",
        "linear.weight",
        "dense.bias",
    ] {
        assert!(msg.contains(name), "`{name}` not in: {msg}");
    }

    // A recurrent weight that is not (G·H, H), a vocabulary that contradicts
    // the input weight, an unknown cell name.
    let (mut t, meta) = golden_tensors();
    let hh = t
        .iter_mut()
        .find(|(n, _, _)| n == "rnn.weight_hh_l0")
        .unwrap();
    hh.1 = vec![16, 48];
    let msg = interop::load_model(&rebuild(&t, meta.clone()))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("rnn.weight_hh_l0"), "{msg}");

    let (t, mut meta2) = golden_tensors();
    meta2.insert("vocabulary".into(), "\"abc\"".into());
    let msg = interop::load_model(&rebuild(&t, meta2))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("rnn.weight_ih_l0") && msg.contains("dense.weight"),
        "{msg}"
    );

    let (t, mut meta3) = golden_tensors();
    meta3.insert("cell".into(), "gru-sideways".into());
    let msg = interop::load_model(&rebuild(&t, meta3))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("gru-sideways"), "{msg}");

    let (t, mut meta4) = golden_tensors();
    meta4.insert("cell".into(), "lstm".into());
    let msg = interop::load_model(&rebuild(&t, meta4))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("lstm") && msg.contains("stacks 3"), "{msg}");

    // An integer tensor under a model name.
    let (t, meta) = golden_tensors();
    let views: Vec<_> = t
        .iter()
        .map(|(n, s, b)| {
            let dtype = if n == "dense.bias" {
                Dtype::I32
            } else {
                Dtype::F32
            };
            (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap())
        })
        .collect();
    let msg = interop::load_model(&safetensors::serialize(views, Some(meta)).unwrap())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("dense.bias") && msg.contains("I32"), "{msg}");

    assert!(matches!(
        interop::load_model(b"not a safetensors file"),
        Err(InteropError::Format(_))
    ));
}

#[test]
fn save_model_round_trips_in_f32_and_f16() {
    let model = interop::load_model_file(&golden("interop_lstm.safetensors")).unwrap();
    let back = interop::load_model(&interop::save_model(&model, StoreDtype::F32).unwrap()).unwrap();
    assert_eq!(back, model);
    let half = interop::load_model(&interop::save_model(&model, StoreDtype::F16).unwrap()).unwrap();
    assert_eq!(half.layout, model.layout);
    let rounded: Vec<f32> = model
        .params
        .iter()
        .map(|&v| f16::from_f32(v).to_f32())
        .collect();
    assert_eq!(half.params, rounded);
}

/// A Python with torch and safetensors: `RECUR_TORCH_PYTHON`, else the
/// project's `.venv`; `None` (with the reason) when there is none.
fn torch_python() -> Result<PathBuf, String> {
    let candidate = match std::env::var_os("RECUR_TORCH_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    let ok = Command::new(&candidate)
        .args(["-c", "import torch, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Ok(candidate)
    } else {
        Err(format!(
            "no Python with torch and safetensors at {} (set RECUR_TORCH_PYTHON)",
            candidate.display()
        ))
    }
}

fn write_logits(path: &Path, tokens: &[u32], logits: &[f32], vocab: usize) {
    let tb: Vec<u8> = tokens
        .iter()
        .flat_map(|&t| (t as i32).to_le_bytes())
        .collect();
    let lb: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "tokens".to_string(),
            TensorView::new(Dtype::I32, vec![tokens.len()], &tb).unwrap(),
        ),
        (
            "logits".to_string(),
            TensorView::new(Dtype::F32, vec![tokens.len(), vocab], &lb).unwrap(),
        ),
    ];
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn recur_models_load_into_pytorch() {
    let python = match torch_python() {
        Ok(p) => p,
        Err(reason) => {
            let _ = writeln!(std::io::stderr(), "skipped: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let vocabulary: Vec<char> = "分开不想要的爱你我 ,\n".chars().collect();
    let tokens: Vec<u32> = (0..50u32).map(|i| (i * 7 + i / 3) % 12).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torch_interop.py");
    let run = |model_path: &Path, logits_path: &Path| {
        let out = Command::new(&python)
            .arg(&script)
            .arg("check-recur")
            .arg(model_path)
            .arg(logits_path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        print!("{text}");
        assert!(out.status.success(), "PyTorch disagrees: {text}");
    };

    // save_model files, every cell kind (d2l's scratch GRU included).
    for (i, cell) in CellKind::ALL.into_iter().enumerate() {
        let layout = ModelLayout {
            cell,
            vocab: vocabulary.len(),
            hidden: 9,
        };
        let mut seed = 0x5eed + i as u64;
        let params: Vec<f32> = (0..layout.len())
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1.2
            })
            .collect();
        let model = TorchModel {
            layout,
            vocabulary: Some(vocabulary.clone()),
            params,
        };
        let mp = dir.path().join(format!("{}.safetensors", cell.name()));
        std::fs::write(&mp, interop::save_model(&model, StoreDtype::F32).unwrap()).unwrap();
        let lp = dir
            .path()
            .join(format!("{}_logits.safetensors", cell.name()));
        let logits = stream_logits(layout, &model.params, &tokens);
        write_logits(&lp, &tokens, &logits, layout.vocab);
        run(&mp, &lp);
    }

    // A trainer checkpoint (the d2l-gru preset's cell, a small hidden size).
    use recur::train::{rng::RngState, Checkpoint, OptimizerState, TrainConfig};
    let mut config = TrainConfig::preset("d2l-gru").unwrap();
    config.hidden = 8;
    let layout = ModelLayout {
        cell: config.cell,
        vocab: vocabulary.len(),
        hidden: 8,
    };
    let params: Vec<f32> = (0..layout.len())
        .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 1.5)
        .collect();
    let ckpt = Checkpoint {
        config,
        vocabulary: vocabulary.clone(),
        epoch: 1,
        params: params.clone(),
        optimizer: OptimizerState::default(),
        state: None,
        rng: RngState {
            seed: [7; 32],
            stream: 0,
            word_pos: 0,
        },
        history: Vec::new(),
    };
    let cp = dir.path().join("ckpt.safetensors");
    ckpt.save(&cp).unwrap();
    // recur::interop reads it too (extras skipped, cell from the config).
    let loaded = interop::load_model_file(&cp).unwrap();
    assert_eq!(loaded.layout, layout);
    assert_eq!(loaded.params, params);
    let lp = dir.path().join("ckpt_logits.safetensors");
    write_logits(
        &lp,
        &tokens,
        &stream_logits(layout, &params, &tokens),
        layout.vocab,
    );
    run(&cp, &lp);
}

/// PyTorch → recur-engine: the golden models uploaded to the GPU give
/// PyTorch's logits (f32; and f16 storage within its rounding). Skipped
/// without a CUDA device.
#[test]
fn pytorch_models_load_into_the_engine() {
    use recur::engine::{DeviceModel, Gpu, InputKind, PlanOptions, Precision, SeqBuffers};
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) if e.is_no_device() => {
            let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
            return;
        }
        Err(e) => panic!("opening the GPU failed: {e}"),
    };
    for name in ["rnn", "gru", "lstm", "gru_f16"] {
        let model =
            interop::load_model_file(&golden(&format!("interop_{name}.safetensors"))).unwrap();
        let (tokens, want) = read_logits(&golden(&format!("interop_{name}_logits.safetensors")));
        let layout = model.layout;
        for (precision, tol) in [(Precision::F32, 1e-4f32), (Precision::F16, 1e-2)] {
            let dm = DeviceModel::upload(&gpu, layout, &model.params, precision).unwrap();
            let mut bufs = SeqBuffers::new(&dm, tokens.len(), 1, InputKind::Tokens).unwrap();
            bufs.poison().unwrap();
            bufs.set_tokens(&tokens).unwrap();
            let c0 = if layout.cell.has_cell_state() {
                vec![0.0; layout.hidden]
            } else {
                Vec::new()
            };
            bufs.set_state(&vec![0.0; layout.hidden], &c0).unwrap();
            // Targets only feed the loss; the next tokens, as in training.
            let targets: Vec<u32> = tokens[1..].iter().chain(&tokens[..1]).copied().collect();
            bufs.set_targets(&targets).unwrap();
            dm.forward(&mut bufs, PlanOptions::default()).unwrap();
            dm.output_loss(&mut bufs).unwrap();
            let got = bufs.logits().unwrap();
            let d = max_abs_diff(&got, &want);
            println!("PyTorch -> recur-engine {name} {precision:?}: max |logit diff| {d:.2e}");
            assert!(d < tol, "{name} {precision:?}: {d}");
        }
    }
}
