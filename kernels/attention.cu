// Fused attention, softmax(Q·Kᵀ·scale + mask)·V, never materializing the Nq x Nk scores.
//
// attn_prefill_<dtype>_d<HD>_w<W>_m<M>_n<N>_g<G>  FlashAttention-2 style: a block owns BLOCK_M
//   query rows (W warps x M m16 tiles), streams N-key K/V tiles through shared memory (cp.async,
//   STAGES deep), computes both products with mma.sync.m16n8k16 (f16/bf16 in, f32 accumulate),
//   keeps P in registers (the C fragment of Q·Kᵀ is the A fragment of P·V), exp2(s·scale - max)
//   as one FFMA + ex2, skips tiles above the causal diagonal and starts the longest causal walks
//   first; G KV groups of W warps split the walk in the block. HD is the head dim padded to 16
//   (zeros in smem).
// attn_splitkv_<dtype>_d<HD>  flash-decoding for short queries (and every f32 call): SIMT, QROWS
//   queries per block, the keys split across gridDim.y blocks, each writing its normalized
//   partial output and log-sum-exp; attn_combine_<dtype> merges the splits.
// (The one-query decode kernel is kernels/attention_decode.cu.)
//
// Launch parameters: tg::attn::Params (attention.cuh), mirrored in src/attention/cuda.rs; tile
// sizes below are mirrored in src/attention/config.rs.
#include <cfloat>

#include "attention.cuh"

using tg::attn::Mask;
using tg::attn::Params;
using tg::attn::RowState;

