// The parameters of the recurrent-layer kernels (SIMT and tensor-core).
#pragma once
#include "simt_step.cuh"

// Layout shared with engine/src/launch.rs (RecParams, #[repr(C)]).
struct RecParams {
    const int* tokens;      // (T, B) token ids (< V), or null: dense input
    const float* pregates;  // (T, B, G·H) W_ih·x (no bias), or null
    const void* table;      // (V, G·H) W_ih transposed, weight storage
    const void* w_hh;       // (G·H, H)
    const void* b_ih;       // (G·H)
    const void* b_hh;       // (G·H)
    const float* h0;        // (B, H)
    const float* c0;        // (B, H), LSTM
    void* hs;               // out (T, B, H), activation storage
    float* h_last;          // out (B, H)
    float* c_last;          // out (B, H), LSTM; also the running cell state
    float* rh;              // scratch (B, H), GRU reset-before
    float* zb;              // scratch (B, H), GRU reset-before
    unsigned* barrier;      // 64 zeroed words per buffer set (see grid_sync)
    unsigned long long* xchg;  // rec_mma_flagged: (2, B, H/2) flagged words (flag_exchange.cuh)
    unsigned* flags;        // rec_mma: one flag per block instead of the grid barrier, or null
    int T, B, H;
    int units;              // hidden units per block
    int ldb;                // batch columns per chunk
    int t0;                 // rec_step: the step
    int phase;              // rec_step, GRU reset-before: 1 or 2; else 0
    int aux;                // rec_mma: n-tiles per chunk
    int tok_fixed;          // 1: every step reads tokens[0..B) (generation feeds)
    unsigned epoch;         // rec_mma_flagged, rec_mma with flags: flags of this launch are epoch + t + 1
};

// Where step t of a sequence reads and writes.
template <int C, typename A>
__device__ __forceinline__ StepIO rec_io(const RecParams& p, int t) {
    StepIO io;
    const size_t bh = (size_t)p.B * p.H;
    io.tok = p.tokens ? p.tokens + (p.tok_fixed ? (size_t)0 : (size_t)t * p.B) : nullptr;
    io.x_proj = p.tokens ? nullptr : p.pregates + (size_t)t * p.B * Cell<C>::G * p.H;
    io.h0 = t == 0 ? p.h0 : nullptr;
    io.h_prev = t == 0 ? nullptr : static_cast<const A*>(p.hs) + (size_t)(t - 1) * bh;
    io.h_out = static_cast<A*>(p.hs) + (size_t)t * bh;
    io.c_prev = t == 0 ? p.c0 : p.c_last;
    io.c_out = p.c_last;
    io.h_last = t == p.T - 1 ? p.h_last : nullptr;
    io.rh = p.rh;
    io.zb = p.zb;
    return io;
}

// ---- the input part of one (step, batch row, unit) -------------------------

// x[g] = input part of gate g (W_ih·x without b_ih) of unit j, batch row b,
// step t (token id `tok` for token input).
template <int C, typename W>
__device__ __forceinline__ void cl_x(float* x, const RecParams& p, int t, int b, int tok, int j) {
    constexpr int G = Cell<C>::G;
    const int H = p.H;
    if (p.tokens) {
        const W* col = static_cast<const W*>(p.table) + (size_t)tok * (G * H) + j;
#pragma unroll
        for (int g = 0; g < G; ++g) x[g] = to_f(col[g * H]);
    } else {
        const float* pre = p.pregates + ((size_t)t * p.B + b) * (G * H) + j;
#pragma unroll
        for (int g = 0; g < G; ++g) x[g] = pre[g * H];
    }
}

__device__ __forceinline__ int cl_token(const RecParams& p, int t, int b) {
    return p.tokens && t < p.T ? p.tokens[(size_t)t * p.B + b] : 0;
}
