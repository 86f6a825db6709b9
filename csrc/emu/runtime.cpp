// progan_ext CUDA emulator: fibers, the scheduler that resolves barriers and warp collectives, and
// launches (the model is described in runtime.h; what device code calls is in device_api.cpp).

#include "runtime_internal.h"
#include "tracer.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <sstream>

#if defined(__SANITIZE_ADDRESS__)
#define PROGAN_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PROGAN_EMU_ASAN 1
#endif
#endif
#ifdef PROGAN_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#error "the progan_ext CUDA emulator has a context switch for x86-64 only"
#endif

// ---- context switch (x86-64 System V) -----------------------------------------------------------
// progan_emu_switch(save, load): saves the callee-saved registers and the SSE/x87 control words on
// the current stack, stores the stack pointer in *save, loads `load` and restores the same set
// from it. A new fiber's stack is prepared (make_stack) so that the restore "returns" into
// progan_emu_trampoline with the ThreadState* in r12.
extern "C" void progan_emu_switch(void** save, void* load);
extern "C" void progan_emu_trampoline();
extern "C" [[noreturn]] void progan_emu_fiber_main(void* thread);
asm(R"(
    .text
    .p2align 4
    .globl progan_emu_switch
    .hidden progan_emu_switch
    .type progan_emu_switch, @function
progan_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size progan_emu_switch, .-progan_emu_switch

    .p2align 4
    .globl progan_emu_trampoline
    .hidden progan_emu_trampoline
    .type progan_emu_trampoline, @function
progan_emu_trampoline:
    movq %r12, %rdi
    call progan_emu_fiber_main
    ud2
    .size progan_emu_trampoline, .-progan_emu_trampoline
)");

