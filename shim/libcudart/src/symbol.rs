//! Device variables by their host shadows (`cudaMemcpyToSymbol`, `cudaGetSymbolAddress`,
//! ...), and `cudaDeviceReset`. A `__device__` or `__constant__` variable is registered with
//! `__cudaRegisterVar` under its host shadow's address; its device address comes from the
//! module (loaded on first use) by name, and is cached.

// These are C ABI entry points: the CUDA API contract makes the caller responsible for the
// pointers it passes, which are forwarded or written as that contract specifies.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use crate::cu;
use crate::ffi::{fail, from_cu, CudaError};
use crate::mem::api;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

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
) -> CudaError {
    // cudaMemcpyHostToDevice (1), DeviceToDevice (3) or Default (4).
    if !matches!(kind, 1 | 3 | 4) {
        return fail(21); // cudaErrorInvalidMemcpyDirection
    }
    match range(symbol, count, offset) {
        Ok(dst) => match stream {
            None => crate::mem::cudaMemcpy(dst as *mut c_void, src, count, kind),
            Some(s) => crate::mem::cudaMemcpyAsync(dst as *mut c_void, src, count, kind, s),
        },
        Err(e) => fail(e),
    }
}

fn from_symbol(
    dst: *mut c_void,
    symbol: *const c_void,
    count: usize,
    offset: usize,
    kind: i32,
    stream: Option<usize>,
) -> CudaError {
    // cudaMemcpyDeviceToHost (2), DeviceToDevice (3) or Default (4).
    if !matches!(kind, 2..=4) {
        return fail(21);
    }
    match range(symbol, count, offset) {
        Ok(src) => match stream {
            None => crate::mem::cudaMemcpy(dst, src as *const c_void, count, kind),
            Some(s) => crate::mem::cudaMemcpyAsync(dst, src as *const c_void, count, kind, s),
        },
        Err(e) => fail(e),
    }
}

/// `cudaMemcpyToSymbol`.
#[no_mangle]
pub extern "C" fn cudaMemcpyToSymbol(
    symbol: *const c_void,
    src: *const c_void,
    count: usize,
    offset: usize,
    kind: i32,
) -> CudaError {
    to_symbol(symbol, src, count, offset, kind, None)
}

/// `cudaMemcpyToSymbolAsync`.
#[no_mangle]
pub extern "C" fn cudaMemcpyToSymbolAsync(
    symbol: *const c_void,
    src: *const c_void,
    count: usize,
    offset: usize,
    kind: i32,
    stream: usize,
) -> CudaError {
    to_symbol(symbol, src, count, offset, kind, Some(stream))
}

/// `cudaMemcpyFromSymbol`.
#[no_mangle]
pub extern "C" fn cudaMemcpyFromSymbol(
    dst: *mut c_void,
    symbol: *const c_void,
    count: usize,
    offset: usize,
    kind: i32,
) -> CudaError {
    from_symbol(dst, symbol, count, offset, kind, None)
}

/// `cudaMemcpyFromSymbolAsync`.
#[no_mangle]
pub extern "C" fn cudaMemcpyFromSymbolAsync(
    dst: *mut c_void,
    symbol: *const c_void,
    count: usize,
    offset: usize,
    kind: i32,
    stream: usize,
) -> CudaError {
    from_symbol(dst, symbol, count, offset, kind, Some(stream))
}

/// `cudaGetSymbolAddress`.
#[no_mangle]
pub extern "C" fn cudaGetSymbolAddress(ptr: *mut *mut c_void, symbol: *const c_void) -> CudaError {
    if ptr.is_null() {
        return fail(INVALID_VALUE);
    }
    match resolve(symbol) {
        Ok((addr, _)) => {
            // SAFETY: a valid out-pointer (CUDA's contract); null refused.
            unsafe { ptr.write(addr as *mut c_void) };
            0
        }
        Err(e) => fail(e),
    }
}

/// `cudaGetSymbolSize`.
#[no_mangle]
pub extern "C" fn cudaGetSymbolSize(size: *mut usize, symbol: *const c_void) -> CudaError {
    if size.is_null() {
        return fail(INVALID_VALUE);
    }
    match resolve(symbol) {
        Ok((_, n)) => {
            // SAFETY: a valid out-pointer (CUDA's contract); null refused.
            unsafe { size.write(n) };
            0
        }
        Err(e) => fail(e),
    }
}

/// `cudaDeviceReset`: every GPU object of the process is destroyed on the device and its
/// errors cleared (`cuDevicePrimaryCtxReset`); modules load again on the next launch.
#[no_mangle]
pub extern "C" fn cudaDeviceReset() -> CudaError {
    let d = match api() {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let dev = crate::ffi::current_device();
    match cu!(d, primary_ctx_reset(dev)) {
        0 => {
            crate::launch::forget_loaded();
            *RESOLVED.lock().unwrap_or_else(|p| p.into_inner()) = None;
            0
        }
        e => fail(from_cu(e)),
    }
}

/// Exported symbol functions and `cudaDeviceReset` (all implemented).
pub const IMPLEMENTED: &[&str] = &[
    "cudaMemcpyToSymbol",
    "cudaMemcpyToSymbolAsync",
    "cudaMemcpyFromSymbol",
    "cudaMemcpyFromSymbolAsync",
    "cudaGetSymbolAddress",
    "cudaGetSymbolSize",
    "cudaDeviceReset",
];
