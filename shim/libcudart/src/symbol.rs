//! Device variables by their host shadows (`cudaMemcpyToSymbol`, `cudaGetSymbolAddress`,
//! ...), and `cudaDeviceReset`. A `__device__` or `__constant__` variable is registered with
//! `__cudaRegisterVar` under its host shadow's address; its device address comes from the
//! module (loaded on first use) by name, and is cached. One line each in the table at the
//! end (`vgpu_shim_abi::exports!`).

use crate::cu;
use crate::ffi::{from_cu, CudaError};
use crate::mem::api;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::Out;
use vgpu_shim_abi::status::CudartStatus;

type R = Result<(), CudartStatus>;

/// `cudaErrorInvalidSymbol`.
const INVALID_SYMBOL: CudaError = 13;
const INVALID_VALUE: CudaError = 1;

/// Resolved symbols: host shadow → (device address, size).
static RESOLVED: Mutex<Option<HashMap<usize, (u64, usize)>>> = Mutex::new(None);

/// The device address and size of the variable whose host shadow is `symbol`.
fn resolve(symbol: *const c_void) -> Result<(u64, usize), CudaError> {
    let key = symbol as usize;
    if let Some(v) = RESOLVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&key)
    {
        return Ok(*v);
    }
    let (handle, name, _) =
        crate::registry::with(|r| r.variables.get(&key).cloned()).ok_or(INVALID_SYMBOL)?;
    let d = api()?;
    let module = crate::launch::module_of(d, handle)?;
    let cname = std::ffi::CString::new(name).map_err(|_| INVALID_SYMBOL)?;
    let (mut addr, mut size) = (0u64, 0usize);
    match cu!(
        d,
        module_get_global(&mut addr, &mut size, module, cname.as_ptr())
    ) {
        0 => {}
        500 => return Err(INVALID_SYMBOL),
        e => return Err(from_cu(e)),
    }
    RESOLVED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key, (addr, size));
    Ok((addr, size))
}

/// The device range `[offset, offset + count)` of `symbol`, checked against its size.
fn range(symbol: *const c_void, count: usize, offset: usize) -> Result<u64, CudaError> {
    let (addr, size) = resolve(symbol)?;
    match offset.checked_add(count) {
        Some(end) if end <= size => Ok(addr + offset as u64),
        _ => Err(INVALID_VALUE),
    }
}

fn to_symbol(
    symbol: *const c_void,
    src: *const c_void,
    count: usize,
    offset: usize,
    kind: i32,
    stream: Option<usize>,
) -> R {
    // cudaMemcpyHostToDevice (1), DeviceToDevice (3) or Default (4).
    if !matches!(kind, 1 | 3 | 4) {
        return Err(CudartStatus::INVALID_MEMCPY_DIRECTION);
    }
    let dst = range(symbol, count, offset).map_err(CudartStatus)?;
    crate::mem::memcpy(dst as *mut c_void, src, count, kind, stream)
}

fn from_symbol(
    dst: *mut c_void,
    symbol: *const c_void,
    count: usize,
    offset: usize,
    kind: i32,
    stream: Option<usize>,
) -> R {
    // cudaMemcpyDeviceToHost (2), DeviceToDevice (3) or Default (4).
    if !matches!(kind, 2..=4) {
        return Err(CudartStatus::INVALID_MEMCPY_DIRECTION);
    }
    let src = range(symbol, count, offset).map_err(CudartStatus)?;
    crate::mem::memcpy(dst, src as *const c_void, count, kind, stream)
}

/// `cudaDeviceReset`: every GPU object of the process is destroyed on the device and its
/// errors cleared (`cuDevicePrimaryCtxReset`); modules load again on the next launch.
fn device_reset() -> R {
    let d = api().map_err(CudartStatus)?;
    let dev = crate::ffi::current_device();
    match cu!(d, primary_ctx_reset(dev)) {
        0 => {
            crate::launch::forget_loaded();
            *RESOLVED.lock().unwrap_or_else(|p| p.into_inner()) = None;
            Ok(())
        }
        e => Err(CudartStatus(from_cu(e))),
    }
}

exports! {
    library "libcudart.so.12", status CudartStatus, on_error crate::ffi::record;
    implemented fn cudaMemcpyToSymbol(symbol: *const c_void, src: *const c_void, count: usize, offset: usize, kind: i32) => to_symbol(symbol, src, count, offset, kind, None);
    implemented fn cudaMemcpyToSymbolAsync(symbol: *const c_void, src: *const c_void, count: usize, offset: usize, kind: i32, stream: usize) => to_symbol(symbol, src, count, offset, kind, Some(stream));
    implemented fn cudaMemcpyFromSymbol(dst: *mut c_void, symbol: *const c_void, count: usize, offset: usize, kind: i32) => from_symbol(dst, symbol, count, offset, kind, None);
    implemented fn cudaMemcpyFromSymbolAsync(dst: *mut c_void, symbol: *const c_void, count: usize, offset: usize, kind: i32, stream: usize) => from_symbol(dst, symbol, count, offset, kind, Some(stream));
    implemented fn cudaGetSymbolAddress(ptr: Out<*mut c_void>, symbol: *const c_void) => {
        if ptr.is_null() {
            return Err(CudartStatus::INVALID_VALUE);
        }
        let (addr, _) = resolve(symbol).map_err(CudartStatus)?;
        Ok(ptr.write(addr as *mut c_void)?)
    };
    implemented fn cudaGetSymbolSize(size: Out<usize>, symbol: *const c_void) => {
        if size.is_null() {
            return Err(CudartStatus::INVALID_VALUE);
        }
        Ok(size.write(resolve(symbol).map_err(CudartStatus)?.1)?)
    };
    implemented fn cudaDeviceReset() => device_reset();
}
