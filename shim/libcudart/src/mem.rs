//! Memory, copies, memsets, streams, events and synchronisation of the runtime API,
//! lowered onto the driver API of `libcuda.so.1`.

// These are C ABI entry points: the CUDA API contract makes the caller responsible for the
// pointers it passes, which are forwarded or written as that contract specifies.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use crate::cu;
use crate::driver::{driver, Driver};
use crate::ffi::{fail, from_cu, CudaError};
use std::ffi::c_void;
use vgpu_shim_abi::status::CudartStatus;

const SUCCESS: CudaError = 0;
const INVALID_VALUE: CudaError = 1;
/// `cudaErrorInvalidMemcpyDirection`.
const INVALID_MEMCPY_DIRECTION: CudaError = 21;

/// The initialised driver.
pub(crate) fn api() -> Result<&'static Driver, CudaError> {
    let d = driver().map_err(|_| 35u32)?;
    match cu!(d, init(0)) {
        0 => Ok(d),
        e => Err(from_cu(e)),
    }
}

/// Runs a driver call; its failure as a runtime error (the exports' tables record it as the
/// last error).
pub(crate) fn drv(f: impl FnOnce(&Driver) -> u32) -> Result<(), CudartStatus> {
    let d = api().map_err(CudartStatus)?;
    match from_cu(f(d)) {
        0 => Ok(()),
        e => Err(CudartStatus(e)),
    }
}

/// Runs a driver call and records a failure as the last error.
pub(crate) fn call_driver(f: impl FnOnce(&Driver) -> u32) -> CudaError {
    match api() {
        Ok(d) => fail(from_cu(f(d))),
        Err(e) => fail(e),
    }
}

fn is_device(d: &Driver, p: *const c_void) -> bool {
    let mut t = 0u32;
    cu!(
        d,
        pointer_get_attribute((&mut t as *mut u32).cast(), 2, p as u64)
    ) == 0
        && t == 2
}

/// `cudaMalloc`.
#[no_mangle]
pub extern "C" fn cudaMalloc(p: *mut *mut c_void, size: usize) -> CudaError {
    if p.is_null() {
        return fail(INVALID_VALUE);
    }
    if size == 0 {
        // SAFETY: non-null out-pointer from the caller (CUDA's contract).
        unsafe { p.write(std::ptr::null_mut()) };
        return SUCCESS;
    }
    call_driver(|d| cu!(d, mem_alloc(p.cast::<u64>(), size)))
}

/// `cudaFree` (of null: nothing to do).
#[no_mangle]
pub extern "C" fn cudaFree(p: *mut c_void) -> CudaError {
    if p.is_null() {
        return SUCCESS;
    }
    call_driver(|d| cu!(d, mem_free(p as u64)))
}

/// `cudaMemGetInfo`.
#[no_mangle]
pub extern "C" fn cudaMemGetInfo(free: *mut usize, total: *mut usize) -> CudaError {
    call_driver(|d| cu!(d, mem_get_info(free, total)))
}

/// Resolves `cudaMemcpyDefault` (4) by asking the driver which side is device memory.
fn direction(
    d: &Driver,
    dst: *const c_void,
    src: *const c_void,
    kind: i32,
) -> Result<i32, CudaError> {
    match kind {
        0..=3 => Ok(kind),
        4 => Ok(match (is_device(d, src), is_device(d, dst)) {
            (false, false) => 0,
            (false, true) => 1,
            (true, false) => 2,
            (true, true) => 3,
        }),
        _ => Err(INVALID_MEMCPY_DIRECTION),
    }
}

/// The driver and the copy's direction, for non-null `dst` and `src`.
fn checked_direction(
    dst: *const c_void,
    src: *const c_void,
    kind: i32,
) -> Result<(&'static Driver, i32), CudaError> {
    if dst.is_null() || src.is_null() {
        return Err(INVALID_VALUE);
    }
    let d = api()?;
    Ok((d, direction(d, dst, src, kind)?))
}

