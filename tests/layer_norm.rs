mod common;

use candle_core::{DType, Device, Result, Tensor, D};
use common::{assert_close, devices, err_text, randn, tolerance, FLOAT_DTYPES};
use tiny_gemm::{add_layer_norm, layer_norm, reference};

/// Shapes with awkward last dimensions (1, 17, 100, 1023, more than one block's worth of threads
/// at 4 per thread) and leading dims that are not multiples of anything.
const SHAPES: [&[usize]; 8] = [&[1], &[17], &[3, 100], &[2, 5, 1023], &[7, 768], &[1, 4100], &[0, 8], &[1, 1, 1]];

/// The f64 LayerNorm of `s` (already summed and rounded) with exact two-pass statistics.
fn ln_f64(s: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let s = s.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let (g, b) =
        (gamma.to_device(&Device::Cpu)?.to_dtype(DType::F64)?, beta.to_device(&Device::Cpu)?.to_dtype(DType::F64)?);
    let centered = s.broadcast_sub(&s.mean_keepdim(D::Minus1)?)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    centered.broadcast_div(&(var + eps)?.sqrt()?)?.broadcast_mul(&g)?.broadcast_add(&b)
}

/// One case: the op on `dev` vs an f64 reference and vs stock candle (`x + r`, then
/// `candle_nn::LayerNorm`) on `dev`. Inputs get a random offset so the mean is far from zero.
fn check(dev: &Device, shape: &[usize], dtype: DType, with_residual: bool) -> Result<()> {
    let cols = *shape.last().unwrap();
    let offset = Tensor::rand(-3f32, 3f32, 1, &Device::Cpu)?.to_dtype(dtype)?.to_device(dev)?;
    let x = randn(shape, dtype, dev)?.broadcast_add(&offset)?;
    let r = with_residual.then(|| randn(shape, dtype, dev)).transpose()?;
    let gamma = randn(&[cols], dtype, dev)?;
    let beta = randn(&[cols], dtype, dev)?;
    let eps = 1e-5;
    let (y, s) = add_layer_norm(&x, r.as_ref(), &gamma, Some(&beta), eps)?;
    assert_eq!((y.dtype(), s.dtype()), (dtype, dtype));
    assert!(y.device().same_device(dev) && s.device().same_device(dev));
    let what = format!("{dev:?} {shape:?} {dtype:?} residual={with_residual}");
    if x.elem_count() == 0 {
        // nothing to compare (and candle's CUDA copies reject empty buffers): shapes only
        assert_eq!((y.dims(), s.dims()), (shape, shape), "{what}");
        return Ok(());
    }

    // the sum: x + r rounded once to dtype, as candle's `add`
    let (stock_y, stock_s) = reference::add_layer_norm(&x, r.as_ref(), &gamma, Some(&beta), eps)?;
    assert_close(&s, &stock_s, (0.0, 0.0), &format!("{what} sum vs stock"));
    // normalized: vs f64 on the rounded sum (one rounding of the output) ...
    let want64 = ln_f64(&stock_s, &gamma, &beta, eps)?;
    let (atol, rtol) = tolerance(dtype);
    // f32 statistics over up to 4K elements: a few ulps of f32 per output, times |gamma|
    let (atol, rtol) = if dtype == DType::F32 { (atol * 4.0, rtol * 4.0) } else { (atol, rtol) };
    assert_close(&y, &want64, (atol, rtol), &format!("{what} vs f64"));
    // ... and vs candle_nn::LayerNorm (its one-pass f32 variance adds its own error): two roundings
    assert_close(&y, &stock_y, (2.0 * atol, 2.0 * rtol), &format!("{what} vs stock"));
    Ok(())
}

#[test]
fn matches_reference_over_shapes_and_dtypes() -> Result<()> {
    for dev in devices() {
        for shape in SHAPES {
            for dtype in FLOAT_DTYPES {
                check(&dev, shape, dtype, true)?;
                check(&dev, shape, dtype, false)?;
            }
        }
    }
    Ok(())
}

#[test]
fn no_beta_and_plain_layer_norm() -> Result<()> {
    for dev in devices() {
        let x = randn(&[9, 300], DType::F32, &dev)?;
        let g = randn(&[300], DType::F32, &dev)?;
        let zero = g.zeros_like()?;
        let (y, s) = add_layer_norm(&x, None, &g, None, 1e-6)?;
        let want = ln_f64(&x, &g, &zero, 1e-6)?;
        assert_close(&y, &want, (4e-5, 4e-5), "no beta");
        assert_close(&s, &x, (0.0, 0.0), "sum without residual is x");
        assert_close(&layer_norm(&x, &g, None, 1e-6)?, &y, (0.0, 0.0), "layer_norm");
    }
    Ok(())
}

