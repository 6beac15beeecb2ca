//! The client side of one queue pair (spec §5): submitting entries, consuming completions,
//! and the two notification handshakes (doorbells and interrupts).
//!
//! # Submission
//!
//! [`QueuePair::submit`] holds the producer lock, waits (bounded) until the ring has room
//! for the entry and its inline payload slots (`SQ_TAIL − SQ_HEAD + slots ≤ D`), consuming
//! completions meanwhile so the device can make progress, writes the entry and the payload
//! slots (wrapping at the end of the ring), and publishes the new SQ_TAIL with release
//! ordering. Then, after a full fence, it loads PARKED and rings the doorbell eventfd if the
//! device is parked (§5.6).
//!
//! # Completions
//!
//! Completions are consumed in ring order by whichever thread holds the consumer lock: it
//! loads the publish word at offset 28 of the slot at CQ_HEAD with acquire ordering, stops
//! at the first slot whose PHASE differs from the one expected for that index, copies out
//! the rest, and after the batch publishes CQ_HEAD (release), fences, and rings the doorbell
//! if the device parked because the completion ring was full (PARKED bit 1, value 2).
//!
//! Each consumed completion is routed so that nothing is lost:
//! * CALLBACK completions (host functions) go to the callback list
//!   ([`QueuePair::take_callbacks`], [`QueuePair::wait_callbacks`]), for the thread that runs
//!   them;
//! * ASYNC_ERROR completions go to the event list ([`QueuePair::take_events`]), unless a
//!   thread waits for that cid;
//! * everything else is kept in a map keyed by cid until its waiter takes it.
//!
//! # Waiting
//!
//! One waiting thread at a time is the *sleeper*: it polls the completion ring for a short
//! spin, then arms the interrupt (IRQ_ARMED = 1, full fence, check the ring again) and sleeps
//! on the interrupt eventfd with `poll`, together with the control socket so that a driver
//! that hangs up is noticed at once. Other waiters sleep on a condition variable that is
//! signalled whenever completions are consumed or the sleeper leaves. Every wait is bounded
//! by the connection's timeout.

// Cids are small integers the client itself hands out: the Fx hash is enough for them and
// costs far less than SipHash on every completion.
// A panic while holding a lock leaves indices that are still consistent (every update is
// a single assignment), so later calls keep going: `vgpu_os::lock`.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use vgpu_os::lock;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vgpu_proto::cmd::{Payload, Request};
use vgpu_proto::queue::{cqe_flags, inline_slots, qcb, QueueLayout, CQE_SIZE, SQE_SIZE};
use vgpu_proto::Cqe;

use super::ClientError;
use vgpu_os::shm::SharedMemory;

/// How long a sleeper sleeps in one `poll` before it looks around again (a safety net; it
/// is normally woken by the interrupt eventfd).
const SLEEP_SLICE: Duration = Duration::from_millis(500);
/// How long a waiter spins before it yields its CPU between polls.
const SPIN_YIELD_AFTER: Duration = Duration::from_micros(5);
/// How long a non-sleeping waiter waits on the condition variable before it looks again.
const CONDVAR_SLICE: Duration = Duration::from_millis(100);

/// Everything the queue needs from the connection.
pub(crate) struct QueueParts {
    pub mem: SharedMemory,
    pub layout: QueueLayout,
    pub qid: u16,
    pub irq: OwnedFd,
    pub doorbell: OwnedFd,
    pub control: Arc<OwnedFd>,
    pub timeout: Duration,
    pub spin: Duration,
}

/// Producer state, behind the submission lock.
#[derive(Debug)]
struct SqState {
    /// Our SQ_TAIL (we are its only writer).
    tail: u32,
    /// The device's SQ_HEAD as last read: while it shows room, SQ_HEAD (a line the device
    /// writes on every command) need not be read again.
    head_seen: u32,
}

