// Kernel-only timing of the FFN kernels (benchmarks/ffn.md, "Kernel time alone"): the small-M
// projection (kernels/ffn.cu) with its launch config as src/ffn/cuda.rs picks it and variants of it
// (loads in flight per warp: UNROLL, software pipelining: PIPE, warps per block), the one-launch FFN
// (kernels/ffn_fused.cu), the large-M activation pass vs `bias_act`, and a plain read of the same
// bytes (the bandwidth ceiling). Each variant is first checked against an f64 CPU reference; times
// are back-to-back launches between CUDA events (weights of 90 MB: from HBM). Build and run on a
// GPU host from the repo root:
//   nvcc -arch=sm_90a -O3 -std=c++17 -Ikernels -o ffn_timing scripts/ffn_kernel_timing.cu && ./ffn_timing
// `./ffn_timing ncu` launches each timed kernel once (for `ncu --metrics gpu__time_duration.sum`);
// `./ffn_timing small` checks everything but times only the small shapes (cooperative FFN vs the
// one-launch kernel and the two projections). `./ffn_timing r5` (round 5, benchmarks/ffn.md): the
// cooperative FFN's variants (CVARS) x grid x phase-2 K splits, each checked first; `r5ncu` launches
// a short list of configs 3 times each for `ncu --metrics gpu__time_duration.sum --cache-control
// none --clock-control none`. (Round 4's `r4` sweep is in git history.) `./ffn_timing r6 base|all|<variant>`
// (round 6): the bulk-copy cooperative FFN of scripts/ffn_bulk.cuh (BVARS), each variant checked on
// the f64 cases at 3 split choices first, then timed at 4096x11008 next to the crate's kernel; `base`
// adds the bandwidth ceilings (plain loads, bulk-copy rings) and checks the crate's kernel.
// Link flags on the build machine's pip CUDA: add -L$CUDA_ROOT/lib.
#define FFN_NO_ENTRIES
#include "ffn.cu"
#include "ffn_fused.cu"
#include "ffn_coop.cu"
#include "ffn_bulk.cuh"
#include "bias_act.cu"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cmath>
#include <random>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)
#include "ffn_harness_common.cuh"  // time_us, fill, gelu, Coop, coop_params, CoopCase, coop_cases

// Launch and grid-barrier floors of the cooperative FFN: an empty kernel, launched plainly and
// cooperatively, and one with a single grid sync (the barrier between the FFN's phases).
__global__ void __launch_bounds__(ffn::COOP_THREADS) kempty(int) {}
__global__ void __launch_bounds__(ffn::COOP_THREADS) kbarrier(int) { cooperative_groups::this_grid().sync(); }

using ffn::Params;
template <tg::Act A, int NT, int UNROLL, bool PIPE>
__global__ void __launch_bounds__(256) kproj(const Params p) {
  ffn::proj_small_m<__half, A, false, NT, true, UNROLL, PIPE>(p);
}
template <int NT>
__global__ void __launch_bounds__(ffn::FusedTraits<false, NT>::THREADS) kfused(const ffn::FusedParams p) {
  ffn::ffn_fused<__half, tg::Act::Gelu, false, NT>(p);
}
template <int NT, int R2 = 16, int PRE = ffn::COOP_PRE, bool PAIR1 = false, bool HL1 = false, int LB = ffn::COOP_MIN_BLOCKS,
          int SLEEP = 0, int PF = 0>
