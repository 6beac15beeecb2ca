//! The exported driver API. The pointer writes of the C ABI are confined to [`put`] and
//! [`put_str`]; everything else is safe code.

use crate::state::{device_count, initialized, session};
use std::ffi::c_char;
use std::sync::Once;
use vgpu_proto::info::DeviceInfo;

type CuResult = u32;
const SUCCESS: CuResult = 0;
const INVALID_VALUE: CuResult = 1;
const NOT_INITIALIZED: CuResult = 3;
const INVALID_DEVICE: CuResult = 101;
const NOT_SUPPORTED: CuResult = 801;

/// Writes `v` through an out-pointer; INVALID_VALUE for null.
pub(crate) fn put<T>(p: *mut T, v: T) -> CuResult {
    if p.is_null() {
        return INVALID_VALUE;
    }
    // SAFETY: the caller of the CUDA API passes a valid out-pointer for T (CUDA's contract);
    // null was refused above.
    unsafe { p.write_unaligned(v) };
    SUCCESS
}

/// Copies `s` as a NUL-terminated string into a caller buffer of `len` bytes (truncating).
fn put_str(p: *mut c_char, len: i32, s: &str) -> CuResult {
    if p.is_null() || len <= 0 {
        return INVALID_VALUE;
    }
    let n = s.len().min(len as usize - 1);
    for (i, b) in s.as_bytes()[..n]
        .iter()
        .chain(std::iter::once(&0))
        .enumerate()
    {
        // SAFETY: the caller's buffer holds `len` bytes (CUDA's contract); i < n + 1 <= len.
        unsafe { p.add(i).write(*b as c_char) };
    }
    SUCCESS
}

fn device(dev: i32) -> Result<&'static DeviceInfo, CuResult> {
    let s = initialized().ok_or(NOT_INITIALIZED)?;
    let info = s.info.as_ref().ok_or(NOT_INITIALIZED)?;
    if dev < 0 || dev >= device_count() {
        return Err(INVALID_DEVICE);
    }
    Ok(info)
}

macro_rules! try_cu {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}

/// `cuInit`.
#[no_mangle]
pub extern "C" fn cuInit(flags: u32) -> CuResult {
    if flags != 0 {
        return INVALID_VALUE;
    }
    session().status.to_cuda()
}

/// `cuDriverGetVersion`: the advertised version, fixed.
#[no_mangle]
pub extern "C" fn cuDriverGetVersion(version: *mut i32) -> CuResult {
    put(version, crate::ADVERTISED_VERSION)
}

/// `cuDeviceGetCount`.
#[no_mangle]
pub extern "C" fn cuDeviceGetCount(count: *mut i32) -> CuResult {
    if initialized().is_none() {
        return NOT_INITIALIZED;
    }
    put(count, device_count())
}

/// `cuDeviceGet`.
#[no_mangle]
pub extern "C" fn cuDeviceGet(dev: *mut i32, ordinal: i32) -> CuResult {
    try_cu!(device(ordinal));
    put(dev, ordinal)
}

/// `cuDeviceGetAttribute`: from the device info, answered locally.
#[no_mangle]
pub extern "C" fn cuDeviceGetAttribute(value: *mut i32, attrib: i32, dev: i32) -> CuResult {
    let info = try_cu!(device(dev));
    match u32::try_from(attrib).ok().and_then(|a| info.attr(a)) {
        Some(v) => put(value, v),
        None => INVALID_VALUE,
    }
}

/// `cuDeviceGetName`.
#[no_mangle]
pub extern "C" fn cuDeviceGetName(name: *mut c_char, len: i32, dev: i32) -> CuResult {
    let info = try_cu!(device(dev));
    put_str(name, len, info.name())
}

/// `cuDeviceTotalMem_v2`.
#[no_mangle]
pub extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: i32) -> CuResult {
    let info = try_cu!(device(dev));
    put(bytes, info.total_mem as usize)
}

