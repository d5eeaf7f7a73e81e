mod common;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use common::{assert_close, devices, err_text, randn, FLOAT_DTYPES};
use tiny_gemm::attention::dropout_mask;
use tiny_gemm::attention_layer::MultiHeadAttention;
use tiny_gemm::{fused_attention, fused_attention_with, reference, AttentionConfig, Dropout};

/// `(atol, rtol)` of the fused op against the f64 reference. Errors beyond one output rounding:
/// f16/bf16 on CUDA round the probabilities to the input dtype for the tensor-core P·V product
/// (FlashAttention does the same), the rest is f32 summation order.
fn attn_tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (1e-4, 1e-4),
        DType::F16 => (3e-3, 3e-3),
        DType::BF16 => (2e-2, 2e-2),
        _ => (0.0, 0.0),
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    b: usize,
    hq: usize,
    hkv: usize,
    nq: usize,
    nk: usize,
    d: usize,
}

const fn case(b: usize, hq: usize, hkv: usize, nq: usize, nk: usize, d: usize) -> Case {
    Case { b, hq, hkv, nq, nk, d }
}

/// Run on every device: small enough for a debug-build CPU run.
const CASES: &[Case] = &[
    case(1, 1, 1, 1, 1, 64),
    case(1, 1, 1, 17, 17, 32),
    case(3, 8, 8, 17, 100, 64),
    case(1, 12, 4, 100, 17, 80),  // GQA, Nq > Nk: causal rows with no key
    case(3, 12, 3, 1, 100, 96),   // decode, GQA
    case(1, 8, 1, 16, 128, 128),  // MQA, decode-sized block
    case(16, 1, 1, 33, 65, 256),  // B = 16
    case(1, 8, 2, 128, 128, 64),  // whole tiles
    case(1, 1, 1, 200, 1000, 32), // long keys
    case(1, 1, 1, 1000, 130, 32), // long queries
];

/// Added on CUDA: the sweep at full size.
#[cfg(feature = "cuda")]
const CUDA_CASES: &[Case] = &[
    case(1, 2, 2, 1000, 1000, 64),
    case(1, 8, 8, 2048, 2048, 64),
    case(1, 1, 1, 2048, 2048, 128),
    case(3, 12, 4, 1000, 1000, 80),
    case(16, 8, 8, 128, 128, 96),
    case(16, 8, 2, 100, 1000, 128),
    case(1, 8, 8, 1000, 2048, 256),
    case(3, 8, 8, 2048, 17, 32),
    case(16, 12, 12, 1, 2048, 128),
    case(3, 12, 4, 16, 1000, 64),
    case(1, 32, 8, 1, 2048, 80),
    case(1, 12, 12, 17, 2048, 96),
    case(16, 1, 1, 2048, 1000, 64),
    case(4, 8, 8, 600, 600, 128),
    case(16, 12, 12, 200, 300, 256),
];

fn cases_for(dev: &Device) -> Vec<Case> {
    #[cfg(feature = "cuda")]
    if dev.is_cuda() {
        return CASES.iter().chain(CUDA_CASES).copied().collect();
    }
    let _ = dev;
    CASES.to_vec()
}

fn inputs(c: Case, dtype: DType, dev: &Device) -> Result<(Tensor, Tensor, Tensor)> {
    Ok((
        randn(&[c.b, c.hq, c.nq, c.d], dtype, dev)?,
        randn(&[c.b, c.hkv, c.nk, c.d], dtype, dev)?,
        randn(&[c.b, c.hkv, c.nk, c.d], dtype, dev)?,
    ))
}

fn to64(t: &Tensor) -> Result<Tensor> {
    t.to_device(&Device::Cpu)?.to_dtype(DType::F64)
}

