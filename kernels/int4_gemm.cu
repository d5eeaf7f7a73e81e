// W4A16 matmul y[M, N] = x[M, K] . W^T with W in the packed INT4 format of int4_format.cuh.
//
// int4_gemm_small_m (M <= 16): one warp per NT tiles of 8 output rows and a split of K. Per chunk
// of 128 k each lane does one 16-byte load per tile (512 contiguous bytes per warp: every packed
// byte is read once), dequantizes in registers to f16/bf16 and feeds mma.sync.m16n8k16 with f32
// accumulators; x rows >= M are zero in the A fragment. The next chunk's load is issued before the
// current chunk's math. With several K splits each writes f32 partials [splits, M, N] and
// int4_reduce sums them in a fixed order (deterministic).
// int4_dequant: W -> [N, K] in T, for the large-M path (scratch buffer + cuBLAS).
#include "int4_format.cuh"

using namespace tg::int4;

constexpr int GEMM_WARPS = 4;  // warps per block (mirrors GEMM_WARPS in src/quant/cuda.rs)

// Mirrors `GemmDims` in src/quant/cuda.rs.
struct GemmDims {
  int M, N, K, group_size, chunks_per_split;
};

// MMA operand type for activations T: f32 activations are rounded to f16.
template <typename T> struct MmaOperand { using type = __half; };
template <> struct MmaOperand<__nv_bfloat16> { using type = __nv_bfloat16; };

template <typename M> __device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
template <> __device__ __forceinline__ void mma_16816<__half>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma_16816<__nv_bfloat16>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two consecutive activations x[row, k], x[row, k+1] as the MMA operand pair (0 past row M).
template <typename T> __device__ __forceinline__ uint32_t load_x_pair(const T* x, bool valid, int64_t off);
template <> __device__ __forceinline__ uint32_t load_x_pair<__half>(const __half* x, bool valid, int64_t off) {
  return valid ? __ldg(reinterpret_cast<const unsigned int*>(x + off)) : 0u;
}
template <> __device__ __forceinline__ uint32_t load_x_pair<__nv_bfloat16>(const __nv_bfloat16* x, bool valid, int64_t off) {
  return valid ? __ldg(reinterpret_cast<const unsigned int*>(x + off)) : 0u;
}
template <> __device__ __forceinline__ uint32_t load_x_pair<float>(const float* x, bool valid, int64_t off) {
  if (!valid) return 0u;
  float2 v = __ldg(reinterpret_cast<const float2*>(x + off));
  __half2 h = __floats2half2_rn(v.x, v.y);
  return *reinterpret_cast<uint32_t*>(&h);
}

// The A fragment of rows 0..15, k in [k16, k16 + 16).
template <typename T>
__device__ __forceinline__ void load_a(uint32_t a[4], const T* x, int K, int k16, int g, int t, bool lo, bool hi) {
  const int64_t r0 = (int64_t)g * K + k16 + 2 * t, r1 = r0 + 8 * (int64_t)K;
  a[0] = load_x_pair(x, lo, r0);
  a[1] = load_x_pair(x, hi, r1);
  a[2] = load_x_pair(x, lo, r0 + 8);
  a[3] = load_x_pair(x, hi, r1 + 8);
}

// One lane's share of a warp: NT tiles of 8 rows, accumulators for rows g and g + 8.
template <typename T, int NT> struct WarpTiles {
  using Op = typename MmaOperand<T>::type;
  float acc[NT][4] = {};
  int tile0, n_tiles, g, t;
  bool row_lo, row_hi;

  // Multiplies one word per tile (sub-tile k0 .. k0 + 32) into the accumulators.
  __device__ __forceinline__ void word_step(const uint32_t (&w)[NT], const T* x, const __half* scales,
                                            const __half* zeros, const GemmDims& d, int k0) {
    uint32_t a[2][4];
    load_a(a[0], x, d.K, k0, g, t, row_lo, row_hi);
    load_a(a[1], x, d.K, k0 + 16, g, t, row_lo, row_hi);
    const int64_t srow = (int64_t)(k0 / d.group_size) * d.N;
#pragma unroll
    for (int i = 0; i < NT; ++i) {
      const int n = (tile0 + i) * TILE_N + g;
      __half s = __float2half(0.0f);
      float z = 0.0f;
      if (n < d.N) {
        s = scales[srow + n];
        z = zeros != nullptr ? __half2float(zeros[srow + n]) : (float)SYMMETRIC_ZERO;
      }
      const Dequant<Op> dq(s, z);
#pragma unroll
      for (int step = 0; step < 2; ++step) mma_16816<Op>(acc[i], a[step], dq.pair(w[i], 2 * step), dq.pair(w[i], 2 * step + 1));
    }
  }
};

