//! The persistent time loops with the recurrent product on tensor cores
//! ([`super::TimeLoop::PersistentMma`], ptx/src/train_mma.cu): f16 storage,
//! every cell but GRU reset-before, one cooperative launch per direction,
//! each block's G·U gate rows of W_hh in shared memory as mma fragments,
//! one grid barrier per step, or opt-in flags instead
//! ([`ForwardSync`], [`super::DeviceTrainer::set_flagged_backward`]).
//! - The forward (`tr_mma_fwd`): the inference kernel's layout
//!   ([`crate::plan`]'s `mma_smem`).
//! - The backward (`tr_mma_bwd`): the same rows transposed, each block's
//!   partial product of every unit's dh through L2 (a reduce-scatter,
//!   `mma_bwd_smem`, and a partials buffer of 2 · blocks · H · B floats).
//!
//! They run where the cluster loops do not fit and the CUDA-core persistent
//! loops (2 hidden units per block forward, 4 backward) would need more
//! blocks than the GPU holds at once: at cuDNN's benchmark shape (LSTM
//! H 768, B 16) each direction otherwise took one launch per step. Where
//! the CUDA-core loop fits too, they run only where asked
//! ([`super::DeviceTrainer::set_mma_forward`],
//! [`super::DeviceTrainer::set_mma_backward`]) until a GPU has timed the
//! two.
//!
//! Limits (the kernels keep one item per thread in registers across the
//! steps): hidden units per block U in 4, 8, 16, 32 with
//! min(U, H)·B ≤ 256; the forward's batch in one chunk of n-tiles
//! (ceil(G·U / 16)·ceil(B / 8) ≤ 8 tiles), the backward's in at most 8
//! n-tiles, so B ≤ 64; ceil(H / U) blocks all resident at once.

use std::cell::{Cell, RefCell};

use cust::memory::DeviceBuffer;
use recur_core::CellKind;

use super::DeviceTrainer;
use crate::error::Error;
use crate::gpu::DeviceLimits;
use crate::gpu::BLOCK;
use crate::mem::{addr, alloc};
use crate::plan::{cell_tag, mma_bwd_smem, mma_smem, Precision, MMA_TILES};
use crate::sequence::flag_epoch;

/// The kernels, forward then backward, by [`cell_tag`]; GRU reset-before
/// has none.
const KERNELS: [[&str; 5]; 2] = [
    [
        "tr_mma_fwd_f16_rnn_tanh",
        "tr_mma_fwd_f16_rnn_relu",
        "",
        "tr_mma_fwd_f16_gru_after",
        "tr_mma_fwd_f16_lstm",
    ],
    [
        "tr_mma_bwd_f16_rnn_tanh",
        "tr_mma_bwd_f16_rnn_relu",
        "",
        "tr_mma_bwd_f16_gru_after",
        "tr_mma_bwd_f16_lstm",
    ],
];

/// The forward kernels with the flagged exchange, by [`cell_tag`].
const FLAGGED_FORWARD: [&str; 5] = [
    "tr_mma_fwd_flagged_f16_rnn_tanh",
    "tr_mma_fwd_flagged_f16_rnn_relu",
    "",
    "tr_mma_fwd_flagged_f16_gru_after",
    "tr_mma_fwd_flagged_f16_lstm",
];

/// The backward's most n-tiles (its product's tile loop is compiled for
/// 1 … 8: train_mma_bwd.cuh, mb_partials_nt).
const BACKWARD_NTILES: usize = 8;

/// Hidden units per block the planner tries, fewest first (more blocks,
/// less work each).
const UNITS: [usize; 4] = [4, 8, 16, 32];

/// One launch of a loop: `blocks` blocks of `smem` bytes, `units` hidden
/// units each, `ntc` n-tiles per chunk (the whole batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MmaLoopPlan {
    pub kernel: &'static str,
    pub units: usize,
    pub blocks: usize,
    pub ntc: usize,
    pub smem: usize,
}

