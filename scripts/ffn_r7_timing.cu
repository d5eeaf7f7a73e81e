// Round 7 (benchmarks/ffn.md): the cooperative FFN's load scheduling at 16 tokens. ptxas (CUDA 13.0,
// 128 registers) interleaves the NT = 2 loops' loads with the mmas (`-Xptxas -v` + cuobjdump: half a
// step's W1 / W2 loads go out only after the first mma, which waits for the first half), because the
// prologue's W2 batch stays in 32 registers through phase 1. Variants (template knobs PIPE2, PRO, PRE,
// U1 / P1 of `ffn_coop`) are each checked against an f64 reference (10 shapes incl. 16x4096x11008, 3
// split choices, 2 grids, bitwise repeatable), then timed back to back between CUDA events next to the
// crate's entries (`hl1` = the 16-row entries, `pr8` = the paired entries), interleaved over rounds.
// `./ffn_r7 0 san` only checks `pro1` (the crate's `_pf` entries' knobs), for compute-sanitizer.
// Build on the build machine, run on the GPU host:
//   nvcc -arch=sm_90a -O3 -std=c++17 -Ikernels -L$CUDA_ROOT/lib -o ffn_r7 scripts/ffn_r7_timing.cu && ./ffn_r7
#define FFN_NO_ENTRIES
#include "ffn_coop.cu"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)
#include "ffn_harness_common.cuh"  // time_us, fill, gelu, Coop, coop_params, CoopCase, coop_cases

template <int NT, int R2, int PRE, bool PAIR1, bool HL1, int LB, int U1, bool P1, bool PIPE2, int PRO>
__global__ void __launch_bounds__(ffn::COOP_THREADS, LB) kc(const ffn::CoopParams p) {
  ffn::ffn_coop<__half, tg::Act::Gelu, NT, R2, PRE, PAIR1, HL1, 0, 0, U1, P1, PIPE2, PRO>(p);
}
typedef void (*KC)(const ffn::CoopParams);
struct Var { const char* name; KC f1, f2; int r2; bool paired; };
// 16-row variants: R2 16, HL1, 2 blocks / SM; U1 for NT = 1 is 4 (the default), for NT = 2 as given
#define V16(NAME, PRE, U2, P1, PIPE2, PRO) \
  {NAME, kc<1, 16, PRE, false, true, 2, 4, false, PIPE2, PRO>, kc<2, 16, PRE, false, true, 2, U2, P1, PIPE2, PRO>, 16, false}
#define V16P(NAME, PRE, PIPE2, PRO) \
  {NAME, kc<1, 16, PRE, true, true, 2, 4, false, PIPE2, PRO>, kc<2, 16, PRE, true, true, 2, 4, false, PIPE2, PRO>, 16, false}
#define VPR8(NAME, PRO) {NAME, kc<1, 8, 12, true, false, 1, 4, false, false, PRO>, kc<2, 8, 12, true, false, 1, 4, false, false, PRO>, 8, true}
static Var VARS[] = {
  V16("hl1", 4, 4, false, false, 0),  // the crate's 16-row entries
  V16("pro1", 4, 4, false, false, 1),
  V16("pro2", 4, 4, false, false, 2),
  V16("p2pro1", 4, 4, false, true, 1),
  V16("p2pre3pro1", 3, 4, false, true, 1),
  V16("p2pre2pro1", 2, 4, false, true, 1),
  V16("p2pro0", 4, 4, false, true, 0),
  V16("u2p1p2pre3", 3, 2, true, true, 1),
  V16("pre6pro1", 6, 4, false, false, 1),
  V16P("pairpro1", 4, false, 1),  // phase-1 row-group pairs (4 W1 rows per lane share each x fragment)
  VPR8("pr8", 0),  // the crate's paired entries (768x3072)
  VPR8("pr8pro1", 1),
};

