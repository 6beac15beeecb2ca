//! Memory, copies, memsets, streams, events and synchronisation of the runtime API,
//! lowered onto the driver API of `libcuda.so.1`.

// These are C ABI entry points: the CUDA API contract makes the caller responsible for the
// pointers it passes, which are forwarded or written as that contract specifies.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use crate::cu;
use crate::driver::{driver, Driver};
use crate::ffi::{fail, from_cu, CudaError};
use std::ffi::c_void;

const SUCCESS: CudaError = 0;
const INVALID_VALUE: CudaError = 1;
/// `cudaErrorInvalidMemcpyDirection`.
const INVALID_MEMCPY_DIRECTION: CudaError = 21;

/// The initialised driver.
fn api() -> Result<&'static Driver, CudaError> {
    let d = driver().map_err(|_| 35u32)?;
    match cu!(d, init(0)) {
        0 => Ok(d),
        e => Err(from_cu(e)),
    }
}

/// Runs a driver call and records a failure as the last error.
fn run(f: impl FnOnce(&Driver) -> u32) -> CudaError {
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
    run(|d| cu!(d, mem_alloc(p.cast::<u64>(), size)))
}

/// `cudaFree` (of null: nothing to do).
#[no_mangle]
pub extern "C" fn cudaFree(p: *mut c_void) -> CudaError {
    if p.is_null() {
        return SUCCESS;
    }
    run(|d| cu!(d, mem_free(p as u64)))
}

