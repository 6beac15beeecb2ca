//! `libcuda.so.1`, opened at first use. The `dlopen`/`dlsym` calls and the calls through
//! the function pointers they return are this crate's `unsafe`.

use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

type CuResult = u32;

/// Declares the driver entry points the runtime uses and how to load them.
macro_rules! driver_api {
    ($( $field:ident = $sym:literal : ($($arg:ty),*); )*) => {
        /// The driver entry points the runtime uses.
        pub struct Driver {
            $( pub $field: unsafe extern "C" fn($($arg),*) -> CuResult, )*
        }

        fn load(lib: *mut c_void) -> Result<Driver, String> {
            Ok(Driver { $( $field: sym(lib, $sym)?, )* })
        }
    };
}

driver_api! {
    init = c"cuInit": (u32);
    device_get_count = c"cuDeviceGetCount": (*mut i32);
    device_get_attribute = c"cuDeviceGetAttribute": (*mut i32, i32, i32);
    device_get_pci_bus_id = c"cuDeviceGetPCIBusId": (*mut c_char, i32, i32);
    device_get_name = c"cuDeviceGetName": (*mut c_char, i32, i32);
    device_total_mem = c"cuDeviceTotalMem_v2": (*mut usize, i32);
    device_get_uuid = c"cuDeviceGetUuid": (*mut [u8; 16], i32);
    mem_alloc = c"cuMemAlloc_v2": (*mut u64, usize);
    mem_free = c"cuMemFree_v2": (u64);
    mem_get_info = c"cuMemGetInfo_v2": (*mut usize, *mut usize);
    memcpy_htod = c"cuMemcpyHtoD_v2": (u64, *const c_void, usize);
    memcpy_dtoh = c"cuMemcpyDtoH_v2": (*mut c_void, u64, usize);
    memcpy_dtod = c"cuMemcpyDtoD_v2": (u64, u64, usize);
    memcpy_htod_async = c"cuMemcpyHtoDAsync_v2": (u64, *const c_void, usize, usize);
    memcpy_dtoh_async = c"cuMemcpyDtoHAsync_v2": (*mut c_void, u64, usize, usize);
    memcpy_dtod_async = c"cuMemcpyDtoDAsync_v2": (u64, u64, usize, usize);
    memset_d8 = c"cuMemsetD8_v2": (u64, u8, usize);
    memset_d8_async = c"cuMemsetD8Async": (u64, u8, usize, usize);
    ctx_synchronize = c"cuCtxSynchronize": ();
    stream_create = c"cuStreamCreate": (*mut usize, u32);
    stream_destroy = c"cuStreamDestroy_v2": (usize);
    stream_synchronize = c"cuStreamSynchronize": (usize);
    stream_query = c"cuStreamQuery": (usize);
    stream_wait_event = c"cuStreamWaitEvent": (usize, usize, u32);
    event_create = c"cuEventCreate": (*mut usize, u32);
    event_destroy = c"cuEventDestroy_v2": (usize);
    event_record = c"cuEventRecord": (usize, usize);
    event_synchronize = c"cuEventSynchronize": (usize);
    event_query = c"cuEventQuery": (usize);
    event_elapsed = c"cuEventElapsedTime": (*mut f32, usize, usize);
    mem_alloc_host = c"cuMemAllocHost_v2": (*mut *mut c_void, usize);
    mem_free_host = c"cuMemFreeHost": (*mut c_void);
    mem_host_register = c"cuMemHostRegister_v2": (*mut c_void, usize, u32);
    mem_host_unregister = c"cuMemHostUnregister": (*mut c_void);
    pointer_get_attribute = c"cuPointerGetAttribute": (*mut c_void, i32, u64);
    module_load_data = c"cuModuleLoadData": (*mut usize, *const c_void);
    module_get_function = c"cuModuleGetFunction": (*mut usize, usize, *const c_char);
    launch_kernel = c"cuLaunchKernel": (usize, u32, u32, u32, u32, u32, u32, u32, usize, *const *const c_void, *const *const c_void);
    launch_kernel_ex = c"cuLaunchKernelEx": (*const cudarc::driver::sys::CUlaunchConfig, usize, *const *const c_void, *const *const c_void);
    func_get_attribute = c"cuFuncGetAttribute": (*mut i32, i32, usize);
    func_set_attribute = c"cuFuncSetAttribute": (usize, i32, i32);
    memcpy_2d = c"cuMemcpy2D_v2": (*const cudarc::driver::sys::CUDA_MEMCPY2D);
    memcpy_2d_async = c"cuMemcpy2DAsync_v2": (*const cudarc::driver::sys::CUDA_MEMCPY2D, usize);
    memset_d2d8 = c"cuMemsetD2D8_v2": (u64, usize, u8, usize, usize);
    memset_d2d8_async = c"cuMemsetD2D8Async": (u64, usize, u8, usize, usize, usize);
    stream_begin_capture = c"cuStreamBeginCapture_v2": (usize, u32);
    stream_end_capture = c"cuStreamEndCapture": (usize, *mut usize);
    stream_is_capturing = c"cuStreamIsCapturing": (usize, *mut u32);
    graph_instantiate = c"cuGraphInstantiateWithFlags": (*mut usize, usize, u64);
    graph_launch = c"cuGraphLaunch": (usize, usize);
    graph_destroy = c"cuGraphDestroy": (usize);
    graph_exec_destroy = c"cuGraphExecDestroy": (usize);
    graph_exec_update = c"cuGraphExecUpdate_v2": (usize, usize, *mut c_void);
    module_get_global = c"cuModuleGetGlobal_v2": (*mut u64, *mut usize, usize, *const c_char);
    primary_ctx_reset = c"cuDevicePrimaryCtxReset_v2": (i32);
    launch_host_func = c"cuLaunchHostFunc": (usize, Option<unsafe extern "C" fn(*mut c_void)>, *mut c_void);
    stream_add_callback = c"cuStreamAddCallback": (usize, Option<unsafe extern "C" fn(usize, u32, *mut c_void)>, *mut c_void, u32);
}

