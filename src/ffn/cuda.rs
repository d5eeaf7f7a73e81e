//! CUDA glue of the small-M kernels: the projection (`kernels/ffn.cu`) and the one-launch FFN
//! (`kernels/ffn_fused.cu`): config choice, params, scratch, launch.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, DeviceId, WrapErr};
use candle_core::{backend::BackendStorage, bail, CudaStorage, DType, Layout, Result};

use super::{weight_layout, Epilogue, FfnKernel, WeightLayout};
use crate::cuda::{alloc_output, contiguous_view, dtype_suffix, kernel_param, launch_ex, load_func, ptx, sm_count};
use crate::Activation;

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
/// Largest M the small-M projection takes.
const SMALL_M_MAX: usize = TOKEN_TILES[TOKEN_TILES.len() - 1] * TOKENS;
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

/// Which entry point: (kernel file, dtype, activation, gated, token tiles, aligned loads).
type EntryKey = (&'static str, DType, Activation, bool, usize, bool);

/// The entry point `key` of module `module` on `dev`, looked up once per device (a name format and
/// a driver lookup per launch show at M = 1).
fn entry(
    dev: &candle_core::CudaDevice,
    module: &'static str,
    ptx: &'static str,
    key: EntryKey,
    name: impl FnOnce() -> Result<String>,
) -> Result<CudaFunction> {
    static FUNCS: OnceLock<Mutex<HashMap<(DeviceId, EntryKey), CudaFunction>>> = OnceLock::new();
    let mut cache = FUNCS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = cache.get(&(dev.id(), key)) {
        return Ok(f.clone());
    }
    let f = load_func(dev, module, ptx, &name()?)?;
    cache.insert((dev.id(), key), f.clone());
    Ok(f)
}

/// Device pointers of one projection launch.
#[derive(Debug, Clone, Copy)]
struct ProjPtrs {
    x: u64,
    w: u64,
    bias: u64,
    y: u64,
}

/// Launches the small-M projection `y [m, n] = epi(x [m, k] · W [n2, k]ᵀ + b)` on `dev`'s stream.
///
/// # Safety
/// `ptrs` must point at `dtype` buffers of at least those sizes (`bias` 0 or `n2` elements), valid
/// until the launch completes in stream order; `aligned` only if `k % 8 == 0` and `x`, `w` are
/// 16-byte aligned; `1 <= m <= 32` and `m, n, k` fit in i32.
#[allow(clippy::too_many_arguments)]
unsafe fn launch_proj(
    dev: &candle_core::CudaDevice,
    dtype: DType,
    epi: Epilogue,
    ptrs: ProjPtrs,
    m: usize,
    n: usize,
    k: usize,
    aligned: bool,
) -> Result<()> {
    let cfg = choose_config(m, n, k, epi.gated(), sm_count(dev)?);
    let key = ("ffn", dtype, epi.act(), epi.gated(), cfg.nt, aligned);
    let func = entry(dev, "ffn", ptx::FFN, key, || {
        Ok(format!(
            "ffn_proj_{}_{}_{}_nt{}_{}",
            dtype_suffix(dtype, "fused_ffn")?,
            epi.act().name(),
            if epi.gated() { "gated" } else { "plain" },
            cfg.nt,
            if aligned { "a" } else { "u" }
        ))
    })?;
    let params = FfnParams {
        x: ptrs.x,
        w: ptrs.w,
        bias: ptrs.bias,
        y: ptrs.y,
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
    let stream = dev.cuda_stream();
    let mut builder = stream.launch_builder(&func);
    builder.arg(&params);
    // SAFETY: `FfnParams` mirrors `ffn::Params`; the caller guarantees the buffers.
    unsafe { builder.launch(launch) }.w()?;
    Ok(())
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
    if m > SMALL_M_MAX || [m, n, k].iter().any(|&d| d > i32::MAX as usize) {
        bail!("fused_ffn: [{m}, {k}] x [{k}, {n2}] is outside the CUDA small-M kernel's range");
    }
    let xs = contiguous_view::<T>(x.0, x.1)?;
    let ws = w.0.as_cuda_slice::<T>()?.slice(w.1.start_offset()..w.1.start_offset() + k * n2);
    let bs = b.map(|(s, l)| contiguous_view::<T>(s, l)).transpose()?;
    let mut y = alloc_output::<T>(dev, m * n)?;
    if m == 0 || n == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()));
    }
    let aligned = k % 8 == 0 && x.1.start_offset() % 8 == 0 && w.1.start_offset() % 8 == 0;
    let stream = dev.cuda_stream();
    {
        let (x_ptr, _x_guard) = xs.device_ptr(&stream);
        let (w_ptr, _w_guard) = ws.device_ptr(&stream);
        let b_dev = bs.as_ref().map(|bs| bs.device_ptr(&stream));
        let (y_ptr, _y_guard) = y.device_ptr_mut(&stream);
        let ptrs = ProjPtrs { x: x_ptr, w: w_ptr, bias: b_dev.as_ref().map_or(0, |(p, _)| *p), y: y_ptr };
        // SAFETY: the pointers hold the [m, k], [n2, k], [n2] and [m, n] elements of `ptrs`' contract;
        // the guards outlive the launch.
        unsafe { launch_proj(dev, x.0.dtype(), epi, ptrs, m, n, k, aligned) }?;
    }
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// The operands of a whole-FFN op ([`whole_fwd`]): `x [m, d]` contiguous, `w1` a logical `[d, h1]`
/// and `w2` a logical `[h, o]` weight, both stored `[out, in]` (`h1 = 2h` when gated), checked
/// against the kernel's range and sliced once, whichever kernel runs.
struct WholeArgs<'a, T> {
    dev: &'a candle_core::CudaDevice,
    dtype: DType,
    epi: Epilogue,
    m: usize,
    d: usize,
    h: usize,
    o: usize,
    /// Element offsets of x, w1 and w2 in their storages (16-byte loads need multiples of 8).
    offsets: [usize; 3],
    x: CudaView<'a, T>,
    w1: CudaView<'a, T>,
    b1: Option<CudaView<'a, T>>,
    w2: CudaView<'a, T>,
    b2: Option<CudaView<'a, T>>,
}

/// Device pointers of a whole-FFN launch: x `[m, d]`, w1 `[h1, d]`, b1 `[h1]`, w2 `[o, h]`, b2 `[o]`
/// (biases 0 when absent), y `[m, o]`, valid until the launch completes in stream order.
#[derive(Debug, Clone, Copy)]
struct WholePtrs {
    x: u64,
    w1: u64,
    b1: u64,
    w2: u64,
    b2: u64,
    y: u64,
}

