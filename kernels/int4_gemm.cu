// W4A16 matmul y[M, N] = x[M, K] . W^T with W in the packed INT4 format of int4_format.cuh.
//
// int4_gemm_small_m (M <= 16 per 16-row block): a block owns NT tiles of 8 output rows and one
// split of K; its warps split that K range again, each streaming its chunks (one 16-byte word
// group per lane and tile: 512 contiguous bytes per warp) through a DEPTH-stage cp.async ring in
// shared memory that only the issuing lane reads back (no barrier in the main loop). The weights
// are dequantized in registers to the exact integers q - z and fed to mma.sync.m16n8k16 with f32
// accumulators (x rows >= M are zero in the A fragment; one 16-byte load per row and word, from
// global memory or, variant XS, from the block's activations staged in shared memory); each
// group's sum is scaled once, from scales staged in shared memory for the block. The warps' partial
// sums are added in shared memory in warp order (deterministic). With several K splits (grid.y)
// each block writes f32 partials [splits, M, N] and int4_reduce sums them in split order.
// int4_dequant: W -> [N, K] in T, for the large-M path (scratch buffer + cuBLAS).
#include "int4_format.cuh"

using namespace tg::int4;

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

// ---- cp.async: 16 bytes global -> shared, bypassing L1 (the weights are streamed once) ----
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int PENDING> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory");
}

// x[row, k .. k + 8) as eight MMA operands (four pairs); k is a multiple of 8.
template <typename T> __device__ __forceinline__ uint4 load_x8(const T* p) {
  if constexpr (sizeof(T) == 2) {
    return __ldg(reinterpret_cast<const uint4*>(p));
  } else {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    const __half2 h[4] = {__floats2half2_rn(a.x, a.y), __floats2half2_rn(a.z, a.w), __floats2half2_rn(b.x, b.y),
                          __floats2half2_rn(b.z, b.w)};
    return *reinterpret_cast<const uint4*>(h);
  }
}

// Shared memory of one block (mirrors `GemmConfig::smem_bytes` in src/quant/launch.rs):
//   the warps' cp.async rings [warps][DEPTH][NT][32 lanes] of 16-byte lane chunks,
//   (XS) the split's activations [min(M, 8 | 16) rows][chunks_per_split * 128 + X_PAD] in the MMA
//   type, staged once per block (the A fragments then come from shared memory),
//   the block's scales (and zeros) [groups of the split][NT * 8 columns] in f16.
// The rings are reused for the warps' partial sums [warps][NT * 4][32] at the end.
// X_PAD: 64 bytes shift row g by 16 banks, so a warp's 16-byte A-fragment reads (8 rows x 64
// bytes) take the minimum 4 wavefronts.
constexpr int X_PAD = 32;
template <int NT, int DEPTH> __host__ __device__ constexpr int ring_bytes(int warps) {
  return warps * DEPTH * NT * tg::WARP_SIZE * (int)sizeof(LaneChunk);
}

