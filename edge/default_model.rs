// The default model of the edge example when no RECUR_EDGE_MODEL is given:
// d2l's GRU shape (gru-reset-before, hidden 256, vocabulary 1,027) with
// deterministic pseudo-random weights, so that the footprint is the real one
// and the output can be checked token for token without a trained model or
// a committed blob. Shared, with `include!`, by build.rs and by
// tests/edge_host.rs (which recomputes the expected text with recur-core).

/// d2l's GRU language model on the Jay Chou corpus.
pub const DEFAULT_LAYOUT: recur_core::ModelLayout = recur_core::ModelLayout {
    cell: recur_core::CellKind::GruResetBefore,
    vocab: 1027,
    hidden: 256,
};

/// 1,027 distinct characters: newline, printable ASCII, then CJK ideographs
/// from U+4E00 on.
pub fn default_vocabulary() -> Vec<char> {
    let mut v = vec!['\n'];
    v.extend((0x20u8..0x7f).map(char::from));
    let mut cp = 0x4e00u32;
    while v.len() < DEFAULT_LAYOUT.vocab {
        v.push(char::from_u32(cp).expect("CJK code point"));
        cp += 1;
    }
    v
}

/// Weights in `ModelLayout` order, uniform in ±`scale` per tensor, from a
/// SplitMix64 stream seeded with 2024. The scales (larger than PyTorch's
/// ±1/√H init) keep the untrained GRU's logits spread, so that greedy
/// decoding does not tie.
pub fn default_params() -> Vec<f32> {
    let layout = DEFAULT_LAYOUT;
    let mut rng = recur_core::rng::SplitMix64(2024);
    let mut next = move || ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
    let scales = [1.0f32, 0.15, 0.2, 0.2, 0.4, 1.0];
    let mut params = Vec::with_capacity(layout.len());
    for (span, scale) in layout.tensors().iter().zip(scales) {
        for _ in 0..span.len() {
            params.push(next() * scale);
        }
    }
    params
}
