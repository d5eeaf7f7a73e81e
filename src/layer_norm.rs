//! `add_layer_norm`: fused residual-add + LayerNorm, `s = x + residual`, `y = LN(s)·gamma + beta`
//! over the last dimension, returning both `y` and `s` (the residual stream of a pre-LN block).
//! CUDA kernel: `kernels/layer_norm.cu`.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::cpu::{self, dispatch_float, CpuFloat};

/// Residual-add + LayerNorm in one pass: returns `(normed, sum)` with `sum = x + residual` and
/// `normed = (sum - mean) / sqrt(var + eps) * gamma + beta`, mean and (biased) variance taken over
/// the last dimension, exactly as `candle_nn::LayerNorm` applied to `sum`.
///
/// Without `residual`, `sum` is `x` itself and this is a plain LayerNorm. `sum` is rounded to
/// the storage dtype before it is normalized, as in the stock composition (`(x + r)?` then
/// `LayerNorm`), so the two agree to one rounding of the output. `gamma` and `beta` are vectors
/// of the last dimension's length. f32, f16 and bf16 (all tensors one dtype), on the CPU and
/// (feature `cuda`) on CUDA; statistics in f32. Non-contiguous inputs are copied first.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tiny_gemm::add_layer_norm;
/// # fn main() -> candle_core::Result<()> {
/// let x = Tensor::new(&[[1f32, 2.0, 3.0]], &Device::Cpu)?;
/// let r = Tensor::new(&[[1f32, 0.0, -1.0]], &Device::Cpu)?;
/// let (g, b) = (Tensor::ones(3, candle_core::DType::F32, &Device::Cpu)?, Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu)?);
/// let (y, s) = add_layer_norm(&x, Some(&r), &g, Some(&b), 1e-5)?;
/// assert_eq!(s.to_vec2::<f32>()?, [[2.0, 2.0, 2.0]]);
/// assert_eq!(y.to_vec2::<f32>()?, [[0.0, 0.0, 0.0]]);
/// # Ok(()) }
/// ```
pub fn add_layer_norm(
    x: &Tensor,
    residual: Option<&Tensor>,
    gamma: &Tensor,
    beta: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "add_layer_norm";
    if !cpu::is_supported_float(x.dtype()) {
        return Err(candle_core::Error::UnsupportedDTypeForOp(x.dtype(), OP));
    }
    let Some(&cols) = x.dims().last() else { bail!("{OP}: x must have at least one dimension, got a scalar") };
    if cols == 0 {
        bail!("{OP}: the normalized (last) dimension of x {:?} is empty", x.dims());
    }
    if !(eps.is_finite() && eps >= 0.0) {
        bail!("{OP}: eps must be finite and >= 0, got {eps}");
    }
    let check = |t: &Tensor, what: &str, want: &[usize]| -> Result<()> {
        if t.dims() != want {
            bail!("{OP}: {what} has shape {:?}, expected {want:?} (x is {:?})", t.dims(), x.dims());
        }
        if t.dtype() != x.dtype() {
            bail!("{OP}: {what} dtype {:?} differs from x dtype {:?}", t.dtype(), x.dtype());
        }
        if !t.device().same_device(x.device()) {
            bail!("{OP}: {what} is on {:?} but x is on {:?}", t.device().location(), x.device().location());
        }
        Ok(())
    };
    check(gamma, "gamma", &[cols])?;
    if let Some(b) = beta {
        check(b, "beta", &[cols])?;
    }
    if let Some(r) = residual {
        check(r, "residual", x.dims())?;
    }
    let x = x.contiguous()?;
    let gamma = gamma.contiguous()?;
    // beta rides in the op (CustomOp3 takes three tensors); the kernel reads it in place
    let beta = match beta {
        Some(b) => b.contiguous()?,
        None => gamma.zeros_like()?,
    };
    let eps = eps as f32;
    match residual {
        None => {
            // The normalized output only: x is passed twice and the second is ignored.
            let y = x.apply_op3_no_bwd(&x, &gamma, &AddLayerNorm { eps, add: false, beta })?;
            Ok((y, x))
        }
        Some(r) => {
            let r = r.contiguous()?;
            // One call computes both outputs, returned stacked on a new leading dim.
            let both = x.apply_op3_no_bwd(&r, &gamma, &AddLayerNorm { eps, add: true, beta })?;
            Ok((both.get(0)?, both.get(1)?))
        }
    }
}

