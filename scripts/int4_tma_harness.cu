// Standalone harness for the TMA warp-specialized Hopper W4A16 GEMM (kernels/int4_gemm_tma.cuh: the
// copy engine loads x, packed tiles and scales; producer warps dequantize into shared memory;
// consumer warpgroups run SS wgmma), next to round 6's cp.async version (kernels/int4_gemm_ws.cuh).
// It replaces the round-2 and round-6 harnesses (int4_wgmma_harness.cu, int4_ws_harness.cu; in git
// history before the 5th session's cleanup) and times their kernels too. Correctness against an f64 CPU reference (f16 / bf16, sym / asym, group sizes 32 / 64 /
// 128, M and N not multiples of the block, N odd and N % 8 != 0, K with tail chunks), then
// kernel-only timing (CUDA events) next to cuBLAS f16 GemmEx on the dense weight, int4_dequant +
// cuBLAS (the crate's path for M > 192), the crate's mma.sync GEMM (int4_gemm_tc m64n128) and the
// round-2 register-A wgmma GEMM (kernels/int4_gemm_sm90.cuh). `harness quick`: three small shapes,
// no timing (for compute-sanitizer). Build:
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -Ikernels -o int4_tma_harness scripts/int4_tma_harness.cu
#define INT4_TC_NO_ENTRIES
#include "int4_gemm_sm90.cuh"
#include "int4_gemm_ws.cuh"
#include "int4_gemm_tma.cuh"
#include <cuda.h>
#include "int4_gemm.cu"
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cmath>
#include <random>
#include <thread>
#include <dlfcn.h>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

template <typename T, int BM, int BN, int WM, int WN, int ST, bool SYM>
__global__ void __launch_bounds__(WM * WN * 32, 1) ktc(const T* x, const uint32_t* p, const __half* s, const __half* z, T* y, float* part, TcDims d) {
  tg::int4_tc::int4_gemm_tc<T, BM, BN, WM, WN, ST, SYM>(x, p, s, z, y, part, d);
}
typedef void (*KFn)(const void*, const uint32_t*, const __half*, const __half*, void*, float*, TcDims);
struct Var { const char* name; KFn f[2][2]; int bm, bn, threads, smem, per_sm; };  // f[bf16][asym]
#define V(BM, BN, WM, WN, ST, PER_SM) {"m" #BM "n" #BN "w" #WM "x" #WN "s" #ST, \
  {{(KFn)ktc<__half, BM, BN, WM, WN, ST, true>, (KFn)ktc<__half, BM, BN, WM, WN, ST, false>}, \
   {(KFn)ktc<__nv_bfloat16, BM, BN, WM, WN, ST, true>, (KFn)ktc<__nv_bfloat16, BM, BN, WM, WN, ST, false>}}, \
  BM, BN, WM * WN * 32, tg::int4_tc::TcSmem<BM, BN, ST>::BYTES, PER_SM}
// 0, 1: the crate's variants (src/quant/launch.rs)
static Var VARS[] = {
  V(64, 128, 1, 4, 4, 2),
};
template <typename T, int WG, int BX, int ST, bool SYM>
__global__ void __launch_bounds__(WG * 128, 1) ksm90(const T* x, const uint32_t* p, const __half* s, const __half* z, T* y, float*, TcDims d) {
  tg::int4_sm90::int4_gemm_sm90<T, WG, BX, ST, SYM>(x, p, s, z, y, d);
}
// wgmma variants: bm = BX (activation rows), bn = 64 WG (weight rows); never split
#define W(WG, BX, ST) {"wg" #WG "x" #BX "s" #ST, \
  {{(KFn)ksm90<__half, WG, BX, ST, true>, (KFn)ksm90<__half, WG, BX, ST, false>}, \
   {(KFn)ksm90<__nv_bfloat16, WG, BX, ST, true>, (KFn)ksm90<__nv_bfloat16, WG, BX, ST, false>}}, \
  BX, 64 * WG, WG * 128, tg::int4_sm90::Sm90Smem<WG, BX, ST>::BYTES, 0}
