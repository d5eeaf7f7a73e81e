//! GPT-2 (learned positions, pre-LayerNorm blocks, GELU-tanh MLP, LM head tied to the token
//! embedding) with a KV cache, loadable from Hugging Face checkpoints and runnable in any
//! [`Mode`]: stock candle layers, the crate's fused ops, or INT4 weights.
//!
//! Weights use Hugging Face's `GPT2Model` names and GPT-2's Conv1D layout (`[in, out]`):
//! `wte.weight [V, C]`, `wpe.weight [P, C]`, `h.{i}.ln_1.{weight,bias}`, `h.{i}.attn.c_attn.weight
//! [C, 3C]`, `h.{i}.attn.c_proj.weight [C, C]`, `h.{i}.ln_2.*`, `h.{i}.mlp.c_fc.weight [C, F]`,
//! `h.{i}.mlp.c_proj.weight [F, C]` (each with a `.bias`), `ln_f.*`; a `transformer.` prefix
//! (`GPT2LMHeadModel` checkpoints) is accepted.
//!
//! The residual stream runs through [`AddNorm`]: each block's two LayerNorms also do the residual
//! add before them (`h = h + mlp_out` of the previous block, `h = h + attn_out`), so in
//! [`Mode::Fused`] every add + LayerNorm pair is one kernel.

mod config;
mod layers;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{bail, DType, Device, IndexOp, Result, Tensor};
use candle_nn::{Init, VarBuilder};

pub use config::Gpt2Config;
pub use layers::{attention, make_linear, make_mlp, AddNorm, LinearLayer, MlpLayer, Mode};

/// Standard deviation of GPT-2's initial weights.
const INIT_STD: f64 = 0.02;

/// Runs `$body` in a trace span named `$name` (a literal: span names are static), waiting for
/// the GPU (`$dev: Option<&Device>`) before the span closes so it shows kernel time.
macro_rules! traced {
    ($name:literal, $dev:expr, $body:expr) => {{
        let _span = tracing::trace_span!($name).entered();
        let out = $body?;
        if let Some(dev) = $dev {
            dev.synchronize()?;
        }
        Ok::<_, candle_core::Error>(out)
    }};
}

struct Block {
    ln_1: AddNorm,
    c_attn: Box<dyn LinearLayer>,
    c_proj: Box<dyn LinearLayer>,
    ln_2: AddNorm,
    mlp: Box<dyn MlpLayer>,
}

/// The keys and values of every layer seen so far: `[B, H, T, D]` per layer.
#[derive(Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every cached position.
    pub fn clear(&mut self) {
        self.layers.clear();
    }
}

/// A GPT-2 language model.
pub struct Gpt2 {
    cfg: Gpt2Config,
    mode: Mode,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: AddNorm,
    lm_head: Box<dyn LinearLayer>,
}

