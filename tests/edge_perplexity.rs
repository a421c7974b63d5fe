//! The accuracy cost of f16 weights: perplexity of the same model on the
//! Jay Chou corpus with f32 and with f16 storage (f32 arithmetic both),
//! through recur-core's stream, one character at a time from a zero state.
//!
//! - Always (when the corpus is present): a short training run of the
//!   d2l-gru preset at hidden size 64 inside the test, then both perplexities.
//! - With `RECUR_EDGE_PPL_MODEL=path` (a checkpoint or PyTorch model file,
//!   e.g. the full d2l-gru from `train --preset d2l-gru --checkpoint ...`):
//!   the same measurement on that model.
//!
//! Texts: d2l's training text (the first 10,000 characters, newlines as
//! spaces) and the next 10,000 characters as held-out text, where a
//! character outside the vocabulary resets the state and is not scored.

// Skips go straight to stderr: the test harness captures println!, and a
// skipped GPU test must say so in CI's log.
use std::io::Write as _;

use std::path::{Path, PathBuf};

use clap::Parser;
use recur::core::stream::{self, StreamModel};
use recur::core::Weight;
use recur::data::{Corpus, CorpusOptions};
use recur::interop::{self, TorchModel};
use recur::train::cli::{run_train, TrainArgs};

fn corpus_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/jaychou_lyrics.txt.zip")
}

/// Perplexity `exp(mean −ln p(next))` over `text`, and the number of scored
/// characters. Characters outside the vocabulary reset the state.
fn perplexity<W: Weight>(model: &TorchModel, params: &[W], text: &[char]) -> (f64, usize) {
    let layout = model.layout;
    let vocab = model.vocabulary.as_ref().expect("vocabulary");
    let id = |c: char| vocab.iter().position(|&v| v == c).map(|i| i as u32);
    let m = StreamModel::new(layout, params).unwrap();
    let mut state = vec![0.0f32; stream::state_len(&layout)];
    let mut ws = vec![f32::NAN; stream::workspace_len(&layout)];
    let mut logits = vec![f32::NAN; layout.vocab];
    let (mut total, mut scored) = (0.0f64, 0usize);
    for pair in text.windows(2) {
        match (id(pair[0]), id(pair[1])) {
            (Some(x), Some(y)) => {
                stream::step_logits(&mut logits, &mut state, x, &m, &mut ws).unwrap();
                total += stream::neg_log_prob(&logits, y).unwrap() as f64;
                scored += 1;
            }
            (Some(x), None) => {
                // Advance on x, nothing to score.
                stream::step_logits(&mut logits, &mut state, x, &m, &mut ws).unwrap();
            }
            (None, _) => stream::reset(&mut state),
        }
    }
    ((total / scored as f64).exp(), scored)
}

/// Measures, prints and checks f32 against f16 on both texts; returns
/// `(train ppl f32, train ppl f16)`.
fn measure(label: &str, model: &TorchModel) -> (f64, f64) {
    let all = Corpus::load(
        corpus_path(),
        &CorpusOptions {
            newlines_to_spaces: true,
            ..CorpusOptions::default()
        },
    )
    .unwrap();
    let chars: Vec<char> = all.text().chars().collect();
    let train = &chars[..10_000];
    let held_out = &chars[10_000..20_000.min(chars.len())];
    let p16 = interop::to_f16(&model.params);
    let mut out = (0.0, 0.0);
    for (name, text) in [("train", train), ("held-out", held_out)] {
        let (ppl32, n) = perplexity(model, &model.params, text);
        let (ppl16, n16) = perplexity(model, &p16, text);
        assert_eq!(n, n16);
        let rel = ppl16 / ppl32 - 1.0;
        println!(
            "{label}: {name} text ({n} characters scored): perplexity f32 {ppl32:.4}, \
             f16 {ppl16:.4} ({:+.3}%)",
            rel * 100.0
        );
        assert!(ppl32.is_finite() && ppl16.is_finite());
        // The accuracy cost of f16 storage stays below 1% of perplexity.
        assert!(rel.abs() < 0.01, "{label} {name}: f16 costs {rel:+.4}");
        if name == "train" {
            out = (ppl32, ppl16);
        }
    }
    out
}

#[test]
fn f16_weights_cost_little_perplexity_on_a_trained_model() {
    let corpus = corpus_path();
    if !corpus.exists() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the corpus {} is absent",
            corpus.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("gru64.safetensors");
    let args = TrainArgs::try_parse_from([
        "train",
        "--preset",
        "d2l-gru",
        "--corpus",
        corpus.to_str().unwrap(),
        "--hidden",
        "64",
        "--epochs",
        "40",
        "--sample-every",
        "40",
        "--threads",
        "2",
        "--quiet",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ])
    .unwrap();
    run_train(&args).unwrap();
    let model = interop::load_model_file(&ckpt).unwrap();
    assert_eq!(model.layout.vocab, 1027);
    assert_eq!(model.layout.hidden, 64);
    let (ppl32, _) = measure("d2l-gru, hidden 64, 40 epochs", &model);
    // Trained: far below the uniform model's perplexity (1,027).
    assert!(ppl32 < 300.0, "training did not take: perplexity {ppl32}");
}

#[test]
fn f16_cost_on_a_given_model() {
    let Some(path) = std::env::var_os("RECUR_EDGE_PPL_MODEL") else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: set RECUR_EDGE_PPL_MODEL to a model file to measure it"
        );
        return;
    };
    if !corpus_path().exists() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the corpus {} is absent",
            corpus_path().display()
        );
        return;
    }
    let path = PathBuf::from(path);
    let model = interop::load_model_file(&path).unwrap();
    let label = format!(
        "{} ({}, hidden {}, vocabulary {})",
        path.display(),
        model.layout.cell.name(),
        model.layout.hidden,
        model.layout.vocab
    );
    measure(&label, &model);
}
