//! CPU fused attention: FlashAttention-style tiles with an online softmax, so the extra memory is
//! O(tile) per task instead of `Nq x Nk`. One rayon task per (batch, head, block of `BLOCK_M`
//! queries); causal tiles past the diagonal are skipped. Math in f32, with register-blocked
//! micro-kernels (`MR` rows at a time) compiled for AVX2+FMA when the CPU has it.

use rayon::prelude::*;

use super::{philox, Problem, Strides};
use crate::cpu::CpuFloat;

/// Query rows per task.
const BLOCK_M: usize = 32;
/// Keys per tile.
const BLOCK_N: usize = 64;
/// Query rows per micro-kernel call (each key/value vector is loaded once for `MR` rows).
const MR: usize = 4;
/// Keys per Q·Kᵀ micro-kernel call: two AVX registers per row.
const NR_S: usize = 16;
/// Head-dim columns per P·V micro-kernel call: one AVX register per row.
const NR_O: usize = 8;
const LOG2E: f32 = std::f32::consts::LOG2_E;

/// One input: the whole storage and where the `[B, H, N, D]` view lies in it.
pub(crate) struct Operand<'a, T> {
    pub data: &'a [T],
    pub strides: Strides,
}

impl<T: CpuFloat> Operand<'_, T> {
    /// Row `n` of head `h` of batch `b`, `d` elements.
    #[inline]
    fn row(&self, b: usize, h: usize, n: usize, d: usize) -> &[T] {
        let s = &self.strides;
        &self.data[s.offset + b * s.b + h * s.h + n * s.n..][..d]
    }
}

/// `[B, Hq, Nq, D]` output, contiguous.
pub(crate) fn forward<T: CpuFloat>(p: &Problem, q: Operand<T>, k: Operand<T>, v: Operand<T>) -> Vec<T> {
    let mut out = vec![T::from_f32(0.0); p.b * p.hq * p.nq * p.d];
    let avx2 = has_avx2_fma();
    out.par_chunks_mut(p.nq * p.d).enumerate().for_each(|(bh, o_bh)| {
        o_bh.par_chunks_mut(BLOCK_M * p.d).enumerate().for_each(|(t, o_tile)| {
            let task = Task { p, q: &q, k: &k, v: &v, b: bh / p.hq, h: bh % p.hq, q0: t * BLOCK_M };
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
                unsafe { run_tile_avx2(&task, o_tile) };
                return;
            }
            let _ = avx2;
            run_tile::<T, false>(&task, o_tile);
        });
    });
    out
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

struct Task<'a, T> {
    p: &'a Problem,
    q: &'a Operand<'a, T>,
    k: &'a Operand<'a, T>,
    v: &'a Operand<'a, T>,
    b: usize,
    h: usize,
    q0: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_tile_avx2<T: CpuFloat>(task: &Task<T>, o_tile: &mut [T]) {
    run_tile::<T, true>(task, o_tile)
}

