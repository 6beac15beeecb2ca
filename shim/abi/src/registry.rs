//! Objects a library hands to applications as opaque handles (`cublasHandle_t`,
//! `cublasLtMatmulDesc_t`, …): each handle is a key into a table, never a pointer the library
//! dereferences, so an unknown, stale or forged handle is refused instead of crashing.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A table of objects of one kind, keyed by the handles given out.
pub struct Registry<T> {
    /// The first handle's value (handles look like aligned pointers of their own range).
    base: usize,
    inner: Mutex<(BTreeMap<usize, T>, usize)>,
}

impl<T: Clone> Registry<T> {
    /// An empty registry whose handles start at `base` (a multiple of 16).
    pub const fn new(base: usize) -> Registry<T> {
        Registry {
            base,
            inner: Mutex::new((BTreeMap::new(), 0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (BTreeMap<usize, T>, usize)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `v` under a new handle.
    pub fn insert(&self, v: T) -> usize {
        let mut g = self.lock();
        g.1 += 1;
        let h = self.base + g.1 * 16;
        g.0.insert(h, v);
        h
    }

    /// A copy of the object, if the handle is live.
    pub fn get(&self, h: usize) -> Option<T> {
        self.lock().0.get(&h).cloned()
    }

    /// Changes the object in place; None if the handle is not live.
    pub fn update<R>(&self, h: usize, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.lock().0.get_mut(&h).map(f)
    }

    /// Forgets the handle, giving back its object.
    pub fn remove(&self, h: usize) -> Option<T> {
        self.lock().0.remove(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_unique_and_stale_ones_refused() {
        let r: Registry<u32> = Registry::new(0x1000);
        let a = r.insert(1);
        let b = r.insert(2);
        assert_ne!(a, b);
        assert_eq!(r.get(a), Some(1));
        assert_eq!(r.update(b, |v| *v += 1), Some(()));
        assert_eq!(r.remove(b), Some(3));
        assert_eq!(r.get(b), None);
        assert_eq!(r.get(0xdead), None);
    }
}
