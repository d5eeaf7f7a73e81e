//! CUDA glue of the INT4 ops (kernels/int4_gemm.cu, kernels/int4_gemm_tc.cu): dtype dispatch,
//! launch shape, launches.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::sys::{self, CUfunction_attribute};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Shape, Storage};
use half::f16;

use super::format::Int4Weight;
use super::launch::{choose_gemm_config, choose_tc_config};
use crate::cuda::{alloc_output, contiguous_view, dtype_suffix, elementwise_config, load_func, ptx};
use crate::Activation;

const MODULE: &str = "int4_gemm";
const TC_MODULE: &str = "int4_gemm_tc";
/// Outputs per thread of `int4_dequant_*` (`RUN` in kernels/int4_gemm.cu).
const DEQUANT_RUN: usize = 8;
/// Dynamic shared memory a kernel may use without opting in.
const DEFAULT_SMEM_LIMIT: usize = 48 * 1024;
/// `act_code(Activation::Identity)`: the GEMM's activation when `int4_reduce` runs the epilogue.
const ACT_IDENTITY: i32 = 4;

/// Mirrors `GemmDims` in kernels/int4_gemm.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct GemmDims {
    m: i32,
    n: i32,
    k: i32,
    group_size: i32,
    chunks_per_split: i32,
}
// SAFETY: plain-old-data, layout identical to the C struct (five ints).
unsafe impl DeviceRepr for GemmDims {}

/// Mirrors `TcDims` in kernels/int4_gemm_tc.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct TcDims {
    m: i32,
    n: i32,
    k: i32,
    group_size: i32,
    chunks_per_split: i32,
}
// SAFETY: plain-old-data, layout identical to the C struct (five ints).
unsafe impl DeviceRepr for TcDims {}

fn i32_dim(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("int4: {what}={v} exceeds the kernel's i32 range")))
}

/// Runs `f` with the weight's device views (packed, scales, zeros).
fn with_views<R>(
    w: &Int4Weight,
    f: impl FnOnce(CudaView<u32>, CudaView<f16>, Option<CudaView<f16>>) -> Result<R>,
) -> Result<R> {
    let (ps, pl) = w.packed.storage_and_layout();
    let (ss, sl) = w.scales.storage_and_layout();
    let zs = w.zeros.as_ref().map(|z| z.storage_and_layout());
    let p = contiguous_view::<u32>(cuda_of(&ps)?, pl)?;
    let s = contiguous_view::<f16>(cuda_of(&ss)?, sl)?;
    let z = zs.as_ref().map(|(s, l)| contiguous_view::<f16>(cuda_of(s)?, l)).transpose()?;
    f(p, s, z)
}

fn cuda_of(s: &Storage) -> Result<&CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        _ => bail!("int4: weight tensors are not on a CUDA device"),
    }
}

/// SMs of `dev`, queried once per device ordinal.
fn sm_count(dev: &CudaDevice) -> Result<usize> {
    static CACHE: OnceLock<Mutex<HashMap<usize, usize>>> = OnceLock::new();
    let ctx = dev.cuda_stream().context().clone();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&n) = cache.get(&ctx.ordinal()) {
        return Ok(n);
    }
    let n = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).w()?.max(1) as usize;
    cache.insert(ctx.ordinal(), n);
    Ok(n)
}

/// The `act` argument of the kernels: `tg::Act`'s numbering in kernels/common.cuh.
fn act_code(act: Activation) -> i32 {
    match act {
        Activation::Gelu => 0,
        Activation::GeluTanh => 1,
        Activation::Relu => 2,
        Activation::Silu => 3,
        Activation::Identity => 4,
    }
}

/// `act(x · Wᵀ + bias)` with the bias (`[N]`, x's dtype; checked by `int4_linear`) and the
/// activation applied in the kernels' epilogue.
pub(super) fn matmul(
    w: &Int4Weight,
    x: &CudaStorage,
    l: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    act: Activation,
) -> Result<(CudaStorage, Shape)> {
    match x.dtype() {
        DType::F32 => matmul_t::<f32>(w, x, l, bias, act),
        DType::F16 => matmul_t::<half::f16>(w, x, l, bias, act),
        DType::BF16 => matmul_t::<half::bf16>(w, x, l, bias, act),
        dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "int4_matmul")),
    }
}

