//! The CPU training backend as a whole: gradients of the full model (cell +
//! dense + softmax cross-entropy) against finite differences, the carried
//! state, the frozen scratch bias, generation, presets and checkpoints.

use recur::core::{CellKind, ModelLayout, Portable};
use recur::train::backend::{
    Backend, BackendSpec, BatchStats, Decode, HiddenState, OptimizerState,
};
use recur::train::checkpoint::Checkpoint;
use recur::train::config::{
    InitScheme, OptimizerKind, Sampling, StatePolicy, TrainConfig, PRESETS,
};
use recur::train::cpu::{generate_cpu, CpuBackend};
use recur::train::init::init_params;
use recur::train::metrics::EpochRecord;
use recur::train::rng::TrainRng;
use recur::train::TrainError;

const VOCAB: usize = 7;
const HIDDEN: usize = 5;
const BATCH: usize = 2;
const STEPS: usize = 3;

fn spec(cell: CellKind, steps: usize, freeze: bool) -> BackendSpec {
    BackendSpec {
        layout: ModelLayout {
            cell,
            vocab: VOCAB,
            hidden: HIDDEN,
        },
        batch: BATCH,
        steps,
        optimizer: OptimizerKind::Sgd,
        lr: 0.1,
        freeze_bias_hh: freeze,
    }
}

/// Parameters of PyTorch's scale (uniform ±1/√H) so that every gate is
/// away from saturation and finite differences are informative.
fn params(layout: &ModelLayout, seed: u64) -> Vec<f32> {
    let mut p = vec![f32::NAN; layout.len()];
    init_params(
        &mut p,
        layout,
        InitScheme::Pytorch,
        &mut TrainRng::from_seed(seed),
    );
    p
}

/// Token ids (T, B) from a small LCG.
fn tokens(n: usize, seed: u32) -> Vec<u32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) % VOCAB as u32
        })
        .collect()
}

fn loss_at(b: &mut CpuBackend<Portable>, p: &[f32], h0: &HiddenState, x: &[u32], y: &[u32]) -> f32 {
    b.upload_params(p).unwrap();
    b.upload_state(h0).unwrap();
    b.forward_loss(x, y).unwrap()
}

#[test]
fn gradients_match_finite_differences_for_every_cell() {
    for cell in CellKind::ALL {
        let spec = spec(cell, STEPS, false);
        let layout = spec.layout;
        let mut b = CpuBackend::new(spec, Portable).unwrap();
        let p = params(&layout, 7);
        let (x, y) = (tokens(STEPS * BATCH, 1), tokens(STEPS * BATCH, 2));
        // A non-zero initial state, so the carried-state path is exercised.
        let c_len = if cell.has_cell_state() {
            BATCH * HIDDEN
        } else {
            0
        };
        let h0 = HiddenState {
            h: (0..BATCH * HIDDEN)
                .map(|i| 0.3 * ((i as f32) * 0.7).sin())
                .collect(),
            c: (0..c_len).map(|i| 0.2 * ((i as f32) * 1.3).cos()).collect(),
        };
        loss_at(&mut b, &p, &h0, &x, &y);
        b.backward().unwrap();
        // The gradients leave the backend only through a zero-lr-free path:
        // recover them from an SGD step of lr 0.1, g = (p - p') / 0.1.
        b.step().unwrap();
        let mut stepped = vec![f32::NAN; layout.len()];
        b.download_params(&mut stepped).unwrap();
        let grads: Vec<f64> = p
            .iter()
            .zip(&stepped)
            .map(|(a, s)| (*a as f64 - *s as f64) / 0.1)
            .collect();
        let eps = 1e-2f32;
        let mut worst = 0.0f64;
        for span in layout.tensors() {
            for k in [0, span.len() / 2, span.len() - 1] {
                let i = span.offset + k;
                let mut plus = p.clone();
                plus[i] += eps;
                let mut minus = p.clone();
                minus[i] -= eps;
                let fd = (loss_at(&mut b, &plus, &h0, &x, &y) as f64
                    - loss_at(&mut b, &minus, &h0, &x, &y) as f64)
                    / (2.0 * eps as f64);
                let err = (fd - grads[i]).abs() / (fd.abs().max(grads[i].abs()) + 1e-2);
                worst = worst.max(err);
                assert!(
                    err < 3e-2,
                    "{} {}[{k}]: backward {} vs finite difference {fd}",
                    cell.name(),
                    span.name,
                    grads[i]
                );
            }
        }
        assert!(worst.is_finite());
    }
}

