// Round-4 harness of the small-M INT4 kernel (benchmarks/int4.md, round 4): kernel-only time of
// int4_gemm_small_m variants (ring depth, warps), a pure streaming floor (the same grid, loads
// only) and an empty-kernel launch floor, plus the M=64 tensor-core path with the split-K reduce
// before / after the bias-activation epilogue. Every gemm variant is first checked against an f64
// CPU reference (format v2, symmetric, G = 32 / 64 / 128, K with a tail chunk, N odd and N % 8 == 0,
// 1 and 3 K splits). Build (no GPU needed; -DMAIN_KERNELS -I<main's kernels>: the same program
// on main's kernels, for a same-run comparison):
//   nvcc -arch=sm_90a -O3 -std=c++17 -Ikernels -L$CUDA_ROOT/lib -o int4_smallm scripts/int4_smallm_harness.cu
#define INT4_TC_NO_ENTRIES
#include "int4_gemm_tc.cu"
#include "int4_gemm.cu"
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cmath>
#include <random>
#include <algorithm>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

template <int NT, bool R16, int D, bool XS>
__global__ void __launch_bounds__(256, 1) kgemm(const __half* x, const uint32_t* p, const __half* s, const __half* z, __half* y, float* part, GemmDims d) {
  int4_gemm_small_m<__half, NT, R16, true, D, XS>(x, p, s, z, y, part, d);
}
__global__ void kreduce(const float* part, __half* y, int64_t mn, int splits) { int4_reduce<__half>(part, y, mn, splits); }
// the reduce before the bias / activation epilogue (main 4c4d9ac^)
__global__ void kreduce_old(const float* __restrict__ partial, __half* __restrict__ y, int64_t mn, int splits) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < mn; i += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int p = 0; p < splits; ++p) s += partial[p * mn + i];
    y[i] = __float2half(s);
  }
}
__global__ void kreduce_act(const float* part, __half* y, int64_t mn, int splits, const __half* bias, int n) {
#ifdef MAIN_KERNELS
  int4_reduce<__half>(part, y, mn, splits, bias, n, (int)tg::Act::Identity);
#else
  int4_reduce<__half, tg::Act::Identity>(part, y, mn, splits, bias, n);
#endif
}
template <bool ACT>
__global__ void __launch_bounds__(128, 1) ktc(const __half* x, const uint32_t* p, const __half* s, const __half* z, __half* y, float* part, TcDims d) {
  if (ACT) tg::int4_tc::int4_gemm_tc<__half, 64, 128, 1, 4, 4, true>(x, p, s, z, y, part, d, nullptr, 4);
  else tg::int4_tc::int4_gemm_tc<__half, 64, 128, 1, 4, 4, true>(x, p, s, z, y, part, d);
}

// Streaming floor: the gemm's grid (blocks of 2 tiles x 4 warps, each warp its 8 chunks of both
// tiles), 16-byte ld.global.nc loads only. U = loads in flight per lane (all 16 at once, or 4).
template <int U, bool LOAD>
__global__ void __launch_bounds__(128) kstream(const uint32_t* __restrict__ p, int K, uint32_t* out) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int chunks = K / 128, per_warp = chunks / 4;
  uint32_t acc = 0;
  if (LOAD) {
    const uint32_t* t0 = p + (int64_t)(blockIdx.x * 2) * K + warp * per_warp * 128 + lane * 4;
    for (int c0 = 0; c0 < per_warp; c0 += U / 2) {
      LaneChunk v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) v[u] = load_lane_chunk(t0 + (u & 1) * K + (c0 + u / 2) * 128);
#pragma unroll
      for (int u = 0; u < U; ++u) acc ^= v[u].w[0] ^ v[u].w[1] ^ v[u].w[2] ^ v[u].w[3];
    }
  }
  out[blockIdx.x * 128 + threadIdx.x] = acc;
}

typedef void (*KFn)(const __half*, const uint32_t*, const __half*, const __half*, __half*, float*, GemmDims);
struct Var { const char* name; KFn f; int nt, rows16, depth, xs; };
static Var VARS[] = {
  {"n2m8x", kgemm<2, false, 4, true>, 2, 0, 4, 1},   // crate: M <= 2
  {"n2m8", kgemm<2, false, 4, false>, 2, 0, 4, 0},   // crate: M 3..8
  {"n4m16", kgemm<4, true, 4, false>, 4, 1, 4, 0},   // crate: M 9..16
  {"n2m8x.d2", kgemm<2, false, 2, true>, 2, 0, 2, 1},
  {"n2m8.d2", kgemm<2, false, 2, false>, 2, 0, 2, 0},
  {"n2m16", kgemm<2, true, 4, false>, 2, 1, 4, 0},
  {"n4m16.d2", kgemm<4, true, 2, false>, 4, 1, 2, 0},
};
constexpr int NV = sizeof(VARS) / sizeof(VARS[0]);

