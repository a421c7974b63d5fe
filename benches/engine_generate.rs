//! Generation on the device, µs per generated character at batch 1 for
//! d2l's model (H 256, vocabulary 1,027): prefix of 10 characters, then
//! 500 generated, greedy and with temperature, every cell, f32 and f16
//! (target ≤ 5 µs per character). Criterion; prints `skipped: no CUDA device`
//! without a GPU. `BENCH_SMOKE=1` runs every summary line for a small model
//! (H 64, vocabulary 40, 20 characters), once each and without criterion:
//! not a measurement, a check that the bench runs (CI runs it on the CPU
//! emulator, so that a GPU session does not find a panic).

use std::time::{Duration, Instant};

use criterion::Criterion;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::core::{CellKind, ModelLayout};
use recur::engine::{DeviceModel, GenBuffers, GenPath, Gpu, Precision, Sampling};

const PREFIX: usize = 10;

/// The model's shape and the run lengths: the published ones, or small ones
/// for `BENCH_SMOKE=1`.
#[derive(Clone, Copy)]
struct Scale {
    smoke: bool,
    hidden: usize,
    vocab: usize,
    /// Characters generated after the prefix.
    count: usize,
    /// Timed generations per line.
    runs: usize,
}

impl Scale {
    fn from_env() -> Self {
        if std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1") {
            Scale {
                smoke: true,
                hidden: 64,
                vocab: 40,
                count: 20,
                runs: 1,
            }
        } else {
            Scale {
                smoke: false,
                hidden: 256,
                vocab: 1027,
                count: 500,
                runs: 20,
            }
        }
    }

    /// The bench's model for `cell` at `precision`, with a prefix set.
    fn model(self, gpu: &Gpu, cell: CellKind, precision: Precision) -> (DeviceModel, GenBuffers) {
        let layout = ModelLayout {
            cell,
            vocab: self.vocab,
            hidden: self.hidden,
        };
        let mut rng = StdRng::seed_from_u64(5);
        let k = 1.0 / (self.hidden as f32).sqrt();
        let params: Vec<f32> = (0..layout.len()).map(|_| rng.random_range(-k..k)).collect();
        let model = DeviceModel::upload(gpu, layout, &params, precision).unwrap();
        let mut bufs = GenBuffers::new(&model, 1, PREFIX, self.count).unwrap();
        let v = self.vocab as u32;
        let prefix: Vec<u32> = (0..PREFIX as u32).map(|i| i * 7 % v).collect();
        bufs.set_prefix(&prefix).unwrap();
        (model, bufs)
    }
}

fn main() {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) if e.is_no_device() => {
            println!("skipped: no CUDA device");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    println!("device: {}", gpu.name());
    let scale = Scale::from_env();
    let (h, v, count, runs) = (scale.hidden, scale.vocab, scale.count, scale.runs);
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut summary = Vec::new();
    for precision in [Precision::F32, Precision::F16] {
        for cell in CellKind::ALL {
            let (model, mut bufs) = scale.model(&gpu, cell, precision);
            for (label, sampling) in [
                ("greedy", Sampling::Greedy),
                (
                    "t0.8",
                    Sampling::Temperature {
                        temperature: 0.8,
                        seed: 7,
                    },
                ),
            ] {
                let name = format!("generate_b1_h256/{}/{label}/{precision:?}", cell.name());
                let mut path = None;
                if !scale.smoke {
                    c.bench_function(&name, |bch| {
                        bch.iter(|| {
                            path = Some(model.generate(&mut bufs, sampling, false).unwrap());
                            gpu.synchronize().unwrap();
                        })
                    });
                }
                for _ in 0..3 {
                    path = Some(model.generate(&mut bufs, sampling, false).unwrap());
                }
                gpu.synchronize().unwrap();
                let start = Instant::now();
                for _ in 0..runs {
                    model.generate(&mut bufs, sampling, false).unwrap();
                    gpu.synchronize().unwrap();
                }
                let per = start.elapsed().as_secs_f64() * 1e6 / (runs * count) as f64;
                // The prefix steps are included; per generated character.
                summary.push(format!(
                    "generate B=1 H={h} V={v} P={PREFIX} N={count} {:<16} {precision:?} {label}: {per:.3} us/char ({path:?})",
                    cell.name()
                ));
            }
        }
    }
    // Paths forced, greedy (plain timing loop): every path for the GRU
    // (reset-after); the shared-memory and the register cluster kernels
    // (16) for the others. The register one is not chosen automatically
    // yet. Both cluster kernels also with the recurrent product ahead
    // (`greedy-ahead` lines, against the `greedy` line of the same path),
    // with it and block sends (`greedy-ahead-blocks`, against
    // `greedy-ahead`), and with it and the split draw (`greedy-ahead-split`,
    // against `greedy-ahead`). Options: (product ahead, block sends, split
    // draw, the line's label).
    type Opts = (bool, bool, bool, &'static str);
    const AFTER: Opts = (false, false, false, "greedy");
    const AHEAD: Opts = (true, false, false, "greedy-ahead");
    const BLOCKS: Opts = (true, true, false, "greedy-ahead-blocks");
    const SPLIT: Opts = (true, false, true, "greedy-ahead-split");
    const CLUSTER_FORMS: [(GenPath, Option<usize>, Opts); 8] = [
        (GenPath::Cluster, Some(16), AFTER),
        (GenPath::Cluster, Some(16), AHEAD),
        (GenPath::Cluster, Some(16), BLOCKS),
        (GenPath::Cluster, Some(16), SPLIT),
        (GenPath::ClusterRegs, None, AFTER),
        (GenPath::ClusterRegs, None, AHEAD),
        (GenPath::ClusterRegs, None, BLOCKS),
        (GenPath::ClusterRegs, None, SPLIT),
    ];
    let forced = |cell| {
        let mut forms = if cell == CellKind::GruResetAfter {
            vec![
                (GenPath::Persistent, None, AFTER),
                (GenPath::Cluster, Some(8), AFTER),
            ]
        } else {
            Vec::new()
        };
        forms.extend(CLUSTER_FORMS);
        forms
    };
    let cells = [
        CellKind::GruResetAfter,
        CellKind::GruResetBefore,
        CellKind::RnnTanh,
        CellKind::Lstm,
    ];
    for (precision, cell) in [Precision::F32, Precision::F16]
        .into_iter()
        .flat_map(|p| cells.map(|c| (p, c)))
    {
        let (model, mut bufs) = scale.model(&gpu, cell, precision);
        for (path, cluster, (ahead, blocks, split, order)) in forced(cell) {
            bufs.set_product_ahead(ahead);
            bufs.set_block_sends(blocks);
            bufs.set_split_argmax(split);
            let mut run = || model.generate_on(&mut bufs, Sampling::Greedy, Some(path), cluster);
            if let Err(e) = run() {
                summary.push(format!(
                    "  forced {} {precision:?} {order} {path:?} cluster={cluster:?}: not run ({e})",
                    cell.name()
                ));
                continue;
            }
            gpu.synchronize().unwrap();
            let start = Instant::now();
            for _ in 0..runs {
                run().unwrap();
                gpu.synchronize().unwrap();
            }
            let per = start.elapsed().as_secs_f64() * 1e6 / (runs * count) as f64;
            summary.push(format!(
                "  forced {} {precision:?} {order} {path:?} cluster={cluster:?}: {per:.3} us/char",
                cell.name()
            ));
        }
    }
    c.final_summary();
    println!("\n== summary (plain timing loop, wall time incl. launch + sync)");
    for line in summary {
        println!("{line}");
    }
}
