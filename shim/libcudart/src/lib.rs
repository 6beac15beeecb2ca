//! # libcudart.so.12 (the CUDA runtime API) over vgpu
//!
//! Linked into `libcudart.so.12` (SONAME and version node `libcudart.so.12`) by
//! `ci/build-shims.sh`. The runtime API is lowered onto the driver API of `libcuda.so.1`,
//! which this library opens at first use, as NVIDIA's runtime does.
//!
//! Implemented, by module:
//! - `ffi.rs`: device discovery (`cudaGetDeviceCount`, `cudaGetDevice`, `cudaSetDevice`,
//!   `cudaSetDeviceFlags`, `cudaGetDeviceProperties(_v2)` in the CUDA 12 layout,
//!   `cudaDeviceGetAttribute`, `cudaDeviceGetPCIBusId`), versions, the last-error calls and
//!   error strings, and the local bookkeeping of the compiler-generated ABI (fatbin, function
//!   and variable registration, launch-configuration push and pop);
//! - `mem.rs`: memory, 1-D and 2-D copies and memsets, peer queries and copies, streams,
//!   events and synchronisation;
//! - `launch.rs`: both kernel-launch ABIs, `cudaLaunchKernelExC`, cooperative launches,
//!   function attributes and the occupancy calculator;
//! - `graph.rs`: stream capture and graphs;
//! - `symbol.rs`: device variables by host shadow, and `cudaDeviceReset`.
//!
//! Everything is lowered onto the driver API. Every other exported function returns
//! `cudaErrorNotSupported` and logs its name once (see `COVERAGE.md`).

mod driver;
pub mod ffi;
pub mod graph;
pub mod launch;
pub mod mem;
mod props;
pub mod registry;
pub mod symbol;

/// Every table of exports of `libcudart.so.12` (one per module; `vgpu_shim_abi::exports!`).
pub const EXPORT_TABLES: &[&[vgpu_shim_abi::Export]] = &[
    ffi::EXPORTS,
    mem::EXPORTS,
    launch::EXPORTS,
    graph::EXPORTS,
    symbol::EXPORTS,
];
