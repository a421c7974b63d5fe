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
#pragma once

#define TS_WARPS 8
#define TS_JF 2  // hidden units per block, forward (rows: up to 4 gates × 2)
#define TS_JB 4  // hidden units per block, backward (rows of W_hhᵀ)

__device__ __forceinline__ int tr_gate_count(int cell) {
    return (cell <= TR_RNN_RELU) ? 1 : (cell == TR_LSTM ? 4 : 3);
}

// acc[q] += Σ_{k in [k0, k1)} arow[k] · wrow[q][k] (wrow[q] null: row absent).
// `vec`: every row and [k0, k1) 16-byte aligned, so float4 loads.
template <int R>
__device__ __forceinline__ void ts_dot(float acc[R], const float* arow, const float* const wrow[R], int k0,
                                       int k1, bool vec) {
    if (vec) {
        for (int k = k0; k < k1; k += 4) {
            const float4 x = *reinterpret_cast<const float4*>(arow + k);
#pragma unroll
            for (int q = 0; q < R; ++q) {
                if (!wrow[q]) continue;
                const float4 y = *reinterpret_cast<const float4*>(wrow[q] + k);
                acc[q] += x.x * y.x;
                acc[q] += x.y * y.y;
                acc[q] += x.z * y.z;
                acc[q] += x.w * y.w;
            }
        }
    } else {
        for (int k = k0; k < k1; ++k) {
            const float x = arow[k];
#pragma unroll
            for (int q = 0; q < R; ++q)
                if (wrow[q]) acc[q] += x * wrow[q][k];
        }
    }
}

