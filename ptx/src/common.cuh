// Shared pieces of recur's kernels: storage conversions, cell formulas, the
// grid-wide barrier of the persistent kernels and the sampler's random
// numbers. Compiled by NVRTC (ptx/build.py); no host code.
#pragma once
#include <cuda_fp16.h>

#include "dynamic_shared.cuh"

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

// ---- strided walks over a row-major index space -----------------------------

// (row, column) of the linear index i = row·K + column as i advances by a
// fixed stride (a block-strided loop: i = threadIdx.x, +NTHREADS, …). A
// division by a runtime K is some 20 instructions on the conversion pipe;
// the walk divides twice when it starts and then only adds and compares,
// which matters in the per-step loops of the persistent kernels.
struct RowWalk {
    int r, c;    // the current index's row and column
    int dr, dc;  // the stride, dr·K + dc (dc < K)
    int K;

    __device__ __forceinline__ RowWalk(int i, int stride, int K_) : K(K_) {
        r = i / K;
        c = i - r * K;
        dr = stride / K;
        dc = stride - dr * K;
    }

    // On to the index `stride` further.
    __device__ __forceinline__ void next() {
        r += dr;
        c += dc;
        if (c >= K) {
            c -= K;
            ++r;
        }
    }
};

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
// at 64 zero-initialised words owned by this launch's buffers: bar[0] is an
// arrival count (reset by the last arriver), bar[32] a generation number,
// 128 bytes apart so that the polls of the one and the atomics on the
// other do not meet in one L2 line. `gen` is thread 0's copy of the
// generation, read once at kernel start.
#define BAR_GEN 32

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    return emu::poll_acquire(p);
#else
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
#endif
}

__device__ __forceinline__ unsigned ld_relaxed(const unsigned* p) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    return emu::poll_relaxed(p);
#else
    unsigned v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
#endif
}

__device__ __forceinline__ unsigned atom_add_acq_rel(unsigned* p, unsigned v) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
#else
    unsigned old;
    asm volatile("atom.add.acq_rel.gpu.global.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
    return old;
#endif
}

__device__ __forceinline__ void st_relaxed(unsigned* p, unsigned v) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::st_relaxed(p, v);
#else
    asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
#endif
}

__device__ __forceinline__ void st_release(unsigned* p, unsigned v) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::st_release(p, v);
#else
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
#endif
}

__device__ __forceinline__ void fence_acq_rel() {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::fence_acq_rel();
#else
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
#endif
}

__device__ __forceinline__ unsigned barrier_start(unsigned* bar) {
    return threadIdx.x == 0 ? ld_acquire(bar + BAR_GEN) : 0u;
}

// Memory ordering (PTX memory model): the block's writes come before
// thread 0's arrival through bar.sync; the arrival is an acq_rel RMW, so the
// last arriver synchronises with every earlier arrival (one release
// sequence on the counter) and its release of the next generation carries
// all of them (cumulativity) to the waiters, which acquire it. The waiters
// poll with relaxed loads (no fence per poll) and a short back-off, which
// keeps the polls from crowding the counter's L2 slice; one acquire fence
// follows the change.
__device__ __forceinline__ void grid_sync(unsigned* bar, unsigned& gen) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned arrived = atom_add_acq_rel(bar, 1u);
        if (arrived == gridDim.x - 1) {
            st_relaxed(bar, 0u);
            st_release(bar + BAR_GEN, gen + 1u);
        } else {
            while (ld_relaxed(bar + BAR_GEN) == gen) {
                __nanosleep(32);
            }
            fence_acq_rel();
        }
        gen += 1;
    }
    __syncthreads();
}

// The same barrier in one word, as CUDA's cooperative groups build it: the
// first block adds 2^31 − (blocks − 1), every other block 1, so the word's
// top bit flips exactly when the last block arrives and its low bits come
// back to where they were (no reset, any block count on the same word).
// An arrival is one release RMW whose old value says which flip to wait
// for; the wait polls with acquire loads. Against grid_sync it saves the
// last arriver's second store and the waiters' fence. Not used by the
// kernels yet: barrier_bench_flip times it beside grid_sync
// (Gpu::time_grid_barrier) so that a GPU run can decide.
__device__ __forceinline__ unsigned atom_add_release(unsigned* p, unsigned v) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    return __atomic_fetch_add(p, v, __ATOMIC_RELEASE);
#else
    unsigned old;
    asm volatile("atom.add.release.gpu.global.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
    return old;
#endif
}

__device__ __forceinline__ void grid_sync_flip(unsigned* bar) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned blocks = gridDim.x * gridDim.y * gridDim.z;
        const bool first = blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0;
        const unsigned old = atom_add_release(bar, first ? 0x80000000u - (blocks - 1u) : 1u);
        while (((old ^ ld_acquire(bar)) & 0x80000000u) == 0u) {
        }
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
