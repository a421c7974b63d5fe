// One recurrent time step on CUDA cores, for the hidden units [u0, u0+un) of
// a block and every batch row: the recurrent product W_hh·h_prev for those
// units' gate rows, then the gate nonlinearities. Used by the persistent
// kernels (weight rows in shared memory), the per-step kernels (weight rows
// read from global memory) and the generation kernel.
#pragma once
#include "common.cuh"

// Most gate rows one block computes per product (registers: RMAX × 4
// accumulators per thread).
#define RMAX 16

// hT, the staged (K, B-chunk) transpose of h, has rows of ldb + 1 floats:
// staging writes 32 consecutive k of one batch row at once, and the odd
// stride puts them in 32 different banks. Its size is rounded to 16 bytes.
__host__ __device__ inline int ht_ld(int ldb) { return ldb + 1; }
__host__ __device__ inline int ht_floats(int K, int ldb) { return (K * (ldb + 1) + 3) / 4 * 4; }

// State a persistent kernel's thread keeps across steps for its first
// (unit, batch row) item, when the batch is one chunk: the input part of
// the step (prefetched before the previous step's barrier), b_hh, and the
// LSTM cell state. Saves dependent global loads on every step.
struct Carry {
    bool valid;   // this thread has such an item
    float x[4];   // input part (W_ih·x + b_ih) of each gate, this step
    float bhh[4]; // b_hh of each gate
    float c;      // LSTM cell state
    int u, b;     // the item: local unit u, batch row b
};

// Where a step reads and writes; every (B, H) array is row-major.
struct StepIO {
    const int* tok;       // (B) token ids of this step, or null (dense input)
    const float* x_proj;  // (B, G·H) W_ih·x of this step (dense input), or null
    const float* h0;      // (B, H) f32 state before the first step, or null
    const void* h_prev;   // (B, H) previous h, activation storage (when h0 is null)
    void* h_out;          // (B, H) new h, activation storage
    const float* c_prev;  // (B, H) LSTM cell state before the step
    float* c_out;         // (B, H) LSTM cell state after it (may be c_prev: own entries only)
    float* h_last;        // (B, H) copy of the new h as f32, or null
    float* rh;            // (B, H) GRU reset-before: r ⊙ h_prev (phase 1 writes, phase 2 reads)
    float* zb;            // (B, H) GRU reset-before: z (phase 1 writes, phase 2 reads)
};

// The cell's weights in their storage type W.
template <typename W> struct CellW {
    const W* table;  // (V, G·H) W_ih transposed (token input)
    const W* rows;   // gate rows of W_hh: local row r = g·un + u at
                     // rows + ((r / un)·gstride + r % un)·H
    int gstride;     // un for a packed shared-memory slice, H for W_hh itself
    const W* b_ih;   // (G·H)
    const W* b_hh;   // (G·H)
};

// pre[r·ldb + b] = Σ_k row_r[k] · hT[k·(ldb+1) + b] for r < R, b < nb, where
// row_r is local row r + roff of `w`. hT: (K, ldb+1) shared, ldb = 4·BGP
// with BGP a power of two ≤ 16. red: NWARPS·RMAX·ldb shared floats of scratch.
// Thread t owns batch columns 4·(t % BGP) .. +4 and every KS-th k from
// t / BGP; partial sums meet by warp shuffles, then across warps in `red`.
template <typename W>
__device__ void simt_rows_product(float* pre, float* red, const W* rows, int gstride, int un, int roff,
                                  int R, const float* hT, int ldb, int K, int nb) {
    const int bgp = ldb >> 2;
    const int ks = NTHREADS / bgp;
    const int bg = threadIdx.x & (bgp - 1);
    const int s = threadIdx.x / bgp;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    int off[RMAX];
#pragma unroll
    for (int r = 0; r < RMAX; ++r) {
        const int rr = (r < R ? r : 0) + roff;
        const int g = rr / un;
        off[r] = (g * gstride + (rr - g * un)) * K;
    }
    float acc[RMAX][4];
#pragma unroll
    for (int r = 0; r < RMAX; ++r)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[r][j] = 0.0f;

    const int ldh = ht_ld(ldb);
    for (int k = s; k < K; k += ks) {
        const float* hk = hT + k * ldh + 4 * bg;
        const float4 hv = make_float4(hk[0], hk[1], hk[2], hk[3]);
#pragma unroll
        for (int r = 0; r < RMAX; ++r) {
            if (r < R) {
                const float w = to_f(rows[off[r] + k]);
                acc[r][0] = fmaf(w, hv.x, acc[r][0]);
                acc[r][1] = fmaf(w, hv.y, acc[r][1]);
                acc[r][2] = fmaf(w, hv.z, acc[r][2]);
                acc[r][3] = fmaf(w, hv.w, acc[r][3]);
            }
        }
    }
    // Lanes with the same batch group hold partial sums over different k.
    const int cols = bgp == 1 ? min(nb, 4) : 4;  // block-uniform
#pragma unroll
    for (int r = 0; r < RMAX; ++r) {
        if (r < R) {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                if (j < cols) {
                    float v = acc[r][j];
                    for (int o = bgp; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                    acc[r][j] = v;
                }
            }
        }
    }
    if (lane < bgp) {
#pragma unroll
        for (int r = 0; r < RMAX; ++r)
            if (r < R)
                *reinterpret_cast<float4*>(red + (warp * RMAX + r) * ldb + 4 * bg) =
                    make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    }
    __syncthreads();
    RowWalk at(threadIdx.x, NTHREADS, nb);  // (row r, column b) of output o
    for (int o = threadIdx.x; o < R * nb; o += NTHREADS, at.next()) {
        const int r = at.r, b = at.c;
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < NWARPS; ++w) v += red[(w * RMAX + r) * ldb + b];
        pre[r * ldb + b] = v;
    }
    __syncthreads();
}

