//! [`MultiHeadAttention`]: the attention step of a transformer block with a KV cache, calling
//! [`crate::fused_attention_with`]. Projections, RoPE and the output projection stay with the
//! model; this layer takes per-head `q, k, v` and returns per-head outputs.

use candle_core::{bail, Result, Tensor};
use candle_nn::kv_cache::KvCache;

use crate::attention::{HEAD_DIM_MULTIPLE, MAX_HEAD_DIM, MIN_HEAD_DIM};
use crate::{fused_attention_with, AttentionConfig};

/// Cache capacity (in tokens) reserved up front and added each time it fills up.
const CACHE_CHUNK: usize = 512;
/// The sequence dim of `[B, H, N, D]`.
const SEQ_DIM: usize = 2;

/// Causal multi-head (or grouped-query) attention over a growing KV cache.
///
/// Each [`forward`](Self::forward) appends the new keys and values to the cache and attends the
/// new queries over everything cached so far (causal, aligned so that the last query sees the
/// last key): a prompt of N tokens, then one token per decode step.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tiny_gemm::attention_layer::MultiHeadAttention;
/// # fn main() -> candle_core::Result<()> {
/// let mut attn = MultiHeadAttention::new(8, 2, 64)?; // 8 query heads sharing 2 kv heads
/// let dev = Device::Cpu;
/// let (q, k, v) = (
///     Tensor::randn(0f32, 1.0, (1, 8, 5, 64), &dev)?,
///     Tensor::randn(0f32, 1.0, (1, 2, 5, 64), &dev)?,
///     Tensor::randn(0f32, 1.0, (1, 2, 5, 64), &dev)?,
/// );
/// let prompt_out = attn.forward(&q, &k, &v)?; // [1, 8, 5, 64]
/// let step = |t: &Tensor| t.narrow(2, 4, 1);
/// let next = attn.forward(&step(&q)?, &step(&k)?, &step(&v)?)?; // [1, 8, 1, 64], 6 keys
/// assert_eq!(attn.cache_len(), 6);
/// attn.reset();
/// assert_eq!(attn.cache_len(), 0);
/// # Ok(()) }
/// ```
// Not Clone: a clone would share (and overwrite) the cache buffers.
#[derive(Debug)]
pub struct MultiHeadAttention {
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    config: AttentionConfig,
    cache: KvCache,
}

impl MultiHeadAttention {
    /// A causal layer for `num_heads` query heads over `num_kv_heads` kv heads (a divisor of
    /// `num_heads`) of `head_dim` (a multiple of 8 in 32..=256), scale `1/√head_dim`.
    pub fn new(num_heads: usize, num_kv_heads: usize, head_dim: usize) -> Result<Self> {
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            bail!("MultiHeadAttention: num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}");
        }
        if !(MIN_HEAD_DIM..=MAX_HEAD_DIM).contains(&head_dim) || head_dim % HEAD_DIM_MULTIPLE != 0 {
            bail!(
                "MultiHeadAttention: head_dim={head_dim} is not supported: a multiple of {HEAD_DIM_MULTIPLE} in \
                 {MIN_HEAD_DIM}..={MAX_HEAD_DIM}"
            );
        }
        let config = AttentionConfig { causal: true, ..Default::default() };
        Ok(Self { num_heads, num_kv_heads, head_dim, config, cache: KvCache::new(SEQ_DIM, CACHE_CHUNK) })
    }

    /// Replaces the attention options (causal, scale, dropout); the default is causal.
    pub fn with_config(mut self, config: AttentionConfig) -> Self {
        self.config = config;
        self
    }

    /// Appends `k, v [B, num_kv_heads, N, head_dim]` to the cache and returns the attention of
    /// `q [B, num_heads, N, head_dim]` over the whole cache, `[B, num_heads, N, head_dim]`.
    pub fn forward(&mut self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (h, hkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let (b, n) = match *q.dims() {
            [b, qh, n, qd] if qh == h && qd == d => (b, n),
            _ => bail!("MultiHeadAttention: q has shape {:?}, expected [B, {h}, N, {d}]", q.dims()),
        };
        for (name, t) in [("k", k), ("v", v)] {
            if t.dims() != [b, hkv, n, d] {
                bail!("MultiHeadAttention: {name} has shape {:?}, expected [{b}, {hkv}, {n}, {d}]", t.dims());
            }
        }
        if let Some(cached) = self.cache.k()? {
            if cached.dim(0)? != b || cached.dtype() != k.dtype() || !cached.device().same_device(k.device()) {
                bail!(
                    "MultiHeadAttention: the cache holds B={} {:?} on {:?}; got B={b} {:?} on {:?} (call reset() first)",
                    cached.dim(0)?,
                    cached.dtype(),
                    cached.device().location(),
                    k.dtype(),
                    k.device().location()
                );
            }
        }
        // The cached views are narrowed slices of a larger buffer: strided, passed without a copy.
        let (k_all, v_all) = self.cache.append(&k.contiguous()?, &v.contiguous()?)?;
        fused_attention_with(q, &k_all, &v_all, &self.config)
    }

    /// Tokens in the cache.
    pub fn cache_len(&self) -> usize {
        self.cache.current_seq_len()
    }

    /// Empties the cache (a new sequence).
    pub fn reset(&mut self) {
        self.cache.reset();
    }

    /// Query heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// Key/value heads.
    pub fn num_kv_heads(&self) -> usize {
        self.num_kv_heads
    }

    /// Head dim.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
}
