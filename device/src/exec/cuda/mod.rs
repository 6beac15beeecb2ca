//! The cuda executor: the commands run on a real GPU through the CUDA driver and cuBLAS,
//! loaded dynamically by cudarc's loader (the crate builds, and vgpu-stub starts, on
//! machines without CUDA: [`CudaExecutor::open`] says why it cannot serve).
//!
//! Each PD gets a CUDA context of its own ([`CudaDevice`], the context's [`Backend`]) under
//! the stream machinery every executor shares ([`super::streams`]): a vgpu stream is a
//! worker thread, and each of its ops runs on the worker's own CUDA stream
//! (`CU_STREAM_PER_THREAD`) and is waited for before the next, so a stream's order, its
//! errors (latched or sticky) and its completions are exactly those of the soft executor.
//! Streams still overlap on the GPU, as each worker has its own CUDA stream.
//!
//! Every address a command names is checked against the PD's own allocations and module
//! globals ([`ranges`]) before it reaches CUDA, and the PD's quota is enforced there.
//! Copies reach guest memory by address, with no staging: each file mapping of guest
//! memory is registered with CUDA (`cuMemHostRegister`) when a copy first touches it, so
//! that the GPU reaches it by DMA, and unregistered when the VMM unmaps it and no command
//! uses it any more ([`HostPins`]). 2-D copies with a side in guest memory are staged.
//!
//! The BLAS commands run on cuBLAS ([`blas`] checks their operands); the pointer arrays of
//! the batched ones are read, checked and copied into memory of the executor's own before
//! cuBLAS reads them, so that the PD cannot change them after the check.
//!
//! Refused with NOT_SUPPORTED and a log line: launch attributes other than cooperative,
//! cluster, priority and programmatic serialisation, and a kernel whose parameter layout
//! neither the driver (`cuFuncGetParamInfo`) nor the image gives.

#[allow(unsafe_code, reason = "the CUDA driver's and cuBLAS's C entry points")]
mod api;
mod blas;
mod layout;
pub mod ranges;

use super::soft::attr;
use super::soft::modules::{func_attr, image_status};
use super::{Backend, CallbackSink, Context, Executor, HostSource, Limits, Op, Side2D};
use crate::exec::context::StreamContext;
use crate::guest::{HostPiece, Pin};
use api::{Gpu, KernelParams, Raw};
use layout::{Cu2D, CuLaunchAttr, MEMORYTYPE_HOST};
use ranges::Ranges;
use std::collections::HashMap;
use std::ffi::CString;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use vgpu_os::lock;
use vgpu_proto::info::{
    executor, func_flags, DeviceInfo, FuncRecord, FunctionEntry, MgmtInfo, ParamInfo, ATTR_SLOTS,
    DEVICE_INFO_VERSION,
};
use vgpu_proto::payload::{launch_attr, GemmDesc, LaunchAttr, LtMatmulDesc, TrsmBatchedDesc};
use vgpu_proto::regs::features;
use vgpu_proto::Status;

/// Device attributes the vGPU does not serve, and the value it reports instead, so that
/// applications do not take paths that would fail: mapped and managed host memory, host
/// registration, the VMM calls (ggml switches to its VMM pool when it sees attribute 102),
/// memory pools, IPC handle types and GPUDirect.
pub const MASKED_ATTRIBUTES: &[(usize, i32)] = &[
    (attr::CAN_MAP_HOST_MEMORY, 0),
    (attr::MANAGED_MEMORY, 0),
    (86, 0), // HOST_NATIVE_ATOMIC_SUPPORTED
    (88, 0), // PAGEABLE_MEMORY_ACCESS
    (attr::CONCURRENT_MANAGED_ACCESS, 0),
    (91, 0),  // CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM
    (99, 0),  // HOST_REGISTER_SUPPORTED
    (100, 0), // PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES
    (101, 0), // DIRECT_MANAGED_MEM_ACCESS_FROM_HOST
    (attr::VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 0),
    (103, 0), // HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED
    (104, 0), // HANDLE_TYPE_WIN32_HANDLE_SUPPORTED
    (105, 0), // HANDLE_TYPE_WIN32_KMT_HANDLE_SUPPORTED
    (attr::MEMORY_POOLS_SUPPORTED, 0),
    (116, 0), // GPU_DIRECT_RDMA_SUPPORTED
    (117, 0), // GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS
    (118, 0), // GPU_DIRECT_RDMA_WRITES_ORDERING
    (119, 0), // MEMPOOL_SUPPORTED_HANDLE_TYPES
];

/// Replaces the attributes the vGPU does not serve ([`MASKED_ATTRIBUTES`]).
pub fn mask_attributes(attrs: &mut [i32]) {
    for &(i, v) in MASKED_ATTRIBUTES {
        if let Some(a) = attrs.get_mut(i) {
            *a = v;
        }
    }
}

/// What the cuda executor takes from a module image: its kernels (name, parameter layout
/// from the image if it has one, parameter bytes) and its globals' names.
#[derive(Debug)]
struct ImageIndex {
    kernels: Vec<ImageKernel>,
    globals: Vec<String>,
}

/// A kernel of an image: name, the parameter layout the image gives ((offset, size) of
/// each), parameter bytes.
type ImageKernel = (String, Option<Vec<(u32, u32)>>, u32);

/// The cache's images, and their SHA-256s oldest first.
type CacheEntries = (
    HashMap<[u8; 32], Arc<ImageIndex>>,
    std::collections::VecDeque<[u8; 32]>,
);

impl ImageIndex {
    fn parse(image: &[u8], sm: u32) -> Result<Self, Status> {
        let img = vgpu_fatbin::parse_image(image, sm).map_err(|e| {
            log::warn!("module image refused: {e}");
            image_status(&e)
        })?;
        Ok(ImageIndex {
            kernels: img
                .kernels
                .into_iter()
                .map(|k| {
                    let layout = k
                        .layout_known
                        .then(|| k.params.iter().map(|p| (p.offset, p.size)).collect());
                    (k.name, layout, k.param_bytes)
                })
                .collect(),
            globals: img.globals.into_iter().map(|g| g.name).collect(),
        })
    }
}