/// The op against the f64 reference (same rounded inputs) and against stock candle in `dtype`.
fn check(q: &Tensor, k: &Tensor, v: &Tensor, cfg: &AttentionConfig, what: &str) -> Result<()> {
    let dtype = q.dtype();
    let got = fused_attention_with(q, k, v, cfg)?;
    assert_eq!(got.dtype(), dtype, "{what}");
    assert!(got.device().same_device(q.device()), "{what}");
    let want64 = reference::attention(&to64(q)?, &to64(k)?, &to64(v)?, cfg)?;
    assert_close(&got, &want64, attn_tolerance(dtype), &format!("{what} vs f64"));
    // Stock candle in f16/bf16 rounds scores and probabilities to the dtype (and the CPU bf16
    // matmul accumulates in bf16), so it is itself off the f64 result by up to `stock_err`: the
    // op must agree with stock within that plus its own tolerance.
    let stock = reference::attention(q, k, v, cfg)?;
    let stock_err = (stock.to_device(&Device::Cpu)?.to_dtype(DType::F64)? - &want64)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    let (atol, rtol) = attn_tolerance(dtype);
    assert_close(&got, &stock, (atol + stock_err, rtol), &format!("{what} vs stock (stock err {stock_err:.2e})"));
    Ok(())
}

#[test]
fn matches_reference_over_sweep() -> Result<()> {
    for dev in devices() {
        for c in cases_for(&dev) {
            for dtype in FLOAT_DTYPES {
                let (q, k, v) = inputs(c, dtype, &dev)?;
                for causal in [false, true] {
                    let cfg = AttentionConfig { causal, ..Default::default() };
                    check(&q, &k, &v, &cfg, &format!("{dev:?} {c:?} {dtype:?} causal={causal}"))?;
                }
            }
        }
    }
    Ok(())
}

/// Every supported head dim, including the ones that run a zero-padded instance.
#[test]
fn every_head_dim() -> Result<()> {
    for dev in devices() {
        for d in (32..=256).step_by(8) {
            for dtype in FLOAT_DTYPES {
                // Nq = 40 runs the prefill kernel on CUDA (with split keys), Nq = 3 the split-KV one,
                // Nq = 1 (f16/bf16) the decode one
                for nq in [40, 3, 1] {
                    let (q, k, v) = inputs(case(1, 2, 1, nq, 300, d), dtype, &dev)?;
                    let cfg = AttentionConfig { causal: true, ..Default::default() };
                    check(&q, &k, &v, &cfg, &format!("{dev:?} D={d} Nq={nq} {dtype:?}"))?;
                }
            }
        }
    }
    Ok(())
}

/// Grids of more prefill blocks than fit on the GPU at once (no key split), every block kind.
#[cfg(feature = "cuda")]
#[test]
fn prefill_big_grids() -> Result<()> {
    let gpu = common::cuda_device();
    tiny_gemm::testing::set_hopper_attention(false); // the portable blocks (Hopper: hopper_prefill)
    for d in [64, 128, 256, 72] {
        for dtype in [DType::F16, DType::BF16] {
            let (q, k, v) = inputs(case(16, 12, 4, 130, 140, d), dtype, &gpu)?;
            for causal in [false, true] {
                let cfg = AttentionConfig {
                    causal,
                    dropout: causal.then_some(Dropout { p: 0.2, seed: 5 }),
                    ..Default::default()
                };
                check(&q, &k, &v, &cfg, &format!("D={d} {dtype:?} causal={causal}"))?;
            }
        }
    }
    Ok(())
}

/// Prefill blocks of four KV groups (D = 64, walks of 16+ key tiles on a small grid), with key
/// splits, causal rows with no key, dropout.
#[cfg(feature = "cuda")]
#[test]
fn prefill_four_kv_groups() -> Result<()> {
    let gpu = common::cuda_device();
    tiny_gemm::testing::set_hopper_attention(false); // the portable blocks (Hopper: hopper_prefill)
    for c in [case(1, 2, 1, 1024, 1024, 64), case(1, 1, 1, 100, 3000, 64), case(1, 3, 3, 1100, 1000, 64)] {
        for dtype in [DType::F16, DType::BF16] {
            let (q, k, v) = inputs(c, dtype, &gpu)?;
            for causal in [false, true] {
                let cfg = AttentionConfig { causal, ..Default::default() };
                check(&q, &k, &v, &cfg, &format!("{c:?} {dtype:?} causal={causal}"))?;
            }
            let cfg = dropout_cfg(0.2, 7, true);
            check(&q, &k, &v, &cfg, &format!("{c:?} {dtype:?} dropout"))?;
        }
    }
    Ok(())
}

