//! The client core: one control-plane connection to vgpu-driver, its queue pair and its
//! windows (spec §5, §9).
//!
//! A [`Connection`] is one client of the driver and owns one protection domain (PD) on the
//! device. [`Connection::connect`] performs the session start of spec §9.3:
//!
//! 1. connect to the driver's `SOCK_SEQPACKET` socket (`$VGPU_SOCKET`, else
//!    [`vgpu_proto::control::DEFAULT_SOCKET`]); a missing socket is
//!    [`ClientError::NoDriver`], which the shims report as `CUDA_ERROR_NO_DEVICE`;
//! 2. send HELLO (program name, pid, wanted queue depth and first-window size);
//! 3. receive WELCOME with exactly four descriptors — the queue memfd, the first window's
//!    memfd, the queue's interrupt eventfd and the doorbell eventfd — and map both memfds
//!    `MAP_SHARED` after checking their sizes.
//!
//! After that, commands go straight to the device through the [`QueuePair`]
//! ([`Connection::queue`]); the control socket carries only window management
//! ([`Connection::alloc_window`], [`Connection::register_host`] for memory the program
//! already has, [`Connection::free_window`]), status
//! ([`Connection::status`]) and the GOODBYE sent when the connection is dropped.
//!
//! Threads: the queue is shared (`Arc<QueuePair>`, all methods take `&self`); the
//! control-plane methods take `&mut self`, so a shim keeps the `Connection` behind its own
//! lock and clones the queue's `Arc` for the hot path. Dropping the connection closes the
//! queue: pending and later queue calls fail with [`ClientError::Disconnected`].
//!
//! Every wait (a reply from the driver, room in the ring, a completion) is bounded by
//! [`ConnectOptions::timeout`] (`$VGPU_TIMEOUT_MS`, default 600 000 ms) and fails with
//! [`ClientError::Timeout`].

mod control;
mod error;
mod queue;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vgpu_proto::control::{
    kind, HelloBody, HostRegisterBody, Message, WindowAllocBody, WindowFreeBody, DEFAULT_SOCKET,
    SOCKET_ENV, VERSION,
};
use vgpu_proto::info::DeviceInfo;
use vgpu_proto::queue::QueueLayout;
use vgpu_proto::regs::caps::MAX_IO_DEPTH_LOG2;

pub use error::{error_code_name, ClientError};
pub use queue::QueuePair;

use vgpu_os::shm::{OutOfBounds, SharedMemory};

/// Environment variable bounding every wait of the client, in milliseconds (spec §8.4).
pub const TIMEOUT_ENV: &str = "VGPU_TIMEOUT_MS";
/// The default bound on every wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(600_000);
/// The default time a waiter polls the completion ring (yielding its CPU between polls
/// after the first microseconds) before it sleeps on the interrupt. Like CUDA's default
/// scheduling, which spins or yields rather than block: a decode step's synchronize waits
/// milliseconds, and waking from the interrupt costs tens of microseconds each time.
pub const DEFAULT_SPIN: Duration = Duration::from_millis(10);

/// How to connect. [`ConnectOptions::from_env`] (also the [`Default`]) reads the
/// environment; tests and tools set the fields directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The driver's socket.
    pub socket: PathBuf,
    /// Program name sent in HELLO (logged by the driver; at most 31 bytes are sent).
    pub name: String,
    /// log2 of the wanted ring depth (0 = the driver's default).
    pub queue_depth_log2: u32,
    /// Wanted size of the first window in bytes (0 = the driver's default).
    pub window_bytes: u64,
    /// Bound on every wait.
    pub timeout: Duration,
    /// How long a waiter polls the completion ring before it arms the interrupt and sleeps.
    pub spin: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions::from_env()
    }
}

impl ConnectOptions {
    /// Options from the environment: the socket from `$VGPU_SOCKET` (else
    /// [`DEFAULT_SOCKET`]), the timeout from `$VGPU_TIMEOUT_MS` (else
    /// [`DEFAULT_TIMEOUT`]; an unparsable value is logged and ignored), the program name
    /// from `argv[0]`; driver defaults for the depth and the window.
    pub fn from_env() -> Self {
        let socket = std::env::var_os(SOCKET_ENV)
            .filter(|s| !s.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from);
        let timeout = match std::env::var(TIMEOUT_ENV) {
            Ok(v) => match v.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    log::warn!("ignoring {TIMEOUT_ENV}={v:?}: not a positive number of ms");
                    DEFAULT_TIMEOUT
                }
            },
            Err(_) => DEFAULT_TIMEOUT,
        };
        ConnectOptions {
            socket,
            name: program_name(),
            queue_depth_log2: 0,
            window_bytes: 0,
            timeout,
            spin: DEFAULT_SPIN,
        }
    }
}

