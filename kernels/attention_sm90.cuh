// Hopper (sm_90a) FlashAttention-3-style prefill forward, f16/bf16, head dims 64 and 128
// (kernels/attention_sm90.cu instances it). A block owns 64 * WGS query rows of one head: each
// warpgroup (4 warps) owns 64 of them. Per key tile of BN keys:
//   S = Q·Kᵀ     wgmma.mma_async m64nBNk16, A = Q and B = K from shared memory (K-major, 128-byte
//                swizzle, the layout TMA's SWIZZLE_128B writes), f32 accumulators in registers;
//   softmax      online, in log2 units, on the accumulator fragments (a row's BN scores are spread
//                over the 4 threads of a quad, as in mma.sync's C fragment);
//   O += P·V     wgmma m64nHDk16 with A = P from registers (the C fragment of S repacked to f16/
//                bf16 is wgmma's register A fragment) and B = V from shared memory, read N-major
//                (the transpose comes from the descriptor, not from data movement).
// K/V tiles stream through STAGES shared-memory stages with cp.async (zero-filled past the last
// key), written at their 128-byte-swizzled addresses by every thread; a tile is published to the
// tensor cores (async proxy) with fence.proxy.async and one block barrier per tile. Causal blocks
// stop at the diagonal; only tiles that cross it or the end of the keys are masked. The launch
// parameters are the portable kernels' tg::attn::Params (attention.cuh).
#pragma once
#include "attention.cuh"

namespace tg {
namespace attn90 {

using tg::attn::Params;

// ---- PTX wrappers -----------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// 16 bytes global -> shared; `bytes` < 16 zero-fills the rest (0: all zeros, nothing read).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, uint32_t bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Makes this thread's completed shared-memory writes visible to the async proxy (wgmma).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accesses to accumulator registers across wgmma issue/wait.
template <int N> __device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

// wgmma shared-memory matrix descriptor, 128-byte swizzle: start address, leading-dimension byte
// offset (K-major: unused, 16; N-major: between 64-column chunks), stride byte offset (between
// groups of 8 rows: 1024).
__device__ __forceinline__ uint64_t make_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(lbo >> 4) << 16) | (uint64_t(sbo >> 4) << 32) | (1ull << 62);
}

// A tile of ROWS rows x HD columns in shared memory: HD / 64 chunks of [ROWS][64] elements (128
// bytes a row), the 16-byte vector v of row r stored at vector v ^ (r % 8) (128-byte swizzle;
// chunks 1024-byte aligned).
__device__ __forceinline__ uint32_t swizzled(int row, int vec) { return row * 128 + ((vec ^ (row & 7)) << 4); }

template <int ROWS, int HD, int THREADS, typename T>
__device__ __forceinline__ void load_tile(uint32_t s, const T* g, int64_t stride, int rows) {
  constexpr int VECS = HD / 8;  // 16-byte vectors per row
#pragma unroll
  for (int idx = threadIdx.x; idx < ROWS * VECS; idx += THREADS) {
    const int r = idx / VECS, c = idx % VECS;
    const bool in = r < rows;
    cp_async16(s + (c / 8) * (ROWS * 128) + swizzled(r, c % 8), in ? g + r * stride + c * 8 : g, in ? 16 : 0);
  }
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives on `bar` once every cp.async this thread issued so far has landed (no pending-count
// increment: the barrier's expected count includes this arrival).
__device__ __forceinline__ void cp_async_mbar_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void named_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
// Named barrier ID (an immediate) of COUNT threads.
template <int ID, int COUNT> __device__ __forceinline__ void named_sync() {
  asm volatile("bar.sync %0, %1;\n" ::"n"(ID), "n"(COUNT) : "memory");
}
template <int ID, int COUNT> __device__ __forceinline__ void named_arrive() {
  asm volatile("bar.arrive %0, %1;\n" ::"n"(ID), "n"(COUNT) : "memory");
}

// load_tile for NT threads numbered `i` (0 .. NT - 1).
template <int ROWS, int HD, int NT, typename T>
__device__ __forceinline__ void load_tile_by(int i, uint32_t s, const T* g, int64_t stride, int rows) {
  constexpr int VECS = HD / 8;
#pragma unroll
  for (int idx = i; idx < ROWS * VECS; idx += NT) {
    const int r = idx / VECS, c = idx % VECS;
    const bool in = r < rows;
    cp_async16(s + (c / 8) * (ROWS * 128) + swizzled(r, c % 8), in ? g + r * stride + c * 8 : g, in ? 16 : 0);
  }
}

// 2^x on the SFU (subnormal results flushed to 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// ---- wgmma m64nNk16, f32 accumulators (generated: one asm per dtype and N) --------------------
template <typename T, int N> struct Wgmma;

template <> struct Wgmma<__half, 64> {
  // D (+)= A·B, A [64 x 16] and B [16 x 64] from shared memory, both K-major.
  static __device__ __forceinline__ void ss(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(a), "l"(b), "r"(accumulate));
  }
  // D += A·B, A [64 x 16] in registers (the mma.m16n8k16 A fragment of each warp's 16 rows),
  // B [16 x 64] from shared memory, N-major (transposed).
  static __device__ __forceinline__ void rs_bt(float (&d)[32], const uint32_t (&a)[4], uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
  }
};

template <> struct Wgmma<__half, 128> {
  // D (+)= A·B, A [64 x 16] and B [16 x 128] from shared memory, both K-major.
  static __device__ __forceinline__ void ss(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(accumulate));
  }
  // D += A·B, A [64 x 16] in registers (the mma.m16n8k16 A fragment of each warp's 16 rows),
  // B [16 x 128] from shared memory, N-major (transposed).
  static __device__ __forceinline__ void rs_bt(float (&d)[64], const uint32_t (&a)[4], uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
  }
};

template <> struct Wgmma<__nv_bfloat16, 64> {
  // D (+)= A·B, A [64 x 16] and B [16 x 64] from shared memory, both K-major.
  static __device__ __forceinline__ void ss(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(a), "l"(b), "r"(accumulate));
  }
  // D += A·B, A [64 x 16] in registers (the mma.m16n8k16 A fragment of each warp's 16 rows),
  // B [16 x 64] from shared memory, N-major (transposed).
  static __device__ __forceinline__ void rs_bt(float (&d)[32], const uint32_t (&a)[4], uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
  }
};

template <> struct Wgmma<__nv_bfloat16, 128> {
  // D (+)= A·B, A [64 x 16] and B [16 x 128] from shared memory, both K-major.
  static __device__ __forceinline__ void ss(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(accumulate));
  }
  // D += A·B, A [64 x 16] in registers (the mma.m16n8k16 A fragment of each warp's 16 rows),
  // B [16 x 128] from shared memory, N-major (transposed).
  static __device__ __forceinline__ void rs_bt(float (&d)[64], const uint32_t (&a)[4], uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
  }
};

