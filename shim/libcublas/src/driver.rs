//! `libcuda.so.1` and the private export table it serves (`vgpu_shim_abi::table`), opened at
//! first use. The `dlopen`/`dlsym` calls and the calls through the table are this crate's
//! `unsafe`.

use std::ffi::{c_void, CStr};
use std::sync::OnceLock;
use vgpu_proto::payload::{GemmDesc, TrsmBatchedDesc};
use vgpu_shim_abi::ptr::{In, Out};
use vgpu_shim_abi::status::CublasStatus;
use vgpu_shim_abi::table::{VgpuTable, TABLE_ID};

type Init = unsafe extern "C" fn(u32) -> u32;
type GetExportTable = unsafe extern "C" fn(*mut *const c_void, *const [u8; 16]) -> u32;

/// vgpu's table in `libcuda.so.1`.
pub struct Driver {
    table: &'static VgpuTable,
}

fn sym(lib: *mut c_void, name: &CStr) -> Result<*mut c_void, String> {
    // SAFETY: `lib` is a live handle from dlopen and `name` a NUL-terminated string.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    if p.is_null() {
        return Err(format!(
            "libcuda.so.1 lacks {} (is it vgpu's?)",
            name.to_string_lossy()
        ));
    }
    Ok(p)
}

fn open() -> Result<Driver, String> {
    // SAFETY: a NUL-terminated library name; the handle is never closed.
    let lib = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if lib.is_null() {
        return Err("libcuda.so.1 cannot be loaded".into());
    }
    let init = sym(lib, c"cuInit")?;
    let get = sym(lib, c"cuGetExportTable")?;
    // SAFETY: the symbols are the driver API functions of these C signatures.
    let (init, get) = unsafe {
        (
            std::mem::transmute::<*mut c_void, Init>(init),
            std::mem::transmute::<*mut c_void, GetExportTable>(get),
        )
    };
    // SAFETY: cuInit with its C signature.
    let r = unsafe { init(0) };
    if r != 0 {
        return Err(format!("cuInit failed ({r}): no device"));
    }
    let mut table: *const c_void = std::ptr::null();
    // SAFETY: a valid out-pointer and a 16-byte id, as cuGetExportTable takes.
    let r = unsafe { get(&mut table, &TABLE_ID) };
    if r != 0 || table.is_null() {
        return Err(format!(
            "libcuda.so.1 serves no vgpu export table ({r}): it is not vgpu's"
        ));
    }
    let table = table.cast::<VgpuTable>();
    // SAFETY: libcuda.so.1 returned its static VgpuTable for TABLE_ID; its `size` field
    // comes first in every version of the table.
    let size = unsafe { (*table).size };
    if size < std::mem::size_of::<VgpuTable>() {
        return Err(format!("libcuda.so.1's vgpu table is older ({size} bytes)"));
    }
    // SAFETY: as above; the table is static in libcuda.so.1, which is never unloaded.
    let table = unsafe { &*table };
    Ok(Driver { table })
}

/// The driver, opened on first use; NOT_INITIALIZED (with one log line) without one.
pub fn driver() -> Result<&'static Driver, CublasStatus> {
    static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            vgpu_shim_abi::logging::init();
            let d = open();
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
