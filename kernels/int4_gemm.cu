// W4A16 matmul y[M, N] = x[M, K] . W^T with W in the packed INT4 format of int4_format.cuh.
//
// int4_gemm_small_m (M <= 16 per 16-row block): a block owns NT tiles of 8 output rows and one
// split of K; its warps split that K range again, each streaming its chunks (one 16-byte word
// group per lane and tile: 512 contiguous bytes per warp) through a DEPTH-stage cp.async ring in
// shared memory that only the issuing lane reads back (no barrier in the main loop). The MMA is
// swapped (y^T = W . x^T): two tiles' weights form the 16-row A operand of mma.sync.m16n8k16 (the
// format's B-fragment registers of tile 2p are exactly the A-fragment rows g, those of tile
// 2p + 1 rows g + 8) and 8 activation rows the B operand, so M <= 8 costs one MMA per tile pair
// and k16 step and no zero registers. The weights are dequantized in registers to the exact
// integers q - z (WordDequant) with f32 accumulators; x: one 16-byte load per row and word, from
// global memory or, variant XS, from the block's activations staged in shared memory. Each
// group's sum is scaled once, from scales staged in shared memory for the block; the group size
// is a compile-time parameter of the main loop (a switch on d.group_size), so opening and closing
// groups costs no per-word test. The warps' partial sums are added in shared memory in warp
// order (deterministic). With several K splits (grid.y) each block writes f32 partials
// [splits, M, N] and int4_reduce sums them in split order.
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
__device__ __forceinline__ void cp_async16(uint32_t smem_addr, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int PENDING> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory");
}
__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

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
//   type, staged once per block (the B fragments then come from shared memory),
//   the block's scales (and zeros) [groups of the split][NT tiles][8 rows g] in f16 (a tile's 8
//   rows of a group are 16 contiguous bytes, in global memory too).
// The rings are reused for the warps' partial sums [warps][NT / 2 * TG * 4][32] at the end.
// X_PAD: 64 bytes shift row g by 16 banks, so a warp's 16-byte B-fragment reads (8 rows x 64
// bytes) take the minimum 4 wavefronts.
constexpr int X_PAD = 32;
constexpr int STAGE_TILE_BYTES = tg::WARP_SIZE * (int)sizeof(LaneChunk);  // one tile of one ring stage
template <int NT, int DEPTH> __host__ __device__ constexpr int ring_bytes(int warps) {
  return warps * DEPTH * NT * STAGE_TILE_BYTES;
}

