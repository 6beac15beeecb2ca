//! The exported driver API, one file per topic: initialisation, device queries, the primary
//! context and the error strings (`device.rs`); memory, copies, memsets and pinned host
//! memory (`memory.rs`); streams, events and synchronisation (`stream.rs`); modules,
//! launches and function attributes (`module.rs`); contexts (`context.rs`) and the calls
//! general programs use beyond ggml's subset (`general.rs`), both generated from their
//! tables by `vgpu_shim_abi::exports!`. 2-D copies, graphs and
//! `cuGetProcAddress` have modules of their own in the crate. This module holds what the
//! topics share: the result codes, `done`, `try_cu!` and the out-pointer writes of the C
//! ABI, which are confined to [`put`] and [`put_str`]; the only other `unsafe` reads what
//! `module.rs`'s entry points are given (module images, names, kernel parameters, launch
//! configurations).

use std::ffi::c_char;

type CuResult = u32;
const SUCCESS: CuResult = 0;
const INVALID_VALUE: CuResult = 1;
const NOT_SUPPORTED: CuResult = 801;

/// Writes `v` through an out-pointer; INVALID_VALUE for null.
pub(crate) fn put<T>(p: *mut T, v: T) -> CuResult {
    if p.is_null() {
        return INVALID_VALUE;
    }
    // SAFETY: the caller of the CUDA API passes a valid out-pointer for T (CUDA's contract);
    // null was refused above.
    unsafe { p.write_unaligned(v) };
    SUCCESS
}

/// Copies `s` as a NUL-terminated string into a caller buffer of `len` bytes (truncating).
fn put_str(p: *mut c_char, len: i32, s: &str) -> CuResult {
    if p.is_null() || len <= 0 {
        return INVALID_VALUE;
    }
    let n = s.len().min(len as usize - 1);
    for (i, b) in s.as_bytes()[..n]
        .iter()
        .chain(std::iter::once(&0))
        .enumerate()
    {
        // SAFETY: the caller's buffer holds `len` bytes (CUDA's contract); i < n + 1 <= len.
        unsafe { p.add(i).write(*b as c_char) };
    }
    SUCCESS
}

macro_rules! try_cu {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}

/// The result code of a call that returns nothing.
pub(crate) fn status_of(r: Result<(), CuResult>) -> CuResult {
    r.err().unwrap_or(SUCCESS)
}

pub mod context;
mod device;
pub mod general;
mod memory;
mod module;
mod stream;

pub use device::*;
pub use memory::*;
pub use module::*;
pub use stream::*;
