//! A bare test driver for the device tests: it drives vgpu-stub through a
//! `vfio_user::Client` with no VM and no vgpu-driver, writing registers and queue entries
//! itself, so that a test can do anything a guest could, right or wrong.
//!
//! Guest RAM is one shared file mapped for DMA at [`IOVA`]; queue regions and windows are
//! carved out of it. Queues are [`QueueClient`]s whose doorbell is a BAR0 write.

use crate::queue::QueueClient;
use crate::wait::retry;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use vfio_bindings::bindings::vfio::*;
use vfio_user::Client;
use vgpu_os::shm::SharedMemory;
use vgpu_proto::cmd::{
    DecodeContext, PdCreateArgs, PdStatsArgs, QueueCreateArgs, Request, WindowRegisterArgs,
};
use vgpu_proto::info::ObjectCounts;
use vgpu_proto::queue::QueueLayout;
use vgpu_proto::regs::{self, control, features, status};
use vgpu_proto::{Command, Cqe, Status};
use vgpu_stub::config::Identity;
use vgpu_stub::device::Device;
use vgpu_stub::exec::soft::{SoftConfig, SoftExecutor};

/// IOVA of the shared guest memory.
pub const IOVA: u64 = 0x1000_0000;
/// Its size.
pub const MEM: u64 = 64 << 20;

/// The offset in guest RAM of `iova` (at least [`IOVA`]).
fn ram_offset(iova: u64) -> usize {
    usize::try_from(iova - IOVA).expect("guest RAM offset")
}

