//! Fused feed-forward network: `act(x·W1 + b1)·W2 + b2` ([`fused_ffn`]), the drop-in layers
//! [`FusedMlp`] and [`GatedMlp`], and the projection they are built from.
//!
//! Each FFN is two projections `y = epilogue(x·W + b)`; the first applies bias + activation (or
//! the gate `act(x·Wg + bg) * (x·Wu + bu)`) to the hidden tile while it is still in registers /
//! cache, the second adds the bias. The path per projection is a pure function of the shapes
//! ([`choose_path`]):
//! - CPU, M <= [`CPU_FUSED_MAX_M`]: our multithreaded kernel (`cpu.rs`), f32 accumulation.
//! - CUDA, f16/bf16, M <= 16 (<= [`GPU_SMALL_M_MAX`] for weights up to
//!   [`GPU_WIDE_TILE_MAX_WEIGHTS`] elements), weights stored `[out, in]`: the weight-streaming
//!   tensor-core kernel of `kernels/ffn.cu` (reads each weight once, 16-byte loads).
//! - other CUDA f16/bf16 cases: cuBLASLt (`lt.rs`), the bias (+ ReLU / tanh-GELU) in the GEMM's
//!   epilogue; for erf GELU / SiLU (no cuBLASLt epilogue, [`cublaslt_fusable`]) the bias still goes
//!   in the epilogue and one vectorized activation pass runs in place on the GEMM's output; gated
//!   projections run one GEMM over `[gate | up]` (bias in the epilogue) and one gate pass.
//! - otherwise: candle's matmul (cuBLAS / gemm) followed by our [`bias_act`](crate::bias_act) epilogue.
//!
//! On CUDA a whole small-M FFN can instead run as one launch ([`choose_kernel`]). The cooperative
//! FFN (`kernels/ffn_coop.cu`, [`FfnKernel::Cooperative`], picked for plain FFNs with M <=
//! [`GPU_COOP_MAX_M`], except M <= [`GPU_COOP_AUTO_MAX_M`] for D·H between
//! [`GPU_COOP_SMALL_WEIGHTS`] and [`GPU_COOP_MAX_WEIGHTS`]) runs a co-resident grid over every
//! SM: all blocks compute hidden rows, a grid-wide barrier, then all blocks a share of the output
//! (split over H where a warp's share of H is large, partials summed in a fixed order by the
//! last block of each output tile: deterministic). The older one-launch kernel (`kernels/ffn_fused.cu`, [`FfnKernel::OneLaunch`],
//! forced only) gives each block 64 hidden units, which leaves most SMs idle on small layers.
//! Elsewhere, where both projections take the small-M kernel, they run as two launches from one
//! op ([`FfnKernel::TwoLaunches`]): the hidden activations go to a cached per-device scratch, which
//! saves a candle op (allocation, events, dispatch: several µs of host time) per call.
//!
//! Weight layout: the kernels want each output's weights contiguous, i.e. candle's `Linear`
//! layout `[out, in]`; the layers keep their weights that way (loaded as is, no copy).
//! [`fused_ffn`] takes the seed's `[in, out]` shapes; a plain `[in, out]` tensor is read as it is
//! (CPU kernel and cuBLAS handle it without a copy), and a `[in, out]`-shaped *view* of an
//! `[out, in]` tensor (`w.t()`) reaches the CUDA small-M kernel. Nothing is transposed per call.

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod layer;
#[cfg(feature = "cuda")]
mod lt;

pub use layer::{FusedMlp, GatedMlp};

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, InplaceOp1, Layout, Result, Shape, Storage, Tensor,
};

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cpu::{dispatch_float, is_half_float, is_supported_float, CpuFloat};
use crate::{bias_act, Activation};

/// Largest token count M for which the CPU runs our fused kernel; above it candle's blocked
/// matmul (gemm crate) wins and we only fuse the epilogue.
pub const CPU_FUSED_MAX_M: usize = 32;
/// Largest token count M for the CUDA weight-streaming kernel (4 token tiles of 8); above it
/// cuBLAS tensor-core GEMMs plus our epilogue kernel.
pub const GPU_SMALL_M_MAX: usize = 32;

/// The fused feed-forward network of the seed: `act(x·w1 + b1)·w2 + b2`.
///
/// - `x`: `[B, N, D]` or `[M, D]` (any leading dims), `w1`: `[D, H]`, `b1`: `[H]`, `w2`: `[H, O]`
///   (usually `O = D`), `b2`: `[O]`; output `[..., O]`. Biases are optional.
/// - f32, f16, bf16 (all inputs the same dtype, on the same device); math in f32, the hidden
///   activations rounded once to the dtype (as stock candle does).
/// - `w1`/`w2` may be plain row-major `[D, H]`/`[H, O]` tensors (the seed layout) or transposed
///   views of `[out, in]` tensors (candle `Linear` layout, `w.t()`), which the CUDA small-batch
///   kernel streams directly. Nothing is copied per call; see the module docs.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tiny_gemm::{fused_ffn, reference, Activation};
/// # fn main() -> candle_core::Result<()> {
/// let dev = Device::Cpu;
/// let x = Tensor::randn(0f32, 1.0, (2, 3, 64), &dev)?;
/// let w1 = (Tensor::randn(0f32, 1.0, (64, 256), &dev)? / 8.0)?;
/// let b1 = Tensor::randn(0f32, 1.0, 256, &dev)?;
/// let w2 = (Tensor::randn(0f32, 1.0, (256, 64), &dev)? / 16.0)?;
/// let y = fused_ffn(&x, &w1, Some(&b1), &w2, None, Activation::Gelu)?;
/// let want = reference::ffn(&x, &w1, Some(&b1), &w2, None, Activation::Gelu)?;
/// assert!((y - want)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
/// # Ok(()) }
/// ```
pub fn fused_ffn(
    x: &Tensor,
    w1: &Tensor,
    b1: Option<&Tensor>,
    w2: &Tensor,
    b2: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    let (x2, lead) = flatten_tokens(x, "fused_ffn")?;
    check_weight(x, w1, "w1", x2.dim(1)?, "the last dim of x")?;
    let hidden = w1.dim(1)?;
    check_weight(x, w2, "w2", hidden, "the hidden size H of w1")?;
    check_bias(x, b1, "b1", hidden)?;
    check_bias(x, b2, "b2", w2.dim(1)?)?;
    let y = ffn(&x2, w1, b1, w2, b2, Epilogue::Act(act), None)?;
    unflatten_tokens(y, &lead)
}

