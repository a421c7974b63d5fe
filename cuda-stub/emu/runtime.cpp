// The emulator's execution model (cuda-stub/emu/README.md):
//
// - A block runs on one OS thread; its 256 (blockDim) threads are fibers
//   switched at the points where CUDA threads meet: __syncthreads, warp
//   collectives (shuffles, __syncwarp, mma), polls of memory other blocks
//   write, cluster barriers and mbarrier waits. Between two such points a
//   thread runs alone, so code that assumes lockstep warps without saying so
//   (__syncwarp, *_sync) reads stale values here as on Volta and later.
// - Blocks that must be co-resident run at once on as many OS threads: every
//   block of a cooperative launch, the CTAs of a cluster. Other grids run on
//   a few OS threads, block after block.
// - Static __shared__ variables are thread_local (cuda_emu.h), so each OS
//   thread holds one block's; dynamic shared memory is the runner's buffer.
//   Shared-memory addresses (cvta, mapa) encode rank, kind and offset, and
//   the CTAs of a cluster reach each other's through them.
//
// x86-64 only (the fiber switch below). Memory ordering is the host's (TSO),
// stronger than the GPU's: a missing fence is not caught here.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <sched.h>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <vector>

#include "cuda_emu.h"
#include "emu_runtime.h"

// void emu_switch(void** save_sp, void* next_sp): saves the callee-saved
// registers on the current stack, stores its top in *save_sp and resumes the
// stack at next_sp. The FP control words (MXCSR, x87) are callee-saved too,
// but no kernel or runtime code changes them, so every fiber runs with its
// OS thread's and the switch leaves them alone (fldcw serialises the
// pipeline).
extern "C" void emu_switch(void** save_sp, void* next_sp);
asm(R"(
    .text
    .p2align 4
    .globl emu_switch
    .hidden emu_switch
    .type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

namespace emu {

thread_local const uint3* thread_idx;
thread_local uint3 block_idx, block_dim, grid_dim;

namespace {

constexpr int MAX_THREADS = 1024;
constexpr int MAX_WARPS = MAX_THREADS / 32;
constexpr size_t STACK_BYTES = 256 * 1024;  // per thread (host frames of the kernels' register arrays)
constexpr unsigned long long CANARY = 0x5ec0de5ec0de5ec0ull;

struct Fiber {
    void* sp = nullptr;
    uint3 tid{};
    unsigned warp_seq = 0;       // warp collectives this thread has entered
    unsigned cluster_phase = 0;  // the cluster barrier phase of its last arrive
    bool done = true;
    const char* waits_at = nullptr;  // what it waits for (stall reports)
    unsigned wait_arg = 0;           // which barrier / parity, where it says
    // Not worth resuming while *wait_word == wait_value (a barrier's
    // generation it waits to change); null: resume every round (a poll).
    const unsigned* wait_word = nullptr;
    unsigned wait_value = 0;
    char* stack = nullptr;       // STACK_BYTES, CANARY at the bottom
    // Its cp.async copies not yet performed (cp_async), each with the group
    // it falls in, and the groups it has committed.
    struct Copy {
        void* dst;
        const void* src;
        unsigned bytes, src_bytes, group;
    };
    std::vector<Copy> copies;
    unsigned groups = 0;
};

// A warp collective's data: 8 words per lane, double-buffered by the
// collective's parity (a lane cannot reach collective k + 2 before every
// lane has left k).
struct WarpSync {
    unsigned long long data[2][32][4];
    int arrived[2];
    unsigned completed;
};

struct Cluster;

// One runner OS thread: its fibers and the block it is running.
struct Runner {
    Fiber fibers[MAX_THREADS];
    WarpSync warps[MAX_WARPS];
    void* sched_sp = nullptr;
    int nthreads = 0;
    int live = 0;
    int bar_arrived = 0;
    unsigned bar_gen = 0;
    bool progress = false;
    std::vector<float4> dyn;  // dynamic shared memory
    size_t dyn_bytes = 0;
    char* tp = nullptr;  // thread pointer: static TLS (static __shared__) sits below it
    const KernelInfo* kernel = nullptr;
    void** args = nullptr;
    Cluster* cluster = nullptr;
    unsigned rank = 0;

    Runner() {
        // One mapping for all stacks (a guard page each would cost two
        // mappings per thread, past vm.max_map_count with 132 blocks); a
        // canary at each stack's bottom is checked when the block ends.
        void* m = mmap(nullptr, STACK_BYTES * MAX_THREADS, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            std::fprintf(stderr, "recur emu: no memory for thread stacks\n");
            std::abort();
        }
        for (int i = 0; i < MAX_THREADS; ++i) fibers[i].stack = static_cast<char*>(m) + STACK_BYTES * (size_t)i;
    }
};

struct Cluster {
    std::atomic<int> arrived{0};
    std::atomic<unsigned> phase{0};  // waited on through its address (Fiber::wait_word)
    std::atomic<int> present{0};
    Runner* ranks[16] = {};
    int threads = 0;  // cluster size × threads per block
};

static_assert(sizeof(std::atomic<unsigned>) == sizeof(unsigned) && std::atomic<unsigned>::is_always_lock_free);

thread_local Runner* runner;
thread_local Fiber* current;

char* thread_pointer() { return static_cast<char*>(__builtin_thread_pointer()); }

[[noreturn]] void fail(const char* what) {
    Runner* r = runner;
    if (r && r->kernel) {
        const Fiber* f = current;
        std::fprintf(stderr, "recur emu: %s (kernel %s, block (%u, %u, %u), thread %u)\n", what, r->kernel->name,
                     block_idx.x, block_idx.y, block_idx.z, f ? f->tid.x : 0u);
    } else {
        std::fprintf(stderr, "recur emu: %s\n", what);
    }
    std::fflush(stderr);
    std::abort();
}

// Whether the scheduler would resume f this round: live, and not parked on
// a word that still holds the value it waits to change.
inline bool runnable(const Fiber& f) {
    return !f.done && !(f.wait_word && __atomic_load_n(f.wait_word, __ATOMIC_ACQUIRE) == f.wait_value);
}

// Leaves this fiber until it is picked again: straight to the next fiber
// of the scheduler's round that can run (one stack switch instead of two
// through the scheduler), or back to the scheduler when none is left, which
// then ends the round where this fiber stands.
inline void yield_fiber(const char* waits_at, const unsigned* wait_word = nullptr, unsigned wait_value = 0) {
    Fiber* f = current;
    f->waits_at = waits_at;
    f->wait_word = wait_word;
    f->wait_value = wait_value;
    Runner& r = *runner;
    int next = (int)(f - r.fibers) + 1;
    while (next < r.nthreads && !runnable(r.fibers[next])) ++next;
    if (next < r.nthreads) {
        current = &r.fibers[next];
        thread_idx = &r.fibers[next].tid;
        emu_switch(&f->sp, r.fibers[next].sp);
    } else {
        emu_switch(&f->sp, r.sched_sp);
    }
    f->waits_at = nullptr;
    f->wait_word = nullptr;
}

// Which waits the block's live threads are in, for a stall report.
std::string waits_of(const Runner& r) {
    std::map<std::string, int> n;
    for (int i = 0; i < r.nthreads; ++i) {
        const Fiber& f = r.fibers[i];
        if (!f.done) n[f.waits_at ? f.waits_at : "running"] += 1;
    }
    std::string out;
    for (auto& [what, count] : n) out += (out.empty() ? "" : ", ") + std::to_string(count) + " at " + what;
    // Per warp: the collectives its lanes have entered and their waits.
    for (int w = 0; w * 32 < r.nthreads; ++w) {
        std::map<std::string, int> lanes;
        for (int i = w * 32; i < std::min(r.nthreads, w * 32 + 32); ++i) {
            const Fiber& f = r.fibers[i];
            if (f.done) continue;
            char key[160];
            std::snprintf(key, sizeof key, "%s(arg %#x, collective %u)", f.waits_at ? f.waits_at : "running",
                          f.wait_arg, f.warp_seq);
            lanes[key] += 1;
        }
        if (lanes.empty()) continue;
        out += "\n  warp " + std::to_string(w) + ":";
        for (auto& [what, count] : lanes) out += " " + std::to_string(count) + " × " + what;
    }
    return out;
}

// Opens __syncthreads once every live thread has arrived; true if it did.
bool release_block_barrier_if_complete(Runner& r) {
    if (r.bar_arrived < r.live) return false;
    r.bar_arrived = 0;
    r.bar_gen += 1;
    return true;
}

[[noreturn]] void fiber_main() {
    Runner& r = *runner;
    r.kernel->invoke(r.kernel->fn, r.args);
    Fiber* f = current;
    f->done = true;
    r.live -= 1;
    r.progress = true;
    // Threads that left count as arrived at the block barrier.
    if (r.bar_arrived > 0) release_block_barrier_if_complete(r);
    emu_switch(&f->sp, r.sched_sp);
    fail("a finished thread was resumed");
}

void start_fiber(Fiber& f, unsigned tid) {
    f.tid = {tid, 0, 0};
    f.warp_seq = 0;
    f.cluster_phase = 0;
    f.done = false;
    f.copies.clear();  // a copy the last block never waited for never lands
    f.groups = 0;
    std::memcpy(f.stack, &CANARY, 8);
    // The first switch "returns" into fiber_main with the stack aligned as
    // after a call: the return address's slot 16-byte aligned.
    auto top = reinterpret_cast<uintptr_t>(f.stack + STACK_BYTES);
    auto* slot = reinterpret_cast<unsigned long long*>((top - 64) & ~uintptr_t{15});
    slot[0] = reinterpret_cast<unsigned long long>(&fiber_main);
    for (int i = 1; i <= 6; ++i) slot[-i] = 0;  // rbp rbx r12 r13 r14 r15
    f.sp = &slot[-6];
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double stall_limit() {
    const char* v = std::getenv("RECUR_EMU_STALL_SECONDS");
    return v ? std::atof(v) : 300.0;
}

// Runs block `idx` of the current launch to its end on this OS thread.
void run_block(Runner& r, uint3 idx) {
    block_idx = idx;
    // Fresh shared memory holds garbage on a GPU: NaN bytes here, so a
    // read before a write shows (static __shared__ keeps the last block's).
    if (r.dyn_bytes) std::memset(static_cast<void*>(r.dyn.data()), 0xff, r.dyn_bytes);
    r.live = r.nthreads;
    r.bar_arrived = 0;
    std::memset(r.warps, 0, sizeof(WarpSync) * (size_t)((r.nthreads + 31) / 32));
    for (int i = 0; i < r.nthreads; ++i) start_fiber(r.fibers[i], (unsigned)i);
    auto last_progress = std::chrono::steady_clock::now();
    unsigned idle = 0;
    while (r.live > 0) {
        r.progress = false;
        for (int i = 0; i < r.nthreads; ++i) {
            Fiber& f = r.fibers[i];
            if (!runnable(f)) continue;
            current = &f;
            thread_idx = &f.tid;
            emu_switch(&r.sched_sp, f.sp);
            // The fibers after f ran in turn (yield_fiber); the round goes
            // on after the one that came back here.
            i = (int)(current - r.fibers);
        }
        current = nullptr;
        if (r.progress) {
            idle = 0;
            continue;
        }
        // Every thread waits for another block: give the others the CPU.
        sched_yield();
        if (++idle == 1) last_progress = std::chrono::steady_clock::now();
        if (idle % 4096 == 0 && seconds_since(last_progress) > stall_limit()) {
            std::string what = "no thread of this block has moved for RECUR_EMU_STALL_SECONDS (default 300), a "
                               "wait that never ends: " +
                               waits_of(r);
            // The other CTAs of its cluster (read racily: a report, not a result).
            for (unsigned k = 0; r.cluster && k < r.kernel->cluster; ++k) {
                if (r.cluster->ranks[k] && r.cluster->ranks[k] != &r) {
                    what += "\n rank " + std::to_string(k) + ": " + waits_of(*r.cluster->ranks[k]);
                }
            }
            fail(what.c_str());
        }
    }
    for (int i = 0; i < r.nthreads; ++i) {
        if (std::memcmp(r.fibers[i].stack, &CANARY, 8) != 0) fail("a thread overflowed its emulated stack");
    }
}

// ---- the launch: runner threads -------------------------------------------

struct Launch {
    const KernelInfo* k;
    Dim grid, block;
    unsigned smem;
    void** args;
    enum Mode { Independent, Cooperative, Clustered } mode;
    int workers;
    std::atomic<unsigned long long> next{0};
    std::vector<std::unique_ptr<Cluster>> clusters;
};

uint3 block_of(const Launch& l, unsigned long long linear) {
    const unsigned long long xy = (unsigned long long)l.grid.x * l.grid.y;
    return {(unsigned)(linear % l.grid.x), (unsigned)((linear / l.grid.x) % l.grid.y), (unsigned)(linear / xy)};
}

void prepare(Runner& r, const Launch& l) {
    r.kernel = l.k;
    r.args = l.args;
    r.nthreads = (int)(l.block.x * l.block.y * l.block.z);
    r.dyn_bytes = l.smem;
    if (r.dyn.size() * sizeof(float4) < l.smem) r.dyn.resize((l.smem + 15) / 16);
    r.tp = thread_pointer();
    block_dim = {l.block.x, l.block.y, l.block.z};
    grid_dim = {l.grid.x, l.grid.y, l.grid.z};
}

void work(Launch& l, int worker) {
    if (!runner) runner = new Runner();  // kept for the thread's life: stacks are reused
    Runner& r = *runner;
    prepare(r, l);
    const unsigned long long blocks = (unsigned long long)l.grid.x * l.grid.y * l.grid.z;
    switch (l.mode) {
    case Launch::Cooperative:
        run_block(r, block_of(l, (unsigned long long)worker));
        break;
    case Launch::Clustered: {
        // Worker `worker` is rank `worker` of every cluster, in order: a
        // cluster's CTAs all run at once; the next cluster's start only waits
        // for the ranks still finishing this one.
        const unsigned cs = l.k->cluster;
        for (unsigned long long c = 0; c * cs < blocks; ++c) {
            Cluster& cl = *l.clusters[c];
            r.cluster = &cl;
            r.rank = (unsigned)worker;
            cl.ranks[worker] = &r;
            cl.present.fetch_add(1, std::memory_order_release);
            while (cl.present.load(std::memory_order_acquire) < (int)cs) sched_yield();
            run_block(r, block_of(l, c * cs + (unsigned)worker));
        }
        r.cluster = nullptr;
        break;
    }
    case Launch::Independent:
        for (;;) {
            const unsigned long long b = l.next.fetch_add(1);
            if (b >= blocks) break;
            run_block(r, block_of(l, b));
        }
        break;
    }
    r.kernel = nullptr;
}

// Threads that run blocks, created as launches need them and kept.
struct Pool {
    std::mutex m;
    std::condition_variable wake, done;
    std::vector<std::thread> threads;
    unsigned long long epoch = 0;
    Launch* job = nullptr;
    int finished = 0;

    void run(Launch& l) {
        std::unique_lock<std::mutex> lock(m);
        while ((int)threads.size() < l.workers) {
            const int id = (int)threads.size();
            threads.emplace_back([this, id] { serve(id); });
        }
        job = &l;
        finished = 0;
        epoch += 1;
        wake.notify_all();
        done.wait(lock, [&] { return finished == l.workers; });
        job = nullptr;
    }

    void serve(int id) {
        unsigned long long seen = 0;
        std::unique_lock<std::mutex> lock(m);
        for (;;) {
            wake.wait(lock, [&] { return epoch != seen; });
            seen = epoch;
            Launch* l = job;
            if (!l || id >= l->workers) continue;
            lock.unlock();
            work(*l, id);
            lock.lock();
            finished += 1;
            if (finished == l->workers) done.notify_all();
        }
    }
};

Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: its threads outlive static destructors
    return *p;
}

std::mutex& device_lock() {
    static std::mutex m;
    return m;
}

std::map<std::string, KernelInfo>& registry() {
    static std::map<std::string, KernelInfo> r;
    return r;
}

int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
}

Runner& self() {
    if (!runner || !current) fail("a device function ran outside a kernel");
    return *runner;
}

// ---- shared-memory addresses ----------------------------------------------
// bits 27–31: rank + 1 (0: this CTA; clusters have up to 16 CTAs), bit 26:
// static (thread_local, see static_base) or dynamic (offset into the
// runner's buffer), bits 0–25: the offset.
constexpr unsigned ADDR_RANK_SHIFT = 27;
constexpr unsigned ADDR_STATIC = 1u << 26;
constexpr unsigned ADDR_OFFSET = ADDR_STATIC - 1;

// Static shared variables lie in the thread's static TLS, below its thread
// pointer (x86-64), at the same place relative to it on every thread; the
// offset counts up from ADDR_STATIC bytes below, so address arithmetic
// (a barrier's neighbour at +8) works as on the GPU.
char* static_base(const Runner& r) { return r.tp - ADDR_STATIC; }

void* shared_ptr(unsigned addr) {
    Runner& r = self();
    const unsigned rank_tag = addr >> ADDR_RANK_SHIFT;
    Runner* t = &r;
    if (rank_tag != 0) {
        if (!r.cluster || rank_tag - 1 >= r.kernel->cluster) fail("a shared::cluster address names no CTA");
        t = r.cluster->ranks[rank_tag - 1];
    }
    const unsigned off = addr & ADDR_OFFSET;
    if (addr & ADDR_STATIC) return static_base(*t) + off;
    if (off >= t->dyn_bytes) fail("a shared-memory address past the dynamic shared memory");
    return reinterpret_cast<char*>(t->dyn.data()) + off;
}

std::atomic_ref<unsigned long long> mbar_word(unsigned bar) {
    return std::atomic_ref<unsigned long long>(*static_cast<unsigned long long*>(shared_ptr(bar)));
}

// An mbarrier in its 64 bits: tx count (signed, bits 0–31), pending
// arrivals (32–46), expected arrivals (47–61), phase (63).
struct MbarState {
    int tx;
    unsigned pending, expected, phase;
    static MbarState of(unsigned long long w) {
        return {(int)(unsigned)(w & 0xffffffffu), (unsigned)(w >> 32) & 0x7fff, (unsigned)(w >> 47) & 0x7fff,
                (unsigned)(w >> 63)};
    }
    unsigned long long word() const {
        return (unsigned long long)(unsigned)tx | (unsigned long long)(pending & 0x7fff) << 32 |
               (unsigned long long)(expected & 0x7fff) << 47 | (unsigned long long)phase << 63;
    }
};

void mbar_update(unsigned bar, int arrivals, int tx) {
    auto w = mbar_word(bar);
    unsigned long long old = w.load(std::memory_order_relaxed);
    for (;;) {
        MbarState s = MbarState::of(old);
        if (arrivals > (int)s.pending) fail("more arrivals at an mbarrier than it expects");
        s.pending -= (unsigned)arrivals;
        s.tx += tx;
        if (s.pending == 0 && s.tx == 0) {
            s.phase ^= 1u;
            s.pending = s.expected;
        }
        if (w.compare_exchange_weak(old, s.word(), std::memory_order_acq_rel, std::memory_order_relaxed)) return;
    }
}

}  // namespace

// ---- registry ----------------------------------------------------------------

void register_kernel(const KernelInfo& k) { registry()[k.name] = k; }

const KernelInfo* find_kernel(const char* name) {
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : &it->second;
}

int sm_count() { return env_int("RECUR_EMU_SMS", 132); }

int blocks_per_sm(const KernelInfo& k, int threads, size_t smem) {
    // sm_90's limits: 64 K registers (allocated per warp in units of 256),
    // 228 KB shared memory (1 KB reserved per block), 2048 threads, 32 blocks.
    const int warps = (threads + 31) / 32;
    const int regs_per_warp = (k.regs * 32 + 255) / 256 * 256;
    const int by_regs = regs_per_warp ? 65536 / regs_per_warp / warps : 32;
    const size_t per_block = (k.static_smem + smem + 1024 + 127) / 128 * 128;
    const int by_smem = (int)(233472 / per_block);
    const int by_threads = 2048 / (warps * 32);
    return std::max(0, std::min({by_regs, by_smem, by_threads, 32}));
}

int launch(const KernelInfo& k, Dim grid, Dim block, unsigned smem, void** args, bool cooperative) {
    constexpr int INVALID_VALUE = 1, LAUNCH_OUT_OF_RESOURCES = 701, COOPERATIVE_TOO_LARGE = 720;
    const unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
    const int threads = (int)(block.x * block.y * block.z);
    if (blocks == 0 || threads == 0 || threads > MAX_THREADS || block.y != 1 || block.z != 1) return INVALID_VALUE;
    if (k.static_smem + smem > 232448) return LAUNCH_OUT_OF_RESOURCES;
    std::lock_guard<std::mutex> lock(device_lock());
    Launch l;
    l.k = &k;
    l.grid = grid;
    l.block = block;
    l.smem = smem;
    l.args = args;
    if (cooperative) {
        if (blocks > (unsigned long long)sm_count() * (unsigned long long)blocks_per_sm(k, threads, smem))
            return COOPERATIVE_TOO_LARGE;
        l.mode = Launch::Cooperative;
        l.workers = (int)blocks;
    } else if (k.cluster > 1) {
        if (grid.x % k.cluster != 0) return INVALID_VALUE;
        l.mode = Launch::Clustered;
        l.workers = (int)k.cluster;
        for (unsigned long long c = 0; c * k.cluster < blocks; ++c) {
            l.clusters.emplace_back(new Cluster());
            l.clusters.back()->threads = (int)k.cluster * threads;
        }
    } else {
        l.mode = Launch::Independent;
        const int cpus = (int)std::max(1u, std::thread::hardware_concurrency());
        l.workers = (int)std::min<unsigned long long>(blocks, (unsigned long long)env_int("RECUR_EMU_THREADS", cpus));
    }
    pool().run(l);
    return 0;
}

// ---- device functions ----------------------------------------------------------

void syncthreads() {
    Runner& r = self();
    const unsigned gen = r.bar_gen;
    r.progress = true;
    r.bar_arrived += 1;
    if (release_block_barrier_if_complete(r)) return;
    while (r.bar_gen == gen) yield_fiber("__syncthreads", &r.bar_gen, gen);
}

namespace {
// A warp collective: every lane writes its words, waits for the others, and
// `read`s all of them.
template <typename Write, typename Read> void warp_collective(unsigned mask, Write write, Read read) {
    Runner& r = self();
    Fiber& f = *current;
    if (mask != 0xffffffffu) fail("warp collectives with a partial mask are not emulated");
    if (r.nthreads % 32 != 0) fail("warp collectives in a partial warp are not emulated");
    WarpSync& w = r.warps[f.tid.x / 32];
    const unsigned k = f.warp_seq++;
    const int buf = (int)(k & 1u);
    write(w.data[buf][f.tid.x % 32]);
    r.progress = true;
    if (++w.arrived[buf] == 32) {
        w.arrived[buf] = 0;
        w.completed = k + 1;
    } else {
        while (w.completed != k + 1) yield_fiber("a warp collective", &w.completed, k);
    }
    read(w.data[buf]);
}
}  // namespace

void syncwarp(unsigned mask) {
    warp_collective(mask, [](unsigned long long*) {}, [](unsigned long long (*)[4]) {});
}

unsigned long long warp_exchange(unsigned mask, unsigned long long v, int src) {
    unsigned long long out = 0;
    warp_collective(
        mask, [&](unsigned long long* mine) { mine[0] = v; },
        [&](unsigned long long (*all)[4]) { out = all[src][0]; });
    return out;
}

void spin(const char* waits_at) {
    self();
    yield_fiber(waits_at);
}

// As spin, not resumed while *word == value.
void wait_while(const char* waits_at, const unsigned* word, unsigned value) {
    self();
    yield_fiber(waits_at, word, value);
}

void trap(const char* why) { fail(why); }

void describe_fault(const void* addr) {
    Runner* r = runner;
    if (!r || !r->kernel) return;
    const Fiber* f = current;
    std::fprintf(stderr,
                 "recur emu: memory fault at %p in kernel %s, block (%u, %u, %u), thread %u (past the end of a device "
                 "buffer, or a bad address)\n",
                 addr, r->kernel->name, block_idx.x, block_idx.y, block_idx.z, f ? f->tid.x : 0u);
}

void* dynamic_smem() { return self().dyn.data(); }
unsigned dynamic_smem_bytes() { return (unsigned)self().dyn_bytes; }

// cp.async as the GPU may perform it at the latest: the copy lands when its
// thread waits for its group, and the destination reads as NaN bytes until
// then, so a read before the wait shows in the output.
void cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes) {
    if (!(bytes == 4 || bytes == 8 || bytes == 16) || src_bytes > bytes) fail("cp.async: bad copy or source size");
    if (reinterpret_cast<uintptr_t>(dst) % bytes || (src_bytes && reinterpret_cast<uintptr_t>(src) % bytes))
        fail("cp.async: misaligned address");
    Fiber& f = *current;
    std::memset(dst, 0xff, bytes);
    f.copies.push_back({dst, src, bytes, src_bytes, f.groups});
}

