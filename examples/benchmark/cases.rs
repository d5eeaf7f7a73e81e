//! The benchmarked ops, each as a `Case`: one sweep point with its stock-candle baseline and our
//! variants, the FLOPs and the fewest bytes one call must move (for TFLOP/s and GB/s).

use candle_core::{DType, Device, Result, Tensor};

use crate::harness::rotation;

/// What the sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum Mode {
    /// Prefill of one sequence of N tokens (the seed's `seq_length` mode).
    SeqLength,
    /// One decode step for a batch of B sequences, each with `--context` cached tokens.
    BatchSize,
}

/// Model dimensions shared by every op (the seed's: d_model 512, 8 heads, hidden 2048).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Dims {
    pub d_model: usize,
    pub heads: usize,
    pub hidden: usize,
    /// Cached tokens per sequence in `batch_size` mode.
    pub context: usize,
    /// INT4 group size.
    pub group_size: usize,
}

impl Dims {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }
}

/// One call of one implementation; the argument picks the rotated input set.
pub type Run = Box<dyn FnMut(usize) -> Result<()>>;

/// One implementation of an op at one sweep point.
pub struct Variant {
    pub name: &'static str,
    pub run: Run,
}

/// One sweep point of one op. The first variant is the stock-candle baseline.
pub struct Case {
    pub op: &'static str,
    pub x: usize,
    pub shape: String,
    pub flops: f64,
    pub bytes: f64,
    pub sets: usize,
    pub variants: Vec<Variant>,
}

/// Fresh normal inputs of `shape`, rounded to `dtype`, scaled by `std`.
pub fn randn(shape: &[usize], std: f64, dtype: DType, dev: &Device) -> Result<Tensor> {
    (Tensor::randn(0f32, 1.0, shape, dev)? * std)?.to_dtype(dtype)
}

/// `n` independent draws of the same input (rotated so they don't all sit in the cache).
pub fn sets(n: usize, shape: &[usize], dtype: DType, dev: &Device) -> Result<Vec<Tensor>> {
    (0..n).map(|_| randn(shape, 1.0, dtype, dev)).collect()
}

fn variant(name: &'static str, run: impl FnMut(usize) -> Result<()> + 'static) -> Variant {
    Variant { name, run: Box::new(run) }
}

/// Attention: causal prefill `[1, H, N, Dh]`, or decode `q [B, H, 1, Dh]` over `[B, H, ctx, Dh]`.
pub fn attention(mode: Mode, x: usize, d: Dims, dtype: DType, dev: &Device) -> Result<Case> {
    let (h, dh) = (d.heads, d.head_dim());
    let (b, nq, nk, causal) = match mode {
        Mode::SeqLength => (1, x, x, true),
        Mode::BatchSize => (x, 1, d.context, false),
    };
    let el = dtype.size_in_bytes();
    let bytes = (b * h * dh * (2 * nq + 2 * nk) * el) as f64;
    let n = rotation(bytes as usize);
    let q = sets(n, &[b, h, nq, dh], dtype, dev)?;
    let k = sets(n, &[b, h, nk, dh], dtype, dev)?;
    let v = sets(n, &[b, h, nk, dh], dtype, dev)?;
    // QKᵀ and PV; a causal prefill computes about half of each
    let full = 4.0 * (b * h * nq * nk * dh) as f64;
    let flops = if causal { full / 2.0 } else { full };
    let (q2, k2, v2) = (q.clone(), k.clone(), v.clone());
    let mask = causal.then(|| tiny_gemm::reference::causal_mask(nq, nk, dtype, dev)).transpose()?;
    Ok(Case {
        op: "attention",
        x,
        shape: format!("q[{b},{h},{nq},{dh}] kv[{b},{h},{nk},{dh}]{}", if causal { " causal" } else { "" }),
        flops,
        bytes,
        sets: n,
        variants: vec![
            variant("stock", move |i| {
                tiny_gemm::reference::attention_with_mask(&q[i], &k[i], &v[i], mask.as_ref())?;
                Ok(())
            }),
            variant("fused", move |i| {
                tiny_gemm::fused_attention(&q2[i], &k2[i], &v2[i], causal)?;
                Ok(())
            }),
        ],
    })
}

