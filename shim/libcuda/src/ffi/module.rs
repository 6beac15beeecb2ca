//! Modules, launches and function attributes, one line each in the table at the end
//! (`vgpu_shim_abi::exports!`). The `unsafe` here reads what the caller passes: module
//! images, kernel parameters and launch attributes.

use crate::mem;
use crate::module;
use std::ffi::c_void;
use std::sync::Once;
use vgpu_proto::cmd::*;
use vgpu_proto::payload::LaunchAttr;
use vgpu_proto::Command;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::{CStrIn, In, Out};
use vgpu_shim_abi::status::CuStatus;

type R = Result<(), CuStatus>;

/// `cuModuleLoadData`: the image is a fatbin container, an ELF cubin or PTX.
pub(crate) fn load_data(m: Out<usize>, image: In<c_void>) -> R {
    if image.is_null() {
        return Err(CuStatus::INVALID_VALUE);
    }
    // SAFETY: the caller passes a readable module image (CUDA's contract); image_len reads
    // only its header (or the NUL-terminated PTX).
    let len = unsafe { module::image_len(image.as_ptr().cast()) };
    let bytes = match len {
        // SAFETY: the image is `n` bytes long, as its own header says.
        Some(n) if n > 0 => unsafe { std::slice::from_raw_parts(image.as_ptr().cast::<u8>(), n) },
        _ => return Err(CuStatus::INVALID_IMAGE),
    };
    Ok(m.write(module::load(bytes)? as usize)?)
}

fn get_function(f: Out<usize>, m: usize, name: CStrIn) -> R {
    let name = name.read()?;
    Ok(f.write(module::function(m as u64, &name)? as usize)?)
}

/// `cuModuleGetGlobal_v2`: a module's global by name (either out-pointer may be null).
fn get_global(dptr: Out<u64>, bytes: Out<usize>, m: usize, name: CStrIn) -> R {
    let name = name.read()?;
    let (addr, size) = module::global(m as u64, &name)?;
    if !dptr.is_null() {
        dptr.write(addr)?;
    }
    if !bytes.is_null() {
        bytes.write(size as usize)?;
    }
    Ok(())
}

/// A launch of `f`; `params` holds one pointer per kernel parameter.
fn launch(
    f: usize,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    stream: usize,
    params: In<*const c_void>,
    attrs: &[LaunchAttr],
) -> R {
    // SAFETY: `params` holds one pointer per kernel parameter, each to a value of that
    // parameter's size (CUDA's contract for cuLaunchKernel and cuLaunchKernelEx).
    Ok(unsafe {
        module::launch(
            f as u64,
            grid,
            block,
            shared,
            mem::stream(stream),
            params.as_ptr().cast(),
            attrs,
        )
    }?)
}

/// `cuLaunchKernel` with `kernelParams` (the `extra` form is not supported).
#[allow(clippy::too_many_arguments)] // the C signature
fn launch_kernel(
    f: usize,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    stream: usize,
    params: In<*const c_void>,
    extra: In<*const c_void>,
) -> R {
    if !extra.is_null() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| log::warn!("vgpu: cuLaunchKernel with `extra` is not supported"));
        return Err(CuStatus::NOT_SUPPORTED);
    }
    launch(f, grid, block, shared, stream, params, &[])
}

/// `CUlaunchConfig`.
pub type LaunchConfig = cudarc::driver::sys::CUlaunchConfig;

/// Launch attributes the device ABI carries (spec §6.5); their values are the first three
/// 32-bit words of `CUlaunchAttributeValue`. `CU_LAUNCH_ATTRIBUTE_IGNORE` (0) is skipped.
fn launch_attrs(config: &LaunchConfig) -> Result<Vec<LaunchAttr>, CuStatus> {
    use vgpu_proto::payload::launch_attr::*;
    if config.numAttrs > 0 && config.attrs.is_null() {
        return Err(CuStatus::INVALID_VALUE);
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
                return Err(CuStatus::NOT_SUPPORTED);
            }
        }
    }
    if out.len() > usize::from(MAX_LAUNCH_ATTRS) {
        return Err(CuStatus::INVALID_VALUE);
    }
    Ok(out)
}

/// `cuLaunchKernelEx`: a launch with attributes (cooperative, cluster dimensions,
/// programmatic stream serialisation, priority).
fn launch_kernel_ex(
    config: In<LaunchConfig>,
    f: usize,
    params: In<*const c_void>,
    extra: In<*const c_void>,
) -> R {
    let c = config.read()?;
    if !extra.is_null() {
        log::warn!("vgpu: cuLaunchKernelEx with `extra` is not supported");
        return Err(CuStatus::NOT_SUPPORTED);
    }
    let attrs = launch_attrs(&c)?;
    launch(
        f,
        [c.gridDimX, c.gridDimY, c.gridDimZ],
        [c.blockDimX, c.blockDimY, c.blockDimZ],
        c.sharedMemBytes,
        c.hStream as usize,
        params,
        &attrs,
    )
}

/// A `CUfunction_attribute` of a function, read or (with `set`) written.
pub(crate) fn func_attr(func: usize, attr: i32, value: i32, set: bool) -> Result<i32, CuStatus> {
    if func == 0 || attr < 0 {
        return Err(CuStatus::INVALID_VALUE);
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
    Ok(mem::call(cmd, 0).map(|c| c.result0 as i32)?)
}

exports! {
    library "libcuda.so.1", status CuStatus;
    implemented fn cuModuleLoadData(module: Out<usize>, image: In<c_void>) => load_data(module, image);
    implemented fn cuModuleGetFunction(f: Out<usize>, module: usize, name: CStrIn) => get_function(f, module, name);
    implemented fn cuModuleUnload(module: usize) => Ok(module::unload(module as u64)?);
    implemented fn cuModuleGetGlobal_v2(dptr: Out<u64>, bytes: Out<usize>, module: usize, name: CStrIn) => get_global(dptr, bytes, module, name);
    implemented fn cuLaunchKernel(f: usize, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, shared: u32, stream: usize, params: In<*const c_void>, extra: In<*const c_void>)
        => launch_kernel(f, [gx, gy, gz], [bx, by, bz], shared, stream, params, extra);
    implemented fn cuLaunchKernelEx(config: In<LaunchConfig>, f: usize, params: In<*const c_void>, extra: In<*const c_void>) => launch_kernel_ex(config, f, params, extra);
    /// A `CUfunction_attribute` of a function.
    implemented fn cuFuncGetAttribute(value: Out<i32>, attr: i32, func: usize) => Ok(value.write(func_attr(func, attr, 0, false)?)?);
    /// The settable attributes (maximum dynamic shared memory, preferred carveout).
    implemented fn cuFuncSetAttribute(func: usize, attr: i32, value: i32) => func_attr(func, attr, value, true).map(|_| ());
}
