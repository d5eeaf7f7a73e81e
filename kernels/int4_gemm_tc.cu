// W4A16 matmul for larger M: y[M, N] = x[M, K] . W^T, W in the packed INT4 format of
// int4_format.cuh, dequantized inside the GEMM main loop (Marlin-style), no scratch weight.
//
// int4_gemm_tc: a block computes a BM x BN output tile (BN / 8 format tiles of 8 output rows),
// its WM x WN warps a (BM / WM) x (BN / WN) sub-tile each. K is walked one 128-wide format chunk
// at a time through a STAGES-deep cp.async pipeline in shared memory: per stage the block's x
// tile [BM][128] (16-byte pieces XOR-swizzled so that the lanes' 16-byte fragment reads hit every
// bank once), its BN / 8 weight tiles (512 contiguous bytes each: the chunk exactly as stored),
// and the chunk's scales (and zeros) [groups of the chunk][BN] in f16 (cp.async too when N % 8 == 0
// and the scales are 16-byte aligned; else plain loads and stores, which stall the iteration).
// K may be split across blocks (grid.z): each split writes f32 partials [splits, M, N] that
// int4_reduce_<T> (kernels/int4_gemm.cu) adds in split order. Per 32-wide sub-tile (one word per lane and tile) a warp dequantizes its
// weight words to (q - z) * s in the MMA type (WordDequant + one HMUL2 per pair: the format's
// words are exactly the B fragments of mma.sync.m16n8k16), reads each 16-row activation block's A
// fragments with two 16-byte loads per lane (the format's k order: lane column t owns the 8
// consecutive k 8t .. 8t + 8 of the sub-tile), and runs its MMAs with f32 accumulators.
// Rows past M read the last row and are not stored; tiles past N re-read the last tile and
// columns past N are not stored; a K tail chunk (K % 128 != 0) has 1..3 words per lane.
#include "int4_format.cuh"

#include <type_traits>

using namespace tg::int4;

// Mirrors `TcDims` in src/quant/cuda.rs.
struct TcDims {
  int M, N, K, group_size, chunks_per_split;
};

