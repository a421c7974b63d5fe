//! Corpus loading: the shared Jay Chou corpus as d2l reads it, options, and
//! one test for each kind of bad input (an error value naming the path and
//! the reason, no panic, nothing written).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use recur_data::{Corpus, CorpusOptions, Error, Format, SamplerKind, SizeSource, Vocab};

use common::{patch_declared_sizes, shared_corpus_or_skip, zip_bytes};

/// A scratch directory with `name` written in it.
fn scratch_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    fs::write(&path, bytes).expect("write scratch file");
    (dir, path)
}

/// The names (and sizes) in `dir`, to check that loading wrote nothing.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut names: Vec<(String, u64)> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("dir entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().expect("metadata").len(),
            )
        })
        .collect();
    names.sort();
    names
}

/// Loads `bytes` saved as `name` and returns the error, checking that the
/// message names the file and that the folder is unchanged.
fn load_err(name: &str, bytes: &[u8], options: &CorpusOptions) -> Error {
    let (dir, path) = scratch_file(name, bytes);
    let before = listing(dir.path());
    let err = Corpus::load(&path, options).expect_err("bad input must be refused");
    assert_eq!(listing(dir.path()), before, "loading wrote something");
    assert_eq!(err.path(), Some(path.as_path()), "error names another path");
    let message = err.to_string();
    println!("{name}: {message}");
    assert!(
        message.contains(&path.display().to_string()),
        "message does not name the file: {message}"
    );
    err
}

#[test]
fn jay_chou_d2l_preset_has_1027_characters() {
    let Some(path) = shared_corpus_or_skip("jay_chou_d2l_preset_has_1027_characters") else {
        return;
    };
    let corpus = Corpus::load(&path, &CorpusOptions::d2l()).expect("load");
    assert_eq!(corpus.member(), Some("jaychou_lyrics.txt"));
    assert_eq!(corpus.chars(), 10_000);
    assert_eq!(corpus.text().chars().count(), 10_000);
    assert!(!corpus.text().contains(['\n', '\r']));
    let vocab = Vocab::from_text(corpus.text()).expect("vocab");
    assert_eq!(vocab.len(), 1027);
    // d2l prints the first 20 characters after the clean-up.
    let first: String = corpus.text().chars().take(20).collect();
    assert_eq!(first, "想要有直升机 想要和你飞到宇宙去 想要和");
    // First-appearance order: the first ids count up from 0.
    let ids = vocab.encode(&first).expect("encode");
    assert_eq!(&ids[..6], &[0, 1, 2, 3, 4, 5]);
    assert_eq!(ids[6], 6); // the space
    assert_eq!(ids[7], 0); // 想 again
}

#[test]
fn jay_chou_whole_corpus_by_default() {
    let Some(path) = shared_corpus_or_skip("jay_chou_whole_corpus_by_default") else {
        return;
    };
    let corpus = Corpus::load(&path, &CorpusOptions::default()).expect("load");
    // shared/data/README.md: 171,182 bytes, 63,282 characters.
    assert_eq!(corpus.text().len(), 171_182);
    assert_eq!(corpus.chars(), 63_282);
    assert!(corpus
        .text()
        .starts_with("想要有直升机\n想要和你飞到宇宙去\n"));
    // The member can be named too, with the same result.
    let named = CorpusOptions::default().with_member("jaychou_lyrics.txt");
    assert_eq!(Corpus::load(&path, &named).expect("named member"), corpus);
    // A corpus long enough for d2l's batches.
    let tokens = Vocab::from_text(corpus.text())
        .and_then(|v| v.encode(corpus.text()))
        .expect("encode");
    assert_eq!(tokens.len(), 63_282);
}

