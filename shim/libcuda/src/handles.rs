//! The streams, events and executable graphs this process has created and not destroyed.
//! Asynchronous commands are posted with no round trip, so the device's refusal of a bad
//! handle (spec §8.2) would reach the process only at a later call; checking handles here
//! lets the call that passed a bad one fail itself, as CUDA's does.

use rustc_hash::FxHashSet as HashSet;
use std::sync::{Mutex, MutexGuard};

/// `CUDA_ERROR_INVALID_HANDLE`.
pub const INVALID_HANDLE: u32 = 400;

/// What a handle names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A stream.
    Stream,
    /// An event.
    Event,
    /// An executable graph.
    GraphExec,
}

static LIVE: Mutex<Option<HashSet<(Kind, u64)>>> = Mutex::new(None);

fn live() -> MutexGuard<'static, Option<HashSet<(Kind, u64)>>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records a new handle.
pub fn created(kind: Kind, h: u64) {
    live()
        .get_or_insert_with(HashSet::default)
        .insert((kind, h));
}

/// Forgets a destroyed handle.
pub fn destroyed(kind: Kind, h: u64) {
    if let Some(s) = live().as_mut() {
        s.remove(&(kind, h));
    }
}

/// Forgets every handle (after a context reset destroyed them).
pub fn forget_all() {
    *live() = None;
}

/// INVALID_HANDLE unless `h` is a live handle of `kind`.
pub fn check(kind: Kind, h: u64) -> Result<(), u32> {
    match live().as_ref().is_some_and(|s| s.contains(&(kind, h))) {
        true => Ok(()),
        false => Err(INVALID_HANDLE),
    }
}

/// Like [`check`] for a device stream id; the NULL stream (0) is always valid.
pub fn check_stream(stream: u64) -> Result<(), u32> {
    if stream == 0 {
        return Ok(());
    }
    check(Kind::Stream, stream)
}
