//! The pieces of a GPT-2 block that a [`Mode`] swaps: linear layers, the MLP, attention and the
//! residual-add + LayerNorm. Each has a stock-candle implementation (the reference) and the
//! crate's fused one; adding a new kernel is one match arm in the `make_*` functions.

use candle_core::{bail, DType, Module, Result, Tensor, D};

use crate::Activation;

/// How a model runs its layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Plain candle layers: `matmul` + `broadcast_add`, `gelu`, `candle_nn::LayerNorm`,
    /// `softmax_last_dim`. The reference every other mode is compared against.
    Stock,
    /// The crate's fused ops: [`add_layer_norm`](crate::add_layer_norm) between blocks,
    /// [`FusedMlp`](crate::FusedMlp) for the MLP (bias + GELU-tanh fused) and
    /// [`fused_attention`](crate::fused_attention) (for the head dims it supports, see
    /// [`Mode::uses_fused_attention`]).
    Fused,
    /// [`Mode::Fused`] plus INT4 weight-only linear layers ([`crate::quant::Int4Linear`],
    /// asymmetric, quantized in groups of `group_size` along the input dimension), the tied LM
    /// head included.
    Int4 {
        /// Input-dimension group size of the quantization scales (e.g. 128).
        group_size: usize,
    },
    /// Stock candle ops that all have a backward pass (LayerNorm and softmax composed from tensor
    /// ops), with dropout of probability `dropout` on the embeddings, attention and MLP outputs:
    /// what `examples/train_gpt` trains with. Same function as [`Mode::Stock`] when `dropout` is 0.
    Train {
        /// Dropout probability (0 turns it off).
        dropout: f32,
    },
}

impl Mode {
    /// The name used on the command line and in tables: `stock`, `fused`, `int4`, `train`.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Stock => "stock",
            Mode::Fused => "fused",
            Mode::Int4 { .. } => "int4",
            Mode::Train { .. } => "train",
        }
    }

    /// Whether attention runs [`crate::fused_attention`] for heads of width `head_dim`: in the
    /// fused modes, when the kernel supports the head dim (a multiple of 8 in 32..=256); other
    /// head dims use the stock composition.
    pub fn uses_fused_attention(&self, head_dim: usize) -> bool {
        matches!(self, Mode::Fused | Mode::Int4 { .. }) && head_dim % 8 == 0 && (32..=256).contains(&head_dim)
    }
}

/// `y = x·W + b` over weights in GPT-2's Conv1D layout, `W: [in, out]`.
pub trait LinearLayer: Send + Sync {
    /// `x: [.., in]` to `[.., out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Bytes of weight (and bias) storage, as held on the device.
    fn weight_bytes(&self) -> usize;
}

fn bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// `x.matmul(W)` over the flattened leading dims, `W: [in, out]` (any strides).
fn matmul_in_out(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let k = dims.pop().unwrap_or(1);
    let rows = dims.iter().product::<usize>();
    let y = x.reshape((rows, k))?.matmul(w)?;
    dims.push(w.dim(1)?);
    y.reshape(dims)
}

/// The stock linear layer: `matmul` then `broadcast_add`.
struct StockLinear {
    w: Tensor,
    b: Option<Tensor>,
}

impl LinearLayer for StockLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = matmul_in_out(x, &self.w)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    fn weight_bytes(&self) -> usize {
        bytes(&self.w) + self.b.as_ref().map_or(0, bytes)
    }
}

/// An INT4 linear layer over the weight `[in, out]`, transposed once to the `[out, in]` that
/// [`crate::quant`] quantizes.
struct Int4Layer {
    inner: crate::quant::Int4Linear,
}

impl LinearLayer for Int4Layer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_core::Module::forward(&self.inner, x)
    }

    fn weight_bytes(&self) -> usize {
        self.inner.weight().size_in_bytes() + self.inner.bias().map_or(0, bytes)
    }
}

/// A linear layer for `mode` from a `[in, out]` weight and an optional `[out]` bias.
pub fn make_linear(mode: Mode, w: Tensor, b: Option<Tensor>) -> Result<Box<dyn LinearLayer>> {
    match mode {
        Mode::Stock | Mode::Fused | Mode::Train { .. } => Ok(Box::new(StockLinear { w, b })),
        Mode::Int4 { group_size } => Ok(Box::new(Int4Layer { inner: int4_linear(group_size, w, b)? })),
    }
}

/// The INT4 mode's layer (asymmetric, groups of `group_size`) from a `[in, out]` weight.
fn int4_linear(group_size: usize, w: Tensor, b: Option<Tensor>) -> Result<crate::quant::Int4Linear> {
    let cfg = crate::quant::Int4Config { group_size, symmetric: false };
    let weight = crate::quant::Int4Weight::quantize(&w.t()?.contiguous()?, cfg)?;
    crate::quant::Int4Linear::new(weight, b)
}

/// GPT-2's MLP: `proj(gelu_tanh(x·W_fc + b_fc))`.
pub trait MlpLayer: Send + Sync {
    /// `x: [.., n_embd]` to `[.., n_embd]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Bytes of weight storage.
    fn weight_bytes(&self) -> usize;
}

/// Stock: linear, `Tensor::gelu` (the tanh form), linear.
struct StockMlp {
    fc: Box<dyn LinearLayer>,
    proj: Box<dyn LinearLayer>,
    dropout: f32,
}

impl MlpLayer for StockMlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = Activation::GeluTanh.apply_tensor(&self.fc.forward(x)?)?;
        dropout(&self.proj.forward(&h)?, self.dropout)
    }

    fn weight_bytes(&self) -> usize {
        self.fc.weight_bytes() + self.proj.weight_bytes()
    }
}

