//! One streaming inference step (recur-core's `stream::step_logits`) at
//! batch 1 for d2l's GRU language model (gru-reset-before, hidden 256,
//! vocabulary 1,027), f32 and f16 weights, beside
//! - the machine's read bandwidth, measured here: a summing read over a
//!   buffer of the step's own weight bytes (the weights stay in the cache
//!   between steps, so this is the roofline a step can reach) and over a
//!   256 MiB buffer (DRAM, for weights that do not stay cached);
//! - PyTorch's eager single step on the same machine
//!   (benches/edge_step_torch.py, run from here when a Python with torch is
//!   found: `RECUR_TORCH_PYTHON`, else `.venv/bin/python`).
//!
//! `cargo bench --bench edge_step` prints a summary with the ratios after
//! criterion's own figures (`--bench zzz`: the summary alone), then the
//! step on the other matrix-vector kernels the processor supports
//! (`stream::Kernel::select`) and each kernel's product alone on an L1- and
//! an L2-resident matrix. benches/results/edge_step*.txt hold runs.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::f16;
use recur_core::stream::{self, Kernel, StreamModel};
use recur_core::{CellKind, ModelLayout, Weight};

const LAYOUT: ModelLayout = ModelLayout {
    cell: CellKind::GruResetBefore,
    vocab: 1027,
    hidden: 256,
};

/// A cache line: the token gather reads one element of each of the G·H
/// rows of `weight_ih`, a whole line each.
const LINE: usize = 64;

/// Deterministic weights in ±0.1.
fn params() -> Vec<f32> {
    let mut x = 0x1234_5678_9abc_def0u64;
    (0..LAYOUT.len())
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

/// Bytes one step reads from the weights with `bytes_per` bytes a weight:
/// `weight_hh`, `dense.weight`, the three bias vectors, and one cache line
/// per row of `weight_ih` for the gathered column.
fn step_bytes(bytes_per: usize) -> usize {
    let t = LAYOUT.tensors();
    let rows_ih = t[0].rows;
    (t[1].len() + t[2].len() + t[3].len() + t[4].len() + t[5].len()) * bytes_per + rows_ih * LINE
}

/// State and buffers of a stream over `params`.
struct Stepper<'a, W> {
    model: StreamModel<'a, W>,
    state: Vec<f32>,
    logits: Vec<f32>,
    ws: Vec<f32>,
    token: u32,
}

impl<'a, W: Weight> Stepper<'a, W> {
    fn new(params: &'a [W]) -> Self {
        Stepper {
            model: StreamModel::new(LAYOUT, params).expect("model"),
            state: vec![0.0; stream::state_len(&LAYOUT)],
            logits: vec![0.0; LAYOUT.vocab],
            ws: vec![0.0; stream::workspace_len(&LAYOUT)],
            token: 0,
        }
    }

    /// One step on a token that moves through the vocabulary (a different
    /// column of `weight_ih` each time, as in real text).
    #[inline]
    fn step(&mut self) {
        self.token = (self.token + 389) % LAYOUT.vocab as u32;
        stream::step_logits(
            &mut self.logits,
            &mut self.state,
            black_box(self.token),
            &self.model,
            &mut self.ws,
        )
        .expect("step");
        black_box(&self.logits);
    }
}

/// Median nanoseconds of the cell part alone (`cell::step_forward`, the
/// cells' code), to split a step's time between the cell and the output
/// layer (the stream's own kernel).
fn cell_only_ns<W: Weight>(params: &[W]) -> f64 {
    use recur_core::cell::{self, Input};
    let (cell_params, _, _) = LAYOUT.split(params).expect("split");
    let dims = LAYOUT.cell_dims();
    let h_prev = vec![0.1f32; LAYOUT.hidden];
    let mut h = vec![0.0f32; LAYOUT.hidden];
    let mut ws = vec![0.0f32; cell::step_workspace_len(&dims, 1)];
    let mut token = 0u32;
    time_ns(
        || {
            token = (token + 389) % LAYOUT.vocab as u32;
            cell::step_forward(
                &mut h,
                &mut [],
                Input::Tokens(&[black_box(token)]),
                &h_prev,
                &[],
                cell_params,
                &mut ws,
                &dims,
                1,
            )
            .expect("cell step");
            black_box(&h);
        },
        500,
        31,
    )
    .0
}

