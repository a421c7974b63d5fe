//! The thread-block-cluster time loops of a [`super::DeviceTrainer`]
//! (sm_90; ptx/src/train_cluster.cu): their shared memory, the kernel
//! names, and the plan (cluster size, batch rows per cluster) chosen the
//! way the inference forward's planner chooses (engine/src/plan.rs): 16
//! CTAs per cluster where they fit, else 8; the fewest batch rows per
//! cluster for which every cluster is resident at once
//! (cuOccupancyMaxActiveClusters), else the most that fit. Both loops
//! take the register kernels (`tr_rcluster16_{fwd,bwd}_*`, W_hh in
//! registers, ptx/src/train_cluster_regs.cuh; H ≤ 256, the forward for
//! every cell, the backward for the RNN cells only; at most
//! `reg_cluster_rows` rows per cluster forward and [`reg_bwd_rows`]
//! backward) first where all their clusters are resident at once, as the
//! inference planner's `Path::ClusterRegs`, with its rows per cluster: the
//! fewest for which each cluster has its SMs to itself where any fit
//! (`reg_cluster_rows_for`). The backward of the GRUs and
//! the LSTM may instead take the reduce-scatter kernel
//! (`tr_cluster*_bwdrs_*`, ptx/src/train_cluster_rs.cuh) where asked
//! ([`super::DeviceTrainer::set_reduce_scatter_backward`]): G times fewer
//! bytes exchanged per step, not yet measured on a GPU, so not the default.
//! The forward may likewise take the kernel with the product on tensor
//! cores (`tr_mcluster16_fwd_*`, ptx/src/train_cluster_mma.cuh; every cell,
//! at most `MMA_CLUSTER_ROWS` = 8 rows per cluster) where asked
//! ([`super::DeviceTrainer::set_mma_forward`]), before the register one.

use recur_core::CellKind;

use crate::error::Error;
use crate::gpu::Gpu;
use crate::plan::{
    every_cta_owns_a_unit, one_cta_per_sm_smem, reg_cluster_rows, reg_cluster_rows_for, Precision,
    MMA_CLUSTER_ROWS, REG_CLUSTER_MAX_HIDDEN,
};

/// Whether a trainer runs its time loops on thread-block clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterLoops {
    /// Never (the cooperative persistent or per-step loops).
    Never,
    /// Where the device has clusters and the loop fits (the default).
    IfFits,
    /// Always: a forward or backward whose loop does not fit on clusters
    /// is an error (tests use it to be sure the cluster path ran).
    Required,
}

/// The form a time loop took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLoop {
    /// One launch of thread-block clusters, one exchange per step.
    Cluster,
    /// The same with W_hh in registers.
    ClusterRegs,
    /// The forward with W_hh in registers as tensor-core fragments (at most
    /// 8 batch rows per cluster; opt-in,
    /// [`super::DeviceTrainer::set_mma_forward`]).
    ClusterMma,
    /// The cluster backward whose exchange is a reduce-scatter: each CTA
    /// sends the others its partial sums of their units' dh (H floats per
    /// batch row in all) instead of its G·un gate gradients to every CTA
    /// (G·H floats per row); the GRUs and the LSTM.
    ClusterReduce,
    /// One cooperative launch, a grid barrier per step.
    Persistent,
    /// One cooperative launch with the product on tensor cores (f16
    /// storage, every cell but GRU reset-before; W_hh rows as mma fragments
    /// in shared memory, a grid barrier per step; the backward's partial
    /// products reduced through L2): where the cluster loops do not fit and
    /// the CUDA-core persistent loop does not either (H 768), or where
    /// asked ([`super::DeviceTrainer::set_mma_forward`],
    /// [`super::DeviceTrainer::set_mma_backward`]).
    PersistentMma,
    /// One launch per step (two for GRU reset-before).
    PerStep,
}

/// Batch columns of one product pass (cluster_step.cuh: CB).
const CB: usize = 8;
/// Threads per block.
const NTHREADS: usize = 256;

/// `cl_ldw` of cluster_step.cuh: a weight row's stride (elements).
fn cl_ldw(k: usize) -> usize {
    4 * (k.div_ceil(4) | 1)
}

/// `cl_ldh`: a vector row's stride (floats).
fn cl_ldh(k: usize) -> usize {
    k.div_ceil(4) * 4
}

/// `cl_rows_bytes`: a weight slice of `rows` rows of length `k`.
fn rows_bytes(rows: usize, k: usize, p: Precision) -> usize {
    (rows * cl_ldw(k) * p.bytes()).div_ceil(16) * 16
}

