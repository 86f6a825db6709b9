// The autograd formulas of csrc/autograd for the ops of the emulated module (progan_ext_emu, or
// progan_ext_emu_trace in the memory-tracing build): csrc/ops_ns.h picks the namespace. One
// translation unit for the four files (their names do not collide), since each is heavy to compile.
#include "../autograd/bias_act.cpp"
#include "../autograd/conv.cpp"
#include "../autograd/minibatch_stddev.cpp"
#include "../autograd/pixel_norm.cpp"
