//! fused_ffn, FusedMlp and GatedMlp against the f64 reference and stock candle, on fresh random
//! inputs (weights scaled by 1/sqrt(fan_in) so every layer's output is O(1)).
mod common;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use common::{assert_close, devices, err_text, randn, FLOAT_DTYPES};
use tiny_gemm::{fused_ffn, reference, Activation, FfnKernel, FusedMlp, GatedMlp};

/// `(atol, rtol)` of an FFN output of O(1) values: f32 accumulation over K plus the one rounding
/// of the hidden activations and of the output to `dtype` (the f64 reference rounds neither).
/// The hidden rounding reaches each output as a sum of H terms of size eps·|h|/sqrt(H): about
/// eps·rms(h) (rms(h) ~ 1.5 here), and each case checks up to ~10^5 outputs, so atol is ~8 of
/// those standard deviations (bf16 at 1.6e-2 failed once in three full GPU sweeps, at 5 sigma).
fn ffn_tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-4, 1e-4),
        DType::F16 => (4e-3, 4e-3),
        DType::BF16 => (3e-2, 3.2e-2),
        _ => unreachable!(),
    }
}

/// Tolerance vs stock candle on `dev` for a reduction over `k`. Stock rounds the hidden
/// activations three times (matmul, bias add, activation): twice ours. On the CPU, candle's f16 /
/// bf16 matmul (gemm crate) also accumulates in the 16-bit type, an error growing like sqrt(k)
/// units of its epsilon, so there the f64 comparison is the tight one.
fn stock_tolerance(dtype: DType, dev: &Device, k: usize) -> (f64, f64) {
    let (atol, rtol) = ffn_tolerance(dtype);
    let eps = match dtype {
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        _ => 0.0,
    };
    let acc = if dev.is_cpu() { 4.0 * eps * (k as f64).sqrt() } else { 0.0 };
    (2.0 * atol + acc, 2.0 * rtol + acc)
}

/// `randn([rows, cols]) / sqrt(rows)`, rounded to `dtype`.
fn weight(rows: usize, cols: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    (Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu)? / (rows as f64).sqrt())?.to_dtype(dtype)?.to_device(dev)
}

fn to64(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F64)
}

/// One FFN's weights in the seed layout, `[in, out]`, plus the same values stored `[out, in]`.
struct Weights {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    /// `w1` as a `[D, H]` view of a contiguous `[H, D]` tensor (what the CUDA small-M kernel streams).
    w1_oi: Tensor,
    w2_oi: Tensor,
}

impl Weights {
    fn new(d: usize, h: usize, dtype: DType, dev: &Device) -> Result<Self> {
        let (w1, w2) = (weight(d, h, dtype, dev)?, weight(h, d, dtype, dev)?);
        let (b1, b2) = (randn(&[h], dtype, dev)?, randn(&[d], dtype, dev)?);
        let (w1_oi, w2_oi) = (w1.t()?.contiguous()?.t()?, w2.t()?.contiguous()?.t()?);
        Ok(Self { w1, b1, w2, b2, w1_oi, w2_oi })
    }

    /// The f64 reference FFN on `x` (computed on x's device), with or without the biases.
    fn want64(&self, x: &Tensor, act: Activation, bias: bool) -> Result<Tensor> {
        let b = |b: &Tensor| if bias { to64(b).map(Some) } else { Ok(None) };
        reference::ffn(&to64(x)?, &to64(&self.w1)?, b(&self.b1)?.as_ref(), &to64(&self.w2)?, b(&self.b2)?.as_ref(), act)
    }

    /// A [`FusedMlp`] over these weights stored `[out, in]` (what the CUDA kernels stream).
    #[cfg(feature = "cuda")]
    fn mlp(&self, act: Activation, bias: bool) -> Result<FusedMlp> {
        let b = |b: &Tensor| bias.then(|| b.clone());
        FusedMlp::new(self.w1_oi.t()?, b(&self.b1), self.w2_oi.t()?, b(&self.b2), act)
    }
}

