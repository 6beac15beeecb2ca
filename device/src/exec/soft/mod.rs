//! The soft executor: a software device for development and tests without a GPU.
//!
//! Device memory lives in host RAM with real bounds checks; copies, memsets, streams
//! (one worker thread each, so streams run concurrently and each in order), events with
//! timing, the NULL stream's legacy semantics and CUDA's latched/sticky errors are
//! implemented in full. Kernels run from their PTX on the `vgpu-ptx` virtual machine
//! ([`modules`]); a kernel whose image has no PTX runs through a CPU reference kernel
//! looked up by its mangled name ([`kernels`]) if there is one and reference kernels are
//! on, and any other launch fails with NOT_SUPPORTED and a log line that says why. The BLAS
//! commands are computed on the CPU ([`blas`]).

#[allow(unsafe_code, reason = "matrixmultiply's GEMM takes raw pointers")]
pub mod blas;
pub mod kernels;
mod memory;
pub mod modules;

pub use memory::Memory;

use super::context::StreamContext;
use super::{Backend, CallbackSink, Context, Executor, Limits, Op, Side2D};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use vgpu_os::lock;
use vgpu_proto::info::{executor, DeviceInfo, FunctionEntry, ATTR_SLOTS, DEVICE_INFO_VERSION};
use vgpu_proto::payload::LaunchAttr;
use vgpu_proto::regs::features;
use vgpu_proto::Status;

/// Properties of the soft device. The defaults model a data-centre GPU (an H100 SXM).
#[derive(Clone, Debug)]
pub struct SoftConfig {
    /// Device name.
    pub name: String,
    /// Device memory in bytes.
    pub memory: u64,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// Streaming multiprocessors.
    pub sm_count: u32,
    /// UUID.
    pub uuid: [u8; 16],
    /// PCI (domain, bus, device, function) reported to applications.
    pub pci: (u32, u8, u8, u8),
    /// Run a kernel whose image carries no PTX through its CPU reference implementation,
    /// if it has one (`kernels.rs`); when false, only PTX runs.
    pub reference_kernels: bool,
    /// Run PTX kernels through native code compiled from their per-lane instructions
    /// (`vgpu-ptx-jit`) where it can; when false, the interpreter runs every instruction.
    pub jit: bool,
    /// How long a kernel may run before its launch fails with LAUNCH_TIMEOUT (sticky), as
    /// a GPU's watchdog would end it: a guest cannot hold the host's CPUs forever.
    pub launch_timeout: std::time::Duration,
    /// Let queue workers poll (yielding their CPU between polls) while their PD's kernels
    /// run ([`Executor::poll_while_busy`]); off, they park and leave the CPUs to the
    /// kernels outright, and each command after a completion costs a doorbell's wake-up.
    pub poll_while_busy: bool,
}

impl Default for SoftConfig {
    fn default() -> Self {
        SoftConfig {
            name: "VGPU-STUB soft device (NVIDIA H100 80GB HBM3 model)".into(),
            memory: 80 * 1024 * 1024 * 1024,
            compute_capability: (9, 0),
            sm_count: 132,
            uuid: *b"vgpu-soft-device",
            pci: (0, 0x65, 0, 0),
            reference_kernels: true,
            jit: true,
            launch_timeout: std::time::Duration::from_secs(120),
            poll_while_busy: true,
        }
    }
}

