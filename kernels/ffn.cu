// Small-M projection of the fused FFN: y[M, N] = epilogue(x[M, K] · W[N2, K]ᵀ + b), weight-streaming.
//
//   x    [M, K]   row-major (tokens), M <= 8 * NT
//   W    [N2, K]  row-major: candle `Linear` layout [out, in]; N2 = N, or 2N when GATED
//                 (rows [0, N) are the gate projection, rows [N, 2N) the up projection)
//   bias [N2]     or null
//   y    [M, N]   row-major
//   epilogue: act(a + b) (plain) or act(a_gate + b_gate) * (a_up + b_up) (GATED), in f32, one rounding.
//
// Tensor cores with the roles swapped (y^T = W · x^T): the weight rows are the mma's M=16 side and
// the (few) tokens its N=8 side, so a warp streams 16 weight rows once from HBM with 16-byte loads
// and no token padding beyond 8. Lane (g = lane / 4, t = lane % 4) loads W[row g (and g + 8), 8t..8t+8]
// and x[token g, 8t..8t+8] of each 32-wide k chunk; the chunk's k order is permuted identically in
// A and B (lane t owns physical k 8t..8t+7 in both), which leaves the dot products unchanged and
// makes every load 16 contiguous bytes. The WARPS warps of a block split K; partial sums meet in
// shared memory, where the epilogue runs (bias, activation, gate) before the only store.
#include "common.cuh"

namespace ffn {

constexpr int ROWS = 16;        // weight rows (output features) per block: the mma M side
constexpr int TOKENS = 8;       // tokens per token tile: the mma N side
constexpr int CHUNK_K = 32;     // k per lane-group step: 4 lanes x 8 elements (16 bytes)
// Chunks in flight per warp iteration (memory-level parallelism), halved where the token tiles and
// the gate would push the loaded fragments past the register budget (ptxas: no spills at 255 regs).
template <bool GATED, int NT> constexpr int unroll() { return NT * (GATED ? 2 : 1) >= 4 ? 2 : 4; }
constexpr int MAX_THREADS = 256;  // 8 warps; mirrors MAX_WARPS in src/ffn/cuda.rs
constexpr int VEC = 8;          // 16-bit elements per 16-byte load

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

template <typename T> struct MmaOp;
template <> struct MmaOp<__half> {
  static __device__ __forceinline__ void run(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};
template <> struct MmaOp<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};

// 8 consecutive 16-bit elements of `row` from column k, zero past `k_end`. ALIGNED (K % 8 == 0 and
// 16-byte aligned bases): one 16-byte load, and a chunk is either all in range or all out.
// STREAM: a weight row (read once per call) rather than a token row (re-read by every block).
template <typename T, bool ALIGNED, bool STREAM>
__device__ __forceinline__ uint4 load8(const T* __restrict__ row, int k, int k_end) {
  if (ALIGNED) {
    if (k >= k_end) return make_uint4(0, 0, 0, 0);
    if constexpr (STREAM) {
      // Weights are read once: skip L1, and have L2 fetch whole 256-byte blocks from HBM (the
      // warp's following chunks of the same rows use the rest).
      uint4 v;
      asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                   : "l"(row + k));
      return v;
    } else {
      return __ldg(reinterpret_cast<const uint4*>(row + k));
    }
  } else {
    const unsigned short* r = reinterpret_cast<const unsigned short*>(row);
    uint32_t v[VEC / 2];
#pragma unroll
    for (int i = 0; i < VEC / 2; ++i) {
      const uint32_t lo = (k + 2 * i < k_end) ? r[k + 2 * i] : 0u;
      const uint32_t hi = (k + 2 * i + 1 < k_end) ? r[k + 2 * i + 1] : 0u;
      v[i] = lo | (hi << 16);
    }
    return make_uint4(v[0], v[1], v[2], v[3]);
  }
}

// The two mmas of one 32-wide chunk: A rows (g, g + 8) from wa/wb, B column g from xb.
template <typename T>
__device__ __forceinline__ void mma_chunk(float (&c)[4], const uint4& wa, const uint4& wb, const uint4& xb) {
  MmaOp<T>::run(c, wa.x, wb.x, wa.y, wb.y, xb.x, xb.y);  // physical k 8t + 0..3
  MmaOp<T>::run(c, wa.z, wb.z, wa.w, wb.w, xb.z, xb.w);  // physical k 8t + 4..7
}

template <typename T, tg::Act A, bool GATED, int NT, bool ALIGNED>
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

  constexpr int UNROLL = unroll<GATED, NT>();
  // Main loop: UNROLL chunks of 32 k per iteration; every load is issued before the first mma.
  // The loop bound is warp-uniform (mma.sync needs the whole warp); lanes mask their own tails.
  for (int kb = k_begin; kb < k_end; kb += CHUNK_K * UNROLL) {
    const int kc = kb + t * VEC;
    uint4 wv[GATED ? 4 : 2][UNROLL];
    uint4 xv[NT][UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
      for (int r = 0; r < (GATED ? 4 : 2); ++r) wv[r][u] = load8<T, ALIGNED, true>(w_rows[r], kc + u * CHUNK_K, k_end);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) xv[nt][u] = load8<T, ALIGNED, false>(x_rows[nt], kc + u * CHUNK_K, k_end);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        mma_chunk<T>(acc[0][nt], wv[0][u], wv[1][u], xv[nt][u]);
        if constexpr (GATED) mma_chunk<T>(acc[1][nt], wv[2][u], wv[3][u], xv[nt][u]);
      }
    }
  }

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

}  // namespace ffn

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
