//! Soft BLAS: the soft executor's CPU implementation of the BLAS commands (spec §6.8, §7.12).
//!
//! Everything is column-major, as in cuBLAS. Operands are copied out of device memory with
//! [`DeviceMemory::read`], converted to `f32` (or `f64`), multiplied with `matrixmultiply`
//! and converted back; only the `rows` elements of each column are read or written, so the
//! padding rows of a leading dimension larger than the row count are never touched.
//!
//! # Supported combinations
//!
//! GEMM (`cublasGemmEx` rules; A and B must have the same type):
//!
//! | compute type                                    | scale | A = B         | C         | arithmetic |
//! |-------------------------------------------------|-------|---------------|-----------|------------|
//! | `32F`, `32F_PEDANTIC`, `32F_FAST_16F`, `32F_FAST_16BF`, `32F_FAST_TF32`, legacy `CUDA_R_32F` | f32 | f32 | f32 | f32 |
//! | same                                            | f32   | f16 or bf16   | same or f32 | f32 |
//! | `16F`, `16F_PEDANTIC`, legacy `CUDA_R_16F`      | f16   | f16           | f16       | f32, rounded to f16 once at the store |
//! | `64F`, `64F_PEDANTIC`, legacy `CUDA_R_64F`      | f64   | f64           | f64       | f64 |
//!
//! Everything else (integer types and `32I` compute, complex types, mixed A/B types, unknown
//! values) completes with `BLAS_NOT_SUPPORTED` and a `log::warn!` naming the combination.
//! The `FAST_*` modes are computed in full f32 (at least as accurate as the GPU).
//! 16F compute is emulated by accumulating in f32 and rounding the final
//! `alpha·op(A)op(B) + beta·C` to f16 when it is stored: more accurate than a GPU that
//! accumulates in f16, so results may differ from real hardware in the last f16 bits.
//! BLASLT_MATMUL takes the same table with its `scale_type` required to be the scale column,
//! C and D of the same type, column-major layouts only and no legacy compute values.
//! TRSM_BATCHED supports `CUDA_R_32F` and `CUDA_R_64F` (arithmetic in that type).
//!
//! As in the reference BLAS, `alpha == 0` (or `k == 0`) does not read A and B, and
//! `beta == 0` does not read C, so NaNs there do not propagate.
//!
//! # Tolerances (what the tests check, per element)
//!
//! With `ref` the exact result computed in f64 from the *stored* (already rounded) inputs,
//! `S = |alpha|·Σ_l |op(A)_il|·|op(B)_lj| + |beta|·|C_ij|` (plus `|bias_i|` for Lt),
//! `u_c` the unit roundoff of the arithmetic and `u_o` that of the output type:
//!
//! `|got − ref| ≤ 2·(k + 4)·u_c·S + u_o·|ref| + tiny_o`
//!
//! | output type         | `u_c` (f32 or f64 arithmetic) | `u_o`  | `tiny_o` (smallest subnormal) |
//! |---------------------|------------------------------|--------|-------------------------------|
//! | f32                 | 2⁻²⁴                         | 2⁻²⁴   | 2⁻¹⁴⁹                         |
//! | f16                 | 2⁻²⁴                         | 2⁻¹¹   | 2⁻²⁴                          |
//! | bf16                | 2⁻²⁴                         | 2⁻⁸    | 2⁻¹³³                         |
//! | f64                 | 2⁻⁵³                         | 2⁻⁵³   | 2⁻¹⁰⁷⁴                        |
//!
//! The first term is the classical `γ_k` bound of a dot product of length `k` (any
//! summation order, with FMA or not) plus the roundings of the alpha/beta updates, with a
//! factor 2 of slack; the second is the final rounding to the output type. f16/bf16 *inputs*
//! add no error of their own because they are exact in f32: their epsilon (2⁻¹¹, 2⁻⁸) only
//! enters through `u_o` when the output has that type.
//!
//! TRSM is checked by its componentwise residual, the backward-error bound of substitution
//! (`s` = order of A): `|op(A)·X − alpha·B| ≤ 2·(s + 2)·u·(|op(A)|·|X| + |alpha·B|)`, or the
//! same with `X·op(A)` for the right side; `u` = 2⁻²⁴ (f32) or 2⁻⁵³ (f64).
//!
//! # Errors
//!
//! Arguments are checked first, as cuBLAS does: an operation other than N/T/C, a negative
//! dimension or batch count, a leading dimension below `max(1, rows)`, layouts whose shapes
//! do not agree, or an operand whose byte extent or batch address overflows 64 bits give
//! `BLAS_INVALID_VALUE`. Then the types: `BLAS_NOT_SUPPORTED`. Then `m == 0 || n == 0`
//! returns without touching memory. Errors of [`DeviceMemory`] (normally `INVALID_VALUE`)
//! are returned unchanged; batches are processed in order, so a failure in batch `i` leaves
//! batches `< i` written. A host allocation failure gives `BLAS_ALLOC_FAILED`.
//!
//! Host memory: the extent of each operand is probed (its first and last element are read)
//! before its buffer is reserved, so a bogus pointer, leading dimension or batch stride
//! fails with the memory's status instead of reserving memory; buffers hold `rows·cols`
//! elements (never `ld·cols`), and the copies go through a staging buffer of at most
//! 1 MiB (4 KiB under test, to exercise the chunking).

use vgpu_proto::Status;

mod gemm;
mod lt;
mod plan;
mod region;
#[cfg(test)]
mod testutil;
mod trsm;
mod types;

pub use gemm::{gemm, gemm_batched};
pub use lt::lt_matmul;
pub use trsm::trsm_batched;

/// Device memory as the soft executor exposes it: bounds-checked copies in and out.
pub trait DeviceMemory {
    /// Copies `out.len()` bytes from device address `addr`; Err(Status::INVALID_VALUE) when
    /// the range is not inside one live allocation.
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Status>;
    /// Copies `data` to device address `addr`; Err(Status::INVALID_VALUE) when the range is
    /// not inside one live allocation.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), Status>;
}

pub use vgpu_proto::payload::{compute_type, data_type};

/// `cublasLtEpilogue_t` values implemented by [`lt_matmul`].
pub mod lt_epilogue {
    /// `CUBLASLT_EPILOGUE_DEFAULT`.
    pub const DEFAULT: u32 = 1;
    /// `CUBLASLT_EPILOGUE_RELU`: `D = max(x, 0)` (NaN becomes 0, like `fmaxf`).
    pub const RELU: u32 = 2;
    /// `CUBLASLT_EPILOGUE_BIAS`: `D = x + bias[row]`, bias of D's type, shared by all batches.
    pub const BIAS: u32 = 4;
    /// `CUBLASLT_EPILOGUE_RELU_BIAS`: `D = max(x + bias[row], 0)`.
    pub const RELU_BIAS: u32 = 6;
}