impl<'a, T: CudaDType + DeviceRepr> WholeArgs<'a, T> {
    /// Checks the operands against what `kernel` takes (the caller, [`super::choose_kernel`] or a
    /// forced kernel's feasibility check, already did; this guards the launch) and slices them.
    fn new(
        kernel: FfnKernel,
        epi: Epilogue,
        x: Arg<'a>,
        w1: Arg<'a>,
        b1: Option<Arg<'a>>,
        w2: Arg<'a>,
        b2: Option<Arg<'a>>,
    ) -> Result<Self> {
        let (m, d) = (x.1.dims()[0], x.1.dims()[1]);
        let h1 = w1.1.dims()[1];
        let (h, o) = (w2.1.dims()[0], w2.1.dims()[1]);
        let offsets = [x.1.start_offset(), w1.1.start_offset(), w2.1.start_offset()];
        // name, most tokens, needs 16-byte aligned loads, takes gated FFNs
        let (name, max_m, needs_aligned, gated_ok) = match kernel {
            FfnKernel::OneLaunch => ("one-launch kernel", FUSED_MAX_M, true, true),
            FfnKernel::TwoLaunches => ("two-launch FFN", SMALL_M_MAX, false, true),
            FfnKernel::Cooperative => ("cooperative FFN", COOP_MAX_M, true, false),
            FfnKernel::TwoProjections => bail!("fused_ffn: two projections do not run as one CUDA op"),
        };
        let out_in = |l: &Layout| weight_layout(l) == Some(WeightLayout::OutIn);
        let aligned = d % 8 == 0 && h % 8 == 0 && offsets.iter().all(|v| v % 8 == 0);
        if !out_in(w1.1)
            || !out_in(w2.1)
            || (needs_aligned && !aligned)
            || m == 0
            || m > max_m
            || (epi.gated() && !gated_ok)
            || h1 != if epi.gated() { 2 * h } else { h }
        {
            bail!(
                "fused_ffn: [{m}, {d}] x [{d}, {h1}] x [{h}, {o}] (strides {:?}, {:?}, gated: {}) is outside the \
                 {name}'s range",
                w1.1.stride(),
                w2.1.stride(),
                epi.gated()
            );
        }
        // the cooperative FFN also indexes its [m, h] hidden scratch in i32
        let hidden = if kernel == FfnKernel::Cooperative { m * h } else { 0 };
        if [m, d, h1, o, hidden].iter().any(|&v| v > i32::MAX as usize) {
            bail!("fused_ffn: [{m}, {d}] x [{d}, {h1}] x [{h}, {o}] exceeds the {name}'s i32 indexing");
        }
        Ok(Self {
            dev: x.0.device(),
            dtype: x.0.dtype(),
            epi,
            m,
            d,
            h,
            o,
            offsets,
            x: contiguous_view::<T>(x.0, x.1)?,
            w1: w1.0.as_cuda_slice::<T>()?.slice(offsets[1]..offsets[1] + d * h1),
            b1: b1.map(|(s, l)| contiguous_view::<T>(s, l)).transpose()?,
            w2: w2.0.as_cuda_slice::<T>()?.slice(offsets[2]..offsets[2] + h * o),
            b2: b2.map(|(s, l)| contiguous_view::<T>(s, l)).transpose()?,
        })
    }

    /// Runs `launch` with the operands' and `y`'s device pointers; their guards (which order the
    /// launch after the operands' producers on the stream) outlive it.
    fn with_ptrs(&self, y: &mut CudaSlice<T>, launch: impl FnOnce(WholePtrs) -> Result<()>) -> Result<()> {
        let stream = self.dev.cuda_stream();
        let (x, _x_guard) = self.x.device_ptr(&stream);
        let (w1, _w1_guard) = self.w1.device_ptr(&stream);
        let (w2, _w2_guard) = self.w2.device_ptr(&stream);
        let b1 = self.b1.as_ref().map(|b| b.device_ptr(&stream));
        let b2 = self.b2.as_ref().map(|b| b.device_ptr(&stream));
        let (y, _y_guard) = y.device_ptr_mut(&stream);
        let (b1, b2) = (b1.as_ref().map_or(0, |(p, _)| *p), b2.as_ref().map_or(0, |(p, _)| *p));
        launch(WholePtrs { x, w1, b1, w2, b2, y })
    }
}

/// `y = act(x·W1 + b1)·W2 + b2` (or the gated form) as one candle op on a whole-FFN `kernel`
/// ([`FfnKernel::OneLaunch`], [`FfnKernel::TwoLaunches`] or [`FfnKernel::Cooperative`]); shapes as
/// [`WholeArgs`] (the caller, [`super::choose_kernel`], checked dtype, layouts, alignment and M).
pub(super) fn whole_fwd(
    kernel: FfnKernel,
    epi: Epilogue,
    x: Arg,
    w1: Arg,
    b1: Option<Arg>,
    w2: Arg,
    b2: Option<Arg>,
) -> Result<CudaStorage> {
    match x.0.dtype() {
        DType::F16 => whole_fwd_t::<half::f16>(kernel, epi, x, w1, b1, w2, b2),
        DType::BF16 => whole_fwd_t::<half::bf16>(kernel, epi, x, w1, b1, w2, b2),
        dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "fused_ffn (CUDA whole-FFN kernels)")),
    }
}

fn whole_fwd_t<T: CudaDType + DeviceRepr>(
    kernel: FfnKernel,
    epi: Epilogue,
    x: Arg,
    w1: Arg,
    b1: Option<Arg>,
    w2: Arg,
    b2: Option<Arg>,
) -> Result<CudaStorage> {
    let a = WholeArgs::<T>::new(kernel, epi, x, w1, b1, w2, b2)?;
    let mut y = alloc_output::<T>(a.dev, a.m * a.o)?;
    if a.o > 0 {
        match kernel {
            FfnKernel::OneLaunch => one_launch(&a, &mut y)?,
            FfnKernel::TwoLaunches => two_launches(&a, &mut y)?,
            FfnKernel::Cooperative => cooperative(&a, &mut y)?,
            FfnKernel::TwoProjections => {} // refused by `WholeArgs::new`
        }
    }
    Ok(CudaStorage::wrap_cuda_slice(y, a.dev.clone()))
}

/// Hidden units per block of the one-launch kernel; mirrors `FusedTraits::HIDDEN_CHUNK`.
const HIDDEN_CHUNK: usize = 64;
/// Warps per block of the one-launch kernel; mirrors `FusedTraits::WARPS`.
const FUSED_WARPS: usize = 16;
/// Token tiles compiled for the one-launch kernel (`_nt1`, `_nt2`): up to 8 or 16 tokens.
const FUSED_TOKEN_TILES: [usize; 2] = [1, 2];
/// Largest M the one-launch kernel takes.
pub(crate) const FUSED_MAX_M: usize = FUSED_TOKEN_TILES[FUSED_TOKEN_TILES.len() - 1] * TOKENS;

/// One-launch kernel arguments; mirrors `ffn::FusedParams` in kernels/ffn_fused.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct FusedParams {
    x: u64,       // [M, D]
    w1: u64,      // [H1, D]
    b1: u64,      // [H1] or 0
    w2: u64,      // [O, H]
    b2: u64,      // [O] or 0
    y: u64,       // [M, O]
    partial: u64, // [groups][blocks][M][16] f32
    tickets: u64, // [groups] u32
    m: i32,
    d: i32,
    h: i32,
    o: i32,
}
// SAFETY: plain-old-data with the C layout of `ffn::FusedParams`.
unsafe impl DeviceRepr for FusedParams {}

/// Launch shape and scratch of the one-launch FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FusedConfig {
    /// Token tiles of 8 (template parameter NT).
    pub nt: usize,
    /// Blocks: one per [`HIDDEN_CHUNK`] hidden units.
    pub blocks: usize,
    /// 16-row groups of the output, one ticket each.
    pub groups: usize,
    /// f32 partial sums: `groups * blocks * m * 16`.
    pub partial_len: usize,
}

/// The one-launch config for `m` tokens, hidden size `h`, output size `o` (`m <= FUSED_MAX_M`).
pub(crate) fn choose_fused_config(m: usize, h: usize, o: usize) -> FusedConfig {
    let nt = FUSED_TOKEN_TILES.into_iter().find(|&nt| m <= nt * TOKENS).unwrap_or(FUSED_TOKEN_TILES[1]);
    let blocks = h.div_ceil(HIDDEN_CHUNK).max(1);
    let groups = o.div_ceil(ROWS).max(1);
    FusedConfig { nt, blocks, groups, partial_len: groups * blocks * m * ROWS }
}

