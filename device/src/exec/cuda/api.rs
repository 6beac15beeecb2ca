//! The CUDA driver, cuBLAS and NVML entry points the cuda executor calls, resolved once
//! from the libraries cudarc finds (`cudarc::driver::sys::culib` and its cuBLAS twin), with
//! their C prototypes: every status comes back as a plain `u32`, never as a Rust enum that
//! an unexpected value would make undefined. The only `unsafe` of the executor is here;
//! [`Gpu`] wraps each call in a safe method whose arguments it can vouch for.

use super::layout::{Cu2D, CuLaunchAttr, CuLaunchConfig, CuUuid};
use crate::guest::HostPiece;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use vgpu_proto::Status;

/// `CUdeviceptr`.
pub type DevPtr = u64;
/// `CUcontext`, `CUmodule`, `CUfunction`, `CUstream`, `cublasHandle_t`: an opaque
/// pointer, passed as is.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raw(*mut c_void);

// SAFETY: CUDA's and cuBLAS's handles name driver objects, usable from any thread (a
// context is made current per thread before use; a cuBLAS handle is used by one thread at
// a time, taken from a pool); the pointer is never dereferenced here.
unsafe impl Send for Raw {}
// SAFETY: as above.
unsafe impl Sync for Raw {}

impl Raw {
    /// NULL.
    pub const NULL: Raw = Raw(std::ptr::null_mut());
}

/// `CU_STREAM_PER_THREAD`: each host thread's own default stream, which does not
/// synchronise with other threads' streams.
const STREAM_PER_THREAD: Raw = Raw(2 as *mut c_void);

