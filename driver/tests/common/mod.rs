//! Test harness: vgpu-stub (soft executor) in-process, the driver on a vfio-user
//! connection to it, and a small protocol-level client.

#![allow(dead_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vgpu_driver::backing::{AddressSpace, DeviceBacking, DmaRegion, VfioUserBacking};
use vgpu_driver::device::Device;
use vgpu_driver::server::{self, Driver, Limits};
use vgpu_driver::shm::{wait_readable, ShmRegion};
use vgpu_driver::DriverError;
use vgpu_proto::cmd::{Payload, Request};
use vgpu_proto::control::{HelloBody, Message, WelcomeBody};
use vgpu_proto::queue::{qcb, QueueLayout, SQE_SIZE};
use vgpu_proto::{Command, Cqe};

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub stub: Arc<vgpu_stub::device::Device>,
    stub_thread: Option<std::thread::JoinHandle<()>>,
    pub driver: Option<Arc<Driver>>,
    driver_thread: Option<std::thread::JoinHandle<()>>,
    pub control: PathBuf,
}

impl Stack {
    /// vgpu-stub serving `connections` driver connections, and a first driver.
    pub fn start(connections: usize, limits: Limits) -> Stack {
        Self::start_on(connections, limits, |b| Box::new(b))
    }

    /// As [`Stack::start`], with the first driver's backing dressed by `wrap`.
    pub fn start_on(
        connections: usize,
        limits: Limits,
        wrap: impl FnOnce(VfioUserBacking) -> Box<dyn DeviceBacking>,
    ) -> Stack {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().unwrap();
        let stub_sock = dir.path().join("stub.sock");
        let cfg = vgpu_stub::exec::soft::SoftConfig {
            memory: 1 << 30,
            ..Default::default()
        };
        let stub = Arc::new(vgpu_stub::device::Device::new(
            Default::default(),
            Arc::new(vgpu_stub::exec::soft::SoftExecutor::new(cfg)),
        ));
        let (s, p) = (stub.clone(), stub_sock.clone());
        let stub_thread =
            std::thread::spawn(move || vgpu_stub::server::serve(&p, s, Some(connections)).unwrap());
        wait_for(&stub_sock);
        let control = dir.path().join("run/vgpu.sock");
        let mut st = Stack {
            dir,
            stub,
            stub_thread: Some(stub_thread),
            driver: None,
            driver_thread: None,
            control,
        };
        st.start_driver_on(limits, wrap);
        st
    }

    pub fn start_driver(&mut self, limits: Limits) {
        self.start_driver_on(limits, |b| Box::new(b));
    }

    /// Starts a driver on the vfio-user backing as `wrap` dresses it.
    pub fn start_driver_on(
        &mut self,
        limits: Limits,
        wrap: impl FnOnce(VfioUserBacking) -> Box<dyn DeviceBacking>,
    ) {
        let backing = VfioUserBacking::connect(&self.dir.path().join("stub.sock")).unwrap();
        let dev = Device::bring_up(wrap(backing)).unwrap();
        let listener = server::listen(&self.control, 0o660, None).unwrap();
        let driver = Driver::new(dev, limits);
        let d = driver.clone();
        self.driver_thread = Some(std::thread::spawn(move || server::serve(d, listener)));
        self.driver = Some(driver);
    }

    /// Stops the driver as a daemon exit would: stop accepting, reset the device, drop the
    /// vfio-user connection.
    pub fn stop_driver(&mut self) {
        if let Some(d) = self.driver.take() {
            d.stop();
            if let Some(t) = self.driver_thread.take() {
                t.join().unwrap();
            }
            d.device().shutdown();
            drop(d);
        }
    }

    pub fn totals(&self) -> vgpu_proto::info::ObjectCounts {
        self.stub.totals()
    }

    pub fn finish(mut self) {
        self.stop_driver();
        // Give client threads time to go, then let the stub see the disconnect.
        if let Some(t) = self.stub_thread.take() {
            t.join().unwrap();
        }
    }
}