/// vgpu-stub (soft executor) serving vfio-user connections from a thread of the test.
pub struct Stub {
    /// The device model.
    pub dev: Arc<Device>,
    /// The vfio-user socket.
    pub socket: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Stub {
    /// Starts a server that serves `connections` connections, with `memory` bytes of
    /// device memory.
    pub fn start(connections: usize, memory: u64) -> Stub {
        Self::start_with(
            connections,
            SoftConfig {
                memory,
                ..SoftConfig::default()
            },
        )
    }

    /// Starts a server that serves `connections` connections, on a soft device so
    /// configured.
    pub fn start_with(connections: usize, cfg: SoftConfig) -> Stub {
        crate::init_logging();
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("vgpu.sock");
        let dev = Arc::new(Device::new(
            Identity::default(),
            Arc::new(SoftExecutor::new(cfg)),
        ));
        let (d, s) = (dev.clone(), socket.clone());
        let thread = std::thread::spawn(move || {
            vgpu_stub::server::serve(&s, d, Some(connections)).expect("vgpu-stub serves")
        });
        Stub {
            dev,
            socket,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// A vfio-user connection to the stub, once it accepts.
    pub fn connect(&self) -> Client {
        retry("vgpu-stub to accept", crate::stack::START_TIMEOUT, || {
            Client::new(&self.socket)
        })
    }

    /// Waits for the server to finish its connections.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            t.join().expect("stub thread");
        }
    }
}

/// Reads a 32-bit word of a vfio-user region.
pub fn read_u32(c: &mut Client, region: u32, off: u64) -> u32 {
    let mut b = [0u8; 4];
    c.region_read(region, off, &mut b).expect("region read");
    u32::from_le_bytes(b)
}

/// Writes a 32-bit word of a vfio-user region.
pub fn write_u32(c: &mut Client, region: u32, off: u64, v: u32) {
    c.region_write(region, off, &v.to_le_bytes())
        .expect("region write");
}

fn lock(c: &Mutex<Client>) -> MutexGuard<'_, Client> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connected bare driver with the device enabled.
pub struct BareDriver {
    client: Arc<Mutex<Client>>,
    /// Guest RAM (offset 0 is [`IOVA`]).
    pub ram: Arc<SharedMemory>,
    next_free: u64,
    /// The admin queue.
    pub admin: QueueClient,
    /// IOVA of the admin queue region.
    pub admin_base: u64,
}

/// One test client: its PD, first window (id 1) and I/O queue.
pub struct PdClient {
    /// The PD.
    pub pd: u32,
    /// IOVA of window 1.
    pub window: u64,
    /// IOVA of the queue region.
    pub queue_base: u64,
    /// The I/O queue.
    pub q: QueueClient,
}

impl BareDriver {
    /// Connects, maps guest RAM, enables bus mastering and MSI-X, and brings the device up
    /// with every feature.
    pub fn connect(stub: &Stub) -> BareDriver {
        let mut client = stub.connect();
        let file = tempfile::tempfile().expect("guest RAM file");
        file.set_len(MEM).expect("guest RAM size");
        client
            .dma_map(0, IOVA, MEM, file.as_raw_fd())
            .expect("DMA map of guest RAM");
        let ram = Arc::new(SharedMemory::from_file(file).expect("guest RAM mapping"));
        let client = Arc::new(Mutex::new(client));
        let admin_layout = QueueLayout::new(5, 12).expect("admin layout");
        let irq =
            EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).expect("eventfd");
        {
            // Bus master + memory, MSI-X enabled, vectors 0..4 unmasked, vector 0's eventfd.
            let c = &mut *lock(&client);
            let cfg = VFIO_PCI_CONFIG_REGION_INDEX;
            let cmd = read_u32(c, cfg, 4) | 0x6;
            write_u32(c, cfg, 4, cmd);
            write_u32(c, cfg, 0x40, (1 << 31) | 0x11);
            for v in 0..4u64 {
                write_u32(c, VFIO_PCI_BAR2_REGION_INDEX, v * 16 + 12, 0);
            }
            let flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
            c.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, flags, 0, 1, &[irq.as_raw_fd()])
                .expect("MSI-X vector 0");
        }
        let admin = QueueClient::new(
            ram.clone(),
            0,
            0,
            admin_layout,
            Self::doorbell(&client, 0),
            Some(OwnedFd::from(irq)),
        );
        let mut d = BareDriver {
            client,
            ram,
            next_free: IOVA,
            admin,
            admin_base: 0,
        };
        d.admin_base = d.alloc(admin_layout.region_size() as u64);
        d.admin = QueueClient::new(
            d.ram.clone(),
            ram_offset(d.admin_base),
            0,
            admin_layout,
            Self::doorbell(&d.client, 0),
            None,
        );
        d.enable(features::ALL);
        d
    }

    fn doorbell(client: &Arc<Mutex<Client>>, qid: u16) -> crate::queue::Doorbell {
        let client = client.clone();
        Box::new(move |tail| write_u32(&mut lock(&client), 0, regs::doorbell(qid), tail))
    }

    /// The vfio-user connection.
    pub fn client(&self) -> MutexGuard<'_, Client> {
        lock(&self.client)
    }

    /// Reads a 32-bit word of a region.
    pub fn read_u32(&self, region: u32, off: u64) -> u32 {
        read_u32(&mut self.client(), region, off)
    }

    /// Writes a 32-bit word of a region.
    pub fn write_u32(&self, region: u32, off: u64, v: u32) {
        write_u32(&mut self.client(), region, off, v)
    }

    /// Resets the device and enables it again with `feat`, on a zeroed admin queue.
    pub fn enable(&mut self, feat: u64) {
        self.admin.clear();
        let base = self.admin_base;
        let depth = u32::from(self.admin.layout.depth_log2);
        let c = &mut *self.client();
        write_u32(c, 0, regs::CONTROL, control::RESET);
        // CONTROL.RESET masks every MSI-X vector and turns MSI-X off in the device (the
        // eventfds stay registered): turn it on again and unmask vectors 0..4, or the I/O
        // queues' interrupts never reach their eventfds.
        write_u32(c, VFIO_PCI_CONFIG_REGION_INDEX, 0x40, (1 << 31) | 0x11);
        for v in 0..4u64 {
            write_u32(c, VFIO_PCI_BAR2_REGION_INDEX, v * 16 + 12, 0);
        }
        write_u32(c, 0, regs::ADMIN_BASE, base as u32);
        write_u32(c, 0, regs::ADMIN_BASE + 4, (base >> 32) as u32);
        write_u32(c, 0, regs::ADMIN_DEPTH, depth);
        write_u32(c, 0, regs::DRV_FEATURES, feat as u32);
        write_u32(c, 0, regs::DRV_FEATURES + 4, (feat >> 32) as u32);
        write_u32(c, 0, regs::CONTROL, control::ENABLE);
        assert_eq!(
            read_u32(c, 0, regs::STATUS),
            status::READY,
            "device did not become ready"
        );
    }

    /// Carves zeroed, 4096-aligned memory out of guest RAM; returns its IOVA.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let at = self.next_free;
        self.next_free = (at + len).next_multiple_of(4096);
        assert!(self.next_free <= IOVA + MEM, "test memory exhausted");
        self.write(at, &vec![0u8; len as usize]);
        at
    }

    /// Submits on the admin queue and waits for the completion.
    pub fn admin(&mut self, command: Command) -> Cqe {
        self.admin.call(command, 0, &[])
    }

    /// As [`admin`](Self::admin), and checks that it succeeded.
    pub fn admin_ok(&mut self, command: Command) -> Cqe {
        let c = self.admin(command);
        assert_eq!(c.status(), Status::SUCCESS, "{command:?}");
        c
    }

    /// Creates a PD with a window of `win` bytes (id 1, read/write) and I/O queue `qid`
    /// of 256 entries, whose interrupt (vector `qid`) signals the queue's eventfd.
    pub fn pd_client(&mut self, qid: u16, win: u64, quota: u64) -> PdClient {
        self.pd_client_in_domain(qid, win, quota, 0)
    }

    /// [`pd_client`](Self::pd_client) with the PD in module-cache domain `domain`.
    pub fn pd_client_in_domain(&mut self, qid: u16, win: u64, quota: u64, domain: u32) -> PdClient {
        use bytemuck::Zeroable;
        let pd = self
            .admin_ok(Command::PD_CREATE(PdCreateArgs {
                mem_quota: quota,
                cache_domain: domain,
                ..Zeroable::zeroed()
            }))
            .result0 as u32;
        let window = self.alloc(win);
        self.admin_ok(Command::WINDOW_REGISTER(WindowRegisterArgs {
            pd,
            window: 1,
            iova: window,
            len: win,
            access: 3,
            rsv0: 0,
        }));
        let layout = QueueLayout::new(8, 15).expect("I/O layout");
        let queue_base = self.alloc(layout.region_size() as u64);
        let irq =
            EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).expect("eventfd");
        self.client()
            .set_irqs(
                VFIO_PCI_MSIX_IRQ_INDEX,
                VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                u32::from(qid),
                1,
                &[irq.as_raw_fd()],
            )
            .expect("MSI-X vector");
        self.admin_ok(Command::QUEUE_CREATE(QueueCreateArgs {
            pd,
            qid,
            vector: qid,
            depth_log2: 8,
            base: queue_base,
            ..Zeroable::zeroed()
        }));
        PdClient {
            pd,
            window,
            queue_base,
            q: QueueClient::new(
                self.ram.clone(),
                ram_offset(queue_base),
                qid,
                layout,
                Self::doorbell(&self.client, qid),
                Some(OwnedFd::from(irq)),
            ),
        }
    }

    /// PD_STATS of `pd`.
    pub fn stats(&mut self, pd: u32) -> ObjectCounts {
        let buf = self.alloc(4096);
        let c = self.admin(Command::PD_STATS(PdStatsArgs {
            pd,
            len: 4096,
            iova: buf,
            rsv: [0; 2],
        }));
        assert_eq!(c.status(), Status::SUCCESS, "PD_STATS {pd}");
        bytemuck::pod_read_unaligned(&self.read(buf, 96))
    }

    /// Reads guest RAM at `iova`.
    pub fn read(&self, iova: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.ram
            .read_bytes(ram_offset(iova), &mut v)
            .expect("read outside guest RAM");
        v
    }

    /// Writes guest RAM at `iova`.
    pub fn write(&self, iova: u64, data: &[u8]) {
        self.ram
            .write_bytes(ram_offset(iova), data)
            .expect("write outside guest RAM");
    }
}