/// The plans the kernel's limits allow for a shape, fewest units first,
/// residency not yet checked; none for f32 or GRU reset-before.
fn shape_plans(
    cell: CellKind,
    hidden: usize,
    batch: usize,
    p: Precision,
    max_smem: usize,
    backward: bool,
) -> impl Iterator<Item = MmaLoopPlan> {
    let kernel = KERNELS[usize::from(backward)][cell_tag(cell)];
    let usable = p == Precision::F16 && !kernel.is_empty() && hidden > 0 && batch > 0;
    UNITS.into_iter().filter_map(move |units| {
        let (one_chunk, ntc, smem) = if backward {
            let nt = batch.div_ceil(8);
            let smem = mma_bwd_smem(cell, hidden, batch, units);
            (nt <= BACKWARD_NTILES, nt, smem)
        } else {
            let (mt, ntc, smem) = mma_smem(cell, hidden, batch, units);
            (ntc == batch.div_ceil(8) && mt * ntc <= MMA_TILES, ntc, smem)
        };
        // One item per thread of the block.
        let one_pass = units.min(hidden) * batch <= BLOCK as usize;
        (usable && one_pass && one_chunk && smem <= max_smem).then_some(MmaLoopPlan {
            kernel,
            units,
            blocks: hidden.div_ceil(units),
            ntc,
            smem,
        })
    })
}

/// Whether a persistent tensor-core loop (the forward, or with `backward`
/// the backward) takes a shape on a GPU of these limits (f16 storage): the
/// kernel's limits, and its blocks resident at one per SM (the kernels'
/// 170-odd to 210-odd registers per thread leave room for no second block
/// of 256 threads; the planner asks the GPU). Tests use it to know which
/// form to expect.
pub fn persistent_mma_takes(
    cell: CellKind,
    hidden: usize,
    batch: usize,
    p: Precision,
    limits: &DeviceLimits,
    backward: bool,
) -> bool {
    limits.cooperative
        && shape_plans(cell, hidden, batch, p, limits.max_smem_per_block, backward)
            .any(|plan| plan.blocks <= limits.sm_count)
}

impl DeviceTrainer {
    /// The plan of the persistent tensor-core forward (or with `backward`
    /// the backward) for this trainer, where persistent loops are allowed,
    /// the GPU launches cooperatively and every block is resident at once:
    /// the fewest units per block that fit, or the count asked by
    /// [`DeviceTrainer::set_mma_units`]. The occupancy queries run once per
    /// trainer and direction.
    pub(super) fn mma_loop_plan(&self, backward: bool) -> Result<Option<MmaLoopPlan>, Error> {
        let lim = self.gpu.limits();
        if !self.persistent || !lim.cooperative {
            return Ok(None);
        }
        let mut plans = self.mma_plans.get();
        if let Some(plan) = plans[usize::from(backward)] {
            return Ok(plan);
        }
        let mut found = None;
        for plan in shape_plans(
            self.layout.cell,
            self.layout.hidden,
            self.batch,
            self.precision,
            lim.max_smem_per_block,
            backward,
        )
        .filter(|plan| self.mma_units.is_none_or(|u| u == plan.units))
        {
            if plan.blocks <= self.gpu.blocks_per_sm(plan.kernel, plan.smem)? * lim.sm_count {
                found = Some(plan);
                break;
            }
        }
        plans[usize::from(backward)] = Some(found);
        self.mma_plans.set(plans);
        Ok(found)
    }

    /// The backward's partials (2 · blocks · H · B floats: one slot per
    /// step parity), made at the first backward that needs them and kept.
    pub(super) fn mma_partials(&self, plan: MmaLoopPlan) -> Result<u64, Error> {
        let len = 2 * plan.blocks * self.layout.hidden * self.batch;
        let mut slot = self.mma_partials.borrow_mut();
        if slot.as_ref().is_none_or(|b| b.len() < len) {
            *slot = Some(alloc(len, "tensor-core backward partials")?);
        }
        Ok(slot.as_ref().map_or(0, |b| addr(b)))
    }

    /// The flag words of a flagged loop (`len` 32-bit words) and this
    /// launch's epoch (its flags epoch + 1 … epoch + T − 1): the
    /// inference's flag epochs ([`flag_epoch`]), the words zeroed when
    /// made and before the flags would wrap.
    pub(super) fn flag_words(
        &self,
        flags: &FlagWords,
        len: usize,
        what: &'static str,
    ) -> Result<(u64, u32), Error> {
        let mut slot = flags.words.borrow_mut();
        if slot.as_ref().is_none_or(|b| b.len() < len) {
            let words = alloc(len, what)?;
            self.zero(addr(&words), len)?;
            *slot = Some(words);
            flags.epoch.set(0);
        }
        let words = slot.as_ref().map_or(0, |b| addr(b));
        let (epoch, reset) = flag_epoch(flags.epoch.get(), self.steps);
        if reset {
            self.zero(words, len)?;
        }
        flags.epoch.set(epoch + self.steps as u32);
        Ok((words, epoch))
    }
}

