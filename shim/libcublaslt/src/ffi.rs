//! The exports of `libcublasLt.so.12`, one line each (`vgpu_shim_abi::exports!`).

use crate::lt::{self, Handle as H, HeuristicResult};
use std::ffi::{c_char, c_void};
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::{DevPtr, In, Out, OutArray};
use vgpu_shim_abi::status::CublasStatus;
use vgpu_shim_abi::version;

exports! {
    library "libcublasLt.so.12", status CublasStatus;
    plain fn cublasLtGetVersion() -> usize => version::cublas_number() as usize;
    plain fn cublasLtGetCudartVersion() -> usize => version::CUDA as usize;
    implemented fn cublasLtGetProperty(ty: i32, value: Out<i32>) => version::cublas_property(ty, value);
    plain fn cublasLtGetStatusName(status: u32) -> *const c_char => CublasStatus(status).name_ptr();
    plain fn cublasLtGetStatusString(status: u32) -> *const c_char => CublasStatus(status).text_ptr();
    implemented fn cublasLtCreate(handle: Out<H>) => lt::create(handle);
    implemented fn cublasLtDestroy(handle: H) => lt::destroy(handle);
    implemented fn cublasLtMatmulDescCreate(desc: Out<H>, compute: u32, scale: u32) => lt::desc_create(desc, compute, scale);
    implemented fn cublasLtMatmulDescDestroy(desc: H) => lt::desc_destroy(desc);
    implemented fn cublasLtMatmulDescSetAttribute(desc: H, attr: u32, buf: In<c_void>, size: usize) => lt::desc_set(desc, attr, buf, size);
    implemented fn cublasLtMatmulDescGetAttribute(desc: H, attr: u32, buf: OutArray<u8>, size: usize, written: Out<usize>) => lt::desc_get(desc, attr, buf, size, written);
    implemented fn cublasLtMatrixLayoutCreate(layout: Out<H>, ty: u32, rows: u64, cols: u64, ld: i64) => lt::layout_create(layout, ty, rows, cols, ld);
    implemented fn cublasLtMatrixLayoutDestroy(layout: H) => lt::layout_destroy(layout);
    implemented fn cublasLtMatrixLayoutSetAttribute(layout: H, attr: u32, buf: In<c_void>, size: usize) => lt::layout_set(layout, attr, buf, size);
    implemented fn cublasLtMatrixLayoutGetAttribute(layout: H, attr: u32, buf: OutArray<u8>, size: usize, written: Out<usize>) => lt::layout_get(layout, attr, buf, size, written);
    implemented fn cublasLtMatmulPreferenceCreate(pref: Out<H>) => lt::pref_create(pref);
    implemented fn cublasLtMatmulPreferenceDestroy(pref: H) => lt::pref_destroy(pref);
    implemented fn cublasLtMatmulPreferenceSetAttribute(pref: H, attr: u32, buf: In<c_void>, size: usize) => lt::pref_set(pref, attr, buf, size);
    implemented fn cublasLtMatmulAlgoGetHeuristic(handle: H, desc: H, a: H, b: H, c: H, d: H, pref: H, requested: i32, results: OutArray<HeuristicResult>, count: Out<i32>)
        => lt::heuristic(handle, desc, a, b, c, d, pref, requested, results, count);
    implemented fn cublasLtMatmul(handle: H, desc: H, alpha: In<c_void>, a: DevPtr, al: H, b: DevPtr, bl: H, beta: In<c_void>, c: DevPtr, cl: H, d: DevPtr, dl: H, algo: In<[u64; 8]>, workspace: DevPtr, workspace_size: usize, stream: usize)
        => lt::matmul(handle, desc, alpha, a, al, b, bl, beta, c, cl, d, dl, algo, workspace, workspace_size, stream);
    not_supported fn cublasLtMatmulPreferenceGetAttribute;
    not_supported fn cublasLtMatmulDescInit_internal;
    not_supported fn cublasLtMatrixLayoutInit_internal;
    not_supported fn cublasLtMatmulPreferenceInit_internal;
    not_supported fn cublasLtMatmulAlgoInit;
    not_supported fn cublasLtMatmulAlgoCheck;
    not_supported fn cublasLtMatmulAlgoGetIds;
    not_supported fn cublasLtMatrixTransform;
    not_supported fn cublasLtMatrixTransformDescCreate;
    not_supported fn cublasLtMatrixTransformDescDestroy;
    not_supported fn cublasLtLoggerSetLevel;
    not_supported fn cublasLtLoggerSetCallback;
}
