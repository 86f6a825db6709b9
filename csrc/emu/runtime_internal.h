// Internal to the CUDA emulator (runtime.cpp: scheduler and launches; device_api.cpp: what device
// code calls): the state of a launch and of its threads. Not for kernel code, which sees runtime.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime.h"

namespace progan_emu {

// Where a thread is: runnable, or blocked at a barrier or a warp collective, or done.
enum class State { Runnable, Barrier, Collective, Exited };

// One cp.async in flight: its destination and the 16 bytes read at issue.
struct PendingCopy {
  void* dst;
  unsigned char data[16];
};

// One CUDA thread: its fiber, its indices and its current blocking point.
struct ThreadState {
  void* sp = nullptr;  // saved stack pointer while switched out
  char* stack_lo = nullptr;
  size_t stack_size = 0;
  void* asan_fake = nullptr;
  uint3 idx{0, 0, 0};
  unsigned linear = 0, warp = 0, lane = 0;
  State state = State::Runnable;
  bool started = false;
  unsigned syncs = 0;  // blocking points passed: the memory tracer's request epochs
  bool untraced = false;  // in emulator code the memory tracer must not count (trace_mute)
  // blocking point
  const void* site = nullptr;
  Collective kind = Collective::SyncWarp;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int arg = 0, width = 32;
  WmmaArgs wmma;
  const std::function<void(const WmmaArgs*)>* wmma_run = nullptr;
  // cp.async: committed groups (oldest first) and the group being filled
  std::vector<std::vector<PendingCopy>> groups;
  std::vector<PendingCopy> open_group;
};

namespace detail {

constexpr unsigned char kPoison = 0xFF;  // NaN in half, bfloat16, float and double; -1 in integers

// One kernel launch: the block being run and its threads, shared-memory arena and errors.
struct Launch {
  const void* kernel = nullptr;
  const char* name = "";
  dim3 grid, block;
  size_t dynamic_smem = 0, max_dynamic = 0;
  const std::function<void()>* body = nullptr;
  Config cfg;
  uint3 block_idx{0, 0, 0};
  unsigned nthreads = 0, warps = 0;
  std::vector<ThreadState> threads;
  ThreadState* running = nullptr;
  void* scheduler_sp = nullptr;
  const void* main_stack_lo = nullptr;
  size_t main_stack_size = 0;
  // shared memory arena: static declarations first, the dynamic part at dynamic_offset
  unsigned char* arena = nullptr;
  size_t static_used = 0, dynamic_offset = 0;
  std::vector<std::pair<const void*, size_t>> static_slots;  // tag -> offset, this block
  bool attribute_set = false;  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize) was called
  std::string error;   // first error of this block
  unsigned exited = 0, at_barrier = 0;
  // Per warp: lanes that have exited, and lanes waiting at a collective (bit masks), so that the
  // checks at every arrival are O(1) and resolution is tried only when a mask can be complete.
  std::vector<unsigned> warp_exited, warp_waiting;
};

extern std::mutex g_mutex;                       // one launch at a time
extern Launch* g_launch;                         // the launch being run (under g_mutex)
extern std::map<const void*, size_t> g_max_dynamic;  // cudaFuncSetAttribute, per kernel
extern Stats g_stats;

// Switches from thread t back to the scheduler (final: t has exited and never resumes).
void leave(Launch& L, ThreadState& t, bool final);
Launch& launch_or_fail();  // the running launch, or an error for device code called outside one
std::string hex(unsigned v);
std::string where(const Launch& L, const ThreadState* t);  // "kernel K, block B, thread T (...)"
[[noreturn]] void launch_error(const Launch& L, const ThreadState* t, const std::string& what);
unsigned warp_size(const Launch& L, unsigned warp);
unsigned warp_lanes_mask(const Launch& L, unsigned warp);

}  // namespace detail
}  // namespace progan_emu
