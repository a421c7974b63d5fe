// The training's matrix products and column sums (included by train.cu).
// The products read f32 or f16 operands (tr_gemm, tr_gemm_f16,
// tr_gemm_f32_f16) and always accumulate and write f32.
//
// tr_gemm: C(M, N) [+]= Σ_k A(m, k)·B(k, n) [+ bias(n)] on tensor cores
// (mma.sync m16n8k8 TF32) with f32 accuracy: every operand x is split into
// hi = tf32(x) and lo = tf32(x − hi), and a·b is formed as
// a_lo·b_hi + a_hi·b_lo + a_hi·b_hi ("3xTF32"). The dropped a_lo·b_lo and
// the rounding of the lo parts are below 2^-21·|a·b|, the order of an f32
// product's own rounding; f16 operands are exact in TF32 (lo = 0), so
// the products with their lo are skipped: one product per tile where both
// operands are f16, two where one is.
// A(m, k) is at a[m·sam + k·sak], B(k, n) at b[k·sbk + n·sbn], C(m, n) at
// c[m·ldc + n]. Each operand is loaded coalesced for its layout: along k
// where its k stride is 1 (sak = 1 / sbk = 1), else along m / n. 128×64
// tiles of C, k slices of 16 through shared memory (the next slice
// prefetched into registers while the current one is multiplied), each of
// the 8 warps owning a 32×32 quarter-column of the tile (2 × 4 mma tiles).
// Split-K for products with few tiles and a long k: gridDim.y = m-tiles ×
// splits; with splits > 1 each split writes its partial C to `work`
// (splits, M, N) and counts itself in its tile's word of `arrivals`
// (tr_last_to_arrive); the last split to arrive adds the partials in split
// order, as a second pass would, and writes C: deterministic, without
// atomics on C or a second launch.
#pragma once
#include "mma.cuh"

#define TG_BM 128
#define TG_BN 64
#define TG_BK 16
// Row padding of the staged slices: a row of 136 (A) or 72 (B) words is 8
// banks on from the previous one, so the mma fragment reads (lanes 4 rows ×
// 8 columns apart) hit 32 different banks.
#define TG_PAD 8

// A thread's share of the 16 × X slices of one operand, (x, k) ↦
// ptr[x·sx + k·sk], N = X·16/256 elements per slice. Element i is
// (x0 + t/16 + 16i, k0 + t%16) for thread t when the operand's k stride is
// 1 (16 threads read 64 contiguous bytes of a row), else
// (x0 + t%X, k0 + t/X + (256/X)·i) (X threads along x). Either way the
// elements are a fixed stride apart in memory and in shared memory, so
// offsets and bounds are set up once: a slice costs one add, one compare
// and one load per element. With `spread`, the k-stride-1 map of
// train_gemm_ring.cuh instead: lane (r, c) = (lane / 4, lane % 4) of warp
// w at row r + 8·(w / 4) + 16i, k c + 4·(w % 4).
template <int X>
struct TgMap {
    static constexpr int N = X * TG_BK / TR_THREADS;
    long long off;     // element 0's offset in the current slice
    long long step_i;  // element i → i + 1
    long long step_k;  // slice → next slice (16 k)
    int kk0, dk;       // element i's k in the slice: kk0 + dk·i
    unsigned valid_x;  // bit i: element i's x inside [0, XN)
    int s0, ds;        // element i at word s0 + ds·i of a [16][X + PAD] slice

    __device__ __forceinline__ TgMap(int XN, long long sx, long long sk, int x0, int k_begin, bool k_major,
                                     bool spread) {
        const int t = threadIdx.x;
        int xx;
        if (k_major) {
            const int lane = t % 32, w = t / 32;
            xx = spread ? lane / 4 + 8 * (w / 4) : t / TG_BK;
            kk0 = spread ? lane % 4 + 4 * (w % 4) : t % TG_BK;
            dk = 0;
            step_i = (long long)(TR_THREADS / TG_BK) * sx;
            ds = TR_THREADS / TG_BK;
            valid_x = 0;
#pragma unroll
            for (int i = 0; i < N; ++i)
                if (x0 + xx + i * (TR_THREADS / TG_BK) < XN) valid_x |= 1u << i;
        } else {
            xx = t % X;
            kk0 = t / X;
            dk = TR_THREADS / X;
            step_i = (long long)dk * sk;
            ds = dk * (X + TG_PAD);
            valid_x = x0 + xx < XN ? ~0u : 0u;
        }
        off = (long long)(x0 + xx) * sx + (long long)(k_begin + kk0) * sk;
        step_k = (long long)TG_BK * sk;
        s0 = kk0 * (X + TG_PAD) + xx;
    }
};

