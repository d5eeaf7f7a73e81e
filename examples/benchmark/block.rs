//! A pre-LN transformer block, `h = x + attn(ln1(x)); y = h + ffn(ln2(h))`, in three variants:
//! stock candle layers, our fused ops, and fused ops with INT4 linears. Every op call goes through
//! [`Prof::op`], so the same code is timed as a whole (sweeps) and op by op (`--profile`).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear};
use tiny_gemm::quant::{Int4Config, Int4Linear};
use tiny_gemm::{Activation, FusedMlp};

use crate::cases::{randn, Case, Dims, Mode, Variant};
use crate::harness::rotation;
use crate::profile::Prof;

const EPS: f64 = 1e-5;
const ACT: Activation = Activation::GeluTanh; // GPT-2's MLP

/// Which implementation a [`Block`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Stock,
    Fused,
    Int4,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Stock => "stock",
            Kind::Fused => "fused",
            Kind::Int4 => "int4",
        }
    }
}

/// The block's weights, in candle's `Linear` layout (`[out, in]`).
pub struct Weights {
    ln1: (Tensor, Tensor),
    ln2: (Tensor, Tensor),
    qkv: (Tensor, Tensor),
    out: (Tensor, Tensor),
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
}

impl Weights {
    pub fn random(d: Dims, dtype: DType, dev: &Device) -> Result<Self> {
        let (dm, hid) = (d.d_model, d.hidden);
        let lin = |o: usize, i: usize| -> Result<(Tensor, Tensor)> {
            Ok((randn(&[o, i], (i as f64).powf(-0.5), dtype, dev)?, randn(&[o], 0.02, dtype, dev)?))
        };
        let ln = || -> Result<(Tensor, Tensor)> {
            Ok(((randn(&[dm], 0.1, dtype, dev)? + 1.0)?, randn(&[dm], 0.1, dtype, dev)?))
        };
        Ok(Self {
            ln1: ln()?,
            ln2: ln()?,
            qkv: lin(3 * dm, dm)?,
            out: lin(dm, dm)?,
            fc1: lin(hid, dm)?,
            fc2: lin(dm, hid)?,
        })
    }

    /// Bytes of weights one forward pass reads.
    pub fn bytes(&self, kind: Kind, group: usize) -> usize {
        let mats = [&self.qkv.0, &self.out.0, &self.fc1.0, &self.fc2.0];
        let dense: usize = mats.iter().map(|w| w.elem_count() * w.dtype().size_in_bytes()).sum();
        match kind {
            Kind::Int4 => mats.iter().map(|w| w.elem_count() / 2 + 2 * w.elem_count() / group).sum(),
            _ => dense,
        }
    }
}

enum Lin {
    Dense(Linear),
    Int4(Int4Linear),
}

impl Lin {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Lin::Dense(l) => l.forward(x),
            Lin::Int4(l) => l.forward(x),
        }
    }
}

enum Mlp {
    Stock(Linear, Linear),
    Fused(FusedMlp),
    /// fc1 without its bias, then bias + activation in one pass, then fc2.
    Int4(Int4Linear, Tensor, Int4Linear),
}

pub struct Block {
    kind: Kind,
    /// stock only: the causal mask per prefill length, built once as a model would cache it
    masks: std::collections::HashMap<usize, Tensor>,
    heads: usize,
    ln1: (Tensor, Tensor),
    ln2: (Tensor, Tensor),
    qkv: Lin,
    out: Lin,
    mlp: Mlp,
}

impl Block {
    /// `prefill`: the token counts whose causal masks the stock block precomputes.
    pub fn new(w: &Weights, kind: Kind, d: Dims, prefill: &[usize]) -> Result<Self> {
        let dense = |(w, b): &(Tensor, Tensor)| Linear::new(w.clone(), Some(b.clone()));
        let cfg = Int4Config { group_size: d.group_size, ..Default::default() };
        let int4 = |(w, b): &(Tensor, Tensor), bias: bool| -> Result<Int4Linear> {
            let q = Int4Linear::from_linear(&Linear::new(w.clone(), None), cfg)?;
            Int4Linear::new(q.weight().clone(), bias.then(|| b.clone()))
        };
        let (qkv, out, mlp) = match kind {
            Kind::Stock => {
                (Lin::Dense(dense(&w.qkv)), Lin::Dense(dense(&w.out)), Mlp::Stock(dense(&w.fc1), dense(&w.fc2)))
            }
            Kind::Fused => (
                Lin::Dense(dense(&w.qkv)),
                Lin::Dense(dense(&w.out)),
                Mlp::Fused(FusedMlp::from_linears(&dense(&w.fc1), &dense(&w.fc2), ACT)?),
            ),
            Kind::Int4 => (
                Lin::Int4(int4(&w.qkv, true)?),
                Lin::Int4(int4(&w.out, true)?),
                Mlp::Int4(int4(&w.fc1, false)?, w.fc1.1.clone(), int4(&w.fc2, true)?),
            ),
        };
        let dtype = w.qkv.0.dtype();
        let dev = w.qkv.0.device();
        let masks = if kind == Kind::Stock {
            prefill
                .iter()
                .map(|&n| Ok((n, tiny_gemm::reference::causal_mask(n, n, dtype, dev)?)))
                .collect::<Result<_>>()?
        } else {
            Default::default()
        };
        Ok(Self { kind, masks, heads: d.heads, ln1: w.ln1.clone(), ln2: w.ln2.clone(), qkv, out, mlp })
    }