/// Per-device scratch of the one-launch kernel: tickets (zero between launches: fresh buffers are
/// zeroed and each launch's last arrivals reset theirs) and partial sums, grown on demand and
/// reused, so a call allocates only its output. Device pointers are taken once; the buffers live in
/// the cache, and a replaced buffer is freed in stream order after the launches that used it.
struct Scratch {
    tickets: CudaSlice<u32>,
    tickets_ptr: u64,
    partial: CudaSlice<f32>,
    partial_ptr: u64,
}

impl Scratch {
    /// The device's scratch with room for `groups` tickets and `partial_len` partial sums.
    fn ensure<'a>(
        slot: &'a mut Option<Scratch>,
        dev: &candle_core::CudaDevice,
        groups: usize,
        partial_len: usize,
    ) -> Result<&'a Scratch> {
        let fits = slot.as_ref().is_some_and(|s| s.tickets.len() >= groups && s.partial.len() >= partial_len);
        if !fits {
            let stream = dev.cuda_stream();
            let (old_t, old_p) = slot.take().map_or((None, None), |s| (Some(s.tickets), Some(s.partial)));
            let tickets = match old_t {
                Some(t) if t.len() >= groups => t,
                _ => stream.alloc_zeros::<u32>(groups.next_power_of_two()).w()?,
            };
            let partial = match old_p {
                Some(p) if p.len() >= partial_len => p,
                // SAFETY: every launch writes the partial sums it reads.
                _ => unsafe { stream.alloc::<f32>(partial_len.next_power_of_two()) }.w()?,
            };
            let tickets_ptr = tickets.device_ptr(&stream).0;
            let partial_ptr = partial.device_ptr(&stream).0;
            *slot = Some(Scratch { tickets, tickets_ptr, partial, partial_ptr });
        }
        Ok(slot.as_ref().expect("set above"))
    }
}

/// The one-launch FFN (`kernels/ffn_fused.cu`): each block 64 hidden units for all tokens, then
/// their share of every output; the last block of each output tile sums the partials.
fn one_launch<T: CudaDType + DeviceRepr>(a: &WholeArgs<T>, y: &mut CudaSlice<T>) -> Result<()> {
    let cfg = choose_fused_config(a.m, a.h, a.o);
    let key = ("ffn_fused", a.dtype, a.epi.act(), a.epi.gated(), cfg.nt, true);
    let func = entry(a.dev, "ffn_fused", ptx::FFN_FUSED, key, || {
        Ok(format!(
            "ffn_fused_{}_{}_{}_nt{}",
            dtype_suffix(a.dtype, "fused_ffn")?,
            a.epi.act().name(),
            if a.epi.gated() { "gated" } else { "plain" },
            cfg.nt
        ))
    })?;

    static SCRATCH: OnceLock<Mutex<HashMap<DeviceId, Option<Scratch>>>> = OnceLock::new();
    // Held through the launch: launches on this device's stream share the scratch in stream order.
    let mut scratch = SCRATCH.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::ensure(scratch.entry(a.dev.id()).or_default(), a.dev, cfg.groups, cfg.partial_len)?;
    a.with_ptrs(y, |p| {
        let params = FusedParams {
            x: p.x,
            w1: p.w1,
            b1: p.b1,
            w2: p.w2,
            b2: p.b2,
            y: p.y,
            partial: scratch.partial_ptr,
            tickets: scratch.tickets_ptr,
            m: a.m as i32,
            d: a.d as i32,
            h: a.h as i32,
            o: a.o as i32,
        };
        let launch = LaunchConfig {
            grid_dim: (cfg.blocks as u32, 1, 1),
            block_dim: ((FUSED_WARPS * 32) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = a.dev.cuda_stream();
        let mut builder = stream.launch_builder(&func);
        builder.arg(&params);
        // SAFETY: `FusedParams` mirrors `ffn::FusedParams`; the pointers hold the elements of
        // `WholePtrs`' contract; the scratch holds >= `groups` zeroed tickets and `partial_len` floats
        // and stays cached (the lock is held) until the launch is queued.
        unsafe { builder.launch(launch) }.w()?;
        Ok(())
    })
}

/// Per-device scratch for the hidden activations of [`two_launches`], grown on demand and reused (a
/// call then allocates only its output). A replaced buffer is freed in stream order after the
/// launches that used it.
struct HiddenScratch {
    buf: CudaSlice<u8>,
    ptr: u64,
}

/// The two-launch FFN: both small-M projections (`kernels/ffn.cu`) from one op, the hidden
/// activations in a cached per-device scratch instead of a fresh tensor, which saves a candle op
/// (its allocation, events and dispatch) per call.
fn two_launches<T: CudaDType + DeviceRepr>(a: &WholeArgs<T>, y: &mut CudaSlice<T>) -> Result<()> {
    let aligned1 = a.d % 8 == 0 && a.offsets[0] % 8 == 0 && a.offsets[1] % 8 == 0;
    let aligned2 = a.h % 8 == 0 && a.offsets[2] % 8 == 0; // the scratch is 256-byte aligned
    let hidden_bytes = (a.m * a.h).max(1) * std::mem::size_of::<T>();

    static SCRATCH: OnceLock<Mutex<HashMap<DeviceId, HiddenScratch>>> = OnceLock::new();
    // Held through both launches: launches on this device's stream share the scratch in stream order.
    let mut cache = SCRATCH.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let stream = a.dev.cuda_stream();
    if !cache.get(&a.dev.id()).is_some_and(|s| s.buf.len() >= hidden_bytes) {
        // SAFETY: the first launch writes every hidden element the second reads.
        let buf = unsafe { stream.alloc::<u8>(hidden_bytes.next_power_of_two()) }.w()?;
        let ptr = buf.device_ptr(&stream).0;
        cache.insert(a.dev.id(), HiddenScratch { buf, ptr });
    }
    let hidden = cache.get(&a.dev.id()).expect("inserted above").ptr;
    a.with_ptrs(y, |p| {
        let up = ProjPtrs { x: p.x, w: p.w1, bias: p.b1, y: hidden };
        let down = ProjPtrs { x: hidden, w: p.w2, bias: p.b2, y: p.y };
        let identity = Epilogue::Act(Activation::Identity);
        // SAFETY: the pointers hold the elements of `WholePtrs`' contract and the scratch m·h hidden
        // elements (>= hidden_bytes); the scratch stays cached (the lock is held) until both launches
        // are queued, and later users of it run after them in stream order.
        unsafe {
            launch_proj(a.dev, a.dtype, a.epi, up, a.m, a.h, a.d, aligned1)?;
            launch_proj(a.dev, a.dtype, identity, down, a.m, a.o, a.h, aligned2)?;
        }
        Ok(())
    })
}

/// Warps per block of the cooperative FFN; mirrors `ffn::COOP_WARPS`.
const COOP_WARPS: usize = 8;
/// Blocks per SM the cooperative FFN's grid aims for when phase 1 needs more than one round of
/// one block per SM (its `__launch_bounds__` minimum, 128 registers), capped by the occupancy the
/// driver reports; see [`choose_coop_blocks_per_sm`].
const COOP_BLOCKS_PER_SM: usize = 2;
/// Token tiles compiled for the cooperative FFN (`_nt1`, `_nt2`): up to 8 or 16 tokens.
const COOP_TOKEN_TILES: [usize; 2] = [1, 2];
/// Largest M the cooperative FFN takes.
pub(crate) const COOP_MAX_M: usize = COOP_TOKEN_TILES[COOP_TOKEN_TILES.len() - 1] * TOKENS;

/// Cooperative FFN arguments; mirrors `ffn::CoopParams` in kernels/ffn_coop.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct CoopParams {
    x: u64,       // [M, D]
    w1: u64,      // [H, D]
    b1: u64,      // [H] or 0
    w2: u64,      // [O, H]
    b2: u64,      // [O] or 0
    y: u64,       // [M, O]
    hidden: u64,  // [M, H] of T
    partial: u64, // [groups * splits][M][rows] f32
    tickets: u64, // [groups] u32
    m: i32,
    d: i32,
    h: i32,
    o: i32,
    splits: i32,
    k_per_split: i32,
}
// SAFETY: plain-old-data with the C layout of `ffn::CoopParams`.
unsafe impl DeviceRepr for CoopParams {}

/// Launch shape and scratch sizes of the cooperative FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CoopConfig {
    /// Token tiles of 8 (template parameter NT).
    pub nt: usize,
    /// Blocks, all co-resident (the grid the caller can launch cooperatively).
    pub blocks: usize,
    /// Output rows per phase-2 unit (template parameter R2): [`ROWS`] or [`COOP_NARROW_ROWS`].
    pub rows: usize,
    /// `rows`-row groups of the output, one ticket each.
    pub groups: usize,
    /// Phase 2: K ranges of H per output group (>= 1), so `groups * splits` units fill the grid.
    pub splits: usize,
    /// Phase 2: k per split, a multiple of [`CHUNK_K`]; `splits * k_per_split >= h`.
    pub k_per_split: usize,
    /// f32 partial sums: `groups * splits * m * rows` (0 when `splits == 1`).
    pub partial_len: usize,
    /// The `_pr8` entries: phase-1 row-group pairs, one block per SM (see [`choose_coop_launch`]).
    pub paired: bool,
    /// The `_pf` entries: 16-row units whose first W2 batch is prefetched into L2 rather than held in
    /// registers through phase 1 (see [`choose_coop_launch`]).
    pub prefetch: bool,
}

