//! One protocol-level queue client (spec §5), written once for every test that speaks to a
//! queue pair directly: the device tests (admin and I/O queues in guest RAM reached over
//! vfio-user), the engine tests (guest RAM mapped into the engine directly) and the driver
//! tests (the queue memfd the driver hands a client).
//!
//! It plays the client's side of the ring exactly as the spec asks: entries and their inline
//! payload slots are written before SQ_TAIL is published (release), a doorbell is rung only
//! when the device has parked, completions are taken by their phase (acquire on the publish
//! word), CQ_HEAD is published after each, and a device parked on a full completion ring is
//! woken. With an interrupt eventfd it sleeps between polls with the IRQ_ARMED handshake.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vgpu_os::fd::wait_readable;
use vgpu_os::shm::SharedMemory;
use vgpu_proto::cmd::{Payload, Request};
use vgpu_proto::queue::{qcb, QueueLayout, SQE_SIZE};
use vgpu_proto::{Command, Cqe};

/// Rings a queue's doorbell with the new SQ tail.
pub type Doorbell = Box<dyn FnMut(u32) + Send>;

/// How long [`QueueClient::call`] waits for its completion.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The client side of one queue pair.
pub struct QueueClient {
    mem: Arc<SharedMemory>,
    /// Offset of the queue region in `mem`.
    base: usize,
    /// The queue id.
    pub qid: u16,
    /// The ring sizes.
    pub layout: QueueLayout,
    /// Next submission index.
    pub tail: u32,
    /// Next completion index.
    pub cq_head: u32,
    next_cid: u32,
    doorbell: Doorbell,
    irq: Option<OwnedFd>,
}

impl QueueClient {
    /// A client of the queue region at `base` in `mem` (zeroed, as spec §5.1 requires before
    /// the device uses it). `irq`, when given, is the queue's interrupt eventfd, slept on
    /// between polls; without it the client polls.
    pub fn new(
        mem: Arc<SharedMemory>,
        base: usize,
        qid: u16,
        layout: QueueLayout,
        doorbell: Doorbell,
        irq: Option<OwnedFd>,
    ) -> QueueClient {
        QueueClient {
            mem,
            base,
            qid,
            layout,
            tail: 0,
            cq_head: 0,
            next_cid: 0,
            doorbell,
            irq,
        }
    }

    /// Zeroes the queue region and the client's indices (before a device starts on it).
    pub fn clear(&mut self) {
        self.mem
            .fill(self.base, self.layout.region_size(), 0)
            .expect("queue region inside the mapping");
        self.tail = 0;
        self.cq_head = 0;
    }

    /// The interrupt eventfd, if the client has one.
    pub fn irq(&self) -> Option<&OwnedFd> {
        self.irq.as_ref()
    }

    /// A fresh command id.
    pub fn cid(&mut self) -> u32 {
        self.next_cid = self.next_cid.wrapping_add(1);
        self.next_cid
    }

    /// Loads a QCB word (acquire).
    pub fn qcb(&self, field: usize) -> u32 {
        self.mem.load_u32(self.base + field, Ordering::Acquire)
    }

    /// Stores a QCB word (release).
    pub fn set_qcb(&self, field: usize, v: u32) {
        self.mem.store_u32(self.base + field, v, Ordering::Release)
    }