/// Consumer state, behind the completion lock.
#[derive(Debug, Default)]
struct CqState {
    /// Our CQ_HEAD (we are its only writer).
    head: u32,
    /// Completions not yet taken, by cid.
    done: HashMap<u32, Cqe>,
    /// Unclaimed async-error completions, in arrival order.
    events: Vec<Cqe>,
    /// Callback completions (host functions), in arrival order.
    callbacks: Vec<Cqe>,
    /// Cids some thread is waiting for (their ASYNC_ERROR completions go to `done`).
    waiting: HashSet<u32>,
    /// Cids whose waiter gave up; their late completions are dropped.
    abandoned: HashSet<u32>,
    /// A thread is sleeping on the interrupt eventfd.
    sleeper: bool,
    /// Threads waiting on `cq_changed` (a notification with none costs a futex syscall).
    condvar_waiters: usize,
}

/// The client side of one queue pair (spec §5). Shared between threads (`&self` methods);
/// the producer side and the consumer side each sit behind their own mutex.
pub struct QueuePair {
    mem: SharedMemory,
    layout: QueueLayout,
    qid: u16,
    irq: OwnedFd,
    doorbell: OwnedFd,
    control: Arc<OwnedFd>,
    timeout: Duration,
    spin: Duration,
    next_cid: AtomicU32,
    closed: AtomicBool,
    sq: Mutex<SqState>,
    cq: Mutex<CqState>,
    cq_changed: Condvar,
}

impl std::fmt::Debug for QueuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuePair")
            .field("qid", &self.qid)
            .field("depth", &self.layout.depth())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

fn remaining(deadline: Option<Instant>, cap: Duration) -> Duration {
    deadline.map_or(cap, |d| {
        d.saturating_duration_since(Instant::now()).min(cap)
    })
}

impl QueuePair {
    pub(crate) fn new(p: QueueParts) -> QueuePair {
        // The region is fresh (zeroed by the driver), so these are 0; reading them keeps the
        // client consistent with whatever the region holds.
        let tail = p.mem.load_u32(qcb::SQ_TAIL, Ordering::Acquire);
        let head = p.mem.load_u32(qcb::CQ_HEAD, Ordering::Acquire);
        let sq_head = p.mem.load_u32(qcb::SQ_HEAD, Ordering::Acquire);
        QueuePair {
            mem: p.mem,
            layout: p.layout,
            qid: p.qid,
            irq: p.irq,
            doorbell: p.doorbell,
            control: p.control,
            timeout: p.timeout,
            spin: p.spin,
            next_cid: AtomicU32::new(1),
            closed: AtomicBool::new(false),
            sq: Mutex::new(SqState {
                tail,
                head_seen: sq_head,
            }),
            cq: Mutex::new(CqState {
                head,
                ..CqState::default()
            }),
            cq_changed: Condvar::new(),
        }
    }

    /// The queue id (the driver's doorbell index).
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Entries per ring.
    pub fn depth(&self) -> u32 {
        self.layout.depth()
    }

    /// The largest inline payload an entry may carry on this queue.
    pub fn max_inline(&self) -> u32 {
        self.layout.max_inline()
    }

