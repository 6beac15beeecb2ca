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
mod streams;

pub use memory::Memory;

use super::{CallbackSink, Context, Counts, Executor, Limits, Op, Outcome, Refused, Ticket};
use std::collections::HashSet;
use std::sync::Arc;
use streams::{Handles, Kind, Shared, StreamSet};
use vgpu_proto::info::{executor, DeviceInfo, FunctionEntry, ATTR_SLOTS, DEVICE_INFO_VERSION};
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
    /// How long a kernel may run before its launch fails with LAUNCH_TIMEOUT (sticky), as
    /// a GPU's watchdog would end it: a guest cannot hold the host's CPUs forever.
    pub launch_timeout: std::time::Duration,
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
            launch_timeout: std::time::Duration::from_secs(120),
        }
    }
}

/// `CUdevice_attribute` numbers used below.
mod attr {
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
}

impl SoftExecutor {
    /// A soft device with these properties.
    pub fn new(config: SoftConfig) -> Self {
        SoftExecutor {
            pool: memory::Pool::new(config.memory),
            config,
            programs: Arc::new(modules::ProgramCache::default()),
        }
    }
}

impl Executor for SoftExecutor {
    fn device_info(&self) -> DeviceInfo {
        self.config.device_info()
    }

    fn prepare_module(&self, image: &[u8], sha256: &[u8; 32]) {
        let (major, minor) = self.config.compute_capability;
        self.programs.prepare(image, sha256, major * 10 + minor);
    }

    fn new_context(
        &self,
        pd: u32,
        limits: Limits,
        callbacks: Arc<dyn CallbackSink>,
    ) -> Result<Box<dyn Context>, Status> {
        let quota = limits.mem_quota.min(self.config.memory);
        let shared = Arc::new(Shared::new(
            quota,
            self.pool.clone(),
            callbacks,
            self.config.launch_timeout,
        ));
        Ok(Box::new(SoftContext {
            pd,
            limits,
            streams: StreamSet::new(shared.clone(), pd),
            shared,
            handles: Handles::default(),
            blas: HashSet::new(),
            sm: self.config.compute_capability.0 * 10 + self.config.compute_capability.1,
            reference_kernels: self.config.reference_kernels,
            programs: self.programs.clone(),
        }))
    }
}

/// One PD's state on the soft executor.
pub struct SoftContext {
    pd: u32,
    limits: Limits,
    shared: Arc<Shared>,
    streams: StreamSet,
    handles: Handles,
    blas: HashSet<u64>,
    /// Compute capability as an sm number (90 for 9.0).
    sm: u32,
    reference_kernels: bool,
    /// Checked PTX programs of every context, by image.
    programs: Arc<modules::ProgramCache>,
}

/// Launch attributes the soft executor honours (it runs launches one at a time, so
/// cooperative launches and programmatic serialisation need nothing more).
fn check_attrs(attrs: &[vgpu_proto::payload::LaunchAttr], pd: u32) -> Result<(), Status> {
    use vgpu_proto::payload::launch_attr::*;
    for a in attrs {
        let ok = match a.id {
            COOPERATIVE | PROGRAMMATIC_STREAM_SERIALIZATION | PRIORITY => true,
            CLUSTER_DIMENSION => a.v0 <= 1 && a.v1 <= 1 && a.v2 <= 1,
            _ => false,
        };
        if !ok {
            log::warn!(
                "PD {pd}: launch attribute {} ({}, {}, {}) is not supported by the soft executor",
                a.id,
                a.v0,
                a.v1,
                a.v2
            );
            return Err(Status::NOT_SUPPORTED);
        }
    }
    Ok(())
}

impl SoftContext {
    fn objects(&self) -> u64 {
        let c = self.counts();
        u64::from(c.allocations)
            + u64::from(c.modules)
            + u64::from(c.functions)
            + u64::from(c.streams)
            + u64::from(c.events)
            + u64::from(c.graphs)
            + u64::from(c.graph_execs)
            + u64::from(c.blas_handles)
    }

    fn admit_object(&self) -> Result<(), Status> {
        if self.limits.max_objects != 0 && self.objects() >= u64::from(self.limits.max_objects) {
            log::warn!(
                "PD {}: object limit of {} reached",
                self.pd,
                self.limits.max_objects
            );
            return Err(Status::OUT_OF_MEMORY);
        }
        Ok(())
    }

