// Recurrent layers on thread-block clusters with W_hh in registers as
// tensor-core fragments (sm_90): rec_mcluster16_{f32,f16}_<cell>
// (included by recurrent_cluster_regs.cu), the same clusters, unit split,
// h exchange and cell as rec_rcluster16 (st.async into the receivers'
// mbarriers), the recurrent product on tensor cores instead of CUDA cores.
// Every cell: GRU reset-before, which rec_rcluster16 leaves to the
// shared-memory kernels, takes two products per step here (its r and z
// m-tiles against h_{t-1}, r ⊙ h_{t-1} to every CTA under a third
// mbarrier, its n m-tile against that), as the training forward does.
//
// Why: rec_rcluster16's step is ≈ 680 instructions per warp (ptx/sass.sh),
// most of them the CUDA-core product (RC_UPW·G·BC dot products of 8 k per
// lane) and its transposing warp reduction; ncu (engine_h100_run6) found
// its warps eligible in 38 % of the cycles. Here the product of a CTA's G·U
// gate rows (U ≤ 16 units: gate g's rows are m-tile g) with the cluster's
// ≤ 8 batch rows (the mma's n) is G m-tiles × 32 k-steps of m16n8k8 TF32
// (f32: 3 products per tile for f32 accuracy, tr_gemm's split) or G × 16
// k-steps of m16n8k16 (f16 storage, exact in f16), the k-steps dealt to the
// 8 warps: warp w holds the A fragments of k-steps w, w + 8, … for every
// gate (f32: 4 k-steps, hi and lo, 8·G·4 registers; f16: 2, 4·G·2) for the
// whole sequence. Per step a warp loads its B fragments (h_{t-1}, 2 words
// per lane and k-step), multiplies (f32: 12·G mma, f16: 2·G), and stores
// its G partial 16 × 8 tiles; after one block barrier every thread takes
// one (unit, batch row) item, adds the 8 warps' partials in warp order,
// runs the cell and sends h to the cluster (two lanes per item, half the
// ranks each).
//
// Shared memory is static: h double-buffered ([2][8][LDH] floats, LDH
// 260 (f32) or 264 (f16) so the B fragment loads hit 32 banks) and the
// partials ([8 warps][G][16][8] floats). One block per SM (the weights take
// up to 128 registers); rows per cluster ≤ 8.
#pragma once
#include "mma.cuh"
#include "cluster_seq_item.cuh"

#define MC_ROWS 8  // batch rows per cluster: the mma's n

template <typename W> struct McShape {
    static constexpr int KW = sizeof(W) == 4 ? 8 : 16;  // k per mma
    static constexpr int KS = RC_K / KW / NWARPS;       // k-steps per warp
    static constexpr int LDH = sizeof(W) == 4 ? 260 : 264;
};

// a, b rounded to f16 as one half2 word (a in the low half: the first
// element of an mma fragment pair).
__device__ __forceinline__ unsigned mc_pack(float a, float b) {
    return (unsigned)__half_as_ushort(__float2half_rn(a)) | ((unsigned)__half_as_ushort(__float2half_rn(b)) << 16);
}

// W_hh's element (gate g, unit u of the CTA, k) as f32, zero outside.
template <typename W>
__device__ __forceinline__ float mc_w(const W* m, int H, int u0, int un, int g, int u, int k) {
    return (u < un && k < H) ? to_f(m[((size_t)g * H + u0 + u) * H + k]) : 0.0f;
}

