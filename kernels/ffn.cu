// Small-M projection of the fused FFN: y[M, N] = epilogue(x[M, K] · W[N2, K]ᵀ + b), weight-streaming.
//
//   x    [M, K]   row-major (tokens), M <= 8 * NT
//   W    [N2, K]  row-major: candle `Linear` layout [out, in]; N2 = N, or 2N when GATED
//                 (rows [0, N) are the gate projection, rows [N, 2N) the up projection)
//   bias [N2]     or null
//   y    [M, N]   row-major
//   epilogue: act(a + b) (plain) or act(a_gate + b_gate) * (a_up + b_up) (GATED), in f32, one rounding.
//
// The weight-streaming tensor-core step (16 weight rows x 8 tokens per mma, 16-byte loads) is in
// ffn.cuh. The WARPS warps of a block split K; partial sums meet in shared memory, where the
// epilogue runs (bias, activation, gate) before the only store.
#include "ffn.cuh"

namespace ffn {

// Mirrors `FfnParams` in src/ffn/cuda.rs.
struct Params {
  const void* x;     // [M, K]
  const void* w;     // [N2, K]
  const void* bias;  // [N2] or null
  void* y;           // [M, N]
  int m, n, k;
  int k_per_warp;    // multiple of CHUNK_K
};

// Shared-memory partial sums: [WARPS][8 * NT tokens][row stride]. A stride of 20 (36 gated) puts
// the 32 lanes' accumulator writes in 32 distinct banks.
template <bool GATED> struct Red {
  static constexpr int ROWS_STORED = GATED ? 2 * ROWS : ROWS;
  static constexpr int STRIDE = ROWS_STORED + 4;
};

template <typename T, tg::Act A, bool GATED, int NT, bool ALIGNED, int UNROLL = unroll<GATED, NT>(),
          bool PIPE = pipe<GATED, NT>()>
__device__ void proj_small_m(const Params& p) {
  extern __shared__ float red[];  // [WARPS][8 * NT][Red::STRIDE]
  using R = Red<GATED>;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w = static_cast<const T*>(p.w);
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
  T* __restrict__ y = static_cast<T*>(p.y);

  const int warp = threadIdx.x / tg::WARP_SIZE, lane = threadIdx.x % tg::WARP_SIZE;
  const int warps = blockDim.x / tg::WARP_SIZE;
  const int g = lane / 4, t = lane % 4;
  const int n0 = blockIdx.x * ROWS;

  // Prologue: this lane's weight rows and token rows. Rows past N and tokens past M are clamped to
  // valid ones (their results are never stored), so the main loop has no row/token branches.
  const int r0 = min(n0 + g, p.n - 1), r1 = min(n0 + g + 8, p.n - 1);
  const T* w_rows[GATED ? 4 : 2];
  w_rows[0] = w + (int64_t)r0 * p.k;
  w_rows[1] = w + (int64_t)r1 * p.k;
  if constexpr (GATED) {
    w_rows[2] = w + (int64_t)(p.n + r0) * p.k;
    w_rows[3] = w + (int64_t)(p.n + r1) * p.k;
  }
  const T* x_rows[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) x_rows[nt] = x + (int64_t)min(nt * TOKENS + g, p.m - 1) * p.k;

  float acc[GATED ? 2 : 1][NT][4] = {};
  const int k_begin = warp * p.k_per_warp;
  const int k_end = min(p.k, k_begin + p.k_per_warp);

  stream_k<T, GATED, NT, ALIGNED, UNROLL, PIPE>(acc, w_rows, x_rows, k_begin, k_end);

  // Split-K meet: c0/c1 = (row g, tokens 2t, 2t+1), c2/c3 = (row g + 8, same tokens).
  float* my = red + warp * (TOKENS * NT) * R::STRIDE;
#pragma unroll
  for (int part = 0; part < (GATED ? 2 : 1); ++part) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int tok = nt * TOKENS + 2 * t, row = part * ROWS + g;
      my[tok * R::STRIDE + row] = acc[part][nt][0];
      my[(tok + 1) * R::STRIDE + row] = acc[part][nt][1];
      my[tok * R::STRIDE + row + 8] = acc[part][nt][2];
      my[(tok + 1) * R::STRIDE + row + 8] = acc[part][nt][3];
    }
  }
  __syncthreads();

  // Epilogue: sum the warps' partials, bias, activation (gate), one rounding, coalesced along N.
  for (int i = threadIdx.x; i < ROWS * TOKENS * NT; i += blockDim.x) {
    const int row = i % ROWS, tok = i / ROWS, n = n0 + row;
    if (n >= p.n || tok >= p.m) continue;
    float a = 0.0f, b = 0.0f;
    for (int wi = 0; wi < warps; ++wi) {
      const float* part = red + (wi * TOKENS * NT + tok) * R::STRIDE;
      a += part[row];
      if (GATED) b += part[ROWS + row];
    }
    if (bias != nullptr) {
      a += tg::to_float(bias[n]);
      if (GATED) b += tg::to_float(bias[p.n + n]);
    }
    float v = tg::activate<A>(a);
    if (GATED) v *= b;
    y[(int64_t)tok * p.n + n] = tg::from_float<T>(v);
  }
}