// ---- the kernel -------------------------------------------------------------------------------
// OVERLAP: FlashAttention-3's intra-warpgroup pipelining: tile t's Q·Kᵀ and tile t-1's P·V are
// issued together and the softmax of tile t runs while P·V is on the tensor cores (V of tile t-1
// then stays in smem one more step, so the loads run one tile ahead of STAGES - 1 stages).
template <int HD, int WGS, int BN, int STAGES, bool OVERLAP> struct Sm90Traits {
  static constexpr int BM = 64 * WGS;  // query rows per block
  static constexpr int THREADS = 128 * WGS;
  static constexpr int Q_BYTES = BM * HD * 2;
  static constexpr int KV_BYTES = BN * HD * 2;  // one K or V tile
  static constexpr int STAGE_BYTES = 2 * KV_BYTES;
  static constexpr int SMEM_BYTES = Q_BYTES + STAGES * STAGE_BYTES + 1024;  // + alignment slack
  // tiles loaded ahead of the one in use
  static constexpr int AHEAD = OVERLAP ? STAGES - 2 : STAGES - 1;
  static_assert(HD == 64 || HD == 128, "head dims 64 and 128");
  static_assert(BN % 16 == 0 && BN <= 256, "wgmma N");
  static_assert(AHEAD >= 1, "one tile loads while one is used");
  static_assert(SMEM_BYTES <= 227 * 1024, "over the sm_90 shared memory per block");
};

// The online softmax of one S tile held as wgmma accumulators (this thread: rows rowi[0] and
// rowi[1], keys k0 + 8j + 2*quad + {0, 1} of each n8 block j): scores to log2 units, masked when
// `need_mask`, exponentiated in place; returns the factors rescaling what O holds.
template <int BN>
__device__ __forceinline__ void softmax_tile(float (&s)[BN / 2], float (&m)[2], float (&l)[2], float (&alpha)[2],
                                             const Params& p, bool need_mask, int k0, const int (&rowi)[2],
                                             int quad) {
  const float scale = p.scale_log2;
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) {
    float x = s[i] * scale;
    if (need_mask) {
      const int key = k0 + (i / 4) * 8 + 2 * quad + (i & 1);
      const int row = rowi[(i / 2) & 1];
      if (key >= p.nk || (p.causal && key > row + p.causal_offset)) x = -INFINITY;
    }
    s[i] = x;
  }
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * hf], s[4 * j + 2 * hf + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m[hf], mx);
    const float ref = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: exp2(-inf) = 0
    alpha[hf] = fast_exp2(m[hf] - ref);
    m[hf] = m_new;
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      s[4 * j + 2 * hf] = fast_exp2(s[4 * j + 2 * hf] - ref);
      s[4 * j + 2 * hf + 1] = fast_exp2(s[4 * j + 2 * hf + 1] - ref);
      sum += s[4 * j + 2 * hf] + s[4 * j + 2 * hf + 1];
    }
    l[hf] = l[hf] * alpha[hf] + sum;  // this thread's part; the quad adds them at the end
  }
}

// softmax_tile for a positive scale (the caller checks), FlashAttention-3/4 style: the row max
// taken on the raw scores, the scale folded into the exponent's FMA (ex2(s * scale - ref)), and
// the reference max kept while the row max grows by at most LAZY (log2 units; 0: always moved):
// alpha is then exactly 1 and the caller may skip rescaling O (rows of a warp all at 1: returns
// false). Exact either way: O and l share the reference, normalized at the end; scores then reach
// at most 2^LAZY, far inside f16/bf16 and f32.
template <int BN, int LAZY>
__device__ __forceinline__ bool softmax_tile_pos(float (&s)[BN / 2], float (&m)[2], float (&l)[2], float (&alpha)[2],
                                                 const Params& p, bool need_mask, int k0, const int (&rowi)[2],
                                                 int quad) {
  const float scale = p.scale_log2;
  if (need_mask) {
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) {
      const int key = k0 + (i / 4) * 8 + 2 * quad + (i & 1);
      const int row = rowi[(i / 2) & 1];
      if (key >= p.nk || (p.causal && key > row + p.causal_offset)) s[i] = -INFINITY;
    }
  }
  bool moved = false;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * hf], s[4 * j + 2 * hf + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m[hf], mx * scale);
    // keep the reference (alpha = 1) while the max grew by at most LAZY; -inf - -inf is NaN: moved
    const bool keep = m_new - m[hf] <= float(LAZY);
    const float ref_new = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: exp2(-inf) = 0
    alpha[hf] = keep ? 1.0f : fast_exp2(m[hf] - ref_new);
    if (!keep) m[hf] = m_new;
    moved |= !keep;
    const float ref = m[hf] == -INFINITY ? 0.0f : m[hf];
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      s[4 * j + 2 * hf] = fast_exp2(fmaf(s[4 * j + 2 * hf], scale, -ref));
      s[4 * j + 2 * hf + 1] = fast_exp2(fmaf(s[4 * j + 2 * hf + 1], scale, -ref));
      sum += s[4 * j + 2 * hf] + s[4 * j + 2 * hf + 1];
    }
    l[hf] = l[hf] * alpha[hf] + sum;  // this thread's part; the quad adds them at the end
  }
  return __any_sync(0xffffffffu, moved);
}

template <int HD> __device__ __forceinline__ void rescale(float (&o)[HD / 2], const float (&alpha)[2]) {
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) {
    o[4 * j] *= alpha[0];
    o[4 * j + 1] *= alpha[0];
    o[4 * j + 2] *= alpha[1];
    o[4 * j + 3] *= alpha[1];
  }
}

// P: the accumulators of n8 blocks 2k and 2k + 1 are the register A fragment of k-step k.
template <typename T, int BN> __device__ __forceinline__ void pack_p(uint32_t (&pa)[BN / 16][4], const float (&s)[BN / 2]) {
#pragma unroll
  for (int k = 0; k < BN / 16; ++k) {
    pa[k][0] = pack2<T>(s[8 * k], s[8 * k + 1]);
    pa[k][1] = pack2<T>(s[8 * k + 2], s[8 * k + 3]);
    pa[k][2] = pack2<T>(s[8 * k + 4], s[8 * k + 5]);
    pa[k][3] = pack2<T>(s[8 * k + 6], s[8 * k + 7]);
  }
}

// Issues (no commit) S = Q·Kᵀ for this warpgroup's 64 rows.
template <typename T, int HD, int BM, int BN>
__device__ __forceinline__ void issue_qk(float (&s)[BN / 2], uint32_t sQ, uint32_t sK, int wg) {
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    const uint64_t da = make_desc(sQ + (kk / 4) * (BM * 128) + wg * (64 * 128) + (kk % 4) * 32, 16, 1024);
    const uint64_t db = make_desc(sK + (kk / 4) * (BN * 128) + (kk % 4) * 32, 16, 1024);
    Wgmma<T, BN>::ss(s, da, db, kk > 0);
  }
}

// Issues (no commit) O += P·V; V read N-major: LBO steps between its 64-column chunks.
template <typename T, int HD, int BN>
__device__ __forceinline__ void issue_pv(float (&o)[HD / 2], const uint32_t (&pa)[BN / 16][4], uint32_t sV) {
#pragma unroll
  for (int k = 0; k < BN / 16; ++k) Wgmma<T, HD>::rs_bt(o, pa[k], make_desc(sV + k * 16 * 128, BN * 128, 1024), 1);
}

