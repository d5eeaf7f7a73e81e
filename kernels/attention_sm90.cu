// Hopper prefill instances (see attention_sm90.cuh). Built for sm_90a only (build.rs), loaded
// only on compute capability 9.0 devices:
//   attn_sm90_<dtype>_d<HD>_w<warpgroups>_n<BN>_s<STAGES>_o<OVERLAP>[_g<MB>]
//   attn_sm90ks_<dtype>_d<HD>_n<BN>_s<STAGES>          (in-block key split)
//   attn_sm90t_<dtype>_d<HD>_w<warpgroups>_n<BN>_s<STAGES> (overlapped, TMA loads; takes TmaMaps)
//   attn_sm90tfz_..._z<LAZY> (TMA, no block barriers, lazy rescale), attn_wst_... (warp-specialized, TMA)
// The instance list is mirrored in src/attention/sm90.rs.
#include "attention_sm90.cuh"

static_assert(sizeof(tg::attn::Params) == 192, "Params mirrors AttnParams in src/attention/cuda.rs");

using tg::attn::Params;
using tg::attn90::Sm90Traits;
using tg::attn90::TmaMaps;
using tg::attn90::WsTraits;

static_assert(sizeof(TmaMaps) == 384, "TmaMaps mirrors the three CUtensorMaps of src/attention/sm90.rs");

#define ATTN_SM90(T, TNAME, HD, WGS, BN, ST, OV)                                                  \
  extern "C" __global__ void __launch_bounds__(Sm90Traits<HD, WGS, BN, ST, OV>::THREADS, 1)       \
      attn_sm90_##TNAME##_d##HD##_w##WGS##_n##BN##_s##ST##_o##OV(const __grid_constant__ Params p) { \
    tg::attn90::attn_prefill_sm90<T, HD, WGS, BN, ST, OV>(p);                                     \
  }
// _g<MB>: the grid walked in groups of heads whose K and V fit in MB megabytes (block_coords;
// harness only: measured slower on the H100)
#define ATTN_SM90G(T, TNAME, HD, WGS, BN, ST, OV, G)                                                        \
  extern "C" __global__ void __launch_bounds__(Sm90Traits<HD, WGS, BN, ST, OV>::THREADS, 1)                 \
      attn_sm90_##TNAME##_d##HD##_w##WGS##_n##BN##_s##ST##_o##OV##_g##G(const __grid_constant__ Params p) { \
    tg::attn90::attn_prefill_sm90<T, HD, WGS, BN, ST, OV, G>(p);                                            \
  }
// in-block key split: two warpgroups on 64 query rows, even / odd key tiles (attn_prefill_sm90_ks)
#define ATTN_SM90KS(T, TNAME, HD, BN, ST)                                                  \
  extern "C" __global__ void __launch_bounds__(256, 1)                                      \
      attn_sm90ks_##TNAME##_d##HD##_n##BN##_s##ST(const __grid_constant__ Params p) { \
    tg::attn90::attn_prefill_sm90_ks<T, HD, BN, ST>(p);                                     \
  }
// in-block key split with TMA loads: attn_sm90kst_<dtype>_d<HD>_n<BN>_s<STAGES> (takes TmaMaps)
#define ATTN_SM90KST(T, TNAME, HD, BN, ST)                                                             \
  extern "C" __global__ void __launch_bounds__(256, 1) attn_sm90kst_##TNAME##_d##HD##_n##BN##_s##ST(  \
      const __grid_constant__ Params p, const __grid_constant__ TmaMaps maps) {                      \
    tg::attn90::attn_prefill_sm90_ks<T, HD, BN, ST, 0, true>(p, &maps);                               \
  }
// TMA loads (attn_prefill_sm90_tma): the second parameter holds the tensor maps of Q, K and V
#define ATTN_SM90T(T, TNAME, HD, WGS, BN, ST)                                                     \
  extern "C" __global__ void __launch_bounds__(Sm90Traits<HD, WGS, BN, ST, true>::THREADS, 1)     \
      attn_sm90t_##TNAME##_d##HD##_w##WGS##_n##BN##_s##ST(const __grid_constant__ Params p,      \
                                                          const __grid_constant__ TmaMaps maps) { \
    tg::attn90::attn_prefill_sm90_tma<T, HD, WGS, BN, ST>(p, maps);                               \
  }
