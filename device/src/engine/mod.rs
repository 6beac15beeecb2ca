//! The queue engine: the admin queue, protection domains and I/O queues (spec §4–§7).
//!
//! Every queue has a worker thread (see [`queue::worker`]) that polls while busy and parks
//! with notification suppression when idle. The admin worker runs admin commands itself;
//! I/O workers decode each entry, gate it on the PD's sticky error, and either answer at
//! once or hand stream-ordered work to the PD's executor context.

pub mod cache;
mod io;
pub mod pd;
pub mod queue;

use crate::exec::{CallbackSink, Executor, Limits};
use crate::guest::GuestMemory;
use crate::msix::Msix;
use pd::{Pd, Window, DEFAULT_MAX_OBJECTS, DEFAULT_MAX_WINDOWS};
use queue::{Completion, Handler, Queue, QueueFault, Taken};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use vgpu_os::lock;
use vgpu_proto::cmd::{DecodeContext, Request};
use vgpu_proto::info::ObjectCounts;
use vgpu_proto::opcode::QueueKind;
use vgpu_proto::queue::{cqe_flags, QueueLayout};
use vgpu_proto::regs::{caps, fatal};
use vgpu_proto::{Command, Status};

/// What the engine needs from the device around it.
pub struct Env {
    /// Guest memory.
    pub mem: Arc<GuestMemory>,
    /// Interrupts.
    pub msix: Arc<Msix>,
    /// The executor.
    pub executor: Arc<dyn Executor>,
    /// DRV_FEATURES accepted at enable.
    pub features: u64,
    /// Bus Master Enable, kept up to date by the device.
    pub bus_master: Arc<AtomicBool>,
    /// Called when the device must enter the fatal state.
    pub on_fatal: Box<dyn Fn(u32) + Send + Sync>,
}

struct Running {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
    pd: Option<u32>,
}

pub(crate) struct Inner {
    env: Env,
    pds: Mutex<BTreeMap<u32, Arc<Pd>>>,
    queues: Mutex<HashMap<u16, Running>>,
    next_pd: AtomicU32,
    me: Weak<Inner>,
    modules: Mutex<cache::ModuleCache>,
}

/// A running engine: exists between ENABLE and reset.
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Starts the admin queue at `admin_base` with 2^`depth_log2` entries.
    pub fn start(env: Env, admin_base: u64, depth_log2: u8) -> Result<Engine, u32> {
        let layout = QueueLayout::new(depth_log2, caps::MAX_ADMIN_DEPTH_LOG2)
            .ok_or(fatal::BAD_ADMIN_CONFIG)?;
        if admin_base % vgpu_proto::queue::QUEUE_ALIGN != 0 {
            return Err(fatal::BAD_ADMIN_CONFIG);
        }
        let inner = Arc::new_cyclic(|me| Inner {
            env,
            pds: Mutex::new(BTreeMap::new()),
            queues: Mutex::new(HashMap::new()),
            next_pd: AtomicU32::new(1),
            me: me.clone(),
            modules: Mutex::new(cache::ModuleCache::default()),
        });
        let q = Arc::new(Queue::new(
            0,
            0,
            admin_base,
            layout,
            inner.env.mem.clone(),
            inner.env.msix.clone(),
        ));
        if !q.region_mapped() {
            return Err(fatal::ADMIN_DMA_FAULT);
        }
        inner.start_queue(q, None);
        Ok(Engine { inner })
    }

    /// Doorbell of queue `qid`.
    pub fn ring(&self, qid: u16) {
        if let Some(r) = lock(&self.inner.queues).get(&qid) {
            r.queue.ring();
        }
    }

    /// Number of I/O queues.
    pub fn io_queues(&self) -> u32 {
        lock(&self.inner.queues).len().saturating_sub(1) as u32
    }

    /// Device totals of PD_STATS.
    pub fn totals(&self) -> ObjectCounts {
        self.inner.totals()
    }

    /// Makes the device let go of guest memory at once: every window revoked (accesses
    /// in progress finish first), every queue asked to stop, so that none posts again.
    /// Nothing waits for work to end; [`shutdown`](Self::shutdown) does.
    pub fn quiesce(&self) {
        for r in lock(&self.inner.queues).values() {
            r.queue.request_stop();
        }
        for pd in lock(&self.inner.pds).values() {
            pd.revoke_windows();
        }
    }

    /// Stops every queue and destroys every PD (reset, disable, disconnect); the PDs'
    /// contexts are torn down side by side, so the whole takes at most one context's
    /// bounded teardown.
    pub fn shutdown(self) {
        self.quiesce();
        let qids: Vec<u16> = lock(&self.inner.queues).keys().copied().collect();
        for q in qids {
            self.inner.stop_queue(q);
        }
        let pds: Vec<Arc<Pd>> = std::mem::take(&mut *lock(&self.inner.pds))
            .into_values()
            .collect();
        std::thread::scope(|s| {
            for pd in &pds {
                s.spawn(move || pd.ctx().reset());
            }
        });
    }
}

