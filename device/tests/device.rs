//! vgpu-stub driven through `vfio_user::Client` with no VM: configuration space, registers,
//! admin commands, I/O commands on the soft executor, isolation between PDs, malformed
//! entries, and cleanup.

use bytemuck::Zeroable;
use std::time::Duration;
use vfio_bindings::bindings::vfio::*;
use vgpu_proto::cmd::*;
use vgpu_proto::queue::cqe_flags;
use vgpu_proto::regs::{self, control, fatal, features, status};
use vgpu_proto::{Command, Opcode, Status};
use vgpu_test_stack::bare::*;

#[test]
fn config_space_and_registers() {
    let stub = Stub::start(1, 1 << 30);
    let mut c = stub.connect();
    let cfg = VFIO_PCI_CONFIG_REGION_INDEX;
    assert_eq!(read_u32(&mut c, cfg, 0), 0x7667_1234);
    assert_eq!(read_u32(&mut c, cfg, 8), 0x1200_0001);
    assert_eq!(read_u32(&mut c, cfg, 0x2C), 0x0001_1234);
    assert_eq!(read_u32(&mut c, cfg, 0x34) & 0xFF, 0x40);
    assert_eq!(read_u32(&mut c, cfg, 0x40) & 0x07FF_00FF, 0x00FF_0011);
    write_u32(&mut c, cfg, 0x10, u32::MAX);
    assert_eq!(read_u32(&mut c, cfg, 0x10), !(16 * 1024 - 1));
    assert_eq!(
        c.region(VFIO_PCI_BAR0_REGION_INDEX).unwrap().size,
        16 * 1024
    );
    assert_eq!(c.region(VFIO_PCI_BAR2_REGION_INDEX).unwrap().size, 8 * 1024);
    assert_eq!(c.get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX).unwrap().count, 256);
    for r in regs::REGISTERS {
        let v = read_u32(&mut c, 0, r.offset);
        if r.name != "IO_QUEUES" {
            assert_eq!(u64::from(v), r.reset & 0xFFFF_FFFF, "{}", r.name);
        }
        if r.width == 8 {
            assert_eq!(
                u64::from(read_u32(&mut c, 0, r.offset + 4)),
                r.reset >> 32,
                "{} high",
                r.name
            );
        }
    }
    write_u32(&mut c, 0, regs::SCRATCH, 0xDEAD_BEEF);
    assert_eq!(read_u32(&mut c, 0, regs::SCRATCH), 0xDEAD_BEEF);
    write_u32(&mut c, 0, regs::MAGIC, 0);
    assert_eq!(
        read_u32(&mut c, 0, regs::MAGIC),
        regs::MAGIC_VALUE,
        "read-only"
    );
    let mut b8 = [0u8; 8];
    c.region_read(0, regs::DEV_FEATURES, &mut b8).unwrap();
    assert_eq!(u64::from_le_bytes(b8), features::ALL);
    // Enabling with unknown features or a bad admin queue is fatal; RESET recovers.
    write_u32(&mut c, 0, regs::DRV_FEATURES + 4, 1);
    write_u32(&mut c, 0, regs::CONTROL, control::ENABLE);
    assert_eq!(read_u32(&mut c, 0, regs::STATUS), status::FATAL);
    assert_eq!(read_u32(&mut c, 0, regs::FATAL_CODE), fatal::BAD_FEATURES);
    write_u32(&mut c, 0, regs::CONTROL, control::RESET);
    assert_eq!(read_u32(&mut c, 0, regs::STATUS), 0);
    assert_eq!(
        read_u32(&mut c, 0, regs::SCRATCH),
        0,
        "reset clears registers"
    );
    write_u32(&mut c, 0, regs::ADMIN_DEPTH, 13);
    write_u32(&mut c, 0, regs::CONTROL, control::ENABLE);
    assert_eq!(
        read_u32(&mut c, 0, regs::FATAL_CODE),
        fatal::BAD_ADMIN_CONFIG
    );
    write_u32(&mut c, 0, regs::CONTROL, control::RESET);
    write_u32(&mut c, 0, regs::ADMIN_DEPTH, 4);
    write_u32(&mut c, 0, regs::ADMIN_BASE, 0x1000);
    write_u32(&mut c, 0, regs::CONTROL, control::ENABLE);
    assert_eq!(
        read_u32(&mut c, 0, regs::FATAL_CODE),
        fatal::ADMIN_DMA_FAULT,
        "admin queue in unmapped memory"
    );
    drop(c);
    stub.join();
}

#[test]
fn admin_commands_and_identify() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    assert_eq!(
        d.admin(Command::ADMIN_NOP(Zeroable::zeroed())).status(),
        Status::SUCCESS
    );
    let buf = d.alloc(4096);
    let c = d.admin_ok(Command::IDENTIFY(IdentifyArgs {
        iova: buf,
        len: 4096,
        ..Zeroable::zeroed()
    }));
    assert_eq!(c.result0, 4096);
    let info: vgpu_proto::info::DeviceInfo = bytemuck::pod_read_unaligned(&d.read(buf, 4096));
    assert_eq!(vgpu_proto::cmd::Args::check(&info), Ok(()));
    assert_eq!((info.cc_major, info.cc_minor), (9, 0));
    assert_eq!(info.total_mem, 1 << 30);
    assert_eq!(info.attr(16), Some(132));
    assert!(info.name().contains("soft"));
    // IDENTIFY into unmapped memory fails cleanly.
    let c = d.admin(Command::IDENTIFY(IdentifyArgs {
        iova: 0x10,
        len: 4096,
        ..Zeroable::zeroed()
    }));
    assert_eq!(c.status(), Status::OUT_OF_BOUNDS);
    // Objects that do not exist.
    assert_eq!(
        d.admin(Command::PD_DESTROY(PdArgs {
            pd: 99,
            ..Zeroable::zeroed()
        }))
        .status(),
        Status::BAD_OBJECT
    );
    let mut cl = d.pd_client(1, 1 << 20, 0);
    assert_eq!(d.read_u32(0, regs::IO_QUEUES), 1);
    let c = d.admin(Command::QUEUE_CREATE(QueueCreateArgs {
        pd: cl.pd,
        qid: 1,
        vector: 1,
        depth_log2: 4,
        base: cl.queue_base,
        ..Zeroable::zeroed()
    }));
    assert_eq!(c.status(), Status::BAD_OBJECT, "qid in use");
    let c = d.admin(Command::WINDOW_REGISTER(WindowRegisterArgs {
        pd: cl.pd,
        window: 2,
        iova: 0x10,
        len: 4096,
        access: 1,
        rsv0: 0,
    }));
    assert_eq!(
        c.status(),
        Status::OUT_OF_BOUNDS,
        "window outside DMA memory"
    );
    // An I/O opcode on the admin queue is refused, the queue keeps serving.
    let c = d.admin(Command::NOP(Zeroable::zeroed()));
    assert_eq!(c.status(), Status::WRONG_QUEUE);
    assert_eq!(
        cl.io(0, Command::NOP(Zeroable::zeroed()), &[]).status(),
        Status::SUCCESS
    );
    d.admin_ok(Command::QUEUE_DELETE(QueueDeleteArgs {
        qid: 1,
        ..Zeroable::zeroed()
    }));
    assert_eq!(d.read_u32(0, regs::IO_QUEUES), 0);
    d.admin_ok(Command::PD_DESTROY(PdArgs {
        pd: cl.pd,
        ..Zeroable::zeroed()
    }));
    drop((cl, d));
    stub.join();
}

