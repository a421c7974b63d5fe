// The pieces of the persistent tensor-core time loops (f16 weights and h,
// mma.sync m16n8k16 with f32 accumulation), shared by the inference
// forward (recurrent_mma.cu: rec_mma_*) and the training forward
// (train_mma.cu: tr_mma_fwd_*): a block's gate rows of W_hh as A fragments
// in shared memory, h_{t-1} staged from global memory, the product split
// over the 8 warps by k tile, and the warps' partial sums added in warp
// order into one pre-activation per (gate row, batch column).
//
// Shared memory layout (bytes), shared with engine/src/plan.rs (mma_smem):
//   A fragments  MT·KT·32 uint4
//   h            NT·8 rows × LDH halves, LDH = KT·16 + 8
//   red          NWARPS·MMA_TILES·32·4 floats
//   pre          MT·16 × NTC·8 floats
#pragma once
#include "common.cuh"

__device__ __forceinline__ void mma16816(float* d, const uint4& a, unsigned b0, unsigned b1) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    const unsigned af[4] = {a.x, a.y, a.z, a.w}, bf[2] = {b0, b1};
    emu::mma_m16n8k16_f16(d, af, bf);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ unsigned pack_half2(__half lo, __half hi) {
    return (unsigned)__half_as_ushort(lo) | ((unsigned)__half_as_ushort(hi) << 16);
}

// hsm[b·ldh + k] = src[b·H + k] for the (B, H) halves at src (read through
// L2), moved in pieces T of P halves (H a multiple of P, src aligned to T),
// U loads in flight per thread before any store.
template <typename T, int U>
__device__ __forceinline__ void stage_h16(__half* hsm, int ldh, const void* src, int B, int H) {
    constexpr int P = (int)sizeof(T) / 2;
    const T* s = static_cast<const T*>(src);
    const int n = B * H / P;
    RowWalk at(threadIdx.x, NTHREADS, H / P);
    for (int base = 0; base < n; base += NTHREADS * U) {
        T v[U];
#pragma unroll
        for (int j = 0; j < U; ++j) {
            const int i = base + j * NTHREADS + threadIdx.x;
            if (i < n) v[j] = __ldcg(s + i);
        }
#pragma unroll
        for (int j = 0; j < U; ++j) {
            const int i = base + j * NTHREADS + threadIdx.x;
            if (i < n) *reinterpret_cast<T*>(hsm + at.r * ldh + at.c * P) = v[j];
            at.next();
        }
    }
}

// Most (m-tile, n-tile) pairs a warp accumulates at once (32 registers).
#define MMA_TILES 8

// This warp's share of a chunk's product: the NQ tiles q = mt·ntc + nt
// (16 gate rows mt of the A fragments × 8 batch columns nc + nt of the staged
// h) over the k tiles kt = warp, warp + NWARPS, …, left in `red` for the
// reduction across warps. NQ is a template argument so that the tile loop
// unrolls to its loads and mma alone: per k tile one 16-byte A load, two
// 4-byte B loads, an address add or two and the mma per tile, where a
// predicated loop over MMA_TILES issued every tile's instructions.
template <int NQ>
__device__ __forceinline__ void mma_tiles(float* red, const uint4* afrag, const __half* hsm, int KT, int LDH, int ntc,
                                          int nc) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gq = lane >> 2, tg = lane & 3;
    // Each tile's fragment offsets from the k tile's (uint4s of A, halves of
    // h), walked once per chunk.
    int aoff[NQ], boff[NQ];
    {
        int mt = 0, nt = 0;
#pragma unroll
        for (int q = 0; q < NQ; ++q) {
            aoff[q] = mt * KT * 32;
            boff[q] = (nc + nt) * 8 * LDH;
            if (++nt == ntc) {
                nt = 0;
                ++mt;
            }
        }
    }
    float acc[NQ][4];