/// `cudaMemGetInfo`.
#[no_mangle]
pub extern "C" fn cudaMemGetInfo(free: *mut usize, total: *mut usize) -> CudaError {
    run(|d| cu!(d, mem_get_info(free, total)))
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
    if dst.is_null() || src.is_null() {
        return fail(INVALID_VALUE);
    }
    let d = match api() {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let kind = match direction(d, dst, src, kind) {
        Ok(k) => k,
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
    run(|d| cu!(d, memset_d8(p as u64, value as u8, n)))
}

/// `cudaMemsetAsync`.
#[no_mangle]
pub extern "C" fn cudaMemsetAsync(
    p: *mut c_void,
    value: i32,
    n: usize,
    stream: usize,
) -> CudaError {
    run(|d| cu!(d, memset_d8_async(p as u64, value as u8, n, stream)))
}

/// `cudaDeviceSynchronize`.
#[no_mangle]
pub extern "C" fn cudaDeviceSynchronize() -> CudaError {
    run(|d| cu!(d, ctx_synchronize()))
}

/// `cudaStreamCreate`.
#[no_mangle]
pub extern "C" fn cudaStreamCreate(s: *mut usize) -> CudaError {
    run(|d| cu!(d, stream_create(s, 0)))
}

/// `cudaStreamCreateWithFlags` (`cudaStreamNonBlocking` = 1, as the driver's).
#[no_mangle]
pub extern "C" fn cudaStreamCreateWithFlags(s: *mut usize, flags: u32) -> CudaError {
    run(|d| cu!(d, stream_create(s, flags)))
}

/// `cudaStreamDestroy`.
#[no_mangle]
pub extern "C" fn cudaStreamDestroy(s: usize) -> CudaError {
    run(|d| cu!(d, stream_destroy(s)))
}

/// `cudaStreamSynchronize`.
#[no_mangle]
pub extern "C" fn cudaStreamSynchronize(s: usize) -> CudaError {
    run(|d| cu!(d, stream_synchronize(s)))
}

/// `cudaStreamQuery`.
#[no_mangle]
pub extern "C" fn cudaStreamQuery(s: usize) -> CudaError {
    run(|d| cu!(d, stream_query(s)))
}

/// `cudaStreamWaitEvent`.
#[no_mangle]
pub extern "C" fn cudaStreamWaitEvent(s: usize, e: usize, flags: u32) -> CudaError {
    run(|d| cu!(d, stream_wait_event(s, e, flags)))
}

/// `cudaEventCreate`.
#[no_mangle]
pub extern "C" fn cudaEventCreate(e: *mut usize) -> CudaError {
    run(|d| cu!(d, event_create(e, 0)))
}

/// `cudaEventCreateWithFlags` (the flags are the driver's).
#[no_mangle]
pub extern "C" fn cudaEventCreateWithFlags(e: *mut usize, flags: u32) -> CudaError {
    run(|d| cu!(d, event_create(e, flags)))
}

/// `cudaEventDestroy`.
#[no_mangle]
pub extern "C" fn cudaEventDestroy(e: usize) -> CudaError {
    run(|d| cu!(d, event_destroy(e)))
}

/// `cudaEventRecord`.
#[no_mangle]
pub extern "C" fn cudaEventRecord(e: usize, s: usize) -> CudaError {
    run(|d| cu!(d, event_record(e, s)))
}

/// `cudaEventSynchronize`.
#[no_mangle]
pub extern "C" fn cudaEventSynchronize(e: usize) -> CudaError {
    run(|d| cu!(d, event_synchronize(e)))
}

/// `cudaEventQuery`.
#[no_mangle]
pub extern "C" fn cudaEventQuery(e: usize) -> CudaError {
    run(|d| cu!(d, event_query(e)))
}

/// `cudaEventElapsedTime`.
#[no_mangle]
pub extern "C" fn cudaEventElapsedTime(ms: *mut f32, start: usize, end: usize) -> CudaError {
    run(|d| cu!(d, event_elapsed(ms, start, end)))
}

/// `cudaMallocHost`: pinned memory from a DMA window.
#[no_mangle]
pub extern "C" fn cudaMallocHost(p: *mut *mut c_void, size: usize) -> CudaError {
    run(|d| cu!(d, mem_alloc_host(p, size)))
}

/// `cudaHostAlloc`.
#[no_mangle]
pub extern "C" fn cudaHostAlloc(p: *mut *mut c_void, size: usize, _flags: u32) -> CudaError {
    run(|d| cu!(d, mem_alloc_host(p, size)))
}

/// `cudaFreeHost`.
#[no_mangle]
pub extern "C" fn cudaFreeHost(p: *mut c_void) -> CudaError {
    if p.is_null() {
        return SUCCESS;
    }
    run(|d| cu!(d, mem_free_host(p)))
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
    "cudaLaunchKernel",
    "__cudaGetKernel",
    "__cudaLaunchKernel",
    "__cudaLaunchKernel_ptsz",
];

/// Kernels launched so far: host stub → driver function.
static LAUNCHABLE: std::sync::Mutex<Option<std::collections::HashMap<usize, usize>>> =
    std::sync::Mutex::new(None);
/// Modules loaded so far: fatbin handle → driver module.
static MODULES: std::sync::Mutex<Option<std::collections::HashMap<usize, usize>>> =
    std::sync::Mutex::new(None);

/// The driver function of a registered host stub, loading its fatbin on first use.
fn function_of(d: &Driver, host_fun: usize) -> Result<usize, CudaError> {
    if let Some(f) = LAUNCHABLE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(Default::default)
        .get(&host_fun)
    {
        return Ok(*f);
    }
    let (handle, name) =
        crate::registry::with(|r| r.functions.get(&host_fun).cloned()).ok_or(98u32)?; // cudaErrorInvalidDeviceFunction
    let wrapper =
        crate::registry::with(|r| r.fatbins.get(&handle).map(|f| f.wrapper)).ok_or(98u32)?;
    let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    let modules = modules.get_or_insert_with(Default::default);
    let module = match modules.get(&handle) {
        Some(m) => *m,
        None => {
            // __fatBinC_Wrapper_t { int magic; int version; const void* data; void* filename }.
            // SAFETY: the compiler registered a pointer to such a wrapper.
            let (magic, data) = unsafe {
                (
                    *(wrapper as *const u32),
                    *((wrapper + 8) as *const *const c_void),
                )
            };
            if magic != 0x466243b1 || data.is_null() {
                return Err(200); // cudaErrorInvalidKernelImage
            }
            let mut m = 0usize;
            match cu!(d, module_load_data(&mut m, data)) {
                0 => {}
                e => return Err(from_cu(e)),
            }
            modules.insert(handle, m);
            m
        }
    };
    let cname = std::ffi::CString::new(name).map_err(|_| 98u32)?;
    let mut f = 0usize;
    match cu!(d, module_get_function(&mut f, module, cname.as_ptr())) {
        0 => {}
        e => return Err(from_cu(e)),
    }
    LAUNCHABLE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(Default::default)
        .insert(host_fun, f);
    Ok(f)
}

/// `__cudaGetKernel` (the CUDA 13 launch ABI: each host stub asks once for its kernel's
/// handle). The handle is the host stub's own address; nothing is loaded until the launch.
#[no_mangle]
pub extern "C" fn __cudaGetKernel(kernel: *mut *const c_void, func: *const c_void) -> CudaError {
    if kernel.is_null() {
        return fail(1); // cudaErrorInvalidValue
    }
    if !crate::registry::with(|r| r.functions.contains_key(&(func as usize))) {
        return fail(98); // cudaErrorInvalidDeviceFunction
    }
    // SAFETY: the host stub passes the address of its static handle; null refused above.
    unsafe { kernel.write(func) };
    0
}

/// `__cudaLaunchKernel` (the CUDA 13 launch ABI: the host stub pops the configuration and
/// launches the handle `__cudaGetKernel` gave it).
#[no_mangle]
pub extern "C" fn __cudaLaunchKernel(
    kernel: *const c_void,
    grid: crate::ffi::Dim3,
    block: crate::ffi::Dim3,
    args: *const *const c_void,
    shared: usize,
    stream: usize,
) -> CudaError {
    cudaLaunchKernel(kernel, grid, block, args, shared, stream)
}

/// `__cudaLaunchKernel_ptsz`: the same under per-thread default-stream compilation. The
/// per-thread default stream is not distinguished from the legacy one: the handle 0 and
/// 2 (`cudaStreamPerThread`) both launch on the NULL stream.
#[no_mangle]
pub extern "C" fn __cudaLaunchKernel_ptsz(
    kernel: *const c_void,
    grid: crate::ffi::Dim3,
    block: crate::ffi::Dim3,
    args: *const *const c_void,
    shared: usize,
    stream: usize,
) -> CudaError {
    cudaLaunchKernel(kernel, grid, block, args, shared, stream)
}

/// `cudaLaunchKernel` (the CUDA 12 launch ABI: `__cudaPopCallConfiguration` in the host
/// stub, then this).
#[no_mangle]
pub extern "C" fn cudaLaunchKernel(
    func: *const c_void,
    grid: crate::ffi::Dim3,
    block: crate::ffi::Dim3,
    args: *const *const c_void,
    shared: usize,
    stream: usize,
) -> CudaError {
    let d = match api() {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let f = match function_of(d, func as usize) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let (g, b) = (grid.dims(), block.dims());
    let shared = u32::try_from(shared).unwrap_or(u32::MAX);
    fail(from_cu(cu!(
        d,
        launch_kernel(
            f,
            g[0],
            g[1],
            g[2],
            b[0],
            b[1],
            b[2],
            shared,
            stream,
            args,
            std::ptr::null()
        )
    )))
}
