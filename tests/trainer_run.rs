//! The trainer end to end on a small synthetic corpus (no shared data
//! needed): bit-identical resume, determinism, metrics, plots, divergence,
//! generation, and clear errors for bad input.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use recur::train::checkpoint::Checkpoint;
use recur::train::cli::{run_train, TrainArgs};
use recur::train::generate::{run_generate, GenerateArgs};
use recur::train::TrainError;

const PHRASES: [&str; 8] = [
    "分开 ",
    "不分开 ",
    "想要有直升机 ",
    "想要和你飞到宇宙去 ",
    "我每天每天 ",
    "融化在一起 ",
    "融化在宇宙里 ",
    "我不要再想 ",
];

/// A deterministic pseudo-lyrics corpus of about 1,500 characters.
fn write_corpus(dir: &Path) -> PathBuf {
    let mut text = String::new();
    let mut x: u32 = 17;
    while text.chars().count() < 1500 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        text.push_str(PHRASES[(x >> 16) as usize % PHRASES.len()]);
        if x.is_multiple_of(5) {
            text.push('\n');
        }
    }
    let path = dir.join("lyrics.txt");
    std::fs::write(&path, text).unwrap();
    path
}

/// Flags of a tiny, fast configuration on `corpus`, then `extra`.
fn args(corpus: &Path, extra: &[&str]) -> TrainArgs {
    let mut v: Vec<String> = [
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--hidden",
        "16",
        "--batch-size",
        "4",
        "--steps",
        "6",
        "--sample-len",
        "10",
        "--threads",
        "2",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    TrainArgs::try_parse_from(v).unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn resume_continues_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    // SGD with per-epoch state, Adam with state carried across epochs, and
    // the random sampler with per-batch state.
    for preset in ["d2l-gru", "d2l-concise-lstm", "d2l-rnn-random"] {
        let straight = dir.path().join(format!("{preset}-straight.safetensors"));
        let split = dir.path().join(format!("{preset}-split.safetensors"));
        let p = ["--preset", preset, "--sample-every", "3"];
        let full = run_train(&args(
            &corpus,
            &[
                &p[..],
                &["--epochs", "10", "--checkpoint", path_str(&straight)],
            ]
            .concat(),
        ))
        .unwrap();
        run_train(&args(
            &corpus,
            &[&p[..], &["--epochs", "5", "--checkpoint", path_str(&split)]].concat(),
        ))
        .unwrap();
        let halves = run_train(&args(
            &corpus,
            &[
                "--resume",
                path_str(&split),
                "--epochs",
                "10",
                "--checkpoint",
                path_str(&split),
            ],
        ))
        .unwrap();
        let (a, b) = (
            Checkpoint::load(&straight).unwrap(),
            Checkpoint::load(&split).unwrap(),
        );
        assert_eq!(a.epoch, 10);
        assert_eq!(b.epoch, 10);
        assert!(a.params.iter().all(|v| v.is_finite()));
        assert_eq!(a.params, b.params, "{preset}: parameters");
        assert_eq!(a.optimizer, b.optimizer, "{preset}: optimizer");
        assert_eq!(a.state, b.state, "{preset}: carried state");
        assert_eq!(a.rng, b.rng, "{preset}: rng");
        let ppl =
            |h: &[recur::train::EpochRecord]| h.iter().map(|r| r.perplexity).collect::<Vec<_>>();
        assert_eq!(
            ppl(&full.history),
            ppl(&halves.history),
            "{preset}: perplexities"
        );
        assert_eq!(full.samples, halves.samples, "{preset}: samples");
        // It learnt something: perplexity well below the vocabulary size.
        let last = full.history.last().unwrap().perplexity;
        assert!(
            last < 0.5 * a.vocabulary.len() as f64,
            "{preset}: perplexity {last}"
        );
    }
}

#[test]
fn same_seed_and_threads_give_the_same_run_and_seeds_differ() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let run_on = |seed: &str, threads: &str| {
        run_train(&args(
            &corpus,
            &[
                "--preset",
                "d2l-concise-gru",
                "--epochs",
                "2",
                "--seed",
                seed,
                "--threads",
                threads,
            ],
        ))
        .unwrap()
        .history
        .iter()
        .map(|r| r.loss)
        .collect::<Vec<_>>()
    };
    let run = |seed: &str| run_on(seed, "2");
    assert_eq!(run("3"), run("3"));
    assert_ne!(run("3"), run("4"));
    // The threaded product is bit-identical to one thread.
    assert_eq!(run("3"), run_on("3", "1"));
}

