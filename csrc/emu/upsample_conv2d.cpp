// The CUDA kernels of upsample_conv2d (csrc/cuda/upsample_conv2d.cu), compiled as host C++ against the emulator and
// registered as progan_ext_emu::* for CPU tensors (see runtime.h). PROGAN_EXT_EMULATION is set by
// the build for every file of the emulated module.
#include "../cuda/upsample_conv2d.cu"
