// The training forward on clusters of 16 CTAs with W_hh in registers
// (included by train_cluster.cu): tr_rcluster16_fwd_{f32,f16}_<cell>, every
// cell but GRU reset-before, H ≤ TR_RC_K = 256, at most 32 / (2·G) batch rows
// per cluster. The scheme is recurrent_cluster_regs.cu's (read its header):
// warp w of CTA `rank` owns hidden units u0 + 2w, u0 + 2w + 1 and every lane
// 8 k of their gate rows; one transposing warp reduction per step; every
// lane computes the cell for one (unit, batch row) item and the item's lanes
// split the 16 st.async stores of the new h, counted by each receiver's
// mbarrier (no cluster barrier, no fence per step). What the training adds:
// h0 and c0 come from slot 0 of hcat / ccat, and lane copy 0 of each item
// stores the step's cache the backward reads: gates (post-activation), aux
// (GRU reset-after W_hn·h + b_hn, LSTM tanh c), h into hcat slot t + 1 and the
// LSTM c into ccat slot t + 1. The cell's formulas and operation order are
// tc_fwd's (so ts_fwd's); only the product's summation order differs.
// Same parameters as tr_cluster16_fwd_* (U = ceil(H/16), BC rows per
// cluster); shared memory static.

#define TR_RC_CS 16
#define TR_RC_UPW 2
#define TR_RC_K 256

