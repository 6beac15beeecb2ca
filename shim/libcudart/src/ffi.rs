//! The exported runtime API. Pointer writes of the C ABI are confined to [`put`].

use crate::driver::driver;
use crate::registry::{self, Fatbin, LaunchConfig, CONFIGS};
use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::Once;
use vgpu_shim_abi::status::CudartStatus;

/// `cudaError_t`.
pub type CudaError = u32;
const SUCCESS: CudaError = 0;
const INVALID_VALUE: CudaError = 1;
const NO_DEVICE: CudaError = 100;
const INVALID_DEVICE: CudaError = 101;
const NOT_SUPPORTED: CudaError = 801;
const UNKNOWN: CudaError = 999;
/// `cudaErrorInsufficientDriver`: libcuda.so.1 could not be loaded.
const INSUFFICIENT_DRIVER: CudaError = 35;

thread_local! {
    static LAST_ERROR: Cell<CudaError> = const { Cell::new(SUCCESS) };
    static CURRENT_DEVICE: Cell<i32> = const { Cell::new(0) };
}

/// Records a failure as the thread's last error and returns it.
pub(crate) fn fail(e: CudaError) -> CudaError {
    if e != SUCCESS {
        LAST_ERROR.with(|l| l.set(e));
    }
    e
}

/// Driver results mapped to runtime errors (the numbers coincide for these).
pub(crate) fn from_cu(e: u32) -> CudaError {
    match e {
        0 | 1 | 2 | 3 | 46 | 98 | 100 | 101 | 200 | 209 | 400 | 500 | 600 | 700 | 705 | 719
        | 801 | 900 | 901 | 903 | 908 | 909 | 910 => e,
        _ => UNKNOWN,
    }
}

fn put<T>(p: *mut T, v: T) -> CudaError {
    if p.is_null() {
        return fail(INVALID_VALUE);
    }
    // SAFETY: the caller passes a valid out-pointer for T (CUDA's contract); null refused.
    unsafe { p.write_unaligned(v) };
    SUCCESS
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ =
            env_logger::Builder::from_env(env_logger::Env::default().filter_or("VGPU_LOG", "warn"))
                .try_init();
    });
}

/// Initialises the driver; the number of visible devices.
fn device_count() -> Result<i32, CudaError> {
    init_logging();
    let d = driver().map_err(|e| {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| log::warn!("vgpu: {e}"));
        INSUFFICIENT_DRIVER
    })?;
    match d.init() {
        0 => d.device_count().map_err(from_cu),
        e => Err(from_cu(e)),
    }
}

/// `cudaGetDeviceCount`: 0 devices and cudaErrorNoDevice when there is no vGPU.
#[no_mangle]
pub extern "C" fn cudaGetDeviceCount(count: *mut i32) -> CudaError {
    match device_count() {
        Ok(n) if n > 0 => put(count, n),
        Ok(_) => {
            let _ = put(count, 0);
            fail(NO_DEVICE)
        }
        Err(e) => {
            let _ = put(count, 0);
            fail(e)
        }
    }
}

fn check_device(dev: i32) -> Result<(), CudaError> {
    let n = device_count()?;
    if n == 0 {
        return Err(NO_DEVICE);
    }
    if dev < 0 || dev >= n {
        return Err(INVALID_DEVICE);
    }
    Ok(())
}

/// The calling thread's current device.
pub(crate) fn current_device() -> i32 {
    CURRENT_DEVICE.with(|c| c.get())
}

/// `cudaGetDevice`.
#[no_mangle]
pub extern "C" fn cudaGetDevice(dev: *mut i32) -> CudaError {
    match check_device(0) {
        Ok(()) => put(dev, CURRENT_DEVICE.with(|c| c.get())),
        Err(e) => fail(e),
    }
}

