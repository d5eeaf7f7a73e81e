// The whole small-M FFN in one launch: y[M, O] = act(x[M, D] · W1ᵀ + b1) · W2ᵀ + b2.
//
//   x   [M, D]   row-major tokens, M <= 8 * NT
//   W1  [H1, D]  candle `Linear` layout [out, in]; H1 = H, or 2H when GATED (gate rows, then up rows)
//   b1  [H1]     or null
//   W2  [O, H]   [out, in]
//   b2  [O]      or null
//   y   [M, O]
//   partial [ceil(O / 16)][blocks][M][16] f32 scratch; tickets [ceil(O / 16)] u32, zero between launches
//
// Block b owns the hidden chunk [64b, 64b + 64):
//   1. hidden tile: h[M, 64] = act(x · W1[chunk]ᵀ + b1) (GATED: act(gate) * up), the 16 warps as 4
//      row groups of 16 x 4 quarters of D (ffn.cuh's weight-streaming mma step); summed in shared
//      memory, biased, activated and rounded once to T (as stock candle rounds its hidden tensor);
//   2. its share of the output: partial[:, b] = h · W2[:, chunk]ᵀ for every 16-row group of O (each
//      warp takes every 16th group), written to `partial` in f32;
//   3. per 16-row group a ticket: the warp that arrives last (atomicAdd after __threadfence) sums
//      the blocks' partials in block order (deterministic), adds b2, stores y, and resets the ticket.
// Both weights are read once per launch; each warp issues its first W2 loads before step 1, so
// their latency overlaps it. Needs D % 8 == 0, H % 8 == 0 and 16-byte aligned bases (the host
// checks), so every weight load is one 16-byte load and a 32-wide chunk is all in range or all out.
#include "ffn.cuh"

