//! An in-test fake vgpu-driver, with a fake device behind each client's queue.
//!
//! The driver side listens on a `SOCK_SEQPACKET` socket in a temporary directory, answers
//! HELLO with WELCOME carrying real memfds and eventfds (or, on request, a malformed
//! WELCOME), and serves WINDOW_ALLOC, WINDOW_FREE, STATUS_QUERY and GOODBYE.
//!
//! The device side plays spec §5 on the shared queue memfd: it polls SQ_TAIL (acquire),
//! copies entries and their inline payload slots (wrapping) out of the ring, publishes
//! SQ_HEAD (release), writes completions with the right phase (bytes 0..28, then the publish
//! word with release), parks with PARKED = 1 when idle and PARKED = 2 when the completion
//! ring is full (store, full fence, re-check, then wait for the doorbell eventfd only), and
//! after each completion does the IRQ_ARMED handshake (full fence, load, clear, signal the
//! interrupt eventfd).
//!
//! Fake command semantics: NOP and other sync commands complete with SUCCESS; MEM_ALLOC
//! completes after `size` microseconds with result0 = size (so completions come out of
//! order); MEMCPY_HTOD with NOTIFY completes with result0 = FNV-1a of the inline payload and
//! result1 = its length; HOST_FUNC posts a CALLBACK completion with result0 = the cookie;
//! EVENT_RECORD of handle 0xBAD posts an ASYNC_ERROR completion (INVALID_HANDLE).

#![allow(dead_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytemuck::Zeroable;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::{
    accept4, bind, listen, recvmsg, sendmsg, socket, AddressFamily, Backlog, ControlMessage,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::unistd::ftruncate;
use vgpu_os::shm::SharedMemory;
use vgpu_proto::cmd::{Command, DecodeContext, Request};
use vgpu_proto::control::{error_code, HelloBody, Message, WelcomeBody, WindowGrantedBody};
use vgpu_proto::info::{DeviceInfo, DEVICE_INFO_VERSION};
use vgpu_proto::opcode::{Completion, Opcode, QueueKind};
use vgpu_proto::queue::{cqe_flags, inline_published, qcb, sqe_flags, QueueLayout, SQE_SIZE};
use vgpu_proto::regs::features;
use vgpu_proto::{Cqe, Sqe, Status};
use vgpu_shim::ConnectOptions;

/// How the fake device behaves.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// How long the device polls an empty ring before it parks.
    pub idle_spin: Duration,
    /// Sleep before consuming each entry (a slow device).
    pub entry_delay: Duration,
    /// Delay of every completion (a device that answers late).
    pub answer_delay: Duration,
    /// Consume entries but never complete anything.
    pub never_answer: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            idle_spin: Duration::from_micros(200),
            entry_delay: Duration::ZERO,
            answer_delay: Duration::ZERO,
            never_answer: false,
        }
    }
}

/// What the driver answers to HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WelcomeMode {
    /// A correct WELCOME.
    Good,
    /// A WELCOME with this many descriptors instead of 4.
    FdCount(usize),
    /// A WELCOME whose body fails validation (PD 0).
    BadBody,
    /// A WELCOME whose body is one byte short.
    ShortBody,
    /// A correct WELCOME whose queue memfd is smaller than it claims.
    ShortQueueMemfd,
    /// ERROR with this code.
    Refuse(u32),
}

/// How the fake driver behaves.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub depth_log2: u32,
    pub window_bytes: u64,
    pub max_window_bytes: u64,
    pub welcome: WelcomeMode,
    pub device: DeviceConfig,
    /// Close the connection this long after WELCOME.
    pub hangup_after: Option<Duration>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            depth_log2: 4,
            window_bytes: 1 << 20,
            max_window_bytes: 64 << 20,
            welcome: WelcomeMode::Good,
            device: DeviceConfig::default(),
            hangup_after: None,
        }
    }
}

