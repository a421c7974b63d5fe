//! Which instruction set the matrix product runs on, detected once at run
//! time (no `std`: `cpuid` and `xgetbv` directly).

use core::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level of the matrix-product kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, whatever the compiler vectorises for the build target.
    Generic,
    /// x86-64 AVX2 and FMA kernels.
    Avx2Fma,
}

/// 0: not detected yet; otherwise 1 + the index of the detected level.
static DETECTED: AtomicU8 = AtomicU8::new(0);

impl Isa {
    /// The best level this processor (and its operating system) supports.
    pub fn detect() -> Isa {
        match DETECTED.load(Ordering::Relaxed) {
            1 => Isa::Generic,
            2 => Isa::Avx2Fma,
            _ => {
                let isa = if avx2_fma_available() {
                    Isa::Avx2Fma
                } else {
                    Isa::Generic
                };
                let code = match isa {
                    Isa::Generic => 1,
                    Isa::Avx2Fma => 2,
                };
                DETECTED.store(code, Ordering::Relaxed);
                isa
            }
        }
    }

    /// Whether this processor can run the level.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Generic => true,
            Isa::Avx2Fma => Isa::detect() == Isa::Avx2Fma,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_fma_available() -> bool {
    use core::arch::x86_64::__cpuid;
    if cfg!(all(target_feature = "avx2", target_feature = "fma")) {
        return true;
    }
    let leaf1 = __cpuid(1);
    let fma = leaf1.ecx & (1 << 12) != 0;
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    let avx = leaf1.ecx & (1 << 28) != 0;
    if !(fma && osxsave && avx) {
        return false;
    }
    // SAFETY: OSXSAVE is set, so XGETBV is available and enabled.
    let xcr0 = unsafe { xcr0() };
    // The OS must save both the SSE (bit 1) and the AVX (bit 2) state.
    if xcr0 & 0b110 != 0b110 {
        return false;
    }
    if __cpuid(0).eax < 7 {
        return false;
    }
    let leaf7 = core::arch::x86_64::__cpuid_count(7, 0);
    leaf7.ebx & (1 << 5) != 0
}

/// # Safety
/// The processor must support XGETBV (CPUID.1:ECX.OSXSAVE).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    core::arch::x86_64::_xgetbv(0)
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_fma_available() -> bool {
    false
}