impl Gpt2 {
    /// Builds the model from `vb` (Hugging Face names; see the module docs). Missing tensors get
    /// GPT-2's initialization when `vb` can create them (a `VarMap`, for training).
    pub fn new(vb: VarBuilder, cfg: &Gpt2Config, mode: Mode) -> Result<Self> {
        cfg.validate()?;
        let vb = if vb.contains_tensor("transformer.wte.weight") { vb.pp("transformer") } else { vb };
        let (c, f) = (cfg.n_embd, cfg.n_inner);
        let normal = Init::Randn { mean: 0.0, stdev: INIT_STD };
        // GPT-2 scales the residual projections' init by 1/sqrt(2 * n_layer)
        let proj_init = Init::Randn { mean: 0.0, stdev: INIT_STD / (2.0 * cfg.n_layer as f64).sqrt() };
        let zeros = Init::Const(0.0);
        let ln = |vb: VarBuilder| -> Result<AddNorm> {
            let g = vb.get_with_hints(c, "weight", Init::Const(1.0))?;
            let b = vb.get_with_hints(c, "bias", zeros)?;
            Ok(AddNorm::new(mode, g, b, cfg.layer_norm_epsilon))
        };
        let conv1d = |vb: VarBuilder, n_in: usize, n_out: usize, init: Init| -> Result<(Tensor, Tensor)> {
            Ok((vb.get_with_hints((n_in, n_out), "weight", init)?, vb.get_with_hints(n_out, "bias", zeros)?))
        };
        let wte = vb.get_with_hints((cfg.vocab_size, c), "wte.weight", normal)?;
        let wpe = vb.get_with_hints((cfg.n_positions, c), "wpe.weight", Init::Randn { mean: 0.0, stdev: 0.01 })?;
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let vb = vb.pp(format!("h.{i}"));
            let (aw, ab) = conv1d(vb.pp("attn.c_attn"), c, 3 * c, normal)?;
            let (pw, pb) = conv1d(vb.pp("attn.c_proj"), c, c, proj_init)?;
            let fc = conv1d(vb.pp("mlp.c_fc"), c, f, normal)?;
            let proj = conv1d(vb.pp("mlp.c_proj"), f, c, proj_init)?;
            blocks.push(Block {
                ln_1: ln(vb.pp("ln_1"))?,
                c_attn: make_linear(mode, aw, Some(ab))?,
                c_proj: make_linear(mode, pw, Some(pb))?,
                ln_2: ln(vb.pp("ln_2"))?,
                mlp: make_mlp(mode, fc, proj)?,
            });
        }
        let ln_f = ln(vb.pp("ln_f"))?;
        // tied: logits = h · wteᵀ, wteᵀ as a [C, V] view in the Conv1D layout
        let lm_head = make_linear(mode, wte.t()?, None)?;
        Ok(Self { cfg: cfg.clone(), mode, wte, wpe, blocks, ln_f, lm_head })
    }

    /// Loads `model.safetensors` (and friends) from files, converting the weights to `dtype`.
    /// A missing or unreadable file is an error naming the file.
    pub fn load(
        weights: &[impl AsRef<Path>],
        cfg: &Gpt2Config,
        mode: Mode,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        for w in weights {
            let w = w.as_ref();
            if !w.is_file() {
                bail!("GPT-2 weights: {} does not exist or is not a file", w.display());
            }
        }
        // SAFETY: the files are memory-mapped read-only; like every candle loader, this assumes
        // nothing truncates them while the model is being built (tensors are copied out).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(weights, dtype, dev) }.map_err(|e| {
            let names: Vec<_> = weights.iter().map(|w| w.as_ref().display().to_string()).collect();
            candle_core::Error::Msg(format!("GPT-2 weights: cannot read {} as safetensors: {e}", names.join(", ")))
        })?;
        Self::new(vb, cfg, mode).map_err(|e| candle_core::Error::Msg(format!("GPT-2 ({} mode): {e}", mode.name())))
    }

    /// The model from an in-memory safetensors file (e.g. one embedded with `include_bytes!`).
    pub fn from_safetensors_bytes(
        bytes: &[u8],
        cfg: &Gpt2Config,
        mode: Mode,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| candle_core::Error::Msg(format!("GPT-2 weights: not a safetensors file: {e}")))?;
        Self::from_tensors(tensors, cfg, mode, dtype, dev)
    }

    /// The model from named tensors (Hugging Face names), converted to `dtype` on `dev`.
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        cfg: &Gpt2Config,
        mode: Mode,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let vb = VarBuilder::from_tensors(tensors, dtype, dev);
        Self::new(vb, cfg, mode).map_err(|e| candle_core::Error::Msg(format!("GPT-2 ({} mode): {e}", mode.name())))
    }

    /// The config the model was built with.
    pub fn config(&self) -> &Gpt2Config {
        &self.cfg
    }

    /// The mode the model was built with.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Bytes of weight storage on the device (the tied embedding counted once).
    pub fn weight_bytes(&self) -> usize {
        let b = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let blocks: usize = self
            .blocks
            .iter()
            .map(|bl| {
                bl.ln_1.weight_bytes()
                    + bl.c_attn.weight_bytes()
                    + bl.c_proj.weight_bytes()
                    + bl.ln_2.weight_bytes()
                    + bl.mlp.weight_bytes()
            })
            .sum();
        // a quantized LM head keeps its own copy next to the embedding table
        let head = if matches!(self.mode, Mode::Int4 { .. }) { self.lm_head.weight_bytes() } else { 0 };
        b(&self.wte) + b(&self.wpe) + blocks + self.ln_f.weight_bytes() + head
    }

    /// Runs `ids: [B, T]` (positions `cache.len()..cache.len() + T`), appending their keys and
    /// values to `cache`. Returns the logits `[B, T, V]` of every position, or only of the last
    /// one (`[B, 1, V]`) when `last_only` (what generation needs: skips most of the LM head).
    pub fn forward(&self, ids: &Tensor, cache: &mut KvCache, last_only: bool) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let past = cache.len();
        if t == 0 {
            bail!("GPT-2 forward: no tokens");
        }
        if past + t > self.cfg.n_positions {
            bail!("GPT-2 forward: {past} cached + {t} new positions exceed n_positions={}", self.cfg.n_positions);
        }
        cache.layers.resize(self.blocks.len(), None);
        let dropout = if let Mode::Train { dropout } = self.mode { dropout } else { 0.0 };
        let _span = tracing::span!(tracing::Level::TRACE, "gpt2", b, t, past).entered();
        let tok = self.wte.embedding(&ids.flatten_all()?)?.reshape((b, t, self.cfg.n_embd))?;
        let pos = self.wpe.i(past..past + t)?;
        let mut h = layers::dropout(&tok.broadcast_add(&pos)?, dropout)?;
        let (nh, hd) = (self.cfg.n_head, self.cfg.head_dim());
        // the previous block's MLP output, not yet added to h (AddNorm adds it)
        let mut pending: Option<Tensor> = None;
        for (block, kv) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let (x, sum) = traced!("ln_1", self.sync(), block.ln_1.forward(&h, pending.as_ref()))?;
            h = sum;
            let qkv = traced!("c_attn", self.sync(), block.c_attn.forward(&x))?;
            let heads = |i: usize| -> Result<Tensor> {
                qkv.narrow(2, i * self.cfg.n_embd, self.cfg.n_embd)?
                    .reshape((b, t, nh, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, mut k, mut v) = (heads(0)?, heads(1)?, heads(2)?);
            if let Some((pk, pv)) = kv.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *kv = Some((k.clone(), v.clone()));
            let a = traced!("attention", self.sync(), attention(self.mode, &q, &k, &v))?;
            let a = a.transpose(1, 2)?.reshape((b, t, self.cfg.n_embd))?;
            let a = layers::dropout(&traced!("attn.c_proj", self.sync(), block.c_proj.forward(&a))?, dropout)?;
            let (x, sum) = traced!("ln_2", self.sync(), block.ln_2.forward(&h, Some(&a)))?;
            h = sum;
            pending = Some(traced!("mlp", self.sync(), block.mlp.forward(&x))?);
        }
        let h = if last_only { h.narrow(1, t - 1, 1)? } else { h };
        let pending = match pending {
            Some(p) if last_only => Some(p.narrow(1, t - 1, 1)?),
            p => p,
        };
        let (x, _) = traced!("ln_f", self.sync(), self.ln_f.forward(&h, pending.as_ref()))?;
        traced!("lm_head", self.sync(), self.lm_head.forward(&x))
    }

    /// Whether spans should wait for the GPU (so they show kernel time): only when tracing.
    fn sync(&self) -> Option<&Device> {
        (tracing::enabled!(tracing::Level::TRACE) && self.wte.device().is_cuda()).then(|| self.wte.device())
    }
}

