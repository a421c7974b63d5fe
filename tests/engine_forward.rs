//! The engine's recurrent layer against recur-core: arbitrary small shapes
//! (B 1–64, H 1–300 including non-multiples of 32, vocabulary up to 1,100,
//! T 1–40), random weights, every cell, f32 and f16, each path (the
//! automatic plan: thread-block clusters on sm_90; forced: both cluster
//! sizes with any batch rows per cluster, the tensor-core and CUDA-core
//! persistent kernels, per step). Outputs are
//! NaN-poisoned before every launch. Without a GPU the device tests print
//! `skipped: no CUDA device`; the tolerance check runs everywhere.

// Skips go straight to stderr: the test harness captures println!, and a
// skipped GPU test must say so in CI's log.
use std::io::Write as _;

mod engine_support;

use engine_support::{
    compare, random_params, random_tokens, random_vec, recurrent_tol, reference, w_hh, RefInput,
};
use proptest::prelude::*;
use recur::core::{CellDims, CellKind, ModelLayout};
use recur::engine::half::round_f16;
use recur::engine::{
    reg_cluster_rows, DeviceModel, Gpu, InputKind, Path, Plan, PlanOptions, Precision, SeqBuffers,
    MMA_CLUSTER_ROWS, REG_CLUSTER_MAX_HIDDEN,
};

fn cell_strategy() -> impl Strategy<Value = CellKind> {
    prop::sample::select(CellKind::ALL.to_vec())
}

/// Runs the engine and the reference on one random case; Err describes a mismatch.
#[allow(clippy::too_many_arguments)]
fn check_tokens_case(
    gpu: &Gpu,
    cell: CellKind,
    batch: usize,
    hidden: usize,
    vocab: usize,
    steps: usize,
    precision: Precision,
    opts: PlanOptions,
    seed: u64,
) -> Result<String, String> {
    let layout = ModelLayout {
        cell,
        vocab,
        hidden,
    };
    let params = random_params(&layout, seed);
    let model = DeviceModel::upload(gpu, layout, &params, precision).map_err(|e| e.to_string())?;
    let mut bufs =
        SeqBuffers::new(&model, steps, batch, InputKind::Tokens).map_err(|e| e.to_string())?;
    run_and_compare(&model, &params, &mut bufs, opts, seed)
        .map(|(plan, worst)| format!("{plan:?} worst {worst:.3}"))
}

/// Random tokens and initial states (from `seed`) into `bufs`, outputs
/// poisoned, the engine's forward against the reference: the plan it ran
/// and the worst |diff| / tolerance; Err describes a mismatch.
fn run_and_compare(
    model: &DeviceModel,
    params: &[f32],
    bufs: &mut SeqBuffers,
    opts: PlanOptions,
    seed: u64,
) -> Result<(Plan, f32), String> {
    let layout = model.layout();
    let (steps, batch, hidden) = (bufs.steps(), bufs.batch(), layout.hidden);
    let precision = model.precision();
    let tokens = random_tokens(steps * batch, layout.vocab, seed + 1);
    let h0 = random_vec(batch * hidden, 0.5, seed + 2);
    let c0 = random_vec(batch * hidden, 0.5, seed + 3);
    bufs.set_tokens(&tokens).map_err(|e| e.to_string())?;
    bufs.set_state(&h0, &c0).map_err(|e| e.to_string())?;
    bufs.poison().map_err(|e| e.to_string())?;
    let plan = model.forward(bufs, opts).map_err(|e| e.to_string())?;
    let dims = layout.cell_dims();
    let want = reference(
        dims,
        params,
        RefInput::Tokens(&tokens),
        &h0,
        &c0,
        steps,
        batch,
        precision,
    );
    compare_outputs(bufs, &want, &dims, params, steps, precision).map(|w| (plan, w))
}