#[test]
fn carried_state_continues_the_sequence() {
    // Two batches of T steps from a carried state equal one batch of 2T
    // steps: the final hidden (and cell) state is handed over exactly.
    for cell in CellKind::ALL {
        let layout = spec(cell, STEPS, false).layout;
        let p = params(&layout, 3);
        let (x, y) = (tokens(2 * STEPS * BATCH, 5), tokens(2 * STEPS * BATCH, 6));
        let mut long = CpuBackend::new(spec(cell, 2 * STEPS, false), Portable).unwrap();
        long.upload_params(&p).unwrap();
        long.reset_state().unwrap();
        let whole = long.forward_loss(&x, &y).unwrap();
        let mut short = CpuBackend::new(spec(cell, STEPS, false), Portable).unwrap();
        short.upload_params(&p).unwrap();
        short.reset_state().unwrap();
        let half = STEPS * BATCH;
        let first = short.forward_loss(&x[..half], &y[..half]).unwrap();
        short.detach_state().unwrap();
        let second = short.forward_loss(&x[half..], &y[half..]).unwrap();
        let mean = (first + second) / 2.0;
        assert!(
            (mean - whole).abs() <= 1e-5 * whole.abs(),
            "{}: {mean} vs {whole}",
            cell.name()
        );
        assert_eq!(
            short.download_state().unwrap(),
            long.download_state().unwrap()
        );
        // Reset really zeroes.
        short.reset_state().unwrap();
        let s = short.download_state().unwrap();
        assert!(s.h.iter().chain(&s.c).all(|&v| v == 0.0));
    }
}

#[test]
fn scratch_models_keep_bias_hh_at_zero() {
    for cell in CellKind::ALL {
        let spec = spec(cell, STEPS, true);
        let layout = spec.layout;
        let mut p = vec![f32::NAN; layout.len()];
        init_params(
            &mut p,
            &layout,
            InitScheme::Scratch,
            &mut TrainRng::from_seed(1),
        );
        let t = layout.tensors();
        assert!(p[t[2].range()]
            .iter()
            .chain(&p[t[3].range()])
            .all(|&v| v == 0.0));
        assert!(p[t[5].range()].iter().all(|&v| v == 0.0));
        let weights: Vec<f32> = p[t[0].range()].to_vec();
        let std =
            (weights.iter().map(|w| (w * w) as f64).sum::<f64>() / weights.len() as f64).sqrt();
        assert!(
            (0.005..0.02).contains(&std),
            "normal(0, 0.01) init, std {std}"
        );
        let mut b = CpuBackend::new(spec, Portable).unwrap();
        b.upload_params(&p).unwrap();
        for round in 0..3u32 {
            b.forward_loss(
                &tokens(STEPS * BATCH, round),
                &tokens(STEPS * BATCH, round + 9),
            )
            .unwrap();
            b.backward().unwrap();
            b.clip(Some(1.0)).unwrap();
            b.step().unwrap();
        }
        let mut after = vec![f32::NAN; layout.len()];
        b.download_params(&mut after).unwrap();
        assert!(
            after[t[3].range()].iter().all(|&v| v == 0.0),
            "{}",
            cell.name()
        );
        assert!(
            after[t[2].range()].iter().any(|&v| v != 0.0),
            "{}",
            cell.name()
        );
    }
}

