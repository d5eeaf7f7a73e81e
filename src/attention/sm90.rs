//! Hopper (sm_90a) prefill: `kernels/attention_sm90.cu`, FlashAttention-3 style (wgmma with
//! K/V read from 128-byte-swizzled shared memory, P fed from registers; on small D = 64 grids two
//! warpgroups split a block's key tiles and merge in shared memory). Used on compute capability
//! 9.0 GPUs for f16/bf16, D = 64 or 128, no dropout, where the portable planner runs one prefill
//! pass (no key split); everything else keeps `kernels/attention.cu`. The block choice is a pure
//! function, unit-tested here without a GPU.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

/// Head dims with Hopper instances.
pub(crate) const HEAD_DIMS: [usize; 2] = [64, 128];
/// Query rows of one warpgroup (wgmma's M).
pub(crate) const WARPGROUP_ROWS: usize = 64;

/// One instance (the `ATTN_SM90_ALL` list in kernels/attention_sm90.cu):
/// `attn_sm90_<dtype>_d<HD>_w<warpgroups>_n<block_n>_s<stages>_o<overlap>[_g<group_mb>]`, with
/// `key_split` `attn_sm90ks_<dtype>_d<HD>_n<block_n>_s<stages>`, with `tma`
/// `attn_sm90t_<dtype>_d<HD>_w<warpgroups>_n<block_n>_s<stages>` (overlapped; `barrier_free`:
/// `attn_sm90tfz_..._z8`), with `producer` `attn_wst_<dtype>_d<HD>_c<warpgroups>_n<block_n>_s<stages>_p0_k<key_split>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sm90Block {
    /// Warpgroups (of 4 warps) per block, 64 query rows each (with `key_split`: 2, on the same 64
    /// rows).
    pub warpgroups: usize,
    /// Keys per tile (the N of the Q·Kᵀ wgmma).
    pub block_n: usize,
    /// Shared-memory K/V stages (with `key_split`: per warpgroup).
    pub stages: usize,
    /// Q·Kᵀ of tile t issued with P·V of tile t - 1, the softmax overlapping the latter.
    pub overlap: bool,
    /// The block's two warpgroups split its key tiles (even / odd) and merge at the end.
    pub key_split: bool,
    /// Block order in groups of heads whose K and V fit in this many MB (0: heads fastest; the
    /// crate's instances all use 0, other values are harness instances).
    pub group_mb: usize,
    /// Q, K and V loaded by the copy engine (TMA, tensor maps passed as a second parameter), with
    /// separate K and V rings of `stages` tiles; overlapped, no key split.
    pub tma: bool,
    /// With `tma`: no block barrier per step (the last warp done with a K or V stage refills it)
    /// and O rescaled only where a row max grew by more than 2^8 (`softmax_tile_pos`, LAZY = 8).
    pub barrier_free: bool,
    /// With `tma`: warp-specialized, a producer warpgroup (one thread issues the loads) besides the
    /// `warpgroups` consumer warpgroups, which with `key_split` share 64 rows and one ring.
    pub producer: bool,
}

impl Sm90Block {
    /// Query rows per block.
    pub fn block_m(&self) -> usize {
        if self.key_split {
            WARPGROUP_ROWS
        } else {
            self.warpgroups * WARPGROUP_ROWS
        }
    }

    /// Threads per block.
    pub fn threads(&self) -> usize {
        (self.warpgroups + usize::from(self.producer)) * 128
    }

    /// Dynamic shared memory (`Sm90Traits::SMEM_BYTES`, `KsTraits::SMEM_BYTES`): the Q tile,
    /// `stages` K and V tiles (per warpgroup with `key_split`; 16-bit elements) and 1 KB to align
    /// the swizzle atoms.
    pub fn smem_bytes(&self, head_dim: usize) -> usize {
        if self.producer {
            // `WsTraits::SMEM_BYTES`: Q, one ring, the key split's partials (m, l, O of 128 threads)
            let partials = if self.key_split { (head_dim / 2 + 4) * 128 * 4 } else { 0 };
            return (self.block_m() + self.stages * 2 * self.block_n) * head_dim * 2 + partials + 1024;
        }
        let rings = if self.key_split { self.warpgroups } else { 1 };
        (self.block_m() + rings * self.stages * 2 * self.block_n) * head_dim * 2 + 1024
    }

