// Generation with the loop on the device: one cooperative launch feeds the
// prefix through the cell, then N times computes the logits, samples a token
// (greedy or with a temperature) and feeds it back; the host waits once.
//
// Block b owns hidden units [b·U, b·U+U) (their W_hh rows in shared memory)
// and vocabulary rows [b·VR, b·VR+VR) of the output layer (W_d rows in
// shared memory). Per generated token: cell step → barrier → its logits
// rows → barrier → every block samples the same token from all logits
// (identical data and code, so identical result: no third barrier).
// GRU reset-before adds one barrier between its two phases.
#include "simt_step.cuh"
#include "sample.cuh"

// Layout shared with engine/src/launch.rs (GenParams, #[repr(C)]).
struct GenParams {
    const int* prefix;      // (P, B) token ids
    const void* table;      // (V, G·H) W_ih transposed
    const void* w_hh;       // (G·H, H)
    const void* b_ih;       // (G·H)
    const void* b_hh;       // (G·H)
    const void* w_d;        // (V, H) output layer
    const void* b_d;        // (V)
    const float* h0;        // (B, H)
    const float* c0;        // (B, H), LSTM
    int* out;               // out (N, B) generated ids (V: unusable logits)
    float* logits;          // scratch (B, V)
    void* hx;               // scratch (2, B, H) activation storage, h ping-pong
    float* h_last;          // out (B, H) h after the last cell step
    float* c_last;          // out (B, H) LSTM; also the running cell state
    float* rh;              // scratch (B, H), GRU reset-before
    float* zb;              // scratch (B, H), GRU reset-before
    unsigned* barrier;      // 64 zeroed words (see grid_sync)
    unsigned long long seed;
    float inv_temp;         // 0: greedy
    int P, N, B, H, V;
    int units, vrows, ldb;
    int opts;  // the cluster kernels' (gen_cluster_params.cuh); unused here
};

template <int C, typename W, typename A>
__device__ void generate(const GenParams& p) {
    DYNAMIC_SHARED(float4, smem4);
    float* smem = reinterpret_cast<float*>(smem4);
    constexpr int G = Cell<C>::G;
    const int H = p.H, B = p.B, V = p.V;
    const int u0 = blockIdx.x * p.units;
    const int un = max(0, min(p.units, H - u0));
    const int v0 = blockIdx.x * p.vrows;
    const int vn = max(0, min(p.vrows, V - v0));
    W* wsm = reinterpret_cast<W*>(smem);
    const int w_floats = (int)(((size_t)G * p.units * H * sizeof(W) + 15) / 16 * 4);
    W* dsm = reinterpret_cast<W*>(smem + w_floats);
    const int d_floats = (int)(((size_t)p.vrows * H * sizeof(W) + 15) / 16 * 4);
    float* hT = smem + w_floats + d_floats;
    float* red = hT + ht_floats(H, p.ldb);
    float* pre = red + NWARPS * RMAX * p.ldb;
    int* tok = reinterpret_cast<int*>(pre + RMAX * p.ldb);  // (B) ids fed to the next step

    const W* w_hh = static_cast<const W*>(p.w_hh);
    for (int i = threadIdx.x; i < G * un * H; i += NTHREADS) {
        const int r = i / H, k = i - r * H;
        const int g = r / un, u = r - g * un;
        wsm[i] = w_hh[((size_t)g * H + u0 + u) * H + k];
    }
    const W* w_d = static_cast<const W*>(p.w_d);
    for (int i = threadIdx.x; i < vn * H; i += NTHREADS) dsm[i] = w_d[(size_t)v0 * H + i];
    const W* b_d = static_cast<const W*>(p.b_d);
    CellW<W> w;
    w.table = static_cast<const W*>(p.table);
    w.rows = wsm;
    w.gstride = un;
    w.b_ih = static_cast<const W*>(p.b_ih);
    w.b_hh = static_cast<const W*>(p.b_hh);
    unsigned gen = barrier_start(p.barrier);
    Carry carry;
    bool carry_ready = false;
    const size_t bh = (size_t)B * H;
    const int steps = p.P + p.N - 1;
    for (int s = 0; s < steps; ++s) {
        StepIO io;
        io.tok = s < p.P ? p.prefix + (size_t)s * B : tok;
        io.x_proj = nullptr;
        io.h0 = s == 0 ? p.h0 : nullptr;
        io.h_prev = s == 0 ? nullptr : static_cast<const A*>(p.hx) + (size_t)((s - 1) & 1) * bh;
        io.h_out = static_cast<A*>(p.hx) + (size_t)(s & 1) * bh;
        io.c_prev = s == 0 ? p.c0 : p.c_last;
        io.c_out = p.c_last;
        io.h_last = s == steps - 1 ? p.h_last : nullptr;
        io.rh = p.rh;
        io.zb = p.zb;
        if (!carry_ready) {
            carry_init<C, W>(&carry, io, w, B, H, u0, un, p.ldb);
            carry_ready = true;
        } else {
            carry_input<C, W>(&carry, io, w, B, H, u0);  // the token is known only now
        }
        if (C == GRU_BEFORE) {
            simt_step<C, W, A>(io, w, 1, B, H, u0, un, p.ldb, hT, red, pre, &carry);
            grid_sync(p.barrier, gen);
            simt_step<C, W, A>(io, w, 2, B, H, u0, un, p.ldb, hT, red, pre, &carry);
        } else {
            simt_step<C, W, A>(io, w, 0, B, H, u0, un, p.ldb, hT, red, pre, &carry);
        }
        grid_sync(p.barrier, gen);  // h_s complete
        if (s < p.P - 1) continue;  // still reading the prefix
        // This block's logits rows.
        for (int b0 = 0; b0 < B; b0 += p.ldb) {
            const int nb = min(p.ldb, B - b0);
            __syncthreads();
            if (vn > 0) load_hT<A>(hT, p.ldb, nullptr, io.h_out, nullptr, b0, nb, H);
            __syncthreads();
            if (vn <= 0) continue;
            simt_rows_product<W>(pre, red, dsm, 0, vn, 0, vn, hT, p.ldb, H, nb);
            for (int o = threadIdx.x; o < vn * nb; o += NTHREADS) {
                const int r = o / nb, b = o - r * nb;
                p.logits[(size_t)(b0 + b) * V + v0 + r] = pre[r * p.ldb + b] + to_f(b_d[v0 + r]);
            }
        }
        grid_sync(p.barrier, gen);  // logits complete
        const int index = s - (p.P - 1);
        for (int b = 0; b < B; ++b) {
            const int t = block_sample(p.logits + (size_t)b * V, V, p.inv_temp,
                                       splitmix_nth(row_seed(p.seed, b), index));
            if (threadIdx.x == 0) {
                tok[b] = t == V ? 0 : t;
                if (blockIdx.x == 0) p.out[(size_t)index * B + b] = t;
            }
        }
        __syncthreads();
    }
}

#define GEN_KERNELS(NAME, C)                                                                    \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1) gen_persist_f32_##NAME(GenParams p) { \
        generate<C, float, float>(p);                                                           \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1) gen_persist_f16_##NAME(GenParams p) { \
        generate<C, __half, __half>(p);                                                         \
    }

GEN_KERNELS(rnn_tanh, RNN_TANH)
GEN_KERNELS(rnn_relu, RNN_RELU)
GEN_KERNELS(gru_before, GRU_BEFORE)
GEN_KERNELS(gru_after, GRU_AFTER)
GEN_KERNELS(lstm, LSTM)