/// `cuDeviceTotalMem` (the pre-v2 entry point, same result).
#[no_mangle]
pub extern "C" fn cuDeviceTotalMem(bytes: *mut usize, dev: i32) -> CuResult {
    cuDeviceTotalMem_v2(bytes, dev)
}

/// `cuDeviceGetPCIBusId`: `domain:bus:device.function`.
#[no_mangle]
pub extern "C" fn cuDeviceGetPCIBusId(id: *mut c_char, len: i32, dev: i32) -> CuResult {
    let info = try_cu!(device(dev));
    let s = format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        info.pci_domain, info.pci_bus, info.pci_device, info.pci_function
    );
    put_str(id, len, &s)
}

/// `cuDeviceGetUuid`.
#[no_mangle]
pub extern "C" fn cuDeviceGetUuid(uuid: *mut [u8; 16], dev: i32) -> CuResult {
    let info = try_cu!(device(dev));
    put(uuid, info.uuid)
}

/// `cuDeviceGetUuid_v2`.
#[no_mangle]
pub extern "C" fn cuDeviceGetUuid_v2(uuid: *mut [u8; 16], dev: i32) -> CuResult {
    cuDeviceGetUuid(uuid, dev)
}

macro_rules! error_strings {
    ($( $code:literal => $name:literal, $text:literal; )*) => {
        fn error_name(code: u32) -> Option<&'static std::ffi::CStr> {
            match code { $( $code => Some($name), )* _ => None }
        }
        fn error_text(code: u32) -> Option<&'static std::ffi::CStr> {
            match code { $( $code => Some($text), )* _ => None }
        }
    };
}

error_strings! {
    0 => c"CUDA_SUCCESS", c"no error";
    1 => c"CUDA_ERROR_INVALID_VALUE", c"invalid argument";
    2 => c"CUDA_ERROR_OUT_OF_MEMORY", c"out of memory";
    3 => c"CUDA_ERROR_NOT_INITIALIZED", c"initialization error";
    46 => c"CUDA_ERROR_DEVICE_UNAVAILABLE", c"CUDA-capable device(s) is/are busy or unavailable";
    100 => c"CUDA_ERROR_NO_DEVICE", c"no CUDA-capable device is detected";
    101 => c"CUDA_ERROR_INVALID_DEVICE", c"invalid device ordinal";
    200 => c"CUDA_ERROR_INVALID_IMAGE", c"device kernel image is invalid";
    209 => c"CUDA_ERROR_NO_BINARY_FOR_GPU", c"no kernel image is available for execution on the device";
    400 => c"CUDA_ERROR_INVALID_HANDLE", c"invalid resource handle";
    500 => c"CUDA_ERROR_NOT_FOUND", c"named symbol not found";
    600 => c"CUDA_ERROR_NOT_READY", c"device not ready";
    700 => c"CUDA_ERROR_ILLEGAL_ADDRESS", c"an illegal memory access was encountered";
    719 => c"CUDA_ERROR_LAUNCH_FAILED", c"unspecified launch failure";
    801 => c"CUDA_ERROR_NOT_SUPPORTED", c"operation not supported";
    909 => c"CUDA_ERROR_TIMEOUT", c"timeout expired";
    999 => c"CUDA_ERROR_UNKNOWN", c"unknown error";
}

/// `cuGetErrorString`.
#[no_mangle]
pub extern "C" fn cuGetErrorString(error: u32, text: *mut *const c_char) -> CuResult {
    match error_text(error) {
        Some(s) => put(text, s.as_ptr()),
        None => {
            let _ = put(text, std::ptr::null());
            INVALID_VALUE
        }
    }
}

/// `cuGetErrorName`.
#[no_mangle]
pub extern "C" fn cuGetErrorName(error: u32, text: *mut *const c_char) -> CuResult {
    match error_name(error) {
        Some(s) => put(text, s.as_ptr()),
        None => {
            let _ = put(text, std::ptr::null());
            INVALID_VALUE
        }
    }
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

/// Exported functions that are implemented.
pub const IMPLEMENTED_FUNCTIONS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetAttribute",
    "cuDeviceGetName",
    "cuDeviceTotalMem_v2",
    "cuDeviceTotalMem",
    "cuDeviceGetPCIBusId",
    "cuDeviceGetUuid",
    "cuDeviceGetUuid_v2",
    "cuGetErrorString",
    "cuGetErrorName",
];

