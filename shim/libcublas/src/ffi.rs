//! The exports of `libcublas.so.12`, one line each (`vgpu_shim_abi::exports!`): the C
//! signature, and the call that implements it.
//!
//! Device matrices are [`DevPtr`]s; host scalars are [`In`] pointers, read only in host
//! pointer mode. The GEMM entry points all lower to [`gemm::call`] with their types.

use crate::gemm::{self, compute_type::*, data_type::*, mat, strided};
use crate::handle::{self, HandleId};
use std::ffi::{c_char, c_void};
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::{DevPtr, In, Out};
use vgpu_shim_abi::status::CublasStatus;
use vgpu_shim_abi::version;

type R = Result<(), CublasStatus>;

/// nrm2 takes the square root on the host: device pointer mode is NOT_SUPPORTED.
fn nrm2_host(h: HandleId) -> R {
    if handle::get(h)?.pointer_mode == handle::POINTER_MODE_DEVICE {
        log::warn!("vgpu: cuBLAS: nrm2 in CUBLAS_POINTER_MODE_DEVICE is not supported");
        return Err(CublasStatus::NOT_SUPPORTED);
    }
    Ok(())
}

fn get_version(h: HandleId, out: Out<i32>) -> R {
    handle::get(h)?;
    Ok(out.write(version::cublas_number())?)
}

