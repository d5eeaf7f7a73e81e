//! bias_act vs stock candle (`broadcast_add` + activation), CPU and CUDA.
//! Names: `<device>/bias_act/<dtype>/<rows>x<cols>/<variant>`.

mod common;

use candle_core::{DType, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tiny_gemm::{bias_act, reference, Activation};

fn bench(c: &mut Criterion) {
    for (dev_name, dev) in common::devices() {
        let dtype = if dev.is_cuda() { DType::F16 } else { DType::F32 };
        for (rows, cols) in [(1, 3072), (16, 3072), (512, 3072)] {
            let x = Tensor::randn(0f32, 1.0, (rows, cols), &dev).unwrap().to_dtype(dtype).unwrap();
            let b = Tensor::randn(0f32, 1.0, cols, &dev).unwrap().to_dtype(dtype).unwrap();
            let mut g = c.benchmark_group(format!("{dev_name}/bias_act/{dtype:?}/{rows}x{cols}"));
            // one read and one write of x
            g.throughput(Throughput::Bytes((2 * rows * cols * dtype.size_in_bytes()) as u64));
            let act = Activation::GeluTanh;
            g.bench_function("fused", |bch| common::iter_gpu(bch, &dev, || bias_act(&x, Some(&b), act)));
            g.bench_function("stock", |bch| common::iter_gpu(bch, &dev, || reference::bias_act(&x, Some(&b), act)));
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
