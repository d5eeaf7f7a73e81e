// The packed INT4 weight format (src/quant/format.rs documents it in full) and its dequant
// helpers. Weight W [N, K] -> packed u32 [ceil(N/8), K]: per tile of 8 rows, chunks of 128 k;
// in chunk c lane l = 4g + t owns wc = min(4, K/32 - 4c) words at 128c + l*wc + j, word j holding
// the mma.sync.m16n8k16 B fragments of row g for the 32-wide sub-tile k0 = 128c + 32j. Within a
// sub-tile lane column t owns the 8 consecutive k0 + 8t .. k0 + 8t + 8 (MMA step s takes the
// k0 + 8t + 4s .. + 4 half of them, so its A fragment is one 16-byte load of x); nibble p of the
// word is k = k0 + 8t + 2*(p&3) + (p>>2), so (word >> 4i) & 0x000f000f is fragment pair i.
// Scales / zeros: f16 [K/G, N]; dequantized weight = (q - z) * s, z = 8 when symmetric.
#pragma once
#include "common.cuh"

#include <type_traits>

namespace tg::int4 {

constexpr int TILE_N = 8;         // rows per packed tile = N of one m16n8k16 MMA
constexpr int CHUNK_K = 128;      // k per 16-byte lane load
constexpr int SUBTILE_K = 32;     // k per u32 word of one lane (two k16 MMA steps)
constexpr int WORDS_PER_LANE = CHUNK_K / SUBTILE_K;
constexpr int SYMMETRIC_ZERO = 8;
constexpr uint32_t NIBBLE_PAIR_MASK = 0x000f000fu;  // nibbles p and p+4 = bits [0,4) and [16,20)
constexpr uint32_t F16X2_1024 = 0x64006400u;        // f16 1024.0 twice: 1024 + q is exact for q < 1024
constexpr uint32_t BF16X2_128 = 0x43004300u;        // bf16 128.0 twice: 128 + q is exact for q < 128

// One lane's words of one chunk: what a single 16-byte load brings.
struct alignas(16) LaneChunk {
  uint32_t w[WORDS_PER_LANE];
};
static_assert(sizeof(LaneChunk) == 16, "one 16-byte load per lane per full chunk");
static_assert(TILE_N * SUBTILE_K / 8 == WARP_SIZE, "a tile's 32-wide sub-tile is one word per lane");
static_assert(2 * 16 == SUBTILE_K, "a word covers two k16 MMA steps");

constexpr int LANE_K = SUBTILE_K / 4;  // consecutive k of one lane column per sub-tile

__host__ __device__ constexpr int nibble_k(int p, int t) { return LANE_K * t + 2 * (p & 3) + (p >> 2); }
__host__ __device__ constexpr int chunk_words(int K, int c) {
  return (K / SUBTILE_K - WORDS_PER_LANE * c) < WORDS_PER_LANE ? (K / SUBTILE_K - WORDS_PER_LANE * c) : WORDS_PER_LANE;
}

// Streamed once: bypass L1 allocation, read-only path.
__device__ __forceinline__ LaneChunk load_lane_chunk(const uint32_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return LaneChunk{{v.x, v.y, v.z, v.w}};
}

// (a & mask) | bits in one LOP3 (the compiler otherwise emits an AND and an OR).
template <uint32_t MASK, uint32_t BITS> __device__ __forceinline__ uint32_t and_or(uint32_t a) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(r) : "r"(a), "n"(MASK), "n"(BITS));
  return r;
}
template <typename H2> __device__ __forceinline__ uint32_t bits_of(H2 h) { return *reinterpret_cast<const uint32_t*>(&h); }
template <typename H2> __device__ __forceinline__ H2 as_h2(uint32_t b) { return *reinterpret_cast<const H2*>(&b); }

// The four fragment pairs of a word as the exact integers (q - z) in the MMA operand type: the
// magic-number trick puts q in the mantissa of 1024 + q (f16) or 128 + q (bf16), and subtracting
// 1024 + z (128 + z) is exact. Scales are applied to the f32 accumulators once per group.
// f16 (Marlin's trick): pairs 1 and 3 are masked in place, giving 1024 + 16q, and one HFMA2
// (x 1/16, + -(64 + z)) makes them q - z exactly, so a word costs 1 shift, 4 LOP3 and 4 HADD2/HFMA2.
// bf16 has no mantissa room for 16q (7 bits), so every pair is shifted down first.
template <typename M> struct WordDequant;

