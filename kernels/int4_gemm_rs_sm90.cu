// Entry points of the transposed-RS Hopper W4A16 GEMM (kernels/int4_gemm_rs.cuh; sm_90a only,
// build.rs compiles `*_sm90.cu` for it and the crate loads this PTX only on compute capability
// 9.0): int4_gemm_rs_<dtype>_t<TN>s<STAGES>_<sym|asym>, TN tokens per block. Mirrors `RsVariant`
// in src/quant/launch.rs. PDL-ready: `tg::pdl_enter` first (src/cuda.rs `launch_ex`).
#include "int4_gemm_rs.cuh"

#define INT4_RS_ENTRY(T, TNAME, TN, ST, SYM, SNAME)                                                          \
  extern "C" __global__ void __launch_bounds__(tg::int4_rs::THREADS, 1) int4_gemm_rs_##TNAME##_t##TN##s##ST##_##SNAME( \
      const __grid_constant__ tg::int4_tma::TmaMaps maps, T* y, tg::int4_ws::WsDims d, const T* bias, int act) {  \
    tg::pdl_enter();                                                                                     \
    tg::int4_rs::int4_gemm_rs<T, TN, ST, SYM>(maps, y, d, bias, act);                                          \
  }
#define INT4_RS_VARIANT(T, TNAME, TN, ST)  \
  INT4_RS_ENTRY(T, TNAME, TN, ST, true, sym) \
  INT4_RS_ENTRY(T, TNAME, TN, ST, false, asym)
#define INT4_RS_ENTRIES(T, TNAME) \
  INT4_RS_VARIANT(T, TNAME, 88, 6)  \
  INT4_RS_VARIANT(T, TNAME, 128, 5) \
  INT4_RS_VARIANT(T, TNAME, 176, 4) \
  INT4_RS_VARIANT(T, TNAME, 192, 3)

INT4_RS_ENTRIES(__half, f16)
INT4_RS_ENTRIES(__nv_bfloat16, bf16)