// The activation pass of the large-M (cuBLASLt) path for activations cuBLASLt has no epilogue for
// (erf GELU, SiLU) and for the gate: h = x·W1 + b1 comes from a cuBLASLt GEMM with the bias in its
// epilogue (f32, one rounding), then ONE pass here, 16-byte loads, math in f32, one rounding:
//   plain: h = act(h) in place, numel elements (16-byte aligned base: the host checks);
//   gated: h [M, 2N] = [gate | up] per row, y [M, N] = act(gate) * up (16-byte vectors when
//          N % 8 == 0 and the base is aligned, VEC = true; else one element per thread).
template <typename T, tg::Act A>
__device__ void act_inplace(T* __restrict__ h, int64_t numel) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t vecs = numel / VEC;
  uint4* __restrict__ hv = reinterpret_cast<uint4*>(h);
  for (int64_t i = first; i < vecs; i += stride) {
    uint4 v = hv[i];
    T* e = reinterpret_cast<T*>(&v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) e[j] = tg::from_float<T>(tg::activate<A>(tg::to_float(e[j])));
    hv[i] = v;
  }
  for (int64_t i = vecs * VEC + first; i < numel; i += stride) {
    h[i] = tg::from_float<T>(tg::activate<A>(tg::to_float(h[i])));
  }
}

template <typename T, tg::Act A, bool VECTOR>
__device__ void gate_act(const T* __restrict__ h, T* __restrict__ y, int64_t m, int64_t n) {
  const int64_t per_row = VECTOR ? n / VEC : n;
  for (int64_t r = blockIdx.y; r < m; r += gridDim.y) {
    const T* gate = h + r * 2 * n;
    const T* up = gate + n;
    T* out = y + r * n;
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < per_row; c += (int64_t)gridDim.x * blockDim.x) {
      if constexpr (VECTOR) {
        uint4 gv = reinterpret_cast<const uint4*>(gate)[c];
        const uint4 uv = reinterpret_cast<const uint4*>(up)[c];
        T* ge = reinterpret_cast<T*>(&gv);
        const T* ue = reinterpret_cast<const T*>(&uv);
#pragma unroll
        for (int j = 0; j < VEC; ++j) ge[j] = tg::from_float<T>(tg::activate<A>(tg::to_float(ge[j])) * tg::to_float(ue[j]));
        reinterpret_cast<uint4*>(out)[c] = gv;
      } else {
        out[c] = tg::from_float<T>(tg::activate<A>(tg::to_float(gate[c])) * tg::to_float(up[c]));
      }
    }
  }
}
}  // namespace ffn

