//! Launch shapes of the CUDA kernels (the small-M kernel of kernels/int4_gemm.cu, the tensor-core
//! GEMM of kernels/int4_gemm_tc.cu and the Hopper transposed-RS wgmma GEMM of kernels/int4_gemm_rs.cuh): pure
//! functions of the problem and the SM count.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use super::format::{CHUNK_K, SUBTILE_K, TILE_N};

/// Warps per SM below which K is split across blocks (f32 partials + a reduce kernel). Harness
/// (H100, K=4096 -> N=11008): one split beat two (and, in round 1, four) at every M from 1 to 16
/// (round 2, M=1, n2m8x: 13.4 against 18.3 µs), so only grids far below one warp per scheduler split.
const TARGET_WARPS_PER_SM: usize = 8;
/// K chunks per block at most: bounds the block's staged scales (shared memory).
const MAX_CHUNKS_PER_SPLIT: usize = 64;
/// Bytes of one lane's 16-byte chunk load times a warp: one ring stage of one tile.
const STAGE_BYTES: usize = 16 * 32;

/// The `int4_gemm_<dtype>_<variant>_<sym>` kernels (mirrors the instance table of
/// kernels/int4_gemm.cu): tiles of 8 output rows per block, activation rows per 16-row block
/// (8: rows g + 8 of the A fragment are known zero), activations staged in shared memory or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GemmVariant {
    /// Two tiles, up to 8 rows, x read from global memory (through L1).
    N2M8,
    /// Four tiles, up to 16 rows, x read from global memory.
    N4M16,
}