fn compare_outputs(
    bufs: &SeqBuffers,
    want: &engine_support::Reference,
    dims: &CellDims,
    params: &[f32],
    steps: usize,
    precision: Precision,
) -> Result<f32, String> {
    let tol = recurrent_tol(precision, steps, &w_hh(dims, params), dims.hidden);
    let hs = bufs.hs().map_err(|e| e.to_string())?;
    let mut worst = compare("hs", &hs, &want.hs, tol)?;
    let h_last = bufs.h_last().map_err(|e| e.to_string())?;
    worst = worst.max(compare("h_last", &h_last, &want.h_last, tol)?);
    if dims.cell == CellKind::Lstm {
        let c_last = bufs.c_last().map_err(|e| e.to_string())?;
        worst = worst.max(compare("c_last", &c_last, &want.c_last, tol)?);
    }
    Ok(worst)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 20,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn f32_matches_core(
        cell in cell_strategy(),
        batch in 1usize..=64,
        hidden in 1usize..=300,
        vocab in 2usize..=1100,
        steps in 1usize..=40,
        seed in any::<u64>(),
    ) {
        let gpu = match engine_support::gpu() { Some(g) => g, None => { let _ = writeln!(std::io::stderr(), "skipped: no CUDA device"); return Ok(()); } };
        let r = check_tokens_case(&gpu, cell, batch, hidden, vocab, steps, Precision::F32, PlanOptions::default(), seed);
        if let Ok(m) = &r { println!("ok f32 {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {m}"); }
        prop_assert!(r.is_ok(), "{cell:?} B={batch} H={hidden} V={vocab} T={steps}: {}", r.unwrap_err());
    }

    #[test]
    fn f16_matches_core(
        cell in cell_strategy(),
        batch in 1usize..=64,
        hidden in 1usize..=300,
        vocab in 2usize..=1100,
        steps in 1usize..=40,
        seed in any::<u64>(),
    ) {
        let gpu = match engine_support::gpu() { Some(g) => g, None => { let _ = writeln!(std::io::stderr(), "skipped: no CUDA device"); return Ok(()); } };
        let r = check_tokens_case(&gpu, cell, batch, hidden, vocab, steps, Precision::F16, PlanOptions::default(), seed);
        if let Ok(m) = &r { println!("ok f16 {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {m}"); }
        prop_assert!(r.is_ok(), "{cell:?} B={batch} H={hidden} V={vocab} T={steps}: {}", r.unwrap_err());
    }
}

