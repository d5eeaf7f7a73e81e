// Round 6 (benchmarks/ffn.md, scripts/ffn_kernel_timing.cu r6): the cooperative FFN of
// kernels/ffn_coop.cu with its weight stream moved to 1-D bulk async copies (`cp.async.bulk`
// global -> shared, completion on an mbarrier: no tensor map) into a deep per-block shared-memory
// ring.
//
//   one block per SM, 8 consumer warps + 1 producer warp (288 threads)
//   producer: walks the block's weight tiles (TR rows x KT columns; each row one bulk copy issued by
//             its own lane), phase 1's W1 tiles then phase 2's W2 tiles, without a pause in between:
//             while the consumers wait at the grid barrier it already fills the ring with W2
//   consumers: warp w takes columns [w KT / 8, +KT / 8) of every tile (KT / 256 chunks of 32), reads
//             the weight fragments from shared memory (same lane layout as ffn.cuh's loads: row g
//             (and g + 8, ...), 16 bytes at 8t), the activation fragments (x in phase 1, hidden in
//             phase 2) from global memory as the crate's kernel does, one tile ahead where known
//   work: phase 1's units are R1-row groups of W1 (whole D), phase 2's (R2-row group, K split) of W2;
//         DYN: blocks take units from a global counter (atomicAdd by the producer; the unit id
//         travels to the consumers in the stage's meta slot), so blocks that finish early take more;
//         else round robin as the crate's kernel. A meta of -1 closes a phase.
//   grid barrier: the consumers' own (release add / acquire poll on `barrier`, top-bit flip: no
//         reset), the producer is not part of it.
// Shared-memory rows are KT * 2 + 64 bytes apart: the 8 lanes of a 16-byte-load phase (g = 2q, 2q + 1,
// t = 0..3) then hit distinct banks.
#pragma once
// Include after kernels/ffn_coop.cu (FFN_NO_ENTRIES defined to leave out its entry points).
#include <cooperative_groups.h>

namespace ffnb {
using namespace ffn;

struct BulkParams {
  CoopParams c;
  unsigned* barrier;  // grid barrier word (any value; the top bit flips once per launch)
  unsigned* queue;    // [2] phase-1 / phase-2 unit counters, zero between launches (DYN resets them)
};

constexpr int CONSUMERS = 8;
constexpr int BULK_THREADS = (CONSUMERS + 1) * 32;
constexpr int SPIN_LIMIT = 1 << 28;  // a wait that long (seconds) is a bug: trap instead of hanging

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  int spins = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    if (++spins > SPIN_LIMIT) __trap();
  } while (!done);
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
template <bool EF>
__device__ __forceinline__ void bulk_g2s(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar, uint64_t pol) {
  if constexpr (EF) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;\n" ::"r"(
            dst),
        "l"(src), "r"(bytes), "r"(bar), "l"(pol)
        : "memory");
  } else {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
                 "l"(src), "r"(bytes), "r"(bar)
                 : "memory");
  }
}
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, %0;\n" ::"n"(CONSUMERS * 32) : "memory"); }
__device__ __forceinline__ uint4 lds128(uint32_t a) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a));
  return v;
}

template <int KT, int TR> struct BulkGeom {
  static constexpr int ROWB = KT * 2 + 64;            // bytes between shared rows
  static constexpr int STAGE = TR * ROWB;             // bytes per stage
  static constexpr int CPW = KT / CHUNK_K / CONSUMERS;  // chunks per consumer warp per tile
  static_assert(KT % (CHUNK_K * CONSUMERS) == 0, "KT: whole chunks per warp");
  static_assert((KT * 2) % 128 == 0, "row stride = 64 mod 128");
};
template <int KT, int R1, int R2, int STAGES> constexpr int bulk_smem() {
  return STAGES * BulkGeom<KT, (R1 > R2 ? R1 : R2)>::STAGE;
}