// A warp's A fragments of a CTA's G gate-row blocks (gate g = m-tile g,
// rows = the CTA's units u0 .. u0 + un, zero beyond): k-step i covers k from
// (warp + 8·i)·KW. f32: hi and lo parts, element e at (row fg + 8·(e & 1),
// k fq + 4·(e >> 1)); f16: half2 pairs, pair e at (row fg + 8·(e & 1),
// k 2·fq + 8·(e >> 1)). Loaded once; registers for the whole sequence.
template <int G, typename W> struct McFrags {
    static constexpr bool F32 = sizeof(W) == 4;
    static constexpr int KW = McShape<W>::KW, KS = McShape<W>::KS;
    unsigned hi[G][KS][4], lo[F32 ? G : 1][F32 ? KS : 1][4];

    __device__ __forceinline__ McFrags(const W* w_hh, int H, int u0, int un, int warp, int lane) {
        const int fg = lane >> 2, fq = lane & 3;
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int i = 0; i < KS; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int u = fg + 8 * (e & 1), k0 = (warp + NWARPS * i) * KW;
                    if (F32) {
                        unsigned l;
                        tf32_split(mc_w(w_hh, H, u0, un, g, u, k0 + fq + 4 * (e >> 1)), &hi[g][i][e], &l);
                        lo[F32 ? g : 0][F32 ? i : 0][e] = l;
                    } else {
                        const int k = k0 + 2 * fq + 8 * (e >> 1);
                        hi[g][i][e] = mc_pack(mc_w(w_hh, H, u0, un, g, u, k), mc_w(w_hh, H, u0, un, g, u, k + 1));
                    }
                }
    }

    // The warp's share of the products of gates [G0, G1) with h (`hb`:
    // [MC_ROWS][LDH] floats, batch row n = B column n), into `part[warp]`
    // ([G][16][MC_ROWS]: unit, row). Two accumulator sets (even and odd
    // k-steps), two independent chains per gate. The block barrier before
    // the stores: the previous readers of `part` (the items, some of them
    // still sending) have passed it; the one after: the stores are seen.
    template <int G0, int G1>
    __device__ __forceinline__ void product(float (*part)[G][16][MC_ROWS], const float* hb, int warp, int lane) const {
        const int fg = lane >> 2, fq = lane & 3;
        float acc[2][G1 - G0][4];
#pragma unroll
        for (int s = 0; s < 2; ++s)
#pragma unroll
            for (int g = 0; g < G1 - G0; ++g)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[s][g][e] = 0.0f;
        const float* hr = hb + fg * McShape<W>::LDH;
#pragma unroll
        for (int i = 0; i < KS; ++i) {
            const int k0 = (warp + NWARPS * i) * KW;
            if (F32) {
                unsigned bh_[2], bl_[2];
                tf32_split(hr[k0 + fq], &bh_[0], &bl_[0]);
                tf32_split(hr[k0 + fq + 4], &bh_[1], &bl_[1]);
#pragma unroll
                for (int g = G0; g < G1; ++g) {
                    float* d = acc[i & 1][g - G0];
                    mma_tf32(d, lo[F32 ? g : 0][F32 ? i : 0], bh_);
                    mma_tf32(d, hi[g][i], bl_);
                    mma_tf32(d, hi[g][i], bh_);
                }
            } else {
                const float2 l = *reinterpret_cast<const float2*>(&hr[k0 + 2 * fq]);
                const float2 h = *reinterpret_cast<const float2*>(&hr[k0 + 2 * fq + 8]);
                const unsigned bf[2] = {mc_pack(l.x, l.y), mc_pack(h.x, h.y)};
#pragma unroll
                for (int g = G0; g < G1; ++g) mma_f16(acc[i & 1][g - G0], hi[g][i], bf);
            }
        }
        // The partial tiles: rows fg, fg + 8, columns 2·fq, 2·fq + 1.
        __syncthreads();
#pragma unroll
        for (int g = G0; g < G1; ++g) {
            const float* a0 = acc[0][g - G0];
            const float* a1 = acc[1][g - G0];
            *reinterpret_cast<float2*>(&part[warp][g][fg][2 * fq]) = make_float2(a0[0] + a1[0], a0[1] + a1[1]);
            *reinterpret_cast<float2*>(&part[warp][g][fg + 8][2 * fq]) = make_float2(a0[2] + a1[2], a0[3] + a1[3]);
        }
        __syncthreads();
    }
};