impl Inner {
    fn arc(&self) -> Arc<Inner> {
        self.me
            .upgrade()
            .expect("engine is alive while its queues run")
    }

    fn start_queue(&self, q: Arc<Queue>, pd: Option<u32>) {
        // The worker holds its PD, so that an entry needs no lookup of it.
        let handler: Arc<dyn Handler> = Arc::new(Worker {
            engine: self.arc(),
            pd: pd.and_then(|id| lock(&self.pds).get(&id).cloned()),
        });
        let qc = q.clone();
        let name = format!("vgpu-queue-{}", q.qid);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || queue::worker(qc, handler));
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                log::error!("cannot start queue {} worker: {e}", q.qid);
                None
            }
        };
        lock(&self.queues).insert(
            q.qid,
            Running {
                queue: q,
                thread,
                pd,
            },
        );
    }

    fn stop_queue(&self, qid: u16) -> Option<u32> {
        let r = lock(&self.queues).remove(&qid)?;
        r.queue.request_stop();
        if let Some(t) = r.thread {
            if t.thread().id() != std::thread::current().id() && t.join().is_err() {
                log::error!("queue {qid} worker panicked");
            }
        }
        if let Some(pd) = r.pd.and_then(|p| lock(&self.pds).get(&p).cloned()) {
            lock(&pd.queues).remove(&qid);
        }
        r.pd
    }

    fn pd(&self, id: u32) -> Result<Arc<Pd>, Status> {
        lock(&self.pds).get(&id).cloned().ok_or(Status::BAD_OBJECT)
    }

    fn totals(&self) -> ObjectCounts {
        let mut t: ObjectCounts = bytemuck::Zeroable::zeroed();
        t.mem_quota = self.env.executor.device_info().total_mem;
        for pd in lock(&self.pds).values() {
            pd::add_counts(&mut t, &pd.stats());
        }
        t.gpu_util = self.env.executor.utilization();
        t
    }

    fn post(q: &Queue, c: Completion) {
        if !q.post(c) {
            log::warn!(
                "queue {}: completion for cid {} could not be posted",
                q.qid,
                c.cid
            );
        }
    }

    fn admin(&self, q: &Arc<Queue>, req: Request) {
        let op = req.command.opcode() as u16;
        let mut c = Completion::status(req.cid, op, Status::SUCCESS);
        let r: Result<(u64, u64), Status> = match req.command {
            Command::ADMIN_NOP(_) => Ok((0, 0)),
            Command::IDENTIFY(a) => {
                let info = self.env.executor.device_info();
                self.env
                    .mem
                    .snapshot()
                    .write(a.iova, bytemuck::bytes_of(&info))
                    .map(|_| (4096, 0))
                    .map_err(|_| Status::OUT_OF_BOUNDS)
            }
            Command::PD_CREATE(a) => self
                .pd_create(a.mem_quota, a.max_objects, a.max_windows, a.cache_domain)
                .map(|id| (u64::from(id), 0)),
            Command::PD_DESTROY(a) => self.pd_destroy(a.pd).map(|_| (0, 0)),
            Command::PD_SET_QUOTA(a) => self.pd(a.pd).map(|pd| {
                let quota = self.quota(a.mem_quota);
                *lock(&pd.mem_quota) = quota;
                pd.ctx().set_limits(Limits {
                    mem_quota: quota,
                    max_objects: pd.max_objects,
                });
                (0, 0)
            }),
            Command::PD_STATS(a) => {
                let stats = if a.pd == 0 {
                    Ok(self.totals())
                } else {
                    self.pd(a.pd).map(|p| p.stats())
                };
                stats.and_then(|s| {
                    self.env
                        .mem
                        .snapshot()
                        .write(a.iova, bytemuck::bytes_of(&s))
                        .map(|_| (96, 0))
                        .map_err(|_| Status::OUT_OF_BOUNDS)
                })
            }
            Command::WINDOW_REGISTER(a) => self
                .pd(a.pd)
                .and_then(|pd| {
                    pd.add_window(
                        a.window,
                        Window {
                            iova: a.iova,
                            len: a.len,
                            access: a.access,
                        },
                    )
                })
                .map(|_| (0, 0)),
            Command::WINDOW_UNREGISTER(a) => self
                .pd(a.pd)
                .and_then(|pd| pd.remove_window(a.window))
                .map(|_| (0, 0)),
            Command::QUEUE_CREATE(a) => self
                .queue_create(a.pd, a.qid, a.vector, a.depth_log2, a.base)
                .map(|_| (0, 0)),
            Command::QUEUE_DELETE(a) => match self.stop_queue(a.qid) {
                Some(_) => Ok((0, 0)),
                None => Err(Status::BAD_OBJECT),
            },
            _ => Err(Status::WRONG_QUEUE),
        };
        match r {
            Ok((r0, r1)) => (c.result0, c.result1) = (r0, r1),
            Err(s) => c.status = s,
        }
        Self::post(q, c);
    }

    /// A quota as PD_CREATE and PD_SET_QUOTA take it: 0 is the whole device, and more than
    /// the device is capped to it.
    fn quota(&self, quota: u64) -> u64 {
        let total = self.env.executor.device_info().total_mem;
        if quota == 0 {
            total
        } else {
            quota.min(total)
        }
    }

    fn pd_create(
        &self,
        quota: u64,
        max_objects: u32,
        max_windows: u32,
        cache_domain: u32,
    ) -> Result<u32, Status> {
        let quota = self.quota(quota);
        let max_objects = if max_objects == 0 {
            DEFAULT_MAX_OBJECTS
        } else {
            max_objects
        };
        let max_windows = if max_windows == 0 {
            DEFAULT_MAX_WINDOWS
        } else {
            max_windows
        };
        let id = self.next_pd.fetch_add(1, Ordering::Relaxed);
        let sink: Arc<dyn CallbackSink> = Arc::new(HostFuncSink {
            engine: self.me.clone(),
            pd: id,
        });
        let limits = Limits {
            mem_quota: quota,
            max_objects,
        };
        let ctx = self
            .env
            .executor
            .new_context(id, cache_domain, limits, sink)?;
        let mut pd = Pd::new(id, ctx, max_windows, limits, self.env.mem.clone());
        pd.cache_domain = cache_domain;
        let pd = Arc::new(pd);
        lock(&self.pds).insert(id, pd);
        log::info!(
            "PD {id} created (quota {quota} bytes, {max_objects} objects, {max_windows} windows)"
        );
        Ok(id)
    }

    fn pd_destroy(&self, id: u32) -> Result<(), Status> {
        let pd = self.pd(id)?;
        let qids: Vec<u16> = lock(&pd.queues).iter().copied().collect();
        for q in qids {
            self.stop_queue(q);
        }
        lock(&self.pds).remove(&id);
        pd.revoke_windows();
        pd.ctx().reset();
        log::info!("PD {id} destroyed");
        Ok(())
    }

    fn queue_create(
        &self,
        pd_id: u32,
        qid: u16,
        vector: u16,
        depth_log2: u8,
        base: u64,
    ) -> Result<(), Status> {
        let pd = self.pd(pd_id)?;
        if lock(&self.queues).contains_key(&qid) {
            return Err(Status::BAD_OBJECT);
        }
        let layout =
            QueueLayout::new(depth_log2, caps::MAX_IO_DEPTH_LOG2).ok_or(Status::BAD_ARGUMENT)?;
        let q = Arc::new(Queue::new(
            qid,
            vector,
            base,
            layout,
            self.env.mem.clone(),
            self.env.msix.clone(),
        ));
        if !q.region_mapped() {
            return Err(Status::OUT_OF_BOUNDS);
        }
        lock(&pd.queues).insert(qid);
        self.start_queue(q, Some(pd_id));
        Ok(())
    }

    fn queue(&self, qid: u16) -> Option<Arc<Queue>> {
        lock(&self.queues).get(&qid).map(|r| r.queue.clone())
    }
}

