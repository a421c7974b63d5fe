// Generation on thread-block clusters (sm_90; see cluster_step.cuh):
// gen_cluster{8,16}_{f32,f16}_<cell>. Cluster c generates for batch rows
// [c·BC, c·BC + BC) (GenParams::ldb = BC) with no host round trip and no
// global barrier: CTA `rank` holds the W_hh rows of its hidden units and
// the output-layer rows [rank·VR, rank·VR + VR) in shared memory. Per
// generated token: cell step (new h to every CTA) → wait → the CTA's logits
// rows, written into every CTA's logits buffer → wait → every CTA draws the
// same token from the same logits with the same code (block_sample_row,
// sample.cuh) and feeds it back. The exchanges are st.async counted by the
// receiving CTA's mbarriers (cluster_step.cuh), one per buffer: a CTA waits
// only until its own buffer is complete, with no cluster barrier or fence.
//
// Product ahead (GEN_AHEAD in GenParams::opts, where a cluster's rows fit one product
// pass: BC ≤ CB and U·BC ≤ NTHREADS): the recurrent part of step s + 1
// depends on h_s only, not on the token drawn at step s, so it is computed
// after this CTA's logits are sent, while the other CTAs' logits are still
// on their way, and kept in registers (each thread's one item). The draw is
// then followed by the token's W_ih gather and the cell alone. GRU
// reset-before takes its r and z sums ahead; its n product, against
// r ⊙ h_s, still follows the draw.
//
// Block sends (GEN_BLOCK_SENDS): each exchange's values (h, r ⊙ h, the
// logits) are written into this CTA's own buffer, and after a block
// barrier every thread sends its share of the CTA's block to the other
// CTAs (push_block_others: 16-byte words where aligned), instead of each
// item's thread storing its value into all CS CTAs while the other warps
// wait. The mbarriers then count the other CTAs' bytes only.
//
// Split greedy draw (GEN_SPLIT_ARGMAX, inv_temp == 0; gen_cluster_draw.cuh):
// the logits stay in this CTA; after a block barrier one warp per batch row
// sends the first maximum of the CTA's logits rows to every CTA as one
// pair, and after the wait one warp per batch row takes the token from the
// CS pairs, in place of the logits exchange and block_sample_row.
//
// Ordering without cluster barriers needs every CTA to send h every step
// (the planner gives each at least one hidden unit): then a CTA's store into
// a buffer for exchange n + 1 (of the same buffer) follows, through the h it
// needed from every CTA, each receiver's completed wait for exchange n and
// its last read of that buffer.
//
// Shared memory (bytes; engine/src/plan.rs::gen_cluster_smem computes the
// same), U = GenParams::units, VR = GenParams::vrows:
//   W_hh slice   cl_rows_bytes(G·U, H, sizeof(W))
//   W_d slice    cl_rows_bytes(VR, H, sizeof(W))
//   h            2 · BC · ldh floats (ping-pong)
//   r ⊙ h        BC · ldh floats (GRU reset-before only)
//   red          max(min(NTHREADS, nq·U)·G, min(NTHREADS, nq·VR)) · CB floats
//   logits       BC · V floats
//   state        BC · U floats (LSTM c, GRU reset-before z)
//   b_hh, b_ih, b_d  2 · G · U + VR floats
//   tokens       BC ints
//   pairs        BC · 16 · 2 words (split greedy draw)
#include "cluster_step.cuh"
#include "gen_cluster_params.cuh"
#include "gen_cluster_draw.cuh"
#include "sample.cuh"

