//! The VFIO ioctls that vfio-ioctls does not cover, on vfio-bindings' types: a container in
//! no-IOMMU mode (vfio-ioctls sets up type1 only), the group and device calls that go with
//! it, and the IOVA ranges a type1 IOMMU reports.
//!
//! Every ioctl here passes a `repr(C)` struct from vfio-bindings (or a buffer laid out as
//! one) whose `argsz` says how much the kernel may read or write, so the kernel never
//! touches memory past what is passed. Replies are parsed with bounds checks: a capability
//! chain is walked by offsets into a buffer of known length, at most a fixed number of
//! steps.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use vfio_bindings::bindings::vfio::*;
use vmm_sys_util::ioctl::{
    ioctl, ioctl_with_mut_ref, ioctl_with_ptr, ioctl_with_ref, ioctl_with_val,
};
use vmm_sys_util::ioctl_io_nr;

const TYPE: u32 = VFIO_TYPE as u32;
ioctl_io_nr!(VFIO_GET_API_VERSION, TYPE, VFIO_BASE);
ioctl_io_nr!(VFIO_CHECK_EXTENSION, TYPE, VFIO_BASE + 1);
ioctl_io_nr!(VFIO_SET_IOMMU, TYPE, VFIO_BASE + 2);
ioctl_io_nr!(VFIO_GROUP_GET_STATUS, TYPE, VFIO_BASE + 3);
ioctl_io_nr!(VFIO_GROUP_SET_CONTAINER, TYPE, VFIO_BASE + 4);
ioctl_io_nr!(VFIO_GROUP_GET_DEVICE_FD, TYPE, VFIO_BASE + 6);
ioctl_io_nr!(VFIO_DEVICE_GET_REGION_INFO, TYPE, VFIO_BASE + 8);
ioctl_io_nr!(VFIO_DEVICE_SET_IRQS, TYPE, VFIO_BASE + 10);
ioctl_io_nr!(VFIO_DEVICE_RESET, TYPE, VFIO_BASE + 11);
ioctl_io_nr!(VFIO_IOMMU_GET_INFO, TYPE, VFIO_BASE + 12);

fn check(ret: i32) -> io::Result<i32> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `VFIO_GET_API_VERSION` on a container.
pub fn api_version(container: &File) -> io::Result<i32> {
    // SAFETY: an ioctl with no argument on a file we own.
    check(unsafe { ioctl(container, VFIO_GET_API_VERSION()) })
}

/// `VFIO_CHECK_EXTENSION`: whether the container supports IOMMU model `ext`.
pub fn has_extension(container: &File, ext: u32) -> io::Result<bool> {
    // SAFETY: an ioctl whose argument is a plain integer.
    let r = check(unsafe {
        ioctl_with_val(container, VFIO_CHECK_EXTENSION(), libc::c_ulong::from(ext))
    })?;
    Ok(r > 0)
}

/// `VFIO_SET_IOMMU`: sets the container's IOMMU model (after a group joined it).
pub fn set_iommu(container: &File, model: u32) -> io::Result<()> {
    // SAFETY: an ioctl whose argument is a plain integer.
    check(unsafe { ioctl_with_val(container, VFIO_SET_IOMMU(), libc::c_ulong::from(model)) })
        .map(drop)
}

/// `VFIO_GROUP_GET_STATUS`: true when every device of the group is bound to a VFIO driver.
pub fn group_viable(group: &File) -> io::Result<bool> {
    let mut st = vfio_group_status {
        argsz: std::mem::size_of::<vfio_group_status>() as u32,
        flags: 0,
    };
    // SAFETY: the kernel writes at most `argsz` bytes into `st`, which is that large.
    check(unsafe { ioctl_with_mut_ref(group, VFIO_GROUP_GET_STATUS(), &mut st) })?;
    Ok(st.flags & VFIO_GROUP_FLAGS_VIABLE != 0)
}

/// `VFIO_GROUP_SET_CONTAINER`: adds the group to the container.
pub fn group_set_container(group: &File, container: &File) -> io::Result<()> {
    let fd: RawFd = container.as_raw_fd();
    // SAFETY: the kernel reads one int (the container's descriptor) from `fd`.
    check(unsafe { ioctl_with_ref(group, VFIO_GROUP_SET_CONTAINER(), &fd) }).map(drop)
}

