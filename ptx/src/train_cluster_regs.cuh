// The training time loops on clusters of 16 CTAs with W_hh in registers
// (included by train_cluster.cu).
//
// Forward: tr_rcluster16_fwd_{f32,f16}_<cell>, every
// cell, H ≤ RC_K = 256, at most 32 / (2·G) batch rows per cluster. The scheme is recurrent_cluster_regs.cu's (read its header):
// warp w of CTA `rank` owns hidden units u0 + 2w, u0 + 2w + 1 and every lane
// 8 k of their gate rows; one transposing warp reduction per step; every
// lane computes the cell for one (unit, batch row) item and the item's lanes
// split the 16 st.async stores of the new h, counted by each receiver's
// mbarrier (no cluster barrier, no fence per step). What the training adds:
// h0 and c0 come from slot 0 of hcat / ccat, and lane copy 0 of each item
// stores the step's cache the backward reads: gates (post-activation), aux
// (GRU reset-after W_hn·h + b_hn, LSTM tanh c), h into hcat slot t + 1 and the
// LSTM c into ccat slot t + 1. GRU reset-before takes two exchanges per
// step, as tc_fwd and the register generation (generate_cluster_regs.cu):
// the r and z rows against h_{t-1}, r ⊙ h_{t-1} (as stored, also its aux)
// to every CTA's rhbuf (one buffer, its own mbarrier, exchange t at step t),
// then the n rows against it. One buffer suffices: a CTA stores step t+1's
// r ⊙ h only after the whole h_t, so after every warp's step-t reads of it.
// The cell's formulas and operation order are tc_fwd's (so ts_fwd's); only
// the product's summation order differs.
// Same parameters as tr_cluster16_fwd_* (U = ceil(H/16), BC rows per
// cluster); shared memory static.

#include "train_fwd_item.cuh"

