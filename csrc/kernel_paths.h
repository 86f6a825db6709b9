// Which kernel path each call took ("conv.igemm", "conv.simple", "conv.norm_pass", ...), counted
// per module, so that tests can assert that a case ran the path it is meant to cover. Read and
// reset from Python with torch.ops.<namespace>.kernel_path_counts(reset).
//
// And the path knobs. Whether the tensor-core conv may split K (split_k_count), per thread,
// on by default. Autotuning (progan_ext.autotune) times a conv that splits against the same conv
// with the split off, on the user's GPU, and runs the winner with the knob set around the call:
// torch.ops.<namespace>.set_conv_split_k(enabled) -> the previous setting.
#pragma once

#include <string>

namespace progan_ext {

void record_kernel_path(const char* name);

// "name=count;name=count" sorted by name; reset clears the counts after reading them.
std::string kernel_path_counts(bool reset);

bool conv_split_k_enabled();
bool set_conv_split_k(bool enabled);  // returns the previous setting (this thread's)

// Whether the tensor-core conv reads an NCHW input in place (on by default) rather than from an
// NHWC copy; autotuning times both: torch.ops.<namespace>.set_conv_nchw_loads(enabled) -> previous.
bool conv_nchw_loads_enabled();
bool set_conv_nchw_loads(bool enabled);

}  // namespace progan_ext
