// Training time loops on thread-block clusters (sm_90; the cluster machinery
// is cluster_step.cuh's, shared with the inference kernels): the forward
// with the cache the backward reads, and backward through time, each the
// whole T-step sequence in one launch of clusters of CS = 8 or 16 CTAs, no
// cooperative launch, no grid barrier. Cluster c runs batch rows
// [c·BC, c·BC + BC); CTA `rank` owns hidden units [rank·U, rank·U + un).
// Kernels tr_cluster{8,16}_{fwd,bwd}_{f32,f16}_<cell>; W is the storage of
// the weights and the saved activations (float or __half), every product,
// sum and gradient f32. Formulas and their operation order are those of
// train_step.cuh's ts_fwd / ts_bwd (the per-step kernels), so the three
// time-loop forms compute the same values up to summation order.
//
// Forward, per step: the CTA's gate rows of W_hh (shared memory) times the
// group's whole h_{t-1} (shared memory, f32 of the stored value) → the
// cell → gates, aux, h (and c) of step t into the training buffers, and the
// new h into every CTA's next h buffer (distributed shared memory, st.async
// counted by the receiver's mbarrier, cluster_step.cuh); one exchange per
// step (two for GRU reset-before: r ⊙ h_{t-1} is exchanged first), each
// CTA waiting for its own buffer only: no cluster barrier, whose release
// would wait for the step's global stores. Ordering (as generate_cluster.cu
// argues): every CTA owns a hidden unit (the planner) and sends every
// exchange. Shared memory (bytes; engine/src/train/cluster.rs
// computes the same), ldh = cl_ldh(H), nq = ceil(H / 4):
//   W_hh slice   cl_rows_bytes(G·U, H, sizeof(W))
//   h            2 · BC · ldh floats (ping-pong)
//   r ⊙ h        BC · ldh floats (GRU reset-before only)
//   red          min(NTHREADS, nq·U) · G · CB floats
//   x            BC · U · G floats (this step's input parts, b_ih added)
//   state        BC · U floats (LSTM c, GRU reset-before z)
//   b_hh, b_ih   2 · G · U floats
//
// Backward, per step (t = T−1 .. 0): CTA `rank` holds rows j of W_hhᵀ
// (its units' columns of W_hh) and the group's whole recurrent-side gate
// gradient dhh_{t+1} (B_c rows of the K gate rows whose product feeds h);
// dh_t[j] = dhs[t][j] + the direct share carried from step t+1 + dhh_{t+1}
// · W_hh[:, j]; the cell's backward gives dih_t, dhh_t of its units
// (written to global memory for the weight gradients after the loop) and
// dhh_t goes into every CTA's next buffer; one exchange per step. The
// cell's loop writes its block of dhh_t into the CTA's own buffer, and all
// threads then send that block on, 16 bytes per store where H and U are
// multiples of 4 (push_block_others), instead of G·CS 4-byte stores from
// each of the loop's un·nb threads: run 7 found the exchange, not the
// product, sets this step (the register backward, same exchange, was no
// faster).
// GRU reset-before: phase A (dh, dz, dn) exchanges dn, phase B takes
// d(r⊙h) = dn · W_hn and gives dr; two exchanges per step. Shared memory,
// KA = 2H (reset-before) or G·H, lda = cl_ldh(KA), nqa = ceil(KA / 4):
//   W_hhᵀ slice  cl_rows_bytes(U, KA, sizeof(W))
//   W_hnᵀ slice  cl_rows_bytes(U, H, sizeof(W)) (reset-before only)
//   dhh          2 · BC · lda floats (ping-pong)
//   dn           BC · ldh floats (reset-before only)
//   red          min(NTHREADS, nqa·U) · CB floats
//   carry        3 · BC · U floats (direct share of dh_{t-1}, LSTM dc,
//                reset-before's dh between its phases)
//
// Every per-item value (item = unit u, batch row bl) is read and written
// by the one thread that handles the item in every pass (thread
// ((bl − c0)·un + u) mod NTHREADS of pass c0), so the per-item arrays need
// no barrier of their own.
#include "cluster_step.cuh"
#include "train_cell.cuh"

