//! Next-token sampling (temperature, top-p) and generation with streamed text output.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tiny_gemm::models::gpt2::{Gpt2, KvCache};
use tokenizers::Tokenizer;

/// Picks the next token from logits: greedy when `temperature <= 0`, else sampling from the
/// smallest set of tokens whose probability reaches `top_p`. Seeded: same seed, same tokens.
pub struct Sampler {
    temperature: f64,
    top_p: f64,
    rng: StdRng,
}

impl Sampler {
    pub fn new(temperature: f64, top_p: f64, seed: u64) -> Self {
        Self { temperature, top_p, rng: StdRng::seed_from_u64(seed) }
    }

    /// `logits: [V]` (any float dtype, any device).
    pub fn sample(&mut self, logits: &Tensor) -> Result<u32> {
        let logits: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
        let argmax = || logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32);
        if self.temperature <= 0.0 {
            return Ok(argmax());
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, (((l - max) as f64) / self.temperature).exp()))
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = probs.iter().map(|p| p.1).sum();
        let mut kept = 0.0;
        let mut n = 0;
        for p in &probs {
            kept += p.1 / total;
            n += 1;
            if kept >= self.top_p {
                break;
            }
        }
        let probs = &probs[..n];
        let mass: f64 = probs.iter().map(|p| p.1).sum();
        let mut u = self.rng.random::<f64>() * mass;
        for &(id, p) in probs {
            if u < p {
                return Ok(id);
            }
            u -= p;
        }
        Ok(probs[n - 1].0)
    }
}

/// Generates up to `max_tokens` tokens after `prompt` (ids), calling `on_text` with each new
/// piece of decoded text as soon as it is complete. Stops early at the context limit. Returns the
/// generated ids.
pub fn generate(
    model: &Gpt2,
    tok: &Tokenizer,
    prompt: &[u32],
    max_tokens: usize,
    sampler: &mut Sampler,
    dev: &Device,
    mut on_text: impl FnMut(&str),
) -> Result<Vec<u32>> {
    let mut cache = KvCache::new();
    let mut out = Vec::new();
    let n_pos = model.config().n_positions;
    let mut input = Tensor::new(prompt, dev)?.unsqueeze(0)?;
    let mut printed = tok.decode(prompt, false).map_err(anyhow::Error::msg)?.len();
    let mut all = prompt.to_vec();
    for _ in 0..max_tokens {
        if cache.len() + input.dim(1)? > n_pos {
            break;
        }
        let logits = model.forward(&input, &mut cache, true)?; // [1, 1, V]
        let next = sampler.sample(&logits.squeeze(0)?.squeeze(0)?)?;
        out.push(next);
        all.push(next);
        let text = tok.decode(&all, false).map_err(anyhow::Error::msg)?;
        // print once a token completes a character (byte-level BPE can split a UTF-8 char)
        if text.len() > printed && !text.ends_with('\u{FFFD}') {
            on_text(&text[printed..]);
            printed = text.len();
        }
        input = Tensor::new(&[next], dev)?.unsqueeze(0)?;
    }
    Ok(out)
}