namespace {

constexpr int MMA_M = 16;  // rows of one mma.m16n8k16 tile
constexpr int MMA_N = 8;
constexpr int MMA_K = 16;
constexpr int VEC = 8;  // elements per 16-byte f16/bf16 vector
constexpr unsigned FULL_MASK = 0xffffffffu;

// ---- PTX wrappers ---------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
// Waits until at most N committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// c += a·b for one m16n8k16 tile; `pack` makes the 2-element registers of A from f32 pairs.
template <typename T> struct Mma;
template <> struct Mma<__half> {
  static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <> struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

// ================================ prefill (tensor cores) =====================================
// 2^x on the SFU (ex2.approx, ~2 ulp, subnormal results flushed to 0: such a weight is < 2^-126 of
// the row's largest and vanishes in the sum anyway).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

template <typename T, int HEAD_DIM, int WARPS_, int M_TILES_, int BLOCK_N_, int KV_GROUPS_>
struct PrefillTraits {
  static constexpr int WARPS = WARPS_;  // warps over the query rows, in each KV group
  // m16 tiles per warp: a warp with two (32 rows) reuses every K/V fragment it loads from smem
  // for both, halving the ldmatrix traffic per mma, which bounds the 16-row warp.
  static constexpr int M_TILES = M_TILES_;
  // KV groups of WARPS warps each walk every KV_GROUPS-th key tile of the same query rows and
  // merge at the end: a small grid's serial walk gets shorter with no combine kernel, no partial
  // buffer and one launch (the host cost of those is what small calls pay).
  static constexpr int KV_GROUPS = KV_GROUPS_;
  static constexpr int THREADS = WARPS * KV_GROUPS * tg::WARP_SIZE;
  static constexpr int WARP_M = M_TILES * MMA_M;             // query rows per warp
  static constexpr int BLOCK_M = WARPS * WARP_M;             // query rows per block
  static constexpr int BLOCK_N = BLOCK_N_;                   // keys per tile
  // K/V tiles in flight: the loop is latency-bound at small shapes, so small heads (cheap smem)
  // prefetch two tiles ahead; larger ones one, keeping two blocks per SM.
  static constexpr int STAGES = HEAD_DIM <= 64 ? 3 : 2;
  static constexpr int SMEM_STRIDE = HEAD_DIM + VEC;  // +16 bytes per row: ldmatrix rows hit distinct banks
  static constexpr int STAGE_ELEMS = KV_GROUPS * 2 * BLOCK_N * SMEM_STRIDE;  // K, V of one tile per group
  static constexpr int SMEM_BYTES = (BLOCK_M * SMEM_STRIDE + STAGES * STAGE_ELEMS) * int(sizeof(T));
  static constexpr int D_STEPS = HEAD_DIM / MMA_K;  // k-steps of Q·Kᵀ
  static constexpr int S_TILES = BLOCK_N / MMA_N;   // n8 tiles of S per m16 tile
  static constexpr int O_TILES = HEAD_DIM / MMA_N;  // n8 tiles of O per m16 tile
  static_assert(HEAD_DIM % MMA_K == 0, "head dim instances are multiples of 16");
  static_assert(BLOCK_N % MMA_K == 0 && O_TILES % 2 == 0, "x4 ldmatrix loads two n8 tiles");
  static_assert(sizeof(T) == 2, "the tensor-core path is f16/bf16");
  static_assert(SMEM_BYTES <= 227 * 1024, "over the sm_90 shared memory per block");
  static_assert(STAGES >= 2, "the pipeline overlaps at least one tile");
  static_assert(M_TILES * (O_TILES + S_TILES) * 4 <= 192, "accumulators must leave registers to spare");
  // The merge: groups 1.. leave each thread's O fragments, row max and partial row sum in smem.
  static constexpr int MERGE_FLOATS = M_TILES * (O_TILES * 4 + 2 * 2);  // per thread
  static_assert((KV_GROUPS - 1) * WARPS * tg::WARP_SIZE * MERGE_FLOATS * 4 <= SMEM_BYTES, "merge fits in smem");
  static_assert(KV_GROUPS >= 1, "at least one group");
};

// Rows [0, rows) of a [ROWS, HEAD_DIM] tile (row stride `stride`, first `d` columns real) into
// smem with cp.async; the rest is zero-filled so padding adds nothing to the products.
template <typename T, int ROWS, int HEAD_DIM, int STRIDE, int THREADS>
__device__ __forceinline__ void load_tile(T* smem, const T* gmem, int64_t stride, int rows, int d) {
  constexpr int CHUNKS = HEAD_DIM / VEC;
  for (int idx = threadIdx.x; idx < ROWS * CHUNKS; idx += THREADS) {
    const int r = idx / CHUNKS, c = (idx % CHUNKS) * VEC;
    T* dst = smem + r * STRIDE + c;
    if (r < rows && c < d) {
      cp_async16(dst, gmem + r * stride + c);
    } else {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
  }
}

// Grid: x = (B x num_splits) x Hq, y = query blocks. The hardware issues blocks in x-fastest
// order, so with a causal mask y is walked backwards: the longest walks (the last query blocks)
// start first and the short ones fill the tail of the last wave.
template <typename T, int HEAD_DIM, int WARPS, int M_TILES, int BLOCK_N, int KV_GROUPS>
__device__ __forceinline__ void attn_prefill(const Params& p) {
  using Tr = PrefillTraits<T, HEAD_DIM, WARPS, M_TILES, BLOCK_N, KV_GROUPS>;
  constexpr int BM = Tr::BLOCK_M, BN = Tr::BLOCK_N, STRIDE = Tr::SMEM_STRIDE, MT = M_TILES, G = KV_GROUPS;
  constexpr int STAGES = Tr::STAGES, TILE_ELEMS = BN * STRIDE;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [BM, STRIDE]
  T* sKV = sQ + BM * STRIDE;               // STAGES x G x (K [BN, STRIDE], V [BN, STRIDE])

  const int lane = threadIdx.x % tg::WARP_SIZE;
  // warp `warp` of KV group `group`: the group walks tiles t_begin + group, + G, ...
  const int warp = threadIdx.x / tg::WARP_SIZE % WARPS, group = threadIdx.x / tg::WARP_SIZE / WARPS;
  const int quad_row = lane / 4, quad_col = lane % 4;  // mma fragment coordinates
  // a split owns keys [split * keys_per_split, ...) (whole tiles)
  const int h = blockIdx.x % p.hq, bs = blockIdx.x / p.hq;
  const int b = bs / p.num_splits, split = bs % p.num_splits;
  const int q_block = p.causal ? gridDim.y - 1 - blockIdx.y : blockIdx.y;
  const int q0 = q_block * BM;
  const int hk = h / (p.hq / p.hkv);
  const int rows = min(BM, p.nq - q0);
  const T* qg = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh + int64_t(q0) * p.q_sn;
  const T* kg = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh;
  const Mask mask(p);
  const int split_tiles = p.keys_per_split / BN;
  const int t_begin = split * split_tiles;
  // causal: tiles past the diagonal skipped
  const int t_end = min(tg::ceil_div(mask.key_end(q0, rows), BN), t_begin + split_tiles);
  // Scores stay raw until exp2(s * scale - max * scale), one FFMA: the row max of the raw scores
  // gives the scaled max only for scale > 0, so a negative scale flips the scores' sign instead,
  // and scale 0 becomes the smallest normal float (masked -inf * 0 would be NaN; exp2 of the
  // tiny products is exactly 1, as for scale 0).
  const bool flip = p.scale_log2 < 0.0f;
  const float scale = fmaxf(fabsf(p.scale_log2), FLT_MIN);

  // Step `st` covers tiles t_begin + st * G + (0..G), one per group: their K and V go into
  // pipeline stage st % STAGES, as one cp.async group.
  auto load_kv = [&](int st) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const int t = t_begin + st * G + g;
      if (t < t_end) {
        const int k0 = t * BN, keys = min(BN, p.nk - k0);
        T* sK = sKV + (st % STAGES) * Tr::STAGE_ELEMS + g * 2 * TILE_ELEMS;
        load_tile<T, BN, HEAD_DIM, STRIDE, Tr::THREADS>(sK, kg + int64_t(k0) * p.k_sn, p.k_sn, keys, p.d);
        load_tile<T, BN, HEAD_DIM, STRIDE, Tr::THREADS>(sK + TILE_ELEMS, vg + int64_t(k0) * p.v_sn, p.v_sn, keys, p.d);
      }
    }
    cp_async_commit();  // an empty group past the end keeps the group count per step fixed
  };
  const int steps = tg::ceil_div(max(0, t_end - t_begin), G);

  // Prologue: Q (with step 0's group) and the first STAGES - 1 steps.
  load_tile<T, BM, HEAD_DIM, STRIDE, Tr::THREADS>(sQ, qg, p.q_sn, rows, p.d);
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) load_kv(st);