#[test]
fn clip_reports_the_norm_and_scales_to_theta() {
    let spec = spec(CellKind::Lstm, STEPS, false);
    let layout = spec.layout;
    let p = params(&layout, 11);
    let run = |theta: Option<f32>| {
        let mut b = CpuBackend::new(spec, Portable).unwrap();
        b.upload_params(&p).unwrap();
        b.forward_loss(&tokens(STEPS * BATCH, 3), &tokens(STEPS * BATCH, 4))
            .unwrap();
        b.backward().unwrap();
        let norm = b.clip(theta).unwrap();
        b.step().unwrap();
        let mut q = vec![f32::NAN; layout.len()];
        b.download_params(&mut q).unwrap();
        let step_norm = p
            .iter()
            .zip(&q)
            .map(|(a, b)| ((a - b) as f64 / 0.1).powi(2))
            .sum::<f64>()
            .sqrt();
        (norm, step_norm)
    };
    let (norm, unclipped) = run(None);
    assert!(norm > 0.0 && ((unclipped - norm as f64).abs() / unclipped) < 1e-3);
    let theta = norm / 4.0;
    let (norm2, clipped) = run(Some(theta));
    assert_eq!(norm2, norm, "the norm before clipping is reported");
    assert!(
        (clipped - theta as f64).abs() / (theta as f64) < 1e-3,
        "{clipped} vs {theta}"
    );
}

#[test]
fn backward_needs_a_forward_and_inputs_are_checked() {
    let mut b = CpuBackend::new(spec(CellKind::GruResetAfter, STEPS, false), Portable).unwrap();
    assert!(matches!(b.backward(), Err(TrainError::Config(_))));
    let ok = tokens(STEPS * BATCH, 1);
    assert!(b.forward_loss(&ok[1..], &ok).is_err());
    let mut bad = ok.clone();
    bad[2] = VOCAB as u32;
    assert!(matches!(
        b.forward_loss(&bad, &ok),
        Err(TrainError::Core(recur::core::Error::Token { index: 2, .. }))
    ));
    assert!(b.upload_params(&[0.0; 3]).is_err());
    let wrong_state = HiddenState {
        h: vec![0.0; 3],
        c: vec![],
    };
    assert!(matches!(
        b.upload_state(&wrong_state),
        Err(TrainError::Mismatch(_))
    ));
}

#[test]
fn adam_state_round_trips_and_continues_identically() {
    let mut s = spec(CellKind::GruResetAfter, STEPS, false);
    s.optimizer = OptimizerKind::Adam;
    s.lr = 1e-2;
    let layout = s.layout;
    let p = params(&layout, 5);
    let train = |b: &mut CpuBackend<Portable>, rounds: std::ops::Range<u32>| {
        for r in rounds {
            b.forward_loss(&tokens(STEPS * BATCH, r), &tokens(STEPS * BATCH, r + 50))
                .unwrap();
            b.backward().unwrap();
            b.clip(None).unwrap();
            b.step().unwrap();
        }
    };
    let mut straight = CpuBackend::new(s, Portable).unwrap();
    straight.upload_params(&p).unwrap();
    train(&mut straight, 0..6);
    let mut first = CpuBackend::new(s, Portable).unwrap();
    first.upload_params(&p).unwrap();
    train(&mut first, 0..3);
    let mut mid = vec![0.0; layout.len()];
    first.download_params(&mut mid).unwrap();
    let opt: OptimizerState = first.download_optimizer().unwrap();
    assert_eq!(opt.step, 3);
    let state = first.download_state().unwrap();
    let mut second = CpuBackend::new(s, Portable).unwrap();
    second.upload_params(&mid).unwrap();
    second.upload_optimizer(&opt).unwrap();
    second.upload_state(&state).unwrap();
    train(&mut second, 3..6);
    let (mut a, mut b) = (vec![0.0; layout.len()], vec![0.0; layout.len()]);
    straight.download_params(&mut a).unwrap();
    second.download_params(&mut b).unwrap();
    assert_eq!(a, b);
}