// Loads in flight per thread when staging (latency hiding: the loads of a
// round are issued before any is stored).
#define STAGE_UNROLL 16

// hT[k·(ldb+1) + b] = src row b0+b, element k, for b < nb, k < K, as f32. The
// source is src_f32 (f32, through L2), else h0 (f32, rounded to A), else
// src (A, through L2).
template <typename A>
__device__ void load_hT(float* hT, int ldb, const float* h0, const void* src, const float* src_f32, int b0,
                        int nb, int K) {
    const int n = nb * K;
    const size_t first = (size_t)b0 * K;
    RowWalk at(threadIdx.x, NTHREADS, K);  // (row b, column k) of element i
    for (int base = 0; base < n; base += NTHREADS * STAGE_UNROLL) {
        float v[STAGE_UNROLL];
#pragma unroll
        for (int j = 0; j < STAGE_UNROLL; ++j) {
            const int i = base + j * NTHREADS + threadIdx.x;
            v[j] = 0.0f;
            if (i < n) {
                if (src_f32) v[j] = ld_cg(src_f32 + first + i);
                else if (h0) v[j] = stored<A>(h0[first + i]);
                else v[j] = ld_cg(static_cast<const A*>(src) + first + i);
            }
        }
#pragma unroll
        for (int j = 0; j < STAGE_UNROLL; ++j) {
            const int i = base + j * NTHREADS + threadIdx.x;
            if (i < n) hT[at.c * (ldb + 1) + at.r] = v[j];
            at.next();
        }
    }
}

// h_prev of unit j, batch row b, as the step sees it.
template <typename A> __device__ __forceinline__ float h_prev_of(const StepIO& io, int b, int j, int H) {
    const size_t at = (size_t)b * H + j;
    return io.h0 ? stored<A>(io.h0[at]) : ld_cg(static_cast<const A*>(io.h_prev) + at);
}

// x[g] = input part of gate g (W_ih·x + b_ih) of unit u0 + u, batch row b.
template <int C, typename W>
__device__ __forceinline__ void input_part(float* x, const StepIO& io, const CellW<W>& w, int u, int b, int u0,
                                           int H, int g_first, int g_end) {
    constexpr int G = Cell<C>::G;
    const int j = u0 + u;
#pragma unroll
    for (int g = 0; g < G; ++g) {
        if (g < g_first || g >= g_end) continue;  // compile-time indices: x stays in registers
        const float xin = io.tok ? to_f(w.table[(size_t)io.tok[b] * (G * H) + g * H + j])
                                 : io.x_proj[(size_t)b * (G * H) + g * H + j];
        x[g] = xin + to_f(w.b_ih[g * H + j]);
    }
}

