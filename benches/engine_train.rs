//! Training-step time of the GPU engine (prints `skipped: no CUDA device`
//! and exits without a GPU): forward, backward, clipping (θ = 1) and Adam
//! on the resident weights at d2l's shape (B 32, H 256, vocabulary 1,027,
//! T 35), every cell, f32 and f16 storage (f16 weight copies and saved
//! activations, f32 masters and accumulation) from the same parameters
//! and batches, one after the other; no host wait inside an epoch: the loss and norm
//! sums are taken once per 8 mini-batches, as the trainer does. Prints the
//! device operations (launches, copies, fills) per step, the wall time of
//! the forward, backward and clip + Adam, and the main stream's GPU time per
//! phase of the step (`DeviceTrainer::time_phases`: time-stamped events; the
//! time loops also per time step). `BENCH_CELL=<cell>`
//! runs one cell (e.g. `GruResetAfter`, for a profile). Every time-loop
//! form the device has is timed: thread-block clusters (sm_90), cooperative
//! persistent kernels, one launch per step, and for the GRUs and the LSTM
//! the clusters with the reduce-scatter backward (`cluster-rs`, beside
//! `cluster`'s gather); every form takes the ring products
//! (`tr_gemm_ring*`), and `cluster-tr-gemm` is `cluster` with `tr_gemm`'s
//! (the same products, one slice ahead in registers), for the two side by
//! side; `cluster-mma` is `cluster` with the forward's product on tensor
//! cores (`DeviceTrainer::set_mma_forward`), and `persistent-mma` is
//! `persistent` with both directions' products on tensor cores
//! (`set_mma_forward`, `set_mma_backward`; f16, every cell but GRU
//! reset-before: the persistent loops `TimeLoop::PersistentMma`). `BENCH_LOOPS=cluster,per-step`
//! (a comma list of `cluster`, `cluster-tr-gemm`, `cluster-rs`,
//! `cluster-mma`, `persistent`, `persistent-mma`, `per-step`) picks some, and
//! `BENCH_PER_STEP=1` is `BENCH_LOOPS=per-step`. The PyTorch side (nn.GRU / nn.LSTM + Linear +
//! CrossEntropy + Adam, same shapes, same GPU) is
//! benches/engine_train_torch.py. `BENCH_SMOKE=1` runs every line at a
//! small shape (B 8, H 64, V 40, T 6) for a few steps: not a measurement,
//! a check that the bench runs (CI runs it on the CPU emulator, so that a
//! GPU session does not find a panic).

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::core::optim::AdamConfig;
use recur::core::{CellKind, ModelLayout};
use recur::engine::{
    has_reduce_scatter_backward, ClusterLoops, DeviceTrainer, Gpu, Precision, TrainOptimizer,
    STEP_PHASES,
};

