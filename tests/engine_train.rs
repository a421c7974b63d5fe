//! GPU training (recur-engine's DeviceTrainer) against recur-core: every
//! gradient of a language model (cell + output layer + softmax
//! cross-entropy) for arbitrary small shapes and every cell, the loss, the
//! norm, the carried state, 5-step training trajectories (SGD and Adam,
//! clipping active) against recur-core's clip / sgd / adam, the statistics
//! kept on the device against the per-batch values, and a non-finite batch
//! skipping the updates on the device until the statistics are taken.
//! The f16 mode (f16 weight copies and saved activations, f32 masters and
//! accumulation) against recur-core at the same f16-rounded weights:
//! gradients, loss, state, a 5-step Adam trajectory with clipping, and the
//! first loss against the f32 engine's. The product kernel alone against
//! an f64 reference at f32 accuracy.
//! Without a GPU every test prints `skipped: no CUDA device` and passes,
//! except the one that checks the error the trainer's CUDA backend gives
//! then.

// Skips go straight to stderr: the test harness captures println!, and a
// skipped GPU test must say so in CI's log.
use std::io::Write as _;

mod engine_support;

use engine_support::assert_close;
use engine_support::loops::{
    assert_loops, cluster_hidden, set_loops, Loops, CLUSTER_LOOPS, F16_LOOPS, LOOPS,
};
use proptest::prelude::*;
use recur::core::cell::{self, Input, SeqDims};
use recur::core::optim::{self, AdamConfig};
use recur::core::output::{self, DenseDims};
use recur::core::{clip, CellKind, ModelLayout, Portable};
use recur::engine::half::round_f16;
use recur::engine::{
    has_reduce_scatter_backward, DeviceTrainer, Precision, ProductOperands, TimeLoop,
    TrainOptimizer, TrainStats, STEP_PHASES,
};
use recur::train::backend::BackendSpec;
use recur::train::config::OptimizerKind;
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
    /// The hidden state after every step, (T, B, H).
    hs: Vec<f32>,
    h_last: Vec<f32>,
    /// (B, H), LSTM only (else empty).
    c_last: Vec<f32>,
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
    backward_states: Option<&[f32]>,
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
            backward_states.unwrap_or(&hs),
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
        hs,
        c_last,
    }
}

fn layout_of(cell: CellKind, vocab: usize, hidden: usize) -> ModelLayout {
    ModelLayout {
        cell,
        vocab,
        hidden,
    }
}

/// `loops`: the form of the trainer's time loops (persistent: where they
/// fit, else per step).
fn check_gradients(
    cell: CellKind,
    batch: usize,
    hidden: usize,
    vocab: usize,
    steps: usize,
    seed: u64,
    loops: Loops,
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
    let mut t = DeviceTrainer::new(&gpu, layout, batch, steps, TrainOptimizer::Sgd).unwrap();
    if !set_loops(&mut t, loops) {
        return;
    }
    t.upload_params(&params).unwrap();
    t.upload_state(&h0, &c0).unwrap();
    t.forward(&inputs, &targets).unwrap();
    let loss = t.loss().unwrap();
    t.backward(false).unwrap();
    assert_loops(&t, loops);
    let grads = t.download_grads().unwrap();
    let (h_last, c_last) = t.download_state().unwrap();
    // The cell backward's reference derives from the engine's hidden states
    // (as engine_cell_train's check_f32, which says why: ReLU's derivative
    // at a pre-activation within f32 rounding of 0). They differ from
    // recur-core's own by rounding only, which the check of hs bounds.
    let hs = t.download_hidden_states().unwrap();
    let want = core_reference(
        layout,
        batch,
        steps,
        &params,
        &h0,
        &c0,
        &inputs,
        &targets,
        Some(&hs),
    );
    assert_close("loss", &[loss], &[want.loss], 1e-5, 1e-5);
    assert_close("hs", &hs, &want.hs, 1e-5, 1e-4);
    assert_close("h_last", &h_last, &want.h_last, 1e-5, 1e-4);
    assert_close("c_last", &c_last, &want.c_last, 1e-5, 1e-4);
    let worst = assert_close("gradients", &grads, &want.grads, 2e-6, 2e-3);
    t.clip(None).unwrap();
    let norm = t.norm().unwrap();
    assert_close(
        "norm",
        &[norm],
        &[clip::global_norm(&want.grads)],
        1e-6,
        1e-4,
    );
    println!(
        "{cell:?} B={batch} H={hidden} V={vocab} T={steps} ({loops:?} loops): loss {loss} (core {}), worst gradient error {worst:.3} of its tolerance",
        want.loss
    );
}

