//! Helpers shared by the integration tests: devices, fresh random inputs, per-dtype tolerances.
#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor};

/// The devices every op test runs on: the CPU, and the first CUDA GPU in a `cuda` build. A
/// `cuda` build with no usable GPU panics here: CUDA tests fail loudly instead of passing.
pub fn devices() -> Vec<Device> {
    vec![
        Device::Cpu,
        #[cfg(feature = "cuda")]
        cuda_device(),
    ]
}

/// The first CUDA GPU, with output poisoning on (see `tiny_gemm::testing`).
#[cfg(feature = "cuda")]
pub fn cuda_device() -> Device {
    tiny_gemm::testing::set_poison_outputs(true);
    Device::new_cuda(0)
        .unwrap_or_else(|e| panic!("built with `cuda` but no usable CUDA GPU: {e}. Run the CUDA tests on a GPU host."))
}

pub const FLOAT_DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// `(atol, rtol)` for one rounding of the output to `dtype` plus f32 math.
pub fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-5, 1e-5),
        DType::F16 => (1e-3, 2e-3),
        DType::BF16 => (8e-3, 1.6e-2),
        _ => (0.0, 0.0),
    }
}

/// Fresh standard-normal values (a new draw every call), rounded to `dtype`.
pub fn randn(shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(dev)
}

/// Asserts `|got - want| <= atol + rtol * |want|` elementwise (and no NaN in `got`).
pub fn assert_close(got: &Tensor, want: &Tensor, (atol, rtol): (f64, f64), what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    if got.elem_count() == 0 {
        return; // candle's CUDA copies reject empty buffers; the shape is all there is to check
    }
    let got = got.to_device(&Device::Cpu).unwrap();
    let want = want.to_device(&Device::Cpu).unwrap();
    let g = got.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let w = want.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in g.iter().zip(&w).enumerate() {
        assert!(!g.is_nan(), "{what}: NaN at flat index {i} (unwritten output?)");
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    assert!(worst.0 <= 0.0, "{what}: at flat index {i}: got {} want {} (atol {atol}, rtol {rtol})", g[i], w[i]);
}

/// The error message of a call that must fail; panics (failing the test) if it succeeded.
pub fn err_text<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error, got Ok({})", std::any::type_name::<T>()),
        Err(e) => e.to_string(),
    }
}