void cp_async_commit() { current->groups += 1; }

void cp_async_wait(unsigned n) {
    Fiber& f = *current;
    // Groups [0, groups − n) must have landed; later ones and uncommitted
    // copies (group == groups) stay pending.
    const unsigned done = f.groups > n ? f.groups - n : 0;
    size_t kept = 0;
    for (const Fiber::Copy& c : f.copies) {
        if (c.group < done) {
            std::memset(c.dst, 0, c.bytes);
            if (c.src_bytes) std::memcpy(c.dst, c.src, c.src_bytes);
        } else {
            f.copies[kept++] = c;
        }
    }
    f.copies.resize(kept);
}

namespace {
float half_bits(unsigned word, int hi) { return (float)__ushort_as_half((unsigned short)(word >> (16 * hi))); }
// The 32 lanes' fragments, 8 words each: a in words 0–3, b in 4–5.
unsigned frag(unsigned long long (*all)[4], int lane, int word) {
    return (unsigned)(all[lane][word / 2] >> (32 * (word % 2)));
}
void put_frags(unsigned long long* mine, const unsigned* a, const unsigned* b) {
    mine[0] = a[0] | (unsigned long long)a[1] << 32;
    mine[1] = a[2] | (unsigned long long)a[3] << 32;
    mine[2] = b[0] | (unsigned long long)b[1] << 32;
}
}  // namespace

