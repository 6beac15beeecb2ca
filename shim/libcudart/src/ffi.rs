//! The runtime API's device discovery, versions, last-error calls, error strings and the
//! compiler-generated registration and launch-configuration ABI, one line each in the table
//! at the end (`vgpu_shim_abi::exports!`; errors are recorded as the thread's last error).

use crate::driver::driver;
use crate::registry::{self, Fatbin, LaunchConfig, CONFIGS};
use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::sync::Once;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::{CStrIn, Out};
use vgpu_shim_abi::status::CudartStatus;

type R = Result<(), CudartStatus>;

/// `cudaError_t`.
pub type CudaError = u32;
const SUCCESS: CudaError = 0;
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

/// Records an error an export returns as the thread's last error (the `on_error` of the
/// exports' tables).
pub(crate) fn record(e: CudartStatus) {
    fail(e.0);
}

/// Driver results mapped to runtime errors (the numbers coincide for these).
pub(crate) fn from_cu(e: u32) -> CudaError {
    match e {
        0 | 1 | 2 | 3 | 46 | 98 | 100 | 101 | 200 | 209 | 400 | 500 | 600 | 700 | 705 | 712
        | 713 | 719 | 801 | 900 | 901 | 903 | 908 | 909 | 910 => e,
        _ => UNKNOWN,
    }
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

fn get_device_count(count: Out<i32>) -> R {
    match device_count() {
        Ok(n) if n > 0 => Ok(count.write(n)?),
        Ok(_) => {
            let _ = count.write(0);
            Err(CudartStatus::NO_DEVICE)
        }
        Err(e) => {
            let _ = count.write(0);
            Err(CudartStatus(e))
        }
    }
}

fn check_device(dev: i32) -> R {
    let n = device_count().map_err(CudartStatus)?;
    if n == 0 {
        return Err(CudartStatus::NO_DEVICE);
    }
    if dev < 0 || dev >= n {
        return Err(CudartStatus::INVALID_DEVICE);
    }
    Ok(())
}

/// The calling thread's current device.
pub(crate) fn current_device() -> i32 {
    CURRENT_DEVICE.with(|c| c.get())
}

fn get_device(dev: Out<i32>) -> R {
    check_device(0)?;
    Ok(dev.write(current_device())?)
}

fn set_device(dev: i32) -> R {
    check_device(dev)?;
    CURRENT_DEVICE.with(|c| c.set(dev));
    Ok(())
}

/// Flags of `cudaSetDeviceFlags`: the schedule bits (0..=4), cudaDeviceMapHost (8),
/// cudaDeviceLmemResizeToMax (16) and cudaDeviceSyncMemops (128).
const DEVICE_FLAGS: u32 = 0x07 | 0x08 | 0x10 | 0x80;

/// `cudaSetDeviceFlags`: the flags describe how the host waits and what host memory may
/// be mapped; waits here are bounded spins then sleeps whatever the schedule flag, and
/// pinned memory is always mapped, so valid flags are accepted and change nothing.
fn set_device_flags(flags: u32) -> R {
    if flags & !DEVICE_FLAGS != 0 || flags & 0x07 == 0x03 || flags & 0x07 > 4 {
        return Err(CudartStatus::INVALID_VALUE);
    }
    check_device(current_device())
}

fn the_driver() -> Result<&'static crate::driver::Driver, CudartStatus> {
    driver().map_err(|_| CudartStatus(INSUFFICIENT_DRIVER))
}

/// `cudaDeviceGetAttribute`: `cudaDeviceAttr` numbers are the driver's.
fn device_attribute(value: Out<i32>, attr: i32, dev: i32) -> R {
    check_device(dev)?;
    let v = the_driver()?
        .attribute(attr, dev)
        .map_err(|e| CudartStatus(from_cu(e)))?;
    Ok(value.write(v)?)
}

fn pci_bus_id(id: Out<c_char>, len: i32, dev: i32) -> R {
    check_device(dev)?;
    match from_cu(the_driver()?.pci_bus_id(id.as_ptr(), len, dev)) {
        0 => Ok(()),
        e => Err(CudartStatus(e)),
    }
}

/// `cudaGetDeviceProperties(_v2)`: the CUDA 12 `cudaDeviceProp`.
fn device_properties(prop: Out<cudarc::runtime::sys::cudaDeviceProp>, dev: i32) -> R {
    check_device(dev)?;
    let d = the_driver()?;
    // SAFETY: an all-zero cudaDeviceProp is valid (plain integers and arrays).
    let mut p: cudarc::runtime::sys::cudaDeviceProp = unsafe { std::mem::zeroed() };
    crate::props::fill(d, dev, &mut p).map_err(|e| CudartStatus(from_cu(e)))?;
    Ok(prop.write(p)?)
}

