//! Fused attention, `softmax(Q·Kᵀ·scale + mask)·V`, in one pass without the `Nq × Nk` matrix:
//! causal masking (bottom-right aligned), GQA/MQA, `Nq != Nk` (KV-cache decode) and attention
//! dropout. CPU: tiled online softmax over rayon ([`cpu`]). CUDA (`kernels/attention.cu`):
//! FlashAttention-2-style prefill with `mma.sync` tensor cores for f16/bf16, a one-launch
//! one-query decode kernel for f16/bf16 (`kernels/attention_decode.cu`) and split-KV
//! ("flash-decoding") for other short queries and f32. On H100/H200 the prefill takes a
//! FlashAttention-3-style wgmma kernel (`kernels/attention_sm90.cu`) where it applies (see
//! [`hopper_prefill_available`]).

mod config;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod philox;
mod sm90;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};

use crate::cpu::{dispatch_float, is_supported_float};

/// Smallest supported head dim.
pub const MIN_HEAD_DIM: usize = 32;
/// Largest supported head dim.
pub const MAX_HEAD_DIM: usize = 256;
/// Supported head dims are the multiples of this in `MIN_HEAD_DIM..=MAX_HEAD_DIM`.
pub const HEAD_DIM_MULTIPLE: usize = 8;

/// Attention dropout: each attention weight is zeroed with probability `p` and the kept ones are
/// scaled by `1 / (1 - p)`. The mask is a pure function of `seed` and the position
/// `(batch, query head, query, key)` (Philox4x32-10, see [`philox`]), identical on the CPU and on
/// CUDA, so a seed reproduces the same output on every run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Drop probability, in `[0, 1)`.
    pub p: f32,
    /// RNG seed.
    pub seed: u64,
}

/// Options of [`fused_attention_with`]. `Default`: not causal, scale `1/√D`, no dropout.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AttentionConfig {
    /// Mask keys after the query. With `Nq != Nk` the mask is aligned bottom-right, as in
    /// FlashAttention: query `i` sees keys `0..=i + Nk - Nq` (a query with no visible key gives 0).
    pub causal: bool,
    /// Multiplies `Q·Kᵀ` before the softmax; `None` means `1/√D`.
    pub softmax_scale: Option<f32>,
    /// Attention dropout; `None` (or `p = 0`) costs nothing.
    pub dropout: Option<Dropout>,
}

impl AttentionConfig {
    /// The scale applied to `Q·Kᵀ` for head dim `d`.
    pub fn scale(&self, d: usize) -> f32 {
        self.softmax_scale.unwrap_or(1.0 / (d as f32).sqrt())
    }

    /// The dropout that actually applies (`p = 0` is none).
    fn active_dropout(&self) -> Option<Dropout> {
        self.dropout.filter(|d| d.p > 0.0)
    }
}

/// `softmax(Q·Kᵀ/√D [+ causal mask])·V` for `q [B, H, Nq, D]`, `k, v [B, Hkv, Nk, D]`: the seed
/// project's call. See [`fused_attention_with`] for what it accepts.
///
/// ```
/// use candle_core::{Device, Tensor};
/// # fn main() -> candle_core::Result<()> {
/// let q = Tensor::randn(0f32, 1.0, (1, 8, 100, 64), &Device::Cpu)?;
/// let k = Tensor::randn(0f32, 1.0, (1, 8, 100, 64), &Device::Cpu)?;
/// let v = Tensor::randn(0f32, 1.0, (1, 8, 100, 64), &Device::Cpu)?;
/// let o = tiny_gemm::fused_attention(&q, &k, &v, true)?;
/// let stock = tiny_gemm::reference::attention(&q, &k, &v, &tiny_gemm::AttentionConfig { causal: true, ..Default::default() })?;
/// assert!((o - stock)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
/// # Ok(()) }
/// ```
pub fn fused_attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    fused_attention_with(q, k, v, &AttentionConfig { causal, ..Default::default() })
}

