//! INT4 weight-only quantization (W4A16): group-wise 4-bit weights with f16 scales, a matmul that
//! reads them directly (CPU: AVX2/FMA + rayon; CUDA: tensor-core `mma.sync` with in-register
//! dequantization), an [`Int4Linear`] layer, safetensors save/load and an error report.
//!
//! ```
//! use candle_core::{Device, Tensor, Module};
//! use tiny_gemm::quant::{int4_matmul, Int4Config, Int4Linear, Int4Weight};
//! # fn main() -> candle_core::Result<()> {
//! let w = Tensor::randn(0f32, 0.02, (96, 256), &Device::Cpu)?; // [N, K], as candle's Linear
//! let q = Int4Weight::quantize(&w, Int4Config { group_size: 64, symmetric: false })?;
//! let x = Tensor::randn(0f32, 1.0, (3, 256), &Device::Cpu)?;
//! let y = int4_matmul(&x, &q)?; // [3, 96] = x · dequantize()ᵀ
//! let want = x.matmul(&q.dequantize()?.t()?)?;
//! assert!((y - want)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
//! let layer = Int4Linear::from_linear(&candle_nn::Linear::new(w, None), Int4Config::default())?;
//! assert_eq!(layer.forward(&x)?.dims(), [3, 96]);
//! # Ok(()) }
//! ```
//!
//! The format (rounding rule, packed layout) is documented in [`format`]'s module docs.

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod format;
mod io;
mod launch;
mod report;

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Module, Result, Shape, Storage, Tensor, WithDType,
};

pub use format::{Int4Config, Int4Weight, FORMAT_VERSION, SUPPORTED_GROUP_SIZES};
pub use io::{load_int4, save_int4};
pub use report::{LayerReport, QuantReport};

use crate::cpu::{dispatch_float, is_half_float};
use crate::Activation;

/// Activation rows up to which CUDA runs the small-M kernel (weights streamed once per 16 rows);
/// larger M takes the tensor-core GEMM up to [`CUDA_TC_MAX_M`] (f16 / bf16 activations) — on Hopper
/// (compute capability 9.0, f16 / bf16, N % 8 == 0) the transposed-RS `wgmma` GEMM from
/// [`CUDA_RS_MIN_M`] to [`CUDA_RS_MAX_M`] rows instead — else dequantizes the weight to the
/// activation dtype in a scratch buffer and calls candle's (cuBLAS) matmul.
pub const CUDA_FUSED_MAX_M: usize = 16;

/// Activation rows up to which f16 / bf16 activations take the tensor-core GEMM with in-loop
/// dequantization (kernels/int4_gemm_tc.cu) rather than dequantize + cuBLAS. Harness (H100, kernel
/// time, same run): K=4096 -> N=11008 M=192 56 against 86 µs for dequantize + cuBLAS, M=256 92
/// against 88; K=11008 -> N=4096 M=256 77 against 102; K=N=2048 M=256 14.5 against 13.7.
pub const CUDA_TC_MAX_M: usize = 192;

/// On Hopper (f16 / bf16, N % 8 == 0) the rows above this up to [`CUDA_RS_MAX_M`] take the
/// transposed-RS `wgmma` GEMM (kernels/int4_gemm_rs.cuh: the weights are the register operand,
/// dequantized once per block of up to 176 tokens) instead of the mma.sync tensor-core GEMM or
/// dequantize + cuBLAS. Harness (H100, K=4096 -> N=11008, kernel µs, same run; benchmarks/int4.md
/// rounds 8 and 9): M=128 31.3 against 47.2 for the TMA warp-specialized GEMM that had this range
/// before (53.5 for the mma.sync GEMM in round 7; cuBLAS f16 38.7), M=256 52.5 against 51.2, M=384
/// 62.0 against 95.1 (dequantize + cuBLAS 93.8), M=512 73.6 against 102.3 / 105.3. The TMA GEMM
/// (kernels/int4_gemm_tma.cuh) is no longer built into the crate; its harness keeps it.
pub const CUDA_RS_MIN_M: usize = 64;