#pragma unroll
    for (int q = 0; q < NQ; ++q) acc[q][0] = acc[q][1] = acc[q][2] = acc[q][3] = 0.0f;
    const uint4* a = afrag + warp * 32 + lane;
    const __half* b = hsm + gq * LDH + warp * 16 + 2 * tg;
    for (int kt = warp; kt < KT; kt += NWARPS, a += NWARPS * 32, b += NWARPS * 16) {
#pragma unroll
        for (int q = 0; q < NQ; ++q) {
            const __half* bq = b + boff[q];
            mma16816(acc[q], a[aoff[q]], *reinterpret_cast<const unsigned*>(bq),
                     *reinterpret_cast<const unsigned*>(bq + 8));
        }
    }
#pragma unroll
    for (int q = 0; q < NQ; ++q)
        *reinterpret_cast<float4*>(red + ((warp * MMA_TILES + q) * 32 + lane) * 4) =
            make_float4(acc[q][0], acc[q][1], acc[q][2], acc[q][3]);
}

// (unit u, column n) of the cell items o = threadIdx.x, +NTHREADS, … of a
// chunk of `ncols` columns: o = u·ncols + n, or with PAIRED o = (u/2)·2·ncols
// + 2n + u%2, so that lanes 2i and 2i+1 hold units u and u+1 of one column
// (the flagged exchange sends the two as one word).
template <bool PAIRED>
struct ItemWalk {
    RowWalk w;
    __device__ __forceinline__ ItemWalk(int o, int ncols) : w(o, NTHREADS, PAIRED ? 2 * ncols : ncols) {}
    __device__ __forceinline__ int u() const { return PAIRED ? 2 * w.r + (w.c & 1) : w.r; }
    __device__ __forceinline__ int n() const { return PAIRED ? w.c >> 1 : w.c; }
    __device__ __forceinline__ void next() { w.next(); }
};

// A fragments (MT m-tiles × KT k-tiles, 32 lanes, one uint4 each) of the
// block's G·un gate rows r = g·un + u of W_hh (G·H, H), hidden units u0 + u:
// A[r][c] = W_hh[g·H + u0 + u][c] (the forward's product, W_hh·h), or with
// TRANSPOSED A[m][r] = W_hh[g·H + u0 + u][m] (the backward's, W_hhᵀ·dg: m
// any hidden unit, r the block's gate row). Outside G·un × H: zero.
template <bool TRANSPOSED>
__device__ __forceinline__ void load_w_frags(uint4* afrag, int MT, int KT, const __half* w_hh, int G, int H, int u0,
                                             int un) {
    const int rows = TRANSPOSED ? H : G * un, cols = TRANSPOSED ? G * un : H;
    for (int i = threadIdx.x; i < MT * KT * 32; i += NTHREADS) {
        const int ln = i & 31, q = i >> 5;
        const int mt = q / KT, kt = q - mt * KT;
        const int r0 = mt * 16 + (ln >> 2), c0 = kt * 16 + 2 * (ln & 3);
        __half v[4][2];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int r = r0 + (e & 1) * 8, c = c0 + (e >> 1) * 8;
#pragma unroll
            for (int d = 0; d < 2; ++d) {
                __half x = __float2half_rn(0.0f);
                if (r < rows && c + d < cols) {
                    const int gr = TRANSPOSED ? c + d : r, k = TRANSPOSED ? r : c + d;
                    const int g = gr / un, u = gr - g * un;
                    x = w_hh[((size_t)g * H + u0 + u) * H + k];
                }
                v[e][d] = x;
            }
        }
        afrag[i] = make_uint4(pack_half2(v[0][0], v[0][1]), pack_half2(v[1][0], v[1][1]),
                              pack_half2(v[2][0], v[2][1]), pack_half2(v[3][0], v[3][1]));
    }
}

// The block's layout in dynamic shared memory (see the top of this file)
// for G·un gate rows, H and B; ntc n-tiles per chunk (the planner's).
struct MmaBlock {
    int MT, KT, NT, NTC, LDH, PLD;
    uint4* afrag;
    __half* hsm;
    float* red;
    float* pre;

