//! Memory: `cuMemAlloc_v2`, `cuMemFree_v2`, `cuMemGetInfo_v2`, the copies
//! (`cuMemcpy{HtoD,DtoH,DtoD}{,Async}_v2`; pinned and staged pageable host memory), the
//! memsets (`cuMemsetD{8,16,32}_v2`, `cuMemsetD{8,32}Async`), pinned host memory
//! (`cuMemAllocHost_v2`, `cuMemHostAlloc`, `cuMemFreeHost`) and `cuPointerGetAttribute`;
//! and the virtual memory management functions, which are not supported.

use super::{put, status_of, CuResult, INVALID_VALUE, NOT_SUPPORTED, SUCCESS};
use crate::mem;
use std::ffi::c_void;
use std::sync::Once;
use vgpu_proto::cmd::*;
use vgpu_proto::Command;

/// `cuMemAlloc_v2`.
#[no_mangle]
pub extern "C" fn cuMemAlloc_v2(dptr: *mut u64, size: usize) -> CuResult {
    if size == 0 {
        return INVALID_VALUE;
    }
    match mem::alloc(size) {
        Ok(p) => put(dptr, p),
        Err(e) => e,
    }
}

/// `cuMemFree_v2`.
#[no_mangle]
pub extern "C" fn cuMemFree_v2(dptr: u64) -> CuResult {
    status_of(mem::free(dptr))
}

/// `cuMemGetInfo_v2`: the PD's view (its quota), as NVML reports it.
#[no_mangle]
pub extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CuResult {
    match mem::call(Command::MEM_GET_INFO(bytemuck::Zeroable::zeroed()), 0) {
        Ok(c) => {
            let r = put(free, c.result0 as usize);
            if r != SUCCESS {
                return r;
            }
            put(total, c.result1 as usize)
        }
        Err(e) => e,
    }
}

/// `cuMemcpyHtoD_v2`.
#[no_mangle]
pub extern "C" fn cuMemcpyHtoD_v2(dst: u64, src: *const c_void, n: usize) -> CuResult {
    if src.is_null() && n > 0 {
        return INVALID_VALUE;
    }
    status_of(mem::htod(dst, src.cast(), n, 0, true))
}

/// `cuMemcpyDtoH_v2`.
#[no_mangle]
pub extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, n: usize) -> CuResult {
    if dst.is_null() && n > 0 {
        return INVALID_VALUE;
    }
    status_of(mem::dtoh(dst.cast(), src, n, 0, true))
}

/// `cuMemcpyDtoD_v2` (ordered on the NULL stream, complete on return).
#[no_mangle]
pub extern "C" fn cuMemcpyDtoD_v2(dst: u64, src: u64, n: usize) -> CuResult {
    if n == 0 {
        return SUCCESS;
    }
    let args = CopyDtoDArgs {
        dst,
        src,
        len: n as u64,
        rsv: 0,
    };
    status_of(mem::post(Command::MEMCPY_DTOD(args), 0).and_then(|_| {
        mem::call(Command::STREAM_SYNCHRONIZE(bytemuck::Zeroable::zeroed()), 0).map(|_| ())
    }))
}

/// `cuMemcpyHtoDAsync_v2`: no round trip from pinned memory; staged (and complete on
/// return, as CUDA does for pageable memory) otherwise.
#[no_mangle]
pub extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: u64,
    src: *const c_void,
    n: usize,
    stream: usize,
) -> CuResult {
    if src.is_null() && n > 0 {
        return INVALID_VALUE;
    }
    status_of(mem::htod(dst, src.cast(), n, mem::stream(stream), false))
}

/// `cuMemcpyDtoHAsync_v2`.
#[no_mangle]
pub extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: u64,
    n: usize,
    stream: usize,
) -> CuResult {
    if dst.is_null() && n > 0 {
        return INVALID_VALUE;
    }
    status_of(mem::dtoh(dst.cast(), src, n, mem::stream(stream), false))
}

/// `cuMemcpyDtoDAsync_v2`.
#[no_mangle]
pub extern "C" fn cuMemcpyDtoDAsync_v2(dst: u64, src: u64, n: usize, stream: usize) -> CuResult {
    if n == 0 {
        return SUCCESS;
    }
    status_of(mem::post(
        Command::MEMCPY_DTOD(CopyDtoDArgs {
            dst,
            src,
            len: n as u64,
            rsv: 0,
        }),
        mem::stream(stream),
    ))
}

fn memset(dst: u64, value: u32, elem: u8, count: usize, stream: usize, sync: bool) -> CuResult {
    if count == 0 {
        return SUCCESS;
    }
    let args = MemsetArgs {
        dst,
        count: count as u64,
        value,
        elem_size: elem,
        ..bytemuck::Zeroable::zeroed()
    };
    let s = mem::stream(stream);
    let r = mem::post(Command::MEMSET(args), s);
    if sync {
        return status_of(r.and_then(|_| {
            mem::call(Command::STREAM_SYNCHRONIZE(bytemuck::Zeroable::zeroed()), s).map(|_| ())
        }));
    }
    status_of(r)
}

