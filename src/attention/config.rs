//! Which CUDA kernel runs a call and with what split: pure functions of the shapes and the SM
//! count, so they are unit-tested without a GPU. The constants mirror the traits structs of
//! `kernels/attention.cu`.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

/// Head dims with a tensor-core prefill instance (`attn_prefill_<dtype>_d<HD>`); a call runs the
/// smallest one `>= D`, zero-padding D (64, 80, 96 and 128 run unpadded).
pub(crate) const PREFILL_HEAD_DIMS: [usize; 9] = [32, 48, 64, 80, 96, 128, 160, 192, 256];
/// Head-dim capacities of the split-KV instances (`attn_splitkv_<dtype>_d<HD>`).
pub(crate) const SPLITKV_HEAD_DIMS: [usize; 4] = [32, 64, 128, 256];
/// Query rows per prefill warp (one m16 mma tile).
pub(crate) const PREFILL_ROWS_PER_WARP: usize = 16;
/// Warps per prefill block (the `_w4` instances). 8 warps (128 rows, half the K/V re-reads)
/// measured no faster: [1,32,4096,128] 987 vs 922 µs, [16,8,512,64] 55 vs 54 µs (H200).
pub(crate) const PREFILL_WARPS: usize = 4;
/// Threads of a split-KV or combine block.
pub(crate) const THREADS: u32 = 128;
/// Query rows per split-KV block (one per warp in its softmax phase).
pub(crate) const SPLITKV_QROWS: usize = 4;
/// Keys per split-KV tile; splits are whole tiles.
pub(crate) const SPLITKV_TILE_N: usize = 64;
/// Queries up to this run the split-KV (decode) kernel; more run the prefill kernel (f16/bf16).
pub(crate) const DECODE_MAX_NQ: usize = 16;
/// Upper bound on KV splits: the combine kernel's work and the partial buffers grow with it.
pub(crate) const MAX_SPLITS: usize = 64;
/// Split-KV aims for this many blocks per SM, enough loads in flight to stream K/V at full
/// bandwidth with 128-thread blocks.
pub(crate) const TARGET_BLOCKS_PER_SM: usize = 4;

/// How the keys of one (batch, head, query block) are divided among blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SplitPlan {
    pub num_splits: usize,
    /// Multiple of `SPLITKV_TILE_N`; the last split may have fewer keys.
    pub keys_per_split: usize,
}

/// The kernel family for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Tensor-core FlashAttention-2 prefill, instance head dim `head_dim`, `warps` x 16 rows; with
    /// `splits.num_splits > 1` the keys are split as in split-KV (+ combine).
    Prefill { head_dim: usize, warps: usize, splits: SplitPlan },
    /// SIMT split-KV kernel (+ combine when `splits.num_splits > 1`).
    SplitKv { head_dim: usize, splits: SplitPlan },
}

/// Dynamic shared memory of a prefill block (`PrefillTraits::SMEM_BYTES`): the Q tile and
/// `STAGES` pipeline stages of K and V tiles, rows padded by 8 elements.
pub(crate) fn prefill_smem_bytes(head_dim: usize, warps: usize, elem_bytes: usize) -> usize {
    let block_n = prefill_block_n(head_dim);
    let stages = if head_dim <= 64 { 3 } else { 2 };
    (warps * PREFILL_ROWS_PER_WARP + stages * 2 * block_n) * (head_dim + 8) * elem_bytes
}

/// Keys per prefill tile (`PrefillTraits::BLOCK_N`).
pub(crate) fn prefill_block_n(head_dim: usize) -> usize {
    if head_dim <= 128 {
        64
    } else {
        32
    }
}

/// Prefill blocks an SM holds at once (shared memory and registers of the 4-warp variant).
pub(crate) const PREFILL_RESIDENT_PER_SM: usize = 3;
/// A prefill split gets at least this many tiles: fewer would not pay for the combine kernel.
pub(crate) const PREFILL_MIN_TILES_PER_SPLIT: usize = 4;
/// Splitting pays when the splits fit beside the blocks, or when the walk is at least this long:
/// [4,8,512,64] (256 blocks, 8 tiles) went 24 -> 33 µs split in two, [1,8,2048,64] (256 blocks,
/// 32 tiles) 80 -> 64 µs (H200, benches/attention).
pub(crate) const PREFILL_LONG_WALK_TILES: usize = 16;