namespace ffn {

// Mirrors `FusedParams` in src/ffn/cuda.rs.
struct FusedParams {
  const void* x;      // [M, D]
  const void* w1;     // [H1, D]
  const void* b1;     // [H1] or null
  const void* w2;     // [O, H]
  const void* b2;     // [O] or null
  void* y;            // [M, O]
  float* partial;     // [ceil(O / 16)][gridDim.x][M][16]
  unsigned* tickets;  // [ceil(O / 16)]
  int m, d, h, o;
};

template <bool GATED, int NT> struct FusedTraits {
  static constexpr int HIDDEN_CHUNK = 64;  // mirrors HIDDEN_CHUNK in src/ffn/cuda.rs
  // 16 warps: step 1 splits D in 4 (one round of loads for D = 512), step 2 has 2 row groups
  // per warp for O = 512 (one batch, loaded before step 1).
  static constexpr int WARPS = 16;         // mirrors FUSED_WARPS in src/ffn/cuda.rs
  static constexpr int THREADS = WARPS * tg::WARP_SIZE;
  static constexpr int ROW_GROUPS = HIDDEN_CHUNK / ROWS;  // step 1: 16-row groups of the chunk
  static constexpr int K_SPLIT = WARPS / ROW_GROUPS;      // step 1: warps per row group, splitting D
  static constexpr int TOK = TOKENS * NT;
  static constexpr int PARTS = GATED ? 2 : 1;
  // [K_SPLIT][TOK][RED_STRIDE] f32: +4 puts the 32 lanes' accumulator stores in distinct banks.
  static constexpr int RED_STRIDE = PARTS * HIDDEN_CHUNK + 4;
  // [TOK][HID_STRIDE] of T: 96 elements = 48 words, so the 8 lanes of a 16-byte load phase
  // (2 tokens x 4 k slices) cover the 32 banks once.
  static constexpr int HID_STRIDE = HIDDEN_CHUNK + 32;
  static constexpr int CHUNKS = HIDDEN_CHUNK / CHUNK_K;  // step 2: k chunks per W2 row segment
  static constexpr int GROUPS_IN_FLIGHT = 2;              // step 2: row groups loaded per iteration
  static_assert(HIDDEN_CHUNK % ROWS == 0 && WARPS % ROW_GROUPS == 0, "warps tile the hidden chunk");
  static_assert(HIDDEN_CHUNK % CHUNK_K == 0, "whole k chunks per W2 row segment");
};

// Step 3 for the 16-row group `rg` of O: partials of every block, summed in block order. A lane
// sums float4s of one block-partial row; where a group has fewer float4s than lanes (M < 8), `subs`
// lanes share each float4, summing blocks sub, sub + subs, ... and combining by a fixed shuffle
// tree, so the order, and the result, never depend on timing.
template <typename T>
__device__ __forceinline__ void reduce_row_group(const FusedParams& p, int rg) {
  constexpr int VEC4 = 4;
  const int lane = threadIdx.x % tg::WARP_SIZE;
  const int elems = p.m * ROWS, vecs = elems / VEC4, blocks = gridDim.x;
  int subs = 1;
  while (2 * subs * vecs <= tg::WARP_SIZE) subs *= 2;
  const int sub = lane % subs, per_pass = tg::WARP_SIZE / subs;
  const float* base = p.partial + (int64_t)rg * blocks * elems;
  const T* __restrict__ b2 = static_cast<const T*>(p.b2);
  T* __restrict__ y = static_cast<T*>(p.y);
  for (int v0 = 0; v0 < vecs; v0 += per_pass) {  // warp-uniform: the shuffles below need every lane
    const int v = v0 + lane / subs;
    float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (v < vecs) {
#pragma unroll 8
      for (int b = sub; b < blocks; b += subs) {
        const float4 q = __ldcg(reinterpret_cast<const float4*>(base + (int64_t)b * elems) + v);
        s.x += q.x;
        s.y += q.y;
        s.z += q.z;
        s.w += q.w;
      }
    }
    for (int off = 1; off < subs; off <<= 1) {
      s.x += __shfl_xor_sync(0xffffffffu, s.x, off);
      s.y += __shfl_xor_sync(0xffffffffu, s.y, off);
      s.z += __shfl_xor_sync(0xffffffffu, s.z, off);
      s.w += __shfl_xor_sync(0xffffffffu, s.w, off);
    }
    if (v < vecs && sub == 0) {
      const float sum[VEC4] = {s.x, s.y, s.z, s.w};
#pragma unroll
      for (int q = 0; q < VEC4; ++q) {
        const int e = v * VEC4 + q, tok = e / ROWS, o = rg * ROWS + e % ROWS;
        if (o < p.o) y[(int64_t)tok * p.o + o] = tg::from_float<T>(sum[q] + (b2 != nullptr ? tg::to_float(b2[o]) : 0.0f));
      }
    }
  }
}

// Step 2 loads: W2 rows of the row groups rg[u] (rows g and g + 8), columns [h0, h0 + 64) in this
// lane's k slices; zero past H.
template <typename T, int G, int CHUNKS>
__device__ __forceinline__ void load_w2(uint4 (&wv)[G][CHUNKS][2], const int (&rg)[G], const T* __restrict__ w2,
                                        const FusedParams& p, int h0) {
  const int g = (threadIdx.x % tg::WARP_SIZE) / 4, t = threadIdx.x % 4;
#pragma unroll
  for (int u = 0; u < G; ++u) {
    const T* row0 = w2 + (int64_t)min(rg[u] * ROWS + g, p.o - 1) * p.h;
    const T* row1 = w2 + (int64_t)min(rg[u] * ROWS + g + 8, p.o - 1) * p.h;
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c) {
      const int k = h0 + c * CHUNK_K + t * VEC;
      wv[u][c][0] = load8<T, true, true>(row0, k, p.h);
      wv[u][c][1] = load8<T, true, true>(row1, k, p.h);
    }
  }
}

