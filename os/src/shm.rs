//! Memory shared with another process: [`SharedMemory`], a memfd mapped into this one.
//!
//! Every side of vgpu has such memory. The driver creates memfds (queue regions and DMA
//! windows, on hugetlbfs pages when the size allows and the kernel has them) and maps them
//! itself, for the admin queue it runs and for backings that map DMA by host address; the
//! client core maps the memfds the driver hands it; the test support maps guest RAM. The
//! device (in another process, or behind the IOMMU) reads and writes the same pages while
//! this process runs. Rust references (`&[u8]`, `&mut [u8]`) promise that nobody else
//! changes or observes the memory behind them, which is not true here, so this module never
//! hands them out. Instead a [`SharedMemory`] offers:
//!
//! * [`SharedMemory::load_u32`] / [`SharedMemory::store_u32`]: atomic accesses to naturally
//!   aligned 32-bit words, for the queue control block and the completion publish word
//!   (spec §5.5). Their offsets come from a queue layout checked against the region's size,
//!   so a word outside the mapping or misaligned is a bug: they panic.
//! * [`SharedMemory::read_bytes`] / [`SharedMemory::write_bytes`] / [`SharedMemory::fill`]:
//!   bounds-checked copies between the mapping and ordinary Rust buffers, for entries,
//!   payloads and window data. Their extents often come from outside (an application's
//!   copy, a guest's address), so a copy that does not fit is an error value,
//!   [`OutOfBounds`], for the caller to report.
//! * [`SharedMemory::as_ptr`] / [`SharedMemory::host_addr`]: the raw address, for callers
//!   that hand the memory to foreign code (`cudaMallocHost` returns a pointer into a window)
//!   or map it for DMA by address (VFIO, the page map).
//!
//! Offsets and lengths are `usize` throughout, as in the queue layout, so that the
//! accessors convert nothing; the accessors are `#[inline]`, because the client's queue
//! calls them from another crate on every submission and completion.
//!
//! The memory comes from one of:
//!
//! * [`SharedMemory::new`] / [`SharedMemory::new_huge`]: a fresh zeroed memfd (the driver);
//! * [`SharedMemory::from_file`]: the whole of a file this value then keeps (test support);
//! * [`SharedMemory::map`]: the first bytes of a borrowed descriptor, which is not kept (the
//!   client core: the mapping alone keeps the memory alive, and a process that maps many
//!   windows holds no descriptor for each).
//!
//! A file's size is checked before it is mapped (mapping past the end of a file turns every
//! access there into `SIGBUS`), and the mapping is unmapped on drop.
//!
//! The type is called `SharedMemory` rather than `Mapping` because it is more than the
//! mapping: it can make the memfd, keep it (to pass on, or to map for DMA), and lock its
//! pages; what it always is, is memory this process shares with another.

use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mlock, mmap, munmap, MapFlags, ProtFlags};
use nix::sys::stat::{fstat, SFlag};

/// Huge page size tried for large regions by [`SharedMemory::new`].
pub const HUGE_PAGE: usize = 2 << 20;
/// Page size.
pub const PAGE: usize = 4096;

/// Why shared memory could not be created or mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShmError {
    /// A mapping of zero bytes was asked for, or the file is empty.
    #[error("a mapping must not be empty")]
    Empty,
    /// The size does not fit the address space (or a file offset).
    #[error("{len} bytes of shared memory do not fit the address space")]
    TooLarge {
        /// Bytes asked for.
        len: u64,
    },
    /// `memfd_create` failed.
    #[error("memfd_create failed: {0}")]
    Create(Errno),
    /// Sealing the new memfd against resizing failed.
    #[error("sealing the memfd failed: {0}")]
    Seal(nix::Error),
    /// Sizing the new memfd (`ftruncate`) failed.
    #[error("ftruncate of the memfd failed: {0}")]
    Resize(Errno),
    /// The kernel has no huge pages.
    #[error("this kernel has no huge pages (hugetlbfs)")]
    NoHugePages,
    /// Huge pages could not be mapped (too few are reserved).
    #[error(
        "cannot map {} MiB of huge pages ({errno}): reserve more with \
         `echo N > /proc/sys/vm/nr_hugepages` or hugepages=N at boot",
        bytes >> 20
    )]
    HugePages {
        /// Bytes asked for.
        bytes: usize,
        /// Why `mmap` failed.
        errno: Errno,
    },
    /// `fstat` on the descriptor failed.
    #[error("fstat failed: {0}")]
    Stat(Errno),
    /// The descriptor is not a regular file (a memfd is one).
    #[error("the descriptor is not a regular file (memfd)")]
    NotAFile,
    /// The file is smaller than the mapping would be.
    #[error("the file holds {file} bytes but {want} are needed")]
    TooSmall {
        /// Size of the file.
        file: u64,
        /// Bytes wanted.
        want: u64,
    },
    /// `mmap` failed.
    #[error("mmap failed: {0}")]
    Mmap(Errno),
    /// `mlock` failed.
    #[error("mlock failed: {0}")]
    Lock(Errno),
    /// The descriptor is not open for reading and writing.
    #[error("the descriptor is not open for reading and writing")]
    NotReadWrite,
    /// A range of a file does not start and end on page boundaries.
    #[error("{len} bytes at offset {offset} of the file are not whole pages of {page} bytes")]
    Unaligned {
        /// Offset of the range in the file.
        offset: u64,
        /// Its length.
        len: u64,
        /// The file's page size.
        page: usize,
    },
}

