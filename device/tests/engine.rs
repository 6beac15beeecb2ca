//! The queue engine on its own: admin and I/O queues in guest RAM mapped straight into an
//! [`Engine`], and the fake executor of `vgpu-test-stack` behind it, which records what the
//! engine asks of it and answers as each test says. These tests pin down the engine's
//! part of the contract with every executor: what reaches the executor, with which
//! arguments, and what the guest sees for each answer.

use bytemuck::Zeroable;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use vgpu_os::shm::SharedMemory;
use vgpu_proto::cmd::{
    CopyDtoHArgs, CopyHtoDArgs, HandleArgs, MemAllocArgs, MemsetArgs, PdArgs, PdCreateArgs,
    PdQuotaArgs, QueueCreateArgs, WindowRegisterArgs,
};
use vgpu_proto::queue::{cqe_flags, QueueLayout};
use vgpu_proto::regs::features;
use vgpu_proto::{Command, Cqe, Status};
use vgpu_stub::engine::{Engine, Env};
use vgpu_stub::exec::Outcome;
use vgpu_stub::guest::GuestMemory;
use vgpu_stub::msix::Msix;
use vgpu_test_stack::executor::{FakeExecutor, Shared, FILL};
use vgpu_test_stack::queue::QueueClient;

const IOVA: u64 = 0x4000_0000;
const RAM: u64 = 8 << 20;
const WINDOW: u32 = 1;
const WINDOW_LEN: u64 = 64 << 10;

/// An engine on guest RAM, with the fake executor.
struct Rig {
    engine: Option<Arc<Engine>>,
    ram: Arc<SharedMemory>,
    next_free: u64,
    admin: QueueClient,
    fake: Arc<Shared>,
    fatal: Arc<Mutex<Vec<u32>>>,
}

/// One PD with window 1 and an I/O queue.
struct Tenant {
    pd: u32,
    window: u64,
    q: QueueClient,
}

fn doorbell(engine: Weak<Engine>, qid: u16) -> vgpu_test_stack::queue::Doorbell {
    Box::new(move |_tail| {
        if let Some(e) = engine.upgrade() {
            e.ring(qid)
        }
    })
}

impl Rig {
    fn start() -> Rig {
        vgpu_test_stack::init_logging();
        let file = tempfile::tempfile().unwrap();
        file.set_len(RAM).unwrap();
        let mem = Arc::new(GuestMemory::new());
        mem.map(IOVA, RAM, file.try_clone().unwrap(), 0, true)
            .unwrap();
        let ram = Arc::new(SharedMemory::from_file(file).unwrap());
        let fake = FakeExecutor::new();
        let fatal = Arc::new(Mutex::new(Vec::new()));
        let f = fatal.clone();
        let env = Env {
            mem,
            msix: Arc::new(Msix::new()),
            executor: Arc::new(fake.clone()),
            features: features::ALL,
            bus_master: Arc::new(AtomicBool::new(true)),
            on_fatal: Box::new(move |code| f.lock().unwrap().push(code)),
        };
        let layout = QueueLayout::new(5, 12).unwrap();
        let engine = Arc::new(Engine::start(env, IOVA, layout.depth_log2).unwrap());
        let admin = QueueClient::new(
            ram.clone(),
            0,
            0,
            layout,
            doorbell(Arc::downgrade(&engine), 0),
            None,
        );
        Rig {
            engine: Some(engine),
            ram,
            next_free: IOVA + layout.region_size() as u64,
            admin,
            fake: fake.shared,
            fatal,
        }
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let at = self.next_free.next_multiple_of(4096);
        self.next_free = at + len;
        assert!(self.next_free <= IOVA + RAM);
        at
    }

    fn admin(&mut self, command: Command) -> Cqe {
        self.admin.call(command, 0, &[])
    }

    fn pd_create(&mut self, quota: u64) -> Cqe {
        self.admin(Command::PD_CREATE(PdCreateArgs {
            mem_quota: quota,
            ..Zeroable::zeroed()
        }))
    }

