// h exchanged between the blocks of a persistent kernel without a grid
// barrier: every stored value carries the step it belongs to.
//
// h_t (B, H) in f16 goes out as 8-byte words {half2 of units (2i, 2i+1) of
// one batch row, 32-bit flag}, written with one store each, flag = epoch +
// t + 1, into slot t & 1 of the exchange buffer ((2, B, H/2) words). A
// reader of h_t loads words until each carries its flag: the data came in
// the same single-copy-atomic 8-byte store, so the reader needs no fence,
// the writer no release and nobody an atomic counter; the wait overlaps the
// staging loads themselves. (NCCL's "LL" protocol moves data between GPUs
// the same way.)
//
// Why two slots suffice: a block writes slot t & 1 again at step t + 2,
// after it has read every block's h_{t+1}; each block wrote its h_{t+1}
// after it had read all of h_t from that slot (its h_{t+1} is computed from
// it). So no reader of h_t can see h_{t+2}.
//
// Why flags do not repeat: the host gives each launch an epoch past every
// flag of the launches before it on the same buffer (engine/src/sequence.rs
// zeroes the buffer and starts again at 0 before the 32-bit flags would
// wrap), and a flag is never 0, the zeroed buffer's value.
#pragma once
#include "common.cuh"

__device__ __forceinline__ unsigned long long ld_relaxed_u64(const unsigned long long* p) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    return emu::poll_relaxed_u64(p);
#else
    unsigned long long v;
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
#endif
}

__device__ __forceinline__ ulonglong2 ld_relaxed_u64(const ulonglong2* p) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    return emu::poll_relaxed_u64x2(p);
#else
    ulonglong2 v;
    asm volatile("ld.relaxed.gpu.global.v2.u64 {%0, %1}, [%2];" : "=l"(v.x), "=l"(v.y) : "l"(p) : "memory");
    return v;
#endif
}

__device__ __forceinline__ void st_relaxed_u64(unsigned long long* p, unsigned long long v) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::st_relaxed(p, v);
#else
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
#endif
}

// The word of units (u, u+1) of one row: `lo`, `hi` their f16 bits.
__device__ __forceinline__ unsigned long long flagged_word(unsigned short lo, unsigned short hi, unsigned flag) {
    return ((unsigned long long)flag << 32) | ((unsigned)hi << 16) | lo;
}

__device__ __forceinline__ bool flag_is(unsigned long long w, unsigned flag) { return (unsigned)(w >> 32) == flag; }
__device__ __forceinline__ bool flag_is(const ulonglong2& w, unsigned flag) {
    return flag_is(w.x, flag) && flag_is(w.y, flag);
}

// The half2 data of a piece, to shared memory at `dst` (4-byte aligned for
// one word, 8-byte aligned for two).
__device__ __forceinline__ void put_halves(__half* dst, unsigned long long w) {
    *reinterpret_cast<unsigned*>(dst) = (unsigned)w;
}
__device__ __forceinline__ void put_halves(__half* dst, const ulonglong2& w) {
    *reinterpret_cast<uint2*>(dst) = make_uint2((unsigned)w.x, (unsigned)w.y);
}

// A reader waiting this many polls on one word has met a bug, not a slow
// block (all blocks are resident and a step takes microseconds): the trap
// fails the launch with an error rather than hang the process.
#define FLAG_SPIN_LIMIT (1u << 24)

// hsm[b·ldh + k] = h[b][k] for the (B, H) h in the flagged slot `slot`,
// waiting for `flag`; pieces T of one word (unsigned long long) or two
// (ulonglong2: H a multiple of 4), U loads in flight per thread before the
// first wait. H even.
template <typename T, int U>
__device__ __forceinline__ void stage_h_flagged(__half* hsm, int ldh, const unsigned long long* slot,
                                                unsigned flag, int B, int H) {
    constexpr int P = (int)sizeof(T) / 8;  // words per piece
    const T* s = reinterpret_cast<const T*>(slot);
    const int row = H / (2 * P);           // pieces per batch row
    const int n = B * row;
    RowWalk at(threadIdx.x, NTHREADS, row);
    for (int base = 0; base < n; base += NTHREADS * U) {
        T v[U];
#pragma unroll
        for (int j = 0; j < U; ++j) {
            const int i = base + j * NTHREADS + threadIdx.x;
            if (i < n) v[j] = ld_relaxed_u64(s + i);
        }
#pragma unroll
        for (int j = 0; j < U; ++j) {
            const int i = base + j * NTHREADS + threadIdx.x;
            if (i < n) {
                unsigned spins = 0;
                while (!flag_is(v[j], flag)) {
                    if (++spins == FLAG_SPIN_LIMIT) __trap();
                    v[j] = ld_relaxed_u64(s + i);
                }
                put_halves(hsm + at.r * ldh + at.c * 2 * P, v[j]);
            }
            at.next();
        }
    }
}

// ---- per-block flags ---------------------------------------------------------
// The persistent tensor-core loops without a grid barrier (rec_mma with
// flags, tr_mma_fwd, tr_mma_bwd): one flag word per block, which the block
// sets to a step's tag once its values of that step are stored. Tags only
// grow within a launch and start past every earlier launch's
// (engine/src/sequence.rs flag_epoch), so a flag below the tag is stale and
// one past it is a block steps ahead.

// This block's values of the step are stored (by any of its threads):
// after a block barrier, thread 0 stores `tag` into the block's flag with
// release semantics, which covers the whole block's stores.
__device__ __forceinline__ void release_block_flag(unsigned* flags, unsigned tag) {
    __syncthreads();
    if (threadIdx.x == 0) st_release(flags + blockIdx.x, tag);
}

// Waits until source block flag `f` has reached `tag`: the acquire orders
// that block's released values before this thread's loads of them (and,
// through a block barrier after it, before the block's).
__device__ __forceinline__ void wait_flag_reached(const unsigned* f, unsigned tag) {
    unsigned spins = 0;
    while (ld_acquire(f) < tag) {
        if (++spins == FLAG_SPIN_LIMIT) __trap();
    }
}

// Threads 0 … gridDim.x − 1 each wait for one block's flag to reach `tag`;
// the caller's next block barrier then orders every block's values before
// the whole block's loads.
__device__ __forceinline__ void wait_every_block_flag(const unsigned* flags, unsigned tag) {
    for (int s = threadIdx.x; s < (int)gridDim.x; s += NTHREADS) wait_flag_reached(flags + s, tag);
}