proptest! {
    #![proptest_config(config(16))]

    /// The per-step fallback, the CUDA-core persistent kernel (f32, and f16
    /// where the planner only picks it for GRU reset-before) and the
    /// tensor-core persistent kernel (f16), forced.
    #[test]
    fn forced_paths_match_core(
        cell in cell_strategy(),
        batch in 1usize..=64,
        hidden in 1usize..=300,
        vocab in 2usize..=600,
        steps in 1usize..=20,
        f16 in any::<bool>(),
        which in 0usize..3,
        seed in any::<u64>(),
    ) {
        let gpu = match engine_support::gpu() { Some(g) => g, None => { let _ = writeln!(std::io::stderr(), "skipped: no CUDA device"); return Ok(()); } };
        let precision = if f16 { Precision::F16 } else { Precision::F32 };
        let path = match which {
            0 => Path::PerStep,
            2 if f16 && cell != CellKind::GruResetBefore => Path::PersistentMma,
            _ => Path::PersistentSimt,
        };
        let opts = PlanOptions { path: Some(path), ..PlanOptions::default() };
        let r = check_tokens_case(&gpu, cell, batch, hidden, vocab, steps, precision, opts, seed);
        if let Ok(m) = &r { println!("ok forced {precision:?} {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {m}"); }
        prop_assert!(r.is_ok(), "{path:?} {precision:?} {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {}", r.unwrap_err());
    }

    /// The tensor-core kernel with flagged h words instead of the grid
    /// barrier (even H), forced. ("flagged" in the name: the GPU run script
    /// runs these tests in a process of their own.)
    #[test]
    fn flagged_forced_matches_core(
        cell in prop::sample::select(vec![CellKind::RnnTanh, CellKind::RnnRelu, CellKind::GruResetAfter, CellKind::Lstm]),
        batch in 1usize..=64,
        half_hidden in 1usize..=150,
        vocab in 2usize..=600,
        steps in 1usize..=20,
        seed in any::<u64>(),
    ) {
        let gpu = match engine_support::gpu() { Some(g) => g, None => { let _ = writeln!(std::io::stderr(), "skipped: no CUDA device"); return Ok(()); } };
        let hidden = 2 * half_hidden;
        let opts = PlanOptions { path: Some(Path::PersistentMmaFlagged), ..PlanOptions::default() };
        let r = check_tokens_case(&gpu, cell, batch, hidden, vocab, steps, Precision::F16, opts, seed);
        if let Ok(m) = &r { println!("ok flagged {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {m}"); }
        prop_assert!(r.is_ok(), "flagged {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {}", r.unwrap_err());
    }

    /// The tensor-core kernel with a flag per block instead of the grid
    /// barrier (any H), forced.
    #[test]
    fn block_flagged_forced_matches_core(
        cell in prop::sample::select(vec![CellKind::RnnTanh, CellKind::RnnRelu, CellKind::GruResetAfter, CellKind::Lstm]),
        batch in 1usize..=64,
        hidden in 1usize..=300,
        vocab in 2usize..=600,
        steps in 1usize..=20,
        seed in any::<u64>(),
    ) {
        let gpu = match engine_support::gpu() { Some(g) => g, None => { let _ = writeln!(std::io::stderr(), "skipped: no CUDA device"); return Ok(()); } };
        let opts = PlanOptions { path: Some(Path::PersistentMmaBlockFlags), ..PlanOptions::default() };
        let r = check_tokens_case(&gpu, cell, batch, hidden, vocab, steps, Precision::F16, opts, seed);
        if let Ok(m) = &r { println!("ok block flags {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {m}"); }
        prop_assert!(r.is_ok(), "block flags {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {}", r.unwrap_err());
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// The thread-block-cluster kernels (sm_90), forced: clusters of 8 and
    /// 16 CTAs, any number of batch rows per cluster (several product passes
    /// of 8 rows, a last cluster with fewer rows), token input.
    #[test]
    fn cluster_path_matches_core(
        cell in cell_strategy(),
        batch in 1usize..=64,
        hidden in 1usize..=300,
        vocab in 2usize..=1100,
        steps in 1usize..=40,
        f16 in any::<bool>(),
        sixteen in any::<bool>(),
        rows in 1usize..=64,
        seed in any::<u64>(),
    ) {
        let gpu = match engine_support::gpu() { Some(g) => g, None => { let _ = writeln!(std::io::stderr(), "skipped: no CUDA device"); return Ok(()); } };
        let most = gpu.limits().cluster;
        if most == 0 {
            let _ = writeln!(std::io::stderr(), "skipped: no thread-block clusters (before sm_90)");
            return Ok(());
        }
        let precision = if f16 { Precision::F16 } else { Precision::F32 };
        let cluster = if sixteen && most >= 16 { 16 } else { 8 };
        let opts = cluster_opts(&gpu, cell, hidden, vocab, batch, precision, cluster, rows);
        let r = check_tokens_case(&gpu, cell, batch, hidden, vocab, steps, precision, opts, seed);
        if let Ok(m) = &r { println!("ok cluster {precision:?} {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {m}"); }
        prop_assert!(r.is_ok(), "{opts:?} {precision:?} {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {}", r.unwrap_err());
    }
}

/// One forced case of a kernel on clusters of 16 with W_hh in registers
/// (`Path::ClusterRegs` or `Path::ClusterMma`, sm_90) against recur-core,
/// token input.
#[allow(clippy::too_many_arguments)]
fn register_cluster_case(
    path: Path,
    cell: CellKind,
    batch: usize,
    hidden: usize,
    vocab: usize,
    steps: usize,
    f16: bool,
    rows: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let Some(gpu) = engine_support::gpu() else {
        let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        return Ok(());
    };
    if gpu.limits().cluster < 16 {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no clusters of 16 (before sm_90)"
        );
        return Ok(());
    }
    let precision = if f16 { Precision::F16 } else { Precision::F32 };
    let opts = PlanOptions {
        path: Some(path),
        rows: Some(rows),
        ..PlanOptions::default()
    };
    let r = check_tokens_case(
        &gpu, cell, batch, hidden, vocab, steps, precision, opts, seed,
    );
    if let Ok(m) = &r {
        println!(
            "ok {path:?} {precision:?} {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {m}"
        );
    }
    prop_assert!(
        r.is_ok(),
        "{opts:?} {precision:?} {cell:?} B={batch} H={hidden} V={vocab} T={steps}: {}",
        r.unwrap_err()
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(32))]

    /// The register cluster kernels (sm_90), forced: H ≤ 256, every cell
    /// (GRU reset-before in two exchanges per step), any batch rows per
    /// cluster up to their limit (a last cluster with fewer rows), token
    /// input.
    #[test]
    fn register_cluster_path_matches_core(
        cell in prop::sample::select(CellKind::ALL.to_vec()),
        batch in 1usize..=64,
        hidden in 1usize..=REG_CLUSTER_MAX_HIDDEN,
        vocab in 2usize..=1100,
        steps in 1usize..=40,
        f16 in any::<bool>(),
        rows in 1usize..=16,
        seed in any::<u64>(),
    ) {
        register_cluster_case(Path::ClusterRegs, cell, batch, hidden, vocab, steps, f16, rows.min(reg_cluster_rows(cell)), seed)?;
    }

    /// The tensor-core cluster kernels (sm_90, `Path::ClusterMma`), forced:
    /// H ≤ 256, every cell (GRU reset-before in two products per step),
    /// 1–8 batch rows per cluster (a last cluster with fewer rows), token
    /// input; f32 through 3×TF32 products.
    #[test]
    fn mma_cluster_path_matches_core(
        cell in prop::sample::select(CellKind::ALL.to_vec()),
        batch in 1usize..=64,
        hidden in 1usize..=REG_CLUSTER_MAX_HIDDEN,
        vocab in 2usize..=1100,
        steps in 1usize..=40,
        f16 in any::<bool>(),
        rows in 1usize..=MMA_CLUSTER_ROWS,
        seed in any::<u64>(),
    ) {
        register_cluster_case(Path::ClusterMma, cell, batch, hidden, vocab, steps, f16, rows, seed)?;
    }
}

