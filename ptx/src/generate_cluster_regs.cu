// Generation on clusters with W_hh in registers (sm_90):
// gen_rcluster16_{f32,f16}_<cell>, every cell, H ≤ RC_K = 256, clusters of
// RC_CS = 16 CTAs.
//
// The cell step is recurrent_cluster_regs.cu's (RcLane, rc_partials,
// warp_transpose_sum, rc_send); the output layer and the draw are
// generate_cluster.cu's (W_d rows in shared memory, logits to every CTA,
// block_sample_row). Per generated token:
//   cell step: each lane its 8 k of its warp's RC_UPW·G weight rows
//     (registers), one transposing warp reduction, the cell of one
//     (unit, batch row) item, the new h sent by st.async to every CTA
//   → wait for this CTA's whole h (mbarrier)
//   → this CTA's logits rows [rank·VR, rank·VR + VR), sent to every CTA
//   → wait for the whole logits (mbarrier) → every CTA draws the same token
//     with the same code and feeds it back.
// The input part of the next cell step (a column of W_ih for the drawn
// token) is loaded before the product, so its latency hides behind it.
// GRU reset-before takes two exchanges per step, as in generate_cluster.cu:
// the r and z rows against h_{t-1}, r ⊙ h_{t-1} (f32) to every CTA, then
// the n rows against it.
// Product ahead (GEN_AHEAD in GenParams::opts), as in generate_cluster.cu:
// step s + 1's product against h_s (reset-before: its r and z rows) runs
// after this CTA's logits are sent, while the others' are on their way;
// each valid lane keeps its item's sums in registers (rc_item_sums). Block sends
// (GEN_BLOCK_SENDS) as there, for the logits only: h and r ⊙ h already go
// out from every copy of an item (rc_send). The split greedy draw
// (GEN_SPLIT_ARGMAX) as there: each CTA's first maximum instead of its
// logits.
//
// Ordering without cluster barriers (as generate_cluster.cu): every CTA
// owns at least one unit and sends its h every step (the planner checks
// every_cta_owns_a_unit), and only warps that own units read h_{t-1} for
// the product, each before its own sends (the warp reduction's shuffles
// order its lanes); so a CTA's store into buffer (s + 1) & 1 at step s
// follows every reader's last use of that buffer (its step s - 1 product,
// its step s - 2 logits).
//
// Batch rows: cluster c runs rows [c·BC, c·BC + BC) (GenClusterParams::ldb =
// BC ≤ BCMAX, the rows the kernel is compiled for: RcRows<C> (16 RNN, 5 GRU,
// 4 LSTM), or 1 for the b1 kernels below), the clusters are independent.
// Shared memory: static h (2·BCMAX·256 floats; r ⊙ h another BCMAX·256
// for GRU reset-before), the warps' swap rows and the mbarriers; dynamic
// (engine/src/plan.rs::gen_rcluster_smem):
//   W_d slice   cl_rows_bytes(VR, H, sizeof(W))
//   red         min(NTHREADS, nq·VR) · CB floats
//   logits      BC · V floats
//   b_d         VR floats
//   tokens      BC ints
//   pairs       BC · 16 · 2 words (split greedy draw)
#include "cluster_step.cuh"
#include "gen_cluster_params.cuh"
#include "gen_cluster_draw.cuh"
#include "sample.cuh"