/// Fused attention with options. `q [B, Hq, Nq, D]`, `k, v [B, Hkv, Nk, D]` with `Hq % Hkv == 0`
/// (GQA/MQA: query head `h` uses kv head `h / (Hq / Hkv)`), `Nk >= 1`, `D` a multiple of 8 in
/// `32..=256`, dtype f32/f16/bf16 (all three the same, on one device). Returns `[B, Hq, Nq, D]`
/// in q's dtype. Inputs may be strided (e.g. a transposed `[B, N, H, D]`): strides are passed to
/// the kernels when the last dim is contiguous, otherwise the input is copied first. Math in f32.
pub fn fused_attention_with(q: &Tensor, k: &Tensor, v: &Tensor, cfg: &AttentionConfig) -> Result<Tensor> {
    let prob = validate(q, k, v, cfg)?;
    if q.elem_count() == 0 {
        // the output has q's shape, dtype and device, and no elements
        return Ok(q.clone());
    }
    let (q, k, v) = (kernel_layout(q)?, kernel_layout(k)?, kernel_layout(v)?);
    q.apply_op3_no_bwd(&k, &v, &FusedAttention { prob })
}

/// Whether CUDA prefill on `device` can run the Hopper (sm_90a, wgmma) kernel: a compute
/// capability 9.0 GPU (H100, H200) in a `cuda` build. It then takes f16/bf16 calls with D = 64 or
/// 128, no dropout, more than 16 queries (unless their keys are split over several blocks) and more
/// than 128 queries or keys; the rest run the portable kernels. Always `false` on the CPU.
pub fn hopper_prefill_available(device: &Device) -> Result<bool> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => sm90::is_sm90(dev),
        _ => Ok(false),
    }
}

/// The dropout mask [`fused_attention_with`] applies, as a `[B, Hq, Nq, Nk]` f32 tensor of
/// `0` (dropped) and `1 / (1 - p)` (kept). For tests and [`crate::reference::attention`].
pub fn dropout_mask(dropout: Dropout, b: usize, hq: usize, nq: usize, nk: usize, device: &Device) -> Result<Tensor> {
    let threshold = philox::drop_threshold(dropout.p);
    let keep_scale = 1.0 / (1.0 - dropout.p);
    let mut mask = Vec::with_capacity(b * hq * nq * nk);
    for bi in 0..b as u32 {
        for h in 0..hq as u32 {
            for i in 0..nq as u32 {
                for j in 0..nk as u32 {
                    let bits = philox::dropout_bits(dropout.seed, bi, h, i, j);
                    mask.push(if bits >= threshold { keep_scale } else { 0.0 });
                }
            }
        }
    }
    Tensor::from_vec(mask, (b, hq, nq, nk), device)
}

/// Shapes and options of one call, validated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Problem {
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
    pub scale: f32,
    pub causal: bool,
    pub dropout: Option<Dropout>,
}

impl Problem {
    /// Query `i` sees keys `j <= i + causal_offset` when causal.
    pub fn causal_offset(&self) -> i64 {
        self.nk as i64 - self.nq as i64
    }

    pub fn out_dims(&self) -> [usize; 4] {
        [self.b, self.hq, self.nq, self.d]
    }
}

fn dims4(t: &Tensor, name: &str) -> Result<[usize; 4]> {
    match *t.dims() {
        [b, h, n, d] => Ok([b, h, n, d]),
        _ => bail!("fused_attention: {name} must have rank 4 [B, H, N, D], got shape {:?}", t.dims()),
    }
}