__global__ void __launch_bounds__(ffn::COOP_THREADS, LB) kcoop(const ffn::CoopParams p) {
  ffn::ffn_coop<__half, tg::Act::Gelu, NT, R2, PRE, PAIR1, HL1, SLEEP, PF>(p);
}
typedef void (*KCoop)(const ffn::CoopParams);
// Round 5 variants of the cooperative FFN (template knobs of ffn_coop, kernels/ffn_coop.cu): phase-2
// rows per unit R2 and W2 batch PRE (R2 / 8 * PRE = W2 loads per lane per batch), PAIR1 (phase 1
// takes row groups rg and rg + G together), HL1 (L1-cached hidden loads), LB (__launch_bounds__
// minimum blocks per SM: 1 allows 255 registers).
struct CoopVar { const char* name; KCoop f1, f2; int r2; };  // f1: NT = 1 (M <= 8), f2: NT = 2
#define CV(NAME, R2, PRE, PAIR, HL, LB) {NAME, kcoop<1, R2, PRE, PAIR, HL, LB>, kcoop<2, R2, PRE, PAIR, HL, LB>, R2}
#define CVP(NAME, R2, PRE, HL, PF) {NAME, kcoop<1, R2, PRE, false, HL, 2, 0, PF>, kcoop<2, R2, PRE, false, HL, 2, 0, PF>, R2}
#define CVS(NAME, R2, PRE, SLEEP) {NAME, kcoop<1, R2, PRE, false, false, 2, SLEEP>, kcoop<2, R2, PRE, false, false, 2, SLEEP>, R2}
static CoopVar CVARS[] = {
  CV("crate", 16, 4, false, false, 2),
  CV("hl1", 16, 4, false, true, 2),
  CV("r8", 8, 8, false, false, 2),
  CV("r8p4", 8, 4, false, false, 2),
  CV("r8hl1", 8, 8, false, true, 2),
  CV("r8p12lb1", 8, 12, false, false, 1),
  CV("pairr8p12lb1", 8, 12, true, false, 1),
  CV("pair", 16, 4, true, false, 2),
  CV("pairhl1", 16, 4, true, true, 2),
  CV("pairr8", 8, 8, true, false, 2),
  CV("pairr8hl1", 8, 8, true, true, 2),
  CV("r32", 32, 2, false, false, 2),
  CV("r32hl1", 32, 2, false, true, 2),
  CV("r32p4lb1", 32, 4, false, true, 1),
  CV("pairr32hl1", 32, 2, true, true, 2),
  CVP("pfearly", 16, 4, false, -1),
  CVP("pfall2", 16, 4, false, 2),
  CVP("pfall4", 16, 4, false, 4),
  CVP("pfearlyhl1", 16, 4, true, -1),
  CVS("sleep100", 16, 4, 100),
  CVS("r8sleep100", 8, 8, 100),
  CVS("r8sleep30", 8, 8, 30),
  CVS("r8sleep300", 8, 8, 300),
};
__global__ void kact(__half* h, int64_t n) { ffn::act_inplace<__half, tg::Act::Gelu>(h, n); }
__global__ void kgate(const __half* h, __half* y, int64_t m, int64_t n) { ffn::gate_act<__half, tg::Act::Silu, true>(h, y, m, n); }
__global__ void kbias_act(const __half* x, const __half* b, __half* y, int64_t n, int64_t c) { bias_act<__half, tg::Act::Gelu>(x, b, y, n, c); }
__global__ void kread(const uint4* p, int64_t n, uint4* sink) {
  uint4 a = make_uint4(0, 0, 0, 0);
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = __ldg(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < 4; ++u) { a.x ^= v[u].x; a.y ^= v[u].y; a.z ^= v[u].z; a.w ^= v[u].w; }
  }
  for (; i < n; i += stride) { uint4 v = __ldg(p + i); a.x ^= v.x; a.y ^= v.y; a.z ^= v.z; a.w ^= v.w; }
  if (a.x == 0x12345678 && a.y == 0x9abcdef0) sink[0] = a;
}

typedef void (*KProj)(const Params);
struct Var { const char* name; KProj f; KProj f_id; int nt, unroll, pipe, warps; };  // warps 0: as the crate picks
#define V(NAME, NT, U, P, W) {NAME, kproj<tg::Act::Gelu, NT, U, P>, kproj<tg::Act::Identity, NT, U, P>, NT, U, P, W}
static Var VARS[] = {
  V("base", 1, 4, false, 0), V("u8", 1, 8, false, 0), V("pipe4", 1, 4, true, 0), V("pipe2", 1, 2, true, 0),
  V("pipe8", 1, 8, true, 0), V("pipe4w4", 1, 4, true, 4),
  V("nt2base", 2, 2, false, 0), V("nt2pipe2", 2, 2, true, 0), V("nt2pipe4", 2, 4, true, 0),
};

static int g_sms = 132;
struct Cfg { int warps, kpw, blocks, smem; };
static Cfg choose(int m, int n, int k, int nt, int force_warps) {  // mirrors choose_config in src/ffn/cuda.rs
  Cfg c;
  c.blocks = std::max((n + 15) / 16, 1);
  int w = (g_sms * 32 + c.blocks - 1) / c.blocks;
  w = std::min(std::max(w, 1), 8);
  w = std::min(w, std::max((k + 31) / 32, 1));
  if (force_warps) w = force_warps;
  c.warps = w;
  c.kpw = std::max(((k + w - 1) / w + 31) / 32, 1) * 32;
  c.smem = w * nt * 8 * 20 * 4;
  (void)m;
  return c;
}

static void launch(KProj f, const Cfg& c, const __half* x, const __half* w, const __half* b, __half* y, int m, int n, int k) {
  Params p{x, w, b, y, m, n, k, c.kpw};
  f<<<c.blocks, c.warps * 32, c.smem>>>(p);
}