/// fused_ffn on `dev` vs the f64 reference (computed on `dev`) and vs stock candle.
fn check(dev: &Device, w: &Weights, m: usize, act: Activation, bias: bool, out_in: bool) -> Result<()> {
    let (d, dtype) = (w.w1.dim(0)?, w.w1.dtype());
    let x = randn(&[m, d], dtype, dev)?;
    let (b1, b2) = if bias { (Some(&w.b1), Some(&w.b2)) } else { (None, None) };
    let (w1, w2) = if out_in { (&w.w1_oi, &w.w2_oi) } else { (&w.w1, &w.w2) };
    let got = fused_ffn(&x, w1, b1, w2, b2, act)?;
    assert_eq!(got.dtype(), dtype);
    assert!(got.device().same_device(dev));
    let want64 = w.want64(&x, act, bias)?;
    let what = format!("{dev:?} m={m} {:?} {dtype:?} {act} bias={bias} out_in={out_in}", w.w1.dims());
    assert_close(&got, &want64, ffn_tolerance(dtype), &format!("{what} vs f64"));
    let stock = reference::ffn(&x, &w.w1, b1, &w.w2, b2, act)?;
    let k = d.max(w.w1.dim(1)?);
    assert_close(&got, &stock, stock_tolerance(dtype, dev, k), &format!("{what} vs stock"));
    Ok(())
}

/// Every activation, dtype, bias choice and both weight layouts on `(d, h)` for each M.
fn sweep(dev: &Device, d: usize, h: usize, ms: &[usize]) -> Result<()> {
    for dtype in FLOAT_DTYPES {
        let w = Weights::new(d, h, dtype, dev)?;
        for &m in ms {
            for act in Activation::ALL {
                for bias in [true, false] {
                    check(dev, &w, m, act, bias, true)?;
                }
            }
            check(dev, &w, m, Activation::Gelu, true, false)?;
        }
    }
    Ok(())
}

const MS: [usize; 7] = [1, 2, 7, 16, 33, 128, 512];

#[test]
fn odd_sizes_every_m_activation_dtype() -> Result<()> {
    for dev in devices() {
        // the CPU test build is unoptimized: its fused range (M <= 32) plus one matmul-path M
        let ms: &[usize] = if dev.is_cuda() { &MS } else { &[1, 2, 7, 16, 33] };
        sweep(&dev, 100, 300, ms)?;
        sweep(&dev, 17, 9, &[1, 5, 40])?;
    }
    Ok(())
}

#[test]
fn seed_shape_512_2048() -> Result<()> {
    for dev in devices() {
        if dev.is_cuda() {
            sweep(&dev, 512, 2048, &MS)?;
        } else {
            for (dtype, m, act) in [
                (DType::F32, 1, Activation::Gelu),
                (DType::F16, 16, Activation::Silu),
                (DType::BF16, 33, Activation::Relu),
            ] {
                let w = Weights::new(512, 2048, dtype, &dev)?;
                check(&dev, &w, m, act, true, true)?;
                check(&dev, &w, m, act, false, false)?;
            }
        }
    }
    Ok(())
}

/// The larger shapes, full sweep (CUDA builds).
#[test]
fn model_shapes() -> Result<()> {
    for dev in devices().into_iter().filter(|d| d.is_cuda()) {
        for (d, h) in [(768, 3072), (1024, 4096), (4096, 11008)] {
            sweep(&dev, d, h, &MS)?;
        }
    }
    Ok(())
}

/// The Llama-7B FFN shape on the CPU at M = 1. Ignored by default: a minute in the unoptimized
/// test build; run with `cargo test --release --test ffn -- --include-ignored` (the GPU runs do).
#[test]
#[ignore = "slow in debug builds; run with --release --include-ignored"]
fn llama_shape_on_cpu() -> Result<()> {
    let dev = Device::Cpu;
    for dtype in FLOAT_DTYPES {
        let w = Weights::new(4096, 11008, dtype, &dev)?;
        check(&dev, &w, 1, Activation::Silu, true, false)?;
        check(&dev, &w, 7, Activation::Gelu, false, true)?;
    }
    Ok(())
}

#[test]
fn batched_and_non_contiguous_x() -> Result<()> {
    for dev in devices() {
        for dtype in FLOAT_DTYPES {
            let w = Weights::new(64, 200, dtype, &dev)?;
            let x = randn(&[2, 3, 64], dtype, &dev)?;
            let got = fused_ffn(&x, &w.w1_oi, Some(&w.b1), &w.w2_oi, Some(&w.b2), Activation::Relu)?;
            assert_eq!(got.dims(), [2, 3, 64]);
            let want = reference::ffn(&x, &w.w1, Some(&w.b1), &w.w2, Some(&w.b2), Activation::Relu)?;
            assert_close(&got, &want, stock_tolerance(dtype, &dev, 200), "[B, N, D]");
            let xt = randn(&[64, 5], dtype, &dev)?.t()?; // [5, 64], strided
            let got = fused_ffn(&xt, &w.w1_oi, None, &w.w2_oi, None, Activation::Silu)?;
            let want = reference::ffn(&xt.contiguous()?, &w.w1, None, &w.w2, None, Activation::Silu)?;
            assert_close(&got, &want, stock_tolerance(dtype, &dev, 200), "transposed x");
        }
    }
    Ok(())
}

