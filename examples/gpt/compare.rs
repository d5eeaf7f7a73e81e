//! `--compare`: every mode on the same tokens, one table: prefill and decode speed, weight memory,
//! logit agreement with stock, held-out perplexity.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, IndexOp, Tensor, D};
use tiny_gemm::models::gpt2::{Gpt2, KvCache, Mode};

use crate::source::Source;
use crate::Args;

struct Row {
    prefill_tps: f64,
    decode_ms: f64,
    weight_bytes: usize,
    /// max |Δlogit| vs stock and top-1 agreement (fraction of positions)
    vs_stock: Option<(f32, f64)>,
    perplexity: Option<f64>,
}

/// Seconds per call of `f`, averaged over enough calls to take ~0.3 s (at least 2), after one
/// warm-up call; GPU work is synchronized before the clock is read.
fn time_per_call(dev: &Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    dev.synchronize()?;
    let (t0, mut n) = (Instant::now(), 0u32);
    while n < 2 || t0.elapsed().as_secs_f64() < 0.3 {
        f()?;
        n += 1;
    }
    dev.synchronize()?;
    Ok(t0.elapsed().as_secs_f64() / n as f64)
}

/// Mean cross-entropy of `ids` under `model`, in windows of the context length.
fn perplexity(model: &Gpt2, ids: &[u32], dev: &Device) -> Result<f64> {
    let ctx = model.config().n_positions.min(1024);
    let (mut total, mut count) = (0f64, 0usize);
    for w in ids.chunks(ctx + 1).filter(|w| w.len() > 1) {
        let x = Tensor::new(&w[..w.len() - 1], dev)?.unsqueeze(0)?;
        let y = Tensor::new(&w[1..], dev)?;
        let logits = model.forward(&x, &mut KvCache::new(), false)?.squeeze(0)?.to_dtype(DType::F32)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()? as f64;
        total += loss * (w.len() - 1) as f64;
        count += w.len() - 1;
    }
    Ok((total / count as f64).exp())
}

fn measure(
    model: &Gpt2,
    prompt: &Tensor,
    decode_steps: usize,
    stock: Option<&Tensor>,
    heldout: Option<&[u32]>,
    dev: &Device,
) -> Result<(Row, Tensor)> {
    let t = prompt.dim(1)?;
    let prefill = time_per_call(dev, || {
        model.forward(prompt, &mut KvCache::new(), true)?;
        Ok(())
    })?;
    // decode: greedy steps of one token each after a prefill (the token read back every step,
    // as generation does); two untimed steps first, so one-time costs (loading the decode-sized
    // kernels' modules) stay out of the clock, as the prefill's warm-up call does for prefill
    let mut warm = KvCache::new();
    let mut next = model.forward(prompt, &mut warm, true)?.i((0, 0))?.argmax(D::Minus1)?.to_scalar::<u32>()?;
    for _ in 0..2 {
        let x = Tensor::new(&[next], dev)?.unsqueeze(0)?;
        next = model.forward(&x, &mut warm, true)?.i((0, 0))?.argmax(D::Minus1)?.to_scalar::<u32>()?;
    }
    let mut cache = KvCache::new();
    let mut next = model.forward(prompt, &mut cache, true)?.i((0, 0))?.argmax(D::Minus1)?.to_scalar::<u32>()?;
    dev.synchronize()?;
    let t0 = Instant::now();
    for _ in 0..decode_steps {
        let x = Tensor::new(&[next], dev)?.unsqueeze(0)?;
        next = model.forward(&x, &mut cache, true)?.i((0, 0))?.argmax(D::Minus1)?.to_scalar::<u32>()?;
    }
    dev.synchronize()?;
    let decode_ms = t0.elapsed().as_secs_f64() * 1e3 / decode_steps.max(1) as f64;
    let logits = model.forward(prompt, &mut KvCache::new(), false)?.squeeze(0)?.to_dtype(DType::F32)?;
    let logits = logits.to_device(&Device::Cpu)?;
    let vs_stock = match stock {
        Some(s) => {
            let diff = (&logits - s)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let same = logits.argmax(D::Minus1)?.eq(&s.argmax(D::Minus1)?)?.to_dtype(DType::F32)?.mean_all()?;
            Some((diff, same.to_scalar::<f32>()? as f64))
        }
        None => None,
    };
    let perplexity = heldout.map(|ids| perplexity(model, ids, dev)).transpose()?;
    let row =
        Row { prefill_tps: t as f64 / prefill, decode_ms, weight_bytes: model.weight_bytes(), vs_stock, perplexity };
    Ok((row, logits))
}

