//! Helpers shared by the criterion benches: devices and GPU-correct timing.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use candle_core::{Device, Result};

/// The devices to bench on: the CPU, plus the first GPU in a `cuda` build (which must have one),
/// already busy for a while ([`spin_up`]).
pub fn devices() -> Vec<(&'static str, Device)> {
    vec![
        ("cpu", Device::Cpu),
        #[cfg(feature = "cuda")]
        ("cuda", {
            let dev = Device::new_cuda(0).expect("built with `cuda` but no usable CUDA GPU");
            spin_up(&dev).expect("GPU spin-up failed");
            dev
        }),
    ]
}

/// Keeps the GPU busy with matmuls for half a second, so the first case a bench process times
/// does not meet an idle GPU still raising its clocks (H100 runs measured the first case of some
/// processes at up to 2x its later time, whatever the case, criterion's warm-up included).
pub fn spin_up(dev: &Device) -> Result<()> {
    let a = candle_core::Tensor::ones((2048, 2048), candle_core::DType::F16, dev)?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        for _ in 0..16 {
            std::hint::black_box(a.matmul(&a)?);
        }
        dev.synchronize()?;
    }
    Ok(())
}

/// Criterion's `iter_custom` over [`time_iters`], after a priming call outside the timed routine.
/// The first call of an op loads its module and JITs its PTX (up to seconds for the INT4 GEMMs);
/// inside criterion's warm-up that call would be taken as the iteration time, so criterion would
/// plan one iteration per sample and time host-bound single calls (an H100 run measured INT4 M=1
/// at 17.4 µs that way against 8.1 at M=4 right after it).
pub fn iter_gpu<T>(b: &mut criterion::Bencher<'_>, dev: &Device, mut f: impl FnMut() -> Result<T>) {
    f().expect("priming call failed");
    dev.synchronize().unwrap();
    b.iter_custom(|iters| time_iters(dev, iters, &mut f))
}

/// Times `iters` back-to-back calls with one synchronize at the end (GPU work is asynchronous),
/// after a warm-up call that loads and JITs the PTX.
pub fn time_iters<T>(dev: &Device, iters: u64, mut f: impl FnMut() -> Result<T>) -> Duration {
    f().expect("warm-up call failed");
    dev.synchronize().unwrap();
    let start = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(f().expect("benchmarked call failed"));
    }
    dev.synchronize().unwrap();
    start.elapsed()
}
