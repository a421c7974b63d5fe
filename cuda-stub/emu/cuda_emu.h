// The device side of recur's CPU emulator of CUDA (cuda-stub/emu/README.md):
// force-included (g++ -include) before a kernel module of ptx/src, it gives
// the CUDA C the kernels use a host meaning. Threads of a block are fibers on
// one OS thread, so `__shared__` variables are thread_local statics (one copy
// per block being run) and threadIdx is the running fiber's. Everything that
// makes threads meet (barriers, shuffles, mma, polls) goes through the
// runtime (runtime.cpp), which switches fibers there.
//
// The kernels reach PTX instructions through small inline-asm wrappers
// (ptx/src/common.cuh, cluster_step.cuh, flag_exchange.cuh, …); under
// RECUR_EMU each wrapper calls the emu:: function of the same meaning below.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <math.h>

#define RECUR_EMU 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __cluster_dims__(...)
#define __align__(n) __attribute__((aligned(n)))
// One copy per OS thread = per block being emulated (runtime.cpp runs a
// block's threads as fibers of one OS thread).
#define __shared__ static thread_local

struct uint3 {
    unsigned x, y, z;
};
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
struct __attribute__((aligned(8))) uint2 {
    unsigned x, y;
};
struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};
struct __attribute__((aligned(16))) ulonglong2 {
    unsigned long long x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---- f16: IEEE binary16, conversions rounded to nearest even (_Float16) ----
struct __attribute__((aligned(2))) __half {
    unsigned short __x;
    __half() = default;
    __half(float f) {
        const _Float16 h = (_Float16)f;
        std::memcpy(&__x, &h, 2);
    }
    operator float() const {
        _Float16 h;
        std::memcpy(&h, &__x, 2);
        return (float)h;
    }
};
struct __attribute__((aligned(4))) __half2 {
    __half x, y;
};
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return (float)h; }
inline float2 __half22float2(__half2 h) { return {(float)h.x, (float)h.y}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) {
    __half h;
    h.__x = u;
    return h;
}

// ---- bit casts and math ----------------------------------------------------
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
using std::isinf;
using std::isnan;
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
// Mixed signedness compares as unsigned, as CUDA's overloads.
inline unsigned max(int a, unsigned b) { return max((unsigned)a, b); }
inline unsigned max(unsigned a, int b) { return max(a, (unsigned)b); }
inline unsigned min(int a, unsigned b) { return min((unsigned)a, b); }
inline unsigned min(unsigned a, int b) { return min(a, (unsigned)b); }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }
inline float min(float a, float b) { return fminf(a, b); }

namespace emu {

// ---- where the running thread stands (runtime.cpp) --------------------------
extern thread_local const uint3* thread_idx;  // the running fiber's
extern thread_local uint3 block_idx, block_dim, grid_dim;

// ---- meeting points (each may switch fibers) --------------------------------
void syncthreads();
void syncwarp(unsigned mask);
// Every lane of the warp hands in `v`; returns lane `src`'s (src outside the
// warp: its own value back, as __shfl_up_sync at the low lanes).
unsigned long long warp_exchange(unsigned mask, unsigned long long v, int src);
// A poll that found nothing yet: lets the other threads (and blocks) run.
void spin(const char* waits_at = "a poll");
[[noreturn]] void trap(const char* why);
void* dynamic_smem();
unsigned dynamic_smem_bytes();  // %dynamic_smem_size

// ---- warp matrix products (the PTX fragment layouts) ------------------------
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32, d += a·b.
void mma_m16n8k16_f16(float* d, const unsigned* a, const unsigned* b);
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, d += a·b.
void mma_m16n8k8_tf32(float* d, const unsigned* a, const unsigned* b);
// cvt.rna.tf32.f32.
unsigned cvt_rna_tf32(float x);

// ---- cp.async: a thread's own asynchronous copies into shared memory ------
// cp.async.ca.shared.global of `bytes` (4, 8 or 16): the first src_bytes
// from src, the rest zero. The copy lands only when its thread waits for
// its group; until then the destination reads as NaN bytes.
void cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes);
// cp.async.commit_group: the thread's copies since the last one, a group.
void cp_async_commit();
// cp.async.wait_group n: every committed group but the newest n has landed.
void cp_async_wait(unsigned n);

// ---- global memory at GPU scope (other blocks run on other OS threads) ------
template <typename T> inline void st_relaxed(T* p, T v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
template <typename T> inline void st_release(T* p, T v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
inline void fence_acq_rel() { __atomic_thread_fence(__ATOMIC_ACQ_REL); }
// Loads of memory other blocks write, which the kernels poll: each returns
// the value after letting the block's other threads run (a poll loop must
// not keep its fiber to itself).
unsigned poll_acquire(const unsigned* p);
unsigned poll_relaxed(const unsigned* p);
unsigned long long poll_relaxed_u64(const unsigned long long* p);
ulonglong2 poll_relaxed_u64x2(const ulonglong2* p);

// ---- thread-block clusters --------------------------------------------------
unsigned cluster_ctarank();
void cluster_arrive();
void cluster_wait();
// Shared-memory addresses: a CTA-local address names a byte of the block's
// dynamic or static shared memory; mapa adds the target rank.
unsigned cvta_shared(const void* p);
unsigned mapa(unsigned addr, unsigned rank);
void st_shared_cluster_f32(unsigned addr, float v);
void mbar_init(unsigned bar, unsigned count);
void mbar_arrive_expect_tx(unsigned bar, unsigned bytes);
// Until the phase of parity `parity` has completed.
void mbar_wait_parity(unsigned bar, unsigned parity);
void st_async_b32(unsigned addr, unsigned v, unsigned bar);
// st.async .v4.b32: addr 16-byte aligned (else a fault, as on the GPU).
void st_async_v4_b32(unsigned addr, unsigned x, unsigned y, unsigned z, unsigned w, unsigned bar);

}  // namespace emu

#define threadIdx (*::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
#define warpSize 32

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::syncwarp(mask); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) { emu::spin("__nanosleep"); }
[[noreturn]] inline void __trap() { emu::trap("__trap()"); }
inline size_t __cvta_generic_to_shared(const void* p) { return emu::cvta_shared(p); }

template <typename T> inline T __ldcg(const T* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
}

template <typename T> inline unsigned long long emu_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    unsigned long long b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T> inline T emu_from_bits(unsigned long long b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = (int)(threadIdx.x % 32);
    const int src = (lane ^ lane_mask) < (lane / width + 1) * width ? lane ^ lane_mask : lane;
    return emu_from_bits<T>(emu::warp_exchange(mask, emu_bits(v), src));
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = (int)(threadIdx.x % 32);
    const int src = lane - (int)delta < (lane / width) * width ? lane : lane - (int)delta;
    return emu_from_bits<T>(emu::warp_exchange(mask, emu_bits(v), src));
}

// Atomics on global or shared memory (relaxed, as CUDA's atomicAdd).
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v, std::memory_order_relaxed); }
inline double atomicAdd(double* p, double v) {
    return std::atomic_ref<double>(*p).fetch_add(v, std::memory_order_relaxed);
}
inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline int atomicMin(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
