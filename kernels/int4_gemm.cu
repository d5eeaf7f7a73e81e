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

constexpr int GEMM_WARPS = 4;  // warps per block (mirrors GEMM_WARPS in src/quant/launch.rs)
constexpr int PIPE_LOADS = 4;  // 16-byte weight loads in flight per lane
constexpr int GEMM_MIN_BLOCKS = 5;  // register cap 96/thread: 6 and 8 spilled with PIPE_LOADS = 4

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

// One lane's share of a warp: NT tiles of 8 output rows, activation rows g and (ROWS16) g + 8.
// Per group of G k the MMAs accumulate x . (q - z) exactly into `grp`; closing the group adds
// grp * s(column) to `acc`, so each scale is applied once per group instead of per weight.
template <typename T, int NT, bool ROWS16, bool SYM> struct WarpTiles {
  using Op = typename MmaOperand<T>::type;
  float acc[NT][4] = {};
  float grp[NT][4];
  float zero[NT];  // z of B-fragment row g of each tile (asymmetric)
  const T* xg0;    // x + g * K + 2t: A-fragment rows g
  const T* xg1;    // x + (g + 8) * K + 2t
  int tile0, n_tiles, g, t;
  bool row_lo, row_hi;

  __device__ __forceinline__ void load_a(uint32_t a[2][4], int k0) const {
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int k = k0 + 16 * s;
      a[s][0] = load_x_pair(xg0, row_lo, k);
      a[s][2] = load_x_pair(xg0, row_lo, k + 8);
      a[s][1] = ROWS16 ? load_x_pair(xg1, row_hi, k) : 0u;
      a[s][3] = ROWS16 ? load_x_pair(xg1, row_hi, k + 8) : 0u;
    }
  }

  __device__ __forceinline__ void open_group(const __half* zeros, int64_t srow, int N) {
#pragma unroll
    for (int i = 0; i < NT; ++i) {
#pragma unroll
      for (int r = 0; r < 4; ++r) grp[i][r] = 0.0f;
      if (!SYM) {
        const int n = (tile0 + i) * TILE_N + g;
        zero[i] = n < N ? __half2float(zeros[srow + n]) : 0.0f;
      }
    }
  }

  // One word per tile: k in [k0, k0 + 32).
  __device__ __forceinline__ void word(const uint32_t (&w)[NT], int k0) {
    uint32_t a[2][4];
    load_a(a, k0);
#pragma unroll
    for (int i = 0; i < NT; ++i) {
      const ZeroShift<Op> zs(SYM ? (float)SYMMETRIC_ZERO : zero[i]);
#pragma unroll
      for (int s = 0; s < 2; ++s) mma_16816<Op>(grp[i], a[s], zs.pair(w[i], 2 * s), zs.pair(w[i], 2 * s + 1));
    }
  }

  // Accumulator columns are 2t and 2t + 1 of each tile.
  __device__ __forceinline__ void close_group(const __half* scales, int64_t srow, int N) {
#pragma unroll
    for (int i = 0; i < NT; ++i) {
      const int col = (tile0 + i) * TILE_N + 2 * t;
      const float s0 = col < N ? __half2float(scales[srow + col]) : 0.0f;
      const float s1 = col + 1 < N ? __half2float(scales[srow + col + 1]) : 0.0f;
      acc[i][0] = fmaf(grp[i][0], s0, acc[i][0]);
      acc[i][1] = fmaf(grp[i][1], s1, acc[i][1]);
      acc[i][2] = fmaf(grp[i][2], s0, acc[i][2]);
      acc[i][3] = fmaf(grp[i][3], s1, acc[i][3]);
    }
  }

  // Sub-tile kt (k0 = 32 kt): open its group first, close it after the last sub-tile.
  __device__ __forceinline__ void sub_tile(const uint32_t (&w)[NT], int kt, int spg_log2, const __half* scales,
                                           const __half* zeros, int N) {
    const int spg_mask = (1 << spg_log2) - 1;
    const int64_t srow = (int64_t)(kt >> spg_log2) * N;
    if ((kt & spg_mask) == 0) open_group(zeros, srow, N);
    word(w, kt * SUBTILE_K);
    if ((kt & spg_mask) == spg_mask) close_group(scales, srow, N);
  }
};