/// FFN: `gelu(x·W1 + b1)·W2 + b2`, x `[M, D]`, W1 `[D, H]`, W2 `[H, D]` (the seed's layout).
pub fn ffn(x: usize, d: Dims, dtype: DType, dev: &Device) -> Result<Case> {
    let m = x; // tokens: N in prefill, B (one each) in decode
    let (dm, hid) = (d.d_model, d.hidden);
    let el = dtype.size_in_bytes();
    let bytes = ((2 * dm * hid + 2 * m * dm + hid + dm) * el) as f64;
    let n = rotation(bytes as usize);
    // weights scaled like a trained layer (std 1/sqrt(fan_in)) so activations stay O(1)
    let w1: Vec<Tensor> =
        (0..n).map(|_| randn(&[dm, hid], (dm as f64).powf(-0.5), dtype, dev)).collect::<Result<_>>()?;
    let w2: Vec<Tensor> =
        (0..n).map(|_| randn(&[hid, dm], (hid as f64).powf(-0.5), dtype, dev)).collect::<Result<_>>()?;
    let b1 = sets(n, &[hid], dtype, dev)?;
    let b2 = sets(n, &[dm], dtype, dev)?;
    let xs = sets(n, &[m, dm], dtype, dev)?;
    let act = tiny_gemm::Activation::Gelu;
    // `fused` is the drop-in layer (weights turned once into the `[out, in]` layout its kernels
    // stream); `fused_ffn_seed` is the seed's call on `[in, out]` tensors as they are.
    let mlps: Vec<tiny_gemm::FusedMlp> = (0..n)
        .map(|i| tiny_gemm::FusedMlp::from_seed(&w1[i], Some(&b1[i]), &w2[i], Some(&b2[i]), act))
        .collect::<Result<_>>()?;
    let (w1f, w2f, b1f, b2f, xf, xl) = (w1.clone(), w2.clone(), b1.clone(), b2.clone(), xs.clone(), xs.clone());
    Ok(Case {
        op: "ffn",
        x,
        shape: format!("x[{m},{dm}] {dm}→{hid}→{dm} gelu"),
        flops: 4.0 * (m * dm * hid) as f64,
        bytes,
        sets: n,
        variants: vec![
            variant("stock", move |i| {
                tiny_gemm::reference::ffn(&xs[i], &w1[i], Some(&b1[i]), &w2[i], Some(&b2[i]), act)?;
                Ok(())
            }),
            variant("fused", move |i| {
                candle_core::Module::forward(&mlps[i], &xl[i])?;
                Ok(())
            }),
            variant("fused_ffn_seed", move |i| {
                tiny_gemm::fused_ffn(&xf[i], &w1f[i], Some(&b1f[i]), &w2f[i], Some(&b2f[i]), act)?;
                Ok(())
            }),
        ],
    })
}

/// INT4 weight-only linear `x·Wᵀ`, x `[M, K=d_model]`, W `[N=hidden, K]`: the dense matmul in
/// `dtype`, candle's GGUF Q4_0 `QMatMul` (f32 activations, its native input) and ours.
pub fn int4(x: usize, d: Dims, dtype: DType, dev: &Device) -> Result<Case> {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use tiny_gemm::quant::{int4_matmul, Int4Config, Int4Weight};
    let m = x; // tokens: N in prefill, B (one each) in decode
    let (k, nout) = (d.d_model, d.hidden);
    let el = dtype.size_in_bytes();
    // packed nibbles + one f16 scale per group + activations in and out
    let bytes = (nout * k / 2 + 2 * nout * (k / d.group_size) + (m * k + m * nout) * el) as f64;
    let n = rotation(bytes as usize);
    let cfg = Int4Config { group_size: d.group_size, ..Default::default() };
    let mut dense = Vec::new();
    let mut q4 = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..n {
        let w = randn(&[nout, k], (k as f64).powf(-0.5), DType::F32, dev)?;
        q4.push(QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q4_0)?)?);
        ours.push(Int4Weight::quantize(&w, cfg)?);
        dense.push(w.to_dtype(dtype)?);
    }
    let xs = sets(n, &[m, k], dtype, dev)?;
    let xs32: Vec<Tensor> = xs.iter().map(|x| x.to_dtype(DType::F32)).collect::<Result<_>>()?;
    let xs4 = xs.clone();
    Ok(Case {
        op: "int4",
        x,
        shape: format!("x[{m},{k}]·W[{nout},{k}]ᵀ g{}", d.group_size),
        flops: 2.0 * (m * k * nout) as f64,
        bytes,
        sets: n,
        variants: vec![
            variant("stock", move |i| {
                xs[i].matmul(&dense[i].t()?)?;
                Ok(())
            }),
            variant("q4_0", move |i| {
                candle_core::Module::forward(&q4[i], &xs32[i])?;
                Ok(())
            }),
            variant("int4", move |i| {
                int4_matmul(&xs4[i], &ours[i])?;
                Ok(())
            }),
        ],
    })
}
