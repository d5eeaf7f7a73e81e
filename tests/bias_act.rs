mod common;

use candle_core::{DType, Device, Result, Tensor};
use common::{assert_close, devices, err_text, randn, tolerance, FLOAT_DTYPES};
use tiny_gemm::{bias_act, reference, Activation};

/// Shapes that are not multiples of any block size, plus an empty one.
const SHAPES: [&[usize]; 7] = [&[1], &[17], &[3, 100], &[2, 5, 1023], &[7, 4096], &[0, 8], &[1, 1, 1]];

/// One case: the op on `dev` vs the f64 reference on the CPU and vs stock candle on `dev`.
fn check(dev: &Device, shape: &[usize], dtype: DType, act: Activation, with_bias: bool) -> Result<()> {
    let x = randn(shape, dtype, dev)?;
    let cols = *shape.last().unwrap();
    let b = with_bias.then(|| randn(&[cols], dtype, dev)).transpose()?;
    let got = bias_act(&x, b.as_ref(), act)?;
    assert_eq!(got.dtype(), dtype);
    assert!(got.device().same_device(dev));

    let to64 = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F64);
    let want64 = reference::bias_act(&to64(&x)?, b.as_ref().map(to64).transpose()?.as_ref(), act)?;
    let what = format!("{dev:?} {shape:?} {dtype:?} {act} bias={with_bias}");
    assert_close(&got, &want64, tolerance(dtype), &format!("{what} vs f64"));
    // stock candle rounds `x + b` to the storage dtype before the activation: allow two roundings
    let stock = reference::bias_act(&x, b.as_ref(), act)?;
    let (atol, rtol) = tolerance(dtype);
    assert_close(&got, &stock, (2.0 * atol, 2.0 * rtol), &format!("{what} vs stock"));
    Ok(())
}

#[test]
fn matches_reference_over_shapes_dtypes_activations() -> Result<()> {
    for dev in devices() {
        for shape in SHAPES {
            for dtype in FLOAT_DTYPES {
                for act in Activation::ALL {
                    check(&dev, shape, dtype, act, true)?;
                    check(&dev, shape, dtype, act, false)?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn non_contiguous_input() -> Result<()> {
    for dev in devices() {
        let x = randn(&[64, 33], DType::F32, &dev)?.t()?; // [33, 64], strided
        let b = randn(&[64], DType::F32, &dev)?;
        let got = bias_act(&x, Some(&b), Activation::Silu)?;
        let want = reference::bias_act(&x.contiguous()?, Some(&b), Activation::Silu)?;
        assert_close(&got, &want, tolerance(DType::F32), "transposed x");
    }
    Ok(())
}

#[test]
fn same_result_on_every_call() -> Result<()> {
    for dev in devices() {
        let x = randn(&[5, 300], DType::F16, &dev)?;
        let b = randn(&[300], DType::F16, &dev)?;
        let a = bias_act(&x, Some(&b), Activation::Gelu)?;
        let c = bias_act(&x, Some(&b), Activation::Gelu)?;
        assert_eq!(a.to_dtype(DType::F32)?.to_vec2::<f32>()?, c.to_dtype(DType::F32)?.to_vec2::<f32>()?);
    }
    Ok(())
}

#[test]
fn bias_length_mismatch_is_an_error() -> Result<()> {
    let x = Tensor::zeros((4, 10), DType::F32, &Device::Cpu)?;
    let b = Tensor::zeros(9, DType::F32, &Device::Cpu)?;
    let msg = err_text(bias_act(&x, Some(&b), Activation::Relu));
    assert!(msg.contains("[9]") && msg.contains("[10]"), "{msg}");
    let b2 = Tensor::zeros((1, 10), DType::F32, &Device::Cpu)?;
    let msg = err_text(bias_act(&x, Some(&b2), Activation::Relu));
    assert!(msg.contains("expected [10]"), "{msg}");
    Ok(())
}

#[test]
fn bias_dtype_mismatch_is_an_error() -> Result<()> {
    let x = Tensor::zeros((4, 10), DType::F32, &Device::Cpu)?;
    let b = Tensor::zeros(10, DType::F16, &Device::Cpu)?;
    let msg = err_text(bias_act(&x, Some(&b), Activation::Relu));
    assert!(msg.contains("dtype"), "{msg}");
    Ok(())
}

#[test]
fn unsupported_dtype_is_an_error() -> Result<()> {
    for dtype in [DType::F64, DType::U32, DType::U8] {
        let x = Tensor::zeros((4, 10), dtype, &Device::Cpu)?;
        let msg = err_text(bias_act(&x, None, Activation::Relu));
        assert!(msg.contains("bias_act"), "{msg}");
    }
    Ok(())
}

#[cfg(feature = "cuda")]
#[test]
fn device_mismatch_is_an_error() -> Result<()> {
    let gpu = common::cuda_device();
    let x = Tensor::zeros((4, 10), DType::F32, &gpu)?;
    let b = Tensor::zeros(10, DType::F32, &Device::Cpu)?;
    let msg = err_text(bias_act(&x, Some(&b), Activation::Relu));
    assert!(msg.contains("Cpu") && msg.contains("Cuda"), "{msg}");
    Ok(())
}

#[test]
fn activation_names_round_trip() -> Result<()> {
    for act in Activation::ALL {
        assert_eq!(act.name().parse::<Activation>()?, act);
    }
    assert_eq!("gelu_new".parse::<Activation>()?, Activation::GeluTanh);
    assert!("tanh".parse::<Activation>().is_err());
    Ok(())
}
