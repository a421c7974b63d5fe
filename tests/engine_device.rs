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
