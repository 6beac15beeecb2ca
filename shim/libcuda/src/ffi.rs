//! The exported driver API. The pointer writes of the C ABI are confined to [`put`] and
//! [`put_str`]; everything else is safe code.

use crate::state::{device_count, initialized, session};
use std::ffi::c_char;
use std::sync::Once;
use vgpu_proto::info::DeviceInfo;

type CuResult = u32;
const SUCCESS: CuResult = 0;
const INVALID_VALUE: CuResult = 1;
const NOT_INITIALIZED: CuResult = 3;
const INVALID_DEVICE: CuResult = 101;
const NOT_SUPPORTED: CuResult = 801;

/// Writes `v` through an out-pointer; INVALID_VALUE for null.
fn put<T>(p: *mut T, v: T) -> CuResult {
    if p.is_null() {
        return INVALID_VALUE;
    }
    // SAFETY: the caller of the CUDA API passes a valid out-pointer for T (CUDA's contract);
    // null was refused above.
    unsafe { p.write_unaligned(v) };
    SUCCESS
}

/// Copies `s` as a NUL-terminated string into a caller buffer of `len` bytes (truncating).
fn put_str(p: *mut c_char, len: i32, s: &str) -> CuResult {
    if p.is_null() || len <= 0 {
        return INVALID_VALUE;
    }
    let n = s.len().min(len as usize - 1);
    for (i, b) in s.as_bytes()[..n]
        .iter()
        .chain(std::iter::once(&0))
        .enumerate()
    {
        // SAFETY: the caller's buffer holds `len` bytes (CUDA's contract); i < n + 1 <= len.
        unsafe { p.add(i).write(*b as c_char) };
    }
    SUCCESS
}

fn device(dev: i32) -> Result<&'static DeviceInfo, CuResult> {
    let s = initialized().ok_or(NOT_INITIALIZED)?;
    let info = s.info.as_ref().ok_or(NOT_INITIALIZED)?;
    if dev < 0 || dev >= device_count() {
        return Err(INVALID_DEVICE);
    }
    Ok(info)
}

macro_rules! try_cu {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}

/// `cuInit`.
#[no_mangle]
pub extern "C" fn cuInit(flags: u32) -> CuResult {
    if flags != 0 {
        return INVALID_VALUE;
    }
    session().status.to_cuda()
}

/// `cuDriverGetVersion`: the advertised version, fixed.
#[no_mangle]
pub extern "C" fn cuDriverGetVersion(version: *mut i32) -> CuResult {
    put(version, crate::ADVERTISED_VERSION)
}

/// `cuDeviceGetCount`.
#[no_mangle]
pub extern "C" fn cuDeviceGetCount(count: *mut i32) -> CuResult {
    if initialized().is_none() {
        return NOT_INITIALIZED;
    }
    put(count, device_count())
}

/// `cuDeviceGet`.
#[no_mangle]
pub extern "C" fn cuDeviceGet(dev: *mut i32, ordinal: i32) -> CuResult {
    try_cu!(device(ordinal));
    put(dev, ordinal)
}

/// `cuDeviceGetAttribute`: from the device info, answered locally.
#[no_mangle]
pub extern "C" fn cuDeviceGetAttribute(value: *mut i32, attrib: i32, dev: i32) -> CuResult {
    let info = try_cu!(device(dev));
    match u32::try_from(attrib).ok().and_then(|a| info.attr(a)) {
        Some(v) => put(value, v),
        None => INVALID_VALUE,
    }
}

/// `cuDeviceGetName`.
#[no_mangle]
pub extern "C" fn cuDeviceGetName(name: *mut c_char, len: i32, dev: i32) -> CuResult {
    let info = try_cu!(device(dev));
    put_str(name, len, info.name())
}

/// `cuDeviceTotalMem_v2`.
#[no_mangle]
pub extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: i32) -> CuResult {
    let info = try_cu!(device(dev));
    put(bytes, info.total_mem as usize)
}

/// `cuDeviceTotalMem` (the pre-v2 entry point, same result).
#[no_mangle]
pub extern "C" fn cuDeviceTotalMem(bytes: *mut usize, dev: i32) -> CuResult {
    cuDeviceTotalMem_v2(bytes, dev)
}

/// `cuDeviceGetPCIBusId`: `domain:bus:device.function`.
#[no_mangle]
pub extern "C" fn cuDeviceGetPCIBusId(id: *mut c_char, len: i32, dev: i32) -> CuResult {
    let info = try_cu!(device(dev));
    let s = format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        info.pci_domain, info.pci_bus, info.pci_device, info.pci_function
    );
    put_str(id, len, &s)
}

