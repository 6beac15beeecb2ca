//! Modules and launches: `cuModuleLoadData`, `cuModuleGetFunction`, `cuModuleUnload`,
//! `cuModuleGetGlobal_v2`, `cuLaunchKernel`, `cuLaunchKernelEx` (with launch attributes),
//! `cuFuncGetAttribute` and `cuFuncSetAttribute`. The `unsafe` here reads what the caller
//! passes: module images, names, kernel parameters and launch configurations.

use super::{put, status_of, CuResult, INVALID_VALUE, NOT_SUPPORTED, SUCCESS};
use crate::mem;
use crate::module;
use std::ffi::{c_char, c_void};
use std::sync::Once;
use vgpu_proto::cmd::*;
use vgpu_proto::payload::LaunchAttr;
use vgpu_proto::Command;

/// `cuModuleLoadData`: the image is a fatbin container, an ELF cubin or PTX.
#[no_mangle]
pub extern "C" fn cuModuleLoadData(m: *mut usize, image: *const c_void) -> CuResult {
    if image.is_null() {
        return INVALID_VALUE;
    }
    // SAFETY: the caller passes a readable module image (CUDA's contract); image_len reads
    // only its header.
    let len = unsafe { module::image_len(image.cast()) };
    let bytes = match len {
        // SAFETY: the image is `n` bytes long, as its own header says.
        Some(n) if n > 0 => unsafe { std::slice::from_raw_parts(image.cast::<u8>(), n) },
        _ => return 200,
    };
    match module::load(bytes) {
        Ok(h) => put(m, h as usize),
        Err(e) => e,
    }
}

/// `cuModuleGetFunction`.
#[no_mangle]
#[allow(clippy::not_unsafe_ptr_arg_deref)] // a C ABI entry point: the name is the caller's
pub extern "C" fn cuModuleGetFunction(f: *mut usize, m: usize, name: *const c_char) -> CuResult {
    if name.is_null() {
        return INVALID_VALUE;
    }
    // SAFETY: a NUL-terminated name from the caller (CUDA's contract).
    let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy();
    match module::function(m as u64, &name) {
        Ok(h) => put(f, h as usize),
        Err(e) => e,
    }
}

/// `cuModuleUnload`.
#[no_mangle]
pub extern "C" fn cuModuleUnload(m: usize) -> CuResult {
    status_of(module::unload(m as u64))
}

/// `cuLaunchKernel` with `kernelParams` (the `extra` form is not supported).
#[no_mangle]
#[allow(clippy::too_many_arguments)] // the driver API
pub extern "C" fn cuLaunchKernel(
    f: usize,
    gx: u32,
    gy: u32,
    gz: u32,
    bx: u32,
    by: u32,
    bz: u32,
    shared: u32,
    stream: usize,
    params: *const *const c_void,
    extra: *const *const c_void,
) -> CuResult {
    if !extra.is_null() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| log::warn!("vgpu: cuLaunchKernel with `extra` is not supported"));
        return NOT_SUPPORTED;
    }
    // SAFETY: `params` holds one pointer per kernel parameter (CUDA's contract).
    status_of(unsafe {
        module::launch(
            f as u64,
            [gx, gy, gz],
            [bx, by, bz],
            shared,
            mem::stream(stream),
            params.cast(),
            &[],
        )
    })
}

/// `CUlaunchConfig`.
pub type LaunchConfig = cudarc::driver::sys::CUlaunchConfig;

/// Launch attributes the device ABI carries (spec §6.5); their values are the first three
/// 32-bit words of `CUlaunchAttributeValue`. `CU_LAUNCH_ATTRIBUTE_IGNORE` (0) is skipped.
fn launch_attrs(config: &LaunchConfig) -> Result<Vec<LaunchAttr>, CuResult> {
    use vgpu_proto::payload::launch_attr::*;
    if config.numAttrs > 0 && config.attrs.is_null() {
        return Err(INVALID_VALUE);
    }
    let mut out = Vec::new();
    // Each CUlaunchAttribute: the id (a u32; read as an integer, since a caller's value need
    // not be a variant of bindgen's enum), 4 bytes of padding, the 64-byte value union.
    let stride = std::mem::size_of::<cudarc::driver::sys::CUlaunchAttribute>();
    for i in 0..config.numAttrs as usize {
        // SAFETY: `attrs` holds `numAttrs` CUlaunchAttributes (CUDA's contract), so
        // element i's first 20 bytes are readable; integers accept any bit pattern.
        let (id, v) = unsafe {
            let base = config.attrs.cast::<u8>().add(i * stride);
            (
                base.cast::<u32>().read_unaligned(),
                base.add(8).cast::<[u32; 3]>().read_unaligned(),
            )
        };
        match id {
            0 => {}
            COOPERATIVE | CLUSTER_DIMENSION | PROGRAMMATIC_STREAM_SERIALIZATION | PRIORITY => out
                .push(LaunchAttr {
                    id,
                    v0: v[0],
                    v1: v[1],
                    v2: v[2],
                }),
            _ => {
                log::warn!("vgpu: launch attribute {id} is not supported");
                return Err(NOT_SUPPORTED);
            }
        }
    }
    if out.len() > usize::from(MAX_LAUNCH_ATTRS) {
        return Err(INVALID_VALUE);
    }
    Ok(out)
}

