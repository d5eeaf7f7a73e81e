//! Slow, obviously-correct versions of every op, composed from stock candle tensor ops. This is
//! the spec: tests, benches and the examples' `--compare` check the fused ops against it.

use candle_core::{Result, Tensor};

use crate::Activation;

/// `act(x + bias)` the stock-candle way: `broadcast_add` then the activation.
pub fn bias_act(x: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
    let x = match bias {
        Some(b) => x.broadcast_add(b)?,
        None => x.clone(),
    };
    act.apply_tensor(&x)
}