void mma_m16n8k16_f16(float* d, const unsigned* a, const unsigned* b) {
    const int lane = (int)(current ? current->tid.x % 32 : 0);
    warp_collective(
        0xffffffffu, [&](unsigned long long* mine) { put_frags(mine, a, b); },
        [&](unsigned long long (*all)[4]) {
            // A (16 × 16, row): lane 4g + t holds rows g, g + 8 × columns
            // 2t, 2t + 1 (words 0, 1) and 2t + 8, 2t + 9 (words 2, 3).
            // B (16 × 8, col): lane 4n + t holds k = 2t, 2t + 1 (word 4)
            // and 2t + 8, 2t + 9 (word 5) of column n. D as C.
            auto a_at = [&](int row, int k) {
                const int word = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
                return half_bits(frag(all, (row % 8) * 4 + (k % 8) / 2, word), k & 1);
            };
            auto b_at = [&](int k, int n) {
                return half_bits(frag(all, n * 4 + (k % 8) / 2, 4 + (k >= 8 ? 1 : 0)), k & 1);
            };
            const int g = lane / 4, t = lane % 4;
            // This lane's two rows of A and two columns of B, widened once.
            float ar[2][16], bc[2][16];
            for (int k = 0; k < 16; ++k) {
                for (int e = 0; e < 2; ++e) {
                    ar[e][k] = a_at(g + 8 * e, k);
                    bc[e][k] = b_at(k, 2 * t + e);
                }
            }
            for (int i = 0; i < 4; ++i) {
                double s = 0.0;
                // A product of two halves is exact in float (11 + 11
                // significant bits); widening it, not the halves, keeps g++
                // from folding half → float → double into libgcc's slow
                // half → double routine.
                for (int k = 0; k < 16; ++k) s += (double)(ar[i >> 1][k] * bc[i & 1][k]);
                d[i] = (float)((double)d[i] + s);
            }
        });
}

