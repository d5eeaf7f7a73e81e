//! Quantization report: how much a config perturbs each layer's weights and outputs.

use std::fmt;

use candle_core::{DType, Result, Tensor};

use super::{int4_matmul, Int4Config, Int4Weight};

/// Errors of one quantized layer (relative Frobenius norms, computed in f64).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Layer name.
    pub name: String,
    /// `‖dequantize(W) − W‖ / ‖W‖`.
    pub weight_rel_err: f64,
    /// `‖int4_matmul(x, W) − x·Wᵀ‖ / ‖x·Wᵀ‖` on the calibration input.
    pub output_rel_err: f64,
    /// Largest `|dequantize(W) − W|` element.
    pub weight_max_abs_err: f64,
}

/// Per-layer quantization errors for one [`Int4Config`]; `Display` prints a table.
#[derive(Debug, Clone)]
pub struct QuantReport {
    /// The config every layer was quantized with.
    pub config: Int4Config,
    /// One entry per [`QuantReport::quantize_layer`] call.
    pub layers: Vec<LayerReport>,
}

fn rel_err(got: &Tensor, want: &Tensor) -> Result<f64> {
    let (g, w) = (got.to_dtype(DType::F64)?, want.to_dtype(DType::F64)?);
    let num = (&g - &w)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let den = w.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok(if den > 0.0 { num / den } else { num })
}

impl QuantReport {
    /// An empty report for `config`.
    pub fn new(config: Int4Config) -> Self {
        Self { config, layers: Vec::new() }
    }

    /// Quantizes `w` (`[N, K]`), measures it on the calibration input `x` (`[M, K]`, on `w`'s
    /// device), records the errors under `name` and returns the quantized weight.
    pub fn quantize_layer(&mut self, name: &str, w: &Tensor, x: &Tensor) -> Result<Int4Weight> {
        let q = Int4Weight::quantize(w, self.config)?;
        let deq = q.dequantize()?;
        let w32 = w.to_dtype(DType::F32)?;
        let weight_rel_err = rel_err(&deq, &w32)?;
        let weight_max_abs_err =
            (&deq.to_dtype(DType::F64)? - &w32.to_dtype(DType::F64)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
        let want = x.to_dtype(DType::F64)?.matmul(&w.to_dtype(DType::F64)?.t()?)?;
        let got = int4_matmul(x, &q)?;
        let output_rel_err = rel_err(&got, &want)?;
        self.layers.push(LayerReport { name: name.to_string(), weight_rel_err, output_rel_err, weight_max_abs_err });
        Ok(q)
    }

    /// The largest output error over the layers (0 when empty).
    pub fn worst_output_rel_err(&self) -> f64 {
        self.layers.iter().map(|l| l.output_rel_err).fold(0.0, f64::max)
    }
}

impl fmt::Display for QuantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.config;
        writeln!(f, "int4 group_size={} symmetric={}", c.group_size, c.symmetric)?;
        writeln!(f, "| layer | weight rel err | weight max abs err | output rel err |")?;
        writeln!(f, "|---|---|---|---|")?;
        for l in &self.layers {
            writeln!(
                f,
                "| {} | {:.3e} | {:.3e} | {:.3e} |",
                l.name, l.weight_rel_err, l.weight_max_abs_err, l.output_rel_err
            )?;
        }
        Ok(())
    }
}
