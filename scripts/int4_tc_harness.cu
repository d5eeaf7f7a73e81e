// Standalone harness for int4_gemm_tc (kernels/int4_gemm_tc.cu): correctness of every variant
// (f16 / bf16, sym / asym, group sizes 32 / 64 / 128, 1, 3 and the chosen K splits) against an f64
// CPU reference, then kernel-only timing (CUDA events) next to int4_dequant + cuBLAS f16 GemmEx
// (dlopen'ed: no link-time dependency) on the same shapes. `harness quick`: three small shapes,
// no timing (for compute-sanitizer). Build (no GPU needed):
//   nvcc -O3 -std=c++17 -arch=sm_90a -Ikernels -L$CUDA_ROOT/lib -o int4_tc_harness scripts/int4_tc_harness.cu
#define INT4_TC_NO_ENTRIES
#include "int4_gemm_tc.cu"
#include "int4_gemm.cu"  // int4_reduce / int4_dequant entries (the old large-M path, split-K reduce)
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cmath>
#include <random>
#include <thread>
#include <dlfcn.h>

#include "int4_harness_tc.cuh"  // CK, ktc, Var, V

// 0, 1: the crate's variants (src/quant/launch.rs)
static Var VARS[] = {
  V(32, 128, 1, 4, 4, 3), V(64, 128, 1, 4, 4, 2), V(128, 128, 2, 4, 4, 1), V(64, 128, 1, 4, 3, 2),
};
#include "int4_harness_common.cuh"  // the shared body (needs Var, VARS, CK above)

int main(int argc, char** argv) {
  cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
  printf("device %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  g_sms = prop.multiProcessorCount;
  for (auto& v : VARS) for (auto& a : v.f) for (auto f : a) {
    CK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem));
    cudaFuncAttributes at; CK(cudaFuncGetAttributes(&at, f));
    if (f == v.f[0][0]) printf("%-16s regs %d local %zu smem %d\n", v.name, at.numRegs, at.localSizeBytes, v.smem);
  }
  cublas_init();
  int bad = 0;
  // correctness: (M, N, K, G); every variant f16 sym, variants 0/2/4 every dtype x sym
  struct S { int M, N, K, G; } shapes[] = {
    {17, 9, 32, 32}, {33, 17, 96, 32}, {100, 100, 832, 64}, {129, 264, 384, 128}, {200, 1001, 4160, 64},
    {512, 136, 4192, 32}, {1023, 72, 640, 64}, {65, 1000, 1024, 128}, {17, 250, 4096, 128},
  };
  const bool quick = argc > 1;  // sanitizer mode: three small shapes, no timing
  int si = 0;
  for (auto& s : shapes) {
    if (quick && si++ >= 3) break;
    Prob P; make(P, s.M, s.N, s.K, s.G, 1);
    for (int bf = 0; bf < 2; ++bf) for (int asym = 0; asym < 2; ++asym) {
      std::vector<double> want, size; reference(P, bf, asym, want, size);
      for (int vi = 0; vi < NV; ++vi) {
        if ((bf || asym) && vi > 1) continue;
        for (int sp : {1, 3, rule_splits(VARS[vi], P.M, P.N, P.K)}) bad += !check(P, VARS[vi], bf, asym, want, size, sp);
      }
    }
    release(P);
  }
  printf("correctness: %s (%d failures)\n", bad ? "FAILED" : "all pass", bad);
  fflush(stdout);
  if (quick) return bad ? 1 : 0;
  // timing: kernel-only us; "old" = int4_dequant + cuBLAS (the path for M > 16 before)
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
  struct T { int K, N; } tshapes[] = {{4096, 11008}, {11008, 4096}, {4096, 4096}, {2048, 2048}};
  for (auto& ts : tshapes) {
    static const int big[] = {17, 32, 64, 128, 192, 256, 384, 512, 1024, 0}, small[] = {17, 32, 64, 128, 256, 512, 0};
    const int* ms = ts.N == 11008 ? big : small;
    for (int i = 0; ms[i]; ++i) {
      int M = ms[i];
      Prob P; make(P, M, ts.N, ts.K, 128, 2);
      int iters = 30;
      float cub = time_cublas(M, ts.N, ts.K, 0, iters), dq = dequant_us(P, iters);
      printf("--- K=%d N=%d M=%d  cublas %.2f dequant %.2f old %.2f |", ts.K, ts.N, M, cub, dq, cub + dq);
      for (int vi = 0; vi < NV; ++vi) {
        int sp = rule_splits(VARS[vi], M, ts.N, ts.K);
        printf(" %s %.2f", VARS[vi].name, timeit(P, VARS[vi], 0, 0, iters, 1));
        if (sp > 1) printf(" (split%d %.2f)", sp, timeit(P, VARS[vi], 0, 0, iters, sp));
      }
      printf("\n");
      if (ts.N == 11008 && (M == 64 || M == 512 || M == 128)) {
        for (int vi : {0, 1}) {
          int sp = rule_splits(VARS[vi], M, ts.N, ts.K);
          printf("    %s split%d bf16 %.2f asym %.2f bf16asym %.2f\n", VARS[vi].name, sp, timeit(P, VARS[vi], 1, 0, iters, sp), timeit(P, VARS[vi], 0, 1, iters, sp), timeit(P, VARS[vi], 1, 1, iters, sp));
        }
      }
      fflush(stdout);
      release(P);
    }
  }
  return bad ? 1 : 0;
}
