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

    /// A device allocation.
    pub fn mem_alloc(&self, size: usize) -> Result<u64, CublasStatus> {
        self.0.mem_alloc(size).map_err(|e| match e {
            2 => CublasStatus::ALLOC_FAILED,
            e => CublasStatus::from_cuda(e),
        })
    }

    /// Frees a device allocation.
    pub fn mem_free(&self, ptr: u64) -> Result<(), CublasStatus> {
        check(self.0.mem_free(ptr))
    }

    /// Host to device on `stream`, complete on return.
    pub fn htod(&self, dst: u64, src: &[u8], stream: usize) -> Result<(), CublasStatus> {
        self.0
            .htod(dst, src, stream)
            .map_err(|_| CublasStatus::MAPPING_ERROR)
    }

    /// Device to host on `stream` (after the work before it), complete on return.
    pub fn dtoh(&self, dst: &mut [u8], src: u64, stream: usize) -> Result<(), CublasStatus> {
        self.0.dtoh(dst, src, stream).map_err(|e| match e {
            // The work before the copy failed (its error latched on the stream).
            700..=799 => CublasStatus::EXECUTION_FAILED,
            _ => CublasStatus::MAPPING_ERROR,
        })
    }

    /// Posts a batched TRSM.
    pub fn trsm_batched(&self, d: &TrsmBatchedDesc, stream: usize) -> Result<(), CublasStatus> {
        check(self.0.trsm_batched(d, stream))
    }
}
