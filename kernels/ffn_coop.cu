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
//   partial  [ceil(O / R2) * splits][M][R2] f32; tickets [ceil(O / R2)] u32, zero between launches
//            (R2: output rows per phase-2 unit, 16 or 8 in the entries below)
//
// The grid is co-resident (cooperative launch: a few blocks per SM, all SMs), unlike the 64-unit
// chunk per block of kernels/ffn_fused.cu (32 blocks at H = 2048):
//   phase 1: 16-row groups of W1 round-robin over the blocks, the block's warps splitting D (the
//            weight-streaming mma step of ffn.cuh); partial sums meet in shared memory, bias +
//            activation in f32, one rounding to T, stored to `hidden`;
//   grid barrier (cooperative_groups grid sync: every hidden value is visible after it);
//   phase 2: units (R2-row group of W2, one of `splits` K ranges of H), round-robin over the
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
// ffn_coop's default phase-1 chunks per step, as a constant the entry macros can pass (nvcc does not
// let a __global__ function's template arguments call the host constexpr `unroll`).
template <int NT> struct CoopU1 {
  static constexpr int value = unroll<false, NT>();
};

// Shared-memory row stride of the warps' partial sums for `rows` rows: +4 keeps the lanes'
// accumulator stores (rows g, tokens 2t and 2t + 1) on distinct banks (stride 20 or 36: 8t mod 32).
__host__ __device__ constexpr int coop_stride(int rows) { return (rows > ROWS ? rows : ROWS) + 4; }

// acc ([row g / g + 8] x [tokens 2t, 2t + 1] of each token tile) into red[warp] at rows row0 + (g,
// g + 8) (only g when !BOTH: the mma's rows 8..15 then repeat rows 0..7), then (after a
// __syncthreads) the caller sums the warps.
template <int NT, int RS, bool BOTH = true>
__device__ __forceinline__ void stash(float (&red)[COOP_WARPS][TOKENS * NT][RS], const float (&acc)[NT][4], int warp,
                                      int g, int t, int row0 = 0) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int tok = nt * TOKENS + 2 * t;
    red[warp][tok][row0 + g] = acc[nt][0];
    red[warp][tok + 1][row0 + g] = acc[nt][1];
    if constexpr (BOTH) {
      red[warp][tok][row0 + g + 8] = acc[nt][2];
      red[warp][tok + 1][row0 + g + 8] = acc[nt][3];
    }
  }
}

// The grid barrier of cooperative_groups (sync_grids: block 0 adds 2^31 - (blocks - 1), the others
// 1, with release; every block's master polls with acquire until bit 31 flips, so the word needs no
// reset) with a __nanosleep between polls. The grid must be co-resident (cooperative launch).
template <int SLEEP>
__device__ __forceinline__ void grid_barrier_sleep(unsigned* word) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
    unsigned old, now;
    asm volatile("atom.add.release.gpu.u32 %0, [%1], %2;" : "=r"(old) : "l"(word), "r"(add) : "memory");
    while (true) {
      asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(now) : "l"(word) : "memory");
      if ((old ^ now) & 0x80000000u) break;
      __nanosleep(SLEEP);
    }
  }
  __syncthreads();
}

// Template knobs (defaults: the crate's `_nt*` entries before round 5):
//   R2    phase 2's output rows per unit: 8, 16 or 32 (1, 2 or 4 W2 rows per lane). 8 spreads W2
//         over twice the blocks (the mma's rows 8..15 repeat rows 0..7, no extra bytes); 32 reuses
//         each hidden fragment for two 16-row mmas (half the hidden re-reads).
//   PRE   phase 2's 32-wide chunks per warp per W2 load batch.
//   PAIR1 phase 1 takes row groups rg and rg + gridDim.x together (4 W1 rows per lane sharing
//         each x fragment: `stream_k`'s gated form), so a grid with fewer blocks than row groups
//         streams them in one round instead of two, and x is read half as often.
//   HL1   phase 2 reads the hidden tile with plain (L1-cached) loads instead of L2-only ones: the
//         grid sync's gpu-scope acquire orders them after every block's phase-1 stores, and no
//         block reads `hidden` before the sync, so L1 holds no stale line.
//   SLEEP  0: the grid barrier is cooperative_groups' grid sync; > 0: the same barrier (release add,
//         acquire poll, top-bit flip) on the word before `tickets` (the harness allocates it; the
//         crate's entries use 0) with __nanosleep(SLEEP) between polls, so blocks that arrive early
//         (idle in phase 1) poll L2 less while others still work.
//   PF    W2 prefetch into L2 before the grid barrier (cp.async.bulk.prefetch) of the block's first
//         phase-2 unit, past the prologue's loads: 0 none; -1 only blocks with fewer phase-1 rounds
//         than block 0 (they would idle at the barrier), the whole of their warps' k ranges; 1..8
//         every block, PF / 8 of those ranges. For weights from HBM: keeps HBM busy in the
//         barrier's shadow.
//   U1 / P1  phase 1's chunks per step and software pipelining (`stream_k`'s UNROLL / PIPE).
//   PIPE2 phase 2 double-buffers the W2 batch: batch kb + PRE * CHUNK_K is issued before batch kb's
//         hidden loads and mmas, so a warp always has a W2 batch in flight (twice the W2 registers).
//         Measured (round 7): no gain over PRO = 1 alone; no entry uses it.
//   PRO   the first W2 batch of the block's first unit: 0 loaded into registers at kernel start (held
//         through phase 1), 1 prefetched into L2 at kernel start (cp.async.bulk.prefetch on sm_90,
//         prefetch.global.L2 before: no registers held through phase 1), 2 neither (loaded after the
//         grid barrier). At 128 registers the 32 registers of a held batch make ptxas (CUDA 13.0) issue
//         half of each step's loads only after the step's first mma (it waits for the first half),
//         in phase 1 for two token tiles and in phase 2 too; with PRO = 1 every load of a step goes out
//         before its mmas (benchmarks/ffn.md round 7).
template <typename T, tg::Act A, int NT, int R2 = ROWS, int PRE = COOP_PRE, bool PAIR1 = false, bool HL1 = false,
          int SLEEP = 0, int PF = 0, int U1 = unroll<false, NT>(), bool P1 = false, bool PIPE2 = false, int PRO = 0>
