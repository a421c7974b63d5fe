// The training backward on clusters with a reduce-scatter exchange
// (included by train_cluster.cu): tr_cluster{8,16}_bwdrs_{f32,f16}_<cell>
// for the GRUs and the LSTM, the cells with G > 1 gates (for the RNN cells
// the gather moves the same bytes).
//
// tc_bwd gathers: every CTA receives the whole dhh_{t+1} (G·H floats per
// batch row) and multiplies it by its units' columns of W_hh. Here each
// CTA multiplies its own G·un gate gradients by its own gate rows of W_hh
// (the forward's slice, no transposed copy), which gives a partial sum of
// every unit's dh_t (H floats per row), and sends each CTA the partials of
// that CTA's units only; the receiver adds the CS partials. Per row a CTA
// receives (CS − 1)·un floats instead of G·(H − un): G times fewer bytes
// and stores, for the same multiply-adds. Run 7 found the exchange, not
// the product, sets tc_bwd's step.
//
// Per step (t = T−1 .. 0, i = T−1−t), cur = recv[i & 1]:
//   cell loop, item (bl, u): dh_t = dhs + the direct share from step t+1
//     + Σ_s cur[s][bl][u] (s = 0 .. CS−1 in order) → the cell's backward →
//     dih, dhh of step t to global memory, dhh's G values into dloc[bl];
//   (t > 0) product, item (bl, piece): the piece's 4 (or 1) columns k of
//     Σ_r dloc[bl][r]·W[r][k] over the CTA's G·un gate rows r, stored in
//     slot `rank` of recv[(i + 1) & 1] of the CTA that owns column k (its
//     own: a plain store), counted by that CTA's mbarrier;
//   wait for the other CS − 1 slots.
// GRU reset-before takes two exchanges per step, as tc_bwd: its cell loop
// (phase A) gives dz and dn; the n rows' partials Σ_u dn[u]·W_hn[u][k]
// go out as above into nrecv (one buffer, its own mbarrier) and phase B
// adds them into d(r ⊙ h) for dr and the direct share; then the r and z
// rows' partials form the next step's recurrent product. Per row a CTA
// receives 2·(CS − 1)·un floats instead of tc_bwd's (H − un) + 2·H.
// Pieces are 16-byte quads where H and U are multiples of 4 (so every
// CTA's block of columns is whole quads and each store is one st.async.v4),
// single floats otherwise. An item's piece walks (row, owner, piece of the
// owner's block) with carries (RsWalk), the cell items (row, unit) with
// RowWalk: no division in the time loop. Every CTA
// owns a unit (the planner), sends every exchange and receives from all
// the others, the ordering of tc_bwd (generate_cluster.cu argues it).
//
// Shared memory (bytes; engine/src/train/cluster.rs computes the same),
// ldw = cl_ldw(H), ldu = cl_ldh(U):
//   W_hh slice  cl_rows_bytes(G·U, H, sizeof(W)) (rows g·un + u)
//   recv        2 · CS · BC · ldu floats (ping-pong, slot s from rank s)
//   nrecv       CS · BC · ldu floats (reset-before only)
//   dloc        BC · G · U floats (this step's own dhh, row-major)
//   carry       2 · BC · U floats (direct share of dh_{t-1}; LSTM dc,
//               reset-before's dh between its phases)
// Same parameters as tr_cluster*_bwd_*, but `w` is W_hh (G·H, H) as stored.

// Where a product item stands: batch row bl, owner rank q, piece p of q's
// block (columns q·U + p·width ..), advanced by NTHREADS items per round.
struct RsWalk {
    int bl, q, p;     // the current item
    int sbl, sq, sp;  // the stride in the same parts
    int per_block;    // pieces per owner's block: U / width
    int ranks;        // owners: CS

