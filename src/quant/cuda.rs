//! CUDA glue of the INT4 ops (kernels/int4_gemm.cu, kernels/int4_gemm_tc.cu,
//! kernels/int4_gemm_rs_sm90.cu): dtype dispatch, launch shape, tensor maps, launches.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Shape, Storage};
use half::f16;

use super::format::Int4Weight;
use super::launch::{choose_gemm_config, choose_rs_config, choose_tc_config, RsVariant};
pub(super) use crate::cuda::is_sm90;
use crate::cuda::{
    alloc_output, contiguous_view, dtype_suffix, elementwise_config, ensure_smem, kernel_param, launch_ex, load_func,
    ptx, sm_count, tensor_map, MapElem,
};
use crate::Activation;

const MODULE: &str = "int4_gemm";
const TC_MODULE: &str = "int4_gemm_tc";
const RS_MODULE: &str = "int4_gemm_rs_sm90";
/// Outputs per thread of `int4_dequant_*` (`RUN` in kernels/int4_gemm.cu).
const DEQUANT_RUN: usize = 8;
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

/// Mirrors `WsDims` in kernels/int4_gemm_ws.cuh (the TMA kernel takes it too).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct WsDims {
    m: i32,
    n: i32,
    k: i32,
    group_size: i32,
}

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
    path: super::CudaPath,
) -> Result<(CudaStorage, Shape)> {
    match x.dtype() {
        DType::F32 => matmul_t::<f32>(w, x, l, bias, act, path),
        DType::F16 => matmul_t::<half::f16>(w, x, l, bias, act, path),
        DType::BF16 => matmul_t::<half::bf16>(w, x, l, bias, act, path),
        dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "int4_matmul")),
    }
}

