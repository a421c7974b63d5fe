// Recurrent layers on thread-block clusters with W_hh in registers (sm_90):
// rec_rcluster16_{f32,f16}_<cell> (and rec_mcluster16_*, the product on
// tensor cores: cluster_mma.cuh), the whole T-step sequence in one launch of
// clusters of RC_CS = 16 CTAs, for H ≤ RC_K = 256, every cell. GRU
// reset-before takes two exchanges per step, as the register generation
// and training forward do: the r and z rows against h_{t-1}, r ⊙ h_{t-1}
// (f32) to every CTA under its own mbarrier, then the n rows against it.
//
// Why a second cluster kernel: the shared-memory one (cluster_step.cuh)
// spends ≈ 8,400 cycles per d2l step (ncu, engine_h100_run5) in a long
// serial chain per thread: products over shared-memory weights, partial
// sums staged in shared memory and added by a few threads, 16 remote stores
// per value by one thread. Here every thread holds its weights in registers
// for the whole sequence and the chain per step is short:
//
//   CTA `rank` owns hidden units [rank·U, rank·U + U), U = ceil(H/16) ≤ 16;
//   warp w owns units 2w and 2w + 1 of those (RC_UPW), i.e. RC_UPW·G rows
//   of W_hh; lane l owns k ∈ [4l, 4l+4) ∪ [128+4l, 128+4l+4) of those rows
//   (conflict-free 16-byte loads of h) — RC_UPW·G·8 weights in registers,
//   converted to f32 once (f16 mode: exact).
//   Per step: each lane forms RC_UPW·G·BCMAX partial dot products (≤ 32
//   values), one transposing warp reduction (31 shuffles) leaves lane j with
//   the total of value j, the warp swaps them through 32 floats of shared
//   memory, and every lane computes the cell for one (unit, batch row) item;
//   the item's lanes split the 16 remote stores of the new h between them.
//   The stores are st.async, counted by the receiving CTA's mbarrier, which
//   is all a CTA waits for before its next step (no cluster barrier, no
//   fence). The next step's input part (token gather of W_ih or the dense
//   pre-gates) is loaded a step ahead.
//
// Batch rows: cluster c runs rows [c·BC, c·BC + BC) (RecParams::ldb = BC ≤
// rc_rows<C>), the clusters are independent. Shared memory is static:
// h double-buffered (2·BCMAX·256 floats; r ⊙ h another BCMAX·256 for GRU
// reset-before) and 32 floats per warp.
#include "rec_params.cuh"
#include "cluster_step.cuh"
#include "cluster_seq_item.cuh"
#include "cluster_mma.cuh"

