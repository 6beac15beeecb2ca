//! Bring-up of VGPU-STUB (spec §4.2), the admin queue, and DMA memory.

use crate::backing::{AddressSpace, DeviceBacking, DmaRegion};
use crate::iova::IovaAllocator;
use crate::DriverError;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vgpu_os::lock;
use vgpu_os::shm::{SharedMemory, HUGE_PAGE, PAGE};
use vgpu_proto::cmd::{IdentifyArgs, Payload, Request};
use vgpu_proto::info::DeviceInfo;
use vgpu_proto::queue::{qcb, QueueLayout};
use vgpu_proto::regs::{self, control, features, status};
use vgpu_proto::{Command, Cqe, Status};
use vmm_sys_util::eventfd::EventFd;

/// How long an admin command may take.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
const ADMIN_DEPTH_LOG2: u8 = 6;
// What QueueLayout::new checks, checked here at compile time.
const _: () =
    assert!(ADMIN_DEPTH_LOG2 >= 1 && ADMIN_DEPTH_LOG2 as u32 <= regs::MAX_ADMIN_DEPTH_LOG2);
/// How long bring-up waits for READY after enable.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// Memory mapped for device DMA; unmapped and freed on drop.
pub struct DmaMem {
    /// The memory.
    pub shm: SharedMemory,
    /// The address the device reaches it at: an IOVA, or with no IOMMU its physical address.
    pub iova: u64,
    dev: Arc<DeviceInner>,
}

impl DmaMem {
    /// Size in bytes, as the device and the control plane count it.
    pub fn bytes(&self) -> u64 {
        self.shm.len() as u64
    }
}

impl Drop for DmaMem {
    fn drop(&mut self) {
        if let Err(e) = self.dev.backing.dma_unmap(self.iova, self.bytes()) {
            log::warn!(
                "DMA unmap of {:#x}+{:#x} failed: {}",
                self.iova,
                self.bytes(),
                e.report()
            );
        }
        if let Some(a) = lock(&self.dev.iova).as_mut() {
            a.free(self.iova, self.bytes());
        }
    }
}

struct Admin {
    mem: DmaMem,
    layout: QueueLayout,
    tail: u32,
    cq_head: u32,
    next_cid: u32,
}

struct DeviceInner {
    backing: Box<dyn DeviceBacking>,
    /// IOVA space, when an IOMMU translates (none when the device uses physical addresses).
    iova: Mutex<Option<IovaAllocator>>,
}

/// The device after bring-up.
pub struct Device {
    inner: Arc<DeviceInner>,
    admin: Mutex<Option<Admin>>,
    admin_irq: EventFd,
    /// What IDENTIFY returned.
    pub info: DeviceInfo,
    /// Features accepted at enable.
    pub features: u64,
}

