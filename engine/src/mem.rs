//! Device memory helpers: allocation, checked copies, fills on the stream.

use cust::error::CudaError;
use cust::memory::{DeviceBuffer, DeviceCopy, DeviceSlice};
use cust::sys;

use crate::error::{check, Error};
use crate::gpu::Gpu;
use crate::half::F16;

/// `n` elements, uninitialised (every engine buffer is written before it is
/// read, or poisoned / zeroed explicitly). At least one element, so that
/// every buffer has a valid address. [`Error::OutOfMemory`] names `what`
/// and its size where the GPU has no room for it, or where the size in
/// bytes is beyond `usize` (callers may pass saturated element counts).
pub(crate) fn alloc<T: DeviceCopy>(n: usize, what: &'static str) -> Result<DeviceBuffer<T>, Error> {
    // SAFETY: DeviceCopy types are plain data; callers write before reading.
    unsafe { DeviceBuffer::uninitialized(n.max(1)) }.map_err(|e| match e {
        // cust's own code for a byte count that overflows.
        CudaError::OutOfMemory | CudaError::InvalidMemoryAllocation => Error::OutOfMemory {
            what,
            bytes: n.max(1).saturating_mul(std::mem::size_of::<T>()),
            free_total: cust::memory::mem_get_info().ok(),
        },
        e => Error::driver(e as u32, "allocating device memory", None, || {
            format!("{what}: {n} elements")
        }),
    })
}

/// The product of `factors` as an element count, saturating: a size beyond
/// `usize` then fails its allocation as [`Error::OutOfMemory`] instead of
/// wrapping to a small buffer the kernels would overrun.
pub(crate) fn elems(factors: &[usize]) -> usize {
    factors.iter().fold(1, |n, &f| n.saturating_mul(f))
}

/// The buffer's device address.
pub(crate) fn addr<T: DeviceCopy>(buf: &DeviceSlice<T>) -> u64 {
    buf.as_device_ptr().as_raw()
}

/// Copies `host` into the first `host.len()` elements of `buf` after the
/// stream's queued work (which may still read `buf`) is done.
pub(crate) fn upload<T: DeviceCopy>(
    gpu: &Gpu,
    buf: &mut DeviceSlice<T>,
    host: &[T],
    what: &'static str,
) -> Result<(), Error> {
    if host.len() > buf.len() {
        return Err(Error::Mismatch {
            what,
            expected: format!("at most {} elements", buf.len()),
            actual: host.len().to_string(),
        });
    }
    gpu.synchronize()?;
    let bytes = std::mem::size_of_val(host);
    // SAFETY: `host.len() <= buf.len()` elements of the same type.
    let r = unsafe { sys::cuMemcpyHtoD_v2(addr(buf), host.as_ptr().cast(), bytes) };
    check(r, "copying to the device", None, || {
        format!("{what}: {} elements", host.len())
    })
}

/// Copies the first `n` elements of `buf` to the host after the stream's
/// queued work is done.
pub(crate) fn download<T: DeviceCopy + Default + Clone>(
    gpu: &Gpu,
    buf: &DeviceSlice<T>,
    n: usize,
) -> Result<Vec<T>, Error> {
    gpu.synchronize()?;
    let mut host = vec![T::default(); n.min(buf.len())];
    let bytes = std::mem::size_of_val(&host[..]);
    // SAFETY: at most `buf.len()` elements of the same type into a host
    // vector of that many.
    let r = unsafe { sys::cuMemcpyDtoH_v2(host.as_mut_ptr().cast(), addr(buf), bytes) };
    check(r, "copying from the device", None, || {
        format!("{n} elements")
    })?;
    Ok(host)
}

/// Fills `buf` with the 32-bit pattern `bits` (queued on the stream).
pub(crate) fn fill32<T: DeviceCopy>(
    gpu: &Gpu,
    buf: &mut DeviceSlice<T>,
    bits: u32,
) -> Result<(), Error> {
    debug_assert_eq!(std::mem::size_of::<T>(), 4);
    gpu.bind()?;
    // SAFETY: the range is exactly the buffer's.
    let r =
        unsafe { sys::cuMemsetD32Async(addr(buf), bits, buf.len(), gpu.inner.stream.as_inner()) };
    check(r, "filling device memory", None, String::new)
}

/// Fills an f16 buffer with the 16-bit pattern `bits` (queued on the stream).
pub(crate) fn fill16(gpu: &Gpu, buf: &mut DeviceSlice<F16>, bits: u16) -> Result<(), Error> {
    gpu.bind()?;
    // SAFETY: the range is exactly the buffer's.
    let r =
        unsafe { sys::cuMemsetD16Async(addr(buf), bits, buf.len(), gpu.inner.stream.as_inner()) };
    check(r, "filling device memory", None, String::new)
}

/// Words of a grid barrier's state (ptx/src/common.cuh: count and
/// generation 128 bytes apart).
pub(crate) const BARRIER_WORDS: usize = 64;

/// The bit pattern of an f32 quiet NaN, for poisoning outputs.
pub(crate) const NAN32: u32 = 0x7FC0_0000;

/// Activations (hidden states) in the storage of the model's precision.
pub enum Activations {
    /// f32 storage.
    F32(DeviceBuffer<f32>),
    /// f16 storage.
    F16(DeviceBuffer<F16>),
}

impl Activations {
    pub(crate) fn new(n: usize, f16: bool, what: &'static str) -> Result<Activations, Error> {
        Ok(if f16 {
            Activations::F16(alloc(n, what)?)
        } else {
            Activations::F32(alloc(n, what)?)
        })
    }

    pub(crate) fn addr(&self) -> u64 {
        match self {
            Activations::F32(b) => addr(b),
            Activations::F16(b) => addr(b),
        }
    }

    /// Elements.
    pub fn len(&self) -> usize {
        match self {
            Activations::F32(b) => b.len(),
            Activations::F16(b) => b.len(),
        }
    }

    /// Whether there are no elements (never: buffers hold at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` values, as f32 (exact for f16 storage).
    pub(crate) fn to_host(&self, gpu: &Gpu, n: usize) -> Result<Vec<f32>, Error> {
        Ok(match self {
            Activations::F32(b) => download(gpu, b, n)?,
            Activations::F16(b) => download(gpu, b, n)?.into_iter().map(F16::to_f32).collect(),
        })
    }

    /// Stores `host` (rounded to f16 for f16 storage).
    pub(crate) fn upload(
        &mut self,
        gpu: &Gpu,
        host: &[f32],
        what: &'static str,
    ) -> Result<(), Error> {
        match self {
            Activations::F32(b) => upload(gpu, b, host, what),
            Activations::F16(b) => {
                let h: Vec<F16> = host.iter().map(|&v| F16::from_f32(v)).collect();
                upload(gpu, b, &h, what)
            }
        }
    }

    pub(crate) fn poison(&mut self, gpu: &Gpu) -> Result<(), Error> {
        match self {
            Activations::F32(b) => fill32(gpu, b, NAN32),
            Activations::F16(b) => fill16(gpu, b, F16::NAN.0),
        }
    }
}
