//! Global-norm clipping on the device, whose factor the updates apply as
//! they read the gradients (`DeviceTrainer::clip`): every reader sees the
//! gradients clipped, updates from the unscaled gradients and from the
//! scaled ones agree bit for bit, a second clip measures the first one's
//! result, and a backward voids a clip of the gradients it replaces.
//! Without a GPU the tests print `skipped: no CUDA device`.

use std::io::Write as _;

use crate::{engine_support, trainer_at};

use engine_support::assert_close;
use recur::core::{CellKind, ModelLayout};
use recur::engine::{DeviceTrainer, Gpu, Precision, TrainOptimizer};

const BATCH: usize = 3;
const STEPS: usize = 5;
const LR: f32 = 0.5;

fn layout() -> ModelLayout {
    ModelLayout {
        cell: CellKind::GruResetAfter,
        hidden: 24,
        vocab: 19,
    }
}

/// A trainer at fixed random parameters after one forward and backward
/// (batch `seed`): the gradients are waiting.
fn trainer_with_grads(gpu: &Gpu, seed: u64) -> DeviceTrainer {
    let mut t = trainer_at(
        gpu,
        layout(),
        (STEPS, BATCH),
        TrainOptimizer::Sgd,
        Precision::F32,
        7,
    );
    backward(&mut t, seed);
    t
}

fn backward(t: &mut DeviceTrainer, seed: u64) {
    let v = layout().vocab;
    let inputs = engine_support::random_tokens(STEPS * BATCH, v, seed);
    let targets = engine_support::random_tokens(STEPS * BATCH, v, seed + 1);
    t.forward(&inputs, &targets).unwrap();
    t.backward(false).unwrap();
}

/// The gradients of `trainer_with_grads(gpu, seed)`.
fn reference_first_grads(gpu: &Gpu, seed: u64) -> Vec<f32> {
    trainer_with_grads(gpu, seed).download_grads().unwrap()
}

fn norm_of(g: &[f32]) -> f32 {
    g.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt() as f32
}

/// The factor the device scales by, from the norm it reports.
fn factor(theta: f32, norm: f32) -> f32 {
    if norm > theta {
        theta / norm
    } else {
        1.0
    }
}

#[test]
fn every_reader_sees_the_clipped_gradients() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let mut t = trainer_with_grads(&gpu, 1);
    let g = t.download_grads().unwrap();
    let theta = 0.25 * norm_of(&g);
    t.clip(Some(theta)).unwrap();
    let norm = t.norm().unwrap();
    assert_close("norm", &[norm], &[norm_of(&g)], 0.0, 1e-6);
    let f = factor(theta, norm);
    assert!(f < 1.0, "theta {theta} must clip (norm {norm})");
    // Scaled in memory for the reader: g·f, as the f32 product.
    let clipped: Vec<f32> = g.iter().map(|&x| x * f).collect();
    let got = t.download_grads().unwrap();
    assert_eq!(got, clipped, "downloaded gradients after a clip");
    // Downloading again does not scale twice.
    assert_eq!(t.download_grads().unwrap(), clipped, "second download");
    // A second clip measures the clipped gradients: norm θ (rounding).
    t.clip(Some(theta)).unwrap();
    assert_close(
        "second clip's norm",
        &[t.norm().unwrap()],
        &[theta],
        0.0,
        1e-5,
    );
}

/// Two trainers at the same gradients `g`, clipped to θ = half their norm
/// and then updated `updates` times by SGD: `fused` with the factor applied
/// as its updates read the gradients, `scaled` with the gradients read
/// first (so scaled in memory: `clipped`).
struct ClipPair {
    fused: DeviceTrainer,
    scaled: DeviceTrainer,
    g: Vec<f32>,
    theta: f32,
    clipped: Vec<f32>,
}

fn clip_and_update(gpu: &Gpu, seed: u64, updates: usize) -> ClipPair {
    let mut fused = trainer_with_grads(gpu, seed);
    let g = fused.download_grads().unwrap();
    let theta = 0.5 * norm_of(&g);
    fused.clip(Some(theta)).unwrap();
    let mut scaled = trainer_with_grads(gpu, seed);
    scaled.clip(Some(theta)).unwrap();
    let clipped = scaled.download_grads().unwrap();
    for _ in 0..updates {
        fused.sgd_step(LR).unwrap();
        scaled.sgd_step(LR).unwrap();
    }
    // Two trainers with the same gradients (determinism.rs):
    // the factor applied as read or in memory makes the same updates.
    assert_eq!(
        fused.download_params().unwrap(),
        scaled.download_params().unwrap(),
        "parameters: factor in the update vs in memory"
    );
    // Both against the host's steps by the clipped gradients.
    let p0 = engine_support::random_params(&layout(), 7);
    let lr = LR * updates as f32;
    let want: Vec<f32> = p0.iter().zip(&clipped).map(|(p, g)| p - lr * g).collect();
    assert_close(
        "parameters",
        &fused.download_params().unwrap(),
        &want,
        1e-6,
        1e-5,
    );
    ClipPair {
        fused,
        scaled,
        g,
        theta,
        clipped,
    }
}

#[test]
fn the_update_applies_the_clip_as_the_scaled_gradients_would() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let pair = clip_and_update(&gpu, 2, 1);
    // After the update the gradients read as clipped too: g·f exactly.
    let g_fused = pair.fused.download_grads().unwrap();
    let f = factor(pair.theta, pair.fused.norm().unwrap());
    let g_times_f: Vec<f32> = pair.g.iter().map(|&x| x * f).collect();
    assert_eq!(g_fused, g_times_f, "gradients after the update");
    assert_eq!(g_fused, pair.clipped, "gradients of the two trainers");
    assert_eq!(
        pair.fused.norm().unwrap(),
        pair.scaled.norm().unwrap(),
        "norms of the two trainers"
    );
}

#[test]
fn a_second_update_applies_the_clip_again() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    // Two updates on one clip, no reader between: both step by g·f.
    clip_and_update(&gpu, 6, 2);
}

#[test]
fn a_backward_voids_a_clip_no_update_took() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    // The next batch's gradients, never clipped, on a trainer that saw the
    // same first batch (the carried state is the same).
    let mut reference = trainer_with_grads(&gpu, 3);
    backward(&mut reference, 4);
    let g_next = reference.download_grads().unwrap();
    let p0 = engine_support::random_params(&layout(), 7);
    let want: Vec<f32> = p0.iter().zip(&g_next).map(|(p, g)| p - LR * g).collect();
    // A clip (factor 0.1) of the first batch's gradients, then the next
    // batch: an update takes the new gradients whole, and so does a reader.
    let theta = 0.1 * norm_of(&reference_first_grads(&gpu, 3));
    let clipped_then_next = || {
        let mut t = trainer_with_grads(&gpu, 3);
        t.clip(Some(theta)).unwrap();
        backward(&mut t, 4);
        t
    };
    let mut t = clipped_then_next();
    t.sgd_step(LR).unwrap();
    let p = t.download_params().unwrap();
    assert_close("parameters", &p, &want, 1e-7, 1e-6);
    let g = clipped_then_next().download_grads().unwrap();
    assert_close("gradients", &g, &g_next, 1e-7, 1e-6);
    // And no clip at all: the norm without θ leaves the gradients as they are.
    let mut u = trainer_with_grads(&gpu, 5);
    let g5 = u.download_grads().unwrap();
    u.clip(None).unwrap();
    assert_eq!(u.download_grads().unwrap(), g5, "clip(None) gradients");
}
