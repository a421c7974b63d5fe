// Pieces of the thread-block-cluster kernels (sm_90: recurrent_cluster.cu,
// recurrent_cluster_regs.cu, generate_cluster.cu, train_cluster.cu). One cluster of CS CTAs runs a group of batch rows
// through the whole sequence: CTA `rank` owns hidden units
// [rank·U, rank·U + un) and holds their gate rows of W_hh in its shared
// memory; every CTA holds the group's whole h_{t-1} (f32, as stored) in its
// shared memory. Per step each CTA computes its units' new h for the group's
// rows and writes them into every CTA's next h buffer through distributed
// shared memory (st.shared::cluster); one cluster barrier
// (barrier.cluster.arrive.release / wait.acquire) per step replaces the grid
// barrier of the cooperative kernels. h is double-buffered, so one barrier
// suffices: a CTA writes buffer (t+1)&1 of the others only after the barrier
// that ended their reads of it (step t-1). That is recurrent_cluster.cu's
// scheme; the others send with st.async into the receiver's mbarriers
// (push_all_async, mbar_wait_rearm below) and need no cluster barrier.
#pragma once
#include "common.cuh"

// Batch columns one product pass handles (accumulators per thread: G·CB).
#define CB 8

// ---- cluster primitives (PTX ISA 7.8+, sm_90) -------------------------------

__device__ __forceinline__ unsigned cluster_ctarank() {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    return emu::cluster_ctarank();
#else
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
#endif
}

// Every thread of every CTA of the cluster arrives; release: this thread's
// earlier writes (shared, distributed shared, global) are visible to the
// threads that pass the matching wait.
__device__ __forceinline__ void cluster_arrive() {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::cluster_arrive();
#else
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
#endif
}

__device__ __forceinline__ void cluster_wait() {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::cluster_wait();
#else
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}

__device__ __forceinline__ void cluster_sync() {
    cluster_arrive();
    cluster_wait();
}

__device__ __forceinline__ unsigned smem_u32(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

// The shared::cluster address of the same offset in CTA `rank`'s shared memory.
__device__ __forceinline__ unsigned map_rank(unsigned addr, unsigned rank) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    return emu::mapa(addr, rank);
#else
    unsigned r;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(addr), "r"(rank));
    return r;
#endif
}

__device__ __forceinline__ void st_cluster(unsigned addr, float v) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::st_shared_cluster_f32(addr, v);
#else
    asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(addr), "f"(v) : "memory");
#endif
}

// Writes v at the same shared-memory location in all CS CTAs of the cluster.
template <int CS> __device__ __forceinline__ void push_all(const float* local, float v) {
    const unsigned a = smem_u32(local);
#pragma unroll
    for (int r = 0; r < CS; ++r) st_cluster(map_rank(a, r), v);
}

// ---- mbarriers fed by remote stores (PTX ISA 8.1, sm_90) ---------------------
// Data travels by st.async, which counts its bytes into the receiving CTA's
// mbarrier; a CTA waits for its own barrier only. No cluster-wide barrier
// and no memory fence per exchange: a release at cluster scope (the cluster
// barrier's arrive) waits for every earlier memory operation of the thread,
// the global ones included, and was a third of the stall samples of the
// sequence kernel (ncu, benches/results/engine_h100_run6).

__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::mbar_init(bar, count);
#else
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
#endif
}

// The inits visible to the cluster's remote stores (before a cluster barrier).
__device__ __forceinline__ void mbar_init_fence() {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::fence_acq_rel();
#else
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

// Arms the current phase: `bytes` are to arrive (the one expected arrival).
__device__ __forceinline__ void mbar_expect(unsigned bar, unsigned bytes) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::mbar_arrive_expect_tx(bar, bytes);
#else
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
#endif
}

// Waits until the phase of parity `parity` has completed; acquire at
// cluster scope makes the remote stores it counted visible.
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::mbar_wait_parity(bar, parity);
#else
    asm volatile(
        "{\n\t.reg .pred done;\n"
        "RC_WAIT:\n\t"
        "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n\t"
        "@!done bra RC_WAIT;\n}" ::"r"(bar),
        "r"(parity)
        : "memory");
