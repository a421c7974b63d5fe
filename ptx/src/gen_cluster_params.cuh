// The parameters of the cluster generation kernels (generate_cluster.cu,
// generate_cluster_regs.cu) and their token gather.
#pragma once
#include "common.cuh"

// Layout as GenParams in generate.cu and engine/src/params.rs (#[repr(C)]).
struct GenClusterParams {
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
    float* logits;          // out (B, V) logits of the last generated token
    void* hx;               // unused here
    float* h_last;          // out (B, H) h after the last cell step
    float* c_last;          // out (B, H) LSTM
    float* rh;              // unused here
    float* zb;              // unused here
    unsigned* barrier;      // unused here
    unsigned long long seed;
    float inv_temp;         // 0: greedy
    int P, N, B, H, V;
    int units, vrows, ldb;  // U, VR, BC
    int opts;               // GEN_AHEAD | GEN_BLOCK_SENDS | GEN_SPLIT_ARGMAX
};

// GenClusterParams::opts: the next step's recurrent sums during the logits
// exchange; the exchanges sent by every thread after a block barrier
// (push_block_others) instead of by each item's thread to every CTA; the
// greedy draw split across the cluster (gen_cluster_draw.cuh: each CTA's
// first maximum instead of its logits; inv_temp == 0 only).
#define GEN_AHEAD 1
#define GEN_BLOCK_SENDS 2
#define GEN_SPLIT_ARGMAX 4

// x[g] = input part of gate g of unit j for token `tok`, b_ih not added.
template <int C, typename W>
__device__ __forceinline__ void gen_x(float* x, const GenClusterParams& p, int tok, int j) {
    constexpr int G = Cell<C>::G;
    const W* col = static_cast<const W*>(p.table) + (size_t)tok * (G * p.H) + j;
#pragma unroll
    for (int g = 0; g < G; ++g) x[g] = to_f(col[g * p.H]);
}
