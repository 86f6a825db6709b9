// The autocast rules of csrc/autocast.cpp for the progan_ext_emu ops (AutocastCPU: the emulated
// kernels take CPU tensors). PROGAN_EXT_EMULATION selects the namespace there.
#include "../autocast.cpp"
