// The training's cell formulas for one (hidden unit, batch row) item, every
// cell but GRU reset-before (whose two phases its kernels keep): the
// forward with the values the backward reads, and the backward from them.
// Shared by every training time loop that runs items one at a time: the
// cluster kernels (train_cluster.cu) and the tensor-core persistent
// forward and backward (train_mma.cu). Formulas and operation order are
// train_step.cuh's ts_fwd / ts_bwd, so the loop forms agree up to the
// products' summation order.
#pragma once
#include "common.cuh"

// One item's forward cell, every cell but GRU reset-before (whose two
// phases tc_fwd keeps), shared by tc_fwd, tc_rfwd, tc_mfwd and tr_mma_fwd: x the input parts
// (b_ih added), p the recurrent products, bb b_hh, hp h_{t-1} as stored,
// c the LSTM cell state (in c_{t-1}, out c_t). Out: the post-activation
// gates gv[0, G) the backward reads, aux (GRU reset-after W_hn·h + b_hn,
// LSTM tanh c); returns h_t.
template <int C>
__device__ __forceinline__ float tc_cell_fwd(const float* x, const float* p, const float* bb, float hp, float* c,
                                             float* gv, float* aux) {
    if (C == RNN_TANH || C == RNN_RELU) {
        const float pre = x[0] + p[0] + bb[0];
        const float h = C == RNN_TANH ? tanhf(pre) : relu_f(pre);
        gv[0] = h;
        return h;
    } else if (C == GRU_AFTER) {
        const float r = sigmoid_f(x[0] + (p[0] + bb[0]));
        const float z = sigmoid_f(x[1] + (p[1] + bb[1]));
        const float hn = p[2] + bb[2];
        const float n = tanhf(x[2] + r * hn);
        gv[0] = r;
        gv[1] = z;
        gv[2] = n;
        *aux = hn;
        return n + z * (hp - n);
    } else {  // LSTM i, f, g, o
        const float i = sigmoid_f(x[0] + p[0] + bb[0]);
        const float f = sigmoid_f(x[1] + p[1] + bb[1]);
        const float gg = tanhf(x[2] + p[2] + bb[2]);
        const float o = sigmoid_f(x[3] + p[3] + bb[3]);
        const float cc = f * *c + i * gg;
        const float tc = tanhf(cc);
        gv[0] = i;
        gv[1] = f;
        gv[2] = gg;
        gv[3] = o;
        *c = cc;
        *aux = tc;
        return o * tc;
    }
}

// One item's backward cell, every cell but GRU reset-before, shared by
// tc_bwd and tc_rbwd: d = dh_t (the output's share + the direct share from
// step t+1 + the recurrent product), gv the saved gates, hp h_{t-1} as
// stored, av aux, cp c_{t-1}, dcs the LSTM dc (in from step t+1, out to
// step t−1). Out: dg the input-side pre-activation gradients (dih), dr the
// recurrent-side ones (dhh, exchanged); returns the direct share of
// dh_{t-1} (GRU reset-after d·z, else 0).
template <int C>
__device__ __forceinline__ float tc_cell_bwd(float d, const float* gv, float hp, float av, float cp, float* dcs,
                                             float* dg, float* dr) {
    if (C == RNN_TANH || C == RNN_RELU) {
        const float hv = gv[0];
        const float dp = C == RNN_TANH ? d * (1.0f - hv * hv) : (hv > 0.0f ? d : 0.0f);
        dg[0] = dp;
        dr[0] = dp;
        return 0.0f;
    } else if (C == GRU_AFTER) {
        const float r = gv[0], z = gv[1], n = gv[2];
        const float dnp = d * (1.0f - z) * (1.0f - n * n);
        const float dz = d * (hp - n) * z * (1.0f - z);
        const float drr = dnp * av * r * (1.0f - r);
        dg[0] = drr;
        dg[1] = dz;
        dg[2] = dnp;
        dr[0] = drr;
        dr[1] = dz;
        dr[2] = dnp * r;
        return d * z;
    } else {  // LSTM
        const float ig = gv[0], f = gv[1], gg = gv[2], og = gv[3];
        const float tc = av;
        const float dcj = *dcs + d * og * (1.0f - tc * tc);
        dg[0] = dcj * gg * ig * (1.0f - ig);
        dg[1] = dcj * cp * f * (1.0f - f);
        dg[2] = dcj * ig * (1.0f - gg * gg);
        dg[3] = d * tc * og * (1.0f - og);
#pragma unroll
        for (int g = 0; g < 4; ++g) dr[g] = dg[g];
        *dcs = dcj * f;
        return 0.0f;
    }
}

// What one item's backward reads of step t's cache: the output's share of
// dh_t, h_{t-1} as stored, the saved gates, aux and c_{t-1} (as needed by
// the cell). None of it depends on the exchange, so the backward loops
// (tc_bwd, tc_bwd_rs, tr_mma_bwd) load the next step's for a thread's
// first item before they wait, and the global latency hides behind the
// wait instead of following the product.
struct TcBwdCache {
    float d, hp, g[4], av, cp;
};

template <int C, typename W>
__device__ __forceinline__ void tc_bwd_load(TcBwdCache& k, const float* dhs, const W* gates, const W* aux,
                                            const W* hcat, const float* ccat, long long row, int j, int H) {
    constexpr int G = Cell<C>::G;
    const long long e = row * H + j;
    const W* g = gates + row * (G * H);
    k.d = dhs[e];
    k.hp = to_f(hcat[e]);
#pragma unroll
    for (int q = 0; q < 4; ++q) k.g[q] = q < G ? to_f(g[q * H + j]) : 0.0f;
    k.av = (C == GRU_AFTER || C == LSTM) ? to_f(aux[e]) : 0.0f;
    k.cp = C == LSTM ? ccat[e] : 0.0f;
}
