// Shared by the cooperative-FFN harnesses (scripts/ffn_kernel_timing.cu, scripts/ffn_r7_timing.cu):
// random device inputs, the f64 reference cases and the launch parameters as src/ffn/cuda.rs picks
// them. Include after kernels/ffn_coop.cu (FFN_NO_ENTRIES) and a CK(cudaError_t) macro.
#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

// ncu mode (ffn_kernel_timing's `ncu`, `r5ncu`): each timed kernel launched once, no timing
static bool NCU = false;
// µs per launch of f: 3 warm-up launches, then `iters` back to back between CUDA events
template <typename F> static double time_us(F f, int iters) {
  for (int i = 0; i < (NCU ? 1 : 3); ++i) f();
  if (NCU) { CK(cudaDeviceSynchronize()); return 0; }
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  CK(cudaEventRecord(a));
  for (int i = 0; i < iters; ++i) f();
  CK(cudaEventRecord(b));
  CK(cudaEventSynchronize(b));
  float ms;
  CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaGetLastError());
  cudaEventDestroy(a); cudaEventDestroy(b);
  return ms * 1000.0 / iters;
}

// n values of N(0, 1) * scale into d (and *keep)
static void fill(__half* d, size_t n, float scale, std::mt19937& rng, std::vector<__half>* keep = nullptr) {
  std::vector<__half> h(n);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& v : h) v = __float2half(nd(rng) * scale);
  CK(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice));
  if (keep) *keep = h;
}

static double gelu(double v) { return 0.5 * v * (1.0 + erf(v / sqrt(2.0))); }

// The cooperative FFN: config as choose_coop_config in src/ffn/cuda.rs picks it for `blocks`.
struct Coop {
  float* partial;
  unsigned* tickets;
  __half* hidden;
};
static ffn::CoopParams coop_params(const Coop& sc, const __half* x, const __half* w1, const __half* b1, const __half* w2,
                                   const __half* b2, __half* y, int m, int d, int h, int o, int blocks, int force_splits = 0,
                                   int r2 = 16) {
  const int groups = (o + r2 - 1) / r2;
  // one split while a warp's share of H is <= 12 (one token tile) / 8 (two) chunks, as the crate
  const int chunks_per_warp = ((h + 31) / 32 + 7) / 8;
  const int max_splits = chunks_per_warp <= (m <= 8 ? 12 : 8) ? 1 : std::max(((h + 31) / 32) / 8, 1);
  int want = std::min(std::max(blocks / groups, 1), max_splits);
  if (force_splits) want = std::min(force_splits, std::max(((h + 31) / 32) / 8, 1));
  const int kps = std::max(((h + want - 1) / want + 31) / 32, 1) * 32;
  const int splits = std::max((h + kps - 1) / kps, 1);
  return ffn::CoopParams{x, w1, b1, w2, b2, y, sc.hidden, sc.partial, sc.tickets, m, d, h, o, splits, kps};
}

// One check case of the cooperative FFN: inputs on the device and the f64 reference (made once per
// process, fresh random values each process).
struct CoopCase {
  int m, d, h, o;
  __half *x, *w1, *b1, *w2, *b2, *y;
  std::vector<double> ref;
};
static std::vector<CoopCase>& coop_cases() {
  static std::vector<CoopCase> cases;
  if (!cases.empty()) return cases;
  std::mt19937 rng(std::random_device{}());
  // o = d; 72 and 200 are not multiples of the 16 / 32-row units, 4360 not of a grid's units; the
  // last one is LLaMA-7B's FFN at 16 tokens (16-row units, weights from HBM)
  int shapes[][3] = {{1, 512, 2048}, {4, 512, 2048}, {1, 768, 3072}, {4, 768, 3072}, {13, 768, 3072}, {9, 72, 136},
                     {16, 200, 1000}, {1, 4360, 264}, {2, 64, 4360}, {16, 4096, 11008}};
  for (auto& s : shapes) {
    CoopCase c;
    c.m = s[0]; c.d = s[1]; c.h = s[2]; c.o = s[1];
    const int m = c.m, d = c.d, h = c.h, o = c.o;
    std::vector<__half> hx, hw1, hb1, hw2, hb2;
    CK(cudaMalloc(&c.x, (size_t)m * d * 2)); CK(cudaMalloc(&c.w1, (size_t)h * d * 2)); CK(cudaMalloc(&c.b1, h * 2));
    CK(cudaMalloc(&c.w2, (size_t)o * h * 2)); CK(cudaMalloc(&c.b2, o * 2)); CK(cudaMalloc(&c.y, (size_t)m * o * 2));
    fill(c.x, (size_t)m * d, 1.f, rng, &hx); fill(c.w1, (size_t)h * d, 1.f / sqrtf(d), rng, &hw1); fill(c.b1, h, 1.f, rng, &hb1);
    fill(c.w2, (size_t)o * h, 1.f / sqrtf(h), rng, &hw2); fill(c.b2, o, 1.f, rng, &hb2);
    auto f32 = [](const std::vector<__half>& v) {
      std::vector<float> r(v.size());
      for (size_t i = 0; i < v.size(); ++i) r[i] = __half2float(v[i]);
      return r;
    };
    const std::vector<float> fx = f32(hx), fw1 = f32(hw1), fb1 = f32(hb1), fw2 = f32(hw2), fb2 = f32(hb2);
    std::vector<double> hid((size_t)m * h);
    c.ref.resize((size_t)m * o);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < h; ++j) {
        double a = fb1[j];
        for (int q = 0; q < d; ++q) a += (double)fx[(size_t)i * d + q] * fw1[(size_t)j * d + q];
        hid[(size_t)i * h + j] = gelu(a);
      }
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < o; ++j) {
        double a = fb2[j];
        for (int q = 0; q < h; ++q) a += hid[(size_t)i * h + q] * fw2[(size_t)j * h + q];
        c.ref[(size_t)i * o + j] = a;
      }
    cases.push_back(std::move(c));
  }
  return cases;
}

// Timing inputs at LLaMA-7B's FFN (D = 4096, H = 11008; x for up to 16 tokens, also sized for
// smaller shapes' x [16, H]; fixed seed): x, the weights and biases, y and the hidden scratch.
struct TimingBufs {
  static constexpr int D = 4096, H = 11008, MMAX = 16;
  __half *x, *w1, *b1, *w2, *b2, *y, *hid;
};
static TimingBufs timing_bufs() {
  constexpr int D = TimingBufs::D, H = TimingBufs::H, MMAX = TimingBufs::MMAX;
  std::mt19937 rng(1);
  TimingBufs t;
  CK(cudaMalloc(&t.x, MMAX * H * 2)); CK(cudaMalloc(&t.w1, (size_t)H * D * 2)); CK(cudaMalloc(&t.w2, (size_t)D * H * 2));
  CK(cudaMalloc(&t.b1, H * 2)); CK(cudaMalloc(&t.b2, D * 2)); CK(cudaMalloc(&t.y, MMAX * D * 2)); CK(cudaMalloc(&t.hid, MMAX * H * 2));
  fill(t.x, MMAX * H, 1.f, rng); fill(t.w1, (size_t)H * D, 0.015f, rng); fill(t.w2, (size_t)D * H, 0.01f, rng);
  fill(t.b1, H, 1.f, rng); fill(t.b2, D, 1.f, rng);
  return t;
}