/// Parsed images by SHA-256, shared by every PD (each still loads the module into its own
/// context); the oldest go first past [`ImageCache::CAPACITY`].
#[derive(Default)]
struct ImageCache {
    entries: Mutex<CacheEntries>,
}

impl ImageCache {
    /// Images kept (an index holds names and layouts only: a few KiB to a few MiB).
    const CAPACITY: usize = 1024;

    /// The index of `image` (SHA-256 `sha256`, checked by the engine), parsed once.
    fn get(&self, image: &[u8], sha256: &[u8; 32], sm: u32) -> Result<Arc<ImageIndex>, Status> {
        if let Some(i) = lock(&self.entries).0.get(sha256) {
            return Ok(i.clone());
        }
        let index = Arc::new(ImageIndex::parse(image, sm)?);
        let mut e = lock(&self.entries);
        if e.0.insert(*sha256, index.clone()).is_none() {
            e.1.push_back(*sha256);
        }
        while e.1.len() > Self::CAPACITY {
            if let Some(old) = e.1.pop_front() {
                e.0.remove(&old);
            }
        }
        Ok(index)
    }
}

/// How many bytes of guest memory one step of a 2-D copy stages.
const BOUNCE: usize = 8 << 20;

/// The smallest file mapping of guest memory worth registering with CUDA: a registration
/// costs more than staging the few copies a small mapping (a small pinned buffer) carries.
const MIN_PIN: usize = 1 << 20;

/// What every PD's context shares: parsed images, and guest memory registered with CUDA.
struct Shared {
    images: ImageCache,
    pins: Arc<HostPins>,
}

/// Guest memory registered with CUDA (page-locked, so that copies from and to it are DMA
/// with no staging), each file mapping once, when a copy first touches it, until the
/// mapping goes away ([`HostPiece::pin`]). Registrations live in a context of their own:
/// guest memory is shared by every PD, whose contexts come and go.
struct HostPins {
    gpu: Arc<Gpu>,
    dev: i32,
    /// Made at the first registration; None when that failed.
    ctx: OnceLock<Option<Raw>>,
}

impl HostPins {
    /// Registers the file mapping at `base` of `len` bytes (read-only unless `writable`);
    /// None (and a log line) when CUDA refuses: copies from it are then staged by CUDA.
    fn pin(self: &Arc<Self>, base: *mut u8, len: usize, writable: bool) -> Option<Pin> {
        // Whole pages: a file whose size is not a multiple of the page ends in a partial
        // page, which vgpu's own libcuda (loop-back) cannot register, as its driver maps
        // whole pages of a file only; copies that touch that page are staged.
        let len = len - len % 4096;
        if len < MIN_PIN {
            return None;
        }
        let ctx = (*self.ctx.get_or_init(|| {
            self.gpu
                .ctx_create(self.dev)
                .inspect_err(|e| log::warn!("no CUDA context to register guest memory in: {e}"))
                .ok()
        }))?;
        match self.gpu.host_register(ctx, base, len, writable) {
            Ok(()) => {
                log::info!("guest memory registered with the GPU: {len} bytes at {base:p}");
                Some(Box::new(Registration {
                    pins: self.clone(),
                    base: base as usize,
                    len,
                }))
            }
            Err(e) => {
                log::warn!("registering {len} bytes of guest memory with the GPU failed ({e}): copies from and to it are staged");
                None
            }
        }
    }
}

impl Drop for HostPins {
    fn drop(&mut self) {
        if let Some(Some(ctx)) = self.ctx.get() {
            self.gpu.ctx_destroy(*ctx);
        }
    }
}

/// One registration of [`HostPins`], undone on drop.
struct Registration {
    pins: Arc<HostPins>,
    base: usize,
    len: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(Some(ctx)) = self.pins.ctx.get() else {
            return;
        };
        match self.pins.gpu.host_unregister(*ctx, self.base as *mut u8) {
            Ok(()) => log::info!(
                "guest memory unregistered from the GPU: {} bytes at {:#x}",
                self.len,
                self.base
            ),
            Err(e) => log::warn!(
                "unregistering guest memory at {:#x} from the GPU failed: {e}",
                self.base
            ),
        }
    }
}

/// The cuda executor on one GPU.
pub struct CudaExecutor {
    gpu: Arc<Gpu>,
    dev: i32,
    info: DeviceInfo,
    shared: Arc<Shared>,
    /// Kernel time of every context (NVML's figure, when there is one, covers the whole
    /// GPU instead).
    util: Arc<crate::exec::util::UtilMeter>,
}

impl CudaExecutor {
    /// Loads CUDA and opens GPU `ordinal`. Refuses vgpu's own `libcuda.so.1` (which would
    /// loop back into a vGPU) unless `allow_loopback`. The error says what is missing.
    pub fn open(ordinal: i32, allow_loopback: bool) -> Result<Self, String> {
        let gpu = std::panic::catch_unwind(api::load)
            .map_err(|_| "loading the CUDA libraries panicked".to_string())??;
        if gpu.is_vgpu() {
            if !allow_loopback {
                return Err("the libcuda.so.1 on the library path is vgpu's own: the cuda executor would loop back into a vGPU (LD_LIBRARY_PATH names the shims?); --allow-loopback permits it, for tests".into());
            }
            log::warn!("the cuda executor runs on vgpu's own libcuda.so.1 (loop-back, allowed)");
        }
        gpu.init()
            .map_err(|e| format!("cuInit failed: {e} (is the NVIDIA driver loaded?)"))?;
        let count = gpu
            .device_count()
            .map_err(|e| format!("cuDeviceGetCount failed: {e}"))?;
        if count == 0 {
            return Err("CUDA reports no GPU".into());
        }
        let dev = gpu
            .device(ordinal)
            .map_err(|e| format!("no GPU {ordinal} (of {count}): {e}"))?;
        let (info, name) =
            device_info(&gpu, dev).map_err(|e| format!("reading GPU {ordinal}: {e}"))?;
        log::info!(
            "cuda executor on GPU {ordinal}: {name} (compute capability {}.{}, {} MiB)",
            info.cc_major,
            info.cc_minor,
            info.total_mem >> 20
        );
        let gpu = Arc::new(gpu);
        let pins = Arc::new(HostPins {
            gpu: gpu.clone(),
            dev,
            ctx: OnceLock::new(),
        });
        Ok(CudaExecutor {
            gpu,
            dev,
            info,
            shared: Arc::new(Shared {
                images: ImageCache::default(),
                pins,
            }),
            util: Arc::default(),
        })
    }
}