    __device__ __forceinline__ RsWalk(int first, int stride, int per_block_, int ranks_)
        : per_block(per_block_), ranks(ranks_) {
        const int per_row = per_block * ranks;
        bl = first / per_row;
        q = first % per_row / per_block;
        p = first % per_row % per_block;
        sbl = stride / per_row;
        sq = stride % per_row / per_block;
        sp = stride % per_row % per_block;
    }

    // On by the stride: each part stays below its bound after one carry.
    __device__ __forceinline__ void next() {
        p += sp;
        q += sq;
        bl += sbl;
        if (p >= per_block) {
            p -= per_block;
            ++q;
        }
        if (q >= ranks) {
            q -= ranks;
            ++bl;
        }
    }
};

// One piece of the partial product: columns k0 .. k0 + 4 (QUADS) or k0 of
// Σ_r d[r]·w[r][·] over rows r < nr (stride ldw), d broadcast.
template <bool QUADS, typename W>
__device__ __forceinline__ float4 rs_piece(const float* d, const W* w, int ldw, int nr, int k0) {
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int r = 0; r < nr; ++r) {
        const float dv = d[r];
        const W* row = w + (size_t)r * ldw + k0;
        if (QUADS) {
            const float4 wv = ld_quad(row);
            a.x = fmaf(dv, wv.x, a.x);
            a.y = fmaf(dv, wv.y, a.y);
            a.z = fmaf(dv, wv.z, a.z);
            a.w = fmaf(dv, wv.w, a.w);
        } else {
            a.x = fmaf(dv, to_f(row[0]), a.x);
        }
    }
    return a;
}

// Every product item of this thread, from its first (`wk`, made before the
// time loop): computed and sent (see the header).
template <bool QUADS, typename W>
__device__ __forceinline__ void rs_product_send(RsWalk wk, float* nxt, const float* dloc, const W* wsm, int ldw,
                                                int nr, int ldd, int nbc, int BC, int ldu, int H, int U,
                                                unsigned rank, unsigned bar) {
    constexpr int WIDTH = QUADS ? 4 : 1;
    for (; wk.bl < nbc; wk.next()) {
        const int col = wk.p * WIDTH;  // in the owner's block
        const int k0 = wk.q * U + col;
        if (k0 >= H) continue;  // past the last owner's units (U·CS > H)
        const float4 v = rs_piece<QUADS, W>(dloc + wk.bl * ldd, wsm, ldw, nr, k0);
        float* dst = nxt + ((int)rank * BC + wk.bl) * ldu + col;
        if (wk.q == (int)rank) {
            if (QUADS) *reinterpret_cast<float4*>(dst) = v;
            else *dst = v.x;
        } else {
            const unsigned a = map_rank(smem_u32(dst), (unsigned)wk.q), rb = map_rank(bar, (unsigned)wk.q);
            if (QUADS) st_async4(a, v, rb);
            else st_async(a, v.x, rb);
        }
    }
}

