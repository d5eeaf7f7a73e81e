// TMA variant of the warp-specialized Hopper W4A16 GEMM (kernels/int4_gemm_ws.cuh; sm_90a only):
// y[M, N] = x[M, K] . W^T, W in the packed INT4 format of int4_format.cuh. Round 6 found the
// cp.async version producer-bound (its load pipeline alone 95-105 us at M=512, K=4096 -> N=11008);
// here the copy engine loads every tile and the producers only dequantize:
// - a block is PW producer warpgroups + CW consumer warpgroups (BM = 64 CW x rows);
// - warp 0 of producer warpgroup 0 is the loader: lane 0 walks K in 64-wide stages through a
//   STAGES-deep ring; per stage it waits for the slot's `empty` mbarrier, arms `loaded` with the
//   stage's bytes and issues cp.async.bulk.tensor for the x tile [BM rows][64 k] (128-byte swizzle:
//   the wgmma K-major layout), and on even stages (a new 128-wide format chunk) for the chunk's
//   packed tiles [BN / 8 tiles][128 words] (tile i at 512 i: the cp.async layout of round 6) and
//   its scales (and zeros) [128 / G groups][BN] into raw slot c % RAW; rows, tiles and k past the
//   tensor are zero-filled by the copy engine (tail stages need no special x path);
// - the other 128 PW - 32 producer threads wait on `loaded`, dequantize the stage's weights into
//   a 128-byte-swizzled f16 / bf16 B slot [BN rows][64 k] (the round-6 code: one 16-byte store per
//   format word), fence the async proxy and arrive on `full`;
// - consumer warpgroup w waits on `full`, runs wgmma.m64n<BN>k16 (A = x rows 64w.., B = the
//   dequantized weights, both from shared memory), one group in flight, releases the previous
//   stage on `empty`.
// A raw slot is rewritten at stage 2c only after the consumers released stage 2c - STAGES, so
// 2 RAW >= STAGES + 1 keeps the chunk c - RAW's last reader (stage 2c - 2 RAW + 1) behind it.
// REGS_P / REGS_C > 0: setmaxnreg for producers / consumers (needs __launch_bounds__(.., 1)).
// The tensor maps need N % 8 == 0 (scale rows 16-byte strided) and 16-byte aligned bases.
// Status (benchmarks/int4.md, round 7; H100): correct (harness f64 checks, memcheck; crate tests,
// memcheck, racecheck while it was the crate's path for 64 < M <= 512 on sm_90): K=4096 -> N=11008
// M=512 104.3 us kernel against 106.1 for int4_dequant + cuBLAS, M=256 53.1 against 87.2. Since the
// 6th session harness-only (scripts/int4_rs_harness.cu times its two best variants next to the RS GEMM): the transposed-RS GEMM
// (int4_gemm_rs.cuh, which shares its TmaMaps and TMA helpers) replaced it in the crate.
#pragma once
#include "int4_gemm_ws.cuh"

namespace tg::int4_tma {

using namespace tg::int4;
using tg::int4_ws::make_desc;
using tg::int4_ws::mbar_arrive;
using tg::int4_ws::mbar_init;
using tg::int4_ws::mbar_wait;
using tg::int4_ws::scale_pair;
using tg::int4_ws::swz;
using tg::int4_ws::WgmmaSS;
using tg::int4_ws::WsDims;

// CUtensorMap (128 bytes, opaque), passed by value as a __grid_constant__ parameter.
struct alignas(64) TmaDesc {
  unsigned long long opaque[16];
};
// x [M, K] (16-bit, box 64 k x BM rows, 128-byte swizzle), packed [ceil(N/8), K] (u32, box 128 x
// BN / 8), scales and zeros [K / G, N] (f16, box BN x 128 / G; zeros unused when symmetric).
struct TmaMaps {
  TmaDesc x, w, s, z;
};

constexpr int STAGE_K = 64;
constexpr int TILE_BYTES = tg::WARP_SIZE * 16;
constexpr int MAX_GROUPS = CHUNK_K / 32;

__device__ __forceinline__ void fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const TmaDesc& map, uint32_t bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(&map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void tma_prefetch_desc(const TmaDesc& map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map)) : "memory");
}
template <int R> __device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R)); }
template <int R> __device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R)); }

template <int BN, int CW, int STAGES, int RAW> struct TmaSmem {
  static constexpr int BM = 64 * CW;
  static constexpr int A = BM * 128;
  static constexpr int B = BN * 128;
  static constexpr int RW = BN / TILE_N * TILE_BYTES;
  static constexpr int RS = (MAX_GROUPS * BN * 2 + 127) / 128 * 128;  // TMA destinations 128-byte aligned
  static constexpr int R = RW + 2 * RS;
  static constexpr int A_OFF = 0, B_OFF = STAGES * A, R_OFF = B_OFF + STAGES * B, BAR_OFF = R_OFF + RAW * R;
  static constexpr int BYTES = BAR_OFF + 3 * STAGES * 8 + 1024;
  static_assert(A % 1024 == 0 && B % 1024 == 0 && RW % 128 == 0, "swizzle atoms 1024-byte aligned");
  static_assert(BYTES <= 227 * 1024, "one block per SM");
  static_assert(2 * RAW >= STAGES + 1, "a raw slot is reloaded only after its last reader released its stage");
};