// Template knobs: NT token tiles, R1 / R2 rows per phase-1 / phase-2 unit (R1: 16 or 32; R2: 8, 16
// or 32), KT columns per tile, STAGES ring depth, EF evict-first L2 policy on the weight copies, DYN
// dynamic unit queue (both phases).
template <typename T, tg::Act A, int NT, int R1, int R2, int KT, int STAGES, bool EF, bool DYN>
__device__ void ffn_bulk(const BulkParams& bp) {
  static_assert(R1 == 16 || R1 == 32, "R1");
  static_assert(R2 == 8 || R2 == 16 || R2 == 32, "R2");
  constexpr int TR = R1 > R2 ? R1 : R2;
  using G = BulkGeom<KT, TR>;
  constexpr int CPW = G::CPW;
  constexpr int TOK = TOKENS * NT;
  constexpr int RS = coop_stride(TR);
  const CoopParams& p = bp.c;
  extern __shared__ __align__(128) unsigned char ring[];
  __shared__ float red[CONSUMERS][TOK][RS];
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
  __shared__ int meta[STAGES];
  __shared__ int last;

  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w1 = static_cast<const T*>(p.w1);
  const T* __restrict__ b1 = static_cast<const T*>(p.b1);
  const T* __restrict__ w2 = static_cast<const T*>(p.w2);
  const T* __restrict__ b2 = static_cast<const T*>(p.b2);
  T* __restrict__ y = static_cast<T*>(p.y);
  T* hid = static_cast<T*>(p.hidden);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int groups1 = tg::ceil_div(p.h, R1), groups2 = tg::ceil_div(p.o, R2);
  const int units2 = groups2 * p.splits;
  const uint32_t ring0 = smem_u32(ring);

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(smem_u32(&full[s]), 1);
      mbar_init(smem_u32(&empty[s]), CONSUMERS);
    }
    fence_mbar_init();
  }
  __syncthreads();  // the last block-wide barrier: from here producer and consumers run apart

  if (warp == CONSUMERS) {
    // ---------------- producer ----------------
    uint64_t pol = 0;
    if constexpr (EF) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
    int stage = 0, n = 0;
    uint32_t ph = 0;
    auto next_stage = [&] {
      ++n;
      if (++stage == STAGES) {
        stage = 0;
        ph ^= 1;
      }
    };
    // one tile: rows [row0, row0 + rows) (clamped to nrows) of `base` (row stride `ld`), columns [k0, k1)
    auto issue = [&](const T* base, int64_t ld, int row0, int rows, int nrows, int k0, int k1, int m) {
      if (n >= STAGES) mbar_wait(smem_u32(&empty[stage]), ph ^ 1);
      const uint32_t bytes = (uint32_t)(k1 - k0) * sizeof(T);
      if (lane == 0) {
        meta[stage] = m;
        mbar_expect_tx(smem_u32(&full[stage]), bytes * rows);
      }
      __syncwarp();
      if (lane < rows) {
        const int r = min(row0 + lane, nrows - 1);
        bulk_g2s<EF>(ring0 + stage * G::STAGE + lane * G::ROWB, base + (int64_t)r * ld + k0, bytes,
                     smem_u32(&full[stage]), pol);
      }
      next_stage();
    };
    auto close = [&] {
      if (n >= STAGES) mbar_wait(smem_u32(&empty[stage]), ph ^ 1);
      if (lane == 0) {
        meta[stage] = -1;
        mbar_arrive(smem_u32(&full[stage]));
      }
      __syncwarp();
      next_stage();
    };
    // the next unit of phase `ph2` (0 / 1) out of `units`; round robin: the i-th of this block
    int taken = 0;
    auto grab = [&](int q, int units) {
      int u;
      if constexpr (DYN) {
        if (lane == 0) {
          u = (int)atomicAdd(bp.queue + q, 1u);
          if (u == units + (int)gridDim.x - 1) bp.queue[q] = 0;  // the last grab of all: reset for the next launch
        }
        u = __shfl_sync(0xffffffffu, u, 0);
      } else {
        u = (int)blockIdx.x + taken * (int)gridDim.x;
        ++taken;
      }
      return u;
    };
    while (true) {
      const int rg = grab(0, groups1);
      if (rg >= groups1) break;
      for (int k0 = 0; k0 < p.d; k0 += KT) issue(w1, p.d, rg * R1, R1, p.h, k0, min(p.d, k0 + KT), rg);
    }
    close();
    taken = 0;
    while (true) {
      const int u = grab(1, units2);
      if (u >= units2) break;
      const int rg = u / p.splits, s = u % p.splits;
      const int ks0 = s * p.k_per_split, ks1 = min(p.h, ks0 + p.k_per_split);
      for (int k0 = ks0; k0 < ks1; k0 += KT) issue(w2, p.h, rg * R2, R2, p.o, k0, min(ks1, k0 + KT), u);
    }
    close();
    return;
  }

  // ---------------- consumers ----------------
  int stage = 0;
  uint32_t ph = 0;
  auto release = [&] {
    __syncwarp();
    if (lane == 0) mbar_arrive(smem_u32(&empty[stage]));
    if (++stage == STAGES) {
      stage = 0;
      ph ^= 1;
    }
  };
  // activation fragments: rows (tokens) of `a` (row stride ld), columns of this warp in tile [k0, k1)
  auto aload = [&](uint4(&ad)[NT][CPW], const T* a, int64_t ld, int k0, int k1, bool l1) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const T* row = a + (int64_t)min(nt * TOKENS + g, p.m - 1) * ld;
