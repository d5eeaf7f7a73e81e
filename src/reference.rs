//! Slow, obviously-correct versions of every op, composed from stock candle tensor ops. This is
//! the spec: tests, benches and the examples' `--compare` check the fused ops against it.

use candle_core::{Result, Tensor};

use crate::Activation;

/// `act(x + bias)` the stock-candle way: `broadcast_add` then the activation.
pub fn bias_act(x: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
    let x = match bias {
        Some(b) => x.broadcast_add(b)?,
        None => x.clone(),
    };
    act.apply_tensor(&x)
}

/// Attention the stock-candle way: kv heads repeated for GQA, `q.matmul(kᵀ) * scale`, the causal
/// mask (bottom-right aligned: query `i` sees keys `0..=i + Nk - Nq`) added as `-inf`,
/// `softmax_last_dim`, the dropout mask of [`crate::attention::dropout_mask`], `matmul(v)`. Rows
/// with no visible key give 0 (stock softmax would give NaN), as the fused op does.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, cfg: &crate::AttentionConfig) -> Result<Tensor> {
    let (b, hq, nq, d) = q.dims4()?;
    let (_, hkv, nk, _) = k.dims4()?;
    let rep = hq / hkv;
    let repeat_kv = |t: &Tensor| -> Result<Tensor> {
        if rep == 1 {
            t.contiguous()
        } else {
            t.unsqueeze(2)?.expand((b, hkv, rep, nk, d))?.reshape((b, hq, nk, d))
        }
    };
    let (k, v) = (repeat_kv(k)?, repeat_kv(v)?);
    let s = (q.contiguous()?.matmul(&k.t()?)? * f64::from(cfg.scale(d)))?;
    let offset = nk as i64 - nq as i64;
    let s = if cfg.causal { s.broadcast_add(&causal_mask(nq, nk, s.dtype(), q.device())?)? } else { s };
    let mut p = candle_nn::ops::softmax_last_dim(&s)?;
    if cfg.causal && offset < 0 {
        let valid: Vec<u8> = (0..nq as i64).map(|i| u8::from(i + offset >= 0)).collect();
        let valid = Tensor::from_vec(valid, (nq, 1), q.device())?.broadcast_as(p.shape())?;
        p = valid.where_cond(&p, &p.zeros_like()?)?;
    }
    if let Some(dropout) = cfg.dropout.filter(|d| d.p > 0.0) {
        let mask = crate::attention::dropout_mask(dropout, b, hq, nq, nk, q.device())?.to_dtype(p.dtype())?;
        p = (p * mask)?;
    }
    p.matmul(&v)
}

/// Residual-add + LayerNorm the stock-candle way: `x + residual`, then `candle_nn::LayerNorm`
/// (affine, mean removed) over the last dimension. Returns `(normed, sum)`.
pub fn add_layer_norm(
    x: &Tensor,
    residual: Option<&Tensor>,
    gamma: &Tensor,
    beta: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    use candle_core::Module;
    let sum = match residual {
        Some(r) => (x + r)?,
        None => x.clone(),
    };
    let beta = match beta {
        Some(b) => b.clone(),
        None => gamma.zeros_like()?,
    };
    let ln = candle_nn::LayerNorm::new(gamma.clone(), beta, eps);
    Ok((ln.forward(&sum)?, sum))
}

/// The seed's FFN the stock-candle way: `act(x·w1 + b1)·w2 + b2` with `w1 [D, H]`, `w2 [H, O]`
/// (`[in, out]`), `x [..., D]`: `broadcast_matmul`, `broadcast_add`, the activation.
pub fn ffn(
    x: &Tensor,
    w1: &Tensor,
    b1: Option<&Tensor>,
    w2: &Tensor,
    b2: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    let h = bias_act(&x.broadcast_matmul(w1)?, b1, act)?;
    bias_act(&h.broadcast_matmul(w2)?, b2, Activation::Identity)
}

/// The gated FFN (SwiGLU / GeGLU) the stock-candle way: `(act(x·wg + bg) * (x·wu + bu))·wd + bd`,
/// weights `[in, out]`.
#[allow(clippy::too_many_arguments)]
pub fn gated_ffn(
    x: &Tensor,
    w_gate: &Tensor,
    b_gate: Option<&Tensor>,
    w_up: &Tensor,
    b_up: Option<&Tensor>,
    w_down: &Tensor,
    b_down: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    let g = bias_act(&x.broadcast_matmul(w_gate)?, b_gate, act)?;
    let u = bias_act(&x.broadcast_matmul(w_up)?, b_up, Activation::Identity)?;
    bias_act(&(g * u)?.broadcast_matmul(w_down)?, b_down, Activation::Identity)
}

/// Stock candle attention as a model runs it, for `Hq == Hkv` and the default `1/√D` scale:
/// `softmax_last_dim(q·kᵀ·scale + mask)·v` with an additive mask built once (see
/// [`causal_mask`]) outside the timed loop. The speed baseline of the benches.
pub fn attention_with_mask(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let scale = 1.0 / (q.dim(3)? as f64).sqrt();
    let s = (q.matmul(&k.t()?)? * scale)?;
    let s = match mask {
        Some(m) => s.broadcast_add(m)?,
        None => s,
    };
    candle_nn::ops::softmax_last_dim(&s)?.matmul(v)
}

/// The additive causal mask (bottom-right aligned, `-inf` above the diagonal) for `nq` queries
/// over `nk` keys, `[nq, nk]`.
pub fn causal_mask(nq: usize, nk: usize, dtype: candle_core::DType, dev: &candle_core::Device) -> Result<Tensor> {
    let off = nk as i64 - nq as i64;
    let m: Vec<f32> = (0..nq as i64)
        .flat_map(|i| (0..nk as i64).map(move |j| if j > i + off { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (nq, nk), dev)?.to_dtype(dtype)
}
