//! Training-step time of the GPU engine (prints `skipped: no CUDA device`
//! and exits without a GPU): forward, backward, clipping (θ = 1) and Adam
//! on the resident weights at d2l's shape (B 32, H 256, vocabulary 1,027,
//! T 35), every cell, f32; the loss and the norm read back every step as
//! the trainer does. The PyTorch side (nn.GRU / nn.LSTM + Linear +
//! CrossEntropy + Adam, same shapes, same GPU) is
//! benches/engine_train_torch.py.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::core::optim::AdamConfig;
use recur::core::{CellKind, ModelLayout};
use recur::engine::{DeviceTrainer, Gpu, TrainOptimizer};

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
    let (b, h, v, t) = (32, 256, 1027, 35);
    let mut rng = StdRng::seed_from_u64(1);
    for cell in [
        CellKind::RnnTanh,
        CellKind::GruResetBefore,
        CellKind::GruResetAfter,
        CellKind::Lstm,
    ] {
        let layout = ModelLayout {
            cell,
            vocab: v,
            hidden: h,
        };
        let k = 1.0 / (h as f32).sqrt();
        let params: Vec<f32> = (0..layout.len()).map(|_| rng.random_range(-k..k)).collect();
        let mut tr = DeviceTrainer::new(&gpu, layout, b, t, TrainOptimizer::Adam).unwrap();
        tr.upload_params(&params).unwrap();
        let batches: Vec<(Vec<u32>, Vec<u32>)> = (0..8)
            .map(|_| {
                let x = (0..t * b).map(|_| rng.random_range(0..v as u32)).collect();
                let y = (0..t * b).map(|_| rng.random_range(0..v as u32)).collect();
                (x, y)
            })
            .collect();
        let cfg = AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        };
        let mut step = 0u64;
        let mut run = |n: usize, tr: &mut DeviceTrainer| -> f32 {
            let mut loss = 0.0;
            for i in 0..n {
                let (x, y) = &batches[i % batches.len()];
                tr.forward(x, y).unwrap();
                loss = tr.loss().unwrap();
                tr.backward(false).unwrap();
                tr.clip(Some(1.0)).unwrap();
                step += 1;
                tr.adam_step(step, &cfg).unwrap();
            }
            gpu.synchronize().unwrap();
            loss
        };
        run(10, &mut tr);
        let n = 200;
        let start = Instant::now();
        let loss = run(n, &mut tr);
        let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "recur train step B={b} H={h} V={v} T={t} {cell:?} f32 Adam+clip: {us:.1} us/step \
             ({:.3} us per time step), last loss {loss:.3}",
            us / t as f64
        );
    }
}
