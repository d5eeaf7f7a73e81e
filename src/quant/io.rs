//! Safetensors files of INT4 weights.
//!
//! Per layer `NAME`: tensors `NAME.packed` (U32 `[ceil(N/8), K]`), `NAME.scales` (F16 `[K/G, N]`),
//! `NAME.zeros` (F16 `[K/G, N]`, asymmetric only); metadata `NAME.config`
//! (`n=..,k=..,group_size=..,symmetric=..`) and `NAME.checksum` (a 64-bit hash of the three
//! tensors' bytes, so a flipped byte is caught), plus `format=tiny_gemm.int4` and
//! `format_version=2` (version 1 files, an older nibble order, are rejected). Loading checks all of it, the shapes against the config, and the value
//! ranges (scales finite and ≥ 0, zeros integers in 0..=15): a bad file is an error.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{bail, Device, Result};
use half::f16;
use safetensors::{Dtype, SafeTensors};

use super::format::{HostInt4, Int4Config, Int4Weight, FORMAT_VERSION, QMAX, TILE_N};

const FORMAT_NAME: &str = "tiny_gemm.int4";

fn st_err(path: &Path, e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("int4: {}: {e}", path.display()))
}

/// FNV-1a over 64-bit words with an xor-shift per word: every single-word change alters it.
fn checksum(parts: &[&[u8]]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for ch in part.chunks(8) {
            let mut b = [0u8; 8];
            b[..ch.len()].copy_from_slice(ch);
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(PRIME);
            h ^= h >> 29;
        }
        h = (h ^ part.len() as u64).wrapping_mul(PRIME);
    }
    h
}

fn config_string(w: &Int4Weight) -> String {
    format!("n={},k={},group_size={},symmetric={}", w.n, w.k, w.cfg.group_size, w.cfg.symmetric)
}

fn parse_config(s: &str) -> Option<(usize, usize, Int4Config)> {
    let mut kv = BTreeMap::new();
    for part in s.split(',') {
        let (k, v) = part.split_once('=')?;
        kv.insert(k.trim(), v.trim());
    }
    if kv.len() != 4 {
        return None;
    }
    let symmetric = match *kv.get("symmetric")? {
        "true" => true,
        "false" => false,
        _ => return None,
    };
    Some((
        kv.get("n")?.parse().ok()?,
        kv.get("k")?.parse().ok()?,
        Int4Config { group_size: kv.get("group_size")?.parse().ok()?, symmetric },
    ))
}

struct Bytes {
    packed: Vec<u8>,
    scales: Vec<u8>,
    zeros: Option<Vec<u8>>,
}

fn to_bytes(h: &HostInt4) -> Bytes {
    let f16s = |v: &[f16]| v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect::<Vec<u8>>();
    Bytes {
        packed: h.packed.iter().flat_map(|x| x.to_le_bytes()).collect(),
        scales: f16s(&h.scales),
        zeros: h.zeros.as_deref().map(f16s),
    }
}

