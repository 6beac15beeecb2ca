//! Physical addresses of this process's memory, for the no-IOMMU mode: with no IOMMU the
//! device reaches memory by physical address, so the driver reads each page's frame from
//! `/proc/self/pagemap` (which shows frames only with CAP_SYS_ADMIN) and hands the device
//! memory only when its pages are present, locked and physically contiguous.
//!
//! Memory for this mode comes from hugetlbfs: huge pages are neither swapped nor moved by
//! compaction, and each is physically contiguous. A range larger than one huge page is
//! contiguous only when the kernel happened to give adjacent pages, which 1 GiB pages make
//! likely and 2 MiB pages do not; the check here refuses what is not.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The granularity of `/proc/self/pagemap`.
const PAGE: u64 = 4096;
const PRESENT: u64 = 1 << 63;
const PFN_MASK: u64 = (1 << 55) - 1;

/// Why a range cannot be given to the device by physical address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PhysError {
    /// A page is not in memory.
    #[error("page at offset {0:#x} is not present (the memory must be locked first)")]
    NotPresent(u64),
    /// Frames read as zero: the process may not see physical addresses.
    #[error("/proc/self/pagemap shows no frame numbers: no-IOMMU mode needs CAP_SYS_ADMIN")]
    Hidden,
    /// Two pages are not adjacent in physical memory.
    #[error("memory is not physically contiguous at offset {0:#x} (use 1 GiB huge pages, or windows of one huge page)")]
    NotContiguous(u64),
    /// Reading pagemap failed.
    #[error("reading /proc/self/pagemap: {0}")]
    Io(String),
}

/// Reads the pagemap entries of `[addr, addr + len)` (page-aligned) in this process.
pub fn pagemap(addr: u64, len: u64) -> Result<Vec<u64>, PhysError> {
    let io = |e: io::Error| PhysError::Io(e.to_string());
    let f = File::open("/proc/self/pagemap").map_err(io)?;
    let pages =
        usize::try_from(len.div_ceil(PAGE)).map_err(|_| PhysError::Io("range too large".into()))?;
    let mut raw = vec![0u8; pages * 8];
    f.read_exact_at(&mut raw, addr / PAGE * 8).map_err(io)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

/// The physical address where `entries` (pagemap entries of consecutive pages, from
/// [`pagemap`]) begin, if the pages are present and physically contiguous.
pub fn contiguous_base(entries: &[u64]) -> Result<u64, PhysError> {
    let mut base = None;
    for (i, &e) in entries.iter().enumerate() {
        let off = i as u64 * PAGE;
        if e & PRESENT == 0 {
            return Err(PhysError::NotPresent(off));
        }
        let pfn = e & PFN_MASK;
        if pfn == 0 {
            return Err(PhysError::Hidden);
        }
        match base {
            None => base = Some(pfn),
            Some(b) if pfn != b + i as u64 => return Err(PhysError::NotContiguous(off)),
            Some(_) => {}
        }
    }
    base.map(|pfn| pfn * PAGE)
        .ok_or(PhysError::Io("empty range".into()))
}

/// The physical address of `[addr, addr + len)`, which must be present (locked) and
/// physically contiguous.
pub fn physical_base(addr: u64, len: u64) -> Result<u64, PhysError> {
    contiguous_base(&pagemap(addr, len)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu_os::shm::SharedMemory;

    const P: u64 = PRESENT;

    #[test]
    fn contiguity_rules() {
        assert_eq!(
            contiguous_base(&[P | 0x100, P | 0x101, P | 0x102]),
            Ok(0x100_000)
        );
        assert_eq!(
            contiguous_base(&[P | 0x100, P | 0x102]),
            Err(PhysError::NotContiguous(0x1000))
        );
        assert_eq!(
            contiguous_base(&[P | 0x100, 0x101]),
            Err(PhysError::NotPresent(0x1000))
        );
        assert_eq!(contiguous_base(&[P, P]), Err(PhysError::Hidden));
        // Bits above the frame number (soft-dirty, exclusive, file) do not count.
        assert_eq!(
            contiguous_base(&[P | (1 << 55) | (1 << 61) | 0x7]),
            Ok(0x7000)
        );
        assert!(contiguous_base(&[]).is_err());
    }

    #[test]
    fn locked_memory_has_frames_as_root() {
        let r = SharedMemory::new("physmem-test", 3 * PAGE as usize).unwrap();
        r.lock().unwrap();
        let entries = pagemap(r.host_addr(), r.len() as u64).unwrap();
        assert_eq!(entries.len(), 3);
        assert!(entries.iter().all(|e| e & PRESENT != 0), "{entries:x?}");
        let root = nix::unistd::geteuid().is_root();
        match contiguous_base(&entries[..1]) {
            Ok(pa) => {
                assert!(root);
                assert_ne!(pa, 0);
            }
            Err(e) => {
                assert!(!root);
                assert_eq!(e, PhysError::Hidden);
            }
        }
    }
}
