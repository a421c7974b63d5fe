//! Packing of operand blocks into the layouts the micro-kernels stream:
//! `A` in slivers of `MR` rows (for each `k`, `MR` consecutive values) and
//! `B` in slivers of `NR` columns (for each `k`, `NR` consecutive values),
//! zero-padded at the edges so that the kernels never branch on the shape.
//! The buffers are fixed-size blocks on the stack: no allocation, and no
//! memory touched beyond what a product needs.

use core::mem::MaybeUninit;

use crate::gemm::Trans;

/// Rows of a micro-tile (`A` sliver height).
pub(super) const MR: usize = 6;
/// Columns of a micro-tile (`B` sliver width), a multiple of 8.
pub(super) const NR: usize = 16;
/// Depth of a packed block: one `B` sliver is `KC·NR·4` bytes (L1).
pub(super) const KC: usize = 256;
/// Rows of a packed `A` block, a multiple of `MR`: `MC·KC·4` bytes (L2).
pub(super) const MC: usize = 72;

/// Zeros standing in for the rows / columns beyond the matrix edge.
static ZEROS: [f32; KC] = [0.0; KC];

/// A cache-line aligned, uninitialised block of `L` floats.
#[repr(C, align(64))]
pub(super) struct Block<const L: usize>([MaybeUninit<f32>; L]);

impl<const L: usize> Block<L> {
    /// An uninitialised block (no memory is touched).
    #[inline(always)]
    pub(super) fn new() -> Self {
        Block([MaybeUninit::uninit(); L])
    }
}

/// Views `slots` as initialised.
///
/// # Safety
/// Every element of `slots` must have been written.
#[inline(always)]
unsafe fn assume_written(slots: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: the caller guarantees initialisation; `MaybeUninit<f32>` has
    // the size, alignment and layout of `f32`.
    unsafe { &mut *(slots as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Writes `src` (at most `W` values) to the front of `dst` (`W` slots) and
/// zeros after it: every slot of `dst` is written.
#[inline(always)]
fn write_padded<const W: usize>(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    if let (Ok(dst), Ok(src)) = (
        <&mut [MaybeUninit<f32>; W]>::try_from(&mut *dst),
        <&[f32; W]>::try_from(src),
    ) {
        // The full-width case, with a length known at compile time, becomes
        // a few vector moves instead of a call to `memcpy`.
        for (slot, &v) in dst.iter_mut().zip(src) {
            slot.write(v);
        }
        return;
    }
    let (head, tail) = dst.split_at_mut(src.len());
    for (slot, &v) in head.iter_mut().zip(src) {
        slot.write(v);
    }
    for slot in tail {
        slot.write(0.0);
    }
}

/// Packs rows `i0..i0+mc` (`mc ≤ MC`) and depths `p0..p0+kc` (`kc ≤ KC`) of
/// op(A) into `block` as `ceil(mc/MR)` slivers of `MR·kc`:
/// `sliver_s[p·MR + r] = op(A)[i0 + s·MR + r][p0 + p]`, zero past row `mc`.
/// Returns the packed prefix.
///
/// `a` holds (m, k) for [`Trans::N`], (k, m) for [`Trans::T`], rows `lda`
/// apart.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn pack_a<'b>(
    block: &'b mut Block<{ MC * KC }>,
    ta: Trans,
    a: &[f32],
    lda: usize,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
) -> &'b [f32] {
    let slots = &mut block.0[..mc.div_ceil(MR) * MR * kc];
    for (s, sliver) in slots.chunks_exact_mut(MR * kc).enumerate() {
        let first = i0 + s * MR;
        let rows = MR.min(i0 + mc - first);
        match ta {
            Trans::N => {
                // Each row is contiguous along k; padding rows read zeros.
                let src: [&[f32]; MR] = core::array::from_fn(|r| {
                    if r < rows {
                        &a[(first + r) * lda + p0..][..kc]
                    } else {
                        &ZEROS[..kc]
                    }
                });
                for (p, d) in sliver.chunks_exact_mut(MR).enumerate() {
                    for (slot, row) in d.iter_mut().zip(&src) {
                        slot.write(row[p]);
                    }
                }
            }
            Trans::T => {
                // Each depth p holds the sliver's rows contiguously.
                for (p, d) in sliver.chunks_exact_mut(MR).enumerate() {
                    write_padded::<MR>(d, &a[(p0 + p) * lda + first..][..rows]);
                }
            }
        }
    }
    // SAFETY: the loops above visit every slot of every sliver of `slots`
    // (chunks_exact over the whole prefix, then every element of each
    // chunk) and write it.
    unsafe { assume_written(slots) }
}

/// Packs columns `j0..j0+cols` (`cols ≤ NR`) and depths `p0..p0+kc`
/// (`kc ≤ KC`) of op(B) into `block` as one sliver of `NR·kc`:
/// `sliver[p·NR + c] = op(B)[p0 + p][j0 + c]`, zero past column `cols`.
/// Returns the packed sliver.
///
/// `b` holds (k, n) for [`Trans::N`], (n, k) for [`Trans::T`], rows `ldb`
/// apart.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn pack_b<'b>(
    block: &'b mut Block<{ KC * NR }>,
    tb: Trans,
    b: &[f32],
    ldb: usize,
    j0: usize,
    cols: usize,
    p0: usize,
    kc: usize,
) -> &'b [f32] {
    let slots = &mut block.0[..NR * kc];
    match tb {
        Trans::N => {
            for (p, d) in slots.chunks_exact_mut(NR).enumerate() {
                write_padded::<NR>(d, &b[(p0 + p) * ldb + j0..][..cols]);
            }
        }
        Trans::T => {
            let src: [&[f32]; NR] = core::array::from_fn(|c| {
                if c < cols {
                    &b[(j0 + c) * ldb + p0..][..kc]
                } else {
                    &ZEROS[..kc]
                }
            });
            for (p, d) in slots.chunks_exact_mut(NR).enumerate() {
                for (slot, col) in d.iter_mut().zip(&src) {
                    slot.write(col[p]);
                }
            }
        }
    }
    // SAFETY: every slot of `slots` is visited (chunks_exact over the whole
    // prefix, then every element of each chunk) and written.
    unsafe { assume_written(slots) }
}
