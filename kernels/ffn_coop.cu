// The whole small-M FFN in one cooperative launch over the whole GPU:
//   y[M, O] = act(x[M, D] · W1ᵀ + b1) · W2ᵀ + b2   (plain FFN; weights in candle `Linear` layout)
//
//   x   [M, D]   row-major tokens, M <= 8 * NT
//   W1  [H, D]   [out, in]
//   b1  [H]      or null
//   W2  [O, H]   [out, in]
//   b2  [O]      or null
//   y   [M, O]
//   hidden   [M, H] of T: the hidden activations, written in phase 1, read in phase 2
//   partial  [ceil(O / 16) * splits][M][16] f32; tickets [ceil(O / 16)] u32, zero between launches
//
// The grid is co-resident (cooperative launch: a few blocks per SM, all SMs), unlike the 64-unit
// chunk per block of kernels/ffn_fused.cu (32 blocks at H = 2048):
//   phase 1: 16-row groups of W1 round-robin over the blocks, the block's warps splitting D (the
//            weight-streaming mma step of ffn.cuh); partial sums meet in shared memory, bias +
//            activation in f32, one rounding to T, stored to `hidden`;
//   grid barrier (cooperative_groups grid sync: every hidden value is visible after it);
//   phase 2: units (16-row group of W2, one of `splits` K ranges of H), round-robin over the
//            blocks, warps splitting the K range; each warp's first W2 loads are issued at kernel
//            start, so their latency hides behind phase 1 and the barrier. A unit's block sum goes
//            to `partial`; the block that takes a group's last ticket (atomicAdd after
//            __threadfence) sums the group's `splits` partials in split order (deterministic),
//            adds b2, stores y and resets the ticket. splits == 1: y is stored directly.
// Needs D % 8 == 0, H % 8 == 0, 16-byte aligned x / W1 / W2 (the host checks): every weight and
// token load is one 16-byte load, and a 32-wide chunk's lanes are each all in range or all out.
#include <cooperative_groups.h>

#include "ffn.cuh"

namespace ffn {

// Mirrors `CoopParams` in src/ffn/cuda.rs.
struct CoopParams {
  const void* x;      // [M, D]
  const void* w1;     // [H, D]
  const void* b1;     // [H] or null
  const void* w2;     // [O, H]
  const void* b2;     // [O] or null
  void* y;            // [M, O]
  void* hidden;       // [M, H] of T
  float* partial;     // [groups2 * splits][M][16]
  unsigned* tickets;  // [groups2]
  int m, d, h, o;
  int splits;       // phase 2: K ranges per 16-row output group (>= 1)
  int k_per_split;  // phase 2: multiple of CHUNK_K, splits * k_per_split >= H
};

constexpr int COOP_WARPS = 8;                      // mirrors COOP_WARPS in src/ffn/cuda.rs
constexpr int COOP_THREADS = COOP_WARPS * tg::WARP_SIZE;
constexpr int COOP_MIN_BLOCKS = 2;                 // per SM, for __launch_bounds__ (<= 128 registers)
constexpr int COOP_PRE = 4;                        // phase 2: chunks per warp per W2 load batch (mirrored in Rust)
constexpr int COOP_STRIDE = ROWS + 4;              // +4: the lanes' accumulator stores hit distinct banks

// acc ([row g / g + 8] x [tokens 2t, 2t + 1] of each token tile) into red[warp], then (after a
// __syncthreads) the caller sums the warps.
template <int NT>
__device__ __forceinline__ void stash(float (&red)[COOP_WARPS][TOKENS * NT][COOP_STRIDE], const float (&acc)[NT][4],
                                      int warp, int g, int t) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int tok = nt * TOKENS + 2 * t;
    red[warp][tok][g] = acc[nt][0];
    red[warp][tok + 1][g] = acc[nt][1];
    red[warp][tok][g + 8] = acc[nt][2];
    red[warp][tok + 1][g + 8] = acc[nt][3];
  }
}