/// Plain LayerNorm over the last dimension: `add_layer_norm` without a residual.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    Ok(add_layer_norm(x, None, gamma, beta, eps)?.0)
}

struct AddLayerNorm {
    eps: f32,
    /// true: `x + residual`, output `[2, ..x.dims]` (normalized values, then the sum);
    /// false: the second input is ignored, output `[..x.dims]` (normalized values)
    add: bool,
    /// `[cols]`, contiguous, same dtype and device as x
    beta: Tensor,
}

impl AddLayerNorm {
    fn out_shape(&self, x: &Layout) -> Shape {
        if self.add {
            let mut dims = vec![2];
            dims.extend_from_slice(x.dims());
            Shape::from(dims)
        } else {
            x.shape().clone()
        }
    }
}

/// One row: `s = x (+ r)`, rounded to `T`; `y = (s - mean) * rstd * gamma + beta`.
fn cpu_row<T: CpuFloat>(eps: f32, x: &[T], r: Option<&[T]>, gamma: &[T], beta: &[T], y: &mut [T], s: &mut [T]) {
    let cols = x.len();
    let mut sum = 0f32;
    for (i, s) in s.iter_mut().enumerate() {
        let v = match r {
            Some(r) => T::from_f32(x[i].to_f32() + r[i].to_f32()),
            None => x[i],
        };
        *s = v;
        sum += v.to_f32();
    }
    let mean = sum / cols as f32;
    let var = s.iter().map(|v| (v.to_f32() - mean).powi(2)).sum::<f32>() / cols as f32;
    let rstd = 1.0 / (var + eps).sqrt();
    for i in 0..cols {
        y[i] = T::from_f32((s[i].to_f32() - mean) * rstd * gamma[i].to_f32() + beta[i].to_f32());
    }
}

fn cpu_fwd_t<T: CpuFloat>(
    op: &AddLayerNorm,
    x: (&CpuStorage, &Layout),
    r: (&CpuStorage, &Layout),
    g: (&CpuStorage, &Layout),
) -> Result<CpuStorage> {
    let cols = x.1.dims().last().copied().unwrap_or(1);
    let xs = cpu::contiguous::<T>(x.0, x.1)?;
    let rs = if op.add { Some(cpu::contiguous::<T>(r.0, r.1)?) } else { None };
    let gamma = cpu::contiguous::<T>(g.0, g.1)?;
    let (beta_storage, beta_layout) = op.beta.storage_and_layout();
    let Storage::Cpu(beta_storage) = &*beta_storage else { bail!("add_layer_norm: beta is not on the CPU") };
    let beta = cpu::contiguous::<T>(beta_storage, beta_layout)?;
    let n = xs.len();
    let zero = T::from_f32(0.0);
    let mut out = vec![zero; if op.add { 2 * n } else { n }];
    let (y, s_out) = out.split_at_mut(n);
    // Rows in chunks of ~16K elements per task: enough work to amortize rayon's overhead.
    let rows_per_task = (16 * 1024 / cols).max(1);
    let chunk = rows_per_task * cols;
    let row = |(i, y): (usize, &mut [T]), s: &mut [T]| {
        for (j, (y, s)) in y.chunks_mut(cols).zip(s.chunks_mut(cols)).enumerate() {
            let at = (i * rows_per_task + j) * cols;
            let x = &xs[at..at + cols];
            let r = rs.map(|r| &r[at..at + cols]);
            cpu_row(op.eps, x, r, gamma, beta, y, s);
        }
    };
    if op.add {
        y.par_chunks_mut(chunk).enumerate().zip(s_out.par_chunks_mut(chunk)).for_each(|(y, s)| row(y, s));
    } else {
        y.par_chunks_mut(chunk).enumerate().for_each(|(i, y)| {
            let mut s = vec![zero; y.len()];
            row((i, y), &mut s)
        });
    }
    Ok(T::to_cpu_storage_owned(out))
}

impl CustomOp3 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "add_layer_norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(s1.dtype(), "add_layer_norm", cpu_fwd_t(self, (s1, l1), (s2, l2), (s3, l3)))?;
        Ok((out, self.out_shape(l1)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = cuda::fwd(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, self.out_shape(l1)))
    }
}

