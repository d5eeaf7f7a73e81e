//! int4_matmul vs stock candle on the same weights: the dense matmul (f16 on CUDA, f32 on the
//! CPU) and candle's GGUF Q4_0 `QMatMul` (f32 activations, which is what it takes).
//! Names: `<device>/int4/<K>x<N>/m<M>/<variant>`.

mod common;

use std::time::Duration;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tiny_gemm::quant::{int4_matmul, Int4Config, Int4Weight};

fn bench(c: &mut Criterion) {
    for (dev_name, dev) in common::devices() {
        let (dtype, ms): (DType, &[usize]) = if dev.is_cuda() {
            (DType::F16, &[1, 4, 16, 17, 32, 64, 128, 192, 256, 384, 512, 1024])
        } else {
            (DType::F32, &[1, 4, 16])
        };
        for (k, n) in [(4096, 11008), (2048, 2048)] {
            let w = (Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap() * 0.02).unwrap();
            let q = Int4Weight::quantize(&w, Int4Config::default()).unwrap();
            let q4_0 = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q4_0).unwrap()).unwrap();
            let w_dense = w.to_dtype(dtype).unwrap();
            for &m in ms {
                let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
                let xd = x.to_dtype(dtype).unwrap();
                let mut g = c.benchmark_group(format!("{dev_name}/int4/{k}x{n}/m{m}"));
                if !dev.is_cuda() {
                    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
                }
                // the int4 weight bytes: what bounds every variant at small M
                g.throughput(Throughput::Bytes(q.size_in_bytes() as u64));
                g.bench_function(format!("int4_{dtype:?}"), |b| common::iter_gpu(b, &dev, || int4_matmul(&xd, &q)));
                if dev.is_cuda() {
                    let xb = x.to_dtype(DType::BF16).unwrap();
                    g.bench_function("int4_BF16", |b| common::iter_gpu(b, &dev, || int4_matmul(&xb, &q)));
                }
                if dev.is_cuda() && m > tiny_gemm::quant::CUDA_TC_MAX_M {
                    // the large-M path off Hopper (and on Hopper before the wgmma GEMMs): the weight
                    // dequantized per call, then candle's matmul
                    g.bench_function(format!("int4_{dtype:?}_dequantize_matmul"), |b| {
                        common::iter_gpu(b, &dev, || xd.matmul(&q.dequantize_to(dtype)?.t()?))
                    });
                }
                g.bench_function(format!("candle_{dtype:?}_matmul"), |b| {
                    common::iter_gpu(b, &dev, || xd.matmul(&w_dense.t()?))
                });
                g.bench_function("candle_q4_0_qmatmul", |b| common::iter_gpu(b, &dev, || q4_0.forward(&x)));
                g.finish();
            }
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
