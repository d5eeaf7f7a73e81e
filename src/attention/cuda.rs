//! CUDA glue: picks the kernel ([`super::config`]), fills the `#[repr(C)]` params mirrored by
//! `tg::attn::Params` in `kernels/attention.cuh`, launches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, DeviceId, WrapErr};
use candle_core::{backend::BackendStorage, bail, CudaDevice, CudaStorage, DType, Layout, Result, Shape};

use super::config::{self, Plan};
use super::{philox, Problem, Strides};
use crate::cuda::{alloc_output, dtype_suffix, load_func, ptx};
pub(super) use crate::cuda::{ensure_smem, sm_count};

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// Kernel arguments; field for field `tg::attn::Params` (kernels/attention.cuh).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AttnParams {
    pub(super) q: u64,           // [B, Hq, Nq, D] (strides below, in elements; D stride 1)
    pub(super) k: u64,           // [B, Hkv, Nk, D]
    pub(super) v: u64,           // [B, Hkv, Nk, D]
    pub(super) o: u64,           // [B, Hq, Nq, D] contiguous
    pub(super) o_partial: u64,   // f32 [num_splits, B, Hq, Nq, D]
    pub(super) lse_partial: u64, // f32 [num_splits, B, Hq, Nq]
    pub(super) q_sb: i64,
    pub(super) q_sh: i64,
    pub(super) q_sn: i64,
    pub(super) k_sb: i64,
    pub(super) k_sh: i64,
    pub(super) k_sn: i64,
    pub(super) v_sb: i64,
    pub(super) v_sh: i64,
    pub(super) v_sn: i64,
    pub(super) b: i32,
    pub(super) hq: i32,
    pub(super) hkv: i32,
    pub(super) nq: i32,
    pub(super) nk: i32,
    pub(super) d: i32,
    pub(super) causal: i32,
    pub(super) causal_offset: i32,
    pub(super) scale_log2: f32,
    pub(super) drop_threshold: u32,
    pub(super) drop_scale: f32,
    pub(super) seed_lo: u32,
    pub(super) seed_hi: u32,
    pub(super) num_splits: i32,
    pub(super) keys_per_split: i32,
    pub(super) pad: i32,
    pub(super) counters: u64, // u32 [B * Hq] (decode with splits)
}
const _: () = assert!(std::mem::size_of::<AttnParams>() == 192, "mirrors tg::attn::Params");

// SAFETY: plain old data with the C layout of `tg::attn::Params`.
unsafe impl DeviceRepr for AttnParams {}

/// Largest grid y/z dimension.
pub(super) const MAX_GRID_YZ: usize = 65_535;

pub(super) fn fwd(prob: &Problem, q: Arg, k: Arg, v: Arg) -> Result<(CudaStorage, Shape)> {
    match q.0.dtype() {
        DType::F32 => fwd_t::<f32>(prob, q, k, v),
        DType::F16 => fwd_t::<half::f16>(prob, q, k, v),
        DType::BF16 => fwd_t::<half::bf16>(prob, q, k, v),
        dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "fused_attention")),
    }
}

/// The decode entry `attn_decode_<suffix>_d<head_dim>`, looked up once per (device, dtype, head
/// dim): a decode call is short enough for the name formatting and module lookup to show.
fn decode_func(dev: &CudaDevice, dtype: DType, suffix: &str, head_dim: usize) -> Result<CudaFunction> {
    type Funcs = HashMap<(DeviceId, DType, usize), CudaFunction>;
    static FUNCS: OnceLock<Mutex<Funcs>> = OnceLock::new();
    let mut funcs = FUNCS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = funcs.get(&(dev.id(), dtype, head_dim)) {
        return Ok(f.clone());
    }
    let name = format!("attn_decode_{suffix}_d{head_dim}");
    let func = load_func(dev, "attention_decode", ptx::ATTENTION_DECODE, &name)?;
    funcs.insert((dev.id(), dtype, head_dim), func.clone());
    Ok(func)
}

/// Per-device scratch of the one-launch decode: the rows' arrival counters (zero between launches:
/// fresh buffers are zeroed and each row's last split resets its counter) and the splits' partial
/// outputs and log-sum-exps, grown on demand and reused, so a call allocates only its output.
/// Device pointers are taken once; a replaced buffer is freed in stream order after the launches
/// that used it.
struct DecodeScratch {
    counters: CudaSlice<u32>,
    counters_ptr: u64,
    partial: CudaSlice<f32>,
    partial_ptr: u64,
}

