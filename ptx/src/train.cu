// Training kernels, f32 or f16 storage: the recurrent layer's forward with the cache its
// backward needs and backward through time for every cell, one fused launch
// per step (train_step.cuh), the output layer's softmax cross-entropy and
// its gradient, the products and column sums (train_gemm.cuh), global-norm
// clipping, SGD and Adam, and the loss / norm statistics kept on the device.
// Self-contained (the formulas and their operation order follow
// recur-core's cells); every kernel runs 256-thread blocks, as the engine
// launches them.
//
// Storage: the kernels that read weights or saved activations are templates
// on their storage type T (float, or __half in the engine's f16 mode) and
// are instantiated under two names, `name` (f32) and `name_f16`. f16 values
// are converted to f32 on load (__half2float) and rounded on store
// (__float2half_rn); every product, sum, gradient, the loss and the
// optimizer state stay f32. In f16 mode the f32 master parameters are
// mirrored into an f16 copy by the update kernels (tr_sgd / tr_adam write
// both in one pass) and by tr_to_f16.

#include <cuda_fp16.h>

#define TR_THREADS 256

// ---- storage <-> f32 --------------------------------------------------------

__device__ __forceinline__ float tr_f(float x) { return x; }
__device__ __forceinline__ float tr_f(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T tr_st(float x);
template <> __device__ __forceinline__ float tr_st<float>(float x) { return x; }
template <> __device__ __forceinline__ __half tr_st<__half>(float x) { return __float2half_rn(x); }

// Loads through L2, not L1 (in the persistent kernels other blocks wrote
// the data; L1 is not coherent across SMs).
__device__ __forceinline__ float tr_ldcg(const float* p) { return __ldcg(p); }
__device__ __forceinline__ float tr_ldcg(const __half* p) {
    return __half2float(__ushort_as_half(__ldcg(reinterpret_cast<const unsigned short*>(p))));
}

// Cell kinds, as recur_core::CellKind.
#define TR_RNN_TANH 0
#define TR_RNN_RELU 1
#define TR_GRU_BEFORE 2
#define TR_GRU_AFTER 3
#define TR_LSTM 4

__device__ __forceinline__ float tr_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float tr_relu(float x) { return x < 0.0f ? 0.0f : x; }

// Counts the calling block in *word, one of `blocks` that arrive there,
// once the block's writes are out at device scope; true, in every thread,
// for the last block to arrive, which may then read the others' writes
// through L2 (__ldcg) and finish their work: deterministic finishing
// passes without a second launch (split-K sums, column sums, the norm).
// The last block zeroes the word for the next launch on the stream. Every
// thread of the block calls it, once per launch.
__device__ __forceinline__ bool tr_last_to_arrive(unsigned* word, unsigned blocks) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(word, 1u) == blocks - 1u;
        // Every block has counted: nobody touches the word again in this launch.
        if (last) *word = 0u;
    }
    __syncthreads();
    // Acquire: the other blocks' writes.
    if (last) __threadfence();
    return last;
}

#include "train_gemm.cuh"
#include "train_gemm_ring.cuh"
#include "train_step.cuh"

// ---- output layer -----------------------------------------------------------

// One warp per row of the (N, V) logits (8 rows per block): the row's
// cross-entropy against its target into row_loss, and the logits replaced
// by the gradient of the mean loss, (softmax − onehot) / N.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_xent(float* logits, float* row_loss, const unsigned* targets, int N, int V) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.x * (TR_THREADS / 32) + threadIdx.x / 32;
    if (row >= N) return;
    float* x = logits + (long long)row * V;
    float mx = -__int_as_float(0x7f800000);
    for (int v = lane; v < V; v += 32) mx = fmaxf(mx, x[v]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.0f;
    for (int v = lane; v < V; v += 32) sum += expf(x[v] - mx);
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const unsigned t = targets[row];
    const float xt = x[t];
    __syncwarp();  // every lane has read x[t] before any overwrites it
    if (lane == 0) row_loss[row] = logf(sum) - (xt - mx);
    const float inv_n = 1.0f / (float)N;
    for (int v = lane; v < V; v += 32) {
        const float p = expf(x[v] - mx) / sum;
        x[v] = (p - (v == (int)t ? 1.0f : 0.0f)) * inv_n;
    }
}

