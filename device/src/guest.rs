//! Guest memory as the device sees it: the fd-backed regions the VMM maps for DMA
//! (vfio-user DMA_MAP), addressed by IOVA.
//!
//! Mapping goes through `vm-memory`, which gives bounds-checked, volatile access. Behind a
//! virtual IOMMU the VMM maps guest memory one page at a time, each with its own descriptor
//! of the same file: every file is therefore mapped once, in full ([`FileMap`]: one
//! descriptor, one `mmap` and one SIGBUS guard however many pages point into it), and each
//! DMA mapping is a region inside it (the one `unsafe` of this module). Users take a [`Snapshot`]: an immutable
//! view that keeps its mappings alive even if the VMM unmaps them meanwhile, so a command
//! that already started its access can finish it safely. Every mapping is guarded against
//! SIGBUS ([`crate::sigbus`]): if the memory behind it is taken away (its memfd shrunk),
//! an access fails with [`DmaError::Lost`] instead of ending the process.

use smallvec::SmallVec;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap, GuestRegionMmap,
    MmapRegion, VolatileSlice,
};

/// Why a DMA access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    /// Part of the range is not mapped.
    #[error("IOVA range {iova:#x}+{len:#x} is not mapped")]
    NotMapped {
        /// First IOVA.
        iova: u64,
        /// Length.
        len: u64,
    },
    /// The memory behind the range was taken away (its file shrunk: SIGBUS, survived).
    #[error("guest memory at IOVA {iova:#x}+{len:#x} was taken away (its memfd shrunk)")]
    Lost {
        /// First IOVA.
        iova: u64,
        /// Length.
        len: u64,
    },
    /// The range is mapped read-only and the device tried to write it.
    #[error("IOVA range {iova:#x}+{len:#x} is mapped read-only")]
    ReadOnly {
        /// First IOVA.
        iova: u64,
        /// Length.
        len: u64,
    },
}

/// A file the VMM maps DMA memory from, mapped in full once, with its SIGBUS guard.
struct FileMap {
    /// What an executor did to pin the mapping for its device (see [`HostPiece::pin`]),
    /// undone by dropping it while the memory is still mapped: declared first.
    pin: OnceLock<Option<Pin>>,
    /// Mapped with write access.
    writable: bool,
    /// Declared before `mmap`, so that the guard goes before the mapping does.
    _guard: Option<crate::sigbus::Guard>,
    mmap: MmapRegion,
}

/// An executor's pinning of a file mapping (for example its registration with CUDA),
/// released when dropped.
pub type Pin = Box<dyn Send + Sync>;

/// One DMA mapping.
#[derive(Clone)]
struct Mapping {
    iova: u64,
    len: u64,
    writable: bool,
    /// The file mapping it lies in, and where in it.
    file: Arc<FileMap>,
    offset: u64,
}

/// A file's identity and the access it is mapped with.
type FileKey = (u64, u64, bool);

#[derive(Clone, Default)]
struct Map {
    /// Declared before `ranges`: the regions point into the files' mappings.
    mem: Option<GuestMemoryMmap>,
    /// Every mapping, sorted by IOVA.
    ranges: Vec<Mapping>,
}

/// The device's DMA address space.
#[derive(Default)]
pub struct GuestMemory {
    map: RwLock<Arc<Map>>,
    /// Every file mapped, while some mapping lies in it.
    files: std::sync::Mutex<std::collections::HashMap<FileKey, std::sync::Weak<FileMap>>>,
    /// Bumped on every change of the mappings, so that a holder of a [`Snapshot`] can tell
    /// cheaply when to take a new one.
    generation: AtomicU64,
}

