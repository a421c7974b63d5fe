// The pieces of the training backward as one persistent launch with the
// recurrent product on tensor cores (tr_mma_bwd_f16_<cell>, train_mma.cu):
// a reduce-scatter through L2. Included by train_mma.cu.
//
// Why a reduce-scatter: a block that owns hidden units [u0, u0 + un) has
// their G·un gate gradients dg_t (computed by its own threads) and its own
// G·un gate rows of W_hh (the forward's slice). Its product W_hhᵀ[:, rows] ·
// dg_t[rows] is a partial sum of every unit's dh_{t-1}: H·B floats per block
// and step to L2, and then each block reads back its own units' partials
// from every block, un·B floats each. The gather instead (every block
// reading all of dg_t, G·H·B floats, to multiply by its units' columns of
// W_hh) moves G / 2 times the bytes: at the H 768 LSTM, B 16, with 96
// blocks, 18.9 MB per step against 9.4 MB. (For the RNN cells, G = 1, the
// gather would move half as many; they take the same kernel, one form for
// every cell, until a GPU says the difference matters.)
//
// Why hi + lo and a scale: the mma takes f16 operands, and the gate
// gradients are f32 numbers well below f16's normal range (the loss is a
// mean over T·B rows: at T 1,024, B 16 a gradient is of order 1e-5 and
// less). Each block scales its dg_t by a power of two that puts its largest
// magnitude in [2^14, 2^15) (its own choice: nobody else adds into its
// partials before they are unscaled), splits each scaled value into
// hi = f16(x) and lo = f16(x − hi) (22 bits between them), and multiplies
// both by the exact f16 weights: the product keeps f32's precision, where
// one f16 operand would round each term to 11 bits. The partials are
// unscaled (exact, a power of two) before they leave the block.
//
// Without a grid barrier (flags, forced only until a GPU has timed it):
// every source's partials of step t are needed by every block, so a block
// waits for all of them either way, but per source instead of for the
// last arrival at one counter: after its partial stores and a block
// barrier, thread 0 of each block stores the step's tag into the block's
// own flag word with release semantics; a reader polls (acquire) the
// flags of the sources it is about to read, so that its loads of the
// early blocks' partials need not wait for the slowest block's arrival,
// and no block waits on an atomic counter. Two slots still suffice: a
// block writes slot t & 1 again at step t − 2, after it has read every
// block's partials of step t − 1, each of which its writer stored after
// it had read all of step t's. Tags grow by one per step and per launch
// (the host's epoch, engine/src/sequence.rs flag_epoch: the words zeroed
// before the tags would wrap), so a flag from an earlier step or launch is
// below the current tag; a flag may also be past it (its block a step
// ahead), hence "reached", not "equal".
#pragma once
#include "flag_exchange.cuh"
#include "mma_persist.cuh"

// The power of two s (and 1 / s) that puts a block's largest |dg| with bits
// `maxbits` (|x| as an unsigned) in [2^14, 2^15); 1 for zero, infinity or
// NaN (which then reach the partials as they are). The exponent is kept in
// [−126, 126] so that s and 1 / s are both normal.
__device__ __forceinline__ float2 mb_scale(unsigned maxbits) {
    const int e = (int)(maxbits >> 23);  // the biased exponent (sign cleared)
    if (maxbits == 0u || e == 255) return make_float2(1.0f, 1.0f);
    const int se = max(-126, min(126, 141 - e));  // 2^14 / 2^(e − 127)
    return make_float2(__uint_as_float((unsigned)(se + 127) << 23), __uint_as_float((unsigned)(127 - se) << 23));
}

// The largest |x| (as bits) over the block's threads, each with `bits`:
// the warps' maxima through `wmax` (NWARPS words). Between two barriers on
// wmax; ends with __syncthreads.
__device__ __forceinline__ unsigned mb_block_max(unsigned bits, unsigned* wmax) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) bits = max(bits, __shfl_xor_sync(0xffffffffu, bits, o));
    if ((threadIdx.x & 31) == 0) wmax[threadIdx.x >> 5] = bits;
    __syncthreads();
    unsigned m = wmax[0];
#pragma unroll
    for (int w = 1; w < NWARPS; ++w) m = max(m, wmax[w]);
    return m;
}