/// IDENTIFY's answer from the GPU's own properties, with [`MASKED_ATTRIBUTES`] applied.
/// Also returns the name.
fn device_info(gpu: &Gpu, dev: i32) -> Result<(DeviceInfo, String), Status> {
    let mut d: DeviceInfo = bytemuck::Zeroable::zeroed();
    d.version = DEVICE_INFO_VERSION;
    d.cuda_version = gpu.driver_version()? as u32;
    d.total_mem = gpu.total_mem(dev)?;
    d.uuid = gpu.uuid(dev)?;
    d.executor = executor::CUDA;
    let count = (attr::COUNT as usize).min(ATTR_SLOTS);
    d.attr_count = count as u32;
    let mut a = [0i32; ATTR_SLOTS];
    for (i, v) in a.iter_mut().enumerate().take(count).skip(1) {
        *v = gpu.attribute(dev, i as i32).unwrap_or(0);
    }
    mask_attributes(&mut a);
    d.cc_major = a[attr::COMPUTE_CAPABILITY_MAJOR] as u32;
    d.cc_minor = a[attr::COMPUTE_CAPABILITY_MINOR] as u32;
    d.pci_domain = a[attr::PCI_DOMAIN_ID] as u32;
    d.pci_bus = a[attr::PCI_BUS_ID] as u8;
    d.pci_device = a[attr::PCI_DEVICE_ID] as u8;
    d.attrs = a;
    d.exec_features = features::INLINE_PAYLOAD | features::HOST_FUNC | features::GRAPHS;
    if gpu.has_blas() {
        d.exec_features |= features::BLAS;
    }
    if gpu.has_lt() {
        d.exec_features |= features::BLASLT;
    }
    let version = gpu.nvml_driver_version().unwrap_or_else(|| {
        log::warn!("no NVML: the driver version reported is the CUDA version");
        format!("{}.{}", d.cuda_version / 1000, d.cuda_version % 1000 / 10)
    });
    DeviceInfo::set_str(&mut d.driver_version, &version);
    let name = gpu.name(dev)?;
    DeviceInfo::set_str(&mut d.name, &name);
    Ok((d, name))
}

impl Executor for CudaExecutor {
    fn device_info(&self) -> DeviceInfo {
        self.info
    }

    fn utilization(&self) -> u32 {
        self.util.percent(std::time::Instant::now())
    }

    fn sensors(&self) -> MgmtInfo {
        let mut m: MgmtInfo = bytemuck::Zeroable::zeroed();
        m.gpu_util = self.utilization();
        if let Some(v) = self.gpu.nvml_sensors(&self.info.uuid) {
            [
                m.gpu_util,
                m.mem_util,
                m.temperature_c,
                m.power_mw,
                m.power_limit_mw,
                m.sm_clock_mhz,
                m.mem_clock_mhz,
            ] = v;
        }
        m
    }

    fn prepare_module(&self, image: &[u8], sha256: &[u8; 32]) {
        // What fails here fails again, and is reported, in the load itself.
        let _ = self
            .shared
            .images
            .get(image, sha256, self.info.cc_major * 10 + self.info.cc_minor);
    }

    fn new_context(
        &self,
        pd: u32,
        _cache_domain: u32,
        limits: Limits,
        callbacks: Arc<dyn CallbackSink>,
    ) -> Result<Box<dyn Context>, Status> {
        let backend = CudaDevice::new(
            pd,
            self.gpu.clone(),
            self.dev,
            limits.mem_quota.min(self.info.total_mem),
            self.info.total_mem,
            self.info.cc_major * 10 + self.info.cc_minor,
            self.shared.clone(),
        )?;
        Ok(Box::new(StreamContext::new(
            pd,
            limits,
            Arc::new(backend),
            callbacks,
            self.util.clone(),
        )))
    }
}

/// A kernel of a loaded module.
struct Function {
    raw: Raw,
    name: String,
    /// (offset, size) of each parameter; None when neither CUDA nor the image says.
    layout: Option<Vec<(u32, u32)>>,
    param_bytes: u32,
}

/// A loaded module.
struct Module {
    raw: Raw,
    functions: Vec<u64>,
    globals: HashMap<String, (u64, u64)>,
}

#[derive(Default)]
struct Modules {
    modules: HashMap<u64, Module>,
    functions: HashMap<u64, Arc<Function>>,
}

/// One PD's CUDA context, its memory and modules, and the data ops on them.
pub struct CudaDevice {
    pd: u32,
    gpu: Arc<Gpu>,
    dev: i32,
    total: u64,
    /// Compute capability as an sm number (86 for 8.6): which code of an image to list.
    sm: u32,
    ctx: RwLock<Raw>,
    ranges: Mutex<Ranges>,
    modules: Mutex<Modules>,
    /// Idle cuBLAS handles of the context (one per worker using it at a time).
    blas: Mutex<Vec<Raw>>,
    /// Idle cuBLASLt handles, likewise.
    lt: Mutex<Vec<Raw>>,
    shared: Arc<Shared>,
}

