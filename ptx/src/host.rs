//! [`HostMemory`]: one block of device memory in host RAM at a chosen device address, the
//! simplest [`Memory`] there is — for tests, examples and benchmarks of the interpreter.

use crate::exec::Memory;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

/// `len` bytes of device memory at device address `base`.
pub struct HostMemory {
    base: u64,
    bytes: Mutex<Vec<u8>>,
}

impl HostMemory {
    /// Zeroed memory at `base`.
    pub fn new(base: u64, len: usize) -> HostMemory {
        HostMemory {
            base,
            bytes: Mutex::new(vec![0; len]),
        }
    }

    /// The device address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    fn bytes(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn range(&self, addr: u64, len: usize) -> Option<Range<usize>> {
        self.offset(addr, len, self.bytes().len())
    }

    /// The byte range of `len` bytes at `addr` in a buffer of `total` bytes.
    fn offset(&self, addr: u64, len: usize, total: usize) -> Option<Range<usize>> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let end = off.checked_add(len)?;
        (end <= total).then_some(off..end)
    }

    /// Copies `data` to byte offset `at`.
    pub fn put(&self, at: usize, data: &[u8]) {
        self.bytes()[at..at + data.len()].copy_from_slice(data);
    }

    /// Stores `v` as little-endian f32 from byte offset `at`.
    pub fn put_f32(&self, at: usize, v: &[f32]) {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.put(at, &b);
    }

    /// `n` bytes from byte offset `at`.
    pub fn get(&self, at: usize, n: usize) -> Vec<u8> {
        self.bytes()[at..at + n].to_vec()
    }

    /// `n` little-endian f32 from byte offset `at`.
    pub fn f32s(&self, at: usize, n: usize) -> Vec<f32> {
        self.get(at, 4 * n)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// `n` little-endian u32 from byte offset `at`.
    pub fn u32s(&self, at: usize, n: usize) -> Vec<u32> {
        self.get(at, 4 * n)
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

impl Memory for HostMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(r) = self.range(addr, buf.len()) else {
            return false;
        };
        buf.copy_from_slice(&self.bytes()[r]);
        true
    }

    fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some(r) = self.range(addr, data.len()) else {
            return false;
        };
        self.bytes()[r].copy_from_slice(data);
        true
    }

    fn read_many(&self, addrs: &[u64], size: u32, out: &mut [u64]) -> Result<(), usize> {
        let m = self.bytes();
        for (k, (&a, o)) in addrs.iter().zip(out.iter_mut()).enumerate() {
            let r = self.offset(a, size as usize, m.len()).ok_or(k)?;
            let mut b = [0u8; 8];
            b[..size as usize].copy_from_slice(&m[r]);
            *o = u64::from_le_bytes(b);
        }
        Ok(())
    }

    fn write_many(&self, addrs: &[u64], size: u32, values: &[u64]) -> Result<(), usize> {
        let mut m = self.bytes();
        let len = m.len();
        for (k, (&a, v)) in addrs.iter().zip(values).enumerate() {
            let r = self.offset(a, size as usize, len).ok_or(k)?;
            m[r].copy_from_slice(&v.to_le_bytes()[..size as usize]);
        }
        Ok(())
    }

    fn atomic(&self, addr: u64, size: u32, f: &mut dyn FnMut(u64) -> u64) -> Option<u64> {
        let r = self.range(addr, size as usize)?;
        let mut m = self.bytes();
        let mut b = [0u8; 8];
        b[..size as usize].copy_from_slice(&m[r.clone()]);
        let old = u64::from_le_bytes(b);
        m[r].copy_from_slice(&f(old).to_le_bytes()[..size as usize]);
        Some(old)
    }
}
