//! Small helpers shared by every op's CUDA path: the embedded PTX, function loading, typed
//! slices at a layout's offset, output allocation (poisoned in tests) and launch shapes.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// A loaded module and the functions looked up in it so far.
struct LoadedModule {
    module: Arc<CudaModule>,
    funcs: HashMap<String, CudaFunction>,
}

/// Loaded modules, one per (device, kernels/*.cu file).
type ModuleCache = HashMap<(DeviceId, &'static str), LoadedModule>;

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

/// Opts `func` into at least `bytes` of dynamic shared memory. The attribute call is a driver call,
/// which shows in µs-scale calls, so it runs only when `bytes` exceeds what this function handle
/// was last opted into ([`load_func`] hands out one handle per (device, module, entry)); the limit
/// only grows (one entry may be launched with different sizes: the small-M INT4 GEMM's staged
/// scales vary with K and the group size, though they stay under 48 KB for every shape today).
pub(crate) fn ensure_smem(func: &CudaFunction, bytes: usize) -> Result<()> {
    if bytes <= DEFAULT_SMEM_LIMIT {
        return Ok(());
    }
    static OPTED: OnceLock<Mutex<HashMap<usize, usize>>> = OnceLock::new();
    let mut opted = OPTED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let limit = opted.entry(func.cu_function() as usize).or_insert(DEFAULT_SMEM_LIMIT);
    if bytes > *limit {
        func.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32).w()?;
        *limit = bytes;
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
/// module on first use per device and looking the function up once per (device, module, name)
/// (a `cuModuleGetFunction` took 0.10–0.20 µs of host time on the H100 host, `examples/host_cost.rs`). Launch it on candle's stream:
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
    let mut cache = MODULES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let loaded = match cache.entry((dev.id(), module)) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            let module = dev.cuda_stream().context().load_module(Ptx::from_src(ptx)).w()?;
            e.insert(LoadedModule { module, funcs: HashMap::new() })
        }
    };
    if let Some(f) = loaded.funcs.get(fn_name) {
        return Ok(f.clone());
    }
    let f = loaded.module.load_function(fn_name).w()?;
    loaded.funcs.insert(fn_name.to_string(), f.clone());
    Ok(f)
}

/// One entry of [`launch_ex`]'s `params`: a pointer to the argument's value, which must stay alive
/// (and unmoved) until the launch call returns.
pub(crate) fn kernel_param<T>(value: &mut T) -> *mut c_void {
    value as *mut T as *mut c_void
}

/// Set when the driver refused a programmatic dependent launch: [`launch_ex`] then launches
/// without it for the rest of the process.
static PDL_REFUSED: AtomicBool = AtomicBool::new(false);

/// Launches `func` on `dev`'s stream with `cfg` and the kernel parameters `params` (a pointer to
/// each argument's value, in the kernel's order), cooperatively if `cooperative`
/// (`cuLaunchKernelEx`). With `pdl`, on compute capability 9.0+ and while
/// [`crate::testing::programmatic_launch`] is on, as a programmatic dependent launch (PDL): the
/// grid may be scheduled before the previous kernel on the stream has finished, which hides the
/// launch latency between back-to-back kernels: H100 (driver 580, `examples/host_cost.rs`), a 5 µs
/// kernel on 132 blocks back to back takes 6.44–6.70 µs per launch plain, 5.51–5.53 with PDL; the
/// small-M INT4 GEMM 9.85 -> 7.72 µs per call at M = 1 (benchmarks/host-overhead.md). Cooperative
/// grids did not overlap (6.50–6.71 µs either way). Only kernels that begin with `tg::pdl_enter()`
/// (kernels/common.cuh: wait for the previous grid's completion and memory before any access) may
/// pass `pdl`. A driver that refuses PDL gets the plain launch, then and for the rest of the process.
///
/// # Safety
/// `params` must match the kernel's parameter list (count, order, types) and every pointer in them
/// must be valid for what the kernel accesses until it completes in stream order; a cooperative
/// grid must fit the device at once (occupancy x SMs).
pub(crate) unsafe fn launch_ex(
    dev: &CudaDevice,
    func: &CudaFunction,
    cfg: LaunchConfig,
    cooperative: bool,
    pdl: bool,
    params: &mut [*mut c_void],
) -> Result<()> {
    let stream = dev.cuda_stream();
    stream.context().bind_to_thread().w()?;
    let major = CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR;
    let pdl = pdl
        && crate::testing::programmatic_launch()
        && !PDL_REFUSED.load(Ordering::Relaxed)
        && device_attribute(dev, major)? >= 9;
    let launch = |pdl: bool| {
        // SAFETY: all-zero bytes are a valid attribute (id 0: ignored) of plain-int fields.
        let mut attrs: [sys::CUlaunchAttribute; 2] = unsafe { std::mem::zeroed() };
        let mut n = 0;
        if cooperative {
            attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
            attrs[n].value.cooperative = 1;
            n += 1;
        }
        if pdl {
            attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attrs[n].value.programmaticStreamSerializationAllowed = 1;
            n += 1;
        }
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: stream.cu_stream(),
            attrs: attrs.as_mut_ptr(),
            numAttrs: n as u32,
        };
        // SAFETY: the caller's contract for `params` and the grid; `config` and `attrs` outlive
        // the call.
        unsafe { sys::cuLaunchKernelEx(&config, func.cu_function(), params.as_ptr() as *mut _, std::ptr::null_mut()) }
    };
    let mut r = launch(pdl);
    if pdl && r != sys::CUresult::CUDA_SUCCESS {
        PDL_REFUSED.store(true, Ordering::Relaxed);
        r = launch(false);
    }
    r.result().w()
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

/// Allocates an output buffer the kernel will fully overwrite: a stream-ordered allocation, no
/// memset. With [`crate::testing::set_poison_outputs`] on, it is first filled with 0xFF bytes (NaN
/// in every float dtype), so elements a kernel forgets to write show up in tests.
///
/// cudarc gives every buffer two events (created and destroyed with it) that it records only once
/// the context runs several streams; the host-cost probe (`examples/host_cost.rs`) measured them
/// at under 1 µs of host time per allocation and free and nothing per call, so outputs keep them,
/// as candle's own outputs do.
pub(crate) fn alloc_output<T: DeviceRepr>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    let stream = dev.cuda_stream();
    // SAFETY: every caller launches a kernel that writes all `len` elements before any read.
    let mut out = unsafe { stream.alloc::<T>(len).w()? };
    if crate::testing::poison_outputs() && len > 0 {
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
