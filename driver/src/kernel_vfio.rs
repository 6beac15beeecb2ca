//! Kernel VFIO backing (type1 IOMMU container, behind a real or virtual IOMMU): the driver
//! inside a VM, on a VGPU-STUB bound to `vfio-pci` by the udev rule.
//!
//! Every MSI-X vector is routed to its own eventfd once, at open (VFIO sets the whole
//! table in one `VFIO_DEVICE_SET_IRQS`); queues then hand out handles to those eventfds.
//! IOVAs are allocated within the ranges the IOMMU reports. The no-IOMMU mode lives in
//! [`crate::noiommu`]; this module also holds what both share: what they find out from
//! sysfs, and the handing out of those eventfds.

use crate::backing::{AddressSpace, DeviceBacking, DmaRegion};
use crate::{DriverError, SetupError};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vfio_bindings::bindings::vfio::*;
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};
use vgpu_proto::regs::pci;
use vmm_sys_util::eventfd::EventFd;

/// Finds the device named by `spec` under `sysfs` (normally `/sys/bus/pci/devices`):
/// a PCI address (`0000:00:03.0`) or `VENDOR:DEVICE` in hex (the first match).
pub fn find_device(sysfs: &Path, spec: &str) -> Result<PathBuf, DriverError> {
    let is_bdf = spec.len() == 12
        && spec.as_bytes()[4] == b':'
        && spec.as_bytes()[7] == b':'
        && spec.as_bytes()[10] == b'.';
    if is_bdf {
        let p = sysfs.join(spec);
        return if p.exists() {
            Ok(p)
        } else {
            Err(SetupError::NoSuchDevice { spec: spec.into() }.into())
        };
    }
    let bad = || SetupError::BadDeviceSpec { spec: spec.into() };
    let (v, d) = spec.split_once(':').ok_or_else(bad)?;
    let parse = |x: &str| u16::from_str_radix(x.trim_start_matches("0x"), 16);
    let (Ok(v), Ok(d)) = (parse(v), parse(d)) else {
        return Err(bad().into());
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(sysfs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let read_id = |p: &Path, f: &str| -> Option<u16> {
        let s = std::fs::read_to_string(p.join(f)).ok()?;
        u16::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
    };
    entries
        .into_iter()
        .find(|p| read_id(p, "vendor") == Some(v) && read_id(p, "device") == Some(d))
        .ok_or_else(|| {
            SetupError::NoSuchDevice {
                spec: format!("{v:04x}:{d:04x}"),
            }
            .into()
        })
}

/// Checks that the device is bound to vfio-pci.
pub fn check_bound(dev: &Path) -> Result<(), DriverError> {
    let driver = std::fs::read_link(dev.join("driver")).ok();
    let name = driver
        .as_ref()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    match name {
        Some(n) if n == "vfio-pci" => Ok(()),
        driver => Err(SetupError::NotBoundToVfio {
            device: dev.to_path_buf(),
            driver,
        }
        .into()),
    }
}

/// Routes MSI-X `vector` of `device` (whose vectors were all routed at open, to the
/// eventfds in `vectors`) to a new eventfd, which replaces the old one in `vectors`, and
/// returns a handle to it: whoever holds the old eventfd no longer sees the vector.
pub(crate) fn route_vector(
    device: &impl std::os::fd::AsRawFd,
    vectors: &std::sync::Mutex<Vec<EventFd>>,
    vector: u16,
) -> Result<EventFd, DriverError> {
    let mut vectors = vgpu_os::lock(vectors);
    let slot = vectors
        .get_mut(usize::from(vector))
        .ok_or(DriverError::NoSuchVector { vector })?;
    let fd = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(DriverError::Io)?;
    crate::vfio_raw::set_irq_eventfds(
        device,
        VFIO_PCI_MSIX_IRQ_INDEX,
        u32::from(vector),
        &[std::os::fd::AsRawFd::as_raw_fd(&fd)],
    )
    .map_err(|source| DriverError::Os {
        what: format!("routing MSI-X vector {vector}"),
        source,
    })?;
    *slot = fd;
    slot.try_clone().map_err(DriverError::Io)
}

/// Enables MSI-X on `device` with as many vectors as the system grants, at most `want`
/// (trying `want`, then halving: a guest with few vCPUs may refuse 256), and returns one
/// eventfd per routed vector. None granted is not an error: every queue then wakes its
/// sleeping client by timer (see the server), and the admin queue is polled.
pub(crate) fn enable_vectors(
    want: u16,
    mut route: impl FnMut(&[EventFd]) -> std::io::Result<()>,
) -> Result<Vec<EventFd>, DriverError> {
    let mut n = want.clamp(1, pci::MSIX_VECTORS);
    loop {
        let vectors: Vec<EventFd> = (0..n)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))
            .collect::<Result<_, _>>()
            .map_err(DriverError::Io)?;
        match route(&vectors) {
            Ok(()) => {
                if n < pci::MSIX_VECTORS {
                    log::warn!(
                        "MSI-X: {n} of {} vectors routed (asked for {want}); queues {n} and up wake their sleeping clients by a {:?} timer instead of interrupts",
                        pci::MSIX_VECTORS,
                        crate::server::INTERRUPT_TICK
                    );
                }
                return Ok(vectors);
            }
            Err(e) if n > 1 => {
                log::info!("MSI-X: {n} vectors refused ({e}); trying {}", n / 2);
                n /= 2;
            }
            Err(e) => {
                log::warn!(
                    "MSI-X: no vector could be routed ({e}); every queue wakes its sleeping client by a {:?} timer and the admin queue is polled",
                    crate::server::INTERRUPT_TICK
                );
                return Ok(Vec::new());
            }
        }
    }
}