#ifndef FFN_NO_ENTRIES  // scripts/ffn_kernel_timing.cu includes the device code without the entry points
// Entry points: ffn_proj_<dtype>_<act>_<plain|gated>_nt<NT>_<a|u> (up to 8*NT tokens; a: K % 8 == 0 and
// 16-byte aligned bases, u: any K).
#define FFN_ENTRY(T, TNAME, A, ANAME, GATED, GNAME, NT, ALIGNED, ANAME2)                                       \
  extern "C" __global__ void __launch_bounds__(ffn::MAX_THREADS)                                                            \
      ffn_proj_##TNAME##_##ANAME##_##GNAME##_nt##NT##_##ANAME2(const ffn::Params p) {                           \
    ffn::proj_small_m<T, tg::Act::A, GATED, NT, ALIGNED>(p);                                                    \
  }
#define FFN_TILES(T, TNAME, A, ANAME, GATED, GNAME)        \
  FFN_ENTRY(T, TNAME, A, ANAME, GATED, GNAME, 1, true, a)  \
  FFN_ENTRY(T, TNAME, A, ANAME, GATED, GNAME, 2, true, a)  \
  FFN_ENTRY(T, TNAME, A, ANAME, GATED, GNAME, 4, true, a)  \
  FFN_ENTRY(T, TNAME, A, ANAME, GATED, GNAME, 1, false, u) \
  FFN_ENTRY(T, TNAME, A, ANAME, GATED, GNAME, 2, false, u) \
  FFN_ENTRY(T, TNAME, A, ANAME, GATED, GNAME, 4, false, u)
#define FFN_ACT(T, TNAME, A, ANAME)                 \
  FFN_TILES(T, TNAME, A, ANAME, false, plain)       \
  FFN_TILES(T, TNAME, A, ANAME, true, gated)
#define FFN_ALL_ACTS(T, TNAME)             \
  FFN_ACT(T, TNAME, Gelu, gelu)            \
  FFN_ACT(T, TNAME, GeluTanh, gelu_tanh)   \
  FFN_ACT(T, TNAME, Relu, relu)            \
  FFN_ACT(T, TNAME, Silu, silu)            \
  FFN_ACT(T, TNAME, Identity, identity)

FFN_ALL_ACTS(__half, f16)
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
FFN_ALL_ACTS(__nv_bfloat16, bf16)
#endif

// Entry points of the activation pass: ffn_act_<dtype>_<act> (in place), ffn_gate_<dtype>_<act>_<v|s>.
#define FFN_ACT_PASS(T, TNAME, A, ANAME)                                                               \
  extern "C" __global__ void ffn_act_##TNAME##_##ANAME(T* h, int64_t numel) {                          \
    ffn::act_inplace<T, tg::Act::A>(h, numel);                                                          \
  }                                                                                                     \
  extern "C" __global__ void ffn_gate_##TNAME##_##ANAME##_v(const T* h, T* y, int64_t m, int64_t n) {   \
    ffn::gate_act<T, tg::Act::A, true>(h, y, m, n);                                                     \
  }                                                                                                     \
  extern "C" __global__ void ffn_gate_##TNAME##_##ANAME##_s(const T* h, T* y, int64_t m, int64_t n) {   \
    ffn::gate_act<T, tg::Act::A, false>(h, y, m, n);                                                    \
  }
#define FFN_ACT_PASS_ALL(T, TNAME)          \
  FFN_ACT_PASS(T, TNAME, Gelu, gelu)        \
  FFN_ACT_PASS(T, TNAME, GeluTanh, gelu_tanh) \
  FFN_ACT_PASS(T, TNAME, Relu, relu)        \
  FFN_ACT_PASS(T, TNAME, Silu, silu)        \
  FFN_ACT_PASS(T, TNAME, Identity, identity)

FFN_ACT_PASS_ALL(__half, f16)
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
FFN_ACT_PASS_ALL(__nv_bfloat16, bf16)
#endif
#endif  // FFN_NO_ENTRIES
