// The training forward and backward as one persistent launch each with the
// recurrent product on tensor cores, f16 storage: tr_mma_fwd_f16_<cell>
// and tr_mma_bwd_f16_<cell> for RNN (tanh, relu), GRU reset-after and LSTM
// (GRU reset-before multiplies W_hn by r ⊙ h, which needs a second
// exchange per step: its own loops keep it). The backward's reduce-scatter
// and its scaled hi + lo operands: train_mma_bwd.cuh; below the forward.
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
// Two forms without the grid barrier, opt-in until a GPU has timed them
// (engine/src/train/persist_mma.rs ForwardSync). Why: at the H 768 LSTM's
// 1,024 steps, a grid barrier per step (1.5 to 1.75 µs on an H100, run 6)
// is about 1.7 ms of the forward, a third of cuDNN's 5.19 ms for forward
// and backward.
// - Block flags (`flags` not null): after its h_t stores and a block
//   barrier, thread 0 stores tag epoch + t + 1 into the block's own flag
//   with release semantics; before staging h_t, threads 0 … blocks − 1
//   each wait (acquire) for one block's flag to reach it, then the block
//   barrier before the staging. No atomic counter; hcat's slots are never
//   reused within a launch, so a block may run any number of steps ahead.
// - Flagged words (WORDS, tr_mma_fwd_flagged_f16_*, H even): h_t also goes
//   out as the inference's 8-byte words {half2, flag} (flag_exchange.cuh,
//   whose comment says why two slots suffice; items paired by lanes, units
//   u and u + 1 of a row in one word), and step t + 1 stages h_t from
//   them, waiting on each word's flag: no fence and no separate flag load,
//   but twice the bytes through L2 (at the H 768 LSTM, B 16: 96 blocks
//   read 4.7 MB per step instead of 2.4).
// Either way hcat gets every h for the backward, which reads it after the
// launch.
//
// Parameters as tr_fwd_persist's (hcat, ccat, gates, aux, W_hh, W_ih,
// b_ih, b_hh, tok, B, H, V, T), then U (hidden units per block), ntc
// (n-tiles per chunk, ≥ ceil(B / 8)), the 64-word barrier, the flags (one
// word per block, or null for the barrier; with WORDS the exchange words,
// (2, B, H / 2) u64), zeroed before their first launch, and the launch's
// epoch (its tags epoch + 1 … epoch + T − 1). Shared memory: MmaBlock's
// layout for G·U rows (engine/src/plan.rs mma_smem).
#include "flag_exchange.cuh"
#include "mma_persist.cuh"
#include "train_mma_bwd.cuh"
#include "train_cell.cuh"
#include "train_fwd_item.cuh"

