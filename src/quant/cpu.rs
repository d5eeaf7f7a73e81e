//! CPU kernel of `int4_matmul`: streams the packed words once per block of activation rows and
//! decodes them straight into f32 lanes (AVX2/FMA when the CPU has them, detected at run time;
//! plain Rust otherwise), multithreaded over tiles of 8 output rows. The weight matrix is never
//! dequantized: the activations are permuted once into the packed nibble order instead.
//!
//! Full chunks (4 words per lane) are read 8 bytes (2 words, sub-tiles j and j+1) at a time:
//! each byte widens to one i32 lane, `b & 0x0f` is the low nibble and `b & 0xf0` is 16 × the high
//! nibble, so the activations of high nibbles are stored pre-scaled by 1/16 (exact) and a byte
//! costs one AND, one convert and one FMA per nibble. A tail chunk (K % 128 != 0) is decoded
//! nibble by nibble.

use half::f16;
use rayon::prelude::*;

use super::format::{chunk_words, nibble_k, CHUNK_K, SUBTILE_K, SYMMETRIC_ZERO, TILE_N};
use crate::cpu::CpuFloat;
use crate::Activation;

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
/// Weight of a high nibble read as `b & 0xf0`.
const HI_SCALE: f32 = 1.0 / 16.0;

/// Activations permuted into packed decode order (`xp`), plus the sum of every 32-wide sub-tile.
struct Prepared {
    xp: Vec<f32>,
    xsum: Vec<f32>,
}

/// Index in a chunk's 128 activations of full-chunk decode slot: word pair `jp` (0 or 1 for
/// sub-tiles 2jp, 2jp+1), lane column `t`, nibble half `h` (0 low, 1 high), byte lane `l` (0..8:
/// byte `l % 4` of word `2jp + l / 4`).
#[inline(always)]
const fn full_slot(jp: usize, t: usize, h: usize, l: usize) -> usize {
    ((jp * 4 + t) * 2 + h) * 8 + l
}

