//! The row-block matrix-vector kernel, written once for every vector
//! width: [`row_block_kernel!`] generates it from a handful of vector
//! operations (AVX2 and AVX-512F in `x86.rs`, a plain-array emulation for
//! the tests), so the index arithmetic the processors run is the code the
//! tests check on any machine.
//!
//! Shape of the work: [`ROWS`] rows at a time, one vector accumulator per
//! row (independent FMA chains, and each load of `x` serves all of them);
//! after the row the accumulators are reduced together (a transposing add
//! tree, cheaper than one horizontal sum per row); a tail of `K mod lanes`
//! columns is added in scalar code. While a block runs, the next block's
//! weights are prefetched into L1, a slice per chunk of columns.
//!
//! f32 and f16 weights of the same values give the same bits on one
//! kernel: the conversion is exact and the order of the sums does not
//! depend on the storage type.

/// Rows per block: eight accumulators cover the FMA latency (4 cycles, 2 a
/// cycle) and share each load of `x`.
pub(super) const ROWS: usize = 8;

/// Bytes of a cache line, the prefetch granule.
pub(super) const LINE: usize = 64;

/// Side lines prefetched per block of rows: a burst small enough for the
/// miss buffers next to the block's own stream.
pub(crate) const SIDE_PER_BLOCK: usize = 12;

/// Lines of another array to prefetch while a product runs,
/// [`SIDE_PER_BLOCK`] per block of rows until all are issued: the cells' step hides the latency of
/// its scattered `weight_ih` column behind the recurrent product this way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Side {
    /// The first line's address (only ever prefetched, never read).
    pub(crate) ptr: *const u8,
    /// Bytes from one line to the next.
    pub(crate) stride: usize,
    /// Lines to prefetch.
    pub(crate) count: usize,
}

impl Side {
    /// Nothing to prefetch.
    pub(crate) const fn none() -> Side {
        Side {
            ptr: core::ptr::null(),
            stride: 0,
            count: 0,
        }
    }
}

