// Persistent recurrent layers on tensor cores, f16 mode (weights and h stored
// as f16, products accumulated in f32 by mma.sync m16n8k16, c and gate
// pre-activations in f32): RNN (tanh, relu), GRU reset-after and LSTM.
// (GRU reset-before multiplies W_hn by r ⊙ h, which f16 mode keeps in f32,
// so it runs on rec_persist_f16_gru_before.)
//
// Block b owns hidden units [b·U, b·U+U) and their G·U gate rows of W_hh, held
// in shared memory for the whole sequence, already in the order of the mma
// A fragments (one 16-byte load per fragment, no bank conflicts). Every step
// stages h_{t-1} (B, H) as f16 in shared memory, the 8 warps split the k
// tiles, their partial sums meet in shared memory, and the gate math runs
// as in the CUDA-core kernels. One grid-wide barrier per step, or none:
// - with `p.flags` (Path::PersistentMmaBlockFlags) each block releases its
//   flag after its h_t stores and a block barrier, and threads 0 … blocks −
//   1 each acquire one block's flag before the next staging (h_t has its
//   own place in hs, so a block may run steps ahead: no slot to reuse);
// - with FLAGGED (rec_mma_flagged_*, H and units per block even) h_t goes
//   from block to block in flagged words (flag_exchange.cuh) that the next
//   step's staging waits on: no fence, twice the bytes.
#include "flag_exchange.cuh"
#include "mma_persist.cuh"
#include "rec_params.cuh"

// x[g] = input part of gate g (W_ih·x + b_ih) of unit u0 + u, batch row b.
template <int G>
__device__ __forceinline__ void input_x(float* x, const StepIO& io, const __half* table, const __half* b_ih, int u,
                                        int b, int u0, int H) {
    const int j = u0 + u;
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const float xin = io.tok ? __half2float(table[(size_t)io.tok[b] * (G * H) + g * H + j])
                                 : io.x_proj[(size_t)b * (G * H) + g * H + j];
        x[g] = xin + __half2float(b_ih[g * H + j]);
    }
}

