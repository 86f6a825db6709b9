// progan_ext CUDA emulator: the execution model (launch, blocks, threads as fibers, barriers, warp
// collectives) that lets the kernels of csrc/cuda run on the CPU with CUDA's semantics kept strict
// enough that the bugs a GPU would expose show up here (see ../../README.md, "Emulated CUDA").
//
// Model. A launch runs its blocks one after another, in a selectable order (forward, reverse or
// shuffled: a kernel whose result depends on block order is wrong on a GPU). Each CUDA thread of
// a block is a fiber with its own stack (a hand-written context switch, runtime.cpp). The
// scheduler runs each runnable thread, in a selectable thread order, until it blocks (at
// __syncthreads, a warp collective or a WMMA operation) or exits; a blocking point resolves once
// every thread it names has arrived at the same point. Shared memory is a per-block arena filled
// with 0xFF bytes (NaN in every float type) before each block: a value read before any thread of
// the block wrote it shows up as NaN. Everything runs on the calling OS thread; launches are
// serialised by a global mutex.
//
// Errors (a divergent barrier, a deadlock, a bad warp mask, a WMMA misuse, a launch over the
// limits, __trap) throw progan_emu::Error naming the kernel, the block, the thread and the rule;
// the host code turns it into a Python RuntimeError. Nothing here may hang or crash the process.
//
// What the model cannot show: timing, coalescing and bank conflicts, weak memory ordering (the
// emulator is sequentially consistent), races between blocks (they never overlap), and the GPU
// compiler's own code generation (FMA contraction, rsqrtf ulps, flush-to-zero).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

// The op namespace of the emulated module: progan_ext_emu, or progan_ext_emu_trace in the
// memory-tracing build (progan_ext._emu_trace, tracer.h), so that the two modules load side by side.
#ifndef PROGAN_EMU_NS
#define PROGAN_EMU_NS progan_ext_emu
#endif
// TORCH_LIBRARY / _FRAGMENT paste their namespace argument unexpanded: these expand it first.
#define PROGAN_EMU_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define PROGAN_EMU_LIBRARY_FRAGMENT(ns, m) TORCH_LIBRARY_FRAGMENT(ns, m)