#[test]
fn generation_follows_d2l_predict() {
    let layout = ModelLayout {
        cell: CellKind::GruResetBefore,
        vocab: VOCAB,
        hidden: HIDDEN,
    };
    let p = params(&layout, 21);
    let mut rng = TrainRng::from_seed(0);
    let out = generate_cpu(&p, &layout, &[3, 1, 4], 6, Decode::Greedy, &mut rng).unwrap();
    assert_eq!(out.len(), 9);
    assert_eq!(&out[..3], &[3, 1, 4]);
    // Greedy is deterministic and uses no randomness.
    let again = generate_cpu(
        &p,
        &layout,
        &[3, 1, 4],
        6,
        Decode::Greedy,
        &mut TrainRng::from_seed(99),
    )
    .unwrap();
    assert_eq!(out, again);
    // A longer run extends a shorter one (each token depends only on those before).
    let longer = generate_cpu(&p, &layout, &[3, 1, 4], 10, Decode::Greedy, &mut rng).unwrap();
    assert_eq!(&longer[..9], &out[..]);
    // Sampling is reproducible from the seed and stays in the vocabulary.
    let how = Decode::Sample {
        temperature: 1.5,
        top_k: 3,
    };
    let s1 = generate_cpu(&p, &layout, &[0], 40, how, &mut TrainRng::from_seed(5)).unwrap();
    let s2 = generate_cpu(&p, &layout, &[0], 40, how, &mut TrainRng::from_seed(5)).unwrap();
    assert_eq!(s1, s2);
    assert!(s1.iter().all(|&t| (t as usize) < VOCAB));
    assert!(generate_cpu(&p, &layout, &[], 4, Decode::Greedy, &mut rng).is_err());
    assert!(generate_cpu(&p, &layout, &[VOCAB as u32], 4, Decode::Greedy, &mut rng).is_err());
}

#[test]
fn presets_match_the_seeds() {
    let expect = [
        (
            "d2l-rnn-random",
            CellKind::RnnTanh,
            Sampling::Random,
            StatePolicy::PerBatch,
            OptimizerKind::Sgd,
            100.0,
            250,
            Some(0.01f32),
            50,
        ),
        (
            "d2l-rnn-consecutive",
            CellKind::RnnTanh,
            Sampling::Consecutive,
            StatePolicy::PerEpoch,
            OptimizerKind::Sgd,
            100.0,
            250,
            Some(0.01),
            50,
        ),
        (
            "d2l-gru",
            CellKind::GruResetBefore,
            Sampling::Consecutive,
            StatePolicy::PerEpoch,
            OptimizerKind::Sgd,
            100.0,
            160,
            Some(0.01),
            40,
        ),
        (
            "d2l-lstm",
            CellKind::Lstm,
            Sampling::Consecutive,
            StatePolicy::PerEpoch,
            OptimizerKind::Sgd,
            100.0,
            160,
            Some(0.01),
            40,
        ),
        (
            "d2l-concise-rnn",
            CellKind::RnnTanh,
            Sampling::Consecutive,
            StatePolicy::Once,
            OptimizerKind::Adam,
            1e-3,
            250,
            None,
            50,
        ),
        (
            "d2l-concise-gru",
            CellKind::GruResetAfter,
            Sampling::Consecutive,
            StatePolicy::Once,
            OptimizerKind::Adam,
            1e-2,
            160,
            None,
            40,
        ),
        (
            "d2l-concise-lstm",
            CellKind::Lstm,
            Sampling::Consecutive,
            StatePolicy::Once,
            OptimizerKind::Adam,
            1e-2,
            160,
            None,
            40,
        ),
    ];
    assert_eq!(PRESETS.len(), expect.len());
    for (name, cell, sampling, state, opt, lr, epochs, clip, every) in expect {
        let c = TrainConfig::preset(name).unwrap();
        assert_eq!(
            (
                c.cell,
                c.sampling,
                c.state,
                c.optimizer,
                c.lr,
                c.epochs,
                c.clip,
                c.sample_every
            ),
            (cell, sampling, state, opt, lr, epochs, clip, every),
            "{name}"
        );
        assert_eq!(
            (c.hidden, c.batch, c.steps, c.corpus_chars, c.sample_len),
            (256, 32, 35, 10_000, 50)
        );
        assert_eq!(c.prefixes, ["分开", "不分开"]);
        assert_eq!(c.init == InitScheme::Scratch, opt == OptimizerKind::Sgd);
        assert_eq!(TrainConfig::from_json(&c.to_json()).unwrap(), c);
    }
    let err = TrainConfig::preset("d2l-transformer")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("d2l-transformer") && err.contains("d2l-gru"),
        "{err}"
    );
}

