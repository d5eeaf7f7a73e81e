// Fused attention, softmax(Q·Kᵀ·scale + mask)·V, never materializing the Nq x Nk scores.
//
// attn_prefill_<dtype>_d<HD>_w<WARPS>  FlashAttention-2 style: a block owns BLOCK_M query rows
//   (16 per warp), streams K/V tiles through shared memory (cp.async, V of tile t loads during Q·Kᵀ, K of
//   tile t+1 during P·V), computes both products with mma.sync.m16n8k16 (f16/bf16 in, f32
//   accumulate), keeps P in registers (the C fragment of Q·Kᵀ is the A fragment of P·V) and
//   skips tiles above the causal diagonal. HD is the head dim padded to 16 (zeros in smem).
// attn_splitkv_<dtype>_d<HD>  flash-decoding for short queries (and every f32 call): SIMT, QROWS
//   queries per block, the keys split across gridDim.y blocks, each writing its normalized
//   partial output and log-sum-exp; attn_combine_<dtype> merges the splits.
//
// Launch parameters: tg::attn::Params (attention.cuh), mirrored in src/attention/cuda.rs; tile
// sizes below are mirrored in src/attention/config.rs.
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
template <typename T, int HEAD_DIM, int WARPS_>
struct PrefillTraits {
  // Instantiated with 4 warps (64 rows): 8 (128 rows, half the K/V re-reads) measured no faster,
  // [1,32,4096,128] 987 vs 922 us, [16,8,512,64] 55 vs 54 us (H200, benches/attention).
  static constexpr int WARPS = WARPS_;
  static constexpr int THREADS = WARPS * tg::WARP_SIZE;
  static constexpr int BLOCK_M = WARPS * MMA_M;             // query rows per block
  static constexpr int BLOCK_N = HEAD_DIM <= 128 ? 64 : 32;  // keys per tile; 32 keeps D=256 in registers
  // K/V tiles in flight: the loop is latency-bound at small shapes, so small heads (cheap smem)
  // prefetch two tiles ahead; larger ones one, keeping two blocks per SM.
  static constexpr int STAGES = HEAD_DIM <= 64 ? 3 : 2;
  static constexpr int SMEM_STRIDE = HEAD_DIM + VEC;  // +16 bytes per row: ldmatrix rows hit distinct banks
  static constexpr int SMEM_BYTES = (BLOCK_M + STAGES * 2 * BLOCK_N) * SMEM_STRIDE * int(sizeof(T));
  static constexpr int D_STEPS = HEAD_DIM / MMA_K;  // k-steps of Q·Kᵀ
  static constexpr int S_TILES = BLOCK_N / MMA_N;   // n8 tiles of S per warp
  static constexpr int O_TILES = HEAD_DIM / MMA_N;  // n8 tiles of O per warp
  static_assert(HEAD_DIM % MMA_K == 0, "head dim instances are multiples of 16");
  static_assert(BLOCK_N % MMA_K == 0 && O_TILES % 2 == 0, "x4 ldmatrix loads two n8 tiles");
  static_assert(sizeof(T) == 2, "the tensor-core path is f16/bf16");
  static_assert(SMEM_BYTES <= 227 * 1024, "over the sm_90 shared memory per block");
  static_assert(STAGES >= 2, "the pipeline overlaps at least one tile");
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

template <typename T, int HEAD_DIM, int WARPS>
__device__ __forceinline__ void attn_prefill(const Params& p) {
  using Tr = PrefillTraits<T, HEAD_DIM, WARPS>;
  constexpr int BM = Tr::BLOCK_M, BN = Tr::BLOCK_N, STRIDE = Tr::SMEM_STRIDE;
  constexpr int STAGES = Tr::STAGES, TILE_ELEMS = BN * STRIDE;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [BM, STRIDE]
  T* sKV = sQ + BM * STRIDE;               // STAGES x (K [BN, STRIDE], V [BN, STRIDE])

  const int warp = threadIdx.x / tg::WARP_SIZE, lane = threadIdx.x % tg::WARP_SIZE;
  const int quad_row = lane / 4, quad_col = lane % 4;  // mma fragment coordinates
  // gridDim.z = B x num_splits: a split owns keys [split * keys_per_split, ...) (whole tiles)
  const int q0 = blockIdx.x * BM, h = blockIdx.y, b = blockIdx.z / p.num_splits, split = blockIdx.z % p.num_splits;
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

  // K and V of tile `t` into pipeline stage t % STAGES, as one cp.async group.
  auto load_kv = [&](int t) {
    if (t < t_end) {
      const int k0 = t * BN, keys = min(BN, p.nk - k0);
      T* sK = sKV + (t % STAGES) * 2 * TILE_ELEMS;
      load_tile<T, BN, HEAD_DIM, STRIDE, Tr::THREADS>(sK, kg + int64_t(k0) * p.k_sn, p.k_sn, keys, p.d);
      load_tile<T, BN, HEAD_DIM, STRIDE, Tr::THREADS>(sK + TILE_ELEMS, vg + int64_t(k0) * p.v_sn, p.v_sn, keys, p.d);
    }
    cp_async_commit();  // an empty group past the end keeps the group count per tile fixed
  };

  // Prologue: Q (with tile 0's group) and the first STAGES - 1 tiles.
  load_tile<T, BM, HEAD_DIM, STRIDE, Tr::THREADS>(sQ, qg, p.q_sn, rows, p.d);
#pragma unroll
  for (int t = 0; t < STAGES - 1; ++t) load_kv(t_begin + t);

  float o[Tr::O_TILES][4];
#pragma unroll
  for (int dt = 0; dt < Tr::O_TILES; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  RowState row[2];  // this thread's rows: quad_row and quad_row + 8 of the warp's 16
  const int row_i[2] = {q0 + warp * MMA_M + quad_row, q0 + warp * MMA_M + quad_row + 8};

  for (int tile = t_begin; tile < t_end; ++tile) {
    const int k0 = tile * BN;
    cp_async_wait_group<STAGES - 2>();
    __syncthreads();  // this tile landed; every warp is done with the stage of the previous tile
    load_kv(tile + STAGES - 1);  // into the previous tile's stage
    const T* sK = sKV + (tile % STAGES) * 2 * TILE_ELEMS;
    const T* sV = sK + TILE_ELEMS;

    // S = Q·Kᵀ for the warp's 16 rows
    float s[Tr::S_TILES][4];
#pragma unroll
    for (int nt = 0; nt < Tr::S_TILES; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < Tr::D_STEPS; ++ks) {
      uint32_t a[4];
      ldmatrix_x4(a, sQ + (warp * MMA_M + lane % 16) * STRIDE + ks * MMA_K + (lane / 16) * 8);
#pragma unroll
      for (int nt2 = 0; nt2 < Tr::S_TILES / 2; ++nt2) {
        uint32_t bk[4];
        ldmatrix_x4(bk, sK + (nt2 * 16 + (lane / 16) * 8 + lane % 8) * STRIDE + ks * MMA_K + ((lane / 8) % 2) * 8);
        Mma<T>::run(s[2 * nt2], a, bk[0], bk[1]);
        Mma<T>::run(s[2 * nt2 + 1], a, bk[2], bk[3]);
      }
    }

    // Scale into log2 units; mask only tiles that cross the end of the keys or the diagonal.
    const bool need_mask = k0 + BN > p.nk || (p.causal && k0 + BN - 1 > q0 + p.causal_offset);
#pragma unroll
    for (int nt = 0; nt < Tr::S_TILES; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = k0 + nt * MMA_N + 2 * quad_col + (e & 1);
        s[nt][e] = need_mask && !mask.visible(row_i[e / 2], j) ? -INFINITY : s[nt][e] * p.scale_log2;
      }
    }

    // Online softmax: a row's 64 scores are spread over the 4 threads of a quad.
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < Tr::S_TILES; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * half], s[nt][2 * half + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
      float ref;
      const float alpha = row[half].update_max(mx, ref);
#pragma unroll
      for (int dt = 0; dt < Tr::O_TILES; ++dt) {
        o[dt][2 * half] *= alpha;
        o[dt][2 * half + 1] *= alpha;
      }
      float sum = 0.0f;  // this thread's part of the row sum; the quad adds them up at the end
#pragma unroll
      for (int nt = 0; nt < Tr::S_TILES; ++nt) {
#pragma unroll
        for (int e = 2 * half; e < 2 * half + 2; ++e) {
          s[nt][e] = exp2f(s[nt][e] - ref);
          sum += s[nt][e];
        }
      }
      row[half].l += sum;
      if (p.drop_threshold) {
#pragma unroll
        for (int nt = 0; nt < Tr::S_TILES; ++nt) {
          const uint2 bits = tg::attn::dropout_bits_pair(p, b, h, row_i[half], k0 + nt * MMA_N + 2 * quad_col);
          s[nt][2 * half] = tg::attn::apply_dropout(p, bits.x, s[nt][2 * half]);
          s[nt][2 * half + 1] = tg::attn::apply_dropout(p, bits.y, s[nt][2 * half + 1]);
        }
      }
    }


    // O += P·V: the S accumulators of two n8 tiles are the A fragment of one k16 step.
#pragma unroll
    for (int kk = 0; kk < Tr::S_TILES / 2; ++kk) {
      const uint32_t a[4] = {Mma<T>::pack(s[2 * kk][0], s[2 * kk][1]), Mma<T>::pack(s[2 * kk][2], s[2 * kk][3]),
                             Mma<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             Mma<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dt2 = 0; dt2 < Tr::O_TILES / 2; ++dt2) {
        uint32_t bv[4];
        ldmatrix_x4_trans(bv, sV + (kk * MMA_K + ((lane / 8) % 2) * 8 + lane % 8) * STRIDE + dt2 * 16 + (lane / 16) * 8);
        Mma<T>::run(o[2 * dt2], a, bv[0], bv[1]);
        Mma<T>::run(o[2 * dt2 + 1], a, bv[2], bv[3]);
      }
    }
  }
  cp_async_wait_all();

