//! Choosing the next token from logits: greedy (d2l's `predict_ch8`, which
//! takes the argmax) or sampled with a temperature and a top-k cut.

use rand_core::RngCore;

use crate::error::{check_len, Error};
use crate::fmath;

/// Length of the scratch buffer [`sample`] needs for a `vocab`-sized output.
pub const fn sample_scratch_len(vocab: usize) -> usize {
    vocab
}

/// Checks that `logits` is non-empty, has no NaN or `+inf`, and is not all
/// `-inf` (a `-inf` logit is a masked token and is allowed). Returns the
/// index of the first maximum.
fn first_max(logits: &[f32]) -> Result<usize, Error> {
    if logits.is_empty() {
        return Err(Error::Dim {
            what: "vocab",
            value: 0,
        });
    }
    let mut best = 0usize;
    for (i, &x) in logits.iter().enumerate() {
        if x.is_nan() || x == f32::INFINITY {
            return Err(Error::Value { what: "logits" });
        }
        if x > logits[best] {
            best = i;
        }
    }
    if logits[best] == f32::NEG_INFINITY {
        return Err(Error::Value { what: "logits" });
    }
    Ok(best)
}

/// Index of the largest logit; the first one wins a tie.
///
/// Errors: empty `logits` ([`Error::Dim`]); a NaN or `+inf` logit, or all
/// logits `-inf` ([`Error::Value`]).
pub fn argmax(logits: &[f32]) -> Result<usize, Error> {
    first_max(logits)
}