#[test]
fn gradients_at_the_d2l_shape() {
    for cell in CELLS {
        for loops in LOOPS {
            check_gradients(cell, 32, 256, 1027, 35, 7, loops);
        }
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
        check_gradients(CELLS[cell], batch, hidden, vocab, steps, seed, LOOPS[seed as usize % LOOPS.len()]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    /// The cluster time loops at arbitrary shapes (units per CTA, rows per
    /// cluster, several product passes), f32 and f16.
    #[test]
    fn cluster_gradients_match_recur_core(
        cell in 0usize..5,
        batch in 1usize..=64,
        hidden in cluster_hidden(),
        vocab in 1usize..=1100,
        steps in 1usize..=40,
        seed in 0u64..1000,
    ) {
        // One of the cluster forms (the register forward where it fits, the
        // shared-memory kernels, the reduce-scatter backward).
        let loops = CLUSTER_LOOPS[seed as usize % CLUSTER_LOOPS.len()];
        check_gradients(CELLS[cell], batch, hidden, vocab, steps, seed, loops);
        check_gradients_f16(CELLS[cell], batch, hidden, vocab, steps, seed, loops);
    }
}

/// The trainer's product kernels (3xTF32 on tensor cores; fewer products
/// where an operand is f16, exact in TF32) against an f64 reference of the
/// operands they read (f16 ones rounded) at f32 accuracy, every layout,
/// split-K included (k up to 1,200 over at most 15 tiles), each in both
/// forms (tr_gemm and its ring form, bit for bit alike):
/// |C − C₆₄| ≤ ε₃₂·(4√k + 16)·Σₖ|a·b|, NaN-poisoned C. One-pass TF32
/// (11-bit operands, errors near 2⁻¹¹·Σ|a·b|/√k) fails this bound at the k
/// of a few hundred most cases draw, which the gradient checks (relative
/// 2·10⁻³) would not notice.
fn check_product(
    operands: ProductOperands,
    m: usize,
    n: usize,
    k: usize,
    a_t: bool,
    b_t: bool,
    seed: u64,
) {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let layout = ModelLayout {
        cell: CellKind::GruResetAfter,
        hidden: 256,
        vocab: 1027,
    };
    let mut t = DeviceTrainer::new(&gpu, layout, 32, 35, TrainOptimizer::Sgd).unwrap();
    let (a16, b16) = operands.f16();
    let stored = |v: Vec<f32>, f16: bool| -> Vec<f32> {
        if f16 {
            v.into_iter().map(round_f16).collect()
        } else {
            v
        }
    };
    let a = stored(engine_support::random_vec(m * k, 1.0, seed), a16);
    let b = stored(engine_support::random_vec(k * n, 1.0, seed + 1), b16);
    // Both forms of the kernel: the ring form promises tr_gemm's C bit for
    // bit (same tiles, splits, parts and order of products).
    t.set_ring_products(false);
    let plain = t
        .product_for_tests(operands, &a, &b, m, n, k, a_t, b_t)
        .unwrap();
    t.set_ring_products(true);
    let got = t
        .product_for_tests(operands, &a, &b, m, n, k, a_t, b_t)
        .unwrap();
    for (i, (r, p)) in got.iter().zip(&plain).enumerate() {
        assert!(
            r.to_bits() == p.to_bits(),
            "{operands:?} {m}x{n}x{k} (a_t {a_t}, b_t {b_t}): ring C[{i}] {r} vs tr_gemm's {p}"
        );
    }
    let at = |i: usize, p: usize| f64::from(if a_t { a[p * m + i] } else { a[i * k + p] });
    let bt = |p: usize, j: usize| f64::from(if b_t { b[j * k + p] } else { b[p * n + j] });
    let scale = f64::from(f32::EPSILON) * (4.0 * (k as f64).sqrt() + 16.0);
    let mut worst = 0.0f64;
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let prod = at(i, p) * bt(p, j);
                exact += prod;
                mag += prod.abs();
            }
            let g = f64::from(got[i * n + j]);
            let tol = scale * mag + f64::from(f32::MIN_POSITIVE);
            let err = (g - exact).abs();
            assert!(
                err <= tol,
                "{operands:?} C[{i},{j}] of {m}x{n}x{k} (a_t {a_t}, b_t {b_t}): {g} vs {exact} (|diff| {err:e} > {tol:e})"
            );
            worst = worst.max(err / tol);
        }
    }
    eprintln!("product {operands:?} {m}x{n}x{k} a_t={a_t} b_t={b_t}: worst error {worst:.3} of its tolerance");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 36, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn product_kernel_has_f32_accuracy(
        m in 1usize..=300,
        n in 1usize..=300,
        k in 1usize..=1200,
        a_t in any::<bool>(),
        b_t in any::<bool>(),
        seed in 0u64..1000,
        operands in prop::sample::select(ProductOperands::ALL.to_vec()),
    ) {
        check_product(operands, m, n, k, a_t, b_t, seed);
    }
}

