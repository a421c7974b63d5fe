// One time step of the recurrent layer's training forward and backward, the
// recurrent product fused with the cell (included by train.cu).
//
// A block owns a few hidden units j (all their gates) for up to 32 batch
// rows: grid (ceil(H / J), ceil(B / 32)). Its 8 warps split the product's k
// range in 8 slices; lane = batch row. Each thread multiplies its row's
// k slice with the block's weight rows (the same address across the warp:
// one broadcast load), the 8 partial sums meet in shared memory (added in
// warp order), and 32·J threads apply the cell to their (row, unit): the
// product's epilogue. One launch per step and direction (two for GRU
// reset-before, whose n gate needs the whole r⊙h first).
//
// Storage: the weights, hidden states, gates and gate cache are of type T
// (float, or __half: kernels `*_f16`), converted to f32 as they are staged;
// the products, the cell, the LSTM cell state c and every gradient are f32.
#pragma once
#include "dynamic_shared.cuh"

#define TS_WARPS 8
#define TS_JF 2  // hidden units per block, forward (rows: up to 4 gates × 2)
#define TS_JB 4  // hidden units per block, backward (rows of W_hhᵀ)

__device__ __forceinline__ int tr_gate_count(int cell) {
    return (cell <= TR_RNN_RELU) ? 1 : (cell == TR_LSTM ? 4 : 3);
}

__device__ __forceinline__ void ts_cp16(float* dst, const float* src) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu): the copy at once
    *reinterpret_cast<float4*>(dst) = *reinterpret_cast<const float4*>(src);
#else
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
#endif
}

// Four consecutive elements of an operand into f32 shared memory (16
// bytes): f32 by an asynchronous copy, f16 by one 8-byte load through L2
// (other blocks of a persistent kernel wrote it), converted.
__device__ __forceinline__ void ts_stage4(float* dst, const float* src) { ts_cp16(dst, src); }
__device__ __forceinline__ void ts_stage4(float* dst, const __half* src) {
    const uint2 raw = __ldcg(reinterpret_cast<const uint2*>(src));
    const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
    const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
    *reinterpret_cast<float4*>(dst) = make_float4(lo.x, lo.y, hi.x, hi.y);
}

__device__ __forceinline__ void ts_cp_wait() {
#ifndef RECUR_EMU  // the emulator copies at once (ts_cp16)
    asm volatile("cp.async.commit_group;\ncp.async.wait_all;" ::: "memory");
#endif
}