// The product of gate g for item (unit iu, row ib): the 8 warps' partials
// added in warp order.
template <int G>
__device__ __forceinline__ float mc_sum(const float (*part)[G][16][MC_ROWS], int g, int iu, int ib) {
    float s = part[0][g][iu][ib];
#pragma unroll
    for (int w = 1; w < NWARPS; ++w) s += part[w][g][iu][ib];
    return s;
}

// A thread's place in the tensor-core cluster kernels' CTA span: its item,
// unit j = u0 + iu of row b = b0 + ib, which it shares with its neighbour
// lane: each sends h to half the ranks (copy, copy + 2, …). A CTA without
// units, or a cluster without rows, has nothing to do (`working` false)
// and nobody sends to it.
struct McLane : RcSpan {
    int lane, warp, iu, ib, j, b, copy;
    bool working, valid;
    __device__ __forceinline__ McLane(int H, int U, int B, int BC) : RcSpan(H, U, B, BC) {
        lane = threadIdx.x & 31;
        warp = threadIdx.x >> 5;
        working = un > 0 && nbc > 0;
        const int item = threadIdx.x >> 1;
        copy = threadIdx.x & 1;
        iu = item / MC_ROWS;
        ib = item % MC_ROWS;
        j = u0 + iu;
        b = b0 + ib;
        valid = working && iu < un && ib < nbc;
    }
};

// Step t's recurrent products of the CTA's gates into `part` (mc_sum reads
// them), shared by rec_mcluster and tc_mfwd (train_cluster_mma.cuh). GRU
// reset-before in two phases: r and z against h_{t-1} (`hb`), the item's
// r ⊙ h_{t-1} (`hp` its h_{t-1}; rounded as stored) to every CTA's `rhb`
// (exchange t of the mbarrier `rbar`, armed again for step t + 1 as the h
// buffers are), then n against it; `r`, `z` get the item's gates and the
// return value is its r ⊙ h (0 for the other cells and invalid items).
// Why `rhb` may be rewritten next step: a CTA stores step t + 1's r ⊙ h
// only after its wait for the whole h_t, which every CTA sends only after
// the block barrier that follows its warps' reads of `rhb`.
template <int C, typename W, typename Item>
__device__ __forceinline__ float mc_products(float (*part)[Cell<C>::G][16][MC_ROWS],
                                             const McFrags<Cell<C>::G, W>& frags, const McLane& L,
                                             const Item& item, const float* hb, float* rhb, unsigned rbar,
                                             unsigned step_bytes, int t, float hp, float* r, float* z) {
    constexpr int G = Cell<C>::G;
    if (C != GRU_BEFORE) {
        frags.template product<0, G>(part, hb, L.warp, L.lane);
        return 0.0f;
    }
    frags.template product<0, 2>(part, hb, L.warp, L.lane);
    float rh = 0.0f;
    if (L.valid) {
        *r = sigmoid_f(item.xc[0] + (mc_sum<G>(part, 0, L.iu, L.ib) + item.bhh[0]));
        *z = sigmoid_f(item.xc[1] + (mc_sum<G>(part, 1, L.iu, L.ib) + item.bhh[1]));
        rh = stored<W>(*r * hp);
        rc_send(smem_u32(rhb + L.ib * McShape<W>::LDH + L.j), rh, rbar, L.copy, 2, L.ranks);
    }
    mbar_wait(rbar, (unsigned)t & 1u);
    if (threadIdx.x == 0) mbar_expect(rbar, step_bytes);
    frags.template product<2, 3>(part, rhb, L.warp, L.lane);
    return rh;
}

