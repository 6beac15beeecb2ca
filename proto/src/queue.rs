//! Queue regions, ring arithmetic and the raw entry formats (spec §5).
//!
//! A queue pair lives in one contiguous, 4096-byte aligned region of DMA memory:
//!
//! ```text
//! base + 0x000  queue control block (QCB, 256 bytes; two cache lines used)
//! base + 0x100  submission ring: 2^log2 entries of 64 bytes
//! base + 0x100 + 64 * 2^log2   completion ring: 2^log2 entries of 32 bytes
//! ```
//!
//! Indices are free-running `u32` counters; the slot of index `i` is `i & (depth - 1)`.

/// Size of a submission entry.
pub const SQE_SIZE: usize = 64;
/// Size of a completion entry.
pub const CQE_SIZE: usize = 32;
/// Size reserved for the queue control block at the start of a queue region.
pub const QCB_SIZE: usize = 256;
/// Required alignment of a queue region's base IOVA.
pub const QUEUE_ALIGN: u64 = 4096;
/// Largest inline payload in bytes (and it must also fit in `depth - 1` slots).
pub const MAX_INLINE_PAYLOAD: u32 = 64 * 1024;
/// Largest kernel parameter blob (CUDA's limit on the parameter buffer).
pub const MAX_PARAM_BYTES: u32 = 32 * 1024;

/// Flags of [`Sqe::flags`].
pub mod sqe_flags {
    /// The payload follows the entry in the next `ceil(payload_len / 64)` ring slots.
    pub const INLINE: u16 = 1 << 0;
    /// Post a completion even when an asynchronous command succeeds.
    pub const NOTIFY: u16 = 1 << 1;
    /// All defined flags.
    pub const DEFINED: u16 = INLINE | NOTIFY;
}

/// Flags of [`Cqe::flags`].
pub mod cqe_flags {
    /// Phase tag: 1 on the first pass through the ring, 0 on the second, and so on.
    pub const PHASE: u16 = 1 << 0;
    /// This is a host-function callback request (HOST_FUNC), not a command's completion.
    pub const CALLBACK: u16 = 1 << 1;
    /// The completion reports an asynchronous command that failed (its `cid` names it).
    pub const ASYNC_ERROR: u16 = 1 << 2;
}

crate::abi_struct! {
    /// A raw 64-byte submission queue entry (spec §5.3).
    Sqe [64] {
        /// Command opcode ([`crate::Opcode`]).
        opcode: u16,
        /// [`sqe_flags`].
        flags: u16,
        /// Command id chosen by the submitter, echoed in the completion.
        cid: u32,
        /// Stream handle (0 = the PD's NULL stream) for opcodes that take a stream; else 0.
        stream: u64,
        /// Payload length in bytes (0 = no payload).
        payload_len: u32,
        /// Window holding the payload; 0 when inline or absent.
        payload_window: u32,
        /// Offset of the payload in its window; 0 when inline or absent.
        payload_offset: u64,
        /// Opcode-specific arguments ([`crate::cmd`]).
        args: [u8; 32],
    } reserved []
}

crate::abi_struct! {
    /// A raw 32-byte completion queue entry (spec §5.4).
    ///
    /// The device writes bytes 0..28, then stores the 32-bit word at offset 28
    /// (`flags | opcode << 16`) with release ordering; the client loads that word with
    /// acquire ordering and checks the phase before reading the rest.
    Cqe [32] {
        /// The `cid` of the entry this completes (for callbacks: of the HOST_FUNC entry).
        cid: u32,
        /// [`crate::Status`] value.
        status: u32,
        /// First result (opcode-specific).
        result0: u64,
        /// Second result (opcode-specific; for BUFFER_TOO_SMALL the size needed).
        result1: u64,
        /// The device's submission-ring head after consuming the entry.
        sq_head: u32,
        /// [`cqe_flags`].
        flags: u16,
        /// The opcode of the completed entry (diagnostics).
        opcode: u16,
    } reserved []
}

crate::assert_layout!(
    Sqe,
    size = 64,
    opcode = 0,
    flags = 2,
    cid = 4,
    stream = 8,
    payload_len = 16,
    payload_window = 20,
    payload_offset = 24,
    args = 32
);
crate::assert_layout!(
    Cqe,
    size = 32,
    cid = 0,
    status = 4,
    result0 = 8,
    result1 = 16,
    sq_head = 24,
    flags = 28,
    opcode = 30
);