fn matmul_t<T: CudaDType + DeviceRepr>(
    w: &Int4Weight,
    x: &CudaStorage,
    l: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    act: Activation,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.device();
    let bias_view = bias.map(|(s, l)| contiguous_view::<T>(s, l)).transpose()?;
    let bias = bias_view.as_ref();
    let (m, n, k) = (l.dims()[0], w.n, w.k);
    if l.start_offset() % 8 != 0 {
        bail!("int4_matmul: x must start at a multiple of 8 elements (offset {})", l.start_offset());
    }
    match super::cuda_path(m, x.dtype()) {
        super::CudaPath::SmallM => {}
        super::CudaPath::TensorCore => return matmul_tc::<T>(w, x, l, bias, act),
        super::CudaPath::DequantizeMatmul => {
            bail!("int4_matmul: M={m} in {:?} takes the dequantize + matmul path, not a fused kernel", x.dtype())
        }
    }
    let cfg = choose_gemm_config(m, n, k, sm_count(dev)?);
    let dims = GemmDims {
        m: i32_dim(m, "M")?,
        n: i32_dim(n, "N")?,
        k: i32_dim(k, "K")?,
        group_size: w.cfg.group_size as i32,
        chunks_per_split: cfg.chunks_per_split as i32,
    };
    let sfx = dtype_suffix(x.dtype(), "int4_matmul")?;
    let xs = contiguous_view::<T>(x, l)?;
    let y = alloc_output::<T>(dev, m * n)?;
    // f32 partials only with several K splits; one split writes y directly (a null `float*`)
    let partial = if cfg.splits > 1 { Some(alloc_output::<f32>(dev, cfg.splits * m * n)?) } else { None };
    let sym = if w.cfg.symmetric { "sym" } else { "asym" };
    let gemm = load_func(dev, MODULE, ptx::INT4_GEMM, &format!("int4_gemm_{sfx}_{}_{sym}", cfg.variant.name()))?;
    let smem = cfg.smem_bytes(w.cfg.group_size, w.cfg.symmetric);
    if smem > DEFAULT_SMEM_LIMIT {
        gemm.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32).w()?;
    }
    with_views(w, |p, s, z| {
        let null = 0u64; // a null pointer: no zeros (symmetric) / no partials (one split)
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&gemm);
        b.arg(&xs).arg(&p).arg(&s);
        match &z {
            Some(z) => b.arg(z),
            None => b.arg(&null),
        };
        b.arg(&y);
        match &partial {
            Some(part) => b.arg(part),
            None => b.arg(&null),
        };
        b.arg(&dims);
        // the epilogue: a null bias pointer = no bias (with K splits, int4_reduce applies it)
        let (no_bias, bias_in_gemm) = (0u64, partial.is_none());
        match bias {
            Some(bias) if bias_in_gemm => b.arg(bias),
            _ => b.arg(&no_bias),
        };
        let gemm_act = if bias_in_gemm { act_code(act) } else { ACT_IDENTITY };
        b.arg(&gemm_act);
        let lc = LaunchConfig {
            grid_dim: (cfg.blocks_x as u32, cfg.splits as u32, cfg.m_blocks as u32),
            block_dim: ((cfg.warps * 32) as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        // SAFETY: argument types and count match `int4_gemm_<T>_<variant>_<sym>` in kernels/int4_gemm.cu;
        // every view covers the extents `dims` describes (checked by int4_matmul / the format), and
        // `smem` is the layout the kernel derives from `dims` and the variant.
        unsafe { b.launch(lc) }.w()?;
        Ok(())
    })?;
    if let Some(partial) = &partial {
        reduce::<T>(dev, sfx, partial, &y, (m, n, cfg.splits), bias, act)?;
    }
    Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), Shape::from((m, n))))
}

