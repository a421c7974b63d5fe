//! The language model's output: a dense layer from the hidden state to the
//! vocabulary (d2l's `RNNModel.linear`, PyTorch `nn.Linear`) and the softmax
//! cross-entropy loss over its logits (`nn.CrossEntropyLoss`, mean reduction).
//!
//! Perplexity, as d2l reports it, is `exp(mean loss)`.

use crate::error::{check_len, check_tokens, mul, Error};
use crate::fmath;
use crate::gemm::{Gemm, Trans};

/// Shape of the output layer over `rows` hidden vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenseDims {
    /// Rows `N` (for a sequence: steps · batch).
    pub rows: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// Vocabulary size `V` (output size).
    pub vocab: usize,
}

impl DenseDims {
    /// Checks that the sizes are non-zero and their products fit in `usize`.
    pub fn validate(&self) -> Result<(), Error> {
        for (what, value) in [
            ("rows", self.rows),
            ("hidden", self.hidden),
            ("vocab", self.vocab),
        ] {
            if value == 0 {
                return Err(Error::Dim { what, value });
            }
        }
        mul("rows", self.rows, self.vocab)?;
        mul("rows", self.rows, self.hidden)?;
        mul("vocab", self.vocab, self.hidden)?;
        Ok(())
    }

    /// Elements of the logits / probabilities, (N, V).
    pub const fn logits_len(&self) -> usize {
        self.rows * self.vocab
    }

    /// Elements of the hidden input, (N, H).
    pub const fn hidden_len(&self) -> usize {
        self.rows * self.hidden
    }

    /// Elements of the weight, (V, H).
    pub const fn weight_len(&self) -> usize {
        self.vocab * self.hidden
    }

    /// Floating-point operations of [`dense_forward`] (one multiply-add = 2).
    pub const fn forward_flops(&self) -> u64 {
        2 * self.rows as u64 * self.hidden as u64 * self.vocab as u64
    }

    /// Floating-point operations of [`dense_backward`] (both products).
    pub const fn backward_flops(&self) -> u64 {
        2 * self.forward_flops()
    }
}

/// `logits = h · weightᵀ + bias`.
///
/// - `logits`: out, (N, V); overwritten, never read.
/// - `h`: (N, H).
/// - `weight`: (V, H), PyTorch's `dense.weight`.
/// - `bias`: (V).
pub fn dense_forward(
    logits: &mut [f32],
    h: &[f32],
    weight: &[f32],
    bias: &[f32],
    dims: &DenseDims,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    dims.validate()?;
    check_len("logits", logits, dims.logits_len())?;
    check_len("h", h, dims.hidden_len())?;
    check_len("dense weight", weight, dims.weight_len())?;
    check_len("dense bias", bias, dims.vocab)?;
    for row in logits.chunks_exact_mut(dims.vocab) {
        row.copy_from_slice(bias);
    }
    gemm.gemm(
        Trans::N,
        Trans::T,
        dims.rows,
        dims.vocab,
        dims.hidden,
        1.0,
        h,
        weight,
        1.0,
        logits,
    )
}

/// Backward of [`dense_forward`]; every gradient is **accumulated** (`+=`).
///
/// - `dweight`: (V, H) += dlogitsᵀ · h.
/// - `dbias`: (V) += column sums of dlogits.
/// - `dh`: (N, H) += dlogits · weight.
/// - `dlogits`: (N, V) upstream gradient.
/// - `h`, `weight`: as given to the forward call.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward(
    dweight: &mut [f32],
    dbias: &mut [f32],
    dh: &mut [f32],
    dlogits: &[f32],
    h: &[f32],
    weight: &[f32],
    dims: &DenseDims,
    gemm: &impl Gemm,
) -> Result<(), Error> {
    dims.validate()?;
    check_len("grad dense weight", dweight, dims.weight_len())?;
    check_len("grad dense bias", dbias, dims.vocab)?;
    check_len("dh", dh, dims.hidden_len())?;
    check_len("dlogits", dlogits, dims.logits_len())?;
    check_len("h", h, dims.hidden_len())?;
    check_len("dense weight", weight, dims.weight_len())?;
    gemm.gemm(
        Trans::T,
        Trans::N,
        dims.vocab,
        dims.hidden,
        dims.rows,
        1.0,
        dlogits,
        h,
        1.0,
        dweight,
    )?;
    for row in dlogits.chunks_exact(dims.vocab) {
        for (db, &g) in dbias.iter_mut().zip(row) {
            *db += g;
        }
    }
    gemm.gemm(
        Trans::N,
        Trans::N,
        dims.rows,
        dims.hidden,
        dims.vocab,
        1.0,
        dlogits,
        weight,
        1.0,
        dh,
    )
}

