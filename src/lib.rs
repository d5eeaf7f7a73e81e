#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod activation;
pub mod attention;
pub mod attention_layer;
mod bias_act;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod ffn;
mod layer_norm;
pub mod models;
pub mod quant;
pub mod reference;
pub mod testing;

pub use activation::Activation;
pub use attention::{fused_attention, fused_attention_with, AttentionConfig, Dropout};
pub use bias_act::bias_act;
pub use ffn::{
    choose_kernel, choose_path, cublaslt_fusable, fused_ffn, set_cublaslt_epilogues, set_small_m_kernel, FfnKernel,
    FfnPath, FusedMlp, GatedMlp, CPU_FUSED_MAX_M, GPU_COOP_AUTO_MAX_M, GPU_COOP_MAX_M, GPU_COOP_MAX_WEIGHTS,
    GPU_ONE_LAUNCH_AUTO_MAX_M, GPU_ONE_LAUNCH_MAX_M, GPU_ONE_LAUNCH_MAX_WEIGHTS, GPU_SMALL_M_MAX,
    GPU_WIDE_TILE_MAX_WEIGHTS,
};
pub use layer_norm::{add_layer_norm, layer_norm};