static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();

fn sym<T: Copy>(lib: *mut c_void, name: &CStr) -> Result<T, String> {
    // SAFETY: `lib` is a live handle from dlopen and `name` a NUL-terminated string.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    if p.is_null() {
        return Err(format!("libcuda.so.1 lacks {}", name.to_string_lossy()));
    }
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: T is a function-pointer type of the same size as the symbol's address, and the
    // symbol is the driver API function of that C signature.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

/// The driver, opened on first use.
pub fn driver() -> Result<&'static Driver, &'static str> {
    DRIVER
        .get_or_init(|| {
            // SAFETY: a NUL-terminated library name; the handle is never closed.
            let lib = unsafe {
                libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL)
            };
            if lib.is_null() {
                return Err("libcuda.so.1 cannot be loaded".to_string());
            }
            load(lib)
        })
        .as_ref()
        .map_err(|e| e.as_str())
}

/// Calls a driver entry point. The runtime forwards the caller's pointers unchanged, so the
/// CUDA contract that makes them valid for the runtime call makes them valid for the driver
/// call; the function pointers come from `libcuda.so.1` with these C signatures.
#[macro_export]
macro_rules! cu {
    ($d:expr, $f:ident ()) => {{
        let f = $d.$f;
        // SAFETY: see the macro's documentation.
        unsafe { f() }
    }};
    ($d:expr, $f:ident ($a:expr)) => {{
        let (f, a) = ($d.$f, $a);
        // SAFETY: see the macro's documentation.
        unsafe { f(a) }
    }};
    ($d:expr, $f:ident ($a:expr, $b:expr)) => {{
        let (f, a, b) = ($d.$f, $a, $b);
        // SAFETY: see the macro's documentation.
        unsafe { f(a, b) }
    }};
    ($d:expr, $f:ident ($a:expr, $b:expr, $c:expr)) => {{
        let (f, a, b, c) = ($d.$f, $a, $b, $c);
        // SAFETY: see the macro's documentation.
        unsafe { f(a, b, c) }
    }};
    ($d:expr, $f:ident ($a:expr, $b:expr, $c:expr, $e:expr)) => {{
        let (f, a, b, c, e) = ($d.$f, $a, $b, $c, $e);
        // SAFETY: see the macro's documentation.
        unsafe { f(a, b, c, e) }
    }};
    ($d:expr, $f:ident ($a:expr, $b:expr, $c:expr, $e:expr, $g:expr)) => {{
        let (f, a, b, c, e, g) = ($d.$f, $a, $b, $c, $e, $g);
        // SAFETY: see the macro's documentation.
        unsafe { f(a, b, c, e, g) }
    }};
    ($d:expr, $f:ident ($a:expr, $b:expr, $c:expr, $e:expr, $g:expr, $h:expr)) => {{
        let (f, a, b, c, e, g, h) = ($d.$f, $a, $b, $c, $e, $g, $h);
        // SAFETY: see the macro's documentation.
        unsafe { f(a, b, c, e, g, h) }
    }};
    ($d:expr, $f:ident ($a0:expr, $a1:expr, $a2:expr, $a3:expr, $a4:expr, $a5:expr, $a6:expr, $a7:expr, $a8:expr, $a9:expr, $a10:expr)) => {{
        let (f, a) = (
            $d.$f,
            ($a0, $a1, $a2, $a3, $a4, $a5, $a6, $a7, $a8, $a9, $a10),
        );
        // SAFETY: see the macro's documentation.
        unsafe { f(a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9, a.10) }
    }};
}