// Which (batch x head, query block) this block owns. Grid: x = B x Hq, y = query blocks. Causal
// grids walk the query blocks backwards so the longest walks start first. GROUP_MB > 0: the grid
// is taken in groups of heads whose K and V fit in GROUP_MB megabytes (so the K/V tiles the
// resident blocks stream stay in L2), heads fastest and longest walks first within a group;
// GROUP_MB = 0, or all heads in one group, is the plain order (head fastest).
template <int GROUP_MB>
__device__ __forceinline__ void block_coords(const Params& p, int& bh, int& q_block) {
  int y = blockIdx.y;
  bh = blockIdx.x;
  if constexpr (GROUP_MB > 0) {
    const int n_bh = gridDim.x, n_qb = gridDim.y;
    const int64_t kv_bytes = int64_t(4) * p.nk * p.d;  // K and V of one head, 16-bit elements
    const int g = int(min(int64_t(n_bh), max(int64_t(1), (int64_t(GROUP_MB) << 20) / kv_bytes)));
    const int64_t lin = int64_t(blockIdx.y) * n_bh + blockIdx.x, per_group = int64_t(g) * n_qb;
    const int g0 = int(lin / per_group) * g, gs = min(g, n_bh - g0);
    const int r = int(lin % per_group);
    y = r / gs;
    bh = g0 + r % gs;
  }
  q_block = p.causal ? gridDim.y - 1 - y : y;
}

// Grid: x = B x Hq (head fastest), y = query blocks, walked backwards when causal so the longest
// walks start first.
template <typename T, int HD, int WGS, int BN, int STAGES, bool OVERLAP, int GROUP_MB = 0>
__device__ __forceinline__ void attn_prefill_sm90(const Params& p) {
  using Tr = Sm90Traits<HD, WGS, BN, STAGES, OVERLAP>;
  constexpr int BM = Tr::BM, THREADS = Tr::THREADS, AHEAD = Tr::AHEAD;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t sQ = (smem_u32(smem_raw) + 1023u) & ~1023u;  // swizzle atoms are 1024-byte aligned
  const uint32_t sKV = sQ + Tr::Q_BYTES;

  const int tid = threadIdx.x, wg = tid / 128, warp = tid / 32 % 4, lane = tid % 32, quad = lane % 4;
  int bh, q_block;
  block_coords<GROUP_MB>(p, bh, q_block);
  const int h = bh % p.hq, b = bh / p.hq;
  const int q0 = q_block * BM, rows = min(BM, p.nq - q0);
  const int hk = h / (p.hq / p.hkv);
  const T* qg = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh + int64_t(q0) * p.q_sn;
  const T* kg = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh;
  const int key_end = p.causal ? max(0, min(p.nk, q0 + rows + p.causal_offset)) : p.nk;
  const int n_tiles = tg::ceil_div(key_end, BN);

  // Tile t's K and V into stage t % STAGES, as one cp.async group (empty past the last tile, so
  // the group count per step is fixed).
  auto load_kv = [&](int t) {
    if (t < n_tiles) {
      const uint32_t sK = sKV + (t % STAGES) * Tr::STAGE_BYTES;
      const int k0 = t * BN, keys = min(BN, p.nk - k0);
      load_tile<BN, HD, THREADS>(sK, kg + int64_t(k0) * p.k_sn, p.k_sn, keys);
      load_tile<BN, HD, THREADS>(sK + Tr::KV_BYTES, vg + int64_t(k0) * p.v_sn, p.v_sn, keys);
    }
    cp_async_commit();
  };
  // Waits for tile t's group and publishes it (and, before tile 0, Q) to the tensor cores; the
  // barrier also tells every warpgroup is past the previous step's smem reads.
  auto arrive_tile = [&]() {
    cp_async_wait<AHEAD - 1>();
    fence_proxy_async();
    __syncthreads();
  };
  auto need_mask = [&](int t) {
    const int k0 = t * BN;
    return k0 + BN > p.nk || (p.causal && k0 + BN - 1 > q0 + p.causal_offset);
  };
  load_tile<BM, HD, THREADS>(sQ, qg, p.q_sn, rows);  // joins tile 0's group
#pragma unroll
  for (int t = 0; t < AHEAD; ++t) load_kv(t);

  float o[HD / 2];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i) o[i] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, alpha[2];
  // this thread's rows: r and r + 8 of its warp's 16 (wgmma's accumulator layout)
  const int row0 = q0 + wg * 64 + warp * 16 + lane / 4;
  const int rowi[2] = {row0, row0 + 8};
  float s[BN / 2];
  uint32_t pa[BN / 16][4];

  if constexpr (!OVERLAP) {
    for (int t = 0; t < n_tiles; ++t) {
      arrive_tile();
      load_kv(t + AHEAD);  // into the stage of tile t - 1
      const uint32_t sK = sKV + (t % STAGES) * Tr::STAGE_BYTES, sV = sK + Tr::KV_BYTES;
      wgmma_fence();
      issue_qk<T, HD, BM, BN>(s, sQ, sK, wg);
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(s);
#ifdef TG_SM90_DEBUG  // the harness checks the raw scores of the first tile of block (0, 0)
      if (t == 0 && blockIdx.x == 0 && q_block == 0 && p.o_partial != nullptr) {
#pragma unroll
        for (int i = 0; i < BN / 2; ++i)
          p.o_partial[(rowi[(i / 2) & 1] - q0) * BN + (i / 4) * 8 + 2 * quad + (i & 1)] = s[i];
      }
#endif
      softmax_tile<BN>(s, m, l, alpha, p, need_mask(t), t * BN, rowi, quad);
      rescale<HD>(o, alpha);
      pack_p<T, BN>(pa, s);
      fence_regs(o);
      wgmma_fence();
      issue_pv<T, HD, BN>(o, pa, sV);
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(o);
    }
  } else if (n_tiles > 0) {
    arrive_tile();
    load_kv(AHEAD);
    wgmma_fence();
    issue_qk<T, HD, BM, BN>(s, sQ, sKV, wg);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(s);
    softmax_tile<BN>(s, m, l, alpha, p, need_mask(0), 0, rowi, quad);
    pack_p<T, BN>(pa, s);
    for (int t = 1; t < n_tiles; ++t) {
      arrive_tile();  // tile t landed; every warpgroup is past tile t - 2's P·V
      load_kv(t + AHEAD);  // into the stage of tile t - 2 (STAGES >= 3 when AHEAD >= 1)
      const uint32_t sK = sKV + (t % STAGES) * Tr::STAGE_BYTES;
      const uint32_t sV_prev = sKV + ((t - 1) % STAGES) * Tr::STAGE_BYTES + Tr::KV_BYTES;
      fence_regs(o);
      wgmma_fence();
      issue_qk<T, HD, BM, BN>(s, sQ, sK, wg);
      wgmma_commit();
      issue_pv<T, HD, BN>(o, pa, sV_prev);
      wgmma_commit();
      wgmma_wait<1>();  // Q·Kᵀ done; P·V still running
      fence_regs(s);
      softmax_tile<BN>(s, m, l, alpha, p, need_mask(t), t * BN, rowi, quad);
      wgmma_wait<0>();
      fence_regs(o);
      rescale<HD>(o, alpha);
      pack_p<T, BN>(pa, s);
    }
    fence_regs(o);
    wgmma_fence();
    issue_pv<T, HD, BN>(o, pa, sKV + ((n_tiles - 1) % STAGES) * Tr::STAGE_BYTES + Tr::KV_BYTES);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(o);
  }
  cp_async_wait<0>();

  // epilogue: finish the row sums over the quad, normalize, store
  T* og = static_cast<T*>(p.o) + int64_t(b * p.hq + h) * p.nq * HD;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float sum = l[hf];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // a row that saw no key gives 0
    const int i = rowi[hf];
    if (i < p.nq) {
#pragma unroll
      for (int j = 0; j < HD / 8; ++j) {
        *reinterpret_cast<uint32_t*>(og + int64_t(i) * HD + 8 * j + 2 * quad) =
            pack2<T>(o[4 * j + 2 * hf] * inv, o[4 * j + 2 * hf + 1] * inv);
      }
    }
  }
}


