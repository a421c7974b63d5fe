//! recur-core's cells against PyTorch.
//!
//! `tests/golden/` holds what `tests/torch_golden.py` computed with PyTorch
//! (in f64, from exact f32 weights and inputs) for nn.RNN (tanh, relu),
//! nn.GRU (= recur's reset-after GRU) and nn.LSTM: outputs, final states and
//! every gradient of `L = Σ P ⊙ output`, for a dense input and for token ids
//! (fed to PyTorch as one-hot vectors). The reset-before GRU, which PyTorch
//! does not have, is checked against a naive f64 implementation of d2l's
//! from-scratch formula written below, with gradients from f64 central
//! differences of it.
//!
//! Tolerance: `|recur − reference| ≤ ATOL + RTOL·|reference|`, `ATOL = 5e-6`,
//! `RTOL = 1e-5`: recur computes in f32 (with its own exp/tanh, a few ulp),
//! the references in f64; with H = 6, T = 5, B = 3 the sums involved are
//! short, and the errors seen are up to ~1.5e-6 (gradients of magnitude up to
//! ~10). Run with `--nocapture` for the largest per tensor.

use std::collections::BTreeMap;

use recur_core::cell::{
    cache_len, sequence_backward, sequence_forward, step_forward, step_workspace_len,
    workspace_len, Input, SeqDims,
};
use recur_core::{CellDims, CellGrads, CellKind, CellParams, Portable};

const ATOL: f64 = 5e-6;
const RTOL: f64 = 1e-5;

// ---------------------------------------------------------------------------
// A minimal JSON reader (objects, arrays, numbers, plain strings), enough for
// the golden index; the test needs no crate.

#[derive(Debug)]
enum Json {
    Obj(BTreeMap<String, Json>),
    Arr(Vec<Json>),
    Num(f64),
    /// Strings, booleans and null: not needed beyond the keys.
    Other,
}

impl Json {
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m
                .get(key)
                .unwrap_or_else(|| panic!("golden index: no key {key:?}")),
            _ => panic!("golden index: {key:?} looked up in a non-object"),
        }
    }
    fn num(&self) -> f64 {
        match self {
            Json::Num(v) => *v,
            _ => panic!("golden index: not a number: {self:?}"),
        }
    }
    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => panic!("golden index: not an array: {self:?}"),
        }
    }
    fn obj(&self) -> &BTreeMap<String, Json> {
        match self {
            Json::Obj(m) => m,
            _ => panic!("golden index: not an object"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }
    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(self.s[self.at], c, "golden index: bad JSON at {}", self.at);
        self.at += 1;
    }
    fn string(&mut self) -> String {
        self.eat(b'"');
        let start = self.at;
        while self.s[self.at] != b'"' {
            assert_ne!(self.s[self.at], b'\\', "golden index: escapes unsupported");
            self.at += 1;
        }
        self.at += 1;
        String::from_utf8(self.s[start..self.at - 1].to_vec()).unwrap()
    }
    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.at] {
            b'{' => {
                self.at += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s[self.at] == b'}' {
                    self.at += 1;
                    return Json::Obj(m);
                }
                loop {
                    let k = self.string();
                    self.eat(b':');
                    m.insert(k, self.value());
                    self.ws();
                    self.at += 1;
                    if self.s[self.at - 1] == b'}' {
                        return Json::Obj(m);
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s[self.at] == b']' {
                    self.at += 1;
                    return Json::Arr(v);
                }
                loop {
                    v.push(self.value());
                    self.ws();
                    self.at += 1;
                    if self.s[self.at - 1] == b']' {
                        return Json::Arr(v);
                    }
                }
            }
            b'"' => {
                self.string();
                Json::Other
            }
            _ => {
                let start = self.at;
                while self.at < self.s.len() && !b",]} \n\r\t".contains(&self.s[self.at]) {
                    self.at += 1;
                }
                let tok = std::str::from_utf8(&self.s[start..self.at]).unwrap();
                tok.parse().map(Json::Num).unwrap_or(Json::Other)
            }
        }
    }
}

// ---------------------------------------------------------------------------

/// The golden data of one PyTorch module.
struct Case {
    name: String,
    ids: Vec<u32>,
    tensors: BTreeMap<String, Vec<f32>>,
}