impl CoopConfig {
    /// The entry point (kernels/ffn_coop.cu): its cache-key name and its suffix, `""` (16-row
    /// units), `"_pf"`, `"_r8"` or `"_pr8"`.
    fn entry_point(&self) -> (&'static str, &'static str) {
        match (self.paired, self.rows) {
            (true, _) => ("ffn_coop_pr8", "_pr8"),
            (false, COOP_NARROW_ROWS) => ("ffn_coop_r8", "_r8"),
            _ if self.prefetch => ("ffn_coop_pf", "_pf"),
            _ => ("ffn_coop", ""),
        }
    }
    /// The entry point's suffix ([`CoopConfig::entry_point`]).
    #[cfg(test)]
    fn suffix(&self) -> &'static str {
        self.entry_point().1
    }
}

/// Phase 2 of the cooperative FFN keeps one K split (no cross-block reduction) while a warp's share
/// of the whole H is at most this many 32-wide chunks (3 / 2 load batches of [`COOP_PRE`]), by token
/// tiles (`[nt = 1, nt = 2]`). A split
/// reduction (partials, fence, ticket, reload) costs more than the extra W2 load batches of
/// [`COOP_PRE`] chunks up to there. H100 kernel time (ncu, f16, benchmarks/ffn.md round 4): 512x2048
/// (8 chunks) 6.85 µs at one split vs 7.71 at the 4 splits of the grid rule (M = 1), 7.97 vs 8.26
/// (M = 16); 768x3072 (12 chunks) 9.41 vs 9.57 (5 splits, M = 1), 9.54 vs 9.79 (M = 4), but 11.14 vs
/// 10.78 at M = 16, hence 8 for two token tiles.
const COOP_ONE_SPLIT_MAX_CHUNKS: [usize; 2] = [3 * COOP_PRE, 2 * COOP_PRE];
/// W2 chunks per warp per load batch in phase 2; mirrors `ffn::COOP_PRE`.
const COOP_PRE: usize = 4;
/// Output rows per phase-2 unit of the narrow entries (`_nt*_r8`: one W2 row per lane, 8 chunks per
/// batch, i.e. the same W2 loads per lane as the 16-row entries, over twice the blocks).
const COOP_NARROW_ROWS: usize = 8;

/// Output rows per phase-2 unit of the cooperative FFN for `m` tokens, hidden size `h`, output size
/// `o` on `blocks` blocks: [`COOP_NARROW_ROWS`] where phase 2 runs one K split
/// ([`COOP_ONE_SPLIT_MAX_CHUNKS`]) and those units fit one round of the grid, else [`ROWS`]. Phase 2
/// is then bound by the W2 bytes each unit's SM takes in (the whole of H for its rows): with 16-row
/// units a 768-wide output keeps only 48 blocks busy, 96 KB of W2 each; 8-row units halve that. H100
/// kernel time (f16, back to back, benchmarks/ffn.md round 5): 768x3072 M = 1 7.98 µs vs 8.88 before
/// (with [`choose_coop_grid`]'s 192 blocks; 8.04 on 264), M = 4 8.37 vs 9.27; 512x2048 M = 1 6.18 vs
/// 6.70. With K splits the narrow units lost (768x3072 M = 16: 10.59 µs at 2 splits vs 9.84 for
/// 16-row units at 4 on 192 blocks; M = 1: 9.03 vs 8.70), hence one split only.
pub(crate) fn choose_coop_rows(m: usize, h: usize, o: usize, blocks: usize) -> usize {
    let nt = COOP_TOKEN_TILES.into_iter().find(|&nt| m <= nt * TOKENS).unwrap_or(COOP_TOKEN_TILES[1]);
    let one_split = h.div_ceil(CHUNK_K).div_ceil(COOP_WARPS) <= COOP_ONE_SPLIT_MAX_CHUNKS[nt - 1];
    if one_split && o.div_ceil(COOP_NARROW_ROWS) <= blocks {
        COOP_NARROW_ROWS
    } else {
        ROWS
    }
}

/// The cooperative launch for `m` tokens, hidden size `h`, output size `o` on a grid of `blocks`
/// co-resident blocks (`m <= COOP_MAX_M`). Phase 2 takes `rows`-row output groups
/// ([`choose_coop_rows`]) and splits H so the `groups * splits` units cover the grid, with at least
/// one 32-wide chunk per warp and split, except where one split leaves each warp at most
/// [`COOP_ONE_SPLIT_MAX_CHUNKS`] chunks.
pub(crate) fn choose_coop_config(m: usize, h: usize, o: usize, blocks: usize) -> CoopConfig {
    let nt = COOP_TOKEN_TILES.into_iter().find(|&nt| m <= nt * TOKENS).unwrap_or(COOP_TOKEN_TILES[1]);
    let blocks = blocks.max(1);
    let rows = choose_coop_rows(m, h, o, blocks);
    let groups = o.div_ceil(rows).max(1);
    let chunks_per_warp = h.div_ceil(CHUNK_K).div_ceil(COOP_WARPS);
    let max_splits = if chunks_per_warp <= COOP_ONE_SPLIT_MAX_CHUNKS[nt - 1] {
        1
    } else {
        (h.div_ceil(CHUNK_K) / COOP_WARPS).max(1)
    };
    let want = (blocks / groups).clamp(1, max_splits);
    let k_per_split = h.div_ceil(want).div_ceil(CHUNK_K).max(1) * CHUNK_K;
    let splits = h.div_ceil(k_per_split).max(1);
    let partial_len = if splits > 1 { groups * splits * m * rows } else { 0 };
    CoopConfig { nt, blocks, rows, groups, splits, k_per_split, partial_len, paired: false, prefetch: false }
}