/// Median and best nanoseconds per call of `f`, over `samples` samples of
/// `iters` calls, after a warm-up sample.
fn time_ns(mut f: impl FnMut(), iters: usize, samples: usize) -> (f64, f64) {
    for _ in 0..iters {
        f();
    }
    let mut v: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

/// Reads every byte of `buf` (a sum of its f32): four interleaved streams
/// (the buffer's quarters, for memory-level parallelism) of AVX2 loads into
/// independent sums where available, else 16 scalar sums the compiler
/// vectorises.
fn read_sum(buf: &[f32], wide: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if wide && std::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected.
        return unsafe { read_sum_avx512(buf) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected.
        return unsafe { read_sum_avx2(buf) };
    }
    let mut acc = [0.0f32; 16];
    for c in buf.chunks_exact(16) {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn read_sum_avx2(buf: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let quarter = buf.len() / 4 / 16 * 16;
    let (q0, rest) = buf.split_at(quarter);
    let (q1, rest) = rest.split_at(quarter);
    let (q2, q3) = rest.split_at(quarter);
    let mut a = [_mm256_setzero_ps(); 8];
    for (((c0, c1), c2), c3) in q0
        .chunks_exact(16)
        .zip(q1.chunks_exact(16))
        .zip(q2.chunks_exact(16))
        .zip(q3.chunks_exact(16))
    {
        for (j, c) in [c0, c1, c2, c3].into_iter().enumerate() {
            a[2 * j] = _mm256_add_ps(a[2 * j], _mm256_loadu_ps(c.as_ptr()));
            a[2 * j + 1] = _mm256_add_ps(a[2 * j + 1], _mm256_loadu_ps(c[8..].as_ptr()));
        }
    }
    let mut out = [0.0f32; 8];
    let mut s = a[0];
    for v in &a[1..] {
        s = _mm256_add_ps(s, *v);
    }
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum::<f32>() + q3[quarter..].iter().sum::<f32>()
}

/// [`read_sum_avx2`] with 512-bit loads.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn read_sum_avx512(buf: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let quarter = buf.len() / 4 / 32 * 32;
    let (q0, rest) = buf.split_at(quarter);
    let (q1, rest) = rest.split_at(quarter);
    let (q2, q3) = rest.split_at(quarter);
    let mut a = [_mm512_setzero_ps(); 8];
    for (((c0, c1), c2), c3) in q0
        .chunks_exact(32)
        .zip(q1.chunks_exact(32))
        .zip(q2.chunks_exact(32))
        .zip(q3.chunks_exact(32))
    {
        for (j, c) in [c0, c1, c2, c3].into_iter().enumerate() {
            a[2 * j] = _mm512_add_ps(a[2 * j], _mm512_loadu_ps(c.as_ptr()));
            a[2 * j + 1] = _mm512_add_ps(a[2 * j + 1], _mm512_loadu_ps(c[16..].as_ptr()));
        }
    }
    let mut s = a[0];
    for v in &a[1..] {
        s = _mm512_add_ps(s, *v);
    }
    _mm512_reduce_add_ps(s) + q3[quarter..].iter().sum::<f32>()
}

/// Read bandwidth in bytes/s over a buffer of `bytes`, median of samples:
/// the faster of 256-bit and (where the processor has them) 512-bit loads.
fn bandwidth(bytes: usize, samples: usize) -> f64 {
    let buf: Vec<f32> = (0..bytes / 4).map(|i| (i % 7) as f32).collect();
    let iters = (64 << 20) / bytes.max(1) + 1;
    let mut best = 0.0f64;
    for wide in [false, true] {
        let (ns, _) = time_ns(
            || _ = black_box(read_sum(black_box(&buf), wide)),
            iters,
            samples,
        );
        best = best.max(bytes as f64 / (ns * 1e-9));
    }
    best
}

fn criterion_steps(c: &mut Criterion) {
    let p32 = params();
    let p16: Vec<f16> = p32.iter().map(|&v| f16::from_f32(v)).collect();
    let mut group = c.benchmark_group("edge step (d2l GRU, H 256, V 1027, batch 1)");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    let mut s32 = Stepper::new(&p32);
    group.bench_function("f32 weights", |b| b.iter(|| s32.step()));
    let mut s16 = Stepper::new(&p16);
    group.bench_function("f16 weights", |b| b.iter(|| s16.step()));
    group.finish();
}

/// `(threads, median µs)` from benches/edge_step_torch.py, or why not.
fn torch_eager() -> Result<Vec<(usize, f64)>, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("RECUR_TORCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let out = Command::new(&python)
        .arg(root.join("benches/edge_step_torch.py"))
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    for line in text.lines().filter(|l| !l.starts_with("RESULT")) {
        println!("  {line}");
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("RESULT torch_eager_us threads=")?;
            let (t, v) = rest.split_once(' ')?;
            Some((t.parse().ok()?, v.parse().ok()?))
        })
        .collect())
}