// tr_gemm's loads of a thread's share: a slice into registers, then into
// shared memory.
template <int X, typename T>
struct TgLoader : TgMap<X> {
    static constexpr int N = TgMap<X>::N;
    const T* ptr;

    __device__ __forceinline__ TgLoader(const T* p, int XN, long long sx, long long sk, int x0, int k_begin,
                                        bool k_major)
        : TgMap<X>(XN, sx, sk, x0, k_begin, k_major, false), ptr(p) {}

    // The slice at k0 into v (f32; zero outside X × [.., k_end)), then on to
    // the next slice.
    __device__ __forceinline__ void fetch(float* v, int k0, int k_end) {
        long long o = this->off;
#pragma unroll
        for (int i = 0; i < N; ++i) {
            const bool in = ((this->valid_x >> i) & 1u) && k0 + this->kk0 + this->dk * i < k_end;
            v[i] = in ? tr_f(ptr[o]) : 0.0f;
            o += this->step_i;
        }
        this->off += this->step_k;
    }

    // v into shared memory as its TF32 parts hi and lo (split once here
    // rather than by every warp that reads them). An f16 operand is exact
    // in TF32: its hi is v itself and its lo, zero, is neither stored nor
    // read (tg_gemm skips the products it would enter).
    __device__ __forceinline__ void store(unsigned (*hi)[X + TG_PAD], unsigned (*lo)[X + TG_PAD],
                                          const float* v) const {
        unsigned* h = &hi[0][0];
        unsigned* l = &lo[0][0];
#pragma unroll
        for (int i = 0; i < N; ++i) {
            if (sizeof(T) == 4) tf32_split(v[i], &h[this->s0 + this->ds * i], &l[this->s0 + this->ds * i]);
            else h[this->s0 + this->ds * i] = __float_as_uint(v[i]);
        }
    }
};

// C(m, n) [+]= v [+ bias(n)]: a product's sum over the whole k range.
__device__ __forceinline__ void tg_store(float* c, const float* bias, int ldc, int accumulate, int m, int n,
                                         float v) {
    float* out = c + (long long)m * ldc + n;
    const float r = bias ? v + bias[n] : v;
    *out = accumulate ? *out + r : r;
}

// f(m, n, v) for each element v of a warp's 32 × 32 accumulators inside
// M × N: tile (i, j) of 16 × 8 at (r0 + 16·i, c0 + 8·j), where lane (g, q)
// holds rows g and g + 8, columns 2q and 2q + 1 (the mma accumulator
// layout).
template <typename F>
__device__ __forceinline__ void tg_for_acc(const float (&acc)[2][4][4], int r0, int c0, int M, int N, int g, int q,
                                           F f) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int m = r0 + i * 16 + g + (e / 2) * 8;
            if (m >= M) continue;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int n = c0 + j * 8 + 2 * q + e % 2;
                if (n < N) f(m, n, acc[i][j][e]);
            }
        }
}

// The splits of split-K most products take (engine/src/train/launch.rs,
// MAX_SPLITS): their partials are loaded before any is added.
#define TG_MAX_SPLITS 8

