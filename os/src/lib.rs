//! # vgpu-os: operating-system pieces every side of vgpu shares
//!
//! * [`lock`]: a mutex lock that survives a panicked holder.
//! * [`shm`]: memory shared with another process ([`shm::SharedMemory`], a memfd mapped
//!   here), reached only through atomics and bounds-checked copies.
//! * [`fd`]: waiting on descriptors, and adopting received ones.
//!
//! The device model, the driver and the client core all keep state behind mutexes that a
//! request thread may hold when it panics (a bug, or a guest input that reached an
//! `expect`). Poisoning would turn that one failure into a panic of every later user of
//! the state, so every lock in vgpu takes the guard of a poisoned mutex as it is: the
//! state a panicking holder left is as valid as the code that updates it makes it, and
//! each such update is written to leave it consistent at every step.
//!
//! `unsafe` is denied in the crate except in [`shm`] (mapping, locking and accessing shared
//! memory) and [`fd`] (`poll`, adopting received descriptors).

#![deny(unsafe_code)]

#[allow(
    unsafe_code,
    reason = "polls raw descriptors and adopts descriptors the kernel installed"
)]
pub mod fd;
#[allow(
    unsafe_code,
    reason = "maps, locks and unmaps shared memory and reaches it through raw pointers"
)]
pub mod shm;

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the guard even if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_locks() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let mut g = m2.lock().unwrap();
            *g = 2;
            panic!("holder panics");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 2);
    }
}
