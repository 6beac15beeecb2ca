//! The seam between the queue engine and execution: the **executor** of
//! `docs/vgpu-stub-spec.md` (a real GPU, or the CPU for tests).
//!
//! The engine decodes and validates commands, resolves windows into [`HostRange`]s and
//! handles PDs and queues. Everything that touches device memory or runs work goes through
//! an [`Executor`] (one per device) and its [`Context`]s (one per PD). Executors implement
//! the spec's stream semantics themselves (ordering, the NULL stream, latched and sticky
//! errors, §7.2 and §8.3), because a GPU executor would get them from CUDA streams. The
//! executors are [`soft`], on the CPU, and [`cuda`], on a real GPU.
//!
//! Waits never block the caller: a command that must wait (STREAM_SYNCHRONIZE, MEM_FREE,
//! ...) hands the executor a [`Ticket`], which the executor fires when the wait is over:
//! from its own threads, or at once when there is nothing to wait for (a bad handle, an
//! idle stream). A small copy or memset on an idle stream runs at once on the caller's
//! thread (the queue worker), ordered as if it had been queued.
//!
//! Both executors share the stream machinery ([`streams`]) and the [`Context`] built on it
//! ([`context::StreamContext`]); what differs between them is a [`Backend`]: a context's
//! device memory, modules and the data ops that run on them. Both meter GPU utilisation the
//! same way ([`util`]).

pub mod context;
pub mod cuda;
pub mod soft;
pub(crate) mod streams;
pub mod util;

use crate::guest::{guarded, DmaError, HostPiece, Snapshot};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use vgpu_proto::info::{DeviceInfo, FunctionEntry};
use vgpu_proto::payload::{GemmDesc, LaunchAttr, LtMatmulDesc, TrsmBatchedDesc};
use vgpu_proto::Status;

/// One grant of a window to the device, shared by every [`HostRange`] resolved in it
/// (spec §6.1). WINDOW_UNREGISTER revokes it: revocation waits for the accesses in
/// progress, and every later access (work queued on a stream, nodes of a graph) fails with
/// BAD_WINDOW, so the driver may reuse the pages as soon as WINDOW_UNREGISTER completes.
#[derive(Debug)]
pub struct WindowLease {
    live: RwLock<bool>,
}

impl WindowLease {
    /// A live grant.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(WindowLease {
            live: RwLock::new(true),
        })
    }

    /// Ends the grant once no access is in progress.
    pub(crate) fn revoke(&self) {
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = false;
    }

    /// Runs `access` while the grant cannot be revoked, or fails with BAD_WINDOW.
    fn access<T>(&self, access: impl FnOnce() -> Result<T, Status>) -> Result<T, Status> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        if !*live {
            log::warn!("DMA refused: the window was unregistered");
            return Err(Status::BAD_WINDOW);
        }
        access()
    }
}

/// A validated range of guest memory that a command reads or writes.
#[derive(Clone)]
pub struct HostRange {
    mem: Snapshot,
    iova: u64,
    len: u64,
    lease: Arc<WindowLease>,
}

impl HostRange {
    /// A range the engine has checked against the PD's window granted by `lease`.
    pub(crate) fn new(mem: Snapshot, iova: u64, len: u64, lease: Arc<WindowLease>) -> Self {
        HostRange {
            mem,
            iova,
            len,
            lease,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads `buf.len()` bytes at `offset` into the range.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Status> {
        self.bounds(offset, buf.len())?;
        self.lease
            .access(|| self.mem.read(self.iova + offset, buf).map_err(dma_status))
    }

    /// Writes `buf` at `offset` into the range.
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<(), Status> {
        self.bounds(offset, buf.len())?;
        self.lease
            .access(|| self.mem.write(self.iova + offset, buf).map_err(dma_status))
    }

    /// Runs `f` over the range as the pieces that are contiguous in this process (see
    /// [`Snapshot::host_pieces`]; writable ones if `write`), for an executor whose device
    /// reaches guest memory by address. The window cannot be revoked meanwhile, and the
    /// call fails if guest memory was taken away during it.
    pub fn with_host_pieces<T>(
        &self,
        write: bool,
        f: impl FnOnce(&[HostPiece]) -> Result<T, Status>,
    ) -> Result<T, Status> {
        self.lease.access(|| {
            let pieces = self
                .mem
                .host_pieces(self.iova, self.len, write)
                .map_err(dma_status)?;
            guarded(self.iova, self.len, || Ok(f(&pieces))).map_err(dma_status)?
        })
    }

    fn bounds(&self, offset: u64, n: usize) -> Result<(), Status> {
        match offset.checked_add(n as u64) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Status::OUT_OF_BOUNDS),
        }
    }
}

