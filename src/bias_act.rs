//! `bias_act`: fused bias-add + activation, `y = act(x + bias)` with `bias` broadcast over the
//! last dimension. CUDA kernel: `kernels/bias_act.cu`.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{self, dispatch_float, CpuFloat};
use crate::Activation;

/// Computes `act(x + bias)` in one pass, `bias` broadcast over the last dimension of `x`.
///
/// `x` may have any shape (a non-contiguous `x` is copied to a contiguous one first); `bias`, if
/// given, is a vector whose length is the last dimension of `x`. f32, f16 and bf16, on the CPU
/// and (feature `cuda`) on CUDA; the math runs in f32.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tiny_gemm::{bias_act, Activation};
/// # fn main() -> candle_core::Result<()> {
/// let x = Tensor::new(&[[-1f32, 0.0, 2.0], [1.0, -3.0, 0.5]], &Device::Cpu)?;
/// let b = Tensor::new(&[0.5f32, 0.5, -1.0], &Device::Cpu)?;
/// let y = bias_act(&x, Some(&b), Activation::Relu)?;
/// assert_eq!(y.to_vec2::<f32>()?, [[0.0, 0.5, 1.0], [1.5, 0.0, 0.0]]);
/// # Ok(()) }
/// ```
pub fn bias_act(x: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
    if !cpu::is_supported_float(x.dtype()) {
        return Err(candle_core::Error::UnsupportedDTypeForOp(x.dtype(), "bias_act"));
    }
    let x = x.contiguous()?;
    let op = BiasAct { act };
    let Some(bias) = bias else {
        return x.apply_op1_no_bwd(&op);
    };
    let cols = x.dims().last().copied().unwrap_or(1);
    if bias.dims() != [cols] {
        bail!("bias_act: bias has shape {:?}, expected [{cols}] (the last dim of x {:?})", bias.dims(), x.dims());
    }
    if bias.dtype() != x.dtype() {
        bail!("bias_act: bias dtype {:?} differs from x dtype {:?}", bias.dtype(), x.dtype());
    }
    if !bias.device().same_device(x.device()) {
        bail!("bias_act: bias is on {:?} but x is on {:?}", bias.device().location(), x.device().location());
    }
    x.apply_op2_no_bwd(&bias.contiguous()?, &op)
}

struct BiasAct {
    act: Activation,
}

fn cpu_fwd_t<T: CpuFloat>(act: Activation, x: &[T], bias: Option<&[T]>, cols: usize) -> Result<CpuStorage> {
    let mut y = vec![T::from_f32(0.0); x.len()];
    // Rows in chunks of ~16K elements per task: enough work to amortize rayon's overhead.
    let rows_per_task = (16 * 1024 / cols.max(1)).max(1);
    let chunk = rows_per_task * cols.max(1);
    y.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(y, x)| {
        for (y_row, x_row) in y.chunks_mut(cols.max(1)).zip(x.chunks(cols.max(1))) {
            match bias {
                Some(b) => {
                    for ((y, &x), &b) in y_row.iter_mut().zip(x_row).zip(b) {
                        *y = T::from_f32(act.apply_f32(x.to_f32() + b.to_f32()));
                    }
                }
                None => {
                    for (y, &x) in y_row.iter_mut().zip(x_row) {
                        *y = T::from_f32(act.apply_f32(x.to_f32()));
                    }
                }
            }
        }
    });
    Ok(T::to_cpu_storage_owned(y))
}

fn cpu_fwd_dispatch<T: CpuFloat>(
    act: Activation,
    x: (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
) -> Result<CpuStorage> {
    let cols = x.1.dims().last().copied().unwrap_or(1);
    let xs = cpu::contiguous::<T>(x.0, x.1)?;
    let bs = bias.map(|(s, l)| cpu::contiguous::<T>(s, l)).transpose()?;
    cpu_fwd_t(act, xs, bs, cols)
}

impl CustomOp1 for BiasAct {
    fn name(&self) -> &'static str {
        "bias_act"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(s.dtype(), "bias_act", cpu_fwd_dispatch(self.act, (s, l), None))?;
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::fwd(self.act, (s, l), None)
    }
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias_act"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(s1.dtype(), "bias_act", cpu_fwd_dispatch(self.act, (s1, l1), Some((s2, l2))))?;
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::fwd(self.act, (s1, l1), Some((s2, l2)))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{backend::BackendStorage, CudaStorage, DType, Layout, Result, Shape};

    use crate::cuda::{alloc_output, contiguous_view, dtype_suffix, elementwise_config, load_func, ptx};
    use crate::Activation;

    type Arg<'a> = (&'a CudaStorage, &'a Layout);

    pub(super) fn fwd(act: Activation, x: Arg, bias: Option<Arg>) -> Result<(CudaStorage, Shape)> {
        match x.0.dtype() {
            DType::F32 => fwd_t::<f32>(act, x, bias),
            DType::F16 => fwd_t::<half::f16>(act, x, bias),
            DType::BF16 => fwd_t::<half::bf16>(act, x, bias),
            dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "bias_act")),
        }
    }

    fn fwd_t<T: CudaDType + DeviceRepr>(act: Activation, x: Arg, bias: Option<Arg>) -> Result<(CudaStorage, Shape)> {
        let dev = x.0.device();
        let shape = x.1.shape().clone();
        let numel = shape.elem_count();
        let cols = shape.dims().last().copied().unwrap_or(1);
        let name = format!("bias_act_{}_{}", dtype_suffix(x.0.dtype(), "bias_act")?, act.name());
        let func = load_func(dev, "bias_act", ptx::BIAS_ACT, &name)?;
        let xs = contiguous_view::<T>(x.0, x.1)?;
        let bs = bias.map(|(s, l)| contiguous_view::<T>(s, l)).transpose()?;
        let y = alloc_output::<T>(dev, numel)?;
        if numel > 0 {
            let (numel, cols) = (numel as i64, cols as i64);
            let null = 0u64; // a null `const T*`: no bias
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&func);
            b.arg(&xs);
            match &bs {
                Some(bs) => b.arg(bs),
                None => b.arg(&null),
            };
            b.arg(&y).arg(&numel).arg(&cols);
            // SAFETY: argument types and count match `bias_act_<T>_<act>` in kernels/bias_act.cu.
            unsafe { b.launch(elementwise_config(numel as usize)) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), shape))
    }
}
