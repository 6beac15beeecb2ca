//! `libcuda.so.1`, opened at first use. The `dlopen`/`dlsym` calls and the calls through
//! the function pointers they return are this crate's `unsafe`.

use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

type CuResult = u32;

/// The driver entry points the runtime uses.
pub struct Driver {
    init: unsafe extern "C" fn(u32) -> CuResult,
    device_get_count: unsafe extern "C" fn(*mut i32) -> CuResult,
    device_get_attribute: unsafe extern "C" fn(*mut i32, i32, i32) -> CuResult,
    device_get_pci_bus_id: unsafe extern "C" fn(*mut c_char, i32, i32) -> CuResult,
    device_get_name: unsafe extern "C" fn(*mut c_char, i32, i32) -> CuResult,
    device_total_mem: unsafe extern "C" fn(*mut usize, i32) -> CuResult,
    device_get_uuid: unsafe extern "C" fn(*mut [u8; 16], i32) -> CuResult,
}

static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();

fn sym<T: Copy>(lib: *mut c_void, name: &CStr) -> Result<T, String> {
    // SAFETY: `lib` is a live handle from dlopen and `name` a NUL-terminated string.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    if p.is_null() {
        return Err(format!("libcuda.so.1 lacks {}", name.to_string_lossy()));
    }
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: T is a function-pointer type of the same size as the symbol's address, and the
    // symbol is the driver API function of that C signature.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

/// The driver, opened on first use.
pub fn driver() -> Result<&'static Driver, &'static str> {
    DRIVER
        .get_or_init(|| {
            // SAFETY: a NUL-terminated library name; the handle is never closed.
            let lib = unsafe {
                libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL)
            };
            if lib.is_null() {
                return Err("libcuda.so.1 cannot be loaded".to_string());
            }
            Ok(Driver {
                init: sym(lib, c"cuInit")?,
                device_get_count: sym(lib, c"cuDeviceGetCount")?,
                device_get_attribute: sym(lib, c"cuDeviceGetAttribute")?,
                device_get_pci_bus_id: sym(lib, c"cuDeviceGetPCIBusId")?,
                device_get_name: sym(lib, c"cuDeviceGetName")?,
                device_total_mem: sym(lib, c"cuDeviceTotalMem_v2")?,
                device_get_uuid: sym(lib, c"cuDeviceGetUuid")?,
            })
        })
        .as_ref()
        .map_err(|e| e.as_str())
}

impl Driver {
    /// `cuInit(0)`.
    pub fn init(&self) -> CuResult {
        // SAFETY: calling cuInit with its C signature.
        unsafe { (self.init)(0) }
    }

    /// `cuDeviceGetCount`.
    pub fn device_count(&self) -> Result<i32, CuResult> {
        let mut n = 0;
        // SAFETY: a valid out-pointer.
        match unsafe { (self.device_get_count)(&mut n) } {
            0 => Ok(n),
            e => Err(e),
        }
    }

    /// `cuDeviceGetAttribute`.
    pub fn attribute(&self, attr: i32, dev: i32) -> Result<i32, CuResult> {
        let mut v = 0;
        // SAFETY: a valid out-pointer.
        match unsafe { (self.device_get_attribute)(&mut v, attr, dev) } {
            0 => Ok(v),
            e => Err(e),
        }
    }

    /// `cuDeviceGetPCIBusId` into a caller buffer.
    pub fn pci_bus_id(&self, buf: *mut c_char, len: i32, dev: i32) -> CuResult {
        // SAFETY: forwards the caller's buffer and length unchanged (the CUDA contract).
        unsafe { (self.device_get_pci_bus_id)(buf, len, dev) }
    }

    /// `cuDeviceGetName` into a buffer.
    pub fn name(&self, buf: &mut [c_char], dev: i32) -> CuResult {
        // SAFETY: the buffer is valid for its length.
        unsafe { (self.device_get_name)(buf.as_mut_ptr(), buf.len() as i32, dev) }
    }

    /// `cuDeviceTotalMem_v2`.
    pub fn total_mem(&self, dev: i32) -> Result<usize, CuResult> {
        let mut v = 0;
        // SAFETY: a valid out-pointer.
        match unsafe { (self.device_total_mem)(&mut v, dev) } {
            0 => Ok(v),
            e => Err(e),
        }
    }

    /// `cuDeviceGetUuid`.
    pub fn uuid(&self, dev: i32) -> Result<[u8; 16], CuResult> {
        let mut v = [0u8; 16];
        // SAFETY: a valid out-pointer.
        match unsafe { (self.device_get_uuid)(&mut v, dev) } {
            0 => Ok(v),
            e => Err(e),
        }
    }
}
