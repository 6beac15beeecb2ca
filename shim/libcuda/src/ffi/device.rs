//! Initialisation, device queries, the primary context and the error strings: `cuInit`,
//! `cuDriverGetVersion`, `cuDeviceGetCount`, `cuDeviceGet`, `cuDeviceGetAttribute`,
//! `cuDeviceGetName`, `cuDeviceTotalMem(_v2)`, `cuDeviceGetPCIBusId`,
//! `cuDeviceGetUuid(_v2)`, `cuDevicePrimaryCtxReset_v2`, `cuGetErrorString` and
//! `cuGetErrorName`. The device queries are answered locally, from the device info.

use super::{put, put_str, CuResult, INVALID_VALUE, SUCCESS};
use crate::handles;
use crate::mem;
use crate::module;
use crate::state::{device_count, initialized, session};
use std::ffi::c_char;
use vgpu_proto::info::DeviceInfo;
use vgpu_proto::Command;
use vgpu_shim_abi::status::CuStatus;

const NOT_INITIALIZED: CuResult = 3;
const INVALID_DEVICE: CuResult = 101;

fn device(dev: i32) -> Result<&'static DeviceInfo, CuResult> {
    let s = initialized().ok_or(NOT_INITIALIZED)?;
    let info = s.info.as_ref().ok_or(NOT_INITIALIZED)?;
    if dev < 0 || dev >= device_count() {
        return Err(INVALID_DEVICE);
    }
    Ok(info)
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

/// `cuDevicePrimaryCtxReset_v2`: the device destroys every GPU object of this process
/// (CTX_RESET: allocations, modules, streams, events, graphs) and clears its errors; the
/// local tables of them are forgotten. Pinned host memory (windows) stays.
#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxReset_v2(dev: i32) -> CuResult {
    try_cu!(device(dev).map(|_| ()));
    try_cu!(mem::call(Command::CTX_RESET(bytemuck::Zeroable::zeroed()), 0).map(|_| ()));
    mem::forget_allocations();
    module::forget_all();
    handles::forget_all();
    crate::graph::forget_all();
    SUCCESS
}

/// The name and the message of a `CUresult` (one table for every library,
/// `vgpu_shim_abi::status::CuStatus`).
fn error_name(code: u32) -> Option<&'static std::ffi::CStr> {
    CuStatus(code).name()
}

fn error_text(code: u32) -> Option<&'static std::ffi::CStr> {
    CuStatus(code).text()
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
    "cuDevicePrimaryCtxReset_v2",
    "cuGetErrorString",
    "cuGetErrorName",
];