impl GemmVariant {
    pub fn name(self) -> &'static str {
        match self {
            Self::N2M8 => "n2m8",
            Self::N4M16 => "n4m16",
        }
    }
    /// Tiles of 8 output rows per block (`NT`).
    pub fn tiles(self) -> usize {
        match self {
            Self::N2M8 => 2,
            Self::N4M16 => 4,
        }
    }
    /// Activation rows per 16-row block the variant reads.
    #[cfg(test)]
    pub fn rows(self) -> usize {
        match self {
            Self::N2M8 => 8,
            Self::N4M16 => 16,
        }
    }
    /// cp.async ring stages per warp (`DEPTH`). Harness round 4 (H100, K=4096 -> N=11008, kernel
    /// µs, weight from HBM | partly L2-resident): two stages beat four at every M (M=1 11.7-11.8 |
    /// 8.7-8.9 against 12.7 | 9.5; M=16 13.8 | 11.6 against 14.9 | 11.9): a smaller ring leaves room
    /// for more resident blocks, which keep more loads in flight than a deeper ring per warp.
    pub fn depth(self) -> usize {
        2
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GemmConfig {
    pub variant: GemmVariant,
    /// Warps per block; they split the block's K range.
    pub warps: usize,
    /// Blocks of 16 activation rows (grid.z).
    pub m_blocks: usize,
    /// Blocks of `variant.tiles()` tiles (grid.x).
    pub blocks_x: usize,
    /// K splits (grid.y); > 1 means f32 partials plus a reduce kernel.
    pub splits: usize,
    pub chunks_per_split: usize,
}

impl GemmConfig {
    /// Dynamic shared memory of one block (mirrors the layout in kernels/int4_gemm.cu; the entry
    /// points do not stage x, `XS = false`): the warps' rings, then the scales (and zeros) of the
    /// split's groups for the block's columns.
    pub fn smem_bytes(&self, group_size: usize, symmetric: bool) -> usize {
        let nt = self.variant.tiles();
        let ring = self.warps * self.variant.depth() * nt * STAGE_BYTES;
        let groups = self.chunks_per_split * CHUNK_K / SUBTILE_K / (group_size / SUBTILE_K);
        ring + groups * nt * TILE_N * 2 * if symmetric { 1 } else { 2 }
    }
}

/// Variant by activation rows. Harness (H100, K=4096 -> N=11008, kernel µs, weight from HBM |
/// partly L2-resident, round 4's first run, before the prologue fix): x read through L1 (`n2m8`)
/// ties with x staged in shared memory per block (`n2m8x`, 8 KB of x per 32 KB of weight) at M=1
/// from HBM (13.5 | 13.4) and wins once the weight sits in L2 (10.1-10.3 against 10.7-10.9; M=2:
/// 10.2 against 11.5), so n2m8 serves M <= 8; four tiles with 16 rows beat two at M=16 (16.3 |
/// 13.4 against 17.1 | 15.1 with 2 warps, 22.0 | 19.2 with 4). Ring depth 8 and an L2 bulk
/// prefetch of each warp's chunks were slower at every M (M=1 n2m8: 15.5-15.7 | 11.3-11.5 and
/// 16.1-16.3 | 10.3-10.5).
pub(crate) fn choose_gemm_config(m: usize, n: usize, k: usize, sm_count: usize) -> GemmConfig {
    let variant = if m <= 8 { GemmVariant::N2M8 } else { GemmVariant::N4M16 };
    let warps = 4;
    let m_blocks = m.div_ceil(16).max(1);
    let blocks_x = n.div_ceil(TILE_N).div_ceil(variant.tiles());
    let n_chunks = k.div_ceil(CHUNK_K);
    let blocks = blocks_x * m_blocks;
    let wanted = (sm_count.max(1) * TARGET_WARPS_PER_SM).div_ceil(blocks * warps).clamp(1, (n_chunks / warps).max(1));
    let splits = wanted.max(n_chunks.div_ceil(MAX_CHUNKS_PER_SPLIT));
    let chunks_per_split = n_chunks.div_ceil(splits);
    GemmConfig { variant, warps, m_blocks, blocks_x, splits: n_chunks.div_ceil(chunks_per_split), chunks_per_split }
}

/// Bytes of one format tile's chunk (32 lanes x 16 bytes): `TILE_BYTES` in kernels/int4_gemm_tc.cu.
const TC_TILE_BYTES: usize = 32 * 16;
/// Scale groups of one chunk at most (group size 32): `MAX_GROUPS_PER_CHUNK`.
const TC_MAX_GROUPS_PER_CHUNK: usize = CHUNK_K / SUBTILE_K;
/// Chunks of K per split at least: shorter splits spend more on the pipeline's fill and drain
/// (and on the partials) than they gain in blocks.
const TC_MIN_CHUNKS_PER_SPLIT: usize = 4;

/// The `int4_gemm_tc_<dtype>_<variant>_<sym>` kernels (mirrors the instance table of
/// kernels/int4_gemm_tc.cu): block tile of activation rows x output columns, 4 warps side by side
/// along N (a warp: all the block's rows x 32 columns), a 4-stage cp.async pipeline. Harness (H100,
/// K=4096 -> N=11008, kernel µs with this module's splits): M=32 32 rows 20.5 against 64 rows 26.7;
/// M=64 64 rows 27.6 against 32 rows 39.2; 128 x 128 blocks with 8 warps (64 x 32 each) never won,
/// 3 stages instead of 4 were within 1%.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcVariant {
    /// 32 x 128 blocks.
    M32N128,
    /// 64 x 128 blocks.
    M64N128,
}