    fn tenant(&mut self, qid: u16) -> Tenant {
        let c = self.pd_create(1 << 20);
        assert_eq!(c.status(), Status::SUCCESS);
        let pd = c.result0 as u32;
        let window = self.alloc(WINDOW_LEN);
        let c = self.admin(Command::WINDOW_REGISTER(WindowRegisterArgs {
            pd,
            window: WINDOW,
            iova: window,
            len: WINDOW_LEN,
            access: 3,
            rsv0: 0,
        }));
        assert_eq!(c.status(), Status::SUCCESS);
        let layout = QueueLayout::new(6, 15).unwrap();
        let base = self.alloc(layout.region_size() as u64);
        let c = self.admin(Command::QUEUE_CREATE(QueueCreateArgs {
            pd,
            qid,
            vector: qid,
            depth_log2: layout.depth_log2,
            base,
            ..Zeroable::zeroed()
        }));
        assert_eq!(c.status(), Status::SUCCESS);
        let engine = Arc::downgrade(self.engine.as_ref().unwrap());
        Tenant {
            pd,
            window,
            q: QueueClient::new(
                self.ram.clone(),
                (base - IOVA) as usize,
                qid,
                layout,
                doorbell(engine, qid),
                None,
            ),
        }
    }

    fn window_write(&self, t: &Tenant, off: u64, data: &[u8]) {
        let at = (t.window - IOVA + off) as usize;
        self.ram.write_bytes(at, data).unwrap();
    }

    fn window_read(&self, t: &Tenant, off: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        let at = (t.window - IOVA + off) as usize;
        self.ram.read_bytes(at, &mut v).unwrap();
        v
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(e) = self.engine.take() {
            match Arc::try_unwrap(e) {
                Ok(e) => e.shutdown(),
                Err(_) => panic!("the engine is still shared at the end of the test"),
            }
        }
    }
}

fn mem_alloc(t: &mut Tenant, size: u64) -> Cqe {
    t.q.call(
        Command::MEM_ALLOC(MemAllocArgs {
            size,
            ..Zeroable::zeroed()
        }),
        0,
        &[],
    )
}

fn sync(t: &mut Tenant) -> Cqe {
    t.q.call(Command::STREAM_SYNCHRONIZE(Zeroable::zeroed()), 0, &[])
}

fn whats(calls: Vec<vgpu_test_stack::executor::Call>) -> Vec<String> {
    calls.into_iter().map(|c| c.what).collect()
}

#[test]
fn a_pd_is_one_context_with_the_quota_asked_for() {
    let mut r = Rig::start();
    let c = r.pd_create(12345);
    assert_eq!(c.status(), Status::SUCCESS);
    let pd = c.result0 as u32;
    let calls = r.fake.calls_of("new_context");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].pd, pd);
    assert!(
        calls[0].what.starts_with("new_context quota=12345 "),
        "{calls:?}"
    );
    // A quota of 0 means the whole device; more than the device is capped to it.
    r.pd_create(0);
    r.pd_create(u64::MAX);
    let quotas = whats(r.fake.calls_of("new_context"));
    let total = vgpu_test_stack::executor::device_info().total_mem;
    assert!(quotas[1].starts_with(&format!("new_context quota={total} ")));
    assert!(quotas[2].starts_with(&format!("new_context quota={total} ")));
    // PD_DESTROY resets the context and drops it.
    let c = r.admin(Command::PD_DESTROY(PdArgs {
        pd,
        ..Zeroable::zeroed()
    }));
    assert_eq!(c.status(), Status::SUCCESS);
    let mine: Vec<String> = r
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.pd == pd)
        .map(|c| c.what)
        .collect();
    assert_eq!(&mine[1..], ["reset", "drop"]);
    // A second destroy names a PD that no longer exists.
    let c = r.admin(Command::PD_DESTROY(PdArgs {
        pd,
        ..Zeroable::zeroed()
    }));
    assert_ne!(c.status(), Status::SUCCESS);
}