// Block-wide staging of `total` items: each thread loads up to B items (load(e) -> V) before it
// stores them (store(e, v)), so their global latencies overlap.
template <int B, typename V, typename Load, typename Store>
__device__ __forceinline__ void stage_batched(int total, Load load, Store store) {
  for (int e0 = threadIdx.x; e0 < total; e0 += B * blockDim.x) {
    V v[B];
#pragma unroll
    for (int b = 0; b < B; ++b) {
      if (e0 + b * (int)blockDim.x < total) v[b] = load(e0 + b * blockDim.x);
    }
#pragma unroll
    for (int b = 0; b < B; ++b) {
      if (e0 + b * (int)blockDim.x < total) store(e0 + b * blockDim.x, v[b]);
    }
  }
}
// One lane's share of a warp: NT tiles of 8 output rows (NT / 2 MMA A operands), activation rows
// g (B-fragment column g) and (ROWS16) g + 8. Per group of G k the MMAs accumulate
// (q - z) . x exactly into `grp`; closing the group adds grp * s(row) to `acc`, so each scale is
// applied once per group. Accumulator r of pair p, token group h: output row 8 * (tile0 + 2p +
// r / 2) + g, activation row 8h + 2t + r % 2.
template <typename T, int NT, bool ROWS16, bool SYM, bool XS> struct WarpTiles {
  using Op = typename MmaOperand<T>::type;
  static_assert(NT % 2 == 0, "tiles come in pairs (one 16-row A operand)");
  static constexpr int NP = NT / 2;          // tile pairs
  static constexpr int TG = ROWS16 ? 2 : 1;  // groups of 8 activation rows
  float acc[NP][TG][4] = {};
  float grp[NP][TG][4];
  WordDequant<Op> dq[NT];     // !SYM: the zero points of the open group, per tile
  // x of the current chunk c (advance() moves them on by a chunk), B-fragment column g: rows
  // min(g, M - 1) and min(g + 8, M - 1), columns 128c + 8t
  const Op* xs0;              // XS: in the staged x
  const Op* xs1;
  const T* xg0;               // !XS: in x
  const T* xg1;
  const __half* s_scale;      // [groups][NT][8] in shared memory, group 0 = the split's first
  const __half* s_zero;
  int g, grp0;

  __device__ __forceinline__ WordDequant<Op> dequant(int i) const { return SYM ? WordDequant<Op>::symmetric() : dq[i]; }

  __device__ __forceinline__ void open_group(int gl) {
#pragma unroll
    for (int p = 0; p < NP; ++p) {
#pragma unroll
      for (int h = 0; h < TG; ++h)
#pragma unroll
        for (int r = 0; r < 4; ++r) grp[p][h][r] = 0.0f;
      if (!SYM) {
        const __half* z = s_zero + (gl * NT + 2 * p) * TILE_N + g;
        dq[2 * p] = WordDequant<Op>::zero_point(__half2half2(z[0]));
        dq[2 * p + 1] = WordDequant<Op>::zero_point(__half2half2(z[TILE_N]));
      }
    }
  }

  __device__ __forceinline__ void advance() {
    xs0 += CHUNK_K;
    xs1 += CHUNK_K;
    xg0 += CHUNK_K;
    xg1 += CHUNK_K;
  }

  // One word per tile: k in [k0, k0 + 32) of the current chunk.
  __device__ __forceinline__ void word(const uint32_t (&w)[NT], int k0) {
    uint4 lo, hi = make_uint4(0u, 0u, 0u, 0u);
    if (XS) {
      lo = *reinterpret_cast<const uint4*>(xs0 + k0);
      if (ROWS16) hi = *reinterpret_cast<const uint4*>(xs1 + k0);
    } else {
      lo = load_x8(xg0 + k0);
      if (ROWS16) hi = load_x8(xg1 + k0);
    }
#pragma unroll
    for (int p = 0; p < NP; ++p) {
      uint32_t d0[4], d1[4];
      dequant(2 * p).word(w[2 * p], d0);
      dequant(2 * p + 1).word(w[2 * p + 1], d1);
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const uint32_t a[4] = {d0[2 * s], d1[2 * s], d0[2 * s + 1], d1[2 * s + 1]};
        mma_16816<Op>(grp[p][0], a, s ? lo.z : lo.x, s ? lo.w : lo.y);
        if (ROWS16) mma_16816<Op>(grp[p][TG - 1], a, s ? hi.z : hi.x, s ? hi.w : hi.y);
      }
    }
  }

  __device__ __forceinline__ void close_group(int gl) {
#pragma unroll
    for (int p = 0; p < NP; ++p) {
      const __half* sp = s_scale + (gl * NT + 2 * p) * TILE_N + g;
      const float2 s = make_float2(__half2float(sp[0]), __half2float(sp[TILE_N]));
#pragma unroll
      for (int h = 0; h < TG; ++h)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[p][h][r] = fmaf(grp[p][h][r], r < 2 ? s.x : s.y, acc[p][h][r]);
    }
  }

  // Full chunk c (4 words per tile); SPG = sub-tiles per group (1, 2 or 4: groups never straddle
  // a chunk).
  template <int SPG> __device__ __forceinline__ void chunk(const LaneChunk (&cur)[NT], int c) {
    const int gl0 = (int)(((unsigned)c * WORDS_PER_LANE) / SPG) - grp0;
#pragma unroll
    for (int j = 0; j < WORDS_PER_LANE; ++j) {
      if (j % SPG == 0) open_group(gl0 + j / SPG);
      uint32_t w[NT];
#pragma unroll
      for (int i = 0; i < NT; ++i) w[i] = cur[i].w[j];
      word(w, j * SUBTILE_K);
      if (j % SPG == SPG - 1) close_group(gl0 + j / SPG);
    }
    advance();
  }
};