namespace progan_emu {

namespace detail {

constexpr size_t kGuard = 4096;  // bytes of the PROT_NONE page below each fiber stack

std::mutex g_mutex;                       // one launch at a time
Launch* g_launch = nullptr;               // the launch being run (under g_mutex)
std::map<const void*, size_t> g_max_dynamic;  // cudaFuncSetAttribute, per kernel
Stats g_stats;

// Fiber stacks, reused across launches: mmap'd with a guard page below each. After a launch that
// failed, fibers were abandoned mid-call: under AddressSanitizer their frames' redzones would stay
// poisoned in the shadow memory of the reused stacks, so the stacks are unpoisoned first.
struct StackPool {
  std::vector<std::pair<char*, size_t>> stacks;
  std::vector<bool> dirty;  // left by an abandoned fiber
  char* get(size_t i, size_t size) {
    while (stacks.size() <= i) {
      stacks.push_back({nullptr, 0});
      dirty.push_back(false);
    }
    auto& s = stacks[i];
    if (s.first == nullptr || s.second != size) {
      if (s.first) munmap(s.first, s.second + kGuard);
      void* p = mmap(nullptr, size + kGuard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw Error("progan_ext emulator: cannot map a fiber stack");
      mprotect(p, kGuard, PROT_NONE);
      s = {static_cast<char*>(p), size};
    }
#ifdef PROGAN_EMU_ASAN
    if (dirty[i]) ASAN_UNPOISON_MEMORY_REGION(s.first + kGuard, size);
#endif
    dirty[i] = false;
    return s.first + kGuard;
  }
};
StackPool g_stacks;

// Prepares a fresh fiber stack whose first switch-in lands in progan_emu_trampoline (see the asm).
void* make_stack(char* lo, size_t size, ThreadState* t) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(lo) + size) & ~uintptr_t(15);
  auto* slot = reinterpret_cast<uint64_t*>(top);
  slot[-3] = reinterpret_cast<uint64_t>(&progan_emu_trampoline);  // "return" address (rsp%16 == 8)
  slot[-4] = 0;                                                   // rbp
  slot[-5] = 0;                                                   // rbx
  slot[-6] = reinterpret_cast<uint64_t>(t);                       // r12: the thread
  slot[-7] = 0;                                                   // r13
  slot[-8] = 0;                                                   // r14
  slot[-9] = 0;                                                   // r15
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  auto* ctl = reinterpret_cast<uint32_t*>(&slot[-10]);
  ctl[0] = mxcsr;
  ctl[1] = fpucw;
  return &slot[-10];
}

// Switches from the scheduler into thread t, or from thread t back to the scheduler.
void enter(Launch& L, ThreadState& t) {
  L.running = &t;
  ++g_stats.switches;
#ifdef PROGAN_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t.stack_lo, t.stack_size);
  progan_emu_switch(&L.scheduler_sp, t.sp);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  progan_emu_switch(&L.scheduler_sp, t.sp);
#endif
  L.running = nullptr;
}

void leave(Launch& L, ThreadState& t, bool final) {
  ++t.syncs;
#ifdef PROGAN_EMU_ASAN
  __sanitizer_start_switch_fiber(final ? nullptr : &t.asan_fake, L.main_stack_lo, L.main_stack_size);
  progan_emu_switch(&t.sp, L.scheduler_sp);
  __sanitizer_finish_switch_fiber(t.asan_fake, nullptr, nullptr);
#else
  (void)final;
  progan_emu_switch(&t.sp, L.scheduler_sp);
#endif
}

Launch& launch_or_fail() {
  if (g_launch == nullptr || g_launch->running == nullptr)
    throw Error("progan_ext emulator: device code called outside a kernel launch");
  return *g_launch;
}

std::string fmt3(uint3 v) {
  std::ostringstream s;
  s << "(" << v.x << "," << v.y << "," << v.z << ")";
  return s.str();
}

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string where(const Launch& L, const ThreadState* t) {
  std::ostringstream s;
  s << "kernel " << L.name << ", block " << fmt3(L.block_idx);
  if (t) s << ", thread " << fmt3(t->idx) << " (warp " << t->warp << ", lane " << t->lane << ")";
  return s.str();
}

[[noreturn]] void launch_error(const Launch& L, const ThreadState* t, const std::string& what) {
  throw Error("CUDA emulator: " + what + " [" + where(L, t) + "]");
}

unsigned warp_size(const Launch& L, unsigned warp) { return std::min(32u, L.nthreads - warp * 32); }
unsigned warp_lanes_mask(const Launch& L, unsigned warp) {
  const unsigned n = warp_size(L, warp);
  return n == 32 ? 0xffffffffu : ((1u << n) - 1);
}
ThreadState& lane_of(Launch& L, unsigned warp, unsigned lane) { return L.threads[warp * 32 + lane]; }

std::vector<unsigned> make_order(unsigned n, Order o, std::mt19937_64& rng) {
  std::vector<unsigned> v(n);
  for (unsigned i = 0; i < n; ++i) v[i] = o == Order::Reverse ? n - 1 - i : i;
  if (o == Order::Shuffle) std::shuffle(v.begin(), v.end(), rng);
  return v;
}

// ---- resolution of blocking points (scheduler context) ------------------------------------------

// Every thread of the block waits at a __syncthreads. As bar.sync 0 on the GPU, the call sites
// need not be the same (and the host compiler may duplicate one call site into several).
void release_barrier(Launch& L) {
  for (auto& t : L.threads)
    if (t.state == State::Barrier) t.state = State::Runnable;
  L.at_barrier = 0;
  PROGAN_EMU_TRACE_EVENT(trace::barrier(L));
}

// Source lane of a shuffle, per the PTX ISA's shfl.sync semantics; returns -1 for "own value".
int shfl_source(Collective kind, int lane, int b, int width) {
  const int segmask = (32 - width) & 31;          // c[12:8]
  const int clamp = kind == Collective::ShflUp ? 0 : 31;  // c[4:0]
  const int max_lane = (lane & segmask) | (clamp & ~segmask);
  const int min_lane = lane & segmask;
  int j = 0;
  bool in_range = false;
  switch (kind) {
    case Collective::ShflUp: j = lane - b; in_range = j >= max_lane; break;
    case Collective::ShflDown: j = lane + b; in_range = j <= max_lane; break;
    case Collective::ShflXor: j = lane ^ b; in_range = j <= max_lane; break;
    default: j = min_lane | (b & 31 & ~segmask); in_range = j <= max_lane; break;
  }
  return in_range ? j : -1;
}

// If every lane named by t's mask waits at the same kind of collective with the same mask, computes
// the results and releases them. Call sites are not compared: the host compiler may duplicate one
// source-level call into several (a GPU compiler keeps it convergent).
void try_resolve(Launch& L, ThreadState& t) {
  const unsigned mask = t.mask;
  if ((L.warp_waiting[t.warp] & mask) != mask) return;  // not everyone has arrived yet
  for (unsigned l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    const ThreadState& o = lane_of(L, t.warp, l);
    if (o.state != State::Collective || o.kind != t.kind || o.mask != mask) return;
  }
  for (unsigned l = 0; l < 32; ++l)
    if ((mask >> l & 1) && lane_of(L, t.warp, l).width != t.width)
      launch_error(L, &lane_of(L, t.warp, l), std::string(collective_name(t.kind)) +
                                                  ": lanes of one mask pass different widths");
  if (t.kind == Collective::Wmma) {
    WmmaArgs lanes[32];
    for (unsigned l = 0; l < 32; ++l) {
      lanes[l] = lane_of(L, t.warp, l).wmma;
      if (!(lanes[l] == lanes[0]))
        launch_error(L, &lane_of(L, t.warp, l),
                     std::string("lanes of a warp pass different arguments to wmma::") + lanes[0].op +
                         " (pointer, ldm and layout must be the same in every lane)");
    }
    (*t.wmma_run)(lanes);
  } else {
    uint64_t ballot = 0;
    for (unsigned l = 0; l < 32; ++l)
      if ((mask >> l & 1) && lane_of(L, t.warp, l).value != 0) ballot |= 1ull << l;
    for (unsigned l = 0; l < 32; ++l) {
      if (!(mask >> l & 1)) continue;
      ThreadState& o = lane_of(L, t.warp, l);
      switch (t.kind) {
        case Collective::Ballot: o.result = ballot; break;
        case Collective::Any: o.result = ballot != 0; break;
        case Collective::All: o.result = ballot == mask; break;
        case Collective::SyncWarp: o.result = 0; break;
        default: {
          const int j = shfl_source(t.kind, int(l), o.arg, o.width);
          if (j < 0) {
            o.result = o.value;
          } else if (!(mask >> j & 1)) {
            launch_error(L, &o, std::string(collective_name(t.kind)) + " reads lane " + std::to_string(j) +
                                    ", which is not in the mask " + hex(mask) + " (its value is undefined)");
          } else {
            o.result = lane_of(L, t.warp, unsigned(j)).value;
          }
        }
      }
    }
  }
  for (unsigned l = 0; l < 32; ++l)
    if (mask >> l & 1) lane_of(L, t.warp, l).state = State::Runnable;
  L.warp_waiting[t.warp] &= ~mask;
  if (mask == warp_lanes_mask(L, t.warp)) PROGAN_EMU_TRACE_EVENT(trace::warp_synced(L, t.warp));
}

// Nothing can run: describe who waits for what.
[[noreturn]] void deadlock(Launch& L) {
  std::ostringstream s;
  s << "deadlock: no thread can make progress (";
  unsigned barrier = 0;
  for (auto& t : L.threads) barrier += t.state == State::Barrier;
  if (barrier) s << barrier << " of " << L.nthreads << " threads wait at __syncthreads, " << L.exited << " exited";
  for (auto& t : L.threads) {
    if (t.state != State::Collective) continue;
    for (unsigned l = 0; l < 32; ++l) {
      if (!(t.mask >> l & 1)) continue;
      const ThreadState& o = lane_of(L, t.warp, l);
      if (o.state == State::Collective && (o.kind != t.kind || o.mask != t.mask)) {
        s << (barrier ? "; " : "") << "lanes of one mask at different collectives: lane " << t.lane << " at "
          << collective_name(t.kind) << " (mask " << hex(t.mask) << "), lane " << l << " at "
          << collective_name(o.kind) << " (mask " << hex(o.mask) << ")";
        s << ")";
        launch_error(L, &t, s.str());
      }
      if (o.state == State::Barrier) {
        s << (barrier ? "; " : "") << "lane " << t.lane << " waits at " << collective_name(t.kind)
          << " for lane " << l << ", which waits at __syncthreads)";
        launch_error(L, &t, s.str());
      }
    }
  }
  s << ")";
  launch_error(L, nullptr, s.str());
}

void on_exit(Launch& L, ThreadState& t) {
  ++L.exited;
  L.warp_exited[t.warp] |= 1u << t.lane;
  if (L.at_barrier > 0)
    launch_error(L, &t, "divergent __syncthreads: this thread exited while " + std::to_string(L.at_barrier) +
                            " threads of its block wait at a barrier");
  for (unsigned l = 0; l < warp_size(L, t.warp); ++l) {
    const ThreadState& o = lane_of(L, t.warp, l);
    if (o.state == State::Collective && (o.mask >> t.lane & 1))
      launch_error(L, &t, std::string("this lane exited while lane ") + std::to_string(l) + " waits for it at " +
                              collective_name(o.kind) + " (mask " + hex(o.mask) + ")");
  }
}

void run_block(Launch& L, std::mt19937_64& rng) {
  // Static declarations are placed (and poisoned) when a thread first reaches them
  // (shared_static); the dynamic part is poisoned here.
  L.static_slots.clear();
  L.static_used = 0;
  if (L.dynamic_smem) std::memset(L.arena + L.dynamic_offset, kPoison, L.dynamic_smem);
  L.exited = 0;
  L.warp_exited.assign(L.warps, 0);
  L.warp_waiting.assign(L.warps, 0);
  L.at_barrier = 0;
  L.error.clear();
  for (unsigned i = 0; i < L.nthreads; ++i) {
    ThreadState& t = L.threads[i];
    t.idx = {i % L.block.x, (i / L.block.x) % L.block.y, i / (L.block.x * L.block.y)};
    t.linear = i;
    t.warp = i / 32;
    t.lane = i % 32;
    t.state = State::Runnable;
    t.started = false;
    t.syncs = 0;
    t.untraced = false;
    t.groups.clear();
    t.open_group.clear();
    t.stack_size = L.cfg.stack_bytes;
    t.stack_lo = g_stacks.get(i, L.cfg.stack_bytes);
    t.sp = make_stack(t.stack_lo, t.stack_size, &t);
    t.asan_fake = nullptr;
  }
  PROGAN_EMU_TRACE_EVENT(trace::block_begin(L));
  const bool by_warp = L.cfg.thread_order == Order::Warps || L.cfg.thread_order == Order::WarpsReverse;
  // The lane order of the round-robin orders; the warp orders walk warps and lanes themselves.
  const std::vector<unsigned> order = by_warp ? std::vector<unsigned>{} : make_order(L.nthreads, L.cfg.thread_order, rng);
  unsigned live = L.nthreads;
  // Runs thread i, if runnable, until it blocks or exits, and records where it stopped; false if
  // it could not run.
  const auto step = [&](unsigned i) {
    ThreadState& t = L.threads[i];
    if (t.state != State::Runnable) return false;
    enter(L, t);
    if (!L.error.empty()) throw Error(L.error);
    switch (t.state) {
      case State::Exited:
        --live;
        on_exit(L, t);
        break;
      case State::Barrier:
        if (L.exited > 0)
          launch_error(L, &t, "divergent __syncthreads: " + std::to_string(L.exited) +
                                  " threads of this block exited before reaching the barrier");
        if (++L.at_barrier == L.nthreads) release_barrier(L);
        break;
      case State::Collective:
        L.warp_waiting[t.warp] |= 1u << t.lane;
        try_resolve(L, t);
        break;
      case State::Runnable:
        break;
    }
    return true;
  };
  while (live > 0) {
    bool ran = false;
    if (by_warp) {  // a warp's lanes until none can run (all at a barrier, or exited), then the next warp
      for (unsigned k = 0; k < L.warps; ++k) {
        const unsigned w = L.cfg.thread_order == Order::WarpsReverse ? L.warps - 1 - k : k;
        const unsigned lo = w * 32, hi = std::min(L.nthreads, lo + 32);
        for (bool progress = true; progress;) {
          progress = false;
          for (unsigned i = lo; i < hi; ++i) progress = step(i) || progress;
          ran = ran || progress;
        }
      }
    } else {
      for (unsigned i : order) ran = step(i) || ran;
    }
    if (live > 0 && !ran) deadlock(L);
  }
  PROGAN_EMU_TRACE_EVENT(trace::block_end(L));
}

}  // namespace detail

