//! Shared helpers of the engine tests: the GPU (or a skip), random models,
//! recur-core's reference and the comparison with its tolerance.
#![allow(dead_code)]

pub mod loops;

use std::sync::OnceLock;

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::core::cell::{step_forward, step_workspace_len};
use recur::core::{CellDims, CellKind, CellParams, Input, ModelLayout};
use recur::engine::half::round_f16;
use recur::engine::{Gpu, Precision};

/// The process-wide GPU, or `None` (tests then print the skip and pass).
pub fn gpu() -> Option<Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new() {
        Ok(g) => Some(g),
        Err(e) if e.is_no_device() => None,
        Err(e) => panic!("opening the GPU failed: {e}"),
    })
    .clone()
}

/// A GRU hidden size whose W_hh alone (3·H² f32, 12·H² bytes) is at least
/// twice `total_bytes`: a model that cannot fit in a GPU of that memory.
pub fn gru_hidden_beyond(total_bytes: usize) -> usize {
    (total_bytes as f64 / 6.0).sqrt() as usize + 1
}

/// Returns the GPU or prints `skipped: no CUDA device` and returns from the test.
#[macro_export]
macro_rules! gpu_or_skip {
    () => {
        match engine_support::gpu() {
            Some(g) => g,
            None => {
                // Straight to stderr: the harness captures println!, and a
                // skipped GPU test must say so in CI's log.
                let _ =
                    std::io::Write::write_all(&mut std::io::stderr(), b"skipped: no CUDA device\n");
                return;
            }
        }
    };
}

/// Uniform(-k, k) with k = 1/√H for every parameter (PyTorch's RNN init).
pub fn random_params(layout: &ModelLayout, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let k = 1.0 / (layout.hidden as f32).sqrt();
    (0..layout.len()).map(|_| rng.random_range(-k..k)).collect()
}

pub fn random_tokens(n: usize, limit: usize, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..limit as u32)).collect()
}

