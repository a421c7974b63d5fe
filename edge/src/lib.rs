//! # recur-edge
//!
//! Text generation on a microcontroller-class target with recur-core:
//! `#![no_std]`, no allocator, its own panic handler, the weights embedded
//! with `include_bytes!` (flash) and every buffer static (RAM). The C ABI
//! ([`recur_edge_generate`]) is what a firmware's `main` calls; on the host,
//! CI links the library into a freestanding `_start` shim (host/start.c, no
//! C library) and runs it.
//!
//! Building for a Cortex-M4F and measuring the footprint: docs/edge.md.

#![no_std]
#![deny(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!("the embedded weights are little-endian");

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use recur_core::stream::{Stream, StreamModel};

/// The model's constants, written by build.rs: `LAYOUT`, `VOCABULARY`,
/// `STATE_LEN`, `WORKSPACE_LEN`, `PARAMS_LEN`, `WEIGHT_BYTES`, `SOURCE`.
#[allow(clippy::all)]
mod model {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

/// The storage type of the embedded weights.
#[cfg(feature = "f16")]
type W = half::f16;
#[cfg(not(feature = "f16"))]
type W = f32;

/// The weights blob, aligned for `W` (include_bytes! alone gives byte
/// alignment).
#[repr(C, align(4))]
struct Aligned<B: ?Sized>(B);

static WEIGHTS: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/weights.bin")));

/// The stream's buffers: the recurrent state and the workspace (next state,
/// cell scratch, logits, sampler scratch). Zero-initialised, so they sit in
/// `.bss` and cost RAM, not flash.
struct Buffers {
    state: [f32; model::STATE_LEN],
    workspace: [f32; model::WORKSPACE_LEN],
}

/// The one set of buffers, lent to one caller at a time ([`BUSY`]).
struct StaticBuffers(UnsafeCell<Buffers>);

// SAFETY: the buffers are only reached through `with_buffers`, which hands
// out one `&mut` at a time, guarded by `BUSY`.
unsafe impl Sync for StaticBuffers {}

static BUFFERS: StaticBuffers = StaticBuffers(UnsafeCell::new(Buffers {
    state: [0.0; model::STATE_LEN],
    workspace: [0.0; model::WORKSPACE_LEN],
}));

/// Set while a generation holds [`BUFFERS`] (a second caller, e.g. an
/// interrupt handler, gets [`EdgeError::Busy`] instead of aliasing them).
static BUSY: AtomicBool = AtomicBool::new(false);

fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> Result<R, EdgeError> {
    if BUSY.swap(true, Ordering::Acquire) {
        return Err(EdgeError::Busy);
    }
    // SAFETY: `BUSY` was clear and is now ours, so no other reference to
    // the buffers exists until it is released below.
    let r = f(unsafe { &mut *BUFFERS.0.get() });
    BUSY.store(false, Ordering::Release);
    Ok(r)
}

/// The embedded weights as `W`, or `None` if the blob does not fit the
/// layout (a build problem, reported rather than trusted).
fn weights() -> Option<&'static [W]> {
    // SAFETY: every bit pattern is a valid f32 / f16, and `align_to` only
    // hands out correctly aligned elements.
    let (head, body, tail) = unsafe { WEIGHTS.0.align_to::<W>() };
    (head.is_empty() && tail.is_empty() && body.len() == model::PARAMS_LEN).then_some(body)
}

/// Why a generation failed; the C ABI returns its negated code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum EdgeError {
    /// The buffers are in use by another call.
    Busy = 1,
    /// The prefix is empty.
    EmptyPrefix = 2,
    /// The prefix is not UTF-8.
    NotUtf8 = 3,
    /// A prefix character is not in the model's vocabulary.
    UnknownChar = 4,
    /// The output buffer is too small for the text.
    OutputFull = 5,
    /// A null pointer or a bad temperature was passed.
    BadArgument = 6,
    /// recur-core refused (embedded weights of the wrong size, NaN logits).
    Model = 7,
}

/// The token id of `c`, if the vocabulary has it.
fn token_of(c: char) -> Option<u32> {
    model::VOCABULARY
        .iter()
        .position(|&v| v == c)
        .map(|i| i as u32)
}

/// Appends `c` as UTF-8 at `out[*at..]`.
fn push_char(out: &mut [u8], at: &mut usize, c: char) -> Result<(), EdgeError> {
    let mut buf = [0u8; 4];
    let s = c.encode_utf8(&mut buf).as_bytes();
    let end = *at + s.len();
    out.get_mut(*at..end)
        .ok_or(EdgeError::OutputFull)?
        .copy_from_slice(s);
    *at = end;
    Ok(())
}