// dih, dhh (T·B, G·H), dhs (T·B, H), gates, aux, hcat, ccat: as tc_bwd's.
template <int C, typename W, int CS>
__device__ void tc_bwd_rs(float* dih, float* dhh, const float* dhs, const W* w_hh, const W* gates, const W* aux,
                          const W* hcat, const float* ccat, int B, int H, int T_, int U, int BC) {
    static_assert(Cell<C>::G > 1, "the reduce-scatter backward is for the GRUs and the LSTM");
    DYNAMIC_SHARED(float4, smem4);
    // mbarriers: recv buffers 0 and 1, nrecv.
    __shared__ __align__(8) unsigned long long bbar[3];
    constexpr int G = Cell<C>::G;
    constexpr bool BEFORE = C == GRU_BEFORE;
    const unsigned rank = cluster_ctarank();
    const int u0 = (int)rank * U;
    const int un = max(0, min(U, H - u0));
    const int b0 = (blockIdx.x / CS) * BC;
    const int nbc = max(0, min(BC, B - b0));
    const int GH = G * H;
    const int ldw = cl_ldw(H), ldu = cl_ldh(U);
    // Rows of the step's product: every gate's (reset-before: r and z).
    const int nr = (BEFORE ? 2 : G) * un, ldd = G * U;
    const bool quads = ((H | U) & 3) == 0;

    char* base = reinterpret_cast<char*>(smem4);
    W* wsm = reinterpret_cast<W*>(base);
    float* recv = reinterpret_cast<float*>(base + cl_rows_bytes(G * U, H, sizeof(W)));
    float* nrecv = recv + 2 * CS * BC * ldu;
    float* dloc = nrecv + (BEFORE ? CS * BC * ldu : 0);
    float* carry = dloc + BC * ldd;
    float* dcs = carry + BC * U;  // reset-before: dh between the phases

    cl_load_rows<G, W>(wsm, w_hh, H, H, u0, un, ldw);
    for (int i = threadIdx.x; i < (BEFORE ? 3 : 2) * CS * BC * ldu; i += NTHREADS) recv[i] = 0.0f;
    for (int i = threadIdx.x; i < 2 * BC * U; i += NTHREADS) carry[i] = 0.0f;
    // Bytes per exchange into this CTA: un partials per row from each other CTA.
    const unsigned r_bytes = (unsigned)((CS - 1) * nbc * un) * 4u;
    const unsigned bar0 = smem_u32(&bbar[0]), nbar = smem_u32(&bbar[2]);
    if (threadIdx.x == 0) {
        for (int b = 0; b < 3; ++b) mbar_init(smem_u32(&bbar[b]), 1);
        mbar_init_fence();
        for (int b = 0; b < 3; ++b) mbar_expect(smem_u32(&bbar[b]), r_bytes);
    }
    __syncthreads();
    cluster_sync();

    // This thread's first item (o = threadIdx.x), if any, and its cache of
    // the step about to run (loaded before each wait, as tc_bwd).
    // The walks of this thread's cell items (unit, row) and product items.
    const RowWalk items0((int)threadIdx.x, NTHREADS, max(un, 1));
    const RsWalk pieces0((int)threadIdx.x, NTHREADS, quads ? U / 4 : U, CS);
    const bool has_first = (int)threadIdx.x < un * nbc;
    const int fu = items0.c, fbl = items0.r;
    TcBwdCache kc;
    if (has_first) tc_bwd_load<C, W>(kc, dhs, gates, aux, hcat, ccat, (long long)(T_ - 1) * B + b0 + fbl, u0 + fu, H);
    // Item o's cache of row `row`, unit j (the prefetched one for the
    // thread's first item), and its CS slots of `buf` added in rank order.
    const auto cache_of = [&](int o, long long row, int j) {
        TcBwdCache k;
        if (o == (int)threadIdx.x) k = kc;
        else tc_bwd_load<C, W>(k, dhs, gates, aux, hcat, ccat, row, j, H);
        return k;
    };
    const auto slots_sum = [&](const float* buf, int bl, int u) {
        float s = 0.0f;
#pragma unroll
        for (int q = 0; q < CS; ++q) s += buf[(q * BC + bl) * ldu + u];
        return s;
    };
    // The partial products of `rows` gate rows (dloc from d, W from w) out
    // to their owners' slot `rank` of `dst`, counted by their mbarrier `b`.
    const auto product_send = [&](float* dst, const float* d, const W* w, int rows, unsigned b) {
        if (quads) rs_product_send<true, W>(pieces0, dst, d, w, ldw, rows, ldd, nbc, BC, ldu, H, U, rank, b);
        else rs_product_send<false, W>(pieces0, dst, d, w, ldw, rows, ldd, nbc, BC, ldu, H, U, rank, b);
    };

    for (int t = T_ - 1; t >= 0; --t) {
        const int i = T_ - 1 - t;
        const float* cur = recv + (i & 1) * CS * BC * ldu;
        float* nxt = recv + ((i + 1) & 1) * CS * BC * ldu;
        const unsigned bar = bar0 + 8 * ((i + 1) & 1);
        RowWalk item = items0;
        for (int o = threadIdx.x; o < un * nbc; o += NTHREADS, item.next()) {
            const int u = item.c, bl = item.r, it = bl * un + u, j = u0 + u;
            const long long row = (long long)t * B + b0 + bl;
            const TcBwdCache k = cache_of(o, row, j);
            const float d = (k.d + carry[it]) + slots_sum(cur, bl, u);
            float* di = dih + row * GH;
            float* dr_ = dhh + row * GH;
            if (BEFORE) {  // phase A: z, n
                const float z = k.g[1], n = k.g[2];
                const float dnp = d * (1.0f - z) * (1.0f - n * n);
                const float dz = d * (k.hp - n) * z * (1.0f - z);
                di[H + j] = dz;
                dr_[H + j] = dz;
                di[2 * H + j] = dnp;
                dr_[2 * H + j] = dnp;
                dloc[bl * ldd + un + u] = dz;
                dloc[bl * ldd + 2 * un + u] = dnp;
                dcs[it] = d;
            } else {
                float dg[4], dr[4];
                carry[it] = tc_cell_bwd<C>(d, k.g, k.hp, k.av, k.cp, &dcs[it], dg, dr);
#pragma unroll
                for (int q = 0; q < G; ++q) {
                    di[q * H + j] = dg[q];
                    dr_[q * H + j] = dr[q];
                    dloc[bl * ldd + q * un + u] = dr[q];
                }
            }
        }
        if (BEFORE) {
            // The n rows' partials, then phase B: d(r ⊙ h) → dr, the direct share.
            __syncthreads();  // dloc's dn whole
            product_send(nrecv, dloc + 2 * un, wsm + 2 * un * ldw, un, nbar);
            mbar_wait_rearm(nbar, (unsigned)i & 1u, r_bytes);
            item = items0;
            for (int o = threadIdx.x; o < un * nbc; o += NTHREADS, item.next()) {
                const int u = item.c, bl = item.r, it = bl * un + u, j = u0 + u;
                const long long row = (long long)t * B + b0 + bl;
                const TcBwdCache k = cache_of(o, row, j);
                const float prod = slots_sum(nrecv, bl, u);
                const float r = k.g[0], z = k.g[1];
                const float drr = prod * k.hp * r * (1.0f - r);
                dih[row * GH + j] = drr;
                dhh[row * GH + j] = drr;
                dloc[bl * ldd + u] = drr;
                carry[it] = dcs[it] * z + prod * r;
            }
        }
        if (t == 0) break;  // dh of the initial state is not needed
        __syncthreads();    // dloc whole
        product_send(nxt, dloc, wsm, nr, bar);
        // The next step's cache, in flight during the wait.
        if (has_first)
            tc_bwd_load<C, W>(kc, dhs, gates, aux, hcat, ccat, (long long)(t - 1) * B + b0 + fbl, u0 + fu, H);
        // The other CTAs' partials (exchange i >> 1 of this buffer's barrier);
        // its __syncthreads also orders this CTA's own slot and dloc's reuse.
        mbar_wait_rearm(bar, (unsigned)(i >> 1) & 1u, r_bytes);
    }
    // No CTA leaves while stores into its shared memory may be in flight.
    cluster_sync();
}

#define TC_RS_CELLS(CS, SFX, W)                                       \
    TC_BWD_KERNEL(CS, bwdrs, tc_bwd_rs, gru_before, GRU_BEFORE, SFX, W) \
    TC_BWD_KERNEL(CS, bwdrs, tc_bwd_rs, gru_after, GRU_AFTER, SFX, W)   \
    TC_BWD_KERNEL(CS, bwdrs, tc_bwd_rs, lstm, LSTM, SFX, W)

TC_RS_CELLS(8, f32, float)
TC_RS_CELLS(8, f16, __half)
TC_RS_CELLS(16, f32, float)
TC_RS_CELLS(16, f16, __half)