// This warp's m-tiles mt = warp, warp + NWARPS, … of the block's partial
// product: part[m·B + n] = inv · Σ_r A[m][r]·(dhi + dlo)[n][r] for hidden
// unit m < H, batch column n < B, over the block's gate rows r (KT k-tiles;
// A the transposed fragments, load_w_frags<true>; dhi, dlo (NT·8, LDK)
// halves, column-major B operands, their padding zero). NT n-tiles: a
// template argument, so that the tile loop unrolls to its loads and mma.
template <int NT>
__device__ __forceinline__ void mb_partials(float* part, const uint4* afrag, const __half* dhi, const __half* dlo,
                                            int MT, int KT, int LDK, int H, int B, float inv) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gq = lane >> 2, tg = lane & 3;
    const int boff = gq * LDK + 2 * tg;
    for (int mt = warp; mt < MT; mt += NWARPS) {
        float acc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
        const uint4* a = afrag + mt * KT * 32 + lane;
        for (int kt = 0; kt < KT; ++kt) {
            const uint4 av = a[kt * 32];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const int o = nt * 8 * LDK + kt * 16 + boff;
                mma16816(acc[nt], av, *reinterpret_cast<const unsigned*>(dhi + o),
                         *reinterpret_cast<const unsigned*>(dhi + o + 8));
                mma16816(acc[nt], av, *reinterpret_cast<const unsigned*>(dlo + o),
                         *reinterpret_cast<const unsigned*>(dlo + o + 8));
            }
        }
        // d0, d1: row gq, columns 2tg, 2tg + 1; d2, d3: row gq + 8. Where B
        // is even the pair is one 8-byte store (a warp's store then fills
        // eight 32-byte sectors), else two 4-byte ones.
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                const int m = mt * 16 + gq + hf * 8, n = nt * 8 + 2 * tg;
                if (m >= H || n >= B) continue;
                float* dst = part + (size_t)m * B + n;
                const float v0 = acc[nt][2 * hf] * inv, v1 = acc[nt][2 * hf + 1] * inv;
                if ((B & 1) == 0) {
                    *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
                } else {
                    dst[0] = v0;
                    if (n + 1 < B) dst[1] = v1;
                }
            }
    }
}

// mb_partials for the block's n-tile count NT ≤ 8 (the planner's limit).
__device__ __forceinline__ void mb_partials_nt(int NT, float* part, const uint4* afrag, const __half* dhi,
                                               const __half* dlo, int MT, int KT, int LDK, int H, int B,
                                               float inv) {
    switch (NT) {
        case 1: mb_partials<1>(part, afrag, dhi, dlo, MT, KT, LDK, H, B, inv); break;
        case 2: mb_partials<2>(part, afrag, dhi, dlo, MT, KT, LDK, H, B, inv); break;
        case 3: mb_partials<3>(part, afrag, dhi, dlo, MT, KT, LDK, H, B, inv); break;
        case 4: mb_partials<4>(part, afrag, dhi, dlo, MT, KT, LDK, H, B, inv); break;
        case 5: mb_partials<5>(part, afrag, dhi, dlo, MT, KT, LDK, H, B, inv); break;
        case 6: mb_partials<6>(part, afrag, dhi, dlo, MT, KT, LDK, H, B, inv); break;
        case 7: mb_partials<7>(part, afrag, dhi, dlo, MT, KT, LDK, H, B, inv); break;
        default: mb_partials<8>(part, afrag, dhi, dlo, MT, KT, LDK, H, B, inv); break;
    }
}

// Where a thread stands in the reduction of one block's partials: piece
// `piece` (P consecutive floats) of the block's un·B items, summed over the
// source blocks s = grp, grp + groups, … (grp < groups = NTHREADS / pieces).
struct MbGather {
    int piece, grp, groups, items;
    bool active;

    __device__ __forceinline__ MbGather(int P, int items_) : items(items_) {
        const int pieces = max(1, items / P);
        groups = NTHREADS / pieces;
        piece = (int)threadIdx.x % pieces;
        grp = (int)threadIdx.x / pieces;
        active = grp < groups && items > 0;
    }
};

// red[grp·items + piece·P + e] = Σ over this thread's source blocks s (in
// order) of src[s·stride + piece·P + e]: every block's partials of this
// block's items, read through L2 (other blocks wrote them before the grid
// barrier, or with `flags` before their flag reached `tag`), R loads in
// flight before they are added.
template <typename V, int R>
__device__ __forceinline__ void mb_gather(float* red, const float* src, size_t stride, int nblk, const MbGather& g,
                                          const unsigned* flags, unsigned tag) {
    constexpr int P = (int)sizeof(V) / 4;
    if (!g.active) return;
    float s[P];
#pragma unroll
    for (int e = 0; e < P; ++e) s[e] = 0.0f;
    const float* p = src + g.piece * P;
    for (int b0 = g.grp; b0 < nblk; b0 += R * g.groups) {
        if (flags) {
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const int b = b0 + r * g.groups;
                if (b < nblk) wait_flag_reached(flags + b, tag);
            }
        }
        V v[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int b = b0 + r * g.groups;
            if (b < nblk) v[r] = __ldcg(reinterpret_cast<const V*>(p + (size_t)b * stride));
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int b = b0 + r * g.groups;
            if (b < nblk) {
                const float* f = reinterpret_cast<const float*>(&v[r]);
#pragma unroll
                for (int e = 0; e < P; ++e) s[e] += f[e];
            }
        }
    }
#pragma unroll
    for (int e = 0; e < P; ++e) red[g.grp * g.items + g.piece * P + e] = s[e];
}
