// Greedy and temperature sampling of one token from a row of logits by a
// whole block, as recur_core::sample::{argmax, sample} (top_k = 0).
#pragma once
#include "common.cuh"

// Rows of up to this many logits are staged in shared memory once and read
// from there by every pass; longer rows are read through L2 each pass.
#define SAMPLE_STAGE 4096

struct Row {
    const float* global;  // the row in global memory (other blocks wrote it)
    const float* staged;  // its copy in shared memory, or null
    __device__ __forceinline__ float operator[](int i) const { return staged ? staged[i] : ld_cg(global + i); }
};

// Copies x[0..V) into shared memory (if it fits), STAGE_UNROLL loads in flight.
__device__ Row stage_row(const float* x, int V) {
    __shared__ float s_row[SAMPLE_STAGE];
    Row row{x, nullptr};
    __syncthreads();  // earlier readers of s_row are done
    if (V <= SAMPLE_STAGE) {
        for (int base = 0; base < V; base += NTHREADS * 8) {
            float v[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int i = base + j * NTHREADS + threadIdx.x;
                v[j] = i < V ? ld_cg(x + i) : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int i = base + j * NTHREADS + threadIdx.x;
                if (i < V) s_row[i] = v[j];
            }
        }
        row.staged = s_row;
    }
    __syncthreads();
    return row;
}

// Block-wide first maximum of row[0..V) (ties: lowest index; *bad = true when
// a logit is NaN or the maximum is infinite, which recur-core rejects).
// Every thread gets the result.
__device__ void block_argmax(const Row& row, int V, float* best_val, int* best_idx, bool* bad) {
    __shared__ float s_val[NWARPS];
    __shared__ int s_idx[NWARPS];
    __shared__ int s_nan[NWARPS];
    float bv = -INF_F;
    int bi = 0x7fffffff;
    int has_nan = 0;
    for (int i = threadIdx.x; i < V; i += NTHREADS) {
        const float v = row[i];
        if (v != v) has_nan = 1;
        if (v > bv || (v == bv && i < bi)) {
            bv = v;
            bi = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) {
            bv = ov;
            bi = oi;
        }
        has_nan |= __shfl_xor_sync(0xffffffffu, has_nan, o);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // earlier users of the scratch are done
    if (lane == 0) {
        s_val[warp] = bv;
        s_idx[warp] = bi;
        s_nan[warp] = has_nan;
    }
    __syncthreads();
    bv = s_val[0];
    bi = s_idx[0];
    has_nan = s_nan[0];
    for (int w = 1; w < NWARPS; ++w) {
        if (s_val[w] > bv || (s_val[w] == bv && s_idx[w] < bi)) {
            bv = s_val[w];
            bi = s_idx[w];
        }
        has_nan |= s_nan[w];
    }
    *best_val = bv;
    *best_idx = bi;
    *bad = has_nan != 0 || bi >= V || isinf(bv);
}

// The token drawn from the logits row[0..V): V when the row has a NaN (or
// only -inf, or +inf); argmax when inv_temp == 0; else the inverse-CDF draw
// of recur-core's sampler with weights e^((x_i - max)·inv_temp) summed in
// f64 and u = (bits >> 11)·2^-53·total. Every thread gets the token. (The
// cluster generation kernels pass a row already in shared memory.)
__device__ int block_sample_row(const Row& row, int V, float inv_temp, unsigned long long bits) {
    __shared__ double s_sum[NWARPS];
    __shared__ int s_found;
    __shared__ int s_last[NWARPS];
    float m;
    int best;
    bool bad;
    block_argmax(row, V, &m, &best, &bad);
    if (bad) return V;
    if (inv_temp == 0.0f) return best;
    // Thread t takes the contiguous chunk [t·chunk, (t+1)·chunk).
    const int chunk = (V + NTHREADS - 1) / NTHREADS;
    const int lo = min(V, threadIdx.x * chunk), hi = min(V, lo + chunk);
    double mine = 0.0;
    for (int i = lo; i < hi; ++i) mine += (double)expf((row[i] - m) * inv_temp);
    // Block-wide exclusive prefix of the chunk sums.
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    double incl = mine;
    for (int o = 1; o < 32; o <<= 1) {
        const double up = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += up;
    }
    __syncthreads();
    if (lane == 31) s_sum[warp] = incl;
    if (threadIdx.x == 0) s_found = 0x7fffffff;
    __syncthreads();
    double before = incl - mine, total = 0.0;
    for (int w = 0; w < NWARPS; ++w) {
        if (w < warp) before += s_sum[w];
        total += s_sum[w];
    }
    const double u = (double)(bits >> 11) * (1.0 / 9007199254740992.0) * total;
    if (u >= before && u < before + mine) {
        double acc = before;
        for (int i = lo; i < hi; ++i) {
            const float w = expf((row[i] - m) * inv_temp);
            if (w > 0.0f) {
                acc += (double)w;
                if (u < acc) {
                    atomicMin(&s_found, i);
                    break;
                }
            }
        }
    }
    __syncthreads();
    int tok = s_found;
    if (tok == 0x7fffffff) {  // block-uniform: read after the barrier
        // u reached the total through rounding: the last token with weight,
        // as recur-core.
        int last = -1;
        for (int i = threadIdx.x; i < V; i += NTHREADS)
            if (expf((row[i] - m) * inv_temp) > 0.0f) last = i;
        for (int o = 16; o > 0; o >>= 1) last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
        if (lane == 0) s_last[warp] = last;
        __syncthreads();
        tok = s_last[0];
        for (int w = 1; w < NWARPS; ++w) tok = max(tok, s_last[w]);
        if (tok < 0) tok = best;
    }
    __syncthreads();  // s_found / s_sum free for the next call
    return tok;
}

// block_sample_row on logits x[0..V) in global memory (written by other
// blocks), staged in shared memory first where they fit.
__device__ int block_sample(const float* x, int V, float inv_temp, unsigned long long bits) {
    return block_sample_row(stage_row(x, V), V, inv_temp, bits);
}

// Seed of batch row b's stream of random numbers (engine: sampler_rng).
__device__ __forceinline__ unsigned long long row_seed(unsigned long long seed, int b) {
    return seed ^ ((unsigned long long)b * 0xD1B54A32D192ED03ULL);
}