/// What the fake driver and device saw and did.
#[derive(Debug, Default)]
pub struct Stats {
    pub hellos: Mutex<Vec<HelloBody>>,
    pub goodbyes: AtomicU64,
    pub sessions_done: AtomicU64,
    pub entries: AtomicU64,
    pub doorbells: AtomicU64,
    pub interrupts: AtomicU64,
    pub parks_idle: AtomicU64,
    pub parks_cq_full: AtomicU64,
    pub wrapped_payloads: AtomicU64,
    pub bad_entries: AtomicU64,
}

impl Stats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}

/// A running fake driver. Stops (and joins every thread) on drop.
pub struct FakeDriver {
    _dir: tempfile::TempDir,
    path: PathBuf,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The device info the fake driver reports.
pub fn device_info() -> DeviceInfo {
    let mut d = DeviceInfo::zeroed();
    d.version = DEVICE_INFO_VERSION;
    d.cuda_version = 12080;
    d.total_mem = 80 << 30;
    d.cc_major = 9;
    d.cc_minor = 0;
    d.executor = vgpu_proto::info::executor::SOFT;
    DeviceInfo::set_str(&mut d.name, "Fake VGPU H100");
    DeviceInfo::set_str(&mut d.driver_version, "570.86.15");
    d
}

fn adopt(raw: RawFd) -> OwnedFd {
    // SAFETY: `raw` was just returned by accept4 and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

fn memfd(name: &str, len: u64) -> OwnedFd {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).expect("memfd_create");
    ftruncate(&fd, len as i64).expect("ftruncate");
    fd
}

fn new_eventfd() -> nix::Result<OwnedFd> {
    EventFd::from_flags(EfdFlags::EFD_CLOEXEC).map(OwnedFd::from)
}

fn round_page(n: u64) -> u64 {
    n.div_ceil(4096) * 4096
}

impl FakeDriver {
    pub fn start(cfg: DriverConfig) -> FakeDriver {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vgpu.sock");
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("socket");
        bind(listener.as_raw_fd(), &UnixAddr::new(&path).unwrap()).expect("bind");
        listen(&listener, Backlog::new(8).unwrap()).expect("listen");
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stats = stats.clone();
            let stop = stop.clone();
            std::thread::spawn(move || accept_loop(listener, cfg, stats, stop))
        };
        FakeDriver {
            _dir: dir,
            path,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.path
    }

    /// Options that reach this driver, with a 10 s timeout.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            socket: self.path.clone(),
            name: "fake-driver-test".into(),
            queue_depth_log2: 0,
            window_bytes: 0,
            timeout: Duration::from_secs(10),
            spin: Duration::from_micros(50),
        }
    }

    /// Stops the driver and joins all its threads (so all its descriptors are closed).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("fake driver thread panicked");
        }
    }

    /// Waits until `cond` holds (up to 5 s).
    pub fn wait_until(&self, what: &str, cond: impl Fn(&Stats) -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !cond(&self.stats) {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for FakeDriver {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn accept_loop(listener: OwnedFd, cfg: DriverConfig, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut sessions = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let mut pfd = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut pfd, PollTimeout::from(20u16)).unwrap_or(0) == 0 {
            continue;
        }
        match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(raw) => {
                let conn = adopt(raw);
                let (cfg, stats, stop) = (cfg.clone(), stats.clone(), stop.clone());
                sessions.push(std::thread::spawn(move || {
                    session(conn, cfg, &stats, &stop);
                    stats.sessions_done.fetch_add(1, Ordering::SeqCst);
                }));
            }
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => panic!("accept: {e}"),
        }
    }
    for s in sessions {
        s.join().expect("fake driver session panicked");
    }
}

