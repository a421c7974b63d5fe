//! Kernel parameter blocks, laid out exactly as the C structs in ptx/src
//! (`RecParams` in rec_params.cuh, `GenParams` in generate.cu).

/// `RecParams`: every recurrent-layer kernel takes one by value.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecParams {
    pub tokens: u64,
    pub pregates: u64,
    pub table: u64,
    pub w_hh: u64,
    pub b_ih: u64,
    pub b_hh: u64,
    pub h0: u64,
    pub c0: u64,
    pub hs: u64,
    pub h_last: u64,
    pub c_last: u64,
    pub rh: u64,
    pub zb: u64,
    pub barrier: u64,
    pub xchg: u64,
    pub flags: u64,
    pub t: i32,
    pub b: i32,
    pub h: i32,
    pub units: i32,
    pub ldb: i32,
    pub t0: i32,
    pub phase: i32,
    pub aux: i32,
    pub tok_fixed: i32,
    pub epoch: u32,
}

/// `GenParams::opts`: the next step's recurrent sums during the logits
/// exchange (`GenBuffers::set_product_ahead`; GEN_AHEAD of
/// ptx/src/gen_cluster_params.cuh).
pub(crate) const GEN_AHEAD: i32 = 1;
/// `GenParams::opts`: the exchanges sent by every thread after a block
/// barrier (`GenBuffers::set_block_sends`; GEN_BLOCK_SENDS).
pub(crate) const GEN_BLOCK_SENDS: i32 = 2;
/// `GenParams::opts`: the greedy draw split across the cluster, each CTA's
/// first maximum sent instead of its logits (`GenBuffers::set_split_argmax`;
/// GEN_SPLIT_ARGMAX).
pub(crate) const GEN_SPLIT_ARGMAX: i32 = 4;

/// `GenParams` of the persistent generation kernels.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GenParams {
    pub prefix: u64,
    pub table: u64,
    pub w_hh: u64,
    pub b_ih: u64,
    pub b_hh: u64,
    pub w_d: u64,
    pub b_d: u64,
    pub h0: u64,
    pub c0: u64,
    pub out: u64,
    pub logits: u64,
    pub hx: u64,
    pub h_last: u64,
    pub c_last: u64,
    pub rh: u64,
    pub zb: u64,
    pub barrier: u64,
    pub seed: u64,
    pub inv_temp: f32,
    pub p: i32,
    pub n: i32,
    pub b: i32,
    pub h: i32,
    pub v: i32,
    pub units: i32,
    pub vrows: i32,
    pub ldb: i32,
    /// The cluster kernels' options ([`GEN_AHEAD`] | [`GEN_BLOCK_SENDS`] |
    /// [`GEN_SPLIT_ARGMAX`]).
    pub opts: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_c_structs() {
        // 16 pointers + 10 ints; 18 eight-byte fields + float + 9 ints.
        assert_eq!(std::mem::size_of::<RecParams>(), 16 * 8 + 10 * 4);
        assert_eq!(std::mem::size_of::<GenParams>(), 184);
        assert_eq!(std::mem::offset_of!(GenParams, inv_temp), 144);
        assert_eq!(std::mem::offset_of!(GenParams, opts), 180);
    }
}