impl Device {
    /// Brings the device up on `backing`: checks identity and version, turns on bus mastering,
    /// resets, enables MSI-X for the admin vector, sets up the admin queue, negotiates
    /// features, enables, and runs IDENTIFY.
    pub fn bring_up(backing: Box<dyn DeviceBacking>) -> Result<Device, DriverError> {
        let mut id = [0u8; 4];
        backing.config_read(0, &mut id)?;
        let (vendor, device) = (
            u16::from_le_bytes([id[0], id[1]]),
            u16::from_le_bytes([id[2], id[3]]),
        );
        let magic = backing.read32(regs::MAGIC)?;
        if magic != regs::MAGIC_VALUE {
            return Err(DriverError::NotVgpuStub {
                vendor,
                device,
                magic,
            });
        }
        let version = backing.read32(regs::VERSION)?;
        if (version >> 16) as u16 != regs::VERSION_MAJOR {
            return Err(DriverError::UnsupportedAbi {
                major: (version >> 16) as u16,
                minor: version as u16,
                need: regs::VERSION_MAJOR,
            });
        }
        // Bus mastering and memory decoding: vfio-pci leaves them off.
        let mut cmd = [0u8; 2];
        backing.config_read(4, &mut cmd)?;
        let want = u16::from_le_bytes(cmd) | 0x6;
        backing.config_write(4, &want.to_le_bytes())?;
        backing.config_read(4, &mut cmd)?;
        let command = u16::from_le_bytes(cmd);
        if command & 0x6 != 0x6 {
            return Err(DriverError::BusMasterOff { command });
        }
        backing.write32(regs::CONTROL, control::RESET)?;
        let admin_irq = backing.vector_eventfd(0)?;
        let iova = match backing.address_space() {
            AddressSpace::Iova(ranges) => Some(IovaAllocator::new(&ranges)),
            AddressSpace::Physical => None,
        };
        let inner = Arc::new(DeviceInner {
            iova: Mutex::new(iova),
            backing,
        });
        let layout = QueueLayout::new(ADMIN_DEPTH_LOG2, regs::MAX_ADMIN_DEPTH_LOG2)
            .expect("ADMIN_DEPTH_LOG2 is checked at compile time");
        let mem = Self::dma_alloc_inner(&inner, "vgpu-admin", layout.region_size() as u64)?;
        let b = &inner.backing;
        b.write32(regs::ADMIN_BASE, mem.iova as u32)?;
        b.write32(regs::ADMIN_BASE + 4, (mem.iova >> 32) as u32)?;
        b.write32(regs::ADMIN_DEPTH, u32::from(ADMIN_DEPTH_LOG2))?;
        let offered = u64::from(b.read32(regs::DEV_FEATURES)?)
            | (u64::from(b.read32(regs::DEV_FEATURES + 4)?) << 32);
        let accepted = offered & features::ALL;
        b.write32(regs::DRV_FEATURES, accepted as u32)?;
        b.write32(regs::DRV_FEATURES + 4, (accepted >> 32) as u32)?;
        b.write32(regs::CONTROL, control::ENABLE)?;
        let t0 = Instant::now();
        loop {
            let st = b.read32(regs::STATUS)?;
            if st & status::READY != 0 {
                break;
            }
            if st & status::FATAL != 0 {
                return Err(DriverError::NotReady {
                    status: st,
                    fatal_code: Some(b.read32(regs::FATAL_CODE)?),
                    waited: t0.elapsed(),
                });
            }
            if t0.elapsed() > READY_TIMEOUT {
                return Err(DriverError::NotReady {
                    status: st,
                    fatal_code: None,
                    waited: READY_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut dev = Device {
            inner,
            admin: Mutex::new(Some(Admin {
                mem,
                layout,
                tail: 0,
                cq_head: 0,
                next_cid: 0,
            })),
            admin_irq,
            info: bytemuck::Zeroable::zeroed(),
            features: accepted,
        };
        let buf = dev.dma_alloc("vgpu-identify", 4096)?;
        let c = dev.admin(Command::IDENTIFY(IdentifyArgs {
            iova: buf.iova,
            len: 4096,
            ..bytemuck::Zeroable::zeroed()
        }))?;
        if !c.status().is_ok() {
            return Err(DriverError::IdentifyFailed { status: c.status() });
        }
        let mut raw = [0u8; 4096];
        buf.shm
            .read_bytes(0, &mut raw)
            .expect("the identify buffer holds 4096 bytes");
        let info: DeviceInfo = bytemuck::pod_read_unaligned(&raw);
        vgpu_proto::cmd::Args::check(&info).map_err(DriverError::BadDeviceInfo)?;
        dev.info = info;
        log::info!(
            "VGPU-STUB {vendor:04x}:{device:04x} on {}: {} (cc {}.{}, {} MiB, ABI {}.{}, features {accepted:#x})",
            dev.inner.backing.describe(),
            info.name(),
            info.cc_major,
            info.cc_minor,
            info.total_mem >> 20,
            version >> 16,
            version & 0xFFFF
        );
        Ok(dev)
    }

    fn dma_alloc_inner(
        inner: &Arc<DeviceInner>,
        name: &str,
        len: u64,
    ) -> Result<DmaMem, DriverError> {
        let len = usize::try_from(len)
            .map_err(|_| DriverError::NoMemory(format!("{len} bytes of DMA memory")))?;
        let mut space = lock(&inner.iova);
        let Some(alloc) = space.as_mut() else {
            // No IOMMU: physically contiguous huge pages, at the address the backing finds.
            drop(space);
            let shm = SharedMemory::new_huge(name, len)
                .map_err(|e| DriverError::NoMemory(format!("no-IOMMU DMA memory: {e}")))?;
            let iova = inner.backing.dma_map(&DmaRegion { iova: 0, mem: &shm })?;
            return Ok(DmaMem {
                shm,
                iova,
                dev: inner.clone(),
            });
        };
        let shm = SharedMemory::new(name, len)?;
        Self::map_at_new_iova(inner, alloc, shm)
    }

    /// Maps `shm` for DMA at a new IOVA from `alloc` (aligned to its pages). The caller holds
    /// the allocator's lock: mapping with it held keeps a failed map's IOVA from being
    /// handed out before it is returned.
    fn map_at_new_iova(
        inner: &Arc<DeviceInner>,
        alloc: &mut IovaAllocator,
        shm: SharedMemory,
    ) -> Result<DmaMem, DriverError> {
        let align = if shm.huge() { HUGE_PAGE } else { PAGE };
        let iova = alloc
            .alloc(shm.len() as u64, align as u64)
            .ok_or(DriverError::NoMemory("IOVA space exhausted".into()))?;
        match inner.backing.dma_map(&DmaRegion { iova, mem: &shm }) {
            Ok(at) => debug_assert_eq!(at, iova),
            Err(e) => {
                alloc.free(iova, shm.len() as u64);
                return Err(e);
            }
        }
        Ok(DmaMem {
            shm,
            iova,
            dev: inner.clone(),
        })
    }

    /// Zeroed memory of at least `len` bytes, mapped for DMA.
    /// Whether the device still answers as an enabled VGPU-STUB: MAGIC holds its value (a
    /// removed device or a lost link reads otherwise, or fails) and STATUS is READY without
    /// FATAL.
    pub fn check_alive(&self) -> Result<(), DriverError> {
        let b = &self.inner.backing;
        let lost = |why: String| DriverError::DeviceLost { why };
        let magic = b
            .read32(regs::MAGIC)
            .map_err(|e| lost(format!("reading MAGIC failed: {}", e.report())))?;
        if magic != regs::MAGIC_VALUE {
            return Err(lost(format!("MAGIC reads {magic:#x}")));
        }
        let st = b
            .read32(regs::STATUS)
            .map_err(|e| lost(format!("reading STATUS failed: {}", e.report())))?;
        if st & status::FATAL != 0 {
            let code = b.read32(regs::FATAL_CODE).unwrap_or(0);
            return Err(lost(format!("fatal state (FATAL_CODE {code})")));
        }
        if st & status::READY == 0 {
            return Err(lost(format!("not ready (STATUS {st:#x})")));
        }
        Ok(())
    }

    pub fn dma_alloc(&self, name: &str, len: u64) -> Result<DmaMem, DriverError> {
        Self::dma_alloc_inner(&self.inner, name, len)
    }

    /// `len` bytes at `offset` of `file`, memory a client owns (HOST_REGISTER), mapped for
    /// DMA. Only behind an IOMMU: with none, DMA memory must be physically contiguous huge
    /// pages, which a client's file is not.
    pub fn dma_import(
        &self,
        file: std::fs::File,
        offset: u64,
        len: u64,
    ) -> Result<DmaMem, DriverError> {
        let n = usize::try_from(len)
            .map_err(|_| DriverError::NoMemory(format!("{len} bytes of DMA memory")))?;
        let mut space = lock(&self.inner.iova);
        let Some(alloc) = space.as_mut() else {
            return Err(DriverError::NotSupported(
                "registering host memory needs an IOMMU: with none, DMA memory must be physically contiguous huge pages".into(),
            ));
        };
        let shm = SharedMemory::map_range(file, offset, n)?;
        Self::map_at_new_iova(&self.inner, alloc, shm)
    }

    /// The backing.
    pub fn backing(&self) -> &dyn DeviceBacking {
        self.inner.backing.as_ref()
    }

    /// PD_STATS of each of `pds` (0: the whole device), through one DMA buffer; None for a
    /// PD the device refuses (one that is being destroyed).
    pub fn stats(
        &self,
        pds: &[u32],
    ) -> Result<Vec<Option<vgpu_proto::info::ObjectCounts>>, DriverError> {
        let buf = self.dma_alloc("vgpu-stats", 4096)?;
        let mut out = Vec::with_capacity(pds.len());
        for &pd in pds {
            let c = self.admin(Command::PD_STATS(vgpu_proto::cmd::PdStatsArgs {
                pd,
                len: 4096,
                iova: buf.iova,
                rsv: [0; 2],
            }))?;
            if !c.status().is_ok() {
                log::debug!("PD_STATS {pd}: {}", c.status());
                out.push(None);
                continue;
            }
            let mut raw = [0u8; std::mem::size_of::<vgpu_proto::info::ObjectCounts>()];
            buf.shm
                .read_bytes(0, &mut raw)
                .expect("the stats buffer holds 4096 bytes");
            out.push(Some(bytemuck::pod_read_unaligned(&raw)));
        }
        Ok(out)
    }

    /// Runs one admin command and waits for its completion (bounded by ADMIN_TIMEOUT).
    pub fn admin(&self, command: Command) -> Result<Cqe, DriverError> {
        let mut guard = lock(&self.admin);
        let a = guard.as_mut().ok_or(DriverError::AdminQueueGone)?;
        let opcode = command.opcode();
        a.next_cid = a.next_cid.wrapping_add(1);
        let cid = a.next_cid;
        let req = Request {
            cid,
            notify: false,
            stream: 0,
            payload: Payload::None,
            command,
        };
        let sqe = req.encode();
        // The ring's offsets lie inside the region, which was allocated for this layout.
        let at = a.layout.sqe_offset(a.tail);
        a.mem
            .shm
            .write_bytes(at, bytemuck::bytes_of(&sqe))
            .expect("admin entry inside the admin queue region");
        a.tail = a.tail.wrapping_add(1);
        a.mem.shm.store_u32(qcb::SQ_TAIL, a.tail, Ordering::Release);
        fence(Ordering::SeqCst);
        if a.mem.shm.load_u32(qcb::PARKED, Ordering::Acquire) != 0 {
            self.inner.backing.write32(regs::doorbell(0), a.tail)?;
        }
        let t0 = Instant::now();
        loop {
            let off = a.layout.cqe_offset(a.cq_head);
            let word = a.mem.shm.load_u32(off + 28, Ordering::Acquire);
            if (word & 1 != 0) == a.layout.phase(a.cq_head) {
                let mut b = [0u8; 32];
                a.mem
                    .shm
                    .read_bytes(off, &mut b)
                    .expect("admin completion inside the admin queue region");
                a.cq_head = a.cq_head.wrapping_add(1);
                a.mem
                    .shm
                    .store_u32(qcb::CQ_HEAD, a.cq_head, Ordering::Release);
                let c: Cqe = bytemuck::pod_read_unaligned(&b);
                if c.cid == cid {
                    return Ok(c);
                }
                log::warn!("admin completion for unknown cid {} ignored", c.cid);
                continue;
            }
            if t0.elapsed() > ADMIN_TIMEOUT {
                return Err(DriverError::AdminTimeout {
                    opcode,
                    waited: ADMIN_TIMEOUT,
                    status: self.inner.backing.read32(regs::STATUS).unwrap_or(0),
                });
            }
            // Sleep on the admin interrupt: arm, re-check, wait (bounded).
            a.mem.shm.store_u32(qcb::IRQ_ARMED, 1, Ordering::Release);
            fence(Ordering::SeqCst);
            let word = a.mem.shm.load_u32(off + 28, Ordering::Acquire);
            if (word & 1 != 0) != a.layout.phase(a.cq_head) {
                wait_eventfd(&self.admin_irq, Duration::from_millis(10));
            }
            a.mem.shm.store_u32(qcb::IRQ_ARMED, 0, Ordering::Release);
        }
    }

    /// Runs an admin command and turns a failing status into an error.
    pub fn admin_ok(&self, command: Command) -> Result<Cqe, DriverError> {
        let c = self.admin(command)?;
        match c.status() {
            Status::SUCCESS => Ok(c),
            s => Err(DriverError::Refused(s)),
        }
    }

    /// Stops the device (reset), for shutdown.
    pub fn shutdown(&self) {
        let _ = self.inner.backing.write32(regs::CONTROL, control::RESET);
        lock(&self.admin).take();
        self.inner.backing.close();
    }
}

/// Waits until `fd` is signalled or `timeout` passes; consumes the signal.
pub fn wait_eventfd(fd: &EventFd, timeout: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let ready = vgpu_os::fd::wait_readable(&[fd.as_raw_fd()], timeout).is_some();
    if ready {
        let _ = fd.read();
    }
    ready
}
