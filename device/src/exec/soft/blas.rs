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

use core::ops::{Add, Div, Mul, Sub};

use half::{bf16, f16};
use vgpu_proto::payload::{blas_op, GemmDesc, LtMatmulDesc, MatrixLayout, TrsmBatchedDesc};
use vgpu_proto::Status;

/// Device memory as the soft executor exposes it: bounds-checked copies in and out.
pub trait DeviceMemory {
    /// Copies `out.len()` bytes from device address `addr`; Err(Status::INVALID_VALUE) when
    /// the range is not inside one live allocation.
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Status>;
    /// Copies `data` to device address `addr`; Err(Status::INVALID_VALUE) when the range is
    /// not inside one live allocation.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), Status>;
}

/// `cudaDataType` values this module knows by name.
pub mod data_type {
    /// `CUDA_R_32F`.
    pub const R_32F: u32 = 0;
    /// `CUDA_R_64F`.
    pub const R_64F: u32 = 1;
    /// `CUDA_R_16F`.
    pub const R_16F: u32 = 2;
    /// `CUDA_R_8I`.
    pub const R_8I: u32 = 3;
    /// `CUDA_C_32F`.
    pub const C_32F: u32 = 4;
    /// `CUDA_C_64F`.
    pub const C_64F: u32 = 5;
    /// `CUDA_C_16F`.
    pub const C_16F: u32 = 6;
    /// `CUDA_C_8I`.
    pub const C_8I: u32 = 7;
    /// `CUDA_R_8U`.
    pub const R_8U: u32 = 8;
    /// `CUDA_R_32I`.
    pub const R_32I: u32 = 10;
    /// `CUDA_R_16BF`.
    pub const R_16BF: u32 = 14;
}

/// `cublasComputeType_t` values.
pub mod compute_type {
    /// `CUBLAS_COMPUTE_16F`.
    pub const C16F: u32 = 64;
    /// `CUBLAS_COMPUTE_16F_PEDANTIC`.
    pub const C16F_PEDANTIC: u32 = 65;
    /// `CUBLAS_COMPUTE_32F`.
    pub const C32F: u32 = 68;
    /// `CUBLAS_COMPUTE_32F_PEDANTIC`.
    pub const C32F_PEDANTIC: u32 = 69;
    /// `CUBLAS_COMPUTE_64F`.
    pub const C64F: u32 = 70;
    /// `CUBLAS_COMPUTE_64F_PEDANTIC`.
    pub const C64F_PEDANTIC: u32 = 71;
    /// `CUBLAS_COMPUTE_32I` (not supported here).
    pub const C32I: u32 = 72;
    /// `CUBLAS_COMPUTE_32I_PEDANTIC` (not supported here).
    pub const C32I_PEDANTIC: u32 = 73;
    /// `CUBLAS_COMPUTE_32F_FAST_16F`.
    pub const C32F_FAST_16F: u32 = 74;
    /// `CUBLAS_COMPUTE_32F_FAST_16BF`.
    pub const C32F_FAST_16BF: u32 = 75;
    /// `CUBLAS_COMPUTE_32F_FAST_TF32`.
    pub const C32F_FAST_TF32: u32 = 77;
}

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

/// Bytes copied per `DeviceMemory` call (small under test so that chunking is exercised).
const CHUNK_BYTES: usize = if cfg!(test) { 4096 } else { 1 << 20 };

// ---------------------------------------------------------------------------------------
// Element types and arithmetic types
// ---------------------------------------------------------------------------------------

/// A storage type of a matrix element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F32,
    F64,
    F16,
    Bf16,
}

impl Elem {
    fn from_cuda(t: u32) -> Option<Elem> {
        match t {
            data_type::R_32F => Some(Elem::F32),
            data_type::R_64F => Some(Elem::F64),
            data_type::R_16F => Some(Elem::F16),
            data_type::R_16BF => Some(Elem::Bf16),
            _ => None,
        }
    }

    fn cuda(self) -> u32 {
        match self {
            Elem::F32 => data_type::R_32F,
            Elem::F64 => data_type::R_64F,
            Elem::F16 => data_type::R_16F,
            Elem::Bf16 => data_type::R_16BF,
        }
    }

    fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::F64 => 8,
            Elem::F16 | Elem::Bf16 => 2,
        }
    }
}

