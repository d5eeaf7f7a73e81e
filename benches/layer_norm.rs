//! add_layer_norm vs stock candle (`x + r`, then `candle_nn::LayerNorm`), CPU and CUDA.
//! Names: `<device>/add_layer_norm/<dtype>/<rows>x<cols>/<variant>`.

mod common;

use candle_core::{DType, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tiny_gemm::{add_layer_norm, reference};

fn bench(c: &mut Criterion) {
    for (dev_name, dev) in common::devices() {
        let dtype = if dev.is_cuda() { DType::F16 } else { DType::F32 };
        // decode (1 row) and prefill (512 rows) at GPT-2 small and medium widths
        for (rows, cols) in [(1, 768), (1, 1024), (512, 768), (512, 1024)] {
            let rnd = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &dev).unwrap().to_dtype(dtype).unwrap();
            let (x, r, g, b) = (rnd(&[rows, cols]), rnd(&[rows, cols]), rnd(&[cols]), rnd(&[cols]));
            let mut grp = c.benchmark_group(format!("{dev_name}/add_layer_norm/{dtype:?}/{rows}x{cols}"));
            // reads x and r, writes the sum and the normalized output
            grp.throughput(Throughput::Bytes((4 * rows * cols * dtype.size_in_bytes()) as u64));
            grp.bench_function("fused", |bch| {
                common::iter_gpu(bch, &dev, || add_layer_norm(&x, Some(&r), &g, Some(&b), 1e-5))
            });
            grp.bench_function("stock", |bch| {
                common::iter_gpu(bch, &dev, || reference::add_layer_norm(&x, Some(&r), &g, Some(&b), 1e-5))
            });
            grp.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