/// 32-wide chunks per warp per W2 batch of the paired entries (`_pr8`); mirrors their PRE.
const COOP_PAIRED_PRE: usize = 12;

/// The cooperative launch for `m` tokens, hidden size `h`, output size `o` on `sms` SMs, where the
/// 16-row / `_r8` entries fit `per_sm` blocks per SM ([`choose_coop_blocks_per_sm`]). Where phase 1's
/// `ceil(h / 16)` row groups need one to two rounds of one block per SM, 8-row output units fit one
/// round and a warp's share of H fits one W2 batch of [`COOP_PAIRED_PRE`] chunks (768x3072), the
/// paired entries (`_pr8`) on one block per SM: phase 1 takes row groups `b` and `b + sms` together,
/// phase 2 one 8-row unit per block, one split. H100 kernel time (f16, benchmarks/ffn.md round 5):
/// 768x3072 M = 1 7.22 µs vs 7.98 for `_r8` on 192 blocks (8.88 for the round-4 config), M = 4 7.52
/// vs 8.37, M = 16 9.00 vs 9.84. Otherwise [`choose_coop_grid`] and [`choose_coop_config`], with the
/// `_pf` entries ([`CoopConfig::prefetch`]) for 16-row units once W2 has at least
/// [`COOP_PREFETCH_MIN_WEIGHTS`] elements.
pub(crate) fn choose_coop_launch(m: usize, h: usize, o: usize, sms: usize, per_sm: usize) -> CoopConfig {
    let groups1 = h.div_ceil(ROWS);
    let chunks_per_warp = h.div_ceil(CHUNK_K).div_ceil(COOP_WARPS);
    let sms = sms.max(1);
    let paired = groups1 > sms
        && groups1 <= 2 * sms
        && o.div_ceil(COOP_NARROW_ROWS) <= sms
        && chunks_per_warp <= COOP_PAIRED_PRE;
    if !paired {
        let cfg = choose_coop_config(m, h, o, choose_coop_grid(h, sms, per_sm));
        let prefetch = cfg.rows == ROWS && h * o >= COOP_PREFETCH_MIN_WEIGHTS;
        return CoopConfig { prefetch, ..cfg };
    }
    let nt = COOP_TOKEN_TILES.into_iter().find(|&nt| m <= nt * TOKENS).unwrap_or(COOP_TOKEN_TILES[1]);
    let k_per_split = h.div_ceil(CHUNK_K).max(1) * CHUNK_K;
    let groups = o.div_ceil(COOP_NARROW_ROWS).max(1);
    CoopConfig {
        nt,
        blocks: sms,
        rows: COOP_NARROW_ROWS,
        groups,
        splits: 1,
        k_per_split,
        partial_len: 0,
        paired,
        prefetch: false,
    }
}

/// W2 elements (`h * o`) from which the cooperative FFN's 16-row units take the `_pf` entries: the
/// first W2 batch of each warp is prefetched into L2 at kernel start instead of being loaded into
/// 32 registers held through phase 1. At the 128-register budget those held registers make ptxas
/// issue half of each step's weight loads only after the step's first mma (which waits for the first
/// half), in both phases; without them every load of a step goes out first. That pays where the
/// weights stream from HBM and phase 1 takes several steps; where they are L2-resident and phase 1 is
/// one step, the batch held in registers is worth more. H100 kernel time (f16, back to back,
/// benchmarks/ffn.md round 7): 4096x11008 (45M) M = 16 68.31 µs vs 69.65, M = 4 65.73 vs 66.82, M = 1
/// 65.46 vs 66.67; 1024x4096 (4M, L2-resident) M = 16 11.90 vs 11.47, M = 1 10.30 vs 9.81.
const COOP_PREFETCH_MIN_WEIGHTS: usize = 16 << 20;

/// Co-resident blocks per SM for the cooperative FFN with hidden size `h` on `sms` SMs, where the
/// driver allows `occupancy` blocks per SM (0: the kernel does not fit). One block per SM when
/// phase 1's `ceil(h / 16)` row groups of W1 fit one round of one block per SM: a smaller grid to
/// synchronize, and phase 1 takes one round either way (H100 kernel time at 512x2048 M = 1: 7.48
/// µs on 132 blocks vs 8.15 on 264, benchmarks/ffn.md); otherwise [`COOP_BLOCKS_PER_SM`], so the
/// rounds of phase 1 halve (768x3072: 9.20 µs on 264 blocks vs 10.14 on 132).
pub(crate) fn choose_coop_blocks_per_sm(h: usize, sms: usize, occupancy: usize) -> usize {
    if h.div_ceil(ROWS) <= sms {
        occupancy.min(1)
    } else {
        occupancy.min(COOP_BLOCKS_PER_SM)
    }
}

/// Blocks of the cooperative FFN's grid for hidden size `h` on `sms` SMs with `per_sm` co-resident
/// blocks per SM allowed ([`choose_coop_blocks_per_sm`]): `per_sm * sms`, but with two or more per
/// SM no more blocks than phase 1's `ceil(h / 16)` row groups (at least one per SM), so no block
/// idles through phase 1 (768x3072: 192 blocks, one round). A small gain: H100, 768x3072 M = 1 / 4
/// with 8-row units 7.98 / 8.37 µs on 192 blocks vs 8.04 / 8.43 on 264 (benchmarks/ffn.md round 5).
pub(crate) fn choose_coop_grid(h: usize, sms: usize, per_sm: usize) -> usize {
    if per_sm >= 2 {
        (per_sm * sms).min(h.div_ceil(ROWS).max(sms))
    } else {
        per_sm * sms
    }
}

/// Per-device scratch of the cooperative FFN: hidden activations, partial sums and tickets (zero
/// between launches: fresh buffers are zeroed and each launch's last arrivals reset theirs), grown
/// on demand and reused, so a call allocates only its output. A replaced buffer is freed in stream
/// order after the launches that used it.
struct CoopScratch {
    hidden: CudaSlice<u8>,
    hidden_ptr: u64,
    partial: CudaSlice<f32>,
    partial_ptr: u64,
    tickets: CudaSlice<u32>,
    tickets_ptr: u64,
}

impl CoopScratch {
    /// The device's scratch with room for `hidden_bytes`, `partial_len` floats and `groups` tickets.
    fn ensure<'a>(
        slot: &'a mut Option<CoopScratch>,
        dev: &candle_core::CudaDevice,
        hidden_bytes: usize,
        partial_len: usize,
        groups: usize,
    ) -> Result<&'a CoopScratch> {
        let fits = slot.as_ref().is_some_and(|s| {
            s.hidden.len() >= hidden_bytes && s.partial.len() >= partial_len && s.tickets.len() >= groups
        });
        if !fits {
            let stream = dev.cuda_stream();
            let old = slot.take();
            let (old_h, old_p, old_t) = match old {
                Some(s) => (Some(s.hidden), Some(s.partial), Some(s.tickets)),
                None => (None, None, None),
            };
            let hidden = match old_h {
                Some(b) if b.len() >= hidden_bytes => b,
                // SAFETY: phase 1 writes every hidden element phase 2 reads.
                _ => unsafe { stream.alloc::<u8>(hidden_bytes.max(1).next_power_of_two()) }.w()?,
            };
            let partial = match old_p {
                Some(b) if b.len() >= partial_len => b,
                // SAFETY: every launch writes the partial sums it reads.
                _ => unsafe { stream.alloc::<f32>(partial_len.max(1).next_power_of_two()) }.w()?,
            };
            let tickets = match old_t {
                Some(t) if t.len() >= groups => t,
                _ => stream.alloc_zeros::<u32>(groups.max(1).next_power_of_two()).w()?,
            };
            let (hidden_ptr, partial_ptr) = (hidden.device_ptr(&stream).0, partial.device_ptr(&stream).0);
            let tickets_ptr = tickets.device_ptr(&stream).0;
            *slot = Some(CoopScratch { hidden, hidden_ptr, partial, partial_ptr, tickets, tickets_ptr });
        }
        Ok(slot.as_ref().expect("set above"))
    }
}

