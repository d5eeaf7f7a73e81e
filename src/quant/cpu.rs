//! CPU kernel of `int4_matmul`: streams the packed words once per block of activation rows,
//! decoding 8 nibbles at a time into f32 lanes (AVX2/FMA when the CPU has them, detected at run
//! time; plain Rust otherwise), multithreaded over tiles of 8 output rows. The weight matrix is
//! never dequantized: activations are permuted once into the packed nibble order instead.

use half::f16;
use rayon::prelude::*;

use super::format::{chunk_words, nibble_k, CHUNK_K, SUBTILE_K, SYMMETRIC_ZERO, TILE_N};
use crate::cpu::CpuFloat;

/// Host view of a quantized weight.
pub(crate) struct WeightView<'a> {
    pub packed: &'a [u32],
    pub scales: &'a [f16],
    pub zeros: Option<&'a [f16]>,
    pub n: usize,
    pub k: usize,
    pub group_size: usize,
}

/// Activation rows decoded together: one decode of a word feeds this many FMAs.
const M_BLOCK: usize = 4;

/// Activations permuted into packed nibble order (`xp`), plus the sum of every 32-wide sub-tile.
struct Prepared {
    xp: Vec<f32>,
    xsum: Vec<f32>,
}

fn prepare<T: CpuFloat>(x: &[T], m: usize, k: usize) -> Prepared {
    let mut xp = vec![0f32; m * k];
    let mut xsum = vec![0f32; m * (k / SUBTILE_K)];
    xp.par_chunks_mut(k).zip(xsum.par_chunks_mut(k / SUBTILE_K)).enumerate().for_each(|(row, (xp, xs))| {
        let x = &x[row * k..(row + 1) * k];
        for c in 0..k.div_ceil(CHUNK_K) {
            let wc = chunk_words(k, c);
            for t in 0..4 {
                for j in 0..wc {
                    let dst = CHUNK_K * c + (t * wc + j) * 8;
                    for p in 0..8 {
                        xp[dst + p] = x[CHUNK_K * c + SUBTILE_K * j + nibble_k(p, t)].to_f32();
                    }
                }
            }
        }
        for (s, x) in xs.iter_mut().zip(x.chunks(SUBTILE_K)) {
            *s = x.iter().map(|v| v.to_f32()).sum();
        }
    });
    Prepared { xp, xsum }
}

/// Scale and zero point of `row` for 32-wide sub-tile `kt`.
#[inline(always)]
fn scale_zero(w: &WeightView, row: usize, kt: usize) -> (f32, f32) {
    let i = (kt * SUBTILE_K / w.group_size) * w.n + row;
    (w.scales[i].to_f32(), w.zeros.map_or(SYMMETRIC_ZERO as f32, |z| z[i].to_f32()))
}

/// `y[m, n] = Σ_k x[m, k] ŵ[n, k]`, f32 accumulation, output in `T`.
pub(crate) fn matmul<T: CpuFloat>(x: &[T], m: usize, w: &WeightView) -> Vec<T> {
    let (n, k) = (w.n, w.k);
    let prep = prepare(x, m, k);
    let tiles = n.div_ceil(TILE_N);
    let avx2 = has_avx2_fma();
    // [tile][g][m]: each task owns one tile's outputs.
    let mut out_t = vec![0f32; tiles * TILE_N * m];
    out_t.par_chunks_mut(TILE_N * m).enumerate().for_each(|(nt, out)| {
        let tile = &w.packed[nt * k..(nt + 1) * k];
        let rows = (n - nt * TILE_N).min(TILE_N);
        let mut m0 = 0;
        while m0 < m {
            let mb = (m - m0).min(M_BLOCK);
            for g in 0..rows {
                let o = &mut out[g * m + m0..g * m + m0 + mb];
                match mb {
                    1 => row_block::<1>(w, &prep, tile, nt * TILE_N + g, m0, avx2, o),
                    2 => row_block::<2>(w, &prep, tile, nt * TILE_N + g, m0, avx2, o),
                    3 => row_block::<3>(w, &prep, tile, nt * TILE_N + g, m0, avx2, o),
                    _ => row_block::<4>(w, &prep, tile, nt * TILE_N + g, m0, avx2, o),
                }
            }
            m0 += mb;
        }
    });
    let mut y = vec![T::from_f32(0.0); m * n];
    y.par_chunks_mut(n).enumerate().for_each(|(mi, y)| {
        for (row, y) in y.iter_mut().enumerate() {
            *y = T::from_f32(out_t[row * m + mi]);
        }
    });
    y
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Dot products of output row `row` with activation rows `m0..m0+MB`.
#[inline(always)]
fn row_block<const MB: usize>(
    w: &WeightView,
    prep: &Prepared,
    tile: &[u32],
    row: usize,
    m0: usize,
    avx2: bool,
    out: &mut [f32],
) {
    let k = w.k;
    let xp: [&[f32]; MB] = std::array::from_fn(|i| &prep.xp[(m0 + i) * k..(m0 + i + 1) * k]);
    let kts = k / SUBTILE_K;
    let xsum: [&[f32]; MB] = std::array::from_fn(|i| &prep.xsum[(m0 + i) * kts..(m0 + i + 1) * kts]);
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: AVX2 and FMA were detected at run time.
        let r = unsafe { avx2::row_dot::<MB>(w, tile, row, &xp, &xsum) };
        out.copy_from_slice(&r);
        return;
    }
    let _ = avx2;
    out.copy_from_slice(&row_dot_scalar::<MB>(w, tile, row, &xp, &xsum));
}