impl Cqe {
    /// Offset of the 32-bit word that publishes an entry (flags and opcode).
    pub const PUBLISH_OFFSET: usize = 28;

    /// The status as a [`crate::Status`].
    pub fn status(&self) -> crate::Status {
        crate::Status(self.status)
    }

    /// The phase tag of this entry.
    pub fn phase(&self) -> bool {
        self.flags & cqe_flags::PHASE != 0
    }
}

/// Byte offsets of the fields in the queue control block (spec §5.2). Each field is a
/// naturally aligned `u32` accessed atomically. Client-written fields share the first cache
/// line (but CQ_HEAD, which has the fourth to itself); the fields the device writes on every
/// command the second; the ones it writes rarely (parking, errors), which the client reads
/// on every submission, the third, so that those reads hit the client's cache.
pub mod qcb {
    /// Client → device: submission tail (index one past the last published slot).
    pub const SQ_TAIL: usize = 0x00;
    /// Client → device: completion head (index of the next completion to consume). On a
    /// line of its own: the client writes it after every batch of completions, and the
    /// device reads it only when the completion ring looks full.
    pub const CQ_HEAD: usize = 0xC0;
    /// Client → device: nonzero = the client is about to sleep and wants an interrupt
    /// after the next completion. The device clears it when it sends the interrupt.
    pub const IRQ_ARMED: usize = 0x08;
    /// Device → client: submission head (index of the next slot the device will read).
    pub const SQ_HEAD: usize = 0x40;
    /// Device → client: nonzero = the device is parked and needs a doorbell to look at
    /// the queue again ([`PARKED_IDLE`] or [`PARKED_CQ_FULL`]).
    pub const PARKED: usize = 0x80;
    /// Device → client: completion tail (informational; the phase tag is authoritative).
    pub const CQ_TAIL: usize = 0x44;
    /// Device → client: nonzero = the queue was stopped because its indices were
    /// corrupt ([`QUEUE_ERR_OVERRUN`]); only deleting the queue clears it.
    pub const QUEUE_ERROR: usize = 0x84;

    /// PARKED bit: the worker found the submission ring empty.
    pub const PARKED_IDLE: u32 = 1;
    /// PARKED bit: a completion waits for room in the full completion ring.
    pub const PARKED_CQ_FULL: u32 = 2;
    /// QUEUE_ERROR value: `sq_tail - sq_head` exceeded the depth, or `cq_head` moved past
    /// the completion tail.
    pub const QUEUE_ERR_OVERRUN: u32 = 1;

    /// Every field: (name, offset, written by the client).
    pub const FIELDS: &[(&str, usize, bool)] = &[
        ("SQ_TAIL", SQ_TAIL, true),
        ("IRQ_ARMED", IRQ_ARMED, true),
        ("SQ_HEAD", SQ_HEAD, false),
        ("CQ_TAIL", CQ_TAIL, false),
        ("PARKED", PARKED, false),
        ("QUEUE_ERROR", QUEUE_ERROR, false),
        ("CQ_HEAD", CQ_HEAD, true),
    ];
}

/// The geometry of one queue region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLayout {
    /// log2 of the number of entries in each ring.
    pub depth_log2: u8,
}

impl QueueLayout {
    /// A layout, if `depth_log2` is in `1..=max_log2`.
    pub fn new(depth_log2: u8, max_log2: u32) -> Option<Self> {
        (depth_log2 >= 1 && u32::from(depth_log2) <= max_log2).then_some(QueueLayout { depth_log2 })
    }

    /// Entries per ring.
    pub const fn depth(self) -> u32 {
        1 << self.depth_log2
    }

    /// Offset of the submission ring in the region.
    pub const fn sq_offset(self) -> usize {
        QCB_SIZE
    }

    /// Offset of the completion ring in the region.
    pub const fn cq_offset(self) -> usize {
        QCB_SIZE + SQE_SIZE * (1usize << self.depth_log2)
    }

    /// Total size of the region in bytes.
    pub const fn region_size(self) -> usize {
        self.cq_offset() + CQE_SIZE * (1usize << self.depth_log2)
    }