template <int C, typename W, typename A>
__device__ void rec_rcluster(const RecParams& p) {
    constexpr int G = Cell<C>::G;
    constexpr int BCMAX = RcRows<C>::value;
    constexpr int ROWS = RC_UPW * G;  // weight rows per warp
    constexpr bool TWO_PHASES = C == GRU_BEFORE;
    __shared__ __align__(16) float hbuf[2][BCMAX][RC_K];
    __shared__ __align__(16) float rhbuf[TWO_PHASES ? BCMAX : 1][RC_K];
    __shared__ float swap[NWARPS][32];
    // mbarriers: h buffers 0 and 1, r ⊙ h (reset-before).
    __shared__ __align__(8) unsigned long long mbar[3];

    const int H = p.H;
    const RcLane<BCMAX> L(H, p.units, p.B, p.ldb);
    const int lane = L.lane, warp = L.warp, nbc = L.nbc, iu = L.iu, ib = L.ib, j = L.j, b = L.b;
    const bool valid = L.valid, working = L.working;
    const int copy = L.copy, copies = L.copies, ranks = L.ranks;
    // Bytes of h each unit-owning CTA receives per step: all H units of its
    // rows. CTAs that own no unit idle to the closing barrier.
    const unsigned step_bytes = (unsigned)(nbc * H) * 4u;

    // This lane's weights: row (ul, g) = global row g·H + u0 + RC_UPW·warp + ul.
    float w[ROWS][8];
    rc_load_rows<G, W>(w, static_cast<const W*>(p.w_hh), H, L.u0, L.un, warp, lane);

    // h_{-1} = h0; k ≥ H and rows ≥ nbc stay zero (their weights are zero,
    // but 0 · NaN would not be).
    for (int i = threadIdx.x; i < 2 * BCMAX * RC_K; i += NTHREADS) (&hbuf[0][0][0])[i] = 0.0f;
    if (TWO_PHASES)
        for (int i = threadIdx.x; i < BCMAX * RC_K; i += NTHREADS) (&rhbuf[0][0])[i] = 0.0f;
    __syncthreads();
    seq_load_h0<A>(&hbuf[0][0][0], RC_K, p, L.b0, nbc);
    // mbar[s] counts the bytes of h arriving in hbuf[s]: step t ≥ 1 reads
    // hbuf[t & 1] after phase (t - 1) >> 1 of mbar[t & 1] has completed.
    // mbar[2] counts r ⊙ h_{t-1}: step t reads rhbuf after its phase t.
    const unsigned bar0 = smem_u32(&mbar[0]), rbar = smem_u32(&mbar[2]);  // mbar[s] at bar0 + 8·s
    rc_arm(bar0, step_bytes, L.un);
    if (TWO_PHASES) rc_arm_one(rbar, step_bytes, L.un);
    SeqItem<C, W, A> item(p, valid, b, j);
    // Every CTA has zeroed its buffers and armed its barriers before anyone
    // stores into them.
    cluster_sync();

    // Why one arming per phase is safe: phase n + 1 of mbar[s] needs the
    // stores of every working warp of every CTA of step t + 1 (this CTA's
    // own included, h goes to every rank), which each warp makes only after
    // its wait of step t; so no phase completes while a waiter of the
    // previous one of the same barrier has not passed, and no store of step
    // t + 1 overwrites hbuf[s] while a warp still reads it in step t.
    // Reset-before's r ⊙ h the same way: phase t + 1 of mbar[2] needs every
    // CTA's r ⊙ h of step t + 1, which each sends after its wait for the
    // whole h_t, which needs every working warp of this CTA past its wait
    // of phase t and its reads of rhbuf (each warp's items send h_t after
    // both); so thread 0 may re-arm it right after its own wait.
    for (int t = 0; working && t < p.T; ++t) {
        const int cur = t & 1;
        const bool last = t == p.T - 1;
        rc_step_wait(bar0, t, step_bytes);
        if (valid) item.prefetch(p, t);
        // The item's sums of the lane's k slice (reset-before: r and z,
        // then n).
        float hr[4] = {0.f, 0.f, 0.f, 0.f};
        float z = 0.0f;  // reset-before: phase 1's update gate
        if constexpr (TWO_PHASES) {
            // Phase 1: r and z against h_{t-1}; r ⊙ h_{t-1} to every CTA.
            rc_item_sums<G, 0, 2, BCMAX>(hr, w, hbuf[cur], swap[warp], nbc, lane, iu, ib, valid);
            if (valid) {
                const float r = sigmoid_f(item.xc[0] + (hr[0] + item.bhh[0]));
                z = sigmoid_f(item.xc[1] + (hr[1] + item.bhh[1]));
                rc_send(smem_u32(&rhbuf[ib][j]), r * hbuf[cur][ib][j], rbar, copy, copies, ranks);
            }
            mbar_wait(rbar, (unsigned)t & 1u);
            if (threadIdx.x == 0) mbar_expect(rbar, step_bytes);
            // Phase 2: the n rows against r ⊙ h_{t-1}.
            rc_item_sums<G, 2, 1, BCMAX>(hr, w, rhbuf, swap[warp], nbc, lane, iu, ib, valid);
        } else {
            rc_item_sums<G, 0, G, BCMAX>(hr, w, hbuf[cur], swap[warp], nbc, lane, iu, ib, valid);
        }
        if (valid) {
            const float h = item.cell(hr, hbuf[cur][ib][j], z);
            const float hv = stored<A>(h);
            if (!last) {
                rc_send(smem_u32(&hbuf[cur ^ 1][ib][j]), hv, bar0 + 8 * (cur ^ 1), copy, copies, ranks);
            }
            item.finish(p, t, h, hv, copy == 0);
        }
    }
    // No CTA leaves while stores into its shared memory may be in flight.
    cluster_sync();
}

#define RCLUSTER_KERNELS(NAME, C)                                                           \
    extern "C" __global__ void __cluster_dims__(RC_CS, 1, 1) __launch_bounds__(NTHREADS, 2) \
        rec_rcluster16_f32_##NAME(RecParams p) {                                            \
        rec_rcluster<C, float, float>(p);                                                   \
    }                                                                                       \
    extern "C" __global__ void __cluster_dims__(RC_CS, 1, 1) __launch_bounds__(NTHREADS, 2) \
        rec_rcluster16_f16_##NAME(RecParams p) {                                            \
        rec_rcluster<C, __half, __half>(p);                                                 \
    }

RCLUSTER_KERNELS(rnn_tanh, RNN_TANH)
RCLUSTER_KERNELS(rnn_relu, RNN_RELU)
RCLUSTER_KERNELS(gru_before, GRU_BEFORE)
RCLUSTER_KERNELS(gru_after, GRU_AFTER)
RCLUSTER_KERNELS(lstm, LSTM)

// The same layers with the product on tensor cores (cluster_mma.cuh).
MCLUSTER_KERNELS(rnn_tanh, RNN_TANH)
MCLUSTER_KERNELS(rnn_relu, RNN_RELU)
MCLUSTER_KERNELS(gru_before, GRU_BEFORE)
MCLUSTER_KERNELS(gru_after, GRU_AFTER)
MCLUSTER_KERNELS(lstm, LSTM)
