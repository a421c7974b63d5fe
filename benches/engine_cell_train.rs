//! Training a bare LSTM layer on dense inputs on the GPU (recur-engine's
//! DeviceCellTrainer) at the shape of cuDNN's public persistent-RNN figure:
//! H 768, input 768, B 16, T 1,024; forward (with the cache the backward
//! reads) + backward (every parameter gradient and the inputs' gradient,
//! from a gradient on every hidden state), f16 storage with f32
//! accumulation, then f32. The inputs and the upstream gradient stay on
//! the device, as they do in PyTorch's twin
//! (benches/engine_cell_train_torch.py: nn.LSTM forward + backward, same
//! shapes, same GPU). Timed over whole iterations with a host wait only
//! at the end; prints the time-loop forms taken and the device operations
//! per iteration; f16 also with one launch per step both ways
//! (`[per-step]`) and with the persistent tensor-core loops at 8 and 16
//! hidden units per block (`[mma units=U]`), and at 8 without grid
//! barriers: the backward on per-block flags, the forward on them too
//! (`[mma units=8 block-flags]`) or on h in flagged words (`[mma units=8
//! flagged]`). `BENCH_CELL_SHAPE=H,I,B,T`
//! overrides the shape;
//! `BENCH_SMOKE=1` takes a small one (64,48,8,12) where it is not given:
//! not a measurement, a check that the bench runs (CI runs it on the CPU
//! emulator). Prints `skipped: no CUDA device` without a GPU.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::core::{CellDims, CellKind};
use recur::engine::{
    ClusterLoops, DeviceCellTrainer, Error, ForwardSync, Gpu, Precision, TrainOptimizer,
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
    let shape: Vec<usize> = std::env::var("BENCH_CELL_SHAPE")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| v.len() == 4)
        .unwrap_or_else(|| {
            if std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1") {
                vec![64, 48, 8, 12]
            } else {
                vec![768, 768, 16, 1024]
            }
        });
    let (h, i, b, t) = (shape[0], shape[1], shape[2], shape[3]);
    // The trainer's own loops in each precision, then f16 with one launch
    // per step both ways: what the f16 forward and backward took before
    // their persistent tensor-core loops (TimeLoop::PersistentMma), for the
    // choice in benches/gpu_verdicts.py; then those loops at 8 and 16
    // hidden units per block (the planner takes the fewest that fit: 8 at
    // H 768; 16 halves the backward's bytes through L2 and doubles each
    // block's products), and at 8 with flags instead of grid barriers (the
    // forward phase is the flag form's, the rest the flagged backward's).
    let mma = |units, sync| Form::Mma { units, sync };
    let forms = [
        (Precision::F16, Form::Trainer),
        (Precision::F16, Form::PerStep),
        (Precision::F32, Form::Trainer),
        (Precision::F16, mma(8, ForwardSync::GridBarrier)),
        (Precision::F16, mma(16, ForwardSync::GridBarrier)),
        (Precision::F16, mma(8, ForwardSync::BlockFlags)),
        (Precision::F16, mma(8, ForwardSync::FlaggedWords)),
    ];
    for (precision, form) in forms {
        if let Err(e) = bench(&gpu, h, i, b, t, precision, form) {
            println!("LSTM H={h} I={i} B={b} T={t} {precision:?}: {e}");
        }
    }
}

/// The time loops a line asks of the trainer.
#[derive(Clone, Copy)]
enum Form {
    /// The trainer's own choice.
    Trainer,
    /// One launch per step both ways.
    PerStep,
    /// The persistent tensor-core loops both ways at this many hidden
    /// units per block, the forward's blocks waiting for each other by
    /// `sync`, the backward's on flags unless that is the grid barrier.
    Mma { units: usize, sync: ForwardSync },
}

fn bench(
    gpu: &Gpu,
    h: usize,
    i: usize,
    b: usize,
    t: usize,
    precision: Precision,
    form: Form,
) -> Result<(), Error> {
    let dims = CellDims {
        cell: CellKind::Lstm,
        input: i,
        hidden: h,
    };
    let mut rng = StdRng::seed_from_u64(5);
    let mut tr = DeviceCellTrainer::new(gpu, dims, b, t, TrainOptimizer::Sgd, precision)?;
    let form = match form {
        Form::Trainer => String::new(),
        Form::PerStep => {
            tr.set_persistent(false);
            " [per-step]".to_owned()
        }
        Form::Mma { units, sync } => {
            tr.set_cluster(ClusterLoops::Never);
            tr.set_mma_forward(true);
            tr.set_mma_backward(true);
            tr.set_mma_units(Some(units));
            tr.set_forward_sync(sync);
            tr.set_flagged_backward(sync != ForwardSync::GridBarrier);
            let flags = match sync {
                ForwardSync::GridBarrier => "",
                ForwardSync::BlockFlags => " block-flags",
                ForwardSync::FlaggedWords => " flagged",
            };
            format!(" [mma units={units}{flags}]")
        }
    };
    let k = 1.0 / (h as f32).sqrt();
    let params: Vec<f32> = (0..tr.params_len())
        .map(|_| rng.random_range(-k..k))
        .collect();
    let x: Vec<f32> = (0..t * b * i)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let dy: Vec<f32> = (0..t * b * h)
        .map(|_| rng.random_range(-1e-3..1e-3))
        .collect();
    tr.upload_params(&params)?;
    tr.upload_inputs(&x)?;
    tr.upload_hidden_grads(&dy)?;
    let label = format!("LSTM H={h} I={i} B={b} T={t} {precision:?}{form}");
    // Warm-up (module loads, cluster plans), then forward alone, then
    // forward + backward.
    for _ in 0..3 {
        tr.reset_state()?;
        tr.forward()?;
        tr.backward()?;
    }
    gpu.synchronize()?;
    let runs = 10;
    let start = Instant::now();
    for _ in 0..runs {
        tr.reset_state()?;
        tr.forward()?;
    }
    gpu.synchronize()?;
    let fwd = start.elapsed().as_secs_f64() * 1e3 / runs as f64;
    let ops0 = tr.device_ops();
    let start = Instant::now();
    for _ in 0..runs {
        tr.reset_state()?;
        tr.forward()?;
        tr.backward()?;
    }
    gpu.synchronize()?;
    let both = start.elapsed().as_secs_f64() * 1e3 / runs as f64;
    let ops = (tr.device_ops() - ops0) / runs as u64;
    let (lf, lb) = tr.time_loops();
    let finite = tr.download_grads()?.iter().all(|g| g.is_finite());
    println!(
        "cell train {label}: forward {fwd:.3} ms ({:.2} us/step), forward+backward {both:.3} ms \
         ({:.2} us/step); loops {lf:?}/{lb:?}; {ops} device ops per iteration; gradients finite: {finite}",
        fwd * 1e3 / t as f64,
        both * 1e3 / t as f64,
    );
    Ok(())
}
