// The training's matrix products with their operands in flight several
// slices ahead (included by train.cu after train_gemm.cuh): tr_gemm_ring,
// tr_gemm_ring_f16, tr_gemm_ring_f32_f16 take the arguments of tr_gemm,
// tr_gemm_f16, tr_gemm_f32_f16 and give the same C, bit for bit: the same
// tiles, splits, TF32 parts, products in the same order and the same
// finish (train_gemm.cuh). What differs is how a slice reaches shared
// memory.
//
// tr_gemm loads the next slice into registers while it multiplies the
// current one: one slice of lookahead, so each slice waits out most of a
// round trip to L2 or memory whenever the products do not fill it. Here
// each thread copies its share of a slice with cp.async into a ring of
// TG_RING_STAGES slices in dynamic shared memory, TG_RING_STAGES − 1
// slices ahead of the one being multiplied, then splits its own elements
// from the ring into the TF32 parts of a double-buffered staged slice: one
// block barrier per slice instead of two. A thread reads back only the
// ring words it copied itself, so the ring needs no barrier: its own
// cp.async.wait_group orders them.
//
// The thread ↔ element map of an operand whose k stride is 1 also differs:
// lane (r = lane / 4, c = lane % 4) of warp w takes k = c + 4·(w % 4) of row
// r + 8·(w / 4) + 16·i (8 rows × 16 bytes per warp and element), so that
// its stores into the staged slice (rows TG_BM + TG_PAD or TG_BN + TG_PAD
// words, 8 banks apart) hit 32 banks; tr_gemm's map (16 lanes along k of
// one row) stores 4 lanes to a bank.
#pragma once
#include "dynamic_shared.cuh"

#define TG_RING_STAGES 4

// cp.async of one 4-byte word into shared memory from global src (4-byte
// aligned), or zeros where `zero` (src then ignored: nothing is read).
__device__ __forceinline__ void tg_cp4(unsigned* dst, const void* src, bool zero) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu): lands at the wait
    emu::cp_async(dst, src, 4, zero ? 0 : 4);
#else
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile(
        "{\n .reg .pred z;\n setp.ne.b32 z, %2, 0;\n cp.async.ca.shared.global [%0], [%1], 4, z;\n}" ::"r"(d),
        "l"(src), "r"((int)zero)
        : "memory");
#endif
}

// The same with the word's first src_bytes (0, 2 or 4) from src, the rest
// zero (an f16 element alone).
__device__ __forceinline__ void tg_cp4_part(unsigned* dst, const void* src, unsigned src_bytes) {
#ifdef RECUR_EMU
    emu::cp_async(dst, src, 4, src_bytes);
#else
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(src), "r"(src_bytes) : "memory");
#endif
}

