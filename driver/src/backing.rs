//! Device access behind a trait, as cloud-hypervisor and OpenVMM do: the driver runs the
//! same code on kernel VFIO inside a VM and on a vfio-user connection to vgpu-stub.

use crate::DriverError;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use vfio_bindings::bindings::vfio::*;
use vgpu_os::shm::SharedMemory;
use vgpu_proto::regs::pci;
use vmm_sys_util::eventfd::EventFd;

/// A region of memory to map for DMA.
pub struct DmaRegion<'a> {
    /// The IOVA allocated for it under [`AddressSpace::Iova`]; 0 under
    /// [`AddressSpace::Physical`].
    pub iova: u64,
    /// The memory (a memfd, mapped in this process in full).
    pub mem: &'a SharedMemory,
}

impl DmaRegion<'_> {
    /// The memory's file, for backings that map DMA by descriptor. The driver's DMA memory
    /// keeps its memfd ([`SharedMemory::new`]); memory mapped from a borrowed descriptor
    /// has none and cannot be mapped this way.
    pub fn file(&self) -> Result<&std::fs::File, DriverError> {
        self.mem.file().ok_or_else(|| {
            DriverError::NoMemory("DMA memory without its file cannot be mapped".into())
        })
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.mem.len() as u64
    }
}

/// How the device addresses the memory the driver gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSpace {
    /// Through an IOMMU, or the mapping table of a vfio-user server: the driver allocates
    /// IOVAs within these `[start, end)` ranges and the backing maps memory there.
    Iova(Vec<(u64, u64)>),
    /// By physical address, with no IOMMU: DMA memory must be huge pages, and the backing
    /// locks each region and reports the physical address it starts at.
    Physical,
}

/// How the driver reaches the device.
pub trait DeviceBacking: Send + Sync {
    /// A description for logs.
    fn describe(&self) -> String;
    /// Configuration-space read.
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), DriverError>;
    /// Configuration-space write.
    fn config_write(&self, off: u64, data: &[u8]) -> Result<(), DriverError>;
    /// 32-bit BAR0 read.
    fn read32(&self, off: u64) -> Result<u32, DriverError>;
    /// 32-bit BAR0 write.
    fn write32(&self, off: u64, v: u32) -> Result<(), DriverError>;
    /// Routes MSI-X `vector` to a new eventfd and returns a handle to it (MSI-X is enabled
    /// on first use). Eventfds handed out before for the vector no longer see it, so a
    /// client that kept one cannot watch, or take, the interrupts of the queue's next owner.
    /// The backing keeps the current eventfd of each vector (kernel VFIO routes all of them
    /// at open).
    fn vector_eventfd(&self, vector: u16) -> Result<EventFd, DriverError>;
    /// How many MSI-X vectors, from 0 up, [`vector_eventfd`](Self::vector_eventfd) can
    /// route: all of them unless the system granted fewer.
    fn vectors(&self) -> u16 {
        pci::MSIX_VECTORS
    }
    /// Maps memory for device DMA; returns the address the device reaches it at (`r.iova`
    /// under [`AddressSpace::Iova`]).
    fn dma_map(&self, r: &DmaRegion<'_>) -> Result<u64, DriverError>;
    /// Unmaps what [`dma_map`](Self::dma_map) mapped at device address `iova`.
    fn dma_unmap(&self, iova: u64, len: u64) -> Result<(), DriverError>;
    /// How the device addresses memory.
    fn address_space(&self) -> AddressSpace;
    /// Lets go of the device (daemon exit); later accesses fail.
    fn close(&self);
}

/// vgpu-stub reached over vfio-user, with no VM (tests and development).
pub struct VfioUserBacking {
    client: Mutex<vfio_user::Client>,
    path: PathBuf,
    vectors: Mutex<std::collections::HashMap<u16, EventFd>>,
}

impl VfioUserBacking {
    /// Connects to a vfio-user server.
    pub fn connect(path: &Path) -> Result<Self, DriverError> {
        let client = vfio_user::Client::new(path).map_err(|source| DriverError::VfioUser {
            socket: path.to_path_buf(),
            what: "connecting",
            source,
        })?;
        Ok(VfioUserBacking {
            client: Mutex::new(client),
            path: path.to_path_buf(),
            vectors: Mutex::new(Default::default()),
        })
    }