macro_rules! entry_points {
    ($(#[$m:meta])* struct $name:ident { $( fn $f:ident($($t:ty),*) -> $r:ty; )* }) => {
        $(#[$m])*
        #[allow(non_snake_case)]
        struct $name { $( $f: unsafe extern "C" fn($($t),*) -> $r, )* }

        impl $name {
            /// Resolves every entry point in `lib`; the first one missing fails the load.
            fn resolve(lib: &libloading::Library) -> Result<Self, String> {
                Ok($name { $( $f: {
                    // SAFETY: the symbol is declared with its prototype from the library's
                    // public header (cuda.h, cublas_api.h, nvml.h), and the library stays
                    // loaded for the life of the process (cudarc keeps it in a static).
                    let sym = unsafe {
                        lib.get::<unsafe extern "C" fn($($t),*) -> $r>(
                            concat!(stringify!($f), "\0").as_bytes(),
                        )
                    };
                    *sym.map_err(|e| format!("{}: {e}", stringify!($f)))?
                }, )* })
            }
        }
    };
}

entry_points! {
    /// libcuda.
    struct Driver {
        fn cuInit(c_uint) -> u32;
        fn cuDriverGetVersion(*mut c_int) -> u32;
        fn cuDeviceGet(*mut c_int, c_int) -> u32;
        fn cuDeviceGetCount(*mut c_int) -> u32;
        fn cuDeviceGetAttribute(*mut c_int, c_int, c_int) -> u32;
        fn cuDeviceGetName(*mut c_char, c_int, c_int) -> u32;
        fn cuDeviceGetUuid(*mut CuUuid, c_int) -> u32;
        fn cuDeviceTotalMem_v2(*mut usize, c_int) -> u32;
        fn cuGetExportTable(*mut *const c_void, *const CuUuid) -> u32;
        fn cuCtxCreate_v2(*mut Raw, c_uint, c_int) -> u32;
        fn cuCtxDestroy_v2(Raw) -> u32;
        fn cuCtxSetCurrent(Raw) -> u32;
        fn cuCtxPopCurrent_v2(*mut Raw) -> u32;
        fn cuCtxPushCurrent_v2(Raw) -> u32;
        fn cuMemHostRegister_v2(*mut c_void, usize, c_uint) -> u32;
        fn cuMemHostUnregister(*mut c_void) -> u32;
        fn cuCtxGetLimit(*mut usize, c_int) -> u32;
        fn cuCtxSetLimit(c_int, usize) -> u32;
        fn cuMemAlloc_v2(*mut DevPtr, usize) -> u32;
        fn cuMemFree_v2(DevPtr) -> u32;
        fn cuMemGetInfo_v2(*mut usize, *mut usize) -> u32;
        fn cuMemcpyHtoDAsync_v2(DevPtr, *const c_void, usize, Raw) -> u32;
        fn cuMemcpyDtoHAsync_v2(*mut c_void, DevPtr, usize, Raw) -> u32;
        fn cuMemcpyDtoDAsync_v2(DevPtr, DevPtr, usize, Raw) -> u32;
        fn cuMemcpy2DAsync_v2(*const Cu2D, Raw) -> u32;
        fn cuMemsetD2D8Async(DevPtr, usize, u8, usize, usize, Raw) -> u32;
        fn cuMemsetD2D16Async(DevPtr, usize, u16, usize, usize, Raw) -> u32;
        fn cuMemsetD2D32Async(DevPtr, usize, u32, usize, usize, Raw) -> u32;
        fn cuStreamSynchronize(Raw) -> u32;
        fn cuModuleLoadData(*mut Raw, *const c_void) -> u32;
        fn cuModuleUnload(Raw) -> u32;
        fn cuModuleGetFunction(*mut Raw, Raw, *const c_char) -> u32;
        fn cuModuleGetGlobal_v2(*mut DevPtr, *mut usize, Raw, *const c_char) -> u32;
        fn cuFuncGetAttribute(*mut c_int, c_int, Raw) -> u32;
        fn cuFuncSetAttribute(Raw, c_int, c_int) -> u32;
        fn cuFuncGetParamInfo(Raw, usize, *mut usize, *mut usize) -> u32;
        fn cuLaunchKernel(Raw, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, Raw, *mut *mut c_void, *mut *mut c_void) -> u32;
        fn cuLaunchKernelEx(*const CuLaunchConfig, Raw, *mut *mut c_void, *mut *mut c_void) -> u32;
    }
}

entry_points! {
    /// libcublas.
    struct Blas {
        fn cublasCreate_v2(*mut Raw) -> u32;
        fn cublasDestroy_v2(Raw) -> u32;
        fn cublasSetStream_v2(Raw, Raw) -> u32;
        fn cublasSetMathMode(Raw, c_int) -> u32;
        fn cublasSetWorkspace_v2(Raw, *mut c_void, usize) -> u32;
        fn cublasGemmBatchedEx(Raw, c_int, c_int, c_int, c_int, c_int, *const c_void, *const c_void, c_int, c_int, *const c_void, c_int, c_int, *const c_void, *const c_void, c_int, c_int, c_int, c_int, c_int) -> u32;
        fn cublasStrsmBatched(Raw, c_int, c_int, c_int, c_int, c_int, c_int, *const c_void, *const c_void, c_int, *const c_void, c_int, c_int) -> u32;
        fn cublasDtrsmBatched(Raw, c_int, c_int, c_int, c_int, c_int, c_int, *const c_void, *const c_void, c_int, *const c_void, c_int, c_int) -> u32;
        fn cublasGemmStridedBatchedEx(Raw, c_int, c_int, c_int, c_int, c_int, *const c_void, *const c_void, c_int, c_int, i64, *const c_void, c_int, c_int, i64, *const c_void, *mut c_void, c_int, c_int, i64, c_int, c_int, c_int) -> u32;
    }
}

entry_points! {
    /// libcublasLt.
    struct Lt {
        fn cublasLtCreate(*mut Raw) -> u32;
        fn cublasLtDestroy(Raw) -> u32;
        fn cublasLtMatmulDescCreate(*mut Raw, c_int, c_int) -> u32;
        fn cublasLtMatmulDescDestroy(Raw) -> u32;
        fn cublasLtMatmulDescSetAttribute(Raw, c_int, *const c_void, usize) -> u32;
        fn cublasLtMatrixLayoutCreate(*mut Raw, c_int, u64, u64, i64) -> u32;
        fn cublasLtMatrixLayoutDestroy(Raw) -> u32;
        fn cublasLtMatrixLayoutSetAttribute(Raw, c_int, *const c_void, usize) -> u32;
        fn cublasLtMatmul(Raw, Raw, *const c_void, *const c_void, Raw, *const c_void, Raw, *const c_void, *const c_void, Raw, *mut c_void, Raw, *const c_void, *mut c_void, usize, Raw) -> u32;
    }
}

entry_points! {
    /// libnvidia-ml: the driver version string and the sensors MGMT_QUERY reports.
    struct Nvml {
        fn nvmlInit_v2() -> u32;
        fn nvmlSystemGetDriverVersion(*mut c_char, c_uint) -> u32;
        fn nvmlDeviceGetHandleByUUID(*const c_char, *mut Raw) -> u32;
        fn nvmlDeviceGetUtilizationRates(Raw, *mut [c_uint; 2]) -> u32;
        fn nvmlDeviceGetTemperature(Raw, c_int, *mut c_uint) -> u32;
        fn nvmlDeviceGetPowerUsage(Raw, *mut c_uint) -> u32;
        fn nvmlDeviceGetEnforcedPowerLimit(Raw, *mut c_uint) -> u32;
        fn nvmlDeviceGetClockInfo(Raw, c_int, *mut c_uint) -> u32;
    }
}

/// A CUDA driver status as a device status (they share their numbers, spec §8).
pub fn cu_status(r: u32) -> Result<(), Status> {
    match r {
        0 => Ok(()),
        r if r < Status::PROTOCOL_BASE => Err(Status(r)),
        r => {
            log::warn!("CUDA returned {r}, outside CUresult's range");
            Err(Status::UNKNOWN)
        }
    }
}

/// A cuBLAS status as a device status.
pub fn blas_status(r: u32) -> Result<(), Status> {
    match r {
        0 => Ok(()),
        r if r <= 0xFF => Err(Status::from_blas(r)),
        r => {
            log::warn!("cuBLAS returned {r}, outside cublasStatus_t's range");
            Err(Status::BLAS_INTERNAL_ERROR)
        }
    }
}

/// The loaded libraries: the driver always, cuBLAS, cuBLASLt and NVML when present.
pub struct Gpu {
    cu: Driver,
    blas: Option<Blas>,
    lt: Option<Lt>,
    nvml: Option<Nvml>,
}

/// The libraries cudarc would load, or why not.
pub fn load() -> Result<Gpu, String> {
    // SAFETY: is_culib_present only tries to open the library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver library (libcuda.so.1) on the library path".into());
    }
    // SAFETY: present (checked just above), so culib() opens it instead of panicking;
    // loading runs the library's initialisers, as any CUDA application does.
    let lib = unsafe { cudarc::driver::sys::culib() };
    let cu = Driver::resolve(lib)?;
    // SAFETY: as above, for cuBLAS.
    let blas = if unsafe { cudarc::cublas::sys::is_culib_present() } {
        // SAFETY: present, so culib() does not panic.
        match Blas::resolve(unsafe { cudarc::cublas::sys::culib() }) {
            Ok(b) => Some(b),
            Err(e) => {
                log::warn!("cuBLAS lacks an entry point ({e}); BLAS commands will fail");
                None
            }
        }
    } else {
        log::warn!("no cuBLAS library (libcublas.so.12); BLAS commands will fail");
        None
    };
    // SAFETY: as above, for cuBLASLt.
    let lt = if unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        // SAFETY: present, so culib() does not panic.
        match Lt::resolve(unsafe { cudarc::cublaslt::sys::culib() }) {
            Ok(l) => Some(l),
            Err(e) => {
                log::warn!("cuBLASLt lacks an entry point ({e}); BLASLT_MATMUL will fail");
                None
            }
        }
    } else {
        log::warn!("no cuBLASLt library (libcublasLt.so.12); BLASLT_MATMUL will fail");
        None
    };
    let nvml = ["libnvidia-ml.so.1", "libnvidia-ml.so"]
        .iter()
        .find_map(|name| {
            // SAFETY: opening NVML runs its initialisers, as nvidia-smi does; the handle is
            // leaked so that the resolved entry points stay valid for the process's life.
            let lib = unsafe { libloading::Library::new(*name) }.ok()?;
            let lib: &'static libloading::Library = Box::leak(Box::new(lib));
            let nvml = Nvml::resolve(lib).ok()?;
            // SAFETY: no arguments.
            (unsafe { (nvml.nvmlInit_v2)() } == 0).then_some(nvml)
        });
    Ok(Gpu { cu, blas, lt, nvml })
}