template <typename T, tg::Act A, bool GATED, int NT>
__device__ void ffn_fused(const FusedParams& p) {
  using C = FusedTraits<GATED, NT>;
  constexpr int HC = C::HIDDEN_CHUNK;
  __shared__ float red[C::K_SPLIT][C::TOK][C::RED_STRIDE];
  __shared__ __align__(16) T hid[C::TOK][C::HID_STRIDE];
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w1 = static_cast<const T*>(p.w1);
  const T* __restrict__ b1 = static_cast<const T*>(p.b1);
  const T* __restrict__ w2 = static_cast<const T*>(p.w2);

  const int warp = threadIdx.x / tg::WARP_SIZE, lane = threadIdx.x % tg::WARP_SIZE;
  const int g = lane / 4, t = lane % 4;
  const int h0 = blockIdx.x * HC;

  // Prologue: the W2 loads of this warp's first batch of row groups go out now, so their latency
  // hides behind step 1. Blocks walk their groups from different starting points, so the last
  // arrival (and the reduction) of different groups falls to different blocks.
  constexpr int G = C::GROUPS_IN_FLIGHT;
  const int groups = tg::ceil_div(p.o, ROWS);
  const int mine = warp < groups ? tg::ceil_div(groups - warp, C::WARPS) : 0;
  auto group_at = [&](int i) { return warp + C::WARPS * ((i + blockIdx.x) % max(mine, 1)); };
  int rg[G];
  uint4 wv[G][C::CHUNKS][2];
#pragma unroll
  for (int u = 0; u < G; ++u) rg[u] = group_at(u);
  load_w2<T, G, C::CHUNKS>(wv, rg, w2, p, h0);

  // Step 1: hidden rows [h0 + 16 hg, +16) over D range ks of this warp. Rows past H and tokens
  // past M are clamped to valid ones; their values are zeroed or never stored.
  {
    const int hg = warp % C::ROW_GROUPS, ks = warp / C::ROW_GROUPS;
    const int r0 = min(h0 + hg * ROWS + g, p.h - 1), r1 = min(h0 + hg * ROWS + g + 8, p.h - 1);
    const T* w_rows[GATED ? 4 : 2];
    w_rows[0] = w1 + (int64_t)r0 * p.d;
    w_rows[1] = w1 + (int64_t)r1 * p.d;
    if constexpr (GATED) {
      w_rows[2] = w1 + (int64_t)(p.h + r0) * p.d;
      w_rows[3] = w1 + (int64_t)(p.h + r1) * p.d;
    }
    const T* x_rows[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) x_rows[nt] = x + (int64_t)min(nt * TOKENS + g, p.m - 1) * p.d;
    const int k_per_split = tg::ceil_div(tg::ceil_div(p.d, C::K_SPLIT), CHUNK_K) * CHUNK_K;
    const int k_begin = ks * k_per_split, k_end = min(p.d, k_begin + k_per_split);
    float acc[C::PARTS][NT][4] = {};
    stream_k<T, GATED, NT, true>(acc, w_rows, x_rows, k_begin, k_end);
    // c0/c1 = (row g, tokens 2t, 2t+1), c2/c3 = (row g + 8, same tokens)
#pragma unroll
    for (int part = 0; part < C::PARTS; ++part) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int tok = nt * TOKENS + 2 * t, row = part * HC + hg * ROWS + g;
        red[ks][tok][row] = acc[part][nt][0];
        red[ks][tok + 1][row] = acc[part][nt][1];
        red[ks][tok][row + 8] = acc[part][nt][2];
        red[ks][tok + 1][row + 8] = acc[part][nt][3];
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < C::TOK * HC; i += C::THREADS) {
    const int tok = i / HC, j = i % HC, hj = h0 + j;
    float v = 0.0f;  // hidden units past H: zero, so W2's zero-filled tail adds nothing
    if (hj < p.h) {
      float a = 0.0f, b = 0.0f;
#pragma unroll
      for (int ks = 0; ks < C::K_SPLIT; ++ks) {
        a += red[ks][tok][j];
        if constexpr (GATED) b += red[ks][tok][HC + j];
      }
      if (b1 != nullptr) {
        a += tg::to_float(b1[hj]);
        if constexpr (GATED) b += tg::to_float(b1[p.h + hj]);
      }
      v = tg::activate<A>(a);
      if constexpr (GATED) v *= b;
    }
    hid[tok][j] = tg::from_float<T>(v);
  }
  __syncthreads();

  // Step 2: the hidden tile as the mma's B operand (same permuted k order as the W2 loads).
  uint4 hb[NT][C::CHUNKS];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int c = 0; c < C::CHUNKS; ++c)
      hb[nt][c] = *reinterpret_cast<const uint4*>(&hid[nt * TOKENS + g][c * CHUNK_K + t * VEC]);
  }
  for (int i0 = 0; i0 < mine; i0 += G) {
    float acc[G][NT][4] = {};
#pragma unroll
    for (int u = 0; u < G; ++u) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int c = 0; c < C::CHUNKS; ++c) mma_chunk<T>(acc[u][nt], wv[u][c][0], wv[u][c][1], hb[nt][c]);
      }
    }
    int done[G];