/// Shared memory (bytes) of `tr_cluster*_fwd_*` (layout in
/// ptx/src/train_cluster.cu): `units` hidden units per CTA, `rows` batch
/// rows per cluster.
pub(super) fn fwd_smem(
    cell: CellKind,
    hidden: usize,
    units: usize,
    rows: usize,
    p: Precision,
) -> usize {
    let g = cell.gates();
    let ldh = cl_ldh(hidden);
    let rh = if cell == CellKind::GruResetBefore {
        rows * ldh
    } else {
        0
    };
    let red = NTHREADS.min(hidden.div_ceil(4) * units) * g * CB;
    let floats = 2 * rows * ldh + rh + red + rows * units * g + rows * units + 2 * g * units;
    rows_bytes(g * units, hidden, p) + 4 * floats
}

/// Shared memory (bytes) of `tr_cluster*_bwdrs_*` (layout in
/// ptx/src/train_cluster_rs.cuh) on clusters of `cluster` CTAs: the CTA's
/// gate rows of W_hh, two receive buffers of a slot per CTA (a third for
/// GRU reset-before's n rows), the CTA's own gate gradients and two carries.
pub(super) fn bwd_rs_smem(
    cell: CellKind,
    hidden: usize,
    units: usize,
    rows: usize,
    cluster: usize,
    p: Precision,
) -> usize {
    let g = cell.gates();
    let buffers = if cell == CellKind::GruResetBefore {
        3
    } else {
        2
    };
    let floats = buffers * cluster * rows * cl_ldh(units) + rows * g * units + 2 * rows * units;
    rows_bytes(g * units, hidden, p) + 4 * floats
}

/// Shared memory (bytes) of `tr_cluster*_bwd_*`.
pub(super) fn bwd_smem(
    cell: CellKind,
    hidden: usize,
    units: usize,
    rows: usize,
    p: Precision,
) -> usize {
    let before = cell == CellKind::GruResetBefore;
    let ka = if before {
        2 * hidden
    } else {
        cell.gates() * hidden
    };
    let (wn, dn) = if before {
        (rows_bytes(units, hidden, p), rows * cl_ldh(hidden))
    } else {
        (0, 0)
    };
    let red = NTHREADS.min(ka.div_ceil(4) * units) * CB;
    let floats = 2 * rows * cl_ldh(ka) + dn + red + 3 * rows * units;
    rows_bytes(units, ka, p) + wn + 4 * floats
}

macro_rules! names {
    ($prefix:literal) => {
        [
            concat!($prefix, "rnn_tanh"),
            concat!($prefix, "rnn_relu"),
            concat!($prefix, "gru_before"),
            concat!($prefix, "gru_after"),
            concat!($prefix, "lstm"),
        ]
    };
}

/// `[cluster 8, cluster 16][f32, f16][forward, backward]`.
const KERNELS: [[[[&str; 5]; 2]; 2]; 2] = [
    [
        [
            names!("tr_cluster8_fwd_f32_"),
            names!("tr_cluster8_bwd_f32_"),
        ],
        [
            names!("tr_cluster8_fwd_f16_"),
            names!("tr_cluster8_bwd_f16_"),
        ],
    ],
    [
        [
            names!("tr_cluster16_fwd_f32_"),
            names!("tr_cluster16_bwd_f32_"),
        ],
        [
            names!("tr_cluster16_fwd_f16_"),
            names!("tr_cluster16_bwd_f16_"),
        ],
    ],
];

/// `[cluster 8, cluster 16][f32, f16]` reduce-scatter backward kernels by
/// cell, for the cells that have one ([`has_reduce_scatter_backward`]).
const REDUCE_SCATTER: [[[&str; 5]; 2]; 2] = [
    [
        names!("tr_cluster8_bwdrs_f32_"),
        names!("tr_cluster8_bwdrs_f16_"),
    ],
    [
        names!("tr_cluster16_bwdrs_f32_"),
        names!("tr_cluster16_bwdrs_f16_"),
    ],
];

/// Whether a cell has a reduce-scatter backward: the GRUs and the LSTM
/// (G > 1; for the RNN cells the gather moves the same bytes).
pub fn has_reduce_scatter_backward(cell: CellKind) -> bool {
    cell.gates() > 1
}