// A warp's chunks [wb, we) of K: full chunks through the cp.async ring (the prologue has issued
// chunks wb .. wb + DEPTH - 2 into stages 0 .. DEPTH - 2), then the tail chunk (K % 128 != 0:
// 1..3 words per lane, read directly; groups end inside it since G | K).
template <int SPG, typename W, int NT, int DEPTH>
__device__ __forceinline__ void stream_chunks(W& wt, const uint32_t* (&ip)[NT], const unsigned char* lane_ring,
                                              int wb, int we, int full_end, int K, const uint32_t* const (&tail)[NT]) {
  constexpr uint32_t STAGE = NT * STAGE_TILE_BYTES, RING_MASK = DEPTH * STAGE - 1;
  static_assert((DEPTH * STAGE & RING_MASK) == 0, "ring bytes: a power of 2");
  const uint32_t ring_s = static_cast<uint32_t>(__cvta_generic_to_shared(lane_ring));
  uint32_t issue_off = (DEPTH - 1) * STAGE, read_off = 0;
  for (int c = wb; c < full_end; ++c) {
    // refill the stage read one iteration ago, wait for chunk c, read it back, compute
    if (c + DEPTH - 1 < full_end) {
#pragma unroll
      for (int i = 0; i < NT; ++i) {
        cp_async16(ring_s + issue_off + i * STAGE_TILE_BYTES, ip[i]);
        ip[i] += CHUNK_K;
      }
    }
    cp_async_commit();
    issue_off = (issue_off + STAGE) & RING_MASK;
    cp_async_wait<DEPTH - 1>();
    LaneChunk cur[NT];
#pragma unroll
    for (int i = 0; i < NT; ++i) cur[i] = *reinterpret_cast<const LaneChunk*>(lane_ring + read_off + i * STAGE_TILE_BYTES);
    read_off = (read_off + STAGE) & RING_MASK;
    wt.template chunk<SPG>(cur, c);
  }
  for (int c = max(wb, full_end); c < we; ++c) {
    const int wc = chunk_words(K, c);
    for (int j = 0; j < wc; ++j) {
      uint32_t w[NT];
#pragma unroll
      for (int i = 0; i < NT; ++i) w[i] = __ldg(tail[i] + j);
      const int gl = (c * WORDS_PER_LANE + j) / SPG - wt.grp0;
      if (j % SPG == 0) wt.open_group(gl);
      wt.word(w, j * SUBTILE_K);
      if (j % SPG == SPG - 1) wt.close_group(gl);
    }
  }
}

