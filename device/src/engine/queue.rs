//! One queue pair in guest memory (spec §5): reading submissions, posting completions,
//! parking with notification suppression, and the worker thread that drives it.

use crate::guest::{GuestMemory, Snapshot, View};
use crate::msix::Msix;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use vgpu_proto::queue::{
    cqe_flags, inline_published, inline_slots, qcb, Cqe, QueueLayout, Sqe, SQE_SIZE,
};
use vgpu_proto::{DecodeError, Status};

/// How long a worker keeps polling an empty ring before it parks.
pub const SPIN: Duration = Duration::from_micros(50);
/// How long a worker keeps polling an empty ring, yielding its CPU between polls, while
/// the work its client submitted is still running or finished within [`SPIN`]
/// ([`Handler::expects_more`]): the client posts again as soon as that work completes (a
/// decode step: read the logits, synchronize, post the next token), and a parked worker
/// costs a doorbell and a wake-up each time.
pub const SPIN_BUSY: Duration = Duration::from_millis(10);
/// How long an idle worker polls without giving up its CPU (see [`SPIN`]).
const YIELD_AFTER: Duration = Duration::from_micros(5);
/// How long a parked worker (or a completion waiting for room) sleeps before it looks at
/// the ring again, doorbell or not.
const PARK_TICK: Duration = Duration::from_millis(50);

/// A completion to post.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Command id.
    pub cid: u32,
    /// Opcode of the command.
    pub opcode: u16,
    /// Status.
    pub status: Status,
    /// First result.
    pub result0: u64,
    /// Second result.
    pub result1: u64,
    /// CALLBACK / ASYNC_ERROR flags (PHASE is added when posting).
    pub flags: u16,
}

impl Completion {
    /// A completion with a status and no results.
    pub fn status(cid: u32, opcode: u16, status: Status) -> Self {
        Completion {
            cid,
            opcode,
            status,
            result0: 0,
            result1: 0,
            flags: 0,
        }
    }
}

/// Why a queue stopped on its own.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueFault {
    /// The queue region is no longer mapped.
    Dma,
    /// The client's indices are corrupt (QUEUE_ERROR = OVERRUN).
    Overrun,
}

/// A doorbell flag one kind of waiter sleeps on.
#[derive(Default)]
struct Bell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Bell {
    /// Waits for the bell up to `timeout`; true if it rang (the ring is consumed).
    fn wait(&self, timeout: Duration) -> bool {
        let mut rung = self.rung.lock().unwrap_or_else(|p| p.into_inner());
        if !*rung {
            rung = self
                .cv
                .wait_timeout(rung, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        std::mem::replace(&mut *rung, false)
    }
}

/// The completion ring's producer side: its index, and the snapshot of guest memory it
/// last used with the generation of the mappings it was taken at (reused while they hold).
#[derive(Default)]
struct Producer {
    tail: u32,
    /// CQ_HEAD as last read: while it shows room, CQ_HEAD need not be read again.
    head_seen: u32,
    snapshot: Option<(u64, Snapshot)>,
}

/// A snapshot no older than the current mappings: `cached` if they have not changed since
/// it was taken, else a new one (cached in its place).
fn fresh<'a>(cached: &'a mut Option<(u64, Snapshot)>, mem: &GuestMemory) -> &'a Snapshot {
    let generation = mem.generation();
    if cached.as_ref().is_none_or(|(g, _)| *g != generation) {
        *cached = Some((generation, mem.snapshot()));
    }
    &cached.get_or_insert_with(|| (generation, mem.snapshot())).1
}

/// A queue pair.
pub struct Queue {
    /// Queue id (0 = admin).
    pub qid: u16,
    /// MSI-X vector.
    pub vector: u16,
    /// IOVA of the region.
    pub base: u64,
    /// Geometry.
    pub layout: QueueLayout,
    mem: Arc<GuestMemory>,
    msix: Arc<Msix>,
    /// The completion ring's producer state.
    cq: Mutex<Producer>,
    /// The submission ring's head: how far the worker has consumed (each completion carries
    /// it, spec §5.4).
    sq_head: AtomicU32,
    /// Wakes the worker parked on an empty submission ring.
    sq_bell: Bell,
    /// Wakes a completion waiting for room in a full completion ring.
    cq_bell: Bell,
    /// The PARKED bits as the device last stored them: the worker owns PARKED_IDLE, the
    /// posters PARKED_CQ_FULL, and each stores both under this lock, so neither clears
    /// the other's.
    parked: Mutex<u32>,
    stop: AtomicBool,
}