fn prepare<T: CpuFloat>(x: &[T], m: usize, k: usize) -> Prepared {
    let mut xp = vec![0f32; m * k];
    let mut xsum = vec![0f32; m * (k / SUBTILE_K)];
    xp.par_chunks_mut(k).zip(xsum.par_chunks_mut(k / SUBTILE_K)).enumerate().for_each(|(row, (xp, xs))| {
        let x = &x[row * k..(row + 1) * k];
        for c in 0..k.div_ceil(CHUNK_K) {
            let (wc, base) = (chunk_words(k, c), CHUNK_K * c);
            let xc = &x[base..];
            let xp = &mut xp[base..];
            if wc == 4 {
                for jp in 0..2 {
                    for t in 0..4 {
                        for h in 0..2 {
                            for l in 0..8 {
                                let (j, p) = (2 * jp + l / 4, 2 * (l % 4) + h);
                                let v = xc[SUBTILE_K * j + nibble_k(p, t)].to_f32();
                                xp[full_slot(jp, t, h, l)] = if h == 1 { v * HI_SCALE } else { v };
                            }
                        }
                    }
                }
            } else {
                for t in 0..4 {
                    for j in 0..wc {
                        for p in 0..8 {
                            xp[(t * wc + j) * 8 + p] = xc[SUBTILE_K * j + nibble_k(p, t)].to_f32();
                        }
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
    // group sizes are powers of two: a shift instead of a division in the hot loop
    let i = (kt >> (w.group_size / SUBTILE_K).trailing_zeros()) * w.n + row;
    (w.scales[i].to_f32(), w.zeros.map_or(SYMMETRIC_ZERO as f32, |z| z[i].to_f32()))
}

/// One tile's scales and `s · z` products as f32, `[group][g]`: converted once per tile instead of
/// once per sub-tile and row in the hot loop.
struct TileScales {
    s: Vec<f32>,
    sz: Vec<f32>,
    /// log2(sub-tiles per group)
    shift: u32,
}

impl TileScales {
    fn new(w: &WeightView, nt: usize, rows: usize) -> Self {
        let groups = w.k / w.group_size;
        let (mut s, mut sz) = (vec![0f32; groups * TILE_N], vec![0f32; groups * TILE_N]);
        for gi in 0..groups {
            for g in 0..rows {
                let (sc, z) = scale_zero(w, nt * TILE_N + g, gi * (w.group_size / SUBTILE_K));
                s[gi * TILE_N + g] = sc;
                sz[gi * TILE_N + g] = sc * z;
            }
        }
        Self { s, sz, shift: (w.group_size / SUBTILE_K).trailing_zeros() }
    }

    /// `(s, s·z)` of tile row `g` for 32-wide sub-tile `kt`.
    #[inline(always)]
    fn get(&self, g: usize, kt: usize) -> (f32, f32) {
        let i = (kt >> self.shift) * TILE_N + g;
        (self.s[i], self.sz[i])
    }
}

/// `y[m, n] = Σ_k x[m, k] ŵ[n, k]`, f32 accumulation, output in `T`.
/// `act(x · Wᵀ + bias)`, the bias (`[N]`) added and the activation applied in f32 before the
/// output's one rounding.
pub(crate) fn matmul<T: CpuFloat>(x: &[T], m: usize, w: &WeightView, bias: Option<&[T]>, act: Activation) -> Vec<T> {
    matmul_with(x, m, w, has_avx2_fma(), bias, act)
}

fn matmul_with<T: CpuFloat>(
    x: &[T],
    m: usize,
    w: &WeightView,
    avx2: bool,
    bias: Option<&[T]>,
    act: Activation,
) -> Vec<T> {
    let (n, k) = (w.n, w.k);
    let prep = prepare(x, m, k);
    let tiles = n.div_ceil(TILE_N);
    // [tile][g][m]: each task owns one tile's outputs.
    let mut out_t = vec![0f32; tiles * TILE_N * m];
    out_t.par_chunks_mut(TILE_N * m).enumerate().for_each(|(nt, out)| {
        let tile = &w.packed[nt * k..(nt + 1) * k];
        let rows = (n - nt * TILE_N).min(TILE_N);
        let ts = TileScales::new(w, nt, rows);
        let mut m0 = 0;
        while m0 < m {
            let mb = (m - m0).min(M_BLOCK);
            match mb {
                1 => tile_block::<1>(w, &ts, &prep, tile, rows, m0, avx2, out),
                2 => tile_block::<2>(w, &ts, &prep, tile, rows, m0, avx2, out),
                3 => tile_block::<3>(w, &ts, &prep, tile, rows, m0, avx2, out),
                _ => tile_block::<4>(w, &ts, &prep, tile, rows, m0, avx2, out),
            }
            m0 += mb;
        }
    });
    let mut y = vec![T::from_f32(0.0); m * n];
    y.par_chunks_mut(n).enumerate().for_each(|(mi, y)| {
        for (row, y) in y.iter_mut().enumerate() {
            let b = bias.map_or(0.0, |b| b[row].to_f32());
            *y = T::from_f32(act.apply_f32(out_t[row * m + mi] + b));
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

/// Dot products of the tile's `rows` output rows with activation rows `m0..m0+MB`, into
/// `out[g * m + m0 + i]` (`out` is the tile's `[8, m]` block).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tile_block<const MB: usize>(
    w: &WeightView,
    ts: &TileScales,
    prep: &Prepared,
    tile: &[u32],
    rows: usize,
    m0: usize,
    avx2: bool,
    out: &mut [f32],
) {
    let k = w.k;
    let m = out.len() / TILE_N;
    let xp: [&[f32]; MB] = std::array::from_fn(|i| &prep.xp[(m0 + i) * k..(m0 + i + 1) * k]);
    let kts = k / SUBTILE_K;
    let xsum: [&[f32]; MB] = std::array::from_fn(|i| &prep.xsum[(m0 + i) * kts..(m0 + i + 1) * kts]);
    let full = k / CHUNK_K;
    let mut acc = [[0f32; MB]; TILE_N];
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: AVX2 and FMA were detected at run time; only the full chunks of `tile` (K
        // words) and of each `xp` row (K floats) are read.
        acc = unsafe { avx2::full_chunks(ts, tile, rows, &xp, &xsum, full) };
    }
    if !avx2 {
        acc = full_chunks_scalar::<MB>(ts, tile, rows, &xp, &xsum, full);
    }
    for g in 0..rows {
        let tail = tail_chunk_scalar::<MB>(ts, k, tile, g, &xp, &xsum);
        for i in 0..MB {
            out[g * m + m0 + i] = acc[g][i] + tail[i];
        }
    }
}

/// Portable kernel for the full chunks: Σ over sub-tiles of `s · (Σ q·x − z · Σ x)`. Chunk-major
/// over the tile's rows, so the packed words stream in memory order.
fn full_chunks_scalar<const MB: usize>(
    ts: &TileScales,
    tile: &[u32],
    rows: usize,
    xp: &[&[f32]; MB],
    xsum: &[&[f32]; MB],
    full: usize,
) -> [[f32; MB]; TILE_N] {
    let mut acc = [[0f32; MB]; TILE_N];
    for c in 0..full {
        for (g, acc) in acc.iter_mut().enumerate().take(rows) {
            let base = CHUNK_K * c + 4 * g * 4;
            for jp in 0..2 {
                let mut d = [[0f32; 2]; MB];
                for t in 0..4 {
                    let words = [tile[base + t * 4 + 2 * jp], tile[base + t * 4 + 2 * jp + 1]];
                    for l in 0..8 {
                        let b = words[l / 4] >> (8 * (l % 4));
                        let (lo, hi) = ((b & 0x0f) as f32, (b & 0xf0) as f32);
                        for mi in 0..MB {
                            let x = &xp[mi][CHUNK_K * c..];
                            d[mi][l / 4] += lo * x[full_slot(jp, t, 0, l)] + hi * x[full_slot(jp, t, 1, l)];
                        }
                    }
                }
                for (mi, d) in d.iter().enumerate() {
                    for (half, d) in d.iter().enumerate() {
                        let kt = 4 * c + 2 * jp + half;
                        let (s, sz) = ts.get(g, kt);
                        acc[mi] += s * d - sz * xsum[mi][kt];
                    }
                }
            }
        }
    }
    acc
}

/// The last chunk when K % 128 != 0 (1..3 words per lane), nibble by nibble.
fn tail_chunk_scalar<const MB: usize>(
    ts: &TileScales,
    k: usize,
    tile: &[u32],
    g: usize,
    xp: &[&[f32]; MB],
    xsum: &[&[f32]; MB],
) -> [f32; MB] {
    let mut acc = [0f32; MB];
    let c = k / CHUNK_K;
    if k % CHUNK_K == 0 {
        return acc;
    }
    let wc = chunk_words(k, c);
    let base = CHUNK_K * c + 4 * g * wc;
    for j in 0..wc {
        let kt = 4 * c + j;
        let (s, sz) = ts.get(g, kt);
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
            acc[mi] += s * d[mi] - sz * xsum[mi][kt];
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{full_slot, TileScales, CHUNK_K, TILE_N};

    /// Same math as `full_chunks_scalar`, 8 bytes (16 nibbles) per step.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn full_chunks<const MB: usize>(
        ts: &TileScales,
        tile: &[u32],
        rows: usize,
        xp: &[&[f32]; MB],
        xsum: &[&[f32]; MB],
        full: usize,
    ) -> [[f32; MB]; TILE_N] {
        let lo_mask = _mm256_set1_epi32(0x0f);
        let hi_mask = _mm256_set1_epi32(0xf0);
        let mut acc = [[_mm256_setzero_ps(); MB]; TILE_N];
        let mut zterm = [[0f32; MB]; TILE_N];
        let words = tile.as_ptr();
        for c in 0..full {
            for g in 0..rows {
                let base = CHUNK_K * c + 4 * g * 4;
                for jp in 0..2 {
                    let mut d = [_mm256_setzero_ps(); MB];
                    for t in 0..4 {
                        // bytes of words (t, 2jp) and (t, 2jp+1): one i32 lane each
                        let p = words.add(base + t * 4 + 2 * jp) as *const __m128i;
                        let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p));
                        let lo = _mm256_cvtepi32_ps(_mm256_and_si256(b, lo_mask));
                        let hi = _mm256_cvtepi32_ps(_mm256_and_si256(b, hi_mask));
                        for mi in 0..MB {
                            let x = xp[mi].as_ptr().add(CHUNK_K * c);
                            d[mi] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x.add(full_slot(jp, t, 0, 0))), d[mi]);
                            d[mi] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x.add(full_slot(jp, t, 1, 0))), d[mi]);
                        }
                    }
                    let kt = 4 * c + 2 * jp;
                    let (s0, sz0) = ts.get(g, kt);
                    let (s1, sz1) = ts.get(g, kt + 1);
                    let sv = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(s0)), _mm_set1_ps(s1), 1);
                    for mi in 0..MB {
                        acc[g][mi] = _mm256_fmadd_ps(d[mi], sv, acc[g][mi]);
                        zterm[g][mi] += sz0 * xsum[mi][kt] + sz1 * xsum[mi][kt + 1];
                    }
                }
            }
        }
        std::array::from_fn(|g| std::array::from_fn(|mi| hsum(acc[g][mi]) - zterm[g][mi]))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::format::{quantize_host, Int4Config};

    /// The portable path and the AVX2 path agree, and both match the dequantized product.
    #[test]
    fn scalar_and_simd_paths_agree() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for (m, n, k, gs, sym) in [(1, 17, 96, 32, false), (5, 9, 384, 128, true), (3, 24, 320, 64, false)] {
            let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let h = quantize_host(&w, n, k, Int4Config { group_size: gs, symmetric: sym }).unwrap();
            let view =
                WeightView { packed: &h.packed, scales: &h.scales, zeros: h.zeros.as_deref(), n, k, group_size: gs };
            let deq: Vec<f32> = dequantize(&view);
            let scalar = matmul_with(&x, m, &view, false, None, Activation::Identity);
            let simd = matmul_with(&x, m, &view, has_avx2_fma(), None, Activation::Identity);
            for mi in 0..m {
                for ni in 0..n {
                    let want: f64 = (0..k).map(|ki| x[mi * k + ki] as f64 * deq[ni * k + ki] as f64).sum();
                    for got in [scalar[mi * n + ni], simd[mi * n + ni]] {
                        assert!((got as f64 - want).abs() < 1e-4, "m={m} n={n} k={k} ({mi},{ni}): {got} vs {want}");
                    }
                }
            }
        }
    }
}
