// Pieces shared by the attention kernels (kernels/attention.cu): the launch parameters, the
// dropout RNG, the causal/bounds mask, the online-softmax row state and the split-KV merge.
#pragma once
#include "common.cuh"

namespace tg {
namespace attn {

// Mirrors `AttnParams` in src/attention/cuda.rs (#[repr(C)]); keep the two in sync.
struct Params {
  const void* q;      // [B, Hq, Nq, D], strides q_sb/q_sh/q_sn in elements, D stride 1
  const void* k;      // [B, Hkv, Nk, D], strides k_s*
  const void* v;      // [B, Hkv, Nk, D], strides v_s*
  void* o;            // [B, Hq, Nq, D] contiguous (written when num_splits == 1)
  float* o_partial;   // [num_splits, B, Hq, Nq, D] normalized per split (num_splits > 1)
  float* lse_partial; // [num_splits, B, Hq, Nq] log2-sum-exp2 of each split's scores
  int64_t q_sb, q_sh, q_sn;
  int64_t k_sb, k_sh, k_sn;
  int64_t v_sb, v_sh, v_sn;
  int32_t b, hq, hkv, nq, nk, d;
  int32_t causal;          // 0 or 1
  int32_t causal_offset;   // Nk - Nq: query i sees keys j <= i + causal_offset
  float scale_log2;        // softmax scale * log2(e): scores live in log2 units
  uint32_t drop_threshold; // dropout: bits < threshold drop; 0 = no dropout
  float drop_scale;        // 1 / (1 - p)
  uint32_t seed_lo, seed_hi;
  int32_t num_splits;      // KV splits (split-KV kernel); 1 elsewhere
  int32_t keys_per_split;  // multiple of the split-KV tile
  int32_t pad_;
  uint32_t* counters;      // decode with splits: [B * Hq] arrival tickets, zero between launches
};

// ---- dropout: Philox4x32-10, bit-identical to src/attention/philox.rs ------------------------
constexpr uint32_t PHILOX_M0 = 0xD2511F53u;
constexpr uint32_t PHILOX_M1 = 0xCD9E8D57u;
constexpr uint32_t PHILOX_W0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t PHILOX_W1 = 0xBB67AE85u;  // sqrt(3) - 1
constexpr int PHILOX_ROUNDS = 10;

__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 key) {
#pragma unroll
  for (int round = 0; round < PHILOX_ROUNDS; ++round) {
    if (round > 0) {
      key.x += PHILOX_W0;
      key.y += PHILOX_W1;
    }
    const uint32_t hi0 = __umulhi(PHILOX_M0, c.x), lo0 = PHILOX_M0 * c.x;
    const uint32_t hi1 = __umulhi(PHILOX_M1, c.z), lo1 = PHILOX_M1 * c.z;
    c = make_uint4(hi1 ^ c.y ^ key.x, lo1, hi0 ^ c.w ^ key.y, lo0);
  }
  return c;
}

__device__ __forceinline__ uint32_t lane_of(uint4 r, int lane) {
  return lane == 0 ? r.x : lane == 1 ? r.y : lane == 2 ? r.z : r.w;
}

// The words deciding (query i, key j) and (i, j + 1), j even: lanes j % 4 and j % 4 + 1 of one
// Philox call at counter (j / 4, i, h, b) (`philox::dropout_bits`).
__device__ __forceinline__ uint2 dropout_bits_pair(const Params& p, int b, int h, int i, int j) {
  const uint4 r = philox4x32_10(make_uint4(uint32_t(j) >> 2, uint32_t(i), uint32_t(h), uint32_t(b)),
                                make_uint2(p.seed_lo, p.seed_hi));
  const int lane = j & 3;
  return make_uint2(lane_of(r, lane), lane_of(r, lane + 1));
}

__device__ __forceinline__ uint32_t dropout_bits(const Params& p, int b, int h, int i, int j) {
  const uint4 r = philox4x32_10(make_uint4(uint32_t(j) >> 2, uint32_t(i), uint32_t(h), uint32_t(b)),
                                make_uint2(p.seed_lo, p.seed_hi));
  return lane_of(r, j & 3);
}

__device__ __forceinline__ float apply_dropout(const Params& p, uint32_t bits, float prob) {
  return bits >= p.drop_threshold ? prob * p.drop_scale : 0.0f;
}

// ---- mask -------------------------------------------------------------------------------------
// Key j is visible to query i iff j < Nk and (not causal or j <= i + Nk - Nq).
struct Mask {
  int nk, causal, offset;
  __device__ __forceinline__ explicit Mask(const Params& p) : nk(p.nk), causal(p.causal), offset(p.causal_offset) {}
  __device__ __forceinline__ bool visible(int i, int j) const { return j < nk && (!causal || j <= i + offset); }
  // One past the last key any of the queries q0..q0+rows-1 sees, within [0, nk].
  __device__ __forceinline__ int key_end(int q0, int rows) const {
    return causal ? max(0, min(nk, q0 + rows + offset)) : nk;
  }
};

// ---- online softmax over one query row ---------------------------------------------------------
// Scores arrive pre-scaled into log2 units. `m` is the running max, `l` the running sum of
// exp2(s - m) (before dropout, which scales only what multiplies V).
struct RowState {
  float m = -INFINITY;
  float l = 0.0f;
  // The new max after a tile whose max is `tile_max`; returns the factor that rescales what was
  // accumulated so far, and sets `ref` to the value to subtract from the tile's scores.
  __device__ __forceinline__ float update_max(float tile_max, float& ref) {
    const float m_new = fmaxf(m, tile_max);
    ref = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet: exp2(-inf) = 0
    const float alpha = exp2f(m - ref);
    m = m_new;
    l *= alpha;
    return alpha;
  }
  // 1 / l, or 0 for a row that saw no key.
  __device__ __forceinline__ float inv_sum() const { return l > 0.0f ? 1.0f / l : 0.0f; }
  // log2(sum exp2(s)) of the row: the weight of this split when merging.
  __device__ __forceinline__ float lse() const { return l > 0.0f ? m + log2f(l) : -INFINITY; }
};

// ---- split-KV merge ---------------------------------------------------------------------------
// Weight of a split with log2-sum-exp `lse` relative to the largest, `lse_max`.
__device__ __forceinline__ float split_weight(float lse, float lse_max) {
  return lse == -INFINITY ? 0.0f : exp2f(lse - lse_max);
}

// ---- 8-element vectors (16 bytes for f16/bf16, 32 for f32), loaded raw, converted later ------
template <typename T> struct Raw8 {
  uint4 bits = make_uint4(0, 0, 0, 0);  // 8 x 16-bit
};
template <> struct Raw8<float> {
  float4 lo = make_float4(0.0f, 0.0f, 0.0f, 0.0f), hi = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
};

template <typename T> __device__ __forceinline__ Raw8<T> load_raw8(const T* ptr) {
  Raw8<T> r;
  r.bits = *reinterpret_cast<const uint4*>(ptr);
  return r;
}
template <> __device__ __forceinline__ Raw8<float> load_raw8<float>(const float* ptr) {
  Raw8<float> r;
  r.lo = reinterpret_cast<const float4*>(ptr)[0];
  r.hi = reinterpret_cast<const float4*>(ptr)[1];
  return r;
}

__device__ __forceinline__ void to_float8(const Raw8<float>& r, float (&out)[8]) {
  out[0] = r.lo.x; out[1] = r.lo.y; out[2] = r.lo.z; out[3] = r.lo.w;
  out[4] = r.hi.x; out[5] = r.hi.y; out[6] = r.hi.z; out[7] = r.hi.w;
}
__device__ __forceinline__ void to_float8(const Raw8<__half>& r, float (&out)[8]) {
  const __half2* h = reinterpret_cast<const __half2*>(&r.bits);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void to_float8(const Raw8<__nv_bfloat16>& r, float (&out)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&r.bits);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

}  // namespace attn
}  // namespace tg