// ---- TMA (cp.async.bulk.tensor) -----------------------------------------------------------------
// A CUtensorMap (cuda.h; encoded on the host with cuTensorMapEncodeTiled), opaque: 128 bytes,
// passed by value as a __grid_constant__ kernel parameter. The maps of these kernels describe a
// [B, H, N, D] operand as a 4-D tensor (D, N, H, B) of 16-bit elements with the operand's strides,
// a box of 64 columns x ROWS rows (one 128-byte-swizzled chunk of a tile: TMA's SWIZZLE_128B
// writes the layout `swizzled` addresses), zero-filled past N.
struct alignas(64) TmaDesc {
  unsigned long long opaque[16];
};
// The maps of Q (box rows: the block's query rows), K and V (box rows: a key tile), one kernel
// parameter.
struct TmaMaps {
  TmaDesc q, k, v;
};

// Makes the mbarrier inits visible to the async proxy (the copy engine).
__device__ __forceinline__ void fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
// Arrives on `bar` and adds `bytes` to the transaction count its phase waits for.
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// One box at coordinates (c0 column, c1 row, c2 head, c3 batch) -> shared memory `dst` (1024-byte
// aligned), completing `bytes` (the whole box, zero-filled rows included) on `bar`.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const TmaDesc& map, uint32_t bar, int c0, int c1, int c2,
                                            int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
      "[%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(&map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void tma_prefetch_desc(const TmaDesc& map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map)) : "memory");
}
// ROWS x HD tile (HD / 64 boxes of 64 columns, chunk c at dst + c * ROWS * 128) of rows r0.. of
// head `h`, batch `b`.
template <int ROWS, int HD>
__device__ __forceinline__ void tma_tile(uint32_t dst, const TmaDesc& map, uint32_t bar, int r0, int h, int b) {
#pragma unroll
  for (int c = 0; c < HD / 64; ++c) tma_load_4d(dst + c * (ROWS * 128), map, bar, c * 64, r0, h, b);
}

// ---- TMA variant of the overlapped kernel ------------------------------------------------------
// attn_prefill_sm90's overlapped step (OVERLAP = true), loads by the copy engine: thread 0 issues
// Q and every K and V tile with cp.async.bulk.tensor (one instruction per 64-column chunk; zero
// fill past the last key/query), each tile completing its own mbarrier; the other threads issue no
// loads and wait on the barrier of the tile they need. K and V have rings of STAGES tiles each
// (same shared memory as before): at step t the block barrier says every warpgroup is past Q·Kᵀ of
// tile t - 1 and P·V of tile t - 2, so thread 0 then issues K(t + STAGES - 1) and V(t + STAGES -
// 2) into their stages: both land STAGES - 1 steps before their use (P·V of tile t runs in step
// t + 1), against one step for the cp.async kernel's joint K/V stages.
// LAZY >= 0: softmax_tile_pos where the scale is positive (O rescaled only when a row's reference
// max moved); -1: softmax_tile.
// FREE: no block barrier per step: the last warp done with a K (V) stage (a shared counter per
// stage) refills it with K (V) of tile t + STAGES; the warpgroups drift apart freely.
template <typename T, int HD, int WGS, int BN, int STAGES, int LAZY = -1, bool FREE = false>
__device__ __forceinline__ void attn_prefill_sm90_tma(const Params& p, const TmaMaps& maps) {
  const TmaDesc &tq = maps.q, &tk = maps.k, &tv = maps.v;
  using Tr = Sm90Traits<HD, WGS, BN, STAGES, true>;
  constexpr int BM = Tr::BM;
  static_assert(STAGES >= 3, "V of tile t - 1 in use while V of tile t + 1 loads");
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t bars[2 * STAGES + 1];  // K full [STAGES], V full [STAGES], Q
  __shared__ uint32_t frees[FREE ? 2 * STAGES : 1];        // FREE: warps done with K [s], V [s]
  const uint32_t sQ = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const uint32_t sKV = sQ + Tr::Q_BYTES;
  const uint32_t bar_k = smem_u32(bars), bar_v = bar_k + 8u * STAGES, bar_q = bar_k + 16u * STAGES;

  const int tid = threadIdx.x, wg = tid / 128, warp = tid / 32 % 4, lane = tid % 32, quad = lane % 4;
  int bh, q_block;
  block_coords<0>(p, bh, q_block);
  const int h = bh % p.hq, b = bh / p.hq;
  const int q0 = q_block * BM, rows = min(BM, p.nq - q0);
  const int hk = h / (p.hq / p.hkv);
  const int key_end = p.causal ? max(0, min(p.nk, q0 + rows + p.causal_offset)) : p.nk;
  const int n_tiles = tg::ceil_div(key_end, BN);

  // thread 0 only: tile t's K (V) into stage t % STAGES of the K (V) ring
  auto load_k = [&](int t) {
    if (t < n_tiles) {
      const int s = t % STAGES;
      mbar_expect_tx(bar_k + 8u * s, Tr::KV_BYTES);
      tma_tile<BN, HD>(sKV + s * Tr::STAGE_BYTES, tk, bar_k + 8u * s, t * BN, hk, b);
    }
  };
  auto load_v = [&](int t) {
    if (t < n_tiles) {
      const int s = t % STAGES;
      mbar_expect_tx(bar_v + 8u * s, Tr::KV_BYTES);
      tma_tile<BN, HD>(sKV + s * Tr::STAGE_BYTES + Tr::KV_BYTES, tv, bar_v + 8u * s, t * BN, hk, b);
    }
  };
  // tile t's stage completes once per round of the ring: phase parity (t / STAGES) & 1
  auto wait_k = [&](int t) { mbar_wait(bar_k + 8u * (t % STAGES), (t / STAGES) & 1); };
  auto wait_v = [&](int t) { mbar_wait(bar_v + 8u * (t % STAGES), (t / STAGES) & 1); };
  auto need_mask = [&](int t) {
    const int k0 = t * BN;
    return k0 + BN > p.nk || (p.causal && k0 + BN - 1 > q0 + p.causal_offset);
  };
  // FREE: this warp is done with K (which = 0) or V (1) of tile t; the last of the block's warps
  // refills the stage with tile t + STAGES
  auto release = [&](int which, int t) {
    __syncwarp();
    if (lane == 0) {
      uint32_t* ctr = &frees[which * STAGES + t % STAGES];
      uint32_t old;
      asm volatile("atom.acq_rel.cta.shared::cta.add.u32 %0, [%1], 1;\n" : "=r"(old) : "r"(smem_u32(ctr)) : "memory");
      if (old % (4 * WGS) == 4 * WGS - 1) {  // never reset: 4 * WGS arrivals per use of the stage
        if (which == 0) load_k(t + STAGES);
        else load_v(t + STAGES);
      }
    }
  };
  const bool pos = LAZY >= 0 && p.scale_log2 > 0.0f;
  // the softmax of tile t; false: O needs no rescale (every alpha of the warp is 1)
  auto softmax = [&](float(&s)[BN / 2], float(&m)[2], float(&l)[2], float(&alpha)[2], int t, const int(&rowi)[2]) {
    if constexpr (LAZY >= 0) {
      if (pos) return softmax_tile_pos<BN, LAZY>(s, m, l, alpha, p, need_mask(t), t * BN, rowi, quad);
    }
    softmax_tile<BN>(s, m, l, alpha, p, need_mask(t), t * BN, rowi, quad);
    return true;
  };

  if (tid == 0) {
    tma_prefetch_desc(tq);
    tma_prefetch_desc(tk);
    tma_prefetch_desc(tv);
#pragma unroll
    for (int s = 0; s < 2 * STAGES + 1; ++s) mbar_init(bar_k + 8u * s, 1);
    if constexpr (FREE) {
#pragma unroll
      for (int s = 0; s < 2 * STAGES; ++s) frees[s] = 0;
    }
    fence_mbar_init();
    if (n_tiles > 0) {
      mbar_expect_tx(bar_q, Tr::Q_BYTES);
      tma_tile<BM, HD>(sQ, tq, bar_q, q0, h, b);
#pragma unroll
      for (int t = 0; t < STAGES; ++t) load_k(t);  // the K ring full
#pragma unroll
      for (int t = 0; t < (FREE ? STAGES : STAGES - 1); ++t) load_v(t);  // the V ring (but one stage)
    }
  }

  float o[HD / 2];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i) o[i] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, alpha[2];
  const int row0 = q0 + wg * 64 + warp * 16 + lane / 4;
  const int rowi[2] = {row0, row0 + 8};
  float s[BN / 2];
  uint32_t pa[BN / 16][4];

  __syncthreads();  // the barriers are initialized
  if (n_tiles > 0) {
    mbar_wait(bar_q, 0);
    wait_k(0);
    wgmma_fence();
    issue_qk<T, HD, BM, BN>(s, sQ, sKV, wg);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(s);
    if constexpr (FREE) release(0, 0);
    softmax(s, m, l, alpha, 0, rowi);
    pack_p<T, BN>(pa, s);
    for (int t = 1; t < n_tiles; ++t) {
      if constexpr (!FREE) {
        __syncthreads();  // every warpgroup is past Q·Kᵀ of tile t - 1 and P·V of tile t - 2
        if (tid == 0) {
          load_k(t + STAGES - 1);  // into the stage of K(t - 1)
          load_v(t + STAGES - 2);  // into the stage of V(t - 2)
        }
      }
      wait_k(t);
      wait_v(t - 1);
      const uint32_t sK = sKV + (t % STAGES) * Tr::STAGE_BYTES;
      const uint32_t sV_prev = sKV + ((t - 1) % STAGES) * Tr::STAGE_BYTES + Tr::KV_BYTES;
      fence_regs(o);
      wgmma_fence();
      issue_qk<T, HD, BM, BN>(s, sQ, sK, wg);
      wgmma_commit();
      issue_pv<T, HD, BN>(o, pa, sV_prev);
      wgmma_commit();
      wgmma_wait<1>();  // Q·Kᵀ done; P·V still running
      fence_regs(s);
      if constexpr (FREE) release(0, t);
      const bool moved = softmax(s, m, l, alpha, t, rowi);
      wgmma_wait<0>();
      fence_regs(o);
      if constexpr (FREE) release(1, t - 1);
      if (moved) rescale<HD>(o, alpha);
      pack_p<T, BN>(pa, s);
    }
    wait_v(n_tiles - 1);
    fence_regs(o);
    wgmma_fence();
    issue_pv<T, HD, BN>(o, pa, sKV + ((n_tiles - 1) % STAGES) * Tr::STAGE_BYTES + Tr::KV_BYTES);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(o);
  }

  // epilogue: finish the row sums over the quad, normalize, store
  T* og = static_cast<T*>(p.o) + int64_t(b * p.hq + h) * p.nq * HD;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float sum = l[hf];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // a row that saw no key gives 0
    const int i = rowi[hf];
    if (i < p.nq) {
#pragma unroll
      for (int j = 0; j < HD / 8; ++j) {
        *reinterpret_cast<uint32_t*>(og + int64_t(i) * HD + 8 * j + 2 * quad) =
            pack2<T>(o[4 * j + 2 * hf] * inv, o[4 * j + 2 * hf + 1] * inv);
      }
    }
  }
}