namespace tg::int4_tc {

template <typename T> struct Pair;
template <> struct Pair<__half> { using type = __half2; };
template <> struct Pair<__nv_bfloat16> { using type = __nv_bfloat162; };

template <typename T> __device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
// Not volatile: the MMAs are pure functions of their operands, so the compiler may interleave them.
template <> __device__ __forceinline__ void mma_16816<__half>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma_16816<__nv_bfloat16>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void cp_async16(uint32_t smem_addr, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int PENDING> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory");
}

// An f16 scale as the MMA type's pair (bf16: rounded once more, to bf16).
template <typename T> __device__ __forceinline__ uint32_t scale_pair(__half s);
template <> __device__ __forceinline__ uint32_t scale_pair<__half>(__half s) { return bits_of(__half2half2(s)); }
template <> __device__ __forceinline__ uint32_t scale_pair<__nv_bfloat16>(__half s) {
  return bits_of(__float2bfloat162_rn(__half2float(s)));
}

constexpr int X_ROW_BYTES = CHUNK_K * 2;            // one staged activation row of a chunk
constexpr int X_PIECES = X_ROW_BYTES / 16;          // its 16-byte pieces (8 k each)
constexpr int TILE_BYTES = tg::WARP_SIZE * 16;      // one format tile of a full chunk
constexpr int MAX_GROUPS_PER_CHUNK = CHUNK_K / 32;  // group size 32

// Shared memory of one block (mirrors `TcVariant::smem_bytes` in src/quant/launch.rs).
template <int BM, int BN, int STAGES> struct TcSmem {
  static constexpr int X = BM * X_ROW_BYTES;
  static constexpr int W = BN / TILE_N * TILE_BYTES;
  static constexpr int S = MAX_GROUPS_PER_CHUNK * BN * 2;  // scales; zeros follow
  static constexpr int STAGE = X + W + 2 * S;
  static constexpr int BYTES = STAGES * STAGE;
};

template <typename T, int BM, int BN, int WM, int WN, int STAGES, bool SYM>
__device__ __forceinline__ void int4_gemm_tc(const T* __restrict__ x,              // [M, K]
                                             const uint32_t* __restrict__ packed,  // [ceil(N/8), K]
                                             const __half* __restrict__ scales,    // [K/G, N]
                                             const __half* __restrict__ zeros,     // [K/G, N] or null
                                             T* __restrict__ y,                    // [M, N] (one split)
                                             float* __restrict__ partial,          // [splits, M, N] (several)
                                             TcDims d,
                                             const T* __restrict__ bias = nullptr,  // [N] or null
                                             int act = (int)tg::Act::Identity) {
  using T2 = typename Pair<T>::type;
  constexpr int THREADS = WM * WN * tg::WARP_SIZE;
  constexpr int WTM = BM / WM, WTN = BN / WN;  // warp tile
  constexpr int TB = WTM / 8, NTW = WTN / TILE_N, NP = NTW / 2, BT = BN / TILE_N;
  static_assert(WTM % 8 == 0 && WTN % (2 * TILE_N) == 0, "warp tile: 8-row token groups x tile pairs");
  static_assert(STAGES >= 2, "at least double buffering");
  using L = TcSmem<BM, BN, STAGES>;
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t smem_s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));

  const int tid = threadIdx.x, lane = tid % tg::WARP_SIZE, warp = tid / tg::WARP_SIZE;
  const int wm = warp / WN, wn = warp % WN;
  const int g = lane / 4, t = lane % 4;
  const int m0 = blockIdx.x * BM, tile0 = blockIdx.y * BT;
  const int n_tiles = tg::ceil_div(d.N, TILE_N), n_chunks = tg::ceil_div(d.K, CHUNK_K);
  const int spg_shift = d.group_size == 32 ? 0 : d.group_size == 64 ? 1 : 2;  // log2(G / 32)
  const int groups_per_chunk = MAX_GROUPS_PER_CHUNK >> spg_shift;
  const int c_begin = blockIdx.z * d.chunks_per_split, c_end = min(n_chunks, c_begin + d.chunks_per_split);
  // scales by cp.async: whole 16-byte runs of 8 columns
  const bool scales_async = d.N % 8 == 0 && (reinterpret_cast<uintptr_t>(scales) & 15) == 0 &&
                            (SYM || (reinterpret_cast<uintptr_t>(zeros) & 15) == 0);

  // cp.async of chunk c into stage s: the x tile (rows past M read row M - 1; pieces past K
  // are not loaded, the tail's words never read them) and the weight tiles (tiles past N read
  // the last tile). A thread's pieces keep their column (q) and row parity from chunk to chunk, so
  // their sources (at chunk 0) and stage offsets are set up once.
  static_assert(THREADS % X_PIECES == 0 && (BM * X_PIECES) % THREADS == 0, "x pieces: whole rounds");
  static_assert((BT * 32) % THREADS == 0 || THREADS % (BT * 32) == 0, "weight pieces: whole rounds");
  constexpr int XP = BM * X_PIECES / THREADS, XR = THREADS / X_PIECES;  // pieces per thread, row step
  constexpr int WP = (BT * 32 + THREADS - 1) / THREADS, WI = THREADS / 32;   // weight pieces, tile step
  const int xq = tid % X_PIECES, xr0 = tid / X_PIECES;
  const uint32_t x_dst = (xr0 * X_ROW_BYTES) + ((xq ^ ((xr0 & 1) << 2)) << 4);  // + XR * X_ROW_BYTES per piece
  static_assert(XR % 2 == 0, "a thread's x rows keep their parity");
  const T* x_src[XP];
#pragma unroll
  for (int i = 0; i < XP; ++i) x_src[i] = x + (int64_t)min(m0 + xr0 + i * XR, d.M - 1) * d.K + xq * 8;
  const uint32_t* w_src[WP];
