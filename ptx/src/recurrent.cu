// Recurrent layers on CUDA cores, f32 (weights and h in f32) and f16
// (weights and h stored as f16; sums, c and gate pre-activations in f32):
//
// - rec_persist_*: the whole T-step sequence in one cooperative launch. Each
//   block keeps the W_hh rows of its hidden units in shared memory for all
//   steps; one grid-wide barrier per step (two for GRU reset-before).
// - rec_step_*: one step per launch (one phase for GRU reset-before), W_hh
//   read from global memory: the fallback when the weights do not fit on chip.
#include "rec_params.cuh"

template <int C, typename W, typename A>
__device__ void rec_persistent(const RecParams& p) {
    DYNAMIC_SHARED(float4, smem4);
    float* smem = reinterpret_cast<float*>(smem4);
    constexpr int G = Cell<C>::G;
    const int H = p.H;
    const int u0 = blockIdx.x * p.units;
    const int un = min(p.units, H - u0);
    // This block's gate rows of W_hh, packed: local row g·un + u.
    W* wsm = reinterpret_cast<W*>(smem);
    const int w_floats = (int)(((size_t)G * p.units * H * sizeof(W) + 15) / 16 * 4);
    float* hT = smem + w_floats;
    float* red = hT + ht_floats(H, p.ldb);
    float* pre = red + NWARPS * RMAX * p.ldb;
    const W* w_hh = static_cast<const W*>(p.w_hh);
    for (int i = threadIdx.x; i < G * un * H; i += NTHREADS) {
        const int r = i / H, k = i - r * H;
        const int g = r / un, u = r - g * un;
        wsm[i] = w_hh[((size_t)g * H + u0 + u) * H + k];
    }
    CellW<W> w;
    w.table = static_cast<const W*>(p.table);
    w.rows = wsm;
    w.gstride = un;
    w.b_ih = static_cast<const W*>(p.b_ih);
    w.b_hh = static_cast<const W*>(p.b_hh);
    unsigned gen = barrier_start(p.barrier);
    Carry carry;
    carry_init<C, W>(&carry, rec_io<C, A>(p, 0), w, p.B, H, u0, un, p.ldb);
    for (int t = 0; t < p.T; ++t) {
        const StepIO io = rec_io<C, A>(p, t);
        if (C == GRU_BEFORE) {
            simt_step<C, W, A>(io, w, 1, p.B, H, u0, un, p.ldb, hT, red, pre, &carry);
            grid_sync(p.barrier, gen);
            simt_step<C, W, A>(io, w, 2, p.B, H, u0, un, p.ldb, hT, red, pre, &carry);
        } else {
            simt_step<C, W, A>(io, w, 0, p.B, H, u0, un, p.ldb, hT, red, pre, &carry);
        }
        if (t + 1 < p.T) {
            // The next step's input part does not depend on h: load it now,
            // its latency hides behind the barrier.
            carry_input<C, W>(&carry, rec_io<C, A>(p, t + 1), w, p.B, H, u0);
            grid_sync(p.barrier, gen);
        }
    }
}

template <int C, typename W, typename A>
__device__ void rec_step(const RecParams& p) {
    DYNAMIC_SHARED(float4, smem4);
    float* smem = reinterpret_cast<float*>(smem4);
    const int H = p.H;
    const int u0 = blockIdx.x * p.units;
    const int un = min(p.units, H - u0);
    float* hT = smem;
    float* red = hT + ht_floats(H, p.ldb);
    float* pre = red + NWARPS * RMAX * p.ldb;
    CellW<W> w;
    w.table = static_cast<const W*>(p.table);
    w.rows = static_cast<const W*>(p.w_hh) + (size_t)u0 * H;
    w.gstride = H;
    w.b_ih = static_cast<const W*>(p.b_ih);
    w.b_hh = static_cast<const W*>(p.b_hh);
    const StepIO io = rec_io<C, A>(p, p.t0);
    simt_step<C, W, A>(io, w, p.phase, p.B, H, u0, un, p.ldb, hT, red, pre, nullptr);
}

#define REC_KERNELS(NAME, C)                                                                          \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1) rec_persist_f32_##NAME(RecParams p) {      \
        rec_persistent<C, float, float>(p);                                                           \
    }                                                                                                 \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1) rec_persist_f16_##NAME(RecParams p) {      \
        rec_persistent<C, __half, __half>(p);                                                         \
    }                                                                                                 \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1) rec_step_f32_##NAME(RecParams p) {         \
        rec_step<C, float, float>(p);                                                                 \
    }                                                                                                 \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1) rec_step_f16_##NAME(RecParams p) {         \
        rec_step<C, __half, __half>(p);                                                               \
    }

REC_KERNELS(rnn_tanh, RNN_TANH)
REC_KERNELS(rnn_relu, RNN_RELU)
REC_KERNELS(gru_before, GRU_BEFORE)
REC_KERNELS(gru_after, GRU_AFTER)
REC_KERNELS(lstm, LSTM)
