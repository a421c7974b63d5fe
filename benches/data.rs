//! recur-data: loading and encoding the shared Jay Chou corpus, and batches
//! per second of both samplers at d2l's shape (B = 32, T = 35, first 10,000
//! characters). Skipped, saying so, when ../shared/data is absent.
//!
//! `cargo bench --bench data`

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use recur_data::{Corpus, CorpusOptions, Sampler, SamplerKind, Vocab};

const BATCH_SIZE: usize = 32;
const NUM_STEPS: usize = 35;

fn shared_corpus() -> Option<PathBuf> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/jaychou_lyrics.txt.zip");
    if path.is_file() {
        Some(path)
    } else {
        println!("data bench: skipped: {} is absent", path.display());
        None
    }
}

fn corpus(c: &mut Criterion) {
    let Some(path) = shared_corpus() else { return };
    let mut group = c.benchmark_group("corpus");
    group.throughput(Throughput::Elements(1));
    group.bench_function("load d2l (zip, newlines, first 10,000 chars)", |b| {
        b.iter(|| Corpus::load(black_box(&path), &CorpusOptions::d2l()).expect("load"))
    });
    group.bench_function("load whole corpus (zip, 63,282 chars)", |b| {
        b.iter(|| Corpus::load(black_box(&path), &CorpusOptions::default()).expect("load"))
    });
    group.finish();

    let mut group = c.benchmark_group("vocab");
    for (name, options) in [
        ("d2l 10,000 chars", CorpusOptions::d2l()),
        ("whole 63,282 chars", CorpusOptions::default()),
    ] {
        let corpus = Corpus::load(&path, &options).expect("load");
        let vocab = Vocab::from_text(corpus.text()).expect("vocab");
        group.throughput(Throughput::Elements(corpus.chars() as u64));
        group.bench_function(format!("build vocab, {name}"), |b| {
            b.iter(|| Vocab::from_text(black_box(corpus.text())).expect("vocab"))
        });
        group.bench_function(format!("encode, {name}"), |b| {
            b.iter(|| vocab.encode(black_box(corpus.text())).expect("encode"))
        });
    }
    group.finish();
}

fn samplers(c: &mut Criterion) {
    let Some(path) = shared_corpus() else { return };
    let corpus = Corpus::load(&path, &CorpusOptions::d2l()).expect("load");
    let vocab = Vocab::from_text(corpus.text()).expect("vocab");
    let tokens = vocab.encode(corpus.text()).expect("encode");

    let mut group = c.benchmark_group("sampler B32 T35 10k chars");
    for kind in SamplerKind::ALL {
        let mut sampler =
            Sampler::new(kind, tokens.clone(), BATCH_SIZE, NUM_STEPS, 0).expect("sampler");
        let epoch_size = sampler.epoch_size();
        // One element = one batch; an iteration is a whole epoch, including
        // the random sampler's reshuffle, as the trainer runs it.
        group.throughput(Throughput::Elements(epoch_size as u64));
        let mut epoch = 0u64;
        group.bench_function(
            format!("{} epoch ({epoch_size} batches)", kind.name()),
            |b| {
                b.iter(|| {
                    epoch += 1;
                    sampler.set_epoch(epoch);
                    let mut checksum = 0u32;
                    for i in 0..epoch_size {
                        let batch = sampler.batch(i).expect("batch");
                        checksum = checksum.wrapping_add(batch.inputs[0] ^ batch.targets[1]);
                    }
                    black_box(checksum)
                })
            },
        );
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = corpus, samplers
}
criterion_main!(benches);