using namespace detail;

// ================================================================================================
// Fiber entry: runs the kernel body for one thread, records an error instead of unwinding past
// the fiber, then returns to the scheduler for good.
extern "C" [[noreturn]] void progan_emu_fiber_main(void* thread) {
  auto* t = static_cast<ThreadState*>(thread);
  Launch& L = *g_launch;
#ifdef PROGAN_EMU_ASAN
  const void* lo = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(nullptr, &lo, &size);
  if (L.main_stack_lo == nullptr) {
    L.main_stack_lo = lo;
    L.main_stack_size = size;
  }
#endif
  try {
    (*L.body)();
  } catch (const Error& e) {
    L.error = std::string(e.what()).rfind("CUDA emulator:", 0) == 0 ? e.what()
                                                                    : "CUDA emulator: " + std::string(e.what()) +
                                                                          " [" + where(L, t) + "]";
  } catch (const std::exception& e) {
    L.error = "CUDA emulator: exception in device code: " + std::string(e.what()) + " [" + where(L, t) + "]";
  } catch (...) {
    L.error = "CUDA emulator: unknown exception in device code [" + where(L, t) + "]";
  }
  t->state = State::Exited;
  leave(L, *t, /*final=*/true);
  __builtin_unreachable();
}

// ================================================================================================
// Launch.

