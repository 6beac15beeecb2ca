//! The driver's device seam served in process: a [`DeviceBacking`] that calls the device
//! model directly, with no socket between them, and the place to inject faults a real
//! device or link can show (a device that fell off the bus, DMA mappings refused, lost
//! doorbells).

use std::collections::HashMap;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vgpu_driver::backing::{AddressSpace, DeviceBacking, DmaRegion};
use vgpu_driver::DriverError;
use vgpu_proto::regs::{self, pci};
use vgpu_stub::device::Device;
use vmm_sys_util::eventfd::EventFd;

/// Faults to inject; all off by default, and each can be switched at any time.
#[derive(Debug, Default)]
pub struct Faults {
    /// The device fell off the bus: reads return all ones, writes are lost.
    pub dead: AtomicBool,
    /// Doorbell writes are lost.
    pub drop_doorbells: AtomicBool,
    /// DMA mappings still allowed before every further one fails (`u64::MAX`: no limit).
    pub dma_maps_left: AtomicU64,
    /// DMA mappings refused so far.
    pub dma_maps_refused: AtomicU64,
    /// Doorbells lost so far.
    pub doorbells_dropped: AtomicU64,
    /// DMA memory is mapped one page (4 KiB, or the huge page backing it) at a time, as a
    /// virtual IOMMU with caching mode hands it to the device (one IOTLB entry per mapping).
    pub page_mappings: AtomicBool,
}

impl Faults {
    /// No faults.
    pub fn none() -> Arc<Faults> {
        Arc::new(Faults {
            dma_maps_left: AtomicU64::new(u64::MAX),
            ..Faults::default()
        })
    }
}

/// vgpu-stub's device model reached by direct calls.
pub struct InProcessBacking {
    dev: Arc<Device>,
    faults: Arc<Faults>,
    vectors: Mutex<HashMap<u16, EventFd>>,
}

impl InProcessBacking {
    /// A backing for `dev`, with `faults` injected.
    pub fn new(dev: Arc<Device>, faults: Arc<Faults>) -> Self {
        InProcessBacking {
            dev,
            faults,
            vectors: Mutex::new(HashMap::new()),
        }
    }

    fn dead(&self) -> bool {
        self.faults.dead.load(Ordering::SeqCst)
    }
}

fn injected(what: &str) -> DriverError {
    DriverError::Io(std::io::Error::other(format!("injected fault: {what}")))
}

impl DeviceBacking for InProcessBacking {
    fn describe(&self) -> String {
        "in-process".into()
    }

    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), DriverError> {
        if self.dead() {
            buf.fill(0xFF);
        } else {
            self.dev.config_read(off, buf);
        }
        Ok(())
    }

    fn config_write(&self, off: u64, data: &[u8]) -> Result<(), DriverError> {
        if !self.dead() {
            self.dev.config_write(off, data);
        }
        Ok(())
    }

    fn read32(&self, off: u64) -> Result<u32, DriverError> {
        if self.dead() {
            return Ok(u32::MAX);
        }
        let mut b = [0u8; 4];
        self.dev.bar0_read(off, &mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn write32(&self, off: u64, v: u32) -> Result<(), DriverError> {
        let doorbell = off >= regs::DOORBELL_BASE;
        if self.dead() || (doorbell && self.faults.drop_doorbells.load(Ordering::SeqCst)) {
            if doorbell {
                self.faults.doorbells_dropped.fetch_add(1, Ordering::SeqCst);
            }
            return Ok(());
        }
        self.dev.bar0_write(off, &v.to_le_bytes());
        Ok(())
    }

    fn vector_eventfd(&self, vector: u16) -> Result<EventFd, DriverError> {
        if vector >= pci::MSIX_VECTORS {
            return Err(injected("no such MSI-X vector"));
        }
        let mut vectors = self.vectors.lock().unwrap_or_else(|p| p.into_inner());
        let fd = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        // MSI-X enable in the capability's Message Control, the vector's eventfd, then the
        // vector unmasked in the table: what kernel VFIO does for a driver.
        let ctl_off = u64::from(pci::MSIX_CAP_OFFSET) + 2;
        let mut ctl = [0u8; 2];
        self.dev.config_read(ctl_off, &mut ctl);
        let v = u16::from_le_bytes(ctl) | (1 << 15);
        self.dev.config_write(ctl_off, &v.to_le_bytes());
        let dup = fd.try_clone()?.into_raw_fd();
        // SAFETY: `dup` is a descriptor just duplicated for this call and given up by its
        // owner (`into_raw_fd`), so the file becomes its only owner.
        let file = unsafe { std::fs::File::from_raw_fd(dup) };
        self.dev.msix.set_eventfds(u32::from(vector), vec![file]);
        let entry = u64::from(pci::MSIX_TABLE_OFFSET) + 16 * u64::from(vector) + 12;
        self.dev.msix.write_bar(entry, &0u32.to_le_bytes());
        let handle = fd.try_clone()?;
        vectors.insert(vector, fd);
        Ok(handle)
    }

    fn dma_map(&self, r: &DmaRegion<'_>) -> Result<u64, DriverError> {
        let left = self.faults.dma_maps_left.load(Ordering::SeqCst);
        if left == 0 || self.dead() {
            self.faults.dma_maps_refused.fetch_add(1, Ordering::SeqCst);
            return Err(injected("DMA mapping refused"));
        }
        if left != u64::MAX {
            self.faults.dma_maps_left.fetch_sub(1, Ordering::SeqCst);
        }
        let file = r.file()?;
        if self.faults.page_mappings.load(Ordering::SeqCst) {
            // One page of the memory's own size (huge-page memory maps in 2 MiB pieces).
            let page = std::os::unix::fs::MetadataExt::blksize(&file.metadata()?).max(4096);
            for off in (0..r.bytes()).step_by(page as usize) {
                let n = (r.bytes() - off).min(page);
                self.dev
                    .mem
                    .map(r.iova + off, n, file.try_clone()?, off, true)?;
            }
        } else {
            self.dev
                .mem
                .map(r.iova, r.bytes(), file.try_clone()?, 0, true)?;
        }
        Ok(r.iova)
    }

    fn dma_unmap(&self, iova: u64, len: u64) -> Result<(), DriverError> {
        Ok(self.dev.mem.unmap(iova, len)?)
    }

    fn address_space(&self) -> AddressSpace {
        AddressSpace::Iova(vec![(1 << 32, 1 << 47)])
    }

    fn close(&self) {
        // What the vfio-user server does when its client goes away.
        self.dev.disconnect();
    }
}