/// The d2l shape (B 32, H 256, V 1,027, T 35) on the tensor-core cluster
/// kernels, f32 and f16, 4 rows per cluster (8 clusters, as on an H100):
/// the case the benchmark times, for the default preset's GRU
/// reset-before too.
#[test]
fn mma_cluster_path_matches_core_at_the_d2l_shape() {
    let gpu = gpu_or_skip!();
    let cells = [
        CellKind::RnnTanh,
        CellKind::GruResetBefore,
        CellKind::GruResetAfter,
        CellKind::Lstm,
    ];
    d2l_cluster_cases(&gpu, &cells, Path::ClusterMma, |_| 4, 7);
}

/// GRU reset-before's register cluster kernel (two exchanges per step) at
/// the d2l shape, the default preset's layer, f32 and f16, 5 rows per
/// cluster (7 clusters, as the planner takes for the other GRU on an H100).
#[test]
fn register_cluster_reset_before_matches_core_at_the_d2l_shape() {
    let gpu = gpu_or_skip!();
    let cells = [CellKind::GruResetBefore];
    d2l_cluster_cases(&gpu, &cells, Path::ClusterRegs, reg_cluster_rows, 9);
}

/// `cells` at the d2l shape (B 32, H 256, V 1,027, T 35) on a forced
/// cluster `path` with `rows(cell)` rows per cluster, f32 and f16, against
/// recur-core; skipped without clusters of 16.
fn d2l_cluster_cases(
    gpu: &Gpu,
    cells: &[CellKind],
    path: Path,
    rows: impl Fn(CellKind) -> usize,
    seed: u64,
) {
    if gpu.limits().cluster < 16 {
        eprintln!("skipped: no clusters of 16 (before sm_90)");
        return;
    }
    for &cell in cells {
        for precision in [Precision::F32, Precision::F16] {
            let opts = PlanOptions {
                path: Some(path),
                rows: Some(rows(cell)),
                ..PlanOptions::default()
            };
            let r = check_tokens_case(gpu, cell, 32, 256, 1027, 35, precision, opts, seed);
            assert!(
                r.is_ok(),
                "{path:?} {precision:?} {cell:?}: {}",
                r.unwrap_err()
            );
            println!("ok d2l {path:?} {precision:?} {cell:?}: {}", r.unwrap());
        }
    }
}

