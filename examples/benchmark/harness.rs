//! GPU-correct timing: warm-up (PTX JIT, allocator), inputs rotated so they don't sit in the
//! cache, many back-to-back calls with one synchronize, the median over repeats, and the repeats
//! of the variants being compared interleaved.

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Result, Tensor};

/// Inputs smaller than this are rotated over several copies: an H100's L2 is 50 MB, and the
/// point is to measure HBM-resident weights, as in real inference.
pub const CACHE_BYTES: usize = 64 << 20;

/// How many copies of an input set of `bytes` to rotate through.
pub fn rotation(bytes: usize) -> usize {
    (2 * CACHE_BYTES).div_ceil(bytes.max(1)).clamp(1, 8)
}

/// Timing settings.
#[derive(Clone, Copy, Debug)]
pub struct TimingOpts {
    /// Wall time one repeat should last (more calls per repeat for fast ops).
    pub target: Duration,
    /// Repeats; the median is reported.
    pub repeats: usize,
}

/// The per-call time of `f` (µs): median, min and max over the repeats.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Stats {
    pub median_us: f64,
    pub min_us: f64,
    pub max_us: f64,
    pub calls_per_repeat: usize,
    pub repeats: usize,
}

/// Times `f(set)` where `set` cycles over `0..sets` (rotated inputs).
pub fn measure(dev: &Device, sets: usize, opts: TimingOpts, mut f: impl FnMut(usize) -> Result<()>) -> Result<Stats> {
    let mut fs: [&mut dyn FnMut(usize) -> Result<()>; 1] = [&mut f];
    Ok(measure_interleaved(dev, sets, opts, &mut fs)?[0])
}

/// Times several implementations of one op with their repeats interleaved (repeat r of every
/// variant before repeat r + 1 of any): the GPU host's speed drifts over seconds (other tenants,
/// clocks), and interleaving makes the drift hit every variant alike instead of skewing the ratios.
pub fn measure_interleaved(
    dev: &Device,
    sets: usize,
    opts: TimingOpts,
    fs: &mut [&mut dyn FnMut(usize) -> Result<()>],
) -> Result<Vec<Stats>> {
    let mut calls = Vec::with_capacity(fs.len());
    for f in fs.iter_mut() {
        // Warm-up: every input set once (first calls load/JIT PTX and grow the allocator).
        for s in 0..sets {
            f(s)?;
        }
        dev.synchronize()?;
        // Calibrate calls per repeat from one timed burst.
        let probe = sets.max(2);
        let start = Instant::now();
        for i in 0..probe {
            f(i % sets)?;
        }
        dev.synchronize()?;
        let per_call = start.elapsed().as_secs_f64() / probe as f64;
        calls.push(((opts.target.as_secs_f64() / per_call.max(1e-9)) as usize).clamp(1, 100_000));
    }
    let mut times = vec![Vec::with_capacity(opts.repeats); fs.len()];
    for _ in 0..opts.repeats {
        for ((f, &n), t) in fs.iter_mut().zip(&calls).zip(times.iter_mut()) {
            let start = Instant::now();
            for i in 0..n {
                f(i % sets)?;
            }
            dev.synchronize()?;
            t.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    Ok(times
        .into_iter()
        .zip(calls)
        .map(|(mut t, n)| {
            t.sort_by(f64::total_cmp);
            Stats {
                median_us: t[t.len() / 2],
                min_us: t[0],
                max_us: t[t.len() - 1],
                calls_per_repeat: n,
                repeats: opts.repeats,
            }
        })
        .collect())
}

/// The device's measured ceilings, against which achieved rates are reported.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Peaks {
    /// Device memory bandwidth (read + write bytes / s) of a large device-to-device copy, GB/s.
    pub bandwidth_gbs: f64,
    /// A large square matmul in the benchmark dtype, TFLOP/s.
    pub matmul_tflops: f64,
    /// Per-call time of a stock candle op on 8 elements (`affine`), µs: the host-side dispatch
    /// floor (allocation, launch) that every op pays whatever its size.
    pub candle_op_floor_us: f64,
    /// The same for one of ours (`bias_act` on 8 elements, one launch), µs.
    pub tiny_gemm_op_floor_us: f64,
}

/// Measures [`Peaks`] on `dev` with candle's own kernels (cuBLAS for the matmul on CUDA).
pub fn measure_peaks(dev: &Device, dtype: DType, opts: TimingOpts) -> Result<Peaks> {
    let (elems, n) = if dev.is_cuda() { (64 << 20, 8192) } else { (16 << 20, 1024) };
    let bytes = 2.0 * (elems * dtype.size_in_bytes()) as f64;
    let copy = if dev.is_cuda() {
        let x = Tensor::randn(0f32, 1.0, elems, dev)?.to_dtype(dtype)?;
        measure(dev, 1, opts, |_| {
            std::hint::black_box(x.copy()?); // cuMemcpyDtoD
            Ok(())
        })?
    } else {
        // candle's CPU copy goes element by element; a memcpy is the memory system's ceiling
        let src = vec![1u8; elems * dtype.size_in_bytes()];
        let mut dst = vec![0u8; src.len()];
        measure(dev, 1, opts, |_| {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            Ok(())
        })?
    };
    let a = Tensor::randn(0f32, 1.0, (n, n), dev)?.to_dtype(dtype)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), dev)?.to_dtype(dtype)?;
    let mm = measure(dev, 1, opts, |_| {
        std::hint::black_box(a.matmul(&b)?);
        Ok(())
    })?;
    let flops = 2.0 * (n as f64).powi(3);
    let tiny = Tensor::zeros(8, dtype, dev)?;
    let candle_floor = measure(dev, 1, opts, |_| {
        std::hint::black_box(tiny.affine(1.0, 0.0)?);
        Ok(())
    })?;
    let ours_floor = measure(dev, 1, opts, |_| {
        std::hint::black_box(tiny_gemm::bias_act(&tiny, None, tiny_gemm::Activation::Identity)?);
        Ok(())
    })?;
    Ok(Peaks {
        bandwidth_gbs: bytes / secs(copy) / 1e9,
        matmul_tflops: flops / secs(mm) / 1e12,
        candle_op_floor_us: candle_floor.median_us,
        tiny_gemm_op_floor_us: ours_floor.median_us,
    })
}

fn secs(s: Stats) -> f64 {
    s.median_us * 1e-6
}