/// Five mini-batches (forward, backward, clip, step) on the DeviceTrainer
/// and on recur-core (its gradients, `clip_global_norm`, `sgd_step` /
/// `adam_step`) from the same parameters: losses, norms, the parameters and
/// the carried state after every step, Adam's moments at the end, and the
/// device's statistics against the per-batch loss and norm.
/// With `reduce_scatter`, the cluster backward takes the reduce-scatter
/// kernel (where the device has clusters: it must then have run), which
/// reads W_hh as each update leaves it instead of a transposed copy.
fn check_trajectory(
    cell: CellKind,
    optimizer: TrainOptimizer,
    lr: f64,
    theta: f32,
    seed: u64,
    reduce_scatter: bool,
) {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let (batch, steps, hidden, vocab) = (8, 12, 40, 60);
    let layout = layout_of(cell, vocab, hidden);
    let freeze_bias_hh = cell == CellKind::GruResetBefore;
    let mut p_cpu = engine_support::random_params(&layout, seed);
    let mut t = DeviceTrainer::new(&gpu, layout, batch, steps, optimizer).unwrap();
    t.set_reduce_scatter_backward(reduce_scatter);
    t.upload_params(&p_cpu).unwrap();
    let n = layout.len();
    let (mut m_cpu, mut v_cpu) = (vec![0.0f32; n], vec![0.0f32; n]);
    let bh = batch * hidden;
    let c_len = if cell.has_cell_state() { bh } else { 0 };
    let (mut h_cpu, mut c_cpu) = (vec![0.0f32; bh], vec![0.0f32; c_len]);
    let cfg = AdamConfig {
        lr,
        ..AdamConfig::default()
    };
    let b_hh = layout.tensors()[3];
    let mut clipped = false;
    let (mut loss_sum, mut norm_sum) = (0.0f64, 0.0f64);
    for i in 0..5u64 {
        let inputs = engine_support::random_tokens(steps * batch, vocab, seed + 10 * i);
        let targets = engine_support::random_tokens(steps * batch, vocab, seed + 10 * i + 1);
        let mut want = core_reference(
            layout, batch, steps, &p_cpu, &h_cpu, &c_cpu, &inputs, &targets, None,
        );
        if freeze_bias_hh {
            want.grads[b_hh.offset..b_hh.offset + b_hh.rows].fill(0.0);
        }
        let n_cpu = clip::clip_global_norm(&mut want.grads, theta).unwrap();
        clipped |= n_cpu > theta;
        match optimizer {
            TrainOptimizer::Sgd => optim::sgd_step(&mut p_cpu, &want.grads, lr as f32).unwrap(),
            TrainOptimizer::Adam => {
                optim::adam_step(&mut p_cpu, &mut m_cpu, &mut v_cpu, &want.grads, i + 1, &cfg)
                    .unwrap()
            }
        }
        h_cpu = want.h_last;
        c_cpu = want.c_last;

        t.forward(&inputs, &targets).unwrap();
        t.backward(freeze_bias_hh).unwrap();
        t.clip(Some(theta)).unwrap();
        match optimizer {
            TrainOptimizer::Sgd => t.sgd_step(lr as f32).unwrap(),
            TrainOptimizer::Adam => t.adam_step(i + 1, &cfg).unwrap(),
        }
        let (l_gpu, n_gpu) = (t.loss().unwrap(), t.norm().unwrap());
        loss_sum += l_gpu as f64 * (steps * batch) as f64;
        norm_sum += n_gpu as f64;
        assert_close("loss", &[l_gpu], &[want.loss], 1e-5, 1e-4);
        assert_close("norm", &[n_gpu], &[n_cpu], 1e-6, 1e-3);
        let p_gpu = t.download_params().unwrap();
        assert_close("parameters", &p_gpu, &p_cpu, 2e-5, 1e-4);
        let (h_gpu, c_gpu) = t.download_state().unwrap();
        assert_close("carried h", &h_gpu, &h_cpu, 1e-5, 1e-3);
        assert_close("carried c", &c_gpu, &c_cpu, 1e-5, 1e-3);
    }
    assert!(
        clipped,
        "theta {theta} never clipped: the test would not cover clipping"
    );
    if reduce_scatter && gpu.limits().cluster > 0 {
        assert_eq!(t.time_loops().1, TimeLoop::ClusterReduce);
    }
    if optimizer == TrainOptimizer::Adam {
        let (m_gpu, v_gpu) = t.download_moments().unwrap();
        assert_close("exp_avg", &m_gpu, &m_cpu, 1e-6, 1e-3);
        assert_close("exp_avg_sq", &v_gpu, &v_cpu, 1e-9, 1e-3);
    }
    let stats = t.take_stats().unwrap();
    assert_eq!(stats.batches, 5);
    assert_eq!(stats.first_non_finite, None);
    assert_close_f64("loss_sum", stats.loss_sum, loss_sum);
    assert_close_f64("norm_sum", stats.norm_sum, norm_sum);
    let empty = t.take_stats().unwrap();
    assert_eq!(
        empty,
        TrainStats {
            loss_sum: 0.0,
            norm_sum: 0.0,
            batches: 0,
            first_non_finite: None
        },
        "take resets the sums"
    );
    println!(
        "{cell:?} {optimizer:?}: 5 steps agree ({:?} loops)",
        t.time_loops()
    );
}

