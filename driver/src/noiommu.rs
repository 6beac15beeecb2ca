//! Kernel VFIO with no IOMMU: the unsafe mode, for guests with no virtual IOMMU on kernels
//! built with `CONFIG_VFIO_NOIOMMU` and booted with `vfio.enable_unsafe_noiommu_mode=1`.
//!
//! **What is unsafe about it:** nothing stands between the device and memory. The device
//! reaches memory by physical address, so a faulty or hostile device, or a wrong address
//! in a command, can read or write any page of the guest. The kernel taints itself when the
//! mode is used, and needs CAP_SYS_RAWIO to open the group; reading physical addresses from
//! `/proc/self/pagemap` needs CAP_SYS_ADMIN. Use a virtual IOMMU (`--device` alone) where
//! the VM can have one.
//!
//! The container is set up by hand ([`crate::vfio_raw`]): vfio-ioctls only sets up type1.
//! There is no DMA mapping: every DMA region is on huge pages (see [`crate::physmem`]),
//! locked, and must be physically contiguous; the device is given its physical address.

use crate::backing::{AddressSpace, DeviceBacking, DmaRegion};
use crate::kernel_vfio::{check_bound, find_device, route_vector};
use crate::vfio_raw::{self, RegionInfo};
use crate::{DriverError, SetupError};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vfio_bindings::bindings::vfio::*;
use vgpu_os::shm::SharedMemory;
use vmm_sys_util::eventfd::EventFd;

/// The vfio module's switch for the mode.
pub const NOIOMMU_PARAM: &str = "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode";

/// VGPU-STUB through kernel VFIO in no-IOMMU mode.
pub struct NoIommuBacking {
    // The container and group stay open for as long as the device is used.
    _container: File,
    _group: File,
    device: File,
    config: RegionInfo,
    bar0: RegionInfo,
    path: PathBuf,
    vectors: std::sync::Mutex<Vec<EventFd>>,
}

/// Turns a failed system call into the error that says what the driver was doing.
fn os(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DriverError {
    move |source| DriverError::Os {
        what: what.into(),
        source,
    }
}

/// Checks the vfio module's no-IOMMU switch at `param` (normally [`NOIOMMU_PARAM`]).
pub fn check_noiommu_enabled(param: &Path) -> Result<(), DriverError> {
    match std::fs::read_to_string(param) {
        Ok(v) if v.trim() == "Y" || v.trim() == "1" => Ok(()),
        Ok(_) => Err(SetupError::NoIommuOff.into()),
        Err(_) => Err(SetupError::NoIommuNotInKernel.into()),
    }
}

/// The IOMMU group number of the device at `dev` (its sysfs directory).
pub fn group_number(dev: &Path) -> Result<u32, DriverError> {
    let no_group = |source| SetupError::NoIommuGroup {
        device: dev.to_path_buf(),
        source,
    };
    let link = std::fs::read_link(dev.join("iommu_group")).map_err(|e| no_group(Some(e)))?;
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| no_group(None).into())
}

fn open_rw(path: &str) -> Result<File, DriverError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(os(format!("cannot open {path}")))
}

/// Locks `mem` and returns its physical address, if it is on huge pages and physically
/// contiguous: how memory is given to a device with no IOMMU.
pub fn lock_physical(mem: &SharedMemory) -> Result<u64, DriverError> {
    if !mem.huge() {
        return Err(DriverError::NoMemory(
            "no-IOMMU DMA memory must be on huge pages".into(),
        ));
    }
    mem.lock()
        .map_err(|e| DriverError::NoMemory(format!("cannot lock DMA memory: {e}")))?;
    let len = mem.len() as u64;
    crate::physmem::physical_base(mem.host_addr(), len)
        .map_err(|e| DriverError::NoMemory(format!("{} MiB of DMA memory: {e}", len >> 20)))
}

