// Shared device helpers: dtype conversion, activations, warp reductions, small math.
// Every kernels/*.cu includes this; keep it free of op-specific code.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

namespace tg {

constexpr float LOG2E = 1.4426950408889634f;
constexpr float SQRT_2_OVER_PI = 0.7978845608028654f;  // sqrt(2/pi), GELU tanh form
constexpr float GELU_TANH_CUBIC = 0.044715f;
constexpr float INV_SQRT_2 = 0.7071067811865476f;
constexpr int WARP_SIZE = 32;

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// ---- float <-> storage type -------------------------------------------------------------
template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// ---- activations --------------------------------------------------------------------------
// Numbering mirrors `tiny_gemm::Activation` (src/activation.rs); it is part of kernel names.
enum class Act : int { Gelu = 0, GeluTanh = 1, Relu = 2, Silu = 3, Identity = 4 };

template <Act A> __device__ __forceinline__ float activate(float x);
// erf form, as candle's `gelu_erf` and PyTorch's default `gelu`.
template <> __device__ __forceinline__ float activate<Act::Gelu>(float x) {
  return 0.5f * x * (1.0f + erff(x * INV_SQRT_2));
}
// tanh approximation, as candle's `gelu` and GPT-2's "gelu_new".
template <> __device__ __forceinline__ float activate<Act::GeluTanh>(float x) {
  return 0.5f * x * (1.0f + tanhf(SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x * x * x)));
}
template <> __device__ __forceinline__ float activate<Act::Relu>(float x) { return fmaxf(x, 0.0f); }
template <> __device__ __forceinline__ float activate<Act::Silu>(float x) { return x / (1.0f + expf(-x)); }
template <> __device__ __forceinline__ float activate<Act::Identity>(float x) { return x; }

// ---- warp reductions ----------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// ---- programmatic dependent launch (PDL) ---------------------------------------------------
// First statement of a kernel the host may launch with programmatic stream serialization
// (src/cuda.rs `launch_ex`): such a grid can be scheduled before the previous kernel on the stream
// has finished, so it waits for that grid's completion and memory (griddepcontrol.wait) before any
// load or store, then lets the next PDL-launched grid be scheduled at once (its own wait orders it
// after this grid's completion, wherever the trigger sits). Both are no-ops in a grid launched
// without the attribute, and compiled out before sm_90.
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

}  // namespace tg