    /// The bound on every wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Marks the queue closed: every later and pending call fails with
    /// [`ClientError::Disconnected`]. Called when the connection is dropped.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _guard = lock(&self.cq);
        self.cq_changed.notify_all();
    }

    fn check_alive(&self) -> Result<(), ClientError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ClientError::Disconnected);
        }
        match self.mem.load_u32(qcb::QUEUE_ERROR, Ordering::Acquire) {
            0 => Ok(()),
            e => Err(ClientError::QueueStopped(e)),
        }
    }

    fn alloc_cid(&self) -> u32 {
        loop {
            let cid = self.next_cid.fetch_add(1, Ordering::Relaxed);
            if cid != 0 {
                return cid;
            }
        }
    }

    /// Writes 1 to the doorbell eventfd (spec §9.6).
    fn ring(&self) -> Result<(), ClientError> {
        loop {
            match nix::unistd::write(self.doorbell.as_fd(), &1u64.to_ne_bytes()) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                // The counter is saturated: the doorbell is already pending.
                Err(Errno::EAGAIN) => return Ok(()),
                Err(source) => {
                    return Err(ClientError::Io {
                        op: "writing the doorbell eventfd",
                        source,
                    })
                }
            }
        }
    }

    /// Submits `req` with its inline payload `inline` (empty unless `req.payload` is
    /// [`Payload::Inline`] with exactly `inline.len()` bytes), and returns the cid it
    /// assigned (`req.cid` is ignored). Waits, at most the connection's timeout, while the
    /// ring is full.
    ///
    /// A completion of the entry (a sync command, a NOTIFY command) is kept until
    /// [`QueuePair::wait`] takes it; use [`QueuePair::call`] to submit and wait in one step.
    pub fn submit(&self, req: Request, inline: &[u8]) -> Result<u32, ClientError> {
        self.submit_inner(req, inline, false, deadline_after(self.timeout))
    }

    /// Submits `req` (as [`QueuePair::submit`]) and waits for its completion, at most the
    /// connection's timeout in all. Completions of other commands that arrive meanwhile are
    /// kept for their waiters and for [`QueuePair::take_events`].
    pub fn call(&self, req: Request, inline: &[u8]) -> Result<Cqe, ClientError> {
        let deadline = deadline_after(self.timeout);
        let cid = self.submit_inner(req, inline, true, deadline)?;
        self.wait_inner(cid, deadline)
    }

    /// Waits for the completion of `cid` (from [`QueuePair::submit`]), at most the
    /// connection's timeout. Only for commands that post a completion: sync commands and
    /// async ones submitted with NOTIFY.
    pub fn wait(&self, cid: u32) -> Result<Cqe, ClientError> {
        {
            let mut st = lock(&self.cq);
            st.waiting.insert(cid);
            // An ASYNC_ERROR completion that arrived before we registered is in the events.
            if let Some(i) = st.events.iter().position(|c| c.cid == cid) {
                let c = st.events.remove(i);
                st.waiting.remove(&cid);
                return Ok(c);
            }
        }
        self.wait_inner(cid, deadline_after(self.timeout))
    }

    /// Takes the unclaimed async-error (ASYNC_ERROR) completions, in arrival order, after
    /// consuming whatever the completion ring holds.
    pub fn take_events(&self) -> Vec<Cqe> {
        let mut st = lock(&self.cq);
        // Errors here (a stopped queue) surface in the next call; events are still returned.
        self.reap(&mut st);
        std::mem::take(&mut st.events)
    }

    /// Waits up to `timeout` (capped by the connection's timeout) until at least one
    /// async-error completion is pending, and takes them all (empty on timeout).
    pub fn wait_events(&self, timeout: Duration) -> Result<Vec<Cqe>, ClientError> {
        self.wait_list(timeout, |st| &mut st.events)
    }

    /// Takes the pending callback (CALLBACK) completions, in arrival order, after consuming
    /// whatever the completion ring holds.
    pub fn take_callbacks(&self) -> Vec<Cqe> {
        let mut st = lock(&self.cq);
        self.reap(&mut st);
        std::mem::take(&mut st.callbacks)
    }

    /// Waits up to `timeout` (capped by the connection's timeout) until at least one callback
    /// completion is pending, and takes them all (empty on timeout).
    pub fn wait_callbacks(&self, timeout: Duration) -> Result<Vec<Cqe>, ClientError> {
        self.wait_list(timeout, |st| &mut st.callbacks)
    }

    fn wait_list(
        &self,
        timeout: Duration,
        list: impl Fn(&mut CqState) -> &mut Vec<Cqe>,
    ) -> Result<Vec<Cqe>, ClientError> {
        let deadline = deadline_after(timeout.min(self.timeout));
        match self.wait_for(deadline, |st| {
            let l = list(st);
            (!l.is_empty()).then(|| std::mem::take(l))
        }) {
            Ok(v) => Ok(v),
            Err(ClientError::Timeout { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn submit_inner(
        &self,
        mut req: Request,
        inline: &[u8],
        register: bool,
        deadline: Option<Instant>,
    ) -> Result<u32, ClientError> {
        match req.payload {
            Payload::Inline { len } => {
                if len as usize != inline.len() || len == 0 {
                    return Err(ClientError::BadRequest(
                        "the inline payload's length differs from the request's payload_len",
                    ));
                }
            }
            Payload::None | Payload::Window { .. } => {
                if !inline.is_empty() {
                    return Err(ClientError::BadRequest(
                        "inline bytes given for a request without an inline payload",
                    ));
                }
            }
        }
        let max = self.layout.max_inline();
        if inline.len() > max as usize {
            return Err(ClientError::InlineTooLong {
                len: inline.len(),
                max,
            });
        }
        self.check_alive()?;
        let slots = 1 + inline_slots(inline.len() as u32);
        let cid = self.alloc_cid();
        req.cid = cid;
        let sqe = req.encode();
        if register {
            lock(&self.cq).waiting.insert(cid);
        }
        let r = self.publish(&sqe, inline, slots, deadline);
        if let Err(e) = r {
            if register {
                let mut st = lock(&self.cq);
                st.waiting.remove(&cid);
            }
            return Err(e);
        }
        Ok(cid)
    }

    fn publish(
        &self,
        sqe: &vgpu_proto::Sqe,
        inline: &[u8],
        slots: u32,
        deadline: Option<Instant>,
    ) -> Result<(), ClientError> {
        let mut sq = lock(&self.sq);
        if sq.tail.wrapping_sub(sq.head_seen) + slots > self.layout.depth() {
            sq.head_seen = self.wait_for_room(sq.tail, slots, deadline)?;
        }
        let tail = sq.tail;
        let l = self.layout;
        self.mem
            .write_bytes(l.sqe_offset(tail), bytemuck::bytes_of(sqe))
            .expect("submission slot inside the queue region");
        for (i, chunk) in inline.chunks(SQE_SIZE).enumerate() {
            let off = l.sqe_offset(tail.wrapping_add(1 + i as u32));
            self.mem
                .write_bytes(off, chunk)
                .expect("payload slot inside the queue region");
            if chunk.len() < SQE_SIZE {
                self.mem
                    .fill(off + chunk.len(), SQE_SIZE - chunk.len(), 0)
                    .expect("payload slot inside the queue region");
            }
        }
        let new_tail = tail.wrapping_add(slots);
        // Release: the entry and its payload are visible before the new tail (spec §5.5).
        self.mem
            .store_u32(qcb::SQ_TAIL, new_tail, Ordering::Release);
        sq.tail = new_tail;
        // Store SQ_TAIL, full fence, load PARKED (spec §5.6).
        fence(Ordering::SeqCst);
        let parked = self.mem.load_u32(qcb::PARKED, Ordering::Relaxed);
        drop(sq);
        if parked != 0 {
            self.ring()?;
        }
        Ok(())
    }

    /// Waits until `slots` slots are free after `tail`, consuming completions meanwhile;
    /// returns the SQ_HEAD that showed the room.
    fn wait_for_room(
        &self,
        tail: u32,
        slots: u32,
        deadline: Option<Instant>,
    ) -> Result<u32, ClientError> {
        let depth = self.layout.depth();
        let mut round = 0u32;
        loop {
            let head = self.mem.load_u32(qcb::SQ_HEAD, Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            if used > depth {
                return Err(ClientError::Protocol(format!(
                    "the device's SQ_HEAD ({head}) is not within {depth} of SQ_TAIL ({tail})"
                )));
            }
            if used + slots <= depth {
                return Ok(head);
            }
            self.check_alive()?;
            if expired(deadline) {
                return Err(ClientError::Timeout {
                    what: "waiting for room in the submission ring",
                    waited: self.timeout,
                });
            }
            {
                let mut st = lock(&self.cq);
                self.reap(&mut st);
            }
            // Back off: spin briefly, then yield, then sleep up to 1 ms.
            round = round.saturating_add(1);
            if round < 64 {
                std::hint::spin_loop();
            } else if round < 128 {
                std::thread::yield_now();
            } else {
                let us = u64::from(round - 127).min(1000);
                std::thread::sleep(Duration::from_micros(us));
            }
        }
    }

    /// Consumes every published completion into the routing tables, publishes CQ_HEAD,
    /// and rings the doorbell if the device parked on a full completion ring. Returns how
    /// many completions it consumed.
    fn reap(&self, st: &mut CqState) -> usize {
        let l = self.layout;
        let mut n = 0usize;
        loop {
            let off = l.cqe_offset(st.head);
            // Acquire: the bytes before the publish word are visible once PHASE matches.
            let word = self
                .mem
                .load_u32(off + Cqe::PUBLISH_OFFSET, Ordering::Acquire);
            let phase = word as u16 & cqe_flags::PHASE != 0;
            if phase != l.phase(st.head) {
                break;
            }
            let mut raw = [0u8; CQE_SIZE];
            self.mem
                .read_bytes(off, &mut raw[..Cqe::PUBLISH_OFFSET])
                .expect("completion slot inside the queue region");
            raw[Cqe::PUBLISH_OFFSET..].copy_from_slice(&word.to_le_bytes());
            let cqe: Cqe = bytemuck::pod_read_unaligned(&raw);
            st.head = st.head.wrapping_add(1);
            n += 1;
            self.route(st, cqe);
        }
        if n > 0 {
            self.mem.store_u32(qcb::CQ_HEAD, st.head, Ordering::Release);
            // Store CQ_HEAD, full fence, load PARKED (spec §5.6).
            fence(Ordering::SeqCst);
            if self.mem.load_u32(qcb::PARKED, Ordering::Relaxed) & qcb::PARKED_CQ_FULL != 0 {
                if let Err(e) = self.ring() {
                    log::warn!("queue {}: cannot ring the doorbell: {e}", self.qid);
                }
            }
            if st.condvar_waiters > 0 {
                self.cq_changed.notify_all();
            }
        }
        n
    }

    fn route(&self, st: &mut CqState, cqe: Cqe) {
        let cid = cqe.cid;
        if cqe.flags & cqe_flags::CALLBACK != 0 {
            st.callbacks.push(cqe);
        } else if st.abandoned.remove(&cid) {
            log::debug!(
                "queue {}: dropping the late completion of cid {cid} (status {:?})",
                self.qid,
                cqe.status()
            );
        } else if cqe.flags & cqe_flags::ASYNC_ERROR != 0 && !st.waiting.contains(&cid) {
            st.events.push(cqe);
        } else if let Some(old) = st.done.insert(cid, cqe) {
            log::warn!(
                "queue {}: two completions for cid {cid}; the first ({:?}) is lost",
                self.qid,
                old.status()
            );
        }
    }

    fn wait_inner(&self, cid: u32, deadline: Option<Instant>) -> Result<Cqe, ClientError> {
        let r = self.wait_for(deadline, |st| {
            let c = st.done.remove(&cid)?;
            st.waiting.remove(&cid);
            Some(c)
        });
        if r.is_err() {
            let mut st = lock(&self.cq);
            st.waiting.remove(&cid);
            st.abandoned.insert(cid);
        }
        r
    }

    /// Waits until `take` finds what it wants in the consumer state (see the module docs).
    fn wait_for<T>(
        &self,
        deadline: Option<Instant>,
        mut take: impl FnMut(&mut CqState) -> Option<T>,
    ) -> Result<T, ClientError> {
        let mut st = lock(&self.cq);
        loop {
            self.reap(&mut st);
            if let Some(v) = take(&mut st) {
                return Ok(v);
            }
            self.check_alive()?;
            if expired(deadline) {
                return Err(ClientError::Timeout {
                    what: "waiting for a completion",
                    waited: self.timeout,
                });
            }
            if st.sleeper {
                let slice = remaining(deadline, CONDVAR_SLICE);
                st.condvar_waiters += 1;
                st = self
                    .cq_changed
                    .wait_timeout(st, slice)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                st.condvar_waiters -= 1;
                continue;
            }
            st.sleeper = true;
            drop(st);
            let r = self.sleep(deadline, &mut take);
            st = lock(&self.cq);
            st.sleeper = false;
            if st.condvar_waiters > 0 {
                self.cq_changed.notify_all();
            }
            match r {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The sleeper's turn: spin on the ring, then arm the interrupt and sleep on it once.
    /// Returns what `take` found, or None when the caller should look again.
    fn sleep<T>(
        &self,
        deadline: Option<Instant>,
        take: &mut impl FnMut(&mut CqState) -> Option<T>,
    ) -> Result<Option<T>, ClientError> {
        // Spin: poll the ring for a short while; after the first few microseconds, let other
        // threads run between polls (on a small machine, the device's stream thread may need
        // this very CPU to finish the work being waited for).
        let start = Instant::now();
        let spin_end = start + self.spin;
        let yield_from = start + SPIN_YIELD_AFTER;
        let mut yielding = false;
        let mut polls = 0u32;
        loop {
            {
                let mut st = lock(&self.cq);
                self.reap(&mut st);
                if let Some(v) = take(&mut st) {
                    return Ok(Some(v));
                }
            }
            // The clock costs more than a poll: read it every 32 polls (a client that does
            // not spin at all arms the interrupt after the first poll).
            polls = polls.wrapping_add(1);
            if self.spin.is_zero() {
                break;
            }
            if yielding || polls % 32 == 0 {
                let now = Instant::now();
                if now >= spin_end {
                    break;
                }
                yielding = now >= yield_from;
            }
            if yielding {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // Arm: store IRQ_ARMED = 1, full fence, check the ring again (spec §5.6).
        self.mem.store_u32(qcb::IRQ_ARMED, 1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        {
            let mut st = lock(&self.cq);
            let n = self.reap(&mut st);
            let found = take(&mut st);
            if found.is_some() || n > 0 {
                drop(st);
                self.mem.store_u32(qcb::IRQ_ARMED, 0, Ordering::Relaxed);
                return Ok(found);
            }
        }
        let r = self.sleep_on_interrupt(deadline);
        // Disarm in case we woke for another reason; harmless if the device already did.
        self.mem.store_u32(qcb::IRQ_ARMED, 0, Ordering::Relaxed);
        r.map(|()| None)
    }

    /// Sleeps on the interrupt eventfd (and the control socket, for hang-ups) until an
    /// interrupt, the deadline, or one sleep slice.
    fn sleep_on_interrupt(&self, deadline: Option<Instant>) -> Result<(), ClientError> {
        let wait = remaining(deadline, SLEEP_SLICE);
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX).max(1);
        let mut fds = [
            PollFd::new(self.irq.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.control.as_fd(), PollFlags::empty()),
        ];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(()),
            Err(source) => {
                return Err(ClientError::Io {
                    op: "poll on the interrupt eventfd",
                    source,
                })
            }
        }
        let irq = fds[0].revents().unwrap_or(PollFlags::empty());
        let ctl = fds[1].revents().unwrap_or(PollFlags::empty());
        if ctl.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            self.closed.store(true, Ordering::SeqCst);
            return Err(ClientError::Disconnected);
        }
        if irq.contains(PollFlags::POLLIN) {
            let mut buf = [0u8; 8];
            match nix::unistd::read(self.irq.as_fd(), &mut buf) {
                Ok(_) | Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
                Err(source) => {
                    return Err(ClientError::Io {
                        op: "reading the interrupt eventfd",
                        source,
                    })
                }
            }
        } else if irq.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
            return Err(ClientError::Io {
                op: "poll on the interrupt eventfd",
                source: Errno::EBADF,
            });
        }
        Ok(())
    }
}