/// The arguments of a command on one handle.
fn handle(handle: u64) -> HandleArgs {
    HandleArgs {
        handle,
        ..Zeroable::zeroed()
    }
}

/// Posts MEMSET of `count` elements of `elem_size` bytes, each `value`, at `dst`.
fn memset(
    c: &mut PdClient,
    stream: u64,
    dst: u64,
    count: u64,
    value: u32,
    elem_size: u8,
    notify: bool,
) -> u32 {
    let args = MemsetArgs {
        dst,
        count,
        value,
        elem_size,
        ..Zeroable::zeroed()
    };
    c.post(stream, Command::MEMSET(args), &[], notify)
}

/// Memsets whose extent overflows 64 bits (`count * elem_size`, or past the end of the
/// address space) name no memory: they fail with INVALID_VALUE, and the stream carries on.
/// (The size wrapped to 0 and the memset "succeeded"; with overflow checks the stream
/// thread panicked. 2-D memsets are refused when decoded.)
#[test]
fn memsets_whose_extent_overflows_are_refused() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    let a = c.mem_alloc(4096);
    let wait = |c: &mut PdClient, cid: u32| loop {
        let r = c.next(Duration::from_secs(10)).expect("a completion");
        if r.cid == cid {
            return r.status();
        }
    };
    let cid = memset(&mut c, 0, a, 1 << 62, 7, 4, true);
    assert_eq!(wait(&mut c, cid), Status::INVALID_VALUE);
    let cid = memset(&mut c, 0, u64::MAX - 4, 16, 7, 1, true);
    assert_eq!(wait(&mut c, cid), Status::INVALID_VALUE);
    // The stream is fine.
    let cid = memset(&mut c, 0, a, 16, 7, 1, true);
    assert_eq!(wait(&mut c, cid), Status::SUCCESS);
    assert_eq!(c.synchronize(0), Status::SUCCESS);
}

/// Every completion carries the device's submission head after it consumed the entry
/// (spec §5.4); it was always 0.
#[test]
fn completions_carry_the_submission_head() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    for _ in 0..3 {
        let r = c.io(0, Command::NOP(Zeroable::zeroed()), &[]);
        assert_eq!(r.status(), Status::SUCCESS);
        assert_eq!(r.sq_head, c.q.tail, "the head after the entry");
    }
    // An entry with an inline payload takes more slots; the head counts them.
    let payload = vec![5u8; 200];
    let a = c.mem_alloc(4096);
    let cid = c.post(
        0,
        Command::MEMCPY_HTOD(CopyHtoDArgs {
            dst: a,
            len: payload.len() as u64,
            ..Zeroable::zeroed()
        }),
        &payload,
        true,
    );
    let r = c.next(Duration::from_secs(10)).expect("its completion");
    assert_eq!((r.cid, r.status()), (cid, Status::SUCCESS));
    assert_eq!(r.sq_head, c.q.tail);
    assert!(r.sq_head >= 8, "{}", r.sq_head);
}