/// The register cluster kernels (CUDA-core and tensor-core forms) take
/// every cell and refuse what they do not take: H > 256, more rows than
/// they hold, clusters of 8; the automatic choice leaves GRU reset-before's
/// CUDA-core form out.
#[test]
fn register_cluster_limits_are_refused() {
    let gpu = gpu_or_skip!();
    if gpu.limits().cluster < 16 {
        eprintln!("skipped: no clusters of 16 (before sm_90)");
        return;
    }
    let plan = |cell, hidden, opts| {
        let layout = ModelLayout {
            cell,
            vocab: 7,
            hidden,
        };
        let params = random_params(&layout, 0);
        let model = DeviceModel::upload(&gpu, layout, &params, Precision::F32).unwrap();
        model.plan(8, opts)
    };
    let forced = PlanOptions {
        path: Some(Path::ClusterRegs),
        ..PlanOptions::default()
    };
    assert!(plan(CellKind::GruResetAfter, 256, forced).is_ok());
    assert!(plan(CellKind::GruResetAfter, 257, forced).is_err());
    assert_eq!(
        plan(CellKind::GruResetBefore, 64, forced).unwrap().path,
        Path::ClusterRegs
    );
    assert_eq!(
        plan(CellKind::GruResetBefore, 64, PlanOptions::default())
            .unwrap()
            .path,
        Path::Cluster
    );
    let rows = PlanOptions {
        rows: Some(reg_cluster_rows(CellKind::Lstm) + 1),
        ..forced
    };
    assert!(plan(CellKind::Lstm, 64, rows).is_err());
    let eight = PlanOptions {
        cluster: Some(8),
        ..forced
    };
    assert!(plan(CellKind::RnnTanh, 64, eight).is_err());
    // The tensor-core form: the same H, every cell, at most 8 rows per
    // cluster.
    let mma = PlanOptions {
        path: Some(Path::ClusterMma),
        ..PlanOptions::default()
    };
    assert!(plan(CellKind::Lstm, 256, mma).is_ok());
    assert!(plan(CellKind::GruResetAfter, 257, mma).is_err());
    assert!(plan(CellKind::GruResetBefore, 64, mma).is_ok());
    let nine = PlanOptions {
        rows: Some(MMA_CLUSTER_ROWS + 1),
        ..mma
    };
    assert!(plan(CellKind::RnnTanh, 64, nine).is_err());
}

/// Forced cluster options with at most `rows` batch rows per cluster, fewer
/// where that many do not fit the shared memory.
#[allow(clippy::too_many_arguments)]
fn cluster_opts(
    gpu: &Gpu,
    cell: CellKind,
    hidden: usize,
    vocab: usize,
    batch: usize,
    precision: Precision,
    cluster: usize,
    rows: usize,
) -> PlanOptions {
    let layout = ModelLayout {
        cell,
        vocab,
        hidden,
    };
    let model = DeviceModel::upload(gpu, layout, &random_params(&layout, 0), precision).unwrap();
    let mut rows = rows.min(batch);
    loop {
        let opts = PlanOptions {
            path: Some(Path::Cluster),
            cluster: Some(cluster),
            rows: Some(rows),
            ..PlanOptions::default()
        };
        if model.plan(batch, opts).is_ok() || rows == 1 {
            return opts;
        }
        rows /= 2;
    }
}

