// Recurrent layers on thread-block clusters (sm_90; see cluster_step.cuh):
// rec_cluster{8,16}_{f32,f16}_<cell>, the whole T-step sequence in one
// launch of clusters of 8 or 16 CTAs, no cooperative launch, no global
// barrier. Cluster c runs batch rows [c·BC, c·BC + BC) (RecParams::ldb = BC);
// the clusters are independent (different batch rows), so they need not be
// resident together. CUDA cores, f32 accumulation; f16 mode stores W and h
// as f16 (h kept in shared memory as the f32 value of its f16).
//
// Per step: product of the CTA's gate rows with h_{t-1} (shared memory) →
// gates → new h written into every CTA's next h buffer → cluster barrier,
// during which each thread loads the next step's input part (token gather of
// W_ih columns or the dense input projection). GRU reset-before takes two
// barriers per step (r ⊙ h is exchanged the same way).
//
// Shared memory (bytes; engine/src/plan.rs::cluster_smem computes the same),
// U = RecParams::units, ldw/ldh/nq from cluster_step.cuh:
//   W_hh slice   cl_rows_bytes(G·U, H, sizeof(W))
//   h            2 · BC · ldh floats (ping-pong)
//   r ⊙ h        BC · ldh floats (GRU reset-before only)
//   red          min(NTHREADS, nq·U) · G · CB floats
//   x            BC · U · G floats (this step's input parts, b_ih added)
//   state        BC · U floats (LSTM c, GRU reset-before z)
//   b_hh, b_ih   2 · G · U floats
#include "rec_params.cuh"
#include "cluster_step.cuh"

// The input parts of step t (b_ih added) into xs for this thread's items
// (item (u, bl) of the pass starting at row c0 is thread ((bl - c0)·un + u)
// mod NTHREADS's; items0: the thread's first, (bl - c0, u), walked on by
// NTHREADS), except its first one of pass 0, which the kernel keeps in
// registers.
template <int C, typename W>
__device__ void cl_load_x(float* xs, const RecParams& p, int t, int b0, int nbc, int u0, int un, const float* bih,
                          const RowWalk& items0) {
    constexpr int G = Cell<C>::G;
    for (int c0 = 0; c0 < nbc; c0 += CB) {
        const int nb = min(CB, nbc - c0);
        RowWalk at = items0;
        if (c0 == 0) at.next();
        for (; un > 0 && at.r < nb; at.next()) {
            const int u = at.c, bl = c0 + at.r, b = b0 + bl;
            float x[4];
            cl_x<C, W>(x, p, t, b, cl_token(p, t, b), u0 + u);
#pragma unroll
            for (int g = 0; g < G; ++g) xs[(bl * un + u) * G + g] = x[g] + bih[g * un + u];
        }
    }
}

