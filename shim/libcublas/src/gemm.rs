//! The GEMM family, batched TRSM, and the level-1/2 calls the device serves as GEMMs
//! (`gemv`, `scal`). Arguments are checked here as cuBLAS checks them, so a bad argument
//! gets cuBLAS's status from the call that passed it; the work is posted to the handle's
//! stream with no round trip (the device checks everything again, spec §6.8).
//!
//! Scalars are read from the host (`CUBLAS_POINTER_MODE_HOST`). Device pointer mode is
//! refused with NOT_SUPPORTED and a log line: the scalar would have to be read on the
//! device at execution time, which the BLAS commands do not carry.

use crate::driver::driver;
use crate::handle::{self, Handle, HandleId, POINTER_MODE_DEVICE};
use std::ffi::c_void;
use std::sync::Once;
use vgpu_proto::payload::{GemmDesc, TrsmBatchedDesc};
use vgpu_shim_abi::ptr::{DevPtr, In};
use vgpu_shim_abi::status::CublasStatus;

const INVALID: CublasStatus = CublasStatus::INVALID_VALUE;

pub use vgpu_proto::payload::{compute_type, data_type};

/// One matrix operand: where, its leading dimension, batch stride (elements) and type.
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    /// Device address (of the matrix, or of the array of pointers when batched).
    pub ptr: DevPtr,
    /// Leading dimension.
    pub ld: i64,
    /// Elements between batches (0 for pointer arrays).
    pub stride: i64,
    /// `cudaDataType`.
    pub ty: u32,
}

/// `C = alpha·op(A)·op(B) + beta·C`, as every GEMM entry point describes it.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    /// `cublasOperation_t` of A.
    pub transa: i32,
    /// `cublasOperation_t` of B.
    pub transb: i32,
    /// Rows of op(A) and C.
    pub m: i64,
    /// Columns of op(B) and C.
    pub n: i64,
    /// Columns of op(A).
    pub k: i64,
    /// A.
    pub a: Operand,
    /// B.
    pub b: Operand,
    /// C.
    pub c: Operand,
    /// Batches.
    pub batch: i64,
    /// `cublasComputeType_t` or a legacy `cudaDataType`.
    pub compute: u32,
    /// `cublasGemmAlgo_t` (a hint).
    pub algo: i32,
    /// Host alpha, of the scale type.
    pub alpha: In<c_void>,
    /// Host beta, of the scale type.
    pub beta: In<c_void>,
}

/// Bytes of the scale type for a compute type (or legacy data type); None if unknown.
fn scale_bytes(compute: u32) -> Option<usize> {
    Some(match compute {
        64 | 65 => 2,                // 16F
        68 | 69 | 74 | 75 | 77 => 4, // 32F and its fast modes
        70 | 71 => 8,                // 64F
        72 | 73 => 4,                // 32I
        data_type::R_32F | data_type::R_32I => 4,
        data_type::R_64F => 8,
        data_type::R_16F => 2,
        _ => return None,
    })
}

fn op_ok(op: i32) -> bool {
    (0..=2).contains(&op)
}

/// `ld >= max(1, rows)`.
fn ld_ok(ld: i64, rows: i64) -> bool {
    ld >= rows.max(1)
}

fn host_scalars(h: &Handle, what: &str) -> Result<(), CublasStatus> {
    if h.pointer_mode == POINTER_MODE_DEVICE {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            log::warn!("vgpu: libcublas: {what}: CUBLAS_POINTER_MODE_DEVICE is not supported")
        });
        return Err(CublasStatus::NOT_SUPPORTED);
    }
    Ok(())
}

/// Checks and posts a GEMM; `batched`: the operands are arrays of pointers.
pub fn run(id: HandleId, g: Gemm, batched: bool, what: &str) -> Result<(), CublasStatus> {
    let h = handle::get(id)?;
    post(&h, g, batched, what)
}

