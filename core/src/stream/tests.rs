extern crate std;

use super::*;
use crate::cell::SeqDims;
use crate::gemm::Portable;
use crate::layout::CellKind;
use crate::output::{dense_forward, DenseDims};
use crate::testutil::{nans, SplitMix};
use half::f16;
use std::vec::Vec;

const VOCAB: usize = 11;
const HIDDEN: usize = 13;
const TOKENS: [u32; 7] = [3, 0, 10, 3, 7, 7, 1];

fn layout(cell: CellKind) -> ModelLayout {
    ModelLayout {
        cell,
        vocab: VOCAB,
        hidden: HIDDEN,
    }
}

fn params(layout: &ModelLayout, seed: u64) -> Vec<f32> {
    SplitMix(seed).vec(layout.len(), 0.5)
}

/// Logits of every step of `tokens` from the sequence path
/// (`sequence_forward` then the dense layer), the reference.
fn sequence_logits(layout: &ModelLayout, flat: &[f32], tokens: &[u32]) -> Vec<f32> {
    let (cell_params, dw, db) = layout.split(flat).unwrap();
    let dims = SeqDims {
        cell: layout.cell_dims(),
        steps: tokens.len(),
        batch: 1,
    };
    let h = layout.hidden;
    let c_len = if layout.cell.has_cell_state() { h } else { 0 };
    let mut hs = nans(tokens.len() * h);
    let mut c_last = nans(c_len);
    let mut cache = nans(cell::cache_len(&dims));
    let mut ws = nans(cell::workspace_len(&dims));
    cell::sequence_forward(
        &mut hs,
        &mut c_last,
        Input::Tokens(tokens),
        &std::vec![0.0; h],
        &std::vec![0.0; c_len],
        cell_params,
        &mut cache,
        &mut ws,
        &dims,
        &Portable,
    )
    .unwrap();
    let dd = DenseDims {
        rows: tokens.len(),
        hidden: h,
        vocab: layout.vocab,
    };
    let mut logits = nans(dd.logits_len());
    dense_forward(&mut logits, &hs, dw, db, &dd, &Portable).unwrap();
    logits
}