/// How a whole FFN (both projections) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnKernel {
    /// One CUDA launch for both projections (`kernels/ffn_fused.cu`).
    OneLaunch,
    /// Two projections, each on the path [`choose_path`] picks.
    TwoProjections,
    /// Both projections' small-M kernels (`kernels/ffn.cu`) launched from one candle op, the hidden
    /// activations in a cached per-device scratch: the GPU work of two projections for the host cost
    /// of about one op.
    TwoLaunches,
    /// One cooperative CUDA launch over the whole GPU (`kernels/ffn_coop.cu`, plain FFNs): every
    /// block computes hidden rows, a grid-wide barrier, then every block a share of the output.
    Cooperative,
}

/// Largest token count the CUDA cooperative FFN takes (2 token tiles of 8), when forced.
pub const GPU_COOP_MAX_M: usize = 16;

/// Largest token count for which [`choose_kernel`] picks the cooperative FFN. Measured on H100
/// (f16, benchmarks/ffn.md round 2, one run, µs per call): 512x2048 9.2 / 9.3 at M = 1 / 4 vs 11.4 /
/// 11.0 for the two-launch FFN; 768x3072 10.4 / 10.6 vs 14.3 / 14.5.
pub const GPU_COOP_AUTO_MAX_M: usize = 4;

/// Largest first-projection weight (D·H elements) for which [`choose_kernel`] picks the
/// cooperative FFN: the measured small shapes above (up to 2.4M weights) and 1024x4096, which the
/// tests cover. Above it the cooperative FFN is picked up to [`GPU_COOP_MAX_M`] tokens: on
/// 4096x11008 it beat the two-launch FFN (H100: 67.8 / 68.2 / 72.6 vs 70.3 / 70.9 / 73.6 µs at
/// M = 1 / 4 / 16), streaming both weights from HBM at 2.66 TB/s at M = 1.
pub const GPU_COOP_MAX_WEIGHTS: usize = 4 << 20;

/// Up to this first-projection weight (D·H elements) [`choose_kernel`] picks the cooperative FFN
/// for every M up to [`GPU_COOP_MAX_M`], not just [`GPU_COOP_AUTO_MAX_M`]: its time barely grows
/// with M there (H100, benchmarks/ffn.md round 3: 512x2048 8.49 / 8.54 µs at M = 1 / 4, and 9.11
/// at M = 16 against 10.73 for the two-launch FFN; at 768x3072 M = 16 the two tied, 11.66 vs 11.57).
pub const GPU_COOP_SMALL_WEIGHTS: usize = 1 << 20;

/// Whether the cooperative FFN can run: CUDA, f16/bf16, plain (not gated), both weights stored
/// `[out, in]`, 16-byte aligned loads, 1..=[`GPU_COOP_MAX_M`] tokens.
fn coop_feasible(cuda: bool, dtype: DType, m: usize, gated: bool, out_in: bool, aligned: bool) -> bool {
    cuda && is_half_float(dtype) && !gated && out_in && aligned && (1..=GPU_COOP_MAX_M).contains(&m)
}

/// Largest token count the CUDA one-launch FFN takes (2 token tiles of 8), when forced.
pub const GPU_ONE_LAUNCH_MAX_M: usize = 16;

/// Largest token count for which [`choose_kernel`] picks the one-launch FFN. Measured on H100
/// (f16, 512x2048, benchmarks/ffn.md, one run): at M = 1 a tie with the two-launch FFN (10.4 vs
/// 10.3 µs), at M = 4 a loss (13.1 vs 10.7): its cross-block reduction grows with M.
pub const GPU_ONE_LAUNCH_AUTO_MAX_M: usize = 1;

/// Largest first-projection weight (D·H elements) for which [`choose_kernel`] picks the one-launch
/// FFN: it won on 512x2048 (1M) and lost on 768x3072 (13.4 vs 12.9 µs at M = 1) and 4096x11008
/// (111 vs 79 µs) on H100.
pub const GPU_ONE_LAUNCH_MAX_WEIGHTS: usize = 1 << 20;

/// Whether the one-launch kernel can run: CUDA, f16/bf16, both weights stored `[out, in]`, 16-byte
/// aligned loads (D and H multiples of 8, tensor offsets too), 1..=[`GPU_ONE_LAUNCH_MAX_M`] tokens.
fn one_launch_feasible(cuda: bool, dtype: DType, m: usize, out_in: bool, aligned: bool) -> bool {
    cuda && is_half_float(dtype) && out_in && aligned && (1..=GPU_ONE_LAUNCH_MAX_M).contains(&m)
}

/// Whether the two-launch FFN can run: CUDA, f16/bf16, both weights stored `[out, in]`,
/// 1..=[`GPU_SMALL_M_MAX`] tokens (the small-M projection's range; any alignment).
fn two_launches_feasible(cuda: bool, dtype: DType, m: usize, out_in: bool) -> bool {
    cuda && is_half_float(dtype) && out_in && (1..=GPU_SMALL_M_MAX).contains(&m)
}