fn program_name() -> String {
    let from_argv = std::env::args_os().next().and_then(|a| {
        std::path::Path::new(&a)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
    });
    from_argv
        .or_else(|| {
            std::fs::read_to_string("/proc/self/comm")
                .ok()
                .map(|s| s.trim_end().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `name` NUL-padded into 32 bytes, cut at a character boundary to at most 31 bytes.
fn name_field(name: &str) -> [u8; 32] {
    let mut end = name.len().min(31);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = [0u8; 32];
    out[..end].copy_from_slice(&name.as_bytes()[..end]);
    out
}

/// A DMA window: pinned memory the device reads and writes (spec §6.1), mapped here.
#[derive(Debug)]
pub struct Window {
    id: u32,
    mem: SharedMemory,
    /// For memory registered from the program's own mapping
    /// ([`Connection::register_host`]): where the program has it (this value's own mapping
    /// of the same pages is elsewhere).
    alias: Option<usize>,
}

impl Window {
    /// The window id (as named in commands).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Always false: windows are never empty.
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// The address of the window's first byte in this process, valid for [`Window::len`]
    /// bytes until the window is freed or the connection dropped (for registered memory:
    /// the program's own address, valid while the program keeps it mapped). The device may
    /// write the memory whenever a command that targets it runs.
    pub fn as_ptr(&self) -> *mut u8 {
        match self.alias {
            Some(a) => a as *mut u8,
            None => self.mem.as_ptr(),
        }
    }

    /// True for memory registered from the program's own mapping.
    pub fn is_registered(&self) -> bool {
        self.alias.is_some()
    }

    /// Copies bytes out of the window at `offset`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.mem.read_bytes(offset, buf)
    }

    /// Copies bytes into the window at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.mem.write_bytes(offset, data)
    }
}

/// One control-plane connection to vgpu-driver: one PD, its queue pair and its windows.
#[derive(Debug)]
pub struct Connection {
    control: control::Control,
    info: Box<DeviceInfo>,
    pd: u32,
    first_window: u32,
    max_window_bytes: u64,
    features: u64,
    windows: BTreeMap<u32, Window>,
    queue: Arc<QueuePair>,
}

fn map(fd: &OwnedFd, len: u64, what: &'static str) -> Result<SharedMemory, ClientError> {
    let len = usize::try_from(len)
        .map_err(|_| ClientError::Protocol(format!("the {what} is too large ({len} bytes)")))?;
    SharedMemory::map(fd.as_fd(), len).map_err(|source| ClientError::Map { what, source })
}

impl Connection {
    /// Connects to the driver, says HELLO, and sets up the queue and first window from
    /// WELCOME (see the module docs). Every failure is a typed [`ClientError`]; no
    /// descriptor received on a failed attempt stays open.
    pub fn connect(opts: &ConnectOptions) -> Result<Connection, ClientError> {
        if opts.queue_depth_log2 > MAX_IO_DEPTH_LOG2 {
            return Err(ClientError::BadRequest(
                "queue_depth_log2 above the device limit",
            ));
        }
        let fd = control::connect_socket(&opts.socket)?;
        let mut control = control::Control::new(fd, opts.timeout);
        let hello = HelloBody {
            version: u32::from(VERSION),
            flags: 0,
            queue_depth_log2: opts.queue_depth_log2,
            pid: std::process::id(),
            window_bytes: opts.window_bytes,
            rsv: 0,
            name: name_field(&opts.name),
        };
        let (reply, fds) = control.request(&Message::Hello(hello), kind::WELCOME)?;
        let Message::Welcome(w) = reply else {
            unreachable!("request() checked the kind")
        };
        let [queue_fd, window_fd, irq, doorbell]: [OwnedFd; 4] = fds
            .try_into()
            .map_err(|_| ClientError::Protocol("WELCOME without four descriptors".into()))?;
        let depth_log2 = u8::try_from(w.queue_depth_log2).unwrap_or(u8::MAX);
        let layout = QueueLayout::new(depth_log2, MAX_IO_DEPTH_LOG2).ok_or_else(|| {
            ClientError::Protocol(format!("WELCOME: bad queue depth 2^{}", w.queue_depth_log2))
        })?;
        if w.queue_bytes < layout.region_size() as u64 {
            return Err(ClientError::Protocol(format!(
                "WELCOME: the queue region of {} bytes is smaller than the {} a ring of {} \
                 entries needs",
                w.queue_bytes,
                layout.region_size(),
                layout.depth()
            )));
        }
        if w.window_bytes == 0 {
            return Err(ClientError::Protocol("WELCOME: empty first window".into()));
        }
        let qmem = map(&queue_fd, w.queue_bytes, "queue region")?;
        let wmem = map(&window_fd, w.window_bytes, "first window")?;
        // The mappings hold their own references to the files.
        drop(queue_fd);
        drop(window_fd);
        let queue = Arc::new(QueuePair::new(queue::QueueParts {
            mem: qmem,
            layout,
            qid: w.qid,
            irq,
            doorbell,
            control: control.socket(),
            timeout: opts.timeout,
            spin: opts.spin,
        }));
        let mut windows = BTreeMap::new();
        windows.insert(
            w.window,
            Window {
                alias: None,
                id: w.window,
                mem: wmem,
            },
        );
        log::debug!(
            "connected to {}: pd {}, queue {} (depth {}), window {} ({} bytes), device {:?}",
            opts.socket.display(),
            w.pd,
            w.qid,
            layout.depth(),
            w.window,
            w.window_bytes,
            w.device.name()
        );
        Ok(Connection {
            control,
            info: Box::new(w.device),
            pd: w.pd,
            first_window: w.window,
            max_window_bytes: w.max_window_bytes,
            features: w.features,
            windows,
            queue,
        })
    }

    /// The device's info, as IDENTIFY returned it to the driver.
    pub fn device_info(&self) -> &DeviceInfo {
        &self.info
    }

    /// This client's protection domain.
    pub fn pd(&self) -> u32 {
        self.pd
    }

    /// The DRV_FEATURES the driver accepted (spec §3.3).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The id of the first window (granted with WELCOME).
    pub fn first_window(&self) -> u32 {
        self.first_window
    }

    /// Most window bytes this client may hold in total.
    pub fn max_window_bytes(&self) -> u64 {
        self.max_window_bytes
    }

    /// The window `id`, if this connection holds it.
    pub fn window(&self, id: u32) -> Option<&Window> {
        self.windows.get(&id)
    }

    /// Every window this connection holds, by id.
    pub fn windows(&self) -> impl Iterator<Item = &Window> {
        self.windows.values()
    }

    /// The queue pair. Clone the `Arc` to use it from other threads without the connection.
    pub fn queue(&self) -> &Arc<QueuePair> {
        &self.queue
    }

    /// Asks the driver for a new window of at least `bytes` bytes (WINDOW_ALLOC), maps it,
    /// and returns its id. The driver's refusal (NO_MEMORY...) is [`ClientError::Refused`].
    pub fn alloc_window(&mut self, bytes: u64) -> Result<u32, ClientError> {
        if bytes == 0 {
            return Err(ClientError::BadRequest("a window cannot be empty"));
        }
        let body = WindowAllocBody {
            bytes,
            flags: 0,
            rsv: 0,
        };
        let (reply, fds) = self
            .control
            .request(&Message::WindowAlloc(body), kind::WINDOW_GRANTED)?;
        let Message::WindowGranted(g) = reply else {
            unreachable!("request() checked the kind")
        };
        let [fd]: [OwnedFd; 1] = fds
            .try_into()
            .map_err(|_| ClientError::Protocol("WINDOW_GRANTED without one descriptor".into()))?;
        if g.bytes < bytes {
            return Err(ClientError::Protocol(format!(
                "WINDOW_GRANTED: window {} has {} bytes, {bytes} were asked for",
                g.window, g.bytes
            )));
        }
        if self.windows.contains_key(&g.window) {
            return Err(ClientError::Protocol(format!(
                "WINDOW_GRANTED: window {} is already held",
                g.window
            )));
        }
        let mem = map(&fd, g.bytes, "window")?;
        self.windows.insert(
            g.window,
            Window {
                id: g.window,
                mem,
                alias: None,
            },
        );
        Ok(g.window)
    }

    /// Makes memory the program has mapped a window (HOST_REGISTER): `len` bytes at
    /// `offset` of `file` (open read-write; both page multiples), which the program has at
    /// address `at`. The window's [`Window::as_ptr`] is then `at`. The driver's refusal
    /// (NOT_SUPPORTED with no IOMMU, NO_MEMORY past the window limits) is
    /// [`ClientError::Refused`]. Give it back with [`Connection::free_window`].
    pub fn register_host(
        &mut self,
        file: OwnedFd,
        offset: u64,
        len: u64,
        at: usize,
    ) -> Result<u32, ClientError> {
        let body = HostRegisterBody {
            offset,
            bytes: len,
            flags: 0,
            rsv: 0,
        };
        // Checked here so that a bad range is the caller's error, not a malformed message.
        vgpu_proto::cmd::Args::check(&body)
            .map_err(|_| ClientError::BadRequest("host memory must be whole, nonempty pages"))?;
        let (reply, _) = self.control.request_with(
            &Message::HostRegister(body),
            &[std::os::fd::AsRawFd::as_raw_fd(&file)],
            kind::HOST_REGISTERED,
        )?;
        let Message::HostRegistered(g) = reply else {
            unreachable!("request() checked the kind")
        };
        if g.bytes != len || self.windows.contains_key(&g.window) {
            return Err(ClientError::Protocol(format!(
                "HOST_REGISTERED: window {} of {} bytes for {len} bytes",
                g.window, g.bytes
            )));
        }
        let n =
            usize::try_from(len).map_err(|_| ClientError::BadRequest("host memory too large"))?;
        let file = std::fs::File::from(file);
        let mem = SharedMemory::map_range(file, offset, n).map_err(|source| ClientError::Map {
            what: "registered host memory",
            source,
        })?;
        self.windows.insert(
            g.window,
            Window {
                id: g.window,
                mem,
                alias: Some(at),
            },
        );
        Ok(g.window)
    }

    /// Gives window `id` back (WINDOW_FREE) and unmaps it. The device must no longer use
    /// it (commands naming it fail with BAD_WINDOW).
    pub fn free_window(&mut self, id: u32) -> Result<(), ClientError> {
        if !self.windows.contains_key(&id) {
            return Err(ClientError::UnknownWindow(id));
        }
        let body = WindowFreeBody { window: id, rsv: 0 };
        self.control.request(&Message::WindowFree(body), kind::OK)?;
        self.windows.remove(&id);
        Ok(())
    }

    /// The driver's status (STATUS_QUERY): UTF-8 JSON describing clients, queues, windows
    /// and memory.
    pub fn status(&mut self) -> Result<String, ClientError> {
        let (reply, _) = self
            .control
            .request(&Message::StatusQuery, kind::STATUS_REPLY)?;
        match reply {
            Message::StatusReply(s) => Ok(s),
            _ => unreachable!("request() checked the kind"),
        }
    }
}

impl Drop for Connection {
    /// Closes the queue, sends GOODBYE (best effort), and unmaps everything (the queue
    /// region once the last `Arc<QueuePair>` is gone).
    fn drop(&mut self) {
        self.queue.close();
        self.control.goodbye();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_cut_at_a_char_boundary() {
        let f = name_field("short");
        assert_eq!(&f[..6], b"short\0");
        let long = "é".repeat(20); // 40 bytes
        let f = name_field(&long);
        assert_eq!(f[30], 0); // 15 two-byte characters fit in 31 bytes
        assert!(std::str::from_utf8(&f[..30]).is_ok());
        assert_eq!(f[31], 0);
    }

    #[test]
    fn errors_map_to_cuda_statuses() {
        use vgpu_proto::control::error_code;
        use vgpu_proto::Status;
        let e = ClientError::NoDriver {
            path: "/x".into(),
            source: nix::errno::Errno::ENOENT,
        };
        assert_eq!(e.status(), Status::NO_DEVICE);
        assert!(e.to_string().contains("/x"));
        let e = ClientError::Refused {
            code: error_code::NO_MEMORY,
            message: "limit".into(),
        };
        assert_eq!(e.status(), Status::OUT_OF_MEMORY);
        assert!(e.to_string().contains("NO_MEMORY"));
        let e = ClientError::Timeout {
            what: "x",
            waited: Duration::from_millis(5),
        };
        assert_eq!(e.status(), Status::TIMEOUT);
        assert_eq!(
            ClientError::Disconnected.status(),
            Status::DEVICE_UNAVAILABLE
        );
    }
}
