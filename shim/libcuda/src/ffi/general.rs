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

/// How many blocks of `block_size` threads of `func` fit on one multiprocessor.
fn active_blocks(func: usize, block_size: i32, dyn_shared: usize) -> Result<i32, CuStatus> {
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
    Ok(max_active_blocks(device, function, block_size, dyn_shared))
}

/// `cuOccupancyMaxActiveBlocksPerMultiprocessor(WithFlags)`.
fn occupancy(out: Out<i32>, func: usize, block_size: i32, dyn_shared: usize) -> R {
    Ok(out.write(active_blocks(func, block_size, dyn_shared)?)?)
}

/// `CUoccupancyB2DSize`: dynamic shared memory for a block size.
pub type BlockToShared = unsafe extern "C" fn(block_size: i32) -> usize;

/// `cuOccupancyMaxPotentialBlockSize(WithFlags)`: the block size (a multiple of the warp, up
/// to the function's limit and `limit` when nonzero) with the most threads resident per
/// multiprocessor, the largest such size on ties, and the grid that fills the device with it.
fn potential_block_size(
    min_grid: Out<i32>,
    block: Out<i32>,
    func: usize,
    to_shared: Option<BlockToShared>,
    shared: usize,
    limit: i32,
) -> R {
    if min_grid.is_null() || block.is_null() {
        return Err(CuStatus::INVALID_VALUE);
    }
    let warp = super::device::attr(10, 0)?.max(1);
    let sms = super::device::attr(16, 0)?.max(1); // MULTIPROCESSOR_COUNT
    let max = super::module::func_attr(func, 0, 0, false)?; // MAX_THREADS_PER_BLOCK
    let max = if limit > 0 { max.min(limit) } else { max };
    let (mut best, mut best_blocks, mut best_threads) = (0, 0, -1i64);
    let mut size = warp;
    while size <= max {
        let dynamic = match to_shared {
            // SAFETY: the application's callback with CUDA's signature (its contract).
            Some(f) => unsafe { f(size) },
            None => shared,
        };
        let n = active_blocks(func, size, dynamic)?;
        let threads = i64::from(n) * i64::from(size);
        if threads >= best_threads && n > 0 {
            (best, best_blocks, best_threads) = (size, n, threads);
        }
        size += warp;
    }
    if best == 0 {
        return Err(CuStatus::INVALID_VALUE);
    }
    min_grid.write(best_blocks.saturating_mul(sms))?;
    Ok(block.write(best)?)
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
    implemented fn cuOccupancyMaxPotentialBlockSize(min_grid: Out<i32>, block: Out<i32>, func: usize, to_shared: Option<BlockToShared>, shared: usize, limit: i32)
        => potential_block_size(min_grid, block, func, to_shared, shared, limit);
    implemented fn cuOccupancyMaxPotentialBlockSizeWithFlags(min_grid: Out<i32>, block: Out<i32>, func: usize, to_shared: Option<BlockToShared>, shared: usize, limit: i32, _flags: u32)
        => potential_block_size(min_grid, block, func, to_shared, shared, limit);
    // CUDA 12's libraries and kernels: a library is a module loaded at once (its options are
    // hints), a kernel is its function.
    implemented fn cuLibraryLoadData(library: Out<usize>, code: In<c_void>, _jit_options: In<c_void>, _jit_values: In<c_void>, _n_jit: u32, _options: In<c_void>, _values: In<c_void>, _n: u32)
        => super::module::load_data(library, code);
    implemented fn cuLibraryLoadFromFile(library: Out<usize>, path: CStrIn, _jit_options: In<c_void>, _jit_values: In<c_void>, _n_jit: u32, _options: In<c_void>, _values: In<c_void>, _n: u32)
        => load_file(library, path);
    implemented fn cuLibraryUnload(library: usize) => Ok(module::unload(library as u64)?);
    implemented fn cuLibraryGetModule(module_: Out<usize>, library: usize) => Ok(module_.write(library)?);
    implemented fn cuLibraryGetKernel(kernel: Out<usize>, library: usize, name: CStrIn)
        => Ok(kernel.write(module::function(library as u64, &name.read()?)? as usize)?);
    implemented fn cuKernelGetFunction(func: Out<usize>, kernel: usize) => Ok(func.write(kernel)?);
    implemented fn cuKernelGetAttribute(value: Out<i32>, attr: i32, kernel: usize, _dev: i32) => Ok(value.write(super::module::func_attr(kernel, attr, 0, false)?)?);
    not_supported fn cuMemAllocManaged;
    not_supported fn cuMemcpyPeer;
    not_supported fn cuMemcpyPeerAsync;
}
