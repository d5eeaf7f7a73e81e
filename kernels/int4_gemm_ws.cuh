// Warp-specialized W4A16 GEMM for Hopper (sm_90a only): y[M, N] = x[M, K] . W^T, W in the packed
// INT4 format of int4_format.cuh. Both wgmma operands come from shared memory (SS), so the tensor
// cores never wait on the dequantization:
// - a block is PW + 2 warpgroups: warpgroups 0 .. PW - 1 produce, the last two consume;
// - the producer walks K in 64-wide stages through a STAGES-deep ring: per stage it cp.asyncs the
//   block's x tile [128 rows][64 k] into a 128-byte-swizzled A slot, per 128-wide format chunk the
//   packed weight tiles + scales (and zeros) into one of RAW raw slots, and LOOKAHEAD stages later
//   (once its cp.async groups of that stage have landed) dequantizes the stage's weights into a
//   128-byte-swizzled f16 / bf16 B slot [BN rows][64 k] ((q - z) * s rounded once to T, as the
//   other INT4 kernels), then fences the async proxy and arrives on the stage's `full` mbarrier;
// - consumer warpgroup w waits on `full`, issues the stage's wgmma.m64n<BN>k16 (A = x rows
//   64w .. 64w + 64, B = the dequantized weights, both K-major), commits, waits for the previous
//   stage's group (one group in flight) and releases that stage through its `empty` mbarrier.
// The format's word j of lane 4g + t is 8 consecutive k (32j + 8t ..) of row g of its tile, in pair
// order: WordDequant gives them as four pairs = one 16-byte store into the B slot, no shuffles.
// Rows past M read row M - 1 and are not stored; tiles past N re-read the last tile and columns
// past N are not stored; a K tail chunk (K % 128 != 0, 1..3 words per lane) has 1 or 2 stages
// whose k past K are zeros in both slots (every stage runs 4 k16 steps). f32 accumulators; the
// epilogue adds the bias and applies the activation in f32 before the one rounding to T (no K split).
//
// Status (harness-only as a kernel, timed by scripts/int4_tma_harness.cu until the 6th session, which
// removed that harness: see git history; its pieces serve kernels/int4_gemm_tma.cuh and int4_gemm_rs.cuh; benchmarks/int4.md, helper round 6): correct
// (f64 checks; memcheck and racecheck clean, the latter through a crate entry since removed), but on
// an H100 at K=4096 -> N=11008 only faster than int4_dequant + cuBLAS for one full wave (M=200 /
// 256: 73.5 / 75.8 against 86.3 / 87.7 us); M=512 143.6 against 106.6. The producer side limits
// it, not the tensor cores: without the wgmmas it takes 125-147 us at M=512, and without the
// dequantization (loads and signals only) 95-105; why the load pipeline is this slow is not yet
// profiled (benchmarks/int4.md lists the candidates).
#pragma once
#include "int4_format.cuh"

namespace tg::int4_ws {

using namespace tg::int4;

struct WsDims {
  int M, N, K, group_size;
};

constexpr int BM = 128;         // x rows per block (64 per consumer warpgroup)
constexpr int STAGE_K = 64;     // k per stage: one 128-byte swizzle row of f16
constexpr int TILE_BYTES = tg::WARP_SIZE * 16;  // one format tile of a full chunk
constexpr int MAX_GROUPS = CHUNK_K / 32;

__device__ __forceinline__ void ws_cp_async16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred P1;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
      "@!P1 bra WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
template <int PT> __device__ __forceinline__ void producer_sync() { asm volatile("bar.sync 1, %0;" ::"n"(PT) : "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }
template <int N> __device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
// K-major operand in 128-byte-swizzled shared memory: rows of 128 bytes, 8-row atoms 1024 bytes apart.
__device__ __forceinline__ uint64_t make_desc(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(16 >> 4) << 16) | (uint64_t(1024 >> 4) << 32) | (1ull << 62);
}
// Byte offset of 16-byte unit u (k 8u .. 8u + 8) of row r in a 128-byte-swizzled tile.
__device__ __forceinline__ uint32_t swz(int r, int u) { return r * 128 + ((u ^ (r & 7)) << 4); }

template <typename T> struct Pair;
template <> struct Pair<__half> { using type = __half2; };
template <> struct Pair<__nv_bfloat16> { using type = __nv_bfloat162; };
template <typename T> __device__ __forceinline__ uint32_t scale_pair(__half s);
template <> __device__ __forceinline__ uint32_t scale_pair<__half>(__half s) { return bits_of(__half2half2(s)); }
template <> __device__ __forceinline__ uint32_t scale_pair<__nv_bfloat16>(__half s) {
  return bits_of(__float2bfloat162_rn(__half2float(s)));
}

// D[64 x N] += A[64 x 16] . B[16 x N]^T, both operands K-major in shared memory (descriptors).
template <typename T, int N> struct WgmmaSS;
template <> struct WgmmaSS<__half, 128> {
  static __device__ __forceinline__ void run(float (&d)[64], uint64_t a, uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(1));
  }
};

template <> struct WgmmaSS<__half, 168> {
  static __device__ __forceinline__ void run(float (&d)[84], uint64_t a, uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %86, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n168k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83}, %84, %85, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83])
        : "l"(a), "l"(b), "r"(1));
  }
};

