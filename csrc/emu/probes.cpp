// Probe kernels for the emulator's own tests (tests/test_emulator.py): small CUDA kernels whose
// right answer, or whose error, is known, run through the same launch path as the product
// kernels. Among them are deliberately broken kernels (a missing __syncthreads, a missing
// __syncwarp, a divergent barrier, bad warp masks, misaligned WMMA pointers) that the emulator
// must catch. Exposed as torch.ops.progan_ext_emu.emu_probe(name, x, args) -> Tensor.

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <string>

#include "../cuda/device_utils.cuh"
#include "../cuda/launch.cuh"

namespace progan_ext {
namespace cuda {
namespace {

using namespace nvcuda;

// ---- warp collectives: one block of n threads; lanes outside `mask` write -1 ----------------------
template <int kMode>  // 0 idx, 1 up, 2 down, 3 xor
__global__ void shfl_probe(const int* in, int* out, unsigned mask, int arg, int width) {
  const int tid = threadIdx.x;
  if (!(mask >> (tid % 32) & 1)) {
    out[tid] = -1;
    return;
  }
  const int v = in[tid];
  int r = 0;
  if (kMode == 0) r = __shfl_sync(mask, v, arg, width);
  if (kMode == 1) r = __shfl_up_sync(mask, v, unsigned(arg), width);
  if (kMode == 2) r = __shfl_down_sync(mask, v, unsigned(arg), width);
  if (kMode == 3) r = __shfl_xor_sync(mask, v, arg, width);
  out[tid] = r;
}

template <int kMode>  // 0 ballot, 1 any, 2 all
__global__ void vote_probe(const int* in, int* out, unsigned mask) {
  const int tid = threadIdx.x;
  if (!(mask >> (tid % 32) & 1)) {
    out[tid] = -1;
    return;
  }
  const int p = in[tid];
  out[tid] = kMode == 0 ? int(__ballot_sync(mask, p)) : kMode == 1 ? __any_sync(mask, p) : __all_sync(mask, p);
}

// ---- reductions through shared memory, right and wrong ------------------------------------------
// Block sum of in[0..n) by one block: every thread stores its value, then thread 0 adds them up.
template <bool kBarrier>
__global__ void smem_sum_probe(const float* in, float* out) {
  PROGAN_SHARED(float, vals, 1024);
  vals[threadIdx.x] = in[threadIdx.x];
  if (kBarrier) __syncthreads();  // without it thread 0 reads values other threads have not written
  if (threadIdx.x == 0) {
    float s = 0;
    for (unsigned i = 0; i < blockDim.x; ++i) s += vals[i];
    out[0] = s;
  }
}

// Warp-synchronous tree reduction of 32 values in shared memory (one warp).
template <bool kSyncwarp>
__global__ void warp_smem_sum_probe(const float* in, float* out) {
  PROGAN_SHARED(float, vals, 32);
  const unsigned lane = threadIdx.x;
  vals[lane] = in[lane];
  for (int offset = 16; offset > 0; offset >>= 1) {
    if (kSyncwarp) __syncwarp();  // without it a lane may read a partner's value before it is written
    const float other = lane < unsigned(offset) ? vals[lane + offset] : 0.f;
    if (kSyncwarp) __syncwarp();
    if (lane < unsigned(offset)) vals[lane] += other;
  }
  if (lane == 0) out[0] = vals[0];
}

// Every thread publishes its value, then reads the value of the thread 32 places on, in the other
// warp of the block (64 threads): that needs the __syncthreads. Without it, the round-robin thread
// orders still give the right answer (every warp reaches the __syncwarp, a warp collective, before
// any warp reads), which hides the bug; the warp-major orders run one warp past the __syncwarp
// before the other has written, and it reads poison.
template <bool kBarrier>
__global__ void cross_warp_probe(const float* in, float* out) {
  PROGAN_SHARED(float, vals, 64);
  const unsigned t = threadIdx.x;
  vals[t] = in[t];
  __syncwarp();
  if (kBarrier) __syncthreads();
  out[t] = vals[(t + 32) % 64];
}

// The fixed-order block_sum of device_utils.cuh, as the product kernels use it.
__global__ void block_sum_probe(const float* in, float* out) {
  PROGAN_SHARED(float, scratch, 32);
  const float s = block_sum(in[threadIdx.x], scratch);
  out[threadIdx.x] = s;
}

// ---- kernels that must fail ----------------------------------------------------------------------
__global__ void divergent_barrier_probe(int stop) {
  if (int(threadIdx.x) >= stop) return;  // these threads never reach the barrier
  __syncthreads();
}

__global__ void barrier_vs_shuffle_probe() {
  if (threadIdx.x % 32 < 16) {
    (void)__shfl_sync(0xffffffffu, 1, 0);
  } else {
    __syncthreads();
  }
}

__global__ void different_collectives_probe() {
  int v = threadIdx.x;
  if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  else v = int(__ballot_sync(0xffffffffu, v));
  (void)v;
}

__global__ void mask_without_self_probe() { (void)__shfl_sync(0x1u, 1, 0); }

__global__ void mask_names_exited_lane_probe() {
  if (threadIdx.x == 5) return;
  (void)__shfl_sync(0xffffffffu, 1, 0);
}

__global__ void trap_probe() {
  if (threadIdx.x == 3) __trap();
}

__global__ void empty_probe() {}

__global__ void big_static_smem_probe(int* out) {
  PROGAN_SHARED(unsigned char, big, 50000);
  big[threadIdx.x] = 1;
  out[0] = big[0];
}

// ---- block order: every block writes its index; the last one to run wins -------------------------
__global__ void block_order_probe(int* out) {
  if (threadIdx.x == 0) out[0] = int(blockIdx.x);
}

// ---- cp.async: the destination changes only at the wait -------------------------------------------
// out[0..3] = smem before the wait, out[4..7] = after; out[8..11] = a zero-filled copy.
__global__ void async_copy_probe(const float* in, float* out) {
  PROGAN_SHARED_ALIGNED(float, buf, 8, 16);
  async_copy16(buf, in, true);
  async_copy16(buf + 4, in, false);  // zero-fill
  async_copy_commit();
  if (threadIdx.x == 0)
    for (int i = 0; i < 4; ++i) out[i] = buf[i];
  async_copy_wait<0>();
  if (threadIdx.x == 0)
    for (int i = 0; i < 4; ++i) {
      out[4 + i] = buf[i];
      out[8 + i] = buf[4 + i];
    }
}

// ---- WMMA -----------------------------------------------------------------------------------------
// c = a * b for 16x16 half matrices (row-major a and b, row-major fp32 c). `shift` elements are
// added to a's pointer (misalignment probe); ldm is a's leading dimension.
__global__ void wmma_gemm_probe(const c10::Half* a, const c10::Half* b, float* c, int shift, int lda) {
  using W = __half;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, W, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, W, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, reinterpret_cast<const W*>(a) + shift, unsigned(lda));
  wmma::load_matrix_sync(fb, reinterpret_cast<const W*>(b), 16);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

// Each lane writes lane * 100 + t into accumulator element x[t] and stores the fragment: the
// output shows where the element map puts (lane, t).
__global__ void wmma_map_probe(float* c) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  for (int t = 0; t < fc.num_elements; ++t) fc.x[t] = float(threadIdx.x * 100 + t);
  wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

// A kernel that assumes the sm_80 accumulator layout (lane l holds rows l/4 and l/4 + 8, columns
// 2*(l%4) + {0, 1} and + 8) to add 1000 * row to each element without going through memory.
// Right on some GPUs, wrong in general: CUDA does not specify the layout.
__global__ void wmma_assumes_layout_probe(float* c) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  const int lane = threadIdx.x;
  for (int t = 0; t < fc.num_elements; ++t) {
    const int row = lane / 4 + ((t / 2) % 2) * 8;
    fc.x[t] = float(1000 * row);
  }
  wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

// fp32 operands through a TF32 mma without converting them (the hardware's rounding of such
// operands is unspecified: the emulator applies PROGAN_EMU_TF32, round-to-nearest or truncation).
__global__ void wmma_tf32_probe(const float* a, const float* b, float* c, int convert) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, a, 8);
  wmma::load_matrix_sync(fb, b, 16);
  if (convert) {
    for (int t = 0; t < fa.num_elements; ++t) fa.x[t] = wmma::__float_to_tf32(fa.x[t]);
    for (int t = 0; t < fb.num_elements; ++t) fb.x[t] = wmma::__float_to_tf32(fb.x[t]);
  }
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

// A kernel for cudaFuncSetAttribute: uses `bytes` of dynamic shared memory.
__global__ void dynamic_smem_probe(int* out) {
  auto* buf = static_cast<unsigned char*>(progan_emu::shared_dynamic());
  buf[threadIdx.x] = 7;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = buf[1];
}

unsigned arg_u(c10::IntArrayRef a, size_t i, int64_t def) { return unsigned(a.size() > i ? a[i] : def); }

// Runs probe `name` on x (its meaning depends on the probe) and returns its output.
at::Tensor emu_probe(const at::Tensor& x, c10::string_view name_view, c10::IntArrayRef args) {
  const std::string name(name_view);
  const auto i32 = x.options().dtype(at::kInt);
  const auto f32 = x.options().dtype(at::kFloat);
  if (name.rfind("shfl_", 0) == 0 || name == "ballot" || name == "any" || name == "all") {
    // x: int32 [n]; args: mask, arg, width (shuffles) | mask (votes)
    const at::Tensor in = x.to(at::kInt).contiguous();
    at::Tensor out = at::empty({in.numel()}, i32);
    const unsigned n = unsigned(in.numel()), mask = arg_u(args, 0, 0xffffffff);
    const int arg = int(arg_u(args, 1, 0)), width = int(arg_u(args, 2, 32));
    const int* ip = in.const_data_ptr<int>();
    int* op = out.mutable_data_ptr<int>();
    if (name == "shfl_idx") PROGAN_LAUNCH(shfl_probe<0>, 1, n, 0, nullptr, ip, op, mask, arg, width);
    else if (name == "shfl_up") PROGAN_LAUNCH(shfl_probe<1>, 1, n, 0, nullptr, ip, op, mask, arg, width);
    else if (name == "shfl_down") PROGAN_LAUNCH(shfl_probe<2>, 1, n, 0, nullptr, ip, op, mask, arg, width);
    else if (name == "shfl_xor") PROGAN_LAUNCH(shfl_probe<3>, 1, n, 0, nullptr, ip, op, mask, arg, width);
    else if (name == "ballot") PROGAN_LAUNCH(vote_probe<0>, 1, n, 0, nullptr, ip, op, mask);
    else if (name == "any") PROGAN_LAUNCH(vote_probe<1>, 1, n, 0, nullptr, ip, op, mask);
    else PROGAN_LAUNCH(vote_probe<2>, 1, n, 0, nullptr, ip, op, mask);
    return out;
  }
  if (name == "smem_sum" || name == "smem_sum_no_barrier" || name == "warp_sum" || name == "warp_sum_no_syncwarp" ||
      name == "block_sum") {
    const at::Tensor in = x.to(at::kFloat).contiguous();
    const unsigned n = unsigned(in.numel());
    at::Tensor out = at::empty({name == "block_sum" ? int64_t(n) : 1}, f32);
    const float* ip = in.const_data_ptr<float>();
    float* op = out.mutable_data_ptr<float>();
    if (name == "smem_sum") PROGAN_LAUNCH(smem_sum_probe<true>, 1, n, 0, nullptr, ip, op);
    else if (name == "smem_sum_no_barrier") PROGAN_LAUNCH(smem_sum_probe<false>, 1, n, 0, nullptr, ip, op);
    else if (name == "warp_sum") PROGAN_LAUNCH(warp_smem_sum_probe<true>, 1, 32, 0, nullptr, ip, op);
    else if (name == "warp_sum_no_syncwarp") PROGAN_LAUNCH(warp_smem_sum_probe<false>, 1, 32, 0, nullptr, ip, op);
    else PROGAN_LAUNCH(block_sum_probe, 1, n, 0, nullptr, ip, op);
    return out;
  }
  if (name == "cross_warp" || name == "cross_warp_no_barrier") {  // x: 64 values
    const at::Tensor in = x.to(at::kFloat).contiguous();
    TORCH_CHECK(in.numel() == 64, "probe ", name, ": x must hold 64 values");
    at::Tensor out = at::empty({64}, f32);
    if (name == "cross_warp")
      PROGAN_LAUNCH(cross_warp_probe<true>, 1, 64, 0, nullptr, in.const_data_ptr<float>(), out.mutable_data_ptr<float>());
    else
      PROGAN_LAUNCH(cross_warp_probe<false>, 1, 64, 0, nullptr, in.const_data_ptr<float>(),
                    out.mutable_data_ptr<float>());
    return out;
  }
  if (name == "block_order") {  // args: number of blocks
    at::Tensor out = at::full({1}, -1, i32);
    PROGAN_LAUNCH(block_order_probe, arg_u(args, 0, 8), 32, 0, nullptr, out.mutable_data_ptr<int>());
    return out;
  }
  if (name == "async_copy") {
    const at::Tensor in = x.to(at::kFloat).contiguous();
    TORCH_CHECK_VALUE(in.numel() >= 4, "async_copy probe needs 4 floats");
    at::Tensor out = at::empty({12}, f32);
    PROGAN_LAUNCH(async_copy_probe, 1, 32, 0, nullptr, in.const_data_ptr<float>(), out.mutable_data_ptr<float>());
    return out;
  }
  if (name == "wmma_gemm") {  // x: half [2*256 + 32] holding a (16 x lda, at `shift`) and b; args: shift, lda
    const at::Tensor in = x.to(at::kHalf).contiguous();
    const int shift = int(arg_u(args, 0, 0)), lda = int(arg_u(args, 1, 16));
    at::Tensor out = at::empty({16, 16}, f32);
    const c10::Half* a = in.const_data_ptr<c10::Half>();
    PROGAN_LAUNCH(wmma_gemm_probe, 1, 32, 0, nullptr, a, a + 16 * 32, out.mutable_data_ptr<float>(), shift, lda);
    return out;
  }
  if (name == "wmma_map" || name == "wmma_assumes_layout") {
    at::Tensor out = at::empty({16, 16}, f32);
    if (name == "wmma_map") PROGAN_LAUNCH(wmma_map_probe, 1, 32, 0, nullptr, out.mutable_data_ptr<float>());
    else PROGAN_LAUNCH(wmma_assumes_layout_probe, 1, 32, 0, nullptr, out.mutable_data_ptr<float>());
    return out;
  }
  if (name == "wmma_tf32") {  // x: float [16*8 + 8*16] = a then b; args: convert
    const at::Tensor in = x.to(at::kFloat).contiguous();
    at::Tensor out = at::empty({16, 16}, f32);
    const float* a = in.const_data_ptr<float>();
    PROGAN_LAUNCH(wmma_tf32_probe, 1, 32, 0, nullptr, a, a + 128, out.mutable_data_ptr<float>(), int(arg_u(args, 0, 0)));
    return out;
  }
  // Kernels that must fail (or succeed) at launch or while running; they return x unchanged.
  if (name == "divergent_barrier") PROGAN_LAUNCH(divergent_barrier_probe, 1, 64, 0, nullptr, int(arg_u(args, 0, 40)));
  else if (name == "barrier_vs_shuffle") PROGAN_LAUNCH(barrier_vs_shuffle_probe, 1, 32, 0, nullptr);
  else if (name == "different_collectives") PROGAN_LAUNCH(different_collectives_probe, 1, 32, 0, nullptr);
  else if (name == "mask_without_self") PROGAN_LAUNCH(mask_without_self_probe, 1, 32, 0, nullptr);
  else if (name == "mask_names_exited_lane") PROGAN_LAUNCH(mask_names_exited_lane_probe, 1, 32, 0, nullptr);
  else if (name == "partial_warp_full_mask") PROGAN_LAUNCH(barrier_vs_shuffle_probe, 1, 40, 0, nullptr);
  else if (name == "trap") PROGAN_LAUNCH(trap_probe, 1, 32, 0, nullptr);
  else if (name == "launch") {  // args: grid x, y, z, block x, y, z, dynamic smem
    const dim3 grid(arg_u(args, 0, 1), arg_u(args, 1, 1), arg_u(args, 2, 1));
    const dim3 block(arg_u(args, 3, 1), arg_u(args, 4, 1), arg_u(args, 5, 1));
    PROGAN_LAUNCH(empty_probe, grid, block, size_t(arg_u(args, 6, 0)), nullptr);
  } else if (name == "big_static_smem") {
    at::Tensor out = at::empty({1}, i32);
    PROGAN_LAUNCH(big_static_smem_probe, 1, 32, 0, nullptr, out.mutable_data_ptr<int>());
  } else if (name == "dynamic_smem") {  // args: bytes, attribute bytes (0: do not set)
    at::Tensor out = at::empty({1}, i32);
    const size_t attr = arg_u(args, 1, 0);
    const void* kernel = reinterpret_cast<const void*>(&dynamic_smem_probe);
    if (attr) progan_emu::set_max_dynamic_smem(kernel, attr);
    else progan_emu::reset_max_dynamic_smem(kernel);
    PROGAN_LAUNCH(dynamic_smem_probe, 1, 32, size_t(arg_u(args, 0, 0)), nullptr, out.mutable_data_ptr<int>());
    return out;
  } else {
    TORCH_CHECK_VALUE(false, "emu_probe: unknown probe '", name, "'");
  }
  return x;
}

}  // namespace
}  // namespace cuda
}  // namespace progan_ext

PROGAN_EMU_LIBRARY_FRAGMENT(PROGAN_EMU_NS, m) { m.def("emu_probe(Tensor x, str name, int[] args) -> Tensor"); }
TORCH_LIBRARY_IMPL(PROGAN_EMU_NS, CPU, m) { m.impl("emu_probe", &progan_ext::cuda::emu_probe); }
