//! A fake [`Executor`]: it records every call the queue engine makes of it, in order, and
//! answers as the test's [`Script`] says, so that the engine (decoding, validation, windows,
//! PDs, completions, tickets) is tested without a device behind it.
//!
//! Handles are counted from `0x1000` per context; allocations are remembered (so MEM_FREE
//! and MEM_GET_RANGE of an unknown pointer fail as a real executor's would); waits complete
//! at once unless the script holds them, and held tickets are released by the test.
//! Copies are real against the guest: a host-to-device copy reads its source (recorded in
//! the call), a device-to-host copy writes [`FILL`] over its destination.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vgpu_os::lock;
use vgpu_proto::info::{DeviceInfo, FunctionEntry};
use vgpu_proto::Status;
use vgpu_stub::exec::{
    CallbackSink, Context, Counts, Executor, HostSource, Limits, Op, Outcome, Refused, Ticket,
};

/// The byte a device-to-host copy writes.
pub const FILL: u8 = 0xA5;

/// One call the engine made: the PD and what was called, with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The PD of the context called (0 for the executor itself).
    pub pd: u32,
    /// The method and its arguments, as `name arg…`.
    pub what: String,
}

/// What the fake answers.
#[derive(Default)]
pub struct Script {
    /// Refuse new contexts with this status.
    pub refuse_contexts: Mutex<Option<Status>>,
    /// Fail calls whose method name is a key with that status.
    pub fail: Mutex<HashMap<&'static str, Status>>,
    /// Keep tickets (waits and NOTIFY) instead of completing them at once.
    pub hold: AtomicBool,
    /// The sticky error every context reports.
    pub sticky: Mutex<Option<Status>>,
}

/// Shared state of the fake and its contexts.
#[derive(Default)]
pub struct Shared {
    /// Every call, in order.
    pub calls: Mutex<Vec<Call>>,
    /// The script.
    pub script: Script,
    held: Mutex<Vec<Ticket>>,
    sinks: Mutex<HashMap<u32, Arc<dyn CallbackSink>>>,
}

impl Shared {
    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The calls so far of the method `name`.
    pub fn calls_of(&self, name: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.what.split(' ').next() == Some(name))
            .collect()
    }

    /// Makes method `name` fail with `status`.
    pub fn fail(&self, name: &'static str, status: Status) {
        lock(&self.script.fail).insert(name, status);
    }

    /// Holds (true) or completes at once (false) every later ticket.
    pub fn hold(&self, on: bool) {
        self.script.hold.store(on, Ordering::SeqCst);
    }

    /// Tickets held so far.
    pub fn held(&self) -> usize {
        lock(&self.held).len()
    }

    /// Completes every held ticket with `outcome`.
    pub fn release(&self, outcome: Outcome) {
        let tickets = std::mem::take(&mut *lock(&self.held));
        for t in tickets {
            t.fire(outcome);
        }
    }

    /// Asks PD `pd`'s client to run host function `cookie`, as a stream thread would.
    pub fn host_func(&self, pd: u32, cookie: u64) {
        let sink = lock(&self.sinks)
            .get(&pd)
            .cloned()
            .expect("a context of that PD");
        sink.host_func(cookie);
    }

    fn record(&self, pd: u32, what: String) {
        log::debug!("fake executor: pd {pd}: {what}");
        lock(&self.calls).push(Call { pd, what });
    }

    fn failure(&self, name: &str) -> Result<(), Status> {
        lock(&self.script.fail)
            .get(name)
            .map_or(Ok(()), |s| Err(*s))
    }

    fn complete(&self, t: Ticket, o: Outcome) {
        if self.script.hold.load(Ordering::SeqCst) {
            lock(&self.held).push(t);
        } else {
            t.fire(o);
        }
    }
}

/// The fake executor.
#[derive(Clone, Default)]
pub struct FakeExecutor {
    /// Its calls and script.
    pub shared: Arc<Shared>,
}

impl FakeExecutor {
    /// A fake with an empty script.
    pub fn new() -> Self {
        Self::default()
    }
}

