//! GPU training is reproducible: two `DeviceTrainer`s given the same
//! parameters, state and batches end with the same parameters, Adam moments,
//! gradients, norms and losses, bit for bit. The kernels add in fixed orders
//! (no float atomics): the split-K products and column sums by their last
//! block, the norm by its last block, dW_ih by token groups. Shapes are
//! chosen so that the products split and tokens repeat within a batch.
//! Without a GPU the tests print `skipped: no CUDA device`.

use std::io::Write as _;

use crate::{engine_support, trainer_at};

use recur::core::optim::AdamConfig;
use recur::core::{CellKind, ModelLayout};
use recur::engine::{Gpu, Precision, TrainOptimizer};

const BATCH: usize = 16;
const STEPS: usize = 20;
const HIDDEN: usize = 40;
// Few tokens for 320 rows: every token's column of dW_ih sums many rows.
const VOCAB: usize = 9;

/// Losses, norms, and the final parameters, moments and gradients of three
/// Adam steps with clipping.
type Run = (Vec<f32>, Vec<f32>, Vec<f32>, (Vec<f32>, Vec<f32>), Vec<f32>);

fn train(gpu: &Gpu, cell: CellKind, precision: Precision) -> Run {
    let layout = ModelLayout {
        cell,
        hidden: HIDDEN,
        vocab: VOCAB,
    };
    let mut t = trainer_at(
        gpu,
        layout,
        (STEPS, BATCH),
        TrainOptimizer::Adam,
        precision,
        21,
    );
    let cfg = AdamConfig::default();
    let (mut losses, mut norms) = (Vec::new(), Vec::new());
    for step in 1..=3u64 {
        let n = STEPS * BATCH;
        let inputs = engine_support::random_tokens(n, VOCAB, 30 + step);
        let targets = engine_support::random_tokens(n, VOCAB, 40 + step);
        t.forward(&inputs, &targets).unwrap();
        t.backward(false).unwrap();
        t.clip(Some(0.5)).unwrap();
        t.adam_step(step, &cfg).unwrap();
        losses.push(t.loss().unwrap());
        norms.push(t.norm().unwrap());
    }
    (
        losses,
        norms,
        t.download_params().unwrap(),
        t.download_moments().unwrap(),
        t.download_grads().unwrap(),
    )
}

#[test]
fn two_runs_end_bit_for_bit_alike() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    for cell in [CellKind::GruResetAfter, CellKind::Lstm, CellKind::RnnTanh] {
        for precision in [Precision::F32, Precision::F16] {
            let what = format!("{cell:?} {precision:?}");
            let a = train(&gpu, cell, precision);
            let b = train(&gpu, cell, precision);
            assert_eq!(a.0, b.0, "{what}: losses");
            assert_eq!(a.1, b.1, "{what}: norms");
            assert_eq!(a.2, b.2, "{what}: parameters");
            assert_eq!(a.3, b.3, "{what}: Adam's moments");
            assert_eq!(a.4, b.4, "{what}: gradients");
        }
    }
}