fn dma_status(e: DmaError) -> Status {
    log::warn!("DMA access failed: {e}");
    Status::OUT_OF_BOUNDS
}

/// Where the bytes of a host-to-device copy come from.
#[derive(Clone)]
pub enum HostSource {
    /// A window range.
    Range(HostRange),
    /// Inline payload bytes, already copied out of the ring.
    Inline(Vec<u8>),
}

impl HostSource {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            HostSource::Range(r) => r.len(),
            HostSource::Inline(v) => v.len() as u64,
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One side of a 2-D copy.
#[derive(Clone)]
pub enum Side2D {
    /// Device memory at an address.
    Device(u64),
    /// A window range starting at the first byte the copy touches.
    Host(HostRange),
}

/// Stream-ordered work.
#[derive(Clone)]
pub enum Op {
    /// MEMCPY_HTOD.
    CopyHtoD { dst: u64, src: HostSource },
    /// MEMCPY_DTOH.
    CopyDtoH { src: u64, dst: HostRange },
    /// MEMCPY_DTOD.
    CopyDtoD { dst: u64, src: u64, len: u64 },
    /// MEMCPY_2D.
    Copy2D {
        src: Side2D,
        src_pitch: u64,
        dst: Side2D,
        dst_pitch: u64,
        width: u64,
        height: u64,
    },
    /// MEMSET and MEMSET_2D (`pitch` = row length for 1-D).
    Memset {
        dst: u64,
        pitch: u64,
        width: u64,
        height: u64,
        value: u32,
        elem_size: u32,
    },
    /// LAUNCH.
    Launch {
        func: u64,
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem: u32,
        attrs: Vec<LaunchAttr>,
        params: Vec<u8>,
    },
    /// EVENT_RECORD.
    EventRecord { event: u64 },
    /// STREAM_WAIT_EVENT.
    WaitEvent { event: u64 },
    /// BLAS_GEMM.
    Gemm(GemmDesc),
    /// BLAS_GEMM_BATCHED.
    GemmBatched(GemmDesc),
    /// BLAS_TRSM_BATCHED.
    TrsmBatched(TrsmBatchedDesc),
    /// BLASLT_MATMUL.
    LtMatmul(Box<LtMatmulDesc>),
    /// GRAPH_LAUNCH.
    GraphLaunch { exec: u64 },
    /// HOST_FUNC: ask the client to run a callback and hold the stream until it is done.
    HostFunc { cookie: u64 },
}

/// The outcome of a command that completes later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Status.
    pub status: Status,
    /// First result.
    pub result0: u64,
    /// Second result.
    pub result1: u64,
}

impl Outcome {
    /// A bare status.
    pub fn status(status: Status) -> Self {
        Outcome {
            status,
            result0: 0,
            result1: 0,
        }
    }
}

/// Completes a waiting command once; dropping it unfired completes it with UNKNOWN, so no
/// command is ever left without a completion.
pub struct Ticket(Option<Box<dyn FnOnce(Outcome) + Send>>);

impl Ticket {
    /// A ticket that runs `f` when fired.
    pub fn new(f: impl FnOnce(Outcome) + Send + 'static) -> Self {
        Ticket(Some(Box::new(f)))
    }

    /// Drops the ticket without completing anything (its command is answered another way).
    pub fn disarm(mut self) {
        self.0 = None;
    }

    /// Completes the command.
    pub fn fire(mut self, o: Outcome) {
        if let Some(f) = self.0.take() {
            f(o)
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            log::error!(
                "a waiting command was dropped without completing; completing it with UNKNOWN"
            );
            f(Outcome::status(Status::UNKNOWN))
        }
    }
}