#endif
}

// Stores v at `addr` (shared::cluster) and counts 4 bytes into the mbarrier
// at `bar` (shared::cluster, same CTA as addr).
__device__ __forceinline__ void st_async(unsigned addr, float v, unsigned bar) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::st_async_b32(addr, __float_as_uint(v), bar);
#else
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];" ::"r"(addr),
                 "r"(__float_as_uint(v)), "r"(bar)
                 : "memory");
#endif
}

// The same for 16 bytes: v at `addr` (16-byte aligned), 16 bytes counted.
__device__ __forceinline__ void st_async4(unsigned addr, float4 v, unsigned bar) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    emu::st_async_v4_b32(addr, __float_as_uint(v.x), __float_as_uint(v.y), __float_as_uint(v.z),
                         __float_as_uint(v.w), bar);
#else
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];" ::"r"(
                     addr),
                 "r"(__float_as_uint(v.x)), "r"(__float_as_uint(v.y)), "r"(__float_as_uint(v.z)),
                 "r"(__float_as_uint(v.w)), "r"(bar)
                 : "memory");
#endif
}

// v at the same shared-memory location in all CS CTAs of the cluster, each
// store counted into the mbarrier at `bar` (local shared address) of its CTA.
template <int CS> __device__ __forceinline__ void push_all_async(const float* local, float v, unsigned bar) {
    const unsigned a = smem_u32(local);
#pragma unroll
    for (int r = 0; r < CS; ++r) st_async(map_rank(a, r), v, map_rank(bar, r));
}

// Sending this CTA's block of a vector the cluster gathers to the other
// CS − 1 CTAs (push_block_others): rows bl < nbc of a buffer, in each the G
// pieces [q·H + u0, +un), in words of 16 bytes where H, u0 and un are
// multiples of 4, else of 4 bytes. Thread t sends to rank t mod CS (nothing
// where that is its own CTA) the words t / CS, + NTHREADS / CS, …; the
// plan holds its first word and that stride as (row, piece, word) so that
// the per-step loop needs no division. Fixed for the kernel's whole loop.
struct BlockSendPlan {
    unsigned to;
    bool sends, quads;
    int per_piece;    // words per piece
    int bl, q, w;     // the first word
    int sbl, sq, sw;  // the stride
};

template <int CS, int G>
__device__ __forceinline__ BlockSendPlan block_send_plan(int H, int u0, int un, unsigned rank) {
    BlockSendPlan p;
    p.quads = ((H | u0 | un) & 3) == 0;
    p.per_piece = p.quads ? un / 4 : un;
    p.to = threadIdx.x % CS;
    p.sends = p.to != rank && p.per_piece > 0;
    // pp, per_row: the divisors, kept nonzero for a CTA without units (which sends nothing).
    const int pp = p.per_piece > 0 ? p.per_piece : 1, per_row = G * pp;
    const int first = (int)threadIdx.x / CS, stride = NTHREADS / CS;
    p.bl = first / per_row;
    p.q = first % per_row / pp;
    p.w = first % per_row % pp;
    p.sbl = stride / per_row;
    p.sq = stride % per_row / pp;
    p.sw = stride % per_row % pp;
    return p;
}

