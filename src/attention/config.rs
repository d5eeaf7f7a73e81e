//! Which CUDA kernel runs a call and with what split: pure functions of the shapes and the SM
//! count, so they are unit-tested without a GPU. The constants mirror the traits structs of
//! `kernels/attention.cu` and `kernels/attention_decode.cu`.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

/// Head dims with tensor-core prefill instances (`attn_prefill_<dtype>_d<HD>_...`); a call runs
/// the smallest one `>= D`, zero-padding D (64, 80, 96 and 128 run unpadded).
pub(crate) const PREFILL_HEAD_DIMS: [usize; 9] = [32, 48, 64, 80, 96, 128, 160, 192, 256];
/// Head-dim capacities of the split-KV instances (`attn_splitkv_<dtype>_d<HD>`) and of the
/// one-query decode instances (`attn_decode_<dtype>_d<HD>`).
pub(crate) const SPLITKV_HEAD_DIMS: [usize; 4] = [32, 64, 128, 256];
/// Rows of one m16 mma tile; a prefill warp owns `m_tiles` of them.
pub(crate) const MMA_M: usize = 16;
/// Warps over the query rows of a prefill block (in each KV group).
pub(crate) const PREFILL_WARPS: usize = 4;
/// Largest instance head dim with 32-rows-per-warp (`m_tiles = 2`) and two-KV-group prefill
/// blocks: beyond, their accumulators would not fit in registers.
pub(crate) const PREFILL_M2_MAX_HEAD_DIM: usize = 128;
/// Threads of a split-KV, decode or combine block.
pub(crate) const THREADS: u32 = 128;
/// Output rows per combine block (one per warp).
pub(crate) const COMBINE_ROWS: usize = 4;
/// Warps of a decode block (`DecodeTraits::WARPS`).
pub(crate) const DECODE_WARPS: usize = 4;
/// 16-byte K and V loads per lane in one decode warp step (`DecodeTraits::LOADS`).
pub(crate) const DECODE_LOADS: usize = 8;
/// Query rows per split-KV block (one per warp in its softmax phase).
pub(crate) const SPLITKV_QROWS: usize = 4;
/// Keys per split-KV tile; splits are whole tiles.
pub(crate) const SPLITKV_TILE_N: usize = 64;
/// Queries up to this run the split-KV (decode) kernel; more run the prefill kernel (f16/bf16).
pub(crate) const DECODE_MAX_NQ: usize = 16;
/// Upper bound on KV splits: the combine's work and the partial buffers grow with it; the combine
/// kernel (and the decode kernel's merge) holds two splits' log-sum-exps per lane.
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

/// One prefill block shape, an instance
/// `attn_prefill_<dtype>_d<HD>_w<warps>_m<m_tiles>_n<block_n>_g<kv_groups>` (`PrefillTraits` in
/// kernels/attention.cu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrefillBlock {
    /// Warps over the query rows (in each KV group).
    pub warps: usize,
    /// m16 tiles per warp: 2 (32 rows) reuses each K/V fragment loaded from shared memory twice.
    pub m_tiles: usize,
    /// Keys per tile.
    pub block_n: usize,
    /// Groups of `warps` warps that walk alternate key tiles of the same rows and merge in the
    /// block (1, or 2 with `m_tiles = 1` up to D = 128, or 4 at D = 64).
    pub kv_groups: usize,
}

impl PrefillBlock {
    /// 16 rows per warp, one KV group: instanced for every head dim.
    fn base(head_dim: usize) -> Self {
        let block_n = if head_dim <= 128 { 64 } else { 32 };
        Self { warps: PREFILL_WARPS, m_tiles: 1, block_n, kv_groups: 1 }
    }

    /// Query rows per block.
    pub fn block_m(&self) -> usize {
        self.warps * self.m_tiles * MMA_M
    }

    /// Threads per block.
    pub fn threads(&self) -> usize {
        self.warps * self.kv_groups * 32
    }

    /// Dynamic shared memory (`PrefillTraits::SMEM_BYTES`): the Q tile and `STAGES` pipeline
    /// stages of one K and one V tile per KV group, rows padded by 8 elements.
    pub fn smem_bytes(&self, head_dim: usize, elem_bytes: usize) -> usize {
        let stages = if head_dim <= 64 { 3 } else { 2 };
        (self.block_m() + stages * self.kv_groups * 2 * self.block_n) * (head_dim + 8) * elem_bytes
    }