impl DecodeScratch {
    /// The device's scratch with room for `rows` counters and `partial_len` floats.
    fn ensure<'a>(
        slot: &'a mut Option<DecodeScratch>,
        dev: &CudaDevice,
        rows: usize,
        partial_len: usize,
    ) -> Result<&'a DecodeScratch> {
        let fits = slot.as_ref().is_some_and(|s| s.counters.len() >= rows && s.partial.len() >= partial_len);
        if !fits {
            let stream = dev.cuda_stream();
            let (old_c, old_p) = slot.take().map_or((None, None), |s| (Some(s.counters), Some(s.partial)));
            let counters = match old_c {
                Some(c) if c.len() >= rows => c,
                _ => stream.alloc_zeros::<u32>(rows.next_power_of_two()).w()?,
            };
            let partial = match old_p {
                Some(p) if p.len() >= partial_len => p,
                // SAFETY: every launch writes the partials it reads.
                _ => unsafe { stream.alloc::<f32>(partial_len.next_power_of_two()) }.w()?,
            };
            let counters_ptr = counters.device_ptr(&stream).0;
            let partial_ptr = partial.device_ptr(&stream).0;
            *slot = Some(DecodeScratch { counters, counters_ptr, partial, partial_ptr });
        }
        Ok(slot.as_ref().expect("set above"))
    }
}

