//! recur-core on the CPU at d2l's shape (batch 32, hidden 256, 35 steps,
//! vocabulary 1,027 token input): every cell's sequence forward and
//! backward, the output layer and loss, the batch-1 streaming step with f32
//! and f16 weights, and the dense products underneath, single-threaded
//! ([`Portable`]) and on all cores ([`Threaded`]).
//!
//! Throughput is counted in floating-point operations (a multiply-add is 2;
//! only the matrix products are counted, the gate arithmetic and the token
//! gathers are not), so criterion's `elem/s` reads as FLOP/s; each bench
//! also prints its GFLOP/s line from the measured mean.
//!
//! `cargo bench --bench core_cells` (about 3 minutes; `-- <filter>` for a part).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use recur::gemm_threaded::Threaded;
use recur_core::cell::{
    cache_len, sequence_backward, sequence_forward, step_forward, step_workspace_len, workspace_len,
};
use recur_core::gemm::{Gemm, Isa, Portable, Trans};
use recur_core::output::{
    dense_backward, dense_forward, softmax_xent_backward, softmax_xent_forward, DenseDims,
};
use recur_core::{CellKind, Input, ModelLayout, SeqDims};

const BATCH: usize = 32;
const HIDDEN: usize = 256;
const STEPS: usize = 35;
const VOCAB: usize = 1027;

fn filled(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
            ((x >> 8) as f32 / 16_777_216.0 - 0.5) * 0.1
        })
        .collect()
}

/// The bench-name filter given on the command line, if any (criterion's
/// own filter does not reach [`report`]).
fn filter() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with('-'))
}

/// CPU time of the calling thread, in seconds: unlike wall time it does not
/// count the time other processes hold the core, so single-threaded figures
/// stay meaningful on a busy machine.
#[cfg(target_os = "linux")]
fn thread_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds() -> f64 {
    f64::NAN
}

/// Times `f` outside criterion and prints µs and GFLOP/s by wall time and by
/// the thread's CPU time (the latter is meaningless for multithreaded
/// work), so the figures are in the log next to criterion's own.
fn report(name: &str, flops: u64, mut f: impl FnMut()) {
    if let Some(pattern) = filter() {
        if !name.contains(&pattern) {
            return;
        }
    }
    f();
    let reps = ((2e8 / flops as f64) as usize).clamp(3, 2000);
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let (t, c) = (Instant::now(), thread_cpu_seconds());
        for _ in 0..reps {
            f();
        }
        wall = wall.min(t.elapsed().as_secs_f64() / reps as f64);
        cpu = cpu.min((thread_cpu_seconds() - c) / reps as f64);
    }
    let gflops = |s: f64| flops as f64 / s / 1e9;
    println!(
        "REPORT {name}: wall {:.1} us = {:.2} GFLOP/s | thread-cpu {:.1} us = {:.2} GFLOP/s \
         (best of 5 means of {reps})",
        wall * 1e6,
        gflops(wall),
        cpu * 1e6,
        gflops(cpu)
    );
}

fn layout(kind: CellKind) -> ModelLayout {
    ModelLayout {
        cell: kind,
        vocab: VOCAB,
        hidden: HIDDEN,
    }
}

/// Multiply-adds × 2 of the recurrent product over the sequence (forward).
fn seq_forward_flops(kind: CellKind) -> u64 {
    2 * (STEPS * BATCH * HIDDEN * kind.gates() * HIDDEN) as u64
}