// One lane's share of a warp: NT tiles of 8 output rows, activation rows g and (ROWS16) g + 8.
// Per group of G k the MMAs accumulate x . (q - z) exactly into `grp` (CH independent chains);
// closing the group adds grp * s(column) to `acc`, so each scale is applied once per group.
template <typename T, int NT, bool ROWS16, bool SYM, bool XS> struct WarpTiles {
  using Op = typename MmaOperand<T>::type;
  static constexpr int CH = NT == 1 ? 2 : 1;  // one tile: two chains (MMA steps s = 0, 1)
  float acc[NT][4] = {};
  float grp[NT][CH][4];
  uint32_t zz[NT];            // 1024 + z (f16) / 128 + z (bf16) of B-fragment row g, per tile
  const Op* xs0;              // XS: staged x, row g, column 8t - k_base: A-fragment rows g
  const Op* xs1;              // XS: row g + 8
  const T* xg0;               // !XS: x + g * K + 8t
  const T* xg1;               // !XS: x + (g + 8) * K + 8t
  const __half* s_scale;      // [groups][NT * 8] in shared memory, group 0 = the split's first
  const __half* s_zero;
  int g, t, grp0, spg_log2;
  bool row_lo, row_hi;

  __device__ __forceinline__ void open_group(int gl) {
#pragma unroll
    for (int i = 0; i < NT; ++i) {
#pragma unroll
      for (int c = 0; c < CH; ++c)
#pragma unroll
        for (int r = 0; r < 4; ++r) grp[i][c][r] = 0.0f;
      const float z = SYM ? (float)SYMMETRIC_ZERO : __half2float(s_zero[gl * NT * TILE_N + i * TILE_N + g]);
      zz[i] = ZeroShift<Op>(z).bits();
    }
  }

  // One word per tile: k in [k0, k0 + 32).
  __device__ __forceinline__ void word(const uint32_t (&w)[NT], int k0) {
    const uint4 zero4 = make_uint4(0u, 0u, 0u, 0u);
    uint4 lo = zero4, hi = zero4;
    if (XS) {
      if (row_lo) lo = *reinterpret_cast<const uint4*>(xs0 + k0);
      if (ROWS16 && row_hi) hi = *reinterpret_cast<const uint4*>(xs1 + k0);
    } else {
      if (row_lo) lo = load_x8(xg0 + k0);
      if (ROWS16 && row_hi) hi = load_x8(xg1 + k0);
    }
    const uint32_t a[2][4] = {{lo.x, hi.x, lo.y, hi.y}, {lo.z, hi.z, lo.w, hi.w}};
#pragma unroll
    for (int i = 0; i < NT; ++i) {
      const ZeroShift<Op> zs(zz[i]);
#pragma unroll
      for (int s = 0; s < 2; ++s) mma_16816<Op>(grp[i][s % CH], a[s], zs.pair(w[i], 2 * s), zs.pair(w[i], 2 * s + 1));
    }
  }

  // Accumulator columns are 2t and 2t + 1 of each tile.
  __device__ __forceinline__ void close_group(int gl) {
#pragma unroll
    for (int i = 0; i < NT; ++i) {
      const float2 s = __half22float2(*reinterpret_cast<const __half2*>(s_scale + gl * NT * TILE_N + i * TILE_N + 2 * t));
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        float v = grp[i][0][r];
        if (CH == 2) v += grp[i][CH - 1][r];
        acc[i][r] = fmaf(v, r % 2 ? s.y : s.x, acc[i][r]);
      }
    }
  }

  // Sub-tile kt (k0 = 32 kt): open its group first, close it after the last sub-tile.
  __device__ __forceinline__ void sub_tile(const uint32_t (&w)[NT], int kt) {
    const int spg_mask = (1 << spg_log2) - 1;
    const int gl = (kt >> spg_log2) - grp0;
    if ((kt & spg_mask) == 0) open_group(gl);
    word(w, kt * SUBTILE_K);
    if ((kt & spg_mask) == spg_mask) close_group(gl);
  }
};