// The block, already in `buf` (stride ld floats, 16-byte aligned; the
// caller's threads wrote it, then synchronised), into the same place of the
// other CTAs' buffers, counted by their mbarrier `bar` (local address). All
// threads share the sends: the cell loop that computed the block runs on
// un·nb threads, and sending from them would leave each G·CS stores of 4
// bytes while the rest wait.
template <int G>
__device__ __forceinline__ void push_block_others(const BlockSendPlan& p, const float* buf, int ld, int nbc, int H,
                                                  int u0, unsigned bar) {
    if (!p.sends) return;
    const unsigned local = smem_u32(buf), rbar = map_rank(bar, p.to);
    const int width = p.quads ? 4 : 1;
    int bl = p.bl, q = p.q, w = p.w;
    while (bl < nbc) {
        const int off = bl * ld + q * H + u0 + w * width;
        const unsigned a = map_rank(local + 4u * (unsigned)off, p.to);
        if (p.quads) st_async4(a, *reinterpret_cast<const float4*>(buf + off), rbar);
        else st_async(a, buf[off], rbar);
        // Advance by the stride: each part stays below its bound after one carry.
        w += p.sw;
        q += p.sq;
        bl += p.sbl;
        if (w >= p.per_piece) {
            w -= p.per_piece;
            ++q;
        }
        if (q >= G) {
            q -= G;
            ++bl;
        }
    }
}

// Waits for phase parity `parity` of the mbarrier at `bar`, then (after every
// thread of the CTA has passed: no phase can complete twice under a slow
// waiter) thread 0 arms its next phase for `bytes`.
__device__ __forceinline__ void mbar_wait_rearm(unsigned bar, unsigned parity, unsigned bytes) {
    mbar_wait(bar, parity);
    __syncthreads();
    if (threadIdx.x == 0) mbar_expect(bar, bytes);
}

// ---- layout ----------------------------------------------------------------

// Row stride of a weight slice in shared memory, in elements: a multiple of
// 4 with an odd number of 4-element quads, so that 8 (f32, 16-byte loads)
// or 16 (f16, 8-byte loads) consecutive rows start in different banks.
__host__ __device__ inline int cl_ldw(int K) {
    const int q = (K + 3) / 4;
    return 4 * (q | 1);
}

// Row stride of the h buffers (floats): K rounded up to a quad, the padding zero.
__host__ __device__ inline int cl_ldh(int K) { return (K + 3) / 4 * 4; }

// Threads of the product per row: the k quads are split among nkg groups.
__host__ __device__ inline int cl_nkg(int rows, int nq) {
    const int n = NTHREADS / (rows > 0 ? rows : 1);
    return n < nq ? n : nq;
}

// ---- the product -----------------------------------------------------------

__device__ __forceinline__ float4 ld_quad(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 ld_quad(const __half* p) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&v.x));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&v.y));
    return make_float4(a.x, a.y, b.x, b.y);
}

// v, unknown to the compiler from here on (no code motion across it; the
// emulator's host compiler has no such asm and needs none).
__device__ __forceinline__ void opaque_int(int& v) {
#ifndef RECUR_EMU
    asm volatile("" : "+r"(v));
#endif
}

// A thread's place in cl_product over un rows of nq quads: k group kg and
// row u (thread kg·un + u), or none (`active` false). Fixed for a kernel's
// whole loop, so that a step loop that holds it needs no division.
struct ClLane {
    int nkg, kg, u;
    bool active;
    __device__ __forceinline__ ClLane(int un, int nq) {
        nkg = cl_nkg(un, nq);
        const int t = threadIdx.x;
        active = un > 0 && t < nkg * un;
        kg = un > 0 ? t / un : 0;
        u = t - kg * un;
    }
};