template <> struct WordDequant<__half> {
  uint32_t lo;  // f16x2 1024 + z twice
  uint32_t hi;  // f16x2 -(64 + z) twice
  static constexpr uint32_t SYM_LO = 0x64086408u;  // 1032
  static constexpr uint32_t SYM_HI = 0xd480d480u;  // -72
  WordDequant() = default;
  __device__ __forceinline__ WordDequant(uint32_t lo_, uint32_t hi_) : lo(lo_), hi(hi_) {}
  __device__ __forceinline__ static WordDequant symmetric() { return WordDequant(SYM_LO, SYM_HI); }
  // z: the zero point (an integer 0..15) in both halves
  __device__ __forceinline__ static WordDequant zero_point(__half2 z) {
    return WordDequant(bits_of(__hadd2(z, __float2half2_rn(1024.0f))), bits_of(__hneg2(__hadd2(z, __float2half2_rn(64.0f)))));
  }
  __device__ __forceinline__ void word(uint32_t w, uint32_t (&p)[4]) const {
    const __half2 sixteenth = as_h2<__half2>(0x2c002c00u);  // 1/16
    const uint32_t w8 = w >> 8;
    p[0] = bits_of(__hsub2(as_h2<__half2>(and_or<NIBBLE_PAIR_MASK, F16X2_1024>(w)), as_h2<__half2>(lo)));
    p[1] = bits_of(__hfma2(as_h2<__half2>(and_or<NIBBLE_PAIR_MASK << 4, F16X2_1024>(w)), sixteenth, as_h2<__half2>(hi)));
    p[2] = bits_of(__hsub2(as_h2<__half2>(and_or<NIBBLE_PAIR_MASK, F16X2_1024>(w8)), as_h2<__half2>(lo)));
    p[3] = bits_of(__hfma2(as_h2<__half2>(and_or<NIBBLE_PAIR_MASK << 4, F16X2_1024>(w8)), sixteenth, as_h2<__half2>(hi)));
  }
};

template <> struct WordDequant<__nv_bfloat16> {
  uint32_t lo;  // bf16x2 128 + z twice
  static constexpr uint32_t SYM_LO = 0x43084308u;  // 136
  WordDequant() = default;
  __device__ __forceinline__ explicit WordDequant(uint32_t lo_) : lo(lo_) {}
  __device__ __forceinline__ static WordDequant symmetric() { return WordDequant(SYM_LO); }
  __device__ __forceinline__ static WordDequant zero_point(__half2 z) {
    const float2 f = __half22float2(z);
    return WordDequant(bits_of(__float22bfloat162_rn(make_float2(128.0f + f.x, 128.0f + f.y))));
  }
  __device__ __forceinline__ void word(uint32_t w, uint32_t (&p)[4]) const {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t b = and_or<NIBBLE_PAIR_MASK, BF16X2_128>(w >> (4 * i));
      p[i] = bits_of(__hsub2(as_h2<__nv_bfloat162>(b), as_h2<__nv_bfloat162>(lo)));
    }
  }
};

// Calls f(std::integral_constant<Act, A>{}) for the runtime activation `act`: an epilogue that
// applies the activation to many unrolled accumulators is instantiated once per activation and
// picked by one switch (a switch inlined per accumulator makes epilogues of ~100 KB of
// code whose instruction fetches cost more than the math).
template <typename F> __device__ __forceinline__ void with_act(int act, F&& f) {
  switch (act) {
    case (int)Act::Gelu: f(std::integral_constant<Act, Act::Gelu>{}); break;
    case (int)Act::GeluTanh: f(std::integral_constant<Act, Act::GeluTanh>{}); break;
    case (int)Act::Relu: f(std::integral_constant<Act, Act::Relu>{}); break;
    case (int)Act::Silu: f(std::integral_constant<Act, Act::Silu>{}); break;
    default: f(std::integral_constant<Act, Act::Identity>{}); break;
  }
}

// The INT4 GEMMs' epilogue on an f32 sum of output column `col`: `+ bias[col]` (bias null: none),
// then the activation `act` (`tg::Act` numbering, picked at run time: one kernel serves all), in
// f32 before the output's one rounding. Per output, for loops that are not unrolled over many
// accumulators (see `with_act` for those).
template <typename T> __device__ __forceinline__ float bias_act(float v, const T* bias, int col, int act) {
  if (bias != nullptr) v += tg::to_float<T>(bias[col]);
  float r = v;
  with_act(act, [&](auto a) { r = tg::activate<decltype(a)::value>(v); });
  return r;
}

}  // namespace tg::int4