#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// One block of `o_tile.len() / D` queries of one (batch, head) against all its visible keys.
#[inline(always)]
fn run_tile<T: CpuFloat, const FMA: bool>(task: &Task<T>, o_tile: &mut [T]) {
    let p = task.p;
    let (d, q0) = (p.d, task.q0);
    let rows = o_tile.len() / d;
    if rows < MR {
        return run_rows_direct::<T, FMA>(task, o_tile);
    }
    let rows_pad = rows.next_multiple_of(MR);
    let hk = task.h / (p.hq / p.hkv);
    let off = p.causal_offset();
    // keys any row of the block sees: 0..n_end
    let n_end = if p.causal { (q0 as i64 + rows as i64 + off).clamp(0, p.nk as i64) as usize } else { p.nk };

    let mut qf = vec![0f32; rows_pad * d]; // [rows_pad, D], pre-scaled by scale * log2(e)
    let mut kt = vec![0f32; d * BLOCK_N]; // [D, BLOCK_N]: the K tile transposed
    let mut vf = vec![0f32; BLOCK_N * d]; // [BLOCK_N, D]
    let mut s = vec![0f32; rows_pad * BLOCK_N]; // scores, then probabilities
    let mut acc = vec![0f32; rows_pad * d]; // unnormalized output
    let mut m = vec![f32::NEG_INFINITY; rows]; // running max (log2 units)
    let mut l = vec![0f32; rows]; // running sum of exp2(s - m), before dropout

    let scale_log2 = p.scale * LOG2E;
    for r in 0..rows {
        for (dst, &x) in qf[r * d..][..d].iter_mut().zip(task.q.row(task.b, task.h, q0 + r, d)) {
            *dst = x.to_f32() * scale_log2;
        }
    }

    for k0 in (0..n_end).step_by(BLOCK_N) {
        let cols = BLOCK_N.min(n_end - k0);
        let cols_pad = cols.next_multiple_of(NR_S);
        for c in 0..cols {
            for (dd, &x) in task.k.row(task.b, hk, k0 + c, d).iter().enumerate() {
                kt[dd * BLOCK_N + c] = x.to_f32();
            }
            for (dst, &x) in vf[c * d..][..d].iter_mut().zip(task.v.row(task.b, hk, k0 + c, d)) {
                *dst = x.to_f32();
            }
        }
        for c in cols..cols_pad {
            for dd in 0..d {
                kt[dd * BLOCK_N + c] = 0.0;
            }
        }
        for r0 in (0..rows_pad).step_by(MR) {
            for c0 in (0..cols_pad).step_by(NR_S) {
                micro_qk::<FMA>(&qf[r0 * d..], d, &kt, c0, &mut s[r0 * BLOCK_N..]);
            }
        }
        for r in 0..rows {
            let i = q0 + r;
            // keys k0..k0 + visible of this row are unmasked
            let visible = if p.causal { (i as i64 + off - k0 as i64 + 1).clamp(0, cols as i64) as usize } else { cols };
            let srow = &mut s[r * BLOCK_N..][..cols];
            if visible == 0 {
                srow.fill(0.0);
                continue;
            }
            let tile_max = srow[..visible].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m_new = m[r].max(tile_max);
            let alpha = (m[r] - m_new).exp2();
            let mut sum = 0.0;
            for x in srow[..visible].iter_mut() {
                *x = (*x - m_new).exp2();
                sum += *x;
            }
            srow[visible..].fill(0.0);
            l[r] = l[r] * alpha + sum;
            m[r] = m_new;
            if alpha != 1.0 {
                acc[r * d..][..d].iter_mut().for_each(|x| *x *= alpha);
            }
            if let Some(dropout) = p.dropout {
                let threshold = philox::drop_threshold(dropout.p);
                let keep_scale = 1.0 / (1.0 - dropout.p);
                for (c, x) in srow[..visible].iter_mut().enumerate() {
                    let bits =
                        philox::dropout_bits(dropout.seed, task.b as u32, task.h as u32, i as u32, (k0 + c) as u32);
                    *x = if bits >= threshold { *x * keep_scale } else { 0.0 };
                }
            }
        }
        for r0 in (0..rows_pad).step_by(MR) {
            for d0 in (0..d).step_by(NR_O) {
                micro_pv::<FMA>(&s[r0 * BLOCK_N..], cols, &vf, d, d0, &mut acc[r0 * d..]);
            }
        }
    }

    for r in 0..rows {
        let inv = if l[r] > 0.0 { 1.0 / l[r] } else { 0.0 };
        for (o, &a) in o_tile[r * d..][..d].iter_mut().zip(&acc[r * d..][..d]) {
            *o = T::from_f32(a * inv);
        }
    }
}