/// `len` bytes at `offset` of the file mapping `fm`, as a region of its own.
#[allow(
    unsafe_code,
    reason = "a vm-memory region over part of a mapping this module made and keeps alive"
)]
fn region_in(fm: &FileMap, offset: u64, len: usize, prot: i32) -> std::io::Result<MmapRegion> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "DMA range outside its file",
        )
    };
    let off = usize::try_from(offset).map_err(|_| bad())?;
    if off.checked_add(len).is_none_or(|end| end > fm.mmap.size()) || off % 4096 != 0 {
        return Err(bad());
    }
    // SAFETY: [off, off + len) lies inside `fm`'s mapping (checked just above), made by this
    // module with `prot` (or more) and MAP_SHARED, and page-aligned; the region does not own
    // the memory (build_raw never unmaps), and every Map that holds the region also holds
    // an Arc of `fm`, declared after the region, so the mapping outlives it.
    unsafe { MmapRegion::build_raw(fm.mmap.as_ptr().add(off), len, prot, libc::MAP_SHARED) }
        .map_err(|e| std::io::Error::other(format!("DMA region: {e}")))
}

/// An immutable view of guest memory at one moment.
#[derive(Clone)]
pub struct Snapshot(Arc<Map>);

impl GuestMemory {
    /// An empty address space.
    pub fn new() -> Self {
        Self::default()
    }

    /// The file mapping of `file` (with write access if `writable`): the one already made
    /// for the same file, or a new one of the whole file.
    fn file_map(&self, file: File, writable: bool) -> std::io::Result<Arc<FileMap>> {
        use std::os::unix::fs::MetadataExt;
        let md = file.metadata()?;
        let key = (md.dev(), md.ino(), writable);
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.retain(|_, w| w.strong_count() > 0);
        if let Some(fm) = files.get(&key).and_then(|w| w.upgrade()) {
            return Ok(fm); // `file`, a duplicate descriptor, is closed here
        }
        let len = usize::try_from(md.len())
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| std::io::Error::other("DMA file is empty or too large"))?;
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        let mmap = MmapRegion::build(Some(FileOffset::new(file, 0)), len, prot, libc::MAP_SHARED)
            .map_err(|e| std::io::Error::other(format!("mmap of DMA file failed: {e}")))?;
        let fm = Arc::new(FileMap {
            pin: OnceLock::new(),
            writable,
            _guard: crate::sigbus::protect(mmap.as_ptr() as usize, len),
            mmap,
        });
        files.insert(key, Arc::downgrade(&fm));
        Ok(fm)
    }

    /// Maps `size` bytes of `file` at `offset` for DMA at `iova`.
    pub fn map(
        &self,
        iova: u64,
        size: u64,
        file: File,
        offset: u64,
        writable: bool,
    ) -> std::io::Result<()> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
        if size == 0 || iova.checked_add(size).is_none() {
            return Err(bad("empty or overflowing DMA range"));
        }
        let len = usize::try_from(size).map_err(|_| bad("DMA range too large"))?;
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        let fm = self.file_map(file, writable)?;
        let region = GuestRegionMmap::new(region_in(&fm, offset, len, prot)?, GuestAddress(iova))
            .ok_or_else(|| bad("DMA range overflows"))?;
        let mut guard = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**guard).clone();
        let mem = match &next.mem {
            Some(m) => m.insert_region(Arc::new(region)),
            None => GuestMemoryMmap::from_regions(vec![region]),
        }
        .map_err(|e| {
            bad(&format!(
                "DMA range {iova:#x}+{size:#x} overlaps a mapping: {e}"
            ))
        })?;
        next.mem = Some(mem);
        let at = next.ranges.partition_point(|r| r.iova < iova);
        next.ranges.insert(
            at,
            Mapping {
                iova,
                len: size,
                writable,
                file: fm,
                offset,
            },
        );
        *guard = Arc::new(next);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Unmaps every mapping that lies inside `[iova, iova + size)`. A mapping only partly
    /// inside is an error (and nothing is unmapped).
    pub fn unmap(&self, iova: u64, size: u64) -> std::io::Result<()> {
        let end = iova.saturating_add(size);
        let mut guard = self.map.write().unwrap_or_else(|p| p.into_inner());
        let partial = guard.ranges.iter().any(|r| {
            r.iova < end && r.iova + r.len > iova && (r.iova < iova || r.iova + r.len > end)
        });
        if partial {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "unmap splits a DMA mapping",
            ));
        }
        let mut next = (**guard).clone();
        let gone: Vec<(u64, u64)> = next
            .ranges
            .iter()
            .filter(|r| r.iova >= iova && r.iova + r.len <= end)
            .map(|r| (r.iova, r.len))
            .collect();
        for (a, l) in &gone {
            if let Some(mem) = &next.mem {
                next.mem = match mem.remove_region(GuestAddress(*a), *l) {
                    Ok((m, _)) if m.num_regions() > 0 => Some(m),
                    Ok(_) => None,
                    Err(e) => return Err(std::io::Error::other(format!("unmap failed: {e}"))),
                };
            }
        }
        next.ranges
            .retain(|r| !(r.iova >= iova && r.iova + r.len <= end));
        *guard = Arc::new(next);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Forgets every mapping (on disconnect or reset of the connection).
    pub fn clear(&self) {
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Map::default());
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current generation of the mappings (it changes whenever they do).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current view.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.map.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