/// Splits the keys of a prefill whose `blocks` all fit on the GPU at once: such a call is
/// bound by its longest block's serial walk over the key tiles (the last query block when
/// causal), so splitting the walk shortens it; the partials are merged like split-KV's.
pub(crate) fn choose_prefill_splits(blocks: usize, nk: usize, block_n: usize, sm_count: usize) -> SplitPlan {
    let tiles = nk.div_ceil(block_n).max(1);
    let resident = PREFILL_RESIDENT_PER_SM * sm_count.max(1);
    let room_for_two = 2 * blocks <= resident;
    let splits = if blocks >= resident || !(room_for_two || tiles >= PREFILL_LONG_WALK_TILES) {
        1
    } else {
        tiles.div_ceil(PREFILL_MIN_TILES_PER_SPLIT).min(resident.div_ceil(blocks.max(1))).clamp(1, MAX_SPLITS)
    };
    let keys_per_split = tiles.div_ceil(splits) * block_n;
    SplitPlan { num_splits: nk.div_ceil(keys_per_split).max(1), keys_per_split }
}

/// Smallest entry of `dims` that is `>= d` (`d <= 256` is validated before).
fn instance_dim(dims: &[usize], d: usize) -> usize {
    dims.iter().copied().find(|&x| x >= d).unwrap_or(dims[dims.len() - 1])
}

/// Splits the `nk` keys so that `blocks` (batch x heads x query blocks) times the split count
/// fills `sm_count` SMs about `TARGET_BLOCKS_PER_SM` deep, with at least one tile per split.
pub(crate) fn choose_splits(blocks: usize, nk: usize, sm_count: usize) -> SplitPlan {
    let tiles = nk.div_ceil(SPLITKV_TILE_N).max(1);
    let wanted = (TARGET_BLOCKS_PER_SM * sm_count.max(1)).div_ceil(blocks.max(1));
    let splits = wanted.clamp(1, MAX_SPLITS).min(tiles);
    let keys_per_split = tiles.div_ceil(splits) * SPLITKV_TILE_N;
    SplitPlan { num_splits: nk.div_ceil(keys_per_split).max(1), keys_per_split }
}