static Var WVARS[] = {
  W(2, 128, 4),
};
constexpr int NW = sizeof(WVARS) / sizeof(WVARS[0]);
template <typename T, int BN, int ST, int RAW, int LA, int PW, bool SYM, int DIAG = 0>
__global__ void __launch_bounds__(128 * (PW + 2), 1) kws(const T* x, const uint32_t* p, const __half* s, const __half* z, T* y, float*, TcDims d) {
  tg::int4_ws::int4_gemm_ws<T, BN, ST, RAW, LA, PW, SYM, DIAG>(x, p, s, z, y, tg::int4_ws::WsDims{d.M, d.N, d.K, d.group_size});
}
// warp-specialized variants: bm = 128 x rows, bn = BN weight rows; never split
#define WS(BN, ST, RAW, LA, PW) {"ws" #BN "s" #ST "r" #RAW "l" #LA "p" #PW, \
  {{(KFn)kws<__half, BN, ST, RAW, LA, PW, true>, (KFn)kws<__half, BN, ST, RAW, LA, PW, false>}, \
   {(KFn)kws<__nv_bfloat16, BN, ST, RAW, LA, PW, true>, (KFn)kws<__nv_bfloat16, BN, ST, RAW, LA, PW, false>}}, \
  128, BN, 128 * (PW + 2), tg::int4_ws::WsSmem<BN, ST, RAW>::BYTES, 0}
static Var SVARS[] = {
  WS(168, 4, 3, 2, 2), WS(168, 5, 3, 3, 2),
};
constexpr int NS = sizeof(SVARS) / sizeof(SVARS[0]);
// diagnostics (timing only, wrong results): 1 = no dequantization math, 2 = no weight stores, 3 = no wgmma
#define WSD(BN, ST, RAW, LA, PW, DG) {"ws" #BN "s" #ST "r" #RAW "l" #LA "p" #PW "-diag" #DG, \
  {{(KFn)kws<__half, BN, ST, RAW, LA, PW, true, DG>, (KFn)kws<__half, BN, ST, RAW, LA, PW, false, DG>}, \
   {(KFn)kws<__nv_bfloat16, BN, ST, RAW, LA, PW, true, DG>, (KFn)kws<__nv_bfloat16, BN, ST, RAW, LA, PW, false, DG>}}, \
  128, BN, 128 * (PW + 2), tg::int4_ws::WsSmem<BN, ST, RAW>::BYTES, 0}
static Var DVARS[] = {
  WSD(168, 4, 3, 2, 2, 2),
};
constexpr int ND = sizeof(DVARS) / sizeof(DVARS[0]);
#include "int4_harness_common.cuh"  // the shared body (needs Var, VARS, CK above)

// ---- TMA variants (kernels/int4_gemm_tma.cuh) ----------------------------------------------------
using tg::int4_tma::TmaMaps;
using tg::int4_ws::WsDims;
template <typename T, int BN, int CW, int ST, int RAW, int PW, bool SYM, int RP, int RC, int DIAG, bool EARLY = false>
__global__ void __launch_bounds__(128 * (CW + PW), 1) ktma(const __grid_constant__ TmaMaps maps, T* y, WsDims d) {
  tg::int4_tma::int4_gemm_tma<T, BN, CW, ST, RAW, PW, SYM, RP, RC, DIAG, EARLY>(maps, y, d);
}
typedef void (*TFn)(TmaMaps, void*, WsDims);
struct TVar { const char* name; TFn f[2][2]; int bm, bn, threads, smem; };
#define TV(BN, CW, ST, RAW, PW, RP, RC, DG, NAME) {NAME, \
  {{(TFn)ktma<__half, BN, CW, ST, RAW, PW, true, RP, RC, DG>, (TFn)ktma<__half, BN, CW, ST, RAW, PW, false, RP, RC, DG>}, \
   {(TFn)ktma<__nv_bfloat16, BN, CW, ST, RAW, PW, true, RP, RC, DG>, (TFn)ktma<__nv_bfloat16, BN, CW, ST, RAW, PW, false, RP, RC, DG>}}, \
  64 * CW, BN, 128 * (CW + PW), tg::int4_tma::TmaSmem<BN, CW, ST, RAW>::BYTES}