impl NoIommuBacking {
    /// Opens the device `spec` (see [`find_device`]) through a no-IOMMU container, with at
    /// most `max_vectors` MSI-X vectors.
    pub fn open(spec: &str, max_vectors: u16) -> Result<Self, DriverError> {
        let path = find_device(Path::new("/sys/bus/pci/devices"), spec)?;
        check_bound(&path)?;
        check_noiommu_enabled(Path::new(NOIOMMU_PARAM))?;
        let group_id = group_number(&path)?;
        let container = open_rw("/dev/vfio/vfio")?;
        let version =
            vfio_raw::api_version(&container).map_err(os("asking for the VFIO API version"))?;
        let need = VFIO_API_VERSION as i32;
        if version != need {
            return Err(SetupError::VfioApiVersion { version, need }.into());
        }
        if !vfio_raw::has_extension(&container, VFIO_NOIOMMU_IOMMU)
            .map_err(os("asking the VFIO container for no-IOMMU mode"))?
        {
            return Err(SetupError::NoIommuNotOffered.into());
        }
        let group = open_rw(&format!("/dev/vfio/noiommu-{group_id}"))?;
        if !vfio_raw::group_viable(&group)
            .map_err(os(format!("asking for IOMMU group {group_id}'s status")))?
        {
            return Err(SetupError::GroupNotViable { group: group_id }.into());
        }
        vfio_raw::group_set_container(&group, &container)
            .map_err(os(format!("adding group {group_id} to the container")))?;
        vfio_raw::set_iommu(&container, VFIO_NOIOMMU_IOMMU).map_err(os("setting no-IOMMU mode"))?;
        let bad_path = || SetupError::BadDeviceSpec {
            spec: path.display().to_string(),
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(bad_path)?;
        let device = vfio_raw::group_device(&group, name).map_err(os(format!("opening {name}")))?;
        let config = vfio_raw::region_info(&device, VFIO_PCI_CONFIG_REGION_INDEX)
            .map_err(os(format!("asking for {name}'s config space")))?;
        let bar0 = vfio_raw::region_info(&device, VFIO_PCI_BAR0_REGION_INDEX)
            .map_err(os(format!("asking for {name}'s BAR0")))?;
        if let Err(e) = vfio_raw::reset(&device) {
            // The driver resets the device through CONTROL during bring-up as well.
            log::info!("VFIO reset of {name}: {e}; relying on the device's own reset");
        }
        let vectors = crate::kernel_vfio::enable_vectors(max_vectors, |vectors| {
            let fds: Vec<i32> = vectors.iter().map(|e| e.as_raw_fd()).collect();
            vfio_raw::set_irq_eventfds(&device, VFIO_PCI_MSIX_IRQ_INDEX, 0, &fds)
        })?;
        log::warn!(
            "no-IOMMU mode: {} can reach all of memory; DMA memory is locked huge pages given by physical address",
            path.display()
        );
        Ok(NoIommuBacking {
            _container: container,
            _group: group,
            device,
            config,
            bar0,
            path,
            vectors: std::sync::Mutex::new(vectors),
        })
    }

    fn region_at(r: &RegionInfo, off: u64, len: usize) -> Result<u64, DriverError> {
        match off.checked_add(len as u64) {
            Some(end) if end <= r.size => Ok(r.offset + off),
            _ => Err(DriverError::OutsideRegion {
                off,
                len,
                size: r.size,
            }),
        }
    }

    fn read(&self, r: &RegionInfo, off: u64, buf: &mut [u8]) -> Result<(), DriverError> {
        let at = Self::region_at(r, off, buf.len())?;
        self.device.read_exact_at(buf, at).map_err(DriverError::Io)
    }

    fn write(&self, r: &RegionInfo, off: u64, data: &[u8]) -> Result<(), DriverError> {
        let at = Self::region_at(r, off, data.len())?;
        self.device.write_all_at(data, at).map_err(DriverError::Io)
    }
}

impl DeviceBacking for NoIommuBacking {
    fn describe(&self) -> String {
        format!("vfio-pci (no-IOMMU):{}", self.path.display())
    }

    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), DriverError> {
        self.read(&self.config, off, buf)
    }

    fn config_write(&self, off: u64, data: &[u8]) -> Result<(), DriverError> {
        self.write(&self.config, off, data)
    }

    fn read32(&self, off: u64) -> Result<u32, DriverError> {
        let mut b = [0u8; 4];
        self.read(&self.bar0, off, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn write32(&self, off: u64, v: u32) -> Result<(), DriverError> {
        self.write(&self.bar0, off, &v.to_le_bytes())
    }

    fn vector_eventfd(&self, vector: u16) -> Result<EventFd, DriverError> {
        route_vector(&self.device, &self.vectors, vector)
    }

    fn vectors(&self) -> u16 {
        vgpu_os::lock(&self.vectors).len() as u16
    }

    fn dma_map(&self, r: &DmaRegion<'_>) -> Result<u64, DriverError> {
        lock_physical(r.mem)
    }

    fn dma_unmap(&self, iova: u64, len: u64) -> Result<(), DriverError> {
        // No IOMMU holds a mapping; the pages stay locked until their memory is unmapped,
        // which the owner of the region does right after this.
        log::debug!("no-IOMMU: {len:#x} bytes at physical {iova:#x} released");
        Ok(())
    }

    fn address_space(&self) -> AddressSpace {
        AddressSpace::Physical
    }

    fn close(&self) {
        if let Err(e) = vfio_raw::disable_irqs(&self.device, VFIO_PCI_MSIX_IRQ_INDEX) {
            log::debug!("disabling MSI-X: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_must_be_switched_on() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("enable_unsafe_noiommu_mode");
        let e = check_noiommu_enabled(&p).unwrap_err().to_string();
        assert!(e.contains("CONFIG_VFIO_NOIOMMU"), "{e}");
        std::fs::write(&p, "N\n").unwrap();
        let e = check_noiommu_enabled(&p).unwrap_err().to_string();
        assert!(e.contains("is off"), "{e}");
        std::fs::write(&p, "Y\n").unwrap();
        check_noiommu_enabled(&p).unwrap();
    }

    #[test]
    fn group_numbers_come_from_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("0000:00:03.0");
        std::fs::create_dir(&dev).unwrap();
        assert!(group_number(&dev)
            .unwrap_err()
            .to_string()
            .contains("no IOMMU group"));
        std::os::unix::fs::symlink("../../../kernel/iommu_groups/7", dev.join("iommu_group"))
            .unwrap();
        assert_eq!(group_number(&dev).unwrap(), 7);
    }

    #[test]
    fn region_bounds_are_checked() {
        let r = RegionInfo {
            offset: 0x1000,
            size: 0x100,
            flags: 0,
        };
        assert_eq!(NoIommuBacking::region_at(&r, 0xfc, 4).unwrap(), 0x10fc);
        assert!(NoIommuBacking::region_at(&r, 0xfd, 4).is_err());
        assert!(NoIommuBacking::region_at(&r, u64::MAX, 4).is_err());
    }

    #[test]
    fn small_pages_are_refused() {
        let r = SharedMemory::new("noiommu-test", 4096).unwrap();
        let e = lock_physical(&r).unwrap_err().to_string();
        assert!(e.contains("huge pages"), "{e}");
    }
}
