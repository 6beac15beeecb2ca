//! Opening `libcuda.so.1` and asking it for vgpu's private table ([`crate::table`]), for
//! the libraries that reach the device through it (`libcublas.so.12`,
//! `libnvidia-ml.so.1`). The `dlopen`/`dlsym` calls and the calls through the symbols they
//! return are this module's `unsafe`.

use crate::ptr::{In, Out};
use crate::table::{VgpuTable, TABLE_ID};
use std::ffi::{c_void, CStr};
use vgpu_proto::info::{DeviceInfo, MgmtInfo};
use vgpu_proto::payload::{GemmDesc, LtMatmulDesc, TrsmBatchedDesc};

type Init = unsafe extern "C" fn(u32) -> u32;
type GetExportTable = unsafe extern "C" fn(*mut *const c_void, *const [u8; 16]) -> u32;

/// Why the table could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// `libcuda.so.1` cannot be loaded, or is not vgpu's.
    NotLoaded(String),
    /// `cuInit` failed (with this `CUresult`): no device.
    NoDevice(u32),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NotLoaded(s) => f.write_str(s),
            OpenError::NoDevice(r) => write!(f, "cuInit failed ({r}): no device"),
        }
    }
}

fn sym(lib: *mut c_void, name: &CStr) -> Result<*mut c_void, OpenError> {
    // SAFETY: `lib` is a live handle from dlopen and `name` a NUL-terminated string.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    if p.is_null() {
        return Err(OpenError::NotLoaded(format!(
            "libcuda.so.1 lacks {} (is it vgpu's?)",
            name.to_string_lossy()
        )));
    }
    Ok(p)
}