namespace progan_emu {

// ---- CUDA's index types ------------------------------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

// ---- errors ------------------------------------------------------------------------------------
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws Error("<rule>: <detail>") from device code; the launch adds kernel, block and thread.
[[noreturn]] void fail(const std::string& what);

// ---- launch configuration ----------------------------------------------------------------------
// Forward / Reverse / Shuffle: the order of threads (or blocks) in each round-robin pass, every
// runnable thread running until it blocks; warps then stay in step at every warp collective and
// WMMA operation. Warps / WarpsReverse (threads only): one warp at a time, each as far as it can
// go (to the next __syncthreads, or its exit) before the next warp starts, so that warps are a
// whole barrier interval apart: a missing __syncthreads between two phases that each end in a
// warp collective (a WMMA store after a WMMA loop, say) then shows up, which the lockstep of the
// round-robin orders hides.
enum class Order { Forward, Reverse, Shuffle, Warps, WarpsReverse };

struct Config {
  Order block_order = Order::Forward;
  Order thread_order = Order::Forward;
  uint64_t seed = 0;          // for the shuffled orders and the WMMA element maps
  bool tf32_truncate = false;  // how mma treats fp32 operands the code did not convert to TF32
  size_t stack_bytes = 256 * 1024;
  bool dry_run = false;  // check and count launches, run no block (PROGAN_EMU_DRY_RUN=1)
  // When a cp.async lands: at the matching wait_group (the latest a GPU allows: a read before the
  // wait sees the old contents), or at issue (the earliest: a copy into a slot that another warp
  // may still be reading overwrites it at once). PROGAN_EMU_ASYNC_LAND = wait | issue.
  bool async_land_at_issue = false;
};
// The configuration of the next launches: PROGAN_EMU_BLOCK_ORDER (forward | reverse | shuffle),
// PROGAN_EMU_THREAD_ORDER (the same, or warps | warps-reverse), PROGAN_EMU_SEED, PROGAN_EMU_TF32
// (rna | truncate), PROGAN_EMU_ASYNC_LAND (wait | issue), PROGAN_EMU_STACK_KB, PROGAN_EMU_DRY_RUN,
// read from the environment at every launch. A dry run
// checks each launch's configuration (grid, block, shared memory) and counts it, but runs none of
// its blocks: outputs keep whatever their allocation held. It walks the host code's decisions
// (paths, workspaces, grids) at shapes too large to emulate, e.g. every layer of the official
// networks (tests/test_conv_coverage.py).
Config config_from_env();
const Config& active_config();  // of the running launch

// ---- the running thread (valid inside device code only) ---------------------------------------
struct ThreadState;
ThreadState& current();  // fails outside a launch
uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();
unsigned lane_id();

// ---- blocking points ---------------------------------------------------------------------------
void syncthreads(const void* site);

// Warp collectives: each lane contributes `value` (and an argument); the result for this lane.
enum class Collective { ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, SyncWarp, Wmma };
const char* collective_name(Collective c);
uint64_t warp_collective(Collective kind, const void* site, unsigned mask, uint64_t value, int arg, int width);

// A WMMA operation: every lane of the warp passes the same arguments; `run` is called once, in
// the last lane to arrive, with the per-lane argument records of all 32 lanes.
struct WmmaArgs {
  const char* op = nullptr;  // "load_matrix_sync", ...
  const void* ptr = nullptr;
  unsigned ldm = 0;
  int layout = 0;
  void* frag = nullptr;   // this lane's fragment (d for mma)
  const void* a = nullptr;
  const void* b = nullptr;
  const void* c = nullptr;
  bool operator==(const WmmaArgs& o) const {
    return op == o.op && ptr == o.ptr && ldm == o.ldm && layout == o.layout;
  }
};
void wmma_collective(const void* site, const WmmaArgs& mine, const std::function<void(const WmmaArgs* lanes)>& run);

// cp.async (16 bytes, destination written at the matching wait), per thread.
void async_copy16(void* smem_dst, const void* gsrc, bool valid);
void async_commit();
void async_wait(int pending_allowed);

// Shared memory of the running block. `tag` identifies one __shared__ declaration (one per site
// and template instantiation): the first thread to reach it allocates, all get the same address.
void* shared_static(const void* tag, size_t bytes, size_t align);
void* shared_dynamic();

// The limits a launch is checked against (an sm_90 device).
struct Limits {
  static constexpr unsigned kMaxThreads = 1024, kMaxBlockX = 1024, kMaxBlockY = 1024, kMaxBlockZ = 64;
  static constexpr uint64_t kMaxGridX = 2147483647ull, kMaxGridYZ = 65535;
  static constexpr size_t kDefaultSmem = 48 * 1024;       // without cudaFuncSetAttribute
  static constexpr size_t kMaxSmemOptIn = 227 * 1024;     // per block, with it
};
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
void set_max_dynamic_smem(const void* kernel, size_t bytes);
void reset_max_dynamic_smem(const void* kernel);  // back to the 48 KB default (tests)

// ---- launching ---------------------------------------------------------------------------------
// Runs `body` (one CUDA thread) for every thread of every block. `kernel` keys the per-kernel
// attributes; `name` is what error messages call the kernel.
void launch_raw(const void* kernel, const char* name, dim3 grid, dim3 block, size_t dynamic_smem,
                const std::function<void()>& body);

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), const char* name, dim3 grid, dim3 block, size_t dynamic_smem,
            Args&&... args) {
  // The arguments are copied once, as CUDA copies them to the parameter buffer; every thread sees
  // the same values (kernels taking non-const references would not compile with nvcc either).
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  launch_raw(reinterpret_cast<const void*>(kernel), name, grid, block, dynamic_smem,
             [&] { std::apply(kernel, params); });
}

#ifdef PROGAN_EMU_TRACE
// Memory-access tracer (tracer.h): one warp-wide WMMA load or store of a rows x cols matrix of
// `elem`-byte elements at p (leading dimension ldm, in elements; col: stored column by column),
// reported once per warp. The lanes' own loads and stores reach the tracer through the
// compiler's instrumentation instead (tsan_hooks.cpp).
void trace_matrix(const void* site, const void* p, unsigned ldm, int rows, int cols, unsigned elem, bool col,
                  bool store, bool accumulator);
// The running lane's accesses are not counted while muted: emulator code compiled into the kernel
// units (the WMMA collectives' std::function, which may allocate) is not kernel memory traffic.
void trace_mute(bool muted);
struct TraceMute {
  TraceMute() { trace_mute(true); }
  ~TraceMute() { trace_mute(false); }
};
#define PROGAN_EMU_UNTRACED ::progan_emu::TraceMute progan_emu_untraced_
#else
#define PROGAN_EMU_UNTRACED
#endif

// Statistics of the launches so far (tests of the emulator itself).
struct Stats {
  uint64_t launches = 0, blocks = 0, threads = 0, switches = 0;
};
Stats stats();

}  // namespace progan_emu
