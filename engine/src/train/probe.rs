//! The trainer's product kernels on their own, for the property test that
//! holds them to f32 accuracy (tests/engine_train.rs): the gradient checks
//! around them use tolerances that one-pass TF32 would pass too.

use super::*;
use crate::mem::Activations;

/// The operand storage of a product kernel: `tr_gemm` (both f32),
/// `tr_gemm_f32_f16` (A f32, B f16: a gradient times stored activations or
/// weights), `tr_gemm_f16` (both f16: f16 mode's logits), each also in its
/// ring form (`tr_gemm_ring*`, [`DeviceTrainer::set_ring_products`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductOperands {
    /// A and B f32.
    F32,
    /// A f32, B f16.
    F32F16,
    /// A and B f16.
    F16,
}

impl ProductOperands {
    /// Every kernel.
    pub const ALL: [ProductOperands; 3] = [Self::F32, Self::F32F16, Self::F16];

    /// The kernel's name (ptx/src/train_gemm.cuh, train_gemm_ring.cuh).
    pub(super) fn kernel(self, ring: bool) -> &'static str {
        match (self, ring) {
            (Self::F32, false) => "tr_gemm",
            (Self::F32F16, false) => "tr_gemm_f32_f16",
            (Self::F16, false) => "tr_gemm_f16",
            (Self::F32, true) => "tr_gemm_ring",
            (Self::F32F16, true) => "tr_gemm_ring_f32_f16",
            (Self::F16, true) => "tr_gemm_ring_f16",
        }
    }

    /// Whether A, B are stored as f16 (the kernel reads them rounded).
    pub fn f16(self) -> (bool, bool) {
        match self {
            Self::F32 => (false, false),
            Self::F32F16 => (false, true),
            Self::F16 => (true, true),
        }
    }
}

/// `host` on the device as f32, or rounded to f16.
fn operand(gpu: &Gpu, host: &[f32], f16: bool, what: &'static str) -> Result<Activations, Error> {
    let mut buf = Activations::new(host.len(), f16, what)?;
    buf.upload(gpu, host, what)?;
    Ok(buf)
}

impl DeviceTrainer {
    /// C (m, n) = A · B through the product kernel for `operands` (in the
    /// form [`Self::set_ring_products`] chose) and the split-K this trainer
    /// would choose, on the main stream. `a`: (m, k)
    /// row-major, or with `a_stored_t` its transpose (k, m); `b`: (k, n)
    /// row-major, or with `b_stored_t` (n, k); an f16 operand is rounded to
    /// f16 on upload. C's memory is filled with NaN first, so an element the
    /// kernel skips stays NaN. Not part of the training API: a test hook.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn product_for_tests(
        &self,
        operands: ProductOperands,
        a: &[f32],
        b: &[f32],
        m: usize,
        n: usize,
        k: usize,
        a_stored_t: bool,
        b_stored_t: bool,
    ) -> Result<Vec<f32>, Error> {
        recur_core::error::check_len("a", a, m * k)?;
        recur_core::error::check_len("b", b, k * n)?;
        self.gpu.bind()?;
        let (a16, b16) = operands.f16();
        let da = operand(&self.gpu, a, a16, "product test A")?;
        let db = operand(&self.gpu, b, b16, "product test B")?;
        let mut dc = alloc::<f32>(m * n, "product test C")?;
        fill32(&self.gpu, &mut dc, f32::NAN.to_bits())?;
        let (sam, sak) = if a_stored_t { (1, m) } else { (k, 1) };
        let (sbk, sbn) = if b_stored_t { (1, k) } else { (n, 1) };
        self.gemm(Gemm {
            operands,
            c: addr(&dc),
            a: da.addr(),
            b: db.addr(),
            bias: 0,
            m,
            n,
            k,
            sam,
            sak,
            sbk,
            sbn,
            ldc: n,
            accumulate: false,
        })?;
        download(&self.gpu, &dc, m * n)
    }
}
