// Standalone harness: INT4 large-M matmul as "dequantize + cuBLAS" (the crate's path above
// CUDA_TC_MAX_M rows) run serially against the same work split into S weight slabs, each slab
// dequantized on a second stream into one of NBUF rotating scratch buffers while cuBLAS multiplies
// the previous slab on the first stream (the memory-bound dequantization hides under the
// compute-bound GEMM). Checks first: every slab's dequantization equals the full one's rows bit for
// bit, and the slabbed output matches the serial one (f16, relative to the output's scale).
// Build (cuBLAS is dlopen'ed):
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -Ikernels -L$CUDA_ROOT/lib \
//        -o int4_overlap_harness scripts/int4_overlap_harness.cu
//   ./int4_overlap_harness            (on the GPU host)
#include "int4_gemm.cu"
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <random>
#include <vector>
#include <dlfcn.h>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

// int4_dequant of rows [n0, n0 + rows) of an [N, K] weight into out [rows, K]: the crate's loop
// (kernels/int4_gemm.cu) with the scales' row stride (N) apart from the slab's row count.
__global__ void dequant_rows(const uint32_t* __restrict__ packed, const __half* __restrict__ scales, __half* __restrict__ out,
                             int n0, int rows, int N, int K, int group_size) {
  constexpr int RUN = LANE_K;
  const int64_t runs = (int64_t)rows * (K / RUN);
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < runs; idx += (int64_t)gridDim.x * blockDim.x) {
    const int r = (int)(idx / (K / RUN)), n = n0 + r, k8 = (int)(idx % (K / RUN)) * RUN;
    const int c = k8 / CHUNK_K, wc = chunk_words(K, c), j = (k8 % CHUNK_K) / SUBTILE_K, t = (k8 % SUBTILE_K) / RUN;
    const uint32_t word = packed[(int64_t)(n / TILE_N) * K + (int64_t)c * CHUNK_K + (4 * (n % TILE_N) + t) * wc + j];
    const float s = __half2float(scales[(int64_t)(k8 / group_size) * N + n]);
    alignas(16) __half v[RUN];
#pragma unroll
    for (int e = 0; e < RUN; ++e) {
      const int p = (e >> 1) | ((e & 1) << 2);
      v[e] = __float2half(((float)((word >> (4 * p)) & 0xfu) - (float)SYMMETRIC_ZERO) * s);
    }
    *reinterpret_cast<uint4*>(out + (int64_t)r * K + k8) = *reinterpret_cast<const uint4*>(v);
  }
}

typedef int (*CreateFn)(void**);
typedef int (*SetStreamFn)(void*, cudaStream_t);
typedef int (*GemmExFn)(void*, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int, const void*,
                        void*, int, int, int, int);
static void* g_h = nullptr;
static GemmExFn g_gemm = nullptr;
static SetStreamFn g_set_stream = nullptr;

// y[:, n0 .. n0 + rows) = x [M, K] · w[rows, K]ᵀ, y row-major with row stride N (column-major:
// yᵀ [N, M], the slab's rows n0.. of it, ldc = N).
static void gemm(cudaStream_t st, const __half* w, const __half* x, __half* y, int rows, int M, int K, int N) {
  float alpha = 1, beta = 0;
  g_set_stream(g_h, st);
  int rc = g_gemm(g_h, 1 /*T*/, 0 /*N*/, rows, M, K, &alpha, w, 2 /*16F*/, K, x, 2, K, &beta, y, 2, N, 68 /*32F*/, -1);
  if (rc != 0) { printf("cublasGemmEx failed: %d\n", rc); exit(1); }
}

struct Setup {
  int M, N, K, G;
  uint32_t* packed; __half *scales, *x, *y, *full;
  __half* buf[3];
};

static int blocks_for(int64_t runs) { return (int)std::min<int64_t>((runs + 255) / 256, 4096); }

