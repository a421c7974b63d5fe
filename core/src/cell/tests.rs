//! Unit tests of the cell API: errors, sizes, token input against one-hot
//! dense input, the step against the sequence, f16 weights, and the AVX2
//! build against the generic one. (Gradients are checked by finite
//! differences and against PyTorch in the workspace's `tests/`.)

extern crate std;

use std::vec;
use std::vec::Vec;

use super::*;
use crate::gemm::Portable;
use half::f16;

/// A small deterministic generator (splitmix64), values in [-a, a).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a)
            .collect()
    }
}

/// Owned parameters and data of one test sequence.
struct Setup {
    dims: SeqDims,
    w: [Vec<f32>; 4],
    x: Vec<f32>,
    ids: Vec<u32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
    dhs: Vec<f32>,
}

impl Setup {
    fn new(cell: CellKind, steps: usize, batch: usize, input: usize, hidden: usize) -> Setup {
        let dims = SeqDims {
            cell: CellDims {
                cell,
                input,
                hidden,
            },
            steps,
            batch,
        };
        let d = dims.cell;
        let mut rng = Rng(0x5EED + cell as u64);
        let ids: Vec<u32> = (0..steps * batch)
            .map(|_| (rng.next() % input as u64) as u32)
            .collect();
        let bh = batch * hidden;
        Setup {
            dims,
            w: [
                rng.fill(d.weight_ih_len(), 0.5),
                rng.fill(d.weight_hh_len(), 0.5),
                rng.fill(d.bias_len(), 0.3),
                rng.fill(d.bias_len(), 0.3),
            ],
            x: rng.fill(steps * batch * input, 1.0),
            ids,
            h0: rng.fill(bh, 0.5),
            c0: if cell.has_cell_state() {
                rng.fill(bh, 0.5)
            } else {
                Vec::new()
            },
            dhs: rng.fill(steps * bh, 1.0),
        }
    }
    fn params(&self) -> CellParams<'_, f32> {
        CellParams {
            weight_ih: &self.w[0],
            weight_hh: &self.w[1],
            bias_ih: &self.w[2],
            bias_hh: &self.w[3],
        }
    }
    fn one_hot(&self) -> Vec<f32> {
        let i = self.dims.cell.input;
        let mut x = vec![0.0; self.ids.len() * i];
        for (r, &id) in self.ids.iter().enumerate() {
            x[r * i + id as usize] = 1.0;
        }
        x
    }
    fn state_len(&self) -> usize {
        self.c0.len()
    }
    /// Forward then backward; returns `(hs, c_last, cache, grads...)` with
    /// grads `[dW_ih, dW_hh, db_ih, db_hh, dinput, dh0, dc0]`.
    fn run(&self, input: Input<'_>) -> (Vec<f32>, Vec<f32>, Vec<f32>, [Vec<f32>; 7]) {
        let d = &self.dims;
        let (hs, c_last, cache) = self.forward(input);
        let cd = d.cell;
        let dense = matches!(input, Input::Dense(_));
        let mut g = [
            vec![0.0; cd.weight_ih_len()],
            vec![0.0; cd.weight_hh_len()],
            vec![0.0; cd.bias_len()],
            vec![0.0; cd.bias_len()],
            vec![0.0; if dense { self.x.len() } else { 0 }],
            vec![0.0; self.h0.len()],
            vec![0.0; self.state_len()],
        ];
        let mut ws = vec![f32::NAN; workspace_len(d)];
        let [wih, whh, bih, bhh, dx, dh0, dc0] = &mut g;
        let mut grads = CellGrads {
            weight_ih: wih,
            weight_hh: whh,
            bias_ih: bih,
            bias_hh: bhh,
        };
        let dinput = if dense { Some(dx.as_mut_slice()) } else { None };
        sequence_backward(
            &mut grads,
            dinput,
            dh0,
            dc0,
            &self.dhs,
            input,
            &self.h0,
            &self.c0,
            self.params(),
            &hs,
            &cache,
            &mut ws,
            d,
            &Portable,
        )
        .unwrap();
        for v in g.iter() {
            assert!(v.iter().all(|x| x.is_finite()));
        }
        (hs, c_last, cache, g)
    }
    fn forward(&self, input: Input<'_>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let d = &self.dims;
        let mut hs = vec![f32::NAN; d.steps * self.h0.len()];
        let mut c_last = vec![f32::NAN; self.state_len()];
        let mut cache = vec![f32::NAN; cache_len(d)];
        let mut ws = vec![f32::NAN; workspace_len(d)];
        sequence_forward(
            &mut hs,
            &mut c_last,
            input,
            &self.h0,
            &self.c0,
            self.params(),
            &mut cache,
            &mut ws,
            d,
            &Portable,
        )
        .unwrap();
        assert!(hs
            .iter()
            .chain(&c_last)
            .chain(&cache)
            .all(|v| v.is_finite()));
        (hs, c_last, cache)
    }
}

fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{k}]: {x} vs {y}"
        );
    }
}

#[test]
fn sizes() {
    let dims = |cell, steps, batch| SeqDims {
        cell: CellDims {
            cell,
            input: 7,
            hidden: 5,
        },
        steps,
        batch,
    };
    let tbh = 3 * 2 * 5;
    assert_eq!(cache_len(&dims(CellKind::RnnTanh, 3, 2)), 0);
    assert_eq!(cache_len(&dims(CellKind::GruResetAfter, 3, 2)), 4 * tbh);
    assert_eq!(cache_len(&dims(CellKind::GruResetBefore, 3, 2)), 4 * tbh);
    assert_eq!(cache_len(&dims(CellKind::Lstm, 3, 2)), 6 * tbh);
    for kind in CellKind::ALL {
        let d = dims(kind, 3, 2);
        let gh = kind.gates() * 5;
        // At least the forward's input projection and recurrent product.
        assert!(workspace_len(&d) >= 3 * 2 * gh + 2 * gh + gh);
        assert_eq!(
            step_workspace_len(&d.cell, 2),
            2 * (3 * gh + 2 * 5),
            "{kind:?}"
        );
        // Overflowing sizes: no buffer can match, and the calls say why.
        assert_eq!(cache_len(&dims(kind, usize::MAX, 2)), usize::MAX);
        assert_eq!(workspace_len(&dims(kind, usize::MAX, 2)), usize::MAX);
        assert_eq!(step_workspace_len(&d.cell, usize::MAX), usize::MAX);
    }
}

#[test]
fn token_input_equals_one_hot_dense_input() {
    // H = 20: gate rows 20..80, i.e. whole 16-row blocks of the gather and
    // scatter and a remainder, for the various kinds.
    for kind in CellKind::ALL {
        let s = Setup::new(kind, 3, 4, 11, 20);
        let one_hot = s.one_hot();
        let (hs_t, c_t, cache_t, g_t) = s.run(Input::Tokens(&s.ids));
        let (hs_d, c_d, cache_d, g_d) = s.run(Input::Dense(&one_hot));
        // The forward is bitwise equal: bias + (w + zeros) either way.
        assert_eq!(hs_t, hs_d, "{kind:?} hs");
        assert_eq!(c_t, c_d, "{kind:?} c_last");
        assert_eq!(cache_t, cache_d, "{kind:?} cache");
        // Gradients: the same sums, possibly in another order.
        for k in [0, 1, 2, 3, 5, 6] {
            assert_close("grad", &g_t[k], &g_d[k], 1e-5);
        }
    }
}