fn memcpy(
    dst: *mut c_void,
    src: *const c_void,
    n: usize,
    kind: i32,
    stream: Option<usize>,
) -> CudaError {
    if n == 0 {
        return SUCCESS;
    }
    let (d, kind) = match checked_direction(dst, src, kind) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let r = match (kind, stream) {
        (0, _) => {
            // SAFETY: host to host: both buffers hold `n` bytes (CUDA's contract); memmove
            // semantics as cudaMemcpy's.
            unsafe { std::ptr::copy(src.cast::<u8>(), dst.cast::<u8>(), n) };
            0
        }
        (1, None) => cu!(d, memcpy_htod(dst as u64, src, n)),
        (2, None) => cu!(d, memcpy_dtoh(dst, src as u64, n)),
        (3, None) => cu!(d, memcpy_dtod(dst as u64, src as u64, n)),
        (1, Some(s)) => cu!(d, memcpy_htod_async(dst as u64, src, n, s)),
        (2, Some(s)) => cu!(d, memcpy_dtoh_async(dst, src as u64, n, s)),
        (_, Some(s)) => cu!(d, memcpy_dtod_async(dst as u64, src as u64, n, s)),
        (_, None) => INVALID_MEMCPY_DIRECTION,
    };
    fail(from_cu(r))
}

/// `cudaMemcpy`.
#[no_mangle]
pub extern "C" fn cudaMemcpy(
    dst: *mut c_void,
    src: *const c_void,
    n: usize,
    kind: i32,
) -> CudaError {
    memcpy(dst, src, n, kind, None)
}

/// `cudaMemcpyAsync`.
#[no_mangle]
pub extern "C" fn cudaMemcpyAsync(
    dst: *mut c_void,
    src: *const c_void,
    n: usize,
    kind: i32,
    stream: usize,
) -> CudaError {
    memcpy(dst, src, n, kind, Some(stream))
}

/// `cudaMemset`.
#[no_mangle]
pub extern "C" fn cudaMemset(p: *mut c_void, value: i32, n: usize) -> CudaError {
    call_driver(|d| cu!(d, memset_d8(p as u64, value as u8, n)))
}

/// `cudaMemsetAsync`.
#[no_mangle]
pub extern "C" fn cudaMemsetAsync(
    p: *mut c_void,
    value: i32,
    n: usize,
    stream: usize,
) -> CudaError {
    call_driver(|d| cu!(d, memset_d8_async(p as u64, value as u8, n, stream)))
}

#[allow(clippy::too_many_arguments)] // cudaMemcpy2D's parameters
fn memcpy_2d(
    dst: *mut c_void,
    dpitch: usize,
    src: *const c_void,
    spitch: usize,
    width: usize,
    height: usize,
    kind: i32,
    stream: Option<usize>,
) -> CudaError {
    if width == 0 || height == 0 {
        return SUCCESS;
    }
    let (d, kind) = match checked_direction(dst, src, kind) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    // CUmemorytype: 1 host, 2 device.
    let (src_type, dst_type) = match kind {
        0 => (1, 1),
        1 => (1, 2),
        2 => (2, 1),
        _ => (2, 2),
    };
    use cudarc::driver::sys::CUmemorytype::{CU_MEMORYTYPE_DEVICE, CU_MEMORYTYPE_HOST};
    let mtype = |t| {
        if t == 1 {
            CU_MEMORYTYPE_HOST
        } else {
            CU_MEMORYTYPE_DEVICE
        }
    };
    let p = cudarc::driver::sys::CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: mtype(src_type),
        srcHost: src,
        srcDevice: src as u64,
        srcArray: std::ptr::null_mut(),
        srcPitch: spitch,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: mtype(dst_type),
        dstHost: dst,
        dstDevice: dst as u64,
        dstArray: std::ptr::null_mut(),
        dstPitch: dpitch,
        WidthInBytes: width,
        Height: height,
    };
    fail(from_cu(match stream {
        None => cu!(d, memcpy_2d(&p)),
        Some(s) => cu!(d, memcpy_2d_async(&p, s)),
    }))
}

/// `cudaMemcpy2D`.
#[no_mangle]
pub extern "C" fn cudaMemcpy2D(
    dst: *mut c_void,
    dpitch: usize,
    src: *const c_void,
    spitch: usize,
    width: usize,
    height: usize,
    kind: i32,
) -> CudaError {
    memcpy_2d(dst, dpitch, src, spitch, width, height, kind, None)
}

/// `cudaMemcpy2DAsync`.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // the runtime API
pub extern "C" fn cudaMemcpy2DAsync(
    dst: *mut c_void,
    dpitch: usize,
    src: *const c_void,
    spitch: usize,
    width: usize,
    height: usize,
    kind: i32,
    stream: usize,
) -> CudaError {
    memcpy_2d(dst, dpitch, src, spitch, width, height, kind, Some(stream))
}