/// `cuLaunchKernelEx`: a launch with attributes (cooperative, cluster dimensions,
/// programmatic stream serialisation, priority).
#[no_mangle]
#[allow(clippy::not_unsafe_ptr_arg_deref)] // a C entry point: CUDA's contract covers `config`
pub extern "C" fn cuLaunchKernelEx(
    config: *const LaunchConfig,
    f: usize,
    params: *const *const c_void,
    extra: *const *const c_void,
) -> CuResult {
    if config.is_null() {
        return INVALID_VALUE;
    }
    if !extra.is_null() {
        log::warn!("vgpu: cuLaunchKernelEx with `extra` is not supported");
        return NOT_SUPPORTED;
    }
    // SAFETY: a valid CUlaunchConfig (CUDA's contract); null refused.
    let c = unsafe { config.read_unaligned() };
    let attrs = try_cu!(launch_attrs(&c));
    // SAFETY: `params` holds one pointer per kernel parameter (CUDA's contract).
    status_of(unsafe {
        module::launch(
            f as u64,
            [c.gridDimX, c.gridDimY, c.gridDimZ],
            [c.blockDimX, c.blockDimY, c.blockDimZ],
            c.sharedMemBytes,
            mem::stream(c.hStream as usize),
            params.cast(),
            &attrs,
        )
    })
}

/// `cuModuleGetGlobal_v2`: a module's global by name (either out-pointer may be null).
#[no_mangle]
#[allow(clippy::not_unsafe_ptr_arg_deref)] // a C ABI entry point: the name is the caller's
pub extern "C" fn cuModuleGetGlobal_v2(
    dptr: *mut u64,
    bytes: *mut usize,
    module: usize,
    name: *const std::ffi::c_char,
) -> CuResult {
    if name.is_null() {
        return INVALID_VALUE;
    }
    // SAFETY: a NUL-terminated name (CUDA's contract); null refused.
    let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy();
    let (addr, size) = try_cu!(module::global(module as u64, &name));
    if !dptr.is_null() {
        try_cu!(match put(dptr, addr) {
            SUCCESS => Ok(()),
            e => Err(e),
        });
    }
    if !bytes.is_null() {
        return put(bytes, size as usize);
    }
    SUCCESS
}

fn func_attr(func: usize, attr: i32, value: i32, set: bool) -> Result<i32, CuResult> {
    if func == 0 || attr < 0 {
        return Err(INVALID_VALUE);
    }
    let args = FuncAttrArgs {
        func: func as u64,
        attr: attr as u32,
        value,
        rsv: [0; 2],
    };
    let cmd = if set {
        Command::FUNC_SET_ATTRIBUTE(args)
    } else {
        Command::FUNC_GET_ATTRIBUTE(args)
    };
    mem::call(cmd, 0).map(|c| c.result0 as i32)
}

/// `cuFuncGetAttribute`: a `CUfunction_attribute` of a function.
#[no_mangle]
pub extern "C" fn cuFuncGetAttribute(value: *mut i32, attr: i32, func: usize) -> CuResult {
    match func_attr(func, attr, 0, false) {
        Ok(v) => put(value, v),
        Err(e) => e,
    }
}

/// `cuFuncSetAttribute`: the settable attributes (maximum dynamic shared memory, preferred
/// shared memory carveout).
#[no_mangle]
pub extern "C" fn cuFuncSetAttribute(func: usize, attr: i32, value: i32) -> CuResult {
    status_of(func_attr(func, attr, value, true).map(|_| ()))
}

/// Exported module functions that are implemented.
pub const IMPLEMENTED_MODULE_FUNCTIONS: &[&str] = &[
    "cuModuleLoadData",
    "cuModuleGetFunction",
    "cuModuleUnload",
    "cuLaunchKernel",
    "cuLaunchKernelEx",
    "cuFuncGetAttribute",
    "cuFuncSetAttribute",
    "cuModuleGetGlobal_v2",
];