#[test]
fn steps_match_the_sequence_and_f16_weights_convert_exactly() {
    for kind in CellKind::ALL {
        let s = Setup::new(kind, 4, 3, 9, 12);
        let d = s.dims;
        let (hs, c_last, _) = s.forward(Input::Dense(&s.x));
        // f16 weights, and the same values as f32.
        let w16: Vec<Vec<f16>> =
            s.w.iter()
                .map(|w| w.iter().map(|&v| f16::from_f32(v)).collect())
                .collect();
        let w16_as_f32: Vec<Vec<f32>> = w16
            .iter()
            .map(|w| w.iter().map(|v| v.to_f32()).collect())
            .collect();
        let p16 = CellParams {
            weight_ih: &w16[0][..],
            weight_hh: &w16[1][..],
            bias_ih: &w16[2][..],
            bias_hh: &w16[3][..],
        };
        let p16_as_f32 = CellParams {
            weight_ih: &w16_as_f32[0][..],
            weight_hh: &w16_as_f32[1][..],
            bias_ih: &w16_as_f32[2][..],
            bias_hh: &w16_as_f32[3][..],
        };
        let (b, i) = (d.batch, d.cell.input);
        let bh = s.h0.len();
        for tokens in [false, true] {
            let (mut h, mut c) = (s.h0.clone(), s.c0.clone());
            let (mut h16, mut c16) = (s.h0.clone(), s.c0.clone());
            let (mut h32, mut c32) = (s.h0.clone(), s.c0.clone());
            let mut ws = vec![f32::NAN; step_workspace_len(&d.cell, b)];
            let mut all = Vec::new();
            for t in 0..d.steps {
                let input = if tokens {
                    Input::Tokens(&s.ids[t * b..(t + 1) * b])
                } else {
                    Input::Dense(&s.x[t * b * i..(t + 1) * b * i])
                };
                let step = |h: &mut Vec<f32>,
                            c: &mut Vec<f32>,
                            ws: &mut [f32],
                            f16w: Option<bool>| {
                    let mut hn = vec![f32::NAN; bh];
                    let mut cn = vec![f32::NAN; c.len()];
                    match f16w {
                        None => {
                            step_forward(&mut hn, &mut cn, input, h, c, s.params(), ws, &d.cell, b)
                        }
                        Some(true) => {
                            step_forward(&mut hn, &mut cn, input, h, c, p16, ws, &d.cell, b)
                        }
                        Some(false) => {
                            step_forward(&mut hn, &mut cn, input, h, c, p16_as_f32, ws, &d.cell, b)
                        }
                    }
                    .unwrap();
                    assert!(hn.iter().chain(&cn).all(|v| v.is_finite()));
                    *h = hn;
                    *c = cn;
                };
                step(&mut h, &mut c, &mut ws, None);
                step(&mut h16, &mut c16, &mut ws, Some(true));
                step(&mut h32, &mut c32, &mut ws, Some(false));
                all.extend_from_slice(&h);
                // f16 storage is converted exactly: same results as f32
                // storage of the same values.
                assert_eq!(h16, h32, "{kind:?} f16 step {t}");
                assert_eq!(c16, c32, "{kind:?} f16 step {t}");
            }
            if !tokens {
                // Matrix-vector loop vs gemm: other summation orders.
                assert_close("steps vs sequence", &all, &hs, 1e-5);
                assert_close("c", &c, &c_last, 1e-5);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_build_matches_the_generic_build_bitwise() {
    use crate::gemm::Isa;
    if Isa::detect() != Isa::Avx2Fma {
        std::println!("skipped: no AVX2 + FMA on this processor");
        return;
    }
    for kind in CellKind::ALL {
        let s = Setup::new(kind, 3, 5, 9, 37);
        let d = &s.dims;
        let p = Plan::new(d).unwrap();
        let run = |avx2: bool| {
            let mut hs = vec![f32::NAN; d.steps * s.h0.len()];
            let mut c_last = vec![f32::NAN; s.state_len()];
            let mut cache = vec![f32::NAN; cache_len(d)];
            let mut ws = vec![f32::NAN; workspace_len(d)];
            let input = Input::Dense(&s.x);
            let args = (&s.h0[..], &s.c0[..], s.params());
            if avx2 {
                // SAFETY: AVX2 and FMA were detected above.
                unsafe {
                    sequence::forward_avx2(
                        &mut hs,
                        &mut c_last,
                        input,
                        args.0,
                        args.1,
                        args.2,
                        &mut cache,
                        &mut ws,
                        &p,
                        &Portable,
                    )
                }
            } else {
                sequence::forward_body(
                    &mut hs,
                    &mut c_last,
                    input,
                    args.0,
                    args.1,
                    args.2,
                    &mut cache,
                    &mut ws,
                    &p,
                    &Portable,
                )
            }
            .unwrap();
            let cd = d.cell;
            let mut g = [
                vec![0.0; cd.weight_ih_len()],
                vec![0.0; cd.weight_hh_len()],
                vec![0.0; cd.bias_len()],
                vec![0.0; cd.bias_len()],
                vec![0.0; s.x.len()],
                vec![0.0; s.h0.len()],
                vec![0.0; s.state_len()],
            ];
            let [wih, whh, bih, bhh, dx, dh0, dc0] = &mut g;
            let mut grads = CellGrads {
                weight_ih: wih,
                weight_hh: whh,
                bias_ih: bih,
                bias_hh: bhh,
            };
            ws.fill(f32::NAN);
            let (h0, c0, params) = args;
            if avx2 {
                // SAFETY: as above.
                unsafe {
                    sequence::backward_avx2(
                        &mut grads,
                        Some(dx),
                        dh0,
                        dc0,
                        &s.dhs,
                        input,
                        h0,
                        c0,
                        params,
                        &hs,
                        &cache,
                        &mut ws,
                        &p,
                        &Portable,
                    )
                }
            } else {
                sequence::backward_body(
                    &mut grads,
                    Some(dx),
                    dh0,
                    dc0,
                    &s.dhs,
                    input,
                    h0,
                    c0,
                    params,
                    &hs,
                    &cache,
                    &mut ws,
                    &p,
                    &Portable,
                )
            }
            .unwrap();
            (hs, c_last, g)
        };
        let (a, b) = (run(true), run(false));
        assert_eq!(a.0, b.0, "{kind:?} hs");
        assert_eq!(a.1, b.1, "{kind:?} c_last");
        assert_eq!(a.2, b.2, "{kind:?} grads");
    }
}

#[test]
fn wrong_arguments_are_errors_naming_them() {
    let s = Setup::new(CellKind::Lstm, 2, 3, 5, 4);
    let d = s.dims;
    let bh = s.h0.len();
    let mut hs = vec![f32::NAN; d.steps * bh];
    let mut c_last = vec![f32::NAN; bh];
    let mut cache = vec![f32::NAN; cache_len(&d)];
    let mut ws = vec![f32::NAN; workspace_len(&d)];
    let fwd =
        |hs: &mut [f32], c_last: &mut [f32], cache: &mut [f32], ws: &mut [f32], dims: &SeqDims| {
            sequence_forward(
                hs,
                c_last,
                Input::Tokens(&s.ids),
                &s.h0,
                &s.c0,
                s.params(),
                cache,
                ws,
                dims,
                &Portable,
            )
        };
    let len_err = |r: Result<(), Error>| match r {
        Err(Error::Length { what, .. }) => what,
        other => panic!("expected a length error, got {other:?}"),
    };
    assert!(fwd(&mut hs, &mut c_last, &mut cache, &mut ws, &d).is_ok());
    let n = hs.len();
    assert_eq!(
        len_err(fwd(&mut hs[..n - 1], &mut c_last, &mut cache, &mut ws, &d)),
        "hs"
    );
    assert_eq!(
        len_err(fwd(&mut hs, &mut [], &mut cache, &mut ws, &d)),
        "c_last"
    );
    let n = cache.len();
    assert_eq!(
        len_err(fwd(&mut hs, &mut c_last, &mut cache[..n - 1], &mut ws, &d)),
        "cache"
    );
    let n = ws.len();
    assert_eq!(
        len_err(fwd(&mut hs, &mut c_last, &mut cache, &mut ws[..n - 1], &d)),
        "workspace"
    );
    for (what, dims) in [
        ("steps", SeqDims { steps: 0, ..d }),
        ("batch", SeqDims { batch: 0, ..d }),
        (
            "hidden",
            SeqDims {
                cell: CellDims {
                    hidden: 0,
                    ..d.cell
                },
                ..d
            },
        ),
    ] {
        assert_eq!(
            fwd(&mut hs, &mut c_last, &mut cache, &mut ws, &dims),
            Err(Error::Dim { what, value: 0 })
        );
    }
    // Parameters of the wrong shape.
    let short = &s.w[1][1..];
    let bad = CellParams {
        weight_hh: short,
        ..s.params()
    };
    let r = sequence_forward(
        &mut hs,
        &mut c_last,
        Input::Dense(&s.x),
        &s.h0,
        &s.c0,
        bad,
        &mut cache,
        &mut ws,
        &d,
        &Portable,
    );
    assert_eq!(len_err(r), "weight_hh");
    // Dense input of the wrong length.
    let r = sequence_forward(
        &mut hs,
        &mut c_last,
        Input::Dense(&s.x[1..]),
        &s.h0,
        &s.c0,
        s.params(),
        &mut cache,
        &mut ws,
        &d,
        &Portable,
    );
    assert_eq!(len_err(r), "input");

    // A cell state for a cell without one.
    let g = Setup::new(CellKind::GruResetAfter, 2, 3, 5, 4);
    let gd = g.dims;
    let mut gcache = vec![f32::NAN; cache_len(&gd)];
    let mut gws = vec![f32::NAN; workspace_len(&gd)];
    let r = sequence_forward(
        &mut hs,
        &mut [],
        Input::Tokens(&g.ids),
        &g.h0,
        &s.c0,
        g.params(),
        &mut gcache,
        &mut gws,
        &gd,
        &Portable,
    );
    assert_eq!(r, Err(Error::Cell { what: "c0" }));

    // Backward: a gradient for token ids, short gradients, bad ids.
    assert!(fwd(&mut hs, &mut c_last, &mut cache, &mut ws, &d).is_ok());
    let cd = d.cell;
    let mut gw = [
        vec![0.0; cd.weight_ih_len()],
        vec![0.0; cd.weight_hh_len()],
        vec![0.0; cd.bias_len()],
        vec![0.0; cd.bias_len()],
    ];
    let mut dh0 = vec![0.0; bh];
    let mut dc0 = vec![0.0; bh];
    let mut dx = vec![0.0; s.x.len()];
    let mut bwd = |gw: &mut [Vec<f32>; 4],
                   dinput: Option<&mut [f32]>,
                   dhs: &[f32],
                   ids: &[u32],
                   dc0: &mut [f32]| {
        let [wih, whh, bih, bhh] = gw;
        let mut grads = CellGrads {
            weight_ih: wih,
            weight_hh: whh,
            bias_ih: bih,
            bias_hh: bhh,
        };
        sequence_backward(
            &mut grads,
            dinput,
            &mut dh0,
            dc0,
            dhs,
            Input::Tokens(ids),
            &s.h0,
            &s.c0,
            s.params(),
            &hs,
            &cache,
            &mut ws,
            &d,
            &Portable,
        )
    };
    assert!(bwd(&mut gw, None, &s.dhs, &s.ids, &mut dc0).is_ok());
    assert_eq!(
        bwd(&mut gw, Some(&mut dx), &s.dhs, &s.ids, &mut dc0),
        Err(Error::Value { what: "dinput" })
    );
    assert_eq!(
        len_err(bwd(&mut gw, None, &s.dhs[1..], &s.ids, &mut dc0)),
        "dhs"
    );
    assert_eq!(len_err(bwd(&mut gw, None, &s.dhs, &s.ids, &mut [])), "dc0");
    let mut ids = s.ids.clone();
    ids[3] = 99;
    assert_eq!(
        bwd(&mut gw, None, &s.dhs, &ids, &mut dc0),
        Err(Error::Token {
            what: "input",
            index: 3,
            value: 99,
            limit: 5
        })
    );
    gw[2].pop();
    assert_eq!(
        len_err(bwd(&mut gw, None, &s.dhs, &s.ids, &mut dc0)),
        "grad bias_ih"
    );

    // Step: batch 0, short state, bad id, short workspace.
    let mut h = vec![f32::NAN; 3 * 4];
    let mut c = vec![f32::NAN; 3 * 4];
    let mut sws = vec![f32::NAN; step_workspace_len(&cd, 3)];
    let mut step = |h: &mut [f32], ids: &[u32], h_prev: &[f32], ws: &mut [f32], batch: usize| {
        step_forward(
            h,
            &mut c,
            Input::Tokens(ids),
            h_prev,
            &s.c0,
            s.params(),
            ws,
            &cd,
            batch,
        )
    };
    assert!(step(&mut h, &s.ids[..3], &s.h0, &mut sws, 3).is_ok());
    assert_eq!(
        step(&mut h, &s.ids[..3], &s.h0, &mut sws, 0),
        Err(Error::Dim {
            what: "batch",
            value: 0
        })
    );
    assert_eq!(
        len_err(step(&mut h, &s.ids[..3], &s.h0[1..], &mut sws, 3)),
        "h_prev"
    );
    assert_eq!(
        len_err(step(&mut h[1..], &s.ids[..3], &s.h0, &mut sws, 3)),
        "h"
    );
    let n = sws.len();
    assert_eq!(
        len_err(step(&mut h, &s.ids[..3], &s.h0, &mut sws[..n - 1], 3)),
        "workspace"
    );
    assert_eq!(
        step(&mut h, &[0, 5, 1], &s.h0, &mut sws, 3),
        Err(Error::Token {
            what: "input",
            index: 1,
            value: 5,
            limit: 5
        })
    );
}

/// Random dimensions and slices of random (mostly wrong) lengths, token ids
/// possibly out of range: every call returns `Ok` or an error, none panics.
#[test]
fn random_arguments_never_panic() {
    let rng = core::cell::RefCell::new(Rng(77));
    let pick = |n: usize| (rng.borrow_mut().next() % n as u64) as usize;
    let mut completed = 0;
    for round in 0..3000 {
        let kind = CellKind::ALL[pick(5)];
        let (t, b, i, h) = (pick(4), pick(4), pick(5), pick(5));
        let dims = SeqDims {
            cell: CellDims {
                cell: kind,
                input: i,
                hidden: h,
            },
            steps: t,
            batch: b,
        };
        let cd = dims.cell;
        // Right length most of the time, off by one otherwise.
        let len = |n: usize| match pick(64) {
            0 => n + 1,
            1 => n.saturating_sub(1),
            _ => n,
        };
        let (bh, tb) = (b * h, t * b);
        let state = if kind.has_cell_state() { bh } else { 0 };
        let w = [
            vec![0.1f32; len(cd.weight_ih_len())],
            vec![0.1f32; len(cd.weight_hh_len())],
            vec![0.1f32; len(cd.bias_len())],
            vec![0.1f32; len(cd.bias_len())],
        ];
        let params = CellParams {
            weight_ih: &w[0],
            weight_hh: &w[1],
            bias_ih: &w[2],
            bias_hh: &w[3],
        };
        let x = vec![0.5f32; len(tb * i)];
        let ids: Vec<u32> = (0..len(tb)).map(|_| pick(i + 2) as u32).collect();
        let input = if round % 2 == 0 {
            Input::Dense(&x)
        } else {
            Input::Tokens(&ids)
        };
        let h0 = vec![0.2f32; len(bh)];
        let c0 = vec![0.2f32; len(state)];
        let mut hs = vec![f32::NAN; len(tb * h)];
        let mut c_last = vec![f32::NAN; len(state)];
        let mut cache = vec![f32::NAN; len(cache_len(&dims))];
        let mut ws = vec![f32::NAN; len(workspace_len(&dims))];
        let fwd = sequence_forward(
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
        );
        if fwd.is_ok() {
            assert!(hs.iter().all(|v| v.is_finite()));
        }
        let mut gw = [
            vec![0.0f32; len(cd.weight_ih_len())],
            vec![0.0f32; len(cd.weight_hh_len())],
            vec![0.0f32; len(cd.bias_len())],
            vec![0.0f32; len(cd.bias_len())],
        ];
        let [wih, whh, bih, bhh] = &mut gw;
        let mut grads = CellGrads {
            weight_ih: wih,
            weight_hh: whh,
            bias_ih: bih,
            bias_hh: bhh,
        };
        let mut dx = vec![0.0f32; len(tb * i)];
        let dinput = if pick(2) == 0 {
            Some(&mut dx[..])
        } else {
            None
        };
        let mut dh0 = vec![0.0f32; len(bh)];
        let mut dc0 = vec![0.0f32; len(state)];
        let dhs = vec![1.0f32; len(tb * h)];
        let bwd = sequence_backward(
            &mut grads, dinput, &mut dh0, &mut dc0, &dhs, input, &h0, &c0, params, &hs, &cache,
            &mut ws, &dims, &Portable,
        );
        if fwd.is_ok() && bwd.is_ok() {
            assert!(dh0.iter().all(|v| v.is_finite()));
            completed += 1;
        }
        let step_input = match input {
            Input::Dense(x) => Input::Dense(&x[..x.len().min(len(b * i))]),
            Input::Tokens(ids) => Input::Tokens(&ids[..ids.len().min(len(b))]),
        };
        let mut sws = vec![f32::NAN; len(step_workspace_len(&cd, b))];
        let mut hn = vec![f32::NAN; len(bh)];
        let mut cn = vec![f32::NAN; len(state)];
        let _ = step_forward(
            &mut hn, &mut cn, step_input, &h0, &c0, params, &mut sws, &cd, b,
        );
    }
    // Enough valid calls among the invalid ones to mean something.
    assert!(completed > 300, "only {completed} valid rounds");
}