/// `CUdevice_attribute` numbers used below.
pub(crate) mod attr {
    pub const MAX_THREADS_PER_BLOCK: usize = 1;
    pub const MAX_BLOCK_DIM_X: usize = 2;
    pub const MAX_BLOCK_DIM_Y: usize = 3;
    pub const MAX_BLOCK_DIM_Z: usize = 4;
    pub const MAX_GRID_DIM_X: usize = 5;
    pub const MAX_GRID_DIM_Y: usize = 6;
    pub const MAX_GRID_DIM_Z: usize = 7;
    pub const MAX_SHARED_MEMORY_PER_BLOCK: usize = 8;
    pub const TOTAL_CONSTANT_MEMORY: usize = 9;
    pub const WARP_SIZE: usize = 10;
    pub const MAX_PITCH: usize = 11;
    pub const MAX_REGISTERS_PER_BLOCK: usize = 12;
    pub const CLOCK_RATE: usize = 13;
    pub const TEXTURE_ALIGNMENT: usize = 14;
    pub const GPU_OVERLAP: usize = 15;
    pub const MULTIPROCESSOR_COUNT: usize = 16;
    pub const INTEGRATED: usize = 18;
    pub const CAN_MAP_HOST_MEMORY: usize = 19;
    pub const COMPUTE_MODE: usize = 20;
    pub const CONCURRENT_KERNELS: usize = 31;
    pub const ECC_ENABLED: usize = 32;
    pub const PCI_BUS_ID: usize = 33;
    pub const PCI_DEVICE_ID: usize = 34;
    pub const MEMORY_CLOCK_RATE: usize = 36;
    pub const GLOBAL_MEMORY_BUS_WIDTH: usize = 37;
    pub const L2_CACHE_SIZE: usize = 38;
    pub const MAX_THREADS_PER_MULTIPROCESSOR: usize = 39;
    pub const ASYNC_ENGINE_COUNT: usize = 40;
    pub const UNIFIED_ADDRESSING: usize = 41;
    pub const PCI_DOMAIN_ID: usize = 50;
    pub const COMPUTE_CAPABILITY_MAJOR: usize = 75;
    pub const COMPUTE_CAPABILITY_MINOR: usize = 76;
    pub const STREAM_PRIORITIES_SUPPORTED: usize = 78;
    pub const GLOBAL_L1_CACHE_SUPPORTED: usize = 79;
    pub const LOCAL_L1_CACHE_SUPPORTED: usize = 80;
    pub const MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: usize = 81;
    pub const MAX_REGISTERS_PER_MULTIPROCESSOR: usize = 82;
    pub const MANAGED_MEMORY: usize = 83;
    pub const MULTI_GPU_BOARD: usize = 84;
    pub const CONCURRENT_MANAGED_ACCESS: usize = 89;
    pub const COOPERATIVE_LAUNCH: usize = 95;
    pub const MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: usize = 97;
    pub const VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: usize = 102;
    pub const MAX_BLOCKS_PER_MULTIPROCESSOR: usize = 106;
    pub const MEMORY_POOLS_SUPPORTED: usize = 115;
    /// One past the highest attribute we fill.
    pub const COUNT: u32 = 140;
}

impl SoftConfig {
    /// The DeviceInfo this configuration reports.
    pub fn device_info(&self) -> DeviceInfo {
        let mut d: DeviceInfo = bytemuck::Zeroable::zeroed();
        d.version = DEVICE_INFO_VERSION;
        d.cuda_version = 12080;
        d.total_mem = self.memory;
        (d.cc_major, d.cc_minor) = self.compute_capability;
        (d.pci_domain, d.pci_bus, d.pci_device, d.pci_function) = self.pci;
        d.uuid = self.uuid;
        d.executor = executor::SOFT;
        d.attr_count = attr::COUNT;
        d.exec_features = features::INLINE_PAYLOAD
            | features::HOST_FUNC
            | features::BLAS
            | features::BLASLT
            | features::GRAPHS;
        DeviceInfo::set_str(&mut d.driver_version, "570.86.15");
        DeviceInfo::set_str(&mut d.name, &self.name);
        let mut a = [0i32; ATTR_SLOTS];
        let set = |a: &mut [i32; ATTR_SLOTS], i: usize, v: i64| {
            a[i] = i32::try_from(v).unwrap_or(i32::MAX)
        };
        use attr::*;
        for (i, v) in [
            (MAX_THREADS_PER_BLOCK, 1024),
            (MAX_BLOCK_DIM_X, 1024),
            (MAX_BLOCK_DIM_Y, 1024),
            (MAX_BLOCK_DIM_Z, 64),
            (MAX_GRID_DIM_X, i64::from(i32::MAX)),
            (MAX_GRID_DIM_Y, 65535),
            (MAX_GRID_DIM_Z, 65535),
            (MAX_SHARED_MEMORY_PER_BLOCK, 48 * 1024),
            (TOTAL_CONSTANT_MEMORY, 64 * 1024),
            (WARP_SIZE, 32),
            (MAX_PITCH, i64::from(i32::MAX)),
            (MAX_REGISTERS_PER_BLOCK, 65536),
            (CLOCK_RATE, 1_980_000),
            (TEXTURE_ALIGNMENT, 512),
            (GPU_OVERLAP, 1),
            (MULTIPROCESSOR_COUNT, i64::from(self.sm_count)),
            (INTEGRATED, 0),
            (CAN_MAP_HOST_MEMORY, 0),
            (COMPUTE_MODE, 0),
            (CONCURRENT_KERNELS, 1),
            (ECC_ENABLED, 1),
            (PCI_BUS_ID, i64::from(self.pci.1)),
            (PCI_DEVICE_ID, i64::from(self.pci.2)),
            (MEMORY_CLOCK_RATE, 2_619_000),
            (GLOBAL_MEMORY_BUS_WIDTH, 5120),
            (L2_CACHE_SIZE, 50 * 1024 * 1024),
            (MAX_THREADS_PER_MULTIPROCESSOR, 2048),
            (ASYNC_ENGINE_COUNT, 2),
            (UNIFIED_ADDRESSING, 1),
            (PCI_DOMAIN_ID, i64::from(self.pci.0)),
            (
                COMPUTE_CAPABILITY_MAJOR,
                i64::from(self.compute_capability.0),
            ),
            (
                COMPUTE_CAPABILITY_MINOR,
                i64::from(self.compute_capability.1),
            ),
            (STREAM_PRIORITIES_SUPPORTED, 1),
            (GLOBAL_L1_CACHE_SUPPORTED, 1),
            (LOCAL_L1_CACHE_SUPPORTED, 1),
            (MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, 228 * 1024),
            (MAX_REGISTERS_PER_MULTIPROCESSOR, 65536),
            (MANAGED_MEMORY, 0),
            (MULTI_GPU_BOARD, 0),
            (CONCURRENT_MANAGED_ACCESS, 0),
            (COOPERATIVE_LAUNCH, 1),
            (MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, 227 * 1024),
            (VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 0),
            (MAX_BLOCKS_PER_MULTIPROCESSOR, 32),
            (MEMORY_POOLS_SUPPORTED, 0),
        ] {
            set(&mut a, i, v);
        }
        d.attrs = a;
        d
    }
}