// every variant vs an f64 reference on an odd-ish shape (and the big one at M = 16)
static bool check_variants() {
  std::mt19937 rng(std::random_device{}());
  bool ok = true;
  int shapes[][3] = {{7, 296, 1000}, {16, 300, 4104}, {13, 11008, 4096}};
  for (auto& s : shapes) {
    int m = s[0], n = s[1], k = s[2];
    std::vector<__half> hx, hw, hb;
    __half *x, *w, *b, *y;
    CK(cudaMalloc(&x, (size_t)m * k * 2)); CK(cudaMalloc(&w, (size_t)n * k * 2)); CK(cudaMalloc(&b, n * 2)); CK(cudaMalloc(&y, (size_t)m * n * 2));
    fill(x, (size_t)m * k, 1.f, rng, &hx); fill(w, (size_t)n * k, 1.f / sqrtf(k), rng, &hw); fill(b, n, 1.f, rng, &hb);
    std::vector<double> ref((size_t)m * n);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double a = 0;
        for (int q = 0; q < k; ++q) a += (double)__half2float(hx[(size_t)i * k + q]) * __half2float(hw[(size_t)j * k + q]);
        ref[(size_t)i * n + j] = gelu(a + __half2float(hb[j]));
      }
    for (auto& v : VARS) {
      if (m > v.nt * 8) continue;
      Cfg c = choose(m, n, k, v.nt, v.warps);
      CK(cudaMemset(y, 0xff, (size_t)m * n * 2));
      launch(v.f, c, x, w, b, y, m, n, k);
      CK(cudaDeviceSynchronize());
      std::vector<__half> hy((size_t)m * n);
      CK(cudaMemcpy(hy.data(), y, hy.size() * 2, cudaMemcpyDeviceToHost));
      double worst = 0;
      for (size_t i = 0; i < hy.size(); ++i) {
        double e = fabs(__half2float(hy[i]) - ref[i]) / (4e-3 + 4e-3 * fabs(ref[i]));
        if (!(e <= worst)) worst = std::isnan(e) ? 1e30 : std::max(worst, e);
      }
      if (worst > 1.0) { printf("CHECK FAIL %s m=%d n=%d k=%d worst/tol=%.3f\n", v.name, m, n, k, worst); ok = false; }
    }
    cudaFree(x); cudaFree(w); cudaFree(b); cudaFree(y);
  }
  // activation pass vs CPU
  {
    int m = 5, n = 1000;
    std::vector<__half> hh;
    __half *h, *y;
    CK(cudaMalloc(&h, m * 2 * n * 2)); CK(cudaMalloc(&y, m * n * 2));
    fill(h, m * 2 * n, 2.f, rng, &hh);
    kgate<<<dim3(1, m), 256>>>(h, y, m, n);
    std::vector<__half> hy(m * n);
    CK(cudaMemcpy(hy.data(), y, m * n * 2, cudaMemcpyDeviceToHost));
    for (int r = 0; r < m; ++r)
      for (int c = 0; c < n; ++c) {
        double g = __half2float(hh[r * 2 * n + c]), u = __half2float(hh[r * 2 * n + n + c]);
        double want = g / (1 + exp(-g)) * u, got = __half2float(hy[r * n + c]);
        if (fabs(got - want) > 2e-3 + 2e-3 * fabs(want)) { printf("CHECK FAIL gate %d %d %f %f\n", r, c, got, want); ok = false; r = m; break; }
      }
    kact<<<4, 256>>>(h, (int64_t)m * 2 * n - 3);
    std::vector<__half> ha(m * 2 * n);
    CK(cudaMemcpy(ha.data(), h, ha.size() * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < ha.size(); ++i) {
      double v = __half2float(hh[i]), want = i < ha.size() - 3 ? gelu(v) : v, got = __half2float(ha[i]);
      if (fabs(got - want) > 2e-3 + 2e-3 * fabs(want)) { printf("CHECK FAIL act %zu %f %f\n", i, got, want); ok = false; break; }
    }
    cudaFree(h); cudaFree(y);
  }
  printf("checks: %s\n", ok ? "ok" : "FAILED");
  return ok;
}


static void launch_coop(const ffn::CoopParams& p, int blocks, const CoopVar& v = CVARS[0]) {
  void* args[] = {(void*)&p};
  CK(cudaLaunchCooperativeKernel((const void*)(p.m <= 8 ? v.f1 : v.f2), blocks, ffn::COOP_THREADS, args, 0, 0));
}

// Variant v at `blocks` blocks and `force_splits` (0: the crate's rule) on every case, 3 launches
// each with the output poisoned first: within tolerance and bitwise repeatable.
static bool check_coop(const Coop& sc, int blocks, const CoopVar& v = CVARS[0], int force_splits = 0) {
  bool ok = true;
  for (auto& c : coop_cases()) {
    const int m = c.m, d = c.d, h = c.h, o = c.o;
    std::vector<__half> first;
    for (int rep = 0; rep < 3; ++rep) {
      CK(cudaMemset(c.y, 0xff, (size_t)m * o * 2));
      launch_coop(coop_params(sc, c.x, c.w1, c.b1, c.w2, c.b2, c.y, m, d, h, o, blocks, force_splits, v.r2), blocks, v);
      CK(cudaDeviceSynchronize());
      std::vector<__half> hy((size_t)m * o);
      CK(cudaMemcpy(hy.data(), c.y, hy.size() * 2, cudaMemcpyDeviceToHost));
      double worst = 0;
      for (size_t i = 0; i < hy.size(); ++i) {
        double e = fabs(__half2float(hy[i]) - c.ref[i]) / (8e-3 + 8e-3 * fabs(c.ref[i]));
        if (!(e <= worst)) worst = std::isnan(e) ? 1e30 : std::max(worst, e);
      }
      if (worst > 1.0) { printf("CHECK FAIL coop %s splits=%d G=%d m=%d d=%d h=%d worst/tol=%.3f\n", v.name, force_splits, blocks, m, d, h, worst); ok = false; }
      if (rep == 0) first = hy;
      else if (memcmp(first.data(), hy.data(), hy.size() * 2)) { printf("CHECK FAIL coop %s G=%d m=%d d=%d h=%d not repeatable\n", v.name, blocks, m, d, h); ok = false; }
    }
  }
  printf("coop checks %s splits=%d (G=%d): %s\n", v.name, force_splits, blocks, ok ? "ok" : "FAILED");
  return ok;
}