// Partial products of the slice's rows: w holds rows g·un + u (g < G,
// u < un) of stride ldw; h holds nb ≤ CB batch rows of stride ldh, both
// zero-padded to nq quads. Thread (kg, u) (t = kg·un + u; `at`, of
// ClLane(un, nq)) sums the quads q ≡ kg (mod nkg) of gates [g_first, g_end)
// for every batch row and writes red[((kg·G + g)·CB + b)·un + u]; cl_sum
// adds the groups.
template <int G, typename W>
__device__ __forceinline__ void cl_product(float* red, const W* w, int ldw, int un, int g_first, int g_end,
                                           const float* h, int ldh, int nb, int nq, const ClLane& at) {
    if (!at.active) return;
    int kg = at.kg, u = at.u;
    // Opaque here, so that the compiler recomputes the addresses derived
    // from them (a few integer instructions) instead of keeping them live
    // across the caller's whole time loop.
    opaque_int(kg);
    opaque_int(u);
    const int nkg = at.nkg;
    float acc[G][CB];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int b = 0; b < CB; ++b) acc[g][b] = 0.0f;
    for (int q = kg; q < nq; q += nkg) {
        float4 wv[G];
#pragma unroll
        for (int g = 0; g < G; ++g)
            wv[g] = (g >= g_first && g < g_end) ? ld_quad(w + (size_t)(g * un + u) * ldw + 4 * q)
                                                : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int b = 0; b < CB; ++b) {
            if (b < nb) {
                const float4 hv = *reinterpret_cast<const float4*>(h + b * ldh + 4 * q);
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    if (g >= g_first && g < g_end) {
                        float a = acc[g][b];
                        a = fmaf(wv[g].x, hv.x, a);
                        a = fmaf(wv[g].y, hv.y, a);
                        a = fmaf(wv[g].z, hv.z, a);
                        a = fmaf(wv[g].w, hv.w, a);
                        acc[g][b] = a;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int g = 0; g < G; ++g)
        if (g >= g_first && g < g_end)
#pragma unroll
            for (int b = 0; b < CB; ++b)
                if (b < nb) red[((kg * G + g) * CB + b) * un + u] = acc[g][b];
}

// The same, the thread's place worked out here.
template <int G, typename W>
__device__ __forceinline__ void cl_product(float* red, const W* w, int ldw, int un, int g_first, int g_end,
                                           const float* h, int ldh, int nb, int nq) {
    cl_product<G, W>(red, w, ldw, un, g_first, g_end, h, ldh, nb, nq, ClLane(un, nq));
}

// Row g·un + u, batch row b of the product: the groups' partial sums added.
template <int G>
__device__ __forceinline__ float cl_sum(const float* red, int g, int b, int u, int un, int nkg) {
    float s = 0.0f;
    for (int kg = 0; kg < nkg; ++kg) s += red[((kg * G + g) * CB + b) * un + u];
    return s;
}

// Copies the slice's gate rows of a (G·H, K) weight matrix into shared
// memory: local row g·un + u = global row g·H + u0 + u, zero-padded to ldw.
template <int G, typename W>
__device__ void cl_load_rows(W* dst, const W* src, int H, int K, int u0, int un, int ldw) {
    const int n = G * un * ldw;
    for (int i = threadIdx.x; i < n; i += NTHREADS) {
        const int r = i / ldw, k = i - r * ldw;
        const int g = r / un, u = r - g * un;
        dst[i] = k < K ? src[((size_t)g * H + u0 + u) * K + k] : from_f<W>(0.0f);
    }
}

// Shared memory (bytes) of a weight slice of `rows` rows, 16-byte rounded.
__host__ __device__ inline int cl_rows_bytes(int rows, int K, int wbytes) {
    return (rows * cl_ldw(K) * wbytes + 15) / 16 * 16;
}

// ---- register-resident cluster kernels (recurrent_cluster_regs.cu, train_cluster_regs.cuh) ----

// Slots a round of the transposing reduction leaves of n: the lower half,
// rounded up (an odd n pads its upper half with a zero).
__host__ __device__ constexpr int transpose_half(int n) { return (n + 1) / 2; }

// One round of warp_transpose_sum_n on the lane's first N values: lanes
// whose bit S is set keep the upper half (values [H, N), padded with a
// zero to H where N is odd), the others the lower H, each adding its
// partner's. H shuffles.
template <int S, int N> __device__ __forceinline__ void transpose_round(float (&v)[32], unsigned lane) {
    constexpr int H = transpose_half(N);
    const bool upper = (lane & (unsigned)S) != 0u;
#pragma unroll
    for (int i = 0; i < H; ++i) {
        const float hi = i + H < N ? v[i + H] : 0.0f;
        const float send = upper ? v[i] : hi;
        const float keep = upper ? hi : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, S);
    }
}

