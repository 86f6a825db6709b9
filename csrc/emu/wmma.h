// progan_ext CUDA emulator: nvcuda::wmma (the warp matrix functions of mma.h), as far as the kernels
// use them: m16n16k16 for half/bfloat16, m16n16k8 for TF32, fp32 accumulators.
//
// CUDA leaves the mapping of fragment elements to lanes unspecified, so the emulator chooses a
// deliberately scrambled one: a pseudo-random permutation per fragment type and seed
// (PROGAN_EMU_SEED). Code may apply the same element-wise operation to every x[i]; code that
// assumes which (row, col) an x[i] holds breaks here as it would on some GPU. load, store and mma
// are warp collectives: all 32 lanes must call them with the same pointer, ldm and layout; the
// pointer must be 256-bit aligned and ldm a multiple of 16 bytes (CUDA C++ Programming Guide,
// "Warp Matrix Functions"). mma accumulates in fp32, row by row in k order; for TF32 fragments
// the operands are rounded to TF32 first (round-to-nearest, or truncation with
// PROGAN_EMU_TF32=truncate: the hardware's treatment of unconverted operands is not specified).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>

#include "device.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

namespace detail {

// Rows and columns of a fragment of use U in shape (M, N, K).
template <typename U, int M, int N, int K>
struct Dims;
template <int M, int N, int K>
struct Dims<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K>
struct Dims<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K>
struct Dims<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template <typename T>
struct Storage { using type = T; };
template <>
struct Storage<precision::tf32> { using type = float; };

template <typename L>
constexpr int layout_code() { return std::is_same_v<L, col_major> ? 1 : 0; }

inline float to_tf32_rna(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) {  // finite: round the 13 dropped bits, ties away from zero
    u += 0x1000u;
    u &= 0xffffe000u;
  }
  std::memcpy(&f, &u, 4);
  return f;
}
inline float to_tf32_truncate(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u &= 0xffffe000u;
  std::memcpy(&f, &u, 4);
  return f;
}

// The scrambled map: element t of lane l holds matrix position perm[l * per_lane + t]
// (position = row * cols + col). One permutation per fragment type and seed.
template <typename U, int M, int N, int K, typename T, typename L>
const std::vector<int>& element_map() {
  constexpr int rows = Dims<U, M, N, K>::rows, cols = Dims<U, M, N, K>::cols;
  static thread_local std::vector<int> perm;
  static thread_local uint64_t seed_of_perm = ~uint64_t(0);
  const uint64_t seed = progan_emu::active_config().seed;
  if (perm.empty() || seed_of_perm != seed) {
    perm.resize(rows * cols);
    for (int i = 0; i < rows * cols; ++i) perm[i] = i;
    const uint64_t type_salt = uint64_t(std::is_same_v<U, matrix_a>) * 1 + uint64_t(std::is_same_v<U, matrix_b>) * 2 +
                               uint64_t(layout_code<L>()) * 4 + uint64_t(sizeof(T)) * 8 + uint64_t(M * 131 + N * 17 + K);
    std::mt19937_64 rng(seed * 0x2545F4914F6CDD1Dull + type_salt);
    std::shuffle(perm.begin(), perm.end(), rng);
    seed_of_perm = seed;
  }
  return perm;
}

inline void check_pointer(const void* p, unsigned ldm, size_t elem, const char* op) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    progan_emu::fail(std::string("wmma::") + op + ": the pointer must be 256-bit (32-byte) aligned");
  if ((size_t(ldm) * elem) % 16 != 0)
    progan_emu::fail(std::string("wmma::") + op + ": ldm (" + std::to_string(ldm) +
                     " elements) must be a multiple of 16 bytes (8 for 16-bit, 4 for 32-bit elements)");
}

}  // namespace detail

template <typename U, int M, int N, int K, typename T, typename L = void>
class fragment {
 public:
  using element_type = typename detail::Storage<T>::type;
  using use = U;
  using layout = L;
  static constexpr int rows = detail::Dims<U, M, N, K>::rows, cols = detail::Dims<U, M, N, K>::cols;
  static constexpr int num_elements = rows * cols / 32;
  element_type x[num_elements];
  // (row, col) of x[t] in this lane.
  static int position(unsigned lane, int t) {
    return detail::element_map<U, M, N, K, T, L>()[lane * num_elements + t];
  }
};

template <typename U, int M, int N, int K, typename T, typename L, typename V>
inline void fill_fragment(fragment<U, M, N, K, T, L>& f, const V& v) {
  for (int t = 0; t < f.num_elements; ++t) f.x[t] = static_cast<typename fragment<U, M, N, K, T, L>::element_type>(v);
}

inline float __float_to_tf32(float f) { return detail::to_tf32_rna(f); }

// ---- load: matrix_a / matrix_b (layout from the type) and accumulator (layout as argument) ----
namespace detail {
template <typename Frag, typename P>
void load(Frag& f, const P* p, unsigned ldm, bool col, const void* site) {
  PROGAN_EMU_UNTRACED;  // the memory tracer counts the warp's access once, below, not the emulator's
  using E = typename Frag::element_type;
  check_pointer(p, ldm, sizeof(P), "load_matrix_sync");
  progan_emu::WmmaArgs me;
  me.op = "load_matrix_sync";
  me.ptr = p;
  me.ldm = ldm;
  me.layout = col;
  me.frag = &f;
#ifdef PROGAN_EMU_TRACE
  progan_emu::trace_matrix(site, p, ldm, Frag::rows, Frag::cols, sizeof(P), col, /*store=*/false,
                           std::is_same_v<typename Frag::use, accumulator>);
#endif
  progan_emu::wmma_collective(site, me, [&](const progan_emu::WmmaArgs* lanes) {
    for (unsigned l = 0; l < 32; ++l) {
      auto* fl = static_cast<Frag*>(lanes[l].frag);
      for (int t = 0; t < Frag::num_elements; ++t) {
        const int pos = Frag::position(l, t), r = pos / Frag::cols, c = pos % Frag::cols;
        fl->x[t] = static_cast<E>(p[col ? size_t(c) * ldm + r : size_t(r) * ldm + c]);
      }
    }
  });
}
}  // namespace detail