/// Upper end of the transposed-RS GEMM's rows (see [`CUDA_RS_MIN_M`]). Harness (H100, kernel µs,
/// same run): M=1024 146.5 against 159.9 for dequantize + cuBLAS at K=4096 -> N=11008, 155.9 against
/// 152.1 at K=11008 -> N=4096, 60.3 against 61.4 at K=N=4096; larger M is not measured.
pub const CUDA_RS_MAX_M: usize = 1024;

/// Which CUDA kernel(s) an `int4_matmul` of `m` rows and `n` output columns in `dtype` runs
/// (`hopper`: the device has compute capability 9.0, where the sm_90a `wgmma` GEMM loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CudaPath {
    /// `int4_gemm_*` (kernels/int4_gemm.cu), M <= [`CUDA_FUSED_MAX_M`].
    SmallM,
    /// `int4_gemm_tc_*` (kernels/int4_gemm_tc.cu).
    TensorCore,
    /// `int4_gemm_rs_*` (kernels/int4_gemm_rs_sm90.cu): f16 / bf16 above [`CUDA_RS_MIN_M`] up to
    /// [`CUDA_RS_MAX_M`] on Hopper, N % 8 == 0.
    Rs,
    /// `int4_dequant_*` into a scratch weight, then candle's matmul.
    DequantizeMatmul,
}

pub(crate) fn cuda_path(m: usize, n: usize, dtype: DType, hopper: bool) -> CudaPath {
    let wgmma = hopper && is_half_float(dtype) && n % 8 == 0;
    if m <= CUDA_FUSED_MAX_M {
        CudaPath::SmallM
    } else if wgmma && m > CUDA_RS_MIN_M && m <= CUDA_RS_MAX_M {
        CudaPath::Rs
    } else if m <= CUDA_TC_MAX_M && is_half_float(dtype) {
        CudaPath::TensorCore
    } else {
        CudaPath::DequantizeMatmul
    }
}

/// Whether `dev` is a CUDA device of compute capability 9.0 (the sm_90a kernels load there).
fn is_hopper(dev: &candle_core::Device) -> Result<bool> {
    match dev {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(d) => cuda::is_sm90(d),
        _ => Ok(false),
    }
}

/// `x · Wᵀ` for `x` of shape `[.., K]` and an INT4 weight `[N, K]`; the output is `[.., N]` in
/// `x`'s dtype (f32, f16 or bf16), accumulated in f32. `x` must be on the weight's device.
///
/// Numerics: equals `x · dequantize()ᵀ` up to f32 accumulation order and one rounding of the
/// output. On CUDA (M ≤ [`CUDA_FUSED_MAX_M`]) the tensor cores multiply the exact integers
/// `q − z` (f16 / bf16) with f32 accumulation and each group's sum is scaled once; f32
/// activations are rounded to f16 on the way in (|x| must stay below 65504). Larger M multiplies
/// by the weight dequantized to the activation dtype (one rounding per weight; bf16: the scale
/// is rounded to bf16 first in the tensor-core GEMMs: M ≤ [`CUDA_TC_MAX_M`], and f16 / bf16 above
/// it up to [`CUDA_RS_MAX_M`] on Hopper for N % 8 == 0), with f32 accumulation.
pub fn int4_matmul(x: &Tensor, w: &Int4Weight) -> Result<Tensor> {
    int4_linear_impl("int4_matmul", x, w, None, Activation::Identity)
}