/// A kernel's parameters as `cuLaunchKernel` takes them: pointers into one buffer.
pub struct KernelParams<'a> {
    ptrs: Vec<*mut c_void>,
    _buf: std::marker::PhantomData<&'a mut [u8]>,
}

impl<'a> KernelParams<'a> {
    /// Points at each parameter of `layout` ((offset, size) pairs) inside `buf`; None when
    /// one leaves it.
    pub fn new(buf: &'a mut [u8], layout: &[(u32, u32)]) -> Option<Self> {
        let mut ptrs = Vec::with_capacity(layout.len());
        for &(off, size) in layout {
            let end = (off as usize).checked_add(size as usize)?;
            if end > buf.len() {
                return None;
            }
            ptrs.push(buf[off as usize..].as_mut_ptr().cast());
        }
        Some(KernelParams {
            ptrs,
            _buf: std::marker::PhantomData,
        })
    }
}

/// A GEMM's arguments for cuBLAS (already checked against the PD's allocations).
pub struct GemmCall<'a> {
    pub transa: c_int,
    pub transb: c_int,
    pub m: c_int,
    pub n: c_int,
    pub k: c_int,
    pub alpha: &'a [u8; 16],
    pub a: DevPtr,
    pub a_type: c_int,
    pub lda: c_int,
    pub stride_a: i64,
    pub b: DevPtr,
    pub b_type: c_int,
    pub ldb: c_int,
    pub stride_b: i64,
    pub beta: &'a [u8; 16],
    pub c: DevPtr,
    pub c_type: c_int,
    pub ldc: c_int,
    pub stride_c: i64,
    pub batch: c_int,
    pub compute_type: c_int,
    pub algo: c_int,
}

/// A batched TRSM's arguments for cuBLAS (pointer arrays in memory of the executor's own,
/// every matrix checked).
pub struct TrsmCall<'a> {
    pub double: bool,
    pub side: c_int,
    pub uplo: c_int,
    pub trans: c_int,
    pub diag: c_int,
    pub m: c_int,
    pub n: c_int,
    pub alpha: &'a [u8; 16],
    pub a: DevPtr,
    pub lda: c_int,
    pub b: DevPtr,
    pub ldb: c_int,
    pub batch: c_int,
}

/// One matrix of a cuBLASLt matmul: where it is and its layout.
pub struct LtMatrix {
    pub ptr: DevPtr,
    pub data_type: c_int,
    pub rows: u64,
    pub cols: u64,
    pub ld: i64,
    pub batch: i32,
    /// Elements between batches.
    pub stride: i64,
}

/// A cuBLASLt matmul's arguments (every matrix, the bias and the workspace checked).
pub struct LtCall<'a> {
    pub compute_type: c_int,
    pub scale_type: c_int,
    pub transa: i32,
    pub transb: i32,
    pub epilogue: u32,
    pub bias: DevPtr,
    pub alpha: &'a [u8; 16],
    pub beta: &'a [u8; 16],
    /// A, B, C, D.
    pub m: [LtMatrix; 4],
    pub workspace: Option<(DevPtr, u64)>,
}

/// cuBLASLt objects made for one call, destroyed with it.
struct LtObjects<'a> {
    lt: &'a Lt,
    desc: Raw,
    layouts: Vec<Raw>,
}

impl Drop for LtObjects<'_> {
    fn drop(&mut self) {
        // SAFETY: objects this call created and no longer uses.
        unsafe {
            for l in self.layouts.drain(..) {
                (self.lt.cublasLtMatrixLayoutDestroy)(l);
            }
            if self.desc != Raw::NULL {
                (self.lt.cublasLtMatmulDescDestroy)(self.desc);
            }
        }
    }
}

impl Gpu {
    /// cuInit.
    pub fn init(&self) -> Result<(), Status> {
        // SAFETY: no pointers.
        cu_status(unsafe { (self.cu.cuInit)(0) })
    }

    /// True when the driver serves vgpu's private export table: it is vgpu's own
    /// `libcuda.so.1`, and a cuda executor on it would loop back into a vGPU.
    pub fn is_vgpu(&self) -> bool {
        let id = CuUuid {
            bytes: *b"vgpu-exports-v01",
        };
        let mut table: *const c_void = std::ptr::null();
        // SAFETY: both pointers are valid for the call; the table is not dereferenced.
        let r = unsafe { (self.cu.cuGetExportTable)(&mut table, &id) };
        r == 0 && !table.is_null()
    }

    /// True when cuBLAS was loaded.
    pub fn has_blas(&self) -> bool {
        self.blas.is_some()
    }

    /// True when cuBLASLt was loaded.
    pub fn has_lt(&self) -> bool {
        self.lt.is_some()
    }

    /// cuDriverGetVersion.
    pub fn driver_version(&self) -> Result<i32, Status> {
        let mut v = 0;
        // SAFETY: v is a valid out pointer.
        cu_status(unsafe { (self.cu.cuDriverGetVersion)(&mut v) })?;
        Ok(v)
    }