template <typename T, int NT, bool ROWS16, bool SYM, int DEPTH, bool XS>
__device__ void int4_gemm_small_m(const T* __restrict__ x,              // [M, K]
                                  const uint32_t* __restrict__ packed,  // [ceil(N/8), K]
                                  const __half* __restrict__ scales,    // [K/G, N]
                                  const __half* __restrict__ zeros,     // [K/G, N] or null
                                  T* __restrict__ y,                    // [M, N] (one split)
                                  float* __restrict__ partial,          // [splits, M, N] (several)
                                  GemmDims d) {
  static_assert(DEPTH >= 2 && (DEPTH & (DEPTH - 1)) == 0, "DEPTH: a power of 2, at least 2");
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x % tg::WARP_SIZE, warp = threadIdx.x / tg::WARP_SIZE;
  const int n_warps = blockDim.x / tg::WARP_SIZE;
  // grid.z walks blocks of 16 activation rows
  const int m0 = blockIdx.z * 16, m_here = min(16, d.M - m0);
  const int tile0 = blockIdx.x * NT, n_tiles = tg::ceil_div(d.N, TILE_N);
  const int spg_log2 = __ffs(d.group_size / SUBTILE_K) - 1;  // sub-tiles per group, a power of 2
  const int n_chunks = tg::ceil_div(d.K, CHUNK_K);
  const int c_begin = blockIdx.y * d.chunks_per_split;
  const int c_end = min(n_chunks, c_begin + d.chunks_per_split);
  const int grp0 = (c_begin * WORDS_PER_LANE) >> spg_log2;
  const int n_groups = (min(d.K / SUBTILE_K, c_end * WORDS_PER_LANE) >> spg_log2) - grp0;
  const int max_groups = (d.chunks_per_split * WORDS_PER_LANE) >> spg_log2;  // sizes the scale region
  using Op = typename MmaOperand<T>::type;
  const int x_stride = d.chunks_per_split * CHUNK_K + X_PAD, x_rows = XS ? min(d.M, ROWS16 ? 16 : 8) : 0;
  Op* s_x = reinterpret_cast<Op*>(smem + ring_bytes<NT, DEPTH>(n_warps));
  __half* s_scale = reinterpret_cast<__half*>(s_x + x_rows * x_stride);
  __half* s_zero = s_scale + max_groups * NT * TILE_N;
  const int k_base = c_begin * CHUNK_K, k_len = min(d.K, c_end * CHUNK_K) - k_base;

  // This warp's chunks; the last chunk of K may be a tail (K % 128 != 0: 1..3 words per lane).
  const int per_warp = tg::ceil_div(c_end - c_begin, n_warps);
  const int wb = c_begin + warp * per_warp, we = min(c_end, wb + per_warp);
  const int full_end = min(we, d.K / CHUNK_K);
  auto tile_ptr = [&](int i, int c, int wc) {
    // tiles past the end (the NT > 1 tail) re-read the last tile; their outputs are not stored
    const int tile = min(tile0 + i, n_tiles - 1);
    return packed + (int64_t)tile * d.K + (int64_t)c * CHUNK_K + lane * wc;
  };
  // Ring slot (stage, tile) of this lane.
  LaneChunk* ring = reinterpret_cast<LaneChunk*>(smem) + warp * DEPTH * NT * tg::WARP_SIZE + lane;
  auto issue = [&](int c) {  // chunk c -> stage c % DEPTH; one commit group per chunk, even if empty
    if (c < full_end) {
#pragma unroll
      for (int i = 0; i < NT; ++i) cp_async16(ring + ((c % DEPTH) * NT + i) * tg::WARP_SIZE, tile_ptr(i, c, WORDS_PER_LANE));
    }
    cp_async_commit();
  };

  // Prologue: DEPTH - 1 chunks in flight while the block stages its activations and scales.
#pragma unroll
  for (int s = 0; s < DEPTH - 1; ++s) issue(wb + s);
  const int runs = k_len / LANE_K, rows_here = min(m_here, x_rows);
  for (int e = threadIdx.x; XS && e < rows_here * runs; e += blockDim.x) {
    const int r = e / runs, k = (e % runs) * LANE_K;
    *reinterpret_cast<uint4*>(s_x + r * x_stride + k) = load_x8(x + (int64_t)(m0 + r) * d.K + k_base + k);
  }
  for (int e = threadIdx.x; e < n_groups * NT * TILE_N; e += blockDim.x) {
    const int n = tile0 * TILE_N + e % (NT * TILE_N);
    const int64_t si = (int64_t)(grp0 + e / (NT * TILE_N)) * d.N + n;
    s_scale[e] = n < d.N ? scales[si] : __float2half(0.0f);
    if (!SYM) s_zero[e] = n < d.N ? zeros[si] : __float2half(0.0f);
  }
  __syncthreads();

  WarpTiles<T, NT, ROWS16, SYM, XS> wt;
  wt.g = lane / 4;
  wt.t = lane % 4;
  wt.row_lo = wt.g < m_here;
  wt.row_hi = wt.g + 8 < m_here;
  // rows past m_here are never read (row_lo / row_hi)
  wt.xs0 = s_x + wt.g * x_stride + LANE_K * wt.t - k_base;
  wt.xs1 = s_x + (wt.g + 8) * x_stride + LANE_K * wt.t - k_base;
  wt.xg0 = x + (int64_t)(m0 + wt.g) * d.K + LANE_K * wt.t;
  wt.xg1 = x + (int64_t)(m0 + wt.g + 8) * d.K + LANE_K * wt.t;
  wt.s_scale = s_scale;
  wt.s_zero = s_zero;
  wt.grp0 = grp0;
  wt.spg_log2 = spg_log2;

  // Main loop: refill the stage read one iteration ago, wait for chunk c, read it back, compute.
  for (int c = wb; c < full_end; ++c) {
    issue(c + DEPTH - 1);
    cp_async_wait<DEPTH - 1>();
    LaneChunk cur[NT];
#pragma unroll
    for (int i = 0; i < NT; ++i) cur[i] = ring[((c % DEPTH) * NT + i) * tg::WARP_SIZE];
#pragma unroll
    for (int j = 0; j < WORDS_PER_LANE; ++j) {
      uint32_t w[NT];
#pragma unroll
      for (int i = 0; i < NT; ++i) w[i] = cur[i].w[j];
      wt.sub_tile(w, c * WORDS_PER_LANE + j);
    }
  }
  // Tail: the last chunk of K when K % 128 != 0; groups end inside it (G | K).
  for (int c = max(wb, full_end); c < we; ++c) {
    const int wc = chunk_words(d.K, c);
    for (int j = 0; j < wc; ++j) {
      uint32_t w[NT];
#pragma unroll
      for (int i = 0; i < NT; ++i) w[i] = __ldg(tile_ptr(i, c, wc) + j);
      wt.sub_tile(w, c * WORDS_PER_LANE + j);
    }
  }

  // Epilogue: the warps' sums [warp][NT * 4][lane] -> shared memory, added in warp order.
  // Accumulator r of tile i: row g + 8 * (r / 2), column 8 * (tile0 + i) + 2t + r % 2.
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with its ring
  float* red = reinterpret_cast<float*>(smem);
  static_assert(NT * 4 * sizeof(float) <= DEPTH * NT * sizeof(LaneChunk), "partial sums fit the ring");
#pragma unroll
  for (int e = 0; e < NT * 4; ++e) red[(warp * NT * 4 + e) * tg::WARP_SIZE + lane] = wt.acc[e / 4][e % 4];
  __syncthreads();
  for (int e = threadIdx.x; e < NT * 4 * tg::WARP_SIZE; e += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < n_warps; ++w) sum += red[w * NT * 4 * tg::WARP_SIZE + e];
    const int q = e / tg::WARP_SIZE, l = e % tg::WARP_SIZE, i = q / 4, r = q % 4;
    const int m = l / 4 + 8 * (r / 2), col = (tile0 + i) * TILE_N + 2 * (l % 4) + r % 2;
    if (m >= m_here || col >= d.N) continue;
    const int64_t o = (int64_t)(m0 + m) * d.N + col;
    if (gridDim.y == 1) {
      y[o] = tg::from_float<T>(sum);
    } else {
      partial[(int64_t)blockIdx.y * d.M * d.N + o] = sum;
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

// out[n, k] = (q - z) * s in T. One thread per 8 consecutive k of a row: exactly the nibbles of
// one word (lane column t of row g), so each thread stores 8 contiguous outputs.
template <typename T>
__device__ void int4_dequant(const uint32_t* __restrict__ packed, const __half* __restrict__ scales,
                             const __half* __restrict__ zeros, T* __restrict__ out, GemmDims d) {
  constexpr int RUN = LANE_K;
  const int64_t runs = (int64_t)d.N * (d.K / RUN);
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < runs; idx += (int64_t)gridDim.x * blockDim.x) {
    const int n = (int)(idx / (d.K / RUN)), k8 = (int)(idx % (d.K / RUN)) * RUN;
    const int c = k8 / CHUNK_K, wc = chunk_words(d.K, c), j = (k8 % CHUNK_K) / SUBTILE_K, t = (k8 % SUBTILE_K) / RUN;
    const uint32_t word = packed[(int64_t)(n / TILE_N) * d.K + (int64_t)c * CHUNK_K + (4 * (n % TILE_N) + t) * wc + j];
    const int64_t si = (int64_t)(k8 / d.group_size) * d.N + n;
    const float s = __half2float(scales[si]);
    const float z = zeros != nullptr ? __half2float(zeros[si]) : (float)SYMMETRIC_ZERO;
    alignas(16) T v[RUN];
#pragma unroll
    for (int e = 0; e < RUN; ++e) {
      const int p = (e >> 1) | ((e & 1) << 2);  // nibble of k = k8 + e (see nibble_k)
      v[e] = tg::from_float<T>(((float)((word >> (4 * p)) & 0xfu) - z) * s);
    }
    // 16-byte stores: n * K + k8 is a multiple of 8 elements (K % 32 == 0)
    static_assert(RUN * sizeof(T) % 16 == 0, "whole 16-byte stores");
    uint4* o = reinterpret_cast<uint4*>(out + (int64_t)n * d.K + k8);
#pragma unroll
    for (int e = 0; e < (int)(RUN * sizeof(T) / 16); ++e) o[e] = reinterpret_cast<const uint4*>(v)[e];
  }
}

// Entry points: int4_gemm_<dtype>_<variant>_<sym|asym>, int4_reduce_<dtype>, int4_dequant_<dtype>.
// Variant n<NT>m<8|16>[x]: NT tiles per block (A fragments reused NT times), 8 or 16 activation
// rows per 16-row block, x: activations staged in shared memory per block (else read from global
// memory per word). Ring depth 4 for all: 8 and 16 measured no faster (H100, harness, M=1..16).
// Mirrors `GemmVariant` in src/quant/launch.rs.
constexpr int GEMM_MAX_THREADS = 256;  // 8 warps
#define INT4_GEMM_ENTRY(T, TNAME, NT, ROWS16, DEPTH, XS, VNAME, SYM, SNAME)                                    \
  extern "C" __global__ void __launch_bounds__(GEMM_MAX_THREADS)                                               \
      int4_gemm_##TNAME##_##VNAME##_##SNAME(const T* x, const uint32_t* packed, const __half* scales,          \
                                            const __half* zeros, T* y, float* partial, GemmDims d) {          \
    int4_gemm_small_m<T, NT, ROWS16, SYM, DEPTH, XS>(x, packed, scales, zeros, y, partial, d);                 \
  }
#define INT4_GEMM_VARIANT(T, TNAME, NT, ROWS16, DEPTH, XS, VNAME)                                              \
  INT4_GEMM_ENTRY(T, TNAME, NT, ROWS16, DEPTH, XS, VNAME, true, sym)                                           \
  INT4_GEMM_ENTRY(T, TNAME, NT, ROWS16, DEPTH, XS, VNAME, false, asym)
#define INT4_ENTRIES(T, TNAME)                                                                                 \
  INT4_GEMM_VARIANT(T, TNAME, 2, false, 4, true, n2m8x)                                                        \
  INT4_GEMM_VARIANT(T, TNAME, 2, false, 4, false, n2m8)                                                        \
  INT4_GEMM_VARIANT(T, TNAME, 4, true, 4, false, n4m16)                                                        \
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
