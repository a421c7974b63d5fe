//! The x86-64 instantiations of the row-block kernel and their run-time
//! detection (no `std`: `cpuid` and `xgetbv` directly).
//!
//! - AVX2 + FMA + F16C: 8 lanes, `vcvtph2ps ymm` for f16.
//! - AVX-512F: 16 lanes, `vcvtph2ps zmm` (AVX-512F's own 16-wide form):
//!   twice the elements per conversion, the instruction that bounds the
//!   8-lane f16 kernel on Intel cores.

use core::arch::x86_64::*;
use core::sync::atomic::{AtomicU8, Ordering};

use super::kernel::{row_block_kernel, ROWS};
use super::Kernel;
use crate::weight::f16_bits_to_f32;

/// 0 unknown, else 1 + the index of the detected [`Kernel`].
static DETECTED: AtomicU8 = AtomicU8::new(0);

/// The widest kernel this processor and its operating system support.
pub(super) fn detect() -> Kernel {
    match DETECTED.load(Ordering::Relaxed) {
        1 => Kernel::Portable,
        2 => Kernel::Avx2,
        3 => Kernel::Avx512,
        _ => {
            let kernel = probe();
            let code = match kernel {
                Kernel::Portable => 1,
                Kernel::Avx2 => 2,
                Kernel::Avx512 => 3,
            };
            DETECTED.store(code, Ordering::Relaxed);
            kernel
        }
    }
}

fn probe() -> Kernel {
    // AVX2 + FMA with the OS's AVX state (the gemm's detection), and F16C.
    let avx2 =
        crate::gemm::Isa::detect() == crate::gemm::Isa::Avx2Fma && __cpuid(1).ecx & (1 << 29) != 0;
    if !avx2 {
        return Kernel::Portable;
    }
    let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
    let avx512f = __cpuid(0).eax >= 7 && __cpuid_count(7, 0).ebx & (1 << 16) != 0;
    if !(osxsave && avx512f) {
        return Kernel::Avx2;
    }
    // SAFETY: OSXSAVE is set, so XGETBV is available and enabled.
    let xcr0 = unsafe { xcr0() };
    // The OS must save the SSE and AVX state (bits 1, 2) and the AVX-512
    // opmask, upper-ZMM and high-ZMM state (bits 5, 6, 7).
    if xcr0 & 0xe6 == 0xe6 {
        Kernel::Avx512
    } else {
        Kernel::Avx2
    }
}

/// # Safety
/// The processor must support XGETBV (CPUID.1:ECX.OSXSAVE).
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    _xgetbv(0)
}

// The operations carry the kernels' target features: without them the
// intrinsics inside could not be inlined into the kernels (LLVM does not
// inline a callee with more features than its caller).

/// Prefetch into L1 (SSE, part of the x86-64 baseline; never faults).
#[inline(always)]
unsafe fn prefetch(p: *const u8) {
    _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8_f32(p: *const f32) -> __m256 {
    _mm256_loadu_ps(p)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8_f16(p: *const half::f16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>()))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fma8(a: __m256, b: __m256, c: __m256) -> __m256 {
    _mm256_fmadd_ps(a, b, c)
}

/// The lane sums of eight vectors, by a transposing add tree.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce8(a: &[__m256; ROWS]) -> [f32; ROWS] {
    // hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7]
    let t0 = _mm256_hadd_ps(a[0], a[1]);
    let t1 = _mm256_hadd_ps(a[2], a[3]);
    let t2 = _mm256_hadd_ps(a[4], a[5]);
    let t3 = _mm256_hadd_ps(a[6], a[7]);
    // [Σ0..3 of a0, a1, a2, a3 | Σ4..7 of a0, a1, a2, a3]
    let u0 = _mm256_hadd_ps(t0, t1);
    let u1 = _mm256_hadd_ps(t2, t3);
    let lo = _mm256_permute2f128_ps::<0x20>(u0, u1);
    let hi = _mm256_permute2f128_ps::<0x31>(u0, u1);
    let mut out = [0.0f32; ROWS];
    _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(lo, hi));
    out
}

row_block_kernel! {
    /// AVX2 + FMA, f32 weights.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn avx2_f32(w: &[f32]);
    lanes: 8,
    zero: _mm256_setzero_ps(),
    load_x: load8_f32,
    load_w: load8_f32,
    fma: fma8,
    reduce: reduce8,
    prefetch: prefetch,
    scalar: |v: f32| v,
}

row_block_kernel! {
    /// AVX2 + FMA + F16C, f16 weights.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn avx2_f16(w: &[half::f16]);
    lanes: 8,
    zero: _mm256_setzero_ps(),
    load_x: load8_f32,
    load_w: load8_f16,
    fma: fma8,
    reduce: reduce8,
    prefetch: prefetch,
    scalar: |v: half::f16| f16_bits_to_f32(v.to_bits()),
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn load16_f32(p: *const f32) -> __m512 {
    _mm512_loadu_ps(p)
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn load16_f16(p: *const half::f16) -> __m512 {
    _mm512_cvt_roundph_ps::<_MM_FROUND_CUR_DIRECTION>(_mm256_loadu_si256(p.cast::<__m256i>()))
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn fma16(a: __m512, b: __m512, c: __m512) -> __m512 {
    _mm512_fmadd_ps(a, b, c)
}

/// The two 256-bit halves of a vector added.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn fold16(v: __m512) -> __m256 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    _mm256_add_ps(_mm512_castps512_ps256(v), hi)
}

/// The lane sums of eight 16-lane vectors: halves folded, then [`reduce8`].
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn reduce16(a: &[__m512; ROWS]) -> [f32; ROWS] {
    reduce8(&[
        fold16(a[0]),
        fold16(a[1]),
        fold16(a[2]),
        fold16(a[3]),
        fold16(a[4]),
        fold16(a[5]),
        fold16(a[6]),
        fold16(a[7]),
    ])
}

row_block_kernel! {
    /// AVX-512F, f32 weights.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    fn avx512_f32(w: &[f32]);
    lanes: 16,
    zero: _mm512_setzero_ps(),
    load_x: load16_f32,
    load_w: load16_f32,
    fma: fma16,
    reduce: reduce16,
    prefetch: prefetch,
    scalar: |v: f32| v,
}

row_block_kernel! {
    /// AVX-512F, f16 weights (`vcvtph2ps zmm` is AVX-512F's).
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    fn avx512_f16(w: &[half::f16]);
    lanes: 16,
    zero: _mm512_setzero_ps(),
    load_x: load16_f32,
    load_w: load16_f16,
    fma: fma16,
    reduce: reduce16,
    prefetch: prefetch,
    scalar: |v: half::f16| f16_bits_to_f32(v.to_bits()),
}