#[test]
fn empty_batch() -> Result<()> {
    for dev in devices() {
        let w = Weights::new(32, 48, DType::F16, &dev)?;
        let x = Tensor::zeros((0, 32), DType::F16, &dev)?;
        let y = fused_ffn(&x, &w.w1_oi, Some(&w.b1), &w.w2_oi, Some(&w.b2), Activation::Gelu)?;
        assert_eq!(y.dims(), [0, 32]);
    }
    Ok(())
}

/// The same weights as stock `candle_nn::Linear` layers loaded through one VarBuilder.
fn linear_vb(names: &[(&str, usize, usize)], bias: bool, dtype: DType, dev: &Device) -> Result<VarBuilder<'static>> {
    let mut map = std::collections::HashMap::new();
    for &(name, out_dim, in_dim) in names {
        map.insert(format!("{name}.weight"), weight(out_dim, in_dim, dtype, dev)?);
        if bias {
            map.insert(format!("{name}.bias"), randn(&[out_dim], dtype, dev)?);
        }
    }
    Ok(VarBuilder::from_tensors(map, dtype, dev))
}

#[test]
fn fused_mlp_matches_stock_linear_layers() -> Result<()> {
    for dev in devices() {
        for dtype in FLOAT_DTYPES {
            let shapes: &[(usize, usize)] = if dev.is_cuda() { &[(100, 300), (256, 1024)] } else { &[(100, 300)] };
            for &(d, h) in shapes {
                for bias in [true, false] {
                    let vb = linear_vb(&[("fc1", h, d), ("fc2", d, h)], bias, dtype, &dev)?;
                    for act in Activation::ALL {
                        let mlp = FusedMlp::load(vb.clone(), d, h, bias, act)?;
                        let fc1 = candle_nn::linear_b(d, h, bias, vb.pp("fc1"))?;
                        let fc2 = candle_nn::linear_b(h, d, bias, vb.pp("fc2"))?;
                        for m in [1, 9, 40] {
                            if dev.is_cpu() && m == 9 {
                                continue; // the CPU debug build: one fused-path M and one matmul-path M
                            }
                            let x = randn(&[1, m, d], dtype, &dev)?;
                            let stock = fc2.forward(&act.apply_tensor(&fc1.forward(&x)?)?)?;
                            let got = mlp.forward(&x)?;
                            let what = format!("{dev:?} FusedMlp {d}x{h} {dtype:?} {act} bias={bias} m={m}");
                            assert_close(&got, &stock, stock_tolerance(dtype, &dev, h), &what);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn fused_mlp_from_seed_matches_fused_ffn() -> Result<()> {
    for dev in devices() {
        let w = Weights::new(128, 384, DType::BF16, &dev)?;
        let mlp = FusedMlp::from_seed(&w.w1, Some(&w.b1), &w.w2, Some(&w.b2), Activation::GeluTanh)?;
        let x = randn(&[3, 128], DType::BF16, &dev)?;
        let got = mlp.forward(&x)?;
        let want = reference::ffn(
            &to64(&x)?,
            &to64(&w.w1)?,
            Some(&to64(&w.b1)?),
            &to64(&w.w2)?,
            Some(&to64(&w.b2)?),
            Activation::GeluTanh,
        )?;
        assert_close(&got, &want, ffn_tolerance(DType::BF16), "FusedMlp::from_seed");
    }
    Ok(())
}

/// GatedMlp (from the seed layout) vs the f64 gated reference, and (loaded) vs stock Linear layers.
fn check_gated(
    dev: &Device,
    d: usize,
    h: usize,
    ms: &[usize],
    dtype: DType,
    act: Activation,
    bias: bool,
) -> Result<()> {
    let (wg, wu, wd) = (weight(d, h, dtype, dev)?, weight(d, h, dtype, dev)?, weight(h, d, dtype, dev)?);
    let (bg, bu, bd) = (randn(&[h], dtype, dev)?, randn(&[h], dtype, dev)?, randn(&[d], dtype, dev)?);
    let b = |t: &Tensor| bias.then(|| t.clone());
    let (bg, bu, bd) = (b(&bg), b(&bu), b(&bd));
    let mlp = GatedMlp::from_seed(&wg, bg.as_ref(), &wu, bu.as_ref(), &wd, bd.as_ref(), act)?;
    let o64 = |t: &Option<Tensor>| t.as_ref().map(to64).transpose();
    for &m in ms {
        let x = randn(&[m, d], dtype, dev)?;
        let got = mlp.forward(&x)?;
        let want = reference::gated_ffn(
            &to64(&x)?,
            &to64(&wg)?,
            o64(&bg)?.as_ref(),
            &to64(&wu)?,
            o64(&bu)?.as_ref(),
            &to64(&wd)?,
            o64(&bd)?.as_ref(),
            act,
        )?;
        let what = format!("{dev:?} GatedMlp {d}x{h} {dtype:?} {act} bias={bias} m={m}");
        // the product of two rounded O(1) factors: twice the single-factor tolerance
        let (atol, rtol) = ffn_tolerance(dtype);
        assert_close(&got, &want, (2.0 * atol, 2.0 * rtol), &format!("{what} vs f64"));
        let stock = reference::gated_ffn(&x, &wg, bg.as_ref(), &wu, bu.as_ref(), &wd, bd.as_ref(), act)?;
        let (atol, rtol) = stock_tolerance(dtype, dev, h);
        assert_close(&got, &stock, (2.0 * atol, 2.0 * rtol), &format!("{what} vs stock"));
    }
    Ok(())
}

#[test]
fn gated_mlp_swiglu_geglu() -> Result<()> {
    for dev in devices() {
        for dtype in FLOAT_DTYPES {
            for act in Activation::ALL {
                check_gated(&dev, 100, 300, &[1, 33], dtype, act, act == Activation::Gelu)?;
            }
            let ms: &[usize] = if dev.is_cuda() { &[1, 7, 16, 40] } else { &[16] };
            check_gated(&dev, 512, 1376, ms, dtype, Activation::Silu, false)?;
            check_gated(&dev, 512, 1376, &[2], dtype, Activation::Gelu, true)?;
        }
        if dev.is_cuda() {
            for dtype in [DType::F16, DType::BF16] {
                check_gated(&dev, 4096, 11008, &[1, 16, 32, 128], dtype, Activation::Silu, false)?;
            }
        }
    }
    Ok(())
}

/// The large-M CUDA path for activations cuBLASLt has no epilogue for: the bias in the GEMM's
/// epilogue, then one activation pass in place (plain) or one gate pass (`[gate | up]` GEMM, 16-byte
/// vectors when N % 8 == 0, else scalar); small shapes, quick under compute-sanitizer.
#[test]
fn large_m_activation_and_gate_passes() -> Result<()> {
    for dev in devices().into_iter().filter(|d| d.is_cuda()) {
        for dtype in [DType::F16, DType::BF16] {
            let w = Weights::new(100, 300, dtype, &dev)?;
            for m in [33, 128] {
                for act in Activation::ALL {
                    for bias in [true, false] {
                        check(&dev, &w, m, act, bias, true)?;
                    }
                }
                check(&dev, &w, m, Activation::Silu, true, false)?;
            }
            for (d, h) in [(64, 100), (64, 128)] {
                for act in [Activation::Silu, Activation::Gelu] {
                    check_gated(&dev, d, h, &[40], dtype, act, true)?;
                    check_gated(&dev, d, h, &[33], dtype, act, false)?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn gated_mlp_loads_llama_layout() -> Result<()> {
    for dev in devices() {
        for dtype in FLOAT_DTYPES {
            let (d, h) = (96, 260);
            let vb = linear_vb(&[("gate_proj", h, d), ("up_proj", h, d), ("down_proj", d, h)], false, dtype, &dev)?;
            let mlp = GatedMlp::load(vb.clone(), d, h, false, Activation::Silu)?;
            let gate = candle_nn::linear_no_bias(d, h, vb.pp("gate_proj"))?;
            let up = candle_nn::linear_no_bias(d, h, vb.pp("up_proj"))?;
            let down = candle_nn::linear_no_bias(h, d, vb.pp("down_proj"))?;
            for m in [1, 5, 64] {
                let x = randn(&[2, m, d], dtype, &dev)?;
                let stock = down.forward(&(gate.forward(&x)?.silu()? * up.forward(&x)?)?)?;
                let (atol, rtol) = stock_tolerance(dtype, &dev, h);
                assert_close(&mlp.forward(&x)?, &stock, (2.0 * atol, 2.0 * rtol), &format!("{dev:?} {dtype:?} m={m}"));
            }
        }
    }
    Ok(())
}

/// The CUDA one-launch kernel, forced, on `(d, h)` for each M and activation: vs the f64
/// reference, vs the two-projection path, and bitwise repeatable (fixed-order reduction of the
/// blocks' partials).
#[cfg(feature = "cuda")]
fn check_one_launch(d: usize, h: usize, ms: &[usize], acts: &[Activation]) -> Result<()> {
    check_forced(FfnKernel::OneLaunch, d, h, ms, acts)
}

/// `kernel` (a whole-FFN CUDA kernel), forced, on `(d, h)` for each M and activation: vs the f64
/// reference, vs the two-projection path, and bitwise repeatable.
#[cfg(feature = "cuda")]
fn check_forced(kernel: FfnKernel, d: usize, h: usize, ms: &[usize], acts: &[Activation]) -> Result<()> {
    let dev = common::cuda_device();
    let one = Some(kernel);
    for dtype in [DType::F16, DType::BF16] {
        let w = Weights::new(d, h, dtype, &dev)?;
        for &act in acts {
            let bias = act != Activation::Relu;
            let mlp = w.mlp(act, bias)?;
            for &m in ms {
                let x = randn(&[m, d], dtype, &dev)?;
                let got = mlp.forward_with(&x, one)?;
                let want = w.want64(&x, act, bias)?;
                let what = format!("{kernel:?} {d}x{h} {dtype:?} {act} bias={bias} m={m}");
                assert_close(&got, &want, ffn_tolerance(dtype), &format!("{what} vs f64"));
                let two = mlp.forward_with(&x, Some(FfnKernel::TwoProjections))?;
                assert_close(&got, &two, stock_tolerance(dtype, &dev, h), &format!("{what} vs two projections"));
                let again = mlp.forward_with(&x, one)?;
                let diff = (got.to_dtype(DType::F32)? - again.to_dtype(DType::F32)?)?.abs()?.max_all()?;
                assert_eq!(diff.to_scalar::<f32>()?, 0.0, "{what}: not repeatable");
            }
        }
    }
    Ok(())
}

/// The two-launch FFN (both small-M projections from one op, hidden in a cached scratch), forced:
/// vs the f64 reference and bitwise equal to the two projections as separate ops (same kernels);
/// unaligned (100x300), aligned and gated shapes, 1..=32 tokens, scratch reused across sizes.
#[cfg(feature = "cuda")]
#[test]
fn two_launch_ffn_matches_two_projections() -> Result<()> {
    let dev = common::cuda_device();
    let (two_launches, two_ops) = (Some(FfnKernel::TwoLaunches), Some(FfnKernel::TwoProjections));
    let same = |a: &Tensor, b: &Tensor, what: &str| -> Result<()> {
        let diff = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{what}: two launches differ from two projections");
        Ok(())
    };
    for dtype in [DType::F16, DType::BF16] {
        for (d, h) in [(100, 300), (72, 136), (512, 2048)] {
            let w = Weights::new(d, h, dtype, &dev)?;
            for act in Activation::ALL {
                let bias = act != Activation::Relu;
                let mlp = w.mlp(act, bias)?;
                for m in [1, 7, 16, 32] {
                    let x = randn(&[m, d], dtype, &dev)?;
                    let got = mlp.forward_with(&x, two_launches)?;
                    let want = w.want64(&x, act, bias)?;
                    let what = format!("two launches {d}x{h} {dtype:?} {act} bias={bias} m={m}");
                    assert_close(&got, &want, ffn_tolerance(dtype), &format!("{what} vs f64"));
                    same(&got, &mlp.forward_with(&x, two_ops)?, &what)?;
                }
            }
        }
        for (d, h) in [(100, 300), (512, 1376)] {
            let (wg, wu, wd) = (weight(d, h, dtype, &dev)?, weight(d, h, dtype, &dev)?, weight(h, d, dtype, &dev)?);
            let bg = randn(&[h], dtype, &dev)?;
            let mlp = GatedMlp::from_seed(&wg, Some(&bg), &wu, None, &wd, None, Activation::Silu)?;
            for m in [1, 16, 32] {
                let x = randn(&[m, d], dtype, &dev)?;
                let got = mlp.forward_with(&x, two_launches)?;
                same(&got, &mlp.forward_with(&x, two_ops)?, &format!("gated two launches {d}x{h} {dtype:?} m={m}"))?;
                let want = reference::gated_ffn(&x, &wg, Some(&bg), &wu, None, &wd, None, Activation::Silu)?;
                let (atol, rtol) = stock_tolerance(dtype, &dev, h);
                assert_close(&got, &want, (2.0 * atol, 2.0 * rtol), &format!("gated two launches {d}x{h} m={m}"));
            }
        }
    }
    // out of range: more tokens than the small-M kernel takes
    let z = |dims: &[usize]| Tensor::zeros(dims, DType::F16, &dev);
    let mlp = FusedMlp::new(z(&[16, 8])?, None, z(&[8, 16])?, None, Activation::Gelu)?;
    let msg = err_text(mlp.forward_with(&z(&[33, 8])?, two_launches));
    assert!(msg.contains("two-launch"), "{msg}");
    Ok(())
}

/// The cooperative FFN (one launch over the whole GPU, a grid barrier between the projections),
/// forced: awkward aligned shapes (outputs not a multiple of 16, 1..16 tokens), the shapes it is
/// picked for, hidden and output row groups beyond the grid (blocks loop; one K split), and
/// repeated calls over a scratch reused across sizes (tickets reset by each launch).
#[cfg(feature = "cuda")]
#[test]
fn cooperative_ffn_matches_reference() -> Result<()> {
    let coop = FfnKernel::Cooperative;
    for (d, h, ms) in [(72, 136, &[1, 2, 3, 8, 9, 16][..]), (200, 1000, &[1, 5, 16][..]), (8, 8, &[1, 16][..])] {
        check_forced(coop, d, h, ms, &Activation::ALL)?;
    }
    for (d, h) in [(512, 2048), (768, 3072), (1024, 4096)] {
        check_forced(coop, d, h, &[1, 4, 16], &[Activation::Gelu, Activation::Relu])?;
    }
    cooperative_ffn_grid_loops()?;
    // out of range: gated, too many tokens
    let dev = common::cuda_device();
    let z = |dims: &[usize]| Tensor::zeros(dims, DType::F16, &dev);
    let mlp = FusedMlp::new(z(&[16, 8])?, None, z(&[8, 16])?, None, Activation::Gelu)?;
    let msg = err_text(mlp.forward_with(&z(&[17, 8])?, Some(coop)));
    assert!(msg.contains("cooperative") && msg.contains("m=17"), "{msg}");
    let wg = z(&[8, 16])?;
    let gated = GatedMlp::from_seed(&wg, None, &wg, None, &z(&[16, 8])?, None, Activation::Silu)?;
    let msg = err_text(gated.forward_with(&z(&[1, 8])?, Some(coop)));
    assert!(msg.contains("cooperative") && msg.contains("gated=true"), "{msg}");
    Ok(())
}

/// The cooperative FFN where the row groups outnumber the grid: 273 output row groups (> 2 blocks x
/// 132 SMs): one K split, blocks loop over groups; 273 hidden row groups: blocks loop in phase 1
/// (16 tokens: the two-tile entries' double-buffered W2 batches across a block's units and splits);
/// plus awkward small shapes (72x2200: phase-1 row-group pairs on an H100) and the seed's. Small:
/// the GPU runs use it under compute-sanitizer.
#[cfg(feature = "cuda")]
#[test]
fn cooperative_ffn_grid_loops() -> Result<()> {
    let coop = FfnKernel::Cooperative;
    check_forced(coop, 4360, 264, &[1, 3, 16], &[Activation::Silu])?;
    check_forced(coop, 64, 4360, &[2, 16], &[Activation::GeluTanh])?;
    check_forced(coop, 72, 136, &[1, 9], &[Activation::Gelu])?;
    // 138 hidden row groups (the last one partial) on an H100's 132 SMs: the paired entries, 6
    // blocks taking two row groups in phase 1, 9 output units of 8 rows
    check_forced(coop, 72, 2200, &[1, 9], &[Activation::Gelu])?;
    check_forced(coop, 512, 2048, &[1], &[Activation::Gelu])
}

/// The cooperative FFN (forced) on the Llama shape: 688 hidden and 256 output row groups over the
/// grid (blocks loop), one K split, several W2 load batches per warp in phase 2.
#[cfg(feature = "cuda")]
#[test]
fn cooperative_ffn_llama_shape() -> Result<()> {
    check_forced(FfnKernel::Cooperative, 4096, 11008, &[1, 16], &[Activation::Gelu])
}

/// The one-launch kernel on awkward aligned shapes: hidden sizes not a multiple of its 64-unit
/// chunk, outputs not a multiple of 16, 1..16 tokens; plain and gated.
#[cfg(feature = "cuda")]
#[test]
fn one_launch_kernel_matches_reference() -> Result<()> {
    for (d, h, ms) in [(72, 136, &[1, 2, 3, 8, 9, 16][..]), (200, 1000, &[1, 5, 16][..]), (8, 8, &[1, 16][..])] {
        check_one_launch(d, h, ms, &Activation::ALL)?;
    }
    let dev = common::cuda_device();
    let one = Some(FfnKernel::OneLaunch);
    for dtype in [DType::F16, DType::BF16] {
        // gated (SwiGLU / GeGLU): a gate bias only, so the missing up bias counts as zeros
        for (d, h) in [(72, 136), (512, 1376)] {
            for act in [Activation::Silu, Activation::Gelu] {
                let (wg, wu, wd) = (weight(d, h, dtype, &dev)?, weight(d, h, dtype, &dev)?, weight(h, d, dtype, &dev)?);
                let bg = randn(&[h], dtype, &dev)?;
                let mlp = GatedMlp::from_seed(&wg, Some(&bg), &wu, None, &wd, None, act)?;
                for m in [1, 7, 16] {
                    let x = randn(&[m, d], dtype, &dev)?;
                    let got = mlp.forward_with(&x, one)?;
                    let want = reference::gated_ffn(
                        &to64(&x)?,
                        &to64(&wg)?,
                        Some(&to64(&bg)?),
                        &to64(&wu)?,
                        None,
                        &to64(&wd)?,
                        None,
                        act,
                    )?;
                    let (atol, rtol) = ffn_tolerance(dtype);
                    let what = format!("one launch gated {d}x{h} {dtype:?} {act} m={m}");
                    assert_close(&got, &want, (2.0 * atol, 2.0 * rtol), &what);
                }
            }
        }
    }
    Ok(())
}

/// The one-launch kernel (forced) on the Llama shape: 172 blocks, 256 output row groups.
#[cfg(feature = "cuda")]
#[test]
fn one_launch_kernel_llama_shape() -> Result<()> {
    check_one_launch(4096, 11008, &[1, 16], &[Activation::Silu])
}

#[test]
fn one_launch_kernel_out_of_range_is_an_error() -> Result<()> {
    let z = |s: &[usize], dev: &Device| Tensor::zeros(s, DType::F16, dev);
    let one = Some(FfnKernel::OneLaunch);
    for dev in devices() {
        let mlp = FusedMlp::new(z(&[16, 8], &dev)?, None, z(&[8, 16], &dev)?, None, Activation::Gelu)?;
        if dev.is_cpu() {
            let msg = err_text(mlp.forward_with(&z(&[2, 8], &dev)?, one));
            assert!(msg.contains("one-launch") && msg.contains("CUDA"), "{msg}");
        }
        let msg = err_text(mlp.forward_with(&z(&[17, 8], &dev)?, one));
        assert!(msg.contains("one-launch") && msg.contains("m=17"), "{msg}");
        let odd = FusedMlp::new(z(&[16, 9], &dev)?, None, z(&[9, 16], &dev)?, None, Activation::Gelu)?;
        let msg = err_text(odd.forward_with(&z(&[2, 9], &dev)?, one));
        assert!(msg.contains("multiples of 8") && msg.contains("d=9"), "{msg}");
    }
    Ok(())
}

#[test]
fn bad_shapes_are_errors() -> Result<()> {
    let dev = Device::Cpu;
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev);
    let (x, w1, b1, w2, b2) = (z(&[4, 8])?, z(&[8, 16])?, z(&[16])?, z(&[16, 8])?, z(&[8])?);
    let act = Activation::Gelu;
    let msg = err_text(fused_ffn(&z(&[8])?, &w1, None, &w2, None, act));
    assert!(msg.contains("rank"), "{msg}");
    let msg = err_text(fused_ffn(&x, &z(&[9, 16])?, None, &w2, None, act));
    assert!(msg.contains("w1") && msg.contains("[9, 16]") && msg.contains("[8, _]"), "{msg}");
    let msg = err_text(fused_ffn(&x, &z(&[8, 16, 1])?, None, &w2, None, act));
    assert!(msg.contains("w1"), "{msg}");
    let msg = err_text(fused_ffn(&x, &w1, None, &z(&[15, 8])?, None, act));
    assert!(msg.contains("w2") && msg.contains("[16, _]"), "{msg}");
    let msg = err_text(fused_ffn(&x, &w1, Some(&z(&[15])?), &w2, Some(&b2), act));
    assert!(msg.contains("b1") && msg.contains("[16]"), "{msg}");
    let msg = err_text(fused_ffn(&x, &w1, Some(&b1), &w2, Some(&z(&[16])?), act));
    assert!(msg.contains("b2") && msg.contains("[8]"), "{msg}");
    Ok(())
}

#[test]
fn bad_dtypes_are_errors() -> Result<()> {
    let dev = Device::Cpu;
    let z = |s: &[usize], dt| Tensor::zeros(s, dt, &dev);
    let act = Activation::Relu;
    let (x, w1, w2) = (z(&[4, 8], DType::F32)?, z(&[8, 16], DType::F32)?, z(&[16, 8], DType::F32)?);
    let msg = err_text(fused_ffn(&x, &z(&[8, 16], DType::F16)?, None, &w2, None, act));
    assert!(msg.contains("w1 dtype"), "{msg}");
    let msg = err_text(fused_ffn(&x, &w1, Some(&z(&[16], DType::BF16)?), &w2, None, act));
    assert!(msg.contains("b1 dtype"), "{msg}");
    for dt in [DType::F64, DType::U32] {
        let msg = err_text(fused_ffn(&z(&[4, 8], dt)?, &z(&[8, 16], dt)?, None, &z(&[16, 8], dt)?, None, act));
        assert!(msg.contains("fused_ffn"), "{msg}");
    }
    Ok(())
}

#[test]
fn layer_misuse_is_an_error() -> Result<()> {
    let dev = Device::Cpu;
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev);
    let mlp = FusedMlp::new(z(&[16, 8])?, None, z(&[8, 16])?, None, Activation::Gelu)?;
    let msg = err_text(mlp.forward(&z(&[2, 9])?));
    assert!(msg.contains("last dim 8"), "{msg}");
    let msg = err_text(mlp.forward(&z(&[2, 8])?.to_dtype(DType::F16)?));
    assert!(msg.contains("dtype"), "{msg}");
    let bad = FusedMlp::new(z(&[16, 8])?, None, z(&[8, 15])?, None, Activation::Gelu);
    assert!(bad.unwrap_err().to_string().contains("hidden"));
    let bad = FusedMlp::new(z(&[16, 8])?, Some(z(&[8])?), z(&[8, 16])?, None, Activation::Gelu);
    assert!(bad.unwrap_err().to_string().contains("bias"));
    let bad = GatedMlp::new(z(&[16, 8])?, None, z(&[12, 8])?, None, z(&[8, 16])?, None, Activation::Silu);
    assert!(bad.unwrap_err().to_string().contains("differ in shape"));
    Ok(())
}

#[cfg(feature = "cuda")]
#[test]
fn device_mismatch_is_an_error() -> Result<()> {
    let gpu = common::cuda_device();
    let x = Tensor::zeros((4, 8), DType::F16, &gpu)?;
    let w1 = Tensor::zeros((8, 16), DType::F16, &Device::Cpu)?;
    let w2 = Tensor::zeros((16, 8), DType::F16, &gpu)?;
    let msg = err_text(fused_ffn(&x, &w1, None, &w2, None, Activation::Gelu));
    assert!(msg.contains("Cpu") && msg.contains("Cuda"), "{msg}");
    let b2 = Tensor::zeros(8, DType::F16, &Device::Cpu)?;
    let msg = err_text(fused_ffn(&x, &w1.to_device(&gpu)?, None, &w2, Some(&b2), Activation::Gelu));
    assert!(msg.contains("b2"), "{msg}");
    Ok(())
}