#[test]
fn non_contiguous_inputs() -> Result<()> {
    for dev in devices() {
        let x = randn(&[64, 33], DType::F32, &dev)?.t()?; // [33, 64], strided
        let r = randn(&[64, 33], DType::F32, &dev)?.t()?;
        let g = randn(&[64], DType::F32, &dev)?;
        let b = randn(&[64], DType::F32, &dev)?;
        let (y, s) = add_layer_norm(&x, Some(&r), &g, Some(&b), 1e-5)?;
        let (wy, ws) = reference::add_layer_norm(&x.contiguous()?, Some(&r.contiguous()?), &g, Some(&b), 1e-5)?;
        assert_close(&s, &ws, (0.0, 0.0), "strided sum");
        assert_close(&y, &wy, (1e-4, 1e-4), "strided normed");
    }
    Ok(())
}

#[test]
fn constant_rows_normalize_to_beta() -> Result<()> {
    for dev in devices() {
        let x = (Tensor::ones((3, 1000), DType::F32, &dev)? * 7.0)?;
        let g = randn(&[1000], DType::F32, &dev)?;
        let b = randn(&[1000], DType::F32, &dev)?;
        let (y, _) = add_layer_norm(&x, None, &g, Some(&b), 1e-5)?;
        assert_close(&y, &b.unsqueeze(0)?.broadcast_as((3, 1000))?.contiguous()?, (1e-6, 0.0), "constant");
    }
    Ok(())
}

#[test]
fn bad_inputs_are_errors() -> Result<()> {
    let cpu = Device::Cpu;
    let x = Tensor::zeros((4, 10), DType::F32, &cpu)?;
    let g = Tensor::ones(10, DType::F32, &cpu)?;
    let msg = err_text(add_layer_norm(&x, None, &Tensor::ones(9, DType::F32, &cpu)?, None, 1e-5));
    assert!(msg.contains("gamma") && msg.contains("[9]") && msg.contains("[10]"), "{msg}");
    let msg = err_text(add_layer_norm(&x, None, &g, Some(&Tensor::ones((1, 10), DType::F32, &cpu)?), 1e-5));
    assert!(msg.contains("beta") && msg.contains("[1, 10]"), "{msg}");
    let msg = err_text(add_layer_norm(&x, Some(&Tensor::zeros((4, 11), DType::F32, &cpu)?), &g, None, 1e-5));
    assert!(msg.contains("residual") && msg.contains("[4, 11]"), "{msg}");
    let msg = err_text(add_layer_norm(&x, Some(&Tensor::zeros((4, 10), DType::F16, &cpu)?), &g, None, 1e-5));
    assert!(msg.contains("residual dtype"), "{msg}");
    let msg = err_text(add_layer_norm(&x, None, &g.to_dtype(DType::BF16)?, None, 1e-5));
    assert!(msg.contains("gamma dtype"), "{msg}");
    for eps in [-1.0, f64::NAN, f64::INFINITY] {
        let msg = err_text(add_layer_norm(&x, None, &g, None, eps));
        assert!(msg.contains("eps"), "{msg}");
    }
    let empty = Tensor::zeros((4, 0), DType::F32, &cpu)?;
    let msg = err_text(add_layer_norm(&empty, None, &Tensor::zeros(0, DType::F32, &cpu)?, None, 1e-5));
    assert!(msg.contains("empty"), "{msg}");
    let scalar = Tensor::new(1f32, &cpu)?;
    let msg = err_text(add_layer_norm(&scalar, None, &g, None, 1e-5));
    assert!(msg.contains("scalar"), "{msg}");
    for dtype in [DType::F64, DType::U32] {
        let x = Tensor::zeros((4, 10), dtype, &cpu)?;
        let msg = err_text(add_layer_norm(&x, None, &g.to_dtype(dtype)?, None, 1e-5));
        assert!(msg.contains("add_layer_norm"), "{msg}");
    }
    Ok(())
}

#[cfg(feature = "cuda")]
#[test]
fn device_mismatch_is_an_error() -> Result<()> {
    let gpu = common::cuda_device();
    let x = Tensor::zeros((4, 10), DType::F32, &gpu)?;
    let g = Tensor::ones(10, DType::F32, &Device::Cpu)?;
    let msg = err_text(add_layer_norm(&x, None, &g, None, 1e-5));
    assert!(msg.contains("Cpu") && msg.contains("Cuda"), "{msg}");
    Ok(())
}
