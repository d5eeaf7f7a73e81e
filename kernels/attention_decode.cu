// One-query attention (KV-cache decode, f16/bf16), softmax(q·Kᵀ·scale + mask)·V in ONE launch.
//
// attn_decode_<dtype>_d<HD>  grid x = split of the keys, y = the (batch, head) row. Each warp
//   walks its own batches of keys with no block barrier, a lane loading a 16-byte piece of LOADS
//   K rows and LOADS V rows at once (all in flight before the first is used: a decode call
//   streams K/V once and what bounds it is the bytes in flight); scores reduced by shuffles,
//   online softmax in registers, the block's warps merge in smem. With one split the block writes
//   the output. With several, each block writes its normalized partial and log-sum-exp to a
//   cached scratch and takes a ticket (atomicAdd on the row's counter): the last block of a row
//   merges the splits' partials into the output and resets the counter to zero for the next
//   launch, so there is no combine kernel and no per-call allocation besides the output.
//
// Launch parameters: tg::attn::Params (attention.cuh), mirrored in src/attention/cuda.rs; the
// traits below are mirrored in src/attention/config.rs.
#include "attention.cuh"

using tg::attn::Mask;
using tg::attn::Params;
using tg::attn::Raw8;
using tg::attn::RowState;

namespace {

constexpr int VEC = 8;  // elements per 16-byte f16/bf16 vector
constexpr unsigned FULL_MASK = 0xffffffffu;
// Most splits of a row (config::MAX_SPLITS): the merge holds two log-sum-exps per lane.
constexpr int MAX_SPLITS = 2 * tg::WARP_SIZE;

template <int HEAD_DIM>
struct DecodeTraits {
  static constexpr int WARPS = 4;  // config::DECODE_WARPS
  static constexpr int THREADS = WARPS * tg::WARP_SIZE;
  static constexpr int LANES_PER_KEY = HEAD_DIM / VEC;                  // 16-byte pieces of a row
  static constexpr int KEYS_PER_LOAD = tg::WARP_SIZE / LANES_PER_KEY;  // keys one warp load covers
  // K and V loads per lane per batch (config::DECODE_LOADS). Measured on an H100 ([1,32,1,128],
  // µs per call): 4 (80 registers, 6 blocks an SM) or 16 (244, 2) were no faster than 8 (128, 4):
  // Nk = 512: 9.7 / 11.0 vs 9.2; Nk = 8192: 52.3 / 55.4 vs 53.5 (each at its best split count).
  static constexpr int LOADS = 8;
  static constexpr int BATCH = KEYS_PER_LOAD * LOADS;   // keys per warp step
  static constexpr int KEYS_PER_ROUND = WARPS * BATCH;  // config::decode_keys_per_round
  static_assert((LANES_PER_KEY & (LANES_PER_KEY - 1)) == 0 && LANES_PER_KEY <= tg::WARP_SIZE, "shuffle groups");
};

// A 16-byte piece of K or V. Each is read once per call: no L1 allocation, and a 256-byte L2
// prefetch (the neighbouring lanes and the next load of the warp read the rest). Measured on an
// H100 as fast as a plain load (Nk = 512: 9.2 vs 9.1 µs, Nk = 8192: 53.4 vs 53.6).
template <typename T>
__device__ __forceinline__ Raw8<T> load_kv8(const T* ptr) {
  static_assert(sizeof(T) == 2, "16-byte pieces of 8 elements");
  Raw8<T> r;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
      : "=r"(r.bits.x), "=r"(r.bits.y), "=r"(r.bits.z), "=r"(r.bits.w)
      : "l"(ptr));
  return r;
}

