// Training kernels, f32: the recurrent layer's forward with the cache its
// backward needs, backward through time for every cell, the output layer's
// softmax cross-entropy and its gradient, the weight-gradient products after
// the time loop, global-norm clipping, SGD and Adam. Self-contained (the
// formulas and their operation order follow recur-core's cells); every
// kernel runs 256-thread blocks, as the engine launches them.

#define TR_THREADS 256

// Cell kinds, as recur_core::CellKind.
#define TR_RNN_TANH 0
#define TR_RNN_RELU 1
#define TR_GRU_BEFORE 2
#define TR_GRU_AFTER 3
#define TR_LSTM 4

__device__ __forceinline__ float tr_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float tr_relu(float x) { return x < 0.0f ? 0.0f : x; }

// ---- matrix product ---------------------------------------------------------
// C(m, n) = [C(m, n) +] Σ_k A(m, k)·B(k, n) [+ bias(n)] with A(m, k) at
// a[m·sam + k·sak], B(k, n) at b[k·sbk + n·sbn], C(m, n) at c[m·ldc + n]:
// strides express every transpose the training needs. 64×64 tiles of C,
// 16-wide k slices through shared memory, 4×4 outputs per thread.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_gemm(float* c, const float* a, const float* b, const float* bias, int M, int N, int K,
        long long sam, long long sak, long long sbk, long long sbn, int ldc, int accumulate) {
    __shared__ float as[16][65];
    __shared__ float bs[16][65];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int m0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
    float acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += 16) {
        for (int e = threadIdx.x; e < 16 * 64; e += TR_THREADS) {
            const int kk = e / 64, mm = e % 64;
            const int m = m0 + mm, k = k0 + kk;
            as[kk][mm] = (m < M && k < K) ? a[m * sam + k * sak] : 0.0f;
            const int n = n0 + mm;
            bs[kk][mm] = (n < N && k < K) ? b[k * sbk + n * sbn] : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < 16; ++kk) {
            float av[4], bv[4];
            for (int i = 0; i < 4; ++i) av[i] = as[kk][ty + 16 * i];
            for (int j = 0; j < 4; ++j) bv[j] = bs[kk][tx + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx + 16 * j;
            if (n >= N) continue;
            float v = acc[i][j];
            if (bias) v += bias[n];
            float* out = c + (long long)m * ldc + n;
            *out = accumulate ? *out + v : v;
        }
    }
}

// ---- forward ----------------------------------------------------------------

// xp (N, G·H) = W_ih[:, tok[n]] + b_ih: the input part of every gate for the
// N = T·B tokens (the product of a one-hot input is a column gather).
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_gather(float* xp, const float* w_ih, const float* b_ih, const unsigned* tok, int N, int GH, int V) {
    const long long total = (long long)N * GH;
    for (long long e = blockIdx.x * (long long)TR_THREADS + threadIdx.x; e < total;
         e += (long long)gridDim.x * TR_THREADS) {
        const int n = (int)(e / GH), r = (int)(e % GH);
        xp[e] = w_ih[(long long)r * V + tok[n]] + b_ih[r];
    }
}

// One step's gates for B rows from xp (B, G·H), hp = W_hh·h_prev (B, G·H) and
// b_hh. Writes h (B, H), the post-activation gates (B, G·H) and aux (B, H):
// W_hn·h + b_hn (GRU reset-after), tanh(c) (LSTM), r⊙h_prev (GRU
// reset-before, phase 1). GRU reset-before runs twice: phase 1 (r, z, r⊙h)
// after the r,z-block product, phase 2 (n, h) after the n-block product of
// r⊙h. c_prev / c: (B, H), LSTM only.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_cell_fwd(float* h, float* c, float* gates, float* aux, const float* xp, const float* hp,
            const float* b_hh, const float* h_prev, const float* c_prev, int cell, int phase, int B,
            int H) {
    const int total = B * H;
    for (int e = blockIdx.x * TR_THREADS + threadIdx.x; e < total; e += gridDim.x * TR_THREADS) {
        const int bi = e / H, j = e % H;
        const int G = (cell <= TR_RNN_RELU) ? 1 : (cell == TR_LSTM ? 4 : 3);
        const float* x = xp + (long long)bi * G * H;
        const float* p = hp + (long long)bi * G * H;
        float* g = gates + (long long)bi * G * H;
        const float hprev = h_prev[e];
        if (cell == TR_RNN_TANH || cell == TR_RNN_RELU) {
            const float pre = x[j] + p[j] + b_hh[j];
            const float v = cell == TR_RNN_TANH ? tanhf(pre) : tr_relu(pre);
            g[j] = v;
            h[e] = v;
        } else if (cell == TR_GRU_AFTER) {
            const float r = tr_sigmoid(x[j] + (p[j] + b_hh[j]));
            const float z = tr_sigmoid(x[H + j] + (p[H + j] + b_hh[H + j]));
            const float hn = p[2 * H + j] + b_hh[2 * H + j];
            const float n = tanhf(x[2 * H + j] + r * hn);
            g[j] = r;
            g[H + j] = z;
            g[2 * H + j] = n;
            aux[e] = hn;
            h[e] = n + z * (hprev - n);
        } else if (cell == TR_GRU_BEFORE) {
            if (phase == 1) {
                const float r = tr_sigmoid(x[j] + (p[j] + b_hh[j]));
                const float z = tr_sigmoid(x[H + j] + (p[H + j] + b_hh[H + j]));
                g[j] = r;
                g[H + j] = z;
                aux[e] = r * hprev;
            } else {
                const float z = g[H + j];
                const float n = tanhf(x[2 * H + j] + (p[2 * H + j] + b_hh[2 * H + j]));
                g[2 * H + j] = n;
                h[e] = n + z * (hprev - n);
            }
        } else {  // LSTM i, f, g, o
            const float i = tr_sigmoid(x[j] + p[j] + b_hh[j]);
            const float f = tr_sigmoid(x[H + j] + p[H + j] + b_hh[H + j]);
            const float gg = tanhf(x[2 * H + j] + p[2 * H + j] + b_hh[2 * H + j]);
            const float o = tr_sigmoid(x[3 * H + j] + p[3 * H + j] + b_hh[3 * H + j]);
            const float cc = f * c_prev[e] + i * gg;
            const float tc = tanhf(cc);
            g[j] = i;
            g[H + j] = f;
            g[2 * H + j] = gg;
            g[3 * H + j] = o;
            c[e] = cc;
            aux[e] = tc;
            h[e] = o * tc;
        }
    }
}