/// Decode-sized blocks (fewer rows than the micro-kernels' `MR`): per row, one pass over the
/// contiguous K rows for the scores (O(Nk) floats), softmax, then the weighted sum of V rows. The
/// tiled path would transpose every K tile and pad to `MR` rows for a single query (measured 0.25-0.76x
/// of stock candle at Nq = 1 over 512 keys, 2-core CPU, examples/benchmark).
#[inline(always)]
fn run_rows_direct<T: CpuFloat, const FMA: bool>(task: &Task<T>, o_tile: &mut [T]) {
    let p = task.p;
    let d = p.d;
    let hk = task.h / (p.hq / p.hkv);
    let off = p.causal_offset();
    let scale_log2 = p.scale * LOG2E;
    let mut qf = vec![0f32; d];
    let mut acc = vec![0f32; d];
    let mut s: Vec<f32> = Vec::with_capacity(p.nk);
    for (r, o_row) in o_tile.chunks_mut(d).enumerate() {
        let i = task.q0 + r;
        let n_vis = if p.causal { (i as i64 + off + 1).clamp(0, p.nk as i64) as usize } else { p.nk };
        for (dst, &x) in qf.iter_mut().zip(task.q.row(task.b, task.h, i, d)) {
            *dst = x.to_f32() * scale_log2;
        }
        s.clear();
        // a plain loop, not an iterator closure: closures don't inherit `target_feature`, and
        // `mul_add` outside an FMA-enabled function becomes a libm call
        for j in 0..n_vis {
            s.push(dot::<T, FMA>(&qf, task.k.row(task.b, hk, j, d)));
        }
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut l = 0.0; // before dropout, as in the tiled path
        for x in s.iter_mut() {
            *x = (*x - max).exp2();
            l += *x;
        }
        if let Some(dropout) = p.dropout {
            let threshold = philox::drop_threshold(dropout.p);
            let keep_scale = 1.0 / (1.0 - dropout.p);
            for (j, x) in s.iter_mut().enumerate() {
                let bits = philox::dropout_bits(dropout.seed, task.b as u32, task.h as u32, i as u32, j as u32);
                *x = if bits >= threshold { *x * keep_scale } else { 0.0 };
            }
        }
        acc.fill(0.0);
        for (j, &pj) in s.iter().enumerate() {
            if pj != 0.0 {
                for (a, &x) in acc.iter_mut().zip(task.v.row(task.b, hk, j, d)) {
                    *a = fmadd::<FMA>(pj, x.to_f32(), *a);
                }
            }
        }
        let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
        for (o, &a) in o_row.iter_mut().zip(&acc) {
            *o = T::from_f32(a * inv);
        }
    }
}

/// `Σ a[i]·b[i]` with eight independent partial sums, so the loop vectorizes.
#[inline(always)]
fn dot<T: CpuFloat, const FMA: bool>(a: &[f32], b: &[T]) -> f32 {
    let mut part = [0f32; 8];
    let n8 = a.len() / 8 * 8;
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for lane in 0..8 {
            part[lane] = fmadd::<FMA>(ca[lane], cb[lane].to_f32(), part[lane]);
        }
    }
    let mut sum: f32 = part.iter().sum();
    for (&x, y) in a[n8..].iter().zip(&b[n8..]) {
        sum = fmadd::<FMA>(x, y.to_f32(), sum);
    }
    sum
}

/// `s[r][c0 + c] = Σ_dd qf[r][dd] · kt[dd][c0 + c]` for `MR` rows and `NR_S` keys.
#[inline(always)]
fn micro_qk<const FMA: bool>(qf: &[f32], d: usize, kt: &[f32], c0: usize, s: &mut [f32]) {
    let mut acc = [[0f32; NR_S]; MR];
    let q_rows: [&[f32]; MR] = std::array::from_fn(|r| &qf[r * d..][..d]);
    for dd in 0..d {
        let kv: &[f32; NR_S] = kt[dd * BLOCK_N + c0..][..NR_S].try_into().unwrap();
        for r in 0..MR {
            let qv = q_rows[r][dd];
            for c in 0..NR_S {
                acc[r][c] = fmadd::<FMA>(qv, kv[c], acc[r][c]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        s[r * BLOCK_N + c0..][..NR_S].copy_from_slice(row);
    }
}

/// `o[r][d0..d0 + NR_O] += Σ_c s[r][c] · vf[c][d0..d0 + NR_O]` for `MR` rows.
#[inline(always)]
fn micro_pv<const FMA: bool>(s: &[f32], cols: usize, vf: &[f32], d: usize, d0: usize, o: &mut [f32]) {
    let mut acc: [[f32; NR_O]; MR] = std::array::from_fn(|r| o[r * d + d0..][..NR_O].try_into().unwrap());
    let p_rows: [&[f32]; MR] = std::array::from_fn(|r| &s[r * BLOCK_N..][..cols]);
    for c in 0..cols {
        let vv: &[f32; NR_O] = vf[c * d + d0..][..NR_O].try_into().unwrap();
        for r in 0..MR {
            let pr = p_rows[r][c];
            for e in 0..NR_O {
                acc[r][e] = fmadd::<FMA>(pr, vv[e], acc[r][e]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        o[r * d + d0..][..NR_O].copy_from_slice(row);
    }
}