__device__ __forceinline__ float tg_lane(const float4& v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
__device__ __forceinline__ float tg_lane(float v, int) { return v; }
__device__ __forceinline__ void tg_add(float4& a, const float4& b) {
    a.x += b.x;
    a.y += b.y;
    a.z += b.z;
    a.w += b.w;
}
__device__ __forceinline__ void tg_add(float& a, float b) { a += b; }

// The tile at (m0, n0) of C from the `splits` partials in work (splits, M,
// N): Σ_s partial_s in split order, then tg_store. V: float4 (4 columns per
// item; N a multiple of 4) or float. Each item's partials (up to
// TG_MAX_SPLITS) are all in flight before the first add.
template <typename V>
__device__ __forceinline__ void tg_sum_splits(float* c, const float* bias, int ldc, int accumulate,
                                              const float* work, int M, int N, int m0, int n0, int splits) {
    constexpr int P = sizeof(V) / 4, ROW = TG_BN / P;
    const long long stride = (long long)M * N / P;  // one split's partial, in V
    for (int i = threadIdx.x; i < TG_BM * ROW; i += TR_THREADS) {
        const int m = m0 + i / ROW, n = n0 + (i % ROW) * P;
        if (m >= M || n >= N) continue;  // P | N: the item is all inside
        const V* w = reinterpret_cast<const V*>(work + (long long)m * N + n);
        V part[TG_MAX_SPLITS];
#pragma unroll
        for (int s = 0; s < TG_MAX_SPLITS; ++s)
            if (s < splits) part[s] = __ldcg(w + s * stride);
        V v = part[0];
#pragma unroll
        for (int s = 1; s < TG_MAX_SPLITS; ++s)
            if (s < splits) tg_add(v, part[s]);
        for (int s = TG_MAX_SPLITS; s < splits; ++s) tg_add(v, __ldcg(w + s * stride));
#pragma unroll
        for (int e = 0; e < P; ++e) tg_store(c, bias, ldc, accumulate, m, n + e, tg_lane(v, e));
    }
}

// A product's staged 16-k slices: A as [16][TG_BM + TG_PAD] words, B as
// [16][TG_BN + TG_PAD], each as its TF32 hi part and (f32 operands only)
// its lo part.
typedef unsigned TgSliceA[TG_BK][TG_BM + TG_PAD];
typedef unsigned TgSliceB[TG_BK][TG_BN + TG_PAD];

// The products of one staged slice added into a warp's 32 × 32
// accumulators (tile rows wm.., columns wn..; lane (g, q)). A_LO / B_LO:
// the operand has lo parts (f32 storage).
template <bool A_LO, bool B_LO>
__device__ __forceinline__ void tg_slice_products(float (&acc)[2][4][4], const TgSliceA& as_hi, const TgSliceA& as_lo,
                                                  const TgSliceB& bs_hi, const TgSliceB& bs_lo, int wm, int wn, int g,
                                                  int q) {
#pragma unroll
    for (int kk = 0; kk < TG_BK; kk += 8) {
        unsigned ah[2][4], al[2][4] = {};
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int m = wm + i * 16 + g;
            const int r[4][2] = {{kk + q, m}, {kk + q, m + 8}, {kk + q + 4, m}, {kk + q + 4, m + 8}};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                ah[i][e] = as_hi[r[e][0]][r[e][1]];
                if (A_LO) al[i][e] = as_lo[r[e][0]][r[e][1]];
            }
        }
        unsigned bh[4][2], bl[4][2] = {};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = wn + j * 8 + g;
            bh[j][0] = bs_hi[kk + q][n];
            bh[j][1] = bs_hi[kk + q + 4][n];
            if (B_LO) {
                bl[j][0] = bs_lo[kk + q][n];
                bl[j][1] = bs_lo[kk + q + 4][n];
            }
        }
        // Term by term over the 8 tiles (8 independent accumulators
        // between two products of one tile), the small terms first so
        // the large one is added last.
#pragma unroll
        for (int t = 0; t < 3; ++t)
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    // The terms with an f16 operand's lo (zero) are skipped:
                    // adding them would leave every sum as it is.
                    if ((t != 0 || A_LO) && (t != 1 || B_LO))
                        mma_tf32(acc[i][j], t == 0 ? al[i] : ah[i], t == 1 ? bl[j] : bh[j]);
    }
}

// Where a block stands in its product: tile (m0, n0) of C, split `split`
// of k range [k_begin, k_end) (whole slices), warp tile (wm, wn), lane
// (g, q). gridDim.y = m-tiles × splits.
struct TgBlock {
    int m_tile, split, m0, n0, k_begin, k_end, wm, wn, g, q;