/// What IDENTIFY reports of the fake.
pub fn device_info() -> DeviceInfo {
    let mut d: DeviceInfo = bytemuck::Zeroable::zeroed();
    d.version = vgpu_proto::info::DEVICE_INFO_VERSION;
    d.total_mem = 1 << 30;
    d.cc_major = 9;
    d.executor = vgpu_proto::info::executor::SOFT;
    DeviceInfo::set_str(&mut d.name, "Fake executor");
    d
}

impl Executor for FakeExecutor {
    fn device_info(&self) -> DeviceInfo {
        device_info()
    }

    /// The fake runs no kernels.
    fn utilization(&self) -> u32 {
        0
    }

    fn new_context(
        &self,
        pd: u32,
        _cache_domain: u32,
        limits: Limits,
        callbacks: Arc<dyn CallbackSink>,
    ) -> Result<Box<dyn Context>, Status> {
        self.shared.record(
            pd,
            format!(
                "new_context quota={} max_objects={}",
                limits.mem_quota, limits.max_objects
            ),
        );
        if let Some(s) = *lock(&self.shared.script.refuse_contexts) {
            return Err(s);
        }
        lock(&self.shared.sinks).insert(pd, callbacks);
        Ok(Box::new(FakeContext {
            pd,
            shared: self.shared.clone(),
            limits,
            next: 0x1000,
            allocations: HashMap::new(),
            counts: Counts::default(),
        }))
    }
}

struct FakeContext {
    pd: u32,
    shared: Arc<Shared>,
    limits: Limits,
    next: u64,
    allocations: HashMap<u64, u64>,
    counts: Counts,
}

impl FakeContext {
    /// Records the call and applies the script's failure for `name`.
    fn call(&self, name: &'static str, args: String) -> Result<(), Status> {
        let what = if args.is_empty() {
            name.to_string()
        } else {
            format!("{name} {args}")
        };
        self.shared.record(self.pd, what);
        self.shared.failure(name)
    }

    fn handle(&mut self) -> u64 {
        self.next += 0x10;
        self.next
    }

    fn wait(&self, name: &'static str, args: String, done: Ticket) {
        let status = self.call(name, args).err().unwrap_or(Status::SUCCESS);
        self.shared.complete(done, Outcome::status(status));
    }
}

fn describe(op: &Op) -> String {
    match op {
        Op::CopyHtoD { dst, src } => {
            let bytes = match src {
                HostSource::Inline(v) => v.clone(),
                HostSource::Range(r) => {
                    let mut v = vec![0; r.len() as usize];
                    match r.read(0, &mut v) {
                        Ok(()) => v,
                        Err(s) => return format!("copy_htod dst={dst:#x} unreadable {s:?}"),
                    }
                }
            };
            format!("copy_htod dst={dst:#x} bytes={bytes:?}")
        }
        Op::CopyDtoH { src, dst } => {
            let r = dst.write(0, &vec![FILL; dst.len() as usize]);
            format!("copy_dtoh src={src:#x} len={} wrote={r:?}", dst.len())
        }
        Op::CopyDtoD { dst, src, len } => format!("copy_dtod dst={dst:#x} src={src:#x} len={len}"),
        Op::Memset {
            dst, width, value, ..
        } => format!("memset dst={dst:#x} width={width} value={value:#x}"),
        Op::Launch {
            func,
            grid,
            block,
            params,
            ..
        } => format!("launch func={func:#x} grid={grid:?} block={block:?} params={params:?}"),
        Op::EventRecord { event } => format!("event_record {event:#x}"),
        Op::WaitEvent { event } => format!("wait_event {event:#x}"),
        Op::GraphLaunch { exec } => format!("graph_launch {exec:#x}"),
        Op::HostFunc { cookie } => format!("host_func {cookie:#x}"),
        Op::Copy2D { width, height, .. } => format!("copy_2d {width}x{height}"),
        Op::Gemm(_) => "gemm".into(),
        Op::GemmBatched(_) => "gemm_batched".into(),
        Op::TrsmBatched(_) => "trsm_batched".into(),
        Op::LtMatmul(_) => "lt_matmul".into(),
    }
}