// The block's product: thread (warp wi, lane) forms its row's partial dot
// products over slice wi of [0, K) into red[wi][lane][q]. Rows of A are lda
// apart; rows of W as given. Ends with __syncthreads.
template <int R>
__device__ __forceinline__ void ts_product(float (*red)[32][R + 1], const float* a, long long lda,
                                           const float* const wrow[R], int K, int B, long long ldw) {
    const int lane = threadIdx.x % 32, wi = threadIdx.x / 32;
    const int b = blockIdx.y * 32 + lane;
    float acc[R];
#pragma unroll
    for (int q = 0; q < R; ++q) acc[q] = 0.0f;
    // Slices of whole float4s: L = ceil(K / 8) rounded up to 4.
    const int L = ((K + 4 * TS_WARPS - 1) / (4 * TS_WARPS)) * 4;
    const int k0 = min(K, wi * L), k1 = min(K, k0 + L);
    unsigned long long addr_bits = (unsigned long long)a;
#pragma unroll
    for (int q = 0; q < R; ++q) addr_bits |= (unsigned long long)wrow[q];
    const bool vec = ((K | (int)(lda & 3) | (int)(ldw & 3)) & 3) == 0 && (addr_bits & 15) == 0;
    if (a && b < B) ts_dot<R>(acc, a + b * lda, wrow, k0, k1, vec);
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
// b_ih. tok: (B) this step's tokens.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_step_fwd(float* h_out, float* c_out, float* gates, float* aux, const float* a, const float* w_hh,
            const float* w_ih, const float* b_ih, const float* b_hh, const unsigned* tok,
            const float* h_prev, const float* c_prev, int cell, int phase, int B, int H, int V) {
    __shared__ float red[TS_WARPS][32][4 * TS_JF + 1];
    const int G = tr_gate_count(cell);
    int g_first = 0, g_count = G;
    if (cell == TR_GRU_BEFORE) {
        g_first = phase == 1 ? 0 : 2;
        g_count = phase == 1 ? 2 : 1;
    }
    const int j0 = blockIdx.x * TS_JF;
    const float* wrow[4 * TS_JF];
#pragma unroll
    for (int q = 0; q < 4 * TS_JF; ++q) {
        const int gi = q / TS_JF, j = j0 + q % TS_JF;
        wrow[q] = (gi < g_count && j < H) ? w_hh + ((long long)(g_first + gi) * H + j) * H : nullptr;
    }
    ts_product<4 * TS_JF>(red, a, H, wrow, H, B, H);
    if (threadIdx.x >= 32 * TS_JF) return;
    const int bl = threadIdx.x % 32, jj = threadIdx.x / 32;
    const int bi = blockIdx.y * 32 + bl, j = j0 + jj;
    if (bi >= B || j >= H) return;
    float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int q = 0; q < 4; ++q)
        if (q >= g_first && q < g_first + g_count) p[q] = ts_sum<4 * TS_JF>(red, bl, (q - g_first) * TS_JF + jj);
    const long long e = (long long)bi * H + j;
    const unsigned tk = tok[bi];
    // Input part of gate q: the token's column of W_ih plus b_ih.
    auto x = [&](int q) { return w_ih[((long long)q * H + j) * V + tk] + b_ih[q * H + j]; };
    float* g = gates + (long long)bi * G * H;
    const float hprev = h_prev[e];
    if (cell == TR_RNN_TANH || cell == TR_RNN_RELU) {
        const float pre = x(0) + p[0] + b_hh[j];
        const float v = cell == TR_RNN_TANH ? tanhf(pre) : tr_relu(pre);
        g[j] = v;
        h_out[e] = v;
    } else if (cell == TR_GRU_AFTER) {
        const float r = tr_sigmoid(x(0) + (p[0] + b_hh[j]));
        const float z = tr_sigmoid(x(1) + (p[1] + b_hh[H + j]));
        const float hn = p[2] + b_hh[2 * H + j];
        const float n = tanhf(x(2) + r * hn);
        g[j] = r;
        g[H + j] = z;
        g[2 * H + j] = n;
        aux[e] = hn;
        h_out[e] = n + z * (hprev - n);
    } else if (cell == TR_GRU_BEFORE) {
        if (phase == 1) {
            const float r = tr_sigmoid(x(0) + (p[0] + b_hh[j]));
            const float z = tr_sigmoid(x(1) + (p[1] + b_hh[H + j]));
            g[j] = r;
            g[H + j] = z;
            aux[e] = r * hprev;
        } else {
            const float z = g[H + j];
            const float n = tanhf(x(2) + (p[2] + b_hh[2 * H + j]));
            g[2 * H + j] = n;
            h_out[e] = n + z * (hprev - n);
        }
    } else {  // LSTM i, f, g, o
        const float i = tr_sigmoid(x(0) + p[0] + b_hh[j]);
        const float f = tr_sigmoid(x(1) + p[1] + b_hh[H + j]);
        const float gg = tanhf(x(2) + p[2] + b_hh[2 * H + j]);
        const float o = tr_sigmoid(x(3) + p[3] + b_hh[3 * H + j]);
        const float cc = f * c_prev[e] + i * gg;
        const float tc = tanhf(cc);
        g[j] = i;
        g[H + j] = f;
        g[2 * H + j] = gg;
        g[3 * H + j] = o;
        c_out[e] = cc;
        aux[e] = tc;
        h_out[e] = o * tc;
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
// wt: W_hhᵀ (H, G·H).
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_step_bwd(float* dih, float* dhh, float* dh_prev, float* dc, float* dh, const float* a, const float* wt,
            const float* gates, const float* aux, const float* h_prev, const float* c_prev, int cell,
            int phase, int B, int H) {
    __shared__ float red[TS_WARPS][32][TS_JB + 1];
    const int G = tr_gate_count(cell);
    const int GH = G * H;
    const int K = cell == TR_GRU_BEFORE ? (phase == 1 ? H : 2 * H) : GH;
    const int kofs = (cell == TR_GRU_BEFORE && phase == 1) ? 2 * H : 0;
    const int j0 = blockIdx.x * TS_JB;
    const float* wrow[TS_JB];
#pragma unroll
    for (int q = 0; q < TS_JB; ++q)
        wrow[q] = (j0 + q < H) ? wt + (long long)(j0 + q) * GH + kofs : nullptr;
    ts_product<TS_JB>(red, a, GH, wrow, K, B, GH);
    if (threadIdx.x >= 32 * TS_JB) return;
    const int bl = threadIdx.x % 32, jj = threadIdx.x / 32;
    const int bi = blockIdx.y * 32 + bl, j = j0 + jj;
    if (bi >= B || j >= H) return;
    const float prod = ts_sum<TS_JB>(red, bl, jj);
    const long long e = (long long)bi * H + j;
    const float* g = gates + (long long)bi * GH;
    float* di = dih + (long long)bi * GH;
    float* dr_ = dhh + (long long)bi * GH;
    if (cell == TR_GRU_BEFORE && phase == 1) {
        const float r = g[j], z = g[H + j];
        const float hp = h_prev[e];
        const float d = dh[e];
        const float drr = prod * hp * r * (1.0f - r);
        di[j] = drr;
        dr_[j] = drr;
        if (dh_prev) dh_prev[e] += d * z + prod * r;
        return;
    }
    const float d = dh[e] + prod;
    if (cell == TR_RNN_TANH || cell == TR_RNN_RELU) {
        const float hv = g[j];
        const float dp = cell == TR_RNN_TANH ? d * (1.0f - hv * hv) : (hv > 0.0f ? d : 0.0f);
        di[j] = dp;
        dr_[j] = dp;
    } else if (cell == TR_GRU_AFTER) {
        const float r = g[j], z = g[H + j], n = g[2 * H + j];
        const float dnp = d * (1.0f - z) * (1.0f - n * n);
        const float dz = d * (h_prev[e] - n) * z * (1.0f - z);
        const float drr = dnp * aux[e] * r * (1.0f - r);
        di[j] = drr;
        di[H + j] = dz;
        di[2 * H + j] = dnp;
        dr_[j] = drr;
        dr_[H + j] = dz;
        dr_[2 * H + j] = dnp * r;
        if (dh_prev) dh_prev[e] += d * z;
    } else if (cell == TR_GRU_BEFORE) {  // phase 2
        const float z = g[H + j], n = g[2 * H + j];
        const float dnp = d * (1.0f - z) * (1.0f - n * n);
        const float dz = d * (h_prev[e] - n) * z * (1.0f - z);
        di[H + j] = dz;
        dr_[H + j] = dz;
        di[2 * H + j] = dnp;
        dr_[2 * H + j] = dnp;
        dh[e] = d;
    } else {  // LSTM
        const float i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
        const float tc = aux[e];
        const float dcj = dc[e] + d * o * (1.0f - tc * tc);
        const float v0 = dcj * gg * i * (1.0f - i);
        const float v1 = dcj * c_prev[e] * f * (1.0f - f);
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