/// vgpu-stub reached as a device with no IOMMU is: the driver's DMA memory is locked huge
/// pages given by physical address (the no-IOMMU backing's own `lock_physical`), and the
/// vfio-user server maps each region at that address. Everything but the VFIO ioctls of
/// the no-IOMMU mode runs as it would in a VM.
pub struct PhysicalOverVfioUser {
    pub inner: VfioUserBacking,
    /// Every region mapped: (physical address, length).
    pub mapped: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl DeviceBacking for PhysicalOverVfioUser {
    fn describe(&self) -> String {
        format!("physical:{}", self.inner.describe())
    }
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), DriverError> {
        self.inner.config_read(off, buf)
    }
    fn config_write(&self, off: u64, data: &[u8]) -> Result<(), DriverError> {
        self.inner.config_write(off, data)
    }
    fn read32(&self, off: u64) -> Result<u32, DriverError> {
        self.inner.read32(off)
    }
    fn write32(&self, off: u64, v: u32) -> Result<(), DriverError> {
        self.inner.write32(off, v)
    }
    fn vector_eventfd(&self, vector: u16) -> Result<vmm_sys_util::eventfd::EventFd, DriverError> {
        self.inner.vector_eventfd(vector)
    }
    fn dma_map(&self, r: &DmaRegion<'_>) -> Result<u64, DriverError> {
        assert_eq!(r.iova, 0, "no IOVA is allocated with no IOMMU");
        let pa = vgpu_driver::noiommu::lock_physical(r.mem)?;
        self.inner.dma_map(&DmaRegion {
            iova: pa,
            mem: r.mem,
        })?;
        self.mapped.lock().unwrap().push((pa, r.mem.len()));
        Ok(pa)
    }
    fn dma_unmap(&self, iova: u64, len: u64) -> Result<(), DriverError> {
        self.mapped.lock().unwrap().retain(|&(a, _)| a != iova);
        self.inner.dma_unmap(iova, len)
    }
    fn address_space(&self) -> AddressSpace {
        AddressSpace::Physical
    }
    fn close(&self) {
        self.inner.close()
    }
}

/// Free huge pages of the default size.
pub fn free_huge_pages() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub fn wait_for(p: &Path) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `f` holds (bounded).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A client speaking the protocol directly.
pub struct Client {
    pub fd: OwnedFd,
    pub welcome: WelcomeBody,
    pub queue: ShmRegion,
    pub windows: std::collections::HashMap<u32, ShmRegion>,
    pub irq: OwnedFd,
    pub bell: OwnedFd,
    layout: QueueLayout,
    tail: u32,
    cq_head: u32,
    cid: u32,
    seq: u32,
}

pub fn hello_body(name: &str) -> HelloBody {
    let mut h: HelloBody = bytemuck::Zeroable::zeroed();
    h.version = 1;
    h.pid = std::process::id();
    h.queue_depth_log2 = 8;
    h.window_bytes = 4 << 20;
    h.name[..name.len()].copy_from_slice(name.as_bytes());
    h
}

impl Client {
    pub fn connect(control: &Path, name: &str) -> Result<Client, String> {
        Self::connect_hello(control, hello_body(name))
    }

    pub fn connect_hello(control: &Path, hello: HelloBody) -> Result<Client, String> {
        let fd = vgpu_driver::client::connect(control).map_err(|e| e.to_string())?;
        let (reply, fds) = vgpu_driver::client::request(&fd, &Message::Hello(hello), 1, &[])
            .map_err(|e| e.to_string())?;
        let w = match reply {
            Message::Welcome(w) => *w,
            Message::Error { code, message } => return Err(format!("refused ({code}): {message}")),
            other => return Err(format!("unexpected {:?}", other.kind())),
        };
        let mut fds = fds.into_iter();
        let queue = ShmRegion::from_file(std::fs::File::from(fds.next().unwrap())).unwrap();
        let window = ShmRegion::from_file(std::fs::File::from(fds.next().unwrap())).unwrap();
        let (irq, bell) = (fds.next().unwrap(), fds.next().unwrap());
        let layout = QueueLayout::new(w.queue_depth_log2 as u8, 15).unwrap();
        let mut windows = std::collections::HashMap::new();
        windows.insert(w.window, window);
        Ok(Client {
            fd,
            welcome: w,
            queue,
            windows,
            irq,
            bell,
            layout,
            tail: 0,
            cq_head: 0,
            cid: 0,
            seq: 1,
        })
    }

    fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // The doorbell eventfd: one write = one doorbell.
        let _ = nix::unistd::write(&self.bell, &one);
    }

    pub fn submit(&mut self, command: Command, stream: u64, inline: &[u8], notify: bool) -> u32 {
        self.cid += 1;
        let payload = if inline.is_empty() {
            Payload::None
        } else {
            Payload::Inline {
                len: inline.len() as u32,
            }
        };
        let sqe = Request {
            cid: self.cid,
            notify,
            stream,
            payload,
            command,
        }
        .encode();
        let mut bytes = bytemuck::bytes_of(&sqe).to_vec();
        bytes.extend_from_slice(inline);
        let slots = bytes.len().div_ceil(SQE_SIZE) as u32;
        bytes.resize(slots as usize * SQE_SIZE, 0);
        loop {
            let head = self.queue.load_u32(qcb::SQ_HEAD as u64, Ordering::Acquire);
            if self.tail.wrapping_add(slots).wrapping_sub(head) <= self.layout.depth() {
                break;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        for i in 0..slots {
            let at = self.layout.sqe_offset(self.tail.wrapping_add(i)) as u64;
            self.queue.write(
                at,
                &bytes[i as usize * SQE_SIZE..(i as usize + 1) * SQE_SIZE],
            );
        }
        self.tail = self.tail.wrapping_add(slots);
        self.queue
            .store_u32(qcb::SQ_TAIL as u64, self.tail, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.queue.load_u32(qcb::PARKED as u64, Ordering::Acquire) != 0 {
            self.ring();
        }
        self.cid
    }

    /// The next completion, sleeping on the interrupt eventfd when idle.
    pub fn next(&mut self, timeout: Duration) -> Option<Cqe> {
        let t0 = Instant::now();
        loop {
            let off = self.layout.cqe_offset(self.cq_head) as u64;
            let word = self.queue.load_u32(off + 28, Ordering::Acquire);
            if (word & 1 != 0) == self.layout.phase(self.cq_head) {
                let mut b = [0u8; 32];
                self.queue.read(off, &mut b);
                self.cq_head = self.cq_head.wrapping_add(1);
                self.queue
                    .store_u32(qcb::CQ_HEAD as u64, self.cq_head, Ordering::Release);
                fence(Ordering::SeqCst);
                if self.queue.load_u32(qcb::PARKED as u64, Ordering::Acquire) == qcb::PARKED_CQ_FULL
                {
                    self.ring();
                }
                return Some(bytemuck::pod_read_unaligned(&b));
            }
            if t0.elapsed() > timeout {
                return None;
            }
            self.queue
                .store_u32(qcb::IRQ_ARMED as u64, 1, Ordering::Release);
            fence(Ordering::SeqCst);
            let word = self.queue.load_u32(off + 28, Ordering::Acquire);
            if (word & 1 != 0) != self.layout.phase(self.cq_head)
                && wait_readable(&[self.irq.as_raw_fd()], Duration::from_millis(100)).is_some()
            {
                let mut b = [0u8; 8];
                let _ = nix::unistd::read(&self.irq, &mut b);
            }
            self.queue
                .store_u32(qcb::IRQ_ARMED as u64, 0, Ordering::Release);
        }
    }

    pub fn call(&mut self, command: Command, stream: u64, inline: &[u8]) -> Cqe {
        let cid = self.submit(command, stream, inline, false);
        let c = self.next(Duration::from_secs(20)).expect("no completion");
        assert_eq!(c.cid, cid, "unexpected completion {c:?}");
        c
    }

    pub fn control(&mut self, msg: &Message) -> (Message, Vec<OwnedFd>) {
        self.seq += 1;
        vgpu_driver::client::request(&self.fd, msg, self.seq, &[]).unwrap()
    }

    /// Allocates device memory, fills it from the window, reads it back and checks it.
    pub fn round_trip(&mut self, len: u64, pattern: u8) -> bool {
        use vgpu_proto::cmd::*;
        let a = self.call(
            Command::MEM_ALLOC(MemAllocArgs {
                size: len,
                ..bytemuck::Zeroable::zeroed()
            }),
            0,
            &[],
        );
        if !a.status().is_ok() {
            return false;
        }
        let w = self.welcome.window;
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(pattern))
            .collect();
        self.windows[&w].write(0, &data);
        self.submit(
            Command::MEMCPY_HTOD(CopyHtoDArgs {
                dst: a.result0,
                len,
                src_window: w,
                rsv0: 0,
                src_offset: 0,
            }),
            0,
            &[],
            false,
        );
        self.submit(
            Command::MEMCPY_DTOH(CopyDtoHArgs {
                src: a.result0,
                len,
                dst_window: w,
                rsv0: 0,
                dst_offset: len,
            }),
            0,
            &[],
            false,
        );
        let s = self.call(
            Command::STREAM_SYNCHRONIZE(bytemuck::Zeroable::zeroed()),
            0,
            &[],
        );
        let mut back = vec![0u8; len as usize];
        self.windows[&w].read(len, &mut back);
        self.call(
            Command::MEM_FREE(HandleArgs {
                handle: a.result0,
                ..bytemuck::Zeroable::zeroed()
            }),
            0,
            &[],
        );
        s.status().is_ok() && back == data
    }
}