static void serial(Setup& s, cudaStream_t a) {
  dequant_rows<<<blocks_for((int64_t)s.N * s.K / 8), 256, 0, a>>>(s.packed, s.scales, s.full, 0, s.N, s.N, s.K, s.G);
  gemm(a, s.full, s.x, s.y, s.N, s.M, s.K, s.N);
}

// S slabs (rows multiples of 8), NBUF scratch buffers; events: start, dq[S], mm[S].
static void overlapped(Setup& s, cudaStream_t a, cudaStream_t b, int S, int NBUF, cudaEvent_t start, cudaEvent_t* dq, cudaEvent_t* mm) {
  const int tiles = s.N / TILE_N, per = (tiles + S - 1) / S;
  CK(cudaEventRecord(start, a));  // the previous call's GEMMs are done with the buffers
  CK(cudaStreamWaitEvent(b, start, 0));
  for (int i = 0; i < S; ++i) {
    const int n0 = i * per * TILE_N, rows = std::min(per * TILE_N, s.N - n0);
    if (rows <= 0) break;
    __half* buf = s.buf[i % NBUF];
    if (i >= NBUF) CK(cudaStreamWaitEvent(b, mm[i - NBUF], 0));
    dequant_rows<<<blocks_for((int64_t)rows * s.K / 8), 256, 0, b>>>(s.packed, s.scales, buf, n0, rows, s.N, s.K, s.G);
    CK(cudaEventRecord(dq[i], b));
    CK(cudaStreamWaitEvent(a, dq[i], 0));
    gemm(a, buf, s.x, s.y + n0, rows, s.M, s.K, s.N);
    CK(cudaEventRecord(mm[i], a));
  }
}