template <int C, typename W>
__device__ void tc_rfwd(const TrFwdArgs<W>& a, int U, int BC) {
    constexpr int G = Cell<C>::G;
    constexpr int BCMAX = RcRows<C>::value;
    constexpr int ROWS = RC_UPW * G;  // weight rows per warp
    constexpr bool TWO_PHASES = C == GRU_BEFORE;
    __shared__ __align__(16) float hbuf[2][BCMAX][RC_K];
    __shared__ __align__(16) float rhbuf[TWO_PHASES ? BCMAX : 1][RC_K];
    __shared__ float swap[NWARPS][32];
    // mbarriers: h buffers 0 and 1, r ⊙ h.
    __shared__ __align__(8) unsigned long long mbar[3];

    const int H = a.H, T_ = a.T;
    const RcLane<BCMAX> L(H, U, a.B, BC);
    const int lane = L.lane, warp = L.warp, nbc = L.nbc, iu = L.iu, ib = L.ib, j = L.j;
    const bool valid = L.valid, working = L.working;
    const int copy = L.copy, copies = L.copies, ranks = L.ranks;
    // Bytes of h each unit-owning CTA receives per step.
    const unsigned step_bytes = (unsigned)(nbc * H) * 4u;

    // This lane's weights: row (ul, g) = global row g·H + u0 + 2·warp + ul.
    float w[ROWS][8];
    rc_load_rows<G, W>(w, a.w_hh, H, L.u0, L.un, warp, lane);

    // h_{-1} from hcat slot 0; k ≥ H and rows ≥ nbc stay zero.
    for (int i = threadIdx.x; i < 2 * BCMAX * RC_K; i += NTHREADS) (&hbuf[0][0][0])[i] = 0.0f;
    if (TWO_PHASES)
        for (int i = threadIdx.x; i < BCMAX * RC_K; i += NTHREADS) (&rhbuf[0][0])[i] = 0.0f;
    __syncthreads();
    tr_load_h0<W>(&hbuf[0][0][0], RC_K, a, L.b0, nbc);
    // mbar[s] counts the bytes of h arriving in hbuf[s] (as rec_rcluster),
    // mbar[2] those of r ⊙ h (reset-before).
    const unsigned bar0 = smem_u32(&mbar[0]), rbar = smem_u32(&mbar[2]);
    rc_arm(bar0, step_bytes, L.un);
    if (TWO_PHASES) rc_arm_one(rbar, step_bytes, L.un);
    TrFwdItem<C, W> item(a, valid, L.b, j);
    // Every CTA has zeroed its buffers and armed its barriers before anyone
    // stores into them.
    cluster_sync();

    for (int t = 0; working && t < T_; ++t) {
        const int cur = t & 1;
        const bool last = t == T_ - 1;
        rc_step_wait(bar0, t, step_bytes);
        if (valid) item.prefetch(a, t);
        // The item's recurrent sums (rc_item_sums: the lane's partials of
        // its k slice, one transposing warp reduction).
        float p[4] = {0.f, 0.f, 0.f, 0.f};
        float r = 0.0f, z = 0.0f;  // reset-before: phase 1's gates
        if constexpr (TWO_PHASES) {
            // Phase 1: r and z; r ⊙ h_{t-1} to every CTA.
            rc_item_sums<G, 0, 2, BCMAX>(p, w, hbuf[cur], swap[warp], nbc, lane, iu, ib, valid);
            if (valid) {
                r = sigmoid_f(item.xc[0] + (p[0] + item.bhh[0]));
                z = sigmoid_f(item.xc[1] + (p[1] + item.bhh[1]));
                const float rh = r * hbuf[cur][ib][j];
                if (copy == 0) a.aux[((long long)t * a.B + L.b) * H + j] = from_f<W>(rh);
                rc_send(smem_u32(&rhbuf[ib][j]), stored<W>(rh), rbar, copy, copies, ranks);
            }
            // The whole r ⊙ h_{t-1} here (exchange t of rbar), armed again
            // for step t + 1 as the h buffers are.
            mbar_wait(rbar, (unsigned)t & 1u);
            if (threadIdx.x == 0) mbar_expect(rbar, step_bytes);
            rc_item_sums<G, 2, 1, BCMAX>(p, w, rhbuf, swap[warp], nbc, lane, iu, ib, valid);
        } else {
            rc_item_sums<G, 0, G, BCMAX>(p, w, hbuf[cur], swap[warp], nbc, lane, iu, ib, valid);
        }
        if (valid) {
            const float hp = hbuf[cur][ib][j];
            float gv[4], ax = 0.0f;
            float h;
            if (TWO_PHASES) {
                const float n = tanhf(item.xc[2] + (p[2] + item.bhh[2]));
                gv[0] = r;
                gv[1] = z;
                gv[2] = n;
                h = n + z * (hp - n);
            } else {
                h = tc_cell_fwd<C>(item.xc, p, item.bhh, hp, &item.c, gv, &ax);
            }
            // The cache first: the gates need not stay live across the sends.
            if (copy == 0) item.store(a, t, gv, ax, h);
            if (!last) rc_send(smem_u32(&hbuf[cur ^ 1][ib][j]), stored<W>(h), bar0 + 8 * (cur ^ 1), copy, copies, ranks);
            item.advance();
        }
        // rc_item_sums closes with a __syncwarp after its reads of the swap
        // row, so the next step may rewrite it.
    }
    // No CTA leaves while stores into its shared memory may be in flight.
    cluster_sync();
}

// Backward: tr_rcluster16_bwd_{f32,f16}_<cell>, written for the same cells
// and H, instantiated for the RNN cells (see the instances below), at most
// TrRbRows<C> batch rows per cluster. Warp w of CTA `rank` owns
// hidden units j = u0 + 2w, u0 + 2w + 1, i.e. rows j of W_hhᵀ (G·H long),
// and lane l the k ∈ {128·m + 4l .. +3} of them (W_hhᵀ from `wt`, as
// tc_bwd). Per step t = T−1 .. 0: each lane's partial sums of
// dhh_{t+1} · W_hh[:, j] for its 2 units × rows, one transposing warp
// reduction, and every lane the cell's backward for one (unit, row) item
// with the item's carries (GRU dh ⊙ z, LSTM dc) in registers; lane copy 0
// writes the item's dih, dhh; the item's lanes split the G × 16 st.async
// stores of dhh_t into every CTA's next buffer (counted by its mbarrier,
// as the forward). The step's cache loads (dhs, gates, aux, h_{t-1}, c_{t-1})
// are issued before the wait. The formulas and their order are tc_bwd's.
template <int C> struct TrRbRows {
    // ≤ 40 KB of static shared memory for the two dhh buffers, ≤ 16 rows
    // (2 units × rows partial sums per lane ≤ 32).
    static constexpr int v = 40960 / (2 * RC_K * Cell<C>::G * 4);
    static constexpr int value = v < 16 ? v : 16;
};

