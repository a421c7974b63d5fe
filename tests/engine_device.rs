//! The engine starts on any machine: with a GPU it opens it, without one
//! (recur's no-device driver stub, or a driver without devices) it answers
//! `Error::NoDevice`, whose message says so.

// Skips go straight to stderr: the test harness captures println!, and a
// skipped GPU test must say so in CI's log.
use std::io::Write as _;

use recur::engine::{Error, Gpu};

#[test]
fn gpu_opens_or_reports_no_device() {
    match Gpu::new() {
        Ok(gpu) => {
            assert!(!gpu.name().is_empty());
            gpu.synchronize().unwrap();
            println!("device: {}", gpu.name());
        }
        Err(e) => {
            assert_eq!(e, Error::NoDevice, "unexpected error: {e}");
            assert_eq!(e.to_string(), "no CUDA device");
            let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
        }
    }
}

#[test]
fn driver_error_text_comes_from_the_driver() {
    // cust's Display asks the driver (or the stub) for the text: it must
    // answer for any code rather than fail.
    let text = recur::engine::cust::error::CudaError::InvalidValue.to_string();
    assert!(text.contains("invalid argument"), "{text}");
}

/// Sizes whose byte counts are beyond `usize` (or whose element counts
/// would overflow on the way) are out-of-memory errors naming the buffer,
/// never a wrapped small buffer: for a sequence, a generation and a
/// trainer. The GPU stays usable.
#[test]
fn absurd_sizes_are_out_of_memory_errors() {
    use recur::core::{CellKind, ModelLayout};
    use recur::engine::{
        DeviceModel, DeviceTrainer, GenBuffers, InputKind, Precision, SeqBuffers, TrainOptimizer,
    };
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            assert!(e.is_no_device(), "opening the GPU: {e}");
            let _ = writeln!(std::io::stderr(), "skipped: no CUDA device");
            return;
        }
    };
    let layout = ModelLayout {
        cell: CellKind::GruResetAfter,
        vocab: 10,
        hidden: 8,
    };
    let model =
        DeviceModel::upload(&gpu, layout, &vec![0.01; layout.len()], Precision::F32).unwrap();
    // T·B fits in usize; T·B·4 bytes and T·B·G·H elements do not.
    let (steps, batch) = (1usize << 40, 1usize << 22);
    let oom = |r: Result<(), Error>, what: &str| {
        let e = r.expect_err(what);
        assert!(e.is_out_of_memory(), "{what}: {e}");
        assert!(
            e.to_string().contains("out of device memory for the "),
            "{what}: {e}"
        );
    };
    oom(
        SeqBuffers::new(&model, steps, batch, InputKind::Tokens).map(drop),
        "sequence",
    );
    oom(
        GenBuffers::new(&model, batch, steps, 1).map(drop),
        "generation",
    );
    oom(
        DeviceTrainer::new(&gpu, layout, batch, steps, TrainOptimizer::Sgd).map(drop),
        "trainer",
    );
    // Still usable: a sequence that fits runs.
    let mut bufs = SeqBuffers::new(&model, 3, 2, InputKind::Tokens).unwrap();
    bufs.set_tokens(&[1; 6]).unwrap();
    model.forward(&mut bufs, Default::default()).unwrap();
    gpu.synchronize().unwrap();
}