/// A copy that does not fit inside its mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes at offset {offset} do not fit in a mapping of {size} bytes")]
pub struct OutOfBounds {
    /// Offset asked for.
    pub offset: usize,
    /// Length asked for.
    pub len: usize,
    /// Size of the mapping.
    pub size: usize,
}

/// A `MAP_SHARED`, read-write mapping of (the start of) a file, and the file when this
/// value made it or was given it; unmapped on drop.
#[derive(Debug)]
pub struct SharedMemory {
    ptr: NonNull<u8>,
    len: usize,
    file: Option<File>,
    /// Where the mapping starts in the file.
    offset: u64,
    huge: bool,
}

// SAFETY: a SharedMemory owns plain memory and a file (no thread-affine state), and every
// access it offers is either atomic or a copy whose concurrent-access rules are documented
// on the method; sharing the handle between threads adds nothing the other process could
// not already do.
unsafe impl Send for SharedMemory {}
// SAFETY: as above: `&SharedMemory` only permits atomic accesses and copies.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// A zeroed memfd called `name` of at least `len` bytes, rounded up to pages (huge pages
    /// when `len` is at least [`HUGE_PAGE`] and hugetlb memory is available), mapped.
    pub fn new(name: &str, len: usize) -> Result<SharedMemory, ShmError> {
        if len >= HUGE_PAGE {
            if let Ok(m) = Self::create(name, len, HUGE_PAGE, true) {
                return Ok(m);
            }
        }
        Self::create(name, len, PAGE, false)
    }

    /// A zeroed memfd called `name` of at least `len` bytes on huge pages of the system's
    /// default size (rounded up to whole pages), mapped; or an error that says how to
    /// reserve them. For the no-IOMMU mode, where device memory must be physically
    /// contiguous.
    pub fn new_huge(name: &str, len: usize) -> Result<SharedMemory, ShmError> {
        let page = default_huge_page_size().ok_or(ShmError::NoHugePages)?;
        Self::create(name, len, page, true)
    }

    fn create(name: &str, len: usize, page: usize, huge: bool) -> Result<SharedMemory, ShmError> {
        let size = len
            .max(1)
            .checked_next_multiple_of(page)
            .ok_or(ShmError::TooLarge { len: len as u64 })?;
        let mut flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        if huge {
            flags |= MFdFlags::MFD_HUGETLB;
        }
        let fd = memfd_create(name, flags).map_err(ShmError::Create)?;
        let at = i64::try_from(size).map_err(|_| ShmError::TooLarge { len: len as u64 })?;
        nix::unistd::ftruncate(&fd, at).map_err(ShmError::Resize)?;
        // Whoever else gets the memfd (a client, the device model mapping it for DMA) can
        // neither shrink it under the others' mappings (their accesses would fault) nor
        // grow it; the seals themselves are final.
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).map_err(ShmError::Seal)?;
        // The file holds `size` bytes (just set).
        let mut m = Self::mmap(fd.as_fd(), size).map_err(|e| match e {
            ShmError::Mmap(errno) if huge => ShmError::HugePages { bytes: size, errno },
            e => e,
        })?;
        m.file = Some(File::from(fd));
        m.huge = huge;
        Ok(m)
    }

    /// Maps the whole of the regular file (memfd) `file`, shared and read-write, and keeps
    /// the file. Fails if the file is empty.
    pub fn from_file(file: File) -> Result<SharedMemory, ShmError> {
        let size = file_size(file.as_fd())?;
        let len = usize::try_from(size).map_err(|_| ShmError::TooLarge { len: size })?;
        // The file holds `len` bytes (just read).
        let mut m = Self::mmap(file.as_fd(), len)?;
        m.file = Some(file);
        Ok(m)
    }

    /// Maps the first `len` bytes of the regular file (memfd) `fd`, shared and read-write;
    /// the descriptor is not kept. Fails unless the file holds at least `len` bytes.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> Result<SharedMemory, ShmError> {
        if len == 0 {
            return Err(ShmError::Empty);
        }
        let file = file_size(fd)?;
        if file < len as u64 {
            return Err(ShmError::TooSmall {
                file,
                want: len as u64,
            });
        }
        Self::mmap(fd, len)
    }

    /// Maps `len` bytes at `offset` of the regular file `file`, which must be open for
    /// reading and writing, shared and read-write, and keeps the file (for
    /// [`SharedMemory::file_offset`]'s users). `offset` and `len` must be multiples of the
    /// file's page size ([`file_page_size`]), and the file must hold the range.
    pub fn map_range(file: File, offset: u64, len: usize) -> Result<SharedMemory, ShmError> {
        if len == 0 {
            return Err(ShmError::Empty);
        }
        let page = file_page_size(file.as_fd())?;
        if offset % page as u64 != 0 || len % page != 0 {
            return Err(ShmError::Unaligned {
                offset,
                len: len as u64,
                page,
            });
        }
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = fcntl(&file, FcntlArg::F_GETFL).map_err(ShmError::Stat)?;
        if OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE != OFlag::O_RDWR {
            return Err(ShmError::NotReadWrite);
        }
        let size = file_size(file.as_fd())?;
        let want = offset
            .checked_add(len as u64)
            .ok_or(ShmError::TooLarge { len: len as u64 })?;
        if size < want {
            return Err(ShmError::TooSmall { file: size, want });
        }
        // The file holds the range (just checked).
        let mut m = Self::mmap_at(file.as_fd(), offset, len)?;
        m.file = Some(file);
        m.huge = page > PAGE;
        Ok(m)
    }

    /// Maps the first `len` bytes of `fd`, which the caller has checked holds at least
    /// `len` bytes.
    fn mmap(fd: BorrowedFd<'_>, len: usize) -> Result<SharedMemory, ShmError> {
        Self::mmap_at(fd, 0, len)
    }

    /// Maps `len` bytes at `offset` (a multiple of the page size) of `fd`, which the caller
    /// has checked holds them.
    fn mmap_at(fd: BorrowedFd<'_>, offset: u64, len: usize) -> Result<SharedMemory, ShmError> {
        let nz = NonZeroUsize::new(len).ok_or(ShmError::Empty)?;
        let off = i64::try_from(offset).map_err(|_| ShmError::TooLarge { len: offset })?;
        // SAFETY: a fresh mapping at an address the kernel chooses cannot alias any Rust
        // object; the file holds `offset + len` bytes (every caller checked or set its
        // size), so no page of the mapping lies past its end at this point. The memory is
        // only ever accessed through this module's atomic and copying accessors.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                off,
            )
        }
        .map_err(ShmError::Mmap)?;
        Ok(SharedMemory {
            ptr: ptr.cast(),
            len,
            file: None,
            offset,
            huge: false,
        })
    }

    /// Locks the pages in memory (faulting them in), so that they stay where they are while
    /// a device uses them by physical address.
    pub fn lock(&self) -> Result<(), ShmError> {
        // SAFETY: mlock only changes how the kernel treats the pages of this mapping, which
        // is ours and `len` bytes long; it neither reads nor writes the memory.
        unsafe { mlock(self.ptr.cast(), self.len) }.map_err(ShmError::Lock)
    }

    /// Size of the mapping in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: mappings are never empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the memory is on huge pages: made so by [`SharedMemory::new`] or
    /// [`SharedMemory::new_huge`], or a hugetlbfs range given to [`SharedMemory::map_range`].
    pub fn huge(&self) -> bool {
        self.huge
    }

    /// The file, when this value keeps it: made by [`SharedMemory::new`] or
    /// [`SharedMemory::new_huge`], or given to [`SharedMemory::from_file`]; `None` after
    /// [`SharedMemory::map`].
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Where the mapping starts in its file (0 but after [`SharedMemory::map_range`]).
    pub fn file_offset(&self) -> u64 {
        self.offset
    }

    /// The address of the first byte. Valid for [`SharedMemory::len`] bytes while the
    /// mapping lives; the memory may change at any time (another process writes it).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// [`SharedMemory::as_ptr`] as a number, for backings that map DMA by host address and
    /// for page-table lookups.
    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    #[inline]
    fn check(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }

    #[inline]
    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset % 4 == 0 && self.check(offset, 4).is_ok(),
            "shared word at {offset:#x} is misaligned or outside the {}-byte mapping",
            self.len
        );
        // SAFETY: the word lies inside the mapping (checked) and is 4-aligned (the mapping
        // is page-aligned and the offset a multiple of 4); it stays mapped as long as
        // `self`, which bounds the returned lifetime. This module never accesses these
        // words non-atomically, and the other process accesses them atomically too
        // (spec §5.2), so there is no mixed atomic/non-atomic access.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(offset).cast::<u32>()) }
    }

    /// Atomically loads the 32-bit word at `offset` with the given ordering.
    ///
    /// # Panics
    /// If `offset` is not a multiple of 4 or the word is outside the mapping (offsets come
    /// from a layout that was checked against the mapping's size, so this is a bug).
    #[inline]
    pub fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        self.word(offset).load(order)
    }

    /// Atomically stores the 32-bit word at `offset` with the given ordering.
    ///
    /// # Panics
    /// As [`SharedMemory::load_u32`].
    #[inline]
    pub fn store_u32(&self, offset: usize, value: u32, order: Ordering) {
        self.word(offset).store(value, order)
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping.
    ///
    /// The copy is an ordinary memory copy: callers read only bytes the protocol says the
    /// other side is not writing now (a completion after its publish word was loaded with
    /// acquire ordering; window data after the command that wrote it completed). If the
    /// other side breaks that rule, the bytes read may be torn, never anything worse.
    #[inline]
    pub fn read_bytes(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(offset, buf.len())?;
        // SAFETY: the source range lies inside the mapping (checked) and `buf` is a
        // distinct Rust buffer, so the ranges do not overlap. The other process is outside
        // Rust's abstract machine; by the protocol (spec §5.5) it does not write these bytes
        // while we copy them (they were published to us with release/acquire ordering), and
        // even if it did, the result is arbitrary bytes in `buf`, which every caller decodes
        // with validation. A volatile byte loop would give no stronger guarantee here and
        // would be far slower for window-sized copies.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` into the mapping at `offset`.
    ///
    /// The copy is an ordinary memory copy: callers write only bytes the other side is not
    /// reading now (submission slots that are not yet published, window data the device is
    /// not using); the release store that publishes them orders the copy before the other
    /// side's acquire load.
    #[inline]
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.check(offset, data.len())?;
        // SAFETY: the destination range lies inside the mapping (checked), which is mapped
        // writable, and `data` is a distinct Rust buffer, so the ranges do not overlap. No
        // Rust reference to the mapped memory exists (this module hands out none), so the
        // write invalidates nothing; the other side reads these bytes only after the
        // publishing release store (spec §5.5).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len())
        };
        Ok(())
    }

    /// Fills `len` bytes at `offset` with `value` (same rules as
    /// [`SharedMemory::write_bytes`]).
    #[inline]
    pub fn fill(&self, offset: usize, len: usize, value: u8) -> Result<(), OutOfBounds> {
        self.check(offset, len)?;
        // SAFETY: as in `write_bytes`: the range is inside the writable mapping and no Rust
        // reference to it exists.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(offset), value, len) };
        Ok(())
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping created by `SharedMemory::mmap` and never
        // unmapped before; no reference into it outlives `self` (the accessors borrow
        // `self`), so nothing uses the pages after this.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            log::warn!("munmap of {} bytes failed: {e}", self.len);
        }
    }
}