/// The kernel for an FFN `[m, d] · [d, h1] · [h, o]` (`h1 = 2h` when gated): a pure function of the
/// device kind, dtype, shapes, whether both weights are stored `[out, in]` and whether the 16-byte
/// loads are aligned (D and H multiples of 8, tensor offsets too) and whether the cuBLASLt path is
/// on ([`choose_path`]). Plain FFNs with M <= [`GPU_COOP_MAX_M`] (D·H <= [`GPU_COOP_SMALL_WEIGHTS`] or
/// above [`GPU_COOP_MAX_WEIGHTS`]; M <= [`GPU_COOP_AUTO_MAX_M`] in between) take the cooperative FFN (which also makes the one-launch rule below
/// unreachable: both need aligned `[out, in]` weights). Gated FFNs never take the one-launch forms
/// (the one-launch kernel lost on the only gated shape measured, 4096x11008). Where both projections
/// would run the small-M kernel ([`choose_path`]), they run as [`FfnKernel::TwoLaunches`] (the
/// same kernels as [`FfnKernel::TwoProjections`], one op fewer).
#[allow(clippy::too_many_arguments)]
pub fn choose_kernel(
    cuda: bool,
    dtype: DType,
    m: usize,
    d: usize,
    h1: usize,
    o: usize,
    gated: bool,
    out_in: bool,
    aligned: bool,
    cublaslt: bool,
) -> FfnKernel {
    let dh = d.saturating_mul(h1);
    let small = m <= GPU_ONE_LAUNCH_AUTO_MAX_M && dh <= GPU_ONE_LAUNCH_MAX_WEIGHTS;
    let h = if gated { h1 / 2 } else { h1 };
    let small_m = |k, n, gated| choose_path(cuda, dtype, m, k, n, gated, out_in, cublaslt) == FfnPath::CudaSmallM;
    let coop = if dh <= GPU_COOP_SMALL_WEIGHTS || dh > GPU_COOP_MAX_WEIGHTS {
        m <= GPU_COOP_MAX_M
    } else {
        m <= GPU_COOP_AUTO_MAX_M
    };
    if coop_feasible(cuda, dtype, m, gated, out_in, aligned) && coop {
        FfnKernel::Cooperative
    } else if one_launch_feasible(cuda, dtype, m, out_in, aligned) && small && !gated {
        FfnKernel::OneLaunch
    } else if two_launches_feasible(cuda, dtype, m, out_in) && small_m(d, h1, gated) && small_m(h, o, false) {
        FfnKernel::TwoLaunches
    } else {
        FfnKernel::TwoProjections
    }
}

/// The FFN `epi(x·w1 + b1)·w2 + b2` on `x [m, d]`, `w1` logical `[d, h1]`, `w2` logical `[h, o]`
/// (shapes checked by the callers); `force` overrides [`choose_kernel`] (benches, tests).
pub(crate) fn ffn(
    x: &Tensor,
    w1: &Tensor,
    b1: Option<&Tensor>,
    w2: &Tensor,
    b2: Option<&Tensor>,
    epi: Epilogue,
    force: Option<FfnKernel>,
) -> Result<Tensor> {
    let out_in = |w: &Tensor| weight_layout(w.layout()) == Some(WeightLayout::OutIn);
    let x = x.contiguous()?;
    let (m, d) = x.dims2()?;
    let (h1, h, o) = (w1.dim(1)?, w2.dim(0)?, w2.dim(1)?);
    let offsets = [&x, w1, w2].iter().all(|t| t.layout().start_offset() % 8 == 0);
    let aligned = d % 8 == 0 && h % 8 == 0 && offsets;
    let (cuda, both_out_in) = (x.device().is_cuda(), out_in(w1) && out_in(w2));
    // the small-M kernel switched off (benches): the weights count as not streamable
    let streamable = both_out_in && SMALL_M_KERNEL.load(Ordering::Relaxed);
    let lt = CUBLASLT.load(Ordering::Relaxed);
    let auto = choose_kernel(cuda, x.dtype(), m, d, h1, o, epi.gated(), streamable, aligned, lt);
    let whole = |kernel| {
        let (b1, b2) = (b1.map(Tensor::contiguous).transpose()?, b2.map(Tensor::contiguous).transpose()?);
        let op = FfnOp { w1: w1.clone(), b1, w2: w2.clone(), b2, epi, kernel };
        x.apply_op1_no_bwd(&op)
    };
    match force.unwrap_or(auto) {
        FfnKernel::OneLaunch => {
            if !one_launch_feasible(cuda, x.dtype(), m, both_out_in, aligned) {
                bail!(
                    "fused_ffn: the one-launch kernel needs CUDA f16/bf16, [out, in] weights, D and H multiples \
                     of 8 and 1..={GPU_ONE_LAUNCH_MAX_M} tokens; got {:?} {:?} m={m} d={d} h={h}",
                    x.device().location(),
                    x.dtype()
                );
            }
            whole(FfnKernel::OneLaunch)
        }
        FfnKernel::TwoLaunches => {
            if !two_launches_feasible(cuda, x.dtype(), m, both_out_in) {
                bail!(
                    "fused_ffn: the two-launch FFN needs CUDA f16/bf16, [out, in] weights and 1..={GPU_SMALL_M_MAX} \
                     tokens; got {:?} {:?} m={m}",
                    x.device().location(),
                    x.dtype()
                );
            }
            whole(FfnKernel::TwoLaunches)
        }
        FfnKernel::Cooperative => {
            if !coop_feasible(cuda, x.dtype(), m, epi.gated(), both_out_in, aligned) {
                bail!(
                    "fused_ffn: the cooperative FFN needs CUDA f16/bf16, a plain (not gated) FFN, [out, in] \
                     weights, D and H multiples of 8 and 1..={GPU_COOP_MAX_M} tokens; got {:?} {:?} m={m} d={d} h={h} \
                     gated={}",
                    x.device().location(),
                    x.dtype(),
                    epi.gated()
                );
            }
            whole(FfnKernel::Cooperative)
        }
        FfnKernel::TwoProjections => {
            let hidden = project(&x, w1, b1, epi)?;
            project(&hidden, w2, b2, Epilogue::Act(Activation::Identity))
        }
    }
}

/// What a projection applies to `a = x·W` before its only store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Epilogue {
    /// `act(a + b)`.
    Act(Activation),
    /// `W` holds `[gate | up]` column blocks of width N: `act(a_gate + b_gate) * (a_up + b_up)`.
    Gated(Activation),
}

impl Epilogue {
    fn act(self) -> Activation {
        match self {
            Epilogue::Act(a) | Epilogue::Gated(a) => a,
        }
    }
    fn gated(self) -> bool {
        matches!(self, Epilogue::Gated(_))
    }
}

