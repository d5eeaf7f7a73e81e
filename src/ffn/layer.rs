//! Drop-in MLP layers on the fused projections.
//!
//! Weight layout, chosen once at construction: candle `Linear` layout `[out, in]`, contiguous.
//! That is how checkpoints store them, so [`FusedMlp::load`] / [`GatedMlp::load`] keep the
//! loaded tensors as they are, and it is the layout the CUDA small-batch kernel streams (each
//! output's weights contiguous along the input dim). [`GatedMlp`] additionally concatenates the
//! gate and up weights into one `[2H, D]` tensor at construction (one copy, at load), so both
//! projections run in one pass over `x`. The `from_seed` constructors take `[in, out]` tensors and
//! transpose them once. `forward` never copies or transposes weights.

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{check_bias, check_same, ffn, flatten_tokens, unflatten_tokens, Epilogue, FfnKernel};
use crate::cpu::is_supported_float;
use crate::Activation;

/// A weight `[out, in]` (contiguous), its `[in, out]` view (what the FFN takes, made once here
/// rather than per call) and its optional bias `[out]`.
#[derive(Debug, Clone)]
struct Proj {
    w: Tensor,
    wt: Tensor,
    b: Option<Tensor>,
}

impl Proj {
    fn new(w: Tensor, b: Option<Tensor>, name: &str) -> Result<Self> {
        if w.rank() != 2 {
            bail!("{name}: weight has shape {:?}; expected [out, in]", w.dims());
        }
        if !is_supported_float(w.dtype()) {
            return Err(candle_core::Error::UnsupportedDTypeForOp(w.dtype(), "fused_ffn"));
        }
        check_bias(&w, b.as_ref(), &format!("{name} bias"), w.dim(0)?)?;
        let w = w.contiguous()?;
        Ok(Self { wt: w.t()?, w, b: b.map(|b| b.contiguous()).transpose()? })
    }

    /// From a seed-layout `[in, out]` weight: transposed once, here.
    fn from_in_out(w: &Tensor, b: Option<&Tensor>, name: &str) -> Result<Self> {
        if w.rank() != 2 {
            bail!("{name}: weight has shape {:?}; expected [in, out]", w.dims());
        }
        Self::new(w.t()?.contiguous()?, b.cloned(), name)
    }

    fn out_dim(&self) -> usize {
        self.w.dims()[0]
    }

    fn in_dim(&self) -> usize {
        self.w.dims()[1]
    }
}

/// Checks x's last dim, dtype and device against the first projection's weight.
fn check_input(x: &Tensor, w: &Tensor, layer: &'static str) -> Result<()> {
    let in_dim = w.dims()[1];
    if x.dims().last() != Some(&in_dim) {
        bail!("{layer}: x has shape {:?}; expected last dim {in_dim}", x.dims());
    }
    check_same(x, w, "the layer weights")
}

/// `down(act(up(x)))` with fused bias + activation: the drop-in replacement of candle's
/// `Linear → activation → Linear` with the same output. See the module docs for the layout.
///
/// ```
/// use candle_core::{DType, Device, Module, Tensor};
/// use candle_nn::{Linear, VarBuilder, VarMap};
/// use tiny_gemm::{Activation, FusedMlp};
/// # fn main() -> candle_core::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let mlp = FusedMlp::load(vb.clone(), 64, 256, true, Activation::GeluTanh)?;
/// let x = Tensor::randn(0f32, 1.0, (3, 64), &Device::Cpu)?;
/// // stock: the same weights as two candle Linear layers
/// let fc1 = candle_nn::linear(64, 256, vb.pp("fc1"))?;
/// let fc2 = candle_nn::linear(256, 64, vb.pp("fc2"))?;
/// let want = fc2.forward(&fc1.forward(&x)?.gelu()?)?;
/// let diff = (mlp.forward(&x)? - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
/// assert!(diff < 1e-4);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FusedMlp {
    up: Proj,
    down: Proj,
    act: Activation,
}

impl FusedMlp {
    /// From `Linear`-layout tensors: `w_up [H, D]`, `b_up [H]`, `w_down [O, H]`, `b_down [O]`.
    pub fn new(
        w_up: Tensor,
        b_up: Option<Tensor>,
        w_down: Tensor,
        b_down: Option<Tensor>,
        act: Activation,
    ) -> Result<Self> {
        let up = Proj::new(w_up, b_up, "FusedMlp up")?;
        let down = Proj::new(w_down, b_down, "FusedMlp down")?;
        Self::checked(up, down, act)
    }

