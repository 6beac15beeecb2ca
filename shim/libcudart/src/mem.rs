//! Memory, copies, memsets, streams, events and synchronisation of the runtime API,
//! lowered onto the driver API of `libcuda.so.1`, one line each in the table at the end
//! (`vgpu_shim_abi::exports!`). Pointers that may be device or host addresses (unified
//! addressing) stay raw: they are forwarded to the driver, never dereferenced here.

use crate::cu;
use crate::driver::{driver, Driver};
use crate::ffi::{from_cu, CudaError};
use std::ffi::c_void;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::Out;
use vgpu_shim_abi::status::CudartStatus;

type R = Result<(), CudartStatus>;

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

fn is_device(d: &Driver, p: *const c_void) -> bool {
    let mut t = 0u32;
    cu!(
        d,
        pointer_get_attribute((&mut t as *mut u32).cast(), 2, p as u64)
    ) == 0
        && t == 2
}

/// `cudaMalloc` (of 0 bytes: a null pointer).
fn malloc(p: Out<*mut c_void>, size: usize) -> R {
    if p.is_null() {
        return Err(CudartStatus::INVALID_VALUE);
    }
    if size == 0 {
        return Ok(p.write(std::ptr::null_mut())?);
    }
    drv(|d| cu!(d, mem_alloc(p.as_ptr().cast::<u64>(), size)))
}

/// `cudaFree` (of null: nothing to do).
fn free(p: *mut c_void) -> R {
    if p.is_null() {
        return Ok(());
    }
    drv(|d| cu!(d, mem_free(p as u64)))
}

/// Resolves `cudaMemcpyDefault` (4) by asking the driver which side is device memory.
fn direction(
    d: &Driver,
    dst: *const c_void,
    src: *const c_void,
    kind: i32,
) -> Result<i32, CudartStatus> {
    match kind {
        0..=3 => Ok(kind),
        4 => Ok(match (is_device(d, src), is_device(d, dst)) {
            (false, false) => 0,
            (false, true) => 1,
            (true, false) => 2,
            (true, true) => 3,
        }),
        _ => Err(CudartStatus::INVALID_MEMCPY_DIRECTION),
    }
}

/// The driver and the copy's direction, for non-null `dst` and `src`.
fn checked_direction(
    dst: *const c_void,
    src: *const c_void,
    kind: i32,
) -> Result<(&'static Driver, i32), CudartStatus> {
    if dst.is_null() || src.is_null() {
        return Err(CudartStatus::INVALID_VALUE);
    }
    let d = api().map_err(CudartStatus)?;
    Ok((d, direction(d, dst, src, kind)?))
}

/// A copy in a `cudaMemcpyKind` direction (`cudaMemcpyDefault` resolved); `stream` None:
/// complete on return.
pub(crate) fn memcpy(
    dst: *mut c_void,
    src: *const c_void,
    n: usize,
    kind: i32,
    stream: Option<usize>,
) -> R {
    if n == 0 {
        return Ok(());
    }
    let (d, kind) = checked_direction(dst, src, kind)?;
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
    status(from_cu(r))
}

fn status(e: CudaError) -> R {
    match e {
        0 => Ok(()),
        e => Err(CudartStatus(e)),
    }
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
) -> R {
    if width == 0 || height == 0 {
        return Ok(());
    }
    let (d, kind) = checked_direction(dst, src, kind)?;
    use cudarc::driver::sys::CUmemorytype::{CU_MEMORYTYPE_DEVICE, CU_MEMORYTYPE_HOST};
    // Host or device, for the source and the destination.
    let (src_host, dst_host) = match kind {
        0 => (true, true),
        1 => (true, false),
        2 => (false, true),
        _ => (false, false),
    };
    let mtype = |host| {
        if host {
            CU_MEMORYTYPE_HOST
        } else {
            CU_MEMORYTYPE_DEVICE
        }
    };
    let p = cudarc::driver::sys::CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: mtype(src_host),
        srcHost: src,
        srcDevice: src as u64,
        srcArray: std::ptr::null_mut(),
        srcPitch: spitch,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: mtype(dst_host),
        dstHost: dst,
        dstDevice: dst as u64,
        dstArray: std::ptr::null_mut(),
        dstPitch: dpitch,
        WidthInBytes: width,
        Height: height,
    };
    status(from_cu(match stream {
        None => cu!(d, memcpy_2d(&p)),
        Some(s) => cu!(d, memcpy_2d_async(&p, s)),
    }))
}