// Shared memory: MmaBlock's layout (mma_persist.cuh).
template <int C, bool FLAGGED>
__device__ void rec_mma(const RecParams& p) {
    DYNAMIC_SHARED(float4, smem4);
    constexpr int G = Cell<C>::G;
    const int H = p.H, B = p.B, U = p.units;
    const int u0 = blockIdx.x * U;
    const int un = min(U, H - u0);
    MmaBlock mb(smem4, G * U, H, B, p.aux);
    const int NT = mb.NT, NTC = mb.NTC, LDH = mb.LDH, PLD = mb.PLD;
    __half* hsm = mb.hsm;
    const float* pre = mb.pre;
    mb.load(static_cast<const __half*>(p.w_hh), G, H, u0, un);
    const __half* table = static_cast<const __half*>(p.table);
    const __half* b_ih = static_cast<const __half*>(p.b_ih);
    const __half* b_hh = static_cast<const __half*>(p.b_hh);
    const bool barrier = !FLAGGED && !p.flags;
    unsigned gen = barrier ? barrier_start(p.barrier) : 0u;
    // Per-thread state across steps for its (unit, row) item when the batch
    // is one n-chunk (see Carry in simt_step.cuh).
    Carry carry;
    carry.valid = NT <= NTC && (int)threadIdx.x < un * B;
    if (carry.valid) {
        const ItemWalk<FLAGGED> first(threadIdx.x, B);
        carry.u = first.u();
        carry.b = first.n();
        const int j = u0 + carry.u;
        const StepIO io0 = rec_io<C, __half>(p, 0);
#pragma unroll
        for (int g = 0; g < 4; ++g) carry.bhh[g] = g < G ? __half2float(b_hh[g * H + j]) : 0.0f;
        carry.c = C == LSTM ? io0.c_prev[(size_t)carry.b * H + j] : 0.0f;
        input_x<G>(carry.x, io0, table, b_ih, carry.u, carry.b, u0, H);
    }

    for (int t = 0; t < p.T; ++t) {
        const StepIO io = rec_io<C, __half>(p, t);
        if (!FLAGGED && p.flags && t > 0) wait_every_block_flag(p.flags, p.epoch + (unsigned)t);
        __syncthreads();
        // Stage h_{t-1} (B, H) as f16: 16-byte pieces where H is a multiple
        // of 8 (and the step's rows so aligned), pairs of halves where H is
        // even, else halves; row and column walked, not divided, per piece.
        if (io.h0) {
            RowWalk at(threadIdx.x, NTHREADS, H);
            for (int base = 0; base < B * H; base += NTHREADS * STAGE_UNROLL) {
                float v[STAGE_UNROLL];
#pragma unroll
                for (int j = 0; j < STAGE_UNROLL; ++j) {
                    const int i = base + j * NTHREADS + threadIdx.x;
                    v[j] = i < B * H ? io.h0[i] : 0.0f;
                }
#pragma unroll
                for (int j = 0; j < STAGE_UNROLL; ++j) {
                    const int i = base + j * NTHREADS + threadIdx.x;
                    if (i < B * H) hsm[at.r * LDH + at.c] = __float2half_rn(v[j]);
                    at.next();
                }
            }
        } else if (FLAGGED) {
            const unsigned long long* slot = p.xchg + (size_t)((t - 1) & 1) * B * (H / 2);
            if ((H & 3) == 0) {
                stage_h_flagged<ulonglong2, 8>(hsm, LDH, slot, p.epoch + (unsigned)t, B, H);
            } else {
                stage_h_flagged<unsigned long long, 8>(hsm, LDH, slot, p.epoch + (unsigned)t, B, H);
            }
        } else {
            mb.stage(io.h_prev, B, H);
        }
        __syncthreads();
        for (int nc = 0; nc < NT; nc += NTC) {
            const int ntc = min(NTC, NT - nc);
            const int ncols = min(ntc * 8, B - nc * 8);
            // This thread's first (unit, column) item of the chunk; the cell
            // loop walks on from it.
            const ItemWalk<FLAGGED> first(threadIdx.x, ncols);
            // Input part of the first item, loaded before the product so its
            // latency hides behind it.
            float x0[4] = {0.f, 0.f, 0.f, 0.f};
            if (carry.valid) {
#pragma unroll
                for (int g = 0; g < 4; ++g) x0[g] = carry.x[g];
            } else if (threadIdx.x < un * ncols) {
                input_x<G>(x0, io, table, b_ih, first.u(), nc * 8 + first.n(), u0, H);
            }
            mb.product(ntc, nc);
            __syncthreads();
            mb.reduce(G * un, ncols, ntc);
            __syncthreads();
            // Every thread runs every round (the flagged exchange pairs lanes
            // by a shuffle); item o = base + threadIdx.x exists where o < items.
            ItemWalk<FLAGGED> item = first;
            const int items = un * ncols;
            for (int base = 0; base < items; base += NTHREADS, item.next()) {
                const bool active = base + (int)threadIdx.x < items;
                const int u = item.u(), n = item.n(), b = nc * 8 + n, j = u0 + u;
                __half h16 = __float2half_rn(0.0f);
                if (active) {
                    const size_t bj = (size_t)b * H + j;
                    float x[4] = {x0[0], x0[1], x0[2], x0[3]}, hg[4] = {0.f, 0.f, 0.f, 0.f};
                    if (base != 0) input_x<G>(x, io, table, b_ih, u, b, u0, H);
                    const bool mine = carry.valid && base == 0;
#pragma unroll
                    for (int g = 0; g < G; ++g)
                        hg[g] = pre[(g * un + u) * PLD + n] + (mine ? carry.bhh[g] : __half2float(b_hh[g * H + j]));
                    const float hp = __half2float(hsm[b * LDH + j]);
                    const float cp = C == LSTM ? (mine ? carry.c : io.c_prev[bj]) : 0.0f;
                    float c = 0.0f;
                    const float h = cell_h<C>(x, hg, hp, cp, 0.0f, &c);
                    h16 = __float2half_rn(h);
                    static_cast<__half*>(io.h_out)[bj] = h16;
                    if (io.h_last) io.h_last[bj] = stored<__half>(h);
                    if (C == LSTM) {
                        if (mine) carry.c = c;
                        if (!mine || io.h_last) io.c_out[bj] = c;  // a carried c is stored at the last step only
                    }
                }
                if constexpr (FLAGGED) {
                    // Units u (even lane) and u+1 (odd lane) of column n: one
                    // word. un is even, so a lane's partner is active with it.
                    const unsigned short mine16 = __half_as_ushort(h16);
                    const unsigned short other = (unsigned short)__shfl_xor_sync(0xffffffffu, (unsigned)mine16, 1);
                    if (active && (u & 1) == 0 && t + 1 < p.T) {
                        unsigned long long* slot = p.xchg + (size_t)(t & 1) * B * (H / 2);
                        st_relaxed_u64(slot + (size_t)b * (H / 2) + j / 2,
                                       flagged_word(mine16, other, p.epoch + (unsigned)t + 1u));
                    }
                }
            }
        }
        if (t + 1 < p.T) {
            if (!barrier && !FLAGGED) release_block_flag(p.flags, p.epoch + (unsigned)t + 1u);
            // The next step's input part does not depend on h: load it now,
            // its latency hides behind the barrier (or the flag waits).
            if (carry.valid) input_x<G>(carry.x, rec_io<C, __half>(p, t + 1), table, b_ih, carry.u, carry.b, u0, H);
            if (barrier) grid_sync(p.barrier, gen);
        }
    }
}

#define MMA_KERNEL(NAME, C)                                                                          \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1) rec_mma_f16_##NAME(RecParams p) {         \
        rec_mma<C, false>(p);                                                                        \
    }                                                                                                \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1) rec_mma_flagged_f16_##NAME(RecParams p) { \
        rec_mma<C, true>(p);                                                                         \
    }

MMA_KERNEL(rnn_tanh, RNN_TANH)
MMA_KERNEL(rnn_relu, RNN_RELU)
MMA_KERNEL(gru_after, GRU_AFTER)
MMA_KERNEL(lstm, LSTM)
