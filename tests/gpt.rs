//! The GPT-2 model: checkpoint loading in the Hugging Face layout, fused vs stock, KV cache vs
//! full recompute, the embedded Shakespeare model, and errors for bad weight files.

mod common;
#[path = "../examples/gpt/sampling.rs"]
#[allow(dead_code)]
mod sampling;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};
use common::{assert_close, devices};
use tiny_gemm::models::gpt2::{random_weights, Gpt2, Gpt2Config, KvCache, Mode};

/// A fresh, empty temp folder per call.
fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tiny-gemm-gpt-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny_config() -> Gpt2Config {
    // head dim 8, odd vocab and context
    Gpt2Config::sized(53, 19, 32, 2, 4)
}

/// A fresh seed per call (the weights differ run to run; each test is self-consistent).
fn fresh_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn random_ids(n: usize, vocab: usize, dev: &Device) -> Result<Tensor> {
    let ids = Tensor::rand(0f32, vocab as f32, (1, n), &Device::Cpu)?.floor()?.clamp(0f32, (vocab - 1) as f32)?;
    ids.to_dtype(DType::U32)?.to_device(dev)
}

/// GPT-2 written out plainly in f64 from the named tensors: `x·W` with `W: [in, out]`, no cache.
/// Independent of the model code, so it catches a transposed Conv1D weight or a wrong tie.
fn reference_logits(w: &HashMap<String, Tensor>, cfg: &Gpt2Config, ids: &[u32]) -> Result<Tensor> {
    let g = |k: &str| w[k].to_dtype(DType::F64);
    let ln = |x: &Tensor, p: &str| -> Result<Tensor> {
        let c = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let v = c.sqr()?.mean_keepdim(D::Minus1)?;
        c.broadcast_div(&(v + cfg.layer_norm_epsilon)?.sqrt()?)?
            .broadcast_mul(&g(&format!("{p}.weight"))?)?
            .broadcast_add(&g(&format!("{p}.bias"))?)
    };
    let lin = |x: &Tensor, p: &str| -> Result<Tensor> {
        x.matmul(&g(&format!("{p}.weight"))?)?.broadcast_add(&g(&format!("{p}.bias"))?)
    };
    let t = ids.len();
    let idx = Tensor::new(ids, &Device::Cpu)?;
    let mut h = (g("wte.weight")?.index_select(&idx, 0)? + g("wpe.weight")?.i(0..t)?)?;
    let (nh, hd) = (cfg.n_head, cfg.head_dim());
    let mask: Vec<f64> =
        (0..t).flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f64::NEG_INFINITY })).collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu)?;
    for l in 0..cfg.n_layer {
        let p = format!("h.{l}");
        let qkv = lin(&ln(&h, &format!("{p}.ln_1"))?, &format!("{p}.attn.c_attn"))?;
        let mut heads = Vec::new();
        for hi in 0..nh {
            let part = |j: usize| qkv.narrow(1, j * cfg.n_embd + hi * hd, hd);
            let (q, k, v) = (part(0)?, part(1)?, part(2)?);
            let s = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let s = s.broadcast_sub(&s.max_keepdim(1)?)?.exp()?;
            let p = s.broadcast_div(&s.sum_keepdim(1)?)?;
            heads.push(p.matmul(&v)?);
        }
        let a = lin(&Tensor::cat(&heads, 1)?, &format!("{p}.attn.c_proj"))?;
        h = (h + a)?;
        let m = lin(&ln(&h, &format!("{p}.ln_2"))?, &format!("{p}.mlp.c_fc"))?;
        let m = lin(&m.gelu()?, &format!("{p}.mlp.c_proj"))?;
        h = (h + m)?;
    }
    ln(&h, "ln_f")?.matmul(&g("wte.weight")?.t()?)
}

