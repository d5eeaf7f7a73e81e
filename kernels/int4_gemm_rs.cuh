// "Transposed RS" Hopper W4A16 GEMM (Machete-style; sm_90a only): y[M, N] = x[M, K] . W^T computed
// as y^T = W . x^T, so the WEIGHTS are wgmma's A operand, taken from registers and dequantized by
// the consumer warps themselves (each weight once per block of TN tokens), and x is the B operand
// from shared memory. W is in the packed INT4 format of int4_format.cuh.
// - A block is 2 consumer warpgroups (warps 0..7, 64 weight rows each: BW = 128 output features)
//   and one producer warp (warp 8: 288 threads, so every thread may use 224 registers without
//   setmaxnreg); the block's tokens are TN (grid.x: token blocks, grid.y: 128-row weight blocks).
// - The producer's lane 0 walks K one 128-wide format chunk per stage through a STAGES-deep ring:
//   it waits for the slot's `empty` mbarrier, arms `full` with the stage's bytes and issues
//   cp.async.bulk.tensor for the x tile (two boxes [TN tokens][64 k], 128-byte swizzle = the
//   K-major B layout; the second only when the chunk has more than 64 k), the chunk's 16 packed
//   tiles [16][128 words] and its scales (and zeros) [128 / G groups][128 rows]. Rows, tiles and k
//   past the tensors are zero-filled by the copy engine.
// - Consumer warp w of warpgroup cw owns weight rows 64 cw + 16 (w % 4) + {g, g + 8} (g = lane / 4)
//   = row g of format tiles 8 cw + 2 (w % 4) and the next one. The wgmma m64nNk16 A fragment of
//   lane (g, t = lane % 4) is the mma.sync m16n8k16 A layout: {row g, k 2t, 2t+1}, {row g+8, same
//   k}, {row g, k 2t+8, 2t+9}, {row g+8, same k}. In the format, word j of lane 4g + t' of a tile
//   holds k 32j + 8t' .. + 8 of row g, and (word >> 4t) & 0x000f000f is exactly the pair
//   (32j + 8t' + 2t, + 1): k16 step 2j + h takes pair t of the words of lanes 4g + 2h (k 2t..) and
//   4g + 2h + 1 (k 8 + 2t..). So per chunk a lane loads the 4 x 16-byte lane chunks of row g and of
//   row g + 8 (quad-broadcast loads) and per k16 step builds 4 f16x2 / bf16x2 registers with a
//   shift, one LOP3 (magic 1024 + q / 128 + q), one HSUB2 (- (1024 + z)) and one HMUL2 (x s): the
//   same (q - z) * s rounded once to T as the other INT4 kernels. The fragments of step s + 1 are
//   built while step s's wgmma runs (one group in flight); a stage is released once the next
//   chunk's first wgmma has been issued and the previous group has completed.
// - Epilogue: the accumulator is y^T (rows = output features, columns = tokens); each warpgroup
//   stages its 64 features x TN tokens + bias in f32 in shared memory (the ring's space, after all
//   consumers are done) as [token][64 (+4 pad)], then a rolled loop, instantiated per activation
//   and picked by one switch, applies the activation in f32, rounds once to T and writes 16-byte
//   pieces of y rows (N % 8 == 0).
// K tail chunks (K % 128 != 0: 1..3 words per lane) use scalar loads of the chunk's layout
// (lane l's words at l * wc + j) and run 2 wc k16 steps. The tensor maps need N % 8 == 0.
// Status (benchmarks/int4.md; H100, 2026-11-27): correct (harness f64 checks of 5 variants on 15
// shapes; crate tests, memcheck, racecheck); the crate's path for 64 < M <= 1024 on sm_90 (N % 8 ==
// 0). K=4096 -> N=11008 kernel µs (round 8 harness): M=512 73.6 (TMA GEMM 102.3, cuBLAS f16 on zeros
// 58.2), M=1024 146.5 (dequantize + cuBLAS 159.9), M=384 62.0 (t128), M=128 31.5 (t128; cuBLAS
// 37.5). Per call through the crate (7th session's final run): M=512 85.1, M=128 30.0.
// Clusters (CL > 1, harness-only; round 9 and the 6th session): correct, but slower: with
// .release.cluster remote arrivals ~1.5x (MEMBAR.ALL.GPU per chunk per warp), with the CUTLASS-form
// arrivals now here 76.7 vs 73.5 µs (harness) and 96.7-97.3 vs 94.0 per call (before the 7th
// session's epilogue fix; branch int4-mc-cluster routes them through the crate).
#pragma once
#include "int4_gemm_tma.cuh"