// The block's product, in chunks of kc (a multiple of 4) along k: the
// chunk of A's (up to) 32 rows and of the R weight rows is staged in
// dynamic shared memory (`sm`: (32 + R) rows of kc + 4 floats) by
// asynchronous 16-byte copies, all in flight at once, then thread (warp
// wi, lane) adds its row's dot products over slice wi of the chunk. The
// partials go to red[wi][lane][q]. Rows of A are lda apart (a null: A = 0);
// wrow[q] null: row absent. `stage_w` false: the weight rows are already in
// `sm` (persistent kernels, one chunk: kc ≥ K). Ends with __syncthreads.
// A's storage TA and the weights' TW are float or __half; shared memory
// holds f32 either way (the chunk sizes do not depend on the storage).
template <int R, typename TA, typename TW>
__device__ __forceinline__ void ts_product(float (*red)[32][R + 1], float* sm, const TA* a, long long lda,
                                           const TW* const wrow[R], int K, int B, int kc, bool stage_w) {
    const int lane = threadIdx.x % 32, wi = threadIdx.x / 32;
    const int b0 = blockIdx.y * 32;
    const int rows = a ? min(32, B - b0) : 0;
    const int S = kc + 4;
    float* as = sm;
    float* ws = sm + 32 * S;
    // Whole groups of 4 elements, each group aligned for its one load.
    unsigned long long w_bits = 0;
#pragma unroll
    for (int q = 0; q < R; ++q) w_bits |= (unsigned long long)wrow[q];
    const bool vec = ((K | (int)(lda & 3)) & 3) == 0 && ((unsigned long long)a & (4 * sizeof(TA) - 1)) == 0 &&
                     (w_bits & (4 * sizeof(TW) - 1)) == 0;
    float acc[R];
#pragma unroll
    for (int q = 0; q < R; ++q) acc[q] = 0.0f;
    for (int c0 = 0; c0 < K; c0 += kc) {
        const int n = min(kc, K - c0);
        if (vec) {
            const int n4 = n / 4;
            for (int c = threadIdx.x; c < rows * n4; c += TR_THREADS) {
                const int r = c / n4, k = (c % n4) * 4;
                ts_stage4(as + r * S + k, a + (b0 + r) * lda + c0 + k);
            }
#pragma unroll
            for (int q = 0; q < R; ++q)
                if (stage_w && wrow[q])
                    for (int c = threadIdx.x; c < n4; c += TR_THREADS)
                        ts_stage4(ws + q * S + c * 4, wrow[q] + c0 + c * 4);
            ts_cp_wait();
        } else {
            for (int c = threadIdx.x; c < rows * n; c += TR_THREADS) {
                const int r = c / n, k = c % n;
                // L2, not L1: in the persistent kernels other blocks wrote A.
                as[r * S + k] = tr_ldcg(a + (b0 + r) * lda + c0 + k);
            }
#pragma unroll
            for (int q = 0; q < R; ++q)
                if (stage_w && wrow[q])
                    for (int c = threadIdx.x; c < n; c += TR_THREADS) ws[q * S + c] = tr_f(wrow[q][c0 + c]);
        }
        __syncthreads();
        // Slices of whole float4s: L = ceil(n / 8) rounded up to 4.
        const int L = ((n + 4 * TS_WARPS - 1) / (4 * TS_WARPS)) * 4;
        const int k0 = min(n, wi * L), k1 = min(n, k0 + L);
        if (lane < rows) {
            const float* ar = as + lane * S;
            if (vec) {
                for (int k = k0; k < k1; k += 4) {
                    const float4 x = *reinterpret_cast<const float4*>(ar + k);
#pragma unroll
                    for (int q = 0; q < R; ++q) {
                        if (!wrow[q]) continue;
                        const float4 y = *reinterpret_cast<const float4*>(ws + q * S + k);
                        acc[q] += x.x * y.x;
                        acc[q] += x.y * y.y;
                        acc[q] += x.z * y.z;
                        acc[q] += x.w * y.w;
                    }
                }
            } else {
                for (int k = k0; k < k1; ++k) {
                    const float x = ar[k];
#pragma unroll
                    for (int q = 0; q < R; ++q)
                        if (wrow[q]) acc[q] += x * ws[q * S + k];
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int q = 0; q < R; ++q) red[wi][lane][q] = acc[q];
    __syncthreads();
}

// Σ over the warps' partials of row q for batch lane bl, in warp order.
template <int R>
__device__ __forceinline__ float ts_sum(float (*red)[32][R + 1], int bl, int q) {
    float s = red[0][bl][q];
#pragma unroll
    for (int w = 1; w < TS_WARPS; ++w) s += red[w][bl][q];
    return s;
}

// Forward of step t for B rows. The product a (B, H) · W_hh[rows]ᵀ over the
// gates of this phase (phase 0: all; GRU reset-before phase 1: r, z with a =
// h_prev; phase 2: n with a = r⊙h_prev), then the cell: gates (B, G·H)
// post-activation, aux (B, H) as tr_cell_fwd's, h_out (B, H), c_out (B, H,
// LSTM). The input part of every gate is gathered here: W_ih[:, tok[b]] +
// b_ih. tok: (B) this step's tokens. T: the storage of h, gates, aux and
// the weights; the biases and c are f32.
template <typename T>
__device__ __forceinline__ void ts_fwd(float (*red)[32][4 * TS_JF + 1], float* ts_smem, T* h_out, float* c_out,
                                       T* gates, T* aux, const T* a, const T* w_hh, const T* w_ih,
                                       const float* b_ih, const float* b_hh, const unsigned* tok, const T* h_prev,
                                       const float* c_prev, int cell, int phase, int B, int H, int V, int kc,
                                       bool stage_w) {
    const int G = tr_gate_count(cell);
    int g_first = 0, g_count = G;
    if (cell == TR_GRU_BEFORE) {
        g_first = phase == 1 ? 0 : 2;
        g_count = phase == 1 ? 2 : 1;
    }
    const int j0 = blockIdx.x * TS_JF;
    const T* wrow[4 * TS_JF];
#pragma unroll
    for (int q = 0; q < 4 * TS_JF; ++q) {
        const int gi = q / TS_JF, j = j0 + q % TS_JF;
        wrow[q] = (gi < g_count && j < H) ? w_hh + ((long long)(g_first + gi) * H + j) * H : nullptr;
    }
    // The epilogue's operands, loaded while the product's stream in.
    const int bl = threadIdx.x % 32, jj = threadIdx.x / 32;
    const int bi = blockIdx.y * 32 + bl, j = j0 + jj;
    const bool mine = threadIdx.x < 32 * TS_JF && bi < B && j < H;
    const long long e = (long long)bi * H + j;
    float xb[4] = {0.0f, 0.0f, 0.0f, 0.0f}, bh[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float hprev = 0.0f, cprev = 0.0f;
    if (mine) {
        const unsigned tk = tok[bi];
#pragma unroll
        for (int q = 0; q < 4; ++q)
            if (q >= g_first && q < g_first + g_count) {
                // Input part of gate q: the token's column of W_ih plus b_ih.
                xb[q] = tr_f(w_ih[((long long)q * H + j) * V + tk]) + b_ih[q * H + j];
                bh[q] = b_hh[q * H + j];
            }
        hprev = tr_f(h_prev[e]);
        if (cell == TR_LSTM) cprev = c_prev[e];
    }
    ts_product<4 * TS_JF, T, T>(red, ts_smem, a, H, wrow, H, B, kc, stage_w);
    if (!mine) return;
    float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int q = 0; q < 4; ++q)
        if (q >= g_first && q < g_first + g_count) p[q] = ts_sum<4 * TS_JF>(red, bl, (q - g_first) * TS_JF + jj);
    T* g = gates + (long long)bi * G * H;
    if (cell == TR_RNN_TANH || cell == TR_RNN_RELU) {
        const float pre = xb[0] + p[0] + bh[0];
        const float v = cell == TR_RNN_TANH ? tanhf(pre) : tr_relu(pre);
        g[j] = tr_st<T>(v);
        h_out[e] = tr_st<T>(v);
    } else if (cell == TR_GRU_AFTER) {
        const float r = tr_sigmoid(xb[0] + (p[0] + bh[0]));
        const float z = tr_sigmoid(xb[1] + (p[1] + bh[1]));
        const float hn = p[2] + bh[2];
        const float n = tanhf(xb[2] + r * hn);
        g[j] = tr_st<T>(r);
        g[H + j] = tr_st<T>(z);
        g[2 * H + j] = tr_st<T>(n);
        aux[e] = tr_st<T>(hn);
        h_out[e] = tr_st<T>(n + z * (hprev - n));
    } else if (cell == TR_GRU_BEFORE) {
        if (phase == 1) {
            const float r = tr_sigmoid(xb[0] + (p[0] + bh[0]));
            const float z = tr_sigmoid(xb[1] + (p[1] + bh[1]));
            g[j] = tr_st<T>(r);
            g[H + j] = tr_st<T>(z);
            aux[e] = tr_st<T>(r * hprev);
        } else {
            const float z = tr_f(g[H + j]);
            const float n = tanhf(xb[2] + (p[2] + bh[2]));
            g[2 * H + j] = tr_st<T>(n);
            h_out[e] = tr_st<T>(n + z * (hprev - n));
        }
    } else {  // LSTM i, f, g, o
        const float i = tr_sigmoid(xb[0] + p[0] + bh[0]);
        const float f = tr_sigmoid(xb[1] + p[1] + bh[1]);
        const float gg = tanhf(xb[2] + p[2] + bh[2]);
        const float o = tr_sigmoid(xb[3] + p[3] + bh[3]);
        const float cc = f * cprev + i * gg;
        const float tc = tanhf(cc);
        g[j] = tr_st<T>(i);
        g[H + j] = tr_st<T>(f);
        g[2 * H + j] = tr_st<T>(gg);
        g[3 * H + j] = tr_st<T>(o);
        c_out[e] = cc;
        aux[e] = tr_st<T>(tc);
        h_out[e] = tr_st<T>(o * tc);
    }
}

// Backward of step t for B rows. The product first: a (B, K; rows G·H
// apart) · W_hhᵀ[j, kofs .. kofs + K) for the block's units j, where
// phase 0 (every cell but GRU reset-before) and phase 2 (reset-before's n
// and z gates) take a = dhh of step t+1 (null at the last step) over the
// gates whose recurrent product feeds h (all; reset-before: r, z), and
// phase 1 (reset-before's r gate) takes a = dhh_t's n block with kofs = 2H:
// drh = dn·W_hn. Then the cell:
// - dh (B, H): in, the output's share plus the direct shares of step t+1;
//   the product is added to it (phases 0, 2; the sum is kept for phase 1).
// - dih, dhh (B, G·H): the pre-activation gradients, input / recurrent side.
// - dh_prev (B, H; null at t = 0): += the direct share of the gradient on
//   h_prev (GRU: dh·z, reset-before + drh·r).
// - dc (B, H), LSTM: in the gradient on c_t, out the one on c_{t-1}.
// wt: W_hhᵀ (H, G·H). T: the storage of wt, gates, aux and h_prev; the
// gradients and c_prev are f32.
template <typename T>
__device__ __forceinline__ void ts_bwd(float (*red)[32][TS_JB + 1], float* ts_smem, float* dih, float* dhh,
                                       float* dh_prev, float* dc, float* dh, const float* a, const T* wt,
                                       const T* gates, const T* aux, const T* h_prev, const float* c_prev,
                                       int cell, int phase, int B, int H, int kc, bool stage_w) {
    const int G = tr_gate_count(cell);
    const int GH = G * H;
    const int K = cell == TR_GRU_BEFORE ? (phase == 1 ? H : 2 * H) : GH;
    const int kofs = (cell == TR_GRU_BEFORE && phase == 1) ? 2 * H : 0;
    const int j0 = blockIdx.x * TS_JB;
    const T* wrow[TS_JB];
#pragma unroll
    for (int q = 0; q < TS_JB; ++q)
        wrow[q] = (j0 + q < H) ? wt + (long long)(j0 + q) * GH + kofs : nullptr;
    // The epilogue's operands, loaded while the product's stream in.
    const int bl = threadIdx.x % 32, jj = threadIdx.x / 32;
    const int bi = blockIdx.y * 32 + bl, j = j0 + jj;
    const bool mine = threadIdx.x < 32 * TS_JB && bi < B && j < H;
    const long long e = (long long)bi * H + j;
    const T* g = gates + (long long)bi * GH;
    float gv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float hp = 0.0f, dhv = 0.0f, av = 0.0f, dcv = 0.0f, cp = 0.0f;
    if (mine) {
#pragma unroll
        for (int q = 0; q < 4; ++q)
            if (q < G) gv[q] = tr_f(g[q * H + j]);
        hp = tr_f(h_prev[e]);
        dhv = dh[e];
        if (cell == TR_GRU_AFTER || cell == TR_LSTM) av = tr_f(aux[e]);
        if (cell == TR_LSTM) {
            dcv = dc[e];
            cp = c_prev[e];
        }
    }
    ts_product<TS_JB, float, T>(red, ts_smem, a, GH, wrow, K, B, kc, stage_w);
    if (!mine) return;
    const float prod = ts_sum<TS_JB>(red, bl, jj);
    float* di = dih + (long long)bi * GH;
    float* dr_ = dhh + (long long)bi * GH;
    if (cell == TR_GRU_BEFORE && phase == 1) {
        const float r = gv[0], z = gv[1];
        const float d = dhv;
        const float drr = prod * hp * r * (1.0f - r);
        di[j] = drr;
        dr_[j] = drr;
        if (dh_prev) dh_prev[e] += d * z + prod * r;
        return;
    }
    const float d = dhv + prod;
    if (cell == TR_RNN_TANH || cell == TR_RNN_RELU) {
        const float hv = gv[0];
        const float dp = cell == TR_RNN_TANH ? d * (1.0f - hv * hv) : (hv > 0.0f ? d : 0.0f);
        di[j] = dp;
        dr_[j] = dp;
    } else if (cell == TR_GRU_AFTER) {
        const float r = gv[0], z = gv[1], n = gv[2];
        const float dnp = d * (1.0f - z) * (1.0f - n * n);
        const float dz = d * (hp - n) * z * (1.0f - z);
        const float drr = dnp * av * r * (1.0f - r);
        di[j] = drr;
        di[H + j] = dz;
        di[2 * H + j] = dnp;
        dr_[j] = drr;
        dr_[H + j] = dz;
        dr_[2 * H + j] = dnp * r;
        if (dh_prev) dh_prev[e] += d * z;
    } else if (cell == TR_GRU_BEFORE) {  // phase 2
        const float z = gv[1], n = gv[2];
        const float dnp = d * (1.0f - z) * (1.0f - n * n);
        const float dz = d * (hp - n) * z * (1.0f - z);
        di[H + j] = dz;
        dr_[H + j] = dz;
        di[2 * H + j] = dnp;
        dr_[2 * H + j] = dnp;
        dh[e] = d;
    } else {  // LSTM
        const float i = gv[0], f = gv[1], gg = gv[2], o = gv[3];
        const float tc = av;
        const float dcj = dcv + d * o * (1.0f - tc * tc);
        const float v0 = dcj * gg * i * (1.0f - i);
        const float v1 = dcj * cp * f * (1.0f - f);
        const float v2 = dcj * i * (1.0f - gg * gg);
        const float v3 = d * tc * o * (1.0f - o);
        di[j] = v0;
        di[H + j] = v1;
        di[2 * H + j] = v2;
        di[3 * H + j] = v3;
        dr_[j] = v0;
        dr_[H + j] = v1;
        dr_[2 * H + j] = v2;
        dr_[3 * H + j] = v3;
        dc[e] = dcj * f;
    }
}

// The per-step kernels, instantiated for f32 (`tr_step_fwd`, `tr_step_bwd`)
// and f16 storage (`*_f16`).
#define TR_STEP_KERNELS(SFX, T)                                                                                 \
    extern "C" __global__ void __launch_bounds__(TR_THREADS)                                                    \
        tr_step_fwd##SFX(T* h_out, float* c_out, T* gates, T* aux, const T* a, const T* w_hh, const T* w_ih,    \
                         const float* b_ih, const float* b_hh, const unsigned* tok, const T* h_prev,            \
                         const float* c_prev, int cell, int phase, int B, int H, int V, int kc) {                \
        __shared__ float red[TS_WARPS][32][4 * TS_JF + 1];                                                      \
        DYNAMIC_SHARED(float, ts_smem);                                                                         \
        ts_fwd<T>(red, ts_smem, h_out, c_out, gates, aux, a, w_hh, w_ih, b_ih, b_hh, tok, h_prev, c_prev, cell, \
                  phase, B, H, V, kc, true);                                                                    \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(TR_THREADS)                                                    \
        tr_step_bwd##SFX(float* dih, float* dhh, float* dh_prev, float* dc, float* dh, const float* a,          \
                         const T* wt, const T* gates, const T* aux, const T* h_prev, const float* c_prev,       \
                         int cell, int phase, int B, int H, int kc) {                                           \
        __shared__ float red[TS_WARPS][32][TS_JB + 1];                                                          \
        DYNAMIC_SHARED(float, ts_smem);                                                                         \
        ts_bwd<T>(red, ts_smem, dih, dhh, dh_prev, dc, dh, a, wt, gates, aux, h_prev, c_prev, cell, phase, B,   \
                  H, kc, true);                                                                                 \
    }

TR_STEP_KERNELS(, float)
TR_STEP_KERNELS(_f16, __half)

// ---- persistent forms ----------------------------------------------------------
// The whole time loop in one cooperative launch (every block resident) for
// the cells with one phase per step (all but GRU reset-before), where one
// chunk holds the product (kc ≥ K): each block stages its weight rows in
// shared memory once and keeps them; a grid-wide barrier separates the
// steps. `bar`: 64 words, bar[0] the arrival count (0 between barriers),
// bar[32] the generation (any value at launch).

__device__ __forceinline__ unsigned tp_ld_acquire(const unsigned* p) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    return emu::poll_acquire(p);
#else
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
#endif
}

// Every block's writes before the barrier are visible to every block after
// it (release by the arrival's fence, acquire by the generation's load).
// `gen`: thread 0's copy of the generation.
__device__ __forceinline__ void tp_grid_sync(unsigned* bar, unsigned* gen) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned g = *gen;
        __threadfence();
        const unsigned blocks = gridDim.x * gridDim.y;
        if (atomicAdd(bar, 1u) == blocks - 1) {
            atomicExch(bar, 0u);
            __threadfence();
            atomicAdd(bar + 32, 1u);
        } else {
            while (tp_ld_acquire(bar + 32) == g) {
            }
        }
        *gen = g + 1;
        __threadfence();
    }
    __syncthreads();
}

