//! The client core against the in-test fake driver and device (tests/common).

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytemuck::Zeroable;
use common::{fnv1a, DeviceConfig, DriverConfig, FakeDriver, Stats, WelcomeMode};
use vgpu_proto::cmd::{CopyHtoDArgs, HandleArgs, MemAllocArgs, Payload, Request};
use vgpu_proto::control::error_code;
use vgpu_proto::queue::cqe_flags;
use vgpu_proto::{Command, Status};
use vgpu_shim::{ClientError, ConnectOptions, Connection};

fn nop() -> Request {
    Request {
        cid: 0,
        notify: false,
        stream: 0,
        payload: Payload::None,
        command: Command::NOP(Zeroable::zeroed()),
    }
}

/// MEMCPY_HTOD of `len` inline bytes, with NOTIFY so that it completes.
fn htod(len: usize) -> Request {
    Request {
        cid: 0,
        notify: true,
        stream: 0,
        payload: Payload::Inline { len: len as u32 },
        command: Command::MEMCPY_HTOD(CopyHtoDArgs {
            dst: 0x7f00_0000_0000,
            len: len as u64,
            ..Zeroable::zeroed()
        }),
    }
}

/// MEM_ALLOC, which the fake device completes after `us` microseconds with result0 = us.
fn slow(us: u64) -> Request {
    Request {
        cid: 0,
        notify: false,
        stream: 0,
        payload: Payload::None,
        command: Command::MEM_ALLOC(MemAllocArgs {
            size: us,
            ..Zeroable::zeroed()
        }),
    }
}

fn handle_cmd(make: fn(HandleArgs) -> Command, h: u64) -> Request {
    Request {
        cid: 0,
        notify: false,
        stream: 0,
        payload: Payload::None,
        command: make(HandleArgs {
            handle: h,
            ..Zeroable::zeroed()
        }),
    }
}

fn driver(cfg: DriverConfig) -> FakeDriver {
    FakeDriver::start(cfg)
}

#[test]
fn connect_reports_device_info_and_sends_hello() {
    let d = driver(DriverConfig::default());
    let mut opts = d.options();
    opts.queue_depth_log2 = 5;
    opts.window_bytes = 3 * 4096;
    let c = Connection::connect(&opts).unwrap();
    assert_eq!(c.pd(), 7);
    assert_eq!(c.device_info().name(), "Fake VGPU H100");
    assert_eq!(c.device_info().driver_version(), "570.86.15");
    assert_eq!(c.device_info().cc_major, 9);
    assert_eq!(c.queue().depth(), 32);
    assert_eq!(c.queue().max_inline(), 31 * 64);
    assert_eq!(c.queue().qid(), 3);
    let w = c.window(c.first_window()).expect("first window");
    assert_eq!(w.id(), 1);
    assert_eq!(w.len(), 3 * 4096);
    assert!(c.window(99).is_none());

    let hellos = d.stats.hellos.lock().unwrap().clone();
    assert_eq!(hellos.len(), 1);
    let h = hellos[0];
    assert_eq!(h.version, 1);
    assert_eq!(h.pid, std::process::id());
    assert_eq!(h.queue_depth_log2, 5);
    assert_eq!(h.window_bytes, 3 * 4096);
    assert_eq!(&h.name[..17], b"fake-driver-test\0");
}