template <int C, typename W>
__device__ void tc_rbwd(float* dih, float* dhh, const float* dhs, const W* wt, const W* gates, const W* aux,
                        const W* hcat, const float* ccat, int B, int H, int T_, int U, int BC) {
    constexpr int G = Cell<C>::G;
    constexpr int BCMAX = TrRbRows<C>::value;
    constexpr int KP = RC_K * G;  // dhh row stride (floats)
    constexpr int MCH = 2 * G;    // 128-wide k chunks of a lane
    __shared__ __align__(16) float gbuf[2][BCMAX][KP];
    __shared__ float swap[NWARPS][32];
    __shared__ __align__(8) unsigned long long mbar[2];

    const RcLane<BCMAX> L(H, U, B, BC);
    const int lane = L.lane, warp = L.warp, nbc = L.nbc, iu = L.iu, ib = L.ib, j = L.j, b = L.b;
    const bool valid = L.valid, working = L.working;
    const int copy = L.copy, copies = L.copies, ranks = L.ranks;
    const int GH = G * H;
    const unsigned step_bytes = (unsigned)(nbc * GH) * 4u;

    // Rows j of W_hhᵀ, this lane's k.
    float w[RC_UPW][MCH][4];
#pragma unroll
    for (int ul = 0; ul < RC_UPW; ++ul) {
        const int u = RC_UPW * warp + ul;
        const W* row = wt + (size_t)(L.u0 + u) * GH;
#pragma unroll
        for (int m = 0; m < MCH; ++m)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int k = 128 * m + 4 * lane + e;
                w[ul][m][e] = (u < L.un && k < GH) ? to_f(row[k]) : 0.0f;
            }
    }

    // The item's carries: the direct share of dh_{t-1} (GRU), dc (LSTM).
    float carry = 0.0f, dcs = 0.0f;

    // dhh_T = 0; k ≥ G·H and rows ≥ nbc stay zero.
    for (int i = threadIdx.x; i < 2 * BCMAX * KP; i += NTHREADS) (&gbuf[0][0][0])[i] = 0.0f;
    const unsigned bar0 = smem_u32(&mbar[0]);
    rc_arm(bar0, step_bytes, L.un);
    __syncthreads();
    cluster_sync();

    // Step i = T−1−t reads gbuf[i & 1] (dhh_{t+1}), filled by exchange
    // (i − 1) >> 1 of mbar[i & 1] for i ≥ 1, and sends dhh_t into
    // gbuf[(i + 1) & 1]; the phase argument is the forward's.
    for (int i = 0; working && i < T_; ++i) {
        const int t = T_ - 1 - i, cur = i & 1;
        const bool last = t == 0;
        const long long row = (long long)t * B + b;
        const long long e = row * H + j;
        // The step's cache, loaded before the wait.
        float dv = 0.0f, hp = 0.0f, av = 0.0f, cp = 0.0f, gv[4] = {0.f, 0.f, 0.f, 0.f};
        if (valid) {
            dv = dhs[e];
            hp = to_f(hcat[e]);
#pragma unroll
            for (int g = 0; g < G; ++g) gv[g] = to_f(gates[row * GH + g * H + j]);
            if (C == GRU_AFTER || C == LSTM) av = to_f(aux[e]);
            if (C == LSTM) cp = ccat[e];
        }
        if (i > 0) {
            mbar_wait(bar0 + 8 * cur, (unsigned)((i - 1) >> 1) & 1u);
            if (threadIdx.x == 0) mbar_expect(bar0 + 8 * cur, step_bytes);
        }
        float v[32];
#pragma unroll
        for (int q = 0; q < 32; ++q) v[q] = 0.0f;
#pragma unroll
        for (int r = 0; r < BCMAX; ++r) {
            if (r < nbc) {
                float a0 = 0.0f, a1 = 0.0f;
#pragma unroll
                for (int m = 0; m < MCH; ++m) {
                    const float4 g4 = *reinterpret_cast<const float4*>(&gbuf[cur][r][128 * m + 4 * lane]);
                    a0 = fmaf(w[0][m][0], g4.x, a0);
                    a0 = fmaf(w[0][m][1], g4.y, a0);
                    a0 = fmaf(w[0][m][2], g4.z, a0);
                    a0 = fmaf(w[0][m][3], g4.w, a0);
                    a1 = fmaf(w[1][m][0], g4.x, a1);
                    a1 = fmaf(w[1][m][1], g4.y, a1);
                    a1 = fmaf(w[1][m][2], g4.z, a1);
                    a1 = fmaf(w[1][m][3], g4.w, a1);
                }
                v[r] = a0;
                v[BCMAX + r] = a1;
            }
        }
        swap[warp][lane] = warp_transpose_sum(v);
        __syncwarp();
        if (valid) {
            const float prod = swap[warp][iu * BCMAX + ib];
            const float d = (dv + carry) + prod;
            float dg[4], dr[4];  // dih, dhh (sent) of the item's gates
            carry = tc_cell_bwd<C>(d, gv, hp, av, cp, &dcs, dg, dr);
            if (copy == 0) {
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    dih[row * GH + g * H + j] = dg[g];
                    dhh[row * GH + g * H + j] = dr[g];
                }
            }
            if (!last) {
                const unsigned bar = bar0 + 8 * (cur ^ 1);
#pragma unroll
                for (int g = 0; g < G; ++g) rc_send(smem_u32(&gbuf[cur ^ 1][ib][g * H + j]), dr[g], bar, copy, copies, ranks);
            }
        }
        __syncwarp();
    }
    // No CTA leaves while stores into its shared memory may be in flight.
    cluster_sync();
}

