// DYNAMIC_SHARED(T, name): the block's dynamic shared memory as an array
// `name` of T, 16-byte aligned. recur's CPU emulator (cuda-stub/emu) has no
// extern __shared__; it hands out the block's buffer instead.
#pragma once

#ifdef RECUR_EMU
#define DYNAMIC_SHARED(T, name) T* const name = static_cast<T*>(::emu::dynamic_smem())
#else
#define DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]
#endif

// The bytes of dynamic shared memory the launch gave the block.
__device__ __forceinline__ unsigned dynamic_shared_bytes() {
#ifdef RECUR_EMU
    return ::emu::dynamic_smem_bytes();
#else
    unsigned n;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(n));
    return n;
#endif
}