/// Logits of every step from [`step_logits`], buffers poisoned with NaN.
fn stream_logits<W: Weight>(layout: &ModelLayout, flat: &[W], tokens: &[u32]) -> Vec<f32> {
    let model = StreamModel::new(*layout, flat).unwrap();
    let mut state = nans(state_len(layout));
    reset(&mut state);
    let mut out = Vec::new();
    for &t in tokens {
        let mut logits = nans(logits_len(layout));
        let mut ws = nans(workspace_len(layout));
        step_logits(&mut logits, &mut state, t, &model, &mut ws).unwrap();
        out.extend_from_slice(&logits);
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn steps_match_the_sequence_path_for_every_cell() {
    for (i, cell) in CellKind::ALL.into_iter().enumerate() {
        let l = layout(cell);
        let p = params(&l, 40 + i as u64);
        let want = sequence_logits(&l, &p, &TOKENS);
        let got = stream_logits(&l, &p, &TOKENS);
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-5, "{cell:?}: max |diff| {d}");
        // Not trivially equal: the logits vary over steps and tokens.
        assert!(want.iter().any(|&v| (v - want[0]).abs() > 1e-2));
    }
}

#[test]
fn f16_weights_compute_in_f32_with_the_stored_values() {
    for (i, cell) in CellKind::ALL.into_iter().enumerate() {
        let l = layout(cell);
        let p = params(&l, 70 + i as u64);
        let p16: Vec<f16> = p.iter().map(|&v| f16::from_f32(v)).collect();
        let rounded: Vec<f32> = p16.iter().map(|v| v.to_f32()).collect();
        let got16 = stream_logits(&l, &p16, &TOKENS);
        let want = stream_logits(&l, &rounded, &TOKENS);
        // Same weights, same f32 arithmetic: only the summation order of
        // the products may differ between the kernels.
        let d = max_abs_diff(&got16, &want);
        assert!(d < 1e-5, "{cell:?}: f16 vs rounded f32 {d}");
        // Against the unrounded weights the f16 rounding shows, but small.
        let d32 = max_abs_diff(&got16, &stream_logits(&l, &p, &TOKENS));
        assert!(d32 > 0.0 && d32 < 1e-2, "{cell:?}: f16 vs f32 {d32}");
    }
}

#[test]
fn probs_are_the_tempered_softmax_of_the_logits() {
    let l = layout(CellKind::Lstm);
    let p = params(&l, 5);
    let model = StreamModel::new(l, &p).unwrap();
    let mut s_logits = std::vec![0.0; state_len(&l)];
    let mut s_probs = s_logits.clone();
    for &t in &TOKENS {
        let mut logits = nans(VOCAB);
        step_logits(
            &mut logits,
            &mut s_logits,
            t,
            &model,
            &mut nans(workspace_len(&l)),
        )
        .unwrap();
        let mut probs = nans(VOCAB);
        step_probs(
            &mut probs,
            &mut s_probs,
            t,
            0.5,
            &model,
            &mut nans(workspace_len(&l)),
        )
        .unwrap();
        let z: Vec<f64> = logits.iter().map(|&v| v as f64 / 0.5).collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        for (j, &pj) in probs.iter().enumerate() {
            assert!((pj as f64 - (z[j] - m).exp() / s).abs() < 1e-6);
        }
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(s_probs, s_logits);
    }
}

#[test]
fn greedy_sample_is_the_argmax_and_sampling_is_seeded() {
    let l = layout(CellKind::GruResetBefore);
    let p = params(&l, 9);
    let model = StreamModel::new(l, &p).unwrap();
    let mut state_a = std::vec![0.0; state_len(&l)];
    let mut state_b = state_a.clone();
    let mut rng = SplitMix(1);
    for &t in &TOKENS {
        let mut logits = nans(VOCAB);
        step_logits(
            &mut logits,
            &mut state_a,
            t,
            &model,
            &mut nans(workspace_len(&l)),
        )
        .unwrap();
        let mut ws = nans(sample_workspace_len(&l));
        let greedy = step_sample(&mut state_b, t, 0.0, 0, &mut rng, &model, &mut ws).unwrap();
        assert_eq!(greedy as usize, sample::argmax(&logits).unwrap());
    }
    let draw = |seed| {
        let mut state = std::vec![0.0; state_len(&l)];
        let mut rng = SplitMix(seed);
        let mut ws = nans(sample_workspace_len(&l));
        let mut tok = 0;
        let mut out = Vec::new();
        for _ in 0..40 {
            tok = step_sample(&mut state, tok, 1.0, 0, &mut rng, &model, &mut ws).unwrap();
            out.push(tok);
        }
        out
    };
    assert_eq!(draw(3), draw(3));
    assert_ne!(draw(3), draw(4));
}

#[test]
fn the_stream_wrapper_matches_the_free_functions() {
    let l = layout(CellKind::GruResetAfter);
    let p = params(&l, 11);
    let want = stream_logits(&l, &p, &TOKENS);
    let mut state = nans(state_len(&l));
    let mut ws = nans(sample_workspace_len(&l));
    let mut s = Stream::new(StreamModel::new(l, &p).unwrap(), &mut state, &mut ws).unwrap();
    for round in 0..2 {
        let mut got = Vec::new();
        for &t in &TOKENS {
            got.extend_from_slice(s.feed(t).unwrap());
        }
        assert_eq!(got, want, "round {round}");
        s.reset();
        assert!(s.state().iter().all(|&v| v == 0.0));
    }
}

#[test]
fn bad_arguments_are_named_and_leave_the_state_alone() {
    let l = layout(CellKind::Lstm);
    let p = params(&l, 2);
    let model = StreamModel::new(l, &p).unwrap();
    let mut state = SplitMix(8).vec(state_len(&l), 1.0);
    let before = state.clone();
    let mut logits = nans(VOCAB);
    let mut ws = nans(workspace_len(&l));
    let length = |e: Result<(), Error>| match e {
        Err(Error::Length { what, .. }) => what,
        other => panic!("expected a length error, got {other:?}"),
    };
    assert_eq!(
        length(step_logits(
            &mut logits[1..],
            &mut state,
            0,
            &model,
            &mut ws
        )),
        "logits"
    );
    assert_eq!(
        length(step_logits(
            &mut logits,
            &mut state[1..],
            0,
            &model,
            &mut ws
        )),
        "state"
    );
    assert_eq!(
        length(step_logits(
            &mut logits,
            &mut state,
            0,
            &model,
            &mut ws[1..]
        )),
        "workspace"
    );
    assert_eq!(
        step_logits(&mut logits, &mut state, VOCAB as u32, &model, &mut ws),
        Err(Error::Token {
            what: "token",
            index: 0,
            value: VOCAB as u32,
            limit: VOCAB
        })
    );
    for t in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert_eq!(
            step_probs(&mut logits, &mut state, 0, t, &model, &mut ws),
            Err(Error::Value {
                what: "temperature"
            })
        );
    }
    let mut sws = nans(sample_workspace_len(&l));
    assert_eq!(
        step_sample(&mut state, 0, -1.0, 0, &mut SplitMix(0), &model, &mut sws),
        Err(Error::Value {
            what: "temperature"
        })
    );
    assert_eq!(state, before);
    // Models: a short flat buffer, a mis-sized dense layer.
    assert!(matches!(
        StreamModel::new(l, &p[1..]),
        Err(Error::Length {
            what: "parameters",
            ..
        })
    ));
    let (cp, dw, db) = l.split(&p).unwrap();
    assert!(matches!(
        StreamModel::from_parts(l, cp, &dw[1..], db),
        Err(Error::Length {
            what: "dense weight",
            ..
        })
    ));
    let mut short = nans(state_len(&l) - 1);
    assert!(matches!(
        Stream::new(model, &mut short, &mut sws),
        Err(Error::Length { what: "state", .. })
    ));
}