impl Driver {
    /// `cuInit(0)`.
    pub fn init(&self) -> CuResult {
        // SAFETY: calling cuInit with its C signature.
        unsafe { (self.init)(0) }
    }

    /// `cuDeviceGetCount`.
    pub fn device_count(&self) -> Result<i32, CuResult> {
        let mut n = 0;
        // SAFETY: a valid out-pointer.
        match unsafe { (self.device_get_count)(&mut n) } {
            0 => Ok(n),
            e => Err(e),
        }
    }

    /// `cuDeviceGetAttribute`.
    pub fn attribute(&self, attr: i32, dev: i32) -> Result<i32, CuResult> {
        let mut v = 0;
        // SAFETY: a valid out-pointer.
        match unsafe { (self.device_get_attribute)(&mut v, attr, dev) } {
            0 => Ok(v),
            e => Err(e),
        }
    }

    /// `cuDeviceGetPCIBusId` into a caller buffer.
    pub fn pci_bus_id(&self, buf: *mut c_char, len: i32, dev: i32) -> CuResult {
        // SAFETY: forwards the caller's buffer and length unchanged (the CUDA contract).
        unsafe { (self.device_get_pci_bus_id)(buf, len, dev) }
    }

    /// `cuDeviceGetName` into a buffer.
    pub fn name(&self, buf: &mut [c_char], dev: i32) -> CuResult {
        // SAFETY: the buffer is valid for its length.
        unsafe { (self.device_get_name)(buf.as_mut_ptr(), buf.len() as i32, dev) }
    }

    /// `cuDeviceTotalMem_v2`.
    pub fn total_mem(&self, dev: i32) -> Result<usize, CuResult> {
        let mut v = 0;
        // SAFETY: a valid out-pointer.
        match unsafe { (self.device_total_mem)(&mut v, dev) } {
            0 => Ok(v),
            e => Err(e),
        }
    }

    /// `cuDeviceGetUuid`.
    pub fn uuid(&self, dev: i32) -> Result<[u8; 16], CuResult> {
        let mut v = [0u8; 16];
        // SAFETY: a valid out-pointer.
        match unsafe { (self.device_get_uuid)(&mut v, dev) } {
            0 => Ok(v),
            e => Err(e),
        }
    }
}