template <typename T, int NT, bool ROWS16, bool SYM>
__device__ void int4_gemm_small_m(const T* __restrict__ x,              // [M, K]
                                  const uint32_t* __restrict__ packed,  // [ceil(N/8), K]
                                  const __half* __restrict__ scales,    // [K/G, N]
                                  const __half* __restrict__ zeros,     // [K/G, N] or null
                                  T* __restrict__ y,                    // [M, N] (one split)
                                  float* __restrict__ partial,          // [splits, M, N] (several)
                                  GemmDims d) {
  const int lane = threadIdx.x % tg::WARP_SIZE, warp = threadIdx.x / tg::WARP_SIZE;
  // grid.z walks blocks of 16 activation rows
  const int m0 = blockIdx.z * 16, m_here = min(16, d.M - m0);
  WarpTiles<T, NT, ROWS16, SYM> wt;
  wt.g = lane / 4;
  wt.t = lane % 4;
  wt.tile0 = (blockIdx.x * GEMM_WARPS + warp) * NT;
  wt.n_tiles = tg::ceil_div(d.N, TILE_N);
  wt.row_lo = wt.g < m_here;
  wt.row_hi = wt.g + 8 < m_here;
  wt.xg0 = x + (int64_t)(m0 + wt.g) * d.K + 2 * wt.t;
  wt.xg1 = x + (int64_t)(m0 + wt.g + 8) * d.K + 2 * wt.t;
  if (wt.tile0 >= wt.n_tiles) return;  // no block-level sync below
  const int spg_log2 = __ffs(d.group_size / SUBTILE_K) - 1;  // sub-tiles per group, a power of 2
  const int n_chunks = tg::ceil_div(d.K, CHUNK_K);
  const int c_begin = blockIdx.y * d.chunks_per_split;
  const int c_end = min(n_chunks, c_begin + d.chunks_per_split);
  const int full_end = min(c_end, d.K / CHUNK_K);  // chunks with 4 words per lane

  auto tile_ptr = [&](int i, int c, int wc) {
    // tiles past the end (the NT = 2 tail) re-read the last tile; their outputs are not stored
    const int tile = min(wt.tile0 + i, wt.n_tiles - 1);
    return packed + (int64_t)tile * d.K + (int64_t)c * CHUNK_K + lane * wc;
  };
  // Ring of STAGES chunks per tile: PIPE_LOADS 16-byte loads in flight per lane.
  constexpr int STAGES = PIPE_LOADS / NT;
  static_assert(STAGES >= 1 && PIPE_LOADS % NT == 0, "PIPE_LOADS must be a multiple of NT");
  LaneChunk ring[STAGES][NT];
#pragma unroll
  for (int s = 0; s < STAGES; ++s) {
    if (c_begin + s < full_end) {
#pragma unroll
      for (int i = 0; i < NT; ++i) ring[s][i] = load_lane_chunk(tile_ptr(i, c_begin + s, WORDS_PER_LANE));
    }
  }
  // Main loop over full chunks; slot s is refilled with chunk c + STAGES before chunk c's math.
  for (int c0 = c_begin; c0 < full_end; c0 += STAGES) {
#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
      const int c = c0 + s;
      if (c >= full_end) break;
      LaneChunk cur[NT];
#pragma unroll
      for (int i = 0; i < NT; ++i) cur[i] = ring[s][i];
      if (c + STAGES < full_end) {
#pragma unroll
        for (int i = 0; i < NT; ++i) ring[s][i] = load_lane_chunk(tile_ptr(i, c + STAGES, WORDS_PER_LANE));
      }
#pragma unroll
      for (int j = 0; j < WORDS_PER_LANE; ++j) {
        uint32_t w[NT];
#pragma unroll
        for (int i = 0; i < NT; ++i) w[i] = cur[i].w[j];
        wt.sub_tile(w, c * WORDS_PER_LANE + j, spg_log2, scales, zeros, d.N);
      }
    }
  }
  // Tail: the last chunk when K % 128 != 0 (1..3 words per lane); groups end inside it (G | K).
  for (int c = max(c_begin, full_end); c < c_end; ++c) {
    const int wc = chunk_words(d.K, c);
    for (int j = 0; j < wc; ++j) {
      uint32_t w[NT];
#pragma unroll
      for (int i = 0; i < NT; ++i) w[i] = __ldg(tile_ptr(i, c, wc) + j);
      wt.sub_tile(w, c * WORDS_PER_LANE + j, spg_log2, scales, zeros, d.N);
    }
  }

  // Epilogue: c0, c1 -> row g, cols 2t, 2t+1; c2, c3 -> row g + 8.
