//! Device buffers of a [`super::DeviceTrainer`]'s storage type: the saved
//! activations and weight copies that the kernels read as f32 or f16
//! ([`Precision`]), held as 16-bit words and addressed by element.

use cust::memory::DeviceBuffer;

use crate::error::Error;
use crate::mem::alloc;
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

    /// The address of element `elements`.
    pub(super) fn at(&self, elements: usize) -> u64 {
        crate::mem::addr(&self.words) + (elements * self.bytes) as u64
    }
}

/// The address `elements` f16 past `base`.
pub(super) fn f16_at(base: u64, elements: usize) -> u64 {
    base + (elements * 2) as u64
}
