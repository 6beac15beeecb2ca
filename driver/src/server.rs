//! The control plane (spec §9): a `SOCK_SEQPACKET` Unix socket on which each connection is
//! one client with its own PD, I/O queue and windows. A thread serves each client; when the
//! connection ends for any reason (GOODBYE, exit, SIGKILL) the client's PD is destroyed and
//! its memory unmapped and freed, without disturbing the other clients.

use crate::device::{Device, DmaMem};
use crate::{DriverError, SetupError};
use nix::sys::socket::{self, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use std::collections::{BTreeSet, HashMap};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vgpu_os::fd::{own_fds, wait_readable};
use vgpu_os::lock;
use vgpu_proto::cmd::{
    window_access, PdArgs, PdCreateArgs, QueueCreateArgs, WindowArgs, WindowRegisterArgs,
};
use vgpu_proto::control::{
    error_code, HelloBody, HostRegisterBody, Message, WelcomeBody, WindowGrantedBody, MAX_FDS,
    MAX_MESSAGE, VERSION,
};
use vgpu_proto::queue::QueueLayout;
use vgpu_proto::regs::{self, caps};
use vgpu_proto::Command;
use vmm_sys_util::eventfd::EventFd;

/// How often a queue without an MSI-X vector (the system granted fewer than there are
/// queues) wakes its sleeping client, in place of the interrupt.
pub const INTERRUPT_TICK: Duration = Duration::from_millis(1);

/// What wakes a queue's sleeping client.
enum Interrupt {
    /// The eventfd of the queue's MSI-X vector.
    Vector(EventFd),
    /// A timer in its place, for a queue without a vector ([`interrupt_timer`]).
    Timer(OwnedFd),
}

impl Interrupt {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Interrupt::Vector(e) => e.as_raw_fd(),
            Interrupt::Timer(t) => t.as_raw_fd(),
        }
    }
}

/// The stand-in for the interrupt of a queue without an MSI-X vector: a timer readable
/// every [`INTERRUPT_TICK`], which the client reads and polls like the eventfd (8 bytes,
/// a count), so a sleeping client looks at its ring at that pace.
fn interrupt_timer() -> Result<OwnedFd, Refusal> {
    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    let refuse = |e: nix::Error| Refusal(error_code::DEVICE_ERROR, format!("interrupt timer: {e}"));
    let t = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )
    .map_err(refuse)?;
    t.set(
        Expiration::Interval(TimeSpec::from_duration(INTERRUPT_TICK)),
        TimerSetTimeFlags::empty(),
    )
    .map_err(refuse)?;
    Ok(OwnedFd::from(t))
}

/// Limits of the control plane (spec §9.7).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Clients at once (at most 255, the I/O queues).
    pub max_clients: usize,
    /// Clients at once per uid.
    pub max_clients_per_uid: usize,
    /// Default log2 ring depth.
    pub queue_depth_log2: u8,
    /// Default first-window size.
    pub window_bytes: u64,
    /// Window memory per client.
    pub max_window_bytes: u64,
    /// Window memory over all clients.
    pub max_total_window_bytes: u64,
    /// Device-memory quota per client (0 = the device's default).
    pub pd_mem_quota: u64,
    /// Most MSI-X vectors used (queues past them wake their clients by timer).
    pub max_vectors: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 64,
            max_clients_per_uid: 16,
            queue_depth_log2: 10,
            window_bytes: 64 << 20,
            max_window_bytes: 4 << 30,
            max_total_window_bytes: 16 << 30,
            pd_mem_quota: 0,
            max_vectors: vgpu_proto::regs::pci::MSIX_VECTORS,
        }
    }
}

#[derive(Clone, Debug)]
struct ClientInfo {
    pid: i32,
    uid: u32,
    name: String,
    pd: u32,
    qid: u16,
    windows: usize,
    window_bytes: u64,
}

#[derive(Default)]
struct State {
    clients: HashMap<u64, ClientInfo>,
    qids: BTreeSet<u16>,
    window_bytes: u64,
    next_id: u64,
}