pub(super) fn launch(stream: &CudaStream, func: &CudaFunction, params: &AttnParams, cfg: LaunchConfig) -> Result<()> {
    let mut b = stream.launch_builder(func);
    b.arg(params);
    // SAFETY: every attention entry point takes one `tg::attn::Params` by value, which
    // `AttnParams` mirrors; its pointers are live device buffers of the shapes it states.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}

/// Allocates the split partials, runs `split_kernel` (which writes them) and the combine kernel
/// (which merges them into `params.o`).
fn with_partials(
    dev: &CudaDevice,
    stream: &Arc<CudaStream>,
    suffix: &str,
    prob: &Problem,
    num_splits: usize,
    params: &mut AttnParams,
    split_kernel: impl FnOnce(&AttnParams) -> Result<()>,
) -> Result<()> {
    let rows = prob.b * prob.hq * prob.nq;
    // One allocation for both (each costs host time comparable to a small kernel): the partial
    // outputs, then the log-sum-exps.
    let o_len = num_splits * rows * prob.d;
    let mut partials = alloc_output::<f32>(dev, o_len + num_splits * rows)?;
    let (op_ptr, _op_guard) = partials.device_ptr_mut(stream);
    params.o_partial = op_ptr;
    params.lse_partial = op_ptr + (o_len * std::mem::size_of::<f32>()) as u64;
    split_kernel(params)?;
    let combine = load_func(dev, "attention", ptx::ATTENTION, &format!("attn_combine_{suffix}"))?;
    let cfg = LaunchConfig {
        grid_dim: (rows.div_ceil(config::COMBINE_ROWS) as u32, 1, 1),
        block_dim: (config::THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    launch(stream, &combine, params, cfg)
}

fn fwd_t<T: CudaDType + DeviceRepr>(prob: &Problem, q: Arg, k: Arg, v: Arg) -> Result<(CudaStorage, Shape)> {
    let dev = q.0.device();
    let stream = dev.cuda_stream();
    let dtype = q.0.dtype();
    let suffix = dtype_suffix(dtype, "fused_attention")?;
    let plan = config::choose_plan(dtype == DType::F32, prob.b, prob.hq, prob.nq, prob.nk, prob.d, sm_count(dev)?);
    if prob.b * prob.hq > MAX_GRID_YZ {
        bail!("fused_attention: B*Hq={} is over the CUDA grid limit {MAX_GRID_YZ}", prob.b * prob.hq);
    }

    let elem = std::mem::size_of::<T>() as u64;
    let (qs, ks, vs) = (q.0.as_cuda_slice::<T>()?, k.0.as_cuda_slice::<T>()?, v.0.as_cuda_slice::<T>()?);
    let (qst, kst, vst) = (Strides::of(q.1), Strides::of(k.1), Strides::of(v.1));
    let (q_ptr, _q_guard) = qs.device_ptr(&stream);
    let (k_ptr, _k_guard) = ks.device_ptr(&stream);
    let (v_ptr, _v_guard) = vs.device_ptr(&stream);
    let mut params = AttnParams {
        q: q_ptr + qst.offset as u64 * elem,
        k: k_ptr + kst.offset as u64 * elem,
        v: v_ptr + vst.offset as u64 * elem,
        q_sb: qst.b as i64,
        q_sh: qst.h as i64,
        q_sn: qst.n as i64,
        k_sb: kst.b as i64,
        k_sh: kst.h as i64,
        k_sn: kst.n as i64,
        v_sb: vst.b as i64,
        v_sh: vst.h as i64,
        v_sn: vst.n as i64,
        b: prob.b as i32,
        hq: prob.hq as i32,
        hkv: prob.hkv as i32,
        nq: prob.nq as i32,
        nk: prob.nk as i32,
        d: prob.d as i32,
        causal: i32::from(prob.causal),
        causal_offset: prob.causal_offset() as i32,
        scale_log2: prob.scale * std::f32::consts::LOG2_E,
        num_splits: 1,
        keys_per_split: prob.nk as i32,
        ..Default::default()
    };
    if let Some(dropout) = prob.dropout {
        params.drop_threshold = philox::drop_threshold(dropout.p);
        params.drop_scale = 1.0 / (1.0 - dropout.p);
        params.seed_lo = dropout.seed as u32;
        params.seed_hi = (dropout.seed >> 32) as u32;
    }

    // the Hopper kernel (kernels/attention_sm90.cu) takes the one-pass prefills it supports on
    // compute capability 9.0
    let hopper = super::sm90::supports(dtype != DType::F32, prob.d, prob.dropout.is_some())
        && super::sm90::worth_it(prob.nq, prob.nk)
        && crate::testing::hopper_attention()
        && super::sm90::is_sm90(dev)?;
    let numel = prob.b * prob.hq * prob.nq * prob.d;
    let mut out = alloc_output::<T>(dev, numel)?;
    {
        let (o_ptr, _o_guard) = out.device_ptr_mut(&stream);
        params.o = o_ptr;
        match plan {
            Plan::Prefill { splits, .. } if hopper && splits.num_splits == 1 => {
                super::sm90::launch(dev, &stream, &params, prob, suffix)?;
            }
            Plan::Prefill { head_dim, block, splits } => {
                let name = format!(
                    "attn_prefill_{suffix}_d{head_dim}_w{}_m{}_n{}_g{}",
                    block.warps, block.m_tiles, block.block_n, block.kv_groups
                );
                let func = load_func(dev, "attention", ptx::ATTENTION, &name)?;
                let smem = block.smem_bytes(head_dim, elem as usize);
                ensure_smem(&func, smem)?;
                params.num_splits = splits.num_splits as i32;
                params.keys_per_split = splits.keys_per_split as i32;
                let q_blocks = prob.nq.div_ceil(block.block_m());
                if q_blocks > MAX_GRID_YZ {
                    bail!(
                        "fused_attention: Nq={} needs {q_blocks} query blocks, over the CUDA grid limit {MAX_GRID_YZ}",
                        prob.nq
                    );
                }
                let cfg = LaunchConfig {
                    // x: (batch, split, head) with the head fastest; y: query blocks (see attn_prefill)
                    grid_dim: ((prob.b * splits.num_splits * prob.hq) as u32, q_blocks as u32, 1),
                    block_dim: (block.threads() as u32, 1, 1),
                    shared_mem_bytes: smem as u32,
                };
                if splits.num_splits == 1 {
                    launch(&stream, &func, &params, cfg)?;
                } else {
                    with_partials(dev, &stream, suffix, prob, splits.num_splits, &mut params, |params| {
                        launch(&stream, &func, params, cfg)
                    })?;
                }
            }
            Plan::Decode { head_dim, splits } => {
                params.num_splits = splits.num_splits as i32;
                params.keys_per_split = splits.keys_per_split as i32;
                let cfg = LaunchConfig {
                    // x: splits, y: the (batch, head) row (B*Hq checked above)
                    grid_dim: (splits.num_splits as u32, (prob.b * prob.hq) as u32, 1),
                    block_dim: (config::THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                let func = decode_func(dev, dtype, suffix, head_dim)?;
                if splits.num_splits == 1 {
                    launch(&stream, &func, &params, cfg)?;
                } else {
                    // One launch: the last split of each row merges the row (kernels/attention_decode.cu).
                    let rows = prob.b * prob.hq;
                    static SCRATCH: OnceLock<Mutex<HashMap<DeviceId, Option<DecodeScratch>>>> = OnceLock::new();
                    // Held through the launch: launches on this device's stream share the scratch in
                    // stream order.
                    let mut scratch = SCRATCH.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
                    let partial_len = splits.num_splits * rows * (prob.d + 1);
                    let scratch = DecodeScratch::ensure(scratch.entry(dev.id()).or_default(), dev, rows, partial_len)?;
                    params.counters = scratch.counters_ptr;
                    params.o_partial = scratch.partial_ptr;
                    let o_len = splits.num_splits * rows * prob.d;
                    params.lse_partial = scratch.partial_ptr + (o_len * std::mem::size_of::<f32>()) as u64;
                    launch(&stream, &func, &params, cfg)?;
                }
            }
            Plan::SplitKv { head_dim, splits } => {
                params.num_splits = splits.num_splits as i32;
                params.keys_per_split = splits.keys_per_split as i32;
                let cfg = LaunchConfig {
                    grid_dim: (
                        prob.nq.div_ceil(config::SPLITKV_QROWS) as u32,
                        splits.num_splits as u32,
                        (prob.b * prob.hq) as u32,
                    ),
                    block_dim: (config::THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                let func = load_func(dev, "attention", ptx::ATTENTION, &format!("attn_splitkv_{suffix}_d{head_dim}"))?;
                if splits.num_splits == 1 {
                    launch(&stream, &func, &params, cfg)?;
                } else {
                    with_partials(dev, &stream, suffix, prob, splits.num_splits, &mut params, |params| {
                        launch(&stream, &func, params, cfg)
                    })?;
                }
            }
        }
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(prob.out_dims().to_vec())))
}