impl Queue {
    /// A queue over the region at `base`.
    pub fn new(
        qid: u16,
        vector: u16,
        base: u64,
        layout: QueueLayout,
        mem: Arc<GuestMemory>,
        msix: Arc<Msix>,
    ) -> Self {
        Queue {
            qid,
            vector,
            base,
            layout,
            mem,
            msix,
            cq: Mutex::new(Producer::default()),
            sq_head: AtomicU32::new(0),
            sq_bell: Bell::default(),
            cq_bell: Bell::default(),
            parked: Mutex::new(0),
            stop: AtomicBool::new(false),
        }
    }

    /// True when the whole region is mapped writable, within one mapping.
    pub fn region_mapped(&self) -> bool {
        self.mem
            .snapshot()
            .view(self.base, self.layout.region_size() as u64, true)
            .is_ok()
    }

    /// Doorbell: wake the worker, and a completion waiting for room.
    pub fn ring(&self) {
        for bell in [&self.sq_bell, &self.cq_bell] {
            *bell.rung.lock().unwrap_or_else(|p| p.into_inner()) = true;
            bell.cv.notify_all();
        }
    }

    /// Sets (`on`) or clears PARKED bit `bit` in the ring, keeping the other bit.
    fn set_parked(&self, ring: &View<'_>, bit: u32, on: bool) {
        let mut bits = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            *bits |= bit;
        } else {
            *bits &= !bit;
        }
        let _ = ring.store_u32(qcb::PARKED, *bits, Ordering::Release);
    }

    /// Asks the worker to stop and wakes it. Once this returns, nothing more is posted on
    /// the queue (a completion waiting for room gives up within one tick).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.ring();
        // A completion being written finishes under the producer lock; later ones see the
        // flag under it.
        drop(self.cq.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// True once a stop was requested.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Waits for the worker's doorbell up to `timeout`; true if it rang.
    fn wait_bell(&self, timeout: Duration) -> bool {
        self.sq_bell.wait(timeout)
    }

    /// Posts a completion; waits (parked with PARKED_CQ_FULL) while the ring is full.
    /// Returns false if the queue stopped or its memory vanished first.
    pub fn post(&self, c: Completion) -> bool {
        let mut guard = self.cq.lock().unwrap_or_else(|p| p.into_inner());
        if self.stopping() {
            return false;
        }
        let cq = &mut *guard;
        let depth = self.layout.depth();
        loop {
            let mem = fresh(&mut cq.snapshot, &self.mem);
            let Ok(ring) = mem.view(self.base, self.layout.region_size() as u64, true) else {
                return false;
            };
            if cq.tail.wrapping_sub(cq.head_seen) < depth {
                return self.write_cqe(&ring, &mut cq.tail, c);
            }
            let Ok(head) = ring.load_u32(qcb::CQ_HEAD, Ordering::Acquire) else {
                return false;
            };
            cq.head_seen = head;
            let used = cq.tail.wrapping_sub(head);
            if used > depth {
                log::warn!(
                    "queue {}: CQ_HEAD {head} is past the completion tail {}",
                    self.qid,
                    cq.tail
                );
                let _ = ring.store_u32(qcb::QUEUE_ERROR, qcb::QUEUE_ERR_OVERRUN, Ordering::Release);
                return false;
            }
            if used < depth {
                return self.write_cqe(&ring, &mut cq.tail, c);
            }
            if self.stopping() {
                return false;
            }
            self.set_parked(&ring, qcb::PARKED_CQ_FULL, true);
            fence(Ordering::SeqCst);
            let head2 = ring
                .load_u32(qcb::CQ_HEAD, Ordering::Acquire)
                .unwrap_or(head);
            if head2 == head {
                self.cq_bell.wait(PARK_TICK);
            }
            self.set_parked(&ring, qcb::PARKED_CQ_FULL, false);
        }
    }

    fn write_cqe(&self, ring: &View<'_>, tail: &mut u32, c: Completion) -> bool {
        let idx = *tail;
        let at = self.layout.cqe_offset(idx);
        let phase = if self.layout.phase(idx) {
            cqe_flags::PHASE
        } else {
            0
        };
        let cqe = Cqe {
            cid: c.cid,
            status: c.status.0,
            result0: c.result0,
            result1: c.result1,
            sq_head: self.sq_head.load(Ordering::Acquire),
            flags: 0,
            opcode: 0,
        };
        let bytes = bytemuck::bytes_of(&cqe);
        let publish = u32::from(c.flags | phase) | (u32::from(c.opcode) << 16);
        if ring.write(at, &bytes[..Cqe::PUBLISH_OFFSET]).is_err()
            || ring
                .store_u32(at + Cqe::PUBLISH_OFFSET, publish, Ordering::Release)
                .is_err()
        {
            return false;
        }
        *tail = idx.wrapping_add(1);
        let _ = ring.store_u32(qcb::CQ_TAIL, *tail, Ordering::Release);
        fence(Ordering::SeqCst);
        if ring
            .load_u32(qcb::IRQ_ARMED, Ordering::Acquire)
            .unwrap_or(0)
            != 0
        {
            let _ = ring.store_u32(qcb::IRQ_ARMED, 0, Ordering::Release);
            self.msix.signal(self.vector);
        }
        true
    }
}

