//! vgpu-stub (soft) + vgpu-driver (vfio-user backing) + clients: connection, data both
//! ways through windows, several client processes at once, a client killed in the middle
//! of a transfer, malformed control messages, admission limits, and a restarted driver.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command as Proc, Stdio};
use vgpu_driver::server::Limits;
use vgpu_proto::control::{
    error_code, HelloBody, HostRegisterBody, Message, WindowAllocBody, WindowFreeBody,
};
use vgpu_proto::{Command, Status};

const CHILD_ENV: &str = "VGPU_DRIVER_TEST_CHILD";

/// Not a test on its own: the body of the client processes the other tests start.
#[test]
fn child_entry() {
    let Ok(control) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rounds: u64 = std::env::var("VGPU_CHILD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let mixed = std::env::var_os("VGPU_CHILD_MIXED").is_some();
    let mut c = DriverClient::connect(std::path::Path::new(&control), "child").unwrap();
    println!("ready pd {}", c.welcome.pd);
    for i in 0..rounds {
        assert!(c.round_trip(1 << 20, i as u8), "round trip {i} failed");
        if mixed {
            mixed_work(&mut c, i);
        }
        if i == 0 {
            println!("transferring");
        }
    }
    println!("done ok");
}

/// Work beyond copies, left half done on purpose in some rounds (a kill then finds objects
/// of every kind): a stream with a memset and an event recorded on it, a captured graph
/// instantiated and launched, a BLAS handle.
fn mixed_work(c: &mut DriverClient, round: u64) {
    use bytemuck::Zeroable;
    use vgpu_proto::cmd::{GraphInstantiateArgs, HandleArgs, MemAllocArgs, MemsetArgs};
    let ok = |r: vgpu_proto::Cqe, what: &str| {
        assert!(r.status().is_ok(), "{what}: {r:?}");
        r.result0
    };
    let h = |handle: u64| HandleArgs {
        handle,
        ..Zeroable::zeroed()
    };
    let mem = ok(
        c.call(
            Command::MEM_ALLOC(MemAllocArgs {
                size: 4096,
                ..Zeroable::zeroed()
            }),
            0,
            &[],
        ),
        "alloc",
    );
    let s = ok(
        c.call(Command::STREAM_CREATE(Zeroable::zeroed()), 0, &[]),
        "stream",
    );
    let e = ok(
        c.call(Command::EVENT_CREATE(Zeroable::zeroed()), 0, &[]),
        "event",
    );
    let set = MemsetArgs {
        dst: mem,
        count: 4096,
        value: u32::from(round as u8),
        elem_size: 1,
        ..Zeroable::zeroed()
    };
    ok(
        c.call(Command::STREAM_BEGIN_CAPTURE(Zeroable::zeroed()), s, &[]),
        "capture",
    );
    c.submit(Command::MEMSET(set), s, &[], false);
    let g = ok(
        c.call(Command::STREAM_END_CAPTURE(Zeroable::zeroed()), s, &[]),
        "end",
    );
    let x = ok(
        c.call(
            Command::GRAPH_INSTANTIATE(GraphInstantiateArgs {
                graph: g,
                ..Zeroable::zeroed()
            }),
            0,
            &[],
        ),
        "instantiate",
    );
    c.submit(Command::GRAPH_LAUNCH(h(x)), s, &[], false);
    c.submit(Command::EVENT_RECORD(h(e)), s, &[], false);
    let blas = ok(
        c.call(Command::BLAS_CREATE(Zeroable::zeroed()), 0, &[]),
        "blas",
    );
    ok(
        c.call(Command::STREAM_SYNCHRONIZE(Zeroable::zeroed()), s, &[]),
        "sync",
    );
    if round % 2 == 0 {
        return; // left for the PD's teardown
    }
    for (cmd, what) in [
        (Command::BLAS_DESTROY(h(blas)), "blas destroy"),
        (Command::GRAPH_EXEC_DESTROY(h(x)), "exec destroy"),
        (Command::GRAPH_DESTROY(h(g)), "graph destroy"),
        (Command::EVENT_DESTROY(h(e)), "event destroy"),
        (Command::MEM_FREE(h(mem)), "free"),
    ] {
        ok(c.call(cmd, 0, &[]), what);
    }
    ok(
        c.call(Command::STREAM_DESTROY(Zeroable::zeroed()), s, &[]),
        "stream destroy",
    );
}

fn spawn_child(
    control: &std::path::Path,
    rounds: Option<u64>,
) -> (Child, BufReader<std::process::ChildStdout>) {
    spawn_child_with(control, rounds, false)
}

fn spawn_child_with(
    control: &std::path::Path,
    rounds: Option<u64>,
    mixed: bool,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut cmd = Proc::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, control)
        .stdout(Stdio::piped());
    if mixed {
        cmd.env("VGPU_CHILD_MIXED", "1");
    }
    if let Some(r) = rounds {
        cmd.env("VGPU_CHILD_ROUNDS", r.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

fn wait_line(out: &mut BufReader<std::process::ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child ended before printing `{prefix}`"
        );
        // libtest prints "test child_entry ... " before the test's own output.
        if line.contains(prefix) {
            return line;
        }
    }
}

#[test]
fn a_client_gets_a_pd_queue_and_windows() {
    let st = Stack::builder().window_bytes(4 << 20).start();
    let mut c = DriverClient::connect(st.control(), "one").unwrap();
    assert_eq!(c.welcome.device.cc_major, 9);
    assert!(c.welcome.qid >= 1);
    assert_eq!(
        c.call(Command::NOP(bytemuck::Zeroable::zeroed()), 0, &[])
            .status(),
        Status::SUCCESS
    );
    assert!(c.round_trip(1 << 20, 7));
    // More window memory.
    let (reply, fds) = c.control(&Message::WindowAlloc(WindowAllocBody {
        bytes: 3 << 20,
        flags: 0,
        rsv: 0,
    }));
    let Message::WindowGranted(g) = reply else {
        panic!("no window: {reply:?}")
    };
    assert_eq!(fds.len(), 1);
    assert!(g.bytes >= 3 << 20);
    let shm =
        vgpu_os::shm::SharedMemory::from_file(std::fs::File::from(fds.into_iter().next().unwrap()))
            .unwrap();
    c.windows.insert(g.window, shm);
    let status = vgpu_driver::client::status(st.control()).unwrap();
    assert!(status.contains("\"name\":\"one\""), "{status}");
    assert!(status.contains("\"windows\":2"), "{status}");
    let (reply, _) = c.control(&Message::WindowFree(WindowFreeBody {
        window: g.window,
        rsv: 0,
    }));
    assert_eq!(reply, Message::Ok);
    let (reply, _) = c.control(&Message::WindowFree(WindowFreeBody { window: 99, rsv: 0 }));
    assert!(matches!(
        reply,
        Message::Error {
            code: error_code::UNKNOWN_WINDOW,
            ..
        }
    ));
    let (reply, _) = c.control(&Message::WindowAlloc(WindowAllocBody {
        bytes: 1 << 40,
        flags: 0,
        rsv: 0,
    }));
    assert!(
        matches!(
            reply,
            Message::Error {
                code: error_code::NO_MEMORY,
                ..
            }
        ),
        "{reply:?}"
    );
    assert_eq!(st.totals().pds, 1);
    // GOODBYE: the PD goes.
    let fd = std::mem::replace(
        &mut c.fd,
        vgpu_driver::client::connect(st.control()).unwrap(),
    );
    vgpu_driver::server::send(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &Message::Goodbye,
        9,
        &[],
    )
    .unwrap();
    eventually("PD destroyed after GOODBYE", || st.totals().pds == 0);
    drop(c);
    st.finish();
}

#[test]
fn killed_client_is_reclaimed_while_others_carry_on() {
    let st = Stack::builder().window_bytes(4 << 20).start();
    let mut workers: Vec<_> = (0..3)
        .map(|_| spawn_child(st.control(), Some(40)))
        .collect();
    let (mut victim, mut vout) = spawn_child(st.control(), None);
    for (_, out) in workers.iter_mut() {
        wait_line(out, "ready");
    }
    wait_line(&mut vout, "transferring");
    eventually("four PDs", || st.totals().pds == 4);
    victim.kill().unwrap();
    victim.wait().unwrap();
    eventually("the killed client's PD reclaimed", || st.totals().pds == 3);
    for (mut child, mut out) in workers {
        wait_line(&mut out, "done ok");
        assert!(child.wait().unwrap().success());
    }
    eventually("all PDs reclaimed", || st.totals().pds == 0);
    let t = st.totals();
    assert_eq!(
        (t.objects(), t.mem_bytes, t.windows, t.queues),
        (0, 0, 0, 0)
    );
    st.finish();
}

#[test]
fn malformed_control_messages_are_refused() {
    let st = Stack::builder().window_bytes(1 << 20).start();
    let mut good = DriverClient::connect(st.control(), "good").unwrap();
    let bad = vgpu_driver::client::connect(st.control()).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&bad);
    // Garbage, then a valid message: the connection survives one bad message.
    nix::sys::socket::send(
        raw,
        b"not a control message",
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let (reply, _) = vgpu_driver::client::receive(&bad).unwrap();
    assert!(matches!(
        reply,
        Message::Error {
            code: error_code::BAD_MESSAGE,
            ..
        }
    ));
    let (reply, _) = vgpu_driver::client::request(&bad, &Message::StatusQuery, 2, &[]).unwrap();
    assert!(matches!(reply, Message::StatusReply(_)));
    // A HELLO carrying a descriptor is malformed (and the descriptor is not kept).
    let extra = std::fs::File::open("/dev/null").unwrap();
    let (reply, _) = vgpu_driver::client::request(
        &bad,
        &Message::Hello(hello_body("bad")),
        3,
        &[std::os::fd::AsRawFd::as_raw_fd(&extra)],
    )
    .unwrap();
    assert!(matches!(
        reply,
        Message::Error {
            code: error_code::BAD_MESSAGE,
            ..
        }
    ));
    // A request before HELLO.
    let (reply, _) = vgpu_driver::client::request(
        &bad,
        &Message::WindowAlloc(WindowAllocBody {
            bytes: 4096,
            flags: 0,
            rsv: 0,
        }),
        4,
        &[],
    )
    .unwrap();
    assert!(
        matches!(
            reply,
            Message::Error {
                code: error_code::BAD_STATE,
                ..
            }
        ),
        "{reply:?}"
    );
    // A driver-only message from a client.
    let (reply, _) = vgpu_driver::client::request(&bad, &Message::Ok, 5, &[]).unwrap();
    assert!(matches!(
        reply,
        Message::Error {
            code: error_code::BAD_STATE,
            ..
        }
    ));
    // Two malformed messages in a row close the connection.
    nix::sys::socket::send(raw, &[0u8; 3], nix::sys::socket::MsgFlags::empty()).unwrap();
    let _ = vgpu_driver::client::receive(&bad).unwrap();
    nix::sys::socket::send(raw, &[0u8; 3], nix::sys::socket::MsgFlags::empty()).unwrap();
    let _ = vgpu_driver::client::receive(&bad);
    assert!(
        vgpu_driver::client::receive(&bad).is_err(),
        "connection closed"
    );
    // A wrong protocol version.
    let v = vgpu_driver::client::connect(st.control()).unwrap();
    let mut h = hello_body("v9");
    h.version = 9;
    let (reply, _) = vgpu_driver::client::request(&v, &Message::Hello(h), 1, &[]).unwrap();
    assert!(matches!(
        reply,
        Message::Error {
            code: error_code::VERSION_MISMATCH,
            ..
        }
    ));
    // The good client never noticed.
    assert!(good.round_trip(4096, 1));
    drop(good);
    st.finish();
}

#[test]
fn admission_limits_and_restart() {
    let limits = Limits {
        max_clients: 2,
        window_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut st = Stack::builder()
        .connections(2)
        .limits(limits.clone())
        .start();
    let a = DriverClient::connect(st.control(), "a").unwrap();
    let b = DriverClient::connect(st.control(), "b").unwrap();
    let refused = DriverClient::connect(st.control(), "c").err().unwrap();
    assert!(refused.contains("client slots"), "{refused}");
    drop(a);
    let clients = |st: &Stack| {
        vgpu_driver::client::status(st.control())
            .unwrap()
            .matches("\"pid\"")
            .count()
    };
    eventually("a slot frees", || clients(&st) == 1);
    let mut c = DriverClient::connect(st.control(), "c").unwrap();
    assert!(c.round_trip(8192, 3));
    drop((b, c));
    // A restarted driver (new vfio-user connection, device reset) serves new clients.
    st.stop_driver();
    eventually("device reset on disconnect", || st.totals().pds == 0);
    st.start_driver(limits);
    let mut d = DriverClient::connect(st.control(), "d").unwrap();
    assert!(d.round_trip(1 << 16, 9));
    drop(d);
    st.finish();
}

/// The no-IOMMU memory path against vgpu-stub: every DMA region on locked huge pages, given
/// to the device by its physical address, as in a VM with no IOMMU (only the VFIO ioctls
/// of that mode are not run here). Needs huge pages: `ci/test.sh` reserves them and sets
/// VGPU_REQUIRE_HUGEPAGES.
fn host_register(c: &mut DriverClient, offset: u64, bytes: u64, fd: i32) -> Message {
    let body = HostRegisterBody {
        offset,
        bytes,
        flags: 0,
        rsv: 0,
    };
    c.control_with(&Message::HostRegister(body), &[fd]).0
}

fn refused_with(reply: &Message, want: u32) -> bool {
    matches!(reply, Message::Error { code, .. } if *code == want)
}

/// HOST_REGISTER: part of a client's own memfd becomes a window the device reads and
/// writes, counted in the status and given back with WINDOW_FREE; what the driver cannot
/// map is refused with the reason's code.
#[test]
fn host_memory_is_registered_as_a_window() {
    use std::os::fd::AsRawFd;
    let st = Stack::builder().window_bytes(4 << 20).start();
    let mut c = DriverClient::connect(st.control(), "reg").unwrap();
    // A memfd of small pages, as a program's shared memory usually is.
    let fd =
        nix::sys::memfd::memfd_create("client-memory", nix::sys::memfd::MFdFlags::empty()).unwrap();
    nix::unistd::ftruncate(&fd, 3 << 20).unwrap();
    let mine = vgpu_os::shm::SharedMemory::from_file(std::fs::File::from(fd)).unwrap();
    let file = mine.file().unwrap();
    let reply = host_register(&mut c, 1 << 20, 2 << 20, file.as_raw_fd());
    let Message::HostRegistered(g) = reply else {
        panic!("not registered: {reply:?}")
    };
    assert_eq!(g.bytes, 2 << 20);
    // The device reads and writes the client's pages through the window.
    let view =
        vgpu_os::shm::SharedMemory::map_range(file.try_clone().unwrap(), 1 << 20, 2 << 20).unwrap();
    c.windows.insert(g.window, view);
    assert!(c.round_trip_in(g.window, 1 << 20, 11));
    let mut b = [0u8; 4];
    mine.read_bytes((2 << 20) + 1, &mut b).unwrap();
    let want: Vec<u8> = (1..5u8)
        .map(|i| i.wrapping_mul(31).wrapping_add(11))
        .collect();
    assert_eq!(
        &b[..],
        &want[..],
        "the device's write reached the client's memory"
    );
    let status = vgpu_driver::client::status(st.control()).unwrap();
    assert!(status.contains("\"windows\":2"), "{status}");
    // Refused: past the file's end, a read-only descriptor, not a regular file, unaligned,
    // past the client's window limit.
    let reply = host_register(&mut c, 2 << 20, 2 << 20, file.as_raw_fd());
    assert!(refused_with(&reply, error_code::INVALID), "{reply:?}");
    let ro = std::fs::File::open(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
    let reply = host_register(&mut c, 0, 4096, ro.as_raw_fd());
    assert!(refused_with(&reply, error_code::INVALID), "{reply:?}");
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    let reply = host_register(&mut c, 0, 4096, pipe_r.as_raw_fd());
    assert!(refused_with(&reply, error_code::INVALID), "{reply:?}");
    let reply = host_register(&mut c, 100, 4096, file.as_raw_fd());
    assert!(refused_with(&reply, error_code::BAD_MESSAGE), "{reply:?}");
    let reply = host_register(&mut c, 0, 1 << 40, file.as_raw_fd());
    assert!(refused_with(&reply, error_code::NO_MEMORY), "{reply:?}");
    // Offsets at the top of the range: one that overflows with its length is malformed,
    // one past any file (and past mmap's signed offsets) is refused.
    let reply = host_register(&mut c, u64::MAX - 4095, 4096, file.as_raw_fd());
    assert!(refused_with(&reply, error_code::BAD_MESSAGE), "{reply:?}");
    for offset in [1 << 62, 1 << 63] {
        let reply = host_register(&mut c, offset, 4096, file.as_raw_fd());
        assert!(refused_with(&reply, error_code::INVALID), "{reply:?}");
    }
    // Huge pages: whole ones only.
    if let Ok(huge) = vgpu_os::shm::SharedMemory::new_huge("client-huge", 4 << 20) {
        let hf = huge.file().unwrap().as_raw_fd();
        let page = vgpu_os::shm::default_huge_page_size().unwrap() as u64;
        let reply = host_register(&mut c, page / 2, page / 2, hf);
        assert!(refused_with(&reply, error_code::INVALID), "{reply:?}");
        let reply = host_register(&mut c, 0, page, hf);
        let Message::HostRegistered(h) = reply else {
            panic!("huge pages not registered: {reply:?}")
        };
        let (reply, _) = c.control(&Message::WindowFree(WindowFreeBody {
            window: h.window,
            rsv: 0,
        }));
        assert_eq!(reply, Message::Ok);
    }
    // Given back: the window is gone.
    let (reply, _) = c.control(&Message::WindowFree(WindowFreeBody {
        window: g.window,
        rsv: 0,
    }));
    assert_eq!(reply, Message::Ok);
    c.windows.remove(&g.window);
    let status = vgpu_driver::client::status(st.control()).unwrap();
    assert!(status.contains("\"windows\":1"), "{status}");
    assert!(c.round_trip(1 << 20, 3));
    drop(c);
    st.finish();
}

#[test]
fn physical_addressing_serves_clients() {
    let free = free_huge_pages();
    if free < 16 || !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("VGPU_REQUIRE_HUGEPAGES").is_none(),
            "needs root and 16 free huge pages, has {free}"
        );
        eprintln!("skipped: needs root and 16 free huge pages (reserve them in /proc/sys/vm/nr_hugepages)");
        return;
    }
    let mapped = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let m = mapped.clone();
    let st = Stack::builder()
        .window_bytes(2 << 20)
        .wrap(move |inner| Box::new(PhysicalOverVfioUser { inner, mapped: m }))
        .start();
    let huge = vgpu_os::shm::default_huge_page_size().unwrap() as u64;
    // First windows of one huge page each (the driver's default under --no-iommu).
    let hello = |name| HelloBody {
        window_bytes: huge,
        ..hello_body(name)
    };
    let mut a = DriverClient::connect_hello(st.control(), hello("a")).unwrap();
    let mut b = DriverClient::connect_hello(st.control(), hello("b")).unwrap();
    {
        // Admin queue, and each client's queue and window: physical, huge-page aligned,
        // disjoint.
        let regions = mapped.lock().unwrap().clone();
        assert_eq!(regions.len(), 5, "{regions:x?}");
        for (i, &(pa, len)) in regions.iter().enumerate() {
            assert!(
                pa != 0 && pa % huge == 0 && len % huge == 0,
                "{pa:#x}+{len:#x}"
            );
            for &(qa, qlen) in &regions[i + 1..] {
                assert!(pa + len <= qa || qa + qlen <= pa, "overlap");
            }
        }
    }
    assert!(a.round_trip(1 << 20, 3));
    assert!(b.round_trip(1 << 20, 5));
    // A client's own memory cannot be a window: it is not physically contiguous.
    let mine = vgpu_os::shm::SharedMemory::new("client-memory", 1 << 20).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(mine.file().unwrap());
    let reply = host_register(&mut a, 0, 1 << 20, fd);
    assert!(refused_with(&reply, error_code::NOT_SUPPORTED), "{reply:?}");
    // A window of several huge pages is given only when they are physically contiguous.
    let (reply, fds) = a.control(&Message::WindowAlloc(WindowAllocBody {
        bytes: 4 * huge,
        flags: 0,
        rsv: 0,
    }));
    match reply {
        Message::WindowGranted(g) => {
            assert_eq!(fds.len(), 1);
            let (pa, len) = *mapped.lock().unwrap().last().unwrap();
            assert_eq!(len, 4 * huge);
            eprintln!(
                "a window of 4 huge pages was contiguous at {pa:#x} (window {})",
                g.window
            );
        }
        Message::Error { code, message } => {
            assert_eq!(code, error_code::NO_MEMORY);
            assert!(message.contains("not physically contiguous"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    drop(a);
    eventually("client a's regions released", || {
        mapped.lock().unwrap().len() == 3
    });
    assert!(b.round_trip(1 << 20, 9));
    drop(b);
    st.finish();
}

/// The daemon's kernel VFIO modes refuse clearly where the device is missing, and
/// `--no-iommu` goes only with `--device`.
#[test]
fn kernel_vfio_modes_refuse_without_the_device() {
    let run = |args: &[&str]| {
        let out = Proc::new(env!("CARGO_BIN_EXE_vgpu-driver"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    if !std::path::Path::new("/sys/bus/pci/devices/0000:00:1f.7").exists() {
        for extra in [&[][..], &["--no-iommu"][..]] {
            let mut args = vec!["--device", "0000:00:1f.7", "--socket", "/nonexistent/s"];
            args.extend_from_slice(extra);
            let e = run(&args);
            assert!(
                e.contains("cannot open 0000:00:1f.7: no PCI device 0000:00:1f.7"),
                "{e}"
            );
        }
    }
    let e = run(&["--no-iommu", "--vfio-user", "/nonexistent"]);
    assert!(e.contains("cannot be used with"), "{e}");
    let e = run(&["--no-iommu"]);
    assert!(e.contains("--device"), "{e}");
}

/// The driver on the device model by direct calls: the same bring-up, clients and data
/// path with no socket in between.
#[test]
fn the_driver_runs_on_an_in_process_device() {
    let st = Stack::builder()
        .link(Link::InProcess)
        .window_bytes(2 << 20)
        .start();
    let mut c = DriverClient::connect(st.control(), "in-process").unwrap();
    assert!(c.round_trip(1 << 20, 4));
    assert_eq!(st.totals().pds, 1);
    drop(c);
    eventually("the PD reclaimed", || st.totals().pds == 0);
    st.finish();
}

/// Behind QEMU's intel-iommu with caching mode, DMA memory reaches the device one IOTLB
/// entry (one 4 KiB page) at a time, so the admin queue, every client's queue and its
/// windows span many adjacent mappings: the device serves them all the same (before, it
/// required a queue region inside one mapping and failed ENABLE with ADMIN_DMA_FAULT).
#[test]
fn queues_and_windows_may_span_many_small_mappings() {
    use std::sync::atomic::Ordering;
    let faults = vgpu_test_stack::backing::Faults::none();
    faults.page_mappings.store(true, Ordering::SeqCst);
    let st = Stack::builder()
        .link(Link::InProcess)
        .faults(faults)
        .window_bytes(1 << 20)
        .start();
    let mut c = DriverClient::connect(st.control(), "paged").unwrap();
    assert!(
        c.round_trip(1 << 20, 4),
        "copies through a window of 256 mappings"
    );
    mixed_work(&mut c, 1);
    drop(c);
    eventually("the PD reclaimed", || st.totals().pds == 0);
    st.finish();
}

/// `vgpu-smi` shows the device, the memory in use and the processes using it, from the
/// driver's status, as a table and as JSON; and says why when there is no driver.
#[test]
fn vgpu_smi_shows_the_device_and_its_clients() {
    use vgpu_proto::cmd::MemAllocArgs;
    let st = Stack::builder().link(Link::InProcess).start();
    let mut c = DriverClient::connect(st.control(), "smi-client").unwrap();
    let r = c.call(
        Command::MEM_ALLOC(MemAllocArgs {
            size: 3 << 20,
            ..bytemuck::Zeroable::zeroed()
        }),
        0,
        &[],
    );
    assert!(r.status().is_ok(), "{r:?}");
    let smi = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vgpu-smi"))
            .arg("--socket")
            .arg(st.control())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let table = smi(&[]);
    for want in [
        "Driver Version: ",
        "CUDA Version: 12.8",
        "VGPU-STUB",
        "smi-client",
        "3MiB (",
        "GPU-Util",
        "0%  1 / ",
    ] {
        assert!(table.contains(want), "no {want:?} in\n{table}");
    }
    let json = smi(&["--json"]);
    for want in [
        "\"mem_bytes\":3145728",
        "\"mem_used\":3145728",
        "\"uuid\":\"GPU-",
        "\"gpu_util\":0,",
    ] {
        assert!(json.contains(want), "no {want:?} in {json}");
    }
    drop(c);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vgpu-smi"))
        .args(["--socket", "/nonexistent/vgpu.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach vgpu-driver"));
    st.finish();
}

/// A device that refuses a DMA mapping while a client is admitted: the client is refused
/// with a clear error, nothing it was given stays behind, and the next client is served.
#[test]
fn a_refused_dma_mapping_refuses_the_client_and_leaks_nothing() {
    use std::sync::atomic::Ordering;
    let st = Stack::builder()
        .link(Link::InProcess)
        .window_bytes(1 << 20)
        .start();
    let before = st.totals();
    st.faults().dma_maps_left.store(1, Ordering::SeqCst);
    let refused = DriverClient::connect(st.control(), "refused")
        .err()
        .unwrap();
    assert!(refused.contains("injected fault"), "{refused}");
    assert_eq!(st.faults().dma_maps_refused.load(Ordering::SeqCst), 1);
    // The device reclaims the PD as the driver drops the client: wait for both (the
    // driver's status may list the client a moment after the device let go of its PD).
    eventually(
        "the refused client's PD reclaimed and its client gone",
        || {
            let t = st.totals();
            let status = vgpu_driver::client::status(st.control()).unwrap();
            (t.pds, t.windows, t.queues) == (before.pds, before.windows, before.queues)
                && status.matches("\"pid\"").count() == 0
        },
    );
    st.faults().dma_maps_left.store(u64::MAX, Ordering::SeqCst);
    let mut c = DriverClient::connect(st.control(), "next").unwrap();
    assert!(c.round_trip(1 << 16, 6));
    drop(c);
    st.finish();
}

/// A device that fell off the bus (every read all ones) fails bring-up with an error that
/// says what was read, instead of being driven.
#[test]
fn a_device_off_the_bus_fails_bring_up() {
    use std::sync::atomic::Ordering;
    let stub = std::sync::Arc::new(vgpu_stub::device::Device::new(
        Default::default(),
        std::sync::Arc::new(vgpu_stub::exec::soft::SoftExecutor::new(Default::default())),
    ));
    let faults = vgpu_test_stack::backing::Faults::none();
    faults.dead.store(true, Ordering::SeqCst);
    let backing = vgpu_test_stack::backing::InProcessBacking::new(stub, faults);
    let e = vgpu_driver::device::Device::bring_up(Box::new(backing))
        .err()
        .expect("bring-up of a dead device fails")
        .to_string();
    assert!(e.contains("0xffffffff"), "{e}");
}

/// The daemons as processes, as the main job runs them: the built vgpu-stub and
/// vgpu-driver serve a client.
#[test]
fn the_stack_runs_as_processes() {
    let mut st = vgpu_test_stack::ProcessStack::start(
        &["--connections", "1", "--memory", "1G", "--executor", "soft"],
        Some(&["--window-size", "2097152"]),
    );
    let mut c = DriverClient::connect(&st.control(), "process").unwrap();
    assert!(c.round_trip(1 << 20, 8));
    drop(c);
    st.check_running();
}

/// A queue's interrupt eventfd is its session's own: a client that kept its eventfd after
/// leaving neither sees nor takes the interrupts of the queue's next owner, who still gets
/// them.
#[test]
fn a_former_client_sees_nothing_of_the_next_ones_interrupts() {
    use vgpu_proto::queue::qcb;
    let st = Stack::builder().window_bytes(1 << 20).start();
    let a = DriverClient::connect(st.control(), "first").unwrap();
    let qid = a.welcome.qid;
    let kept = a.queue.irq().unwrap().try_clone().unwrap();
    drop(a);
    eventually("the first client is gone", || {
        !st.driver()
            .status_json(vgpu_driver::server::Viewer::All)
            .contains("first")
    });
    let mut b = DriverClient::connect(st.control(), "second").unwrap();
    assert_eq!(b.welcome.qid, qid, "the queue is reused");
    let mine = b.queue.irq().unwrap().try_clone().unwrap();
    let ready = |fd: &std::os::fd::OwnedFd| {
        vgpu_os::fd::wait_readable(
            &[std::os::fd::AsRawFd::as_raw_fd(fd)],
            std::time::Duration::from_millis(300),
        )
        .is_some()
    };
    // Completions with interrupts armed signal the queue's vector.
    b.queue.set_qcb(qcb::IRQ_ARMED, 1);
    b.submit(Command::NOP(bytemuck::Zeroable::zeroed()), 0, &[], false);
    assert!(ready(&mine), "the queue's owner gets its interrupt");
    assert!(!ready(&kept), "the former client's eventfd was signalled");
    let c = b
        .queue
        .next(std::time::Duration::from_secs(5))
        .expect("NOP");
    assert_eq!(c.status(), Status::SUCCESS);
    drop(b);
    st.finish();
}

/// The driver's status names other users' processes only to root and to the driver's own
/// user; anyone else sees the device, its own clients and how many others there are.
#[test]
fn status_shows_other_users_clients_only_to_root() {
    use vgpu_driver::server::Viewer;
    let st = Stack::builder().link(Link::InProcess).start();
    let _c = DriverClient::connect(st.control(), "someone-else").unwrap();
    let me = nix::unistd::geteuid().as_raw();
    let stranger = if me == 0 { 4242 } else { me + 1 };
    assert_eq!(Viewer::of(0), Viewer::All);
    assert_eq!(Viewer::of(me), Viewer::All);
    assert_eq!(Viewer::of(stranger), Viewer::User(stranger));
    let all = st.driver().status_json(Viewer::of(0));
    assert!(all.contains("someone-else"), "{all}");
    assert!(all.contains("\"other_clients\":0"), "{all}");
    let theirs = st.driver().status_json(Viewer::of(stranger));
    assert!(!theirs.contains("someone-else"), "{theirs}");
    assert!(!theirs.contains(&format!("\"uid\":{me}")), "{theirs}");
    assert!(theirs.contains("\"clients\":[]"), "{theirs}");
    assert!(theirs.contains("\"other_clients\":1"), "{theirs}");
    assert!(theirs.contains("VGPU-STUB"), "{theirs}");
    st.finish();
}

/// The memory a client is handed (queue region, windows) is sealed: the client cannot
/// shrink it under the device (which would fault the device's accesses) or grow it.
#[test]
fn a_client_cannot_resize_the_memory_it_shares_with_the_device() {
    let st = Stack::builder().window_bytes(1 << 20).start();
    let mut c = DriverClient::connect(st.control(), "resizer").unwrap();
    let window = &c.windows[&c.welcome.window];
    for (what, file) in [
        ("window", window.file().unwrap()),
        ("queue", c.queue_mem.file().unwrap()),
    ] {
        let len = file.metadata().unwrap().len();
        assert!(file.set_len(0).is_err(), "the {what} could be truncated");
        assert!(file.set_len(len * 2).is_err(), "the {what} could be grown");
        assert_eq!(file.metadata().unwrap().len(), len);
    }
    assert!(c.round_trip(4096, 3), "the device still serves the client");
    drop(c);
    st.finish();
}

/// Load with faults: clients doing mixed work for a while (VGPU_SOAK_SECONDS, 20 s by
/// default), one of them killed at a random point every half second or so and replaced;
/// afterwards the device holds no PD and no object, the driver no client, queue or window.
#[test]
fn soak_with_random_kills_leaks_nothing() {
    let secs: u64 = std::env::var("VGPU_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("soak: {secs} s, seed {seed:#x}");
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let st = Stack::builder().window_bytes(4 << 20).start();
    let spawn = || spawn_child_with(st.control(), None, true);
    let mut clients: Vec<_> = (0..4).map(|_| spawn()).collect();
    let t0 = std::time::Instant::now();
    let mut kills = 0;
    while t0.elapsed() < std::time::Duration::from_secs(secs) {
        std::thread::sleep(std::time::Duration::from_millis(200 + next(600)));
        let i = next(clients.len() as u64) as usize;
        let (mut victim, _) = clients.swap_remove(i);
        if let Ok(Some(status)) = victim.try_wait() {
            panic!("a client ended on its own: {status:?} (seed {seed:#x})");
        }
        victim.kill().unwrap();
        victim.wait().unwrap();
        kills += 1;
        clients.push(spawn());
    }
    for (mut c, _) in clients {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    eventually("every PD reclaimed", || st.totals().pds == 0);
    let t = st.totals();
    assert_eq!(
        (t.objects(), t.mem_bytes, t.windows, t.queues, t.pending),
        (0, 0, 0, 0, 0),
        "seed {seed:#x}"
    );
    let status = || st.driver().status_json(vgpu_driver::server::Viewer::All);
    let empty = ["\"clients\":[]", "\"queues\":0", "\"window_bytes\":0"];
    eventually(
        "every client, queue and window reclaimed by the driver",
        || empty.iter().all(|want| status().contains(want)),
    );
    // The device still serves.
    let mut c = DriverClient::connect(st.control(), "after").unwrap();
    assert!(c.round_trip(1 << 20, 1));
    drop(c);
    println!("soak: {kills} clients killed mid-work, nothing leaked");
    st.finish();
}

/// vgpu-driver killed under load: its clients fail (they never hang), vgpu-stub resets the
/// device for the lost connection, and a new driver on the same stub serves new clients.
#[test]
fn a_driver_killed_under_load_fails_its_clients_and_a_new_one_serves() {
    let driver_args = ["--window-size", "4194304"];
    let mut st = vgpu_test_stack::ProcessStack::start(
        &["--connections", "2", "--memory", "1G", "--executor", "soft"],
        Some(&driver_args),
    );
    let mut clients: Vec<_> = (0..3)
        .map(|_| spawn_child_with(&st.control(), None, true))
        .collect();
    for (_, out) in &mut clients {
        wait_line(out, "transferring");
    }
    st.kill_driver();
    for (mut c, _) in clients {
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(status) = c.try_wait().unwrap() {
                break status;
            }
            if t0.elapsed() > std::time::Duration::from_secs(60) {
                let _ = c.kill();
                panic!("a client hung after its driver died");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(!status.success(), "a client carried on without its driver");
    }
    st.start_driver(&driver_args);
    let mut c = DriverClient::connect(&st.control(), "after").unwrap();
    assert!(c.round_trip(1 << 20, 2));
    drop(c);
    st.check_running();
}

/// A driver whose device is lost (vgpu-stub gone) notices within its liveness period, says
/// why and exits with failure, closing its clients' connections, so that its service
/// manager restarts it; a new stub and driver on the same sockets serve again.
#[test]
fn a_driver_whose_device_is_lost_exits_to_be_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let stub_args = ["--connections", "1", "--memory", "1G", "--executor", "soft"];
    let driver_args = ["--window-size", "2097152"];
    let mut st =
        vgpu_test_stack::ProcessStack::start_in(dir.path(), &stub_args, Some(&driver_args));
    let mut c = DriverClient::connect(&st.control(), "before").unwrap();
    assert!(c.round_trip(1 << 20, 1));
    st.stub().kill().unwrap();
    st.stub().wait().unwrap();
    let status = st
        .wait_driver(std::time::Duration::from_secs(10))
        .expect("the driver noticed the lost device and exited");
    assert!(!status.success(), "{status}");
    assert!(
        vgpu_driver::client::request(&c.fd, &Message::StatusQuery, 99, &[]).is_err(),
        "the client's connection is closed"
    );
    drop((c, st));
    let st = vgpu_test_stack::ProcessStack::start_in(dir.path(), &stub_args, Some(&driver_args));
    let mut c = DriverClient::connect(&st.control(), "after").unwrap();
    assert!(c.round_trip(1 << 20, 2));
}

/// With fewer MSI-X vectors than queues (a guest with few vCPUs may grant fewer than 256),
/// a queue past them gets a timer in place of its interrupt, so that a sleeping client
/// still looks at its ring every millisecond; queues with a vector keep a real interrupt.
/// The status says how many vectors are in use.
#[test]
fn queues_without_a_vector_wake_their_clients_by_timer() {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::time::Duration;
    use vgpu_proto::queue::qcb;
    let st = Stack::builder()
        .window_bytes(1 << 20)
        .limits(Limits {
            max_vectors: 2,
            ..Limits::default()
        })
        .start();
    let a = DriverClient::connect(st.control(), "with-vector").unwrap();
    let mut b = DriverClient::connect(st.control(), "with-timer").unwrap();
    assert!(
        a.welcome.qid < 2 && b.welcome.qid >= 2,
        "queues {} and {}",
        a.welcome.qid,
        b.welcome.qid
    );
    let readable = |fd: &OwnedFd, within: Duration| {
        vgpu_os::fd::wait_readable(&[fd.as_raw_fd()], within).is_some()
    };
    let (interrupt, timer) = (a.queue.irq().unwrap(), b.queue.irq().unwrap());
    assert!(
        !readable(interrupt, Duration::from_millis(200)),
        "an interrupt fired with nothing completed"
    );
    assert!(
        readable(timer, Duration::from_millis(100)),
        "the timer never fired"
    );
    b.queue.set_qcb(qcb::IRQ_ARMED, 1);
    b.submit(Command::NOP(bytemuck::Zeroable::zeroed()), 0, &[], false);
    let c = b.queue.next(Duration::from_secs(5)).expect("NOP");
    assert_eq!(c.status(), Status::SUCCESS);
    let status = st.driver().status_json(vgpu_driver::server::Viewer::All);
    assert!(status.contains("\"msix_vectors\":2"), "{status}");
    drop((a, b));
    st.finish();
}