/// Work a context refused to queue, with the caller's ticket.
pub struct Refused {
    /// Why.
    pub status: Status,
    /// The ticket that was passed in, not fired.
    pub notify: Option<Ticket>,
}

impl Refused {
    /// A refusal carrying back `notify`.
    pub fn new(status: Status, notify: Option<Ticket>) -> Self {
        Refused { status, notify }
    }
}

/// Receives host-function callback requests from executor threads.
pub trait CallbackSink: Send + Sync {
    /// The stream reached HOST_FUNC with `cookie`.
    fn host_func(&self, cookie: u64);
}

/// Limits of one context (from PD_CREATE / PD_SET_QUOTA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Device-memory quota in bytes.
    pub mem_quota: u64,
    /// Most live GPU objects.
    pub max_objects: u32,
}

/// Live objects of a context (the executor's part of PD_STATS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bytes allocated.
    pub mem_bytes: u64,
    /// Allocations.
    pub allocations: u32,
    /// Modules.
    pub modules: u32,
    /// Functions of loaded modules.
    pub functions: u32,
    /// Streams (not counting the NULL stream).
    pub streams: u32,
    /// Events.
    pub events: u32,
    /// Graphs.
    pub graphs: u32,
    /// Executable graphs.
    pub graph_execs: u32,
    /// BLAS handles.
    pub blas_handles: u32,
    /// Commands accepted and not finished.
    pub pending: u32,
    /// GPU utilisation by this context's kernels, percent ([`util`]).
    pub gpu_util: u32,
}

/// One context's device resources and the data ops on them: what an executor provides
/// under the shared streams, events, graphs and host functions of
/// [`context::StreamContext`]. Handles and addresses are the executor's own; every one a
/// method is given comes from the guest and must be checked.
pub trait Backend: Send + Sync {
    /// The executor's name, for log lines ("soft", "cuda").
    fn name(&self) -> &'static str;
    /// Runs a data op (a copy, memset, launch or BLAS op) to completion on the calling
    /// stream worker. `cancel` is raised when the context is torn down: long work should
    /// stop at its next check.
    fn execute(&self, op: Op, cancel: &AtomicBool) -> Result<(), Status>;
    /// MEM_ALLOC within the quota.
    fn alloc(&self, size: u64) -> Result<u64, Status>;
    /// MEM_FREE of an allocation's base address.
    fn free(&self, ptr: u64) -> Result<(), Status>;
    /// The allocation holding `ptr`: (base, size).
    fn range_of(&self, ptr: u64) -> Option<(u64, u64)>;
    /// (free, total) in the PD's view.
    fn mem_info(&self) -> (u64, u64);
    /// A new device-memory quota.
    fn set_quota(&self, quota: u64);
    /// (bytes, allocations) in use.
    fn mem_usage(&self) -> (u64, u32);
    /// CTX_GET_LIMIT.
    fn get_limit(&self, limit: u32) -> Result<u64, Status>;
    /// CTX_SET_LIMIT.
    fn set_limit(&self, limit: u32, value: u64) -> Result<(), Status>;
    /// MODULE_LOAD: `next` hands out handles (`true`: the module's, `false`: a
    /// function's); at most `room` objects may be made.
    fn module_load(
        &self,
        image: &[u8],
        sha256: &[u8; 32],
        next: &mut dyn FnMut(bool) -> u64,
        room: u64,
    ) -> Result<(u64, Vec<FunctionEntry>), Status>;
    /// True when `module` is loaded.
    fn has_module(&self, module: u64) -> bool;
    /// MODULE_UNLOAD, once no work uses it.
    fn module_unload(&self, module: u64) -> Result<(), Status>;
    /// MODULE_GET_GLOBAL: (address, size).
    fn module_global(&self, module: u64, name: &str) -> Result<(u64, u64), Status>;
    /// FUNC_GET_ATTRIBUTE.
    fn func_get_attr(&self, func: u64, attr: u32) -> Result<i32, Status>;
    /// FUNC_SET_ATTRIBUTE.
    fn func_set_attr(&self, func: u64, attr: u32, value: i32) -> Result<(), Status>;
    /// Refuses, before it is queued, a launch that cannot run.
    fn check_launch(
        &self,
        func: u64,
        block: [u32; 3],
        shared_mem: u32,
        params: &[u8],
        attrs: &[LaunchAttr],
    ) -> Result<(), Status>;
    /// (modules, functions) loaded.
    fn module_counts(&self) -> (u32, u32);
    /// Frees every module and allocation (CTX_RESET, with no work running).
    fn clear(&self);
    /// A fresh, empty backend for the same PD with quota `quota`: what a reset moves to
    /// while a worker still runs on this one.
    fn successor(&self, quota: u64) -> Result<Arc<dyn Backend>, Status>;
}