#[test]
fn windows_status_and_goodbye() {
    let d = driver(DriverConfig::default());
    let mut c = Connection::connect(&d.options()).unwrap();
    // The first window is shared memory: bytes written through one view are in the file.
    let w = c.window(1).unwrap();
    w.write(100, b"hello window").unwrap();
    let mut back = [0u8; 12];
    w.read(100, &mut back).unwrap();
    assert_eq!(&back, b"hello window");
    assert!(w.write(w.len() - 1, b"xy").is_err());

    let id = c.alloc_window(10_000).unwrap();
    assert_eq!(id, 2);
    let w2 = c.window(id).unwrap();
    assert_eq!(w2.len(), 12_288);
    w2.write(12_280, &[7; 8]).unwrap();
    assert_eq!(c.windows().count(), 2);

    let s = c.status().unwrap();
    assert_eq!(s, "{\"clients\":1,\"windows\":2}");

    match c.alloc_window(1 << 40) {
        Err(e @ ClientError::Refused { .. }) => {
            assert!(
                matches!(e, ClientError::Refused { code, .. } if code == error_code::NO_MEMORY)
            );
            assert_eq!(e.status(), Status::OUT_OF_MEMORY);
        }
        r => panic!("expected NO_MEMORY, got {r:?}"),
    }
    c.free_window(id).unwrap();
    assert!(c.window(id).is_none());
    assert!(matches!(
        c.free_window(id),
        Err(ClientError::UnknownWindow(2))
    ));
    assert!(matches!(c.alloc_window(0), Err(ClientError::BadRequest(_))));
    // The connection still works after the refusals.
    assert_eq!(
        c.queue().call(nop(), &[]).unwrap().status(),
        Status::SUCCESS
    );

    drop(c);
    d.wait_until("GOODBYE", |s| Stats::get(&s.goodbyes) == 1);
}

#[test]
fn nop_round_trips() {
    let d = driver(DriverConfig::default());
    let c = Connection::connect(&d.options()).unwrap();
    let q = c.queue();
    let mut cids = Vec::new();
    for _ in 0..100 {
        let before = Instant::now();
        let cqe = q.call(nop(), &[]).unwrap();
        assert!(before.elapsed() < Duration::from_secs(5));
        assert_eq!(cqe.status(), Status::SUCCESS);
        assert_eq!(cqe.opcode, vgpu_proto::Opcode::NOP as u16);
        assert_eq!(cqe.flags & !cqe_flags::PHASE, 0);
        cids.push(cqe.cid);
    }
    cids.dedup();
    assert_eq!(cids.len(), 100, "every call gets its own cid");
    assert!(q.take_events().is_empty());
}

#[test]
fn indices_wrap_many_times() {
    // 16-entry rings: 12 000 submissions wrap the indices 750 times.
    let d = driver(DriverConfig::default());
    let c = Connection::connect(&d.options()).unwrap();
    let q = c.queue();
    for _ in 0..6000 {
        assert_eq!(q.call(nop(), &[]).unwrap().status(), Status::SUCCESS);
    }
    // Pipelined: batches of 12 submissions, then their completions (in any order).
    for _ in 0..500 {
        let cids: Vec<u32> = (0..12).map(|_| q.submit(nop(), &[]).unwrap()).collect();
        for cid in cids.into_iter().rev() {
            let cqe = q.wait(cid).unwrap();
            assert_eq!(cqe.cid, cid);
        }
    }
    assert_eq!(Stats::get(&d.stats.entries), 12_000);
    assert_eq!(Stats::get(&d.stats.bad_entries), 0);
}

#[test]
fn inline_payloads_wrap_around_the_ring_end() {
    let d = driver(DriverConfig::default());
    let c = Connection::connect(&d.options()).unwrap();
    let q = c.queue();
    let max = q.max_inline() as usize;
    assert_eq!(max, 15 * 64);
    let mut seed = 0x1234_5678u32;
    for i in 0..400usize {
        // Lengths from 1 to the maximum, including exact multiples of the slot size.
        let len = match i % 4 {
            0 => 1 + i % 200,
            1 => 64 * (1 + i % 15),
            2 => max,
            _ => 1 + (i * 37) % max,
        };
        let data: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        let cqe = q.call(htod(len), &data).unwrap();
        assert_eq!(cqe.status(), Status::SUCCESS, "len {len}");
        assert_eq!(cqe.result1, len as u64);
        assert_eq!(
            cqe.result0,
            fnv1a(&data),
            "payload of {len} bytes arrived intact"
        );
    }
    assert!(Stats::get(&d.stats.wrapped_payloads) > 50);
    assert_eq!(Stats::get(&d.stats.bad_entries), 0);
}

