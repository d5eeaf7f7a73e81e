//! The CPU projection for small M: `y[m, n] = epilogue(x[m, :]·W[:, n] + b[n])`.
//!
//! Parallel over tiles of [`TILE_N`] output columns (rayon); each task accumulates its
//! `[m, TILE_N]` tile (and the matching up-projection tile when gated) in f32, applies bias +
//! activation (+ gate) while the tile is in L1, and rounds once. Every weight element is read and
//! converted to f32 exactly once per call (half's vectorized slice conversion), then reused for
//! all M tokens. On x86-64 with AVX2 + FMA (detected at run time) the loops are compiled for them.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use super::{Epilogue, WeightLayout};
use crate::cpu::CpuFloat;

/// Output columns per task: 32 f32 accumulators per token stay in L1 for M <= 32, and a
/// 4096-wide layer still splits into 128 tasks.
const TILE_N: usize = 32;
/// Weight rows per block in the `[in, out]` layout (an 8 KiB f32 buffer, L1-resident).
const KB: usize = 64;
/// k elements converted to f32 per step in the `[out, in]` layout (a 2 KiB buffer).
const CHUNK_K: usize = 512;
/// f32 lanes of the dot-product accumulators (one AVX register; LLVM vectorizes the lanes).
const LANES: usize = 8;

/// The problem: x `[m, k]`, W logical `[k, n2]` stored as `layout`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub m: usize,
    pub k: usize,
    pub n2: usize,
    pub layout: WeightLayout,
}

/// A storage type whose rows convert to f32 in bulk.
pub(super) trait RowToF32: CpuFloat {
    fn row_to_f32(src: &[Self], dst: &mut [f32]);
}
impl RowToF32 for f32 {
    fn row_to_f32(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}
impl RowToF32 for f16 {
    fn row_to_f32(src: &[f16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}
impl RowToF32 for bf16 {
    fn row_to_f32(src: &[bf16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}

pub(super) fn project<T: RowToF32>(x: &[T], w: &[T], bias: Option<&[T]>, s: Shape, epi: Epilogue) -> Vec<T> {
    let n = if epi.gated() { s.n2 / 2 } else { s.n2 };
    let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let tiles: Vec<Vec<T>> = (0..n.div_ceil(TILE_N))
        .into_par_iter()
        .map(|tile| {
            let n0 = tile * TILE_N;
            let tn = TILE_N.min(n - n0);
            let gate = accumulate(&x32, w, s, n0, tn);
            let up = epi.gated().then(|| accumulate(&x32, w, s, n + n0, tn));
            let act = epi.act();
            let mut out = Vec::with_capacity(s.m * tn);
            for mi in 0..s.m {
                for j in 0..tn {
                    let mut v = gate[mi * TILE_N + j] + bias.map_or(0.0, |b| b[n0 + j].to_f32());
                    v = act.apply_f32(v);
                    if let Some(up) = &up {
                        v *= up[mi * TILE_N + j] + bias.map_or(0.0, |b| b[n + n0 + j].to_f32());
                    }
                    out.push(T::from_f32(v));
                }
            }
            out
        })
        .collect();
    // Scatter the [m, tn] tiles into the row-major [m, n] output.
    let mut y = vec![T::from_f32(0.0); s.m * n];
    for (tile, vals) in tiles.iter().enumerate() {
        let n0 = tile * TILE_N;
        let tn = TILE_N.min(n - n0);
        for mi in 0..s.m {
            y[mi * n + n0..mi * n + n0 + tn].copy_from_slice(&vals[mi * tn..(mi + 1) * tn]);
        }
    }
    y
}

/// `acc[mi * TILE_N + j] = x[mi, :]·W[:, c0 + j]` for `j < tn`, in f32.
fn accumulate<T: RowToF32>(x: &[f32], w: &[T], s: Shape, c0: usize, tn: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `accumulate_avx2` is compiled for (checked above).
        return unsafe { accumulate_avx2(x, w, s, c0, tn) };
    }
    accumulate_body::<T, false>(x, w, s, c0, tn)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_avx2<T: RowToF32>(x: &[f32], w: &[T], s: Shape, c0: usize, tn: usize) -> Vec<f32> {
    accumulate_body::<T, true>(x, w, s, c0, tn)
}

/// `a * b + c`, fused when `FMA` (the caller is compiled with the fma feature; otherwise
/// `mul_add` would be a libm call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn accumulate_body<T: RowToF32, const FMA: bool>(x: &[f32], w: &[T], s: Shape, c0: usize, tn: usize) -> Vec<f32> {
    let mut acc = vec![0f32; s.m * TILE_N];
    match s.layout {
        // Row k of W holds the tile's columns contiguously: axpy of that row into each token.
        WeightLayout::InOut => {
            // A block of KB weight rows of the tile, converted once, then token pairs accumulate
            // it with their 2 x TILE_N sums in registers.
            let mut wblk = [0f32; KB * TILE_N];
            for k0 in (0..s.k).step_by(KB) {
                let kl = KB.min(s.k - k0);
                for kk in 0..kl {
                    let src = &w[(k0 + kk) * s.n2 + c0..(k0 + kk) * s.n2 + c0 + tn];
                    T::row_to_f32(src, &mut wblk[kk * TILE_N..kk * TILE_N + tn]);
                }
                let wblk = &wblk[..kl * TILE_N];
                let mut mi = 0;
                while mi < s.m {
                    let rows = if mi + 1 < s.m { 2 } else { 1 };
                    let (x0, x1) = (&x[mi * s.k + k0..][..kl], &x[(mi + rows - 1) * s.k + k0..][..kl]);
                    let mut a0 = [0f32; TILE_N];
                    let mut a1 = [0f32; TILE_N];
                    for ((wr, &xv0), &xv1) in wblk.chunks_exact(TILE_N).zip(x0).zip(x1) {
                        for j in 0..TILE_N {
                            a0[j] = madd::<FMA>(xv0, wr[j], a0[j]);
                            a1[j] = madd::<FMA>(xv1, wr[j], a1[j]);
                        }
                    }
                    for (r, a) in [a0, a1].iter().enumerate().take(rows) {
                        for (d, v) in acc[(mi + r) * TILE_N..(mi + r + 1) * TILE_N].iter_mut().zip(a) {
                            *d += v;
                        }
                    }
                    mi += rows;
                }
            }
        }
        // Each column is a contiguous row of the stored [n2, k]: dot products with every token.
        WeightLayout::OutIn => {
            let mut wbuf = [0f32; CHUNK_K];
            for j in 0..tn {
                let row = &w[(c0 + j) * s.k..(c0 + j + 1) * s.k];
                for k0 in (0..s.k).step_by(CHUNK_K) {
                    let len = CHUNK_K.min(s.k - k0);
                    T::row_to_f32(&row[k0..k0 + len], &mut wbuf[..len]);
                    for mi in 0..s.m {
                        acc[mi * TILE_N + j] += dot::<FMA>(&x[mi * s.k + k0..mi * s.k + k0 + len], &wbuf[..len]);
                    }
                }
            }
        }
    }
    acc
}

/// `a·b` with LANES independent accumulators (vectorizable, and a fixed summation order).
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..LANES {
            lanes[i] = madd::<FMA>(x[i], y[i], lanes[i]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}
