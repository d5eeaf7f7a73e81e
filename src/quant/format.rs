//! The packed INT4 format: quantization rule, packed layout, and the exact dequantization.
//!
//! # Quantization rule (per group of `G` consecutive weights along K of one output row `n`)
//!
//! - **symmetric**: `s = round_up_f16(max|w| / 7)`, zero point `z = 8` (implicit, not stored).
//! - **asymmetric**: `lo = min(0, min w)`, `hi = max(0, max w)`, `s = round_up_f16((hi - lo) / 15)`,
//!   `z = round(-lo / s)` (an integer in 0..=15, stored as f16).
//! - every weight: `q = clamp(round(w / s) + z, 0, 15)` (f32 math with the stored f16 `s`;
//!   `round` = half away from zero); a group of zeros has `s = 0`, `q = z`.
//! - dequantized weight: `ŵ = (q - z) · s`, exact in f32 (a 5-bit integer times an f16).
//!
//! `round_up_f16` rounds up to the next f16, so the group's range always fits and no weight is
//! clamped by more than half a step: `|w - ŵ| ≤ s / 2` for every element (the analytical bound
//! the tests check).
//!
//! # Packed layout (`packed`: u32 `[ceil(N/8), K]`)
//!
//! Output rows are grouped into tiles of 8 (`nt = n / 8`, `g = n % 8`; rows past N are padding,
//! q = 0 with no scale). Each tile row holds the tile's 8·K nibbles in K u32 words, in chunks of
//! 128 k (the last chunk may be 32, 64 or 96 wide): chunk `c` has `wc = min(4, K/32 - 4c)`
//! words per lane and starts at word `128·c`. Within a chunk, lane `l = 4·g + t` (t in 0..4, the
//! `mma.sync.m16n8k16` B-fragment owner of row g) owns `wc` consecutive words at
//! `128·c + l·wc + j`, word `j` covering the 32-wide sub-tile `k0 = 128·c + 32·j`, of which it
//! holds the 8 consecutive `k0 + 8·t .. k0 + 8·t + 8`: nibble `p` (bits `4p..4p+4`) holds
//! `k = k0 + 8·t + 2·(p & 3) + (p >> 2)` (even k in the low half-word, odd k in the high one).
//!
//! The MMA's k order is free as long as A and B agree: lane column t's k16 step `s` takes
//! `k0 + 8·t + 4·s .. + 4`, so its A fragment for one word is a single 16-byte load of x.
//!
//! So one 16-byte load per lane of a warp streams 512 contiguous bytes that are exactly the B
//! fragments of 8 `m16n8k16` MMAs, and `(word >> 4i) & 0x000f000f` yields the f16x2 pair of
//! fragment register `i`. Scales and zeros are f16 `[K/G, N]` (group-major, so the 8 rows of a
//! tile read one 16-byte run per group).

use candle_core::{bail, DType, Device, Result, Tensor};
use half::f16;

/// Output rows per packed tile (the N of one `mma.sync.m16n8k16`).
pub const TILE_N: usize = 8;
/// K values per 16-byte lane load (a chunk of 4 words per lane).
pub const CHUNK_K: usize = 128;
/// K values per packed u32 word of one lane (8 nibbles, two k16 MMA steps).
pub const SUBTILE_K: usize = 32;
/// The version written into saved files; loading any other version is an error. Version 1 (before
/// 2026-11-26) ordered the k of a lane column differently.
pub const FORMAT_VERSION: u32 = 2;
/// Group sizes the format supports.
pub const SUPPORTED_GROUP_SIZES: [usize; 3] = [32, 64, 128];
/// Largest quantized value.
pub const QMAX: u32 = 15;
/// The implicit zero point of symmetric quantization.
pub const SYMMETRIC_ZERO: u32 = 8;

/// Quantization settings: group size along K and symmetric / asymmetric zero points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int4Config {
    /// Weights per scale along K: 32, 64 or 128.
    pub group_size: usize,
    /// Symmetric (implicit zero point 8) or asymmetric (a zero point per group).
    pub symmetric: bool,
}

