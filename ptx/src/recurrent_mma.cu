// Persistent recurrent layers on tensor cores, f16 mode (weights and h stored
// as f16, products accumulated in f32 by mma.sync m16n8k16, c and gate
// pre-activations in f32): RNN (tanh, relu), GRU reset-after and LSTM.
// (GRU reset-before multiplies W_hn by r ⊙ h, which f16 mode keeps in f32,
// so it runs on rec_persist_f16_gru_before.)
//
// Block b owns hidden units [b·U, b·U+U) and their G·U gate rows of W_hh, held
// in shared memory for the whole sequence, already in the order of the mma
// A fragments (one 16-byte load per fragment, no bank conflicts). Every step
// stages h_{t-1} (B, H) as f16 in shared memory, the 8 warps split the k
// tiles, their partial sums meet in shared memory, and the gate math runs
// as in the CUDA-core kernels. One grid-wide barrier per step, or with
// FLAGGED (rec_mma_flagged_*, H and units per block even) none: h_t goes
// from block to block in flagged words (flag_exchange.cuh) that the next
// step's staging waits on.
#include "flag_exchange.cuh"
#include "rec_params.cuh"

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

// x[g] = input part of gate g (W_ih·x + b_ih) of unit u0 + u, batch row b.
template <int G>
__device__ __forceinline__ void input_x(float* x, const StepIO& io, const __half* table, const __half* b_ih, int u,
                                        int b, int u0, int H) {
    const int j = u0 + u;
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const float xin = io.tok ? __half2float(table[(size_t)io.tok[b] * (G * H) + g * H + j])
                                 : io.x_proj[(size_t)b * (G * H) + g * H + j];
        x[g] = xin + __half2float(b_ih[g * H + j]);
    }
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

