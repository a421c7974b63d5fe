// Dense products and the small kernels around them:
// - gemm_nt_f32 / gemm_nt_f16: C (M, N) f32 = A (M, K) · B (N, K)ᵀ (+ bias),
//   for the output layer (logits = h · W_dᵀ + b_d) and the hoisted input
//   projection of dense inputs (W_ih · x for all steps at once). f16 runs on
//   tensor cores (mma.sync m16n8k16, f32 accumulation).
// - xent_rows / mean_rows: softmax cross-entropy per row and its mean.
// - transpose_*, convert_f16: the weight copies the device model derives.
// - gen_sample: one sampling step of the per-step generation path.
#include "sample.cuh"

// ---- f32 GEMM on CUDA cores: 64×64 tiles, 4×4 outputs per thread ----------
extern "C" __global__ void __launch_bounds__(NTHREADS)
    gemm_nt_f32(float* c, const float* a, const float* b, const float* bias, int M, int N, int K) {
    __shared__ float As[16][64 + 4];
    __shared__ float Bs[16][64 + 4];
    const int m0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += 16) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int e = threadIdx.x + i * NTHREADS;
            const int r = e >> 4, kk = e & 15;
            const bool kin = k0 + kk < K;
            As[kk][r] = (m0 + r < M && kin) ? a[(size_t)(m0 + r) * K + k0 + kk] : 0.0f;
            Bs[kk][r] = (n0 + r < N && kin) ? b[(size_t)(n0 + r) * K + k0 + kk] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 16; ++kk) {
            float av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) av[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx + 16 * j;
            if (n < N) c[(size_t)m * N + n] = acc[i][j] + (bias ? bias[n] : 0.0f);
        }
    }
}

// ---- f16 GEMM on tensor cores: 128×128 tiles, k step 32 -------------------
// 8 warps as 2 (m) × 4 (n), each 64×32 = 4×4 mma tiles. Shared rows are
// padded to 40 halves (80 bytes): fragment loads hit 32 distinct banks.
__device__ __forceinline__ void mma16816_u(float* d, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                           unsigned b0, unsigned b1) {
#ifdef RECUR_EMU  // recur's CPU emulator (cuda-stub/emu)
    const unsigned a[4] = {a0, a1, a2, a3}, b[2] = {b0, b1};
    emu::mma_m16n8k16_f16(d, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

// Rows [r0, r0+128) × k [k0, k0+32) of src (rows × K) into dst[128][40].
__device__ __forceinline__ void load_tile_f16(__half (*dst)[40], const __half* src, int r0, int rows, int k0,
                                              int K, bool vec) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int e = threadIdx.x + i * NTHREADS;
        const int r = e >> 2, c = (e & 3) * 8;
        const int gr = r0 + r, gk = k0 + c;
        if (vec && gr < rows && gk + 8 <= K) {
            *reinterpret_cast<uint4*>(&dst[r][c]) = *reinterpret_cast<const uint4*>(src + (size_t)gr * K + gk);
        } else {
#pragma unroll
            for (int d = 0; d < 8; ++d)
                dst[r][c + d] = (gr < rows && gk + d < K) ? src[(size_t)gr * K + gk + d] : __float2half_rn(0.0f);
        }
    }
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
    gemm_nt_f16(float* c, const __half* a, const __half* b, const __half* bias, int M, int N, int K) {
    __shared__ __align__(16) __half As[128][40];
    __shared__ __align__(16) __half Bs[128][40];
    const int m0 = blockIdx.y * 128, n0 = blockIdx.x * 128;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp >> 2, wn = warp & 3;
    const int gq = lane >> 2, tg = lane & 3;
    // 16-byte loads need K % 8 == 0 and 16-byte aligned operands (the
    // output layer's weights sit at any offset of the f16 mirror).
    const bool vec_a = (K & 7) == 0 && (reinterpret_cast<size_t>(a) & 15) == 0;
    const bool vec_b = (K & 7) == 0 && (reinterpret_cast<size_t>(b) & 15) == 0;
    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += 32) {
        load_tile_f16(As, a, m0, M, k0, K, vec_a);
        load_tile_f16(Bs, b, n0, N, k0, K, vec_b);
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < 32; ks += 16) {
            unsigned af[4][4], bf[4][2];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int r = wm * 64 + i * 16 + gq;
                af[i][0] = *reinterpret_cast<const unsigned*>(&As[r][ks + 2 * tg]);
                af[i][1] = *reinterpret_cast<const unsigned*>(&As[r + 8][ks + 2 * tg]);
                af[i][2] = *reinterpret_cast<const unsigned*>(&As[r][ks + 2 * tg + 8]);
                af[i][3] = *reinterpret_cast<const unsigned*>(&As[r + 8][ks + 2 * tg + 8]);
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int n = wn * 32 + j * 8 + gq;
                bf[j][0] = *reinterpret_cast<const unsigned*>(&Bs[n][ks + 2 * tg]);
                bf[j][1] = *reinterpret_cast<const unsigned*>(&Bs[n][ks + 2 * tg + 8]);
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    mma16816_u(acc[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = m0 + wm * 64 + i * 16 + gq + (e >> 1) * 8;
                const int n = n0 + wn * 32 + j * 8 + 2 * tg + (e & 1);
                if (m < M && n < N) c[(size_t)m * N + n] = acc[i][j][e] + (bias ? __half2float(bias[n]) : 0.0f);
            }
        }
    }
}

