//! Host cost of the crate's small-M CUDA ops next to candle's own ops: what one op call costs the
//! host, what it costs per call back to back, and what the driver calls it is made of.
//!
//!   cargo run --release --features cuda --example host_cost [-- --only SUBSTR] [--rounds R] [--ncu]
//!
//! Per case (f16; fused FFN `FusedMlp` 768x3072 M=1 / 16 and 4096x11008 M=16, `int4_matmul`
//! 4096->11008 M=1 / 16, and candle baselines: `affine`, `matmul`, the stock FFN), R rounds of:
//! - **enqueue**: after a synchronize, 200 calls without synchronizing (the GPU queue absorbs them),
//!   divided by 200: the host's time per call, whatever the GPU does;
//! - **per call**: many calls and one synchronize (what `benches/` measure): the larger of the
//!   host's and the GPU's time per call, plus the gaps between kernels.
//!
//! The table runs with the crate's defaults, then with programmatic dependent launches off
//! (`tiny_gemm::testing::set_programmatic_launch`), then the defaults again (the spread between the
//! two default tables is the run's noise).
//!
//! Then the pieces of an op call, each timed alone 2000 times on the host: a stream-ordered
//! allocation + free with and without cudarc's two per-buffer events, one event create + destroy,
//! a context check, a device-attribute query, a function lookup, a plain, a cooperative and a
//! programmatic-dependent (PDL, `cuLaunchKernelEx`) launch of an empty kernel, and tensor
//! bookkeeping (`reshape`, `t()`). Last, the GPU-side gap between back-to-back launches: a kernel
//! that spins ~5 µs on every SM, launched plain / cooperative / with PDL, time per launch minus the
//! spin.
//!
//! `--ncu`: no timing; 3 calls per case, each inside an NVTX range `call_<case>` (case names with
//! `_`), for `ncu --nvtx --nvtx-include "call_ffn_768x3072_m1/" --metrics gpu__time_duration.sum`:
//! the kernels one call launches and their GPU times.

#[cfg(feature = "cuda")]
mod probe {
    use std::hint::black_box;
    use std::time::Instant;

    use candle_core::backend::BackendDevice;
    use candle_core::cuda_backend::cudarc::driver::{sys, CudaFunction, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
    use candle_core::{DType, Device, Module, Result, Tensor};
    use tiny_gemm::quant::{int4_matmul, Int4Config, Int4Weight};
    use tiny_gemm::{reference, Activation, FusedMlp};

    /// Calls per enqueue measurement (the GPU queue holds them all).
    const ENQUEUE_CALLS: usize = 200;
    /// Repetitions of each piece of an op call.
    const PIECE_CALLS: usize = 2000;

    type Case<'a> = (String, Box<dyn Fn() -> Result<Tensor> + 'a>, usize);