static int g_sms = 132;
static void launch(const ffn::CoopParams& p, int blocks, const Var& v) {
  void* args[] = {(void*)&p};
  CK(cudaLaunchCooperativeKernel((const void*)(p.m <= 8 ? v.f1 : v.f2), blocks, ffn::COOP_THREADS, args, 0, 0));
}
// every case, 3 launches each with the output poisoned: within tolerance and bitwise repeatable
static bool check(const Coop& sc, int blocks, const Var& v, int fs) {
  bool ok = true;
  for (auto& c : coop_cases()) {
    std::vector<__half> first;
    for (int rep = 0; rep < 3; ++rep) {
      CK(cudaMemset(c.y, 0xff, (size_t)c.m * c.o * 2));
      launch(coop_params(sc, c.x, c.w1, c.b1, c.w2, c.b2, c.y, c.m, c.d, c.h, c.o, blocks, v.paired ? 1 : fs, v.r2), blocks, v);
      CK(cudaDeviceSynchronize());
      std::vector<__half> hy((size_t)c.m * c.o);
      CK(cudaMemcpy(hy.data(), c.y, hy.size() * 2, cudaMemcpyDeviceToHost));
      double worst = 0;
      for (size_t i = 0; i < hy.size(); ++i) {
        double e = fabs(__half2float(hy[i]) - c.ref[i]) / (8e-3 + 8e-3 * fabs(c.ref[i]));
        if (!(e <= worst)) worst = std::isnan(e) ? 1e30 : std::max(worst, e);
      }
      if (worst > 1.0) { printf("CHECK FAIL %s splits=%d G=%d m=%d d=%d h=%d worst/tol=%.3f\n", v.name, fs, blocks, c.m, c.d, c.h, worst); ok = false; }
      if (rep == 0) first = hy;
      else if (memcmp(first.data(), hy.data(), hy.size() * 2)) { printf("CHECK FAIL %s G=%d m=%d d=%d h=%d not repeatable\n", v.name, blocks, c.m, c.d, c.h); ok = false; }
    }
  }
  printf("check %-11s splits=%d G=%d: %s\n", v.name, fs, blocks, ok ? "ok" : "FAILED");
  return ok;
}
static int occ(KC f) { int o = 0; CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o, f, ffn::COOP_THREADS, 0)); return o; }

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  const int rounds = argc > 1 ? atoi(argv[1]) : 5;
  const char* only = argc > 2 ? argv[2] : nullptr;  // time only variants whose name contains this (plus the baselines)
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  g_sms = prop.multiProcessorCount;
  printf("%s, %d SMs\n", prop.name, g_sms);
  for (auto& v : VARS) {
    cudaFuncAttributes a1, a2;
    CK(cudaFuncGetAttributes(&a1, v.f1)); CK(cudaFuncGetAttributes(&a2, v.f2));
    printf("var %-11s nt1 regs %3d local %zu blocks/SM %d | nt2 regs %3d local %zu blocks/SM %d\n", v.name, a1.numRegs,
           a1.localSizeBytes, occ(v.f1), a2.numRegs, a2.localSizeBytes, occ(v.f2));
  }
  Coop sc;
  CK(cudaMalloc(&sc.partial, 16 << 20)); CK(cudaMalloc(&sc.tickets, 4096 * 4)); CK(cudaMemset(sc.tickets, 0, 4096 * 4));
  CK(cudaMalloc(&sc.hidden, 1 << 20));
  if (only && !strcmp(only, "san")) {  // `./ffn_r7 0 san`: the crate's `_pf` knobs only, for compute-sanitizer
    for (auto& v : VARS)
      if (!strcmp(v.name, "pro1")) return check(sc, 2 * g_sms, v, 0) && check(sc, 192, v, 3) ? 0 : 1;
  }
  std::vector<const Var*> good;
  for (auto& v : VARS) {
    bool ok = true;
    if (v.paired) ok = check(sc, g_sms, v, 1);
    else
      for (int blocks : {2 * g_sms, 192})
        for (int fs : {0, 1, 3}) ok = check(sc, blocks, v, fs) && ok;
    if (ok) good.push_back(&v);
  }
  printf("checks: %zu of %zu variants passed\n", good.size(), sizeof(VARS) / sizeof(VARS[0]));
  const TimingBufs tb = timing_bufs();
  const int D = TimingBufs::D, H = TimingBufs::H;
  __half *x = tb.x, *w1 = tb.w1, *b1 = tb.b1, *w2 = tb.w2, *b2 = tb.b2, *y = tb.y, *hid = tb.hid;
  sc.hidden = hid;
  struct Shape { int d, h, m; bool paired; int iters; };
  // 4096x11008 (weights from HBM, 264 blocks), 1024x4096 (256 blocks: one per phase-1 row group, 4 splits),
  // 768x3072 (the paired entries, 132 blocks)
  Shape shapes[] = {{4096, 11008, 16, false, 100}, {4096, 11008, 1, false, 100}, {4096, 11008, 4, false, 100},
                    {1024, 4096, 16, false, 300}, {1024, 4096, 1, false, 300}, {768, 3072, 1, true, 500},
                    {768, 3072, 16, true, 500}};
  for (auto& s : shapes) {
    const int blocks = s.paired ? g_sms : std::min(2 * g_sms, std::max((s.h + 15) / 16, g_sms));
    std::vector<const Var*> vs;
    for (auto* v : good)
      if (v->paired == s.paired && (!only || strstr(v->name, only) || !strcmp(v->name, "hl1") || !strcmp(v->name, "pr8"))) vs.push_back(v);
    std::vector<std::vector<double>> t(vs.size());
    for (int r = 0; r < rounds; ++r)
      for (size_t i = 0; i < vs.size(); ++i) {
        ffn::CoopParams cp = coop_params(sc, x, w1, b1, w2, b2, y, s.m, s.d, s.h, s.d, blocks, s.paired ? 1 : 0, vs[i]->r2);
        t[i].push_back(time_us([&] { launch(cp, blocks, *vs[i]); }, s.iters));
      }
    for (size_t i = 0; i < vs.size(); ++i) {
      std::sort(t[i].begin(), t[i].end());
      ffn::CoopParams cp = coop_params(sc, x, w1, b1, w2, b2, y, s.m, s.d, s.h, s.d, blocks, s.paired ? 1 : 0, vs[i]->r2);
      printf("r7 %dx%d m=%-2d %-11s G=%d splits=%d median %.2f min %.2f max %.2f us (%d rounds x %d)\n", s.d, s.h, s.m,
             vs[i]->name, blocks, cp.splits, t[i][t[i].size() / 2], t[i][0], t[i].back(), rounds, s.iters);
    }
  }
  return 0;
}
