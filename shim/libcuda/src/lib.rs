//! # libcuda.so.1 (the CUDA driver API) over vgpu
//!
//! This crate is linked into `libcuda.so.1` (SONAME `libcuda.so.1`, unversioned exports)
//! by `ci/build-shims.sh`. It holds the process's one connection to vgpu-driver (the client
//! core of `vgpu-shim`) and answers what it can from the device info it received.
//!
//! Implemented: initialisation and device discovery (`cuInit`, `cuDriverGetVersion`,
//! `cuDeviceGetCount`, `cuDeviceGet`, `cuDeviceGetAttribute`, `cuDeviceGetName`,
//! `cuDeviceTotalMem(_v2)`, `cuDeviceGetPCIBusId`, `cuDeviceGetUuid(_v2)`), the error
//! strings, and memory, copies (pinned and staged pageable), memsets, streams, events and
//! synchronisation (`mem.rs`), 2-D copies and memsets (`copy2d.rs`), modules, launches
//! (with attributes) and function attributes (`module.rs`), stream capture and graphs
//! (`graph.rs`), host registration of shared file mappings (`hostreg.rs`), `cuGetProcAddress` (`proc.rs`) and `cuGetExportTable` with the private table the other vgpu libraries use (`table.rs`). Every other exported function returns `CUDA_ERROR_NOT_SUPPORTED` and logs its
//! name once (see `COVERAGE.md`). With no driver running, `cuInit` fails with
//! `CUDA_ERROR_NO_DEVICE` and one log line, and the process carries on.

pub mod copy2d;
pub mod ctx;
pub mod ffi;
pub mod graph;
pub mod handles;
pub mod hostfn;
pub mod hostreg;
pub mod mem;
pub mod module;
pub mod proc;
pub mod state;
pub mod table;

pub use state::device_count;

/// Every table of exports of `libcuda.so.1` (one per module; `vgpu_shim_abi::exports!`).
pub const EXPORT_TABLES: &[&[vgpu_shim_abi::Export]] = &[
    ffi::device::EXPORTS,
    ffi::memory::EXPORTS,
    ffi::stream::EXPORTS,
    ffi::module::EXPORTS,
    ffi::context::EXPORTS,
    ffi::general::EXPORTS,
    copy2d::EXPORTS,
    graph::EXPORTS,
    proc::EXPORTS,
    table::EXPORTS,
];

/// The CUDA version the shims advertise, whatever the host has (12.8).
pub const ADVERTISED_VERSION: i32 = 12080;