/// The soft executor.
pub struct SoftExecutor {
    config: SoftConfig,
    programs: Arc<modules::ProgramCache>,
    /// The device memory every context draws on.
    pool: Arc<memory::Pool>,
    /// Kernel time of every context.
    util: Arc<crate::exec::util::UtilMeter>,
}

impl SoftExecutor {
    /// A soft device with these properties.
    pub fn new(config: SoftConfig) -> Self {
        SoftExecutor {
            pool: memory::Pool::new(config.memory),
            config,
            programs: Arc::new(modules::ProgramCache::default()),
            util: Arc::default(),
        }
    }
}

impl Executor for SoftExecutor {
    fn device_info(&self) -> DeviceInfo {
        self.config.device_info()
    }

    fn utilization(&self) -> u32 {
        self.util.percent(std::time::Instant::now())
    }

    fn poll_while_busy(&self) -> bool {
        self.config.poll_while_busy
    }

    /// The soft device measures only its utilisation (no sensors).
    fn sensors(&self) -> vgpu_proto::info::MgmtInfo {
        let mut m: vgpu_proto::info::MgmtInfo = bytemuck::Zeroable::zeroed();
        m.gpu_util = self.utilization();
        m
    }

    fn prepare_module(&self, image: &[u8], sha256: &[u8; 32]) {
        let (major, minor) = self.config.compute_capability;
        self.programs.prepare(image, sha256, major * 10 + minor);
    }

    fn new_context(
        &self,
        pd: u32,
        cache_domain: u32,
        limits: Limits,
        callbacks: Arc<dyn CallbackSink>,
    ) -> Result<Box<dyn Context>, Status> {
        let backend = Arc::new(SoftDevice {
            pd,
            mem: Mutex::new(Memory::new(
                limits.mem_quota.min(self.config.memory),
                self.pool.clone(),
            )),
            modules: Mutex::new(modules::Modules::default()),
            limits: Mutex::new(default_limits()),
            launch_timeout: self.config.launch_timeout,
            pool: self.pool.clone(),
            sm: self.config.compute_capability.0 * 10 + self.config.compute_capability.1,
            reference_kernels: self.config.reference_kernels,
            jit: self.config.jit,
            programs: self.programs.clone(),
            cache_domain,
            blocks: Default::default(),
        });
        Ok(Box::new(StreamContext::new(
            pd,
            limits,
            backend,
            callbacks,
            self.util.clone(),
        )))
    }
}

/// CUlimit defaults of a data-centre GPU: stack, printf FIFO, malloc heap, sync depth,
/// pending launches.
fn default_limits() -> HashMap<u32, u64> {
    HashMap::from([(0, 1024), (1, 1 << 20), (2, 8 << 20), (3, 2), (4, 2048)])
}