template <int C, bool WORDS>
__device__ void tr_mma_fwd(const TrFwdArgs<__half>& a, int U, int ntc, unsigned* bar, unsigned* flags,
                           unsigned long long* xchg, unsigned epoch) {
    DYNAMIC_SHARED(float4, smem4);
    constexpr int G = Cell<C>::G;
    const int H = a.H, B = a.B;
    const int u0 = blockIdx.x * U;
    const int un = min(U, H - u0);
    MmaBlock mb(smem4, G * U, H, B, ntc);
    mb.load(a.w_hh, G, H, u0, un);
    const bool barrier = !WORDS && !flags;
    unsigned gen = barrier ? barrier_start(bar) : 0u;

    // This thread's item: unit u, batch row b (ItemWalk: o = u·B + b, or
    // paired for the flagged words; un is even there, so the items still
    // fill threads 0 … un·B − 1).
    const ItemWalk<WORDS> at(threadIdx.x, B);
    const int u = at.u(), b = at.n(), j = u0 + u;
    const bool valid = (int)threadIdx.x < un * B;
    TrFwdItem<C, __half> item(a, valid, b, j);
    const size_t bh = (size_t)B * H;
    const size_t words = (size_t)B * (H / 2);  // one flagged slot

    for (int t = 0; t < a.T; ++t) {
        // The previous step's reads of hsm and pre are done before this
        // staging overwrites them (at t = 0: the fragment loads and the
        // padding's zeroing).
        if (valid) item.prefetch(a, t);  // step t + 1's input part, in flight meanwhile
        if (!WORDS && flags && t > 0) wait_every_block_flag(flags, epoch + (unsigned)t);
        __syncthreads();
        if (WORDS && t > 0) {
            const unsigned long long* slot = xchg + (size_t)((t - 1) & 1) * words;
            if ((H & 3) == 0) {
                stage_h_flagged<ulonglong2, 8>(mb.hsm, mb.LDH, slot, epoch + (unsigned)t, B, H);
            } else {
                stage_h_flagged<unsigned long long, 8>(mb.hsm, mb.LDH, slot, epoch + (unsigned)t, B, H);
            }
        } else {
            mb.stage(a.hcat + t * bh, B, H);
        }
        __syncthreads();
        mb.product(ntc, 0);
        __syncthreads();
        mb.reduce(G * un, B, ntc);
        __syncthreads();
        __half h16 = __float2half_rn(0.0f);
        if (valid) {
            float p[4] = {0.f, 0.f, 0.f, 0.f}, gv[4], ax = 0.0f;
#pragma unroll
            for (int g = 0; g < G; ++g) p[g] = mb.pre[(g * un + u) * mb.PLD + b];
            const float hp = __half2float(mb.hsm[b * mb.LDH + j]);
            const float h = tc_cell_fwd<C>(item.xc, p, item.bhh, hp, &item.c, gv, &ax);
            item.store(a, t, gv, ax, h);
            item.advance();
            h16 = __float2half_rn(h);  // hcat's value (item.store)
        }
        if constexpr (WORDS) {
            // Units u (even lane) and u + 1 (odd lane) of row b: one word,
            // flag epoch + t + 1, read by step t + 1's staging. The shuffle
            // runs on every lane; a valid lane's partner is valid.
            const unsigned short mine16 = __half_as_ushort(h16);
            const unsigned short other = (unsigned short)__shfl_xor_sync(0xffffffffu, (unsigned)mine16, 1);
            if (valid && (u & 1) == 0 && t + 1 < a.T)
                st_relaxed_u64(xchg + (size_t)(t & 1) * words + (size_t)b * (H / 2) + j / 2,
                               flagged_word(mine16, other, epoch + (unsigned)t + 1u));
        } else if (t + 1 < a.T) {
            if (barrier) {
                grid_sync(bar, gen);
            } else {
                release_block_flag(flags, epoch + (unsigned)t + 1u);
            }
        }
    }
}

#define TR_MMA_KERNEL(NAME, C)                                                                                   \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1)                                                  \
        tr_mma_fwd_f16_##NAME(__half* hcat, float* ccat, __half* gates, __half* aux, const __half* w_hh,      \
                              const __half* w_ih, const float* b_ih, const float* b_hh, const unsigned* tok,  \
                              int B, int H, int V, int T_, int U, int ntc, unsigned* bar, unsigned* flags,    \
                              unsigned epoch) {                                                               \
        const TrFwdArgs<__half> a{hcat, ccat, gates, aux, w_hh, w_ih, b_ih, b_hh, tok, B, H, V, T_};          \
        tr_mma_fwd<C, false>(a, U, ntc, bar, flags, nullptr, epoch);                                           \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1) tr_mma_fwd_flagged_f16_##NAME(                   \
        __half* hcat, float* ccat, __half* gates, __half* aux, const __half* w_hh, const __half* w_ih,           \
        const float* b_ih, const float* b_hh, const unsigned* tok, int B, int H, int V, int T_, int U, int ntc, \
        unsigned* bar, unsigned long long* xchg, unsigned epoch) {                                             \
        const TrFwdArgs<__half> a{hcat, ccat, gates, aux, w_hh, w_ih, b_ih, b_hh, tok, B, H, V, T_};          \
        tr_mma_fwd<C, true>(a, U, ntc, bar, nullptr, xchg, epoch);                                             \
    }