template <int C, typename W, typename A, int CS>
__device__ void rec_cluster(const RecParams& p) {
    DYNAMIC_SHARED(float4, smem4);
    constexpr int G = Cell<C>::G;
    const int H = p.H, U = p.units, BC = p.ldb;
    const int rank = (int)cluster_ctarank();
    const int u0 = rank * U;
    const int un = max(0, min(U, H - u0));
    const int b0 = (blockIdx.x / CS) * BC;
    const int nbc = max(0, min(BC, p.B - b0));
    const int ldw = cl_ldw(H), ldh = cl_ldh(H), nq = (H + 3) / 4;
    const int nkg = cl_nkg(un, nq);

    char* base = reinterpret_cast<char*>(smem4);
    W* wsm = reinterpret_cast<W*>(base);
    float* hbuf = reinterpret_cast<float*>(base + cl_rows_bytes(G * U, H, sizeof(W)));
    float* rhbuf = hbuf + 2 * BC * ldh;
    float* red = rhbuf + (C == GRU_BEFORE ? BC * ldh : 0);
    float* xs = red + min(NTHREADS, nq * U) * G * CB;
    float* st = xs + BC * U * G;
    float* bhh = st + BC * U;

    cl_load_rows<G, W>(wsm, static_cast<const W*>(p.w_hh), H, H, u0, un, ldw);
    for (int i = threadIdx.x; i < (C == GRU_BEFORE ? 3 : 2) * BC * ldh; i += NTHREADS) hbuf[i] = 0.0f;
    __syncthreads();
    for (int i = threadIdx.x; i < nbc * H; i += NTHREADS) {
        const int b = i / H, k = i - b * H;
        hbuf[b * ldh + k] = stored<A>(p.h0[(size_t)(b0 + b) * H + k]);
    }
    float* bih = bhh + G * U;
    const W* b_hh = static_cast<const W*>(p.b_hh);
    const W* b_ih = static_cast<const W*>(p.b_ih);
    for (int i = threadIdx.x; i < G * un; i += NTHREADS) {
        const int g = i / un, u = i - g * un;
        bhh[i] = to_f(b_hh[g * H + u0 + u]);
        bih[i] = to_f(b_ih[g * H + u0 + u]);
    }
    if (C == LSTM) {
        for (int c0 = 0; c0 < nbc; c0 += CB) {
            const int nb = min(CB, nbc - c0);
            for (int o = threadIdx.x; o < un * nb; o += NTHREADS) {
                const int u = o % un, bl = c0 + o / un;
                st[bl * un + u] = p.c0[(size_t)(b0 + bl) * H + u0 + u];
            }
        }
    }
    // Each thread's places, fixed for the whole loop, so that no step
    // divides: in the product over the W_hh rows, and its first item (batch
    // row in the pass, unit) of the cell loops, walked on by NTHREADS.
    const ClLane hlane(un, nq);
    const RowWalk items0(threadIdx.x, NTHREADS, max(un, 1));
    // The thread's first item (pass 0, o = thread index): its input part
    // for step t is xc, loaded a whole step ahead, the token two steps ahead
    // (no global load latency on a step's critical path).
    const bool first = un > 0 && items0.r < min(CB, nbc);
    const int fu = first ? items0.c : 0, fb = b0 + (first ? items0.r : 0);
    float xc[4] = {0.f, 0.f, 0.f, 0.f}, xn[4] = {0.f, 0.f, 0.f, 0.f};
    int tok_next = 0;
    if (first) {
        cl_x<C, W>(xc, p, 0, fb, cl_token(p, 0, fb), u0 + fu);
        tok_next = cl_token(p, 1, fb);
    }
    __syncthreads();  // bih
    cl_load_x<C, W>(xs, p, 0, b0, nbc, u0, un, bih, items0);
    if (first) {
#pragma unroll
        for (int g = 0; g < G; ++g) xc[g] += bih[g * un + fu];
    }
    // Every CTA of the cluster has started and zeroed its buffers before
    // anyone writes into them.
    cluster_sync();

    const size_t bh = (size_t)p.B * H;
    for (int t = 0; t < p.T; ++t) {
        const float* hcur = hbuf + (t & 1) * BC * ldh;
        float* hnext = hbuf + ((t + 1) & 1) * BC * ldh;
        const bool last = t == p.T - 1;
        A* hs = static_cast<A*>(p.hs) + (size_t)t * bh;
        int tok_after = 0;
        if (first && t + 1 < p.T) {
            cl_x<C, W>(xn, p, t + 1, fb, tok_next, u0 + fu);
            tok_after = cl_token(p, t + 2, fb);
        }
        if (C == GRU_BEFORE) {
            // Phase 1: r and z; r ⊙ h_{t-1} to every CTA.
            for (int c0 = 0; c0 < nbc; c0 += CB) {
                const int nb = min(CB, nbc - c0);
                if (c0 > 0) __syncthreads();
                cl_product<G, W>(red, wsm, ldw, un, 0, 2, hcur + c0 * ldh, ldh, nb, nq, hlane);
                __syncthreads();
                for (RowWalk at = items0; un > 0 && at.r < nb; at.next()) {
                    const int u = at.c, bl = c0 + at.r, it = bl * un + u, j = u0 + u;
                    const bool mine = c0 == 0 && at.r == items0.r;
                    float x[2];
#pragma unroll
                    for (int g = 0; g < 2; ++g) x[g] = mine ? xc[g] : xs[it * G + g];
                    const float r = sigmoid_f(x[0] + cl_sum<G>(red, 0, bl - c0, u, un, nkg) + bhh[u]);
                    st[it] = sigmoid_f(x[1] + cl_sum<G>(red, 1, bl - c0, u, un, nkg) + bhh[un + u]);
                    push_all<CS>(rhbuf + bl * ldh + j, r * hcur[bl * ldh + j]);
                }
            }
            cluster_sync();
        }
        for (int c0 = 0; c0 < nbc; c0 += CB) {
            const int nb = min(CB, nbc - c0);
            if (c0 > 0) __syncthreads();
            if (C == GRU_BEFORE) cl_product<G, W>(red, wsm, ldw, un, 2, 3, rhbuf + c0 * ldh, ldh, nb, nq, hlane);
            else cl_product<G, W>(red, wsm, ldw, un, 0, G, hcur + c0 * ldh, ldh, nb, nq, hlane);
            __syncthreads();
            for (RowWalk at = items0; un > 0 && at.r < nb; at.next()) {
                const int u = at.c, bl = c0 + at.r, it = bl * un + u, j = u0 + u;
                float x[4] = {0.f, 0.f, 0.f, 0.f}, hg[4] = {0.f, 0.f, 0.f, 0.f};
                const bool mine = c0 == 0 && at.r == items0.r;
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    x[g] = mine ? xc[g] : xs[it * G + g];
                    if (C != GRU_BEFORE || g == 2) hg[g] = cl_sum<G>(red, g, bl - c0, u, un, nkg) + bhh[g * un + u];
                }
                const float hp = hcur[bl * ldh + j];
                const float z = C == GRU_BEFORE ? st[it] : 0.0f;
                const float cp = C == LSTM ? st[it] : 0.0f;
                float c = 0.0f;
                const float h = cell_h<C>(x, hg, hp, cp, z, &c);
                const float hv = stored<A>(h);
                if (!last) push_all<CS>(hnext + bl * ldh + j, hv);
                const size_t bj = (size_t)(b0 + bl) * H + j;
                hs[bj] = from_f<A>(h);
                if (C == LSTM) st[it] = c;
                if (last) {
                    p.h_last[bj] = hv;
                    if (C == LSTM) p.c_last[bj] = c;
                }
            }
        }
        cluster_arrive();
        // The next step's input part does not depend on h: the other items'
        // loads overlap the barrier.
        if (!last) cl_load_x<C, W>(xs, p, t + 1, b0, nbc, u0, un, bih, items0);
        if (first) {
#pragma unroll
            for (int g = 0; g < G; ++g) xc[g] = xn[g] + bih[g * un + fu];
            tok_next = tok_after;
        }
        cluster_wait();
    }
}

#define CLUSTER_KERNELS(CS, NAME, C)                                                                       \
    extern "C" __global__ void __cluster_dims__(CS, 1, 1) __launch_bounds__(NTHREADS, 1)                   \
        rec_cluster##CS##_f32_##NAME(RecParams p) {                                                        \
        rec_cluster<C, float, float, CS>(p);                                                               \
    }                                                                                                      \
    extern "C" __global__ void __cluster_dims__(CS, 1, 1) __launch_bounds__(NTHREADS, 1)                   \
        rec_cluster##CS##_f16_##NAME(RecParams p) {                                                        \
        rec_cluster<C, __half, __half, CS>(p);                                                             \
    }

#define CLUSTER_CELLS(CS)                       \
    CLUSTER_KERNELS(CS, rnn_tanh, RNN_TANH)     \
    CLUSTER_KERNELS(CS, rnn_relu, RNN_RELU)     \
    CLUSTER_KERNELS(CS, gru_before, GRU_BEFORE) \
    CLUSTER_KERNELS(CS, gru_after, GRU_AFTER)   \
    CLUSTER_KERNELS(CS, lstm, LSTM)

CLUSTER_CELLS(8)
CLUSTER_CELLS(16)
