// progan_ext._emu: the CUDA kernels of csrc/cuda compiled for the CPU emulator (runtime.h) and
// registered for CPU tensors as torch.ops.progan_ext_emu.<op>, with the same schemas as
// torch.ops.progan_ext.<op> (csrc/schemas.h). Built only with PROGAN_EXT_EMULATE=1; the
// product's modules are unchanged by it. Also defines emu_stats (launch counters) for tests.

#include <Python.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "../schemas.h"
#include "runtime.h"

namespace progan_ext {
namespace cuda {

// The compute capability the emulated device reports to the host code: 90 (an H100) unless
// PROGAN_EMU_SM says otherwise, e.g. PROGAN_EMU_SM=75 to take the paths of a pre-Ampere GPU.
int emulated_sm() {
  const char* v = std::getenv("PROGAN_EMU_SM");
  if (v == nullptr || *v == 0) return 90;
  const int sm = std::atoi(v);
  TORCH_CHECK_VALUE(sm >= 50 && sm <= 120, "PROGAN_EMU_SM must be a compute capability such as 75 or 90, got '",
                    v, "'");
  return sm;
}

int emulated_kernel_arch() {
  const char* v = std::getenv("PROGAN_EMU_KERNEL_ARCH");
  if (v == nullptr || *v == 0) return emulated_sm();
  const int arch = std::atoi(v);
  TORCH_CHECK_VALUE(arch >= 50 && arch <= 120, "PROGAN_EMU_KERNEL_ARCH must be an arch such as 75 or 90, got '", v,
                    "'");
  return arch;
}

}  // namespace cuda
}  // namespace progan_ext

namespace {

// "launches=...;blocks=...;threads=...;switches=..." since the module was loaded.
std::string emu_stats() {
  const progan_emu::Stats s = progan_emu::stats();
  return "launches=" + std::to_string(s.launches) + ";blocks=" + std::to_string(s.blocks) +
         ";threads=" + std::to_string(s.threads) + ";switches=" + std::to_string(s.switches);
}

}  // namespace

PROGAN_EMU_LIBRARY(PROGAN_EMU_NS, m) {
  progan_ext::define_schemas(m);
  m.def("emu_stats() -> str", &emu_stats);
}

#define PROGAN_EMU_CAT2(a, b) a##b
#define PROGAN_EMU_CAT(a, b) PROGAN_EMU_CAT2(a, b)
#define PROGAN_EMU_STR2(x) #x
#define PROGAN_EMU_STR(x) PROGAN_EMU_STR2(x)

// PyInit__emu, or PyInit__emu_trace for the memory-tracing build (TORCH_EXTENSION_NAME, set by the build).
PyMODINIT_FUNC PROGAN_EMU_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, PROGAN_EMU_STR(TORCH_EXTENSION_NAME),
      "progan_ext CUDA kernels run by the CPU emulator (registered in torch.ops." PROGAN_EMU_STR(PROGAN_EMU_NS) ")", -1,
      nullptr};
  return PyModule_Create(&module_def);
}
