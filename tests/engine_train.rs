//! GPU training (recur-engine's DeviceTrainer and the trainer's CUDA
//! backend) against recur-core: every gradient of a language model (cell +
//! output layer + softmax cross-entropy) for arbitrary small shapes and
//! every cell, the loss, the norm, the carried state, and 5-step training
//! trajectories (SGD and Adam, clipping active) against the CPU backend.
//! Without a GPU every test prints `skipped: no CUDA device` and passes,
//! except the one that checks the error the trainer gives then.

// Skips go straight to stderr: the test harness captures println!, and a
// skipped GPU test must say so in CI's log.
use std::io::Write as _;

mod engine_support;

use proptest::prelude::*;
use recur::core::cell::{self, Input, SeqDims};
use recur::core::output::{self, DenseDims};
use recur::core::{clip, CellKind, ModelLayout, Portable};
use recur::engine::{DeviceTrainer, TrainOptimizer};
use recur::train::backend::{Backend, BackendSpec};
use recur::train::config::OptimizerKind;
use recur::train::cpu::CpuBackend;
use recur::train::cuda::CudaBackend;

const CELLS: [CellKind; 5] = [
    CellKind::RnnTanh,
    CellKind::RnnRelu,
    CellKind::GruResetBefore,
    CellKind::GruResetAfter,
    CellKind::Lstm,
];

/// Loss, gradients (flat layout) and final state of one mini-batch on
/// recur-core, the way the CPU backend computes them.
struct CoreResult {
    loss: f32,
    grads: Vec<f32>,
    h_last: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn core_reference(
    layout: ModelLayout,
    batch: usize,
    steps: usize,
    params: &[f32],
    h0: &[f32],
    c0: &[f32],
    inputs: &[u32],
    targets: &[u32],
) -> CoreResult {
    let dims = SeqDims {
        cell: layout.cell_dims(),
        steps,
        batch,
    };
    let (h, v) = (layout.hidden, layout.vocab);
    let rows = steps * batch;
    let dense = DenseDims {
        rows,
        hidden: h,
        vocab: v,
    };
    let c_len = if layout.cell.has_cell_state() {
        batch * h
    } else {
        0
    };
    let mut hs = vec![f32::NAN; rows * h];
    let mut c_last = vec![f32::NAN; c_len];
    let mut cache = vec![f32::NAN; cell::cache_len(&dims)];
    let mut workspace = vec![f32::NAN; cell::workspace_len(&dims)];
    let mut logits = vec![f32::NAN; rows * v];
    let (cp, dw, db) = layout.split(params).unwrap();
    cell::sequence_forward(
        &mut hs,
        &mut c_last,
        Input::Tokens(inputs),
        h0,
        &c0[..c_len],
        cp,
        &mut cache,
        &mut workspace,
        &dims,
        &Portable,
    )
    .unwrap();
    output::dense_forward(&mut logits, &hs, dw, db, &dense, &Portable).unwrap();
    let loss = output::softmax_xent_forward_in_place(&mut logits, targets, &dense).unwrap();
    output::softmax_xent_backward_in_place(&mut logits, targets, &dense).unwrap();
    let mut grads = vec![0.0f32; layout.len()];
    let mut dhs = vec![0.0f32; rows * h];
    let mut dh0 = vec![0.0f32; batch * h];
    let mut dc0 = vec![0.0f32; c_len];
    {
        let (mut cg, ddw, ddb) = layout.split_mut(&mut grads).unwrap();
        output::dense_backward(ddw, ddb, &mut dhs, &logits, &hs, dw, &dense, &Portable).unwrap();
        cell::sequence_backward(
            &mut cg,
            None,
            &mut dh0,
            &mut dc0,
            &dhs,
            Input::Tokens(inputs),
            h0,
            &c0[..c_len],
            cp,
            &hs,
            &cache,
            &mut workspace,
            &dims,
            &Portable,
        )
        .unwrap();
    }
    CoreResult {
        loss,
        grads,
        h_last: hs[hs.len() - batch * h..].to_vec(),
    }
}

/// `|got − want| ≤ abs + |want|·rel` everywhere; returns the worst excess
/// ratio for the log. Panics naming the first element outside.
fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = abs + w.abs() * rel;
        let err = (g - w).abs();
        assert!(
            err <= tol,
            "{what}[{i}]: engine {g}, recur-core {w} (|diff| {err} > {tol})"
        );
        worst = worst.max(err / tol);
    }
    worst
}