#[test]
fn metrics_and_plots_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let metrics = dir.path().join("m.jsonl");
    for plot in ["ppl.png", "ppl.svg"] {
        let plot = dir.path().join(plot);
        run_train(&args(
            &corpus,
            &[
                "--epochs",
                "3",
                "--metrics",
                path_str(&metrics),
                "--plot",
                path_str(&plot),
            ],
        ))
        .unwrap();
        let bytes = std::fs::read(&plot).unwrap();
        if plot.extension().unwrap() == "png" {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        } else {
            let svg = String::from_utf8(bytes).unwrap();
            assert!(svg.contains("<svg") && svg.contains("perplexity") && svg.contains("epoch"));
        }
    }
    let text = std::fs::read_to_string(&metrics).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["epoch"], i + 1);
        for key in ["perplexity", "loss", "seconds", "tokens_per_s", "grad_norm"] {
            assert!(line[key].as_f64().unwrap() > 0.0, "{key} in {line}");
        }
        let (ppl, loss) = (
            line["perplexity"].as_f64().unwrap(),
            line["loss"].as_f64().unwrap(),
        );
        assert!((ppl - loss.exp()).abs() < 1e-9 * ppl);
    }
}

#[test]
fn divergence_stops_with_an_error_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let ckpt = dir.path().join("good.safetensors");
    run_train(&args(
        &corpus,
        &["--epochs", "2", "--checkpoint", path_str(&ckpt)],
    ))
    .unwrap();
    let before = std::fs::read(&ckpt).unwrap();
    let err = run_train(&args(
        &corpus,
        &[
            "--resume",
            path_str(&ckpt),
            "--epochs",
            "6",
            "--lr",
            "1e38",
            "--no-clip",
            "--checkpoint",
            path_str(&ckpt),
            "--sample-every",
            "1",
        ],
    ))
    .unwrap_err();
    assert!(matches!(err, TrainError::Diverged { .. }), "{err}");
    assert!(err.to_string().contains("diverged"), "{err}");
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        before,
        "the last good checkpoint is intact"
    );
}

