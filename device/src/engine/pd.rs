//! Protection domains (spec §6): windows, the executor context, limits and the bookkeeping
//! PD_STATS reports.

use crate::exec::{Context, HostRange, WindowLease};
use crate::guest::GuestMemory;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use vgpu_os::lock;
use vgpu_proto::cmd::window_access;
use vgpu_proto::info::ObjectCounts;
use vgpu_proto::Status;

/// Default limits of a PD (spec §7.4, PD_CREATE).
pub const DEFAULT_MAX_OBJECTS: u32 = 65536;
/// Default number of windows.
pub const DEFAULT_MAX_WINDOWS: u32 = 64;

/// A window granted to a PD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First IOVA.
    pub iova: u64,
    /// Length.
    pub len: u64,
    /// [`window_access`] bits.
    pub access: u32,
}

/// One protection domain.
pub struct Pd {
    /// PD id.
    pub id: u32,
    ctx: Mutex<Box<dyn Context>>,
    windows: Mutex<HashMap<u32, (Window, Arc<WindowLease>)>>,
    /// Most windows.
    pub max_windows: u32,
    /// I/O queues bound to the PD.
    pub queues: Mutex<BTreeSet<u16>>,
    /// Device-memory quota.
    pub mem_quota: Mutex<u64>,
    /// Most live GPU objects (fixed at PD_CREATE; PD_SET_QUOTA keeps it).
    pub max_objects: u32,
    /// Module-cache domain (PD_CREATE): BY_HASH sees only this domain's images.
    pub cache_domain: u32,
    /// HOST_FUNC cookies waiting for their callback: cookie → (queue, cid).
    pub host_funcs: Mutex<HashMap<u64, (u16, u32)>>,
    mem: Arc<GuestMemory>,
}

impl Pd {
    /// A PD around an executor context.
    pub fn new(
        id: u32,
        ctx: Box<dyn Context>,
        max_windows: u32,
        limits: crate::exec::Limits,
        mem: Arc<GuestMemory>,
    ) -> Self {
        Pd {
            id,
            ctx: Mutex::new(ctx),
            windows: Mutex::new(HashMap::new()),
            max_windows,
            queues: Mutex::new(BTreeSet::new()),
            mem_quota: Mutex::new(limits.mem_quota),
            max_objects: limits.max_objects,
            cache_domain: 0,
            host_funcs: Mutex::new(HashMap::new()),
            mem,
        }
    }

    /// The executor context.
    pub fn ctx(&self) -> MutexGuard<'_, Box<dyn Context>> {
        lock(&self.ctx)
    }

    /// True while work submitted to the PD's streams is queued or running, or finished
    /// within `recent` (or someone holds the context right now: active enough).
    pub fn active_within(&self, recent: std::time::Duration) -> bool {
        match self.ctx.try_lock() {
            Ok(c) => c.active_within(recent),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().active_within(recent),
            Err(std::sync::TryLockError::WouldBlock) => true,
        }
    }

    /// WINDOW_REGISTER.
    pub fn add_window(&self, id: u32, w: Window) -> Result<(), Status> {
        let mut ws = lock(&self.windows);
        if ws.contains_key(&id) {
            return Err(Status::BAD_OBJECT);
        }
        if ws.len() as u32 >= self.max_windows {
            return Err(Status::BAD_ARGUMENT);
        }
        if !self.mem.snapshot().covers(w.iova, w.len, false) {
            return Err(Status::OUT_OF_BOUNDS);
        }
        ws.insert(id, (w, WindowLease::new()));
        Ok(())
    }

    /// WINDOW_UNREGISTER: returns once the device no longer accesses the window (spec
    /// §6.1); work that still names it fails with BAD_WINDOW.
    pub fn remove_window(&self, id: u32) -> Result<(), Status> {
        let (_, lease) = lock(&self.windows).remove(&id).ok_or(Status::BAD_OBJECT)?;
        lease.revoke();
        Ok(())
    }

    /// Revokes every window (PD_DESTROY, reset): nothing of the PD's work reaches guest
    /// memory afterwards, even work still winding down.
    pub fn revoke_windows(&self) {
        for (_, lease) in std::mem::take(&mut *lock(&self.windows)).into_values() {
            lease.revoke();
        }
    }

    /// Number of windows.
    pub fn window_count(&self) -> u32 {
        lock(&self.windows).len() as u32
    }

    /// Resolves `(window, offset, len)` for a read (`write` false) or a write by the device.
    pub fn resolve(
        &self,
        window: u32,
        offset: u64,
        len: u64,
        write: bool,
    ) -> Result<HostRange, Status> {
        let (w, lease) = lock(&self.windows)
            .get(&window)
            .map(|(w, l)| (*w, l.clone()))
            .ok_or(Status::BAD_WINDOW)?;
        let need = if write {
            window_access::WRITE
        } else {
            window_access::READ
        };
        if w.access & need == 0 {
            return Err(Status::OUT_OF_BOUNDS);
        }
        let end = offset.checked_add(len).ok_or(Status::OUT_OF_BOUNDS)?;
        if end > w.len {
            return Err(Status::OUT_OF_BOUNDS);
        }
        let snap = self.mem.snapshot();
        if !snap.covers(w.iova + offset, len, write) {
            return Err(Status::OUT_OF_BOUNDS);
        }
        Ok(HostRange::new(snap, w.iova + offset, len, lease))
    }

    /// PD_STATS for this PD.
    pub fn stats(&self) -> ObjectCounts {
        let c = self.ctx().counts();
        let mut o: ObjectCounts = bytemuck::Zeroable::zeroed();
        o.pd = self.id;
        o.pds = 1;
        o.mem_bytes = c.mem_bytes;
        o.mem_quota = *lock(&self.mem_quota);
        o.allocations = c.allocations;
        o.modules = c.modules;
        o.functions = c.functions;
        o.streams = c.streams;
        o.events = c.events;
        o.graphs = c.graphs;
        o.graph_execs = c.graph_execs;
        o.blas_handles = c.blas_handles;
        o.windows = self.window_count();
        o.queues = lock(&self.queues).len() as u32;
        o.pending = c.pending;
        o.gpu_util = c.gpu_util;
        o
    }
}

/// Adds `b` into the totals `a`.
pub fn add_counts(a: &mut ObjectCounts, b: &ObjectCounts) {
    a.pds += b.pds;
    a.mem_bytes += b.mem_bytes;
    a.allocations += b.allocations;
    a.modules += b.modules;
    a.functions += b.functions;
    a.streams += b.streams;
    a.events += b.events;
    a.graphs += b.graphs;
    a.graph_execs += b.graph_execs;
    a.blas_handles += b.blas_handles;
    a.windows += b.windows;
    a.queues += b.queues;
    a.pending += b.pending;
}
