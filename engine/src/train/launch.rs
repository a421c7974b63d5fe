//! How a [`DeviceTrainer`] queues its kernels: arguments, the products
//! (tile grid and split-K), column sums, copies and fills, each counted
//! (the benchmarks print the operations per step), on the main stream or,
//! inside [`DeviceTrainer::beside`], on the side stream.

use std::ffi::c_void;

use cust::sys;

use super::{DeviceTrainer, ProductOperands};
use crate::error::{check, Error};
use crate::gpu::Lane;

/// A kernel argument (each passed by address from its own 8-byte slot).
#[derive(Clone, Copy)]
pub(super) enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl Arg {
    fn bits(self) -> u64 {
        match self {
            Arg::Ptr(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::I64(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
        }
    }
}

/// The most arguments a training kernel takes.
const MAX_ARGS: usize = 20;

/// Tile of `tr_gemm` (rows and columns of C) and its k slice.
const TILE_M: usize = 128;
const TILE_N: usize = 64;
const K_SLICE: usize = 16;
/// Split-K: at most this many splits (what `tr_gemm` keeps in flight at
/// once: ptx/src/train_gemm.cuh, TG_MAX_SPLITS), each at least this many k
/// slices.
pub(super) const MAX_SPLITS: usize = 8;
const MIN_SLICES_PER_SPLIT: usize = 8;
/// Rows per block of the first column-sum pass.
pub(super) const COLSUM_CHUNK: usize = 64;

/// Dynamic shared memory of the ring products (`tr_gemm_ring*`): two
/// rings of 4 slices (A: 8 words per thread and slice, B: 4; 256 threads)
/// and two staged slices of hi and lo parts (16 × (128 + 8) words of A,
/// 16 × (64 + 8) of B); ptx/src/train_gemm_ring.cuh, TG_RING_SMEM_BYTES.
pub(super) const RING_SMEM_BYTES: usize =
    4 * (4 * (8 + 4) * 256 + 2 * 2 * (K_SLICE * (TILE_M + 8) + K_SLICE * (TILE_N + 8)));

/// One `tr_gemm`: C(m, n) [+]= Σ_k A(m, k)·B(k, n) [+ bias(n)], A(m, k) at
/// element `m·sam + k·sak` of `a`, B(k, n) at `k·sbk + n·sbn` of `b` (each
/// of the kernel's storage type), C's rows `ldc` floats apart.
pub(super) struct Gemm {
    /// The operands' storage: which of the product kernels runs it.
    pub operands: ProductOperands,
    pub c: u64,
    pub a: u64,
    pub b: u64,
    pub bias: u64,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub sam: usize,
    pub sak: usize,
    pub sbk: usize,
    pub sbn: usize,
    pub ldc: usize,
    pub accumulate: bool,
}

/// The address `elements` f32 past `base`.
pub(super) fn f32_at(base: u64, elements: usize) -> u64 {
    base + (elements * 4) as u64
}

/// A grid-stride launch over `n` elements.
pub(super) fn elementwise(n: usize) -> (u32, u32) {
    (n.div_ceil(256).clamp(1, 4096) as u32, 1)
}

/// The k chunk of a per-step kernel (ptx/src/train_step.cuh, ts_product)
/// with `rows` weight rows over a product of length `k`, and the dynamic
/// shared memory it stages in: (32 + rows) rows of chunk + 4 floats, within
/// `max_smem` bytes less the kernels' static 12 KiB at most.
pub(super) fn step_chunk(k: usize, rows: usize, max_smem: usize) -> (usize, usize) {
    let per_row = 4 * (32 + rows);
    let fit = (max_smem.saturating_sub(12 * 1024) / per_row).saturating_sub(4) & !3;
    let kc = k.next_multiple_of(4).min(fit.max(4));
    (kc, per_row * (kc + 4))
}

/// Splits of the k range for a product of `tiles` tiles over `k`: as many
/// as two blocks per SM (what `tr_gemm`'s 128 registers let reside) hold,
/// so that all run in one wave (a second, partial wave would double the
/// time), never more than `work` floats of partials (m·n each) allow.
/// Split tiles count their splits in one word each: at most `arrival_words`
/// tiles may split (the trainer keeps one per SM).
pub(super) fn splits_for(
    tiles: usize,
    k: usize,
    sms: usize,
    mn: usize,
    work: usize,
    arrival_words: usize,
) -> usize {
    if tiles >= sms || tiles > arrival_words {
        return 1;
    }
    let by_sms = 2 * sms / tiles;
    let by_k = k.div_ceil(K_SLICE) / MIN_SLICES_PER_SPLIT;
    let by_work = work / mn.max(1);
    by_sms.min(by_k).min(by_work).clamp(1, MAX_SPLITS)
}

impl DeviceTrainer {
    /// Queues kernel `name` of ptx/src/train.cu (the context is current).
    pub(super) fn launch(
        &self,
        name: &'static str,
        grid: (u32, u32),
        args: &[Arg],
    ) -> Result<(), Error> {
        self.launch_smem(name, grid, 0, args)
    }

    /// [`Self::launch`] with `smem` bytes of dynamic shared memory.
    pub(super) fn launch_smem(
        &self,
        name: &'static str,
        grid: (u32, u32),
        smem: usize,
        args: &[Arg],
    ) -> Result<(), Error> {
        self.launch_with(name, grid, smem, false, args)
    }

    /// A cooperative launch (every block resident at once: grid barriers).
    pub(super) fn launch_coop(
        &self,
        name: &'static str,
        grid: (u32, u32),
        smem: usize,
        args: &[Arg],
    ) -> Result<(), Error> {
        self.launch_with(name, grid, smem, true, args)
    }

    fn launch_with(
        &self,
        name: &'static str,
        grid: (u32, u32),
        smem: usize,
        cooperative: bool,
        args: &[Arg],
    ) -> Result<(), Error> {
        let mut slots = [0u64; MAX_ARGS];
        let mut ptrs = [std::ptr::null_mut::<c_void>(); MAX_ARGS];
        let n = args.len().min(MAX_ARGS);
        for (i, a) in args.iter().take(n).enumerate() {
            slots[i] = a.bits();
        }
        for (p, s) in ptrs.iter_mut().zip(slots.iter_mut()) {
            *p = s as *mut u64 as *mut c_void;
        }
        let l = self.layout;
        // A cell trainer's `vocab` is its input size.
        let v = if self.dense_input { "I" } else { "V" };
        let shape = || {
            format!(
                "T={} B={} H={} {v}={} {:?}",
                self.steps, self.batch, l.hidden, l.vocab, l.cell
            )
        };
        self.ops.set(self.ops.get() + 1);
        // SAFETY: every call site passes the kernel's parameters of
        // ptx/src/train.cu in order (pointers and 64-bit integers as 8-byte
        // slots, ints and floats in the low 4 bytes of theirs, little-endian),
        // and every address is inside a buffer of this trainer sized for its
        // (T, B, H, V) as allocated in `new`.
        unsafe {
            self.gpu.launch_on(
                self.lane.get(),
                name,
                grid,
                smem,
                cooperative,
                &mut ptrs[..n],
                shape,
            )
        }
    }

    /// Queues the work `queue` queues on the side stream, after everything
    /// queued on the main stream so far, so that it overlaps the main
    /// stream's next work; [`Self::join_side`] orders the main stream after
    /// it again. The side stream has its own workspace (`work_side`): the
    /// products and column sums queued there may run beside the main
    /// stream's. On an error the side stream is joined at once.
    pub(super) fn beside(&self, queue: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
        self.gpu.fork(&self.fork_event)?;
        self.on_side(queue)
    }

    /// [`Self::beside`] without the fork: `queue`'s work starts after the
    /// side stream's work queued so far (and whatever that waits for).
    pub(super) fn on_side(&self, queue: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
        self.lane.set(Lane::Side);
        let r = queue();
        self.lane.set(Lane::Main);
        if r.is_err() {
            let _ = self.join_side();
        }
        r
    }

    /// The main stream's work queued from now on starts after all the side
    /// stream's work queued so far.
    pub(super) fn join_side(&self) -> Result<(), Error> {
        self.gpu.join(&self.join_event)
    }

    /// The current lane's workspace and its arrival words (split products,
    /// column sums, the norm: zero between launches, the last block to
    /// arrive resets its word), so that the two streams' launches never
    /// share either.
    pub(super) fn scratch(&self) -> (u64, u64, usize) {
        match self.lane.get() {
            Lane::Main => (
                super::addr(&self.work),
                super::addr(&self.arrivals),
                self.arrivals.len(),
            ),
            Lane::Side => (
                super::addr(&self.work_side),
                super::addr(&self.arrivals_side),
                self.arrivals_side.len(),
            ),
        }
    }

    /// Queues a product; split-K (its partials added in split order by
    /// each tile's last split) when its tiles alone would leave SMs idle.
    pub(super) fn gemm(&self, g: Gemm) -> Result<(), Error> {
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let m_tiles = g.m.div_ceil(TILE_M);
        let n_tiles = g.n.div_ceil(TILE_N);
        let (work, arrivals, arrival_words) = self.scratch();
        let splits = splits_for(
            m_tiles * n_tiles,
            g.k,
            self.gpu.limits().sm_count.max(1),
            g.m * g.n,
            self.work.len(),
            arrival_words,
        );
        let ring = self.ring_products;
        self.launch_smem(
            g.operands.kernel(ring),
            (n_tiles as u32, (m_tiles * splits) as u32),
            if ring { RING_SMEM_BYTES } else { 0 },
            &[
                Arg::Ptr(g.c),
                Arg::Ptr(g.a),
                Arg::Ptr(g.b),
                Arg::Ptr(g.bias),
                Arg::I32(g.m as i32),
                Arg::I32(g.n as i32),
                Arg::I32(g.k as i32),
                Arg::I64(g.sam as i64),
                Arg::I64(g.sak as i64),
                Arg::I64(g.sbk as i64),
                Arg::I64(g.sbn as i64),
                Arg::I32(g.ldc as i32),
                Arg::I32(g.accumulate as i32),
                Arg::I32(splits as i32),
                Arg::Ptr(work),
                Arg::Ptr(arrivals),
            ],
        )
    }

    /// out (cols) [+]= column sums of `input` (rows, cols; row stride ld),
    /// in one launch, deterministic (partials through the workspace, added
    /// in a fixed order by each column strip's last block).
    pub(super) fn colsum(
        &self,
        out: u64,
        input: u64,
        rows: usize,
        cols: usize,
        ld: usize,
        accumulate: bool,
    ) -> Result<(), Error> {
        let chunks = rows.div_ceil(COLSUM_CHUNK).max(1);
        let strips = cols.div_ceil(32);
        let (work, arrivals, arrival_words) = self.scratch();
        if strips > arrival_words {
            return Err(Error::Mismatch {
                what: "column-sum arrival words",
                expected: format!("at least {strips}"),
                actual: arrival_words.to_string(),
            });
        }
        self.launch(
            "tr_colsum",
            (strips as u32, chunks as u32),
            &[
                Arg::Ptr(out),
                Arg::Ptr(work),
                Arg::Ptr(arrivals),
                Arg::Ptr(input),
                Arg::I32(rows as i32),
                Arg::I32(cols as i32),
                Arg::I32(ld as i32),
                Arg::I32(COLSUM_CHUNK as i32),
                Arg::I32(accumulate as i32),
            ],
        )
    }

    /// Queues a device-to-device copy of `n` f32 (non-overlapping ranges
    /// inside this trainer's buffers).
    pub(super) fn copy(&self, dst: u64, src: u64, n: usize) -> Result<(), Error> {
        self.copy_bytes(dst, src, n * 4)
    }

    /// Queues copying `bytes` bytes from `src` to `dst` on the device.
    pub(super) fn copy_bytes(&self, dst: u64, src: u64, bytes: usize) -> Result<(), Error> {
        self.ops.set(self.ops.get() + 1);
        // SAFETY: both ranges lie inside buffers of this trainer (callers
        // pass (B, H) slots of buffers sized for them); they do not overlap.
        let r =
            unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, bytes, self.gpu.stream(self.lane.get())) };
        check(r, "copying on the device", None, || {
            format!("{bytes} bytes")
        })
    }

    /// Queues zeroing `words` 32-bit words at `dst` (a range inside one of
    /// this trainer's buffers).
    pub(super) fn zero(&self, dst: u64, words: usize) -> Result<(), Error> {
        self.ops.set(self.ops.get() + 1);
        // SAFETY: callers pass a range inside one of this trainer's buffers.
        let r = unsafe { sys::cuMemsetD32Async(dst, 0, words, self.gpu.stream(self.lane.get())) };
        check(r, "zeroing device memory", None, || {
            format!("{words} words")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_chunks_fit_shared_memory() {
        // d2l's GRU backward on an H100: one chunk of 768, 111 KB.
        assert_eq!(step_chunk(768, 4, 232_448), (768, 36 * 4 * 772));
        // Forward: H = 255 rounds up to 256.
        assert_eq!(step_chunk(255, 8, 232_448).0, 256);
        // Too long for one chunk: the largest that fits.
        let (kc, smem) = step_chunk(16_384, 4, 232_448);
        assert!(
            kc < 16_384 && kc % 4 == 0 && smem + 12 * 1024 <= 232_448,
            "{kc} {smem}"
        );
        // A tiny limit still gives a valid chunk.
        assert_eq!(step_chunk(100, 4, 0).0, 4);
    }

    #[test]
    fn splits_fill_the_sms_within_limits() {
        // Enough tiles: no split.
        assert_eq!(splits_for(306, 256, 132, 1120 * 1027, 1 << 30, 132), 1);
        // 48 tiles over k = 1120 (70 slices): 5 splits (240 blocks ≤ 264).
        assert_eq!(splits_for(48, 1120, 132, 768 * 256, 1 << 30, 132), 5);
        // d2l's dhs and dW_d: 36 tiles, 7 splits, 252 blocks in one wave.
        assert_eq!(splits_for(36, 1120, 132, 1120 * 256, 1 << 30, 132), 7);
        // Short k: never below 8 slices per split.
        assert_eq!(splits_for(4, 64, 132, 100, 1 << 30, 132), 1);
        // The workspace bounds the splits.
        assert_eq!(splits_for(1, 100_000, 132, 1000, 3000, 132), 3);
        assert!(splits_for(1, 1 << 30, 132, 1, 1 << 30, 132) <= MAX_SPLITS);
        // More tiles than arrival words: no split.
        assert_eq!(splits_for(36, 1120, 132, 1120 * 256, 1 << 30, 35), 1);
        assert_eq!(splits_for(36, 1120, 132, 1120 * 256, 1 << 30, 36), 7);
    }
}
