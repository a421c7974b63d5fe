//! Proof that recur-core's routines never touch the heap: a counting global
//! allocator, armed only on the test's own thread while the calls run,
//! must see zero allocations through every cell's sequence forward and
//! backward (token and dense input), the streaming step (f32 and f16
//! weights), the output layer and loss, clipping, both optimizers,
//! sampling and large matrix products.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use half::f16;
use recur_core::cell::{
    cache_len, sequence_backward, sequence_forward, step_forward, step_workspace_len, workspace_len,
};
use recur_core::clip::clip_global_norm;
use recur_core::gemm::{Gemm, Portable, Trans};
use recur_core::optim::{adam_step, sgd_step, AdamConfig};
use recur_core::output::{
    dense_backward, dense_forward, softmax_xent_backward, softmax_xent_backward_in_place,
    softmax_xent_forward, softmax_xent_forward_in_place, DenseDims,
};
use recur_core::sample::{argmax, sample, sample_scratch_len};
use recur_core::{CellKind, Input, ModelLayout, SeqDims};

struct Counting;

thread_local! {
    // Per thread, so that tests running in parallel do not count each
    // other's allocations. Const-initialised and without a destructor:
    // using them never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if ARMED.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread while `f` runs.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    ALLOCATIONS.with(Cell::get) - before
}

fn filled(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
            ((x >> 8) as f32 / 16_777_216.0 - 0.5) * 0.2
        })
        .collect()
}

/// A tiny seeded generator for `sample`.
struct Lcg(u64);
impl rand_core::RngCore for Lcg {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        self.0
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for b in dst {
            *b = self.next_u32() as u8;
        }
    }
}

#[test]
fn the_counter_sees_allocations() {
    // Guards against a counter that cannot fail.
    let n = allocations_in(|| {
        let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(64));
        std::hint::black_box(v);
    });
    assert_eq!(n, 1);
}

#[test]
fn cells_allocate_nothing() {
    let (vocab, hidden, steps, batch) = (37, 24, 5, 3);
    for kind in CellKind::ALL {
        let layout = ModelLayout {
            cell: kind,
            vocab,
            hidden,
        };
        let dims = SeqDims {
            cell: layout.cell_dims(),
            steps,
            batch,
        };
        let flat = filled(layout.len(), 1);
        let flat16: Vec<f16> = flat.iter().map(|&x| f16::from_f32(x)).collect();
        let mut grads = vec![0.0f32; layout.len()];
        let bh = batch * hidden;
        let state = if kind.has_cell_state() { bh } else { 0 };
        let tokens: Vec<u32> = (0..steps * batch).map(|i| (i * 7 % vocab) as u32).collect();
        let dense = filled(steps * batch * vocab, 2);
        let h0 = filled(bh, 3);
        let c0 = filled(state, 4);
        let dhs = filled(steps * bh, 5);
        let mut hs = vec![f32::NAN; steps * bh];
        let mut c_last = vec![f32::NAN; state];
        let mut cache = vec![f32::NAN; cache_len(&dims)];
        let mut workspace = vec![f32::NAN; workspace_len(&dims)];
        let mut dinput = vec![0.0f32; dense.len()];
        let mut dh0 = vec![0.0f32; bh];
        let mut dc0 = vec![0.0f32; state];
        let mut h = vec![f32::NAN; bh];
        let mut c = vec![f32::NAN; state];
        let mut step_ws = vec![f32::NAN; step_workspace_len(&dims.cell, batch)];

        let count = allocations_in(|| {
            let (params, _, _) = layout.split(&flat).unwrap();
            let (params16, _, _) = layout.split(&flat16).unwrap();
            for input in [Input::Tokens(&tokens), Input::Dense(&dense)] {
                sequence_forward(
                    &mut hs,
                    &mut c_last,
                    input,
                    &h0,
                    &c0,
                    params,
                    &mut cache,
                    &mut workspace,
                    &dims,
                    &Portable,
                )
                .unwrap();
                let (mut cell_grads, _, _) = layout.split_mut(&mut grads).unwrap();
                let dx = match input {
                    Input::Dense(_) => Some(&mut dinput[..]),
                    Input::Tokens(_) => None,
                };
                sequence_backward(
                    &mut cell_grads,
                    dx,
                    &mut dh0,
                    &mut dc0,
                    &dhs,
                    input,
                    &h0,
                    &c0,
                    params,
                    &hs,
                    &cache,
                    &mut workspace,
                    &dims,
                    &Portable,
                )
                .unwrap();
            }
            let step_in = Input::Tokens(&tokens[..batch]);
            step_forward(
                &mut h,
                &mut c,
                step_in,
                &h0,
                &c0,
                params,
                &mut step_ws,
                &dims.cell,
                batch,
            )
            .unwrap();
            step_forward(
                &mut h,
                &mut c,
                step_in,
                &h0,
                &c0,
                params16,
                &mut step_ws,
                &dims.cell,
                batch,
            )
            .unwrap();
        });
        assert_eq!(count, 0, "{}: {count} heap allocations", kind.name());
        assert!(
            hs.iter().chain(&h).all(|x| x.is_finite()),
            "{}",
            kind.name()
        );
    }
}