#[test]
fn text_file_and_options() {
    let text = "ab\r\ncd\néf";
    let (_dir, path) = scratch_file("small.txt", text.as_bytes());
    let raw = Corpus::load(&path, &CorpusOptions::default()).expect("raw");
    assert_eq!(raw.text(), text);
    assert_eq!(raw.chars(), 9);
    assert_eq!(raw.member(), None);
    assert_eq!(raw.path(), path.as_path());

    let spaced = CorpusOptions {
        newlines_to_spaces: true,
        ..CorpusOptions::default()
    };
    assert_eq!(
        Corpus::load(&path, &spaced).expect("spaced").text(),
        "ab  cd éf"
    );

    // First N characters, not bytes: é is two bytes.
    let first8 = CorpusOptions {
        max_chars: Some(8),
        ..spaced.clone()
    };
    let cut = Corpus::load(&path, &first8).expect("cut");
    assert_eq!(cut.text(), "ab  cd é");
    assert_eq!(cut.chars(), 8);
    // More than there is: the whole text, as Python slicing.
    let many = CorpusOptions {
        max_chars: Some(1000),
        ..spaced
    };
    assert_eq!(Corpus::load(&path, &many).expect("many").chars(), 9);
}

#[test]
fn zip_member_choice() {
    let zip = zip_bytes(&[
        ("docs/", b""),
        ("__MACOSX/._lyrics.txt", b"\x00\x05junk"),
        ("notes.md", b"# notes"),
        ("LYRICS.TXT", "歌词".as_bytes()),
    ]);
    let corpus =
        Corpus::from_bytes("a.zip", Format::Zip, &zip, &CorpusOptions::default()).expect("only");
    assert_eq!(corpus.member(), Some("LYRICS.TXT"));
    assert_eq!(corpus.text(), "歌词");
    // Any file member can be named.
    let named = CorpusOptions::default().with_member("notes.md");
    let corpus = Corpus::from_bytes("a.zip", Format::Zip, &zip, &named).expect("named");
    assert_eq!(corpus.text(), "# notes");
}

#[test]
fn zip_with_several_text_members_needs_a_name() {
    let zip = zip_bytes(&[("a.txt", b"first"), ("b/b.txt", b"second")]);
    match load_err("two.zip", &zip, &CorpusOptions::default()) {
        Error::AmbiguousMember { candidates, .. } => assert_eq!(candidates, ["a.txt", "b/b.txt"]),
        other => panic!("expected AmbiguousMember, got {other:?}"),
    }
    let (_dir, path) = scratch_file("two.zip", &zip);
    let named = CorpusOptions::default().with_member("b/b.txt");
    assert_eq!(Corpus::load(&path, &named).expect("named").text(), "second");
}

#[test]
fn named_member_absent() {
    let zip = zip_bytes(&[("a.txt", b"first"), ("dir/", b"")]);
    for wanted in ["z.txt", "dir/"] {
        let options = CorpusOptions::default().with_member(wanted);
        match load_err("one.zip", &zip, &options) {
            Error::MemberNotFound {
                member, members, ..
            } => {
                assert_eq!(member, wanted);
                assert_eq!(members, ["a.txt", "dir/"]);
            }
            other => panic!("expected MemberNotFound, got {other:?}"),
        }
    }
}

#[test]
fn missing_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nowhere.zip");
    let err = Corpus::load(&path, &CorpusOptions::default()).expect_err("missing");
    assert!(
        matches!(&err, Error::NotFound { path: p } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("nowhere.zip"));
    assert!(!path.exists(), "loading created the file");
}

#[test]
fn directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["corpus.txt", "corpus.zip"] {
        let path = dir.path().join(name);
        fs::create_dir(&path).expect("mkdir");
        let err = Corpus::load(&path, &CorpusOptions::default()).expect_err("directory");
        assert!(
            matches!(&err, Error::IsDirectory { path: p } if p == &path),
            "{err:?}"
        );
    }
}

#[test]
fn empty_file() {
    assert!(matches!(
        load_err("empty.txt", b"", &CorpusOptions::default()),
        Error::Empty { member: None, .. }
    ));
}

