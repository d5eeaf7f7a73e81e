// Pieces shared by the FFN kernels (kernels/ffn.cu, kernels/ffn_fused.cu): the weight-streaming
// tensor-core step. Tensor cores run with the roles swapped (y^T = W · x^T): 16 weight rows are the
// mma's M side and up to 8 tokens its N side. Lane (g = lane / 4, t = lane % 4) loads W[row g (and
// g + 8), 8t..8t+8] and x[token g, 8t..8t+8] of each 32-wide k chunk; the chunk's k order is
// permuted identically in A and B (lane t owns physical k 8t..8t+7 in both), which leaves the dot
// products unchanged and makes every load 16 contiguous bytes.
#pragma once
#include "common.cuh"

namespace ffn {

constexpr int ROWS = 16;        // weight rows (output features) per block: the mma M side
constexpr int TOKENS = 8;       // tokens per token tile: the mma N side
constexpr int CHUNK_K = 32;     // k per lane-group step: 4 lanes x 8 elements (16 bytes)
// Chunks in flight per warp iteration (memory-level parallelism), halved where the token tiles and
// the gate would push the loaded fragments past the register budget (ptxas: no spills at 255 regs).
template <bool GATED, int NT> constexpr int unroll() { return NT * (GATED ? 2 : 1) >= 4 ? 2 : 4; }
// Whether the projection kernel software-pipelines its loads (`stream_k`'s PIPE). Measured on H100
// (scripts/ffn_kernel_timing.cu, 4096 -> 11008 -> 4096, kernels back to back): 69.3 vs 73.7 us at
// M = 1 (NT = 1), 73.8 vs 80.5 at M = 16 (NT = 2); gated and NT = 4 are not measured, so they keep
// the plain loop.
template <bool GATED, int NT> constexpr bool pipe() { return !GATED && NT <= 2; }
constexpr int MAX_THREADS = 256;  // 8 warps; mirrors MAX_WARPS in src/ffn/cuda.rs
constexpr int VEC = 8;          // 16-bit elements per 16-byte load

template <typename T> struct MmaOp;
template <> struct MmaOp<__half> {
  static __device__ __forceinline__ void run(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};
template <> struct MmaOp<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};

// 8 consecutive 16-bit elements of `row` from column k, zero past `k_end`. ALIGNED (K % 8 == 0 and
// 16-byte aligned bases): one 16-byte load, and a chunk is either all in range or all out.
// STREAM: a weight row (read once per call) rather than a token row (re-read by every block).
template <typename T, bool ALIGNED, bool STREAM>
__device__ __forceinline__ uint4 load8(const T* __restrict__ row, int k, int k_end) {
  if (ALIGNED) {
    if (k >= k_end) return make_uint4(0, 0, 0, 0);
    if constexpr (STREAM) {
      // Weights are read once: skip L1, and have L2 fetch whole 256-byte blocks from HBM (the
      // warp's following chunks of the same rows use the rest).
      uint4 v;
      asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                   : "l"(row + k));
      return v;
    } else {
      return __ldg(reinterpret_cast<const uint4*>(row + k));
    }
  } else {
    const unsigned short* r = reinterpret_cast<const unsigned short*>(row);
    uint32_t v[VEC / 2];
#pragma unroll
    for (int i = 0; i < VEC / 2; ++i) {
      const uint32_t lo = (k + 2 * i < k_end) ? r[k + 2 * i] : 0u;
      const uint32_t hi = (k + 2 * i + 1 < k_end) ? r[k + 2 * i + 1] : 0u;
      v[i] = lo | (hi << 16);
    }
    return make_uint4(v[0], v[1], v[2], v[3]);
  }
}

// The two mmas of one 32-wide chunk: A rows (g, g + 8) from wa/wb, B column g from xb.
template <typename T>
__device__ __forceinline__ void mma_chunk(float (&c)[4], const uint4& wa, const uint4& wb, const uint4& xb) {
  MmaOp<T>::run(c, wa.x, wb.x, wa.y, wb.y, xb.x, xb.y);  // physical k 8t + 0..3
  MmaOp<T>::run(c, wa.z, wb.z, wa.w, wb.w, xb.z, xb.w);  // physical k 8t + 4..7
}

// acc[part][nt] += W[rows of part] · x[tokens of tile nt] over k in [k_begin, k_end), UNROLL chunks
// of 32 k per iteration with every load issued before the first mma. PIPE: software-pipelined, the
// next iteration's loads go out before this iteration's mmas (twice the fragments in registers, the
// same mma order, so the same sums bit for bit). w_rows: this lane's rows g and g + 8 (then the up
// projection's two rows when GATED); x_rows: token g of each tile. The loop bound is warp-uniform
// (mma.sync needs the whole warp); lanes mask their own tails (loads at k >= k_end read nothing).
template <typename T, bool GATED, int NT, bool ALIGNED, int UNROLL = unroll<GATED, NT>(), bool PIPE = false>
__device__ __forceinline__ void stream_k(float (&acc)[GATED ? 2 : 1][NT][4], const T* (&w_rows)[GATED ? 4 : 2],
                                         const T* (&x_rows)[NT], int k_begin, int k_end) {
  constexpr int R = GATED ? 4 : 2;
  constexpr int STEP = CHUNK_K * UNROLL;
  uint4 wv[R][UNROLL];
  uint4 xv[NT][UNROLL];
  auto load = [&](uint4(&wd)[R][UNROLL], uint4(&xd)[NT][UNROLL], int kb) {
    const int kc = kb + (threadIdx.x % 4) * VEC;
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
      for (int r = 0; r < R; ++r) wd[r][u] = load8<T, ALIGNED, true>(w_rows[r], kc + u * CHUNK_K, k_end);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) xd[nt][u] = load8<T, ALIGNED, false>(x_rows[nt], kc + u * CHUNK_K, k_end);
    }
  };
  auto mma = [&](const uint4(&wd)[R][UNROLL], const uint4(&xd)[NT][UNROLL]) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        mma_chunk<T>(acc[0][nt], wd[0][u], wd[1][u], xd[nt][u]);
        if constexpr (GATED) mma_chunk<T>(acc[1][nt], wd[2][u], wd[3][u], xd[nt][u]);
      }
    }
  };
  if constexpr (PIPE) {
    if (k_begin < k_end) load(wv, xv, k_begin);
    for (int kb = k_begin; kb < k_end; kb += STEP) {
      uint4 wn[R][UNROLL];
      uint4 xn[NT][UNROLL];
      load(wn, xn, kb + STEP);
      mma(wv, xv);
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
        for (int r = 0; r < R; ++r) wv[r][u] = wn[r][u];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) xv[nt][u] = xn[nt][u];
      }
    }
  } else {
    for (int kb = k_begin; kb < k_end; kb += STEP) {
      load(wv, xv, kb);
      mma(wv, xv);
    }
  }
}

}  // namespace ffn