impl CudaDevice {
    fn new(
        pd: u32,
        gpu: Arc<Gpu>,
        dev: i32,
        quota: u64,
        total: u64,
        sm: u32,
        shared: Arc<Shared>,
    ) -> Result<Self, Status> {
        let ctx = gpu.ctx_create(dev).inspect_err(|e| {
            log::error!("PD {pd}: cuCtxCreate failed: {e}");
        })?;
        Ok(CudaDevice {
            pd,
            gpu,
            dev,
            total,
            sm,
            ctx: RwLock::new(ctx),
            ranges: Mutex::new(Ranges::new(quota)),
            modules: Mutex::new(Modules::default()),
            blas: Mutex::new(Vec::new()),
            lt: Mutex::new(Vec::new()),
            shared,
        })
    }

    /// Makes the context current on this thread; the guard keeps it from being replaced.
    fn enter(&self) -> Result<std::sync::RwLockReadGuard<'_, Raw>, Status> {
        let ctx = self.ctx.read().unwrap_or_else(|p| p.into_inner());
        self.gpu.enter(*ctx)?;
        Ok(ctx)
    }

    fn ranges(&self) -> MutexGuard<'_, Ranges> {
        lock(&self.ranges)
    }

    fn modules(&self) -> MutexGuard<'_, Modules> {
        lock(&self.modules)
    }

    fn function(&self, func: u64) -> Result<Arc<Function>, Status> {
        self.modules()
            .functions
            .get(&func)
            .cloned()
            .ok_or(Status::INVALID_HANDLE)
    }

    fn check(&self, ptr: u64, len: u64) -> Result<(), Status> {
        self.ranges().check(ptr, len)
    }

    /// Destroys the context's cuBLAS handles and the context (everything in it).
    fn destroy_context(&self, ctx: Raw) {
        if self.gpu.enter(ctx).is_ok() {
            for h in lock(&self.blas).drain(..) {
                self.gpu.blas_destroy(h);
            }
            for h in lock(&self.lt).drain(..) {
                self.gpu.lt_destroy(h);
            }
        }
        self.gpu.ctx_destroy(ctx);
    }

    fn copy_htod(&self, dst: u64, src: HostSource) -> Result<(), Status> {
        self.check(dst, src.len())?;
        match src {
            HostSource::Inline(v) => self.gpu.htod(dst, &v),
            HostSource::Range(r) => r.with_host_pieces(false, |pieces| {
                for p in pieces {
                    self.pin(p);
                    self.gpu.htod_piece(dst + p.at(), p)?;
                }
                Ok(())
            }),
        }
    }

    fn copy_dtoh(&self, src: u64, dst: &super::HostRange) -> Result<(), Status> {
        self.check(src, dst.len())?;
        dst.with_host_pieces(true, |pieces| {
            for p in pieces {
                self.pin(p);
                self.gpu.dtoh_piece(p, src + p.at())?;
            }
            Ok(())
        })
    }

    /// Registers the guest memory `p` lies in with CUDA, if that is not done yet.
    fn pin(&self, p: &HostPiece) {
        p.pin(|base, len, writable| self.shared.pins.pin(base, len, writable));
    }

    fn copy_2d(
        &self,
        src: &Side2D,
        src_pitch: u64,
        dst: &Side2D,
        dst_pitch: u64,
        width: u64,
        height: u64,
    ) -> Result<(), Status> {
        if width == 0 || height == 0 {
            return Ok(());
        }
        let span = |pitch: u64| {
            (height - 1)
                .checked_mul(pitch)
                .and_then(|v| v.checked_add(width))
                .ok_or(Status::INVALID_VALUE)
        };
        if let Side2D::Device(a) = src {
            self.check(*a, span(src_pitch)?)?;
        }
        if let Side2D::Device(a) = dst {
            self.check(*a, span(dst_pitch)?)?;
        }
        let u = |v: u64| usize::try_from(v).map_err(|_| Status::INVALID_VALUE);
        if let (Side2D::Device(s), Side2D::Device(d)) = (src, dst) {
            let p = Cu2D {
                src_device: *s,
                src_pitch: u(src_pitch)?,
                dst_device: *d,
                dst_pitch: u(dst_pitch)?,
                width_in_bytes: u(width)?,
                height: u(height)?,
                ..Cu2D::default()
            };
            return self.gpu.copy_2d(&p);
        }
        // A side in guest memory: staged in pieces of at most BOUNCE bytes, rows packed
        // (the gaps between rows are neither read nor written). The offsets below stay
        // within the spans checked above.
        let mut buf = staging(width.saturating_mul(height).min(BOUNCE as u64))?;
        for (col, w, r0, rows) in pieces(width, height, BOUNCE as u64) {
            let chunk = &mut buf[..(w * rows) as usize];
            let row = |i: u64| (i * w) as usize..((i + 1) * w) as usize;
            if let Side2D::Host(h) = src {
                for i in 0..rows {
                    h.read((r0 + i) * src_pitch + col, &mut chunk[row(i)])?;
                }
            }
            let mut p = Cu2D {
                width_in_bytes: u(w)?,
                height: u(rows)?,
                ..Cu2D::default()
            };
            match src {
                Side2D::Device(a) => {
                    p.src_device = a + r0 * src_pitch + col;
                    p.src_pitch = u(src_pitch)?;
                }
                Side2D::Host(_) => {
                    p.src_memory_type = MEMORYTYPE_HOST;
                    p.src_host = chunk.as_ptr().cast();
                    p.src_pitch = u(w)?;
                }
            }
            match dst {
                Side2D::Device(a) => {
                    p.dst_device = a + r0 * dst_pitch + col;
                    p.dst_pitch = u(dst_pitch)?;
                }
                Side2D::Host(_) => {
                    p.dst_memory_type = MEMORYTYPE_HOST;
                    p.dst_host = chunk.as_mut_ptr().cast();
                    p.dst_pitch = u(w)?;
                }
            }
            // Both sides in guest memory: the piece is already read, no GPU involved.
            if p.src_memory_type != MEMORYTYPE_HOST || p.dst_memory_type != MEMORYTYPE_HOST {
                self.gpu.copy_2d(&p)?;
            }
            if let Side2D::Host(h) = dst {
                for i in 0..rows {
                    h.write((r0 + i) * dst_pitch + col, &chunk[row(i)])?;
                }
            }
        }
        Ok(())
    }

    fn memset(
        &self,
        dst: u64,
        pitch: u64,
        width: u64,
        height: u64,
        value: u32,
        elem: u32,
    ) -> Result<(), Status> {
        if width == 0 || height == 0 {
            return Ok(());
        }
        let row = width
            .checked_mul(u64::from(elem))
            .ok_or(Status::INVALID_VALUE)?;
        let span = (height - 1)
            .checked_mul(pitch)
            .and_then(|v| v.checked_add(row))
            .ok_or(Status::INVALID_VALUE)?;
        self.check(dst, span)?;
        let pitch = if height == 1 { pitch.max(row) } else { pitch };
        self.gpu.memset_2d(dst, pitch, value, elem, width, height)
    }

    fn launch(
        &self,
        func: u64,
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem: u32,
        attrs: &[LaunchAttr],
        mut params: Vec<u8>,
    ) -> Result<(), Status> {
        let f = self.function(func)?;
        let layout = f.layout.as_deref().ok_or(Status::NOT_SUPPORTED)?;
        let mut kp = KernelParams::new(&mut params, layout).ok_or(Status::INVALID_VALUE)?;
        let attrs: Vec<CuLaunchAttr> = attrs
            .iter()
            .map(|a| {
                let mut value = [0u32; 16];
                value[..3].copy_from_slice(&[a.v0, a.v1, a.v2]);
                CuLaunchAttr {
                    id: a.id,
                    pad: [0; 4],
                    value,
                }
            })
            .collect();
        self.gpu
            .launch(f.raw, grid, block, shared_mem, &attrs, &mut kp)
            .inspect_err(|e| log::warn!("PD {}: kernel {} failed: {e}", self.pd, f.name))
    }

    /// A cuBLAS handle of the context for the calling worker, back to the pool after `f`.
    fn with_blas<T>(&self, f: impl FnOnce(Raw) -> Result<T, Status>) -> Result<T, Status> {
        let h = match lock(&self.blas).pop() {
            Some(h) => h,
            None => self.gpu.blas_create()?,
        };
        let r = f(h);
        lock(&self.blas).push(h);
        r
    }

    /// The workspace a BLAS command names, checked; None for none.
    fn workspace(&self, at: u64, len: u64) -> Result<Option<(u64, u64)>, Status> {
        if at == 0 || len == 0 {
            return Ok(None);
        }
        self.check(at, len)?;
        Ok(Some((at, len)))
    }

    /// Reads `batch` device pointers from the array at `at` (in the PD's memory).
    fn read_pointers(&self, at: u64, batch: usize) -> Result<Vec<u64>, Status> {
        let bytes = blas::pointer_array_bytes(batch)?;
        self.check(at, bytes)?;
        let mut raw = staging(bytes)?;
        self.gpu.dtoh(&mut raw, at)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect())
    }

    /// Device memory of the executor's own holding `values` (counted against the PD's
    /// quota while it lives): checked pointer arrays that the PD cannot change after the
    /// check.
    fn scratch(&self, values: &[u64]) -> Result<Scratch<'_>, Status> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let len = bytes.len() as u64;
        self.ranges().reserve(len)?;
        let ptr = match self.gpu.alloc(len.max(1)) {
            Ok(p) => p,
            Err(e) => {
                self.ranges().release(len);
                return Err(e);
            }
        };
        let s = Scratch {
            dev: self,
            ptr,
            len,
        };
        self.gpu.htod(ptr, &bytes)?;
        Ok(s)
    }

    fn gemm(&self, d: &GemmDesc) -> Result<(), Status> {
        let Some(shape) = blas::gemm_shape(d)? else {
            return Ok(());
        };
        shape.check_strided(d, &self.ranges())?;
        let ws = self.workspace(d.workspace, d.workspace_size)?;
        let call = shape.call(d, d.a, d.b, d.c);
        self.with_blas(|h| self.gpu.gemm(h, d.math_mode as i32, ws, &call))
    }

    fn gemm_batched(&self, d: &GemmDesc) -> Result<(), Status> {
        let Some(shape) = blas::gemm_shape(d)? else {
            return Ok(());
        };
        let batch = shape.batch as usize;
        let a = self.read_pointers(d.a, batch)?;
        let b = self.read_pointers(d.b, batch)?;
        let c = self.read_pointers(d.c, batch)?;
        shape.check_pointers(&a, &b, &c, &self.ranges())?;
        let ws = self.workspace(d.workspace, d.workspace_size)?;
        let (sa, sb, sc) = (self.scratch(&a)?, self.scratch(&b)?, self.scratch(&c)?);
        let call = shape.call(d, sa.ptr, sb.ptr, sc.ptr);
        self.with_blas(|h| self.gpu.gemm_batched(h, d.math_mode as i32, ws, &call))
    }

    fn lt_matmul(&self, d: &LtMatmulDesc) -> Result<(), Status> {
        let Some(call) = blas::lt_call(d, &self.ranges())? else {
            return Ok(());
        };
        let h = match lock(&self.lt).pop() {
            Some(h) => h,
            None => self.gpu.lt_create()?,
        };
        let r = self.gpu.lt_matmul(h, &call);
        lock(&self.lt).push(h);
        r
    }

    fn trsm_batched(&self, t: &TrsmBatchedDesc) -> Result<(), Status> {
        let Some(shape) = blas::trsm_shape(t)? else {
            return Ok(());
        };
        let a = self.read_pointers(t.a, shape.batch as usize)?;
        let b = self.read_pointers(t.b, shape.batch as usize)?;
        shape.check_pointers(&a, &b, &self.ranges())?;
        let (sa, sb) = (self.scratch(&a)?, self.scratch(&b)?);
        let call = shape.call(t, sa.ptr, sb.ptr);
        self.with_blas(|h| self.gpu.trsm_batched(h, &call))
    }
}

