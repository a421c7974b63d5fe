//! Generation on the device against recur-core. The device's tokens are fed
//! through recur-core's model (teacher forcing) to get the reference logits
//! at every generated position; each device token must be what recur-core's
//! `argmax` / `sample` picks from those logits with the same random numbers,
//! up to the logits' rounding tolerance (a near tie, or a draw that falls
//! within that tolerance of a CDF boundary). Every path runs: the automatic
//! choice (thread-block clusters on sm_90), and forced the cooperative
//! persistent kernel, both cluster sizes, the register cluster kernel and
//! the per-step fallback; both cluster kernels also with the recurrent
//! product ahead (`GenBuffers::set_product_ahead`), with block sends
//! (`GenBuffers::set_block_sends`) and, greedy, with the draw split across
//! the cluster (`GenBuffers::set_split_argmax`), which must also give the
//! very tokens, logits and states of the whole-row draw, ties and unusable
//! logits included.

mod engine_support;

use engine_support::{random_params, random_tokens, recurrent_tol, reference, w_hh, RefInput};
use recur::core::output::{dense_forward, DenseDims};
use recur::core::sample::{argmax, sample, sample_scratch_len};
use recur::core::{CellKind, ModelLayout, Portable};
use recur::engine::half::round_f16;
use recur::engine::rng::{nth, row_seed, SplitMix64};
use recur::engine::{
    every_cta_owns_a_unit, DeviceModel, Error, GenBuffers, GenPath, Gpu, Precision, Sampling,
};

struct Case {
    cell: CellKind,
    batch: usize,
    hidden: usize,
    vocab: usize,
    prefix: usize,
    count: usize,
}

