//! How a recurrent layer runs on a given device: which kernel, how many
//! hidden units per block, how much shared memory.
//!
//! # Size limits of the persistent (whole-sequence, one launch) kernels
//! All blocks of a persistent kernel must be resident at once (cooperative
//! launch), each holding the W_hh rows of its hidden units in shared memory:
//!
//! - CUDA cores (f32, and f16 GRU reset-before): block b owns `U` units,
//!   `G·U ≤ 16` gate rows; shared memory per block is
//!   `G·U·H·w + 4·(H·(ldb+1) + 144·ldb)` bytes (`w` = 4 for f32, 2 for f16; `ldb`
//!   = batch columns per chunk, a power of two in 4..=64). It runs where
//!   `ceil(H/U)` blocks of that size fit on the device at once. On an H100
//!   (132 SMs, 227 KiB per block) f32 holds up to about H = 1,100 for the
//!   GRU and 900 for the LSTM at B ≤ 64.
//! - Tensor cores (f16: RNN, GRU reset-after, LSTM): `U` ∈ {4, 8, 16, 32}
//!   units per block, `MT = ceil(G·U/16)` ≤ 8 row tiles; shared memory
//!   `MT·ceil(H/16)·512 + ceil(B/8)·8·(16·ceil(H/16) + 8)·2 + 32 KiB +
//!   MT·16·NTC·8·4` bytes (NTC = n-tiles per chunk, `MT·NTC ≤ 8`).
//!   `Path::PersistentMmaFlagged` is the same kernel without the grid
//!   barrier: h goes from block to block in words that carry their step
//!   (ptx/src/flag_exchange.cuh). It takes even H only (pairs of units per
//!   word) and is chosen only when forced until it has run on a GPU.
//!   `Path::PersistentMmaBlockFlags` is the barrier kernel itself with a
//!   flag per block instead (released after the block's h_t, acquired
//!   before the next staging): any H, forced only for the same reason.
//!
//! Larger layers run the per-step kernels (one launch per step, W_hh read
//! from global memory / L2), which have no size limit beyond `G·H·H < 2³¹`.
//!
//! # Thread-block clusters (sm_90 and later; after `Path::ClusterRegs`)
//! `Path::Cluster` runs the sequence on clusters of `CS` = 16 (where the
//! device allows non-portable sizes) or 8 CTAs, one launch, no cooperative
//! launch and no global barrier (ptx/src/recurrent_cluster.cu). Cluster c
//! takes batch rows `[c·BC, c·BC+BC)`; CTA r of a cluster holds the W_hh rows
//! of units `[r·U, r·U+U)`, `U = ceil(H/CS)`, and the cluster's whole
//! `h_{t-1}` in shared memory; the new h goes to every CTA through
//! distributed shared memory, one cluster barrier per step. Limits: `U ≤ 256`
//! and the shared memory `cluster_smem` (≈ `G·U·H·w + 4·(2·BC·H +
//! 256·G·8 + …)` bytes) within the per-block limit: on an H100 (227 KiB) with
//! CS = 16 and BC ≤ 8 that is H ≤ about 560 for an f32 LSTM, 650 for an f32
//! GRU, 790 / 900 in f16 (the LSTM H 768 of the benchmark, 295 KB of W_hh
//! per CTA in f16, does not fit and runs the tensor-core kernel). BC is the
//! smallest number of rows for which all `ceil(B/BC)` clusters are resident
//! at once (cuOccupancyMaxActiveClusters).
//!
//! # Clusters with W_hh in registers (sm_90; preferred over the above)
//! `Path::ClusterRegs` (ptx/src/recurrent_cluster_regs.cu) is the same
//! cluster scheme with the weights in registers: clusters of 16 CTAs, warp w
//! of CTA r owns 2 hidden units and every lane 8 k of their gate rows. It
//! takes `H ≤ 256` (`REG_CLUSTER_MAX_HIDDEN`), every cell, and at most
//! `32 / (2·G)` batch rows per cluster (`reg_cluster_rows`: 16 RNN, 5 GRU,
//! 4 LSTM); its shared memory is static (h double-buffered, 10–34 KB).
//! Layers beyond those limits run `Path::Cluster`. Its rows per cluster
//! are the fewest for which every cluster has its SMs to itself, one CTA
//! per SM (`reg_cluster_rows_for`), else the fewest for which every
//! cluster is resident: two CTAs of 256 threads fit on an SM by
//! registers, and a cluster that shares its SMs takes longer per step than
//! one with more rows that does not (H100, d2l shape: 5 rows, 7 clusters,
//! 2.43 µs per step against 2.64 for 3 rows, 11 clusters; 4 rows, 8
//! clusters, 2.92). GRU reset-before takes
//! two exchanges per step (r ⊙ h_{t-1} under its own mbarrier, then the n
//! rows against it); for that cell the kernel is chosen only when forced,
//! until a GPU has timed it against `Path::Cluster`.
//!
//! `Path::ClusterMma` (ptx/src/cluster_mma.cuh) is the same clusters with
//! the product on tensor cores: CTA r's `G` gate-row blocks of `U =
//! ceil(H/16)` ≤ 16 units are `G` m-tiles, the cluster's batch rows the
//! mma's n, so it takes at most `MMA_CLUSTER_ROWS` = 8 rows per cluster;
//! W_hh stays in registers as A fragments (f32 as 3×TF32 hi/lo parts, f16
//! as is). Same H and static shared memory (21–38 KB) as `ClusterRegs`,
//! one CTA per SM, and every cell: GRU reset-before in two products per
//! step (r and z against h_{t-1}, n against r ⊙ h_{t-1}). It is chosen only
//! when forced until a GPU has timed it against `ClusterRegs` (and, for
//! reset-before, `Cluster`).
//!
//! Generation keeps W_hh rows and output-layer rows (`VR ≤ 16` per block) in
//! shared memory the same way; where they do not fit it falls back to
//! per-step launches queued back to back (the host still waits once). On
//! sm_90 the cluster version (ptx/src/generate_cluster.cu) runs first where
//! it fits: CTA r also holds output rows `[r·VR, r·VR+VR)`, `VR =
//! ceil(V/CS)`, and every CTA a copy of the logits (`4·BC·V` bytes)
//! (`gen_cluster_smem`). `GenPath::ClusterRegs`
//! (ptx/src/generate_cluster_regs.cu) is the same with the cell step of
//! `Path::ClusterRegs` (W_hh in registers; its limits, GRU reset-before
//! included, and every CTA of 16 owning a unit); only its output-layer
//! rows, logits and partial sums are in dynamic shared memory
//! (`gen_rcluster_smem`). It is chosen only when forced until it has run on
//! a GPU.

use recur_core::CellKind;

use crate::gpu::DeviceLimits;

/// Storage precision of weights and hidden states on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Everything f32.
    F32,
    /// Weights and hidden states `h` stored as f16; products accumulated,
    /// gate pre-activations, the LSTM cell state, logits and the loss in f32.
    F16,
}

impl Precision {
    /// Bytes of one stored weight or activation.
    pub const fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }
}

