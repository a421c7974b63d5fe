//! The forward's persistent time loop with the recurrent product on tensor
//! cores ([`super::TimeLoop::PersistentMma`], ptx/src/train_mma.cu): f16 storage,
//! every cell but GRU reset-before, one cooperative launch, each block's
//! G·U gate rows of W_hh in shared memory as mma fragments (the inference
//! kernel's layout, [`crate::plan`]'s `mma_smem`), one grid barrier per step.
//!
//! It runs where the cluster loops do not fit and the CUDA-core persistent
//! loop (2 hidden units per block) would need more blocks than the GPU
//! holds at once: at cuDNN's benchmark shape (LSTM H 768, B 16) the forward
//! otherwise took one launch per step. Where the CUDA-core loop fits too,
//! it runs only where asked ([`super::DeviceTrainer::set_mma_forward`])
//! until a GPU has timed the two.
//!
//! Limits (the kernel keeps one item per thread in registers across the
//! steps): hidden units per block U in 4, 8, 16, 32 with
//! min(U, H)·B ≤ 256 and the batch in one chunk of n-tiles
//! (ceil(G·U / 16)·ceil(B / 8) ≤ 8 tiles), so B ≤ 64; ceil(H / U) blocks
//! all resident at once.

use recur_core::CellKind;

use super::DeviceTrainer;
use crate::error::Error;
use crate::gpu::DeviceLimits;
use crate::gpu::BLOCK;
use crate::plan::{cell_tag, mma_smem, Precision, MMA_TILES};

/// The kernels, by [`cell_tag`]; GRU reset-before has none.
const KERNELS: [&str; 5] = [
    "tr_mma_fwd_f16_rnn_tanh",
    "tr_mma_fwd_f16_rnn_relu",
    "",
    "tr_mma_fwd_f16_gru_after",
    "tr_mma_fwd_f16_lstm",
];

/// Hidden units per block the planner tries, fewest first (more blocks,
/// less work each).
const UNITS: [usize; 4] = [4, 8, 16, 32];

/// One launch of the loop: `blocks` blocks of `smem` bytes, `units` hidden
/// units each, `ntc` n-tiles per chunk (the whole batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MmaForwardPlan {
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
) -> impl Iterator<Item = MmaForwardPlan> {
    let kernel = KERNELS[cell_tag(cell)];
    let usable = p == Precision::F16 && !kernel.is_empty() && hidden > 0 && batch > 0;
    UNITS.into_iter().filter_map(move |units| {
        let (mt, ntc, smem) = mma_smem(cell, hidden, batch, units);
        // One item per thread of the block.
        let one_pass = units.min(hidden) * batch <= BLOCK as usize;
        let one_chunk = ntc == batch.div_ceil(8) && mt * ntc <= MMA_TILES;
        (usable && one_pass && one_chunk && smem <= max_smem).then_some(MmaForwardPlan {
            kernel,
            units,
            blocks: hidden.div_ceil(units),
            ntc,
            smem,
        })
    })
}

/// Whether the persistent tensor-core forward takes a shape on a GPU of
/// these limits (f16 storage): the kernel's limits, and its blocks
/// resident at one per SM (the kernels' 200-odd registers per thread leave
/// room for no second block of 256 threads; the planner asks the GPU).
/// Tests use it to know which form to expect.
pub fn persistent_mma_forward_takes(
    cell: CellKind,
    hidden: usize,
    batch: usize,
    p: Precision,
    limits: &DeviceLimits,
) -> bool {
    limits.cooperative
        && shape_plans(cell, hidden, batch, p, limits.max_smem_per_block)
            .any(|plan| plan.blocks <= limits.sm_count)
}

impl DeviceTrainer {
    /// The persistent tensor-core forward's plan for this trainer, where
    /// persistent loops are allowed, the GPU launches cooperatively and
    /// every block is resident at once: the fewest units per block that
    /// fit. The occupancy queries run once per trainer.
    pub(super) fn mma_forward_plan(&self) -> Result<Option<MmaForwardPlan>, Error> {
        let lim = self.gpu.limits();
        if !self.persistent || !lim.cooperative {
            return Ok(None);
        }
        if let Some(plan) = self.mma_forward_plan.get() {
            return Ok(plan);
        }
        let mut found = None;
        for plan in shape_plans(
            self.layout.cell,
            self.layout.hidden,
            self.batch,
            self.precision,
            lim.max_smem_per_block,
        ) {
            if plan.blocks <= self.gpu.blocks_per_sm(plan.kernel, plan.smem)? * lim.sm_count {
                found = Some(plan);
                break;
            }
        }
        self.mma_forward_plan.set(Some(found));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMEM: usize = 227 * 1024;

    #[test]
    fn the_h768_lstm_takes_8_units_per_block_in_one_chunk() {
        let plans: Vec<_> = shape_plans(CellKind::Lstm, 768, 16, Precision::F16, SMEM).collect();
        // U 4: 192 blocks (more than an H100's 132 SMs hold at one each);
        // the planner's residency check then takes U 8: 96 blocks.
        assert_eq!(plans[0].units, 4);
        assert_eq!(plans[0].blocks, 192);
        assert_eq!((plans[1].units, plans[1].blocks, plans[1].ntc), (8, 96, 2));
    }

    #[test]
    fn f32_gru_reset_before_and_large_batches_are_not_taken() {
        let shape = |cell, hidden, batch, p| shape_plans(cell, hidden, batch, p, SMEM).next();
        assert!(shape(CellKind::Lstm, 768, 16, Precision::F32).is_none());
        assert!(shape(CellKind::GruResetBefore, 256, 16, Precision::F16).is_none());
        // B 65: 4 units · 65 rows > 256 items.
        assert!(shape(CellKind::RnnTanh, 64, 65, Precision::F16).is_none());
        assert!(shape(CellKind::RnnTanh, 64, 64, Precision::F16).is_some());
        assert!(shape(CellKind::GruResetAfter, 1, 1, Precision::F16).is_some());
        // H 1,400: 16 units need 237 KB, 4 and 8 units more blocks than SMs.
        assert!(shape_plans(CellKind::Lstm, 1400, 3, Precision::F16, SMEM).all(|p| p.units <= 8));
    }
}