#[test]
fn output_loss_clip_optimizers_and_sampling_allocate_nothing() {
    let d = DenseDims {
        rows: 35 * 4,
        hidden: 64,
        vocab: 1027,
    };
    let h = filled(d.hidden_len(), 1);
    let w = filled(d.weight_len(), 2);
    let b = filled(d.vocab, 3);
    let targets: Vec<u32> = (0..d.rows).map(|i| (i * 13 % d.vocab) as u32).collect();
    let mut logits = vec![f32::NAN; d.logits_len()];
    let mut probs = vec![f32::NAN; d.logits_len()];
    let mut dlogits = vec![f32::NAN; d.logits_len()];
    let mut dw = vec![0.0f32; d.weight_len()];
    let mut db = vec![0.0f32; d.vocab];
    let mut dh = vec![0.0f32; d.hidden_len()];
    let mut params = filled(50_000, 4);
    let mut grads = filled(50_000, 5);
    let (mut m, mut v) = (vec![0.0f32; 50_000], vec![0.0f32; 50_000]);
    let mut scratch = vec![f32::NAN; sample_scratch_len(d.vocab)];
    let mut rng = Lcg(7);
    // A product larger than every packing block, all four transpositions.
    let (gm, gn, gk) = (150, 130, 600);
    let ga = filled(gm * gk, 6);
    let gb = filled(gk * gn, 7);
    let mut gc = vec![f32::NAN; gm * gn];

    let count = allocations_in(|| {
        dense_forward(&mut logits, &h, &w, &b, &d, &Portable).unwrap();
        let loss = softmax_xent_forward(&mut probs, &logits, &targets, &d).unwrap();
        assert!(loss.is_finite());
        softmax_xent_backward(&mut dlogits, &probs, &targets, &d).unwrap();
        dense_backward(&mut dw, &mut db, &mut dh, &dlogits, &h, &w, &d, &Portable).unwrap();
        softmax_xent_forward_in_place(&mut logits, &targets, &d).unwrap();
        softmax_xent_backward_in_place(&mut logits, &targets, &d).unwrap();
        clip_global_norm(&mut grads, 1.0).unwrap();
        sgd_step(&mut params, &grads, 0.1).unwrap();
        adam_step(
            &mut params,
            &mut m,
            &mut v,
            &grads,
            1,
            &AdamConfig::default(),
        )
        .unwrap();
        argmax(&probs[..d.vocab]).unwrap();
        for t in [0.0, 0.7, 1.0] {
            sample(&probs[..d.vocab], t, 0, &mut rng, &mut scratch).unwrap();
            sample(&probs[..d.vocab], t, 5, &mut rng, &mut scratch).unwrap();
        }
        for (ta, tb) in [
            (Trans::N, Trans::N),
            (Trans::N, Trans::T),
            (Trans::T, Trans::N),
            (Trans::T, Trans::T),
        ] {
            Portable
                .gemm(ta, tb, gm, gn, gk, 1.0, &ga, &gb, 0.0, &mut gc)
                .unwrap();
        }
    });
    assert_eq!(count, 0, "{count} heap allocations");
    assert!(dh.iter().all(|x| x.is_finite()) && gc.iter().all(|x| x.is_finite()));
}
