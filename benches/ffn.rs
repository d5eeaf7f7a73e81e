//! fused FFN vs stock candle (`matmul` + `broadcast_add` + activation), batch sweep, CPU and CUDA.
//! Names: `<device>/ffn/<dtype>/<D>x<H>/m<M>/<variant>`, variants:
//! - `fused`: [`FusedMlp`] (weights `[out, in]`, the layout the kernels stream),
//! - `fused_seed_layout`: [`fused_ffn`] with `[in, out]` weights (CPU kernel / cuBLAS path),
//! - `stock`: `reference::ffn` (what candle users write today);
//! - CUDA, M <= 16: `one_launch` / `two_projections` / `two_launches` / `cooperative` (plain FFNs
//!   only): `FusedMlp` / `GatedMlp` with the kernel forced (`fused` is whichever `choose_kernel`
//!   picks); `cublaslt`: two projections with the small-M projection kernel switched off (cuBLASLt
//!   GEMMs);
//! - CUDA, M > 16: `cublas_bias_act`: the cuBLASLt path switched off (candle's matmul + `bias_act`);
//!
//! and `.../gated/...` for SwiGLU (`GatedMlp` vs `reference::gated_ffn`).

mod common;

use std::time::Duration;

use candle_core::{DType, Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tiny_gemm::{
    fused_ffn, reference, Activation, FfnKernel, FusedMlp, GatedMlp, GPU_COOP_MAX_M, GPU_ONE_LAUNCH_MAX_M,
};

fn weight(rows: usize, cols: usize, dtype: DType, dev: &Device) -> Tensor {
    (Tensor::randn(0f32, 1.0, (rows, cols), dev).unwrap() / (rows as f64).sqrt()).unwrap().to_dtype(dtype).unwrap()
}

/// The CUDA paths a `forward_with(x, kernel)` can take, each forced: at small M the one-launch
/// kernel, the two projections, and both projections through cuBLASLt (the small-M kernel switched
/// off); at large M candle's matmul + our `bias_act` (the cuBLASLt epilogues switched off).
fn gpu_path_variants(
    g: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    dev: &Device,
    m: usize,
    gated: bool,
    forward: impl Fn(Option<FfnKernel>) -> candle_core::Result<Tensor>,
) {
    if !dev.is_cuda() {
        return;
    }
    let timed = |bch: &mut criterion::Bencher, kernel: Option<FfnKernel>, switch: fn(bool)| {
        switch(false);
        common::iter_gpu(bch, dev, || forward(kernel));
        switch(true);
    };
    if m <= GPU_ONE_LAUNCH_MAX_M {
        for (name, kernel) in [
            ("one_launch", FfnKernel::OneLaunch),
            ("two_projections", FfnKernel::TwoProjections),
            ("two_launches", FfnKernel::TwoLaunches),
        ] {
            g.bench_function(name, |bch| timed(bch, Some(kernel), |_| {}));
        }
        g.bench_function("cublaslt", |bch| timed(bch, Some(FfnKernel::TwoProjections), tiny_gemm::set_small_m_kernel));
        if !gated && m <= GPU_COOP_MAX_M {
            g.bench_function("cooperative", |bch| timed(bch, Some(FfnKernel::Cooperative), |_| {}));
        }
    } else {
        g.bench_function("cublas_bias_act", |bch| timed(bch, None, tiny_gemm::set_cublaslt_epilogues));
    }
}

#[allow(clippy::too_many_arguments)]
fn bench_plain(
    c: &mut Criterion,
    dev_name: &str,
    dev: &Device,
    dtype: DType,
    d: usize,
    h: usize,
    ms: &[usize],
    act: Activation,
) {
    let (w1, w2) = (weight(d, h, dtype, dev), weight(h, d, dtype, dev));
    let b1 = weight(1, h, dtype, dev).squeeze(0).unwrap();
    let b2 = weight(1, d, dtype, dev).squeeze(0).unwrap();
    let mlp = FusedMlp::from_seed(&w1, Some(&b1), &w2, Some(&b2), act).unwrap();
    // GELU (erf) is the default; other activations get a suffix
    let act_name = if act == Activation::Gelu { String::new() } else { format!("_{}", act.name()) };
    for &m in ms {
        let x = weight(m, d, dtype, dev);
        let mut g = c.benchmark_group(format!("{dev_name}/ffn/{dtype:?}/{d}x{h}/m{m}{act_name}"));
        g.throughput(Throughput::Bytes((2 * d * h * dtype.size_in_bytes()) as u64)); // the weights, once
        g.bench_function("fused", |bch| common::iter_gpu(bch, dev, || mlp.forward(&x)));
        gpu_path_variants(&mut g, dev, m, false, |kernel| mlp.forward_with(&x, kernel));
        g.bench_function("fused_seed_layout", |bch| {
            common::iter_gpu(bch, dev, || fused_ffn(&x, &w1, Some(&b1), &w2, Some(&b2), act))
        });
        g.bench_function("stock", |bch| {
            common::iter_gpu(bch, dev, || reference::ffn(&x, &w1, Some(&b1), &w2, Some(&b2), act))
        });
        g.finish();
    }
}

fn bench_gated(c: &mut Criterion, dev_name: &str, dev: &Device, dtype: DType, d: usize, h: usize, ms: &[usize]) {
    let (wg, wu, wd) = (weight(d, h, dtype, dev), weight(d, h, dtype, dev), weight(h, d, dtype, dev));
    let act = Activation::Silu;
    let mlp = GatedMlp::from_seed(&wg, None, &wu, None, &wd, None, act).unwrap();
    for &m in ms {
        let x = weight(m, d, dtype, dev);
        let mut g = c.benchmark_group(format!("{dev_name}/ffn/gated/{dtype:?}/{d}x{h}/m{m}"));
        g.throughput(Throughput::Bytes((3 * d * h * dtype.size_in_bytes()) as u64));
        g.bench_function("fused", |bch| common::iter_gpu(bch, dev, || mlp.forward(&x)));
        gpu_path_variants(&mut g, dev, m, true, |kernel| mlp.forward_with(&x, kernel));
        g.bench_function("stock", |bch| {
            common::iter_gpu(bch, dev, || reference::gated_ffn(&x, &wg, None, &wu, None, &wd, None, act))
        });
        g.finish();
    }
}

fn bench(c: &mut Criterion) {
    for (dev_name, dev) in common::devices() {
        if dev.is_cuda() {
            let dtype = DType::F16;
            let ms = [1, 4, 16, 32, 64, 512];
            let gelu = Activation::Gelu;
            bench_plain(c, dev_name, &dev, dtype, 512, 2048, &ms, gelu);
            bench_plain(c, dev_name, &dev, dtype, 768, 3072, &[1, 4, 16], gelu);
            bench_plain(c, dev_name, &dev, dtype, 4096, 11008, &ms, gelu);
            // both biases in cuBLASLt epilogues (GELU tanh and ReLU have one; erf GELU has not)
            bench_plain(c, dev_name, &dev, dtype, 4096, 11008, &[512], Activation::GeluTanh);
            bench_gated(c, dev_name, &dev, dtype, 4096, 11008, &[1, 16, 512]);
        } else {
            let dtype = DType::F32;
            let gelu = Activation::Gelu;
            bench_plain(c, dev_name, &dev, dtype, 512, 2048, &[1, 4, 16, 64], gelu);
            bench_plain(c, dev_name, &dev, dtype, 4096, 11008, &[1, 16], gelu);
            bench_gated(c, dev_name, &dev, dtype, 1024, 2816, &[1, 16]);
        }
    }
}

criterion_group! {
    name = benches;
    // short runs: ~80 groups, and GPU time is scarce
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
