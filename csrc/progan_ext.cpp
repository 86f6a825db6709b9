// progan_ext: the compiled module. Importing it (as the Python module progan_ext._C) runs the
// static registrations: the schemas here (from csrc/schemas.h, the one place they are written),
// the CPU kernels (csrc/cpu) and, in a CUDA build, the CUDA kernels (csrc/cuda).

#include <Python.h>
#include <torch/library.h>

#include "schemas.h"

TORCH_LIBRARY(progan_ext, m) { progan_ext::define_schemas(m); }

// The module carries no Python functions of its own.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "progan_ext compiled operators (registered in torch.ops.progan_ext)",
      -1, nullptr};
  return PyModule_Create(&module_def);
}