/// Writes `layers` (name, weight) to a safetensors file at `path`.
pub fn save_int4(path: impl AsRef<Path>, layers: &[(&str, &Int4Weight)]) -> Result<()> {
    let path = path.as_ref();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT_NAME.to_string());
    meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    let mut blobs = Vec::new();
    for (name, w) in layers {
        if name.is_empty() || name.contains(',') {
            bail!("int4: layer name {name:?} must be non-empty and without commas");
        }
        if meta.insert(format!("{name}.config"), config_string(w)).is_some() {
            bail!("int4: layer name {name:?} appears twice");
        }
        let b = to_bytes(&w.to_host()?);
        let parts: Vec<&[u8]> =
            [Some(&b.packed[..]), Some(&b.scales[..]), b.zeros.as_deref()].into_iter().flatten().collect();
        meta.insert(format!("{name}.checksum"), format!("{:016x}", checksum(&parts)));
        blobs.push((name.to_string(), w.n, w.k, w.cfg, b));
    }
    let mut views = Vec::new();
    for (name, n, k, cfg, b) in &blobs {
        let groups = k / cfg.group_size;
        let view = |dt, shape: Vec<usize>, data| safetensors::tensor::TensorView::new(dt, shape, data);
        views.push((format!("{name}.packed"), view(Dtype::U32, vec![n.div_ceil(TILE_N), *k], &b.packed[..])));
        views.push((format!("{name}.scales"), view(Dtype::F16, vec![groups, *n], &b.scales[..])));
        if let Some(z) = &b.zeros {
            views.push((format!("{name}.zeros"), view(Dtype::F16, vec![groups, *n], &z[..])));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = views
        .into_iter()
        .map(|(n, v)| v.map(|v| (n, v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| st_err(path, e))?;
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| st_err(path, e))?;
    std::fs::write(path, bytes).map_err(|e| st_err(path, e))
}

/// Reads every layer of a file written by [`save_int4`] onto `dev`, validating it (see the module
/// docs): a truncated, tampered or mismatched file is an error.
pub fn load_int4(path: impl AsRef<Path>, dev: &Device) -> Result<HashMap<String, Int4Weight>> {
    let path = path.as_ref();
    let buf = std::fs::read(path).map_err(|e| st_err(path, e))?;
    let (_, header) = SafeTensors::read_metadata(&buf).map_err(|e| st_err(path, e))?;
    let st = SafeTensors::deserialize(&buf).map_err(|e| st_err(path, e))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT_NAME) {
        bail!("int4: {}: not a tiny_gemm int4 file (metadata format={:?})", path.display(), meta.get("format"));
    }
    let version = meta.get("format_version").map(String::as_str);
    if version != Some(&FORMAT_VERSION.to_string()[..]) {
        bail!(
            "int4: {}: format version {version:?}, this build reads only version {FORMAT_VERSION} \
             (re-quantize the weights and save them again)",
            path.display()
        );
    }
    let mut out = HashMap::new();
    let mut expected_tensors = 0;
    for (key, value) in &meta {
        let Some(name) = key.strip_suffix(".config") else { continue };
        let what = |m: String| candle_core::Error::Msg(format!("int4: {}: layer {name:?}: {m}", path.display()));
        let (n, k, cfg) = parse_config(value).ok_or_else(|| what(format!("bad config {value:?}")))?;
        cfg.validate(k).map_err(|e| what(e.to_string()))?;
        if n == 0 {
            return Err(what("N=0".into()));
        }
        let groups = k / cfg.group_size;
        let get = |suffix: &str, dt: Dtype, shape: Vec<usize>| -> Result<&[u8]> {
            let t = st.tensor(&format!("{name}.{suffix}")).map_err(|e| what(e.to_string()))?;
            if t.dtype() != dt || t.shape() != shape {
                return Err(what(format!(
                    "tensor {suffix} is {:?} {:?}, config needs {dt:?} {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data())
        };
        let packed = get("packed", Dtype::U32, vec![n.div_ceil(TILE_N), k])?;
        let scales = get("scales", Dtype::F16, vec![groups, n])?;
        let zeros = if cfg.symmetric { None } else { Some(get("zeros", Dtype::F16, vec![groups, n])?) };
        expected_tensors += 2 + usize::from(!cfg.symmetric);
        let parts: Vec<&[u8]> = [Some(packed), Some(scales), zeros].into_iter().flatten().collect();
        let sum = format!("{:016x}", checksum(&parts));
        match meta.get(&format!("{name}.checksum")) {
            Some(s) if *s == sum => {}
            Some(s) => return Err(what(format!("checksum mismatch (file says {s}, data hashes to {sum}): corrupted"))),
            None => return Err(what("no checksum in metadata".into())),
        }
        let f16s =
            |b: &[u8]| b.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect::<Vec<_>>();
        let h = HostInt4 {
            packed: packed.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            scales: f16s(scales),
            zeros: zeros.map(f16s),
        };
        if let Some(s) = h.scales.iter().find(|s| !s.is_finite() || s.to_f32() < 0.0) {
            return Err(what(format!("scale {s} is not finite and non-negative")));
        }
        if let Some(z) =
            h.zeros.iter().flatten().find(|z| !(z.to_f32().fract() == 0.0 && (0.0..=QMAX as f32).contains(&z.to_f32())))
        {
            return Err(what(format!("zero point {z} is not an integer in 0..={QMAX}")));
        }
        out.insert(name.to_string(), Int4Weight::from_host(h, n, k, cfg, dev)?);
    }
    if st.len() != expected_tensors {
        bail!("int4: {}: {} tensors but the configs describe {expected_tensors}", path.display(), st.len());
    }
    Ok(out)
}

impl Int4Weight {
    /// Saves this one weight (as layer `weight`); see [`save_int4`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save_int4(path, &[("weight", self)])
    }

    /// Loads a file written by [`Int4Weight::save`] onto `dev`; see [`load_int4`].
    pub fn load(path: impl AsRef<Path>, dev: &Device) -> Result<Self> {
        let path = path.as_ref();
        let mut layers = load_int4(path, dev)?;
        match (layers.remove("weight"), layers.len()) {
            (Some(w), 0) => Ok(w),
            _ => bail!("int4: {}: expected exactly one layer named \"weight\"", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip() {
        let s = "n=17,k=256,group_size=64,symmetric=false";
        assert_eq!(parse_config(s), Some((17, 256, Int4Config { group_size: 64, symmetric: false })));
        assert_eq!(parse_config("n=17,k=256,group_size=64"), None);
        assert_eq!(parse_config("n=17,k=256,group_size=64,symmetric=yes"), None);
    }

    #[test]
    fn checksum_sees_one_byte() {
        let a = vec![7u8; 100];
        let mut b = a.clone();
        b[57] ^= 1;
        assert_ne!(checksum(&[&a]), checksum(&[&b]));
    }
}