/// VGPU-STUB through kernel VFIO.
pub struct KernelVfioBacking {
    container: Arc<VfioContainer>,
    /// BAR0 mapped into the process: register accesses are loads and stores. Declared
    /// before `device`, so that it is unmapped before the device is closed.
    bar0: crate::vfio_raw::MappedRegion,
    device: VfioDevice,
    path: PathBuf,
    vectors: std::sync::Mutex<Vec<EventFd>>,
    iova_ranges: Vec<(u64, u64)>,
}

/// IOVAs below this are never used, so that 0 never names a mapping.
const LOWEST_IOVA: u64 = 1 << 20;

/// The usable part of the IOMMU's ranges: above [`LOWEST_IOVA`].
fn usable_ranges(reported: &[(u64, u64)]) -> Vec<(u64, u64)> {
    reported
        .iter()
        .map(|&(s, e)| (s.max(LOWEST_IOVA), e))
        .filter(|(s, e)| e > s)
        .collect()
}

/// Turns a failed vfio-ioctls call, `what`, into the error that names it.
fn vfio(what: &'static str) -> impl FnOnce(vfio_ioctls::VfioError) -> DriverError {
    move |source| DriverError::Vfio { what, source }
}

impl KernelVfioBacking {
    /// Opens the device `spec` (see [`find_device`]) through a type1 container, with at
    /// most `max_vectors` MSI-X vectors.
    pub fn open(spec: &str, max_vectors: u16) -> Result<Self, DriverError> {
        let path = find_device(Path::new("/sys/bus/pci/devices"), spec)?;
        check_bound(&path)?;
        let container =
            Arc::new(VfioContainer::new(None).map_err(vfio("opening a type1 container"))?);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device = VfioDevice::new(&path, ops, false).map_err(vfio("opening the device"))?;
        device.reset();
        let vectors = enable_vectors(max_vectors, |fds| {
            device
                .enable_msix(fds.iter().collect())
                .map_err(|e| std::io::Error::other(e.to_string()))
        })?;
        let region = crate::vfio_raw::RegionInfo {
            offset: device.get_region_offset(VFIO_PCI_BAR0_REGION_INDEX),
            size: device.get_region_size(VFIO_PCI_BAR0_REGION_INDEX),
            flags: device.get_region_flags(VFIO_PCI_BAR0_REGION_INDEX),
        };
        let bar0 = crate::vfio_raw::MappedRegion::new(&device, region).map_err(|e| {
            DriverError::Io(std::io::Error::new(
                e.kind(),
                format!("mapping BAR0 ({region:?}): {e}"),
            ))
        })?;
        let iova_ranges = match crate::vfio_raw::iommu_iova_ranges(container.as_ref())? {
            Some(r) => usable_ranges(&r),
            None => {
                // An IOMMU that reports no ranges: 39 bits, which every intel-iommu model
                // (QEMU's default aw-bits) accepts, above the first 4 GiB.
                log::warn!("the IOMMU reports no IOVA ranges; using [4 GiB, 512 GiB)");
                vec![(1 << 32, 1 << 39)]
            }
        };
        log::info!(
            "kernel VFIO: {} opened, {} MSI-X vectors routed, IOVA ranges {:x?}",
            path.display(),
            vectors.len(),
            iova_ranges
        );
        Ok(KernelVfioBacking {
            container,
            bar0,
            device,
            path,
            vectors: std::sync::Mutex::new(vectors),
            iova_ranges,
        })
    }
}

fn io_error(e: nix::Error) -> DriverError {
    DriverError::Io(std::io::Error::from(e))
}

fn short(what: &str, done: usize, wanted: usize) -> DriverError {
    DriverError::Io(std::io::Error::other(format!(
        "{what}: {done} of {wanted} bytes"
    )))
}

impl KernelVfioBacking {
    /// The device's descriptor, for the configuration-space reads and writes.
    fn device_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor of `self.device`, open as long as `self` lives, which the
        // returned borrow cannot outlive.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.device.as_raw_fd()) }
    }

    /// Where configuration-space offset `off` lies in the device file.
    fn config_at(&self, off: u64) -> Result<libc::off_t, DriverError> {
        self.device
            .get_region_offset(VFIO_PCI_CONFIG_REGION_INDEX)
            .checked_add(off)
            .and_then(|a| libc::off_t::try_from(a).ok())
            .ok_or_else(|| DriverError::Io(std::io::Error::other("configuration offset")))
    }
}