/// Picks the kernel: f16/bf16 with more than `DECODE_MAX_NQ` queries take the tensor-core
/// prefill; decode-sized queries and every f32 call take split-KV.
pub(crate) fn choose_plan(is_f32: bool, b: usize, hq: usize, nq: usize, nk: usize, d: usize, sm: usize) -> Plan {
    if !is_f32 && nq > DECODE_MAX_NQ {
        let head_dim = instance_dim(&PREFILL_HEAD_DIMS, d);
        let blocks = b * hq * nq.div_ceil(PREFILL_WARPS * PREFILL_ROWS_PER_WARP);
        let splits = choose_prefill_splits(blocks, nk, prefill_block_n(head_dim), sm);
        return Plan::Prefill { head_dim, warps: PREFILL_WARPS, splits };
    }
    let blocks = b * hq * nq.div_ceil(SPLITKV_QROWS);
    Plan::SplitKv { head_dim: instance_dim(&SPLITKV_HEAD_DIMS, d), splits: choose_splits(blocks, nk, sm) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H100_SMS: usize = 132;

    #[test]
    fn splits_cover_all_keys_with_whole_tiles() {
        for blocks in [1, 7, 32, 132, 1000] {
            for nk in [1, 63, 64, 65, 500, 4097, 8192, 100_000] {
                let s = choose_splits(blocks, nk, H100_SMS);
                assert!(s.num_splits >= 1 && s.num_splits <= MAX_SPLITS, "{s:?}");
                assert_eq!(s.keys_per_split % SPLITKV_TILE_N, 0, "{s:?}");
                assert!(s.num_splits * s.keys_per_split >= nk, "{s:?} nk={nk}");
                assert!((s.num_splits - 1) * s.keys_per_split < nk, "empty split: {s:?} nk={nk}");
            }
        }
    }

    #[test]
    fn decode_fills_the_gpu() {
        // [1, 32, 1, 128] over 8192 keys: 32 blocks alone would leave 100 of 132 SMs idle
        let s = choose_splits(32, 8192, H100_SMS);
        assert_eq!(s, SplitPlan { num_splits: 16, keys_per_split: 512 });
        assert!(32 * s.num_splits >= 2 * H100_SMS);
        // short caches: one tile per split at most
        assert_eq!(choose_splits(32, 512, H100_SMS), SplitPlan { num_splits: 8, keys_per_split: 64 });
        assert_eq!(choose_splits(32, 1, H100_SMS).num_splits, 1);
    }

    #[test]
    fn enough_blocks_means_no_split() {
        assert_eq!(choose_splits(4 * H100_SMS, 8192, H100_SMS).num_splits, 1);
        assert_eq!(choose_splits(100_000, 2048, H100_SMS).num_splits, 1);
    }

    #[test]
    fn plan_by_dtype_and_query_length() {
        let prefill = |p| match p {
            Plan::Prefill { head_dim, warps, splits } => (head_dim, warps, splits.num_splits, splits.keys_per_split),
            p => panic!("{p:?}"),
        };
        // [1, 8, 512, 64]: 64 blocks, 8 tiles each at most: 2 splits of 4 tiles
        assert_eq!(prefill(choose_plan(false, 1, 8, 512, 512, 64, H100_SMS)), (64, 4, 2, 256));
        assert_eq!(prefill(choose_plan(false, 1, 8, 17, 512, 80, H100_SMS)), (80, 4, 2, 256));
        assert_eq!(prefill(choose_plan(false, 1, 8, 17, 100, 40, H100_SMS)), (48, 4, 1, 128));
        assert_eq!(prefill(choose_plan(false, 1, 8, 17, 512, 136, H100_SMS)), (160, 4, 4, 128));
        // more blocks than fit at once: no split
        assert_eq!(prefill(choose_plan(false, 16, 8, 512, 512, 64, H100_SMS)), (64, 4, 1, 512));
        assert_eq!(prefill(choose_plan(false, 1, 32, 4096, 4096, 128, H100_SMS)), (128, 4, 1, 4096));
        // [4, 8, 512, 64]: 256 blocks, short walks: a split would not fit beside them
        assert_eq!(prefill(choose_plan(false, 4, 8, 512, 512, 64, H100_SMS)), (64, 4, 1, 512));
        // [1, 8, 2048, 64]: 256 blocks fit at once, walks of up to 32 tiles
        assert_eq!(prefill(choose_plan(false, 1, 8, 2048, 2048, 64, H100_SMS)), (64, 4, 2, 1024));
        // keys not a multiple of the tile: the splits still cover them
        assert_eq!(prefill(choose_plan(false, 1, 1, 100, 1000, 64, H100_SMS)), (64, 4, 4, 256));
        assert!(matches!(choose_plan(false, 1, 32, 1, 8192, 128, H100_SMS), Plan::SplitKv { head_dim: 128, .. }));
        assert!(matches!(choose_plan(true, 1, 8, 512, 512, 80, H100_SMS), Plan::SplitKv { head_dim: 128, .. }));
        assert!(matches!(choose_plan(true, 1, 8, 512, 512, 256, H100_SMS), Plan::SplitKv { head_dim: 256, .. }));
    }

    #[test]
    fn prefill_splits_cover_all_keys_with_whole_tiles() {
        for blocks in [1, 8, 64, 256, 395, 396, 5000] {
            for nk in [1, 31, 64, 100, 1000, 2048, 4097] {
                for block_n in [32, 64] {
                    let s = choose_prefill_splits(blocks, nk, block_n, H100_SMS);
                    assert_eq!(s.keys_per_split % block_n, 0, "{s:?}");
                    assert!(s.num_splits * s.keys_per_split >= nk, "{s:?} nk={nk}");
                    assert!((s.num_splits - 1) * s.keys_per_split < nk, "empty split: {s:?} nk={nk}");
                    if blocks >= PREFILL_RESIDENT_PER_SM * H100_SMS {
                        assert_eq!(s.num_splits, 1);
                    }
                }
            }
        }
    }

    #[test]
    fn prefill_smem() {
        assert_eq!(prefill_smem_bytes(64, 4, 2), (64 + 3 * 128) * 72 * 2);
        assert_eq!(prefill_smem_bytes(128, 4, 2), (64 + 2 * 128) * 136 * 2);
        assert_eq!(prefill_smem_bytes(256, 4, 2), (64 + 2 * 64) * 264 * 2);
        assert!(PREFILL_HEAD_DIMS.iter().all(|&d| prefill_smem_bytes(d, PREFILL_WARPS, 2) <= 227 * 1024));
    }

    #[test]
    fn every_supported_head_dim_has_instances() {
        for d in (32..=256).step_by(8) {
            let p = instance_dim(&PREFILL_HEAD_DIMS, d);
            assert!(p >= d && p % 16 == 0 && p - d <= 56, "d={d} -> {p}");
            assert!(instance_dim(&SPLITKV_HEAD_DIMS, d) >= d);
        }
    }
}
