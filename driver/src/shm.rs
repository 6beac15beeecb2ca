//! Shared memory the driver hands out: memfd-backed regions (on hugetlbfs pages when the
//! size allows and the kernel has them), mapped into the driver for the queues it runs
//! itself and for backings that need a host address to map DMA.
//!
//! This module holds most of the driver's `unsafe`: the `mmap`/`munmap` pair, `mlock`, the
//! atomic and byte accesses to the mapping, `poll`, and adopting received descriptors (the
//! rest is in [`crate::vfio_raw`] and [`crate::kernel_vfio`]).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Huge page size tried for large regions.
pub const HUGE_PAGE: u64 = 2 << 20;
/// Page size.
pub const PAGE: u64 = 4096;

/// A memfd and its mapping in this process.
pub struct ShmRegion {
    file: File,
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: the mapping is plain shared memory; every access goes through atomics or
// byte copies whose bounds are checked, so it may be used from any thread.
unsafe impl Send for ShmRegion {}
// SAFETY: as above; no method hands out references into the mapping.
unsafe impl Sync for ShmRegion {}

fn memfd(name: &str, huge: bool) -> std::io::Result<File> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let mut flags = MFdFlags::MFD_CLOEXEC;
    if huge {
        flags |= MFdFlags::MFD_HUGETLB;
    }
    let fd = memfd_create(name, flags).map_err(std::io::Error::from)?;
    Ok(File::from(fd))
}

impl ShmRegion {
    /// A zeroed region of at least `len` bytes, rounded up to pages (huge pages when `len`
    /// is at least one huge page and hugetlb memory is available).
    pub fn new(name: &str, len: u64) -> std::io::Result<ShmRegion> {
        if len >= HUGE_PAGE {
            let size = len.next_multiple_of(HUGE_PAGE);
            if let Ok(f) = memfd(name, true) {
                if f.set_len(size).is_ok() {
                    if let Ok(r) = Self::map(f, size, true) {
                        return Ok(r);
                    }
                }
            }
        }
        let size = len.max(1).next_multiple_of(PAGE);
        let f = memfd(name, false)?;
        f.set_len(size)?;
        Self::map(f, size, false)
    }