__device__ __forceinline__ void tg_cp_commit() {
#ifdef RECUR_EMU
    emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Every committed group of the thread's copies but the newest N landed.
template <int N> __device__ __forceinline__ void tg_cp_wait() {
#ifdef RECUR_EMU
    emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// A thread's share of an operand's slices (TgMap, with the k-stride-1 map
// of the header) through the ring: its element i of a slice is ring word
// i·256 + t, its own column, read by no other thread.
template <int X, typename T>
struct TgRingLoader : TgMap<X> {
    static constexpr int N = TgMap<X>::N;
    const T* ptr;
    // f16: bit i, element i is the high half of its aligned 4-byte word
    // (the same in every slice: a slice moves the offset by 16·sk halves).
    unsigned high = 0;

    __device__ __forceinline__ TgRingLoader(const T* p, int XN, long long sx, long long sk, int x0, int k_begin,
                                            bool k_major)
        : TgMap<X>(XN, sx, sk, x0, k_begin, k_major, true), ptr(p) {
        if (sizeof(T) == 2) {
#pragma unroll
            for (int i = 0; i < N; ++i) {
                const auto at = reinterpret_cast<unsigned long long>(ptr + this->off + this->step_i * i);
                high |= (unsigned)((at >> 1) & 1) << i;
            }
        }
    }

    // Queues the copies of the slice at k0 (zero outside X × [.., k_end))
    // into `ring` (this stage's N × 256 words), then moves on a slice. An
    // f16 element is copied as its aligned word where it is the word's high
    // half, else as its 2 bytes alone (nothing past the operand is read).
    __device__ __forceinline__ void copy(unsigned* ring, int k0, int k_end) {
        const T* p = ptr + this->off;
        const int t = threadIdx.x;
        const int k_left = k_end - k0 - this->kk0;  // element i inside while dk·i < k_left
#pragma unroll
        for (int i = 0; i < N; ++i) {
            const bool in = ((this->valid_x >> i) & 1u) && this->dk * i < k_left;
            if (sizeof(T) == 4) {
                tg_cp4(ring + i * TR_THREADS + t, p, !in);
            } else {
                // The element's aligned word (4-byte aligned either way);
                // outside, nothing is read from it.
                const bool hi = (high >> i) & 1u;
                const char* src = reinterpret_cast<const char*>(p) - (hi ? 2 : 0);
                tg_cp4_part(ring + i * TR_THREADS + t, src, in ? (hi ? 4u : 2u) : 0u);
            }
            p += this->step_i;
        }
        this->off += this->step_k;
    }

    // This thread's words of a landed ring stage into the staged slice as
    // their TF32 parts, as TgLoader::store (f16: hi only, exact in TF32).
    __device__ __forceinline__ void split(unsigned* hi, unsigned* lo, const unsigned* ring) const {
        const int t = threadIdx.x;
#pragma unroll
        for (int i = 0; i < N; ++i) {
            const unsigned word = ring[i * TR_THREADS + t];
            const int at = this->s0 + this->ds * i;
            if (sizeof(T) == 4) {
                tf32_split(__uint_as_float(word), &hi[at], &lo[at]);
            } else {
                const unsigned short bits = (unsigned short)(word >> (((high >> i) & 1u) * 16));
                hi[at] = __float_as_uint(__half2float(__ushort_as_half(bits)));
            }
        }
    }
};

// Shared memory of one block: the two rings (A: TG_RING_STAGES × 8 × 256
// words, B: × 4 × 256), then two staged slices {A hi, A lo, B hi, B lo}.
// engine/src/train/launch.rs RING_SMEM_BYTES must equal it.
#define TG_RING_A_WORDS (TG_RING_STAGES * TgMap<TG_BM>::N * TR_THREADS)
#define TG_RING_B_WORDS (TG_RING_STAGES * TgMap<TG_BN>::N * TR_THREADS)
#define TG_STAGED_WORDS (2 * (TG_BK * (TG_BM + TG_PAD) + TG_BK * (TG_BN + TG_PAD)))
#define TG_RING_SMEM_BYTES (4 * (TG_RING_A_WORDS + TG_RING_B_WORDS + 2 * TG_STAGED_WORDS))

template <typename TA, typename TB>
__device__ __forceinline__ void tg_gemm_ring(float* c, const TA* a, const TB* b, const float* bias, int M, int N,
                                             int K, long long sam, long long sak, long long sbk, long long sbn,
                                             int ldc, int accumulate, int splits, float* work, unsigned* arrivals) {
    DYNAMIC_SHARED(unsigned, smem);
    // A launch with less than the rings and slices need (a size out of step
    // with the engine's) stops here rather than writing past them.
    if (dynamic_shared_bytes() < TG_RING_SMEM_BYTES) __trap();
    unsigned* ring_a = smem;
    unsigned* ring_b = ring_a + TG_RING_A_WORDS;
    unsigned* staged = ring_b + TG_RING_B_WORDS;
    const TgBlock tb(M, K, splits);
    TgRingLoader<TG_BM, TA> la(a, M, sam, sak, tb.m0, tb.k_begin, sak == 1);
    TgRingLoader<TG_BN, TB> lb(b, N, sbn, sbk, tb.n0, tb.k_begin, sbk == 1);
    constexpr int NA = TgRingLoader<TG_BM, TA>::N, NB = TgRingLoader<TG_BN, TB>::N;
    constexpr int S = TG_RING_STAGES;
    const int slices = tb.k_begin < tb.k_end ? (tb.k_end - tb.k_begin + TG_BK - 1) / TG_BK : 0;
    // Group j holds slice j's copies (empty past the last slice), so that
    // at slice s every group up to s has landed once all but the newest
    // S − 2 have.
#pragma unroll
    for (int s = 0; s < S - 1; ++s) {
        if (s < slices) {
            la.copy(ring_a + s * NA * TR_THREADS, tb.k_begin + s * TG_BK, tb.k_end);
            lb.copy(ring_b + s * NB * TR_THREADS, tb.k_begin + s * TG_BK, tb.k_end);
        }
        tg_cp_commit();
    }
    float acc[2][4][4];
    tg_zero(acc);
    for (int s = 0; s < slices; ++s) {
        tg_cp_wait<S - 2>();
        // Staged slice s % 2: its last readers (slice s − 2's products)
        // finished before slice s − 1's barrier, which this thread passed.
        unsigned* st = staged + (s & 1) * TG_STAGED_WORDS;
        TgSliceA& as_hi = *reinterpret_cast<TgSliceA*>(st);
        TgSliceA& as_lo = *reinterpret_cast<TgSliceA*>(st + TG_BK * (TG_BM + TG_PAD));
        TgSliceB& bs_hi = *reinterpret_cast<TgSliceB*>(st + 2 * TG_BK * (TG_BM + TG_PAD));
        TgSliceB& bs_lo = *reinterpret_cast<TgSliceB*>(st + 2 * TG_BK * (TG_BM + TG_PAD) + TG_BK * (TG_BN + TG_PAD));
        const int stage = s % S;
        la.split(&as_hi[0][0], &as_lo[0][0], ring_a + stage * NA * TR_THREADS);
        lb.split(&bs_hi[0][0], &bs_lo[0][0], ring_b + stage * NB * TR_THREADS);
        // Slice s + S − 1 into the stage this thread read at slice s − 1.
        const int ahead = s + S - 1;
        if (ahead < slices) {
            const int into = ahead % S;
            la.copy(ring_a + into * NA * TR_THREADS, tb.k_begin + ahead * TG_BK, tb.k_end);
            lb.copy(ring_b + into * NB * TR_THREADS, tb.k_begin + ahead * TG_BK, tb.k_end);
        }
        tg_cp_commit();
        __syncthreads();
        tg_slice_products<sizeof(TA) == 4, sizeof(TB) == 4>(acc, as_hi, as_lo, bs_hi, bs_lo, tb.wm, tb.wn, tb.g,
                                                            tb.q);
    }
    tg_finish(acc, tb, c, bias, M, N, ldc, accumulate, splits, work, arrivals);
}

TR_GEMM_KERNEL(tr_gemm_ring, tg_gemm_ring, float, float)
TR_GEMM_KERNEL(tr_gemm_ring_f16, tg_gemm_ring, __half, __half)
TR_GEMM_KERNEL(tr_gemm_ring_f32_f16, tg_gemm_ring, float, __half)