// Steps 0 .. T−1 of the forward: h_prev = hcat slot t, h_out = slot t+1
// (ccat the same for LSTM), gates / aux / tok at step t's rows.
// Steps T−1 .. 0 of the backward: dh = dhs slot t, dh_prev = slot t−1
// (null at t = 0), a = dhh of step t+1 (null at the last), as tr_step_bwd.
// Instantiated for f32 (`tr_fwd_persist`, `tr_bwd_persist`) and f16
// storage (`*_f16`).
#define TR_PERSIST_KERNELS(SFX, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(TR_THREADS)                                                    \
        tr_fwd_persist##SFX(T* hcat, float* ccat, T* gates, T* aux, const T* w_hh, const T* w_ih,               \
                            const float* b_ih, const float* b_hh, const unsigned* tok, int cell, int B, int H,  \
                            int V, int T_, int kc, unsigned* bar) {                                             \
        __shared__ float red[TS_WARPS][32][4 * TS_JF + 1];                                                      \
        DYNAMIC_SHARED(float, ts_smem);                                                                         \
        unsigned gen = threadIdx.x == 0 ? tp_ld_acquire(bar + 32) : 0u;                                         \
        const long long bh = (long long)B * H, bgh = bh * tr_gate_count(cell);                                  \
        const bool lstm = cell == TR_LSTM;                                                                      \
        for (int t = 0; t < T_; ++t) {                                                                          \
            const T* h_prev = hcat + t * bh;                                                                    \
            ts_fwd<T>(red, ts_smem, hcat + (t + 1) * bh, lstm ? ccat + (t + 1) * bh : ccat, gates + t * bgh,    \
                      aux + t * bh, h_prev, w_hh, w_ih, b_ih, b_hh, tok + (long long)t * B, h_prev,             \
                      lstm ? ccat + t * bh : ccat, cell, 0, B, H, V, kc, t == 0);                               \
            if (t + 1 < T_) tp_grid_sync(bar, &gen);                                                            \
        }                                                                                                       \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(TR_THREADS)                                                    \
        tr_bwd_persist##SFX(float* dih, float* dhh, float* dhs, float* dc, const T* wt, const T* gates,         \
                            const T* aux, const T* hcat, const float* ccat, int cell, int B, int H, int T_,     \
                            int kc, unsigned* bar) {                                                            \
        __shared__ float red[TS_WARPS][32][TS_JB + 1];                                                          \
        DYNAMIC_SHARED(float, ts_smem);                                                                         \
        unsigned gen = threadIdx.x == 0 ? tp_ld_acquire(bar + 32) : 0u;                                         \
        const long long bh = (long long)B * H, bgh = bh * tr_gate_count(cell);                                  \
        const bool lstm = cell == TR_LSTM;                                                                      \
        for (int t = T_ - 1; t >= 0; --t) {                                                                     \
            ts_bwd<T>(red, ts_smem, dih + t * bgh, dhh + t * bgh, t > 0 ? dhs + (t - 1) * bh : nullptr, dc,     \
                      dhs + t * bh, t + 1 < T_ ? dhh + (t + 1) * bgh : nullptr, wt, gates + t * bgh,            \
                      aux + t * bh, hcat + t * bh, lstm ? ccat + t * bh : ccat, cell, 0, B, H, kc, t == T_ - 1); \
            if (t > 0) tp_grid_sync(bar, &gen);                                                                 \
        }                                                                                                       \
    }

TR_PERSIST_KERNELS(, float)
TR_PERSIST_KERNELS(_f16, __half)
