//! IOVA allocation within the ranges the IOMMU (or the backing) reports.

/// A first-fit allocator of aligned IOVA ranges.
pub struct IovaAllocator {
    free: Vec<(u64, u64)>,
}

impl IovaAllocator {
    /// Allocator over `[start, end)` ranges.
    pub fn new(ranges: &[(u64, u64)]) -> Self {
        let mut free: Vec<(u64, u64)> = ranges.iter().copied().filter(|(s, e)| e > s).collect();
        free.sort();
        IovaAllocator { free }
    }

    /// `len` bytes aligned to `align` (a power of two).
    pub fn alloc(&mut self, len: u64, align: u64) -> Option<u64> {
        for i in 0..self.free.len() {
            let (s, e) = self.free[i];
            let start = s.checked_next_multiple_of(align)?;
            let end = start.checked_add(len)?;
            if end <= e {
                self.free.remove(i);
                if end < e {
                    self.free.insert(i, (end, e));
                }
                if s < start {
                    self.free.insert(i, (s, start));
                }
                return Some(start);
            }
        }
        None
    }

    /// Returns `[iova, iova + len)`.
    pub fn free(&mut self, iova: u64, len: u64) {
        self.free.push((iova, iova + len));
        self.free.sort();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.free.len());
        for (s, e) in self.free.drain(..) {
            match merged.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => merged.push((s, e)),
            }
        }
        self.free = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_align_free_merge() {
        let mut a = IovaAllocator::new(&[(0x1000, 0x10_0000)]);
        let x = a.alloc(0x3000, 0x1000).unwrap();
        let y = a.alloc(0x1000, 0x10000).unwrap();
        assert_eq!(x, 0x1000);
        assert_eq!(y, 0x10000);
        assert!(a.alloc(0x100_0000, 0x1000).is_none());
        a.free(x, 0x3000);
        a.free(y, 0x1000);
        assert_eq!(a.free, vec![(0x1000, 0x10_0000)]);
    }
}