template <int C, typename W, typename A, int BCMAX>
__device__ void gen_rcluster(const GenClusterParams& p) {
    DYNAMIC_SHARED(float4, smem4);
    constexpr int G = Cell<C>::G;
    static_assert(BCMAX >= 1 && BCMAX <= RcRows<C>::value, "a lane holds at most 32 partial sums");
    constexpr int ROWS = RC_UPW * G;  // weight rows per warp
    constexpr bool TWO_PHASES = C == GRU_BEFORE;
    __shared__ __align__(16) float hbuf[2][BCMAX][RC_K];
    __shared__ __align__(16) float rhbuf[TWO_PHASES ? BCMAX : 1][RC_K];
    __shared__ float swap[NWARPS][32];
    // mbarriers: h buffers 0 and 1, logits, r ⊙ h.
    __shared__ __align__(8) unsigned long long gbar[4];

    const int H = p.H, B = p.B, V = p.V, VR = p.vrows;
    const RcLane<BCMAX> L(H, p.units, B, p.ldb);
    const int lane = L.lane, warp = L.warp, nbc = L.nbc, iu = L.iu, ib = L.ib, j = L.j, b0 = L.b0;
    const bool valid = L.valid;
    const int rank = (int)cluster_ctarank();
    const int v0 = rank * VR, vn = max(0, min(VR, V - v0));
    const int ldw = cl_ldw(H), nq = (H + 3) / 4, nkv = cl_nkg(vn, nq);
    // The thread's place in the logits product and its first logit (batch
    // row in the chunk, row v), fixed for the whole loop: no step divides.
    const ClLane dlane(vn, nq);
    const RowWalk logits0(threadIdx.x, NTHREADS, max(vn, 1));

    char* base = reinterpret_cast<char*>(smem4);
    W* dsm = reinterpret_cast<W*>(base);
    float* red = reinterpret_cast<float*>(base + cl_rows_bytes(VR, H, sizeof(W)));
    float* lbuf = red + min(NTHREADS, nq * VR) * CB;
    float* bd = lbuf + p.ldb * V;
    int* tokbuf = reinterpret_cast<int*>(bd + VR);
    float* pairs = reinterpret_cast<float*>(tokbuf + p.ldb);

    // This lane's weights: row (ul, g) = global row g·H + u0 + RC_UPW·warp + ul.
    float w[ROWS][8];
    rc_load_rows<G, W>(w, static_cast<const W*>(p.w_hh), H, L.u0, L.un, warp, lane);
    cl_load_rows<1, W>(dsm, static_cast<const W*>(p.w_d), V, H, v0, vn, ldw);
    float bhh[G], bih[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        bhh[g] = valid ? to_f(static_cast<const W*>(p.b_hh)[g * H + j]) : 0.0f;
        bih[g] = valid ? to_f(static_cast<const W*>(p.b_ih)[g * H + j]) : 0.0f;
    }
    const W* b_d = static_cast<const W*>(p.b_d);
    for (int i = threadIdx.x; i < vn; i += NTHREADS) bd[i] = to_f(b_d[v0 + i]);
    float c = (C == LSTM && valid) ? p.c0[(size_t)L.b * H + j] : 0.0f;

    // h_{-1} = h0; k ≥ H and rows ≥ nbc stay zero (their weights are zero,
    // but 0 · NaN would not be).
    for (int i = threadIdx.x; i < 2 * BCMAX * RC_K; i += NTHREADS) (&hbuf[0][0][0])[i] = 0.0f;
    if (TWO_PHASES)
        for (int i = threadIdx.x; i < BCMAX * RC_K; i += NTHREADS) (&rhbuf[0][0])[i] = 0.0f;
    __syncthreads();
    for (int i = threadIdx.x; i < nbc * H; i += NTHREADS) {
        const int r = i / H, k = i - r * H;
        hbuf[0][r][k] = stored<A>(p.h0[(size_t)(b0 + r) * H + k]);
    }
    // Bytes each exchange brings into this CTA: all H units (or V logits)
    // of its rows.
    // With block sends this CTA writes its own logits block locally; the
    // split greedy draw exchanges one pair (8 bytes) per CTA and batch row.
    const bool blocks = (p.opts & GEN_BLOCK_SENDS) != 0;
    const bool split = (p.opts & GEN_SPLIT_ARGMAX) != 0 && p.inv_temp == 0.0f;
    const unsigned h_bytes = (unsigned)(nbc * H) * 4u;
    const unsigned l_bytes =
        split ? (unsigned)(nbc * RC_CS) * 8u : (unsigned)(nbc * (blocks ? V - vn : V)) * 4u;
    const BlockSendPlan lsend = block_send_plan<RC_CS, 1>(V, v0, vn, (unsigned)rank);
    const unsigned hbar0 = smem_u32(&gbar[0]), lbar = smem_u32(&gbar[2]), rbar = smem_u32(&gbar[3]);
    if (threadIdx.x == 0) {
        for (int i = 0; i < 4; ++i) mbar_init(smem_u32(&gbar[i]), 1);
        mbar_init_fence();
        mbar_expect(hbar0, h_bytes);
        mbar_expect(hbar0 + 8, h_bytes);
        mbar_expect(lbar, l_bytes);
        mbar_expect(rbar, h_bytes);
    }
    // Every CTA of the cluster has started, zeroed its buffers and armed its
    // barriers before anyone writes into them.
    cluster_sync();

    const size_t bj = (size_t)L.b * H + j;
    // Gates whose sums the product ahead takes (reset-before: r and z).
    constexpr int GA = TWO_PHASES ? 2 : G;
    const bool ahead = (p.opts & GEN_AHEAD) != 0;
    float rs[4] = {0.f, 0.f, 0.f, 0.f};  // this lane's item's sums, taken ahead
    const int steps = p.P + p.N - 1;
    for (int s = 0; s < steps; ++s) {
        const int cur = s & 1, nxt = cur ^ 1;
        const bool last = s == steps - 1;
        // The sums of gates [0, GA) were taken during step s - 1's logits
        // exchange (the first step after the prefix has none).
        const bool have = ahead && s >= p.P;
        // The input part, loaded before the product (the token is known
        // only now).
        float x[4] = {0.f, 0.f, 0.f, 0.f};
        if (L.working && valid) {
            const int tok = s < p.P ? p.prefix[(size_t)s * B + L.b] : tokbuf[ib];
            gen_x<C, W>(x, p, tok, j);
        }
        float z = 0.0f;  // GRU reset-before: the update gate of phase 1
        if (TWO_PHASES) {
            // Phase 1: r and z; r ⊙ h_{t-1} to every CTA.
            if (L.working) {
                if (!have) rc_item_sums<G, 0, GA, BCMAX>(rs, w, hbuf[cur], swap[warp], nbc, lane, iu, ib, valid);
                if (valid) {
                    const float r = sigmoid_f(x[0] + bih[0] + rs[0] + bhh[0]);
                    z = sigmoid_f(x[1] + bih[1] + rs[1] + bhh[1]);
                    rc_send(smem_u32(&rhbuf[ib][j]), r * hbuf[cur][ib][j], rbar, L.copy, L.copies, L.ranks);
                }
            }
            // The whole r ⊙ h_{t-1} here (exchange s of rbar); the swap rows
            // are rewritten only after this wait's barrier.
            mbar_wait_rearm(rbar, (unsigned)s & 1u, h_bytes);
        }
        if (L.working) {
            // Reset-before: only n's recurrent part, into rs[2].
            if (TWO_PHASES) rc_item_sums<G, 2, 1, BCMAX>(rs, w, rhbuf, swap[warp], nbc, lane, iu, ib, valid);
            else if (!have) rc_item_sums<G, 0, GA, BCMAX>(rs, w, hbuf[cur], swap[warp], nbc, lane, iu, ib, valid);
            if (valid) {
                float hg[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int g = TWO_PHASES ? 2 : 0; g < G; ++g) hg[g] = rs[g] + bhh[g];
#pragma unroll
                for (int g = 0; g < G; ++g) x[g] += bih[g];
                const float hp = hbuf[cur][ib][j];
                const float h = cell_h<C>(x, hg, hp, c, z, &c);
                const float hv = stored<A>(h);
                // Every step's h goes out: the last one feeds the last logits.
                rc_send(smem_u32(&hbuf[nxt][ib][j]), hv, hbar0 + 8 * nxt, L.copy, L.copies, L.ranks);
                if (last && L.copy == 0) {
                    p.h_last[bj] = hv;
                    if (C == LSTM) p.c_last[bj] = c;
                }
            }
        }
        // h_s in this CTA (hbuf[nxt]: exchange s >> 1 of its barrier). The
        // swap rows are rewritten next step only after this wait's barrier.
        mbar_wait_rearm(hbar0 + 8 * nxt, (unsigned)(s >> 1) & 1u, h_bytes);
        if (s < p.P - 1) continue;  // still reading the prefix
        // This CTA's logits rows, to every CTA.
        for (int c0 = 0; c0 < nbc; c0 += CB) {
            const int nb = min(CB, nbc - c0);
            if (c0 > 0) __syncthreads();
            cl_product<1, W>(red, dsm, ldw, vn, 0, 1, &hbuf[nxt][c0][0], RC_K, nb, nq, dlane);
            __syncthreads();
            for (RowWalk at = logits0; vn > 0 && at.r < nb; at.next()) {
                const int v = at.c, bl = c0 + at.r;
                const float l = cl_sum<1>(red, 0, bl - c0, v, vn, nkv) + bd[v];
                if (blocks || split) lbuf[bl * V + v0 + v] = l;
                else push_all_async<RC_CS>(lbuf + bl * V + v0 + v, l, lbar);
                if (last) p.logits[(size_t)(b0 + bl) * V + v0 + v] = l;
            }
        }
        if (split) {
            split_argmax_send_rows<RC_CS>(lbuf, V, v0, vn, pairs, nbc, (unsigned)rank, lbar);
        } else if (blocks) {
            __syncthreads();
            push_block_others<1>(lsend, lbuf, V, nbc, V, v0, lbar);
        }
        // Step s + 1's sums against h_s while the logits travel (the swap
        // rows were last read before the h wait's barrier).
        if (ahead && !last && L.working)
            rc_item_sums<G, 0, GA, BCMAX>(rs, w, hbuf[nxt], swap[warp], nbc, lane, iu, ib, valid);
        const int index = s - (p.P - 1);
        mbar_wait_rearm(lbar, (unsigned)index & 1u, l_bytes);  // this CTA's logits (or pairs) complete
        gen_draw_tokens<RC_CS>(p, split, lbuf, pairs, tokbuf, nbc, b0, index, rank);
        __syncthreads();  // tokbuf
    }
    // No CTA leaves while stores into its shared memory may be in flight.
    cluster_sync();
}