/// PD_SET_QUOTA changes the memory quota and nothing else: the PD keeps the object limit it
/// was created with (it was reset to the default), and a quota beyond the device is capped.
#[test]
fn a_new_quota_keeps_the_object_limit() {
    let mut r = Rig::start();
    let c = r.admin(Command::PD_CREATE(PdCreateArgs {
        mem_quota: 1 << 20,
        max_objects: 7,
        ..Zeroable::zeroed()
    }));
    assert_eq!(c.status(), Status::SUCCESS);
    let pd = c.result0 as u32;
    for quota in [4096, u64::MAX] {
        let c = r.admin(Command::PD_SET_QUOTA(PdQuotaArgs {
            pd,
            mem_quota: quota,
            ..Zeroable::zeroed()
        }));
        assert_eq!(c.status(), Status::SUCCESS);
    }
    let total = vgpu_test_stack::executor::device_info().total_mem;
    assert_eq!(
        whats(r.fake.calls_of("set_limits")),
        [
            "set_limits quota=4096 max_objects=7".to_string(),
            format!("set_limits quota={total} max_objects=7"),
        ]
    );
}

#[test]
fn a_context_the_executor_refuses_fails_pd_create_with_its_status() {
    let mut r = Rig::start();
    *r.fake.script.refuse_contexts.lock().unwrap() = Some(Status::OUT_OF_MEMORY);
    let c = r.pd_create(1 << 20);
    assert_eq!(c.status(), Status::OUT_OF_MEMORY);
    assert_eq!(r.engine.as_ref().unwrap().totals().pds, 0);
}

#[test]
fn synchronous_commands_answer_with_the_context_result() {
    let mut r = Rig::start();
    let mut t = r.tenant(1);
    let c = mem_alloc(&mut t, 4096);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_ne!(c.result0, 0);
    assert_eq!(whats(r.fake.calls_of("mem_alloc")), ["mem_alloc 4096"]);
    // The executor's error is the guest's status.
    r.fake.fail("mem_alloc", Status::INVALID_VALUE);
    let c = mem_alloc(&mut t, 8);
    assert_eq!(c.status(), Status::INVALID_VALUE);
    // Over the quota (1 MiB): the executor says so, the engine passes it on.
    r.fake.script.fail.lock().unwrap().clear();
    let c = mem_alloc(&mut t, 2 << 20);
    assert_eq!(c.status(), Status::OUT_OF_MEMORY);
}

#[test]
fn copies_reach_the_executor_with_the_window_bytes() {
    let mut r = Rig::start();
    let mut t = r.tenant(1);
    r.window_write(&t, 100, &[1, 2, 3, 4]);
    t.q.submit(
        Command::MEMCPY_HTOD(CopyHtoDArgs {
            dst: 0xD000,
            len: 4,
            src_window: WINDOW,
            rsv0: 0,
            src_offset: 100,
        }),
        0,
        &[],
        false,
    );
    // Inline payloads reach it the same way.
    t.q.submit(
        Command::MEMCPY_HTOD(CopyHtoDArgs {
            dst: 0xE000,
            len: 3,
            ..Zeroable::zeroed()
        }),
        0,
        &[7, 8, 9],
        false,
    );
    t.q.submit(
        Command::MEMCPY_DTOH(CopyDtoHArgs {
            src: 0xD000,
            len: 16,
            dst_window: WINDOW,
            rsv0: 0,
            dst_offset: 200,
        }),
        0,
        &[],
        false,
    );
    assert_eq!(sync(&mut t).status(), Status::SUCCESS);
    let submits = whats(r.fake.calls_of("submit"));
    assert_eq!(
        submits,
        [
            "submit stream=0x0 copy_htod dst=0xd000 bytes=[1, 2, 3, 4]",
            "submit stream=0x0 copy_htod dst=0xe000 bytes=[7, 8, 9]",
            "submit stream=0x0 copy_dtoh src=0xd000 len=16 wrote=Ok(())",
        ]
    );
    assert_eq!(r.window_read(&t, 200, 16), [FILL; 16]);
    assert_eq!(r.window_read(&t, 216, 1), [0], "nothing past the range");
}