template <typename T, int NT, bool ROWS16, bool SYM, int DEPTH, bool XS>
__device__ void int4_gemm_small_m(const T* __restrict__ x,              // [M, K]
                                  const uint32_t* __restrict__ packed,  // [ceil(N/8), K]
                                  const __half* __restrict__ scales,    // [K/G, N]
                                  const __half* __restrict__ zeros,     // [K/G, N] or null
                                  T* __restrict__ y,                    // [M, N] (one split)
                                  float* __restrict__ partial,          // [splits, M, N] (several)
                                  GemmDims d,
                                  const T* __restrict__ bias = nullptr,  // [N] or null
                                  int act = (int)tg::Act::Identity) {
  static_assert(DEPTH >= 2 && (DEPTH & (DEPTH - 1)) == 0, "DEPTH: a power of 2, at least 2");
  using W = WarpTiles<T, NT, ROWS16, SYM, XS>;
  constexpr int NP = W::NP, TG = W::TG;
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x % tg::WARP_SIZE, warp = threadIdx.x / tg::WARP_SIZE;
  const int n_warps = blockDim.x / tg::WARP_SIZE;
  // grid.z walks blocks of 16 activation rows
  const int m0 = blockIdx.z * 16, m_here = min(16, d.M - m0);
  const int tile0 = blockIdx.x * NT, n_tiles = tg::ceil_div(d.N, TILE_N);
  const int spg = d.group_size / SUBTILE_K;  // sub-tiles per group: 1, 2 or 4
  const int n_chunks = tg::ceil_div(d.K, CHUNK_K);
  const int c_begin = blockIdx.y * d.chunks_per_split;
  const int c_end = min(n_chunks, c_begin + d.chunks_per_split);
  const int grp0 = c_begin * WORDS_PER_LANE / spg;
  const int n_groups = min(d.K / SUBTILE_K, c_end * WORDS_PER_LANE) / spg - grp0;
  const int max_groups = d.chunks_per_split * WORDS_PER_LANE / spg;  // sizes the scale region
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
  // Tile i's words of this lane in chunk wb (full chunks: 4 words) and in the tail chunk; tiles
  // past the end (the NT > 2 tail) re-read the last tile, their outputs are not stored.
  const uint32_t* ip[NT];
  const uint32_t* tail[NT];
  const int tail_c = max(wb, full_end), tail_wc = chunk_words(d.K, tail_c);
#pragma unroll
  for (int i = 0; i < NT; ++i) {
    const uint32_t* t = packed + (int64_t)min(tile0 + i, n_tiles - 1) * d.K;
    ip[i] = t + (int64_t)wb * CHUNK_K + lane * WORDS_PER_LANE;
    tail[i] = t + (int64_t)tail_c * CHUNK_K + lane * tail_wc;
  }
  // This lane's slot of stage 0, tile 0 of the warp's ring.
  const unsigned char* lane_ring = smem + (warp * DEPTH * NT * tg::WARP_SIZE + lane) * (int)sizeof(LaneChunk);
  const uint32_t ring_s = static_cast<uint32_t>(__cvta_generic_to_shared(lane_ring));

  // Prologue: the block's activations (XS; f16 / bf16: 16-byte copies) and scales (zeros; whole
  // tiles of 8 rows when N % 8 == 0 and aligned: one 16-byte copy per tile and group) as the first
  // cp.async group, then DEPTH - 1 chunks of weights, so nothing waits on a load before the block
  // barrier. (Round 3 staged them with a load -> store loop: one global latency per item, behind
  // the weight requests.)
  const int runs = k_len / LANE_K, rows_here = min(m_here, x_rows);
  constexpr bool X_ASYNC = sizeof(T) == 2;
  if (XS && X_ASYNC) {
    for (int r = 0; r < rows_here; ++r) {
      const T* xr = x + (int64_t)(m0 + r) * d.K + k_base;
      for (int e = threadIdx.x; e < runs; e += blockDim.x) cp_async16(smem_u32(s_x + r * x_stride + e * LANE_K), xr + e * LANE_K);
    }
  }
  const bool vec_scales = d.N % TILE_N == 0 && reinterpret_cast<uintptr_t>(scales) % 16 == 0 &&
                          (SYM || reinterpret_cast<uintptr_t>(zeros) % 16 == 0);
  if (vec_scales) {
    // item e = (group, tile i) -> [group][i][8 rows]
    for (int e = threadIdx.x; e < n_groups * NT; e += blockDim.x) {
      const int tile = tile0 + e % NT;
      const int64_t si = (int64_t)(grp0 + e / NT) * d.N + (int64_t)tile * TILE_N;
      if (tile < n_tiles) {
        cp_async16(smem_u32(s_scale + e * TILE_N), scales + si);
        if (!SYM) cp_async16(smem_u32(s_zero + e * TILE_N), zeros + si);
      } else {
        *reinterpret_cast<uint4*>(s_scale + e * TILE_N) = make_uint4(0u, 0u, 0u, 0u);
        if (!SYM) *reinterpret_cast<uint4*>(s_zero + e * TILE_N) = make_uint4(0u, 0u, 0u, 0u);
      }
    }
  }
  cp_async_commit();
#pragma unroll
  for (int s = 0; s < DEPTH - 1; ++s) {
    if (wb + s < full_end) {
#pragma unroll
      for (int i = 0; i < NT; ++i) {
        cp_async16(ring_s + (s * NT + i) * STAGE_TILE_BYTES, ip[i]);
        ip[i] += CHUNK_K;
      }
    }
    cp_async_commit();
  }
  // The rest through registers, each thread's loads batched before its stores: f32 activations
  // (rounded to the MMA type) and scales of other N.
  if (XS && !X_ASYNC) {
    for (int r = 0; r < rows_here; ++r) {
      const T* xr = x + (int64_t)(m0 + r) * d.K + k_base;
      Op* sr = s_x + r * x_stride;
      stage_batched<4, uint4>(
          runs, [&](int e) { return load_x8(xr + e * LANE_K); },
          [&](int e, const uint4& v) { *reinterpret_cast<uint4*>(sr + e * LANE_K) = v; });
    }
  }
  if (!vec_scales) {
    // item e = (group, tile i, row r) -> [group][i][r]: column tile0 * 8 + e % (NT * 8)
    stage_batched<8, __half2>(
        n_groups * NT * TILE_N,
        [&](int e) {
          const int n = tile0 * TILE_N + e % (NT * TILE_N);
          const int64_t si = (int64_t)(grp0 + e / (NT * TILE_N)) * d.N + n;
          const __half zero = __float2half(0.0f);
          return __halves2half2(n < d.N ? scales[si] : zero, !SYM && n < d.N ? zeros[si] : zero);
        },
        [&](int e, const __half2& v) {
          s_scale[e] = __low2half(v);
          if (!SYM) s_zero[e] = __high2half(v);
        });
  }
  cp_async_wait<DEPTH - 1>();  // this thread's activation / scale copies (the oldest group)
  __syncthreads();

  W wt;
  const int g = lane / 4, t = lane % 4;
  wt.g = g;
  // B-fragment columns past m_here read the last row instead (no predicate, no zeroing): MMA output
  // columns are independent, and theirs are never stored
  const int r0 = min(g, m_here - 1), r1 = min(g + 8, m_here - 1);
  const int kw = wb * CHUNK_K + LANE_K * t;  // this lane's first k (the tail's, if no full chunk)
  wt.xs0 = s_x + r0 * x_stride + kw - k_base;
  wt.xs1 = s_x + r1 * x_stride + kw - k_base;
  wt.xg0 = x + (int64_t)(m0 + r0) * d.K + kw;
  wt.xg1 = x + (int64_t)(m0 + r1) * d.K + kw;
  wt.s_scale = s_scale;
  wt.s_zero = s_zero;
  wt.grp0 = grp0;

  switch (spg) {
    case 1: stream_chunks<1, W, NT, DEPTH>(wt, ip, lane_ring, wb, we, full_end, d.K, tail); break;
    case 2: stream_chunks<2, W, NT, DEPTH>(wt, ip, lane_ring, wb, we, full_end, d.K, tail); break;
    default: stream_chunks<4, W, NT, DEPTH>(wt, ip, lane_ring, wb, we, full_end, d.K, tail); break;
  }

  // Epilogue: the warps' sums [warp][Q][lane] -> shared memory, added in warp order.
  constexpr int Q = NP * TG * 4;
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with its ring
  float* red = reinterpret_cast<float*>(smem);
  static_assert(Q * sizeof(float) <= DEPTH * NT * sizeof(LaneChunk), "partial sums fit the ring");
#pragma unroll
  for (int e = 0; e < Q; ++e) red[(warp * Q + e) * tg::WARP_SIZE + lane] = wt.acc[e / (4 * TG)][(e / 4) % TG][e % 4];
  __syncthreads();
  for (int e = threadIdx.x; e < Q * tg::WARP_SIZE; e += blockDim.x) {
    const int q = e / tg::WARP_SIZE, l = e % tg::WARP_SIZE, p = q / (4 * TG), h = (q / 4) % TG, r = q % 4;
    const int m = 8 * h + 2 * (l % 4) + r % 2, col = (tile0 + 2 * p + r / 2) * TILE_N + l / 4;
    if (m >= m_here || col >= d.N) continue;
    float sum = 0.0f;
    for (int w = 0; w < n_warps; ++w) sum += red[w * Q * tg::WARP_SIZE + e];
    const int64_t o = (int64_t)(m0 + m) * d.N + col;
    if (gridDim.y == 1) {
      y[o] = tg::from_float<T>(bias_act(sum, bias, col, act));
    } else {
      partial[(int64_t)blockIdx.y * d.M * d.N + o] = sum;
    }
  }
}

