// Entry points of the TMA warp-specialized Hopper W4A16 GEMM (kernels/int4_gemm_tma.cuh; sm_90a
// only, build.rs compiles `*_sm90.cu` for it and the crate loads this PTX only on compute
// capability 9.0): int4_gemm_tma_<dtype>_<variant>_<sym|asym>, variant
// n<BN>c<CW>s<STAGES>r<RAW>p<PW>e (e: the consumers release each stage once its wgmmas are done).
// Mirrors `WsVariant` in src/quant/launch.rs.
#include "int4_gemm_tma.cuh"

#define INT4_TMA_ENTRY(T, TNAME, BN, CW, ST, RAW, PW, SYM, SNAME)                                             \
  extern "C" __global__ void __launch_bounds__(128 * (CW + PW), 1)                                            \
      int4_gemm_tma_##TNAME##_n##BN##c##CW##s##ST##r##RAW##p##PW##e_##SNAME(                                   \
          const __grid_constant__ tg::int4_tma::TmaMaps maps, T* y, tg::int4_ws::WsDims d, const T* bias,     \
          int act) {                                                                                          \
    tg::int4_tma::int4_gemm_tma<T, BN, CW, ST, RAW, PW, SYM, 0, 0, 0, true>(maps, y, d, bias, act);                          \
  }
#define INT4_TMA_VARIANT(T, TNAME, BN, CW, ST, RAW, PW)                                                       \
  INT4_TMA_ENTRY(T, TNAME, BN, CW, ST, RAW, PW, true, sym)                                                    \
  INT4_TMA_ENTRY(T, TNAME, BN, CW, ST, RAW, PW, false, asym)
#define INT4_TMA_ENTRIES(T, TNAME)                                                                            \
  INT4_TMA_VARIANT(T, TNAME, 168, 2, 4, 3, 2)                                                                 \
  INT4_TMA_VARIANT(T, TNAME, 128, 2, 5, 3, 2)

INT4_TMA_ENTRIES(__half, f16)
INT4_TMA_ENTRIES(__nv_bfloat16, bf16)
