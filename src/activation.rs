//! The activation functions shared by [`bias_act`](crate::bias_act), the fused FFN and the
//! models. Each has one scalar definition here (the CPU paths) and one in `kernels/common.cuh`.

use candle_core::{bail, Result, Tensor};

/// An elementwise activation.
///
/// The names follow candle: [`Activation::Gelu`] is the exact erf form (candle's
/// `Tensor::gelu_erf`, PyTorch's default `gelu`), [`Activation::GeluTanh`] the tanh approximation
/// (candle's `Tensor::gelu`, GPT-2's `gelu_new`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    /// `0.5·x·(1 + erf(x/√2))`.
    #[default]
    Gelu,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
    /// `x·sigmoid(x)` (a.k.a. swish).
    Silu,
    /// `x`: bias only.
    Identity,
}

impl Activation {
    /// Every variant, in kernel numbering order.
    pub const ALL: [Activation; 5] =
        [Activation::Gelu, Activation::GeluTanh, Activation::Relu, Activation::Silu, Activation::Identity];

    /// The name used in kernel entry points and on the command line (`gelu_tanh`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Relu => "relu",
            Activation::Silu => "silu",
            Activation::Identity => "identity",
        }
    }

    /// The activation applied to one value, in f32 (what the CPU paths and kernels compute).
    #[inline(always)]
    pub fn apply_f32(self, x: f32) -> f32 {
        match self {
            Activation::Gelu => 0.5 * x * (1.0 + candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
            }
            Activation::Relu => x.max(0.0),
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Identity => x,
        }
    }

    /// The same activation composed from stock candle tensor ops (the reference).
    pub fn apply_tensor(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
            Activation::Identity => Ok(x.clone()),
        }
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Activation {
    type Err = candle_core::Error;

    /// Parses the seed's strings: `gelu`, `gelu_tanh` (also `gelu_new`, `gelu_pytorch_tanh`),
    /// `relu`, `silu` (also `swish`), `identity`.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "gelu" | "gelu_erf" => Activation::Gelu,
            "gelu_tanh" | "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            "identity" | "none" | "linear" => Activation::Identity,
            other => bail!("unknown activation {other:?}; expected gelu, gelu_tanh, relu, silu or identity"),
        })
    }
}
