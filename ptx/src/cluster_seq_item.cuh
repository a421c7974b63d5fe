// One (hidden unit, batch row) item of the register cluster sequence
// kernels: rec_rcluster (recurrent_cluster_regs.cu) and rec_mcluster
// (cluster_mma.cuh) differ in their products only; the cell, its inputs and
// its outputs are this. The item keeps its biases, the LSTM cell state, the
// input part of the current step (b_ih added) and of the next one, and the
// token two steps ahead in registers, so that no global load sits on a
// step's critical path.
#pragma once
#include "rec_params.cuh"

template <int C, typename W, typename A> struct SeqItem {
    static constexpr int G = Cell<C>::G;
    int b, j;  // batch row, hidden unit
    float bhh[G], bih[G];
    float c;            // LSTM cell state (0 for the others)
    float xc[4], xn[4];  // step t's input part, b_ih added; step t + 1's, without
    int tok_next, tok_after;  // the tokens of steps t + 1 and t + 2

    // Biases, c0 and step 0's input part where `valid` (zeros elsewhere).
    __device__ __forceinline__ SeqItem(const RecParams& p, bool valid, int b_, int j_)
        : b(b_), j(j_), c(0.0f), tok_next(0), tok_after(0) {
        const int H = p.H;
#pragma unroll
        for (int g = 0; g < G; ++g) {
            bhh[g] = valid ? to_f(static_cast<const W*>(p.b_hh)[g * H + j]) : 0.0f;
            bih[g] = valid ? to_f(static_cast<const W*>(p.b_ih)[g * H + j]) : 0.0f;
        }
#pragma unroll
        for (int g = 0; g < 4; ++g) xc[g] = xn[g] = 0.0f;
        if (valid) {
            if (C == LSTM) c = p.c0[(size_t)b * H + j];
            cl_x<C, W>(xc, p, 0, b, cl_token(p, 0, b), j);
            tok_next = cl_token(p, 1, b);
#pragma unroll
            for (int g = 0; g < G; ++g) xc[g] += bih[g];
        }
    }

    // At the start of step t (valid items): step t + 1's input part and step
    // t + 2's token, in flight while the product runs.
    __device__ __forceinline__ void prefetch(const RecParams& p, int t) {
        tok_after = 0;
        if (t + 1 < p.T) {
            cl_x<C, W>(xn, p, t + 1, b, tok_next, j);
            tok_after = cl_token(p, t + 2, b);
        }
    }

    // The cell on the step's recurrent products `hr` (b_hh not yet added)
    // and the item's h_{t-1} `hp`: h_t, the cell state updated. GRU
    // reset-before: its second phase, `hr[2]` the n rows' product with
    // r ⊙ h_{t-1}, `z` its first phase's update gate.
    __device__ __forceinline__ float cell(const float (&hr)[4], float hp, float z = 0.0f) {
        float hg[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int g = 0; g < G; ++g) hg[g] = hr[g] + bhh[g];
        return cell_h<C>(xc, hg, hp, c, z, &c);
    }

    // After step t's cell: `writer` (one lane of the item) stores h_t
    // (`h`, and `hv`, h as stored, the carried state after the last step);
    // then step t + 1's input part becomes the current one.
    __device__ __forceinline__ void finish(const RecParams& p, int t, float h, float hv, bool writer) {
        if (writer) {
            const size_t bj = (size_t)b * p.H + j;
            (static_cast<A*>(p.hs) + (size_t)t * ((size_t)p.B * p.H))[bj] = from_f<A>(h);
            if (t == p.T - 1) {
                p.h_last[bj] = hv;
                if (C == LSTM) p.c_last[bj] = c;
            }
        }
#pragma unroll
        for (int g = 0; g < G; ++g) xc[g] = xn[g] + bih[g];
        tok_next = tok_after;
    }
};

// h0's rows [b0, b0 + nbc) into `h` (row stride `ld` floats), rounded as
// stored. The block's threads share the copy; the caller syncs.
template <typename A>
__device__ __forceinline__ void seq_load_h0(float* h, int ld, const RecParams& p, int b0, int nbc) {
    const int H = p.H;
    for (int i = threadIdx.x; i < nbc * H; i += NTHREADS) {
        const int r = i / H, k = i - r * H;
        h[(size_t)r * ld + k] = stored<A>(p.h0[(size_t)(b0 + r) * H + k]);
    }
}
