//! Test support shared by the crate's tests and benches.

use std::cell::Cell;
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

static PROGRAMMATIC_LAUNCH: AtomicBool = AtomicBool::new(true);

/// Lets the crate launch its PDL-ready kernels (the cooperative FFN, the small-M and RS INT4 GEMMs) as
/// programmatic dependent launches on compute capability 9.0+ (on by default; see `launch_ex` in
/// src/cuda.rs). Off, they launch as before: the host-cost probe times both.
pub fn set_programmatic_launch(on: bool) {
    PROGRAMMATIC_LAUNCH.store(on, Ordering::Relaxed);
}

/// Whether [`set_programmatic_launch`] is on.
pub fn programmatic_launch() -> bool {
    PROGRAMMATIC_LAUNCH.load(Ordering::Relaxed)
}

thread_local! {
    static HOPPER_ATTENTION: Cell<bool> = const { Cell::new(true) };
    static HOPPER_ATTENTION_LAUNCHES: Cell<usize> = const { Cell::new(0) };
}

/// Lets this thread's CUDA attention calls run the Hopper prefill kernel where it applies (on by
/// default; see `tiny_gemm::attention::hopper_prefill_available`). Off, they run the portable
/// kernels, so tests cover both on an H100. Per thread: parallel tests don't see each other's.
pub fn set_hopper_attention(on: bool) {
    HOPPER_ATTENTION.with(|c| c.set(on));
}

/// Whether [`set_hopper_attention`] is on for this thread.
pub fn hopper_attention() -> bool {
    HOPPER_ATTENTION.with(Cell::get)
}

/// Launches of the Hopper attention prefill kernel made by this thread so far.
pub fn hopper_attention_launches() -> usize {
    HOPPER_ATTENTION_LAUNCHES.with(Cell::get)
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn count_hopper_attention_launch() {
    HOPPER_ATTENTION_LAUNCHES.with(|c| c.set(c.get() + 1));
}