template <typename T, int NT>
__device__ void int4_gemm_small_m(const T* __restrict__ x,              // [M, K]
                                  const uint32_t* __restrict__ packed,  // [ceil(N/8), K]
                                  const __half* __restrict__ scales,    // [K/G, N]
                                  const __half* __restrict__ zeros,     // [K/G, N] or null
                                  T* __restrict__ y,                    // [M, N] (one split)
                                  float* __restrict__ partial,          // [splits, M, N] (several)
                                  GemmDims d) {
  const int lane = threadIdx.x % tg::WARP_SIZE, warp = threadIdx.x / tg::WARP_SIZE;
  WarpTiles<T, NT> wt;
  wt.g = lane / 4;
  wt.t = lane % 4;
  wt.tile0 = (blockIdx.x * GEMM_WARPS + warp) * NT;
  wt.n_tiles = tg::ceil_div(d.N, TILE_N);
  wt.row_lo = wt.g < d.M;
  wt.row_hi = wt.g + 8 < d.M;
  if (wt.tile0 >= wt.n_tiles) return;  // no block-level sync below
  const int n_chunks = tg::ceil_div(d.K, CHUNK_K);
  const int c_begin = blockIdx.y * d.chunks_per_split;
  const int c_end = min(n_chunks, c_begin + d.chunks_per_split);
  const int full_end = min(c_end, d.K / CHUNK_K);  // chunks with 4 words per lane

  // Prologue: first full chunk's words. Tiles past the end (N < NT*8 tail) read tile n_tiles-1.
  auto tile_ptr = [&](int i, int c, int wc) {
    const int tile = min(wt.tile0 + i, wt.n_tiles - 1);
    return packed + (int64_t)tile * d.K + (int64_t)c * CHUNK_K + lane * wc;
  };
  LaneChunk cur[NT];
  if (c_begin < full_end) {
#pragma unroll
    for (int i = 0; i < NT; ++i) cur[i] = load_lane_chunk(tile_ptr(i, c_begin, WORDS_PER_LANE));
  }
  // Main loop: full chunks, next chunk's load in flight during this chunk's math.
  for (int c = c_begin; c < full_end; ++c) {
    LaneChunk nxt[NT];
    if (c + 1 < full_end) {
#pragma unroll
      for (int i = 0; i < NT; ++i) nxt[i] = load_lane_chunk(tile_ptr(i, c + 1, WORDS_PER_LANE));
    }
#pragma unroll
    for (int j = 0; j < WORDS_PER_LANE; ++j) {
      uint32_t w[NT];
#pragma unroll
      for (int i = 0; i < NT; ++i) w[i] = cur[i].w[j];
      wt.word_step(w, x, scales, zeros, d, c * CHUNK_K + j * SUBTILE_K);
    }
#pragma unroll
    for (int i = 0; i < NT; ++i) cur[i] = nxt[i];
  }
  // Tail: the last chunk when K % 128 != 0 (1..3 words per lane).
  for (int c = max(c_begin, full_end); c < c_end; ++c) {
    const int wc = chunk_words(d.K, c);
    for (int j = 0; j < wc; ++j) {
      uint32_t w[NT];
#pragma unroll
      for (int i = 0; i < NT; ++i) w[i] = __ldg(tile_ptr(i, c, wc) + j);
      wt.word_step(w, x, scales, zeros, d, c * CHUNK_K + j * SUBTILE_K);
    }
  }

  // Epilogue: c0, c1 -> row g, cols 2t, 2t+1; c2, c3 -> row g + 8.
#pragma unroll
  for (int i = 0; i < NT; ++i) {
    const int n = (wt.tile0 + i) * TILE_N + 2 * wt.t;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int m = wt.g + 8 * (r / 2), col = n + (r % 2);
      if (m >= d.M || col >= d.N) continue;
      if (gridDim.y == 1) {
        y[(int64_t)m * d.N + col] = tg::from_float<T>(wt.acc[i][r]);
      } else {
        partial[((int64_t)blockIdx.y * d.M + m) * d.N + col] = wt.acc[i][r];
      }
    }
  }
}

