//! The streams, events and executable graphs this process has created and not destroyed.
//! Asynchronous commands are posted with no round trip, so the device's refusal of a bad
//! handle (spec §8.2) would reach the process only at a later call; checking handles here
//! lets the call that passed a bad one fail itself, as CUDA's does.

use rustc_hash::FxHashMap as HashMap;
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

/// Live handles and the flags they were made with.
static LIVE: Mutex<Option<HashMap<(Kind, u64), u32>>> = Mutex::new(None);

fn live() -> MutexGuard<'static, Option<HashMap<(Kind, u64), u32>>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records a new handle.
pub fn created(kind: Kind, h: u64) {
    created_with(kind, h, 0)
}

/// Records a new handle made with `flags`.
pub fn created_with(kind: Kind, h: u64, flags: u32) {
    live()
        .get_or_insert_with(HashMap::default)
        .insert((kind, h), flags);
}

/// The flags a live handle was made with; INVALID_HANDLE otherwise.
pub fn flags(kind: Kind, h: u64) -> Result<u32, u32> {
    live()
        .as_ref()
        .and_then(|s| s.get(&(kind, h)).copied())
        .ok_or(INVALID_HANDLE)
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
    match live().as_ref().is_some_and(|s| s.contains_key(&(kind, h))) {
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