/// `cuMemsetD8_v2`.
#[no_mangle]
pub extern "C" fn cuMemsetD8_v2(dst: u64, v: u8, n: usize) -> CuResult {
    memset(dst, u32::from(v), 1, n, 0, true)
}

/// `cuMemsetD16_v2`.
#[no_mangle]
pub extern "C" fn cuMemsetD16_v2(dst: u64, v: u16, n: usize) -> CuResult {
    memset(dst, u32::from(v), 2, n, 0, true)
}

/// `cuMemsetD32_v2`.
#[no_mangle]
pub extern "C" fn cuMemsetD32_v2(dst: u64, v: u32, n: usize) -> CuResult {
    memset(dst, v, 4, n, 0, true)
}

/// `cuMemsetD8Async`.
#[no_mangle]
pub extern "C" fn cuMemsetD8Async(dst: u64, v: u8, n: usize, stream: usize) -> CuResult {
    memset(dst, u32::from(v), 1, n, stream, false)
}

/// `cuMemsetD32Async`.
#[no_mangle]
pub extern "C" fn cuMemsetD32Async(dst: u64, v: u32, n: usize, stream: usize) -> CuResult {
    memset(dst, v, 4, n, stream, false)
}

/// `cuMemAllocHost_v2`: pinned memory from a DMA window.
#[no_mangle]
pub extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, size: usize) -> CuResult {
    match mem::alloc_host(size) {
        Ok(p) => put(pp, p.cast()),
        Err(e) => e,
    }
}

/// `cuMemHostAlloc` (every flag gets window memory, which is pinned and shared).
#[no_mangle]
pub extern "C" fn cuMemHostAlloc(pp: *mut *mut c_void, size: usize, _flags: u32) -> CuResult {
    cuMemAllocHost_v2(pp, size)
}

/// `cuMemFreeHost`.
#[no_mangle]
pub extern "C" fn cuMemFreeHost(p: *mut c_void) -> CuResult {
    status_of(mem::free_host(p.cast()))
}

/// `cuPointerGetAttribute`: `CU_POINTER_ATTRIBUTE_MEMORY_TYPE` (2) only.
#[no_mangle]
pub extern "C" fn cuPointerGetAttribute(data: *mut c_void, attribute: i32, ptr: u64) -> CuResult {
    const MEMORY_TYPE: i32 = 2;
    if attribute != MEMORY_TYPE {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            log::warn!(
                "vgpu: cuPointerGetAttribute: only CU_POINTER_ATTRIBUTE_MEMORY_TYPE is supported"
            )
        });
        return NOT_SUPPORTED;
    }
    if !mem::is_device(ptr) {
        return INVALID_VALUE;
    }
    put(data.cast::<u32>(), 2) // CU_MEMORYTYPE_DEVICE
}

/// Defines exported functions that are not implemented: each returns
/// CUDA_ERROR_NOT_SUPPORTED and logs its name once. Arguments are ignored, which the C ABI
/// allows for any parameter list (the caller owns the argument area).
macro_rules! not_supported {
    ($($name:ident),* $(,)?) => {
        $(
            #[no_mangle]
            pub extern "C" fn $name() -> CuResult {
                static ONCE: Once = Once::new();
                ONCE.call_once(|| log::warn!("vgpu: {} is not supported", stringify!($name)));
                NOT_SUPPORTED
            }
        )*
        /// Exported functions that return CUDA_ERROR_NOT_SUPPORTED.
        pub const NOT_SUPPORTED_FUNCTIONS: &[&str] = &[$(stringify!($name)),*];
    };
}

// Virtual memory management: the device reports it unsupported (attribute 102 = 0), so
// ggml uses plain allocations; the symbols must exist for the loader.
not_supported!(
    cuMemAddressFree,
    cuMemAddressReserve,
    cuMemCreate,
    cuMemGetAllocationGranularity,
    cuMemMap,
    cuMemRelease,
    cuMemSetAccess,
    cuMemUnmap,
);

/// Exported memory, stream and event functions (this file and `stream.rs`) that are
/// implemented.
pub const IMPLEMENTED_MEMORY_FUNCTIONS: &[&str] = &[
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemGetInfo_v2",
    "cuMemcpyHtoD_v2",
    "cuMemcpyDtoH_v2",
    "cuMemcpyDtoD_v2",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuMemcpyDtoDAsync_v2",
    "cuMemsetD8_v2",
    "cuMemsetD16_v2",
    "cuMemsetD32_v2",
    "cuMemsetD8Async",
    "cuMemsetD32Async",
    "cuMemAllocHost_v2",
    "cuMemHostAlloc",
    "cuMemFreeHost",
    "cuPointerGetAttribute",
    // stream.rs
    "cuCtxSynchronize",
    "cuStreamCreate",
    "cuStreamDestroy_v2",
    "cuStreamSynchronize",
    "cuStreamQuery",
    "cuStreamWaitEvent",
    "cuEventCreate",
    "cuEventDestroy_v2",
    "cuEventRecord",
    "cuEventSynchronize",
    "cuEventQuery",
    "cuEventElapsedTime",
];