// One step (or one phase of a GRU reset-before step: phase 1 = r, z;
// phase 2 = n and h; phase 0 = the whole step of any other cell) for units
// [u0, u0+un) and all B rows, in batch chunks of ldb columns.
// Shared memory: hT (ht_floats(H, ldb)), red (NWARPS·RMAX·ldb), pre
// (RMAX·ldb) floats. `carry`: the persistent kernels' per-thread state, or null.
template <int C, typename W, typename A>
__device__ void simt_step(const StepIO& io, const CellW<W>& w, int phase, int B, int H, int u0, int un,
                          int ldb, float* hT, float* red, float* pre, Carry* carry) {
    constexpr int G = Cell<C>::G;
    const int R = phase == 0 ? G * un : (phase == 1 ? 2 * un : un);
    const int roff = phase == 2 ? 2 * un : 0;
    const int g_first = phase == 2 ? 2 : 0;
    const int g_end = phase == 1 ? 2 : G;
    for (int b0 = 0; b0 < B; b0 += ldb) {
        const int nb = min(ldb, B - b0);
        __syncthreads();  // the previous chunk's readers of hT / pre are done
        if (un > 0) {
            if (phase == 2) load_hT<A>(hT, ldb, nullptr, nullptr, io.rh, b0, nb, H);
            else load_hT<A>(hT, ldb, io.h0, io.h_prev, nullptr, b0, nb, H);
        }
        __syncthreads();
        if (un <= 0) continue;
        // The input part of each thread's first (unit, row) item is loaded
        // before the product, so its latency hides behind it.
        const int items = un * nb;
        const bool carried = carry && carry->valid;  // then nb == B and this thread's item is < items
        float x0[4] = {0.f, 0.f, 0.f, 0.f};
        if (carried) {
#pragma unroll
            for (int g = 0; g < 4; ++g) x0[g] = carry->x[g];
        }
        RowWalk item(threadIdx.x, NTHREADS, nb);  // (unit u, column bl) of item o
        if (!carried && threadIdx.x < items) input_part<C, W>(x0, io, w, item.r, b0 + item.c, u0, H, g_first, g_end);
        simt_rows_product<W>(pre, red, w.rows, w.gstride, un, roff, R, hT, ldb, H, nb);
        for (int o = threadIdx.x; o < items; o += NTHREADS, item.next()) {
            const int u = item.r, bl = item.c, b = b0 + bl, j = u0 + u;
            const size_t bj = (size_t)b * H + j;
            float x[4] = {x0[0], x0[1], x0[2], x0[3]}, hg[4] = {0.f, 0.f, 0.f, 0.f};
            if (o != threadIdx.x) input_part<C, W>(x, io, w, u, b, u0, H, g_first, g_end);
            const bool mine = carried && o == threadIdx.x;
#pragma unroll
            for (int g = 0; g < G; ++g)
                if (g >= g_first && g < g_end)
                    hg[g] = pre[((g - g_first) * un + u) * ldb + bl] + (mine ? carry->bhh[g] : to_f(w.b_hh[g * H + j]));
            if (phase == 1) {
                const float r = sigmoid_f(x[0] + hg[0]);
                io.zb[bj] = sigmoid_f(x[1] + hg[1]);
                io.rh[bj] = r * hT[j * (ldb + 1) + bl];
                continue;
            }
            const float hp = phase == 2 ? h_prev_of<A>(io, b, j, H) : hT[j * (ldb + 1) + bl];
            const float cp = C == LSTM ? (mine ? carry->c : io.c_prev[bj]) : 0.0f;
            const float z = phase == 2 ? io.zb[bj] : 0.0f;
            float c = 0.0f;
            const float h = cell_h<C>(x, hg, hp, cp, z, &c);
            static_cast<A*>(io.h_out)[bj] = from_f<A>(h);
            if (io.h_last) io.h_last[bj] = stored<A>(h);
            if (C == LSTM) {
                if (mine) carry->c = c;
                if (!mine || io.h_last) io.c_out[bj] = c;  // a carried c is stored at the last step only
            }
        }
    }
}

// Loads the carry's input part for the step `io` describes (all gates).
template <int C, typename W>
__device__ __forceinline__ void carry_input(Carry* carry, const StepIO& io, const CellW<W>& w, int B, int H, int u0) {
    if (carry->valid) input_part<C, W>(carry->x, io, w, carry->u, carry->b, u0, H, 0, Cell<C>::G);
}

// Sets up the thread's carry at the first step of a persistent kernel:
// valid when the batch is one chunk and the thread has an item.
template <int C, typename W>
__device__ void carry_init(Carry* carry, const StepIO& io, const CellW<W>& w, int B, int H, int u0, int un, int ldb) {
    constexpr int G = Cell<C>::G;
    carry->valid = B <= ldb && (int)threadIdx.x < un * B;
    if (!carry->valid) return;
    const int u = threadIdx.x / B, b = threadIdx.x - u * B, j = u0 + u;
    carry->u = u;
    carry->b = b;
#pragma unroll
    for (int g = 0; g < 4; ++g) carry->bhh[g] = g < G ? to_f(w.b_hh[g * H + j]) : 0.0f;
    carry->c = C == LSTM ? io.c_prev[(size_t)b * H + j] : 0.0f;
    carry_input<C, W>(carry, io, w, B, H, u0);
}

// Shared memory of simt_step, in floats.
__host__ __device__ inline int simt_step_smem_floats(int H, int ldb) {
    return ht_floats(H, ldb) + NWARPS * RMAX * ldb + RMAX * ldb;
}
