//! Results: the stdout table, the JSON file, a Markdown summary (for BENCHMARKS.md) and the PNG plots.

use std::path::Path;

use plotters::prelude::*;

use crate::harness::{Peaks, Stats};

/// One measured variant at one sweep point.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub op: String,
    pub x: usize,
    pub shape: String,
    pub variant: String,
    pub stats: Stats,
    /// stock time / this time
    pub speedup: f64,
    pub tflops: f64,
    pub gbs: f64,
    /// achieved GB/s over the measured copy bandwidth
    pub bandwidth_fraction: f64,
}

/// Everything one run measured, plus what it ran on.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub meta: Meta,
    pub peaks: Peaks,
    pub rows: Vec<Row>,
}

#[derive(Debug, serde::Serialize)]
pub struct Meta {
    pub card: String,
    pub driver: String,
    pub device: String,
    pub dtype: String,
    pub mode: String,
    pub dims: crate::cases::Dims,
    pub tiny_gemm_version: &'static str,
    pub candle_version: &'static str,
    pub date_utc: String,
    pub command: String,
    /// whether cudarc's per-buffer CUDA events were on (candle's default)
    pub event_tracking: bool,
    /// how the variants of one sweep point were timed
    pub timing: &'static str,
}

pub fn print_table(rows: &[Row]) {
    println!(
        "{:<10} {:>6} {:<34} {:<7} {:>11} {:>8} {:>9} {:>9} {:>6}",
        "op", "x", "shape", "variant", "µs/call", "speedup", "TFLOP/s", "GB/s", "%bw"
    );
    for r in rows {
        println!(
            "{:<10} {:>6} {:<34} {:<7} {:>11.2} {:>7.2}x {:>9.2} {:>9.1} {:>5.0}%",
            r.op,
            r.x,
            r.shape,
            r.variant,
            r.stats.median_us,
            r.speedup,
            r.tflops,
            r.gbs,
            100.0 * r.bandwidth_fraction
        );
    }
}

/// One Markdown table per op: a row per sweep point, a column per variant with its time and its
/// speedup over stock, headed by what the run measured on. BENCHMARKS.md pastes these verbatim.
pub fn markdown(report: &Report) -> String {
    use std::fmt::Write;
    let (m, p) = (&report.meta, &report.peaks);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} (driver {}), {}, `{}` mode, {} UTC, tiny-gemm {} / candle {}. Measured peaks: copy {:.0} GB/s, \
         matmul {:.1} TFLOP/s; per-op host floor (8 elements): candle {:.1} µs, tiny-gemm {:.1} µs. \
         {}µs per call (median of {} repeats), speedup vs stock in brackets.",
        m.card,
        m.driver,
        m.dtype,
        m.mode,
        m.date_utc,
        m.tiny_gemm_version,
        m.candle_version,
        p.bandwidth_gbs,
        p.matmul_tflops,
        p.candle_op_floor_us,
        p.tiny_gemm_op_floor_us,
        if m.device == "cuda" && !m.event_tracking { "CUDA event tracking off. " } else { "" },
        report.rows.first().map_or(0, |r| r.stats.repeats),
    );
    for op in distinct(report.rows.iter().map(|r| r.op.as_str())) {
        let rows: Vec<&Row> = report.rows.iter().filter(|r| r.op == op).collect();
        let variants = distinct(rows.iter().map(|r| r.variant.as_str()));
        let xs = distinct(rows.iter().map(|r| r.x));
        let _ = writeln!(s, "\n**{op}**\n\n| x | shape | {} |", variants.join(" | "));
        let _ = writeln!(s, "|---:|---|{}", "---:|".repeat(variants.len()));
        for x in xs {
            let at: Vec<&&Row> = rows.iter().filter(|r| r.x == x).collect();
            let cells: Vec<String> = variants
                .iter()
                .map(|v| match at.iter().find(|r| r.variant == *v) {
                    Some(r) if r.variant == "stock" => format!("{:.1}", r.stats.median_us),
                    Some(r) => format!("{:.1} ({:.2}x)", r.stats.median_us, r.speedup),
                    None => "-".into(),
                })
                .collect();
            let _ = writeln!(s, "| {x} | {} | {} |", at[0].shape, cells.join(" | "));
        }
    }
    s
}

/// The distinct values of `items`, in first-seen order.
fn distinct<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for v in items {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

pub fn write_json(report: &Report, path: &Path) -> std::io::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(report).map_err(std::io::Error::other)?)
}

const FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
const COLORS: [RGBColor; 5] = [
    RGBColor(120, 120, 120), // stock: grey
    RGBColor(220, 50, 32),
    RGBColor(0, 90, 181),
    RGBColor(26, 133, 55),
    RGBColor(153, 79, 0),
];

/// One PNG per op: latency vs the swept value, one line per variant, log-log axes.
pub fn plot(report: &Report, op: &str, x_label: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // Registering twice is harmless; plotters keeps the first.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let rows: Vec<&Row> = report.rows.iter().filter(|r| r.op == op).collect();
    if rows.is_empty() {
        return Ok(());
    }
    let variants = distinct(rows.iter().map(|r| r.variant.as_str()));
    let xs: Vec<f64> = distinct(rows.iter().map(|r| r.x)).into_iter().map(|x| x as f64).collect();
    let (xmin, xmax) = rows.iter().fold((f64::MAX, 0f64), |(a, b), r| (a.min(r.x as f64), b.max(r.x as f64)));
    let (ymin, ymax) =
        rows.iter().fold((f64::MAX, 0f64), |(a, b), r| (a.min(r.stats.median_us), b.max(r.stats.median_us)));
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!("{op} on {} ({}, {})", report.meta.card, report.meta.dtype, report.meta.mode);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            // ticks at the sweep's own points (a log axis alone labels only powers of ten)
            (xmin * 0.9..xmax * 1.1).log_scale().with_key_points(xs.clone()),
            (ymin * 0.7..ymax * 1.4).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("µs per call (median)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, v) in variants.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> =
            rows.iter().filter(|r| r.variant == *v).map(|r| (r.x as f64, r.stats.median_us)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(*v)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