void mma_m16n8k8_tf32(float* d, const unsigned* a, const unsigned* b) {
    const int lane = (int)(current ? current->tid.x % 32 : 0);
    warp_collective(
        0xffffffffu, [&](unsigned long long* mine) { put_frags(mine, a, b); },
        [&](unsigned long long (*all)[4]) {
            // A (16 × 8): lane 4g + t holds (g, t), (g + 8, t), (g, t + 4),
            // (g + 8, t + 4); B (8 × 8): lane 4n + t holds (t, n), (t + 4, n).
            // The tensor cores read 19 bits of each operand (tf32).
            auto tf32 = [](unsigned w) { return (double)__uint_as_float(w & 0xffffe000u); };
            auto a_at = [&](int row, int k) {
                return tf32(frag(all, (row % 8) * 4 + k % 4, (row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)));
            };
            auto b_at = [&](int k, int n) { return tf32(frag(all, n * 4 + k % 4, 4 + (k >= 4 ? 1 : 0))); };
            const int g = lane / 4, t = lane % 4;
            for (int i = 0; i < 4; ++i) {
                const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
                double s = 0.0;
                for (int k = 0; k < 8; ++k) s += a_at(row, k) * b_at(k, col);
                d[i] = (float)((double)d[i] + s);
            }
        });
}