impl Default for Int4Config {
    fn default() -> Self {
        Self { group_size: 128, symmetric: true }
    }
}

impl Int4Config {
    /// Checks the group size and that `k` is a positive multiple of it.
    pub fn validate(&self, k: usize) -> Result<()> {
        if !SUPPORTED_GROUP_SIZES.contains(&self.group_size) {
            bail!("int4: group size {} is not supported (supported: {:?})", self.group_size, SUPPORTED_GROUP_SIZES);
        }
        if k == 0 || k % self.group_size != 0 {
            bail!("int4: K={k} is not a positive multiple of group size {}", self.group_size);
        }
        Ok(())
    }
}

/// Consecutive k of one lane column within a 32-wide sub-tile.
pub(crate) const LANE_K: usize = SUBTILE_K / 4;

/// K offset, within its 32-wide sub-tile, of nibble `p` (0..8) of a word owned by lane column `t`.
#[inline(always)]
pub(crate) const fn nibble_k(p: usize, t: usize) -> usize {
    LANE_K * t + 2 * (p & 3) + (p >> 2)
}

/// Words per lane in chunk `c` of a K-wide row.
#[inline(always)]
pub(crate) fn chunk_words(k: usize, c: usize) -> usize {
    (k / SUBTILE_K - 4 * c).min(4)
}

/// (word index within a tile row, nibble) of element `(g, k)`.
#[inline(always)]
pub(crate) fn locate(k_total: usize, g: usize, k: usize) -> (usize, usize) {
    let c = k / CHUNK_K;
    let kk = k % CHUNK_K;
    let (j, r) = (kk / SUBTILE_K, kk % SUBTILE_K);
    let (t, e) = (r / LANE_K, r % LANE_K);
    let p = (e >> 1) | ((e & 1) << 2);
    let wc = chunk_words(k_total, c);
    (CHUNK_K * c + (4 * g + t) * wc + j, p)
}

/// Smallest f16 ≥ `x` (x ≥ 0, finite).
fn round_up_f16(x: f32) -> f16 {
    let h = f16::from_f32(x);
    if h.to_f32() < x {
        f16::from_bits(h.to_bits() + 1)
    } else {
        h
    }
}

/// Quantizes one group: returns `(s, z)` and writes the codes.
pub(crate) fn quantize_group(w: &[f32], symmetric: bool, q: &mut [u8]) -> Result<(f16, u32)> {
    let (s, z) = if symmetric {
        let a = w.iter().fold(0f32, |a, &v| a.max(v.abs()));
        (round_up_f16(a / 7.0), SYMMETRIC_ZERO)
    } else {
        let lo = w.iter().fold(0f32, |a, &v| a.min(v));
        let hi = w.iter().fold(0f32, |a, &v| a.max(v));
        let s = round_up_f16((hi - lo) / QMAX as f32);
        let z = if s.to_f32() > 0.0 { (-lo / s.to_f32()).round().clamp(0.0, QMAX as f32) as u32 } else { 0 };
        (s, z)
    };
    if !s.is_finite() {
        bail!(
            "int4: a group's range needs a scale beyond f16 (max |w| ≈ {})",
            w.iter().fold(0f32, |a, v| a.max(v.abs()))
        );
    }
    let sf = s.to_f32();
    for (q, &v) in q.iter_mut().zip(w) {
        *q = if sf > 0.0 { ((v / sf).round() + z as f32).clamp(0.0, QMAX as f32) as u8 } else { z as u8 };
    }
    Ok((s, z))
}

/// Host copies of a quantized weight: packed words, scales and zeros (`[K/G, N]`).
pub(crate) struct HostInt4 {
    pub packed: Vec<u32>,
    pub scales: Vec<f16>,
    pub zeros: Option<Vec<f16>>,
}