/// Device memory the executor holds for one command (see [`CudaDevice::scratch`]).
struct Scratch<'a> {
    dev: &'a CudaDevice,
    ptr: u64,
    len: u64,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.dev.gpu.free(self.ptr) {
            log::warn!("PD {}: freeing scratch memory: {e}", self.dev.pd);
        }
        self.dev.ranges().release(self.len);
    }
}

/// The pieces of a `width` × `height` 2-D copy staged through `bounce` bytes: (first
/// column, width, first row, rows), each at most `bounce` bytes (a row wider than that in
/// pieces of its own), covering every byte of the copy once.
fn pieces(width: u64, height: u64, bounce: u64) -> impl Iterator<Item = (u64, u64, u64, u64)> {
    let step = width.min(bounce).max(1);
    (0..width).step_by(step as usize).flat_map(move |col| {
        let w = step.min(width - col);
        let rows = (bounce / w).max(1);
        (0..height)
            .step_by(rows as usize)
            .map(move |r0| (col, w, r0, rows.min(height - r0)))
    })
}

/// A zeroed buffer of `len` bytes, or OUT_OF_MEMORY.
fn staging(len: u64) -> Result<Vec<u8>, Status> {
    let n = usize::try_from(len).map_err(|_| Status::OUT_OF_MEMORY)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Status::OUT_OF_MEMORY)?;
    v.resize(n, 0);
    Ok(v)
}

