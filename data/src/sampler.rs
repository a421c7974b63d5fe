//! d2l's two minibatch samplers over a token-id corpus, with batches laid
//! out time-major for the model.
//!
//! # Semantics (d2l's `data_iter_random` / `data_iter_consecutive`)
//! With `L` tokens, batch size `B` and `T` steps:
//! - **Random**: the corpus holds `num_examples = (L − 1) / T` examples,
//!   example `j` starting at token `j·T`; an epoch shuffles the examples and
//!   makes `epoch_size = num_examples / B` batches, batch `i` taking the
//!   examples at positions `i·B .. (i+1)·B` of the shuffled order (the rest
//!   of the order is unused that epoch). Adjacent batches are unrelated:
//!   the trainer re-initialises the hidden state before every batch.
//! - **Consecutive**: the first `B · row_len` tokens, `row_len = L / B`, are
//!   cut into `B` rows of `row_len`; `epoch_size = (row_len − 1) / T`, and
//!   batch `i` takes columns `i·T .. (i+1)·T` of every row. Row `b` of batch
//!   `i + 1` continues row `b` of batch `i`: the trainer carries the hidden
//!   state across the batches of an epoch (detached), and re-initialises it
//!   at the start of each epoch.
//!
//! In both, the targets are the inputs shifted by one token.
//!
//! # Layout
//! d2l's `X` and `Y` are (B, T). recur's model consumes **time-major (T, B)**
//! token ids, so [`Batch::inputs`] and [`Batch::targets`] are (T, B),
//! row-major: `inputs[t * B + b]` is step `t` of sequence `b`, i.e. d2l's
//! `X[b][t]`; `targets[t * B + b]` is `Y[b][t]`, the id that should follow
//! `inputs[t * B + b]`. This is also the order of d2l's flattened loss
//! targets (`Y.T.reshape(-1)`).
//!
//! # Randomness and resuming
//! The sampler keeps **no generator state between epochs**. Epoch `e`'s order
//! is a pure function of `(seed, e)`: a `ChaCha8Rng` seeded with
//! `seed_from_u64(seed)`, on stream `e` (`set_stream(e)`), shuffles the
//! example indices `0..num_examples` with rand 0.9's `SliceRandom::shuffle`.
//! [`Sampler::batch`] takes the batch index. A checkpoint therefore stores
//! `(seed, epoch, next batch index)`; resuming builds the sampler with the
//! same seed, calls [`Sampler::set_epoch`] and continues from that index,
//! bit-identically. The consecutive sampler uses no randomness.
//!
//! Batches are written into two buffers allocated once ([`Sampler::batch`]),
//! or into the caller's ([`Sampler::batch_into`]); sampling never allocates.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::Error;

/// Which of d2l's samplers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// `data_iter_random`: shuffled, non-overlapping examples.
    Random,
    /// `data_iter_consecutive`: `B` rows read left to right.
    Consecutive,
}

impl SamplerKind {
    /// Both kinds.
    pub const ALL: [SamplerKind; 2] = [SamplerKind::Random, SamplerKind::Consecutive];