// ---- in-block key split ------------------------------------------------------------------------
// Two warpgroups on the same 64 query rows, each walking half of the key tiles (warpgroup w takes
// tiles w, w + 2, ...) through its own STAGES-deep cp.async ring, loaded by its own 128 threads and
// published with a per-warpgroup named barrier (no block barrier per tile: the warpgroups drift
// freely); the same overlapped step as attn_prefill_sm90. At the end warpgroup 1 hands (m, l, O) to
// its twin thread of warpgroup 0 through shared memory, which merges and stores. Halves the longest
// walk of a block for grids too small to fill the GPU.
template <int HD, int BN, int STAGES> struct KsTraits {
  static constexpr int BM = 64;
  static constexpr int THREADS = 256;
  static constexpr int Q_BYTES = BM * HD * 2;
  static constexpr int KV_BYTES = BN * HD * 2;
  static constexpr int STAGE_BYTES = 2 * KV_BYTES;
  static constexpr int RING_BYTES = STAGES * STAGE_BYTES;  // one warpgroup's ring
  static constexpr int RED_BYTES = (HD / 2 + 4) * 128 * 4;  // warpgroup 1's m, l and O, in its ring
  static constexpr int SMEM_BYTES = Q_BYTES + 2 * RING_BYTES + 1024;
  static_assert(RED_BYTES <= RING_BYTES, "the merge's partials fit in a ring");
  static constexpr int AHEAD = STAGES - 2;  // overlapped: V of tile i - 1 stays one more step
  static_assert(HD == 64 || HD == 128, "head dims 64 and 128");
  static_assert(BN % 16 == 0 && BN <= 256, "wgmma N");
  static_assert(AHEAD >= 1, "one tile loads while one is used");
  static_assert(SMEM_BYTES <= 227 * 1024, "over the sm_90 shared memory per block");
};