/// What a queue's worker thread serves entries with: the engine, and the PD an I/O queue
/// is bound to (None for the admin queue).
struct Worker {
    engine: Arc<Inner>,
    pd: Option<Arc<Pd>>,
}

impl Handler for Worker {
    fn handle(&self, q: &Arc<Queue>, taken: Taken) {
        self.engine.handle(q, self.pd.as_ref(), taken)
    }

    fn expects_more(&self) -> bool {
        self.engine.env.executor.poll_while_busy()
            && self
                .pd
                .as_ref()
                .is_some_and(|pd| pd.active_within(queue::SPIN))
    }

    fn dma_allowed(&self) -> bool {
        self.engine.env.bus_master.load(Ordering::Acquire)
    }

    fn fault(&self, q: &Arc<Queue>, fault: QueueFault) {
        self.engine.fault(q, fault)
    }
}

impl Inner {
    /// Serves one entry of queue `q` (bound to `pd` unless it is the admin queue).
    fn handle(&self, q: &Arc<Queue>, pd: Option<&Arc<Pd>>, taken: Taken) {
        let kind = if q.qid == 0 {
            QueueKind::Admin
        } else {
            QueueKind::Io
        };
        let ctx = DecodeContext {
            queue: kind,
            features: self.env.features,
            max_inline: q.layout.max_inline(),
        };
        let decoded = Request::decode(&taken.sqe, &ctx).and_then(|r| taken.inline.map(|p| (r, p)));
        let (req, inline) = match decoded {
            Ok(v) => v,
            Err(e) => {
                log::warn!(
                    "queue {}: entry cid {} opcode {:#06x} refused: {e}",
                    q.qid,
                    taken.sqe.cid,
                    taken.sqe.opcode
                );
                let mut c = Completion::status(taken.sqe.cid, taken.sqe.opcode, e.status());
                let asynchronous = vgpu_proto::Opcode::from_u16(taken.sqe.opcode)
                    .is_some_and(|o| o.info().completion == vgpu_proto::opcode::Completion::Async);
                if asynchronous {
                    c.flags |= cqe_flags::ASYNC_ERROR;
                }
                return Self::post(q, c);
            }
        };
        if q.qid == 0 {
            return self.admin(q, req);
        }
        match pd {
            Some(pd) => io::execute(self, q, pd, req, inline),
            None => Self::post(
                q,
                Completion::status(req.cid, req.command.opcode() as u16, Status::BAD_OBJECT),
            ),
        }
    }

