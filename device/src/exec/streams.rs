//! Streams, events, graphs and host functions of a context, for every executor.
//!
//! Each stream is a worker thread fed by a channel, so work on one stream runs in order
//! and streams run concurrently. The data operations themselves (copies, memsets,
//! launches, BLAS) run on the worker through the context's [`Backend`], one at a time and
//! each to completion, so that a finished op is finished on the device too. The NULL stream (handle 0) has CUDA's legacy semantics:
//! before work on it runs, every blocking stream finishes what was submitted to it, and
//! blocking streams do not start later work before the NULL stream's earlier work is done.
//! Errors follow spec §8.3: an async failure latches on its stream (first one wins), and a
//! sticky one poisons the whole context until reset.
//!
//! A small data op (a copy or memset of at most [`QUICK_BYTES`]) or an event record whose
//! stream is idle, with nothing to wait for under the legacy ordering, runs at once on the
//! submitting thread instead of waking the stream's worker; a synchronize of an idle
//! stream is answered at once. Either way it is ordered exactly as if it had been queued:
//! everything submitted to the stream before it has finished.
//!
//! Stream capture records the work submitted to a capturing stream as graph nodes instead
//! of running it; launching an executable graph replays its nodes in order on a stream, as
//! one job. Capture covers one stream: a stream waiting on an event recorded outside the
//! capture ends it with STREAM_CAPTURE_UNSUPPORTED (fork/join across streams is not
//! supported).

use crate::exec::util::UtilMeter;
use crate::exec::{Backend, CallbackSink, Op, Outcome, Refused, Ticket};
use crossbeam_channel::{unbounded, Sender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vgpu_os::lock;
use vgpu_proto::cmd::event_flags;
use vgpu_proto::Status;

/// How long a stream waits for HOST_FUNC_DONE (spec §7.9).
pub const HOST_FUNC_TIMEOUT: Duration = Duration::from_secs(60);
/// How often blocked workers look at the cancellation flag.
const POLL: Duration = Duration::from_millis(20);
/// Most stream worker threads of one PD alive at once (the NULL stream's included; a
/// destroyed stream's worker counts until it has finished its work): STREAM_CREATE past
/// it fails with OUT_OF_MEMORY (spec §7.9).
pub const MAX_STREAM_THREADS: u32 = 512;
/// Most commands one PD has queued on its streams and not yet run.
pub const MAX_QUEUED_JOBS: u32 = 1 << 16;
/// Most bytes queued commands of one PD hold (inline copy data, launch parameters).
pub const MAX_HELD_BYTES: u64 = 1 << 30;
/// How long a reset or teardown waits for the stream workers (spec §6.4); workers still
/// busy then are left to finish on their own, on state nobody else uses any more.
pub const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most nodes of one graph (spec §7.11): a capture that would grow past it fails with
/// OUT_OF_MEMORY. Launching a graph into a capture copies its nodes, so without a bound a
/// handful of commands doubles a graph into any size.
pub const MAX_GRAPH_NODES: usize = 1 << 16;
/// Most bytes of graph nodes one PD holds in its captures, graphs and executable graphs.
pub const MAX_GRAPH_BYTES: u64 = 256 << 20;

/// Largest data op (bytes moved or set) that runs on the submitting thread when its stream
/// is idle: about what one wake-up of a stream worker costs in copying.
pub const QUICK_BYTES: u64 = 64 << 10;

/// True for an op cheap enough to run on the submitting thread (see [`QUICK_BYTES`]).
fn is_quick(op: &Op) -> bool {
    match op {
        Op::CopyHtoD { src, .. } => src.len() <= QUICK_BYTES,
        Op::CopyDtoH { dst, .. } => dst.len() <= QUICK_BYTES,
        Op::CopyDtoD { len, .. } => *len <= QUICK_BYTES,
        Op::Memset {
            width,
            height,
            elem_size,
            ..
        } => {
            let bytes = width.saturating_mul(u64::from(*elem_size));
            bytes.saturating_mul(*height) <= QUICK_BYTES
        }
        Op::EventRecord { .. } => true,
        _ => false,
    }
}

/// Kinds of handle; the kind is kept in the top byte so that a handle of the wrong kind is
/// never found.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Stream = 1,
    Event = 2,
    Module = 3,
    Function = 4,
    Graph = 5,
    GraphExec = 6,
    Blas = 7,
}

/// Handle allocator: unique for the context's lifetime.
#[derive(Default)]
pub(crate) struct Handles {
    next: u64,
}

impl Handles {
    pub(crate) fn next(&mut self, kind: Kind) -> u64 {
        self.next += 1;
        ((kind as u64) << 56) | self.next
    }
}