    /// Writes a raw entry and its inline payload and publishes them, waiting (bounded) for
    /// room in the ring first; rings the doorbell if the device has parked.
    pub fn submit_raw(&mut self, sqe: &[u8; SQE_SIZE], payload: &[u8]) {
        let slots = 1 + payload.len().div_ceil(SQE_SIZE) as u32;
        assert!(
            slots <= self.layout.depth(),
            "an entry of {slots} slots cannot fit a ring of {}",
            self.layout.depth()
        );
        let mut bytes = sqe.to_vec();
        bytes.extend_from_slice(payload);
        bytes.resize(slots as usize * SQE_SIZE, 0);
        let t0 = Instant::now();
        while self
            .tail
            .wrapping_add(slots)
            .wrapping_sub(self.qcb(qcb::SQ_HEAD))
            > self.layout.depth()
        {
            assert!(
                t0.elapsed() < CALL_TIMEOUT,
                "submission ring of queue {} stayed full",
                self.qid
            );
            std::thread::sleep(Duration::from_micros(50));
        }
        for (i, chunk) in bytes.chunks(SQE_SIZE).enumerate() {
            let at = self.layout.sqe_offset(self.tail.wrapping_add(i as u32));
            self.mem
                .write_bytes(self.base + at, chunk)
                .expect("entry inside the queue region");
        }
        self.tail = self.tail.wrapping_add(slots);
        self.set_qcb(qcb::SQ_TAIL, self.tail);
        fence(Ordering::SeqCst);
        if self.qcb(qcb::PARKED) != 0 {
            (self.doorbell)(self.tail);
        }
    }

    /// Encodes and submits a request.
    pub fn submit_request(&mut self, req: &Request, payload: &[u8]) {
        let raw = req.encode();
        self.submit_raw(bytemuck::cast_ref(&raw), payload);
    }

    /// Submits `command` on `stream` with `inline` as its inline payload; returns its cid.
    pub fn submit(&mut self, command: Command, stream: u64, inline: &[u8], notify: bool) -> u32 {
        let cid = self.cid();
        let payload = if inline.is_empty() {
            Payload::None
        } else {
            Payload::Inline {
                len: inline.len() as u32,
            }
        };
        let req = Request {
            cid,
            notify,
            stream,
            payload,
            command,
        };
        self.submit_request(&req, inline);
        cid
    }

    /// The next completion if one is published, without waiting.
    pub fn poll(&mut self) -> Option<Cqe> {
        let off = self.base + self.layout.cqe_offset(self.cq_head);
        let word = self.mem.load_u32(off + 28, Ordering::Acquire);
        if (word & 1 != 0) != self.layout.phase(self.cq_head) {
            return None;
        }
        let mut b = [0u8; 32];
        self.mem
            .read_bytes(off, &mut b)
            .expect("completion inside the queue region");
        self.cq_head = self.cq_head.wrapping_add(1);
        self.set_qcb(qcb::CQ_HEAD, self.cq_head);
        fence(Ordering::SeqCst);
        if self.qcb(qcb::PARKED) & qcb::PARKED_CQ_FULL != 0 {
            (self.doorbell)(self.tail);
        }
        Some(bytemuck::pod_read_unaligned(&b))
    }

    /// The next completion, waiting up to `timeout`: polling, and with an interrupt eventfd
    /// sleeping on it with the IRQ_ARMED handshake.
    pub fn next(&mut self, timeout: Duration) -> Option<Cqe> {
        let t0 = Instant::now();
        loop {
            if let Some(c) = self.poll() {
                return Some(c);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            let Some(irq) = self.irq.as_ref() else {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            };
            self.set_qcb(qcb::IRQ_ARMED, 1);
            fence(Ordering::SeqCst);
            let off = self.base + self.layout.cqe_offset(self.cq_head);
            let word = self.mem.load_u32(off + 28, Ordering::Acquire);
            let left = timeout.saturating_sub(t0.elapsed());
            if (word & 1 != 0) != self.layout.phase(self.cq_head)
                && wait_readable(&[irq.as_raw_fd()], left.min(Duration::from_millis(100))).is_some()
            {
                let mut b = [0u8; 8];
                let _ = nix::unistd::read(irq, &mut b);
            }
            self.set_qcb(qcb::IRQ_ARMED, 0);
        }
    }

    /// Submits `command` and waits for its completion, which must be the next one.
    pub fn call(&mut self, command: Command, stream: u64, inline: &[u8]) -> Cqe {
        let cid = self.submit(command, stream, inline, false);
        let c = self
            .next(CALL_TIMEOUT)
            .unwrap_or_else(|| panic!("no completion for {command:?}"));
        assert_eq!(c.cid, cid, "unexpected completion {c:?}");
        c
    }
}