/// The driver: the device and its clients.
pub struct Driver {
    dev: Device,
    limits: Limits,
    state: Mutex<State>,
    stopping: AtomicBool,
}

/// The body naming window `id` of `len` bytes.
fn granted(id: u32, len: u64) -> WindowGrantedBody {
    WindowGrantedBody {
        window: id,
        rsv: 0,
        bytes: len,
    }
}

/// A refusal sent back to a client.
struct Refusal(u32, String);

impl From<DriverError> for Refusal {
    fn from(e: DriverError) -> Self {
        let code = match e {
            DriverError::NoMemory(_) => error_code::NO_MEMORY,
            DriverError::NotSupported(_) => error_code::NOT_SUPPORTED,
            DriverError::Shm(_) => error_code::INVALID,
            _ => error_code::DEVICE_ERROR,
        };
        Refusal(code, e.report())
    }
}

impl Driver {
    /// A driver over a brought-up device.
    pub fn new(dev: Device, limits: Limits) -> Arc<Driver> {
        Arc::new(Driver {
            dev,
            limits,
            state: Mutex::new(State::default()),
            stopping: AtomicBool::new(false),
        })
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// MSI-X vectors in use: queues from this number up wake their clients by timer.
    pub fn msix_vectors(&self) -> u16 {
        self.dev.backing().vectors().min(self.limits.max_vectors)
    }

    /// Status as JSON (spec §9.4 STATUS_REPLY), listing the clients `viewer` may see.
    pub fn status_json(&self, viewer: Viewer) -> String {
        let (clients, others, queues, window_bytes) = {
            let s = lock(&self.state);
            let (mut clients, others): (Vec<ClientInfo>, Vec<ClientInfo>) = s
                .clients
                .values()
                .cloned()
                .partition(|c| viewer.sees(c.uid));
            clients.sort_by_key(|c| c.qid);
            (clients, others.len(), s.qids.len(), s.window_bytes)
        };
        // Device memory in use, per PD and in all, from the device (PD_STATS); the state lock
        // is not held across the admin commands. A PD being destroyed counts as empty.
        let mut pds: Vec<u32> = clients.iter().map(|c| c.pd).collect();
        pds.push(0);
        let counts = self.dev.stats(&pds).unwrap_or_else(|e| {
            log::warn!("PD_STATS: {}", e.report());
            vec![None; pds.len()]
        });
        let stats = |i: usize| {
            counts.get(i).copied().flatten().map_or((0, 0, 0, 0), |c| {
                (c.mem_bytes, c.mem_quota, c.objects(), c.gpu_util)
            })
        };
        let list: Vec<String> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (used, quota, objects, util) = stats(i);
                format!(
                    "{{\"pid\":{},\"uid\":{},\"name\":\"{}\",\"pd\":{},\"queue\":{},\"windows\":{},\"window_bytes\":{},\"mem_bytes\":{used},\"mem_quota\":{quota},\"objects\":{objects},\"gpu_util\":{util}}}",
                    c.pid,
                    c.uid,
                    c.name.escape_default(),
                    c.pd,
                    c.qid,
                    c.windows,
                    c.window_bytes
                )
            })
            .collect();
        let (used, _, _, util) = stats(clients.len());
        let info = &self.dev.info;
        format!(
            "{{\"device\":\"{}\",\"uuid\":\"GPU-{}\",\"pci_bus_id\":\"{:04x}:{:02x}:{:02x}.{:x}\",\"driver_version\":\"{}\",\"cuda_version\":\"{}.{}\",\"compute_capability\":\"{}.{}\",\"device_memory\":{},\"mem_used\":{used},\"gpu_util\":{util},\"clients\":[{}],\"other_clients\":{others},\"queues\":{},\"window_bytes\":{},\"max_clients\":{},\"msix_vectors\":{}}}",
            info.name().escape_default(),
            info.uuid_string(),
            info.pci_domain,
            info.pci_bus,
            info.pci_device,
            info.pci_function,
            info.driver_version().escape_default(),
            info.cuda_version / 1000,
            info.cuda_version % 1000 / 10,
            info.cc_major,
            info.cc_minor,
            info.total_mem,
            list.join(","),
            queues,
            window_bytes,
            self.limits.max_clients,
            self.msix_vectors()
        )
    }

    /// Asks the accept loop to stop after its current wait.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}

