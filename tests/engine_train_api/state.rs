//! The carried state of a `DeviceTrainer` across mini-batches. A forward
//! leaves the state in its last step's slot, and the next forward starts
//! from there unless something read or replaced the state in between. The
//! results must be those of the path through the carried-state buffer
//! (a download between batches), bit for bit, for every cell and both
//! precisions. A reset or an upload after a forward must replace that
//! state. Without a GPU the tests print `skipped: no CUDA device`.

use std::io::Write as _;

use crate::{engine_support, trainer_at};

use recur::core::{CellKind, ModelLayout};
use recur::engine::{DeviceTrainer, Gpu, Precision, TrainOptimizer};

const BATCH: usize = 3;
const STEPS: usize = 4;
const VOCAB: usize = 17;
const HIDDEN: usize = 20;

fn trainer(gpu: &Gpu, cell: CellKind, precision: Precision) -> DeviceTrainer {
    let layout = ModelLayout {
        cell,
        hidden: HIDDEN,
        vocab: VOCAB,
    };
    let mut t = trainer_at(
        gpu,
        layout,
        (STEPS, BATCH),
        TrainOptimizer::Sgd,
        precision,
        11,
    );
    let bh = BATCH * HIDDEN;
    t.upload_state(
        &engine_support::random_vec(bh, 0.5, 12),
        &engine_support::random_vec(bh, 0.5, 13),
    )
    .unwrap();
    t
}

/// Forward of batch `i` (fixed random tokens); its loss.
fn forward(t: &mut DeviceTrainer, i: u64) -> f32 {
    let n = STEPS * BATCH;
    let inputs = engine_support::random_tokens(n, VOCAB, 100 + 2 * i);
    let targets = engine_support::random_tokens(n, VOCAB, 101 + 2 * i);
    t.forward(&inputs, &targets).unwrap();
    t.loss().unwrap()
}

#[test]
fn batches_carry_the_state_as_through_a_download() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    for cell in CellKind::ALL {
        for precision in [Precision::F32, Precision::F16] {
            // Three batches, nothing read between them.
            let mut direct = trainer(&gpu, cell, precision);
            let direct_losses: Vec<f32> = (0..3).map(|i| forward(&mut direct, i)).collect();
            // The same with the state downloaded after every batch.
            let mut read = trainer(&gpu, cell, precision);
            let mut read_losses = Vec::new();
            let mut states = Vec::new();
            for i in 0..3 {
                read_losses.push(forward(&mut read, i));
                states.push(read.download_state().unwrap());
            }
            let what = format!("{cell:?} {precision:?}");
            assert_eq!(direct_losses, read_losses, "{what}: losses");
            assert_eq!(
                direct.download_state().unwrap(),
                states[2],
                "{what}: final state"
            );
            // The state moved: the test would see a batch that did not carry it.
            assert_ne!(states[0], states[1], "{what}: state after batches 1 and 2");
        }
    }
}

#[test]
fn a_reset_or_an_upload_replaces_the_state_a_forward_left() {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return;
    };
    let bh = BATCH * HIDDEN;
    for cell in [CellKind::GruResetAfter, CellKind::Lstm] {
        // Reset after a forward, then a batch: as a batch from zeros.
        let mut t = trainer(&gpu, cell, Precision::F32);
        forward(&mut t, 0);
        t.reset_state().unwrap();
        let after_reset = forward(&mut t, 1);
        let mut z = trainer(&gpu, cell, Precision::F32);
        z.upload_state(&vec![0.0; bh], &vec![0.0; bh]).unwrap();
        assert_eq!(
            after_reset,
            forward(&mut z, 1),
            "{cell:?}: batch after reset"
        );
        assert_eq!(
            t.download_state().unwrap(),
            z.download_state().unwrap(),
            "{cell:?}: state after reset and a batch"
        );
        // Upload after a forward, then a batch: as a batch from that state.
        let h = engine_support::random_vec(bh, 0.5, 14);
        let c = engine_support::random_vec(bh, 0.5, 15);
        let mut u = trainer(&gpu, cell, Precision::F32);
        forward(&mut u, 0);
        u.upload_state(&h, &c).unwrap();
        let after_upload = forward(&mut u, 2);
        let mut v = trainer(&gpu, cell, Precision::F32);
        v.upload_state(&h, &c).unwrap();
        assert_eq!(
            after_upload,
            forward(&mut v, 2),
            "{cell:?}: batch after upload"
        );
        // A bad upload loses nothing: the state a forward left stays.
        let mut w = trainer(&gpu, cell, Precision::F32);
        forward(&mut w, 0);
        let before = {
            let mut x = trainer(&gpu, cell, Precision::F32);
            forward(&mut x, 0);
            x.download_state().unwrap()
        };
        assert!(w.upload_state(&h[..bh - 1], &c).is_err());
        assert_eq!(
            w.download_state().unwrap(),
            before,
            "{cell:?}: after a bad upload"
        );
    }
}