    fn not_supported<T>(&self, what: &str) -> Result<T, Status> {
        log::warn!(
            "PD {}: {what} is not supported by the soft executor",
            self.pd
        );
        Err(Status::NOT_SUPPORTED)
    }
}

impl Context for SoftContext {
    fn mem_alloc(&mut self, size: u64) -> Result<u64, Status> {
        self.admit_object()?;
        self.shared.memory().alloc(size)
    }

    fn mem_free(&mut self, ptr: u64, done: Ticket) {
        let shared = self.shared.clone();
        self.streams.after_all(Ticket::new(move |_| {
            done.fire(Outcome::status(
                shared.memory().free(ptr).err().unwrap_or(Status::SUCCESS),
            ))
        }));
    }

    fn mem_range(&self, ptr: u64) -> Result<(u64, u64), Status> {
        self.shared.memory().range_of(ptr).ok_or(Status::NOT_FOUND)
    }

    fn mem_info(&self) -> (u64, u64) {
        self.shared.memory().info()
    }

    fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.shared.memory().set_quota(limits.mem_quota);
    }

    fn get_limit(&self, limit: u32) -> Result<u64, Status> {
        self.shared.limit(limit).ok_or(Status::UNSUPPORTED_LIMIT)
    }

    fn set_limit(&mut self, limit: u32, value: u64) -> Result<(), Status> {
        self.shared.set_limit(limit, value)
    }

    fn module_load(
        &mut self,
        image: &[u8],
        sha256: &[u8; 32],
    ) -> Result<(u64, Vec<FunctionEntry>), Status> {
        let room = if self.limits.max_objects == 0 {
            u64::MAX
        } else {
            u64::from(self.limits.max_objects).saturating_sub(self.objects())
        };
        let handles = &mut self.handles;
        let mut next =
            |module: bool| handles.next(if module { Kind::Module } else { Kind::Function });
        let loader = modules::Loader {
            sm: self.sm,
            reference_kernels: self.reference_kernels,
            cache: &self.programs,
        };
        modules::load(&self.shared, &loader, image, sha256, &mut next, room)
    }

    fn module_unload(&mut self, module: u64, done: Ticket) {
        if !self.shared.modules().has_module(module) {
            return done.fire(Outcome::status(Status::INVALID_HANDLE));
        }
        let shared = self.shared.clone();
        self.streams.after_all(Ticket::new(move |_| {
            done.fire(Outcome::status(
                modules::unload(&shared, module)
                    .err()
                    .unwrap_or(Status::SUCCESS),
            ))
        }));
    }

    fn module_global(&self, module: u64, name: &str) -> Result<(u64, u64), Status> {
        self.shared.modules().global(module, name)
    }

    fn func_get_attr(&self, func: u64, attr: u32) -> Result<i32, Status> {
        let f = self
            .shared
            .modules()
            .function(func)
            .ok_or(Status::INVALID_HANDLE)?;
        modules::get_attr(&f, attr)
    }

    fn func_set_attr(&mut self, func: u64, attr: u32, value: i32) -> Result<(), Status> {
        let f = self
            .shared
            .modules()
            .function(func)
            .ok_or(Status::INVALID_HANDLE)?;
        modules::set_attr(&f, attr, value)
    }

    fn stream_create(&mut self, flags: u32, _priority: i32) -> Result<u64, Status> {
        self.admit_object()?;
        let h = self.handles.next(Kind::Stream);
        self.streams
            .create(h, flags & vgpu_proto::cmd::stream_flags::NON_BLOCKING == 0)?;
        Ok(h)
    }

    fn stream_destroy(&mut self, stream: u64) -> Result<(), Status> {
        if stream == 0 {
            return Err(Status::INVALID_HANDLE);
        }
        self.streams.destroy(stream)
    }

    fn stream_sync(&mut self, stream: u64, done: Ticket) {
        self.streams.sync(stream, done)
    }

    fn stream_query(&mut self, stream: u64) -> Status {
        self.streams.query(stream)
    }

    fn begin_capture(&mut self, stream: u64, _mode: u32) -> Result<(), Status> {
        self.streams.begin_capture(stream)
    }

    fn end_capture(&mut self, stream: u64) -> Result<u64, Status> {
        if !self.streams.is_capturing(stream) {
            return Err(Status::STREAM_CAPTURE_UNMATCHED);
        }
        self.admit_object()?;
        let graph = self.handles.next(Kind::Graph);
        self.streams.end_capture(stream, graph)
    }

    fn submit(&mut self, stream: u64, op: Op, notify: Option<Ticket>) -> Result<(), Refused> {
        let refused = match &op {
            Op::Launch {
                func,
                block,
                shared_mem,
                params,
                attrs,
                ..
            } => match self.shared.modules().function(*func) {
                None => Some(Status::INVALID_HANDLE),
                Some(f) => modules::check_launch(&f, *block, *shared_mem, params, self.pd)
                    .and_then(|_| check_attrs(attrs, self.pd))
                    .err(),
            },
            Op::Gemm(g) | Op::GemmBatched(g) => {
                (!self.blas.contains(&g.handle)).then_some(Status::INVALID_HANDLE)
            }
            Op::TrsmBatched(t) => {
                (!self.blas.contains(&t.handle)).then_some(Status::INVALID_HANDLE)
            }
            Op::LtMatmul(l) => (!self.blas.contains(&l.handle)).then_some(Status::INVALID_HANDLE),
            _ => None,
        };
        if let Some(s) = refused {
            return Err(Refused::new(s, notify));
        }
        self.streams.submit(stream, op, notify)
    }

    fn host_func_done(&mut self, cookie: u64) {
        self.shared.host_func_done(cookie);
    }

    fn event_create(&mut self, flags: u32) -> Result<u64, Status> {
        if flags & vgpu_proto::cmd::event_flags::INTERPROCESS != 0 {
            return self.not_supported("interprocess events");
        }
        self.admit_object()?;
        let h = self.handles.next(Kind::Event);
        self.streams.event_create(h, flags);
        Ok(h)
    }

    fn event_destroy(&mut self, event: u64) -> Result<(), Status> {
        self.streams.event_destroy(event)
    }

    fn event_sync(&mut self, event: u64, done: Ticket) {
        self.streams.event_sync(event, done)
    }

    fn event_query(&self, event: u64) -> Status {
        self.streams.event_query(event)
    }

    fn event_elapsed(&self, start: u64, end: u64) -> Result<f32, Status> {
        self.streams.event_elapsed(start, end)
    }

    fn graph_instantiate(&mut self, graph: u64, _flags: u64) -> Result<u64, Status> {
        self.admit_object()?;
        let exec = self.handles.next(Kind::GraphExec);
        self.streams.graph_instantiate(graph, exec)
    }

    fn graph_exec_update(&mut self, exec: u64, graph: u64) -> Result<u64, Status> {
        self.streams.graph_exec_update(exec, graph)
    }

    fn graph_destroy(&mut self, graph: u64) -> Result<(), Status> {
        self.streams.graph_destroy(graph)
    }

    fn graph_exec_destroy(&mut self, exec: u64) -> Result<(), Status> {
        self.streams.graph_exec_destroy(exec)
    }

    fn blas_create(&mut self) -> Result<u64, Status> {
        self.admit_object()?;
        let h = self.handles.next(Kind::Blas);
        self.blas.insert(h);
        Ok(h)
    }

    fn blas_destroy(&mut self, handle: u64) -> Result<(), Status> {
        if self.blas.remove(&handle) {
            Ok(())
        } else {
            Err(Status::INVALID_HANDLE)
        }
    }

    fn synchronize(&mut self, done: Ticket) {
        self.streams.synchronize(done)
    }

    fn reset(&mut self) {
        self.blas.clear();
        if self.streams.reset() {
            self.shared.modules().clear();
            self.shared.memory().clear();
            self.shared.clear_errors();
            return;
        }
        // A worker is still busy with the old state (and holds it, its memory included,
        // until it ends): the context moves on with new state, without waiting for it.
        let quota = self.limits.mem_quota.min(self.shared.pool_total());
        self.shared = Arc::new(self.shared.successor(quota));
        self.streams = StreamSet::new(self.shared.clone(), self.pd);
    }

    fn sticky_error(&self) -> Option<Status> {
        self.shared.sticky()
    }

    fn counts(&self) -> Counts {
        let (mem_bytes, allocations) = self.shared.memory().usage();
        let (modules, functions) = self.shared.modules().counts();
        let (graphs, graph_execs) = self.streams.graph_counts();
        Counts {
            mem_bytes,
            allocations,
            streams: self.streams.stream_count(),
            events: self.streams.event_count(),
            blas_handles: self.blas.len() as u32,
            modules,
            functions,
            graphs,
            graph_execs,
            pending: self.shared.pending(),
        }
    }
}

impl Drop for SoftContext {
    fn drop(&mut self) {
        self.streams.stop();
    }
}
