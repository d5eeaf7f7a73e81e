//! `--profile`: where a transformer block's time goes, op by op, for stock, fused and INT4.
//!
//! Two measurements of the same `Block::forward` code:
//! - the breakdown table: each op timed in context (the host's clock around it inside many
//!   back-to-back passes of the block, one synchronize at the end: the rows add up to the
//!   passes' wall time, which is what a caller waits for) and alone (many calls of that op only:
//!   hot caches, so it flatters ops that thrash them); the whole block is timed as in the sweeps.
//!   Medians over three rounds that alternate the three measurements, so drift in the host's
//!   speed hits them alike;
//! - a Chrome/Perfetto trace (`trace_<device>.json`, open in ui.perfetto.dev) of one forward pass
//!   per variant with a tracing span per op, synchronized on the GPU so spans show kernel time, and
//!   NVTX ranges so Nsight Systems shows the same names.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};

use crate::block::{Block, Kind, Weights};
use crate::cases::{randn, Dims};
use crate::harness::{measure, TimingOpts};

/// Timed bursts per op in isolation; the median is kept.
const ISOLATE_BURSTS: usize = 5;
/// Rounds of (whole block, ops in isolation) per variant; medians over rounds are reported.
const ROUNDS: usize = 3;

/// Per-op time (µs, mean per pass) inside `passes` back-to-back forward passes, from the host's
/// clock before every op and after each pass (one synchronize at the end). The rows add up to the
/// passes' wall time per pass, which is what the whole-block measurement sees.
fn in_context(dev: &Device, block: &Block, x: &Tensor, passes: usize) -> Result<Vec<(&'static str, f64)>> {
    let mut prof = Prof::new(dev, Mode::InContext);
    let mut ends = Vec::with_capacity(passes);
    for _ in 0..passes {
        block.forward(x, None, &mut prof)?;
        ends.push(prof.stamps.len());
        prof.stamps.push(("end", Instant::now()));
    }
    dev.synchronize()?;
    let done = Instant::now();
    let per_pass = ends[0];
    let mut ops: Vec<(&'static str, f64)> = prof.stamps[..per_pass].iter().map(|(n, _)| (*n, 0.0)).collect();
    let mut start = 0;
    for (p, &end) in ends.iter().enumerate() {
        for (j, op) in ops.iter_mut().enumerate() {
            // the last op of the last pass also owns the final drain of the GPU queue
            let until = if p + 1 == passes && j + 1 == per_pass { done } else { prof.stamps[start + j + 1].1 };
            op.1 += until.duration_since(prof.stamps[start + j].1).as_secs_f64() * 1e6 / passes as f64;
        }
        start = end + 1;
    }
    Ok(ops)
}

/// Each op's median over rounds of (op, µs) records (the rounds list the same ops in order).
fn median_per_op(rounds: &[Vec<(&'static str, f64)>]) -> Vec<(String, f64)> {
    (0..rounds[0].len())
        .map(|j| (rounds[0][j].0.to_string(), median(rounds.iter().map(|r| r[j].1).collect())))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

enum Mode {
    Off,
    /// synchronize around each op, emit a span and an NVTX range
    Trace,
    /// time each op alone: bursts of `iters` back-to-back calls, one synchronize each
    Isolate {
        iters: usize,
    },
    /// time each op where it runs, inside back-to-back passes: the host's clock before every op,
    /// no synchronize (so on a GPU an op is charged what the host spent issuing it, including any
    /// wait for a full launch queue)
    InContext,
}

/// Wraps every op call of a [`Block`] forward pass.
pub struct Prof {
    dev: Device,
    mode: Mode,
    /// (op, µs per call) in call order
    pub records: Vec<(&'static str, f64)>,
    /// InContext: (op, host clock before it), over all passes
    stamps: Vec<(&'static str, Instant)>,
}

/// A span named after the op (tracing wants static span names, so the block's ops are listed).
macro_rules! op_span {
    ($name:expr, [$($n:literal),* $(,)?]) => {
        match $name {
            $($n => tracing::info_span!($n),)*
            other => tracing::info_span!("op", name = other),
        }
    };
}

impl Prof {
    pub fn off() -> Self {
        Self { dev: Device::Cpu, mode: Mode::Off, records: Vec::new(), stamps: Vec::new() }
    }

    fn new(dev: &Device, mode: Mode) -> Self {
        Self { dev: dev.clone(), mode, records: Vec::new(), stamps: Vec::new() }
    }

    /// Runs one op of the forward pass (`f` is pure, so isolation may call it many times).
    pub fn op<T>(&mut self, name: &'static str, f: impl Fn() -> Result<T>) -> Result<T> {
        match self.mode {
            Mode::Off => f(),
            Mode::Trace => {
                self.dev.synchronize()?;
                let span = op_span!(
                    name,
                    [
                        "ln1",
                        "qkv_proj",
                        "split_heads",
                        "attention",
                        "merge_heads",
                        "out_proj",
                        "residual+ln2",
                        "fc1",
                        "gelu",
                        "bias+gelu",
                        "fc2",
                        "fused_mlp",
                        "residual",
                    ]
                )
                .entered();
                nvtx::range_push!("{name}");
                let start = Instant::now();
                let out = f()?;
                self.dev.synchronize()?;
                self.records.push((name, start.elapsed().as_secs_f64() * 1e6));
                nvtx::range_pop!();
                drop(span);
                Ok(out)
            }
            Mode::InContext => {
                self.stamps.push((name, Instant::now()));
                f()
            }
            Mode::Isolate { iters } => {
                let out = f()?; // warm-up, and the value the pass goes on with
                self.dev.synchronize()?;
                // median of several bursts, as the whole block is timed
                let mut bursts = Vec::with_capacity(ISOLATE_BURSTS);
                for _ in 0..ISOLATE_BURSTS {
                    let start = Instant::now();
                    for _ in 0..iters {
                        std::hint::black_box(f()?);
                    }
                    self.dev.synchronize()?;
                    bursts.push(start.elapsed().as_secs_f64() * 1e6 / iters as f64);
                }
                bursts.sort_by(f64::total_cmp);
                self.records.push((name, bursts[ISOLATE_BURSTS / 2]));
                Ok(out)
            }
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct VariantProfile {
    pub variant: &'static str,
    /// the whole block, timed like the sweeps (µs, median)
    pub block_us: f64,
    /// per op, in call order, timed in context: the host's clock inside back-to-back passes (µs)
    pub ops: Vec<(String, f64)>,
    pub ops_sum_us: f64,
    /// per op, each timed alone (many calls of that op only: hot caches, no neighbours) (µs)
    pub isolated_ops: Vec<(String, f64)>,
    pub isolated_sum_us: f64,
    /// one synchronized pass (the trace), per op (µs)
    pub traced_ops: Vec<(String, f64)>,
}

pub fn run(
    dev: &Device,
    dtype: DType,
    d: Dims,
    tokens: usize,
    opts: TimingOpts,
    out: &Path,
) -> Result<Vec<VariantProfile>> {
    let w = Weights::random(d, dtype, dev)?;
    let x: Tensor = randn(&[1, tokens, d.d_model], 1.0, dtype, dev)?;
    let iters = if dev.is_cuda() { 100 } else { 3 };
    let passes = if dev.is_cuda() { 100 } else { 20 };
    let dev_name = if dev.is_cuda() { "cuda" } else { "cpu" };
    let trace_path = out.join(format!("trace_{dev_name}.json"));
    let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new().file(&trace_path).include_args(true).build();
    let subscriber = {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry().with(layer)
    };
    let mut profiles = Vec::new();
    tracing::subscriber::with_default(subscriber, || -> Result<()> {
        let kinds = [Kind::Stock, Kind::Fused, Kind::Int4];
        let blocks = kinds.iter().map(|&k| Block::new(&w, k, d, &[tokens])).collect::<Result<Vec<_>>>()?;
        // One discarded round first (the first timings of a process run on a cold GPU), then
        // ROUNDS rounds that each time every variant's whole block and its ops in isolation, so a
        // slow spell of the host lands on the whole block and on its ops alike; medians over rounds.
        for block in &blocks {
            measure(dev, 1, opts, |_| {
                block.forward(&x, None, &mut Prof::off())?;
                Ok(())
            })?;
        }
        let mut wholes = vec![Vec::new(); blocks.len()];
        let mut isolated: Vec<Vec<Vec<(&'static str, f64)>>> = vec![Vec::new(); blocks.len()];
        let mut contexts: Vec<Vec<Vec<(&'static str, f64)>>> = vec![Vec::new(); blocks.len()];
        for _ in 0..ROUNDS {
            for (i, block) in blocks.iter().enumerate() {
                let whole = measure(dev, 1, opts, |_| {
                    block.forward(&x, None, &mut Prof::off())?;
                    Ok(())
                })?;
                wholes[i].push(whole.median_us);
                let mut iso = Prof::new(dev, Mode::Isolate { iters });
                block.forward(&x, None, &mut iso)?;
                isolated[i].push(iso.records);
                contexts[i].push(in_context(dev, block, &x, passes)?);
            }
        }
        for (i, (&kind, block)) in kinds.iter().zip(&blocks).enumerate() {
            let mut trace = Prof::new(dev, Mode::Trace);
            {
                let _pass = tracing::info_span!("block_forward", variant = kind.name()).entered();
                block.forward(&x, None, &mut trace)?;
            }
            let ops = median_per_op(&isolated[i]);
            let ctx = median_per_op(&contexts[i]);
            profiles.push(VariantProfile {
                variant: kind.name(),
                block_us: median(wholes[i].clone()),
                ops_sum_us: ctx.iter().map(|o| o.1).sum(),
                ops: ctx,
                isolated_sum_us: ops.iter().map(|o| o.1).sum(),
                isolated_ops: ops,
                traced_ops: trace.records.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
            });
        }
        Ok(())
    })?;
    drop(guard); // flushes the trace file
    print_breakdown(&profiles, tokens, d);
    println!("wrote {} (open in https://ui.perfetto.dev)", trace_path.display());
    Ok(profiles)
}

fn print_breakdown(profiles: &[VariantProfile], tokens: usize, d: Dims) {
    println!(
        "block prefill of {tokens} tokens, d_model {}, {} heads, ffn {}: µs per op in context (host clock inside \
         running passes), its share, and the op timed alone",
        d.d_model, d.heads, d.hidden
    );
    for p in profiles {
        println!("\n[{}]{:>23}{:>8}{:>11}", p.variant, "in context", "share", "alone");
        for ((n, t), (_, alone)) in p.ops.iter().zip(&p.isolated_ops) {
            println!("  {n:<14} {t:>10.1} µs {:>5.1}% {alone:>8.1} µs", 100.0 * t / p.ops_sum_us);
        }
        println!("  {:<14} {:>10.1} µs        {:>8.1} µs", "sum of ops", p.ops_sum_us, p.isolated_sum_us);
        println!(
            "  {:<14} {:>10.1} µs   (in context / block = {:.2}; alone / block = {:.2})",
            "whole block",
            p.block_us,
            p.ops_sum_us / p.block_us,
            p.isolated_sum_us / p.block_us
        );
    }
}
