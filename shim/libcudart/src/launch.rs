//! Kernel launches of the runtime API: both compiler launch ABIs (CUDA 12's
//! `cudaLaunchKernel` after `__cudaPopCallConfiguration`; CUDA 13's `__cudaGetKernel` +
//! `__cudaLaunchKernel`), `cudaLaunchKernelExC` with launch attributes, and function
//! attributes. A host stub's fatbin is loaded on its first launch (by content hash) and the
//! stub → driver function mapping is cached. One line each in the table at the end
//! (`vgpu_shim_abi::exports!`).

use crate::cu;
use crate::driver::Driver;
use crate::ffi::{from_cu, CudaError, Dim3};
use crate::mem::api;
use std::ffi::c_void;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::{In, Out};
use vgpu_shim_abi::status::CudartStatus;

type R = Result<(), CudartStatus>;

/// Kernels launched so far: host stub → driver function.
static LAUNCHABLE: std::sync::Mutex<Option<std::collections::HashMap<usize, usize>>> =
    std::sync::Mutex::new(None);
/// Modules loaded so far: fatbin handle → driver module.
static MODULES: std::sync::Mutex<Option<std::collections::HashMap<usize, usize>>> =
    std::sync::Mutex::new(None);

/// The driver module of registered fatbin `handle`, loaded (by content hash) on first use.
pub(crate) fn module_of(d: &Driver, handle: usize) -> Result<usize, CudaError> {
    let wrapper =
        crate::registry::with(|r| r.fatbins.get(&handle).map(|f| f.wrapper)).ok_or(98u32)?;
    let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    let modules = modules.get_or_insert_with(Default::default);
    if let Some(m) = modules.get(&handle) {
        return Ok(*m);
    }
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
    Ok(m)
}

