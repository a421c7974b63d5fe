// What the emulator's driver (driver.cpp) and the generated kernel tables
// (build.sh) share with the runtime (runtime.cpp): the kernel registry and
// the launch.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

namespace emu {

// One `extern "C" __global__` kernel compiled for the host.
struct KernelInfo {
    const char* name;
    void* fn;
    // Calls `fn` with the arguments at `args` (the driver API's kernelParams:
    // one pointer per parameter, in order).
    void (*invoke)(void* fn, void** args);
    unsigned cluster;  // __cluster_dims__ x (1: no cluster)
    int regs;          // ptxas -v for sm_90 (ptx/ptxas-report.txt)
    int static_smem;   // bytes, same source
};

void register_kernel(const KernelInfo& k);
const KernelInfo* find_kernel(const char* name);

template <typename... A, std::size_t... I>
void invoke_with(void* fn, void** args, std::index_sequence<I...>) {
    auto f = reinterpret_cast<void (*)(A...)>(fn);
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <typename... A> void invoke(void* fn, void** args) {
    invoke_with<A...>(fn, args, std::index_sequence_for<A...>{});
}

struct Registrar {
    template <typename... A>
    Registrar(const char* name, void (*f)(A...), unsigned cluster, int regs, int static_smem) {
        register_kernel({name, reinterpret_cast<void*>(f), &invoke<A...>, cluster, regs, static_smem});
    }
};

struct Dim {
    unsigned x, y, z;
};

// Runs a whole grid and returns when it is done (the emulated device has
// one queue: launches run in the order the host issues them). 0 or a CUDA
// error code.
int launch(const KernelInfo& k, Dim grid, Dim block, unsigned smem, void** args, bool cooperative);

// The device's shape, as the driver reports it.
int sm_count();
// Blocks of `k` one SM holds with `threads` threads and `smem` dynamic bytes.
int blocks_per_sm(const KernelInfo& k, int threads, std::size_t smem);

// The PTX text of a module the emulator was built from (its FNV-1a hash).
void register_module_hash(unsigned long long hash, const char* module);

// A memory fault at `addr`: says on stderr which kernel, block and thread
// made it, if one was running on this thread.
void describe_fault(const void* addr);

}  // namespace emu