#pragma unroll
  for (int i = 0; i < WP; ++i) w_src[i] = packed + (int64_t)min(tile0 + tid / 32 + i * WI, n_tiles - 1) * d.K + lane * 4;
  const uint32_t w_dst = L::X + (tid / 32) * TILE_BYTES + lane * 16;  // + WI * TILE_BYTES per piece
  auto load_stage = [&](int c, int s) {
    const uint32_t base = smem_s + s * L::STAGE;
    const int wc = chunk_words(d.K, c);
    const bool full = wc == WORDS_PER_LANE;
#pragma unroll
    for (int i = 0; i < XP; ++i)
      if (full || xq < 4 * wc) tg::int4_tc::cp_async16(base + x_dst + i * XR * X_ROW_BYTES, x_src[i] + c * CHUNK_K);
#pragma unroll
    for (int i = 0; i < WP; ++i)
      if ((BT * 32 % THREADS == 0 || tid + i * THREADS < BT * 32) && (full || lane < 8 * wc))
        tg::int4_tc::cp_async16(base + w_dst + i * WI * TILE_BYTES, w_src[i] + c * CHUNK_K);
    // the chunk's groups gl < gc, [gl][BN] (then zeros [gl][BN] at MAX_GROUPS_PER_CHUNK * BN); with
    // cp.async, runs past N stay unloaded (their columns are never stored)
    const int gc = min(groups_per_chunk, (d.K - c * CHUNK_K) / d.group_size), grp = c * groups_per_chunk;
    const int n0 = tile0 * TILE_N;
    if (scales_async) {
      for (int e = tid; e < gc * (BN / 8); e += THREADS) {
        const int gl = e / (BN / 8), n = n0 + e % (BN / 8) * 8;
        if (n < d.N) {
          const uint32_t o = base + L::X + L::W + (gl * BN + n - n0) * 2;
          const int64_t si = (int64_t)(grp + gl) * d.N + n;
          tg::int4_tc::cp_async16(o, scales + si);
          if (!SYM) tg::int4_tc::cp_async16(o + L::S, zeros + si);
        }
      }
    } else {
      __half* ss = reinterpret_cast<__half*>(smem + s * L::STAGE + L::X + L::W);
      for (int e = tid; e < gc * BN; e += THREADS) {
        const int gl = e / BN, n = n0 + e % BN;
        const int64_t si = (int64_t)(grp + gl) * d.N + n;
        ss[e] = n < d.N ? scales[si] : __float2half(0.0f);
        if (!SYM) ss[MAX_GROUPS_PER_CHUNK * BN + e] = n < d.N ? zeros[si] : __float2half(0.0f);
      }
    }
  };
  // Swapped MMA (y^T = W . x^T): tile pair p of the warp is the 16-row A operand (its tiles' words
  // are the A fragments of rows g and g + 8), 8 activation rows the B operand. acc[p][tb][r]:
  // output column (tile 2p + r / 2, row g), activation row 8 tb + 2t + r % 2.
  float acc[NP][TB][4];
#pragma unroll
  for (int p = 0; p < NP; ++p)
