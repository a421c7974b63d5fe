// The training's matrix products and column sums (included by train.cu).
// The products read f32 or f16 operands (tr_gemm, tr_gemm_f16,
// tr_gemm_f32_f16) and always accumulate and write f32.
//
// tr_gemm: C(M, N) [+]= Σ_k A(m, k)·B(k, n) [+ bias(n)], f32 FFMA. A(m, k) is
// at a[m·sam + k·sak], B(k, n) at b[k·sbk + n·sbn], C(m, n) at c[m·ldc + n].
// Each operand is loaded coalesced for its layout: along k where its k stride
// is 1 (sak = 1 / sbk = 1), else along m / n. 128×64 tiles of C, k slices
// of 16 through shared memory (the next slice prefetched into registers
// while the current one is multiplied), 8×4 outputs per thread read as
// float4.
// Split-K for products with few tiles and a long k: gridDim.y = m-tiles ×
// splits; with splits > 1 each split writes its partial C to `work`
// (splits, M, N) and tr_splitk_sum adds the partials in split order (a
// deterministic second pass instead of atomics).
#pragma once

#define TG_BM 128
#define TG_BN 64
#define TG_BK 16
#define TG_PAD 4

// Element i of this thread's share of a 16 × X slice of an operand: at
// smem[kk][xx], consecutive threads along k when the operand's k stride is
// 1 (coalesced for that layout), else along x.
template <int X>
__device__ __forceinline__ void tg_slot(int i, bool k_major, int* kk, int* xx) {
    const int e = threadIdx.x + i * TR_THREADS;
    if (k_major) {
        *kk = e % TG_BK;
        *xx = e / TG_BK;
    } else {
        *kk = e / X;
        *xx = e % X;
    }
}

// The 16 × X slice of operand (x, k) ↦ x_ptr[x·sx + k·sk] at (x0, k0) into
// registers (X·16 / 256 per thread), zero outside X × K.
// The operand's storage T (float or __half) is converted to f32 here.
template <int X, typename T>
__device__ __forceinline__ void tg_fetch(float* v, const T* x, int XN, int K, long long sx, long long sk,
                                         int x0, int k0, bool k_major) {
#pragma unroll
    for (int i = 0; i < X * TG_BK / TR_THREADS; ++i) {
        int kk, xx;
        tg_slot<X>(i, k_major, &kk, &xx);
        const int xi = x0 + xx, ki = k0 + kk;
        v[i] = (xi < XN && ki < K) ? tr_f(x[xi * sx + ki * sk]) : 0.0f;
    }
}

template <int X>
__device__ __forceinline__ void tg_store(float (*s)[X + TG_PAD], const float* v, bool k_major) {
#pragma unroll
    for (int i = 0; i < X * TG_BK / TR_THREADS; ++i) {
        int kk, xx;
        tg_slot<X>(i, k_major, &kk, &xx);
        s[kk][xx] = v[i];
    }
}