/// Which kernels run a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// One cooperative launch for all steps, CUDA cores.
    PersistentSimt,
    /// One cooperative launch for all steps, tensor cores (f16).
    PersistentMma,
    /// [`Path::PersistentMma`] with h exchanged in flagged words instead of
    /// a grid barrier per step (even H; not chosen automatically yet).
    PersistentMmaFlagged,
    /// [`Path::PersistentMma`] with each block's flag (released after its
    /// h_t, acquired by every block before the next step) instead of a
    /// grid barrier per step (not chosen automatically yet).
    PersistentMmaBlockFlags,
    /// One launch per step (two for GRU reset-before).
    PerStep,
    /// One launch of thread-block clusters (sm_90), CUDA cores.
    Cluster,
    /// One launch of clusters of 16 CTAs holding W_hh in registers (sm_90,
    /// H ≤ 256), CUDA cores. GRU reset-before (two exchanges per step):
    /// forced only until a GPU has timed it against [`Path::Cluster`].
    ClusterRegs,
    /// [`Path::ClusterRegs`] with the product on tensor cores (W_hh as mma
    /// fragments in registers, 3×TF32 for f32; at most 8 batch rows per
    /// cluster, one CTA per SM), every cell. Forced only: not chosen
    /// automatically until a GPU has timed it against `ClusterRegs`.
    ClusterMma,
}

/// A chosen launch configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The kernels.
    pub path: Path,
    /// Hidden units per block.
    pub units: usize,
    /// Blocks.
    pub blocks: usize,
    /// Batch columns per chunk (CUDA-core kernels).
    pub ldb: usize,
    /// n-tiles per chunk (tensor-core kernel).
    pub ntc: usize,
    /// Dynamic shared memory per block, bytes.
    pub smem: usize,
    /// CTAs per cluster (`Path::Cluster`, `Path::ClusterRegs`; `ldb` is then
    /// the batch rows per cluster), else 0.
    pub cluster: usize,
}

/// The caller's say in the plan (tests and benches; `Default` = automatic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Force a path (it must be possible for the shapes).
    pub path: Option<Path>,
    /// Force the hidden units per block (not `Path::Cluster`: there `ceil(H/CS)`).
    pub units: Option<usize>,
    /// `Path::Cluster`: force the cluster size (8 or 16; `Path::ClusterRegs`
    /// runs 16 only).
    pub cluster: Option<usize>,
    /// `Path::Cluster`, `Path::ClusterRegs`: force the batch rows per cluster.
    pub rows: Option<usize>,
}

/// Most gate rows per block of the CUDA-core kernels (RMAX in ptx/src).
pub const RMAX: usize = 16;
const NWARPS: usize = 8;
/// Most (m-tile, n-tile) pairs a tensor-core persistent block accumulates
/// at once (ptx/src/mma_persist.cuh).
pub(crate) const MMA_TILES: usize = 8;

