//! Finite-difference gradient checks of recur-core's recurrent cells.
//!
//! For every cell kind, a 4-step, 3-row sequence (dense input and token
//! input) is run through `sequence_forward`; the loss is a fixed random
//! projection `L = Σ_t Σ P_t ⊙ h_t` (evaluated in f64), so every gate and
//! every step contributes. The analytic gradients of `sequence_backward`
//! (every parameter, the dense input, `h0` and `c0`) are compared with
//! central differences of that loss, element by element.
//!
//! Tolerance: `|fd − analytic| ≤ ATOL + RTOL·|analytic|` with `EPS = 1e-2`,
//! `ATOL = 1e-3`, `RTOL = 5e-3`. Why: the forward runs in f32, so each `h`
//! carries ~1e-7 rounding and the loss difference ~1e-6 noise, i.e. ~1e-4
//! after dividing by `2·EPS`; the O(EPS²) truncation error of the central
//! difference is of the same order. A wrong or missing gradient term shows
//! up as an error of order 0.1–1. Run with `--nocapture` to see the largest
//! errors per cell and tensor.

use recur_core::cell::{
    cache_len, sequence_backward, sequence_forward, workspace_len, Input, SeqDims,
};
use recur_core::{CellDims, CellGrads, CellKind, CellParams, Error, Portable};

const EPS: f32 = 1e-2;
const ATOL: f64 = 1e-3;
const RTOL: f64 = 5e-3;

/// splitmix64: a tiny deterministic generator, so the test needs no crate.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-a, a).
    fn uniform(&mut self, a: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * a
    }
    fn fill(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(a)).collect()
    }
}

/// One gradient-check problem. All differentiable values live in `vars`,
/// in the order of [`Problem::spans`].
struct Problem {
    dims: SeqDims,
    tokens: Option<Vec<u32>>,
    vars: Vec<f32>,
    proj: Vec<f32>,
}

/// A named range of `vars`.
struct Span {
    name: &'static str,
    start: usize,
    len: usize,
}

impl Problem {
    fn new(kind: CellKind, tokens: bool, seed: u64, steps: usize) -> Problem {
        let (t, b, i, h) = (steps, 3, 5, 4);
        let dims = SeqDims {
            cell: CellDims {
                cell: kind,
                input: i,
                hidden: h,
            },
            steps: t,
            batch: b,
        };
        let mut rng = Rng(seed);
        let d = dims.cell;
        let mut vars = Vec::new();
        vars.extend(rng.fill(d.weight_ih_len(), 0.6));
        vars.extend(rng.fill(d.weight_hh_len(), 0.6));
        vars.extend(rng.fill(d.bias_len(), 0.3));
        vars.extend(rng.fill(d.bias_len(), 0.3));
        let tokens = if tokens {
            Some(
                (0..t * b)
                    .map(|_| (rng.next_u64() % i as u64) as u32)
                    .collect(),
            )
        } else {
            vars.extend(rng.fill(t * b * i, 1.0));
            None
        };
        vars.extend(rng.fill(b * h, 0.8));
        if kind.has_cell_state() {
            vars.extend(rng.fill(b * h, 0.8));
        }
        let proj = rng.fill(t * b * h, 1.0);
        Problem {
            dims,
            tokens,
            vars,
            proj,
        }
    }

    fn spans(&self) -> Vec<Span> {
        let d = self.dims.cell;
        let (t, b, h) = (self.dims.steps, self.dims.batch, d.hidden);
        let mut lens = vec![
            ("weight_ih", d.weight_ih_len()),
            ("weight_hh", d.weight_hh_len()),
            ("bias_ih", d.bias_len()),
            ("bias_hh", d.bias_len()),
        ];
        if self.tokens.is_none() {
            lens.push(("input", t * b * d.input));
        }
        lens.push(("h0", b * h));
        if d.cell.has_cell_state() {
            lens.push(("c0", b * h));
        }
        let mut start = 0;
        lens.into_iter()
            .map(|(name, len)| {
                let s = Span { name, start, len };
                start += len;
                s
            })
            .collect()
    }

