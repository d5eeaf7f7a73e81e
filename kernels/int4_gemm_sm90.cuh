// W4A16 GEMM for Hopper (sm_90a only; harness-only: scripts/int4_tma_harness.cu times it):
// y[M, N] = x[M, K] . W^T with W in the packed INT4 format of int4_format.cuh.
//
// Machete-style: the weights are wgmma's 64-row A operand, dequantized in registers (each warp of
// a warpgroup owns 16 weight rows = one format tile pair, exactly as in int4_gemm_tc.cu's swapped
// MMA), and x is the B operand, read by the tensor cores from 128-byte-swizzled shared memory
// through a descriptor (K-major: x rows as stored). The format orders k per lane column (lane t
// owns k 8t .. 8t + 8 of each 32-wide sub-tile) while wgmma's register A fragment wants lane t to
// hold k pairs t, t + 4, t + 8, t + 12: a 4 x 4 transpose of nibble pairs across the 4 lanes of a
// quad (two shuffles per word) before the dequantization puts the weights in natural k order, so
// x needs no permutation. A block: WG warpgroups (64 weight rows each) x BX activation rows,
// a STAGES-deep cp.async pipeline over 128-wide K chunks (x tile, weight tiles, scales / zeros),
// f32 accumulators. No K split. Status (H100, benchmarks/int4.md helper round 2):
// correct, but slower than the mma.sync GEMM (K=4096 -> N=11008, M=512: 198 us against 158, and
// dequantize + cuBLAS 105): each chunk's dequantization and wgmmas are serialized per warpgroup.
#pragma once
#include "int4_gemm_tc.cu"  // TcDims, cp_async16, scale_pair, Pair (define INT4_TC_NO_ENTRIES first)

namespace tg::int4_sm90 {





__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
template <int N> __device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
// 128-byte swizzle descriptor (K-major: leading byte offset unused, stride 1024 between 8-row groups).
__device__ __forceinline__ uint64_t make_desc(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(16 >> 4) << 16) | (uint64_t(1024 >> 4) << 32) | (1ull << 62);
}