/// Seeded random GPT-2 weights (Hugging Face names, f32, on the CPU) with GPT-2's initialization:
/// the same `seed` gives the same weights on every machine. For speed measurements at real model
/// sizes without a download.
pub fn random_weights(cfg: &Gpt2Config, seed: u64) -> Result<HashMap<String, Tensor>> {
    cfg.validate()?;
    let mut rng = SplitMix64(seed);
    let (c, f) = (cfg.n_embd, cfg.n_inner);
    let proj_std = INIT_STD / (2.0 * cfg.n_layer as f64).sqrt();
    let mut out = HashMap::new();
    let mut normal = |name: String, dims: &[usize], std: f64| -> Result<()> {
        let n = dims.iter().product::<usize>();
        let v: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
        out.insert(name, Tensor::from_vec(v, dims, &Device::Cpu)?);
        Ok(())
    };
    normal("wte.weight".into(), &[cfg.vocab_size, c], INIT_STD)?;
    normal("wpe.weight".into(), &[cfg.n_positions, c], 0.01)?;
    for i in 0..cfg.n_layer {
        normal(format!("h.{i}.attn.c_attn.weight"), &[c, 3 * c], INIT_STD)?;
        normal(format!("h.{i}.attn.c_proj.weight"), &[c, c], proj_std)?;
        normal(format!("h.{i}.mlp.c_fc.weight"), &[c, f], INIT_STD)?;
        normal(format!("h.{i}.mlp.c_proj.weight"), &[f, c], proj_std)?;
        // small random biases and norms (not GPT-2's zeros/ones) so tests exercise them
        for (name, n) in
            [("attn.c_attn.bias", 3 * c), ("attn.c_proj.bias", c), ("mlp.c_fc.bias", f), ("mlp.c_proj.bias", c)]
        {
            normal(format!("h.{i}.{name}"), &[n], INIT_STD)?;
        }
        for ln in ["ln_1", "ln_2"] {
            normal(format!("h.{i}.{ln}.bias"), &[c], INIT_STD)?;
            normal(format!("h.{i}.{ln}.weight"), &[c], INIT_STD)?;
        }
    }
    normal("ln_f.bias".into(), &[c], INIT_STD)?;
    normal("ln_f.weight".into(), &[c], INIT_STD)?;
    // LayerNorm weights around 1
    for (name, t) in out.iter_mut() {
        if name.contains("ln_") && name.ends_with(".weight") {
            *t = (&*t + 1.0)?;
        }
    }
    Ok(out)
}

/// A tiny, portable, seedable generator (SplitMix64) for [`random_weights`].
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller; one of the pair is dropped for simplicity).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}