    __device__ __forceinline__ TgBlock(int M, int K, int splits) {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
        g = lane / 4;
        q = lane % 4;
        wm = (warp % 4) * 32;
        wn = (warp / 4) * 32;
        const int m_tiles = (M + TG_BM - 1) / TG_BM;
        m_tile = blockIdx.y % m_tiles;
        split = blockIdx.y / m_tiles;
        m0 = m_tile * TG_BM;
        n0 = blockIdx.x * TG_BN;
        const int slices = (K + TG_BK - 1) / TG_BK;
        const int per = (slices + splits - 1) / splits;
        k_begin = split * per * TG_BK;
        k_end = min(K, k_begin + per * TG_BK);
    }
};

// The block's accumulators out: C directly, or with splits > 1 its partial
// into `work` (splits, M, N), counted in its tile's word of `arrivals`
// (tr_last_to_arrive); the last split to arrive adds the partials in split
// order, walking the tile row by row (coalesced), and writes C.
__device__ __forceinline__ void tg_finish(const float (&acc)[2][4][4], const TgBlock& tb, float* c, const float* bias,
                                          int M, int N, int ldc, int accumulate, int splits, float* work,
                                          unsigned* arrivals) {
    if (splits > 1) {
        const long long MN = (long long)M * N;
        tg_for_acc(acc, tb.m0 + tb.wm, tb.n0 + tb.wn, M, N, tb.g, tb.q,
                   [&](int m, int n, float v) { work[tb.split * MN + (long long)m * N + n] = v; });
        unsigned* word = arrivals + tb.m_tile * gridDim.x + blockIdx.x;
        if (!tr_last_to_arrive(word, (unsigned)splits)) return;
        if ((N & 3) == 0) {
            tg_sum_splits<float4>(c, bias, ldc, accumulate, work, M, N, tb.m0, tb.n0, splits);
        } else {
            tg_sum_splits<float>(c, bias, ldc, accumulate, work, M, N, tb.m0, tb.n0, splits);
        }
        return;
    }
    tg_for_acc(acc, tb.m0 + tb.wm, tb.n0 + tb.wn, M, N, tb.g, tb.q,
               [&](int m, int n, float v) { tg_store(c, bias, ldc, accumulate, m, n, v); });
}

__device__ __forceinline__ void tg_zero(float (&acc)[2][4][4]) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
}

// 128 × 64 tiles of C; warp w owns rows (w % 4)·32 .. +31 and columns
// (w / 4)·32 .. +31 as 2 × 4 tiles of 16 × 8. In a tile, lane (g = lane / 4,
// q = lane % 4) holds C rows g and g + 8, columns 2q and 2q + 1 (the mma
// accumulator layout). A's storage TA, B's TB (float or __half); the
// slices in shared memory, the products and C are f32. One slice in
// shared memory, the next one's loads in registers.
template <typename TA, typename TB>
__device__ __forceinline__ void tg_gemm(float* c, const TA* a, const TB* b, const float* bias, int M, int N,
                                        int K, long long sam, long long sak, long long sbk, long long sbn,
                                        int ldc, int accumulate, int splits, float* work, unsigned* arrivals) {
    __shared__ TgSliceA as_hi, as_lo;
    __shared__ TgSliceB bs_hi, bs_lo;
    const TgBlock tb(M, K, splits);
    TgLoader<TG_BM, TA> la(a, M, sam, sak, tb.m0, tb.k_begin, sak == 1);
    TgLoader<TG_BN, TB> lb(b, N, sbn, sbk, tb.n0, tb.k_begin, sbk == 1);
    float acc[2][4][4];
    tg_zero(acc);
    float ra[TgLoader<TG_BM, TA>::N], rb[TgLoader<TG_BN, TB>::N];
    if (tb.k_begin < tb.k_end) {
        la.fetch(ra, tb.k_begin, tb.k_end);
        lb.fetch(rb, tb.k_begin, tb.k_end);
    }
    for (int k0 = tb.k_begin; k0 < tb.k_end; k0 += TG_BK) {
        la.store(as_hi, as_lo, ra);
        lb.store(bs_hi, bs_lo, rb);
        __syncthreads();
        if (k0 + TG_BK < tb.k_end) {
            la.fetch(ra, k0 + TG_BK, tb.k_end);
            lb.fetch(rb, k0 + TG_BK, tb.k_end);
        }
        // Lo parts exist for f32 operands only (TgLoader::store).
        tg_slice_products<sizeof(TA) == 4, sizeof(TB) == 4>(acc, as_hi, as_lo, bs_hi, bs_lo, tb.wm, tb.wn, tb.g,
                                                            tb.q);
        __syncthreads();
    }
    tg_finish(acc, tb, c, bias, M, N, ldc, accumulate, splits, work, arrivals);
}