/// The occupancy oracle: blocks of `kernel` per SM with `smem` bytes, and
/// co-resident clusters of `cluster` blocks of a cluster kernel.
pub(crate) trait Occupancy {
    fn blocks_per_sm(&self, kernel: &'static str, smem: usize) -> usize;
    fn max_clusters(&self, kernel: &'static str, cluster: usize, smem: usize) -> usize;
}

fn round16(bytes: usize) -> usize {
    bytes.div_ceil(16) * 16
}

/// Batch columns per chunk: a power of two covering B, in 4..=64.
pub(crate) fn batch_columns(batch: usize) -> usize {
    batch.next_power_of_two().clamp(4, 64)
}

/// Shared memory of `simt_step` (hT with rows of ldb + 1, red, pre), bytes.
pub(crate) fn simt_step_smem(hidden: usize, ldb: usize) -> usize {
    let ht = (hidden * (ldb + 1)).div_ceil(4) * 4;
    4 * (ht + ldb * (NWARPS * RMAX + RMAX))
}

/// Shared memory of the persistent CUDA-core kernel, bytes.
pub(crate) fn simt_persistent_smem(
    cell: CellKind,
    hidden: usize,
    units: usize,
    ldb: usize,
    p: Precision,
) -> usize {
    round16(cell.gates() * units * hidden * p.bytes()) + simt_step_smem(hidden, ldb)
}

/// `(MT, NTC, bytes)` of the tensor-core kernel.
pub(crate) fn mma_smem(
    cell: CellKind,
    hidden: usize,
    batch: usize,
    units: usize,
) -> (usize, usize, usize) {
    let mt = (cell.gates() * units).div_ceil(16);
    let kt = hidden.div_ceil(16);
    let nt = batch.div_ceil(8);
    let ntc = nt.min(MMA_TILES / mt.max(1)).max(1);
    let ldh = kt * 16 + 8;
    let bytes =
        mt * kt * 512 + nt * 8 * ldh * 2 + NWARPS * MMA_TILES * 32 * 4 * 4 + mt * 16 * ntc * 8 * 4;
    (mt, ntc, bytes)
}

/// Shared memory of the tensor-core training backward
/// (ptx/src/train_mma.cu, tr_mma_bwd), bytes: the transposed W_hh
/// fragments (ceil(H / 16) × ceil(G·U / 16) tiles of 512 bytes), the hi
/// and lo gate gradients (ceil(B / 8)·8 × LDK halves each, LDK = the gate
/// rows rounded to 16, + 8), the reduction's NTHREADS·4 floats and the
/// warps' maxima.
pub(crate) fn mma_bwd_smem(cell: CellKind, hidden: usize, batch: usize, units: usize) -> usize {
    let mt = hidden.div_ceil(16);
    let kt = (cell.gates() * units).div_ceil(16);
    let nt = batch.div_ceil(8);
    mt * kt * 512 + 2 * nt * 8 * (kt * 16 + 8) * 2 + NTHREADS * 4 * 4 + NWARPS * 4
}

/// Shared memory of the persistent generation kernel, bytes.
pub(crate) fn generate_smem(
    cell: CellKind,
    hidden: usize,
    units: usize,
    vrows: usize,
    batch: usize,
    ldb: usize,
    p: Precision,
) -> usize {
    round16(cell.gates() * units * hidden * p.bytes())
        + round16(vrows * hidden * p.bytes())
        + simt_step_smem(hidden, ldb)
        + 4 * batch
}

/// `cl_ldw` of ptx/src/cluster_step.cuh: a weight row's stride in shared
/// memory (elements), an odd number of 4-element quads.
fn cl_ldw(k: usize) -> usize {
    4 * (k.div_ceil(4) | 1)
}

/// `cl_rows_bytes`: a weight slice of `rows` rows of length `k`.
fn cl_rows_bytes(rows: usize, k: usize, p: Precision) -> usize {
    round16(rows * cl_ldw(k) * p.bytes())
}

/// Batch columns of one product pass of the cluster kernels (CB).
const CB: usize = 8;
/// Threads per block.
const NTHREADS: usize = 256;

/// Shared memory of `rec_cluster*` (layout in ptx/src/recurrent_cluster.cu),
/// bytes: `units` hidden units per CTA, `rows` batch rows per cluster.
pub(crate) fn cluster_smem(
    cell: CellKind,
    hidden: usize,
    units: usize,
    rows: usize,
    p: Precision,
) -> usize {
    let g = cell.gates();
    let ldh = hidden.div_ceil(4) * 4;
    let nq = hidden.div_ceil(4);
    let rh = if cell == CellKind::GruResetBefore {
        rows * ldh
    } else {
        0
    };
    let floats = 2 * rows * ldh
        + rh
        + NTHREADS.min(nq * units) * g * CB
        + rows * units * g
        + rows * units
        + 2 * g * units;
    cl_rows_bytes(g * units, hidden, p) + 4 * floats
}

/// Shared memory of `gen_cluster*` (layout in ptx/src/generate_cluster.cu),
/// bytes: `vrows` output rows per CTA.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gen_cluster_smem(
    cell: CellKind,
    hidden: usize,
    vocab: usize,
    units: usize,
    vrows: usize,
    rows: usize,
    p: Precision,
) -> usize {
    let g = cell.gates();
    let ldh = hidden.div_ceil(4) * 4;
    let nq = hidden.div_ceil(4);
    let rh = if cell == CellKind::GruResetBefore {
        rows * ldh
    } else {
        0
    };
    let red = (NTHREADS.min(nq * units) * g).max(NTHREADS.min(nq * vrows)) * CB;
    let floats = 2 * rows * ldh
        + rh
        + red
        + rows * vocab
        + rows * units
        + 2 * g * units
        + vrows
        + rows
        + rows * SPLIT_PAIR_WORDS;
    cl_rows_bytes(g * units, hidden, p) + cl_rows_bytes(vrows, hidden, p) + 4 * floats
}

/// Words per batch row of the split greedy draw's pairs
/// (ptx/src/gen_cluster_draw.cuh): {value, index} from each of up to 16 CTAs.
const SPLIT_PAIR_WORDS: usize = 2 * 16;

/// Dynamic shared memory of `gen_rcluster16_*` (layout in
/// ptx/src/generate_cluster_regs.cu: W_d slice, partial sums, logits, b_d,
/// tokens, pairs), bytes; W_hh is in registers and h in static shared memory.
pub(crate) fn gen_rcluster_smem(
    hidden: usize,
    vocab: usize,
    vrows: usize,
    rows: usize,
    p: Precision,
) -> usize {
    let nq = hidden.div_ceil(4);
    let floats =
        NTHREADS.min(nq * vrows) * CB + rows * vocab + vrows + rows + rows * SPLIT_PAIR_WORDS;
    cl_rows_bytes(vrows, hidden, p) + 4 * floats
}

/// Kernel names by cell.
pub(crate) fn cell_tag(cell: CellKind) -> usize {
    match cell {
        CellKind::RnnTanh => 0,
        CellKind::RnnRelu => 1,
        CellKind::GruResetBefore => 2,
        CellKind::GruResetAfter => 3,
        CellKind::Lstm => 4,
    }
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

const PERSIST_F32: [&str; 5] = names!("rec_persist_f32_");
const PERSIST_F16: [&str; 5] = names!("rec_persist_f16_");
const STEP_F32: [&str; 5] = names!("rec_step_f32_");
const STEP_F16: [&str; 5] = names!("rec_step_f16_");
const MMA_F16: [&str; 5] = [
    "rec_mma_f16_rnn_tanh",
    "rec_mma_f16_rnn_relu",
    "",
    "rec_mma_f16_gru_after",
    "rec_mma_f16_lstm",
];
const MMA_FLAGGED_F16: [&str; 5] = [
    "rec_mma_flagged_f16_rnn_tanh",
    "rec_mma_flagged_f16_rnn_relu",
    "",
    "rec_mma_flagged_f16_gru_after",
    "rec_mma_flagged_f16_lstm",
];
const GEN_F32: [&str; 5] = names!("gen_persist_f32_");
const GEN_F16: [&str; 5] = names!("gen_persist_f16_");
/// `[cluster 8, cluster 16][f32, f16]`.
const CLUSTER: [[[&str; 5]; 2]; 2] = [
    [names!("rec_cluster8_f32_"), names!("rec_cluster8_f16_")],
    [names!("rec_cluster16_f32_"), names!("rec_cluster16_f16_")],
];
const GEN_CLUSTER: [[[&str; 5]; 2]; 2] = [
    [names!("gen_cluster8_f32_"), names!("gen_cluster8_f16_")],
    [names!("gen_cluster16_f32_"), names!("gen_cluster16_f16_")],
];

/// `[f32, f16]`, every cell (GRU reset-before only when forced, until a
/// GPU has timed it: `plan_sequence`).
const REG_CLUSTER: [[&str; 5]; 2] = [names!("rec_rcluster16_f32_"), names!("rec_rcluster16_f16_")];
/// `[f32, f16]`, every cell.
const MMA_CLUSTER: [[&str; 5]; 2] = [names!("rec_mcluster16_f32_"), names!("rec_mcluster16_f16_")];
/// Most batch rows per cluster of `Path::ClusterMma` (MC_ROWS: the mma's n).
pub const MMA_CLUSTER_ROWS: usize = 8;
/// `[rows per cluster: up to reg_cluster_rows, one][f32, f16]`: the same
/// kernel compiled for its most rows and for one (fewer partial sums per
/// lane, every lane on an item: ptx/src/generate_cluster_regs.cu).
const GEN_REG_CLUSTER: [[[&str; 5]; 2]; 2] = [
    [names!("gen_rcluster16_f32_"), names!("gen_rcluster16_f16_")],
    [
        names!("gen_rcluster16b1_f32_"),
        names!("gen_rcluster16b1_f16_"),
    ],
];
/// Largest H of the register cluster kernels (RC_K: 32 lanes × 8 k).
pub const REG_CLUSTER_MAX_HIDDEN: usize = 256;
/// CTAs per cluster of the register cluster kernels (RC_CS).
const REG_CLUSTER_SIZE: usize = 16;

/// Whether every CTA of a cluster of `cluster` CTAs owns at least one of
/// `hidden` units when each owns `ceil(hidden/cluster)`. The generation and
/// training cluster kernels need it: their exchanges are ordered by every
/// CTA sending every one (ptx/src/generate_cluster.cu, train_cluster.cu).
pub fn every_cta_owns_a_unit(hidden: usize, cluster: usize) -> bool {
    hidden > 0 && hidden.div_ceil(hidden.div_ceil(cluster)) == cluster
}

/// Most batch rows per cluster of the register cluster kernels (RcRows):
/// each lane holds 2 units × G gates × rows ≤ 32 partial sums.
pub fn reg_cluster_rows(cell: CellKind) -> usize {
    32 / (2 * cell.gates())
}

fn cluster_index(cluster: usize, p: Precision) -> (usize, usize) {
    (usize::from(cluster == 16), usize::from(p == Precision::F16))
}

/// The cluster kernel of size `cluster` (8 or 16).
pub(crate) fn cluster_kernel(cluster: usize, cell: CellKind, p: Precision) -> &'static str {
    let (c, w) = cluster_index(cluster, p);
    CLUSTER[c][w][cell_tag(cell)]
}

/// The cluster generation kernel of size `cluster` (8 or 16).
pub(crate) fn gen_cluster_kernel(cluster: usize, cell: CellKind, p: Precision) -> &'static str {
    let (c, w) = cluster_index(cluster, p);
    GEN_CLUSTER[c][w][cell_tag(cell)]
}

/// The register cluster generation kernel for `rows` batch rows per
/// cluster: the one compiled for a single row where that is all it runs.
pub(crate) fn gen_reg_cluster_kernel(cell: CellKind, p: Precision, rows: usize) -> &'static str {
    GEN_REG_CLUSTER[usize::from(rows == 1)][usize::from(p == Precision::F16)][cell_tag(cell)]
}