/// Checks and posts a GEMM with `h`'s state.
fn post(h: &Handle, g: Gemm, batched: bool, what: &str) -> Result<(), CublasStatus> {
    let rows_a = if g.transa == 0 { g.m } else { g.k };
    let rows_b = if g.transb == 0 { g.k } else { g.n };
    if !op_ok(g.transa)
        || !op_ok(g.transb)
        || g.m < 0
        || g.n < 0
        || g.k < 0
        || g.batch < 0
        || !ld_ok(g.a.ld, rows_a)
        || !ld_ok(g.b.ld, rows_b)
        || !ld_ok(g.c.ld, g.m)
        || g.alpha.is_null()
        || g.beta.is_null()
    {
        return Err(INVALID);
    }
    let Some(scale) = scale_bytes(g.compute) else {
        log::warn!(
            "vgpu: libcublas: {what}: compute type {} is not supported",
            g.compute
        );
        return Err(CublasStatus::NOT_SUPPORTED);
    };
    host_scalars(h, what)?;
    if g.m == 0 || g.n == 0 || g.batch == 0 {
        return Ok(());
    }
    log::debug!(
        "vgpu: libcublas: {what}: {}x{}x{} types {}/{}/{} compute {} batch {}",
        g.m,
        g.n,
        g.k,
        g.a.ty,
        g.b.ty,
        g.c.ty,
        g.compute,
        g.batch
    );
    let d = GemmDesc {
        handle: h.device,
        transa: g.transa as u32,
        transb: g.transb as u32,
        m: g.m,
        n: g.n,
        k: g.k,
        a: g.a.ptr.addr(),
        lda: g.a.ld,
        stride_a: g.a.stride,
        b: g.b.ptr.addr(),
        ldb: g.b.ld,
        stride_b: g.b.stride,
        c: g.c.ptr.addr(),
        ldc: g.c.ld,
        stride_c: g.c.stride,
        batch_count: g.batch,
        a_type: g.a.ty,
        b_type: g.b.ty,
        c_type: g.c.ty,
        compute_type: g.compute,
        algo: g.algo,
        math_mode: h.math_mode,
        alpha: g.alpha.read_bytes(scale)?,
        beta: g.beta.read_bytes(scale)?,
        workspace: h.workspace.addr(),
        workspace_size: h.workspace_size as u64,
    };
    driver()?.gemm(&d, batched, h.stream)
}

/// A matrix (or an array of pointers to matrices), unstrided.
pub fn mat(ptr: DevPtr, ld: i32, ty: u32) -> Operand {
    strided(ptr, ld, 0, ty)
}

/// Matrices `stride` elements apart.
pub fn strided(ptr: DevPtr, ld: i32, stride: i64, ty: u32) -> Operand {
    Operand {
        ptr,
        ld: ld.into(),
        stride,
        ty,
    }
}

/// A GEMM entry point's arguments, grouped in the order of the C signatures: the
/// operations, the dimensions, alpha and beta, A, B and C, the batches (`pointers`: A, B
/// and C are device arrays of pointers), the compute type and the algorithm.
#[allow(clippy::too_many_arguments)] // the C signatures, grouped
pub fn call(
    id: HandleId,
    [transa, transb]: [i32; 2],
    [m, n, k]: [i32; 3],
    [alpha, beta]: [In<c_void>; 2],
    [a, b, c]: [Operand; 3],
    batch: i32,
    pointers: bool,
    (compute, algo): (u32, i32),
    what: &str,
) -> Result<(), CublasStatus> {
    let g = Gemm {
        transa,
        transb,
        m: m.into(),
        n: n.into(),
        k: k.into(),
        a,
        b,
        c,
        batch: batch.into(),
        compute,
        algo,
        alpha,
        beta,
    };
    run(id, g, pointers, what)
}