namespace tg::int4_rs {

using namespace tg::int4;
using tg::int4_tma::fence_mbar_init;
using tg::int4_tma::mbar_expect_tx;
using tg::int4_tma::tma_load_2d;
using tg::int4_tma::tma_prefetch_desc;
using tg::int4_tma::TmaMaps;
using tg::int4_ws::make_desc;
using tg::int4_ws::mbar_arrive;
using tg::int4_ws::mbar_init;
using tg::int4_ws::mbar_wait;
using tg::int4_ws::scale_pair;
using tg::int4_ws::WsDims;

constexpr int BW = 128;                  // weight rows (output features) per block
constexpr int BT = BW / TILE_N;          // format tiles per block
constexpr int THREADS = 256 + 32;        // 2 consumer warpgroups + 1 producer warp
constexpr int TILE_BYTES = tg::WARP_SIZE * 16;
constexpr int MAX_GROUPS = CHUNK_K / 32;
constexpr int EPI_STRIDE = 64 + 4;       // staged f32 row: 64 features + 4 pad (bank spread, 16-byte rows)

// Mirrors `RsVariant::smem_bytes` in src/quant/launch.rs.
template <int TN, int STAGES> struct RsSmem {
  static constexpr int XH = TN * 128;                // one [TN][64] 16-bit box
  static constexpr int X = 2 * XH;
  static constexpr int W = BT * TILE_BYTES;          // [16 tiles][128 words]
  static constexpr int S = MAX_GROUPS * BW * 2;      // [4 groups][128 rows] f16
  static constexpr int STAGE = X + W + 2 * S;
  static constexpr int RING = STAGES * STAGE;
  static constexpr int EPI = 2 * TN * EPI_STRIDE * 4;
  static constexpr int BAR_OFF = RING > EPI ? RING : EPI;
  static constexpr int BYTES = BAR_OFF + 2 * STAGES * 8 + 1024;
  static_assert(TN % 8 == 0 && TN >= 8 && TN <= 256, "wgmma N and the TMA box");
  static_assert(XH % 1024 == 0 && STAGE % 1024 == 0, "swizzle atoms 1024-byte aligned");
  static_assert(BYTES <= 227 * 1024, "one block per SM");
};

template <typename T> struct Magic;
template <> struct Magic<__half> {
  static constexpr uint32_t BITS = 0x64006400u;  // 1024
  static constexpr uint32_t SYM = 0x64086408u;   // 1024 + 8
  static __device__ __forceinline__ uint32_t zero(__half z) { return bits_of(__hadd2(__half2half2(z), __float2half2_rn(1024.0f))); }
};
template <> struct Magic<__nv_bfloat16> {
  static constexpr uint32_t BITS = 0x43004300u;  // 128
  static constexpr uint32_t SYM = 0x43084308u;   // 128 + 8
  static __device__ __forceinline__ uint32_t zero(__half z) {
    return bits_of(__float2bfloat162_rn(128.0f + __half2float(z)));
  }
};

// One fragment register: the pair (k, k + 1) of one row = (word >> 4t) & 0x000f000f (pre-shifted
// `v`), as (q - z) * s in T.
template <typename T> __device__ __forceinline__ uint32_t deq_pair(uint32_t v, uint32_t lo, uint32_t sc) {
  using T2 = typename tg::int4_ws::Pair<T>::type;
  const T2 q = as_h2<T2>(and_or<NIBBLE_PAIR_MASK, Magic<T>::BITS>(v));
  return bits_of(__hmul2(__hsub2(q, as_h2<T2>(lo)), as_h2<T2>(sc)));
}

template <int N> __device__ __forceinline__ void fence_u32(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}
__device__ __forceinline__ void named_sync(int id, int threads) { asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory"); }

// ---- thread-block cluster pieces (CL > 1: CL blocks along the weight rows share each x tile) ----
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
// Every thread of every block of the cluster (exited threads must not be counted on: all reach it).
// RELAXED: no ordering of earlier memory operations (after fence.mbarrier_init, as CUTLASS's
// cluster_arrive_relaxed; .release costs a MEMBAR.ALL.GPU); else release (the kernel's end: a
// block's remote arrivals land before its partner may exit).
template <bool RELAXED> __device__ __forceinline__ void cluster_sync() {
  if constexpr (RELAXED) {
    asm volatile("barrier.cluster.arrive.relaxed;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
  } else {
    asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
  }
}
// Arrive on the mbarrier at the same shared-memory offset `bar` in cluster block `rank` (default
// .release.cta semantics, as CUTLASS's ClusterBarrier::arrive: the arrival only says "my reads of the
// stage are complete" (a WAR hand-off to the producers' copy engine), nothing has to become visible;
// `.release.cluster` compiles to MEMBAR.ALL.GPU before every arrival, ~0.5 us per chunk (round 9)).
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t bar, uint32_t rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(bar), "r"(rank));
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(remote) : "memory");
}
// TMA 2-D load multicast to the blocks of `mask`: the box lands at offset `dst` of each one's shared
// memory and completes `bytes` on the mbarrier at offset `bar` of each.
__device__ __forceinline__ void tma_load_2d_mc(uint32_t dst, const tg::int4_tma::TmaDesc& map, uint32_t bar, int c0, int c1,
                                               uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(&map)), "r"(c0), "r"(c1), "r"(bar), "h"(mask)
      : "memory");
}