// ---- memory, copies, streams, events (mem.rs) ----

use crate::handles::{self, Kind};
use crate::mem;
use std::ffi::c_void;
use vgpu_proto::cmd::*;
use vgpu_proto::payload::LaunchAttr;
use vgpu_proto::Command;

fn done(r: Result<(), CuResult>) -> CuResult {
    r.err().unwrap_or(SUCCESS)
}

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
    done(mem::free(dptr))
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
    done(mem::htod(dst, src.cast(), n, 0, true))
}

/// `cuMemcpyDtoH_v2`.
#[no_mangle]
pub extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, n: usize) -> CuResult {
    if dst.is_null() && n > 0 {
        return INVALID_VALUE;
    }
    done(mem::dtoh(dst.cast(), src, n, 0, true))
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
    done(mem::post(Command::MEMCPY_DTOD(args), 0).and_then(|_| {
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
    done(mem::htod(dst, src.cast(), n, mem::stream(stream), false))
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
    done(mem::dtoh(dst.cast(), src, n, mem::stream(stream), false))
}

/// `cuMemcpyDtoDAsync_v2`.
#[no_mangle]
pub extern "C" fn cuMemcpyDtoDAsync_v2(dst: u64, src: u64, n: usize, stream: usize) -> CuResult {
    if n == 0 {
        return SUCCESS;
    }
    done(mem::post(
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
        return done(r.and_then(|_| {
            mem::call(Command::STREAM_SYNCHRONIZE(bytemuck::Zeroable::zeroed()), s).map(|_| ())
        }));
    }
    done(r)
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

/// `cuCtxSynchronize`.
#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> CuResult {
    done(mem::call(Command::CTX_SYNCHRONIZE(bytemuck::Zeroable::zeroed()), 0).map(|_| ()))
}

/// `cuStreamCreate`.
#[no_mangle]
pub extern "C" fn cuStreamCreate(stream: *mut usize, flags: u32) -> CuResult {
    let args = StreamCreateArgs {
        flags: flags & stream_flags::NON_BLOCKING,
        ..bytemuck::Zeroable::zeroed()
    };
    match mem::call(Command::STREAM_CREATE(args), 0) {
        Ok(c) => {
            handles::created(Kind::Stream, c.result0);
            put(stream, c.result0 as usize)
        }
        Err(e) => e,
    }
}

/// `cuStreamDestroy_v2`.
#[no_mangle]
pub extern "C" fn cuStreamDestroy_v2(stream: usize) -> CuResult {
    if stream <= 2 {
        return INVALID_VALUE;
    }
    let r = mem::call(
        Command::STREAM_DESTROY(bytemuck::Zeroable::zeroed()),
        stream as u64,
    );
    if r.is_ok() {
        handles::destroyed(Kind::Stream, stream as u64);
    }
    done(r.map(|_| ()))
}

/// `cuStreamSynchronize`.
#[no_mangle]
pub extern "C" fn cuStreamSynchronize(stream: usize) -> CuResult {
    done(
        mem::call(
            Command::STREAM_SYNCHRONIZE(bytemuck::Zeroable::zeroed()),
            mem::stream(stream),
        )
        .map(|_| ()),
    )
}

/// `cuStreamQuery`.
#[no_mangle]
pub extern "C" fn cuStreamQuery(stream: usize) -> CuResult {
    done(
        mem::call(
            Command::STREAM_QUERY(bytemuck::Zeroable::zeroed()),
            mem::stream(stream),
        )
        .map(|_| ()),
    )
}

/// `cuStreamWaitEvent`.
#[no_mangle]
pub extern "C" fn cuStreamWaitEvent(stream: usize, event: usize, flags: u32) -> CuResult {
    try_cu!(handles::check(Kind::Event, event as u64));
    let args = StreamWaitEventArgs {
        event: event as u64,
        flags,
        ..bytemuck::Zeroable::zeroed()
    };
    done(mem::post(
        Command::STREAM_WAIT_EVENT(args),
        mem::stream(stream),
    ))
}

/// `cuEventCreate`.
#[no_mangle]
pub extern "C" fn cuEventCreate(event: *mut usize, flags: u32) -> CuResult {
    match mem::call(
        Command::EVENT_CREATE(EventCreateArgs {
            flags,
            ..bytemuck::Zeroable::zeroed()
        }),
        0,
    ) {
        Ok(c) => {
            handles::created(Kind::Event, c.result0);
            put(event, c.result0 as usize)
        }
        Err(e) => e,
    }
}

fn event_call(f: fn(HandleArgs) -> Command, event: usize) -> Result<vgpu_proto::Cqe, CuResult> {
    mem::call(
        f(HandleArgs {
            handle: event as u64,
            ..bytemuck::Zeroable::zeroed()
        }),
        0,
    )
}

/// `cuEventDestroy_v2`.
#[no_mangle]
pub extern "C" fn cuEventDestroy_v2(event: usize) -> CuResult {
    let r = event_call(Command::EVENT_DESTROY, event);
    if r.is_ok() {
        handles::destroyed(Kind::Event, event as u64);
    }
    done(r.map(|_| ()))
}

/// `cuEventRecord`.
#[no_mangle]
pub extern "C" fn cuEventRecord(event: usize, stream: usize) -> CuResult {
    try_cu!(handles::check(Kind::Event, event as u64));
    done(mem::post(
        Command::EVENT_RECORD(HandleArgs {
            handle: event as u64,
            ..bytemuck::Zeroable::zeroed()
        }),
        mem::stream(stream),
    ))
}

/// `cuEventSynchronize`.
#[no_mangle]
pub extern "C" fn cuEventSynchronize(event: usize) -> CuResult {
    done(event_call(Command::EVENT_SYNCHRONIZE, event).map(|_| ()))
}

/// `cuEventQuery`.
#[no_mangle]
pub extern "C" fn cuEventQuery(event: usize) -> CuResult {
    done(event_call(Command::EVENT_QUERY, event).map(|_| ()))
}

/// `cuEventElapsedTime`.
#[no_mangle]
pub extern "C" fn cuEventElapsedTime(ms: *mut f32, start: usize, end: usize) -> CuResult {
    let args = EventElapsedArgs {
        start: start as u64,
        end: end as u64,
        ..bytemuck::Zeroable::zeroed()
    };
    match mem::call(Command::EVENT_ELAPSED(args), 0) {
        Ok(c) => put(ms, f32::from_bits(c.result0 as u32)),
        Err(e) => e,
    }
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
    done(mem::free_host(p.cast()))
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

/// Exported memory and stream functions that are implemented.
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
    "cuMemAllocHost_v2",
    "cuMemHostAlloc",
    "cuMemFreeHost",
    "cuPointerGetAttribute",
];

// ---- modules and launches (module.rs) ----

use crate::module;

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
    done(module::unload(m as u64))
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
    done(unsafe {
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
    done(unsafe {
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

/// `cuDevicePrimaryCtxReset_v2`: the device destroys every GPU object of this process
/// (CTX_RESET: allocations, modules, streams, events, graphs) and clears its errors; the
/// local tables of them are forgotten. Pinned host memory (windows) stays.
#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxReset_v2(dev: i32) -> CuResult {
    try_cu!(device(dev).map(|_| ()));
    try_cu!(mem::call(Command::CTX_RESET(bytemuck::Zeroable::zeroed()), 0).map(|_| ()));
    mem::forget_allocations();
    module::forget_all();
    handles::forget_all();
    crate::graph::forget_all();
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
    done(func_attr(func, attr, value, true).map(|_| ()))
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
    "cuDevicePrimaryCtxReset_v2",
];