/// Lanes of the partial sums and maxima below: enough independent chains
/// for the compiler to vectorise the reductions, in a fixed order (the
/// result does not depend on the target).
const LANES: usize = 8;

/// Softmax of `src` into `out` (same length); returns `ln Σ exp(src)`
/// (log-sum-exp), computed against the row maximum so that large logits do
/// not overflow.
#[inline(always)]
fn softmax_row(out: &mut [f32], src: &[f32], row_max: f32) -> f32 {
    for (o, &x) in out.iter_mut().zip(src) {
        *o = fmath::exp(x - row_max);
    }
    normalize(out, row_max)
}

/// [`softmax_row`] in place.
#[inline(always)]
fn softmax_row_in_place(v: &mut [f32], row_max: f32) -> f32 {
    for x in v.iter_mut() {
        *x = fmath::exp(*x - row_max);
    }
    normalize(v, row_max)
}

/// Divides the exponentials in `v` by their sum; returns the log-sum-exp.
#[inline(always)]
fn normalize(v: &mut [f32], row_max: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for &x in chunks.remainder() {
        sum += x;
    }
    let inv = 1.0 / sum;
    for x in v.iter_mut() {
        *x *= inv;
    }
    row_max + fmath::ln(sum)
}

/// The row maximum; NaN entries are skipped here and propagate through the
/// exponentials instead.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in chunks.remainder() {
        m = m.max(x);
    }
    m
}

/// Checks the common arguments of the softmax cross-entropy routines.
fn check_xent(len: usize, targets: &[u32], dims: &DenseDims) -> Result<(), Error> {
    if dims.rows == 0 {
        return Err(Error::Dim {
            what: "rows",
            value: 0,
        });
    }
    if dims.vocab == 0 {
        return Err(Error::Dim {
            what: "vocab",
            value: 0,
        });
    }
    let expected = mul("rows", dims.rows, dims.vocab)?;
    if len != expected {
        return Err(Error::Length {
            what: "probs",
            expected,
            actual: len,
        });
    }
    check_len("targets", targets, dims.rows)?;
    check_tokens("targets", targets, dims.vocab)
}

/// Softmax and mean cross-entropy loss, numerically stable (log-sum-exp
/// against the row maximum).
///
/// - `probs`: out, (N, V) softmax of each row; overwritten, never read.
/// - `logits`: (N, V).
/// - `targets`: (N) token ids, each `< V`.
///
/// Returns the mean over the N rows of `−ln softmax(logits_i)[target_i]`
/// (PyTorch's `CrossEntropyLoss()`); perplexity is `exp` of it. NaN logits
/// give NaN probabilities and a NaN loss (no error: divergence is data).
pub fn softmax_xent_forward(
    probs: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    dims: &DenseDims,
) -> Result<f32, Error> {
    check_xent(probs.len(), targets, dims)?;
    check_len("logits", logits, probs.len())?;
    let total = dispatch!(forward_rows(probs, Some(logits), targets, dims.vocab));
    Ok((total / dims.rows as f64) as f32)
}

/// [`softmax_xent_forward`] in place: `logits_probs` holds the (N, V) logits
/// on entry and their softmax on return, saving one (N, V) buffer (the
/// backward pass only needs the probabilities).
pub fn softmax_xent_forward_in_place(
    logits_probs: &mut [f32],
    targets: &[u32],
    dims: &DenseDims,
) -> Result<f32, Error> {
    check_xent(logits_probs.len(), targets, dims)?;
    let total = dispatch!(forward_rows(logits_probs, None, targets, dims.vocab));
    Ok((total / dims.rows as f64) as f32)
}

/// Gradient of the **mean** loss of [`softmax_xent_forward`] with respect to
/// the logits: `dlogits = (probs − onehot(targets)) / N`.
///
/// - `dlogits`: out, (N, V); overwritten (`=`, not accumulated: it is an
///   intermediate, not a parameter gradient), never read.
/// - `probs`: (N, V) from the forward call.
/// - `targets`: (N).
pub fn softmax_xent_backward(
    dlogits: &mut [f32],
    probs: &[f32],
    targets: &[u32],
    dims: &DenseDims,
) -> Result<(), Error> {
    check_xent(probs.len(), targets, dims)?;
    check_len("dlogits", dlogits, probs.len())?;
    dispatch!(grad_rows(dlogits, Some(probs), targets, dims.vocab));
    Ok(())
}