/// The kernel of `path` for `cell` at precision `p`.
pub(crate) fn kernel_name(path: Path, cell: CellKind, p: Precision) -> &'static str {
    let i = cell_tag(cell);
    match (path, p) {
        (Path::PersistentSimt, Precision::F32) => PERSIST_F32[i],
        (Path::PersistentSimt, Precision::F16) => PERSIST_F16[i],
        (Path::PerStep, Precision::F32) => STEP_F32[i],
        (Path::PerStep, Precision::F16) => STEP_F16[i],
        (Path::PersistentMma | Path::PersistentMmaBlockFlags, Precision::F16) => MMA_F16[i],
        (Path::PersistentMmaFlagged, Precision::F16) => MMA_FLAGGED_F16[i],
        // The tensor-core kernels take f16 storage only.
        (
            Path::PersistentMma | Path::PersistentMmaFlagged | Path::PersistentMmaBlockFlags,
            Precision::F32,
        ) => "",
        // The 16-CTA name; the plan's cluster size picks (cluster_kernel).
        (Path::Cluster, _) => cluster_kernel(16, cell, p),
        (Path::ClusterRegs, _) => REG_CLUSTER[usize::from(p == Precision::F16)][i],
        (Path::ClusterMma, _) => MMA_CLUSTER[usize::from(p == Precision::F16)][i],
    }
}

/// The persistent generation kernel.
pub(crate) fn generate_kernel(cell: CellKind, p: Precision) -> &'static str {
    match p {
        Precision::F32 => GEN_F32[cell_tag(cell)],
        Precision::F16 => GEN_F16[cell_tag(cell)],
    }
}

/// Picks the fastest feasible way to run a (B, H) layer of `cell`.
pub(crate) fn plan_sequence(
    limits: &DeviceLimits,
    occ: &impl Occupancy,
    cell: CellKind,
    hidden: usize,
    batch: usize,
    p: Precision,
    opts: PlanOptions,
) -> Option<Plan> {
    let mma_ok = p == Precision::F16 && cell != CellKind::GruResetBefore;
    // Flagged words hold two units (the kernel takes even H and units).
    if opts.path == Some(Path::PersistentMmaFlagged)
        && (!hidden.is_multiple_of(2) || opts.units.is_some_and(|u| !u.is_multiple_of(2)))
    {
        return None;
    }
    let forced;
    let order: &[Path] = match opts.path {
        Some(path) => {
            forced = [path];
            &forced
        }
        None if mma_ok => &[
            Path::ClusterRegs,
            Path::Cluster,
            Path::PersistentMma,
            Path::PersistentSimt,
            Path::PerStep,
        ],
        // GRU reset-before's register kernel (two exchanges per step) has
        // not run on a GPU yet: forced only.
        None if cell == CellKind::GruResetBefore => {
            &[Path::Cluster, Path::PersistentSimt, Path::PerStep]
        }
        None => &[
            Path::ClusterRegs,
            Path::Cluster,
            Path::PersistentSimt,
            Path::PerStep,
        ],
    };
    order.iter().find_map(|&path| match path {
        Path::ClusterRegs | Path::ClusterMma => {
            plan_cluster_regs(limits, occ, cell, hidden, batch, p, path, opts)
        }
        Path::Cluster => plan_cluster(limits, occ, cell, hidden, batch, p, opts),
        _ => plan_path(limits, occ, cell, hidden, batch, p, path, opts.units),
    })
}

/// Cluster sizes to try: the forced one, else 16 and 8 as the device allows.
fn cluster_sizes(limits: &DeviceLimits, forced: Option<usize>) -> Vec<usize> {
    let sizes: Vec<usize> = match forced {
        Some(c) => vec![c],
        None => vec![16, 8],
    };
    sizes
        .into_iter()
        .filter(|&c| (c == 8 || c == 16) && c <= limits.cluster)
        .collect()
}

/// Batch rows per cluster for `batch` rows: the fewest for which all clusters
/// are resident at once (`active(smem)` clusters fit), or the forced number;
/// `smem_of(rows)` must fit the block limit. Returns (rows, smem).
fn cluster_rows(
    limits: &DeviceLimits,
    batch: usize,
    forced: Option<usize>,
    smem_of: impl Fn(usize) -> usize,
    active: impl Fn(usize) -> usize,
) -> Option<(usize, usize)> {
    let candidates: Vec<usize> = match forced {
        Some(r) if r >= 1 => vec![r.min(batch)],
        Some(_) => vec![],
        None => (1..=batch).collect(),
    };
    let mut largest = None;
    for rows in candidates {
        let smem = smem_of(rows);
        if smem > limits.max_smem_per_block {
            break; // grows with rows
        }
        let n = active(smem);
        if n == 0 {
            break;
        }
        largest = Some((rows, smem));
        if batch.div_ceil(rows) <= n {
            return largest;
        }
    }
    // Not all resident at once (clusters are independent: they run in waves).
    largest
}

/// Dynamic shared memory that keeps a second CTA off an SM: more than half
/// of what a block may have (sm_90: 227 KB a block, 228 KB an SM, 1 KB of
/// it reserved per block). The planners query cluster occupancy with it to
/// count the clusters that fit one CTA per SM; no launch asks for it.
pub(crate) fn one_cta_per_sm_smem(limits: &DeviceLimits) -> usize {
    limits.max_smem_per_block / 2 + 1
}

/// Batch rows per cluster of a register cluster kernel (static shared
/// memory, at most `most` rows) for `batch` rows, where `active` clusters
/// fit at once and `alone` of them fit one CTA per SM: the fewest rows for
/// which every cluster runs alone on its SMs, else the fewest for which
/// every cluster is resident; `None` where neither is within `most`
/// (clusters in waves would double the time).
///
/// Why alone first: two of these CTAs fit on an SM (registers), and then a
/// cluster's CTAs share the SMs' issue slots; in every H100 sweep of the
/// d2l forward (engine_h100_run6, engine_train_h100_run7) 5 rows on 7
/// clusters beat 3 rows on 11 (2.43 against 2.64 µs per step), while 4 rows
/// on 8 clusters, one more than fit alone, was the slowest of the three.
pub(crate) fn reg_cluster_rows_for(
    batch: usize,
    most: usize,
    active: usize,
    alone: usize,
) -> Option<usize> {
    let fewest = |clusters: usize| (1..=most.min(batch)).find(|r| batch.div_ceil(*r) <= clusters);
    fewest(alone).or_else(|| fewest(active))
}

/// The cluster configuration of a (B, H) layer: clusters of 16 where they
/// fit (measured faster than 8 at equal rows per cluster on an H100), else 8.
fn plan_cluster(
    limits: &DeviceLimits,
    occ: &impl Occupancy,
    cell: CellKind,
    hidden: usize,
    batch: usize,
    p: Precision,
    opts: PlanOptions,
) -> Option<Plan> {
    for cs in cluster_sizes(limits, opts.cluster) {
        let units = hidden.div_ceil(cs);
        if units > NTHREADS {
            continue;
        }
        let kernel = cluster_kernel(cs, cell, p);
        let Some((rows, smem)) = cluster_rows(
            limits,
            batch,
            opts.rows,
            |rows| cluster_smem(cell, hidden, units, rows, p),
            |smem| occ.max_clusters(kernel, cs, smem),
        ) else {
            continue;
        };
        return Some(Plan {
            path: Path::Cluster,
            units,
            blocks: batch.div_ceil(rows) * cs,
            ldb: rows,
            ntc: 0,
            smem,
            cluster: cs,
        });
    }
    None
}