/// `VFIO_GROUP_GET_DEVICE_FD` for the device named `name` (its PCI address).
pub fn group_device(group: &File, name: &str) -> io::Result<File> {
    let name = CString::new(name).map_err(|_| io::Error::other("device name has a NUL"))?;
    // SAFETY: the kernel reads a NUL-terminated string that lives across the call.
    let fd = check(unsafe { ioctl_with_ptr(group, VFIO_GROUP_GET_DEVICE_FD(), name.as_ptr()) })?;
    // SAFETY: the ioctl returned a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A device region: where it lies in the device file, and how large it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// Offset of the region in the device file.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
}

/// `VFIO_DEVICE_GET_REGION_INFO` for region `index`.
pub fn region_info(device: &File, index: u32) -> io::Result<RegionInfo> {
    let mut info = vfio_region_info {
        argsz: std::mem::size_of::<vfio_region_info>() as u32,
        index,
        ..Default::default()
    };
    // SAFETY: the kernel writes at most `argsz` bytes into `info`, which is that large
    // (capabilities beyond it are not asked for and not written).
    check(unsafe { ioctl_with_mut_ref(device, VFIO_DEVICE_GET_REGION_INFO(), &mut info) })?;
    Ok(RegionInfo {
        offset: info.offset,
        size: info.size,
        flags: info.flags,
    })
}

/// A device region mapped into the process (`VFIO_REGION_INFO_FLAG_MMAP`): register
/// accesses are loads and stores, not a system call each, and cannot fail short. Unmapped on
/// drop.
pub struct MappedRegion {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is device memory shared by the whole process; accesses are single
// aligned 32-bit volatile loads and stores, which are atomic on the platforms VFIO runs on.
unsafe impl Send for MappedRegion {}
// SAFETY: as above.
unsafe impl Sync for MappedRegion {}

impl MappedRegion {
    /// Maps `region` of the device behind `fd`; fails when the region cannot be mapped
    /// (no MMAP flag, or the kernel refuses).
    pub fn new(fd: &impl AsRawFd, region: RegionInfo) -> io::Result<MappedRegion> {
        if region.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the region cannot be mapped",
            ));
        }
        let len = usize::try_from(region.size)
            .ok()
            .and_then(std::num::NonZeroUsize::new)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty region"))?;
        let offset = libc::off_t::try_from(region.offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "region offset"))?;
        // SAFETY: the descriptor is the device's, open for the call; the kernel picks the
        // address; the mapping is owned by the MappedRegion and unmapped on its drop.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()),
                offset,
            )
        }
        .map_err(io::Error::from)?;
        Ok(MappedRegion {
            ptr: ptr.cast(),
            len: len.get(),
        })
    }

    fn at(&self, off: u64) -> io::Result<*mut u32> {
        match usize::try_from(off) {
            Ok(o) if o % 4 == 0 && o.checked_add(4).is_some_and(|e| e <= self.len) => {
                // SAFETY: `o + 4 <= len`: the pointer stays inside the mapping.
                Ok(unsafe { self.ptr.as_ptr().add(o) }.cast())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("register offset {off:#x} outside the region or unaligned"),
            )),
        }
    }

    /// The 32-bit register at `off`.
    pub fn read32(&self, off: u64) -> io::Result<u32> {
        let p = self.at(off)?;
        // SAFETY: an aligned address inside the mapping (checked by `at`).
        Ok(u32::from_le(unsafe { p.read_volatile() }))
    }

    /// Writes the 32-bit register at `off`.
    pub fn write32(&self, off: u64, v: u32) -> io::Result<()> {
        let p = self.at(off)?;
        // SAFETY: an aligned address inside the mapping (checked by `at`).
        unsafe { p.write_volatile(v.to_le()) };
        Ok(())
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        if let Err(e) = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) } {
            log::warn!("munmap of a device region: {e}");
        }
    }
}

