//! The [`Context`] every executor serves: one PD's streams, events, graphs, host functions
//! and BLAS handles on the shared stream machinery ([`super::streams`]), with its device
//! memory, modules and data ops on the executor's [`Backend`].

use super::streams::{Handles, Kind, Shared, StreamSet};
use super::util::UtilMeter;
use super::{Backend, CallbackSink, Context, Counts, Limits, Op, Outcome, Refused, Ticket};
use std::collections::HashSet;
use std::sync::Arc;
use vgpu_proto::info::FunctionEntry;
use vgpu_proto::Status;

/// One PD's state.
pub struct StreamContext {
    pd: u32,
    limits: Limits,
    backend: Arc<dyn Backend>,
    shared: Arc<Shared>,
    streams: StreamSet,
    handles: Handles,
    blas: HashSet<u64>,
}

impl StreamContext {
    /// A context of PD `pd` on `backend`.
    pub fn new(
        pd: u32,
        limits: Limits,
        backend: Arc<dyn Backend>,
        callbacks: Arc<dyn CallbackSink>,
        device_util: Arc<UtilMeter>,
    ) -> Self {
        let shared = Arc::new(Shared::new(backend.clone(), callbacks, device_util));
        StreamContext {
            pd,
            limits,
            backend,
            streams: StreamSet::new(shared.clone(), pd),
            shared,
            handles: Handles::default(),
            blas: HashSet::new(),
        }
    }

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
            "PD {}: {what} is not supported by the {} executor",
            self.pd,
            self.backend.name()
        );
        Err(Status::NOT_SUPPORTED)
    }
}

impl Context for StreamContext {
    fn mem_alloc(&mut self, size: u64) -> Result<u64, Status> {
        self.admit_object()?;
        self.backend.alloc(size)
    }

    fn mem_free(&mut self, ptr: u64, done: Ticket) {
        let backend = self.backend.clone();
        self.streams.after_all(Ticket::new(move |_| {
            done.fire(Outcome::status(
                backend.free(ptr).err().unwrap_or(Status::SUCCESS),
            ))
        }));
    }

    fn mem_range(&self, ptr: u64) -> Result<(u64, u64), Status> {
        self.backend.range_of(ptr).ok_or(Status::NOT_FOUND)
    }

    fn mem_info(&self) -> (u64, u64) {
        self.backend.mem_info()
    }

    fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.backend.set_quota(limits.mem_quota);
    }

    fn get_limit(&self, limit: u32) -> Result<u64, Status> {
        self.backend.get_limit(limit)
    }

    fn set_limit(&mut self, limit: u32, value: u64) -> Result<(), Status> {
        self.backend.set_limit(limit, value)
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
        self.backend.module_load(image, sha256, &mut next, room)
    }

    fn module_unload(&mut self, module: u64, done: Ticket) {
        if !self.backend.has_module(module) {
            return done.fire(Outcome::status(Status::INVALID_HANDLE));
        }
        let backend = self.backend.clone();
        self.streams.after_all(Ticket::new(move |_| {
            done.fire(Outcome::status(
                backend
                    .module_unload(module)
                    .err()
                    .unwrap_or(Status::SUCCESS),
            ))
        }));
    }

    fn module_global(&self, module: u64, name: &str) -> Result<(u64, u64), Status> {
        self.backend.module_global(module, name)
    }

    fn func_get_attr(&self, func: u64, attr: u32) -> Result<i32, Status> {
        self.backend.func_get_attr(func, attr)
    }

    fn func_set_attr(&mut self, func: u64, attr: u32, value: i32) -> Result<(), Status> {
        self.backend.func_set_attr(func, attr, value)
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
            } => self
                .backend
                .check_launch(*func, *block, *shared_mem, params, attrs)
                .err(),
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
            self.backend.clear();
            self.shared.clear_errors();
            return;
        }
        // A worker is still busy with the old state (and holds it, its memory included,
        // until it ends): the context moves on with new state, without waiting for it.
        match self.backend.successor(self.limits.mem_quota) {
            Ok(b) => {
                self.backend = b;
                self.shared = Arc::new(Shared::new(
                    self.backend.clone(),
                    self.shared.callbacks().clone(),
                    self.shared.device_util().clone(),
                ));
                self.streams = StreamSet::new(self.shared.clone(), self.pd);
            }
            Err(e) => log::error!(
                "PD {}: no fresh state after a reset ({e}); the context stays cancelled",
                self.pd
            ),
        }
    }

    fn active_within(&self, recent: std::time::Duration) -> bool {
        self.streams.active_within(recent)
    }

    fn sticky_error(&self) -> Option<Status> {
        self.shared.sticky()
    }

    fn counts(&self) -> Counts {
        let (mem_bytes, allocations) = self.backend.mem_usage();
        let (modules, functions) = self.backend.module_counts();
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
            gpu_util: self.shared.utilization(),
        }
    }
}

impl Drop for StreamContext {
    fn drop(&mut self) {
        self.streams.stop();
    }
}