// ---- softmax cross-entropy -------------------------------------------------
// loss[r] = logsumexp(logits[r]) - logits[r][targets[r]], one block per row,
// log-sum-exp against the row maximum (NaN logits give a NaN loss).
extern "C" __global__ void __launch_bounds__(NTHREADS)
    xent_rows(float* loss, const float* logits, const int* targets, int N, int V) {
    __shared__ float s_red[NWARPS];
    const int row = blockIdx.x;
    if (row >= N) return;
    const float* x = logits + (size_t)row * V;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float m = -INF_F;
    for (int i = threadIdx.x; i < V; i += NTHREADS) m = fmaxf(m, x[i]);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) s_red[warp] = m;
    __syncthreads();
    m = s_red[0];
    for (int w = 1; w < NWARPS; ++w) m = fmaxf(m, s_red[w]);
    __syncthreads();
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += NTHREADS) s += expf(x[i] - m);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) s_red[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (int w = 0; w < NWARPS; ++w) total += s_red[w];
        loss[row] = (m + logf(total)) - x[targets[row]];
    }
}

// out[0] = mean of v[0..n), summed in f64 (as recur-core's loss).
extern "C" __global__ void __launch_bounds__(NTHREADS) mean_rows(float* out, const float* v, int n) {
    __shared__ double s_red[NWARPS];
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += NTHREADS) s += (double)v[i];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) s_red[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < NWARPS; ++w) total += s_red[w];
        out[0] = (float)(total / (double)n);
    }
}

// ---- derived weight copies -------------------------------------------------
// out (cols, rows) = in (rows, cols)ᵀ, 32×32 tiles (grid: cols/32, rows/32).
template <typename T>
__device__ void transpose_tile(T* out, const float* in, int rows, int cols) {
    __shared__ float tile[32][33];
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    for (int i = ty; i < 32; i += NWARPS) {
        const int r = r0 + i, c = c0 + tx;
        if (r < rows && c < cols) tile[i][tx] = in[(size_t)r * cols + c];
    }
    __syncthreads();
    for (int i = ty; i < 32; i += NWARPS) {
        const int c = c0 + i, r = r0 + tx;
        if (r < rows && c < cols) out[(size_t)c * rows + r] = from_f<T>(tile[tx][i]);
    }
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
    transpose_f32(float* out, const float* in, int rows, int cols) {
    transpose_tile<float>(out, in, rows, cols);
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
    transpose_to_f16(__half* out, const float* in, int rows, int cols) {
    transpose_tile<__half>(out, in, rows, cols);
}

// out[i] = f16(in[i]), round to nearest even.
extern "C" __global__ void __launch_bounds__(NTHREADS) convert_f16(__half* out, const float* in, long long n) {
    for (long long i = blockIdx.x * (long long)NTHREADS + threadIdx.x; i < n; i += (long long)gridDim.x * NTHREADS)
        out[i] = __float2half_rn(in[i]);
}

// ---- one sampling step of the per-step generation path ---------------------
// out[b] = the token drawn from logits row b (one block per row), the
// generated token number `index` of row b (V if its logits are unusable);
// feed[b] = the id the next step reads (0 in place of V, to stay in bounds).
extern "C" __global__ void __launch_bounds__(NTHREADS) gen_sample(int* out, int* feed, const float* logits, int V,
                                                                  unsigned long long seed, float inv_temp,
                                                                  int index) {
    const int b = blockIdx.x;
    const int tok = block_sample(logits + (size_t)b * V, V, inv_temp, splitmix_nth(row_seed(seed, b), index));
    if (threadIdx.x == 0) {
        out[b] = tok;
        feed[b] = tok == V ? 0 : tok;
    }
}

// ---- diagnostics -----------------------------------------------------------
// `iters` grid-wide barriers in a row (cooperative launch): the cost of one
// is the time difference to iters = 0, divided by iters.
extern "C" __global__ void __launch_bounds__(NTHREADS) barrier_bench(unsigned* bar, int iters) {
    unsigned gen = barrier_start(bar);
    for (int i = 0; i < iters; ++i) grid_sync(bar, gen);
}

// The same with grid_sync_flip (a zeroed word, or one the flip barrier
// left).
extern "C" __global__ void __launch_bounds__(NTHREADS) barrier_bench_flip(unsigned* bar, int iters) {
    for (int i = 0; i < iters; ++i) grid_sync_flip(bar);
}
