//! The training loop of d2l's `train_and_predict_rnn` (scratch) and
//! `train_and_predict_rnn_pytorch` (concise), over any [`Backend`].

use std::time::Instant;

use recur_core::ModelLayout;
use recur_data::{Sampler, SamplerKind, Vocab};

use super::backend::{Backend, Decode};
use super::checkpoint::Checkpoint;
use super::config::{Sampling, StatePolicy, TrainConfig};
use super::error::TrainError;
use super::init::init_params;
use super::metrics::EpochRecord;
use super::rng::TrainRng;

/// A run in progress: backend, data, RNG and the figures so far.
pub struct Trainer<B: Backend> {
    config: TrainConfig,
    vocab: Vocab,
    backend: B,
    sampler: Sampler,
    rng: TrainRng,
    /// Epochs completed.
    epoch: usize,
    history: Vec<EpochRecord>,
}

/// The sampler kind of a configuration.
pub fn sampler_kind(s: Sampling) -> SamplerKind {
    match s {
        Sampling::Random => SamplerKind::Random,
        Sampling::Consecutive => SamplerKind::Consecutive,
    }
}

/// The model layout of a configuration over a vocabulary of `vocab` characters.
pub fn model_layout(config: &TrainConfig, vocab: usize) -> ModelLayout {
    ModelLayout {
        cell: config.cell,
        vocab,
        hidden: config.hidden,
    }
}

impl<B: Backend> Trainer<B> {
    /// A new run: parameters drawn from the seeded RNG as the config's
    /// [`InitScheme`](super::config::InitScheme) says, zero optimizer state,
    /// zero hidden state.
    pub fn fresh(
        config: TrainConfig,
        vocab: Vocab,
        sampler: Sampler,
        mut backend: B,
    ) -> Result<Self, TrainError> {
        let layout = backend.spec().layout;
        let mut rng = TrainRng::from_seed(config.seed);
        let mut params = vec![0.0f32; layout.len()];
        init_params(&mut params, &layout, config.init, &mut rng);
        backend.upload_params(&params)?;
        backend.reset_state()?;
        Ok(Trainer {
            config,
            vocab,
            backend,
            sampler,
            rng,
            epoch: 0,
            history: Vec::new(),
        })
    }

    /// A run continued from `ckpt` (already checked against `config` and
    /// `vocab` by the caller): parameters, optimizer, carried state, RNG,
    /// epoch and history as saved.
    pub fn resume(
        config: TrainConfig,
        vocab: Vocab,
        sampler: Sampler,
        mut backend: B,
        ckpt: &Checkpoint,
    ) -> Result<Self, TrainError> {
        backend.upload_params(&ckpt.params)?;
        backend.upload_optimizer(&ckpt.optimizer)?;
        match &ckpt.state {
            Some(state) => backend.upload_state(state)?,
            None => backend.reset_state()?,
        }
        Ok(Trainer {
            config,
            vocab,
            backend,
            sampler,
            rng: TrainRng::from_state(&ckpt.rng),
            epoch: ckpt.epoch,
            history: ckpt.history.clone(),
        })
    }

    /// Epochs completed.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The figures of every completed epoch.
    pub fn history(&self) -> &[EpochRecord] {
        &self.history
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The backend.
    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Mini-batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.sampler.epoch_size()
    }

    /// Trains one epoch. `progress(done, total)` is called after every
    /// mini-batch. A NaN or infinite loss or gradient norm stops training
    /// with [`TrainError::Diverged`] at the end of the epoch; the backend
    /// applies no update from that batch on, so the parameters are the last
    /// finite ones.
    pub fn train_epoch(
        &mut self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<EpochRecord, TrainError> {
        let epoch = self.epoch + 1;
        let start = Instant::now();
        if self.config.state == StatePolicy::PerEpoch {
            self.backend.reset_state()?;
        }
        self.sampler.set_epoch(self.epoch as u64);
        let batches = self.sampler.epoch_size();
        let mut count = 0usize;
        for index in 0..batches {
            let batch = self
                .sampler
                .batch(index)
                .map_err(|e| TrainError::Data(e.to_string()))?;
            if self.config.state == StatePolicy::PerBatch {
                self.backend.reset_state()?;
            } else {
                self.backend.detach_state()?;
            }
            self.backend.forward(batch.inputs, batch.targets)?;
            self.backend.backward()?;
            self.backend.clip_grads(self.config.clip)?;
            self.backend.step()?;
            count += batch.inputs.len();
            progress(index + 1, batches);
        }
        // The one wait for the device per epoch.
        let stats = self.backend.take_stats()?;
        if let Some((batch, value)) = stats.first_non_finite {
            return Err(TrainError::Diverged {
                epoch,
                batch: batch as usize,
                loss: value,
            });
        }
        let seconds = start.elapsed().as_secs_f64();
        let loss = stats.loss_sum / count as f64;
        let record = EpochRecord {
            epoch,
            perplexity: loss.exp(),
            loss,
            seconds,
            tokens_per_s: count as f64 / seconds.max(1e-9),
            grad_norm: stats.norm_sum / batches as f64,
        };
        self.epoch = epoch;
        self.history.push(record);
        Ok(record)
    }

    /// Greedy continuations of every prefix (d2l's sample lines), each
    /// `sample_len` characters after the prefix.
    pub fn samples(&mut self) -> Result<Vec<String>, TrainError> {
        let mut out = Vec::with_capacity(self.config.prefixes.len());
        for prefix in &self.config.prefixes {
            let ids = self
                .vocab
                .encode(prefix)
                .map_err(|e| TrainError::Config(format!("sample prefix {prefix:?}: {e}")))?;
            let generated = self.backend.generate(
                &ids,
                self.config.sample_len,
                Decode::Greedy,
                &mut self.rng,
            )?;
            out.push(
                self.vocab
                    .decode(&generated)
                    .map_err(|e| TrainError::Data(e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// A checkpoint of the run as it stands (between epochs).
    pub fn checkpoint(&self) -> Result<Checkpoint, TrainError> {
        let layout = self.backend.spec().layout;
        let mut params = vec![0.0f32; layout.len()];
        self.backend.download_params(&mut params)?;
        // Only the `Once` policy carries state into the next epoch.
        let state = match self.config.state {
            StatePolicy::Once => Some(self.backend.download_state()?),
            _ => None,
        };
        Ok(Checkpoint {
            config: self.config.clone(),
            vocabulary: self.vocab.chars().to_vec(),
            epoch: self.epoch,
            params,
            optimizer: self.backend.download_optimizer()?,
            state,
            rng: self.rng.state(),
            history: self.history.clone(),
        })
    }
}