  float o[MT][Tr::O_TILES][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int dt = 0; dt < Tr::O_TILES; ++dt) o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.0f;
  RowState row[MT][2];  // this thread's rows: quad_row and quad_row + 8 of each m16 tile
  int row_i[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    row_i[mt][0] = q0 + warp * Tr::WARP_M + mt * MMA_M + quad_row;
    row_i[mt][1] = row_i[mt][0] + 8;
  }

  for (int st = 0; st < steps; ++st) {
    cp_async_wait_group<STAGES - 2>();
    __syncthreads();  // this step landed; every warp is done with the stage of the previous step
    load_kv(st + STAGES - 1);  // into the previous step's stage
    const int tile = t_begin + st * G + group;
    if (tile >= t_end) continue;  // warp-uniform: this group has no tile in the last step
    const int k0 = tile * BN;
    const T* sK = sKV + (st % STAGES) * Tr::STAGE_ELEMS + group * 2 * TILE_ELEMS;
    const T* sV = sK + TILE_ELEMS;

    // S = Q·Kᵀ for the warp's rows; each K fragment serves all MT m16 tiles.
    float s[MT][Tr::S_TILES][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < Tr::S_TILES; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < Tr::D_STEPS; ++ks) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
        ldmatrix_x4(a[mt], sQ + (warp * Tr::WARP_M + mt * MMA_M + lane % 16) * STRIDE + ks * MMA_K + (lane / 16) * 8);
#pragma unroll
      for (int nt2 = 0; nt2 < Tr::S_TILES / 2; ++nt2) {
        uint32_t bk[4];
        ldmatrix_x4(bk, sK + (nt2 * 16 + (lane / 16) * 8 + lane % 8) * STRIDE + ks * MMA_K + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          Mma<T>::run(s[mt][2 * nt2], a[mt], bk[0], bk[1]);
          Mma<T>::run(s[mt][2 * nt2 + 1], a[mt], bk[2], bk[3]);
        }
      }
    }

    if (flip) {  // block-uniform; see `scale`
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < Tr::S_TILES; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][nt][e] = -s[mt][nt][e];
    }
    // Mask only tiles that cross the end of the keys or the diagonal.
    if (k0 + BN > p.nk || (p.causal && k0 + BN - 1 > q0 + p.causal_offset)) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < Tr::S_TILES; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int j = k0 + nt * MMA_N + 2 * quad_col + (e & 1);
            if (!mask.visible(row_i[mt][e / 2], j)) s[mt][nt][e] = -INFINITY;
          }
    }

    // Online softmax: a row's BN scores are spread over the 4 threads of a quad.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < Tr::S_TILES; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * half], s[mt][nt][2 * half + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
        float ref;
        const float alpha = row[mt][half].update_max(mx * scale, ref);