// Sum over the warp's 32 lanes of each of the N ≤ 32 values v[0..N): on
// return the lane holds the total of value transpose_slot<N>(lane) (or of a
// padding zero where that is -1). Each round halves the values a lane
// keeps: for N = 32, 16 + 8 + 4 + 2 + 1 shuffles instead of 32 · 5, and lane
// j holds value j; for fewer values fewer (N = 6, a GRU item's gates at one
// batch row: 3 + 2 + 1 + 1 + 1).
template <int N> __device__ __forceinline__ float warp_transpose_sum_n(float (&v)[32]) {
    static_assert(N >= 1 && N <= 32, "a lane holds at most 32 values");
    constexpr int N1 = transpose_half(N), N2 = transpose_half(N1), N3 = transpose_half(N2),
                  N4 = transpose_half(N3);
    const unsigned lane = threadIdx.x & 31u;
    transpose_round<16, N>(v, lane);
    transpose_round<8, N1>(v, lane);
    transpose_round<4, N2>(v, lane);
    transpose_round<2, N3>(v, lane);
    transpose_round<1, N4>(v, lane);
    return v[0];
}

// The value whose total warp_transpose_sum_n<N> leaves in `lane`, or -1
// where it leaves a padding zero: the rounds, undone from the last, add the
// upper half's offset where the lane's bit is set; an index past the
// round's values is padding.
template <int N> __device__ __forceinline__ int transpose_slot(unsigned lane) {
    if (N == 32) return (int)lane;  // no padding: spelled out for the compiler
    const int n[5] = {N, transpose_half(N), transpose_half(transpose_half(N)),
                      transpose_half(transpose_half(transpose_half(N))),
                      transpose_half(transpose_half(transpose_half(transpose_half(N))))};
    int index = 0;
#pragma unroll
    for (int r = 4; r >= 0; --r) {
        if (lane & (16u >> r)) index += transpose_half(n[r]);
        if (index >= n[r]) return -1;
    }
    return index;
}

// All 32 values: lane j holds the total of value j.
__device__ __forceinline__ float warp_transpose_sum(float (&v)[32]) { return warp_transpose_sum_n<32>(v); }

// Their shape: clusters of RC_CS CTAs, warp w of CTA `rank` owns hidden units
// u0 + RC_UPW·w + ul (ul < RC_UPW), H ≤ RC_K.
#define RC_CS 16
#define RC_UPW 2
#define RC_K 256

// Most batch rows per cluster of a forward: RC_UPW·G·rows partial sums per
// lane ≤ 32.
template <int C> struct RcRows {
    static constexpr int value = 32 / (RC_UPW * Cell<C>::G);
};

// A CTA's share of a register cluster kernel: CTA `rank` of cluster
// blockIdx.x / RC_CS owns units [u0, u0 + un) (U = ceil(H / RC_CS) each;
// `ranks` CTAs own any) of the cluster's batch rows [b0, b0 + nbc) (BC per
// cluster).
struct RcSpan {
    int u0, un, b0, nbc, ranks;
    __device__ __forceinline__ RcSpan(int H, int U, int B, int BC) {
        u0 = (int)cluster_ctarank() * U;
        un = max(0, min(U, H - u0));
        b0 = (blockIdx.x / RC_CS) * BC;
        nbc = max(0, min(BC, B - b0));
        ranks = (H + U - 1) / U;
    }
};

// Where a thread of a register cluster kernel with at most BCMAX batch rows
// per cluster stands in its CTA's span: warp `warp` owns units u0 +
// RC_UPW·warp + ul. The lane computes the cell for one item, unit j = u0 +
// RC_UPW·warp + iu of row b = b0 + ib, as copy `copy` of the `copies` lanes
// holding it (they split the item's remote stores, rc_send). `working`: the
// warp owns a unit; warps past the CTA's units skip the time loop, so every
// waiting warp also sends (the kernels' phase argument).
template <int BCMAX>
struct RcLane : RcSpan {
    static constexpr int NI = RC_UPW * BCMAX;  // items per warp
    int lane, warp;
    bool working;
    int copy, copies, iu, ib, j, b;
    bool valid;

