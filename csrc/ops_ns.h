// The torch.ops namespace a translation unit registers into, for the files compiled into more than
// one module (csrc/autocast.cpp, csrc/autograd/*.cpp): progan_ext in the product's module,
// progan_ext_emu in the emulated CUDA module (PROGAN_EXT_EMULATION) and progan_ext_emu_trace in
// its memory-tracing build (PROGAN_EMU_NS, set by setup.py).
#pragma once

#if defined(PROGAN_EMU_NS)
#define PROGAN_OPS_NS PROGAN_EMU_NS
#elif defined(PROGAN_EXT_EMULATION)
#define PROGAN_OPS_NS progan_ext_emu
#else
#define PROGAN_OPS_NS progan_ext
#endif
#define PROGAN_STR2(x) #x
#define PROGAN_STR(x) PROGAN_STR2(x)
// "<namespace>::<name>", the name the dispatcher knows an op of this module by.
#define PROGAN_OP(name) PROGAN_STR(PROGAN_OPS_NS) "::" name