  // Epilogue: finish the row sums across the quad, normalize, store (split: the f32 partial and
  // its log-sum-exp, merged by attn_combine).
  const int64_t bh_row0 = int64_t(b * p.hq + h) * p.nq;  // [B, Hq, Nq] row of query 0
  const int64_t total_rows = int64_t(p.b) * p.hq * p.nq;
  T* og = static_cast<T*>(p.o) + bh_row0 * p.d;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float l = row[half].l;
    l += __shfl_xor_sync(FULL_MASK, l, 1);
    l += __shfl_xor_sync(FULL_MASK, l, 2);
    row[half].l = l;
    const int i = row_i[half];
    if (i >= p.nq) continue;
    const float inv = row[half].inv_sum();
    if (p.num_splits == 1) {
#pragma unroll
      for (int dt = 0; dt < Tr::O_TILES; ++dt) {
        const int col = dt * MMA_N + 2 * quad_col;
        if (col < p.d) {
          *reinterpret_cast<uint32_t*>(og + int64_t(i) * p.d + col) =
              Mma<T>::pack(o[dt][2 * half] * inv, o[dt][2 * half + 1] * inv);
        }
      }
    } else {
      const int64_t row_id = split * total_rows + bh_row0 + i;
      float* op = p.o_partial + row_id * p.d;
#pragma unroll
      for (int dt = 0; dt < Tr::O_TILES; ++dt) {
        const int col = dt * MMA_N + 2 * quad_col;
        if (col < p.d) *reinterpret_cast<float2*>(op + col) = make_float2(o[dt][2 * half] * inv, o[dt][2 * half + 1] * inv);
      }
      if (quad_col == 0) p.lse_partial[row_id] = row[half].lse();
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

// One block per output row: out = Σ_s w_s · O_s / Σ_s w_s with w_s = 2^(lse_s - max lse).
template <typename T>
__device__ __forceinline__ void attn_combine(const Params& p) {
  const int64_t total_rows = int64_t(p.b) * p.hq * p.nq;
  const int64_t row_id = blockIdx.x;
  float lse_max = -INFINITY;
  for (int s = 0; s < p.num_splits; ++s) lse_max = fmaxf(lse_max, p.lse_partial[s * total_rows + row_id]);
  for (int c = threadIdx.x; c < p.d; c += blockDim.x) {
    float acc = 0.0f, weights = 0.0f;
    for (int s = 0; s < p.num_splits; ++s) {
      const float w = tg::attn::split_weight(p.lse_partial[s * total_rows + row_id], lse_max);
      acc += w * p.o_partial[(s * total_rows + row_id) * p.d + c];
      weights += w;
    }
    static_cast<T*>(p.o)[row_id * p.d + c] = tg::from_float<T>(weights > 0.0f ? acc / weights : 0.0f);
  }
}

}  // namespace

// ---- entry points ------------------------------------------------------------------------------
static_assert(sizeof(Params) == 184, "Params mirrors AttnParams in src/attention/cuda.rs");

#define ATTN_PREFILL_W(T, TNAME, HD, W)                                                       \
  extern "C" __global__ void __launch_bounds__(PrefillTraits<T, HD, W>::THREADS)              \
      attn_prefill_##TNAME##_d##HD##_w##W(const __grid_constant__ Params p) {                 \
    attn_prefill<T, HD, W>(p);                                                                \
  }
#define ATTN_PREFILL(T, TNAME, HD) ATTN_PREFILL_W(T, TNAME, HD, 4)
#define ATTN_PREFILL_ALL(T, TNAME)                                                            \
  ATTN_PREFILL(T, TNAME, 32) ATTN_PREFILL(T, TNAME, 48) ATTN_PREFILL(T, TNAME, 64)            \
  ATTN_PREFILL(T, TNAME, 80) ATTN_PREFILL(T, TNAME, 96) ATTN_PREFILL(T, TNAME, 128)           \
  ATTN_PREFILL(T, TNAME, 160) ATTN_PREFILL(T, TNAME, 192) ATTN_PREFILL(T, TNAME, 256)

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