/// The register cluster configuration of a (B, H) layer for `path`
/// (`ClusterRegs` or `ClusterMma`), or `None` where the kernels do not take
/// it (limits in the module docs).
#[allow(clippy::too_many_arguments)]
fn plan_cluster_regs(
    limits: &DeviceLimits,
    occ: &impl Occupancy,
    cell: CellKind,
    hidden: usize,
    batch: usize,
    p: Precision,
    path: Path,
    opts: PlanOptions,
) -> Option<Plan> {
    let kernel = kernel_name(path, cell, p);
    let cs = REG_CLUSTER_SIZE;
    if kernel.is_empty()
        || hidden > REG_CLUSTER_MAX_HIDDEN
        || limits.cluster < cs
        || opts.cluster.is_some_and(|c| c != cs)
    {
        return None;
    }
    let most = match path {
        Path::ClusterMma => MMA_CLUSTER_ROWS,
        _ => reg_cluster_rows(cell),
    };
    let rows = match opts.rows {
        Some(r) if r > most => return None,
        // The forced count as given, where a cluster fits at all.
        Some(r) if r >= 1 && occ.max_clusters(kernel, cs, 0) > 0 => r.min(batch),
        Some(_) => return None,
        // Clusters in waves would double the time: there `Path::Cluster`,
        // which takes more rows per cluster, runs instead.
        None => reg_cluster_rows_for(
            batch,
            most,
            occ.max_clusters(kernel, cs, 0),
            occ.max_clusters(kernel, cs, one_cta_per_sm_smem(limits)),
        )?,
    };
    Some(Plan {
        path,
        units: hidden.div_ceil(cs),
        blocks: batch.div_ceil(rows) * cs,
        ldb: rows,
        ntc: 0,
        smem: 0,
        cluster: cs,
    })
}

#[allow(clippy::too_many_arguments)]
fn plan_path(
    limits: &DeviceLimits,
    occ: &impl Occupancy,
    cell: CellKind,
    hidden: usize,
    batch: usize,
    p: Precision,
    path: Path,
    units: Option<usize>,
) -> Option<Plan> {
    let g = cell.gates();
    let kernel = kernel_name(path, cell, p);
    if kernel.is_empty() || (path != Path::PerStep && !limits.cooperative) {
        return None;
    }
    let candidates: Vec<usize> = match (units, path) {
        (Some(u), _) => vec![u],
        (
            None,
            Path::PersistentMma | Path::PersistentMmaFlagged | Path::PersistentMmaBlockFlags,
        ) => vec![4, 8, 16, 32],
        (None, _) => (1..=RMAX / g).collect(),
    };
    let mut fallback = None;
    for u in candidates {
        let blocks = hidden.div_ceil(u);
        let plan = match path {
            Path::PersistentMma | Path::PersistentMmaFlagged | Path::PersistentMmaBlockFlags => {
                let (mt, ntc, smem) = mma_smem(cell, hidden, batch, u);
                if mt > MMA_TILES {
                    continue;
                }
                Plan {
                    path,
                    units: u,
                    blocks,
                    ldb: 0,
                    ntc,
                    smem,
                    cluster: 0,
                }
            }
            Path::Cluster | Path::ClusterRegs | Path::ClusterMma => return None,
            Path::PersistentSimt | Path::PerStep => {
                if g * u > RMAX {
                    continue;
                }
                // Largest chunk that fits.
                let mut ldb = batch_columns(batch);
                let smem_of = |ldb| match path {
                    Path::PerStep => simt_step_smem(hidden, ldb),
                    _ => simt_persistent_smem(cell, hidden, u, ldb, p),
                };
                while ldb > 4 && smem_of(ldb) > limits.max_smem_per_block {
                    ldb /= 2;
                }
                Plan {
                    path,
                    units: u,
                    blocks,
                    ldb,
                    ntc: 0,
                    smem: smem_of(ldb),
                    cluster: 0,
                }
            }
        };
        if plan.smem > limits.max_smem_per_block {
            continue;
        }
        if path == Path::PerStep {
            // No residency needed: about one block per SM, more for small H.
            if blocks <= limits.sm_count || units.is_some() {
                return Some(plan);
            }
            fallback = Some(plan);
            continue;
        }
        let capacity = occ.blocks_per_sm(kernel, plan.smem) * limits.sm_count;
        if blocks > capacity {
            continue;
        }
        if blocks <= limits.sm_count || units.is_some() {
            return Some(plan);
        }
        fallback = fallback.or(Some(plan));
    }
    fallback
}

/// A persistent generation configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenPlan {
    /// Blocks.
    pub blocks: usize,
    /// Hidden units per block.
    pub units: usize,
    /// Output-layer rows per block.
    pub vrows: usize,
    /// Batch columns per chunk (cluster kernels: batch rows per cluster).
    pub ldb: usize,
    /// Dynamic shared memory per block, bytes.
    pub smem: usize,
    /// CTAs per cluster (cluster kernels), else 0.
    pub cluster: usize,
}

/// The cluster generation configuration (sm_90), or `None`: the forced
/// cluster size, else 16 where it fits (fewer rows per CTA), else 8; only
/// where every CTA owns at least one hidden unit (`ceil(H / ceil(H/CS)) =
/// CS`, e.g. H ≥ 241 or H a multiple of 16 from 16 for CS = 16).
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_generate_cluster(
    limits: &DeviceLimits,
    occ: &impl Occupancy,
    cell: CellKind,
    hidden: usize,
    vocab: usize,
    batch: usize,
    p: Precision,
    cluster: Option<usize>,
) -> Option<GenPlan> {
    for cs in cluster_sizes(limits, cluster) {
        let units = hidden.div_ceil(cs);
        let vrows = vocab.div_ceil(cs);
        if units > NTHREADS || vrows == 0 || !every_cta_owns_a_unit(hidden, cs) {
            continue;
        }
        let kernel = gen_cluster_kernel(cs, cell, p);
        let Some((rows, smem)) = cluster_rows(
            limits,
            batch,
            None,
            |rows| gen_cluster_smem(cell, hidden, vocab, units, vrows, rows, p),
            |smem| occ.max_clusters(kernel, cs, smem),
        ) else {
            continue;
        };
        return Some(GenPlan {
            blocks: batch.div_ceil(rows) * cs,
            units,
            vrows,
            ldb: rows,
            smem,
            cluster: cs,
        });
    }
    None
}

/// The register cluster generation configuration (sm_90), or `None`: the
/// cell step of `Path::ClusterRegs` (clusters of 16, W_hh in registers,
/// H ≤ 256, at most `reg_cluster_rows` batch rows per cluster; GRU
/// reset-before too, in two phases) with the output layer of the cluster
/// generation kernel; every CTA must own a hidden unit.
pub(crate) fn plan_generate_cluster_regs(
    limits: &DeviceLimits,
    occ: &impl Occupancy,
    cell: CellKind,
    hidden: usize,
    vocab: usize,
    batch: usize,
    p: Precision,
) -> Option<GenPlan> {
    let cs = REG_CLUSTER_SIZE;
    if hidden > REG_CLUSTER_MAX_HIDDEN || limits.cluster < cs || !every_cta_owns_a_unit(hidden, cs)
    {
        return None;
    }
    let vrows = vocab.div_ceil(cs);
    let most = reg_cluster_rows(cell);
    // Residency by the kernel of either row form that fits fewer clusters:
    // the rows are chosen before the form is known.
    let (most_rows, one_row) = (
        gen_reg_cluster_kernel(cell, p, most),
        gen_reg_cluster_kernel(cell, p, 1),
    );
    let (rows, smem) = cluster_rows(
        limits,
        batch,
        None,
        |rows| {
            if rows > most {
                usize::MAX
            } else {
                gen_rcluster_smem(hidden, vocab, vrows, rows, p)
            }
        },
        |smem| {
            occ.max_clusters(most_rows, cs, smem)
                .min(occ.max_clusters(one_row, cs, smem))
        },
    )?;
    Some(GenPlan {
        blocks: batch.div_ceil(rows) * cs,
        units: hidden.div_ceil(cs),
        vrows,
        ldb: rows,
        smem,
        cluster: cs,
    })
}