__device__ void ffn_coop(const CoopParams& p) {
  static_assert(R2 == 8 || R2 == 16 || R2 == 32, "phase-2 rows per unit: 8, 16 or 32");
  constexpr int TOK = TOKENS * NT;
  constexpr int LR = R2 / 8;               // W2 rows per lane
  constexpr int NP = LR >= 2 ? LR / 2 : 1;  // 16-row mmas per chunk and token tile
  constexpr int RS = coop_stride(R2 > (PAIR1 ? 2 * ROWS : ROWS) ? R2 : (PAIR1 ? 2 * ROWS : ROWS));
  __shared__ float red[COOP_WARPS][TOK][RS];
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
  const int groups1 = tg::ceil_div(p.h, ROWS), groups2 = tg::ceil_div(p.o, R2);
  const int units = groups2 * p.splits;
  // phase 2: k per warp within a split (whole chunks)
  const int kpw2 = tg::ceil_div(tg::ceil_div(p.k_per_split, CHUNK_K), COOP_WARPS) * CHUNK_K;

  // Phase 2 geometry of unit u for this lane: W2 rows r * 8 + g of the unit and the warp's k range.
  int unit = blockIdx.x;
  const T* rows[LR];
  int kw0 = 0, kw1 = 0;
  auto locate = [&](int u) {
    const int rg = u / p.splits, s = u % p.splits;
#pragma unroll
    for (int r = 0; r < LR; ++r) rows[r] = w2 + (int64_t)min(rg * R2 + r * 8 + g, p.o - 1) * p.h;
    const int ks1 = min(p.h, (s + 1) * p.k_per_split);
    kw0 = s * p.k_per_split + warp * kpw2;
    kw1 = min(ks1, kw0 + kpw2);
  };
  uint4 wv[LR][PRE];
  auto load_w2 = [&](int kb) {
#pragma unroll
    for (int c = 0; c < PRE; ++c) {
      const int k = kb + c * CHUNK_K + t * VEC;
#pragma unroll
      for (int r = 0; r < LR; ++r) wv[r][c] = load8<T, true, true>(rows[r], k, kw1);
    }
  };
  // Prologue: this warp's first W2 batch goes out now; its latency hides behind phase 1.
  bool have = false;
  if (unit < units) {
    locate(unit);
    if (kw0 < kw1) {
      if constexpr (PRO == 0) {
        load_w2(kw0);
        have = true;
      } else if constexpr (PRO == 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        if (t == 0) {  // one bulk prefetch per row: the batch's whole k range
          const int len = min(kw1 - kw0, PRE * CHUNK_K);  // a multiple of VEC (H % 8 == 0): 16-byte sizes
#pragma unroll
          for (int r = 0; r < LR; ++r)
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(rows[r] + kw0), "r"(len * (int)sizeof(T))
                         : "memory");
        }
#else
#pragma unroll
        for (int c = 0; c < PRE; ++c) {  // each lane its own 16 bytes of every chunk
          const int k = kw0 + c * CHUNK_K + t * VEC;
#pragma unroll
          for (int r = 0; r < LR; ++r)
            if (k < kw1) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(rows[r] + k) : "memory");
        }
#endif
      }
    }
  }

  // Phase 1: hidden rows [16 rg, +16) (and [16 rg2, +16) when PAIR1), the warps splitting D. Rows
  // past H and tokens past M are clamped to valid ones; their values are never stored.
  {
    const int kpw1 = tg::ceil_div(tg::ceil_div(p.d, CHUNK_K), COOP_WARPS) * CHUNK_K;
    const int k0 = warp * kpw1, k1 = min(p.d, k0 + kpw1);
    const T* x_rows[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) x_rows[nt] = x + (int64_t)min(nt * TOKENS + g, p.m - 1) * p.d;
    auto w1_row = [&](int rg, int r) { return w1 + (int64_t)min(rg * ROWS + r, p.h - 1) * p.d; };
    for (int rg = blockIdx.x; rg < groups1; rg += (PAIR1 ? 2 : 1) * gridDim.x) {  // block-uniform
      const int rg2 = PAIR1 ? rg + (int)gridDim.x : groups1;
      const bool two = rg2 < groups1;  // block-uniform
      if constexpr (PAIR1) {
        if (two) {
          const T* w_rows[4] = {w1_row(rg, g), w1_row(rg, g + 8), w1_row(rg2, g), w1_row(rg2, g + 8)};
          float acc[2][NT][4] = {};
          stream_k<T, true, NT, true>(acc, w_rows, x_rows, k0, k1);
          stash<NT, RS>(red, acc[0], warp, g, t);
          stash<NT, RS>(red, acc[1], warp, g, t, ROWS);
        }
      }
      if (!two) {
        const T* w_rows[2] = {w1_row(rg, g), w1_row(rg, g + 8)};
        float acc[1][NT][4] = {};
        stream_k<T, false, NT, true, U1, P1>(acc, w_rows, x_rows, k0, k1);
        stash<NT, RS>(red, acc[0], warp, g, t);
      }
      __syncthreads();
      const int nrows = two ? 2 * ROWS : ROWS;
      for (int i = threadIdx.x; i < nrows * TOK; i += COOP_THREADS) {
        const int row = i % nrows, tok = i / nrows;
        const int n = row < ROWS ? rg * ROWS + row : rg2 * ROWS + row - ROWS;
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

  if constexpr (PF != 0) {
    const int step = (PAIR1 ? 2 : 1) * (int)gridDim.x;
    const int mine = (int)blockIdx.x < groups1 ? tg::ceil_div(groups1 - (int)blockIdx.x, step) : 0;
    const bool early = mine < tg::ceil_div(groups1, step);  // block-uniform
    const int kfrom = kw0 + PRE * CHUNK_K;
    if ((PF > 0 || early) && (int)blockIdx.x < units && t == 0 && kfrom < kw1) {
      const int len = PF > 0 ? (kw1 - kfrom) * PF / 8 / VEC * VEC : kw1 - kfrom;
      if (len > 0) {
#pragma unroll
        for (int r = 0; r < LR; ++r)
          asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(rows[r] + kfrom), "r"(len * (int)sizeof(T))
                       : "memory");
      }
    }
  }
  if constexpr (SLEEP > 0) {
    grid_barrier_sleep<SLEEP>(p.tickets - 1);
  } else {
    cooperative_groups::this_grid().sync();
  }

  // Phase 2: y partials of unit (group rg, split s); the hidden tile as the mma's B operand (written
  // by other blocks in this launch: no non-coherent loads).
  for (; unit < units; unit += gridDim.x) {  // block-uniform
    const int rg = unit / p.splits;
    locate(unit);
    float acc[NP][NT][4] = {};
    if constexpr (PIPE2) {
      if (!have && kw0 < kw1) load_w2(kw0);
      have = false;
    }
    for (int kb = kw0; kb < kw1; kb += PRE * CHUNK_K) {  // warp-uniform
      uint4 wn[LR][PRE];
      if constexpr (PIPE2) {
        // the next batch goes out before this batch's hidden loads and mmas (zeros past kw1: no loads)
#pragma unroll
        for (int c = 0; c < PRE; ++c) {
          const int k = kb + (PRE + c) * CHUNK_K + t * VEC;
#pragma unroll
          for (int r = 0; r < LR; ++r) wn[r][c] = load8<T, true, true>(rows[r], k, kw1);
        }
      } else {
        if (!have) load_w2(kb);
        have = false;
      }
      uint4 hb[NT][PRE];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const T* hrow = hid + (int64_t)min(nt * TOKENS + g, p.m - 1) * p.h;
#pragma unroll
        for (int c = 0; c < PRE; ++c) {
          const int k = kb + c * CHUNK_K + t * VEC;
          const uint4* src = reinterpret_cast<const uint4*>(hrow + k);
          hb[nt][c] = k < kw1 ? (HL1 ? *src : __ldcg(src)) : make_uint4(0, 0, 0, 0);
        }
      }
#pragma unroll
      for (int c = 0; c < PRE; ++c) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          if constexpr (LR == 1) {
            mma_chunk<T>(acc[0][nt], wv[0][c], wv[0][c], hb[nt][c]);
          } else {
#pragma unroll
            for (int j = 0; j < NP; ++j) mma_chunk<T>(acc[j][nt], wv[2 * j][c], wv[2 * j + 1][c], hb[nt][c]);
          }
        }
      }
      if constexpr (PIPE2) {
#pragma unroll
        for (int c = 0; c < PRE; ++c) {
#pragma unroll
          for (int r = 0; r < LR; ++r) wv[r][c] = wn[r][c];
        }
      }
    }
    have = false;