    /// A zeroed region of at least `len` bytes on huge pages of the system's default size
    /// (rounded up to whole pages), or an error naming how to reserve them. For the
    /// no-IOMMU mode, where device memory must be physically contiguous.
    pub fn new_huge(name: &str, len: u64) -> std::io::Result<ShmRegion> {
        let page = default_huge_page_size()
            .ok_or_else(|| std::io::Error::other("this kernel has no huge pages (hugetlbfs)"))?;
        let size = len.max(1).next_multiple_of(page);
        let f = memfd(name, true)?;
        f.set_len(size)?;
        Self::map(f, size, true).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot map {} MiB of huge pages ({e}): reserve more with \
                     `echo N > /proc/sys/vm/nr_hugepages` or hugepages=N at boot",
                    size >> 20
                ),
            )
        })
    }

    /// Locks the region's pages in memory (faulting them in), so that they stay where they
    /// are while a device uses them by physical address.
    pub fn lock(&self) -> std::io::Result<()> {
        // SAFETY: mlock only changes how the kernel treats the pages of this mapping, which
        // is ours and `len` bytes long; it neither reads nor writes the memory.
        let r = unsafe { libc::mlock(self.ptr.as_ptr().cast(), self.len) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Maps an existing memfd (one received from the driver) in full.
    pub fn from_file(file: File) -> std::io::Result<ShmRegion> {
        let size = file.metadata()?.len();
        if size == 0 {
            return Err(std::io::Error::other("empty shared-memory file"));
        }
        Self::map(file, size, false)
    }

    fn map(file: File, size: u64, huge: bool) -> std::io::Result<ShmRegion> {
        let len = usize::try_from(size).map_err(|_| std::io::Error::other("region too large"))?;
        // SAFETY: a fresh shared mapping of a file we own, of its full length; the kernel picks
        // the address. The mapping lives until Drop unmaps it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(ShmRegion {
            file,
            ptr,
            len,
            huge,
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// True when empty (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when backed by huge pages.
    pub fn huge(&self) -> bool {
        self.huge
    }

    /// The memfd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The memfd as a file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Host address of the mapping (for backings that map DMA by address).
    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn check(&self, off: u64, n: usize) -> Option<usize> {
        let off = usize::try_from(off).ok()?;
        (off.checked_add(n)? <= self.len).then_some(off)
    }

    fn atomic(&self, off: u64) -> Option<&AtomicU32> {
        let off = self.check(off, 4).filter(|o| o % 4 == 0)?;
        // SAFETY: in bounds and 4-byte aligned (the mapping is page aligned); AtomicU32 has the
        // layout of u32, and shared memory is only ever accessed atomically at these offsets.
        Some(unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU32>() })
    }

    /// Atomic load of the `u32` at `off` (0 when out of bounds or misaligned).
    pub fn load_u32(&self, off: u64, order: Ordering) -> u32 {
        self.atomic(off).map_or(0, |a| a.load(order))
    }

    /// Atomic store of the `u32` at `off` (ignored when out of bounds or misaligned).
    pub fn store_u32(&self, off: u64, v: u32, order: Ordering) {
        if let Some(a) = self.atomic(off) {
            a.store(v, order)
        }
    }

    /// Copies `data` to `off`; false when out of bounds.
    pub fn write(&self, off: u64, data: &[u8]) -> bool {
        let Some(off) = self.check(off, data.len()) else {
            return false;
        };
        let base = self.ptr.as_ptr();
        for (i, b) in data.iter().enumerate() {
            // SAFETY: `off + i` is inside the mapping (checked above). The memory is shared
            // with another process and with the device, so it is only touched through
            // volatile (or atomic) accesses to raw pointers, never through references.
            unsafe { base.add(off + i).write_volatile(*b) };
        }
        true
    }

    /// Copies from `off` into `buf`; false when out of bounds.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> bool {
        let Some(off) = self.check(off, buf.len()) else {
            return false;
        };
        let base = self.ptr.as_ptr();
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: as in `write`, with the source inside the mapping.
            *b = unsafe { base.add(off + i).read_volatile() };
        }
        true
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, which nothing references any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The system's default huge page size (`Hugepagesize` in `/proc/meminfo`), if any.
pub fn default_huge_page_size() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_huge_page_size(&info)
}

fn parse_huge_page_size(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("Hugepagesize:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    (kb > 0).then_some(kb << 10)
}

/// Waits until one of `fds` is readable (or hung up) or `timeout` passes; returns the index
/// of the first ready one.
pub fn wait_readable(fds: &[std::os::fd::RawFd], timeout: std::time::Duration) -> Option<usize> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `pfds` is a valid array of pollfd for the duration of the call.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return None;
    }
    pfds.iter().position(|p| p.revents != 0)
}

/// Takes ownership of descriptors received with SCM_RIGHTS.
pub fn own_fds(raw: Vec<std::os::fd::RawFd>) -> Vec<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    raw.into_iter()
        // SAFETY: the kernel installed these descriptors in this process for this message;
        // nothing else owns them, so each is wrapped exactly once and closed on drop.
        .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let r = ShmRegion::new("t", 100).unwrap();
        assert_eq!(r.len(), 4096);
        assert!(r.write(10, &[1, 2, 3]));
        let mut b = [0; 3];
        assert!(r.read(10, &mut b));
        assert_eq!(b, [1, 2, 3]);
        assert!(!r.write(4095, &[0, 0]));
        r.store_u32(8, 7, Ordering::Release);
        assert_eq!(r.load_u32(8, Ordering::Acquire), 7);
        assert_eq!(r.load_u32(9, Ordering::Acquire), 0, "misaligned");
        assert_eq!(r.load_u32(4096, Ordering::Acquire), 0, "out of bounds");
    }

    #[test]
    fn huge_page_size_from_meminfo() {
        let info = "MemTotal: 1 kB\nHugepagesize:       2048 kB\nHugetlb: 0 kB\n";
        assert_eq!(parse_huge_page_size(info), Some(2 << 20));
        assert_eq!(
            parse_huge_page_size("Hugepagesize: 1048576 kB"),
            Some(1 << 30)
        );
        assert_eq!(parse_huge_page_size("MemTotal: 1 kB"), None);
    }
}