#pragma unroll
        for (int dt = 0; dt < Tr::O_TILES; ++dt) {
          o[mt][dt][2 * half] *= alpha;
          o[mt][dt][2 * half + 1] *= alpha;
        }
        float sum = 0.0f;  // this thread's part of the row sum; the quad adds them up at the end
#pragma unroll
        for (int nt = 0; nt < Tr::S_TILES; ++nt) {
#pragma unroll
          for (int e = 2 * half; e < 2 * half + 2; ++e) {
            s[mt][nt][e] = fast_exp2(fmaf(s[mt][nt][e], scale, -ref));
            sum += s[mt][nt][e];
          }
        }
        row[mt][half].l += sum;
        if (p.drop_threshold) {
#pragma unroll
          for (int nt = 0; nt < Tr::S_TILES; ++nt) {
            const uint2 bits =
                tg::attn::dropout_bits_pair(p, b, h, row_i[mt][half], k0 + nt * MMA_N + 2 * quad_col);
            s[mt][nt][2 * half] = tg::attn::apply_dropout(p, bits.x, s[mt][nt][2 * half]);
            s[mt][nt][2 * half + 1] = tg::attn::apply_dropout(p, bits.y, s[mt][nt][2 * half + 1]);
          }
        }
      }
    }

    // O += P·V: the S accumulators of two n8 tiles are the A fragment of one k16 step; each V
    // fragment serves all MT m16 tiles.
#pragma unroll
    for (int kk = 0; kk < Tr::S_TILES / 2; ++kk) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        a[mt][0] = Mma<T>::pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        a[mt][1] = Mma<T>::pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        a[mt][2] = Mma<T>::pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        a[mt][3] = Mma<T>::pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dt2 = 0; dt2 < Tr::O_TILES / 2; ++dt2) {
        uint32_t bv[4];
        ldmatrix_x4_trans(bv, sV + (kk * MMA_K + ((lane / 8) % 2) * 8 + lane % 8) * STRIDE + dt2 * 16 + (lane / 16) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          Mma<T>::run(o[mt][2 * dt2], a[mt], bv[0], bv[1]);
          Mma<T>::run(o[mt][2 * dt2 + 1], a[mt], bv[2], bv[3]);
        }
      }
    }
  }
  cp_async_wait_all();

  if constexpr (G > 1) {
    // Merge the groups' (max, sum, O) per fragment element into group 0, through smem laid out
    // [group - 1][warp][value][lane] (conflict-free); the K/V stages and Q are no longer read.
    constexpr int MF = Tr::MERGE_FLOATS;
    float* sMerge = reinterpret_cast<float*>(smem_raw);
    __syncthreads();
    if (group > 0) {
      float* dst = sMerge + ((group - 1) * WARPS + warp) * MF * tg::WARP_SIZE + lane;
      int e = 0;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          dst[(e++) * tg::WARP_SIZE] = row[mt][half].m;
          dst[(e++) * tg::WARP_SIZE] = row[mt][half].l;
        }
#pragma unroll
        for (int dt = 0; dt < Tr::O_TILES; ++dt)
#pragma unroll
          for (int c = 0; c < 4; ++c) dst[(e++) * tg::WARP_SIZE] = o[mt][dt][c];
      }
    }
    __syncthreads();
    if (group > 0) return;
#pragma unroll
    for (int g = 1; g < G; ++g) {
      const float* src = sMerge + ((g - 1) * WARPS + warp) * MF * tg::WARP_SIZE + lane;
      int e = 0;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        float w_self[2], w_other[2];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const float m_other = src[(e++) * tg::WARP_SIZE], l_other = src[(e++) * tg::WARP_SIZE];
          RowState& r = row[mt][half];
          const float m_new = fmaxf(r.m, m_other);
          w_self[half] = tg::attn::split_weight(r.m, m_new);
          w_other[half] = tg::attn::split_weight(m_other, m_new);
          r.m = m_new;
          r.l = w_self[half] * r.l + w_other[half] * l_other;
        }
#pragma unroll
        for (int dt = 0; dt < Tr::O_TILES; ++dt)
