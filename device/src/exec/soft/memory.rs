//! Device memory of one soft context: allocations in host RAM, each a separate buffer, in a
//! per-context address space. Every access is checked to lie inside one live allocation.
//! Every context draws on one [`Pool`] per device, the memory the device advertises, so
//! that all PDs together commit no more host RAM than that, whatever their quotas.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vgpu_proto::Status;

/// The device memory all contexts of a soft device share.
#[derive(Debug)]
pub struct Pool {
    total: u64,
    used: AtomicU64,
}

impl Pool {
    /// A pool of `total` bytes.
    pub fn new(total: u64) -> Arc<Pool> {
        Arc::new(Pool {
            total,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes of the device.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes not allocated by any context.
    pub fn free(&self) -> u64 {
        self.total.saturating_sub(self.used.load(Ordering::Acquire))
    }

    fn take(&self, n: u64) -> Result<(), Status> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= self.total)
            })
            .map(drop)
            .map_err(|_| Status::OUT_OF_MEMORY)
    }

    fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// First device address handed out (an arbitrary, recognisable value; never 0).
const BASE: u64 = 0x7f00_0000_0000;
/// Allocation alignment (CUDA guarantees 256 bytes).
pub const ALIGN: u64 = 256;

/// The allocations of one context.
pub struct Memory {
    allocs: BTreeMap<u64, Vec<u8>>,
    next: u64,
    used: u64,
    quota: u64,
    pool: Arc<Pool>,
}

impl Memory {
    /// Empty memory with a quota, drawing on `pool`.
    pub fn new(quota: u64, pool: Arc<Pool>) -> Self {
        Memory {
            allocs: BTreeMap::new(),
            next: BASE,
            used: 0,
            quota,
            pool,
        }
    }

    /// Changes the quota (existing allocations are kept).
    pub fn set_quota(&mut self, quota: u64) {
        self.quota = quota;
    }

    /// (free, total) in the context's view: free is what the quota leaves, or what the
    /// device has left if that is less.
    pub fn info(&self) -> (u64, u64) {
        let free = self.quota.saturating_sub(self.used).min(self.pool.free());
        (free, self.quota)
    }

    /// Bytes allocated and the number of allocations.
    pub fn usage(&self) -> (u64, u32) {
        (self.used, self.allocs.len() as u32)
    }

    /// Allocates `size` bytes; addresses are never reused within a context.
    pub fn alloc(&mut self, size: u64) -> Result<u64, Status> {
        let rounded = size
            .checked_next_multiple_of(ALIGN)
            .ok_or(Status::OUT_OF_MEMORY)?;
        if size == 0 || self.used.saturating_add(rounded) > self.quota {
            return Err(Status::OUT_OF_MEMORY);
        }
        let len = usize::try_from(size).map_err(|_| Status::OUT_OF_MEMORY)?;
        let next = self
            .next
            .checked_add(rounded + ALIGN)
            .ok_or(Status::OUT_OF_MEMORY)?;
        self.pool.take(rounded)?;
        let mut buf = Vec::new();
        if buf.try_reserve_exact(len).is_err() {
            self.pool.give(rounded);
            return Err(Status::OUT_OF_MEMORY);
        }
        buf.resize(len, 0);
        let addr = self.next;
        // Leave a gap of one alignment unit so that an access one past the end of an
        // allocation never lands in the next one.
        self.next = next;
        self.allocs.insert(addr, buf);
        self.used += rounded;
        Ok(addr)
    }

    /// Frees the allocation that starts at `addr`.
    pub fn free(&mut self, addr: u64) -> Result<(), Status> {
        let buf = self.allocs.remove(&addr).ok_or(Status::INVALID_VALUE)?;
        let rounded = (buf.len() as u64).next_multiple_of(ALIGN);
        self.used -= rounded;
        self.pool.give(rounded);
        Ok(())
    }

    /// Frees everything.
    pub fn clear(&mut self) {
        self.allocs.clear();
        self.pool.give(self.used);
        self.used = 0;
    }

    /// (base, size) of the allocation containing `addr`.
    pub fn range_of(&self, addr: u64) -> Option<(u64, u64)> {
        let (&base, buf) = self.allocs.range(..=addr).next_back()?;
        (addr - base < buf.len() as u64).then_some((base, buf.len() as u64))
    }

