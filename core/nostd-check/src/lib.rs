//! A `#![no_std]`, allocation-free static library over recur-core: one C
//! entry point per use an embedded target would make (a training step of
//! the whole language model and a streaming inference step with f16
//! weights), so every routine is compiled and linked here.

#![no_std]

use core::panic::PanicInfo;

use half::f16;
use recur_core::cell::{
    cache_len, sequence_backward, sequence_forward, step_forward, step_workspace_len, workspace_len,
};
use recur_core::clip::clip_global_norm;
use recur_core::optim::{adam_step, sgd_step, AdamConfig};
use recur_core::output::{
    dense_backward, dense_forward, softmax_xent_backward_in_place, softmax_xent_forward_in_place,
    DenseDims,
};
use recur_core::sample::{argmax, sample, sample_scratch_len};
use recur_core::{CellKind, Error, Input, ModelLayout, Portable, SeqDims};

#[panic_handler]
fn on_panic(_: &PanicInfo) -> ! {
    loop {}
}

/// A tiny model with static buffers: vocabulary 16, hidden 8, 4 steps of 2.
const VOCAB: usize = 16;
const HIDDEN: usize = 8;
const STEPS: usize = 4;
const BATCH: usize = 2;
const LAYOUT: ModelLayout = ModelLayout {
    cell: CellKind::Lstm,
    vocab: VOCAB,
    hidden: HIDDEN,
};
const PARAMS: usize = LAYOUT.len();
const ROWS: usize = STEPS * BATCH;
const BH: usize = BATCH * HIDDEN;
/// Generous fixed bounds for the cache and workspaces (checked at run time).
const SCRATCH: usize = 4096;

/// The state a training loop keeps, in one static-friendly struct.
#[repr(C)]
pub struct Model {
    params: [f32; PARAMS],
    grads: [f32; PARAMS],
    adam_m: [f32; PARAMS],
    adam_v: [f32; PARAMS],
    hs: [f32; ROWS * HIDDEN],
    dhs: [f32; ROWS * HIDDEN],
    logits: [f32; ROWS * VOCAB],
    cache: [f32; SCRATCH],
    workspace: [f32; SCRATCH],
    step: u64,
}

/// The first `len` elements of a fixed buffer, or an error when it is short.
fn prefix<'a>(what: &'static str, buf: &'a mut [f32], len: usize) -> Result<&'a mut [f32], Error> {
    let actual = buf.len();
    buf.get_mut(..len).ok_or(Error::Length {
        what,
        expected: len,
        actual,
    })
}

fn train_step(model: &mut Model, tokens: &[u32], targets: &[u32]) -> Result<f32, Error> {
    let dims = SeqDims {
        cell: LAYOUT.cell_dims(),
        steps: STEPS,
        batch: BATCH,
    };
    let dense = DenseDims {
        rows: ROWS,
        hidden: HIDDEN,
        vocab: VOCAB,
    };
    let cache = prefix("cache", &mut model.cache, cache_len(&dims))?;
    let workspace = prefix("workspace", &mut model.workspace, workspace_len(&dims))?;
    let h0 = [0.0f32; BH];
    let c0 = [0.0f32; BH];
    let mut c_last = [0.0f32; BH];
    let (cell, dense_w, dense_b) = LAYOUT.split(&model.params)?;
    let input = Input::Tokens(tokens);
    sequence_forward(
        &mut model.hs,
        &mut c_last,
        input,
        &h0,
        &c0,
        cell,
        cache,
        workspace,
        &dims,
        &Portable,
    )?;
    dense_forward(
        &mut model.logits,
        &model.hs,
        dense_w,
        dense_b,
        &dense,
        &Portable,
    )?;
    let loss = softmax_xent_forward_in_place(&mut model.logits, targets, &dense)?;
    softmax_xent_backward_in_place(&mut model.logits, targets, &dense)?;
    model.grads.fill(0.0);
    model.dhs.fill(0.0);
    let (mut cell_grads, dw, db) = LAYOUT.split_mut(&mut model.grads)?;
    dense_backward(
        dw,
        db,
        &mut model.dhs,
        &model.logits,
        &model.hs,
        dense_w,
        &dense,
        &Portable,
    )?;
    let (mut dh0, mut dc0) = ([0.0f32; BH], [0.0f32; BH]);
    sequence_backward(
        &mut cell_grads,
        None,
        &mut dh0,
        &mut dc0,
        &model.dhs,
        input,
        &h0,
        &c0,
        cell,
        &model.hs,
        cache,
        workspace,
        &dims,
        &Portable,
    )?;
    clip_global_norm(&mut model.grads, 1.0)?;
    model.step += 1;
    if model.step.is_multiple_of(2) {
        sgd_step(&mut model.params, &model.grads, 0.5)?;
    } else {
        let cfg = AdamConfig::default();
        adam_step(
            &mut model.params,
            &mut model.adam_m,
            &mut model.adam_v,
            &model.grads,
            model.step,
            &cfg,
        )?;
    }
    Ok(loss)
}

