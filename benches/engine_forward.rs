//! Forward throughput of the GPU engine (criterion; prints `skipped: no CUDA
//! device` and exits without a GPU):
//!
//! - d2l's shape: B 32, H 256, vocabulary 1,027, T 35, token input, every
//!   cell, f32 and f16 — the recurrent layer alone (as PyTorch's nn.GRU /
//!   nn.LSTM forward in benches/torch_forward.py) and the whole model
//!   forward (layer + output layer + loss). Target ≤ 1.5 µs per step.
//! - An LSTM at H 768, input 768, B 16, T 1,024, f16, dense input (cuDNN's
//!   persistent RNN: 2.0 µs per step).
//!
//! Each iteration queues the work and waits for it (wall time, launch and
//! synchronisation included). After criterion, a plain timing loop prints
//! µs per step for each configuration, and a sweep of units per block for
//! the d2l GRU (to tune the planner's default), the LSTM H 768's with the
//! tensor-core kernel's grid barrier and with its flagged h exchange.
//!
//! `BENCH_SMOKE=1` runs every summary line at small shapes (d2l's as B 8,
//! H 64, V 40, T 6; the LSTM as H 64, I 48, B 8, T 12), once each and
//! without criterion: not a measurement, a check that the bench runs (CI
//! runs it on the CPU emulator, so that a GPU session does not find a
//! panic).

use std::time::{Duration, Instant};

use criterion::Criterion;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::core::{CellDims, CellKind, ModelLayout};
use recur::engine::{DeviceModel, Gpu, InputKind, Path, PlanOptions, Precision, SeqBuffers};

fn random(n: usize, k: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-k..k)).collect()
}

/// The bench's shapes and run counts: the published ones, or small ones
/// for `BENCH_SMOKE=1`.
#[derive(Clone, Copy)]
struct Scale {
    smoke: bool,
    /// d2l's model: batch, hidden, vocabulary, time steps.
    d2l: (usize, usize, usize, usize),
    /// The dense LSTM: hidden, input, batch, time steps.
    lstm: (usize, usize, usize, usize),
}

impl Scale {
    fn from_env() -> Self {
        if std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1") {
            Scale {
                smoke: true,
                d2l: (8, 64, 40, 6),
                lstm: (64, 48, 8, 12),
            }
        } else {
            Scale {
                smoke: false,
                d2l: (32, 256, 1027, 35),
                lstm: (768, 768, 16, 1024),
            }
        }
    }

    /// Timed runs: `n`, or one in a smoke run.
    fn runs(self, n: usize) -> usize {
        if self.smoke {
            1
        } else {
            n
        }
    }

    /// d2l's shape as the summary lines name it.
    fn d2l_label(self) -> String {
        let (b, h, v, t) = self.d2l;
        format!("B={b} H={h} V={v} T={t}")
    }
}

fn d2l_setup(
    gpu: &Gpu,
    scale: Scale,
    cell: CellKind,
    precision: Precision,
) -> (DeviceModel, SeqBuffers) {
    let (b, h, v, t) = scale.d2l;
    let layout = ModelLayout {
        cell,
        vocab: v,
        hidden: h,
    };
    let params = random(layout.len(), 1.0 / (h as f32).sqrt(), 1);
    let model = DeviceModel::upload(gpu, layout, &params, precision).unwrap();
    let mut bufs = SeqBuffers::new(&model, t, b, InputKind::Tokens).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let tokens: Vec<u32> = (0..t * b).map(|_| rng.random_range(0..v as u32)).collect();
    bufs.set_tokens(&tokens).unwrap();
    bufs.set_targets(&tokens).unwrap();
    (model, bufs)
}

fn lstm_setup(gpu: &Gpu, scale: Scale) -> (DeviceModel, SeqBuffers) {
    let (h, i, b, t) = scale.lstm;
    let dims = CellDims {
        cell: CellKind::Lstm,
        input: i,
        hidden: h,
    };
    let n = dims.weight_ih_len() + dims.weight_hh_len() + 2 * dims.bias_len();
    let model = DeviceModel::upload_cell(
        gpu,
        dims,
        &random(n, 1.0 / (h as f32).sqrt(), 3),
        Precision::F16,
    )
    .unwrap();
    let mut bufs = SeqBuffers::new(&model, t, b, InputKind::Dense).unwrap();
    bufs.set_inputs(&random(t * b * i, 1.0, 4)).unwrap();
    (model, bufs)
}

/// Mean wall time of `f` (queued and waited for) over `runs`, after warm-up
/// (one run in a smoke run).
fn time_it(gpu: &Gpu, scale: Scale, runs: usize, mut f: impl FnMut()) -> Duration {
    let runs = scale.runs(runs);
    for _ in 0..scale.runs(5) {
        f();
    }
    gpu.synchronize().unwrap();
    let start = Instant::now();
    for _ in 0..runs {
        f();
        gpu.synchronize().unwrap();
    }
    start.elapsed() / runs as u32
}