/// Threads per block (one block per row): enough for ~4 elements per thread, a whole number of
/// warps, between one warp and 1024 threads.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn choose_threads(cols: usize) -> u32 {
    const ELEMS_PER_THREAD: usize = 4;
    const WARP: usize = 32;
    const MAX_THREADS: usize = 1024;
    (cols.div_ceil(ELEMS_PER_THREAD).div_ceil(WARP) * WARP).clamp(WARP, MAX_THREADS) as u32
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{backend::BackendStorage, bail, CudaStorage, DType, Layout, Result, Storage};

    use super::{choose_threads, AddLayerNorm};
    use crate::cuda::{alloc_output, contiguous_view, dtype_suffix, load_func, ptx};

    type Arg<'a> = (&'a CudaStorage, &'a Layout);

    pub(super) fn fwd(op: &AddLayerNorm, x: Arg, r: Arg, g: Arg) -> Result<CudaStorage> {
        match x.0.dtype() {
            DType::F32 => fwd_t::<f32>(op, x, r, g),
            DType::F16 => fwd_t::<half::f16>(op, x, r, g),
            DType::BF16 => fwd_t::<half::bf16>(op, x, r, g),
            dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "add_layer_norm")),
        }
    }

    fn fwd_t<T: CudaDType + DeviceRepr>(op: &AddLayerNorm, x: Arg, r: Arg, g: Arg) -> Result<CudaStorage> {
        let dev = x.0.device();
        let numel = x.1.shape().elem_count();
        let cols = x.1.dims().last().copied().unwrap_or(1);
        let rows = numel / cols;
        let name = format!("add_layer_norm_{}", dtype_suffix(x.0.dtype(), "add_layer_norm")?);
        let func = load_func(dev, "layer_norm", ptx::LAYER_NORM, &name)?;
        let xs = contiguous_view::<T>(x.0, x.1)?;
        let rs = contiguous_view::<T>(r.0, r.1)?;
        let gamma = contiguous_view::<T>(g.0, g.1)?;
        let (beta_storage, beta_layout) = op.beta.storage_and_layout();
        let Storage::Cuda(beta_storage) = &*beta_storage else { bail!("add_layer_norm: beta is not on CUDA") };
        let beta = contiguous_view::<T>(beta_storage, beta_layout)?;
        let both = op.add;
        let out = alloc_output::<T>(dev, if both { 2 * numel } else { numel })?;
        if rows > 0 {
            let y = out.slice(0..numel);
            let s = both.then(|| out.slice(numel..2 * numel));
            let null = 0u64; // a null pointer: no residual / no sum output
            let (rows_i, cols_i) = (rows as i64, cols as i64);
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&func);
            b.arg(&xs);
            if op.add {
                b.arg(&rs);
            } else {
                b.arg(&null);
            }
            b.arg(&gamma).arg(&beta).arg(&y);
            match &s {
                Some(s) => b.arg(s),
                None => b.arg(&null),
            };
            b.arg(&rows_i).arg(&cols_i).arg(&op.eps);
            // One block per row; the kernel loops over rows past the grid.
            const MAX_BLOCKS: usize = 1 << 20;
            let cfg = LaunchConfig {
                grid_dim: (rows.min(MAX_BLOCKS) as u32, 1, 1),
                block_dim: (choose_threads(cols), 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: argument types and count match `add_layer_norm_<T>` in kernels/layer_norm.cu;
            // `y` and `s` are disjoint slices of `out`, each `numel` long.
            unsafe { b.launch(cfg) }.w()?;
        }
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::choose_threads;

    #[test]
    fn threads_cover_the_row_in_whole_warps() {
        assert_eq!(choose_threads(1), 32);
        assert_eq!(choose_threads(128), 32);
        assert_eq!(choose_threads(129), 64);
        assert_eq!(choose_threads(768), 192);
        assert_eq!(choose_threads(1023), 256);
        assert_eq!(choose_threads(1 << 20), 1024);
        for cols in [1, 17, 100, 1023, 4096, 50_000] {
            assert_eq!(choose_threads(cols) % 32, 0);
        }
    }
}
