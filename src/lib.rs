#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod activation;
mod bias_act;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod reference;
pub mod testing;

pub use activation::Activation;
pub use bias_act::bias_act;