/// One PD's device memory and modules on the soft device, and the data ops on them.
pub struct SoftDevice {
    pd: u32,
    mem: Mutex<Memory>,
    modules: Mutex<modules::Modules>,
    limits: Mutex<HashMap<u32, u64>>,
    /// How long one kernel may run.
    launch_timeout: std::time::Duration,
    pool: Arc<memory::Pool>,
    /// Compute capability as an sm number (90 for 9.0).
    sm: u32,
    reference_kernels: bool,
    /// [`SoftConfig::jit`].
    jit: bool,
    /// Checked PTX programs of every context, by image.
    programs: Arc<modules::ProgramCache>,
    /// The PD's module-cache domain: the contexts whose kernels' compiled code this one
    /// shares.
    cache_domain: u32,
    /// The register files of the PD's last launches, for its next ones.
    blocks: vgpu_ptx::exec::BlockPool,
}

impl SoftDevice {
    pub(super) fn memory(&self) -> MutexGuard<'_, Memory> {
        lock(&self.mem)
    }

    pub(super) fn modules(&self) -> MutexGuard<'_, modules::Modules> {
        lock(&self.modules)
    }
}

/// Launch attributes the soft executor honours (it runs launches one at a time, so
/// cooperative launches and programmatic serialisation need nothing more).
fn check_attrs(attrs: &[LaunchAttr], pd: u32) -> Result<(), Status> {
    use vgpu_proto::payload::launch_attr::*;
    super::check_launch_attrs(attrs, pd, "soft", |a| match a.id {
        COOPERATIVE | PROGRAMMATIC_STREAM_SERIALIZATION | PRIORITY => true,
        CLUSTER_DIMENSION => a.v0 <= 1 && a.v1 <= 1 && a.v2 <= 1,
        _ => false,
    })
}

impl Backend for SoftDevice {
    fn name(&self) -> &'static str {
        "soft"
    }

    fn execute(&self, op: Op, cancel: &AtomicBool) -> Result<(), Status> {
        execute(self, op, cancel)
    }

    fn alloc(&self, size: u64) -> Result<u64, Status> {
        self.memory().alloc(size)
    }

    fn free(&self, ptr: u64) -> Result<(), Status> {
        self.memory().free(ptr)
    }

    fn range_of(&self, ptr: u64) -> Option<(u64, u64)> {
        self.memory().range_of(ptr)
    }

    fn mem_info(&self) -> (u64, u64) {
        self.memory().info()
    }

    fn set_quota(&self, quota: u64) {
        self.memory().set_quota(quota)
    }

    fn mem_usage(&self) -> (u64, u32) {
        self.memory().usage()
    }

    fn get_limit(&self, limit: u32) -> Result<u64, Status> {
        lock(&self.limits)
            .get(&limit)
            .copied()
            .ok_or(Status::UNSUPPORTED_LIMIT)
    }

    fn set_limit(&self, limit: u32, value: u64) -> Result<(), Status> {
        match lock(&self.limits).get_mut(&limit) {
            Some(v) => {
                *v = value;
                Ok(())
            }
            None => Err(Status::UNSUPPORTED_LIMIT),
        }
    }

    fn module_load(
        &self,
        image: &[u8],
        sha256: &[u8; 32],
        next: &mut dyn FnMut(bool) -> u64,
        room: u64,
    ) -> Result<(u64, Vec<FunctionEntry>), Status> {
        let loader = modules::Loader {
            sm: self.sm,
            reference_kernels: self.reference_kernels,
            cache: &self.programs,
            domain: self.cache_domain,
        };
        modules::load(self, &loader, image, sha256, next, room)
    }

    fn has_module(&self, module: u64) -> bool {
        self.modules().has_module(module)
    }

    fn module_unload(&self, module: u64) -> Result<(), Status> {
        modules::unload(self, module)
    }

    fn module_global(&self, module: u64, name: &str) -> Result<(u64, u64), Status> {
        self.modules().global(module, name)
    }

    fn func_get_attr(&self, func: u64, attr: u32) -> Result<i32, Status> {
        let f = self
            .modules()
            .function(func)
            .ok_or(Status::INVALID_HANDLE)?;
        modules::get_attr(&f, attr)
    }

    fn func_set_attr(&self, func: u64, attr: u32, value: i32) -> Result<(), Status> {
        let f = self
            .modules()
            .function(func)
            .ok_or(Status::INVALID_HANDLE)?;
        modules::set_attr(&f, attr, value)
    }

    fn check_launch(
        &self,
        func: u64,
        block: [u32; 3],
        shared_mem: u32,
        params: &[u8],
        attrs: &[LaunchAttr],
    ) -> Result<(), Status> {
        let f = self
            .modules()
            .function(func)
            .ok_or(Status::INVALID_HANDLE)?;
        modules::check_launch(&f, block, shared_mem, params, self.pd)?;
        check_attrs(attrs, self.pd)
    }

    fn module_counts(&self) -> (u32, u32) {
        self.modules().counts()
    }

    fn clear(&self) {
        self.modules().clear();
        self.memory().clear();
        self.blocks.clear();
    }

    fn successor(&self, quota: u64) -> Result<Arc<dyn Backend>, Status> {
        Ok(Arc::new(SoftDevice {
            pd: self.pd,
            mem: Mutex::new(Memory::new(quota.min(self.pool.total()), self.pool.clone())),
            modules: Mutex::new(modules::Modules::default()),
            limits: Mutex::new(default_limits()),
            launch_timeout: self.launch_timeout,
            pool: self.pool.clone(),
            sm: self.sm,
            reference_kernels: self.reference_kernels,
            jit: self.jit,
            programs: self.programs.clone(),
            cache_domain: self.cache_domain,
            blocks: Default::default(),
        }))
    }
}