#[test]
fn a_range_outside_the_window_never_reaches_the_executor() {
    let mut r = Rig::start();
    let mut t = r.tenant(1);
    for (window, offset, len) in [
        (WINDOW, WINDOW_LEN - 2, 4),
        (WINDOW, u64::MAX - 1, 4),
        (7, 0, 4),
    ] {
        let cid = t.q.submit(
            Command::MEMCPY_DTOH(CopyDtoHArgs {
                src: 0xD000,
                len,
                dst_window: window,
                rsv0: 0,
                dst_offset: offset,
            }),
            0,
            &[],
            false,
        );
        // An asynchronous command that fails is reported at once, flagged as such.
        let c =
            t.q.next(Duration::from_secs(5))
                .expect("an error completion");
        assert_eq!(c.cid, cid);
        assert!(!c.status().is_ok(), "{window} {offset} {len}: {c:?}");
        assert_ne!(c.flags & cqe_flags::ASYNC_ERROR, 0);
    }
    assert!(r.fake.calls_of("submit").is_empty());
}

#[test]
fn waits_complete_when_the_executor_completes_them() {
    let mut r = Rig::start();
    let mut t = r.tenant(1);
    r.fake.hold(true);
    let cid = t.q.submit(
        Command::STREAM_SYNCHRONIZE(Zeroable::zeroed()),
        0,
        &[],
        false,
    );
    assert!(t.q.next(Duration::from_millis(200)).is_none());
    assert_eq!(r.fake.held(), 1);
    r.fake.release(Outcome::status(Status::LAUNCH_FAILED));
    let c = t.q.next(Duration::from_secs(5)).expect("the completion");
    assert_eq!((c.cid, c.status()), (cid, Status::LAUNCH_FAILED));
    // A NOTIFY on asynchronous work completes when the executor says it ran.
    let cid = t.q.submit(
        Command::MEMSET(MemsetArgs {
            dst: 0xD000,
            count: 16,
            value: 1,
            elem_size: 1,
            ..Zeroable::zeroed()
        }),
        0,
        &[],
        true,
    );
    assert!(t.q.next(Duration::from_millis(200)).is_none());
    r.fake.release(Outcome::status(Status::SUCCESS));
    let c = t.q.next(Duration::from_secs(5)).expect("the notification");
    assert_eq!((c.cid, c.status()), (cid, Status::SUCCESS));
}

#[test]
fn a_refused_submission_is_reported_with_its_status() {
    let mut r = Rig::start();
    let mut t = r.tenant(1);
    r.fake.fail("submit", Status::NOT_SUPPORTED);
    let memset = Command::MEMSET(MemsetArgs {
        dst: 0xD000,
        count: 16,
        value: 1,
        elem_size: 1,
        ..Zeroable::zeroed()
    });
    let cid = t.q.submit(memset, 0, &[], false);
    let c =
        t.q.next(Duration::from_secs(5))
            .expect("an error completion");
    assert_eq!((c.cid, c.status()), (cid, Status::NOT_SUPPORTED));
    assert_ne!(c.flags & cqe_flags::ASYNC_ERROR, 0);
    let cid = t.q.submit(memset, 0, &[], true);
    let c = t.q.next(Duration::from_secs(5)).expect("the notification");
    assert_eq!((c.cid, c.status()), (cid, Status::NOT_SUPPORTED));
    assert_eq!(c.flags & cqe_flags::ASYNC_ERROR, 0);
}

#[test]
fn a_sticky_error_stops_work_but_not_teardown() {
    let mut r = Rig::start();
    let mut t = r.tenant(1);
    let p = mem_alloc(&mut t, 64).result0;
    *r.fake.script.sticky.lock().unwrap() = Some(Status::ILLEGAL_ADDRESS);
    let c = mem_alloc(&mut t, 64);
    assert_eq!(c.status(), Status::ILLEGAL_ADDRESS);
    assert_eq!(
        r.fake.calls_of("mem_alloc").len(),
        1,
        "never reached the executor"
    );
    let c = t.q.call(
        Command::MEM_FREE(HandleArgs {
            handle: p,
            ..Zeroable::zeroed()
        }),
        0,
        &[],
    );
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(r.fake.calls_of("mem_free").len(), 1);
}