#pragma unroll
      for (int c = 0; c < CPW; ++c) {
        const int k = k0 + warp * (KT / CONSUMERS) + c * CHUNK_K + t * VEC;
        const uint4* src = reinterpret_cast<const uint4*>(row + k);
        ad[nt][c] = k < k1 ? (l1 ? *src : __ldg(src)) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  // weight fragments of rows r * 8 + g (r < LR) from the current stage, zero past k1
  auto wload = [&](auto& wd, int lr, int k0, int k1) {
    const uint32_t base = ring0 + stage * G::STAGE + g * G::ROWB;
#pragma unroll
    for (int c = 0; c < CPW; ++c) {
      const int col = warp * (KT / CONSUMERS) + c * CHUNK_K + t * VEC;
      const bool in = k0 + col < k1;
#pragma unroll
      for (int r = 0; r < lr; ++r) wd[r][c] = in ? lds128(base + r * 8 * G::ROWB + col * 2) : make_uint4(0, 0, 0, 0);
    }
  };

  // Phase 1
  {
    constexpr int LR = R1 / 8, NP = LR / 2;
    while (true) {
      mbar_wait(smem_u32(&full[stage]), ph);
      const int rg = meta[stage];
      if (rg < 0) {
        release();
        break;
      }
      float acc[NP][NT][4] = {};
      uint4 xn[NT][CPW];
      aload(xn, x, p.d, 0, min(p.d, KT), false);
      for (int k0 = 0; k0 < p.d; k0 += KT) {
        const int k1 = min(p.d, k0 + KT);
        uint4 xc[NT][CPW];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int c = 0; c < CPW; ++c) xc[nt][c] = xn[nt][c];
        if (k1 < p.d) aload(xn, x, p.d, k1, min(p.d, k1 + KT), false);
        if (k0 > 0) mbar_wait(smem_u32(&full[stage]), ph);
        uint4 wv[LR][CPW];
        wload(wv, LR, k0, k1);
        release();
#pragma unroll
        for (int c = 0; c < CPW; ++c)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int j = 0; j < NP; ++j) mma_chunk<T>(acc[j][nt], wv[2 * j][c], wv[2 * j + 1][c], xc[nt][c]);
      }
#pragma unroll
      for (int j = 0; j < NP; ++j) stash<NT, RS>(red, acc[j], warp, g, t, j * ROWS);
      consumers_sync();
      for (int i = threadIdx.x; i < R1 * TOK; i += CONSUMERS * 32) {
        const int row = i % R1, tok = i / R1, n = rg * R1 + row;
        if (n >= p.h || tok >= p.m) continue;
        float a = 0.0f;
#pragma unroll
        for (int w = 0; w < CONSUMERS; ++w) a += red[w][tok][row];
        if (b1 != nullptr) a += tg::to_float(b1[n]);
        hid[(int64_t)tok * p.h + n] = tg::from_float<T>(tg::activate<A>(a));
      }
      consumers_sync();  // red is reused
    }
  }

  // Grid barrier of the consumers (see grid_barrier_sleep in ffn_coop.cu)
  consumers_sync();
  if (threadIdx.x == 0) {
    __threadfence();
    const unsigned add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
    unsigned old, now;
    asm volatile("atom.add.release.gpu.u32 %0, [%1], %2;" : "=r"(old) : "l"(bp.barrier), "r"(add) : "memory");
    int spins = 0;
    while (true) {
      asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(now) : "l"(bp.barrier) : "memory");
      if ((old ^ now) & 0x80000000u) break;
      if (++spins > SPIN_LIMIT) __trap();
    }
  }
  consumers_sync();

  // Phase 2
  {
    constexpr int LR = R2 / 8;
    constexpr int NP = LR >= 2 ? LR / 2 : 1;
    while (true) {
      mbar_wait(smem_u32(&full[stage]), ph);
      const int u = meta[stage];
      if (u < 0) break;
      const int rg = u / p.splits, s = u % p.splits;
      const int ks0 = s * p.k_per_split, ks1 = min(p.h, ks0 + p.k_per_split);
      float acc[NP][NT][4] = {};
      uint4 hn[NT][CPW];
      aload(hn, hid, p.h, ks0, min(ks1, ks0 + KT), true);
      for (int k0 = ks0; k0 < ks1; k0 += KT) {
        const int k1 = min(ks1, k0 + KT);
        uint4 hc[NT][CPW];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int c = 0; c < CPW; ++c) hc[nt][c] = hn[nt][c];
        if (k1 < ks1) aload(hn, hid, p.h, k1, min(ks1, k1 + KT), true);
        if (k0 > ks0) mbar_wait(smem_u32(&full[stage]), ph);
        uint4 wv[LR][CPW];
        wload(wv, LR, k0, k1);
        release();
#pragma unroll
        for (int c = 0; c < CPW; ++c)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            if constexpr (LR == 1) {
              mma_chunk<T>(acc[0][nt], wv[0][c], wv[0][c], hc[nt][c]);
            } else {
#pragma unroll
              for (int j = 0; j < NP; ++j) mma_chunk<T>(acc[j][nt], wv[2 * j][c], wv[2 * j + 1][c], hc[nt][c]);
            }
          }
      }