// ---- backward through one step -----------------------------------------------
// dh_in (B, H): the gradient on this step's h (output share + recurrent share
// from the step after). Writes the pre-activation gradients of the input
// side dih (B, G·H) and of the recurrent side dhh (B, G·H), and adds to
// dh_out (B, H) the direct share of the gradient on h_prev (GRU only; the
// product share dhh·W_hh is added by a matrix product after). dc (B, H),
// LSTM: in the gradient on c from the step after, out the one on c_prev.
// GRU reset-before: phase 2 first (n, z blocks), then the n-block
// product drh = dn·W_hn, then phase 1 with drh in `drh` (r, z blocks;
// dh_out += dh'·z + drh·r).
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_cell_bwd(float* dih, float* dhh, float* dh_out, float* dc, const float* dh_in, const float* drh,
            const float* gates, const float* aux, const float* h_prev, const float* c_prev, int cell,
            int phase, int B, int H) {
    const int total = B * H;
    for (int e = blockIdx.x * TR_THREADS + threadIdx.x; e < total; e += gridDim.x * TR_THREADS) {
        const int bi = e / H, j = e % H;
        const int G = (cell <= TR_RNN_RELU) ? 1 : (cell == TR_LSTM ? 4 : 3);
        const float* g = gates + (long long)bi * G * H;
        float* di = dih + (long long)bi * G * H;
        float* dr_ = dhh + (long long)bi * G * H;
        const float d = dh_in[e];
        if (cell == TR_RNN_TANH || cell == TR_RNN_RELU) {
            const float hv = g[j];
            const float dp = cell == TR_RNN_TANH ? d * (1.0f - hv * hv) : (hv > 0.0f ? d : 0.0f);
            di[j] = dp;
            dr_[j] = dp;
        } else if (cell == TR_GRU_AFTER) {
            const float r = g[j], z = g[H + j], n = g[2 * H + j];
            const float dnp = d * (1.0f - z) * (1.0f - n * n);
            const float dz = d * (h_prev[e] - n) * z * (1.0f - z);
            const float drr = dnp * aux[e] * r * (1.0f - r);
            di[j] = drr;
            di[H + j] = dz;
            di[2 * H + j] = dnp;
            dr_[j] = drr;
            dr_[H + j] = dz;
            dr_[2 * H + j] = dnp * r;
            dh_out[e] += d * z;
        } else if (cell == TR_GRU_BEFORE) {
            const float r = g[j], z = g[H + j], n = g[2 * H + j];
            const float hp = h_prev[e];
            if (phase == 2) {
                const float dnp = d * (1.0f - z) * (1.0f - n * n);
                const float dz = d * (hp - n) * z * (1.0f - z);
                di[H + j] = dz;
                dr_[H + j] = dz;
                di[2 * H + j] = dnp;
                dr_[2 * H + j] = dnp;
            } else {
                const float drr = drh[e] * hp * r * (1.0f - r);
                di[j] = drr;
                dr_[j] = drr;
                dh_out[e] += d * z + drh[e] * r;
            }
        } else {  // LSTM
            const float i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
            const float tc = aux[e];
            const float dcj = dc[e] + d * o * (1.0f - tc * tc);
            di[j] = dcj * gg * i * (1.0f - i);
            di[H + j] = dcj * c_prev[e] * f * (1.0f - f);
            di[2 * H + j] = dcj * i * (1.0f - gg * gg);
            di[3 * H + j] = d * tc * o * (1.0f - o);
            for (int q = 0; q < 4; ++q) dr_[q * H + j] = di[q * H + j];
            dc[e] = dcj * f;
        }
    }
}