/// A kernel's parameter layout and parameter bytes: the driver's (`cuFuncGetParamInfo`)
/// when it gives one, else the image's; neither leaves the kernel without a layout (its
/// launches are refused).
fn choose_layout(
    from_driver: Option<Vec<(u32, u32)>>,
    from_image: &Option<Vec<(u32, u32)>>,
    image_bytes: u32,
) -> (Option<Vec<(u32, u32)>>, u32) {
    let layout = from_driver.or_else(|| from_image.clone());
    let bytes = layout.as_ref().map_or(image_bytes, |l| {
        l.iter()
            .map(|(o, s)| o.saturating_add(*s))
            .max()
            .unwrap_or(0)
            .max(image_bytes)
    });
    (layout, bytes)
}

/// A module image as `cuModuleLoadData` reads it: the bytes and sixteen NULs, so that
/// PTX text is terminated and nothing is read past the copy.
fn padded_image(image: &[u8]) -> Result<Vec<u8>, Status> {
    let mut v = Vec::new();
    v.try_reserve_exact(image.len() + 16)
        .map_err(|_| Status::OUT_OF_MEMORY)?;
    v.extend_from_slice(image);
    v.extend_from_slice(&[0; 16]);
    Ok(v)
}

impl Backend for CudaDevice {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn execute(&self, op: Op, _cancel: &AtomicBool) -> Result<(), Status> {
        let _ctx = self.enter()?;
        match op {
            Op::CopyHtoD { dst, src } => self.copy_htod(dst, src),
            Op::CopyDtoH { src, dst } => self.copy_dtoh(src, &dst),
            Op::CopyDtoD { dst, src, len } => {
                self.check(dst, len)?;
                self.check(src, len)?;
                self.gpu.dtod(dst, src, len)
            }
            Op::Copy2D {
                src,
                src_pitch,
                dst,
                dst_pitch,
                width,
                height,
            } => self.copy_2d(&src, src_pitch, &dst, dst_pitch, width, height),
            Op::Memset {
                dst,
                pitch,
                width,
                height,
                value,
                elem_size,
            } => self.memset(dst, pitch, width, height, value, elem_size),
            Op::Launch {
                func,
                grid,
                block,
                shared_mem,
                attrs,
                params,
            } => self.launch(func, grid, block, shared_mem, &attrs, params),
            Op::Gemm(g) => self.gemm(&g),
            Op::GemmBatched(g) => self.gemm_batched(&g),
            Op::TrsmBatched(t) => self.trsm_batched(&t),
            Op::LtMatmul(l) => self.lt_matmul(&l),
            Op::HostFunc { .. }
            | Op::GraphLaunch { .. }
            | Op::EventRecord { .. }
            | Op::WaitEvent { .. } => Err(Status::UNKNOWN),
        }
    }

    fn alloc(&self, size: u64) -> Result<u64, Status> {
        let _ctx = self.enter()?;
        let mut ranges = self.ranges();
        ranges.admit(size)?;
        let p = self.gpu.alloc(size.max(1))?;
        ranges.add_alloc(p, size);
        Ok(p)
    }

    fn free(&self, ptr: u64) -> Result<(), Status> {
        let _ctx = self.enter()?;
        self.ranges().remove_alloc(ptr)?;
        self.gpu.free(ptr)
    }

    fn range_of(&self, ptr: u64) -> Option<(u64, u64)> {
        self.ranges().range_of(ptr)
    }

    fn mem_info(&self) -> (u64, u64) {
        let (room, used) = {
            let r = self.ranges();
            (r.room(), r.usage().0)
        };
        let quota = room + used;
        let free = self
            .enter()
            .and_then(|_ctx| self.gpu.mem_info())
            .map_or(room, |(free, _)| free.min(room));
        (free, quota.min(self.total))
    }

    fn set_quota(&self, quota: u64) {
        self.ranges().set_quota(quota.min(self.total))
    }

    fn mem_usage(&self) -> (u64, u32) {
        self.ranges().usage()
    }

    fn get_limit(&self, limit: u32) -> Result<u64, Status> {
        let _ctx = self.enter()?;
        let limit = i32::try_from(limit).map_err(|_| Status::UNSUPPORTED_LIMIT)?;
        self.gpu.get_limit(limit)
    }

    fn set_limit(&self, limit: u32, value: u64) -> Result<(), Status> {
        let _ctx = self.enter()?;
        let limit = i32::try_from(limit).map_err(|_| Status::UNSUPPORTED_LIMIT)?;
        self.gpu.set_limit(limit, value)
    }

