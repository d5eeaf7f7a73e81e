//! CUDA glue of the small-M projection (`kernels/ffn.cu`): config choice, params, launch.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, DeviceId, WrapErr};
use candle_core::{backend::BackendStorage, bail, CudaStorage, DType, Layout, Result};

use super::{weight_layout, Epilogue, WeightLayout};
use crate::cuda::{alloc_output, contiguous_view, dtype_suffix, load_func, ptx};

/// Output features per block (the mma's M side); mirrors `ffn::ROWS`.
const ROWS: usize = 16;
/// Tokens per token tile (the mma's N side); mirrors `ffn::TOKENS`.
const TOKENS: usize = 8;
/// k per warp step and the granularity of the warps' K split; mirrors `ffn::CHUNK_K`.
const CHUNK_K: usize = 32;
/// Warps per block at most; mirrors `ffn::MAX_THREADS / 32`.
const MAX_WARPS: usize = 8;
/// Token tiles compiled (`_nt1`, `_nt2`, `_nt4`): up to 8, 16 or 32 tokens.
const TOKEN_TILES: [usize; 3] = [1, 2, 4];
/// Resident warps per SM the grid aims for: enough loads in flight to cover HBM latency.
const TARGET_WARPS_PER_SM: usize = 32;

/// Kernel arguments; mirrors `ffn::Params` in kernels/ffn.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct FfnParams {
    x: u64,    // [M, K]
    w: u64,    // [N2, K]
    bias: u64, // [N2] or 0
    y: u64,    // [M, N]
    m: i32,
    n: i32,
    k: i32,
    k_per_warp: i32,
}
// SAFETY: plain-old-data with the C layout of `ffn::Params`.
unsafe impl DeviceRepr for FfnParams {}

/// Launch shape of one projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Config {
    /// Token tiles of 8 (template parameter NT).
    pub nt: usize,
    /// Warps per block, splitting K.
    pub warps: usize,
    /// k per warp, a multiple of [`CHUNK_K`].
    pub k_per_warp: usize,
    /// Blocks: one per 16 output features.
    pub blocks: usize,
    /// Dynamic shared memory for the split-K partial sums.
    pub smem_bytes: usize,
}

/// The launch for `[m, k] · [k, n]` (`gated`: two weight rows per feature) on `sm_count` SMs.
pub(crate) fn choose_config(m: usize, n: usize, k: usize, gated: bool, sm_count: usize) -> Config {
    let nt = TOKEN_TILES.into_iter().find(|&nt| m <= nt * TOKENS).unwrap_or(TOKEN_TILES[TOKEN_TILES.len() - 1]);
    let blocks = n.div_ceil(ROWS).max(1);
    // Few blocks (narrow layers) get more warps each, splitting K finer; never more warps than
    // 32-wide chunks of K.
    let warps = (sm_count * TARGET_WARPS_PER_SM).div_ceil(blocks).clamp(1, MAX_WARPS).min(k.div_ceil(CHUNK_K).max(1));
    let k_per_warp = k.div_ceil(warps).div_ceil(CHUNK_K).max(1) * CHUNK_K;
    let row_stride = if gated { 2 * ROWS + 4 } else { ROWS + 4 }; // ffn::Red::STRIDE
    let smem_bytes = warps * nt * TOKENS * row_stride * std::mem::size_of::<f32>();
    Config { nt, warps, k_per_warp, blocks, smem_bytes }
}

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// The device's SM count, queried once per device (a driver call per launch shows at M = 1).
fn sm_count(dev: &candle_core::CudaDevice) -> Result<usize> {
    static SMS: OnceLock<Mutex<HashMap<DeviceId, usize>>> = OnceLock::new();
    let mut cache = SMS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&n) = cache.get(&dev.id()) {
        return Ok(n);
    }
    let attr = CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
    let n = (dev.cuda_stream().context().attribute(attr).w()?).max(1) as usize;
    cache.insert(dev.id(), n);
    Ok(n)
}

pub(super) fn fwd(epi: Epilogue, x: Arg, w: Arg, b: Option<Arg>) -> Result<CudaStorage> {
    match x.0.dtype() {
        DType::F16 => fwd_t::<half::f16>(epi, x, w, b),
        DType::BF16 => fwd_t::<half::bf16>(epi, x, w, b),
        dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "fused_ffn (CUDA small-M kernel)")),
    }
}