#pragma unroll
  for (int i = 0; i < NT; ++i) {
    const int n = (wt.tile0 + i) * TILE_N + 2 * wt.t;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int m = wt.g + 8 * (r / 2), col = n + (r % 2);
      if (m >= m_here || col >= d.N) continue;
      const int64_t o = (int64_t)(m0 + m) * d.N + col;
      if (gridDim.y == 1) {
        y[o] = tg::from_float<T>(wt.acc[i][r]);
      } else {
        partial[(int64_t)blockIdx.y * d.M * d.N + o] = wt.acc[i][r];
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

// out[n, k] = (q - z) * s in T. One thread per 8 consecutive k of a row, so each thread stores
// 8 contiguous outputs and a warp's stores are contiguous; it gathers its 16 nibbles from the 4
// words (lanes t = 0..3 of row g) that hold them.
template <typename T>
__device__ void int4_dequant(const uint32_t* __restrict__ packed, const __half* __restrict__ scales,
                             const __half* __restrict__ zeros, T* __restrict__ out, GemmDims d) {
  constexpr int RUN = 8;  // outputs per thread: k in [k8, k8 + 8) share i = r / 16 and h = (r % 16) / 8
  static_assert(SUBTILE_K % RUN == 0, "a run stays inside one 32-wide sub-tile");
  const int64_t runs = (int64_t)d.N * (d.K / RUN);
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < runs; idx += (int64_t)gridDim.x * blockDim.x) {
    const int n = (int)(idx / (d.K / RUN)), k8 = (int)(idx % (d.K / RUN)) * RUN;
    const int c = k8 / CHUNK_K, wc = chunk_words(d.K, c), j = (k8 % CHUNK_K) / SUBTILE_K, r = k8 % SUBTILE_K;
    const int i = r / 16, h = (r % 16) / 8;
    const int g = n % TILE_N;
    const uint32_t* tile = packed + (int64_t)(n / TILE_N) * d.K + (int64_t)c * CHUNK_K;
    const int64_t si = (int64_t)(k8 / d.group_size) * d.N + n;
    const float s = __half2float(scales[si]);
    const float z = zeros != nullptr ? __half2float(zeros[si]) : (float)SYMMETRIC_ZERO;
    alignas(16) T v[RUN];
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const uint32_t word = tile[(4 * g + t) * wc + j];
#pragma unroll
      for (int p1 = 0; p1 < 2; ++p1) {
        const int p = 4 * p1 + 2 * i + h;  // k = k8 + 2t + p1 (see nibble_k)
        v[2 * t + p1] = tg::from_float<T>(((float)((word >> (4 * p)) & 0xfu) - z) * s);
      }
    }
    // 16-byte stores: n * K + k8 is a multiple of 8 elements (K % 32 == 0)
    static_assert(RUN * sizeof(T) % 16 == 0, "whole 16-byte stores");
    uint4* o = reinterpret_cast<uint4*>(out + (int64_t)n * d.K + k8);
#pragma unroll
    for (int e = 0; e < (int)(RUN * sizeof(T) / 16); ++e) o[e] = reinterpret_cast<const uint4*>(v)[e];
  }
}

// Entry points: int4_gemm_<dtype>_<m8|m16>_<sym|asym>, int4_reduce_<dtype>, int4_dequant_<dtype>.
// int4_gemm_<dtype>_m8 (M <= 8 rows per 16-row block, one tile per warp) or _m16 (two tiles per
// warp: A fragments reused; one tile per warp measured 63 µs against 40 µs at M=16, K=4096
// N=11008, H200), _sym / _asym.
#define INT4_GEMM_ENTRY(T, TNAME, NT, ROWS16, MNAME, SYM, SNAME)                                               \
  extern "C" __global__ void __launch_bounds__(GEMM_WARPS * tg::WARP_SIZE, GEMM_MIN_BLOCKS)                    \
      int4_gemm_##TNAME##_##MNAME##_##SNAME(const T* x, const uint32_t* packed, const __half* scales,          \
                                            const __half* zeros, T* y, float* partial, GemmDims d) {          \
    int4_gemm_small_m<T, NT, ROWS16, SYM>(x, packed, scales, zeros, y, partial, d);                            \
  }
#define INT4_ENTRIES(T, TNAME)                                                                                 \
  INT4_GEMM_ENTRY(T, TNAME, 1, false, m8, true, sym)                                                           \
  INT4_GEMM_ENTRY(T, TNAME, 1, false, m8, false, asym)                                                         \
  INT4_GEMM_ENTRY(T, TNAME, 2, true, m16, true, sym)                                                           \
  INT4_GEMM_ENTRY(T, TNAME, 2, true, m16, false, asym)                                                         \
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
