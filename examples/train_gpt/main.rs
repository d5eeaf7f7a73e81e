//! Trains the embedded Shakespeare GPT (`models/shakespeare/`): a byte-level BPE tokenizer
//! (`tokenizers`), then a small GPT-2 (`tiny_gemm::models::gpt2`, [`Mode::Train`]) with candle's
//! AdamW, keeping the weights of the best validation loss.
//!
//! ```sh
//! python3 scripts/shakespeare_corpus.py              # models/shakespeare/data/{train,heldout}.txt
//! cargo run --release --example train_gpt -- --tokenizer-only   # models/shakespeare/tokenizer.json
//! cargo run --release --features cuda --example train_gpt -- --max-minutes 6   # the weights
//! ```
//! The last 5% of `train.txt` is the validation split (model selection); `heldout.txt` (Macbeth)
//! is only evaluated, at the end, for the perplexity the README reports.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tiny_gemm::models::gpt2::{Gpt2, Gpt2Config, KvCache, Mode};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::Tokenizer;

#[derive(Parser, Debug)]
struct Args {
    /// Folder with train.txt and heldout.txt (scripts/shakespeare_corpus.py).
    #[arg(long, default_value = "models/shakespeare/data")]
    data_dir: PathBuf,
    /// Where tokenizer.json, model.safetensors, config.json and train_log.txt go.
    #[arg(long, default_value = "models/shakespeare")]
    out_dir: PathBuf,
    /// Train (or retrain) the tokenizer and stop.
    #[arg(long)]
    tokenizer_only: bool,
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    #[arg(long, default_value_t = 6)]
    n_layer: usize,
    #[arg(long, default_value_t = 256)]
    n_embd: usize,
    #[arg(long, default_value_t = 4)]
    n_head: usize,
    /// Context length (n_positions).
    #[arg(long, default_value_t = 256)]
    ctx: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak learning rate (linear warm-up, cosine decay to 10%).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.1)]
    dropout: f32,
    /// Optimizer steps; training stops at --max-minutes too, the cosine schedule then following
    /// the elapsed time instead.
    #[arg(long, default_value_t = 4000)]
    steps: usize,
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Wall-clock budget in minutes.
    #[arg(long, default_value_t = 40.0)]
    max_minutes: f64,
    #[arg(long, default_value_t = 250)]
    eval_every: usize,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 16)]
    eval_batches: usize,
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Train on the CPU even in a cuda build.
    #[arg(long)]
    cpu: bool,
}

fn train_tokenizer(train: &Path, vocab_size: usize, out: &Path) -> Result<Tokenizer> {
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .show_progress(false)
        .build()
        .into();
    tok.train_from_files(&mut trainer, vec![train.display().to_string()]).map_err(anyhow::Error::msg)?;
    tok.save(out, false).map_err(anyhow::Error::msg)?;
    Ok(tok)
}

fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tok.encode(text, false).map_err(anyhow::Error::msg)?.get_ids().to_vec())
}

/// A batch of `batch` windows of `ctx + 1` tokens starting at the given offsets: (inputs, targets).
fn batch_at(data: &[u32], starts: &[usize], ctx: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(starts.len() * ctx);
    let mut y = Vec::with_capacity(starts.len() * ctx);
    for &s in starts {
        x.extend_from_slice(&data[s..s + ctx]);
        y.extend_from_slice(&data[s + 1..s + ctx + 1]);
    }
    let n = starts.len();
    Ok((Tensor::from_vec(x, (n, ctx), dev)?, Tensor::from_vec(y, (n, ctx), dev)?))
}

fn loss_of(model: &Gpt2, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let logits = model.forward(x, &mut KvCache::new(), false)?;
    let v = logits.dim(2)?;
    Ok(candle_nn::loss::cross_entropy(&logits.reshape(((), v))?, &y.flatten_all()?)?)
}

/// Mean loss over `batches` evenly spaced batches of `data` (deterministic).
fn evaluate(model: &Gpt2, data: &[u32], ctx: usize, batch: usize, batches: usize, dev: &Device) -> Result<f64> {
    let windows = (data.len() - 1) / ctx;
    let n = (batches * batch).min(windows);
    let starts: Vec<usize> = (0..n).map(|i| (i * windows / n) * ctx).collect();
    let mut total = 0.0;
    for chunk in starts.chunks(batch) {
        let (x, y) = batch_at(data, chunk, ctx, dev)?;
        total += loss_of(model, &x, &y)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
    }
    Ok(total / n as f64)
}