/// How a projection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnPath {
    /// The fused multithreaded CPU kernel.
    CpuFused,
    /// The CUDA weight-streaming tensor-core kernel (`kernels/ffn.cu`).
    CudaSmallM,
    /// candle's matmul (gemm crate / cuBLAS), then our `bias_act` epilogue.
    MatmulEpilogue,
    /// cuBLASLt GEMMs (`lt.rs`) with the bias (+ ReLU / tanh-GELU) in the GEMM's epilogue; other
    /// activations ([`cublaslt_fusable`]) and the gate run as one vectorized pass after it.
    CublasLt,
}

/// Whether cuBLASLt has an epilogue for `act` after the bias (its GELU is the tanh form).
pub fn cublaslt_fusable(act: Activation) -> bool {
    matches!(act, Activation::Identity | Activation::Relu | Activation::GeluTanh)
}

static CUBLASLT: AtomicBool = AtomicBool::new(true);
static SMALL_M_KERNEL: AtomicBool = AtomicBool::new(true);

/// Turns the [`FfnPath::CudaSmallM`] kernel on or off process-wide (on by default), so benches can
/// time it against cuBLASLt at small M in one run.
#[doc(hidden)]
pub fn set_small_m_kernel(on: bool) {
    SMALL_M_KERNEL.store(on, Ordering::Relaxed);
}

/// Turns the [`FfnPath::CublasLt`] path on or off process-wide (on by default), so benches can time
/// it against candle's matmul + `bias_act` ([`FfnPath::MatmulEpilogue`]) in one run.
#[doc(hidden)]
pub fn set_cublaslt_epilogues(on: bool) {
    CUBLASLT.store(on, Ordering::Relaxed);
}

/// Largest weight (k·n elements) for which the CUDA kernel also takes 17..=32 tokens: with 4
/// token tiles it lost to cuBLAS on 4096x11008 (106 vs 65 µs at M=32, H200) but won on 512x2048
/// (17.5 vs 38.8 µs); up to 16 tokens it won on every measured shape (benchmarks/ffn.md).
pub const GPU_WIDE_TILE_MAX_WEIGHTS: usize = 4 << 20;

/// The path for one projection `[m, k] · [k, n]` (`gated`: `n` counts the gate and up columns): a
/// pure function of the device kind, dtype, token count, weight size, whether the weight is stored
/// `[out, in]` (each output's k contiguous) and whether the cuBLASLt path is on. cuBLASLt won
/// against candle's matmul plus `bias_act` on every measured large-M shape (H100, f16,
/// benchmarks/ffn.md, 4096x11008 M=512: 148 vs 182 µs with both epilogues fused, 161 vs 181 with
/// erf GELU (bias epilogue + activation pass), 238 vs 281 gated (bias epilogue + gate pass)).
/// Gated projections with more than [`GPU_WIDE_TILE_MAX_WEIGHTS`] weights take cuBLASLt at every
/// M: the small-M kernel's gated form lost to it on 4096x11008 (H100, whole SwiGLU FFN: 125.2 vs
/// 109.0 µs at M=1, 116.7 vs 110.3 at M=16).
#[allow(clippy::too_many_arguments)]
pub fn choose_path(
    cuda: bool,
    dtype: DType,
    m: usize,
    k: usize,
    n: usize,
    gated: bool,
    weight_out_in: bool,
    cublaslt: bool,
) -> FfnPath {
    if !cuda {
        return if m <= CPU_FUSED_MAX_M { FfnPath::CpuFused } else { FfnPath::MatmulEpilogue };
    }
    let tensor_core_dtype = is_half_float(dtype);
    let wide = k.saturating_mul(n) > GPU_WIDE_TILE_MAX_WEIGHTS;
    let max_m = if !wide { GPU_SMALL_M_MAX } else { 16 };
    if tensor_core_dtype && gated && wide && cublaslt {
        FfnPath::CublasLt
    } else if tensor_core_dtype && weight_out_in && m <= max_m {
        FfnPath::CudaSmallM
    } else if tensor_core_dtype && cublaslt {
        FfnPath::CublasLt
    } else {
        FfnPath::MatmulEpilogue
    }
}

/// How a `[k, n]`-shaped weight is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightLayout {
    /// Row-major `[k, n]` (the seed layout, `[in, out]`).
    InOut,
    /// A transposed view of a row-major `[n, k]` (candle `Linear`, `[out, in]`).
    OutIn,
}

/// The storage order of the logical `[k, n]` weight `l`, if it is dense one way or the other.
pub(crate) fn weight_layout(l: &Layout) -> Option<WeightLayout> {
    let (dims, stride) = (l.dims(), l.stride());
    if dims.len() != 2 {
        return None;
    }
    let (k, n) = (dims[0], dims[1]);
    // Size-1 dims have arbitrary strides; only the strides of real dims matter.
    let in_out = (k <= 1 || stride[0] == n) && (n <= 1 || stride[1] == 1);
    let out_in = (n <= 1 || stride[1] == k) && (k <= 1 || stride[0] == 1);
    if out_in {
        Some(WeightLayout::OutIn)
    } else if in_out {
        Some(WeightLayout::InOut)
    } else {
        None
    }
}