/// `cuDeviceGetUuid`.
#[no_mangle]
pub extern "C" fn cuDeviceGetUuid(uuid: *mut [u8; 16], dev: i32) -> CuResult {
    let info = try_cu!(device(dev));
    put(uuid, info.uuid)
}

/// `cuDeviceGetUuid_v2`.
#[no_mangle]
pub extern "C" fn cuDeviceGetUuid_v2(uuid: *mut [u8; 16], dev: i32) -> CuResult {
    cuDeviceGetUuid(uuid, dev)
}

macro_rules! error_strings {
    ($( $code:literal => $name:literal, $text:literal; )*) => {
        fn error_name(code: u32) -> Option<&'static std::ffi::CStr> {
            match code { $( $code => Some($name), )* _ => None }
        }
        fn error_text(code: u32) -> Option<&'static std::ffi::CStr> {
            match code { $( $code => Some($text), )* _ => None }
        }
    };
}

error_strings! {
    0 => c"CUDA_SUCCESS", c"no error";
    1 => c"CUDA_ERROR_INVALID_VALUE", c"invalid argument";
    2 => c"CUDA_ERROR_OUT_OF_MEMORY", c"out of memory";
    3 => c"CUDA_ERROR_NOT_INITIALIZED", c"initialization error";
    46 => c"CUDA_ERROR_DEVICE_UNAVAILABLE", c"CUDA-capable device(s) is/are busy or unavailable";
    100 => c"CUDA_ERROR_NO_DEVICE", c"no CUDA-capable device is detected";
    101 => c"CUDA_ERROR_INVALID_DEVICE", c"invalid device ordinal";
    200 => c"CUDA_ERROR_INVALID_IMAGE", c"device kernel image is invalid";
    209 => c"CUDA_ERROR_NO_BINARY_FOR_GPU", c"no kernel image is available for execution on the device";
    400 => c"CUDA_ERROR_INVALID_HANDLE", c"invalid resource handle";
    500 => c"CUDA_ERROR_NOT_FOUND", c"named symbol not found";
    600 => c"CUDA_ERROR_NOT_READY", c"device not ready";
    700 => c"CUDA_ERROR_ILLEGAL_ADDRESS", c"an illegal memory access was encountered";
    719 => c"CUDA_ERROR_LAUNCH_FAILED", c"unspecified launch failure";
    801 => c"CUDA_ERROR_NOT_SUPPORTED", c"operation not supported";
    909 => c"CUDA_ERROR_TIMEOUT", c"timeout expired";
    999 => c"CUDA_ERROR_UNKNOWN", c"unknown error";
}

/// `cuGetErrorString`.
#[no_mangle]
pub extern "C" fn cuGetErrorString(error: u32, text: *mut *const c_char) -> CuResult {
    match error_text(error) {
        Some(s) => put(text, s.as_ptr()),
        None => {
            let _ = put(text, std::ptr::null());
            INVALID_VALUE
        }
    }
}

/// `cuGetErrorName`.
#[no_mangle]
pub extern "C" fn cuGetErrorName(error: u32, text: *mut *const c_char) -> CuResult {
    match error_name(error) {
        Some(s) => put(text, s.as_ptr()),
        None => {
            let _ = put(text, std::ptr::null());
            INVALID_VALUE
        }
    }
}

/// Defines exported functions that are not implemented: each returns
/// CUDA_ERROR_NOT_SUPPORTED and logs its name once. Arguments are ignored, which the C ABI
/// allows for any parameter list (the caller owns the argument area).
macro_rules! not_supported {
    ($($name:ident),* $(,)?) => {
        $(
            #[no_mangle]
            pub extern "C" fn $name() -> CuResult {
                static ONCE: Once = Once::new();
                ONCE.call_once(|| log::warn!("vgpu: {} is not supported", stringify!($name)));
                NOT_SUPPORTED
            }
        )*
        /// Exported functions that return CUDA_ERROR_NOT_SUPPORTED.
        pub const NOT_SUPPORTED_FUNCTIONS: &[&str] = &[$(stringify!($name)),*];
    };
}

// Virtual memory management: the device reports it unsupported (attribute 102 = 0), so
// ggml uses plain allocations; the symbols must exist for the loader.
not_supported!(
    cuMemAddressFree,
    cuMemAddressReserve,
    cuMemCreate,
    cuMemGetAllocationGranularity,
    cuMemMap,
    cuMemRelease,
    cuMemSetAccess,
    cuMemUnmap,
);

/// Exported functions that are implemented.
pub const IMPLEMENTED_FUNCTIONS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetAttribute",
    "cuDeviceGetName",
    "cuDeviceTotalMem_v2",
    "cuDeviceTotalMem",
    "cuDeviceGetPCIBusId",
    "cuDeviceGetUuid",
    "cuDeviceGetUuid_v2",
    "cuGetErrorString",
    "cuGetErrorName",
];
