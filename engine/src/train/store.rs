//! Device buffers of a [`super::DeviceTrainer`]'s storage type: the saved
//! activations and weight copies that the kernels read as f32 or f16
//! ([`Precision`]), held as 16-bit words and addressed by element.

use cust::memory::DeviceBuffer;

use crate::error::Error;
use crate::gpu::Gpu;
use crate::half::F16;
use crate::mem::{alloc, download};
use crate::plan::Precision;

/// `len` elements of f32 or f16.
pub(super) struct Stored {
    words: DeviceBuffer<u16>,
    /// Bytes per element: 4 (f32) or 2 (f16).
    bytes: usize,
}

impl Stored {
    pub(super) fn new(
        len: usize,
        precision: Precision,
        what: &'static str,
    ) -> Result<Stored, Error> {
        let bytes = precision.bytes();
        Ok(Stored {
            words: alloc(len * bytes / 2, what)?,
            bytes,
        })
    }

    /// Elements `first..first + n` as f32 (exact for f16), after the
    /// stream's queued work.
    pub(super) fn to_host(&self, gpu: &Gpu, first: usize, n: usize) -> Result<Vec<f32>, Error> {
        let words = download(gpu, &self.words, (first + n) * self.bytes / 2)?;
        let words = &words[first * self.bytes / 2..];
        Ok(if self.bytes == 2 {
            words.iter().map(|&w| F16(w).to_f32()).collect()
        } else {
            words
                .chunks_exact(2)
                .map(|p| f32::from_bits(u32::from(p[0]) | (u32::from(p[1]) << 16)))
                .collect()
        })
    }

    /// The address of element `elements`.
    pub(super) fn at(&self, elements: usize) -> u64 {
        crate::mem::addr(&self.words) + (elements * self.bytes) as u64
    }

    /// The bytes of `elements` elements.
    pub(super) fn bytes_of(&self, elements: usize) -> usize {
        elements * self.bytes
    }
}

/// The address `elements` f16 past `base`.
pub(super) fn f16_at(base: u64, elements: usize) -> u64 {
    base + (elements * 2) as u64
}
