// progan_ext CUDA emulator: the memory-access tracer (tracer.h; docs/memory_access.md). Forms
// warp-wide requests from the lanes' accesses and measures each one as the memory system of an
// sm_80/sm_90 GPU serves it:
//
//  * global memory: the 32-byte sectors the request touches, against the fewest sectors that
//    could hold the distinct bytes it asks for (sector efficiency = ideal / touched; a profiler's
//    "sectors per request" and "global load/store efficiency");
//  * shared memory: 32 banks of 4 bytes. A request is served in phases: the whole warp for
//    accesses of up to 4 bytes, each half warp for 8-byte and each quarter warp for 16-byte
//    accesses. In a phase, the distinct 4-byte words that fall into one bank are served one per
//    wavefront (lanes reading the same word share it: a broadcast); the phase takes as many
//    wavefronts as its busiest bank has words, its conflict degree. Ideal: one wavefront per 128
//    distinct bytes.
//
// Built only into progan_ext._emu_trace (PROGAN_EMU_TRACE); exposed as
// torch.ops.progan_ext_emu_trace.trace_enable / trace_reset / trace_report (JSON).

#include "../tracer.h"

#include <dlfcn.h>
#include <pthread.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace progan_emu {
namespace trace {

bool g_on = false;

namespace {

using detail::Launch;

enum Space : unsigned { kGlobal = 0, kShared = 1 };

// Totals of one kind of request (global or shared, load or store).
struct Totals {
  uint64_t requests = 0;
  uint64_t lanes = 0;   // active lanes, summed over the requests
  uint64_t bytes = 0;   // distinct bytes the lanes asked for
  uint64_t units = 0;   // global: 32-byte sectors touched; shared: wavefronts
  uint64_t ideal = 0;   // the fewest sectors / wavefronts that could serve `bytes`
  uint64_t max_degree = 0;  // shared: the worst bank conflict of any one request (n-way)
  void add(const Totals& o) {
    requests += o.requests;
    lanes += o.lanes;
    bytes += o.bytes;
    units += o.units;
    ideal += o.ideal;
    max_degree = std::max(max_degree, o.max_degree);
  }
};

struct KernelTotals {
  uint64_t launches = 0, blocks = 0;
  Totals kind[2][2];  // [space][store]
  std::map<std::pair<uintptr_t, unsigned>, Totals> sites;  // (site, space * 2 + store)
};

// One warp-wide request being formed: the k-th execution of a site by each lane of the warp
// since the warp's last blocking point.
struct Request {
  const void* site;
  unsigned space, store, bytes;
  uint32_t lanes = 0;  // lanes that took part
  std::array<uintptr_t, 32> addr;
};
struct Key {
  const void* site;
  uint32_t epoch, k, kind;
  bool operator==(const Key& o) const { return site == o.site && epoch == o.epoch && k == o.k && kind == o.kind; }
};
struct KeyHash {
  size_t operator()(const Key& q) const {
    return std::hash<const void*>()(q.site) ^ (size_t(q.epoch) * 0x9E3779B97F4A7C15ull) ^ (size_t(q.k) << 20) ^ q.kind;
  }
};
struct Warp {
  std::unordered_map<Key, uint32_t, KeyHash> open;
  std::vector<Request> requests;
};
struct Lane {
  uint32_t epoch = ~0u;
  std::unordered_map<uintptr_t, uint32_t> executions;  // per (site, store), this epoch
};

struct Tracer {
  std::map<std::string, KernelTotals> kernels;
  KernelTotals* kernel = nullptr;  // of the running launch
  std::vector<Warp> warps;
  std::vector<Lane> lanes;
  uintptr_t host_lo = 0, host_hi = 0;  // the launching thread's stack
  uint64_t local = 0, host = 0;        // accesses not counted: lane stacks, launching thread's stack
};
Tracer g;

// Distinct bytes of a set of [addr, addr + bytes) ranges, and the `unit`-byte blocks they touch.
struct Footprint {
  uint64_t bytes = 0, blocks = 0;
};
Footprint footprint(std::vector<std::pair<uintptr_t, uintptr_t>>& ranges, unsigned unit) {
  std::sort(ranges.begin(), ranges.end());
  Footprint f;
  uintptr_t covered = 0, last_block = ~uintptr_t(0);
  for (auto [lo, hi] : ranges) {
    lo = std::max(lo, covered);
    if (lo >= hi) continue;
    f.bytes += hi - lo;
    covered = hi;
    for (uintptr_t b = lo / unit; b <= (hi - 1) / unit; ++b)
      if (b != last_block) {
        ++f.blocks;
        last_block = b;
      }
  }
  return f;
}

uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// Global memory: sectors touched vs the fewest that hold the distinct bytes.
Totals measure_global(const std::vector<std::pair<uintptr_t, uintptr_t>>& lane_ranges) {
  std::vector<std::pair<uintptr_t, uintptr_t>> r = lane_ranges;
  const Footprint f = footprint(r, 32);
  Totals t;
  t.requests = 1;
  t.bytes = f.bytes;
  t.units = f.blocks;
  t.ideal = ceil_div(f.bytes, 32);
  return t;
}

// Shared memory: the wavefronts of one phase (the distinct words of its busiest bank).
uint64_t phase_wavefronts(const std::vector<std::pair<uintptr_t, uintptr_t>>& ranges) {
  std::vector<uintptr_t> words;
  for (auto [lo, hi] : ranges)
    for (uintptr_t w = lo / 4; w <= (hi - 1) / 4; ++w) words.push_back(w);
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  std::array<uint64_t, 32> per_bank{};
  uint64_t degree = 0;
  for (uintptr_t w : words) degree = std::max(degree, ++per_bank[w % 32]);
  return degree;
}

// Shared memory: a request served in phases (lists of the lanes' byte ranges).
Totals measure_shared(const std::vector<std::vector<std::pair<uintptr_t, uintptr_t>>>& phases) {
  Totals t;
  t.requests = 1;
  std::vector<std::pair<uintptr_t, uintptr_t>> all;
  for (const auto& p : phases) {
    if (p.empty()) continue;
    const uint64_t d = phase_wavefronts(p);
    t.units += d;
    t.max_degree = std::max(t.max_degree, d);
    all.insert(all.end(), p.begin(), p.end());
  }
  t.bytes = footprint(all, 128).bytes;
  t.ideal = std::max<uint64_t>(1, ceil_div(t.bytes, 128));
  return t;
}

// Lanes per shared-memory phase for accesses of `bytes` bytes: the warp, a half or a quarter.
unsigned lanes_per_phase(unsigned bytes) { return bytes <= 4 ? 32 : bytes <= 8 ? 16 : 8; }

void add(unsigned space, unsigned store, const void* site, const Totals& t) {
  KernelTotals& k = *g.kernel;
  k.kind[space][store].add(t);
  k.sites[{reinterpret_cast<uintptr_t>(site), space * 2 + store}].add(t);
}

void measure(const Request& r) {
  if (r.space == kGlobal) {
    std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
    for (unsigned l = 0; l < 32; ++l)
      if (r.lanes >> l & 1) ranges.push_back({r.addr[l], r.addr[l] + r.bytes});
    Totals t = measure_global(ranges);
    t.lanes = __builtin_popcount(r.lanes);
    add(kGlobal, r.store, r.site, t);
    return;
  }
  const unsigned per = lanes_per_phase(r.bytes);
  std::vector<std::vector<std::pair<uintptr_t, uintptr_t>>> phases(32 / per);
  for (unsigned l = 0; l < 32; ++l)
    if (r.lanes >> l & 1) phases[l / per].push_back({r.addr[l], r.addr[l] + r.bytes});
  Totals t = measure_shared(phases);
  t.lanes = __builtin_popcount(r.lanes);
  add(kShared, r.store, r.site, t);
}

void flush(Warp& w) {
  for (const Request& r : w.requests) measure(r);
  w.requests.clear();
  w.open.clear();
}

// The launching thread's stack: kernel parameters (the argument tuple) and emulator frames.
void host_stack(uintptr_t& lo, uintptr_t& hi) {
  pthread_attr_t attr;
  void* addr = nullptr;
  size_t size = 0;
  lo = hi = 0;
  if (pthread_getattr_np(pthread_self(), &attr) != 0) return;
  if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
    lo = reinterpret_cast<uintptr_t>(addr);
    hi = lo + size;
  }
  pthread_attr_destroy(&attr);
}

std::string hex(uintptr_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(v));
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

void json_totals(std::ostringstream& o, const Totals& t) {
  o << "{\"requests\": " << t.requests << ", \"lanes\": " << t.lanes << ", \"bytes\": " << t.bytes << ", \"units\": " << t.units
    << ", \"ideal\": " << t.ideal << ", \"max_degree\": " << t.max_degree << "}";
}

const char* kKindNames[2][2] = {{"global_load", "global_store"}, {"shared_load", "shared_store"}};

}  // namespace