/// [`softmax_xent_backward`] in place: `probs_dlogits` holds the (N, V)
/// probabilities on entry and the gradient on return.
pub fn softmax_xent_backward_in_place(
    probs_dlogits: &mut [f32],
    targets: &[u32],
    dims: &DenseDims,
) -> Result<(), Error> {
    check_xent(probs_dlogits.len(), targets, dims)?;
    dispatch!(grad_rows(probs_dlogits, None, targets, dims.vocab));
    Ok(())
}

/// Runs `$body(args)` compiled for AVX2 + FMA when the processor has them
/// (the loops then vectorise 8 wide instead of 4), else as built. No FMA
/// contraction happens in either (Rust does not fuse `a * b + c`), so both
/// give bit-identical results.
macro_rules! dispatch {
    ($body:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn wide(
                out: &mut [f32],
                src: Option<&[f32]>,
                targets: &[u32],
                vocab: usize,
            ) -> f64 {
                $body(out, src, targets, vocab)
            }
            if crate::gemm::Isa::detect() == crate::gemm::Isa::Avx2Fma {
                // SAFETY: the processor supports AVX2 and FMA.
                unsafe { wide($($arg),*) }
            } else {
                $body($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body($($arg),*)
        }
    }};
}
use dispatch;

/// Softmax of every `vocab`-long row of `src` (or of `out` itself when
/// `src` is `None`) into `out`; returns the summed loss `Σ_i lse_i −
/// logit_i[target_i]`. Lengths and targets are checked by the callers.
#[inline(always)]
fn forward_rows(out: &mut [f32], src: Option<&[f32]>, targets: &[u32], vocab: usize) -> f64 {
    let mut total = 0.0f64;
    match src {
        Some(src) => {
            for ((o, row), &t) in out
                .chunks_exact_mut(vocab)
                .zip(src.chunks_exact(vocab))
                .zip(targets)
            {
                let lse = softmax_row(o, row, row_max(row));
                total += (lse - row[t as usize]) as f64;
            }
        }
        None => {
            for (row, &t) in out.chunks_exact_mut(vocab).zip(targets) {
                let target_logit = row[t as usize];
                let lse = softmax_row_in_place(row, row_max(row));
                total += (lse - target_logit) as f64;
            }
        }
    }
    total
}

