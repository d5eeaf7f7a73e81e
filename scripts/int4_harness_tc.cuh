// The mma.sync GEMM's variant plumbing shared by the INT4 harnesses (scripts/int4_tc_harness.cu,
// scripts/int4_rs_harness.cu): the error check `CK`, the kernel wrapper `ktc` of
// tg::int4_tc::int4_gemm_tc, the variant record `Var` and its constructor macro `V`. Include it after
// int4_gemm_tc.cu (with INT4_TC_NO_ENTRIES), define `VARS`, then include int4_harness_common.cuh.
#pragma once
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

template <typename T, int BM, int BN, int WM, int WN, int ST, bool SYM>
__global__ void __launch_bounds__(WM * WN * 32, 1) ktc(const T* x, const uint32_t* p, const __half* s, const __half* z, T* y, float* part, TcDims d) {
  tg::int4_tc::int4_gemm_tc<T, BM, BN, WM, WN, ST, SYM>(x, p, s, z, y, part, d);
}
typedef void (*KFn)(const void*, const uint32_t*, const __half*, const __half*, void*, float*, TcDims);
struct Var { const char* name; KFn f[2][2]; int bm, bn, threads, smem, per_sm; };  // f[bf16][asym]
#define V(BM, BN, WM, WN, ST, PER_SM) {"m" #BM "n" #BN "w" #WM "x" #WN "s" #ST, \
  {{(KFn)ktc<__half, BM, BN, WM, WN, ST, true>, (KFn)ktc<__half, BM, BN, WM, WN, ST, false>}, \
   {(KFn)ktc<__nv_bfloat16, BM, BN, WM, WN, ST, true>, (KFn)ktc<__nv_bfloat16, BM, BN, WM, WN, ST, false>}}, \
  BM, BN, WM * WN * 32, tg::int4_tc::TcSmem<BM, BN, ST>::BYTES, PER_SM}