#[test]
fn memory_copies_and_memsets() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 4 << 20, 0);
    let a = c.mem_alloc(1 << 20);
    let b = c.mem_alloc(1 << 20);
    assert_eq!(a % 256, 0);
    // Inline HtoD, window HtoD, DtoD, DtoH.
    let small: Vec<u8> = (0..100u8).collect();
    c.post(
        0,
        Command::MEMCPY_HTOD(CopyHtoDArgs {
            dst: a,
            len: 100,
            ..Zeroable::zeroed()
        }),
        &small,
        false,
    );
    let big: Vec<u8> = (0..(512 * 1024)).map(|i| (i * 7 % 251) as u8).collect();
    d.write(c.window + 4096, &big);
    c.copy_from_window(0, b, big.len() as u64, 4096);
    c.post(
        0,
        Command::MEMCPY_DTOD(CopyDtoDArgs {
            dst: b + 1000,
            src: a,
            len: 100,
            rsv: 0,
        }),
        &[],
        false,
    );
    c.copy_to_window(0, b, big.len() as u64, 1 << 20);
    assert_eq!(c.synchronize(0), Status::SUCCESS);
    let back = d.read(c.window + (1 << 20), big.len());
    assert_eq!(&back[..1000], &big[..1000]);
    assert_eq!(&back[1000..1100], &small[..]);
    assert_eq!(&back[1100..], &big[1100..]);
    // Memset of each element size, and a 2-D memset and copy.
    memset(&mut c, 0, a, 16, 0xAB, 1, false);
    memset(&mut c, 0, a + 16, 8, 0xBEEF, 2, false);
    memset(&mut c, 0, a + 32, 4, 0x0102_0304, 4, false);
    let m2 = vgpu_proto::payload::Memset2D {
        dst: a + 256,
        pitch: 64,
        width: 4,
        height: 3,
        value: 7,
        elem_size: 4,
        rsv: 0,
    };
    c.post(
        0,
        Command::MEMSET_2D(Zeroable::zeroed()),
        bytemuck::bytes_of(&m2),
        false,
    );
    let c2 = vgpu_proto::payload::Copy2D {
        kind: vgpu_proto::payload::copy_kind::DTOH,
        src_window: 0,
        src: a + 256,
        src_pitch: 64,
        dst_window: 1,
        rsv0: 0,
        dst: 0,
        dst_pitch: 16,
        width: 16,
        height: 3,
    };
    c.post(
        0,
        Command::MEMCPY_2D(Zeroable::zeroed()),
        bytemuck::bytes_of(&c2),
        false,
    );
    c.copy_to_window(0, a, 48, 64);
    assert_eq!(c.synchronize(0), Status::SUCCESS);
    let out = d.read(c.window, 112);
    for row in 0..3 {
        for e in 0..4 {
            assert_eq!(
                &out[row * 16 + e * 4..row * 16 + e * 4 + 4],
                &7u32.to_le_bytes()
            );
        }
    }
    assert_eq!(&out[64..80], &[0xAB; 16]);
    assert_eq!(&out[80..82], &0xBEEFu16.to_le_bytes());
    assert_eq!(&out[96..100], &0x0102_0304u32.to_le_bytes());
    // Range info and frees.
    let r = c.io(0, Command::MEM_GET_RANGE(handle(a + 10)), &[]);
    assert_eq!(
        (r.status(), r.result0, r.result1),
        (Status::SUCCESS, a, 1 << 20)
    );
    let info = c.io(0, Command::MEM_GET_INFO(Zeroable::zeroed()), &[]);
    assert_eq!(info.result1, 1 << 30);
    assert_eq!(info.result0, (1 << 30) - (2 << 20));
    assert_eq!(
        c.io(0, Command::MEM_FREE(handle(a)), &[]).status(),
        Status::SUCCESS
    );
    assert_eq!(
        c.io(0, Command::MEM_FREE(handle(a)), &[]).status(),
        Status::INVALID_VALUE
    );
    // Errors of async copies are latched and reported by the next synchronize.
    c.post(
        0,
        Command::MEMCPY_DTOD(CopyDtoDArgs {
            dst: a,
            src: b,
            len: 8,
            rsv: 0,
        }),
        &[],
        false,
    );
    memset(&mut c, 0, b, 1, 1, 1, false);
    assert_eq!(c.synchronize(0), Status::INVALID_VALUE);
    assert_eq!(
        c.synchronize(0),
        Status::SUCCESS,
        "the latched error is cleared once reported"
    );
    // With NOTIFY an async command reports its own outcome.
    let cid = memset(&mut c, 0, a, 1, 1, 1, true);
    let cqe = c.next(Duration::from_secs(5)).unwrap();
    assert_eq!((cqe.cid, cqe.status()), (cid, Status::INVALID_VALUE));
    // Quota: more than the PD may have.
    let r = c.io(
        0,
        Command::MEM_ALLOC(MemAllocArgs {
            size: 2 << 30,
            ..Zeroable::zeroed()
        }),
        &[],
    );
    assert_eq!(r.status(), Status::OUT_OF_MEMORY);
    drop((c, d));
    stub.join();
}

/// Creates a non-blocking stream.
fn non_blocking_stream(c: &mut PdClient) -> u64 {
    let args = StreamCreateArgs {
        flags: stream_flags::NON_BLOCKING,
        ..Zeroable::zeroed()
    };
    c.io(0, Command::STREAM_CREATE(args), &[]).result0
}

#[test]
fn streams_events_and_host_functions() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    let buf = c.mem_alloc(4096);
    let s1 = non_blocking_stream(&mut c);
    let s2 = c
        .io(0, Command::STREAM_CREATE(Zeroable::zeroed()), &[])
        .result0;
    let e0 = c
        .io(0, Command::EVENT_CREATE(Zeroable::zeroed()), &[])
        .result0;
    let e1 = c
        .io(0, Command::EVENT_CREATE(Zeroable::zeroed()), &[])
        .result0;
    assert_ne!(s1, s2);
    // s1 holds on a host function; s2 waits for an event recorded after it on s1.
    c.post(s1, Command::EVENT_RECORD(handle(e0)), &[], false);
    let hf = c.post(s1, Command::HOST_FUNC(handle(0x77)), &[], false);
    memset(&mut c, s1, buf, 4, 5, 1, false);
    c.post(s1, Command::EVENT_RECORD(handle(e1)), &[], false);
    c.post(
        s2,
        Command::STREAM_WAIT_EVENT(StreamWaitEventArgs {
            event: e1,
            ..Zeroable::zeroed()
        }),
        &[],
        false,
    );
    c.copy_to_window(s2, buf, 4, 0);
    let cb = c.next(Duration::from_secs(5)).expect("callback");
    assert_eq!(
        (cb.cid, cb.result0, cb.flags & cqe_flags::CALLBACK),
        (hf, 0x77, cqe_flags::CALLBACK)
    );
    assert_eq!(
        c.io(s2, Command::STREAM_QUERY(Zeroable::zeroed()), &[])
            .status(),
        Status::NOT_READY
    );
    assert_eq!(
        c.io(0, Command::EVENT_QUERY(handle(e1)), &[]).status(),
        Status::NOT_READY
    );
    assert_eq!(d.read(c.window, 4), vec![0; 4], "s2 must wait for s1");
    c.post(0, Command::HOST_FUNC_DONE(handle(0x77)), &[], false);
    assert_eq!(c.synchronize(s2), Status::SUCCESS);
    assert_eq!(d.read(c.window, 4), vec![5; 4]);
    assert_eq!(
        c.io(0, Command::EVENT_SYNCHRONIZE(handle(e1)), &[])
            .status(),
        Status::SUCCESS
    );
    let el = c.io(
        0,
        Command::EVENT_ELAPSED(EventElapsedArgs {
            start: e0,
            end: e1,
            ..Zeroable::zeroed()
        }),
        &[],
    );
    assert_eq!(el.status(), Status::SUCCESS);
    let ms = f32::from_bits(el.result0 as u32);
    assert!((0.0..10_000.0).contains(&ms), "elapsed {ms}");
    // The NULL stream waits for blocking streams (s2) but not for non-blocking ones (s1).
    let hf2 = c.post(s1, Command::HOST_FUNC(handle(0x78)), &[], false);
    let cb = c.next(Duration::from_secs(5)).unwrap();
    assert_eq!(cb.cid, hf2);
    assert_eq!(
        c.synchronize(0),
        Status::SUCCESS,
        "NULL stream ignores a held non-blocking stream"
    );
    let hf3 = c.post(s2, Command::HOST_FUNC(handle(0x79)), &[], false);
    let cb = c.next(Duration::from_secs(5)).unwrap();
    assert_eq!(cb.cid, hf3);
    memset(&mut c, 0, buf, 4, 9, 1, true);
    assert!(
        c.next(Duration::from_millis(300)).is_none(),
        "NULL-stream work waits for blocking s2"
    );
    c.post(0, Command::HOST_FUNC_DONE(handle(0x79)), &[], false);
    let done = c.next(Duration::from_secs(5)).unwrap();
    assert_eq!(done.status(), Status::SUCCESS);
    c.post(0, Command::HOST_FUNC_DONE(handle(0x78)), &[], false);
    assert_eq!(
        c.io(0, Command::CTX_SYNCHRONIZE(Zeroable::zeroed()), &[])
            .status(),
        Status::SUCCESS
    );
    // Unknown handles.
    assert_eq!(c.synchronize(0xdead), Status::INVALID_HANDLE);
    assert_eq!(
        c.io(0, Command::EVENT_QUERY(handle(5)), &[]).status(),
        Status::INVALID_HANDLE
    );
    assert_eq!(
        c.io(s1, Command::STREAM_DESTROY(Zeroable::zeroed()), &[])
            .status(),
        Status::SUCCESS
    );
    assert_eq!(
        c.io(s1, Command::STREAM_DESTROY(Zeroable::zeroed()), &[])
            .status(),
        Status::INVALID_HANDLE
    );
    let st = d.stats(c.pd);
    assert_eq!((st.streams, st.events, st.allocations), (1, 2, 1));
    drop((c, d));
    stub.join();
}

