//! The private export table of `libcuda.so.1`.
//!
//! `libcuda.so.1` holds the process's one connection to vgpu-driver. The other libraries
//! reach the device through it: they open `libcuda.so.1` and ask `cuGetExportTable` for the
//! table named [`TABLE_ID`], as NVIDIA's libraries ask NVIDIA's driver for theirs. The table
//! is versioned by its `size`: a library checks that the table holds the entries it uses.
//!
//! Every entry returns a `CUresult` (or a device status in the BLAS range, `0x2000 +
//! cublasStatus_t`, for the synchronous BLAS commands). Streams are the driver API's
//! `CUstream` values (0 and the legacy and per-thread handles name the NULL stream).

use crate::ptr::{In, Out};
use vgpu_proto::info::{DeviceInfo, MgmtInfo};
use vgpu_proto::payload::{GemmDesc, LtMatmulDesc, TrsmBatchedDesc};

/// The id of the table: `cuGetExportTable(&table, &TABLE_ID)`.
pub const TABLE_ID: [u8; 16] = *b"vgpu-exports-v01";

/// The table's entries.
#[repr(C)]
pub struct VgpuTable {
    /// `size_of::<VgpuTable>()` of the library that serves it.
    pub size: usize,
    /// BLAS_CREATE: a new BLAS handle of the device.
    pub blas_create: unsafe extern "C" fn(handle: Out<u64>) -> u32,
    /// BLAS_DESTROY.
    pub blas_destroy: unsafe extern "C" fn(handle: u64) -> u32,
    /// Posts BLAS_GEMM on a stream.
    pub blas_gemm: unsafe extern "C" fn(desc: In<GemmDesc>, stream: usize) -> u32,
    /// Posts BLAS_GEMM_BATCHED on a stream.
    pub blas_gemm_batched: unsafe extern "C" fn(desc: In<GemmDesc>, stream: usize) -> u32,
    /// Posts BLAS_TRSM_BATCHED on a stream.
    pub blas_trsm_batched: unsafe extern "C" fn(desc: In<TrsmBatchedDesc>, stream: usize) -> u32,
    /// Posts BLASLT_MATMUL on a stream.
    pub blaslt_matmul: unsafe extern "C" fn(desc: In<LtMatmulDesc>, stream: usize) -> u32,
    /// The device info received at connection, whatever `CUDA_VISIBLE_DEVICES` says (NVML
    /// sees every device).
    pub device_info: unsafe extern "C" fn(info: Out<DeviceInfo>) -> u32,
    /// MGMT_QUERY: management data in the PD's view (memory as `cuMemGetInfo` reports it).
    pub mgmt_query: unsafe extern "C" fn(info: Out<MgmtInfo>) -> u32,
    /// `cuMemAlloc`.
    pub mem_alloc: unsafe extern "C" fn(ptr: Out<u64>, size: usize) -> u32,
    /// `cuMemFree`.
    pub mem_free: unsafe extern "C" fn(ptr: u64) -> u32,
    /// A host-to-device copy of `n` bytes on `stream`, complete on return.
    pub memcpy_htod: unsafe extern "C" fn(dst: u64, src: In<u8>, n: usize, stream: usize) -> u32,
    /// A device-to-host copy of `n` bytes on `stream` (after the work before it there),
    /// complete on return.
    pub memcpy_dtoh: unsafe extern "C" fn(dst: Out<u8>, src: u64, n: usize, stream: usize) -> u32,
}