// Round 5: the cooperative FFN's variants (CVARS) x grid (1 / 2 blocks per SM, where the variant's
// occupancy allows) x phase-2 splits (0 = the crate's rule for the variant's R2), every variant first
// checked on 8 shapes x 3 split choices at each grid; then kernel times (back-to-back launches
// between events: L2-warm small shapes, 4096x11008 from HBM). ncu: a short list of configs, each
// launched 3 times untimed (read gpu__time_duration of the third).
static int occupancy(KCoop f) {
  int o = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o, f, ffn::COOP_THREADS, 0));
  return o;
}
static int round5(bool ncu) {
  NCU = ncu;
  for (auto& v : CVARS) {
    cudaFuncAttributes a1, a2;
    CK(cudaFuncGetAttributes(&a1, v.f1)); CK(cudaFuncGetAttributes(&a2, v.f2));
    printf("coop var %-10s nt1 regs %3d local %zu blocks/SM %d | nt2 regs %3d local %zu blocks/SM %d\n", v.name, a1.numRegs,
           a1.localSizeBytes, occupancy(v.f1), a2.numRegs, a2.localSizeBytes, occupancy(v.f2));
  }
  auto fits = [&](const CoopVar& v, int bps) { return occupancy(v.f1) >= bps && occupancy(v.f2) >= bps; };
  Coop sc;
  CK(cudaMalloc(&sc.partial, 16 << 20)); CK(cudaMalloc(&sc.tickets, 4096 * 4)); CK(cudaMemset(sc.tickets, 0, 4096 * 4));
  sc.tickets += 1;  // tickets[-1]: the SLEEP variants' barrier word
  CK(cudaMalloc(&sc.hidden, 1 << 20));
  // grids: one block per SM, one block per phase-1 row group of 768x3072 (192: no block idle in
  // phase 1), two per SM
  auto grids = [&](const CoopVar& v) {
    std::vector<int> gs;
    if (fits(v, 1)) gs.push_back(g_sms);
    if (fits(v, 2)) { gs.push_back(192); gs.push_back(2 * g_sms); }
    return gs;
  };
  if (!ncu) {
    bool ok = true;
    for (auto& v : CVARS)
      for (int blocks : grids(v))
        for (int fs : {0, 1, 3}) ok = check_coop(sc, blocks, v, fs) && ok;
    if (!ok) { printf("round5 checks FAILED\n"); return 1; }
  }
  const TimingBufs tb = timing_bufs();
  const int D = TimingBufs::D, H = TimingBufs::H;
  __half *x = tb.x, *w1 = tb.w1, *b1 = tb.b1, *w2 = tb.w2, *b2 = tb.b2, *y = tb.y, *hid = tb.hid;
  sc.hidden = hid;
  auto timed = [&](auto f, int iters) {
    if (ncu) { for (int i = 0; i < 3; ++i) f(); CK(cudaDeviceSynchronize()); return 0.0; }
    return time_us(f, iters);
  };
  {
    int arg = 0;
    void* args[] = {(void*)&arg};
    for (int bps : {1, 2}) {
      const int blocks = bps * g_sms;
      double te = timed([&] { kempty<<<blocks, ffn::COOP_THREADS>>>(0); }, 500);
      double tb = timed([&] { CK(cudaLaunchCooperativeKernel((const void*)kbarrier, blocks, ffn::COOP_THREADS, args, 0, 0)); }, 500);
      printf("r5 floor G=%d empty %.2f us, cooperative + one grid sync %.2f us\n", blocks, te, tb);
    }
  }
  // ncu: the crate's config and the candidates only
  auto in_ncu_list = [&](const CoopVar& v) {
    return !strcmp(v.name, "crate") || !strcmp(v.name, "r8") || !strcmp(v.name, "pairr8") || !strcmp(v.name, "r32hl1") ||
           !strcmp(v.name, "hl1") || !strcmp(v.name, "pairr32hl1") || !strcmp(v.name, "r8sleep100");
  };
  for (auto [d, hd] : {std::pair<int, int>{512, 2048}, {768, 3072}}) {
    for (int m : {1, 4, 16}) {
      for (auto& v : CVARS) {
        if (ncu && !in_ncu_list(v)) continue;
        for (int blocks : grids(v)) {
          if (blocks == 192 && d != 768) continue;
          for (int fs : {0, 1, 2, 4}) {
            if (ncu && fs > 1) continue;
            ffn::CoopParams cp = coop_params(sc, x, w1, b1, w2, b2, y, m, d, hd, d, blocks, fs, v.r2);
            if (fs && cp.splits != fs) continue;
            double tc = timed([&] { launch_coop(cp, blocks, v); }, 500);
            printf("r5 %dx%d m=%-2d coop %-10s G=%d splits=%d%s (x %d) %.2f us\n", d, hd, m, v.name, blocks, cp.splits,
                   fs ? "" : "(auto)", cp.k_per_split, tc);
          }
        }
      }
    }
  }
  for (int m : {1, 4, 16}) {
    for (auto& v : CVARS) {
      if (ncu && !in_ncu_list(v)) continue;
      for (int bps : {1, 2}) {
        if (!fits(v, bps)) continue;
        for (int fs : {0, 1, 2}) {
          if (ncu && fs) continue;
          const int blocks = bps * g_sms;
          ffn::CoopParams cp = coop_params(sc, x, w1, b1, w2, b2, y, m, D, H, D, blocks, fs, v.r2);
          if (fs && cp.splits != fs) continue;
          double tc = timed([&] { launch_coop(cp, blocks, v); }, 100);
          printf("r5 4096x11008 m=%-2d coop %-10s G=%d splits=%d%s %.2f us = %.2f TB/s\n", m, v.name, blocks, cp.splits,
                 fs ? "" : "(auto)", tc, 2.0 * H * D * 2 / tc / 1e6);
        }
      }
    }
  }
  return 0;
}