// TMA: Q and each warpgroup's tiles loaded by the copy engine (thread 0 of the warpgroup issues
// them, each tile completing an mbarrier of its warpgroup's ring; `maps`), no cp.async.
template <typename T, int HD, int BN, int STAGES, int GROUP_MB = 0, bool TMA = false>
__device__ __forceinline__ void attn_prefill_sm90_ks(const Params& p, const TmaMaps* maps = nullptr) {
  using Tr = KsTraits<HD, BN, STAGES>;
  constexpr int BM = Tr::BM, AHEAD = Tr::AHEAD;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t kbars[TMA ? 2 * STAGES + 1 : 1];  // [warpgroup][stage], Q
  const uint32_t sQ = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const int tid = threadIdx.x, wg = tid / 128, t128 = tid % 128, warp = t128 / 32, lane = tid % 32, quad = lane % 4;
  const uint32_t sRing = sQ + Tr::Q_BYTES + wg * Tr::RING_BYTES;
  // the merge's partials: warpgroup 1's ring, once its walk is over
  float* red = reinterpret_cast<float*>(smem_raw + (sQ - smem_u32(smem_raw)) + Tr::Q_BYTES + Tr::RING_BYTES);

  int bh, q_block;
  block_coords<GROUP_MB>(p, bh, q_block);
  const int h = bh % p.hq, b = bh / p.hq;
  const int q0 = q_block * BM, rows = min(BM, p.nq - q0);
  const int hk = h / (p.hq / p.hkv);
  const T* qg = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh + int64_t(q0) * p.q_sn;
  const T* kg = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh;
  const int key_end = p.causal ? max(0, min(p.nk, q0 + rows + p.causal_offset)) : p.nk;
  const int n_tiles = tg::ceil_div(key_end, BN);
  const int my_n = n_tiles > wg ? (n_tiles - wg + 1) / 2 : 0;  // my tiles: wg + 2 i, i < my_n
  const uint32_t kbar0 = smem_u32(kbars), q_bar = kbar0 + 16u * STAGES;
  auto kbar = [&](int i) { return kbar0 + 8u * (wg * STAGES + i % STAGES); };  // my tile i's

  // My i-th tile's K and V into my stage i % STAGES, one cp.async group (empty past my last); TMA:
  // by thread 0 of my warpgroup, completing kbar(i).
  auto load_kv = [&](int i) {
    if constexpr (TMA) {
      if (i < my_n) {
        const uint32_t sK = sRing + (i % STAGES) * Tr::STAGE_BYTES;
        mbar_expect_tx(kbar(i), 2 * Tr::KV_BYTES);
        tma_tile<BN, HD>(sK, maps->k, kbar(i), (wg + 2 * i) * BN, hk, b);
        tma_tile<BN, HD>(sK + Tr::KV_BYTES, maps->v, kbar(i), (wg + 2 * i) * BN, hk, b);
      }
      return;
    }
    if (i < my_n) {
      const uint32_t sK = sRing + (i % STAGES) * Tr::STAGE_BYTES;
      const int k0 = (wg + 2 * i) * BN, keys = min(BN, p.nk - k0);
      load_tile_by<BN, HD, 128>(t128, sK, kg + int64_t(k0) * p.k_sn, p.k_sn, keys);
      load_tile_by<BN, HD, 128>(t128, sK + Tr::KV_BYTES, vg + int64_t(k0) * p.v_sn, p.v_sn, keys);
    }
    cp_async_commit();
  };
  auto need_mask = [&](int t) {
    const int k0 = t * BN;
    return k0 + BN > p.nk || (p.causal && k0 + BN - 1 > q0 + p.causal_offset);
  };
  if constexpr (TMA) {
    if (tid == 0) {
#pragma unroll
      for (int i = 0; i < 2 * STAGES + 1; ++i) mbar_init(kbar0 + 8u * i, 1);
      fence_mbar_init();
      if (n_tiles > 0) {  // warpgroup 0 waits for Q
        mbar_expect_tx(q_bar, Tr::Q_BYTES);
        tma_tile<BM, HD>(sQ, maps->q, q_bar, q0, h, b);
      }
    }
    __syncthreads();  // the barriers are initialized
    if (t128 == 0) {
#pragma unroll
      for (int i = 0; i < AHEAD; ++i) load_kv(i);
    }
  } else {
    load_tile_by<BM, HD, 256>(tid, sQ, qg, p.q_sn, rows);  // both warpgroups' Q: joins the first group
#pragma unroll
    for (int i = 0; i < AHEAD; ++i) load_kv(i);
  }

  float o[HD / 2];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i) o[i] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, alpha[2];
  const int row0 = q0 + warp * 16 + lane / 4;
  const int rowi[2] = {row0, row0 + 8};
  float s[BN / 2];
  uint32_t pa[BN / 16][4];

  // my first tile (and Q, loaded by both warpgroups): a block barrier
  if constexpr (!TMA) {
    cp_async_wait<AHEAD - 1>();
    fence_proxy_async();
  }
  __syncthreads();
  if (my_n > 0) {
    if constexpr (TMA) {
      if (t128 == 0) load_kv(AHEAD);
      mbar_wait(q_bar, 0);
      mbar_wait(kbar(0), 0);
    } else {
      load_kv(AHEAD);
    }
    wgmma_fence();
    issue_qk<T, HD, BM, BN>(s, sQ, sRing, 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(s);
    softmax_tile<BN>(s, m, l, alpha, p, need_mask(wg), wg * BN, rowi, quad);
    pack_p<T, BN>(pa, s);
  }
  // Block barriers only (both warpgroups walk (n_tiles + 1) / 2 steps; warpgroup 1, a tile short
  // when n_tiles is odd, takes the last barrier without work): with a barrier per warpgroup here
  // (named barriers 1 and 2 of 128 threads), compute-sanitizer racecheck did not order the merge
  // below, whichever barrier published it.
  const int steps = (n_tiles + 1) / 2;
  for (int i = 1; i < steps; ++i) {
    // my tile i landed; my warpgroup is past tile i - 2's P·V
    if constexpr (!TMA) {
      cp_async_wait<AHEAD - 1>();
      fence_proxy_async();
    }
    __syncthreads();
    if (i >= my_n) continue;
    if constexpr (TMA) {
      if (t128 == 0) load_kv(i + AHEAD);  // into the stage of my tile i - 2
      mbar_wait(kbar(i), (i / STAGES) & 1);
    } else {
      load_kv(i + AHEAD);  // into the stage of my tile i - 2
    }
    const int t = wg + 2 * i;
    const uint32_t sK = sRing + (i % STAGES) * Tr::STAGE_BYTES;
    const uint32_t sV_prev = sRing + ((i - 1) % STAGES) * Tr::STAGE_BYTES + Tr::KV_BYTES;
    fence_regs(o);
    wgmma_fence();
    issue_qk<T, HD, BM, BN>(s, sQ, sK, 0);
    wgmma_commit();
    issue_pv<T, HD, BN>(o, pa, sV_prev);
    wgmma_commit();
    wgmma_wait<1>();
    fence_regs(s);
    softmax_tile<BN>(s, m, l, alpha, p, need_mask(t), t * BN, rowi, quad);
    wgmma_wait<0>();
    fence_regs(o);
    rescale<HD>(o, alpha);
    pack_p<T, BN>(pa, s);
  }
  if (my_n > 0) {
    fence_regs(o);
    wgmma_fence();
    issue_pv<T, HD, BN>(o, pa, sRing + ((my_n - 1) % STAGES) * Tr::STAGE_BYTES + Tr::KV_BYTES);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(o);
  }
  cp_async_wait<0>();

  // warpgroup 1 hands its (m, l, O) to its twin thread in warpgroup 0 through its own ring, once
  // every copy has landed and every tensor-core read of the rings is done (wait above, barrier)
  fence_proxy_async();
  __syncthreads();
  if (wg == 1) {
    red[0 * 128 + t128] = m[0];
    red[1 * 128 + t128] = m[1];
    red[2 * 128 + t128] = l[0];
    red[3 * 128 + t128] = l[1];
#pragma unroll
    for (int j = 0; j < HD / 2; ++j) red[(4 + j) * 128 + t128] = o[j];
  }
  __syncthreads();
  if (wg == 1) return;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const float m1 = red[hf * 128 + t128], l1 = red[(2 + hf) * 128 + t128];
    const float mn = fmaxf(m[hf], m1);
    const float ref = mn == -INFINITY ? 0.0f : mn;
    const float a0 = fast_exp2(m[hf] - ref), a1 = fast_exp2(m1 - ref);
    l[hf] = l[hf] * a0 + l1 * a1;
#pragma unroll
    for (int j = 0; j < HD / 8; ++j) {
      o[4 * j + 2 * hf] = o[4 * j + 2 * hf] * a0 + red[(4 + 4 * j + 2 * hf) * 128 + t128] * a1;
      o[4 * j + 2 * hf + 1] = o[4 * j + 2 * hf + 1] * a0 + red[(4 + 4 * j + 2 * hf + 1) * 128 + t128] * a1;
    }
  }

  // epilogue: finish the row sums over the quad, normalize, store
  T* og = static_cast<T*>(p.o) + int64_t(b * p.hq + h) * p.nq * HD;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float sum = l[hf];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // a row that saw no key gives 0
    const int i = rowi[hf];
    if (i < p.nq) {
#pragma unroll
      for (int j = 0; j < HD / 8; ++j) {
        *reinterpret_cast<uint32_t*>(og + int64_t(i) * HD + 8 * j + 2 * quad) =
            pack2<T>(o[4 * j + 2 * hf] * inv, o[4 * j + 2 * hf + 1] * inv);
      }
    }
  }
}