impl TcVariant {
    pub fn name(self) -> &'static str {
        match self {
            Self::M32N128 => "m32n128w1x4s4",
            Self::M64N128 => "m64n128w1x4s4",
        }
    }
    /// Activation rows per block (`BM`).
    pub fn block_m(self) -> usize {
        match self {
            Self::M32N128 => 32,
            Self::M64N128 => 64,
        }
    }
    /// Output columns per block (`BN`).
    pub fn block_n(self) -> usize {
        128
    }
    /// Threads per block (`WM * WN * 32`).
    pub fn threads(self) -> usize {
        128
    }
    /// cp.async stages (`STAGES`).
    pub fn stages(self) -> usize {
        4
    }
    /// Dynamic shared memory (mirrors `TcSmem`): per stage the x tile `[BM][128]` (2-byte elements),
    /// the `BN / 8` weight tiles, the scales and the zeros `[4][BN]` (f16).
    pub fn smem_bytes(self) -> usize {
        let stage = self.block_m() * CHUNK_K * 2
            + self.block_n() / TILE_N * TC_TILE_BYTES
            + 2 * TC_MAX_GROUPS_PER_CHUNK * self.block_n() * 2;
        self.stages() * stage
    }
    /// Blocks an H100 SM holds at once (shared memory: 72 KB and 104 KB per block; registers:
    /// 141 and 207 per thread with 128 threads, ptxas for sm_90a).
    pub fn blocks_per_sm(self) -> usize {
        match self {
            Self::M32N128 => 3,
            Self::M64N128 => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcConfig {
    pub variant: TcVariant,
    /// Blocks of `block_m` activation rows (grid.x).
    pub m_blocks: usize,
    /// Blocks of `block_n` output columns (grid.y).
    pub n_blocks: usize,
    /// K splits (grid.z); > 1 means f32 partials plus a reduce kernel.
    pub splits: usize,
    pub chunks_per_split: usize,
}

/// Launch shape of the tensor-core GEMM: 32-row blocks up to M=32, else 64-row blocks; a grid of
/// fewer blocks than SMs splits K until it fills the resident slots (at least
/// `TC_MIN_CHUNKS_PER_SPLIT` chunks per split).
pub(crate) fn choose_tc_config(m: usize, n: usize, k: usize, sm_count: usize) -> TcConfig {
    let variant = if m <= 32 { TcVariant::M32N128 } else { TcVariant::M64N128 };
    let m_blocks = m.div_ceil(variant.block_m()).max(1);
    let n_blocks = n.div_ceil(TILE_N).div_ceil(variant.block_n() / TILE_N).max(1);
    let blocks = m_blocks * n_blocks;
    let n_chunks = k.div_ceil(CHUNK_K).max(1);
    let sm_count = sm_count.max(1);
    let wanted = if blocks >= sm_count { 1 } else { sm_count * variant.blocks_per_sm() / blocks };
    let splits = wanted.clamp(1, (n_chunks / TC_MIN_CHUNKS_PER_SPLIT).max(1));
    let chunks_per_split = n_chunks.div_ceil(splits);
    TcConfig { variant, m_blocks, n_blocks, splits: n_chunks.div_ceil(chunks_per_split), chunks_per_split }
}

/// Output features per block of the transposed-RS Hopper GEMM (`BW` in kernels/int4_gemm_rs.cuh: two
/// consumer warpgroups of 64 weight rows).
const RS_BLOCK_W: usize = 128;
/// Staged epilogue row of the RS GEMM (`EPI_STRIDE`: 64 f32 features + 4 pad).
const RS_EPI_STRIDE: usize = 64 + 4;

/// The `int4_gemm_rs_<dtype>_<variant>_<sym>` kernels (mirrors the instance table of
/// kernels/int4_gemm_rs_sm90.cu): y^T = W x^T with the weights as wgmma's register A operand
/// (dequantized by the consumer warpgroups), 128 output features x `tokens` activation rows per
/// block, one producer warp loading x, the packed tiles and the scales by TMA into a `stages`-deep
/// ring of 128-wide K chunks, one block per SM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RsVariant {
    /// 88 tokens: M=256 is 3 token blocks (K=4096 -> N=11008: 258 blocks, 2 waves on 132 SMs).
    T88,
    /// 128 tokens: M=384 is 3 token blocks (258 blocks at N=11008).
    T128,
    /// 176 tokens: M=512 is 3 token blocks (258 blocks at N=11008).
    T176,
    /// 192 tokens (3 stages): M=177..192 in one token block (86 blocks at N=11008: one wave).
    T192,
}

impl RsVariant {
    pub fn name(self) -> &'static str {
        match self {
            Self::T88 => "t88s6",
            Self::T128 => "t128s5",
            Self::T176 => "t176s4",
            Self::T192 => "t192s3",
        }
    }
    /// Activation rows per block (`TN`, the wgmma N).
    pub fn tokens(self) -> usize {
        match self {
            Self::T88 => 88,
            Self::T128 => 128,
            Self::T176 => 176,
            Self::T192 => 192,
        }
    }
    /// Ring stages (`STAGES`).
    pub fn stages(self) -> usize {
        match self {
            Self::T88 => 6,
            Self::T128 => 5,
            Self::T176 => 4,
            Self::T192 => 3,
        }
    }
    /// Threads per block: two consumer warpgroups and one producer warp.
    pub fn threads(self) -> usize {
        256 + 32
    }
    /// Dynamic shared memory (mirrors `RsSmem`): per stage two x boxes `[tokens][64]` (2-byte), the
    /// chunk's 16 packed tiles and the scales and zeros `[4][128]` (f16); the epilogue's f32 staging
    /// `[2][tokens][68]` reuses the ring; the full / empty mbarriers, 1024 bytes of alignment.
    pub fn smem_bytes(self) -> usize {
        let tn = self.tokens();
        let stage = 2 * tn * 128 + RS_BLOCK_W / TILE_N * TC_TILE_BYTES + 2 * TC_MAX_GROUPS_PER_CHUNK * RS_BLOCK_W * 2;
        let epilogue = 2 * tn * RS_EPI_STRIDE * 4;
        (self.stages() * stage).max(epilogue) + 2 * self.stages() * 8 + 1024
    }
    /// Rows of the scales box of the tensor map (128-wide format chunk / group size).
    pub fn scale_rows(group_size: usize) -> usize {
        CHUNK_K / group_size
    }
    /// Output features per block (`BW`: the packed and scale boxes' rows).
    pub fn block_w(self) -> usize {
        RS_BLOCK_W
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RsConfig {
    pub variant: RsVariant,
    /// Blocks of `tokens` activation rows (grid.x).
    pub m_blocks: usize,
    /// Blocks of 128 output features (grid.y).
    pub n_blocks: usize,
}

/// Launch shape of the RS GEMM: the token block with the lowest cost `waves x (tokens + RS_WAVE_COST)`
/// (one block per SM), ties to the wider block (each weight dequantized once per token block).
/// `RS_WAVE_COST` is what a wave costs besides its tokens' tensor-core work, in tokens: the
/// prologue, the epilogue and the dequantization latency the wgmmas do not hide (H100, K=4096 ->
/// N=11008, per call: one wave of 128-token blocks at M=128 30.0 µs, two waves of 88-token blocks at
/// M=192 55.9). K=4096 -> N=11008 on 132 SMs (86 feature blocks): M=128 128 tokens, M=192 192 (one
/// wave), M=256 88 (258 blocks), M=384 128, M=512 and 1024 176. Round 8's harness (M = 128 .. 1024 x
/// K=4096 -> N=11008, K=11008 -> N=4096, K=N=4096) found the fastest of T88 / T128 / T176 at the
/// points this picks them.
pub(crate) fn choose_rs_config(m: usize, n: usize, sm_count: usize) -> RsConfig {
    let n_blocks = n.div_ceil(RS_BLOCK_W).max(1);
    let sm_count = sm_count.max(1);
    let shape = |variant: RsVariant| RsConfig { variant, m_blocks: m.div_ceil(variant.tokens()).max(1), n_blocks };
    let cost = |c: &RsConfig| (c.m_blocks * c.n_blocks).div_ceil(sm_count) * (c.variant.tokens() + RS_WAVE_COST);
    let mut best = shape(RsVariant::T192);
    for v in [RsVariant::T176, RsVariant::T128, RsVariant::T88] {
        let c = shape(v);
        if cost(&c) < cost(&best) {
            best = c;
        }
    }
    best
}

/// A wave's cost besides its tokens, in tokens (see [`choose_rs_config`]).
const RS_WAVE_COST: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_mlp_shape_on_h100() {
        // K=4096 -> N=11008, 132 SMs: 688 blocks of two tiles fill the GPU without a K split
        let c = choose_gemm_config(1, 11008, 4096, 132);
        let want = GemmConfig {
            variant: GemmVariant::N2M8,
            warps: 4,
            m_blocks: 1,
            blocks_x: 688,
            splits: 1,
            chunks_per_split: 32,
        };
        assert_eq!(c, want);
        let c = choose_gemm_config(8, 11008, 4096, 132);
        assert_eq!(c, GemmConfig { variant: GemmVariant::N2M8, ..want });
        let c = choose_gemm_config(16, 11008, 4096, 132);
        assert_eq!(c, GemmConfig { variant: GemmVariant::N4M16, blocks_x: 344, ..want });
        // a small N splits K
        let c = choose_gemm_config(1, 2048, 2048, 132);
        assert_eq!((c.blocks_x, c.splits, c.chunks_per_split), (128, 3, 6));
    }

    #[test]
    fn every_split_has_work_and_k_is_covered() {
        for (n, k) in [(1, 32), (17, 96), (100, 4096), (11008, 4096), (4096, 11008), (8, 11040), (64, 65536)] {
            for sm in [1, 108, 132] {
                for m in [1, 5, 9, 16, 17, 64] {
                    let c = choose_gemm_config(m, n, k, sm);
                    let chunks = k.div_ceil(CHUNK_K);
                    assert!(c.splits >= 1 && c.splits * c.chunks_per_split >= chunks, "{c:?}");
                    assert!((c.splits - 1) * c.chunks_per_split < chunks, "empty split: {c:?}");
                    assert!(c.chunks_per_split <= MAX_CHUNKS_PER_SPLIT, "{c:?}");
                    assert!(c.blocks_x * c.variant.tiles() >= n.div_ceil(TILE_N));
                    assert!((c.blocks_x - 1) * c.variant.tiles() < n.div_ceil(TILE_N));
                    assert!(c.m_blocks * 16 >= m && (c.m_blocks - 1) * 16 < m);
                    assert!(m <= 16 * (c.m_blocks - 1) + c.variant.rows(), "rows of the last block: {c:?}");
                    // what an H100 block can opt in to
                    assert!(c.smem_bytes(32, false) <= 227 * 1024, "{c:?}");
                }
            }
        }
    }

    #[test]
    fn shared_memory_of_the_llama_shape() {
        let c = choose_gemm_config(1, 11008, 4096, 132);
        // 4 warps x 2 stages x 2 tiles x 512 B + 32 groups x 16 columns x 2 B (scales, and zeros
        // when asymmetric)
        assert_eq!(c.smem_bytes(128, true), 8192 + 1024);
        assert_eq!(c.smem_bytes(128, false), 8192 + 2048);
        let c = choose_gemm_config(16, 11008, 4096, 132);
        assert_eq!(c.smem_bytes(128, true), 16384 + 2048);
    }

    #[test]
    fn tc_llama_shapes_on_h100() {
        // K=4096 -> N=11008: 86 column blocks; M=64 splits K in 3 (258 blocks in 264 slots)
        let c = choose_tc_config(64, 11008, 4096, 132);
        let want = TcConfig { variant: TcVariant::M64N128, m_blocks: 1, n_blocks: 86, splits: 3, chunks_per_split: 11 };
        assert_eq!(c, want);
        // M=192: 258 blocks, no split
        let c = choose_tc_config(192, 11008, 4096, 132);
        assert_eq!(c, TcConfig { m_blocks: 3, splits: 1, chunks_per_split: 32, ..want });
        // M=17: 32-row blocks, 396 slots / 86 blocks = 4 splits of 8 chunks
        let c = choose_tc_config(17, 11008, 4096, 132);
        assert_eq!((c.variant, c.m_blocks, c.splits, c.chunks_per_split), (TcVariant::M32N128, 1, 4, 8));
        // K=11008 -> N=4096 (86 chunks): 32 column blocks x 2 row blocks, 4 splits
        let c = choose_tc_config(128, 4096, 11008, 132);
        assert_eq!((c.m_blocks, c.n_blocks, c.splits, c.chunks_per_split), (2, 32, 4, 22));
    }

    #[test]
    fn tc_every_split_has_work_and_the_grid_covers_the_output() {
        for (n, k) in [(1, 32), (9, 96), (100, 4096), (11008, 4096), (4096, 11008), (8, 11040), (1001, 4160)] {
            for sm in [1, 108, 132] {
                for m in [17, 32, 33, 64, 100, 192, 1023] {
                    let c = choose_tc_config(m, n, k, sm);
                    let chunks = k.div_ceil(CHUNK_K);
                    assert!(c.splits >= 1 && c.splits * c.chunks_per_split >= chunks, "{c:?}");
                    assert!((c.splits - 1) * c.chunks_per_split < chunks, "empty split: {c:?}");
                    assert!(c.splits == 1 || c.chunks_per_split >= TC_MIN_CHUNKS_PER_SPLIT, "{c:?}");
                    let (bm, bn) = (c.variant.block_m(), c.variant.block_n());
                    assert!(c.m_blocks * bm >= m && (c.m_blocks - 1) * bm < m, "{c:?}");
                    assert!(c.n_blocks * bn >= n && (c.n_blocks - 1) * bn < n.div_ceil(TILE_N) * TILE_N, "{c:?}");
                }
            }
        }
    }

    #[test]
    fn tc_shared_memory() {
        // 4 stages x (x tile + 16 weight tiles of 512 B + scales and zeros [4][128] f16)
        assert_eq!(TcVariant::M32N128.smem_bytes(), 4 * (32 * 256 + 16 * 512 + 2 * 4 * 128 * 2));
        assert_eq!(TcVariant::M64N128.smem_bytes(), 106_496);
        for v in [TcVariant::M32N128, TcVariant::M64N128] {
            // an H100 SM: 228 KB of shared memory, 1 KB reserved per block
            assert!(v.blocks_per_sm() * (v.smem_bytes() + 1024) <= 228 * 1024, "{v:?}");
        }
    }

    #[test]
    fn rs_config_on_h100() {
        let want = |variant, m_blocks| RsConfig { variant, m_blocks, n_blocks: 86 };
        assert_eq!(choose_rs_config(256, 11008, 132), want(RsVariant::T88, 3));
        assert_eq!(choose_rs_config(384, 11008, 132), want(RsVariant::T128, 3));
        assert_eq!(choose_rs_config(512, 11008, 132), want(RsVariant::T176, 3));
        assert_eq!(choose_rs_config(1024, 11008, 132), want(RsVariant::T176, 6));
        assert_eq!(choose_rs_config(128, 11008, 132), want(RsVariant::T128, 1));
        // one wave of 192-token blocks rather than two of 88
        assert_eq!(choose_rs_config(192, 11008, 132), want(RsVariant::T192, 1));
        assert_eq!(choose_rs_config(177, 11008, 132), want(RsVariant::T192, 1));
        assert_eq!(choose_rs_config(176, 11008, 132), want(RsVariant::T176, 1));
        // N=4096 (32 feature blocks): the harness's fastest variant at each M
        let n4096 = |m| choose_rs_config(m, 4096, 132).variant;
        assert_eq!(
            [128, 256, 384, 512, 1024].map(n4096),
            [RsVariant::T88, RsVariant::T88, RsVariant::T128, RsVariant::T128, RsVariant::T128]
        );
        // a grid below one wave: the narrowest token block (most blocks)
        assert_eq!(choose_rs_config(300, 16, 132), RsConfig { variant: RsVariant::T88, m_blocks: 4, n_blocks: 1 });
        for n in [1, 8, 127, 128, 129, 1000, 11008] {
            for m in [1, 88, 89, 193, 513, 1023] {
                for sm in [1, 108, 132] {
                    let c = choose_rs_config(m, n, sm);
                    let tn = c.variant.tokens();
                    assert!(c.m_blocks * tn >= m && (c.m_blocks - 1) * tn < m.max(1), "{c:?}");
                    assert!(c.n_blocks * 128 >= n && (c.n_blocks - 1) * 128 < n, "{c:?}");
                }
            }
        }
    }

    #[test]
    fn rs_wide_n_shapes() {
        // the shapes of tests/int4.rs `matmul_hopper_rs_wide_n` on 132 SMs
        let c = |m, n| {
            let c = choose_rs_config(m, n, 132);
            (c.variant, c.m_blocks, c.n_blocks)
        };
        assert_eq!(c(100, 11008), (RsVariant::T128, 1, 86));
        assert_eq!(c(190, 11008), (RsVariant::T192, 1, 86));
        assert_eq!(c(185, 11008), (RsVariant::T192, 1, 86));
        assert_eq!(c(512, 11136), (RsVariant::T176, 3, 87));
        assert_eq!(c(520, 11136), (RsVariant::T176, 3, 87));
        assert_eq!(c(1000, 4104), (RsVariant::T128, 8, 33));
        assert_eq!(c(700, 2056), (RsVariant::T128, 6, 17));
        assert_eq!(c(384, 4096), (RsVariant::T128, 3, 32));
    }

    #[test]
    fn rs_shared_memory() {
        // 4 stages x (2 x 176 x 128 x boxes + 16 tiles x 512 B + scales and zeros [4][128] f16)
        assert_eq!(RsVariant::T176.smem_bytes(), 4 * (45056 + 8192 + 2048) + 64 + 1024);
        for v in [RsVariant::T88, RsVariant::T128, RsVariant::T176, RsVariant::T192] {
            // what an H100 block can opt in to (static_assert in RsSmem)
            assert!(v.smem_bytes() <= 227 * 1024, "{v:?}");
            assert_eq!(v.tokens() * 128 % 1024, 0, "{v:?}: 1024-byte swizzle atoms");
        }
    }
}
