//! The device-wide module cache (feature MODULE_CACHE, spec §7.7): images by SHA-256, so
//! that a later process (another PD) can load a module by hash without sending the image
//! again. An image enters the cache only after the device has hashed it itself, so no
//! client can plant an image under another image's hash. Images are kept per cache domain
//! (PD_CREATE): a PD finds by hash only what PDs of its own domain loaded, so no tenant can
//! learn which images another one runs. One image loaded in two domains is kept once.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Bytes of images the cache keeps before it forgets the oldest.
pub const CACHE_BYTES: usize = 1 << 30;

/// An image, and the cache domains whose PDs loaded it.
type Entry = (Arc<Vec<u8>>, HashSet<u32>);

/// Images by hash, oldest first out, with the domains that loaded each.
#[derive(Default)]
pub struct ModuleCache {
    images: HashMap<[u8; 32], Entry>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
}

/// SHA-256 of `image`.
pub fn sha256(image: &[u8]) -> [u8; 32] {
    Sha256::digest(image).into()
}

impl ModuleCache {
    /// The image with this hash, if a PD of `domain` loaded it.
    pub fn get(&self, domain: u32, hash: &[u8; 32]) -> Option<Arc<Vec<u8>>> {
        self.images
            .get(hash)
            .filter(|(_, domains)| domains.contains(&domain))
            .map(|(image, _)| image.clone())
    }

    /// Adds an image whose hash the caller computed, loaded by a PD of `domain`.
    pub fn insert(&mut self, domain: u32, hash: [u8; 32], image: &[u8]) {
        if let Some((_, domains)) = self.images.get_mut(&hash) {
            domains.insert(domain);
            return;
        }
        if image.len() > CACHE_BYTES {
            return;
        }
        while self.bytes + image.len() > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((img, _)) = self.images.remove(&old) {
                self.bytes -= img.len();
            }
        }
        self.images
            .insert(hash, (Arc::new(image.to_vec()), HashSet::from([domain])));
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
        c.insert(1, h, b"abc");
        assert_eq!(c.get(1, &h).unwrap().as_slice(), b"abc");
        assert_eq!(c.len(), 1);
        assert!(c.get(1, &sha256(b"abd")).is_none());
        assert!(c.get(2, &h).is_none(), "another domain's image");
        c.insert(2, h, b"abc");
        assert!(c.get(2, &h).is_some());
        assert_eq!(c.len(), 1, "kept once");
    }
}
