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
            Activation::Gelu => 0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                0.5 * x * (1.0 + tanh_f32(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
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

/// `erf(x)` in f32 without branches, so the CPU loops that apply GELU vectorize: the odd/even
/// rational approximation `x·P(x²)/Q(x²)` on `[-4, 4]` (outside it erf is ±1 in f32) used by Eigen
/// and XLA. Max abs error against the exact erf: 6.5e-8 with f64 arithmetic, 3.4e-7 in f32 (a
/// few ULP near ±1; `tests` below checks it). libm's `erff` (what candle's `gelu_erf` calls) is
/// within 1 ULP but branches per value, which kept GELU at ~10 ns per element on the CPU.
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    odd_rational(
        x,
        4.0,
        [
            -2.726_142_4e-10,
            2.770_681_5e-8,
            -2.101_024e-6,
            -5.692_506_2e-5,
            -7.349_906_4e-4,
            -2.954_6e-3,
            -1.609_603_3e-2,
        ],
        [-1.456_607_15e-5, -2.133_740_5e-4, -1.682_827e-3, -7.373_329_3e-3, -1.426_473_9e-2],
    )
}

/// `tanh(x)` in f32 without branches (vectorizable, as [`erf_f32`]): Eigen's odd/even rational
/// approximation on `[-7.905311, 7.905311]`, ±0.99999974 beyond. Max abs error against the exact
/// tanh 3.3e-7 (near the clamp), relative error on (-1, 1) below 3e-7 (`tests` below).
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    odd_rational(
        x,
        7.905_311,
        [
            -2.760_768_4e-16,
            2.000_188e-13,
            -8.604_672e-11,
            5.122_297_3e-8,
            1.485_722_35e-5,
            6.372_619_5e-4,
            4.893_524_6e-3,
        ],
        [1.198_258_4e-6, 1.185_347_1e-4, 2.268_434_7e-3, 4.893_525e-3],
    )
}

/// `x·P(x²)/Q(x²)` with `x` clamped to `[-bound, bound]`, the coefficients of `P` and `Q` from the
/// highest power down (Horner, plain multiply-adds: `mul_add` without the `fma` target feature
/// is a libm call): the shape of [`erf_f32`] and [`tanh_f32`].
#[inline(always)]
fn odd_rational<const NP: usize, const NQ: usize>(x: f32, bound: f32, p: [f32; NP], q: [f32; NQ]) -> f32 {
    let x = x.clamp(-bound, bound);
    let x2 = x * x;
    let horner = |c: &[f32]| c[1..].iter().fold(c[0], |acc, &c| acc * x2 + c);
    x * horner(&p) / horner(&q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_f32_matches_the_exact_erf() {
        // every 1e-4 over [-6, 6], against candle's f64 erf
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let want = candle_core::cpu::erf::erf_f64(x as f64);
            worst = worst.max((erf_f32(x) as f64 - want).abs());
        }
        assert!(worst < 5e-7, "erf_f32: max abs error {worst:e}");
        assert_eq!(erf_f32(0.0), 0.0);
        assert_eq!(erf_f32(f32::INFINITY), erf_f32(4.0));
    }

    #[test]
    fn tanh_f32_matches_the_exact_tanh() {
        let (mut worst, mut worst_rel) = (0f64, 0f64);
        for i in -120_000..=120_000 {
            let x = i as f32 * 1e-4;
            let (got, want) = (tanh_f32(x) as f64, (x as f64).tanh());
            worst = worst.max((got - want).abs());
            if x != 0.0 && x.abs() < 1.0 {
                worst_rel = worst_rel.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 4e-7 && worst_rel < 4e-7, "tanh_f32: max abs error {worst:e}, rel {worst_rel:e}");
        assert_eq!(tanh_f32(0.0), 0.0);
        assert_eq!(tanh_f32(-f32::INFINITY), -tanh_f32(f32::INFINITY));
    }
}
