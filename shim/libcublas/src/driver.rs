//! The private export table of `libcuda.so.1` (`vgpu_shim_abi::table`), opened at first use.
//! The calls through the table are this crate's `unsafe`.

use std::sync::OnceLock;
use vgpu_proto::payload::{GemmDesc, TrsmBatchedDesc};
use vgpu_shim_abi::libcuda::{self, OpenError};
use vgpu_shim_abi::ptr::{In, Out};
use vgpu_shim_abi::status::CublasStatus;
use vgpu_shim_abi::table::VgpuTable;

/// vgpu's table in `libcuda.so.1`.
pub struct Driver {
    table: &'static VgpuTable,
}

/// The driver, opened on first use; NOT_INITIALIZED (with one log line) without one.
pub fn driver() -> Result<&'static Driver, CublasStatus> {
    static DRIVER: OnceLock<Result<Driver, OpenError>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            vgpu_shim_abi::logging::init();
            let d = libcuda::open().map(|table| Driver { table });
            if let Err(e) = &d {
                log::warn!("vgpu: libcublas: {e}");
            }
            d
        })
        .as_ref()
        .map_err(|_| CublasStatus::NOT_INITIALIZED)
}

fn check(r: u32) -> Result<(), CublasStatus> {
    match CublasStatus::from_cuda(r) {
        CublasStatus::SUCCESS => Ok(()),
        s => {
            log::warn!("vgpu: libcublas: the device refused a BLAS command ({r:#x})");
            Err(s)
        }
    }
}

impl Driver {
    /// A new device BLAS handle.
    pub fn create(&self) -> Result<u64, CublasStatus> {
        let mut h = 0u64;
        // SAFETY: the table's entry with its C signature; `h` outlives the call.
        check(unsafe { (self.table.blas_create)(Out::from_raw(&mut h)) })?;
        Ok(h)
    }

    /// Destroys a device BLAS handle.
    pub fn destroy(&self, h: u64) -> Result<(), CublasStatus> {
        // SAFETY: the table's entry with its C signature.
        check(unsafe { (self.table.blas_destroy)(h) })
    }

    /// Posts a GEMM (`batched`: over arrays of pointers).
    pub fn gemm(&self, d: &GemmDesc, batched: bool, stream: usize) -> Result<(), CublasStatus> {
        let f = match batched {
            true => self.table.blas_gemm_batched,
            false => self.table.blas_gemm,
        };
        // SAFETY: the table's entry with its C signature; `d` outlives the call.
        check(unsafe { f(In::from_raw(d), stream) })
    }

    /// Posts a batched TRSM.
    pub fn trsm_batched(&self, d: &TrsmBatchedDesc, stream: usize) -> Result<(), CublasStatus> {
        // SAFETY: the table's entry with its C signature; `d` outlives the call.
        check(unsafe { (self.table.blas_trsm_batched)(In::from_raw(d), stream) })
    }
}