// ---- statistics kept on the device ------------------------------------------
// stats[0]: Σ (batch mean loss × rows) as f64 bits; stats[1]: Σ gradient norm
// as f64 bits; stats[2]: 1 + the first batch (since the host last took the
// sums) whose loss or norm was not finite, 0 if none; stats[3]: that value's
// f32 bits. The optimizer kernels skip their update while stats[2] != 0.

// Adds `add` to sum `which` and records `v` if it is the first non-finite.
__device__ __forceinline__ void tr_note(unsigned long long* stats, int which, double add, float v,
                                        long long batch) {
    double* sums = reinterpret_cast<double*>(stats);
    sums[which] += add;
    if (!isfinite(v) && stats[2] == 0ull) {
        stats[2] = (unsigned long long)batch + 1ull;
        stats[3] = (unsigned long long)__float_as_uint(v);
    }
}

// out[0] = mean of v (N), accumulated in f64 by one block; the sums of
// `stats` take mean × N for batch `batch`.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_mean(float* out, const float* v, int N, unsigned long long* stats, long long batch) {
    __shared__ double red[TR_THREADS];
    double s = 0.0;
    for (int i = threadIdx.x; i < N; i += TR_THREADS) s += (double)v[i];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int k = TR_THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) red[threadIdx.x] += red[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const float mean = (float)(red[0] / (double)N);
        out[0] = mean;
        tr_note(stats, 0, (double)mean * (double)N, mean, batch);
    }
}

// dW_ih (G·H, V) = the input-side gradients dih (N, G·H) summed into the
// columns of their rows' tokens (the product with one-hot inputs), without
// atomics: `order` (N) lists the rows grouped by token (ascending token,
// then row) and `starts` (V + 1) where each token's group begins, so
// column v is Σ_{k ∈ [starts[v], starts[v+1])} dih[order[k], :], added in
// that order (the same gradients every run), and a token absent from the
// batch gets a zero column (no zeroing launch). Block (x, y): columns
// [32x, 32x + 32) × rows [256y, 256y + 256) of dW_ih, in 8 chunks of 32
// rows: warp w sums columns w, w + 8, … (lane = row: 128-byte reads of
// dih), the tile goes through shared memory, and warp w writes rows w,
// w + 8, … of it (lane = column: 128-byte writes).
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_token_grads(float* dw_ih, const float* dih, const unsigned* order, const unsigned* starts, int GH, int V) {
    __shared__ float tile[32][33];
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    const int v0 = blockIdx.x * 32;
    for (int r0 = blockIdx.y * 256; r0 < min(GH, (int)(blockIdx.y + 1) * 256); r0 += 32) {
        const int r = r0 + lane;
        for (int c = w; c < 32; c += 8) {
            float s = 0.0f;
            if (v0 + c < V && r < GH) {
                const unsigned end = starts[v0 + c + 1];
                for (unsigned k = starts[v0 + c]; k < end; ++k) s += dih[(long long)order[k] * GH + r];
            }
            tile[c][lane] = s;
        }
        __syncthreads();
        for (int rr = w; rr < 32; rr += 8)
            if (r0 + rr < GH && v0 + lane < V) dw_ih[(long long)(r0 + rr) * V + v0 + lane] = tile[lane][rr];
        __syncthreads();
    }
}

// ---- clipping and optimizers ---------------------------------------------------

