//! The CPU projection for small M: `y[m, n] = epilogue(x[m, :]·W[:, n] + b[n])`.
//!
//! Parallel over tiles of [`TILE_N`] output columns (rayon); each task accumulates its
//! `[m, TILE_N]` tile (and the matching up-projection tile when gated) in f32, applies bias +
//! activation (+ gate) while the tile is in L1, and rounds once. Every weight element is read and
//! converted to f32 exactly once per call, then reused for all M tokens.

use rayon::prelude::*;

use super::{Epilogue, WeightLayout};
use crate::cpu::CpuFloat;

/// Output columns per task: 32 f32 accumulators per token stay in L1 for M <= 32, and a
/// 4096-wide layer still splits into 128 tasks.
const TILE_N: usize = 32;
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

pub(super) fn project<T: CpuFloat>(x: &[T], w: &[T], bias: Option<&[T]>, s: Shape, epi: Epilogue) -> Vec<T> {
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
fn accumulate<T: CpuFloat>(x: &[f32], w: &[T], s: Shape, c0: usize, tn: usize) -> Vec<f32> {
    let mut acc = vec![0f32; s.m * TILE_N];
    match s.layout {
        // Row k of W holds the tile's columns contiguously: axpy of that row into each token.
        WeightLayout::InOut => {
            let mut wrow = [0f32; TILE_N];
            for kk in 0..s.k {
                let src = &w[kk * s.n2 + c0..kk * s.n2 + c0 + tn];
                for (d, v) in wrow.iter_mut().zip(src) {
                    *d = v.to_f32();
                }
                for mi in 0..s.m {
                    let xv = x[mi * s.k + kk];
                    let a = &mut acc[mi * TILE_N..(mi + 1) * TILE_N];
                    for (a, wv) in a.iter_mut().zip(&wrow) {
                        *a += xv * wv;
                    }
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
                    for (d, v) in wbuf.iter_mut().zip(&row[k0..k0 + len]) {
                        *d = v.to_f32();
                    }
                    for mi in 0..s.m {
                        acc[mi * TILE_N + j] += dot(&x[mi * s.k + k0..mi * s.k + k0 + len], &wbuf[..len]);
                    }
                }
            }
        }
    }
    acc
}

/// `a·b` with LANES independent accumulators (vectorizable, and a fixed summation order).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..LANES {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}
