#include "kernel_paths.h"

#include <map>
#include <mutex>

namespace progan_ext {
namespace {
std::mutex g_mutex;
thread_local bool t_split_k = true;  // per thread: a setting around one call never leaks into another
thread_local bool t_nchw_loads = true;  // the same, for the NCHW in-place loads
std::map<std::string, long long>& counts() {
  static std::map<std::string, long long> c;
  return c;
}
}  // namespace

void record_kernel_path(const char* name) {
  std::lock_guard<std::mutex> lock(g_mutex);
  ++counts()[name];
}

std::string kernel_path_counts(bool reset) {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::string out;
  for (const auto& [name, n] : counts()) out += (out.empty() ? "" : ";") + name + "=" + std::to_string(n);
  if (reset) counts().clear();
  return out;
}

bool conv_split_k_enabled() { return t_split_k; }

bool set_conv_split_k(bool enabled) {
  const bool before = t_split_k;
  t_split_k = enabled;
  return before;
}

bool conv_nchw_loads_enabled() { return t_nchw_loads; }

bool set_conv_nchw_loads(bool enabled) {
  const bool before = t_nchw_loads;
  t_nchw_loads = enabled;
  return before;
}

}  // namespace progan_ext