/// Quantizes a row-major `[n, k]` f32 matrix.
pub(crate) fn quantize_host(w: &[f32], n: usize, k: usize, cfg: Int4Config) -> Result<HostInt4> {
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        bail!("int4: weight element {} (row {}, col {}) is not finite: {}", i, i / k, i % k, w[i]);
    }
    let gs = cfg.group_size;
    let groups = k / gs;
    let tiles = n.div_ceil(TILE_N);
    let mut packed = vec![0u32; tiles * k];
    let mut scales = vec![f16::ZERO; groups * n];
    let mut zeros = (!cfg.symmetric).then(|| vec![f16::ZERO; groups * n]);
    let mut q = vec![0u8; gs];
    for row in 0..n {
        let (nt, g) = (row / TILE_N, row % TILE_N);
        let tile = &mut packed[nt * k..(nt + 1) * k];
        for gi in 0..groups {
            let (s, z) = quantize_group(&w[row * k + gi * gs..row * k + (gi + 1) * gs], cfg.symmetric, &mut q)?;
            scales[gi * n + row] = s;
            if let Some(zs) = zeros.as_mut() {
                zs[gi * n + row] = f16::from_f32(z as f32);
            }
            for (e, &qv) in q.iter().enumerate() {
                let (wi, p) = locate(k, g, gi * gs + e);
                tile[wi] |= (qv as u32) << (4 * p);
            }
        }
    }
    Ok(HostInt4 { packed, scales, zeros })
}

/// Reads the code of element `(row, col)`.
#[inline(always)]
pub(crate) fn code_at(packed: &[u32], k: usize, row: usize, col: usize) -> u32 {
    let (wi, p) = locate(k, row % TILE_N, col);
    (packed[(row / TILE_N) * k + wi] >> (4 * p)) & 0xF
}

/// A weight matrix `[N, K]` (candle `Linear` layout) quantized to INT4; see the module docs of
/// [`crate::quant`] for the format. Tensors live on the device the weight was quantized for.
#[derive(Debug, Clone)]
pub struct Int4Weight {
    pub(crate) packed: Tensor,
    pub(crate) scales: Tensor,
    pub(crate) zeros: Option<Tensor>,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) cfg: Int4Config,
}

impl Int4Weight {
    /// Quantizes `w` (`[N, K]`, any float dtype, any device) with `cfg`; the result lives on
    /// `w`'s device. Quantization itself runs on the CPU (it is done once per model).
    pub fn quantize(w: &Tensor, cfg: Int4Config) -> Result<Self> {
        let (n, k) = match w.dims() {
            &[n, k] => (n, k),
            d => bail!("int4: weight must be 2-D [N, K], got shape {d:?}"),
        };
        if n == 0 {
            bail!("int4: weight has N=0 rows");
        }
        cfg.validate(k)?;
        if !crate::cpu::is_supported_float(w.dtype()) && w.dtype() != DType::F64 {
            return Err(candle_core::Error::UnsupportedDTypeForOp(w.dtype(), "int4 quantize"));
        }
        let host = w.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let h = quantize_host(&host, n, k, cfg)?;
        Self::from_host(h, n, k, cfg, w.device())
    }

    pub(crate) fn from_host(h: HostInt4, n: usize, k: usize, cfg: Int4Config, dev: &Device) -> Result<Self> {
        let groups = k / cfg.group_size;
        let packed = Tensor::from_vec(h.packed, (n.div_ceil(TILE_N), k), dev)?;
        let scales = Tensor::from_vec(h.scales, (groups, n), dev)?;
        let zeros = h.zeros.map(|z| Tensor::from_vec(z, (groups, n), dev)).transpose()?;
        Ok(Self { packed, scales, zeros, n, k, cfg })
    }

    pub(crate) fn to_host(&self) -> Result<HostInt4> {
        let cpu = |t: &Tensor| t.to_device(&Device::Cpu)?.flatten_all();
        Ok(HostInt4 {
            packed: cpu(&self.packed)?.to_vec1::<u32>()?,
            scales: cpu(&self.scales)?.to_vec1::<f16>()?,
            zeros: self.zeros.as_ref().map(|z| cpu(z)?.to_vec1::<f16>()).transpose()?,
        })
    }

