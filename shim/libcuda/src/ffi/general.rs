//! The driver API general programs use beyond ggml's subset, one line each
//! (`vgpu_shim_abi::exports!`): module loading from files and with JIT options, unified
//! copies, allocation ranges, stream priorities and flags, parameter layouts and the
//! occupancy calculation, host functions (`hostfn.rs`). The bodies lower them onto the calls of `memory.rs`, `stream.rs`
//! and `module.rs`.

use crate::handles::{self, Kind};
use crate::hostfn::{HostFn, StreamCallback};
use crate::{mem, module};
use std::ffi::c_void;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::occupancy::{max_active_blocks, DEVICE_ATTRIBUTES, FUNCTION_ATTRIBUTES};
use vgpu_shim_abi::ptr::{CStrIn, In, Out};
use vgpu_shim_abi::status::CuStatus;

type R = Result<(), CuStatus>;

/// `cuModuleLoadDataEx`: JIT options are hints to a compiler the soft device does not have;
/// they are ignored and no log is written back.
fn load_data_ex(m: Out<usize>, image: In<c_void>) -> R {
    super::module::load_data(m, image)
}

/// `cuModuleLoad`: a fatbin, cubin or PTX file.
fn load_file(m: Out<usize>, path: CStrIn) -> R {
    let path = path.read()?;
    let mut image = std::fs::read(&path).map_err(|e| {
        log::warn!("vgpu: cuModuleLoad({path}): {e}");
        CuStatus::FILE_NOT_FOUND
    })?;
    let binary = image.starts_with(&0xBA55_ED50u32.to_le_bytes()) || image.starts_with(b"\x7fELF");
    if !binary && image.last() != Some(&0) {
        image.push(0); // PTX text, NUL-terminated as in memory
    }
    let h = module::load(&image).map_err(CuStatus)?;
    Ok(m.write(h as usize)?)
}

/// `cuMemcpy` / `cuMemcpyAsync` with unified addressing: the direction comes from the
/// addresses (device allocations of this process, or host memory).
fn copy(dst: u64, src: u64, n: usize, stream: Option<usize>) -> R {
    let (d, s) = (mem::is_device(dst), mem::is_device(src));
    use super::memory::{dtod, dtoh, htod};
    match (d, s) {
        (true, true) => dtod(dst, src, n, stream),
        (true, false) => htod(dst, src as *const c_void, n, stream),
        (false, true) => dtoh(dst as *mut c_void, src, n, stream),
        (false, false) => {
            log::warn!("vgpu: cuMemcpy between two host addresses is not supported");
            Err(CuStatus::NOT_SUPPORTED)
        }
    }
}

/// `cuMemGetAddressRange_v2`: the allocation holding `ptr` (either out-pointer may be null).
fn address_range(base: Out<u64>, size: Out<usize>, ptr: u64) -> R {
    let (b, s) = mem::allocation_of(ptr).ok_or(CuStatus::NOT_FOUND)?;
    if !base.is_null() {
        base.write(b)?;
    }
    if !size.is_null() {
        size.write(s as usize)?;
    }
    Ok(())
}

/// `cuStreamCreateWithPriority`: the device has one priority (the range is (0, 0)), to which
/// CUDA clamps any requested one.
fn create_with_priority(s: Out<usize>, flags: u32, _priority: i32) -> R {
    super::stream::stream_create(s, flags)
}

fn stream_priority(s: usize, out: Out<i32>) -> R {
    if s > 2 {
        handles::check(Kind::Stream, s as u64).map_err(CuStatus)?;
    }
    Ok(out.write(0)?)
}

/// `cuStreamGetFlags`: what the stream was made with (the NULL streams: 0).
fn stream_flags(s: usize, out: Out<u32>) -> R {
    let f = match s {
        0..=2 => 0,
        s => handles::flags(Kind::Stream, s as u64).map_err(CuStatus)?,
    };
    Ok(out.write(f)?)
}