/// The device sums the same f32 values in the same order in f64.
fn assert_close_f64(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-12 * want.abs(),
        "{what}: device {got}, per-batch values {want}"
    );
}

#[test]
fn trajectories_sgd_and_adam_with_clipping() {
    for (k, cell) in CELLS.into_iter().enumerate() {
        check_trajectory(cell, TrainOptimizer::Sgd, 1.0, 0.05, 100 + k as u64, false);
        check_trajectory(
            cell,
            TrainOptimizer::Adam,
            1e-3,
            0.05,
            200 + k as u64,
            false,
        );
    }
    let reduce = CELLS
        .into_iter()
        .filter(|&c| has_reduce_scatter_backward(c));
    for (k, cell) in reduce.enumerate() {
        check_trajectory(cell, TrainOptimizer::Sgd, 1.0, 0.05, 300 + k as u64, true);
    }
}

/// Phase timing records every phase of each step up to its capacity and
/// nothing after, a phase not run (clip) as none, every other a time.
#[test]
fn phase_times_cover_every_phase() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let (batch, steps, hidden, vocab) = (4, 6, 24, 30);
    let layout = layout_of(CellKind::GruResetAfter, vocab, hidden);
    let mut t = DeviceTrainer::new(&gpu, layout, batch, steps, TrainOptimizer::Adam).unwrap();
    t.upload_params(&engine_support::random_params(&layout, 5))
        .unwrap();
    let cfg = AdamConfig::default();
    assert!(t.take_phase_times().unwrap().is_empty(), "off by default");
    t.time_phases(2).unwrap();
    for i in 0..3u64 {
        let x = engine_support::random_tokens(steps * batch, vocab, 40 + i);
        let y = engine_support::random_tokens(steps * batch, vocab, 50 + i);
        t.forward(&x, &y).unwrap();
        t.backward(false).unwrap();
        if i != 1 {
            t.clip(Some(1.0)).unwrap();
        }
        t.adam_step(i + 1, &cfg).unwrap();
    }
    let times = t.take_phase_times().unwrap();
    assert_eq!(times.len(), 2, "capacity 2: the third step is not recorded");
    for (i, s) in times.iter().enumerate() {
        for (p, v) in s.phases_us.iter().enumerate() {
            let clip = STEP_PHASES[p] == "clip";
            if clip && i == 1 {
                assert_eq!(*v, None, "step 1 has no clip");
            } else {
                let v = v.unwrap_or_else(|| panic!("step {i}: no {}", STEP_PHASES[p]));
                assert!(
                    v.is_finite() && v >= 0.0,
                    "step {i}: {} {v}",
                    STEP_PHASES[p]
                );
            }
        }
    }
    // Taken: the timer starts over.
    assert!(t.take_phase_times().unwrap().is_empty());
}