/// Name of a `cudaDataType` for log messages.
fn data_type_name(t: u32) -> String {
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
fn compute_type_name(t: u32) -> String {
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
trait Real:
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
fn scalar<T: Real>(e: Elem, bytes: &[u8; 16]) -> T {
    T::decoder(e)(&bytes[..e.size()])
}

// ---------------------------------------------------------------------------------------
// Type plans
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Precision {
    F32,
    F64,
}

/// How one GEMM is computed.
#[derive(Clone, Copy, Debug)]
struct Plan {
    prec: Precision,
    /// Type of alpha and beta.
    scale: Elem,
    /// Type of A and B.
    ab: Elem,
    /// Type of C (and D).
    c: Elem,
}

fn not_supported(what: &str, a: u32, b: u32, c: u32, compute: u32) -> Status {
    log::warn!(
        "soft BLAS: {what} with A {}, B {}, C {} and compute {} is not supported",
        data_type_name(a),
        data_type_name(b),
        data_type_name(c),
        compute_type_name(compute)
    );
    Status::BLAS_NOT_SUPPORTED
}

/// Chooses the arithmetic for a type combination (see the table at the top).
fn plan(
    what: &str,
    a_type: u32,
    b_type: u32,
    c_type: u32,
    compute: u32,
    allow_legacy: bool,
) -> Result<Plan, Status> {
    use compute_type::*;
    let fail = || not_supported(what, a_type, b_type, c_type, compute);
    let (prec, scale) = match compute {
        C32F | C32F_PEDANTIC | C32F_FAST_16F | C32F_FAST_16BF | C32F_FAST_TF32 => {
            (Precision::F32, Elem::F32)
        }
        C16F | C16F_PEDANTIC => (Precision::F32, Elem::F16),
        C64F | C64F_PEDANTIC => (Precision::F64, Elem::F64),
        data_type::R_32F if allow_legacy => (Precision::F32, Elem::F32),
        data_type::R_16F if allow_legacy => (Precision::F32, Elem::F16),
        data_type::R_64F if allow_legacy => (Precision::F64, Elem::F64),
        _ => return Err(fail()),
    };
    let (Some(a), Some(b), Some(c)) = (
        Elem::from_cuda(a_type),
        Elem::from_cuda(b_type),
        Elem::from_cuda(c_type),
    ) else {
        return Err(fail());
    };
    let ok = a == b
        && match scale {
            Elem::F32 => matches!(
                (a, c),
                (Elem::F32, Elem::F32)
                    | (Elem::F16, Elem::F16)
                    | (Elem::F16, Elem::F32)
                    | (Elem::Bf16, Elem::Bf16)
                    | (Elem::Bf16, Elem::F32)
            ),
            Elem::F16 => a == Elem::F16 && c == Elem::F16,
            Elem::F64 => a == Elem::F64 && c == Elem::F64,
            Elem::Bf16 => false,
        };
    if !ok {
        return Err(fail());
    }
    Ok(Plan {
        prec,
        scale,
        ab: a,
        c,
    })
}

// ---------------------------------------------------------------------------------------
// Argument helpers
// ---------------------------------------------------------------------------------------

const INVALID: Status = Status::BLAS_INVALID_VALUE;

/// `cublasOperation_t` → transposed? (C is T for real types.)
fn transposed(op: u32) -> Result<bool, Status> {
    match op {
        blas_op::N => Ok(false),
        blas_op::T | blas_op::C => Ok(true),
        _ => Err(INVALID),
    }
}

/// A non-negative dimension.
fn dim(v: i64) -> Result<usize, Status> {
    usize::try_from(v).map_err(|_| INVALID)
}

/// A leading dimension, which must be at least `max(1, rows)`.
fn lead(ld: i64, rows: usize) -> Result<usize, Status> {
    let ld = usize::try_from(ld).map_err(|_| INVALID)?;
    if ld < rows.max(1) {
        return Err(INVALID);
    }
    Ok(ld)
}

/// `base + i·stride` elements of `es` bytes, as a device address.
fn batch_addr(base: u64, i: usize, stride: i64, es: usize) -> Result<u64, Status> {
    let off = i128::try_from(i)
        .ok()
        .and_then(|i| i.checked_mul(i128::from(stride)))
        .and_then(|o| o.checked_mul(es as i128))
        .and_then(|o| o.checked_add(i128::from(base)))
        .ok_or(INVALID)?;
    u64::try_from(off).map_err(|_| INVALID)
}

/// Entry `i` of a device array of u64 pointers.
fn read_ptr(mem: &dyn DeviceMemory, array: u64, i: usize) -> Result<u64, Status> {
    let addr = batch_addr(array, i, 1, 8)?;
    let mut b = [0u8; 8];
    mem.read(addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A Vec with room for `n` elements, or BLAS_ALLOC_FAILED.
fn with_capacity<T>(n: usize) -> Result<Vec<T>, Status> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Status::BLAS_ALLOC_FAILED)?;
    Ok(v)
}

fn zeros<T: Real>(n: usize) -> Result<Vec<T>, Status> {
    let mut v = with_capacity(n)?;
    v.resize(n, T::ZERO);
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// Operand regions in device memory
// ---------------------------------------------------------------------------------------

/// A column-major `rows × cols` matrix at `addr` with leading dimension `ld`, whose byte
/// extent `((cols-1)·ld + rows)·size` has been checked to fit in 64-bit addresses.
#[derive(Clone, Copy, Debug)]
struct Region {
    addr: u64,
    rows: usize,
    cols: usize,
    ld: usize,
    elem: Elem,
    /// Elements in the compact copy (`rows·cols`).
    len: usize,
    /// Byte extent in device memory.
    span: usize,
}

impl Region {
    fn new(addr: u64, rows: usize, cols: usize, ld: usize, elem: Elem) -> Result<Region, Status> {
        if ld < rows.max(1) {
            return Err(INVALID);
        }
        let len = rows.checked_mul(cols).ok_or(INVALID)?;
        let span = if len == 0 {
            0
        } else {
            (cols - 1)
                .checked_mul(ld)
                .and_then(|e| e.checked_add(rows))
                .and_then(|e| e.checked_mul(elem.size()))
                .ok_or(INVALID)?
        };
        addr.checked_add(u64::try_from(span).map_err(|_| INVALID)?)
            .ok_or(INVALID)?;
        Ok(Region {
            addr,
            rows,
            cols,
            ld,
            elem,
            len,
            span,
        })
    }

    /// Reads the first and the last element, so that a bad pointer or leading dimension
    /// fails before any host memory is reserved for the operand.
    fn probe(&self, mem: &dyn DeviceMemory) -> Result<(), Status> {
        if self.len == 0 {
            return Ok(());
        }
        let es = self.elem.size();
        let mut b = [0u8; 8];
        mem.read(self.addr, &mut b[..es])?;
        // span >= es and addr + span fits (checked in new).
        mem.read(self.addr + (self.span - es) as u64, &mut b[..es])
    }

    /// Elements per staging chunk.
    fn chunk_elems(&self) -> usize {
        (CHUNK_BYTES / self.elem.size()).min(self.len)
    }

    /// Calls `f(device address, index in the compact copy, element count)` for contiguous
    /// pieces of at most `CHUNK_BYTES`, in column-major order.
    fn for_each_chunk(
        &self,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), Status>,
    ) -> Result<(), Status> {
        if self.len == 0 {
            return Ok(());
        }
        let es = self.elem.size();
        let per_chunk = self.chunk_elems();
        let (runs, run_len, run_step) = if self.cols == 1 || self.ld == self.rows {
            (1, self.len, 0)
        } else {
            (self.cols, self.rows, self.ld)
        };
        let mut dst = 0;
        for r in 0..runs {
            let mut off = 0;
            while off < run_len {
                let n = (run_len - off).min(per_chunk);
                // r·run_step + off < (cols-1)·ld + rows, so the byte offset is < span,
                // which `new` checked to fit (and addr + span to fit in u64).
                let byte_off = (r * run_step + off) * es;
                f(self.addr + byte_off as u64, dst, n)?;
                dst += n;
                off += n;
            }
        }
        Ok(())
    }

    /// Copies the matrix out of device memory into a compact column-major Vec.
    fn read<T: Real>(&self, mem: &dyn DeviceMemory) -> Result<Vec<T>, Status> {
        self.probe(mem)?;
        let es = self.elem.size();
        let dec = T::decoder(self.elem);
        let mut out = with_capacity(self.len)?;
        let mut buf = vec![0u8; self.chunk_elems() * es];
        self.for_each_chunk(|addr, _, n| {
            let bytes = &mut buf[..n * es];
            mem.read(addr, bytes)?;
            out.extend(bytes.chunks_exact(es).map(dec));
            Ok(())
        })?;
        Ok(out)
    }

    /// Copies a compact column-major matrix into device memory, converting to `elem`.
    fn write<T: Real>(&self, mem: &dyn DeviceMemory, data: &[T]) -> Result<(), Status> {
        if data.len() != self.len {
            return Err(Status::BLAS_INTERNAL_ERROR);
        }
        let es = self.elem.size();
        let enc = T::encoder(self.elem);
        let mut buf = vec![0u8; self.chunk_elems() * es];
        self.for_each_chunk(|addr, dst, n| {
            let bytes = &mut buf[..n * es];
            for (v, o) in data[dst..dst + n].iter().zip(bytes.chunks_exact_mut(es)) {
                enc(*v, o);
            }
            mem.write(addr, bytes)
        })
    }
}

// ---------------------------------------------------------------------------------------
// The kernel
// ---------------------------------------------------------------------------------------

/// `C = alpha·op(A)·op(B) + beta·C` on compact column-major matrices: op(A) is `m×k`
/// (stored `m×k`, or `k×m` when `ta`), op(B) is `k×n` (stored `k×n`, or `n×k` when `tb`),
/// C is `m×n`.
#[derive(Clone, Copy, Debug)]
struct MatMul {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
}

impl MatMul {
    fn run<T: Real>(&self, alpha: T, a: &[T], b: &[T], beta: T, c: &mut [T]) -> Result<(), Status> {
        let MatMul { m, n, k, ta, tb } = *self;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 || alpha == T::ZERO {
            // C = beta·C without reading A, B (and without reading C when beta == 0).
            for v in c.iter_mut() {
                *v = if beta == T::ZERO { T::ZERO } else { beta * *v };
            }
            return Ok(());
        }
        if m.checked_mul(k) != Some(a.len())
            || k.checked_mul(n) != Some(b.len())
            || m.checked_mul(n) != Some(c.len())
        {
            return Err(Status::BLAS_INTERNAL_ERROR);
        }
        let (rsa, csa) = if ta { (k, 1) } else { (1, m) };
        let (rsb, csb) = if tb { (n, 1) } else { (1, k) };
        // Slices never exceed isize::MAX elements, and each stride is at most a length.
        let s = |v: usize| v as isize;
        // SAFETY: m, n, k >= 1 and a.len() == m·k, b.len() == k·n, c.len() == m·n (checked
        // above). With these strides the largest offsets the kernel forms are
        // A: (m-1)·rsa + (k-1)·csa = m·k - 1 (either layout), B: (k-1)·rsb + (n-1)·csb =
        // k·n - 1, C: (m-1)·1 + (n-1)·m = m·n - 1, so every access stays inside its slice.
        // C's strides (1, m) map distinct (i, j) to distinct elements, as the kernel
        // requires, and `c` is a unique borrow, so it aliases neither `a` nor `b`. The kernel
        // reads C only when beta != 0; `c` is initialised anyway.
        unsafe {
            (T::KERNEL)(
                m,
                k,
                n,
                alpha,
                a.as_ptr(),
                s(rsa),
                s(csa),
                b.as_ptr(),
                s(rsb),
                s(csb),
                beta,
                c.as_mut_ptr(),
                1,
                s(m),
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// GEMM
// ---------------------------------------------------------------------------------------

/// Validated GEMM arguments.
#[derive(Clone, Copy, Debug)]
struct GemmArgs {
    mm: MatMul,
    lda: usize,
    ldb: usize,
    ldc: usize,
    batch: usize,
    plan: Plan,
}

fn gemm_args(what: &str, d: &GemmDesc) -> Result<GemmArgs, Status> {
    let ta = transposed(d.transa)?;
    let tb = transposed(d.transb)?;
    let (m, n, k) = (dim(d.m)?, dim(d.n)?, dim(d.k)?);
    let batch = dim(d.batch_count)?;
    let lda = lead(d.lda, if ta { k } else { m })?;
    let ldb = lead(d.ldb, if tb { n } else { k })?;
    let ldc = lead(d.ldc, m)?;
    let plan = plan(what, d.a_type, d.b_type, d.c_type, d.compute_type, true)?;
    Ok(GemmArgs {
        mm: MatMul { m, n, k, ta, tb },
        lda,
        ldb,
        ldc,
        batch,
        plan,
    })
}

/// Where the operands of batch `i` are.
enum Operands<'a> {
    Strided(&'a GemmDesc),
    Pointers(&'a GemmDesc),
}

impl Operands<'_> {
    /// (A, B, C) of batch `i`; A and B are 0 when they are not needed.
    fn get(
        &self,
        mem: &dyn DeviceMemory,
        i: usize,
        plan: &Plan,
        need_ab: bool,
    ) -> Result<(u64, u64, u64), Status> {
        match *self {
            Operands::Strided(d) => {
                let ab = plan.ab.size();
                Ok((
                    batch_addr(d.a, i, d.stride_a, ab)?,
                    batch_addr(d.b, i, d.stride_b, ab)?,
                    batch_addr(d.c, i, d.stride_c, plan.c.size())?,
                ))
            }
            Operands::Pointers(d) => {
                let (a, b) = if need_ab {
                    (read_ptr(mem, d.a, i)?, read_ptr(mem, d.b, i)?)
                } else {
                    (0, 0)
                };
                Ok((a, b, read_ptr(mem, d.c, i)?))
            }
        }
    }
}

fn gemm_common(
    mem: &dyn DeviceMemory,
    what: &str,
    d: &GemmDesc,
    ops: Operands<'_>,
) -> Result<(), Status> {
    let args = gemm_args(what, d)?;
    if args.mm.m == 0 || args.mm.n == 0 || args.batch == 0 {
        return Ok(());
    }
    match args.plan.prec {
        Precision::F32 => gemm_typed::<f32>(mem, d, &args, &ops),
        Precision::F64 => gemm_typed::<f64>(mem, d, &args, &ops),
    }
}

fn gemm_typed<T: Real>(
    mem: &dyn DeviceMemory,
    d: &GemmDesc,
    g: &GemmArgs,
    ops: &Operands<'_>,
) -> Result<(), Status> {
    let alpha: T = scalar(g.plan.scale, &d.alpha);
    let beta: T = scalar(g.plan.scale, &d.beta);
    let MatMul { m, n, k, ta, tb } = g.mm;
    let need_ab = alpha != T::ZERO && k > 0;
    for i in 0..g.batch {
        let (a, b, c) = ops.get(mem, i, &g.plan, need_ab)?;
        let c_reg = Region::new(c, m, n, g.ldc, g.plan.c)?;
        let (av, bv) = if need_ab {
            let (ar, ac) = if ta { (k, m) } else { (m, k) };
            let (br, bc) = if tb { (n, k) } else { (k, n) };
            (
                Region::new(a, ar, ac, g.lda, g.plan.ab)?.read::<T>(mem)?,
                Region::new(b, br, bc, g.ldb, g.plan.ab)?.read::<T>(mem)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let mut cv = if beta == T::ZERO {
            c_reg.probe(mem)?;
            zeros(c_reg.len)?
        } else {
            c_reg.read(mem)?
        };
        g.mm.run(alpha, &av, &bv, beta, &mut cv)?;
        c_reg.write(mem, &cv)?;
    }
    Ok(())
}

/// BLAS_GEMM (strided-batched when batch_count > 1) — column-major as cuBLAS.
pub fn gemm(mem: &dyn DeviceMemory, d: &GemmDesc) -> Result<(), Status> {
    gemm_common(mem, "BLAS_GEMM", d, Operands::Strided(d))
}

/// BLAS_GEMM_BATCHED: a, b, c are device arrays of batch_count u64 pointers (read them
/// through `mem`). The strides are ignored (the decoder requires them to be 0).
pub fn gemm_batched(mem: &dyn DeviceMemory, d: &GemmDesc) -> Result<(), Status> {
    gemm_common(mem, "BLAS_GEMM_BATCHED", d, Operands::Pointers(d))
}

// ---------------------------------------------------------------------------------------
// TRSM
// ---------------------------------------------------------------------------------------

/// Validated TRSM arguments.
#[derive(Clone, Copy, Debug)]
struct TrsmArgs {
    left: bool,
    upper: bool,
    trans: bool,
    unit: bool,
    m: usize,
    n: usize,
    /// Order of A.
    s: usize,
    lda: usize,
    ldb: usize,
    batch: usize,
    elem: Elem,
}

/// BLAS_TRSM_BATCHED: solves `op(A[i])·X = alpha·B[i]` (side 0, left) or
/// `X·op(A[i]) = alpha·B[i]` (side 1, right) in place in `B[i]`, with A triangular (uplo 0
/// lower, 1 upper; diag 1 = unit diagonal, not read). `a` and `b` are device arrays of
/// pointers; data type `CUDA_R_32F` or `CUDA_R_64F`. alpha == 0 sets B to 0 without reading
/// A. A zero on a non-unit diagonal gives infinities/NaNs, as on the GPU.
pub fn trsm_batched(mem: &dyn DeviceMemory, d: &TrsmBatchedDesc) -> Result<(), Status> {
    if d.side > 1 || d.uplo > 1 || d.diag > 1 {
        return Err(INVALID);
    }
    let trans = transposed(d.trans)?;
    let (m, n) = (dim(d.m)?, dim(d.n)?);
    let batch = dim(d.batch_count)?;
    let left = d.side == 0;
    let s = if left { m } else { n };
    let lda = lead(d.lda, s)?;
    let ldb = lead(d.ldb, m)?;
    let elem = match Elem::from_cuda(d.data_type) {
        Some(e @ (Elem::F32 | Elem::F64)) => e,
        _ => {
            log::warn!(
                "soft BLAS: BLAS_TRSM_BATCHED with data type {} is not supported",
                data_type_name(d.data_type)
            );
            return Err(Status::BLAS_NOT_SUPPORTED);
        }
    };
    if m == 0 || n == 0 || batch == 0 {
        return Ok(());
    }
    let t = TrsmArgs {
        left,
        upper: d.uplo == 1,
        trans,
        unit: d.diag == 1,
        m,
        n,
        s,
        lda,
        ldb,
        batch,
        elem,
    };
    match elem {
        Elem::F64 => trsm_typed::<f64>(mem, d, &t),
        _ => trsm_typed::<f32>(mem, d, &t),
    }
}

fn trsm_typed<T: Real>(
    mem: &dyn DeviceMemory,
    d: &TrsmBatchedDesc,
    t: &TrsmArgs,
) -> Result<(), Status> {
    let alpha: T = scalar(t.elem, &d.alpha);
    for i in 0..t.batch {
        let b_reg = Region::new(read_ptr(mem, d.b, i)?, t.m, t.n, t.ldb, t.elem)?;
        if alpha == T::ZERO {
            b_reg.probe(mem)?;
            b_reg.write(mem, &zeros::<T>(b_reg.len)?)?;
            continue;
        }
        let a_reg = Region::new(read_ptr(mem, d.a, i)?, t.s, t.s, t.lda, t.elem)?;
        let a = a_reg.read::<T>(mem)?;
        let mut b = b_reg.read::<T>(mem)?;
        solve(t, &a, &mut b, alpha)?;
        b_reg.write(mem, &b)?;
    }
    Ok(())
}

/// Solves one TRSM on compact matrices (A `s×s`, B `m×n`).
fn solve<T: Real>(t: &TrsmArgs, a: &[T], b: &mut [T], alpha: T) -> Result<(), Status> {
    let (m, n, s) = (t.m, t.n, t.s);
    if a.len() != s * s || b.len() != m * n {
        return Err(Status::BLAS_INTERNAL_ERROR);
    }
    // op(A)(i, l); only the stored triangle is ever asked for.
    let op_a = |i: usize, l: usize| if t.trans { a[l + i * s] } else { a[i + l * s] };
    // op(A) is lower triangular when A is lower and not transposed, or upper and transposed.
    let op_lower = t.upper == t.trans;
    let mut x = zeros::<T>(s)?;
    if t.left {
        // Column j of X solves op(A)·x = alpha·b_j.
        for j in 0..n {
            let col = &mut b[j * m..(j + 1) * m];
            for (xi, bi) in x.iter_mut().zip(col.iter()) {
                *xi = alpha * *bi;
            }
            substitute(&mut x, op_a, op_lower, t.unit);
            col.copy_from_slice(&x);
        }
    } else {
        // Row i of X solves op(A)ᵀ·x = alpha·(row i of B); op(A)ᵀ(r, l) = op(A)(l, r).
        for i in 0..m {
            for (j, xj) in x.iter_mut().enumerate() {
                *xj = alpha * b[i + j * m];
            }
            substitute(&mut x, |r, l| op_a(l, r), !op_lower, t.unit);
            for (j, xj) in x.iter().enumerate() {
                b[i + j * m] = *xj;
            }
        }
    }
    Ok(())
}

/// Forward (lower) or back (upper) substitution of `M·x = rhs`, `x` holding `rhs` on entry.
fn substitute<T: Real>(x: &mut [T], mat: impl Fn(usize, usize) -> T, lower: bool, unit: bool) {
    let s = x.len();
    let mut step = |i: usize, others: core::ops::Range<usize>| {
        let mut v = x[i];
        for l in others {
            v = v - mat(i, l) * x[l];
        }
        x[i] = if unit { v } else { v / mat(i, i) };
    };
    if lower {
        for i in 0..s {
            step(i, 0..i);
        }
    } else {
        for i in (0..s).rev() {
            step(i, i + 1..s);
        }
    }
}

// ---------------------------------------------------------------------------------------
// cuBLASLt matmul
// ---------------------------------------------------------------------------------------

/// Validated Lt arguments.
#[derive(Clone, Copy, Debug)]
struct LtArgs {
    mm: MatMul,
    lda: usize,
    ldb: usize,
    ldc: usize,
    ldd: usize,
    batch: usize,
    relu: bool,
    bias: bool,
    plan: Plan,
}

/// (rows, cols, ld) of a column-major layout.
fn layout_dims(l: &MatrixLayout) -> Result<(usize, usize, usize), Status> {
    let rows = usize::try_from(l.rows).map_err(|_| INVALID)?;
    let cols = usize::try_from(l.cols).map_err(|_| INVALID)?;
    let ld = lead(l.ld, rows)?;
    Ok((rows, cols, ld))
}

fn lt_args(d: &LtMatmulDesc) -> Result<LtArgs, Status> {
    let ta = transposed(d.transa)?;
    let tb = transposed(d.transb)?;
    let layouts = [&d.a_layout, &d.b_layout, &d.c_layout, &d.d_layout];
    if let Some(l) = layouts.iter().find(|l| l.order != 0) {
        log::warn!(
            "soft BLAS: BLASLT_MATMUL with matrix order {} is not supported (column-major only)",
            l.order
        );
        return Err(Status::BLAS_NOT_SUPPORTED);
    }
    let (ar, ac, lda) = layout_dims(&d.a_layout)?;
    let (br, bc, ldb) = layout_dims(&d.b_layout)?;
    let (cr, cc, ldc) = layout_dims(&d.c_layout)?;
    let (m, n, ldd) = layout_dims(&d.d_layout)?;
    let (am, k) = if ta { (ac, ar) } else { (ar, ac) };
    let (bk, bn) = if tb { (bc, br) } else { (br, bc) };
    if am != m || bk != k || bn != n || cr != m || cc != n {
        return Err(INVALID);
    }
    let batch = d.d_layout.batch_count;
    if batch < 1 || layouts.iter().any(|l| l.batch_count != batch) {
        return Err(INVALID);
    }
    let batch = usize::try_from(batch).map_err(|_| INVALID)?;
    let (a_t, b_t, c_t, d_t) = (
        d.a_layout.data_type,
        d.b_layout.data_type,
        d.c_layout.data_type,
        d.d_layout.data_type,
    );
    if c_t != d_t {
        return Err(not_supported(
            "BLASLT_MATMUL (C and D types differ)",
            a_t,
            b_t,
            c_t,
            d.compute_type,
        ));
    }
    let plan = plan("BLASLT_MATMUL", a_t, b_t, d_t, d.compute_type, false)?;
    if d.scale_type != plan.scale.cuda() {
        log::warn!(
            "soft BLAS: BLASLT_MATMUL with compute {} and scale type {} is not supported",
            compute_type_name(d.compute_type),
            data_type_name(d.scale_type)
        );
        return Err(Status::BLAS_NOT_SUPPORTED);
    }
    let (relu, bias) = match d.epilogue {
        lt_epilogue::DEFAULT => (false, false),
        lt_epilogue::RELU => (true, false),
        lt_epilogue::BIAS => (false, true),
        lt_epilogue::RELU_BIAS => (true, true),
        e => {
            log::warn!("soft BLAS: BLASLT_MATMUL with epilogue {e} is not supported");
            return Err(Status::BLAS_NOT_SUPPORTED);
        }
    };
    if bias && d.bias == 0 {
        return Err(INVALID);
    }
    Ok(LtArgs {
        mm: MatMul { m, n, k, ta, tb },
        lda,
        ldb,
        ldc,
        ldd,
        batch,
        relu,
        bias,
        plan,
    })
}

/// BLASLT_MATMUL: `D = epilogue(alpha·op(A)·op(B) + beta·C)` using the layouts
/// (column-major order only; `BLAS_NOT_SUPPORTED` for others). The shape is D's; A, B and
/// C must agree with it and all layouts must have D's batch count (batch `i` of each
/// operand is at `ptr + i·stride` elements). Epilogues: DEFAULT, RELU, BIAS, RELU_BIAS (the
/// bias vector has D's type and m elements); others give `BLAS_NOT_SUPPORTED`. C may be D.
pub fn lt_matmul(mem: &dyn DeviceMemory, d: &LtMatmulDesc) -> Result<(), Status> {
    let args = lt_args(d)?;
    if args.mm.m == 0 || args.mm.n == 0 {
        return Ok(());
    }
    match args.plan.prec {
        Precision::F32 => lt_typed::<f32>(mem, d, &args),
        Precision::F64 => lt_typed::<f64>(mem, d, &args),
    }
}

fn lt_typed<T: Real>(mem: &dyn DeviceMemory, d: &LtMatmulDesc, g: &LtArgs) -> Result<(), Status> {
    let alpha: T = scalar(g.plan.scale, &d.alpha);
    let beta: T = scalar(g.plan.scale, &d.beta);
    let MatMul { m, n, k, ta, tb } = g.mm;
    let (ab, ce) = (g.plan.ab, g.plan.c);
    let need_ab = alpha != T::ZERO && k > 0;
    let bias: Vec<T> = if g.bias {
        Region::new(d.bias, m, 1, m, ce)?.read(mem)?
    } else {
        Vec::new()
    };
    for i in 0..g.batch {
        let d_reg = Region::new(batch_addr(d.d, i, d.stride_d, ce.size())?, m, n, g.ldd, ce)?;
        let (av, bv) = if need_ab {
            let (ar, ac) = if ta { (k, m) } else { (m, k) };
            let (br, bc) = if tb { (n, k) } else { (k, n) };
            let a = batch_addr(d.a, i, d.stride_a, ab.size())?;
            let b = batch_addr(d.b, i, d.stride_b, ab.size())?;
            (
                Region::new(a, ar, ac, g.lda, ab)?.read::<T>(mem)?,
                Region::new(b, br, bc, g.ldb, ab)?.read::<T>(mem)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let mut acc = if beta == T::ZERO {
            d_reg.probe(mem)?;
            zeros(d_reg.len)?
        } else {
            let c = batch_addr(d.c, i, d.stride_c, ce.size())?;
            Region::new(c, m, n, g.ldc, ce)?.read(mem)?
        };
        g.mm.run(alpha, &av, &bv, beta, &mut acc)?;
        if g.bias || g.relu {
            for col in acc.chunks_exact_mut(m) {
                for (r, v) in col.iter_mut().enumerate() {
                    if g.bias {
                        *v = *v + bias[r];
                    }
                    if g.relu {
                        *v = v.relu();
                    }
                }
            }
        }
        d_reg.write(mem, &acc)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::RefCell;

    // ----- test double ------------------------------------------------------------------

    /// Device memory over a few Vec<u8> allocations at fake addresses 4 GiB apart.
    struct VecMemory {
        allocs: RefCell<Vec<(u64, Vec<u8>)>>,
    }

    const BASE: u64 = 0x7f00_0000_0000;

    impl VecMemory {
        fn new() -> Self {
            VecMemory {
                allocs: RefCell::new(Vec::new()),
            }
        }
        fn alloc(&self, len: usize) -> u64 {
            let mut a = self.allocs.borrow_mut();
            let base = BASE + ((a.len() as u64) << 32);
            a.push((base, vec![0; len]));
            base
        }
        fn alloc_with(&self, bytes: &[u8]) -> u64 {
            let addr = self.alloc(bytes.len());
            self.write(addr, bytes).unwrap();
            addr
        }
        fn ptr_array(&self, ptrs: &[u64]) -> u64 {
            let bytes: Vec<u8> = ptrs.iter().flat_map(|p| p.to_le_bytes()).collect();
            self.alloc_with(&bytes)
        }
        fn locate(&self, addr: u64, len: usize) -> Result<(usize, usize), Status> {
            let a = self.allocs.borrow();
            for (idx, (base, v)) in a.iter().enumerate() {
                if addr >= *base {
                    let off = addr - base;
                    if off <= v.len() as u64 && len as u64 <= v.len() as u64 - off {
                        return Ok((idx, off as usize));
                    }
                }
            }
            Err(Status::INVALID_VALUE)
        }
        fn snapshot(&self) -> Vec<Vec<u8>> {
            self.allocs
                .borrow()
                .iter()
                .map(|(_, v)| v.clone())
                .collect()
        }
        fn load(&self, addr: u64, len: usize) -> Vec<u8> {
            let mut v = vec![0; len];
            self.read(addr, &mut v).unwrap();
            v
        }
    }

    impl DeviceMemory for VecMemory {
        fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Status> {
            let (idx, off) = self.locate(addr, out.len())?;
            out.copy_from_slice(&self.allocs.borrow()[idx].1[off..off + out.len()]);
            Ok(())
        }
        fn write(&self, addr: u64, data: &[u8]) -> Result<(), Status> {
            let (idx, off) = self.locate(addr, data.len())?;
            self.allocs.borrow_mut()[idx].1[off..off + data.len()].copy_from_slice(data);
            Ok(())
        }
    }

    /// A named change to a valid descriptor.
    type Mutation<D> = (&'static str, Box<dyn Fn(&mut D)>);

    /// `|err| <= tol`, false for NaN.
    fn within(err: f64, tol: f64) -> bool {
        err.abs() <= tol
    }

    // ----- values ----------------------------------------------------------------------

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // splitmix64
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in [-1, 1).
        fn val(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    fn enc(e: Elem, v: f64) -> Vec<u8> {
        match e {
            Elem::F32 => (v as f32).to_le_bytes().to_vec(),
            Elem::F64 => v.to_le_bytes().to_vec(),
            Elem::F16 => f16::from_f64(v).to_le_bytes().to_vec(),
            Elem::Bf16 => bf16::from_f64(v).to_le_bytes().to_vec(),
        }
    }
    fn dec(e: Elem, b: &[u8]) -> f64 {
        match e {
            Elem::F32 => f64::from(f32::from_le_bytes(b.try_into().unwrap())),
            Elem::F64 => f64::from_le_bytes(b.try_into().unwrap()),
            Elem::F16 => f16::from_le_bytes(b.try_into().unwrap()).to_f64(),
            Elem::Bf16 => bf16::from_le_bytes(b.try_into().unwrap()).to_f64(),
        }
    }
    fn scal(e: Elem, v: f64) -> [u8; 16] {
        let mut s = [0u8; 16];
        let b = enc(e, v);
        s[..b.len()].copy_from_slice(&b);
        s
    }
    /// Unit roundoff of an output type.
    fn unit(e: Elem) -> f64 {
        match e {
            Elem::F32 => 2f64.powi(-24),
            Elem::F64 => 2f64.powi(-53),
            Elem::F16 => 2f64.powi(-11),
            Elem::Bf16 => 2f64.powi(-8),
        }
    }
    /// Smallest positive subnormal of an output type.
    fn tiny(e: Elem) -> f64 {
        match e {
            Elem::F32 => 2f64.powi(-149),
            Elem::F64 => f64::from_bits(1),
            Elem::F16 => 2f64.powi(-24),
            Elem::Bf16 => 2f64.powi(-133),
        }
    }
    /// The documented GEMM bound.
    fn gemm_tol(k: usize, s: f64, reference: f64, u_c: f64, out: Elem) -> f64 {
        2.0 * (k as f64 + 4.0) * u_c * s + unit(out) * reference.abs() + tiny(out)
    }
    fn scale_of(compute: u32) -> Elem {
        match compute {
            64 | 65 | 2 => Elem::F16,
            70 | 71 | 1 => Elem::F64,
            _ => Elem::F32,
        }
    }
    fn u_compute(compute: u32) -> f64 {
        if scale_of(compute) == Elem::F64 {
            2f64.powi(-53)
        } else {
            2f64.powi(-24)
        }
    }

    // ----- matrices in the fake device memory -------------------------------------------

    #[derive(Clone, Copy, Debug)]
    enum Placement {
        /// One allocation per batch (for pointer arrays).
        Separate,
        /// One allocation, batches `extent + pad` elements apart.
        Strided(usize),
        /// Every batch at the same address (stride 0).
        Broadcast,
    }

    /// A batch of column-major matrices written into a VecMemory.
    struct Mat {
        e: Elem,
        rows: usize,
        cols: usize,
        ld: usize,
        stride: usize,
        addrs: Vec<u64>,
    }

    impl Mat {
        #[allow(clippy::too_many_arguments)]
        fn new(
            mem: &VecMemory,
            e: Elem,
            rows: usize,
            cols: usize,
            ld: usize,
            batch: usize,
            place: Placement,
            mut val: impl FnMut() -> f64,
            pad: f64,
        ) -> Mat {
            let es = e.size();
            let extent = if rows * cols == 0 {
                0
            } else {
                (cols - 1) * ld + rows
            };
            let one = |mem: &VecMemory, n: usize| {
                let bytes: Vec<u8> = (0..n.max(1)).flat_map(|_| enc(e, pad)).collect();
                mem.alloc_with(&bytes)
            };
            let (stride, addrs) = match place {
                Placement::Separate => (0, (0..batch).map(|_| one(mem, extent)).collect()),
                Placement::Broadcast => {
                    let a = one(mem, extent);
                    (0, vec![a; batch])
                }
                Placement::Strided(p) => {
                    let stride = extent + p;
                    let a = one(mem, stride * (batch - 1) + extent);
                    (
                        stride,
                        (0..batch).map(|b| a + (b * stride * es) as u64).collect(),
                    )
                }
            };
            let m = Mat {
                e,
                rows,
                cols,
                ld,
                stride,
                addrs,
            };
            let distinct = if matches!(place, Placement::Broadcast) {
                1
            } else {
                batch
            };
            for b in 0..distinct {
                for j in 0..cols {
                    for i in 0..rows {
                        mem.write(m.at(b, i, j), &enc(e, val())).unwrap();
                    }
                }
            }
            m
        }
        fn at(&self, b: usize, i: usize, j: usize) -> u64 {
            self.addrs[b] + ((i + j * self.ld) * self.e.size()) as u64
        }
        fn get(&self, mem: &VecMemory, b: usize, i: usize, j: usize) -> f64 {
            dec(self.e, &mem.load(self.at(b, i, j), self.e.size()))
        }
        /// All values, per batch, compact column-major.
        fn values(&self, mem: &VecMemory) -> Vec<Vec<f64>> {
            (0..self.addrs.len())
                .map(|b| {
                    let mut v = Vec::new();
                    for j in 0..self.cols {
                        for i in 0..self.rows {
                            v.push(self.get(mem, b, i, j));
                        }
                    }
                    v
                })
                .collect()
        }
    }

    /// Checks that nothing but the elements of `out` changed between `before` and now.
    fn only_changed(mem: &VecMemory, before: &[Vec<u8>], out: &Mat) -> Result<(), String> {
        let after = mem.snapshot();
        let mut expect = before.to_vec();
        for b in 0..out.addrs.len() {
            for j in 0..out.cols {
                for i in 0..out.rows {
                    let (idx, off) = mem.locate(out.at(b, i, j), out.e.size()).unwrap();
                    let es = out.e.size();
                    expect[idx][off..off + es].copy_from_slice(&after[idx][off..off + es]);
                }
            }
        }
        if expect != after {
            return Err("memory outside the output matrix changed".into());
        }
        Ok(())
    }

    fn op_get(v: &[f64], rows: usize, trans: bool, i: usize, l: usize) -> f64 {
        // op(X)(i, l) of a compact stored matrix with `rows` rows
        if trans {
            v[l + i * rows]
        } else {
            v[i + l * rows]
        }
    }

    // ----- GEMM harness -----------------------------------------------------------------

    #[derive(Clone, Debug)]
    struct Case {
        m: usize,
        n: usize,
        k: usize,
        ta: u32,
        tb: u32,
        pads: (usize, usize, usize),
        batch: usize,
        pointers: bool,
        stride_pad: usize,
        broadcast_a: bool,
        ab: Elem,
        c: Elem,
        compute: u32,
        alpha: f64,
        beta: f64,
        seed: u64,
    }

    fn case(m: usize, n: usize, k: usize) -> Case {
        Case {
            m,
            n,
            k,
            ta: 0,
            tb: 0,
            pads: (0, 0, 0),
            batch: 1,
            pointers: false,
            stride_pad: 0,
            broadcast_a: false,
            ab: Elem::F32,
            c: Elem::F32,
            compute: compute_type::C32F,
            alpha: 1.0,
            beta: 0.0,
            seed: 1,
        }
    }

    fn desc(m: i64, n: i64, k: i64) -> GemmDesc {
        GemmDesc {
            handle: 1,
            transa: 0,
            transb: 0,
            m,
            n,
            k,
            a: 0,
            lda: m.max(1),
            stride_a: 0,
            b: 0,
            ldb: k.max(1),
            stride_b: 0,
            c: 0,
            ldc: m.max(1),
            stride_c: 0,
            batch_count: 1,
            a_type: 0,
            b_type: 0,
            c_type: 0,
            compute_type: compute_type::C32F,
            algo: -1,
            math_mode: 0,
            alpha: scal(Elem::F32, 1.0),
            beta: scal(Elem::F32, 0.0),
            workspace: 0,
            workspace_size: 0,
        }
    }

    fn run_gemm_case(c: &Case) -> Result<(), String> {
        let mem = VecMemory::new();
        let mut rng = Rng(c.seed);
        let (ta, tb) = (c.ta != 0, c.tb != 0);
        let (ar, ac) = if ta { (c.k, c.m) } else { (c.m, c.k) };
        let (br, bc) = if tb { (c.n, c.k) } else { (c.k, c.n) };
        let (lda, ldb, ldc) = (
            ar.max(1) + c.pads.0,
            br.max(1) + c.pads.1,
            c.m.max(1) + c.pads.2,
        );
        let place = |bcast: bool| {
            if c.pointers {
                Placement::Separate
            } else if bcast && c.batch > 1 {
                Placement::Broadcast
            } else {
                Placement::Strided(c.stride_pad)
            }
        };
        let nan = f64::NAN;
        let a = Mat::new(
            &mem,
            c.ab,
            ar,
            ac,
            lda,
            c.batch,
            place(c.broadcast_a),
            || rng.val(),
            nan,
        );
        let b = Mat::new(
            &mem,
            c.ab,
            br,
            bc,
            ldb,
            c.batch,
            place(false),
            || rng.val(),
            nan,
        );
        let beta0 = c.beta == 0.0;
        let cm = Mat::new(
            &mem,
            c.c,
            c.m,
            c.n,
            ldc,
            c.batch,
            place(false),
            || if beta0 { nan } else { rng.val() },
            nan,
        );
        let (av, bv, cv) = (a.values(&mem), b.values(&mem), cm.values(&mem));

        let scale = scale_of(c.compute);
        let mut d = desc(c.m as i64, c.n as i64, c.k as i64);
        d.transa = c.ta;
        d.transb = c.tb;
        d.lda = lda as i64;
        d.ldb = ldb as i64;
        d.ldc = ldc as i64;
        d.batch_count = c.batch as i64;
        d.a_type = c.ab.cuda();
        d.b_type = c.ab.cuda();
        d.c_type = c.c.cuda();
        d.compute_type = c.compute;
        d.alpha = scal(scale, c.alpha);
        d.beta = scal(scale, c.beta);
        if c.pointers {
            d.a = mem.ptr_array(&a.addrs);
            d.b = mem.ptr_array(&b.addrs);
            d.c = mem.ptr_array(&cm.addrs);
        } else {
            (d.a, d.b, d.c) = (a.addrs[0], b.addrs[0], cm.addrs[0]);
            (d.stride_a, d.stride_b, d.stride_c) =
                (a.stride as i64, b.stride as i64, cm.stride as i64);
        }
        let before = mem.snapshot();
        let r = if c.pointers {
            gemm_batched(&mem, &d)
        } else {
            gemm(&mem, &d)
        };
        r.map_err(|s| format!("gemm failed: {s}"))?;
        only_changed(&mem, &before, &cm)?;

        for bt in 0..c.batch {
            for j in 0..c.n {
                for i in 0..c.m {
                    let (mut sum, mut abs) = (0.0, 0.0);
                    for l in 0..c.k {
                        let p = op_get(&av[bt], ar, ta, i, l) * op_get(&bv[bt], br, tb, l, j);
                        sum += p;
                        abs += p.abs();
                    }
                    let c0 = if beta0 { 0.0 } else { cv[bt][i + j * c.m] };
                    let reference = c.alpha * sum + c.beta * c0;
                    let s = c.alpha.abs() * abs + c.beta.abs() * c0.abs();
                    let tol = gemm_tol(c.k, s, reference, u_compute(c.compute), c.c);
                    let got = cm.get(&mem, bt, i, j);
                    if !within(got - reference, tol) {
                        return Err(format!(
                            "batch {bt} C({i},{j}) = {got}, expected {reference} ± {tol}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    // ----- GEMM: directed tests ---------------------------------------------------------

    #[test]
    fn all_transpose_combinations_non_square_padded() {
        for ta in 0..3 {
            for tb in 0..3 {
                let c = Case {
                    ta,
                    tb,
                    pads: (2, 1, 3),
                    alpha: 1.5,
                    beta: -0.5,
                    seed: u64::from(ta * 3 + tb),
                    ..case(5, 3, 4)
                };
                run_gemm_case(&c).unwrap();
            }
        }
    }

    #[test]
    fn alpha_beta_values() {
        for (alpha, beta) in [
            (1.0, 0.0),
            (0.0, 1.0),
            (0.0, 0.0),
            (-2.0, 0.25),
            (0.5, 1.0),
            (0.0, -3.0),
        ] {
            run_gemm_case(&Case {
                alpha,
                beta,
                pads: (1, 0, 2),
                ..case(4, 6, 3)
            })
            .unwrap();
        }
    }

    #[test]
    fn beta_zero_does_not_propagate_nan_in_c() {
        // run_gemm_case fills C with NaN when beta == 0.
        run_gemm_case(&Case {
            beta: 0.0,
            ..case(7, 5, 6)
        })
        .unwrap();
        run_gemm_case(&Case {
            alpha: 0.0,
            beta: 0.0,
            ..case(3, 3, 3)
        })
        .unwrap();
        run_gemm_case(&Case {
            beta: 0.0,
            k: 0,
            ..case(3, 3, 3)
        })
        .unwrap();
        run_gemm_case(&Case {
            beta: 0.0,
            compute: 64,
            ab: Elem::F16,
            c: Elem::F16,
            ..case(4, 2, 5)
        })
        .unwrap();
    }

    #[test]
    fn alpha_zero_reads_neither_a_nor_b() {
        let mem = VecMemory::new();
        let c = mem.alloc_with(&[1f32, 2., 3., 4.].map(f32::to_le_bytes).concat());
        let mut d = desc(2, 2, 2);
        (d.a, d.b, d.c) = (0, 0, c); // A and B are not valid device addresses
        d.alpha = scal(Elem::F32, 0.0);
        d.beta = scal(Elem::F32, 2.0);
        gemm(&mem, &d).unwrap();
        assert_eq!(
            mem.load(c, 16),
            [2f32, 4., 6., 8.].map(f32::to_le_bytes).concat()
        );
        // Same for pointer arrays: only C's array is read.
        let carr = mem.ptr_array(&[c]);
        d.c = carr;
        gemm_batched(&mem, &d).unwrap();
        assert_eq!(
            mem.load(c, 16),
            [4f32, 8., 12., 16.].map(f32::to_le_bytes).concat()
        );
    }

    #[test]
    fn k_zero_scales_c() {
        run_gemm_case(&Case {
            beta: -0.5,
            alpha: 3.0,
            ..case(3, 4, 0)
        })
        .unwrap();
        run_gemm_case(&Case {
            beta: 1.0,
            ta: 1,
            tb: 1,
            ..case(3, 4, 0)
        })
        .unwrap();
    }

    #[test]
    fn empty_result_touches_nothing() {
        let mem = VecMemory::new();
        for (m, n) in [(0, 5), (5, 0), (0, 0)] {
            let d = desc(m, n, 3); // all pointers are 0
            assert_eq!(gemm(&mem, &d), Ok(()));
            assert_eq!(gemm_batched(&mem, &d), Ok(()));
        }
        let mut d = desc(2, 2, 2);
        d.batch_count = 0;
        assert_eq!(gemm(&mem, &d), Ok(()));
    }

    #[test]
    fn strided_batches() {
        for (pad, bcast) in [(0, false), (3, false), (1, true)] {
            let c = Case {
                batch: 4,
                stride_pad: pad,
                broadcast_a: bcast,
                ta: 1,
                pads: (1, 1, 1),
                alpha: 0.5,
                beta: 1.0,
                ..case(3, 4, 5)
            };
            run_gemm_case(&c).unwrap();
        }
    }

    #[test]
    fn pointer_array_batches() {
        for (ta, tb) in [(0, 0), (1, 2), (2, 0)] {
            let c = Case {
                batch: 3,
                pointers: true,
                ta,
                tb,
                pads: (0, 2, 1),
                alpha: -1.0,
                beta: 0.5,
                ..case(4, 3, 5)
            };
            run_gemm_case(&c).unwrap();
        }
        run_gemm_case(&Case {
            batch: 2,
            pointers: true,
            ..case(3, 3, 3)
        })
        .unwrap();
    }

    #[test]
    fn half_precision_inputs() {
        use compute_type::*;
        let combos = [
            (Elem::F16, Elem::F32, C32F),
            (Elem::F16, Elem::F16, C32F),
            (Elem::F16, Elem::F16, C32F_FAST_16F),
            (Elem::Bf16, Elem::F32, C32F),
            (Elem::Bf16, Elem::Bf16, C32F_FAST_16BF),
            (Elem::Bf16, Elem::F32, C32F_PEDANTIC),
            (Elem::F16, Elem::F16, C16F),
            (Elem::F16, Elem::F16, C16F_PEDANTIC),
            (Elem::F16, Elem::F16, data_type::R_16F),
            (Elem::F16, Elem::F16, data_type::R_32F), // cublasSgemmEx-style
        ];
        for (ab, cty, compute) in combos {
            for (ta, tb) in [(0, 0), (1, 1)] {
                let c = Case {
                    ab,
                    c: cty,
                    compute,
                    ta,
                    tb,
                    alpha: 1.5,
                    beta: -0.25,
                    pads: (1, 0, 2),
                    batch: 2,
                    ..case(6, 5, 33)
                };
                run_gemm_case(&c).unwrap_or_else(|e| panic!("{ab:?}/{cty:?}/{compute}: {e}"));
            }
        }
    }

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

    #[test]
    fn f64_compute() {
        for compute in [
            compute_type::C64F,
            compute_type::C64F_PEDANTIC,
            data_type::R_64F,
        ] {
            let c = Case {
                ab: Elem::F64,
                c: Elem::F64,
                compute,
                ta: 2,
                pads: (1, 1, 1),
                alpha: 0.75,
                beta: 2.0,
                batch: 2,
                ..case(5, 4, 17)
            };
            run_gemm_case(&c).unwrap();
        }
    }

    #[test]
    fn legacy_and_fast_f32_compute() {
        for compute in [
            data_type::R_32F,
            compute_type::C32F_PEDANTIC,
            compute_type::C32F_FAST_TF32,
        ] {
            run_gemm_case(&Case {
                compute,
                beta: 1.0,
                tb: 1,
                ..case(4, 5, 6)
            })
            .unwrap();
        }
    }

    #[test]
    fn large_operands_are_copied_in_chunks() {
        // CHUNK_BYTES is 4096 under test: these operands span many chunks, contiguous
        // (ld == rows) and not.
        for pads in [(0, 0, 0), (3, 1, 2)] {
            run_gemm_case(&Case {
                pads,
                beta: 0.5,
                ..case(70, 40, 50)
            })
            .unwrap();
            run_gemm_case(&Case {
                pads,
                ta: 1,
                ab: Elem::F16,
                c: Elem::F16,
                ..case(40, 70, 2000)
            })
            .unwrap();
        }
    }

    /// A valid 2×2×2 f32 GEMM with real buffers.
    fn small(mem: &VecMemory) -> GemmDesc {
        let mut d = desc(2, 2, 2);
        d.a = mem.alloc(16);
        d.b = mem.alloc(16);
        d.c = mem.alloc(16);
        d
    }

    #[test]
    fn invalid_arguments() {
        let mem = VecMemory::new();
        let base = small(&mem);
        assert_eq!(gemm(&mem, &base), Ok(()));
        let cases: Vec<Mutation<GemmDesc>> = vec![
            ("transa", Box::new(|d| d.transa = 3)),
            ("transb", Box::new(|d| d.transb = 7)),
            ("m", Box::new(|d| d.m = -1)),
            ("n", Box::new(|d| d.n = -1)),
            ("k", Box::new(|d| d.k = -1)),
            ("batch", Box::new(|d| d.batch_count = -1)),
            ("lda", Box::new(|d| d.lda = 1)),
            ("lda 0", Box::new(|d| d.lda = 0)),
            ("lda T", Box::new(|d| (d.transa, d.m, d.lda) = (1, 4, 1))),
            ("ldb", Box::new(|d| d.ldb = 1)),
            (
                "ldb T",
                Box::new(|d| (d.transb, d.n, d.ldb, d.ldc) = (1, 3, 2, 2)),
            ),
            ("ldc", Box::new(|d| d.ldc = 1)),
            ("ldc m0", Box::new(|d| (d.m, d.ldc, d.lda) = (0, 0, 1))),
            ("lda overflow", Box::new(|d| d.lda = i64::MAX / 2)),
            ("ldc overflow", Box::new(|d| d.ldc = i64::MAX)),
            ("address overflow", Box::new(|d| d.c = u64::MAX - 8)),
            (
                "stride overflow",
                Box::new(|d| (d.batch_count, d.stride_a) = (2, i64::MAX)),
            ),
            (
                "negative address",
                Box::new(|d| (d.batch_count, d.stride_b) = (2, -(1 << 50))),
            ),
        ];
        for (name, f) in cases {
            let mut d = base;
            f(&mut d);
            assert_eq!(gemm(&mem, &d), Err(Status::BLAS_INVALID_VALUE), "{name}");
        }
        let mut d = base;
        d.m = -1;
        assert_eq!(gemm_batched(&mem, &d), Err(Status::BLAS_INVALID_VALUE));
    }

    #[test]
    fn memory_errors_come_from_device_memory() {
        let mem = VecMemory::new();
        let base = small(&mem);
        let c_before = mem.load(base.c, 16);
        let cases: Vec<Mutation<GemmDesc>> = vec![
            ("null A", Box::new(|d| d.a = 0)),
            ("A one element short", Box::new(|d| d.lda = 3)), // needs 5 elements, has 4
            ("B past its end", Box::new(|d| d.b += 4)),
            ("C too small", Box::new(|d| d.ldc = 3)),
            ("huge lda", Box::new(|d| d.lda = 1 << 40)), // probed, nothing reserved
            (
                "second batch",
                Box::new(|d| (d.batch_count, d.stride_c) = (2, 4)),
            ),
            ("beta 0, bad C", Box::new(|d| d.c = 12)),
        ];
        for (name, f) in cases {
            let mut d = base;
            f(&mut d);
            assert_eq!(gemm(&mem, &d), Err(Status::INVALID_VALUE), "{name}");
        }
        // Pointer arrays that are not readable, or that hold a bad pointer.
        let mut d = base;
        let (a, b, c) = (d.a, d.b, d.c);
        (d.a, d.b, d.c) = (mem.ptr_array(&[a]), mem.ptr_array(&[b]), 0);
        assert_eq!(gemm_batched(&mem, &d), Err(Status::INVALID_VALUE));
        d.c = mem.ptr_array(&[c, c]);
        d.batch_count = 2;
        assert_eq!(gemm_batched(&mem, &d), Err(Status::INVALID_VALUE)); // a/b arrays too short
        d.c = mem.ptr_array(&[0xdead_0000]);
        d.batch_count = 1;
        assert_eq!(gemm_batched(&mem, &d), Err(Status::INVALID_VALUE));
        // The first batch's failure leaves C as it was (all zeros here anyway).
        assert_eq!(mem.load(base.c, 16), c_before);
    }

    #[test]
    fn unsupported_type_combinations() {
        use compute_type::*;
        use data_type::*;
        let mem = VecMemory::new();
        let base = small(&mem);
        let combos = [
            (R_8I, R_8I, R_32I, C32I),
            (R_8I, R_8I, R_32F, C32F),
            (C_32F, C_32F, C_32F, C32F),
            (C_64F, C_64F, C_64F, C64F),
            (R_16F, R_16BF, R_32F, C32F), // A and B differ
            (R_32F, R_32F, R_16F, C32F),  // f32 inputs, f16 output
            (R_32F, R_32F, R_32F, C16F),  // f32 with 16F compute
            (R_16F, R_16F, R_32F, C16F),  // 16F compute needs f16 C
            (R_16BF, R_16BF, R_16BF, C16F),
            (R_64F, R_64F, R_64F, C32F),
            (R_32F, R_32F, R_32F, C64F),
            (R_16F, R_16F, R_16BF, C32F),
            (R_32F, R_32F, R_32F, 999),
            (R_32F, R_32F, R_32F, R_8I), // legacy value that is no compute type
            (99, 99, 99, C32F),
        ];
        for (a, b, c, comp) in combos {
            let mut d = base;
            (d.a_type, d.b_type, d.c_type, d.compute_type) = (a, b, c, comp);
            assert_eq!(
                gemm(&mem, &d),
                Err(Status::BLAS_NOT_SUPPORTED),
                "{a} {b} {c} {comp}"
            );
            assert_eq!(gemm_batched(&mem, &d), Err(Status::BLAS_NOT_SUPPORTED));
        }
    }

    // ----- GEMM: property tests ---------------------------------------------------------

    const TYPES: [(Elem, Elem, u32); 12] = [
        (Elem::F32, Elem::F32, 68),
        (Elem::F32, Elem::F32, 0),
        (Elem::F32, Elem::F32, 77),
        (Elem::F16, Elem::F32, 68),
        (Elem::F16, Elem::F16, 68),
        (Elem::F16, Elem::F16, 74),
        (Elem::Bf16, Elem::F32, 68),
        (Elem::Bf16, Elem::Bf16, 75),
        (Elem::F16, Elem::F16, 64),
        (Elem::F16, Elem::F16, 2),
        (Elem::F64, Elem::F64, 70),
        (Elem::F64, Elem::F64, 1),
    ];
    const ALPHAS: [f64; 5] = [1.0, -1.5, 0.5, 0.0, 2.0];
    const BETAS: [f64; 4] = [0.0, 1.0, -0.5, 0.25];

    fn gemm_cases(max_dim: usize) -> impl Strategy<Value = Case> {
        (
            (0..=max_dim, 0..=max_dim, 0..=max_dim),
            (0u32..3, 0u32..3),
            (0usize..3, 0usize..3, 0usize..3),
            (1usize..4, any::<bool>(), 0usize..4, any::<bool>()),
            0..TYPES.len(),
            (0..ALPHAS.len(), 0..BETAS.len()),
            any::<u64>(),
        )
            .prop_map(
                |(
                    (m, n, k),
                    (ta, tb),
                    pads,
                    (batch, pointers, stride_pad, broadcast_a),
                    t,
                    (al, be),
                    seed,
                )| {
                    let (ab, c, compute) = TYPES[t];
                    Case {
                        m,
                        n,
                        k,
                        ta,
                        tb,
                        pads,
                        batch,
                        pointers,
                        stride_pad,
                        broadcast_a,
                        ab,
                        c,
                        compute,
                        alpha: ALPHAS[al],
                        beta: BETAS[be],
                        seed,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn gemm_matches_f64_reference(c in gemm_cases(7)) {
            if let Err(e) = run_gemm_case(&c) {
                prop_assert!(false, "{}", e);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn gemm_matches_f64_reference_larger(c in gemm_cases(40)) {
            if let Err(e) = run_gemm_case(&c) {
                prop_assert!(false, "{}", e);
            }
        }
    }

    // ----- TRSM -------------------------------------------------------------------------

    #[derive(Clone, Debug)]
    struct TrsmCase {
        side: u32,
        uplo: u32,
        trans: u32,
        diag: u32,
        m: usize,
        n: usize,
        pads: (usize, usize),
        batch: usize,
        f64: bool,
        alpha: f64,
        seed: u64,
    }

    fn trsm_desc() -> TrsmBatchedDesc {
        TrsmBatchedDesc {
            handle: 1,
            side: 0,
            uplo: 0,
            trans: 0,
            diag: 0,
            m: 2,
            n: 2,
            a: 0,
            lda: 2,
            b: 0,
            ldb: 2,
            batch_count: 1,
            data_type: 0,
            rsv0: 0,
            alpha: scal(Elem::F32, 1.0),
        }
    }

    fn run_trsm_case(c: &TrsmCase) -> Result<(), String> {
        let mem = VecMemory::new();
        let mut rng = Rng(c.seed);
        let e = if c.f64 { Elem::F64 } else { Elem::F32 };
        let left = c.side == 0;
        let s = if left { c.m } else { c.n };
        let (lda, ldb) = (s.max(1) + c.pads.0, c.m.max(1) + c.pads.1);
        let nan = f64::NAN;
        // A: the unreferenced triangle (and a unit diagonal) is NaN; the diagonal is
        // ±[1, 2) and the off-diagonal entries are small, so A is well conditioned.
        let (mut i, mut j) = (0, 0);
        let a = Mat::new(
            &mem,
            e,
            s,
            s,
            lda,
            c.batch,
            Placement::Separate,
            || {
                let v = if i == j {
                    if c.diag == 1 {
                        nan
                    } else {
                        let x = rng.val();
                        x.signum() * (1.0 + x.abs())
                    }
                } else if (i > j) == (c.uplo == 0) {
                    rng.val() / s as f64
                } else {
                    nan
                };
                i += 1;
                if i == s {
                    (i, j) = (0, (j + 1) % s);
                }
                v
            },
            nan,
        );
        let b = Mat::new(
            &mem,
            e,
            c.m,
            c.n,
            ldb,
            c.batch,
            Placement::Separate,
            || rng.val(),
            nan,
        );
        let (av, bv) = (a.values(&mem), b.values(&mem));
        let mut d = trsm_desc();
        (d.side, d.uplo, d.trans, d.diag) = (c.side, c.uplo, c.trans, c.diag);
        (d.m, d.n, d.lda, d.ldb) = (c.m as i64, c.n as i64, lda as i64, ldb as i64);
        d.batch_count = c.batch as i64;
        d.data_type = e.cuda();
        d.alpha = scal(e, c.alpha);
        d.a = mem.ptr_array(&a.addrs);
        d.b = mem.ptr_array(&b.addrs);
        let before = mem.snapshot();
        trsm_batched(&mem, &d).map_err(|st| format!("trsm failed: {st}"))?;
        only_changed(&mem, &before, &b)?;

        let u = unit(e);
        let trans = c.trans != 0;
        for bt in 0..c.batch {
            let x = &b.values(&mem)[bt];
            // op(A)(i, l) with the unit diagonal made explicit
            let op = |i: usize, l: usize| {
                if i == l && c.diag == 1 {
                    1.0
                } else {
                    let (r, q) = if trans { (l, i) } else { (i, l) };
                    if r == q || (r > q) == (c.uplo == 0) {
                        av[bt][r + q * s]
                    } else {
                        0.0
                    }
                }
            };
            for j in 0..c.n {
                for i in 0..c.m {
                    let (mut res, mut abs) = (0.0, 0.0);
                    for l in 0..s {
                        let p = if left {
                            op(i, l) * x[l + j * c.m]
                        } else {
                            x[i + l * c.m] * op(l, j)
                        };
                        res += p;
                        abs += p.abs();
                    }
                    let rhs = c.alpha * bv[bt][i + j * c.m];
                    let tol = 2.0 * (s as f64 + 2.0) * u * (abs + rhs.abs());
                    if !within(res - rhs, tol) {
                        return Err(format!(
                            "batch {bt} residual ({i},{j}) = {} > {tol} for {c:?}",
                            res - rhs
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn trsm_all_modes() {
        let mut seed = 0;
        for f64 in [false, true] {
            for side in 0..2 {
                for uplo in 0..2 {
                    for trans in 0..3 {
                        for diag in 0..2 {
                            seed += 1;
                            let c = TrsmCase {
                                side,
                                uplo,
                                trans,
                                diag,
                                m: 5,
                                n: 3,
                                pads: (2, 1),
                                batch: 2,
                                f64,
                                alpha: -1.5,
                                seed,
                            };
                            run_trsm_case(&c).unwrap();
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn trsm_alpha_zero_and_empty() {
        let mem = VecMemory::new();
        let b = mem.alloc_with(&[1f32, 2., 3., 4.].map(f32::to_le_bytes).concat());
        let mut d = trsm_desc();
        d.b = mem.ptr_array(&[b]);
        d.a = 0; // not read
        d.alpha = scal(Elem::F32, 0.0);
        trsm_batched(&mem, &d).unwrap();
        assert_eq!(mem.load(b, 16), [0u8; 16]);
        let mut d = trsm_desc(); // pointers 0: nothing is touched
        d.m = 0;
        assert_eq!(trsm_batched(&mem, &d), Ok(()));
        d.m = 2;
        d.batch_count = 0;
        assert_eq!(trsm_batched(&mem, &d), Ok(()));
    }

    #[test]
    fn trsm_invalid_and_unsupported() {
        let mem = VecMemory::new();
        let cases: Vec<Mutation<TrsmBatchedDesc>> = vec![
            ("side", Box::new(|d| d.side = 2)),
            ("uplo", Box::new(|d| d.uplo = 2)),
            ("diag", Box::new(|d| d.diag = 2)),
            ("trans", Box::new(|d| d.trans = 3)),
            ("m", Box::new(|d| d.m = -1)),
            ("n", Box::new(|d| d.n = -1)),
            ("batch", Box::new(|d| d.batch_count = -1)),
            ("lda left", Box::new(|d| (d.m, d.ldb) = (3, 3))),
            ("lda right", Box::new(|d| (d.side, d.n) = (1, 3))),
            ("ldb", Box::new(|d| d.ldb = 1)),
        ];
        for (name, f) in cases {
            let mut d = trsm_desc();
            f(&mut d);
            assert_eq!(
                trsm_batched(&mem, &d),
                Err(Status::BLAS_INVALID_VALUE),
                "{name}"
            );
        }
        for t in [data_type::R_16F, data_type::R_16BF, data_type::C_32F, 77] {
            let mut d = trsm_desc();
            d.data_type = t;
            assert_eq!(trsm_batched(&mem, &d), Err(Status::BLAS_NOT_SUPPORTED));
        }
        // bad pointer array
        let mut d = trsm_desc();
        d.b = mem.ptr_array(&[0x1000]);
        d.a = mem.ptr_array(&[0x2000]);
        assert_eq!(trsm_batched(&mem, &d), Err(Status::INVALID_VALUE));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn trsm_residual_is_small(
            (side, uplo, trans, diag) in (0u32..2, 0u32..2, 0u32..3, 0u32..2),
            (m, n) in (0usize..8, 0usize..8),
            pads in (0usize..3, 0usize..3),
            batch in 1usize..3,
            f64 in any::<bool>(),
            alpha in prop::sample::select(vec![1.0, -2.0, 0.5, 0.0]),
            seed in any::<u64>(),
        ) {
            let c = TrsmCase { side, uplo, trans, diag, m, n, pads, batch, f64, alpha, seed };
            if let Err(e) = run_trsm_case(&c) {
                prop_assert!(false, "{}", e);
            }
        }
    }

    // ----- cuBLASLt ---------------------------------------------------------------------

    #[derive(Clone, Debug)]
    struct LtCase {
        m: usize,
        n: usize,
        k: usize,
        ta: u32,
        tb: u32,
        pads: (usize, usize, usize, usize),
        batch: usize,
        stride_pad: usize,
        ab: Elem,
        cd: Elem,
        compute: u32,
        alpha: f64,
        beta: f64,
        epilogue: u32,
        in_place: bool,
        seed: u64,
    }

    fn lt_case(m: usize, n: usize, k: usize) -> LtCase {
        LtCase {
            m,
            n,
            k,
            ta: 0,
            tb: 0,
            pads: (0, 0, 0, 0),
            batch: 1,
            stride_pad: 0,
            ab: Elem::F32,
            cd: Elem::F32,
            compute: compute_type::C32F,
            alpha: 1.0,
            beta: 0.0,
            epilogue: lt_epilogue::DEFAULT,
            in_place: false,
            seed: 7,
        }
    }

    fn layout(e: Elem, rows: usize, cols: usize, ld: usize, batch: usize) -> MatrixLayout {
        MatrixLayout {
            data_type: e.cuda(),
            order: 0,
            rows: rows as u64,
            cols: cols as u64,
            ld: ld as i64,
            batch_count: batch as i32,
            rsv0: 0,
        }
    }

    fn lt_desc(a: MatrixLayout, b: MatrixLayout, c: MatrixLayout, d: MatrixLayout) -> LtMatmulDesc {
        LtMatmulDesc {
            handle: 1,
            compute_type: compute_type::C32F,
            scale_type: data_type::R_32F,
            transa: 0,
            transb: 0,
            epilogue: lt_epilogue::DEFAULT,
            rsv0: 0,
            alpha: scal(Elem::F32, 1.0),
            beta: scal(Elem::F32, 0.0),
            a: 0,
            b: 0,
            c: 0,
            d: 0,
            bias: 0,
            workspace: 0,
            workspace_size: 0,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
            stride_d: 0,
            rsv1: 0,
            a_layout: a,
            b_layout: b,
            c_layout: c,
            d_layout: d,
        }
    }

    fn run_lt_case(c: &LtCase) -> Result<(), String> {
        let mem = VecMemory::new();
        let mut rng = Rng(c.seed);
        let (ta, tb) = (c.ta != 0, c.tb != 0);
        let (ar, ac) = if ta { (c.k, c.m) } else { (c.m, c.k) };
        let (br, bc) = if tb { (c.n, c.k) } else { (c.k, c.n) };
        let lda = ar.max(1) + c.pads.0;
        let ldb = br.max(1) + c.pads.1;
        let ldd = c.m.max(1) + c.pads.3;
        let ldc = if c.in_place {
            ldd
        } else {
            c.m.max(1) + c.pads.2
        };
        let place = Placement::Strided(c.stride_pad);
        let nan = f64::NAN;
        let beta0 = c.beta == 0.0;
        let a = Mat::new(&mem, c.ab, ar, ac, lda, c.batch, place, || rng.val(), nan);
        let b = Mat::new(&mem, c.ab, br, bc, ldb, c.batch, place, || rng.val(), nan);
        let dm = Mat::new(
            &mem,
            c.cd,
            c.m,
            c.n,
            ldd,
            c.batch,
            place,
            || if beta0 { nan } else { rng.val() },
            nan,
        );
        let cm = if c.in_place {
            None
        } else {
            Some(Mat::new(
                &mem,
                c.cd,
                c.m,
                c.n,
                ldc,
                c.batch,
                place,
                || rng.val(),
                nan,
            ))
        };
        let bias_on = matches!(c.epilogue, lt_epilogue::BIAS | lt_epilogue::RELU_BIAS);
        let relu = matches!(c.epilogue, lt_epilogue::RELU | lt_epilogue::RELU_BIAS);
        let bias = Mat::new(&mem, c.cd, c.m, 1, c.m.max(1), 1, place, || rng.val(), nan);
        let cvals = cm.as_ref().unwrap_or(&dm).values(&mem);
        let (av, bv, biasv) = (a.values(&mem), b.values(&mem), bias.values(&mem).remove(0));

        let mut d = lt_desc(
            layout(c.ab, ar, ac, lda, c.batch),
            layout(c.ab, br, bc, ldb, c.batch),
            layout(c.cd, c.m, c.n, ldc, c.batch),
            layout(c.cd, c.m, c.n, ldd, c.batch),
        );
        let scale = scale_of(c.compute);
        (d.compute_type, d.scale_type) = (c.compute, scale.cuda());
        (d.transa, d.transb, d.epilogue) = (c.ta, c.tb, c.epilogue);
        d.alpha = scal(scale, c.alpha);
        d.beta = scal(scale, c.beta);
        (d.a, d.b, d.d) = (a.addrs[0], b.addrs[0], dm.addrs[0]);
        (d.stride_a, d.stride_b, d.stride_d) = (a.stride as i64, b.stride as i64, dm.stride as i64);
        match &cm {
            // With beta == 0, C is not read: pass no C at all.
            Some(cm) if !beta0 => (d.c, d.stride_c) = (cm.addrs[0], cm.stride as i64),
            Some(_) => {}
            None => (d.c, d.stride_c) = (d.d, d.stride_d),
        }
        if bias_on {
            d.bias = bias.addrs[0];
        }
        let before = mem.snapshot();
        lt_matmul(&mem, &d).map_err(|s| format!("lt_matmul failed: {s}"))?;
        only_changed(&mem, &before, &dm)?;

        for bt in 0..c.batch {
            for j in 0..c.n {
                for i in 0..c.m {
                    let (mut sum, mut abs) = (0.0, 0.0);
                    for l in 0..c.k {
                        let p = op_get(&av[bt], ar, ta, i, l) * op_get(&bv[bt], br, tb, l, j);
                        sum += p;
                        abs += p.abs();
                    }
                    let c0 = if beta0 { 0.0 } else { cvals[bt][i + j * c.m] };
                    let bi = if bias_on { biasv[i] } else { 0.0 };
                    let mut reference = c.alpha * sum + c.beta * c0 + bi;
                    if relu {
                        reference = reference.max(0.0);
                    }
                    let s = c.alpha.abs() * abs + c.beta.abs() * c0.abs() + bi.abs();
                    let tol = gemm_tol(c.k, s, reference, u_compute(c.compute), c.cd);
                    let got = dm.get(&mem, bt, i, j);
                    if !within(got - reference, tol) {
                        return Err(format!(
                            "batch {bt} D({i},{j}) = {got}, expected {reference} ± {tol}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn lt_default_transposes_and_batches() {
        for ta in 0..3 {
            for tb in 0..3 {
                let c = LtCase {
                    ta,
                    tb,
                    pads: (1, 2, 0, 3),
                    batch: 3,
                    stride_pad: 2,
                    alpha: 1.5,
                    beta: -0.5,
                    ..lt_case(5, 4, 6)
                };
                run_lt_case(&c).unwrap();
                run_lt_case(&LtCase {
                    in_place: true,
                    ..c
                })
                .unwrap();
            }
        }
    }

    #[test]
    fn lt_epilogues() {
        use lt_epilogue::*;
        for epilogue in [DEFAULT, RELU, BIAS, RELU_BIAS] {
            for beta in [0.0, 0.5] {
                run_lt_case(&LtCase {
                    epilogue,
                    beta,
                    pads: (0, 1, 2, 1),
                    ..lt_case(6, 5, 4)
                })
                .unwrap();
                let c = LtCase {
                    epilogue,
                    beta,
                    ab: Elem::F16,
                    cd: Elem::F16,
                    compute: compute_type::C16F,
                    batch: 2,
                    ..lt_case(4, 3, 9)
                };
                run_lt_case(&c).unwrap();
            }
        }
    }

    #[test]
    fn lt_types() {
        use compute_type::*;
        for (ab, cd, compute) in [
            (Elem::Bf16, Elem::Bf16, C32F),
            (Elem::Bf16, Elem::F32, C32F_FAST_16BF),
            (Elem::F16, Elem::F32, C32F),
            (Elem::F64, Elem::F64, C64F),
            (Elem::F32, Elem::F32, C32F_FAST_TF32),
        ] {
            run_lt_case(&LtCase {
                ab,
                cd,
                compute,
                beta: 1.0,
                ta: 1,
                ..lt_case(5, 6, 7)
            })
            .unwrap();
        }
        run_lt_case(&LtCase {
            k: 0,
            beta: 2.0,
            ..lt_case(3, 3, 0)
        })
        .unwrap();
        run_lt_case(&LtCase {
            alpha: 0.0,
            beta: 0.0,
            ..lt_case(3, 3, 3)
        })
        .unwrap();
    }

    #[test]
    fn lt_errors() {
        let mem = VecMemory::new();
        let l = |rows, cols, ld| layout(Elem::F32, rows, cols, ld, 1);
        let mut base = lt_desc(l(2, 3, 2), l(3, 4, 3), l(2, 4, 2), l(2, 4, 2));
        base.a = mem.alloc(24);
        base.b = mem.alloc(48);
        base.d = mem.alloc(32);
        assert_eq!(lt_matmul(&mem, &base), Ok(()));
        let invalid: Vec<Mutation<LtMatmulDesc>> = vec![
            ("transa", Box::new(|d| d.transa = 3)),
            ("k mismatch", Box::new(|d| d.b_layout.rows = 2)),
            ("m mismatch", Box::new(|d| d.transa = 1)),
            ("c shape", Box::new(|d| d.c_layout.cols = 3)),
            ("ld < rows", Box::new(|d| d.a_layout.ld = 1)),
            ("batch mismatch", Box::new(|d| d.a_layout.batch_count = 2)),
            (
                "batch 0",
                Box::new(|d| {
                    for l in [
                        &mut d.a_layout,
                        &mut d.b_layout,
                        &mut d.c_layout,
                        &mut d.d_layout,
                    ] {
                        l.batch_count = 0;
                    }
                }),
            ),
            ("bias pointer", Box::new(|d| d.epilogue = lt_epilogue::BIAS)),
            ("ld overflow", Box::new(|d| d.d_layout.ld = i64::MAX)),
        ];
        for (name, f) in invalid {
            let mut d = base;
            f(&mut d);
            assert_eq!(
                lt_matmul(&mem, &d),
                Err(Status::BLAS_INVALID_VALUE),
                "{name}"
            );
        }
        let unsupported: Vec<Mutation<LtMatmulDesc>> = vec![
            ("row order", Box::new(|d| d.a_layout.order = 1)),
            ("col32 order", Box::new(|d| d.d_layout.order = 2)),
            ("gelu", Box::new(|d| d.epilogue = 32)),
            ("bgrad", Box::new(|d| d.epilogue = 256)),
            ("scale type", Box::new(|d| d.scale_type = data_type::R_64F)),
            (
                "legacy compute",
                Box::new(|d| d.compute_type = data_type::R_32F),
            ),
            (
                "c/d types",
                Box::new(|d| d.c_layout.data_type = data_type::R_16F),
            ),
            (
                "int8",
                Box::new(|d| {
                    d.a_layout.data_type = data_type::R_8I;
                    d.b_layout.data_type = data_type::R_8I;
                    d.compute_type = compute_type::C32I;
                }),
            ),
        ];
        for (name, f) in unsupported {
            let mut d = base;
            f(&mut d);
            assert_eq!(
                lt_matmul(&mem, &d),
                Err(Status::BLAS_NOT_SUPPORTED),
                "{name}"
            );
        }
        let mut d = base;
        d.b = 0;
        assert_eq!(lt_matmul(&mem, &d), Err(Status::INVALID_VALUE));
        let mut d = base;
        d.beta = scal(Elem::F32, 1.0); // C (null) is read now
        assert_eq!(lt_matmul(&mem, &d), Err(Status::INVALID_VALUE));
        let mut d = base;
        (d.d_layout.rows, d.c_layout.rows, d.a_layout.rows) = (0, 0, 0);
        d.d = 0;
        assert_eq!(lt_matmul(&mem, &d), Ok(()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn lt_matches_f64_reference(
            (m, n, k) in (0usize..7, 0usize..7, 0usize..7),
            (ta, tb) in (0u32..3, 0u32..3),
            pads in (0usize..2, 0usize..2, 0usize..2, 0usize..2),
            (batch, stride_pad) in (1usize..3, 0usize..3),
            t in prop::sample::select(vec![0usize, 3, 4, 6, 7, 8, 10]),
            (al, be) in (0..ALPHAS.len(), 0..BETAS.len()),
            epilogue in prop::sample::select(vec![1u32, 2, 4, 6]),
            in_place in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let (ab, cd, compute) = TYPES[t];
            let c = LtCase {
                m, n, k, ta, tb, pads, batch, stride_pad, ab, cd, compute,
                alpha: ALPHAS[al], beta: BETAS[be], epilogue, in_place, seed,
            };
            if let Err(e) = run_lt_case(&c) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