fn summary(_: &mut Criterion) {
    let p32 = params();
    let p16: Vec<f16> = p32.iter().map(|&v| f16::from_f32(v)).collect();
    let (bytes32, bytes16) = (step_bytes(4), step_bytes(2));
    println!("\n== edge step summary (d2l GRU: gru-reset-before, H 256, V 1027, batch 1)");
    let kernel = Kernel::detect();
    println!(
        "matvec kernel: {} (default; widest supported: {})",
        kernel.name(),
        Kernel::widest().name()
    );
    let mut s32 = Stepper::new(&p32);
    let (t32, best32) = time_ns(|| s32.step(), 500, 31);
    let mut s16 = Stepper::new(&p16);
    let (t16, best16) = time_ns(|| s16.step(), 500, 31);
    let (cell32, cell16) = (cell_only_ns(&p32), cell_only_ns(&p16));
    let bw32 = bandwidth(bytes32, 31);
    let bw16 = bandwidth(bytes16, 31);
    let dram = bandwidth(256 << 20, 7);
    let gb = |b: f64| b / 1e9;
    println!(
        "read bandwidth: {:.1} GB/s over {} B (f32 step's working set), {:.1} GB/s over {} B \
         (f16), {:.1} GB/s over 256 MiB (DRAM)",
        gb(bw32),
        bytes32,
        gb(bw16),
        bytes16,
        gb(dram)
    );
    let mut torch = torch_eager();
    for (name, t, best, bytes, bw, cell_t) in [
        ("f32", t32, best32, bytes32, bw32, cell32),
        ("f16", t16, best16, bytes16, bw16, cell16),
    ] {
        let roof = bytes as f64 / bw * 1e9;
        let roof_dram = bytes as f64 / dram * 1e9;
        println!(
            "{name} weights: step median {:.2} us (best {:.2}), reads {bytes} B = {:.1} GB/s; \
             roofline {:.2} us (same-size read) -> {:.2}x of it; DRAM roofline {:.2} us -> {:.2}x",
            t / 1e3,
            best / 1e3,
            gb(bytes as f64 / (t * 1e-9)),
            roof / 1e3,
            t / roof,
            roof_dram / 1e3,
            t / roof_dram
        );
        // The cell reads weight_hh, the biases and the gathered column; the
        // output layer dense.weight and dense.bias.
        let t_ = LAYOUT.tensors();
        let per = if name == "f32" { 4 } else { 2 };
        let cell_bytes = (t_[1].len() + t_[2].len() + t_[3].len()) * per + t_[0].rows * LINE;
        let dense_bytes = bytes - cell_bytes;
        println!(
            "  split: cell::step_forward {:.2} us ({:.2}x its roofline of {:.2} us), output layer \
             ~{:.2} us ({:.2}x its roofline of {:.2} us)",
            cell_t / 1e3,
            cell_t / (cell_bytes as f64 / bw * 1e9),
            cell_bytes as f64 / bw * 1e6,
            (t - cell_t) / 1e3,
            (t - cell_t) / (dense_bytes as f64 / bw * 1e9),
            dense_bytes as f64 / bw * 1e6
        );
        match &mut torch {
            Ok(results) => {
                for &(threads, us) in results.iter() {
                    println!(
                        "{name} weights vs PyTorch eager ({threads} thread{}): {:.1}x faster",
                        if threads == 1 { "" } else { "s" },
                        us * 1e3 / t
                    );
                }
            }
            Err(reason) => println!("PyTorch eager: skipped: {reason}"),
        }
    }
    // The other kernels this machine supports, for comparison.
    for other in [Kernel::Avx512, Kernel::Avx2, Kernel::Portable] {
        if other == kernel || !other.is_supported() {
            continue;
        }
        Kernel::select(Some(other)).expect("supported kernel");
        let mut s32 = Stepper::new(&p32);
        let (o32, _) = time_ns(|| s32.step(), 500, 31);
        let mut s16 = Stepper::new(&p16);
        let (o16, _) = time_ns(|| s16.step(), 500, 31);
        let (c32, c16) = (cell_only_ns(&p32), cell_only_ns(&p16));
        println!(
            "kernel {} instead: f32 step median {:.2} us (cell {:.2}), f16 {:.2} us (cell {:.2})",
            other.name(),
            o32 / 1e3,
            c32 / 1e3,
            o16 / 1e3,
            c16 / 1e3
        );
    }
    Kernel::select(None).expect("back to the detected kernel");
    matvec_throughput();
}