/// A whole INT4 linear layer in one op: `act(x · Wᵀ + bias)` for `x` of shape `[.., K]`, an INT4
/// weight `[N, K]` and an optional `bias` of shape `[N]` in `x`'s dtype, on `x`'s device. The
/// bias and the activation run in f32 in the matmul's epilogue (CUDA: the kernels' output loop;
/// CPU: the output loop), before the output's one rounding to `x`'s dtype; numerics otherwise as
/// [`int4_matmul`]. On CUDA past the fused kernels' row limits (f32 above
/// [`CUDA_FUSED_MAX_M`] rows, f16 / bf16 above [`CUDA_TC_MAX_M`] except on Hopper up to
/// [`CUDA_RS_MAX_M`] rows with N % 8 == 0) it is candle's
/// matmul on the dequantized weight followed by [`bias_act`](crate::bias_act).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tiny_gemm::quant::{int4_linear, int4_matmul, Int4Config, Int4Weight};
/// use tiny_gemm::Activation;
/// # fn main() -> candle_core::Result<()> {
/// let w = Tensor::randn(0f32, 0.02, (96, 256), &Device::Cpu)?;
/// let q = Int4Weight::quantize(&w, Int4Config::default())?;
/// let (x, b) = (Tensor::randn(0f32, 1.0, (3, 256), &Device::Cpu)?, Tensor::randn(0f32, 1.0, 96, &Device::Cpu)?);
/// let y = int4_linear(&x, &q, Some(&b), Activation::Relu)?;
/// let want = int4_matmul(&x, &q)?.broadcast_add(&b)?.relu()?;
/// assert!((y - want)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
/// # Ok(()) }
/// ```
pub fn int4_linear(x: &Tensor, w: &Int4Weight, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
    int4_linear_impl("int4_linear", x, w, bias, act)
}

fn int4_linear_impl(
    op: &'static str,
    x: &Tensor,
    w: &Int4Weight,
    bias: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    if !crate::cpu::is_supported_float(x.dtype()) {
        return Err(candle_core::Error::UnsupportedDTypeForOp(x.dtype(), op));
    }
    let dims = x.dims();
    let Some((&k, lead)) = dims.split_last() else { bail!("{op}: x must have at least one dim, got a scalar") };
    if k != w.k {
        bail!("{op}: x has shape {dims:?}, its last dim {k} must equal the weight's K={}", w.k);
    }
    if !x.device().same_device(w.device()) {
        bail!("{op}: x is on {:?} but the weight is on {:?}", x.device().location(), w.device().location());
    }
    if let Some(b) = bias {
        if b.dims() != [w.n] {
            bail!("{op}: bias has shape {:?}, expected [{}] (the weight's N)", b.dims(), w.n);
        }
        if b.dtype() != x.dtype() {
            bail!("{op}: bias dtype {:?} differs from x dtype {:?}", b.dtype(), x.dtype());
        }
        if !b.device().same_device(x.device()) {
            bail!("{op}: bias is on {:?} but x is on {:?}", b.device().location(), x.device().location());
        }
    }
    let m: usize = lead.iter().product();
    let mut out_dims = lead.to_vec();
    out_dims.push(w.n);
    if m == 0 {
        return Tensor::zeros(out_dims, x.dtype(), x.device());
    }
    let mut x2 = x.reshape((m, k))?.contiguous()?;
    if x2.device().is_cuda() && x2.layout().start_offset() % 8 != 0 {
        x2 = x2.force_contiguous()?; // a fresh buffer: the kernel's vector loads want an aligned start
    }
    // chosen once here; the op's CUDA side runs the kernel it names
    let path = cuda_path(m, w.n, x.dtype(), is_hopper(x.device())?);
    let op = Int4MatMul { w: w.clone(), act, path };
    let y = if x.device().is_cuda() && path == CudaPath::DequantizeMatmul {
        let y = x2.matmul(&w.dequantize_to(x.dtype())?.t()?)?;
        if bias.is_none() && act == Activation::Identity {
            y
        } else {
            crate::bias_act(&y, bias, act)?
        }
    } else {
        match bias {
            None => x2.apply_op1_no_bwd(&op)?,
            Some(b) => x2.apply_op2_no_bwd(&b.contiguous()?, &op)?,
        }
    };
    y.reshape(out_dims)
}

pub(crate) fn dequantize_op(w: &Int4Weight, dtype: DType) -> Result<Tensor> {
    if !crate::cpu::is_supported_float(dtype) {
        return Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "int4 dequantize"));
    }
    w.packed.apply_op1_no_bwd(&Int4Dequantize { w: w.clone(), dtype })
}