fn cells(c: &mut Criterion) {
    println!("gemm kernels: {:?}", Isa::detect());
    let tokens: Vec<u32> = (0..STEPS * BATCH)
        .map(|i| (i * 31 % VOCAB) as u32)
        .collect();
    for kind in CellKind::ALL {
        let l = layout(kind);
        let dims = SeqDims {
            cell: l.cell_dims(),
            steps: STEPS,
            batch: BATCH,
        };
        let flat = filled(l.len(), 1);
        let (params, _, _) = l.split(&flat).expect("split");
        let bh = BATCH * HIDDEN;
        let state = if kind.has_cell_state() { bh } else { 0 };
        let h0 = filled(bh, 2);
        let c0 = filled(state, 3);
        let dhs = filled(STEPS * bh, 4);
        let mut hs = vec![0.0f32; STEPS * bh];
        let mut c_last = vec![0.0f32; state];
        let mut cache = vec![0.0f32; cache_len(&dims)];
        let mut ws = vec![0.0f32; workspace_len(&dims)];
        let mut grads = vec![0.0f32; l.len()];
        let (mut dh0, mut dc0) = (vec![0.0f32; bh], vec![0.0f32; state]);
        let input = Input::Tokens(&tokens);

        let group_name = format!("seq T35 B32 H256 V1027 {}", kind.name());
        let mut group = c.benchmark_group(&group_name);
        let fwd_flops = seq_forward_flops(kind);
        {
            let mut forward = || {
                sequence_forward(
                    &mut hs,
                    &mut c_last,
                    input,
                    &h0,
                    &c0,
                    params,
                    &mut cache,
                    &mut ws,
                    &dims,
                    &Portable,
                )
                .expect("forward")
            };
            group.throughput(Throughput::Elements(fwd_flops));
            report(
                &format!("{group_name}/forward (whole sequence; per step /35)"),
                fwd_flops,
                &mut forward,
            );
            group.bench_function("forward", |b| b.iter(&mut forward));
        }

        // Backward on the cache of the forward just run (it is only read);
        // the gradients keep accumulating, which costs the same.
        let bwd_flops = 2 * fwd_flops;
        let mut backward = || {
            let (mut g, _, _) = l.split_mut(&mut grads).expect("split");
            sequence_backward(
                &mut g, None, &mut dh0, &mut dc0, &dhs, input, &h0, &c0, params, &hs, &cache,
                &mut ws, &dims, &Portable,
            )
            .expect("backward")
        };
        group.throughput(Throughput::Elements(bwd_flops));
        report(
            &format!("{group_name}/backward (whole sequence; per step /35)"),
            bwd_flops,
            &mut backward,
        );
        group.bench_function("backward", |b| b.iter(&mut backward));
        group.finish();
    }
}

fn output_layer(c: &mut Criterion) {
    let d = DenseDims {
        rows: STEPS * BATCH,
        hidden: HIDDEN,
        vocab: VOCAB,
    };
    let h = filled(d.hidden_len(), 1);
    let w = filled(d.weight_len(), 2);
    let bias = filled(d.vocab, 3);
    let targets: Vec<u32> = (0..d.rows).map(|i| (i * 7 % VOCAB) as u32).collect();
    let mut logits = vec![0.0f32; d.logits_len()];
    let mut probs = vec![0.0f32; d.logits_len()];
    let mut dlogits = vec![0.0f32; d.logits_len()];
    let (mut dw, mut db, mut dh) = (
        vec![0.0f32; d.weight_len()],
        vec![0.0f32; d.vocab],
        vec![0.0f32; d.hidden_len()],
    );
    let mut group = c.benchmark_group("output N1120 H256 V1027");
    let mut fwd = || dense_forward(&mut logits, &h, &w, &bias, &d, &Portable).expect("dense");
    group.throughput(Throughput::Elements(d.forward_flops()));
    report(
        "output N1120 H256 V1027/dense forward",
        d.forward_flops(),
        &mut fwd,
    );
    group.bench_function("dense forward", |b| b.iter(&mut fwd));
    fwd();
    group.throughput(Throughput::Elements(d.logits_len() as u64));
    let mut xent = || {
        softmax_xent_forward(&mut probs, &logits, &targets, &d).expect("xent");
        softmax_xent_backward(&mut dlogits, &probs, &targets, &d).expect("xent");
    };
    report(
        "output N1120 H256 V1027/softmax xent forward+backward (elements, not flops)",
        d.logits_len() as u64,
        &mut xent,
    );
    group.bench_function("softmax xent forward+backward (elements)", |b| {
        b.iter(&mut xent)
    });
    xent();
    let mut bwd = || {
        dense_backward(&mut dw, &mut db, &mut dh, &dlogits, &h, &w, &d, &Portable).expect("dense")
    };
    group.throughput(Throughput::Elements(d.backward_flops()));
    report(
        "output N1120 H256 V1027/dense backward",
        d.backward_flops(),
        &mut bwd,
    );
    group.bench_function("dense backward", |b| b.iter(&mut bwd));
    group.finish();
}

