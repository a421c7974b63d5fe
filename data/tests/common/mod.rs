//! Helpers shared by the integration tests: the shared corpus's path and
//! zip archives built in memory.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{Cursor, Write};
use std::path::PathBuf;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// `../shared/data/jaychou_lyrics.txt.zip` from the repository root.
pub fn shared_corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/jaychou_lyrics.txt.zip")
}

/// The shared corpus's path, or `None` after printing why the calling test
/// is skipped.
pub fn shared_corpus_or_skip(test: &str) -> Option<PathBuf> {
    let path = shared_corpus();
    if path.is_file() {
        Some(path)
    } else {
        println!("{test}: skipped: {} is absent", path.display());
        None
    }
}

/// A zip archive holding `entries` (name, bytes), deflated; a name ending in
/// `/` is a directory.
pub fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for (name, bytes) in entries {
        if name.ends_with('/') {
            writer.add_directory(*name, options).expect("add directory");
        } else {
            writer.start_file(*name, options).expect("start file");
            writer.write_all(bytes).expect("write member");
        }
    }
    writer.finish().expect("finish zip").into_inner()
}

/// Overwrites, in every local and central header of `zip`, the declared
/// uncompressed size of the members with `size`: an archive that lies about
/// how much its members decompress to.
pub fn patch_declared_sizes(zip: &mut [u8], size: u32) {
    let local = [0x50, 0x4b, 0x03, 0x04];
    let central = [0x50, 0x4b, 0x01, 0x02];
    let mut i = 0;
    let mut patched = 0;
    while i + 4 <= zip.len() {
        let field = if zip[i..i + 4] == local {
            Some(i + 22)
        } else if zip[i..i + 4] == central {
            Some(i + 24)
        } else {
            None
        };
        if let Some(at) = field {
            zip[at..at + 4].copy_from_slice(&size.to_le_bytes());
            patched += 1;
            i += 4;
        } else {
            i += 1;
        }
    }
    assert!(patched >= 2, "no headers found to patch");
}
