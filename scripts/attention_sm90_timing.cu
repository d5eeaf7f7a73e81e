// Standalone harness for the Hopper prefill kernels (kernels/attention_sm90.cu): checks every
// instance against an f64 CPU reference on random data (causal/non-causal, GQA, Nq != Nk, tails,
// strided inputs, f16/bf16) and times them with cudaEvents over many back-to-back launches, next
// to the portable mma.sync kernel (kernels/attention.cu) in the same run. Kernel time only: no
// host overhead of the candle op.
//   source ~/.cache/tiny-gemm/cuda-13.0/env.sh
//   nvcc -gencode=arch=compute_90a,code=sm_90a -O3 -std=c++17 --expt-relaxed-constexpr \
//        -Ikernels -L$CUDA_ROOT/lib scripts/attention_sm90_timing.cu -o attention_sm90_timing
//   ./attention_sm90_timing [--quick | --time-only | --race]   (on an H100/H200)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <algorithm>
#include <random>
#include <string>
#include <vector>
#include <map>
#include <utility>
#include <cuda.h>

#define TG_SM90_DEBUG  // the kernel dumps the raw scores of its first tile when p.o_partial is set
#include "attention.cu"
#include "attention_sm90.cu"

// instances beyond the crate's, for comparison (round 5: TMA loads)
#define ATTN_ROUND5(T, TNAME)                  \
  ATTN_SM90(T, TNAME, 64, 1, 128, 3, 1)        \
  ATTN_SM90T(T, TNAME, 128, 2, 128, 3)         \
  ATTN_SM90T(T, TNAME, 128, 2, 64, 6)          \
  ATTN_SM90T(T, TNAME, 128, 2, 64, 5)          \
  ATTN_WST(T, TNAME, 128, 2, 128, 3, 0, 0)     \
  ATTN_WST(T, TNAME, 128, 2, 128, 3, 1, 0)     \
  ATTN_WST(T, TNAME, 128, 2, 64, 6, 1, 0)      \
  ATTN_WST(T, TNAME, 64, 2, 128, 4, 0, 1)      \
  ATTN_SM90KST(T, TNAME, 64, 64, 4)            \
  ATTN_SM90KST(T, TNAME, 64, 64, 5)            \
  ATTN_SM90KST(T, TNAME, 64, 128, 3)           \
  ATTN_SM90TZ(T, TNAME, 128, 2, 128, 3, 0)     \
  ATTN_SM90TZ(T, TNAME, 128, 2, 128, 3, 8)     \
  ATTN_SM90TF(T, TNAME, 128, 2, 128, 3)
ATTN_ROUND5(__half, f16)
ATTN_ROUND5(__nv_bfloat16, bf16)

#define CK(x)                                                                               \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", #x, __FILE__, __LINE__, cudaGetErrorString(e_)); \
      exit(1);                                                                              \
    }                                                                                       \
  } while (0)

typedef void (*KernelFn)(Params);
typedef void (*KernelTma)(Params, tg::attn90::TmaMaps);
using tg::attn90::TmaMaps;

struct Variant {
  const char* name;
  KernelFn f16, bf16;
  int d, wgs, bn, stages, overlap;
  int ws = 0, pp = 0, ks = 0, regs = 0;  // warp-specialized kernel: consumer warpgroups = wgs
  int cks = 0;                           // attn_prefill_sm90_ks (wgs = 2: two rings)
  KernelTma t16 = nullptr, tb16 = nullptr;  // TMA instances (then f16/bf16 are null)
  int bm() const { return (ws && ks) || cks ? 64 : 64 * wgs; }
  int threads() const { return ws ? 128 * wgs + (regs ? 128 : 32) : 128 * wgs; }
  int smem() const {
    return (d * 2) * bm() + (cks ? 2 : 1) * stages * 2 * bn * d * 2 + (ws && ks ? (d / 2 + 4) * 128 * 4 : 0) +
           1024;
  }
};