/// SplitMix64, for batch sampling reproducible from `--seed`.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out_dir)?;
    let train_path = args.data_dir.join("train.txt");
    let train_text = std::fs::read_to_string(&train_path)
        .with_context(|| format!("{} (run scripts/shakespeare_corpus.py first)", train_path.display()))?;
    let tok_path = args.out_dir.join("tokenizer.json");
    if args.tokenizer_only {
        let t0 = Instant::now();
        let tok = train_tokenizer(&train_path, args.vocab_size, &tok_path)?;
        let n = encode(&tok, &train_text)?.len();
        println!(
            "tokenizer: {} tokens in vocab, train.txt = {n} tokens ({:.2} chars/token), {:.1}s -> {}",
            tok.get_vocab_size(true),
            train_text.len() as f64 / n as f64,
            t0.elapsed().as_secs_f64(),
            tok_path.display()
        );
        return Ok(());
    }
    let tok = Tokenizer::from_file(&tok_path)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{} (run with --tokenizer-only first)", tok_path.display()))?;
    let heldout = encode(&tok, &std::fs::read_to_string(args.data_dir.join("heldout.txt"))?)?;
    let all = encode(&tok, &train_text)?;
    let split = all.len() * 95 / 100;
    let (train, val) = (&all[..split], &all[split..]);
    let dev = if args.cpu { Device::Cpu } else { Device::cuda_if_available(0)? };
    if dev.is_cuda() {
        // TF32 matmuls: ~8x the f32 throughput, plenty of precision for training
        #[cfg(feature = "cuda")]
        candle_core::cuda::set_gemm_reduced_precision_f32(true);
    }
    let vocab = tok.get_vocab_size(true);
    let cfg = Gpt2Config::sized(vocab, args.ctx, args.n_embd, args.n_layer, args.n_head);
    println!(
        "{dev:?}: {} params, train {} tokens, val {} tokens, heldout {} tokens",
        cfg.num_params(),
        train.len(),
        val.len(),
        heldout.len()
    );
    if train.len() <= args.ctx + 1 || val.len() <= args.ctx + 1 {
        bail!("not enough data for a context of {}", args.ctx);
    }
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let model = Gpt2::new(vb.clone(), &cfg, Mode::Train { dropout: args.dropout })?;
    let eval_model = Gpt2::new(vb, &cfg, Mode::Train { dropout: 0.0 })?; // same Vars, no dropout
    let params = ParamsAdamW { lr: args.lr, weight_decay: args.weight_decay, beta2: 0.99, ..Default::default() };
    let mut opt = AdamW::new(varmap.all_vars(), params)?;
    let mut rng = Rng(args.seed);
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")?);
    let (mut best, mut log) = ((f64::INFINITY, 0usize), String::new());
    let mut last_step = 0;
    let weights = args.out_dir.join("model.safetensors");
    let t0 = Instant::now();
    for step in 1..=args.steps {
        // the schedule runs to --steps or to --max-minutes, whichever comes first
        let progress = (step as f64 / args.steps as f64).max(t0.elapsed().as_secs_f64() / (args.max_minutes * 60.0));
        let lr = if step <= args.warmup {
            args.lr * step as f64 / args.warmup as f64
        } else {
            args.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()))
        };
        opt.set_learning_rate(lr);
        let starts: Vec<usize> = (0..args.batch).map(|_| rng.below(train.len() - args.ctx - 1)).collect();
        let (x, y) = batch_at(train, &starts, args.ctx, &dev)?;
        let loss = loss_of(&model, &x, &y)?;
        opt.backward_step(&loss)?;
        last_step = step;
        let out_of_time = t0.elapsed().as_secs_f64() > args.max_minutes * 60.0;
        if step % args.eval_every == 0 || step == args.steps || out_of_time {
            let train_loss = loss.to_scalar::<f32>()?;
            let val_loss = evaluate(&eval_model, val, args.ctx, args.batch, args.eval_batches, &dev)?;
            let line = format!(
                "step {step} lr {lr:.2e} train {train_loss:.4} val {val_loss:.4} ({:.0}s)",
                t0.elapsed().as_secs_f64()
            );
            if bar.is_hidden() {
                println!("{line}"); // not a terminal: no bar, plain log lines
            } else {
                bar.println(&line);
            }
            log.push_str(&line);
            log.push('\n');
            bar.set_message(format!("val {val_loss:.3}"));
            if val_loss < best.0 {
                best = (val_loss, step);
                varmap.save(&weights)?;
            }
        }
        bar.inc(1);
        if out_of_time {
            break;
        }
    }
    bar.finish();
    // the best checkpoint, evaluated on the held-out play in full
    let best_model = Gpt2::load(&[&weights], &cfg, Mode::Stock, DType::F32, &dev)?;
    let windows = (heldout.len() - 1) / args.ctx;
    let held_loss = evaluate(&best_model, &heldout, args.ctx, args.batch, windows.div_ceil(args.batch), &dev)?;
    let summary = format!(
        "steps run {last_step} of {}; best val loss {:.4} at step {}; heldout loss {held_loss:.4} (perplexity {:.2}); \
         {:.0}s on {dev:?}\nargs: {args:?}\n",
        args.steps,
        best.0,
        best.1,
        held_loss.exp(),
        t0.elapsed().as_secs_f64()
    );
    print!("{summary}");
    log.push_str(&summary);
    std::fs::write(args.out_dir.join("config.json"), cfg.to_json())?;
    std::fs::write(args.out_dir.join("train_log.txt"), log)?;
    Ok(())
}