// ---- warp-specialized variant ----------------------------------------------------------------
// FlashAttention-3's structure with cp.async instead of TMA: one producer warp (the last warp)
// streams Q and the K/V tiles into a ring of STAGES shared-memory stages; each K and each V tile
// has its own "full" mbarrier, completed by the copies themselves (cp.async.mbarrier.arrive.noinc),
// and each stage an "empty" mbarrier the consumers arrive on once their wgmma reading it is done.
// CWG consumer warpgroups (warps 0 .. 4 CWG - 1) never meet at a block barrier, so they drift
// apart; PINGPONG also orders them with named barriers (FA3's warp scheduler barriers): the
// warpgroups take turns issuing their GEMMs, one's softmax then runs under the other's GEMMs.
// Each consumer keeps the intra-warpgroup overlap (Q·Kᵀ of its tile i with P·V of tile i - 1).
// KSPLIT: the CWG = 2 warpgroups share the block's 64 query rows and split its key tiles (even /
// odd), each with its own online softmax, merged through shared memory at the end (a key split
// inside the block: half the walk per warpgroup, no second launch, no global scratch).
// REGS: the producer is a whole warpgroup that gives registers to the consumers (setmaxnreg:
// ptxas sizes a block of 288 threads as 384, 168 registers each, too few for D = 128).
// TMA: the producer is one thread issuing cp.async.bulk.tensor (TmaMaps), which needs few registers.
template <int HD, int CWG, int BN, int STAGES, bool PINGPONG, bool KSPLIT, bool REGS, bool TMA = false> struct WsTraits {
  static constexpr int BM = KSPLIT ? 64 : 64 * CWG;  // query rows per block
  static constexpr int CONSUMERS = 128 * CWG;
  static constexpr int PRODUCERS = REGS ? 128 : 32;
  static constexpr int THREADS = CONSUMERS + PRODUCERS;
  static constexpr int PRODUCER_REGS = TMA ? 24 : 40, CONSUMER_REGS = CWG == 2 && !TMA ? 232 : 240;
  static constexpr int Q_BYTES = BM * HD * 2;
  static constexpr int KV_BYTES = BN * HD * 2;
  static constexpr int STAGE_BYTES = 2 * KV_BYTES;
  static constexpr int RED_FLOATS = KSPLIT ? (HD / 2 + 4) * 128 : 0;  // the merge's partials
  static constexpr int SMEM_BYTES = Q_BYTES + STAGES * STAGE_BYTES + RED_FLOATS * 4 + 1024;
  static constexpr int EMPTY_COUNT = KSPLIT ? 128 : CONSUMERS;  // arrivals that free a stage
  static_assert(HD == 64 || HD == 128, "head dims 64 and 128");
  static_assert(BN % 16 == 0 && BN <= 256, "wgmma N");
  static_assert(CWG == 1 || CWG == 2, "one or two consumer warpgroups");
  static_assert(!PINGPONG || (CWG == 2 && !KSPLIT), "ping-pong needs two warpgroups on their own rows");
  static_assert(!KSPLIT || CWG == 2, "the key split pairs two warpgroups");
  static_assert(STAGES >= 2, "stages");
  static_assert(!REGS || PRODUCER_REGS * 128 + CONSUMER_REGS * CONSUMERS <= 65536, "register file");
  static_assert(SMEM_BYTES <= 227 * 1024, "over the sm_90 shared memory per block");
};

template <bool B> struct Flag {
  static constexpr bool value = B;
};

template <int N> __device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N> __device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}