impl Snapshot {
    /// True when every byte of `[iova, iova + len)` is mapped (and writable, if asked).
    pub fn covers(&self, iova: u64, len: u64, write: bool) -> bool {
        let Some(end) = iova.checked_add(len) else {
            return false;
        };
        let mut at = iova;
        for r in &self.0.ranges[self.first(iova)..] {
            let (a, l, w) = (r.iova, r.len, r.writable);
            if at >= end || a > at {
                break; // covered, or a hole
            }
            if at < a + l {
                if write && !w {
                    return false;
                }
                at = a + l;
            }
        }
        at >= end
    }

    /// The index of the first mapping that may hold `iova` (ranges are sorted and do not
    /// overlap: the last one starting at or before it).
    fn first(&self, iova: u64) -> usize {
        self.0
            .ranges
            .partition_point(|r| r.iova <= iova)
            .saturating_sub(1)
    }

    fn check(&self, iova: u64, len: u64, write: bool) -> Result<&GuestMemoryMmap, DmaError> {
        let mem = self
            .0
            .mem
            .as_ref()
            .ok_or(DmaError::NotMapped { iova, len })?;
        if !self.covers(iova, len, false) {
            return Err(DmaError::NotMapped { iova, len });
        }
        if write && !self.covers(iova, len, true) {
            return Err(DmaError::ReadOnly { iova, len });
        }
        Ok(mem)
    }