Config config_from_env() {
  Config c;
  auto order = [](const char* var, Order def, bool warps) {
    const char* v = std::getenv(var);
    if (v == nullptr || *v == 0) return def;
    const std::string s(v);
    if (s == "forward") return Order::Forward;
    if (s == "reverse") return Order::Reverse;
    if (s == "shuffle") return Order::Shuffle;
    if (warps && s == "warps") return Order::Warps;
    if (warps && s == "warps-reverse") return Order::WarpsReverse;
    throw Error(std::string("CUDA emulator: ") + var + " must be " +
                (warps ? "forward, reverse, shuffle, warps or warps-reverse" : "forward, reverse or shuffle") +
                ", got '" + s + "'");
  };
  c.block_order = order("PROGAN_EMU_BLOCK_ORDER", Order::Forward, false);
  c.thread_order = order("PROGAN_EMU_THREAD_ORDER", Order::Forward, true);
  if (const char* v = std::getenv("PROGAN_EMU_SEED")) c.seed = std::strtoull(v, nullptr, 10);
  if (const char* v = std::getenv("PROGAN_EMU_TF32")) {
    const std::string s(v);
    if (s != "rna" && s != "truncate" && !s.empty())
      throw Error("CUDA emulator: PROGAN_EMU_TF32 must be rna or truncate, got '" + s + "'");
    c.tf32_truncate = s == "truncate";
  }
  if (const char* v = std::getenv("PROGAN_EMU_STACK_KB")) c.stack_bytes = std::max(64ul, std::strtoul(v, nullptr, 10)) * 1024;
  if (const char* v = std::getenv("PROGAN_EMU_ASYNC_LAND")) {
    const std::string s(v);
    if (s != "wait" && s != "issue" && !s.empty())
      throw Error("CUDA emulator: PROGAN_EMU_ASYNC_LAND must be wait or issue, got '" + s + "'");
    c.async_land_at_issue = s == "issue";
  }
  if (const char* v = std::getenv("PROGAN_EMU_DRY_RUN")) {
    const std::string s(v);
    if (s != "0" && s != "1" && !s.empty())
      throw Error("CUDA emulator: PROGAN_EMU_DRY_RUN must be 0 or 1, got '" + s + "'");
    c.dry_run = s == "1";
  }
  return c;
}