template <typename T, int HD, int CWG, int BN, int STAGES, bool PINGPONG, bool KSPLIT, bool REGS, bool TMA = false>
__device__ __forceinline__ void attn_prefill_ws(const Params& p, const TmaMaps* maps = nullptr) {
  using Tr = WsTraits<HD, CWG, BN, STAGES, PINGPONG, KSPLIT, REGS, TMA>;
  constexpr int BM = Tr::BM;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // mbarriers: full K [STAGES], full V [STAGES], empty [STAGES], Q
  __shared__ __align__(8) uint64_t bars[3 * STAGES + 1];
  const uint32_t sQ = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const uint32_t sKV = sQ + Tr::Q_BYTES;
  const uint32_t bar0 = smem_u32(bars);
  auto full_k = [&](int s) { return bar0 + 8u * s; };
  auto full_v = [&](int s) { return bar0 + 8u * (STAGES + s); };
  auto empty = [&](int s) { return bar0 + 8u * (2 * STAGES + s); };
  const uint32_t q_bar = bar0 + 8u * (3 * STAGES);

  const int tid = threadIdx.x;
  const int h = blockIdx.x % p.hq, b = blockIdx.x / p.hq;
  const int q_block = p.causal ? gridDim.y - 1 - blockIdx.y : blockIdx.y;
  const int q0 = q_block * BM, rows = min(BM, p.nq - q0);
  const int hk = h / (p.hq / p.hkv);
  const int key_end = p.causal ? max(0, min(p.nk, q0 + rows + p.causal_offset)) : p.nk;
  const int n_tiles = tg::ceil_div(key_end, BN);

  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full_k(s), TMA ? 1 : Tr::PRODUCERS);
      mbar_init(full_v(s), TMA ? 1 : Tr::PRODUCERS);
      mbar_init(empty(s), Tr::EMPTY_COUNT);
    }
    mbar_init(q_bar, TMA ? 1 : Tr::PRODUCERS);
    if constexpr (TMA) fence_mbar_init();
  }
  __syncthreads();

  if (tid >= Tr::CONSUMERS) {  // ---- producer warp(group) ----
    if constexpr (REGS) setmaxnreg_dec<Tr::PRODUCER_REGS>();
    constexpr int NP = Tr::PRODUCERS;
    const int lane = tid - Tr::CONSUMERS;
    if constexpr (TMA) {
      // one thread issues every load; each tile the consumers use completes its barrier, so none is
      // in flight when the block exits (Q only when some warpgroup waits for it)
      if (lane == 0 && n_tiles > 0) {
        mbar_expect_tx(q_bar, Tr::Q_BYTES);
        tma_tile<BM, HD>(sQ, maps->q, q_bar, q0, h, b);
        for (int t = 0; t < n_tiles; ++t) {
          const int s = t % STAGES, round = t / STAGES;
          if (round > 0) mbar_wait(empty(s), (round - 1) & 1);
          const uint32_t sK = sKV + s * Tr::STAGE_BYTES;
          mbar_expect_tx(full_k(s), Tr::KV_BYTES);
          tma_tile<BN, HD>(sK, maps->k, full_k(s), t * BN, hk, b);
          mbar_expect_tx(full_v(s), Tr::KV_BYTES);
          tma_tile<BN, HD>(sK + Tr::KV_BYTES, maps->v, full_v(s), t * BN, hk, b);
        }
      }
      return;
    }
    const T* qg = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh + int64_t(q0) * p.q_sn;
    const T* kg = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh;
    const T* vg = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh;
    load_tile_by<BM, HD, NP>(lane, sQ, qg, p.q_sn, rows);
    cp_async_mbar_arrive(q_bar);
    for (int t = 0; t < n_tiles; ++t) {
      const int s = t % STAGES, round = t / STAGES;
      if (round > 0) mbar_wait(empty(s), (round - 1) & 1);
      const uint32_t sK = sKV + s * Tr::STAGE_BYTES;
      const int k0 = t * BN, keys = min(BN, p.nk - k0);
      load_tile_by<BN, HD, NP>(lane, sK, kg + int64_t(k0) * p.k_sn, p.k_sn, keys);
      cp_async_mbar_arrive(full_k(s));
      load_tile_by<BN, HD, NP>(lane, sK + Tr::KV_BYTES, vg + int64_t(k0) * p.v_sn, p.v_sn, keys);
      cp_async_mbar_arrive(full_v(s));
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");  // nothing lands after the block is gone
    return;
  }

  // ---- consumer warpgroups ----
  if constexpr (REGS) setmaxnreg_inc<Tr::CONSUMER_REGS>();
  const int wg = tid / 128, warp = tid / 32 % 4, lane = tid % 32, quad = lane % 4;
  const int row_wg = KSPLIT ? 0 : wg;  // which 64 rows of the block's Q this warpgroup owns
  const int first = KSPLIT ? wg : 0, stride = KSPLIT ? CWG : 1;
  const int my_n = KSPLIT ? (n_tiles > wg ? (n_tiles - wg + CWG - 1) / CWG : 0) : n_tiles;

  float o[HD / 2];
#pragma unroll
  for (int i = 0; i < HD / 2; ++i) o[i] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, alpha[2];
  const int row0 = q0 + row_wg * 64 + warp * 16 + lane / 4;
  const int rowi[2] = {row0, row0 + 8};
  float s[BN / 2];
  uint32_t pa[BN / 16][4];
  auto need_mask = [&](int t) {
    const int k0 = t * BN;
    return k0 + BN > p.nk || (p.causal && k0 + BN - 1 > q0 + p.causal_offset);
  };

  // One step: Q·Kᵀ of my tile i (QK) and P·V of my tile i - 1 (PV); peeled so that ptxas sees
  // the accumulators untouched between issue and wait (runtime conditions serialize wgmma).
  auto step = [&](auto qk_c, auto pv_c, int i) {
    constexpr bool QK = decltype(qk_c)::value, PV = decltype(pv_c)::value;
    const int t = first + i * stride, tp = t - stride;
    if constexpr (QK) mbar_wait(full_k(t % STAGES), (t / STAGES) & 1);
    if constexpr (PV) mbar_wait(full_v(tp % STAGES), (tp / STAGES) & 1);
    if constexpr (!TMA) fence_proxy_async();  // the copies' shared-memory writes, before the tensor cores read
    if constexpr (PINGPONG) named_sync(1 + wg, 256);
    fence_regs(o);
    wgmma_fence();
    if constexpr (QK) {
      issue_qk<T, HD, BM, BN>(s, sQ, sKV + (t % STAGES) * Tr::STAGE_BYTES, row_wg);
      wgmma_commit();
    }
    if constexpr (PV) {
      issue_pv<T, HD, BN>(o, pa, sKV + (tp % STAGES) * Tr::STAGE_BYTES + Tr::KV_BYTES);
      wgmma_commit();
    }
    if constexpr (PINGPONG) {
      if (QK || wg == 0) named_arrive(2 - wg, 256);  // the other warpgroup's turn
    }
    if constexpr (QK) {
      if constexpr (PV) wgmma_wait<1>();  // Q·Kᵀ done; P·V may still run
      else wgmma_wait<0>();
      fence_regs(s);
      softmax_tile<BN>(s, m, l, alpha, p, need_mask(t), t * BN, rowi, quad);
    }
    if constexpr (PV) {
      wgmma_wait<0>();
      fence_regs(o);
      mbar_arrive(empty(tp % STAGES));  // K and V of tile tp no longer read
    }
    if constexpr (QK) {
      rescale<HD>(o, alpha);
      pack_p<T, BN>(pa, s);
    }
  };
  using yes = Flag<true>;
  using no = Flag<false>;
  if (my_n > 0) {
    mbar_wait(q_bar, 0);
    if constexpr (PINGPONG) {
      if (wg == 1) named_arrive(1, 256);  // warpgroup 0 issues first
    }
    step(yes{}, no{}, 0);
    for (int i = 1; i < my_n; ++i) step(yes{}, yes{}, i);
    step(no{}, yes{}, my_n);
  }

  if constexpr (KSPLIT) {
    // warpgroup 1 hands its (m, l, O) to its twin thread in warpgroup 0, which merges them
    float* red = reinterpret_cast<float*>(smem_raw + (sKV - smem_u32(smem_raw)) + STAGES * Tr::STAGE_BYTES);
    const int t128 = tid % 128;
    if (wg == 1) {
      red[0 * 128 + t128] = m[0];
      red[1 * 128 + t128] = m[1];
      red[2 * 128 + t128] = l[0];
      red[3 * 128 + t128] = l[1];
#pragma unroll
      for (int j = 0; j < HD / 2; ++j) red[(4 + j) * 128 + t128] = o[j];
      named_arrive(3, 256);
      return;
    }
    named_sync(3, 256);
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const float m1 = red[hf * 128 + t128], l1 = red[(2 + hf) * 128 + t128];
      const float mn = fmaxf(m[hf], m1);
      const float ref = mn == -INFINITY ? 0.0f : mn;
      const float a0 = fast_exp2(m[hf] - ref), a1 = fast_exp2(m1 - ref);
      l[hf] = l[hf] * a0 + l1 * a1;
#pragma unroll
      for (int j = 0; j < HD / 8; ++j) {
        o[4 * j + 2 * hf] = o[4 * j + 2 * hf] * a0 + red[(4 + 4 * j + 2 * hf) * 128 + t128] * a1;
        o[4 * j + 2 * hf + 1] = o[4 * j + 2 * hf + 1] * a0 + red[(4 + 4 * j + 2 * hf + 1) * 128 + t128] * a1;
      }
    }
  }

  // epilogue: finish the row sums over the quad, normalize, store
  T* og = static_cast<T*>(p.o) + int64_t(b * p.hq + h) * p.nq * HD;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float sum = l[hf];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // a row that saw no key gives 0
    const int i = rowi[hf];
    if (i < p.nq) {
#pragma unroll
      for (int j = 0; j < HD / 8; ++j) {
        *reinterpret_cast<uint32_t*>(og + int64_t(i) * HD + 8 * j + 2 * quad) =
            pack2<T>(o[4 * j + 2 * hf] * inv, o[4 * j + 2 * hf + 1] * inv);
      }
    }
  }
}

}  // namespace attn90
}  // namespace tg