impl PdClient {
    /// Runs one I/O command and waits for its completion.
    pub fn io(&mut self, stream: u64, command: Command, payload: &[u8]) -> Cqe {
        self.q.call(command, stream, payload)
    }

    /// Posts an I/O command without waiting; returns its cid.
    pub fn post(&mut self, stream: u64, command: Command, payload: &[u8], notify: bool) -> u32 {
        self.q.submit(command, stream, payload, notify)
    }

    /// Submits an encoded request with `payload` inline.
    pub fn submit(&mut self, req: &Request, payload: &[u8]) {
        self.q.submit_request(req, payload)
    }

    /// The next completion, waiting up to `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Cqe> {
        self.q.next(timeout)
    }

    /// MEM_ALLOC of `size` bytes, which must succeed; returns the device address.
    pub fn mem_alloc(&mut self, size: u64) -> u64 {
        use bytemuck::Zeroable;
        use vgpu_proto::cmd::MemAllocArgs;
        let r = self.io(
            0,
            Command::MEM_ALLOC(MemAllocArgs {
                size,
                ..Zeroable::zeroed()
            }),
            &[],
        );
        assert_eq!(r.status(), Status::SUCCESS, "MEM_ALLOC of {size} bytes");
        r.result0
    }

    /// STREAM_SYNCHRONIZE of `stream`; returns its status.
    pub fn synchronize(&mut self, stream: u64) -> Status {
        let args = bytemuck::Zeroable::zeroed();
        self.io(stream, Command::STREAM_SYNCHRONIZE(args), &[])
            .status()
    }

    /// Posts MEMCPY_HTOD on `stream` of `len` bytes from window 1 at `src_offset` to `dst`;
    /// returns its cid.
    pub fn copy_from_window(&mut self, stream: u64, dst: u64, len: u64, src_offset: u64) -> u32 {
        let args = vgpu_proto::cmd::CopyHtoDArgs {
            dst,
            len,
            src_window: 1,
            rsv0: 0,
            src_offset,
        };
        self.post(stream, Command::MEMCPY_HTOD(args), &[], false)
    }

    /// Posts MEMCPY_DTOH on `stream` of `len` bytes from `src` to window 1 at `dst_offset`;
    /// returns its cid.
    pub fn copy_to_window(&mut self, stream: u64, src: u64, len: u64, dst_offset: u64) -> u32 {
        let args = vgpu_proto::cmd::CopyDtoHArgs {
            src,
            len,
            dst_window: 1,
            rsv0: 0,
            dst_offset,
        };
        self.post(stream, Command::MEMCPY_DTOH(args), &[], false)
    }
}

/// The decoding context of an I/O queue.
pub fn io_ctx() -> DecodeContext {
    vgpu_proto::examples::context(vgpu_proto::opcode::QueueKind::Io)
}
