// Kernel-only timing of the int4_gemm_small_m variants (benchmarks/int4.md, "Kernel time alone").
// Checks every variant / warps / split against a CPU reference (format v2 nibble order, symmetric,
// random codes, group sizes 32 / 64 / 128, K with and without a tail chunk), then times 200 back-to-back launches between CUDA events, K=4096 -> N=11008,
// weights rotating over four copies (from HBM) and one copy (partly L2). Build and run on a GPU
// host from the repo root:
//   nvcc -arch=sm_90a -O3 -std=c++17 -Ikernels -o int4_timing scripts/int4_kernel_timing.cu && ./int4_timing
#include "int4_gemm.cu"
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cmath>
#include <random>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

template <int NT, bool R16, int D, bool XS>
__global__ void __launch_bounds__(256) kgemm(const __half* x, const uint32_t* p, const __half* s, const __half* z, __half* y, float* part, GemmDims d) {
  int4_gemm_small_m<__half, NT, R16, true, D, XS>(x, p, s, z, y, part, d);
}
__global__ void kreduce(const float* part, __half* y, int64_t mn, int splits) { int4_reduce<__half>(part, y, mn, splits); }

typedef void (*KFn)(const __half*, const uint32_t*, const __half*, const __half*, __half*, float*, GemmDims);
struct Var { const char* name; KFn f; int nt, rows16, depth, xs; };
static Var VARS[] = {
  {"n2m8x", kgemm<2, false, 4, true>, 2, 0, 4, 1}, {"n2m8", kgemm<2, false, 4, false>, 2, 0, 4, 0},
  {"n4m8x", kgemm<4, false, 4, true>, 4, 0, 4, 1}, {"n4m8", kgemm<4, false, 4, false>, 4, 0, 4, 0},
  {"n4m16", kgemm<4, true, 4, false>, 4, 1, 4, 0}, {"n2m16", kgemm<2, true, 4, false>, 2, 1, 4, 0},
};

static int locate_word(int K, int g, int k, int* p) {
  int c = k / 128, kk = k % 128, j = kk / 32, r = kk % 32, t = r / 8, e = r % 8;
  *p = (e >> 1) | ((e & 1) << 2);
  int wc = std::min(4, K / 32 - 4 * c);
  return 128 * c + (4 * g + t) * wc + j;
}

struct Prob { int M, N, K, G; __half *x, *s, *y; uint32_t* p[4]; float* part; std::vector<uint32_t> hp; std::vector<__half> hx, hs; std::vector<double> ref; };

static void make(Prob& P, int M, int N, int K, int G, int copies) {
  P.M = M; P.N = N; P.K = K; P.G = G;
  std::mt19937 rng(1234 + M + N);
  int tiles = (N + 7) / 8;
  P.hp.resize((size_t)tiles * K);
  for (auto& w : P.hp) w = rng();
  P.hx.resize((size_t)M * K);
  for (auto& v : P.hx) v = __float2half((float)(rng() % 2001) / 1000.0f - 1.0f);
  P.hs.resize((size_t)(K / G) * N);
  for (auto& v : P.hs) v = __float2half(0.001f + (rng() % 1000) * 1e-5f);
  CK(cudaMalloc(&P.x, P.hx.size() * 2)); CK(cudaMemcpy(P.x, P.hx.data(), P.hx.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&P.s, P.hs.size() * 2)); CK(cudaMemcpy(P.s, P.hs.data(), P.hs.size() * 2, cudaMemcpyHostToDevice));
  for (int c = 0; c < 4; ++c) {
    if (c < copies) { CK(cudaMalloc(&P.p[c], P.hp.size() * 4)); CK(cudaMemcpy(P.p[c], P.hp.data(), P.hp.size() * 4, cudaMemcpyHostToDevice)); }
    else P.p[c] = P.p[0];
  }
  CK(cudaMalloc(&P.y, (size_t)M * N * 2));
  CK(cudaMalloc(&P.part, (size_t)16 * M * N * 4));
}

static bool launch(Prob& P, const Var& v, int warps, int splits, int copy, cudaStream_t st) {
  int n_chunks = (P.K + 127) / 128;
  int cps = (n_chunks + splits - 1) / splits;
  splits = (n_chunks + cps - 1) / cps;
  GemmDims d{P.M, P.N, P.K, P.G, cps};
  int groups = cps * 128 / P.G;
  int xrows = v.xs ? std::min(P.M, v.rows16 ? 16 : 8) : 0;
  size_t smem = (size_t)warps * v.depth * v.nt * 512 + (size_t)xrows * (cps * 128 + 32) * 2 + (size_t)groups * v.nt * 16;
  if (smem > 227 * 1024) return false;
  dim3 grid(((P.N + 7) / 8 + v.nt - 1) / v.nt, splits, (P.M + 15) / 16);
  v.f<<<grid, warps * 32, smem, st>>>(P.x, P.p[copy], P.s, nullptr, P.y, P.part, d);
  if (splits > 1) kreduce<<<264, 256, 0, st>>>(P.part, P.y, (int64_t)P.M * P.N, splits);
  return true;
}