#define T0(BN, CW, ST, RAW, PW, RP, RC) TV(BN, CW, ST, RAW, PW, RP, RC, 0, "t" #BN "c" #CW "s" #ST "r" #RAW "p" #PW)
#define TE(BN, CW, ST, RAW, PW) {"t" #BN "c" #CW "s" #ST "r" #RAW "p" #PW "e", \
  {{(TFn)ktma<__half, BN, CW, ST, RAW, PW, true, 0, 0, 0, true>, (TFn)ktma<__half, BN, CW, ST, RAW, PW, false, 0, 0, 0, true>}, \
   {(TFn)ktma<__nv_bfloat16, BN, CW, ST, RAW, PW, true, 0, 0, 0, true>, (TFn)ktma<__nv_bfloat16, BN, CW, ST, RAW, PW, false, 0, 0, 0, true>}}, \
  64 * CW, BN, 128 * (CW + PW), tg::int4_tma::TmaSmem<BN, CW, ST, RAW>::BYTES}
static TVar TVARS[] = {
  T0(168, 2, 4, 3, 1, 0, 0), T0(168, 2, 5, 3, 1, 0, 0), T0(168, 2, 4, 3, 2, 0, 0), T0(168, 2, 5, 3, 2, 0, 0),
  T0(128, 2, 5, 3, 1, 0, 0), T0(128, 2, 5, 3, 2, 0, 0),
  T0(128, 4, 4, 3, 1, 0, 0), TE(168, 2, 4, 3, 2), TE(168, 2, 5, 3, 2),
};
constexpr int NT = sizeof(TVARS) / sizeof(TVARS[0]);
static TVar TDVARS[] = {
  TV(168, 2, 4, 3, 2, 0, 0, 2, "t168c2s4r3p2-diag2"), TV(168, 2, 4, 3, 2, 0, 0, 3, "t168c2s4r3p2-diag3"),
  TV(168, 2, 4, 3, 1, 0, 0, 2, "t168c2s4r3p1-diag2"), TV(168, 2, 4, 3, 1, 0, 0, 3, "t168c2s4r3p1-diag3"),
};
constexpr int NTD = sizeof(TDVARS) / sizeof(TDVARS[0]);