// DIAG (harness-only; 0 = real): 2 = no weight dequantization / stores (loads + wgmma), 3 = no wgmma.
// EARLY: the consumers wait for each stage's wgmmas and release it at once (no group in flight
// across stages) instead of releasing the previous stage after issuing the next.
template <typename T, int BN, int CW, int STAGES, int RAW, int PW, bool SYM, int REGS_P = 0, int REGS_C = 0, int DIAG = 0,
          bool EARLY = false>
__device__ __forceinline__ void int4_gemm_tma(const TmaMaps& maps, T* __restrict__ y, WsDims d,
                                              const T* __restrict__ bias = nullptr, int act = (int)tg::Act::Identity) {
  using T2 = typename tg::int4_ws::Pair<T>::type;
  using L = TmaSmem<BN, CW, STAGES, RAW>;
  constexpr int BM = L::BM, BT = BN / TILE_N;
  constexpr int DT = 128 * PW - 32;                // dequantizing threads (producer warps 1..)
  constexpr int ITEMS = (BT * 32 + DT - 1) / DT;   // a dequantizing thread's (tile, lane) pieces per stage
  static_assert(PW == 1 || PW == 2, "one or two producer warpgroups");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw_s = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t sm = (raw_s + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (sm - raw_s);
  const uint32_t loaded_bar = sm + L::BAR_OFF, full_bar = loaded_bar + STAGES * 8, empty_bar = full_bar + STAGES * 8;

  const int tid = threadIdx.x, wg = tid / 128;
  const int m0 = blockIdx.x * BM, tile0 = blockIdx.y * BT;
  const int n_chunks = tg::ceil_div(d.K, CHUNK_K);
  const int n_stages = 2 * (n_chunks - 1) + (chunk_words(d.K, n_chunks - 1) + 1) / 2;
  const int spg_shift = d.group_size == 32 ? 0 : d.group_size == 64 ? 1 : 2;  // log2(G / 32)

  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(loaded_bar + 8 * s, 1);
      mbar_init(full_bar + 8 * s, DT);
      mbar_init(empty_bar + 8 * s, 128 * CW);
    }
    fence_mbar_init();
  }
  __syncthreads();

  if (wg < PW) {
    if constexpr (REGS_P > 0) setmaxnreg_dec<REGS_P>();
    if (tid < 32) {
      // ---------------- loader (one lane) ----------------
      if (tid == 0) {
        tma_prefetch_desc(maps.x);
        tma_prefetch_desc(maps.w);
        tma_prefetch_desc(maps.s);
        if (!SYM) tma_prefetch_desc(maps.z);
        const int gpc = MAX_GROUPS >> spg_shift;
        const uint32_t chunk_bytes = L::RW + (SYM ? 1 : 2) * gpc * BN * 2;
        for (int q = 0; q < n_stages; ++q) {
          const int s = q % STAGES, c = q >> 1;
          if (q >= STAGES) mbar_wait(empty_bar + 8 * s, ((q / STAGES) + 1) & 1);
          const uint32_t bar = loaded_bar + 8 * s;
          mbar_expect_tx(bar, L::A + ((q & 1) == 0 ? chunk_bytes : 0));
          tma_load_2d(sm + L::A_OFF + s * L::A, maps.x, bar, q * STAGE_K, m0);
          if ((q & 1) == 0) {
            const uint32_t rb = sm + L::R_OFF + (c % RAW) * L::R;
            tma_load_2d(rb, maps.w, bar, c * CHUNK_K, tile0);
            tma_load_2d(rb + L::RW, maps.s, bar, tile0 * TILE_N, c * gpc);
            if (!SYM) tma_load_2d(rb + L::RW + L::RS, maps.z, bar, tile0 * TILE_N, c * gpc);
          }
        }
      }
    } else {
      // ---------------- dequantizers ----------------
      const int dt = tid - 32;
      // piece r: tile dt / 32 + (DT / 32) r, format lane dl (g paired with g ^ 4 per 8-lane phase
      // so that a phase's 16-byte stores hit 8 different swizzled units)
      const int pl = dt & 31, pt_ = pl & 3, pg = ((pl >> 2) & 1) * 4 + (pl >> 3), dl = 4 * pg + pt_;
      for (int q = 0; q < n_stages; ++q) {
        const int s = q % STAGES, c = q >> 1, h = q & 1;
        mbar_wait(loaded_bar + 8 * s, (q / STAGES) & 1);
        if (DIAG != 2) {
          const int wc = chunk_words(d.K, c), nw = min(2, wc - 2 * h);
          const unsigned char* rb = smem + L::R_OFF + (c % RAW) * L::R;
          const __half* ss = reinterpret_cast<const __half*>(rb + L::RW);
          const __half* zs = reinterpret_cast<const __half*>(rb + L::RW + L::RS);
          unsigned char* bs = smem + L::B_OFF + s * L::B;
          const int gl0 = (2 * h) >> spg_shift, gl1 = (2 * h + 1) >> spg_shift;
#pragma unroll
          for (int r = 0; r < ITEMS; ++r) {
            const int i = dt / 32 + (DT / 32) * r, n = 8 * i + pg;
            if (BT * 32 % DT != 0 && i >= BT) break;
            uint32_t w[2];
            if (wc == WORDS_PER_LANE) {
              const uint2 v = *reinterpret_cast<const uint2*>(rb + i * TILE_BYTES + dl * 16 + h * 8);
              w[0] = v.x;
              w[1] = v.y;
            } else {
              const uint32_t* tw = reinterpret_cast<const uint32_t*>(rb + i * TILE_BYTES);
              w[0] = tw[dl * wc + 2 * h];
              w[1] = nw > 1 ? tw[dl * wc + 2 * h + 1] : 0u;
            }
#pragma unroll
            for (int jj = 0; jj < 2; ++jj) {
              if (jj >= nw) {  // past K (tail stage): zero weights
                *reinterpret_cast<uint4*>(bs + swz(n, 4 * jj + pt_)) = make_uint4(0, 0, 0, 0);
                continue;
              }
              const int gl = jj ? gl1 : gl0;
              WordDequant<T> dq;
              if (SYM) {
                dq = WordDequant<T>::symmetric();
              } else {
                dq = WordDequant<T>::zero_point(__half2half2(zs[gl * BN + n]));
              }
              uint32_t p[4];
              dq.word(w[jj], p);
              const T2 sc = as_h2<T2>(scale_pair<T>(ss[gl * BN + n]));
#pragma unroll
              for (int k = 0; k < 4; ++k) p[k] = bits_of(__hmul2(as_h2<T2>(p[k]), sc));
              *reinterpret_cast<uint4*>(bs + swz(n, 4 * jj + pt_)) = make_uint4(p[0], p[1], p[2], p[3]);
            }
          }
          tg::int4_ws::fence_proxy_async();
        }
        mbar_arrive(full_bar + 8 * s);
      }
    }
  } else {
    // ---------------- consumers ----------------
    if constexpr (REGS_C > 0) setmaxnreg_inc<REGS_C>();
    const int cw = wg - PW, lane = tid % 32, warp = (tid / 32) % 4;
    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.0f;
    for (int q = 0; q < n_stages; ++q) {
      const int s = q % STAGES;
      mbar_wait(loaded_bar + 8 * s, (q / STAGES) & 1);
      mbar_wait(full_bar + 8 * s, (q / STAGES) & 1);
      const uint32_t xa = sm + L::A_OFF + s * L::A + cw * 64 * 128, wb = sm + L::B_OFF + s * L::B;
      tg::int4_ws::fence_regs(acc);
      tg::int4_ws::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < STAGE_K / 16; ++kk) {
        if (DIAG != 3) WgmmaSS<T, BN>::run(acc, make_desc(xa + kk * 32), make_desc(wb + kk * 32));
      }
      tg::int4_ws::wgmma_commit();
      if constexpr (EARLY) {
        tg::int4_ws::wgmma_wait<0>();
        tg::int4_ws::fence_regs(acc);
        mbar_arrive(empty_bar + 8 * s);
      } else {
        tg::int4_ws::wgmma_wait<1>();
        tg::int4_ws::fence_regs(acc);
        if (q > 0) mbar_arrive(empty_bar + 8 * ((q - 1) % STAGES));
      }
    }
    tg::int4_ws::wgmma_wait<0>();
    tg::int4_ws::fence_regs(acc);
    // acc[i]: x row 64 cw + 16 warp + lane / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (lane % 4) + i % 2
    const int n_base = tile0 * TILE_N + 2 * (lane & 3);
    const bool pairs = (d.N & 1) == 0;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int row = m0 + 64 * cw + 16 * warp + (lane >> 2) + 8 * hr;
      if (row >= d.M) continue;
      T* yr = y + (int64_t)row * d.N;
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
        const int col = n_base + 8 * j;
        if (col >= d.N) continue;
        const float v0 = bias_act(acc[4 * j + 2 * hr], bias, col, act);
        const float v1 = col + 1 < d.N ? bias_act(acc[4 * j + 2 * hr + 1], bias, col + 1, act) : 0.0f;
        if (pairs && col + 1 < d.N) {
          *reinterpret_cast<T2*>(yr + col) = T2(tg::from_float<T>(v0), tg::from_float<T>(v1));
        } else {
          yr[col] = tg::from_float<T>(v0);
          if (col + 1 < d.N) yr[col + 1] = tg::from_float<T>(v1);
        }
      }
    }
  }
}

}  // namespace tg::int4_tma
