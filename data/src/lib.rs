//! # recur-data
//!
//! The data side of recur's character language model, reproducing the Dive
//! into Deep Learning recurrent chapter:
//!
//! - [`Corpus`]: UTF-8 text from a `.txt` file or from a member of a `.zip`,
//!   optionally cleaned up as d2l does ([`CorpusOptions::d2l`]: newlines to
//!   spaces, first 10,000 characters); every bad input is an [`Error`]
//!   naming the path and the reason, with a guard against zip bombs;
//! - [`Vocab`]: characters numbered in order of first appearance, encode /
//!   decode, a string form for checkpoints;
//! - [`Sampler`]: d2l's random and consecutive samplers, reproducible from a
//!   seed and an epoch index, producing time-major (T, B) batches of token
//!   ids without allocating.
//!
//! ```
//! use recur_data::{Corpus, CorpusOptions, Format, Sampler, SamplerKind, Vocab};
//!
//! let text = "想要有直升机\n想要和你飞到宇宙去\n想要和你融化在一起\n";
//! let corpus = Corpus::from_bytes("lyrics.txt", Format::Text, text.as_bytes(), &CorpusOptions::d2l())?;
//! let vocab = Vocab::from_text(corpus.text())?;
//! let tokens = vocab.encode(corpus.text())?;
//! let mut sampler = Sampler::new(SamplerKind::Consecutive, tokens, 2, 4, 42)?;
//! for epoch in 0..2 {
//!     sampler.set_epoch(epoch);
//!     for i in 0..sampler.epoch_size() {
//!         let batch = sampler.batch(i)?;
//!         // (T, B): step t of sequence b is batch.inputs[t * B + b].
//!         assert_eq!(batch.inputs.len(), 4 * 2);
//!     }
//! }
//! # Ok::<(), recur_data::Error>(())
//! ```

#![deny(missing_docs)]

mod archive;
pub mod corpus;
pub mod error;
mod limited;
pub mod sampler;
pub mod vocab;

pub use corpus::{Corpus, CorpusOptions, Format, D2L_CHARS, DEFAULT_MAX_BYTES};
pub use error::{Error, SizeSource};
pub use sampler::{Batch, Sampler, SamplerKind};
pub use vocab::{UnknownChars, Vocab};