unsigned cvt_rna_tf32(float x) {
    if (std::isnan(x)) return 0x7fffffffu;
    const unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return u;  // ±inf
    return (u + 0x1000u) & 0xffffe000u;                // nearest, ties away from zero
}

unsigned poll_acquire(const unsigned* p) {
    const unsigned v = __atomic_load_n(p, __ATOMIC_ACQUIRE);
    spin("a poll of global memory");
    return v;
}
unsigned poll_relaxed(const unsigned* p) {
    const unsigned v = __atomic_load_n(p, __ATOMIC_RELAXED);
    spin("a poll of global memory");
    return v;
}
unsigned long long poll_relaxed_u64(const unsigned long long* p) {
    const unsigned long long v = __atomic_load_n(p, __ATOMIC_RELAXED);
    spin("a poll of global memory");
    return v;
}
ulonglong2 poll_relaxed_u64x2(const ulonglong2* p) {
    // Two single-copy-atomic 8-byte halves, as ld.v2.u64 guarantees.
    ulonglong2 v;
    v.x = __atomic_load_n(&p->x, __ATOMIC_RELAXED);
    v.y = __atomic_load_n(&p->y, __ATOMIC_RELAXED);
    spin("a poll of global memory");
    return v;
}

// ---- clusters ------------------------------------------------------------------