    /// A view of `[iova, iova + len)`, which must be mapped (writable if `write`), by one
    /// mapping or by several adjacent ones (behind an IOMMU with caching mode, mappings
    /// arrive one IOTLB entry, often one 4 KiB page, at a time): repeated accesses through
    /// it skip the lookup of the mappings.
    pub fn view(&self, iova: u64, len: u64, write: bool) -> Result<View<'_>, DmaError> {
        let mem = self.check(iova, len, write)?;
        let not_mapped = DmaError::NotMapped { iova, len };
        let total = usize::try_from(len).map_err(|_| not_mapped)?;
        let end = iova + len; // checked by `check`
        let mut parts = SmallVec::new();
        let mut at = iova;
        for r in &self.0.ranges[self.first(iova)..] {
            let (a, l) = (r.iova, r.len);
            if at >= end {
                break;
            }
            if a <= at && at < a + l {
                let n = (a + l).min(end) - at;
                let slice = mem
                    .get_slice(GuestAddress(at), n as usize)
                    .map_err(|_| not_mapped)?;
                parts.push(((at - iova) as usize, slice));
                at += n;
            }
        }
        Ok(View {
            iova,
            len: total,
            parts,
        })
    }

    /// `[iova, iova + len)`, which must be mapped (writable if `write`), as the pieces
    /// that are contiguous in this process: adjacent mappings at adjacent offsets of one
    /// file make one piece. For executors that hand guest memory to a device of their own
    /// by address (with [`guarded`] around the accesses).
    pub fn host_pieces(
        &self,
        iova: u64,
        len: u64,
        write: bool,
    ) -> Result<SmallVec<[HostPiece; 1]>, DmaError> {
        self.check(iova, len, write)?;
        let end = iova + len; // checked by `check`
        let mut pieces: SmallVec<[HostPiece; 1]> = SmallVec::new();
        let mut at = iova;
        for r in &self.0.ranges[self.first(iova)..] {
            if at >= end {
                break;
            }
            if !(r.iova <= at && at < r.iova + r.len) {
                continue;
            }
            let n = (r.iova + r.len).min(end) - at;
            let file_off = r.offset + (at - r.iova);
            match pieces.last_mut() {
                Some(p) if Arc::ptr_eq(&p.file, &r.file) && p.file_off + p.len == file_off => {
                    p.len += n;
                }
                _ => pieces.push(HostPiece {
                    at: at - iova,
                    file_off,
                    len: n,
                    file: r.file.clone(),
                }),
            }
            at += n;
        }
        if at < end {
            return Err(DmaError::NotMapped { iova, len });
        }
        Ok(pieces)
    }

    /// Copies guest memory at `iova` into `buf`.
    pub fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let mem = self.check(iova, buf.len() as u64, false)?;
        let len = buf.len() as u64;
        guarded(iova, len, || {
            mem.read_slice(buf, GuestAddress(iova))
                .map_err(|_| DmaError::NotMapped { iova, len })
        })
    }

    /// Copies `buf` into guest memory at `iova`.
    pub fn write(&self, iova: u64, buf: &[u8]) -> Result<(), DmaError> {
        let mem = self.check(iova, buf.len() as u64, true)?;
        let len = buf.len() as u64;
        guarded(iova, len, || {
            mem.write_slice(buf, GuestAddress(iova))
                .map_err(|_| DmaError::NotMapped { iova, len })
        })
    }

    /// Atomic load of the naturally aligned `u32` at `iova`.
    pub fn load_u32(&self, iova: u64, order: Ordering) -> Result<u32, DmaError> {
        let mem = self.check(iova, 4, false)?;
        guarded(iova, 4, || {
            mem.load(GuestAddress(iova), order)
                .map_err(|_| DmaError::NotMapped { iova, len: 4 })
        })
    }

    /// Atomic store of the naturally aligned `u32` at `iova`.
    pub fn store_u32(&self, iova: u64, v: u32, order: Ordering) -> Result<(), DmaError> {
        let mem = self.check(iova, 4, true)?;
        guarded(iova, 4, || {
            mem.store(v, GuestAddress(iova), order)
                .map_err(|_| DmaError::NotMapped { iova, len: 4 })
        })
    }
}

/// A piece of guest memory contiguous in this process (see [`Snapshot::host_pieces`]).
/// Its memory stays mapped while the piece lives.
pub struct HostPiece {
    /// Offset of the piece in the range asked for.
    at: u64,
    /// Offset of the piece in its file mapping.
    file_off: u64,
    len: u64,
    file: Arc<FileMap>,
}