fn layout_of(cell: CellKind, vocab: usize, hidden: usize) -> ModelLayout {
    ModelLayout {
        cell,
        vocab,
        hidden,
    }
}

fn check_gradients(
    cell: CellKind,
    batch: usize,
    hidden: usize,
    vocab: usize,
    steps: usize,
    seed: u64,
) {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let layout = layout_of(cell, vocab, hidden);
    let params = engine_support::random_params(&layout, seed);
    let bh = batch * hidden;
    let h0 = engine_support::random_vec(bh, 0.5, seed + 1);
    let c0 = engine_support::random_vec(bh, 0.5, seed + 2);
    let inputs = engine_support::random_tokens(steps * batch, vocab, seed + 3);
    let targets = engine_support::random_tokens(steps * batch, vocab, seed + 4);
    let want = core_reference(layout, batch, steps, &params, &h0, &c0, &inputs, &targets);

    let mut t = DeviceTrainer::new(&gpu, layout, batch, steps, TrainOptimizer::Sgd).unwrap();
    t.upload_params(&params).unwrap();
    t.upload_state(&h0, &c0).unwrap();
    t.forward(&inputs, &targets).unwrap();
    let loss = t.loss().unwrap();
    t.backward(false).unwrap();
    let grads = t.download_grads().unwrap();
    let (h_last, _) = t.download_state().unwrap();
    assert_close("loss", &[loss], &[want.loss], 1e-5, 1e-5);
    assert_close("h_last", &h_last, &want.h_last, 1e-5, 1e-4);
    let worst = assert_close("gradients", &grads, &want.grads, 2e-6, 2e-3);
    let norm = t.clip(None).unwrap();
    assert_close(
        "norm",
        &[norm],
        &[clip::global_norm(&want.grads)],
        1e-6,
        1e-4,
    );
    println!(
        "{cell:?} B={batch} H={hidden} V={vocab} T={steps}: loss {loss} (core {}), worst gradient error {worst:.3} of its tolerance",
        want.loss
    );
}