/// Feeds `prefix`, then generates `count` characters (d2l's `predict`):
/// greedy when `temperature` is 0, else drawn from `softmax(logits / T)`
/// over the `top_k` most likely (0: all) with SplitMix64 seeded by `seed`.
/// Writes the prefix and the continuation as UTF-8 into `out`; returns the
/// number of bytes written.
pub fn generate(
    out: &mut [u8],
    prefix: &str,
    count: usize,
    temperature: f32,
    top_k: usize,
    seed: u64,
) -> Result<usize, EdgeError> {
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(EdgeError::BadArgument);
    }
    let mut chars = prefix.chars();
    let first = chars.next().ok_or(EdgeError::EmptyPrefix)?;
    let mut token = token_of(first).ok_or(EdgeError::UnknownChar)?;
    let params = weights().ok_or(EdgeError::Model)?;
    let model = StreamModel::new(model::LAYOUT, params).map_err(|_| EdgeError::Model)?;
    let mut at = 0usize;
    push_char(out, &mut at, first)?;
    with_buffers(|b| {
        let mut stream =
            Stream::new(model, &mut b.state, &mut b.workspace).map_err(|_| EdgeError::Model)?;
        for c in chars {
            let next = token_of(c).ok_or(EdgeError::UnknownChar)?;
            stream.feed(token).map_err(|_| EdgeError::Model)?;
            push_char(out, &mut at, c)?;
            token = next;
        }
        let mut rng = recur_core::rng::SplitMix64(seed);
        for _ in 0..count {
            token = stream
                .feed_sample(token, temperature, top_k, &mut rng)
                .map_err(|_| EdgeError::Model)?;
            push_char(out, &mut at, model::VOCABULARY[token as usize])?;
        }
        Ok(at)
    })?
}

/// C ABI of [`generate`]: `prefix` is `prefix_len` UTF-8 bytes, `out` has
/// room for `out_cap` bytes. Returns the bytes written, or the negated
/// [`EdgeError`] code.
///
/// # Safety
/// `prefix` must point to `prefix_len` readable bytes and `out` to
/// `out_cap` writable bytes that no one else touches during the call
/// (either may be null only with a zero length).
#[no_mangle]
pub unsafe extern "C" fn recur_edge_generate(
    out: *mut u8,
    out_cap: usize,
    prefix: *const u8,
    prefix_len: usize,
    count: usize,
    temperature: f32,
    top_k: usize,
    seed: u64,
) -> isize {
    if (out.is_null() && out_cap != 0) || (prefix.is_null() && prefix_len != 0) {
        return -(EdgeError::BadArgument as isize);
    }
    let out: &mut [u8] = if out_cap == 0 {
        &mut []
    } else {
        // SAFETY: the caller's contract above.
        unsafe { core::slice::from_raw_parts_mut(out, out_cap) }
    };
    let prefix: &[u8] = if prefix_len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract above.
        unsafe { core::slice::from_raw_parts(prefix, prefix_len) }
    };
    let Ok(prefix) = core::str::from_utf8(prefix) else {
        return -(EdgeError::NotUtf8 as isize);
    };
    match generate(out, prefix, count, temperature, top_k, seed) {
        Ok(n) => n as isize,
        Err(e) => -(e as isize),
    }
}

/// Bytes of the static buffers (the example's RAM besides the stack).
#[no_mangle]
pub extern "C" fn recur_edge_ram_bytes() -> usize {
    core::mem::size_of::<Buffers>()
}

/// Bytes of the embedded weights (the bulk of the flash).
#[no_mangle]
pub extern "C" fn recur_edge_weight_bytes() -> usize {
    model::WEIGHT_BYTES
}

/// The model the weights came from (`RECUR_EDGE_MODEL`, or the default),
/// as `len` bytes of UTF-8 at the returned address.
#[no_mangle]
pub extern "C" fn recur_edge_model_source(len: &mut usize) -> *const u8 {
    *len = model::SOURCE.len();
    model::SOURCE.as_ptr()
}

/// Every panic (none is expected: recur-core reports errors as values)
/// stops here. Without unwinding (`panic = "abort"`) there is nothing to
/// clean up: on the host an invalid instruction kills the process (SIGILL,
/// so a test sees it); on a microcontroller it spins until the watchdog or
/// a debugger steps in.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `ud2` raises #UD and never returns.
    unsafe {
        core::arch::asm!("ud2", options(noreturn));
    }
    #[cfg(not(target_arch = "x86_64"))]
    loop {
        core::hint::spin_loop();
    }
}
