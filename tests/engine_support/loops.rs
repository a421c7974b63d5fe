//! The time-loop forms a training test asks of the engine's trainers
//! (language model and bare cell), and the check that they ran.

use std::io::Write as _;

use proptest::prelude::*;
use recur::core::CellKind;
use recur::engine::{
    every_cta_owns_a_unit, has_reduce_scatter_backward, persistent_mma_takes, ClusterLoops,
    DeviceCellTrainer, DeviceTrainer, ForwardSync, Gpu, Precision, TimeLoop,
    REG_CLUSTER_MAX_HIDDEN,
};

/// What a test sets and reads of a trainer's time loops.
pub trait LoopControl {
    fn gpu(&self) -> &Gpu;
    fn cell(&self) -> CellKind;
    fn hidden(&self) -> usize;
    fn batch(&self) -> usize;
    fn precision(&self) -> Precision;
    fn set_cluster(&mut self, mode: ClusterLoops);
    fn set_register_loops(&mut self, allowed: bool);
    fn set_reduce_scatter_backward(&mut self, on: bool);
    fn set_mma_forward(&mut self, on: bool);
    fn set_mma_backward(&mut self, on: bool);
    fn set_mma_units(&mut self, units: Option<usize>);
    fn set_forward_sync(&mut self, sync: ForwardSync);
    fn set_flagged_backward(&mut self, on: bool);
    fn set_persistent(&mut self, allowed: bool);
    fn time_loops(&self) -> (TimeLoop, TimeLoop);
}

macro_rules! loop_control {
    ($ty:ty, $cell:expr, $hidden:expr) => {
        impl LoopControl for $ty {
            fn gpu(&self) -> &Gpu {
                <$ty>::gpu(self)
            }
            fn cell(&self) -> CellKind {
                $cell(self)
            }
            fn hidden(&self) -> usize {
                $hidden(self)
            }
            fn batch(&self) -> usize {
                <$ty>::batch(self)
            }
            fn precision(&self) -> Precision {
                <$ty>::precision(self)
            }
            fn set_cluster(&mut self, mode: ClusterLoops) {
                <$ty>::set_cluster(self, mode)
            }
            fn set_register_loops(&mut self, allowed: bool) {
                <$ty>::set_register_loops(self, allowed)
            }
            fn set_reduce_scatter_backward(&mut self, on: bool) {
                <$ty>::set_reduce_scatter_backward(self, on)
            }
            fn set_mma_forward(&mut self, on: bool) {
                <$ty>::set_mma_forward(self, on)
            }
            fn set_mma_backward(&mut self, on: bool) {
                <$ty>::set_mma_backward(self, on)
            }
            fn set_mma_units(&mut self, units: Option<usize>) {
                <$ty>::set_mma_units(self, units)
            }
            fn set_forward_sync(&mut self, sync: ForwardSync) {
                <$ty>::set_forward_sync(self, sync)
            }
            fn set_flagged_backward(&mut self, on: bool) {
                <$ty>::set_flagged_backward(self, on)
            }
            fn set_persistent(&mut self, allowed: bool) {
                <$ty>::set_persistent(self, allowed)
            }
            fn time_loops(&self) -> (TimeLoop, TimeLoop) {
                <$ty>::time_loops(self)
            }
        }
    };
}

loop_control!(
    DeviceTrainer,
    |t: &DeviceTrainer| t.layout().cell,
    |t: &DeviceTrainer| t.layout().hidden
);
loop_control!(
    DeviceCellTrainer,
    |t: &DeviceCellTrainer| t.dims().cell,
    |t: &DeviceCellTrainer| t.dims().hidden
);

/// The time-loop form a gradient check asks of the trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loops {
    /// Thread-block clusters required (sm_90; skipped on older GPUs); the
    /// forward takes the register kernel where it fits.
    Cluster,
    /// The same with the register forward forbidden: the shared-memory
    /// cluster kernels both ways.
    ClusterShared,
    /// [`Loops::Cluster`] with the reduce-scatter backward
    /// (`TimeLoop::ClusterReduce`) for the cells that have it.
    ClusterReduce,
    /// [`Loops::Cluster`] with the forward's product on tensor cores
    /// (`TimeLoop::ClusterMma`) where it fits.
    ClusterMma,
    /// Clusters forbidden: cooperative persistent loops where they fit.
    Persistent,
    /// [`Loops::Persistent`] with the products of both directions on
    /// tensor cores (`TimeLoop::PersistentMma`: f16, every cell but GRU
    /// reset-before) where their kernels take the shape.
    PersistentMma,
    /// [`Loops::PersistentMma`] at this many hidden units per block, which
    /// both directions must take (the planner's own choice is the fewest
    /// that fit), the forward's blocks waiting for each other by `sync`,
    /// the backward's on per-block flags unless that is the grid barrier.
    PersistentMmaAt { units: usize, sync: ForwardSync },
    /// One launch per step.
    PerStep,
}

pub const LOOPS: [Loops; 6] = [
    Loops::Cluster,
    Loops::ClusterShared,
    Loops::ClusterReduce,
    Loops::ClusterMma,
    Loops::Persistent,
    Loops::PerStep,
];

/// [`LOOPS`] and [`Loops::PersistentMma`], which has an f16 kernel only:
/// the f16 checks' forms.
pub const F16_LOOPS: [Loops; 7] = [
    Loops::Cluster,
    Loops::ClusterShared,
    Loops::ClusterReduce,
    Loops::ClusterMma,
    Loops::Persistent,
    Loops::PersistentMma,
    Loops::PerStep,
];