#[test]
fn gradients_at_the_d2l_shape() {
    for cell in CELLS {
        check_gradients(cell, 32, 256, 1027, 35, 7);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn gradients_match_recur_core(
        cell in 0usize..5,
        batch in 1usize..=64,
        hidden in 1usize..=300,
        vocab in 1usize..=1100,
        steps in 1usize..=40,
        seed in 0u64..1000,
    ) {
        check_gradients(CELLS[cell], batch, hidden, vocab, steps, seed);
    }
}

/// Five mini-batches (forward, backward, clip, step) on the CPU backend and
/// on the CUDA backend from the same parameters: losses, norms and the
/// parameters after every step agree.
fn check_trajectory(cell: CellKind, optimizer: OptimizerKind, lr: f64, theta: f32, seed: u64) {
    if engine_support::gpu().is_none() {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    }
    let (batch, steps, hidden, vocab) = (8, 12, 40, 60);
    let layout = layout_of(cell, vocab, hidden);
    let spec = BackendSpec {
        layout,
        batch,
        steps,
        optimizer,
        lr,
        freeze_bias_hh: cell == CellKind::GruResetBefore,
    };
    let params = engine_support::random_params(&layout, seed);
    let mut cpu = CpuBackend::new(spec, Portable).unwrap();
    let mut gpu = CudaBackend::new(spec).unwrap();
    cpu.upload_params(&params).unwrap();
    gpu.upload_params(&params).unwrap();
    let mut p_cpu = vec![0.0f32; layout.len()];
    let mut p_gpu = vec![0.0f32; layout.len()];
    let mut clipped = false;
    for i in 0..5u64 {
        let inputs = engine_support::random_tokens(steps * batch, vocab, seed + 10 * i);
        let targets = engine_support::random_tokens(steps * batch, vocab, seed + 10 * i + 1);
        let l_cpu = cpu.forward_loss(&inputs, &targets).unwrap();
        let l_gpu = gpu.forward_loss(&inputs, &targets).unwrap();
        cpu.backward().unwrap();
        gpu.backward().unwrap();
        let n_cpu = cpu.clip(Some(theta)).unwrap();
        let n_gpu = gpu.clip(Some(theta)).unwrap();
        clipped |= n_cpu > theta;
        cpu.step().unwrap();
        gpu.step().unwrap();
        assert_close("loss", &[l_gpu], &[l_cpu], 1e-5, 1e-4);
        assert_close("norm", &[n_gpu], &[n_cpu], 1e-6, 1e-3);
        cpu.download_params(&mut p_cpu).unwrap();
        gpu.download_params(&mut p_gpu).unwrap();
        assert_close("parameters", &p_gpu, &p_cpu, 2e-5, 1e-4);
        let s_cpu = cpu.download_state().unwrap();
        let s_gpu = gpu.download_state().unwrap();
        assert_close("carried h", &s_gpu.h, &s_cpu.h, 1e-5, 1e-3);
        assert_close("carried c", &s_gpu.c, &s_cpu.c, 1e-5, 1e-3);
    }
    assert!(
        clipped,
        "theta {theta} never clipped: the test would not cover clipping"
    );
    let o_cpu = cpu.download_optimizer().unwrap();
    let o_gpu = gpu.download_optimizer().unwrap();
    assert_eq!(o_cpu.step, o_gpu.step);
    assert_close("exp_avg", &o_gpu.exp_avg, &o_cpu.exp_avg, 1e-6, 1e-3);
    assert_close(
        "exp_avg_sq",
        &o_gpu.exp_avg_sq,
        &o_cpu.exp_avg_sq,
        1e-9,
        1e-3,
    );
    println!("{cell:?} {optimizer:?}: 5 steps agree");
}

#[test]
fn trajectories_sgd_and_adam_with_clipping() {
    for (k, cell) in CELLS.into_iter().enumerate() {
        check_trajectory(cell, OptimizerKind::Sgd, 1.0, 0.05, 100 + k as u64);
        check_trajectory(cell, OptimizerKind::Adam, 1e-3, 0.05, 200 + k as u64);
    }
}

#[test]
fn no_device_is_a_clear_error() {
    if engine_support::gpu().is_some() {
        println!("a GPU is present: nothing to check");
        return;
    }
    let spec = BackendSpec {
        layout: layout_of(CellKind::GruResetAfter, 10, 8),
        batch: 2,
        steps: 3,
        optimizer: OptimizerKind::Adam,
        lr: 1e-3,
        freeze_bias_hh: false,
    };
    let err = CudaBackend::new(spec)
        .err()
        .expect("no GPU, yet a backend")
        .to_string();
    assert!(err.contains("no CUDA device"), "{err}");
}

#[test]
fn bad_calls_are_errors() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let layout = layout_of(CellKind::Lstm, 10, 8);
    let mut t = DeviceTrainer::new(&gpu, layout, 2, 3, TrainOptimizer::Sgd).unwrap();
    assert!(t.backward(false).is_err(), "backward before forward");
    assert!(t.forward(&[0; 6], &[10; 6]).is_err(), "target out of range");
    assert!(t.forward(&[0; 5], &[0; 6]).is_err(), "short inputs");
    assert!(t.upload_params(&[0.0; 3]).is_err(), "short parameters");
    assert!(t.download_moments().is_err(), "SGD has no moments");
    assert!(t.clip(Some(0.0)).is_err(), "theta 0");
    assert!(DeviceTrainer::new(&gpu, layout, 0, 3, TrainOptimizer::Sgd).is_err());
}