#[test]
fn empty_member() {
    let zip = zip_bytes(&[("empty.txt", b"")]);
    match load_err("empty-member.zip", &zip, &CorpusOptions::default()) {
        Error::Empty { member, .. } => assert_eq!(member.as_deref(), Some("empty.txt")),
        other => panic!("expected Empty, got {other:?}"),
    }
}

#[test]
fn empty_zip_file() {
    assert!(matches!(
        load_err("empty.zip", b"", &CorpusOptions::default()),
        Error::BadZip { .. }
    ));
}

#[test]
fn zip_that_is_not_a_zip() {
    let err = load_err(
        "lyrics.zip",
        "想要有直升机\n".repeat(50).as_bytes(),
        &CorpusOptions::default(),
    );
    assert!(matches!(err, Error::BadZip { .. }), "{err:?}");
}

#[test]
fn truncated_zip() {
    let zip = zip_bytes(&[("lyrics.txt", "想要有直升机\n".repeat(200).as_bytes())]);
    // Cut at several places: inside the member data, inside the central
    // directory, and just before the end record's last bytes.
    for keep in [10, zip.len() / 2, zip.len() - 30, zip.len() - 1] {
        let err = load_err("cut.zip", &zip[..keep], &CorpusOptions::default());
        assert!(matches!(err, Error::BadZip { .. }), "keep {keep}: {err:?}");
    }
}

#[test]
fn zip_with_no_text_member() {
    let zip = zip_bytes(&[("lyrics.md", b"words"), ("txt/", b"")]);
    match load_err("no-text.zip", &zip, &CorpusOptions::default()) {
        Error::NoTextMember { members, .. } => assert_eq!(members, ["lyrics.md", "txt/"]),
        other => panic!("expected NoTextMember, got {other:?}"),
    }
}

#[test]
fn invalid_utf8_gives_the_byte_offset() {
    let mut bytes = "想要".as_bytes().to_vec(); // 6 bytes
    bytes.extend_from_slice(b"ok\xff\xfe rest");
    match load_err("bad.txt", &bytes, &CorpusOptions::default()) {
        Error::InvalidUtf8 { offset, member, .. } => {
            assert_eq!(offset, 8);
            assert_eq!(member, None);
        }
        other => panic!("expected InvalidUtf8, got {other:?}"),
    }
    // A sequence cut short at the end, inside a zip member; d2l decodes the
    // whole text before cutting it, so this fails even with max_chars.
    let mut cut = "想要".as_bytes().to_vec();
    cut.pop();
    let zip = zip_bytes(&[("lyrics.txt", &cut)]);
    match load_err("bad.zip", &zip, &CorpusOptions::d2l()) {
        Error::InvalidUtf8 { offset, member, .. } => {
            assert_eq!(offset, 3);
            assert_eq!(member.as_deref(), Some("lyrics.txt"));
        }
        other => panic!("expected InvalidUtf8, got {other:?}"),
    }
}