#[test]
fn bad_inline_requests_are_refused_locally() {
    let d = driver(DriverConfig::default());
    let c = Connection::connect(&d.options()).unwrap();
    let q = c.queue();
    let max = q.max_inline() as usize;
    let e = q.submit(htod(max + 1), &vec![0; max + 1]).unwrap_err();
    assert!(
        matches!(e, ClientError::InlineTooLong { len, max: m } if len == max + 1 && m as usize == max)
    );
    assert_eq!(e.status(), Status::INVALID_VALUE);
    assert!(matches!(
        q.submit(htod(10), &[0; 9]),
        Err(ClientError::BadRequest(_))
    ));
    assert!(matches!(
        q.submit(nop(), &[1]),
        Err(ClientError::BadRequest(_))
    ));
    // Nothing reached the ring.
    assert_eq!(q.call(nop(), &[]).unwrap().status(), Status::SUCCESS);
    assert_eq!(Stats::get(&d.stats.entries), 1);
}

#[test]
fn full_ring_with_a_slow_device() {
    // A 4-entry ring and a device that takes 300 µs per entry: submit() must wait for
    // room (and consume completions meanwhile) many times.
    let d = driver(DriverConfig {
        depth_log2: 2,
        device: DeviceConfig {
            entry_delay: Duration::from_micros(300),
            ..DeviceConfig::default()
        },
        ..DriverConfig::default()
    });
    let c = Connection::connect(&d.options()).unwrap();
    let q = c.queue();
    let mut cids = Vec::new();
    for i in 0..200usize {
        if i % 10 == 0 {
            // Entries with payloads take 3 or all 4 of the 4 slots.
            let len = 65 + i % 128;
            cids.push(q.submit(htod(len), &vec![i as u8; len]).unwrap());
        } else {
            cids.push(q.submit(nop(), &[]).unwrap());
        }
    }
    for cid in cids {
        assert_eq!(q.wait(cid).unwrap().status(), Status::SUCCESS);
    }
    assert_eq!(Stats::get(&d.stats.entries), 200);
}

#[test]
fn full_completion_ring_parks_the_device_until_cq_head_moves() {
    let d = driver(DriverConfig {
        depth_log2: 2,
        ..DriverConfig::default()
    });
    let c = Connection::connect(&d.options()).unwrap();
    let q = c.queue();
    // Four completions fill the completion ring; nobody consumes them yet.
    let mut cids: Vec<u32> = (0..4).map(|_| q.submit(nop(), &[]).unwrap()).collect();
    d.wait_until("four entries consumed", |s| Stats::get(&s.entries) == 4);
    std::thread::sleep(Duration::from_millis(50));
    // The fifth entry cannot complete: the device parks with PARKED = 2.
    cids.push(q.submit(nop(), &[]).unwrap());
    d.wait_until("the device to park on a full CQ", |s| {
        Stats::get(&s.parks_cq_full) >= 1
    });
    // Consuming completions publishes CQ_HEAD and rings the doorbell.
    for cid in cids {
        assert_eq!(q.wait(cid).unwrap().cid, cid);
    }
    assert!(Stats::get(&d.stats.doorbells) >= 2);
}

#[test]
fn sleeps_on_the_interrupt_when_the_device_answers_late() {
    let d = driver(DriverConfig {
        device: DeviceConfig {
            idle_spin: Duration::ZERO,
            answer_delay: Duration::from_millis(30),
            ..DeviceConfig::default()
        },
        ..DriverConfig::default()
    });
    let mut opts = d.options();
    opts.spin = Duration::from_micros(10);
    let c = Connection::connect(&opts).unwrap();
    let q = c.queue();
    for _ in 0..10 {
        // Let the device park before each submission.
        std::thread::sleep(Duration::from_millis(5));
        let t = Instant::now();
        assert_eq!(q.call(nop(), &[]).unwrap().status(), Status::SUCCESS);
        assert!(t.elapsed() >= Duration::from_millis(25));
    }
    // Each call armed IRQ_ARMED and slept on the interrupt eventfd, and the device, parked
    // between commands, was woken by the doorbell each time.
    assert!(Stats::get(&d.stats.interrupts) >= 9, "{:?}", d.stats);
    assert!(Stats::get(&d.stats.doorbells) >= 9, "{:?}", d.stats);
    assert!(Stats::get(&d.stats.parks_idle) >= 9, "{:?}", d.stats);
}