// The global norm of the gradients g (n) and the factor clipping to θ
// scales them by, in one launch. Each block adds its share of g² in f64
// into partial[blockIdx.x]; the last block to finish (tr_last_to_arrive
// on *arrivals) adds the partials in a fixed order (no
// atomics on the sum: the same gradients give the same norm) and writes
// the norm √Σ as f32 to norm[0] and the statistics, and to scale[0]
// θ / norm where θ > 0 and the norm is finite and above θ, else 1. The
// gradients themselves are left as they are: the update multiplies by
// scale[0] as it reads them (tr_sgd, tr_adam), or tr_scale_grads does
// first where something else reads them.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_norm(float* norm, float* scale, double* partial, unsigned* arrivals, const float* g, long long n, float theta,
        unsigned long long* stats, long long batch) {
    __shared__ double red[TR_THREADS];
    double s = 0.0;
    for (long long i = blockIdx.x * (long long)TR_THREADS + threadIdx.x; i < n;
         i += (long long)gridDim.x * TR_THREADS)
        s += (double)g[i] * (double)g[i];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int k = TR_THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) red[threadIdx.x] += red[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = red[0];
    if (!tr_last_to_arrive(arrivals, gridDim.x)) return;
    // Every block's partial, read by the whole block and added in a fixed
    // order (thread t: partials t, t + 256, …; then the tree above).
    s = 0.0;
    for (unsigned b = threadIdx.x; b < gridDim.x; b += TR_THREADS) s += __ldcg(partial + b);
    red[threadIdx.x] = s;
    __syncthreads();
    for (int k = TR_THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) red[threadIdx.x] += red[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    const float nv = (float)sqrt(red[0]);
    norm[0] = nv;
    tr_note(stats, 1, (double)nv, nv, batch);
    scale[0] = (theta > 0.0f && isfinite(nv) && nv > theta) ? theta / nv : 1.0f;
}

// g (n) *= scale[0]: a clip made effective in memory, for a reader of the
// gradients other than the updates.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_scale_grads(float* g, const float* scale, long long n) {
    const float f = scale[0];
    for (long long i = blockIdx.x * (long long)TR_THREADS + threadIdx.x; i < n;
         i += (long long)gridDim.x * TR_THREADS)
        g[i] *= f;
}

// The updates skip themselves (parameters and moments untouched) once a
// non-finite loss or norm is in `stats`. `p16` (null in f32 mode): the f16
// mirror of p (n), rewritten from the updated masters in the same pass.
// `scale` (null: none): a clip's factor (tr_norm), applied to each
// gradient as it is read, as if the gradients had been scaled first.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_sgd(float* p, __half* p16, const float* g, const float* scale, float lr, long long n,
       const unsigned long long* stats) {
    if (stats[2] != 0ull) return;
    const float f = scale ? scale[0] : 1.0f;
    for (long long i = blockIdx.x * (long long)TR_THREADS + threadIdx.x; i < n;
         i += (long long)gridDim.x * TR_THREADS) {
        const float pi = p[i] - lr * (scale ? g[i] * f : g[i]);
        p[i] = pi;
        if (p16) p16[i] = __float2half_rn(pi);
    }
}

// out (n) = in (n) rounded to f16 (the mirror after an upload).
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_to_f16(__half* out, const float* in, long long n) {
    for (long long i = blockIdx.x * (long long)TR_THREADS + threadIdx.x; i < n;
         i += (long long)gridDim.x * TR_THREADS)
        out[i] = __float2half_rn(in[i]);
}

// out (n) = in (n) as f32 (exact).
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_from_f16(float* out, const __half* in, long long n) {
    for (long long i = blockIdx.x * (long long)TR_THREADS + threadIdx.x; i < n;
         i += (long long)gridDim.x * TR_THREADS)
        out[i] = __half2float(in[i]);
}

// Adam as recur-core's adam_step (PyTorch's): the f64 scalars come from the
// host (step_size = lr / (1 − β1^t), bc2_sqrt = √(1 − β2^t)).
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_adam(float* p, __half* p16, float* m, float* v, const float* g, const float* scale, float step_size,
        float bc2_sqrt, float w1, float w2, float beta2, float eps, float wd, long long n,
        const unsigned long long* stats) {
    if (stats[2] != 0ull) return;
    const float f = scale ? scale[0] : 1.0f;
    for (long long i = blockIdx.x * (long long)TR_THREADS + threadIdx.x; i < n;
         i += (long long)gridDim.x * TR_THREADS) {
        float gi = scale ? g[i] * f : g[i];
        if (wd != 0.0f) gi = gi + wd * p[i];
        const float mi = m[i] + w1 * (gi - m[i]);
        const float vi = v[i] * beta2 + w2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        const float pi = p[i] - step_size * (mi / denom);
        p[i] = pi;
        if (p16) p16[i] = __float2half_rn(pi);
    }
}