/// Co-resident blocks of `func` per SM at [`COOP_WARPS`] warps, queried once per device and entry.
fn coop_blocks_per_sm(dev: &candle_core::CudaDevice, key: EntryKey, func: &CudaFunction) -> Result<usize> {
    static OCC: OnceLock<Mutex<HashMap<(DeviceId, EntryKey), usize>>> = OnceLock::new();
    let mut cache = OCC.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&n) = cache.get(&(dev.id(), key)) {
        return Ok(n);
    }
    dev.cuda_stream().context().bind_to_thread().w()?; // the query needs the device's context current
    let n = func.occupancy_max_active_blocks_per_multiprocessor((COOP_WARPS * 32) as u32, 0, None).w()? as usize;
    cache.insert((dev.id(), key), n);
    Ok(n)
}

/// What a cooperative FFN call launches, fixed by (device, dtype, activation, m, h, o): the entry
/// point and its launch shape. Cached per device with the scratch ([`CoopDevice`]), so a call
/// costs one lock and two small lookups instead of a lookup per entry, occupancy and SM count.
#[derive(Clone)]
struct CoopPlan {
    func: CudaFunction,
    cfg: CoopConfig,
}

/// Per-device state of the cooperative FFN: plans by (dtype, activation, m, h, o) and the scratch.
#[derive(Default)]
struct CoopDevice {
    plans: HashMap<(DType, Activation, usize, usize, usize), CoopPlan>,
    scratch: Option<CoopScratch>,
}

/// The entry point and launch shape of the cooperative FFN for `m` tokens, hidden size `h`, output
/// size `o` on `dev` ([`choose_coop_launch`] with the device's SM count and the entry's occupancy).
fn coop_plan(
    dev: &candle_core::CudaDevice,
    dtype: DType,
    act: Activation,
    m: usize,
    h: usize,
    o: usize,
) -> Result<CoopPlan> {
    let nt = COOP_TOKEN_TILES.into_iter().find(|&nt| m <= nt * TOKENS).unwrap_or(COOP_TOKEN_TILES[1]);
    // Both entries of a token tile have the same register budget (`__launch_bounds__`) and no
    // dynamic shared memory: the 16-row entry's occupancy sizes the grid for either.
    let key = ("ffn_coop", dtype, act, false, nt, true);
    let func = entry(dev, "ffn_coop", ptx::FFN_COOP, key, || {
        Ok(format!("ffn_coop_{}_{}_nt{nt}", dtype_suffix(dtype, "fused_ffn")?, act.name()))
    })?;
    let sms = sm_count(dev)?;
    let per_sm = choose_coop_blocks_per_sm(h, sms, coop_blocks_per_sm(dev, key, &func)?);
    if per_sm == 0 {
        bail!("fused_ffn: the cooperative FFN kernel does not fit on an SM of this device");
    }
    let cfg = choose_coop_launch(m, h, o, sms, per_sm);
    debug_assert_eq!(cfg.nt, nt);
    let func = match cfg.entry_point() {
        (_, "") => func,
        (name, suffix) => {
            let key = (name, dtype, act, false, nt, true);
            let f = entry(dev, "ffn_coop", ptx::FFN_COOP, key, || {
                Ok(format!("ffn_coop_{}_{}_nt{nt}{suffix}", dtype_suffix(dtype, "fused_ffn")?, act.name()))
            })?;
            if coop_blocks_per_sm(dev, key, &f)? * sms < cfg.blocks {
                bail!(
                    "fused_ffn: the cooperative FFN kernel `{suffix}` does not fit {} blocks on this device",
                    cfg.blocks
                );
            }
            f
        }
    };
    Ok(CoopPlan { func, cfg })
}

/// The cooperative FFN (`kernels/ffn_coop.cu`): one cooperative launch over the whole GPU, phase 1
/// the hidden activations (to a cached scratch), a grid barrier, phase 2 the output. Asks for a
/// programmatic dependent launch (the entries begin with `tg::pdl_enter`), which the H100's driver
/// 580 did not overlap for cooperative grids (`examples/host_cost.rs`: per call within noise of a
/// plain cooperative launch, benchmarks/host-overhead.md); kept for drivers that do.
fn cooperative<T: CudaDType + DeviceRepr>(a: &WholeArgs<T>, y: &mut CudaSlice<T>) -> Result<()> {
    static DEVICES: OnceLock<Mutex<HashMap<DeviceId, CoopDevice>>> = OnceLock::new();
    // Held through the launch: launches on this device's stream share the scratch in stream order.
    let mut devices = DEVICES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let state = devices.entry(a.dev.id()).or_default();
    let plan_key = (a.dtype, a.epi.act(), a.m, a.h, a.o);
    let plan = match state.plans.get(&plan_key) {
        Some(plan) => plan.clone(),
        None => {
            let plan = coop_plan(a.dev, a.dtype, a.epi.act(), a.m, a.h, a.o)?;
            state.plans.insert(plan_key, plan.clone());
            plan
        }
    };
    let cfg = plan.cfg;
    let hidden_bytes = a.m * a.h * std::mem::size_of::<T>();
    let scratch = CoopScratch::ensure(&mut state.scratch, a.dev, hidden_bytes, cfg.partial_len, cfg.groups)?;
    a.with_ptrs(y, |p| {
        let mut params = CoopParams {
            x: p.x,
            w1: p.w1,
            b1: p.b1,
            w2: p.w2,
            b2: p.b2,
            y: p.y,
            hidden: scratch.hidden_ptr,
            partial: scratch.partial_ptr,
            tickets: scratch.tickets_ptr,
            m: a.m as i32,
            d: a.d as i32,
            h: a.h as i32,
            o: a.o as i32,
            splits: cfg.splits as i32,
            k_per_split: cfg.k_per_split as i32,
        };
        let launch = LaunchConfig {
            grid_dim: (cfg.blocks as u32, 1, 1),
            block_dim: ((COOP_WARPS * 32) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut args = [kernel_param(&mut params)];
        // SAFETY: the one parameter is a `CoopParams`, which mirrors `ffn::CoopParams`; the pointers
        // hold the elements of `WholePtrs`' contract; the scratch holds m·h hidden elements,
        // `partial_len` floats and >= `groups` zeroed tickets and stays cached (the lock is held)
        // until the launch is queued; the grid is at most the co-resident block count (occupancy x
        // SMs, checked by `coop_plan`); the entries begin with `tg::pdl_enter`.
        unsafe { launch_ex(a.dev, &plan.func, launch, true, true, &mut args) }
    })
}

/// Threads per block of the activation pass (`ffn_act_*`, `ffn_gate_*`).
const PASS_THREADS: usize = 256;

/// `h = act(h)` in place on a cuBLASLt-path hidden tensor (`kernels/ffn.cu`'s `ffn_act_*`): one pass,
/// 16-byte loads. `h` must be contiguous from a 16-byte aligned offset (the caller's fresh output).
pub(super) fn act_inplace(act: Activation, h: &mut CudaStorage, l: &Layout) -> Result<()> {
    match h.dtype() {
        DType::F16 => act_inplace_t::<half::f16>(act, h, l),
        DType::BF16 => act_inplace_t::<half::bf16>(act, h, l),
        dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "fused_ffn (activation pass)")),
    }
}