template <int C, typename W, typename A, int CS>
__device__ void gen_cluster(const GenClusterParams& p) {
    DYNAMIC_SHARED(float4, smem4);
    // mbarriers: h buffers 0 and 1, logits, r ⊙ h.
    __shared__ __align__(8) unsigned long long gbar[4];
    constexpr int G = Cell<C>::G;
    const int H = p.H, B = p.B, V = p.V, U = p.units, VR = p.vrows, BC = p.ldb;
    const int rank = (int)cluster_ctarank();
    const int u0 = rank * U, un = max(0, min(U, H - u0));
    const int v0 = rank * VR, vn = max(0, min(VR, V - v0));
    const int b0 = (blockIdx.x / CS) * BC;
    const int nbc = max(0, min(BC, B - b0));
    const int ldw = cl_ldw(H), ldh = cl_ldh(H), nq = (H + 3) / 4;
    const int nkg = cl_nkg(un, nq), nkv = cl_nkg(vn, nq);
    // Each thread's places, fixed for the whole loop, so that no step
    // divides: in the products over the W_hh and W_d rows, and its first
    // item (batch row in the chunk, unit or logit) of the cell and logits
    // loops, walked on by NTHREADS.
    const ClLane hlane(un, nq), dlane(vn, nq);
    const RowWalk items0(threadIdx.x, NTHREADS, max(un, 1)), logits0(threadIdx.x, NTHREADS, max(vn, 1));

    char* base = reinterpret_cast<char*>(smem4);
    W* wsm = reinterpret_cast<W*>(base);
    W* dsm = reinterpret_cast<W*>(base + cl_rows_bytes(G * U, H, sizeof(W)));
    float* hbuf = reinterpret_cast<float*>(reinterpret_cast<char*>(dsm) + cl_rows_bytes(VR, H, sizeof(W)));
    float* rhbuf = hbuf + 2 * BC * ldh;
    float* red = rhbuf + (C == GRU_BEFORE ? BC * ldh : 0);
    float* lbuf = red + max(min(NTHREADS, nq * U) * G, min(NTHREADS, nq * VR)) * CB;
    float* st = lbuf + BC * V;
    float* bhh = st + BC * U;
    float* bih = bhh + G * U;
    float* bd = bih + G * U;
    int* tokbuf = reinterpret_cast<int*>(bd + VR);
    float* pairs = reinterpret_cast<float*>(tokbuf + BC);

    cl_load_rows<G, W>(wsm, static_cast<const W*>(p.w_hh), H, H, u0, un, ldw);
    cl_load_rows<1, W>(dsm, static_cast<const W*>(p.w_d), V, H, v0, vn, ldw);
    for (int i = threadIdx.x; i < (C == GRU_BEFORE ? 3 : 2) * BC * ldh; i += NTHREADS) hbuf[i] = 0.0f;
    __syncthreads();
    for (int i = threadIdx.x; i < nbc * H; i += NTHREADS) {
        const int b = i / H, k = i - b * H;
        hbuf[b * ldh + k] = stored<A>(p.h0[(size_t)(b0 + b) * H + k]);
    }
    const W* b_hh = static_cast<const W*>(p.b_hh);
    const W* b_ih = static_cast<const W*>(p.b_ih);
    for (int i = threadIdx.x; i < G * un; i += NTHREADS) {
        const int g = i / un, u = i - g * un;
        bhh[i] = to_f(b_hh[g * H + u0 + u]);
        bih[i] = to_f(b_ih[g * H + u0 + u]);
    }
    const W* b_d = static_cast<const W*>(p.b_d);
    for (int i = threadIdx.x; i < vn; i += NTHREADS) bd[i] = to_f(b_d[v0 + i]);
    if (C == LSTM) {
        for (int c0 = 0; c0 < nbc; c0 += CB) {
            const int nb = min(CB, nbc - c0);
            for (int o = threadIdx.x; o < un * nb; o += NTHREADS) {
                const int u = o % un, bl = c0 + o / un;
                st[bl * un + u] = p.c0[(size_t)(b0 + bl) * H + u0 + u];
            }
        }
    }
    // Bytes each exchange brings into this CTA: all H units (or V logits)
    // of its rows.
    // With block sends this CTA writes its own block locally; the split
    // greedy draw exchanges one pair (8 bytes) per CTA and batch row.
    const bool blocks = (p.opts & GEN_BLOCK_SENDS) != 0;
    const bool split = (p.opts & GEN_SPLIT_ARGMAX) != 0 && p.inv_temp == 0.0f;
    const unsigned h_bytes = (unsigned)(nbc * (blocks ? H - un : H)) * 4u;
    const unsigned l_bytes = split ? (unsigned)(nbc * CS) * 8u : (unsigned)(nbc * (blocks ? V - vn : V)) * 4u;
    const BlockSendPlan hsend = block_send_plan<CS, 1>(H, u0, un, (unsigned)rank);
    const BlockSendPlan lsend = block_send_plan<CS, 1>(V, v0, vn, (unsigned)rank);
    // This thread's value of an exchange: into every CTA, or (block sends)
    // into this CTA's buffer only, sent after the loop.
    auto put = [&](float* local, float v, unsigned bar) {
        if (blocks) *local = v;
        else push_all_async<CS>(local, v, bar);
    };
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

    // Gates whose sums the product ahead takes (reset-before: r and z).
    constexpr int GA = C == GRU_BEFORE ? 2 : G;
    const bool ahead = (p.opts & GEN_AHEAD) != 0 && BC <= CB && U * BC <= NTHREADS;
    float rs[4] = {0.f, 0.f, 0.f, 0.f};  // this thread's item's sums, taken ahead
    const int steps = p.P + p.N - 1;
    for (int s = 0; s < steps; ++s) {
        const float* hcur = hbuf + (s & 1) * BC * ldh;
        float* hnext = hbuf + ((s + 1) & 1) * BC * ldh;
        const bool last = s == steps - 1;
        // The sums of gates [0, GA) were taken during step s - 1's logits
        // exchange (the first step after the prefix has none).
        const bool have = ahead && s >= p.P;
        auto sum = [&](int g, int bl, int u, int c0) {
            return have && g < GA ? rs[g] : cl_sum<G>(red, g, bl - c0, u, un, nkg);
        };
        // The input part of this thread's first item, loaded before the
        // product so that its latency hides behind it (the token is known
        // only now).
        float xr[4] = {0.f, 0.f, 0.f, 0.f};
        const bool first = un > 0 && items0.r < min(CB, nbc);
        auto token = [&](int bl) { return s < p.P ? p.prefix[(size_t)s * B + b0 + bl] : tokbuf[bl]; };
        if (first) gen_x<C, W>(xr, p, token(items0.r), u0 + items0.c);
        if (C == GRU_BEFORE) {
            for (int c0 = 0; c0 < nbc; c0 += CB) {
                const int nb = min(CB, nbc - c0);
                if (!have) {
                    if (c0 > 0) __syncthreads();
                    cl_product<G, W>(red, wsm, ldw, un, 0, 2, hcur + c0 * ldh, ldh, nb, nq, hlane);
                    __syncthreads();
                }
                for (RowWalk at = items0; un > 0 && at.r < nb; at.next()) {
                    const int u = at.c, bl = c0 + at.r, it = bl * un + u, j = u0 + u;
                    float x[4] = {xr[0], xr[1], xr[2], xr[3]};
                    if (c0 > 0 || at.r != items0.r) gen_x<C, W>(x, p, token(bl), j);
#pragma unroll
                    for (int g = 0; g < 2; ++g) x[g] += bih[g * un + u];
                    const float r = sigmoid_f(x[0] + sum(0, bl, u, c0) + bhh[u]);
                    st[it] = sigmoid_f(x[1] + sum(1, bl, u, c0) + bhh[un + u]);
                    put(rhbuf + bl * ldh + j, r * hcur[bl * ldh + j], rbar);
                }
            }
            if (blocks) {
                __syncthreads();
                push_block_others<1>(hsend, rhbuf, ldh, nbc, H, u0, rbar);
            }
            mbar_wait_rearm(rbar, (unsigned)s & 1u, h_bytes);
        }
        for (int c0 = 0; c0 < nbc; c0 += CB) {
            const int nb = min(CB, nbc - c0);
            if (C == GRU_BEFORE || !have) {
                if (c0 > 0) __syncthreads();
                if (C == GRU_BEFORE) cl_product<G, W>(red, wsm, ldw, un, 2, 3, rhbuf + c0 * ldh, ldh, nb, nq, hlane);
                else cl_product<G, W>(red, wsm, ldw, un, 0, G, hcur + c0 * ldh, ldh, nb, nq, hlane);
                __syncthreads();
            }
            for (RowWalk at = items0; un > 0 && at.r < nb; at.next()) {
                const int u = at.c, bl = c0 + at.r, it = bl * un + u, j = u0 + u;
                float x[4] = {xr[0], xr[1], xr[2], xr[3]}, hg[4] = {0.f, 0.f, 0.f, 0.f};
                if (c0 > 0 || at.r != items0.r) gen_x<C, W>(x, p, token(bl), j);
#pragma unroll
                for (int g = 0; g < G; ++g) x[g] += bih[g * un + u];
#pragma unroll
                for (int g = 0; g < G; ++g)
                    if (C != GRU_BEFORE || g == 2) hg[g] = sum(g, bl, u, c0) + bhh[g * un + u];
                const float hp = hcur[bl * ldh + j];
                const float z = C == GRU_BEFORE ? st[it] : 0.0f;
                const float cp = C == LSTM ? st[it] : 0.0f;
                float c = 0.0f;
                const float h = cell_h<C>(x, hg, hp, cp, z, &c);
                const float hv = stored<A>(h);
                put(hnext + bl * ldh + j, hv, hbar0 + 8 * ((s + 1) & 1));
                if (C == LSTM) st[it] = c;
                if (last) {
                    const size_t bj = (size_t)(b0 + bl) * H + j;
                    p.h_last[bj] = hv;
                    if (C == LSTM) p.c_last[bj] = c;
                }
            }
        }
        if (blocks) {
            __syncthreads();
            push_block_others<1>(hsend, hnext, ldh, nbc, H, u0, hbar0 + 8 * ((s + 1) & 1));
        }
        // h_s in this CTA (hbuf[(s + 1) & 1]: exchange s >> 1 of its barrier).
        mbar_wait_rearm(hbar0 + 8 * ((s + 1) & 1), (unsigned)(s >> 1) & 1u, h_bytes);
        if (s < p.P - 1) continue;  // still reading the prefix
        // This CTA's logits rows, to every CTA.
        for (int c0 = 0; c0 < nbc; c0 += CB) {
            const int nb = min(CB, nbc - c0);
            if (c0 > 0) __syncthreads();
            cl_product<1, W>(red, dsm, ldw, vn, 0, 1, hnext + c0 * ldh, ldh, nb, nq, dlane);
            __syncthreads();
            for (RowWalk at = logits0; vn > 0 && at.r < nb; at.next()) {
                const int v = at.c, bl = c0 + at.r;
                const float l = cl_sum<1>(red, 0, bl - c0, v, vn, nkv) + bd[v];
                if (split) lbuf[bl * V + v0 + v] = l;
                else put(lbuf + bl * V + v0 + v, l, lbar);
                if (last) p.logits[(size_t)(b0 + bl) * V + v0 + v] = l;
            }
        }
        if (split) {
            split_argmax_send_rows<CS>(lbuf, V, v0, vn, pairs, nbc, (unsigned)rank, lbar);
        } else if (blocks) {
            __syncthreads();
            push_block_others<1>(lsend, lbuf, V, nbc, V, v0, lbar);
        }
        if (ahead && !last) {
            // Step s + 1's sums against h_s, while the logits travel; red is
            // free once every thread has read its logits sums.
            if (!blocks && !split) __syncthreads();
            cl_product<G, W>(red, wsm, ldw, un, 0, GA, hnext, ldh, nbc, nq, hlane);
            __syncthreads();
            if (un > 0 && items0.r < nbc) {
                const int u = items0.c, bl = items0.r;
#pragma unroll
                for (int g = 0; g < GA; ++g) rs[g] = cl_sum<G>(red, g, bl, u, un, nkg);
            }
        }
        const int index = s - (p.P - 1);
        mbar_wait_rearm(lbar, (unsigned)index & 1u, l_bytes);  // this CTA's logits (or pairs) complete
        gen_draw_tokens<CS>(p, split, lbuf, pairs, tokbuf, nbc, b0, index, rank);
        __syncthreads();  // tokbuf
    }
    // No CTA leaves while stores into its shared memory may be in flight.
    cluster_sync();
}