#[test]
fn generate_continues_a_prefix_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let ckpt = dir.path().join("g.safetensors");
    run_train(&args(
        &corpus,
        &["--epochs", "3", "--checkpoint", path_str(&ckpt)],
    ))
    .unwrap();
    let gen = |extra: &[&str]| {
        let mut v = vec!["generate", "--checkpoint", path_str(&ckpt)];
        v.extend_from_slice(extra);
        run_generate(&GenerateArgs::try_parse_from(v).unwrap())
    };
    let greedy = gen(&["--prefix", "不分开", "--len", "20"]).unwrap();
    assert!(greedy.starts_with("不分开"));
    assert_eq!(greedy.chars().count(), 23);
    assert_eq!(greedy, gen(&["--prefix", "不分开", "--len", "20"]).unwrap());
    let sampled = gen(&[
        "--prefix",
        "分开",
        "--len",
        "30",
        "--temperature",
        "0.9",
        "--top-k",
        "4",
        "--seed",
        "1",
    ])
    .unwrap();
    assert_eq!(sampled.chars().count(), 32);
    let err = gen(&["--prefix", "分开吧"]).unwrap_err().to_string();
    assert!(err.contains('吧'), "{err}");
    assert!(gen(&["--temperature", "-1"]).is_err());
    // f16 weights and --top-k are the GPU's and the CPU's only; without a
    // GPU, --device cuda is a clear error (with one, it generates: the
    // GPU tests compare it with the CPU).
    let err = gen(&["--precision", "f16"]).unwrap_err().to_string();
    assert!(
        err.contains("--precision f16") && err.contains("--device cuda"),
        "{err}"
    );
    let err = gen(&["--device", "cuda", "--temperature", "1", "--top-k", "3"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--top-k") && err.contains("CPU"), "{err}");
    if let Err(e) = gen(&["--device", "cuda"]) {
        let err = e.to_string();
        assert!(
            err.contains("--device cuda") && err.contains("no CUDA device"),
            "{err}"
        );
    }
    let missing = dir.path().join("none.safetensors");
    let err = run_generate(
        &GenerateArgs::try_parse_from(["generate", "--checkpoint", path_str(&missing)]).unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("none.safetensors"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    // Unknown preset: clap lists the valid ones.
    let err = TrainArgs::try_parse_from(["train", "--preset", "d2l-bert"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("d2l-bert") && err.contains("d2l-concise-gru"),
        "{err}"
    );
    let msg = |extra: &[&str]| run_train(&args(&corpus, extra)).unwrap_err().to_string();
    let err = run_train(&args(&dir.path().join("missing.zip"), &[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.zip"), "{err}");
    let err = msg(&["--prefix", "分开", "--prefix", "晴天"]);
    assert!(err.contains("晴天") && err.contains('晴'), "{err}");
    // Without a GPU, a clear error; with one, `--device cuda` trains.
    if let Err(e) = run_train(&args(&corpus, &["--device", "cuda"])) {
        let err = e.to_string();
        assert!(
            err.contains("cuda") && err.contains("no CUDA device"),
            "{err}"
        );
    }
    // f16 training is the GPU's; on the CPU a clear error, on the GPU it trains.
    let err = msg(&["--precision", "f16"]);
    assert!(
        err.contains("--precision f16") && err.contains("--device cuda"),
        "{err}"
    );
    if let Err(e) = run_train(&args(
        &corpus,
        &["--device", "cuda", "--precision", "f16", "--epochs", "2"],
    )) {
        let err = e.to_string();
        assert!(err.contains("no CUDA device"), "{err}");
    }
    let err = msg(&["--activation", "relu"]);
    assert!(
        err.contains("--activation") && err.contains("gru-reset-before"),
        "{err}"
    );
    let err = msg(&["--plot", "out.jpg"]);
    assert!(err.contains(".png or .svg"), "{err}");
    let err = msg(&["--hidden", "0"]);
    assert!(err.contains("--hidden"), "{err}");
    let err = msg(&["--lr", "nan"]);
    assert!(err.contains("--lr"), "{err}");
    let err = msg(&["--threads", "0"]);
    assert!(err.contains("--threads"), "{err}");
    let err = msg(&["--steps", "2000"]);
    assert!(err.contains("too short"), "{err}");

    // Checkpoints that do not fit.
    let ckpt = dir.path().join("gru.safetensors");
    run_train(&args(
        &corpus,
        &["--epochs", "2", "--checkpoint", path_str(&ckpt)],
    ))
    .unwrap();
    let err = msg(&["--resume", path_str(&ckpt), "--preset", "d2l-lstm"]);
    assert!(
        err.contains("cell") && err.contains("lstm") && err.contains("gru-reset-before"),
        "{err}"
    );
    let err = msg(&["--resume", path_str(&ckpt), "--hidden", "32"]);
    assert!(
        err.contains("hidden size") && err.contains("32") && err.contains("16"),
        "{err}"
    );
    let err = msg(&["--resume", path_str(&ckpt), "--epochs", "1"]);
    assert!(err.contains("epochs"), "{err}");
    let other = dir.path().join("other.txt");
    std::fs::write(
        &other,
        "晴天 晴天 故事的小黄花 从出生那年就飘着 ".repeat(40),
    )
    .unwrap();
    let err = run_train(&args(
        &other,
        &["--resume", path_str(&ckpt), "--prefix", "晴天"],
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("vocabulary"), "{err}");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint at all").unwrap();
    let err = msg(&["--resume", path_str(&junk)]);
    assert!(
        err.contains("junk.safetensors") && err.contains("safetensors"),
        "{err}"
    );
}

#[test]
fn help_explains_every_flag() {
    TrainArgs::command().debug_assert();
    GenerateArgs::command().debug_assert();
    let help = TrainArgs::command().render_long_help().to_string();
    for flag in [
        "--preset",
        "--corpus",
        "--epochs",
        "--device",
        "--precision",
        "--threads",
        "--seed",
        "--metrics",
        "--plot",
        "--checkpoint",
        "--resume",
        "--cell",
        "--activation",
        "--init",
        "--sampling",
        "--state",
        "--optimizer",
        "--lr",
        "--clip",
        "--no-clip",
        "--clip-theta",
        "--hidden",
        "--batch-size",
        "--steps",
        "--corpus-chars",
        "--sample-every",
        "--sample-len",
        "--prefix",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    for cmd in [TrainArgs::command(), GenerateArgs::command()] {
        for arg in cmd.get_arguments() {
            assert!(
                arg.get_help().is_some() || arg.get_long_help().is_some(),
                "{:?} has no help",
                arg.get_id()
            );
        }
    }
}