/// The size of the pages of the file `fd`: the huge page size for a file of hugetlbfs (a
/// memfd made with `MFD_HUGETLB` included), else [`PAGE`]. Mappings of the file start and
/// end on such pages.
pub fn file_page_size(fd: BorrowedFd<'_>) -> Result<usize, ShmError> {
    use nix::sys::statfs::{fstatfs, HUGETLBFS_MAGIC};
    let fs = fstatfs(fd).map_err(ShmError::Stat)?;
    if fs.filesystem_type() != HUGETLBFS_MAGIC {
        return Ok(PAGE);
    }
    let st = fstat(fd).map_err(ShmError::Stat)?;
    usize::try_from(st.st_blksize)
        .ok()
        .filter(|p| p.is_power_of_two() && *p >= PAGE)
        .ok_or(ShmError::NotAFile)
}

/// The size of the regular file `fd`.
fn file_size(fd: BorrowedFd<'_>) -> Result<u64, ShmError> {
    let st = fstat(fd).map_err(ShmError::Stat)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(ShmError::NotAFile);
    }
    Ok(u64::try_from(st.st_size).unwrap_or(0))
}

/// The system's default huge page size (`Hugepagesize` in `/proc/meminfo`), if any.
pub fn default_huge_page_size() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_huge_page_size(&info)
}