    __device__ __forceinline__ RcLane(int H, int U, int B, int BC) : RcSpan(H, U, B, BC) {
        lane = threadIdx.x & 31;
        warp = threadIdx.x >> 5;
        working = RC_UPW * warp < un && nbc > 0;
        const int item = lane % NI;
        copy = lane / NI;
        copies = (32 - item + NI - 1) / NI;
        iu = item / BCMAX;
        ib = item % BCMAX;
        j = u0 + RC_UPW * warp + iu;
        valid = RC_UPW * warp + iu < un && ib < nbc;
        b = b0 + ib;
    }
};

// Arms one more mbarrier at `bar` for `bytes` (thread 0 of a CTA that
// owns units; reset-before's r ⊙ h exchange).
__device__ __forceinline__ void rc_arm_one(unsigned bar, unsigned bytes, int un) {
    if (threadIdx.x == 0 && un > 0) {
        mbar_init(bar, 1);
        mbar_init_fence();
        mbar_expect(bar, bytes);
    }
}

// Step t's wait in the register cluster kernels (t ≥ 1): h_{t-1} has
// arrived in buffer t & 1 (phase (t − 1) >> 1 of its mbarrier at bar0 +
// 8·(t & 1)); thread 0 re-arms the barrier for the buffer's next use (step
// t + 2) for `bytes`.
__device__ __forceinline__ void rc_step_wait(unsigned bar0, int t, unsigned bytes) {
    if (t > 0) {
        const unsigned bar = bar0 + 8 * (t & 1);
        mbar_wait(bar, (unsigned)((t - 1) >> 1) & 1u);
        if (threadIdx.x == 0) mbar_expect(bar, bytes);
    }
}

// Arms the two ping-pong buffers' mbarriers at bar0 and bar0 + 8 for
// `bytes` each (thread 0 of a CTA that owns units, un > 0; the others never
// receive).
__device__ __forceinline__ void rc_arm(unsigned bar0, unsigned bytes, int un) {
    if (threadIdx.x == 0 && un > 0) {
        mbar_init(bar0, 1);
        mbar_init(bar0 + 8, 1);
        mbar_init_fence();
        mbar_expect(bar0, bytes);
        mbar_expect(bar0 + 8, bytes);
    }
}

// v into the shared-memory word `local` (of this CTA's layout) of the
// unit-owning CTAs r = copy, copy + copies, … < ranks, counted by their
// mbarrier `bar`: one lane's share of an item's sends (RcLane).
__device__ __forceinline__ void rc_send(unsigned local, float v, unsigned bar, int copy, int copies, int ranks) {
    for (int r = copy; r < ranks; r += copies) st_async(map_rank(local, r), v, map_rank(bar, r));
}

// This lane's weights of a row-major (G·H, H) matrix m: rows g·H + u0 +
// RC_UPW·warp + ul at w[ul·G + g], k ∈ [4·lane, +4) ∪ [128 + 4·lane, +4)
// (conflict-free 16-byte loads of a 256-float vector), f32, zero for units
// past the CTA's `un` and k ≥ H.
template <int G, typename W>
__device__ __forceinline__ void rc_load_rows(float (&w)[RC_UPW * G][8], const W* m, int H, int u0, int un,
                                             int warp, int lane) {
#pragma unroll
    for (int ul = 0; ul < RC_UPW; ++ul) {
        const int u = RC_UPW * warp + ul;
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const W* row = m + ((size_t)g * H + u0 + u) * H;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const int k = (i < 4 ? 4 * lane : 128 + 4 * lane) + (i & 3);
                w[ul * G + g][i] = (u < un && k < H) ? to_f(row[k]) : 0.0f;
            }
        }
    }
}

