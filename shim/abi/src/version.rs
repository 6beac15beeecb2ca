//! The versions the libraries advertise, whatever the host has.

use crate::ptr::Out;
use crate::status::CublasStatus;

/// The CUDA version (12.8): `cuDriverGetVersion`, `cudaRuntimeGetVersion`,
/// `cublasGetCudartVersion`.
pub const CUDA: i32 = 12080;

/// The cuBLAS and cuBLASLt version (12.8.4).
pub const CUBLAS: (i32, i32, i32) = (12, 8, 4);

/// The cuBLAS version as one number (`major·10000 + minor·100 + patch`).
pub const fn cublas_number() -> i32 {
    CUBLAS.0 * 10000 + CUBLAS.1 * 100 + CUBLAS.2
}

/// `cublasGetProperty`/`cublasLtGetProperty`: `libraryPropertyType` 0 major, 1 minor,
/// 2 patch.
pub fn cublas_property(ty: i32, out: Out<i32>) -> Result<(), CublasStatus> {
    let v = match ty {
        0 => CUBLAS.0,
        1 => CUBLAS.1,
        2 => CUBLAS.2,
        _ => return Err(CublasStatus::INVALID_VALUE),
    };
    Ok(out.write(v)?)
}