#pragma unroll
    for (int j = 0; j < NP; ++j) stash<NT, RS, (LR > 1)>(red, acc[j], warp, g, t, j * ROWS);
    __syncthreads();
    float* part = p.partial + (int64_t)unit * p.m * R2;  // [M][R2] of this unit
    for (int i = threadIdx.x; i < R2 * p.m; i += COOP_THREADS) {
      const int row = i % R2, tok = i / R2, n = rg * R2 + row;
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
        const float* base = p.partial + (int64_t)rg * p.splits * p.m * R2;
        for (int i = threadIdx.x; i < R2 * p.m; i += COOP_THREADS) {
          const int row = i % R2, tok = i / R2, n = rg * R2 + row;
          float a = 0.0f;
          for (int sp = 0; sp < p.splits; ++sp) a += __ldcg(base + (int64_t)sp * p.m * R2 + i);
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
// Entry points (launch cooperatively, PDL-ready: `tg::pdl_enter` first; src/ffn/cuda.rs
// `choose_coop_launch` picks one), up to 8 * NT tokens. H100 kernel times: benchmarks/ffn.md round 5.
//   ffn_coop_<dtype>_<act>_nt<NT>       16 output rows per phase-2 unit, L1-cached hidden loads
//                                        (4096x11008 M = 16: 69.68 vs 71.68 µs with __ldcg)
//   ffn_coop_<dtype>_<act>_nt<NT>_pf    the same with the first W2 batch prefetched into L2 instead of
//                                        held in registers through phase 1 (PRO = 1): weights from
//                                        HBM (4096x11008 M = 16: 68.31 vs 69.65 µs, M = 1: 65.46 vs
//                                        66.67); slower where they are L2-resident (1024x4096 M = 16:
//                                        11.90 vs 11.47)
//   ffn_coop_<dtype>_<act>_nt<NT>_r8    8 rows per unit, 8 chunks per W2 batch: the same W2 loads
//                                        per lane, spread over twice the blocks
//   ffn_coop_<dtype>_<act>_nt<NT>_pr8   8 rows per unit, 12 chunks per W2 batch, phase-1 row-group
//                                        pairs, one block per SM (up to 255 registers): a grid of one
//                                        block per SM covering 1-2 rounds of row groups in one
//                                        (768x3072 M = 1: 7.22 vs 7.98 µs for _r8 on 192 blocks)
#define FFN_COOP_ENTRY(T, TNAME, A, ANAME, NT, SUFFIX, MIN_BLOCKS, ...)                          \
  extern "C" __global__ void __launch_bounds__(ffn::COOP_THREADS, MIN_BLOCKS)                    \
      ffn_coop_##TNAME##_##ANAME##_nt##NT##SUFFIX(const ffn::CoopParams p) {                      \
    tg::pdl_enter();                                                                              \
    ffn::ffn_coop<T, tg::Act::A, NT, __VA_ARGS__>(p);                                             \
  }
// template knobs: R2, PRE, PAIR1, HL1 (, SLEEP, PF, U1, P1, PIPE2, PRO)
#define FFN_COOP_TILE(T, TNAME, A, ANAME, NT)                                                                \
  FFN_COOP_ENTRY(T, TNAME, A, ANAME, NT, , ffn::COOP_MIN_BLOCKS, ffn::ROWS, ffn::COOP_PRE, false, true)       \
  FFN_COOP_ENTRY(T, TNAME, A, ANAME, NT, _pf, ffn::COOP_MIN_BLOCKS, ffn::ROWS, ffn::COOP_PRE, false, true, 0, \
                 0, ffn::CoopU1<NT>::value, false, false, 1)                                                 \
  FFN_COOP_ENTRY(T, TNAME, A, ANAME, NT, _r8, ffn::COOP_MIN_BLOCKS, 8, 8, false, false)              \
  FFN_COOP_ENTRY(T, TNAME, A, ANAME, NT, _pr8, 1, 8, 12, true, false)
#define FFN_COOP_TILES(T, TNAME, A, ANAME) \
  FFN_COOP_TILE(T, TNAME, A, ANAME, 1)     \
  FFN_COOP_TILE(T, TNAME, A, ANAME, 2)
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