// y[m, n] = ACT(sum over splits of partial[s, m, n], in split order, + bias[n]); mn = M * N. The
// activation is a template parameter (one entry per activation): a run-time switch per element
// measured ~0.5-0.9 µs more at M=64 (H100, harness, round 4).
template <typename T, tg::Act ACT = tg::Act::Identity>
__device__ void int4_reduce(const float* __restrict__ partial, T* __restrict__ y, int64_t mn, int splits,
                            const T* __restrict__ bias = nullptr, int n = 1) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < mn; i += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int p = 0; p < splits; ++p) s += partial[p * mn + i];
    if (bias != nullptr) s += tg::to_float<T>(bias[i % n]);
    y[i] = tg::from_float<T>(tg::activate<ACT>(s));
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

// Entry points: int4_gemm_<dtype>_<variant>_<sym|asym> (PDL-ready: `tg::pdl_enter` first, see
// src/cuda.rs `launch_ex`), int4_reduce_<dtype>_<act>, int4_dequant_<dtype>.
// Variant n<NT>m<8|16>: NT tiles per block (A fragments reused NT times), 8 or 16 activation rows
// per 16-row block, x read from global memory per word (XS = true, x staged in shared memory per
// block, is harness-only since round 4: 8 KB of x per block's 32 KB of weight, slower once the
// weight sits in L2). Ring depth 4 for all: 8 (and 16 in round 1) measured slower (H100, harness).
// Mirrors `GemmVariant` in src/quant/launch.rs.
constexpr int GEMM_MAX_THREADS = 256;  // 8 warps
#define INT4_GEMM_ENTRY(T, TNAME, NT, ROWS16, DEPTH, XS, VNAME, SYM, SNAME)                                    \
  extern "C" __global__ void __launch_bounds__(GEMM_MAX_THREADS, 1)                                             \
      int4_gemm_##TNAME##_##VNAME##_##SNAME(const T* x, const uint32_t* packed, const __half* scales,          \
                                            const __half* zeros, T* y, float* partial, GemmDims d,            \
                                            const T* bias, int act) {                                          \
    tg::pdl_enter();                                                                                           \
    int4_gemm_small_m<T, NT, ROWS16, SYM, DEPTH, XS>(x, packed, scales, zeros, y, partial, d, bias, act);      \
  }