    fn locate(&self, addr: u64, len: u64) -> Result<(u64, usize), Status> {
        let (&base, buf) = self
            .allocs
            .range(..=addr)
            .next_back()
            .ok_or(Status::INVALID_VALUE)?;
        let off = addr - base;
        match off.checked_add(len) {
            Some(end) if end <= buf.len() as u64 => Ok((base, off as usize)),
            _ => Err(Status::INVALID_VALUE),
        }
    }

    /// Each allocation as (device address, host address, bytes), for a view of the memory
    /// that borrows it whole (a kernel's `vgpu_ptx_jit::DirectMemory`).
    pub fn allocations(&mut self) -> Vec<(u64, *mut u8, usize)> {
        self.allocs
            .iter_mut()
            .map(|(&base, buf)| (base, buf.as_mut_ptr(), buf.len()))
            .collect()
    }

    /// The bytes `[addr, addr + len)`, inside one allocation.
    pub fn slice(&self, addr: u64, len: u64) -> Result<&[u8], Status> {
        let (base, off) = self.locate(addr, len)?;
        Ok(&self.allocs[&base][off..off + len as usize])
    }

    /// The bytes `[addr, addr + len)` for writing, inside one allocation.
    pub fn slice_mut(&mut self, addr: u64, len: u64) -> Result<&mut [u8], Status> {
        let (base, off) = self.locate(addr, len)?;
        let buf = self.allocs.get_mut(&base).ok_or(Status::INVALID_VALUE)?;
        Ok(&mut buf[off..off + len as usize])
    }