/// `[forward, backward][f32, f16]` register kernels by cell (an empty name:
/// none).
const REG: [[[&str; 5]; 2]; 2] = [REG_FWD, REG_BWD];
/// The register backward for the RNN cells only: for GRU and LSTM it was
/// no faster than the shared-memory kernel (ptx/src/train_cluster_regs.cuh).
const REG_BWD: [[&str; 5]; 2] = [
    [
        "tr_rcluster16_bwd_f32_rnn_tanh",
        "tr_rcluster16_bwd_f32_rnn_relu",
        "",
        "",
        "",
    ],
    [
        "tr_rcluster16_bwd_f16_rnn_tanh",
        "tr_rcluster16_bwd_f16_rnn_relu",
        "",
        "",
        "",
    ],
];
const REG_FWD: [[&str; 5]; 2] = [
    [
        "tr_rcluster16_fwd_f32_rnn_tanh",
        "tr_rcluster16_fwd_f32_rnn_relu",
        "tr_rcluster16_fwd_f32_gru_before",
        "tr_rcluster16_fwd_f32_gru_after",
        "tr_rcluster16_fwd_f32_lstm",
    ],
    [
        "tr_rcluster16_fwd_f16_rnn_tanh",
        "tr_rcluster16_fwd_f16_rnn_relu",
        "tr_rcluster16_fwd_f16_gru_before",
        "tr_rcluster16_fwd_f16_gru_after",
        "tr_rcluster16_fwd_f16_lstm",
    ],
];

/// The forward with the product on tensor cores (ptx/src/train_cluster_mma.cuh).
const MMA_FWD: [[&str; 5]; 2] = [
    [
        "tr_mcluster16_fwd_f32_rnn_tanh",
        "tr_mcluster16_fwd_f32_rnn_relu",
        "tr_mcluster16_fwd_f32_gru_before",
        "tr_mcluster16_fwd_f32_gru_after",
        "tr_mcluster16_fwd_f32_lstm",
    ],
    [
        "tr_mcluster16_fwd_f16_rnn_tanh",
        "tr_mcluster16_fwd_f16_rnn_relu",
        "tr_mcluster16_fwd_f16_gru_before",
        "tr_mcluster16_fwd_f16_gru_after",
        "tr_mcluster16_fwd_f16_lstm",
    ],
];

/// Which cluster kernels a trainer's plan may take (beyond the
/// shared-memory ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LoopOptions {
    /// The register kernels first where they fit.
    pub registers: bool,
    /// The forward's tensor-core kernel before the register one.
    pub mma_forward: bool,
    /// The reduce-scatter backward where the cell has one.
    pub reduce_scatter: bool,
}

/// CTAs per cluster of the register kernels (TR_RC_CS).
const REG_CLUSTER: usize = 16;

/// Most batch rows per cluster of the register backward (TrRbRows): its two
/// dhh buffers (2 · rows · 256·G floats) within 40 KB of static shared
/// memory, at most 16 (2 units × rows partial sums per lane ≤ 32): 16 RNN,
/// 6 GRU, 5 LSTM.
pub fn reg_bwd_rows(cell: CellKind) -> usize {
    (40_960 / (2 * REG_CLUSTER_MAX_HIDDEN * cell.gates() * 4)).min(16)
}

fn kernel(cluster: usize, cell: CellKind, p: Precision, backward: bool) -> &'static str {
    let c = usize::from(cluster == 16);
    let w = usize::from(p == Precision::F16);
    KERNELS[c][w][usize::from(backward)][crate::plan::cell_tag(cell)]
}

/// One cluster time loop's launch: `clusters · cluster` CTAs of `smem`
/// bytes, `units` hidden units per CTA, `rows` batch rows per cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClusterPlan {
    pub kernel: &'static str,
    /// [`TimeLoop::Cluster`], [`TimeLoop::ClusterRegs`] (W_hh in
    /// registers, static shared memory) or [`TimeLoop::ClusterReduce`]
    /// (the backward reads W_hh, not W_hhᵀ).
    pub form: TimeLoop,
    pub cluster: usize,
    pub units: usize,
    pub rows: usize,
    pub clusters: usize,
    pub smem: usize,
}