fn matmul_t<T: CudaDType + DeviceRepr>(
    w: &Int4Weight,
    x: &CudaStorage,
    l: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    act: Activation,
    path: super::CudaPath,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.device();
    let bias_view = bias.map(|(s, l)| contiguous_view::<T>(s, l)).transpose()?;
    let bias = bias_view.as_ref();
    let (m, n, k) = (l.dims()[0], w.n, w.k);
    if l.start_offset() % 8 != 0 {
        bail!("int4_matmul: x must start at a multiple of 8 elements (offset {})", l.start_offset());
    }
    match path {
        super::CudaPath::SmallM => {}
        super::CudaPath::TensorCore => return matmul_tc::<T>(w, x, l, bias, act),
        super::CudaPath::Rs => return matmul_rs::<T>(w, x, l, bias, act),
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
    let name = format!("int4_gemm_{sfx}_{}_{sym}", cfg.variant.name());
    let gemm = load_func(dev, MODULE, ptx::INT4_GEMM, &name)?;
    let smem = cfg.smem_bytes(w.cfg.group_size, w.cfg.symmetric);
    ensure_smem(&gemm, smem)?;
    with_views(w, |p, s, z| {
        let stream = dev.cuda_stream();
        // the kernel's parameters by value; a null pointer: no zeros (symmetric) / no partials (one
        // split) / no bias (with K splits, int4_reduce applies it)
        let (mut x_ptr, _xg) = xs.device_ptr(&stream);
        let (mut p_ptr, _pg) = p.device_ptr(&stream);
        let (mut s_ptr, _sg) = s.device_ptr(&stream);
        let z_dev = z.as_ref().map(|z| z.device_ptr(&stream));
        let (mut y_ptr, _yg) = y.device_ptr(&stream);
        let part_dev = partial.as_ref().map(|part| part.device_ptr(&stream));
        let bias_in_gemm = partial.is_none();
        let bias_dev = bias.filter(|_| bias_in_gemm).map(|b| b.device_ptr(&stream));
        let mut z_ptr = z_dev.as_ref().map_or(0, |(ptr, _)| *ptr);
        let mut part_ptr = part_dev.as_ref().map_or(0, |(ptr, _)| *ptr);
        let mut bias_ptr = bias_dev.as_ref().map_or(0, |(ptr, _)| *ptr);
        let mut dims = dims;
        let mut gemm_act = if bias_in_gemm { act_code(act) } else { ACT_IDENTITY };
        let mut args = [
            kernel_param(&mut x_ptr),
            kernel_param(&mut p_ptr),
            kernel_param(&mut s_ptr),
            kernel_param(&mut z_ptr),
            kernel_param(&mut y_ptr),
            kernel_param(&mut part_ptr),
            kernel_param(&mut dims),
            kernel_param(&mut bias_ptr),
            kernel_param(&mut gemm_act),
        ];
        let lc = LaunchConfig {
            grid_dim: (cfg.blocks_x as u32, cfg.splits as u32, cfg.m_blocks as u32),
            block_dim: ((cfg.warps * 32) as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        // a programmatic dependent launch: the next call's grid is scheduled while this one drains
        // (H100, criterion: 9.85 -> 7.72 µs per call at M = 1, 12.56 -> 10.46 at M = 16;
        // benchmarks/host-overhead.md)
        // SAFETY: `args` match `int4_gemm_<T>_<variant>_<sym>(const T* x, const uint32_t* packed,
        // const __half* scales, const __half* zeros, T* y, float* partial, GemmDims d, const T* bias,
        // int act)` in kernels/int4_gemm.cu, which begins with `tg::pdl_enter`; every view covers the
        // extents `dims` describes (checked by int4_matmul / the format), its guard lives past the
        // launch, and `smem` is the layout the kernel derives from `dims` and the variant.
        unsafe { launch_ex(dev, &gemm, lc, false, true, &mut args) }
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
    let name = format!("int4_gemm_tc_{sfx}_{}_{sym}", cfg.variant.name());
    let gemm = load_func(dev, TC_MODULE, ptx::INT4_GEMM_TC, &name)?;
    let smem = cfg.variant.smem_bytes();
    ensure_smem(&gemm, smem)?;
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

/// `tg::int4_tma::TmaMaps` (kernels/int4_gemm_tma.cuh): the CUtensorMaps of x, the packed weight,
/// the scales and the zeros (the scales' again when symmetric).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct TmaMaps {
    x: [u64; 16],
    w: [u64; 16],
    s: [u64; 16],
    z: [u64; 16],
}
const _: () = assert!(std::mem::size_of::<TmaMaps>() == 512, "mirrors tg::int4_tma::TmaMaps");

/// The 2-D tensor map of `rows` rows of `cols` elements (rows `stride_bytes` apart) at `ptr`, boxes
/// of `box_cols` x `box_rows` ([`crate::cuda::tensor_map`]).
fn tensor_map_2d(
    ptr: u64,
    elem: MapElem,
    [cols, rows, stride_bytes]: [usize; 3],
    [box_cols, box_rows]: [usize; 2],
    swizzle_128b: bool,
) -> Option<[u64; 16]> {
    let dims = [cols as u64, rows as u64];
    tensor_map(ptr, elem, &dims, &[stride_bytes as u64], &[box_cols as u32, box_rows as u32], swizzle_128b)
}

/// [`tensor_map_2d`] memoized: a tensor map is a pure function of its arguments (the pointer
/// included), so a cached one is exactly what encoding again would give. For the weight's maps
/// (packed tiles, scales, zeros), which repeat every call; bounded (cleared past 4096 entries).
fn cached_map_2d(
    ptr: u64,
    elem: MapElem,
    shape: [usize; 3],
    boxes: [usize; 2],
    swizzle_128b: bool,
) -> Option<[u64; 16]> {
    type Key = (u64, bool, [usize; 3], [usize; 2], bool);
    static CACHE: OnceLock<Mutex<HashMap<Key, [u64; 16]>>> = OnceLock::new();
    let key = (ptr, elem == MapElem::U32, shape, boxes, swizzle_128b);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Some(*m);
    }
    let map = tensor_map_2d(ptr, elem, shape, boxes, swizzle_128b)?;
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= 4096 {
        c.clear();
    }
    c.insert(key, map);
    Some(map)
}

/// The transposed-RS Hopper GEMM (kernels/int4_gemm_rs.cuh): y^T = W x^T, blocks of 128 output
/// features x `tokens` activation rows, bias and activation in the epilogue.
fn matmul_rs<T: CudaDType + DeviceRepr>(
    w: &Int4Weight,
    x: &CudaStorage,
    l: &Layout,
    bias: Option<&CudaView<T>>,
    act: Activation,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.device();
    let (m, n, k) = (l.dims()[0], w.n, w.k);
    let cfg = choose_rs_config(m, n, sm_count(dev)?);
    let gs = w.cfg.group_size;
    let dims = WsDims { m: i32_dim(m, "M")?, n: i32_dim(n, "N")?, k: i32_dim(k, "K")?, group_size: gs as i32 };
    if cfg.n_blocks > 65535 {
        bail!("int4_matmul: N={n} needs {} feature blocks, more than the 65535 the kernel's grid takes", cfg.n_blocks);
    }
    let sfx = dtype_suffix(x.dtype(), "int4_matmul")?;
    let xs = contiguous_view::<T>(x, l)?;
    let y = alloc_output::<T>(dev, m * n)?;
    let sym = if w.cfg.symmetric { "sym" } else { "asym" };
    let name = format!("int4_gemm_rs_{sfx}_{}_{sym}", cfg.variant.name());
    let gemm = load_func(dev, RS_MODULE, ptx::INT4_GEMM_RS_SM90, &name)?;
    let smem = cfg.variant.smem_bytes();
    ensure_smem(&gemm, smem)?;
    let (bw, tiles) = (cfg.variant.block_w(), n.div_ceil(super::format::TILE_N));
    let srows = RsVariant::scale_rows(gs);
    with_views(w, |p, s, z| {
        let stream = dev.cuda_stream();
        let (x_ptr, _xg) = xs.device_ptr(&stream);
        let (p_ptr, _pg) = p.device_ptr(&stream);
        let (s_ptr, _sg) = s.device_ptr(&stream);
        let z_ptr = z.as_ref().map(|z| z.device_ptr(&stream));
        let zp = z_ptr.as_ref().map_or(s_ptr, |z| z.0);
        let maps = (|| {
            Some(TmaMaps {
                x: tensor_map_2d(x_ptr, MapElem::U16, [k, m, k * 2], [64, cfg.variant.tokens()], true)?,
                w: cached_map_2d(p_ptr, MapElem::U32, [k, tiles, k * 4], [128, bw / super::format::TILE_N], false)?,
                s: cached_map_2d(s_ptr, MapElem::U16, [n, k / gs, n * 2], [bw, srows], false)?,
                z: cached_map_2d(zp, MapElem::U16, [n, k / gs, n * 2], [bw, srows], false)?,
            })
        })();
        let Some(maps) = maps else {
            bail!("int4_matmul: the driver refused a tensor map (M={m}, N={n}, K={k}, group size {gs})");
        };
        let (y_ptr, _yg) = y.device_ptr(&stream);
        let bias_ptr = bias.map(|b| b.device_ptr(&stream));
        let (mut maps, mut y_ptr, mut dims, mut act) = (maps, y_ptr, dims, act_code(act));
        let mut bias_arg = bias_ptr.as_ref().map_or(0u64, |b| b.0); // 0: a null pointer, no bias
        let mut args = [
            kernel_param(&mut maps),
            kernel_param(&mut y_ptr),
            kernel_param(&mut dims),
            kernel_param(&mut bias_arg),
            kernel_param(&mut act),
        ];
        let lc = LaunchConfig {
            grid_dim: (cfg.m_blocks as u32, cfg.n_blocks as u32, 1),
            block_dim: (cfg.variant.threads() as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        // a programmatic dependent launch, as for the small-M GEMM: the grid is scheduled while the
        // previous one drains and waits for it in `tg::pdl_enter`
        // SAFETY: `args` match `int4_gemm_rs_<T>_<variant>_<sym>(TmaMaps maps, T* y, WsDims d,
        // const T* bias, int act)` in kernels/int4_gemm_rs_sm90.cu, which begins with
        // `tg::pdl_enter`; the maps describe the live x, packed weight, scales and zeros (views and
        // guards held until after the launch), every extent as `dims` describes it (checked by
        // int4_matmul / the format), `y` holds m * n elements (16-byte stores need N % 8 == 0, which
        // `cuda_path` requires) and `smem` is the variant's layout (`RsSmem`).
        unsafe { launch_ex(dev, &gemm, lc, false, true, &mut args) }?;
        Ok(())
    })?;
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
