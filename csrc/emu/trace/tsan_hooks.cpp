// progan_ext CUDA emulator, memory-tracing build: the functions that -fsanitize=thread makes the
// compiler call from the instrumented kernel translation units, defined here instead of by the
// ThreadSanitizer runtime (which is not linked). Loads and stores go to the tracer (tracer.h) when
// tracing is on, and cost a call and a test when it is off; the site of an access is the hook's
// return address, an instruction of the kernel code. Atomics (from host code inlined into those
// units: tensor reference counts, ...) are performed, sequentially consistent, and not traced.
// This file itself is compiled without instrumentation. The set of functions is what GCC 12 emits
// (`nm -u` on an instrumented object), plus their unaligned and volatile variants.

#include <cstdint>

#include "../tracer.h"

#define PROGAN_HOOK(name, bytes, store)                                                 \
  void name(void* addr) {                                                               \
    if (progan_emu::trace::g_on)                                                        \
      progan_emu::trace::access(__builtin_return_address(0), addr, bytes, store);        \
  }
#define PROGAN_HOOKS(bytes)                                       \
  PROGAN_HOOK(__tsan_read##bytes, bytes, false)                   \
  PROGAN_HOOK(__tsan_write##bytes, bytes, true)                   \
  PROGAN_HOOK(__tsan_unaligned_read##bytes, bytes, false)         \
  PROGAN_HOOK(__tsan_unaligned_write##bytes, bytes, true)         \
  PROGAN_HOOK(__tsan_volatile_read##bytes, bytes, false)          \
  PROGAN_HOOK(__tsan_volatile_write##bytes, bytes, true)

// Atomic read-modify-writes of one integer width, as the tsan interface declares them (the memory
// order arguments are ignored: everything is sequentially consistent).
#define PROGAN_ATOMICS(bits, T)                                                                    \
  T __tsan_atomic##bits##_load(const volatile T* a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); } \
  void __tsan_atomic##bits##_store(volatile T* a, T v, int) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); } \
  T __tsan_atomic##bits##_exchange(volatile T* a, T v, int) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); } \
  T __tsan_atomic##bits##_fetch_add(volatile T* a, T v, int) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); } \
  T __tsan_atomic##bits##_fetch_sub(volatile T* a, T v, int) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); } \
  T __tsan_atomic##bits##_fetch_and(volatile T* a, T v, int) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); } \
  T __tsan_atomic##bits##_fetch_or(volatile T* a, T v, int) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); }   \
  T __tsan_atomic##bits##_fetch_xor(volatile T* a, T v, int) { return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); } \
  T __tsan_atomic##bits##_fetch_nand(volatile T* a, T v, int) { return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST); } \
  int __tsan_atomic##bits##_compare_exchange_strong(volatile T* a, T* expected, T v, int, int) {   \
    return __atomic_compare_exchange_n(a, expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);  \
  }                                                                                                \
  int __tsan_atomic##bits##_compare_exchange_weak(volatile T* a, T* expected, T v, int, int) {     \
    return __atomic_compare_exchange_n(a, expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);  \
  }                                                                                                \
  T __tsan_atomic##bits##_compare_exchange_val(volatile T* a, T expected, T v, int, int) {         \
    __atomic_compare_exchange_n(a, &expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);        \
    return expected;                                                                               \
  }

extern "C" {

PROGAN_HOOKS(1)
PROGAN_HOOKS(2)
PROGAN_HOOKS(4)
PROGAN_HOOKS(8)
PROGAN_HOOKS(16)

void __tsan_read_range(void* addr, unsigned long size) {
  if (progan_emu::trace::g_on)
    progan_emu::trace::access(__builtin_return_address(0), addr, static_cast<unsigned>(size), false);
}
void __tsan_write_range(void* addr, unsigned long size) {
  if (progan_emu::trace::g_on)
    progan_emu::trace::access(__builtin_return_address(0), addr, static_cast<unsigned>(size), true);
}

// Function entry and exit (a race detector's shadow call stack), virtual-table pointer checks and
// the runtime's initialisation: nothing to do here.
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_init() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}

PROGAN_ATOMICS(8, int8_t)
PROGAN_ATOMICS(16, int16_t)
PROGAN_ATOMICS(32, int32_t)
PROGAN_ATOMICS(64, int64_t)

void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

}  // extern "C"