#[test]
fn pds_are_isolated() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut a = d.pd_client(1, 1 << 20, 0);
    let mut b = d.pd_client(2, 1 << 20, 0);
    let pa = a.mem_alloc(4096);
    let sa = a
        .io(0, Command::STREAM_CREATE(Zeroable::zeroed()), &[])
        .result0;
    let ea = a
        .io(0, Command::EVENT_CREATE(Zeroable::zeroed()), &[])
        .result0;
    // B cannot name A's memory, stream, event or window 2 (only its own window 1 exists).
    let cid = b.post(
        0,
        Command::MEMCPY_DTOH(CopyDtoHArgs {
            src: pa,
            len: 16,
            dst_window: 1,
            rsv0: 0,
            dst_offset: 0,
        }),
        &[],
        true,
    );
    let r = b.next(Duration::from_secs(5)).unwrap();
    assert_eq!((r.cid, r.status()), (cid, Status::INVALID_VALUE));
    assert_eq!(
        b.io(sa, Command::STREAM_SYNCHRONIZE(Zeroable::zeroed()), &[])
            .status(),
        Status::INVALID_HANDLE
    );
    assert_eq!(
        b.io(0, Command::EVENT_QUERY(handle(ea)), &[]).status(),
        Status::INVALID_HANDLE
    );
    let pb = b.mem_alloc(4096);
    b.post(
        0,
        Command::MEMCPY_DTOH(CopyDtoHArgs {
            src: pb,
            len: 16,
            dst_window: 2,
            rsv0: 0,
            dst_offset: 0,
        }),
        &[],
        false,
    );
    let r = b.next(Duration::from_secs(5)).unwrap();
    assert_eq!(r.status(), Status::BAD_WINDOW);
    assert_eq!(r.flags & cqe_flags::ASYNC_ERROR, cqe_flags::ASYNC_ERROR);
    // A window range past its end, and one the PD's window does not allow.
    b.copy_to_window(0, pb, 16, (1 << 20) - 8);
    assert_eq!(
        b.next(Duration::from_secs(5)).unwrap().status(),
        Status::OUT_OF_BOUNDS
    );
    // A sticky error in A does not touch B.
    assert_eq!(
        b.io(0, Command::NOP(Zeroable::zeroed()), &[]).status(),
        Status::SUCCESS
    );
    drop((a, b, d));
    stub.join();
}

