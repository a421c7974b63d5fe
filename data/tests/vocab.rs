//! The vocabulary: order, encode / decode, the serialised form, unknown
//! characters.

mod common;

use recur_data::{Corpus, CorpusOptions, Error, UnknownChars, Vocab};

#[test]
fn ids_follow_first_appearance() {
    let vocab = Vocab::from_text("banana band").expect("vocab");
    assert_eq!(vocab.chars(), &['b', 'a', 'n', ' ', 'd']);
    assert_eq!(vocab.len(), 5);
    assert!(!vocab.is_empty());
    assert_eq!(vocab.id('n'), Some(2));
    assert_eq!(vocab.id('z'), None);
    assert_eq!(vocab.char(4), Some('d'));
    assert_eq!(vocab.char(5), None);
    assert_eq!(
        vocab.encode("band").expect("encode"),
        [0, 1, 2, 4],
        "ids are the positions of first appearance"
    );
}

#[test]
fn encode_then_decode_is_the_identity() {
    let text = "想要有直升机 想要和你飞到宇宙去\r\n🎵 x";
    let vocab = Vocab::from_text(text).expect("vocab");
    let ids = vocab.encode(text).expect("encode");
    assert_eq!(ids.len(), text.chars().count());
    assert_eq!(vocab.decode(&ids).expect("decode"), text);
}

#[test]
fn serialised_form_round_trips() {
    let vocab = Vocab::from_text("想要\n有 直升机\"\\").expect("vocab");
    let saved = vocab.to_string();
    assert_eq!(saved, "想要\n有 直升机\"\\");
    let loaded: Vocab = saved.parse().expect("parse");
    assert_eq!(loaded, vocab);
    for ch in vocab.chars() {
        assert_eq!(loaded.id(*ch), vocab.id(*ch));
    }
}

#[test]
fn serialised_form_with_duplicates_is_refused() {
    match "abcb".parse::<Vocab>() {
        Err(Error::DuplicateChar {
            ch: 'b',
            first: 1,
            second: 3,
        }) => {}
        other => panic!("expected DuplicateChar, got {other:?}"),
    }
    assert!(matches!("".parse::<Vocab>(), Err(Error::EmptyVocab)));
    assert!(matches!(Vocab::from_text(""), Err(Error::EmptyVocab)));
    assert!(matches!(
        Vocab::from_chars(['x', 'x']),
        Err(Error::DuplicateChar { .. })
    ));
}

#[test]
fn unknown_characters_are_named() {
    let vocab = Vocab::from_text("分开我").expect("vocab");
    let err = vocab.encode("分开 你好你").expect_err("unknown");
    match &err {
        Error::UnknownChars {
            chars,
            first_position,
        } => {
            assert_eq!(chars, &[' ', '你', '好']);
            assert_eq!(*first_position, 2);
        }
        other => panic!("expected UnknownChars, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("'你'") && message.contains("'好'"),
        "{message}"
    );
}

#[test]
fn unknown_character_policies() {
    let vocab = Vocab::from_text("ab ").expect("vocab");
    let mut out = vec![9];
    vocab
        .encode_with(&mut out, "a?b!", UnknownChars::Skip)
        .expect("skip");
    assert_eq!(out, [9, 0, 1]);
    out.clear();
    vocab
        .encode_with(&mut out, "a?b!", UnknownChars::Replace(' '))
        .expect("replace");
    assert_eq!(out, [0, 2, 1, 2]);
    // Rejecting leaves the buffer as it was.
    let err = vocab
        .encode_with(&mut out, "ba?", UnknownChars::Reject)
        .expect_err("reject");
    assert!(matches!(err, Error::UnknownChars { .. }));
    assert_eq!(out, [0, 2, 1, 2]);
    // A replacement outside the vocabulary is refused up front.
    let err = vocab
        .encode_with(&mut out, "ab", UnknownChars::Replace('?'))
        .expect_err("bad replacement");
    assert!(matches!(err, Error::InvalidOption { .. }), "{err:?}");
    assert_eq!(out, [0, 2, 1, 2]);
}

#[test]
fn ids_outside_the_vocabulary_are_refused() {
    let vocab = Vocab::from_text("ab").expect("vocab");
    let mut text = String::from("keep");
    match vocab.decode_into(&mut text, &[0, 1, 2, 0]) {
        Err(Error::UnknownId {
            index: 2,
            id: 2,
            vocab_size: 2,
        }) => {}
        other => panic!("expected UnknownId, got {other:?}"),
    }
    assert_eq!(text, "keep");
    assert!(vocab.decode(&[u32::MAX]).is_err());
}

#[test]
fn jay_chou_vocab_survives_a_checkpoint() {
    let Some(path) = common::shared_corpus_or_skip("jay_chou_vocab_survives_a_checkpoint") else {
        return;
    };
    let corpus = Corpus::load(&path, &CorpusOptions::d2l()).expect("load");
    let vocab = Vocab::from_text(corpus.text()).expect("vocab");
    let loaded: Vocab = vocab.to_string().parse().expect("parse");
    assert_eq!(loaded.len(), 1027);
    assert_eq!(
        loaded.encode(corpus.text()).expect("encode"),
        vocab.encode(corpus.text()).expect("encode")
    );
}
