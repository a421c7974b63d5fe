//! Generation on the device, µs per generated character at batch 1 for
//! d2l's model (H 256, vocabulary 1,027): prefix of 10 characters, then
//! 500 generated, greedy and with temperature, every cell, f32 and f16
//! (target ≤ 5 µs per character). Criterion; prints `skipped: no CUDA device`
//! without a GPU.

use std::time::{Duration, Instant};

use criterion::Criterion;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::core::{CellKind, ModelLayout};
use recur::engine::{DeviceModel, GenBuffers, GenPath, Gpu, Precision, Sampling};

const PREFIX: usize = 10;
const COUNT: usize = 500;

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
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut summary = Vec::new();
    for precision in [Precision::F32, Precision::F16] {
        for cell in CellKind::ALL {
            let layout = ModelLayout {
                cell,
                vocab: 1027,
                hidden: 256,
            };
            let mut rng = StdRng::seed_from_u64(5);
            let k = 1.0 / 16.0;
            let params: Vec<f32> = (0..layout.len()).map(|_| rng.random_range(-k..k)).collect();
            let model = DeviceModel::upload(&gpu, layout, &params, precision).unwrap();
            let mut bufs = GenBuffers::new(&model, 1, PREFIX, COUNT).unwrap();
            let prefix: Vec<u32> = (0..PREFIX as u32).map(|i| i * 7 % 1027).collect();
            bufs.set_prefix(&prefix).unwrap();
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
                c.bench_function(&name, |bch| {
                    bch.iter(|| {
                        path = Some(model.generate(&mut bufs, sampling, false).unwrap());
                        gpu.synchronize().unwrap();
                    })
                });
                for _ in 0..3 {
                    model.generate(&mut bufs, sampling, false).unwrap();
                }
                gpu.synchronize().unwrap();
                let runs = 20;
                let start = Instant::now();
                for _ in 0..runs {
                    model.generate(&mut bufs, sampling, false).unwrap();
                    gpu.synchronize().unwrap();
                }
                let per = start.elapsed().as_secs_f64() * 1e6 / (runs * COUNT) as f64;
                // The prefix steps are included; per generated character.
                summary.push(format!(
                    "generate B=1 H=256 V=1027 P={PREFIX} N={COUNT} {:<16} {precision:?} {label}: {per:.3} us/char ({path:?})",
                    cell.name()
                ));
            }
        }
    }
    // Paths forced, greedy (plain timing loop): every path for the GRU
    // (reset-after); the shared-memory and the register cluster kernels
    // (16) for the others. The register one is not chosen automatically yet.
    let forced = |cell| -> &'static [(GenPath, Option<usize>)] {
        if cell == CellKind::GruResetAfter {
            &[
                (GenPath::Persistent, None),
                (GenPath::Cluster, Some(8)),
                (GenPath::Cluster, Some(16)),
                (GenPath::ClusterRegs, None),
            ]
        } else {
            &[(GenPath::Cluster, Some(16)), (GenPath::ClusterRegs, None)]
        }
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
        let layout = ModelLayout {
            cell,
            vocab: 1027,
            hidden: 256,
        };
        let mut rng = StdRng::seed_from_u64(5);
        let k = 1.0 / 16.0;
        let params: Vec<f32> = (0..layout.len()).map(|_| rng.random_range(-k..k)).collect();
        let model = DeviceModel::upload(&gpu, layout, &params, precision).unwrap();
        let mut bufs = GenBuffers::new(&model, 1, PREFIX, COUNT).unwrap();
        let prefix: Vec<u32> = (0..PREFIX as u32).map(|i| i * 7 % 1027).collect();
        bufs.set_prefix(&prefix).unwrap();
        for &(path, cluster) in forced(cell) {
            let mut run = || model.generate_on(&mut bufs, Sampling::Greedy, Some(path), cluster);
            if let Err(e) = run() {
                summary.push(format!(
                    "  forced {} {precision:?} greedy {path:?} cluster={cluster:?}: not run ({e})",
                    cell.name()
                ));
                continue;
            }
            gpu.synchronize().unwrap();
            let runs = 20;
            let start = Instant::now();
            for _ in 0..runs {
                run().unwrap();
                gpu.synchronize().unwrap();
            }
            let per = start.elapsed().as_secs_f64() * 1e6 / (runs * COUNT) as f64;
            summary.push(format!(
                "  forced {} {precision:?} greedy {path:?} cluster={cluster:?}: {per:.3} us/char",
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