/// Checks that `dev` is a visible device (for the peer functions).
fn visible(dev: i32) -> R {
    let d = api().map_err(CudartStatus)?;
    let mut n = 0;
    match cu!(d, device_get_count(&mut n)) {
        0 if dev >= 0 && dev < n => Ok(()),
        0 => Err(CudartStatus::INVALID_DEVICE),
        e => Err(CudartStatus(from_cu(e))),
    }
}

/// `cudaMemcpyPeer(Async)`: a device-to-device copy (every visible device is one vGPU, so
/// both sides are on it).
fn memcpy_peer(
    dst: *mut c_void,
    dst_dev: i32,
    src: *const c_void,
    src_dev: i32,
    n: usize,
    stream: Option<usize>,
) -> R {
    visible(dst_dev)?;
    visible(src_dev)?;
    memcpy(dst, src, n, 3, stream)
}

/// `cudaDeviceCanAccessPeer`: no (a process sees one vGPU, and a device is not its own
/// peer).
fn can_access_peer(can: Out<i32>, dev: i32, peer: i32) -> R {
    visible(dev)?;
    visible(peer)?;
    Ok(can.write(0)?)
}

exports! {
    library "libcudart.so.12", status CudartStatus, on_error crate::ffi::record;
    implemented fn cudaMalloc(p: Out<*mut c_void>, size: usize) => malloc(p, size);
    implemented fn cudaFree(p: *mut c_void) => free(p);
    implemented fn cudaMemGetInfo(free_: Out<usize>, total: Out<usize>) => drv(|d| cu!(d, mem_get_info(free_.as_ptr(), total.as_ptr())));
    implemented fn cudaMemcpy(dst: *mut c_void, src: *const c_void, n: usize, kind: i32) => memcpy(dst, src, n, kind, None);
    implemented fn cudaMemcpyAsync(dst: *mut c_void, src: *const c_void, n: usize, kind: i32, stream: usize) => memcpy(dst, src, n, kind, Some(stream));
    implemented fn cudaMemset(p: *mut c_void, value: i32, n: usize) => drv(|d| cu!(d, memset_d8(p as u64, value as u8, n)));
    implemented fn cudaMemsetAsync(p: *mut c_void, value: i32, n: usize, stream: usize) => drv(|d| cu!(d, memset_d8_async(p as u64, value as u8, n, stream)));
    implemented fn cudaMemcpy2D(dst: *mut c_void, dpitch: usize, src: *const c_void, spitch: usize, width: usize, height: usize, kind: i32)
        => memcpy_2d(dst, dpitch, src, spitch, width, height, kind, None);
    implemented fn cudaMemcpy2DAsync(dst: *mut c_void, dpitch: usize, src: *const c_void, spitch: usize, width: usize, height: usize, kind: i32, stream: usize)
        => memcpy_2d(dst, dpitch, src, spitch, width, height, kind, Some(stream));
    implemented fn cudaMemset2D(p: *mut c_void, pitch: usize, value: i32, width: usize, height: usize) => drv(|d| cu!(d, memset_d2d8(p as u64, pitch, value as u8, width, height)));
    implemented fn cudaMemset2DAsync(p: *mut c_void, pitch: usize, value: i32, width: usize, height: usize, stream: usize)
        => drv(|d| cu!(d, memset_d2d8_async(p as u64, pitch, value as u8, width, height, stream)));
    implemented fn cudaMemcpyPeer(dst: *mut c_void, dst_dev: i32, src: *const c_void, src_dev: i32, n: usize) => memcpy_peer(dst, dst_dev, src, src_dev, n, None);
    implemented fn cudaMemcpyPeerAsync(dst: *mut c_void, dst_dev: i32, src: *const c_void, src_dev: i32, n: usize, stream: usize) => memcpy_peer(dst, dst_dev, src, src_dev, n, Some(stream));
    implemented fn cudaDeviceCanAccessPeer(can: Out<i32>, dev: i32, peer: i32) => can_access_peer(can, dev, peer);
    /// cudaErrorInvalidDevice, as for any device that is not a peer of the current one
    /// (there is no other device).
    implemented fn cudaDeviceEnablePeerAccess(peer: i32, _flags: u32) => { visible(peer)?; Err(CudartStatus::INVALID_DEVICE) };
    /// cudaErrorPeerAccessNotEnabled for a visible device.
    implemented fn cudaDeviceDisablePeerAccess(peer: i32) => { visible(peer)?; Err(CudartStatus::PEER_ACCESS_NOT_ENABLED) };
    implemented fn cudaDeviceSynchronize() => drv(|d| cu!(d, ctx_synchronize()));
    implemented fn cudaStreamCreate(s: Out<usize>) => drv(|d| cu!(d, stream_create(s.as_ptr(), 0)));
    /// `cudaStreamNonBlocking` = 1, as the driver's.
    implemented fn cudaStreamCreateWithFlags(s: Out<usize>, flags: u32) => drv(|d| cu!(d, stream_create(s.as_ptr(), flags)));
    implemented fn cudaStreamDestroy(s: usize) => drv(|d| cu!(d, stream_destroy(s)));
    implemented fn cudaStreamSynchronize(s: usize) => drv(|d| cu!(d, stream_synchronize(s)));
    implemented fn cudaStreamQuery(s: usize) => drv(|d| cu!(d, stream_query(s)));
    implemented fn cudaStreamWaitEvent(s: usize, e: usize, flags: u32) => drv(|d| cu!(d, stream_wait_event(s, e, flags)));
    implemented fn cudaEventCreate(e: Out<usize>) => drv(|d| cu!(d, event_create(e.as_ptr(), 0)));
    /// The flags are the driver's.
    implemented fn cudaEventCreateWithFlags(e: Out<usize>, flags: u32) => drv(|d| cu!(d, event_create(e.as_ptr(), flags)));
    implemented fn cudaEventDestroy(e: usize) => drv(|d| cu!(d, event_destroy(e)));
    implemented fn cudaEventRecord(e: usize, s: usize) => drv(|d| cu!(d, event_record(e, s)));
    implemented fn cudaEventSynchronize(e: usize) => drv(|d| cu!(d, event_synchronize(e)));
    implemented fn cudaEventQuery(e: usize) => drv(|d| cu!(d, event_query(e)));
    implemented fn cudaEventElapsedTime(ms: Out<f32>, start: usize, end: usize) => drv(|d| cu!(d, event_elapsed(ms.as_ptr(), start, end)));
    /// Pinned memory from a DMA window.
    implemented fn cudaMallocHost(p: Out<*mut c_void>, size: usize) => drv(|d| cu!(d, mem_alloc_host(p.as_ptr(), size)));
    implemented fn cudaHostAlloc(p: Out<*mut c_void>, size: usize, _flags: u32) => drv(|d| cu!(d, mem_alloc_host(p.as_ptr(), size)));
    /// The runtime's `cudaHostFn_t` is the driver's `CUhostFn`.
    implemented fn cudaLaunchHostFunc(s: usize, f: Option<unsafe extern "C" fn(*mut c_void)>, user: *mut c_void) => drv(|d| cu!(d, launch_host_func(s, f, user)));
    /// The runtime's `cudaStreamCallback_t` has the driver's layout (stream, error, data).
    implemented fn cudaStreamAddCallback(s: usize, f: Option<unsafe extern "C" fn(usize, u32, *mut c_void)>, user: *mut c_void, flags: u32) => drv(|d| cu!(d, stream_add_callback(s, f, user, flags)));
    /// The driver's flags; only `MAP_SHARED` mappings of a file (libcuda's `hostreg.rs`).
    implemented fn cudaHostRegister(p: *mut c_void, size: usize, flags: u32) => drv(|d| cu!(d, mem_host_register(p, size, flags)));
    implemented fn cudaHostUnregister(p: *mut c_void) => drv(|d| cu!(d, mem_host_unregister(p)));
    /// Of null: nothing to do.
    implemented fn cudaFreeHost(p: *mut c_void) => if p.is_null() { Ok(()) } else { drv(|d| cu!(d, mem_free_host(p))) };
}