    fn part<'a>(&self, vars: &'a [f32], name: &str) -> &'a [f32] {
        match self.spans().into_iter().find(|s| s.name == name) {
            Some(s) => &vars[s.start..s.start + s.len],
            None => &[],
        }
    }

    fn input<'a>(&'a self, vars: &'a [f32]) -> Input<'a> {
        match &self.tokens {
            Some(ids) => Input::Tokens(ids),
            None => Input::Dense(self.part(vars, "input")),
        }
    }

    fn params<'a>(&self, vars: &'a [f32]) -> CellParams<'a, f32> {
        CellParams {
            weight_ih: self.part(vars, "weight_ih"),
            weight_hh: self.part(vars, "weight_hh"),
            bias_ih: self.part(vars, "bias_ih"),
            bias_hh: self.part(vars, "bias_hh"),
        }
    }

    /// Forward with `vars`; returns `(hs, cache)`. Outputs, cache and
    /// workspace are NaN-poisoned first.
    fn forward(&self, vars: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let d = &self.dims;
        let bh = d.batch * d.cell.hidden;
        let mut hs = vec![f32::NAN; d.steps * bh];
        let mut c_last = vec![f32::NAN; if d.cell.cell.has_cell_state() { bh } else { 0 }];
        let mut cache = vec![f32::NAN; cache_len(d)];
        let mut ws = vec![f32::NAN; workspace_len(d)];
        sequence_forward(
            &mut hs,
            &mut c_last,
            self.input(vars),
            self.part(vars, "h0"),
            self.part(vars, "c0"),
            self.params(vars),
            &mut cache,
            &mut ws,
            d,
            &Portable,
        )
        .unwrap();
        assert!(hs.iter().chain(&c_last).all(|v| v.is_finite()));
        if d.cell.cell.has_cell_state() {
            // c_last is the last step's cell state, cached as the last (B, H)
            // row block of the `c` section (gates 4H, then c, then tanh c).
            let c_at = d.steps * d.batch * 4 * d.cell.hidden + (d.steps - 1) * bh;
            assert_eq!(c_last, cache[c_at..c_at + bh]);
        }
        (hs, cache)
    }

    fn loss(&self, vars: &[f32]) -> f64 {
        let (hs, _) = self.forward(vars);
        hs.iter()
            .zip(&self.proj)
            .map(|(&h, &p)| h as f64 * p as f64)
            .sum()
    }

    /// Analytic gradient of the loss w.r.t. `vars`, from `sequence_backward`
    /// called `calls` times (gradients accumulate, so the result is
    /// `calls ×` the gradient).
    fn analytic(&self, calls: usize) -> Vec<f32> {
        let d = &self.dims;
        let vars = &self.vars;
        let (hs, cache) = self.forward(vars);
        let spans = self.spans();
        let mut grad = vec![0.0f32; vars.len()];
        for _ in 0..calls {
            let mut ws = vec![f32::NAN; workspace_len(d)];
            let mut rest = grad.as_mut_slice();
            let mut parts: Vec<&mut [f32]> = Vec::new();
            for s in &spans {
                let (head, tail) = rest.split_at_mut(s.len);
                parts.push(head);
                rest = tail;
            }
            let mut it = parts.into_iter();
            let mut grads = CellGrads {
                weight_ih: it.next().unwrap(),
                weight_hh: it.next().unwrap(),
                bias_ih: it.next().unwrap(),
                bias_hh: it.next().unwrap(),
            };
            let dinput = if self.tokens.is_none() {
                it.next()
            } else {
                None
            };
            let dh0 = it.next().unwrap();
            let mut no_c: [f32; 0] = [];
            let dc0 = it.next().unwrap_or(&mut no_c);
            sequence_backward(
                &mut grads,
                dinput,
                dh0,
                dc0,
                &self.proj,
                self.input(vars),
                self.part(vars, "h0"),
                self.part(vars, "c0"),
                self.params(vars),
                &hs,
                &cache,
                &mut ws,
                d,
                &Portable,
            )
            .unwrap();
        }
        grad
    }

    fn numeric(&self) -> Vec<f64> {
        let mut vars = self.vars.clone();
        (0..vars.len())
            .map(|k| {
                let v = vars[k];
                vars[k] = v + EPS;
                let up = self.loss(&vars);
                vars[k] = v - EPS;
                let down = self.loss(&vars);
                vars[k] = v;
                // The actually represented step, not the nominal one.
                let step = ((v + EPS) as f64) - ((v - EPS) as f64);
                (up - down) / step
            })
            .collect()
    }

    /// Smallest |pre-activation| of an RNN, computed here in f64 from the
    /// core's own outputs: relu has a kink at 0 that a finite difference
    /// must not straddle.
    fn rnn_min_abs_pre(&self) -> f64 {
        let d = &self.dims;
        let (t, b, i, h) = (d.steps, d.batch, d.cell.input, d.cell.hidden);
        let (hs, _) = self.forward(&self.vars);
        let p = self.params(&self.vars);
        let h0 = self.part(&self.vars, "h0");
        let mut min = f64::INFINITY;
        for s in 0..t {
            for r in 0..b {
                let hp = if s == 0 {
                    &h0[r * h..(r + 1) * h]
                } else {
                    &hs[((s - 1) * b + r) * h..((s - 1) * b + r + 1) * h]
                };
                for j in 0..h {
                    let mut pre = p.bias_ih[j] as f64 + p.bias_hh[j] as f64;
                    match self.input(&self.vars) {
                        Input::Dense(x) => {
                            for k in 0..i {
                                pre +=
                                    p.weight_ih[j * i + k] as f64 * x[(s * b + r) * i + k] as f64;
                            }
                        }
                        Input::Tokens(ids) => {
                            pre += p.weight_ih[j * i + ids[s * b + r] as usize] as f64
                        }
                    }
                    let row = &p.weight_hh[j * h..(j + 1) * h];
                    for (&w, &hk) in row.iter().zip(hp) {
                        pre += w as f64 * hk as f64;
                    }
                    min = min.min(pre.abs());
                }
            }
        }
        min
    }
}

