//! Helpers shared by the criterion benches: devices and GPU-correct timing.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use candle_core::{Device, Result};

/// The devices to bench on: the CPU, plus the first GPU in a `cuda` build (which must have one).
pub fn devices() -> Vec<(&'static str, Device)> {
    vec![
        ("cpu", Device::Cpu),
        #[cfg(feature = "cuda")]
        ("cuda", Device::new_cuda(0).expect("built with `cuda` but no usable CUDA GPU")),
    ]
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