impl Case {
    fn t(&self, name: &str) -> &[f32] {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}: no tensor {name}", self.name))
    }
    fn opt(&self, name: &str) -> &[f32] {
        self.tensors.get(name).map_or(&[], |v| v.as_slice())
    }
    fn params(&self) -> CellParams<'_, f32> {
        CellParams {
            weight_ih: self.t("weight_ih"),
            weight_hh: self.t("weight_hh"),
            bias_ih: self.t("bias_ih"),
            bias_hh: self.t("bias_hh"),
        }
    }
}

struct Golden {
    dims: (usize, usize, usize, usize),
    cases: Vec<Case>,
}

fn load() -> Golden {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    let text = std::fs::read(format!("{dir}/cells.json")).expect("tests/golden/cells.json");
    let index = Parser { s: &text, at: 0 }.value();
    let bytes = std::fs::read(format!("{dir}/cells.f32")).expect("tests/golden/cells.f32");
    let blob: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let d = index.get("dims");
    let dims = (
        d.get("steps").num() as usize,
        d.get("batch").num() as usize,
        d.get("input").num() as usize,
        d.get("hidden").num() as usize,
    );
    let cases = index
        .get("cases")
        .obj()
        .iter()
        .map(|(name, c)| {
            let tensors = c
                .get("tensors")
                .obj()
                .iter()
                .map(|(tn, spec)| {
                    let off = spec.get("offset").num() as usize;
                    let len: usize = spec
                        .get("shape")
                        .arr()
                        .iter()
                        .map(|s| s.num() as usize)
                        .product();
                    (tn.clone(), blob[off..off + len].to_vec())
                })
                .collect();
            let ids = c
                .get("token_ids")
                .arr()
                .iter()
                .map(|v| v.num() as u32)
                .collect();
            Case {
                name: name.clone(),
                ids,
                tensors,
            }
        })
        .collect();
    Golden { dims, cases }
}

fn kind_of(case: &str) -> CellKind {
    match case {
        "rnn_tanh" => CellKind::RnnTanh,
        "rnn_relu" => CellKind::RnnRelu,
        "gru" => CellKind::GruResetAfter,
        "lstm" => CellKind::Lstm,
        other => panic!("unknown golden case {other}"),
    }
}

/// Largest error seen per label, and the failures.
#[derive(Default)]
struct Report {
    worst: Vec<(String, f64)>,
    failures: Vec<String>,
}

impl Report {
    fn compare(&mut self, label: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{label}: length");
        let mut worst = 0.0f64;
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            let e = (g as f64 - w).abs();
            if e.is_nan() || e > ATOL + RTOL * w.abs() {
                self.failures
                    .push(format!("{label}[{k}]: recur {g}, reference {w}"));
            }
            worst = worst.max(if e.is_nan() { f64::INFINITY } else { e });
        }
        println!("{label:<40} max |err| = {worst:.2e}");
        self.worst.push((label.to_string(), worst));
    }
    fn compare32(&mut self, label: &str, got: &[f32], want: &[f32]) {
        let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        self.compare(label, got, &want);
    }
    fn finish(self) {
        let max = self.worst.iter().map(|w| w.1).fold(0.0, f64::max);
        println!("largest error overall: {max:.2e}");
        assert!(
            self.failures.is_empty(),
            "{} mismatches, first: {:?}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
    }
}

