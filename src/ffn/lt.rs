//! Large-M CUDA projections through cuBLASLt, with the bias (and ReLU / tanh-GELU) applied in the
//! GEMM's epilogue, in f32 before the one rounding: no separate `bias_act` pass over the output.
//! cuBLASLt's epilogues cover `Identity` (bias), `Relu` and `GeluTanh` (its GELU is the tanh
//! form); for `Gelu` (erf), `Silu` and the gated forms the bias still goes in the epilogue and one
//! vectorized pass (`kernels/ffn.cu`, `ffn_act_*` in place / `ffn_gate_*`) applies the activation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::cublaslt::{self, CudaBlasLT, Matmul, MatmulConfig};
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::cuda_backend::{CudaDType, DeviceId};
use candle_core::{backend::BackendStorage, bail, CudaDevice, CudaStorage, DType, Layout, Result};

use super::{weight_layout, WeightLayout};
use crate::cuda::{alloc_output, contiguous_view};
use crate::Activation;

/// cuBLASLt's epilogue for `act` after a bias (or without one), if it has one.
pub(crate) fn lt_activation(act: Activation) -> Option<Option<cublaslt::Activation>> {
    match act {
        Activation::Identity => Some(None),
        Activation::Relu => Some(Some(cublaslt::Activation::Relu)),
        Activation::GeluTanh => Some(Some(cublaslt::Activation::Gelu)),
        Activation::Gelu | Activation::Silu => None,
    }
}

/// The device's cuBLASLt handle (and its 32 MiB workspace), created once per device.
fn handle(dev: &CudaDevice) -> Result<Arc<CudaBlasLT>> {
    static HANDLES: OnceLock<Mutex<HashMap<DeviceId, Arc<CudaBlasLT>>>> = OnceLock::new();
    let mut cache = HANDLES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = cache.get(&dev.id()) {
        return Ok(h.clone());
    }
    let h = Arc::new(CudaBlasLT::new(dev.cuda_stream()).map_err(lt_err)?);
    cache.insert(dev.id(), h.clone());
    Ok(h)
}

fn lt_err(e: cublaslt::result::CublasError) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(e))
}

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// `act(x·w + b)` for `x [m, k]` (contiguous), `w` a dense logical `[k, n]` weight (either
/// [`WeightLayout`]), `b [n]`; `act` must have a cuBLASLt epilogue ([`lt_activation`]).
pub(super) fn fwd(act: Activation, x: Arg, w: Arg, b: Option<Arg>) -> Result<CudaStorage> {
    match x.0.dtype() {
        DType::F16 => fwd_t::<half::f16>(act, x, w, b),
        DType::BF16 => fwd_t::<half::bf16>(act, x, w, b),
        dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "fused_ffn (cuBLASLt epilogue)")),
    }
}

fn fwd_t<T: CudaDType + DeviceRepr>(act: Activation, x: Arg, w: Arg, b: Option<Arg>) -> Result<CudaStorage>
where
    CudaBlasLT: Matmul<T>,
{
    let dev = x.0.device();
    let (m, k) = (x.1.dims()[0], x.1.dims()[1]);
    let n = w.1.dims()[1];
    let Some(lt_act) = lt_activation(act) else {
        bail!("fused_ffn: cuBLASLt has no epilogue for {act}");
    };
    let Some(layout) = weight_layout(w.1) else {
        bail!("fused_ffn: cuBLASLt path needs a dense weight, got strides {:?}", w.1.stride());
    };
    let xs = contiguous_view::<T>(x.0, x.1)?;
    let ws = w.0.as_cuda_slice::<T>()?.slice(w.1.start_offset()..w.1.start_offset() + k * n);
    let bs = b.map(|(s, l)| contiguous_view::<T>(s, l)).transpose()?;
    let mut y = alloc_output::<T>(dev, m * n)?;
    if m == 0 || n == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()));
    }
    // Column-major view: yᵀ [n, m] = op(W) [n, k] · xᵀ [k, m]; W stored [out, in] is a k x n
    // column-major matrix (transposed), stored [in, out] an n x k one.
    let out_in = layout == WeightLayout::OutIn;
    let cfg = MatmulConfig {
        transa: out_in,
        transb: false,
        transc: false,
        m: n as u64,
        n: m as u64,
        k: k as u64,
        alpha: 1.0,
        lda: (if out_in { k } else { n }) as i64,
        ldb: k as i64,
        beta: 0.0,
        ldc: n as i64,
        stride_a: None,
        stride_b: None,
        stride_c: None,
        stride_bias: None,
        batch_size: None,
    };
    let lt = handle(dev)?;
    // SAFETY: W holds k·n elements, x m·k, y m·n, b n, laid out as `cfg` describes; cuBLASLt runs on
    // the device's stream, where the views' events order it.
    unsafe { lt.matmul(cfg, &ws, &xs, &mut y, bs.as_ref(), lt_act.as_ref()) }.map_err(lt_err)?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}