impl HostPiece {
    /// Offset of the piece in the range it was asked for.
    pub fn at(&self) -> u64 {
        self.at
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never true: pieces are not empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the piece's first byte in this process, valid for [`len`](Self::len)
    /// bytes while the piece lives. Other processes (the guest) may change the memory at any
    /// time, and it may be taken away (an access then raises SIGBUS, which
    /// [`crate::sigbus`] survives): access it only through a device, within [`guarded`].
    pub fn as_ptr(&self) -> *mut u8 {
        // `file_off + len` lies inside the file mapping (host_pieces built it from mappings
        // that `region_in` checked).
        self.file.mmap.as_ptr().wrapping_add(self.file_off as usize)
    }

    /// Pins the whole file mapping this piece lies in for an executor's device, once:
    /// `pin(address, length, writable)` runs the first time a piece of that mapping asks,
    /// and what it returns is kept until the mapping goes away, when it is dropped while the
    /// memory is still mapped (the mapping goes only when no [`Snapshot`], and so no command, uses it
    /// any more). True when the mapping is pinned; a failed pin (None) is not tried again.
    pub fn pin(&self, pin: impl FnOnce(*mut u8, usize, bool) -> Option<Pin>) -> bool {
        let f = &self.file;
        f.pin
            .get_or_init(|| pin(f.mmap.as_ptr(), f.mmap.size(), f.writable))
            .is_some()
    }
}

/// Runs the access `f` of `[iova, iova + len)` (this module's, or a device's DMA through
/// [`HostPiece::as_ptr`]); it failed if guest memory was taken away under it (a SIGBUS
/// survived meanwhile).
pub fn guarded<T>(
    iova: u64,
    len: u64,
    f: impl FnOnce() -> Result<T, DmaError>,
) -> Result<T, DmaError> {
    crate::sigbus::checked(f, || {
        log::warn!("guest memory at IOVA {iova:#x}+{len:#x} was taken away (SIGBUS survived)");
        DmaError::Lost { iova, len }
    })
}

/// A mapped range of guest memory (see [`Snapshot::view`]), addressed by offset; every
/// access is bounds-checked against the range. A read or write may cross from one mapping
/// into the next; an atomic access must lie in one.
pub struct View<'a> {
    iova: u64,
    len: usize,
    /// The range's pieces, one per mapping it crosses: (offset in the view, memory). One,
    /// usually: inline, so that a view costs no allocation.
    parts: SmallVec<[(usize, VolatileSlice<'a>); 1]>,
}

impl View<'_> {
    fn guarded<T>(
        &self,
        offset: usize,
        len: usize,
        f: impl FnOnce() -> Result<T, DmaError>,
    ) -> Result<T, DmaError> {
        guarded(self.iova.wrapping_add(offset as u64), len as u64, f)
    }

    fn err(&self, offset: usize, len: usize) -> DmaError {
        DmaError::NotMapped {
            iova: self.iova.wrapping_add(offset as u64),
            len: len as u64,
        }
    }

    /// The piece holding byte `offset` and the offset in it.
    fn part(&self, offset: usize) -> Option<(&VolatileSlice<'_>, usize)> {
        let i = self
            .parts
            .partition_point(|(start, _)| *start <= offset)
            .checked_sub(1)?;
        let (start, slice) = &self.parts[i];
        (offset - start < slice.len()).then_some((slice, offset - start))
    }

    /// Runs `step(piece, offset in it, offset in the access, length)` over each piece of
    /// `[offset, offset + len)`.
    fn each_part(
        &self,
        offset: usize,
        len: usize,
        mut step: impl FnMut(&VolatileSlice<'_>, usize, usize, usize) -> Result<(), DmaError>,
    ) -> Result<(), DmaError> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(self.err(offset, len));
        }
        let mut done = 0;
        while done < len {
            let (slice, inner) = self.part(offset + done).ok_or(self.err(offset, len))?;
            let n = (slice.len() - inner).min(len - done);
            step(slice, inner, done, n)?;
            done += n;
        }
        Ok(())
    }

    /// The piece holding all of `[offset, offset + n)`, for an atomic access.
    fn whole(&self, offset: usize, n: usize) -> Result<(&VolatileSlice<'_>, usize), DmaError> {
        match self.part(offset) {
            Some((slice, inner)) if inner + n <= slice.len() => Ok((slice, inner)),
            _ => Err(self.err(offset, n)),
        }
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), DmaError> {
        let n = buf.len();
        self.guarded(offset, n, || {
            self.each_part(offset, n, |slice, inner, done, len| {
                slice
                    .read_slice(&mut buf[done..done + len], inner)
                    .map_err(|_| self.err(offset, n))
            })
        })
    }

    /// Copies `buf` to `offset`.
    pub fn write(&self, offset: usize, buf: &[u8]) -> Result<(), DmaError> {
        let n = buf.len();
        self.guarded(offset, n, || {
            self.each_part(offset, n, |slice, inner, done, len| {
                slice
                    .write_slice(&buf[done..done + len], inner)
                    .map_err(|_| self.err(offset, n))
            })
        })
    }

    /// Atomic load of the naturally aligned `u32` at `offset`.
    pub fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, DmaError> {
        let (slice, inner) = self.whole(offset, 4)?;
        self.guarded(offset, 4, || {
            slice.load(inner, order).map_err(|_| self.err(offset, 4))
        })
    }