// Copies rows u0 .. u0+un of a row-major matrix (row stride ld), columns
// [kofs, kofs + K), into shared memory rows of stride ldw, zero-padded.
template <typename W>
__device__ void tc_load_cols(W* dst, const W* src, long long ld, int kofs, int K, int u0, int un, int ldw) {
    const int n = un * ldw;
    for (int i = threadIdx.x; i < n; i += NTHREADS) {
        const int u = i / ldw, k = i - u * ldw;
        dst[i] = k < K ? src[(long long)(u0 + u) * ld + kofs + k] : from_f<W>(0.0f);
    }
}

// The input parts of step t (token gather of W_ih (G·H, V) columns, b_ih
// added) into xs for this thread's items (items0: its first, (bl - c0, u),
// walked on by NTHREADS).
template <int C, typename W>
__device__ void tc_load_x(float* xs, const W* w_ih, const unsigned* tok, const float* bih, int t, int B, int H,
                          int V, int b0, int nbc, int u0, int un, const RowWalk& items0) {
    constexpr int G = Cell<C>::G;
    for (int c0 = 0; c0 < nbc; c0 += CB) {
        const int nb = min(CB, nbc - c0);
        for (RowWalk at = items0; un > 0 && at.r < nb; at.next()) {
            const int u = at.c, bl = c0 + at.r;
            const unsigned tk = tok[(long long)t * B + b0 + bl];
#pragma unroll
            for (int g = 0; g < G; ++g)
                xs[(bl * un + u) * G + g] = to_f(w_ih[((long long)g * H + u0 + u) * V + tk]) + bih[g * un + u];
        }
    }
}

