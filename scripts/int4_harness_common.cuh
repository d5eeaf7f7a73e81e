// Shared body of the INT4 GEMM harnesses (scripts/int4_tc_harness.cu, scripts/int4_rs_harness.cu):
// reduce / dequantize kernels, the split rule of src/quant/launch.rs, random problems, the f64
// reference and its tolerance check, kernel timing with CUDA events, cuBLAS (dlopen'ed) timing.
// Include it after int4_gemm_tc.cu, int4_gemm.cu and int4_harness_tc.cuh (`CK`, `ktc`, `Var`), with
// `VARS` (the mma.sync variants) defined.
#pragma once
__global__ void kreduce_h(const float* part, __half* y, int64_t mn, int splits) { int4_reduce<__half>(part, y, mn, splits); }
__global__ void kreduce_b(const float* part, __nv_bfloat16* y, int64_t mn, int splits) { int4_reduce<__nv_bfloat16>(part, y, mn, splits); }
__global__ void kdequant_h(const uint32_t* p, const __half* s, const __half* z, __half* out, GemmDims d) { int4_dequant<__half>(p, s, z, out, d); }
static int g_sms = 132;
// mirrors choose_tc_config in src/quant/launch.rs
static int rule_splits(const Var& v, int M, int N, int K) {
  int blocks = ((M + v.bm - 1) / v.bm) * (((N + 7) / 8 + v.bn / 8 - 1) / (v.bn / 8));
  int n_chunks = (K + 127) / 128;
  if (blocks >= g_sms) return 1;
  int sp = std::max(1, std::min(g_sms * v.per_sm / blocks, std::max(1, n_chunks / 4)));
  int cps = (n_chunks + sp - 1) / sp;
  return (n_chunks + cps - 1) / cps;
}
constexpr int NV = sizeof(VARS) / sizeof(VARS[0]);

static int locate_word(int K, int g, int k, int* p) {
  int c = k / 128, kk = k % 128, j = kk / 32, r = kk % 32, t = r / 8, e = r % 8;
  *p = (e >> 1) | ((e & 1) << 2);
  int wc = std::min(4, K / 32 - 4 * c);
  return 128 * c + (4 * g + t) * wc + j;
}
static float bf2f(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }

struct Prob {
  int M, N, K, G; void *x[2]; __half *s, *z; void* y; uint32_t* p[2]; float* part; __half* deq;
  std::vector<uint32_t> hp; std::vector<float> hxf; std::vector<__half> hx16, hs, hz; std::vector<uint16_t> hxb;
};
static void make(Prob& P, int M, int N, int K, int G, int copies) {
  P.M = M; P.N = N; P.K = K; P.G = G;
  std::mt19937 rng(std::random_device{}());
  int tiles = (N + 7) / 8;
  P.hp.resize((size_t)tiles * K); for (auto& w : P.hp) w = rng();
  P.hxf.resize((size_t)M * K); P.hx16.resize(P.hxf.size()); P.hxb.resize(P.hxf.size());
  for (size_t i = 0; i < P.hxf.size(); ++i) {
    float f = (float)(rng() % 20001) / 10000.0f - 1.0f;
    P.hx16[i] = __float2half(f); __nv_bfloat16 b = __float2bfloat16(f); memcpy(&P.hxb[i], &b, 2);
  }
  P.hs.resize((size_t)(K / G) * N); P.hz.resize(P.hs.size());
  for (auto& v : P.hs) v = __float2half(0.001f + (rng() % 1000) * 1e-5f);
  for (auto& v : P.hz) v = __float2half((float)(rng() % 16));
  CK(cudaMalloc(&P.x[0], P.hxf.size() * 2)); CK(cudaMemcpy(P.x[0], P.hx16.data(), P.hxf.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&P.x[1], P.hxf.size() * 2)); CK(cudaMemcpy(P.x[1], P.hxb.data(), P.hxf.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&P.s, P.hs.size() * 2)); CK(cudaMemcpy(P.s, P.hs.data(), P.hs.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&P.z, P.hz.size() * 2)); CK(cudaMemcpy(P.z, P.hz.data(), P.hz.size() * 2, cudaMemcpyHostToDevice));
  for (int c = 0; c < 2; ++c) {
    if (c < copies) { CK(cudaMalloc(&P.p[c], P.hp.size() * 4)); CK(cudaMemcpy(P.p[c], P.hp.data(), P.hp.size() * 4, cudaMemcpyHostToDevice)); }
    else P.p[c] = P.p[0];
  }
  CK(cudaMalloc(&P.y, (size_t)M * N * 2));
  CK(cudaMalloc(&P.part, (size_t)16 * M * N * 4));
  P.deq = nullptr;
}
static void release(Prob& P) {
  cudaFree(P.x[0]); cudaFree(P.x[1]); cudaFree(P.s); cudaFree(P.z); cudaFree(P.y); cudaFree(P.part); if (P.deq) cudaFree(P.deq);
  cudaFree(P.p[0]); if (P.p[1] != P.p[0]) cudaFree(P.p[1]);
}

