//! Opening `libcuda.so.1` and asking it for vgpu's private table ([`crate::table`]), for
//! the libraries that reach the device through it (`libcublas.so.12`,
//! `libnvidia-ml.so.1`). The `dlopen`/`dlsym` calls and the calls through the symbols they
//! return are this module's `unsafe`.

use crate::table::{VgpuTable, TABLE_ID};
use std::ffi::{c_void, CStr};

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

/// Opens `libcuda.so.1` (never closed), runs `cuInit(0)` and returns its vgpu table.
pub fn open() -> Result<&'static VgpuTable, OpenError> {
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