    /// From two candle `Linear` layers (their weights are shared, not copied).
    pub fn from_linears(up: &Linear, down: &Linear, act: Activation) -> Result<Self> {
        Self::new(up.weight().clone(), up.bias().cloned(), down.weight().clone(), down.bias().cloned(), act)
    }

    /// From the seed's `[in, out]` tensors (`w1 [D, H]`, `w2 [H, O]`), transposed once here.
    pub fn from_seed(
        w1: &Tensor,
        b1: Option<&Tensor>,
        w2: &Tensor,
        b2: Option<&Tensor>,
        act: Activation,
    ) -> Result<Self> {
        let up = Proj::from_in_out(w1, b1, "FusedMlp w1")?;
        let down = Proj::from_in_out(w2, b2, "FusedMlp w2")?;
        Self::checked(up, down, act)
    }

    /// Loads `fc1` (`[hidden, d_model]`) and `fc2` (`[d_model, hidden]`), with biases if `bias`,
    /// as `candle_nn::linear_b` would.
    pub fn load(vb: VarBuilder, d_model: usize, hidden: usize, bias: bool, act: Activation) -> Result<Self> {
        Self::load_named(vb, d_model, hidden, bias, act, "fc1", "fc2")
    }

    /// [`FusedMlp::load`] with the checkpoint's names for the two layers (e.g. BERT's
    /// `intermediate.dense` / `output.dense`).
    pub fn load_named(
        vb: VarBuilder,
        d_model: usize,
        hidden: usize,
        bias: bool,
        act: Activation,
        up_name: &str,
        down_name: &str,
    ) -> Result<Self> {
        let up = candle_nn::linear_b(d_model, hidden, bias, vb.pp(up_name))?;
        let down = candle_nn::linear_b(hidden, d_model, bias, vb.pp(down_name))?;
        Self::from_linears(&up, &down, act)
    }

    fn checked(up: Proj, down: Proj, act: Activation) -> Result<Self> {
        if down.in_dim() != up.out_dim() {
            bail!("FusedMlp: up weight {:?} and down weight {:?}: hidden sizes differ", up.w.dims(), down.w.dims());
        }
        check_same(&up.w, &down.w, "FusedMlp down weight")?;
        Ok(Self { up, down, act })
    }

    /// The activation between the projections.
    pub fn activation(&self) -> Activation {
        self.act
    }

    /// `forward` with the kernel forced (benches and tests compare the two); an error where the
    /// forced kernel can't run.
    #[doc(hidden)]
    pub fn forward_with(&self, x: &Tensor, kernel: Option<FfnKernel>) -> Result<Tensor> {
        check_input(x, &self.up.w, "FusedMlp")?;
        let (x2, lead) = flatten_tokens(x, "FusedMlp")?;
        let (up, down) = (&self.up.wt, &self.down.wt);
        let y = ffn(&x2, up, self.up.b.as_ref(), down, self.down.b.as_ref(), Epilogue::Act(self.act), kernel)?;
        unflatten_tokens(y, &lead)
    }
}

impl Module for FusedMlp {
    /// `x [..., D]` → `[..., O]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, None)
    }
}

/// The gated MLP of Llama / Mistral (SwiGLU with [`Activation::Silu`], GeGLU with
/// [`Activation::Gelu`]): `down(act(gate(x)) * up(x))`, biases optional.
#[derive(Debug, Clone)]
pub struct GatedMlp {
    /// `[gate; up]`: `[2H, D]`.
    gate_up: Proj,
    down: Proj,
    act: Activation,
}