// ---- accesses ---------------------------------------------------------------------------------
void access(const void* site, const void* addr, unsigned bytes, bool store) {
  Launch* L = detail::g_launch;
  if (L == nullptr || L->running == nullptr || g.kernel == nullptr || bytes == 0) return;
  ThreadState& t = *L->running;
  if (t.untraced) return;
  const auto a = reinterpret_cast<uintptr_t>(addr);
  const auto stack = reinterpret_cast<uintptr_t>(t.stack_lo);
  if (a >= stack && a < stack + t.stack_size) {
    ++g.local;
    return;
  }
  if (a >= g.host_lo && a < g.host_hi) {
    ++g.host;
    return;
  }
  const auto arena = reinterpret_cast<uintptr_t>(L->arena);
  const unsigned space = a >= arena && a < arena + L->dynamic_offset + L->dynamic_smem ? kShared : kGlobal;
  Lane& lane = g.lanes[t.linear];
  if (lane.epoch != t.syncs) {
    lane.epoch = t.syncs;
    lane.executions.clear();
  }
  const uint32_t k = lane.executions[reinterpret_cast<uintptr_t>(site) * 2 + store]++;
  Warp& w = g.warps[t.warp];
  const auto [it, fresh] = w.open.try_emplace(Key{site, t.syncs, k, space * 2 + store}, uint32_t(w.requests.size()));
  if (fresh) {
    Request r;
    r.site = site;
    r.space = space;
    r.store = store;
    r.bytes = bytes;
    w.requests.push_back(r);
  }
  Request& r = w.requests[it->second];
  r.addr[t.lane] = a;
  r.lanes |= 1u << t.lane;
}

