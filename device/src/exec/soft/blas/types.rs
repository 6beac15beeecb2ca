//! Element types: the storage types of matrix elements ([`Elem`]), the arithmetic types
//! `f32` and `f64` that decode and encode them ([`Real`]), scalar decoding, and the names of
//! data and compute types for log messages.

use core::ops::{Add, Div, Mul, Sub};

use half::{bf16, f16};

use super::{compute_type, data_type};

/// A storage type of a matrix element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Elem {
    F32,
    F64,
    F16,
    Bf16,
}

impl Elem {
    pub(super) fn from_cuda(t: u32) -> Option<Elem> {
        match t {
            data_type::R_32F => Some(Elem::F32),
            data_type::R_64F => Some(Elem::F64),
            data_type::R_16F => Some(Elem::F16),
            data_type::R_16BF => Some(Elem::Bf16),
            _ => None,
        }
    }

    pub(super) fn cuda(self) -> u32 {
        match self {
            Elem::F32 => data_type::R_32F,
            Elem::F64 => data_type::R_64F,
            Elem::F16 => data_type::R_16F,
            Elem::Bf16 => data_type::R_16BF,
        }
    }

    pub(super) fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::F64 => 8,
            Elem::F16 | Elem::Bf16 => 2,
        }
    }
}

/// Name of a `cudaDataType` for log messages.
pub(super) fn data_type_name(t: u32) -> String {
    let name = match t {
        data_type::R_32F => "CUDA_R_32F",
        data_type::R_64F => "CUDA_R_64F",
        data_type::R_16F => "CUDA_R_16F",
        data_type::R_8I => "CUDA_R_8I",
        data_type::C_32F => "CUDA_C_32F",
        data_type::C_64F => "CUDA_C_64F",
        data_type::C_16F => "CUDA_C_16F",
        data_type::C_8I => "CUDA_C_8I",
        data_type::R_8U => "CUDA_R_8U",
        data_type::R_32I => "CUDA_R_32I",
        data_type::R_16BF => "CUDA_R_16BF",
        _ => return format!("cudaDataType {t}"),
    };
    name.to_owned()
}

/// Name of a compute type (a `cublasComputeType_t` or a legacy `cudaDataType`).
pub(super) fn compute_type_name(t: u32) -> String {
    use compute_type::*;
    let name = match t {
        C16F => "CUBLAS_COMPUTE_16F",
        C16F_PEDANTIC => "CUBLAS_COMPUTE_16F_PEDANTIC",
        C32F => "CUBLAS_COMPUTE_32F",
        C32F_PEDANTIC => "CUBLAS_COMPUTE_32F_PEDANTIC",
        C64F => "CUBLAS_COMPUTE_64F",
        C64F_PEDANTIC => "CUBLAS_COMPUTE_64F_PEDANTIC",
        C32I => "CUBLAS_COMPUTE_32I",
        C32I_PEDANTIC => "CUBLAS_COMPUTE_32I_PEDANTIC",
        C32F_FAST_16F => "CUBLAS_COMPUTE_32F_FAST_16F",
        C32F_FAST_16BF => "CUBLAS_COMPUTE_32F_FAST_16BF",
        C32F_FAST_TF32 => "CUBLAS_COMPUTE_32F_FAST_TF32",
        t if t < 64 => return format!("legacy {}", data_type_name(t)),
        _ => return format!("cublasComputeType {t}"),
    };
    name.to_owned()
}

/// The signature of `matrixmultiply::sgemm` / `dgemm`.
type Kernel<T> = unsafe fn(
    usize,
    usize,
    usize,
    T,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    T,
    *mut T,
    isize,
    isize,
);

/// The arithmetic types: `f32` and `f64`.
pub(super) trait Real:
    Copy
    + PartialEq
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
{
    const ZERO: Self;
    /// The matrixmultiply kernel for this type.
    const KERNEL: Kernel<Self>;
    /// Decoder of one little-endian element of type `e` (the slice has `e.size()` bytes).
    fn decoder(e: Elem) -> fn(&[u8]) -> Self;
    /// Encoder of one element into `e.size()` bytes, rounding to nearest even.
    fn encoder(e: Elem) -> fn(Self, &mut [u8]);
    /// `max(self, 0)` with `fmax` semantics (NaN gives 0).
    fn relu(self) -> Self;
}