impl Drop for FakeContext {
    fn drop(&mut self) {
        self.shared.record(self.pd, "drop".into());
        lock(&self.shared.sinks).remove(&self.pd);
    }
}

impl Context for FakeContext {
    fn mem_alloc(&mut self, size: u64) -> Result<u64, Status> {
        self.call("mem_alloc", format!("{size}"))?;
        if self.counts.mem_bytes.saturating_add(size) > self.limits.mem_quota {
            return Err(Status::OUT_OF_MEMORY);
        }
        let p = self.handle() << 20;
        self.allocations.insert(p, size);
        self.counts.mem_bytes += size;
        self.counts.allocations += 1;
        Ok(p)
    }

    fn mem_free(&mut self, ptr: u64, done: Ticket) {
        let known = self.allocations.remove(&ptr);
        if let Some(size) = known {
            self.counts.mem_bytes -= size;
            self.counts.allocations -= 1;
        }
        let status = match self.call("mem_free", format!("{ptr:#x}")) {
            Err(s) => s,
            Ok(()) if known.is_none() => Status::INVALID_VALUE,
            Ok(()) => Status::SUCCESS,
        };
        self.shared.complete(done, Outcome::status(status));
    }

    fn mem_range(&self, ptr: u64) -> Result<(u64, u64), Status> {
        self.call("mem_range", format!("{ptr:#x}"))?;
        self.allocations
            .iter()
            .find(|(&base, &size)| ptr >= base && ptr - base < size)
            .map(|(&b, &s)| (b, s))
            .ok_or(Status::INVALID_VALUE)
    }

    fn mem_info(&self) -> (u64, u64) {
        let _ = self.call("mem_info", String::new());
        let total = self.limits.mem_quota;
        (total.saturating_sub(self.counts.mem_bytes), total)
    }

    fn set_limits(&mut self, limits: Limits) {
        let _ = self.call(
            "set_limits",
            format!(
                "quota={} max_objects={}",
                limits.mem_quota, limits.max_objects
            ),
        );
        self.limits = limits;
    }

    fn get_limit(&self, limit: u32) -> Result<u64, Status> {
        self.call("get_limit", format!("{limit}"))?;
        Ok(u64::from(limit) * 100)
    }

    fn set_limit(&mut self, limit: u32, value: u64) -> Result<(), Status> {
        self.call("set_limit", format!("{limit} {value}"))
    }

    fn module_load(
        &mut self,
        image: &[u8],
        _sha256: &[u8; 32],
    ) -> Result<(u64, Vec<FunctionEntry>), Status> {
        self.call("module_load", format!("{} bytes", image.len()))?;
        self.counts.modules += 1;
        Ok((self.handle(), Vec::new()))
    }

    fn module_unload(&mut self, module: u64, done: Ticket) {
        self.counts.modules = self.counts.modules.saturating_sub(1);
        self.wait("module_unload", format!("{module:#x}"), done);
    }

    fn module_global(&self, module: u64, name: &str) -> Result<(u64, u64), Status> {
        self.call("module_global", format!("{module:#x} {name}"))?;
        Err(Status::NOT_FOUND)
    }

    fn func_get_attr(&self, func: u64, attr: u32) -> Result<i32, Status> {
        self.call("func_get_attr", format!("{func:#x} {attr}"))?;
        Ok(attr as i32)
    }

    fn func_set_attr(&mut self, func: u64, attr: u32, value: i32) -> Result<(), Status> {
        self.call("func_set_attr", format!("{func:#x} {attr} {value}"))
    }

    fn stream_create(&mut self, flags: u32, priority: i32) -> Result<u64, Status> {
        self.call("stream_create", format!("{flags} {priority}"))?;
        self.counts.streams += 1;
        Ok(self.handle())
    }

    fn stream_destroy(&mut self, stream: u64) -> Result<(), Status> {
        self.call("stream_destroy", format!("{stream:#x}"))?;
        self.counts.streams = self.counts.streams.saturating_sub(1);
        Ok(())
    }

    fn stream_sync(&mut self, stream: u64, done: Ticket) {
        self.wait("stream_sync", format!("{stream:#x}"), done);
    }