/// `cudaMemset2D`.
#[no_mangle]
pub extern "C" fn cudaMemset2D(
    p: *mut c_void,
    pitch: usize,
    value: i32,
    width: usize,
    height: usize,
) -> CudaError {
    call_driver(|d| cu!(d, memset_d2d8(p as u64, pitch, value as u8, width, height)))
}

/// `cudaMemset2DAsync`.
#[no_mangle]
pub extern "C" fn cudaMemset2DAsync(
    p: *mut c_void,
    pitch: usize,
    value: i32,
    width: usize,
    height: usize,
    stream: usize,
) -> CudaError {
    call_driver(|d| {
        cu!(
            d,
            memset_d2d8_async(p as u64, pitch, value as u8, width, height, stream)
        )
    })
}

/// Checks that `dev` is a visible device (for the peer functions).
fn visible(dev: i32) -> Result<(), CudaError> {
    let d = api()?;
    let mut n = 0;
    match cu!(d, device_get_count(&mut n)) {
        0 if dev >= 0 && dev < n => Ok(()),
        0 => Err(101), // cudaErrorInvalidDevice
        e => Err(from_cu(e)),
    }
}

/// `cudaMemcpyPeerAsync`: a device-to-device copy (every visible device is one vGPU, so
/// both sides are on it).
#[no_mangle]
pub extern "C" fn cudaMemcpyPeerAsync(
    dst: *mut c_void,
    dst_dev: i32,
    src: *const c_void,
    src_dev: i32,
    n: usize,
    stream: usize,
) -> CudaError {
    if let Err(e) = visible(dst_dev).and_then(|_| visible(src_dev)) {
        return fail(e);
    }
    memcpy(dst, src, n, 3, Some(stream))
}

/// `cudaMemcpyPeer`.
#[no_mangle]
pub extern "C" fn cudaMemcpyPeer(
    dst: *mut c_void,
    dst_dev: i32,
    src: *const c_void,
    src_dev: i32,
    n: usize,
) -> CudaError {
    if let Err(e) = visible(dst_dev).and_then(|_| visible(src_dev)) {
        return fail(e);
    }
    memcpy(dst, src, n, 3, None)
}

/// `cudaDeviceCanAccessPeer`: no (a process sees one vGPU, and a device is not its own
/// peer).
#[no_mangle]
pub extern "C" fn cudaDeviceCanAccessPeer(can: *mut i32, dev: i32, peer: i32) -> CudaError {
    if let Err(e) = visible(dev).and_then(|_| visible(peer)) {
        return fail(e);
    }
    if can.is_null() {
        return fail(INVALID_VALUE);
    }
    // SAFETY: a valid out-pointer (CUDA's contract); null refused.
    unsafe { can.write(0) };
    SUCCESS
}

/// `cudaDeviceEnablePeerAccess`: cudaErrorInvalidDevice, as for any device that is not a
/// peer of the current one (there is no other device).
#[no_mangle]
pub extern "C" fn cudaDeviceEnablePeerAccess(peer: i32, _flags: u32) -> CudaError {
    fail(visible(peer).err().unwrap_or(101))
}

/// `cudaDeviceDisablePeerAccess`: cudaErrorPeerAccessNotEnabled for a visible device.
#[no_mangle]
pub extern "C" fn cudaDeviceDisablePeerAccess(peer: i32) -> CudaError {
    fail(visible(peer).err().unwrap_or(705))
}

/// `cudaDeviceSynchronize`.
#[no_mangle]
pub extern "C" fn cudaDeviceSynchronize() -> CudaError {
    call_driver(|d| cu!(d, ctx_synchronize()))
}

/// `cudaStreamCreate`.
#[no_mangle]
pub extern "C" fn cudaStreamCreate(s: *mut usize) -> CudaError {
    call_driver(|d| cu!(d, stream_create(s, 0)))
}

/// `cudaStreamCreateWithFlags` (`cudaStreamNonBlocking` = 1, as the driver's).
#[no_mangle]
pub extern "C" fn cudaStreamCreateWithFlags(s: *mut usize, flags: u32) -> CudaError {
    call_driver(|d| cu!(d, stream_create(s, flags)))
}

/// `cudaStreamDestroy`.
#[no_mangle]
pub extern "C" fn cudaStreamDestroy(s: usize) -> CudaError {
    call_driver(|d| cu!(d, stream_destroy(s)))
}