#pragma unroll
    for (int tb = 0; tb < TB; ++tb)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[p][tb][r] = 0.0f;

  // One chunk from stage s: wc words per lane and tile (FULL: 4, known at compile time).
  auto compute = [&](int s, int wc, auto full_tag) {
    constexpr bool FULL = decltype(full_tag)::value;
    const unsigned char* st = smem + s * L::STAGE;
    const __half* ss = reinterpret_cast<const __half*>(st + L::X + L::W);
    LaneChunk wch[NTW];
#pragma unroll
    for (int i = 0; i < NTW; ++i) {
      const unsigned char* tp = st + L::X + (wn * NTW + i) * TILE_BYTES;
      if (FULL) {
        wch[i] = *reinterpret_cast<const LaneChunk*>(tp + lane * 16);
      } else {
#pragma unroll
        for (int j = 0; j < WORDS_PER_LANE; ++j)
          wch[i].w[j] = j < wc ? reinterpret_cast<const uint32_t*>(tp)[lane * wc + j] : 0u;
      }
    }
#pragma unroll
    for (int j = 0; j < WORDS_PER_LANE; ++j) {
      if (!FULL && j >= wc) break;
      const int gl = j >> spg_shift;
      // the warp's weights of sub-tile j as (q - z) * s in T: the four fragment pairs per tile
      uint32_t wf[NTW][4];
#pragma unroll
      for (int i = 0; i < NTW; ++i) {
        const int col = (wn * NTW + i) * TILE_N + g;
        WordDequant<T> dq;
        if (SYM) {
          dq = WordDequant<T>::symmetric();
        } else {
          dq = WordDequant<T>::zero_point(__half2half2(ss[(MAX_GROUPS_PER_CHUNK + gl) * BN + col]));
        }
        dq.word(wch[i].w[j], wf[i]);
        const T2 s2 = as_h2<T2>(scale_pair<T>(ss[gl * BN + col]));
#pragma unroll
        for (int q = 0; q < 4; ++q) wf[i][q] = bits_of(__hmul2(as_h2<T2>(wf[i][q]), s2));
      }
      // B fragments: activation row 8 tb + g, k 8t .. 8t + 8 of the sub-tile (both k16 steps)
      uint4 xv[TB];
      const int piece = ((4 * j + t) ^ ((g & 1) << 2)) << 4;  // row 8 tb + g has parity g & 1
#pragma unroll
      for (int tb = 0; tb < TB; ++tb)
        xv[tb] = *reinterpret_cast<const uint4*>(st + (wm * WTM + 8 * tb + g) * X_ROW_BYTES + piece);
      // k16 step h: an accumulator's two MMAs of the word are NP * TB MMAs apart
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int p = 0; p < NP; ++p) {
          const uint32_t a[4] = {wf[2 * p][2 * h], wf[2 * p + 1][2 * h], wf[2 * p][2 * h + 1], wf[2 * p + 1][2 * h + 1]};
#pragma unroll
          for (int tb = 0; tb < TB; ++tb)
            mma_16816<T>(acc[p][tb], a, h ? xv[tb].z : xv[tb].x, h ? xv[tb].w : xv[tb].y);
        }
      }
    }
  };

  // Prologue: STAGES - 1 chunks of the split in flight.
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (c_begin + s < c_end) load_stage(c_begin + s, s);
    tg::int4_tc::cp_async_commit();
  }
  for (int c = c_begin; c < c_end; ++c) {
    const int it = c - c_begin;
    tg::int4_tc::cp_async_wait<STAGES - 2>();
    __syncthreads();  // chunk c landed for every thread; stage (it - 1) % STAGES is free
    if (c + STAGES - 1 < c_end) load_stage(c + STAGES - 1, (it + STAGES - 1) % STAGES);
    tg::int4_tc::cp_async_commit();
    const int wc = chunk_words(d.K, c);
    if (wc == WORDS_PER_LANE) {
      compute(it % STAGES, wc, std::true_type{});
    } else {
      compute(it % STAGES, wc, std::false_type{});
    }
  }
  tg::int4_tc::cp_async_wait<0>();

  // Epilogue: acc[p][tb][r] -> y[row 8 tb + 2t + r % 2][column of tile 2p + r / 2, row g] (split
  // partials raw; else + bias, the activation, one rounding), one instance per activation.
  tg::int4::with_act(gridDim.z > 1 ? (int)tg::Act::Identity : act, [&](auto a) {
    constexpr tg::Act A = decltype(a)::value;
#pragma unroll
    for (int tb = 0; tb < TB; ++tb) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = m0 + wm * WTM + 8 * tb + 2 * t + r % 2;
        if (row >= d.M) continue;
#pragma unroll
        for (int p = 0; p < NP; ++p) {
          const int col = (tile0 + wn * NTW + 2 * p + r / 2) * TILE_N + g;
          if (col >= d.N) continue;
          const int64_t o = (int64_t)row * d.N + col;
          if (gridDim.z > 1) {
            partial[(int64_t)blockIdx.z * d.M * d.N + o] = acc[p][tb][r];
          } else {
            const float b = bias != nullptr ? tg::to_float<T>(bias[col]) : 0.0f;
            y[o] = tg::from_float<T>(tg::activate<A>(acc[p][tb][r] + b));
          }
        }
      }
    }
  });
}

}  // namespace tg::int4_tc

#ifndef INT4_TC_NO_ENTRIES
// Entry points: int4_gemm_tc_<dtype>_<variant>_<sym|asym>, variant m<BM>n<BN>w<WM>x<WN>s<STAGES>.
// Mirrors `TcVariant` in src/quant/launch.rs.
#define INT4_TC_ENTRY(T, TNAME, BM, BN, WM, WN, ST, SYM, SNAME)                                                 \
  extern "C" __global__ void __launch_bounds__(WM * WN * 32, 1)                                                 \
      int4_gemm_tc_##TNAME##_m##BM##n##BN##w##WM##x##WN##s##ST##_##SNAME(                                       \
          const T* x, const uint32_t* packed, const __half* scales, const __half* zeros, T* y, float* partial,   \
          TcDims d, const T* bias, int act) {                                                                   \
    tg::int4_tc::int4_gemm_tc<T, BM, BN, WM, WN, ST, SYM>(x, packed, scales, zeros, y, partial, d, bias, act);  \
  }
#define INT4_TC_VARIANT(T, TNAME, BM, BN, WM, WN, ST)                                                           \
  INT4_TC_ENTRY(T, TNAME, BM, BN, WM, WN, ST, true, sym)                                                        \
  INT4_TC_ENTRY(T, TNAME, BM, BN, WM, WN, ST, false, asym)
#define INT4_TC_ENTRIES(T, TNAME)                                                                               \
  INT4_TC_VARIANT(T, TNAME, 64, 128, 1, 4, 4)                                                                   \
  INT4_TC_VARIANT(T, TNAME, 32, 128, 1, 4, 4)

INT4_TC_ENTRIES(__half, f16)
INT4_TC_ENTRIES(__nv_bfloat16, bf16)
#endif
