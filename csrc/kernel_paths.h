// Which kernel path each call took ("conv.igemm", "conv.simple", "conv.norm_pass", ...), counted
// per module, so that tests can assert that a case ran the path it is meant to cover. Read and
// reset from Python with torch.ops.<namespace>.kernel_path_counts(reset).
#pragma once

#include <string>

namespace progan_ext {

void record_kernel_path(const char* name);

// "name=count;name=count" sorted by name; reset clears the counts after reading them.
std::string kernel_path_counts(bool reset);

}  // namespace progan_ext