/// Sets `t`'s time loops to `loops`; false (and a printed skip) where the
/// device has no thread-block clusters for [`Loops::Cluster`].
pub fn set_loops(t: &mut impl LoopControl, loops: Loops) -> bool {
    match loops {
        Loops::Cluster | Loops::ClusterShared | Loops::ClusterReduce | Loops::ClusterMma => {
            if t.gpu().limits().cluster == 0 {
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: {} has no thread-block clusters",
                    t.gpu().name()
                );
                return false;
            }
            let hidden = t.hidden();
            if !cluster_takes(hidden) {
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: no cluster time loop for H={hidden} (some CTA would own no hidden unit)"
                );
                return false;
            }
            t.set_cluster(ClusterLoops::Required);
            t.set_register_loops(loops != Loops::ClusterShared);
            t.set_reduce_scatter_backward(loops == Loops::ClusterReduce);
            t.set_mma_forward(loops == Loops::ClusterMma);
        }
        Loops::Persistent | Loops::PersistentMma | Loops::PersistentMmaAt { .. } => {
            t.set_cluster(ClusterLoops::Never);
            t.set_mma_forward(loops != Loops::Persistent);
            t.set_mma_backward(loops != Loops::Persistent);
            let (units, sync) = match loops {
                Loops::PersistentMmaAt { units, sync } => (Some(units), sync),
                _ => (None, ForwardSync::GridBarrier),
            };
            t.set_mma_units(units);
            t.set_forward_sync(sync);
            t.set_flagged_backward(sync != ForwardSync::GridBarrier);
        }
        Loops::PerStep => t.set_persistent(false),
    }
    true
}

/// The cluster forms, one picked per proptest case.
pub const CLUSTER_LOOPS: [Loops; 4] = [
    Loops::Cluster,
    Loops::ClusterShared,
    Loops::ClusterReduce,
    Loops::ClusterMma,
];

/// Whether the cluster time loops take a hidden size: every CTA of a
/// cluster of 16 or 8 must own a hidden unit (engine/src/train/cluster.rs).
pub fn cluster_takes(hidden: usize) -> bool {
    [16, 8].iter().any(|&cs| every_cta_owns_a_unit(hidden, cs))
}

/// Hidden sizes in 1..=300 the cluster time loops take.
pub fn cluster_hidden() -> impl Strategy<Value = usize> {
    prop::sample::select(
        (1usize..=300)
            .filter(|&h| cluster_takes(h))
            .collect::<Vec<_>>(),
    )
}

/// The forms the last forward and backward took agree with `loops`.
pub fn assert_loops(t: &impl LoopControl, loops: Loops) {
    let (f, b) = t.time_loops();
    match loops {
        Loops::Cluster | Loops::ClusterReduce | Loops::ClusterMma => {
            // The register loops at H ≤ 256: the forward for every cell, the
            // backward for the RNN cells; required up to
            // B = 32 (at most 8 clusters, resident at once on an H100),
            // allowed beyond (they then run only where all their clusters
            // are resident).
            let (cell, hidden) = (t.cell(), t.hidden());
            let fits = hidden <= REG_CLUSTER_MAX_HIDDEN;
            let rnn = matches!(cell, CellKind::RnnTanh | CellKind::RnnRelu);
            // The tensor-core forward (at most 8 rows per cluster) as the
            // register one: required up to B = 32, allowed beyond.
            let fwd_regs = if loops == Loops::ClusterMma {
                TimeLoop::ClusterMma
            } else {
                TimeLoop::ClusterRegs
            };
            let mut checks = vec![(f, fits, fwd_regs)];
            if loops == Loops::ClusterReduce && has_reduce_scatter_backward(cell) {
                assert_eq!(b, TimeLoop::ClusterReduce);
            } else {
                checks.push((b, fits && rnn, TimeLoop::ClusterRegs));
            }
            for (form, regs, expected) in checks {
                if !regs {
                    assert_eq!(form, TimeLoop::Cluster);
                } else if t.batch() <= 32 {
                    assert_eq!(form, expected);
                } else {
                    let allowed = [TimeLoop::Cluster, TimeLoop::ClusterRegs, expected];
                    assert!(allowed.contains(&form), "{form:?}");
                }
            }
        }
        Loops::ClusterShared => assert_eq!((f, b), (TimeLoop::Cluster, TimeLoop::Cluster)),
        Loops::Persistent | Loops::PersistentMma => {
            let cluster = [
                TimeLoop::Cluster,
                TimeLoop::ClusterRegs,
                TimeLoop::ClusterReduce,
                TimeLoop::ClusterMma,
            ];
            assert!(!cluster.contains(&f) && !cluster.contains(&b));
            // Where their limits and one block per SM take the shape, the
            // tensor-core kernels must have run when asked; without them,
            // each direction may still take its tensor-core kernel where the
            // CUDA-core persistent loop does not fit.
            let (cell, hidden, batch, p) = (t.cell(), t.hidden(), t.batch(), t.precision());
            let lim = t.gpu().limits();
            for (form, backward) in [(f, false), (b, true)] {
                let takes = persistent_mma_takes(cell, hidden, batch, p, &lim, backward);
                if loops == Loops::PersistentMma && takes {
                    assert_eq!(form, TimeLoop::PersistentMma);
                } else if !takes {
                    assert!(
                        matches!(form, TimeLoop::Persistent | TimeLoop::PerStep),
                        "{form:?}"
                    );
                }
            }
        }
        Loops::PersistentMmaAt { .. } => {
            let mma = TimeLoop::PersistentMma;
            assert_eq!((f, b), (mma, mma));
        }
        Loops::PerStep => assert_eq!((f, b), (TimeLoop::PerStep, TimeLoop::PerStep)),
    }
}