/// Generates `unsafe fn $name(out: &mut [f32], w: &[$ty], x: &[f32], side: &mut Side)`:
/// `out[r] = Σ_k w[r·K + k] · x[k]` with `K = x.len()`, for the rows that
/// both `out` and `w` hold (`min(out.len(), w.len() / K)`; others are left
/// alone), all of `out` zeroed when `K` is 0.
///
/// The operations, each an `unsafe fn` (they carry target features):
/// `load_x(*const f32) -> V`, `load_w(*const $ty) -> V` (exact widening),
/// `fma(a, b, c) -> V` (`a·b + c`), `reduce(&[V; ROWS]) -> [f32; ROWS]`
/// (the lane sum of each), `prefetch(*const u8)` (a hint, never faults);
/// `scalar($ty) -> f32` the exact widening of one weight. `side`: lines to
/// prefetch on the way ([`Side`]); on return, those not issued yet (a
/// product too short for all of them leaves the rest to the next call).
macro_rules! row_block_kernel {
    (
        $(#[$attr:meta])*
        fn $name:ident(w: &[$ty:ty]);
        lanes: $lanes:expr,
        zero: $zero:expr,
        load_x: $load_x:expr,
        load_w: $load_w:expr,
        fma: $fma:expr,
        reduce: $reduce:expr,
        prefetch: $prefetch:expr,
        scalar: $scalar:expr $(,)?
    ) => {
        $(#[$attr])*
        ///
        /// # Safety
        /// The processor must support the operations' target features.
        pub(crate) unsafe fn $name(
            out: &mut [f32],
            w: &[$ty],
            x: &[f32],
            side: &mut $crate::stream::matvec::kernel::Side,
        ) {
            use $crate::stream::matvec::kernel::{LINE, ROWS, SIDE_PER_BLOCK};
            const LANES: usize = $lanes;
            const SIZE: usize = core::mem::size_of::<$ty>();
            let k = x.len();
            if k == 0 {
                out.fill(0.0);
                return;
            }
            let rows = out.len().min(w.len() / k);
            let kv = k - k % LANES;
            let xp = x.as_ptr();
            let base = w.as_ptr();
            let (mut side_ptr, mut side_left) = (side.ptr, side.count);
            let mut r0 = 0;
            while r0 < rows {
                let n = (rows - r0).min(ROWS);
                // Rows past the last of a partial block repeat its first
                // row: the same arithmetic, the sums unused.
                // SAFETY (all pointer arithmetic below): rows r0..r0+n are
                // whole rows of `w` (rows·K ≤ w.len()), columns < K.
                let row: [*const $ty; ROWS] =
                    core::array::from_fn(|r| unsafe { base.add((r0 + if r < n { r } else { 0 }) * k) });
                // The next block starts right after this one (rows are
                // contiguous); the last block prefetches itself (lines
                // already in L1: no branch in the loop).
                let next = if r0 + ROWS < rows { r0 + ROWS } else { r0 };
                // SAFETY: row `next` starts inside `w`; the prefetched
                // addresses may run past its end, which a prefetch (a hint,
                // never a fault) allows, and `wrapping_add` keeps defined.
                let next = unsafe { base.add(next * k) }.cast::<u8>();
                // A few side lines per block, outside the column loop
                // (which stays free of branches and spills).
                for _ in 0..side_left.min(SIDE_PER_BLOCK) {
                    unsafe { $prefetch(side_ptr) };
                    side_ptr = side_ptr.wrapping_add(side.stride);
                    side_left -= 1;
                }
                let mut acc = [$zero; ROWS];
                let mut i = 0;
                while i < kv {
                    let xv = unsafe { $load_x(xp.add(i)) };
                    for r in 0..ROWS {
                        acc[r] = unsafe { $fma($load_w(row[r].add(i)), xv, acc[r]) };
                    }
                    // This chunk's share of the next block: i / LANES
                    // chunks done, ROWS · LANES · SIZE bytes each.
                    let off = i * ROWS * SIZE;
                    for line in 0..(ROWS * LANES * SIZE).div_ceil(LINE) {
                        unsafe { $prefetch(next.wrapping_add(off + line * LINE)) };
                    }
                    i += LANES;
                }
                let sums: [f32; ROWS] = unsafe { $reduce(&acc) };
                for r in 0..n {
                    let mut s = sums[r];
                    for j in kv..k {
                        s += unsafe { $scalar(*row[r].add(j)) * *xp.add(j) };
                    }
                    out[r0 + r] = s;
                }
                r0 += ROWS;
            }
            side.ptr = side_ptr;
            side.count = side_left;
        }
    };
}

pub(crate) use row_block_kernel;

/// A 16-lane vector emulated with an array, for the tests: the kernel's
/// index arithmetic at the AVX-512 width on any machine.
#[cfg(test)]
pub(crate) mod soft {
    use super::ROWS;
    use crate::weight::f16_bits_to_f32;

    pub(crate) type V = [f32; 16];

    pub(crate) unsafe fn load_x(p: *const f32) -> V {
        // SAFETY: the kernel passes 16 readable elements.
        core::array::from_fn(|l| unsafe { *p.add(l) })
    }
    pub(crate) unsafe fn load_f32(p: *const f32) -> V {
        unsafe { load_x(p) }
    }
    pub(crate) unsafe fn load_f16(p: *const half::f16) -> V {
        // SAFETY: as above.
        core::array::from_fn(|l| unsafe { f16_bits_to_f32((*p.add(l)).to_bits()) })
    }
    pub(crate) unsafe fn fma(a: V, b: V, c: V) -> V {
        core::array::from_fn(|l| a[l] * b[l] + c[l])
    }
    pub(crate) unsafe fn reduce(a: &[V; ROWS]) -> [f32; ROWS] {
        core::array::from_fn(|r| a[r].iter().sum())
    }
    pub(crate) unsafe fn prefetch(_: *const u8) {}

    row_block_kernel! {
        /// The kernel on emulated 16-lane vectors, f32 weights.
        fn product_f32(w: &[f32]);
        lanes: 16,
        zero: [0.0f32; 16],
        load_x: load_x,
        load_w: load_f32,
        fma: fma,
        reduce: reduce,
        prefetch: prefetch,
        scalar: |v: f32| v,
    }

    row_block_kernel! {
        /// The kernel on emulated 16-lane vectors, f16 weights.
        fn product_f16(w: &[half::f16]);
        lanes: 16,
        zero: [0.0f32; 16],
        load_x: load_x,
        load_w: load_f16,
        fma: fma,
        reduce: reduce,
        prefetch: prefetch,
        scalar: |v: half::f16| f16_bits_to_f32(v.to_bits()),
    }
}