fn main() {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) if e.is_no_device() => {
            println!("skipped: no CUDA device");
            return;
        }
        Err(e) => panic!("opening the GPU: {e}"),
    };
    println!("{}", gpu.name());
    let smoke = std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1");
    let (b, h, v, t) = if smoke {
        (8, 64, 40, 6)
    } else {
        (32, 256, 1027, 35)
    };
    // Epochs of 8 mini-batches: warm-up, timed; steps with phase timing.
    let (warm, epochs, timed) = if smoke { (1, 1, 8) } else { (2, 25, 64) };
    let mut rng = StdRng::seed_from_u64(1);
    // `BENCH_CELL=GruResetAfter` (a CellKind's name) runs that cell only (profiles).
    let only = std::env::var("BENCH_CELL").ok();
    let mut forms = std::env::var("BENCH_LOOPS").unwrap_or_else(|_| {
        "cluster,cluster-tr-gemm,cluster-rs,cluster-mma,persistent,persistent-mma,per-step"
            .to_owned()
    });
    if std::env::var("BENCH_PER_STEP").is_ok_and(|v| v == "1") {
        forms = "per-step".to_owned();
    }
    let forms: Vec<&str> = forms
        .split(',')
        .filter(|f| !f.starts_with("cluster") || gpu.limits().cluster > 0)
        .collect();
    for cell in [
        CellKind::RnnTanh,
        CellKind::GruResetBefore,
        CellKind::GruResetAfter,
        CellKind::Lstm,
    ] {
        if only.as_ref().is_some_and(|c| *c != format!("{cell:?}")) {
            continue;
        }
        let layout = ModelLayout {
            cell,
            vocab: v,
            hidden: h,
        };
        let k = 1.0 / (h as f32).sqrt();
        let params: Vec<f32> = (0..layout.len()).map(|_| rng.random_range(-k..k)).collect();
        let batches: Vec<(Vec<u32>, Vec<u32>)> = (0..8)
            .map(|_| {
                let x = (0..t * b).map(|_| rng.random_range(0..v as u32)).collect();
                let y = (0..t * b).map(|_| rng.random_range(0..v as u32)).collect();
                (x, y)
            })
            .collect();
        for (precision, form) in [Precision::F32, Precision::F16]
            .into_iter()
            .flat_map(|p| forms.iter().map(move |f| (p, *f)))
            .filter(|(_, f)| *f != "cluster-rs" || has_reduce_scatter_backward(cell))
            .filter(|(p, f)| {
                *f != "persistent-mma" || (*p == Precision::F16 && cell != CellKind::GruResetBefore)
            })
        {
            let mut tr = DeviceTrainer::new_with_precision(
                &gpu,
                layout,
                b,
                t,
                TrainOptimizer::Adam,
                precision,
            )
            .unwrap();
            match form {
                "cluster" => tr.set_cluster(ClusterLoops::Required),
                "cluster-tr-gemm" => {
                    tr.set_cluster(ClusterLoops::Required);
                    tr.set_ring_products(false);
                }
                "cluster-rs" => {
                    tr.set_cluster(ClusterLoops::Required);
                    tr.set_reduce_scatter_backward(true);
                }
                "cluster-mma" => {
                    tr.set_cluster(ClusterLoops::Required);
                    tr.set_mma_forward(true);
                }
                "persistent" => tr.set_cluster(ClusterLoops::Never),
                "persistent-mma" => {
                    tr.set_cluster(ClusterLoops::Never);
                    tr.set_mma_forward(true);
                    tr.set_mma_backward(true);
                }
                "per-step" => tr.set_persistent(false),
                other => panic!("BENCH_LOOPS: unknown form {other}"),
            }
            tr.upload_params(&params).unwrap();
            let cfg = AdamConfig {
                lr: 1e-3,
                ..AdamConfig::default()
            };
            let mut step = 0u64;
            // Epochs of 8 mini-batches, the statistics taken at each end.
            let mut run = |epochs: usize, tr: &mut DeviceTrainer| -> f64 {
                let mut loss = 0.0;
                for _ in 0..epochs {
                    for (x, y) in &batches {
                        tr.forward(x, y).unwrap();
                        tr.backward(false).unwrap();
                        tr.clip(Some(1.0)).unwrap();
                        step += 1;
                        tr.adam_step(step, &cfg).unwrap();
                    }
                    let s = tr.take_stats().unwrap();
                    assert_eq!(s.first_non_finite, None);
                    loss = s.loss_sum / (s.batches as usize * t * b) as f64;
                }
                loss
            };
            run(warm, &mut tr);
            let ops_before = tr.device_ops();
            let n = epochs * batches.len();
            let start = Instant::now();
            let loss = run(epochs, &mut tr);
            let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
            let ops = (tr.device_ops() - ops_before) as f64 / n as f64;
            println!(
            "recur train step B={b} H={h} V={v} T={t} {cell:?} {precision:?} Adam+clip [{form}: {:?}]: {us:.1} us/step \
             ({:.3} us per time step, {ops:.0} device ops per step), last epoch's mean loss {loss:.3}",
            tr.time_loops(),
            us / t as f64
        );
            // Where the time goes: forwards alone, forward + backward, then the
            // rest (clip + Adam) by difference.
            let phase = |with_backward: bool, tr: &mut DeviceTrainer| -> f64 {
                let start = Instant::now();
                for i in 0..n {
                    let (x, y) = &batches[i % batches.len()];
                    tr.forward(x, y).unwrap();
                    if with_backward {
                        tr.backward(false).unwrap();
                    }
                }
                tr.take_stats().unwrap();
                start.elapsed().as_secs_f64() * 1e6 / n as f64
            };
            let fwd = phase(false, &mut tr);
            let fwd_bwd = phase(true, &mut tr);
            println!(
            "  {cell:?} {precision:?} [{form}] phases: forward {fwd:.1} us, backward {:.1} us, clip + Adam {:.1} us",
            fwd_bwd - fwd,
            us - fwd_bwd
        );
            // The main stream's GPU time per phase (time-stamped events, read
            // once at the end).
            tr.time_phases(timed).unwrap();
            run(timed / batches.len(), &mut tr);
            let steps = tr.take_phase_times().unwrap();
            tr.time_phases(0).unwrap();
            let mut parts = Vec::new();
            for (i, name) in STEP_PHASES.iter().enumerate() {
                let v: Vec<f64> = steps.iter().filter_map(|s| s.phases_us[i]).collect();
                if v.is_empty() {
                    continue;
                }
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                parts.push(if name.ends_with("loop") {
                    format!(
                        "{name} {mean:.1} us ({:.3} us per time step)",
                        mean / t as f64
                    )
                } else {
                    format!("{name} {mean:.1} us")
                });
            }
            println!(
                "  {cell:?} {precision:?} [{form}] GPU time per phase (main stream, mean of {} steps): {}",
                steps.len(),
                parts.join(", ")
            );
        }
    }
}