template <int C, typename W>
__device__ void tc_rfwd(W* hcat, float* ccat, W* gates, W* aux, const W* w_hh, const W* w_ih, const float* b_ih,
                        const float* b_hh, const unsigned* tok, int B, int H, int V, int T_, int U, int BC) {
    constexpr int G = Cell<C>::G;
    constexpr int BCMAX = 32 / (TR_RC_UPW * G);
    constexpr int ROWS = TR_RC_UPW * G;    // weight rows per warp
    constexpr int NI = TR_RC_UPW * BCMAX;  // (unit, batch row) items per warp
    __shared__ __align__(16) float hbuf[2][BCMAX][TR_RC_K];
    __shared__ float swap[NWARPS][32];
    __shared__ __align__(8) unsigned long long mbar[2];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int rank = (int)cluster_ctarank();
    const int u0 = rank * U;
    const int un = max(0, min(U, H - u0));
    const int b0 = (blockIdx.x / TR_RC_CS) * BC;
    const int nbc = max(0, min(BC, B - b0));
    // CTAs that own units, and the bytes of h each receives per step.
    const int ranks = (H + U - 1) / U;
    const unsigned step_bytes = (unsigned)(nbc * H) * 4u;
    // Warps past the CTA's units skip the loop, so every waiting warp sends.
    const bool working = TR_RC_UPW * warp < un && nbc > 0;

    // This lane's weights: row (ul, g) = global row g·H + u0 + 2·warp + ul.
    float w[ROWS][8];
#pragma unroll
    for (int ul = 0; ul < TR_RC_UPW; ++ul) {
        const int u = TR_RC_UPW * warp + ul;
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const W* row = w_hh + ((size_t)g * H + u0 + u) * H;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const int k = (i < 4 ? 4 * lane : 128 + 4 * lane) + (i & 3);
                w[ul * G + g][i] = (u < un && k < H) ? to_f(row[k]) : 0.0f;
            }
        }
    }

    // The item this lane computes the cell for, and which copy of it it is.
    const int item = lane % NI, copy = lane / NI, copies = (32 - item + NI - 1) / NI;
    const int iu = item / BCMAX, ib = item % BCMAX;
    const int j = u0 + TR_RC_UPW * warp + iu;  // hidden unit
    const bool valid = TR_RC_UPW * warp + iu < un && ib < nbc;
    const int b = b0 + ib;
    float bhh[G], bih[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        bhh[g] = valid ? b_hh[g * H + j] : 0.0f;
        bih[g] = valid ? b_ih[g * H + j] : 0.0f;
    }
    float c = (C == LSTM && valid) ? ccat[(size_t)b * H + j] : 0.0f;

    // h_{-1} from hcat slot 0; k ≥ H and rows ≥ nbc stay zero.
    for (int i = threadIdx.x; i < 2 * BCMAX * TR_RC_K; i += NTHREADS) (&hbuf[0][0][0])[i] = 0.0f;
    __syncthreads();
    for (int i = threadIdx.x; i < nbc * H; i += NTHREADS) {
        const int r = i / H, k = i - r * H;
        hbuf[0][r][k] = to_f(hcat[(size_t)(b0 + r) * H + k]);
    }
    // mbar[s] counts the bytes of h arriving in hbuf[s] (as rec_rcluster).
    const unsigned bar0 = smem_u32(&mbar[0]);
    if (threadIdx.x == 0 && un > 0) {
        mbar_init(bar0, 1);
        mbar_init(bar0 + 8, 1);
        mbar_init_fence();
        mbar_expect(bar0, step_bytes);
        mbar_expect(bar0 + 8, step_bytes);
    }
    // Input parts (token gather of W_ih (G·H, V) columns, b_ih added) one
    // step ahead, the token two.
    float xc[4] = {0.f, 0.f, 0.f, 0.f}, xn[4] = {0.f, 0.f, 0.f, 0.f};
    unsigned tok_next = 0;
    if (valid) {
        const unsigned tk = tok[b];
#pragma unroll
        for (int g = 0; g < G; ++g) xc[g] = to_f(w_ih[((long long)g * H + j) * V + tk]) + bih[g];
        if (T_ > 1) tok_next = tok[(long long)B + b];
    }
    // Every CTA has zeroed its buffers and armed its barriers before anyone
    // stores into them.
    cluster_sync();

    const long long gh = (long long)G * H;
    for (int t = 0; working && t < T_; ++t) {
        const int cur = t & 1;
        const bool last = t == T_ - 1;
        if (t > 0) {
            mbar_wait(bar0 + 8 * cur, (unsigned)((t - 1) >> 1) & 1u);
            // Re-arm for this buffer's next use (step t + 2).
            if (threadIdx.x == 0) mbar_expect(bar0 + 8 * cur, step_bytes);
        }
        unsigned tok_after = 0;
        if (valid && t + 1 < T_) {
#pragma unroll
            for (int g = 0; g < G; ++g) xn[g] = to_f(w_ih[((long long)g * H + j) * V + tok_next]) + bih[g];
            if (t + 2 < T_) tok_after = tok[(long long)(t + 2) * B + b];
        }
        // Partial products of the lane's k slice.
        float v[32];
#pragma unroll
        for (int i = 0; i < 32; ++i) v[i] = 0.0f;
#pragma unroll
        for (int r = 0; r < BCMAX; ++r) {
            if (r < nbc) {
                const float4 h0 = *reinterpret_cast<const float4*>(&hbuf[cur][r][4 * lane]);
                const float4 h1 = *reinterpret_cast<const float4*>(&hbuf[cur][r][128 + 4 * lane]);
#pragma unroll
                for (int q = 0; q < ROWS; ++q) {
                    float a = w[q][0] * h0.x;
                    a = fmaf(w[q][1], h0.y, a);
                    a = fmaf(w[q][2], h0.z, a);
                    a = fmaf(w[q][3], h0.w, a);
                    float a1 = w[q][4] * h1.x;
                    a1 = fmaf(w[q][5], h1.y, a1);
                    a1 = fmaf(w[q][6], h1.z, a1);
                    a1 = fmaf(w[q][7], h1.w, a1);
                    v[q * BCMAX + r] = a + a1;
                }
            }
        }
        swap[warp][lane] = warp_transpose_sum(v);
        __syncwarp();
        if (valid) {
            float p[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int g = 0; g < G; ++g) p[g] = swap[warp][(iu * G + g) * BCMAX + ib];
            const float hp = hbuf[cur][ib][j];
            const long long row = (long long)t * B + b;
            W* gr = gates + row * gh;
            float h, ax = 0.0f;
            if (C == RNN_TANH || C == RNN_RELU) {
                const float pre = xc[0] + p[0] + bhh[0];
                h = C == RNN_TANH ? tanhf(pre) : relu_f(pre);
                if (copy == 0) gr[j] = from_f<W>(h);
            } else if (C == GRU_AFTER) {
                const float r = sigmoid_f(xc[0] + (p[0] + bhh[0]));
                const float z = sigmoid_f(xc[1] + (p[1] + bhh[1]));
                const float hn = p[2] + bhh[2];
                const float n = tanhf(xc[2] + r * hn);
                if (copy == 0) {
                    gr[j] = from_f<W>(r);
                    gr[H + j] = from_f<W>(z);
                    gr[2 * H + j] = from_f<W>(n);
                }
                ax = hn;
                h = n + z * (hp - n);
            } else {  // LSTM i, f, g, o
                const float i = sigmoid_f(xc[0] + p[0] + bhh[0]);
                const float f = sigmoid_f(xc[1] + p[1] + bhh[1]);
                const float gg = tanhf(xc[2] + p[2] + bhh[2]);
                const float o = sigmoid_f(xc[3] + p[3] + bhh[3]);
                c = f * c + i * gg;
                const float tc = tanhf(c);
                if (copy == 0) {
                    gr[j] = from_f<W>(i);
                    gr[H + j] = from_f<W>(f);
                    gr[2 * H + j] = from_f<W>(gg);
                    gr[3 * H + j] = from_f<W>(o);
                    ccat[(row + B) * H + j] = c;
                }
                ax = tc;
                h = o * tc;
            }
            if (!last) {
                const unsigned a = smem_u32(&hbuf[cur ^ 1][ib][j]);
                const float hv = stored<W>(h);
                for (int r = copy; r < ranks; r += copies)
                    st_async(map_rank(a, r), hv, map_rank(bar0 + 8 * (cur ^ 1), r));
            }
            if (copy == 0) {
                if (C == GRU_AFTER || C == LSTM) aux[row * H + j] = from_f<W>(ax);
                hcat[(row + B) * H + j] = from_f<W>(h);
            }
#pragma unroll
            for (int g = 0; g < G; ++g) xc[g] = xn[g];
            tok_next = tok_after;
        }
        // The swap row is rewritten next step only after this step's reads.
        __syncwarp();
    }
    // No CTA leaves while stores into its shared memory may be in flight.
    cluster_sync();
}

#define TRC_KERNEL(NAME, C, SFX, W)                                                                                \
    extern "C" __global__ void __cluster_dims__(TR_RC_CS, 1, 1) __launch_bounds__(NTHREADS, 2)                     \
        tr_rcluster16_fwd_##SFX##_##NAME(W* hcat, float* ccat, W* gates, W* aux, const W* w_hh, const W* w_ih,    \
                                         const float* b_ih, const float* b_hh, const unsigned* tok, int B, int H, \
                                         int V, int T_, int U, int BC) {                                          \
        tc_rfwd<C, W>(hcat, ccat, gates, aux, w_hh, w_ih, b_ih, b_hh, tok, B, H, V, T_, U, BC);                   \
    }
#define TRC_KERNELS(NAME, C)           \
    TRC_KERNEL(NAME, C, f32, float)    \
    TRC_KERNEL(NAME, C, f16, __half)

TRC_KERNELS(rnn_tanh, RNN_TANH)
TRC_KERNELS(rnn_relu, RNN_RELU)
TRC_KERNELS(gru_after, GRU_AFTER)
TRC_KERNELS(lstm, LSTM)