    /// The dequantized weight `[N, K]` in f32 (exact: `(q - z) · s`).
    pub fn dequantize(&self) -> Result<Tensor> {
        self.dequantize_to(DType::F32)
    }

    /// The dequantized weight `[N, K]` in `dtype` (f32 exact, f16/bf16 rounded once).
    pub fn dequantize_to(&self, dtype: DType) -> Result<Tensor> {
        super::dequantize_op(self, dtype)
    }

    /// Output features N.
    pub fn out_features(&self) -> usize {
        self.n
    }
    /// Input features K.
    pub fn in_features(&self) -> usize {
        self.k
    }
    /// The quantization settings.
    pub fn config(&self) -> Int4Config {
        self.cfg
    }
    /// The device the tensors live on.
    pub fn device(&self) -> &Device {
        self.packed.device()
    }
    /// Packed codes, u32 `[ceil(N/8), K]` (layout in the module docs).
    pub fn packed(&self) -> &Tensor {
        &self.packed
    }
    /// Scales, f16 `[K/G, N]`.
    pub fn scales(&self) -> &Tensor {
        &self.scales
    }
    /// Zero points, f16 `[K/G, N]` (integers 0..=15), `None` when symmetric.
    pub fn zeros(&self) -> Option<&Tensor> {
        self.zeros.as_ref()
    }
    /// This weight with its tensors on `dev`.
    pub fn to_device(&self, dev: &Device) -> Result<Self> {
        Ok(Self {
            packed: self.packed.to_device(dev)?,
            scales: self.scales.to_device(dev)?,
            zeros: self.zeros.as_ref().map(|z| z.to_device(dev)).transpose()?,
            ..self.clone()
        })
    }
    /// Bytes of packed codes, scales and zeros.
    pub fn size_in_bytes(&self) -> usize {
        self.packed.elem_count() * 4
            + self.scales.elem_count() * 2
            + self.zeros.as_ref().map_or(0, |z| z.elem_count() * 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_a_bijection() {
        for k in [32, 64, 96, 128, 160, 416] {
            let mut seen = vec![false; TILE_N * k];
            for g in 0..TILE_N {
                for col in 0..k {
                    let (w, p) = locate(k, g, col);
                    assert!(w < k && p < 8);
                    assert!(!std::mem::replace(&mut seen[w * 8 + p], true), "k={k} g={g} col={col}");
                }
            }
            assert!(seen.iter().all(|&s| s));
        }
    }

    #[test]
    fn nibble_k_matches_locate() {
        let k = 256;
        for g in 0..TILE_N {
            for col in 0..k {
                let (w, p) = locate(k, g, col);
                let c = w / CHUNK_K;
                let wc = chunk_words(k, c);
                let lane = (w % CHUNK_K) / wc;
                let j = (w % CHUNK_K) % wc;
                assert_eq!(lane / 4, g);
                assert_eq!(CHUNK_K * c + SUBTILE_K * j + nibble_k(p, lane % 4), col);
            }
        }
    }

    #[test]
    fn group_rule() {
        let mut q = [0u8; 4];
        let (s, z) = quantize_group(&[0.0, 0.0, 0.0, 0.0], false, &mut q).unwrap();
        assert_eq!((s.to_f32(), z, q), (0.0, 0, [0; 4]));
        let (s, z) = quantize_group(&[-7.0, 7.0, 0.5, 0.0], true, &mut q).unwrap();
        assert_eq!((s.to_f32(), z, q), (1.0, 8, [1, 15, 9, 8]));
        let (s, z) = quantize_group(&[1.0, 2.0, 3.0, 1.5], false, &mut q).unwrap();
        // range [0, 3] includes 0; 3/15 rounded up to the next f16 is 0.20007..
        assert_eq!((s, z), (f16::from_bits(f16::from_f32(0.2).to_bits() + 1), 0));
        assert!(s.to_f32() > 0.2);
        assert_eq!(q, [5, 10, 15, 7]);
    }
}