#define TRC_KERNEL(NAME, C, SFX, W)                                                                                \
    extern "C" __global__ void __cluster_dims__(RC_CS, 1, 1) __launch_bounds__(NTHREADS, 2)                     \
        tr_rcluster16_fwd_##SFX##_##NAME(W* hcat, float* ccat, W* gates, W* aux, const W* w_hh, const W* w_ih,    \
                                         const float* b_ih, const float* b_hh, const unsigned* tok, int B, int H, \
                                         int V, int T_, int U, int BC) {                                          \
        const TrFwdArgs<W> a{hcat, ccat, gates, aux, w_hh, w_ih, b_ih, b_hh, tok, B, H, V, T_};                  \
        tc_rfwd<C, W>(a, U, BC);                                                                                   \
    }
#define TRC_BWD_KERNEL(NAME, C, SFX, W)                                                                    \
    extern "C" __global__ void __cluster_dims__(RC_CS, 1, 1) __launch_bounds__(NTHREADS, 2)             \
        tr_rcluster16_bwd_##SFX##_##NAME(float* dih, float* dhh, const float* dhs, const W* wt,          \
                                         const W* gates, const W* aux, const W* hcat, const float* ccat, \
                                         int B, int H, int T_, int U, int BC) {                          \
        tc_rbwd<C, W>(dih, dhh, dhs, wt, gates, aux, hcat, ccat, B, H, T_, U, BC);                        \
    }
#define TRC_KERNELS(NAME, C)          \
    TRC_KERNEL(NAME, C, f32, float)   \
    TRC_KERNEL(NAME, C, f16, __half)
#define TRC_BWD_KERNELS(NAME, C)         \
    TRC_BWD_KERNEL(NAME, C, f32, float)  \
    TRC_BWD_KERNEL(NAME, C, f16, __half)

TRC_KERNELS(rnn_tanh, RNN_TANH)
TRC_KERNELS(rnn_relu, RNN_RELU)
TRC_KERNELS(gru_before, GRU_BEFORE)
TRC_KERNELS(gru_after, GRU_AFTER)
TRC_KERNELS(lstm, LSTM)
// The register backward for the RNN cells only. For GRU and LSTM it passed
// every gradient test but was no faster (GRU 228.8 → 227.4 µs per training
// step's backward) or slower (LSTM 288.8 → 316.2) than the shared-memory
// kernel on the H100 (benches/results/engine_train_h100_run7): there the
// step is the exchange of G·H values per row, not the product.
TRC_BWD_KERNELS(rnn_tanh, RNN_TANH)
TRC_BWD_KERNELS(rnn_relu, RNN_RELU)