    /// Blocks an SM holds at once: 32-row warps take about 240 registers a thread (2 blocks of
    /// 128 threads), 16-row warps about 150 and shared memory for 3, two or four KV groups the
    /// shared memory (D <= 64) or registers of one.
    pub fn resident_per_sm(&self) -> usize {
        if self.kv_groups >= 2 {
            1
        } else if self.m_tiles >= 2 {
            2
        } else {
            3
        }
    }
}

/// Two KV groups need at least one key tile each.
pub(crate) const PREFILL_KV_GROUP_MIN_TILES: usize = 2;
/// Four KV groups (16 warps, the only D = 64 instance) take walks of at least this many tiles.
/// At 8 tiles the evidence is mixed (H100): [1,8,512,64] 13.5 vs 14.0 µs with two groups in one
/// tuning run (median of 3), but 14.8 µs (criterion, wide interval) in the next; not taken.
pub(crate) const PREFILL_FOUR_GROUP_MIN_TILES: usize = 16;
/// The head dim with a four-KV-group instance: its 512 threads get 128 registers each, enough for
/// 16-row warps at D = 64.
pub(crate) const PREFILL_FOUR_GROUP_HEAD_DIM: usize = 64;

/// Picks the prefill block. Measured on an H100 (f16, causal, µs per call, one run):
/// - 32-row warps pay only where tensor-core throughput bounds a grid of several waves
///   ([1,32,4096,128]: 580 vs 748); at D = 64 16-row warps are as fast or faster everywhere
///   ([16,8,512,64] 36 vs 37, [4,8,512,64] 17 vs 23), their shorter per-tile latency counts more.
/// - A grid whose blocks fit on the SMs is bound by its longest serial walk over the key tiles;
///   two KV groups halve it inside the block ([1,8,512,64] 13.9 vs 14.8, [1,8,2048,64] 44.5 vs
///   51.1 with a two-way split, [1,8,2048,128] 60.1 vs 76.5) unless the walks are short for a grid
///   of two blocks per SM ([4,8,512,64], 8 tiles: 18.1 vs 16.8); at D = 64 four groups quarter it
///   where the walks are long ([1,8,1024,64] 20.7 vs 23.4, [1,8,2048,64] 40.1 vs 44.5).
pub(crate) fn choose_prefill_block(
    head_dim: usize,
    b: usize,
    hq: usize,
    nq: usize,
    nk: usize,
    sm: usize,
) -> PrefillBlock {
    let base = PrefillBlock::base(head_dim);
    if head_dim > PREFILL_M2_MAX_HEAD_DIM {
        return base;
    }
    let wide = PrefillBlock { m_tiles: 2, block_n: if head_dim <= 96 { 64 } else { 32 }, ..base };
    if head_dim > 64 && b * hq * nq.div_ceil(wide.block_m()) >= wide.resident_per_sm() * sm {
        return wide;
    }
    let blocks = b * hq * nq.div_ceil(base.block_m());
    let tiles = nk.div_ceil(base.block_n);
    let one_per_sm = blocks <= sm && tiles >= PREFILL_KV_GROUP_MIN_TILES;
    let long_walks = blocks <= 2 * sm && tiles >= PREFILL_LONG_WALK_TILES;
    if one_per_sm || long_walks {
        let four = head_dim == PREFILL_FOUR_GROUP_HEAD_DIM && tiles >= PREFILL_FOUR_GROUP_MIN_TILES;
        return PrefillBlock { kv_groups: if four { 4 } else { 2 }, ..base };
    }
    base
}

/// The kernel family for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Tensor-core FlashAttention-2 prefill, instance head dim `head_dim`; with
    /// `splits.num_splits > 1` the keys are split as in split-KV (+ combine).
    Prefill { head_dim: usize, block: PrefillBlock, splits: SplitPlan },
    /// SIMT split-KV kernel (+ combine when `splits.num_splits > 1`).
    SplitKv { head_dim: usize, splits: SplitPlan },
    /// One query row (f16/bf16): the warp-per-key-batch decode kernel, one launch (with splits,
    /// the last split of each row merges the row: kernels/attention_decode.cu).
    Decode { head_dim: usize, splits: SplitPlan },
}

/// A prefill split gets at least this many tiles per KV group: fewer would not pay for the
/// combine kernel.
pub(crate) const PREFILL_MIN_TILES_PER_SPLIT: usize = 4;
/// Splitting pays when the splits fit beside the blocks, or when the walk is at least this long:
/// [4,8,512,64] (256 blocks, 8 tiles) went 24 -> 33 µs split in two, [1,8,2048,64] (256 blocks,
/// 32 tiles) 80 -> 64 µs (H200, benches/attention).
pub(crate) const PREFILL_LONG_WALK_TILES: usize = 16;

