//! The device memory one PD may name on the GPU: its allocations and its modules'
//! globals. With unified addressing the CUDA driver would accept a pointer into another
//! context of the same process, so every address a command carries is checked here before
//! it reaches CUDA; the quota is enforced here too.

use std::collections::BTreeMap;
use vgpu_proto::Status;

/// One PD's ranges.
#[derive(Debug)]
pub struct Ranges {
    /// Allocations: base → size.
    allocs: BTreeMap<u64, u64>,
    /// Module globals: base → (size, module handle).
    globals: BTreeMap<u64, (u64, u64)>,
    used: u64,
    quota: u64,
}

impl Ranges {
    /// No ranges, with a quota of `quota` bytes.
    pub fn new(quota: u64) -> Self {
        Ranges {
            allocs: BTreeMap::new(),
            globals: BTreeMap::new(),
            used: 0,
            quota,
        }
    }

    /// A new quota (allocations already made stay).
    pub fn set_quota(&mut self, quota: u64) {
        self.quota = quota;
    }

    /// Bytes left under the quota.
    pub fn room(&self) -> u64 {
        self.quota.saturating_sub(self.used)
    }

    /// OUT_OF_MEMORY when `size` more bytes would pass the quota.
    pub fn admit(&self, size: u64) -> Result<(), Status> {
        if size > self.room() {
            return Err(Status::OUT_OF_MEMORY);
        }
        Ok(())
    }

    /// Counts `len` bytes against the quota without naming them (the executor's own
    /// memory for a command); OUT_OF_MEMORY past the quota.
    pub fn reserve(&mut self, len: u64) -> Result<(), Status> {
        self.admit(len)?;
        self.used += len;
        Ok(())
    }

    /// Returns what [`reserve`](Self::reserve) took.
    pub fn release(&mut self, len: u64) {
        self.used = self.used.saturating_sub(len);
    }

    /// Records an allocation the GPU made.
    pub fn add_alloc(&mut self, base: u64, size: u64) {
        self.allocs.insert(base, size);
        self.used += size;
    }

    /// Forgets the allocation at `base`; INVALID_VALUE when none starts there.
    pub fn remove_alloc(&mut self, base: u64) -> Result<u64, Status> {
        let size = self.allocs.remove(&base).ok_or(Status::INVALID_VALUE)?;
        self.used -= size;
        Ok(size)
    }

    /// Records a global of `module`.
    pub fn add_global(&mut self, base: u64, size: u64, module: u64) {
        self.globals.insert(base, (size, module));
    }

    /// Forgets the globals of `module`.
    pub fn remove_module(&mut self, module: u64) {
        self.globals.retain(|_, (_, m)| *m != module);
    }

    /// The allocation holding `ptr`: (base, size).
    pub fn range_of(&self, ptr: u64) -> Option<(u64, u64)> {
        let (&base, &size) = self.allocs.range(..=ptr).next_back()?;
        (ptr - base < size).then_some((base, size))
    }

    /// Ok when `[ptr, ptr + len)` lies inside one allocation or one global of the PD
    /// (an empty range anywhere inside one, or at its end).
    pub fn check(&self, ptr: u64, len: u64) -> Result<(), Status> {
        let end = ptr.checked_add(len).ok_or(Status::INVALID_VALUE)?;
        let inside = |base: u64, size: u64| ptr >= base && end <= base + size;
        let alloc = self.allocs.range(..=ptr).next_back();
        let global = self.globals.range(..=ptr).next_back();
        if alloc.is_some_and(|(&b, &s)| inside(b, s))
            || global.is_some_and(|(&b, &(s, _))| inside(b, s))
        {
            return Ok(());
        }
        log::warn!("device range {ptr:#x}+{len:#x} is not memory of this PD");
        Err(Status::INVALID_VALUE)
    }

    /// (bytes, allocations).
    pub fn usage(&self) -> (u64, u32) {
        (self.used, self.allocs.len() as u32)
    }

    /// The allocations, for freeing them all.
    pub fn drain_allocs(&mut self) -> Vec<u64> {
        self.used = 0;
        self.globals.clear();
        std::mem::take(&mut self.allocs).into_keys().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pds_own_memory_passes() {
        let mut r = Ranges::new(1 << 20);
        r.add_alloc(0x1000, 0x100);
        r.add_global(0x9000, 0x10, 7);
        assert_eq!(r.check(0x1000, 0x100), Ok(()));
        assert_eq!(r.check(0x10ff, 1), Ok(()));
        assert_eq!(r.check(0x1100, 0), Ok(()), "empty at the end");
        assert_eq!(r.check(0x10ff, 2), Err(Status::INVALID_VALUE), "runs past");
        assert_eq!(r.check(0xfff, 1), Err(Status::INVALID_VALUE), "before");
        assert_eq!(
            r.check(0x5000, 1),
            Err(Status::INVALID_VALUE),
            "another PD's"
        );
        assert_eq!(r.check(u64::MAX, 2), Err(Status::INVALID_VALUE), "wraps");
        assert_eq!(r.check(0x9008, 8), Ok(()), "a global");
        r.remove_module(7);
        assert_eq!(r.check(0x9008, 8), Err(Status::INVALID_VALUE), "unloaded");
        assert_eq!(r.range_of(0x1080), Some((0x1000, 0x100)));
        assert_eq!(r.range_of(0x1100), None);
    }

    #[test]
    fn the_quota_holds_and_frees_return_room() {
        let mut r = Ranges::new(0x300);
        r.admit(0x200).unwrap();
        r.add_alloc(0x1000, 0x200);
        assert_eq!(r.admit(0x101), Err(Status::OUT_OF_MEMORY));
        r.admit(0x100).unwrap();
        assert_eq!(
            r.remove_alloc(0x1001),
            Err(Status::INVALID_VALUE),
            "not a base"
        );
        assert_eq!(r.remove_alloc(0x1000), Ok(0x200));
        assert_eq!(r.usage(), (0, 0));
        r.admit(0x300).unwrap();
    }
}