/// One entry taken off the submission ring.
pub struct Taken {
    /// The raw entry.
    pub sqe: Sqe,
    /// Its inline payload slots (empty when none), or the error that spoiled them.
    pub inline: Result<Vec<u8>, DecodeError>,
}

/// What a worker does with each entry.
pub trait Handler: Send + Sync {
    /// Handles one entry.
    fn handle(&self, q: &Arc<Queue>, taken: Taken);
    /// True when the device may DMA (bus mastering on).
    fn dma_allowed(&self) -> bool;
    /// True when the client is likely to post again soon: work it submitted is still
    /// running or finished within [`SPIN`], and it acts on completions (see
    /// [`SPIN_BUSY`]).
    fn expects_more(&self) -> bool {
        false
    }
    /// The queue stopped on its own.
    fn fault(&self, q: &Arc<Queue>, fault: QueueFault);
}

/// How many empty polls pass between looks at the clock (the clock costs more than a poll).
const POLLS_PER_CLOCK: u32 = 64;

/// Runs a queue until it is asked to stop or faults.
///
/// The worker holds one snapshot of guest memory and a [`View`] of its queue region while
/// the mappings stay the same (their generation tells), so a poll of the ring is one atomic
/// load; it takes a new snapshot when they change.
pub fn worker(q: Arc<Queue>, handler: Arc<dyn Handler>) {
    let mut head: u32 = 0;
    while !q.stopping() {
        if !handler.dma_allowed() {
            q.wait_bell(PARK_TICK);
            continue;
        }
        let generation = q.mem.generation();
        let mem = q.mem.snapshot();
        let Ok(ring) = mem.view(q.base, q.layout.region_size() as u64, true) else {
            return handler.fault(&q, QueueFault::Dma);
        };
        match serve(&q, &*handler, &ring, &mut head, generation) {
            Served::Again => {}
            Served::Fault(f) => return handler.fault(&q, f),
        }
    }
}

enum Served {
    /// The mappings changed, DMA was turned off or a stop was requested: look again.
    Again,
    /// The queue cannot go on.
    Fault(QueueFault),
}

