//! A minimal driver for tests: drives a vgpu-stub through `vfio_user::Client` with no VM.
//! Guest memory is one shared file mapped at [`IOVA`]; queue regions and windows are carved
//! out of it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vfio_bindings::bindings::vfio::*;
use vfio_user::Client;
use vgpu_proto::cmd::{DecodeContext, Payload, Request};
use vgpu_proto::info::ObjectCounts;
use vgpu_proto::queue::{qcb, Cqe, QueueLayout, SQE_SIZE};
use vgpu_proto::regs::{self, control, features, status};
use vgpu_proto::{Command, Status};
use vgpu_stub::config::Identity;
use vgpu_stub::device::Device;
use vgpu_stub::exec::soft::{SoftConfig, SoftExecutor};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
use vmm_sys_util::eventfd::EventFd;

/// IOVA of the shared guest memory.
pub const IOVA: u64 = 0x1000_0000;
/// Its size.
pub const MEM: u64 = 64 << 20;

pub struct Stub {
    pub dev: Arc<Device>,
    pub socket: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Stub {
    /// Starts a server that serves `connections` connections.
    pub fn start(connections: usize, memory: u64) -> Stub {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vgpu.sock");
        let cfg = SoftConfig {
            memory,
            ..SoftConfig::default()
        };
        let dev = Arc::new(Device::new(
            Identity::default(),
            Arc::new(SoftExecutor::new(cfg)),
        ));
        let (d, s) = (dev.clone(), socket.clone());
        let thread =
            std::thread::spawn(move || vgpu_stub::server::serve(&s, d, Some(connections)).unwrap());
        let t0 = Instant::now();
        while !socket.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Stub {
            dev,
            socket,
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

pub struct Queue {
    pub qid: u16,
    pub base: u64,
    pub layout: QueueLayout,
    pub tail: u32,
    pub cq_head: u32,
    pub irq: EventFd,
}

/// A connected test driver.
pub struct Drv {
    pub client: Client,
    pub mem: GuestMemoryMmap,
    next_free: u64,
    pub admin: Queue,
    next_cid: u32,
}

pub fn rd32(c: &mut Client, region: u32, off: u64) -> u32 {
    let mut b = [0u8; 4];
    c.region_read(region, off, &mut b).unwrap();
    u32::from_le_bytes(b)
}

pub fn wr32(c: &mut Client, region: u32, off: u64, v: u32) {
    c.region_write(region, off, &v.to_le_bytes()).unwrap();
}

impl Drv {
    /// Connects, maps memory, enables bus mastering and MSI-X, and brings the device up.
    pub fn connect(stub: &Stub) -> Drv {
        let mut client = Client::new(&stub.socket).unwrap();
        let file = tempfile::tempfile().unwrap();
        file.set_len(MEM).unwrap();
        use std::os::fd::AsRawFd;
        client.dma_map(0, IOVA, MEM, file.as_raw_fd()).unwrap();
        let region = MmapRegion::from_file(FileOffset::new(file, 0), MEM as usize).unwrap();
        let mem =
            GuestMemoryMmap::from_regions(vec![
                GuestRegionMmap::new(region, GuestAddress(IOVA)).unwrap()
            ])
            .unwrap();
        let admin_layout = QueueLayout::new(5, 12).unwrap();
        let mut d = Drv {
            client,
            mem,
            next_free: IOVA,
            admin: Queue {
                qid: 0,
                base: 0,
                layout: admin_layout,
                tail: 0,
                cq_head: 0,
                irq: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            },
            next_cid: 1,
        };
        d.admin.base = d.alloc(admin_layout.region_size() as u64);
        // Bus master + memory, MSI-X enabled, vectors 0..4 unmasked with eventfds.
        let cmd = rd32(&mut d.client, VFIO_PCI_CONFIG_REGION_INDEX, 4) | 0x6;
        wr32(&mut d.client, VFIO_PCI_CONFIG_REGION_INDEX, 4, cmd);
        wr32(
            &mut d.client,
            VFIO_PCI_CONFIG_REGION_INDEX,
            0x40,
            (1 << 31) | 0x11,
        );
        for v in 0..4u64 {
            wr32(&mut d.client, VFIO_PCI_BAR2_REGION_INDEX, v * 16 + 12, 0);
        }
        let fd = d.admin.irq.as_raw_fd();
        d.client
            .set_irqs(
                VFIO_PCI_MSIX_IRQ_INDEX,
                VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                0,
                1,
                &[fd],
            )
            .unwrap();
        d.enable(features::ALL);
        d
    }

    pub fn enable(&mut self, feat: u64) {
        // A queue region must be zeroed before the device uses it (spec §5.1).
        let zero = vec![0u8; self.admin.layout.region_size()];
        self.mem
            .write_slice(&zero, GuestAddress(self.admin.base))
            .unwrap();
        let c = &mut self.client;
        wr32(c, 0, regs::CONTROL, control::RESET);
        wr32(c, 0, regs::ADMIN_BASE, self.admin.base as u32);
        wr32(c, 0, regs::ADMIN_BASE + 4, (self.admin.base >> 32) as u32);
        wr32(
            c,
            0,
            regs::ADMIN_DEPTH,
            u32::from(self.admin.layout.depth_log2),
        );
        wr32(c, 0, regs::DRV_FEATURES, feat as u32);
        wr32(c, 0, regs::DRV_FEATURES + 4, (feat >> 32) as u32);
        wr32(c, 0, regs::CONTROL, control::ENABLE);
        assert_eq!(
            rd32(c, 0, regs::STATUS),
            status::READY,
            "device did not become ready"
        );
        self.admin.tail = 0;
        self.admin.cq_head = 0;
    }

    /// Carves zeroed, 4096-aligned memory out of the shared file.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let at = self.next_free;
        self.next_free = (at + len).next_multiple_of(4096);
        assert!(self.next_free <= IOVA + MEM, "test memory exhausted");
        self.mem
            .write_slice(&vec![0u8; len as usize], GuestAddress(at))
            .unwrap();
        at
    }

    pub fn cid(&mut self) -> u32 {
        self.next_cid += 1;
        self.next_cid
    }

    /// Writes raw entry bytes (and inline payload) to queue `q` and publishes them.
    pub fn submit_raw(&mut self, q: &mut Queue, sqe: &[u8; 64], payload: &[u8]) {
        let slots = 1 + payload.len().div_ceil(SQE_SIZE) as u32;
        let mut bytes = sqe.to_vec();
        bytes.extend_from_slice(payload);
        bytes.resize(slots as usize * SQE_SIZE, 0);
        // Never publish more than the ring holds: wait for the device to free slots.
        let t0 = Instant::now();
        loop {
            let head: u32 = self
                .mem
                .load(
                    GuestAddress(q.base + qcb::SQ_HEAD as u64),
                    Ordering::Acquire,
                )
                .unwrap();
            if q.tail.wrapping_add(slots).wrapping_sub(head) <= q.layout.depth() {
                break;
            }
            assert!(
                slots <= q.layout.depth(),
                "entry of {slots} slots cannot fit a ring of {}",
                q.layout.depth()
            );
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "submission ring stayed full"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
        for i in 0..slots {
            let at = q.base + q.layout.sqe_offset(q.tail.wrapping_add(i)) as u64;
            self.mem
                .write_slice(
                    &bytes[i as usize * 64..(i as usize + 1) * 64],
                    GuestAddress(at),
                )
                .unwrap();
        }
        q.tail = q.tail.wrapping_add(slots);
        self.mem
            .store(
                q.tail,
                GuestAddress(q.base + qcb::SQ_TAIL as u64),
                Ordering::Release,
            )
            .unwrap();
        std::sync::atomic::fence(Ordering::SeqCst);
        let parked: u32 = self
            .mem
            .load(GuestAddress(q.base + qcb::PARKED as u64), Ordering::Acquire)
            .unwrap();
        if parked != 0 {
            wr32(&mut self.client, 0, regs::doorbell(q.qid), q.tail);
        }
    }

    pub fn submit(&mut self, q: &mut Queue, req: &Request, payload: &[u8]) {
        let raw = req.encode();
        self.submit_raw(q, bytemuck::cast_ref(&raw), payload);
    }

    /// Waits for the next completion of queue `q` (polling, then sleeping on its interrupt).
    pub fn next_cqe(&mut self, q: &mut Queue, timeout: Duration) -> Option<Cqe> {
        let t0 = Instant::now();
        loop {
            let at = q.base + q.layout.cqe_offset(q.cq_head) as u64;
            let word: u32 = self
                .mem
                .load(GuestAddress(at + 28), Ordering::Acquire)
                .unwrap();
            if (word & 1 != 0) == q.layout.phase(q.cq_head) {
                let mut b = [0u8; 32];
                self.mem.read_slice(&mut b, GuestAddress(at)).unwrap();
                q.cq_head = q.cq_head.wrapping_add(1);
                self.mem
                    .store(
                        q.cq_head,
                        GuestAddress(q.base + qcb::CQ_HEAD as u64),
                        Ordering::Release,
                    )
                    .unwrap();
                std::sync::atomic::fence(Ordering::SeqCst);
                let parked: u32 = self
                    .mem
                    .load(GuestAddress(q.base + qcb::PARKED as u64), Ordering::Acquire)
                    .unwrap();
                if parked == qcb::PARKED_CQ_FULL {
                    wr32(&mut self.client, 0, regs::doorbell(q.qid), q.tail);
                }
                return Some(bytemuck::pod_read_unaligned(&b));
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Submits on the admin queue and waits for the completion.
    pub fn admin(&mut self, command: Command) -> Cqe {
        let mut q = std::mem::replace(&mut self.admin, dummy_queue());
        let cid = self.cid();
        let req = Request {
            cid,
            notify: false,
            stream: 0,
            payload: Payload::None,
            command,
        };
        self.submit(&mut q, &req, &[]);
        let c = self
            .next_cqe(&mut q, Duration::from_secs(10))
            .expect("admin command timed out");
        self.admin = q;
        assert_eq!(c.cid, cid);
        c
    }

    pub fn admin_ok(&mut self, command: Command) -> Cqe {
        let c = self.admin(command);
        assert_eq!(c.status(), Status::SUCCESS, "{command:?}");
        c
    }

    /// Creates a PD with a window of `win` bytes (id 1, read/write) and I/O queue `qid`.
    pub fn client(&mut self, qid: u16, win: u64, quota: u64) -> Client0 {
        use vgpu_proto::cmd::*;
        let z = bytemuck::Zeroable::zeroed;
        let pd = self
            .admin_ok(Command::PD_CREATE(PdCreateArgs {
                mem_quota: quota,
                max_objects: 0,
                max_windows: 0,
                rsv: [0; 2],
            }))
            .result0 as u32;
        let wbase = self.alloc(win);
        self.admin_ok(Command::WINDOW_REGISTER(WindowRegisterArgs {
            pd,
            window: 1,
            iova: wbase,
            len: win,
            access: 3,
            rsv0: 0,
        }));
        let layout = QueueLayout::new(8, 15).unwrap();
        let base = self.alloc(layout.region_size() as u64);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        use std::os::fd::AsRawFd;
        self.client
            .set_irqs(
                VFIO_PCI_MSIX_IRQ_INDEX,
                VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                u32::from(qid),
                1,
                &[irq.as_raw_fd()],
            )
            .unwrap();
        self.admin_ok(Command::QUEUE_CREATE(QueueCreateArgs {
            pd,
            qid,
            vector: qid,
            depth_log2: 8,
            base,
            ..z()
        }));
        Client0 {
            pd,
            window: wbase,
            q: Queue {
                qid,
                base,
                layout,
                tail: 0,
                cq_head: 0,
                irq,
            },
        }
    }

    /// Runs one I/O command on `c` and waits for its completion.
    pub fn io(&mut self, c: &mut Client0, stream: u64, command: Command, payload: &[u8]) -> Cqe {
        let cid = self.cid();
        let p = if payload.is_empty() {
            Payload::None
        } else {
            Payload::Inline {
                len: payload.len() as u32,
            }
        };
        let req = Request {
            cid,
            notify: false,
            stream,
            payload: p,
            command,
        };
        self.submit(&mut c.q, &req, payload);
        let cqe = self
            .next_cqe(&mut c.q, Duration::from_secs(10))
            .expect("I/O command timed out");
        assert_eq!(cqe.cid, cid, "unexpected completion {cqe:?}");
        cqe
    }

    /// Posts an async I/O command (no completion expected).
    pub fn post(
        &mut self,
        c: &mut Client0,
        stream: u64,
        command: Command,
        payload: &[u8],
        notify: bool,
    ) -> u32 {
        let cid = self.cid();
        let p = if payload.is_empty() {
            Payload::None
        } else {
            Payload::Inline {
                len: payload.len() as u32,
            }
        };
        let req = Request {
            cid,
            notify,
            stream,
            payload: p,
            command,
        };
        self.submit(&mut c.q, &req, payload);
        cid
    }

    pub fn stats(&mut self, pd: u32) -> ObjectCounts {
        use vgpu_proto::cmd::PdStatsArgs;
        let buf = self.alloc(4096);
        let c = self.admin(Command::PD_STATS(PdStatsArgs {
            pd,
            len: 4096,
            iova: buf,
            rsv: [0; 2],
        }));
        assert_eq!(c.status(), Status::SUCCESS, "PD_STATS {pd}");
        let mut b = [0u8; 96];
        self.mem.read_slice(&mut b, GuestAddress(buf)).unwrap();
        bytemuck::pod_read_unaligned(&b)
    }

    pub fn read(&self, iova: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.mem.read_slice(&mut v, GuestAddress(iova)).unwrap();
        v
    }

    pub fn write(&self, iova: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(iova)).unwrap();
    }
}

fn dummy_queue() -> Queue {
    Queue {
        qid: 0,
        base: 0,
        layout: QueueLayout::new(1, 12).unwrap(),
        tail: 0,
        cq_head: 0,
        irq: EventFd::new(0).unwrap(),
    }
}

/// One test client: its PD, window and queue.
pub struct Client0 {
    pub pd: u32,
    pub window: u64,
    pub q: Queue,
}

pub fn io_ctx() -> DecodeContext {
    vgpu_proto::examples::context(vgpu_proto::opcode::QueueKind::Io)
}