typedef CUresult (*EncodeTiled)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static EncodeTiled encode_tiled() {
  static EncodeTiled f = nullptr;
  if (f == nullptr) {
    cudaDriverEntryPointQueryResult q;
    CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", reinterpret_cast<void**>(&f), 12000, cudaEnableDefault, &q));
    if (q != cudaDriverEntryPointSuccess || f == nullptr) { printf("cuTensorMapEncodeTiled not found\n"); exit(1); }
  }
  return f;
}
// 2-D map: dims {d0 (contiguous), d1}, row stride `stride` bytes, box {b0, b1}
static bool map2d(tg::int4_tma::TmaDesc* out, const void* ptr, CUtensorMapDataType ty, uint64_t d0, uint64_t d1, uint64_t stride,
                  uint32_t b0, uint32_t b1, CUtensorMapSwizzle sw) {
  CUtensorMap m;
  const cuuint64_t dims[2] = {d0, d1}, strides[1] = {stride};
  const cuuint32_t box[2] = {b0, b1}, elem[2] = {1, 1};
  CUresult r = encode_tiled()(&m, ty, 2, const_cast<void*>(ptr), dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, sw,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) { printf("    cuTensorMapEncodeTiled refused (%d): dims %lu x %lu stride %lu box %u x %u\n", (int)r, d0, d1, stride, b0, b1); return false; }
  memcpy(out, &m, sizeof(m));
  return true;
}
static bool make_maps(Prob& P, const TVar& v, int bf, int copy, TmaMaps* m) {
  int tiles = (P.N + 7) / 8;
  return map2d(&m->x, P.x[bf], CU_TENSOR_MAP_DATA_TYPE_UINT16, P.K, P.M, (uint64_t)P.K * 2, 64, v.bm, CU_TENSOR_MAP_SWIZZLE_128B) &&
         map2d(&m->w, P.p[copy], CU_TENSOR_MAP_DATA_TYPE_UINT32, P.K, tiles, (uint64_t)P.K * 4, 128, v.bn / 8, CU_TENSOR_MAP_SWIZZLE_NONE) &&
         map2d(&m->s, P.s, CU_TENSOR_MAP_DATA_TYPE_UINT16, P.N, P.K / P.G, (uint64_t)P.N * 2, v.bn, 128 / P.G, CU_TENSOR_MAP_SWIZZLE_NONE) &&
         map2d(&m->z, P.z, CU_TENSOR_MAP_DATA_TYPE_UINT16, P.N, P.K / P.G, (uint64_t)P.N * 2, v.bn, 128 / P.G, CU_TENSOR_MAP_SWIZZLE_NONE);
}
static void tlaunch(Prob& P, const TVar& v, int bf, int asym, const TmaMaps& m) {
  dim3 grid((P.M + v.bm - 1) / v.bm, ((P.N + 7) / 8 + v.bn / 8 - 1) / (v.bn / 8));
  v.f[bf][asym]<<<grid, v.threads, v.smem>>>(m, P.y, WsDims{P.M, P.N, P.K, P.G});
}
// -1: maps refused (skipped), 0: fail, 1: pass
static int tcheck(Prob& P, const TVar& v, int bf, int asym, const std::vector<double>& want, const std::vector<double>& size) {
  TmaMaps m;
  if (!make_maps(P, v, bf, 0, &m)) return -1;
  CK(cudaMemset(P.y, 0xff, (size_t)P.M * P.N * 2));
  tlaunch(P, v, bf, asym, m);
  CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  std::vector<uint16_t> hy((size_t)P.M * P.N);
  CK(cudaMemcpy(hy.data(), P.y, hy.size() * 2, cudaMemcpyDeviceToHost));
  double cacc = bf ? 8e-3 : 1.2e-3, cout = bf ? 8e-3 : 1e-3;
  long bad = 0; double worst = 0; int wm = -1, wn = -1;
  for (int mm = 0; mm < P.M; ++mm) for (int n = 0; n < P.N; ++n) {
    size_t i = (size_t)mm * P.N + n;
    __half h; memcpy(&h, &hy[i], 2);
    double got = bf ? bf2f(hy[i]) : __half2float(h);
    double tol = cacc * size[i] + cout * fabs(want[i]) + 1e-30;
    double r = fabs(got - want[i]) / tol;
    if (!(r <= 1)) { if (bad++ < 3) printf("    (%d,%d) got %g want %g tol %g\n", mm, n, got, want[i], tol); }
    if (r > worst || std::isnan(r)) { worst = std::isnan(r) ? 1e9 : r; wm = mm; wn = n; }
  }
  if (bad) printf("FAIL %s %s %s M=%d N=%d K=%d G=%d: %ld bad, worst %.3g at (%d,%d)\n", v.name, bf ? "bf16" : "f16", asym ? "asym" : "sym", P.M, P.N, P.K, P.G, bad, worst, wm, wn);
  return bad == 0;
}
static float ttimeit(Prob& P, const TVar& v, int bf, int asym, int iters) {
  TmaMaps m[2];
  if (!make_maps(P, v, bf, 0, &m[0]) || !make_maps(P, v, bf, 1, &m[1])) return -1;
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  for (int i = 0; i < 5; ++i) tlaunch(P, v, bf, asym, m[i % 2]);
  CK(cudaEventRecord(a));
  for (int i = 0; i < iters; ++i) tlaunch(P, v, bf, asym, m[i % 2]);
  CK(cudaEventRecord(b)); CK(cudaEventSynchronize(b)); CK(cudaGetLastError());
  float ms; CK(cudaEventElapsedTime(&ms, a, b));
  return ms * 1000.0f / iters;
}