/// NOT_SUPPORTED, with a log line naming the `executor`, for the first launch attribute
/// that `accept` refuses.
pub(crate) fn check_launch_attrs(
    attrs: &[LaunchAttr],
    pd: u32,
    executor: &str,
    accept: impl Fn(&LaunchAttr) -> bool,
) -> Result<(), Status> {
    match attrs.iter().find(|a| !accept(a)) {
        None => Ok(()),
        Some(a) => {
            log::warn!(
                "PD {pd}: launch attribute {} ({}, {}, {}) is not supported by the {executor} executor",
                a.id,
                a.v0,
                a.v1,
                a.v2
            );
            Err(Status::NOT_SUPPORTED)
        }
    }
}

/// A device: creates one context per PD.
pub trait Executor: Send + Sync {
    /// What IDENTIFY reports.
    fn device_info(&self) -> DeviceInfo;
    /// Does the slow part of a MODULE_LOAD of `image` (SHA-256 `sha256`, checked by the
    /// engine) before the PD's context is locked for it: parsing and checking a module can
    /// take tens of milliseconds, during which the PD's other commands need not wait. What
    /// it finds wrong, the load itself reports. The default does nothing.
    fn prepare_module(&self, _image: &[u8], _sha256: &[u8; 32]) {}
    /// The sensors MGMT_QUERY reports (utilisation, temperature, power, clocks); the
    /// engine fills in memory and processes. The default: all unknown (0).
    fn sensors(&self) -> vgpu_proto::info::MgmtInfo {
        bytemuck::Zeroable::zeroed()
    }
    /// GPU utilisation by every context's kernels, percent ([`util`]).
    fn utilization(&self) -> u32;
    /// True when a queue worker may keep polling (yielding its CPU between polls) while
    /// its PD's work runs, so that the client's next command after a completion finds it
    /// awake (a parked worker is woken by a doorbell, which through vfio-user is a message
    /// to the device and back). Right when kernels run elsewhere (a GPU), and on the soft
    /// device too, whose kernels share the CPUs with the worker: a worker that yields
    /// between polls took no measurable time from them.
    fn poll_while_busy(&self) -> bool {
        true
    }
    /// A new, empty context for PD `pd` of module-cache domain `cache_domain` (PD_CREATE):
    /// what an executor keeps of one PD's modules for others (the soft device's compiled
    /// kernels) it shares only within that domain.
    fn new_context(
        &self,
        pd: u32,
        cache_domain: u32,
        limits: Limits,
        callbacks: std::sync::Arc<dyn CallbackSink>,
    ) -> Result<Box<dyn Context>, Status>;
}