template <> struct WgmmaSS<__half, 192> {
  static __device__ __forceinline__ void run(float (&d)[96], uint64_t a, uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, %96, %97, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
        : "l"(a), "l"(b), "r"(1));
  }
};

template <> struct WgmmaSS<__half, 256> {
  static __device__ __forceinline__ void run(float (&d)[128], uint64_t a, uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(a), "l"(b), "r"(1));
  }
};

template <> struct WgmmaSS<__nv_bfloat16, 128> {
  static __device__ __forceinline__ void run(float (&d)[64], uint64_t a, uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(1));
  }
};

template <> struct WgmmaSS<__nv_bfloat16, 168> {
  static __device__ __forceinline__ void run(float (&d)[84], uint64_t a, uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %86, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n168k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83}, %84, %85, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83])
        : "l"(a), "l"(b), "r"(1));
  }
};

template <> struct WgmmaSS<__nv_bfloat16, 192> {
  static __device__ __forceinline__ void run(float (&d)[96], uint64_t a, uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, %96, %97, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
        : "l"(a), "l"(b), "r"(1));
  }
};

template <> struct WgmmaSS<__nv_bfloat16, 256> {
  static __device__ __forceinline__ void run(float (&d)[128], uint64_t a, uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(a), "l"(b), "r"(1));
  }
};

// Shared memory of one block: the A
// slots (x), the B slots (dequantized weights), the raw slots (packed tiles of a 128-wide chunk,
// then scales [group][BN] and zeros [group][BN]), the mbarriers; + 1024 bytes to align the atoms.
template <int BN, int STAGES, int RAW> struct WsSmem {
  static constexpr int A = BM * 128;
  static constexpr int B = BN * 128;
  static constexpr int RW = BN / TILE_N * TILE_BYTES;
  static constexpr int RS = MAX_GROUPS * BN * 2;
  static constexpr int R = RW + 2 * RS;
  static constexpr int A_OFF = 0, B_OFF = STAGES * A, R_OFF = B_OFF + STAGES * B, BAR_OFF = R_OFF + RAW * R;
  static constexpr int BYTES = BAR_OFF + 2 * STAGES * 8 + 1024;
  static_assert(A % 1024 == 0 && B % 1024 == 0, "swizzle atoms 1024-byte aligned");
  static_assert(BYTES <= 227 * 1024, "one block per SM");
};