/// A one-shot gate a worker can wait on.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn open(&self) {
        *lock(&self.open) = true;
        self.cv.notify_all();
    }

    /// Waits until open; false on timeout or cancellation.
    fn wait(&self, shared: &Shared, timeout: Option<Duration>) -> bool {
        let start = Instant::now();
        let mut open = lock(&self.open);
        while !*open {
            if shared.cancelled() || timeout.is_some_and(|t| start.elapsed() >= t) {
                return false;
            }
            open = self
                .cv
                .wait_timeout(open, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// State shared by a context and its stream workers.
pub(crate) struct Shared {
    backend: Arc<dyn Backend>,
    sticky: Mutex<Option<Status>>,
    seq: AtomicU64,
    callbacks: Arc<dyn CallbackSink>,
    host_funcs: Mutex<HashMap<u64, Arc<Gate>>>,
    pending: AtomicU32,
    cancelled: AtomicBool,
    /// Stream worker threads alive.
    threads: AtomicU32,
    /// Jobs queued by [`StreamSet::submit`] and not yet run, and the bytes they hold.
    jobs: AtomicU32,
    held: AtomicU64,
    /// When the last job finished, in nanoseconds since [`epoch`] (0: never).
    last_done: AtomicU64,
    /// Kernel time of this context, and of the whole device.
    util: UtilMeter,
    device_util: Arc<UtilMeter>,
}

/// The clock origin of [`Shared::last_done`].
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Shared {
    /// State for a context whose data ops run on `backend`; its kernels also count in
    /// `device_util`.
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        callbacks: Arc<dyn CallbackSink>,
        device_util: Arc<UtilMeter>,
    ) -> Self {
        Shared {
            backend,
            sticky: Mutex::new(None),
            seq: AtomicU64::new(0),
            callbacks,
            host_funcs: Mutex::new(HashMap::new()),
            pending: AtomicU32::new(0),
            cancelled: AtomicBool::new(false),
            threads: AtomicU32::new(0),
            jobs: AtomicU32::new(0),
            held: AtomicU64::new(0),
            last_done: AtomicU64::new(0),
            util: UtilMeter::default(),
            device_util,
        }
    }

    /// Where host-function requests go.
    pub(crate) fn callbacks(&self) -> &Arc<dyn CallbackSink> {
        &self.callbacks
    }

    pub(crate) fn sticky(&self) -> Option<Status> {
        *lock(&self.sticky)
    }

    pub(crate) fn clear_errors(&self) {
        *lock(&self.sticky) = None;
    }

    pub(crate) fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// This context's GPU utilisation, percent.
    pub(crate) fn utilization(&self) -> u32 {
        self.util.percent(Instant::now())
    }

    pub(crate) fn device_util(&self) -> &Arc<UtilMeter> {
        &self.device_util
    }

    /// True while some stream has a job queued or running, or the last one finished
    /// within `recent`.
    fn active_within(&self, recent: Duration) -> bool {
        if self.jobs.load(Ordering::Acquire) > 0 {
            return true;
        }
        let done = self.last_done.load(Ordering::Relaxed);
        let now = epoch().elapsed().as_nanos() as u64;
        done != 0 && now.saturating_sub(done) < recent.as_nanos() as u64
    }

    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub(crate) fn host_func_done(&self, cookie: u64) {
        match lock(&self.host_funcs).remove(&cookie) {
            Some(g) => g.open(),
            None => log::warn!("HOST_FUNC_DONE for unknown cookie {cookie:#x} ignored"),
        }
    }

    fn latch(&self, stream: &StreamState, status: Status) {
        let mut l = lock(&stream.latched);
        if l.is_none() {
            *l = Some((self.seq.fetch_add(1, Ordering::Relaxed), status));
        }
        if status.is_sticky() {
            lock(&self.sticky).get_or_insert(status);
        }
    }
}

/// Per-stream state the worker shares with the context.
#[derive(Default)]
struct StreamState {
    latched: Mutex<Option<(u64, Status)>>,
    queued: AtomicU32,
}

impl StreamState {
    fn take_latched(&self) -> Option<(u64, Status)> {
        lock(&self.latched).take()
    }
}

type Job = Box<dyn FnOnce(&Shared, &StreamState) + Send>;

struct Stream {
    tx: Sender<Job>,
    thread: Option<JoinHandle<()>>,
    state: Arc<StreamState>,
    blocking: bool,
    /// Work was submitted since the NULL stream last waited for this stream.
    dirty: bool,
    /// The NULL stream's epoch this stream has already waited for.
    null_epoch: u64,
}

#[derive(Default)]
struct EventState {
    recorded: u64,
    completed: u64,
    time: Option<Instant>,
    waiters: Vec<(u64, Ticket)>,
}

struct EventInner {
    state: Mutex<EventState>,
    cv: Condvar,
}

impl EventInner {
    fn complete(&self, generation: u64) {
        let mut s = lock(&self.state);
        if generation > s.completed {
            s.completed = generation;
            s.time = Some(Instant::now());
        }
        let done = s.completed;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut s.waiters)
            .into_iter()
            .partition(|(g, _)| *g <= done);
        s.waiters = waiting;
        drop(s);
        self.cv.notify_all();
        for (_, t) in ready {
            t.fire(Outcome::status(Status::SUCCESS));
        }
    }

    fn wait(&self, shared: &Shared, target: u64) -> bool {
        let mut s = lock(&self.state);
        while s.completed < target {
            if shared.cancelled() {
                return false;
            }
            s = self
                .cv
                .wait_timeout(s, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

struct Event {
    flags: u32,
    inner: Arc<EventInner>,
}

/// The streams and events of one context.
pub(crate) struct StreamSet {
    shared: Arc<Shared>,
    pd: u32,
    streams: HashMap<u64, Stream>,
    events: HashMap<u64, Event>,
    null_epoch: u64,
    captures: HashMap<u64, Capture>,
    graphs: HashMap<u64, Arc<Graph>>,
    execs: HashMap<u64, Arc<Graph>>,
    /// Bytes of the distinct node lists in `graphs` and `execs`.
    stored_bytes: u64,
}

/// The nodes of a graph, and what they cost the PD's graph budget.
#[derive(Default)]
struct Graph {
    nodes: Vec<Node>,
    bytes: u64,
}

impl Graph {
    /// Appends `nodes` of `bytes` if the graph stays within [`MAX_GRAPH_NODES`].
    fn append(&mut self, nodes: &[Node], bytes: u64) -> Result<(), Status> {
        if self.nodes.len() + nodes.len() > MAX_GRAPH_NODES {
            return Err(Status::OUT_OF_MEMORY);
        }
        self.nodes
            .try_reserve(nodes.len())
            .map_err(|_| Status::OUT_OF_MEMORY)?;
        self.nodes.extend_from_slice(nodes);
        self.bytes += bytes;
        Ok(())
    }
}

/// Bytes a queued op holds on the heap, for the PD's budget of queued work.
fn held_bytes(op: &Op) -> u64 {
    let n = match op {
        Op::Launch { params, attrs, .. } => params.len() + std::mem::size_of_val(attrs.as_slice()),
        Op::CopyHtoD {
            src: crate::exec::HostSource::Inline(v),
            ..
        } => v.len(),
        _ => 0,
    };
    n as u64
}

/// What a node costs the graph budget: the node and what it owns on the heap.
fn node_bytes(n: &Node) -> u64 {
    let owned = match n {
        Node::Op(Op::Launch { params, attrs, .. }) => {
            params.len() + std::mem::size_of_val(attrs.as_slice())
        }
        Node::Op(Op::CopyHtoD {
            src: crate::exec::HostSource::Inline(v),
            ..
        }) => v.len(),
        Node::Op(Op::LtMatmul(_)) => std::mem::size_of::<vgpu_proto::payload::LtMatmulDesc>(),
        _ => 0,
    };
    (std::mem::size_of::<Node>() + owned) as u64
}

/// One step of a graph.
#[derive(Clone)]
enum Node {
    /// A data operation.
    Op(Op),
    /// Record an event.
    Record(Arc<EventInner>),
}

/// A stream being captured.
#[derive(Default)]
struct Capture {
    graph: Graph,
    events: std::collections::HashSet<u64>,
    invalid: Option<Status>,
}

impl StreamSet {
    pub(crate) fn new(shared: Arc<Shared>, pd: u32) -> Self {
        let mut s = StreamSet {
            shared,
            pd,
            streams: HashMap::new(),
            events: HashMap::new(),
            null_epoch: 0,
            captures: HashMap::new(),
            graphs: HashMap::new(),
            execs: HashMap::new(),
            stored_bytes: 0,
        };
        s.spawn(0, true);
        s
    }

    fn spawn(&mut self, handle: u64, blocking: bool) -> bool {
        let alive = self.shared.threads.fetch_add(1, Ordering::AcqRel);
        if handle != 0 && alive >= MAX_STREAM_THREADS {
            self.shared.threads.fetch_sub(1, Ordering::AcqRel);
            log::warn!(
                "PD {}: no new stream: {MAX_STREAM_THREADS} stream workers are alive",
                self.pd
            );
            return false;
        }
        let (tx, rx) = unbounded::<Job>();
        let state = Arc::new(StreamState::default());
        let (shared, st) = (self.shared.clone(), state.clone());
        let thread = std::thread::Builder::new()
            .name(format!("pd{}-stream-{handle:x}", self.pd))
            .spawn(move || {
                for job in rx {
                    job(&shared, &st);
                    st.queued.fetch_sub(1, Ordering::Release);
                }
                shared.threads.fetch_sub(1, Ordering::AcqRel);
            });
        match thread {
            Ok(t) => {
                let s = Stream {
                    tx,
                    thread: Some(t),
                    state,
                    blocking,
                    dirty: false,
                    null_epoch: self.null_epoch,
                };
                self.streams.insert(handle, s);
                true
            }
            Err(e) => {
                self.shared.threads.fetch_sub(1, Ordering::AcqRel);
                log::error!("PD {}: cannot start a stream thread: {e}", self.pd);
                false
            }
        }
    }

    pub(crate) fn create(&mut self, handle: u64, blocking: bool) -> Result<(), Status> {
        if self.spawn(handle, blocking) {
            Ok(())
        } else {
            Err(Status::OUT_OF_MEMORY)
        }
    }

    pub(crate) fn destroy(&mut self, handle: u64) -> Result<(), Status> {
        // Dropping the sender lets the worker finish what is queued and exit.
        let s = self.streams.remove(&handle).ok_or(Status::INVALID_HANDLE)?;
        drop(s.tx);
        Ok(())
    }

    /// True while work submitted to a stream is queued or running, or finished within
    /// `recent`.
    pub(crate) fn active_within(&self, recent: Duration) -> bool {
        self.shared.active_within(recent)
    }

    pub(crate) fn stream_count(&self) -> u32 {
        self.streams.len().saturating_sub(1) as u32
    }

    pub(crate) fn event_count(&self) -> u32 {
        self.events.len() as u32
    }

    /// True when work submitted to `handle` now may run at once on the caller's thread:
    /// nothing is queued on it and, under the NULL stream's legacy ordering, it waits for
    /// no other stream. When true, the ordering state is updated as for work that was
    /// queued and has finished.
    fn idle(&mut self, handle: u64) -> bool {
        let idle = |s: &Stream| s.state.queued.load(Ordering::Acquire) == 0;
        let Some(s) = self.streams.get(&handle) else {
            return false;
        };
        if !idle(s) {
            return false;
        }
        if handle == 0 {
            let busy = self
                .streams
                .iter()
                .any(|(h, s)| *h != 0 && s.blocking && s.dirty && !idle(s));
            if busy {
                return false;
            }
            for (_, s) in self.streams.iter_mut().filter(|(h, _)| **h != 0) {
                s.dirty = false;
            }
        } else {
            let waits = s.blocking && s.null_epoch < self.null_epoch;
            if waits && !self.streams.get(&0).is_some_and(idle) {
                return false;
            }
            let epoch = self.null_epoch;
            if let Some(s) = self.streams.get_mut(&handle) {
                s.null_epoch = epoch;
                s.dirty = false;
            }
        }
        true
    }

    /// Runs `job` at once on this thread when `handle` is [`idle`](Self::idle), else
    /// queues it.
    fn run_or_push(&mut self, handle: u64, job: Job) {
        if self.idle(handle) {
            if let Some(state) = self.streams.get(&handle).map(|s| s.state.clone()) {
                return job(&self.shared, &state);
            }
        }
        // The stream exists (the callers checked), so push cannot fail.
        let _ = self.push(handle, job);
    }

    fn send(&mut self, handle: u64, job: Job) {
        if let Some(s) = self.streams.get(&handle) {
            s.state.queued.fetch_add(1, Ordering::Acquire);
            if s.tx.send(job).is_err() {
                s.state.queued.fetch_sub(1, Ordering::Release);
                log::error!("PD {}: stream {handle:#x} worker is gone", self.pd);
            }
        }
    }

    /// Queues `job` on `handle`, applying the NULL stream's legacy ordering first.
    fn push(&mut self, handle: u64, job: Job) -> Result<(), Status> {
        let s = self.streams.get(&handle).ok_or(Status::INVALID_HANDLE)?;
        let wait = |g: Arc<Gate>| -> Job {
            Box::new(move |sh: &Shared, _: &StreamState| _ = g.wait(sh, None))
        };
        let open = |g: Arc<Gate>| -> Job { Box::new(move |_: &Shared, _: &StreamState| g.open()) };
        if handle == 0 {
            let dirty: Vec<u64> = self
                .streams
                .iter()
                .filter(|(h, s)| **h != 0 && s.blocking && s.dirty)
                .map(|(h, _)| *h)
                .collect();
            for h in dirty {
                let g = Arc::new(Gate::default());
                self.send(h, open(g.clone()));
                self.send(0, wait(g));
                if let Some(s) = self.streams.get_mut(&h) {
                    s.dirty = false;
                }
            }
            self.send(0, job);
            self.null_epoch += 1;
        } else {
            if s.blocking && s.null_epoch < self.null_epoch {
                let g = Arc::new(Gate::default());
                self.send(0, open(g.clone()));
                self.send(handle, wait(g));
            }
            let epoch = self.null_epoch;
            if let Some(s) = self.streams.get_mut(&handle) {
                s.null_epoch = epoch;
                s.dirty = s.blocking;
            }
            self.send(handle, job);
        }
        Ok(())
    }

    pub(crate) fn submit(
        &mut self,
        handle: u64,
        op: Op,
        notify: Option<Ticket>,
    ) -> Result<(), Refused> {
        if !self.streams.contains_key(&handle) {
            return Err(Refused::new(Status::INVALID_HANDLE, notify));
        }
        if self.captures.contains_key(&handle) {
            return self.capture_op(handle, op, notify);
        }
        let bytes = held_bytes(&op);
        let jobs = self.shared.jobs.load(Ordering::Acquire);
        let held = self.shared.held.load(Ordering::Acquire);
        if jobs >= MAX_QUEUED_JOBS || held.saturating_add(bytes) > MAX_HELD_BYTES {
            log::warn!(
                "PD {}: command refused: {jobs} commands holding {held} bytes are queued (at most {MAX_QUEUED_JOBS} and {MAX_HELD_BYTES} bytes)",
                self.pd
            );
            return Err(Refused::new(Status::OUT_OF_MEMORY, notify));
        }
        self.shared.jobs.fetch_add(1, Ordering::AcqRel);
        self.shared.held.fetch_add(bytes, Ordering::AcqRel);
        let release = move |sh: &Shared| {
            let now = epoch().elapsed().as_nanos() as u64;
            sh.last_done.store(now.max(1), Ordering::Relaxed);
            sh.jobs.fetch_sub(1, Ordering::AcqRel);
            sh.held.fetch_sub(bytes, Ordering::AcqRel);
        };
        if let Op::GraphLaunch { exec } = op {
            let nodes = match self.execs.get(&exec) {
                Some(n) => n.clone(),
                None => return Err(Refused::new(Status::INVALID_HANDLE, notify)),
            };
            self.shared.pending.fetch_add(1, Ordering::Relaxed);
            let job: Job = Box::new(move |sh: &Shared, st: &StreamState| {
                let r = replay(sh, &nodes.nodes);
                sh.pending.fetch_sub(1, Ordering::Relaxed);
                release(sh);
                finish(sh, st, r, notify);
            });
            let _ = self.push(handle, job);
            return Ok(());
        }
        let quick = is_quick(&op);
        let event = match &op {
            Op::EventRecord { event } | Op::WaitEvent { event } => match self.events.get(event) {
                Some(e) => Some(e.inner.clone()),
                None => {
                    release(&self.shared);
                    return Err(Refused::new(Status::INVALID_HANDLE, notify));
                }
            },
            _ => None,
        };
        let job: Job = match (op, event) {
            (Op::EventRecord { .. }, Some(inner)) => {
                let generation = {
                    let mut s = lock(&inner.state);
                    s.recorded += 1;
                    s.recorded
                };
                Box::new(move |sh: &Shared, _: &StreamState| {
                    inner.complete(generation);
                    if let Some(t) = notify {
                        t.fire(Outcome::status(sh.sticky().unwrap_or(Status::SUCCESS)));
                    }
                })
            }
            (Op::WaitEvent { .. }, Some(inner)) => {
                let target = lock(&inner.state).recorded;
                Box::new(move |sh: &Shared, _: &StreamState| {
                    let ok = inner.wait(sh, target);
                    if let Some(t) = notify {
                        t.fire(Outcome::status(if ok {
                            Status::SUCCESS
                        } else {
                            Status::UNKNOWN
                        }));
                    }
                })
            }
            (op, _) => {
                self.shared.pending.fetch_add(1, Ordering::Relaxed);
                Box::new(move |sh: &Shared, st: &StreamState| {
                    let r = if sh.cancelled() {
                        Err(Status::UNKNOWN)
                    } else if let Some(e) = sh.sticky() {
                        Err(e)
                    } else {
                        execute(sh, op)
                    };
                    sh.pending.fetch_sub(1, Ordering::Relaxed);
                    finish(sh, st, r, notify);
                })
            }
        };
        let job: Job = Box::new(move |sh: &Shared, st: &StreamState| {
            job(sh, st);
            release(sh);
        });
        if quick {
            self.run_or_push(handle, job);
        } else {
            // The stream exists (checked above), so push cannot fail.
            let _ = self.push(handle, job);
        }
        Ok(())
    }

    pub(crate) fn sync(&mut self, handle: u64, done: Ticket) {
        if !self.streams.contains_key(&handle) {
            return done.fire(Outcome::status(Status::INVALID_HANDLE));
        }
        if self.captures.contains_key(&handle) {
            self.invalidate(handle);
            return done.fire(Outcome::status(Status::STREAM_CAPTURE_UNSUPPORTED));
        }
        let job: Job = Box::new(move |sh: &Shared, st: &StreamState| {
            let status = sh
                .sticky()
                .or_else(|| st.take_latched().map(|(_, s)| s))
                .unwrap_or(Status::SUCCESS);
            done.fire(Outcome::status(status));
        });
        self.run_or_push(handle, job);
    }

    pub(crate) fn query(&mut self, handle: u64) -> Status {
        let Some(s) = self.streams.get(&handle) else {
            return Status::INVALID_HANDLE;
        };
        if self.captures.contains_key(&handle) {
            return Status::STREAM_CAPTURE_UNSUPPORTED;
        }
        if s.state.queued.load(Ordering::Acquire) != 0 {
            return Status::NOT_READY;
        }
        self.shared
            .sticky()
            .or_else(|| s.state.take_latched().map(|(_, st)| st))
            .unwrap_or(Status::SUCCESS)
    }

    /// Fires `done` once every stream has finished what was submitted before; the outcome
    /// carries the oldest latched error (which is cleared on every stream).
    pub(crate) fn synchronize(&mut self, done: Ticket) {
        if !self.captures.is_empty() {
            let capturing: Vec<u64> = self.captures.keys().copied().collect();
            for h in capturing {
                self.invalidate(h);
            }
            return done.fire(Outcome::status(Status::STREAM_CAPTURE_UNSUPPORTED));
        }
        let all_idle = self
            .streams
            .values()
            .all(|s| s.state.queued.load(Ordering::Acquire) == 0);
        if all_idle {
            let first = self
                .streams
                .values()
                .filter_map(|s| s.state.take_latched())
                .min_by_key(|(seq, _)| *seq)
                .map(|(_, s)| s);
            let status = self.shared.sticky().or(first).unwrap_or(Status::SUCCESS);
            return done.fire(Outcome::status(status));
        }
        struct Join {
            left: usize,
            errors: Vec<(u64, Status)>,
            done: Option<Ticket>,
        }
        let handles: Vec<u64> = self.streams.keys().copied().collect();
        let join = Arc::new(Mutex::new(Join {
            left: handles.len(),
            errors: Vec::new(),
            done: Some(done),
        }));
        for h in handles {
            let join = join.clone();
            self.send(
                h,
                Box::new(move |sh: &Shared, st: &StreamState| {
                    let mut j = lock(&join);
                    if let Some(e) = st.take_latched() {
                        j.errors.push(e);
                    }
                    j.left -= 1;
                    if j.left == 0 {
                        let first = j.errors.iter().min_by_key(|(seq, _)| *seq).map(|(_, s)| *s);
                        let status = sh.sticky().or(first).unwrap_or(Status::SUCCESS);
                        if let Some(t) = j.done.take() {
                            t.fire(Outcome::status(status));
                        }
                    }
                }),
            );
        }
    }

    /// Fires `done` once every stream has finished what was submitted before (no error
    /// reporting: for MEM_FREE and MODULE_UNLOAD).
    pub(crate) fn after_all(&mut self, done: Ticket) {
        let handles: Vec<u64> = self.streams.keys().copied().collect();
        let left = Arc::new(AtomicU32::new(handles.len() as u32));
        let done = Arc::new(Mutex::new(Some(done)));
        for h in handles {
            let (left, done) = (left.clone(), done.clone());
            self.send(
                h,
                Box::new(move |_: &Shared, _: &StreamState| {
                    if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                        if let Some(t) = lock(&done).take() {
                            t.fire(Outcome::status(Status::SUCCESS));
                        }
                    }
                }),
            );
        }
    }

    fn invalidate(&mut self, handle: u64) {
        if let Some(c) = self.captures.get_mut(&handle) {
            c.invalid.get_or_insert(Status::STREAM_CAPTURE_INVALIDATED);
        }
    }

    /// Records `op` into the capture of `handle` instead of running it.
    fn capture_op(&mut self, handle: u64, op: Op, notify: Option<Ticket>) -> Result<(), Refused> {
        let node = match &op {
            Op::EventRecord { event } => match self.events.get(event) {
                Some(e) => {
                    let inner = e.inner.clone();
                    if let Some(c) = self.captures.get_mut(&handle) {
                        c.events.insert(*event);
                    }
                    Some(Node::Record(inner))
                }
                None => return Err(Refused::new(Status::INVALID_HANDLE, notify)),
            },
            Op::WaitEvent { event } => {
                let inside = self
                    .captures
                    .get(&handle)
                    .is_some_and(|c| c.events.contains(event));
                if !inside {
                    log::warn!(
                        "PD {}: a capture waits on an event recorded outside it; cross-stream capture is not supported",
                        self.pd
                    );
                    self.invalidate(handle);
                    return Err(Refused::new(Status::STREAM_CAPTURE_UNSUPPORTED, notify));
                }
                None
            }
            Op::GraphLaunch { exec } => match self.execs.get(exec) {
                Some(g) => {
                    let g = g.clone();
                    if let Err(e) = self.capture_nodes(handle, &g.nodes, g.bytes) {
                        return Err(Refused::new(e, notify));
                    }
                    None
                }
                None => return Err(Refused::new(Status::INVALID_HANDLE, notify)),
            },
            _ => Some(Node::Op(op.clone())),
        };
        if let Some(n) = node {
            let bytes = node_bytes(&n);
            if let Err(e) = self.capture_nodes(handle, std::slice::from_ref(&n), bytes) {
                return Err(Refused::new(e, notify));
            }
        }
        if let Some(t) = notify {
            t.fire(Outcome::status(Status::SUCCESS));
        }
        Ok(())
    }

    /// Appends `nodes` of `bytes` to the capture of `handle` within the graph bounds; past
    /// them the capture is invalidated with OUT_OF_MEMORY.
    fn capture_nodes(&mut self, handle: u64, nodes: &[Node], bytes: u64) -> Result<(), Status> {
        let held = self.stored_bytes + self.captures.values().map(|c| c.graph.bytes).sum::<u64>();
        let Some(c) = self.captures.get_mut(&handle) else {
            return Ok(());
        };
        let r = if held.saturating_add(bytes) > MAX_GRAPH_BYTES {
            Err(Status::OUT_OF_MEMORY)
        } else {
            c.graph.append(nodes, bytes)
        };
        if let Err(e) = r {
            log::warn!(
                "PD {}: capture refused: the graph would pass {} nodes or the PD {} bytes of graphs",
                self.pd,
                MAX_GRAPH_NODES,
                MAX_GRAPH_BYTES
            );
            c.invalid.get_or_insert(e);
        }
        r
    }

    /// Recounts the bytes of the PD's graphs and executable graphs (shared lists once).
    fn restat(&mut self) {
        let mut seen = std::collections::HashSet::new();
        self.stored_bytes = self
            .graphs
            .values()
            .chain(self.execs.values())
            .filter(|g| seen.insert(Arc::as_ptr(g)))
            .map(|g| g.bytes)
            .sum();
    }

    pub(crate) fn begin_capture(&mut self, handle: u64) -> Result<(), Status> {
        if !self.streams.contains_key(&handle) {
            return Err(Status::INVALID_HANDLE);
        }
        if handle == 0 {
            // CUDA refuses to capture the legacy NULL stream.
            return Err(Status::STREAM_CAPTURE_UNSUPPORTED);
        }
        if self.captures.contains_key(&handle) {
            return Err(Status::ILLEGAL_STATE);
        }
        self.captures.insert(handle, Capture::default());
        Ok(())
    }

    pub(crate) fn end_capture(&mut self, handle: u64, graph: u64) -> Result<u64, Status> {
        let c = self
            .captures
            .remove(&handle)
            .ok_or(Status::STREAM_CAPTURE_UNMATCHED)?;
        if let Some(e) = c.invalid {
            return Err(e);
        }
        self.graphs.insert(graph, Arc::new(c.graph));
        self.restat();
        Ok(graph)
    }

    pub(crate) fn is_capturing(&self, handle: u64) -> bool {
        self.captures.contains_key(&handle)
    }

    pub(crate) fn graph_instantiate(&mut self, graph: u64, exec: u64) -> Result<u64, Status> {
        let nodes = self
            .graphs
            .get(&graph)
            .ok_or(Status::INVALID_HANDLE)?
            .clone();
        self.execs.insert(exec, nodes);
        self.restat();
        Ok(exec)
    }

    /// Takes the parameters of `graph` into `exec` when both have the same shape.
    pub(crate) fn graph_exec_update(&mut self, exec: u64, graph: u64) -> Result<u64, Status> {
        let new = self
            .graphs
            .get(&graph)
            .ok_or(Status::INVALID_HANDLE)?
            .clone();
        let old = self.execs.get(&exec).ok_or(Status::INVALID_HANDLE)?;
        let same_shape = old.nodes.len() == new.nodes.len()
            && old
                .nodes
                .iter()
                .zip(new.nodes.iter())
                .all(|(a, b)| node_kind(a) == node_kind(b));
        if !same_shape {
            return Err(Status::GRAPH_EXEC_UPDATE_FAILURE);
        }
        self.execs.insert(exec, new);
        self.restat();
        Ok(0)
    }

    pub(crate) fn graph_destroy(&mut self, graph: u64) -> Result<(), Status> {
        self.graphs.remove(&graph).ok_or(Status::INVALID_HANDLE)?;
        self.restat();
        Ok(())
    }

    pub(crate) fn graph_exec_destroy(&mut self, exec: u64) -> Result<(), Status> {
        self.execs.remove(&exec).ok_or(Status::INVALID_HANDLE)?;
        self.restat();
        Ok(())
    }

    pub(crate) fn graph_counts(&self) -> (u32, u32) {
        (self.graphs.len() as u32, self.execs.len() as u32)
    }

    pub(crate) fn event_create(&mut self, handle: u64, flags: u32) {
        let inner = Arc::new(EventInner {
            state: Mutex::new(EventState::default()),
            cv: Condvar::new(),
        });
        self.events.insert(handle, Event { flags, inner });
    }

    pub(crate) fn event_destroy(&mut self, handle: u64) -> Result<(), Status> {
        self.events
            .remove(&handle)
            .map(|_| ())
            .ok_or(Status::INVALID_HANDLE)
    }

    pub(crate) fn event_sync(&mut self, handle: u64, done: Ticket) {
        let Some(e) = self.events.get(&handle) else {
            return done.fire(Outcome::status(Status::INVALID_HANDLE));
        };
        let mut s = lock(&e.inner.state);
        if s.completed >= s.recorded {
            drop(s);
            return done.fire(Outcome::status(
                self.shared.sticky().unwrap_or(Status::SUCCESS),
            ));
        }
        let target = s.recorded;
        s.waiters.push((target, done));
    }

    pub(crate) fn event_query(&self, handle: u64) -> Status {
        let Some(e) = self.events.get(&handle) else {
            return Status::INVALID_HANDLE;
        };
        let s = lock(&e.inner.state);
        if s.completed >= s.recorded {
            Status::SUCCESS
        } else {
            Status::NOT_READY
        }
    }

    pub(crate) fn event_elapsed(&self, start: u64, end: u64) -> Result<f32, Status> {
        let time = |h: u64| -> Result<Instant, Status> {
            let e = self.events.get(&h).ok_or(Status::INVALID_HANDLE)?;
            if e.flags & event_flags::DISABLE_TIMING != 0 {
                return Err(Status::INVALID_HANDLE);
            }
            let s = lock(&e.inner.state);
            if s.recorded == 0 {
                return Err(Status::INVALID_HANDLE);
            }
            if s.completed < s.recorded {
                return Err(Status::NOT_READY);
            }
            s.time.ok_or(Status::NOT_READY)
        };
        let (a, b) = (time(start)?, time(end)?);
        let ms = if b >= a {
            b.duration_since(a).as_secs_f64() * 1e3
        } else {
            -(a.duration_since(b).as_secs_f64() * 1e3)
        };
        Ok(ms as f32)
    }

    /// Cancels every worker and waits for them, at most [`TEARDOWN_TIMEOUT`] in all. True
    /// when all of them ended; otherwise the busy ones keep the (cancelled) shared state,
    /// which must not be used again.
    pub(crate) fn stop(&mut self) -> bool {
        self.shared.cancelled.store(true, Ordering::Relaxed);
        for g in lock(&self.shared.host_funcs).drain().map(|(_, g)| g) {
            g.open();
        }
        let mut threads = Vec::new();
        for (_, mut s) in self.streams.drain() {
            drop(s.tx);
            threads.extend(s.thread.take());
        }
        let deadline = Instant::now() + TEARDOWN_TIMEOUT;
        let mut busy = 0;
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if !t.is_finished() {
                busy += 1;
                continue; // dropping the handle detaches the worker
            }
            if t.join().is_err() {
                log::error!("PD {}: a stream worker panicked", self.pd);
            }
        }
        if busy > 0 {
            log::error!(
                "PD {}: {busy} stream worker(s) still busy {TEARDOWN_TIMEOUT:?} after cancellation; left to finish on their own",
                self.pd
            );
        }
        busy == 0
    }

    /// Cancels and joins every worker (bounded, see [`stop`](Self::stop)), forgets every
    /// stream and event, and starts a fresh NULL stream. False when a worker was still
    /// busy: the caller must then move the context to new shared state.
    pub(crate) fn reset(&mut self) -> bool {
        if !self.stop() {
            return false;
        }
        self.events.clear();
        self.captures.clear();
        self.graphs.clear();
        self.execs.clear();
        self.stored_bytes = 0;
        self.shared.cancelled.store(false, Ordering::Relaxed);
        self.null_epoch = 0;
        self.spawn(0, true);
        true
    }
}

/// The kind of a node, for comparing graph shapes.
fn node_kind(n: &Node) -> std::mem::Discriminant<Op> {
    match n {
        Node::Op(op) => std::mem::discriminant(op),
        Node::Record(_) => std::mem::discriminant(&Op::EventRecord { event: 0 }),
    }
}

/// Runs a graph's nodes in order; the first failure stops the replay.
fn replay(sh: &Shared, nodes: &[Node]) -> Result<(), Status> {
    for n in nodes {
        if sh.cancelled() {
            return Err(Status::UNKNOWN);
        }
        if let Some(e) = sh.sticky() {
            return Err(e);
        }
        match n {
            Node::Op(op) => execute(sh, op.clone())?,
            Node::Record(inner) => {
                let generation = {
                    let mut s = lock(&inner.state);
                    s.recorded += 1;
                    s.recorded
                };
                inner.complete(generation);
            }
        }
    }
    Ok(())
}

/// Reports the outcome of an op: to its ticket with NOTIFY, else by latching a failure.
/// A sticky failure poisons the context either way (spec §8.3), as on a GPU.
fn finish(sh: &Shared, st: &StreamState, r: Result<(), Status>, notify: Option<Ticket>) {
    if let Err(e) = r {
        if e.is_sticky() {
            lock(&sh.sticky).get_or_insert(e);
        }
    }
    match (notify, r) {
        (Some(t), r) => t.fire(Outcome::status(r.err().unwrap_or(Status::SUCCESS))),
        (None, Err(e)) if sh.sticky() != Some(e) => sh.latch(st, e),
        _ => {}
    }
}

/// Executes one op on a worker: host functions here, data ops on the backend.
fn execute(sh: &Shared, op: Op) -> Result<(), Status> {
    match op {
        Op::HostFunc { cookie } => {
            let gate = Arc::new(Gate::default());
            lock(&sh.host_funcs).insert(cookie, gate.clone());
            sh.callbacks.host_func(cookie);
            if gate.wait(sh, Some(HOST_FUNC_TIMEOUT)) {
                Ok(())
            } else {
                lock(&sh.host_funcs).remove(&cookie);
                log::warn!("HOST_FUNC {cookie:#x}: no HOST_FUNC_DONE within {HOST_FUNC_TIMEOUT:?}");
                Err(Status::TIMEOUT)
            }
        }
        // Handled by the stream set before they reach a worker.
        Op::GraphLaunch { .. } => Err(Status::NOT_SUPPORTED),
        Op::EventRecord { .. } | Op::WaitEvent { .. } => Err(Status::UNKNOWN),
        op => {
            // Kernels (launches and BLAS) count as GPU time; copies and memsets do not.
            let kernel = matches!(
                op,
                Op::Launch { .. }
                    | Op::Gemm(_)
                    | Op::GemmBatched(_)
                    | Op::TrsmBatched(_)
                    | Op::LtMatmul(_)
            );
            if kernel {
                let now = Instant::now();
                sh.util.begin(now);
                sh.device_util.begin(now);
            }
            let r = sh.backend.execute(op, &sh.cancelled);
            if kernel {
                let now = Instant::now();
                sh.util.end(now);
                sh.device_util.end(now);
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::soft::{SoftConfig, SoftExecutor};
    use crate::exec::{Context, Executor, Limits};
    use std::sync::mpsc;
    use std::thread::ThreadId;

    struct Sink;
    impl CallbackSink for Sink {
        fn host_func(&self, _cookie: u64) {}
    }

    fn context() -> Box<dyn Context> {
        let exec = SoftExecutor::new(SoftConfig {
            memory: 64 << 20,
            ..SoftConfig::default()
        });
        let limits = Limits {
            mem_quota: 64 << 20,
            max_objects: 1024,
        };
        exec.new_context(1, 0, limits, Arc::new(Sink))
            .expect("context")
    }

    fn memset(dst: u64, count: u64) -> Op {
        Op::Memset {
            dst,
            pitch: 0,
            width: count,
            height: 1,
            value: 7,
            elem_size: 4,
        }
    }

    /// A ticket that reports the thread that fired it.
    fn ticket() -> (Ticket, mpsc::Receiver<(ThreadId, Status)>) {
        let (tx, rx) = mpsc::channel();
        let t = Ticket::new(move |o: Outcome| {
            let _ = tx.send((std::thread::current().id(), o.status));
        });
        (t, rx)
    }

    #[test]
    fn small_ops_on_idle_streams_run_on_the_submitting_thread() {
        let mut ctx = context();
        let buf = ctx.mem_alloc(1 << 20).expect("alloc");
        let me = std::thread::current().id();
        let s = ctx.stream_create(0, 0).expect("stream");
        for stream in [0, s] {
            let (t, rx) = ticket();
            assert!(ctx.submit(stream, memset(buf, 16), Some(t)).is_ok());
            // Already done when submit returns, on this thread.
            assert_eq!(rx.try_recv().ok(), Some((me, Status::SUCCESS)));
            let (t, rx) = ticket();
            ctx.stream_sync(stream, t);
            assert_eq!(rx.try_recv().ok(), Some((me, Status::SUCCESS)));
        }
        // A large one goes to the stream's worker.
        let (t, rx) = ticket();
        let big = memset(buf, (QUICK_BYTES / 4) + 1);
        assert!(ctx.submit(s, big, Some(t)).is_ok());
        let (thread, status) = rx.recv_timeout(Duration::from_secs(10)).expect("done");
        assert_eq!(status, Status::SUCCESS);
        assert_ne!(thread, me);
    }

    #[test]
    fn small_ops_wait_for_busy_streams_and_the_legacy_ordering() {
        let mut ctx = context();
        let buf = ctx.mem_alloc(1 << 20).expect("alloc");
        let blocking = ctx.stream_create(0, 0).expect("stream");
        let non_blocking = ctx
            .stream_create(vgpu_proto::cmd::stream_flags::NON_BLOCKING, 0)
            .expect("stream");
        // A host function holds the blocking stream.
        assert!(ctx
            .submit(blocking, Op::HostFunc { cookie: 1 }, None)
            .is_ok());
        // Its own later work, and the NULL stream's (legacy ordering), wait for it.
        let (t1, rx1) = ticket();
        assert!(ctx.submit(blocking, memset(buf, 4), Some(t1)).is_ok());
        let (t2, rx2) = ticket();
        assert!(ctx.submit(0, memset(buf + 64, 4), Some(t2)).is_ok());
        // A non-blocking stream does not.
        let (t3, rx3) = ticket();
        assert!(ctx
            .submit(non_blocking, memset(buf + 128, 4), Some(t3))
            .is_ok());
        let me = std::thread::current().id();
        assert_eq!(rx3.try_recv().ok(), Some((me, Status::SUCCESS)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(rx1.try_recv().is_err(), "ran before the host function");
        assert!(rx2.try_recv().is_err(), "the NULL stream did not wait");
        let (t, rx) = ticket();
        ctx.synchronize(t);
        assert!(rx.try_recv().is_err(), "synchronized with a stream busy");
        ctx.host_func_done(1);
        for rx in [rx1, rx2, rx] {
            let (thread, status) = rx.recv_timeout(Duration::from_secs(10)).expect("done");
            assert_eq!(status, Status::SUCCESS);
            assert_ne!(thread, me);
        }
        // Everything idle again (the workers count a job done just after it completes
        // its ticket): a synchronize is answered at once.
        for stream in [0, blocking, non_blocking] {
            while ctx.stream_query(stream) == Status::NOT_READY {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let (t, rx) = ticket();
        ctx.synchronize(t);
        assert_eq!(rx.try_recv().ok(), Some((me, Status::SUCCESS)));
    }
}
