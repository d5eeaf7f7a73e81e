//! Where the model comes from: the embedded Shakespeare GPT, the Hugging Face Hub, a local folder,
//! or seeded random weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use tiny_gemm::models::gpt2::{random_weights, Gpt2, Gpt2Config, Mode};
use tokenizers::Tokenizer;

use crate::Args;

/// The embedded model: trained by `examples/train_gpt` (see models/shakespeare/README.md).
pub mod embedded {
    pub const WEIGHTS: &[u8] = include_bytes!("../../models/shakespeare/model.safetensors");
    pub const CONFIG: &str = include_str!("../../models/shakespeare/config.json");
    pub const TOKENIZER: &[u8] = include_bytes!("../../models/shakespeare/tokenizer.json");
    /// Macbeth, held out of the training text.
    pub const HELDOUT: &str = include_str!("../../models/shakespeare/data/heldout.txt");
    pub const PROMPT: &str = "ROMEO:\nBut soft, what light";
}

enum Weights {
    Bytes(&'static [u8]),
    Files(Vec<PathBuf>),
    Random(HashMap<String, Tensor>),
}

pub struct Source {
    pub name: String,
    pub config: Gpt2Config,
    pub tokenizer: Option<Tokenizer>,
    /// Text for the perplexity column (held out of the embedded model's training).
    pub heldout: Option<&'static str>,
    pub default_prompt: &'static str,
    weights: Weights,
}

fn tokenizer_file(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(anyhow::Error::msg).with_context(|| format!("tokenizer {}", path.display()))
}

fn config_file(path: &Path) -> Result<Gpt2Config> {
    let json = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Gpt2Config::from_json(&json).with_context(|| path.display().to_string())
}

impl Source {
    pub fn open(args: &Args) -> Result<Self> {
        const GPT2_PROMPT: &str = "The meaning of life is";
        if let Some(size) = &args.random_init {
            let config = Gpt2Config::preset(size)?;
            return Ok(Self {
                name: format!("random-init {size}"),
                weights: Weights::Random(random_weights(&config, args.seed)?),
                config,
                tokenizer: None,
                heldout: None,
                default_prompt: GPT2_PROMPT,
            });
        }
        if let Some(dir) = &args.model_dir {
            let tok = dir.join("tokenizer.json");
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("--model-dir {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            files.sort();
            if files.is_empty() {
                anyhow::bail!("--model-dir {}: no *.safetensors weight file", dir.display());
            }
            return Ok(Self {
                name: dir.display().to_string(),
                config: config_file(&dir.join("config.json"))?,
                tokenizer: if tok.exists() { Some(tokenizer_file(&tok)?) } else { None },
                heldout: Some(embedded::HELDOUT),
                default_prompt: GPT2_PROMPT,
                weights: Weights::Files(files),
            });
        }
        if let Some(id) = &args.model_id {
            let repo = hf_hub::api::sync::Api::new()?.model(id.clone());
            let get = |f: &str| repo.get(f).with_context(|| format!("downloading {f} from {id}"));
            return Ok(Self {
                name: id.clone(),
                config: config_file(&get("config.json")?)?,
                tokenizer: Some(tokenizer_file(&get("tokenizer.json")?)?),
                heldout: Some(embedded::HELDOUT),
                default_prompt: GPT2_PROMPT,
                weights: Weights::Files(vec![get("model.safetensors")?]),
            });
        }
        Ok(Self {
            name: "embedded Shakespeare GPT".into(),
            config: Gpt2Config::from_json(embedded::CONFIG)?,
            tokenizer: Some(Tokenizer::from_bytes(embedded::TOKENIZER).map_err(anyhow::Error::msg)?),
            heldout: Some(embedded::HELDOUT),
            default_prompt: embedded::PROMPT,
            weights: Weights::Bytes(embedded::WEIGHTS),
        })
    }

    /// The model in `mode`, its weights converted to `dtype` on `dev`.
    pub fn build(&self, mode: Mode, dtype: DType, dev: &Device) -> Result<Gpt2> {
        Ok(match &self.weights {
            Weights::Bytes(b) => Gpt2::from_safetensors_bytes(b, &self.config, mode, dtype, dev)?,
            Weights::Files(f) => Gpt2::load(f, &self.config, mode, dtype, dev)?,
            Weights::Random(t) => Gpt2::from_tensors(t.clone(), &self.config, mode, dtype, dev)?,
        })
    }
}