/// One query over caches of awkward lengths (the decode kernel, f16/bf16): every instance head
/// dim and padded ones, GQA, batches, one split and many (merged in the launch by the last split
/// of each row), strided caches, a zero and a negative scale.
#[cfg(feature = "cuda")]
#[test]
fn decode_one_query() -> Result<()> {
    let gpu = common::cuda_device();
    for dtype in [DType::F16, DType::BF16] {
        for d in [32, 40, 64, 72, 128, 136, 256] {
            for nk in [1, 7, 17, 100, 512, 1000, 4099, 8192] {
                // 600 rows fill the GPU: one split
                // (2, 16, 4): a batch of GQA rows, 16 splits at Nk = 8192 (its f64 reference is
                // the costly part, hence fewer lengths and head dims)
                for (b, hq, hkv) in [(1, 8, 2), (2, 16, 4), (3, 200, 200)] {
                    if (hq == 200 && nk > 100) || (hq == 16 && (d > 128 || ![17, 512, 8192].contains(&nk))) {
                        continue;
                    }
                    let (q, k, v) = inputs(case(b, hq, hkv, 1, nk, d), dtype, &gpu)?;
                    let causal = nk % 2 == 1;
                    let cfg = AttentionConfig { causal, ..Default::default() };
                    check(&q, &k, &v, &cfg, &format!("{dtype:?} D={d} Nk={nk} B={b} Hq={hq} Hkv={hkv}"))?;
                }
            }
        }
        // a cache slice inside a longer buffer, transposed heads
        let k = randn(&[2, 9000, 4, 128], dtype, &gpu)?.transpose(1, 2)?.narrow(2, 5, 8190)?;
        let v = randn(&[2, 4, 9000, 128], dtype, &gpu)?.narrow(2, 800, 8190)?;
        let q = randn(&[2, 1, 16, 128], dtype, &gpu)?.transpose(1, 2)?;
        for scale in [None, Some(0.0f32), Some(-0.2)] {
            let cfg = AttentionConfig { causal: true, softmax_scale: scale, ..Default::default() };
            check(&q, &k, &v, &cfg, &format!("{dtype:?} strided cache scale={scale:?}"))?;
        }
    }
    Ok(())
}

/// The one-launch decode reuses a cached scratch whose per-row counters each launch leaves at
/// zero: calls of different shapes and split counts, interleaved and repeated, give the same
/// results each time (a counter left behind would skip or misplace a row's merge, leaving the
/// poisoned output or a partial sum).
#[cfg(feature = "cuda")]
#[test]
fn decode_scratch_reuse() -> Result<()> {
    let gpu = common::cuda_device();
    let cases = [
        case(1, 32, 32, 1, 8192, 128),
        case(3, 8, 2, 1, 1000, 64),
        case(1, 32, 32, 1, 512, 128),
        case(2, 4, 4, 1, 4099, 256),
        case(1, 1, 1, 1, 17, 32),
    ];
    let mut inputs_and_first = Vec::new();
    for c in cases {
        let (q, k, v) = inputs(c, DType::F16, &gpu)?;
        let cfg = AttentionConfig { causal: true, ..Default::default() };
        check(&q, &k, &v, &cfg, &format!("{c:?} first call"))?;
        let first = fused_attention_with(&q, &k, &v, &cfg)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        inputs_and_first.push((c, q, k, v, first));
    }
    for round in 0..3 {
        for (c, q, k, v, first) in inputs_and_first.iter().rev() {
            let got = fused_attention(q, k, v, true)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(&got, first, "{c:?} round {round}");
        }
    }
    Ok(())
}

#[test]
fn custom_scale() -> Result<()> {
    for dev in devices() {
        let (q, k, v) = inputs(case(2, 4, 2, 33, 50, 64), DType::F32, &dev)?;
        let cfg = AttentionConfig { softmax_scale: Some(0.5), ..Default::default() };
        check(&q, &k, &v, &cfg, &format!("{dev:?} scale 0.5"))?;
        // the default is 1/sqrt(D)
        let a = fused_attention(&q, &k, &v, false)?;
        let b =
            fused_attention_with(&q, &k, &v, &AttentionConfig { softmax_scale: Some(0.125), ..Default::default() })?;
        assert_close(&a, &b, (0.0, 0.0), "default scale");
    }
    Ok(())
}

