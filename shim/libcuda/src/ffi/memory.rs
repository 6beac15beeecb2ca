//! Memory, one line each in the table at the end (`vgpu_shim_abi::exports!`): allocation,
//! the copies (pinned and staged pageable host memory), the memsets, pinned host memory and
//! `cuPointerGetAttribute`; and the virtual memory management functions, which are not
//! supported (the device reports attribute 102 = 0, so ggml uses plain allocations; the
//! symbols must exist for the loader).

use crate::mem;
use bytemuck::Zeroable;
use std::ffi::c_void;
use std::sync::Once;
use vgpu_proto::cmd::*;
use vgpu_proto::Command;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::{In, Out};
use vgpu_shim_abi::status::CuStatus;

type R = Result<(), CuStatus>;

fn alloc(dptr: Out<u64>, size: usize) -> R {
    if size == 0 {
        return Err(CuStatus::INVALID_VALUE);
    }
    Ok(dptr.write(mem::alloc(size)?)?)
}

/// `cuMemGetInfo_v2`: the PD's view (its quota), as NVML reports it.
fn get_info(free: Out<usize>, total: Out<usize>) -> R {
    let c = mem::call(Command::MEM_GET_INFO(Zeroable::zeroed()), 0)?;
    free.write(c.result0 as usize)?;
    Ok(total.write(c.result1 as usize)?)
}

/// Waits for the NULL stream (or `stream`) after a copy or memset CUDA completes on return.
fn complete(stream: u64) -> R {
    mem::call(Command::STREAM_SYNCHRONIZE(Zeroable::zeroed()), stream)?;
    Ok(())
}

/// Host to device; `stream` None: on the NULL stream and complete on return. From pinned
/// memory there is no round trip; pageable memory is staged (and complete on return, as CUDA
/// does for pageable memory).
pub(crate) fn htod(dst: u64, src: *const c_void, n: usize, stream: Option<usize>) -> R {
    if src.is_null() && n > 0 {
        return Err(CuStatus::INVALID_VALUE);
    }
    let s = stream.map_or(0, mem::stream);
    Ok(mem::htod(dst, src.cast(), n, s, stream.is_none())?)
}

/// Device to host, as [`htod`].
pub(crate) fn dtoh(dst: *mut c_void, src: u64, n: usize, stream: Option<usize>) -> R {
    if dst.is_null() && n > 0 {
        return Err(CuStatus::INVALID_VALUE);
    }
    let s = stream.map_or(0, mem::stream);
    Ok(mem::dtoh(dst.cast(), src, n, s, stream.is_none())?)
}

/// Device to device, as [`htod`].
pub(crate) fn dtod(dst: u64, src: u64, n: usize, stream: Option<usize>) -> R {
    if n == 0 {
        return Ok(());
    }
    let args = CopyDtoDArgs {
        dst,
        src,
        len: n as u64,
        rsv: 0,
    };
    let s = stream.map_or(0, mem::stream);
    mem::post(Command::MEMCPY_DTOD(args), s)?;
    match stream {
        None => complete(0),
        Some(_) => Ok(()),
    }
}

/// A memset of `count` elements of `elem` bytes; `stream` None: complete on return.
fn memset(dst: u64, value: u32, elem: u8, count: usize, stream: Option<usize>) -> R {
    if count == 0 {
        return Ok(());
    }
    let args = MemsetArgs {
        dst,
        count: count as u64,
        value,
        elem_size: elem,
        ..Zeroable::zeroed()
    };
    let s = stream.map_or(0, mem::stream);
    mem::post(Command::MEMSET(args), s)?;
    match stream {
        None => complete(s),
        Some(_) => Ok(()),
    }
}

/// `cuMemAllocHost_v2`: pinned memory from a DMA window (every `cuMemHostAlloc` flag gets
/// window memory, which is pinned and shared).
fn alloc_host(pp: Out<*mut c_void>, size: usize) -> R {
    Ok(pp.write(mem::alloc_host(size)?.cast())?)
}

