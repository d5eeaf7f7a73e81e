//! bias_act vs the stock candle composition on one shape: checks they agree, then times both.
//!
//!   cargo run --release --example bias_act [-- --cuda]

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use tiny_gemm::{bias_act, reference, Activation};

fn time(dev: &Device, iters: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    for _ in 0..3 {
        f()?; // warm-up (the first CUDA call loads and JITs the PTX)
    }
    dev.synchronize()?;
    let start = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    dev.synchronize()?;
    Ok(start.elapsed().as_secs_f64() * 1e6 / iters as f64)
}

fn main() -> Result<()> {
    let dev = if std::env::args().any(|a| a == "--cuda") { Device::new_cuda(0)? } else { Device::Cpu };
    let dtype = if dev.is_cuda() { DType::F16 } else { DType::F32 };
    let (rows, cols) = (512, 3072);
    let x = Tensor::randn(0f32, 1.0, (rows, cols), &dev)?.to_dtype(dtype)?;
    let b = Tensor::randn(0f32, 1.0, cols, &dev)?.to_dtype(dtype)?;
    println!("bias_act on {dev:?}, {dtype:?}, x [{rows}, {cols}]");
    println!("{:<10} {:>14} {:>14} {:>9} {:>12}", "act", "fused µs", "stock µs", "speedup", "max |Δ|");
    for act in [Activation::Gelu, Activation::GeluTanh, Activation::Relu, Activation::Silu] {
        let fused = bias_act(&x, Some(&b), act)?;
        let stock = reference::bias_act(&x, Some(&b), act)?;
        let diff = (fused.to_dtype(DType::F32)? - stock.to_dtype(DType::F32)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let iters = if dev.is_cuda() { 1000 } else { 20 };
        let t_fused = time(&dev, iters, || bias_act(&x, Some(&b), act))?;
        let t_stock = time(&dev, iters, || reference::bias_act(&x, Some(&b), act))?;
        println!("{:<10} {t_fused:>14.1} {t_stock:>14.1} {:>8.2}x {diff:>12.2e}", act.name(), t_stock / t_fused);
    }
    Ok(())
}