// The splits of row `bh` (Nq = 1: row = batch x head) wrote their normalized partials and
// log-sum-exps; the block that arrives last merges them: out = Σ_s w_s·O_s / Σ_s w_s with
// w_s = 2^(lse_s − max lse), then zeroes the row's counter. Block-uniform; called by every thread.
template <typename T, int THREADS>
__device__ __forceinline__ void merge_if_last(const Params& p, int bh) {
  __shared__ unsigned sTicket;
  const int64_t total_rows = int64_t(p.b) * p.hq;
  __threadfence();  // this block's partial (written by every thread) before its ticket
  __syncthreads();
  if (threadIdx.x == 0) sTicket = atomicAdd(p.counters + bh, 1u);
  __syncthreads();
  if (sTicket != unsigned(p.num_splits - 1)) return;
  __threadfence();  // the other splits' partials after their tickets
  const int lane = threadIdx.x % tg::WARP_SIZE;
  const int ns = p.num_splits;
  // L2 loads (__ldcg): the partials were written by other blocks, after this launch began.
  const float lse0 = lane < ns ? __ldcg(p.lse_partial + lane * total_rows + bh) : -INFINITY;
  const float lse1 = lane + tg::WARP_SIZE < ns ? __ldcg(p.lse_partial + (lane + tg::WARP_SIZE) * total_rows + bh)
                                               : -INFINITY;
  const float lse_max = tg::warp_max(fmaxf(lse0, lse1));
  const float w0 = tg::attn::split_weight(lse0, lse_max), w1 = tg::attn::split_weight(lse1, lse_max);
  const float weights = tg::warp_sum(w0 + w1);
  const float inv = weights > 0.0f ? 1.0f / weights : 0.0f;
  // Warp-uniform trips (D need not be a multiple of 32): the weight shuffles need the whole warp.
  for (int c0 = threadIdx.x - lane; c0 < p.d; c0 += THREADS) {
    const int c = c0 + lane;
    float acc = 0.0f;
#pragma unroll 8
    for (int s = 0; s < ns; ++s) {
      const float w = __shfl_sync(FULL_MASK, s < tg::WARP_SIZE ? w0 : w1, s % tg::WARP_SIZE);
      if (c < p.d) acc = fmaf(w, __ldcg(p.o_partial + (s * total_rows + bh) * p.d + c), acc);
    }
    if (c < p.d) static_cast<T*>(p.o)[int64_t(bh) * p.d + c] = tg::from_float<T>(acc * inv);
  }
  if (threadIdx.x == 0) p.counters[bh] = 0;  // every split has arrived: ready for the next launch
}

// Grid: x = split, y = B x Hq (the query row). Warp w walks batches w, w + WARPS, ... of the
// split's keys; lane = (key in the load, 16-byte piece of the row).
template <typename T, int HEAD_DIM>
__device__ __forceinline__ void attn_decode(const Params& p) {
  using Tr = DecodeTraits<HEAD_DIM>;
  constexpr int LPK = Tr::LANES_PER_KEY, KPL = Tr::KEYS_PER_LOAD, LOADS = Tr::LOADS, WARPS = Tr::WARPS;
  __shared__ float sAcc[WARPS][HEAD_DIM];
  __shared__ float sM[WARPS], sL[WARPS];

  const int warp = threadIdx.x / tg::WARP_SIZE, lane = threadIdx.x % tg::WARP_SIZE;
  const int piece = lane % LPK, sub = lane / LPK;
  const int split = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.hq, h = bh % p.hq, hk = h / (p.hq / p.hkv);
  const Mask mask(p);
  const int k_begin = split * p.keys_per_split;
  const int k_end = min(mask.key_end(0, 1), min(p.nk, k_begin + p.keys_per_split));
  const bool piece_ok = piece * VEC < p.d;
  const T* kg = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh + piece * VEC;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh + piece * VEC;

  float q[VEC];  // this lane's piece of the query, pre-scaled by scale * log2(e)
  {
    const T* qg = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh + piece * VEC;
    tg::attn::to_float8(piece_ok ? tg::attn::load_raw8(qg) : Raw8<T>{}, q);
#pragma unroll
    for (int e = 0; e < VEC; ++e) q[e] *= p.scale_log2;
  }
  RowState row;  // m is warp-uniform; l sums this lane's keys (the same in the LPK lanes of a key)
  float acc[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) acc[e] = 0.0f;

  for (int k0 = k_begin + warp * Tr::BATCH; k0 < k_end; k0 += Tr::KEYS_PER_ROUND) {
    Raw8<T> kr[LOADS], vr[LOADS];
#pragma unroll
    for (int it = 0; it < LOADS; ++it) {
      const int j = k0 + it * KPL + sub;
      kr[it] = j < k_end && piece_ok ? load_kv8(kg + int64_t(j) * p.k_sn) : Raw8<T>{};
    }
#pragma unroll
    for (int it = 0; it < LOADS; ++it) {
      const int j = k0 + it * KPL + sub;
      vr[it] = j < k_end && piece_ok ? load_kv8(vg + int64_t(j) * p.v_sn) : Raw8<T>{};
    }
    float s[LOADS];
    float mx = -INFINITY;
#pragma unroll
    for (int it = 0; it < LOADS; ++it) {
      float kv[VEC];
      tg::attn::to_float8(kr[it], kv);
      float dot = 0.0f;
#pragma unroll
      for (int e = 0; e < VEC; ++e) dot = fmaf(q[e], kv[e], dot);
#pragma unroll
      for (int off = LPK / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(FULL_MASK, dot, off);
      const int j = k0 + it * KPL + sub;
      s[it] = j < k_end && mask.visible(0, j) ? dot : -INFINITY;
      mx = fmaxf(mx, s[it]);
    }
#pragma unroll
    for (int off = LPK; off < tg::WARP_SIZE; off <<= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, off));
    float ref;
    const float alpha = row.update_max(mx, ref);
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] *= alpha;
#pragma unroll
    for (int it = 0; it < LOADS; ++it) {
      float pr = exp2f(s[it] - ref);
      row.l += pr;
      if (p.drop_threshold) {
        pr = tg::attn::apply_dropout(p, tg::attn::dropout_bits(p, b, h, 0, k0 + it * KPL + sub), pr);
      }
      float vv[VEC];
      tg::attn::to_float8(vr[it], vv);
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] = fmaf(pr, vv[e], acc[e]);
    }
  }

  // Sum the keys of the warp (lanes of the same piece), then merge the warps through smem.