fn inference_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("step B1 H256 V1027");
    for kind in CellKind::ALL {
        let l = layout(kind);
        let cell = l.cell_dims();
        let flat = filled(l.len(), 1);
        let flat16: Vec<f16> = flat.iter().map(|&x| f16::from_f32(x)).collect();
        let h_prev = filled(HIDDEN, 2);
        let c_prev = if kind.has_cell_state() {
            filled(HIDDEN, 3)
        } else {
            Vec::new()
        };
        let mut h = vec![0.0f32; HIDDEN];
        let mut cs = vec![0.0f32; c_prev.len()];
        let mut ws = vec![0.0f32; step_workspace_len(&cell, 1)];
        let flops = 2 * (HIDDEN * kind.gates() * HIDDEN) as u64;
        group.throughput(Throughput::Elements(flops));
        let token = [5u32];
        {
            let (p, _, _) = l.split(&flat).expect("split");
            let mut f = || {
                step_forward(
                    &mut h,
                    &mut cs,
                    Input::Tokens(&token),
                    &h_prev,
                    &c_prev,
                    p,
                    &mut ws,
                    &cell,
                    1,
                )
                .expect("step")
            };
            report(
                &format!("step B1 H256 V1027/{}/f32", kind.name()),
                flops,
                &mut f,
            );
            group.bench_function(BenchmarkId::new(kind.name(), "f32"), |b| b.iter(&mut f));
        }
        {
            let (p, _, _) = l.split(&flat16).expect("split");
            let mut f = || {
                step_forward(
                    &mut h,
                    &mut cs,
                    Input::Tokens(&token),
                    &h_prev,
                    &c_prev,
                    p,
                    &mut ws,
                    &cell,
                    1,
                )
                .expect("step")
            };
            report(
                &format!("step B1 H256 V1027/{}/f16", kind.name()),
                flops,
                &mut f,
            );
            group.bench_function(BenchmarkId::new(kind.name(), "f16"), |b| b.iter(&mut f));
        }
    }
    group.finish();
}

fn products(c: &mut Criterion) {
    let threaded = Threaded::available();
    println!("threaded gemm: {} threads", threaded.threads());
    let mut group = c.benchmark_group("gemm");
    let shapes = [
        (
            "recurrent h·Whhᵀ 32x768x256",
            Trans::N,
            Trans::T,
            32,
            768,
            256,
        ),
        (
            "output H·Wdᵀ 1120x1027x256",
            Trans::N,
            Trans::T,
            1120,
            1027,
            256,
        ),
        ("dh·Whh 32x256x768", Trans::N, Trans::N, 32, 256, 768),
        (
            "dWhh += dGᵀ·H 768x256x1120",
            Trans::T,
            Trans::N,
            768,
            256,
            1120,
        ),
        (
            "dH = dlogits·Wd 1120x256x1027",
            Trans::N,
            Trans::N,
            1120,
            256,
            1027,
        ),
    ];
    for (name, ta, tb, m, n, k) in shapes {
        let a = filled(m * k, 1);
        let b = filled(k * n, 2);
        let mut out = vec![0.0f32; m * n];
        let flops = 2 * (m * n * k) as u64;
        group.throughput(Throughput::Elements(flops));
        let mut single = || {
            Portable
                .gemm(ta, tb, m, n, k, 1.0, &a, &b, 0.0, &mut out)
                .expect("gemm")
        };
        report(&format!("gemm/portable/{name}"), flops, &mut single);
        group.bench_function(BenchmarkId::new("portable", name), |bch| {
            bch.iter(&mut single)
        });
        let mut multi = || {
            threaded
                .gemm(ta, tb, m, n, k, 1.0, &a, &b, 0.0, &mut out)
                .expect("gemm")
        };
        report(&format!("gemm/threaded/{name}"), flops, &mut multi);
        group.bench_function(BenchmarkId::new("threaded", name), |bch| {
            bch.iter(&mut multi)
        });
    }
    group.finish();
    black_box(());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = products, cells, output_layer, inference_step
}
criterion_main!(benches);