// ---- output layer -----------------------------------------------------------

// One block per row of the (N, V) logits: the row's cross-entropy against
// its target into row_loss, and the logits replaced by the gradient of the
// mean loss, (softmax − onehot) / N.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_xent(float* logits, float* row_loss, const unsigned* targets, int N, int V) {
    __shared__ float red[TR_THREADS];
    const int row = blockIdx.x;
    float* x = logits + (long long)row * V;
    float mx = -__int_as_float(0x7f800000);
    for (int v = threadIdx.x; v < V; v += TR_THREADS) mx = fmaxf(mx, x[v]);
    red[threadIdx.x] = mx;
    __syncthreads();
    for (int s = TR_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + s]);
        __syncthreads();
    }
    mx = red[0];
    __syncthreads();
    float sum = 0.0f;
    for (int v = threadIdx.x; v < V; v += TR_THREADS) sum += expf(x[v] - mx);
    red[threadIdx.x] = sum;
    __syncthreads();
    for (int s = TR_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    sum = red[0];
    const unsigned t = targets[row];
    if (threadIdx.x == 0) row_loss[row] = logf(sum) - (x[t] - mx);
    __syncthreads();
    const float inv_n = 1.0f / (float)N;
    for (int v = threadIdx.x; v < V; v += TR_THREADS) {
        const float p = expf(x[v] - mx) / sum;
        x[v] = (p - (v == (int)t ? 1.0f : 0.0f)) * inv_n;
    }
}

// out[0] = mean of v (N), accumulated in f64 by one block.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_mean(float* out, const float* v, int N) {
    __shared__ double red[TR_THREADS];
    double s = 0.0;
    for (int i = threadIdx.x; i < N; i += TR_THREADS) s += (double)v[i];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int k = TR_THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) red[threadIdx.x] += red[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = (float)(red[0] / (double)N);
}

// out (C) [+]= column sums of in (R, C) with row stride ld (bias gradients).
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_colsum(float* out, const float* in, int R, int C, int ld, int accumulate) {
    const int col = blockIdx.x * TR_THREADS + threadIdx.x;
    if (col >= C) return;
    float s = 0.0f;
    for (int r = 0; r < R; ++r) s += in[(long long)r * ld + col];
    out[col] = accumulate ? out[col] + s : s;
}

// dW_ih (G·H, V) += the input-side gradients dih (N, G·H) scattered to the
// columns of the tokens (the product with one-hot inputs).
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_scatter(float* dw_ih, const float* dih, const unsigned* tok, int N, int GH, int V) {
    const long long total = (long long)N * GH;
    for (long long e = blockIdx.x * (long long)TR_THREADS + threadIdx.x; e < total;
         e += (long long)gridDim.x * TR_THREADS) {
        const int n = (int)(e / GH), r = (int)(e % GH);
        atomicAdd(dw_ih + (long long)r * V + tok[n], dih[e]);
    }
}

// ---- clipping and optimizers ---------------------------------------------------

// acc[0] += Σ g² over n elements (f64 accumulation; acc zeroed before).
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_sumsq(double* acc, const float* g, long long n) {
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
    if (threadIdx.x == 0) atomicAdd(acc, red[0]);
}

// The global norm √acc (as f32) into norm[0] (block 0); with theta > 0 the
// gradients are scaled by θ / norm when the norm is finite and above θ.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_clip(float* g, float* norm, const double* acc, float theta, long long n) {
    const float nv = (float)sqrt(acc[0]);
    if (blockIdx.x == 0 && threadIdx.x == 0) norm[0] = nv;
    if (!(theta > 0.0f) || !(isfinite(nv) && nv > theta)) return;
    const float scale = theta / nv;
    for (long long i = blockIdx.x * (long long)TR_THREADS + threadIdx.x; i < n;
         i += (long long)gridDim.x * TR_THREADS)
        g[i] *= scale;
}

extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_sgd(float* p, const float* g, float lr, long long n) {
    for (long long i = blockIdx.x * (long long)TR_THREADS + threadIdx.x; i < n;
         i += (long long)gridDim.x * TR_THREADS)
        p[i] -= lr * g[i];
}

// Adam as recur-core's adam_step (PyTorch's): the f64 scalars come from the
// host (step_size = lr / (1 − β1^t), bc2_sqrt = √(1 − β2^t)).
extern "C" __global__ void __launch_bounds__(TR_THREADS)
tr_adam(float* p, float* m, float* v, const float* g, float step_size, float bc2_sqrt, float w1,
        float w2, float beta2, float eps, float wd, long long n) {
    for (long long i = blockIdx.x * (long long)TR_THREADS + threadIdx.x; i < n;
         i += (long long)gridDim.x * TR_THREADS) {
        float gi = g[i];
        if (wd != 0.0f) gi = gi + wd * p[i];
        const float mi = m[i] + w1 * (gi - m[i]);
        const float vi = v[i] * beta2 + w2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] -= step_size * (mi / denom);
    }
}