/// Splits the keys of a prefill whose `blocks` all fit on the GPU at once (`resident_per_sm`
/// each SM): such a call is bound by its longest block's serial walk over the key tiles (the
/// last query block when causal), so splitting the walk shortens it; the partials are merged like
/// split-KV's. Blocks with two KV groups split only where the splits fit beside them:
/// [1,8,1024,64] (128 of them, 16 tiles) ran 27.0 µs split in two, 23.4 not (H100).
pub(crate) fn choose_prefill_splits(blocks: usize, nk: usize, block: &PrefillBlock, sm_count: usize) -> SplitPlan {
    let block_n = block.block_n;
    let tiles = nk.div_ceil(block_n).max(1);
    let resident = block.resident_per_sm() * sm_count.max(1);
    let room_for_two = 2 * blocks <= resident;
    let long_walk = tiles >= PREFILL_LONG_WALK_TILES && block.kv_groups == 1;
    let splits = if blocks >= resident || !(room_for_two || long_walk) {
        1
    } else {
        let min_tiles = PREFILL_MIN_TILES_PER_SPLIT * block.kv_groups;
        tiles.div_ceil(min_tiles).min(resident.div_ceil(blocks.max(1))).clamp(1, MAX_SPLITS)
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

/// Keys a decode block covers in one step of its warps (`DecodeTraits::KEYS_PER_ROUND`): each
/// warp load covers `32 / (HD / 8)` keys.
pub(crate) fn decode_keys_per_round(head_dim: usize) -> usize {
    DECODE_WARPS * DECODE_LOADS * (32 / (head_dim / 8))
}

/// Splits the `nk` keys of `rows` one-query rows for the decode kernel as `choose_splits` does
/// (measured on an H100, [1,32,1,128], µs per call with the merge in the launch: Nk = 512 in 8
/// splits 9.2, 4: 10.1, 1: 14.3; Nk = 2048 in 16: 13.9, 8: 15.1, 32: 18.6; Nk = 8192 in 16: 53.4,
/// 8: 53.3, 32: 55.1, 64: 57.6),
/// in whole rounds of its warps, so every warp of a split but the last gets the same keys.
pub(crate) fn choose_decode_splits(rows: usize, nk: usize, head_dim: usize, sm_count: usize) -> SplitPlan {
    let round = decode_keys_per_round(head_dim);
    let rounds = nk.div_ceil(round).max(1);
    let wanted = (TARGET_BLOCKS_PER_SM * sm_count.max(1)).div_ceil(rows.max(1));
    let splits = wanted.clamp(1, MAX_SPLITS).min(rounds);
    let keys_per_split = rounds.div_ceil(splits) * round;
    SplitPlan { num_splits: nk.div_ceil(keys_per_split).max(1), keys_per_split }
}

/// Picks the kernel: f16/bf16 with more than `DECODE_MAX_NQ` queries take the tensor-core
/// prefill, with one query the decode kernel; other decode-sized queries and every f32 call take
/// split-KV.
pub(crate) fn choose_plan(is_f32: bool, b: usize, hq: usize, nq: usize, nk: usize, d: usize, sm: usize) -> Plan {
    if !is_f32 && nq > DECODE_MAX_NQ {
        let head_dim = instance_dim(&PREFILL_HEAD_DIMS, d);
        let block = choose_prefill_block(head_dim, b, hq, nq, nk, sm);
        let blocks = b * hq * nq.div_ceil(block.block_m());
        let splits = choose_prefill_splits(blocks, nk, &block, sm);
        return Plan::Prefill { head_dim, block, splits };
    }
    if !is_f32 && nq == 1 {
        let head_dim = instance_dim(&SPLITKV_HEAD_DIMS, d);
        return Plan::Decode { head_dim, splits: choose_decode_splits(b * hq, nk, head_dim, sm) };
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
            Plan::Prefill { head_dim, block, splits } => {
                (head_dim, block.m_tiles, block.block_n, block.kv_groups, splits.num_splits, splits.keys_per_split)
            }
            p => panic!("{p:?}"),
        };
        // [1, 8, 512, 64]: 64 blocks, one per SM: two KV groups halve the 8-tile walk, no split
        assert_eq!(prefill(choose_plan(false, 1, 8, 512, 512, 64, H100_SMS)), (64, 1, 64, 2, 1, 512));
        assert_eq!(prefill(choose_plan(false, 1, 8, 17, 512, 80, H100_SMS)), (80, 1, 64, 2, 1, 512));
        assert_eq!(prefill(choose_plan(false, 1, 8, 17, 100, 40, H100_SMS)), (48, 1, 64, 2, 1, 128));
        // no KV-group instance above D = 128: splits instead
        assert_eq!(prefill(choose_plan(false, 1, 8, 17, 512, 136, H100_SMS)), (160, 1, 32, 1, 4, 128));
        // more blocks than fit at once: no split
        assert_eq!(prefill(choose_plan(false, 16, 8, 512, 512, 64, H100_SMS)), (64, 1, 64, 1, 1, 512));
        assert_eq!(prefill(choose_plan(false, 4, 8, 512, 512, 64, H100_SMS)), (64, 1, 64, 1, 1, 512));
        // several waves at D = 128: 32-row warps
        assert_eq!(prefill(choose_plan(false, 1, 32, 4096, 4096, 128, H100_SMS)), (128, 2, 32, 1, 1, 4096));
        // [1, 8, 2048, 128]: 256 blocks, two per SM, walks of up to 32 tiles: two KV groups
        assert_eq!(prefill(choose_plan(false, 1, 8, 2048, 2048, 128, H100_SMS)), (128, 1, 64, 2, 1, 2048));
        // D = 64 walks of 16+ tiles: four KV groups
        assert_eq!(prefill(choose_plan(false, 1, 8, 2048, 2048, 64, H100_SMS)), (64, 1, 64, 4, 1, 2048));
        assert_eq!(prefill(choose_plan(false, 1, 8, 1024, 1024, 64, H100_SMS)), (64, 1, 64, 4, 1, 1024));
        assert_eq!(prefill(choose_plan(false, 1, 2, 1000, 1000, 64, H100_SMS)), (64, 1, 64, 4, 1, 1024));
        // shorter walks, or another head dim: two
        assert_eq!(prefill(choose_plan(false, 1, 8, 900, 900, 64, H100_SMS)), (64, 1, 64, 2, 1, 960));
        assert_eq!(prefill(choose_plan(false, 1, 8, 1024, 1024, 48, H100_SMS)).3, 2);
        // one tile: one group
        assert_eq!(prefill(choose_plan(false, 1, 8, 64, 64, 64, H100_SMS)), (64, 1, 64, 1, 1, 64));
        // 512 blocks at D = 128, fewer than two waves of 32-row blocks: 16-row ones
        assert_eq!(prefill(choose_plan(false, 1, 32, 1024, 1024, 128, H100_SMS)), (128, 1, 64, 1, 1, 1024));
        // keys not a multiple of the tile: the splits still cover them
        assert_eq!(prefill(choose_plan(false, 1, 1, 100, 1000, 64, H100_SMS)), (64, 1, 64, 4, 1, 1024));
        assert_eq!(prefill(choose_plan(false, 1, 1, 100, 3000, 64, H100_SMS)), (64, 1, 64, 4, 3, 1024));
        assert_eq!(prefill(choose_plan(false, 1, 1, 100, 1000, 80, H100_SMS)), (80, 1, 64, 2, 2, 512));
        assert!(matches!(choose_plan(false, 1, 32, 2, 8192, 128, H100_SMS), Plan::SplitKv { head_dim: 128, .. }));
        assert!(matches!(choose_plan(true, 1, 32, 1, 8192, 128, H100_SMS), Plan::SplitKv { head_dim: 128, .. }));
        assert_eq!(
            choose_plan(false, 1, 32, 1, 8192, 128, H100_SMS),
            Plan::Decode { head_dim: 128, splits: SplitPlan { num_splits: 16, keys_per_split: 512 } }
        );
        assert!(matches!(choose_plan(false, 3, 12, 1, 100, 96, H100_SMS), Plan::Decode { head_dim: 128, .. }));
        assert!(matches!(choose_plan(true, 1, 8, 512, 512, 80, H100_SMS), Plan::SplitKv { head_dim: 128, .. }));
        assert!(matches!(choose_plan(true, 1, 8, 512, 512, 256, H100_SMS), Plan::SplitKv { head_dim: 256, .. }));
    }

    #[test]
    fn decode_splits_cover_all_keys_with_whole_rounds() {
        assert_eq!(
            [32, 64, 128, 256].map(decode_keys_per_round),
            [256, 128, 64, 32],
            "4 warps x 8 loads x keys per warp load"
        );
        for rows in [1, 7, 32, 132, 1000] {
            for nk in [1, 31, 63, 64, 65, 500, 4097, 8192, 100_000] {
                for d in SPLITKV_HEAD_DIMS {
                    let s = choose_decode_splits(rows, nk, d, H100_SMS);
                    assert!(s.num_splits >= 1 && s.num_splits <= MAX_SPLITS, "{s:?}");
                    assert_eq!(s.keys_per_split % decode_keys_per_round(d), 0, "{s:?}");
                    assert!(s.num_splits * s.keys_per_split >= nk, "{s:?} nk={nk}");
                    assert!((s.num_splits - 1) * s.keys_per_split < nk, "empty split: {s:?} nk={nk}");
                }
            }
        }
        // [1, 32, 1, 128] over 512 keys: a split per 64-key round, 256 blocks
        assert_eq!(choose_decode_splits(32, 512, 128, H100_SMS), SplitPlan { num_splits: 8, keys_per_split: 64 });
        // enough rows: one split
        assert_eq!(choose_decode_splits(4 * H100_SMS, 8192, 128, H100_SMS).num_splits, 1);
    }

    #[test]
    fn prefill_splits_cover_all_keys_with_whole_tiles() {
        for blocks in [1, 8, 64, 256, 395, 396, 5000] {
            for nk in [1, 31, 64, 100, 1000, 2048, 4097] {
                for d in [64, 128, 256] {
                    for g in [1, 2, 4] {
                        let block = PrefillBlock { kv_groups: g, ..PrefillBlock::base(d) };
                        let s = choose_prefill_splits(blocks, nk, &block, H100_SMS);
                        assert_eq!(s.keys_per_split % block.block_n, 0, "{s:?}");
                        assert!(s.num_splits * s.keys_per_split >= nk, "{s:?} nk={nk}");
                        assert!((s.num_splits - 1) * s.keys_per_split < nk, "empty split: {s:?} nk={nk}");
                        if blocks >= block.resident_per_sm() * H100_SMS {
                            assert_eq!(s.num_splits, 1);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn prefill_blocks_and_smem() {
        let b64 = choose_prefill_block(64, 1, 8, 512, 512, H100_SMS);
        assert_eq!((b64.block_m(), b64.block_n, b64.threads()), (64, 64, 256));
        assert_eq!(b64.smem_bytes(64, 2), (64 + 3 * 2 * 128) * 72 * 2);
        let b128 = choose_prefill_block(128, 1, 32, 4096, 4096, H100_SMS);
        assert_eq!((b128.block_m(), b128.block_n, b128.threads()), (128, 32, 128));
        assert_eq!(b128.smem_bytes(128, 2), (128 + 2 * 64) * 136 * 2);
        let b64g4 = choose_prefill_block(64, 1, 8, 2048, 2048, H100_SMS);
        assert_eq!((b64g4.block_m(), b64g4.kv_groups, b64g4.threads()), (64, 4, 512));
        assert_eq!(b64g4.smem_bytes(64, 2), (64 + 3 * 4 * 128) * 72 * 2);
        assert!(b64g4.smem_bytes(64, 2) <= 227 * 1024);
        let b256 = choose_prefill_block(256, 1, 8, 512, 512, H100_SMS);
        assert_eq!((b256.block_m(), b256.block_n, b256.kv_groups), (64, 32, 1));
        assert_eq!(b256.smem_bytes(256, 2), (64 + 2 * 64) * 264 * 2);
        // every block any call can get has an instance (see ATTN_PREFILL_ALL) and fits in smem
        for d in PREFILL_HEAD_DIMS {
            for (b, nq) in [(1, 17), (1, 512), (16, 512), (1, 4096), (8, 4096)] {
                let blk = choose_prefill_block(d, b, 32, nq, nq, H100_SMS);
                assert!(blk.smem_bytes(d, 2) <= 227 * 1024, "d={d}");
                assert!(blk.m_tiles == 1 || d <= PREFILL_M2_MAX_HEAD_DIM, "d={d}: no 32-row instance");
                assert!(blk.kv_groups == 1 || (blk.m_tiles == 1 && d <= PREFILL_M2_MAX_HEAD_DIM), "d={d}: {blk:?}");
            }
        }
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