/// vgpu's table in `libcuda.so.1`, with a safe method per entry. Each returns the entry's
/// `CUresult` (or device status) as the error.
#[derive(Clone, Copy)]
pub struct Libcuda(&'static VgpuTable);

fn status(r: u32) -> Result<(), u32> {
    match r {
        0 => Ok(()),
        e => Err(e),
    }
}

impl Libcuda {
    /// Opens `libcuda.so.1` (never closed), runs `cuInit(0)` and takes its vgpu table.
    pub fn open() -> Result<Libcuda, OpenError> {
        open().map(Libcuda)
    }

    /// The table, opened at the first call from this library (each library links its own
    /// copy of this crate, so each opens it once); why it could not be opened is logged
    /// once, as `library`'s.
    pub fn shared(library: &str) -> Result<Libcuda, &'static OpenError> {
        static LIB: std::sync::OnceLock<Result<Libcuda, OpenError>> = std::sync::OnceLock::new();
        LIB.get_or_init(|| {
            crate::logging::init();
            let l = Libcuda::open();
            if let Err(e) = &l {
                log::warn!("vgpu: {library}: {e}");
            }
            l
        })
        .as_ref()
        .copied()
    }

    /// BLAS_CREATE.
    pub fn blas_create(self) -> Result<u64, u32> {
        let mut h = 0u64;
        // SAFETY: the table's entry with its C signature; `h` outlives the call.
        status(unsafe { (self.0.blas_create)(Out::from_raw(&mut h)) })?;
        Ok(h)
    }

    /// BLAS_DESTROY.
    pub fn blas_destroy(self, h: u64) -> Result<(), u32> {
        // SAFETY: the table's entry with its C signature.
        status(unsafe { (self.0.blas_destroy)(h) })
    }

    /// Posts BLAS_GEMM, or BLAS_GEMM_BATCHED (`batched`: arrays of pointers).
    pub fn gemm(self, d: &GemmDesc, batched: bool, stream: usize) -> Result<(), u32> {
        let f = match batched {
            true => self.0.blas_gemm_batched,
            false => self.0.blas_gemm,
        };
        // SAFETY: the table's entry with its C signature; `d` outlives the call.
        status(unsafe { f(In::from_raw(d), stream) })
    }

    /// Posts BLAS_TRSM_BATCHED.
    pub fn trsm_batched(self, d: &TrsmBatchedDesc, stream: usize) -> Result<(), u32> {
        // SAFETY: the table's entry with its C signature; `d` outlives the call.
        status(unsafe { (self.0.blas_trsm_batched)(In::from_raw(d), stream) })
    }

    /// Posts BLASLT_MATMUL.
    pub fn lt_matmul(self, d: &LtMatmulDesc, stream: usize) -> Result<(), u32> {
        // SAFETY: the table's entry with its C signature; `d` outlives the call.
        status(unsafe { (self.0.blaslt_matmul)(In::from_raw(d), stream) })
    }

    /// The device info.
    pub fn device_info(self) -> Result<DeviceInfo, u32> {
        let mut info: DeviceInfo = bytemuck::Zeroable::zeroed();
        // SAFETY: the table's entry with its C signature; `info` outlives the call.
        status(unsafe { (self.0.device_info)(Out::from_raw(&mut info)) })?;
        Ok(info)
    }

    /// A device allocation of `size` bytes.
    pub fn mem_alloc(self, size: usize) -> Result<u64, u32> {
        let mut p = 0u64;
        // SAFETY: the table's entry with its C signature; `p` outlives the call.
        status(unsafe { (self.0.mem_alloc)(Out::from_raw(&mut p), size) })?;
        Ok(p)
    }

    /// Frees a device allocation.
    pub fn mem_free(self, ptr: u64) -> Result<(), u32> {
        // SAFETY: the table's entry with its C signature.
        status(unsafe { (self.0.mem_free)(ptr) })
    }

    /// Copies `src` to device address `dst` on `stream`, complete on return.
    pub fn htod(self, dst: u64, src: &[u8], stream: usize) -> Result<(), u32> {
        // SAFETY: the table's entry with its C signature; `src` is live for the call, which
        // reads `src.len()` bytes of it.
        status(unsafe { (self.0.memcpy_htod)(dst, In::from_raw(src.as_ptr()), src.len(), stream) })
    }

    /// Copies `dst.len()` bytes from device address `src` on `stream` (after the work
    /// before it there), complete on return.
    pub fn dtoh(self, dst: &mut [u8], src: u64, stream: usize) -> Result<(), u32> {
        let n = dst.len();
        // SAFETY: the table's entry with its C signature; `dst` is live for the call, which
        // writes `n` bytes of it.
        status(unsafe { (self.0.memcpy_dtoh)(Out::from_raw(dst.as_mut_ptr()), src, n, stream) })
    }

    /// MGMT_QUERY.
    pub fn mgmt_query(self) -> Result<MgmtInfo, u32> {
        let mut m: MgmtInfo = bytemuck::Zeroable::zeroed();
        // SAFETY: the table's entry with its C signature; `m` outlives the call.
        status(unsafe { (self.0.mgmt_query)(Out::from_raw(&mut m)) })?;
        Ok(m)
    }
}

fn open() -> Result<&'static VgpuTable, OpenError> {
    // SAFETY: a NUL-terminated library name; the handle is never closed.
    let lib = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if lib.is_null() {
        return Err(OpenError::NotLoaded("libcuda.so.1 cannot be loaded".into()));
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
        return Err(OpenError::NoDevice(r));
    }
    let mut table: *const c_void = std::ptr::null();
    // SAFETY: a valid out-pointer and a 16-byte id, as cuGetExportTable takes.
    let r = unsafe { get(&mut table, &TABLE_ID) };
    if r != 0 || table.is_null() {
        return Err(OpenError::NotLoaded(format!(
            "libcuda.so.1 serves no vgpu export table ({r}): it is not vgpu's"
        )));
    }
    let table = table.cast::<VgpuTable>();
    // SAFETY: libcuda.so.1 returned its static VgpuTable for TABLE_ID; its `size` field
    // comes first in every version of the table.
    let size = unsafe { (*table).size };
    if size < std::mem::size_of::<VgpuTable>() {
        return Err(OpenError::NotLoaded(format!(
            "libcuda.so.1's vgpu table is older ({size} bytes)"
        )));
    }
    // SAFETY: as above; the table is static in libcuda.so.1, which is never unloaded.
    Ok(unsafe { &*table })
}