// A product kernel NAME running FN (tg_gemm or tg_gemm_ring) on TA, TB.
#define TR_GEMM_KERNEL(NAME, FN, TA, TB)                                                                      \
    extern "C" __global__ void __launch_bounds__(TR_THREADS, 2)                                               \
        NAME(float* c, const TA* a, const TB* b, const float* bias, int M, int N, int K, long long sam,       \
             long long sak, long long sbk, long long sbn, int ldc, int accumulate, int splits, float* work,   \
             unsigned* arrivals) {                                                                            \
        FN<TA, TB>(c, a, b, bias, M, N, K, sam, sak, sbk, sbn, ldc, accumulate, splits, work, arrivals);      \
    }
// Every operand f32; both f16 (hs · W_dᵀ in f16 mode); A f32 and B f16 (a
// gradient times stored activations or weights).
TR_GEMM_KERNEL(tr_gemm, tg_gemm, float, float)
TR_GEMM_KERNEL(tr_gemm_f16, tg_gemm, __half, __half)
TR_GEMM_KERNEL(tr_gemm_f32_f16, tg_gemm, float, __half)

// out(col) [+]= Σ_r in(r, col), rows R, columns C (row stride ld), in one
// launch: block (x, y) sums rows [y·chunk, (y+1)·chunk) of the 32 columns
// from x·32 (a warp reads 128 contiguous bytes of a row; the 8 warps take
// every 8th row, then add in warp order) into work(y, col) and counts
// itself in arrivals[x] (tr_last_to_arrive); the last of column strip x's
// blocks adds the partials in a fixed order (warp w: chunks w, w + 8, …;
// then the warps in order) and writes out.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_colsum(float* out, float* work, unsigned* arrivals, const float* in, int R, int C, int ld, int chunk,
          int accumulate) {
    __shared__ float red[8][33];
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    const int col = blockIdx.x * 32 + lane;
    const int r_end = min(R, (int)(blockIdx.y + 1) * chunk);
    float s = 0.0f;
    if (col < C)
        for (int r = blockIdx.y * chunk + w; r < r_end; r += 8) s += in[(long long)r * ld + col];
    red[w][lane] = s;
    __syncthreads();
    if (w == 0 && col < C) {
        float t = red[0][lane];
        for (int i = 1; i < 8; ++i) t += red[i][lane];
        work[(long long)blockIdx.y * C + col] = t;
    }
    if (!tr_last_to_arrive(arrivals + blockIdx.x, gridDim.y)) return;
    // The strip's partials, read through L2.
    s = 0.0f;
    if (col < C)
        for (int y = w; y < (int)gridDim.y; y += 8) s += __ldcg(work + (long long)y * C + col);
    red[w][lane] = s;
    __syncthreads();
    if (w != 0) return;
    if (col >= C) return;
    float t = red[0][lane];
    for (int i = 1; i < 8; ++i) t += red[i][lane];
    out[col] = accumulate ? out[col] + t : t;
}

// out (C, R) = in (R, C)ᵀ, 32×32 tiles through shared memory (both sides
// coalesced).
template <typename T>
__device__ __forceinline__ void tg_transpose(T* out, const T* in, int R, int C) {
    __shared__ T tile[32][33];
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
    for (int i = ty; i < 32; i += 8) {
        const int r = r0 + i, c = c0 + tx;
        if (r < R && c < C) tile[i][tx] = in[(long long)r * C + c];
    }
    __syncthreads();
    for (int i = ty; i < 32; i += 8) {
        const int c = c0 + i, r = r0 + tx;
        if (r < R && c < C) out[(long long)c * R + r] = tile[tx][i];
    }
}

extern "C" __global__ void __launch_bounds__(TR_THREADS) tr_transpose(float* out, const float* in, int R, int C) {
    tg_transpose<float>(out, in, R, C);
}

extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_transpose_f16(__half* out, const __half* in, int R, int C) {
    tg_transpose<__half>(out, in, R, C);
}
