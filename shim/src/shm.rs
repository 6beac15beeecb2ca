//! Memory shared with another process: the queue region and the DMA windows.
//!
//! The driver hands the client memfds; the client maps them `MAP_SHARED`, and the device (in
//! another process, or behind the IOMMU) reads and writes the same pages while the client
//! runs. Rust references (`&[u8]`, `&mut [u8]`) promise that nobody else changes or
//! observes the memory behind them, which is not true here, so this module never hands
//! them out. Instead a [`Mapping`] offers:
//!
//! * [`Mapping::load_u32`] / [`Mapping::store_u32`]: atomic accesses to naturally aligned
//!   32-bit words, for the queue control block and the completion publish word (spec §5.5);
//! * [`Mapping::read_bytes`] / [`Mapping::write_bytes`]: bounds-checked copies between the
//!   mapping and ordinary Rust buffers, for entries, payloads and window data;
//! * [`Mapping::as_ptr`]: the raw address, for callers that hand the memory to foreign code
//!   (`cudaMallocHost` returns a pointer into a window).
//!
//! The mapping is created from a descriptor whose size is checked first (mapping past the
//! end of a file turns every access there into `SIGBUS`), and unmapped on drop.
//!
//! This module and the descriptor adoption in `client::control` are the only places in the
//! crate allowed to use `unsafe`.

use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::stat::{fstat, SFlag};

/// Why a descriptor could not be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A mapping of zero bytes was asked for.
    #[error("a mapping must not be empty")]
    Empty,
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

/// A `MAP_SHARED`, read-write mapping of (the start of) a file, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping owns plain memory (no thread-affine state), and every access it offers
// is either atomic or a copy whose concurrent-access rules are documented on the method;
// sharing the handle between threads adds nothing the other process could not already do.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only permits atomic accesses and copies.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of the regular file (memfd) `fd`, shared and read-write.
    /// Fails unless the file holds at least `len` bytes.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> Result<Mapping, MapError> {
        let nz = NonZeroUsize::new(len).ok_or(MapError::Empty)?;
        let st = fstat(fd).map_err(MapError::Stat)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(MapError::NotAFile);
        }
        let file = u64::try_from(st.st_size).unwrap_or(0);
        if file < len as u64 {
            return Err(MapError::TooSmall {
                file,
                want: len as u64,
            });
        }
        // SAFETY: a fresh mapping at an address the kernel chooses cannot alias any Rust
        // object; the file is at least `len` bytes long (checked above), so no page of the
        // mapping lies past its end at this point. The memory is only ever accessed through
        // this module's atomic and copying accessors.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(MapError::Mmap)?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: mappings are never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the first byte. Valid for [`Mapping::len`] bytes while the mapping
    /// lives; the memory may change at any time (another process writes it).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

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
    pub fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        self.word(offset).load(order)
    }

    /// Atomically stores the 32-bit word at `offset` with the given ordering.
    ///
    /// # Panics
    /// As [`Mapping::load_u32`].
    pub fn store_u32(&self, offset: usize, value: u32, order: Ordering) {
        self.word(offset).store(value, order)
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping.
    ///
    /// The copy is an ordinary memory copy: callers read only bytes the protocol says the
    /// other side is not writing now (a completion after its publish word was loaded with
    /// acquire ordering; window data after the command that wrote it completed). If the
    /// other side breaks that rule, the bytes read may be torn, never anything worse.
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

    /// Fills `len` bytes at `offset` with `value` (same rules as [`Mapping::write_bytes`]).
    pub fn fill(&self, offset: usize, len: usize, value: u8) -> Result<(), OutOfBounds> {
        self.check(offset, len)?;
        // SAFETY: as in `write_bytes`: the range is inside the writable mapping and no Rust
        // reference to it exists.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(offset), value, len) };
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping created by `Mapping::map` and never
        // unmapped before; no reference into it outlives `self` (the accessors borrow
        // `self`), so nothing uses the pages after this.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            log::warn!("munmap of {} bytes failed: {e}", self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use nix::unistd::ftruncate;
    use std::os::fd::AsFd;

    fn memfd(len: i64) -> std::os::fd::OwnedFd {
        let fd = memfd_create("shm-test", MFdFlags::MFD_CLOEXEC).unwrap();
        ftruncate(&fd, len).unwrap();
        fd
    }

    #[test]
    fn words_and_bytes_are_bounds_checked() {
        let fd = memfd(8192);
        let m = Mapping::map(fd.as_fd(), 8192).unwrap();
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
        let m2 = Mapping::map(fd.as_fd(), 4096).unwrap();
        assert_eq!(m2.load_u32(4, Ordering::Acquire), 0xdead_beef);
    }

    #[test]
    #[should_panic(expected = "misaligned")]
    fn misaligned_word_panics() {
        let fd = memfd(4096);
        let m = Mapping::map(fd.as_fd(), 4096).unwrap();
        m.load_u32(2, Ordering::Relaxed);
    }

    #[test]
    fn short_files_and_non_files_are_refused() {
        let fd = memfd(100);
        assert_eq!(
            Mapping::map(fd.as_fd(), 4096).unwrap_err(),
            MapError::TooSmall {
                file: 100,
                want: 4096
            }
        );
        assert_eq!(Mapping::map(fd.as_fd(), 0).unwrap_err(), MapError::Empty);
        let ev = nix::sys::eventfd::EventFd::new().unwrap();
        assert_eq!(
            Mapping::map(ev.as_fd(), 4096).unwrap_err(),
            MapError::NotAFile
        );
    }
}