fn act_inplace_t<T: CudaDType + DeviceRepr>(act: Activation, h: &mut CudaStorage, l: &Layout) -> Result<()> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("fused_ffn: the activation pass needs a contiguous tensor, got strides {:?}", l.stride());
    };
    if start % 8 != 0 {
        bail!("fused_ffn: the activation pass needs a 16-byte aligned tensor, got offset {start}");
    }
    let numel = end - start;
    if numel == 0 {
        return Ok(());
    }
    let dev = h.device().clone();
    let key = ("ffn_act", h.dtype(), act, false, 0, true);
    let func = entry(&dev, "ffn", ptx::FFN, key, || {
        Ok(format!("ffn_act_{}_{}", dtype_suffix(h.dtype(), "fused_ffn")?, act.name()))
    })?;
    let stream = dev.cuda_stream();
    let slice = h.as_cuda_slice_mut::<T>()?;
    let mut view = slice.slice_mut(start..end);
    let numel = numel as i64;
    let blocks = (numel as usize / 8).div_ceil(PASS_THREADS).clamp(1, 1 << 16);
    let launch =
        LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (PASS_THREADS as u32, 1, 1), shared_mem_bytes: 0 };
    let mut builder = stream.launch_builder(&func);
    builder.arg(&mut view).arg(&numel);
    // SAFETY: `ffn_act_<T>_<act>(T* h, int64_t numel)`; the view holds `numel` elements from a
    // 16-byte aligned start (allocations are 256-byte aligned, the offset is a multiple of 8).
    unsafe { builder.launch(launch) }.w()?;
    Ok(())
}

/// `y [m, n] = act(h[:, ..n]) * h[:, n..]` for a cuBLASLt-path gated hidden tensor `h [m, 2n]`
/// (`kernels/ffn.cu`'s `ffn_gate_*`): one pass, 16-byte vectors when `n % 8 == 0`.
pub(super) fn gate_fwd(act: Activation, h: Arg) -> Result<CudaStorage> {
    match h.0.dtype() {
        DType::F16 => gate_fwd_t::<half::f16>(act, h),
        DType::BF16 => gate_fwd_t::<half::bf16>(act, h),
        dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "fused_ffn (gate pass)")),
    }
}