#[test]
fn malformed_entries_get_error_completions() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    let nop = Request {
        cid: 7,
        notify: false,
        stream: 0,
        payload: Payload::None,
        command: Command::NOP(Zeroable::zeroed()),
    }
    .encode();
    let mut cases: Vec<(vgpu_proto::Sqe, Status)> = Vec::new();
    let mut s = nop;
    s.opcode = 0x7777;
    cases.push((s, Status::BAD_OPCODE));
    let mut s = nop;
    s.flags = 0x80;
    cases.push((s, Status::BAD_FLAGS));
    let mut s = nop;
    s.opcode = Opcode::PD_CREATE as u16;
    cases.push((s, Status::WRONG_QUEUE));
    let mut s = nop;
    s.stream = 3;
    cases.push((s, Status::STREAM_NOT_ALLOWED));
    let mut s = nop;
    s.payload_len = 8;
    s.payload_window = 1;
    cases.push((s, Status::PAYLOAD_NOT_ALLOWED));
    let mut s = nop;
    s.payload_window = 1;
    cases.push((s, Status::BAD_PAYLOAD_DESCRIPTOR));
    let mut s = nop;
    s.args[31] = 1;
    cases.push((s, Status::RESERVED_NONZERO));
    let mut s = Request {
        cid: 7,
        notify: false,
        stream: 0,
        payload: Payload::None,
        command: Command::MEM_ALLOC(Zeroable::zeroed()),
    }
    .encode();
    s.args[0] = 0;
    cases.push((s, Status::BAD_ARGUMENT));
    let mut s = Request {
        cid: 7,
        notify: false,
        stream: 0,
        payload: Payload::None,
        command: Command::MEMCPY_2D(Zeroable::zeroed()),
    }
    .encode();
    s.stream = 0;
    cases.push((s, Status::PAYLOAD_TOO_SHORT));
    let mut s = nop;
    s.opcode = Opcode::LAUNCH as u16;
    s.flags = vgpu_proto::queue::sqe_flags::INLINE;
    s.payload_len = 64 * 1024;
    cases.push((s, Status::INLINE_TOO_LONG));
    for (i, (sqe, want)) in cases.into_iter().enumerate() {
        let mut e = sqe;
        e.cid = 100 + i as u32;
        c.q.submit_raw(bytemuck::cast_ref(&e), &[]);
        let r = c
            .next(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no completion for case {i}"));
        assert_eq!((r.cid, r.status()), (100 + i as u32, want), "case {i}");
        assert_eq!(
            c.io(0, Command::NOP(Zeroable::zeroed()), &[]).status(),
            Status::SUCCESS,
            "device still serves after case {i}"
        );
    }
    // A structured payload that fails validation.
    let bad = vgpu_proto::payload::Copy2D {
        kind: 9,
        ..Zeroable::zeroed()
    };
    let r = c.io(
        0,
        Command::MEMCPY_2D(Zeroable::zeroed()),
        bytemuck::bytes_of(&bad),
    );
    assert_eq!(r.status(), Status::BAD_PAYLOAD);
    // An entry whose inline payload was not fully published.
    let raw = Request {
        cid: 55,
        notify: true,
        stream: 0,
        payload: Payload::Inline { len: 256 },
        command: Command::MEMCPY_HTOD(CopyHtoDArgs {
            dst: 1,
            len: 256,
            ..Zeroable::zeroed()
        }),
    }
    .encode();
    c.q.submit_raw(bytemuck::cast_ref(&raw), &[]);
    let r = c.next(Duration::from_secs(5)).unwrap();
    assert_eq!((r.cid, r.status()), (55, Status::INLINE_TRUNCATED));
    assert_eq!(
        c.io(0, Command::NOP(Zeroable::zeroed()), &[]).status(),
        Status::SUCCESS
    );
    drop((c, d));
    stub.join();
}