// DIAG (harness-only diagnostics; 0 in the crate): 1 = the producer stores the packed words
// instead of dequantizing them, 2 = no weight stores at all, 3 = the consumers skip the wgmmas.
template <typename T, int BN, int STAGES, int RAW, int LOOKAHEAD, int PW, bool SYM, int DIAG = 0>
__device__ __forceinline__ void int4_gemm_ws(const T* __restrict__ x,              // [M, K]
                                             const uint32_t* __restrict__ packed,  // [ceil(N/8), K]
                                             const __half* __restrict__ scales,    // [K/G, N]
                                             const __half* __restrict__ zeros,     // [K/G, N] or null
                                             T* __restrict__ y,                    // [M, N]
                                             WsDims d,
                                             const T* __restrict__ bias = nullptr,  // [N] or null
                                             int act = (int)tg::Act::Identity) {
  using T2 = typename Pair<T>::type;
  using L = WsSmem<BN, STAGES, RAW>;
  constexpr int BT = BN / TILE_N, PT = 128 * PW;  // producer threads
  constexpr int ITEMS = (BT * 32 + PT - 1) / PT;  // a producer thread's weight pieces per chunk
  constexpr int XROWS = BM / (PT / 8);            // a producer thread's x rows per stage
  static_assert(PW == 1 || PW == 2, "one or two producer warpgroups");
  // the producer's step q waits for the consumers to release stage q - STAGES, which they do after
  // starting stage q - STAGES + 1, whose `full` the producer signals at step q - STAGES + 1 + LOOKAHEAD
  static_assert(LOOKAHEAD >= 1 && LOOKAHEAD <= STAGES - 2, "no deadlock: a stage is full before its slot is awaited");
  static_assert(2 * RAW >= 3 + LOOKAHEAD, "a raw slot is rewritten only after every producer thread has dequantized it");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw_s = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t sm = (raw_s + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (sm - raw_s);
  const uint32_t full_bar = sm + L::BAR_OFF, empty_bar = full_bar + STAGES * 8;

  const int tid = threadIdx.x, wg = tid / 128;
  const int m0 = blockIdx.x * BM, tile0 = blockIdx.y * BT;
  const int n_tiles = tg::ceil_div(d.N, TILE_N), n_chunks = tg::ceil_div(d.K, CHUNK_K);
  const int n_stages = 2 * (n_chunks - 1) + (chunk_words(d.K, n_chunks - 1) + 1) / 2;
  const int spg_shift = d.group_size == 32 ? 0 : d.group_size == 64 ? 1 : 2;  // log2(G / 32)

  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full_bar + 8 * s, PT);
      mbar_init(empty_bar + 8 * s, 256);
    }
  }
  __syncthreads();

  if (wg < PW) {
    // ---------------- producer ----------------
    const int ptid = tid;
    const int groups_per_chunk = MAX_GROUPS >> spg_shift;
    const bool scales_async = d.N % 8 == 0 && (reinterpret_cast<uintptr_t>(scales) & 15) == 0 &&
                              (SYM || (reinterpret_cast<uintptr_t>(zeros) & 15) == 0);
    const int n0 = tile0 * TILE_N;
    // x: a thread copies unit xu of rows xr0 + (PT / 8) i
    const int xu = ptid & 7, xr0 = ptid >> 3;
    const T* x_row[XROWS];
#pragma unroll
    for (int i = 0; i < XROWS; ++i) x_row[i] = x + (int64_t)min(m0 + xr0 + (PT / 8) * i, d.M - 1) * d.K + xu * 8;
    // weight piece r of a thread: tile ptid / 32 + (PT / 32) r, lane ptid % 32 of the tile (as
    // loaded: piece = 16 bytes at lane * 16; as dequantized: format lane 4g + t, g paired with
    // g ^ 4 in each 8-lane phase, so the 16-byte stores of a phase hit 8 different swizzled units)
    const int pl = ptid & 31, pt_ = pl & 3, pg = ((pl >> 2) & 1) * 4 + (pl >> 3), dl = 4 * pg + pt_;
    const uint32_t* w_row[ITEMS];
#pragma unroll
    for (int r = 0; r < ITEMS; ++r) w_row[r] = packed + (int64_t)min(tile0 + ptid / 32 + (PT / 32) * r, n_tiles - 1) * d.K + pl * 4;
    auto issue = [&](int q) {
      const int s = q % STAGES, c = q >> 1, h = q & 1;
      const uint32_t xa = sm + L::A_OFF + s * L::A;
      const int units = min(8, (d.K - q * STAGE_K) / 8);
#pragma unroll
      for (int i = 0; i < XROWS; ++i) {
        const int r = xr0 + (PT / 8) * i;
        if (xu < units) {
          ws_cp_async16(xa + swz(r, xu), x_row[i] + q * STAGE_K);
        } else {  // past K (tail stage): zeros, so that every stage runs 4 k16 steps
          *reinterpret_cast<uint4*>(smem + L::A_OFF + s * L::A + swz(r, xu)) = make_uint4(0, 0, 0, 0);
        }
      }
      if (h == 0) {
        const int wc = chunk_words(d.K, c);
        const uint32_t rb = sm + L::R_OFF + (c % RAW) * L::R;
#pragma unroll
        for (int r = 0; r < ITEMS; ++r) {
          const int e = ptid + PT * r;
          if ((BT * 32 % PT == 0 || e < BT * 32) && pl < 8 * wc) ws_cp_async16(rb + e * 16, w_row[r] + c * CHUNK_K);
        }
        const int gc = min(groups_per_chunk, (d.K - c * CHUNK_K) / d.group_size), grp = c * groups_per_chunk;
        if (scales_async) {
          for (int e = ptid; e < gc * BT; e += PT) {
            const int gl = e / BT, n = n0 + (e % BT) * 8;
            if (n < d.N) {
              const uint32_t o = rb + L::RW + (gl * BN + n - n0) * 2;
              const int64_t si = (int64_t)(grp + gl) * d.N + n;
              ws_cp_async16(o, scales + si);
              if (!SYM) ws_cp_async16(o + L::RS, zeros + si);
            }
          }
        } else {
          __half* ss = reinterpret_cast<__half*>(smem + L::R_OFF + (c % RAW) * L::R + L::RW);
          for (int e = ptid; e < gc * BN; e += PT) {
            const int gl = e / BN, n = n0 + e % BN;
            const int64_t si = (int64_t)(grp + gl) * d.N + n;
            ss[e] = n < d.N ? scales[si] : __float2half(0.0f);
            if (!SYM) ss[MAX_GROUPS * BN + e] = n < d.N ? zeros[si] : __float2half(0.0f);
          }
        }
      }
    };
    auto dequant = [&](int q) {
      if (DIAG == 2) return;
      const int s = q % STAGES, c = q >> 1, h = q & 1;
      const int wc = chunk_words(d.K, c), nw = min(2, wc - 2 * h);
      const unsigned char* rb = smem + L::R_OFF + (c % RAW) * L::R;
      const __half* ss = reinterpret_cast<const __half*>(rb + L::RW);
      unsigned char* bs = smem + L::B_OFF + s * L::B;
      const int gl0 = (2 * h) >> spg_shift, gl1 = (2 * h + 1) >> spg_shift;
#pragma unroll
      for (int r = 0; r < ITEMS; ++r) {
        const int i = ptid / 32 + (PT / 32) * r, n = 8 * i + pg;
        if (BT * 32 % PT != 0 && i >= BT) break;
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
          if (DIAG == 1) {
            *reinterpret_cast<uint4*>(bs + swz(n, 4 * jj + pt_)) = make_uint4(w[jj], w[jj] >> 1, w[jj] >> 2, w[jj] >> 3);
            continue;
          }
          const int gl = jj ? gl1 : gl0;
          WordDequant<T> dq;
          if (SYM) {
            dq = WordDequant<T>::symmetric();
          } else {
            dq = WordDequant<T>::zero_point(__half2half2(ss[(MAX_GROUPS + gl) * BN + n]));
          }
          uint32_t p[4];
          dq.word(w[jj], p);
          const T2 sc = as_h2<T2>(scale_pair<T>(ss[gl * BN + n]));
#pragma unroll
          for (int k = 0; k < 4; ++k) p[k] = bits_of(__hmul2(as_h2<T2>(p[k]), sc));
          *reinterpret_cast<uint4*>(bs + swz(n, 4 * jj + pt_)) = make_uint4(p[0], p[1], p[2], p[3]);
        }
      }
    };
    for (int q = 0; q < n_stages + LOOKAHEAD; ++q) {
      if (q < n_stages) {
        if (q >= STAGES) mbar_wait(empty_bar + 8 * (q % STAGES), ((q / STAGES) + 1) & 1);
        issue(q);
      }
      cp_async_commit();
      const int qd = q - LOOKAHEAD;
      if (qd >= 0) {
        cp_async_wait<LOOKAHEAD>();
        producer_sync<PT>();
        dequant(qd);
        fence_proxy_async();
        mbar_arrive(full_bar + 8 * (qd % STAGES));
      }
    }
    cp_async_wait<0>();
  } else {
    // ---------------- consumers ----------------
    const int cw = wg - PW, lane = tid % 32, warp = (tid / 32) % 4;
    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.0f;
    for (int q = 0; q < n_stages; ++q) {
      const int s = q % STAGES;
      mbar_wait(full_bar + 8 * s, (q / STAGES) & 1);
      const uint32_t xa = sm + L::A_OFF + s * L::A + cw * 64 * 128, wb = sm + L::B_OFF + s * L::B;
      fence_regs(acc);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < STAGE_K / 16; ++kk) {
        if (DIAG != 3) WgmmaSS<T, BN>::run(acc, make_desc(xa + kk * 32), make_desc(wb + kk * 32));
      }
      wgmma_commit();
      wgmma_wait<1>();
      fence_regs(acc);
      if (q > 0) mbar_arrive(empty_bar + 8 * ((q - 1) % STAGES));
    }
    wgmma_wait<0>();
    fence_regs(acc);
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

}  // namespace tg::int4_ws