template <typename U, int M, int N, int K, typename T, typename L, typename P>
__attribute__((noinline)) void load_matrix_sync(fragment<U, M, N, K, T, L>& f, const P* p, unsigned ldm) {
  static_assert(!std::is_same_v<U, accumulator>, "accumulator loads take a layout_t");
  detail::load(f, p, ldm, std::is_same_v<L, col_major>, __builtin_return_address(0));
}
template <int M, int N, int K, typename T, typename P>
__attribute__((noinline)) void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const P* p, unsigned ldm,
                                                layout_t layout) {
  detail::load(f, p, ldm, layout == mem_col_major, __builtin_return_address(0));
}

template <int M, int N, int K, typename T, typename P>
__attribute__((noinline)) void store_matrix_sync(P* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm,
                                                 layout_t layout) {
  using Frag = fragment<accumulator, M, N, K, T, void>;
  detail::check_pointer(p, ldm, sizeof(P), "store_matrix_sync");
  progan_emu::WmmaArgs me;
  PROGAN_EMU_UNTRACED;
  me.op = "store_matrix_sync";
  me.ptr = p;
  me.ldm = ldm;
  me.layout = layout;
  me.frag = const_cast<Frag*>(&f);
  const bool col = layout == mem_col_major;
#ifdef PROGAN_EMU_TRACE
  progan_emu::trace_matrix(__builtin_return_address(0), p, ldm, Frag::rows, Frag::cols, sizeof(P), col,
                           /*store=*/true, /*accumulator=*/true);
#endif
  progan_emu::wmma_collective(__builtin_return_address(0), me, [&](const progan_emu::WmmaArgs* lanes) {
    for (unsigned l = 0; l < 32; ++l) {
      const auto* fl = static_cast<const Frag*>(lanes[l].frag);
      for (int t = 0; t < Frag::num_elements; ++t) {
        const int pos = Frag::position(l, t), r = pos / Frag::cols, c = pos % Frag::cols;
        p[col ? size_t(c) * ldm + r : size_t(r) * ldm + c] = static_cast<P>(fl->x[t]);
      }
    }
  });
}

// d = a * b + c, fp32 accumulation.
template <int M, int N, int K, typename TA, typename LA, typename LB, typename TC>
__attribute__((noinline)) void mma_sync(fragment<accumulator, M, N, K, TC, void>& d,
                                        const fragment<matrix_a, M, N, K, TA, LA>& a,
                                        const fragment<matrix_b, M, N, K, TA, LB>& b,
                                        const fragment<accumulator, M, N, K, TC, void>& c) {
  using FA = fragment<matrix_a, M, N, K, TA, LA>;
  using FB = fragment<matrix_b, M, N, K, TA, LB>;
  using FC = fragment<accumulator, M, N, K, TC, void>;
  progan_emu::WmmaArgs me;
  PROGAN_EMU_UNTRACED;
  me.op = "mma_sync";
  me.frag = &d;
  me.a = &a;
  me.b = &b;
  me.c = &c;
  constexpr bool tf32 = std::is_same_v<TA, precision::tf32>;
  progan_emu::wmma_collective(__builtin_return_address(0), me, [&](const progan_emu::WmmaArgs* lanes) {
    const bool trunc = progan_emu::active_config().tf32_truncate;
    auto operand = [&](auto v) {
      const float f = static_cast<float>(v);
      return tf32 ? (trunc ? detail::to_tf32_truncate(f) : detail::to_tf32_rna(f)) : f;
    };
    float A[M][K], B[K][N], C[M][N];
    for (unsigned l = 0; l < 32; ++l) {
      const auto* fa = static_cast<const FA*>(lanes[l].a);
      const auto* fb = static_cast<const FB*>(lanes[l].b);
      const auto* fc = static_cast<const FC*>(lanes[l].c);
      for (int t = 0; t < FA::num_elements; ++t) {
        const int pos = FA::position(l, t);
        A[pos / K][pos % K] = operand(fa->x[t]);
      }
      for (int t = 0; t < FB::num_elements; ++t) {
        const int pos = FB::position(l, t);
        B[pos / N][pos % N] = operand(fb->x[t]);
      }
      for (int t = 0; t < FC::num_elements; ++t) {
        const int pos = FC::position(l, t);
        C[pos / N][pos % N] = static_cast<float>(fc->x[t]);
      }
    }
    // Every lane's d may alias its c (the usual acc = a*b + acc): all inputs are read above.
    for (unsigned l = 0; l < 32; ++l) {
      auto* fd = static_cast<FC*>(lanes[l].frag);
      for (int t = 0; t < FC::num_elements; ++t) {
        const int pos = FC::position(l, t), r = pos / N, col = pos % N;
        float s = C[r][col];
        for (int k = 0; k < K; ++k) s += A[r][k] * B[k][col];
        fd->x[t] = static_cast<typename FC::element_type>(s);
      }
    }
  });
}

}  // namespace wmma
}  // namespace nvcuda