    fn module_load(
        &self,
        image: &[u8],
        sha256: &[u8; 32],
        next: &mut dyn FnMut(bool) -> u64,
        room: u64,
    ) -> Result<(u64, Vec<FunctionEntry>), Status> {
        // The parser lists the kernels and globals, and bounds the image before the
        // driver reads it.
        let img = self.shared.images.get(image, sha256, self.sm)?;
        let need = 1 + img.kernels.len() as u64 + img.globals.len() as u64;
        if need > room {
            log::warn!("module with {need} objects exceeds the PD's object limit");
            return Err(Status::OUT_OF_MEMORY);
        }
        let padded = padded_image(image)?;
        let _ctx = self.enter()?;
        let raw = self.gpu.module_load(&padded).inspect_err(|e| {
            log::warn!("PD {}: cuModuleLoadData failed: {e}", self.pd);
        })?;
        let module = next(true);
        let mut functions = Vec::new();
        let mut entries = Vec::new();
        let mut table = Vec::new();
        let mut globals = HashMap::new();
        let loaded: Result<(), Status> = (|| {
            for (kname, image_layout, image_bytes) in &img.kernels {
                let name = CString::new(kname.as_str()).map_err(|_| Status::INVALID_IMAGE)?;
                let f = self.gpu.function(raw, &name)?;
                let (layout, param_bytes) =
                    choose_layout(self.gpu.param_info(f), image_layout, *image_bytes);
                let h = next(false);
                let attr = |a: u32| self.gpu.func_attr(f, a as i32).unwrap_or(0);
                let mut r: FuncRecord = bytemuck::Zeroable::zeroed();
                r.handle = h;
                r.param_bytes = param_bytes;
                r.flags = if layout.is_some() {
                    func_flags::LAYOUT_KNOWN
                } else {
                    0
                };
                r.max_threads_per_block = attr(func_attr::MAX_THREADS_PER_BLOCK);
                r.shared_size_bytes = attr(func_attr::SHARED_SIZE_BYTES);
                r.const_size_bytes = attr(func_attr::CONST_SIZE_BYTES);
                r.local_size_bytes = attr(func_attr::LOCAL_SIZE_BYTES);
                r.num_regs = attr(func_attr::NUM_REGS);
                r.ptx_version = attr(func_attr::PTX_VERSION);
                r.binary_version = attr(func_attr::BINARY_VERSION);
                r.max_dynamic_shared_size_bytes = attr(func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES);
                entries.push(FunctionEntry {
                    record: r,
                    name: kname.clone(),
                    params: layout
                        .iter()
                        .flatten()
                        .map(|&(offset, size)| ParamInfo { offset, size })
                        .collect(),
                });
                functions.push(h);
                table.push((
                    h,
                    Arc::new(Function {
                        raw: f,
                        name: kname.clone(),
                        layout,
                        param_bytes,
                    }),
                ));
            }
            for g in &img.globals {
                let name = CString::new(g.as_str()).map_err(|_| Status::INVALID_IMAGE)?;
                let (addr, size) = self.gpu.global(raw, &name)?;
                globals.insert(g.clone(), (addr, size));
            }
            Ok(())
        })();
        if let Err(e) = loaded {
            log::warn!("PD {}: module refused: {e}", self.pd);
            self.gpu.module_unload(raw);
            return Err(e);
        }
        {
            let mut ranges = self.ranges();
            for &(addr, size) in globals.values() {
                ranges.add_global(addr, size, module);
            }
        }
        let mut mods = self.modules();
        mods.functions.extend(table);
        mods.modules.insert(
            module,
            Module {
                raw,
                functions,
                globals,
            },
        );
        log::info!(
            "PD {}: module {module:#x} loaded on the GPU: {} kernels, {} globals",
            self.pd,
            img.kernels.len(),
            img.globals.len()
        );
        Ok((module, entries))
    }

    fn has_module(&self, module: u64) -> bool {
        self.modules().modules.contains_key(&module)
    }

    fn module_unload(&self, module: u64) -> Result<(), Status> {
        let m = {
            let mut mods = self.modules();
            let m = mods.modules.remove(&module).ok_or(Status::INVALID_HANDLE)?;
            for f in &m.functions {
                mods.functions.remove(f);
            }
            m
        };
        self.ranges().remove_module(module);
        let _ctx = self.enter()?;
        self.gpu.module_unload(m.raw);
        Ok(())
    }

    fn module_global(&self, module: u64, name: &str) -> Result<(u64, u64), Status> {
        let mods = self.modules();
        let m = mods.modules.get(&module).ok_or(Status::INVALID_HANDLE)?;
        m.globals.get(name).copied().ok_or(Status::NOT_FOUND)
    }

    fn func_get_attr(&self, func: u64, attr: u32) -> Result<i32, Status> {
        let f = self.function(func)?;
        let _ctx = self.enter()?;
        self.gpu.func_attr(
            f.raw,
            i32::try_from(attr).map_err(|_| Status::INVALID_VALUE)?,
        )
    }

    fn func_set_attr(&self, func: u64, attr: u32, value: i32) -> Result<(), Status> {
        let f = self.function(func)?;
        let _ctx = self.enter()?;
        self.gpu.set_func_attr(
            f.raw,
            i32::try_from(attr).map_err(|_| Status::INVALID_VALUE)?,
            value,
        )
    }

    fn check_launch(
        &self,
        func: u64,
        _block: [u32; 3],
        _shared_mem: u32,
        params: &[u8],
        attrs: &[LaunchAttr],
    ) -> Result<(), Status> {
        let f = self.function(func)?;
        if f.layout.is_none() {
            log::warn!(
                "PD {}: kernel {} cannot be launched: neither CUDA nor its image gives its parameter layout",
                self.pd,
                f.name
            );
            return Err(Status::NOT_SUPPORTED);
        }
        if params.len() != f.param_bytes as usize {
            log::warn!(
                "PD {}: kernel {} takes {} bytes of parameters, got {}",
                self.pd,
                f.name,
                f.param_bytes,
                params.len()
            );
            return Err(Status::INVALID_VALUE);
        }
        // These take their values in the first words of CUlaunchAttributeValue, as
        // LaunchAttr carries them; CUDA checks the values.
        super::check_launch_attrs(attrs, self.pd, "cuda", |a| {
            matches!(
                a.id,
                launch_attr::PROGRAMMATIC_STREAM_SERIALIZATION
                    | launch_attr::PRIORITY
                    | launch_attr::COOPERATIVE
                    | launch_attr::CLUSTER_DIMENSION
            )
        })
    }

