//! The loss and norm statistics a [`super::DeviceTrainer`] keeps on the
//! device between two [`super::DeviceTrainer::take_stats`] calls.

/// Sums over the mini-batches since the last take, kept on the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainStats {
    /// Σ over batches of (batch mean loss × T·B).
    pub loss_sum: f64,
    /// Σ over batches of the global gradient norm before clipping (batches where clip ran).
    pub norm_sum: f64,
    /// Forward calls since the last take.
    pub batches: u64,
    /// The first batch (index since the last take) whose loss or gradient norm was not finite, and that value.
    pub first_non_finite: Option<(u64, f32)>,
}

/// Words of the device-side record (ptx/src/train.cu, "statistics kept on
/// the device"): loss sum and norm sum (f64 bits), 1 + the first
/// non-finite batch (0: none), that value's f32 bits.
pub(crate) const STATS_WORDS: usize = 4;

impl TrainStats {
    /// Decodes the device record; `batches` is counted by the host.
    pub(crate) fn from_words(words: &[u64], batches: u64) -> TrainStats {
        let first_non_finite = match words[2] {
            0 => None,
            k => Some((k - 1, f32::from_bits(words[3] as u32))),
        };
        TrainStats {
            loss_sum: f64::from_bits(words[0]),
            norm_sum: f64::from_bits(words[1]),
            batches,
            first_non_finite,
        }
    }
}

use super::DeviceTrainer;

impl DeviceTrainer {
    /// The mean loss of the last [`DeviceTrainer::forward`] (waits for it;
    /// for tests — training reads [`DeviceTrainer::take_stats`]).
    pub fn loss(&self) -> Result<f32, crate::error::Error> {
        Ok(crate::mem::download(&self.gpu, &self.loss, 1)?[0])
    }

    /// The global norm of the last [`DeviceTrainer::clip`] (waits for it;
    /// for tests).
    pub fn norm(&self) -> Result<f32, crate::error::Error> {
        Ok(crate::mem::download(&self.gpu, &self.norm, 1)?[0])
    }

    /// The statistics since the last take (the one host wait of a training
    /// loop); resets them on the device.
    pub fn take_stats(&mut self) -> Result<TrainStats, crate::error::Error> {
        let words = crate::mem::download(&self.gpu, &self.stats, STATS_WORDS)?;
        let stats = TrainStats::from_words(&words, self.batches);
        self.zero(super::addr(&self.stats), STATS_WORDS * 2)?;
        self.batches = 0;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_device_record() {
        let none = TrainStats::from_words(&[2.5f64.to_bits(), 1.0f64.to_bits(), 0, 0], 3);
        assert_eq!(none.loss_sum, 2.5);
        assert_eq!(none.norm_sum, 1.0);
        assert_eq!(none.batches, 3);
        assert_eq!(none.first_non_finite, None);
        let bad = TrainStats::from_words(&[0, 0, 2, f32::INFINITY.to_bits() as u64], 5);
        assert_eq!(bad.first_non_finite, Some((1, f32::INFINITY)));
    }
}
