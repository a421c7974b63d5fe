//! Initial parameters, as the seeds draw them, from the run's seeded RNG.

use recur_core::ModelLayout;

use super::config::InitScheme;
use super::rng::TrainRng;

/// Fills the flat parameter buffer `params` ([`ModelLayout::len`] elements,
/// tensors in [`ModelLayout::tensors`] order) and draws in that order.
///
/// - [`InitScheme::Scratch`]: every matrix normal(0, 0.01), every bias zero
///   (d2l's `get_params`).
/// - [`InitScheme::Pytorch`]: every tensor uniform(−1/√H, 1/√H), which is
///   PyTorch's `reset_parameters` for `nn.RNN/GRU/LSTM` (bound 1/√hidden)
///   and for `nn.Linear(H, V)` (weight: kaiming-uniform with a = √5, i.e.
///   bound 1/√fan_in; bias: 1/√fan_in), fan_in = H for both.
pub fn init_params(
    params: &mut [f32],
    layout: &ModelLayout,
    scheme: InitScheme,
    rng: &mut TrainRng,
) {
    let bound = 1.0 / (layout.hidden as f32).sqrt();
    for span in layout.tensors() {
        let Some(slot) = params.get_mut(span.range()) else {
            continue;
        };
        let is_matrix = span.cols != 0;
        match scheme {
            InitScheme::Scratch if is_matrix => {
                slot.iter_mut().for_each(|p| *p = rng.normal(0.0, 0.01))
            }
            InitScheme::Scratch => slot.fill(0.0),
            InitScheme::Pytorch => slot.iter_mut().for_each(|p| *p = rng.uniform(bound)),
        }
    }
}