    fn module_counts(&self) -> (u32, u32) {
        let m = self.modules();
        (m.modules.len() as u32, m.functions.len() as u32)
    }

    fn clear(&self) {
        // A fresh context: a sticky error leaves the old one unusable, and destroying it
        // frees every allocation and module at once.
        let mut ctx = self.ctx.write().unwrap_or_else(|p| p.into_inner());
        *self.modules() = Modules::default();
        let quota = {
            let mut r = self.ranges();
            r.drain_allocs();
            r.room()
        };
        *self.ranges() = Ranges::new(quota);
        self.destroy_context(*ctx);
        match self.gpu.ctx_create(self.dev) {
            Ok(c) => *ctx = c,
            Err(e) => {
                log::error!("PD {}: no new CUDA context after a reset: {e}", self.pd);
                *ctx = Raw::NULL;
            }
        }
    }

    fn successor(&self, quota: u64) -> Result<Arc<dyn Backend>, Status> {
        Ok(Arc::new(CudaDevice::new(
            self.pd,
            self.gpu.clone(),
            self.dev,
            quota.min(self.total),
            self.total,
            self.sm,
            self.shared.clone(),
        )?))
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        let ctx = *self.ctx.get_mut().unwrap_or_else(|p| p.into_inner());
        if ctx != Raw::NULL {
            self.destroy_context(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_the_vgpu_does_not_serve_are_masked() {
        let mut a = [1i32; ATTR_SLOTS];
        mask_attributes(&mut a);
        assert_eq!(a[attr::VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED], 0);
        assert_eq!(a[attr::MEMORY_POOLS_SUPPORTED], 0);
        assert_eq!(a[attr::MANAGED_MEMORY], 0);
        assert_eq!(a[attr::CAN_MAP_HOST_MEMORY], 0);
        assert_eq!(a[attr::UNIFIED_ADDRESSING], 1, "kept");
        assert_eq!(a[attr::COMPUTE_CAPABILITY_MAJOR], 1, "kept");
    }

    #[test]
    fn images_are_parsed_once_for_every_pd() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fatbin/tests/fixtures/kernels.fatbin"
        );
        let image = std::fs::read(path).unwrap();
        let cache = ImageCache::default();
        let a = cache.get(&image, &[1; 32], 80).unwrap();
        assert!(a
            .kernels
            .iter()
            .any(|(n, l, _)| n == "_Z6vecAddPKfS0_Pfi" && l.is_some()));
        let b = cache.get(&image, &[1; 32], 80).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "parsed once");
        assert_eq!(
            cache.get(b"not an image", &[2; 32], 80).err(),
            Some(Status::INVALID_IMAGE)
        );
        for i in 0..ImageCache::CAPACITY as u32 + 1 {
            let mut h = [3u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            cache.get(&image, &h, 80).unwrap();
        }
        assert!(
            lock(&cache.entries).0.len() <= ImageCache::CAPACITY,
            "bounded"
        );
        assert!(
            !lock(&cache.entries).0.contains_key(&[1; 32]),
            "the oldest went first"
        );
    }

    #[test]
    fn the_driver_s_layout_first_then_the_image_s() {
        let image = Some(vec![(0, 8), (8, 4)]);
        let driver = Some(vec![(0, 8), (8, 4), (16, 8)]);
        assert_eq!(choose_layout(driver.clone(), &image, 12), (driver, 24));
        assert_eq!(choose_layout(None, &image, 16), (image.clone(), 16));
        assert_eq!(choose_layout(None, &None, 12), (None, 12));
        assert_eq!(
            choose_layout(Some(vec![]), &image, 0),
            (Some(vec![]), 0),
            "no parameters"
        );
    }

    /// A 2-D copy with a side in guest memory stages at most the bounce buffer at a time,
    /// whatever its width, height and pitch (before, it staged each side's whole span: a
    /// copy across a 4 GiB window took 4 GiB of host memory), and covers every byte once.
    #[test]
    fn two_dimensional_copies_are_staged_in_bounded_pieces() {
        for (width, height, bounce) in [
            (10, 7, 32),
            (100, 3, 32),
            (32, 32, 32),
            (1, 1000, 64),
            (65, 2, 64),
        ] {
            let mut seen = vec![0u8; (width * height) as usize];
            for (col, w, r0, rows) in pieces(width, height, bounce) {
                assert!(
                    w * rows <= bounce.max(w),
                    "{width}x{height}: a piece of {w}x{rows}"
                );
                assert!(w <= bounce);
                for r in r0..r0 + rows {
                    for c in col..col + w {
                        seen[(r * width + c) as usize] += 1;
                    }
                }
            }
            assert!(
                seen.iter().all(|&n| n == 1),
                "{width}x{height}: every byte once"
            );
        }
        let big = pieces(4 << 30, 1, BOUNCE as u64).count();
        assert_eq!(
            big,
            (4 << 30) / BOUNCE,
            "a 4 GiB row in bounce-sized pieces"
        );
    }

    #[test]
    fn kernel_parameters_point_inside_the_buffer() {
        let mut buf = vec![0u8; 16];
        assert!(KernelParams::new(&mut buf, &[(0, 8), (8, 4), (12, 4)]).is_some());
        assert!(KernelParams::new(&mut buf, &[(0, 8), (12, 8)]).is_none());
        assert!(KernelParams::new(&mut buf, &[(u32::MAX, 2)]).is_none());
    }

    #[test]
    fn images_reach_the_driver_terminated() {
        let p = padded_image(b".version 7.0").unwrap();
        assert_eq!(&p[..12], b".version 7.0");
        assert!(p[12..].iter().all(|&b| b == 0) && p.len() == 28);
    }
}