    __device__ __forceinline__ MmaBlock(void* smem, int rows, int H, int B, int ntc)
        : MT((rows + 15) / 16), KT((H + 15) / 16), NT((B + 7) / 8), NTC(ntc), LDH(KT * 16 + 8), PLD(ntc * 8) {
        afrag = static_cast<uint4*>(smem);
        hsm = reinterpret_cast<__half*>(afrag + MT * KT * 32);
        red = reinterpret_cast<float*>(hsm + NT * 8 * LDH);
        pre = red + NWARPS * MMA_TILES * 32 * 4;
    }

    // The A fragments of gate rows g·un + u (g < G, u < un) of W_hh (G·H, H),
    // hidden units u0 + u: one 16-byte load per fragment in the product;
    // rows ≥ G·un and columns ≥ H zero. Then the k padding of the staged h
    // zeroed (the A padding is zero, but 0·NaN is not). The caller syncs.
    __device__ __forceinline__ void load(const __half* w_hh, int G, int H, int u0, int un) {
        load_w_frags<false>(afrag, MT, KT, w_hh, G, H, u0, un);
        for (int i = threadIdx.x; i < NT * 8 * (LDH - H); i += NTHREADS) {
            const int n = i / (LDH - H), k = H + (i - n * (LDH - H));
            hsm[n * LDH + k] = __float2half_rn(0.0f);
        }
    }

    // h_{t-1} (B, H) in f16 at `src` into hsm: 16-byte pieces where H is a
    // multiple of 8 and src 16-byte aligned, pairs of halves where H is
    // even, else halves. The caller syncs.
    __device__ __forceinline__ void stage(const void* src, int B, int H) {
        if ((H & 7) == 0 && (reinterpret_cast<size_t>(src) & 15) == 0) {
            stage_h16<uint4, 8>(hsm, LDH, src, B, H);
        } else if ((H & 1) == 0) {
            stage_h16<unsigned, 8>(hsm, LDH, src, B, H);
        } else {
            stage_h16<unsigned short, 8>(hsm, LDH, src, B, H);
        }
    }

    // This warp's share of chunk nc's product (ntc n-tiles) into red, for
    // the chunk's tile count MT·ntc ≤ MMA_TILES (the planner's limit) known
    // at compile time.
    __device__ __forceinline__ void product(int ntc, int nc) const {
        switch (MT * ntc) {
            case 1: mma_tiles<1>(red, afrag, hsm, KT, LDH, ntc, nc); break;
            case 2: mma_tiles<2>(red, afrag, hsm, KT, LDH, ntc, nc); break;
            case 3: mma_tiles<3>(red, afrag, hsm, KT, LDH, ntc, nc); break;
            case 4: mma_tiles<4>(red, afrag, hsm, KT, LDH, ntc, nc); break;
            case 5: mma_tiles<5>(red, afrag, hsm, KT, LDH, ntc, nc); break;
            case 6: mma_tiles<6>(red, afrag, hsm, KT, LDH, ntc, nc); break;
            case 7: mma_tiles<7>(red, afrag, hsm, KT, LDH, ntc, nc); break;
            default: mma_tiles<8>(red, afrag, hsm, KT, LDH, ntc, nc); break;
        }
    }

    // pre[r·PLD + n] = the 8 warps' partial sums of gate row r < rows,
    // chunk column n < ncols, added in warp order. Between two barriers.
    __device__ __forceinline__ void reduce(int rows, int ncols, int ntc) const {
        RowWalk at(threadIdx.x, NTHREADS, ncols);  // (gate row r, column n) of output o
        for (int o = threadIdx.x; o < rows * ncols; o += NTHREADS, at.next()) {
            const int r = at.r, n = at.c;
            const int mt = r >> 4, rr = r & 15, nt = n >> 3, nn = n & 7;
            const int q = mt * ntc + nt;
            const int ln = (rr & 7) * 4 + (nn >> 1), e = (rr >> 3) * 2 + (nn & 1);
            float v = 0.0f;
#pragma unroll
            for (int w = 0; w < NWARPS; ++w) v += red[((w * MMA_TILES + q) * 32 + ln) * 4 + e];
            pre[r * PLD + n] = v;
        }
    }
};