/// The persistent generation configuration, or `None` (per-step fallback).
pub(crate) fn plan_generate(
    limits: &DeviceLimits,
    occ: &impl Occupancy,
    cell: CellKind,
    hidden: usize,
    vocab: usize,
    batch: usize,
    p: Precision,
) -> Option<GenPlan> {
    if !limits.cooperative {
        return None;
    }
    let g = cell.gates();
    let min_blocks = hidden.div_ceil(RMAX / g).max(vocab.div_ceil(RMAX)).max(1);
    let ldb = batch_columns(batch);
    let kernel = generate_kernel(cell, p);
    let plan_for = |blocks: usize| {
        let units = hidden.div_ceil(blocks);
        let vrows = vocab.div_ceil(blocks);
        let smem = generate_smem(cell, hidden, units, vrows, batch, ldb, p);
        GenPlan {
            blocks,
            units,
            vrows,
            ldb,
            smem,
            cluster: 0,
        }
    };
    let mut blocks = limits.sm_count.max(min_blocks);
    while blocks >= min_blocks {
        let plan = plan_for(blocks);
        if g * plan.units <= RMAX && plan.vrows <= RMAX && plan.smem <= limits.max_smem_per_block {
            let capacity = occ.blocks_per_sm(kernel, plan.smem) * limits.sm_count;
            if blocks <= capacity {
                return Some(plan);
            }
        }
        blocks -= 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device like an H100: 132 SMs, 227 KiB per block, 228 KiB per SM,
    /// at most `regs_blocks` blocks per SM by registers.
    struct FakeSm {
        regs_blocks: usize,
    }
    impl Occupancy for FakeSm {
        fn blocks_per_sm(&self, _: &'static str, smem: usize) -> usize {
            (228 * 1024 / (smem + 1024)).min(self.regs_blocks)
        }
        /// An H100's GPCs: 7 of 16+ SMs take a cluster of 16 for each CTA
        /// an SM holds, and 16 clusters of 8 fit per CTA an SM holds.
        fn max_clusters(&self, kernel: &'static str, cluster: usize, smem: usize) -> usize {
            let per_sm = self.blocks_per_sm(kernel, smem);
            if cluster == 16 {
                7 * per_sm
            } else {
                16 * per_sm
            }
        }
    }
    const H100: DeviceLimits = DeviceLimits {
        sm_count: 132,
        max_smem_per_block: 227 * 1024,
        cooperative: true,
        cluster: 16,
    };
    /// The same without thread-block clusters (as before sm_90).
    const NO_CLUSTER: DeviceLimits = DeviceLimits { cluster: 0, ..H100 };

    #[test]
    fn d2l_shape_runs_persistent_one_block_per_sm() {
        let occ = FakeSm { regs_blocks: 1 };
        let plan = plan_sequence(
            &NO_CLUSTER,
            &occ,
            CellKind::GruResetAfter,
            256,
            32,
            Precision::F32,
            PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(plan.path, Path::PersistentSimt);
        assert_eq!((plan.units, plan.blocks, plan.ldb), (2, 128, 32));
        assert_eq!(plan.smem, 3 * 2 * 256 * 4 + 4 * (256 * 33 + 32 * 144));
        let f16 = plan_sequence(
            &NO_CLUSTER,
            &occ,
            CellKind::GruResetAfter,
            256,
            32,
            Precision::F16,
            PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(f16.path, Path::PersistentMma);
        assert_eq!((f16.units, f16.blocks), (4, 64));
        let before = plan_sequence(
            &NO_CLUSTER,
            &occ,
            CellKind::GruResetBefore,
            256,
            32,
            Precision::F16,
            PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(before.path, Path::PersistentSimt);
    }

    #[test]
    fn large_lstm_f16_uses_tensor_cores_and_large_f32_falls_back() {
        let occ = FakeSm { regs_blocks: 2 };
        let plan = plan_sequence(
            &NO_CLUSTER,
            &occ,
            CellKind::Lstm,
            768,
            16,
            Precision::F16,
            PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(plan.path, Path::PersistentMma);
        assert_eq!((plan.units, plan.blocks), (8, 96));
        assert!(plan.smem <= H100.max_smem_per_block);
        // 4·4096 rows of 4096 f32 do not fit in 132 SMs' shared memory.
        let big = plan_sequence(
            &NO_CLUSTER,
            &occ,
            CellKind::Lstm,
            4096,
            16,
            Precision::F32,
            PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(big.path, Path::PerStep);
        // No cooperative launch: only the per-step path.
        let no_coop = DeviceLimits {
            cooperative: false,
            ..NO_CLUSTER
        };
        let plan = plan_sequence(
            &no_coop,
            &occ,
            CellKind::RnnTanh,
            64,
            4,
            Precision::F32,
            PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(plan.path, Path::PerStep);
    }

    #[test]
    fn flagged_tensor_core_path_is_forced_only_and_takes_even_sizes() {
        let occ = FakeSm { regs_blocks: 2 };
        let flagged = PlanOptions {
            path: Some(Path::PersistentMmaFlagged),
            ..PlanOptions::default()
        };
        let plan = |cell, h, p, opts| plan_sequence(&NO_CLUSTER, &occ, cell, h, 16, p, opts);
        let lstm = plan(CellKind::Lstm, 768, Precision::F16, flagged).unwrap();
        assert_eq!(lstm.path, Path::PersistentMmaFlagged);
        // The same configuration as the barrier kernel's.
        let barrier = PlanOptions {
            path: Some(Path::PersistentMma),
            ..flagged
        };
        let same = plan(CellKind::Lstm, 768, Precision::F16, barrier).unwrap();
        assert_eq!(
            (lstm.units, lstm.blocks, lstm.ntc, lstm.smem),
            (same.units, same.blocks, same.ntc, same.smem)
        );
        // Not automatic.
        let auto = plan(CellKind::Lstm, 768, Precision::F16, PlanOptions::default()).unwrap();
        assert_eq!(auto.path, Path::PersistentMma);
        // Odd H or odd units: no word pairs; f32 and GRU reset-before: no kernel.
        assert!(plan(CellKind::Lstm, 767, Precision::F16, flagged).is_none());
        let odd_units = PlanOptions {
            units: Some(5),
            ..flagged
        };
        assert!(plan(CellKind::RnnTanh, 100, Precision::F16, odd_units).is_none());
        assert!(plan(CellKind::Lstm, 768, Precision::F32, flagged).is_none());
        assert!(plan(CellKind::Lstm, 768, Precision::F32, barrier).is_none());
        assert!(plan(CellKind::GruResetBefore, 64, Precision::F16, flagged).is_none());
    }

    #[test]
    fn block_flag_path_is_forced_only_and_takes_odd_sizes() {
        let occ = FakeSm { regs_blocks: 2 };
        let forced = |path| PlanOptions {
            path: Some(path),
            ..PlanOptions::default()
        };
        let flags = forced(Path::PersistentMmaBlockFlags);
        let plan = |cell, h, p, opts| plan_sequence(&NO_CLUSTER, &occ, cell, h, 16, p, opts);
        // The barrier kernel's configuration, at any H.
        for h in [768, 767] {
            let got = plan(CellKind::Lstm, h, Precision::F16, flags).unwrap();
            let same = plan(
                CellKind::Lstm,
                h,
                Precision::F16,
                forced(Path::PersistentMma),
            )
            .unwrap();
            assert_eq!(got.path, Path::PersistentMmaBlockFlags);
            assert_eq!(
                (got.units, got.blocks, got.ntc, got.smem),
                (same.units, same.blocks, same.ntc, same.smem)
            );
        }
        let auto = plan(CellKind::Lstm, 768, Precision::F16, PlanOptions::default()).unwrap();
        assert_eq!(auto.path, Path::PersistentMma);
        assert!(plan(CellKind::Lstm, 768, Precision::F32, flags).is_none());
        assert!(plan(CellKind::GruResetBefore, 64, Precision::F16, flags).is_none());
    }

    #[test]
    fn every_kernel_name_is_in_the_embedded_ptx() {
        let all: Vec<&str> = crate::ptx::MODULES
            .iter()
            .flat_map(|m| crate::ptx::entry_names(m.text))
            .collect();
        let paths = [
            Path::PersistentSimt,
            Path::PersistentMma,
            Path::PersistentMmaFlagged,
            Path::PersistentMmaBlockFlags,
            Path::PerStep,
            Path::Cluster,
            Path::ClusterRegs,
            Path::ClusterMma,
        ];
        for path in paths {
            for cell in CellKind::ALL {
                for p in [Precision::F32, Precision::F16] {
                    let k = kernel_name(path, cell, p);
                    assert!(k.is_empty() || all.contains(&k), "{k} ({path:?})");
                }
            }
        }
    }

    #[test]
    fn every_plan_respects_the_kernel_limits() {
        let occ = FakeSm { regs_blocks: 2 };
        for limits in [&NO_CLUSTER, &H100] {
            for cell in CellKind::ALL {
                for p in [Precision::F32, Precision::F16] {
                    for &(h, b) in &[(1, 1), (31, 3), (300, 64), (1000, 64), (5000, 7)] {
                        let plan =
                            plan_sequence(limits, &occ, cell, h, b, p, PlanOptions::default())
                                .unwrap();
                        assert!(
                            plan.smem <= H100.max_smem_per_block,
                            "{cell:?} {h} {b} {plan:?}"
                        );
                        match plan.path {
                            Path::ClusterMma => {
                                panic!("{cell:?} {h} {b}: ClusterMma is forced only")
                            }
                            Path::ClusterRegs => {
                                assert_eq!(plan.cluster, 16);
                                assert!(h <= REG_CLUSTER_MAX_HIDDEN);
                                // Reset-before's: forced only.
                                assert_ne!(cell, CellKind::GruResetBefore);
                                assert!(plan.ldb <= reg_cluster_rows(cell));
                                assert_eq!(plan.units, h.div_ceil(16));
                                assert_eq!(plan.blocks, b.div_ceil(plan.ldb) * 16);
                            }
                            Path::Cluster => {
                                assert!(limits.cluster >= plan.cluster);
                                assert_eq!(plan.units, h.div_ceil(plan.cluster));
                                assert_eq!(plan.blocks, b.div_ceil(plan.ldb) * plan.cluster);
                                assert_eq!(
                                    plan.smem,
                                    cluster_smem(cell, h, plan.units, plan.ldb, p)
                                );
                            }
                            Path::PersistentMma
                            | Path::PersistentMmaFlagged
                            | Path::PersistentMmaBlockFlags => {
                                assert_eq!(plan.blocks, h.div_ceil(plan.units));
                                assert!(p == Precision::F16 && cell != CellKind::GruResetBefore);
                                assert!(
                                    plan.ntc >= 1
                                        && (cell.gates() * plan.units).div_ceil(16) * plan.ntc <= 8
                                );
                            }
                            _ => {
                                assert_eq!(plan.blocks, h.div_ceil(plan.units));
                                assert!(cell.gates() * plan.units <= RMAX);
                                assert!(plan.ldb.is_power_of_two() && (4..=64).contains(&plan.ldb));
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn register_clusters_take_their_sms_alone_where_they_fit() {
        // The rule: alone first, else resident, else none.
        assert_eq!(reg_cluster_rows_for(32, 5, 14, 7), Some(5));
        assert_eq!(reg_cluster_rows_for(32, 4, 14, 7), Some(3));
        assert_eq!(reg_cluster_rows_for(32, 16, 14, 7), Some(5));
        assert_eq!(reg_cluster_rows_for(1, 5, 14, 7), Some(1));
        assert_eq!(reg_cluster_rows_for(14, 5, 14, 7), Some(2));
        assert_eq!(reg_cluster_rows_for(71, 5, 14, 7), None);
        // Where a CTA already has its SM alone both counts agree.
        assert_eq!(reg_cluster_rows_for(32, 5, 7, 7), Some(5));
        // The padding leaves room for a register kernel's static shared
        // memory and keeps a second CTA off a 228 KB SM.
        let pad = one_cta_per_sm_smem(&H100);
        assert!(2 * (pad + 1024) > 228 * 1024 && pad + 40 * 1024 <= H100.max_smem_per_block);

        // An H100 on which two register CTAs fit an SM: 14 clusters of 16
        // resident, 7 alone.
        let occ = FakeSm { regs_blocks: 2 };
        let plan = |cell, b, rows: Option<usize>| {
            let opts = PlanOptions {
                rows,
                ..PlanOptions::default()
            };
            plan_sequence(&H100, &occ, cell, 256, b, Precision::F32, opts)
                .map(|p| (p.path, p.ldb, p.blocks))
                .unwrap()
        };
        // The d2l shape: 5 rows on 7 clusters rather than 3 on 11.
        assert_eq!(
            plan(CellKind::GruResetAfter, 32, None),
            (Path::ClusterRegs, 5, 112)
        );
        assert_eq!(
            plan(CellKind::RnnTanh, 32, None),
            (Path::ClusterRegs, 5, 112)
        );
        // The LSTM holds 4 rows: 8 clusters do not fit alone, so the
        // fewest rows with all 11 resident.
        assert_eq!(plan(CellKind::Lstm, 32, None), (Path::ClusterRegs, 3, 176));
        // Forced rows as given; batch 1 one cluster.
        assert_eq!(
            plan(CellKind::GruResetAfter, 32, Some(3)),
            (Path::ClusterRegs, 3, 176)
        );
        assert_eq!(
            plan(CellKind::GruResetAfter, 1, None),
            (Path::ClusterRegs, 1, 16)
        );
    }

    #[test]
    fn sm90_runs_the_d2l_shape_on_clusters_and_large_layers_elsewhere() {
        let occ = FakeSm { regs_blocks: 1 };
        for p in [Precision::F32, Precision::F16] {
            let plan = plan_sequence(
                &H100,
                &occ,
                CellKind::GruResetAfter,
                256,
                32,
                p,
                PlanOptions::default(),
            )
            .unwrap();
            // Registers: 7 clusters of 16 CTAs, 5 rows each.
            assert_eq!(plan.path, Path::ClusterRegs);
            assert_eq!(
                (plan.cluster, plan.units, plan.ldb, plan.blocks, plan.smem),
                (16, 16, 5, 112, 0)
            );
            // The LSTM holds 4 rows per cluster: 8 clusters are not resident
            // at once, so the shared-memory clusters take it.
            let plan = plan_sequence(
                &H100,
                &occ,
                CellKind::Lstm,
                256,
                32,
                p,
                PlanOptions::default(),
            )
            .unwrap();
            assert_eq!(plan.path, Path::Cluster);
            assert_eq!(plan.units, 256 / plan.cluster);
            // All clusters resident at once (7 of 16 or 16 of 8 CTAs).
            let active = if plan.cluster == 16 { 7 } else { 16 };
            assert!(32usize.div_ceil(plan.ldb) <= active, "{plan:?}");
            assert!(32usize.div_ceil(plan.ldb - 1) > active, "{plan:?}");
        }
        // H > 256 is not for the register kernels; GRU reset-before's is
        // forced only.
        for (cell, h) in [
            (CellKind::GruResetBefore, 256),
            (CellKind::GruResetAfter, 257),
        ] {
            let plan = plan_sequence(
                &H100,
                &occ,
                cell,
                h,
                32,
                Precision::F32,
                PlanOptions::default(),
            )
            .unwrap();
            assert_eq!(plan.path, Path::Cluster, "{cell:?} {h}");
        }
        // The benchmark's LSTM H 768 f16 does not fit a cluster.
        let big = plan_sequence(
            &H100,
            &occ,
            CellKind::Lstm,
            768,
            16,
            Precision::F16,
            PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(big.path, Path::PersistentMma);
        // Forced size and rows.
        let opts = PlanOptions {
            path: Some(Path::Cluster),
            cluster: Some(8),
            rows: Some(3),
            ..PlanOptions::default()
        };
        let plan =
            plan_sequence(&H100, &occ, CellKind::Lstm, 100, 10, Precision::F32, opts).unwrap();
        assert_eq!(
            (plan.cluster, plan.units, plan.ldb, plan.blocks),
            (8, 13, 3, 32)
        );
        // No clusters before sm_90, nor non-portable sizes where not allowed.
        assert_eq!(
            plan_sequence(
                &NO_CLUSTER,
                &occ,
                CellKind::Lstm,
                100,
                10,
                Precision::F32,
                opts
            ),
            None
        );
        let only8 = DeviceLimits { cluster: 8, ..H100 };
        let opts16 = PlanOptions {
            cluster: Some(16),
            ..opts
        };
        assert_eq!(
            plan_sequence(
                &only8,
                &occ,
                CellKind::Lstm,
                100,
                10,
                Precision::F32,
                opts16
            ),
            None
        );
    }

    #[test]
    fn cluster_smem_matches_the_kernel_layout() {
        // d2l GRU, f32, 16 units per CTA, 8 rows: W 48 rows of 260 floats,
        // h 2·8·256, red 256·3·8, x 8·16·3, state 8·16, b_hh and b_ih 2·3·16 floats.
        let want = 48 * 260 * 4 + 4 * (2 * 8 * 256 + 256 * 3 * 8 + 8 * 16 * 3 + 8 * 16 + 96);
        assert_eq!(
            cluster_smem(CellKind::GruResetAfter, 256, 16, 8, Precision::F32),
            want
        );
        // Generation, d2l, f16, B 1: + W_d 65 rows, logits 1027, b_d 65, 1 token,
        // the split draw's 16 pairs of 2 words.
        let gen = gen_cluster_smem(
            CellKind::GruResetAfter,
            256,
            1027,
            16,
            65,
            1,
            Precision::F16,
        );
        let want = round16(48 * 260 * 2)
            + round16(65 * 260 * 2)
            + 4 * (2 * 256 + 256 * 3 * 8 + 1027 + 16 + 96 + 65 + 1 + 32);
        assert_eq!(gen, want);
    }

    #[test]
    fn generation_fits_the_d2l_model() {
        let occ = FakeSm { regs_blocks: 1 };
        let plan = plan_generate(
            &NO_CLUSTER,
            &occ,
            CellKind::GruResetAfter,
            256,
            1027,
            1,
            Precision::F32,
        )
        .unwrap();
        assert_eq!(plan.blocks, 132);
        assert_eq!((plan.units, plan.vrows, plan.ldb), (2, 8, 4));
        let cl = plan_generate_cluster(
            &H100,
            &occ,
            CellKind::GruResetAfter,
            256,
            1027,
            1,
            Precision::F16,
            None,
        )
        .unwrap();
        assert_eq!(
            (cl.cluster, cl.units, cl.vrows, cl.ldb, cl.blocks),
            (16, 16, 65, 1, 16)
        );
        assert_eq!(
            plan_generate_cluster(
                &NO_CLUSTER,
                &occ,
                CellKind::Lstm,
                64,
                100,
                1,
                Precision::F32,
                None
            ),
            None
        );
        // Every CTA owns a hidden unit: H 100 takes clusters of 8 (13 units
        // each), not 16 (7 units: 15 CTAs); H 33 takes neither.
        let gen = |h| {
            plan_generate_cluster(&H100, &occ, CellKind::Lstm, h, 90, 3, Precision::F32, None)
                .map(|p| p.cluster)
        };
        assert_eq!((gen(100), gen(33), gen(48)), (Some(8), None, Some(16)));
        assert!(every_cta_owns_a_unit(256, 16) && every_cta_owns_a_unit(241, 16));
        assert!(!every_cta_owns_a_unit(225, 16) && !every_cta_owns_a_unit(0, 8));
        // An output layer too large for the device's shared memory.
        assert_eq!(
            plan_generate(
                &NO_CLUSTER,
                &occ,
                CellKind::Lstm,
                4096,
                50_000,
                1,
                Precision::F32
            ),
            None
        );
    }

    #[test]
    fn register_generation_takes_small_layers_on_clusters_of_16() {
        let occ = FakeSm { regs_blocks: 1 };
        let plan = |limits: &DeviceLimits, cell, h, v, b| {
            plan_generate_cluster_regs(limits, &occ, cell, h, v, b, Precision::F32)
                .map(|p| (p.cluster, p.units, p.vrows, p.ldb, p.blocks))
        };
        // d2l's model at batch 1: one cluster, 16 units and 65 output rows a CTA.
        let d2l = plan(&H100, CellKind::GruResetAfter, 256, 1027, 1);
        assert_eq!(d2l, Some((16, 16, 65, 1, 16)));
        // One row a cluster takes the kernel compiled for one row.
        assert_eq!(
            gen_reg_cluster_kernel(CellKind::GruResetAfter, Precision::F32, 1),
            "gen_rcluster16b1_f32_gru_after"
        );
        assert_eq!(
            gen_reg_cluster_kernel(CellKind::Lstm, Precision::F16, 2),
            "gen_rcluster16_f16_lstm"
        );
        let smem = gen_rcluster_smem(256, 1027, 65, 1, Precision::F32);
        assert!(smem < 227 * 1024 && smem > 65 * 256 * 4, "{smem}");
        // d2l's scratch GRU (reset-before) too; not taken: H > 256, a CTA
        // without a unit, no clusters.
        assert_eq!(
            plan(&H100, CellKind::GruResetBefore, 256, 1027, 6),
            Some((16, 16, 65, 1, 96))
        );
        assert_eq!(plan(&H100, CellKind::Lstm, 300, 100, 1), None);
        assert_eq!(plan(&H100, CellKind::Lstm, 225, 100, 1), None);
        assert_eq!(plan(&NO_CLUSTER, CellKind::RnnTanh, 256, 100, 1), None);
        // The fewest rows a cluster for which all clusters are resident (7
        // clusters of 16 on this device), within the kernel's rows.
        assert_eq!(
            plan(&H100, CellKind::GruResetAfter, 48, 70, 12),
            Some((16, 3, 5, 2, 96))
        );
        assert_eq!(
            plan(&H100, CellKind::Lstm, 128, 200, 9).map(|p| p.3),
            Some(2)
        );
        // More rows than 7 clusters of the kernel's 16 hold: clusters in waves.
        assert_eq!(
            plan(&H100, CellKind::RnnTanh, 64, 50, 200).map(|p| (p.3, p.4)),
            Some((16, 13 * 16))
        );
    }
}