#pragma unroll
          for (int c = 0; c < 4; ++c) o[mt][dt][c] = w_self[c / 2] * o[mt][dt][c] + w_other[c / 2] * src[(e++) * tg::WARP_SIZE];
      }
    }
  }

  // Epilogue: finish the row sums across the quad, normalize, store (split: the f32 partial and
  // its log-sum-exp, merged by attn_combine).
  const int64_t bh_row0 = int64_t(b * p.hq + h) * p.nq;  // [B, Hq, Nq] row of query 0
  const int64_t total_rows = int64_t(p.b) * p.hq * p.nq;
  T* og = static_cast<T*>(p.o) + bh_row0 * p.d;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float l = row[mt][half].l;
      l += __shfl_xor_sync(FULL_MASK, l, 1);
      l += __shfl_xor_sync(FULL_MASK, l, 2);
      row[mt][half].l = l;
      const int i = row_i[mt][half];
      if (i >= p.nq) continue;
      const float inv = row[mt][half].inv_sum();
      if (p.num_splits == 1) {
#pragma unroll
        for (int dt = 0; dt < Tr::O_TILES; ++dt) {
          const int col = dt * MMA_N + 2 * quad_col;
          if (col < p.d) {
            *reinterpret_cast<uint32_t*>(og + int64_t(i) * p.d + col) =
                Mma<T>::pack(o[mt][dt][2 * half] * inv, o[mt][dt][2 * half + 1] * inv);
          }
        }
      } else {
        const int64_t row_id = split * total_rows + bh_row0 + i;
        float* op = p.o_partial + row_id * p.d;
#pragma unroll
        for (int dt = 0; dt < Tr::O_TILES; ++dt) {
          const int col = dt * MMA_N + 2 * quad_col;
          if (col < p.d) {
            *reinterpret_cast<float2*>(op + col) = make_float2(o[mt][dt][2 * half] * inv, o[mt][dt][2 * half + 1] * inv);
          }
        }
        if (quad_col == 0) p.lse_partial[row_id] = row[mt][half].lse();
      }
    }
  }
}

// ================================ split-KV (SIMT) ============================================
template <typename T, int HEAD_DIM>
struct SplitKvTraits {
  static constexpr int WARPS = 4;
  static constexpr int THREADS = WARPS * tg::WARP_SIZE;
  static constexpr int QROWS = WARPS;  // query rows per block: warp r runs the softmax of row r
  static constexpr int TILE_N = 2 * tg::WARP_SIZE;  // keys per tile: two per lane in the softmax
  static constexpr int CHUNKS = HEAD_DIM / VEC;     // 8-element chunks per row
  static constexpr int KEYS_PER_PASS = tg::WARP_SIZE / CHUNKS;  // keys a warp scores at once
  static constexpr int KEY_GROUPS = THREADS / CHUNKS;           // P·V: threads per chunk column
  static_assert((CHUNKS & (CHUNKS - 1)) == 0 && CHUNKS <= tg::WARP_SIZE, "chunk lanes form a shuffle group");
  static constexpr int SCORE_ITERS = TILE_N / (WARPS * KEYS_PER_PASS);  // keys per lane per tile
  static constexpr int PV_ITERS = TILE_N / KEY_GROUPS;                    // V chunks per thread per tile
  // Loads are issued in batches of up to LOAD_BATCH before their use, so a warp has that many
  // 16-byte loads in flight: the kernel streams K/V and is bound by memory-level parallelism.
  static constexpr int LOAD_BATCH = 8;
  static_assert(TILE_N % (WARPS * KEYS_PER_PASS) == 0, "every lane scores the same number of keys");
  static_assert(SCORE_ITERS % LOAD_BATCH == 0 || SCORE_ITERS < LOAD_BATCH, "whole batches");
  static_assert(PV_ITERS % LOAD_BATCH == 0 || PV_ITERS < LOAD_BATCH, "whole batches");
};