/// The portable kernel: Σ over sub-tiles of `s · (Σ q·x − z · Σ x)`.
fn row_dot_scalar<const MB: usize>(
    w: &WeightView,
    tile: &[u32],
    row: usize,
    xp: &[&[f32]; MB],
    xsum: &[&[f32]; MB],
) -> [f32; MB] {
    let (k, g) = (w.k, row % TILE_N);
    let mut acc = [0f32; MB];
    for c in 0..k.div_ceil(CHUNK_K) {
        let wc = chunk_words(k, c);
        let base = CHUNK_K * c + 4 * g * wc;
        for j in 0..wc {
            let kt = 4 * c + j;
            let (s, z) = scale_zero(w, row, kt);
            let mut d = [0f32; MB];
            for t in 0..4 {
                let word = tile[base + t * wc + j];
                let xo = CHUNK_K * c + (t * wc + j) * 8;
                for p in 0..8 {
                    let q = ((word >> (4 * p)) & 0xF) as f32;
                    for mi in 0..MB {
                        d[mi] += q * xp[mi][xo + p];
                    }
                }
            }
            for mi in 0..MB {
                acc[mi] += s * (d[mi] - z * xsum[mi][kt]);
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{scale_zero, WeightView, CHUNK_K, TILE_N};
    use crate::quant::format::chunk_words;

    /// Same math as `row_dot_scalar`, 8 nibbles per instruction.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_dot<const MB: usize>(
        w: &WeightView,
        tile: &[u32],
        row: usize,
        xp: &[&[f32]; MB],
        xsum: &[&[f32]; MB],
    ) -> [f32; MB] {
        let (k, g) = (w.k, row % TILE_N);
        let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
        let mask = _mm256_set1_epi32(0xF);
        let mut acc = [_mm256_setzero_ps(); MB];
        let mut zterm = [0f32; MB];
        for c in 0..k.div_ceil(CHUNK_K) {
            let wc = chunk_words(k, c);
            let base = CHUNK_K * c + 4 * g * wc;
            for j in 0..wc {
                let kt = 4 * c + j;
                let (s, z) = scale_zero(w, row, kt);
                let mut d = [_mm256_setzero_ps(); MB];
                for t in 0..4 {
                    let word = *tile.get_unchecked(base + t * wc + j);
                    let q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(word as i32), shifts), mask);
                    let qf = _mm256_cvtepi32_ps(q);
                    let xo = CHUNK_K * c + (t * wc + j) * 8;
                    for mi in 0..MB {
                        debug_assert!(xo + 8 <= xp[mi].len());
                        let xv = _mm256_loadu_ps(xp[mi].as_ptr().add(xo));
                        d[mi] = _mm256_fmadd_ps(qf, xv, d[mi]);
                    }
                }
                let sv = _mm256_set1_ps(s);
                for mi in 0..MB {
                    acc[mi] = _mm256_fmadd_ps(d[mi], sv, acc[mi]);
                    zterm[mi] += s * z * *xsum[mi].get_unchecked(kt);
                }
            }
        }
        std::array::from_fn(|mi| hsum(acc[mi]) - zterm[mi])
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// Exact dequantization into `T` (f32 exact; f16/bf16 one rounding), `[n, k]` row-major.
pub(crate) fn dequantize<T: CpuFloat>(w: &WeightView) -> Vec<T> {
    let (n, k) = (w.n, w.k);
    let mut out = vec![T::from_f32(0.0); n * k];
    out.par_chunks_mut(k).enumerate().for_each(|(row, out)| {
        for (col, o) in out.iter_mut().enumerate() {
            let (s, z) = scale_zero(w, row, col / SUBTILE_K);
            let q = super::format::code_at(w.packed, k, row, col) as f32;
            *o = T::from_f32((q - z) * s);
        }
    });
    out
}