/// One PD's GPU state. Methods that return a value complete at once; methods that take a
/// [`Ticket`] complete it when their wait is over.
pub trait Context: Send {
    /// MEM_ALLOC.
    fn mem_alloc(&mut self, size: u64) -> Result<u64, Status>;
    /// MEM_FREE: after all previously submitted work.
    fn mem_free(&mut self, ptr: u64, done: Ticket);
    /// MEM_GET_RANGE.
    fn mem_range(&self, ptr: u64) -> Result<(u64, u64), Status>;
    /// MEM_GET_INFO: (free, total) in the PD's view.
    fn mem_info(&self) -> (u64, u64);
    /// PD_SET_QUOTA.
    fn set_limits(&mut self, limits: Limits);
    /// CTX_GET_LIMIT.
    fn get_limit(&self, limit: u32) -> Result<u64, Status>;
    /// CTX_SET_LIMIT.
    fn set_limit(&mut self, limit: u32, value: u64) -> Result<(), Status>;
    /// MODULE_LOAD of `image`, whose SHA-256 (`sha256`) the engine has checked: the module
    /// handle and its functions (handles filled in).
    fn module_load(
        &mut self,
        image: &[u8],
        sha256: &[u8; 32],
    ) -> Result<(u64, Vec<FunctionEntry>), Status>;
    /// MODULE_UNLOAD.
    fn module_unload(&mut self, module: u64, done: Ticket);
    /// MODULE_GET_GLOBAL: (address, size).
    fn module_global(&self, module: u64, name: &str) -> Result<(u64, u64), Status>;
    /// FUNC_GET_ATTRIBUTE.
    fn func_get_attr(&self, func: u64, attr: u32) -> Result<i32, Status>;
    /// FUNC_SET_ATTRIBUTE.
    fn func_set_attr(&mut self, func: u64, attr: u32, value: i32) -> Result<(), Status>;
    /// STREAM_CREATE.
    fn stream_create(&mut self, flags: u32, priority: i32) -> Result<u64, Status>;
    /// STREAM_DESTROY.
    fn stream_destroy(&mut self, stream: u64) -> Result<(), Status>;
    /// STREAM_SYNCHRONIZE.
    fn stream_sync(&mut self, stream: u64, done: Ticket);
    /// STREAM_QUERY.
    fn stream_query(&mut self, stream: u64) -> Status;
    /// STREAM_BEGIN_CAPTURE.
    fn begin_capture(&mut self, stream: u64, mode: u32) -> Result<(), Status>;
    /// STREAM_END_CAPTURE: the graph handle.
    fn end_capture(&mut self, stream: u64) -> Result<u64, Status>;
    /// Stream-ordered work; `notify` (FLAG_NOTIFY) completes when the op has run, with its
    /// own status. A refusal (before anything was queued) hands the ticket back unfired.
    fn submit(&mut self, stream: u64, op: Op, notify: Option<Ticket>) -> Result<(), Refused>;
    /// HOST_FUNC_DONE.
    fn host_func_done(&mut self, cookie: u64);
    /// EVENT_CREATE.
    fn event_create(&mut self, flags: u32) -> Result<u64, Status>;
    /// EVENT_DESTROY.
    fn event_destroy(&mut self, event: u64) -> Result<(), Status>;
    /// EVENT_SYNCHRONIZE.
    fn event_sync(&mut self, event: u64, done: Ticket);
    /// EVENT_QUERY.
    fn event_query(&self, event: u64) -> Status;
    /// EVENT_ELAPSED in milliseconds.
    fn event_elapsed(&self, start: u64, end: u64) -> Result<f32, Status>;
    /// GRAPH_INSTANTIATE.
    fn graph_instantiate(&mut self, graph: u64, flags: u64) -> Result<u64, Status>;
    /// GRAPH_EXEC_UPDATE: the `CUgraphExecUpdateResult`.
    fn graph_exec_update(&mut self, exec: u64, graph: u64) -> Result<u64, Status>;
    /// GRAPH_DESTROY.
    fn graph_destroy(&mut self, graph: u64) -> Result<(), Status>;
    /// GRAPH_EXEC_DESTROY.
    fn graph_exec_destroy(&mut self, exec: u64) -> Result<(), Status>;
    /// BLAS_CREATE.
    fn blas_create(&mut self) -> Result<u64, Status>;
    /// BLAS_DESTROY.
    fn blas_destroy(&mut self, handle: u64) -> Result<(), Status>;
    /// CTX_SYNCHRONIZE.
    fn synchronize(&mut self, done: Ticket);
    /// CTX_RESET: wait for (or cancel) all work, destroy every object, clear errors.
    fn reset(&mut self);
    /// The PD's sticky error, if any (§8.3).
    fn sticky_error(&self) -> Option<Status>;
    /// True while work submitted to the context's streams is queued or running, or when
    /// the last of it finished within `recent`.
    fn active_within(&self, recent: std::time::Duration) -> bool;
    /// Live object counts.
    fn counts(&self) -> Counts;
}