// PRE: phase 2's 32-wide chunks per warp per W2 load batch; U1 / P1: phase 1's chunks per step and
// software pipelining (`stream_k`'s UNROLL / PIPE).
template <typename T, tg::Act A, int NT, int PRE = COOP_PRE, int U1 = unroll<false, NT>(), bool P1 = false>
__device__ void ffn_coop(const CoopParams& p) {
  constexpr int TOK = TOKENS * NT;
  __shared__ float red[COOP_WARPS][TOK][COOP_STRIDE];
  __shared__ int last;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w1 = static_cast<const T*>(p.w1);
  const T* __restrict__ b1 = static_cast<const T*>(p.b1);
  const T* __restrict__ w2 = static_cast<const T*>(p.w2);
  const T* __restrict__ b2 = static_cast<const T*>(p.b2);
  T* __restrict__ y = static_cast<T*>(p.y);
  T* hid = static_cast<T*>(p.hidden);

  const int warp = threadIdx.x / tg::WARP_SIZE, lane = threadIdx.x % tg::WARP_SIZE;
  const int g = lane / 4, t = lane % 4;
  const int groups1 = tg::ceil_div(p.h, ROWS), groups2 = tg::ceil_div(p.o, ROWS);
  const int units = groups2 * p.splits;
  // phase 2: k per warp within a split (whole chunks)
  const int kpw2 = tg::ceil_div(tg::ceil_div(p.k_per_split, CHUNK_K), COOP_WARPS) * CHUNK_K;

  // Phase 2 geometry of unit u for this lane: W2 rows and the warp's k range.
  int unit = blockIdx.x;
  const T* row0 = w2;
  const T* row1 = w2;
  int kw0 = 0, kw1 = 0;
  auto locate = [&](int u) {
    const int rg = u / p.splits, s = u % p.splits;
    row0 = w2 + (int64_t)min(rg * ROWS + g, p.o - 1) * p.h;
    row1 = w2 + (int64_t)min(rg * ROWS + g + 8, p.o - 1) * p.h;
    const int ks1 = min(p.h, (s + 1) * p.k_per_split);
    kw0 = s * p.k_per_split + warp * kpw2;
    kw1 = min(ks1, kw0 + kpw2);
  };
  uint4 wa[PRE], wb[PRE];
  auto load_w2 = [&](int kb) {
#pragma unroll
    for (int c = 0; c < PRE; ++c) {
      const int k = kb + c * CHUNK_K + t * VEC;
      wa[c] = load8<T, true, true>(row0, k, kw1);
      wb[c] = load8<T, true, true>(row1, k, kw1);
    }
  };
  // Prologue: this warp's first W2 batch goes out now; its latency hides behind phase 1.
  bool have = false;
  if (unit < units) {
    locate(unit);
    if (kw0 < kw1) {
      load_w2(kw0);
      have = true;
    }
  }

  // Phase 1: hidden rows [16 rg, +16), the warps splitting D. Rows past H and tokens past M are
  // clamped to valid ones; their values are never stored.
  {
    const int kpw1 = tg::ceil_div(tg::ceil_div(p.d, CHUNK_K), COOP_WARPS) * CHUNK_K;
    const int k0 = warp * kpw1, k1 = min(p.d, k0 + kpw1);
    const T* x_rows[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) x_rows[nt] = x + (int64_t)min(nt * TOKENS + g, p.m - 1) * p.d;
    for (int rg = blockIdx.x; rg < groups1; rg += gridDim.x) {  // block-uniform
      const T* w_rows[2] = {w1 + (int64_t)min(rg * ROWS + g, p.h - 1) * p.d,
                            w1 + (int64_t)min(rg * ROWS + g + 8, p.h - 1) * p.d};
      float acc[1][NT][4] = {};
      stream_k<T, false, NT, true, U1, P1>(acc, w_rows, x_rows, k0, k1);
      stash<NT>(red, acc[0], warp, g, t);
      __syncthreads();
      for (int i = threadIdx.x; i < ROWS * TOK; i += COOP_THREADS) {
        const int row = i % ROWS, tok = i / ROWS, n = rg * ROWS + row;
        if (n >= p.h || tok >= p.m) continue;
        float a = 0.0f;
#pragma unroll
        for (int w = 0; w < COOP_WARPS; ++w) a += red[w][tok][row];
        if (b1 != nullptr) a += tg::to_float(b1[n]);
        hid[(int64_t)tok * p.h + n] = tg::from_float<T>(tg::activate<A>(a));
      }
      __syncthreads();  // red is reused
    }
  }

  cooperative_groups::this_grid().sync();

  // Phase 2: y partials of unit (group rg, split s); the hidden tile as the mma's B operand, read
  // through L2 (written by other blocks in this launch: no non-coherent loads).
  for (; unit < units; unit += gridDim.x) {  // block-uniform
    const int rg = unit / p.splits;
    locate(unit);
    float acc[NT][4] = {};
    for (int kb = kw0; kb < kw1; kb += PRE * CHUNK_K) {  // warp-uniform
      if (!have) load_w2(kb);
      have = false;
      uint4 hb[NT][PRE];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const T* hrow = hid + (int64_t)min(nt * TOKENS + g, p.m - 1) * p.h;
#pragma unroll
        for (int c = 0; c < PRE; ++c) {
          const int k = kb + c * CHUNK_K + t * VEC;
          hb[nt][c] = k < kw1 ? __ldcg(reinterpret_cast<const uint4*>(hrow + k)) : make_uint4(0, 0, 0, 0);
        }
      }
#pragma unroll
      for (int c = 0; c < PRE; ++c) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mma_chunk<T>(acc[nt], wa[c], wb[c], hb[nt][c]);
      }
    }
    have = false;
    stash<NT>(red, acc, warp, g, t);
    __syncthreads();
    float* part = p.partial + (int64_t)unit * p.m * ROWS;  // [M][16] of this unit
    for (int i = threadIdx.x; i < ROWS * p.m; i += COOP_THREADS) {
      const int row = i % ROWS, tok = i / ROWS, n = rg * ROWS + row;
      float a = 0.0f;
#pragma unroll
      for (int w = 0; w < COOP_WARPS; ++w) a += red[w][tok][row];
      if (p.splits == 1) {
        if (n < p.o) y[(int64_t)tok * p.o + n] = tg::from_float<T>(a + (b2 != nullptr ? tg::to_float(b2[n]) : 0.0f));
      } else {
        part[i] = a;
      }
    }
    if (p.splits > 1) {
      __threadfence();  // this block's partial is visible before its ticket
      __syncthreads();
      if (threadIdx.x == 0) last = atomicAdd(&p.tickets[rg], 1u) == (unsigned)p.splits - 1;
      __syncthreads();
      if (last) {  // block-uniform: every split of group rg has published its partial
        __threadfence();
        const float* base = p.partial + (int64_t)rg * p.splits * p.m * ROWS;
        for (int i = threadIdx.x; i < ROWS * p.m; i += COOP_THREADS) {
          const int row = i % ROWS, tok = i / ROWS, n = rg * ROWS + row;
          float a = 0.0f;
          for (int sp = 0; sp < p.splits; ++sp) a += __ldcg(base + (int64_t)sp * p.m * ROWS + i);
          if (n < p.o) y[(int64_t)tok * p.o + n] = tg::from_float<T>(a + (b2 != nullptr ? tg::to_float(b2[n]) : 0.0f));
        }
        if (threadIdx.x == 0) p.tickets[rg] = 0;  // every split has arrived: ready for the next launch
      }
    }
    __syncthreads();  // red and `last` are reused
  }
}

}  // namespace ffn