    /// The kernel's entry point for dtype `suffix` ("f16", "bf16").
    pub fn kernel_name(&self, suffix: &str, head_dim: usize) -> String {
        if self.producer {
            return format!(
                "attn_wst_{suffix}_d{head_dim}_c{}_n{}_s{}_p0_k{}",
                self.warpgroups,
                self.block_n,
                self.stages,
                u8::from(self.key_split)
            );
        }
        if self.tma && self.barrier_free {
            return format!(
                "attn_sm90tfz_{suffix}_d{head_dim}_w{}_n{}_s{}_z8",
                self.warpgroups, self.block_n, self.stages
            );
        }
        if self.tma {
            return format!("attn_sm90t_{suffix}_d{head_dim}_w{}_n{}_s{}", self.warpgroups, self.block_n, self.stages);
        }
        if self.key_split {
            return format!("attn_sm90ks_{suffix}_d{head_dim}_n{}_s{}", self.block_n, self.stages);
        }
        let group = if self.group_mb > 0 { format!("_g{}", self.group_mb) } else { String::new() };
        format!(
            "attn_sm90_{suffix}_d{head_dim}_w{}_n{}_s{}_o{}{group}",
            self.warpgroups,
            self.block_n,
            self.stages,
            u8::from(self.overlap)
        )
    }
}

/// Picks the instance. Measured on an H100 (f16, causal, kernel time over back-to-back launches,
/// scripts/attention_sm90_timing.cu; benchmarks/attention-sm90.md):
/// - D = 128: two warpgroups, 128-key tiles, overlapped, everywhere measured ([1,32,4096,128]
///   417-434 µs vs 456.1 not overlapped, 474.9 with 64-key tiles; [4,32,1024,128] 147-150; the
///   round-4 alternatives, a warp-specialized kernel and an L2 head-group block order, were slower);
///   round 5: the same step with TMA loads (`tma`: thread 0 issues them, K and V two tiles ahead):
///   [1,32,4096,128] 291.0 µs vs 425.1 with cp.async, non-causal 528.2 vs 795.9, [4,32,1024,128]
///   111.9 vs 146.8 (one run, 50 launches; sustained runs hit the 700 W cap: ~335).
/// - D = 64, a grid of at most two blocks per SM: bound by its longest walk, which the in-block key
///   split (two warpgroups on 64 rows, 64-key tiles, 4 stages each) halves: [1,8,2048,64] 27.1 µs
///   vs 32.3 for one warpgroup with 128-key tiles, [1,8,1024,64] 14.1 vs 16.2, [1,8,512,64] 9.0 vs
///   10.2, [2,8,512,64] 9.5 vs 10.3 (round 4, one run).
/// - D = 64, larger grids: throughput-bound; three blocks of 64-key tiles per SM pay
///   ([16,8,512,64] 28.7 vs 35.0 with 128-key tiles, 48.6 with the key split).
pub(crate) fn choose_block(head_dim: usize, b: usize, hq: usize, nq: usize, sm: usize) -> Sm90Block {
    let base = Sm90Block {
        warpgroups: 1,
        block_n: 64,
        stages: 3,
        overlap: false,
        key_split: false,
        group_mb: 0,
        tma: false,
        barrier_free: false,
        producer: false,
    };
    if head_dim > 64 {
        return Sm90Block { warpgroups: 2, block_n: 128, overlap: true, tma: true, barrier_free: true, ..base };
    }
    let blocks = b * hq * nq.div_ceil(WARPGROUP_ROWS);
    if blocks <= 2 * sm.max(1) {
        Sm90Block { warpgroups: 2, stages: 6, overlap: true, key_split: true, tma: true, producer: true, ..base }
    } else {
        base
    }
}

