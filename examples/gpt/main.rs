//! A GPT-2 on stock candle layers vs the crate's fused ops vs fused ops + INT4 weights.
//!
//! ```sh
//! cargo run --release --example gpt                      # the embedded Shakespeare GPT, offline, CPU
//! cargo run --release --example gpt -- --model-id openai-community/gpt2 --prompt "Hello" --compare
//! cargo run --release --features cuda --example gpt -- --random-init gpt2 --compare
//! ```
//! With no model flags it loads the small GPT trained by `examples/train_gpt` (embedded in the
//! binary: `models/shakespeare/`), generates from a default prompt and prints the `--compare`
//! table. `--tracing` writes a Chrome/Perfetto trace (`trace-*.json`) with a span per op.

mod compare;
mod sampling;
mod source;

use std::io::Write;

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use clap::{Parser, ValueEnum};
use tiny_gemm::models::gpt2::Mode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Stock,
    Fused,
    Int4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DTypeArg {
    F32,
    F16,
    Bf16,
}

#[derive(Parser, Debug)]
#[command(about = "GPT-2 on stock candle layers vs tiny-gemm's fused ops")]
struct Args {
    /// A Hugging Face GPT-2 repo (openai-community/gpt2, distilbert/distilgpt2, openai-community/gpt2-medium).
    #[arg(long, conflicts_with_all = ["model_dir", "random_init"])]
    model_id: Option<String>,
    /// A local folder with config.json, model.safetensors and (optional) tokenizer.json.
    #[arg(long, conflicts_with = "random_init")]
    model_dir: Option<std::path::PathBuf>,
    /// Seeded random weights of a GPT-2 size (gpt2, gpt2-medium, distilgpt2): speed, no download.
    #[arg(long)]
    random_init: Option<String>,
    /// How the layers run: stock candle layers, the fused ops, or fused + INT4 weights.
    #[arg(long, value_enum, default_value_t = ModeArg::Int4)]
    mode: ModeArg,
    /// INT4 group size (along the input dimension).
    #[arg(long, default_value_t = 128)]
    group_size: usize,
    /// Run on the CPU even in a cuda build with a GPU.
    #[arg(long)]
    cpu: bool,
    /// Weight/activation dtype (default f32 on the CPU, f16 on CUDA).
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    #[arg(long)]
    prompt: Option<String>,
    #[arg(long, default_value_t = 100)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    #[arg(long, default_value_t = 299792458)]
    seed: u64,
    /// Run stock, fused and int4 on the same input and print one table (on by default for the
    /// embedded model when no other flag asks for something else).
    #[arg(long)]
    compare: bool,
    /// Skip text generation (only --compare).
    #[arg(long)]
    no_generate: bool,
    /// --compare: tokens in the timed prefill (capped by the context length).
    #[arg(long, default_value_t = 512)]
    prefill_tokens: usize,
    /// --compare: timed decode steps after the prefill.
    #[arg(long, default_value_t = 32)]
    decode_steps: usize,
    /// --compare: held-out tokens for the perplexity (0: all of the held-out text).
    #[arg(long, default_value_t = 2048)]
    ppl_tokens: usize,
    /// Write a Chrome trace (trace-<timestamp>.json) with a span per op.
    #[arg(long)]
    tracing: bool,
}

impl Args {
    fn model_mode(&self, m: ModeArg) -> Mode {
        match m {
            ModeArg::Stock => Mode::Stock,
            ModeArg::Fused => Mode::Fused,
            ModeArg::Int4 => Mode::Int4 { group_size: self.group_size },
        }
    }
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    let _guard = if args.tracing {
        use tracing_subscriber::prelude::*;
        let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new().build();
        tracing_subscriber::registry().with(layer).init();
        Some(guard)
    } else {
        None
    };
    let default_demo = args.model_id.is_none() && args.model_dir.is_none() && args.random_init.is_none();
    if default_demo && std::env::args().len() == 1 {
        args.compare = true;
    }
    let dev = if args.cpu { Device::Cpu } else { Device::cuda_if_available(0)? };
    let dtype = match args.dtype {
        Some(DTypeArg::F32) => DType::F32,
        Some(DTypeArg::F16) => DType::F16,
        Some(DTypeArg::Bf16) => DType::BF16,
        None if dev.is_cuda() => DType::F16,
        None => DType::F32,
    };
    let src = source::Source::open(&args)?;
    let cfg = src.config.clone();
    println!(
        "model: {} ({} layers, {} wide, {} heads, vocab {}, context {}; {:.1}M params) on {} in {dtype:?}",
        src.name,
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_head,
        cfg.vocab_size,
        cfg.n_positions,
        cfg.num_params() as f64 / 1e6,
        if dev.is_cuda() { "CUDA" } else { "CPU" },
    );

    if !args.no_generate {
        let mode = args.model_mode(args.mode);
        let model = src.build(mode, dtype, &dev)?;
        let Some(tok) = src.tokenizer.as_ref() else {
            bail!("{} has no tokenizer: use --compare --no-generate for speed runs", src.name);
        };
        let prompt = args.prompt.clone().unwrap_or_else(|| src.default_prompt.to_string());
        let ids = tok.encode(prompt.as_str(), false).map_err(anyhow::Error::msg)?.get_ids().to_vec();
        if ids.is_empty() {
            bail!("the prompt encodes to no tokens");
        }
        println!(
            "--- {} mode, temperature {}, top-p {}, seed {} ---",
            mode.name(),
            args.temperature,
            args.top_p,
            args.seed
        );
        print!("{prompt}");
        std::io::stdout().flush()?;
        let mut sampler = sampling::Sampler::new(args.temperature, args.top_p, args.seed);
        let t0 = std::time::Instant::now();
        let out = sampling::generate(&model, tok, &ids, args.max_tokens, &mut sampler, &dev, |piece| {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        })?;
        let secs = t0.elapsed().as_secs_f64();
        println!("\n--- {} tokens in {secs:.2}s ({:.1} tokens/s) ---", out.len(), out.len() as f64 / secs);
    }

    if args.compare {
        let modes = [ModeArg::Stock, ModeArg::Fused, ModeArg::Int4].map(|m| args.model_mode(m));
        compare::run(&src, &modes, dtype, &dev, &args)?;
    }
    Ok(())
}