/// `cudaStreamSynchronize`.
#[no_mangle]
pub extern "C" fn cudaStreamSynchronize(s: usize) -> CudaError {
    call_driver(|d| cu!(d, stream_synchronize(s)))
}

/// `cudaStreamQuery`.
#[no_mangle]
pub extern "C" fn cudaStreamQuery(s: usize) -> CudaError {
    call_driver(|d| cu!(d, stream_query(s)))
}

/// `cudaStreamWaitEvent`.
#[no_mangle]
pub extern "C" fn cudaStreamWaitEvent(s: usize, e: usize, flags: u32) -> CudaError {
    call_driver(|d| cu!(d, stream_wait_event(s, e, flags)))
}

/// `cudaEventCreate`.
#[no_mangle]
pub extern "C" fn cudaEventCreate(e: *mut usize) -> CudaError {
    call_driver(|d| cu!(d, event_create(e, 0)))
}

/// `cudaEventCreateWithFlags` (the flags are the driver's).
#[no_mangle]
pub extern "C" fn cudaEventCreateWithFlags(e: *mut usize, flags: u32) -> CudaError {
    call_driver(|d| cu!(d, event_create(e, flags)))
}

/// `cudaEventDestroy`.
#[no_mangle]
pub extern "C" fn cudaEventDestroy(e: usize) -> CudaError {
    call_driver(|d| cu!(d, event_destroy(e)))
}

/// `cudaEventRecord`.
#[no_mangle]
pub extern "C" fn cudaEventRecord(e: usize, s: usize) -> CudaError {
    call_driver(|d| cu!(d, event_record(e, s)))
}

/// `cudaEventSynchronize`.
#[no_mangle]
pub extern "C" fn cudaEventSynchronize(e: usize) -> CudaError {
    call_driver(|d| cu!(d, event_synchronize(e)))
}

/// `cudaEventQuery`.
#[no_mangle]
pub extern "C" fn cudaEventQuery(e: usize) -> CudaError {
    call_driver(|d| cu!(d, event_query(e)))
}

/// `cudaEventElapsedTime`.
#[no_mangle]
pub extern "C" fn cudaEventElapsedTime(ms: *mut f32, start: usize, end: usize) -> CudaError {
    call_driver(|d| cu!(d, event_elapsed(ms, start, end)))
}

/// `cudaMallocHost`: pinned memory from a DMA window.
#[no_mangle]
pub extern "C" fn cudaMallocHost(p: *mut *mut c_void, size: usize) -> CudaError {
    call_driver(|d| cu!(d, mem_alloc_host(p, size)))
}

/// `cudaHostAlloc`.
#[no_mangle]
pub extern "C" fn cudaHostAlloc(p: *mut *mut c_void, size: usize, _flags: u32) -> CudaError {
    call_driver(|d| cu!(d, mem_alloc_host(p, size)))
}

/// `cudaFreeHost`.
#[no_mangle]
pub extern "C" fn cudaFreeHost(p: *mut c_void) -> CudaError {
    if p.is_null() {
        return SUCCESS;
    }
    call_driver(|d| cu!(d, mem_free_host(p)))
}

/// Exported memory and stream functions that are implemented.
pub const IMPLEMENTED: &[&str] = &[
    "cudaMalloc",
    "cudaFree",
    "cudaMemGetInfo",
    "cudaMemcpy",
    "cudaMemcpyAsync",
    "cudaMemset",
    "cudaMemsetAsync",
    "cudaDeviceSynchronize",
    "cudaStreamCreate",
    "cudaStreamCreateWithFlags",
    "cudaStreamDestroy",
    "cudaStreamSynchronize",
    "cudaStreamQuery",
    "cudaStreamWaitEvent",
    "cudaEventCreate",
    "cudaEventCreateWithFlags",
    "cudaEventDestroy",
    "cudaEventRecord",
    "cudaEventSynchronize",
    "cudaEventQuery",
    "cudaEventElapsedTime",
    "cudaMallocHost",
    "cudaHostAlloc",
    "cudaFreeHost",
    "cudaMemcpy2D",
    "cudaMemcpy2DAsync",
    "cudaMemset2D",
    "cudaMemset2DAsync",
    "cudaMemcpyPeer",
    "cudaMemcpyPeerAsync",
    "cudaDeviceCanAccessPeer",
    "cudaDeviceEnablePeerAccess",
    "cudaDeviceDisablePeerAccess",
];