template <typename T, int HEAD_DIM>
__device__ __forceinline__ void attn_splitkv(const Params& p) {
  using Tr = SplitKvTraits<T, HEAD_DIM>;
  constexpr int QROWS = Tr::QROWS, TILE_N = Tr::TILE_N, CHUNKS = Tr::CHUNKS;
  __shared__ float sQ[QROWS][HEAD_DIM];  // pre-scaled by scale * log2(e)
  __shared__ float sP[QROWS][TILE_N];    // scores, then probabilities
  __shared__ float sAlpha[QROWS];
  __shared__ float sInv[QROWS], sLse[QROWS];
  __shared__ float sRed[QROWS][Tr::KEY_GROUPS * HEAD_DIM];  // per-key-group partial outputs

  const int tid = threadIdx.x, warp = tid / tg::WARP_SIZE, lane = tid % tg::WARP_SIZE;
  const int q0 = blockIdx.x * QROWS, split = blockIdx.y, bh = blockIdx.z;
  const int b = bh / p.hq, h = bh % p.hq, hk = h / (p.hq / p.hkv);
  const int rows = min(QROWS, p.nq - q0);
  const Mask mask(p);
  const int k_begin = split * p.keys_per_split;
  const int k_end = min(mask.key_end(q0, rows), min(p.nk, k_begin + p.keys_per_split));
  const T* qg = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh + int64_t(q0) * p.q_sn;
  const T* kg = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh;

  for (int idx = tid; idx < QROWS * HEAD_DIM; idx += Tr::THREADS) {
    const int r = idx / HEAD_DIM, c = idx % HEAD_DIM;
    sQ[r][c] = r < rows && c < p.d ? tg::to_float(qg[r * p.q_sn + c]) * p.scale_log2 : 0.0f;
  }
  RowState row;  // of query row `warp`
  const int score_chunk = lane % CHUNKS, score_key = lane / CHUNKS;
  const int pv_chunk = tid % CHUNKS, pv_group = tid / CHUNKS;
  float acc[QROWS][VEC];
#pragma unroll
  for (int r = 0; r < QROWS; ++r)
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[r][e] = 0.0f;
  __syncthreads();

  for (int k0 = k_begin; k0 < k_end; k0 += TILE_N) {
    // Scores: CHUNKS lanes per key, each a 16-byte piece of the K row, reduced by shuffles.
    constexpr int SB = Tr::SCORE_ITERS < Tr::LOAD_BATCH ? Tr::SCORE_ITERS : Tr::LOAD_BATCH;
#pragma unroll
    for (int it0 = 0; it0 < Tr::SCORE_ITERS; it0 += SB) {
      tg::attn::Raw8<T> kraw[SB];
#pragma unroll
      for (int it = 0; it < SB; ++it) {
        const int j = k0 + (it0 + it) * Tr::WARPS * Tr::KEYS_PER_PASS + warp * Tr::KEYS_PER_PASS + score_key;
        kraw[it] = j < k_end && score_chunk * VEC < p.d
                       ? tg::attn::load_raw8(kg + int64_t(j) * p.k_sn + score_chunk * VEC)
                       : tg::attn::Raw8<T>{};
      }
#pragma unroll
      for (int it = 0; it < SB; ++it) {
        const int kk = (it0 + it) * Tr::WARPS * Tr::KEYS_PER_PASS + warp * Tr::KEYS_PER_PASS + score_key;
        const int j = k0 + kk;
        float kv[VEC];
        tg::attn::to_float8(kraw[it], kv);
#pragma unroll
        for (int r = 0; r < QROWS; ++r) {
          if (r >= rows) {  // block-uniform: decode (one query) skips 3/4 of the work
            if (score_chunk == 0) sP[r][kk] = -INFINITY;
            continue;
          }
          float dot = 0.0f;
#pragma unroll
          for (int e = 0; e < VEC; ++e) dot += sQ[r][score_chunk * VEC + e] * kv[e];
#pragma unroll
          for (int off = CHUNKS / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(FULL_MASK, dot, off);
          if (score_chunk == 0) sP[r][kk] = j < k_end && mask.visible(q0 + r, j) ? dot : -INFINITY;
        }
      }
    }
    __syncthreads();

    // Online softmax of row `warp`: two scores per lane.
    {
      const int r = warp;
      const float s0 = sP[r][lane], s1 = sP[r][lane + tg::WARP_SIZE];
      float ref;
      const float alpha = row.update_max(tg::warp_max(fmaxf(s0, s1)), ref);
      float p0 = exp2f(s0 - ref), p1 = exp2f(s1 - ref);
      row.l += tg::warp_sum(p0 + p1);
      if (p.drop_threshold) {
        p0 = tg::attn::apply_dropout(p, tg::attn::dropout_bits(p, b, h, q0 + r, k0 + lane), p0);
        p1 = tg::attn::apply_dropout(p, tg::attn::dropout_bits(p, b, h, q0 + r, k0 + lane + tg::WARP_SIZE), p1);
      }
      sP[r][lane] = p0;
      sP[r][lane + tg::WARP_SIZE] = p1;
      if (lane == 0) sAlpha[r] = alpha;
    }
    __syncthreads();

    // P·V: each thread one 8-element chunk of the output for a strided subset of the keys.
#pragma unroll
    for (int r = 0; r < QROWS; ++r) {
      const float alpha = sAlpha[r];
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[r][e] *= alpha;
    }
    if (pv_chunk * VEC < p.d) {
      constexpr int PB = Tr::PV_ITERS < Tr::LOAD_BATCH ? Tr::PV_ITERS : Tr::LOAD_BATCH;
#pragma unroll
      for (int it0 = 0; it0 < Tr::PV_ITERS; it0 += PB) {
        tg::attn::Raw8<T> vraw[PB];
#pragma unroll
        for (int it = 0; it < PB; ++it) {
          const int j = k0 + (it0 + it) * Tr::KEY_GROUPS + pv_group;
          vraw[it] = j < k_end ? tg::attn::load_raw8(vg + int64_t(j) * p.v_sn + pv_chunk * VEC) : tg::attn::Raw8<T>{};
        }
#pragma unroll
        for (int it = 0; it < PB; ++it) {
          const int kk = (it0 + it) * Tr::KEY_GROUPS + pv_group;
          float vv[VEC];
          tg::attn::to_float8(vraw[it], vv);
#pragma unroll
          for (int r = 0; r < QROWS; ++r) {
            if (r >= rows) break;  // block-uniform
            const float pr = sP[r][kk];  // 0 past k_end
#pragma unroll
            for (int e = 0; e < VEC; ++e) acc[r][e] += pr * vv[e];
          }
        }
      }
    }
    __syncthreads();  // sP is rewritten by the next tile
  }

  // Sum the key groups, normalize by this split's row sum, store (or store the partial + lse).
#pragma unroll
  for (int r = 0; r < QROWS; ++r)
#pragma unroll
    for (int e = 0; e < VEC; ++e) sRed[r][pv_group * HEAD_DIM + pv_chunk * VEC + e] = acc[r][e];
  if (lane == 0) {
    sInv[warp] = row.inv_sum();
    sLse[warp] = row.lse();
  }
  __syncthreads();
  const int64_t total_rows = int64_t(p.b) * p.hq * p.nq;
  for (int idx = tid; idx < QROWS * HEAD_DIM; idx += Tr::THREADS) {
    const int r = idx / HEAD_DIM, c = idx % HEAD_DIM;
    if (r >= rows || c >= p.d) continue;
    float sum = 0.0f;
    for (int g = 0; g < Tr::KEY_GROUPS; ++g) sum += sRed[r][g * HEAD_DIM + c];
    const float val = sum * sInv[r];
    const int64_t row_id = int64_t(bh) * p.nq + q0 + r;  // [B, Hq, Nq] flattened
    if (p.num_splits == 1) {
      static_cast<T*>(p.o)[row_id * p.d + c] = tg::from_float<T>(val);
    } else {
      p.o_partial[(split * total_rows + row_id) * p.d + c] = val;
      if (c == 0) p.lse_partial[split * total_rows + row_id] = sLse[r];
    }
  }
}

// ================================ split merge ================================================
constexpr int COMBINE_WARPS = 4;  // output rows per combine block, one per warp (config::COMBINE_ROWS)

// out = Σ_s w_s · O_s / Σ_s w_s with w_s = 2^(lse_s - max lse): the lanes load the splits'
// log-sum-exps at once (two per lane: config::MAX_SPLITS <= 64), then each lane a column of
// every split's partial (coalesced).
template <typename T>
__device__ __forceinline__ void attn_combine(const Params& p) {
  const int64_t total_rows = int64_t(p.b) * p.hq * p.nq;
  const int warp = threadIdx.x / tg::WARP_SIZE, lane = threadIdx.x % tg::WARP_SIZE;
  const int64_t row_id = int64_t(blockIdx.x) * COMBINE_WARPS + warp;
  if (row_id >= total_rows) return;  // warp-uniform; no block barrier below
  const int ns = p.num_splits;
  const float lse0 = lane < ns ? p.lse_partial[lane * total_rows + row_id] : -INFINITY;
  const float lse1 = lane + tg::WARP_SIZE < ns ? p.lse_partial[(lane + tg::WARP_SIZE) * total_rows + row_id] : -INFINITY;
  const float lse_max = tg::warp_max(fmaxf(lse0, lse1));
  const float w0 = tg::attn::split_weight(lse0, lse_max), w1 = tg::attn::split_weight(lse1, lse_max);
  const float weights = tg::warp_sum(w0 + w1);
  const float inv = weights > 0.0f ? 1.0f / weights : 0.0f;
  // The column loop runs the same trips in every lane (D need not be a multiple of 32): the
  // weight shuffles need the whole warp.
  for (int c0 = 0; c0 < p.d; c0 += tg::WARP_SIZE) {
    const int c = c0 + lane;
    float acc = 0.0f;
#pragma unroll 8
    for (int s = 0; s < ns; ++s) {
      const float w = __shfl_sync(FULL_MASK, s < tg::WARP_SIZE ? w0 : w1, s % tg::WARP_SIZE);
      if (c < p.d) acc = fmaf(w, p.o_partial[(s * total_rows + row_id) * p.d + c], acc);
    }
    if (c < p.d) static_cast<T*>(p.o)[row_id * p.d + c] = tg::from_float<T>(acc * inv);
  }
}

}  // namespace