/// Whom a status reply is for: the clients it lists (spec §9.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewer {
    /// Every client (root, or the user the driver runs as).
    All,
    /// The clients of one user; the others are only counted.
    User(u32),
}

impl Viewer {
    /// The view of a peer with user id `uid`.
    pub fn of(uid: u32) -> Viewer {
        if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
            Viewer::All
        } else {
            Viewer::User(uid)
        }
    }

    fn sees(self, uid: u32) -> bool {
        match self {
            Viewer::All => true,
            Viewer::User(u) => u == uid,
        }
    }
}

/// Creates the listening socket at `path`: mode `mode`, group `group` (if given).
pub fn listen(path: &Path, mode: u32, group: Option<&str>) -> Result<OwnedFd, DriverError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let fd = socket::socket(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)?;
    let addr = UnixAddr::new(path).map_err(std::io::Error::from)?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(std::io::Error::from)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(g) = group {
        let grp = nix::unistd::Group::from_name(g)
            .map_err(std::io::Error::from)?
            .ok_or_else(|| SetupError::NoSuchGroup { group: g.into() })?;
        nix::unistd::chown(path, None, Some(grp.gid)).map_err(std::io::Error::from)?;
    }
    socket::listen(&fd, socket::Backlog::new(64).map_err(std::io::Error::from)?)
        .map_err(std::io::Error::from)?;
    log::info!("control socket {} (mode {mode:o})", path.display());
    Ok(fd)
}

/// Accepts clients until [`Driver::stop`]; each client is served on its own thread.
pub fn serve(driver: Arc<Driver>, listener: OwnedFd) {
    while !driver.stopping.load(Ordering::Acquire) {
        if wait_readable(&[listener.as_raw_fd()], Duration::from_millis(200)).is_none() {
            continue;
        }
        let conn = match socket::accept4(listener.as_raw_fd(), socket::SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => own_fds(vec![fd]).remove(0),
            Err(e) => {
                log::warn!("accept failed: {e}");
                continue;
            }
        };
        let d = driver.clone();
        let spawned = std::thread::Builder::new()
            .name("vgpu-client".into())
            .spawn(move || Session::start(d, conn));
        if let Err(e) = spawned {
            log::error!("cannot start a client thread: {e}");
        }
    }
}

/// A received packet: its bytes, its descriptors, and whether it was truncated.
type Packet = (Vec<u8>, Vec<OwnedFd>, bool);

/// Receives one message; `Ok(None)` when the peer closed the connection.
fn recv(fd: RawFd) -> std::io::Result<Option<Packet>> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds, truncated) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(std::io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                fds.extend(own_fds(raw));
            }
        }
        let truncated = msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        (msg.bytes, fds, truncated)
    };
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some((buf, fds, truncated || n > MAX_MESSAGE)))
}