/// How the blocks of the persistent tensor-core forward wait for each
/// other's h_t between steps (ptx/src/train_mma.cu says why each). Every
/// form computes the same values; only their time differs, and no GPU has
/// timed the two flag forms yet (docs/gpu-pending.md), hence the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardSync {
    /// One grid-wide barrier per step.
    #[default]
    GridBarrier,
    /// Each block's flag, released after its h_t; a block stages h_t once
    /// every block's flag has reached the step.
    BlockFlags,
    /// h_t in 8-byte words {two f16 units, the step's flag}, staged as the
    /// flags arrive: no fence, twice the bytes. Even H only: an odd H
    /// takes [`ForwardSync::BlockFlags`].
    FlaggedWords,
}

/// A flagged loop's words, made at first need, and the next launch's
/// epoch.
#[derive(Default)]
pub(super) struct FlagWords {
    words: RefCell<Option<DeviceBuffer<u32>>>,
    epoch: Cell<u32>,
}

/// The forward kernel that exchanges h in flagged words instead of a grid
/// barrier (ptx/src/train_mma.cu); none for GRU reset-before.
pub(super) fn flagged_forward_kernel(cell: CellKind) -> &'static str {
    FLAGGED_FORWARD[cell_tag(cell)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMEM: usize = 227 * 1024;

    #[test]
    fn the_h768_lstm_takes_8_units_per_block_in_one_chunk() {
        let plans: Vec<_> =
            shape_plans(CellKind::Lstm, 768, 16, Precision::F16, SMEM, false).collect();
        // U 4: 192 blocks (more than an H100's 132 SMs hold at one each);
        // the planner's residency check then takes U 8: 96 blocks.
        assert_eq!(plans[0].units, 4);
        assert_eq!(plans[0].blocks, 192);
        assert_eq!((plans[1].units, plans[1].blocks, plans[1].ntc), (8, 96, 2));
    }

    #[test]
    fn f32_gru_reset_before_and_large_batches_are_not_taken() {
        let shape =
            |cell, hidden, batch, p| shape_plans(cell, hidden, batch, p, SMEM, false).next();
        assert!(shape(CellKind::Lstm, 768, 16, Precision::F32).is_none());
        assert!(shape(CellKind::GruResetBefore, 256, 16, Precision::F16).is_none());
        // B 65: 4 units · 65 rows > 256 items.
        assert!(shape(CellKind::RnnTanh, 64, 65, Precision::F16).is_none());
        assert!(shape(CellKind::RnnTanh, 64, 64, Precision::F16).is_some());
        assert!(shape(CellKind::GruResetAfter, 1, 1, Precision::F16).is_some());
        // H 1,400: 16 units need 237 KB, 4 and 8 units more blocks than SMs.
        assert!(
            shape_plans(CellKind::Lstm, 1400, 3, Precision::F16, SMEM, false).all(|p| p.units <= 8)
        );
    }

    #[test]
    fn the_h768_lstm_backward_takes_8_units_per_block() {
        let plans: Vec<_> =
            shape_plans(CellKind::Lstm, 768, 16, Precision::F16, SMEM, true).collect();
        assert_eq!((plans[0].units, plans[0].blocks), (4, 192));
        assert_eq!((plans[1].units, plans[1].blocks, plans[1].ntc), (8, 96, 2));
        // The transposed fragments (48 × 2 tiles), hi and lo (16 columns of
        // 40 halves each), the reduction and the warps' maxima.
        assert_eq!(plans[1].smem, 48 * 2 * 512 + 2 * 16 * 40 * 2 + 4096 + 32);
        assert_eq!(plans[1].kernel, "tr_mma_bwd_f16_lstm");
    }

    #[test]
    fn the_backward_takes_up_to_8_n_tiles_and_one_item_per_thread() {
        let shape = |cell, hidden, batch, p| shape_plans(cell, hidden, batch, p, SMEM, true).next();
        assert!(shape(CellKind::Lstm, 768, 16, Precision::F32).is_none());
        assert!(shape(CellKind::GruResetBefore, 256, 16, Precision::F16).is_none());
        assert!(shape(CellKind::RnnTanh, 64, 65, Precision::F16).is_none());
        let b64 = shape(CellKind::RnnTanh, 64, 64, Precision::F16).unwrap();
        assert_eq!((b64.units, b64.ntc), (4, 8));
        assert!(shape(CellKind::GruResetAfter, 1, 1, Precision::F16).is_some());
    }
}
