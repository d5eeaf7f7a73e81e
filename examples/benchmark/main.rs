//! The seed's `benchmark_fused_transformer`, for Candle: fused ops vs stock Candle across sequence
//! lengths (prefill) and batch sizes (decode), with a table, a JSON file and PNG plots.
//!
//! ```sh
//! cargo run --release --example benchmark -- --mode seq_length --seq-lengths 128 256 512 1024 2048
//! cargo run --release --example benchmark -- --mode batch_size --batch-sizes 1 2 4 8 16 --op ffn
//! cargo run --release --features cuda --example benchmark -- --device cuda --op all
//! cargo run --release --example benchmark -- --profile        # per-op breakdown + Perfetto trace
//! ```

mod block;
mod cases;
mod harness;
mod profile;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{DType, Device, Result};
use clap::Parser;

use cases::{Case, Dims, Mode};
use harness::TimingOpts;
use report::{Meta, Report, Row};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Op {
    Attention,
    Ffn,
    Int4,
    Block,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DTypeArg {
    F16,
    Bf16,
    F32,
}

#[derive(Parser, Debug)]
#[command(about = "tiny-gemm fused ops vs stock Candle: latency sweeps, plots, profiles")]
struct Args {
    /// What to sweep: sequence length (prefill of one sequence) or batch size (one decode step).
    #[arg(long, value_enum, default_value = "seq_length")]
    mode: Mode,
    #[arg(long, num_args = 1.., default_values_t = [128, 256, 512, 1024, 2048])]
    seq_lengths: Vec<usize>,
    #[arg(long, num_args = 1.., default_values_t = [1, 2, 4, 8, 16])]
    batch_sizes: Vec<usize>,
    #[arg(long, value_enum, default_value = "all")]
    op: Op,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// Default: f16 on CUDA, f32 on the CPU.
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    #[arg(long, default_value_t = 512)]
    d_model: usize,
    #[arg(long, default_value_t = 8)]
    heads: usize,
    #[arg(long, default_value_t = 2048)]
    hidden: usize,
    /// Cached tokens per sequence in batch_size (decode) mode.
    #[arg(long, default_value_t = 512)]
    context: usize,
    #[arg(long, default_value_t = 128)]
    group_size: usize,
    /// Timed repeats per variant; the median is reported.
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Milliseconds one repeat should last.
    #[arg(long, default_value_t = 50)]
    target_ms: u64,
    /// Folder for the JSON file and the plots.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Per-op breakdown of one transformer block (table + Chrome/Perfetto trace) instead of a sweep.
    #[arg(long)]
    profile: bool,
    /// CUDA: turn off cudarc's per-buffer event tracking (candle's default is on). It only matters
    /// with several streams; candle uses one, so this measures what the events cost per op.
    #[arg(long)]
    no_event_tracking: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = match args.device {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Cuda => Device::new_cuda(0)?,
    };
    if args.no_event_tracking {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = &dev {
            // SAFETY: candle runs everything on one stream per device and so does this program;
            // the events only order work across streams.
            unsafe { cuda.disable_event_tracking() };
        }
        if !dev.is_cuda() {
            candle_core::bail!("--no-event-tracking is a CUDA option");
        }
    }
    let dtype = match args.dtype {
        Some(DTypeArg::F16) => DType::F16,
        Some(DTypeArg::Bf16) => DType::BF16,
        Some(DTypeArg::F32) => DType::F32,
        None if dev.is_cuda() => DType::F16,
        None => DType::F32,
    };
    let dims = Dims {
        d_model: args.d_model,
        heads: args.heads,
        hidden: args.hidden,
        context: args.context,
        group_size: args.group_size,
    };
    if dims.d_model % dims.heads != 0 {
        candle_core::bail!("--d-model {} is not a multiple of --heads {}", dims.d_model, dims.heads);
    }
    std::fs::create_dir_all(&args.out)?;
    let opts = TimingOpts { target: Duration::from_millis(args.target_ms), repeats: args.repeats.max(1) };
    let (card, driver) = card_info(&dev);
    let dev_name = if dev.is_cuda() { "cuda" } else { "cpu" };
    let meta = |mode: &str| Meta {
        card: card.clone(),
        driver: driver.clone(),
        device: dev_name.to_string(),
        dtype: format!("{dtype:?}").to_lowercase(),
        mode: mode.to_string(),
        dims,
        tiny_gemm_version: env!("CARGO_PKG_VERSION"),
        candle_version: candle_core_version(),
        date_utc: date_utc(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        event_tracking: dev.is_cuda() && !args.no_event_tracking,
        timing: "median of repeats, the variants' repeats interleaved",
    };

    if args.profile {
        let tokens = args.seq_lengths.first().copied().unwrap_or(512);
        let report = profile::run(&dev, dtype, dims, tokens, opts, &args.out)?;
        let path = args.out.join(format!("profile_{dev_name}.json"));
        let json = serde_json::json!({"meta": meta("profile"), "profile": report});
        std::fs::write(&path, serde_json::to_string_pretty(&json).map_err(candle_core::Error::wrap)?)?;
        println!("wrote {}", path.display());
        return Ok(());
    }

    println!("{card} (driver {driver}), {dtype:?}; measuring the card's peaks...");
    let peaks = harness::measure_peaks(&dev, dtype, opts)?;
    println!(
        "peaks: copy {:.0} GB/s, matmul {:.1} TFLOP/s; per-op host floor (8 elements): candle {:.1} µs, tiny-gemm {:.1} µs",
        peaks.bandwidth_gbs, peaks.matmul_tflops, peaks.candle_op_floor_us, peaks.tiny_gemm_op_floor_us
    );

    let (mode_name, points, x_label) = match args.mode {
        Mode::SeqLength => ("seq_length", args.seq_lengths.clone(), "sequence length (prefill tokens)"),
        Mode::BatchSize => ("batch_size", args.batch_sizes.clone(), "batch size (decode, one token each)"),
    };
    let ops: Vec<&str> = match args.op {
        Op::All => vec!["attention", "ffn", "int4", "block"],
        Op::Attention => vec!["attention"],
        Op::Ffn => vec!["ffn"],
        Op::Int4 => vec!["int4"],
        Op::Block => vec!["block"],
    };
    let bar = indicatif::ProgressBar::new((ops.len() * points.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed_precise}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    for op in &ops {
        for &x in &points {
            bar.set_message(format!("{op} x={x}"));
            let case = build_case(op, args.mode, x, dims, dtype, &dev)?;
            rows.extend(run_case(case, &dev, opts, &peaks)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    report::print_table(&rows);

    let report = Report { meta: meta(mode_name), peaks, rows };
    let suffix = if args.no_event_tracking { "_no_events" } else { "" };
    let stem = format!("{dev_name}_{mode_name}{suffix}");
    let json = args.out.join(format!("{stem}.json"));
    report::write_json(&report, &json)?;
    println!("wrote {}", json.display());
    let md = args.out.join(format!("{stem}.md"));
    std::fs::write(&md, report::markdown(&report))?;
    println!("wrote {}", md.display());
    for op in &ops {
        let png = args.out.join(format!("{op}_{stem}.png"));
        report::plot(&report, op, x_label, &png).map_err(|e| candle_core::Error::Msg(format!("plot {op}: {e}")))?;
        println!("wrote {}", png.display());
    }
    Ok(())
}

fn build_case(op: &str, mode: Mode, x: usize, d: Dims, dtype: DType, dev: &Device) -> Result<Case> {
    match op {
        "attention" => cases::attention(mode, x, d, dtype, dev),
        "ffn" => cases::ffn(x, d, dtype, dev),
        "int4" => cases::int4(x, d, dtype, dev),
        "block" => block::case(mode, x, d, dtype, dev),
        _ => unreachable!("ops come from the Op enum"),
    }
}

fn run_case(case: Case, dev: &Device, opts: TimingOpts, peaks: &harness::Peaks) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    let mut variants = case.variants;
    let all_stats = {
        let mut fs: Vec<&mut dyn FnMut(usize) -> Result<()>> = variants.iter_mut().map(|v| &mut *v.run as _).collect();
        harness::measure_interleaved(dev, case.sets, opts, &mut fs)?
    };
    for (v, stats) in variants.iter().zip(all_stats) {
        let secs = stats.median_us * 1e-6;
        let stock_us = rows.first().map_or(stats.median_us, |r| r.stats.median_us);
        let gbs = case.bytes / secs / 1e9;
        rows.push(Row {
            op: case.op.to_string(),
            x: case.x,
            shape: case.shape.clone(),
            variant: v.name.to_string(),
            stats,
            speedup: stock_us / stats.median_us,
            tflops: case.flops / secs / 1e12,
            gbs,
            bandwidth_fraction: gbs / peaks.bandwidth_gbs,
        });
    }
    Ok(rows)
}

/// The card's name and driver (nvidia-smi), or the CPU's model and core count.
fn card_info(dev: &Device) -> (String, String) {
    if dev.is_cuda() {
        let out = std::process::Command::new("nvidia-smi")
            .args(["--query-gpu=name,driver_version", "--format=csv,noheader"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
            .unwrap_or_default();
        let mut parts = out.splitn(2, ',').map(|s| s.trim().to_string());
        let name = parts.next().filter(|s| !s.is_empty()).unwrap_or_else(|| "unknown CUDA GPU".into());
        (name, parts.next().unwrap_or_else(|| "unknown".into()))
    } else {
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (format!("{model} ({cores} threads)"), "-".into())
    }
}

/// The candle-core version this binary was built with, from the crate's Cargo.lock.
fn candle_core_version() -> &'static str {
    let lock = include_str!("../../Cargo.lock");
    lock.split("[[package]]")
        .find(|p| p.contains("name = \"candle-core\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or("unknown")
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock (days-to-civil, H. Hinnant).
fn date_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