/// `VFIO_DEVICE_SET_IRQS`: routes vectors `start..start + fds.len()` of interrupt `index`
/// to `fds` (with the interrupt enabled, the other vectors keep their routes).
pub fn set_irq_eventfds(
    device: &impl AsRawFd,
    index: u32,
    start: u32,
    fds: &[RawFd],
) -> io::Result<()> {
    let buf = irq_set_eventfds(index, start, fds);
    // SAFETY: `buf` is a `vfio_irq_set` header followed by `fds.len()` descriptors, `argsz`
    // bytes in all, u32-aligned; the kernel only reads it.
    check(unsafe { ioctl_with_ptr(device, VFIO_DEVICE_SET_IRQS(), buf.as_ptr()) }).map(drop)
}

/// `VFIO_DEVICE_SET_IRQS` with no data and count 0: turns interrupt `index` off.
pub fn disable_irqs(device: &File, index: u32) -> io::Result<()> {
    let set = vfio_irq_set {
        argsz: std::mem::size_of::<vfio_irq_set>() as u32,
        flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
        index,
        start: 0,
        count: 0,
        data: Default::default(),
    };
    // SAFETY: the kernel reads `argsz` bytes, the size of `set`.
    check(unsafe { ioctl_with_ref(device, VFIO_DEVICE_SET_IRQS(), &set) }).map(drop)
}

/// The `vfio_irq_set` for [`set_irq_eventfds`], as u32 words.
fn irq_set_eventfds(index: u32, start: u32, fds: &[RawFd]) -> Vec<u32> {
    let header = std::mem::size_of::<vfio_irq_set>() as u32;
    let argsz = header + 4 * fds.len() as u32;
    let mut words = vec![
        argsz,
        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
        index,
        start,
        fds.len() as u32,
    ];
    words.extend(fds.iter().map(|&fd| fd as u32));
    words
}

/// `VFIO_DEVICE_RESET`.
pub fn reset(device: &File) -> io::Result<()> {
    // SAFETY: an ioctl with no argument.
    check(unsafe { ioctl(device, VFIO_DEVICE_RESET()) }).map(drop)
}

/// `VFIO_IOMMU_GET_INFO` on a type1 container: its usable IOVA ranges, `[start, end)`.
/// `None` when the kernel reports none (an old kernel): the caller picks a default.
pub fn iommu_iova_ranges(container: &impl AsRawFd) -> io::Result<Option<Vec<(u64, u64)>>> {
    const BUF: usize = 4096;
    // u64 words: the header and every capability are 8-byte aligned.
    let mut buf = vec![0u64; BUF / 8];
    let hdr = std::mem::size_of::<vfio_iommu_type1_info>();
    // argsz (the buffer's length) in the first u32, flags 0 in the second.
    buf[0] = u64::from(u32::try_from(BUF).unwrap_or(u32::MAX));
    // SAFETY: the kernel writes at most `argsz` (= the buffer's length) bytes.
    check(unsafe { ioctl_with_ptr(container, VFIO_IOMMU_GET_INFO(), buf.as_mut_ptr()) })?;
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let flags = u32::from_ne_bytes(bytes[4..8].try_into().unwrap_or_default());
    let cap_offset = u32::from_ne_bytes(bytes[16..20].try_into().unwrap_or_default());
    if flags & VFIO_IOMMU_INFO_CAPS == 0 || (cap_offset as usize) < hdr {
        return Ok(None);
    }
    parse_iova_ranges(&bytes, cap_offset as usize).map_err(io::Error::other)
}