// The lane's partial products over its 8 k: v[q·BCMAX + r] = w[q] · h[r]
// for the rows q < ROWS and batch rows r < nbc (the rest of v zero), ready
// for warp_transpose_sum.
template <int ROWS, int BCMAX>
__device__ __forceinline__ void rc_partials(float (&v)[32], const float (&w)[ROWS][8], const float (*h)[RC_K],
                                            int nbc, int lane) {
#pragma unroll
    for (int i = 0; i < 32; ++i) v[i] = 0.0f;
#pragma unroll
    for (int r = 0; r < BCMAX; ++r) {
        if (r < nbc) {
            const float4 h0 = *reinterpret_cast<const float4*>(&h[r][4 * lane]);
            const float4 h1 = *reinterpret_cast<const float4*>(&h[r][128 + 4 * lane]);
            // One chain of 8 per sum: the lane's ROWS·nbc chains are
            // independent, so their latency hides behind each other, and two
            // chains of 4 joined by an add cost an instruction more per sum.
#pragma unroll
            for (int q = 0; q < ROWS; ++q) {
                float a = w[q][0] * h0.x;
                a = fmaf(w[q][1], h0.y, a);
                a = fmaf(w[q][2], h0.z, a);
                a = fmaf(w[q][3], h0.w, a);
                a = fmaf(w[q][4], h1.x, a);
                a = fmaf(w[q][5], h1.y, a);
                a = fmaf(w[q][6], h1.z, a);
                a = fmaf(w[q][7], h1.w, a);
                v[q * BCMAX + r] = a;
            }
        }
    }
}

// rc_partials for the gates [G0, G0 + GN) of the lane's RC_UPW·G rows
// (w[ul·G + g]): v[(ul·GN + g - G0)·BCMAX + r] = w[ul·G + g] · h[r] for the
// batch rows r < nbc, the rest of v zero.
template <int G, int G0, int GN, int BCMAX>
__device__ __forceinline__ void rc_partials_gates(float (&v)[32], const float (&w)[RC_UPW * G][8],
                                                  const float (*h)[RC_K], int nbc, int lane) {
    float sel[RC_UPW * GN][8];
#pragma unroll
    for (int ul = 0; ul < RC_UPW; ++ul)
#pragma unroll
        for (int g = 0; g < GN; ++g)
#pragma unroll
            for (int i = 0; i < 8; ++i) sel[ul * GN + g][i] = w[ul * G + G0 + g][i];
    rc_partials<RC_UPW * GN, BCMAX>(v, sel, h, nbc, lane);
}

// The sums of gates [G0, G0 + GN) of this lane's item (unit iu of its warp,
// batch row ib) against h (BCMAX rows of RC_K), into out[G0 + g] where
// `valid`: the lane's partials of its 8 k, one transposing warp reduction
// through the warp's swap row (read back before the closing __syncwarp, so
// the row may be rewritten right after). Every lane of the warp takes part.
template <int G, int G0, int GN, int BCMAX>
__device__ __forceinline__ void rc_item_sums(float (&out)[4], const float (&w)[RC_UPW * G][8],
                                             const float (*h)[RC_K], float* swap, int nbc, int lane, int iu,
                                             int ib, bool valid) {
    // The lane's values: RC_UPW·GN rows × BCMAX batch rows. Where they are
    // few (a kernel compiled for one row) the reduction takes fewer
    // rounds' shuffles; above 16 it saves at most a few of the first
    // round's and costs the lane's slot arithmetic, so it runs on all 32.
    constexpr int NV = RC_UPW * GN * BCMAX;
    constexpr int N = NV > 16 ? 32 : NV;
    float v[32];
    if (G0 == 0 && GN == G) rc_partials<RC_UPW * G, BCMAX>(v, w, h, nbc, lane);
    else rc_partials_gates<G, G0, GN, BCMAX>(v, w, h, nbc, lane);
    const float total = warp_transpose_sum_n<N>(v);
    const int slot = transpose_slot<N>((unsigned)lane);
    if (slot >= 0) swap[slot] = total;
    __syncwarp();
    if (valid) {
#pragma unroll
        for (int g = 0; g < GN; ++g) out[G0 + g] = swap[(iu * GN + g) * BCMAX + ib];
    }
    __syncwarp();
}
