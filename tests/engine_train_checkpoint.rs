//! Checkpoints across devices: a run checkpointed on the CPU resumes on the
//! GPU (and one checkpointed on the GPU resumes on the CPU) and continues as
//! the CPU does, within f32 tolerance; a GPU checkpoint generates on the CPU
//! with recur-core. Without a GPU the test prints `skipped: no CUDA device`.

// Skips go straight to stderr: the test harness captures println!, and a
// skipped GPU test must say so in CI's log.
use std::io::Write as _;

mod engine_support;

use std::path::{Path, PathBuf};

use clap::Parser;
use recur::train::checkpoint::Checkpoint;
use recur::train::cli::{run_train, TrainArgs};
use recur::train::cpu::generate_cpu;
use recur::train::generate::{run_generate, GenerateArgs};
use recur::train::rng::TrainRng;
use recur::train::Decode;

const PHRASES: [&str; 6] = [
    "分开 ",
    "不分开 ",
    "想要有直升机 ",
    "想要和你飞到宇宙去 ",
    "融化在宇宙里 ",
    "我不要再想 ",
];

fn write_corpus(dir: &Path) -> PathBuf {
    let mut text = String::new();
    let mut x: u32 = 5;
    while text.chars().count() < 1500 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        text.push_str(PHRASES[(x >> 16) as usize % PHRASES.len()]);
    }
    let path = dir.join("lyrics.txt");
    std::fs::write(&path, text).unwrap();
    path
}

fn train(corpus: &Path, extra: &[&str]) {
    let mut v: Vec<String> = [
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--hidden",
        "24",
        "--batch-size",
        "4",
        "--steps",
        "6",
        "--sample-len",
        "10",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    run_train(&TrainArgs::try_parse_from(v).unwrap()).unwrap();
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 + 1e-3 * w.abs(),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn checkpoints_move_between_cpu_and_gpu() {
    if engine_support::gpu().is_none() {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    for preset in ["d2l-concise-lstm", "d2l-gru"] {
        let base = ["--preset", preset];
        // 2 epochs on each device, then 2 more on the other and on the same.
        for (first, second) in [("cpu", "cuda"), ("cuda", "cpu")] {
            let start = p(&format!("{preset}-{first}.safetensors"));
            train(
                &corpus,
                &[
                    &base[..],
                    &["--device", first, "--epochs", "2", "--checkpoint", &start],
                ]
                .concat(),
            );
            let mut ends = Vec::new();
            for device in [first, second] {
                let end = p(&format!("{preset}-{first}-then-{device}.safetensors"));
                train(
                    &corpus,
                    &[
                        "--resume",
                        &start,
                        "--device",
                        device,
                        "--epochs",
                        "4",
                        "--checkpoint",
                        &end,
                    ],
                );
                ends.push(Checkpoint::load(Path::new(&end)).unwrap());
            }
            assert_eq!(ends[0].epoch, 4);
            assert_eq!(ends[1].epoch, 4);
            close(
                &format!("{preset} {first}→{second}: parameters"),
                &ends[1].params,
                &ends[0].params,
            );
            // The GPU-trained parameters generate on the CPU.
            let ck = if second == "cuda" { &ends[1] } else { &ends[0] };
            let text = generate_cpu(
                &ck.params,
                &ck.layout(),
                &[0],
                20,
                Decode::Greedy,
                &mut TrainRng::from_seed(1),
            )
            .unwrap();
            assert_eq!(text.len(), 21);
            println!(
                "{preset} {first}→{second}: parameters agree; generated {} ids",
                text.len()
            );
        }
    }
}

/// `--device cuda` with a model beyond the GPU's memory: a clear error that
/// names the buffer and the sizes, and nothing is lost: the checkpoint and
/// the metrics of an earlier run at the same paths stay as they were.
#[test]
fn out_of_device_memory_is_a_clear_error_and_loses_nothing() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let (_, total) = gpu.memory().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let ckpt = dir.path().join("run.safetensors");
    let metrics = dir.path().join("run.jsonl");
    let (ckpt_s, metrics_s) = (ckpt.to_str().unwrap(), metrics.to_str().unwrap());
    // The same paths for both runs: the second must leave the first's files.
    let outputs = [
        "--epochs",
        "1",
        "--checkpoint",
        ckpt_s,
        "--metrics",
        metrics_s,
    ];
    train(&corpus, &outputs);
    let files = || {
        (
            std::fs::read(&ckpt).unwrap(),
            std::fs::read(&metrics).unwrap(),
        )
    };
    let before = files();
    let hidden = engine_support::gru_hidden_beyond(total).to_string();
    let corpus_s = corpus.to_str().unwrap();
    let flags = [
        "train", "--corpus", corpus_s, "--device", "cuda", "--hidden", &hidden, "--quiet",
    ];
    let args = TrainArgs::try_parse_from(flags.iter().chain(&outputs)).unwrap();
    let err = run_train(&args).unwrap_err().to_string();
    assert!(
        err.contains("--device cuda: out of device memory for the parameters: ")
            && err.contains(" free of ")
            && err.contains("a smaller --hidden"),
        "{err}"
    );
    assert!(before == files(), "the earlier run's files changed");
}

/// `generate --device cuda` (recur-engine's loop on the device) continues a
/// prefix as the CPU does: the same text greedily in f32, the prefix and
/// the length in f16, a text of its own but repeatable when sampling; the
/// prefix alone for `--len 0`.
#[test]
fn generation_on_the_gpu_continues_as_on_the_cpu() {
    if engine_support::gpu().is_none() {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let ckpt = dir.path().join("g.safetensors");
    let ckpt_s = ckpt.to_str().unwrap();
    train(
        &corpus,
        &[
            "--preset",
            "d2l-gru",
            "--epochs",
            "4",
            "--checkpoint",
            ckpt_s,
        ],
    );
    let gen = |extra: &[&str]| {
        let flags = [
            "generate",
            "--checkpoint",
            ckpt_s,
            "--prefix",
            "不分开",
            "--len",
            "30",
        ];
        run_generate(&GenerateArgs::try_parse_from(flags.iter().chain(extra)).unwrap()).unwrap()
    };
    let cpu = gen(&[]);
    assert_eq!(gen(&["--device", "cuda"]), cpu);
    let f16 = gen(&["--device", "cuda", "--precision", "f16"]);
    assert!(
        f16.starts_with("不分开") && f16.chars().count() == 33,
        "{f16}"
    );
    let sample = ["--device", "cuda", "--temperature", "1", "--seed", "4"];
    let sampled = gen(&sample);
    assert!(
        sampled.starts_with("不分开") && sampled.chars().count() == 33,
        "{sampled}"
    );
    assert_eq!(gen(&sample), sampled);
    assert_eq!(gen(&["--device", "cuda", "--len", "0"]), "不分开");
    println!("cpu:  {cpu}\ncuda: {sampled} (sampled)");
}