/// The contiguous CPU elements of a weight tensor.
fn cpu_slice<'a, T: WithDType>(s: &'a Storage, l: &Layout) -> Result<&'a [T]> {
    let Storage::Cpu(c) = s else { bail!("int4: weight tensors are not on the CPU") };
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::RequiresContiguous { op: "int4" }.bt())?;
    Ok(&c.as_slice::<T>()?[a..b])
}

/// Runs `f` on a host view of `w` (whose tensors must be on the CPU).
fn with_host_view<R>(w: &Int4Weight, f: impl FnOnce(&cpu::WeightView) -> Result<R>) -> Result<R> {
    let (ps, pl) = w.packed.storage_and_layout();
    let (ss, sl) = w.scales.storage_and_layout();
    let zs = w.zeros.as_ref().map(|z| z.storage_and_layout());
    let view = cpu::WeightView {
        packed: cpu_slice(&ps, pl)?,
        scales: cpu_slice(&ss, sl)?,
        zeros: zs.as_ref().map(|(s, l)| cpu_slice(s, l)).transpose()?,
        n: w.n,
        k: w.k,
        group_size: w.cfg.group_size,
    };
    f(&view)
}

/// `act(x · Wᵀ (+ bias))`: op1 without a bias, op2 with one (`[N]`, x's dtype).
struct Int4MatMul {
    w: Int4Weight,
    act: Activation,
    /// The CUDA kernel(s) for this call's rows ([`cuda_path`]; unused on the CPU).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    path: CudaPath,
}