/// `cuFuncGetParamInfo`: a parameter's offset and size in the parameter buffer.
fn param_info(func: usize, index: usize, offset: Out<usize>, size: Out<usize>) -> R {
    let f = module::function_info(func as u64).ok_or(CuStatus::INVALID_HANDLE)?;
    if !f.layout_known {
        return Err(CuStatus::NOT_SUPPORTED);
    }
    let &(o, n) = f.params.get(index).ok_or(CuStatus::INVALID_VALUE)?;
    if !offset.is_null() {
        offset.write(o as usize)?;
    }
    if !size.is_null() {
        size.write(n as usize)?;
    }
    Ok(())
}

/// `cuOccupancyMaxActiveBlocksPerMultiprocessor(WithFlags)`.
fn occupancy(out: Out<i32>, func: usize, block_size: i32, dyn_shared: usize) -> R {
    if block_size <= 0 {
        return Err(CuStatus::INVALID_VALUE);
    }
    let mut device = [0i32; 6];
    for (v, a) in device.iter_mut().zip(DEVICE_ATTRIBUTES) {
        *v = super::device::attr(a, 0)?;
    }
    let mut function = [0i32; 2];
    for (v, a) in function.iter_mut().zip(FUNCTION_ATTRIBUTES) {
        *v = super::module::func_attr(func, a, 0, false)?;
    }
    Ok(out.write(max_active_blocks(device, function, block_size, dyn_shared))?)
}

exports! {
    library "libcuda.so.1", status CuStatus;
    implemented fn cuModuleLoadDataEx(module: Out<usize>, image: In<c_void>, _n: u32, _options: In<c_void>, _values: In<c_void>) => load_data_ex(module, image);
    implemented fn cuModuleLoad(module: Out<usize>, path: CStrIn) => load_file(module, path);
    implemented fn cuModuleLoadFatBinary(module: Out<usize>, image: In<c_void>) => load_data_ex(module, image);
    implemented fn cuMemcpy(dst: u64, src: u64, n: usize) => copy(dst, src, n, None);
    implemented fn cuMemcpyAsync(dst: u64, src: u64, n: usize, stream: usize) => copy(dst, src, n, Some(stream));
    implemented fn cuMemGetAddressRange_v2(base: Out<u64>, size: Out<usize>, ptr: u64) => address_range(base, size, ptr);
    implemented fn cuStreamCreateWithPriority(stream: Out<usize>, flags: u32, priority: i32) => create_with_priority(stream, flags, priority);
    implemented fn cuStreamGetPriority(stream: usize, priority: Out<i32>) => stream_priority(stream, priority);
    implemented fn cuStreamGetFlags(stream: usize, flags: Out<u32>) => stream_flags(stream, flags);
    implemented fn cuFuncGetParamInfo(func: usize, index: usize, offset: Out<usize>, size: Out<usize>) => param_info(func, index, offset, size);
    implemented fn cuOccupancyMaxActiveBlocksPerMultiprocessor(blocks: Out<i32>, func: usize, block_size: i32, dyn_shared: usize) => occupancy(blocks, func, block_size, dyn_shared);
    implemented fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks: Out<i32>, func: usize, block_size: i32, dyn_shared: usize, _flags: u32) => occupancy(blocks, func, block_size, dyn_shared);
    implemented fn cuLaunchHostFunc(stream: usize, f: Option<HostFn>, user: *mut c_void) => crate::hostfn::launch_host_func(stream, f, user);
    implemented fn cuStreamAddCallback(stream: usize, f: Option<StreamCallback>, user: *mut c_void, flags: u32) => crate::hostfn::add_callback(stream, f, user, flags);
    // The library and kernel handles of CUDA 12, and the block-size search, are not written.
    not_supported fn cuOccupancyMaxPotentialBlockSize;
    not_supported fn cuOccupancyMaxPotentialBlockSizeWithFlags;
    not_supported fn cuLibraryLoadData;
    not_supported fn cuLibraryLoadFromFile;
    not_supported fn cuLibraryUnload;
    not_supported fn cuLibraryGetKernel;
    not_supported fn cuLibraryGetModule;
    not_supported fn cuKernelGetFunction;
    not_supported fn cuKernelGetAttribute;
    not_supported fn cuMemAllocManaged;
    not_supported fn cuMemHostRegister_v2;
    not_supported fn cuMemHostUnregister;
    not_supported fn cuMemcpyPeer;
    not_supported fn cuMemcpyPeerAsync;
}