/// Writes `tensors` + config.json in the Hugging Face layout; `lm_head` adds the prefixed names
/// of a `GPT2LMHeadModel` checkpoint (with its tied `lm_head.weight` and attention-mask buffers).
fn write_checkpoint(
    dir: &std::path::Path,
    w: &HashMap<String, Tensor>,
    cfg: &Gpt2Config,
    lm_head: bool,
) -> Result<PathBuf> {
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (k, v) in w {
        out.insert(if lm_head { format!("transformer.{k}") } else { k.clone() }, v.clone());
    }
    if lm_head {
        out.insert("lm_head.weight".into(), w["wte.weight"].clone());
        for l in 0..cfg.n_layer {
            let p = cfg.n_positions;
            out.insert(
                format!("transformer.h.{l}.attn.bias"),
                Tensor::tril2(p, DType::F32, &Device::Cpu)?.reshape((1, 1, p, p))?,
            );
        }
    }
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&out, &path)?;
    std::fs::write(dir.join("config.json"), cfg.to_json())?;
    Ok(path)
}

#[test]
fn loads_hugging_face_layout_and_matches_a_plain_f64_gpt2() -> Result<()> {
    let cfg = tiny_config();
    let w = random_weights(&cfg, fresh_seed())?;
    let ids: Vec<u32> = (0..cfg.n_positions as u32).map(|i| (i * 7 + 3) % cfg.vocab_size as u32).collect();
    let want = reference_logits(&w, &cfg, &ids)?;
    for lm_head in [false, true] {
        let dir = temp_dir("layout");
        let path = write_checkpoint(&dir, &w, &cfg, lm_head)?;
        let cfg2 = Gpt2Config::from_json(&std::fs::read_to_string(dir.join("config.json"))?)?;
        assert_eq!(cfg2, cfg);
        for mode in [Mode::Stock, Mode::Fused] {
            let model = Gpt2::load(&[&path], &cfg2, mode, DType::F32, &Device::Cpu)?;
            let got =
                model.forward(&Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?, &mut KvCache::new(), false)?;
            assert_close(&got.squeeze(0)?, &want, (1e-4, 1e-4), &format!("{} lm_head={lm_head}", mode.name()));
        }
        std::fs::remove_dir_all(dir).ok();
    }
    Ok(())
}