/// One training step on `ROWS` tokens and targets; returns the loss, or a
/// negative value on error.
///
/// # Safety
/// `model` must point to a valid `Model`; `tokens` and `targets` to `ROWS`
/// ids each.
#[no_mangle]
pub unsafe extern "C" fn recur_nostd_train_step(
    model: *mut Model,
    tokens: *const u32,
    targets: *const u32,
) -> f32 {
    // SAFETY: the caller's contract.
    let (model, tokens, targets) = unsafe {
        (
            &mut *model,
            core::slice::from_raw_parts(tokens, ROWS),
            core::slice::from_raw_parts(targets, ROWS),
        )
    };
    train_step(model, tokens, targets).unwrap_or(-1.0)
}

/// A counter-based generator: enough to draw tokens.
struct Counter(u64);

impl rand_core::RngCore for Counter {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for b in dst {
            *b = self.next_u32() as u8;
        }
    }
}

/// A GRU inference step with f16 weights for one token, then greedy and
/// sampled next tokens; returns the sampled token or -1 on error.
///
/// # Safety
/// `weights` must point to `LAYOUT.len()` f16 values (as `u16` bits) and `h`
/// to `HIDDEN` floats (updated in place).
#[no_mangle]
pub unsafe extern "C" fn recur_nostd_infer_step(
    weights: *const u16,
    h: *mut f32,
    token: u32,
    seed: u64,
) -> i32 {
    // SAFETY: the caller's contract; f16 is a transparent u16.
    let (weights, h) = unsafe {
        (
            core::slice::from_raw_parts(weights as *const f16, PARAMS),
            &mut *(h as *mut [f32; HIDDEN]),
        )
    };
    infer(weights, h, token, seed)
        .map(|t| t as i32)
        .unwrap_or(-1)
}

fn infer(weights: &[f16], h: &mut [f32; HIDDEN], token: u32, seed: u64) -> Result<usize, Error> {
    let layout = ModelLayout {
        cell: CellKind::GruResetAfter,
        ..LAYOUT
    };
    let cell_dims = layout.cell_dims();
    let mut ws = [0.0f32; SCRATCH];
    let ws = prefix("workspace", &mut ws, step_workspace_len(&cell_dims, 1))?;
    let (cell, dense_w, dense_b) = layout.split(&weights[..layout.len()])?;
    let h_prev = *h;
    step_forward(
        h,
        &mut [],
        Input::Tokens(&[token]),
        &h_prev,
        &[],
        cell,
        ws,
        &cell_dims,
        1,
    )?;
    // The output layer in f32 from the f16 weights.
    let mut w32 = [0.0f32; VOCAB * HIDDEN];
    let mut b32 = [0.0f32; VOCAB];
    for (d, s) in w32.iter_mut().zip(dense_w) {
        *d = s.to_f32();
    }
    for (d, s) in b32.iter_mut().zip(dense_b) {
        *d = s.to_f32();
    }
    let dims = DenseDims {
        rows: 1,
        hidden: HIDDEN,
        vocab: VOCAB,
    };
    let mut logits = [0.0f32; VOCAB];
    dense_forward(&mut logits, &h[..], &w32, &b32, &dims, &Portable)?;
    let greedy = argmax(&logits)?;
    let mut scratch = [0.0f32; sample_scratch_len(VOCAB)];
    let drawn = sample(&logits, 0.8, 4, &mut Counter(seed), &mut scratch)?;
    Ok(if seed == 0 { greedy } else { drawn })
}