// 128 × 64 tiles of C, thread (ty, tx) computes rows ty·8 .. +7 and
// columns tx·4 .. +3 (two float4 reads of A and one of B per k). A's
// storage TA, B's TB (float or __half); the tiles in shared memory, the
// products and C are f32.
template <typename TA, typename TB>
__device__ __forceinline__ void tg_gemm(float* c, const TA* a, const TB* b, const float* bias, int M, int N,
                                        int K, long long sam, long long sak, long long sbk, long long sbn,
                                        int ldc, int accumulate, int splits, float* work) {
    __shared__ __align__(16) float as[TG_BK][TG_BM + TG_PAD];
    __shared__ __align__(16) float bs[TG_BK][TG_BN + TG_PAD];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int m_tiles = (M + TG_BM - 1) / TG_BM;
    const int split = blockIdx.y / m_tiles;
    const int m0 = (blockIdx.y % m_tiles) * TG_BM, n0 = blockIdx.x * TG_BN;
    // This split's k range, whole slices.
    const int slices = (K + TG_BK - 1) / TG_BK;
    const int per = (slices + splits - 1) / splits;
    const int k_begin = split * per * TG_BK;
    const int k_end = min(K, k_begin + per * TG_BK);
    const bool a_k = sak == 1, b_k = sbk == 1;
    float acc[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    float ra[TG_BM * TG_BK / TR_THREADS], rb[TG_BN * TG_BK / TR_THREADS];
    if (k_begin < k_end) {
        tg_fetch<TG_BM>(ra, a, M, k_end, sam, sak, m0, k_begin, a_k);
        tg_fetch<TG_BN>(rb, b, N, k_end, sbn, sbk, n0, k_begin, b_k);
    }
    for (int k0 = k_begin; k0 < k_end; k0 += TG_BK) {
        tg_store<TG_BM>(as, ra, a_k);
        tg_store<TG_BN>(bs, rb, b_k);
        __syncthreads();
        if (k0 + TG_BK < k_end) {
            tg_fetch<TG_BM>(ra, a, M, k_end, sam, sak, m0, k0 + TG_BK, a_k);
            tg_fetch<TG_BN>(rb, b, N, k_end, sbn, sbk, n0, k0 + TG_BK, b_k);
        }
#pragma unroll
        for (int kk = 0; kk < TG_BK; ++kk) {
            const float4 a0 = *reinterpret_cast<const float4*>(&as[kk][ty * 8]);
            const float4 a1 = *reinterpret_cast<const float4*>(&as[kk][ty * 8 + 4]);
            const float4 bv = *reinterpret_cast<const float4*>(&bs[kk][tx * 4]);
            const float ai[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float bj[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += ai[i] * bj[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int m = m0 + ty * 8 + i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx * 4 + j;
            if (n >= N) continue;
            if (splits > 1) {
                work[((long long)split * M + m) * N + n] = acc[i][j];
            } else {
                float v = acc[i][j];
                if (bias) v += bias[n];
                float* out = c + (long long)m * ldc + n;
                *out = accumulate ? *out + v : v;
            }
        }
    }
}

#define TR_GEMM_KERNEL(NAME, TA, TB)                                                                          \
    extern "C" __global__ void __launch_bounds__(TR_THREADS)                                                  \
        NAME(float* c, const TA* a, const TB* b, const float* bias, int M, int N, int K, long long sam,       \
             long long sak, long long sbk, long long sbn, int ldc, int accumulate, int splits, float* work) { \
        tg_gemm<TA, TB>(c, a, b, bias, M, N, K, sam, sak, sbk, sbn, ldc, accumulate, splits, work);          \
    }
// Every operand f32; both f16 (hs · W_dᵀ in f16 mode); A f32 and B f16 (a
// gradient times stored activations or weights).
TR_GEMM_KERNEL(tr_gemm, float, float)
TR_GEMM_KERNEL(tr_gemm_f16, __half, __half)
TR_GEMM_KERNEL(tr_gemm_f32_f16, float, __half)

// C(m, n) [+]= Σ_s work(s, m, n) [+ bias(n)], the splits added in order.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_splitk_sum(float* c, const float* work, const float* bias, int M, int N, int splits, int ldc,
              int accumulate) {
    const long long total = (long long)M * N;
    for (long long e = blockIdx.x * (long long)TR_THREADS + threadIdx.x; e < total;
         e += (long long)gridDim.x * TR_THREADS) {
        float v = work[e];
        for (int s = 1; s < splits; ++s) v += work[s * total + e];
        if (bias) v += bias[e % N];
        float* out = c + (e / N) * ldc + e % N;
        *out = accumulate ? *out + v : v;
    }
}

// Column sums in two passes. Pass 1: block (x, y) sums rows [y·chunk,
// (y+1)·chunk) of 32 columns (a warp reads 128 contiguous bytes of a row;
// the 8 warps take every 8th row, then add in warp order) into
// work(y, col). Pass 2 (tr_colsum_fin): out(col) [+]= Σ_y work(y, col) in
// chunk order.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_colsum(float* work, const float* in, int R, int C, int ld, int chunk) {
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
}

extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_colsum_fin(float* out, const float* work, int chunks, int C, int accumulate) {
    const int col = blockIdx.x * TR_THREADS + threadIdx.x;
    if (col >= C) return;
    float s = work[col];
    for (int y = 1; y < chunks; ++y) s += work[(long long)y * C + col];
    out[col] = accumulate ? out[col] + s : s;
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
