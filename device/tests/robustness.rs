//! No input from a client can panic the device or stop it serving: random and mutated
//! entries on an I/O queue and on the admin queue, and random register and configuration
//! accesses, followed each time by a check that the device still answers.

use bytemuck::Zeroable;
use std::time::{Duration, Instant};
use vfio_bindings::bindings::vfio::*;
use vgpu_proto::cmd::{HandleArgs, MemsetArgs};
use vgpu_proto::examples::{payload, request};
use vgpu_proto::queue::qcb;
use vgpu_proto::{Command, Opcode, Status};
use vgpu_test_stack::bare::*;
use vgpu_test_stack::queue::QueueClient;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Takes the completions still coming in, until none has come for 2 ms (polling: an
/// interrupt wait would outlast so short a quiet spell).
fn drain(q: &mut QueueClient) {
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(2) {
        if q.poll().is_some() {
            quiet = Instant::now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// Consumes whatever completions are there without waiting (a client that stops
/// consuming completions stalls its own queue, by design).
fn consume(q: &mut QueueClient) {
    while q.poll().is_some() {}
}

fn alive(c: &mut PdClient) {
    drain(&mut c.q);
    let cid = c.post(0, Command::NOP(Zeroable::zeroed()), &[], false);
    loop {
        let Some(r) = c.next(Duration::from_secs(10)) else {
            let f = |o: usize| c.q.qcb(o);
            panic!(
                "device stopped answering (no successful NOP in 10 s): client tail {} cq_head {}; QCB sq_tail {} cq_head {} irq {} sq_head {} cq_tail {} parked {} err {}",
                c.q.tail, c.q.cq_head, f(qcb::SQ_TAIL), f(qcb::CQ_HEAD), f(qcb::IRQ_ARMED), f(qcb::SQ_HEAD),
                f(qcb::CQ_TAIL), f(qcb::PARKED), f(qcb::QUEUE_ERROR)
            );
        };
        // Mutated entries may carry any cid, this NOP's too, and their completions can still
        // be arriving: only a successful completion of that cid is the NOP's.
        if r.cid == cid && r.status() == Status::SUCCESS {
            return;
        }
    }
}

#[test]
fn random_and_mutated_entries() {
    let stub = Stub::start(1, 256 << 20);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 64 << 20);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let ops: Vec<Opcode> = Opcode::ALL
        .iter()
        .copied()
        .filter(|o| o.info().queue == vgpu_proto::opcode::QueueKind::Io)
        .collect();
    for round in 0..5000 {
        let op = ops[rng.below(ops.len() as u64) as usize];
        let mut req = request(op);
        req.cid = round;
        let mut raw = req.encode();
        let mut p = payload(op);
        let bytes: &mut [u8; 64] = bytemuck::cast_mut(&mut raw);
        match rng.below(4) {
            // One to four random bytes anywhere in the entry.
            0 | 1 => {
                for _ in 0..=rng.below(4) {
                    bytes[rng.below(64) as usize] = rng.next() as u8;
                }
            }
            // Random arguments.
            2 => {
                for b in bytes[32..].iter_mut() {
                    *b = if rng.below(3) == 0 {
                        rng.next() as u8
                    } else {
                        0
                    };
                }
            }
            // Random payload bytes.
            _ => {
                for b in p.iter_mut() {
                    if rng.below(4) == 0 {
                        *b = rng.next() as u8;
                    }
                }
            }
        }
        // The stream field of a mutated entry may name a stream this PD has; keep the HOST_FUNC
        // holds short-lived by releasing any cookie we may have created.
        let len = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
        let inline = u16::from_le_bytes([bytes[2], bytes[3]]) & 1 != 0;
        // A client must publish exactly the slots its inline payload needs (else the device
        // rightly takes later entries as payload); keep mutated lengths honest.
        if inline {
            p.resize((len as usize).min(64 * 64), 0xEE);
            bytes[16..20].copy_from_slice(&(p.len() as u32).to_le_bytes());
        }
        let sqe: [u8; 64] = *bytes;
        c.q.submit_raw(&sqe, if inline { &p } else { &[] });
        consume(&mut c.q);
        if round % 50 == 49 {
            let done = vgpu_proto::cmd::HandleArgs {
                handle: 0xC0FFEE,
                ..Zeroable::zeroed()
            };
            c.post(0, Command::HOST_FUNC_DONE(done), &[], false);
            alive(&mut c);
        }
    }
    alive(&mut c);
    // Everything the PD made is reclaimed when it is destroyed.
    let pd = c.pd;
    d.admin_ok(Command::PD_DESTROY(vgpu_proto::cmd::PdArgs {
        pd,
        ..Zeroable::zeroed()
    }));
    let t = d.stats(0);
    assert_eq!((t.pds, t.objects(), t.mem_bytes), (0, 0, 0));
    drop((c, d));
    stub.join();
}

#[test]
fn random_admin_entries_and_register_accesses() {
    let stub = Stub::start(1, 256 << 20);
    let mut d = BareDriver::connect(&stub);
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let ops: Vec<Opcode> = Opcode::ALL
        .iter()
        .copied()
        .filter(|o| o.info().queue == vgpu_proto::opcode::QueueKind::Admin)
        .collect();
    for round in 0..400u32 {
        let op = ops[rng.below(ops.len() as u64) as usize];
        if op == Opcode::QUEUE_CREATE || op == Opcode::WINDOW_REGISTER {
            // Random queue and window addresses stay inside the test memory or fail cleanly.
        }
        let mut raw = request(op).encode();
        raw.cid = round;
        let bytes: &mut [u8; 64] = bytemuck::cast_mut(&mut raw);
        for _ in 0..=rng.below(3) {
            bytes[32 + rng.below(32) as usize] = rng.next() as u8;
        }
        let sqe = *bytes;
        d.admin.submit_raw(&sqe, &[]);
        let r = d
            .admin
            .next(Duration::from_secs(10))
            .expect("admin queue stopped answering");
        assert_eq!(r.cid, round);
    }
    assert_eq!(
        d.admin(Command::ADMIN_NOP(Zeroable::zeroed())).status(),
        Status::SUCCESS
    );
    // Random accesses to configuration space, BAR0 (but not CONTROL) and BAR2.
    for _ in 0..2000 {
        let region = [
            VFIO_PCI_CONFIG_REGION_INDEX,
            VFIO_PCI_BAR0_REGION_INDEX,
            VFIO_PCI_BAR2_REGION_INDEX,
            1,
            5,
        ][rng.below(5) as usize];
        let off = rng.below(0x4100);
        let len = [1usize, 2, 3, 4, 8, 16][rng.below(6) as usize];
        if rng.below(2) == 0 {
            let mut b = vec![0u8; len];
            d.client().region_read(region, off, &mut b).unwrap();
        } else {
            // CONTROL and the IDs are left alone so that the device stays enabled.
            let protected = (region == VFIO_PCI_BAR0_REGION_INDEX && off < 0x40)
                || (region == VFIO_PCI_CONFIG_REGION_INDEX && off < 0x08);
            if protected {
                continue;
            }

            let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            d.client().region_write(region, off, &b).unwrap();
        }
    }
    assert_eq!(
        d.read_u32(0, vgpu_proto::regs::MAGIC),
        vgpu_proto::regs::MAGIC_VALUE
    );
    drop(d);
    stub.join();
}

/// The doorbell handshake holds while stream threads park on a full completion ring as the
/// worker parks on an empty submission ring (spec §5.6): after completions that had to wait
/// for room, a new entry is still served, doorbell or not.
#[test]
fn no_submission_is_lost_while_completions_wait_for_room() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    let buf = c.mem_alloc(4096);
    let s = c
        .io(0, Command::STREAM_CREATE(Zeroable::zeroed()), &[])
        .result0;
    let depth = 256;
    for round in 0..20u64 {
        // A stream held by a host function, with more NOTIFY work behind it than the
        // completion ring holds.
        let hf = c.post(
            s,
            Command::HOST_FUNC(HandleArgs {
                handle: 1 + round,
                ..Zeroable::zeroed()
            }),
            &[],
            false,
        );
        let cb = c
            .next(Duration::from_secs(5))
            .expect("host function callback");
        assert_eq!(cb.cid, hf);
        let n = depth + 40;
        for _ in 0..n {
            let m = MemsetArgs {
                dst: buf,
                count: 4,
                value: round as u32,
                elem_size: 1,
                ..Zeroable::zeroed()
            };
            c.post(s, Command::MEMSET(m), &[], true);
        }
        // Let the worker park on the empty ring, then release the stream: its completions
        // fill the ring and the stream thread parks on it.
        std::thread::sleep(Duration::from_millis(5));
        c.post(
            0,
            Command::HOST_FUNC_DONE(HandleArgs {
                handle: 1 + round,
                ..Zeroable::zeroed()
            }),
            &[],
            false,
        );
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..n {
            let done = c.next(Duration::from_secs(5));
            assert!(
                done.is_some(),
                "round {round}: completion {i} of {n} missing"
            );
        }
        // The worker, parked all along, still says so: a client rings for the next entry.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            c.q.qcb(qcb::PARKED) & qcb::PARKED_IDLE,
            qcb::PARKED_IDLE,
            "round {round}: the completions cleared the worker's PARKED bit"
        );
        // A new entry is served.
        let cid = c.post(0, Command::NOP(Zeroable::zeroed()), &[], false);
        let r = c.next(Duration::from_secs(2));
        assert_eq!(
            r.map(|r| r.cid),
            Some(cid),
            "round {round}: a NOP after a full completion ring was never served"
        );
    }
    drop((c, d));
    stub.join();
}
