//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
//! counter-based RNG behind attention dropout. `kernels/attention.cuh` has the same function
//! (`tg::attn::philox4x32_10`); the unit tests below pin its outputs (the Random123 known-answer
//! vectors plus dropout draws) so the CPU and CUDA masks stay bit-identical.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9; // golden ratio
const W1: u32 = 0xBB67_AE85; // sqrt(3) - 1
const ROUNDS: usize = 10;

/// Philox4x32 with 10 rounds: four random words from a 128-bit counter and a 64-bit key.
#[inline]
pub fn philox4x32_10(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for round in 0..ROUNDS {
        if round > 0 {
            key[0] = key[0].wrapping_add(W0);
            key[1] = key[1].wrapping_add(W1);
        }
        let p0 = u64::from(M0) * u64::from(ctr[0]);
        let p1 = u64::from(M1) * u64::from(ctr[2]);
        ctr = [((p1 >> 32) as u32) ^ ctr[1] ^ key[0], p1 as u32, ((p0 >> 32) as u32) ^ ctr[3] ^ key[1], p0 as u32];
    }
    ctr
}

/// The random word that decides whether attention weight (query `i`, key `j`) of batch `b`,
/// query head `h` survives dropout: lane `j % 4` of Philox at counter `(j / 4, i, h, b)`, keyed
/// by the seed. Four neighbouring keys share one Philox call (the CUDA kernel uses that).
#[inline]
pub fn dropout_bits(seed: u64, b: u32, h: u32, i: u32, j: u32) -> u32 {
    philox4x32_10([j / 4, i, h, b], [seed as u32, (seed >> 32) as u32])[(j % 4) as usize]
}

/// Bits below this threshold drop the weight: `round(p * 2^32)`, so the kept fraction is `1 - p`
/// to within 2^-32.
pub fn drop_threshold(p: f32) -> u32 {
    (f64::from(p) * 4_294_967_296.0).round().min(f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random123_known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
        assert_eq!(
            philox4x32_10([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    /// The same draws the CUDA test `dropout_mask_matches_cpu` checks end to end: pinned here so a
    /// change of the counter layout on either side is caught without a GPU.
    #[test]
    fn dropout_bits_layout() {
        let seed = 0x0123_4567_89ab_cdef_u64;
        let lanes = philox4x32_10([1, 2, 3, 4], [0x89ab_cdef, 0x0123_4567]);
        for lane in 0..4 {
            assert_eq!(dropout_bits(seed, 4, 3, 2, 4 + lane), lanes[lane as usize]);
        }
        assert_ne!(dropout_bits(seed, 0, 0, 0, 0), dropout_bits(seed + 1, 0, 0, 0, 0));
    }

    #[test]
    fn thresholds() {
        assert_eq!(drop_threshold(0.0), 0);
        assert_eq!(drop_threshold(0.5), 1 << 31);
        assert_eq!(drop_threshold(0.999_999_99), u32::MAX);
    }
}
