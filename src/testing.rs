//! Test support shared by the crate's tests and benches.

use std::sync::atomic::{AtomicBool, Ordering};

static POISON_OUTPUTS: AtomicBool = AtomicBool::new(false);

/// When on, every CUDA output buffer is filled with NaN bytes before its kernel runs, so an
/// element a kernel fails to write shows up as NaN instead of as stale memory. Off by default
/// (it costs a memset per op); the GPU tests turn it on. No effect on the CPU.
pub fn set_poison_outputs(on: bool) {
    POISON_OUTPUTS.store(on, Ordering::Relaxed);
}

/// Whether [`set_poison_outputs`] is on.
pub fn poison_outputs() -> bool {
    POISON_OUTPUTS.load(Ordering::Relaxed)
}
