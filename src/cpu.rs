//! Helpers shared by the CPU paths: f32 conversion of the float storage types and typed access
//! to a contiguous storage.

use candle_core::{CpuStorage, DType, Layout, Result, WithDType};
use half::{bf16, f16};

/// A float storage type whose CPU math runs in f32.
pub(crate) trait CpuFloat: WithDType + Send + Sync {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

macro_rules! cpu_float {
    ($t:ty, $to:expr, $from:expr) => {
        impl CpuFloat for $t {
            #[inline(always)]
            fn to_f32(self) -> f32 {
                $to(self)
            }
            #[inline(always)]
            fn from_f32(v: f32) -> Self {
                $from(v)
            }
        }
    };
}
cpu_float!(f32, |v| v, |v| v);
cpu_float!(f16, f16::to_f32, f16::from_f32);
cpu_float!(bf16, bf16::to_f32, bf16::from_f32);

/// The contiguous elements `layout` describes.
pub(crate) fn contiguous<'a, T: CpuFloat>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let (start, end) =
        layout.contiguous_offsets().ok_or_else(|| candle_core::Error::RequiresContiguous { op: "tiny_gemm" }.bt())?;
    Ok(&storage.as_slice::<T>()?[start..end])
}

/// Runs `f::<T>` for the storage's float dtype, or returns `UnsupportedDTypeForOp`.
macro_rules! dispatch_float {
    ($dtype:expr, $op:expr, $f:ident $(::<$($extra:ty),*>)? ($($arg:expr),* $(,)?)) => {
        match $dtype {
            candle_core::DType::F32 => $f::<f32 $($(, $extra)*)?>($($arg),*),
            candle_core::DType::F16 => $f::<half::f16 $($(, $extra)*)?>($($arg),*),
            candle_core::DType::BF16 => $f::<half::bf16 $($(, $extra)*)?>($($arg),*),
            dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, $op)),
        }
    };
}
pub(crate) use dispatch_float;

/// Whether `dtype` is one of the float types the ops accept.
pub(crate) fn is_supported_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// Whether `dtype` is a 2-byte float (f16, bf16): what the CUDA tensor-core kernels take.
pub(crate) fn is_half_float(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}
