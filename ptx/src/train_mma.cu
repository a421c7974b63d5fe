// The training forward as one persistent launch with the recurrent product
// on tensor cores, f16 storage: tr_mma_fwd_f16_<cell> for RNN (tanh, relu),
// GRU reset-after and LSTM (GRU reset-before multiplies W_hn by r ⊙ h,
// which needs a second exchange per step: its own loops keep it).
//
// Why: where the cluster loops do not fit (H > 256, or too many batch rows
// for the clusters resident at once) and the CUDA-core persistent loop
// does not either (train_step.cuh: 2 hidden units per block, so H / 2
// blocks, more than an H100 holds at once beyond H 264), the forward ran
// one launch per step: 1,024 launches for the H 768 LSTM at cuDNN's
// benchmark shape. Here every block holds G·U rows of W_hh for the whole
// sequence as mma A fragments (mma_persist.cuh, the inference kernel
// rec_mma's product), and one grid barrier separates the steps.
//
// Per step t, block b (hidden units [b·U, b·U + un)): h_{t-1} from hcat
// slot t (f16, written by every block at step t − 1, read through L2) into
// shared memory; the 8 warps' k tiles of the product, their partials added
// in warp order; then every (unit, batch row) item — one per thread, all
// of them in one pass (the planner: un·B ≤ 256 and the batch in one
// n-chunk) — runs the training cell (train_cell.cuh: the cluster loops'
// formulas) on its input part (TrFwdItem: W_ih's token column + b_ih, the
// next step's in flight during the product) and stores the cache the
// backward reads (gates, aux, c into ccat slot t + 1, h into hcat slot
// t + 1). The stores come before the grid barrier, whose release makes
// them visible to every block's next staging.
//
// Parameters as tr_fwd_persist's (hcat, ccat, gates, aux, W_hh, W_ih,
// b_ih, b_hh, tok, B, H, V, T), then U (hidden units per block), ntc
// (n-tiles per chunk, ≥ ceil(B / 8)) and the 64-word barrier. Shared
// memory: MmaBlock's layout for G·U rows (engine/src/plan.rs mma_smem).
#include "mma_persist.cuh"
#include "train_cell.cuh"
#include "train_fwd_item.cuh"

template <int C>
__device__ void tr_mma_fwd(const TrFwdArgs<__half>& a, int U, int ntc, unsigned* bar) {
    DYNAMIC_SHARED(float4, smem4);
    constexpr int G = Cell<C>::G;
    const int H = a.H, B = a.B;
    const int u0 = blockIdx.x * U;
    const int un = min(U, H - u0);
    MmaBlock mb(smem4, G * U, H, B, ntc);
    mb.load(a.w_hh, G, H, u0, un);
    unsigned gen = barrier_start(bar);

    // This thread's item: unit u, batch row b (o = u·B + b).
    const ItemWalk<false> at(threadIdx.x, B);
    const int u = at.u(), b = at.n(), j = u0 + u;
    const bool valid = (int)threadIdx.x < un * B;
    TrFwdItem<C, __half> item(a, valid, b, j);
    const size_t bh = (size_t)B * H;

    for (int t = 0; t < a.T; ++t) {
        // The previous step's reads of hsm and pre are done before this
        // staging overwrites them (at t = 0: the fragment loads and the
        // padding's zeroing).
        if (valid) item.prefetch(a, t);  // step t + 1's input part, in flight meanwhile
        __syncthreads();
        mb.stage(a.hcat + t * bh, B, H);
        __syncthreads();
        mb.product(ntc, 0);
        __syncthreads();
        mb.reduce(G * un, B, ntc);
        __syncthreads();
        if (valid) {
            float p[4] = {0.f, 0.f, 0.f, 0.f}, gv[4], ax = 0.0f;
#pragma unroll
            for (int g = 0; g < G; ++g) p[g] = mb.pre[(g * un + u) * mb.PLD + b];
            const float hp = __half2float(mb.hsm[b * mb.LDH + j]);
            const float h = tc_cell_fwd<C>(item.xc, p, item.bhh, hp, &item.c, gv, &ax);
            item.store(a, t, gv, ax, h);
            item.advance();
        }
        if (t + 1 < a.T) grid_sync(bar, gen);
    }
}

#define TR_MMA_KERNEL(NAME, C)                                                                                  \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1)                                                 \
        tr_mma_fwd_f16_##NAME(__half* hcat, float* ccat, __half* gates, __half* aux, const __half* w_hh,     \
                              const __half* w_ih, const float* b_ih, const float* b_hh, const unsigned* tok, \
                              int B, int H, int V, int T_, int U, int ntc, unsigned* bar) {                  \
        const TrFwdArgs<__half> a{hcat, ccat, gates, aux, w_hh, w_ih, b_ih, b_hh, tok, B, H, V, T_};         \
        tr_mma_fwd<C>(a, U, ntc, bar);                                                                        \
    }

TR_MMA_KERNEL(rnn_tanh, RNN_TANH)
TR_MMA_KERNEL(rnn_relu, RNN_RELU)
TR_MMA_KERNEL(gru_after, GRU_AFTER)
TR_MMA_KERNEL(lstm, LSTM)
