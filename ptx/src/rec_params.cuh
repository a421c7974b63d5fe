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
    int T, B, H;
    int units;              // hidden units per block
    int ldb;                // batch columns per chunk
    int t0;                 // rec_step: the step
    int phase;              // rec_step, GRU reset-before: 1 or 2; else 0
    int aux;                // rec_mma: n-tiles per chunk
    int tok_fixed;          // 1: every step reads tokens[0..B) (generation feeds)
    int pad;
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