/// Serves the ring through `ring` until the mappings change (or DMA stops, or a stop is
/// requested), parking when it stays empty.
fn serve(
    q: &Arc<Queue>,
    handler: &dyn Handler,
    ring: &View<'_>,
    head: &mut u32,
    generation: u64,
) -> Served {
    let depth = q.layout.depth();
    let mut idle_since: Option<Instant> = None;
    let mut polls = 0u32;
    loop {
        if q.stopping() || !handler.dma_allowed() || q.mem.generation() != generation {
            return Served::Again;
        }
        let Ok(tail) = ring.load_u32(qcb::SQ_TAIL, Ordering::Acquire) else {
            return Served::Fault(QueueFault::Dma);
        };
        let avail = tail.wrapping_sub(*head);
        if avail > depth {
            let _ = ring.store_u32(qcb::QUEUE_ERROR, qcb::QUEUE_ERR_OVERRUN, Ordering::Release);
            q.msix.signal(q.vector);
            return Served::Fault(QueueFault::Overrun);
        }
        if avail == 0 {
            polls = polls.wrapping_add(1);
            if polls % POLLS_PER_CLOCK != 0 {
                std::hint::spin_loop();
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            let idle = since.elapsed();
            if idle < SPIN || (idle < SPIN_BUSY && handler.expects_more()) {
                // Past the first few microseconds of an idle spell, let a thread that has
                // work (a stream thread copying, say) have this CPU between polls.
                if idle >= YIELD_AFTER {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            // Park (spec §5.6): announce it, then look once more before sleeping; while
            // parked, look at SQ_TAIL on every tick too, so that a doorbell lost anyway
            // costs one tick, never the queue.
            q.set_parked(ring, qcb::PARKED_IDLE, true);
            fence(Ordering::SeqCst);
            while ring
                .load_u32(qcb::SQ_TAIL, Ordering::Acquire)
                .unwrap_or(tail)
                == tail
                && !q.wait_bell(PARK_TICK)
                && !q.stopping()
                && q.mem.generation() == generation
                && handler.dma_allowed()
            {}
            q.set_parked(ring, qcb::PARKED_IDLE, false);
            idle_since = None;
            continue;
        }
        idle_since = None;
        let mut raw = [0u8; SQE_SIZE];
        if ring.read(q.layout.sqe_offset(*head), &mut raw).is_err() {
            return Served::Fault(QueueFault::Dma);
        }
        let sqe: Sqe = bytemuck::pod_read_unaligned(&raw);
        let (inline, consumed) = take_inline(q, ring, &sqe, *head, tail);
        *head = head.wrapping_add(consumed);
        q.sq_head.store(*head, Ordering::Release);
        let _ = ring.store_u32(qcb::SQ_HEAD, *head, Ordering::Release);
        handler.handle(q, Taken { sqe, inline });
    }
}

/// Copies an entry's inline payload out of the ring. Returns the payload (or why it is
/// unusable) and how many slots the entry used.
fn take_inline(
    q: &Queue,
    ring: &View<'_>,
    sqe: &Sqe,
    head: u32,
    tail: u32,
) -> (Result<Vec<u8>, DecodeError>, u32) {
    use vgpu_proto::queue::sqe_flags::INLINE;
    if sqe.flags & INLINE == 0 || sqe.payload_len == 0 {
        return (Ok(Vec::new()), 1);
    }
    let max = q.layout.max_inline();
    if sqe.payload_len > max {
        // Decoding reports InlineTooLong; consume only what can be trusted: the entry.
        return (
            Err(DecodeError::InlineTooLong {
                len: sqe.payload_len,
                max,
            }),
            1,
        );
    }
    let slots = match inline_published(head, tail, sqe.payload_len) {
        Ok(n) => n,
        Err(e) => return (Err(e), tail.wrapping_sub(head)),
    };
    let mut out = vec![0u8; (inline_slots(sqe.payload_len) as usize) * SQE_SIZE];
    for i in 0..slots {
        let at = q.layout.sqe_offset(head.wrapping_add(1 + i));
        let chunk = &mut out[i as usize * SQE_SIZE..(i as usize + 1) * SQE_SIZE];
        if ring.read(at, chunk).is_err() {
            return (
                Err(DecodeError::InlineTruncated {
                    need: slots,
                    avail: i,
                }),
                1 + slots,
            );
        }
    }
    out.truncate(sqe.payload_len as usize);
    (Ok(out), 1 + slots)
}