/// Forward and backward through recur-core; returns
/// `(hs, c_last, [dW_ih, dW_hh, db_ih, db_hh, dinput, dh0, dc0])`.
fn run_core(
    dims: &SeqDims,
    input: Input<'_>,
    h0: &[f32],
    c0: &[f32],
    params: CellParams<'_, f32>,
    proj: &[f32],
) -> (Vec<f32>, Vec<f32>, [Vec<f32>; 7]) {
    let cd = dims.cell;
    let bh = dims.batch * cd.hidden;
    let state = if cd.cell.has_cell_state() { bh } else { 0 };
    let mut hs = vec![f32::NAN; dims.steps * bh];
    let mut c_last = vec![f32::NAN; state];
    let mut cache = vec![f32::NAN; cache_len(dims)];
    let mut ws = vec![f32::NAN; workspace_len(dims)];
    sequence_forward(
        &mut hs,
        &mut c_last,
        input,
        h0,
        c0,
        params,
        &mut cache,
        &mut ws,
        dims,
        &Portable,
    )
    .unwrap();
    let mut g = [
        vec![0.0; cd.weight_ih_len()],
        vec![0.0; cd.weight_hh_len()],
        vec![0.0; cd.bias_len()],
        vec![0.0; cd.bias_len()],
        vec![
            0.0;
            if matches!(input, Input::Dense(_)) {
                dims.steps * dims.batch * cd.input
            } else {
                0
            }
        ],
        vec![0.0; bh],
        vec![0.0; state],
    ];
    ws.fill(f32::NAN);
    {
        let [wih, whh, bih, bhh, dx, dh0, dc0] = &mut g;
        let mut grads = CellGrads {
            weight_ih: wih,
            weight_hh: whh,
            bias_ih: bih,
            bias_hh: bhh,
        };
        let dinput = if dx.is_empty() {
            None
        } else {
            Some(dx.as_mut_slice())
        };
        sequence_backward(
            &mut grads, dinput, dh0, dc0, proj, input, h0, c0, params, &hs, &cache, &mut ws, dims,
            &Portable,
        )
        .unwrap();
    }
    (hs, c_last, g)
}

/// Runs `step_forward` T times (f32 weights) and returns all the states.
fn run_steps(
    dims: &SeqDims,
    input: Input<'_>,
    h0: &[f32],
    c0: &[f32],
    params: CellParams<'_, f32>,
) -> Vec<f32> {
    let cd = dims.cell;
    let (b, i) = (dims.batch, cd.input);
    let bh = b * cd.hidden;
    let (mut h, mut c) = (h0.to_vec(), c0.to_vec());
    let mut ws = vec![f32::NAN; step_workspace_len(&cd, b)];
    let mut out = Vec::new();
    for t in 0..dims.steps {
        let mut h_new = vec![f32::NAN; bh];
        let mut c_new = vec![f32::NAN; c.len()];
        let x = match input {
            Input::Dense(x) => Input::Dense(&x[t * b * i..(t + 1) * b * i]),
            Input::Tokens(ids) => Input::Tokens(&ids[t * b..(t + 1) * b]),
        };
        step_forward(&mut h_new, &mut c_new, x, &h, &c, params, &mut ws, &cd, b).unwrap();
        out.extend_from_slice(&h_new);
        (h, c) = (h_new, c_new);
    }
    out
}

#[test]
fn cells_match_pytorch() {
    let golden = load();
    let (t, b, i, h) = golden.dims;
    assert_eq!(golden.cases.len(), 4, "rnn_tanh, rnn_relu, gru, lstm");
    let mut report = Report::default();
    for case in &golden.cases {
        let kind = kind_of(&case.name);
        let dims = SeqDims {
            cell: CellDims {
                cell: kind,
                input: i,
                hidden: h,
            },
            steps: t,
            batch: b,
        };
        let x = case.t("input");
        let (h0, c0, proj) = (case.t("h0"), case.opt("c0"), case.t("proj"));
        for mode in ["dense", "tokens"] {
            let input = if mode == "dense" {
                Input::Dense(x)
            } else {
                Input::Tokens(&case.ids)
            };
            let (hs, c_last, g) = run_core(&dims, input, h0, c0, case.params(), proj);
            let label = |what: &str| format!("{} {mode} {what}", case.name);
            let want = |what: &str| case.t(&format!("{mode}.{what}"));
            report.compare32(&label("output"), &hs, want("output"));
            report.compare32(&label("h_n"), &hs[(t - 1) * b * h..], want("h_n"));
            if kind.has_cell_state() {
                report.compare32(&label("c_n"), &c_last, want("c_n"));
            }
            let names = [
                "grad_weight_ih",
                "grad_weight_hh",
                "grad_bias_ih",
                "grad_bias_hh",
                "grad_input",
                "grad_h0",
                "grad_c0",
            ];
            for (name, got) in names.iter().zip(&g) {
                let want = case.opt(&format!("{mode}.{name}"));
                assert_eq!(got.len(), want.len(), "{} {mode} {name}", case.name);
                if !got.is_empty() {
                    report.compare32(&label(name), got, want);
                }
            }
            let steps = run_steps(&dims, input, h0, c0, case.params());
            report.compare32(&label("step_forward"), &steps, want("output"));
        }
    }
    report.finish();
}