/// `epilogue(x·w + b)` for `x` `[m, k]`, `w` a logical `[k, n2]` weight (see [`WeightLayout`]),
/// `b` `[n2]`; `n2 = n` or `2n` when gated. Output `[m, n]`. Shapes are checked by the callers.
pub(crate) fn project(x: &Tensor, w: &Tensor, b: Option<&Tensor>, epi: Epilogue) -> Result<Tensor> {
    // Weights that are neither layout (e.g. a strided slice) are made dense; the layers never
    // hit this (their weights are dense at load).
    let w = match weight_layout(w.layout()) {
        Some(_) => w.clone(),
        None => w.contiguous()?,
    };
    let out_in = weight_layout(w.layout()) == Some(WeightLayout::OutIn);
    let x = x.contiguous()?;
    let (k, n2) = w.dims2()?;
    // the small-M kernel streams [out, in] weights; switched off, the weight counts as not streamable
    let streamable = out_in && SMALL_M_KERNEL.load(Ordering::Relaxed);
    let (cuda, lt) = (x.device().is_cuda(), CUBLASLT.load(Ordering::Relaxed));
    let path = choose_path(cuda, x.dtype(), x.dim(0)?, k, n2, epi.gated(), streamable, lt);
    match path {
        FfnPath::CublasLt => match epi {
            Epilogue::Act(act) if cublaslt_fusable(act) => {
                let op = LtOp { act };
                match b {
                    Some(b) => x.apply_op3_no_bwd(&w, &b.contiguous()?, &op),
                    None => x.apply_op2_no_bwd(&w, &op),
                }
            }
            // cuBLASLt adds the bias in its epilogue (f32, one rounding); one activation pass follows
            // (in place), or the gate pass (act(gate) * up, one output) over the whole [gate | up] GEMM
            Epilogue::Act(act) => {
                let h = lt_bias(&x, &w, b)?;
                h.inplace_op1(&ActPass { act })?;
                Ok(h)
            }
            Epilogue::Gated(act) => lt_bias(&x, &w, b)?.apply_op1_no_bwd(&GatePass { act }),
        },
        FfnPath::CpuFused | FfnPath::CudaSmallM => {
            let op = ProjOp { epi };
            match b {
                Some(b) => x.apply_op3_no_bwd(&w, &b.contiguous()?, &op),
                None => x.apply_op2_no_bwd(&w, &op),
            }
        }
        FfnPath::MatmulEpilogue => match epi {
            Epilogue::Act(Activation::Identity) if b.is_none() => x.matmul(&w),
            Epilogue::Act(act) => bias_act(&x.matmul(&w)?, b, act),
            Epilogue::Gated(act) => gated(&w, b, act, |w| x.matmul(w)),
        },
    }
}

/// `x·w + b` through cuBLASLt, the bias (if any) in its epilogue.
fn lt_bias(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let op = LtOp { act: Activation::Identity };
    match b {
        Some(b) => x.apply_op3_no_bwd(w, &b.contiguous()?, &op),
        None => x.apply_op2_no_bwd(w, &op),
    }
}

/// The gated epilogue after two GEMMs (`matmul`) on the gate and up halves of `w` (views, no
/// copy), as stock does: `act(x·w_gate + b_gate) * (x·w_up + b_up)`.
fn gated(
    w: &Tensor,
    b: Option<&Tensor>,
    act: Activation,
    matmul: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let n = w.dim(1)? / 2;
    let (bg, bu) = match b {
        Some(b) => (Some(b.narrow(0, 0, n)?), Some(b.narrow(0, n, n)?)),
        None => (None, None),
    };
    let g = bias_act(&matmul(&w.narrow(1, 0, n)?)?, bg.as_ref(), act)?;
    let u = matmul(&w.narrow(1, n, n)?)?;
    let u = match bu {
        Some(bu) => bias_act(&u, Some(&bu), Activation::Identity)?,
        None => u,
    };
    g * u
}

/// `x` as `[M, D]` plus its leading dims; `x` must have rank >= 2 and a supported float dtype.
pub(crate) fn flatten_tokens(x: &Tensor, op: &'static str) -> Result<(Tensor, Vec<usize>)> {
    if x.rank() < 2 {
        bail!("{op}: x has shape {:?}; expected rank >= 2 ([M, D] or [B, N, D])", x.dims());
    }
    if !is_supported_float(x.dtype()) {
        return Err(candle_core::Error::UnsupportedDTypeForOp(x.dtype(), op));
    }
    let dims = x.dims();
    let d = dims[dims.len() - 1];
    let lead = dims[..dims.len() - 1].to_vec();
    if lead.len() == 1 {
        return Ok((x.clone(), lead)); // already [M, D]: no new tensor
    }
    let m = lead.iter().product::<usize>();
    Ok((x.reshape((m, d))?, lead))
}

/// `y` `[M, O]` back to `[lead..., O]`.
pub(crate) fn unflatten_tokens(y: Tensor, lead: &[usize]) -> Result<Tensor> {
    if lead.len() == 1 {
        return Ok(y); // `[M, O]` already
    }
    let mut dims = lead.to_vec();
    dims.push(y.dim(1)?);
    y.reshape(dims)
}

/// `w` must be a rank-2 `[rows, _]` tensor with x's dtype and device.
pub(crate) fn check_weight(x: &Tensor, w: &Tensor, name: &str, rows: usize, rows_what: &str) -> Result<()> {
    if w.rank() != 2 || w.dim(0)? != rows {
        bail!("{name} has shape {:?}; expected [{rows}, _] (rows = {rows_what})", w.dims());
    }
    check_same(x, w, name)
}

/// `b`, if given, must be a `[len]` vector with x's dtype and device.
pub(crate) fn check_bias(x: &Tensor, b: Option<&Tensor>, name: &str, len: usize) -> Result<()> {
    let Some(b) = b else { return Ok(()) };
    if b.dims() != [len] {
        bail!("{name} has shape {:?}; expected [{len}]", b.dims());
    }
    check_same(x, b, name)
}

fn check_same(x: &Tensor, t: &Tensor, name: &str) -> Result<()> {
    if t.dtype() != x.dtype() {
        bail!("{name} dtype {:?} differs from x dtype {:?}", t.dtype(), x.dtype());
    }
    if !t.device().same_device(x.device()) {
        bail!("{name} is on {:?} but x is on {:?}", t.device().location(), x.device().location());
    }
    Ok(())
}

/// One projection as a candle op: inputs `x [m, k]` (contiguous), `w` logical `[k, n2]` (dense
/// [`WeightLayout`]), optional `b [n2]`.
struct ProjOp {
    epi: Epilogue,
}

impl ProjOp {
    fn out_shape(&self, x: &Layout, w: &Layout) -> Shape {
        let n2 = w.dims()[1];
        let n = if self.epi.gated() { n2 / 2 } else { n2 };
        Shape::from((x.dims()[0], n))
    }

    fn cpu(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = self.out_shape(x.1, w.1);
        let out = dispatch_float!(x.0.dtype(), "fused_ffn", cpu_dispatch(self.epi, x, w, b))?;
        Ok((out, shape))
    }
}