const Config& active_config() {  // also from the scheduler, which runs the WMMA collectives
  if (g_launch == nullptr) throw Error("progan_ext emulator: no kernel launch is running");
  return g_launch->cfg;
}

void launch_raw(const void* kernel, const char* name, dim3 grid, dim3 block, size_t dynamic_smem,
                const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Launch L;
  L.kernel = kernel;
  L.name = name;
  L.grid = grid;
  L.block = block;
  L.dynamic_smem = dynamic_smem;
  L.body = &body;
  L.cfg = config_from_env();
  auto bad = [&](const std::string& what) {
    throw Error(std::string("CUDA emulator: invalid launch configuration (CUDA: invalid configuration argument): ") +
                what + " [kernel " + name + "]");
  };
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0) bad("a block dimension is 0");
  if (block.x > Limits::kMaxBlockX || block.y > Limits::kMaxBlockY || block.z > Limits::kMaxBlockZ)
    bad("block " + fmt3(block) + " exceeds (1024, 1024, 64)");
  if (threads > Limits::kMaxThreads) bad(std::to_string(threads) + " threads per block exceed 1024");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) bad("grid " + fmt3(grid) + " has a zero dimension");
  if (grid.x > Limits::kMaxGridX || grid.y > Limits::kMaxGridYZ || grid.z > Limits::kMaxGridYZ)
    bad("grid " + fmt3(grid) + " exceeds (2^31-1, 65535, 65535)");
  auto it = g_max_dynamic.find(kernel);
  L.attribute_set = it != g_max_dynamic.end();
  L.max_dynamic = L.attribute_set ? it->second : Limits::kDefaultSmem;
  if (dynamic_smem > L.max_dynamic)
    bad(std::to_string(dynamic_smem) + " bytes of dynamic shared memory exceed the kernel's limit of " +
        std::to_string(L.max_dynamic) + (it == g_max_dynamic.end() ? " (48 KB without cudaFuncSetAttribute)" : ""));
  if (L.cfg.dry_run) {  // configuration checked above; no block runs
    ++g_stats.launches;
    return;
  }
  L.nthreads = unsigned(threads);
  L.warps = (L.nthreads + 31) / 32;
  L.threads.resize(L.nthreads);
  // Arena: 48 KB for static declarations, then the dynamic part (cudaFuncSetAttribute raises it).
  L.dynamic_offset = Limits::kDefaultSmem;
  std::vector<unsigned char> arena_storage(L.dynamic_offset + dynamic_smem + 1024);
  L.arena = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(arena_storage.data()) + 1023) & ~uintptr_t(1023));

  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  std::mt19937_64 rng(L.cfg.seed * 0x9E3779B97F4A7C15ull + g_stats.launches);
  std::vector<uint64_t> blocks(nblocks);
  for (uint64_t i = 0; i < nblocks; ++i) blocks[i] = L.cfg.block_order == Order::Reverse ? nblocks - 1 - i : i;
  if (L.cfg.block_order == Order::Shuffle) std::shuffle(blocks.begin(), blocks.end(), rng);

  Launch* previous = g_launch;
  g_launch = &L;
  struct Restore {
    Launch* prev;
    ~Restore() { g_launch = prev; }
  } restore{previous};
  ++g_stats.launches;
  PROGAN_EMU_TRACE_EVENT(trace::launch_begin(L));
  for (uint64_t b : blocks) {
    L.block_idx = {unsigned(b % grid.x), unsigned((b / grid.x) % grid.y), unsigned(b / (uint64_t(grid.x) * grid.y))};
    try {
      run_block(L, rng);
    } catch (...) {
      for (unsigned i = 0; i < L.nthreads; ++i) g_stacks.dirty[i] = true;  // fibers left mid-call
      throw;
    }
    ++g_stats.blocks;
    g_stats.threads += L.nthreads;
  }
}

Stats stats() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_stats;
}

}  // namespace progan_emu