// ---- entry points ------------------------------------------------------------------------------
static_assert(sizeof(Params) == 192, "Params mirrors AttnParams in src/attention/cuda.rs");

#define ATTN_PREFILL(T, TNAME, HD, W, M, N, G)                                                \
  extern "C" __global__ void __launch_bounds__(PrefillTraits<T, HD, W, M, N, G>::THREADS)     \
      attn_prefill_##TNAME##_d##HD##_w##W##_m##M##_n##N##_g##G(const __grid_constant__ Params p) { \
    attn_prefill<T, HD, W, M, N, G>(p);                                                       \
  }
// Every head dim has a 16-rows-per-warp block (64-key tiles up to D=128; 32 keep larger heads
// in registers); up to 128 also the same with two KV groups, and a 32-rows-per-warp one; D=64
// also four KV groups (16 warps).
// Mirrored by config::PrefillBlock.
#define ATTN_PREFILL_SMALL(T, TNAME, HD, N)                                                   \
  ATTN_PREFILL(T, TNAME, HD, 4, 1, 64, 1)                                                     \
  ATTN_PREFILL(T, TNAME, HD, 4, 1, 64, 2) ATTN_PREFILL(T, TNAME, HD, 4, 2, N, 1)
#define ATTN_PREFILL_ALL(T, TNAME)                                                            \
  ATTN_PREFILL_SMALL(T, TNAME, 32, 64) ATTN_PREFILL_SMALL(T, TNAME, 48, 64)                   \
  ATTN_PREFILL_SMALL(T, TNAME, 64, 64) ATTN_PREFILL(T, TNAME, 64, 4, 1, 64, 4)                \
  ATTN_PREFILL_SMALL(T, TNAME, 80, 64)                                                        \
  ATTN_PREFILL_SMALL(T, TNAME, 96, 64) ATTN_PREFILL_SMALL(T, TNAME, 128, 32)                  \
  ATTN_PREFILL(T, TNAME, 160, 4, 1, 32, 1) ATTN_PREFILL(T, TNAME, 192, 4, 1, 32, 1)           \
  ATTN_PREFILL(T, TNAME, 256, 4, 1, 32, 1)

#define ATTN_SPLITKV(T, TNAME, HD)                                                            \
  extern "C" __global__ void __launch_bounds__(SplitKvTraits<T, HD>::THREADS)                 \
      attn_splitkv_##TNAME##_d##HD(const __grid_constant__ Params p) {                        \
    attn_splitkv<T, HD>(p);                                                                   \
  }
#define ATTN_SPLITKV_ALL(T, TNAME)                                                            \
  ATTN_SPLITKV(T, TNAME, 32) ATTN_SPLITKV(T, TNAME, 64) ATTN_SPLITKV(T, TNAME, 128)           \
  ATTN_SPLITKV(T, TNAME, 256)                                                                 \
  extern "C" __global__ void attn_combine_##TNAME(const __grid_constant__ Params p) { attn_combine<T>(p); }

ATTN_PREFILL_ALL(__half, f16)
ATTN_PREFILL_ALL(__nv_bfloat16, bf16)
ATTN_SPLITKV_ALL(float, f32)
ATTN_SPLITKV_ALL(__half, f16)
ATTN_SPLITKV_ALL(__nv_bfloat16, bf16)
