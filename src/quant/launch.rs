//! Launch shape of the CUDA small-M kernel: a pure function of the problem and the SM count.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use super::format::{CHUNK_K, TILE_N};

/// Warps per block of `int4_gemm_*` (mirrors `GEMM_WARPS` in kernels/int4_gemm.cu).
pub(crate) const GEMM_WARPS: usize = 4;
/// Resident warps per SM to aim for: enough 512-byte loads in flight to saturate HBM.
const TARGET_WARPS_PER_SM: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GemmConfig {
    /// Tiles of 8 output rows per warp: 2 above M=8 (kernel `_m16`) halves the activation reads
    /// per weight byte; 1 otherwise (`_m8`, rows g + 8 of the A fragment are known zero).
    pub tiles_per_warp: usize,
    /// Blocks of 16 activation rows (grid.z).
    pub m_blocks: usize,
    pub blocks_x: usize,
    /// K splits (grid.y); > 1 means f32 partials plus a reduce kernel.
    pub splits: usize,
    pub chunks_per_split: usize,
}

pub(crate) fn choose_gemm_config(m: usize, n: usize, k: usize, sm_count: usize) -> GemmConfig {
    let tiles_per_warp = if m > 8 { 2 } else { 1 };
    let m_blocks = m.div_ceil(16).max(1);
    let warps = n.div_ceil(TILE_N).div_ceil(tiles_per_warp);
    let n_chunks = k.div_ceil(CHUNK_K);
    let wanted = (sm_count.max(1) * TARGET_WARPS_PER_SM).div_ceil(warps * m_blocks).clamp(1, n_chunks);
    let chunks_per_split = n_chunks.div_ceil(wanted);
    GemmConfig {
        tiles_per_warp,
        m_blocks,
        blocks_x: warps.div_ceil(GEMM_WARPS),
        splits: n_chunks.div_ceil(chunks_per_split),
        chunks_per_split,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_mlp_shape_on_h100() {
        // K=4096 -> N=11008, 132 SMs: 1376 warps of one tile, 5 splits of 7 chunks (35 >= 32)
        let c = choose_gemm_config(1, 11008, 4096, 132);
        assert_eq!(c, GemmConfig { tiles_per_warp: 1, m_blocks: 1, blocks_x: 344, splits: 5, chunks_per_split: 7 });
        let c = choose_gemm_config(16, 11008, 4096, 132);
        assert_eq!(c.tiles_per_warp, 2);
        assert!(c.splits * c.chunks_per_split >= 32 && (c.splits - 1) * c.chunks_per_split < 32);
    }

    #[test]
    fn every_split_has_work_and_k_is_covered() {
        for (n, k) in [(1, 32), (17, 96), (100, 4096), (11008, 4096), (4096, 11008), (8, 11040)] {
            for sm in [1, 108, 132] {
                for m in [1, 9, 16, 17, 64] {
                    let c = choose_gemm_config(m, n, k, sm);
                    let chunks = k.div_ceil(CHUNK_K);
                    assert!(c.splits >= 1 && c.splits * c.chunks_per_split >= chunks, "{c:?}");
                    assert!((c.splits - 1) * c.chunks_per_split < chunks, "empty split: {c:?}");
                    assert!(c.blocks_x * GEMM_WARPS * c.tiles_per_warp >= n.div_ceil(TILE_N));
                    assert!(c.m_blocks * 16 >= m && (c.m_blocks - 1) * 16 < m);
                }
            }
        }
    }
}