fn prec_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::F16 => "f16",
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
    println!("device: {}  {:?}", gpu.name(), gpu.limits());
    let scale = Scale::from_env();
    let (d2l_b, _, _, d2l_t) = scale.d2l;
    let (lstm_h, lstm_i, lstm_b, lstm_t) = scale.lstm;
    let d2l_steps = d2l_t as f64;
    let lstm_steps = lstm_t as f64;
    let rounds = scale.runs(2000);
    for blocks in [8, 32, 64, 96, 128, 132] {
        let us = gpu.time_grid_barrier(blocks, rounds).unwrap();
        let flip = gpu.time_grid_barrier_flip(blocks, rounds).unwrap();
        println!("grid barrier, {blocks} blocks: {us:.3} us (one-word flip barrier: {flip:.3} us)");
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let mut summary = Vec::new();
    for precision in [Precision::F32, Precision::F16] {
        for cell in CellKind::ALL {
            let (model, mut bufs) = d2l_setup(&gpu, scale, cell, precision);
            let plan = model.plan(d2l_b, PlanOptions::default()).unwrap();
            let name = format!("d2l_layer/{}/{}", cell.name(), prec_name(precision));
            if !scale.smoke {
                c.bench_function(&name, |bch| {
                    bch.iter(|| {
                        model.forward(&mut bufs, PlanOptions::default()).unwrap();
                        gpu.synchronize().unwrap();
                    })
                });
            }
            let layer = time_it(&gpu, scale, 200, || {
                model.forward(&mut bufs, PlanOptions::default()).unwrap();
            });
            let full = time_it(&gpu, scale, 200, || {
                model.forward(&mut bufs, PlanOptions::default()).unwrap();
                model.output_loss(&mut bufs).unwrap();
            });
            let per_step = |d: Duration| d.as_secs_f64() * 1e6 / d2l_steps;
            summary.push(format!(
                "d2l {} {:<16} {}: layer {:.3} us/step, layer+output+loss {:.3} us/step  ({:?} units={} blocks={} cluster={} rows={})",
                scale.d2l_label(),
                cell.name(),
                prec_name(precision),
                per_step(layer),
                per_step(full),
                plan.path,
                plan.units,
                plan.blocks,
                plan.cluster,
                plan.ldb
            ));
        }
    }

    let (model, mut bufs) = lstm_setup(&gpu, scale);
    let plan = model.plan(lstm_b, PlanOptions::default()).unwrap();
    if !scale.smoke {
        c.bench_function("lstm_h768_b16_t1024/f16", |bch| {
            bch.iter(|| {
                model.forward(&mut bufs, PlanOptions::default()).unwrap();
                gpu.synchronize().unwrap();
            })
        });
    }
    let d = time_it(&gpu, scale, 20, || {
        model.forward(&mut bufs, PlanOptions::default()).unwrap();
    });
    summary.push(format!(
        "lstm H={lstm_h} I={lstm_i} B={lstm_b} T={lstm_t} f16 dense input: {:.3} us/step ({:?} units={} blocks={})",
        d.as_secs_f64() * 1e6 / lstm_steps,
        plan.path,
        plan.units,
        plan.blocks
    ));
    let proj = time_it(&gpu, scale, 20, || {
        model.input_projection(&mut bufs).unwrap();
    });
    let (m, n, k) = (lstm_t * lstm_b, 4 * lstm_h, lstm_i);
    summary.push(format!(
        "  of which the input product ({m}x{n}x{k} f16 GEMM): {:.3} us/step, {:.0} TFLOP/s",
        proj.as_secs_f64() * 1e6 / lstm_steps,
        2.0 * (m * n * k) as f64 / proj.as_secs_f64() / 1e12
    ));
    for units in [8, 16, 32] {
        let opts = PlanOptions {
            path: Some(Path::PersistentMma),
            units: Some(units),
            ..PlanOptions::default()
        };
        if model.plan(lstm_b, opts).is_ok() {
            let d = time_it(&gpu, scale, 10, || {
                model.forward(&mut bufs, opts).unwrap();
            });
            summary.push(format!(
                "  lstm f16 mma units={units}: {:.3} us/step",
                d.as_secs_f64() * 1e6 / lstm_steps
            ));
        }
    }

    // Units-per-block sweep for the d2l GRU (planner tuning).
    for precision in [Precision::F32, Precision::F16] {
        let (model, mut bufs) = d2l_setup(&gpu, scale, CellKind::GruResetAfter, precision);
        let paths: &[(Path, &[usize])] = match precision {
            Precision::F32 => &[
                (Path::PersistentSimt, &[1, 2, 3, 4, 5]),
                (Path::PerStep, &[2, 5]),
            ],
            Precision::F16 => &[
                (Path::PersistentMma, &[4, 8, 16, 32]),
                (Path::PersistentSimt, &[2, 4]),
                (Path::PerStep, &[2, 5]),
            ],
        };
        for &(path, units) in paths {
            for &u in units {
                let opts = PlanOptions {
                    path: Some(path),
                    units: Some(u),
                    ..PlanOptions::default()
                };
                if model.plan(d2l_b, opts).is_err() {
                    continue;
                }
                let d = time_it(&gpu, scale, 100, || {
                    model.forward(&mut bufs, opts).unwrap();
                });
                summary.push(format!(
                    "  sweep d2l gru-reset-after {} {path:?} units={u}: {:.3} us/step",
                    prec_name(precision),
                    d.as_secs_f64() * 1e6 / d2l_steps
                ));
            }
        }
    }
    // Cluster kind and size × batch rows per cluster sweep (sm_90), d2l GRUs
    // and LSTM (reset-before: the shared-memory and tensor-core kernels);
    // the RNN's register kernel only, whose rows the planner picks as the
    // others' (`reg_cluster_rows_for`).
    if gpu.limits().cluster > 0 {
        for precision in [Precision::F32, Precision::F16] {
            for cell in [
                CellKind::GruResetBefore,
                CellKind::GruResetAfter,
                CellKind::Lstm,
                CellKind::RnnTanh,
            ] {
                let (model, mut bufs) = d2l_setup(&gpu, scale, cell, precision);
                for (path, cluster) in [
                    (Path::Cluster, 8),
                    (Path::Cluster, 16),
                    (Path::ClusterRegs, 16),
                    (Path::ClusterMma, 16),
                ] {
                    if cell == CellKind::RnnTanh && path != Path::ClusterRegs {
                        continue;
                    }
                    for rows in [1, 2, 3, 4, 5, 8, 16, 32] {
                        let opts = PlanOptions {
                            path: Some(path),
                            cluster: Some(cluster),
                            rows: Some(rows),
                            ..PlanOptions::default()
                        };
                        let Ok(plan) = model.plan(d2l_b, opts) else {
                            continue;
                        };
                        let d = time_it(&gpu, scale, 100, || {
                            model.forward(&mut bufs, opts).unwrap();
                        });
                        summary.push(format!(
                            "  sweep d2l {} {} {path:?} cluster={cluster} rows={rows} blocks={}: {:.3} us/step",
                            cell.name(),
                            prec_name(precision),
                            plan.blocks,
                            d.as_secs_f64() * 1e6 / d2l_steps
                        ));
                    }
                }
            }
        }
    }
    // Last, because a failing kernel can leave the context unusable: the
    // tensor-core kernel with a flag per block, then with flagged h words,
    // instead of the grid barrier (forced only until they have run on a
    // GPU), beside the barrier lines above.
    let (lstm, mut lstm_bufs) = lstm_setup(&gpu, scale);
    let (gru, mut gru_bufs) = d2l_setup(&gpu, scale, CellKind::GruResetAfter, Precision::F16);
    let lstm_label = format!("lstm H={lstm_h} B={lstm_b}");
    let mut flag_cases = [
        (
            lstm_label.as_str(),
            &lstm,
            &mut lstm_bufs,
            lstm_b,
            lstm_steps,
            &[8, 16, 32][..],
        ),
        (
            "d2l gru-reset-after f16",
            &gru,
            &mut gru_bufs,
            d2l_b,
            d2l_steps,
            &[4, 8, 16, 32][..],
        ),
    ];
    let paths = [Path::PersistentMmaBlockFlags, Path::PersistentMmaFlagged];
    'flagged: for path in paths {
        for (what, model, bufs, batch, steps, units) in flag_cases.iter_mut() {
            for &u in units.iter() {
                let opts = PlanOptions {
                    path: Some(path),
                    units: Some(u),
                    ..PlanOptions::default()
                };
                if model.plan(*batch, opts).is_err() {
                    continue;
                }
                // One checked run first: an error ends the section with a line.
                if let Err(e) = model.forward(bufs, opts).and_then(|_| gpu.synchronize()) {
                    summary.push(format!("  {what} {path:?} units={u}: FAILED {e}"));
                    break 'flagged;
                }
                let d = time_it(&gpu, scale, 10, || {
                    model.forward(bufs, opts).unwrap();
                });
                summary.push(format!(
                    "  {what} {path:?} units={u}: {:.3} us/step",
                    d.as_secs_f64() * 1e6 / *steps
                ));
            }
        }
    }
    c.final_summary();
    println!("\n== summary (plain timing loop, wall time incl. launch + sync)");
    for line in summary {
        println!("{line}");
    }
}
