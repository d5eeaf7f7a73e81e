mod common;

use candle_core::{DType, Device, Module, Result, Tensor};
use common::{devices, err_text, randn, FLOAT_DTYPES};
use tiny_gemm::quant::{
    int4_linear, int4_matmul, load_int4, save_int4, Int4Config, Int4Linear, Int4Weight, QuantReport,
    SUPPORTED_GROUP_SIZES,
};
use tiny_gemm::Activation;

fn configs() -> Vec<Int4Config> {
    SUPPORTED_GROUP_SIZES
        .iter()
        .flat_map(|&group_size| [true, false].map(|symmetric| Int4Config { group_size, symmetric }))
        .collect()
}

fn to_vec64(t: &Tensor) -> Vec<f64> {
    t.to_device(&Device::Cpu).unwrap().to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Per-element scale of every weight: `s[n, k]` from the `[K/G, N]` scales.
fn element_scales(q: &Int4Weight) -> Vec<f64> {
    let (n, k, gs) = (q.out_features(), q.in_features(), q.config().group_size);
    let s = to_vec64(q.scales());
    (0..n * k).map(|i| s[(i % k / gs) * n + i / k]).collect()
}

/// `(c_acc, c_out)`: error allowed relative to `Σ|x|(|ŵ| + 16 s)` (the size of the summed
/// terms, zero-point form included) and to `|y|` (one output rounding).
/// CPU: exact weights and activations, f32 accumulation. CUDA: the weights enter the tensor
/// cores rounded to f16 (bf16 for bf16 activations), f32 activations rounded to f16.
fn tolerance(dev: &Device, dtype: DType) -> (f64, f64) {
    let out = match dtype {
        DType::F32 => 2e-6,
        DType::F16 => 1e-3,
        _ => 8e-3,
    };
    let acc = match (dev.is_cuda(), dtype) {
        (false, _) => 1e-5,
        (true, DType::BF16) => 8e-3,
        (true, _) => 1.2e-3,
    };
    (acc, out)
}

/// Asserts `y == x · dequantize(q)ᵀ` (f64) within the accumulation bound of `tolerance`.
fn assert_matches_dequantized(x: &Tensor, q: &Int4Weight, y: &Tensor, what: &str) -> Result<()> {
    let (n, k) = (q.out_features(), q.in_features());
    let m = x.elem_count() / k;
    assert_eq!(y.elem_count(), m * n, "{what}: output size");
    let (xv, wv, sv, yv) = (to_vec64(x), to_vec64(&q.dequantize()?), element_scales(q), to_vec64(y));
    let (c_acc, c_out) = tolerance(x.device(), x.dtype());
    for mi in 0..m {
        for ni in 0..n {
            let (mut want, mut size) = (0f64, 0f64);
            for ki in 0..k {
                let (a, b) = (xv[mi * k + ki], wv[ni * k + ki]);
                want += a * b;
                size += a.abs() * (b.abs() + 16.0 * sv[ni * k + ki]);
            }
            let got = yv[mi * n + ni];
            let tol = c_acc * size + c_out * want.abs() + 1e-30;
            assert!((got - want).abs() <= tol, "{what} at ({mi}, {ni}): got {got}, want {want}, tol {tol}");
        }
    }
    Ok(())
}

/// int4_matmul vs the f64 product with the exact dequantized weight.
fn check_matmul(dev: &Device, m: usize, n: usize, k: usize, cfg: Int4Config, dtype: DType) -> Result<()> {
    let w = (randn(&[n, k], DType::F32, dev)? * 0.05)?;
    let q = Int4Weight::quantize(&w, cfg)?;
    let x = randn(&[m, k], dtype, dev)?;
    let y = int4_matmul(&x, &q)?;
    assert_eq!((y.dims(), y.dtype()), (&[m, n][..], dtype));
    assert!(y.device().same_device(dev));
    assert_matches_dequantized(&x, &q, &y, &format!("{dev:?} {dtype:?} {cfg:?} M={m} N={n} K={k}"))
}

#[test]
fn matmul_matches_dequantized_weight() -> Result<()> {
    for dev in devices() {
        for cfg in configs() {
            let gs = cfg.group_size;
            // odd M and N, K = 1, 3 and 13 groups (K % 128 != 0 for the smaller group sizes);
            // on CUDA M = 17, 33 and 65 run the tensor-core GEMM for f16 / bf16 (f32: dequantize +
            // matmul).
            for (m, n, k) in [
                (1, 17, gs),
                (3, 8, 3 * gs),
                (5, 33, 13 * gs),
                (16, 100, 3 * gs),
                (17, 9, gs),
                (33, 17, 3 * gs),
                (65, 9, 3 * gs),
            ] {
                for dtype in FLOAT_DTYPES {
                    check_matmul(&dev, m, n, k, cfg, dtype)?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn matmul_llm_sized_and_split_k() -> Result<()> {
    // K=4096 exercises the split-K partials + reduce path on CUDA.
    for dev in devices() {
        for (m, dtype) in [(1, DType::F16), (7, DType::BF16), (16, DType::F32)] {
            check_matmul(&dev, m, 263, 4096, Int4Config::default(), dtype)?;
        }
    }
    Ok(())
}

/// The CUDA tensor-core GEMM (17 <= M <= CUDA_TC_MAX_M, f16 / bf16) over its edges: M not a
/// multiple of the block rows, N odd (scales by plain loads) and a multiple of 8 (by cp.async), K
/// with a tail chunk, split K (few column blocks) and one split, every group size, sym and asym;
/// then the dequantize + matmul path just above CUDA_TC_MAX_M and at M=1023. CUDA only: the CPU
/// kernel does not depend on M (`matmul_matches_dequantized_weight` covers it).
#[test]
fn matmul_tensor_core_path() -> Result<()> {
    let tc_max = tiny_gemm::quant::CUDA_TC_MAX_M;
    for dev in devices().into_iter().filter(|d| d.is_cuda()) {
        for cfg in configs() {
            let gs = cfg.group_size;
            for (m, n, k) in [(100, 136, 13 * gs), (tc_max, 264, 5 * gs), (33, 1001, 3 * gs), (47, 1001, 13 * gs)] {
                for dtype in [DType::F16, DType::BF16] {
                    check_matmul(&dev, m, n, k, cfg, dtype)?;
                }
            }
        }
        // LLM-sized K, split 8 ways (22 and 8 column blocks); the second with a K tail chunk
        check_matmul(&dev, 64, 2752, 4096, Int4Config::default(), DType::F16)?;
        check_matmul(&dev, 17, 1000, 4160, Int4Config { group_size: 64, symmetric: false }, DType::BF16)?;
        // above CUDA_TC_MAX_M: the Hopper RS wgmma GEMM on compute capability 9.0, else (and f32)
        // dequantize + matmul
        for (m, dtype) in [(tc_max + 1, DType::F16), (1023, DType::BF16), (40, DType::F32)] {
            check_matmul(&dev, m, 24, 256, Int4Config::default(), dtype)?;
        }
        // [2, 20, K] f16 starting at an odd offset: M = 40 rows, copied to an aligned buffer first
        let w = randn(&[72, 256], DType::F32, &dev)?;
        let q = Int4Weight::quantize(&w, Int4Config { group_size: 32, symmetric: true })?;
        let big = randn(&[1, 40 * 256 + 1], DType::F16, &dev)?;
        let xo = big.narrow(1, 1, 40 * 256)?.reshape((2, 20, 256))?;
        let y = int4_matmul(&xo, &q)?;
        assert_eq!(y.dims(), [2, 20, 72]);
        assert_matches_dequantized(&xo.contiguous()?, &q, &y, "offset 3-D f16 x")?;
    }
    Ok(())
}

/// CUDA_RS_MIN_M < M <= CUDA_TC_MAX_M (f16 / bf16): on Hopper the transposed-RS wgmma GEMM for
/// N % 8 == 0 (before the 6th session the TMA GEMM of kernels/int4_gemm_tma.cuh),
/// elsewhere the tensor-core GEMM. M not a multiple of 128, N a multiple of 8 but not of the column block, N
/// below one column block (N=16: boxes larger than the tensor), both column blocks (N=11008 and
/// 132 SMs pick 168 columns, the smaller N 128), K with a tail chunk of 3 words (K=96: two 64-wide
/// stages, the second partly past K, zero-filled by the copy engine), 1 word (K=160) and 2 words
/// (one stage; group sizes 32 and 64), every group size, sym and asym. CUDA only.
#[test]
fn matmul_hopper_wgmma_path() -> Result<()> {
    let tc_max = tiny_gemm::quant::CUDA_TC_MAX_M;
    for dev in devices().into_iter().filter(|d| d.is_cuda()) {
        for cfg in configs() {
            let gs = cfg.group_size;
            for (m, n, k) in [(65, 1000, 3 * gs), (130, 344, 14 * gs), (tc_max, 1352, 5 * gs), (100, 16, 2 * gs)] {
                for dtype in [DType::F16, DType::BF16] {
                    check_matmul(&dev, m, n, k, cfg, dtype)?;
                }
            }
        }
        check_matmul(&dev, 129, 4096, 1024, Int4Config::default(), DType::F16)?;
        // 132 SMs: 168-column blocks; N % 168 != 0, N odd (the tensor-core GEMM) with a 3-word K
        // tail, N % 8 == 0 with a 1-word tail
        check_matmul(&dev, tc_max, 11008, 256, Int4Config::default(), DType::F16)?;
        check_matmul(&dev, 150, 11001, 96, Int4Config { group_size: 32, symmetric: true }, DType::BF16)?;
        check_matmul(&dev, 160, 11000, 160, Int4Config { group_size: 32, symmetric: false }, DType::F16)?;
    }
    Ok(())
}

/// A small TMA-GEMM problem for compute-sanitizer racecheck (the producer / consumer mbarrier
/// ring, several blocks, a K tail): M=150, N=344, K=416.
#[test]
fn matmul_hopper_wgmma_small() -> Result<()> {
    for dev in devices().into_iter().filter(|d| d.is_cuda()) {
        check_matmul(&dev, 150, 344, 416, Int4Config { group_size: 32, symmetric: false }, DType::F16)?;
    }
    Ok(())
}

/// CUDA_RS_MIN_M < M <= CUDA_RS_MAX_M (f16 / bf16): on Hopper the transposed-RS wgmma GEMM for
/// N % 8 == 0 (kernels/int4_gemm_rs.cuh: 128 output features x 88 / 128 / 176 tokens per block),
/// elsewhere (N odd, above CUDA_RS_MAX_M, other GPUs) dequantize + matmul. M not a multiple of any
/// token block, N a multiple of 8 but not of 128, N below one feature block (N=16: boxes larger than
/// the tensor), every token block (132 SMs: the small grids 88, M=384 x N=4096 128, M=512 / 520 x
/// N=11008 176), K with
/// tail chunks of 3 words (K=96: two x boxes, the second partly past K), 1 word (K=160 and 416:
/// one x box) and 2 words (K=192 with group size 64: one full x box), every group size, sym and
/// asym. CUDA only.
#[test]
fn matmul_hopper_rs_path() -> Result<()> {
    let (tc_max, rs_max) = (tiny_gemm::quant::CUDA_TC_MAX_M, tiny_gemm::quant::CUDA_RS_MAX_M);
    for dev in devices().into_iter().filter(|d| d.is_cuda()) {
        for cfg in configs() {
            let gs = cfg.group_size;
            for (m, n, k) in [(tc_max + 1, 1000, 3 * gs), (300, 344, 14 * gs), (1023, 136, 5 * gs), (257, 16, 2 * gs)] {
                for dtype in [DType::F16, DType::BF16] {
                    check_matmul(&dev, m, n, k, cfg, dtype)?;
                }
            }
        }
        check_matmul(&dev, 384, 4096, 1024, Int4Config::default(), DType::BF16)?;
        check_matmul(&dev, 512, 11008, 256, Int4Config::default(), DType::F16)?;
        check_matmul(&dev, 520, 11008, 160, Int4Config { group_size: 32, symmetric: false }, DType::BF16)?;
        check_matmul(&dev, rs_max, 264, 4160, Int4Config { group_size: 32, symmetric: false }, DType::BF16)?;
        check_matmul(&dev, 600, 1352, 96, Int4Config { group_size: 32, symmetric: true }, DType::BF16)?;
        check_matmul(&dev, 700, 1000, 160, Int4Config { group_size: 32, symmetric: false }, DType::F16)?;
        check_matmul(&dev, 400, 72, 192, Int4Config { group_size: 64, symmetric: false }, DType::F16)?;
        // above CUDA_RS_MAX_M and N odd: dequantize + matmul on every device
        check_matmul(&dev, rs_max + 1, 24, 256, Int4Config::default(), DType::F16)?;
        check_matmul(&dev, 300, 1001, 256, Int4Config::default(), DType::F16)?;
    }
    Ok(())
}

/// A small RS-GEMM problem for compute-sanitizer racecheck (the mbarrier ring, the epilogue's
/// staging in the ring's space, several blocks, a 1-word K tail): M=300, N=344, K=416.
#[test]
fn matmul_hopper_rs_small() -> Result<()> {
    for dev in devices().into_iter().filter(|d| d.is_cuda()) {
        check_matmul(&dev, 300, 344, 416, Int4Config { group_size: 32, symmetric: false }, DType::F16)?;
    }
    Ok(())
}

/// A small problem on the RS GEMM's 192-token blocks for compute-sanitizer racecheck (M=190 at
/// N=11008: one token block per feature block, src/quant/launch.rs `rs_wide_n_shapes`; K=256).
#[test]
fn matmul_hopper_rs_t192_small() -> Result<()> {
    for dev in devices().into_iter().filter(|d| d.is_cuda()) {
        check_matmul(&dev, 190, 11008, 256, Int4Config { group_size: 64, symmetric: false }, DType::BF16)?;
    }
    Ok(())
}

/// Bias and every activation in the RS GEMM's epilogue (M=520: 176-token blocks, N=136: a partial
/// feature block), f16 and bf16, sym and asym.
#[test]
fn linear_bias_act_rs_path() -> Result<()> {
    for dev in devices().into_iter().filter(|d| d.is_cuda()) {
        for (dtype, symmetric) in [(DType::F16, false), (DType::BF16, true)] {
            check_linear(&dev, 520, 136, 256, Int4Config { group_size: 64, symmetric }, dtype)?;
        }
    }
    Ok(())
}

/// The RS GEMM at wide N (src/quant/launch.rs `rs_wide_n_shapes` pins each shape here to its token
/// block on 132 SMs): 128-token blocks for M=100 (CUDA_RS_MIN_M < M <= CUDA_TC_MAX_M: the range the
/// RS GEMM took over from the TMA GEMM) and above, 192-token blocks at M=185 / 190 (partial token
/// blocks), 176-token blocks at M=512 / 520, odd feature-block
/// counts (N=11136, 4104, 2056), K tails of 1 .. 3 words, every group size, sym / asym, f16 / bf16,
/// bias and every activation. CUDA only.
#[test]
fn matmul_hopper_rs_wide_n() -> Result<()> {
    for dev in devices().into_iter().filter(|d| d.is_cuda()) {
        for cfg in configs() {
            for dtype in [DType::F16, DType::BF16] {
                check_matmul(&dev, 100, 11008, 2 * cfg.group_size, cfg, dtype)?;
                check_matmul(&dev, 190, 11008, 3 * cfg.group_size, cfg, dtype)?;
            }
        }
        check_matmul(&dev, 512, 11136, 256, Int4Config::default(), DType::F16)?;
        check_matmul(&dev, 520, 11136, 160, Int4Config { group_size: 32, symmetric: false }, DType::BF16)?;
        check_matmul(&dev, 1000, 4104, 96, Int4Config { group_size: 32, symmetric: true }, DType::F16)?;
        check_matmul(&dev, 700, 2056, 4160, Int4Config { group_size: 64, symmetric: false }, DType::F16)?;
        check_matmul(&dev, 384, 4096, 1024, Int4Config { group_size: 128, symmetric: false }, DType::BF16)?;
        for (dtype, symmetric) in [(DType::F16, true), (DType::BF16, false)] {
            check_linear(&dev, 384, 4096, 128, Int4Config { group_size: 64, symmetric }, dtype)?;
            check_linear(&dev, 185, 11008, 256, Int4Config { group_size: 128, symmetric }, dtype)?;
        }
    }
    Ok(())
}

#[test]
fn matmul_batched_strided_and_offset_inputs() -> Result<()> {
    for dev in devices() {
        let w = randn(&[40, 256], DType::F32, &dev)?;
        let q = Int4Weight::quantize(&w, Int4Config { group_size: 64, symmetric: false })?;
        // [2, 3, K] input
        let x = randn(&[2, 3, 256], DType::F32, &dev)?;
        let y = int4_matmul(&x, &q)?;
        assert_eq!(y.dims(), [2, 3, 40]);
        assert_matches_dequantized(&x, &q, &y, "3-D x")?;
        // transposed (strided) x and x starting at an odd offset
        let xt = randn(&[256, 5], DType::F32, &dev)?.t()?;
        assert_matches_dequantized(&xt.contiguous()?, &q, &int4_matmul(&xt, &q)?, "strided x")?;
        let big = randn(&[1, 256 * 3 + 1], DType::F32, &dev)?;
        let xo = big.narrow(1, 1, 256 * 3)?.reshape((3, 256))?;
        assert_matches_dequantized(&xo.contiguous()?, &q, &int4_matmul(&xo, &q)?, "offset x")?;
        // M = 0
        let e = int4_matmul(&Tensor::zeros((0, 256), DType::F32, &dev)?, &q)?;
        assert_eq!(e.dims(), [0, 40]);
    }
    Ok(())
}

#[test]
fn round_trip_within_half_a_step() -> Result<()> {
    let (n, k) = (19, 384);
    let gauss = randn(&[n, k], DType::F32, &Device::Cpu)?;
    let mut special = to_vec64(&gauss).iter().map(|&v| v as f32).collect::<Vec<_>>();
    special[..k].fill(0.0); // an all-zero row
    special[k..2 * k].fill(0.3); // a constant row (asymmetric range must include 0)
    special[2 * k + 5] = 40.0; // an outlier
    special[3 * k..4 * k].iter_mut().for_each(|v| *v = v.abs() + 1.0); // all positive
    special[4 * k..5 * k].iter_mut().for_each(|v| *v *= 1e-6); // tiny (subnormal f16 scales)
    let special = Tensor::from_vec(special, (n, k), &Device::Cpu)?;
    for (special, w) in [(false, gauss), (true, special)] {
        for cfg in configs() {
            let q = Int4Weight::quantize(&w, cfg)?;
            let (wv, dv, sv) = (to_vec64(&w), to_vec64(&q.dequantize()?), element_scales(&q));
            for i in 0..n * k {
                let bound = sv[i] / 2.0 * (1.0 + 1e-6);
                assert!((wv[i] - dv[i]).abs() <= bound, "{cfg:?} element {i}: w {} ŵ {} s {}", wv[i], dv[i], sv[i]);
            }
            assert!(!special || dv[..k].iter().all(|&v| v == 0.0), "zero row must stay exactly zero");
            if let Some(z) = q.zeros() {
                assert!(to_vec64(z).iter().all(|&z| z.fract() == 0.0 && (0.0..=15.0).contains(&z)));
            }
            // dequantized values are exactly (q - z) · s: multiples of s
            for i in 0..n * k {
                if sv[i] > 0.0 {
                    let r = dv[i] / sv[i];
                    assert!(r == r.round() && r.abs() <= 15.0, "{cfg:?} element {i}: ŵ/s = {r}");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn dequantize_same_on_every_device_and_dtype() -> Result<()> {
    let w = randn(&[21, 320], DType::F32, &Device::Cpu)?;
    for cfg in configs().into_iter().filter(|c| 320 % c.group_size == 0) {
        let q = Int4Weight::quantize(&w, cfg)?;
        let exact = q.dequantize()?;
        for dev in devices() {
            let qd = q.to_device(&dev)?;
            for dtype in FLOAT_DTYPES {
                let got = to_vec64(&qd.dequantize_to(dtype)?);
                let want = to_vec64(&exact.to_dtype(dtype)?); // one rounding of the exact value
                assert_eq!(got, want, "{dev:?} {dtype:?} {cfg:?}");
            }
        }
    }
    Ok(())
}

#[test]
fn save_load_bit_exact() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("tiny_gemm_int4_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("layers.safetensors");
    let layers: Vec<(String, Int4Weight)> = configs()
        .into_iter()
        .enumerate()
        .map(|(i, cfg)| {
            Ok((format!("layer{i}.mlp"), Int4Weight::quantize(&randn(&[17 + i, 384], DType::F32, &Device::Cpu)?, cfg)?))
        })
        .collect::<Result<_>>()?;
    let refs: Vec<(&str, &Int4Weight)> = layers.iter().map(|(n, w)| (n.as_str(), w)).collect();
    save_int4(&path, &refs)?;
    for dev in devices() {
        let loaded = load_int4(&path, &dev)?;
        assert_eq!(loaded.len(), layers.len());
        for (name, w) in &layers {
            let l = &loaded[name];
            assert_eq!(l.config(), w.config());
            assert_eq!((l.out_features(), l.in_features()), (w.out_features(), w.in_features()));
            assert!(l.device().same_device(&dev));
            let bits = |t: &Tensor| {
                t.to_device(&Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            assert_eq!(bits(l.packed()), bits(w.packed()), "{name} packed");
            assert_eq!(bits(l.scales()), bits(w.scales()), "{name} scales");
            assert_eq!(l.zeros().map(bits), w.zeros().map(bits), "{name} zeros");
        }
    }
    // single-weight helpers
    let one = &layers[1].1;
    let p1 = dir.join("one.safetensors");
    one.save(&p1)?;
    let back = Int4Weight::load(&p1, &Device::Cpu)?;
    assert_eq!(to_vec64(&back.dequantize()?), to_vec64(&one.dequantize()?));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bad_config_and_shapes_are_errors() -> Result<()> {
    let dev = Device::Cpu;
    let w = Tensor::zeros((8, 100), DType::F32, &dev)?;
    let msg = err_text(Int4Weight::quantize(&w, Int4Config { group_size: 32, symmetric: true }));
    assert!(msg.contains("K=100") && msg.contains("32"), "{msg}");
    for gs in [0, 16, 48, 256] {
        let w = Tensor::zeros((8, 768), DType::F32, &dev)?;
        let msg = err_text(Int4Weight::quantize(&w, Int4Config { group_size: gs, symmetric: false }));
        assert!(msg.contains(&format!("group size {gs}")), "{msg}");
    }
    let msg = err_text(Int4Weight::quantize(&Tensor::zeros(128, DType::F32, &dev)?, Int4Config::default()));
    assert!(msg.contains("2-D"), "{msg}");
    let msg = err_text(Int4Weight::quantize(&Tensor::zeros((0, 128), DType::F32, &dev)?, Int4Config::default()));
    assert!(msg.contains("N=0"), "{msg}");
    let mut v = vec![0.5f32; 8 * 128];
    v[300] = f32::NAN;
    let msg = err_text(Int4Weight::quantize(&Tensor::from_vec(v, (8, 128), &dev)?, Int4Config::default()));
    assert!(msg.contains("not finite"), "{msg}");
    let msg = err_text(Int4Weight::quantize(&Tensor::full(1e9f32, (8, 128), &dev)?, Int4Config::default()));
    assert!(msg.contains("f16"), "{msg}");

    let q = Int4Weight::quantize(&randn(&[8, 256], DType::F32, &dev)?, Int4Config::default())?;
    let msg = err_text(int4_matmul(&Tensor::zeros((2, 255), DType::F32, &dev)?, &q));
    assert!(msg.contains("255") && msg.contains("K=256"), "{msg}");
    for dtype in [DType::F64, DType::U32, DType::U8] {
        let msg = err_text(int4_matmul(&Tensor::zeros((2, 256), dtype, &dev)?, &q));
        assert!(msg.contains("int4_matmul"), "{msg}");
    }
    let msg = err_text(q.dequantize_to(DType::U8));
    assert!(msg.contains("dequantize"), "{msg}");
    let msg = err_text(Int4Linear::new(q.clone(), Some(Tensor::zeros(7, DType::F32, &dev)?)));
    assert!(msg.contains("[7]") && msg.contains("[8]"), "{msg}");
    Ok(())
}

#[cfg(feature = "cuda")]
#[test]
fn device_mismatch_is_an_error() -> Result<()> {
    let gpu = common::cuda_device();
    let q = Int4Weight::quantize(&randn(&[8, 128], DType::F32, &Device::Cpu)?, Int4Config::default())?;
    let msg = err_text(int4_matmul(&Tensor::zeros((1, 128), DType::F32, &gpu)?, &q));
    assert!(msg.contains("Cpu") && msg.contains("Cuda"), "{msg}");
    let qg = q.to_device(&gpu)?;
    let msg = err_text(int4_matmul(&Tensor::zeros((1, 128), DType::F32, &Device::Cpu)?, &qg));
    assert!(msg.contains("Cpu") && msg.contains("Cuda"), "{msg}");
    Ok(())
}

#[test]
fn bad_files_are_errors() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("tiny_gemm_int4_bad_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let good = dir.join("good.safetensors");
    let q = Int4Weight::quantize(
        &randn(&[24, 256], DType::F32, &Device::Cpu)?,
        Int4Config { group_size: 64, symmetric: false },
    )?;
    q.save(&good)?;
    let bytes = std::fs::read(&good)?;
    let bad = dir.join("bad.safetensors");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // truncated anywhere: in the length prefix, the header, the data
    for cut in [0, 4, 9, header_len / 2, 8 + header_len, bytes.len() - 1] {
        std::fs::write(&bad, &bytes[..cut])?;
        err_text(Int4Weight::load(&bad, &Device::Cpu));
    }
    // one flipped bit in the data: packed codes, scales, the last byte
    for pos in [8 + header_len, 8 + header_len + 1000, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[pos] ^= 0x10;
        std::fs::write(&bad, &b)?;
        let msg = err_text(Int4Weight::load(&bad, &Device::Cpu));
        assert!(msg.contains("checksum"), "{msg}");
    }
    // tampered metadata: the config no longer matches the tensors, a different version
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
    for (from, to, expect) in [
        ("n=24,", "n=16,", "config needs"),
        ("group_size=64", "group_size=32", "config needs"),
        ("symmetric=false", "symmetric=truee", "bad config"),
        // a file of format version 1 (the nibble order before 2026-11-26) is rejected
        ("\"format_version\":\"2\"", "\"format_version\":\"1\"", "version"),
    ] {
        assert!(header.contains(from), "{from} not in {header}");
        let h = header.replacen(from, to, 1);
        let pad = h.len() as i64 - header_len as i64;
        let mut b = Vec::new();
        b.extend((h.len() as u64).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(&bytes[8 + header_len..]);
        std::fs::write(&bad, &b)?;
        let msg = err_text(Int4Weight::load(&bad, &Device::Cpu));
        assert!(msg.contains(expect), "{from}->{to} (len {pad:+}): {msg}");
    }
    // not a file of ours
    std::fs::write(&bad, b"not a safetensors file at all")?;
    err_text(Int4Weight::load(&bad, &Device::Cpu));
    err_text(Int4Weight::load(dir.join("missing.safetensors"), &Device::Cpu));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn int4_linear_matches_candle_linear_on_dequantized_weight() -> Result<()> {
    for dev in devices() {
        let w = (randn(&[48, 256], DType::F32, &dev)? * 0.1)?;
        let b = randn(&[48], DType::F32, &dev)?;
        let cfg = Int4Config { group_size: 32, symmetric: true };
        let layer = Int4Linear::from_linear(&candle_nn::Linear::new(w.clone(), Some(b.clone())), cfg)?;
        let stock = candle_nn::Linear::new(layer.weight().dequantize()?, Some(b.clone()));
        let x = randn(&[3, 256], DType::F32, &dev)?;
        // CUDA rounds x and ŵ to f16 inside the kernel (see `tolerance`)
        let tol = if dev.is_cuda() { (1e-2, 1e-2) } else { (1e-4, 1e-4) };
        common::assert_close(&layer.forward(&x)?, &stock.forward(&x)?, tol, "Int4Linear");
        let no_bias = Int4Linear::new(layer.weight().clone(), None)?;
        assert!(no_bias.bias().is_none());
        let x16 = x.to_dtype(DType::F16)?;
        assert_eq!(layer.forward(&x16)?.dtype(), DType::F16);
    }
    Ok(())
}

#[test]
fn report_measures_each_layer() -> Result<()> {
    let dev = Device::Cpu;
    let mut coarse = QuantReport::new(Int4Config { group_size: 128, symmetric: true });
    let mut fine = QuantReport::new(Int4Config { group_size: 32, symmetric: false });
    let x = randn(&[8, 512], DType::F32, &dev)?;
    for name in ["q_proj", "up_proj"] {
        let w = randn(&[64, 512], DType::F32, &dev)?;
        coarse.quantize_layer(name, &w, &x)?;
        fine.quantize_layer(name, &w, &x)?;
    }
    for r in [&coarse, &fine] {
        assert_eq!(r.layers.len(), 2);
        for l in &r.layers {
            assert!(l.weight_rel_err > 0.0 && l.weight_rel_err < 0.2, "{l:?}");
            assert!(l.output_rel_err > 0.0 && l.output_rel_err < 0.2, "{l:?}");
        }
        let table = r.to_string();
        assert!(table.contains("q_proj") && table.contains("up_proj"), "{table}");
    }
    // smaller asymmetric groups fit better
    assert!(fine.layers[0].weight_rel_err < coarse.layers[0].weight_rel_err);
    assert!(fine.worst_output_rel_err() < coarse.worst_output_rel_err());
    Ok(())
}

/// Manual timing on a loaded machine: process CPU time per call (`cargo test --release --test
/// int4 -- --ignored --nocapture cpu_time`).
#[test]
#[ignore]
fn cpu_time_per_call() -> Result<()> {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    fn cpu_ticks() -> u64 {
        let s = std::fs::read_to_string("/proc/self/stat").unwrap();
        let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }
    let dev = Device::Cpu;
    let (n, k) = (11008, 4096);
    let w = (randn(&[n, k], DType::F32, &dev)? * 0.02)?;
    let q = Int4Weight::quantize(&w, Int4Config::default())?;
    let q40 = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q4_0)?)?;
    for m in [1, 4, 16] {
        let x = randn(&[m, k], DType::F32, &dev)?;
        let iters = 20;
        let run = |name: &str, f: &dyn Fn() -> Result<Tensor>| -> Result<()> {
            f()?;
            let (t0, c0) = (std::time::Instant::now(), cpu_ticks());
            for _ in 0..iters {
                f()?;
            }
            let (wall, cpu) =
                (t0.elapsed().as_secs_f64() / iters as f64, (cpu_ticks() - c0) as f64 / 100.0 / iters as f64);
            println!("m={m:3} {name:12} wall {:8.3} ms  cpu {:8.3} ms", wall * 1e3, cpu * 1e3);
            Ok(())
        };
        run("int4", &|| int4_matmul(&x, &q))?;
        run("q4_0", &|| q40.forward(&x))?;
        run("f32 matmul", &|| x.matmul(&w.t()?))?;
    }
    Ok(())
}

/// Asserts `y == act(x · dequantize(q)ᵀ + bias)` (f64 sums; the activation of the f64
/// pre-activation evaluated in f32) within `tolerance`'s bounds: the pre-activation's bound times
/// the activations' largest slope (< 1.2), plus one output rounding.
fn assert_linear_matches_f64(
    x: &Tensor,
    q: &Int4Weight,
    bias: Option<&Tensor>,
    act: Activation,
    y: &Tensor,
    what: &str,
) -> Result<()> {
    let (n, k) = (q.out_features(), q.in_features());
    let m = x.elem_count() / k;
    assert_eq!(y.elem_count(), m * n, "{what}: output size");
    let (xv, wv, sv, yv) = (to_vec64(x), to_vec64(&q.dequantize()?), element_scales(q), to_vec64(y));
    let bv = bias.map(to_vec64);
    let (c_acc, c_out) = tolerance(x.device(), x.dtype());
    for mi in 0..m {
        for ni in 0..n {
            let (mut pre, mut size) = (bv.as_ref().map_or(0.0, |b| b[ni]), 0f64);
            for ki in 0..k {
                let (a, b) = (xv[mi * k + ki], wv[ni * k + ki]);
                pre += a * b;
                size += a.abs() * (b.abs() + 16.0 * sv[ni * k + ki]);
            }
            let want = act.apply_f32(pre as f32) as f64;
            let got = yv[mi * n + ni];
            let tol = 1.2 * (c_acc * size + 1e-6 * pre.abs()) + c_out * want.abs() + 1e-6;
            assert!((got - want).abs() <= tol, "{what} at ({mi}, {ni}): got {got}, want {want}, tol {tol}");
        }
    }
    Ok(())
}

/// `int4_linear(x, q, bias, act)` against `int4_matmul` + the stock bias/activation composition
/// (`reference::bias_act`) and against f64.
fn check_linear(dev: &Device, m: usize, n: usize, k: usize, cfg: Int4Config, dtype: DType) -> Result<()> {
    let w = (randn(&[n, k], DType::F32, dev)? * 0.05)?;
    let q = Int4Weight::quantize(&w, cfg)?;
    let x = randn(&[m, k], dtype, dev)?;
    let b = randn(&[n], dtype, dev)?;
    let plain = int4_matmul(&x, &q)?;
    for (i, act) in Activation::ALL.into_iter().enumerate() {
        for bias in [None, Some(&b)] {
            if (i + m) % 2 == 1 && bias.is_none() && act != Activation::Identity {
                continue; // every activation with a bias; without one, half of them per M
            }
            let what = format!("{dev:?} {dtype:?} {cfg:?} M={m} N={n} K={k} {act} bias={}", bias.is_some());
            let y = int4_linear(&x, &q, bias, act)?;
            assert_eq!((y.dims(), y.dtype()), (&[m, n][..], dtype), "{what}");
            assert!(y.device().same_device(dev));
            // the composition rounds the matmul output once more: twice the one-rounding tolerance
            let (atol, rtol) = common::tolerance(dtype);
            let want = tiny_gemm::reference::bias_act(&plain, bias, act)?;
            common::assert_close(&y, &want, (4.0 * atol, 2.0 * rtol), &format!("{what} vs composition"));
            assert_linear_matches_f64(&x, &q, bias, act, &y, &what)?;
        }
    }
    Ok(())
}

#[test]
fn linear_bias_act_matches_composition_and_f64() -> Result<()> {
    for dev in devices() {
        for dtype in FLOAT_DTYPES {
            for (i, m) in [1, 7, 16, 17, 64, 300].into_iter().enumerate() {
                let symmetric = i % 2 == 0;
                check_linear(&dev, m, 40, 256, Int4Config { group_size: 64, symmetric }, dtype)?;
                check_linear(&dev, m, 24, 128, Int4Config { group_size: 32, symmetric: !symmetric }, dtype)?;
            }
        }
    }
    Ok(())
}

/// Long K and few columns: the CUDA kernels split K and `int4_reduce` runs the epilogue.
#[test]
fn linear_bias_act_split_k() -> Result<()> {
    for dev in devices() {
        for dtype in FLOAT_DTYPES {
            for m in [1, 9, 17, 40] {
                let cfg = Int4Config { group_size: 128, symmetric: m % 2 == 0 };
                let w = (randn(&[24, 4096], DType::F32, &dev)? * 0.02)?;
                let q = Int4Weight::quantize(&w, cfg)?;
                let (x, b) = (randn(&[m, 4096], dtype, &dev)?, randn(&[24], dtype, &dev)?);
                let what = format!("{dev:?} {dtype:?} {cfg:?} M={m} split-K");
                // every activation (one `int4_reduce` entry each), with and without a bias
                for (i, act) in Activation::ALL.into_iter().enumerate() {
                    let bias = (i % 2 == m % 2).then_some(&b);
                    let y = int4_linear(&x, &q, bias, act)?;
                    assert_linear_matches_f64(&x, &q, bias, act, &y, &format!("{what} {act:?}"))?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn linear_forward_act_and_bias_dtype_cast() -> Result<()> {
    for dev in devices() {
        let w = (randn(&[32, 128], DType::F32, &dev)? * 0.1)?;
        let b = randn(&[32], DType::F32, &dev)?;
        let layer = Int4Linear::new(Int4Weight::quantize(&w, Int4Config::default())?, Some(b.clone()))?;
        let x = randn(&[5, 128], DType::F16, &dev)?;
        // the f32 bias is cast to the activations' f16 once
        let b16 = b.to_dtype(DType::F16)?;
        let want = int4_linear(&x, layer.weight(), Some(&b16), Activation::Relu)?;
        let got = layer.forward_act(&x, Activation::Relu)?;
        common::assert_close(&got, &want, (0.0, 0.0), "forward_act");
        let got = layer.forward(&x)?;
        common::assert_close(
            &got,
            &int4_linear(&x, layer.weight(), Some(&b16), Activation::Identity)?,
            (0.0, 0.0),
            "forward",
        );
    }
    Ok(())
}

#[test]
fn linear_bad_bias_is_an_error() -> Result<()> {
    for dev in devices() {
        let q = Int4Weight::quantize(&randn(&[8, 128], DType::F32, &dev)?, Int4Config::default())?;
        let x = randn(&[2, 128], DType::F32, &dev)?;
        for shape in [&[7][..], &[9], &[1, 8], &[8, 1]] {
            let msg =
                err_text(int4_linear(&x, &q, Some(&Tensor::zeros(shape, DType::F32, &dev)?), Activation::Identity));
            assert!(msg.contains("bias has shape") && msg.contains("[8]"), "{msg}");
        }
        for dtype in [DType::F16, DType::BF16, DType::F64, DType::U32] {
            let msg = err_text(int4_linear(&x, &q, Some(&Tensor::zeros(8, dtype, &dev)?), Activation::Gelu));
            assert!(msg.contains("bias dtype"), "{msg}");
        }
        let msg = err_text(int4_linear(&x.to_dtype(DType::U32)?, &q, None, Activation::Relu));
        assert!(msg.contains("int4_linear"), "{msg}");
        let msg = err_text(int4_linear(&Tensor::zeros((2, 64), DType::F32, &dev)?, &q, None, Activation::Relu));
        assert!(msg.contains("K=128"), "{msg}");
    }
    #[cfg(feature = "cuda")]
    {
        let gpu = common::cuda_device();
        let q = Int4Weight::quantize(&randn(&[8, 128], DType::F32, &gpu)?, Int4Config::default())?;
        let x = randn(&[2, 128], DType::F32, &gpu)?;
        let msg = err_text(int4_linear(&x, &q, Some(&Tensor::zeros(8, DType::F32, &Device::Cpu)?), Activation::Silu));
        assert!(msg.contains("bias is on") && msg.contains("Cpu"), "{msg}");
    }
    Ok(())
}