#pragma unroll
  for (int off = LPK; off < tg::WARP_SIZE; off <<= 1) {
    row.l += __shfl_xor_sync(FULL_MASK, row.l, off);
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] += __shfl_xor_sync(FULL_MASK, acc[e], off);
  }
  if (sub == 0) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) sAcc[warp][piece * VEC + e] = acc[e];
  }
  if (lane == 0) {
    sM[warp] = row.m;
    sL[warp] = row.l;
  }
  __syncthreads();
  RowState total;
#pragma unroll
  for (int w = 0; w < WARPS; ++w) total.m = fmaxf(total.m, sM[w]);
  float wt[WARPS];
#pragma unroll
  for (int w = 0; w < WARPS; ++w) {
    wt[w] = tg::attn::split_weight(sM[w], total.m);
    total.l += wt[w] * sL[w];
  }
  const float inv = total.inv_sum();
  const int64_t total_rows = int64_t(p.b) * p.hq;
  for (int c = threadIdx.x; c < p.d; c += Tr::THREADS) {
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) o += wt[w] * sAcc[w][c];
    o *= inv;
    if (p.num_splits == 1) {
      static_cast<T*>(p.o)[int64_t(bh) * p.d + c] = tg::from_float<T>(o);
    } else {
      p.o_partial[(split * total_rows + bh) * p.d + c] = o;
    }
  }
  if (p.num_splits == 1) return;  // grid-uniform
  if (threadIdx.x == 0) p.lse_partial[split * total_rows + bh] = total.lse();
  merge_if_last<T, Tr::THREADS>(p, bh);
}

}  // namespace

// ---- entry points ------------------------------------------------------------------------------
static_assert(sizeof(Params) == 192, "Params mirrors AttnParams in src/attention/cuda.rs");

#define ATTN_DECODE(T, TNAME, HD)                                                             \
  extern "C" __global__ void __launch_bounds__(DecodeTraits<HD>::THREADS)                     \
      attn_decode_##TNAME##_d##HD(const __grid_constant__ Params p) {                         \
    attn_decode<T, HD>(p);                                                                    \
  }
#define ATTN_DECODE_ALL(T, TNAME)                                                             \
  ATTN_DECODE(T, TNAME, 32) ATTN_DECODE(T, TNAME, 64) ATTN_DECODE(T, TNAME, 128) ATTN_DECODE(T, TNAME, 256)

ATTN_DECODE_ALL(__half, f16)
ATTN_DECODE_ALL(__nv_bfloat16, bf16)