#pragma unroll
    for (int u = 0; u < G; ++u) done[u] = rg[u];
    if (i0 + G < mine) {  // the next batch's loads overlap this batch's publishing and reduction
#pragma unroll
      for (int u = 0; u < G; ++u) rg[u] = group_at(i0 + G + u);
      load_w2<T, G, C::CHUNKS>(wv, rg, w2, p, h0);
    }
#pragma unroll
    for (int u = 0; u < G; ++u) {
      if (i0 + u < mine) {  // warp-uniform
        // this block's partial of group done[u]: [M][16]
        float* part = p.partial + ((int64_t)done[u] * gridDim.x + blockIdx.x) * p.m * ROWS;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const int tok = nt * TOKENS + 2 * t;
          if (tok < p.m) {
            part[tok * ROWS + g] = acc[u][nt][0];
            part[tok * ROWS + g + 8] = acc[u][nt][2];
          }
          if (tok + 1 < p.m) {
            part[(tok + 1) * ROWS + g] = acc[u][nt][1];
            part[(tok + 1) * ROWS + g + 8] = acc[u][nt][3];
          }
        }
        // Step 3: publish, take a ticket; the last of the gridDim.x blocks reduces.
        __threadfence();
        __syncwarp();
        unsigned prev = 0;
        if (lane == 0) prev = atomicAdd(&p.tickets[done[u]], 1u);
        prev = __shfl_sync(0xffffffffu, prev, 0);
        if (prev == gridDim.x - 1) {
          __threadfence();
          reduce_row_group<T>(p, done[u]);
          if (lane == 0) p.tickets[done[u]] = 0;  // every block has arrived: ready for the next launch
        }
      }
    }
  }
}

}  // namespace ffn

#ifndef FFN_NO_ENTRIES  // scripts/ffn_kernel_timing.cu includes the device code without the entry points
// Entry points: ffn_fused_<dtype>_<act>_<plain|gated>_nt<NT> (up to 8 * NT tokens).
#define FFN_FUSED_ENTRY(T, TNAME, A, ANAME, GATED, GNAME, NT)                                              \
  extern "C" __global__ void __launch_bounds__(ffn::FusedTraits<GATED, NT>::THREADS)                        \
      ffn_fused_##TNAME##_##ANAME##_##GNAME##_nt##NT(const ffn::FusedParams p) {                            \
    ffn::ffn_fused<T, tg::Act::A, GATED, NT>(p);                                                            \
  }
#define FFN_FUSED_TILES(T, TNAME, A, ANAME)                  \
  FFN_FUSED_ENTRY(T, TNAME, A, ANAME, false, plain, 1)       \
  FFN_FUSED_ENTRY(T, TNAME, A, ANAME, false, plain, 2)       \
  FFN_FUSED_ENTRY(T, TNAME, A, ANAME, true, gated, 1)        \
  FFN_FUSED_ENTRY(T, TNAME, A, ANAME, true, gated, 2)
#define FFN_FUSED_ALL_ACTS(T, TNAME)               \
  FFN_FUSED_TILES(T, TNAME, Gelu, gelu)            \
  FFN_FUSED_TILES(T, TNAME, GeluTanh, gelu_tanh)   \
  FFN_FUSED_TILES(T, TNAME, Relu, relu)            \
  FFN_FUSED_TILES(T, TNAME, Silu, silu)            \
  FFN_FUSED_TILES(T, TNAME, Identity, identity)

FFN_FUSED_ALL_ACTS(__half, f16)
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
FFN_FUSED_ALL_ACTS(__nv_bfloat16, bf16)
#endif
#endif  // FFN_NO_ENTRIES