#[test]
fn corpus_shorter_than_one_batch() {
    // 20 characters; B = 4, T = 5: random needs 21, consecutive 24.
    let text = "abcdefghijklmnopqrst";
    let (_dir, path) = scratch_file("short.txt", text.as_bytes());
    let corpus = Corpus::load(&path, &CorpusOptions::default()).expect("load");
    let vocab = Vocab::from_text(corpus.text()).expect("vocab");
    for (kind, needed) in [(SamplerKind::Random, 21), (SamplerKind::Consecutive, 24)] {
        let tokens = vocab.encode(corpus.text()).expect("encode");
        let err = recur_data::Sampler::new(kind, tokens, 4, 5, 0)
            .expect_err("too short")
            .with_path(corpus.path());
        match &err {
            Error::TooShort {
                path: Some(p),
                sampler,
                needed: n,
                actual: 20,
                batch_size: 4,
                num_steps: 5,
            } => {
                assert_eq!(p, &path);
                assert_eq!(*sampler, kind);
                assert_eq!(*n, needed);
            }
            other => panic!("expected TooShort, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("short.txt") && message.contains(&needed.to_string()));
    }
}

#[test]
fn member_declaring_a_size_over_the_limit() {
    let zip = zip_bytes(&[("big.txt", "a".repeat(5000).as_bytes())]);
    let options = CorpusOptions {
        max_bytes: 4096,
        ..CorpusOptions::default()
    };
    match load_err("big.zip", &zip, &options) {
        Error::TooLarge {
            member,
            size,
            limit,
            source,
            ..
        } => {
            assert_eq!(member.as_deref(), Some("big.txt"));
            assert_eq!((size, limit, source), (5000, 4096, SizeSource::Declared));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // At the limit it loads.
    let at_limit = CorpusOptions {
        max_bytes: 5000,
        ..CorpusOptions::default()
    };
    let (_dir, path) = scratch_file("big.zip", &zip);
    assert_eq!(
        Corpus::load(&path, &at_limit).expect("at limit").chars(),
        5000
    );
}

#[test]
fn member_lying_about_its_size_is_refused() {
    // 1 MiB of 'a' deflates to about 1 KiB; the headers claim 100 bytes, under
    // the limit, so only the decompressed bytes can tell.
    let mut zip = zip_bytes(&[("bomb.txt", &vec![b'a'; 1 << 20])]);
    patch_declared_sizes(&mut zip, 100);
    let options = CorpusOptions {
        max_bytes: 4096,
        ..CorpusOptions::default()
    };
    let err = load_err("bomb.zip", &zip, &options);
    match &err {
        // The zip reader stops at the declared size; recur-data's own count
        // stops at the limit. Either way nothing past the limit is kept.
        Error::BadZip { reason, .. } => assert!(reason.contains("bomb.txt"), "{reason}"),
        Error::TooLarge {
            source: SizeSource::Read,
            ..
        } => {}
        other => panic!("expected BadZip or TooLarge, got {other:?}"),
    }
}

#[test]
fn text_file_over_the_limit() {
    let options = CorpusOptions {
        max_bytes: 10,
        ..CorpusOptions::default()
    };
    match load_err("long.txt", b"eleven byte", &options) {
        Error::TooLarge {
            size: 11,
            limit: 10,
            source: SizeSource::File,
            member: None,
            ..
        } => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[cfg(unix)]
#[test]
fn endless_special_file_is_cut_at_the_limit() {
    // /dev/zero reports a size of 0 and never ends: only counting the bytes
    // read stops it.
    let path = Path::new("/dev/zero");
    if !path.exists() {
        println!("endless_special_file_is_cut_at_the_limit: skipped: no /dev/zero");
        return;
    }
    let options = CorpusOptions {
        max_bytes: 1 << 16,
        ..CorpusOptions::default()
    };
    match Corpus::load(path, &options).expect_err("endless") {
        Error::TooLarge {
            size,
            limit,
            source: SizeSource::Read,
            ..
        } => assert_eq!((size, limit), ((1 << 16) + 1, 1 << 16)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn refused_options() {
    let (_dir, path) = scratch_file("ok.txt", b"fine");
    for options in [
        CorpusOptions {
            max_chars: Some(0),
            ..CorpusOptions::default()
        },
        CorpusOptions {
            max_bytes: 0,
            ..CorpusOptions::default()
        },
    ] {
        let err = Corpus::load(&path, &options).expect_err("refused option");
        assert!(matches!(err, Error::InvalidOption { .. }), "{err:?}");
    }
}

#[test]
fn errors_are_std_errors() {
    let err: Box<dyn std::error::Error> = Box::new(Error::EmptyVocab);
    assert_eq!(err.to_string(), "vocabulary would be empty");
}