#[test]
fn cleanup_after_destroy_reset_and_disconnect() {
    let stub = Stub::start(2, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut a = d.pd_client(1, 1 << 20, 0);
    let mut b = d.pd_client(2, 1 << 20, 0);
    for cl in [&mut a, &mut b] {
        cl.mem_alloc(1 << 16);
        cl.io(0, Command::STREAM_CREATE(Zeroable::zeroed()), &[]);
        cl.io(0, Command::EVENT_CREATE(Zeroable::zeroed()), &[]);
    }
    let t = d.stats(0);
    assert_eq!(
        (
            t.pds,
            t.allocations,
            t.streams,
            t.events,
            t.windows,
            t.queues
        ),
        (2, 2, 2, 2, 2, 2)
    );
    d.admin_ok(Command::PD_DESTROY(PdArgs {
        pd: a.pd,
        ..Zeroable::zeroed()
    }));
    let t = d.stats(0);
    assert_eq!(
        (
            t.pds,
            t.allocations,
            t.streams,
            t.events,
            t.windows,
            t.queues
        ),
        (1, 1, 1, 1, 1, 1)
    );
    assert_eq!(
        d.admin(Command::PD_STATS(PdStatsArgs {
            pd: a.pd,
            len: 4096,
            iova: d.admin_base,
            rsv: [0; 2]
        }))
        .status(),
        Status::BAD_OBJECT
    );
    // CTX_RESET frees a PD's objects but keeps its queue and window.
    assert_eq!(
        b.io(0, Command::CTX_RESET(Zeroable::zeroed()), &[])
            .status(),
        Status::SUCCESS
    );
    let s = d.stats(b.pd);
    assert_eq!(
        (s.allocations, s.streams, s.events, s.windows, s.queues),
        (0, 0, 0, 1, 1)
    );
    // Device reset drops everything.
    b.mem_alloc(4096);
    d.write_u32(0, regs::CONTROL, control::RESET);
    assert_eq!(stub.dev.totals().pds, 0);
    d.enable(features::ALL);
    let t = d.stats(0);
    assert_eq!((t.pds, t.allocations, t.objects_total()), (0, 0, 0));
    // Disconnect: a new connection starts from a clean device.
    let mut c = d.pd_client(3, 1 << 20, 0);
    c.mem_alloc(4096);
    drop((a, b, c, d));
    let mut d2 = BareDriver::connect(&stub);
    let t = d2.stats(0);
    assert_eq!((t.pds, t.allocations), (0, 0));
    drop(d2);
    stub.join();
}

trait Total {
    fn objects_total(&self) -> u64;
}

impl Total for vgpu_proto::info::ObjectCounts {
    fn objects_total(&self) -> u64 {
        self.objects()
    }
}

/// The work captured on `s`: `buf` filled with `fill` bytes and a `word` after them,
/// an event recorded and waited for, and the 12 bytes copied to window 1 at 0.
fn capture_work(c: &mut PdClient, s: u64, buf: u64, ev: u64, fill: u32, word: u32) {
    memset(c, s, buf, 8, fill, 1, false);
    memset(c, s, buf + 8, 1, word, 4, false);
    let record = handle(ev);
    c.post(s, Command::EVENT_RECORD(record), &[], false);
    let wait = StreamWaitEventArgs {
        event: ev,
        ..Zeroable::zeroed()
    };
    c.post(s, Command::STREAM_WAIT_EVENT(wait), &[], false);
    c.copy_to_window(s, buf, 12, 0);
}

#[test]
fn capture_and_replay_graphs() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    let buf = c.mem_alloc(4096);
    let s = non_blocking_stream(&mut c);
    let ev = c
        .io(0, Command::EVENT_CREATE(Zeroable::zeroed()), &[])
        .result0;
    assert_eq!(
        c.io(0, Command::STREAM_BEGIN_CAPTURE(Zeroable::zeroed()), &[])
            .status(),
        Status::BAD_ARGUMENT,
        "target stream 0"
    );
    assert_eq!(
        c.io(s, Command::STREAM_BEGIN_CAPTURE(Zeroable::zeroed()), &[])
            .status(),
        Status::SUCCESS
    );
    // Captured work does not run.
    capture_work(&mut c, s, buf, ev, 3, 0xAABB_CCDD);
    assert_eq!(
        c.io(s, Command::STREAM_QUERY(Zeroable::zeroed()), &[])
            .status(),
        Status::STREAM_CAPTURE_UNSUPPORTED
    );
    let g = c.io(s, Command::STREAM_END_CAPTURE(Zeroable::zeroed()), &[]);
    assert_eq!(g.status(), Status::SUCCESS);
    assert_eq!(
        d.read(c.window, 12),
        vec![0; 12],
        "nothing ran during capture"
    );
    let exec = c.io(
        0,
        Command::GRAPH_INSTANTIATE(GraphInstantiateArgs {
            graph: g.result0,
            ..Zeroable::zeroed()
        }),
        &[],
    );
    assert_eq!(exec.status(), Status::SUCCESS);
    c.post(s, Command::GRAPH_LAUNCH(handle(exec.result0)), &[], false);
    assert_eq!(c.synchronize(s), Status::SUCCESS);
    let mut want = vec![3u8; 8];
    want.extend_from_slice(&0xAABB_CCDDu32.to_le_bytes());
    assert_eq!(d.read(c.window, 12), want);
    assert_eq!(
        c.io(0, Command::EVENT_QUERY(handle(ev)), &[]).status(),
        Status::SUCCESS
    );
    // A second capture of the same shape updates the executable graph; a different one does not.
    c.io(s, Command::STREAM_BEGIN_CAPTURE(Zeroable::zeroed()), &[]);
    capture_work(&mut c, s, buf, ev, 4, 5);
    let g2 = c
        .io(s, Command::STREAM_END_CAPTURE(Zeroable::zeroed()), &[])
        .result0;
    let up = c.io(
        0,
        Command::GRAPH_EXEC_UPDATE(GraphExecUpdateArgs {
            exec: exec.result0,
            graph: g2,
            ..Zeroable::zeroed()
        }),
        &[],
    );
    assert_eq!((up.status(), up.result0), (Status::SUCCESS, 0));
    c.post(s, Command::GRAPH_LAUNCH(handle(exec.result0)), &[], false);
    assert_eq!(c.synchronize(s), Status::SUCCESS);
    assert_eq!(&d.read(c.window, 12)[..9], &[4, 4, 4, 4, 4, 4, 4, 4, 5]);
    c.io(s, Command::STREAM_BEGIN_CAPTURE(Zeroable::zeroed()), &[]);
    memset(&mut c, s, buf, 8, 4, 1, false);
    let g3 = c
        .io(s, Command::STREAM_END_CAPTURE(Zeroable::zeroed()), &[])
        .result0;
    let up = c.io(
        0,
        Command::GRAPH_EXEC_UPDATE(GraphExecUpdateArgs {
            exec: exec.result0,
            graph: g3,
            ..Zeroable::zeroed()
        }),
        &[],
    );
    assert_eq!(up.status(), Status::GRAPH_EXEC_UPDATE_FAILURE);
    // Synchronizing a capturing stream invalidates the capture.
    c.io(s, Command::STREAM_BEGIN_CAPTURE(Zeroable::zeroed()), &[]);
    assert_eq!(c.synchronize(s), Status::STREAM_CAPTURE_UNSUPPORTED);
    assert_eq!(
        c.io(s, Command::STREAM_END_CAPTURE(Zeroable::zeroed()), &[])
            .status(),
        Status::STREAM_CAPTURE_INVALIDATED
    );
    assert_eq!(
        c.io(s, Command::STREAM_END_CAPTURE(Zeroable::zeroed()), &[])
            .status(),
        Status::STREAM_CAPTURE_UNMATCHED
    );
    let st = d.stats(c.pd);
    assert_eq!((st.graphs, st.graph_execs), (3, 1));
    for h in [g.result0, g2, g3] {
        assert_eq!(
            c.io(0, Command::GRAPH_DESTROY(handle(h)), &[]).status(),
            Status::SUCCESS
        );
    }
    assert_eq!(
        c.io(0, Command::GRAPH_EXEC_DESTROY(handle(exec.result0)), &[])
            .status(),
        Status::SUCCESS
    );
    let st = d.stats(c.pd);
    assert_eq!((st.graphs, st.graph_execs), (0, 0));
    drop((c, d));
    stub.join();
}

/// Window 1 of `c`, as WINDOW_UNREGISTER names it.
fn window_args(c: &PdClient) -> WindowArgs {
    WindowArgs {
        pd: c.pd,
        window: 1,
        ..Zeroable::zeroed()
    }
}