// ... with softmax_tile_pos (LAZY: see there): attn_sm90t_<dtype>_d<HD>_w<WGS>_n<BN>_s<ST>_z<LAZY>
#define ATTN_SM90TZ(T, TNAME, HD, WGS, BN, ST, LAZY)                                                       \
  extern "C" __global__ void __launch_bounds__(Sm90Traits<HD, WGS, BN, ST, true>::THREADS, 1)              \
      attn_sm90t_##TNAME##_d##HD##_w##WGS##_n##BN##_s##ST##_z##LAZY(const __grid_constant__ Params p,      \
                                                                    const __grid_constant__ TmaMaps maps) { \
    tg::attn90::attn_prefill_sm90_tma<T, HD, WGS, BN, ST, LAZY>(p, maps);                                  \
  }
// ... without block barriers (FREE): attn_sm90tf_..._s<ST> (softmax_tile), attn_sm90tfz_..._z<LAZY>
#define ATTN_SM90TF(T, TNAME, HD, WGS, BN, ST)                                                      \
  extern "C" __global__ void __launch_bounds__(Sm90Traits<HD, WGS, BN, ST, true>::THREADS, 1)        \
      attn_sm90tf_##TNAME##_d##HD##_w##WGS##_n##BN##_s##ST(const __grid_constant__ Params p,        \
                                                           const __grid_constant__ TmaMaps maps) {  \
    tg::attn90::attn_prefill_sm90_tma<T, HD, WGS, BN, ST, -1, true>(p, maps);                       \
  }
#define ATTN_SM90TFZ(T, TNAME, HD, WGS, BN, ST, LAZY)                                                       \
  extern "C" __global__ void __launch_bounds__(Sm90Traits<HD, WGS, BN, ST, true>::THREADS, 1)                \
      attn_sm90tfz_##TNAME##_d##HD##_w##WGS##_n##BN##_s##ST##_z##LAZY(const __grid_constant__ Params p,      \
                                                                      const __grid_constant__ TmaMaps maps) { \
    tg::attn90::attn_prefill_sm90_tma<T, HD, WGS, BN, ST, LAZY, true>(p, maps);                              \
  }
// Warp-specialized instances (scripts/attention_sm90_timing.cu only: measured slower): attn_ws_<dtype>_d<HD>_c<consumer warpgroups>_n<BN>_s<STAGES>_p<PINGPONG>_k<KSPLIT>
//   (_r1: a producer warpgroup giving registers to the consumers; _r0: a producer warp)
#define ATTN_WS(T, TNAME, HD, CWG, BN, ST, PP, KS, R)                                                              \
  extern "C" __global__ void __launch_bounds__(WsTraits<HD, CWG, BN, ST, PP, KS, R>::THREADS, 1)                    \
      attn_ws_##TNAME##_d##HD##_c##CWG##_n##BN##_s##ST##_p##PP##_k##KS##_r##R(const __grid_constant__ Params p) { \
    tg::attn90::attn_prefill_ws<T, HD, CWG, BN, ST, PP, KS, R>(p);                                                 \
  }
// ... with a TMA producer (one thread of a producer warpgroup): attn_wst_<dtype>_d<HD>_c<CWG>_n<BN>_s<ST>_p<PP>_k<KS>
#define ATTN_WST(T, TNAME, HD, CWG, BN, ST, PP, KS)                                                  \
  extern "C" __global__ void __launch_bounds__(WsTraits<HD, CWG, BN, ST, PP, KS, true, true>::THREADS, 1) \
      attn_wst_##TNAME##_d##HD##_c##CWG##_n##BN##_s##ST##_p##PP##_k##KS(const __grid_constant__ Params p,  \
                                                                        const __grid_constant__ TmaMaps maps) { \
    tg::attn90::attn_prefill_ws<T, HD, CWG, BN, ST, PP, KS, true, true>(p, &maps);                         \
  }

// Mirrored by sm90::choose_block (src/attention/sm90.rs).
#define ATTN_SM90_ALL(T, TNAME)                                          \
  ATTN_SM90(T, TNAME, 64, 1, 64, 3, 0)                                   \
  ATTN_SM90(T, TNAME, 128, 2, 128, 3, 1)                                 \
  ATTN_SM90TFZ(T, TNAME, 128, 2, 128, 3, 8)                              \
  ATTN_SM90KS(T, TNAME, 64, 64, 4)                                       \
  ATTN_WST(T, TNAME, 64, 2, 64, 6, 0, 1)

ATTN_SM90_ALL(__half, f16)
ATTN_SM90_ALL(__nv_bfloat16, bf16)
