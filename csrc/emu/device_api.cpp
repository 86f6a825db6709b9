// progan_ext CUDA emulator: the device-side API that kernel code calls through runtime.h
// (barriers, warp collectives, WMMA, cp.async, shared memory); each call checks CUDA's rules and
// blocks the calling fiber where the GPU would wait.

#include <algorithm>
#include <cstring>
#include <string>

#include "runtime_internal.h"
#include "tracer.h"

namespace progan_emu {

using namespace detail;

void fail(const std::string& what) {
  Launch& L = launch_or_fail();
  launch_error(L, L.running, what);
}

ThreadState& current() { return *launch_or_fail().running; }
uint3 thread_idx() { return current().idx; }
uint3 block_idx() { return launch_or_fail().block_idx; }
dim3 block_dim() { return launch_or_fail().block; }
dim3 grid_dim() { return launch_or_fail().grid; }
unsigned lane_id() { return current().lane; }

const char* collective_name(Collective c) {
  switch (c) {
    case Collective::ShflIdx: return "__shfl_sync";
    case Collective::ShflUp: return "__shfl_up_sync";
    case Collective::ShflDown: return "__shfl_down_sync";
    case Collective::ShflXor: return "__shfl_xor_sync";
    case Collective::Ballot: return "__ballot_sync";
    case Collective::Any: return "__any_sync";
    case Collective::All: return "__all_sync";
    case Collective::SyncWarp: return "__syncwarp";
    case Collective::Wmma: return "a wmma operation";
  }
  return "?";
}

void syncthreads(const void* site) {
  Launch& L = launch_or_fail();
  ThreadState& t = *L.running;
  t.site = site;
  t.state = State::Barrier;
  leave(L, t, false);
}

uint64_t warp_collective(Collective kind, const void* site, unsigned mask, uint64_t value, int arg, int width) {
  Launch& L = launch_or_fail();
  ThreadState& t = *L.running;
  const char* name = collective_name(kind);
  if (!(mask >> t.lane & 1))
    launch_error(L, &t, std::string(name) + " called by a lane that its mask " + hex(mask) + " does not name");
  const unsigned lanes = warp_lanes_mask(L, t.warp);
  if (mask & ~lanes)
    launch_error(L, &t, std::string(name) + " mask " + hex(mask) + " names lanes that do not exist (this warp has " +
                            std::to_string(warp_size(L, t.warp)) + " threads)");
  if (width < 1 || width > 32 || (width & (width - 1)))
    launch_error(L, &t, std::string(name) + " width must be a power of two in [1, 32], got " + std::to_string(width));
  if (const unsigned gone = mask & L.warp_exited[t.warp])
    launch_error(L, &t, std::string(name) + " mask " + hex(mask) + " names lane " + std::to_string(__builtin_ctz(gone)) +
                            ", which has exited");
  t.site = site;
  t.kind = kind;
  t.mask = mask;
  t.value = value;
  t.arg = arg;
  t.width = width;
  t.state = State::Collective;
  leave(L, t, false);
  return t.result;
}

void wmma_collective(const void* site, const WmmaArgs& mine, const std::function<void(const WmmaArgs*)>& run) {
  Launch& L = launch_or_fail();
  ThreadState& t = *L.running;
  if (warp_size(L, t.warp) != 32)
    launch_error(L, &t, std::string("wmma::") + mine.op + " needs a full warp of 32 threads");
  if (const unsigned gone = L.warp_exited[t.warp])
    launch_error(L, &t, std::string("wmma::") + mine.op + ": lane " + std::to_string(__builtin_ctz(gone)) +
                            " of the warp has exited");
  t.site = site;
  t.kind = Collective::Wmma;
  t.mask = 0xffffffffu;
  t.wmma = mine;
  t.wmma_run = &run;
  t.state = State::Collective;
  leave(L, t, false);
}

// ---- cp.async ----------------------------------------------------------------------------------
void async_copy16(void* dst, const void* src, bool valid) {
  Launch& L = launch_or_fail();
  ThreadState& t = *L.running;
  auto* d = static_cast<unsigned char*>(dst);
  const bool in_static = d >= L.arena && d + 16 <= L.arena + L.static_used;
  const bool in_dynamic = d >= L.arena + L.dynamic_offset && d + 16 <= L.arena + L.dynamic_offset + L.dynamic_smem;
  if (!in_static && !in_dynamic) launch_error(L, &t, "cp.async destination is not in the block's shared memory");
  if (reinterpret_cast<uintptr_t>(dst) % 16 || (valid && reinterpret_cast<uintptr_t>(src) % 16))
    launch_error(L, &t, "cp.async of 16 bytes needs 16-byte aligned source and destination");
  // The tracer sees the copy as what it is on the GPU: a 16-byte global load and shared store.
  PROGAN_EMU_TRACE_EVENT(trace::copy16(__builtin_return_address(0), dst, valid ? src : nullptr));
  PendingCopy c;
  c.dst = dst;
  if (valid) std::memcpy(c.data, src, 16);  // the source is read at issue ...
  else std::memset(c.data, 0, 16);          // ... or zero-filled (src-size 0)
  if (L.cfg.async_land_at_issue) std::memcpy(dst, c.data, 16);  // ... and lands now (the earliest)
  else t.open_group.push_back(c);                                // ... or at the wait (the latest)
}

void async_commit() {
  ThreadState& t = current();
  t.groups.push_back(std::move(t.open_group));
  t.open_group.clear();
}

void async_wait(int pending_allowed) {
  ThreadState& t = current();
  // ... and the destination written only here: a read before the wait sees poison or stale data.
  while (t.groups.size() > size_t(std::max(0, pending_allowed))) {
    for (const PendingCopy& c : t.groups.front()) std::memcpy(c.dst, c.data, 16);
    t.groups.erase(t.groups.begin());
  }
}

// ---- shared memory -----------------------------------------------------------------------------
void* shared_static(const void* tag, size_t bytes, size_t align) {
  Launch& L = launch_or_fail();
  for (const auto& s : L.static_slots)
    if (s.first == tag) return L.arena + s.second;
  const size_t off = (L.static_used + align - 1) / align * align, end = off + bytes;
  if (end > Limits::kDefaultSmem)
    launch_error(L, L.running, "static shared memory of " + std::to_string(end) +
                                   " bytes exceeds the 48 KB a kernel may declare");
  const size_t limit = L.attribute_set ? Limits::kMaxSmemOptIn : Limits::kDefaultSmem;
  if (end + L.dynamic_smem > limit)
    launch_error(L, L.running, "static (" + std::to_string(end) + " B) plus dynamic (" +
                                   std::to_string(L.dynamic_smem) + " B) shared memory exceed " +
                                   std::to_string(limit / 1024) + " KB" +
                                   (L.attribute_set ? "" : " (raise it with cudaFuncSetAttribute(MaxDynamicSharedMemorySize))"));
  L.static_slots.push_back({tag, off});
  L.static_used = end;
  std::memset(L.arena + off, kPoison, bytes);  // poisoned for every block
  return L.arena + off;
}

void* shared_dynamic() {
  Launch& L = launch_or_fail();
  return L.arena + L.dynamic_offset;
}

void set_max_dynamic_smem(const void* kernel, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (bytes > Limits::kMaxSmemOptIn)
    throw Error("CUDA emulator: cudaFuncSetAttribute(MaxDynamicSharedMemorySize, " + std::to_string(bytes) +
                ") exceeds the 227 KB a block can have");
  g_max_dynamic[kernel] = bytes;
}

void reset_max_dynamic_smem(const void* kernel) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_max_dynamic.erase(kernel);
}

}  // namespace progan_emu
