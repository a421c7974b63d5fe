// DYNAMIC_SHARED(T, name): the block's dynamic shared memory as an array
// `name` of T, 16-byte aligned. recur's CPU emulator (cuda-stub/emu) has no
// extern __shared__; it hands out the block's buffer instead.
#pragma once

#ifdef RECUR_EMU
#define DYNAMIC_SHARED(T, name) T* const name = static_cast<T*>(::emu::dynamic_smem())
#else
#define DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]
#endif