/// The cp.async instance taking `block`'s calls where the driver refuses a tensor map: the same
/// block shape, or for the warp-specialized key split the cp.async key split (round 4).
pub(crate) fn without_tma(block: Sm90Block) -> Sm90Block {
    if block.producer {
        Sm90Block { stages: 4, tma: false, producer: false, ..block }
    } else {
        Sm90Block { tma: false, barrier_free: false, ..block }
    }
}

/// Whether the Hopper kernel beats the portable one for this size: not for a single 128-key
/// tile, where the portable kernel was faster at the op level (H100, f16 causal [1,8,128,64]:
/// 9.0 µs vs 7.2 in one run; with this fallback both paths measured 7.47 µs in one run).
pub(crate) fn worth_it(nq: usize, nk: usize) -> bool {
    nq > 128 || nk > 128
}

/// Whether a call with these properties has a Hopper kernel (the device aside).
pub(crate) fn supports(half_precision: bool, head_dim: usize, dropout: bool) -> bool {
    half_precision && HEAD_DIMS.contains(&head_dim) && !dropout
}

#[cfg(feature = "cuda")]
pub(crate) use cuda::{is_sm90, launch};

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{bail, CudaDevice, Result};

    use super::super::cuda::{ensure_smem, launch as launch_params, sm_count, AttnParams, MAX_GRID_YZ};
    use super::super::Problem;
    pub(crate) use crate::cuda::is_sm90;
    use crate::cuda::{load_func, ptx, MapElem};

    /// `tg::attn90::TmaMaps` (kernels/attention_sm90.cuh): the CUtensorMaps of Q, K and V.
    #[repr(C, align(64))]
    #[derive(Clone, Copy)]
    struct TmaMaps {
        q: [u64; 16],
        k: [u64; 16],
        v: [u64; 16],
    }
    const _: () = assert!(std::mem::size_of::<TmaMaps>() == 384, "mirrors tg::attn90::TmaMaps");

    // SAFETY: plain old data with the C layout of `tg::attn90::TmaMaps`.
    unsafe impl DeviceRepr for TmaMaps {}

    /// The tensor map of a `[b, h, n, d]` operand of 16-bit elements at `ptr` (element strides
    /// `[sb, sh, sn]`, D stride 1) as the 4-D tensor (D, N, H, B): boxes of 64 columns x
    /// `box_rows` rows, 128-byte swizzle (the layout the kernels' wgmma descriptors read), zero
    /// fill past N. `None` where the driver refuses it (the caller then takes the cp.async kernel).
    fn tensor_map(ptr: u64, [b, h, n, d]: [usize; 4], [sb, sh, sn]: [i64; 3], box_rows: usize) -> Option<[u64; 16]> {
        // a dim of size 1 is never stepped over: give it a contiguous stride (the driver checks them all)
        let sn = if n == 1 { d as u64 } else { u64::try_from(sn).ok()? };
        let sh = if h == 1 { sn * n as u64 } else { u64::try_from(sh).ok()? };
        let sb = if b == 1 { sh * h as u64 } else { u64::try_from(sb).ok()? };
        let dims = [d as u64, n as u64, h as u64, b as u64];
        let strides = [sn * 2, sh * 2, sb * 2];
        crate::cuda::tensor_map(ptr, MapElem::U16, &dims, &strides, &[64, box_rows as u32, 1, 1], true)
    }

    /// The tensor maps of a call's Q, K and V for `block`, `None` if any is refused.
    fn tensor_maps(params: &AttnParams, prob: &Problem, block: &super::Sm90Block) -> Option<TmaMaps> {
        let p = params;
        Some(TmaMaps {
            q: tensor_map(p.q, [prob.b, prob.hq, prob.nq, prob.d], [p.q_sb, p.q_sh, p.q_sn], block.block_m())?,
            k: tensor_map(p.k, [prob.b, prob.hkv, prob.nk, prob.d], [p.k_sb, p.k_sh, p.k_sn], block.block_n)?,
            v: tensor_map(p.v, [prob.b, prob.hkv, prob.nk, prob.d], [p.v_sb, p.v_sh, p.v_sn], block.block_n)?,
        })
    }

    /// Launches the Hopper prefill for `prob` with `params` (filled by the caller, output
    /// included).
    pub(crate) fn launch(
        dev: &CudaDevice,
        stream: &std::sync::Arc<CudaStream>,
        params: &AttnParams,
        prob: &Problem,
        suffix: &str,
    ) -> Result<()> {
        let mut block = super::choose_block(prob.d, prob.b, prob.hq, prob.nq, sm_count(dev)?);
        let maps = if block.tma { tensor_maps(params, prob, &block) } else { None };
        if block.tma && maps.is_none() {
            block = super::without_tma(block);
        }
        let q_blocks = prob.nq.div_ceil(block.block_m());
        if q_blocks > MAX_GRID_YZ {
            bail!(
                "fused_attention: Nq={} needs {q_blocks} query blocks, over the CUDA grid limit {MAX_GRID_YZ}",
                prob.nq
            );
        }
        let name = block.kernel_name(suffix, prob.d);
        let func = load_func(dev, "attention_sm90", ptx::ATTENTION_SM90, &name)?;
        let smem = block.smem_bytes(prob.d);
        ensure_smem(&func, smem)?;
        let cfg = LaunchConfig {
            // x: (batch, head) with the head fastest; y: query blocks (walked backwards when causal)
            grid_dim: ((prob.b * prob.hq) as u32, q_blocks as u32, 1),
            block_dim: (block.threads() as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        crate::testing::count_hopper_attention_launch();
        match maps {
            Some(maps) => {
                let mut b = stream.launch_builder(&func);
                b.arg(params);
                b.arg(&maps);
                // SAFETY: the TMA entries take `tg::attn::Params` and `tg::attn90::TmaMaps` by
                // value, which `AttnParams` and `TmaMaps` mirror; the maps describe the live Q, K and V
                // buffers the params point to.
                unsafe { b.launch(cfg) }.w()?;
                Ok(())
            }
            None => launch_params(stream, &func, params, cfg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H100_SMS: usize = 132;

    #[test]
    fn blocks_fit_the_kernel_limits() {
        for d in HEAD_DIMS {
            for (b, hq, nq) in [(1, 8, 512), (1, 8, 2048), (16, 8, 512), (1, 32, 4096), (1, 1, 17)] {
                let blk = choose_block(d, b, hq, nq, H100_SMS);
                assert!(blk.smem_bytes(d) <= 227 * 1024, "{blk:?} D={d}");
                assert!(blk.stages >= if blk.overlap { 3 } else { 2 }, "{blk:?}");
                assert_eq!(blk.block_n % 16, 0, "{blk:?}");
                assert!(blk.warpgroups >= 1 && blk.warpgroups <= 2, "{blk:?}");
                assert!(!blk.key_split || (blk.warpgroups == 2 && blk.overlap), "{blk:?}");
                assert!(!blk.tma || (blk.overlap && blk.group_mb == 0), "{blk:?}");
                assert!(!blk.key_split || blk.producer || !blk.tma, "{blk:?}");
                assert!(!(blk.barrier_free || blk.producer) || blk.tma, "{blk:?}");
                let cp = without_tma(blk);
                assert!(!cp.tma && !cp.barrier_free && !cp.producer && cp.block_m() == blk.block_m(), "{blk:?}");
                assert!(cp.smem_bytes(d) <= 227 * 1024, "{cp:?} D={d}");
            }
        }
    }

    #[test]
    fn picks_the_measured_instances() {
        // the shapes
        let name = |d, b, hq, nq| choose_block(d, b, hq, nq, H100_SMS).kernel_name("f16", d);
        assert_eq!(name(128, 1, 32, 4096), "attn_sm90tfz_f16_d128_w2_n128_s3_z8");
        // where the driver refuses a tensor map: the same block with cp.async loads
        let cp = without_tma(choose_block(128, 1, 32, 4096, H100_SMS));
        assert_eq!(cp.kernel_name("f16", 128), "attn_sm90_f16_d128_w2_n128_s3_o1");
        // the round-5 crate instance (TMA, block barriers) still names itself
        let t = Sm90Block { barrier_free: false, ..choose_block(128, 1, 32, 4096, H100_SMS) };
        assert_eq!(t.kernel_name("f16", 128), "attn_sm90t_f16_d128_w2_n128_s3");
        assert_eq!(name(64, 1, 8, 2048), "attn_wst_f16_d64_c2_n64_s6_p0_k1");
        assert_eq!(name(64, 16, 8, 512), "attn_sm90_f16_d64_w1_n64_s3_o0");
        assert_eq!(name(64, 1, 8, 512), "attn_wst_f16_d64_c2_n64_s6_p0_k1");
        let ks = without_tma(choose_block(64, 1, 8, 512, H100_SMS));
        assert_eq!(ks.kernel_name("f16", 64), "attn_sm90ks_f16_d64_n64_s4");
        // up to two blocks of 64 rows per SM: the key split
        assert_eq!(name(64, 1, 8, 2112), "attn_wst_f16_d64_c2_n64_s6_p0_k1");
        assert_eq!(name(64, 1, 8, 2113), "attn_sm90_f16_d64_w1_n64_s3_o0");
        assert_eq!(choose_block(64, 1, 8, 512, H100_SMS).block_m(), 64);
        // the harness-only block order still names its instances
        let g = Sm90Block { group_mb: 16, ..without_tma(choose_block(128, 1, 32, 4096, H100_SMS)) };
        assert_eq!(g.kernel_name("bf16", 128), "attn_sm90_bf16_d128_w2_n128_s3_o1_g16");
    }

    #[test]
    fn shared_memory_mirrors_the_kernels() {
        // Sm90Traits / KsTraits / WsTraits::SMEM_BYTES
        let ws = choose_block(64, 1, 8, 512, H100_SMS);
        assert_eq!(ws.smem_bytes(64), 64 * 64 * 2 + 6 * 2 * 64 * 64 * 2 + (32 + 4) * 128 * 4 + 1024);
        assert_eq!(ws.threads(), 384);
        let ks = without_tma(ws);
        assert_eq!(ks.smem_bytes(64), 64 * 64 * 2 + 2 * 4 * 2 * 64 * 64 * 2 + 1024);
        let d128 = choose_block(128, 1, 32, 4096, H100_SMS);
        assert_eq!(d128.smem_bytes(128), 128 * 128 * 2 + 3 * 2 * 128 * 128 * 2 + 1024);
        let wide = choose_block(64, 16, 8, 512, H100_SMS);
        assert_eq!(wide.smem_bytes(64), 64 * 64 * 2 + 3 * 2 * 64 * 64 * 2 + 1024);
        assert_eq!((ks.threads(), d128.threads(), wide.threads()), (256, 256, 128));
    }

    #[test]
    fn portable_for_one_tile() {
        assert!(!worth_it(128, 128) && !worth_it(17, 17) && !worth_it(1, 100));
        assert!(worth_it(129, 129) && worth_it(512, 512) && worth_it(100, 1000) && worth_it(300, 77));
    }

    #[test]
    fn supports_only_its_dtypes_dims_and_options() {
        assert!(supports(true, 64, false) && supports(true, 128, false));
        assert!(!supports(false, 64, false), "f32");
        assert!(!supports(true, 96, false) && !supports(true, 32, false) && !supports(true, 256, false));
        assert!(!supports(true, 128, true), "dropout");
    }
}
