//! # libcublasLt.so.12 (cuBLASLt) over vgpu
//!
//! Linked into `libcublasLt.so.12` (SONAME and version node `libcublasLt.so.12`) by
//! `ci/build-shims.sh`; `libcublas.so.12` needs it, as NVIDIA's does. It reaches the device
//! through `libcuda.so.1`'s private table, as `libcublas.so.12` does.
//!
//! * `ffi.rs`: the export table (every exported function, implemented or not supported);
//! * `lt.rs`: handles, matmul descriptors, matrix layouts, preferences, the heuristic and
//!   `cublasLtMatmul` over the device's BLASLT_MATMUL.

pub mod ffi;
mod lt;