/// Sends one message with descriptors.
pub fn send(fd: RawFd, msg: &Message, seq: u32, fds: &[RawFd]) -> std::io::Result<()> {
    let bytes = msg.encode(seq);
    let cmsgs = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    socket::sendmsg::<()>(
        fd,
        &[IoSlice::new(&bytes)],
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}

struct Doorbell {
    stop: EventFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Session {
    driver: Arc<Driver>,
    id: u64,
    conn: OwnedFd,
    pid: i32,
    uid: u32,
    pd: Option<u32>,
    qid: Option<u16>,
    queue: Option<DmaMem>,
    windows: HashMap<u32, DmaMem>,
    next_window: u32,
    irq: Option<Interrupt>,
    doorbell: Option<Doorbell>,
}

impl Session {
    fn start(driver: Arc<Driver>, conn: OwnedFd) {
        let cred = match socket::getsockopt(&conn, sockopt::PeerCredentials) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("refusing a client whose credentials cannot be read: {e}");
                return;
            }
        };
        let id = {
            let mut s = lock(&driver.state);
            s.next_id += 1;
            s.next_id
        };
        log::info!(
            "client {id} connected: pid {} uid {} gid {}",
            cred.pid(),
            cred.uid(),
            cred.gid()
        );
        let mut s = Session {
            driver,
            id,
            conn,
            pid: cred.pid(),
            uid: cred.uid(),
            pd: None,
            qid: None,
            queue: None,
            windows: HashMap::new(),
            next_window: 1,
            irq: None,
            doorbell: None,
        };
        s.serve();
        s.cleanup();
    }

    fn serve(&mut self) {
        let mut bad_in_a_row = 0;
        loop {
            let (bytes, fds, truncated) = match recv(self.conn.as_raw_fd()) {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    log::info!("client {}: connection error: {e}", self.id);
                    return;
                }
            };
            let decoded = if truncated {
                Err(vgpu_proto::DecodeError::BadMessage("message too long"))
            } else {
                Message::decode(&bytes, fds.len())
            };
            // Only HOST_REGISTER's descriptor is kept (decoding checked the count).
            let mut fds = fds.into_iter();
            let (seq, msg) = match decoded {
                Ok(m) => {
                    bad_in_a_row = 0;
                    m
                }
                Err(e) => {
                    bad_in_a_row += 1;
                    log::warn!("client {}: malformed control message: {e}", self.id);
                    let seq = bytes
                        .get(12..16)
                        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
                    let reply = Message::Error {
                        code: error_code::BAD_MESSAGE,
                        message: e.to_string(),
                    };
                    if send(self.conn.as_raw_fd(), &reply, seq, &[]).is_err() || bad_in_a_row >= 2 {
                        return;
                    }
                    continue;
                }
            };
            let result = match msg {
                Message::Hello(h) => self.hello(seq, &h),
                Message::WindowAlloc(w) => self.window_alloc(seq, w.bytes),
                Message::WindowFree(w) => self.window_free(seq, w.window),
                Message::HostRegister(r) => match fds.next() {
                    Some(fd) => self.host_register(seq, &r, fd),
                    None => Err(Refusal(error_code::BAD_MESSAGE, "no descriptor".into())),
                },
                Message::StatusQuery => {
                    let text = self.driver.status_json(Viewer::of(self.uid));
                    send(self.conn.as_raw_fd(), &Message::StatusReply(text), seq, &[])
                        .map_err(|e| Refusal(0, e.to_string()))
                }
                Message::Goodbye => return,
                _ => Err(Refusal(
                    error_code::BAD_STATE,
                    "only clients' requests are accepted".into(),
                )),
            };
            if let Err(Refusal(code, message)) = result {
                if code == 0 {
                    return; // sending failed: the client is gone
                }
                log::info!("client {}: refused: {message}", self.id);
                if send(
                    self.conn.as_raw_fd(),
                    &Message::Error { code, message },
                    seq,
                    &[],
                )
                .is_err()
                {
                    return;
                }
            }
        }
    }

    fn hello(&mut self, seq: u32, h: &HelloBody) -> Result<(), Refusal> {
        if self.pd.is_some() {
            return Err(Refusal(
                error_code::BAD_STATE,
                "HELLO was already sent".into(),
            ));
        }
        if h.version != u32::from(VERSION) {
            return Err(Refusal(
                error_code::VERSION_MISMATCH,
                format!(
                    "protocol version {} is not supported (driver speaks {VERSION})",
                    h.version
                ),
            ));
        }
        let d = self.driver.clone();
        let limits = &d.limits;
        let name =
            String::from_utf8_lossy(h.name.split(|b| *b == 0).next().unwrap_or(&[])).into_owned();
        // Admission: a queue id, and the client limits.
        let qid = {
            let mut st = lock(&d.state);
            let per_uid = st.clients.values().filter(|c| c.uid == self.uid).count();
            if st.clients.len() >= limits.max_clients {
                return Err(Refusal(
                    error_code::NO_QUEUES,
                    format!("all {} client slots are in use", limits.max_clients),
                ));
            }
            if per_uid >= limits.max_clients_per_uid {
                return Err(Refusal(
                    error_code::NO_QUEUES,
                    format!("uid {} already has {per_uid} clients", self.uid),
                ));
            }
            let qid = (1..=caps::MAX_IO_QUEUES as u16)
                .find(|q| !st.qids.contains(q))
                .ok_or(Refusal(
                    error_code::NO_QUEUES,
                    "no I/O queue is free".into(),
                ))?;
            st.qids.insert(qid);
            st.clients.insert(
                self.id,
                ClientInfo {
                    pid: self.pid,
                    uid: self.uid,
                    name: name.clone(),
                    pd: 0,
                    qid,
                    windows: 0,
                    window_bytes: 0,
                },
            );
            qid
        };
        self.qid = Some(qid);
        let depth = if h.queue_depth_log2 == 0 {
            limits.queue_depth_log2
        } else {
            h.queue_depth_log2.min(regs::MAX_IO_DEPTH_LOG2) as u8
        };
        let want = if h.window_bytes == 0 {
            limits.window_bytes
        } else {
            h.window_bytes
        };
        let pd = d
            .dev
            .admin_ok(Command::PD_CREATE(PdCreateArgs {
                mem_quota: limits.pd_mem_quota,
                max_objects: 0,
                max_windows: 0,
                // Module images are shared by hash only between one user's processes.
                cache_domain: self.uid,
                rsv0: 0,
                rsv: 0,
            }))
            .map_err(Refusal::from)?
            .result0 as u32;
        self.pd = Some(pd);
        lock(&d.state)
            .clients
            .entry(self.id)
            .and_modify(|c| c.pd = pd);
        let layout = QueueLayout::new(depth, regs::MAX_IO_DEPTH_LOG2)
            .ok_or(Refusal(error_code::BAD_MESSAGE, "queue depth".into()))?;
        let queue = d.dev.dma_alloc("vgpu-queue", layout.region_size() as u64)?;
        // A new eventfd per session: the queue's previous owner may have kept its own.
        let vectors = d.msix_vectors();
        let irq = if qid < vectors {
            Interrupt::Vector(d.dev.backing().vector_eventfd(qid)?)
        } else {
            log::info!(
                "client {}: queue {qid} has no MSI-X vector ({vectors} routed); a {INTERRUPT_TICK:?} timer wakes the client instead",
                self.id
            );
            Interrupt::Timer(interrupt_timer()?)
        };
        d.dev
            .admin_ok(Command::QUEUE_CREATE(QueueCreateArgs {
                pd,
                qid,
                vector: qid,
                depth_log2: depth,
                rsv0: [0; 7],
                base: queue.iova,
                rsv: 0,
            }))
            .map_err(Refusal::from)?;
        let queue_bytes = queue.bytes();
        self.queue = Some(queue);
        self.irq = Some(irq);
        let window = self.add_window(want)?;
        let bell = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|e| Refusal(error_code::DEVICE_ERROR, e.to_string()))?;
        self.doorbell = Some(self.start_doorbell(qid, &bell)?);
        let (wid, wbytes) = window;
        let mut body: WelcomeBody = bytemuck::Zeroable::zeroed();
        body.pd = pd;
        body.qid = qid;
        body.vector = qid;
        body.queue_depth_log2 = u32::from(depth);
        body.window = wid;
        body.queue_bytes = queue_bytes;
        body.window_bytes = wbytes;
        body.max_window_bytes = limits.max_window_bytes;
        body.features = d.dev.features;
        body.device = d.dev.info;
        let fds = [
            self.queue
                .as_ref()
                .and_then(|q| q.shm.file())
                .map_or(-1, |f| f.as_raw_fd()),
            self.windows
                .get(&wid)
                .and_then(|w| w.shm.file())
                .map_or(-1, |f| f.as_raw_fd()),
            self.irq.as_ref().map_or(-1, Interrupt::as_raw_fd),
            bell.as_raw_fd(),
        ];
        send(
            self.conn.as_raw_fd(),
            &Message::Welcome(Box::new(body)),
            seq,
            &fds,
        )
        .map_err(|e| Refusal(0, e.to_string()))?;
        log::info!("client {} ({name}, pid {}): PD {pd}, queue {qid} (depth 2^{depth}), window {wid} of {wbytes} bytes", self.id, self.pid);
        Ok(())
    }

    /// Forwards the client's doorbell eventfd to the queue's doorbell register.
    fn start_doorbell(&self, qid: u16, bell: &EventFd) -> Result<Doorbell, Refusal> {
        let stop = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|e| Refusal(error_code::DEVICE_ERROR, e.to_string()))?;
        let (bell, stop2) = (
            bell.try_clone()
                .map_err(|e| Refusal(error_code::DEVICE_ERROR, e.to_string()))?,
            stop.try_clone()
                .map_err(|e| Refusal(error_code::DEVICE_ERROR, e.to_string()))?,
        );
        let d = self.driver.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vgpu-doorbell-{qid}"))
            .spawn(move || loop {
                match wait_readable(
                    &[bell.as_raw_fd(), stop2.as_raw_fd()],
                    Duration::from_secs(1),
                ) {
                    Some(0) => {
                        let _ = bell.read();
                        if let Err(e) = d.dev.backing().write32(regs::doorbell(qid), 1) {
                            log::warn!("doorbell of queue {qid}: {}", e.report());
                        }
                    }
                    Some(_) => return,
                    None => {}
                }
            })
            .map_err(|e| Refusal(error_code::DEVICE_ERROR, e.to_string()))?;
        Ok(Doorbell {
            stop,
            thread: Some(thread),
        })
    }

    fn add_window(&mut self, bytes: u64) -> Result<(u32, u64), Refusal> {
        let dev = self.driver.clone();
        self.add_window_of(bytes, || dev.dev.dma_alloc("vgpu-window", bytes))
    }

    /// Registers `make()`'s memory, of `bytes` bytes, as a new window of the client's PD,
    /// within the window limits.
    fn add_window_of(
        &mut self,
        bytes: u64,
        make: impl FnOnce() -> Result<DmaMem, DriverError>,
    ) -> Result<(u32, u64), Refusal> {
        let d = self.driver.clone();
        let pd = self
            .pd
            .ok_or(Refusal(error_code::BAD_STATE, "send HELLO first".into()))?;
        let mine: u64 = self.windows.values().map(|w| w.bytes()).sum();
        if mine.saturating_add(bytes) > d.limits.max_window_bytes {
            return Err(Refusal(
                error_code::NO_MEMORY,
                format!(
                    "window memory per client is limited to {} bytes",
                    d.limits.max_window_bytes
                ),
            ));
        }
        {
            let st = lock(&d.state);
            if st.window_bytes.saturating_add(bytes) > d.limits.max_total_window_bytes {
                return Err(Refusal(
                    error_code::NO_MEMORY,
                    "window memory of all clients is exhausted".into(),
                ));
            }
        }
        let mem = make()?;
        let id = self.next_window;
        let args = WindowRegisterArgs {
            pd,
            window: id,
            iova: mem.iova,
            len: mem.bytes(),
            access: window_access::READ | window_access::WRITE,
            rsv0: 0,
        };
        d.dev
            .admin_ok(Command::WINDOW_REGISTER(args))
            .map_err(Refusal::from)?;
        self.next_window += 1;
        let len = mem.bytes();
        self.windows.insert(id, mem);
        let mut st = lock(&d.state);
        st.window_bytes += len;
        if let Some(c) = st.clients.get_mut(&self.id) {
            c.windows += 1;
            c.window_bytes += len;
        }
        Ok((id, len))
    }

    fn window_alloc(&mut self, seq: u32, bytes: u64) -> Result<(), Refusal> {
        let (id, len) = self.add_window(bytes)?;
        let fd = self
            .windows
            .get(&id)
            .and_then(|w| w.shm.file())
            .map_or(-1, |f| f.as_raw_fd());
        self.reply(seq, &Message::WindowGranted(granted(id, len)), &[fd])
    }

    /// Sends `msg` as the reply to request `seq`; a failure means the client is gone.
    fn reply(&self, seq: u32, msg: &Message, fds: &[RawFd]) -> Result<(), Refusal> {
        send(self.conn.as_raw_fd(), msg, seq, fds).map_err(|e| Refusal(0, e.to_string()))
    }

    /// HOST_REGISTER: the client's own memory, `r.bytes` at `r.offset` of `file`, made a
    /// window (spec §9.3).
    fn host_register(
        &mut self,
        seq: u32,
        r: &HostRegisterBody,
        file: OwnedFd,
    ) -> Result<(), Refusal> {
        let dev = self.driver.clone();
        let file = std::fs::File::from(file);
        let (id, len) =
            self.add_window_of(r.bytes, || dev.dev.dma_import(file, r.offset, r.bytes))?;
        log::info!(
            "client {}: host memory ({} bytes at offset {:#x} of its file) registered as window {id}",
            self.id,
            len,
            r.offset
        );
        self.reply(seq, &Message::HostRegistered(granted(id, len)), &[])
    }

    fn window_free(&mut self, seq: u32, id: u32) -> Result<(), Refusal> {
        let pd = self
            .pd
            .ok_or(Refusal(error_code::BAD_STATE, "send HELLO first".into()))?;
        if !self.windows.contains_key(&id) {
            return Err(Refusal(
                error_code::UNKNOWN_WINDOW,
                format!("window {id} is not yours"),
            ));
        }
        self.driver
            .dev
            .admin_ok(Command::WINDOW_UNREGISTER(WindowArgs {
                pd,
                window: id,
                rsv: [0; 3],
            }))
            .map_err(Refusal::from)?;
        if let Some(w) = self.windows.remove(&id) {
            let len = w.bytes();
            drop(w);
            let mut st = lock(&self.driver.state);
            st.window_bytes -= len;
            if let Some(c) = st.clients.get_mut(&self.id) {
                c.windows -= 1;
                c.window_bytes -= len;
            }
        }
        send(self.conn.as_raw_fd(), &Message::Ok, seq, &[]).map_err(|e| Refusal(0, e.to_string()))
    }

    fn cleanup(&mut self) {
        self.doorbell.take();
        if let Some(pd) = self.pd.take() {
            match self.driver.dev.admin(Command::PD_DESTROY(PdArgs {
                pd,
                rsv0: 0,
                rsv: [0; 3],
            })) {
                Ok(c) if c.status().is_ok() => {}
                Ok(c) => log::warn!("client {}: PD_DESTROY {pd}: {}", self.id, c.status()),
                Err(e) => log::warn!("client {}: PD_DESTROY {pd}: {}", self.id, e.report()),
            }
        }
        let freed: u64 = self.windows.values().map(|w| w.bytes()).sum();
        self.windows.clear();
        self.queue.take();
        self.irq.take();
        let mut st = lock(&self.driver.state);
        st.window_bytes -= freed;
        if let Some(q) = self.qid.take() {
            st.qids.remove(&q);
        }
        st.clients.remove(&self.id);
        log::info!(
            "client {} (pid {}) gone; its PD and {freed} bytes of windows were reclaimed",
            self.id,
            self.pid
        );
    }
}