/// `cudaSetDevice`.
#[no_mangle]
pub extern "C" fn cudaSetDevice(dev: i32) -> CudaError {
    match check_device(dev) {
        Ok(()) => {
            CURRENT_DEVICE.with(|c| c.set(dev));
            SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Flags of `cudaSetDeviceFlags`: the schedule bits (0..=4), cudaDeviceMapHost (8),
/// cudaDeviceLmemResizeToMax (16) and cudaDeviceSyncMemops (128).
const DEVICE_FLAGS: u32 = 0x07 | 0x08 | 0x10 | 0x80;

/// `cudaSetDeviceFlags`: the flags describe how the host waits and what host memory may
/// be mapped; waits here are bounded spins then sleeps whatever the schedule flag, and
/// pinned memory is always mapped, so valid flags are accepted and change nothing.
#[no_mangle]
pub extern "C" fn cudaSetDeviceFlags(flags: u32) -> CudaError {
    if flags & !DEVICE_FLAGS != 0 || flags & 0x07 == 0x03 || flags & 0x07 > 4 {
        return fail(INVALID_VALUE);
    }
    match check_device(CURRENT_DEVICE.with(|c| c.get())) {
        Ok(()) => SUCCESS,
        Err(e) => fail(e),
    }
}

/// `cudaDeviceGetAttribute`: `cudaDeviceAttr` numbers are the driver's.
#[no_mangle]
pub extern "C" fn cudaDeviceGetAttribute(value: *mut i32, attr: i32, dev: i32) -> CudaError {
    if let Err(e) = check_device(dev) {
        return fail(e);
    }
    match driver().map(|d| d.attribute(attr, dev)) {
        Ok(Ok(v)) => put(value, v),
        Ok(Err(e)) => fail(from_cu(e)),
        Err(_) => fail(INSUFFICIENT_DRIVER),
    }
}

/// `cudaDeviceGetPCIBusId`.
#[no_mangle]
pub extern "C" fn cudaDeviceGetPCIBusId(id: *mut c_char, len: i32, dev: i32) -> CudaError {
    if let Err(e) = check_device(dev) {
        return fail(e);
    }
    match driver() {
        Ok(d) => fail(from_cu(d.pci_bus_id(id, len, dev))),
        Err(_) => fail(INSUFFICIENT_DRIVER),
    }
}

/// `cudaGetDeviceProperties_v2`: the CUDA 12 `cudaDeviceProp`.
#[no_mangle]
pub extern "C" fn cudaGetDeviceProperties_v2(
    prop: *mut cudarc::runtime::sys::cudaDeviceProp,
    dev: i32,
) -> CudaError {
    if let Err(e) = check_device(dev) {
        return fail(e);
    }
    let Ok(d) = driver() else {
        return fail(INSUFFICIENT_DRIVER);
    };
    // SAFETY: an all-zero cudaDeviceProp is valid (plain integers and arrays).
    let mut p: cudarc::runtime::sys::cudaDeviceProp = unsafe { std::mem::zeroed() };
    match crate::props::fill(d, dev, &mut p) {
        Ok(()) => put(prop, p),
        Err(e) => fail(from_cu(e)),
    }
}

/// `cudaGetDeviceProperties` (the same, under its CUDA 11 name).
#[no_mangle]
pub extern "C" fn cudaGetDeviceProperties(
    prop: *mut cudarc::runtime::sys::cudaDeviceProp,
    dev: i32,
) -> CudaError {
    cudaGetDeviceProperties_v2(prop, dev)
}

/// `cudaDriverGetVersion`.
#[no_mangle]
pub extern "C" fn cudaDriverGetVersion(v: *mut i32) -> CudaError {
    put(v, 12080)
}

/// `cudaRuntimeGetVersion`.
#[no_mangle]
pub extern "C" fn cudaRuntimeGetVersion(v: *mut i32) -> CudaError {
    put(v, 12080)
}

/// `cudaGetLastError`: returns and clears the thread's last error.
#[no_mangle]
pub extern "C" fn cudaGetLastError() -> CudaError {
    LAST_ERROR.with(|l| l.replace(SUCCESS))
}

/// `cudaPeekAtLastError`.
#[no_mangle]
pub extern "C" fn cudaPeekAtLastError() -> CudaError {
    LAST_ERROR.with(|l| l.get())
}

/// `cudaGetErrorName` (one table for every library, `vgpu_shim_abi::status::CudartStatus`).
#[no_mangle]
pub extern "C" fn cudaGetErrorName(e: CudaError) -> *const c_char {
    CudartStatus(e).name_ptr()
}

/// `cudaGetErrorString`.
#[no_mangle]
pub extern "C" fn cudaGetErrorString(e: CudaError) -> *const c_char {
    CudartStatus(e).text_ptr()
}

/// `__cudaRegisterFatBinary`: local bookkeeping; returns the handle the compiler keeps.
#[no_mangle]
pub extern "C" fn __cudaRegisterFatBinary(wrapper: *mut c_void) -> *mut *mut c_void {
    let slot: &'static mut *mut c_void = Box::leak(Box::new(wrapper));
    let handle = slot as *mut *mut c_void;
    registry::with(|r| {
        r.fatbins.insert(
            handle as usize,
            Fatbin {
                wrapper: wrapper as usize,
            },
        )
    });
    handle
}

/// `__cudaRegisterFatBinaryEnd`.
#[no_mangle]
pub extern "C" fn __cudaRegisterFatBinaryEnd(_handle: *mut *mut c_void) {}

/// `__cudaUnregisterFatBinary`: forgets the fatbin and what was registered from it.
#[no_mangle]
pub extern "C" fn __cudaUnregisterFatBinary(handle: *mut *mut c_void) {
    let h = handle as usize;
    registry::with(|r| {
        r.fatbins.remove(&h);
        r.functions.retain(|_, (fh, _)| *fh != h);
        r.variables.retain(|_, (fh, _, _)| *fh != h);
    });
}

fn c_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the compiler passes NUL-terminated names that live as long as the program.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

/// `__cudaRegisterFunction`: remembers which device function a host stub launches.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // the compiler-generated ABI
pub extern "C" fn __cudaRegisterFunction(
    handle: *mut *mut c_void,
    host_fun: *const c_char,
    _device_fun: *mut c_char,
    device_name: *const c_char,
    _thread_limit: i32,
    _tid: *mut c_void,
    _bid: *mut c_void,
    _block: *mut c_void,
    _grid: *mut c_void,
    _wsize: *mut i32,
) {
    let name = c_string(device_name);
    registry::with(|r| {
        r.functions
            .insert(host_fun as usize, (handle as usize, name))
    });
}

/// `__cudaRegisterVar`: remembers a device variable's host shadow.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // the compiler-generated ABI
pub extern "C" fn __cudaRegisterVar(
    handle: *mut *mut c_void,
    host_var: *mut c_char,
    _device_address: *mut c_char,
    device_name: *const c_char,
    _ext: i32,
    size: usize,
    _constant: i32,
    _global: i32,
) {
    let name = c_string(device_name);
    registry::with(|r| {
        r.variables
            .insert(host_var as usize, (handle as usize, name, size))
    });
}

/// `dim3`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Dim3 {
    x: u32,
    y: u32,
    z: u32,
}

impl Dim3 {
    /// As an array.
    pub fn dims(&self) -> [u32; 3] {
        [self.x, self.y, self.z]
    }
}

/// `__cudaPushCallConfiguration` (`<<<grid, block, shared, stream>>>`).
#[no_mangle]
pub extern "C" fn __cudaPushCallConfiguration(
    grid: Dim3,
    block: Dim3,
    shared: usize,
    stream: *mut c_void,
) -> u32 {
    let c = LaunchConfig {
        grid: [grid.x, grid.y, grid.z],
        block: [block.x, block.y, block.z],
        shared,
        stream: stream as usize,
    };
    CONFIGS.with(|s| s.borrow_mut().push(c));
    0
}

/// `__cudaPopCallConfiguration`.
#[no_mangle]
pub extern "C" fn __cudaPopCallConfiguration(
    grid: *mut Dim3,
    block: *mut Dim3,
    shared: *mut usize,
    stream: *mut *mut c_void,
) -> u32 {
    let Some(c) = CONFIGS.with(|s| s.borrow_mut().pop()) else {
        return fail(INVALID_VALUE);
    };
    let r = [
        put(
            grid,
            Dim3 {
                x: c.grid[0],
                y: c.grid[1],
                z: c.grid[2],
            },
        ),
        put(
            block,
            Dim3 {
                x: c.block[0],
                y: c.block[1],
                z: c.block[2],
            },
        ),
        put(shared, c.shared),
        put(stream, c.stream as *mut c_void),
    ];
    r.into_iter().find(|e| *e != SUCCESS).unwrap_or(SUCCESS)
}

/// Defines exported functions that are not implemented yet: each returns
/// cudaErrorNotSupported (recorded as the last error) and logs its name once. Arguments
/// are ignored, which the C ABI allows for any parameter list.
macro_rules! not_supported {
    ($($name:ident),* $(,)?) => {
        $(
            #[no_mangle]
            pub extern "C" fn $name() -> CudaError {
                static ONCE: Once = Once::new();
                ONCE.call_once(|| { init_logging(); log::warn!("vgpu: {} is not supported yet", stringify!($name)) });
                fail(NOT_SUPPORTED)
            }
        )*
        /// Exported functions that return cudaErrorNotSupported.
        pub const NOT_SUPPORTED_FUNCTIONS: &[&str] = &[$(stringify!($name)),*];
    };
}

not_supported!(
    cudaHostGetDevicePointer,
    cudaHostRegister,
    cudaHostUnregister,
    cudaMallocManaged,
    cudaMemcpy3DPeerAsync,
);

/// Exported functions that are implemented.
pub const IMPLEMENTED_FUNCTIONS: &[&str] = &[
    "cudaGetDeviceCount",
    "cudaGetDevice",
    "cudaSetDevice",
    "cudaDeviceGetAttribute",
    "cudaGetDeviceProperties",
    "cudaGetDeviceProperties_v2",
    "cudaDeviceGetPCIBusId",
    "cudaDriverGetVersion",
    "cudaRuntimeGetVersion",
    "cudaGetLastError",
    "cudaPeekAtLastError",
    "cudaSetDeviceFlags",
    "cudaGetErrorName",
    "cudaGetErrorString",
    "__cudaRegisterFatBinary",
    "__cudaRegisterFatBinaryEnd",
    "__cudaUnregisterFatBinary",
    "__cudaRegisterFunction",
    "__cudaRegisterVar",
    "__cudaPushCallConfiguration",
    "__cudaPopCallConfiguration",
];