unsigned cluster_ctarank() { return self().rank; }

void cluster_arrive() {
    Runner& r = self();
    if (!r.cluster) fail("a cluster barrier outside a cluster launch");
    Cluster& c = *r.cluster;
    current->cluster_phase = c.phase.load(std::memory_order_acquire);
    r.progress = true;
    if (c.arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == c.threads) {
        c.arrived.store(0, std::memory_order_relaxed);
        c.phase.fetch_add(1, std::memory_order_release);
    }
}

void cluster_wait() {
    Runner& r = self();
    const unsigned* phase = reinterpret_cast<const unsigned*>(&r.cluster->phase);
    while (r.cluster->phase.load(std::memory_order_acquire) == current->cluster_phase) {
        wait_while("a cluster barrier", phase, current->cluster_phase);
    }
}

unsigned cvta_shared(const void* p) {
    Runner& r = self();
    const char* c = static_cast<const char*>(p);
    const char* dyn = reinterpret_cast<const char*>(r.dyn.data());
    if (c >= dyn && c < dyn + r.dyn_bytes) return (unsigned)(c - dyn);
    const char* base = static_base(r);
    if (c >= r.tp || c < base) fail("a shared-memory address of memory that is not shared");
    return ADDR_STATIC | (unsigned)(c - base);
}