static void launch(Prob& P, const Var& v, int bf, int asym, int copy, int splits = 1) {
  int n_chunks = (P.K + 127) / 128, cps = (n_chunks + splits - 1) / splits;
  splits = (n_chunks + cps - 1) / cps;
  TcDims d{P.M, P.N, P.K, P.G, cps};
  dim3 grid((P.M + v.bm - 1) / v.bm, ((P.N + 7) / 8 + v.bn / 8 - 1) / (v.bn / 8), splits);
  v.f[bf][asym]<<<grid, v.threads, v.smem>>>(P.x[bf], P.p[copy], P.s, asym ? P.z : nullptr, P.y, splits > 1 ? P.part : nullptr, d);
  if (splits > 1) {
    int64_t mn = (int64_t)P.M * P.N; int blocks = (int)std::min<int64_t>((mn + 255) / 256, 1024);
    if (bf) kreduce_b<<<blocks, 256>>>(P.part, (__nv_bfloat16*)P.y, mn, splits); else kreduce_h<<<blocks, 256>>>(P.part, (__half*)P.y, mn, splits);
  }
}

// reference y (f64) and the size term, threaded
static void reference(Prob& P, int bf, int asym, std::vector<double>& want, std::vector<double>& size) {
  int M = P.M, N = P.N, K = P.K;
  std::vector<double> w((size_t)N * K), sz((size_t)N * K);
  for (int n = 0; n < N; ++n) for (int k = 0; k < K; ++k) {
    int pp; int wi = locate_word(K, n % 8, k, &pp);
    int q = (P.hp[(size_t)(n / 8) * K + wi] >> (4 * pp)) & 15;
    size_t si = (size_t)(k / P.G) * N + n;
    double s = __half2float(P.hs[si]), z = asym ? __half2float(P.hz[si]) : 8.0;
    w[(size_t)n * K + k] = (q - z) * s; sz[(size_t)n * K + k] = fabs((q - z) * s) + 16 * s;
  }
  std::vector<double> xv((size_t)M * K);
  for (size_t i = 0; i < xv.size(); ++i) xv[i] = bf ? bf2f(P.hxb[i]) : __half2float(P.hx16[i]);
  want.assign((size_t)M * N, 0); size.assign((size_t)M * N, 0);
  int nt = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> th;
  for (int id = 0; id < nt; ++id) th.emplace_back([&, id] {
    for (int m = id; m < M; m += nt) for (int n = 0; n < N; ++n) {
      double a = 0, b = 0; const double* xr = &xv[(size_t)m * K]; const double* wr = &w[(size_t)n * K]; const double* sr = &sz[(size_t)n * K];
      for (int k = 0; k < K; ++k) { a += xr[k] * wr[k]; b += fabs(xr[k]) * sr[k]; }
      want[(size_t)m * N + n] = a; size[(size_t)m * N + n] = b;
    }
  });
  for (auto& t : th) t.join();
}