    /// cuDeviceGetCount.
    pub fn device_count(&self) -> Result<i32, Status> {
        let mut v = 0;
        // SAFETY: v is a valid out pointer.
        cu_status(unsafe { (self.cu.cuDeviceGetCount)(&mut v) })?;
        Ok(v)
    }

    /// cuDeviceGet.
    pub fn device(&self, ordinal: i32) -> Result<i32, Status> {
        let mut d = 0;
        // SAFETY: d is a valid out pointer.
        cu_status(unsafe { (self.cu.cuDeviceGet)(&mut d, ordinal) })?;
        Ok(d)
    }

    /// cuDeviceGetAttribute.
    pub fn attribute(&self, dev: i32, attr: i32) -> Result<i32, Status> {
        let mut v = 0;
        // SAFETY: v is a valid out pointer; an unknown attribute is an error, not UB.
        cu_status(unsafe { (self.cu.cuDeviceGetAttribute)(&mut v, attr, dev) })?;
        Ok(v)
    }

    /// cuDeviceGetName.
    pub fn name(&self, dev: i32) -> Result<String, Status> {
        let mut buf = [0 as c_char; 256];
        // SAFETY: the buffer holds 255 characters and the NUL.
        cu_status(unsafe { (self.cu.cuDeviceGetName)(buf.as_mut_ptr(), 255, dev) })?;
        // SAFETY: the last byte was never written, so the string is NUL-terminated.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }

    /// cuDeviceGetUuid.
    pub fn uuid(&self, dev: i32) -> Result<[u8; 16], Status> {
        let mut u = CuUuid { bytes: [0; 16] };
        // SAFETY: u is a valid out pointer.
        cu_status(unsafe { (self.cu.cuDeviceGetUuid)(&mut u, dev) })?;
        Ok(u.bytes)
    }

    /// cuDeviceTotalMem.
    pub fn total_mem(&self, dev: i32) -> Result<u64, Status> {
        let mut v = 0usize;
        // SAFETY: v is a valid out pointer.
        cu_status(unsafe { (self.cu.cuDeviceTotalMem_v2)(&mut v, dev) })?;
        Ok(v as u64)
    }

    /// NVML's driver version string, when NVML is there.
    pub fn nvml_driver_version(&self) -> Option<String> {
        let nvml = self.nvml.as_ref()?;
        let mut buf = [0 as c_char; 96];
        // SAFETY: a buffer of 95 characters and the NUL.
        let ok = unsafe { (nvml.nvmlSystemGetDriverVersion)(buf.as_mut_ptr(), 95) == 0 };
        if !ok {
            return None;
        }
        // SAFETY: the last byte was never written, so the string is NUL-terminated.
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
        Some(s.to_string_lossy().into_owned())
    }

    /// NVML's sensors of the GPU with CUDA UUID `uuid`: (GPU and memory utilisation in
    /// percent, temperature in °C, power and its limit in mW, SM and memory clocks in MHz);
    /// 0 for what NVML does not give, None without NVML.
    pub fn nvml_sensors(&self, uuid: &[u8; 16]) -> Option<[u32; 7]> {
        let nvml = self.nvml.as_ref()?;
        let h = uuid.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let name = format!(
            "GPU-{}-{}-{}-{}-{}\0",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        let mut dev = Raw::NULL;
        // SAFETY: a NUL-terminated string and a valid out pointer.
        if unsafe { (nvml.nvmlDeviceGetHandleByUUID)(name.as_ptr().cast(), &mut dev) } != 0 {
            return None;
        }
        let get = |f: &dyn Fn(*mut c_uint) -> u32| {
            let mut v: c_uint = 0;
            if f(&mut v) == 0 {
                v
            } else {
                0
            }
        };
        let mut util = [0 as c_uint; 2];
        // SAFETY: a live handle; nvmlUtilization_t is two unsigned ints.
        if unsafe { (nvml.nvmlDeviceGetUtilizationRates)(dev, &mut util) } != 0 {
            util = [0, 0];
        }
        // SAFETY: a live handle and a valid out pointer (NVML_TEMPERATURE_GPU = 0).
        let temp = get(&|v| unsafe { (nvml.nvmlDeviceGetTemperature)(dev, 0, v) });
        // SAFETY: as above.
        let power = get(&|v| unsafe { (nvml.nvmlDeviceGetPowerUsage)(dev, v) });
        // SAFETY: as above.
        let limit = get(&|v| unsafe { (nvml.nvmlDeviceGetEnforcedPowerLimit)(dev, v) });
        // SAFETY: as above (NVML_CLOCK_SM = 1).
        let sm = get(&|v| unsafe { (nvml.nvmlDeviceGetClockInfo)(dev, 1, v) });
        // SAFETY: as above (NVML_CLOCK_MEM = 2).
        let mem = get(&|v| unsafe { (nvml.nvmlDeviceGetClockInfo)(dev, 2, v) });
        Some([util[0], util[1], temp, power, limit, sm, mem])
    }

    /// cuCtxCreate, left current on no thread.
    pub fn ctx_create(&self, dev: i32) -> Result<Raw, Status> {
        let mut ctx = Raw::NULL;
        // SAFETY: ctx is a valid out pointer.
        cu_status(unsafe { (self.cu.cuCtxCreate_v2)(&mut ctx, 0, dev) })?;
        let mut popped = Raw::NULL;
        // SAFETY: popped is a valid out pointer; the new context is on top of the stack.
        cu_status(unsafe { (self.cu.cuCtxPopCurrent_v2)(&mut popped) })?;
        Ok(ctx)
    }

    /// cuCtxDestroy: every allocation, module and stream of the context goes with it.
    pub fn ctx_destroy(&self, ctx: Raw) {
        // SAFETY: the caller owns `ctx` and uses it no more.
        if let Err(e) = cu_status(unsafe { (self.cu.cuCtxDestroy_v2)(ctx) }) {
            log::warn!("cuCtxDestroy: {e}");
        }
    }

    /// Makes `ctx` current on the calling thread.
    pub fn enter(&self, ctx: Raw) -> Result<(), Status> {
        // SAFETY: `ctx` is a live context of the caller.
        cu_status(unsafe { (self.cu.cuCtxSetCurrent)(ctx) })
    }

    /// cuCtxGetLimit (context current).
    pub fn get_limit(&self, limit: i32) -> Result<u64, Status> {
        let mut v = 0usize;
        // SAFETY: v is a valid out pointer; an unknown limit is an error.
        cu_status(unsafe { (self.cu.cuCtxGetLimit)(&mut v, limit) })?;
        Ok(v as u64)
    }

    /// cuCtxSetLimit (context current).
    pub fn set_limit(&self, limit: i32, value: u64) -> Result<(), Status> {
        let v = usize::try_from(value).map_err(|_| Status::INVALID_VALUE)?;
        // SAFETY: no pointers.
        cu_status(unsafe { (self.cu.cuCtxSetLimit)(limit, v) })
    }

    /// cuMemAlloc (context current).
    pub fn alloc(&self, size: u64) -> Result<DevPtr, Status> {
        let size = usize::try_from(size).map_err(|_| Status::OUT_OF_MEMORY)?;
        let mut p: DevPtr = 0;
        // SAFETY: p is a valid out pointer.
        cu_status(unsafe { (self.cu.cuMemAlloc_v2)(&mut p, size) })?;
        Ok(p)
    }

    /// cuMemFree (context current) of an allocation of the context.
    pub fn free(&self, p: DevPtr) -> Result<(), Status> {
        // SAFETY: the caller checked that `p` is an allocation of the current context.
        cu_status(unsafe { (self.cu.cuMemFree_v2)(p) })
    }

    /// cuMemGetInfo (context current): (free, total).
    pub fn mem_info(&self) -> Result<(u64, u64), Status> {
        let (mut f, mut t) = (0usize, 0usize);
        // SAFETY: valid out pointers.
        cu_status(unsafe { (self.cu.cuMemGetInfo_v2)(&mut f, &mut t) })?;
        Ok((f as u64, t as u64))
    }

    fn sync(&self) -> Result<(), Status> {
        // SAFETY: the per-thread stream of the calling thread always exists.
        cu_status(unsafe { (self.cu.cuStreamSynchronize)(STREAM_PER_THREAD) })
    }

    /// Copies `src` to device memory at `dst`, checked by the caller to hold it; returns
    /// when the copy is done.
    pub fn htod(&self, dst: DevPtr, src: &[u8]) -> Result<(), Status> {
        // SAFETY: `src` is valid for its length until the copy is done (we wait for it);
        // the destination range was checked against the PD's allocations.
        cu_status(unsafe {
            (self.cu.cuMemcpyHtoDAsync_v2)(dst, src.as_ptr().cast(), src.len(), STREAM_PER_THREAD)
        })?;
        self.sync()
    }

    /// Copies the guest memory of `src` to device memory at `dst`, checked by the caller
    /// to hold it; returns when the copy is done.
    pub fn htod_piece(&self, dst: DevPtr, src: &HostPiece) -> Result<(), Status> {
        let n = usize::try_from(src.len()).map_err(|_| Status::INVALID_VALUE)?;
        // SAFETY: the piece keeps its memory mapped while it lives, which is until after
        // the copy is done (we wait for it); a concurrent change by the guest only changes
        // what is copied, and a lost page is survived (the caller runs this guarded). The
        // destination range was checked against the PD's allocations.
        cu_status(unsafe {
            (self.cu.cuMemcpyHtoDAsync_v2)(dst, src.as_ptr().cast(), n, STREAM_PER_THREAD)
        })?;
        self.sync()
    }

    /// Copies device memory at `src` (checked by the caller) into the guest memory of
    /// `dst`, which the caller checked is writable; returns when done.
    pub fn dtoh_piece(&self, dst: &HostPiece, src: DevPtr) -> Result<(), Status> {
        let n = usize::try_from(dst.len()).map_err(|_| Status::INVALID_VALUE)?;
        // SAFETY: as in `htod_piece`; no Rust reference points into guest memory (it is
        // only ever accessed through volatile copies), so the device's writes alias none.
        cu_status(unsafe {
            (self.cu.cuMemcpyDtoHAsync_v2)(dst.as_ptr().cast(), src, n, STREAM_PER_THREAD)
        })?;
        self.sync()
    }

    /// cuMemHostRegister (portable: every context sees it page-locked; read-only unless
    /// `writable`, as the memory is mapped) of `len` bytes at `base`, in `ctx`, leaving the
    /// calling thread's current context as it was. The caller keeps the memory mapped until
    /// [`host_unregister`](Self::host_unregister).
    pub fn host_register(
        &self,
        ctx: Raw,
        base: *mut u8,
        len: usize,
        writable: bool,
    ) -> Result<(), Status> {
        const PORTABLE: c_uint = 1;
        const READ_ONLY: c_uint = 8;
        let flags = if writable {
            PORTABLE
        } else {
            PORTABLE | READ_ONLY
        };
        self.in_context(ctx, || {
            // SAFETY: CUDA checks that the range is mapped (an error otherwise) and only
            // locks its pages; it reads or writes them only in copies the executor asks for.
            cu_status(unsafe { (self.cu.cuMemHostRegister_v2)(base.cast(), len, flags) })
        })
    }

    /// cuMemHostUnregister of what [`host_register`](Self::host_register) registered at
    /// `base` in `ctx`.
    pub fn host_unregister(&self, ctx: Raw, base: *mut u8) -> Result<(), Status> {
        self.in_context(ctx, || {
            // SAFETY: `base` was registered in `ctx` and no copy uses it any more.
            cu_status(unsafe { (self.cu.cuMemHostUnregister)(base.cast()) })
        })
    }

    /// Runs `f` with `ctx` current, then restores the thread's context.
    fn in_context<T>(&self, ctx: Raw, f: impl FnOnce() -> Result<T, Status>) -> Result<T, Status> {
        // SAFETY: `ctx` is a live context of the caller.
        cu_status(unsafe { (self.cu.cuCtxPushCurrent_v2)(ctx) })?;
        let r = f();
        let mut popped = Raw::NULL;
        // SAFETY: a valid out pointer; `ctx` is on top of the thread's stack.
        let p = cu_status(unsafe { (self.cu.cuCtxPopCurrent_v2)(&mut popped) });
        r.and_then(|v| p.map(|()| v))
    }

    /// Copies device memory at `src` (checked by the caller) into `dst`; returns when done.
    pub fn dtoh(&self, dst: &mut [u8], src: DevPtr) -> Result<(), Status> {
        // SAFETY: `dst` is valid and unaliased for its length until the copy is done.
        cu_status(unsafe {
            (self.cu.cuMemcpyDtoHAsync_v2)(
                dst.as_mut_ptr().cast(),
                src,
                dst.len(),
                STREAM_PER_THREAD,
            )
        })?;
        self.sync()
    }

    /// Device-to-device copy of ranges the caller checked; returns when done.
    pub fn dtod(&self, dst: DevPtr, src: DevPtr, len: u64) -> Result<(), Status> {
        let n = usize::try_from(len).map_err(|_| Status::INVALID_VALUE)?;
        // SAFETY: no host pointers; both ranges were checked against the PD's allocations.
        cu_status(unsafe { (self.cu.cuMemcpyDtoDAsync_v2)(dst, src, n, STREAM_PER_THREAD) })?;
        self.sync()
    }

    /// A 2-D copy whose device sides the caller checked and whose host sides point into
    /// buffers that live until it returns; returns when done.
    pub fn copy_2d(&self, p: &Cu2D) -> Result<(), Status> {
        // SAFETY: see above: host pointers are valid for pitch × height bytes for the
        // whole call, which waits for the copy.
        cu_status(unsafe { (self.cu.cuMemcpy2DAsync_v2)(p, STREAM_PER_THREAD) })?;
        self.sync()
    }

    /// A 2-D memset of `elem` bytes (1, 2 or 4) per element on a range the caller
    /// checked; returns when done.
    pub fn memset_2d(
        &self,
        dst: DevPtr,
        pitch: u64,
        value: u32,
        elem: u32,
        width: u64,
        height: u64,
    ) -> Result<(), Status> {
        let u = |v: u64| usize::try_from(v).map_err(|_| Status::INVALID_VALUE);
        let (pitch, width, height) = (u(pitch)?, u(width)?, u(height)?);
        let s = STREAM_PER_THREAD;
        // SAFETY: no host pointers; the range was checked against the PD's allocations.
        let r = unsafe {
            match elem {
                1 => (self.cu.cuMemsetD2D8Async)(dst, pitch, value as u8, width, height, s),
                2 => (self.cu.cuMemsetD2D16Async)(dst, pitch, value as u16, width, height, s),
                4 => (self.cu.cuMemsetD2D32Async)(dst, pitch, value, width, height, s),
                _ => return Err(Status::INVALID_VALUE),
            }
        };
        cu_status(r)?;
        self.sync()
    }

    /// cuModuleLoadData of an image the caller has parsed and bounded (a fatbin, cubin, or
    /// PTX text ending in NUL).
    pub fn module_load(&self, image: &[u8]) -> Result<Raw, Status> {
        let mut m = Raw::NULL;
        // SAFETY: the image is a structure the driver reads within its own stated sizes,
        // which the fatbin parser has checked against the buffer, or NUL-terminated text.
        cu_status(unsafe { (self.cu.cuModuleLoadData)(&mut m, image.as_ptr().cast()) })?;
        Ok(m)
    }

    /// cuModuleUnload.
    pub fn module_unload(&self, m: Raw) {
        // SAFETY: the caller owns the module and uses it no more.
        if let Err(e) = cu_status(unsafe { (self.cu.cuModuleUnload)(m) }) {
            log::warn!("cuModuleUnload: {e}");
        }
    }

    /// cuModuleGetFunction.
    pub fn function(&self, m: Raw, name: &CStr) -> Result<Raw, Status> {
        let mut f = Raw::NULL;
        // SAFETY: valid out pointer, live module, NUL-terminated name.
        cu_status(unsafe { (self.cu.cuModuleGetFunction)(&mut f, m, name.as_ptr()) })?;
        Ok(f)
    }

    /// cuModuleGetGlobal: (address, size).
    pub fn global(&self, m: Raw, name: &CStr) -> Result<(DevPtr, u64), Status> {
        let (mut p, mut n) = (0u64, 0usize);
        // SAFETY: valid out pointers, live module, NUL-terminated name.
        cu_status(unsafe { (self.cu.cuModuleGetGlobal_v2)(&mut p, &mut n, m, name.as_ptr()) })?;
        Ok((p, n as u64))
    }

    /// cuFuncGetAttribute.
    pub fn func_attr(&self, f: Raw, attr: i32) -> Result<i32, Status> {
        let mut v = 0;
        // SAFETY: valid out pointer, live function.
        cu_status(unsafe { (self.cu.cuFuncGetAttribute)(&mut v, attr, f) })?;
        Ok(v)
    }

    /// cuFuncSetAttribute.
    pub fn set_func_attr(&self, f: Raw, attr: i32, value: i32) -> Result<(), Status> {
        // SAFETY: live function, no pointers.
        cu_status(unsafe { (self.cu.cuFuncSetAttribute)(f, attr, value) })
    }

    /// The parameter layout from cuFuncGetParamInfo: (offset, size) in order; None when
    /// the driver does not give it.
    pub fn param_info(&self, f: Raw) -> Option<Vec<(u32, u32)>> {
        let mut out = Vec::new();
        for i in 0..4096usize {
            let (mut off, mut size) = (0usize, 0usize);
            // SAFETY: valid out pointers, live function.
            let r = unsafe { (self.cu.cuFuncGetParamInfo)(f, i, &mut off, &mut size) };
            match r {
                0 => out.push((u32::try_from(off).ok()?, u32::try_from(size).ok()?)),
                // CUDA_ERROR_INVALID_VALUE past the last parameter.
                1 => return Some(out),
                _ => return None,
            }
        }
        None
    }

    /// Launches on the calling thread's stream with launch attributes (none: a plain
    /// launch) and waits for the kernel.
    pub fn launch(
        &self,
        f: Raw,
        grid: [u32; 3],
        block: [u32; 3],
        shared: u32,
        attrs: &[CuLaunchAttr],
        params: &mut KernelParams<'_>,
    ) -> Result<(), Status> {
        let r = if attrs.is_empty() {
            // SAFETY: `params` points at each parameter inside a buffer that outlives the
            // call, laid out as the function's layout says; the driver copies them.
            unsafe {
                (self.cu.cuLaunchKernel)(
                    f,
                    grid[0],
                    grid[1],
                    grid[2],
                    block[0],
                    block[1],
                    block[2],
                    shared,
                    STREAM_PER_THREAD,
                    params.ptrs.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            }
        } else {
            let config = CuLaunchConfig {
                grid,
                block,
                shared_mem_bytes: shared,
                stream: STREAM_PER_THREAD.0,
                attrs: attrs.as_ptr(),
                num_attrs: u32::try_from(attrs.len()).map_err(|_| Status::INVALID_VALUE)?,
            };
            // SAFETY: as above; `config` and the attributes it points at live for the call.
            unsafe {
                (self.cu.cuLaunchKernelEx)(
                    &config,
                    f,
                    params.ptrs.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            }
        };
        cu_status(r)?;
        self.sync()
    }

    /// A cuBLAS handle for the current context, on the calling thread's stream.
    pub fn blas_create(&self) -> Result<Raw, Status> {
        let b = self.blas.as_ref().ok_or(Status::BLAS_NOT_INITIALIZED)?;
        let mut h = Raw::NULL;
        // SAFETY: valid out pointer.
        blas_status(unsafe { (b.cublasCreate_v2)(&mut h) })?;
        // SAFETY: a live handle; the per-thread stream is resolved per calling thread.
        blas_status(unsafe { (b.cublasSetStream_v2)(h, STREAM_PER_THREAD) })?;
        Ok(h)
    }

    /// Destroys a cuBLAS handle.
    pub fn blas_destroy(&self, h: Raw) {
        if let Some(b) = &self.blas {
            // SAFETY: the caller owns the handle and uses it no more.
            let _ = unsafe { (b.cublasDestroy_v2)(h) };
        }
    }

    /// Sets the handle's math mode and workspace (a checked range, or none).
    fn blas_setup(
        &self,
        b: &Blas,
        h: Raw,
        math_mode: i32,
        workspace: Option<(DevPtr, u64)>,
    ) -> Result<(), Status> {
        // SAFETY: a live handle of the current context.
        blas_status(unsafe { (b.cublasSetMathMode)(h, math_mode) })?;
        let (ws, ws_len) = workspace.unwrap_or((0, 0));
        // SAFETY: the workspace range (possibly empty) was checked against the PD's
        // allocations.
        blas_status(unsafe {
            (b.cublasSetWorkspace_v2)(h, ws as usize as *mut c_void, ws_len as usize)
        })
    }

    /// A strided-batched GEMM on operands the caller checked; returns when done.
    pub fn gemm(
        &self,
        h: Raw,
        math_mode: i32,
        workspace: Option<(DevPtr, u64)>,
        g: &GemmCall<'_>,
    ) -> Result<(), Status> {
        let b = self.blas.as_ref().ok_or(Status::BLAS_NOT_INITIALIZED)?;
        self.blas_setup(b, h, math_mode, workspace)?;
        // SAFETY: alpha and beta are 16-byte host buffers (large enough for every scale
        // type); every matrix's extent was checked against the PD's allocations.
        blas_status(unsafe {
            (b.cublasGemmStridedBatchedEx)(
                h,
                g.transa,
                g.transb,
                g.m,
                g.n,
                g.k,
                g.alpha.as_ptr().cast(),
                g.a as usize as *const c_void,
                g.a_type,
                g.lda,
                g.stride_a,
                g.b as usize as *const c_void,
                g.b_type,
                g.ldb,
                g.stride_b,
                g.beta.as_ptr().cast(),
                g.c as usize as *mut c_void,
                g.c_type,
                g.ldc,
                g.stride_c,
                g.batch,
                g.compute_type,
                g.algo,
            )
        })?;
        self.sync()
    }

    /// A batched GEMM whose `a`, `b`, `c` are pointer arrays in memory of the executor's
    /// own, every matrix checked; returns when done.
    pub fn gemm_batched(
        &self,
        h: Raw,
        math_mode: i32,
        workspace: Option<(DevPtr, u64)>,
        g: &GemmCall<'_>,
    ) -> Result<(), Status> {
        let b = self.blas.as_ref().ok_or(Status::BLAS_NOT_INITIALIZED)?;
        self.blas_setup(b, h, math_mode, workspace)?;
        // SAFETY: as for `gemm`; the arrays hold `batch` checked pointers each.
        blas_status(unsafe {
            (b.cublasGemmBatchedEx)(
                h,
                g.transa,
                g.transb,
                g.m,
                g.n,
                g.k,
                g.alpha.as_ptr().cast(),
                g.a as usize as *const c_void,
                g.a_type,
                g.lda,
                g.b as usize as *const c_void,
                g.b_type,
                g.ldb,
                g.beta.as_ptr().cast(),
                g.c as usize as *const c_void,
                g.c_type,
                g.ldc,
                g.batch,
                g.compute_type,
                g.algo,
            )
        })?;
        self.sync()
    }

    /// A batched TRSM (see [`TrsmCall`]); returns when done.
    pub fn trsm_batched(&self, h: Raw, t: &TrsmCall<'_>) -> Result<(), Status> {
        let b = self.blas.as_ref().ok_or(Status::BLAS_NOT_INITIALIZED)?;
        self.blas_setup(b, h, 0, None)?;
        let f = if t.double {
            b.cublasDtrsmBatched
        } else {
            b.cublasStrsmBatched
        };
        // SAFETY: alpha is a 16-byte host buffer holding the scalar of the data type; the
        // arrays hold `batch` checked pointers each.
        blas_status(unsafe {
            f(
                h,
                t.side,
                t.uplo,
                t.trans,
                t.diag,
                t.m,
                t.n,
                t.alpha.as_ptr().cast(),
                t.a as usize as *const c_void,
                t.lda,
                t.b as usize as *const c_void,
                t.ldb,
                t.batch,
            )
        })?;
        self.sync()
    }

    /// A cuBLASLt handle for the current context.
    pub fn lt_create(&self) -> Result<Raw, Status> {
        let lt = self.lt.as_ref().ok_or(Status::BLAS_NOT_INITIALIZED)?;
        let mut h = Raw::NULL;
        // SAFETY: valid out pointer.
        blas_status(unsafe { (lt.cublasLtCreate)(&mut h) })?;
        Ok(h)
    }

    /// Destroys a cuBLASLt handle.
    pub fn lt_destroy(&self, h: Raw) {
        if let Some(lt) = &self.lt {
            // SAFETY: the caller owns the handle and uses it no more.
            let _ = unsafe { (lt.cublasLtDestroy)(h) };
        }
    }

    /// A cuBLASLt matmul (see [`LtCall`]) on the calling thread's stream, with cuBLASLt's
    /// heuristic choosing the algorithm; returns when done.
    pub fn lt_matmul(&self, h: Raw, c: &LtCall<'_>) -> Result<(), Status> {
        let lt = self.lt.as_ref().ok_or(Status::BLAS_NOT_INITIALIZED)?;
        let mut o = LtObjects {
            lt,
            desc: Raw::NULL,
            layouts: Vec::new(),
        };
        let set = |desc: Raw, attr: c_int, v: &[u8]| {
            // SAFETY: a live descriptor; `v` holds the attribute's value, of its size.
            blas_status(unsafe {
                (lt.cublasLtMatmulDescSetAttribute)(desc, attr, v.as_ptr().cast(), v.len())
            })
        };
        // SAFETY: valid out pointer.
        blas_status(unsafe {
            (lt.cublasLtMatmulDescCreate)(&mut o.desc, c.compute_type, c.scale_type)
        })?;
        set(o.desc, 3, &c.transa.to_ne_bytes())?; // TRANSA
        set(o.desc, 4, &c.transb.to_ne_bytes())?; // TRANSB
        set(o.desc, 7, &c.epilogue.to_ne_bytes())?; // EPILOGUE
        if c.bias != 0 {
            set(o.desc, 8, &(c.bias as usize).to_ne_bytes())?; // BIAS_POINTER
        }
        for m in &c.m {
            let mut l = Raw::NULL;
            // SAFETY: valid out pointer.
            blas_status(unsafe {
                (lt.cublasLtMatrixLayoutCreate)(&mut l, m.data_type, m.rows, m.cols, m.ld)
            })?;
            o.layouts.push(l);
            let attr = |a: c_int, v: &[u8]| {
                // SAFETY: a live layout; `v` holds the attribute's value, of its size.
                blas_status(unsafe {
                    (lt.cublasLtMatrixLayoutSetAttribute)(l, a, v.as_ptr().cast(), v.len())
                })
            };
            attr(5, &m.batch.to_ne_bytes())?; // BATCH_COUNT
            attr(6, &m.stride.to_ne_bytes())?; // STRIDED_BATCH_OFFSET
        }
        let (ws, ws_len) = c.workspace.unwrap_or((0, 0));
        let p = |d: DevPtr| d as usize as *const c_void;
        // SAFETY: every matrix, the bias and the workspace were checked against the PD's
        // allocations; alpha and beta are 16-byte host buffers; a NULL algorithm asks
        // cuBLASLt to choose.
        blas_status(unsafe {
            (lt.cublasLtMatmul)(
                h,
                o.desc,
                c.alpha.as_ptr().cast(),
                p(c.m[0].ptr),
                o.layouts[0],
                p(c.m[1].ptr),
                o.layouts[1],
                c.beta.as_ptr().cast(),
                p(c.m[2].ptr),
                o.layouts[2],
                c.m[3].ptr as usize as *mut c_void,
                o.layouts[3],
                std::ptr::null(),
                ws as usize as *mut c_void,
                ws_len as usize,
                STREAM_PER_THREAD,
            )
        })?;
        drop(o);
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_and_cublas_statuses_map_to_device_statuses() {
        assert_eq!(cu_status(0), Ok(()));
        assert_eq!(cu_status(2), Err(Status::OUT_OF_MEMORY));
        assert_eq!(cu_status(700), Err(Status::ILLEGAL_ADDRESS));
        assert!(
            cu_status(700).unwrap_err().is_sticky(),
            "sticky on the PD as on a GPU"
        );
        assert_eq!(cu_status(719), Err(Status::LAUNCH_FAILED));
        // Nothing from CUDA may pose as a protocol or BLAS status.
        assert_eq!(cu_status(0x1001), Err(Status::UNKNOWN));
        assert_eq!(cu_status(u32::MAX), Err(Status::UNKNOWN));
        assert_eq!(blas_status(0), Ok(()));
        assert_eq!(blas_status(7), Err(Status::BLAS_INVALID_VALUE));
        assert_eq!(blas_status(15), Err(Status::BLAS_NOT_SUPPORTED));
        assert_eq!(blas_status(0x1234), Err(Status::BLAS_INTERNAL_ERROR));
    }
}
