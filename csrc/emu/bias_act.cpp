// The CUDA kernels of bias_act (csrc/cuda/bias_act.cu), compiled as host C++ against the emulator and
// registered as progan_ext_emu::* for CPU tensors (see runtime.h). PROGAN_EXT_EMULATION is set by
// the build for every file of the emulated module.
#include "../cuda/bias_act.cu"
