// Shared pieces of recur's kernels: storage conversions, cell formulas, the
// grid-wide barrier of the persistent kernels and the sampler's random
// numbers. Compiled by NVRTC (ptx/build.py); no host code.
#pragma once
#include <cuda_fp16.h>

// Every kernel runs 256-thread blocks (8 warps); the host relies on it.
#define NTHREADS 256
#define NWARPS 8

// +infinity (NVRTC has no math.h INFINITY).
#define INF_F __int_as_float(0x7f800000)

// Cell kinds, as recur_core::CellKind (the engine passes the same numbers).
#define RNN_TANH 0
#define RNN_RELU 1
#define GRU_BEFORE 2
#define GRU_AFTER 3
#define LSTM 4

template <int C> struct Cell {
    static constexpr int G = (C == RNN_TANH || C == RNN_RELU) ? 1 : (C == LSTM ? 4 : 3);
};

// ---- storage <-> f32 --------------------------------------------------------

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }

// The value `x` takes once stored as T (identity for f32, f16 rounding).
template <typename T> __device__ __forceinline__ float stored(float x) { return to_f(from_f<T>(x)); }

// Loads that bypass L1: for data other blocks of the same launch wrote
// (L1 is not coherent across SMs; these read L2).
__device__ __forceinline__ float ld_cg(const float* p) { return __ldcg(p); }
__device__ __forceinline__ float ld_cg(const __half* p) {
    return __half2float(__ushort_as_half(__ldcg(reinterpret_cast<const unsigned short*>(p))));
}

// ---- nonlinearities (accurate expf/tanhf, not the fast intrinsics) ----------

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
// max(x, 0) with NaN passing through, as recur-core and PyTorch.
__device__ __forceinline__ float relu_f(float x) { return x < 0.0f ? 0.0f : x; }

// One hidden unit of one batch row. `x[g]`: input part of gate g, bias_ih
// included; `hg[g]`: recurrent part, bias_hh included (for GRU reset-before,
// hg[2] is W_hn·(r⊙h) + b_hn, computed in a second phase). Formulas and
// operation order as recur-core's cells.
template <int C>
__device__ __forceinline__ float cell_h(const float* x, const float* hg, float h_prev, float c_prev,
                                        float z_before, float* c_out) {
    if (C == RNN_TANH) return tanhf(x[0] + hg[0]);
    if (C == RNN_RELU) return relu_f(x[0] + hg[0]);
    if (C == GRU_AFTER) {
        const float r = sigmoid_f(x[0] + hg[0]);
        const float z = sigmoid_f(x[1] + hg[1]);
        const float n = tanhf(x[2] + r * hg[2]);
        return n + z * (h_prev - n);
    }
    if (C == GRU_BEFORE) {  // second phase: z came from the first
        const float n = tanhf(x[2] + hg[2]);
        return n + z_before * (h_prev - n);
    }
    // LSTM, gates i, f, g, o
    const float i = sigmoid_f(x[0] + hg[0]);
    const float f = sigmoid_f(x[1] + hg[1]);
    const float g = tanhf(x[2] + hg[2]);
    const float o = sigmoid_f(x[3] + hg[3]);
    const float c = f * c_prev + i * g;
    *c_out = c;
    return o * tanhf(c);
}

// ---- grid-wide barrier -----------------------------------------------------
// Only valid in a cooperative launch (all blocks co-resident). `bar` points
// at two zero-initialised words owned by this launch's buffers: an arrival
// count (reset by the last arriver) and a generation number. `gen` is
// thread 0's copy of the generation, read once at kernel start.

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ unsigned barrier_start(unsigned* bar) {
    return threadIdx.x == 0 ? ld_acquire(bar + 1) : 0u;
}

__device__ __forceinline__ void grid_sync(unsigned* bar, unsigned& gen) {
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();  // this block's writes (ordered by the bar.sync) before the arrival
        const unsigned arrived = atomicAdd(bar, 1u);
        if (arrived == gridDim.x - 1) {
            atomicExch(bar, 0u);
            __threadfence();
            atomicAdd(bar + 1, 1u);  // release the waiters
        } else {
            while (ld_acquire(bar + 1) == gen) {
            }
        }
        gen += 1;
        __threadfence();
    }
    __syncthreads();
}

// ---- sampler random numbers ------------------------------------------------
// SplitMix64 (Steele et al.): the i-th output (i from 0) of the stream seeded
// with `s` is mix(s + (i+1)·γ). The engine's host-side SplitMix64 is the same
// stream, so recur-core's sampler can be fed the very numbers used here.

__device__ __forceinline__ unsigned long long splitmix_mix(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ unsigned long long splitmix_nth(unsigned long long seed, unsigned long long i) {
    return splitmix_mix(seed + (i + 1ULL) * 0x9E3779B97F4A7C15ULL);
}