    fn weight(rows: usize, cols: usize, dev: &Device) -> Result<Tensor> {
        (Tensor::randn(0f32, 1.0, (rows, cols), dev)? / (rows as f64).sqrt())?.to_dtype(DType::F16)
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// µs per call of `f` run `n` times, host clock only (no synchronize inside).
    fn host_us(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        let start = Instant::now();
        for _ in 0..n {
            f()?;
        }
        Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
    }

    pub fn main() -> Result<()> {
        let args: Vec<String> = std::env::args().collect();
        let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        let only = flag("--only");
        let rounds: usize = flag("--rounds").map_or(Ok(5), |s| s.parse()).map_err(candle_core::Error::wrap)?;
        let ncu = args.iter().any(|a| a == "--ncu");
        let dev = Device::new_cuda(0)?;
        let cdev = dev.as_cuda_device()?.clone();
        println!("host_cost: {:?}, poison_outputs={}", dev.location(), tiny_gemm::testing::poison_outputs());

        // the cases: the crate's ops and candle baselines, same dtype (f16), same device
        let act = Activation::Gelu;
        let mut mlps = Vec::new();
        for (d, h) in [(768, 3072), (4096, 11008)] {
            let (w1, w2) = (weight(d, h, &dev)?, weight(h, d, &dev)?);
            let (b1, b2) = (weight(1, h, &dev)?.squeeze(0)?, weight(1, d, &dev)?.squeeze(0)?);
            let mlp = FusedMlp::from_seed(&w1, Some(&b1), &w2, Some(&b2), act)?;
            mlps.push((d, h, w1, b1, w2, b2, mlp));
        }
        let (k, n) = (4096, 11008);
        let w_dense = weight(n, k, &dev)?;
        let q = Int4Weight::quantize(&w_dense.to_dtype(DType::F32)?, Int4Config::default())?;
        let x768 = weight(1, 768, &dev)?;
        let x768_16 = weight(16, 768, &dev)?;
        let x4096 = weight(16, 4096, &dev)?;
        let x4096_1 = weight(1, 4096, &dev)?;
        let (m0, m1) = (&mlps[0], &mlps[1]);
        let mut cases: Vec<Case> = vec![
            ("ffn_768x3072_m1".into(), Box::new(|| m0.6.forward(&x768)), 2000),
            ("ffn_768x3072_m16".into(), Box::new(|| m0.6.forward(&x768_16)), 2000),
            ("ffn_4096x11008_m16".into(), Box::new(|| m1.6.forward(&x4096)), 300),
            (
                "ffn_stock_768x3072_m1".into(),
                Box::new(|| reference::ffn(&x768, &m0.2, Some(&m0.3), &m0.4, Some(&m0.5), act)),
                1000,
            ),
            ("int4_4096x11008_m1".into(), Box::new(|| int4_matmul(&x4096_1, &q)), 2000),
            ("int4_4096x11008_m16".into(), Box::new(|| int4_matmul(&x4096, &q)), 1000),
            ("candle_affine_1x768".into(), Box::new(|| x768.affine(1.0, 0.5)), 2000),
            ("candle_matmul_1x4096x11008".into(), Box::new(|| x4096_1.matmul(&w_dense.t()?)), 1000),
            ("candle_matmul_16x4096x11008".into(), Box::new(|| x4096.matmul(&w_dense.t()?)), 1000),
        ];
        if let Some(o) = &only {
            cases.retain(|(name, _, _)| name.contains(o.as_str()));
        }
        for (_, f, _) in &cases {
            for _ in 0..20 {
                black_box(f()?); // loads and JITs the PTX, fills the allocator's pool
            }
        }
        dev.synchronize()?;

        if ncu {
            for (name, f, _) in &cases {
                for _ in 0..3 {
                    nvtx::range_push!("call_{name}");
                    black_box(f()?);
                    dev.synchronize()?;
                    nvtx::range_pop!();
                }
                println!("ncu: ran 3 calls of {name}");
            }
            return Ok(());
        }

        spin_up(&dev)?;
        // the crate's defaults, then programmatic launches off (tiny_gemm::testing), then the defaults again
        for (label, pdl) in
            [("crate defaults", true), ("programmatic launch off", false), ("crate defaults again", true)]
        {
            tiny_gemm::testing::set_programmatic_launch(pdl);
            println!("\n== per op call, µs (median of {rounds} rounds; min in brackets): {label}");
            println!("{:<30} {:>18} {:>18}", "case", "host enqueue", "per call (sync'd)");
            for (name, f, iters) in &cases {
                let (mut enq, mut per) = (Vec::new(), Vec::new());
                for _ in 0..rounds {
                    dev.synchronize()?;
                    enq.push(host_us(ENQUEUE_CALLS, || f().map(|t| drop(black_box(t))))?);
                    dev.synchronize()?;
                    let start = Instant::now();
                    for _ in 0..*iters {
                        black_box(f()?);
                    }
                    dev.synchronize()?;
                    per.push(start.elapsed().as_secs_f64() * 1e6 / *iters as f64);
                }
                let emin = enq.iter().copied().fold(f64::MAX, f64::min);
                let pmin = per.iter().copied().fold(f64::MAX, f64::min);
                let (emed, pmed) = (median(&mut enq), median(&mut per));
                println!("{name:<30} {emed:>10.2} [{emin:>5.2}] {pmed:>10.2} [{pmin:>5.2}]");
            }
        }
        tiny_gemm::testing::set_programmatic_launch(true);
        if only.is_none() {
            pieces(&cdev)?;
            gaps(&cdev)?;
        }
        Ok(())
    }

    /// Keeps the GPU busy for half a second so clocks are up (as benches/common's `spin_up`).
    fn spin_up(dev: &Device) -> Result<()> {
        let a = Tensor::ones((2048, 2048), DType::F16, dev)?;
        let start = Instant::now();
        while start.elapsed().as_millis() < 500 {
            for _ in 0..16 {
                black_box(a.matmul(&a)?);
            }
            dev.synchronize()?;
        }
        Ok(())
    }

    /// Hand-written PTX (sm_90, PTX ISA 7.8 for `griddepcontrol`): an empty kernel, and kernels
    /// that spin `cycles` SM clocks, plain and PDL (wait for the previous grid at the top, let the
    /// next one launch at once).
    const PTX: &str = r#"
.version 7.8
.target sm_90
.address_size 64
.visible .entry tg_probe_empty()
{
    ret;
}
.visible .entry tg_probe_spin(.param .u64 cycles)
{
    .reg .u64 %rd<5>;
    .reg .pred %p;
    ld.param.u64 %rd1, [cycles];
    mov.u64 %rd2, %clock64;
$Lspin:
    mov.u64 %rd3, %clock64;
    sub.u64 %rd4, %rd3, %rd2;
    setp.lt.u64 %p, %rd4, %rd1;
    @%p bra $Lspin;
    ret;
}
.visible .entry tg_probe_spin_pdl(.param .u64 cycles)
{
    .reg .u64 %rd<5>;
    .reg .pred %p;
    ld.param.u64 %rd1, [cycles];
    griddepcontrol.wait;
    griddepcontrol.launch_dependents;
    mov.u64 %rd2, %clock64;
$Lspin:
    mov.u64 %rd3, %clock64;
    sub.u64 %rd4, %rd3, %rd2;
    setp.lt.u64 %p, %rd4, %rd1;
    @%p bra $Lspin;
    ret;
}
"#;

    /// How a probe kernel is launched.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum How {
        Plain,
        Cooperative,
        /// `cuLaunchKernelEx` with programmatic stream serialization (and cooperative if set).
        Pdl {
            cooperative: bool,
        },
    }

