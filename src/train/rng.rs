//! The run's random number generator, with a state that a checkpoint can
//! save and restore exactly (so that a resumed run draws the same numbers).

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// The trainer's seeded generator (ChaCha12, as `rand`'s `StdRng`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainRng(ChaCha12Rng);

/// A saved generator position: seed, stream and word position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngState {
    /// The 256-bit key.
    pub seed: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// The position in the key stream, in 32-bit words.
    pub word_pos: u128,
}

impl TrainRng {
    /// A generator from a user seed.
    pub fn from_seed(seed: u64) -> Self {
        TrainRng(ChaCha12Rng::seed_from_u64(seed))
    }

    /// The position to save.
    pub fn state(&self) -> RngState {
        RngState {
            seed: self.0.get_seed(),
            stream: self.0.get_stream(),
            word_pos: self.0.get_word_pos(),
        }
    }

    /// A generator at a saved position.
    pub fn from_state(s: &RngState) -> Self {
        let mut r = ChaCha12Rng::from_seed(s.seed);
        r.set_stream(s.stream);
        r.set_word_pos(s.word_pos);
        TrainRng(r)
    }

    /// A sample of normal(mean, std) by the Box–Muller transform (one of the
    /// pair is used, so every call costs the same two uniforms).
    pub fn normal(&mut self, mean: f32, std: f32) -> f32 {
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1 = 1.0 - self.0.random::<f64>();
        let u2 = self.0.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        (mean as f64 + std as f64 * r * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// A sample of uniform(−bound, bound).
    pub fn uniform(&mut self, bound: f32) -> f32 {
        self.0.random_range(-bound..bound)
    }

    /// The underlying generator, for samplers and `rand`'s helpers.
    pub fn inner(&mut self) -> &mut ChaCha12Rng {
        &mut self.0
    }
}

impl RngState {
    /// As text for checkpoint metadata: `seed-hex:stream:word_pos`.
    pub fn to_text(&self) -> String {
        let hex: String = self.seed.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}:{}:{}", self.stream, self.word_pos)
    }

    /// The inverse of [`RngState::to_text`].
    pub fn from_text(t: &str) -> Option<Self> {
        let mut parts = t.split(':');
        let hex = parts.next()?;
        let stream = parts.next()?.parse().ok()?;
        let word_pos = parts.next()?.parse().ok()?;
        if parts.next().is_some() || hex.len() != 64 {
            return None;
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(RngState {
            seed,
            stream,
            word_pos,
        })
    }
}

impl RngCore for TrainRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}
