// One (hidden unit, batch row) item of the training's register cluster
// forwards: tc_rfwd (train_cluster_regs.cuh) and tc_mfwd
// (train_cluster_mma.cuh) differ in their products only; the input
// gather, the cell's state and the cache the backward reads are this.
#pragma once
#include "common.cuh"

// The forward's operands (the kernels' parameters): hcat (T + 1, B, H) with
// h0 in slot 0, ccat the same for the LSTM c (f32), gates (T·B, G·H)
// post-activation, aux (T·B, H): GRU reset-after W_hn·h + b_hn, reset-before
// r ⊙ h_{t-1}, LSTM tanh c; W_ih (G·H, V) gathered by token (tok (T, B)).
template <typename W> struct TrFwdArgs {
    W* hcat;
    float* ccat;
    W* gates;
    W* aux;
    const W* w_hh;
    const W* w_ih;
    const float* b_ih;
    const float* b_hh;
    const unsigned* tok;
    int B, H, V, T;
};

// The item's b_hh, LSTM cell state, the input part (token gather of W_ih,
// b_ih added) of the current step and of the next one, and the token two
// steps ahead, in registers: no global load on a step's critical path.
template <int C, typename W> struct TrFwdItem {
    static constexpr int G = Cell<C>::G;
    int b, j;  // batch row, hidden unit
    float bhh[G];
    float c;             // LSTM cell state (c0 from ccat slot 0)
    float xc[4], xn[4];  // steps t and t + 1
    unsigned tok_next, tok_after;

    __device__ __forceinline__ TrFwdItem(const TrFwdArgs<W>& a, bool valid, int b_, int j_)
        : b(b_), j(j_), c(0.0f), tok_next(0), tok_after(0) {
#pragma unroll
        for (int g = 0; g < G; ++g) bhh[g] = valid ? a.b_hh[g * a.H + j] : 0.0f;
#pragma unroll
        for (int g = 0; g < 4; ++g) xc[g] = xn[g] = 0.0f;
        if (valid) {
            if (C == LSTM) c = a.ccat[(size_t)b * a.H + j];
            gather(xc, a, a.tok[b]);
            if (a.T > 1) tok_next = a.tok[(long long)a.B + b];
        }
    }

    // x[g] = W_ih[g·H + j, tk] + b_ih[g·H + j].
    __device__ __forceinline__ void gather(float* x, const TrFwdArgs<W>& a, unsigned tk) const {
#pragma unroll
        for (int g = 0; g < G; ++g) x[g] = to_f(a.w_ih[((long long)g * a.H + j) * a.V + tk]) + a.b_ih[g * a.H + j];
    }

    // At the start of step t (valid items): step t + 1's input part and
    // step t + 2's token, in flight while the product runs.
    __device__ __forceinline__ void prefetch(const TrFwdArgs<W>& a, int t) {
        tok_after = 0;
        if (t + 1 < a.T) {
            gather(xn, a, tok_next);
            if (t + 2 < a.T) tok_after = a.tok[(long long)(t + 2) * a.B + b];
        }
    }

    // Step t's cache (the item's one writer lane): the gates `gv`, aux `ax`
    // (GRU reset-after, LSTM; reset-before stores its r ⊙ h itself), the
    // LSTM c and h into slot t + 1.
    __device__ __forceinline__ void store(const TrFwdArgs<W>& a, int t, const float* gv, float ax, float h) const {
        const long long row = (long long)t * a.B + b;
        W* gr = a.gates + row * G * a.H;
#pragma unroll
        for (int g = 0; g < G; ++g) gr[g * a.H + j] = from_f<W>(gv[g]);
        if (C == GRU_AFTER || C == LSTM) a.aux[row * a.H + j] = from_f<W>(ax);
        if (C == LSTM) a.ccat[(row + a.B) * a.H + j] = c;
        a.hcat[(row + a.B) * a.H + j] = from_f<W>(h);
    }

    // After step t: step t + 1's input part becomes the current one.
    __device__ __forceinline__ void advance() {
#pragma unroll
        for (int g = 0; g < G; ++g) xc[g] = xn[g];
        tok_next = tok_after;
    }
};

// hcat slot 0's rows [b0, b0 + nbc) into `h` (row stride `ld` floats).
// The block's threads share the copy; the caller syncs.
template <typename W>
__device__ __forceinline__ void tr_load_h0(float* h, int ld, const TrFwdArgs<W>& a, int b0, int nbc) {
    for (int i = threadIdx.x; i < nbc * a.H; i += NTHREADS) {
        const int r = i / a.H, k = i - r * a.H;
        h[(size_t)r * ld + k] = to_f(a.hcat[(size_t)(b0 + r) * a.H + k]);
    }
}
