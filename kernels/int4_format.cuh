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

// Fragment pair i (0..3) of a word as the exact integers (q - z) in the MMA operand type: the
// magic-number trick puts q in the mantissa of 1024 + q (f16) or 128 + q (bf16), and subtracting
// 1024 + z (128 + z) is exact. Scales are applied to the f32 accumulators once per group.
template <typename M> struct ZeroShift;

template <> struct ZeroShift<__half> {
  uint32_t zz;  // f16x2 (1024 + z) twice
  __device__ __forceinline__ explicit ZeroShift(float z) {
    const __half2 h = __float2half2_rn(1024.0f + z);
    zz = *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ __forceinline__ explicit ZeroShift(uint32_t bits) : zz(bits) {}
  __device__ __forceinline__ uint32_t bits() const { return zz; }
  __device__ __forceinline__ uint32_t pair(uint32_t word, int i) const {
    uint32_t b = ((word >> (4 * i)) & NIBBLE_PAIR_MASK) | F16X2_1024;
    __half2 h = __hsub2(*reinterpret_cast<__half2*>(&b), *reinterpret_cast<const __half2*>(&zz));
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

template <> struct ZeroShift<__nv_bfloat16> {
  uint32_t zz;  // bf16x2 (128 + z) twice
  __device__ __forceinline__ explicit ZeroShift(float z) {
    const __nv_bfloat162 h = __float2bfloat162_rn(128.0f + z);
    zz = *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ __forceinline__ explicit ZeroShift(uint32_t bits) : zz(bits) {}
  __device__ __forceinline__ uint32_t bits() const { return zz; }
  __device__ __forceinline__ uint32_t pair(uint32_t word, int i) const {
    uint32_t b = ((word >> (4 * i)) & NIBBLE_PAIR_MASK) | BF16X2_128;
    __nv_bfloat162 h = __hsub2(*reinterpret_cast<__nv_bfloat162*>(&b), *reinterpret_cast<const __nv_bfloat162*>(&zz));
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

}  // namespace tg::int4
