//! The engine's output layer and softmax cross-entropy against recur-core,
//! f32 and f16, on random language models. Each stage is compared on the
//! same inputs as recur-core gets (the engine's own h for the logits, its
//! own logits for the loss), with rounding-error bounds; the recurrent part
//! is covered by engine_forward.rs. Outputs are NaN-poisoned first.

// Skips go straight to stderr: the test harness captures println!, and a
// skipped GPU test must say so in CI's log.
use std::io::Write as _;

mod engine_support;

use engine_support::{random_params, random_tokens};
use proptest::prelude::*;
use recur::core::output::{dense_forward, softmax_xent_forward, DenseDims};
use recur::core::{CellKind, ModelLayout, Portable};
use recur::engine::half::round_f16;
use recur::engine::{DeviceModel, InputKind, PlanOptions, Precision, SeqBuffers};

const U32: f32 = 1.0 / (1u32 << 24) as f32; // unit roundoff of f32

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, max_shrink_iters: 20, ..ProptestConfig::default() })]

    #[test]
    fn logits_and_loss_match_core(
        cell in prop::sample::select(CellKind::ALL.to_vec()),
        batch in 1usize..=64,
        hidden in 1usize..=300,
        vocab in 2usize..=1100,
        steps in 1usize..=40,
        f16 in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let gpu = match engine_support::gpu() { Some(g) => g, None => { let _ = writeln!(std::io::stderr(), "skipped: no CUDA device"); return Ok(()); } };
        let precision = if f16 { Precision::F16 } else { Precision::F32 };
        let layout = ModelLayout { cell, vocab, hidden };
        let params = random_params(&layout, seed);
        let model = DeviceModel::upload(&gpu, layout, &params, precision).unwrap();
        let n = steps * batch;
        let mut bufs = SeqBuffers::new(&model, steps, batch, InputKind::Tokens).unwrap();
        bufs.set_tokens(&random_tokens(n, vocab, seed + 1)).unwrap();
        let targets = random_tokens(n, vocab, seed + 2);
        bufs.set_targets(&targets).unwrap();
        bufs.poison().unwrap();
        model.forward(&mut bufs, PlanOptions::default()).unwrap();
        model.output_loss(&mut bufs).unwrap();
        let hs = bufs.hs().unwrap();
        let logits = bufs.logits().unwrap();
        let loss = bufs.loss().unwrap();

        // The weights as the engine uses them (f16 values exactly, in f16 mode).
        let t = layout.tensors();
        let store = |v: f32| if f16 { round_f16(v) } else { v };
        let w: Vec<f32> = params[t[4].range()].iter().map(|&v| store(v)).collect();
        let b: Vec<f32> = params[t[5].range()].iter().map(|&v| store(v)).collect();
        let dims = DenseDims { rows: n, hidden, vocab };
        let mut want = vec![f32::NAN; n * vocab];
        dense_forward(&mut want, &hs, &w, &b, &dims, &Portable).unwrap();
        // A sum of H products plus a bias in f32 is within (H+2)·u·Σ|terms| of
        // exact with round-to-nearest (recur-core) and 2·(H+2)·u·Σ|terms| with
        // the tensor cores' truncating accumulation (f16 mode); f16·f16
        // products are exact in f32. So the two differ by at most 4·(H+2)·u·Σ|terms|.
        for r in 0..n {
            for v in 0..vocab {
                let mag: f32 = (0..hidden).map(|k| (w[v * hidden + k] * hs[r * hidden + k]).abs()).sum::<f32>() + b[v].abs();
                let bound = 4.0 * (hidden as f32 + 2.0) * U32 * mag + 1e-30;
                let (g, e) = (logits[r * vocab + v], want[r * vocab + v]);
                prop_assert!((g - e).abs() <= bound, "logit ({r},{v}): got {g}, want {e}, bound {bound:e}");
            }
        }
        // The loss of the engine's logits: log-sum-exp over V terms (relative
        // error ≤ (V+4)·u in the sum, so ≤ (V+4)·u absolute after the log)
        // and the mean of N rows.
        let mut probs = vec![f32::NAN; n * vocab];
        let want_loss = softmax_xent_forward(&mut probs, &logits, &targets, &dims).unwrap();
        let bound = 2.0 * (vocab as f32 + 4.0) * U32 * (1.0 + want_loss.abs()) + 4.0 * U32 * want_loss.abs();
        prop_assert!((loss - want_loss).abs() <= bound, "loss: got {loss}, want {want_loss}, bound {bound:e}");
        println!("ok {precision:?} {cell:?} B={batch} H={hidden} V={vocab} T={steps}: loss {loss} (recur-core {want_loss})");
    }
}

/// NaN in the hidden states reaches the loss as NaN (divergence is data, not an error).
#[test]
fn nan_weights_give_nan_loss() {
    let gpu = gpu_or_skip!();
    let layout = ModelLayout {
        cell: CellKind::RnnTanh,
        vocab: 7,
        hidden: 5,
    };
    let mut params = random_params(&layout, 3);
    params[layout.tensors()[4].offset] = f32::NAN;
    let model = DeviceModel::upload(&gpu, layout, &params, Precision::F32).unwrap();
    let mut bufs = SeqBuffers::new(&model, 2, 2, InputKind::Tokens).unwrap();
    bufs.set_tokens(&[1, 2, 3, 4]).unwrap();
    bufs.set_targets(&[0, 1, 2, 3]).unwrap();
    model.forward(&mut bufs, PlanOptions::default()).unwrap();
    model.output_loss(&mut bufs).unwrap();
    assert!(bufs.loss().unwrap().is_nan());
    let e = bufs.set_targets(&[0, 1, 2, 7]).unwrap_err();
    assert!(e.to_string().contains("targets"), "{e}");
}
