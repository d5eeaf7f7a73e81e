// Fused bias-add + activation: y[r, c] = act(x[r, c] + bias[c]).
// x, y: [rows, cols] contiguous; bias: [cols] or null. One thread per element, grid-stride;
// a memory-bound elementwise op, so the only goals are coalesced access and one pass.
#include "common.cuh"

template <typename T, tg::Act A>
__device__ void bias_act(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y,
                         int64_t numel, int64_t cols) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < numel;
       i += (int64_t)gridDim.x * blockDim.x) {
    float v = tg::to_float(x[i]);
    if (bias != nullptr) v += tg::to_float(bias[i % cols]);
    y[i] = tg::from_float<T>(tg::activate<A>(v));
  }
}

// Entry points: bias_act_<dtype>_<act>.
#define BIAS_ACT_ENTRY(T, TNAME, A, ANAME)                                                  \
  extern "C" __global__ void bias_act_##TNAME##_##ANAME(const T* x, const T* bias, T* y,  \
                                                        int64_t numel, int64_t cols) {    \
    bias_act<T, tg::Act::A>(x, bias, y, numel, cols);                                      \
  }
#define BIAS_ACT_ALL_ACTS(T, TNAME)             \
  BIAS_ACT_ENTRY(T, TNAME, Gelu, gelu)          \
  BIAS_ACT_ENTRY(T, TNAME, GeluTanh, gelu_tanh) \
  BIAS_ACT_ENTRY(T, TNAME, Relu, relu)          \
  BIAS_ACT_ENTRY(T, TNAME, Silu, silu)          \
  BIAS_ACT_ENTRY(T, TNAME, Identity, identity)

BIAS_ACT_ALL_ACTS(float, f32)
BIAS_ACT_ALL_ACTS(__half, f16)
BIAS_ACT_ALL_ACTS(__nv_bfloat16, bf16)