    /// Reads `size` bytes (at most 8, little-endian) at each of `addrs` into `out`; on the
    /// first address outside every allocation, its index. Consecutive addresses in one
    /// allocation (a warp's accesses, usually) take one lookup.
    pub fn read_many(&self, addrs: &[u64], size: u32, out: &mut [u64]) -> Result<(), usize> {
        let n = size.min(8) as usize;
        let mut cur: Option<(u64, &[u8])> = None;
        for (k, (&a, o)) in addrs.iter().zip(out.iter_mut()).enumerate() {
            let (base, buf) = match cur {
                Some((b, buf)) if a >= b && a - b + n as u64 <= buf.len() as u64 => (b, buf),
                _ => {
                    let (b, _) = self.locate(a, n as u64).map_err(|_| k)?;
                    let buf = self.allocs.get(&b).ok_or(k)?.as_slice();
                    cur = Some((b, buf));
                    (b, buf)
                }
            };
            let off = (a - base) as usize;
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&buf[off..off + n]);
            *o = u64::from_le_bytes(b);
        }
        Ok(())
    }

    /// Writes the low `size` bytes (at most 8, little-endian) of each of `values` at the
    /// matching one of `addrs`, in order; on the first address outside every allocation,
    /// its index (the writes before it are done). The allocation is searched for once per
    /// run of addresses in it; each write then takes one map access.
    pub fn write_many(&mut self, addrs: &[u64], size: u32, values: &[u64]) -> Result<(), usize> {
        let n = size.min(8) as usize;
        let mut cur: Option<(u64, usize)> = None;
        for (k, (&a, v)) in addrs.iter().zip(values).enumerate() {
            let base = match cur {
                Some((b, len)) if a >= b && a - b + n as u64 <= len as u64 => b,
                _ => {
                    let (b, _) = self.locate(a, n as u64).map_err(|_| k)?;
                    cur = Some((b, self.allocs.get(&b).map_or(0, Vec::len)));
                    b
                }
            };
            let buf = self.allocs.get_mut(&base).ok_or(k)?;
            let off = (a - base) as usize;
            buf[off..off + n].copy_from_slice(&v.to_le_bytes()[..n]);
        }
        Ok(())
    }

    /// `memmove` within device memory.
    pub fn copy(&mut self, dst: u64, src: u64, len: u64) -> Result<(), Status> {
        let (sb, so) = self.locate(src, len)?;
        let (db, doff) = self.locate(dst, len)?;
        let n = len as usize;
        if sb == db {
            let buf = self.allocs.get_mut(&sb).ok_or(Status::INVALID_VALUE)?;
            buf.copy_within(so..so + n, doff);
        } else {
            let tmp = self.allocs[&sb][so..so + n].to_vec();
            self.slice_mut(dst, len)?.copy_from_slice(&tmp);
        }
        Ok(())
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A warp's accesses across two allocations, each value at its own address; the first
    /// address outside (or straddling the end of) an allocation is reported by index.
    #[test]
    fn many_accesses_at_once() {
        let mut m = Memory::new(1 << 16, Pool::new(1 << 20));
        let (a, b) = (m.alloc(256).unwrap(), m.alloc(256).unwrap());
        let addrs: Vec<u64> = (0..32u64)
            .map(|i| if i % 3 == 0 { b + i * 4 } else { a + i * 8 })
            .collect();
        let vals: Vec<u64> = (0..32u64).map(|i| 0x0102_0304_0506_0708 ^ i).collect();
        m.write_many(&addrs[..1], 4, &vals[..1]).unwrap();
        m.write_many(&addrs, 4, &vals).unwrap();
        let mut out = vec![0u64; 32];
        m.read_many(&addrs, 4, &mut out).unwrap();
        for (o, v) in out.iter().zip(&vals) {
            assert_eq!(*o, v & 0xFFFF_FFFF);
        }
        let mut bad = addrs.clone();
        bad[5] = a + 254; // 8 bytes from here straddle the end
        assert_eq!(m.read_many(&bad, 8, &mut out), Err(5));
        bad[5] = 0x10;
        assert_eq!(m.write_many(&bad, 4, &vals), Err(5));
        let mut one = [0u64];
        m.read_many(&addrs[4..5], 4, &mut one).unwrap();
        assert_eq!(
            one[0],
            vals[4] & 0xFFFF_FFFF,
            "the stores before the bad one were done"
        );
    }

    #[test]
    fn contexts_share_the_device_memory() {
        let pool = Pool::new(8192);
        let mut a = Memory::new(8192, pool.clone());
        let mut b = Memory::new(8192, pool.clone());
        let x = a.alloc(6000).unwrap();
        assert_eq!(
            b.info(),
            (8192 - 6144, 8192),
            "b sees what the device has left"
        );
        assert_eq!(b.alloc(4096), Err(Status::OUT_OF_MEMORY), "past the device");
        let y = b.alloc(2048).unwrap();
        assert_eq!(pool.free(), 0);
        a.free(x).unwrap();
        assert_eq!(pool.free(), 6144);
        drop(b);
        assert_eq!(pool.free(), 8192, "a dropped context gives its memory back");
        let _ = y;
        a.alloc(8192).unwrap();
        a.clear();
        assert_eq!(pool.free(), 8192);
    }

    #[test]
    fn bounds_quota_and_reuse() {
        let mut m = Memory::new(4096, Pool::new(1 << 20));
        let a = m.alloc(100).unwrap();
        assert_eq!(a % ALIGN, 0);
        let b = m.alloc(1000).unwrap();
        assert_eq!(m.info(), (4096 - 256 - 1024, 4096));
        assert!(m.slice(a, 100).is_ok());
        assert_eq!(m.slice(a, 101), Err(Status::INVALID_VALUE));
        assert_eq!(
            m.slice(a + 100, 1),
            Err(Status::INVALID_VALUE),
            "the gap is not addressable"
        );
        assert_eq!(m.slice(a - 1, 1), Err(Status::INVALID_VALUE));
        m.slice_mut(b, 4).unwrap().copy_from_slice(&[1, 2, 3, 4]);
        m.copy(a, b, 4).unwrap();
        assert_eq!(m.slice(a, 4).unwrap(), &[1, 2, 3, 4]);
        m.copy(a + 1, a, 3).unwrap();
        assert_eq!(m.slice(a, 4).unwrap(), &[1, 1, 2, 3]);
        assert_eq!(m.alloc(4096), Err(Status::OUT_OF_MEMORY));
        assert_eq!(m.range_of(b + 999), Some((b, 1000)));
        m.free(a).unwrap();
        assert_eq!(m.free(a), Err(Status::INVALID_VALUE));
        assert_eq!(
            m.slice(a, 1),
            Err(Status::INVALID_VALUE),
            "freed memory is unreachable"
        );
        let c = m.alloc(100).unwrap();
        assert_ne!(c, a, "addresses are not reused");
        assert_eq!(m.alloc(u64::MAX), Err(Status::OUT_OF_MEMORY));
    }
}