// D[64 x N] += A[64 x 16] (registers) . B[16 x N]^T (shared memory, K-major descriptor).
template <typename T, int N> struct WgmmaRS;
template <> struct WgmmaRS<__half, 88> {
  static __device__ __forceinline__ void run(float (&d)[44], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %49, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n88k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43}, {%44, %45, %46, %47}, %48, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__half, 128> {
  static __device__ __forceinline__ void run(float (&d)[64], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__half, 176> {
  static __device__ __forceinline__ void run(float (&d)[88], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %93, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n176k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87}, {%88, %89, %90, %91}, %92, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__half, 192> {
  static __device__ __forceinline__ void run(float (&d)[96], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %101, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, {%96, %97, %98, %99}, %100, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__half, 256> {
  static __device__ __forceinline__ void run(float (&d)[128], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, {%128, %129, %130, %131}, %132, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__nv_bfloat16, 88> {
  static __device__ __forceinline__ void run(float (&d)[44], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %49, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n88k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43}, {%44, %45, %46, %47}, %48, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__nv_bfloat16, 128> {
  static __device__ __forceinline__ void run(float (&d)[64], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__nv_bfloat16, 176> {
  static __device__ __forceinline__ void run(float (&d)[88], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %93, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n176k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87}, {%88, %89, %90, %91}, %92, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__nv_bfloat16, 192> {
  static __device__ __forceinline__ void run(float (&d)[96], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %101, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, {%96, %97, %98, %99}, %100, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__nv_bfloat16, 256> {
  static __device__ __forceinline__ void run(float (&d)[128], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, {%128, %129, %130, %131}, %132, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};


// One warpgroup's staged tile [TN tokens][64 features] (f32, row stride EPI_STRIDE) to y: the
// activation in f32, one rounding to T, 16-byte stores of 8 features (N % 8 == 0).
template <tg::Act A, int TN, typename T>
__device__ __forceinline__ void store_tile(const float* stg, T* __restrict__ y, const WsDims& d, int t0, int n0, int wtid) {
  for (int idx = wtid; idx < TN * 8; idx += 128) {
    const int tok = idx >> 3, q = idx & 7, m = t0 + tok, n = n0 + 8 * q;
    if (m < d.M && n < d.N) {
      const float4 a = *reinterpret_cast<const float4*>(stg + tok * EPI_STRIDE + 8 * q);
      const float4 b = *reinterpret_cast<const float4*>(stg + tok * EPI_STRIDE + 8 * q + 4);
      const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
      alignas(16) T o[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = tg::from_float<T>(tg::activate<A>(v[e]));
      *reinterpret_cast<uint4*>(y + (int64_t)m * d.N + n) = *reinterpret_cast<const uint4*>(o);
    }
  }
}

// DIAG (harness-only; 0 = real): 2 = no dequantization (fragments from the raw words: loads + wgmma),
// 3 = no wgmma (loads + dequantization; the fragments are kept alive by an empty asm).
// CL: blocks per thread-block cluster along the weight rows (grid.y, a multiple of CL; 1 = no
// cluster). With CL > 1 block rank r of the cluster loads token rows [r TN / CL, (r + 1) TN / CL) of
// each x box (x's tensor map box is [TN / CL][64]) and multicasts them to every block of the
// cluster; each block's `full` barrier expects the whole box, and a stage is free for the producers
// only once the consumers of every block of the cluster released it (`empty`: one arrival per
// consumer warp per block, remote arrivals through mapa).
template <typename T, int TN, int STAGES, bool SYM, int CL = 1, int DIAG = 0>
__device__ __forceinline__ void int4_gemm_rs(const TmaMaps& maps, T* __restrict__ y, WsDims d, const T* __restrict__ bias,
                                             int act) {
  using L = RsSmem<TN, STAGES>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw_s = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t sm = (raw_s + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (sm - raw_s);
  const uint32_t full_bar = sm + L::BAR_OFF, empty_bar = full_bar + STAGES * 8;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int t0 = blockIdx.x * TN, tile0 = blockIdx.y * BT, n0 = tile0 * TILE_N;
  const int n_chunks = tg::ceil_div(d.K, CHUNK_K);
  const int spg_shift = d.group_size == 32 ? 0 : d.group_size == 64 ? 1 : 2;  // log2(G / 32)

  static_assert(CL == 1 || CL == 2 || CL == 4, "cluster of 1, 2 or 4 blocks");
  static_assert((TN / CL) % 8 == 0, "a block's share of the x box is whole 1024-byte swizzle atoms");
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full_bar + 8 * s, 1);
      mbar_init(empty_bar + 8 * s, CL == 1 ? 256 : 8 * CL);
    }
    fence_mbar_init();
  }
  if constexpr (CL > 1) {
    cluster_sync<true>();  // every block's barriers are initialized before any multicast or remote arrival
  } else {
    __syncthreads();
  }
  const uint32_t rank = CL > 1 ? cluster_rank() : 0u;

  if (warp == 8) {
    // ---------------- producer (one lane) ----------------
    if (lane == 0) {
      tma_prefetch_desc(maps.x);
      tma_prefetch_desc(maps.w);
      tma_prefetch_desc(maps.s);
      if (!SYM) tma_prefetch_desc(maps.z);
      const int gpc = MAX_GROUPS >> spg_shift;
      for (int c = 0; c < n_chunks; ++c) {
        const int s = c % STAGES;
        if (c >= STAGES) mbar_wait(empty_bar + 8 * s, ((c / STAGES) + 1) & 1);
        const bool two = d.K - CHUNK_K * c > 64;  // the chunk's second 64-k x box holds k < K
        const uint32_t bar = full_bar + 8 * s, st = sm + s * L::STAGE;
        mbar_expect_tx(bar, (two ? 2 : 1) * L::XH + L::W + (SYM ? 1 : 2) * gpc * BW * 2);
        if constexpr (CL > 1) {
          constexpr uint16_t MASK = (1u << CL) - 1u;
          const uint32_t part = rank * (L::XH / CL);
          const int tr = t0 + static_cast<int>(rank) * (TN / CL);
          tma_load_2d_mc(st + part, maps.x, bar, CHUNK_K * c, tr, MASK);
          if (two) tma_load_2d_mc(st + L::XH + part, maps.x, bar, CHUNK_K * c + 64, tr, MASK);
        } else {
          tma_load_2d(st, maps.x, bar, CHUNK_K * c, t0);
          if (two) tma_load_2d(st + L::XH, maps.x, bar, CHUNK_K * c + 64, t0);
        }
        tma_load_2d(st + L::X, maps.w, bar, CHUNK_K * c, tile0);
        tma_load_2d(st + L::X + L::W, maps.s, bar, n0, c * gpc);
        if (!SYM) tma_load_2d(st + L::X + L::W + L::S, maps.z, bar, n0, c * gpc);
      }
    }
    if constexpr (CL > 1) {
      cluster_sync<false>();  // no block leaves while another may still arrive on its barriers
    }
    return;
  }

  // ---------------- consumers ----------------
  const int cw = warp >> 2, wq = warp & 3, g = lane >> 2, t = lane & 3;
  const int la = 64 * cw + 16 * wq + g;  // block-local weight row of fragment registers 0 and 2 (+8: 1 and 3)
  const int ta = la / TILE_N;            // its format tile (the +8 row is in the next one)
  float acc[TN / 2];
#pragma unroll
  for (int i = 0; i < TN / 2; ++i) acc[i] = 0.0f;
  uint32_t fr[2][4];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int i = 0; i < 4; ++i) fr[h][i] = 0u;
  }

  for (int c = 0; c < n_chunks; ++c) {
    const int s = c % STAGES;
    mbar_wait(full_bar + 8 * s, (c / STAGES) & 1);
    const unsigned char* st = smem + s * L::STAGE;
    const uint32_t xs = sm + s * L::STAGE;
    const int wc = chunk_words(d.K, c);
    // wv[r][t'][j]: word j of lane 4g + t' of row g of tile ta + r, shifted so pair t is at bit 0
    uint32_t wv[2][4][4];
    const unsigned char* wt = st + L::X + ta * TILE_BYTES;
    if (wc == WORDS_PER_LANE) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
#pragma unroll
        for (int tp = 0; tp < 4; ++tp) {
          const uint4 v = *reinterpret_cast<const uint4*>(wt + r * TILE_BYTES + (4 * g + tp) * 16);
          wv[r][tp][0] = v.x >> (4 * t);
          wv[r][tp][1] = v.y >> (4 * t);
          wv[r][tp][2] = v.z >> (4 * t);
          wv[r][tp][3] = v.w >> (4 * t);
        }
      }
    } else {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint32_t* tw = reinterpret_cast<const uint32_t*>(wt + r * TILE_BYTES);
#pragma unroll
        for (int tp = 0; tp < 4; ++tp) {
#pragma unroll
          for (int j = 0; j < 4; ++j) wv[r][tp][j] = j < wc ? tw[(4 * g + tp) * wc + j] >> (4 * t) : 0u;
        }
      }
    }
    const __half* ss = reinterpret_cast<const __half*>(st + L::X + L::W);
    const __half* zs = reinterpret_cast<const __half*>(st + L::X + L::W + L::S);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j >= wc) break;
      const int gl = j >> spg_shift;
      const uint32_t sc0 = scale_pair<T>(ss[gl * BW + la]), sc1 = scale_pair<T>(ss[gl * BW + la + 8]);
      const uint32_t lo0 = SYM ? Magic<T>::SYM : Magic<T>::zero(zs[gl * BW + la]);
      const uint32_t lo1 = SYM ? Magic<T>::SYM : Magic<T>::zero(zs[gl * BW + la + 8]);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int ks = 2 * j + h;
        if (DIAG == 2) {
          fr[h][0] = wv[0][2 * h][j];
          fr[h][1] = wv[1][2 * h][j];
          fr[h][2] = wv[0][2 * h + 1][j];
          fr[h][3] = wv[1][2 * h + 1][j];
        } else {
          fr[h][0] = deq_pair<T>(wv[0][2 * h][j], lo0, sc0);
          fr[h][1] = deq_pair<T>(wv[1][2 * h][j], lo1, sc1);
          fr[h][2] = deq_pair<T>(wv[0][2 * h + 1][j], lo0, sc0);
          fr[h][3] = deq_pair<T>(wv[1][2 * h + 1][j], lo1, sc1);
        }
        tg::int4_ws::wgmma_fence();
        if (DIAG == 3) {
          fence_u32(fr[h]);
        } else {
          WgmmaRS<T, TN>::run(acc, fr[h], make_desc(xs + (ks >> 2) * L::XH + (ks & 3) * 32));
        }
        tg::int4_ws::wgmma_commit();
        tg::int4_ws::wgmma_wait<1>();  // the previous step's group is done: its fragments are free
        fence_u32(fr[h ^ 1]);
        if (ks == 0 && c > 0) {  // chunk c - 1 fully read
          if constexpr (CL > 1) {
            __syncwarp();
            if (lane < CL) mbar_arrive_cluster(empty_bar + 8 * ((c - 1) % STAGES), lane);
          } else {
            mbar_arrive(empty_bar + 8 * ((c - 1) % STAGES));
          }
        }
      }
    }
  }
  tg::int4_ws::wgmma_wait<0>();
  tg::int4_ws::fence_regs(acc);

  // ---------------- epilogue ----------------
  // acc + bias staged in f32, the activation applied by the (rolled) store loop, instantiated per
  // activation (`with_act`): a switch per accumulator made a ~120 KB epilogue whose instruction
  // fetches cost ~25% of the kernel at M=512 (ncu, base clocks: 121 vs 92 µs)
  named_sync(1, 256);  // every consumer is done with the ring: reuse it for staging
  float* stg = reinterpret_cast<float*>(smem) + cw * TN * EPI_STRIDE;
  const int nl0 = 16 * wq + g;  // warpgroup-local features of accumulator rows (i / 2) % 2 = 0 / 1: nl0, nl0 + 8
  const int nA = n0 + 64 * cw + nl0, nB = nA + 8;
  const float bA = bias != nullptr && nA < d.N ? tg::to_float<T>(bias[nA]) : 0.0f;
  const float bB = bias != nullptr && nB < d.N ? tg::to_float<T>(bias[nB]) : 0.0f;
#pragma unroll
  for (int i = 0; i < TN / 2; ++i) {
    const int r = (i >> 1) & 1, tok = 8 * (i >> 2) + 2 * t + (i & 1);
    stg[tok * EPI_STRIDE + nl0 + 8 * r] = acc[i] + (r ? bB : bA);
  }
  named_sync(2 + cw, 128);
  const int wn0 = n0 + 64 * cw, wtid = tid & 127;
  with_act(act, [&](auto a) { store_tile<decltype(a)::value, TN>(stg, y, d, t0, wn0, wtid); });
  if constexpr (CL > 1) {
    cluster_sync<false>();
  }
}

}  // namespace tg::int4_rs