#[test]
fn host_functions_become_callbacks_on_the_submitting_queue() {
    let mut r = Rig::start();
    let mut t = r.tenant(1);
    let cid = t.q.submit(
        Command::HOST_FUNC(HandleArgs {
            handle: 0x77,
            ..Zeroable::zeroed()
        }),
        0,
        &[],
        false,
    );
    assert_eq!(sync(&mut t).status(), Status::SUCCESS);
    assert_eq!(
        whats(r.fake.calls_of("submit")),
        ["submit stream=0x0 host_func 0x77"]
    );
    // The stream reaches it: the client is asked to run it.
    r.fake.host_func(t.pd, 0x77);
    let c = t.q.next(Duration::from_secs(5)).expect("a callback");
    assert_eq!((c.cid, c.result0), (cid, 0x77));
    assert_ne!(c.flags & cqe_flags::CALLBACK, 0);
    // A cookie asked for twice, or never submitted, asks nothing of the client.
    r.fake.host_func(t.pd, 0x77);
    r.fake.host_func(t.pd, 0x99);
    assert!(t.q.next(Duration::from_millis(200)).is_none());
    t.q.submit(
        Command::HOST_FUNC_DONE(HandleArgs {
            handle: 0x77,
            ..Zeroable::zeroed()
        }),
        0,
        &[],
        false,
    );
    assert_eq!(sync(&mut t).status(), Status::SUCCESS);
    assert_eq!(
        whats(r.fake.calls_of("host_func_done")),
        ["host_func_done 0x77"]
    );
}

#[test]
fn tenants_reach_only_their_own_context() {
    let mut r = Rig::start();
    let mut a = r.tenant(1);
    let mut b = r.tenant(2);
    for (t, size) in [(&mut a, 100u64), (&mut b, 200)] {
        let c = mem_alloc(t, size);
        assert_eq!(c.status(), Status::SUCCESS);
    }
    let allocs: Vec<(u32, String)> = r
        .fake
        .calls_of("mem_alloc")
        .into_iter()
        .map(|c| (c.pd, c.what))
        .collect();
    assert_eq!(
        allocs,
        [
            (a.pd, "mem_alloc 100".to_string()),
            (b.pd, "mem_alloc 200".to_string())
        ]
    );
    // B's queue cannot name A's window: window ids are per PD, and B has only its own.
    r.window_write(&a, 0, &[0xAA; 8]);
    b.q.submit(
        Command::MEMCPY_HTOD(CopyHtoDArgs {
            dst: 0xD000,
            len: 8,
            src_window: WINDOW,
            rsv0: 0,
            src_offset: 0,
        }),
        0,
        &[],
        false,
    );
    assert_eq!(sync(&mut b).status(), Status::SUCCESS);
    let last = r.fake.calls_of("submit").pop().unwrap();
    assert_eq!(last.pd, b.pd);
    assert!(
        last.what.ends_with("bytes=[0, 0, 0, 0, 0, 0, 0, 0]"),
        "{last:?}"
    );
    assert!(r.fatal.lock().unwrap().is_empty());
}

/// A refused HOST_FUNC leaves nothing behind: a later request for its cookie asks nothing
/// of the client (before, the cookie stayed mapped to the queue for ever).
#[test]
fn a_refused_host_function_is_forgotten() {
    let mut r = Rig::start();
    let mut t = r.tenant(1);
    r.fake.fail("submit", Status::NOT_SUPPORTED);
    let cid = t.q.submit(
        Command::HOST_FUNC(HandleArgs {
            handle: 0x55,
            ..Zeroable::zeroed()
        }),
        0,
        &[],
        false,
    );
    let c =
        t.q.next(Duration::from_secs(5))
            .expect("an error completion");
    assert_eq!((c.cid, c.status()), (cid, Status::NOT_SUPPORTED));
    r.fake.host_func(t.pd, 0x55);
    assert!(t.q.next(Duration::from_millis(200)).is_none());
}