#ifndef FFN_NO_ENTRIES  // scripts/ffn_kernel_timing.cu includes the device code without the entry points
// Entry points: ffn_coop_<dtype>_<act>_nt<NT> (up to 8 * NT tokens); launch cooperatively.
#define FFN_COOP_ENTRY(T, TNAME, A, ANAME, NT)                                                   \
  extern "C" __global__ void __launch_bounds__(ffn::COOP_THREADS, ffn::COOP_MIN_BLOCKS)          \
      ffn_coop_##TNAME##_##ANAME##_nt##NT(const ffn::CoopParams p) {                              \
    ffn::ffn_coop<T, tg::Act::A, NT>(p);                                                          \
  }
#define FFN_COOP_TILES(T, TNAME, A, ANAME) \
  FFN_COOP_ENTRY(T, TNAME, A, ANAME, 1)    \
  FFN_COOP_ENTRY(T, TNAME, A, ANAME, 2)
#define FFN_COOP_ALL_ACTS(T, TNAME)             \
  FFN_COOP_TILES(T, TNAME, Gelu, gelu)          \
  FFN_COOP_TILES(T, TNAME, GeluTanh, gelu_tanh) \
  FFN_COOP_TILES(T, TNAME, Relu, relu)          \
  FFN_COOP_TILES(T, TNAME, Silu, silu)          \
  FFN_COOP_TILES(T, TNAME, Identity, identity)

FFN_COOP_ALL_ACTS(__half, f16)
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
FFN_COOP_ALL_ACTS(__nv_bfloat16, bf16)
#endif
#endif  // FFN_NO_ENTRIES