// D += A . B: A [64 x 16] from registers (per warp the m16n8k16 A fragment of its 16 rows),
// B [16 x N] from shared memory, K-major.
template <typename T, int N> struct WgmmaRS;
template <> struct WgmmaRS<__half, 64> {
  static __device__ __forceinline__ void run(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__half, 128> {
  static __device__ __forceinline__ void run(float (&d)[64], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__nv_bfloat16, 64> {
  static __device__ __forceinline__ void run(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

template <> struct WgmmaRS<__nv_bfloat16, 128> {
  static __device__ __forceinline__ void run(float (&d)[64], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
  }
};

// Lane t of a quad holds nibble pairs (slot s = nibbles s and s + 4) of pair index 4t + s; after
// the transpose slot s holds pair index t + 4s (from lane s of the quad).
__device__ __forceinline__ uint32_t quad_transpose(uint32_t w, int t) {
  uint32_t p = __shfl_xor_sync(0xffffffffu, w, 2);
  w = (t & 2) ? ((w & 0xFF00FF00u) | ((p >> 8) & 0x00FF00FFu)) : ((w & 0x00FF00FFu) | ((p << 8) & 0xFF00FF00u));
  p = __shfl_xor_sync(0xffffffffu, w, 1);
  w = (t & 1) ? ((w & 0xF0F0F0F0u) | ((p >> 4) & 0x0F0F0F0Fu)) : ((w & 0x0F0F0F0Fu) | ((p << 4) & 0xF0F0F0F0u));
  return w;
}

constexpr int TILE_BYTES = tg::WARP_SIZE * 16;
constexpr int MAX_GROUPS = CHUNK_K / 32;

template <int WG, int BX, int STAGES> struct Sm90Smem {
  static constexpr int BNW = 64 * WG;             // weight rows (output columns) per block
  static constexpr int X = BX * CHUNK_K * 2;      // two 64-wide swizzle-atom columns of BX rows
  static constexpr int W = BNW / TILE_N * TILE_BYTES;
  static constexpr int S = MAX_GROUPS * BNW * 2;  // scales; zeros follow
  static constexpr int STAGE = X + W + 2 * S;
  static constexpr int BYTES = STAGES * STAGE + 1024;  // + alignment slack
  static_assert(STAGE % 1024 == 0 && X % 1024 == 0, "swizzle atoms 1024-byte aligned");
};

template <typename T, int WG, int BX, int STAGES, bool SYM>
__device__ __forceinline__ void int4_gemm_sm90(const T* __restrict__ x, const uint32_t* __restrict__ packed,
                                               const __half* __restrict__ scales, const __half* __restrict__ zeros,
                                               T* __restrict__ y, TcDims d) {
  using T2 = typename tg::int4_tc::Pair<T>::type;
  using L = Sm90Smem<WG, BX, STAGES>;
  constexpr int THREADS = 128 * WG, BNW = L::BNW, BT = BNW / TILE_N;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw_s = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t smem_s = (raw_s + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (smem_s - raw_s);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;  // warp: 4 wg + w
  const int g = lane / 4, t = lane % 4;
  const int m0 = blockIdx.x * BX, tile0 = blockIdx.y * BT;
  const int n_tiles = tg::ceil_div(d.N, TILE_N), n_chunks = tg::ceil_div(d.K, CHUNK_K);
  const int spg_shift = d.group_size == 32 ? 0 : d.group_size == 64 ? 1 : 2;
  const int groups_per_chunk = MAX_GROUPS >> spg_shift;
  const bool scales_async = d.N % 8 == 0 && (reinterpret_cast<uintptr_t>(scales) & 15) == 0 &&
                            (SYM || (reinterpret_cast<uintptr_t>(zeros) & 15) == 0);

  auto load_stage = [&](int c, int s) {
    const uint32_t base = smem_s + s * L::STAGE;
    const int wc = chunk_words(d.K, c);
    for (int e = tid; e < BX * 16; e += THREADS) {
      const int r = e / 16, q = e % 16;
      if (q < 4 * wc) {
        const uint32_t dst = base + (q / 8) * (BX * 128) + r * 128 + (((q % 8) ^ (r & 7)) << 4);
        tg::int4_tc::cp_async16(dst, x + (int64_t)min(m0 + r, d.M - 1) * d.K + c * CHUNK_K + q * 8);
      }
    }
    for (int e = tid; e < BT * 32; e += THREADS) {
      const int i = e / 32, l = e % 32;
      if (l < 8 * wc)
        tg::int4_tc::cp_async16(base + L::X + i * TILE_BYTES + l * 16, packed + (int64_t)min(tile0 + i, n_tiles - 1) * d.K + c * CHUNK_K + l * 4);
    }
    const int gc = min(groups_per_chunk, (d.K - c * CHUNK_K) / d.group_size), grp = c * groups_per_chunk;
    const int n0 = tile0 * TILE_N;
    if (scales_async) {
      for (int e = tid; e < gc * (BNW / 8); e += THREADS) {
        const int gl = e / (BNW / 8), n = n0 + e % (BNW / 8) * 8;
        if (n < d.N) {
          const uint32_t o = base + L::X + L::W + (gl * BNW + n - n0) * 2;
          const int64_t si = (int64_t)(grp + gl) * d.N + n;
          tg::int4_tc::cp_async16(o, scales + si);
          if (!SYM) tg::int4_tc::cp_async16(o + L::S, zeros + si);
        }
      }
    } else {
      __half* ss = reinterpret_cast<__half*>(smem + s * L::STAGE + L::X + L::W);
      for (int e = tid; e < gc * BNW; e += THREADS) {
        const int gl = e / BNW, n = n0 + e % BNW;
        const int64_t si = (int64_t)(grp + gl) * d.N + n;
        ss[e] = n < d.N ? scales[si] : __float2half(0.0f);
        if (!SYM) ss[MAX_GROUPS * BNW + e] = n < d.N ? zeros[si] : __float2half(0.0f);
      }
    }
  };

  float acc[BX / 2];
#pragma unroll
  for (int i = 0; i < BX / 2; ++i) acc[i] = 0.0f;
  const int ta = 2 * warp, tb = ta + 1;  // the warp's tile pair (block-local): A rows g and g + 8

  auto compute = [&](int s, int wc) {
    const unsigned char* st = smem + s * L::STAGE;
    const uint32_t xs = smem_s + s * L::STAGE;
    const __half* ss = reinterpret_cast<const __half*>(st + L::X + L::W);
    LaneChunk wa, wb;
    if (wc == WORDS_PER_LANE) {
      wa = *reinterpret_cast<const LaneChunk*>(st + L::X + ta * TILE_BYTES + lane * 16);
      wb = *reinterpret_cast<const LaneChunk*>(st + L::X + tb * TILE_BYTES + lane * 16);
    } else {
#pragma unroll
      for (int j = 0; j < WORDS_PER_LANE; ++j) {
        wa.w[j] = j < wc ? reinterpret_cast<const uint32_t*>(st + L::X + ta * TILE_BYTES)[lane * wc + j] : 0u;
        wb.w[j] = j < wc ? reinterpret_cast<const uint32_t*>(st + L::X + tb * TILE_BYTES)[lane * wc + j] : 0u;
      }
    }
    uint32_t a[WORDS_PER_LANE][2][4];
#pragma unroll
    for (int j = 0; j < WORDS_PER_LANE; ++j) {
      const int gl = j >> spg_shift;
      uint32_t pa[4], pb[4];
      const int ca = ta * TILE_N + g, cb = tb * TILE_N + g;
      WordDequant<T> da, db;
      if (SYM) {
        da = db = WordDequant<T>::symmetric();
      } else {
        da = WordDequant<T>::zero_point(__half2half2(ss[(MAX_GROUPS + gl) * BNW + ca]));
        db = WordDequant<T>::zero_point(__half2half2(ss[(MAX_GROUPS + gl) * BNW + cb]));
      }
      da.word(quad_transpose(wa.w[j], t), pa);
      db.word(quad_transpose(wb.w[j], t), pb);
      const T2 sa = as_h2<T2>(tg::int4_tc::scale_pair<T>(ss[gl * BNW + ca]));
      const T2 sb = as_h2<T2>(tg::int4_tc::scale_pair<T>(ss[gl * BNW + cb]));
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        pa[q] = bits_of(__hmul2(as_h2<T2>(pa[q]), sa));
        pb[q] = bits_of(__hmul2(as_h2<T2>(pb[q]), sb));
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        a[j][h][0] = pa[2 * h];
        a[j][h][1] = pb[2 * h];
        a[j][h][2] = pa[2 * h + 1];
        a[j][h][3] = pb[2 * h + 1];
      }
    }
    fence_regs(acc);
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < WORDS_PER_LANE; ++j) {
      if (j >= wc) break;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int kk = 2 * j + h;  // k16 step of the chunk
        WgmmaRS<T, BX>::run(acc, a[j][h], make_desc(xs + (kk / 4) * (BX * 128) + (kk % 4) * 32));
      }
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(acc);
  };

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < n_chunks) load_stage(s, s);
    tg::int4_tc::cp_async_commit();
  }
  for (int c = 0; c < n_chunks; ++c) {
    tg::int4_tc::cp_async_wait<STAGES - 2>();
    fence_proxy_async();
    __syncthreads();
    if (c + STAGES - 1 < n_chunks) load_stage(c + STAGES - 1, (c + STAGES - 1) % STAGES);
    tg::int4_tc::cp_async_commit();
    compute(c % STAGES, chunk_words(d.K, c));
  }
  tg::int4_tc::cp_async_wait<0>();

  // acc[4 jb + 2 r + e]: weight row 16 warp + g + 8 r (block-local), activation row 8 jb + 2 t + e
#pragma unroll
  for (int jb = 0; jb < BX / 8; ++jb) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int row = m0 + 8 * jb + 2 * t + e;
      if (row >= d.M) continue;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int col = tile0 * TILE_N + 16 * warp + g + 8 * r;
        if (col < d.N) y[(int64_t)row * d.N + col] = tg::from_float<T>(acc[4 * jb + 2 * r + e]);
      }
    }
  }
}

}  // namespace tg::int4_sm90