// Each cell in two forms: up to RcRows<C> batch rows per cluster
// (gen_rcluster16_*), and one (gen_rcluster16b1_*, the planner's choice
// wherever a cluster runs one row, batch 1 included): each lane's
// RC_UPW·G partial sums instead of up to 32 (fewer shuffles in the
// transposing reduction: a GRU's 8 instead of 31), and every lane of a
// warp holds one of its 2 items, so an item's 16 remote stores of h are
// split over 16 lanes (one each) instead of 3 or 4.
#define GEN_RCLUSTER_KERNEL(KERNEL, C, W, BCMAX)                                            \
    extern "C" __global__ void __cluster_dims__(RC_CS, 1, 1) __launch_bounds__(NTHREADS, 1) \
        KERNEL(GenClusterParams p) {                                                        \
        gen_rcluster<C, W, W, BCMAX>(p);                                                    \
    }
#define GEN_RCLUSTER_KERNELS(NAME, C)                                               \
    GEN_RCLUSTER_KERNEL(gen_rcluster16_f32_##NAME, C, float, RcRows<C>::value)      \
    GEN_RCLUSTER_KERNEL(gen_rcluster16_f16_##NAME, C, __half, RcRows<C>::value)     \
    GEN_RCLUSTER_KERNEL(gen_rcluster16b1_f32_##NAME, C, float, 1)                   \
    GEN_RCLUSTER_KERNEL(gen_rcluster16b1_f16_##NAME, C, __half, 1)

GEN_RCLUSTER_KERNELS(rnn_tanh, RNN_TANH)
GEN_RCLUSTER_KERNELS(rnn_relu, RNN_RELU)
GEN_RCLUSTER_KERNELS(gru_before, GRU_BEFORE)
GEN_RCLUSTER_KERNELS(gru_after, GRU_AFTER)
GEN_RCLUSTER_KERNELS(lstm, LSTM)
