//! The samplers against d2l's printed examples, the (T, B) layout, seeding
//! and resuming, and bad dimensions.

mod common;

use std::collections::BTreeSet;

use recur_data::{Corpus, CorpusOptions, Error, Sampler, SamplerKind, Vocab};

/// d2l's `my_seq = list(range(30))`.
fn my_seq() -> Vec<u32> {
    (0..30).collect()
}

/// The (B, T) rows of a (T, B) time-major slice, as d2l prints `X`.
fn rows(time_major: &[u32], batch_size: usize, num_steps: usize) -> Vec<Vec<u32>> {
    assert_eq!(time_major.len(), batch_size * num_steps);
    (0..batch_size)
        .map(|b| {
            (0..num_steps)
                .map(|t| time_major[t * batch_size + b])
                .collect()
        })
        .collect()
}

#[test]
fn consecutive_matches_d2l_printout() {
    // d2l: data_iter_consecutive(my_seq, batch_size=2, num_steps=6).
    let mut sampler = Sampler::new(SamplerKind::Consecutive, my_seq(), 2, 6, 0).expect("sampler");
    assert_eq!(sampler.epoch_size(), 2);
    let expected_x = [
        [[0, 1, 2, 3, 4, 5], [15, 16, 17, 18, 19, 20]],
        [[6, 7, 8, 9, 10, 11], [21, 22, 23, 24, 25, 26]],
    ];
    for (i, x) in expected_x.iter().enumerate() {
        let batch = sampler.batch(i).expect("batch");
        assert_eq!((batch.num_steps, batch.batch_size), (6, 2));
        assert_eq!(rows(batch.inputs, 2, 6), x.map(|r| r.to_vec()));
        let y = x.map(|r| r.map(|v| v + 1).to_vec());
        assert_eq!(rows(batch.targets, 2, 6), y);
    }
    // Time-major: the first B entries are step 0 of each row.
    let batch = sampler.batch(0).expect("batch");
    assert_eq!(&batch.inputs[..4], &[0, 15, 1, 16]);
}

#[test]
fn random_matches_d2l_semantics() {
    // d2l: data_iter_random(my_seq, batch_size=2, num_steps=6): 4 examples
    // starting at 0, 6, 12, 18; 2 batches; every example once.
    for seed in 0..20 {
        let mut sampler = Sampler::new(SamplerKind::Random, my_seq(), 2, 6, seed).expect("sampler");
        assert_eq!(sampler.epoch_size(), 2);
        let mut starts = BTreeSet::new();
        for i in 0..2 {
            let batch = sampler.batch(i).expect("batch");
            for (x, y) in rows(batch.inputs, 2, 6)
                .into_iter()
                .zip(rows(batch.targets, 2, 6))
            {
                assert_eq!(x[0] % 6, 0, "an example starts at a multiple of T");
                assert_eq!(x, (x[0]..x[0] + 6).collect::<Vec<_>>());
                assert_eq!(y, (x[0] + 1..x[0] + 7).collect::<Vec<_>>());
                assert!(starts.insert(x[0]), "example {} twice", x[0]);
            }
        }
        assert_eq!(starts, BTreeSet::from([0, 6, 12, 18]));
    }
}

#[test]
fn random_orders_depend_on_seed_and_epoch_only() {
    let tokens: Vec<u32> = (0..10_000).collect();
    let order = |sampler: &mut Sampler| -> Vec<u32> {
        (0..sampler.epoch_size())
            .flat_map(|i| sampler.batch(i).expect("batch").inputs[..32].to_vec())
            .collect()
    };
    let mut a = Sampler::new(SamplerKind::Random, tokens.clone(), 32, 35, 7).expect("a");
    let mut b = Sampler::new(SamplerKind::Random, tokens.clone(), 32, 35, 7).expect("b");
    let mut other_seed = Sampler::new(SamplerKind::Random, tokens, 32, 35, 8).expect("c");
    let epoch0 = order(&mut a);
    assert_eq!(epoch0, order(&mut b), "same seed, same order");
    assert_ne!(
        epoch0,
        order(&mut other_seed),
        "another seed, another order"
    );
    a.set_epoch(1);
    let epoch1 = order(&mut a);
    assert_ne!(epoch0, epoch1, "each epoch reshuffles");
    // Any history: jumping to an epoch gives the same order.
    b.set_epoch(5);
    b.set_epoch(1);
    assert_eq!(order(&mut b), epoch1);
    b.set_epoch(0);
    assert_eq!(order(&mut b), epoch0);
}