fn tiny_checkpoint(cell: CellKind) -> Checkpoint {
    let mut config = TrainConfig::preset("d2l-concise-lstm").unwrap();
    config.cell = cell;
    config.hidden = HIDDEN;
    config.batch = BATCH;
    let vocabulary: Vec<char> = "分开不我想要你".chars().collect();
    let layout = ModelLayout {
        cell,
        vocab: vocabulary.len(),
        hidden: HIDDEN,
    };
    let c_len = if cell.has_cell_state() {
        BATCH * HIDDEN
    } else {
        0
    };
    Checkpoint {
        config,
        epoch: 3,
        params: params(&layout, 2),
        optimizer: OptimizerState {
            step: 12,
            exp_avg: (0..layout.len()).map(|i| i as f32 * 1e-3).collect(),
            exp_avg_sq: (0..layout.len()).map(|i| i as f32 * 1e-6).collect(),
        },
        state: Some(HiddenState {
            h: vec![0.25; BATCH * HIDDEN],
            c: vec![-0.5; c_len],
        }),
        rng: TrainRng::from_seed(4).state(),
        history: vec![EpochRecord {
            epoch: 1,
            perplexity: 6.5,
            loss: 6.5f64.ln(),
            seconds: 0.1,
            tokens_per_s: 1000.0,
            grad_norm: f64::NAN,
        }],
        vocabulary,
    }
}

#[test]
fn checkpoints_round_trip_with_pytorch_names() {
    for cell in [CellKind::Lstm, CellKind::GruResetAfter] {
        let ckpt = tiny_checkpoint(cell);
        let bytes = ckpt.to_bytes().unwrap();
        let back = Checkpoint::from_bytes(&bytes).unwrap();
        assert_eq!(back.params, ckpt.params);
        assert_eq!(back.optimizer, ckpt.optimizer);
        assert_eq!(back.state, ckpt.state);
        assert_eq!(back.rng, ckpt.rng);
        assert_eq!(back.config, ckpt.config);
        assert_eq!(back.vocabulary, ckpt.vocabulary);
        assert_eq!(back.epoch, 3);
        assert!(back.history[0].grad_norm.is_nan());
        assert_eq!(back.history[0].perplexity, 6.5);
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let g = cell.gates() * HIDDEN;
        for (name, shape) in [
            ("rnn.weight_ih_l0", vec![g, 7]),
            ("rnn.weight_hh_l0", vec![g, HIDDEN]),
            ("rnn.bias_ih_l0", vec![g]),
            ("rnn.bias_hh_l0", vec![g]),
            ("dense.weight", vec![7, HIDDEN]),
            ("dense.bias", vec![7]),
        ] {
            assert_eq!(st.tensor(name).unwrap().shape(), &shape[..], "{name}");
        }
    }
}

#[test]
fn bad_checkpoints_are_refused_with_names() {
    let ckpt = tiny_checkpoint(CellKind::Lstm);
    let bytes = ckpt.to_bytes().unwrap();
    let err = Checkpoint::from_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint(_)), "{err}");
    let err = Checkpoint::from_bytes(b"hello").unwrap_err();
    assert!(err.to_string().contains("safetensors"), "{err}");
    // A tensor of the wrong shape: the same tensors under a config that
    // claims a larger hidden size.
    let mut wrong = ckpt.config.clone();
    wrong.hidden = HIDDEN + 1;
    let forged = resave_with_config(&bytes, &wrong);
    let err = Checkpoint::from_bytes(&forged).unwrap_err().to_string();
    assert!(
        err.contains("rnn.weight_hh_l0") || err.contains("rnn.weight_ih_l0"),
        "{err}"
    );
    assert!(err.contains("shape"), "{err}");
}