    /// Launches `f` (`grid` blocks of 128 threads; `arg`: one u64 parameter or none) on the stream.
    fn launch(
        dev: &candle_core::CudaDevice,
        f: &CudaFunction,
        grid: u32,
        arg: Option<u64>,
        how: How,
    ) -> std::result::Result<(), String> {
        let stream = dev.cuda_stream();
        let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        match how {
            How::Plain | How::Cooperative => {
                let mut b = stream.launch_builder(f);
                if let Some(a) = &arg {
                    b.arg(a);
                }
                // SAFETY: the probe kernels take at most one u64 and touch no memory.
                let r = unsafe {
                    if how == How::Plain {
                        b.launch(cfg)
                    } else {
                        b.launch_cooperative(cfg)
                    }
                };
                r.map(|_| ()).map_err(|e| format!("{e:?}"))
            }
            How::Pdl { cooperative } => {
                // SAFETY: the union's fields are plain ints; zeroed is a valid "ignore" attribute.
                let mut attrs: [sys::CUlaunchAttribute; 2] = unsafe { std::mem::zeroed() };
                attrs[0].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
                attrs[0].value.programmaticStreamSerializationAllowed = 1;
                attrs[1].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
                attrs[1].value.cooperative = 1;
                let config = sys::CUlaunchConfig {
                    gridDimX: grid,
                    gridDimY: 1,
                    gridDimZ: 1,
                    blockDimX: 128,
                    blockDimY: 1,
                    blockDimZ: 1,
                    sharedMemBytes: 0,
                    hStream: stream.cu_stream(),
                    attrs: attrs.as_mut_ptr(),
                    numAttrs: if cooperative { 2 } else { 1 },
                };
                let mut a = arg.unwrap_or(0);
                let mut params = [&mut a as *mut u64 as *mut std::ffi::c_void];
                let params_ptr = if arg.is_some() { params.as_mut_ptr() } else { std::ptr::null_mut() };
                // SAFETY: `config` and the parameter array outlive the call; the kernels take at
                // most one u64 and touch no memory.
                let r = unsafe { sys::cuLaunchKernelEx(&config, f.cu_function(), params_ptr, std::ptr::null_mut()) };
                if r == sys::CUresult::CUDA_SUCCESS {
                    Ok(())
                } else {
                    Err(format!("{r:?}"))
                }
            }
        }
    }

