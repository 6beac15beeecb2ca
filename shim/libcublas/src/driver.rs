//! `libcuda.so.1`'s private table (`vgpu_shim_abi::libcuda::Libcuda`), opened at first use,
//! with the device's statuses as cuBLAS statuses.

use vgpu_proto::payload::{GemmDesc, TrsmBatchedDesc};
use vgpu_shim_abi::libcuda::Libcuda;
use vgpu_shim_abi::status::CublasStatus;

/// vgpu's table in `libcuda.so.1`.
#[derive(Clone, Copy)]
pub struct Driver(Libcuda);

/// The driver, opened on first use; NOT_INITIALIZED (with one log line) without one.
pub fn driver() -> Result<Driver, CublasStatus> {
    Libcuda::shared("cuBLAS")
        .map(Driver)
        .map_err(|_| CublasStatus::NOT_INITIALIZED)
}

fn check<T>(r: Result<T, u32>) -> Result<T, CublasStatus> {
    r.map_err(|e| {
        log::warn!("vgpu: cuBLAS: the device refused a BLAS command ({e:#x})");
        CublasStatus::from_cuda(e)
    })
}

impl Driver {
    /// A new device BLAS handle.
    pub fn create(&self) -> Result<u64, CublasStatus> {
        check(self.0.blas_create())
    }

    /// Destroys a device BLAS handle.
    pub fn destroy(&self, h: u64) -> Result<(), CublasStatus> {
        check(self.0.blas_destroy(h))
    }

    /// Posts a GEMM (`batched`: over arrays of pointers).
    pub fn gemm(&self, d: &GemmDesc, batched: bool, stream: usize) -> Result<(), CublasStatus> {
        check(self.0.gemm(d, batched, stream))
    }

    /// Posts a batched TRSM.
    pub fn trsm_batched(&self, d: &TrsmBatchedDesc, stream: usize) -> Result<(), CublasStatus> {
        check(self.0.trsm_batched(d, stream))
    }
}
