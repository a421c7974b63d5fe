//! The trainer's product kernel on its own, for the property test that
//! holds it to f32 accuracy (tests/engine_train.rs): the gradient checks
//! around it use tolerances that one-pass TF32 would pass too.

use super::*;

impl DeviceTrainer {
    /// C (m, n) = A · B through the f32 product kernel (`tr_gemm`) and the
    /// split-K this trainer would choose, on the main stream. `a`: (m, k)
    /// row-major, or with `a_stored_t` its transpose (k, m); `b`: (k, n)
    /// row-major, or with `b_stored_t` (n, k). C's memory is filled with
    /// NaN first, so an element the kernel skips stays NaN. Not part of the
    /// training API: a test hook.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn product_for_tests(
        &self,
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
        let mut da = alloc::<f32>(a.len(), "product test A")?;
        let mut db = alloc::<f32>(b.len(), "product test B")?;
        let mut dc = alloc::<f32>(m * n, "product test C")?;
        upload(&self.gpu, &mut da, a, "product test A")?;
        upload(&self.gpu, &mut db, b, "product test B")?;
        fill32(&self.gpu, &mut dc, f32::NAN.to_bits())?;
        let (sam, sak) = if a_stored_t { (1, m) } else { (k, 1) };
        let (sbk, sbn) = if b_stored_t { (1, k) } else { (n, 1) };
        self.gemm(Gemm {
            kernel: "tr_gemm",
            c: addr(&dc),
            a: addr(&da),
            b: addr(&db),
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