// y[m, n] = sum over splits of partial[s, m, n], in split order.
template <typename T>
__device__ void int4_reduce(const float* __restrict__ partial, T* __restrict__ y, int64_t mn, int splits) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < mn; i += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int p = 0; p < splits; ++p) s += partial[p * mn + i];
    y[i] = tg::from_float<T>(s);
  }
}

// out[n, k] = (q - z) * s in T; one thread per packed word.
template <typename T>
__device__ void int4_dequant(const uint32_t* __restrict__ packed, const __half* __restrict__ scales,
                             const __half* __restrict__ zeros, T* __restrict__ out, GemmDims d) {
  const int64_t words = (int64_t)tg::ceil_div(d.N, TILE_N) * d.K;
  for (int64_t wi = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; wi < words; wi += (int64_t)gridDim.x * blockDim.x) {
    const int tile = (int)(wi / d.K), r = (int)(wi % d.K);
    const int c = r / CHUNK_K, wc = chunk_words(d.K, c), off = r - c * CHUNK_K;
    const int lane = off / wc, j = off % wc;
    const int n = tile * TILE_N + lane / 4, t = lane % 4;
    if (n >= d.N) continue;
    const int k0 = c * CHUNK_K + j * SUBTILE_K;
    const int64_t si = (int64_t)(k0 / d.group_size) * d.N + n;
    const float s = __half2float(scales[si]);
    const float z = zeros != nullptr ? __half2float(zeros[si]) : (float)SYMMETRIC_ZERO;
    const uint32_t word = packed[wi];
#pragma unroll
    for (int p = 0; p < 8; ++p) {
      const float q = (float)((word >> (4 * p)) & 0xfu);
      out[(int64_t)n * d.K + k0 + nibble_k(p, t)] = tg::from_float<T>((q - z) * s);
    }
  }
}

// Entry points: int4_gemm_<dtype>_nt<NT>, int4_reduce_<dtype>, int4_dequant_<dtype>.
#define INT4_GEMM_ENTRY(T, TNAME, NT)                                                                          \
  extern "C" __global__ void __launch_bounds__(GEMM_WARPS * tg::WARP_SIZE) int4_gemm_##TNAME##_nt##NT(       \
      const T* x, const uint32_t* packed, const __half* scales, const __half* zeros, T* y, float* partial,    \
      GemmDims d) {                                                                                            \
    int4_gemm_small_m<T, NT>(x, packed, scales, zeros, y, partial, d);                                         \
  }
#define INT4_ENTRIES(T, TNAME)                                                                                 \
  INT4_GEMM_ENTRY(T, TNAME, 1)                                                                                 \
  INT4_GEMM_ENTRY(T, TNAME, 2)                                                                                 \
  extern "C" __global__ void int4_reduce_##TNAME(const float* partial, T* y, int64_t mn, int splits) {        \
    int4_reduce<T>(partial, y, mn, splits);                                                                    \
  }                                                                                                            \
  extern "C" __global__ void int4_dequant_##TNAME(const uint32_t* packed, const __half* scales,               \
                                                  const __half* zeros, T* out, GemmDims d) {                   \
    int4_dequant<T>(packed, scales, zeros, out, d);                                                            \
  }

INT4_ENTRIES(float, f32)
INT4_ENTRIES(__half, f16)
INT4_ENTRIES(__nv_bfloat16, bf16)