    /// A stable lowercase name, for checkpoints and the command line.
    pub const fn name(self) -> &'static str {
        match self {
            SamplerKind::Random => "random",
            SamplerKind::Consecutive => "consecutive",
        }
    }

    /// The inverse of [`SamplerKind::name`].
    pub fn from_name(name: &str) -> Option<SamplerKind> {
        SamplerKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the hidden state is carried (detached) from one batch to the
    /// next within an epoch (consecutive) rather than re-initialised before
    /// every batch (random).
    pub const fn carries_state(self) -> bool {
        matches!(self, SamplerKind::Consecutive)
    }

    /// The fewest tokens that give one batch: `B·T + 1` for random
    /// sampling, `B·(T + 1)` for consecutive sampling (every row needs
    /// `T + 1` tokens).
    pub fn min_tokens(self, batch_size: usize, num_steps: usize) -> Result<usize, Error> {
        check_dims(batch_size, num_steps)?;
        let tokens = match self {
            SamplerKind::Random => batch_size
                .checked_mul(num_steps)
                .and_then(|n| n.checked_add(1)),
            SamplerKind::Consecutive => num_steps
                .checked_add(1)
                .and_then(|n| n.checked_mul(batch_size)),
        };
        tokens.ok_or(Error::Dim {
            what: "batch_size * num_steps",
            value: batch_size,
        })
    }

    /// Batches per epoch over `tokens` tokens (0 when the corpus is too
    /// short). `batch_size` and `num_steps` must be non-zero.
    pub fn epoch_size(self, tokens: usize, batch_size: usize, num_steps: usize) -> usize {
        if batch_size == 0 || num_steps == 0 {
            return 0;
        }
        match self {
            SamplerKind::Random => tokens.saturating_sub(1) / num_steps / batch_size,
            SamplerKind::Consecutive => (tokens / batch_size).saturating_sub(1) / num_steps,
        }
    }
}

fn check_dims(batch_size: usize, num_steps: usize) -> Result<(), Error> {
    if batch_size == 0 {
        return Err(Error::Dim {
            what: "batch_size",
            value: 0,
        });
    }
    if num_steps == 0 {
        return Err(Error::Dim {
            what: "num_steps",
            value: 0,
        });
    }
    Ok(())
}

/// One minibatch, borrowed from the sampler's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    /// (T, B) time-major: `inputs[t * B + b]` is step `t` of sequence `b`.
    pub inputs: &'a [u32],
    /// (T, B) time-major, the inputs shifted by one token:
    /// `targets[t * B + b]` follows `inputs[t * B + b]` in the corpus.
    pub targets: &'a [u32],
    /// `T`.
    pub num_steps: usize,
    /// `B`.
    pub batch_size: usize,
}

/// One of d2l's samplers over an owned token-id corpus (see the module
/// docs for semantics, layout and seeding).
#[derive(Debug, Clone)]
pub struct Sampler {
    kind: SamplerKind,
    tokens: Vec<u32>,
    batch_size: usize,
    num_steps: usize,
    seed: u64,
    epoch: u64,
    epoch_size: usize,
    /// Consecutive: tokens per row, `L / B`.
    row_len: usize,
    /// Random: the example indices `0..num_examples` in the current epoch's
    /// order; empty for consecutive sampling.
    order: Vec<usize>,
    /// (T, B) buffers behind [`Sampler::batch`].
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

impl Sampler {
    /// A sampler of `kind` over `tokens` (token ids; their values are not
    /// checked here), making batches of `batch_size` sequences of
    /// `num_steps` steps, positioned at epoch 0. `seed` drives the random
    /// sampler's orders and is ignored by the consecutive one.
    ///
    /// Zero dimensions are [`Error::Dim`]; a corpus too short for one batch
    /// is [`Error::TooShort`] (without a path: see [`Error::with_path`]).
    pub fn new(
        kind: SamplerKind,
        tokens: Vec<u32>,
        batch_size: usize,
        num_steps: usize,
        seed: u64,
    ) -> Result<Sampler, Error> {
        let needed = kind.min_tokens(batch_size, num_steps)?;
        let epoch_size = kind.epoch_size(tokens.len(), batch_size, num_steps);
        if epoch_size == 0 {
            return Err(Error::TooShort {
                path: None,
                sampler: kind,
                batch_size,
                num_steps,
                needed,
                actual: tokens.len(),
            });
        }
        let batch_len = batch_size * num_steps; // checked by min_tokens
        let order = match kind {
            SamplerKind::Random => (0..(tokens.len() - 1) / num_steps).collect(),
            SamplerKind::Consecutive => Vec::new(),
        };
        let mut sampler = Sampler {
            kind,
            row_len: tokens.len() / batch_size,
            tokens,
            batch_size,
            num_steps,
            seed,
            epoch: 0,
            epoch_size,
            order,
            inputs: vec![0; batch_len],
            targets: vec![0; batch_len],
        };
        sampler.set_epoch(0);
        Ok(sampler)
    }