static bool check(Prob& P, const Var& v, int bf, int asym, const std::vector<double>& want, const std::vector<double>& size, int splits) {
  CK(cudaMemset(P.y, 0xff, (size_t)P.M * P.N * 2));
  launch(P, v, bf, asym, 0, splits);
  CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  std::vector<uint16_t> hy((size_t)P.M * P.N);
  CK(cudaMemcpy(hy.data(), P.y, hy.size() * 2, cudaMemcpyDeviceToHost));
  double cacc = bf ? 8e-3 : 1.2e-3, cout = bf ? 8e-3 : 1e-3;
  long bad = 0; double worst = 0; int wm = -1, wn = -1;
  for (int m = 0; m < P.M; ++m) for (int n = 0; n < P.N; ++n) {
    size_t i = (size_t)m * P.N + n;
    __half h; memcpy(&h, &hy[i], 2);
    double got = bf ? bf2f(hy[i]) : __half2float(h);
    double tol = cacc * size[i] + cout * fabs(want[i]) + 1e-30;
    double r = fabs(got - want[i]) / tol;
    if (!(r <= 1)) { if (bad++ < 3) printf("    (%d,%d) got %g want %g tol %g\n", m, n, got, want[i], tol); }
    if (r > worst || std::isnan(r)) { worst = std::isnan(r) ? 1e9 : r; wm = m; wn = n; }
  }
  if (bad) printf("FAIL %s splits=%d %s %s M=%d N=%d K=%d G=%d: %ld bad, worst %.3g at (%d,%d)\n", v.name, splits, bf ? "bf16" : "f16", asym ? "asym" : "sym", P.M, P.N, P.K, P.G, bad, worst, wm, wn);
  return bad == 0;
}

static float timeit(Prob& P, const Var& v, int bf, int asym, int iters, int splits = 1) {
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  for (int i = 0; i < 5; ++i) launch(P, v, bf, asym, i % 2, splits);
  CK(cudaEventRecord(a));
  for (int i = 0; i < iters; ++i) launch(P, v, bf, asym, i % 2, splits);
  CK(cudaEventRecord(b)); CK(cudaEventSynchronize(b)); CK(cudaGetLastError());
  float ms; CK(cudaEventElapsedTime(&ms, a, b));
  return ms * 1000.0f / iters;
}

// cuBLAS through dlopen (no link-time dependency)
typedef int (*CreateFn)(void**);
typedef int (*GemmExFn)(void*, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int, const void*, void*, int, int, int, int);
static void* g_handle = nullptr; static GemmExFn g_gemm = nullptr;
static void cublas_init() {
  const char* names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
  void* lib = nullptr;
  for (auto n : names) if ((lib = dlopen(n, RTLD_NOW))) { printf("cublas: %s\n", n); break; }
  if (!lib) { printf("cublas: not found (%s)\n", dlerror()); return; }
  auto create = (CreateFn)dlsym(lib, "cublasCreate_v2"); g_gemm = (GemmExFn)dlsym(lib, "cublasGemmEx");
  if (!create || !g_gemm || create(&g_handle) != 0) { printf("cublas: init failed\n"); g_gemm = nullptr; }
}
// y[M,N] = x[M,K] W[N,K]^T, row-major: column-major C^T[N,M] = W^T... = op(A)=W^T? cuBLAS: C(N x M) = A(N x K) * B(K x M)
// with A = W stored row-major [N,K] = column-major K x N -> transpose (CUBLAS_OP_T), B = x row-major [M,K] = col-major K x M (OP_N).
static float time_cublas(int M, int N, int K, int bf, int iters) {
  if (!g_gemm) return -1;
  void *w, *x, *y; CK(cudaMalloc(&w, (size_t)N * K * 2)); CK(cudaMalloc(&x, (size_t)M * K * 2)); CK(cudaMalloc(&y, (size_t)M * N * 2));
  CK(cudaMemset(w, 0, (size_t)N * K * 2)); CK(cudaMemset(x, 0, (size_t)M * K * 2));
  float alpha = 1, beta = 0; int dt = bf ? 14 /*CUDA_R_16BF*/ : 2 /*CUDA_R_16F*/;
  auto run = [&] { return g_gemm(g_handle, 1 /*T*/, 0 /*N*/, N, M, K, &alpha, w, dt, K, x, dt, K, &beta, y, dt, N, 68 /*CUBLAS_COMPUTE_32F*/, -1 /*DEFAULT*/); };
  if (run() != 0) { printf("cublas gemm failed\n"); return -1; }
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  for (int i = 0; i < 5; ++i) run();
  CK(cudaEventRecord(a)); for (int i = 0; i < iters; ++i) run(); CK(cudaEventRecord(b)); CK(cudaEventSynchronize(b));
  float ms; CK(cudaEventElapsedTime(&ms, a, b));
  cudaFree(w); cudaFree(x); cudaFree(y);
  return ms * 1000.0f / iters;
}