// Round 6: the bulk-copy cooperative FFN (scripts/ffn_bulk.cuh) vs the crate's kernel. Variants
// (BVARS): R1 / R2 rows per phase-1 / phase-2 unit, KT columns per tile, STAGES ring depth, EF
// evict-first L2 policy on the weight copies, DYN dynamic unit queue.
template <int NT, int R1, int R2, int KT, int ST, bool EF, bool DYN>
__global__ void __launch_bounds__(ffnb::BULK_THREADS, 1) kbulk(const ffnb::BulkParams p) {
  ffnb::ffn_bulk<__half, tg::Act::Gelu, NT, R1, R2, KT, ST, EF, DYN>(p);
}
typedef void (*KBulk)(const ffnb::BulkParams);
struct BulkVar { const char* name; KBulk f1, f2; int r2, smem; };
#define BV(NAME, R1, R2, KT, ST, EF, DYN) \
  {NAME, kbulk<1, R1, R2, KT, ST, EF, DYN>, kbulk<2, R1, R2, KT, ST, EF, DYN>, R2, ffnb::bulk_smem<KT, R1, R2, ST>()}
static BulkVar BVARS[] = {
  BV("b16", 16, 16, 512, 12, false, false),
  BV("b16d", 16, 16, 512, 12, false, true),
  BV("b8d", 16, 8, 512, 12, false, true),
  BV("b16def", 16, 16, 512, 12, true, true),
  BV("b16d6", 16, 16, 512, 6, false, true),
  BV("b16dk1", 16, 16, 1024, 6, false, true),
  BV("b32d", 32, 32, 512, 6, false, true),
  BV("b32x16d", 32, 16, 512, 6, false, true),
};
static unsigned* g_words;  // [0] grid barrier, [1..2] unit queues
static void launch_bulk(const ffn::CoopParams& cp, int blocks, const BulkVar& v) {
  ffnb::BulkParams bp{cp, g_words, g_words + 1};
  void* args[] = {(void*)&bp};
  CK(cudaLaunchCooperativeKernel((const void*)(cp.m <= 8 ? v.f1 : v.f2), blocks, ffnb::BULK_THREADS, args, v.smem, 0));
}
static bool check_bulk(const Coop& sc, int blocks, const BulkVar& v, int force_splits) {
  bool ok = true;
  for (auto& c : coop_cases()) {
    const int m = c.m, d = c.d, h = c.h, o = c.o;
    std::vector<__half> first;
    for (int rep = 0; rep < 3; ++rep) {
      CK(cudaMemset(c.y, 0xff, (size_t)m * o * 2));
      launch_bulk(coop_params(sc, c.x, c.w1, c.b1, c.w2, c.b2, c.y, m, d, h, o, blocks, force_splits, v.r2), blocks, v);
      CK(cudaDeviceSynchronize());
      std::vector<__half> hy((size_t)m * o);
      CK(cudaMemcpy(hy.data(), c.y, hy.size() * 2, cudaMemcpyDeviceToHost));
      double worst = 0;
      for (size_t i = 0; i < hy.size(); ++i) {
        double e = fabs(__half2float(hy[i]) - c.ref[i]) / (8e-3 + 8e-3 * fabs(c.ref[i]));
        if (!(e <= worst)) worst = std::isnan(e) ? 1e30 : std::max(worst, e);
      }
      if (worst > 1.0) { printf("CHECK FAIL bulk %s splits=%d G=%d m=%d d=%d h=%d worst/tol=%.3f\n", v.name, force_splits, blocks, m, d, h, worst); ok = false; }
      if (rep == 0) first = hy;
      else if (memcmp(first.data(), hy.data(), hy.size() * 2)) { printf("CHECK FAIL bulk %s G=%d m=%d d=%d h=%d not repeatable\n", v.name, blocks, m, d, h); ok = false; }
    }
  }
  printf("bulk checks %s splits=%d (G=%d): %s\n", v.name, force_splits, blocks, ok ? "ok" : "FAILED");
  return ok;
}
// `which`: "base" (bandwidth ceilings + the crate's kernel), a BVARS name, or "all"
static int round6(const char* which) {
  const bool all = !strcmp(which, "all"), base = all || !strcmp(which, "base");
  Coop sc;
  CK(cudaMalloc(&sc.partial, 16 << 20)); CK(cudaMalloc(&sc.tickets, 4096 * 4)); CK(cudaMemset(sc.tickets, 0, 4096 * 4));
  CK(cudaMalloc(&g_words, 64)); CK(cudaMemset(g_words, 0, 64));
  CK(cudaMalloc(&sc.hidden, 1 << 20));
  std::vector<BulkVar*> vars;
  for (auto& v : BVARS) if (all || !strcmp(which, v.name)) vars.push_back(&v);
  for (auto* v : vars) {
    CK(cudaFuncSetAttribute((const void*)v->f1, cudaFuncAttributeMaxDynamicSharedMemorySize, v->smem));
    CK(cudaFuncSetAttribute((const void*)v->f2, cudaFuncAttributeMaxDynamicSharedMemorySize, v->smem));
    cudaFuncAttributes a1, a2;
    CK(cudaFuncGetAttributes(&a1, v->f1)); CK(cudaFuncGetAttributes(&a2, v->f2));
    int o1 = 0, o2 = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o1, v->f1, ffnb::BULK_THREADS, v->smem));
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o2, v->f2, ffnb::BULK_THREADS, v->smem));
    printf("bulk var %-8s smem %d+%zu nt1 regs %d local %zu blocks/SM %d | nt2 regs %d local %zu blocks/SM %d\n", v->name,
           v->smem, a2.sharedSizeBytes, a1.numRegs, a1.localSizeBytes, o1, a2.numRegs, a2.localSizeBytes, o2);
    if (o1 < 1 || o2 < 1) { printf("bulk var %s does not fit\n", v->name); return 1; }
  }
  std::vector<BulkVar*> good;
  for (auto* v : vars) {
    bool ok = true;
    for (int fs : {0, 1, 3}) ok = check_bulk(sc, g_sms, *v, fs) && ok;
    if (ok) good.push_back(v);
  }
  if (base && !check_coop(sc, 2 * g_sms, CVARS[1])) return 1;
  const TimingBufs tb = timing_bufs();
  const int D = TimingBufs::D, H = TimingBufs::H;
  __half *x = tb.x, *w1 = tb.w1, *b1 = tb.b1, *w2 = tb.w2, *b2 = tb.b2, *y = tb.y, *hid = tb.hid;
  sc.hidden = hid;
  const double bytes = 2.0 * H * D * 2;
  if (base) {
    uint4* sink;
    CK(cudaMalloc(&sink, 64));
    const int64_t nb = (int64_t)H * D * 2;
    double rd = time_us([&] { kread<<<g_sms * 8, 512>>>((const uint4*)w1, nb / 16, sink); }, 50);
    printf("r6 read 90.2 MB ldg: %.2f us = %.2f TB/s\n", rd, nb / rd / 1e6);
    auto rb = [&](auto k, int chunk, int st, const char* name) {
      CK(cudaFuncSetAttribute((const void*)k, cudaFuncAttributeMaxDynamicSharedMemorySize, chunk * st));
      double t = time_us([&] { k<<<g_sms, 64, chunk * st>>>((const unsigned char*)w1, nb); }, 50);
      printf("r6 read 90.2 MB bulk %s: %.2f us = %.2f TB/s\n", name, t, nb / t / 1e6);
    };
    rb(ffnb::kread_bulk<16384, 12>, 16384, 12, "16KBx12");
    rb(ffnb::kread_bulk<8192, 24>, 8192, 24, "8KBx24");
    rb(ffnb::kread_bulk<32768, 6>, 32768, 6, "32KBx6");
    rb(ffnb::kread_bulk<16384, 4>, 16384, 4, "16KBx4");
  }
  for (int m : {1, 4, 16}) {
    // the crate's config for 4096x11008 (16-row units, L1-cached hidden, 2 blocks / SM, auto splits)
    ffn::CoopParams cp = coop_params(sc, x, w1, b1, w2, b2, y, m, D, H, D, 2 * g_sms, 0, 16);
    double tc = time_us([&] { launch_coop(cp, 2 * g_sms, CVARS[1]); }, 100);
    printf("r6 4096x11008 m=%-2d crate(hl1) G=%d splits=%d %.2f us = %.2f TB/s\n", m, 2 * g_sms, cp.splits, tc, bytes / tc / 1e6);
    for (auto* v : good) {
      for (int fs : {0, 2, 4}) {
        ffn::CoopParams bp = coop_params(sc, x, w1, b1, w2, b2, y, m, D, H, D, g_sms, fs, v->r2);
        if (fs && bp.splits != fs) continue;
        double tb = time_us([&] { launch_bulk(bp, g_sms, *v); }, 100);
        printf("r6 4096x11008 m=%-2d bulk %-8s G=%d splits=%d%s %.2f us = %.2f TB/s\n", m, v->name, g_sms, bp.splits,
               fs ? "" : "(auto)", tb, bytes / tb / 1e6);
      }
    }
  }
  for (auto dh : {std::pair<int, int>{512, 2048}, {768, 3072}}) {
    const int d = dh.first, hd = dh.second;
    for (int m : {1, 16}) {
      for (auto* v : good) {
        ffn::CoopParams bp = coop_params(sc, x, w1, b1, w2, b2, y, m, d, hd, d, g_sms, 0, v->r2);
        double tb = time_us([&] { launch_bulk(bp, g_sms, *v); }, 300);
        printf("r6 %dx%d m=%-2d bulk %-8s G=%d splits=%d %.2f us\n", d, hd, m, v->name, g_sms, bp.splits, tb);
      }
    }
  }
  return good.size() == vars.size() ? 0 : 1;
}

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);  // a run cut by `timeout` keeps the lines printed so far
  NCU = argc > 1 && !strcmp(argv[1], "ncu");
  const bool SMALL = argc > 1 && !strcmp(argv[1], "small");
  // r5: round-5 sweeps (cooperative FFN variants x grid x phase-2 splits); r5ncu: a short list of
  // configs launched 3 times each, untimed, for `ncu --metrics gpu__time_duration.sum`
  const bool R5NCU = argc > 1 && !strcmp(argv[1], "r5ncu");
  const bool R5 = R5NCU || (argc > 1 && !strcmp(argv[1], "r5"));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  g_sms = prop.multiProcessorCount;
  printf("%s, %d SMs\n", prop.name, g_sms);
  for (auto& v : VARS) {
    cudaFuncAttributes at;
    CK(cudaFuncGetAttributes(&at, v.f));
    int occ8 = 0, occ4 = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ8, v.f, 256, 8 * v.nt * 8 * 20 * 4));
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ4, v.f, 128, 4 * v.nt * 8 * 20 * 4));
    printf("var %-9s regs %3d  blocks/SM: %d (8 warps) %d (4 warps)\n", v.name, at.numRegs, occ8, occ4);
  }
  if (R5) return round5(R5NCU);
  if (argc > 2 && !strcmp(argv[1], "r6")) return round6(argv[2]);
  if (!NCU && !check_variants()) return 1;
  int occ_coop1 = 0, occ_coop2 = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ_coop1, kcoop<1>, ffn::COOP_THREADS, 0));
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ_coop2, kcoop<2>, ffn::COOP_THREADS, 0));
  printf("coop blocks/SM: %d (nt1) %d (nt2)\n", occ_coop1, occ_coop2);
  Coop sc;
  CK(cudaMalloc(&sc.partial, 16 << 20)); CK(cudaMalloc(&sc.tickets, 4096 * 4)); CK(cudaMemset(sc.tickets, 0, 4096 * 4));
  CK(cudaMalloc(&sc.hidden, 1 << 20));
  if (!NCU && (!check_coop(sc, g_sms) || !check_coop(sc, 2 * g_sms))) return 1;

  std::mt19937 rng(1);
  const int D = 4096, H = 11008, MMAX = 16;
  __half *x, *w1, *b1, *w2, *b2, *h, *y;
  CK(cudaMalloc(&x, MMAX * H * 2)); CK(cudaMalloc(&w1, (size_t)H * D * 2)); CK(cudaMalloc(&w2, (size_t)D * H * 2));
  CK(cudaMalloc(&b1, H * 2)); CK(cudaMalloc(&b2, D * 2)); CK(cudaMalloc(&h, MMAX * H * 2)); CK(cudaMalloc(&y, MMAX * D * 2));
  fill(x, MMAX * H, 1.f, rng); fill(w1, (size_t)H * D, 0.015f, rng); fill(w2, (size_t)D * H, 0.01f, rng);
  fill(b1, H, 1.f, rng); fill(b2, D, 1.f, rng);
  uint4* sink;
  CK(cudaMalloc(&sink, 64));
  const int IT = 40;
  if (!SMALL) {
  double rd = time_us([&] { kread<<<g_sms * 8, 512>>>((const uint4*)w1, (int64_t)H * D / 8, sink); }, IT);
  printf("read 90.2 MB: %.1f us = %.2f TB/s\n", rd, (double)H * D * 2 / rd / 1e6);
  const double bytes = 2.0 * H * D * 2;
  for (int m : {1, 4, 16}) {
    for (auto& v : VARS) {
      if (m > v.nt * 8 || (v.nt == 2 && m <= 8)) continue;
      Cfg c1 = choose(m, H, D, v.nt, v.warps), c2 = choose(m, D, H, v.nt, v.warps);
      double t1 = time_us([&] { launch(v.f, c1, x, w1, b1, h, m, H, D); }, IT);
      double t2 = time_us([&] { launch(v.f_id, c2, h, w2, b2, y, m, D, H); }, IT);
      double tp = time_us([&] { launch(v.f, c1, x, w1, b1, h, m, H, D); launch(v.f_id, c2, h, w2, b2, y, m, D, H); }, IT);
      printf("4096x11008 m=%-2d %-9s up %5.1f (w%d) down %5.1f (w%d) pair %5.1f us = %.2f TB/s\n", m, v.name, t1, c1.warps,
             t2, c2.warps, tp, bytes / tp / 1e6);
    }
  }
  }
  for (int bps : {1, 2}) {
    const int blocks = bps * g_sms;
    int arg = 0;
    void* args[] = {(void*)&arg};
    double te = time_us([&] { kempty<<<blocks, ffn::COOP_THREADS>>>(0); }, 200);
    double tce = time_us([&] { CK(cudaLaunchCooperativeKernel((const void*)kempty, blocks, ffn::COOP_THREADS, args, 0, 0)); }, 200);
    double tb = time_us([&] { CK(cudaLaunchCooperativeKernel((const void*)kbarrier, blocks, ffn::COOP_THREADS, args, 0, 0)); }, 200);
    printf("floor G=%d: empty kernel %.2f us, cooperative empty %.2f us, cooperative + one grid sync %.2f us\n", blocks, te,
           tce, tb);
  }
  // the cooperative FFN at 4096x11008 (weights from HBM), 1 and 2 blocks per SM
  for (int m : {1, 4, 16}) {
    for (int bps : {1, 2}) {
      const int blocks = bps * g_sms;
      ffn::CoopParams cp = coop_params(sc, x, w1, b1, w2, b2, y, m, D, H, D, blocks);
      double tc = time_us([&] { launch_coop(cp, blocks); }, IT);
      printf("4096x11008 m=%-2d cooperative G=%d (splits %d x %d) %.2f us = %.2f TB/s\n", m, blocks, cp.splits,
             cp.k_per_split, tc, 2.0 * H * D * 2 / tc / 1e6);
    }
  }
  // small shapes, M = 1 (weights L2-resident, as in a back-to-back bench loop)
  unsigned* tickets;
  float* partial;
  CK(cudaMalloc(&tickets, 4096 * 4)); CK(cudaMemset(tickets, 0, 4096 * 4)); CK(cudaMalloc(&partial, 64 << 20));
  for (auto [d, hd] : {std::pair<int, int>{512, 2048}, {768, 3072}}) {
    for (int m : {1, 4}) {
      ffn::FusedParams fp{x, w1, b1, w2, b2, y, partial, tickets, m, d, hd, d};
      int blocks = (hd + 63) / 64;
      double tf = time_us([&] { kfused<1><<<blocks, 512>>>(fp); }, 200);
      printf("%dx%d m=%d one_launch %.2f us\n", d, hd, m, tf);
      for (int bps : {1, 2}) {
        const int blocks = bps * g_sms;
        ffn::CoopParams cp = coop_params(sc, x, w1, b1, w2, b2, y, m, d, hd, d, blocks);
        double tc = time_us([&] { launch_coop(cp, blocks); }, 200);
        printf("%dx%d m=%d cooperative G=%d (splits %d x %d) %.2f us\n", d, hd, m, blocks, cp.splits, cp.k_per_split, tc);
      }
      for (auto& v : VARS) {
        if (v.nt != 1) continue;
        Cfg c1 = choose(m, hd, d, 1, v.warps), c2 = choose(m, d, hd, 1, v.warps);
        double tp = time_us([&] { launch(v.f, c1, x, w1, b1, h, m, hd, d); launch(v.f_id, c2, h, w2, b2, y, m, d, hd); }, 200);
        printf("%dx%d m=%d two_proj %-9s %.2f us (w%d/w%d)\n", d, hd, m, v.name, tp, c1.warps, c2.warps);
      }
    }
  }
  // large-M activation pass, 512 x 11008
  if (!SMALL) {
    const int64_t M = 512, N = 11008;
    __half *a, *o, *bb;
    CK(cudaMalloc(&a, M * 2 * N * 2)); CK(cudaMalloc(&o, M * 2 * N * 2)); CK(cudaMalloc(&bb, 2 * N * 2));
    CK(cudaMemset(a, 0, M * 2 * N * 2)); CK(cudaMemset(bb, 0, 2 * N * 2));
    const int64_t n = M * N;
    int eb = (int)std::min<int64_t>((n + 255) / 256, 65535);
    double tb = time_us([&] { kbias_act<<<eb, 256>>>(a, bb, o, n, N); }, 50);
    int vb = (int)((n / 8 + 255) / 256);
    double ti = time_us([&] { kact<<<vb, 256>>>(a, n); }, 50);
    double tg = time_us([&] { kgate<<<dim3((N / 8 + 255) / 256, M), 256>>>(a, o, M, N); }, 50);
    printf("512x11008: bias_act (scalar, new output) %.1f us, act in place (16B) %.1f us, gate [512,2x11008]->[512,11008] %.1f us\n", tb, ti, tg);
  }
  return 0;
}
