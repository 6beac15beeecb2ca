//! # libcublasLt.so.12 (cuBLASLt) over vgpu
//!
//! Linked into `libcublasLt.so.12` (SONAME and version node `libcublasLt.so.12`) by
//! `ci/build-shims.sh`; `libcublas.so.12` needs it, as NVIDIA's does. So far it answers the
//! version and status queries; handles, descriptors, layouts, heuristics and
//! `cublasLtMatmul` (over the device's BLASLT_MATMUL) are not written yet: each returns
//! `CUBLAS_STATUS_NOT_SUPPORTED` and logs its name once.

pub mod ffi;
