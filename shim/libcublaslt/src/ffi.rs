//! The exports of `libcublasLt.so.12`, one line each (`vgpu_shim_abi::exports!`).

use std::ffi::c_char;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::Out;
use vgpu_shim_abi::status::CublasStatus;
use vgpu_shim_abi::version;

exports! {
    library "libcublasLt.so.12", status CublasStatus;
    plain fn cublasLtGetVersion() -> usize => version::cublas_number() as usize;
    plain fn cublasLtGetCudartVersion() -> usize => version::CUDA as usize;
    implemented fn cublasLtGetProperty(ty: i32, value: Out<i32>) => version::cublas_property(ty, value);
    plain fn cublasLtGetStatusName(status: u32) -> *const c_char => CublasStatus(status).name_ptr();
    plain fn cublasLtGetStatusString(status: u32) -> *const c_char => CublasStatus(status).text_ptr();
    not_supported fn cublasLtCreate;
    not_supported fn cublasLtDestroy;
    not_supported fn cublasLtMatmul;
    not_supported fn cublasLtMatmulDescCreate;
    not_supported fn cublasLtMatmulDescDestroy;
    not_supported fn cublasLtMatmulDescSetAttribute;
    not_supported fn cublasLtMatmulDescGetAttribute;
    not_supported fn cublasLtMatrixLayoutCreate;
    not_supported fn cublasLtMatrixLayoutDestroy;
    not_supported fn cublasLtMatrixLayoutSetAttribute;
    not_supported fn cublasLtMatrixLayoutGetAttribute;
    not_supported fn cublasLtMatmulPreferenceCreate;
    not_supported fn cublasLtMatmulPreferenceDestroy;
    not_supported fn cublasLtMatmulPreferenceSetAttribute;
    not_supported fn cublasLtMatmulPreferenceGetAttribute;
    not_supported fn cublasLtMatmulAlgoGetHeuristic;
    not_supported fn cublasLtMatrixTransform;
    not_supported fn cublasLtMatrixTransformDescCreate;
    not_supported fn cublasLtMatrixTransformDescDestroy;
    not_supported fn cublasLtLoggerSetLevel;
    not_supported fn cublasLtLoggerSetCallback;
}