/// `__cudaRegisterFatBinary`: local bookkeeping; returns the handle the compiler keeps.
fn register_fatbin(wrapper: *mut c_void) -> *mut *mut c_void {
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

/// `__cudaUnregisterFatBinary`: forgets the fatbin and what was registered from it.
fn unregister_fatbin(handle: *mut *mut c_void) {
    let h = handle as usize;
    registry::with(|r| {
        r.fatbins.remove(&h);
        r.functions.retain(|_, (fh, _)| *fh != h);
        r.variables.retain(|_, (fh, _, _)| *fh != h);
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

    fn of([x, y, z]: [u32; 3]) -> Dim3 {
        Dim3 { x, y, z }
    }
}

/// `__cudaPushCallConfiguration` (`<<<grid, block, shared, stream>>>`).
fn push_config(grid: Dim3, block: Dim3, shared: usize, stream: usize) -> R {
    let c = LaunchConfig {
        grid: grid.dims(),
        block: block.dims(),
        shared,
        stream,
    };
    CONFIGS.with(|s| s.borrow_mut().push(c));
    Ok(())
}

/// `__cudaPopCallConfiguration`.
fn pop_config(grid: Out<Dim3>, block: Out<Dim3>, shared: Out<usize>, stream: Out<usize>) -> R {
    let c = CONFIGS
        .with(|s| s.borrow_mut().pop())
        .ok_or(CudartStatus::INVALID_VALUE)?;
    grid.write(Dim3::of(c.grid))?;
    block.write(Dim3::of(c.block))?;
    shared.write(c.shared)?;
    Ok(stream.write(c.stream)?)
}

exports! {
    library "libcudart.so.12", status CudartStatus, on_error record;
    /// 0 devices and cudaErrorNoDevice when there is no vGPU.
    implemented fn cudaGetDeviceCount(count: Out<i32>) => get_device_count(count);
    implemented fn cudaGetDevice(dev: Out<i32>) => get_device(dev);
    implemented fn cudaSetDevice(dev: i32) => set_device(dev);
    implemented fn cudaSetDeviceFlags(flags: u32) => set_device_flags(flags);
    implemented fn cudaDeviceGetAttribute(value: Out<i32>, attr: i32, dev: i32) => device_attribute(value, attr, dev);
    implemented fn cudaDeviceGetPCIBusId(id: Out<c_char>, len: i32, dev: i32) => pci_bus_id(id, len, dev);
    implemented fn cudaGetDeviceProperties_v2(prop: Out<cudarc::runtime::sys::cudaDeviceProp>, dev: i32) => device_properties(prop, dev);
    /// The same, under its CUDA 11 name.
    implemented fn cudaGetDeviceProperties(prop: Out<cudarc::runtime::sys::cudaDeviceProp>, dev: i32) => device_properties(prop, dev);
    implemented fn cudaDriverGetVersion(v: Out<i32>) => Ok(v.write(12080)?);
    implemented fn cudaRuntimeGetVersion(v: Out<i32>) => Ok(v.write(12080)?);
    /// Returns and clears the thread's last error.
    plain fn cudaGetLastError() -> CudaError => LAST_ERROR.with(|l| l.replace(SUCCESS));
    plain fn cudaPeekAtLastError() -> CudaError => LAST_ERROR.with(|l| l.get());
    plain fn cudaGetErrorName(e: CudaError) -> *const c_char => CudartStatus(e).name_ptr();
    plain fn cudaGetErrorString(e: CudaError) -> *const c_char => CudartStatus(e).text_ptr();
    plain fn __cudaRegisterFatBinary(wrapper: *mut c_void) -> *mut *mut c_void => register_fatbin(wrapper);
    plain fn __cudaRegisterFatBinaryEnd(_handle: *mut *mut c_void) -> () => ();
    plain fn __cudaUnregisterFatBinary(handle: *mut *mut c_void) -> () => unregister_fatbin(handle);
    /// Remembers which device function a host stub launches.
    plain fn __cudaRegisterFunction(handle: *mut *mut c_void, host_fun: *const c_char, _device_fun: *mut c_char, device_name: CStrIn, _thread_limit: i32, _tid: *mut c_void, _bid: *mut c_void, _block: *mut c_void, _grid: *mut c_void, _wsize: *mut i32) -> ()
        => { let name = device_name.read().unwrap_or_default(); registry::with(|r| r.functions.insert(host_fun as usize, (handle as usize, name))); };
    /// Remembers a device variable's host shadow.
    plain fn __cudaRegisterVar(handle: *mut *mut c_void, host_var: *mut c_char, _device_address: *mut c_char, device_name: CStrIn, _ext: i32, size: usize, _constant: i32, _global: i32) -> ()
        => { let name = device_name.read().unwrap_or_default(); registry::with(|r| r.variables.insert(host_var as usize, (handle as usize, name, size))); };
    implemented fn __cudaPushCallConfiguration(grid: Dim3, block: Dim3, shared: usize, stream: usize) => push_config(grid, block, shared, stream);
    implemented fn __cudaPopCallConfiguration(grid: Out<Dim3>, block: Out<Dim3>, shared: Out<usize>, stream: Out<usize>) => pop_config(grid, block, shared, stream);
    not_supported fn cudaHostGetDevicePointer;
    not_supported fn cudaMallocManaged;
    not_supported fn cudaMemcpy3DPeerAsync;
}