#define GEN_CLUSTER_KERNELS(CS, NAME, C)                                                                   \
    extern "C" __global__ void __cluster_dims__(CS, 1, 1) __launch_bounds__(NTHREADS, 1)                   \
        gen_cluster##CS##_f32_##NAME(GenClusterParams p) {                                                 \
        gen_cluster<C, float, float, CS>(p);                                                               \
    }                                                                                                      \
    extern "C" __global__ void __cluster_dims__(CS, 1, 1) __launch_bounds__(NTHREADS, 1)                   \
        gen_cluster##CS##_f16_##NAME(GenClusterParams p) {                                                 \
        gen_cluster<C, __half, __half, CS>(p);                                                             \
    }

#define GEN_CLUSTER_CELLS(CS)                       \
    GEN_CLUSTER_KERNELS(CS, rnn_tanh, RNN_TANH)     \
    GEN_CLUSTER_KERNELS(CS, rnn_relu, RNN_RELU)     \
    GEN_CLUSTER_KERNELS(CS, gru_before, GRU_BEFORE) \
    GEN_CLUSTER_KERNELS(CS, gru_after, GRU_AFTER)   \
    GEN_CLUSTER_KERNELS(CS, lstm, LSTM)

GEN_CLUSTER_CELLS(8)
GEN_CLUSTER_CELLS(16)