unsigned mapa(unsigned addr, unsigned rank) {
    if (rank >= 16) fail("mapa to a rank past the largest cluster");
    return (addr & ((1u << ADDR_RANK_SHIFT) - 1)) | (rank + 1) << ADDR_RANK_SHIFT;
}

void st_shared_cluster_f32(unsigned addr, float v) {
    std::atomic_ref<float>(*static_cast<float*>(shared_ptr(addr))).store(v, std::memory_order_relaxed);
}

void mbar_init(unsigned bar, unsigned count) {
    if (count == 0 || count > 0x7fff) fail("mbarrier count out of the emulated range");
    mbar_word(bar).store(MbarState{0, count, count, 0}.word(), std::memory_order_release);
}

void mbar_arrive_expect_tx(unsigned bar, unsigned bytes) {
    self().progress = true;
    mbar_update(bar, 1, (int)bytes);
}

void mbar_wait_parity(unsigned bar, unsigned parity) {
    current->wait_arg = bar << 1 | (parity & 1u);
    while (MbarState::of(mbar_word(bar).load(std::memory_order_acquire)).phase == (parity & 1u)) {
        spin("an mbarrier");
    }
}

void st_async_b32(unsigned addr, unsigned v, unsigned bar) {
    std::atomic_ref<unsigned>(*static_cast<unsigned*>(shared_ptr(addr))).store(v, std::memory_order_relaxed);
    self().progress = true;
    mbar_update(bar, 0, -4);
}

void st_async_v4_b32(unsigned addr, unsigned x, unsigned y, unsigned z, unsigned w, unsigned bar) {
    if (addr % 16 != 0) fail("st.async.v4 to an address that is not 16-byte aligned");
    const unsigned v[4] = {x, y, z, w};
    for (unsigned i = 0; i < 4; ++i) {  // each word through shared_ptr: its bounds checked
        unsigned* p = static_cast<unsigned*>(shared_ptr(addr + 4 * i));
        std::atomic_ref<unsigned>(*p).store(v[i], std::memory_order_relaxed);
    }
    self().progress = true;
    mbar_update(bar, 0, -16);
}

}  // namespace emu
