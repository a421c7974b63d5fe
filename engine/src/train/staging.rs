//! Token upload without a host wait: a small ring of page-locked staging
//! buffers, each with an event. A copy from pageable memory
//! (`cuMemcpyHtoD`) synchronises with the device; from page-locked memory
//! `cuMemcpyHtoDAsync` is queued on the stream like a kernel. A slot is
//! reused only after the copy that last read it has run: its event is
//! waited on, which blocks only when the GPU is [`SLOTS`] batches behind.

use cust::event::{Event, EventFlags};
use cust::memory::LockedBuffer;
use cust::sys;

use crate::error::{check, Context as _, Error};
use crate::gpu::Gpu;

/// Staging slots: how many mini-batches the host may run ahead.
pub(crate) const SLOTS: usize = 4;

struct Slot {
    /// (2, T·B): the inputs, then the targets.
    host: LockedBuffer<u32>,
    /// Recorded after the copies that read `host`.
    copied: Event,
    /// Whether `copied` was ever recorded.
    recorded: bool,
}

/// The ring of staging slots of one trainer.
pub(crate) struct TokenRing {
    slots: Vec<Slot>,
    next: usize,
}

impl TokenRing {
    /// `SLOTS` slots of 2·`n` tokens each (the context must be current).
    pub(crate) fn new(n: usize) -> Result<TokenRing, Error> {
        let mut slots = Vec::with_capacity(SLOTS);
        for _ in 0..SLOTS {
            slots.push(Slot {
                host: LockedBuffer::new(&0u32, 2 * n.max(1))
                    .doing("allocating page-locked token staging")?,
                copied: Event::new(EventFlags::DISABLE_TIMING).doing("creating a staging event")?,
                recorded: false,
            });
        }
        Ok(TokenRing { slots, next: 0 })
    }

    /// Queues the copy of `inputs` then `targets` (as many) into `d_pair`
    /// (the device address of at least twice that many u32: the inputs,
    /// the targets right after them) on the GPU's stream: one copy.
    pub(crate) fn upload(
        &mut self,
        gpu: &Gpu,
        d_pair: u64,
        inputs: &[u32],
        targets: &[u32],
    ) -> Result<(), Error> {
        let n = inputs.len();
        let slot = &mut self.slots[self.next];
        self.next = (self.next + 1) % SLOTS;
        if 2 * n > slot.host.len() || targets.len() != n {
            return Err(Error::Mismatch {
                what: "token staging",
                expected: format!("at most {} tokens each", slot.host.len() / 2),
                actual: format!("{} inputs, {} targets", n, targets.len()),
            });
        }
        if slot.recorded {
            slot.copied
                .synchronize()
                .doing("waiting for a staging slot")?;
        }
        let host = slot.host.as_mut_slice();
        host[..n].copy_from_slice(inputs);
        host[n..2 * n].copy_from_slice(targets);
        let stream = gpu.inner.stream.as_inner();
        // SAFETY: 2·`n` u32 from page-locked memory the slot owns (not
        // written again before its event completes) into a device buffer
        // the caller sized for them.
        let r =
            unsafe { sys::cuMemcpyHtoDAsync_v2(d_pair, host.as_ptr().cast(), 2 * n * 4, stream) };
        check(r, "queueing the token upload", None, || {
            format!("{n} inputs and targets")
        })?;
        slot.copied
            .record(&gpu.inner.stream)
            .doing("recording a staging event")?;
        slot.recorded = true;
        Ok(())
    }
}