// hcat ((T+1)·B, H): slot 0 holds the initial h (stored), slot t+1 gets
// step t's h; ccat the same for the LSTM cell state (f32); gates (T·B, G·H)
// post-activation; aux (T·B, H) as ts_fwd's.
template <int C, typename W, int CS>
__device__ void tc_fwd(W* hcat, float* ccat, W* gates, W* aux, const W* w_hh, const W* w_ih, const float* b_ih,
                       const float* b_hh, const unsigned* tok, int B, int H, int V, int T_, int U, int BC) {
    DYNAMIC_SHARED(float4, smem4);
    // mbarriers: h buffers 0 and 1, r ⊙ h.
    __shared__ __align__(8) unsigned long long fbar[3];
    constexpr int G = Cell<C>::G;
    const int rank = (int)cluster_ctarank();
    const int u0 = rank * U;
    const int un = max(0, min(U, H - u0));
    const int b0 = (blockIdx.x / CS) * BC;
    const int nbc = max(0, min(BC, B - b0));
    const int ldw = cl_ldw(H), ldh = cl_ldh(H), nq = (H + 3) / 4;
    const int nkg = cl_nkg(un, nq);
    // Each thread's places, fixed for the whole loop, so that no step
    // divides: in the product over the W_hh rows, and its first item (batch
    // row in the chunk, unit) of the cell and input loops, walked on by
    // NTHREADS.
    const ClLane hlane(un, nq);
    const RowWalk items0(threadIdx.x, NTHREADS, max(un, 1));
    const unsigned h_bytes = (unsigned)(nbc * H) * 4u;
    const unsigned hbar0 = smem_u32(&fbar[0]), rbar = smem_u32(&fbar[2]);

    char* base = reinterpret_cast<char*>(smem4);
    W* wsm = reinterpret_cast<W*>(base);
    float* hbuf = reinterpret_cast<float*>(base + cl_rows_bytes(G * U, H, sizeof(W)));
    float* rhbuf = hbuf + 2 * BC * ldh;
    float* red = rhbuf + (C == GRU_BEFORE ? BC * ldh : 0);
    float* xs = red + min(NTHREADS, nq * U) * G * CB;
    float* st = xs + BC * U * G;
    float* bhh = st + BC * U;
    float* bih = bhh + G * U;

    cl_load_rows<G, W>(wsm, w_hh, H, H, u0, un, ldw);
    for (int i = threadIdx.x; i < (C == GRU_BEFORE ? 3 : 2) * BC * ldh; i += NTHREADS) hbuf[i] = 0.0f;
    __syncthreads();
    for (int i = threadIdx.x; i < nbc * H; i += NTHREADS) {
        const int b = i / H, k = i - b * H;
        hbuf[b * ldh + k] = to_f(hcat[(long long)(b0 + b) * H + k]);
    }
    for (int i = threadIdx.x; i < G * un; i += NTHREADS) {
        const int g = i / un, u = i - g * un;
        bhh[i] = b_hh[g * H + u0 + u];
        bih[i] = b_ih[g * H + u0 + u];
    }
    if (C == LSTM) {
        for (int c0 = 0; c0 < nbc; c0 += CB) {
            const int nb = min(CB, nbc - c0);
            for (int o = threadIdx.x; o < un * nb; o += NTHREADS) {
                const int u = o % un, bl = c0 + o / un;
                st[bl * un + u] = ccat[(long long)(b0 + bl) * H + u0 + u];
            }
        }
    }
    __syncthreads();  // bih
    tc_load_x<C, W>(xs, w_ih, tok, bih, 0, B, H, V, b0, nbc, u0, un, items0);
    if (threadIdx.x == 0) {
        for (int i = 0; i < 3; ++i) mbar_init(smem_u32(&fbar[i]), 1);
        mbar_init_fence();
        for (int i = 0; i < 3; ++i) mbar_expect(smem_u32(&fbar[i]), h_bytes);
    }
    // Every CTA of the cluster has zeroed its buffers and armed its barriers
    // before anyone writes into them.
    cluster_sync();

    const long long gh = (long long)G * H;
    for (int t = 0; t < T_; ++t) {
        const float* hcur = hbuf + (t & 1) * BC * ldh;
        float* hnext = hbuf + ((t + 1) & 1) * BC * ldh;
        const bool last = t == T_ - 1;
        if (C == GRU_BEFORE) {
            // Phase 1: r and z; r ⊙ h_{t-1} (as stored) to every CTA.
            for (int c0 = 0; c0 < nbc; c0 += CB) {
                const int nb = min(CB, nbc - c0);
                if (c0 > 0) __syncthreads();
                cl_product<G, W>(red, wsm, ldw, un, 0, 2, hcur + c0 * ldh, ldh, nb, nq, hlane);
                __syncthreads();
                for (RowWalk at = items0; un > 0 && at.r < nb; at.next()) {
                    const int u = at.c, bl = c0 + at.r, it = bl * un + u, j = u0 + u;
                    const long long row = (long long)t * B + b0 + bl;
                    const float* x = xs + it * G;
                    const float r = sigmoid_f(x[0] + (cl_sum<G>(red, 0, bl - c0, u, un, nkg) + bhh[u]));
                    const float z = sigmoid_f(x[1] + (cl_sum<G>(red, 1, bl - c0, u, un, nkg) + bhh[un + u]));
                    st[it] = z;
                    W* g = gates + row * gh;
                    g[j] = from_f<W>(r);
                    g[H + j] = from_f<W>(z);
                    const float rh = r * hcur[bl * ldh + j];
                    aux[row * H + j] = from_f<W>(rh);
                    push_all_async<CS>(rhbuf + bl * ldh + j, stored<W>(rh), rbar);
                }
            }
            mbar_wait_rearm(rbar, (unsigned)t & 1u, h_bytes);
        }
        for (int c0 = 0; c0 < nbc; c0 += CB) {
            const int nb = min(CB, nbc - c0);
            if (c0 > 0) __syncthreads();
            if (C == GRU_BEFORE) cl_product<G, W>(red, wsm, ldw, un, 2, 3, rhbuf + c0 * ldh, ldh, nb, nq, hlane);
            else cl_product<G, W>(red, wsm, ldw, un, 0, G, hcur + c0 * ldh, ldh, nb, nq, hlane);
            __syncthreads();
            for (RowWalk at = items0; un > 0 && at.r < nb; at.next()) {
                const int u = at.c, bl = c0 + at.r, it = bl * un + u, j = u0 + u;
                const long long row = (long long)t * B + b0 + bl;
                const float* x = xs + it * G;
                float p[4] = {0.f, 0.f, 0.f, 0.f}, bb[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int g = 0; g < G; ++g)
                    if (C != GRU_BEFORE || g == 2) {
                        p[g] = cl_sum<G>(red, g, bl - c0, u, un, nkg);
                        bb[g] = bhh[g * un + u];
                    }
                const float hp = hcur[bl * ldh + j];
                W* g = gates + row * gh;
                W* ax = aux + row * H + j;
                float h;
                if (C == GRU_BEFORE) {
                    const float z = st[it];
                    const float n = tanhf(x[2] + (p[2] + bb[2]));
                    g[2 * H + j] = from_f<W>(n);
                    h = n + z * (hp - n);
                } else {
                    float gv[4], av = 0.0f;
                    h = tc_cell_fwd<C>(x, p, bb, hp, &st[it], gv, &av);
#pragma unroll
                    for (int q = 0; q < G; ++q) g[q * H + j] = from_f<W>(gv[q]);
                    if (C == GRU_AFTER || C == LSTM) *ax = from_f<W>(av);
                    if (C == LSTM) ccat[(row + B) * H + j] = st[it];
                }
                if (!last) push_all_async<CS>(hnext + bl * ldh + j, stored<W>(h), hbar0 + 8 * ((t + 1) & 1));
                hcat[(row + B) * H + j] = from_f<W>(h);
            }
        }
        // The next step's input part does not depend on h: its loads
        // overlap the exchange (each thread rewrites only its own items).
        if (!last) {
            tc_load_x<C, W>(xs, w_ih, tok, bih, t + 1, B, H, V, b0, nbc, u0, un, items0);
            // h_t in this CTA (hbuf[(t + 1) & 1]: exchange t >> 1 of its barrier).
            mbar_wait_rearm(hbar0 + 8 * ((t + 1) & 1), (unsigned)(t >> 1) & 1u, h_bytes);
        }
    }
    // No CTA leaves while stores into its shared memory may be in flight.
    cluster_sync();
}