static double check(Prob& P, const Var& v, int warps, int splits) {
  CK(cudaMemset(P.y, 0xff, (size_t)P.M * P.N * 2));
  if (!launch(P, v, warps, splits, 0, 0)) return 0;
  CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  std::vector<__half> hy((size_t)P.M * P.N);
  CK(cudaMemcpy(hy.data(), P.y, hy.size() * 2, cudaMemcpyDeviceToHost));
  if (P.ref.empty()) {  // f64 reference (and sum of |terms|), once per problem
    P.ref.resize((size_t)P.M * P.N * 2);
    for (int m = 0; m < P.M; ++m) for (int n = 0; n < P.N; n += 1) {
      double acc = 0, mag = 0;
      for (int k = 0; k < P.K; ++k) {
        int pp; int wi = locate_word(P.K, n % 8, k, &pp);
        int q = (P.hp[(size_t)(n / 8) * P.K + wi] >> (4 * pp)) & 15;
        double w = (q - 8) * (double)__half2float(P.hs[(size_t)(k / P.G) * P.N + n]);
        double xv = __half2float(P.hx[(size_t)m * P.K + k]);
        acc += xv * w; mag += fabs(xv * w);
      }
      P.ref[2 * ((size_t)m * P.N + n)] = acc; P.ref[2 * ((size_t)m * P.N + n) + 1] = mag;
    }
  }
  double worst = 0;
  for (int m = 0; m < P.M; ++m) for (int n = 0; n < P.N; n += 1) {
    const double acc = P.ref[2 * ((size_t)m * P.N + n)], mag = P.ref[2 * ((size_t)m * P.N + n) + 1];
    double got = __half2float(hy[(size_t)m * P.N + n]);
    double err = fabs(got - acc) / (mag * 1e-3 + fabs(acc) * 2e-3 + 1e-6);
    if (!(err <= worst)) worst = std::isnan(got) ? 1e9 : std::max(worst, err);
  }
  return worst;  // <= 1 passes
}

static float timeit(Prob& P, const Var& v, int warps, int splits, int copies, int iters) {
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  if (!launch(P, v, warps, splits, 0, 0)) return -1;
  for (int i = 0; i < 20; ++i) launch(P, v, warps, splits, i % copies, 0);
  CK(cudaEventRecord(a));
  for (int i = 0; i < iters; ++i) launch(P, v, warps, splits, i % copies, 0);
  CK(cudaEventRecord(b)); CK(cudaEventSynchronize(b)); CK(cudaGetLastError());
  float ms; CK(cudaEventElapsedTime(&ms, a, b));
  return ms * 1000.0f / iters;
}

int main() {
  cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
  printf("device %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  for (auto& v : VARS) CK(cudaFuncSetAttribute(v.f, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
  // correctness of every variant / warps / split (odd N, K % 128 != 0, M = 1 / 5 / 16)
  int bad = 0;
  struct GK { int G, K; };
  for (GK gk : {GK{32, 4096 + 32 * 3}, GK{64, 4096 + 64}, GK{128, 4096 + 128}})
  for (int N : {100, 24})
  for (int M : {1, 5, 9, 16}) {
    Prob P; make(P, M, N, gk.K, gk.G, 1);
    for (auto& v : VARS) {
      if (!v.rows16 && M > 8) continue;
      for (int w : {1, 2, 4, 8}) for (int sp : {1, 3}) {
        double e = check(P, v, w, sp);
        if (e > 1) { printf("FAIL %s G=%d K=%d N=%d M=%d warps=%d splits=%d err=%g\n", v.name, gk.G, gk.K, N, M, w, sp, e); bad++; }
      }
    }
  }
  printf("correctness: %s\n", bad ? "FAILED" : "all variants pass");
  // D2D copy bandwidth (read + write)
  {
    size_t bytes = 256 << 20; void *a, *b; CK(cudaMalloc(&a, bytes)); CK(cudaMalloc(&b, bytes));
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice); cudaEventRecord(e0);
    for (int i = 0; i < 10; ++i) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1); cudaEventSynchronize(e1); float ms; cudaEventElapsedTime(&ms, e0, e1);
    printf("d2d copy: %.0f GB/s (read+write)\n", 2.0 * bytes * 10 / (ms * 1e-3) / 1e9);
    cudaFree(a); cudaFree(b);
  }
  // timing: K=4096 -> N=11008, weight 22.5 MB; 4 rotating copies (90 MB > L2) and 1 copy
  for (int M : {1, 2, 4, 8, 16}) {
    Prob P; make(P, M, 11008, 4096, 128, 4);
    printf("--- M=%d N=11008 K=4096 (us/launch, rot4 | same)\n", M);
    for (auto& v : VARS) {
      if (!v.rows16 && M > 8) continue;
      if (v.rows16 && M <= 4) continue;
      for (int w : {2, 4, 8}) for (int sp : {1, 2}) {
        float t4 = timeit(P, v, w, sp, 4, 200), t1 = timeit(P, v, w, sp, 1, 200);
        if (t4 < 0) continue;  // shared memory over the limit
        printf("%-8s warps=%d splits=%d  %7.2f | %7.2f  (%.0f GB/s)\n", v.name, w, sp, t4, t1, 22.544e6 / (t4 * 1e-6) / 1e9);
      }
    }
  }
  return bad ? 1 : 0;
}
