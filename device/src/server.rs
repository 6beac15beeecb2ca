//! The vfio-user side: presents a [`Device`] to a VMM (QEMU's `vfio-user-pci`) or to a
//! `vfio_user::Client`, one connection at a time, starting every connection from a clean
//! device.
//!
//! The `vfio_user` client hangs if a region access or an unmap is answered with an error
//! (it waits for a reply body that an error reply lacks; QEMU reads error replies), so
//! region accesses always succeed here: bad accesses are logged, reads of them return 0 and
//! writes are dropped. An unmap the device cannot honour is refused all the same — answering
//! it OK would let the VMM reuse memory the device still reaches — and vgpu-driver only ever
//! unmaps whole mappings. A panic inside the protocol library (it has a few on malformed
//! messages) ends that connection only.

use crate::device::Device;
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use vfio_bindings::bindings::vfio::*;
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, Server, ServerBackend, ServerRegion};
use vgpu_proto::regs::pci;

/// The vfio-user backend of one device.
pub struct Backend {
    dev: Arc<Device>,
}

impl Backend {
    /// A backend for `dev`.
    pub fn new(dev: Arc<Device>) -> Self {
        Backend { dev }
    }
}

impl ServerBackend for Backend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> std::io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.dev.config_read(offset, data),
            VFIO_PCI_BAR0_REGION_INDEX => self.dev.bar0_read(offset, data),
            VFIO_PCI_BAR2_REGION_INDEX => self.dev.msix.read_bar(offset, data),
            _ => {
                log::debug!("read of unimplemented region {region} ignored");
                data.fill(0);
            }
        }
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.dev.config_write(offset, data),
            VFIO_PCI_BAR0_REGION_INDEX => self.dev.bar0_write(offset, data),
            VFIO_PCI_BAR2_REGION_INDEX => self.dev.msix.write_bar(offset, data),
            _ => log::debug!("write to unimplemented region {region} ignored"),
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> std::io::Result<()> {
        let Some(fd) = fd else {
            log::warn!(
                "DMA_MAP of {address:#x}+{size:#x} without a file descriptor: not supported"
            );
            return Err(std::io::Error::from_raw_os_error(libc::ENOTSUP));
        };
        let writable = flags.contains(DmaMapFlags::WRITE);
        self.dev
            .mem
            .map(address, size, fd, offset, writable)
            .inspect_err(|e| log::warn!("DMA_MAP {address:#x}+{size:#x}: {e}"))
    }

    /// An unmap the device cannot honour (one that would split a mapping) is refused, and
    /// the mapping stays: answering OK would let the VMM reuse memory the device still
    /// reaches.
    fn dma_unmap(&mut self, _flags: DmaUnmapFlags, address: u64, size: u64) -> std::io::Result<()> {
        self.dev
            .mem
            .unmap(address, size)
            .inspect_err(|e| log::warn!("DMA_UNMAP {address:#x}+{size:#x} refused: {e}"))
    }

    fn reset(&mut self) -> std::io::Result<()> {
        self.dev.reset();
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> std::io::Result<()> {
        if index != VFIO_PCI_MSIX_IRQ_INDEX {
            log::debug!("SET_IRQS for IRQ index {index} ignored (only MSI-X exists)");
            return Ok(());
        }
        if flags & VFIO_IRQ_SET_ACTION_TRIGGER == 0 {
            return Ok(());
        }
        if flags & VFIO_IRQ_SET_DATA_EVENTFD != 0 {
            if fds.len() != count as usize
                || start.saturating_add(count) > u32::from(pci::MSIX_VECTORS)
            {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            self.dev.msix.set_eventfds(start, fds);
        } else if flags & VFIO_IRQ_SET_DATA_NONE != 0 && count == 0 {
            self.dev.msix.clear_eventfds(start, 0);
        }
        Ok(())
    }
}

/// The regions VGPU-STUB exposes, indexed like VFIO PCI regions.
pub fn regions() -> Vec<ServerRegion> {
    (0..VFIO_PCI_NUM_REGIONS)
        .map(|index| {
            let size = match index {
                VFIO_PCI_BAR0_REGION_INDEX => pci::REG_BAR_SIZE,
                VFIO_PCI_BAR2_REGION_INDEX => pci::MSIX_BAR_SIZE,
                VFIO_PCI_CONFIG_REGION_INDEX => crate::config::CONFIG_SIZE as u64,
                _ => 0,
            };
            let flags = if size > 0 {
                VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE
            } else {
                0
            };
            ServerRegion {
                region_info: vfio_region_info {
                    argsz: std::mem::size_of::<vfio_region_info>() as u32,
                    flags,
                    index,
                    cap_offset: 0,
                    size,
                    offset: 0,
                },
                sparse_areas: Vec::new(),
                mmap_fd: None,
            }
        })
        .collect()
}

/// The interrupts VGPU-STUB exposes: MSI-X only.
pub fn irqs() -> Vec<IrqInfo> {
    (0..VFIO_PCI_NUM_IRQS)
        .map(|index| {
            let (count, flags) = if index == VFIO_PCI_MSIX_IRQ_INDEX {
                (
                    u32::from(pci::MSIX_VECTORS),
                    VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE,
                )
            } else {
                (0, 0)
            };
            IrqInfo {
                index,
                count,
                flags,
            }
        })
        .collect()
}

/// Listens on `socket` and serves connections one after another, each from a clean device.
/// Returns after `max_connections` connections (None = forever) or on a listener error.
pub fn serve(
    socket: &Path,
    dev: Arc<Device>,
    max_connections: Option<usize>,
) -> Result<(), vfio_user::Error> {
    if socket.exists() {
        log::info!("removing stale socket {}", socket.display());
        let _ = std::fs::remove_file(socket);
    }
    let server = Server::new(socket, true, irqs(), regions())?;
    log::info!("vgpu-stub listening on {}", socket.display());
    let mut served = 0usize;
    loop {
        let mut backend = Backend::new(dev.clone());
        let result = catch_unwind(AssertUnwindSafe(|| server.run(&mut backend)));
        match result {
            Ok(Ok(())) => log::info!("client disconnected"),
            Ok(Err(e)) => log::warn!("connection ended with an error: {e}"),
            Err(_) => {
                log::error!("the vfio-user protocol layer panicked; the connection was dropped")
            }
        }
        dev.disconnect();
        served += 1;
        if max_connections.is_some_and(|m| served >= m) {
            return Ok(());
        }
    }
}
