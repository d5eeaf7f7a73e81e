//! fused_attention vs stock candle attention (`matmul → scale → mask → softmax_last_dim →
//! matmul`, the causal mask built once outside the timed loop), on the CPU (f32) and CUDA (f16).
//! Names: `<device>/attn_<sweep>/<dtype>/<fixed dims>/<variant>/<swept value>`.

mod common;

use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tiny_gemm::{fused_attention, reference, AttentionConfig};

struct Shape4 {
    b: usize,
    h: usize,
    nq: usize,
    nk: usize,
    d: usize,
    causal: bool,
}

impl Shape4 {
    /// Multiply-adds x2 of the two products, halved (about) by a causal square mask.
    fn flops(&self) -> u64 {
        let full = 4 * self.b * self.h * self.nq * self.nk * self.d;
        (if self.causal && self.nq == self.nk { full / 2 } else { full }) as u64
    }
}

fn bench_pair(c: &mut Criterion, dev: &Device, group: &str, param: usize, s: &Shape4) {
    let dtype = if dev.is_cuda() { DType::F16 } else { DType::F32 };
    // Made on first use, so a filtered run (e.g. `--bench cuda/attn_decode`) skips the other
    // cases' setup: their inputs, their check and the first load of their kernels.
    let setup = std::cell::OnceCell::new();
    let inputs = || {
        setup.get_or_init(|| {
            let rand = |h, n| Tensor::randn(0f32, 1.0, (s.b, h, n, s.d), dev).unwrap().to_dtype(dtype).unwrap();
            let (q, k, v) = (rand(s.h, s.nq), rand(s.h, s.nk), rand(s.h, s.nk));
            let mask = s.causal.then(|| reference::causal_mask(s.nq, s.nk, dtype, dev).unwrap());
            // the two agree before they are timed
            let cfg = AttentionConfig { causal: s.causal, ..Default::default() };
            let (fused, want) =
                (fused_attention(&q, &k, &v, s.causal).unwrap(), reference::attention(&q, &k, &v, &cfg).unwrap());
            let diff = (fused.to_dtype(DType::F32).unwrap() - want.to_dtype(DType::F32).unwrap()).unwrap();
            let diff = diff.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 0.05, "{group}/{param}: fused and stock differ by {diff}");
            (q, k, v, mask)
        })
    };

    let mut g = c.benchmark_group(format!("{}/{group}/{dtype:?}", if dev.is_cuda() { "cuda" } else { "cpu" }));
    g.throughput(Throughput::Elements(s.flops()));
    g.bench_with_input(BenchmarkId::new("fused", param), &param, |bch, _| {
        let (q, k, v, _) = inputs();
        common::iter_gpu(bch, dev, || fused_attention(q, k, v, s.causal))
    });
    if tiny_gemm::attention::hopper_prefill_available(dev).unwrap() {
        // the portable kernels on the same GPU (the Hopper kernel takes "fused" where it applies)
        g.bench_with_input(BenchmarkId::new("fused_portable", param), &param, |bch, _| {
            let (q, k, v, _) = inputs();
            tiny_gemm::testing::set_hopper_attention(false);
            common::iter_gpu(bch, dev, || fused_attention(q, k, v, s.causal));
            tiny_gemm::testing::set_hopper_attention(true);
        });
    }
    g.bench_with_input(BenchmarkId::new("stock", param), &param, |bch, _| {
        let (q, k, v, mask) = inputs();
        common::iter_gpu(bch, dev, || reference::attention_with_mask(q, k, v, mask.as_ref()))
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    for (_, dev) in common::devices() {
        // sequence-length sweep, the seed's shape [1, 8, N, 64], causal
        for n in [128, 256, 512, 1024, 2048] {
            bench_pair(
                c,
                &dev,
                "attn_seq/b1_h8_d64_causal",
                n,
                &Shape4 { b: 1, h: 8, nq: n, nk: n, d: 64, causal: true },
            );
        }
        // batch sweep [B, 8, 512, 64], causal
        for b in [1, 2, 4, 8, 16] {
            bench_pair(
                c,
                &dev,
                "attn_batch/h8_n512_d64_causal",
                b,
                &Shape4 { b, h: 8, nq: 512, nk: 512, d: 64, causal: true },
            );
        }
        // decode: one query over a cache of Nk keys, [1, 32, ., 128]
        for nk in [512, 2048, 8192] {
            bench_pair(
                c,
                &dev,
                "attn_decode/b1_h32_q1_d128",
                nk,
                &Shape4 { b: 1, h: 32, nq: 1, nk, d: 128, causal: true },
            );
        }
        if dev.is_cuda() {
            // the largest prefill, [1, 32, 4096, 128]
            let n = 4096;
            let shape = Shape4 { b: 1, h: 32, nq: n, nk: n, d: 128, causal: true };
            bench_pair(c, &dev, "attn_seq/b1_h32_d128_causal", n, &shape);
        }
    }
}

criterion_group! {
    name = benches;
    // short runs: GPU time is scarce and each point is a mean over many calls anyway
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(10);
    targets = bench
}
criterion_main!(benches);