fn le2(b: &[u8]) -> [u8; 2] {
    [b[0], b[1]]
}
fn le4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}
fn le8(b: &[u8]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const KERNEL: Kernel<f32> = matrixmultiply::sgemm;
    fn decoder(e: Elem) -> fn(&[u8]) -> f32 {
        match e {
            Elem::F32 => |b| f32::from_le_bytes(le4(b)),
            Elem::F64 => |b| f64::from_le_bytes(le8(b)) as f32,
            Elem::F16 => |b| f16::from_le_bytes(le2(b)).to_f32(),
            Elem::Bf16 => |b| bf16::from_le_bytes(le2(b)).to_f32(),
        }
    }
    fn encoder(e: Elem) -> fn(f32, &mut [u8]) {
        match e {
            Elem::F32 => |v, o| o.copy_from_slice(&v.to_le_bytes()),
            Elem::F64 => |v, o| o.copy_from_slice(&f64::from(v).to_le_bytes()),
            Elem::F16 => |v, o| o.copy_from_slice(&f16::from_f32(v).to_le_bytes()),
            Elem::Bf16 => |v, o| o.copy_from_slice(&bf16::from_f32(v).to_le_bytes()),
        }
    }
    fn relu(self) -> f32 {
        self.max(0.0)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const KERNEL: Kernel<f64> = matrixmultiply::dgemm;
    fn decoder(e: Elem) -> fn(&[u8]) -> f64 {
        match e {
            Elem::F32 => |b| f64::from(f32::from_le_bytes(le4(b))),
            Elem::F64 => |b| f64::from_le_bytes(le8(b)),
            Elem::F16 => |b| f16::from_le_bytes(le2(b)).to_f64(),
            Elem::Bf16 => |b| bf16::from_le_bytes(le2(b)).to_f64(),
        }
    }
    fn encoder(e: Elem) -> fn(f64, &mut [u8]) {
        match e {
            Elem::F32 => |v, o| o.copy_from_slice(&(v as f32).to_le_bytes()),
            Elem::F64 => |v, o| o.copy_from_slice(&v.to_le_bytes()),
            Elem::F16 => |v, o| o.copy_from_slice(&f16::from_f64(v).to_le_bytes()),
            Elem::Bf16 => |v, o| o.copy_from_slice(&bf16::from_f64(v).to_le_bytes()),
        }
    }
    fn relu(self) -> f64 {
        self.max(0.0)
    }
}

/// A scalar (alpha or beta) of type `e` from its zero-padded 16-byte field.
pub(super) fn scalar<T: Real>(e: Elem, bytes: &[u8; 16]) -> T {
    T::decoder(e)(&bytes[..e.size()])
}

#[cfg(test)]
mod tests {
    use super::super::gemm;
    use super::super::testutil::*;
    use half::f16;

    #[test]
    fn f16_output_is_rounded_to_nearest() {
        // 1 + 2^-11 + 2^-13 is not an f16; the nearest f16 is 1 + 2^-10.
        let mem = VecMemory::new();
        let one = f16::ONE.to_le_bytes();
        let x = f16::from_f64(2f64.powi(-11)).to_le_bytes();
        let y = f16::from_f64(2f64.powi(-13)).to_le_bytes();
        let a = mem.alloc_with(&[one, x, y].concat());
        let b = mem.alloc_with(&[one, one, one].concat());
        let c = mem.alloc(2);
        let mut d = desc(1, 1, 3);
        (d.a, d.b, d.c, d.lda) = (a, b, c, 1);
        (d.a_type, d.b_type, d.c_type) = (2, 2, 2);
        gemm(&mem, &d).unwrap();
        assert_eq!(
            mem.load(c, 2),
            f16::from_f64(1.0 + 2f64.powi(-10)).to_le_bytes()
        );
    }
}