    /// The pieces of an op call, each timed alone on the host.
    fn pieces(dev: &candle_core::CudaDevice) -> Result<()> {
        use candle_core::cuda_backend::WrapErr;
        let stream = dev.cuda_stream();
        let ctx = stream.context().clone();
        println!(
            "\n== pieces of an op call, host µs each ({PIECE_CALLS} calls; event tracking {}, multi-stream {})",
            ctx.is_event_tracking(),
            ctx.is_in_multi_stream_mode()
        );
        let row = |name: &str, us: f64| println!("{name:<52} {us:>8.3}");
        dev.synchronize()?;
        // SAFETY (both): the buffers are never read.
        row(
            "alloc + free 1.5 KB (cudarc: + 2 events)",
            host_us(PIECE_CALLS, || {
                drop(black_box(unsafe { stream.alloc::<u16>(768) }.w()?));
                Ok(())
            })?,
        );
        dev.synchronize()?;
        let tracking = ctx.is_event_tracking();
        // SAFETY: no other thread allocates meanwhile; the slices made here are dropped at once.
        unsafe { ctx.disable_event_tracking() };
        let untracked = host_us(PIECE_CALLS, || {
            drop(black_box(unsafe { stream.alloc::<u16>(768) }.w()?));
            Ok(())
        });
        if tracking {
            // SAFETY: restores the state found above.
            unsafe { ctx.enable_event_tracking() };
        }
        row("alloc + free 1.5 KB without events", untracked?);
        dev.synchronize()?;
        row(
            "event create + destroy",
            host_us(PIECE_CALLS, || {
                drop(black_box(ctx.new_event(None).w()?));
                Ok(())
            })?,
        );
        row("context check (bind_to_thread)", host_us(PIECE_CALLS, || ctx.bind_to_thread().w())?);
        let attr = sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
        row("device attribute query", host_us(PIECE_CALLS, || ctx.attribute(attr).map(|_| ()).w())?);
        let module = ctx.load_module(Ptx::from_src(PTX)).w()?;
        row(
            "function lookup (cuModuleGetFunction)",
            host_us(PIECE_CALLS, || module.load_function("tg_probe_empty").map(drop).w())?,
        );
        let empty = module.load_function("tg_probe_empty").w()?;
        for how in [How::Plain, How::Cooperative, How::Pdl { cooperative: false }, How::Pdl { cooperative: true }] {
            dev.synchronize()?;
            let mut err = None;
            let us = host_us(PIECE_CALLS, || {
                if let Err(e) = launch(dev, &empty, 132, None, how) {
                    err.get_or_insert(e);
                }
                Ok(())
            })?;
            dev.synchronize()?;
            match err {
                None => row(&format!("launch empty kernel, 132 blocks, {how:?}"), us),
                Some(e) => println!("launch empty kernel, {how:?}: refused ({e})"),
            }
        }
        let x = Tensor::zeros((1, 768), DType::F16, &Device::Cuda(dev.clone()))?;
        let w = Tensor::zeros((3072, 768), DType::F16, &Device::Cuda(dev.clone()))?;
        row("Tensor::reshape (same shape)", host_us(PIECE_CALLS, || x.reshape((1, 768)).map(drop))?);
        row("Tensor::t (a view)", host_us(PIECE_CALLS, || w.t().map(drop))?);
        Ok(())
    }

    /// GPU gap between back-to-back launches of a ~5 µs spin kernel on every SM, per launch kind.
    fn gaps(dev: &candle_core::CudaDevice) -> Result<()> {
        use candle_core::cuda_backend::WrapErr;
        let ctx = dev.cuda_stream().context().clone();
        let sms = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).w()? as u32;
        let clock_khz = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE).w()? as f64;
        let module = ctx.load_module(Ptx::from_src(PTX)).w()?;
        let (spin, spin_pdl) =
            (module.load_function("tg_probe_spin").w()?, module.load_function("tg_probe_spin_pdl").w()?);
        let spin_us = 5.0;
        let cycles = (spin_us * clock_khz / 1e3) as u64;
        println!("\n== GPU time per back-to-back launch of a {spin_us} µs spin ({cycles} cycles at the max clock {clock_khz} kHz) on {sms} blocks, µs");
        let n = 2000;
        let stream = dev.cuda_stream();
        for (name, f, how, alloc) in [
            ("plain", &spin, How::Plain, false),
            ("cooperative", &spin, How::Cooperative, false),
            ("PDL (spin with griddepcontrol)", &spin_pdl, How::Pdl { cooperative: false }, false),
            ("PDL + cooperative", &spin_pdl, How::Pdl { cooperative: true }, false),
            ("plain launch of the PDL kernel", &spin_pdl, How::Plain, false),
            ("cooperative, alloc + free between", &spin, How::Cooperative, true),
            ("PDL + coop., alloc + free between", &spin_pdl, How::Pdl { cooperative: true }, true),
        ] {
            let mut err = None;
            let mut go = || {
                // as an op call does: its output allocated before the launch, the previous one freed
                // SAFETY: the buffer is never read.
                let buf = if alloc { unsafe { stream.alloc::<u16>(768) }.ok() } else { None };
                if let Err(e) = launch(dev, f, sms, Some(cycles), how) {
                    err.get_or_insert(e);
                }
                drop(buf);
            };
            for _ in 0..50 {
                go();
            }
            dev.synchronize()?;
            let start = Instant::now();
            for _ in 0..n {
                go();
            }
            let enq = start.elapsed().as_secs_f64() * 1e6 / n as f64;
            dev.synchronize()?;
            let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
            match err {
                None => println!("{name:<34} per launch {per:>7.3} (host enqueue {enq:.3})"),
                Some(e) => println!("{name:<34} refused ({e})"),
            }
        }
        Ok(())
    }
}

fn main() -> candle_core::Result<()> {
    #[cfg(feature = "cuda")]
    return probe::main();
    #[cfg(not(feature = "cuda"))]
    {
        eprintln!("host_cost measures CUDA op calls: build with `--features cuda`");
        Ok(())
    }
}
