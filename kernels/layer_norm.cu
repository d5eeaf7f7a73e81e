// Fused residual-add + LayerNorm over the last dimension:
//   s[r, :] = x[r, :] + res[r, :]          (rounded to T: the residual stream a pre-LN block keeps)
//   y[r, :] = (s - mean) * rstd * gamma + beta,   rstd = 1 / sqrt(var + eps), biased variance.
// x, res, y, s: [rows, cols] contiguous; gamma, beta: [cols]. res and s are both null (plain LN)
// or both set. One block per row (grid-stride over rows), statistics in f32 with an exact
// two-pass variance. Each thread re-reads only the elements it wrote, so no barrier guards `s`.
#include "common.cuh"

namespace {

constexpr int MAX_THREADS = 1024;
constexpr int MAX_WARPS = MAX_THREADS / tg::WARP_SIZE;

// Sum of `v` over the block; every thread gets the result. `scratch` holds MAX_WARPS floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % tg::WARP_SIZE, warp = threadIdx.x / tg::WARP_SIZE;
  const int warps = blockDim.x / tg::WARP_SIZE;
  v = tg::warp_sum(v);
  __syncthreads();  // the previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  return tg::warp_sum(lane < warps ? scratch[lane] : 0.0f);
}

template <typename T>
__device__ void add_layer_norm(const T* __restrict__ x, const T* __restrict__ res, const T* __restrict__ gamma,
                               const T* __restrict__ beta, T* __restrict__ y, T* s, int64_t rows, int64_t cols,
                               float eps) {
  __shared__ float scratch[MAX_WARPS];
  // The (rounded) sum is re-read from the `s` output when there is one, else it is x itself.
  const T* src = res != nullptr ? s : x;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * cols;
    // Phase 1: the sum, stored rounded, and its mean.
    float acc = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      float v = tg::to_float(x[base + c]);
      if (res != nullptr) {
        const T rounded = tg::from_float<T>(v + tg::to_float(res[base + c]));
        s[base + c] = rounded;
        v = tg::to_float(rounded);
      }
      acc += v;
    }
    const float mean = block_sum(acc, scratch) / (float)cols;
    // Phase 2: biased variance around the exact mean.
    acc = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float d = tg::to_float(src[base + c]) - mean;
      acc += d * d;
    }
    const float rstd = rsqrtf(block_sum(acc, scratch) / (float)cols + eps);
    // Phase 3: normalize, scale, shift.
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float v = (tg::to_float(src[base + c]) - mean) * rstd;
      y[base + c] = tg::from_float<T>(v * tg::to_float(gamma[c]) + tg::to_float(beta[c]));
    }
  }
}

}  // namespace

// Entry points: add_layer_norm_<dtype>.
#define ADD_LAYER_NORM_ENTRY(T, TNAME)                                                                         \
  extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                                  \
      add_layer_norm_##TNAME(const T* x, const T* res, const T* gamma, const T* beta, T* y, T* s,            \
                             int64_t rows, int64_t cols, float eps) {                                        \
    add_layer_norm<T>(x, res, gamma, beta, y, s, rows, cols, eps);                                           \
  }

ADD_LAYER_NORM_ENTRY(float, f32)
ADD_LAYER_NORM_ENTRY(__half, f16)
ADD_LAYER_NORM_ENTRY(__nv_bfloat16, bf16)