    /// Positions the sampler at `epoch`: for random sampling, derives that
    /// epoch's order from `(seed, epoch)`; any epoch may be set, in any
    /// order, with the same result.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        if self.kind == SamplerKind::Random {
            for (position, example) in self.order.iter_mut().enumerate() {
                *example = position;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(epoch);
            self.order.shuffle(&mut rng);
        }
    }

    /// Batch `index` (`< epoch_size`) of the current epoch, in the
    /// sampler's own buffers.
    pub fn batch(&mut self, index: usize) -> Result<Batch<'_>, Error> {
        let mut inputs = std::mem::take(&mut self.inputs);
        let mut targets = std::mem::take(&mut self.targets);
        let written = self.batch_into(&mut inputs, &mut targets, index);
        self.inputs = inputs;
        self.targets = targets;
        written?;
        Ok(Batch {
            inputs: &self.inputs,
            targets: &self.targets,
            num_steps: self.num_steps,
            batch_size: self.batch_size,
        })
    }

    /// Writes batch `index` (`< epoch_size`) of the current epoch into
    /// caller buffers.
    ///
    /// - `inputs`: (T, B) time-major, length `T·B`; written.
    /// - `targets`: (T, B) time-major, length `T·B`; written; the inputs
    ///   shifted by one token.
    ///
    /// The two are distinct `&mut` slices, so they cannot alias.
    pub fn batch_into(
        &self,
        inputs: &mut [u32],
        targets: &mut [u32],
        index: usize,
    ) -> Result<(), Error> {
        let batch_len = self.batch_len();
        for (what, slice) in [("inputs", &*inputs), ("targets", &*targets)] {
            if slice.len() != batch_len {
                return Err(Error::Length {
                    what,
                    expected: batch_len,
                    actual: slice.len(),
                });
            }
        }
        if index >= self.epoch_size {
            return Err(Error::BatchIndex {
                index,
                epoch_size: self.epoch_size,
            });
        }
        let (b_len, t_len) = (self.batch_size, self.num_steps);
        for b in 0..b_len {
            let start = self.start_of(index, b);
            // start + T < L for every sequence of a valid batch (module docs).
            let window = &self.tokens[start..start + t_len + 1];
            for t in 0..t_len {
                inputs[t * b_len + b] = window[t];
                targets[t * b_len + b] = window[t + 1];
            }
        }
        Ok(())
    }

    /// Corpus position of the first input token of sequence `b` of batch
    /// `index` of the current epoch; `None` unless `index < epoch_size` and
    /// `b < B`.
    pub fn sequence_start(&self, index: usize, b: usize) -> Option<usize> {
        (index < self.epoch_size && b < self.batch_size).then(|| self.start_of(index, b))
    }

    /// [`Sampler::sequence_start`] for indices known to be in range.
    fn start_of(&self, index: usize, b: usize) -> usize {
        match self.kind {
            SamplerKind::Random => self.order[index * self.batch_size + b] * self.num_steps,
            SamplerKind::Consecutive => b * self.row_len + index * self.num_steps,
        }
    }

    /// Which sampler.
    pub fn kind(&self) -> SamplerKind {
        self.kind
    }

    /// Batches per epoch.
    pub fn epoch_size(&self) -> usize {
        self.epoch_size
    }

    /// The epoch the sampler is positioned at.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The seed of the random orders.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// `B`.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// `T`.
    pub fn num_steps(&self) -> usize {
        self.num_steps
    }

    /// `T·B`, the length of each of a batch's two slices.
    pub fn batch_len(&self) -> usize {
        self.batch_size * self.num_steps
    }

    /// The corpus.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The corpus, taken back.
    pub fn into_tokens(self) -> Vec<u32> {
        self.tokens
    }
}