/// Generates on the device (on `launch.path`, `None`: automatic;
/// `launch.cluster`: the forced cluster size; `launch.ahead`: the product
/// ahead; `launch.blocks`: block sends; `launch.split`: the split greedy
/// draw), checks every token; returns the path taken (`None`: the forced
/// cluster size does not fit).
fn check(
    gpu: &Gpu,
    c: &Case,
    precision: Precision,
    sampling: Sampling,
    launch: Launch,
    seed: u64,
) -> Option<GenPath> {
    let Launch {
        path,
        cluster,
        ahead,
        blocks,
        split,
    } = launch;
    let layout = ModelLayout {
        cell: c.cell,
        vocab: c.vocab,
        hidden: c.hidden,
    };
    let mut params = random_params(&layout, seed);
    // Wider logits than at initialisation, so that most steps have a clear winner.
    let t = layout.tensors();
    for w in &mut params[t[4].range()] {
        *w *= 8.0;
    }
    let model = DeviceModel::upload(gpu, layout, &params, precision).unwrap();
    let prefix = random_tokens(c.prefix * c.batch, c.vocab, seed + 1);
    let mut bufs = GenBuffers::new(&model, c.batch, c.prefix, c.count).unwrap();
    bufs.set_prefix(&prefix).unwrap();
    bufs.set_product_ahead(ahead);
    bufs.set_block_sends(blocks);
    bufs.set_split_argmax(split);
    bufs.poison().unwrap();
    let path = match model.generate_on(&mut bufs, sampling, path, cluster) {
        Ok(p) => p,
        // A forced cluster size whose slices do not fit the shared memory,
        // or a model the register cluster kernel does not take.
        Err(Error::Limit { .. })
            if matches!(path, Some(GenPath::Cluster | GenPath::ClusterRegs)) =>
        {
            println!(
                "{:?} {precision:?} cluster {cluster:?}: does not fit",
                c.cell
            );
            return None;
        }
        Err(e) => panic!(
            "{:?} {precision:?} {path:?} {cluster:?} ahead {ahead} blocks {blocks} split {split}: {e}",
            c.cell
        ),
    };
    let got = bufs.tokens().unwrap();

    // Teacher forcing: the inputs are the prefix, then the generated tokens.
    let steps = c.prefix + c.count - 1;
    let mut inputs = prefix.clone();
    inputs.extend_from_slice(&got[..(c.count - 1) * c.batch]);
    let dims = layout.cell_dims();
    let cell_params = &params[..t[4].offset];
    let zeros = vec![0.0f32; c.batch * c.hidden];
    let r = reference(
        dims,
        cell_params,
        RefInput::Tokens(&inputs),
        &zeros,
        &zeros,
        steps,
        c.batch,
        precision,
    );
    let store = |v: f32| {
        if precision == Precision::F16 {
            round_f16(v)
        } else {
            v
        }
    };
    let wd: Vec<f32> = params[t[4].range()].iter().map(|&v| store(v)).collect();
    let bd: Vec<f32> = params[t[5].range()].iter().map(|&v| store(v)).collect();
    let rows = c.count * c.batch;
    let hs = &r.hs[(c.prefix - 1) * c.batch * c.hidden..];
    let mut logits = vec![f32::NAN; rows * c.vocab];
    dense_forward(
        &mut logits,
        hs,
        &wd,
        &bd,
        &DenseDims {
            rows,
            hidden: c.hidden,
            vocab: c.vocab,
        },
        &Portable,
    )
    .unwrap();

    // How far the device's logits may be from these: the recurrent tolerance
    // carried through the output layer, plus its own rounding.
    let tol = recurrent_tol(precision, steps, &w_hh(&dims, cell_params), c.hidden);
    let delta = |row: usize, v: usize| -> f32 {
        let w = &wd[v * c.hidden..(v + 1) * c.hidden];
        let h = &hs[row * c.hidden..(row + 1) * c.hidden];
        w.iter()
            .zip(h)
            .map(|(w, h)| {
                w.abs()
                    * (tol.abs + tol.rel * h.abs() + 4.0 * (c.hidden as f32 + 2.0) * 6e-8 * h.abs())
            })
            .sum()
    };
    let mut exact = 0;
    for i in 0..c.count {
        for b in 0..c.batch {
            let row = i * c.batch + b;
            let l = &logits[row * c.vocab..(row + 1) * c.vocab];
            let dev = got[row] as usize;
            let want = match sampling {
                Sampling::Greedy => argmax(l).unwrap(),
                Sampling::Temperature { temperature, seed } => {
                    let mut rng = SplitMix64::new(row_seed(seed, b));
                    for _ in 0..i {
                        rand_core::RngCore::next_u64(&mut rng);
                    }
                    let mut scratch = vec![0.0; sample_scratch_len(c.vocab)];
                    let s = sample(l, temperature, 0, &mut rng, &mut scratch).unwrap();
                    // The same draw, for the boundary check below.
                    let bits = nth(row_seed(seed, b), i as u64);
                    if dev != s {
                        let slack = l
                            .iter()
                            .enumerate()
                            .map(|(v, _)| delta(row, v))
                            .fold(0.0f32, f32::max);
                        assert!(
                            near_boundary(l, temperature, bits, dev, slack),
                            "step {i} row {b}: device drew {dev}, recur-core {s}, not within the logits' tolerance {slack:e}"
                        );
                    }
                    s
                }
            };
            if dev == want {
                exact += 1;
            } else if let Sampling::Greedy = sampling {
                let d = delta(row, dev).max(delta(row, want));
                assert!(
                    l[dev] >= l[want] - 2.0 * d,
                    "step {i} row {b}: device picked {dev} ({}), recur-core {want} ({}), tolerance {d:e}",
                    l[dev],
                    l[want]
                );
            }
        }
    }
    println!(
        "{:?} {precision:?} {sampling:?} {path:?} {cluster:?} ahead {ahead} blocks {blocks} split {split}: {exact}/{} tokens identical to recur-core's choice",
        c.cell,
        c.count * c.batch
    );
    Some(path)
}