/// Receives one message (None on EOF, stop, or the hang-up deadline).
fn recv(
    conn: &OwnedFd,
    stop: &AtomicBool,
    until: Option<Instant>,
) -> Option<(u32, Result<Message, String>)> {
    loop {
        if stop.load(Ordering::SeqCst) || until.is_some_and(|u| Instant::now() >= u) {
            return None;
        }
        let mut pfd = [PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
        if poll(&mut pfd, PollTimeout::from(20u16)).unwrap_or(0) == 0 {
            continue;
        }
        let mut buf = vec![0u8; 65536];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let n = match recvmsg::<()>(conn.as_raw_fd(), &mut iov, None, MsgFlags::empty()) {
            Ok(m) => m.bytes,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        };
        if n == 0 {
            return None;
        }
        return Some(match Message::decode(&buf[..n], 0) {
            Ok((seq, m)) => (seq, Ok(m)),
            Err(e) => (0, Err(e.to_string())),
        });
    }
}

fn send_raw(conn: &OwnedFd, bytes: &[u8], fds: &[RawFd]) {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    // The client may already be gone; that is its business.
    let _ = sendmsg::<()>(conn.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None);
}

fn send(conn: &OwnedFd, msg: &Message, seq: u32, fds: &[RawFd]) {
    send_raw(conn, &msg.encode(seq), fds);
}

fn session(conn: OwnedFd, cfg: DriverConfig, stats: &Arc<Stats>, stop: &Arc<AtomicBool>) {
    let Some((seq, Ok(Message::Hello(hello)))) = recv(&conn, stop, None) else {
        return;
    };
    stats.hellos.lock().unwrap().push(hello);
    if let WelcomeMode::Refuse(code) = cfg.welcome {
        let msg = Message::Error {
            code,
            message: "refused by the fake driver".into(),
        };
        send(&conn, &msg, seq, &[]);
        return;
    }
    let depth_log2 = if hello.queue_depth_log2 != 0 {
        hello.queue_depth_log2
    } else {
        cfg.depth_log2
    };
    let layout = QueueLayout::new(depth_log2 as u8, 15).expect("depth");
    let queue_bytes = round_page(layout.region_size() as u64);
    let window_bytes = if hello.window_bytes != 0 {
        round_page(hello.window_bytes)
    } else {
        cfg.window_bytes
    };
    let qfd = memfd(
        "fake-queue",
        if cfg.welcome == WelcomeMode::ShortQueueMemfd {
            256
        } else {
            queue_bytes
        },
    );
    let wfd = memfd("fake-window", window_bytes);
    let irq = new_eventfd().expect("eventfd");
    let doorbell = new_eventfd().expect("eventfd");
    let mut body = WelcomeBody {
        pd: 7,
        qid: 3,
        vector: 3,
        queue_depth_log2: depth_log2,
        window: 1,
        queue_bytes,
        window_bytes,
        max_window_bytes: cfg.max_window_bytes,
        features: features::ALL,
        rsv: [0; 2],
        device: device_info(),
    };
    if cfg.welcome == WelcomeMode::BadBody {
        body.pd = 0;
    }
    let four = [
        qfd.as_raw_fd(),
        wfd.as_raw_fd(),
        irq.as_raw_fd(),
        doorbell.as_raw_fd(),
    ];
    match cfg.welcome {
        WelcomeMode::FdCount(n) => {
            let extra: Vec<OwnedFd> = (4..n.max(4)).map(|_| new_eventfd().unwrap()).collect();
            let mut fds: Vec<RawFd> = four.to_vec();
            fds.extend(extra.iter().map(|f| f.as_raw_fd()));
            fds.truncate(n);
            send(&conn, &Message::Welcome(Box::new(body)), seq, &fds);
        }
        WelcomeMode::ShortBody => {
            let mut bytes = Message::Welcome(Box::new(body)).encode(seq);
            bytes.pop();
            let len = (bytes.len() - 16) as u32;
            bytes[8..12].copy_from_slice(&len.to_le_bytes());
            send_raw(&conn, &bytes, &four);
        }
        _ => send(&conn, &Message::Welcome(Box::new(body)), seq, &four),
    }
    if !matches!(cfg.welcome, WelcomeMode::Good) {
        // Wait for the client to give up and close.
        while recv(&conn, stop, None).is_some() {}
        return;
    }
    drop(wfd);
    let mem = SharedMemory::map(qfd.as_fd(), layout.region_size()).expect("map queue");
    drop(qfd);
    let dev_stop = Arc::new(AtomicBool::new(false));
    let device = {
        let dev = Device {
            mem,
            l: layout,
            irq,
            doorbell,
            cfg: cfg.device.clone(),
            stats: stats.clone(),
            stop: dev_stop.clone(),
            sq_head: 0,
            cq_tail: 0,
            pending: Vec::new(),
        };
        std::thread::spawn(move || dev.run())
    };
    let until = cfg.hangup_after.map(|d| Instant::now() + d);
    let mut windows: Vec<(u32, OwnedFd)> = Vec::new();
    let mut next_window = 2u32;
    while let Some((seq, msg)) = recv(&conn, stop, until) {
        let reply = match msg {
            Err(e) => Message::Error {
                code: error_code::BAD_MESSAGE,
                message: e,
            },
            Ok(Message::WindowAlloc(a)) => {
                let held: u64 = window_bytes;
                if a.bytes > cfg.max_window_bytes - held {
                    Message::Error {
                        code: error_code::NO_MEMORY,
                        message: format!("{} bytes exceed the limit", a.bytes),
                    }
                } else {
                    let bytes = round_page(a.bytes);
                    let fd = memfd("fake-window", bytes);
                    let id = next_window;
                    next_window += 1;
                    let g = WindowGrantedBody {
                        window: id,
                        rsv: 0,
                        bytes,
                    };
                    send(&conn, &Message::WindowGranted(g), seq, &[fd.as_raw_fd()]);
                    windows.push((id, fd));
                    continue;
                }
            }
            Ok(Message::WindowFree(f)) => {
                if let Some(i) = windows.iter().position(|(id, _)| *id == f.window) {
                    windows.remove(i);
                    Message::Ok
                } else if f.window == 1 {
                    Message::Ok
                } else {
                    Message::Error {
                        code: error_code::UNKNOWN_WINDOW,
                        message: format!("no window {}", f.window),
                    }
                }
            }
            Ok(Message::StatusQuery) => Message::StatusReply(format!(
                "{{\"clients\":1,\"windows\":{}}}",
                windows.len() + 1
            )),
            Ok(Message::Goodbye) => {
                stats.goodbyes.fetch_add(1, Ordering::SeqCst);
                break;
            }
            Ok(_) => Message::Error {
                code: error_code::BAD_STATE,
                message: "unexpected message".into(),
            },
        };
        send(&conn, &reply, seq, &[]);
    }
    dev_stop.store(true, Ordering::SeqCst);
    device.join().expect("fake device panicked");
}

/// FNV-1a, the fake device's payload checksum.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

struct Device {
    mem: SharedMemory,
    l: QueueLayout,
    irq: OwnedFd,
    doorbell: OwnedFd,
    cfg: DeviceConfig,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    sq_head: u32,
    cq_tail: u32,
    /// Completions to post at their deadlines.
    pending: Vec<(Instant, Cqe)>,
}

impl Device {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the doorbell; true if it rang (and was consumed).
    fn wait_doorbell(&self, timeout: Duration) -> bool {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut pfd = [PollFd::new(self.doorbell.as_fd(), PollFlags::POLLIN)];
        if poll(&mut pfd, PollTimeout::from(ms)).unwrap_or(0) == 0 {
            return false;
        }
        let mut b = [0u8; 8];
        nix::unistd::read(self.doorbell.as_fd(), &mut b).expect("read doorbell");
        self.stats.doorbells.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn run(mut self) {
        let ctx = DecodeContext {
            queue: QueueKind::Io,
            features: features::ALL,
            max_inline: self.l.max_inline(),
        };
        let mut idle_since: Option<Instant> = None;
        while !self.stopped() {
            if !self.post_due() {
                return;
            }
            let tail = self.mem.load_u32(qcb::SQ_TAIL, Ordering::Acquire);
            if tail != self.sq_head {
                idle_since = None;
                if !self.cfg.entry_delay.is_zero() {
                    std::thread::sleep(self.cfg.entry_delay);
                }
                // Stop consuming while the completion ring is full (spec §5.4).
                if !self.wait_cq_room() {
                    return;
                }
                self.consume(tail, &ctx);
                continue;
            }
            let now = Instant::now();
            let since = *idle_since.get_or_insert(now);
            if now - since < self.cfg.idle_spin {
                std::thread::yield_now();
                continue;
            }
            // Park: store PARKED = 1, full fence, re-check SQ_TAIL (spec §5.6).
            self.mem
                .store_u32(qcb::PARKED, qcb::PARKED_IDLE, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.mem.load_u32(qcb::SQ_TAIL, Ordering::Relaxed) != self.sq_head {
                self.mem.store_u32(qcb::PARKED, 0, Ordering::Relaxed);
                continue;
            }
            self.stats.parks_idle.fetch_add(1, Ordering::SeqCst);
            loop {
                if self.stopped() {
                    return;
                }
                // With completions scheduled, wake for the earliest; otherwise only a
                // doorbell ends the park (so a client that forgets to ring hangs).
                let next = self.pending.iter().map(|p| p.0).min();
                let slice = next.map_or(Duration::from_millis(20), |n| {
                    n.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(20))
                });
                if self.wait_doorbell(slice) {
                    break;
                }
                if next.is_some_and(|n| Instant::now() >= n) {
                    break;
                }
            }
            self.mem.store_u32(qcb::PARKED, 0, Ordering::Relaxed);
            idle_since = None;
        }
    }

    /// Posts the scheduled completions whose time has come. False if stopped.
    fn post_due(&mut self) -> bool {
        let now = Instant::now();
        self.pending.sort_by_key(|p| p.0);
        while self.pending.first().is_some_and(|p| p.0 <= now) {
            let (_, c) = self.pending.remove(0);
            if !self.post(c) {
                return false;
            }
        }
        true
    }

    /// Waits until the completion ring has room, parking with PARKED = 2 while it is full.
    fn wait_cq_room(&mut self) -> bool {
        let depth = self.l.depth();
        loop {
            let head = self.mem.load_u32(qcb::CQ_HEAD, Ordering::Acquire);
            assert!(
                self.cq_tail.wrapping_sub(head) <= depth,
                "client's CQ_HEAD {head} passed CQ_TAIL {}",
                self.cq_tail
            );
            if self.cq_tail.wrapping_sub(head) < depth {
                return true;
            }
            self.mem
                .store_u32(qcb::PARKED, qcb::PARKED_CQ_FULL, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let head = self.mem.load_u32(qcb::CQ_HEAD, Ordering::Acquire);
            if self.cq_tail.wrapping_sub(head) < depth {
                self.mem.store_u32(qcb::PARKED, 0, Ordering::Relaxed);
                return true;
            }
            self.stats.parks_cq_full.fetch_add(1, Ordering::SeqCst);
            // Only the doorbell ends this park.
            while !self.wait_doorbell(Duration::from_millis(20)) {
                if self.stopped() {
                    return false;
                }
            }
            self.mem.store_u32(qcb::PARKED, 0, Ordering::Relaxed);
        }
    }

    /// Writes one completion (spec §5.5) and does the interrupt handshake (§5.6).
    fn post(&mut self, mut c: Cqe) -> bool {
        if !self.wait_cq_room() {
            return false;
        }
        let idx = self.cq_tail;
        c.sq_head = self.sq_head;
        c.flags &= !cqe_flags::PHASE;
        if self.l.phase(idx) {
            c.flags |= cqe_flags::PHASE;
        }
        let off = self.l.cqe_offset(idx);
        let bytes = bytemuck::bytes_of(&c);
        self.mem
            .write_bytes(off, &bytes[..Cqe::PUBLISH_OFFSET])
            .unwrap();
        let word = u32::from(c.flags) | u32::from(c.opcode) << 16;
        self.mem
            .store_u32(off + Cqe::PUBLISH_OFFSET, word, Ordering::Release);
        self.cq_tail = idx.wrapping_add(1);
        self.mem
            .store_u32(qcb::CQ_TAIL, self.cq_tail, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.mem.load_u32(qcb::IRQ_ARMED, Ordering::Relaxed) != 0 {
            self.mem.store_u32(qcb::IRQ_ARMED, 0, Ordering::Relaxed);
            nix::unistd::write(self.irq.as_fd(), &1u64.to_ne_bytes()).expect("interrupt");
            self.stats.interrupts.fetch_add(1, Ordering::SeqCst);
        }
        true
    }

    fn complete(&mut self, c: Cqe) {
        if self.cfg.never_answer {
            return;
        }
        if self.cfg.answer_delay.is_zero() {
            self.post(c);
        } else {
            self.pending
                .push((Instant::now() + self.cfg.answer_delay, c));
        }
    }

    fn consume(&mut self, tail: u32, ctx: &DecodeContext) {
        let idx = self.sq_head;
        let mut raw = [0u8; SQE_SIZE];
        self.mem
            .read_bytes(self.l.sqe_offset(idx), &mut raw)
            .unwrap();
        let sqe: Sqe = bytemuck::pod_read_unaligned(&raw);
        self.stats.entries.fetch_add(1, Ordering::SeqCst);
        let cqe = |status: Status, flags: u16| Cqe {
            cid: sqe.cid,
            status: status.0,
            result0: 0,
            result1: 0,
            sq_head: 0,
            flags,
            opcode: sqe.opcode,
        };
        let mut payload = Vec::new();
        if sqe.flags & sqe_flags::INLINE != 0 && sqe.payload_len > 0 {
            let Ok(n) = inline_published(idx, tail, sqe.payload_len) else {
                // The tail does not cover the payload: complete and skip to the tail.
                self.stats.bad_entries.fetch_add(1, Ordering::SeqCst);
                self.sq_head = tail;
                self.mem.store_u32(qcb::SQ_HEAD, tail, Ordering::Release);
                self.complete(cqe(Status::INLINE_TRUNCATED, 0));
                return;
            };
            let mut wrapped = false;
            for i in 0..n {
                let slot_idx = idx.wrapping_add(1 + i);
                if self.l.slot(slot_idx) < self.l.slot(idx) {
                    wrapped = true;
                }
                let mut s = [0u8; SQE_SIZE];
                self.mem
                    .read_bytes(self.l.sqe_offset(slot_idx), &mut s)
                    .unwrap();
                payload.extend_from_slice(&s);
            }
            payload.truncate(sqe.payload_len as usize);
            if wrapped {
                self.stats.wrapped_payloads.fetch_add(1, Ordering::SeqCst);
            }
            self.sq_head = idx.wrapping_add(1 + n);
        } else {
            self.sq_head = idx.wrapping_add(1);
        }
        // The slots are copied out: give them back (release).
        self.mem
            .store_u32(qcb::SQ_HEAD, self.sq_head, Ordering::Release);

        let is_async =
            Opcode::from_u16(sqe.opcode).is_some_and(|o| o.info().completion == Completion::Async);
        let req = match Request::decode(&sqe, ctx) {
            Ok(r) => r,
            Err(e) => {
                self.stats.bad_entries.fetch_add(1, Ordering::SeqCst);
                let notify = sqe.flags & sqe_flags::NOTIFY != 0;
                let f = if is_async && !notify {
                    cqe_flags::ASYNC_ERROR
                } else {
                    0
                };
                self.complete(cqe(e.status(), f));
                return;
            }
        };
        match req.command {
            Command::MEM_ALLOC(a) => {
                if !self.cfg.never_answer {
                    let mut c = cqe(Status::SUCCESS, 0);
                    c.result0 = a.size;
                    let at = Instant::now() + Duration::from_micros(a.size) + self.cfg.answer_delay;
                    self.pending.push((at, c));
                }
            }
            Command::MEMCPY_HTOD(_) => {
                if req.notify {
                    let mut c = cqe(Status::SUCCESS, 0);
                    c.result0 = fnv1a(&payload);
                    c.result1 = payload.len() as u64;
                    self.complete(c);
                }
            }
            Command::HOST_FUNC(h) => {
                let mut c = cqe(Status::SUCCESS, cqe_flags::CALLBACK);
                c.result0 = h.handle;
                self.complete(c);
                if req.notify {
                    self.complete(cqe(Status::SUCCESS, 0));
                }
            }
            Command::EVENT_RECORD(h) if h.handle == 0xBAD => {
                let f = if req.notify {
                    0
                } else {
                    cqe_flags::ASYNC_ERROR
                };
                self.complete(cqe(Status::INVALID_HANDLE, f));
            }
            _ => {
                if !is_async || req.notify {
                    self.complete(cqe(Status::SUCCESS, 0));
                }
            }
        }
    }
}

/// Number of open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