/// Walks a `VFIO_IOMMU_GET_INFO` capability chain in `buf`, from `first`, for the IOVA
/// range capability. At most 64 capabilities are visited; offsets outside `buf` are errors.
pub fn parse_iova_ranges(buf: &[u8], first: usize) -> Result<Option<Vec<(u64, u64)>>, String> {
    let u16_at = |o: usize| buf.get(o..o + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        buf.get(o..o + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        buf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
    };
    let mut off = first;
    for _ in 0..64 {
        let (Some(id), Some(next)) = (u16_at(off), u32_at(off + 4)) else {
            return Err(format!("IOMMU capability at {off} lies outside the reply"));
        };
        if u32::from(id) == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
            let n = u32_at(off + 8).ok_or("IOVA range capability is truncated")?;
            let mut ranges = Vec::new();
            for i in 0..n as usize {
                let at = off + 16 + 16 * i;
                let (Some(start), Some(end)) = (u64_at(at), u64_at(at + 8)) else {
                    return Err(format!("IOVA range {i} of {n} lies outside the reply"));
                };
                // The kernel's `end` is inclusive.
                if end > start {
                    ranges.push((start, end.saturating_add(1)));
                }
            }
            return Ok(Some(ranges));
        }
        if next == 0 {
            return Ok(None);
        }
        if (next as usize) <= off {
            return Err("IOMMU capability chain loops back".into());
        }
        off = next as usize;
    }
    Err("IOMMU capability chain is too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        // _IO(';', 100 + n) from <linux/vfio.h>.
        assert_eq!(VFIO_GET_API_VERSION(), 0x3b64);
        assert_eq!(VFIO_CHECK_EXTENSION(), 0x3b65);
        assert_eq!(VFIO_SET_IOMMU(), 0x3b66);
        assert_eq!(VFIO_GROUP_GET_STATUS(), 0x3b67);
        assert_eq!(VFIO_GROUP_SET_CONTAINER(), 0x3b68);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD(), 0x3b6a);
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO(), 0x3b6c);
        assert_eq!(VFIO_DEVICE_SET_IRQS(), 0x3b6e);
        assert_eq!(VFIO_DEVICE_RESET(), 0x3b6f);
        assert_eq!(VFIO_IOMMU_GET_INFO(), 0x3b70);
        assert_eq!(VFIO_NOIOMMU_IOMMU, 8);
    }

    #[test]
    fn irq_set_layout() {
        let w = irq_set_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, &[7, 9]);
        assert_eq!(w, vec![28, 0x24, VFIO_PCI_MSIX_IRQ_INDEX, 0, 2, 7, 9]);
        let w = irq_set_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 5, &[7]);
        assert_eq!(w, vec![24, 0x24, VFIO_PCI_MSIX_IRQ_INDEX, 5, 1, 7]);
        assert_eq!(std::mem::size_of::<vfio_irq_set>(), 20);
    }

    fn cap(buf: &mut Vec<u8>, id: u16, next: u32, body: &[u8]) {
        buf.extend_from_slice(&id.to_ne_bytes());
        buf.extend_from_slice(&1u16.to_ne_bytes());
        buf.extend_from_slice(&next.to_ne_bytes());
        buf.extend_from_slice(body);
    }

    #[test]
    fn iova_range_capability_is_found_and_bounded() {
        // Header (24 bytes), a migration capability at 24, the IOVA ranges at 48.
        let mut buf = vec![0u8; 24];
        cap(&mut buf, 2, 48, &[0u8; 16]);
        let mut body = Vec::new();
        body.extend_from_slice(&2u32.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        for (s, e) in [(0u64, 0xfedf_ffffu64), (0xfef0_0000, (1 << 39) - 1)] {
            body.extend_from_slice(&s.to_ne_bytes());
            body.extend_from_slice(&e.to_ne_bytes());
        }
        cap(&mut buf, 1, 0, &body);
        assert_eq!(
            parse_iova_ranges(&buf, 24).unwrap(),
            Some(vec![(0, 0xfee0_0000), (0xfef0_0000, 1 << 39)])
        );
        // No IOVA capability in the chain.
        assert_eq!(
            parse_iova_ranges(&buf[..48], 24).unwrap_err(),
            "IOMMU capability at 48 lies outside the reply"
        );
        let mut lone = vec![0u8; 24];
        cap(&mut lone, 2, 0, &[0u8; 16]);
        assert_eq!(parse_iova_ranges(&lone, 24).unwrap(), None);
        // A loop, and a count that runs past the reply.
        let mut looped = vec![0u8; 24];
        cap(&mut looped, 2, 24, &[0u8; 16]);
        assert!(parse_iova_ranges(&looped, 24)
            .unwrap_err()
            .contains("loops"));
        let mut truncated = vec![0u8; 24];
        cap(&mut truncated, 1, 0, &[9, 0, 0, 0, 0, 0, 0, 0]);
        assert!(parse_iova_ranges(&truncated, 24)
            .unwrap_err()
            .contains("outside the reply"));
    }
}