// dih, dhh (T·B, G·H): written whole by the loop (reset-before: the n
// block of dhh is dn, as the per-step kernels leave it); dhs (T·B, H): the
// output layer's share of every dh (read only); wt: W_hhᵀ (H, G·H); gates,
// aux, hcat, ccat as the forward left them.
template <int C, typename W, int CS>
__device__ void tc_bwd(float* dih, float* dhh, const float* dhs, const W* wt, const W* gates, const W* aux,
                       const W* hcat, const float* ccat, int B, int H, int T_, int U, int BC) {
    DYNAMIC_SHARED(float4, smem4);
    // mbarriers: dhh buffers 0 and 1, dn.
    __shared__ __align__(8) unsigned long long bbar[3];
    constexpr int G = Cell<C>::G;
    constexpr bool BEFORE = C == GRU_BEFORE;
    const int rank = (int)cluster_ctarank();
    const int u0 = rank * U;
    const int un = max(0, min(U, H - u0));
    const int b0 = (blockIdx.x / CS) * BC;
    const int nbc = max(0, min(BC, B - b0));
    const int GH = G * H;
    const int KA = BEFORE ? 2 * H : GH;
    const int ldwa = cl_ldw(KA), lda = cl_ldh(KA), nqa = (KA + 3) / 4;
    const int ldwn = cl_ldw(H), ldn = cl_ldh(H), nqn = (H + 3) / 4;
    const int nkga = cl_nkg(un, nqa), nkgn = cl_nkg(un, nqn);
    // Each thread's places, fixed for the whole loop, so that no step
    // divides: in the products (gate gradients; reset-before's dn) and its
    // first item (batch row in the chunk, unit), walked on by NTHREADS.
    const ClLane alane(un, nqa), nlane(un, nqn);
    const RowWalk items0(threadIdx.x, NTHREADS, max(un, 1));

    char* base = reinterpret_cast<char*>(smem4);
    W* wa = reinterpret_cast<W*>(base);
    const int wa_bytes = cl_rows_bytes(U, KA, sizeof(W));
    W* wn = reinterpret_cast<W*>(base + wa_bytes);
    float* gbuf = reinterpret_cast<float*>(base + wa_bytes + (BEFORE ? cl_rows_bytes(U, H, sizeof(W)) : 0));
    float* dnbuf = gbuf + 2 * BC * lda;
    float* red = dnbuf + (BEFORE ? BC * ldn : 0);
    float* carry = red + min(NTHREADS, nqa * U) * CB;
    float* dcs = carry + BC * U;
    float* dsv = dcs + BC * U;

    tc_load_cols<W>(wa, wt, GH, 0, KA, u0, un, ldwa);
    if (BEFORE) tc_load_cols<W>(wn, wt, GH, 2 * H, H, u0, un, ldwn);
    for (int i = threadIdx.x; i < 2 * BC * lda + (BEFORE ? BC * ldn : 0); i += NTHREADS) gbuf[i] = 0.0f;
    for (int i = threadIdx.x; i < 3 * BC * U; i += NTHREADS) carry[i] = 0.0f;
    // Bytes per exchange into this CTA: the KA gate gradients (dn: H) of its
    // rows, less (but for reset-before) its own G·un, which it writes itself.
    const unsigned g_bytes = (unsigned)(nbc * (BEFORE ? KA : G * (H - un))) * 4u;
    const unsigned n_bytes = (unsigned)(nbc * H) * 4u;
    const unsigned gbar0 = smem_u32(&bbar[0]), nbar = smem_u32(&bbar[2]);
    if (threadIdx.x == 0) {
        mbar_init(gbar0, 1);
        mbar_init(gbar0 + 8, 1);
        mbar_init(nbar, 1);
        mbar_init_fence();
        mbar_expect(gbar0, g_bytes);
        mbar_expect(gbar0 + 8, g_bytes);
        mbar_expect(nbar, n_bytes);
    }
    __syncthreads();
    cluster_sync();

    // This thread's item of the first batch chunk (c0 = 0, o = threadIdx.x),
    // if any, and its cache of the step about to run.
    const bool has_first = un > 0 && items0.r < min(CB, nbc);
    const int fu = has_first ? items0.c : 0, fbl = has_first ? items0.r : 0;
    TcBwdCache kc;
    const BlockSendPlan send = block_send_plan<CS, G>(H, u0, un, (unsigned)rank);
    if (has_first) tc_bwd_load<C, W>(kc, dhs, gates, aux, hcat, ccat, (long long)(T_ - 1) * B + b0 + fbl, u0 + fu, H);

    for (int t = T_ - 1; t >= 0; --t) {
        const int i = T_ - 1 - t;
        const float* gcur = gbuf + (i & 1) * BC * lda;
        float* gnext = gbuf + ((i + 1) & 1) * BC * lda;
        const unsigned gbar = gbar0 + 8 * ((i + 1) & 1);
        for (int c0 = 0; c0 < nbc; c0 += CB) {
            const int nb = min(CB, nbc - c0);
            if (c0 > 0) __syncthreads();
            cl_product<1, W>(red, wa, ldwa, un, 0, 1, gcur + c0 * lda, lda, nb, nqa, alane);
            __syncthreads();
            for (RowWalk at = items0; un > 0 && at.r < nb; at.next()) {
                const int u = at.c, bl = c0 + at.r, it = bl * un + u, j = u0 + u;
                const long long row = (long long)t * B + b0 + bl;
                float* di = dih + row * GH;
                float* dr_ = dhh + row * GH;
                float* gn = gnext + bl * lda;
                TcBwdCache k;
                if (c0 == 0 && at.r == items0.r) k = kc;
                else tc_bwd_load<C, W>(k, dhs, gates, aux, hcat, ccat, row, j, H);
                const float prod = cl_sum<1>(red, 0, bl - c0, u, un, nkga);
                const float d = (k.d + carry[it]) + prod;
                const float hp = k.hp;
                if (C == GRU_BEFORE) {  // phase A: z, n
                    const float z = k.g[1], n = k.g[2];
                    const float dnp = d * (1.0f - z) * (1.0f - n * n);
                    const float dz = d * (hp - n) * z * (1.0f - z);
                    di[H + j] = dz;
                    dr_[H + j] = dz;
                    di[2 * H + j] = dnp;
                    dr_[2 * H + j] = dnp;
                    push_all_async<CS>(gn + H + j, dz, gbar);
                    push_all_async<CS>(dnbuf + bl * ldn + j, dnp, nbar);
                    dsv[it] = d;
                } else {
                    float dg[4], dr[4];
                    carry[it] = tc_cell_bwd<C>(d, k.g, hp, k.av, k.cp, &dcs[it], dg, dr);
#pragma unroll
                    for (int q = 0; q < G; ++q) {
                        di[q * H + j] = dg[q];
                        dr_[q * H + j] = dr[q];
                        gn[q * H + j] = dr[q];  // sent below by push_block_others
                    }
                }
            }
        }
        if (!BEFORE) {
            __syncthreads();
            push_block_others<G>(send, gnext, lda, nbc, H, u0, gbar);
        } else {
            // Phase B: d(r ⊙ h) = dn · W_hn → dr, and the direct share.
            mbar_wait_rearm(nbar, (unsigned)i & 1u, n_bytes);
            for (int c0 = 0; c0 < nbc; c0 += CB) {
                const int nb = min(CB, nbc - c0);
                if (c0 > 0) __syncthreads();
                cl_product<1, W>(red, wn, ldwn, un, 0, 1, dnbuf + c0 * ldn, ldn, nb, nqn, nlane);
                __syncthreads();
                for (RowWalk at = items0; un > 0 && at.r < nb; at.next()) {
                    const int u = at.c, bl = c0 + at.r, it = bl * un + u, j = u0 + u;
                    const long long row = (long long)t * B + b0 + bl;
                    TcBwdCache k;
                    if (c0 == 0 && at.r == items0.r) k = kc;
                    else tc_bwd_load<C, W>(k, dhs, gates, aux, hcat, ccat, row, j, H);
                    const float prod = cl_sum<1>(red, 0, bl - c0, u, un, nkgn);
                    const float r = k.g[0], z = k.g[1];
                    const float hp = k.hp;
                    const float drr = prod * hp * r * (1.0f - r);
                    dih[row * GH + j] = drr;
                    dhh[row * GH + j] = drr;
                    push_all_async<CS>(gnext + bl * lda + j, drr, gbar);
                    carry[it] = dsv[it] * z + prod * r;
                }
            }
        }
        // The next step's cache, in flight during the wait.
        if (t > 0 && has_first)
            tc_bwd_load<C, W>(kc, dhs, gates, aux, hcat, ccat, (long long)(t - 1) * B + b0 + fbl, u0 + fu, H);
        // dhh of this step in this CTA (exchange i >> 1 of its buffer's barrier).
        mbar_wait_rearm(gbar, (unsigned)(i >> 1) & 1u, g_bytes);
    }
    // No CTA leaves while stores into its shared memory may be in flight.
    cluster_sync();
}