/// Runs `cases` (cell, B, H) on the forced tensor-core `path` with each
/// unit count, T `steps`; a unit count whose slice does not fit (or, for
/// the flagged kernel, an odd H) is refused, not run. Returns the runs.
fn tensor_core_unit_sweep(
    gpu: &Gpu,
    path: Path,
    cases: &[(CellKind, usize, usize)],
    steps: usize,
    seed: u64,
) -> usize {
    let mut ran = 0;
    for (i, &(cell, batch, hidden)) in cases.iter().enumerate() {
        for units in [4, 8, 16, 32] {
            let opts = PlanOptions {
                path: Some(path),
                units: Some(units),
                ..PlanOptions::default()
            };
            let seed = seed + 10 * i as u64 + units as u64;
            let what = format!("{path:?} {cell:?} B={batch} H={hidden} units={units}");
            match check_tokens_case(
                gpu,
                cell,
                batch,
                hidden,
                97,
                steps,
                Precision::F16,
                opts,
                seed,
            ) {
                Ok(m) => {
                    ran += 1;
                    println!("ok {what}: {m}");
                }
                Err(e) if e.contains("no kernel configuration fits") => {
                    println!("refused {what}: {e}")
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }
    ran
}

/// The tensor-core persistent kernel's three ways of staging h (16-byte
/// pieces where H is a multiple of 8, pairs of halves where H is even,
/// halves where it is odd), each with the batch as one n-chunk (the
/// per-thread carry) and as several, forced with each unit count that fits.
/// Between them the cases give the product every tile count per chunk
/// (16-row tiles × 8-column tiles, 1 to 8; the kernel compiles one loop per
/// count): 7 comes from B 120 with one row tile, whose chunks of 8 and 7
/// column tiles also switch copies within a step.
#[test]
fn tensor_core_staging_forms_match_core() {
    let gpu = gpu_or_skip!();
    let cases = [
        (CellKind::Lstm, 3, 96),
        (CellKind::GruResetAfter, 40, 96),
        (CellKind::RnnTanh, 64, 256),
        (CellKind::Lstm, 17, 250),
        (CellKind::GruResetAfter, 5, 66),
        (CellKind::RnnRelu, 33, 67),
        (CellKind::Lstm, 9, 13),
        (CellKind::RnnTanh, 120, 40),
    ];
    let ran = tensor_core_unit_sweep(&gpu, Path::PersistentMma, &cases, 7, 500);
    assert!(
        ran >= cases.len(),
        "only {ran} forced tensor-core cases ran"
    );
}

/// The tensor-core kernel with flagged h words instead of a grid barrier:
/// both word forms (two words a load where H is a multiple of 4, one where
/// H is 2 mod 4), the batch as one n-chunk and as several, each unit count
/// that fits; then three launches in a row on the same buffers (each must
/// wait for its own flags, not take a word a launch before left), the
/// second across the point where the flags start again on a zeroed buffer.
#[test]
fn flagged_tensor_core_exchange_matches_core() {
    let gpu = gpu_or_skip!();
    let cases = [
        (CellKind::Lstm, 3, 96),
        (CellKind::GruResetAfter, 40, 96),
        (CellKind::RnnTanh, 64, 256),
        (CellKind::Lstm, 17, 250),
        (CellKind::GruResetAfter, 5, 66),
        (CellKind::RnnRelu, 33, 2),
    ];
    let ran = tensor_core_unit_sweep(&gpu, Path::PersistentMmaFlagged, &cases, 9, 900);
    assert!(ran >= cases.len(), "only {ran} flagged cases ran");

    let flagged = [Path::PersistentMmaFlagged; 3];
    launches_on_one_buffer_set(&gpu, CellKind::Lstm, &flagged, 1, 77);
}

/// The tensor-core kernel with a flag per block instead of a grid barrier
/// (`Path::PersistentMmaBlockFlags`; "flagged" in the name: the GPU run
/// script runs it in a process of its own): odd and even H, the batch as one
/// n-chunk and as several, each unit count that fits; then launches in a
/// row on one set of buffers, alternating with the flagged words, whose
/// words must not pass for flags (the buffer is zeroed when the path
/// changes), one of them across the point where the flags start again on a
/// zeroed buffer.
#[test]
fn block_flagged_tensor_core_path_matches_core() {
    let gpu = gpu_or_skip!();
    let cases = [
        (CellKind::Lstm, 3, 96),
        (CellKind::GruResetAfter, 40, 97),
        (CellKind::RnnTanh, 64, 256),
        (CellKind::Lstm, 17, 251),
        (CellKind::RnnRelu, 33, 5),
    ];
    let ran = tensor_core_unit_sweep(&gpu, Path::PersistentMmaBlockFlags, &cases, 9, 1300);
    assert!(ran >= cases.len(), "only {ran} block-flag cases ran");

    let (flags, words) = (Path::PersistentMmaBlockFlags, Path::PersistentMmaFlagged);
    let paths = [flags, words, flags, words, flags, words, flags, flags];
    launches_on_one_buffer_set(&gpu, CellKind::GruResetAfter, &paths, 7, 79);
}

/// One launch of each of `paths` in turn on one set of buffers (B 16,
/// H 128, T 11, f16) against recur-core: each must wait for its own flags,
/// not take a word or flag an earlier launch left. Before launch `restart`
/// the epoch is put 3 short of the flags' wrap, so that launch starts
/// again on a zeroed buffer.
fn launches_on_one_buffer_set(
    gpu: &Gpu,
    cell: CellKind,
    paths: &[Path],
    restart: usize,
    seed: u64,
) {
    let (batch, hidden, vocab, steps) = (16, 128, 61, 11);
    let layout = ModelLayout {
        cell,
        vocab,
        hidden,
    };
    let params = random_params(&layout, seed);
    let model = DeviceModel::upload(gpu, layout, &params, Precision::F16).unwrap();
    let mut bufs = SeqBuffers::new(&model, steps, batch, InputKind::Tokens).unwrap();
    for (launch, &path) in paths.iter().enumerate() {
        if launch == restart {
            bufs.set_exchange_epoch_for_tests(u32::MAX - 3);
        }
        let opts = PlanOptions {
            path: Some(path),
            ..PlanOptions::default()
        };
        let seed = seed + 3 + 10 * launch as u64;
        match run_and_compare(&model, &params, &mut bufs, opts, seed) {
            Ok((plan, worst)) => {
                assert_eq!(plan.path, path);
                println!("ok {path:?} launch {launch} on the same buffers: worst {worst:.3}");
            }
            Err(e) => panic!("{path:?} launch {launch} on the same buffers: {e}"),
        }
    }
}

/// Dense inputs (the input product for all steps as one matrix product)
/// through a bare cell, including a large LSTM like the benchmark's.
#[test]
fn dense_inputs_match_core() {
    let gpu = gpu_or_skip!();
    let cases = [
        (CellKind::Lstm, 16, 768, 768, 6),
        (CellKind::GruResetAfter, 5, 37, 19, 9),
        (CellKind::RnnTanh, 64, 100, 300, 3),
        (CellKind::GruResetBefore, 3, 65, 7, 12),
        (CellKind::Lstm, 9, 200, 33, 7),
    ];
    for (i, &(cell, batch, hidden, input, steps)) in cases.iter().enumerate() {
        for precision in [Precision::F32, Precision::F16] {
            let dims = CellDims {
                cell,
                input,
                hidden,
            };
            let layout = ModelLayout {
                cell,
                vocab: input,
                hidden,
            };
            let all = random_params(&layout, 100 + i as u64);
            let params = &all[..layout.tensors()[4].offset];
            let model = DeviceModel::upload_cell(&gpu, dims, params, precision).unwrap();
            let x = random_vec(steps * batch * input, 1.0, 7 + i as u64);
            let h0 = random_vec(batch * hidden, 0.5, 8);
            let c0 = random_vec(batch * hidden, 0.5, 9);
            let mut bufs = SeqBuffers::new(&model, steps, batch, InputKind::Dense).unwrap();
            bufs.set_inputs(&x).unwrap();
            bufs.set_state(&h0, &c0).unwrap();
            bufs.poison().unwrap();
            let plan = model.forward(&mut bufs, PlanOptions::default()).unwrap();
            let want = reference(
                dims,
                params,
                RefInput::Dense(&x),
                &h0,
                &c0,
                steps,
                batch,
                precision,
            );
            // The input product adds I terms per pre-activation: the f32 part of
            // the tolerance covers I + H terms as it covers H.
            let w = compare_outputs(&bufs, &want, &dims, params, steps, precision)
                .unwrap_or_else(|e| panic!("{cell:?} {precision:?} {plan:?}: {e}"));
            println!("{cell:?} {precision:?} B={batch} H={hidden} I={input} T={steps} {plan:?}: worst {w:.3}");
        }
    }
}

/// Bad input is an error naming it, never a launch.
#[test]
fn bad_input_is_rejected() {
    let gpu = gpu_or_skip!();
    let layout = ModelLayout {
        cell: CellKind::GruResetAfter,
        vocab: 10,
        hidden: 8,
    };
    let params = random_params(&layout, 1);
    assert!(DeviceModel::upload(&gpu, layout, &params[1..], Precision::F32).is_err());
    let model = DeviceModel::upload(&gpu, layout, &params, Precision::F32).unwrap();
    let mut bufs = SeqBuffers::new(&model, 3, 2, InputKind::Tokens).unwrap();
    let e = bufs.set_tokens(&[0, 1, 2, 3, 4, 10]).unwrap_err();
    assert!(e.to_string().contains("token id 10"), "{e}");
    assert!(bufs.set_tokens(&[0; 5]).is_err());
    assert!(bufs.set_inputs(&[0.0; 60]).is_err()); // token buffers
}

// ---- the tolerance itself, without a GPU -----------------------------------

/// One step in f64 with the sums in reverse order, h rounded to the
/// storage precision: an independent implementation whose differences from
/// recur-core are of the kind the engine's are (order, precision).
fn f64_step(
    dims: &CellDims,
    p: &[f32],
    tokens: &[u32],
    h_prev: &[f32],
    c_prev: &[f32],
    batch: usize,
    store: &dyn Fn(f64) -> f32,
) -> (Vec<f32>, Vec<f32>) {
    let (h, v) = (dims.hidden, dims.input);
    let g = dims.cell.gates();
    let (wih, rest) = p.split_at(dims.weight_ih_len());
    let (whh, rest) = rest.split_at(dims.weight_hh_len());
    let (bih, bhh) = rest.split_at(g * h);
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let dot = |row: usize, x: &[f64]| {
        (0..h)
            .rev()
            .map(|k| whh[row * h + k] as f64 * x[k])
            .sum::<f64>()
    };
    let mut hn = vec![0.0f32; batch * h];
    let mut cn = vec![
        0.0f32;
        if dims.cell == CellKind::Lstm {
            batch * h
        } else {
            0
        }
    ];
    for b in 0..batch {
        let hp: Vec<f64> = h_prev[b * h..(b + 1) * h]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let x = |gate: usize, j: usize| {
            wih[(gate * h + j) * v + tokens[b] as usize] as f64 + bih[gate * h + j] as f64
        };
        let hh =
            |gate: usize, j: usize, vec: &[f64]| dot(gate * h + j, vec) + bhh[gate * h + j] as f64;
        let rh: Vec<f64> = (0..h)
            .map(|j| sig(x(0, j) + hh(0, j, &hp)) * hp[j])
            .collect();
        for j in 0..h {
            let out = match dims.cell {
                CellKind::RnnTanh => (x(0, j) + hh(0, j, &hp)).tanh(),
                CellKind::RnnRelu => (x(0, j) + hh(0, j, &hp)).max(0.0),
                CellKind::GruResetAfter => {
                    let (r, z) = (sig(x(0, j) + hh(0, j, &hp)), sig(x(1, j) + hh(1, j, &hp)));
                    let n = (x(2, j) + r * hh(2, j, &hp)).tanh();
                    n + z * (hp[j] - n)
                }
                CellKind::GruResetBefore => {
                    let z = sig(x(1, j) + hh(1, j, &hp));
                    let n = (x(2, j) + hh(2, j, &rh)).tanh();
                    n + z * (hp[j] - n)
                }
                CellKind::Lstm => {
                    let i = sig(x(0, j) + hh(0, j, &hp));
                    let f = sig(x(1, j) + hh(1, j, &hp));
                    let gg = (x(2, j) + hh(2, j, &hp)).tanh();
                    let o = sig(x(3, j) + hh(3, j, &hp));
                    let c = f * c_prev[b * h + j] as f64 + i * gg;
                    cn[b * h + j] = c as f32;
                    o * c.tanh()
                }
            };
            hn[b * h + j] = store(out);
        }
    }
    (hn, cn)
}

/// recurrent_tol holds between recur-core and the reordered f64 version on
/// random shapes like the device tests' (so a device failure means a real
/// difference, and the tolerance is not looser than rounding needs).
#[test]
fn tolerance_covers_reordered_accumulation() {
    let mut worst = [0.0f32; 2];
    for case in 0..60u64 {
        let cell = CellKind::ALL[case as usize % 5];
        let (batch, hidden, vocab, steps) = (
            1 + (case * 7 % 9) as usize,
            1 + (case * 37 % 160) as usize,
            3 + (case * 13 % 200) as usize,
            1 + (case * 11 % 40) as usize,
        );
        for (pi, precision) in [Precision::F32, Precision::F16].into_iter().enumerate() {
            let layout = ModelLayout {
                cell,
                vocab,
                hidden,
            };
            let dims = layout.cell_dims();
            let mut params = random_params(&layout, case);
            if precision == Precision::F16 {
                for w in &mut params {
                    *w = round_f16(*w);
                }
            }
            let tokens = random_tokens(steps * batch, vocab, case + 1);
            let store = |v: f64| match precision {
                Precision::F32 => v as f32,
                Precision::F16 => round_f16(v as f32),
            };
            let h0: Vec<f32> = random_vec(batch * hidden, 0.5, case + 2)
                .into_iter()
                .map(|v| store(v as f64))
                .collect();
            let c0 = random_vec(batch * hidden, 0.5, case + 3);
            let want = reference(
                dims,
                &params,
                RefInput::Tokens(&tokens),
                &h0,
                &c0,
                steps,
                batch,
                precision,
            );
            let (mut hp, mut cp) = (h0.clone(), c0.clone());
            let mut hs = Vec::new();
            for t in 0..steps {
                let (hn, cn) = f64_step(
                    &dims,
                    &params,
                    &tokens[t * batch..(t + 1) * batch],
                    &hp,
                    &cp,
                    batch,
                    &store,
                );
                hs.extend_from_slice(&hn);
                hp = hn;
                if cell == CellKind::Lstm {
                    cp = cn;
                }
            }
            let tol = recurrent_tol(precision, steps, &w_hh(&dims, &params), hidden);
            let w = compare("hs", &hs, &want.hs, tol).unwrap_or_else(|e| {
                panic!("{cell:?} {precision:?} B={batch} H={hidden} T={steps}: {e}")
            });
            worst[pi] = worst[pi].max(w);
        }
    }
    println!(
        "worst |diff| / tolerance: f32 {:.3}, f16 {:.3}",
        worst[0], worst[1]
    );
}
