//! Small helpers shared by every op's CUDA path: the embedded PTX, function loading, typed
//! slices at a layout's offset, output allocation (poisoned in tests) and launch shapes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::sys::{self, CUdevice_attribute, CUfunction_attribute};
use candle_core::cuda_backend::cudarc::driver::{
    result, CudaFunction, CudaModule, CudaSlice, CudaView, DevicePtrMut, DeviceRepr, LaunchConfig,
};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDType, DeviceId, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result};

/// PTX of every `kernels/*.cu`, compiled by build.rs (`ptx::BIAS_ACT`, ...).
pub mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

/// Loaded modules, one per (device, kernels/*.cu file).
type ModuleCache = HashMap<(DeviceId, &'static str), Arc<CudaModule>>;

/// A device attribute of `dev`, queried from the driver once per (device, attribute): a driver call
/// per launch shows in the µs-scale calls.
fn device_attribute(dev: &CudaDevice, attr: CUdevice_attribute) -> Result<i32> {
    static CACHE: OnceLock<Mutex<HashMap<(DeviceId, CUdevice_attribute), i32>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&v) = cache.get(&(dev.id(), attr)) {
        return Ok(v);
    }
    let v = dev.cuda_stream().context().attribute(attr).w()?;
    cache.insert((dev.id(), attr), v);
    Ok(v)
}

/// The device's SM count (at least 1).
pub(crate) fn sm_count(dev: &CudaDevice) -> Result<usize> {
    Ok(device_attribute(dev, CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize)
}

/// Whether `dev` has compute capability 9.0 (H100 / H200), where the sm_90a PTX (`wgmma`, TMA) loads.
pub(crate) fn is_sm90(dev: &CudaDevice) -> Result<bool> {
    let major = device_attribute(dev, CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = device_attribute(dev, CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    Ok((major, minor) == (9, 0))
}

/// Dynamic shared memory a kernel may use without opting in.
const DEFAULT_SMEM_LIMIT: usize = 48 * 1024;

/// Opts `func` (the entry `name`) into `bytes` of dynamic shared memory, once per (device, entry):
/// the attribute call is a driver call, which shows in µs-scale calls.
pub(crate) fn ensure_smem(dev: &CudaDevice, func: &CudaFunction, name: &str, bytes: usize) -> Result<()> {
    if bytes <= DEFAULT_SMEM_LIMIT {
        return Ok(());
    }
    static DONE: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let key = format!("{:?}/{name}", dev.id());
    let mut done = DONE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if !done.contains(&key) {
        func.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32).w()?;
        done.insert(key);
    }
    Ok(())
}

/// Element type of a [`tensor_map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapElem {
    U16,
    U32,
}

/// The `CUtensorMap` (its 128 bytes, as the kernels take it by value) of a tensor at `ptr` with
/// `dims` (innermost first), byte `strides` of the outer dims, boxes of `boxes` elements, 128-byte
/// swizzle (the layout wgmma's K-major descriptors read) or none, zero fill past the edges. `None`
/// where the driver refuses it (unaligned pointer or stride, box too large, ...) or the array
/// lengths do not fit one rank (1-5); the caller then takes a path without TMA or reports the error.
pub(crate) fn tensor_map(
    ptr: u64,
    elem: MapElem,
    dims: &[u64],
    strides: &[u64],
    boxes: &[u32],
    swizzle_128b: bool,
) -> Option<[u64; 16]> {
    let rank = dims.len();
    if strides.len() + 1 != rank || boxes.len() != rank || !(1..=5).contains(&rank) {
        return None;
    }
    if ptr % 16 != 0 || strides.iter().any(|&s| s % 16 != 0 || s >= 1 << 40) {
        return None;
    }
    let ty = match elem {
        MapElem::U16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT16,
        MapElem::U32 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT32,
    };
    let swizzle = if swizzle_128b {
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B
    } else {
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE
    };
    let elem_strides = [1u32; 5];
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::uninit();
    // SAFETY: the output is a CUtensorMap; `dims`, `boxes` and `elem_strides` hold at least `rank`
    // entries and `strides` rank - 1 (checked above), as the driver reads them.
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            ty,
            rank as u32,
            ptr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            elem_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        return None;
    }
    // SAFETY: written by the successful call.
    Some(unsafe { map.assume_init() }.opaque)
}

/// Loads `fn_name` from the PTX module `ptx` (named `module`, e.g. "bias_act"), loading the
/// module on first use per device. Launch it on candle's stream:
/// `dev.cuda_stream().launch_builder(&func)`. We keep our own module cache rather than candle's
/// `get_or_load_custom_func` because we need the `CudaFunction` itself (for attributes such as
/// the dynamic shared-memory limit), which candle's wrapper does not expose.
pub(crate) fn load_func(
    dev: &CudaDevice,
    module: &'static str,
    ptx: &'static str,
    fn_name: &str,
) -> Result<CudaFunction> {
    static MODULES: OnceLock<Mutex<ModuleCache>> = OnceLock::new();
    let mdl = {
        let mut cache = MODULES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(&(dev.id(), module)) {
            Some(m) => m.clone(),
            None => {
                let m = dev.cuda_stream().context().load_module(Ptx::from_src(ptx)).w()?;
                cache.insert((dev.id(), module), m.clone());
                m
            }
        }
    };
    mdl.load_function(fn_name).w()
}

/// The dtype suffix of kernel entry points (`bias_act_f16_gelu`, ...).
pub(crate) fn dtype_suffix(dtype: DType, op: &'static str) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, op)),
    }
}

/// The elements of `storage` that `layout` describes, which must be contiguous.
pub(crate) fn contiguous_view<'a, T: CudaDType>(storage: &'a CudaStorage, layout: &Layout) -> Result<CudaView<'a, T>> {
    let (start, end) =
        layout.contiguous_offsets().ok_or_else(|| candle_core::Error::RequiresContiguous { op: "tiny_gemm" }.bt())?;
    Ok(storage.as_cuda_slice::<T>()?.slice(start..end))
}

/// Allocates an output buffer the kernel will fully overwrite. With
/// [`crate::testing::set_poison_outputs`] on, it is first filled with 0xFF bytes (NaN in every
/// float dtype), so elements a kernel forgets to write show up in tests.
pub(crate) fn alloc_output<T: DeviceRepr>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every caller launches a kernel that writes all `len` elements before any read.
    let mut out = unsafe { dev.alloc::<T>(len)? };
    if crate::testing::poison_outputs() && len > 0 {
        let stream = dev.cuda_stream();
        let bytes = len * std::mem::size_of::<T>();
        let (ptr, _guard) = out.device_ptr_mut(&stream);
        // SAFETY: `ptr` is a live allocation of `bytes` bytes on this stream.
        unsafe { result::memset_d8_async(ptr, 0xFF, bytes, stream.cu_stream()) }.w()?;
    }
    Ok(out)
}

/// A 1-D grid for an elementwise kernel with a grid-stride loop.
pub(crate) fn elementwise_config(numel: usize) -> LaunchConfig {
    const THREADS: u32 = 256;
    // Enough blocks to fill any current GPU several times over; the loop covers the rest.
    const MAX_BLOCKS: usize = 65_535;
    let blocks = numel.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}