impl GatedMlp {
    /// From `Linear`-layout tensors: `w_gate`, `w_up` `[H, D]`, `w_down [O, H]`, biases `[H]`,
    /// `[H]`, `[O]`. A missing gate or up bias next to a present one counts as zeros.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        w_gate: Tensor,
        b_gate: Option<Tensor>,
        w_up: Tensor,
        b_up: Option<Tensor>,
        w_down: Tensor,
        b_down: Option<Tensor>,
        act: Activation,
    ) -> Result<Self> {
        let gate = Proj::new(w_gate, b_gate, "GatedMlp gate")?;
        let up = Proj::new(w_up, b_up, "GatedMlp up")?;
        let down = Proj::new(w_down, b_down, "GatedMlp down")?;
        if gate.w.dims() != up.w.dims() {
            bail!("GatedMlp: gate weight {:?} and up weight {:?} differ in shape", gate.w.dims(), up.w.dims());
        }
        if down.in_dim() != up.out_dim() {
            bail!("GatedMlp: up weight {:?} and down weight {:?}: hidden sizes differ", up.w.dims(), down.w.dims());
        }
        check_same(&gate.w, &up.w, "GatedMlp up weight")?;
        check_same(&gate.w, &down.w, "GatedMlp down weight")?;
        let b = match (&gate.b, &up.b) {
            (None, None) => None,
            (bg, bu) => {
                let zeros = || Tensor::zeros(gate.out_dim(), gate.w.dtype(), gate.w.device());
                let bg = bg.clone().map_or_else(zeros, Ok)?;
                let bu = bu.clone().map_or_else(zeros, Ok)?;
                Some(Tensor::cat(&[&bg, &bu], 0)?)
            }
        };
        let w = Tensor::cat(&[&gate.w, &up.w], 0)?;
        let gate_up = Proj { wt: w.t()?, w, b };
        Ok(Self { gate_up, down, act })
    }

    /// From three candle `Linear` layers.
    pub fn from_linears(gate: &Linear, up: &Linear, down: &Linear, act: Activation) -> Result<Self> {
        let parts = |l: &Linear| (l.weight().clone(), l.bias().cloned());
        let ((wg, bg), (wu, bu), (wd, bd)) = (parts(gate), parts(up), parts(down));
        Self::new(wg, bg, wu, bu, wd, bd, act)
    }

    /// From `[in, out]` tensors: `w_gate`, `w_up` `[D, H]`, `w_down [H, O]`, transposed once here.
    #[allow(clippy::too_many_arguments)]
    pub fn from_seed(
        w_gate: &Tensor,
        b_gate: Option<&Tensor>,
        w_up: &Tensor,
        b_up: Option<&Tensor>,
        w_down: &Tensor,
        b_down: Option<&Tensor>,
        act: Activation,
    ) -> Result<Self> {
        let g = Proj::from_in_out(w_gate, b_gate, "GatedMlp w_gate")?;
        let u = Proj::from_in_out(w_up, b_up, "GatedMlp w_up")?;
        let d = Proj::from_in_out(w_down, b_down, "GatedMlp w_down")?;
        Self::new(g.w, g.b, u.w, u.b, d.w, d.b, act)
    }

    /// Loads `gate_proj`, `up_proj` (`[hidden, d_model]`) and `down_proj` (`[d_model, hidden]`),
    /// the Llama / Mistral names, with biases if `bias`.
    pub fn load(vb: VarBuilder, d_model: usize, hidden: usize, bias: bool, act: Activation) -> Result<Self> {
        let gate = candle_nn::linear_b(d_model, hidden, bias, vb.pp("gate_proj"))?;
        let up = candle_nn::linear_b(d_model, hidden, bias, vb.pp("up_proj"))?;
        let down = candle_nn::linear_b(hidden, d_model, bias, vb.pp("down_proj"))?;
        Self::from_linears(&gate, &up, &down, act)
    }

    /// The activation applied to the gate.
    pub fn activation(&self) -> Activation {
        self.act
    }

    /// `forward` with the kernel forced (benches and tests compare the two); an error where the
    /// forced kernel can't run.
    #[doc(hidden)]
    pub fn forward_with(&self, x: &Tensor, kernel: Option<FfnKernel>) -> Result<Tensor> {
        check_input(x, &self.gate_up.w, "GatedMlp")?;
        let (x2, lead) = flatten_tokens(x, "GatedMlp")?;
        let (gate_up, down) = (&self.gate_up.wt, &self.down.wt);
        let epi = Epilogue::Gated(self.act);
        let y = ffn(&x2, gate_up, self.gate_up.b.as_ref(), down, self.down.b.as_ref(), epi, kernel)?;
        unflatten_tokens(y, &lead)
    }
}

impl Module for GatedMlp {
    /// `x [..., D]` → `[..., O]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, None)
    }
}