/// The cluster plan of the forward (`backward` false) or backward loop of a
/// (B, H) layer of `cell`, or `None` where the device has no clusters or
/// the loop does not fit (or some CTA would own no hidden unit).
/// With `opts.mma_forward`, a forward tries the tensor-core kernel first;
/// with `opts.registers`, the register kernel next; with
/// `opts.reduce_scatter`, a backward takes the reduce-scatter kernel where
/// the cell has one (the register backward, RNN cells only, is unaffected).
pub(super) fn plan(
    gpu: &Gpu,
    cell: CellKind,
    hidden: usize,
    batch: usize,
    p: Precision,
    backward: bool,
    opts: LoopOptions,
) -> Result<Option<ClusterPlan>, Error> {
    let w = usize::from(p == Precision::F16);
    let tag = crate::plan::cell_tag(cell);
    let candidates = [
        (opts.mma_forward && !backward)
            .then(|| (MMA_FWD[w][tag], MMA_CLUSTER_ROWS, TimeLoop::ClusterMma)),
        opts.registers.then(|| {
            let most = if backward {
                reg_bwd_rows(cell)
            } else {
                reg_cluster_rows(cell)
            };
            (
                REG[usize::from(backward)][w][tag],
                most,
                TimeLoop::ClusterRegs,
            )
        }),
    ];
    for (name, most, form) in candidates.into_iter().flatten() {
        if let Some(rp) = register_plan(gpu, name, hidden, batch, most, form)? {
            return Ok(Some(rp));
        }
    }
    let limits = gpu.limits();
    for cs in [16, 8] {
        if cs > limits.cluster {
            continue;
        }
        let units = hidden.div_ceil(cs);
        if units > NTHREADS || !every_cta_owns_a_unit(hidden, cs) {
            continue;
        }
        let rs = backward && opts.reduce_scatter && has_reduce_scatter_backward(cell);
        let name = if rs {
            REDUCE_SCATTER[usize::from(cs == 16)][w][tag]
        } else {
            kernel(cs, cell, p, backward)
        };
        let smem_of = |rows| {
            if rs {
                bwd_rs_smem(cell, hidden, units, rows, cs, p)
            } else if backward {
                bwd_smem(cell, hidden, units, rows, p)
            } else {
                fwd_smem(cell, hidden, units, rows, p)
            }
        };
        let mut largest = None;
        for rows in 1..=batch {
            let smem = smem_of(rows);
            if smem > limits.max_smem_per_block {
                break; // grows with rows
            }
            let active = gpu.max_active_clusters(name, cs, smem)?;
            if active == 0 {
                break;
            }
            largest = Some((rows, smem));
            if batch.div_ceil(rows) <= active {
                break;
            }
        }
        if let Some((rows, smem)) = largest {
            return Ok(Some(ClusterPlan {
                kernel: name,
                form: if rs {
                    TimeLoop::ClusterReduce
                } else {
                    TimeLoop::Cluster
                },
                cluster: cs,
                units,
                rows,
                clusters: batch.div_ceil(rows),
                smem,
            }));
        }
    }
    Ok(None)
}