/// `y = alpha·op(A)·x + beta·y` as the GEMM `yᵀ = xᵀ·op(A)ᵀ`: x and y are 1-row matrices
/// whose leading dimensions are their increments. Negative increments are NOT_SUPPORTED.
#[allow(clippy::too_many_arguments)] // the C signature
pub fn gemv(
    id: HandleId,
    trans: i32,
    m: i32,
    n: i32,
    alpha: In<c_void>,
    a: DevPtr,
    lda: i32,
    x: DevPtr,
    incx: i32,
    beta: In<c_void>,
    y: DevPtr,
    incy: i32,
    ty: u32,
    compute: u32,
) -> Result<(), CublasStatus> {
    handle::get(id)?;
    if !op_ok(trans) || m < 0 || n < 0 || !ld_ok(lda.into(), m.into()) || incx == 0 || incy == 0 {
        return Err(INVALID);
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if incx < 0 || incy < 0 {
        log::warn!("vgpu: libcublas: gemv with a negative increment is not supported");
        return Err(CublasStatus::NOT_SUPPORTED);
    }
    let (len_x, len_y) = if trans == 0 { (n, m) } else { (m, n) };
    let g = Gemm {
        transa: 0,
        transb: if trans == 0 { 1 } else { 0 },
        m: 1,
        n: len_y.into(),
        k: len_x.into(),
        a: mat(x, incx, ty),
        b: mat(a, lda, ty),
        c: mat(y, incy, ty),
        batch: 1,
        compute,
        algo: -1,
        alpha,
        beta,
    };
    run(id, g, false, "gemv (as a GEMM)")
}

/// `x = alpha·x` as the GEMM `xᵀ = 0·(empty product) + alpha·xᵀ` (k = 0).
pub fn scal(
    id: HandleId,
    n: i32,
    alpha: In<c_void>,
    x: DevPtr,
    incx: i32,
    ty: u32,
    compute: u32,
) -> Result<(), CublasStatus> {
    let h = handle::get(id)?;
    if alpha.is_null() {
        return Err(INVALID);
    }
    if n <= 0 || incx <= 0 {
        return Ok(());
    }
    host_scalars(&h, "scal")?;
    let zero = [0u8; 16];
    // SAFETY: a 16-byte local, live for the call; `run` reads at most 16 bytes of it.
    let zero = unsafe { In::from_raw(zero.as_ptr().cast::<c_void>()) };
    let g = Gemm {
        transa: 0,
        transb: 0,
        m: 1,
        n: n.into(),
        k: 0,
        a: mat(x, incx, ty),
        b: mat(x, 1, ty),
        c: mat(x, incx, ty),
        batch: 1,
        compute,
        algo: -1,
        alpha: zero,
        beta: alpha,
    };
    run(id, g, false, "scal (as a GEMM)")
}

/// `x · y` as the GEMM `xᵀ (1×n, ld incx) · yᵀᵀ (n×1, from y stored 1×n with ld incy)`,
/// into the handle's scratch and read back (host pointer mode, where cuBLAS's dot blocks
/// too), or straight into `result` on the device (device pointer mode, asynchronous).
/// `elem` is 4 (f32) or 8 (f64). Negative increments are NOT_SUPPORTED.
#[allow(clippy::too_many_arguments)] // the C signature
pub fn dot(
    id: HandleId,
    n: i32,
    x: DevPtr,
    incx: i32,
    y: DevPtr,
    incy: i32,
    result: DevPtr,
    elem: usize,
) -> Result<Option<[u8; 8]>, CublasStatus> {
    let h = handle::get(id)?;
    if result.0 == 0 {
        return Err(INVALID);
    }
    let device_mode = h.pointer_mode == POINTER_MODE_DEVICE;
    // n ≤ 0: the result is 0 (on the device: an empty product, k = 0).
    let (n, incx, incy) = match n {
        n if n > 0 => (n, incx, incy),
        _ if !device_mode => return Ok(Some([0; 8])),
        _ => (0, 1, 1),
    };
    if incx <= 0 || incy <= 0 {
        log::warn!("vgpu: libcublas: dot with an increment below 1 is not supported");
        return Err(CublasStatus::NOT_SUPPORTED);
    }
    let (ty, compute) = if elem == 8 {
        (data_type::R_64F, compute_type::C64F)
    } else {
        (data_type::R_32F, compute_type::C32F)
    };
    let out = if device_mode {
        result
    } else {
        DevPtr(handle::scratch(id)? as usize)
    };
    let one = one(elem);
    let zero = [0u8; 16];
    // SAFETY: two locals that outlive the call; `run` reads at most 16 bytes of each.
    let (alpha, beta) = unsafe {
        (
            In::from_raw(one.as_ptr().cast::<c_void>()),
            In::from_raw(zero.as_ptr().cast::<c_void>()),
        )
    };
    let g = Gemm {
        transa: 0,
        transb: 1,
        m: 1,
        n: 1,
        k: n.into(),
        a: mat(x, incx, ty),
        b: mat(y, incy, ty),
        c: mat(out, 1, ty),
        batch: 1,
        compute,
        algo: -1,
        alpha,
        beta,
    };
    // The scalars are this library's own, on the host, whatever the pointer mode.
    run_with_host_scalars(id, g, "dot (as a GEMM)")?;
    if device_mode {
        return Ok(None);
    }
    let mut v = [0u8; 8];
    driver()?.dtoh(&mut v[..elem], out.addr(), h.stream)?;
    Ok(Some(v))
}

/// 1 in the scale type of `elem`-byte reals, zero-padded to 16 bytes.
fn one(elem: usize) -> [u8; 16] {
    let mut b = [0u8; 16];
    if elem == 8 {
        b[..8].copy_from_slice(&1.0f64.to_le_bytes());
    } else {
        b[..4].copy_from_slice(&1.0f32.to_le_bytes());
    }
    b
}

/// `y = alpha·x + y` as the GEMM `yᵀ (1×n, ld incy) = alpha · 1 (1×1) · xᵀ (1×n, ld incx) +
/// yᵀ`, the 1 from the handle's scratch. Negative increments are NOT_SUPPORTED.
#[allow(clippy::too_many_arguments)] // the C signature
pub fn axpy(
    id: HandleId,
    n: i32,
    alpha: In<c_void>,
    x: DevPtr,
    incx: i32,
    y: DevPtr,
    incy: i32,
    elem: usize,
) -> Result<(), CublasStatus> {
    let h = handle::get(id)?;
    if alpha.is_null() {
        return Err(INVALID);
    }
    if n <= 0 {
        return Ok(());
    }
    if incx <= 0 || incy <= 0 {
        log::warn!("vgpu: libcublas: axpy with an increment below 1 is not supported");
        return Err(CublasStatus::NOT_SUPPORTED);
    }
    host_scalars(&h, "axpy")?;
    let (ty, compute, one_at) = if elem == 8 {
        (data_type::R_64F, compute_type::C64F, handle::ONE_F64)
    } else {
        (data_type::R_32F, compute_type::C32F, handle::ONE_F32)
    };
    let one_dev = DevPtr((handle::scratch(id)? + one_at) as usize);
    let one = one(elem);
    // SAFETY: a local that outlives the call; `run` reads at most 16 bytes of it.
    let beta = unsafe { In::from_raw(one.as_ptr().cast::<c_void>()) };
    let g = Gemm {
        transa: 0,
        transb: 0,
        m: 1,
        n: n.into(),
        k: 1,
        a: mat(one_dev, 1, ty),
        b: mat(x, incx, ty),
        c: mat(y, incy, ty),
        batch: 1,
        compute,
        algo: -1,
        alpha,
        beta,
    };
    run(id, g, false, "axpy (as a GEMM)")
}

/// [`run`] with scalars this library supplies itself (so the handle's pointer mode does not
/// apply to them).
fn run_with_host_scalars(id: HandleId, g: Gemm, what: &str) -> Result<(), CublasStatus> {
    let mut h = handle::get(id)?;
    h.pointer_mode = handle::POINTER_MODE_HOST;
    post(&h, g, false, what)
}

/// Batched TRSM (`cublasStrsmBatched`, `cublasDtrsmBatched`): `a` and `b` are device
/// arrays of pointers; `data_type` 0 (f32) or 1 (f64).
#[allow(clippy::too_many_arguments)] // the C signature
pub fn trsm_batched(
    id: HandleId,
    side: i32,
    uplo: i32,
    trans: i32,
    diag: i32,
    m: i32,
    n: i32,
    alpha: In<c_void>,
    a: DevPtr,
    lda: i32,
    b: DevPtr,
    ldb: i32,
    batch: i32,
    data_type: u32,
) -> Result<(), CublasStatus> {
    let h = handle::get(id)?;
    let rows_a = if side == 0 { m } else { n };
    if !(0..=1).contains(&side)
        || !(0..=1).contains(&uplo)
        || !op_ok(trans)
        || !(0..=1).contains(&diag)
        || m < 0
        || n < 0
        || batch < 0
        || !ld_ok(lda.into(), rows_a.into())
        || !ld_ok(ldb.into(), m.into())
        || alpha.is_null()
    {
        return Err(INVALID);
    }
    host_scalars(&h, "trsmBatched")?;
    if m == 0 || n == 0 || batch == 0 {
        return Ok(());
    }
    let size = if data_type == data_type::R_64F { 8 } else { 4 };
    let d = TrsmBatchedDesc {
        handle: h.device,
        side: side as u32,
        uplo: uplo as u32,
        trans: trans as u32,
        diag: diag as u32,
        m: m.into(),
        n: n.into(),
        a: a.addr(),
        lda: lda.into(),
        b: b.addr(),
        ldb: ldb.into(),
        batch_count: batch.into(),
        data_type,
        rsv0: 0,
        alpha: alpha.read_bytes(size)?,
    };
    driver()?.trsm_batched(&d, h.stream)
}