fn cpu_dispatch<T: cpu::RowToF32>(
    epi: Epilogue,
    x: (&CpuStorage, &Layout),
    w: (&CpuStorage, &Layout),
    b: Option<(&CpuStorage, &Layout)>,
) -> Result<CpuStorage> {
    let layout = weight_layout(w.1).ok_or_else(|| candle_core::Error::RequiresContiguous { op: "fused_ffn" }.bt())?;
    let (m, k) = (x.1.dims()[0], x.1.dims()[1]);
    let n2 = w.1.dims()[1];
    let xs = crate::cpu::contiguous::<T>(x.0, x.1)?;
    let start = w.1.start_offset();
    let ws = &w.0.as_slice::<T>()?[start..start + k * n2];
    let bs = b.map(|(s, l)| crate::cpu::contiguous::<T>(s, l)).transpose()?;
    let shape = cpu::Shape { m, k, n2, layout };
    Ok(T::to_cpu_storage_owned(cpu::project(xs, ws, bs, shape, epi)))
}

impl CustomOp2 for ProjOp {
    fn name(&self) -> &'static str {
        "fused_ffn"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu((s1, l1), (s2, l2), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = cuda::fwd(self.epi, (s1, l1), (s2, l2), None)?;
        Ok((out, self.out_shape(l1, l2)))
    }
}

impl CustomOp3 for ProjOp {
    fn name(&self) -> &'static str {
        "fused_ffn"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu((s1, l1), (s2, l2), Some((s3, l3)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = cuda::fwd(self.epi, (s1, l1), (s2, l2), Some((s3, l3)))?;
        Ok((out, self.out_shape(l1, l2)))
    }
}

/// One projection through cuBLASLt with the bias + activation in its epilogue (`lt.rs`); the CPU
/// side (never chosen by [`choose_path`]) is the fused CPU projection.
struct LtOp {
    act: Activation,
}

impl CustomOp2 for LtOp {
    fn name(&self) -> &'static str {
        "fused_ffn"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        ProjOp { epi: Epilogue::Act(self.act) }.cpu((s1, l1), (s2, l2), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = lt::fwd(self.act, (s1, l1), (s2, l2), None)?;
        Ok((out, Shape::from((l1.dims()[0], l2.dims()[1]))))
    }
}

impl CustomOp3 for LtOp {
    fn name(&self) -> &'static str {
        "fused_ffn"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        ProjOp { epi: Epilogue::Act(self.act) }.cpu((s1, l1), (s2, l2), Some((s3, l3)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = lt::fwd(self.act, (s1, l1), (s2, l2), Some((s3, l3)))?;
        Ok((out, Shape::from((l1.dims()[0], l2.dims()[1]))))
    }
}

/// `h = act(h)` in place: the activation pass after a cuBLASLt GEMM whose epilogue added the bias
/// (for activations cuBLASLt has no epilogue for). Math in f32, one rounding.
struct ActPass {
    act: Activation,
}

fn act_pass_cpu<T: CpuFloat>(v: &mut [T], l: &Layout, act: Activation) -> Result<()> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("fused_ffn: the activation pass needs a contiguous tensor, got strides {:?}", l.stride());
    };
    for e in &mut v[start..end] {
        *e = T::from_f32(act.apply_f32(e.to_f32()));
    }
    Ok(())
}

impl InplaceOp1 for ActPass {
    fn name(&self) -> &'static str {
        "fused_ffn"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        match s {
            CpuStorage::F32(v) => act_pass_cpu(v, l, self.act),
            CpuStorage::F16(v) => act_pass_cpu(v, l, self.act),
            CpuStorage::BF16(v) => act_pass_cpu(v, l, self.act),
            s => Err(candle_core::Error::UnsupportedDTypeForOp(s.dtype(), "fused_ffn (activation pass)")),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &mut candle_core::CudaStorage, l: &Layout) -> Result<()> {
        cuda::act_inplace(self.act, s, l)
    }
}

/// `y [m, n] = act(h[:, ..n]) * h[:, n..]` for `h [m, 2n]` (`[gate | up]` after a cuBLASLt GEMM
/// whose epilogue added the bias). Math in f32, one rounding.
struct GatePass {
    act: Activation,
}

impl GatePass {
    fn cpu_t<T: CpuFloat>(&self, s: &CpuStorage, l: &Layout) -> Result<Vec<T>> {
        let h = crate::cpu::contiguous::<T>(s, l)?;
        let n = l.dims()[1] / 2;
        let mut y = Vec::with_capacity(l.dims()[0] * n);
        for row in h.chunks_exact(2 * n.max(1)).take(l.dims()[0]) {
            let (g, u) = row.split_at(n);
            y.extend(g.iter().zip(u).map(|(g, u)| T::from_f32(self.act.apply_f32(g.to_f32()) * u.to_f32())));
        }
        Ok(y)
    }
}

impl CustomOp1 for GatePass {
    fn name(&self) -> &'static str {
        "fused_ffn"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = Shape::from((l.dims()[0], l.dims()[1] / 2));
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(self.cpu_t(s, l)?),
            CpuStorage::F16(_) => CpuStorage::F16(self.cpu_t(s, l)?),
            CpuStorage::BF16(_) => CpuStorage::BF16(self.cpu_t(s, l)?),
            s => return Err(candle_core::Error::UnsupportedDTypeForOp(s.dtype(), "fused_ffn (gate pass)")),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = cuda::gate_fwd(self.act, (s, l))?;
        Ok((out, Shape::from((l.dims()[0], l.dims()[1] / 2))))
    }
}

/// The whole FFN as one candle op on `x [m, d]` (contiguous); the weights ride in the op and are
/// read through their storages. CUDA: the one-launch kernel or the two launches of the small-M
/// projection; CPU: the two fused CPU projections.
struct FfnOp {
    w1: Tensor,
    b1: Option<Tensor>,
    w2: Tensor,
    b2: Option<Tensor>,
    epi: Epilogue,
    /// [`FfnKernel::OneLaunch`], [`FfnKernel::TwoLaunches`] or [`FfnKernel::Cooperative`] (CUDA; the
    /// CPU runs two projections).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    kernel: FfnKernel,
}

