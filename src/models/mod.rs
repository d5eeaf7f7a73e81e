//! Models built from the crate's layers, each runnable on stock candle layers or the fused ops.

pub mod gpt2;