// ---------------------------------------------------------------------------
// The reset-before GRU against d2l's from-scratch formula, in f64:
//   Z = σ(X W_xz + H W_hz + b_z), R = σ(X W_xr + H W_hr + b_r),
//   H̃ = tanh(X W_xh + (R ⊙ H) W_hh + b_h), H = Z ⊙ H + (1 − Z) ⊙ H̃,
// with recur's PyTorch layout mapped onto d2l's names: W_x* is the transpose
// of a gate block of weight_ih, W_h* of weight_hh, b_* = b_ih + b_hh of the
// block.

/// The variables of the naive model, all f64.
#[derive(Clone)]
struct Naive {
    wih: Vec<f64>,
    whh: Vec<f64>,
    bih: Vec<f64>,
    bhh: Vec<f64>,
    x: Vec<f64>,
    h0: Vec<f64>,
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// Where d2l's candidate state applies the reset gate.
#[derive(Clone, Copy, PartialEq)]
enum Reset {
    /// PyTorch chapter (seed 003): `tanh(X W_xh + (R ⊙ H) W_hh + b_h)`.
    Before,
    /// MXNet chapter (seed 000): `tanh(X W_xh + R ⊙ (H W_hh) + b_h)`.
    AfterNoBias,
}

/// d2l's loop; returns all hidden states (T, B, H).
fn naive_forward(m: &Naive, t: usize, b: usize, i: usize, h: usize) -> Vec<f64> {
    naive_forward_as(m, t, b, i, h, Reset::Before)
}

fn naive_forward_as(m: &Naive, t: usize, b: usize, i: usize, h: usize, reset: Reset) -> Vec<f64> {
    // (X W_x*)[row, j] for gate block g: Σ_k x[row, k] · weight_ih[g·H + j, k].
    let xw = |g: usize, x: &[f64], j: usize| -> f64 {
        (0..i).map(|k| x[k] * m.wih[(g * h + j) * i + k]).sum()
    };
    let hw = |g: usize, hv: &[f64], j: usize| -> f64 {
        (0..h).map(|k| hv[k] * m.whh[(g * h + j) * h + k]).sum()
    };
    let bias = |g: usize, j: usize| m.bih[g * h + j] + m.bhh[g * h + j];
    let mut state = m.h0.clone();
    let mut out = Vec::with_capacity(t * b * h);
    for s in 0..t {
        let mut next = vec![0.0; b * h];
        for r in 0..b {
            let x = &m.x[(s * b + r) * i..(s * b + r + 1) * i];
            let hv = &state[r * h..(r + 1) * h];
            let rg: Vec<f64> = (0..h)
                .map(|j| sigmoid(xw(0, x, j) + hw(0, hv, j) + bias(0, j)))
                .collect();
            let z: Vec<f64> = (0..h)
                .map(|j| sigmoid(xw(1, x, j) + hw(1, hv, j) + bias(1, j)))
                .collect();
            let rh: Vec<f64> = (0..h).map(|j| rg[j] * hv[j]).collect();
            for j in 0..h {
                let recurrent = match reset {
                    Reset::Before => hw(2, &rh, j),
                    Reset::AfterNoBias => rg[j] * hw(2, hv, j),
                };
                let cand = (xw(2, x, j) + recurrent + bias(2, j)).tanh();
                next[r * h + j] = z[j] * hv[j] + (1.0 - z[j]) * cand;
            }
        }
        out.extend_from_slice(&next);
        state = next;
    }
    out
}

#[test]
fn gru_reset_before_matches_naive_d2l_formula() {
    let golden = load();
    let (t, b, i, h) = golden.dims;
    // Reuse the GRU case's weights and data.
    let case = golden.cases.iter().find(|c| c.name == "gru").unwrap();
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let m = Naive {
        wih: f64s(case.t("weight_ih")),
        whh: f64s(case.t("weight_hh")),
        bih: f64s(case.t("bias_ih")),
        bhh: f64s(case.t("bias_hh")),
        x: f64s(case.t("input")),
        h0: f64s(case.t("h0")),
    };
    let proj = f64s(case.t("proj"));
    let loss = |m: &Naive| -> f64 {
        naive_forward(m, t, b, i, h)
            .iter()
            .zip(&proj)
            .map(|(a, p)| a * p)
            .sum()
    };
    // Reference gradients: f64 central differences (error ~1e-10).
    const E: f64 = 1e-6;
    let fd = |field: fn(&mut Naive) -> &mut Vec<f64>| -> Vec<f64> {
        let n = field(&mut m.clone()).len();
        (0..n)
            .map(|k| {
                let mut up = m.clone();
                field(&mut up)[k] += E;
                let mut down = m.clone();
                field(&mut down)[k] -= E;
                (loss(&up) - loss(&down)) / (2.0 * E)
            })
            .collect()
    };
    let dims = SeqDims {
        cell: CellDims {
            cell: CellKind::GruResetBefore,
            input: i,
            hidden: h,
        },
        steps: t,
        batch: b,
    };
    let (hs, _, g) = run_core(
        &dims,
        Input::Dense(case.t("input")),
        case.t("h0"),
        &[],
        case.params(),
        case.t("proj"),
    );
    let mut report = Report::default();
    report.compare(
        "gru_reset_before output",
        &hs,
        &naive_forward(&m, t, b, i, h),
    );
    report.compare(
        "gru_reset_before grad_weight_ih",
        &g[0],
        &fd(|m| &mut m.wih),
    );
    report.compare(
        "gru_reset_before grad_weight_hh",
        &g[1],
        &fd(|m| &mut m.whh),
    );
    report.compare("gru_reset_before grad_bias_ih", &g[2], &fd(|m| &mut m.bih));
    report.compare("gru_reset_before grad_bias_hh", &g[3], &fd(|m| &mut m.bhh));
    report.compare("gru_reset_before grad_input", &g[4], &fd(|m| &mut m.x));
    report.compare("gru_reset_before grad_h0", &g[5], &fd(|m| &mut m.h0));
    let steps = run_steps(
        &dims,
        Input::Dense(case.t("input")),
        case.t("h0"),
        &[],
        case.params(),
    );
    report.compare32("gru_reset_before step_forward", &steps, &hs);
    report.finish();
}

/// The MXNet chapter's scratch GRU (seed 000) applies the reset gate after
/// the recurrent product, with no bias inside: recur's reset-after GRU
/// (PyTorch's) with the n block of `bias_hh` zero and `b_h` in `bias_ih`.
#[test]
fn gru_reset_after_without_b_hn_is_the_mxnet_d2l_formula() {
    let golden = load();
    let (t, b, i, h) = golden.dims;
    let case = golden.cases.iter().find(|c| c.name == "gru").unwrap();
    let mut bias_ih = case.t("bias_ih").to_vec();
    let mut bias_hh = case.t("bias_hh").to_vec();
    for j in 2 * h..3 * h {
        bias_ih[j] += bias_hh[j];
        bias_hh[j] = 0.0;
    }
    let params = CellParams {
        bias_ih: &bias_ih,
        bias_hh: &bias_hh,
        ..case.params()
    };
    let dims = SeqDims {
        cell: CellDims {
            cell: CellKind::GruResetAfter,
            input: i,
            hidden: h,
        },
        steps: t,
        batch: b,
    };
    let (hs, _, _) = run_core(
        &dims,
        Input::Dense(case.t("input")),
        case.t("h0"),
        &[],
        params,
        case.t("proj"),
    );
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let m = Naive {
        wih: f64s(case.t("weight_ih")),
        whh: f64s(case.t("weight_hh")),
        bih: f64s(&bias_ih),
        bhh: f64s(&bias_hh),
        x: f64s(case.t("input")),
        h0: f64s(case.t("h0")),
    };
    let want = naive_forward_as(&m, t, b, i, h, Reset::AfterNoBias);
    let mut report = Report::default();
    report.compare("gru_reset_after (d2l MXNet) output", &hs, &want);
    // And the reset-before formula is a different function on these inputs.
    let before = naive_forward(&m, t, b, i, h);
    assert!(want.iter().zip(&before).any(|(a, b)| (a - b).abs() > 1e-3));
    report.finish();
}