fn fwd_t<T: CudaDType + DeviceRepr>(epi: Epilogue, x: Arg, w: Arg, b: Option<Arg>) -> Result<CudaStorage> {
    let dev = x.0.device();
    let (m, k) = (x.1.dims()[0], x.1.dims()[1]);
    let n2 = w.1.dims()[1];
    let n = if epi.gated() { n2 / 2 } else { n2 };
    if weight_layout(w.1) != Some(WeightLayout::OutIn) {
        bail!("fused_ffn: the CUDA small-M kernel needs [out, in] weights, got strides {:?}", w.1.stride());
    }
    if m > TOKEN_TILES[TOKEN_TILES.len() - 1] * TOKENS || [m, n, k].iter().any(|&d| d > i32::MAX as usize) {
        bail!("fused_ffn: [{m}, {k}] x [{k}, {n2}] is outside the CUDA small-M kernel's range");
    }
    let xs = contiguous_view::<T>(x.0, x.1)?;
    let ws = w.0.as_cuda_slice::<T>()?.slice(w.1.start_offset()..w.1.start_offset() + k * n2);
    let bs = b.map(|(s, l)| contiguous_view::<T>(s, l)).transpose()?;
    let mut y = alloc_output::<T>(dev, m * n)?;
    if m == 0 || n == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()));
    }
    let stream = dev.cuda_stream();
    let cfg = choose_config(m, n, k, epi.gated(), sm_count(dev)?);
    // 16-byte loads need K % 8 == 0 and 16-byte aligned row starts (allocations are 256-aligned).
    let aligned = k % 8 == 0 && x.1.start_offset() % 8 == 0 && w.1.start_offset() % 8 == 0;
    let name = format!(
        "ffn_proj_{}_{}_{}_nt{}_{}",
        dtype_suffix(x.0.dtype(), "fused_ffn")?,
        epi.act().name(),
        if epi.gated() { "gated" } else { "plain" },
        cfg.nt,
        if aligned { "a" } else { "u" }
    );
    let func = load_func(dev, "ffn", ptx::FFN, &name)?;

    {
        let (x_ptr, _x_guard) = xs.device_ptr(&stream);
        let (w_ptr, _w_guard) = ws.device_ptr(&stream);
        let b_dev = bs.as_ref().map(|bs| bs.device_ptr(&stream));
        let (y_ptr, _y_guard) = y.device_ptr_mut(&stream);
        let params = FfnParams {
            x: x_ptr,
            w: w_ptr,
            bias: b_dev.as_ref().map_or(0, |(p, _)| *p),
            y: y_ptr,
            m: m as i32,
            n: n as i32,
            k: k as i32,
            k_per_warp: cfg.k_per_warp as i32,
        };
        let launch = LaunchConfig {
            grid_dim: (cfg.blocks as u32, 1, 1),
            block_dim: ((cfg.warps * 32) as u32, 1, 1),
            shared_mem_bytes: cfg.smem_bytes as u32,
        };
        let mut builder = stream.launch_builder(&func);
        builder.arg(&params);
        // SAFETY: `FfnParams` mirrors `ffn::Params`; x, w, bias and y hold the [m, k], [n2, k],
        // [n2] and [m, n] elements the kernel reads and writes; the guards outlive the launch.
        unsafe { builder.launch(launch) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H100_SMS: usize = 132;

    #[test]
    fn token_tiles_cover_m() {
        for (m, nt) in [(1, 1), (8, 1), (9, 2), (16, 2), (17, 4), (32, 4)] {
            assert_eq!(choose_config(m, 4096, 4096, false, H100_SMS).nt, nt, "m={m}");
        }
    }

    #[test]
    fn k_split_covers_k_in_chunks() {
        for (n, k) in [(2048, 512), (512, 2048), (11008, 4096), (4096, 11008), (300, 100), (16, 1), (5, 0)] {
            for gated in [false, true] {
                let c = choose_config(1, n, k, gated, H100_SMS);
                assert!(c.warps >= 1 && c.warps <= MAX_WARPS);
                assert_eq!(c.k_per_warp % CHUNK_K, 0);
                assert!(c.k_per_warp * c.warps >= k, "{c:?} k={k}");
                assert_eq!(c.blocks, n.div_ceil(ROWS).max(1));
                assert!(c.smem_bytes <= 48 * 1024, "{c:?}");
            }
        }
    }

    #[test]
    fn narrow_layers_split_k_across_more_warps() {
        // the seed's down projection (N=512, K=2048): 32 blocks only, so all 8 warps split K
        assert_eq!(choose_config(1, 512, 2048, false, H100_SMS).warps, MAX_WARPS);
        // a tiny K can't feed more warps than it has 32-wide chunks
        assert_eq!(choose_config(1, 512, 40, false, H100_SMS).warps, 2);
    }
}