#pragma unroll
      for (int j = 0; j < NP; ++j) stash<NT, RS, (LR > 1)>(red, acc[j], warp, g, t, j * ROWS);
      consumers_sync();
      float* part = p.partial + (int64_t)u * p.m * R2;
      for (int i = threadIdx.x; i < R2 * p.m; i += CONSUMERS * 32) {
        const int row = i % R2, tok = i / R2, n = rg * R2 + row;
        float a = 0.0f;
#pragma unroll
        for (int w = 0; w < CONSUMERS; ++w) a += red[w][tok][row];
        if (p.splits == 1) {
          if (n < p.o) y[(int64_t)tok * p.o + n] = tg::from_float<T>(a + (b2 != nullptr ? tg::to_float(b2[n]) : 0.0f));
        } else {
          part[i] = a;
        }
      }
      if (p.splits > 1) {
        __threadfence();
        consumers_sync();
        if (threadIdx.x == 0) last = atomicAdd(&p.tickets[rg], 1u) == (unsigned)p.splits - 1;
        consumers_sync();
        if (last) {
          __threadfence();
          const float* base = p.partial + (int64_t)rg * p.splits * p.m * R2;
          for (int i = threadIdx.x; i < R2 * p.m; i += CONSUMERS * 32) {
            const int row = i % R2, tok = i / R2, n = rg * R2 + row;
            float a = 0.0f;
            for (int sp = 0; sp < p.splits; ++sp) a += __ldcg(base + (int64_t)sp * p.m * R2 + i);
            if (n < p.o) y[(int64_t)tok * p.o + n] = tg::from_float<T>(a + (b2 != nullptr ? tg::to_float(b2[n]) : 0.0f));
          }
          if (threadIdx.x == 0) p.tickets[rg] = 0;
        }
      }
      consumers_sync();  // red and `last` are reused
    }
  }
}

// The bandwidth ceiling of the bulk-copy stream: one block per SM streams a contiguous slice of
// `src` through a STAGES-deep ring of CHUNK-byte bulk copies; one consumer warp waits for each stage
// and frees it (no math).
template <int CHUNK, int STAGES>
__global__ void __launch_bounds__(64, 1) kread_bulk(const unsigned char* src, int64_t bytes) {
  extern __shared__ __align__(128) unsigned char ring[];
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
  const int64_t chunks = (bytes + CHUNK - 1) / CHUNK;  // whole chunks, spread evenly over the blocks
  const int64_t b0 = chunks * blockIdx.x / gridDim.x * CHUNK;
  const int64_t e1 = chunks * (blockIdx.x + 1) / gridDim.x * CHUNK, b1 = e1 < bytes ? e1 : bytes;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(smem_u32(&full[s]), 1);
      mbar_init(smem_u32(&empty[s]), 1);
    }
    fence_mbar_init();
  }
  __syncthreads();
  int stage = 0;
  uint32_t ph = 0;
  if (threadIdx.x == 0) {
    int n = 0;
    for (int64_t o = b0; o < b1; o += CHUNK) {
      if (n >= STAGES) mbar_wait(smem_u32(&empty[stage]), ph ^ 1);
      const uint32_t len = (uint32_t)(b1 - o < CHUNK ? b1 - o : CHUNK);
      mbar_expect_tx(smem_u32(&full[stage]), len);
      bulk_g2s<false>(smem_u32(ring) + stage * CHUNK, src + o, len, smem_u32(&full[stage]), 0);
      ++n;
      if (++stage == STAGES) {
        stage = 0;
        ph ^= 1;
      }
    }
  } else if (threadIdx.x == 32) {
    for (int64_t o = b0; o < b1; o += CHUNK) {
      mbar_wait(smem_u32(&full[stage]), ph);
      mbar_arrive(smem_u32(&empty[stage]));
      if (++stage == STAGES) {
        stage = 0;
        ph ^= 1;
      }
    }
  }
}

}  // namespace ffnb