void copy16(const void* site, const void* dst, const void* src) {
  if (src != nullptr) access(site, src, 16, false);
  access(site, dst, 16, true);
}

// ---- scheduler events -------------------------------------------------------------------------
void launch_begin(Launch& L) {
  g.kernel = &g.kernels[L.name];
  ++g.kernel->launches;
  host_stack(g.host_lo, g.host_hi);
}

void block_begin(Launch& L) {
  if (g.kernel == nullptr) return;  // tracing was switched on during a launch
  ++g.kernel->blocks;
  g.warps.assign(L.warps, Warp{});
  g.lanes.assign(L.nthreads, Lane{});
}

void barrier(Launch&) {
  for (Warp& w : g.warps) flush(w);
}

void warp_synced(Launch&, unsigned warp) {
  if (warp < g.warps.size()) flush(g.warps[warp]);
}

void block_end(Launch& L) { barrier(L); }

}  // namespace trace

void trace_mute(bool muted) {
  detail::Launch* L = detail::g_launch;
  if (L != nullptr && L->running != nullptr) L->running->untraced = muted;
}

// ---- WMMA -------------------------------------------------------------------------------------
// CUDA does not specify how wmma::load/store_matrix_sync access memory. Modelled on the mma.sync
// fragment layouts that WMMA compiles to on sm_80/sm_90: operand tiles as ldmatrix reads them
// (each phase 8 rows x 16 bytes), fp32 accumulators as the per-lane 8-byte accesses of the
// accumulator layout (each half-warp phase 4 rows x 32 bytes). Reported by lane 0 of the warp.
void trace_matrix(const void* site, const void* p, unsigned ldm, int rows, int cols, unsigned elem, bool col,
                  bool store, bool accumulator) {
  using namespace trace;
  if (!g_on || g.kernel == nullptr) return;
  detail::Launch* L = detail::g_launch;
  if (L == nullptr || L->running == nullptr || L->running->lane != 0) return;
  const unsigned mem_rows = col ? cols : rows, row_bytes = (col ? rows : cols) * elem;
  const unsigned chunk = accumulator && elem == 4 ? 32 : 16, rows_per_phase = accumulator && elem == 4 ? 4 : 8;
  const auto base = reinterpret_cast<uintptr_t>(p);
  const auto arena = reinterpret_cast<uintptr_t>(L->arena);
  const bool shared = base >= arena && base < arena + L->dynamic_offset + L->dynamic_smem;
  std::vector<std::vector<std::pair<uintptr_t, uintptr_t>>> phases;
  std::vector<std::pair<uintptr_t, uintptr_t>> all;
  for (unsigned r0 = 0; r0 < mem_rows; r0 += rows_per_phase)
    for (unsigned c = 0; c < row_bytes; c += chunk) {
      phases.emplace_back();
      for (unsigned r = r0; r < std::min(mem_rows, r0 + rows_per_phase); ++r) {
        const uintptr_t lo = base + uintptr_t(r) * ldm * elem + c;
        phases.back().push_back({lo, lo + std::min(chunk, row_bytes - c)});
        all.push_back(phases.back().back());
      }
    }
  Totals t = shared ? measure_shared(phases) : measure_global(all);
  t.lanes = 32;
  add(shared ? kShared : kGlobal, store, site, t);
}

}  // namespace progan_emu