/// Negative and zero scales on every dtype (f16/bf16 take the tensor-core prefill on CUDA, which
/// takes the row max of unscaled scores: a negative scale flips them, zero is special-cased).
#[test]
fn negative_and_zero_scale() -> Result<()> {
    for dev in devices() {
        for dtype in FLOAT_DTYPES {
            let (q, k, v) = inputs(case(2, 4, 2, 70, 90, 64), dtype, &dev)?;
            for scale in [-0.3f32, 0.0] {
                for causal in [false, true] {
                    let cfg = AttentionConfig { softmax_scale: Some(scale), causal, ..Default::default() };
                    check(&q, &k, &v, &cfg, &format!("{dev:?} {dtype:?} scale {scale} causal={causal}"))?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn non_contiguous_inputs() -> Result<()> {
    for dev in devices() {
        for dtype in FLOAT_DTYPES {
            // [B, N, H, D] transposed to [B, H, N, D]: strided, unit D stride, no copy
            let q = randn(&[2, 37, 4, 64], dtype, &dev)?.transpose(1, 2)?;
            let k = randn(&[2, 50, 2, 64], dtype, &dev)?.transpose(1, 2)?;
            // a slice of a longer cache
            let v = randn(&[2, 2, 80, 64], dtype, &dev)?.narrow(2, 10, 50)?;
            assert!(!q.is_contiguous() && !k.is_contiguous() && !v.is_contiguous());
            let cfg = AttentionConfig { causal: true, ..Default::default() };
            check(&q, &k, &v, &cfg, &format!("{dev:?} {dtype:?} strided"))?;
            let got = fused_attention_with(&q, &k, &v, &cfg)?;
            let want = fused_attention_with(&q.contiguous()?, &k.contiguous()?, &v.contiguous()?, &cfg)?;
            assert_close(&got, &want, (0.0, 0.0), "strided == contiguous");
            // D not unit-stride: copied first
            let qt = randn(&[2, 4, 64, 37], dtype, &dev)?.transpose(2, 3)?;
            check(&qt, &k, &v, &cfg, &format!("{dev:?} {dtype:?} D-strided"))?;
        }
    }
    Ok(())
}

#[test]
fn empty_queries_give_empty_output() -> Result<()> {
    for dev in devices() {
        let k = randn(&[2, 4, 10, 32], DType::F32, &dev)?;
        let q = k.narrow(2, 0, 0)?;
        assert_eq!(fused_attention(&q, &k, &k, true)?.dims(), [2, 4, 0, 32]);
    }
    Ok(())
}

#[test]
fn same_result_on_every_call() -> Result<()> {
    for dev in devices() {
        let (q, k, v) = inputs(case(2, 8, 8, 100, 100, 64), DType::F16, &dev)?;
        let a = fused_attention(&q, &k, &v, true)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let b = fused_attention(&q, &k, &v, true)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(a, b);
    }
    Ok(())
}

// ---- dropout -------------------------------------------------------------------------------

fn dropout_cfg(p: f32, seed: u64, causal: bool) -> AttentionConfig {
    AttentionConfig { causal, dropout: Some(Dropout { p, seed }), ..Default::default() }
}

#[test]
fn dropout_matches_reference_with_the_same_mask() -> Result<()> {
    for dev in devices() {
        for dtype in FLOAT_DTYPES {
            for c in [case(2, 4, 2, 70, 90, 64), case(1, 4, 4, 3, 300, 128), case(2, 4, 2, 1, 300, 128)] {
                let (q, k, v) = inputs(c, dtype, &dev)?;
                let cfg = dropout_cfg(0.3, 0xdead_beef_1234, true);
                check(&q, &k, &v, &cfg, &format!("{dev:?} {c:?} {dtype:?} dropout"))?;
            }
        }
    }
    Ok(())
}

#[test]
fn dropout_same_seed_same_output_different_seed_different() -> Result<()> {
    for dev in devices() {
        let (q, k, v) = inputs(case(1, 4, 4, 64, 64, 64), DType::F32, &dev)?;
        let run = |seed| -> Result<Vec<f32>> {
            fused_attention_with(&q, &k, &v, &dropout_cfg(0.5, seed, false))?.flatten_all()?.to_vec1::<f32>()
        };
        assert_eq!(run(7)?, run(7)?);
        let (a, b) = (run(7)?, run(8)?);
        let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert!(differing > a.len() / 2, "{differing} of {} outputs differ", a.len());
    }
    Ok(())
}

#[test]
fn dropout_kept_fraction() -> Result<()> {
    for p in [0.1f32, 0.5, 0.9] {
        let mask = dropout_mask(Dropout { p, seed: 42 }, 2, 4, 64, 256, &Device::Cpu)?;
        let kept = mask.ne(0f32)?.to_dtype(DType::F32)?.mean_all()?.to_scalar::<f32>()?;
        // 131072 Bernoulli draws: 5 standard deviations is < 0.007
        assert!((kept - (1.0 - p)).abs() < 0.007, "p={p}: kept {kept}");
        let scale = mask.max_all()?.to_scalar::<f32>()?;
        assert!((scale - 1.0 / (1.0 - p)).abs() < 1e-6);
    }
    // the op itself: with V = 1 every output is (kept weight sum) / (weight sum), mean ~ 1
    for dev in devices() {
        let q = randn(&[1, 8, 64, 32], DType::F32, &dev)?;
        let k = (randn(&[1, 8, 512, 32], DType::F32, &dev)? * 0.0)?; // uniform weights
        let v = Tensor::ones((1, 8, 512, 32), DType::F32, &dev)?;
        let o = fused_attention_with(&q, &k, &v, &dropout_cfg(0.25, 3, false))?;
        let kept = (o.mean_all()?.to_scalar::<f32>()? * 0.75).to_string();
        let kept: f32 = kept.parse().unwrap();
        assert!((kept - 0.75).abs() < 0.01, "{dev:?}: kept fraction {kept}");
    }
    Ok(())
}

#[test]
fn dropout_p0_equals_no_dropout() -> Result<()> {
    for dev in devices() {
        let (q, k, v) = inputs(case(2, 4, 4, 50, 80, 64), DType::F16, &dev)?;
        let a = fused_attention(&q, &k, &v, true)?;
        let b = fused_attention_with(&q, &k, &v, &dropout_cfg(0.0, 99, true))?;
        assert_close(&a, &b, (0.0, 0.0), "p = 0");
    }
    Ok(())
}

/// The CPU and CUDA draw the same mask: with V = one-hot rows, each output column is one
/// weight, so a single differing mask bit shows up as a zero against a non-zero.
#[cfg(feature = "cuda")]
#[test]
fn dropout_mask_matches_cpu() -> Result<()> {
    let gpu = common::cuda_device();
    let (b, h, nq, nk, d) = (2, 3, 40, 64, 64);
    let q = randn(&[b, h, nq, d], DType::F32, &Device::Cpu)?;
    let k = randn(&[b, h, nk, d], DType::F32, &Device::Cpu)?;
    let v = Tensor::eye(nk, DType::F32, &Device::Cpu)?.broadcast_as((b, h, nk, d))?.contiguous()?;
    for nq in [nq, 3, 1] {
        let q = q.narrow(2, 0, nq)?;
        for dtype in FLOAT_DTYPES {
            let cfg = dropout_cfg(0.5, 0x1234_5678_9abc_def0, false);
            let (qd, kd, vd) = (q.to_dtype(dtype)?, k.to_dtype(dtype)?, v.to_dtype(dtype)?);
            let cpu = fused_attention_with(&qd, &kd, &vd, &cfg)?.to_dtype(DType::F32)?;
            let cuda = fused_attention_with(&qd.to_device(&gpu)?, &kd.to_device(&gpu)?, &vd.to_device(&gpu)?, &cfg)?
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?;
            let cpu_zero = cpu.eq(0f32)?.flatten_all()?.to_vec1::<u8>()?;
            let cuda_zero = cuda.eq(0f32)?.flatten_all()?.to_vec1::<u8>()?;
            assert_eq!(cpu_zero, cuda_zero, "{dtype:?} Nq={nq}: dropped positions differ");
            assert!(cpu_zero.contains(&1) && cpu_zero.contains(&0));
            assert_close(&cuda, &cpu, attn_tolerance(dtype), &format!("{dtype:?} Nq={nq} cuda vs cpu"));
        }
    }
    Ok(())
}

// ---- bad input -----------------------------------------------------------------------------

fn zeros(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(shape, dtype, &Device::Cpu).unwrap()
}

#[test]
fn rank_not_4_is_an_error() {
    let x = zeros(&[2, 3, 64], DType::F32);
    let y = zeros(&[1, 2, 3, 64], DType::F32);
    let msg = err_text(fused_attention(&x, &y, &y, false));
    assert!(msg.contains("rank 4") && msg.contains("[2, 3, 64]"), "{msg}");
    let msg = err_text(fused_attention(&y, &x, &y, false));
    assert!(msg.contains("k must have rank 4"), "{msg}");
}

#[test]
fn batch_and_head_dim_mismatch_are_errors() {
    let q = zeros(&[2, 4, 5, 64], DType::F32);
    let msg =
        err_text(fused_attention(&q, &zeros(&[3, 4, 5, 64], DType::F32), &zeros(&[3, 4, 5, 64], DType::F32), false));
    assert!(msg.contains("B=2") && msg.contains("B=3"), "{msg}");
    let kv = zeros(&[2, 4, 5, 32], DType::F32);
    let msg = err_text(fused_attention(&q, &kv, &kv, false));
    assert!(msg.contains("D=64") && msg.contains("D=32"), "{msg}");
    let msg =
        err_text(fused_attention(&q, &zeros(&[2, 4, 5, 64], DType::F32), &zeros(&[2, 4, 6, 64], DType::F32), false));
    assert!(msg.contains("v has shape"), "{msg}");
}

#[test]
fn heads_not_multiple_is_an_error() {
    let q = zeros(&[1, 6, 5, 64], DType::F32);
    let kv = zeros(&[1, 4, 5, 64], DType::F32);
    let msg = err_text(fused_attention(&q, &kv, &kv, false));
    assert!(msg.contains("Hq=6") && msg.contains("Hkv=4"), "{msg}");
    let kv0 = zeros(&[1, 0, 5, 64], DType::F32);
    assert!(err_text(fused_attention(&q, &kv0, &kv0, false)).contains("Hkv=0"));
}

#[test]
fn unsupported_head_dim_is_an_error() {
    for d in [8, 24, 36, 100, 264, 512] {
        let q = zeros(&[1, 1, 4, d], DType::F32);
        let msg = err_text(fused_attention(&q, &q, &q, false));
        assert!(msg.contains(&format!("D={d}")) && msg.contains("32..=256"), "{msg}");
    }
}

#[test]
fn no_keys_is_an_error() {
    let q = zeros(&[1, 1, 4, 64], DType::F32);
    let kv = zeros(&[1, 1, 0, 64], DType::F32);
    assert!(err_text(fused_attention(&q, &kv, &kv, false)).contains("Nk = 0"));
}

#[test]
fn dtype_mismatch_and_unsupported_dtype_are_errors() {
    let q = zeros(&[1, 1, 4, 64], DType::F32);
    let kv = zeros(&[1, 1, 4, 64], DType::F16);
    let msg = err_text(fused_attention(&q, &kv, &q, false));
    assert!(msg.contains("dtype") && msg.contains("F16") && msg.contains("F32"), "{msg}");
    let msg = err_text(fused_attention(&q, &q, &kv, false));
    assert!(msg.contains("v dtype"), "{msg}");
    for dtype in [DType::F64, DType::U32] {
        let x = zeros(&[1, 1, 4, 64], dtype);
        assert!(err_text(fused_attention(&x, &x, &x, false)).contains("fused_attention"));
    }
}

#[test]
fn dropout_p_out_of_range_is_an_error() {
    let q = zeros(&[1, 1, 4, 64], DType::F32);
    for p in [-0.1f32, 1.0, 1.5, f32::NAN] {
        let msg = err_text(fused_attention_with(&q, &q, &q, &dropout_cfg(p, 0, false)));
        assert!(msg.contains("dropout p=") && msg.contains("[0, 1)"), "{msg}");
    }
}

#[cfg(feature = "cuda")]
#[test]
fn device_mismatch_is_an_error() -> Result<()> {
    let gpu = common::cuda_device();
    let q = Tensor::zeros((1, 1, 4, 64), DType::F32, &gpu)?;
    let kv = zeros(&[1, 1, 4, 64], DType::F32);
    let msg = err_text(fused_attention(&q, &kv, &kv, false));
    assert!(msg.contains("Cpu") && msg.contains("Cuda"), "{msg}");
    Ok(())
}

#[test]
fn first_rows_of_a_causal_block_see_their_prefix() -> Result<()> {
    // Row 0 of a causal square attention sees only key 0: output row 0 is v row 0.
    for dev in devices() {
        let (q, k, v) = inputs(case(1, 2, 2, 50, 50, 64), DType::F32, &dev)?;
        let o = fused_attention(&q, &k, &v, true)?;
        assert_close(&o.i((.., .., 0, ..))?, &v.i((.., .., 0, ..))?, (1e-6, 1e-6), "row 0");
    }
    Ok(())
}

// ---- the layer with a KV cache -------------------------------------------------------------

/// A prompt then one token at a time through the cache equals causal attention over the whole
/// sequence; the cache grows past its first chunk (512 tokens).
#[test]
fn layer_with_cache_matches_full_attention() -> Result<()> {
    for dev in devices() {
        for (dtype, h, hkv, n, prompt) in
            [(DType::F32, 8, 2, 20, 12), (DType::F16, 4, 4, 9, 1), (DType::F32, 1, 1, 520, 509)]
        {
            let (b, d) = (2, 64);
            let q = randn(&[b, h, n, d], dtype, &dev)?;
            let k = randn(&[b, hkv, n, d], dtype, &dev)?;
            let v = randn(&[b, hkv, n, d], dtype, &dev)?;
            let mut layer = MultiHeadAttention::new(h, hkv, d)?;
            let mut outs =
                vec![layer.forward(&q.narrow(2, 0, prompt)?, &k.narrow(2, 0, prompt)?, &v.narrow(2, 0, prompt)?)?];
            for t in prompt..n {
                outs.push(layer.forward(&q.narrow(2, t, 1)?, &k.narrow(2, t, 1)?, &v.narrow(2, t, 1)?)?);
            }
            assert_eq!(layer.cache_len(), n);
            let got = Tensor::cat(&outs, 2)?;
            let cfg = AttentionConfig { causal: true, ..Default::default() };
            let want = reference::attention(&to64(&q)?, &to64(&k)?, &to64(&v)?, &cfg)?;
            assert_close(&got, &want, attn_tolerance(dtype), &format!("{dev:?} {dtype:?} layer n={n}"));
            layer.reset();
            assert_eq!(layer.cache_len(), 0);
            let again = layer.forward(&q, &k, &v)?;
            assert_close(&again, &want, attn_tolerance(dtype), "after reset");
        }
    }
    Ok(())
}

#[test]
fn layer_bad_input_is_an_error() -> Result<()> {
    assert!(MultiHeadAttention::new(6, 4, 64).unwrap_err().to_string().contains("num_kv_heads=4"));
    assert!(MultiHeadAttention::new(8, 8, 20).unwrap_err().to_string().contains("head_dim=20"));
    let mut layer = MultiHeadAttention::new(4, 2, 32)?;
    let q = zeros(&[1, 4, 3, 32], DType::F32);
    let kv = zeros(&[1, 2, 3, 32], DType::F32);
    let msg = err_text(layer.forward(&zeros(&[1, 2, 3, 32], DType::F32), &kv, &kv));
    assert!(msg.contains("expected [B, 4, N, 32]"), "{msg}");
    let msg = err_text(layer.forward(&q, &zeros(&[1, 2, 2, 32], DType::F32), &kv));
    assert!(msg.contains("k has shape"), "{msg}");
    layer.forward(&q, &kv, &kv)?;
    let msg = err_text(layer.forward(
        &zeros(&[2, 4, 1, 32], DType::F32),
        &zeros(&[2, 2, 1, 32], DType::F32),
        &zeros(&[2, 2, 1, 32], DType::F32),
    ));
    assert!(msg.contains("reset()"), "{msg}");
    Ok(())
}

/// Small calls reaching every Hopper instance (D = 64: the in-block key split on grids of at most
/// two blocks per SM, 64-key tiles above; D = 128), causal and not: cheap enough for
/// compute-sanitizer racecheck (`hopper_race`).
#[cfg(feature = "cuda")]
#[test]
fn hopper_race_subset() -> Result<()> {
    let gpu = common::cuda_device();
    for c in [
        case(1, 2, 1, 200, 260, 64),  // 8 blocks: key split, uneven (3 + 2 tiles of 64 keys)
        case(3, 4, 2, 300, 77, 64),   // 60 blocks: key split, GQA, causal rows with no key
        case(1, 40, 8, 500, 200, 64), // 320 blocks: one warpgroup, 64-key tiles, three blocks per SM
        case(1, 2, 1, 200, 260, 128), // D = 128
        case(1, 1, 1, 130, 700, 128), // D = 128, 6 key tiles: the K and V rings wrap twice
    ] {
        let (q, k, v) = inputs(c, DType::F16, &gpu)?;
        for causal in [false, true] {
            check(&q, &k, &v, &AttentionConfig { causal, ..Default::default() }, &format!("{c:?} causal={causal}"))?;
        }
    }
    Ok(())
}

/// The Hopper (sm_90a, wgmma) prefill kernel, on an H100/H200 (elsewhere these run the portable
/// kernels and only the comparisons apply): D = 64 and 128, causal or not, GQA/MQA, Nq != Nk both
/// ways (causal rows with no key), tails (17, 100, 1000 keys), B > 1, strided inputs; against f64
/// and stock candle, and against the portable kernel on the same inputs. Dropout, D = 96 and f32
/// keep the portable kernels.
#[cfg(feature = "cuda")]
#[test]
fn hopper_prefill() -> Result<()> {
    use tiny_gemm::testing::{hopper_attention_launches, set_hopper_attention};
    let gpu = common::cuda_device();
    let hopper = tiny_gemm::attention::hopper_prefill_available(&gpu)?;
    let launches0 = hopper_attention_launches();
    let cases = [
        case(1, 2, 2, 17, 17, 0),
        case(2, 3, 3, 100, 100, 0),
        case(1, 4, 2, 1000, 1000, 0),
        case(1, 4, 1, 100, 1000, 0),
        case(1, 2, 2, 300, 77, 0),
        case(4, 8, 4, 129, 257, 0),
        case(1, 24, 24, 900, 130, 0), // several blocks per SM (D = 64: 64-key tiles), Nq > Nk
    ];
    for d in [64, 128] {
        for c in cases {
            let c = Case { d, ..c };
            for dtype in [DType::F16, DType::BF16] {
                let (q, k, v) = inputs(c, dtype, &gpu)?;
                for causal in [false, true] {
                    let what = format!("{c:?} {dtype:?} causal={causal}");
                    let cfg = AttentionConfig { causal, ..Default::default() };
                    check(&q, &k, &v, &cfg, &what)?;
                    let got = fused_attention_with(&q, &k, &v, &cfg)?;
                    set_hopper_attention(false);
                    let portable = fused_attention_with(&q, &k, &v, &cfg);
                    set_hopper_attention(true);
                    let (atol, rtol) = attn_tolerance(dtype);
                    assert_close(&got, &portable?, (2.0 * atol, 2.0 * rtol), &format!("{what} vs portable"));
                }
            }
        }
        // strided inputs: [B, N, H, D] storage seen as [B, H, N, D]
        let (b, h, n) = (2, 4, 300);
        let t = |n| -> Result<Tensor> { randn(&[b, n, h, d], DType::F16, &gpu)?.transpose(1, 2) };
        let (q, k, v) = (t(n)?, t(n + 33)?, t(n + 33)?);
        check(&q, &k, &v, &AttentionConfig { causal: true, ..Default::default() }, &format!("D={d} strided"))?;
    }
    let launches = hopper_attention_launches();
    if hopper {
        assert!(launches > launches0 + 20, "the Hopper kernel ran {} times", launches - launches0);
    } else {
        assert_eq!(launches, launches0, "no Hopper kernel off compute capability 9.0");
    }
    // what it does not take: dropout, other head dims, f32, and the switch off
    let (q, k, v) = inputs(case(1, 2, 2, 100, 100, 64), DType::F16, &gpu)?;
    check(&q, &k, &v, &dropout_cfg(0.1, 3, true), "dropout")?;
    let (q96, k96, v96) = inputs(case(1, 2, 2, 100, 100, 96), DType::F16, &gpu)?;
    check(&q96, &k96, &v96, &AttentionConfig::default(), "D=96")?;
    let (q32, k32, v32) = inputs(case(1, 2, 2, 100, 100, 64), DType::F32, &gpu)?;
    check(&q32, &k32, &v32, &AttentionConfig::default(), "f32")?;
    set_hopper_attention(false);
    check(&q, &k, &v, &AttentionConfig::default(), "switched off")?;
    set_hopper_attention(true);
    assert_eq!(hopper_attention_launches(), launches, "only f16/bf16, D = 64/128, no dropout");
    Ok(())
}
