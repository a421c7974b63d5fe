//! Token upload without a host wait: a small ring of page-locked staging
//! buffers, each with an event. A batch's upload is one copy of its inputs,
//! its targets, and its rows grouped by input token (`order`, `starts`:
//! what dW_ih's gather reads, ptx/src/train.cu `tr_token_grads`). A copy
//! from pageable memory (`cuMemcpyHtoD`) synchronises with the device; from page-locked memory
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
    /// The inputs (T·B), the targets (T·B), the rows in token order (T·B)
    /// and where each token's rows begin (V + 1): [`upload_len`].
    host: LockedBuffer<u32>,
    /// Recorded after the copies that read `host`.
    copied: Event,
    /// Whether `copied` was ever recorded.
    recorded: bool,
}

/// The u32 words of one batch's upload of `n` tokens over `vocab`.
pub(crate) fn upload_len(n: usize, vocab: usize) -> usize {
    n.saturating_mul(3).saturating_add(vocab).saturating_add(1)
}

/// Where the targets, `order` and `starts` begin in an upload of `n`
/// tokens (u32 words; the inputs at 0).
pub(crate) fn upload_offsets(n: usize) -> (usize, usize, usize) {
    (n, 2 * n, 3 * n)
}

/// The ring of staging slots of one trainer.
pub(crate) struct TokenRing {
    slots: Vec<Slot>,
    next: usize,
    /// Tokens per input and target (T·B) and the vocabulary.
    n: usize,
    vocab: usize,
}

impl TokenRing {
    /// `SLOTS` slots for batches of `n` tokens over `vocab` (the context
    /// must be current).
    pub(crate) fn new(n: usize, vocab: usize) -> Result<TokenRing, Error> {
        let mut slots = Vec::with_capacity(SLOTS);
        for _ in 0..SLOTS {
            slots.push(Slot {
                host: LockedBuffer::new(&0u32, upload_len(n, vocab))
                    .doing("allocating page-locked token staging")?,
                copied: Event::new(EventFlags::DISABLE_TIMING).doing("creating a staging event")?,
                recorded: false,
            });
        }
        Ok(TokenRing {
            slots,
            next: 0,
            n,
            vocab,
        })
    }

    /// Queues the copy of `inputs`, `targets` (T·B each, tokens below the
    /// vocabulary: the caller checked them) and the rows grouped by input
    /// token into `d_dst` (the device address of [`upload_len`] u32) on
    /// the GPU's stream: one copy.
    pub(crate) fn upload(
        &mut self,
        gpu: &Gpu,
        d_dst: u64,
        inputs: &[u32],
        targets: &[u32],
    ) -> Result<(), Error> {
        let (n, vocab) = (self.n, self.vocab);
        if inputs.len() != n || targets.len() != n {
            return Err(Error::Mismatch {
                what: "token staging",
                expected: format!("{n} tokens each"),
                actual: format!("{} inputs, {} targets", inputs.len(), targets.len()),
            });
        }
        let slot = &mut self.slots[self.next];
        self.next = (self.next + 1) % SLOTS;
        if slot.recorded {
            slot.copied
                .synchronize()
                .doing("waiting for a staging slot")?;
        }
        let len = upload_len(n, vocab);
        let host = &mut slot.host.as_mut_slice()[..len];
        let (at_targets, at_order, at_starts) = upload_offsets(n);
        host[..at_targets].copy_from_slice(inputs);
        host[at_targets..at_order].copy_from_slice(targets);
        let (order, starts) = host[at_order..].split_at_mut(at_starts - at_order);
        group_by_token(inputs, order, starts);
        let stream = gpu.inner.stream.as_inner();
        // SAFETY: `len` u32 from page-locked memory the slot owns (not
        // written again before its event completes) into a device buffer
        // the caller sized for them.
        let r = unsafe { sys::cuMemcpyHtoDAsync_v2(d_dst, host.as_ptr().cast(), len * 4, stream) };
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

/// Counting sort of the rows by token: `order` (as many as `tokens`) lists
/// the row indices by ascending token, rows of one token in ascending
/// order; token v's rows are `order[starts[v]..starts[v + 1]]` (`starts`:
/// vocabulary + 1 entries; every token below the vocabulary).
pub(crate) fn group_by_token(tokens: &[u32], order: &mut [u32], starts: &mut [u32]) {
    starts.fill(0);
    for &t in tokens {
        starts[t as usize + 1] += 1;
    }
    for v in 1..starts.len() {
        starts[v] += starts[v - 1];
    }
    // starts[v] is where token v's rows begin; fill from there, moving each
    // start on (to where token v + 1's begin), then shift them back.
    for (row, &t) in tokens.iter().enumerate() {
        let at = &mut starts[t as usize];
        order[*at as usize] = row as u32;
        *at += 1;
    }
    for v in (1..starts.len()).rev() {
        starts[v] = starts[v - 1];
    }
    starts[0] = 0;
}

#[cfg(test)]
mod tests {
    use super::group_by_token;

    #[test]
    fn rows_grouped_by_token_in_row_order() {
        let tokens = [2u32, 0, 2, 3, 0, 2];
        let mut order = [u32::MAX; 6];
        let mut starts = [u32::MAX; 5];
        group_by_token(&tokens, &mut order, &mut starts);
        assert_eq!(order, [1, 4, 0, 2, 5, 3]);
        // Token 1 has no rows: an empty range.
        assert_eq!(starts, [0, 2, 2, 5, 6]);
    }
}