/// Draws a token id from `softmax(logits / temperature)` restricted to the
/// `top_k` largest logits.
///
/// - `logits`: (V).
/// - `temperature`: `0` means greedy ([`argmax`]); otherwise finite and
///   positive. NaN, negative or infinite → [`Error::Value`].
/// - `top_k`: keep only the `top_k` largest logits; `0` (or ≥ V) keeps all,
///   `1` is greedy. Ties at the cut are kept in index order, so exactly
///   `top_k` candidates remain.
/// - `rng`: the random source (one `u64` per draw, none when greedy).
/// - `scratch`: [`sample_scratch_len`]`(V)` elements, contents not kept.
///
/// Logits are checked as in [`argmax`].
pub fn sample(
    logits: &[f32],
    temperature: f32,
    top_k: usize,
    rng: &mut impl RngCore,
    scratch: &mut [f32],
) -> Result<usize, Error> {
    let best = first_max(logits)?;
    let vocab = logits.len();
    check_len("sample scratch", scratch, sample_scratch_len(vocab))?;
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(Error::Value {
            what: "temperature",
        });
    }
    let k = if top_k == 0 || top_k >= vocab {
        vocab
    } else {
        top_k
    };
    if temperature == 0.0 || k == 1 {
        return Ok(best);
    }

    // The k-th largest logit is the cut; the selection works in scratch.
    let (cut, mut ties_left) = if k < vocab {
        scratch.copy_from_slice(logits);
        let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let cut = *kth;
        let above = logits.iter().filter(|&&x| x > cut).count();
        (cut, k - above)
    } else {
        (f32::NEG_INFINITY, vocab)
    };

    let max = logits[best];
    let inv_t = 1.0 / temperature;
    let mut total = 0.0f64;
    for (w, &x) in scratch.iter_mut().zip(logits) {
        let keep = if x > cut {
            true
        } else if x == cut && ties_left > 0 {
            ties_left -= 1;
            true
        } else {
            false
        };
        *w = if keep {
            fmath::exp((x - max) * inv_t)
        } else {
            0.0
        };
        total += *w as f64;
    }

    // Uniform in [0, total) from the top 53 bits.
    let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) * total;
    let mut acc = 0.0f64;
    let mut last_kept = best;
    for (i, &w) in scratch.iter().enumerate() {
        if w > 0.0 {
            acc += w as f64;
            last_kept = i;
            if u < acc {
                return Ok(i);
            }
        }
    }
    // Only reached when rounding put u at the very top of the range.
    Ok(last_kept)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::testutil::{nans, SplitMix};

    fn histogram(logits: &[f32], t: f32, k: usize, draws: usize) -> std::vec::Vec<f64> {
        let mut rng = SplitMix(42);
        let mut scratch = nans(logits.len());
        let mut counts = std::vec![0usize; logits.len()];
        for _ in 0..draws {
            scratch.fill(f32::NAN);
            counts[sample(logits, t, k, &mut rng, &mut scratch).unwrap()] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    /// Each frequency within 5 standard errors of its probability.
    fn assert_close(freq: &[f64], want: &[f64], draws: usize) {
        for (i, (&f, &p)) in freq.iter().zip(want).enumerate() {
            let se = (p * (1.0 - p) / draws as f64).sqrt().max(1e-9);
            assert!((f - p).abs() <= 5.0 * se, "token {i}: {f} vs {p}");
        }
    }

    #[test]
    fn argmax_first_wins() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), Ok(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY, -5.0]), Ok(1));
        assert_eq!(argmax(&[7.0]), Ok(0));
        assert_eq!(
            argmax(&[]),
            Err(Error::Dim {
                what: "vocab",
                value: 0
            })
        );
        assert_eq!(
            argmax(&[0.0, f32::NAN]),
            Err(Error::Value { what: "logits" })
        );
        assert_eq!(
            argmax(&[f32::NEG_INFINITY; 3]),
            Err(Error::Value { what: "logits" })
        );
    }

    #[test]
    fn distribution_follows_softmax() {
        let n = 40_000;
        let logits = [1f32.ln(), 2f32.ln(), 3f32.ln(), 4f32.ln()];
        assert_close(&histogram(&logits, 1.0, 0, n), &[0.1, 0.2, 0.3, 0.4], n);
        // Temperature 2 takes the square root of the odds.
        let s: f64 = [1f64, 2.0, 3.0, 4.0].iter().map(|w| w.sqrt()).sum();
        let want: std::vec::Vec<f64> = [1f64, 2.0, 3.0, 4.0].iter().map(|w| w.sqrt() / s).collect();
        assert_close(&histogram(&logits, 2.0, 0, n), &want, n);
        // Top-2 renormalises over the two largest.
        assert_close(
            &histogram(&logits, 1.0, 2, n),
            &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0],
            n,
        );
        // A masked token is never drawn.
        let masked = [0.0, f32::NEG_INFINITY, 0.0];
        assert_close(&histogram(&masked, 1.0, 0, n), &[0.5, 0.0, 0.5], n);
    }

    #[test]
    fn greedy_cases_and_ties_at_the_cut() {
        let mut rng = SplitMix(1);
        let mut scratch = nans(4);
        let logits = [0.5f32, 2.0, -1.0, 2.0];
        assert_eq!(sample(&logits, 0.0, 0, &mut rng, &mut scratch), Ok(1));
        assert_eq!(sample(&logits, 5.0, 1, &mut rng, &mut scratch), Ok(1));
        // Ties at the cut are taken in index order: top-2 of [1,1,1,0] is {0,1}.
        let n = 10_000;
        let f = histogram(&[1.0, 1.0, 1.0, 0.0], 1.0, 2, n);
        assert_close(&f, &[0.5, 0.5, 0.0, 0.0], n);
        // Top-k larger than V keeps everything.
        let f = histogram(&[0.0, 0.0], 1.0, 99, n);
        assert_close(&f, &[0.5, 0.5], n);
    }

    #[test]
    fn bad_arguments() {
        let mut rng = SplitMix(1);
        let mut scratch = nans(3);
        let l = [0.0f32, 1.0, 2.0];
        for t in [f32::NAN, -0.5, f32::INFINITY] {
            assert_eq!(
                sample(&l, t, 0, &mut rng, &mut scratch),
                Err(Error::Value {
                    what: "temperature"
                })
            );
        }
        assert!(matches!(
            sample(&l, 1.0, 0, &mut rng, &mut scratch[..2]),
            Err(Error::Length {
                what: "sample scratch",
                ..
            })
        ));
        assert_eq!(
            sample(&[0.0, f32::INFINITY, 0.0], 1.0, 0, &mut rng, &mut scratch),
            Err(Error::Value { what: "logits" })
        );
    }
}