// ---- ops --------------------------------------------------------------------------------------
namespace {

using namespace progan_emu::trace;

void trace_enable(bool on) {
  std::lock_guard<std::mutex> lock(progan_emu::detail::g_mutex);
  g_on = on;
  if (!on) g.kernel = nullptr;
}

void trace_reset() {
  std::lock_guard<std::mutex> lock(progan_emu::detail::g_mutex);
  g.kernels.clear();
  g.kernel = nullptr;
  g.local = g.host = 0;
}

// {"module": path, "kernels": {name: {"launches", "blocks", "global_load": totals, ...,
//  "sites": [{"offset": "0x..." (in module), "kind": "global_load", totals...}]}},
//  "local_accesses": n, "host_accesses": n}
std::string trace_report() {
  std::lock_guard<std::mutex> lock(progan_emu::detail::g_mutex);
  Dl_info info{};
  dladdr(reinterpret_cast<const void*>(&trace_report), &info);
  const auto module_base = reinterpret_cast<uintptr_t>(info.dli_fbase);
  std::ostringstream o;
  o << "{\"module\": " << json_string(info.dli_fname ? info.dli_fname : "") << ", \"kernels\": {";
  bool first = true;
  for (const auto& [name, k] : g.kernels) {
    o << (first ? "" : ", ") << json_string(name) << ": {\"launches\": " << k.launches << ", \"blocks\": " << k.blocks;
    first = false;
    for (unsigned s = 0; s < 2; ++s)
      for (unsigned st = 0; st < 2; ++st) {
        o << ", \"" << kKindNames[s][st] << "\": ";
        json_totals(o, k.kind[s][st]);
      }
    o << ", \"sites\": [";
    bool first_site = true;
    for (const auto& [key, t] : k.sites) {
      o << (first_site ? "" : ", ") << "{\"offset\": \"" << hex(key.first - module_base) << "\", \"kind\": \""
        << kKindNames[key.second / 2][key.second % 2] << "\", \"totals\": ";
      json_totals(o, t);
      o << "}";
      first_site = false;
    }
    o << "]}";
  }
  o << "}, \"local_accesses\": " << g.local << ", \"host_accesses\": " << g.host << "}";
  return o.str();
}

}  // namespace

PROGAN_EMU_LIBRARY_FRAGMENT(PROGAN_EMU_NS, m) {
  m.def("trace_enable(bool on) -> ()", &trace_enable);
  m.def("trace_reset() -> ()", &trace_reset);
  m.def("trace_report() -> str", &trace_report);
}
