// Entry points of the warp-specialized Hopper W4A16 GEMM (kernels/int4_gemm_ws.cuh; sm_90a only,
// build.rs compiles `*_sm90.cu` for it and the crate loads this PTX only on compute capability 9.0):
// int4_gemm_ws_<dtype>_<variant>_<sym|asym>, variant n<BN>s<STAGES>r<RAW>l<LOOKAHEAD>p<PW>.
// Mirrors `WsVariant` in src/quant/launch.rs.
#include "int4_gemm_ws.cuh"

#define INT4_WS_ENTRY(T, TNAME, BN, ST, RAW, LA, PW, SYM, SNAME)                                                \
  extern "C" __global__ void __launch_bounds__(128 * (PW + 2), 1)                                               \
      int4_gemm_ws_##TNAME##_n##BN##s##ST##r##RAW##l##LA##p##PW##_##SNAME(                                      \
          const T* x, const uint32_t* packed, const __half* scales, const __half* zeros, T* y,                  \
          tg::int4_ws::WsDims d, const T* bias, int act) {                                                      \
    tg::int4_ws::int4_gemm_ws<T, BN, ST, RAW, LA, PW, SYM>(x, packed, scales, zeros, y, d, bias, act);          \
  }
#define INT4_WS_VARIANT(T, TNAME, BN, ST, RAW, LA, PW)                                                          \
  INT4_WS_ENTRY(T, TNAME, BN, ST, RAW, LA, PW, true, sym)                                                       \
  INT4_WS_ENTRY(T, TNAME, BN, ST, RAW, LA, PW, false, asym)
#define INT4_WS_ENTRIES(T, TNAME)                                                                               \
  INT4_WS_VARIANT(T, TNAME, 168, 5, 3, 3, 2)                                                                    \
  INT4_WS_VARIANT(T, TNAME, 128, 6, 3, 3, 2)

INT4_WS_ENTRIES(__half, f16)
INT4_WS_ENTRIES(__nv_bfloat16, bf16)