/// The INT4 mode's MLP: two ops, each an [`int4_linear`](crate::quant::int4_linear) with its
/// bias (and, for fc, the GELU-tanh) in the matmul's epilogue.
struct Int4Mlp {
    fc: crate::quant::Int4Linear,
    proj: crate::quant::Int4Linear,
}

impl MlpLayer for Int4Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc.forward_act(x, Activation::GeluTanh)?;
        self.proj.forward_act(&h, Activation::Identity)
    }

    fn weight_bytes(&self) -> usize {
        [&self.fc, &self.proj].iter().map(|l| l.weight().size_in_bytes() + l.bias().map_or(0, bytes)).sum()
    }
}

/// [`crate::FusedMlp`]: both projections and the bias + GELU epilogue in the crate's fused FFN.
struct FusedMlpLayer {
    mlp: crate::FusedMlp,
    weight_bytes: usize,
}

impl MlpLayer for FusedMlpLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.mlp.forward(x)
    }

    fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }
}

/// The MLP for `mode` from the Conv1D weights `fc: [C, F]`, `proj: [F, C]` and their biases.
pub fn make_mlp(mode: Mode, fc: (Tensor, Tensor), proj: (Tensor, Tensor)) -> Result<Box<dyn MlpLayer>> {
    match mode {
        Mode::Stock | Mode::Train { .. } => Ok(Box::new(StockMlp {
            fc: make_linear(mode, fc.0, Some(fc.1))?,
            proj: make_linear(mode, proj.0, Some(proj.1))?,
            dropout: if let Mode::Train { dropout } = mode { dropout } else { 0.0 },
        })),
        Mode::Fused => {
            let weight_bytes = bytes(&fc.0) + bytes(&fc.1) + bytes(&proj.0) + bytes(&proj.1);
            let mlp = crate::FusedMlp::from_seed(&fc.0, Some(&fc.1), &proj.0, Some(&proj.1), Activation::GeluTanh)?;
            Ok(Box::new(FusedMlpLayer { mlp, weight_bytes }))
        }
        Mode::Int4 { group_size } => Ok(Box::new(Int4Mlp {
            fc: int4_linear(group_size, fc.0, Some(fc.1))?,
            proj: int4_linear(group_size, proj.0, Some(proj.1))?,
        })),
    }
}

/// Causal scaled-dot-product attention, `q: [B, H, Nq, D]`, `k, v: [B, H, Nk, D]` with
/// `Nk >= Nq`: query `i` sees keys `0..=i + Nk - Nq` (the queries are the last `Nq` positions).
/// Returns `[B, H, Nq, D]`.
pub fn attention(mode: Mode, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (nq, nk, d) = (q.dim(2)?, k.dim(2)?, q.dim(3)?);
    if nk < nq {
        bail!("attention: {nk} keys for {nq} queries; the queries must be the last Nk positions");
    }
    if mode.uses_fused_attention(d) {
        // causal, bottom-right aligned; Nq = 1 (decode) takes the kernel's decode path
        return crate::fused_attention(q, k, v, true);
    }
    let dtype = q.dtype();
    let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let scores =
        if nq > 1 { scores.broadcast_add(&crate::reference::causal_mask(nq, nk, dtype, q.device())?)? } else { scores };
    // softmax in f32 for the half types
    let scores = scores.to_dtype(DType::F32)?;
    let p = match mode {
        Mode::Train { .. } => candle_nn::ops::softmax(&scores, D::Minus1)?,
        _ => candle_nn::ops::softmax_last_dim(&scores)?,
    };
    p.to_dtype(dtype)?.matmul(v)
}

/// `(LayerNorm(x + residual), x + residual)`, the residual add optional.
pub struct AddNorm {
    mode: Mode,
    gamma: Tensor,
    beta: Tensor,
    eps: f64,
}

impl AddNorm {
    /// A LayerNorm with weight `gamma` and bias `beta`, run the way `mode` says.
    pub fn new(mode: Mode, gamma: Tensor, beta: Tensor, eps: f64) -> Self {
        Self { mode, gamma, beta, eps }
    }

    /// Returns `(normed, sum)` with `sum = x + residual` (or `x`).
    pub fn forward(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        match self.mode {
            Mode::Fused | Mode::Int4 { .. } => {
                crate::add_layer_norm(x, residual, &self.gamma, Some(&self.beta), self.eps)
            }
            Mode::Stock => {
                let sum = match residual {
                    Some(r) => (x + r)?,
                    None => x.clone(),
                };
                let ln = candle_nn::LayerNorm::new(self.gamma.clone(), self.beta.clone(), self.eps);
                Ok((ln.forward(&sum)?, sum))
            }
            Mode::Train { .. } => {
                let sum = match residual {
                    Some(r) => (x + r)?,
                    None => x.clone(),
                };
                let centered = sum.broadcast_sub(&sum.mean_keepdim(D::Minus1)?)?;
                let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
                Ok((normed.broadcast_mul(&self.gamma)?.broadcast_add(&self.beta)?, sum))
            }
        }
    }

    /// Bytes of weight storage.
    pub fn weight_bytes(&self) -> usize {
        bytes(&self.gamma) + bytes(&self.beta)
    }
}

/// Inverted dropout with probability `p` (identity when `p == 0`).
pub(crate) fn dropout(x: &Tensor, p: f32) -> Result<Tensor> {
    if p == 0.0 {
        return Ok(x.clone());
    }
    candle_nn::ops::dropout(x, p)
}