#[test]
fn concurrent_callers_get_their_own_out_of_order_completions() {
    let d = driver(DriverConfig {
        depth_log2: 3,
        ..DriverConfig::default()
    });
    let c = Connection::connect(&d.options()).unwrap();
    let q = c.queue().clone();

    // One slow call (1 s) while this thread does quick ones: the quick ones finish first
    // (their completions overtake the slow one's), and the slow call still gets its own.
    let slow_thread = {
        let q = q.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let cqe = q.call(slow(1_000_000), &[]).unwrap();
            (cqe, t.elapsed(), Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..100 {
        assert_eq!(q.call(nop(), &[]).unwrap().status(), Status::SUCCESS);
    }
    let quick_done = Instant::now();
    let (cqe, slow_took, slow_done) = slow_thread.join().unwrap();
    assert_eq!(cqe.result0, 1_000_000);
    assert!(slow_took >= Duration::from_secs(1));
    assert!(
        quick_done < slow_done,
        "quick calls finished before the slow one"
    );

    // Four threads, each with a random mix of delays: every result matches its request.
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let q = q.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut x = t + 1;
                for _ in 0..150 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let us = (x >> 33) % 3000 + 1;
                    let cqe = q.call(slow(us), &[]).unwrap();
                    assert_eq!(cqe.result0, us);
                    assert_eq!(q.call(nop(), &[]).unwrap().status(), Status::SUCCESS);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(q.take_events().is_empty());
}

#[test]
fn callbacks_and_async_errors_are_kept_apart() {
    let d = driver(DriverConfig::default());
    let c = Connection::connect(&d.options()).unwrap();
    let q = c.queue();
    let hf = q
        .submit(handle_cmd(Command::HOST_FUNC, 0xC0FFEE), &[])
        .unwrap();
    let bad = q
        .submit(handle_cmd(Command::EVENT_RECORD, 0xBAD), &[])
        .unwrap();
    // This call consumes the callback and the async error before its own completion: the
    // callback goes to the callbacks (for the thread that runs host functions), the error to
    // the events (for the next API call to report).
    assert_eq!(q.call(nop(), &[]).unwrap().status(), Status::SUCCESS);
    let ev = q.take_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].cid, bad);
    assert_ne!(ev[0].flags & cqe_flags::ASYNC_ERROR, 0);
    assert_eq!(ev[0].status(), Status::INVALID_HANDLE);
    let cb = q.take_callbacks();
    assert_eq!(cb.len(), 1, "{cb:?}");
    assert_eq!(cb[0].cid, hf);
    assert_ne!(cb[0].flags & cqe_flags::CALLBACK, 0);
    assert_eq!(cb[0].result0, 0xC0FFEE);
    assert!(q.take_events().is_empty() && q.take_callbacks().is_empty());

    // wait_callbacks blocks until a callback arrives.
    let hf2 = q
        .submit(handle_cmd(Command::HOST_FUNC, 0xBEEF), &[])
        .unwrap();
    let cb = q.wait_callbacks(Duration::from_secs(5)).unwrap();
    assert_eq!(cb.len(), 1);
    assert_eq!((cb[0].cid, cb[0].result0), (hf2, 0xBEEF));
    // ...and returns nothing when none comes; nor does wait_events.
    let t = Instant::now();
    assert!(q
        .wait_callbacks(Duration::from_millis(50))
        .unwrap()
        .is_empty());
    assert!(q.wait_events(Duration::from_millis(50)).unwrap().is_empty());
    assert!(t.elapsed() >= Duration::from_millis(100));

    // A caller waiting for an async command's cid gets its ASYNC_ERROR completion.
    let cqe = q
        .call(handle_cmd(Command::EVENT_RECORD, 0xBAD), &[])
        .unwrap();
    assert_eq!(cqe.status(), Status::INVALID_HANDLE);
    assert!(q.take_events().is_empty());
}