/// A batch whose loss is not finite (a NaN carried state) makes the device
/// skip this and every later update until the statistics are taken
/// (parameters and moments untouched), and the take reports it.
#[test]
fn non_finite_batch_skips_updates_until_taken() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let (batch, steps, hidden, vocab) = (4, 6, 24, 30);
    for (optimizer, cell) in [
        (TrainOptimizer::Adam, CellKind::GruResetAfter),
        (TrainOptimizer::Sgd, CellKind::Lstm),
    ] {
        let layout = layout_of(cell, vocab, hidden);
        let mut t = DeviceTrainer::new(&gpu, layout, batch, steps, optimizer).unwrap();
        t.upload_params(&engine_support::random_params(&layout, 5))
            .unwrap();
        let cfg = AdamConfig::default();
        let mut step = 0u64;
        let mut train = |t: &mut DeviceTrainer, i: u64| {
            let x = engine_support::random_tokens(steps * batch, vocab, 40 + i);
            let y = engine_support::random_tokens(steps * batch, vocab, 50 + i);
            t.forward(&x, &y).unwrap();
            t.backward(false).unwrap();
            t.clip(Some(1.0)).unwrap();
            step += 1;
            match optimizer {
                TrainOptimizer::Sgd => t.sgd_step(0.5).unwrap(),
                TrainOptimizer::Adam => t.adam_step(step, &cfg).unwrap(),
            }
        };
        let moments = |t: &DeviceTrainer| match optimizer {
            TrainOptimizer::Adam => Some(t.download_moments().unwrap()),
            TrainOptimizer::Sgd => None,
        };
        train(&mut t, 0);
        let p1 = t.download_params().unwrap();
        let m1 = moments(&t);
        // Batch 1 starts from a NaN state: its loss is NaN.
        let bh = batch * hidden;
        t.upload_state(&vec![f32::NAN; bh], &vec![f32::NAN; bh])
            .unwrap();
        train(&mut t, 1);
        assert!(t.loss().unwrap().is_nan(), "the NaN state gives a NaN loss");
        let same = |a: &[f32], b: &[f32]| {
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()) && a.len() == b.len()
        };
        assert!(same(&t.download_params().unwrap(), &p1), "update skipped");
        assert_eq!(moments(&t), m1, "moments untouched");
        // Batch 2 is finite again, but its update is skipped too.
        t.reset_state().unwrap();
        train(&mut t, 2);
        assert!(t.loss().unwrap().is_finite());
        assert!(same(&t.download_params().unwrap(), &p1), "still skipped");
        let stats = t.take_stats().unwrap();
        assert_eq!(stats.batches, 3);
        let (index, value) = stats.first_non_finite.expect("the NaN batch is reported");
        assert_eq!(index, 1);
        assert!(value.is_nan(), "{value}");
        // After the take the updates run again.
        train(&mut t, 3);
        let p4 = t.download_params().unwrap();
        assert!(!same(&p4, &p1), "update after the take");
        assert!(p4.iter().all(|v| v.is_finite()));
        let stats = t.take_stats().unwrap();
        assert_eq!((stats.batches, stats.first_non_finite), (1, None));
        println!("{cell:?} {optimizer:?}: the NaN batch skipped the updates until the take");
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
    assert!(t.sgd_step(f32::NAN).is_err(), "NaN learning rate");
    assert!(DeviceTrainer::new(&gpu, layout, 0, 3, TrainOptimizer::Sgd).is_err());
    let fresh = t.take_stats().unwrap();
    assert_eq!((fresh.batches, fresh.first_non_finite), (0, None));
}

