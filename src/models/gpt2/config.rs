//! GPT-2 hyper-parameters, read from and written to Hugging Face's `config.json`.

use candle_core::{bail, Result};

/// The GPT-2 hyper-parameters the model needs (Hugging Face `GPT2Config` field names).
#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Config {
    /// Vocabulary size (`vocab_size`).
    pub vocab_size: usize,
    /// Maximum sequence length, the rows of the position table (`n_positions`).
    pub n_positions: usize,
    /// Hidden size (`n_embd`).
    pub n_embd: usize,
    /// Number of transformer blocks (`n_layer`).
    pub n_layer: usize,
    /// Attention heads per block (`n_head`); the head dim is `n_embd / n_head`.
    pub n_head: usize,
    /// Width of the MLP's hidden layer (`n_inner`, default `4 * n_embd`).
    pub n_inner: usize,
    /// LayerNorm epsilon (`layer_norm_epsilon`).
    pub layer_norm_epsilon: f64,
}

impl Gpt2Config {
    /// GPT-2 small (124M): 12 layers, 768 wide, 12 heads.
    pub fn gpt2() -> Self {
        Self::sized(50257, 1024, 768, 12, 12)
    }

    /// GPT-2 medium (355M): 24 layers, 1024 wide, 16 heads.
    pub fn gpt2_medium() -> Self {
        Self::sized(50257, 1024, 1024, 24, 16)
    }

    /// distilgpt2 (82M): 6 layers, 768 wide, 12 heads.
    pub fn distilgpt2() -> Self {
        Self::sized(50257, 1024, 768, 6, 12)
    }

    /// A config with GPT-2's defaults for the rest (`n_inner = 4 * n_embd`, eps 1e-5).
    pub fn sized(vocab_size: usize, n_positions: usize, n_embd: usize, n_layer: usize, n_head: usize) -> Self {
        Self { vocab_size, n_positions, n_embd, n_layer, n_head, n_inner: 4 * n_embd, layer_norm_epsilon: 1e-5 }
    }

    /// The named preset (`gpt2`, `gpt2-medium`, `distilgpt2`).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "gpt2" => Self::gpt2(),
            "gpt2-medium" => Self::gpt2_medium(),
            "distilgpt2" => Self::distilgpt2(),
            other => bail!("unknown GPT-2 preset {other:?}; expected gpt2, gpt2-medium or distilgpt2"),
        })
    }

    /// Per-head width, `n_embd / n_head`.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Checks the sizes are consistent (non-zero, `n_embd` divisible by `n_head`).
    pub fn validate(&self) -> Result<()> {
        let Self { vocab_size, n_positions, n_embd, n_layer, n_head, n_inner, layer_norm_epsilon } = *self;
        if vocab_size == 0 || n_positions == 0 || n_embd == 0 || n_layer == 0 || n_head == 0 || n_inner == 0 {
            bail!("GPT-2 config has a zero size: {self:?}");
        }
        if n_embd % n_head != 0 {
            bail!("GPT-2 config: n_embd={n_embd} is not a multiple of n_head={n_head}");
        }
        if !(layer_norm_epsilon.is_finite() && layer_norm_epsilon >= 0.0) {
            bail!("GPT-2 config: layer_norm_epsilon={layer_norm_epsilon} must be finite and >= 0");
        }
        Ok(())
    }

    /// Parses a Hugging Face `config.json` (older `n_ctx` is accepted for `n_positions`).
    pub fn from_json(json: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| candle_core::Error::Msg(format!("config.json: {e}")))?;
        let get = |key: &str| v.get(key).and_then(|x| x.as_u64()).map(|x| x as usize);
        let need = |key: &str| get(key).ok_or_else(|| candle_core::Error::Msg(format!("config.json: missing {key}")));
        if let Some(act) = v.get("activation_function").and_then(|a| a.as_str()) {
            if !matches!(act, "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") {
                bail!("config.json: activation_function {act:?} is not supported (GPT-2 uses gelu_new)");
            }
        }
        let n_embd = need("n_embd")?;
        let cfg = Self {
            vocab_size: need("vocab_size")?,
            n_positions: get("n_positions")
                .or_else(|| get("n_ctx"))
                .ok_or_else(|| candle_core::Error::Msg("config.json: missing n_positions (or n_ctx)".into()))?,
            n_embd,
            n_layer: need("n_layer")?,
            n_head: need("n_head")?,
            n_inner: get("n_inner").unwrap_or(4 * n_embd),
            layer_norm_epsilon: v.get("layer_norm_epsilon").and_then(|x| x.as_f64()).unwrap_or(1e-5),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A `config.json` in the Hugging Face layout, readable by [`Gpt2Config::from_json`] and by
    /// `transformers`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "activation_function": "gelu_new",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "tie_word_embeddings": true,
        })
        .to_string()
    }

    /// Parameters (embeddings counted once: the LM head is tied).
    pub fn num_params(&self) -> usize {
        let (c, f) = (self.n_embd, self.n_inner);
        let block = 2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * f + f) + (f * c + c);
        self.vocab_size * c + self.n_positions * c + self.n_layer * block + 2 * c
    }
}

#[cfg(test)]
mod tests {
    use super::Gpt2Config;

    #[test]
    fn json_round_trip_and_param_count() {
        let cfg = Gpt2Config::gpt2();
        assert_eq!(Gpt2Config::from_json(&cfg.to_json()).unwrap(), cfg);
        assert_eq!(cfg.num_params(), 124_439_808); // the published GPT-2 small count
        assert!(Gpt2Config::from_json(r#"{"vocab_size": 10}"#).unwrap_err().to_string().contains("n_embd"));
        let bad = Gpt2Config { n_head: 5, ..Gpt2Config::gpt2() };
        assert!(bad.validate().unwrap_err().to_string().contains("n_head=5"));
    }
}