/// Whether the draw `bits` lands in token `dev`'s slice of the CDF once the
/// logits may move by `slack` each (weights by a factor e^(±slack/T)).
fn near_boundary(l: &[f32], temperature: f32, bits: u64, dev: usize, slack: f32) -> bool {
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = l
        .iter()
        .map(|&x| (((x - m) / temperature) as f64).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let u = (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    let lo: f64 = w[..dev].iter().sum::<f64>() / total;
    let hi = lo + w[dev] / total;
    let f = ((2.0 * slack / temperature) as f64).exp();
    u >= lo / f - 1e-12 && u <= hi * f + 1e-12
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            cell: CellKind::GruResetAfter,
            batch: 1,
            hidden: 256,
            vocab: 1027,
            prefix: 5,
            count: 40,
        },
        Case {
            cell: CellKind::GruResetBefore,
            batch: 2,
            hidden: 64,
            vocab: 300,
            prefix: 3,
            count: 25,
        },
        Case {
            cell: CellKind::Lstm,
            batch: 3,
            hidden: 100,
            vocab: 90,
            prefix: 1,
            count: 30,
        },
        Case {
            cell: CellKind::RnnTanh,
            batch: 1,
            hidden: 33,
            vocab: 1100,
            prefix: 7,
            count: 20,
        },
        Case {
            cell: CellKind::GruResetAfter,
            batch: 12,
            hidden: 48,
            vocab: 70,
            prefix: 2,
            count: 15,
        },
        Case {
            cell: CellKind::RnnRelu,
            batch: 4,
            hidden: 17,
            vocab: 29,
            prefix: 2,
            count: 30,
        },
        // Shapes the register cluster kernel takes (every CTA of 16 owns a
        // unit), with more rows than one of its clusters holds (LSTM 4,
        // RNN 16).
        Case {
            cell: CellKind::Lstm,
            batch: 5,
            hidden: 128,
            vocab: 200,
            prefix: 2,
            count: 20,
        },
        Case {
            cell: CellKind::RnnTanh,
            batch: 17,
            hidden: 256,
            vocab: 500,
            prefix: 3,
            count: 15,
        },
        // One batch row of the other cells on the register kernel's
        // one-row form (gen_rcluster16b1_*).
        Case {
            cell: CellKind::Lstm,
            batch: 1,
            hidden: 128,
            vocab: 200,
            prefix: 3,
            count: 20,
        },
        Case {
            cell: CellKind::RnnRelu,
            batch: 1,
            hidden: 64,
            vocab: 97,
            prefix: 2,
            count: 25,
        },
        Case {
            cell: CellKind::GruResetBefore,
            batch: 1,
            hidden: 160,
            vocab: 300,
            prefix: 4,
            count: 20,
        },
        // d2l's scratch GRU at its size, two clusters of the register kernel.
        Case {
            cell: CellKind::GruResetBefore,
            batch: 6,
            hidden: 256,
            vocab: 1027,
            prefix: 2,
            count: 15,
        },
    ]
}

/// Whether the cluster kernels take a hidden size on this GPU: every CTA
/// of a cluster (16 or 8, as the device allows) must own a hidden unit.
fn cluster_takes(gpu: &Gpu, hidden: usize) -> bool {
    [16, 8]
        .iter()
        .any(|&cs| cs <= gpu.limits().cluster && every_cta_owns_a_unit(hidden, cs))
}

/// One generation launch to check.
#[derive(Clone, Copy)]
struct Launch {
    path: Option<GenPath>,
    cluster: Option<usize>,
    ahead: bool,
    blocks: bool,
    split: bool,
}

/// The launches to check on this GPU: automatic, the cooperative
/// persistent kernel, each cluster size the device allows, per step; the
/// cluster kernels also with the product ahead, and with it and block
/// sends (clusters of 16: block sends alone too), and with the split
/// greedy draw (temperature sampling ignores it: see `sampled`).
fn paths(gpu: &Gpu) -> Vec<Launch> {
    let launch = |path, cluster, ahead, blocks| Launch {
        path,
        cluster,
        ahead,
        blocks,
        split: false,
    };
    let split = |l: Launch| Launch { split: true, ..l };
    let mut v = vec![
        launch(None, None, false, false),
        launch(Some(GenPath::Persistent), None, false, false),
        launch(Some(GenPath::PerStep), None, false, false),
    ];
    let most = gpu.limits().cluster;
    if most == 0 {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"cluster generation skipped: no thread-block clusters (before sm_90)\n",
        );
    }
    for size in [8, 16] {
        if size <= most {
            let cluster = Some(size);
            v.push(launch(Some(GenPath::Cluster), cluster, false, false));
            v.push(launch(Some(GenPath::Cluster), cluster, true, false));
            v.push(launch(Some(GenPath::Cluster), cluster, true, true));
            if size == 16 {
                v.push(launch(Some(GenPath::Cluster), cluster, false, true));
                v.push(split(launch(Some(GenPath::Cluster), cluster, true, false)));
            } else {
                v.push(split(launch(Some(GenPath::Cluster), cluster, false, false)));
            }
        }
    }
    if most >= 16 {
        v.push(launch(Some(GenPath::ClusterRegs), None, false, false));
        v.push(launch(Some(GenPath::ClusterRegs), None, true, false));
        v.push(launch(Some(GenPath::ClusterRegs), None, true, true));
        v.push(split(launch(Some(GenPath::ClusterRegs), None, true, true)));
    }
    v
}