#[test]
fn neg_log_prob_is_the_cross_entropy() {
    let logits = [0.5f32, -2.0, 3.0, 1000.0, 999.0];
    let m = 1000.0f64;
    let s: f64 = logits.iter().map(|&v| (v as f64 - m).exp()).sum();
    for t in 0..logits.len() {
        let want = m + s.ln() - logits[t] as f64;
        let got = neg_log_prob(&logits, t as u32).unwrap() as f64;
        assert!(
            (got - want).abs() < 1e-3 * want.max(1.0),
            "{t}: {got} {want}"
        );
    }
    let uniform = [0.25f32; 1027];
    assert!((neg_log_prob(&uniform, 5).unwrap() - 1027f32.ln()).abs() < 1e-4);
    assert!(matches!(
        neg_log_prob(&uniform, 1027),
        Err(Error::Token { what: "target", .. })
    ));
    assert!(matches!(
        neg_log_prob(&[], 0),
        Err(Error::Dim { what: "vocab", .. })
    ));
}

#[test]
fn sizes_follow_the_layout() {
    let l = ModelLayout {
        cell: CellKind::GruResetBefore,
        vocab: 1027,
        hidden: 256,
    };
    assert_eq!(state_len(&l), 256);
    assert_eq!(logits_len(&l), 1027);
    assert_eq!(
        workspace_len(&l),
        cell::step_workspace_len(&l.cell_dims(), 1) + 256
    );
    assert_eq!(sample_workspace_len(&l), workspace_len(&l) + 2 * 1027);
    let lstm = ModelLayout {
        cell: CellKind::Lstm,
        ..l
    };
    assert_eq!(state_len(&lstm), 512);
    let huge = ModelLayout {
        hidden: usize::MAX / 2,
        ..l
    };
    assert_eq!(workspace_len(&huge), usize::MAX);
}

#[test]
fn softmax_over_a_wide_vocabulary_matches_f64() {
    // 1,027 values: the 16-lane partial maxima and sums plus a tail of 3.
    let logits = SplitMix(12).vec(1027, 20.0);
    for scale in [1.0f32, 2.5] {
        let mut probs = logits.clone();
        softmax_in_place(&mut probs, scale);
        let z: Vec<f64> = logits.iter().map(|&v| v as f64 * scale as f64).collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        for (j, &p) in probs.iter().enumerate() {
            let want = (z[j] - m).exp() / s;
            assert!(
                (p as f64 - want).abs() < 1e-6 * want.max(1e-3),
                "{j}: {p} {want}"
            );
        }
        // The maximum sits in the tail: the lanes and the tail both count.
        let mut tail_max = logits.clone();
        tail_max[1026] = 100.0;
        softmax_in_place(&mut tail_max, scale);
        assert!(tail_max[1026] > 0.99);
    }
    let ce = neg_log_prob(&logits, 7).unwrap() as f64;
    let m = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let s: f64 = logits.iter().map(|&v| (v as f64 - m).exp()).sum();
    assert!((ce - (m + s.ln() - logits[7] as f64)).abs() < 1e-4);
}