/// Builds the problem, re-drawing for relu until no pre-activation is
/// within reach of the kink (each perturbation moves a pre-activation by at
/// most ~EPS·max|x|, here ≤ 2·EPS).
fn problem(kind: CellKind, tokens: bool, steps: usize) -> Problem {
    for seed in 1.. {
        let p = Problem::new(kind, tokens, seed * 7919 + kind as u64, steps);
        if kind != CellKind::RnnRelu || p.rnn_min_abs_pre() > 5.0 * EPS as f64 {
            return p;
        }
    }
    unreachable!()
}

fn check(kind: CellKind, tokens: bool, steps: usize) {
    let p = problem(kind, tokens, steps);
    let an = p.analytic(1);
    let fd = p.numeric();
    let mut failures = Vec::new();
    for s in p.spans() {
        let (mut worst_abs, mut worst_rel) = (0.0f64, 0.0f64);
        for k in s.start..s.start + s.len {
            let (a, f) = (an[k] as f64, fd[k]);
            let e = (a - f).abs();
            worst_abs = worst_abs.max(e);
            worst_rel = worst_rel.max(e / a.abs().max(1e-3));
            if e > ATOL + RTOL * a.abs() {
                failures.push(format!(
                    "{}[{}]: analytic {a}, numeric {f}",
                    s.name,
                    k - s.start
                ));
            }
        }
        println!(
            "{:<17} T={steps} {:<6} {:<9} max |fd - an| = {worst_abs:.2e}, max rel = {worst_rel:.2e}",
            kind.name(),
            if tokens { "tokens" } else { "dense" },
            s.name,
        );
    }
    assert!(
        failures.is_empty(),
        "{} ({}): {} gradient mismatches, first: {:?}",
        kind.name(),
        if tokens { "tokens" } else { "dense" },
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Accumulation: two backward calls give twice the gradient.
    let twice = p.analytic(2);
    for (k, (&a, &b)) in an.iter().zip(&twice).enumerate() {
        assert!(
            (2.0 * a - b).abs() <= 1e-5 * (1.0 + a.abs()),
            "{}: gradient {k} does not accumulate: {a} then {b}",
            kind.name()
        );
    }
}

#[test]
fn gradcheck_rnn_tanh() {
    check(CellKind::RnnTanh, false, 4);
    check(CellKind::RnnTanh, true, 4);
}

#[test]
fn gradcheck_rnn_relu() {
    check(CellKind::RnnRelu, false, 4);
    check(CellKind::RnnRelu, true, 4);
}

#[test]
fn gradcheck_gru_reset_before() {
    check(CellKind::GruResetBefore, false, 4);
    check(CellKind::GruResetBefore, true, 4);
}

#[test]
fn gradcheck_gru_reset_after() {
    check(CellKind::GruResetAfter, false, 4);
    check(CellKind::GruResetAfter, true, 4);
}

#[test]
fn gradcheck_lstm() {
    check(CellKind::Lstm, false, 4);
    check(CellKind::Lstm, true, 4);
}

/// A single step (T = 1) exercises the paths where `h0` is the only
/// previous state.
#[test]
fn gradcheck_single_step() {
    for kind in CellKind::ALL {
        check(kind, false, 1);
    }
}

#[test]
fn errors_name_the_wrong_argument() {
    let p = Problem::new(CellKind::Lstm, true, 5, 4);
    let d = p.dims;
    let bh = d.batch * d.cell.hidden;
    let mut hs = vec![f32::NAN; d.steps * bh];
    let mut c_last = vec![f32::NAN; bh];
    let mut cache = vec![f32::NAN; cache_len(&d)];
    let mut ws = vec![f32::NAN; workspace_len(&d)];
    let h0 = p.part(&p.vars, "h0").to_vec();
    let c0 = p.part(&p.vars, "c0").to_vec();
    let params = p.params(&p.vars);
    let mut run = |input: Input<'_>, h0: &[f32], c0: &[f32], ws_len: usize| {
        sequence_forward(
            &mut hs,
            &mut c_last,
            input,
            h0,
            c0,
            params,
            &mut cache,
            &mut ws[..ws_len],
            &d,
            &Portable,
        )
    };
    let ids = p.tokens.clone().unwrap();
    let wl = workspace_len(&d);
    assert!(run(Input::Tokens(&ids), &h0, &c0, wl).is_ok());
    let mut bad = ids.clone();
    bad[7] = d.cell.input as u32;
    assert_eq!(
        run(Input::Tokens(&bad), &h0, &c0, wl),
        Err(Error::Token {
            what: "input",
            index: 7,
            value: d.cell.input as u32,
            limit: d.cell.input,
        })
    );
    assert!(matches!(
        run(Input::Tokens(&ids[1..]), &h0, &c0, wl),
        Err(Error::Length { what: "input", .. })
    ));
    assert!(matches!(
        run(Input::Tokens(&ids), &h0[1..], &c0, wl),
        Err(Error::Length { what: "h0", .. })
    ));
    assert!(matches!(
        run(Input::Tokens(&ids), &h0, &[], wl),
        Err(Error::Length { what: "c0", .. })
    ));
    assert!(matches!(
        run(Input::Tokens(&ids), &h0, &c0, wl - 1),
        Err(Error::Length {
            what: "workspace",
            ..
        })
    ));
}