/// A trainer too large for the GPU is refused with the buffer's name and
/// sizes, and the GPU stays usable: the buffers allocated before the one
/// that failed are freed, and a trainer that fits trains.
#[test]
fn out_of_memory_is_a_clear_error() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let (free, total) = gpu.memory().unwrap();
    assert!(0 < total && free <= total, "free {free} of {total}");
    let huge = layout_of(
        CellKind::GruResetAfter,
        1027,
        engine_support::gru_hidden_beyond(total),
    );
    let err = match DeviceTrainer::new(&gpu, huge, 2, 3, TrainOptimizer::Adam) {
        Ok(_) => panic!(
            "a trainer of {} parameters fit in {total} bytes",
            huge.len()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(err.is_out_of_memory(), "{msg}");
    assert!(
        msg.contains("out of device memory for the parameters: ") && msg.contains(" free of "),
        "{msg}"
    );
    let small = layout_of(CellKind::GruResetAfter, 10, 8);
    let mut t = DeviceTrainer::new(&gpu, small, 2, 3, TrainOptimizer::Sgd).unwrap();
    t.forward(&[1; 6], &[2; 6]).unwrap();
    t.backward(false).unwrap();
    t.sgd_step(0.1).unwrap();
    assert_eq!(t.take_stats().unwrap().batches, 1);
}

// ---- f16 mode ----------------------------------------------------------------
//
// The bounds below were fixed before the tests were first run on a GPU.
//
// u = 2^-11: a value stored in f16 (round to nearest) is off by at most u
// of itself. The engine reads W_ih, W_hh, W_d in f16 (the reference gets
// the same rounded weights, so they add no error) and stores h, the gates
// and the gate cache in f16; everything else is f32.
//
// Hidden states: each step's h is rounded once (u) and carries the earlier
// steps' errors through the recurrent Jacobian; with the tests' weights
// (uniform ±1/√H, spectral radius about 1/√3, gate derivatives ≤ 1) they
// add up to at most u / (1 − 1/√3) ≈ 2.4u, so |Δh| ≤ 4u·max|h|.
//
// Gradients: every element is a sum over the T·B rows of terms, each the
// product of an f32 gradient signal and at most 4 stored values (e.g.
// dz = d·(h − n)·z·(1 − z), dW_hh += dhh·h): 4u for the stored factors,
// 2.4u for the h they derive from, and the backward signal dh passes the
// same rounded factors every step under the same contraction, ≤ (4 +
// 2.4)u / (1 − 1/√3) ≈ 15u: about 21u per term, so eps = 32u (1.5×
// margin). A sum can cancel (an element near zero from large terms); the
// rounding errors of different rows are independent, so the sum's error
// grows like √rows·eps·|term|, eps times the size of a typical sum of
// random-signed terms, for which we take the largest |gradient| of the
// same tensor: abs = eps·max|ref| per tensor (six tensors).
//
// ReLU: the bound assumes smooth activations. ReLU's derivative jumps at
// 0, so a pre-activation within the f16 error of zero switches a whole term
// of dW_ih (about one term per element) on or off: seen on the H100 (run
// 3a: an element 0 on the engine, −3.9e-5 on recur-core). The reference's
// cell backward therefore runs on the engine's stored hidden states (which
// the forward checks bound first), so it takes ReLU's derivative where the
// engine took it, and every cell's gradients are checked per element (as
// in f32, check_gradients; RnnRelu's were checked through their norm only
// until session 11).
//
// Loss: log-softmax moves by at most 2·max|Δlogit|, and Δlogit[v] =
// Σ_j W_d[v, j]·Δh_j ≤ max_v Σ_j |W_d[v, j]| · 4u·max|h|.
const F16_U: f32 = 1.0 / 2048.0;
const F16_GRAD_EPS: f32 = 32.0 * F16_U;

/// The parameters as the f16 engine's products read them: W_ih, W_hh and
/// the output W rounded to f16, the biases as they are.
fn round_weights(layout: &ModelLayout, params: &[f32]) -> Vec<f32> {
    let mut out = params.to_vec();
    let t = layout.tensors();
    for i in [0, 1, 4] {
        let len = t[i].len();
        for v in &mut out[t[i].offset..t[i].offset + len] {
            *v = round_f16(*v);
        }
    }
    out
}

/// max|h| for the bounds: 1 for the saturating cells (|h| < 1), else the
/// reference's largest final |h| (at least 1).
fn h_max(cell: CellKind, h_last: &[f32]) -> f32 {
    match cell {
        CellKind::RnnRelu => h_last.iter().fold(1.0f32, |m, v| m.max(v.abs())),
        _ => 1.0,
    }
}

/// The loss bound above: 2 · max_v Σ_j |W_d[v, j]| · 4u · max|h|.
fn f16_loss_tol(layout: &ModelLayout, params: &[f32], hmax: f32) -> f32 {
    let wd = layout.tensors()[4];
    let row_l1 = params[wd.offset..wd.offset + wd.len()]
        .chunks(wd.cols)
        .map(|r| r.iter().map(|v| v.abs()).sum::<f32>())
        .fold(0.0f32, f32::max);
    2.0 * row_l1 * 4.0 * F16_U * hmax
}

/// Every tensor's gradient within abs + |ref|·eps (the bound above); the
/// norm within what those element bounds imply; returns the worst excess
/// ratio. `want` comes from a reference whose cell backward ran on the
/// engine's states (see "ReLU" above).
fn assert_f16_grads(layout: &ModelLayout, what: &str, got: &[f32], want: &[f32]) -> f32 {
    let mut worst = 0.0f32;
    let mut abs_sq = 0.0f64;
    for (k, t) in layout.tensors().iter().enumerate() {
        let r = t.offset..t.offset + t.len();
        let scale = want[r.clone()].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let abs = F16_GRAD_EPS * scale;
        abs_sq += (abs as f64).powi(2) * r.len() as f64;
        let name = format!("{what} tensor {k}");
        worst = worst.max(assert_close(
            &name,
            &got[r.clone()],
            &want[r],
            abs,
            F16_GRAD_EPS,
        ));
    }
    // ‖Δg‖ ≤ ‖abs‖ + eps·‖ref‖ (triangle inequality over the element bounds).
    let (n_got, n_want) = (clip::global_norm(got), clip::global_norm(want));
    let tol = abs_sq.sqrt() as f32 + F16_GRAD_EPS * n_want;
    assert!(
        (n_got - n_want).abs() <= tol,
        "{what}: norm {n_got} vs {n_want} (tol {tol})"
    );
    worst
}

/// f16 gradients, loss and final state against recur-core at the same
/// f16-rounded weights and initial h; the first loss against the f32
/// engine's at the unrounded weights.
fn check_gradients_f16(
    cell: CellKind,
    batch: usize,
    hidden: usize,
    vocab: usize,
    steps: usize,
    seed: u64,
    loops: Loops,
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
    let rounded = round_weights(&layout, &params);
    // The engine stores the initial h in f16 too.
    let h0_16: Vec<f32> = h0.iter().map(|&v| round_f16(v)).collect();

    let mut t = DeviceTrainer::new_with_precision(
        &gpu,
        layout,
        batch,
        steps,
        TrainOptimizer::Sgd,
        Precision::F16,
    )
    .unwrap();
    assert_eq!(t.precision(), Precision::F16);
    if !set_loops(&mut t, loops) {
        return;
    }
    t.upload_params(&params).unwrap();
    t.upload_state(&h0, &c0).unwrap();
    t.forward(&inputs, &targets).unwrap();
    let loss = t.loss().unwrap();
    t.backward(false).unwrap();
    assert_loops(&t, loops);
    let grads = t.download_grads().unwrap();
    let (h_last, c_last) = t.download_state().unwrap();
    // The cell backward's reference on the engine's (stored) states: see
    // "ReLU" above.
    let hs = t.download_hidden_states().unwrap();
    let want = core_reference(
        layout,
        batch,
        steps,
        &rounded,
        &h0_16,
        &c0,
        &inputs,
        &targets,
        Some(&hs),
    );
    let hmax = h_max(cell, &want.h_last);
    let loss_tol = f16_loss_tol(&layout, &rounded, hmax);
    assert_close("f16 loss", &[loss], &[want.loss], loss_tol, 0.0);
    assert_close("f16 h_last", &h_last, &want.h_last, 4.0 * F16_U * hmax, 0.0);
    // c is f32, driven by the rounded gates and h: the same 4u, relative.
    assert_close(
        "f16 c_last",
        &c_last,
        &want.c_last,
        4.0 * F16_U,
        4.0 * F16_U,
    );
    let worst = assert_f16_grads(&layout, "f16 gradients", &grads, &want.grads);
    t.clip(None).unwrap();
    let norm = t.norm().unwrap();
    assert_close(
        "f16 device norm",
        &[norm],
        &[clip::global_norm(&grads)],
        1e-6,
        1e-4,
    );

    // The f32 engine at the unrounded weights: the f16 loss differs by the
    // activation rounding (the bound above) and by the weight rounding, of
    // the same order (u per stored value, independent errors): twice it.
    let mut t32 = DeviceTrainer::new(&gpu, layout, batch, steps, TrainOptimizer::Sgd).unwrap();
    set_loops(&mut t32, loops);
    t32.upload_params(&params).unwrap();
    t32.upload_state(&h0, &c0).unwrap();
    t32.forward(&inputs, &targets).unwrap();
    let loss32 = t32.loss().unwrap();
    assert_close(
        "f16 loss vs f32 engine",
        &[loss],
        &[loss32],
        2.0 * loss_tol,
        0.0,
    );
    println!(
        "f16 {cell:?} B={batch} H={hidden} V={vocab} T={steps} ({loops:?} loops): loss {loss} (core at f16 weights {}, f32 engine {loss32}; tol {loss_tol:.2e}), worst gradient error {worst:.3} of its tolerance",
        want.loss
    );
}

#[test]
fn f16_gradients_at_the_d2l_shape() {
    for cell in CELLS {
        for loops in F16_LOOPS {
            check_gradients_f16(cell, 32, 256, 1027, 35, 7, loops);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn f16_gradients_match_recur_core(
        cell in 0usize..5,
        batch in 1usize..=64,
        hidden in 1usize..=300,
        vocab in 1usize..=1100,
        steps in 1usize..=40,
        seed in 0u64..1000,
    ) {
        check_gradients_f16(CELLS[cell], batch, hidden, vocab, steps, seed, F16_LOOPS[seed as usize % F16_LOOPS.len()]);
    }
}

/// Five Adam steps with clipping in f16 against recur-core, whose
/// gradients come from the f16-rounded weights of its own f32 masters (as
/// the engine's mirror): the losses within the loss bound, the first norm
/// within the gradient bound, the parameters' distance from the CPU's at
/// most half the distance the CPU's moved (Adam moves each element by about
/// lr per step; only elements whose gradient is within the f16 error of
/// zero may move the other way, a small share; a skipped, scaled or
/// sign-flipped update gives 1 or more), and at the end the gradients of a
/// further batch from the engine's own parameters and state against
/// recur-core at their rounding (a stale f16 mirror fails this).
fn check_trajectory_f16(cell: CellKind, seed: u64) {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let (batch, steps, hidden, vocab) = (8, 12, 40, 60);
    let (lr, theta) = (1e-3, 0.05f32);
    let layout = layout_of(cell, vocab, hidden);
    let freeze_bias_hh = cell == CellKind::GruResetBefore;
    let p0 = engine_support::random_params(&layout, seed);
    let mut p_cpu = p0.clone();
    let mut t = DeviceTrainer::new_with_precision(
        &gpu,
        layout,
        batch,
        steps,
        TrainOptimizer::Adam,
        Precision::F16,
    )
    .unwrap();
    t.upload_params(&p0).unwrap();
    let n = layout.len();
    let (mut m_cpu, mut v_cpu) = (vec![0.0f32; n], vec![0.0f32; n]);
    let bh = batch * hidden;
    let c_len = if cell.has_cell_state() { bh } else { 0 };
    let (mut h_cpu, mut c_cpu) = (vec![0.0f32; bh], vec![0.0f32; c_len]);
    let cfg = AdamConfig {
        lr,
        ..AdamConfig::default()
    };
    let b_hh = layout.tensors()[3];
    let dist = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    for i in 0..5u64 {
        let inputs = engine_support::random_tokens(steps * batch, vocab, seed + 10 * i);
        let targets = engine_support::random_tokens(steps * batch, vocab, seed + 10 * i + 1);
        let rounded = round_weights(&layout, &p_cpu);
        let h16: Vec<f32> = h_cpu.iter().map(|&v| round_f16(v)).collect();
        let c_in = c_cpu.clone();
        let mut want = core_reference(
            layout, batch, steps, &rounded, &h16, &c_cpu, &inputs, &targets, None,
        );
        if freeze_bias_hh {
            want.grads[b_hh.offset..b_hh.offset + b_hh.rows].fill(0.0);
        }
        let loss_tol = f16_loss_tol(&layout, &rounded, h_max(cell, &want.h_last));
        let n_cpu = clip::clip_global_norm(&mut want.grads, theta).unwrap();
        assert!(n_cpu > theta, "theta {theta} does not clip batch {i}");
        optim::adam_step(&mut p_cpu, &mut m_cpu, &mut v_cpu, &want.grads, i + 1, &cfg).unwrap();
        h_cpu = want.h_last;
        c_cpu = want.c_last;

        t.forward(&inputs, &targets).unwrap();
        t.backward(freeze_bias_hh).unwrap();
        if i == 0 {
            // Same parameters on both sides: the unclipped gradients, the
            // reference's cell backward on the engine's states.
            let g = t.download_grads().unwrap();
            let hs = t.download_hidden_states().unwrap();
            let mut on_states = core_reference(
                layout,
                batch,
                steps,
                &rounded,
                &h16,
                &c_in,
                &inputs,
                &targets,
                Some(&hs),
            );
            if freeze_bias_hh {
                on_states.grads[b_hh.offset..b_hh.offset + b_hh.rows].fill(0.0);
            }
            assert_f16_grads(&layout, "f16 trajectory gradients", &g, &on_states.grads);
        }
        t.clip(Some(theta)).unwrap();
        t.adam_step(i + 1, &cfg).unwrap();
        let l_gpu = t.loss().unwrap();
        assert_close("f16 trajectory loss", &[l_gpu], &[want.loss], loss_tol, 0.0);
        let p_gpu = t.download_params().unwrap();
        assert!(p_gpu.iter().all(|v| v.is_finite()));
        let (off, moved) = (dist(&p_gpu, &p_cpu), dist(&p_cpu, &p0));
        assert!(
            off <= 0.5 * moved,
            "f16 step {i}: parameters {off} from the CPU's, which moved {moved}"
        );
    }
    // A further batch from the engine's own parameters and state.
    let p_gpu = t.download_params().unwrap();
    let (h_gpu, c_gpu) = t.download_state().unwrap();
    let inputs = engine_support::random_tokens(steps * batch, vocab, seed + 99);
    let targets = engine_support::random_tokens(steps * batch, vocab, seed + 98);
    t.forward(&inputs, &targets).unwrap();
    t.backward(false).unwrap();
    let g = t.download_grads().unwrap();
    let hs = t.download_hidden_states().unwrap();
    let want = core_reference(
        layout,
        batch,
        steps,
        &round_weights(&layout, &p_gpu),
        &h_gpu,
        &c_gpu,
        &inputs,
        &targets,
        Some(&hs),
    );
    let worst = assert_f16_grads(&layout, "f16 gradients after 5 steps", &g, &want.grads);
    let stats = t.take_stats().unwrap();
    assert_eq!((stats.batches, stats.first_non_finite), (6, None));
    println!("f16 {cell:?} Adam: 5 clipped steps agree; gradients after them at {worst:.3} of the tolerance");
}

#[test]
fn f16_trajectories_adam_with_clipping() {
    for (k, cell) in CELLS.into_iter().enumerate() {
        check_trajectory_f16(cell, 300 + k as u64);
    }
}
