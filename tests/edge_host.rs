//! The edge example (edge/) run on the host: edge/host/build.sh builds the
//! `#![no_std]` static library with the deterministic default model (d2l's
//! GRU shape) and links it into the freestanding shim with no C library and
//! no allocator; its output must be, token for token, what recur-core's
//! stream computes here with the same weights, for f32 and f16 storage,
//! greedy and sampled.

use std::path::{Path, PathBuf};
use std::process::Command;

use recur::core::stream::{Stream, StreamModel};
use recur::core::{stream, Weight};

include!("../edge/default_model.rs");

/// Builds the example (`f32` or `f16`) and returns the executable.
fn build(variant: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("edge/host/build.sh"))
        .arg(variant)
        .env_remove("RECUR_EDGE_MODEL")
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "edge/host/build.sh {variant} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(path.lines().last().unwrap().trim())
}

/// d2l's predict with recur-core's stream, as the example does it.
fn expected<W: Weight>(
    params: &[W],
    prefix: &str,
    count: usize,
    temperature: f32,
    top_k: usize,
    seed: u64,
) -> String {
    let layout = DEFAULT_LAYOUT;
    let vocab = default_vocabulary();
    let id = |c: char| vocab.iter().position(|&v| v == c).unwrap() as u32;
    let mut state = vec![f32::NAN; stream::state_len(&layout)];
    let mut ws = vec![f32::NAN; stream::sample_workspace_len(&layout)];
    let mut s = Stream::new(
        StreamModel::new(layout, params).unwrap(),
        &mut state,
        &mut ws,
    )
    .unwrap();
    let chars: Vec<char> = prefix.chars().collect();
    let mut token = id(chars[0]);
    for &c in &chars[1..] {
        s.feed(token).unwrap();
        token = id(c);
    }
    let mut rng = recur::core::rng::SplitMix64(seed);
    let mut text: String = prefix.to_string();
    for _ in 0..count {
        token = s.feed_sample(token, temperature, top_k, &mut rng).unwrap();
        text.push(vocab[token as usize]);
    }
    text
}

fn run(demo: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(demo).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn the_no_std_example_generates_what_recur_core_computes() {
    let params32 = default_params();
    let params16: Vec<half::f16> = params32.iter().map(|&v| half::f16::from_f32(v)).collect();
    // (prefix, count, temperature in thousandths, top_k, seed)
    let cases: [(&str, usize, u32, usize, u64); 4] = [
        ("the ", 60, 0, 0, 0),
        ("hello", 80, 1000, 0, 7),
        ("a", 100, 800, 20, 42),
        ("乂中", 50, 1500, 5, 3),
    ];
    for variant in ["f32", "f16"] {
        let demo = build(variant);
        let (code, info) = run(&demo, &["-i"]);
        assert_eq!(code, 0);
        println!("{variant}: {}", info.replace('\n', "; "));
        let weight_bytes = DEFAULT_LAYOUT.len() * if variant == "f32" { 4 } else { 2 };
        assert!(
            info.contains(&format!("weight_bytes {weight_bytes}\n")),
            "{info}"
        );
        assert!(info.contains("model default"), "{info}");
        let mut texts = Vec::new();
        for (prefix, count, milli, top_k, seed) in cases {
            let args = [
                prefix.to_string(),
                count.to_string(),
                milli.to_string(),
                top_k.to_string(),
                seed.to_string(),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, got) = run(&demo, &args);
            assert_eq!(code, 0, "{variant} {args:?}: {got}");
            let t = milli as f32 / 1000.0;
            let want = if variant == "f32" {
                expected(&params32, prefix, count, t, top_k, seed)
            } else {
                expected(&params16, prefix, count, t, top_k, seed)
            };
            assert_eq!(got, format!("{want}\n"), "{variant} {args:?}");
            assert_eq!(want.chars().count(), prefix.chars().count() + count);
            texts.push(want);
        }
        // Different settings, different texts (the sampler is in use).
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), cases.len());
        // A character outside the vocabulary: error code 4, nothing printed
        // but the message.
        let (code, msg) = run(&demo, &["€", "5"]);
        assert_eq!(code, 1);
        assert!(msg.contains("code 4"), "{msg}");
    }
}