// Shared memory layout (bytes), shared with engine/src/plan.rs:
//   A fragments  MT·KT·32 uint4
//   h            NT·8 rows × LDH halves, LDH = KT·16 + 8
//   red          NWARPS·MMA_TILES·32·4 floats
//   pre          MT·16 × NTC·8 floats
template <int C, bool FLAGGED>
__device__ void rec_mma(const RecParams& p) {
    DYNAMIC_SHARED(float4, smem4);
    constexpr int G = Cell<C>::G;
    const int H = p.H, B = p.B, U = p.units;
    const int u0 = blockIdx.x * U;
    const int un = min(U, H - u0);
    const int MT = (G * U + 15) / 16, KT = (H + 15) / 16, NT = (B + 7) / 8, NTC = p.aux;
    const int LDH = KT * 16 + 8;
    const int PLD = NTC * 8;
    uint4* afrag = reinterpret_cast<uint4*>(smem4);
    __half* hsm = reinterpret_cast<__half*>(afrag + MT * KT * 32);
    float* red = reinterpret_cast<float*>(hsm + NT * 8 * LDH);
    float* pre = red + NWARPS * MMA_TILES * 32 * 4;

    // A fragments of this block's rows (local row g·un + u; zero padding).
    const __half* w_hh = static_cast<const __half*>(p.w_hh);
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
                if (r < G * un && c + d < H) {
                    const int g = r / un, u = r - g * un;
                    x = w_hh[((size_t)g * H + u0 + u) * H + c + d];
                }
                v[e][d] = x;
            }
        }
        afrag[i] = make_uint4(pack_half2(v[0][0], v[0][1]), pack_half2(v[1][0], v[1][1]),
                              pack_half2(v[2][0], v[2][1]), pack_half2(v[3][0], v[3][1]));
    }
    // k padding of the staged h must be zero (the A padding is zero, but 0·NaN is not).
    for (int i = threadIdx.x; i < NT * 8 * (LDH - H); i += NTHREADS) {
        const int n = i / (LDH - H), k = H + (i - n * (LDH - H));
        hsm[n * LDH + k] = __float2half_rn(0.0f);
    }
    const __half* table = static_cast<const __half*>(p.table);
    const __half* b_ih = static_cast<const __half*>(p.b_ih);
    const __half* b_hh = static_cast<const __half*>(p.b_hh);
    [[maybe_unused]] unsigned gen = FLAGGED ? 0u : barrier_start(p.barrier);
    // Per-thread state across steps for its (unit, row) item when the batch
    // is one n-chunk (see Carry in simt_step.cuh).
    Carry carry;
    carry.valid = NT <= NTC && (int)threadIdx.x < un * B;
    if (carry.valid) {
        const ItemWalk<FLAGGED> first(threadIdx.x, B);
        carry.u = first.u();
        carry.b = first.n();
        const int j = u0 + carry.u;
        const StepIO io0 = rec_io<C, __half>(p, 0);
#pragma unroll
        for (int g = 0; g < 4; ++g) carry.bhh[g] = g < G ? __half2float(b_hh[g * H + j]) : 0.0f;
        carry.c = C == LSTM ? io0.c_prev[(size_t)carry.b * H + j] : 0.0f;
        input_x<G>(carry.x, io0, table, b_ih, carry.u, carry.b, u0, H);
    }

    for (int t = 0; t < p.T; ++t) {
        const StepIO io = rec_io<C, __half>(p, t);
        __syncthreads();
        // Stage h_{t-1} (B, H) as f16: 16-byte pieces where H is a multiple
        // of 8 (and the step's rows so aligned), pairs of halves where H is
        // even, else halves; row and column walked, not divided, per piece.
        if (io.h0) {
            RowWalk at(threadIdx.x, NTHREADS, H);
            for (int base = 0; base < B * H; base += NTHREADS * STAGE_UNROLL) {
                float v[STAGE_UNROLL];
#pragma unroll
                for (int j = 0; j < STAGE_UNROLL; ++j) {
                    const int i = base + j * NTHREADS + threadIdx.x;
                    v[j] = i < B * H ? io.h0[i] : 0.0f;
                }
#pragma unroll
                for (int j = 0; j < STAGE_UNROLL; ++j) {
                    const int i = base + j * NTHREADS + threadIdx.x;
                    if (i < B * H) hsm[at.r * LDH + at.c] = __float2half_rn(v[j]);
                    at.next();
                }
            }
        } else if (FLAGGED) {
            const unsigned long long* slot = p.xchg + (size_t)((t - 1) & 1) * B * (H / 2);
            if ((H & 3) == 0) {
                stage_h_flagged<ulonglong2, 8>(hsm, LDH, slot, p.epoch + (unsigned)t, B, H);
            } else {
                stage_h_flagged<unsigned long long, 8>(hsm, LDH, slot, p.epoch + (unsigned)t, B, H);
            }
        } else if ((H & 7) == 0 && (reinterpret_cast<size_t>(io.h_prev) & 15) == 0) {
            stage_h16<uint4, 8>(hsm, LDH, io.h_prev, B, H);
        } else if ((H & 1) == 0) {
            stage_h16<unsigned, 8>(hsm, LDH, io.h_prev, B, H);
        } else {
            stage_h16<unsigned short, 8>(hsm, LDH, io.h_prev, B, H);
        }
        __syncthreads();
        for (int nc = 0; nc < NT; nc += NTC) {
            const int ntc = min(NTC, NT - nc);
            const int nq = MT * ntc;
            const int ncols = min(ntc * 8, B - nc * 8);
            // This thread's first (unit, column) item of the chunk; the cell
            // loop walks on from it.
            const ItemWalk<FLAGGED> first(threadIdx.x, ncols);
            // Input part of the first item, loaded before the product so its
            // latency hides behind it.
            float x0[4] = {0.f, 0.f, 0.f, 0.f};
            if (carry.valid) {
#pragma unroll
                for (int g = 0; g < 4; ++g) x0[g] = carry.x[g];
            } else if (threadIdx.x < un * ncols) {
                input_x<G>(x0, io, table, b_ih, first.u(), nc * 8 + first.n(), u0, H);
            }
            // The product, for the chunk's tile count (MT·ntc ≤ MMA_TILES, the
            // planner's limit) known at compile time.
            switch (nq) {
                case 1: mma_tiles<1>(red, afrag, hsm, KT, LDH, ntc, nc); break;
                case 2: mma_tiles<2>(red, afrag, hsm, KT, LDH, ntc, nc); break;
                case 3: mma_tiles<3>(red, afrag, hsm, KT, LDH, ntc, nc); break;
                case 4: mma_tiles<4>(red, afrag, hsm, KT, LDH, ntc, nc); break;
                case 5: mma_tiles<5>(red, afrag, hsm, KT, LDH, ntc, nc); break;
                case 6: mma_tiles<6>(red, afrag, hsm, KT, LDH, ntc, nc); break;
                case 7: mma_tiles<7>(red, afrag, hsm, KT, LDH, ntc, nc); break;
                default: mma_tiles<8>(red, afrag, hsm, KT, LDH, ntc, nc); break;
            }
            __syncthreads();
            {
                RowWalk at(threadIdx.x, NTHREADS, ncols);  // (gate row r, column n) of output o
                for (int o = threadIdx.x; o < G * un * ncols; o += NTHREADS, at.next()) {
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
            __syncthreads();
            // Every thread runs every round (the flagged exchange pairs lanes
            // by a shuffle); item o = base + threadIdx.x exists where o < items.
            ItemWalk<FLAGGED> item = first;
            const int items = un * ncols;
            for (int base = 0; base < items; base += NTHREADS, item.next()) {
                const bool active = base + (int)threadIdx.x < items;
                const int u = item.u(), n = item.n(), b = nc * 8 + n, j = u0 + u;
                __half h16 = __float2half_rn(0.0f);
                if (active) {
                    const size_t bj = (size_t)b * H + j;
                    float x[4] = {x0[0], x0[1], x0[2], x0[3]}, hg[4] = {0.f, 0.f, 0.f, 0.f};
                    if (base != 0) input_x<G>(x, io, table, b_ih, u, b, u0, H);
                    const bool mine = carry.valid && base == 0;
#pragma unroll
                    for (int g = 0; g < G; ++g)
                        hg[g] = pre[(g * un + u) * PLD + n] + (mine ? carry.bhh[g] : __half2float(b_hh[g * H + j]));
                    const float hp = __half2float(hsm[b * LDH + j]);
                    const float cp = C == LSTM ? (mine ? carry.c : io.c_prev[bj]) : 0.0f;
                    float c = 0.0f;
                    const float h = cell_h<C>(x, hg, hp, cp, 0.0f, &c);
                    h16 = __float2half_rn(h);
                    static_cast<__half*>(io.h_out)[bj] = h16;
                    if (io.h_last) io.h_last[bj] = stored<__half>(h);
                    if (C == LSTM) {
                        if (mine) carry.c = c;
                        if (!mine || io.h_last) io.c_out[bj] = c;  // a carried c is stored at the last step only
                    }
                }
                if constexpr (FLAGGED) {
                    // Units u (even lane) and u+1 (odd lane) of column n: one
                    // word. un is even, so a lane's partner is active with it.
                    const unsigned short mine16 = __half_as_ushort(h16);
                    const unsigned short other = (unsigned short)__shfl_xor_sync(0xffffffffu, (unsigned)mine16, 1);
                    if (active && (u & 1) == 0 && t + 1 < p.T) {
                        unsigned long long* slot = p.xchg + (size_t)(t & 1) * B * (H / 2);
                        st_relaxed_u64(slot + (size_t)b * (H / 2) + j / 2,
                                       flagged_word(mine16, other, p.epoch + (unsigned)t + 1u));
                    }
                }
            }
        }
        if (t + 1 < p.T) {
            // The next step's input part does not depend on h: load it now,
            // its latency hides behind the barrier (or the flag waits).
            if (carry.valid) input_x<G>(carry.x, rec_io<C, __half>(p, t + 1), table, b_ih, carry.u, carry.b, u0, H);
            if constexpr (!FLAGGED) grid_sync(p.barrier, gen);
        }
    }
}

#define MMA_KERNEL(NAME, C)                                                                          \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1) rec_mma_f16_##NAME(RecParams p) {         \
        rec_mma<C, false>(p);                                                                        \
    }                                                                                                \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1) rec_mma_flagged_f16_##NAME(RecParams p) { \
        rec_mma<C, true>(p);                                                                         \
    }

MMA_KERNEL(rnn_tanh, RNN_TANH)
MMA_KERNEL(rnn_relu, RNN_RELU)
MMA_KERNEL(gru_after, GRU_AFTER)
MMA_KERNEL(lstm, LSTM)