    /// Atomic store of the naturally aligned `u32` at `offset`.
    pub fn store_u32(&self, offset: usize, v: u32, order: Ordering) -> Result<(), DmaError> {
        let (slice, inner) = self.whole(offset, 4)?;
        self.guarded(offset, 4, || {
            slice
                .store(v, inner, order)
                .map_err(|_| self.err(offset, 4))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(size: u64) -> File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        f
    }

    #[test]
    fn map_access_unmap() {
        let g = GuestMemory::new();
        g.map(0x10000, 8192, memfd(8192), 0, true).unwrap();
        g.map(0x12000, 4096, memfd(4096), 0, false).unwrap();
        let s = g.snapshot();
        s.write(0x10ffe, &[1, 2, 3, 4]).unwrap();
        let mut b = [0; 4];
        s.read(0x10ffe, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(s.covers(0x10000, 12288, false));
        assert!(!s.covers(0x10000, 12289, false));
        assert_eq!(
            s.write(0x11fff, &[0, 0]),
            Err(DmaError::ReadOnly {
                iova: 0x11fff,
                len: 2
            })
        );
        assert_eq!(
            s.read(0x9000, &mut b),
            Err(DmaError::NotMapped {
                iova: 0x9000,
                len: 4
            })
        );
        s.store_u32(0x10100, 7, Ordering::Release).unwrap();
        assert_eq!(s.load_u32(0x10100, Ordering::Acquire), Ok(7));
        assert!(
            g.map(0x11000, 4096, memfd(4096), 0, true).is_err(),
            "overlap refused"
        );
        assert!(g.unmap(0x10000, 4096).is_err(), "partial unmap refused");
        g.unmap(0x10000, 8192).unwrap();
        assert!(g.snapshot().read(0x10000, &mut b).is_err());
        // The old snapshot still reads its mapping.
        s.read(0x10ffe, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        g.unmap(0, u64::MAX).unwrap();
        assert!(!g.snapshot().covers(0x12000, 1, false));
    }

    /// Behind an IOMMU with caching mode a region arrives as many adjacent mappings, here
    /// one page each of one memfd: a view spans them, reads and writes cross from one into
    /// the next, and atomics work on either side (before, `view` required one mapping).
    #[test]
    fn a_view_spans_adjacent_mappings() {
        let g = GuestMemory::new();
        let file = memfd(4 * 4096);
        for page in 0..4u64 {
            g.map(
                0x80000 + page * 4096,
                4096,
                file.try_clone().unwrap(),
                page * 4096,
                true,
            )
            .unwrap();
        }
        let s = g.snapshot();
        let v = s.view(0x80000, 4 * 4096, true).unwrap();
        let data: Vec<u8> = (0..9000u32).map(|i| i as u8).collect();
        v.write(4000, &data).unwrap(); // crosses three page boundaries
        let mut back = vec![0u8; 9000];
        v.read(4000, &mut back).unwrap();
        assert_eq!(back, data);
        s.read(0x80000 + 4000, &mut back).unwrap();
        assert_eq!(back, data, "the same bytes through the snapshot");
        v.store_u32(4092, 0xabcd, Ordering::Release).unwrap();
        v.store_u32(4096, 0x1234, Ordering::Release).unwrap();
        assert_eq!(v.load_u32(4092, Ordering::Acquire), Ok(0xabcd));
        assert_eq!(v.load_u32(4096, Ordering::Acquire), Ok(0x1234));
        assert!(
            v.load_u32(4094, Ordering::Acquire).is_err(),
            "an atomic across two"
        );
        assert!(v.read(16380, &mut [0; 8]).is_err(), "past the view");
        assert!(v.read(usize::MAX, &mut [0; 2]).is_err(), "overflow");
        g.unmap(0x81000, 4096).unwrap();
        assert!(
            g.snapshot().view(0x80000, 4 * 4096, true).is_err(),
            "a hole is refused"
        );
    }

    /// Host pieces: adjacent mappings at consecutive offsets of one file are one piece,
    /// scattered pages are several; each file mapping is pinned once, and its pin is dropped
    /// only when no mapping and no snapshot holds the file any more.
    #[test]
    fn host_pieces_join_what_is_contiguous_and_pins_last_as_the_mapping() {
        use std::sync::atomic::AtomicUsize;
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let g = GuestMemory::new();
        let file = memfd(8 * 4096);
        // IOVA pages 0..4 at file pages 0..4, then 4..6 at file pages 7 and 5.
        for (page, at) in [(0u64, 0u64), (1, 1), (2, 2), (3, 3), (4, 7), (5, 5)] {
            g.map(
                0x40000 + page * 4096,
                4096,
                file.try_clone().unwrap(),
                at * 4096,
                true,
            )
            .unwrap();
        }
        let s = g.snapshot();
        let p = s.host_pieces(0x40000 + 100, 6 * 4096 - 200, true).unwrap();
        let shape: Vec<(u64, u64)> = p.iter().map(|p| (p.at(), p.len())).collect();
        assert_eq!(
            shape,
            [
                (0, 4 * 4096 - 100),
                (4 * 4096 - 100, 4096),
                (5 * 4096 - 100, 4096 - 100)
            ]
        );
        assert_eq!(
            p[1].as_ptr() as usize - p[0].as_ptr() as usize,
            7 * 4096 - 100,
            "the second piece is file page 7"
        );
        assert!(
            s.host_pieces(0x40000, 7 * 4096, false).is_err(),
            "past the mappings"
        );
        let (pins, drops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        for piece in &p {
            let (n, d) = (pins.clone(), drops.clone());
            assert!(piece.pin(|_, len, writable| {
                assert!(writable);
                assert_eq!(len, 8 * 4096, "the whole file mapping");
                n.fetch_add(1, Ordering::SeqCst);
                Some(Box::new(Counted(d)))
            }));
        }
        assert_eq!(pins.load(Ordering::SeqCst), 1, "pinned once for its file");
        g.unmap(0x40000, 6 * 4096).unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 0, "snapshots still hold it");
        drop((p, s));
        assert_eq!(drops.load(Ordering::SeqCst), 1, "unpinned with the mapping");
    }

    /// A VMM behind a virtual IOMMU maps guest RAM page by page, each page with a descriptor
    /// of its own for the same file: the device keeps one descriptor and one mapping of the
    /// file, not one per page (before, 4,096 pages held 4,096 descriptors, and a guest's
    /// 64 MiB window ran the process out of them).
    #[test]
    fn page_mappings_share_one_mapping_of_their_file() {
        let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let g = GuestMemory::new();
        let file = memfd(4096 * 4096);
        let before = fds();
        for page in 0..4096u64 {
            // Every other page, as scattered guest-physical pages are.
            let offset = (page * 2 % 4096) * 4096 + (page * 2 / 4096) * 4096;
            g.map(
                0x1_0000_0000 + page * 4096,
                4096,
                file.try_clone().unwrap(),
                offset,
                true,
            )
            .unwrap();
        }
        assert!(
            fds() <= before + 2,
            "{} descriptors for 4,096 pages",
            fds() - before
        );
        assert_eq!(g.files.lock().unwrap().len(), 1, "one mapping of the file");
        let s = g.snapshot();
        s.write(0x1_0000_0000 + 4095, &[7, 8]).unwrap();
        let mut b = [0; 2];
        s.read(0x1_0000_0000 + 4095, &mut b).unwrap();
        assert_eq!(b, [7, 8]);
        g.unmap(0x1_0000_0000, 4096 * 4096).unwrap();
        drop(s);
        assert!(
            fds() <= before,
            "the file's descriptor goes with its last mapping"
        );
    }

    #[test]
    fn memory_taken_away_fails_the_access_not_the_process() {
        let g = GuestMemory::new();
        let file = memfd(3 * 4096);
        g.map(0x40000, 3 * 4096, file.try_clone().unwrap(), 0, true)
            .unwrap();
        let s = g.snapshot();
        s.write(0x40000, &[9; 8]).unwrap();
        // Whoever holds the memfd shrinks it to one page: the last two are gone.
        file.set_len(4096).unwrap();
        let mut b = [0u8; 8];
        assert_eq!(
            s.read(0x41000, &mut b),
            Err(DmaError::Lost {
                iova: 0x41000,
                len: 8
            })
        );
        assert!(matches!(
            s.view(0x42000, 4096, true)
                .unwrap()
                .store_u32(0, 1, Ordering::Release),
            Err(DmaError::Lost { .. })
        ));
        // What is still there still works.
        s.read(0x40000, &mut b).unwrap();
        assert_eq!(b, [9; 8]);
    }
}