    /// `x [B, N, D]`; `cache`: K/V of earlier tokens `[B, H, ctx, Dh]` (decode), or none (prefill).
    pub fn forward(&self, x: &Tensor, cache: Option<&(Tensor, Tensor)>, p: &mut Prof) -> Result<Tensor> {
        let (b, n, dm) = x.dims3()?;
        let (h, dh) = (self.heads, dm / self.heads);
        let stock = self.kind == Kind::Stock;
        let ln = |p: &mut Prof, name, x: &Tensor, r: Option<&Tensor>, (g, bt): &(Tensor, Tensor)| {
            p.op(name, || {
                if stock {
                    let s = match r {
                        Some(r) => (x + r)?,
                        None => x.clone(),
                    };
                    Ok((LayerNorm::new(g.clone(), bt.clone(), EPS).forward(&s)?, s))
                } else {
                    tiny_gemm::add_layer_norm(x, r, g, Some(bt), EPS)
                }
            })
        };
        let (a, _) = ln(p, "ln1", x, None, &self.ln1)?;
        let qkv = p.op("qkv_proj", || self.qkv.forward(&a))?;
        let (q, k, v) = p.op("split_heads", || {
            let qkv = qkv.reshape((b, n, 3, h, dh))?.permute((2, 0, 3, 1, 4))?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let (k, v) = match cache {
                Some((kc, vc)) => (Tensor::cat(&[kc, &k.contiguous()?], 2)?, Tensor::cat(&[vc, &v.contiguous()?], 2)?),
                None => (k, v),
            };
            Ok((q, k, v))
        })?;
        let causal = cache.is_none();
        let o = p.op("attention", || {
            if stock {
                let mask = if causal { self.masks.get(&n) } else { None };
                tiny_gemm::reference::attention_with_mask(&q.contiguous()?, &k.contiguous()?, &v.contiguous()?, mask)
            } else {
                tiny_gemm::fused_attention(&q, &k, &v, causal)
            }
        })?;
        let o = p.op("merge_heads", || o.transpose(1, 2)?.reshape((b, n, dm)))?;
        let o = p.op("out_proj", || self.out.forward(&o))?;
        let (a, hres) = ln(p, "residual+ln2", x, Some(&o), &self.ln2)?;
        let m = match &self.mlp {
            Mlp::Stock(fc1, fc2) => {
                let t = p.op("fc1", || fc1.forward(&a))?;
                let t = p.op("gelu", || ACT.apply_tensor(&t))?;
                p.op("fc2", || fc2.forward(&t))?
            }
            Mlp::Fused(mlp) => p.op("fused_mlp", || mlp.forward(&a))?,
            Mlp::Int4(fc1, b1, fc2) => {
                let t = p.op("fc1", || fc1.forward(&a))?;
                let t = p.op("bias+gelu", || tiny_gemm::bias_act(&t, Some(b1), ACT))?;
                p.op("fc2", || fc2.forward(&t))?
            }
        };
        p.op("residual", || &hres + &m)
    }
}

/// Shapes of one block call: prefill of `x` tokens, or one decode token for a batch of `x`.
pub fn input_shape(mode: Mode, x: usize) -> (usize, usize) {
    match mode {
        Mode::SeqLength => (1, x),
        Mode::BatchSize => (x, 1),
    }
}

/// The `block` op of the sweep: stock vs fused vs fused + INT4.
pub fn case(mode: Mode, x: usize, d: Dims, dtype: DType, dev: &Device) -> Result<Case> {
    let (b, n) = input_shape(mode, x);
    let (dm, hid, h, dh) = (d.d_model, d.hidden, d.heads, d.head_dim());
    let ctx = if mode == Mode::BatchSize { d.context } else { 0 };
    let w = Weights::random(d, dtype, dev)?;
    let el = dtype.size_in_bytes();
    let act_bytes = (2 * b * n * dm + 2 * b * h * (ctx + n) * dh) * el;
    let bytes = w.bytes(Kind::Stock, d.group_size) + act_bytes;
    let sets = rotation(bytes);
    let kv = |_| -> Result<(Tensor, Tensor)> {
        Ok((randn(&[b, h, ctx, dh], 1.0, dtype, dev)?, randn(&[b, h, ctx, dh], 1.0, dtype, dev)?))
    };
    let xs: Vec<Tensor> = (0..sets).map(|_| randn(&[b, n, dm], 1.0, dtype, dev)).collect::<Result<_>>()?;
    let caches: Vec<(Tensor, Tensor)> = if ctx > 0 { (0..sets).map(kv).collect::<Result<_>>()? } else { Vec::new() };
    // matmuls (qkv, out, fc1, fc2) + attention
    let tokens = (b * n) as f64;
    let mut flops = 2.0 * tokens * (4 * dm * dm + 2 * dm * hid) as f64;
    let att = 4.0 * (b * h * n * (ctx + n) * dh) as f64;
    flops += if ctx == 0 { att / 2.0 } else { att };
    let mut variants = Vec::new();
    for kind in [Kind::Stock, Kind::Fused, Kind::Int4] {
        let block = Block::new(&w, kind, d, &[n])?;
        let (xs, caches) = (xs.clone(), caches.clone());
        let mut prof = Prof::off();
        variants.push(Variant {
            name: kind.name(),
            run: Box::new(move |i| {
                block.forward(&xs[i], caches.get(i), &mut prof)?;
                Ok(())
            }),
        });
    }
    Ok(Case {
        op: "block",
        x,
        shape: format!("x[{b},{n},{dm}] h{h} ffn{hid}{}", if ctx > 0 { format!(" kv{ctx}") } else { String::new() }),
        flops,
        bytes: bytes as f64,
        sets,
        variants,
    })
}