    fn fault(&self, q: &Arc<Queue>, fault: QueueFault) {
        log::error!("queue {} stopped: {fault:?}", q.qid);
        if q.qid == 0 {
            (self.env.on_fatal)(fatal::ADMIN_DMA_FAULT);
            let io: Vec<u16> = lock(&self.queues)
                .keys()
                .copied()
                .filter(|&id| id != 0)
                .collect();
            for id in io {
                self.stop_queue(id);
            }
        }
    }
}

/// Routes host-function callbacks of one PD to the queue that submitted them.
struct HostFuncSink {
    engine: Weak<Inner>,
    pd: u32,
}

impl CallbackSink for HostFuncSink {
    fn host_func(&self, cookie: u64) {
        let Some(engine) = self.engine.upgrade() else {
            return;
        };
        let Ok(pd) = engine.pd(self.pd) else { return };
        let Some((qid, cid)) = lock(&pd.host_funcs).remove(&cookie) else {
            log::warn!("PD {}: host function {cookie:#x} has no queue", self.pd);
            return;
        };
        if let Some(q) = engine.queue(qid) {
            let mut c =
                Completion::status(cid, vgpu_proto::Opcode::HOST_FUNC as u16, Status::SUCCESS);
            c.result0 = cookie;
            c.flags = cqe_flags::CALLBACK;
            Inner::post(&q, c);
        }
    }
}