#[test]
fn an_unregistered_window_is_never_accessed_again() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    let buf = c.mem_alloc(4096);
    let s = non_blocking_stream(&mut c);
    memset(&mut c, s, buf, 32, 0x5A, 1, false);
    assert_eq!(c.synchronize(s), Status::SUCCESS);
    // A graph that copies into the window...
    c.io(s, Command::STREAM_BEGIN_CAPTURE(Zeroable::zeroed()), &[]);
    c.copy_to_window(s, buf, 12, 0);
    let g = c.io(s, Command::STREAM_END_CAPTURE(Zeroable::zeroed()), &[]);
    assert_eq!(g.status(), Status::SUCCESS);
    let exec = c.io(
        0,
        Command::GRAPH_INSTANTIATE(GraphInstantiateArgs {
            graph: g.result0,
            ..Zeroable::zeroed()
        }),
        &[],
    );
    assert_eq!(exec.status(), Status::SUCCESS);
    // ...and a copy into it queued behind a host function.
    let hf = c.post(s, Command::HOST_FUNC(handle(0x77)), &[], false);
    c.copy_to_window(s, buf, 12, 16);
    let cb = c.next(Duration::from_secs(5)).expect("callback");
    assert_eq!((cb.cid, cb.result0), (hf, 0x77));
    // The queue is served in order: once a NOP after the copy completes, the copy has been
    // taken and queued on the stream, holding its grant. Unregistering before that would
    // refuse the copy at submission instead, a completion of its own.
    assert_eq!(
        c.io(0, Command::NOP(Zeroable::zeroed()), &[]).status(),
        Status::SUCCESS
    );
    // The driver takes the window back; from now on its pages may hold anything.
    d.admin_ok(Command::WINDOW_UNREGISTER(window_args(&c)));
    c.post(0, Command::HOST_FUNC_DONE(handle(0x77)), &[], false);
    assert_eq!(c.synchronize(s), Status::BAD_WINDOW, "the queued copy");
    c.post(s, Command::GRAPH_LAUNCH(handle(exec.result0)), &[], false);
    assert_eq!(c.synchronize(s), Status::BAD_WINDOW, "the graph's copy");
    assert_eq!(d.read(c.window, 32), vec![0; 32], "nothing written");
    // A window registered again under the same id is a new grant.
    d.admin_ok(Command::WINDOW_REGISTER(WindowRegisterArgs {
        pd: c.pd,
        window: 1,
        iova: c.window,
        len: 1 << 20,
        access: 3,
        rsv0: 0,
    }));
    c.post(s, Command::GRAPH_LAUNCH(handle(exec.result0)), &[], false);
    assert_eq!(
        c.synchronize(s),
        Status::BAD_WINDOW,
        "the graph keeps the old grant"
    );
    c.copy_to_window(s, buf, 12, 0);
    assert_eq!(c.synchronize(s), Status::SUCCESS);
    assert_eq!(d.read(c.window, 12), vec![0x5A; 12]);
    drop((c, d));
    stub.join();
}

/// Captures on `s` what `record` submits and returns STREAM_END_CAPTURE's completion.
fn capture(c: &mut PdClient, s: u64, record: impl FnOnce(&mut PdClient)) -> vgpu_proto::Cqe {
    let begin = c.io(s, Command::STREAM_BEGIN_CAPTURE(Zeroable::zeroed()), &[]);
    assert_eq!(begin.status(), Status::SUCCESS);
    record(c);
    c.io(s, Command::STREAM_END_CAPTURE(Zeroable::zeroed()), &[])
}

/// Instantiates `graph`.
fn instantiate(c: &mut PdClient, graph: u64) -> u64 {
    let e = c.io(
        0,
        Command::GRAPH_INSTANTIATE(GraphInstantiateArgs {
            graph,
            ..Zeroable::zeroed()
        }),
        &[],
    );
    assert_eq!(e.status(), Status::SUCCESS);
    e.result0
}

/// Records two launches of `exec` into the capture on `s`; the status of the second.
fn launch_twice(c: &mut PdClient, s: u64, exec: u64) -> Status {
    let mut last = Status::SUCCESS;
    for _ in 0..2 {
        let cid = c.post(s, Command::GRAPH_LAUNCH(handle(exec)), &[], true);
        let done = c.next(Duration::from_secs(5)).expect("completion");
        assert_eq!(done.cid, cid);
        last = done.status();
    }
    last
}

#[test]
fn graphs_cannot_grow_without_bound() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    let buf = c.mem_alloc(4096);
    let s = non_blocking_stream(&mut c);
    let g = capture(&mut c, s, |c| {
        memset(c, s, buf, 4, 1, 1, false);
    });
    let mut exec = instantiate(&mut c, g.result0);
    // Each capture of two launches of the last graph doubles it.
    let mut nodes = 1;
    loop {
        let mut second = Status::SUCCESS;
        let g = capture(&mut c, s, |c| second = launch_twice(c, s, exec));
        if nodes * 2 > 65536 {
            assert_eq!(second, Status::OUT_OF_MEMORY, "the launch past the bound");
            assert_eq!(g.status(), Status::OUT_OF_MEMORY, "the capture it ended");
            break;
        }
        assert_eq!((second, g.status()), (Status::SUCCESS, Status::SUCCESS));
        nodes *= 2;
        exec = instantiate(&mut c, g.result0);
    }
    assert_eq!(nodes, 65536);
    // The largest graph still runs.
    c.post(s, Command::GRAPH_LAUNCH(handle(exec)), &[], false);
    assert_eq!(c.synchronize(s), Status::SUCCESS);
    // Graphs of the largest size, until the PD's budget for graphs is spent.
    let mut graphs = Vec::new();
    let refused = loop {
        let g = capture(&mut c, s, |c| {
            let cid = c.post(s, Command::GRAPH_LAUNCH(handle(exec)), &[], true);
            assert_eq!(c.next(Duration::from_secs(5)).map(|d| d.cid), Some(cid));
        });
        if g.status() != Status::SUCCESS {
            break g.status();
        }
        graphs.push(g.result0);
        assert!(graphs.len() < 1000, "no budget for graphs");
    };
    assert_eq!(refused, Status::OUT_OF_MEMORY);
    assert!(graphs.len() >= 4, "{} graphs of 2^16 nodes", graphs.len());
    // Destroying one gives its room back.
    let last = graphs.pop().expect("a graph");
    assert_eq!(
        c.io(0, Command::GRAPH_DESTROY(handle(last)), &[]).status(),
        Status::SUCCESS
    );
    let g = capture(&mut c, s, |c| {
        memset(c, s, buf, 4, 2, 1, false);
    });
    assert_eq!(g.status(), Status::SUCCESS);
    drop((c, d));
    stub.join();
}