fn parse_huge_page_size(meminfo: &str) -> Option<usize> {
    let line = meminfo.lines().find(|l| l.starts_with("Hugepagesize:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024).filter(|&b| b > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(len: i64) -> std::os::fd::OwnedFd {
        let fd = memfd_create("shm-test", MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, len).unwrap();
        fd
    }

    #[test]
    fn new_rounds_to_pages_and_keeps_its_file() {
        let m = SharedMemory::new("t", 100).unwrap();
        assert_eq!(m.len(), PAGE);
        assert!(!m.huge());
        assert_eq!(m.file().unwrap().metadata().unwrap().len(), PAGE as u64);
        m.write_bytes(10, &[1, 2, 3]).unwrap();
        let mut b = [0; 3];
        m.read_bytes(10, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3]);
        assert_eq!(
            m.write_bytes(4095, &[0, 0]),
            Err(OutOfBounds {
                offset: 4095,
                len: 2,
                size: 4096
            })
        );
        m.store_u32(8, 7, Ordering::Release);
        assert_eq!(m.load_u32(8, Ordering::Acquire), 7);
        // The file it keeps maps to the same memory.
        let again = SharedMemory::map(m.file().unwrap().as_fd(), PAGE).unwrap();
        assert_eq!(again.load_u32(8, Ordering::Acquire), 7);
        assert!(again.file().is_none());
    }

    #[test]
    fn from_file_maps_the_whole_file() {
        let m = SharedMemory::from_file(File::from(memfd(8192))).unwrap();
        assert_eq!(m.len(), 8192);
        assert!(m.file().is_some());
        assert_eq!(
            SharedMemory::from_file(File::from(memfd(0))).unwrap_err(),
            ShmError::Empty
        );
    }

    #[test]
    fn words_and_bytes_are_bounds_checked() {
        let fd = memfd(8192);
        let m = SharedMemory::map(fd.as_fd(), 8192).unwrap();
        m.store_u32(4, 0xdead_beef, Ordering::Release);
        assert_eq!(m.load_u32(4, Ordering::Acquire), 0xdead_beef);
        let mut b = [0u8; 4];
        m.read_bytes(4, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xdead_beef);
        m.write_bytes(8190, &[1, 2]).unwrap();
        assert!(m.write_bytes(8191, &[1, 2]).is_err());
        assert!(m.read_bytes(usize::MAX, &mut b).is_err());
        assert!(m.fill(8000, 193, 0).is_err());
        // A second mapping of the same file sees the same bytes.
        let m2 = SharedMemory::map(fd.as_fd(), 4096).unwrap();
        assert_eq!(m2.load_u32(4, Ordering::Acquire), 0xdead_beef);
    }

    #[test]
    #[should_panic(expected = "misaligned")]
    fn misaligned_word_panics() {
        let fd = memfd(4096);
        let m = SharedMemory::map(fd.as_fd(), 4096).unwrap();
        m.load_u32(2, Ordering::Relaxed);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn word_outside_panics() {
        let m = SharedMemory::new("t", 4096).unwrap();
        m.load_u32(4096, Ordering::Relaxed);
    }

    #[test]
    fn short_files_and_non_files_are_refused() {
        let fd = memfd(100);
        assert_eq!(
            SharedMemory::map(fd.as_fd(), 4096).unwrap_err(),
            ShmError::TooSmall {
                file: 100,
                want: 4096
            }
        );
        assert_eq!(
            SharedMemory::map(fd.as_fd(), 0).unwrap_err(),
            ShmError::Empty
        );
        let dir = File::open("/").unwrap();
        assert_eq!(
            SharedMemory::map(dir.as_fd(), 4096).unwrap_err(),
            ShmError::NotAFile
        );
        assert_eq!(
            SharedMemory::from_file(dir).unwrap_err(),
            ShmError::NotAFile
        );
    }

    #[test]
    fn huge_page_size_from_meminfo() {
        let info = "MemTotal: 1 kB\nHugepagesize:       2048 kB\nHugetlb: 0 kB\n";
        assert_eq!(parse_huge_page_size(info), Some(2 << 20));
        assert_eq!(
            parse_huge_page_size("Hugepagesize: 1048576 kB"),
            Some(1 << 30)
        );
        assert_eq!(parse_huge_page_size("Hugepagesize: 0 kB"), None);
        assert_eq!(parse_huge_page_size("MemTotal: 1 kB"), None);
    }
}
