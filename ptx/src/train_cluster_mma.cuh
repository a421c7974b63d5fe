// The training forward on clusters of 16 CTAs with the recurrent product
// on tensor cores: tr_mcluster16_fwd_{f32,f16}_<cell> (included by
// train_cluster.cu), every cell, H ≤ RC_K = 256, at most MC_ROWS = 8 batch
// rows per cluster. The product is cluster_mma.cuh's (W_hh as mma A
// fragments in registers, gate g = m-tile g, the cluster's batch rows the
// mma's n; f32 by 3×TF32), the exchange and the cache tc_rfwd's
// (train_cluster_regs.cuh): h to every CTA by st.async into its mbarrier,
// and item lane copy 0 stores gates (post-activation), aux (GRU reset-after
// W_hn·h + b_hn, reset-before r ⊙ h_{t-1} as stored, LSTM tanh c), h into
// hcat slot t + 1 and the LSTM c into ccat slot t + 1. GRU reset-before
// takes two exchanges per step, as tc_rfwd: m-tiles r and z against
// h_{t-1}, r ⊙ h_{t-1} to every CTA's rhbuf (its own mbarrier), then m-tile
// n against it. The cell's formulas and order are tc_rfwd's; only the
// product's summation order differs.
// Same parameters as tr_rcluster16_fwd_* (U = ceil(H/16), BC rows per
// cluster); shared memory static.
#pragma once
#include "cluster_mma.cuh"
#include "train_fwd_item.cuh"

template <int C, typename W>
__device__ void tc_mfwd(const TrFwdArgs<W>& a, int U, int BC) {
    constexpr int G = Cell<C>::G;
    constexpr int LDH = McShape<W>::LDH;
    constexpr bool TWO_PHASES = C == GRU_BEFORE;
    __shared__ __align__(16) float hbuf[2][MC_ROWS][LDH];
    __shared__ __align__(16) float rhbuf[TWO_PHASES ? MC_ROWS : 1][LDH];
    __shared__ __align__(8) float part[NWARPS][G][16][MC_ROWS];
    // mbarriers: h buffers 0 and 1, r ⊙ h.
    __shared__ __align__(8) unsigned long long mbar[3];

    const int H = a.H, T_ = a.T;
    const McLane L(H, U, a.B, BC);
    const int warp = L.warp, lane = L.lane, nbc = L.nbc, iu = L.iu, ib = L.ib, j = L.j;
    const bool valid = L.valid, working = L.working;
    const unsigned step_bytes = (unsigned)(nbc * H) * 4u;

    const McFrags<G, W> frags(a.w_hh, H, L.u0, L.un, warp, lane);

    // h_{-1} from hcat slot 0; k ≥ H and rows ≥ nbc stay zero (their
    // products are zero, but 0 · NaN would not be).
    for (int i = threadIdx.x; i < 2 * MC_ROWS * LDH; i += NTHREADS) (&hbuf[0][0][0])[i] = 0.0f;
    if (TWO_PHASES)
        for (int i = threadIdx.x; i < MC_ROWS * LDH; i += NTHREADS) (&rhbuf[0][0])[i] = 0.0f;
    __syncthreads();
    tr_load_h0<W>(&hbuf[0][0][0], LDH, a, L.b0, nbc);
    // mbar[s] counts the bytes of h arriving in hbuf[s], mbar[2] those of
    // r ⊙ h (reset-before).
    const unsigned bar0 = smem_u32(&mbar[0]), rbar = smem_u32(&mbar[2]);
    rc_arm(bar0, step_bytes, working ? L.un : 0);
    if (TWO_PHASES) rc_arm_one(rbar, step_bytes, working ? L.un : 0);
    TrFwdItem<C, W> item(a, valid, L.b, j);
    // Every CTA has zeroed its buffers and armed its barriers before anyone
    // stores into them.
    cluster_sync();

    // The exchanges' safety is tc_rfwd's argument: a CTA stores into another
    // CTA's buffer for step t + 1 only after its own wait for the whole h_t,
    // which every CTA sends only after the block barrier that follows its
    // warps' reads of h_{t-1} (and, reset-before, of r ⊙ h_{t-1}:
    // mc_products).
    for (int t = 0; working && t < T_; ++t) {
        const int cur = t & 1;
        const bool last = t == T_ - 1;
        rc_step_wait(bar0, t, step_bytes);
        if (valid) item.prefetch(a, t);
        const float hp = hbuf[cur][ib][j];
        float r = 0.0f, z = 0.0f;  // reset-before: phase 1's gates
        const float rh =
            mc_products<C, W>(part, frags, L, item, &hbuf[cur][0][0], &rhbuf[0][0], rbar, step_bytes, t, hp, &r, &z);
        if (TWO_PHASES && valid && L.copy == 0) a.aux[((long long)t * a.B + L.b) * H + j] = from_f<W>(rh);
        if (valid) {
            float gv[4], ax = 0.0f;
            float h;
            if (TWO_PHASES) {
                const float n = tanhf(item.xc[2] + (mc_sum<G>(part, 2, iu, ib) + item.bhh[2]));
                gv[0] = r;
                gv[1] = z;
                gv[2] = n;
                h = n + z * (hp - n);
            } else {
                float p[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int g = 0; g < G; ++g) p[g] = mc_sum<G>(part, g, iu, ib);
                h = tc_cell_fwd<C>(item.xc, p, item.bhh, hp, &item.c, gv, &ax);
            }
            // The cache first: the gates need not stay live across the sends.
            if (L.copy == 0) item.store(a, t, gv, ax, h);
            if (!last) rc_send(smem_u32(&hbuf[cur ^ 1][ib][j]), stored<W>(h), bar0 + 8 * (cur ^ 1), L.copy, 2, L.ranks);
            item.advance();
        }
    }
    // No CTA leaves while stores into its shared memory may be in flight.
    cluster_sync();
}

#define TRM_KERNEL(NAME, C, SFX, W)                                                                                \
    extern "C" __global__ void __cluster_dims__(RC_CS, 1, 1) __launch_bounds__(NTHREADS, 1)                     \
        tr_mcluster16_fwd_##SFX##_##NAME(W* hcat, float* ccat, W* gates, W* aux, const W* w_hh, const W* w_ih,    \
                                         const float* b_ih, const float* b_hh, const unsigned* tok, int B, int H, \
                                         int V, int T_, int U, int BC) {                                          \
        const TrFwdArgs<W> a{hcat, ccat, gates, aux, w_hh, w_ih, b_ih, b_hh, tok, B, H, V, T_};                  \
        tc_mfwd<C, W>(a, U, BC);                                                                                   \
    }
#define TRM_KERNELS(NAME, C)        \
    TRM_KERNEL(NAME, C, f32, float) \
    TRM_KERNEL(NAME, C, f16, __half)

TRM_KERNELS(rnn_tanh, RNN_TANH)
TRM_KERNELS(rnn_relu, RNN_RELU)
TRM_KERNELS(gru_before, GRU_BEFORE)
TRM_KERNELS(gru_after, GRU_AFTER)
TRM_KERNELS(lstm, LSTM)