pub fn random_vec(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// The reference sequence: recur-core's `step_forward` step by step.
/// f16 mode: weights as f16 (`step_forward::<f16>`), and `h` rounded to f16
/// after every step, as the engine stores it; `c` stays f32.
pub struct Reference {
    /// (T, B, H)
    pub hs: Vec<f32>,
    /// (B, H)
    pub h_last: Vec<f32>,
    /// (B, H), LSTM
    pub c_last: Vec<f32>,
}

pub enum RefInput<'a> {
    /// (T, B)
    Tokens(&'a [u32]),
    /// (T, B, I)
    Dense(&'a [f32]),
}

#[allow(clippy::too_many_arguments)]
pub fn reference(
    dims: CellDims,
    cell_params: &[f32],
    input: RefInput<'_>,
    h0: &[f32],
    c0: &[f32],
    steps: usize,
    batch: usize,
    precision: Precision,
) -> Reference {
    let h = dims.hidden;
    let lens = [
        dims.weight_ih_len(),
        dims.weight_hh_len(),
        dims.bias_len(),
        dims.bias_len(),
    ];
    let mut parts = Vec::new();
    let mut at = 0;
    for n in lens {
        parts.push(&cell_params[at..at + n]);
        at += n;
    }
    let lstm = dims.cell == CellKind::Lstm;
    let bh = batch * h;
    let store = |v: f32| match precision {
        Precision::F32 => v,
        Precision::F16 => round_f16(v),
    };
    let mut h_prev: Vec<f32> = h0.iter().map(|&v| store(v)).collect();
    let mut c_prev: Vec<f32> = if lstm { c0.to_vec() } else { Vec::new() };
    let mut hs = Vec::with_capacity(steps * bh);
    let mut ws = vec![0.0f32; step_workspace_len(&dims, batch)];
    let half_parts: Vec<Vec<f16>> = parts
        .iter()
        .map(|p| p.iter().map(|&v| f16::from_f32(v)).collect())
        .collect();
    let dense_round: Vec<f32>;
    let input_dense = match input {
        RefInput::Dense(x) => {
            dense_round = x.iter().map(|&v| store(v)).collect();
            Some(&dense_round[..])
        }
        RefInput::Tokens(_) => None,
    };
    for t in 0..steps {
        let step_input = match (&input, input_dense) {
            (RefInput::Tokens(ids), _) => Input::Tokens(&ids[t * batch..(t + 1) * batch]),
            (_, Some(x)) => Input::Dense(&x[t * batch * dims.input..(t + 1) * batch * dims.input]),
            _ => unreachable!(),
        };
        let mut h_new = vec![f32::NAN; bh];
        let mut c_new = if lstm { vec![f32::NAN; bh] } else { Vec::new() };
        match precision {
            Precision::F32 => {
                let p = CellParams {
                    weight_ih: parts[0],
                    weight_hh: parts[1],
                    bias_ih: parts[2],
                    bias_hh: parts[3],
                };
                step_forward(
                    &mut h_new, &mut c_new, step_input, &h_prev, &c_prev, p, &mut ws, &dims, batch,
                )
            }
            Precision::F16 => {
                let p = CellParams {
                    weight_ih: &half_parts[0][..],
                    weight_hh: &half_parts[1][..],
                    bias_ih: &half_parts[2][..],
                    bias_hh: &half_parts[3][..],
                };
                step_forward(
                    &mut h_new, &mut c_new, step_input, &h_prev, &c_prev, p, &mut ws, &dims, batch,
                )
            }
        }
        .expect("reference step");
        for v in &mut h_new {
            *v = store(*v);
        }
        hs.extend_from_slice(&h_new);
        h_prev = h_new;
        c_prev = c_new;
    }
    Reference {
        hs,
        h_last: h_prev,
        c_last: c_prev,
    }
}

/// Tolerance `|got − want| ≤ abs + rel·|want|` of the recurrent outputs.
///
/// - f32: the engine sums the H (and gather) terms of each pre-activation
///   in another order than recur-core, with its own `expf`/`tanhf` (≤ 2 ulp):
///   each step differs by a few ulp of the terms' magnitude, and the
///   difference is carried through the recurrence (contractive for the
///   saturating cells, growing with the values themselves for relu). We
///   allow rel = 2e-5 (≈ 170 units of roundoff) and abs = 2e-6 per step;
///   `tolerance_covers_reordered_accumulation` (engine_forward.rs) checks it
///   against a reordered f64 implementation, whose largest difference from
///   recur-core on the device tests' shapes is about 1/40 of it.
/// - f16: both sides round h to f16 after every step, so they differ where
///   an f32-level difference pushes a value across an f16 rounding boundary
///   (one f16 ulp, 2⁻¹¹·|h|). Such a flip moves the next step's
///   pre-activation j by |w_jk|·2⁻¹¹·|h_k|: summed over the H terms of the
///   row at most 2⁻¹¹·Σ_k|w_jk||h_k| ≤ 2⁻¹¹·S with S = max_j Σ_k |w_jk|
///   (√H for weights in ±1/√H). We allow rel = 2·2⁻¹¹ and
///   abs = 2⁻¹¹·(2 + S)·√T (flips at different steps add up like a random
///   walk); checked the same way against an f64 implementation that rounds
///   to f16 at the same points.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub abs: f32,
    pub rel: f32,
}

pub fn recurrent_tol(precision: Precision, steps: usize, w_hh: &[f32], hidden: usize) -> Tol {
    match precision {
        Precision::F32 => Tol {
            abs: 2e-6 * steps as f32,
            rel: 2e-5,
        },
        Precision::F16 => {
            let s = w_hh
                .chunks(hidden)
                .map(|row| row.iter().map(|w| w.abs()).sum::<f32>())
                .fold(0.0f32, f32::max);
            let u = 2.0f32.powi(-11);
            Tol {
                abs: u * (2.0 + s) * (steps as f32).sqrt(),
                rel: 2.0 * u,
            }
        }
    }
}

/// `Ok(max |got − want| / (abs + rel·|want|))` (≤ 1 passes), or the first
/// element that fails (NaN included).
pub fn compare(what: &str, got: &[f32], want: &[f32], tol: Tol) -> Result<f32, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    let mut worst = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let bound = tol.abs + tol.rel * w.abs();
        let d = (g - w).abs();
        if d.is_nan() || d > bound {
            return Err(format!(
                "{what}[{i}]: got {g}, want {w} (|diff| {d:e} > {bound:e})"
            ));
        }
        worst = worst.max(d / bound);
    }
    Ok(worst)
}

/// `|got − want| ≤ abs + |want|·rel` everywhere (NaN fails); returns the
/// worst ratio of difference to tolerance.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = abs + w.abs() * rel;
        let err = (g - w).abs();
        assert!(
            err <= tol,
            "{what}[{i}]: engine {g}, recur-core {w} (|diff| {err} > {tol})"
        );
        worst = worst.max(err / tol);
    }
    worst
}

/// The W_hh block of a cell's flat parameters.
pub fn w_hh(dims: &CellDims, cell_params: &[f32]) -> Vec<f32> {
    let at = dims.weight_ih_len();
    cell_params[at..at + dims.weight_hh_len()].to_vec()
}