/// The tensor-core GEMM (`int4_gemm_tc_*`, f16 / bf16 activations), plus `int4_reduce_*` over the
/// f32 partials when K is split.
fn matmul_tc<T: CudaDType + DeviceRepr>(
    w: &Int4Weight,
    x: &CudaStorage,
    l: &Layout,
    bias: Option<&CudaView<T>>,
    act: Activation,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.device();
    let (m, n, k) = (l.dims()[0], w.n, w.k);
    let cfg = choose_tc_config(m, n, k, sm_count(dev)?);
    let dims = TcDims {
        m: i32_dim(m, "M")?,
        n: i32_dim(n, "N")?,
        k: i32_dim(k, "K")?,
        group_size: w.cfg.group_size as i32,
        chunks_per_split: cfg.chunks_per_split as i32,
    };
    // grid.y (column blocks) and grid.z (splits) are limited to 65535
    if cfg.n_blocks > 65535 {
        bail!("int4_matmul: N={n} needs {} column blocks, more than the 65535 the kernel's grid takes", cfg.n_blocks);
    }
    let sfx = dtype_suffix(x.dtype(), "int4_matmul")?;
    let xs = contiguous_view::<T>(x, l)?;
    let y = alloc_output::<T>(dev, m * n)?;
    let partial = if cfg.splits > 1 { Some(alloc_output::<f32>(dev, cfg.splits * m * n)?) } else { None };
    let sym = if w.cfg.symmetric { "sym" } else { "asym" };
    let gemm =
        load_func(dev, TC_MODULE, ptx::INT4_GEMM_TC, &format!("int4_gemm_tc_{sfx}_{}_{sym}", cfg.variant.name()))?;
    let smem = cfg.variant.smem_bytes();
    if smem > DEFAULT_SMEM_LIMIT {
        gemm.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32).w()?;
    }
    with_views(w, |p, s, z| {
        let null = 0u64; // a null pointer: no zeros (symmetric) / no partials (one split)
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&gemm);
        b.arg(&xs).arg(&p).arg(&s);
        match &z {
            Some(z) => b.arg(z),
            None => b.arg(&null),
        };
        b.arg(&y);
        match &partial {
            Some(part) => b.arg(part),
            None => b.arg(&null),
        };
        b.arg(&dims);
        // the epilogue: a null bias pointer = no bias (with K splits, int4_reduce applies it)
        let (no_bias, bias_in_gemm) = (0u64, partial.is_none());
        match bias {
            Some(bias) if bias_in_gemm => b.arg(bias),
            _ => b.arg(&no_bias),
        };
        let gemm_act = if bias_in_gemm { act_code(act) } else { ACT_IDENTITY };
        b.arg(&gemm_act);
        let lc = LaunchConfig {
            grid_dim: (cfg.m_blocks as u32, cfg.n_blocks as u32, cfg.splits as u32),
            block_dim: (cfg.variant.threads() as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        // SAFETY: argument types and count match `int4_gemm_tc_<T>_<variant>_<sym>` in
        // kernels/int4_gemm_tc.cu; every view covers the extents `dims` describes (checked by
        // int4_matmul / the format), and `smem` is the variant's layout (`TcSmem`).
        unsafe { b.launch(lc) }.w()?;
        Ok(())
    })?;
    if let Some(partial) = &partial {
        reduce::<T>(dev, sfx, partial, &y, (m, n, cfg.splits), bias, act)?;
    }
    Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), Shape::from((m, n))))
}

/// `int4_reduce_<sfx>_<act>` (`sfx`: T's dtype suffix): `y = act(sum of the f32 partials [splits, m, n] in split order + bias)`.
fn reduce<T: CudaDType + DeviceRepr>(
    dev: &CudaDevice,
    sfx: &str,
    partial: &CudaSlice<f32>,
    y: &CudaSlice<T>,
    (m, n, splits): (usize, usize, usize),
    bias: Option<&CudaView<T>>,
    act: Activation,
) -> Result<()> {
    let reduce = load_func(dev, MODULE, ptx::INT4_GEMM, &format!("int4_reduce_{sfx}_{}", act.name()))?;
    let (mn, splits) = ((m * n) as i64, splits as i32);
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&reduce);
    let (no_bias, n32) = (0u64, i32_dim(n, "N")?);
    b.arg(partial).arg(y).arg(&mn).arg(&splits);
    match bias {
        Some(bias) => b.arg(bias),
        None => b.arg(&no_bias),
    };
    b.arg(&n32);
    // SAFETY: matches `int4_reduce_<T>_<act>`; `partial` holds splits * m * n floats, `y` m * n,
    // the bias (if any) n.
    unsafe { b.launch(elementwise_config(m * n)) }.w()?;
    Ok(())
}

pub(super) fn dequantize(w: &Int4Weight, dtype: DType) -> Result<(CudaStorage, Shape)> {
    match dtype {
        DType::F32 => dequantize_t::<f32>(w, dtype),
        DType::F16 => dequantize_t::<half::f16>(w, dtype),
        DType::BF16 => dequantize_t::<half::bf16>(w, dtype),
        dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "int4 dequantize")),
    }
}

fn dequantize_t<T: CudaDType + DeviceRepr>(w: &Int4Weight, dtype: DType) -> Result<(CudaStorage, Shape)> {
    let candle_core::Device::Cuda(dev) = w.device() else { bail!("int4: weight is not on a CUDA device") };
    let (n, k) = (w.n, w.k);
    let dims = GemmDims {
        m: 0,
        n: i32_dim(n, "N")?,
        k: i32_dim(k, "K")?,
        group_size: w.cfg.group_size as i32,
        chunks_per_split: 0,
    };
    let out = alloc_output::<T>(dev, n * k)?;
    let func = load_func(dev, MODULE, ptx::INT4_GEMM, &format!("int4_dequant_{}", dtype_suffix(dtype, "int4")?))?;
    with_views(w, |p, s, z| {
        let null = 0u64;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        b.arg(&p).arg(&s);
        match &z {
            Some(z) => b.arg(z),
            None => b.arg(&null),
        };
        b.arg(&out).arg(&dims);
        // SAFETY: matches `int4_dequant_<T>`; `out` holds n * k elements, one write each.
        unsafe { b.launch(elementwise_config(n * k / DEQUANT_RUN)) }.w()?;
        Ok(())
    })?;
    Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((n, k))))
}