#[test]
fn resuming_mid_epoch_is_bit_identical() {
    let tokens: Vec<u32> = (0..5_000).map(|i| (i * 7919 % 1000) as u32).collect();
    for kind in SamplerKind::ALL {
        // An uninterrupted run of 3 epochs.
        let mut straight = Sampler::new(kind, tokens.clone(), 4, 9, 99).expect("sampler");
        let mut seen = Vec::new();
        for epoch in 0..3 {
            straight.set_epoch(epoch);
            for i in 0..straight.epoch_size() {
                let batch = straight.batch(i).expect("batch");
                seen.push((batch.inputs.to_vec(), batch.targets.to_vec()));
            }
        }
        // Stop at (epoch 1, batch 5); a new sampler from the checkpoint.
        let per_epoch = straight.epoch_size();
        let mut resumed = Sampler::new(kind, tokens.clone(), 4, 9, straight.seed()).expect("new");
        let mut replay = seen[..per_epoch + 5].to_vec();
        for epoch in 1..3 {
            resumed.set_epoch(epoch);
            let first = if epoch == 1 { 5 } else { 0 };
            for i in first..resumed.epoch_size() {
                let batch = resumed.batch(i).expect("batch");
                replay.push((batch.inputs.to_vec(), batch.targets.to_vec()));
            }
        }
        assert_eq!(replay, seen, "{}", kind.name());
    }
}

#[test]
fn batch_into_fills_caller_buffers() {
    let mut sampler = Sampler::new(SamplerKind::Random, my_seq(), 2, 6, 3).expect("sampler");
    let mut inputs = vec![u32::MAX; 12];
    let mut targets = vec![u32::MAX; 12];
    sampler
        .batch_into(&mut inputs, &mut targets, 1)
        .expect("batch_into");
    let batch = sampler.batch(1).expect("batch");
    assert_eq!(inputs, batch.inputs);
    assert_eq!(targets, batch.targets);
    assert!(!inputs.contains(&u32::MAX));
    for (b, &first) in inputs[..2].iter().enumerate() {
        let start = sampler.sequence_start(1, b).expect("in range") as u32;
        assert_eq!(first, start);
    }
    assert_eq!(sampler.sequence_start(2, 0), None);
    assert_eq!(sampler.sequence_start(0, 2), None);
}

#[test]
fn bad_batch_requests_are_refused() {
    let mut sampler = Sampler::new(SamplerKind::Consecutive, my_seq(), 2, 6, 0).expect("sampler");
    match sampler.batch(2) {
        Err(Error::BatchIndex {
            index: 2,
            epoch_size: 2,
        }) => {}
        other => panic!("expected BatchIndex, got {other:?}"),
    }
    let mut short = vec![0; 11];
    let mut right = vec![0; 12];
    assert!(matches!(
        sampler.batch_into(&mut short, &mut right, 0),
        Err(Error::Length {
            what: "inputs",
            expected: 12,
            actual: 11
        })
    ));
    assert!(matches!(
        sampler.batch_into(&mut right, &mut short, 0),
        Err(Error::Length {
            what: "targets",
            ..
        })
    ));
    // The sampler's own buffers survive a refused request.
    assert_eq!(sampler.batch(0).expect("batch").inputs.len(), 12);
}

#[test]
fn bad_dimensions_are_refused() {
    for kind in SamplerKind::ALL {
        for (b, t, what) in [
            (0, 6, "batch_size"),
            (2, 0, "num_steps"),
            (usize::MAX, 2, "batch_size * num_steps"),
        ] {
            match Sampler::new(kind, my_seq(), b, t, 0) {
                Err(Error::Dim { what: w, .. }) => assert_eq!(w, what),
                other => panic!("expected Dim, got {other:?}"),
            }
        }
    }
    // Exactly one batch's worth of tokens is enough, one fewer is not.
    for kind in SamplerKind::ALL {
        let needed = kind.min_tokens(4, 5).expect("min");
        let tokens: Vec<u32> = (0..needed as u32).collect();
        let sampler = Sampler::new(kind, tokens.clone(), 4, 5, 0).expect("enough");
        assert_eq!(sampler.epoch_size(), 1);
        let err = Sampler::new(kind, tokens[1..].to_vec(), 4, 5, 0).expect_err("short");
        assert!(matches!(err, Error::TooShort { path: None, .. }), "{err:?}");
    }
}

#[test]
fn kinds_have_names() {
    for kind in SamplerKind::ALL {
        assert_eq!(SamplerKind::from_name(kind.name()), Some(kind));
    }
    assert_eq!(SamplerKind::from_name("shuffled"), None);
    assert!(SamplerKind::Consecutive.carries_state());
    assert!(!SamplerKind::Random.carries_state());
}

#[test]
fn jay_chou_d2l_shape() {
    let Some(path) = common::shared_corpus_or_skip("jay_chou_d2l_shape") else {
        return;
    };
    let corpus = Corpus::load(&path, &CorpusOptions::d2l()).expect("load");
    let vocab = Vocab::from_text(corpus.text()).expect("vocab");
    let tokens = vocab.encode(corpus.text()).expect("encode");
    // B = 32, T = 35: random (9,999 / 35 = 285 examples) / 32 = 8 batches;
    // consecutive rows of 10,000 / 32 = 312, (312 − 1) / 35 = 8 batches.
    for kind in SamplerKind::ALL {
        let mut sampler = Sampler::new(kind, tokens.clone(), 32, 35, 0).expect("sampler");
        assert_eq!(sampler.epoch_size(), 8, "{}", kind.name());
        let batch = sampler.batch(7).expect("last batch");
        assert!(batch.inputs.iter().all(|&id| (id as usize) < vocab.len()));
        vocab.decode(batch.targets).expect("targets decode");
    }
}
