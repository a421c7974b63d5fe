// The draw of the cluster generation kernels (generate_cluster.cu,
// generate_cluster_regs.cu): gen_draw_tokens at the end of this file, every
// CTA the same tokens. Greedy, it can be split across the cluster
// (GEN_SPLIT_ARGMAX in GenClusterParams::opts). Each CTA holds the logits rows
// [v0, v0 + vn) of its batch rows. Instead of sending them to every CTA (V
// floats into each CTA per batch row) and drawing from the whole row there
// (block_sample_row: a block-wide scan of V logits behind two block
// barriers), each CTA sends the first maximum of its own rows as one pair
// {value, index} to every CTA (CS pairs into each CTA per batch row), and
// one warp per batch row takes the first maximum of the CS pairs.
//
// Same token as block_sample_row's greedy draw: ties go to the lowest
// index (within a CTA as there; across CTAs the lower index wins too), and
// V where a logit is NaN or the maximum is infinite (+inf, or only -inf).
// A CTA whose rows hold a NaN sends index SPLIT_NAN; a CTA without logits
// rows sends (-inf, INT_MAX), which never wins.
//
// The pair buffer of a cluster's BC batch rows: (BC, CS) pairs of two
// words, {value, index as its bits}, pair (bl, rank) at 2·(bl·CS + rank).
#pragma once
#include "cluster_step.cuh"
#include "gen_cluster_params.cuh"
#include "sample.cuh"

#define SPLIT_NAN (-1)

// (bv, bi) ← the first maximum of itself and (v, i).
__device__ __forceinline__ void first_max(float& bv, int& bi, float v, int i) {
    if (v > bv || (v == bv && i < bi)) {
        bv = v;
        bi = i;
    }
}

// The first maximum over a warp's lanes (every lane gets it), NaN flags or-ed.
__device__ __forceinline__ void warp_first_max(float& bv, int& bi, int& nan) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        nan |= __shfl_xor_sync(0xffffffffu, nan, o);
        first_max(bv, bi, ov, oi);
    }
}

// By a whole warp: the first maximum of this CTA's logits of batch row bl,
// row[v0, v0 + vn) (this CTA's shared memory, written and synchronised by
// the caller), sent as pair (bl, rank) to every CTA's `pairs`, counted (8
// bytes) by each one's mbarrier `bar` (local addresses). Lane r sends to
// rank r.
template <int CS>
__device__ __forceinline__ void split_argmax_send(const float* row, int v0, int vn, float* pairs, int bl,
                                                  unsigned rank, unsigned bar) {
    const int lane = (int)threadIdx.x & 31;
    float bv = -INF_F;
    int bi = 0x7fffffff, nan = 0;
    for (int i = lane; i < vn; i += 32) {
        const float v = row[v0 + i];
        if (v != v) nan = 1;
        first_max(bv, bi, v, v0 + i);
    }
    warp_first_max(bv, bi, nan);
    if (lane < CS) {
        const unsigned a = map_rank(smem_u32(pairs + 2 * (bl * CS + (int)rank)), (unsigned)lane);
        const unsigned b = map_rank(bar, (unsigned)lane);
        st_async(a, nan ? -INF_F : bv, b);
        st_async(a + 4u, __int_as_float(nan ? SPLIT_NAN : bi), b);
    }
}

// Every batch row's pair of this CTA, one warp a row, after a block barrier
// (other threads wrote the logits into `lbuf`, (nbc, V)).
template <int CS>
__device__ __forceinline__ void split_argmax_send_rows(const float* lbuf, int V, int v0, int vn, float* pairs,
                                                       int nbc, unsigned rank, unsigned bar) {
    __syncthreads();
    for (int bl = (int)threadIdx.x >> 5; bl < nbc; bl += NWARPS)
        split_argmax_send<CS>(lbuf + (size_t)bl * V, v0, vn, pairs, bl, rank, bar);
}

// By a whole warp, once every CTA's pair of batch row bl is in `pairs`: the
// greedy token of that row (V: unusable logits). Every lane gets it.
template <int CS>
__device__ __forceinline__ int split_argmax_token(const float* pairs, int bl, int V) {
    const int lane = (int)threadIdx.x & 31;
    float bv = -INF_F;
    int bi = 0x7fffffff, nan = 0;
    if (lane < CS) {
        const int i = (int)__float_as_uint(pairs[2 * (bl * CS + lane) + 1]);
        if (i == SPLIT_NAN) nan = 1;
        else first_max(bv, bi, pairs[2 * (bl * CS + lane)], i);
    }
    warp_first_max(bv, bi, nan);
    return nan || bi >= V || isinf(bv) ? V : bi;
}

// Draw `index` of the cluster's batch rows [b0, b0 + nbc), the same tokens
// in every CTA: from the pairs (split: one warp a row) or from the whole
// logits rows in `lbuf` (block_sample_row, greedy or by temperature). Into
// tokbuf, the next step's input (an unusable draw feeds token 0), and by
// rank 0 into p.out. The caller synchronises before tokbuf is read.
template <int CS>
__device__ __forceinline__ void gen_draw_tokens(const GenClusterParams& p, bool split, const float* lbuf,
                                                const float* pairs, int* tokbuf, int nbc, int b0, int index,
                                                int rank) {
    const int V = p.V;
    if (split) {
        for (int bl = (int)threadIdx.x >> 5; bl < nbc; bl += NWARPS) {
            const int t = split_argmax_token<CS>(pairs, bl, V);
            if ((threadIdx.x & 31) == 0) {
                tokbuf[bl] = t == V ? 0 : t;
                if (rank == 0) p.out[(size_t)index * p.B + b0 + bl] = t;
            }
        }
        return;
    }
    for (int bl = 0; bl < nbc; ++bl) {
        const Row row{nullptr, lbuf + (size_t)bl * V};
        const int t = block_sample_row(row, V, p.inv_temp, splitmix_nth(row_seed(p.seed, b0 + bl), index));
        if (threadIdx.x == 0) {
            tokbuf[bl] = t == V ? 0 : t;
            if (rank == 0) p.out[(size_t)index * p.B + b0 + bl] = t;
        }
    }
}