impl DeviceBacking for KernelVfioBacking {
    fn describe(&self) -> String {
        format!("vfio-pci:{}", self.path.display())
    }

    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), DriverError> {
        let at = self.config_at(off)?;
        let n = nix::sys::uio::pread(self.device_fd(), buf, at).map_err(io_error)?;
        if n != buf.len() {
            return Err(short("configuration read", n, buf.len()));
        }
        Ok(())
    }

    fn config_write(&self, off: u64, data: &[u8]) -> Result<(), DriverError> {
        let at = self.config_at(off)?;
        let n = nix::sys::uio::pwrite(self.device_fd(), data, at).map_err(io_error)?;
        if n != data.len() {
            return Err(short("configuration write", n, data.len()));
        }
        Ok(())
    }

    fn read32(&self, off: u64) -> Result<u32, DriverError> {
        self.bar0.read32(off).map_err(DriverError::Io)
    }

    fn write32(&self, off: u64, v: u32) -> Result<(), DriverError> {
        self.bar0.write32(off, v).map_err(DriverError::Io)
    }

    fn vector_eventfd(&self, vector: u16) -> Result<EventFd, DriverError> {
        route_vector(&self.device, &self.vectors, vector)
    }

    fn vectors(&self) -> u16 {
        vgpu_os::lock(&self.vectors).len() as u16
    }

    fn dma_map(&self, r: &DmaRegion<'_>) -> Result<u64, DriverError> {
        let len = r.mem.len();
        // SAFETY: `as_ptr()..+len` is a shared mapping owned by the DmaMem that owns this
        // region; it stays mapped until that DmaMem is dropped, which unmaps the IOVA first.
        // The driver touches the memory only through raw-pointer copies and atomics, and
        // creates no Rust references into it.
        unsafe { self.container.vfio_dma_map(r.iova, len, r.mem.as_ptr()) }
            .map_err(vfio("mapping DMA memory"))?;
        Ok(r.iova)
    }

    fn dma_unmap(&self, iova: u64, len: u64) -> Result<(), DriverError> {
        let len =
            usize::try_from(len).map_err(|_| DriverError::NoMemory("region too large".into()))?;
        self.container
            .vfio_dma_unmap(iova, len)
            .map_err(vfio("unmapping DMA memory"))
    }

    fn address_space(&self) -> AddressSpace {
        AddressSpace::Iova(self.iova_ranges.clone())
    }

    fn close(&self) {
        if let Err(e) = self.device.disable_msix() {
            log::debug!("disabling MSI-X: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msix_takes_the_vectors_the_system_grants() {
        let grants = |most: usize| {
            move |v: &[EventFd]| {
                if v.len() <= most {
                    Ok(())
                } else {
                    Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
                }
            }
        };
        assert_eq!(enable_vectors(256, grants(256)).unwrap().len(), 256);
        assert_eq!(enable_vectors(256, grants(100)).unwrap().len(), 64);
        assert_eq!(enable_vectors(3, grants(256)).unwrap().len(), 3);
        assert_eq!(enable_vectors(1000, grants(1000)).unwrap().len(), 256);
        assert!(enable_vectors(256, grants(0)).unwrap().is_empty());
    }

    fn fake_sysfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (bdf, v, dev) in [
            ("0000:00:02.0", "0x8086", "0x10d3"),
            ("0000:00:03.0", "0x1234", "0x7667"),
        ] {
            let p = d.path().join(bdf);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("vendor"), format!("{v}\n")).unwrap();
            std::fs::write(p.join("device"), format!("{dev}\n")).unwrap();
        }
        std::os::unix::fs::symlink(
            "/sys/bus/pci/drivers/e1000e",
            d.path().join("0000:00:02.0/driver"),
        )
        .unwrap();
        d
    }

    #[test]
    fn finds_devices_by_ids_or_address() {
        let s = fake_sysfs();
        assert_eq!(
            find_device(s.path(), "1234:7667").unwrap(),
            s.path().join("0000:00:03.0")
        );
        assert_eq!(
            find_device(s.path(), "0000:00:02.0").unwrap(),
            s.path().join("0000:00:02.0")
        );
        assert!(find_device(s.path(), "1234:9999")
            .unwrap_err()
            .to_string()
            .contains("no PCI device 1234:9999"));
        assert!(find_device(s.path(), "0000:00:09.0").is_err());
        assert!(find_device(s.path(), "nonsense")
            .unwrap_err()
            .to_string()
            .contains("neither"));
    }

    #[test]
    fn iova_ranges_skip_the_lowest_megabyte() {
        assert_eq!(
            usable_ranges(&[(0, 0xfee0_0000), (0xfef0_0000, 1 << 39), (0, 0x1000)]),
            vec![(LOWEST_IOVA, 0xfee0_0000), (0xfef0_0000, 1 << 39)]
        );
    }

    #[test]
    fn refuses_devices_not_bound_to_vfio_pci() {
        let s = fake_sysfs();
        let e = check_bound(&s.path().join("0000:00:02.0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bound to e1000e"), "{e}");
        let e = check_bound(&s.path().join("0000:00:03.0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not bound"), "{e}");
    }
}
