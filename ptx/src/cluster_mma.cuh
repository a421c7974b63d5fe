// Recurrent layers on thread-block clusters with W_hh in registers as
// tensor-core fragments (sm_90): rec_mcluster16_{f32,f16}_<cell>
// (included by recurrent_cluster_regs.cu), the same clusters, unit split,
// h exchange and cell as rec_rcluster16 (st.async into the receivers'
// mbarriers), the recurrent product on tensor cores instead of CUDA cores.
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

template <int C, typename W, typename A>
__device__ void rec_mcluster(const RecParams& p) {
    constexpr int G = Cell<C>::G;
    constexpr bool F32 = sizeof(W) == 4;
    constexpr int KW = McShape<W>::KW, KS = McShape<W>::KS, LDH = McShape<W>::LDH;
    __shared__ __align__(16) float hbuf[2][MC_ROWS][LDH];
    __shared__ __align__(8) float part[NWARPS][G][16][MC_ROWS];
    __shared__ __align__(8) unsigned long long mbar[2];

    const int H = p.H, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int fg = lane >> 2, fq = lane & 3;  // fragment row / column group
    const int U = p.units;
    const int u0 = (int)cluster_ctarank() * U, un = max(0, min(U, H - u0));
    const int b0 = (blockIdx.x / RC_CS) * p.ldb, nbc = max(0, min(p.ldb, p.B - b0));
    const int ranks = (H + U - 1) / U;
    // A CTA without units, or a cluster without rows, has nothing to do;
    // nobody sends to it.
    const bool working = un > 0 && nbc > 0;
    // This thread's item: unit u0 + iu of row b0 + ib, sends to ranks
    // copy, copy + 2, … (its neighbour lane holds the same item).
    const int item = threadIdx.x >> 1, copy = threadIdx.x & 1;
    const int iu = item / MC_ROWS, ib = item % MC_ROWS;
    const int j = u0 + iu, b = b0 + ib;
    const bool valid = working && iu < un && ib < nbc;

    // The warp's A fragments: gate g, k-step i (k from (warp + 8·i)·KW).
    // f32: hi and lo parts, element e at (row fg + 8·(e & 1), k fq + 4·(e >> 1));
    // f16: half2 pairs, pair e at (row fg + 8·(e & 1), k 2·fq + 8·(e >> 1)).
    unsigned ahi[G][KS][4], alo[F32 ? G : 1][F32 ? KS : 1][4];
    {
        const W* m = static_cast<const W*>(p.w_hh);
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int i = 0; i < KS; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int u = fg + 8 * (e & 1), k0 = (warp + NWARPS * i) * KW;
                    if (F32) {
                        unsigned lo;
                        tf32_split(mc_w(m, H, u0, un, g, u, k0 + fq + 4 * (e >> 1)), &ahi[g][i][e], &lo);
                        alo[F32 ? g : 0][F32 ? i : 0][e] = lo;
                    } else {
                        const int k = k0 + 2 * fq + 8 * (e >> 1);
                        ahi[g][i][e] = mc_pack(mc_w(m, H, u0, un, g, u, k), mc_w(m, H, u0, un, g, u, k + 1));
                    }
                }
    }
    // h_{-1} = h0; k ≥ H and rows ≥ nbc stay zero (their products are zero,
    // but 0 · NaN would not be).
    for (int i = threadIdx.x; i < 2 * MC_ROWS * LDH; i += NTHREADS) (&hbuf[0][0][0])[i] = 0.0f;
    __syncthreads();
    seq_load_h0<A>(&hbuf[0][0][0], LDH, p, b0, nbc);
    const unsigned step_bytes = (unsigned)(nbc * H) * 4u;
    const unsigned bar0 = smem_u32(&mbar[0]);  // mbar[s] at bar0 + 8·s
    rc_arm(bar0, step_bytes, working ? un : 0);
    SeqItem<C, W, A> it(p, valid, b, j);
    cluster_sync();

    // The exchange's safety is rec_rcluster's argument (recurrent_cluster_regs.cu):
    // a CTA's stores of step t + 1 follow its wait of step t + 1, which
    // needs every CTA's step-t items, each sent by its two lanes after both
    // read h_{t-1} (same warp, same instruction); the warps' B loads of
    // h_{t-1} precede the block barrier that the items follow.
    for (int t = 0; working && t < p.T; ++t) {
        const int cur = t & 1;
        const bool last = t == p.T - 1;
        if (t > 0) {
            mbar_wait(bar0 + 8 * cur, (unsigned)((t - 1) >> 1) & 1u);
            if (threadIdx.x == 0) mbar_expect(bar0 + 8 * cur, step_bytes);
        }
        if (valid) it.prefetch(p, t);
        // The warp's share of the product: two accumulator sets (even and
        // odd k-steps) for two independent chains per gate.
        float acc[2][G][4];
#pragma unroll
        for (int s = 0; s < 2; ++s)
#pragma unroll
            for (int g = 0; g < G; ++g)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[s][g][e] = 0.0f;
        const float* hr = hbuf[cur][fg];  // B column n = fg: batch row fg
#pragma unroll
        for (int i = 0; i < KS; ++i) {
            const int k0 = (warp + NWARPS * i) * KW;
            if (F32) {
                unsigned bh_[2], bl_[2];
                tf32_split(hr[k0 + fq], &bh_[0], &bl_[0]);
                tf32_split(hr[k0 + fq + 4], &bh_[1], &bl_[1]);
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    float* d = acc[i & 1][g];
                    mma_tf32(d, alo[F32 ? g : 0][F32 ? i : 0], bh_);
                    mma_tf32(d, ahi[g][i], bl_);
                    mma_tf32(d, ahi[g][i], bh_);
                }
            } else {
                const float2 lo = *reinterpret_cast<const float2*>(&hr[k0 + 2 * fq]);
                const float2 hi = *reinterpret_cast<const float2*>(&hr[k0 + 2 * fq + 8]);
                const unsigned bf[2] = {mc_pack(lo.x, lo.y), mc_pack(hi.x, hi.y)};
#pragma unroll
                for (int g = 0; g < G; ++g) mma_f16(acc[i & 1][g], ahi[g][i], bf);
            }
        }
        // The warp's partial tiles: rows fg, fg + 8, columns 2·fq, 2·fq + 1.
        // The last step's readers of `part` have passed this step's wait,
        // but the lanes that send to other ranks may not have: a barrier
        // before it is rewritten.
        __syncthreads();
#pragma unroll
        for (int g = 0; g < G; ++g) {
            *reinterpret_cast<float2*>(&part[warp][g][fg][2 * fq]) =
                make_float2(acc[0][g][0] + acc[1][g][0], acc[0][g][1] + acc[1][g][1]);
            *reinterpret_cast<float2*>(&part[warp][g][fg + 8][2 * fq]) =
                make_float2(acc[0][g][2] + acc[1][g][2], acc[0][g][3] + acc[1][g][3]);
        }
        __syncthreads();
        if (valid) {
            float hr[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int g = 0; g < G; ++g) {
                float s = part[0][g][iu][ib];
#pragma unroll
                for (int w = 1; w < NWARPS; ++w) s += part[w][g][iu][ib];
                hr[g] = s;
            }
            const float h = it.cell(hr, hbuf[cur][ib][j]);
            const float hv = stored<A>(h);
            if (!last) rc_send(smem_u32(&hbuf[cur ^ 1][ib][j]), hv, bar0 + 8 * (cur ^ 1), copy, 2, ranks);
            it.finish(p, t, h, hv, copy == 0);
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