exports! {
    library "libcublas.so.12", status CublasStatus;
    /// Creates a handle (a BLAS handle of the device).
    implemented fn cublasCreate_v2(handle: Out<HandleId>)
        => handle::create(handle);
    /// Destroys a handle.
    implemented fn cublasDestroy_v2(handle: HandleId)
        => handle::destroy(handle);
    implemented fn cublasGetVersion_v2(handle: HandleId, version: Out<i32>)
        => get_version(handle, version);
    implemented fn cublasGetProperty(ty: i32, value: Out<i32>)
        => version::cublas_property(ty, value);
    plain fn cublasGetCudartVersion() -> usize
        => version::CUDA as usize;
    plain fn cublasGetStatusName(status: u32) -> *const c_char
        => CublasStatus(status).name_ptr();
    plain fn cublasGetStatusString(status: u32) -> *const c_char
        => CublasStatus(status).text_ptr();
    implemented fn cublasSetStream_v2(handle: HandleId, stream: usize)
        => handle::set_stream(handle, stream);
    implemented fn cublasGetStream_v2(handle: HandleId, stream: Out<usize>)
        => handle::get_stream(handle, stream);
    implemented fn cublasSetMathMode(handle: HandleId, mode: u32)
        => handle::set_math_mode(handle, mode);
    implemented fn cublasGetMathMode(handle: HandleId, mode: Out<u32>)
        => handle::get_math_mode(handle, mode);
    implemented fn cublasSetPointerMode_v2(handle: HandleId, mode: i32)
        => handle::set_pointer_mode(handle, mode);
    implemented fn cublasGetPointerMode_v2(handle: HandleId, mode: Out<i32>)
        => handle::get_pointer_mode(handle, mode);
    implemented fn cublasSetAtomicsMode(handle: HandleId, mode: i32)
        => handle::set_atomics_mode(handle, mode);
    implemented fn cublasGetAtomicsMode(handle: HandleId, mode: Out<i32>)
        => handle::get_atomics_mode(handle, mode);
    implemented fn cublasSetWorkspace_v2(handle: HandleId, workspace: DevPtr, size: usize)
        => handle::set_workspace(handle, workspace, size);
    implemented fn cublasSgemm_v2(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<f32>, a: DevPtr, lda: i32, b: DevPtr, ldb: i32, beta: In<f32>, c: DevPtr, ldc: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha.cast(), beta.cast()], [mat(a, lda, R_32F), mat(b, ldb, R_32F), mat(c, ldc, R_32F)], 1, false, (C32F, -1), "cublasSgemm_v2");
    implemented fn cublasDgemm_v2(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<f64>, a: DevPtr, lda: i32, b: DevPtr, ldb: i32, beta: In<f64>, c: DevPtr, ldc: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha.cast(), beta.cast()], [mat(a, lda, R_64F), mat(b, ldb, R_64F), mat(c, ldc, R_64F)], 1, false, (C64F, -1), "cublasDgemm_v2");
    implemented fn cublasHgemm(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<u16>, a: DevPtr, lda: i32, b: DevPtr, ldb: i32, beta: In<u16>, c: DevPtr, ldc: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha.cast(), beta.cast()], [mat(a, lda, R_16F), mat(b, ldb, R_16F), mat(c, ldc, R_16F)], 1, false, (C16F, -1), "cublasHgemm");
    implemented fn cublasSgemmBatched(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<f32>, a: DevPtr, lda: i32, b: DevPtr, ldb: i32, beta: In<f32>, c: DevPtr, ldc: i32, batch: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha.cast(), beta.cast()], [mat(a, lda, R_32F), mat(b, ldb, R_32F), mat(c, ldc, R_32F)], batch, true, (C32F, -1), "cublasSgemmBatched");
    implemented fn cublasDgemmBatched(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<f64>, a: DevPtr, lda: i32, b: DevPtr, ldb: i32, beta: In<f64>, c: DevPtr, ldc: i32, batch: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha.cast(), beta.cast()], [mat(a, lda, R_64F), mat(b, ldb, R_64F), mat(c, ldc, R_64F)], batch, true, (C64F, -1), "cublasDgemmBatched");
    implemented fn cublasHgemmBatched(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<u16>, a: DevPtr, lda: i32, b: DevPtr, ldb: i32, beta: In<u16>, c: DevPtr, ldc: i32, batch: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha.cast(), beta.cast()], [mat(a, lda, R_16F), mat(b, ldb, R_16F), mat(c, ldc, R_16F)], batch, true, (C16F, -1), "cublasHgemmBatched");
    implemented fn cublasSgemmStridedBatched(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<f32>, a: DevPtr, lda: i32, sa: i64, b: DevPtr, ldb: i32, sb: i64, beta: In<f32>, c: DevPtr, ldc: i32, sc: i64, batch: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha.cast(), beta.cast()], [strided(a, lda, sa, R_32F), strided(b, ldb, sb, R_32F), strided(c, ldc, sc, R_32F)], batch, false, (C32F, -1), "cublasSgemmStridedBatched");
    implemented fn cublasDgemmStridedBatched(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<f64>, a: DevPtr, lda: i32, sa: i64, b: DevPtr, ldb: i32, sb: i64, beta: In<f64>, c: DevPtr, ldc: i32, sc: i64, batch: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha.cast(), beta.cast()], [strided(a, lda, sa, R_64F), strided(b, ldb, sb, R_64F), strided(c, ldc, sc, R_64F)], batch, false, (C64F, -1), "cublasDgemmStridedBatched");
    implemented fn cublasHgemmStridedBatched(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<u16>, a: DevPtr, lda: i32, sa: i64, b: DevPtr, ldb: i32, sb: i64, beta: In<u16>, c: DevPtr, ldc: i32, sc: i64, batch: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha.cast(), beta.cast()], [strided(a, lda, sa, R_16F), strided(b, ldb, sb, R_16F), strided(c, ldc, sc, R_16F)], batch, false, (C16F, -1), "cublasHgemmStridedBatched");
    implemented fn cublasSgemmEx(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<f32>, a: DevPtr, at: u32, lda: i32, b: DevPtr, bt: u32, ldb: i32, beta: In<f32>, c: DevPtr, ct: u32, ldc: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha.cast(), beta.cast()], [mat(a, lda, at), mat(b, ldb, bt), mat(c, ldc, ct)], 1, false, (C32F, -1), "cublasSgemmEx");
    implemented fn cublasGemmEx(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<c_void>, a: DevPtr, at: u32, lda: i32, b: DevPtr, bt: u32, ldb: i32, beta: In<c_void>, c: DevPtr, ct: u32, ldc: i32, compute: u32, algo: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha, beta], [mat(a, lda, at), mat(b, ldb, bt), mat(c, ldc, ct)], 1, false, (compute, algo), "cublasGemmEx");
    implemented fn cublasGemmBatchedEx(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<c_void>, a: DevPtr, at: u32, lda: i32, b: DevPtr, bt: u32, ldb: i32, beta: In<c_void>, c: DevPtr, ct: u32, ldc: i32, batch: i32, compute: u32, algo: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha, beta], [mat(a, lda, at), mat(b, ldb, bt), mat(c, ldc, ct)], batch, true, (compute, algo), "cublasGemmBatchedEx");
    implemented fn cublasGemmStridedBatchedEx(h: HandleId, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: In<c_void>, a: DevPtr, at: u32, lda: i32, sa: i64, b: DevPtr, bt: u32, ldb: i32, sb: i64, beta: In<c_void>, c: DevPtr, ct: u32, ldc: i32, sc: i64, batch: i32, compute: u32, algo: i32)
        => gemm::call(h, [ta, tb], [m, n, k], [alpha, beta], [strided(a, lda, sa, at), strided(b, ldb, sb, bt), strided(c, ldc, sc, ct)], batch, false, (compute, algo), "cublasGemmStridedBatchedEx");
    implemented fn cublasStrsmBatched(h: HandleId, side: i32, uplo: i32, trans: i32, diag: i32, m: i32, n: i32, alpha: In<f32>, a: DevPtr, lda: i32, b: DevPtr, ldb: i32, batch: i32)
        => gemm::trsm_batched(h, side, uplo, trans, diag, m, n, alpha.cast(), a, lda, b, ldb, batch, R_32F);
    implemented fn cublasDtrsmBatched(h: HandleId, side: i32, uplo: i32, trans: i32, diag: i32, m: i32, n: i32, alpha: In<f64>, a: DevPtr, lda: i32, b: DevPtr, ldb: i32, batch: i32)
        => gemm::trsm_batched(h, side, uplo, trans, diag, m, n, alpha.cast(), a, lda, b, ldb, batch, R_64F);
    implemented fn cublasSgemv_v2(h: HandleId, trans: i32, m: i32, n: i32, alpha: In<f32>, a: DevPtr, lda: i32, x: DevPtr, incx: i32, beta: In<f32>, y: DevPtr, incy: i32)
        => gemm::gemv(h, trans, m, n, alpha.cast(), a, lda, x, incx, beta.cast(), y, incy, R_32F, C32F);
    implemented fn cublasDgemv_v2(h: HandleId, trans: i32, m: i32, n: i32, alpha: In<f64>, a: DevPtr, lda: i32, x: DevPtr, incx: i32, beta: In<f64>, y: DevPtr, incy: i32)
        => gemm::gemv(h, trans, m, n, alpha.cast(), a, lda, x, incx, beta.cast(), y, incy, R_64F, C64F);
    implemented fn cublasSscal_v2(h: HandleId, n: i32, alpha: In<f32>, x: DevPtr, incx: i32)
        => gemm::scal(h, n, alpha.cast(), x, incx, R_32F, C32F);
    implemented fn cublasDscal_v2(h: HandleId, n: i32, alpha: In<f64>, x: DevPtr, incx: i32)
        => gemm::scal(h, n, alpha.cast(), x, incx, R_64F, C64F);
    implemented fn cublasSaxpy_v2(h: HandleId, n: i32, alpha: In<f32>, x: DevPtr, incx: i32, y: DevPtr, incy: i32) => gemm::axpy(h, n, alpha.cast(), x, incx, y, incy, 4);
    implemented fn cublasDaxpy_v2(h: HandleId, n: i32, alpha: In<f64>, x: DevPtr, incx: i32, y: DevPtr, incy: i32) => gemm::axpy(h, n, alpha.cast(), x, incx, y, incy, 8);
    implemented fn cublasSdot_v2(h: HandleId, n: i32, x: DevPtr, incx: i32, y: DevPtr, incy: i32, result: Out<f32>) => {
        let r = DevPtr(result.as_ptr() as usize);
        if let Some(v) = gemm::dot(h, n, x, incx, y, incy, r, 4)? {
            result.write(f32::from_le_bytes([v[0], v[1], v[2], v[3]]))?;
        }
        Ok(())
    };
    implemented fn cublasDdot_v2(h: HandleId, n: i32, x: DevPtr, incx: i32, y: DevPtr, incy: i32, result: Out<f64>) => {
        let r = DevPtr(result.as_ptr() as usize);
        if let Some(v) = gemm::dot(h, n, x, incx, y, incy, r, 8)? {
            result.write(f64::from_le_bytes(v))?;
        }
        Ok(())
    };
    /// The square root of `x · x` (host pointer mode).
    implemented fn cublasSnrm2_v2(h: HandleId, n: i32, x: DevPtr, incx: i32, result: Out<f32>) => {
        nrm2_host(h)?;
        let r = DevPtr(result.as_ptr() as usize);
        if let Some(v) = gemm::dot(h, n, x, incx, x, incx, r, 4)? {
            result.write(f32::from_le_bytes([v[0], v[1], v[2], v[3]]).sqrt())?;
        }
        Ok(())
    };
    implemented fn cublasDnrm2_v2(h: HandleId, n: i32, x: DevPtr, incx: i32, result: Out<f64>) => {
        nrm2_host(h)?;
        let r = DevPtr(result.as_ptr() as usize);
        if let Some(v) = gemm::dot(h, n, x, incx, x, incx, r, 8)? {
            result.write(f64::from_le_bytes(v).sqrt())?;
        }
        Ok(())
    };
    // asum and amax need reductions the device does not have; copy and swap a vector move.
    not_supported fn cublasSasum_v2;
    not_supported fn cublasDasum_v2;
    not_supported fn cublasIsamax_v2;
    not_supported fn cublasIdamax_v2;
    not_supported fn cublasIsamin_v2;
    not_supported fn cublasIdamin_v2;
    not_supported fn cublasScopy_v2;
    not_supported fn cublasDcopy_v2;
    not_supported fn cublasSswap_v2;
    not_supported fn cublasDswap_v2;
    not_supported fn cublasSrot_v2;
    not_supported fn cublasDrot_v2;
    not_supported fn cublasCgemm_v2;
    not_supported fn cublasZgemm_v2;
    not_supported fn cublasCgemm3m;
    not_supported fn cublasCgemmBatched;
    not_supported fn cublasZgemmBatched;
    not_supported fn cublasCgemmStridedBatched;
    not_supported fn cublasZgemmStridedBatched;
    not_supported fn cublasCgemv_v2;
    not_supported fn cublasZgemv_v2;
    not_supported fn cublasSgemvBatched;
    not_supported fn cublasSgemvStridedBatched;
    not_supported fn cublasSger_v2;
    not_supported fn cublasDger_v2;
    not_supported fn cublasSsymv_v2;
    not_supported fn cublasDsymv_v2;
    not_supported fn cublasStrmv_v2;
    not_supported fn cublasDtrmv_v2;
    not_supported fn cublasStrsv_v2;
    not_supported fn cublasDtrsv_v2;
    not_supported fn cublasSsyrk_v2;
    not_supported fn cublasDsyrk_v2;
    not_supported fn cublasSsymm_v2;
    not_supported fn cublasDsymm_v2;
    not_supported fn cublasStrmm_v2;
    not_supported fn cublasDtrmm_v2;
    not_supported fn cublasStrsm_v2;
    not_supported fn cublasDtrsm_v2;
    not_supported fn cublasSgeam;
    not_supported fn cublasDgeam;
    not_supported fn cublasSdgmm;
    not_supported fn cublasDdgmm;
    not_supported fn cublasSgetrfBatched;
    not_supported fn cublasDgetrfBatched;
    not_supported fn cublasSgetrsBatched;
    not_supported fn cublasSgetriBatched;
    not_supported fn cublasSmatinvBatched;
    not_supported fn cublasSgeqrfBatched;
    not_supported fn cublasSgelsBatched;
    not_supported fn cublasSgemm_v2_64;
    not_supported fn cublasGemmEx_64;
    not_supported fn cublasGemmBatchedEx_64;
    not_supported fn cublasGemmStridedBatchedEx_64;
    not_supported fn cublasSetVector;
    not_supported fn cublasGetVector;
    not_supported fn cublasSetMatrix;
    not_supported fn cublasGetMatrix;
    not_supported fn cublasSetVectorAsync;
    not_supported fn cublasGetVectorAsync;
    not_supported fn cublasSetMatrixAsync;
    not_supported fn cublasGetMatrixAsync;
    not_supported fn cublasLoggerConfigure;
    not_supported fn cublasSetLoggerCallback;
    not_supported fn cublasGetLoggerCallback;
    not_supported fn cublasSetSmCountTarget;
    not_supported fn cublasGetSmCountTarget;
    not_supported fn cublasSetVector_64;
    not_supported fn cublasGetVector_64;
}
