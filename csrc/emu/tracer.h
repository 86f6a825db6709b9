// progan_ext CUDA emulator: the memory-access tracer of the memory-tracing build
// (progan_ext._emu_trace, PROGAN_EXT_EMULATE=trace; docs/memory_access.md).
//
// The kernel translation units of that build are compiled with -fsanitize=thread, which makes the
// compiler call __tsan_read4(addr), __tsan_write16(addr), ... before every load and store that
// may touch memory other than the function's own stack; tsan_hooks.cpp defines those functions
// (no ThreadSanitizer runtime is linked) and hands each access, with its site (the hook's return
// address), to access() below. The emulator's own code (runtime.cpp, device_api.cpp, this file)
// is compiled without instrumentation, and reports the accesses it makes for the kernels
// (cp.async, WMMA) explicitly.
//
// What an access is: while a lane runs kernel code, an address in the running block's
// shared-memory arena is shared memory; an address on the lane's own fiber stack is a register
// or local variable (not counted); one on the launching thread's stack is a kernel parameter or an
// emulator frame (not counted); anything else is global memory. Outside a lane (host code, the
// scheduler) nothing is counted.
//
// Warp-wide requests: lanes run one after another between blocking points (a barrier or a warp
// collective), so the k-th execution of a site by each lane of a warp since the warp's last
// blocking point is one warp-wide instruction, as on the GPU for convergent code. Requests are
// measured when they are complete: at a barrier, a full-warp collective, or the end of the block.
#pragma once

#include "runtime_internal.h"

#ifdef PROGAN_EMU_TRACE

namespace progan_emu {
namespace trace {

extern bool g_on;  // tracing enabled (torch.ops.progan_ext_emu_trace.trace_enable)

// One load or store of `bytes` bytes at addr by the running lane, from the instruction at `site`.
void access(const void* site, const void* addr, unsigned bytes, bool store);
// cp.async: a 16-byte global load (src; nullptr when zero-filled) and a 16-byte shared store.
void copy16(const void* site, const void* dst, const void* src);

// Scheduler events.
void launch_begin(detail::Launch& L);
void block_begin(detail::Launch& L);
void barrier(detail::Launch& L);                     // every thread of the block at __syncthreads
void warp_synced(detail::Launch& L, unsigned warp);  // every lane of the warp at one collective
void block_end(detail::Launch& L);

}  // namespace trace
}  // namespace progan_emu

#define PROGAN_EMU_TRACE_EVENT(call)            \
  do {                                          \
    if (::progan_emu::trace::g_on) ::progan_emu::call; \
  } while (0)

#else
#define PROGAN_EMU_TRACE_EVENT(call) \
  do {                               \
  } while (0)
#endif