#[test]
fn checkpoint_save_is_atomic_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let ckpt = tiny_checkpoint(CellKind::RnnTanh);
    ckpt.save(&path).unwrap();
    let mut changed = ckpt.clone();
    changed.epoch = 4;
    changed.save(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap().epoch, 4);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["model.safetensors"]);
    let missing = dir.path().join("nope").join("x.safetensors");
    assert!(matches!(ckpt.save(&missing), Err(TrainError::Io { .. })));
    assert!(matches!(
        Checkpoint::load(&missing),
        Err(TrainError::Io { .. })
    ));
}

/// The tensors and metadata of `bytes`, with the `config` metadata replaced.
fn resave_with_config(bytes: &[u8], config: &TrainConfig) -> Vec<u8> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut metadata = meta.metadata().clone().unwrap();
    metadata.insert("config".into(), config.to_json().to_string());
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    safetensors::serialize(st.tensors(), Some(metadata)).unwrap()
}

/// The epoch's sums equal the per-batch losses and norms; a non-finite
/// batch is reported with its index and from it on no update is applied;
/// taking the stats starts new sums and resumes updates.
#[test]
fn stats_sum_the_batches_and_a_non_finite_batch_stops_updates() {
    let spec = spec(CellKind::GruResetAfter, STEPS, false);
    let layout = spec.layout;
    let p = params(&layout, 21);
    let mut b = CpuBackend::new(spec, Portable).unwrap();
    b.upload_params(&p).unwrap();
    let rows = (STEPS * BATCH) as f64;
    let (mut loss_sum, mut norm_sum) = (0.0f64, 0.0f64);
    for r in 0..3u32 {
        b.forward(&tokens(STEPS * BATCH, r), &tokens(STEPS * BATCH, r + 7))
            .unwrap();
        loss_sum += b.loss().unwrap() as f64 * rows;
        b.backward().unwrap();
        b.clip_grads(Some(1.0)).unwrap();
        norm_sum += b.norm().unwrap() as f64;
        b.step().unwrap();
    }
    let stats: BatchStats = b.take_stats().unwrap();
    assert_eq!(stats.loss_sum, loss_sum);
    assert_eq!(stats.norm_sum, norm_sum);
    assert_eq!(stats.first_non_finite, None);
    assert_eq!(b.take_stats().unwrap(), BatchStats::default(), "new sums");

    // Batch 0 fine, batch 1 with NaN parameters: its loss is NaN, its update
    // and every later one are skipped until the stats are taken.
    let mut good = vec![f32::NAN; layout.len()];
    b.download_params(&mut good).unwrap();
    let batch = |b: &mut CpuBackend<Portable>, r: u32| {
        b.forward(&tokens(STEPS * BATCH, r), &tokens(STEPS * BATCH, r + 3))
            .unwrap();
        b.backward().unwrap();
        b.clip_grads(None).unwrap();
        b.step().unwrap();
    };
    batch(&mut b, 0);
    let mut after_good = vec![f32::NAN; layout.len()];
    b.download_params(&mut after_good).unwrap();
    assert_ne!(after_good, good, "a finite batch updates");
    let mut poisoned = after_good.clone();
    poisoned[0] = f32::NAN;
    b.upload_params(&poisoned).unwrap();
    batch(&mut b, 1);
    b.upload_params(&after_good).unwrap();
    batch(&mut b, 2);
    let mut kept = vec![0.0; layout.len()];
    b.download_params(&mut kept).unwrap();
    assert_eq!(kept, after_good, "no update after the non-finite batch");
    let stats = b.take_stats().unwrap();
    let (index, value) = stats.first_non_finite.expect("reported");
    assert_eq!(index, 1);
    assert!(value.is_nan());
    // The carried state went NaN with the poisoned batch.
    b.reset_state().unwrap();
    batch(&mut b, 3);
    b.download_params(&mut kept).unwrap();
    assert_ne!(kept, after_good, "updates resume after the take");
}