/// The launches whose temperature sampling differs: all but the split
/// greedy draw's, which the kernels ignore when sampling.
fn sampled(gpu: &Gpu) -> Vec<Launch> {
    paths(gpu).into_iter().filter(|l| !l.split).collect()
}

#[test]
fn greedy_matches_core() {
    let gpu = gpu_or_skip!();
    for (i, c) in cases().iter().enumerate() {
        for precision in [Precision::F32, Precision::F16] {
            for launch in paths(&gpu) {
                let took = check(&gpu, c, precision, Sampling::Greedy, launch, 10 + i as u64);
                match (launch.path, took) {
                    (Some(forced), Some(took)) => assert_eq!(took, forced),
                    (Some(_), None) => {}
                    (None, took) => {
                        if cluster_takes(&gpu, c.hidden) {
                            assert_eq!(took, Some(GenPath::Cluster), "{:?}", c.cell);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn temperature_sampling_matches_core() {
    let gpu = gpu_or_skip!();
    for (i, c) in cases().iter().enumerate() {
        for precision in [Precision::F32, Precision::F16] {
            for launch in sampled(&gpu) {
                let sampling = Sampling::Temperature {
                    temperature: 0.8,
                    seed: 99 + i as u64,
                };
                check(&gpu, c, precision, sampling, launch, 20 + i as u64);
            }
        }
    }
}

#[test]
fn bad_generation_input_is_rejected() {
    let gpu = gpu_or_skip!();
    let layout = ModelLayout {
        cell: CellKind::Lstm,
        vocab: 11,
        hidden: 4,
    };
    let model =
        DeviceModel::upload(&gpu, layout, &random_params(&layout, 5), Precision::F32).unwrap();
    assert!(GenBuffers::new(&model, 1, 0, 5).is_err());
    let mut bufs = GenBuffers::new(&model, 1, 2, 5).unwrap();
    assert!(bufs.set_prefix(&[1, 11]).is_err());
    bufs.set_prefix(&[1, 2]).unwrap();
    let bad = Sampling::Temperature {
        temperature: f32::NAN,
        seed: 1,
    };
    assert!(model.generate(&mut bufs, bad, false).is_err());
}

/// What the output layer is made to give in `split_greedy_draw_is_the_whole_row_draw`.
#[derive(Clone, Copy, Debug)]
enum Logits {
    /// The random weights.
    Random,
    /// Rows `lo` < `hi` zero, their biases far ahead of the rest: every token
    /// is `lo` (the two logits are equal in any order of summation).
    Tie { lo: usize, hi: usize },
    /// One bias NaN: every draw is unusable.
    NanAt(usize),
    /// One bias +inf: every draw is unusable.
    InfAt(usize),
    /// Every bias -inf: every draw is unusable.
    AllNegInf,
}

/// The tokens (or that they were unusable), the last logits and the last h
/// of one greedy launch, as bits; `None` where the launch does not fit.
type Outputs = (Option<Vec<u32>>, Vec<u32>, Vec<u32>);

fn greedy_outputs(
    model: &DeviceModel,
    c: &Case,
    prefix: &[u32],
    launch: Launch,
) -> Option<Outputs> {
    let mut bufs = GenBuffers::new(model, c.batch, c.prefix, c.count).unwrap();
    bufs.set_prefix(prefix).unwrap();
    bufs.set_product_ahead(launch.ahead);
    bufs.set_block_sends(launch.blocks);
    bufs.set_split_argmax(launch.split);
    bufs.poison().unwrap();
    match model.generate_on(&mut bufs, Sampling::Greedy, launch.path, launch.cluster) {
        Ok(took) => assert_eq!(Some(took), launch.path),
        Err(Error::Limit { .. }) => return None,
        Err(e) => panic!("{:?} {:?} {:?}: {e}", c.cell, launch.path, launch.cluster),
    }
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect();
    Some((
        bufs.tokens().ok(),
        bits(bufs.last_logits().unwrap()),
        bits(bufs.h_last().unwrap()),
    ))
}

/// The split greedy draw gives the whole-row draw's tokens, last logits and
/// states bit for bit, on every cluster kernel, with and without the
/// product ahead and block sends: with random weights; with two equal
/// winning rows in different CTAs and in one CTA (the lower index wins);
/// and with a NaN, a +inf or only -inf logits (every draw unusable).
#[test]
fn split_greedy_draw_is_the_whole_row_draw() {
    let gpu = gpu_or_skip!();
    if gpu.limits().cluster < 16 {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"split greedy draw skipped: no clusters of 16 (before sm_90)\n",
        );
        return;
    }
    let case = |cell, batch, hidden, vocab| Case {
        cell,
        batch,
        hidden,
        vocab,
        prefix: 2,
        count: 12,
    };
    // The d2l shape; a vocabulary smaller than 16 CTAs' rows (the last CTAs
    // hold none) with several batch rows per cluster; more batch rows per
    // cluster than a CTA has warps (136 rows on the 16 or fewer clusters of
    // 16 that fit at once: some warps draw for two rows).
    let shapes = [
        case(CellKind::GruResetAfter, 1, 256, 1027),
        case(CellKind::GruResetBefore, 12, 48, 70),
        case(CellKind::RnnTanh, 136, 64, 300),
    ];
    let launches = [
        (Some(GenPath::Cluster), Some(16), true, false),
        (Some(GenPath::Cluster), Some(8), false, true),
        (Some(GenPath::ClusterRegs), None, true, true),
    ];
    let mut compared = 0;
    for (i, c) in shapes.iter().enumerate() {
        let v = c.vocab;
        let kinds = [
            Logits::Random,
            Logits::Tie { lo: 1, hi: v - 2 },
            Logits::Tie { lo: 4, hi: 5 },
            Logits::NanAt(v / 2),
            Logits::InfAt(v - 1),
            Logits::AllNegInf,
        ];
        for kind in kinds {
            for precision in [Precision::F32, Precision::F16] {
                let layout = ModelLayout {
                    cell: c.cell,
                    vocab: v,
                    hidden: c.hidden,
                };
                let mut params = random_params(&layout, 40 + i as u64);
                let t = layout.tensors();
                let (wd, bd) = (t[4].range(), t[5].range());
                let h = c.hidden;
                match kind {
                    Logits::Random => {}
                    Logits::Tie { lo, hi } => {
                        params[wd.start + lo * h..wd.start + (lo + 1) * h].fill(0.0);
                        params[wd.start + hi * h..wd.start + (hi + 1) * h].fill(0.0);
                        params[bd.start + lo] = 50.0;
                        params[bd.start + hi] = 50.0;
                    }
                    Logits::NanAt(k) => params[bd.start + k] = f32::NAN,
                    Logits::InfAt(k) => params[bd.start + k] = f32::INFINITY,
                    Logits::AllNegInf => params[bd].fill(f32::NEG_INFINITY),
                }
                let model = DeviceModel::upload(&gpu, layout, &params, precision).unwrap();
                let prefix = random_tokens(c.prefix * c.batch, v, 50 + i as u64);
                for (path, cluster, ahead, blocks) in launches {
                    let whole = Launch {
                        path,
                        cluster,
                        ahead,
                        blocks,
                        split: false,
                    };
                    let split = Launch {
                        split: true,
                        ..whole
                    };
                    let what = format!("{:?} {precision:?} {kind:?} {path:?} {cluster:?}", c.cell);
                    let Some(want) = greedy_outputs(&model, c, &prefix, whole) else {
                        println!("{what}: does not fit");
                        continue;
                    };
                    let got = greedy_outputs(&model, c, &prefix, split)
                        .expect("fits as the whole-row draw");
                    assert!(
                        got == want,
                        "{what}: the split draw differs from the whole-row draw"
                    );
                    match kind {
                        Logits::Random => assert!(want.0.is_some(), "{what}: unusable logits"),
                        Logits::Tie { lo, .. } => {
                            let tokens = want.0.as_ref().expect("usable logits");
                            assert!(
                                tokens.iter().all(|&t| t as usize == lo),
                                "{what}: {tokens:?}"
                            );
                        }
                        _ => assert!(want.0.is_none(), "{what}: a token from unusable logits"),
                    }
                    compared += 1;
                }
            }
        }
    }
    println!("{compared} launches: the split draw equals the whole-row draw");
    assert!(compared > 0);
}