#[test]
fn fused_matches_stock_on_tiny_random_configs() -> Result<()> {
    for dev in devices() {
        for cfg in [tiny_config(), Gpt2Config::sized(101, 40, 64, 3, 2), Gpt2Config::sized(7, 5, 16, 1, 1)] {
            let w = random_weights(&cfg, fresh_seed())?;
            let dtypes: &[DType] = if dev.is_cuda() { &[DType::F32, DType::F16, DType::BF16] } else { &[DType::F32] };
            for &dtype in dtypes {
                let stock = Gpt2::from_tensors(w.clone(), &cfg, Mode::Stock, dtype, &dev)?;
                let fused = Gpt2::from_tensors(w.clone(), &cfg, Mode::Fused, dtype, &dev)?;
                for t in [1, 2, cfg.n_positions] {
                    let ids = random_ids(t, cfg.vocab_size, &dev)?;
                    let a = stock.forward(&ids, &mut KvCache::new(), false)?;
                    let b = fused.forward(&ids, &mut KvCache::new(), false)?;
                    // logits of O(1); per dtype: f32 math differences, or one f16/bf16 rounding
                    // per layer boundary compounding over the blocks
                    let tol = match dtype {
                        DType::F32 => (1e-4, 1e-4),
                        DType::F16 => (2e-2, 2e-2),
                        _ => (1e-1, 5e-2),
                    };
                    assert_close(
                        &b,
                        &a.to_dtype(DType::F32)?.to_dtype(dtype)?,
                        tol,
                        &format!("{dev:?} {cfg:?} {dtype:?} t={t}"),
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn kv_cache_decode_equals_full_recompute() -> Result<()> {
    for dev in devices() {
        let cfg = Gpt2Config::sized(61, 23, 64, 2, 2); // head dim 32: the fused attention kernel
        let w = random_weights(&cfg, fresh_seed())?;
        for mode in [Mode::Stock, Mode::Fused] {
            let model = Gpt2::from_tensors(w.clone(), &cfg, mode, DType::F32, &dev)?;
            let ids = random_ids(cfg.n_positions, cfg.vocab_size, &dev)?;
            let full = model.forward(&ids, &mut KvCache::new(), false)?;
            // prefill 5, then one token at a time (Nq = 1), then a chunk of 3 with the cache
            let mut cache = KvCache::new();
            let mut got = vec![model.forward(&ids.narrow(1, 0, 5)?, &mut cache, false)?];
            for p in 5..cfg.n_positions - 3 {
                got.push(model.forward(&ids.narrow(1, p, 1)?, &mut cache, false)?);
                assert_eq!(cache.len(), p + 1);
            }
            got.push(model.forward(&ids.narrow(1, cfg.n_positions - 3, 3)?, &mut cache, false)?);
            let got = Tensor::cat(&got, 1)?;
            assert_close(&got, &full, (1e-4, 1e-4), &format!("{dev:?} {} cached vs full", mode.name()));
            // last_only is the last row of the full logits
            let last = model.forward(&ids, &mut KvCache::new(), true)?;
            assert_close(&last, &full.narrow(1, cfg.n_positions - 1, 1)?, (1e-5, 1e-5), "last_only");
            // past the context: an error, not a panic
            let err = model.forward(&ids.narrow(1, 0, 1)?, &mut cache, false).unwrap_err().to_string();
            assert!(err.contains("n_positions=23"), "{err}");
        }
    }
    Ok(())
}

// The embedded model runs on the CPU; this test is left out of `cuda` builds so the GPU bundle
// (which carries the example binary, weights included) does not carry the 22 MiB twice.
#[cfg(not(feature = "cuda"))]
#[test]
fn embedded_model_generates_deterministically() -> anyhow::Result<()> {
    const EMBEDDED_WEIGHTS: &[u8] = include_bytes!("../models/shakespeare/model.safetensors");
    const EMBEDDED_CONFIG: &str = include_str!("../models/shakespeare/config.json");
    const EMBEDDED_TOKENIZER: &[u8] = include_bytes!("../models/shakespeare/tokenizer.json");
    let cfg = Gpt2Config::from_json(EMBEDDED_CONFIG)?;
    let tok = tokenizers::Tokenizer::from_bytes(EMBEDDED_TOKENIZER).map_err(anyhow::Error::msg)?;
    assert_eq!(tok.get_vocab_size(true), cfg.vocab_size);
    let prompt = tok.encode("ROMEO:\nBut soft", false).map_err(anyhow::Error::msg)?.get_ids().to_vec();
    let dev = Device::Cpu;
    let run = |mode: Mode, seed: u64| -> anyhow::Result<Vec<u32>> {
        let model = Gpt2::from_safetensors_bytes(EMBEDDED_WEIGHTS, &cfg, mode, DType::F32, &dev)?;
        let mut sampler = sampling::Sampler::new(0.8, 0.95, seed);
        sampling::generate(&model, &tok, &prompt, 12, &mut sampler, &dev, |_| {})
    };
    let a = run(Mode::Fused, 42)?;
    assert_eq!(a.len(), 12);
    assert_eq!(a, run(Mode::Fused, 42)?, "same seed, same tokens");
    assert_eq!(a, run(Mode::Stock, 42)?, "stock and fused sample the same tokens");
    let text = tok.decode(&a, false).map_err(anyhow::Error::msg)?;
    assert!(!text.trim().is_empty(), "{text:?}");
    Ok(())
}

fn err_of(r: Result<Gpt2>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_weight_files_are_clear_errors() -> Result<()> {
    let cfg = tiny_config();
    let dev = Device::Cpu;
    let dir = temp_dir("errors");
    let missing = dir.join("nope.safetensors");
    let msg = err_of(Gpt2::load(&[&missing], &cfg, Mode::Stock, DType::F32, &dev));
    assert!(msg.contains("nope.safetensors") && msg.contains("does not exist"), "{msg}");

    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")?;
    let msg = err_of(Gpt2::load(&[&corrupt], &cfg, Mode::Stock, DType::F32, &dev));
    assert!(msg.contains("corrupt.safetensors") && msg.contains("safetensors"), "{msg}");
    let msg = err_of(Gpt2::from_safetensors_bytes(b"garbage", &cfg, Mode::Stock, DType::F32, &dev));
    assert!(msg.contains("not a safetensors file"), "{msg}");

    // a truncated real file
    let w = random_weights(&cfg, 1)?;
    let good = write_checkpoint(&dir, &w, &cfg, false)?;
    let bytes = std::fs::read(&good)?;
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    let msg = err_of(Gpt2::load(&[&truncated], &cfg, Mode::Stock, DType::F32, &dev));
    assert!(msg.contains("truncated.safetensors"), "{msg}");

    // a missing tensor and a wrong shape name the tensor
    let mut w2 = w.clone();
    w2.remove("h.1.mlp.c_fc.bias");
    let msg = err_of(Gpt2::from_tensors(w2, &cfg, Mode::Fused, DType::F32, &dev));
    assert!(msg.contains("h.1.mlp.c_fc.bias"), "{msg}");
    let mut w3 = w.clone();
    let t = w3["h.0.mlp.c_fc.weight"].t()?.contiguous()?; // [out, in]: the nn.Linear layout
    w3.insert("h.0.mlp.c_fc.weight".into(), t);
    let msg = err_of(Gpt2::from_tensors(w3, &cfg, Mode::Stock, DType::F32, &dev));
    assert!(msg.contains("h.0.mlp.c_fc.weight") || msg.contains("shape"), "{msg}");
    // a config that does not match the weights
    let msg = err_of(Gpt2::load(&[&good], &Gpt2Config { n_embd: 64, ..cfg.clone() }, Mode::Stock, DType::F32, &dev));
    assert!(msg.contains("shape"), "{msg}");
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn int4_mode_is_close_to_stock_and_its_cache_is_exact() -> Result<()> {
    for dev in devices() {
        // head dim 32 (fused attention), K = 64 and 256: multiples of group 32 and 64
        let cfg = Gpt2Config::sized(97, 24, 64, 2, 2);
        let w = random_weights(&cfg, fresh_seed())?;
        let stock = Gpt2::from_tensors(w.clone(), &cfg, Mode::Stock, DType::F32, &dev)?;
        for group_size in [32, 64] {
            let int4 = Gpt2::from_tensors(w.clone(), &cfg, Mode::Int4 { group_size }, DType::F32, &dev)?;
            assert!(int4.weight_bytes() < stock.weight_bytes());
            let ids = random_ids(cfg.n_positions, cfg.vocab_size, &dev)?;
            let a = stock.forward(&ids, &mut KvCache::new(), false)?;
            let b = int4.forward(&ids, &mut KvCache::new(), false)?;
            // 4-bit weights: logits (|l| ~ 1) move by a few percent of their spread
            let spread = a.to_dtype(DType::F32)?.abs()?.max_all()?.to_scalar::<f32>()? as f64;
            assert_close(&b, &a, (0.15 * spread, 0.0), &format!("{dev:?} int4 g{group_size} vs stock"));
            // decode with the cache = full recompute, in int4 too
            let mut cache = KvCache::new();
            let mut got = vec![int4.forward(&ids.narrow(1, 0, 7)?, &mut cache, false)?];
            for p in 7..cfg.n_positions {
                got.push(int4.forward(&ids.narrow(1, p, 1)?, &mut cache, false)?);
            }
            assert_close(&Tensor::cat(&got, 1)?, &b, (2e-3, 2e-3), &format!("{dev:?} int4 cached vs full"));
        }
    }
    // a hidden size that is not a multiple of the group size is an error naming both
    let cfg = Gpt2Config::sized(11, 4, 48, 1, 1);
    let msg = err_of(Gpt2::from_tensors(
        random_weights(&cfg, 3)?,
        &cfg,
        Mode::Int4 { group_size: 32 },
        DType::F32,
        &Device::Cpu,
    ));
    assert!(msg.contains("48") && msg.contains("32"), "{msg}");
    Ok(())
}