template <int C, typename W, typename A>
__device__ void rec_mcluster(const RecParams& p) {
    constexpr int G = Cell<C>::G;
    constexpr int LDH = McShape<W>::LDH;
    constexpr bool TWO_PHASES = C == GRU_BEFORE;
    __shared__ __align__(16) float hbuf[2][MC_ROWS][LDH];
    __shared__ __align__(16) float rhbuf[TWO_PHASES ? MC_ROWS : 1][LDH];
    __shared__ __align__(8) float part[NWARPS][G][16][MC_ROWS];
    // mbarriers: h buffers 0 and 1, r ⊙ h (reset-before).
    __shared__ __align__(8) unsigned long long mbar[3];

    const int H = p.H;
    const McLane L(H, p.units, p.B, p.ldb);
    const int warp = L.warp, lane = L.lane, nbc = L.nbc, iu = L.iu, ib = L.ib, j = L.j;
    const bool valid = L.valid, working = L.working;

    const McFrags<G, W> frags(static_cast<const W*>(p.w_hh), H, L.u0, L.un, warp, lane);
    // h_{-1} = h0; k ≥ H and rows ≥ nbc stay zero (their products are zero,
    // but 0 · NaN would not be).
    for (int i = threadIdx.x; i < 2 * MC_ROWS * LDH; i += NTHREADS) (&hbuf[0][0][0])[i] = 0.0f;
    if (TWO_PHASES)
        for (int i = threadIdx.x; i < MC_ROWS * LDH; i += NTHREADS) (&rhbuf[0][0])[i] = 0.0f;
    __syncthreads();
    seq_load_h0<A>(&hbuf[0][0][0], LDH, p, L.b0, nbc);
    const unsigned step_bytes = (unsigned)(nbc * H) * 4u;
    // mbar[s] at bar0 + 8·s; mbar[2] counts r ⊙ h (reset-before).
    const unsigned bar0 = smem_u32(&mbar[0]), rbar = smem_u32(&mbar[2]);
    rc_arm(bar0, step_bytes, working ? L.un : 0);
    if (TWO_PHASES) rc_arm_one(rbar, step_bytes, working ? L.un : 0);
    SeqItem<C, W, A> it(p, valid, L.b, j);
    cluster_sync();

    // The exchange's safety is rec_rcluster's argument (recurrent_cluster_regs.cu):
    // a CTA's stores of step t + 1 follow its wait of step t + 1, which
    // needs every CTA's step-t items, each sent by its two lanes after both
    // read h_{t-1} (same warp, same instruction); the warps' B loads of
    // h_{t-1} precede the block barrier that the items follow (reset-before's
    // r ⊙ h: mc_products).
    for (int t = 0; working && t < p.T; ++t) {
        const int cur = t & 1;
        const bool last = t == p.T - 1;
        rc_step_wait(bar0, t, step_bytes);
        if (valid) it.prefetch(p, t);
        const float hp = hbuf[cur][ib][j];
        float r = 0.0f, z = 0.0f;  // reset-before: phase 1's gates
        mc_products<C, W>(part, frags, L, it, &hbuf[cur][0][0], &rhbuf[0][0], rbar, step_bytes, t, hp, &r, &z);
        if (valid) {
            float hr[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int g = TWO_PHASES ? 2 : 0; g < G; ++g) hr[g] = mc_sum<G>(part, g, iu, ib);
            const float h = it.cell(hr, hp, z);
            const float hv = stored<A>(h);
            if (!last) rc_send(smem_u32(&hbuf[cur ^ 1][ib][j]), hv, bar0 + 8 * (cur ^ 1), L.copy, 2, L.ranks);
            it.finish(p, t, h, hv, L.copy == 0);
        }
    }
    // No CTA leaves while stores into its shared memory may be in flight.
    cluster_sync();
}

#define MCLUSTER_KERNELS(NAME, C)                                                           \
    extern "C" __global__ void __cluster_dims__(RC_CS, 1, 1) __launch_bounds__(NTHREADS, 1) \
        rec_mcluster16_f32_##NAME(RecParams p) {                                            \
        rec_mcluster<C, float, float>(p);                                                   \
    }                                                                                       \
    extern "C" __global__ void __cluster_dims__(RC_CS, 1, 1) __launch_bounds__(NTHREADS, 1) \
        rec_mcluster16_f16_##NAME(RecParams p) {                                            \
        rec_mcluster<C, __half, __half>(p);                                                 \
    }