/// All PDs together get no more device memory than the device has, whatever their quotas:
/// the soft device keeps it in host RAM.
#[test]
fn pds_together_get_no_more_memory_than_the_device_has() {
    let stub = Stub::start(1, 4 << 20);
    let mut d = BareDriver::connect(&stub);
    let mut a = d.pd_client(1, 1 << 16, 0);
    let mut b = d.pd_client(2, 1 << 16, 0);
    let alloc = |c: &mut PdClient, size: u64| {
        c.io(
            0,
            Command::MEM_ALLOC(MemAllocArgs {
                size,
                ..Zeroable::zeroed()
            }),
            &[],
        )
    };
    let x = alloc(&mut a, 3 << 20);
    assert_eq!(x.status(), Status::SUCCESS);
    assert_eq!(
        alloc(&mut b, 3 << 20).status(),
        Status::OUT_OF_MEMORY,
        "within b's quota, past the device"
    );
    let info = b.io(0, Command::MEM_GET_INFO(Zeroable::zeroed()), &[]);
    assert_eq!(
        (info.result0, info.result1),
        (1 << 20, 4 << 20),
        "(free, total)"
    );
    assert_eq!(alloc(&mut b, 1 << 20).status(), Status::SUCCESS);
    // Freed memory, and a destroyed PD's memory, is the device's again.
    assert_eq!(
        a.io(0, Command::MEM_FREE(handle(x.result0)), &[]).status(),
        Status::SUCCESS
    );
    assert_eq!(alloc(&mut b, 3 << 20).status(), Status::SUCCESS);
    let pd = b.pd;
    drop(b);
    d.admin_ok(Command::PD_DESTROY(PdArgs {
        pd,
        ..Zeroable::zeroed()
    }));
    assert_eq!(alloc(&mut a, 4 << 20).status(), Status::SUCCESS);
    drop((a, d));
    stub.join();
}

/// A PD cannot make the device hold unbounded work: commands queued behind a stream that
/// never moves, and stream workers, are bounded per PD (spec §7.9).
#[test]
fn queued_work_and_stream_workers_are_bounded_per_pd() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    let buf = c.mem_alloc(4096);
    let s = non_blocking_stream(&mut c);
    let hf = c.post(s, Command::HOST_FUNC(handle(0x55)), &[], false);
    let cb = c.next(Duration::from_secs(5)).expect("callback");
    assert_eq!(cb.cid, hf);
    // 2^16 commands (the host function among them) fit; past them, each is refused.
    let (mut refused, mut other) = (0, 0);
    for _ in 0..(1 << 16) - 1 + 100 {
        memset(&mut c, s, buf, 4, 1, 1, false);
        while let Some(r) = c.q.poll() {
            if r.status() == Status::OUT_OF_MEMORY && r.flags & cqe_flags::ASYNC_ERROR != 0 {
                refused += 1;
            } else {
                other += 1;
            }
        }
    }
    while let Some(r) = c.next(Duration::from_millis(200)) {
        assert_eq!(r.status(), Status::OUT_OF_MEMORY);
        refused += 1;
    }
    assert_eq!((refused, other), (100, 0));
    c.post(0, Command::HOST_FUNC_DONE(handle(0x55)), &[], false);
    assert_eq!(c.synchronize(s), Status::SUCCESS, "the queued work runs");
    // Stream workers.
    let mut streams = 0;
    loop {
        let r = c.io(0, Command::STREAM_CREATE(Zeroable::zeroed()), &[]);
        if r.status() != Status::SUCCESS {
            assert_eq!(r.status(), Status::OUT_OF_MEMORY);
            break;
        }
        streams += 1;
        assert!(streams < 10_000, "no bound on streams");
    }
    assert_eq!(streams, 512 - 2, "the NULL stream and s are workers too");
    drop((c, d));
    stub.join();
}

/// A client that never reads its completions stalls only itself: its stream waits for room
/// in its full completion ring while another PD is served, and destroying its PD does not
/// wait for room that never comes.
#[test]
fn a_client_that_never_reads_completions_stalls_only_itself() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut a = d.pd_client(1, 1 << 20, 0);
    let mut b = d.pd_client(2, 1 << 20, 0);
    let buf = a.mem_alloc(4096);
    // 300 NOTIFY memsets: more completions than a's ring of 256 holds, never read.
    for _ in 0..300 {
        memset(&mut a, 0, buf, 4, 1, 1, true);
    }
    std::thread::sleep(Duration::from_millis(200));
    // b is served meanwhile.
    let mine = b.mem_alloc(4096);
    for i in 0..20u8 {
        memset(&mut b, 0, mine, 4, u32::from(i), 1, false);
        assert_eq!(b.synchronize(0), Status::SUCCESS);
    }
    let t0 = std::time::Instant::now();
    d.admin_ok(Command::PD_DESTROY(PdArgs {
        pd: a.pd,
        ..Zeroable::zeroed()
    }));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "PD_DESTROY took {:?}",
        t0.elapsed()
    );
    assert_eq!(b.synchronize(0), Status::SUCCESS);
    drop((a, b, d));
    stub.join();
}

/// A DMA_UNMAP that would split a mapping cannot be honoured: vgpu-stub's vfio-user backend
/// answers it with an error and keeps the mapping (before, it answered OK while the device
/// could still reach the memory). Unmapping the whole mapping is answered OK.
#[test]
fn an_unmap_the_device_cannot_honour_is_refused() {
    use vfio_user::{DmaMapFlags, DmaUnmapFlags, ServerBackend};
    let dev = std::sync::Arc::new(vgpu_stub::device::Device::new(
        Default::default(),
        std::sync::Arc::new(vgpu_stub::exec::soft::SoftExecutor::new(Default::default())),
    ));
    let mut b = vgpu_stub::server::Backend::new(dev.clone());
    let file = tempfile::tempfile().unwrap();
    file.set_len(1 << 20).unwrap();
    b.dma_map(
        DmaMapFlags::READ | DmaMapFlags::WRITE,
        0,
        1 << 32,
        1 << 20,
        Some(file),
    )
    .unwrap();
    assert!(
        b.dma_unmap(DmaUnmapFlags::empty(), 1 << 32, 4096).is_err(),
        "half an unmap answered OK"
    );
    assert!(dev.mem.snapshot().covers(1 << 32, 1 << 20, true), "kept");
    b.dma_unmap(DmaUnmapFlags::empty(), 1 << 32, 1 << 20)
        .unwrap();
    assert!(!dev.mem.snapshot().covers(1 << 32, 1, false), "gone");
}