TR_MMA_KERNEL(rnn_tanh, RNN_TANH)
TR_MMA_KERNEL(rnn_relu, RNN_RELU)
TR_MMA_KERNEL(gru_after, GRU_AFTER)
TR_MMA_KERNEL(lstm, LSTM)

// The backward (train_mma_bwd.cuh says why a reduce-scatter, and why the
// scaled hi + lo): block b owns hidden units [b·U, b·U + un) and their G·un
// gate rows of W_hh, held as the transposed A fragments (load_w_frags<true>)
// for the whole sequence. Per step t = T−1 … 0, every (unit, batch row)
// item — one per thread, all at once (un·B ≤ 256) — adds the output's share
// of dh_t (dhs), the direct share from step t+1 (GRU reset-after's d·z;
// kept in a register, as LSTM's dc) and the recurrent one (the partials of
// step t+1, summed below), runs the cell's backward (train_cell.cuh) and
// stores dih and dhh of step t. Unless t = 0 (the initial state's gradient
// is not needed): the block's gate gradients, scaled, split into hi and lo
// halves in shared memory; its partial product W_hhᵀ[:, rows]·dg_t (H·B
// floats) to part slot t & 1; the grid barrier (or the block's flag:
// train_mma_bwd.cuh); then this block's units'
// partials of every block, added in a fixed order: deterministic.
//
// Parameters as tr_bwd_persist's (dih, dhh, dhs, the forward's W_hh itself
// instead of W_hhᵀ, gates, aux, hcat, ccat), then part (2 · blocks · H · B
// floats, no initial value), B, H, T, U, the 64-word barrier, and flags
// (one word per block; null: the grid barrier) with this launch's epoch
// (its tags epoch + 1 … epoch + T − 1, all past the buffer's words). Shared
// memory (engine/src/plan.rs mma_bwd_smem): the fragments MT·KT·32 uint4
// (MT = ceil(H / 16), KT = ceil(G·U / 16)), dhi and dlo NT·8 × LDK halves
// each (NT = ceil(B / 8), LDK = KT·16 + 8), red NTHREADS·4 floats, wmax
// NWARPS words.
template <int C>
__device__ void tr_mma_bwd(float* dih, float* dhh, const float* dhs, const __half* w_hh, const __half* gates,
                           const __half* aux, const __half* hcat, const float* ccat, float* part, int B, int H,
                           int T_, int U, unsigned* bar, unsigned* flags, unsigned epoch) {
    DYNAMIC_SHARED(float4, smem4);
    constexpr int G = Cell<C>::G;
    const int nblk = (int)gridDim.x;
    const int u0 = blockIdx.x * U;
    const int un = min(U, H - u0);
    const int MT = (H + 15) / 16, KT = (G * U + 15) / 16, NT = (B + 7) / 8, LDK = KT * 16 + 8;
    uint4* afrag = reinterpret_cast<uint4*>(smem4);
    __half* dhi = reinterpret_cast<__half*>(afrag + MT * KT * 32);
    __half* dlo = dhi + NT * 8 * LDK;
    float* red = reinterpret_cast<float*>(dlo + NT * 8 * LDK);
    unsigned* wmax = reinterpret_cast<unsigned*>(red + NTHREADS * 4);
    load_w_frags<true>(afrag, MT, KT, w_hh, G, H, u0, un);
    // The operands' padding (gate rows ≥ G·un, columns ≥ B) stays zero.
    for (int i = threadIdx.x; i < 2 * NT * 8 * LDK; i += NTHREADS) dhi[i] = __float2half_rn(0.0f);
    unsigned gen = barrier_start(bar);

    // This thread's item: unit u, batch row n (o = u·B + n, the partials' order).
    const ItemWalk<false> at(threadIdx.x, B);
    const int u = at.u(), n = at.n(), j = u0 + u;
    const bool valid = (int)threadIdx.x < un * B;
    const long long GH = (long long)G * H;
    const size_t hb = (size_t)H * B, slot = (size_t)nblk * hb;
    const bool quads = (B & 3) == 0;  // every block's share whole 16-byte pieces
    const MbGather gat(quads ? 4 : 1, un * B);
    TcBwdCache kc{};  // read by valid items only, which load it
    if (valid) tc_bwd_load<C, __half>(kc, dhs, gates, aux, hcat, ccat, (long long)(T_ - 1) * B + n, j, H);
    float carry = 0.0f, dcs = 0.0f, rec = 0.0f;

    for (int t = T_ - 1; t >= 0; --t) {
        float dr[4] = {0.f, 0.f, 0.f, 0.f};
        unsigned bits = 0u;
        if (valid) {
            const float d = (kc.d + carry) + rec;
            float dg[4];
            carry = tc_cell_bwd<C>(d, kc.g, kc.hp, kc.av, kc.cp, &dcs, dg, dr);
            const long long row = ((long long)t * B + n) * GH;
#pragma unroll
            for (int g = 0; g < G; ++g) {
                dih[row + g * H + j] = dg[g];
                dhh[row + g * H + j] = dr[g];
                bits = max(bits, __float_as_uint(dr[g]) & 0x7fffffffu);
            }
        }
        if (t == 0) break;
        // The next step's cache, in flight during the product and the barrier.
        if (valid) tc_bwd_load<C, __half>(kc, dhs, gates, aux, hcat, ccat, (long long)(t - 1) * B + n, j, H);
        // The block max's barrier also orders the last step's reads of dhi,
        // dlo (at t = T−1: the fragment loads and the zeroing) before these
        // stores.
        const float2 sc = mb_scale(mb_block_max(bits, wmax));
        if (valid) {
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const float x = dr[g] * sc.x;
                const __half hi = __float2half_rn(x);
                dhi[n * LDK + g * un + u] = hi;
                dlo[n * LDK + g * un + u] = __float2half_rn(x - __half2float(hi));
            }
        }
        __syncthreads();
        float* pt = part + (size_t)(t & 1) * slot;
        mb_partials_nt(NT, pt + blockIdx.x * hb, afrag, dhi, dlo, MT, KT, LDK, H, B, sc.y);
        // This step's tag: the launch's epoch + 1, 2, … (train_mma_bwd.cuh).
        const unsigned tag = epoch + (unsigned)(T_ - t);
        if (flags) {
            release_block_flag(flags, tag);  // every thread's partials
        } else {
            grid_sync(bar, gen);
        }
        // 12 loads in flight: at H 768, B 16 every thread's sources at once
        // (96 blocks in 8 groups, or 48 in 4).
        if (quads) mb_gather<float4, 12>(red, pt + (size_t)u0 * B, hb, nblk, gat, flags, tag);
        else mb_gather<float, 12>(red, pt + (size_t)u0 * B, hb, nblk, gat, flags, tag);
        __syncthreads();
        if (valid) {
            rec = 0.0f;
            for (int g = 0; g < gat.groups; ++g) rec += red[g * gat.items + threadIdx.x];
        }
    }
}

#define TR_MMA_BWD_KERNEL(NAME, C)                                                                              \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1)                                                 \
        tr_mma_bwd_f16_##NAME(float* dih, float* dhh, const float* dhs, const __half* w_hh, const __half* gates, \
                              const __half* aux, const __half* hcat, const float* ccat, float* part, int B,    \
                              int H, int T_, int U, unsigned* bar, unsigned* flags, unsigned epoch) {         \
        tr_mma_bwd<C>(dih, dhh, dhs, w_hh, gates, aux, hcat, ccat, part, B, H, T_, U, bar, flags, epoch);     \
    }

TR_MMA_BWD_KERNEL(rnn_tanh, RNN_TANH)
TR_MMA_BWD_KERNEL(rnn_relu, RNN_RELU)
TR_MMA_BWD_KERNEL(gru_after, GRU_AFTER)
TR_MMA_BWD_KERNEL(lstm, LSTM)