int main(int argc, char** argv) {
  cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
  printf("device %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.major, prop.minor);
  g_sms = prop.multiProcessorCount;
  const bool quick = argc > 1;  // sanitizer mode: four small shapes, TMA variants only, no timing
  for (Var* vs : {VARS, WVARS, SVARS, DVARS}) for (int vi = 0; vi < (vs == VARS ? NV : vs == WVARS ? NW : vs == SVARS ? NS : ND); ++vi) {
    Var& v = vs[vi];
    for (auto& a : v.f) for (auto f : a) {
      CK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem));
      cudaFuncAttributes at; CK(cudaFuncGetAttributes(&at, f));
      if (f == v.f[0][0]) printf("%-22s regs %d local %zu smem %d\n", v.name, at.numRegs, at.localSizeBytes, v.smem);
    }
  }
  for (TVar* vs : {TVARS, TDVARS}) for (int vi = 0; vi < (vs == TVARS ? NT : NTD); ++vi) {
    TVar& v = vs[vi];
    for (auto& a : v.f) for (auto f : a) {
      CK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem));
      cudaFuncAttributes at; CK(cudaFuncGetAttributes(&at, f));
      if (f == v.f[0][0]) printf("%-22s regs %d local %zu smem %d threads %d\n", v.name, at.numRegs, at.localSizeBytes, v.smem, v.threads);
    }
  }
  fflush(stdout);
  cublas_init();
  int bad = 0, skipped = 0, passed = 0;
  // N % 8 == 0 everywhere (the tensor maps' scale rows need 16-byte strides); M, N off the blocks,
  // K tails of 1, 2, 3 words (K = 32, 4160, 4192, 96), group sizes 32 / 64 / 128
  struct S { int M, N, K, G; } shapes[] = {
    {17, 8, 32, 32}, {33, 16, 96, 32}, {100, 104, 832, 64}, {129, 264, 384, 128}, {200, 1000, 4160, 64},
    {512, 136, 4192, 32}, {1023, 72, 640, 64}, {300, 1000, 1024, 128}, {256, 512, 4096, 128},
    {130, 1352, 2080, 32}, {64, 2000, 96, 32}, {1, 8, 4096, 128}, {257, 2704, 4096, 128}, {511, 344, 256, 128},
  };
  int si = 0;
  for (auto& s : shapes) {
    if (quick && si >= 4) break;
    Prob P; make(P, s.M, s.N, s.K, s.G, 1);
    for (int bf = 0; bf < 2; ++bf) for (int asym = 0; asym < 2; ++asym) {
      std::vector<double> want, size; reference(P, bf, asym, want, size);
      if (!quick && si < 3) for (int vi = 0; vi < NS; ++vi) bad += !check(P, SVARS[vi], bf, asym, want, size, 1);
      for (int vi = 0; vi < NT; ++vi) {
        int r = tcheck(P, TVARS[vi], bf, asym, want, size);
        if (r < 0) ++skipped; else if (r == 0) ++bad; else ++passed;
      }
    }
    release(P);
    printf("  checked M=%d N=%d K=%d G=%d (%d failures, %d passes, %d skipped so far)\n", s.M, s.N, s.K, s.G, bad, passed, skipped);
    fflush(stdout);
    ++si;
  }
  printf("correctness: %s (%d failures, %d TMA checks passed, %d skipped)\n", bad ? "FAILED" : "all pass", bad, passed, skipped);
  fflush(stdout);
  if (quick) return bad ? 1 : 0;
  auto dequant_us = [&](Prob& P, int iters) {
    if (!P.deq) CK(cudaMalloc(&P.deq, (size_t)P.N * P.K * 2));
    GemmDims d{0, P.N, P.K, P.G, 0};
    int64_t runs = (int64_t)P.N * P.K / 8; int blocks = (int)std::min<int64_t>((runs + 255) / 256, 1024);
    cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
    kdequant_h<<<blocks, 256>>>(P.p[0], P.s, nullptr, P.deq, d);
    CK(cudaEventRecord(a)); for (int i = 0; i < iters; ++i) kdequant_h<<<blocks, 256>>>(P.p[i % 2], P.s, nullptr, P.deq, d);
    CK(cudaEventRecord(b)); CK(cudaEventSynchronize(b)); float ms; CK(cudaEventElapsedTime(&ms, a, b));
    return ms * 1000.0f / iters;
  };
  struct T { int K, N, M; } tshapes[] = {
    {4096, 11008, 512}, {4096, 11008, 256}, {4096, 11008, 384}, {4096, 11008, 1024}, {4096, 11008, 128},
    {11008, 4096, 512}, {4096, 4096, 512},
  };
  for (auto& ts : tshapes) {
    Prob P; make(P, ts.M, ts.N, ts.K, 128, 2);
    int iters = 50;
    float cub = time_cublas(ts.M, ts.N, ts.K, 0, iters), dq = dequant_us(P, iters);
    int sp = rule_splits(VARS[0], ts.M, ts.N, ts.K);
    printf("--- K=%d N=%d M=%d  cublas %.2f dequant %.2f dequant+cublas %.2f | tc %s split%d %.2f\n   ws:", ts.K, ts.N, ts.M, cub, dq,
           cub + dq, VARS[0].name, sp, timeit(P, VARS[0], 0, 0, iters, sp));
    for (int vi = 0; vi < NS; ++vi) printf(" %s %.2f", SVARS[vi].name, timeit(P, SVARS[vi], 0, 0, iters, 1));
    printf("\n   tma:");
    for (int vi = 0; vi < NT; ++vi) printf(" %s %.2f", TVARS[vi].name, ttimeit(P, TVARS[vi], 0, 0, iters));
    printf("\n   tma again:");
    for (int vi = 0; vi < NT; ++vi) printf(" %s %.2f", TVARS[vi].name, ttimeit(P, TVARS[vi], 0, 0, iters));
    printf("\n   cublas again %.2f dequant again %.2f\n", time_cublas(ts.M, ts.N, ts.K, 0, iters), dequant_us(P, iters));
    if (ts.M == 512 && ts.K == 4096 && ts.N == 11008) {
      printf("   diagnostics (wrong results; diag2 = loads + wgmma, diag3 = loads + dequant):");
      for (int vi = 0; vi < ND; ++vi) printf(" %s %.2f", DVARS[vi].name, timeit(P, DVARS[vi], 0, 0, iters, 1));
      for (int vi = 0; vi < NTD; ++vi) printf(" %s %.2f", TDVARS[vi].name, ttimeit(P, TDVARS[vi], 0, 0, iters));
      printf("\n");
      for (int vi = 0; vi < NT; ++vi)
        printf("    %s bf16 %.2f asym %.2f bf16asym %.2f\n", TVARS[vi].name, ttimeit(P, TVARS[vi], 1, 0, iters),
               ttimeit(P, TVARS[vi], 0, 1, iters), ttimeit(P, TVARS[vi], 1, 1, iters));
    }
    fflush(stdout);
    release(P);
  }
  return bad ? 1 : 0;
}
