//! # libcublas.so.12 (cuBLAS) over vgpu
//!
//! Linked into `libcublas.so.12` (SONAME and version node `libcublas.so.12`, `NEEDED
//! libcublasLt.so.12` as NVIDIA's) by `ci/build-shims.sh`. The BLAS work runs on the
//! device (spec §7.12): this library keeps the handles' client-side state (stream, math
//! mode, pointer mode, workspace), checks arguments as cuBLAS does, and posts BLAS commands
//! through the private export table of `libcuda.so.1`, which holds the process's connection.
//!
//! * `ffi.rs`: the export table (every exported function, implemented or not supported);
//! * `driver.rs`: `libcuda.so.1` and its private table, opened at first use;
//! * `handle.rs`: handles and their state;
//! * `gemm.rs`: the GEMM family, TRSM and the level-1/2 calls expressed as GEMMs.

mod driver;
pub mod ffi;
mod gemm;
mod handle;