/// `cuPointerGetAttribute`: `CU_POINTER_ATTRIBUTE_MEMORY_TYPE` (2) only.
fn pointer_attribute(data: Out<c_void>, attribute: i32, ptr: u64) -> R {
    const MEMORY_TYPE: i32 = 2;
    if attribute != MEMORY_TYPE {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            log::warn!(
                "vgpu: cuPointerGetAttribute: only CU_POINTER_ATTRIBUTE_MEMORY_TYPE is supported"
            )
        });
        return Err(CuStatus::NOT_SUPPORTED);
    }
    if !mem::is_device(ptr) {
        return Err(CuStatus::INVALID_VALUE);
    }
    Ok(data.cast::<u32>().write(2)?) // CU_MEMORYTYPE_DEVICE
}

exports! {
    library "libcuda.so.1", status CuStatus;
    implemented fn cuMemAlloc_v2(dptr: Out<u64>, size: usize) => alloc(dptr, size);
    implemented fn cuMemFree_v2(dptr: u64) => Ok(mem::free(dptr)?);
    implemented fn cuMemGetInfo_v2(free: Out<usize>, total: Out<usize>) => get_info(free, total);
    implemented fn cuMemcpyHtoD_v2(dst: u64, src: In<c_void>, n: usize) => htod(dst, src.as_ptr(), n, None);
    implemented fn cuMemcpyDtoH_v2(dst: Out<c_void>, src: u64, n: usize) => dtoh(dst.as_ptr(), src, n, None);
    implemented fn cuMemcpyDtoD_v2(dst: u64, src: u64, n: usize) => dtod(dst, src, n, None);
    implemented fn cuMemcpyHtoDAsync_v2(dst: u64, src: In<c_void>, n: usize, stream: usize) => htod(dst, src.as_ptr(), n, Some(stream));
    implemented fn cuMemcpyDtoHAsync_v2(dst: Out<c_void>, src: u64, n: usize, stream: usize) => dtoh(dst.as_ptr(), src, n, Some(stream));
    implemented fn cuMemcpyDtoDAsync_v2(dst: u64, src: u64, n: usize, stream: usize) => dtod(dst, src, n, Some(stream));
    implemented fn cuMemsetD8_v2(dst: u64, v: u8, n: usize) => memset(dst, u32::from(v), 1, n, None);
    implemented fn cuMemsetD16_v2(dst: u64, v: u16, n: usize) => memset(dst, u32::from(v), 2, n, None);
    implemented fn cuMemsetD32_v2(dst: u64, v: u32, n: usize) => memset(dst, v, 4, n, None);
    implemented fn cuMemsetD8Async(dst: u64, v: u8, n: usize, stream: usize) => memset(dst, u32::from(v), 1, n, Some(stream));
    implemented fn cuMemsetD16Async(dst: u64, v: u16, n: usize, stream: usize) => memset(dst, u32::from(v), 2, n, Some(stream));
    implemented fn cuMemsetD32Async(dst: u64, v: u32, n: usize, stream: usize) => memset(dst, v, 4, n, Some(stream));
    implemented fn cuMemAllocHost_v2(pp: Out<*mut c_void>, size: usize) => alloc_host(pp, size);
    implemented fn cuMemHostAlloc(pp: Out<*mut c_void>, size: usize, _flags: u32) => alloc_host(pp, size);
    implemented fn cuMemFreeHost(p: In<c_void>) => Ok(mem::free_host(p.as_ptr() as *mut u8)?);
    implemented fn cuPointerGetAttribute(data: Out<c_void>, attribute: i32, ptr: u64) => pointer_attribute(data, attribute, ptr);
    /// Only `MAP_SHARED` mappings of a file (memfd, shared memory): see `hostreg.rs`.
    implemented fn cuMemHostRegister_v2(p: In<c_void>, size: usize, flags: u32) => Ok(mem::register_host(p.as_ptr() as *mut u8, size, flags)?);
    implemented fn cuMemHostUnregister(p: In<c_void>) => Ok(mem::unregister_host(p.as_ptr() as *mut u8)?);
    not_supported fn cuMemAddressFree;
    not_supported fn cuMemAddressReserve;
    not_supported fn cuMemCreate;
    not_supported fn cuMemGetAllocationGranularity;
    not_supported fn cuMemMap;
    not_supported fn cuMemRelease;
    not_supported fn cuMemSetAccess;
    not_supported fn cuMemUnmap;
}