    fn stream_query(&mut self, stream: u64) -> Status {
        self.call("stream_query", format!("{stream:#x}"))
            .err()
            .unwrap_or(Status::SUCCESS)
    }

    fn begin_capture(&mut self, stream: u64, mode: u32) -> Result<(), Status> {
        self.call("begin_capture", format!("{stream:#x} {mode}"))
    }

    fn end_capture(&mut self, stream: u64) -> Result<u64, Status> {
        self.call("end_capture", format!("{stream:#x}"))?;
        Ok(self.handle())
    }

    fn submit(&mut self, stream: u64, op: Op, notify: Option<Ticket>) -> Result<(), Refused> {
        let what = describe(&op);
        let name = what.split(' ').next().unwrap_or("").to_string();
        self.shared
            .record(self.pd, format!("submit stream={stream:#x} {what}"));
        if let Err(s) = self.shared.failure("submit") {
            return Err(Refused::new(s, notify));
        }
        let status = self
            .shared
            .failure(if name == "copy_htod" {
                "copy_htod"
            } else {
                "op"
            })
            .err()
            .unwrap_or(Status::SUCCESS);
        if let Some(t) = notify {
            self.shared.complete(t, Outcome::status(status));
        }
        Ok(())
    }

    fn host_func_done(&mut self, cookie: u64) {
        let _ = self.call("host_func_done", format!("{cookie:#x}"));
    }

    fn event_create(&mut self, flags: u32) -> Result<u64, Status> {
        self.call("event_create", format!("{flags}"))?;
        self.counts.events += 1;
        Ok(self.handle())
    }

    fn event_destroy(&mut self, event: u64) -> Result<(), Status> {
        self.call("event_destroy", format!("{event:#x}"))?;
        self.counts.events = self.counts.events.saturating_sub(1);
        Ok(())
    }

    fn event_sync(&mut self, event: u64, done: Ticket) {
        self.wait("event_sync", format!("{event:#x}"), done);
    }

    fn event_query(&self, event: u64) -> Status {
        self.call("event_query", format!("{event:#x}"))
            .err()
            .unwrap_or(Status::SUCCESS)
    }

    fn event_elapsed(&self, start: u64, end: u64) -> Result<f32, Status> {
        self.call("event_elapsed", format!("{start:#x} {end:#x}"))?;
        Ok(1.5)
    }

    fn graph_instantiate(&mut self, graph: u64, flags: u64) -> Result<u64, Status> {
        self.call("graph_instantiate", format!("{graph:#x} {flags}"))?;
        Ok(self.handle())
    }

    fn graph_exec_update(&mut self, exec: u64, graph: u64) -> Result<u64, Status> {
        self.call("graph_exec_update", format!("{exec:#x} {graph:#x}"))?;
        Ok(0)
    }

    fn graph_destroy(&mut self, graph: u64) -> Result<(), Status> {
        self.call("graph_destroy", format!("{graph:#x}"))
    }

    fn graph_exec_destroy(&mut self, exec: u64) -> Result<(), Status> {
        self.call("graph_exec_destroy", format!("{exec:#x}"))
    }

    fn blas_create(&mut self) -> Result<u64, Status> {
        self.call("blas_create", String::new())?;
        self.counts.blas_handles += 1;
        Ok(self.handle())
    }

    fn blas_destroy(&mut self, handle: u64) -> Result<(), Status> {
        self.call("blas_destroy", format!("{handle:#x}"))?;
        self.counts.blas_handles = self.counts.blas_handles.saturating_sub(1);
        Ok(())
    }

    fn synchronize(&mut self, done: Ticket) {
        self.wait("synchronize", String::new(), done);
    }

    fn reset(&mut self) {
        let _ = self.call("reset", String::new());
        self.allocations.clear();
        self.counts = Counts::default();
    }

    fn sticky_error(&self) -> Option<Status> {
        *lock(&self.shared.script.sticky)
    }

    /// The fake completes every op as it is submitted: nothing is ever in flight.
    fn active_within(&self, _recent: std::time::Duration) -> bool {
        false
    }

    fn counts(&self) -> Counts {
        self.counts
    }
}