pub fn run(src: &Source, modes: &[Mode], dtype: DType, dev: &Device, args: &Args) -> Result<()> {
    let cfg = &src.config;
    let decode_steps = args.decode_steps.min(cfg.n_positions.saturating_sub(2));
    let prefill_len = args.prefill_tokens.min(cfg.n_positions - decode_steps - 1).max(1);
    // the prompt: held-out text when there is a tokenizer, else seeded random ids
    let (prompt_ids, heldout): (Vec<u32>, Option<Vec<u32>>) = match (&src.tokenizer, src.heldout) {
        (Some(tok), Some(text)) => {
            let ids = tok.encode(text, false).map_err(anyhow::Error::msg)?.get_ids().to_vec();
            let ppl = if args.ppl_tokens == 0 { ids.clone() } else { ids[..args.ppl_tokens.min(ids.len())].to_vec() };
            (ids.iter().copied().cycle().take(prefill_len).collect(), Some(ppl))
        }
        _ => {
            let mut s = args.seed;
            let ids = (0..prefill_len)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 33) % cfg.vocab_size as u64) as u32
                })
                .collect();
            (ids, None)
        }
    };
    let prompt = Tensor::new(prompt_ids.as_slice(), dev)?.unsqueeze(0)?;
    println!(
        "\n=== compare: {} on {}, {dtype:?}, batch 1: prefill {prefill_len} tokens, decode {decode_steps} steps{} ===",
        src.name,
        if dev.is_cuda() { "CUDA" } else { "CPU" },
        match &heldout {
            Some(h) => format!(", perplexity on {} held-out tokens", h.len()),
            None => String::new(),
        }
    );
    println!(
        "{:<6} {:>14} {:>15} {:>13} {:>12} {:>12} {:>12} {:>11}",
        "mode",
        "prefill tok/s",
        "decode ms/tok",
        "decode tok/s",
        "weights MiB",
        "max |Δlogit|",
        "top-1 agree",
        "perplexity"
    );
    let mut stock_logits: Option<Tensor> = None;
    let mut stock_row: Option<(f64, f64)> = None;
    for &mode in modes {
        let model = match src.build(mode, dtype, dev) {
            Ok(m) => m,
            Err(e) => {
                println!("{:<6} not run: {e}", mode.name());
                continue;
            }
        };
        let (row, logits) = measure(&model, &prompt, decode_steps, stock_logits.as_ref(), heldout.as_deref(), dev)?;
        let speedup = |v: f64, base: Option<f64>| match base {
            Some(b) if mode != Mode::Stock => format!("{v:.1} ({:.2}x)", v / b),
            _ => format!("{v:.1}"),
        };
        let (dl, top1) = match row.vs_stock {
            Some((d, a)) => (format!("{d:.2e}"), format!("{:.2}%", 100.0 * a)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<6} {:>14} {:>15.2} {:>13} {:>12.1} {:>12} {:>12} {:>11}",
            mode.name(),
            speedup(row.prefill_tps, stock_row.map(|s| s.0)),
            row.decode_ms,
            speedup(1e3 / row.decode_ms, stock_row.map(|s| s.1)),
            row.weight_bytes as f64 / (1 << 20) as f64,
            dl,
            top1,
            row.perplexity.map_or("-".into(), |p| format!("{p:.3}")),
        );
        if mode == Mode::Stock {
            stock_logits = Some(logits);
            stock_row = Some((row.prefill_tps, 1e3 / row.decode_ms));
        }
    }
    Ok(())
}