#define INT4_GEMM_VARIANT(T, TNAME, NT, ROWS16, DEPTH, XS, VNAME)                                              \
  INT4_GEMM_ENTRY(T, TNAME, NT, ROWS16, DEPTH, XS, VNAME, true, sym)                                           \
  INT4_GEMM_ENTRY(T, TNAME, NT, ROWS16, DEPTH, XS, VNAME, false, asym)
// int4_reduce_<dtype>_<act>: `Activation::name()` in src/activation.rs.
#define INT4_REDUCE_ENTRY(T, TNAME, ACT, ANAME)                                                                \
  extern "C" __global__ void int4_reduce_##TNAME##_##ANAME(const float* partial, T* y, int64_t mn, int splits, \
                                                           const T* bias, int n) {                             \
    int4_reduce<T, tg::Act::ACT>(partial, y, mn, splits, bias, n);                                             \
  }
#define INT4_ENTRIES(T, TNAME)                                                                                 \
  INT4_GEMM_VARIANT(T, TNAME, 2, false, 2, false, n2m8)                                                        \
  INT4_GEMM_VARIANT(T, TNAME, 4, true, 2, false, n4m16)                                                        \
  INT4_REDUCE_ENTRY(T, TNAME, Gelu, gelu)                                                                      \
  INT4_REDUCE_ENTRY(T, TNAME, GeluTanh, gelu_tanh)                                                             \
  INT4_REDUCE_ENTRY(T, TNAME, Relu, relu)                                                                      \
  INT4_REDUCE_ENTRY(T, TNAME, Silu, silu)                                                                      \
  INT4_REDUCE_ENTRY(T, TNAME, Identity, identity)                                                              \
  extern "C" __global__ void int4_dequant_##TNAME(const uint32_t* packed, const __half* scales,               \
                                                  const __half* zeros, T* out, GemmDims d) {                   \
    int4_dequant<T>(packed, scales, zeros, out, d);                                                            \
  }

INT4_ENTRIES(float, f32)
INT4_ENTRIES(__half, f16)
INT4_ENTRIES(__nv_bfloat16, bf16)