/// Forgets the loaded modules and resolved functions (after a device reset destroyed
/// them); the next launch loads them again.
pub(crate) fn forget_loaded() {
    *LAUNCHABLE.lock().unwrap_or_else(|p| p.into_inner()) = None;
    *MODULES.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

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
    let module = module_of(d, handle)?;
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

/// The driver and the driver function of host stub `func`.
fn driver_function(func: *const c_void) -> Result<(&'static Driver, usize), CudartStatus> {
    let d = api().map_err(CudartStatus)?;
    Ok((d, function_of(d, func as usize).map_err(CudartStatus)?))
}

fn status(e: u32) -> R {
    match from_cu(e) {
        0 => Ok(()),
        e => Err(CudartStatus(e)),
    }
}

/// `__cudaGetKernel` (the CUDA 13 launch ABI: each host stub asks once for its kernel's
/// handle). The handle is the host stub's own address; nothing is loaded until the launch.
fn get_kernel(kernel: Out<*const c_void>, func: *const c_void) -> R {
    if kernel.is_null() {
        return Err(CudartStatus::INVALID_VALUE);
    }
    if !crate::registry::with(|r| r.functions.contains_key(&(func as usize))) {
        return Err(CudartStatus::INVALID_DEVICE_FUNCTION);
    }
    Ok(kernel.write(func)?)
}

/// `cudaLaunchKernel` (the CUDA 12 launch ABI: `__cudaPopCallConfiguration` in the host
/// stub, then this), and CUDA 13's `__cudaLaunchKernel` with the handle `__cudaGetKernel`
/// gave.
fn launch(
    func: *const c_void,
    grid: Dim3,
    block: Dim3,
    args: *const *const c_void,
    shared: usize,
    stream: usize,
) -> R {
    let (d, f) = driver_function(func)?;
    let (g, b) = (grid.dims(), block.dims());
    let shared = u32::try_from(shared).unwrap_or(u32::MAX);
    status(cu!(
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
    ))
}

/// `cudaLaunchKernelExC`: a launch with `cudaLaunchAttribute`s, lowered onto
/// `cuLaunchKernelEx` (the runtime's attribute ids and value union are the driver's).
fn launch_ex(
    config: In<cudarc::runtime::sys::cudaLaunchConfig_t>,
    func: *const c_void,
    args: *const *const c_void,
) -> R {
    let c = config.read()?;
    let (d, f) = driver_function(func)?;
    let shared = u32::try_from(c.dynamicSmemBytes).map_err(|_| CudartStatus::INVALID_VALUE)?;
    let cu = cudarc::driver::sys::CUlaunchConfig {
        gridDimX: c.gridDim.x,
        gridDimY: c.gridDim.y,
        gridDimZ: c.gridDim.z,
        blockDimX: c.blockDim.x,
        blockDimY: c.blockDim.y,
        blockDimZ: c.blockDim.z,
        sharedMemBytes: shared,
        hStream: c.stream.cast(),
        // cudaLaunchAttribute and CUlaunchAttribute have one layout: an id, 4 bytes of
        // padding and a 64-byte value union with the same members.
        attrs: c.attrs.cast(),
        numAttrs: c.numAttrs,
    };
    status(cu!(d, launch_kernel_ex(&cu, f, args, std::ptr::null())))
}

/// `cudaFuncGetAttributes`: the function's attributes, read from the device.
fn func_attributes(attrs: Out<cudarc::runtime::sys::cudaFuncAttributes>, func: *const c_void) -> R {
    if attrs.is_null() {
        return Err(CudartStatus::INVALID_VALUE);
    }
    let (d, f) = driver_function(func)?;
    // CUfunction_attribute 0..=9, in cudaFuncAttributes' order of meaning.
    let mut v = [0i32; 10];
    for (i, slot) in v.iter_mut().enumerate() {
        status(cu!(d, func_get_attribute(slot, i as i32, f)))?;
    }
    // SAFETY: all-zero is a valid cudaFuncAttributes (integers only).
    let mut a: cudarc::runtime::sys::cudaFuncAttributes = unsafe { std::mem::zeroed() };
    a.maxThreadsPerBlock = v[0];
    a.sharedSizeBytes = v[1] as usize;
    a.constSizeBytes = v[2] as usize;
    a.localSizeBytes = v[3] as usize;
    a.numRegs = v[4];
    a.ptxVersion = v[5];
    a.binaryVersion = v[6];
    a.cacheModeCA = v[7];
    a.maxDynamicSharedSizeBytes = v[8];
    a.preferredShmemCarveout = v[9];
    Ok(attrs.write(a)?)
}

/// `cudaFuncSetAttribute`: `cudaFuncAttribute` numbers are the driver's
/// `CUfunction_attribute` ones for the settable attributes
/// (cudaFuncAttributeMaxDynamicSharedMemorySize, 8, and
/// cudaFuncAttributePreferredSharedMemoryCarveout, 9).
fn func_set_attribute(func: *const c_void, attr: i32, value: i32) -> R {
    if !matches!(attr, 8 | 9) {
        log::warn!("vgpu: cudaFuncSetAttribute attribute {attr} is not supported");
        return Err(CudartStatus::NOT_SUPPORTED);
    }
    let (d, f) = driver_function(func)?;
    status(cu!(d, func_set_attribute(f, attr, value)))
}

/// `cudaLaunchCooperativeKernel`: a launch with the cooperative attribute.
fn launch_cooperative(
    func: *const c_void,
    grid: Dim3,
    block: Dim3,
    args: *const *const c_void,
    shared: usize,
    stream: usize,
) -> R {
    let (g, b) = (grid.dims(), block.dims());
    // SAFETY: all-zero is a valid cudaLaunchAttribute (an id of 0 and zero bytes).
    let mut attr: cudarc::runtime::sys::cudaLaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = cudarc::runtime::sys::cudaLaunchAttributeID::cudaLaunchAttributeCooperative;
    attr.val.cooperative = 1;
    let config = cudarc::runtime::sys::cudaLaunchConfig_t {
        gridDim: cudarc::runtime::sys::dim3 {
            x: g[0],
            y: g[1],
            z: g[2],
        },
        blockDim: cudarc::runtime::sys::dim3 {
            x: b[0],
            y: b[1],
            z: b[2],
        },
        dynamicSmemBytes: shared,
        stream: stream as _,
        attrs: &mut attr,
        numAttrs: 1,
    };
    // SAFETY: `config` is a local that outlives the call.
    launch_ex(unsafe { In::from_raw(&config) }, func, args)
}

/// `cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags`: CUDA's occupancy calculation
/// (`vgpu_shim_abi::occupancy`) over the device's attributes and the function's registers and
/// static shared memory, which come from the device.
fn occupancy(blocks: Out<i32>, func: *const c_void, block_size: i32, dyn_shared: usize) -> R {
    if blocks.is_null() || block_size <= 0 {
        return Err(CudartStatus::INVALID_VALUE);
    }
    let (d, f) = driver_function(func)?;
    use vgpu_shim_abi::occupancy::{max_active_blocks, DEVICE_ATTRIBUTES, FUNCTION_ATTRIBUTES};
    let dev = crate::ffi::current_device();
    let mut device = [0i32; 6];
    for (v, a) in device.iter_mut().zip(DEVICE_ATTRIBUTES) {
        *v = d
            .attribute(a, dev)
            .map_err(|_| CudartStatus::INVALID_VALUE)?;
    }
    let mut function = [0i32; 2];
    for (v, a) in function.iter_mut().zip(FUNCTION_ATTRIBUTES) {
        if cu!(d, func_get_attribute(v, a, f)) != 0 {
            return Err(CudartStatus::INVALID_VALUE);
        }
    }
    Ok(blocks.write(max_active_blocks(device, function, block_size, dyn_shared))?)
}

exports! {
    library "libcudart.so.12", status CudartStatus, on_error crate::ffi::record;
    implemented fn __cudaGetKernel(kernel: Out<*const c_void>, func: *const c_void) => get_kernel(kernel, func);
    implemented fn __cudaLaunchKernel(kernel: *const c_void, grid: Dim3, block: Dim3, args: *const *const c_void, shared: usize, stream: usize) => launch(kernel, grid, block, args, shared, stream);
    /// The same under per-thread default-stream compilation. The per-thread default stream
    /// is not distinguished from the legacy one: the handles 0 and 2 (`cudaStreamPerThread`)
    /// both launch on the NULL stream.
    implemented fn __cudaLaunchKernel_ptsz(kernel: *const c_void, grid: Dim3, block: Dim3, args: *const *const c_void, shared: usize, stream: usize) => launch(kernel, grid, block, args, shared, stream);
    implemented fn cudaLaunchKernel(func: *const c_void, grid: Dim3, block: Dim3, args: *const *const c_void, shared: usize, stream: usize) => launch(func, grid, block, args, shared, stream);
    implemented fn cudaLaunchKernelExC(config: In<cudarc::runtime::sys::cudaLaunchConfig_t>, func: *const c_void, args: *const *const c_void) => launch_ex(config, func, args);
    implemented fn cudaFuncGetAttributes(attrs: Out<cudarc::runtime::sys::cudaFuncAttributes>, func: *const c_void) => func_attributes(attrs, func);
    implemented fn cudaFuncSetAttribute(func: *const c_void, attr: i32, value: i32) => func_set_attribute(func, attr, value);
    implemented fn cudaLaunchCooperativeKernel(func: *const c_void, grid: Dim3, block: Dim3, args: *const *const c_void, shared: usize, stream: usize) => launch_cooperative(func, grid, block, args, shared, stream);
    implemented fn cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks: Out<i32>, func: *const c_void, block_size: i32, dyn_shared: usize, _flags: u32) => occupancy(blocks, func, block_size, dyn_shared);
}