int main() {
  cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
  printf("device %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  void* lib = nullptr;
  for (auto n : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) if ((lib = dlopen(n, RTLD_NOW))) break;
  if (!lib) { printf("cublas not found\n"); return 1; }
  auto create = (CreateFn)dlsym(lib, "cublasCreate_v2");
  g_gemm = (GemmExFn)dlsym(lib, "cublasGemmEx");
  g_set_stream = (SetStreamFn)dlsym(lib, "cublasSetStream_v2");
  if (!create || !g_gemm || !g_set_stream || create(&g_h) != 0) { printf("cublas init failed\n"); return 1; }
  cudaStream_t a, b;
  CK(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking));
  constexpr int MAXS = 32;
  cudaEvent_t start, dq[MAXS], mm[MAXS], t0, t1;
  CK(cudaEventCreateWithFlags(&start, cudaEventDisableTiming));
  for (int i = 0; i < MAXS; ++i) {
    CK(cudaEventCreateWithFlags(&dq[i], cudaEventDisableTiming));
    CK(cudaEventCreateWithFlags(&mm[i], cudaEventDisableTiming));
  }
  CK(cudaEventCreate(&t0)); CK(cudaEventCreate(&t1));
  struct Shape { int K, N, M; } shapes[] = {{4096, 11008, 256}, {4096, 11008, 512}, {4096, 11008, 1024}, {11008, 4096, 512}};
  std::mt19937 rng(std::random_device{}());
  int bad = 0;
  for (auto sh : shapes) {
    Setup s{sh.M, sh.N, sh.K, 128};
    const size_t words = (size_t)sh.N / TILE_N * sh.K, nsc = (size_t)sh.K / s.G * sh.N;
    std::vector<uint32_t> hp(words); for (auto& w : hp) w = rng();
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<__half> hs(nsc), hx((size_t)sh.M * sh.K);
    for (auto& v : hs) v = __float2half(0.01f * (1.f + std::fabs(nd(rng))));
    for (auto& v : hx) v = __float2half(nd(rng));
    CK(cudaMalloc(&s.packed, words * 4)); CK(cudaMalloc(&s.scales, nsc * 2)); CK(cudaMalloc(&s.x, hx.size() * 2));
    CK(cudaMalloc(&s.y, (size_t)sh.M * sh.N * 2)); CK(cudaMalloc(&s.full, (size_t)sh.N * sh.K * 2));
    for (auto& bf : s.buf) CK(cudaMalloc(&bf, (size_t)sh.N * sh.K * 2));  // big enough for any slab count
    CK(cudaMemcpy(s.packed, hp.data(), words * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(s.scales, hs.data(), nsc * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(s.x, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
    // correctness: serial output, then each configuration against it
    serial(s, a); CK(cudaStreamSynchronize(a));
    std::vector<__half> want((size_t)sh.M * sh.N), got(want.size()), full((size_t)sh.N * sh.K);
    CK(cudaMemcpy(want.data(), s.y, want.size() * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(full.data(), s.full, full.size() * 2, cudaMemcpyDeviceToHost));
    double scale = 0; for (auto v : want) scale = std::max(scale, (double)std::fabs(__half2float(v)));
    const int iters = 30;
    auto time_us = [&](auto&& f) {
      for (int i = 0; i < 3; ++i) f();
      CK(cudaEventRecord(t0, a));
      for (int i = 0; i < iters; ++i) f();
      CK(cudaEventRecord(t1, a)); CK(cudaEventSynchronize(t1));
      float ms; CK(cudaEventElapsedTime(&ms, t0, t1)); return ms * 1000.f / iters;
    };
    printf("--- K=%d N=%d M=%d: serial (dequantize + cuBLAS) %.2f us", sh.K, sh.N, sh.M, time_us([&] { serial(s, a); }));
    printf(" | dequantize %.2f", time_us([&] {
      dequant_rows<<<blocks_for((int64_t)s.N * s.K / 8), 256, 0, a>>>(s.packed, s.scales, s.full, 0, s.N, s.N, s.K, s.G);
    }));
    printf(" | cuBLAS %.2f\n", time_us([&] { gemm(a, s.full, s.x, s.y, s.N, s.M, s.K, s.N); }));
    for (int S : {2, 4, 8, 16}) for (int NB : {2, 3}) {
      CK(cudaMemsetAsync(s.y, 0xff, want.size() * 2, a));
      overlapped(s, a, b, S, NB, start, dq, mm); CK(cudaStreamSynchronize(a)); CK(cudaDeviceSynchronize());
      CK(cudaMemcpy(got.data(), s.y, got.size() * 2, cudaMemcpyDeviceToHost));
      double worst = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const double d = std::fabs((double)__half2float(got[i]) - (double)__half2float(want[i]));
        worst = std::isnan(d) ? INFINITY : std::max(worst, d);
      }
      // the last slab's buffer holds its rows of the full dequantization, bit for bit
      const int tiles = s.N / TILE_N, per = (tiles + S - 1) / S, last = (tiles + per - 1) / per - 1;
      const int n0 = last * per * TILE_N, rows = s.N - n0;
      std::vector<__half> slab((size_t)rows * s.K);
      CK(cudaMemcpy(slab.data(), s.buf[last % NB], slab.size() * 2, cudaMemcpyDeviceToHost));
      size_t diff = 0;
      for (size_t i = 0; i < slab.size(); ++i) diff += __half_as_ushort(slab[i]) != __half_as_ushort(full[(size_t)n0 * s.K + i]);
      const bool ok = worst <= 1e-2 * scale && diff == 0;
      bad += !ok;
      printf("    S=%2d NBUF=%d: %.2f us  (max |diff| %.3g of scale %.3g, slab mismatches %zu) %s\n", S, NB,
             time_us([&] { overlapped(s, a, b, S, NB, start, dq, mm); }), worst, scale, diff, ok ? "ok" : "FAILED");
    }
    fflush(stdout);
    cudaFree(s.packed); cudaFree(s.scales); cudaFree(s.x); cudaFree(s.y); cudaFree(s.full);
    for (auto& bf : s.buf) cudaFree(bf);
  }
  printf("correctness: %s\n", bad ? "FAILED" : "all pass");
  return bad ? 1 : 0;
}