/// `out = (probs − onehot(targets)) / N` row by row, `probs` from `src` or
/// from `out` itself when `src` is `None`. Returns 0 (a value for the
/// dispatch macro's signature).
#[inline(always)]
fn grad_rows(out: &mut [f32], src: Option<&[f32]>, targets: &[u32], vocab: usize) -> f64 {
    let scale = 1.0 / targets.len() as f32;
    match src {
        Some(src) => {
            for ((o, row), &t) in out
                .chunks_exact_mut(vocab)
                .zip(src.chunks_exact(vocab))
                .zip(targets)
            {
                for (g, &p) in o.iter_mut().zip(row) {
                    *g = p * scale;
                }
                o[t as usize] = (row[t as usize] - 1.0) * scale;
            }
        }
        None => {
            for (row, &t) in out.chunks_exact_mut(vocab).zip(targets) {
                let target_p = row[t as usize];
                for g in row.iter_mut() {
                    *g *= scale;
                }
                row[t as usize] = (target_p - 1.0) * scale;
            }
        }
    }
    0.0
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::gemm::Portable;
    use crate::testutil::{nans, SplitMix};
    use std::vec::Vec;

    const DIMS: DenseDims = DenseDims {
        rows: 5,
        hidden: 4,
        vocab: 7,
    };

    /// Loss of the whole output stage, the function the gradient check differentiates.
    fn loss(h: &[f32], w: &[f32], b: &[f32], targets: &[u32], dims: &DenseDims) -> f32 {
        let mut logits = nans(dims.logits_len());
        dense_forward(&mut logits, h, w, b, dims, &Portable).unwrap();
        let mut probs = nans(dims.logits_len());
        softmax_xent_forward(&mut probs, &logits, targets, dims).unwrap()
    }

    /// Largest |analytic − central difference| over `params`, perturbing each in turn.
    fn fd_max_err(
        params: &mut [f32],
        analytic: &[f32],
        eval: &mut dyn FnMut(&[f32]) -> f32,
    ) -> f32 {
        let eps = 1e-2f32;
        let mut worst = 0.0f32;
        for i in 0..params.len() {
            let keep = params[i];
            params[i] = keep + eps;
            let up = eval(params);
            params[i] = keep - eps;
            let down = eval(params);
            params[i] = keep;
            let fd = (up - down) / (2.0 * eps);
            worst = worst.max((fd - analytic[i]).abs());
        }
        worst
    }

    #[test]
    fn gradient_check_dense_and_xent() {
        let d = DIMS;
        let mut rng = SplitMix(7);
        let mut h = rng.vec(d.hidden_len(), 1.0);
        let mut w = rng.vec(d.weight_len(), 1.0);
        let mut b = rng.vec(d.vocab, 0.5);
        let targets: Vec<u32> = (0..d.rows).map(|_| rng.below(d.vocab) as u32).collect();

        let mut logits = nans(d.logits_len());
        dense_forward(&mut logits, &h, &w, &b, &d, &Portable).unwrap();
        let mut probs = nans(d.logits_len());
        softmax_xent_forward(&mut probs, &logits, &targets, &d).unwrap();
        let mut dlogits = nans(d.logits_len());
        softmax_xent_backward(&mut dlogits, &probs, &targets, &d).unwrap();
        // Accumulation: start from a known non-zero value and subtract it after.
        let mut dw = std::vec![0.25f32; d.weight_len()];
        let mut db = std::vec![0.25f32; d.vocab];
        let mut dh = std::vec![0.25f32; d.hidden_len()];
        dense_backward(&mut dw, &mut db, &mut dh, &dlogits, &h, &w, &d, &Portable).unwrap();
        for g in dw.iter_mut().chain(db.iter_mut()).chain(dh.iter_mut()) {
            *g -= 0.25;
        }

        let (hc, wc, bc) = (h.clone(), w.clone(), b.clone());
        let e_w = fd_max_err(&mut w, &dw, &mut |p| loss(&hc, p, &bc, &targets, &d));
        let e_b = fd_max_err(&mut b, &db, &mut |p| loss(&hc, &wc, p, &targets, &d));
        let e_h = fd_max_err(&mut h, &dh, &mut |p| loss(p, &wc, &bc, &targets, &d));
        std::println!(
            "output layer FD check, max |err|: weight {e_w:.2e} bias {e_b:.2e} h {e_h:.2e}"
        );
        // Central differences in f32 with eps 1e-2: truncation ~eps²·|L'''| and
        // rounding ~1e-7/eps, both below 1e-4 here.
        for (name, e) in [("weight", e_w), ("bias", e_b), ("h", e_h)] {
            assert!(e < 2e-4, "{name}: FD error {e}");
        }
        // The gradients are not trivially small.
        assert!(dw.iter().any(|g| g.abs() > 1e-2));
    }

    #[test]
    fn forward_matches_f64_reference_and_is_stable() {
        let d = DIMS;
        let mut rng = SplitMix(3);
        let h = rng.vec(d.hidden_len(), 1.0);
        let w = rng.vec(d.weight_len(), 1.0);
        // Huge bias: naive exp would overflow.
        let b: Vec<f32> = (0..d.vocab).map(|i| 1000.0 + i as f32 * 0.5).collect();
        let targets: Vec<u32> = (0..d.rows).map(|i| (i % d.vocab) as u32).collect();
        let mut logits = nans(d.logits_len());
        dense_forward(&mut logits, &h, &w, &b, &d, &Portable).unwrap();
        let mut probs = nans(d.logits_len());
        let got = softmax_xent_forward(&mut probs, &logits, &targets, &d).unwrap();

        let mut want = 0.0f64;
        for r in 0..d.rows {
            let z: Vec<f64> = (0..d.vocab)
                .map(|j| {
                    b[j] as f64
                        + (0..d.hidden)
                            .map(|k| h[r * d.hidden + k] as f64 * w[j * d.hidden + k] as f64)
                            .sum::<f64>()
                })
                .collect();
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
            for j in 0..d.vocab {
                let p = (z[j] - m).exp() / s;
                assert!((probs[r * d.vocab + j] as f64 - p).abs() < 1e-5);
            }
            want += m + s.ln() - z[targets[r] as usize];
        }
        want /= d.rows as f64;
        assert!(
            (got as f64 - want).abs() < 1e-4 * want.abs().max(1.0),
            "{got} vs {want}"
        );

        // The in-place variants give identical results.
        let mut inplace = logits.clone();
        let got2 = softmax_xent_forward_in_place(&mut inplace, &targets, &d).unwrap();
        assert_eq!(got, got2);
        assert_eq!(inplace, probs);
        let mut dl = nans(d.logits_len());
        softmax_xent_backward(&mut dl, &probs, &targets, &d).unwrap();
        softmax_xent_backward_in_place(&mut inplace, &targets, &d).unwrap();
        assert_eq!(inplace, dl);
        // Each gradient row sums to zero (softmax minus one-hot).
        for row in dl.chunks(d.vocab) {
            assert!(row.iter().sum::<f32>().abs() < 1e-6);
        }
    }

    #[test]
    fn wide_and_baseline_loops_agree_bitwise() {
        // The public routines take the AVX2 build of the row loops where the
        // processor has it; the direct calls below are the baseline build.
        let d = DenseDims {
            rows: 9,
            hidden: 1,
            vocab: 1027,
        };
        let mut rng = SplitMix(17);
        let logits = rng.vec(d.logits_len(), 30.0);
        let targets: Vec<u32> = (0..d.rows).map(|_| rng.below(d.vocab) as u32).collect();
        let mut probs = nans(d.logits_len());
        let loss = softmax_xent_forward(&mut probs, &logits, &targets, &d).unwrap();
        let mut base = nans(d.logits_len());
        let total = forward_rows(&mut base, Some(&logits), &targets, d.vocab);
        assert_eq!(loss, (total / d.rows as f64) as f32);
        assert!(probs
            .iter()
            .zip(&base)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        let mut grad = nans(d.logits_len());
        softmax_xent_backward(&mut grad, &probs, &targets, &d).unwrap();
        grad_rows(&mut base, None, &targets, d.vocab);
        assert!(grad
            .iter()
            .zip(&base)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn uniform_logits_give_ln_vocab() {
        let d = DenseDims {
            rows: 3,
            hidden: 1,
            vocab: 1027,
        };
        let logits = std::vec![0.5f32; d.logits_len()];
        let mut probs = nans(d.logits_len());
        let l = softmax_xent_forward(&mut probs, &logits, &[0, 5, 1026], &d).unwrap();
        assert!((l - (1027f32).ln()).abs() < 1e-5);
    }

    #[test]
    fn errors_are_values() {
        let d = DIMS;
        let mut logits = nans(d.logits_len());
        let h = std::vec![0.0; d.hidden_len()];
        let w = std::vec![0.0; d.weight_len()];
        let b = std::vec![0.0; d.vocab];
        assert!(matches!(
            dense_forward(&mut logits, &h, &w, &b[1..], &d, &Portable),
            Err(Error::Length {
                what: "dense bias",
                ..
            })
        ));
        assert!(matches!(
            dense_forward(&mut logits[1..], &h, &w, &b, &d, &Portable),
            Err(Error::Length { what: "logits", .. })
        ));
        let zero = DenseDims { rows: 0, ..d };
        assert!(matches!(
            dense_forward(&mut [], &[], &w, &b, &zero, &Portable),
            Err(Error::Dim { what: "rows", .. })
        ));
        let mut probs = nans(d.logits_len());
        let bad = [0u32, 1, 2, 7, 0];
        assert_eq!(
            softmax_xent_forward(&mut probs, &logits, &bad, &d),
            Err(Error::Token {
                what: "targets",
                index: 3,
                value: 7,
                limit: 7
            })
        );
        assert!(matches!(
            softmax_xent_forward(&mut probs, &logits, &bad[..4], &d),
            Err(Error::Length {
                what: "targets",
                ..
            })
        ));
        let mut dl = nans(d.logits_len() - 1);
        assert!(matches!(
            softmax_xent_backward(&mut dl, &probs, &[0; 5], &d),
            Err(Error::Length {
                what: "dlogits",
                ..
            })
        ));
        let huge = DenseDims {
            rows: usize::MAX,
            hidden: 2,
            vocab: 2,
        };
        assert!(matches!(huge.validate(), Err(Error::Dim { .. })));
    }

    #[test]
    fn nan_logits_propagate_to_loss() {
        let d = DIMS;
        let mut logits = std::vec![0.0f32; d.logits_len()];
        logits[3] = f32::NAN;
        let mut probs = nans(d.logits_len());
        let l = softmax_xent_forward(&mut probs, &logits, &[0; 5], &d).unwrap();
        assert!(l.is_nan());
        assert!(probs[..d.vocab].iter().all(|p| p.is_nan()));
        assert!(probs[d.vocab..].iter().all(|p| p.is_finite()));
    }
}