/// The kernels' product alone, `W x` with K = 256, on a matrix that stays in
/// L1 (32 rows: 16 KB f16, 32 KB f32) and on the output layer's (1,027
/// rows, in L2): elements per nanosecond tell whether a kernel is bound by
/// its instructions (the same rate in L1 and L2) or by the reads.
fn matvec_throughput() {
    let k = 256;
    let x: Vec<f32> = (0..k)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.01)
        .collect();
    for kernel in [Kernel::Avx512, Kernel::Avx2, Kernel::Portable] {
        if !kernel.is_supported() {
            continue;
        }
        let mut line = format!("matvec alone, {}:", kernel.name());
        for rows in [32usize, LAYOUT.vocab] {
            let w32: Vec<f32> = (0..rows * k)
                .map(|i| ((i % 13) as f32 - 6.0) * 0.01)
                .collect();
            let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
            let mut out = vec![0.0f32; rows];
            let iters = (8 << 20) / (rows * k) + 1;
            let (t32, _) = time_ns(
                || {
                    kernel.matvec(&mut out, black_box(&w32), &x).expect("f32");
                    black_box(&out);
                },
                iters,
                15,
            );
            let (t16, _) = time_ns(
                || {
                    kernel.matvec(&mut out, black_box(&w16), &x).expect("f16");
                    black_box(&out);
                },
                iters,
                15,
            );
            let n = (rows * k) as f64;
            line += &format!(
                " {rows} rows: f32 {:.1} elem/ns ({:.0} GB/s), f16 {:.1} elem/ns ({:.0} GB/s);",
                n / t32,
                4.0 * n / t32,
                n / t16,
                2.0 * n / t16
            );
        }
        println!("{line}");
    }
}

criterion_group!(benches, criterion_steps, summary);
criterion_main!(benches);