/// Executes one data op on the soft device.
fn execute(dev: &SoftDevice, op: Op, cancel: &AtomicBool) -> Result<(), Status> {
    match op {
        // One copy each way, straight between guest memory and the allocation.
        Op::CopyHtoD { dst, src } => match src {
            crate::exec::HostSource::Inline(v) => {
                dev.memory()
                    .slice_mut(dst, v.len() as u64)?
                    .copy_from_slice(&v);
                Ok(())
            }
            crate::exec::HostSource::Range(r) => r.read(0, dev.memory().slice_mut(dst, r.len())?),
        },
        Op::CopyDtoH { src, dst } => dst.write(0, dev.memory().slice(src, dst.len())?),
        Op::CopyDtoD { dst, src, len } => dev.memory().copy(dst, src, len),
        Op::Copy2D {
            src,
            src_pitch,
            dst,
            dst_pitch,
            width,
            height,
        } => {
            let w = usize::try_from(width).map_err(|_| Status::INVALID_VALUE)?;
            let mut row = vec![0u8; w];
            for r in 0..height {
                match &src {
                    Side2D::Device(a) => {
                        row.copy_from_slice(dev.memory().slice(a + r * src_pitch, width)?)
                    }
                    Side2D::Host(h) => h.read(r * src_pitch, &mut row)?,
                }
                match &dst {
                    Side2D::Device(a) => dev
                        .memory()
                        .slice_mut(a + r * dst_pitch, width)?
                        .copy_from_slice(&row),
                    Side2D::Host(h) => h.write(r * dst_pitch, &row)?,
                }
            }
            Ok(())
        }
        Op::Memset {
            dst,
            pitch,
            width,
            height,
            value,
            elem_size,
        } => {
            let es = u64::from(elem_size);
            let bytes = value.to_le_bytes();
            let row_len = width.checked_mul(es).ok_or(Status::INVALID_VALUE)?;
            let mut mem = dev.memory();
            for r in 0..height {
                let at = r
                    .checked_mul(pitch)
                    .and_then(|o| dst.checked_add(o))
                    .ok_or(Status::INVALID_VALUE)?;
                let row = mem.slice_mut(at, row_len)?;
                for chunk in row.chunks_exact_mut(elem_size as usize) {
                    chunk.copy_from_slice(&bytes[..elem_size as usize]);
                }
            }
            Ok(())
        }
        Op::Gemm(g) => blas::gemm(&DeviceView(dev), &g),
        Op::GemmBatched(g) => blas::gemm_batched(&DeviceView(dev), &g),
        Op::TrsmBatched(t) => blas::trsm_batched(&DeviceView(dev), &t),
        Op::LtMatmul(l) => blas::lt_matmul(&DeviceView(dev), &l),
        Op::Launch {
            func,
            grid,
            block,
            shared_mem,
            params,
            ..
        } => modules::launch(dev, cancel, func, grid, block, shared_mem, &params),
        Op::HostFunc { .. }
        | Op::GraphLaunch { .. }
        | Op::EventRecord { .. }
        | Op::WaitEvent { .. } => Err(Status::UNKNOWN),
    }
}

/// The context's device memory as the BLAS code reads and writes it.
struct DeviceView<'a>(&'a SoftDevice);

impl blas::DeviceMemory for DeviceView<'_> {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Status> {
        out.copy_from_slice(self.0.memory().slice(addr, out.len() as u64)?);
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), Status> {
        self.0
            .memory()
            .slice_mut(addr, data.len() as u64)?
            .copy_from_slice(data);
        Ok(())
    }
}