static int locate_word(int K, int g, int k, int* p) {
  int c = k / 128, kk = k % 128, j = kk / 32, r = kk % 32, t = r / 8, e = r % 8;
  *p = (e >> 1) | ((e & 1) << 2);
  int wc = std::min(4, K / 32 - 4 * c);
  return 128 * c + (4 * g + t) * wc + j;
}

struct Prob { int M, N, K, G; __half *x, *s, *y; uint32_t* p[4]; float* part; std::vector<uint32_t> hp; std::vector<__half> hx, hs; std::vector<double> ref; };

static void make(Prob& P, int M, int N, int K, int G, int copies) {
  P.M = M; P.N = N; P.K = K; P.G = G;
  std::mt19937 rng(std::random_device{}());
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
  CK(cudaMalloc(&P.y, (size_t)std::max(M, 64) * N * 2));
  CK(cudaMalloc(&P.part, (size_t)16 * std::max(M, 64) * N * 4));
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
  if (P.ref.empty()) {
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
  return worst;
}

template <typename F> static float time_fn(F f, int copies, int iters) {
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  for (int i = 0; i < 20; ++i) f(i % copies);
  CK(cudaEventRecord(a));
  for (int i = 0; i < iters; ++i) f(i % copies);
  CK(cudaEventRecord(b)); CK(cudaEventSynchronize(b)); CK(cudaGetLastError());
  float ms; CK(cudaEventElapsedTime(&ms, a, b));
  return ms * 1000.0f / iters;
}
static float timeit(Prob& P, const Var& v, int warps, int copies) {
  if (!launch(P, v, warps, 1, 0, 0)) return -1;
  return time_fn([&](int c) { launch(P, v, warps, 1, c, 0); }, copies, 200);
}

int main() {
  cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
  printf("device %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  for (auto& v : VARS) CK(cudaFuncSetAttribute(v.f, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
  for (auto& v : VARS) { cudaFuncAttributes fa; CK(cudaFuncGetAttributes(&fa, v.f)); printf("%-11s regs %d\n", v.name, fa.numRegs); }
#ifdef MAIN_KERNELS
  printf("kernels: main (round 3)\n");
#else
  printf("kernels: round 4\n");
#endif
  int bad = 0;
  struct GK { int G, K; };
  for (GK gk : {GK{32, 4096 + 32 * 3}, GK{64, 4096 + 64}, GK{128, 4096 + 128}, GK{128, 1024}})
  for (int N : {100, 24, 136})
  for (int M : {1, 5, 16}) {
    Prob P; make(P, M, N, gk.K, gk.G, 1);
    for (auto& v : VARS) {
      if (!v.rows16 && M > 8) continue;
      for (int w : {2, 4}) for (int sp : {1, 3}) {
        double e = check(P, v, w, sp);
        if (e > 1) { printf("FAIL %s G=%d K=%d N=%d M=%d warps=%d splits=%d err=%g\n", v.name, gk.G, gk.K, N, M, w, sp, e); bad++; }
      }
    }
    cudaFree(P.x); cudaFree(P.s); cudaFree(P.y); cudaFree(P.p[0]); cudaFree(P.part);
  }
  printf("correctness: %s\n", bad ? "FAILED" : "all variants pass");
  {
    size_t bytes = 256 << 20; void *a, *b; CK(cudaMalloc(&a, bytes)); CK(cudaMalloc(&b, bytes));
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice); cudaEventRecord(e0);
    for (int i = 0; i < 10; ++i) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1); cudaEventSynchronize(e1); float ms; cudaEventElapsedTime(&ms, e0, e1);
    printf("d2d copy: %.0f GB/s (read+write)\n", 2.0 * bytes * 10 / (ms * 1e-3) / 1e9);
    cudaFree(a); cudaFree(b);
  }
  const double WB = 22.544e6;
  {
    Prob P; make(P, 1, 11008, 4096, 128, 4);
    uint32_t* out; CK(cudaMalloc(&out, 688 * 128 * 4));
    printf("--- floors, 688 blocks x 128 threads, K=4096 N=11008 (us/launch, rot4 | same)\n");
    float e = time_fn([&](int c) { kstream<16, false><<<688, 128>>>(P.p[c], 4096, out); }, 4, 200);
    printf("empty kernel            %7.2f\n", e);
    for (int rep = 0; rep < 2; ++rep) {
      float a4 = time_fn([&](int c) { kstream<16, true><<<688, 128>>>(P.p[c], 4096, out); }, 4, 200);
      float a1 = time_fn([&](int c) { kstream<16, true><<<688, 128>>>(P.p[c], 4096, out); }, 1, 200);
      float b4 = time_fn([&](int c) { kstream<4, true><<<688, 128>>>(P.p[c], 4096, out); }, 4, 200);
      float b1 = time_fn([&](int c) { kstream<4, true><<<688, 128>>>(P.p[c], 4096, out); }, 1, 200);
      printf("stream 16 in flight     %7.2f | %7.2f  (%.0f GB/s)\n", a4, a1, WB / (a4 * 1e-6) / 1e9);
      printf("stream 4 in flight      %7.2f | %7.2f  (%.0f GB/s)\n", b4, b1, WB / (b4 * 1e-6) / 1e9);
    }
    cudaFree(out);
  }
  for (int M : {1, 2, 4, 16}) {
    Prob P; make(P, M, 11008, 4096, 128, 4);
    printf("--- M=%d N=11008 K=4096 (us/launch, rot4 | same)\n", M);
    for (int rep = 0; rep < 2; ++rep)
    for (int vi = 0; vi < NV; ++vi) {
      const Var& v = VARS[vi];
      if (!v.rows16 && M > 8) continue;
      if (v.rows16 && M < 16) continue;
      if (v.xs && M > 2) continue;
      for (int w : {2, 4}) {
        float t4 = timeit(P, v, w, 4), t1 = timeit(P, v, w, 1);
        if (t4 < 0) continue;
        printf("%-11s warps=%d  %7.2f | %7.2f  (%.0f GB/s)\n", v.name, w, t4, t1, WB / (t4 * 1e-6) / 1e9);
      }
    }
  }
  {  // M=64: tensor-core GEMM (3 K splits, as choose_tc_config) + reduce, before / after the epilogue
    Prob P; make(P, 64, 11008, 4096, 128, 4);
    CK(cudaFuncSetAttribute(ktc<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
    CK(cudaFuncSetAttribute(ktc<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024));
    const int smem = tg::int4_tc::TcSmem<64, 128, 4>::BYTES, cps = 11;
    TcDims d{64, 11008, 4096, 128, cps};
    dim3 grid(1, 86, 3);
    const int64_t mn = 64 * 11008;
    printf("--- M=64 tensor-core path, 3 splits (us/launch, rot4 | same)\n");
    for (int rep = 0; rep < 2; ++rep) {
      auto run = [&](int kind, int c) {
        if (kind == 0) ktc<false><<<grid, 128, smem>>>(P.x, P.p[c], P.s, nullptr, P.y, P.part, d);
        else ktc<true><<<grid, 128, smem>>>(P.x, P.p[c], P.s, nullptr, P.y, P.part, d);
        if (kind == 0) kreduce_old<<<(int)((mn + 255) / 256), 256>>>(P.part, P.y, mn, 3);
        else kreduce_act<<<(int)((mn + 255) / 256), 256>>>(P.part, P.y, mn, 3, nullptr, 11008);
      };
      for (int kind : {0, 1}) {
        float t4 = time_fn([&](int c) { run(kind, c); }, 4, 200), t1 = time_fn([&](int c) { run(kind, c); }, 1, 200);
        printf("%s  %7.2f | %7.2f\n", kind ? "tc + reduce (epilogue, now)" : "tc + reduce (before)     ", t4, t1);
      }
      float r0 = time_fn([&](int) { kreduce_old<<<(int)((mn + 255) / 256), 256>>>(P.part, P.y, mn, 3); }, 1, 200);
      float r1 = time_fn([&](int) { kreduce_act<<<(int)((mn + 255) / 256), 256>>>(P.part, P.y, mn, 3, nullptr, 11008); }, 1, 200);
      printf("reduce alone: before %7.2f, now %7.2f\n", r0, r1);
    }
  }
  return bad ? 1 : 0;
}