fn validate(q: &Tensor, k: &Tensor, v: &Tensor, cfg: &AttentionConfig) -> Result<Problem> {
    let [b, hq, nq, d] = dims4(q, "q")?;
    let [bk, hkv, nk, dk] = dims4(k, "k")?;
    if !is_supported_float(q.dtype()) {
        return Err(candle_core::Error::UnsupportedDTypeForOp(q.dtype(), "fused_attention"));
    }
    for (name, t) in [("k", k), ("v", v)] {
        if t.dtype() != q.dtype() {
            bail!("fused_attention: {name} dtype {:?} differs from q dtype {:?}", t.dtype(), q.dtype());
        }
        if !t.device().same_device(q.device()) {
            bail!("fused_attention: {name} is on {:?} but q is on {:?}", t.device().location(), q.device().location());
        }
    }
    if v.dims() != k.dims() {
        bail!("fused_attention: v has shape {:?}, expected the shape of k {:?}", v.dims(), k.dims());
    }
    if bk != b {
        bail!("fused_attention: batch mismatch: q has B={b}, k and v have B={bk}");
    }
    if dk != d {
        bail!("fused_attention: head dim mismatch: q has D={d}, k and v have D={dk}");
    }
    if hkv == 0 || hq % hkv != 0 {
        bail!("fused_attention: q heads Hq={hq} must be a multiple of k/v heads Hkv={hkv}");
    }
    if !(MIN_HEAD_DIM..=MAX_HEAD_DIM).contains(&d) || d % HEAD_DIM_MULTIPLE != 0 {
        bail!(
            "fused_attention: head dim D={d} is not supported: D must be a multiple of {HEAD_DIM_MULTIPLE} in \
             {MIN_HEAD_DIM}..={MAX_HEAD_DIM}"
        );
    }
    if nk == 0 {
        bail!("fused_attention: k and v have no keys (Nk = 0)");
    }
    let scale = cfg.scale(d);
    if !scale.is_finite() {
        bail!("fused_attention: softmax_scale {scale} is not finite");
    }
    if let Some(dropout) = cfg.dropout {
        if !(0.0..1.0).contains(&dropout.p) {
            bail!("fused_attention: dropout p={} is outside [0, 1)", dropout.p);
        }
    }
    for (name, n) in [("Nq", nq), ("Nk", nk), ("B", b), ("Hq", hq)] {
        if n > i32::MAX as usize / 2 {
            bail!("fused_attention: {name}={n} is too large");
        }
    }
    Ok(Problem { b, hq, hkv, nq, nk, d, scale, causal: cfg.causal, dropout: cfg.active_dropout() })
}

/// Kernels read `[B, H, N, D]` with any B/H/N strides but a unit D stride, and (CUDA) load rows
/// in 16-byte vectors, so the offset and strides must be multiples of 8 elements. Anything else
/// is copied to a contiguous tensor first.
fn kernel_layout(t: &Tensor) -> Result<Tensor> {
    fn ok(t: &Tensor) -> bool {
        let l = t.layout();
        let s = l.stride();
        s[3] == 1 && [l.start_offset(), s[0], s[1], s[2]].iter().all(|&x| x % HEAD_DIM_MULTIPLE == 0)
    }
    if ok(t) {
        return Ok(t.clone());
    }
    let c = t.contiguous()?;
    if ok(&c) {
        Ok(c)
    } else {
        t.copy()
    }
}

/// Element strides of a `[B, H, N, D]` operand (D stride 1) and its start offset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strides {
    pub offset: usize,
    pub b: usize,
    pub h: usize,
    pub n: usize,
}

impl Strides {
    pub fn of(l: &Layout) -> Self {
        let s = l.stride();
        Self { offset: l.start_offset(), b: s[0], h: s[1], n: s[2] }
    }
}

struct FusedAttention {
    prob: Problem,
}

fn cpu_fwd_t<T: crate::cpu::CpuFloat>(
    prob: &Problem,
    q: (&CpuStorage, &Layout),
    k: (&CpuStorage, &Layout),
    v: (&CpuStorage, &Layout),
) -> Result<CpuStorage> {
    fn operand<'a, T: crate::cpu::CpuFloat>((s, l): (&'a CpuStorage, &Layout)) -> Result<cpu::Operand<'a, T>> {
        Ok(cpu::Operand { data: s.as_slice::<T>()?, strides: Strides::of(l) })
    }
    let out = cpu::forward(prob, operand(q)?, operand(k)?, operand(v)?);
    Ok(T::to_cpu_storage_owned(out))
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused_attention"
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
        let p = &self.prob;
        let out = dispatch_float!(s1.dtype(), "fused_attention", cpu_fwd_t(p, (s1, l1), (s2, l2), (s3, l3)))?;
        Ok((out, Shape::from(p.out_dims().to_vec())))
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
        cuda::fwd(&self.prob, (s1, l1), (s2, l2), (s3, l3))
    }
}