    /// Turns a failed request, `what`, into the error that names it and the socket.
    fn vfio_user_error(
        &self,
        what: &'static str,
    ) -> impl FnOnce(vfio_user::Error) -> DriverError + '_ {
        move |source| DriverError::VfioUser {
            socket: self.path.clone(),
            what,
            source,
        }
    }

    fn client(&self) -> MutexGuard<'_, vfio_user::Client> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DeviceBacking for VfioUserBacking {
    fn describe(&self) -> String {
        format!("vfio-user:{}", self.path.display())
    }

    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), DriverError> {
        self.client()
            .region_read(VFIO_PCI_CONFIG_REGION_INDEX, off, buf)
            .map_err(self.vfio_user_error("reading config space"))
    }

    fn config_write(&self, off: u64, data: &[u8]) -> Result<(), DriverError> {
        self.client()
            .region_write(VFIO_PCI_CONFIG_REGION_INDEX, off, data)
            .map_err(self.vfio_user_error("writing config space"))
    }

    fn read32(&self, off: u64) -> Result<u32, DriverError> {
        let mut b = [0u8; 4];
        self.client()
            .region_read(VFIO_PCI_BAR0_REGION_INDEX, off, &mut b)
            .map_err(self.vfio_user_error("reading BAR0"))?;
        Ok(u32::from_le_bytes(b))
    }

    fn write32(&self, off: u64, v: u32) -> Result<(), DriverError> {
        self.client()
            .region_write(VFIO_PCI_BAR0_REGION_INDEX, off, &v.to_le_bytes())
            .map_err(self.vfio_user_error("writing BAR0"))
    }

    fn vector_eventfd(&self, vector: u16) -> Result<EventFd, DriverError> {
        if vector >= pci::MSIX_VECTORS {
            return Err(DriverError::NoSuchVector { vector });
        }
        let mut vectors = self.vectors.lock().unwrap_or_else(|p| p.into_inner());
        let first = !vectors.contains_key(&vector);
        let fd = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(DriverError::Io)?;
        let mut c = self.client();
        // MSI-X enable in the capability's Message Control, then the vector's eventfd, then
        // unmask the vector in the table (BAR2). vfio-user leaves the table to the device.
        if first {
            let ctl_off = u64::from(pci::MSIX_CAP_OFFSET) + 2;
            let mut ctl = [0u8; 2];
            c.region_read(VFIO_PCI_CONFIG_REGION_INDEX, ctl_off, &mut ctl)
                .map_err(self.vfio_user_error("reading MSI-X control"))?;
            let v = u16::from_le_bytes(ctl) | (1 << 15);
            c.region_write(VFIO_PCI_CONFIG_REGION_INDEX, ctl_off, &v.to_le_bytes())
                .map_err(self.vfio_user_error("enabling MSI-X"))?;
        }
        let flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
        c.set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            flags,
            u32::from(vector),
            1,
            &[fd.as_raw_fd()],
        )
        .map_err(self.vfio_user_error("routing an MSI-X vector"))?;
        if first {
            let entry = u64::from(pci::MSIX_TABLE_OFFSET) + 16 * u64::from(vector) + 12;
            c.region_write(VFIO_PCI_BAR2_REGION_INDEX, entry, &0u32.to_le_bytes())
                .map_err(self.vfio_user_error("unmasking an MSI-X vector"))?;
        }
        let handle = fd.try_clone().map_err(DriverError::Io)?;
        vectors.insert(vector, fd);
        Ok(handle)
    }

    fn dma_map(&self, r: &DmaRegion<'_>) -> Result<u64, DriverError> {
        self.client()
            .dma_map(
                r.mem.file_offset(),
                r.iova,
                r.bytes(),
                r.file()?.as_raw_fd(),
            )
            .map_err(self.vfio_user_error("mapping DMA memory"))?;
        Ok(r.iova)
    }

    fn dma_unmap(&self, iova: u64, len: u64) -> Result<(), DriverError> {
        self.client()
            .dma_unmap(iova, len)
            .map_err(self.vfio_user_error("unmapping DMA memory"))
    }

    fn close(&self) {
        if let Err(e) = self.client().shutdown() {
            log::debug!("vfio-user shutdown: {e}");
        }
    }

    fn address_space(&self) -> AddressSpace {
        // vgpu-stub keeps a table of what is mapped: any 48-bit range above 4 GiB.
        AddressSpace::Iova(vec![(1 << 32, 1 << 47)])
    }
}