#define V(D, W, N, S, O)                                                                        \
  {"sm90_d" #D "_w" #W "_n" #N "_s" #S "_o" #O, attn_sm90_f16_d##D##_w##W##_n##N##_s##S##_o##O, \
   attn_sm90_bf16_d##D##_w##W##_n##N##_s##S##_o##O, D, W, N, S, O}
#define W(D, C, N, S, P, K, R)                                                                      \
  {"ws_d" #D "_c" #C "_n" #N "_s" #S "_p" #P "_k" #K "_r" #R,                                        \
   attn_ws_f16_d##D##_c##C##_n##N##_s##S##_p##P##_k##K##_r##R,                                        \
   attn_ws_bf16_d##D##_c##C##_n##N##_s##S##_p##P##_k##K##_r##R, D, C, N, S, 1, 1, P, K, R}
#define VG(D, W, N, S, O, G)                                                                              \
  {"sm90_d" #D "_w" #W "_n" #N "_s" #S "_o" #O "_g" #G, attn_sm90_f16_d##D##_w##W##_n##N##_s##S##_o##O##_g##G, \
   attn_sm90_bf16_d##D##_w##W##_n##N##_s##S##_o##O##_g##G, D, W, N, S, O}
#define VK(D, N, S)                                                                                          \
  {"sm90ks_d" #D "_n" #N "_s" #S, attn_sm90ks_f16_d##D##_n##N##_s##S, attn_sm90ks_bf16_d##D##_n##N##_s##S, D, 2, \
   N, S, 1, 0, 0, 0, 0, 1}
#define VT(D, W, N, S)                                                                                     \
  {"sm90t_d" #D "_w" #W "_n" #N "_s" #S, nullptr, nullptr, D, W, N, S, 1, 0, 0, 0, 0, 0,                  \
   attn_sm90t_f16_d##D##_w##W##_n##N##_s##S, attn_sm90t_bf16_d##D##_w##W##_n##N##_s##S}
#define WT(D, C, N, S, P, K)                                                                                \
  {"wst_d" #D "_c" #C "_n" #N "_s" #S "_p" #P "_k" #K, nullptr, nullptr, D, C, N, S, 1, 1, P, K, 1, 0,      \
   attn_wst_f16_d##D##_c##C##_n##N##_s##S##_p##P##_k##K, attn_wst_bf16_d##D##_c##C##_n##N##_s##S##_p##P##_k##K}
#define VKT(D, N, S)                                                                                 \
  {"sm90kst_d" #D "_n" #N "_s" #S, nullptr, nullptr, D, 2, N, S, 1, 0, 0, 0, 0, 1,                   \
   attn_sm90kst_f16_d##D##_n##N##_s##S, attn_sm90kst_bf16_d##D##_n##N##_s##S}
#define VTZ(D, W, N, S, Z)                                                                                   \
  {"sm90t_d" #D "_w" #W "_n" #N "_s" #S "_z" #Z, nullptr, nullptr, D, W, N, S, 1, 0, 0, 0, 0, 0,              \
   attn_sm90t_f16_d##D##_w##W##_n##N##_s##S##_z##Z, attn_sm90t_bf16_d##D##_w##W##_n##N##_s##S##_z##Z}
#define VTF(D, W, N, S)                                                                                      \
  {"sm90tf_d" #D "_w" #W "_n" #N "_s" #S, nullptr, nullptr, D, W, N, S, 1, 0, 0, 0, 0, 0,                     \
   attn_sm90tf_f16_d##D##_w##W##_n##N##_s##S, attn_sm90tf_bf16_d##D##_w##W##_n##N##_s##S}
#define VTFZ(D, W, N, S, Z)                                                                                  \
  {"sm90tfz_d" #D "_w" #W "_n" #N "_s" #S "_z" #Z, nullptr, nullptr, D, W, N, S, 1, 0, 0, 0, 0, 0,             \
   attn_sm90tfz_f16_d##D##_w##W##_n##N##_s##S##_z##Z, attn_sm90tfz_bf16_d##D##_w##W##_n##N##_s##S##_z##Z}
static Variant VARIANTS[] = {
    // the crate's instances first (sm90::choose_block), then the comparison ones
    WT(64, 2, 64, 6, 0, 1), V(64, 1, 64, 3, 0), VTFZ(128, 2, 128, 3, 8),
    // rounds 3-5 crate instances (cp.async / TMA fallbacks and earlier choices)
    VK(64, 64, 4), V(128, 2, 128, 3, 1), VT(128, 2, 128, 3), V(64, 1, 128, 3, 1),
    // round 5: TMA loads
    VT(128, 2, 64, 6), VT(128, 2, 64, 5), WT(128, 2, 128, 3, 0, 0), WT(128, 2, 128, 3, 1, 0),
    WT(128, 2, 64, 6, 1, 0), WT(64, 2, 128, 4, 0, 1), VKT(64, 64, 4), VKT(64, 64, 5), VKT(64, 128, 3),
    VTZ(128, 2, 128, 3, 0), VTZ(128, 2, 128, 3, 8), VTF(128, 2, 128, 3),
};
static const int FIRST_D128 = 2;  // index of the first D = 128 instance (printed on every case)

struct Problem {
  int b, hq, hkv, nq, nk, d;
  bool causal, bf16, strided;
};

static float bits_to_float(uint16_t x, bool bf16) {
  if (bf16) {
    uint32_t u = uint32_t(x) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  __half h;
  memcpy(&h, &x, 2);
  return __half2float(h);
}
static uint16_t float_to_bits(float f, bool bf16) {
  uint16_t x;
  if (bf16) {
    __nv_bfloat16 h = __float2bfloat16(f);
    memcpy(&x, &h, 2);
  } else {
    __half h = __float2half(f);
    memcpy(&x, &h, 2);
  }
  return x;
}

struct Buffers {
  std::vector<uint16_t> q, k, v;  // host, in the (possibly strided) physical layout
  uint16_t *dq = nullptr, *dk = nullptr, *dv = nullptr, *dout = nullptr;
  Params p{};
  std::map<std::pair<int, int>, TmaMaps> maps;  // by (Q box rows, K/V box rows)
};

// cuTensorMapEncodeTiled through the runtime's driver entry point (no -lcuda)
typedef CUresult (*EncodeTiled)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static EncodeTiled encode_tiled() {
  static EncodeTiled f = nullptr;
  if (f == nullptr) {
    cudaDriverEntryPointQueryResult q;
    CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", reinterpret_cast<void**>(&f), 12000,
                                        cudaEnableDefault, &q));
    if (q != cudaDriverEntryPointSuccess || f == nullptr) {
      fprintf(stderr, "cuTensorMapEncodeTiled not found\n");
      exit(1);
    }
  }
  return f;
}
// [B, H, N, D] (element strides sb, sh, sn; D stride 1) as the 4-D tensor (D, N, H, B), boxes of 64
// columns x `box_rows` rows, 128-byte swizzle, zero fill (the crate's sm90::tensor_map).
static tg::attn90::TmaDesc tensor_map(const void* ptr, int b, int h, int n, int d, int64_t sb, int64_t sh,
                                      int64_t sn, int box_rows) {
  CUtensorMap m;
  const cuuint64_t dims[4] = {cuuint64_t(d), cuuint64_t(n), cuuint64_t(h), cuuint64_t(b)};
  const cuuint64_t strides[3] = {cuuint64_t(sn) * 2, cuuint64_t(sh) * 2, cuuint64_t(sb) * 2};
  const cuuint32_t box[4] = {64, cuuint32_t(box_rows), 1, 1}, elem[4] = {1, 1, 1, 1};
  const CUresult r = encode_tiled()(&m, CU_TENSOR_MAP_DATA_TYPE_UINT16, 4, const_cast<void*>(ptr), dims, strides, box,
                                    elem, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                    CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    fprintf(stderr, "cuTensorMapEncodeTiled failed: %d\n", int(r));
    exit(1);
  }
  tg::attn90::TmaDesc t;
  static_assert(sizeof(t) == sizeof(m), "CUtensorMap is 128 bytes");
  memcpy(&t, &m, sizeof(m));
  return t;
}

static std::mt19937_64 rng(uint64_t(time(nullptr)) ^ 0x5eedULL);

// Physical layout: contiguous [B, H, N, D], or strided [B, N, H, D].
static void strides(const Problem& pr, int h, int n, int64_t& sb, int64_t& sh, int64_t& sn) {
  if (pr.strided) {
    sb = int64_t(n) * h * pr.d; sh = pr.d; sn = int64_t(h) * pr.d;
  } else {
    sb = int64_t(h) * n * pr.d; sh = int64_t(n) * pr.d; sn = pr.d;
  }
}

static Buffers make(const Problem& pr) {
  Buffers bf;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto fill = [&](std::vector<uint16_t>& x, size_t n) {
    x.resize(n);
    for (auto& e : x) e = float_to_bits(nd(rng), pr.bf16);
  };
  size_t nq = size_t(pr.b) * pr.hq * pr.nq * pr.d, nk = size_t(pr.b) * pr.hkv * pr.nk * pr.d;
  fill(bf.q, nq); fill(bf.k, nk); fill(bf.v, nk);
  CK(cudaMalloc(&bf.dq, nq * 2)); CK(cudaMalloc(&bf.dk, nk * 2)); CK(cudaMalloc(&bf.dv, nk * 2));
  CK(cudaMalloc(&bf.dout, nq * 2));
  CK(cudaMemcpy(bf.dq, bf.q.data(), nq * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(bf.dk, bf.k.data(), nk * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(bf.dv, bf.v.data(), nk * 2, cudaMemcpyHostToDevice));
  Params& p = bf.p;
  p.q = bf.dq; p.k = bf.dk; p.v = bf.dv; p.o = bf.dout;
  strides(pr, pr.hq, pr.nq, p.q_sb, p.q_sh, p.q_sn);
  strides(pr, pr.hkv, pr.nk, p.k_sb, p.k_sh, p.k_sn);
  strides(pr, pr.hkv, pr.nk, p.v_sb, p.v_sh, p.v_sn);
  p.b = pr.b; p.hq = pr.hq; p.hkv = pr.hkv; p.nq = pr.nq; p.nk = pr.nk; p.d = pr.d;
  p.causal = pr.causal; p.causal_offset = pr.nk - pr.nq;
  p.scale_log2 = float(1.0 / sqrt(double(pr.d)) * 1.4426950408889634);
  p.num_splits = 1; p.keys_per_split = pr.nk;
  return bf;
}
static void release(Buffers& bf) {
  cudaFree(bf.dq); cudaFree(bf.dk); cudaFree(bf.dv); cudaFree(bf.dout);
}

static const TmaMaps& maps_for(Buffers& bf, int bm, int bn) {
  auto it = bf.maps.find({bm, bn});
  if (it != bf.maps.end()) return it->second;
  const Params& p = bf.p;
  TmaMaps m;
  m.q = tensor_map(p.q, p.b, p.hq, p.nq, p.d, p.q_sb, p.q_sh, p.q_sn, bm);
  m.k = tensor_map(p.k, p.b, p.hkv, p.nk, p.d, p.k_sb, p.k_sh, p.k_sn, bn);
  m.v = tensor_map(p.v, p.b, p.hkv, p.nk, p.d, p.v_sb, p.v_sh, p.v_sn, bn);
  return bf.maps[{bm, bn}] = m;
}

static void launch_sm90(const Variant& v, const Problem& pr, Buffers& bf) {
  dim3 grid(pr.b * pr.hq, (pr.nq + v.bm() - 1) / v.bm());
  if (v.t16 != nullptr) {
    const TmaMaps& m = maps_for(bf, v.bm(), v.bn);
    KernelTma f = pr.bf16 ? v.tb16 : v.t16;
    f<<<grid, v.threads(), v.smem()>>>(bf.p, m);
    return;
  }
  KernelFn f = pr.bf16 ? v.bf16 : v.f16;
  f<<<grid, v.threads(), v.smem()>>>(bf.p);
}

// f64 reference of the checked rows: every row when small, else a random sample
struct Ref {
  std::vector<int64_t> rows;
  std::vector<double> out;  // rows.size() x d
};
static Ref reference(const Problem& pr, const Buffers& bf, int max_rows = 3000) {
  Ref ref;
  const int64_t total_rows = int64_t(pr.b) * pr.hq * pr.nq;
  std::vector<int64_t>& rows = ref.rows;
  if (total_rows <= max_rows) {
    for (int64_t r = 0; r < total_rows; ++r) rows.push_back(r);
  } else {
    std::uniform_int_distribution<int64_t> ud(0, total_rows - 1);
    for (int i = 0; i < max_rows / 2; ++i) rows.push_back(ud(rng));
    rows.push_back(0); rows.push_back(total_rows - 1);
  }
  int64_t qsb, qsh, qsn, ksb, ksh, ksn;
  strides(pr, pr.hq, pr.nq, qsb, qsh, qsn);
  strides(pr, pr.hkv, pr.nk, ksb, ksh, ksn);
  const double scale = 1.0 / sqrt(double(pr.d));
  std::vector<double> s(pr.nk), acc(pr.d);
  for (int64_t r : rows) {
    const int b = int(r / (int64_t(pr.hq) * pr.nq)), h = int(r / pr.nq % pr.hq), i = int(r % pr.nq);
    const int hk = h / (pr.hq / pr.hkv);
    const uint16_t* qrow = bf.q.data() + b * qsb + h * qsh + int64_t(i) * qsn;
    double mx = -INFINITY;
    for (int j = 0; j < pr.nk; ++j) {
      if (pr.causal && j > i + pr.nk - pr.nq) { s[j] = -INFINITY; continue; }
      const uint16_t* krow = bf.k.data() + b * ksb + hk * ksh + int64_t(j) * ksn;
      double dot = 0;
      for (int c = 0; c < pr.d; ++c) dot += double(bits_to_float(qrow[c], pr.bf16)) * bits_to_float(krow[c], pr.bf16);
      s[j] = dot * scale;
      mx = std::max(mx, s[j]);
    }
    std::fill(acc.begin(), acc.end(), 0.0);
    double l = 0;
    if (mx != -INFINITY) {
      for (int j = 0; j < pr.nk; ++j) {
        if (s[j] == -INFINITY) continue;
        const double w = exp(s[j] - mx);
        l += w;
        const uint16_t* vrow = bf.v.data() + b * ksb + hk * ksh + int64_t(j) * ksn;
        for (int c = 0; c < pr.d; ++c) acc[c] += w * bits_to_float(vrow[c], pr.bf16);
      }
    }
    for (int c = 0; c < pr.d; ++c) ref.out.push_back(l > 0 ? acc[c] / l : 0.0);
  }
  return ref;
}

// max |gpu - ref| over the reference's rows
static double check(const Problem& pr, Buffers& bf, const Ref& ref, int& bad_nan) {
  size_t n_out = size_t(pr.b) * pr.hq * pr.nq * pr.d;
  std::vector<uint16_t> out(n_out);
  CK(cudaMemcpy(out.data(), bf.dout, n_out * 2, cudaMemcpyDeviceToHost));
  double max_err = 0.0;
  for (size_t k = 0; k < ref.rows.size(); ++k) {
    const int64_t r = ref.rows[k];
    for (int c = 0; c < pr.d; ++c) {
      const double got = bits_to_float(out[r * pr.d + c], pr.bf16);
      if (std::isnan(got)) { bad_nan++; continue; }
      max_err = std::max(max_err, fabs(got - ref.out[k * pr.d + c]));
    }
  }
  return max_err;
}

static float time_launches(const std::function<void()>& fn, int iters) {
  for (int i = 0; i < 5; ++i) fn();
  CK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  cudaEventCreate(&a); cudaEventCreate(&b);
  cudaEventRecord(a);
  for (int i = 0; i < iters; ++i) fn();
  cudaEventRecord(b);
  CK(cudaEventSynchronize(b));
  float ms;
  cudaEventElapsedTime(&ms, a, b);
  CK(cudaGetLastError());
  return ms * 1000.0f / iters;
}

// ---- op vs kernel: the crate's PTX through the driver's JIT (as the op loads it) vs this
// binary's nvcc SASS, short (50 launches) and sustained (ITERS launches) timings ----
static void* driver_fn(const char* name) {
  void* f = nullptr;
  cudaDriverEntryPointQueryResult q;
  CK(cudaGetDriverEntryPointByVersion(name, &f, 12000, cudaEnableDefault, &q));
  if (q != cudaDriverEntryPointSuccess || f == nullptr) {
    fprintf(stderr, "%s not found\n", name);
    exit(1);
  }
  return f;
}
#define CU(x)                                                                 \
  do {                                                                        \
    CUresult r_ = (x);                                                        \
    if (r_ != CUDA_SUCCESS) {                                                 \
      fprintf(stderr, "driver error %d at %s:%d: %s\n", int(r_), __FILE__, __LINE__, #x); \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

static int gap_mode(const char* ptx_path, int iters) {
  typedef CUresult (*LoadData)(CUmodule*, const void*);
  typedef CUresult (*GetFunction)(CUfunction*, CUmodule, const char*);
  typedef CUresult (*FuncSetAttr)(CUfunction, CUfunction_attribute, int);
  typedef CUresult (*FuncGetAttr)(int*, CUfunction_attribute, CUfunction);
  typedef CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                   CUstream, void**, void**);
  auto load = (LoadData)driver_fn("cuModuleLoadData");
  auto get = (GetFunction)driver_fn("cuModuleGetFunction");
  auto set_attr = (FuncSetAttr)driver_fn("cuFuncSetAttribute");
  auto get_attr = (FuncGetAttr)driver_fn("cuFuncGetAttribute");
  auto launch = (LaunchKernel)driver_fn("cuLaunchKernel");
  FILE* f = fopen(ptx_path, "rb");
  if (f == nullptr) {
    fprintf(stderr, "cannot open %s\n", ptx_path);
    return 1;
  }
  std::string ptx;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) ptx.append(buf, n);
  fclose(f);
  CK(cudaFree(nullptr));  // the primary context, current for the driver calls
  CUmodule mod;
  CU(load(&mod, ptx.c_str()));
  const Problem pr{1, 32, 32, 4096, 4096, 128, true, false, false};
  Buffers bf = make(pr);
  const Ref ref = reference(pr, bf, 256);
  const double flops = 4.0 * pr.b * pr.hq * double(pr.nq) * pr.nk * pr.d * 0.5;
  for (const Variant& v : VARIANTS) {
    // the crate's D = 128 instances: attn_<kind>_f16_<rest> for the variant <kind>_<rest>
    if (v.d != 128) continue;
    const char* us = strchr(v.name, '_');
    char name[128];
    snprintf(name, sizeof name, "attn_%.*s_f16%s", int(us - v.name), v.name, us);
    CUfunction fn;
    if (get(&fn, mod, name) != CUDA_SUCCESS) continue;  // not a crate instance
    CU(set_attr(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, v.smem()));
    int regs = 0;
    CU(get_attr(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, fn));
    cudaFuncAttributes fa;
    CK(cudaFuncGetAttributes(&fa, v.t16 ? (const void*)v.t16 : (const void*)v.f16));
    const TmaMaps& maps = maps_for(bf, v.bm(), v.bn);
    Params p = bf.p;
    TmaMaps m = maps;
    void* args_t[] = {&p, &m};
    void* args_c[] = {&p};
    const unsigned gx = pr.b * pr.hq, gy = (pr.nq + v.bm() - 1) / v.bm();
    auto jit = [&] {
      CU(launch(fn, gx, gy, 1, v.threads(), 1, 1, v.smem(), nullptr, v.t16 ? args_t : args_c, nullptr));
    };
    auto sass = [&] { launch_sm90(v, pr, bf); };
    for (int round = 0; round < 2; ++round) {
      for (int which = 0; which < 2; ++which) {
        const std::function<void()> fnc = which ? std::function<void()>(jit) : std::function<void()>(sass);
        const float s50 = time_launches(fnc, 50);
        const float sl = time_launches(fnc, iters);
        int nan = 0;
        const double err = check(pr, bf, ref, nan);
        printf("gap %-26s %-4s regs %3d  50 launches %7.1f us  %d launches %7.1f us (%5.1f TFLOP/s)  err %.2e nan %d\n",
               v.name, which ? "jit" : "sass", which ? regs : fa.numRegs, s50, iters, sl, flops / sl * 1e-6, err, nan);
      }
    }
  }
  release(bf);
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);  // a killed run keeps what it printed
  // argv[2]: only the instances whose name contains it (the portable baseline always runs)
  const char* only = argc > 2 ? argv[2] : nullptr;
  auto skip = [&](const Variant& v) { return only != nullptr && strstr(v.name, only) == nullptr; };
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  for (auto& v : VARIANTS) {
    if (v.t16 != nullptr) {
      CK(cudaFuncSetAttribute(v.t16, cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem()));
      CK(cudaFuncSetAttribute(v.tb16, cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem()));
      continue;
    }
    CK(cudaFuncSetAttribute(v.f16, cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem()));
    CK(cudaFuncSetAttribute(v.bf16, cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem()));
  }
  if (argc > 2 && strcmp(argv[1], "--gap") == 0) return gap_mode(argv[2], argc > 3 ? atoi(argv[3]) : 1000);

  const bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;  // small cases only, no timing
  const bool time_only = argc > 1 && strcmp(argv[1], "--time-only") == 0;
  const bool race = argc > 1 && strcmp(argv[1], "--race") == 0;  // a few small cases (racecheck is slow)

  // ---- the raw scores of one tile (non-overlapped variants dump them) ----
  for (const Variant& v : VARIANTS) {
    if (v.overlap || v.ws || v.t16 || time_only || race || skip(v)) continue;
    Problem pr{1, 1, 1, v.bm(), v.bn, v.d, false, false, false};
    Buffers bf = make(pr);
    float* dbg;
    CK(cudaMalloc(&dbg, sizeof(float) * v.bm() * v.bn));
    CK(cudaMemset(dbg, 0xFF, sizeof(float) * v.bm() * v.bn));
    bf.p.o_partial = dbg;
    launch_sm90(v, pr, bf);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<float> got(v.bm() * v.bn);
    CK(cudaMemcpy(got.data(), dbg, sizeof(float) * got.size(), cudaMemcpyDeviceToHost));
    double err = 0;
    int nan = 0;
    for (int i = 0; i < v.bm(); ++i)
      for (int j = 0; j < v.bn; ++j) {
        double dot = 0;
        for (int c = 0; c < v.d; ++c)
          dot += double(bits_to_float(bf.q[i * v.d + c], false)) * bits_to_float(bf.k[j * v.d + c], false);
        const float g = got[i * v.bn + j];
        if (std::isnan(g)) nan++;
        else err = std::max(err, fabs(g - dot));
      }
    printf("S tile check %-22s max err %.3e nan %d  (S[0][0..3] = %.3f %.3f %.3f %.3f)\n", v.name, err, nan, got[0],
           got[1], got[2], got[3]);
    cudaFree(dbg);
    release(bf);
  }

  // ---- correctness ----
  std::vector<Problem> cases;
  for (int d : {64, 128})
    for (bool causal : {false, true})
      for (bool bf16 : {false, true}) {
        cases.push_back({1, 2, 2, 17, 17, d, causal, bf16, false});
        cases.push_back({2, 3, 3, 100, 100, d, causal, bf16, false});
        if (!quick) {
          cases.push_back({1, 4, 2, 1000, 1000, d, causal, bf16, false});   // GQA
          cases.push_back({1, 4, 1, 100, 1000, d, causal, bf16, false});    // MQA, Nq < Nk
        }
        cases.push_back({1, 2, 2, 300, 77, d, causal, bf16, false});      // Nq > Nk: rows with no key
        cases.push_back({1, 4, 2, 700, 1100, d, causal, bf16, false});    // the stage ring wraps
        cases.push_back({3, 2, 1, 129, 257, d, causal, bf16, true});      // strided [B, N, H, D]
        cases.push_back({1, 1, 1, 1, 1, d, causal, bf16, false});
      }
  if (race) {
    cases.clear();
    for (int d : {64, 128})
      for (bool causal : {false, true}) cases.push_back({1, 2, 1, 200, 260, d, causal, false, false});
  }
  int failures = 0;
  std::vector<double> worst(sizeof(VARIANTS) / sizeof(VARIANTS[0]), 0.0);
  for (const Problem& pr : cases) {
    if (time_only) break;
    Buffers bf = make(pr);
    const Ref ref = reference(pr, bf);
    for (const Variant& v : VARIANTS) {
      if (v.d != pr.d || skip(v)) continue;
      const size_t n_out = size_t(pr.b) * pr.hq * pr.nq * pr.d;
      CK(cudaMemset(bf.dout, 0xFF, n_out * 2));  // poison: unwritten outputs read as NaN
      launch_sm90(v, pr, bf);
      CK(cudaGetLastError());
      CK(cudaDeviceSynchronize());
      int nan = 0;
      const double err = check(pr, bf, ref, nan);
      const double tol = pr.bf16 ? 4e-2 : 8e-3;
      const bool ok = nan == 0 && err <= tol;
      failures += !ok;
      worst[&v - VARIANTS] = std::max(worst[&v - VARIANTS], nan ? INFINITY : err);
      if (!ok || &v == &VARIANTS[pr.d == 64 ? 0 : FIRST_D128])
        printf("%s %-18s B=%d Hq=%d Hkv=%d Nq=%d Nk=%d D=%d causal=%d %s%s: max err %.2e nan %d\n",
               ok ? "ok  " : "FAIL", v.name, pr.b, pr.hq, pr.hkv, pr.nq, pr.nk, pr.d, pr.causal,
               pr.bf16 ? "bf16" : "f16", pr.strided ? " strided" : "", err, nan);
    }
    release(bf);
  }
  for (size_t i = 0; i < worst.size() && !time_only; ++i)
    if (!skip(VARIANTS[i])) printf("  %-36s worst max err %.2e\n", VARIANTS[i].name, worst[i]);
  printf("correctness: %d failures over %zu cases x variants\n", failures, cases.size());
  if (quick || race) return failures ? 1 : 0;

  // ---- timing (f16) ----
  struct T { Problem pr; const char* base; int base_bm, base_threads, base_smem; };
  std::vector<T> shapes = {
      {{1, 32, 32, 4096, 4096, 128, true, false, false}, "attn_prefill_f16_d128_w4_m2_n32_g1", 128, 128, 69632},
      {{1, 32, 32, 4096, 4096, 128, false, false, false}, "attn_prefill_f16_d128_w4_m2_n32_g1", 128, 128, 69632},
      {{1, 8, 8, 2048, 2048, 64, true, false, false}, "attn_prefill_f16_d64_w4_m1_n64_g1", 64, 128, 64512},
      {{16, 8, 8, 512, 512, 64, true, false, false}, "attn_prefill_f16_d64_w4_m1_n64_g1", 64, 128, 64512},
      {{1, 8, 8, 512, 512, 64, true, false, false}, "attn_prefill_f16_d64_w4_m1_n64_g1", 64, 128, 64512},
      {{1, 8, 8, 1024, 1024, 64, true, false, false}, "attn_prefill_f16_d64_w4_m1_n64_g1", 64, 128, 64512},
      {{2, 8, 8, 512, 512, 64, true, false, false}, "attn_prefill_f16_d64_w4_m1_n64_g1", 64, 128, 64512},
      {{4, 32, 8, 1024, 1024, 128, true, false, false}, "attn_prefill_f16_d128_w4_m2_n32_g1", 128, 128, 69632},
  };
  for (const T& t : shapes) {
    const Problem& pr = t.pr;
    Buffers bf = make(pr);
    const Ref ref = reference(pr, bf, 256);
    const double flops = 4.0 * pr.b * pr.hq * double(pr.nq) * pr.nk * pr.d * (pr.causal ? 0.5 : 1.0);
    printf("[%d,%d,%d,%d] causal=%d f16:\n", pr.b, pr.hq, pr.nq, pr.d, pr.causal);
    {
      KernelFn f = pr.d == 64 ? (KernelFn)attn_prefill_f16_d64_w4_m1_n64_g1 : (KernelFn)attn_prefill_f16_d128_w4_m2_n32_g1;
      CK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, t.base_smem));
      dim3 grid(pr.b * pr.hq, (pr.nq + t.base_bm - 1) / t.base_bm);
      const float us = time_launches([&] { f<<<grid, t.base_threads, t.base_smem>>>(bf.p); }, 50);
      printf("  %-36s %9.1f us  %6.1f TFLOP/s\n", t.base, us, flops / us * 1e-6);
    }
    for (const Variant& v : VARIANTS) {
      if (v.d != pr.d || skip(v)) continue;
      const float us = time_launches([&] { launch_sm90(v, pr, bf); }, 50);
      int nan = 0;
      const double err = check(pr, bf, ref, nan);
      printf("  %-36s %9.1f us  %6.1f TFLOP/s  (max err %.2e, nan %d)\n", v.name, us, flops / us * 1e-6, err, nan);
    }
    release(bf);
  }
  return failures ? 1 : 0;
}