fn matmul_cpu_t<T: crate::cpu::CpuFloat>(
    w: &Int4Weight,
    act: Activation,
    x: (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
) -> Result<CpuStorage> {
    let m = x.1.dims()[0];
    let x = crate::cpu::contiguous::<T>(x.0, x.1)?;
    let bias = bias.map(|(s, l)| crate::cpu::contiguous::<T>(s, l)).transpose()?;
    with_host_view(w, |v| Ok(T::to_cpu_storage_owned(cpu::matmul(x, m, v, bias, act))))
}

impl CustomOp1 for Int4MatMul {
    fn name(&self) -> &'static str {
        "int4_matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(s.dtype(), "int4_matmul", matmul_cpu_t(&self.w, self.act, (s, l), None))?;
        Ok((out, Shape::from((l.dims()[0], self.w.n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::matmul(&self.w, s, l, None, self.act, self.path)
    }
}

impl CustomOp2 for Int4MatMul {
    fn name(&self) -> &'static str {
        "int4_linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out =
            dispatch_float!(s1.dtype(), "int4_linear", matmul_cpu_t(&self.w, self.act, (s1, l1), Some((s2, l2))))?;
        Ok((out, Shape::from((l1.dims()[0], self.w.n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::matmul(&self.w, s1, l1, Some((s2, l2)), self.act, self.path)
    }
}

struct Int4Dequantize {
    w: Int4Weight,
    dtype: DType,
}

fn dequantize_cpu_t<T: crate::cpu::CpuFloat>(w: &Int4Weight) -> Result<CpuStorage> {
    with_host_view(w, |v| Ok(T::to_cpu_storage_owned(cpu::dequantize::<T>(v))))
}

impl CustomOp1 for Int4Dequantize {
    fn name(&self) -> &'static str {
        "int4_dequantize"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(self.dtype, "int4 dequantize", dequantize_cpu_t(&self.w))?;
        Ok((out, Shape::from((self.w.n, self.w.k))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _s: &candle_core::CudaStorage, _l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::dequantize(&self.w, self.dtype)
    }
}

/// A linear layer `y = x · Wᵀ + b` with an INT4 weight: a drop-in for `candle_nn::Linear`.
#[derive(Debug, Clone)]
pub struct Int4Linear {
    weight: Int4Weight,
    bias: Option<Tensor>,
}

impl Int4Linear {
    /// A layer from a quantized weight and an optional bias `[N]` (any float dtype; it is cast to
    /// the activation dtype in `forward`).
    pub fn new(weight: Int4Weight, bias: Option<Tensor>) -> Result<Self> {
        if let Some(b) = &bias {
            if b.dims() != [weight.n] {
                bail!("Int4Linear: bias has shape {:?}, expected [{}]", b.dims(), weight.n);
            }
            if !b.device().same_device(weight.device()) {
                bail!("Int4Linear: bias is on {:?}, weight on {:?}", b.device().location(), weight.device().location());
            }
        }
        Ok(Self { weight, bias })
    }

    /// Quantizes a candle `Linear` (weight `[N, K]`, bias kept as is).
    pub fn from_linear(linear: &candle_nn::Linear, cfg: Int4Config) -> Result<Self> {
        Self::new(Int4Weight::quantize(linear.weight(), cfg)?, linear.bias().cloned())
    }

    /// The quantized weight.
    pub fn weight(&self) -> &Int4Weight {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Int4Linear {
    /// `act(x · Wᵀ + b)` in one op ([`int4_linear`]); the bias is cast to `x`'s dtype if it
    /// differs (a no-op when it matches).
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let bias = self.bias.as_ref().map(|b| b.to_dtype(x.dtype())).transpose()?;
        int4_linear(x, &self.weight, bias.as_ref(), act)
    }
}

impl Module for Int4Linear {
    /// `x · Wᵀ + b` in one op ([`int4_linear`] with the bias in the matmul's epilogue).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Activation::Identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_path_by_rows_and_dtype() {
        // the ranges as documented: the RS GEMM starts inside the tensor-core GEMM's range
        const { assert!(CUDA_FUSED_MAX_M < CUDA_RS_MIN_M && CUDA_RS_MIN_M < CUDA_TC_MAX_M && CUDA_TC_MAX_M < CUDA_RS_MAX_M) };
        for hopper in [false, true] {
            assert_eq!(cuda_path(1, 64, DType::F32, hopper), CudaPath::SmallM);
            assert_eq!(cuda_path(16, 64, DType::BF16, hopper), CudaPath::SmallM);
            for dtype in [DType::F16, DType::BF16] {
                assert_eq!(cuda_path(17, 64, dtype, hopper), CudaPath::TensorCore);
                assert_eq!(cuda_path(CUDA_RS_MIN_M, 64, dtype, hopper), CudaPath::TensorCore);
                let mid = if hopper { CudaPath::Rs } else { CudaPath::TensorCore };
                assert_eq!(cuda_path(CUDA_RS_MIN_M + 1, 64, dtype, hopper), mid);
                assert_eq!(cuda_path(CUDA_TC_MAX_M, 64, dtype, hopper), mid);
                // N % 8 != 0 keeps the tensor-core GEMM
                assert_eq!(cuda_path(CUDA_TC_MAX_M, 1001, dtype, hopper), CudaPath::TensorCore);
                let rs = if hopper { CudaPath::Rs } else { CudaPath::DequantizeMatmul };
                assert_eq!(cuda_path(CUDA_TC_MAX_M + 1, 64, dtype, hopper), rs);
                assert_eq!(cuda_path(512, 64, dtype, hopper), rs);
                assert_eq!(cuda_path(CUDA_RS_MAX_M, 11008, dtype, hopper), rs);
                assert_eq!(cuda_path(CUDA_RS_MAX_M + 1, 64, dtype, hopper), CudaPath::DequantizeMatmul);
                assert_eq!(cuda_path(4096, 64, dtype, hopper), CudaPath::DequantizeMatmul);
                // N % 8 != 0: no tensor map of the scales, dequantize + matmul
                assert_eq!(cuda_path(512, 1001, dtype, hopper), CudaPath::DequantizeMatmul);
                assert_eq!(cuda_path(CUDA_TC_MAX_M + 1, 1001, dtype, hopper), CudaPath::DequantizeMatmul);
            }
            // f32 activations: the tensor-core GEMMs take 2-byte operands only
            assert_eq!(cuda_path(17, 64, DType::F32, hopper), CudaPath::DequantizeMatmul);
            assert_eq!(cuda_path(512, 64, DType::F32, hopper), CudaPath::DequantizeMatmul);
        }
    }
}