fn gate_fwd_t<T: CudaDType + DeviceRepr>(act: Activation, h: Arg) -> Result<CudaStorage> {
    let dev = h.0.device();
    let (m, n2) = (h.1.dims()[0], h.1.dims()[1]);
    let n = n2 / 2;
    let hs = contiguous_view::<T>(h.0, h.1)?;
    let mut y = alloc_output::<T>(dev, m * n)?;
    if m == 0 || n == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()));
    }
    let vector = n % 8 == 0 && h.1.start_offset() % 8 == 0;
    let key = ("ffn_gate", h.0.dtype(), act, true, 0, vector);
    let func = entry(dev, "ffn", ptx::FFN, key, || {
        Ok(format!(
            "ffn_gate_{}_{}_{}",
            dtype_suffix(h.0.dtype(), "fused_ffn")?,
            act.name(),
            if vector { "v" } else { "s" }
        ))
    })?;
    let per_row = if vector { n / 8 } else { n };
    let launch = LaunchConfig {
        grid_dim: (per_row.div_ceil(PASS_THREADS) as u32, m.min(65535) as u32, 1),
        block_dim: (PASS_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let (m, n) = (m as i64, n as i64);
    let stream = dev.cuda_stream();
    let mut builder = stream.launch_builder(&func);
    builder.arg(&hs).arg(&mut y).arg(&m).arg(&n);
    // SAFETY: `ffn_gate_<T>_<act>_<v|s>(const T* h, T* y, int64_t m, int64_t n)`; h holds m·2n and y
    // m·n elements; `v` only with n % 8 == 0 and a 16-byte aligned h (y is a fresh allocation).
    unsafe { builder.launch(launch) }.w()?;
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
    fn fused_config_covers_hidden_and_output() {
        for (m, h, o, nt) in [(1, 2048, 512, 1), (8, 3072, 768, 1), (9, 300, 100, 2), (16, 11008, 4096, 2)] {
            let c = choose_fused_config(m, h, o);
            assert_eq!(c.nt, nt, "m={m}");
            assert!(c.nt * TOKENS >= m);
            assert!(c.blocks * HIDDEN_CHUNK >= h && (c.blocks - 1) * HIDDEN_CHUNK < h, "{c:?}");
            assert!(c.groups * ROWS >= o && (c.groups - 1) * ROWS < o, "{c:?}");
            assert_eq!(c.partial_len, c.groups * c.blocks * m * ROWS);
        }
        assert_eq!(FUSED_MAX_M, 16);
    }

    #[test]
    fn coop_config_fills_the_grid() {
        let grid = 2 * H100_SMS;
        for (m, h, o) in [(1, 2048, 512), (4, 3072, 768), (16, 4096, 1024), (9, 136, 72), (1, 8, 8), (2, 2048, 8192)] {
            let c = choose_coop_config(m, h, o, grid);
            assert!(c.nt * TOKENS >= m && c.nt <= 2, "{c:?}");
            assert_eq!(c.blocks, grid);
            assert_eq!(c.rows, choose_coop_rows(m, h, o, grid));
            assert!(c.groups * c.rows >= o && (c.groups - 1) * c.rows < o, "{c:?}");
            assert_eq!(c.k_per_split % CHUNK_K, 0);
            assert!(c.splits * c.k_per_split >= h && (c.splits - 1) * c.k_per_split < h, "{c:?} h={h}");
            // no more units than blocks unless one group per block already is too many
            assert!(c.splits == 1 || c.groups * c.splits <= grid, "{c:?}");
            // each warp of a split gets at least one chunk
            assert!(c.k_per_split >= COOP_WARPS * CHUNK_K || c.splits == 1, "{c:?}");
            // narrow units only with one split
            assert!(c.rows == ROWS || c.splits == 1, "{c:?}");
            let want_partial = if c.splits > 1 { c.groups * c.splits * m * c.rows } else { 0 };
            assert_eq!(c.partial_len, want_partial);
        }
        // the seed's shape on an H100 (8 chunks per warp): 8-row units, one split, no reduction
        let c = choose_coop_config(1, 2048, 512, H100_SMS);
        assert_eq!((c.rows, c.groups, c.splits, c.k_per_split, c.partial_len), (8, 64, 1, 2048, 0));
        assert_eq!(choose_coop_config(16, 2048, 512, H100_SMS).splits, 1);
        // 768x3072 (12 chunks per warp): one split of 8-row units for one token tile, the grid rule
        // with 16-row units for two
        let c = choose_coop_config(4, 3072, 768, grid);
        assert_eq!((c.rows, c.groups, c.splits), (8, 96, 1));
        let c = choose_coop_config(16, 3072, 768, grid);
        assert_eq!((c.rows, c.groups, c.splits, c.k_per_split), (16, 48, 5, 640));
        let c = choose_coop_config(16, 3072, 768, 192);
        assert_eq!((c.rows, c.groups, c.splits, c.k_per_split), (16, 48, 4, 768));
        // 1024x4096 (16 chunks per warp): 64 output groups x 4 splits of 1024 = 256 units of 264 blocks
        let c = choose_coop_config(1, 4096, 1024, grid);
        assert_eq!((c.rows, c.groups, c.splits, c.k_per_split), (16, 64, 4, 1024));
        // LLaMA-7B's down projection: 16-row units (512 groups of 8 would not fit one round)
        let c = choose_coop_config(16, 11008, 4096, grid);
        assert_eq!((c.rows, c.groups, c.splits), (16, 256, 1));
        // a wide output: one split per group, blocks loop over groups
        assert_eq!(choose_coop_config(1, 2048, 8192, grid).splits, 1);
        assert_eq!(choose_coop_config(1, 2048, 8192, grid).rows, ROWS);
        assert_eq!(COOP_MAX_M, 16);
    }

    #[test]
    fn coop_rows_narrow_while_one_round_of_one_split() {
        assert_eq!(choose_coop_rows(1, 3072, 768, 2 * H100_SMS), COOP_NARROW_ROWS);
        assert_eq!(choose_coop_rows(1, 2048, 512, H100_SMS), COOP_NARROW_ROWS);
        assert_eq!(choose_coop_rows(1, 2048, 8 * H100_SMS, H100_SMS), COOP_NARROW_ROWS);
        assert_eq!(choose_coop_rows(1, 2048, 8 * H100_SMS + 1, H100_SMS), ROWS);
        assert_eq!(choose_coop_rows(1, 11008, 4096, 2 * H100_SMS), ROWS);
        // several K splits (12 chunks per warp with two token tiles, 16 with one): 16-row units
        assert_eq!(choose_coop_rows(16, 3072, 768, 2 * H100_SMS), ROWS);
        assert_eq!(choose_coop_rows(1, 4096, 1024, 2 * H100_SMS), ROWS);
        assert_eq!(choose_coop_rows(16, 2048, 512, H100_SMS), COOP_NARROW_ROWS);
    }

    #[test]
    fn coop_launch_pairs_one_to_two_rounds() {
        // 768x3072: 192 row groups on 132 SMs, 96 units of 8, 12 chunks per warp: paired, any M
        for m in [1, 4, 16] {
            let c = choose_coop_launch(m, 3072, 768, H100_SMS, 2);
            assert_eq!(c.suffix(), "_pr8");
            assert_eq!((c.blocks, c.rows, c.groups, c.splits, c.k_per_split, c.partial_len), (132, 8, 96, 1, 3072, 0));
            assert_eq!(c.nt, m.div_ceil(TOKENS));
        }
        // one round already (512x2048): 8-row units on one block per SM
        let c = choose_coop_launch(1, 2048, 512, H100_SMS, 1);
        assert_eq!((c.suffix(), c.blocks, c.splits), ("_r8", 132, 1));
        // 1024x4096: 16 chunks per warp, more than one batch: 16-row units with K splits on 256 blocks
        let c = choose_coop_launch(1, 4096, 1024, H100_SMS, 2);
        assert_eq!((c.suffix(), c.blocks, c.splits), ("", 256, 4));
        // LLaMA-7B: more than two rounds of row groups; W2 of 45M elements: the prefetching entries
        for m in [1, 16] {
            let c = choose_coop_launch(m, 11008, 4096, H100_SMS, 2);
            assert_eq!((c.suffix(), c.blocks, c.splits, c.rows), ("_pf", 264, 1, ROWS));
        }
        // a wide output (more 8-row units than SMs): not paired
        assert!(!choose_coop_launch(1, 3072, 8 * H100_SMS + 8, H100_SMS, 2).paired);
        // a partial H tile: k_per_split covers H in whole chunks
        let c = choose_coop_launch(1, 3000, 768, H100_SMS, 2);
        assert!(c.paired && c.k_per_split >= 3000 && c.k_per_split % CHUNK_K == 0, "{c:?}");
    }

    #[test]
    fn coop_prefetch_from_the_weight_threshold() {
        // 16-row units on either side of COOP_PREFETCH_MIN_WEIGHTS (8-row units, one split with at
        // most 264 blocks, have at most 2112 x 3072 weights); paired units never
        let c = choose_coop_launch(16, 4096, 4096, H100_SMS, 2);
        assert!(c.prefetch && c.rows == ROWS && c.suffix() == "_pf", "{c:?}");
        let c = choose_coop_launch(16, 4096, 4095, H100_SMS, 2);
        assert!(!c.prefetch && c.rows == ROWS && c.suffix().is_empty(), "{c:?}");
        let c = choose_coop_launch(16, 4096, 1024, H100_SMS, 2);
        assert!(!c.prefetch && c.suffix().is_empty(), "{c:?}");
        assert!(!choose_coop_launch(1, 3072, 768, H100_SMS, 2).prefetch);
        assert!(!choose_coop_launch(1, 2048, 512, H100_SMS, 1).prefetch);
    }

    #[test]
    fn coop_grid_has_no_idle_phase1_blocks() {
        // one block per SM: the whole grid (the seed's shape: 128 row groups on 132 blocks)
        assert_eq!(choose_coop_grid(2048, H100_SMS, 1), H100_SMS);
        // two per SM: one block per row group between one and two rounds
        assert_eq!(choose_coop_grid(3072, H100_SMS, 2), 192);
        assert_eq!(choose_coop_grid(16 * H100_SMS + 8, H100_SMS, 2), H100_SMS + 1);
        assert_eq!(choose_coop_grid(4096, H100_SMS, 2), 256);
        // more row groups than two rounds' blocks, or fewer than SMs: the occupancy's grid / all SMs
        assert_eq!(choose_coop_grid(11008, H100_SMS, 2), 2 * H100_SMS);
        assert_eq!(choose_coop_grid(1024, H100_SMS, 2), H100_SMS);
        assert_eq!(choose_coop_grid(11008, H100_SMS, 0), 0);
    }

    #[test]
    fn coop_blocks_per_sm_by_hidden_rounds() {
        // the seed's shape: 128 hidden row groups fit one round of 132 blocks
        assert_eq!(choose_coop_blocks_per_sm(2048, H100_SMS, 2), 1);
        assert_eq!(choose_coop_blocks_per_sm(16 * H100_SMS, H100_SMS, 2), 1);
        // one group more than SMs: two blocks per SM halve phase 1's rounds
        assert_eq!(choose_coop_blocks_per_sm(16 * H100_SMS + 8, H100_SMS, 2), 2);
        assert_eq!(choose_coop_blocks_per_sm(3072, H100_SMS, 2), 2);
        assert_eq!(choose_coop_blocks_per_sm(11008, H100_SMS, 2), 2);
        // capped by the occupancy the driver reports; 0 stays 0 (the caller bails)
        assert_eq!(choose_coop_blocks_per_sm(11008, H100_SMS, 1), 1);
        assert_eq!(choose_coop_blocks_per_sm(11008, H100_SMS, 4), COOP_BLOCKS_PER_SM);
        assert_eq!(choose_coop_blocks_per_sm(2048, H100_SMS, 0), 0);
        assert_eq!(choose_coop_blocks_per_sm(11008, H100_SMS, 0), 0);
    }

    #[test]
    fn narrow_layers_split_k_across_more_warps() {
        // the seed's down projection (N=512, K=2048): 32 blocks only, so all 8 warps split K
        assert_eq!(choose_config(1, 512, 2048, false, H100_SMS).warps, MAX_WARPS);
        // a tiny K can't feed more warps than it has 32-wide chunks
        assert_eq!(choose_config(1, 512, 40, false, H100_SMS).warps, 2);
    }
}
