//! The device-wide module cache (feature MODULE_CACHE, spec §7.7): images by SHA-256, so
//! that a later process (another PD) can load a module by hash without sending the image
//! again. An image enters the cache only after the device has hashed it itself, so no
//! client can plant an image under another image's hash.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Bytes of images the cache keeps before it forgets the oldest.
pub const CACHE_BYTES: usize = 1 << 30;

/// Images by hash, oldest first out.
#[derive(Default)]
pub struct ModuleCache {
    images: HashMap<[u8; 32], Arc<Vec<u8>>>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
}

/// SHA-256 of `image`.
pub fn sha256(image: &[u8]) -> [u8; 32] {
    Sha256::digest(image).into()
}

impl ModuleCache {
    /// The image with this hash.
    pub fn get(&self, hash: &[u8; 32]) -> Option<Arc<Vec<u8>>> {
        self.images.get(hash).cloned()
    }

    /// Adds an image whose hash the caller computed.
    pub fn insert(&mut self, hash: [u8; 32], image: &[u8]) {
        if self.images.contains_key(&hash) || image.len() > CACHE_BYTES {
            return;
        }
        while self.bytes + image.len() > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(img) = self.images.remove(&old) {
                self.bytes -= img.len();
            }
        }
        self.images.insert(hash, Arc::new(image.to_vec()));
        self.order.push_back(hash);
        self.bytes += image.len();
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_evict() {
        let mut c = ModuleCache::default();
        let h = sha256(b"abc");
        assert_eq!(h[..4], [0xba, 0x78, 0x16, 0xbf]);
        c.insert(h, b"abc");
        assert_eq!(c.get(&h).unwrap().as_slice(), b"abc");
        assert_eq!(c.len(), 1);
        assert!(c.get(&sha256(b"abd")).is_none());
    }
}