// A backward kernel: FN (tc_bwd, tc_bwd_rs) named tr_cluster<CS>_<KIND>_<SFX>_<NAME>;
// `w` is W_hhᵀ for tc_bwd, W_hh for tc_bwd_rs.
#define TC_BWD_KERNEL(CS, KIND, FN, NAME, C, SFX, W)                                                          \
    extern "C" __global__ void __cluster_dims__(CS, 1, 1) __launch_bounds__(NTHREADS, 1)                       \
        tr_cluster##CS##_##KIND##_##SFX##_##NAME(float* dih, float* dhh, const float* dhs, const W* w,          \
                                                 const W* gates, const W* aux, const W* hcat,                   \
                                                 const float* ccat, int B, int H, int T_, int U, int BC) {       \
        FN<C, W, CS>(dih, dhh, dhs, w, gates, aux, hcat, ccat, B, H, T_, U, BC);                                \
    }

#define TC_KERNELS(CS, NAME, C, SFX, W)                                                                         \
    extern "C" __global__ void __cluster_dims__(CS, 1, 1) __launch_bounds__(NTHREADS, 1)                        \
        tr_cluster##CS##_fwd_##SFX##_##NAME(W* hcat, float* ccat, W* gates, W* aux, const W* w_hh,               \
                                            const W* w_ih, const float* b_ih, const float* b_hh,                 \
                                            const unsigned* tok, int B, int H, int V, int T_, int U, int BC) {   \
        tc_fwd<C, W, CS>(hcat, ccat, gates, aux, w_hh, w_ih, b_ih, b_hh, tok, B, H, V, T_, U, BC);              \
    }                                                                                                           \
    TC_BWD_KERNEL(CS, bwd, tc_bwd, NAME, C, SFX, W)

#define TC_CELLS(CS, SFX, W)                          \
    TC_KERNELS(CS, rnn_tanh, RNN_TANH, SFX, W)        \
    TC_KERNELS(CS, rnn_relu, RNN_RELU, SFX, W)        \
    TC_KERNELS(CS, gru_before, GRU_BEFORE, SFX, W)    \
    TC_KERNELS(CS, gru_after, GRU_AFTER, SFX, W)      \
    TC_KERNELS(CS, lstm, LSTM, SFX, W)

TC_CELLS(8, f32, float)
TC_CELLS(8, f16, __half)
TC_CELLS(16, f32, float)
TC_CELLS(16, f16, __half)

// The backward with a reduce-scatter exchange (GRU reset-after, LSTM).
#include "train_cluster_rs.cuh"

// The forward with W_hh in registers (clusters of 16, H ≤ 256).
#include "train_cluster_regs.cuh"

// The forward with the product on tensor cores (clusters of 16, H ≤ 256).
#include "train_cluster_mma.cuh"