#[test]
fn a_device_that_never_answers_times_out() {
    let d = driver(DriverConfig {
        device: DeviceConfig {
            never_answer: true,
            ..DeviceConfig::default()
        },
        ..DriverConfig::default()
    });
    let mut opts = d.options();
    opts.timeout = Duration::from_millis(300);
    let c = Connection::connect(&opts).unwrap();
    for _ in 0..2 {
        let t = Instant::now();
        let e = c.queue().call(nop(), &[]).unwrap_err();
        let took = t.elapsed();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
        assert_eq!(e.status(), Status::TIMEOUT);
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }
    assert_eq!(Stats::get(&d.stats.entries), 2);
}

#[test]
fn the_timeout_comes_from_the_environment() {
    // Only this test touches the variables, and only through from_env's reading of them.
    let opts = ConnectOptions::from_env();
    assert!(!opts.name.is_empty());
    assert_eq!(opts.queue_depth_log2, 0);
    if std::env::var_os("VGPU_TIMEOUT_MS").is_none() {
        assert_eq!(opts.timeout, Duration::from_millis(600_000));
    }
    if std::env::var_os("VGPU_SOCKET").is_none() {
        assert_eq!(
            opts.socket.to_str(),
            Some(vgpu_proto::control::DEFAULT_SOCKET)
        );
    }
}

#[test]
fn no_driver() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ConnectOptions::from_env();
    opts.socket = dir.path().join("missing.sock");
    let e = Connection::connect(&opts).unwrap_err();
    assert!(matches!(e, ClientError::NoDriver { .. }), "{e}");
    assert_eq!(e.status(), Status::NO_DEVICE);
    assert!(e.to_string().contains("missing.sock"));

    // A stale socket file that nobody listens on is no driver either.
    let stale = dir.path().join("stale.sock");
    let l = std::os::unix::net::UnixListener::bind(&stale).unwrap();
    drop(l);
    opts.socket = stale;
    let e = Connection::connect(&opts).unwrap_err();
    assert!(matches!(e, ClientError::NoDriver { .. }), "{e}");
}

#[test]
fn the_driver_refusing_hello_is_a_typed_error() {
    let d = driver(DriverConfig {
        welcome: WelcomeMode::Refuse(error_code::NO_QUEUES),
        ..DriverConfig::default()
    });
    let e = Connection::connect(&d.options()).unwrap_err();
    assert!(
        matches!(&e, ClientError::Refused { code, message } if *code == error_code::NO_QUEUES && message.contains("fake")),
        "{e}"
    );
    assert!(e.to_string().contains("NO_QUEUES"));
}

#[test]
fn a_driver_hanging_up_fails_pending_and_later_calls() {
    let d = driver(DriverConfig {
        device: DeviceConfig {
            never_answer: true,
            ..DeviceConfig::default()
        },
        hangup_after: Some(Duration::from_millis(200)),
        ..DriverConfig::default()
    });
    let mut c = Connection::connect(&d.options()).unwrap();
    let t = Instant::now();
    let e = c.queue().call(nop(), &[]).unwrap_err();
    assert!(matches!(e, ClientError::Disconnected), "{e}");
    assert_eq!(e.status(), Status::DEVICE_UNAVAILABLE);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "noticed without waiting for the timeout"
    );
    assert!(matches!(
        c.queue().call(nop(), &[]),
        Err(ClientError::Disconnected)
    ));
    assert!(matches!(c.status(), Err(ClientError::Disconnected)));
}

#[test]
fn dropping_the_connection_closes_the_queue_for_other_holders() {
    let d = driver(DriverConfig::default());
    let c = Connection::connect(&d.options()).unwrap();
    let q = c.queue().clone();
    assert_eq!(q.call(nop(), &[]).unwrap().status(), Status::SUCCESS);
    drop(c);
    assert!(matches!(q.call(nop(), &[]), Err(ClientError::Disconnected)));
    d.wait_until("GOODBYE", |s| s.goodbyes.load(Ordering::SeqCst) == 1);
}