/// A register kernel's plan (`name`, clusters of 16 with static shared
/// memory: [`TimeLoop::ClusterRegs`] or [`TimeLoop::ClusterMma`]): the
/// fewest batch rows per cluster, at most `most`, for which every cluster
/// has its SMs to itself, else the fewest for which every cluster is
/// resident at once, else none (clusters in waves would double the time;
/// the shared-memory kernel, which holds more rows, runs instead). The
/// inference planner's rule (`reg_cluster_rows_for`), measured on its GRU
/// forward; the training loops' rows are not yet timed on a GPU.
fn register_plan(
    gpu: &Gpu,
    name: &'static str,
    hidden: usize,
    batch: usize,
    most: usize,
    form: TimeLoop,
) -> Result<Option<ClusterPlan>, Error> {
    if name.is_empty()
        || hidden == 0
        || hidden > REG_CLUSTER_MAX_HIDDEN
        || gpu.limits().cluster < REG_CLUSTER
    {
        return Ok(None);
    }
    let active = gpu.max_active_clusters(name, REG_CLUSTER, 0)?;
    let alone = gpu.max_active_clusters(name, REG_CLUSTER, one_cta_per_sm_smem(&gpu.limits()))?;
    let rows = reg_cluster_rows_for(batch, most, active, alone);
    Ok(rows.map(|rows| ClusterPlan {
        kernel: name,
        form,
        cluster: REG_CLUSTER,
        units: hidden.div_ceil(REG_CLUSTER),
        rows,
        clusters: batch.div_ceil(rows),
        smem: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_at_the_d2l_shape() {
        // GRU, H 256, 16 CTAs of 16 units, 4 rows per cluster, f32:
        // 48 W_hh rows of 260 floats; h 2·4·256, red 256·3·8, x 4·16·3,
        // state 4·16, biases 2·3·16 floats.
        let f = 48 * 260 * 4 + 4 * (2048 + 6144 + 192 + 64 + 96);
        assert_eq!(
            fwd_smem(CellKind::GruResetAfter, 256, 16, 4, Precision::F32),
            f
        );
        // Backward: 16 W_hhᵀ rows of 772 floats; dhh 2·4·768, red
        // min(256, 192·16)·8, carries 3·4·16 floats.
        let b = 16 * 772 * 4 + 4 * (6144 + 2048 + 192);
        assert_eq!(
            bwd_smem(CellKind::GruResetAfter, 256, 16, 4, Precision::F32),
            b
        );
        // Reset-before: r, z columns (512 → 516) and W_hn's (260), dn 4·256.
        let rb = 16 * 516 * 4 + 16 * 260 * 4 + 4 * (2 * 4 * 512 + 1024 + 256 * 8 + 192);
        assert_eq!(
            bwd_smem(CellKind::GruResetBefore, 256, 16, 4, Precision::F32),
            rb
        );
        // f16 halves the weight slices only.
        assert_eq!(
            bwd_smem(CellKind::GruResetAfter, 256, 16, 4, Precision::F16),
            b - 16 * 772 * 2
        );
    }

    #[test]
    fn every_kernel_is_in_the_cluster_module() {
        let m = crate::ptx::MODULES
            .iter()
            .find(|m| m.name == "train_cluster")
            .expect("train_cluster module");
        assert_eq!(m.min_major, 9);
        let names: Vec<&str> = crate::ptx::entry_names(m.text).collect();
        let regs = REG.iter().flatten().flatten().filter(|k| !k.is_empty());
        let mma = MMA_FWD.iter().flatten();
        for k in KERNELS
            .iter()
            .flatten()
            .flatten()
            .flatten()
            .chain(regs)
            .chain(mma)
        {
            assert!(names.contains(k), "{k} missing from train_cluster.ptx");
        }
        // The reduce-scatter kernels: exactly the cells that say they have one.
        for cell in CellKind::ALL {
            for k in REDUCE_SCATTER.iter().flatten() {
                let k = k[crate::plan::cell_tag(cell)];
                let has = has_reduce_scatter_backward(cell);
                assert_eq!(
                    names.contains(&k),
                    has,
                    "{k} in train_cluster.ptx: {has} expected"
                );
            }
        }
    }

    #[test]
    fn reduce_scatter_shared_memory_at_the_d2l_shape() {
        // GRU, H 256, 16 CTAs of 16 units, 4 rows per cluster, f32: 48 W_hh
        // rows of 260 floats (the forward's slice); receive 2·16·4·16,
        // own dhh 4·48, carries 2·4·16 floats.
        let b = 48 * 260 * 4 + 4 * (2048 + 192 + 128);
        assert_eq!(
            bwd_rs_smem(CellKind::GruResetAfter, 256, 16, 4, 16, Precision::F32),
            b
        );
        // Units not a multiple of 4 (H 150 on 8 CTAs of 19): slots of 20.
        assert_eq!(
            bwd_rs_smem(CellKind::Lstm, 150, 19, 3, 8, Precision::F16),
            (76 * 156 * 2usize).div_ceil(16) * 16 + 4 * (2 * 8 * 3 * 20 + 3 * 76 + 2 * 3 * 19)
        );
        // Reset-before: a third buffer (its n rows' partials).
        assert_eq!(
            bwd_rs_smem(CellKind::GruResetBefore, 256, 16, 4, 16, Precision::F32),
            b + 4 * 1024
        );
    }

    #[test]
    fn register_backward_rows_fit_40_kb() {
        assert_eq!(reg_bwd_rows(CellKind::RnnTanh), 16);
        assert_eq!(reg_bwd_rows(CellKind::GruResetAfter), 6);
        assert_eq!(reg_bwd_rows(CellKind::Lstm), 5);
        for cell in CellKind::ALL {
            let bytes = 2 * reg_bwd_rows(cell) * 256 * cell.gates() * 4;
            assert!(bytes <= 40_960, "{cell:?}: {bytes}");
        }
    }

    #[test]
    fn kernel_names_follow_size_precision_direction() {
        assert_eq!(
            kernel(16, CellKind::GruResetBefore, Precision::F32, false),
            "tr_cluster16_fwd_f32_gru_before"
        );
        assert_eq!(
            kernel(8, CellKind::Lstm, Precision::F16, true),
            "tr_cluster8_bwd_f16_lstm"
        );
    }
}