    /// Slot of free-running index `idx`.
    pub const fn slot(self, idx: u32) -> u32 {
        idx & (self.depth() - 1)
    }

    /// Offset in the region of submission slot for index `idx`.
    pub const fn sqe_offset(self, idx: u32) -> usize {
        self.sq_offset() + SQE_SIZE * self.slot(idx) as usize
    }

    /// Offset in the region of completion slot for index `idx`.
    pub const fn cqe_offset(self, idx: u32) -> usize {
        self.cq_offset() + CQE_SIZE * self.slot(idx) as usize
    }

    /// The phase tag the device writes for completion index `idx`: true on the first
    /// pass through the ring (indices 0..depth), false on the second, and so on.
    pub const fn phase(self, idx: u32) -> bool {
        (idx >> self.depth_log2) & 1 == 0
    }

    /// The largest inline payload an entry in this ring can carry.
    pub fn max_inline(self) -> u32 {
        MAX_INLINE_PAYLOAD.min((self.depth() - 1).saturating_mul(SQE_SIZE as u32))
    }
}

/// Number of ring slots an inline payload of `len` bytes occupies after its entry.
pub const fn inline_slots(len: u32) -> u32 {
    len.div_ceil(SQE_SIZE as u32)
}

/// Checks that the client published every slot of an inline payload: the entry is at
/// free-running index `entry`, the published tail is `tail`. Returns the number of payload
/// slots to consume after the entry.
pub fn inline_published(
    entry: u32,
    tail: u32,
    payload_len: u32,
) -> Result<u32, crate::DecodeError> {
    let need = inline_slots(payload_len);
    let avail = tail.wrapping_sub(entry).wrapping_sub(1);
    if avail < need {
        return Err(crate::DecodeError::InlineTruncated { need, avail });
    }
    Ok(need)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_a_small_queue() {
        let l = QueueLayout::new(4, 15).unwrap();
        assert_eq!(l.depth(), 16);
        assert_eq!(l.sq_offset(), 0x100);
        assert_eq!(l.cq_offset(), 0x100 + 16 * 64);
        assert_eq!(l.region_size(), 0x100 + 16 * 96);
        assert_eq!(l.sqe_offset(17), 0x100 + 64);
        assert!(l.phase(0) && l.phase(15) && !l.phase(16) && l.phase(32));
        assert_eq!(l.max_inline(), 15 * 64);
        assert!(QueueLayout::new(0, 15).is_none());
        assert!(QueueLayout::new(16, 15).is_none());
    }

    #[test]
    fn qcb_fields_are_separated_by_writer() {
        // Cache lines: 0 client, 1 device (every command), 2 device (rarely), 3 CQ_HEAD.
        for (name, off, client) in qcb::FIELDS {
            assert_eq!(off % 4, 0, "{name}");
            assert!(off + 4 <= QCB_SIZE);
            let line = off / 64;
            assert_eq!(
                matches!(line, 0 | 3),
                *client,
                "{name} is on the wrong cache line"
            );
        }
        assert_eq!(qcb::CQ_HEAD / 64, 3);
        assert!(qcb::FIELDS
            .iter()
            .all(|f| f.1 / 64 != 3 || f.1 == qcb::CQ_HEAD));
        assert_eq!(qcb::PARKED / 64, 2);
        assert_eq!(qcb::QUEUE_ERROR / 64, 2);
    }

    #[test]
    fn inline_publication() {
        assert_eq!(inline_published(10, 12, 64), Ok(1));
        assert_eq!(inline_published(u32::MAX, 2, 128), Ok(2));
        let e = inline_published(10, 12, 65).unwrap_err();
        assert_eq!(e, crate::DecodeError::InlineTruncated { need: 2, avail: 1 });
        assert_eq!(e.status(), crate::Status::INLINE_TRUNCATED);
    }

    #[test]
    fn inline_slot_count() {
        assert_eq!(inline_slots(0), 0);
        assert_eq!(inline_slots(1), 1);
        assert_eq!(inline_slots(64), 1);
        assert_eq!(inline_slots(65), 2);
        assert_eq!(inline_slots(MAX_PARAM_BYTES), 512);
    }
}
