//! Property tests: sampler invariants over arbitrary corpus lengths, B and
//! T; vocabulary round trips; no panic on arbitrary bytes as text or zip.
//!
//! The samplers run on the identity corpus `0..L`, so every token id is its
//! own position and a batch shows exactly where it read.

mod common;

use std::collections::HashSet;

use proptest::prelude::*;
use recur_data::{Corpus, CorpusOptions, Error, Format, Sampler, SamplerKind, UnknownChars, Vocab};

fn kind() -> impl Strategy<Value = SamplerKind> {
    prop_oneof![Just(SamplerKind::Random), Just(SamplerKind::Consecutive)]
}

/// Checks one batch of a sampler over `0..len`, time-major (T, B): every
/// row reads `T` consecutive positions, the targets are the inputs shifted by
/// one, and nothing lies past the end. Returns the rows' start positions.
fn check_batch(
    inputs: &[u32],
    targets: &[u32],
    b_len: usize,
    t_len: usize,
    len: usize,
) -> Vec<u32> {
    assert_eq!(inputs.len(), b_len * t_len);
    assert_eq!(targets.len(), b_len * t_len);
    for b in 0..b_len {
        for t in 0..t_len {
            let x = inputs[t * b_len + b];
            assert_eq!(x, inputs[b] + t as u32, "row {b} is not contiguous");
            assert_eq!(targets[t * b_len + b], x + 1, "Y is not X shifted by one");
            assert!((x as usize + 1) < len, "read past the end");
        }
    }
    inputs[..b_len].to_vec()
}

proptest! {
    #[test]
    fn sampler_invariants(
        len in 0usize..3000,
        b_len in 1usize..12,
        t_len in 1usize..40,
        kind in kind(),
        seed in any::<u64>(),
        epoch in 0u64..1000,
    ) {
        let tokens: Vec<u32> = (0..len as u32).collect();
        let needed = kind.min_tokens(b_len, t_len).expect("small dims");
        let mut sampler = match Sampler::new(kind, tokens, b_len, t_len, seed) {
            Ok(sampler) => sampler,
            Err(Error::TooShort { needed: n, actual, .. }) => {
                prop_assert!(len < needed, "refused a corpus of {} >= {}", len, needed);
                prop_assert_eq!((n, actual), (needed, len));
                return Ok(());
            }
            Err(other) => panic!("unexpected error {other:?}"),
        };
        prop_assert!(len >= needed);
        let epoch_size = match kind {
            SamplerKind::Random => (len - 1) / t_len / b_len,
            SamplerKind::Consecutive => (len / b_len - 1) / t_len,
        };
        prop_assert_eq!(sampler.epoch_size(), epoch_size);
        prop_assert!(epoch_size >= 1);
        sampler.set_epoch(epoch);

        let mut seen = HashSet::new();
        let mut previous: Option<Vec<u32>> = None;
        for i in 0..epoch_size {
            let batch = sampler.batch(i).expect("batch");
            let starts = check_batch(batch.inputs, batch.targets, b_len, t_len, len);
            match kind {
                SamplerKind::Random => {
                    for &start in &starts {
                        let start = start as usize;
                        prop_assert_eq!(start % t_len, 0);
                        prop_assert!(start / t_len < (len - 1) / t_len, "not an example");
                        prop_assert!(seen.insert(start), "example at {} twice in an epoch", start);
                    }
                }
                SamplerKind::Consecutive => {
                    let row_len = len / b_len;
                    for (b, &start) in starts.iter().enumerate() {
                        prop_assert_eq!(start as usize, b * row_len + i * t_len);
                        // Rows never spill into the next row.
                        prop_assert!((start as usize) + t_len < (b + 1) * row_len);
                        if let Some(prev) = &previous {
                            prop_assert_eq!(start, prev[b] + t_len as u32, "row {} does not continue", b);
                        }
                    }
                    previous = Some(starts);
                }
            }
        }
    }

    #[test]
    fn encode_decode_round_trip(text in "\\PC{1,200}", other in "\\PC{0,50}") {
        let vocab = Vocab::from_text(&text).expect("non-empty text");
        let ids = vocab.encode(&text).expect("own text");
        prop_assert_eq!(vocab.decode(&ids).expect("decode"), text.clone());
        // decode then encode: the identity on every id.
        let all: Vec<u32> = (0..vocab.len() as u32).collect();
        let chars = vocab.decode(&all).expect("every id");
        prop_assert_eq!(vocab.encode(&chars).expect("every char"), all);
        // The checkpoint form gives the same vocabulary.
        let loaded: Vocab = vocab.to_string().parse().expect("parse");
        prop_assert_eq!(&loaded, &vocab);
        // Foreign text: either encodes, or names exactly the unknown chars.
        let unknown: Vec<char> = {
            let mut seen = HashSet::new();
            other.chars().filter(|c| vocab.id(*c).is_none() && seen.insert(*c)).collect()
        };
        match vocab.encode(&other) {
            Ok(ids) => prop_assert!(unknown.is_empty() && ids.len() == other.chars().count()),
            Err(Error::UnknownChars { chars, .. }) => prop_assert_eq!(chars, unknown.clone()),
            Err(e) => panic!("unexpected {e:?}"),
        }
        let mut skipped = Vec::new();
        vocab.encode_with(&mut skipped, &other, UnknownChars::Skip).expect("skip");
        prop_assert_eq!(skipped.len(), other.chars().count() - other.chars().filter(|c| unknown.contains(c)).count());
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        newlines in any::<bool>(),
        max_chars in proptest::option::of(1usize..100),
        max_bytes in 1u64..1000,
    ) {
        let options = CorpusOptions { member: None, newlines_to_spaces: newlines, max_chars, max_bytes };
        for format in [Format::Text, Format::Zip] {
            match Corpus::from_bytes("any", format, &bytes, &options) {
                Ok(corpus) => {
                    prop_assert!(!corpus.text().is_empty());
                    prop_assert!(corpus.text().len() as u64 <= max_bytes);
                    prop_assert_eq!(corpus.chars(), corpus.text().chars().count());
                }
                Err(err) => prop_assert!(!err.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn damaged_zips_never_panic(
        text in "\\PC{1,300}",
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut zip = common::zip_bytes(&[("lyrics.txt", text.as_bytes()), ("notes/", b"")]);
        for (at, byte) in flips {
            let i = at.index(zip.len());
            zip[i] ^= byte;
        }
        if truncate {
            zip.truncate(cut.index(zip.len()));
        }
        match Corpus::from_bytes("damaged.zip", Format::Zip, &zip, &CorpusOptions::default()) {
            Ok(corpus) => prop_assert!(!corpus.text().is_empty()),
            Err(err) => prop_assert!(err.to_string().starts_with("damaged.zip")),
        }
    }
}