impl CustomOp1 for FfnOp {
    fn name(&self) -> &'static str {
        "fused_ffn"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn cpu(st: &Storage) -> Result<&CpuStorage> {
            match st {
                Storage::Cpu(c) => Ok(c),
                _ => bail!("fused_ffn: x is on the CPU, a weight is not"),
            }
        }
        let (w1, w1l) = self.w1.storage_and_layout();
        let (w2, w2l) = self.w2.storage_and_layout();
        let (b1, b2) =
            (self.b1.as_ref().map(Tensor::storage_and_layout), self.b2.as_ref().map(Tensor::storage_and_layout));
        let b1 = b1.as_ref().map(|(b, bl)| Ok::<_, candle_core::Error>((cpu(b)?, *bl))).transpose()?;
        let b2 = b2.as_ref().map(|(b, bl)| Ok::<_, candle_core::Error>((cpu(b)?, *bl))).transpose()?;
        let (hidden, hidden_shape) = ProjOp { epi: self.epi }.cpu((s, l), (cpu(&w1)?, w1l), b1)?;
        let hidden_layout = Layout::contiguous(hidden_shape);
        ProjOp { epi: Epilogue::Act(Activation::Identity) }.cpu((&hidden, &hidden_layout), (cpu(&w2)?, w2l), b2)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        fn gpu(st: &Storage) -> Result<&candle_core::CudaStorage> {
            match st {
                Storage::Cuda(c) => Ok(c),
                _ => bail!("fused_ffn: x is on a CUDA device, a weight is not"),
            }
        }
        let (w1, w1l) = self.w1.storage_and_layout();
        let (w2, w2l) = self.w2.storage_and_layout();
        let (b1, b2) =
            (self.b1.as_ref().map(Tensor::storage_and_layout), self.b2.as_ref().map(Tensor::storage_and_layout));
        let b1 = b1.as_ref().map(|(b, bl)| Ok::<_, candle_core::Error>((gpu(b)?, *bl))).transpose()?;
        let b2 = b2.as_ref().map(|(b, bl)| Ok::<_, candle_core::Error>((gpu(b)?, *bl))).transpose()?;
        let (w1, w2) = ((gpu(&w1)?, w1l), (gpu(&w2)?, w2l));
        let out = cuda::whole_fwd(self.kernel, self.epi, (s, l), w1, b1, w2, b2)?;
        Ok((out, Shape::from((l.dims()[0], w2l.dims()[1]))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_by_device_dtype_and_m() {
        let (k, n) = (512, 2048);
        assert_eq!(choose_path(false, DType::F32, 1, k, n, false, false, false), FfnPath::CpuFused);
        assert_eq!(choose_path(false, DType::F16, CPU_FUSED_MAX_M, k, n, false, true, false), FfnPath::CpuFused);
        assert_eq!(
            choose_path(false, DType::F32, CPU_FUSED_MAX_M + 1, k, n, false, true, false),
            FfnPath::MatmulEpilogue
        );
        assert_eq!(choose_path(true, DType::F16, 1, k, n, false, true, false), FfnPath::CudaSmallM);
        assert_eq!(choose_path(true, DType::BF16, GPU_SMALL_M_MAX, k, n, false, true, false), FfnPath::CudaSmallM);
        assert_eq!(
            choose_path(true, DType::F16, GPU_SMALL_M_MAX + 1, k, n, false, true, false),
            FfnPath::MatmulEpilogue
        );
        // f32 has no 16-bit tensor-core mma; [in, out] storage can't be streamed row by row
        assert_eq!(choose_path(true, DType::F32, 1, k, n, false, true, false), FfnPath::MatmulEpilogue);
        assert_eq!(choose_path(true, DType::F16, 1, k, n, false, false, false), FfnPath::MatmulEpilogue);
    }

    #[test]
    fn cublaslt_for_large_m() {
        let (k, n) = (4096, 11008);
        assert_eq!(choose_path(true, DType::F16, 512, k, n, false, true, true), FfnPath::CublasLt);
        assert_eq!(choose_path(true, DType::BF16, 33, k, n, false, false, true), FfnPath::CublasLt);
        // switched off (benches): candle's matmul + bias_act
        assert_eq!(choose_path(true, DType::F16, 512, k, n, false, true, false), FfnPath::MatmulEpilogue);
        assert_eq!(choose_path(true, DType::F32, 512, k, n, false, true, true), FfnPath::MatmulEpilogue);
        assert_eq!(choose_path(true, DType::F16, 1, k, n, false, true, true), FfnPath::CudaSmallM);
        assert_eq!(choose_path(false, DType::F16, 512, k, n, false, true, true), FfnPath::MatmulEpilogue);
        assert!(cublaslt_fusable(Activation::GeluTanh) && !cublaslt_fusable(Activation::Gelu));
    }

    #[test]
    fn big_gated_weights_take_cublaslt() {
        let (k, n2) = (4096, 2 * 11008);
        assert_eq!(choose_path(true, DType::F16, 1, k, n2, true, true, true), FfnPath::CublasLt);
        assert_eq!(choose_path(true, DType::BF16, 16, k, n2, true, true, true), FfnPath::CublasLt);
        // cuBLASLt switched off (benches), small gated weights, plain projections: the kernel
        assert_eq!(choose_path(true, DType::F16, 1, k, n2, true, true, false), FfnPath::CudaSmallM);
        assert_eq!(choose_path(true, DType::F16, 1, 512, 2 * 1376, true, true, true), FfnPath::CudaSmallM);
        assert_eq!(choose_path(true, DType::F16, 1, 11008, 4096, false, true, true), FfnPath::CudaSmallM);
        // f32 and the CPU are unchanged
        assert_eq!(choose_path(true, DType::F32, 1, k, n2, true, true, true), FfnPath::MatmulEpilogue);
        assert_eq!(choose_path(false, DType::F16, 1, k, n2, true, true, true), FfnPath::CpuFused);
    }

    #[test]
    fn big_weights_take_the_kernel_up_to_16_tokens() {
        let (k, n) = (4096, 11008);
        assert_eq!(choose_path(true, DType::F16, 16, k, n, false, true, false), FfnPath::CudaSmallM);
        assert_eq!(choose_path(true, DType::F16, 17, k, n, false, true, false), FfnPath::MatmulEpilogue);
        assert_eq!(choose_path(true, DType::F16, 32, 1024, 4096, false, true, false), FfnPath::CudaSmallM);
    }

    #[test]
    fn cooperative_for_small_cuda_ffns() {
        let (d, h) = (512, 2048);
        let k =
            |m, d, h, gated, out_in, aligned| choose_kernel(true, DType::F16, m, d, h, d, gated, out_in, aligned, true);
        for m in 1..=GPU_COOP_AUTO_MAX_M {
            assert_eq!(k(m, d, h, false, true, true), FfnKernel::Cooperative, "m={m}");
            assert_eq!(k(m, 768, 3072, false, true, true), FfnKernel::Cooperative, "m={m}");
        }
        assert_eq!(choose_kernel(true, DType::BF16, 1, d, h, d, false, true, true, true), FfnKernel::Cooperative);
        assert_eq!(k(1, 1024, 4096, false, true, true), FfnKernel::Cooperative);
        // weights up to GPU_COOP_SMALL_WEIGHTS: the cooperative FFN up to 16 tokens
        for m in [GPU_COOP_AUTO_MAX_M + 1, 7, GPU_COOP_MAX_M] {
            assert_eq!(k(m, d, h, false, true, true), FfnKernel::Cooperative, "m={m}");
        }
        assert_eq!(k(GPU_COOP_MAX_M + 1, d, h, false, true, true), FfnKernel::TwoLaunches);
        // past the cooperative rule, the small-M kernels from one op
        assert_eq!(k(GPU_COOP_AUTO_MAX_M + 1, 768, 3072, false, true, true), FfnKernel::TwoLaunches);
        // big weights: the cooperative FFN up to 16 tokens, then two launches
        assert_eq!(k(1, 1024, 4104, false, true, true), FfnKernel::Cooperative);
        assert_eq!(k(16, 4096, 11008, false, true, true), FfnKernel::Cooperative);
        assert_eq!(k(GPU_COOP_MAX_M + 1, 1024, 4104, false, true, true), FfnKernel::TwoProjections);
        assert_eq!(k(GPU_COOP_MAX_M + 1, 1024, 4096, false, true, true), FfnKernel::TwoLaunches);
        assert_eq!(k(8, 1024, 4096, false, true, true), FfnKernel::TwoLaunches);
        assert_eq!(k(0, d, h, false, true, true), FfnKernel::TwoProjections);
        // CPU, f32, [in, out] weights: the two-projection paths; unaligned rows, gated: two launches
        assert_eq!(choose_kernel(false, DType::F16, 1, d, h, d, false, true, true, true), FfnKernel::TwoProjections);
        assert_eq!(choose_kernel(true, DType::F32, 1, d, h, d, false, true, true, true), FfnKernel::TwoProjections);
        assert_eq!(k(1, d, h, false, false, true), FfnKernel::TwoProjections);
        assert_eq!(k(1, d, h, false, true, false), FfnKernel::TwoLaunches);
        assert_eq!(k(1, d, 2 * h, true, true, true), FfnKernel::TwoLaunches);
        // what a forced launch accepts
        assert!(coop_feasible(true, DType::BF16, GPU_COOP_MAX_M, false, true, true));
        assert!(!coop_feasible(true, DType::F16, GPU_COOP_MAX_M + 1, false, true, true));
        assert!(!coop_feasible(true, DType::F16, 1, true, true, true));
        assert!(!coop_feasible(true, DType::F16, 1, false, true, false));
        assert!(!coop_feasible(false, DType::F16, 1, false, true, true));
    }

    #[test]
    fn one_launch_feasibility() {
        // what a forced launch accepts
        assert!(one_launch_feasible(true, DType::F16, GPU_ONE_LAUNCH_MAX_M, true, true));
        assert!(!one_launch_feasible(true, DType::F16, GPU_ONE_LAUNCH_MAX_M + 1, true, true));
    }

    #[test]
    fn two_launches_where_both_projections_take_the_small_m_kernel() {
        let k = |m, d, h, o| choose_kernel(true, DType::F16, m, d, h, o, false, true, true, true);
        assert_eq!(k(16, 4096, 11008, 4096), FfnKernel::Cooperative);
        assert_eq!(
            choose_kernel(true, DType::F16, 16, 4096, 11008, 4096, false, true, false, true),
            FfnKernel::TwoLaunches
        );
        // big weights take the small-M kernel up to 16 tokens only (choose_path)
        assert_eq!(k(17, 4096, 11008, 4096), FfnKernel::TwoProjections);
        assert_eq!(k(GPU_SMALL_M_MAX, 512, 2048, 512), FfnKernel::TwoLaunches);
        assert_eq!(k(GPU_SMALL_M_MAX + 1, 512, 2048, 512), FfnKernel::TwoProjections);
        // a small first projection but a big second one
        assert_eq!(k(32, 512, 2048, 4096), FfnKernel::TwoProjections);
        // gated with big weights: cuBLASLt for the gate/up projection, so two projections
        let g = |m, cublaslt| choose_kernel(true, DType::F16, m, 4096, 22016, 4096, true, true, true, cublaslt);
        assert_eq!(g(1, true), FfnKernel::TwoProjections);
        assert_eq!(g(1, false), FfnKernel::TwoLaunches);
        assert!(two_launches_feasible(true, DType::BF16, GPU_SMALL_M_MAX, true));
        assert!(!two_launches_feasible(true, DType::BF16, 0, true));
        assert!(!two_launches_feasible(true, DType::F16, 1, false));
    }

    #[test]
    fn weight_layouts() {
        let dev = candle_core::Device::Cpu;
        let w = Tensor::zeros((6, 4), DType::F32, &dev).unwrap();
        assert_eq!(weight_layout(w.layout()), Some(WeightLayout::InOut));
        assert_eq!(weight_layout(w.t().unwrap().layout()), Some(WeightLayout::OutIn));
        let sliced = w.narrow(1, 0, 3).unwrap();
        assert_eq!(weight_layout(sliced.layout()), None);
        let col = Tensor::zeros((1, 5), DType::F32, &dev).unwrap();
        assert!(weight_layout(col.layout()).is_some());
    }
}
