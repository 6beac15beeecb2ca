//! Host functions: `cuLaunchHostFunc` and `cuStreamAddCallback` (spec §7.9).
//!
//! A host function is posted as HOST_FUNC with a cookie on its stream. When the stream
//! reaches it, the device sends a CALLBACK completion and holds the stream; this library's
//! host-function thread (started at the first host function) runs the function and answers
//! HOST_FUNC_DONE, which releases the stream. The thread takes callbacks from the queue pair's
//! callback list, so no API call that consumes completions can lose them. A host function
//! posted on a capturing stream is kept for the graph's replays; others are forgotten once
//! they ran.

use crate::mem::{self, conn};
use bytemuck::Zeroable;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;
use vgpu_os::lock;
use vgpu_proto::cmd::HandleArgs;
use vgpu_proto::Command;
use vgpu_shim_abi::status::CuStatus;

/// `CUhostFn`.
pub type HostFn = unsafe extern "C" fn(user: *mut c_void);
/// `CUstreamCallback`.
pub type StreamCallback = unsafe extern "C" fn(stream: usize, status: u32, user: *mut c_void);

/// What runs when the stream reaches a host function.
#[derive(Clone, Copy)]
enum Call {
    Host(HostFn, usize),
    Callback(StreamCallback, usize, usize),
}

struct Pending {
    call: Call,
    /// Kept for a graph's replays.
    keep: bool,
}

static PENDING: Mutex<Option<HashMap<u64, Pending>>> = Mutex::new(None);
static NEXT: AtomicU64 = AtomicU64::new(1);

fn run(call: Call) {
    match call {
        // SAFETY: the application passed this function and its data for exactly this call
        // (the CUDA contract of cuLaunchHostFunc).
        Call::Host(f, user) => unsafe { f(user as *mut c_void) },
        // SAFETY: as above, for cuStreamAddCallback's callback; the stream's work before
        // the callback succeeded (an error would have latched and stopped the stream).
        Call::Callback(f, stream, user) => unsafe { f(stream, 0, user as *mut c_void) },
    }
}

/// The host-function thread: runs each callback the device sends and releases its stream.
fn serve() {
    loop {
        let Ok((_, q)) = conn() else { return };
        let callbacks = match q.wait_callbacks(Duration::from_secs(1)) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("vgpu: the host-function thread stops: {e}");
                return;
            }
        };
        for cqe in callbacks {
            let cookie = cqe.result0;
            let call = {
                let mut p = lock(&PENDING);
                let table = p.get_or_insert_with(HashMap::new);
                match table.get(&cookie) {
                    Some(e) if e.keep => Some(e.call),
                    Some(_) => table.remove(&cookie).map(|e| e.call),
                    None => None,
                }
            };
            match call {
                Some(c) => run(c),
                None => log::warn!("vgpu: a host function with unknown cookie {cookie:#x}"),
            }
            let done = HandleArgs {
                handle: cookie,
                ..Zeroable::zeroed()
            };
            if let Err(e) = mem::post(Command::HOST_FUNC_DONE(done), 0) {
                log::warn!("vgpu: HOST_FUNC_DONE of {cookie:#x} failed ({e})");
            }
        }
    }
}

/// Posts `call` on `stream` as a host function.
fn post(stream: usize, call: Call) -> Result<(), CuStatus> {
    static THREAD: Once = Once::new();
    conn()?;
    THREAD.call_once(|| {
        if let Err(e) = std::thread::Builder::new()
            .name("vgpu-host-funcs".into())
            .spawn(serve)
        {
            log::warn!("vgpu: cannot start the host-function thread: {e}");
        }
    });
    let s = mem::stream(stream);
    let cookie = NEXT.fetch_add(1, Ordering::Relaxed);
    let keep = crate::graph::is_capturing(s);
    lock(&PENDING)
        .get_or_insert_with(HashMap::new)
        .insert(cookie, Pending { call, keep });
    let args = HandleArgs {
        handle: cookie,
        ..Zeroable::zeroed()
    };
    mem::post(Command::HOST_FUNC(args), s).inspect_err(|_| {
        lock(&PENDING).as_mut().map(|t| t.remove(&cookie));
    })?;
    Ok(())
}

/// `cuLaunchHostFunc`.
pub fn launch_host_func(
    stream: usize,
    f: Option<HostFn>,
    user: *mut c_void,
) -> Result<(), CuStatus> {
    let f = f.ok_or(CuStatus::INVALID_VALUE)?;
    post(stream, Call::Host(f, user as usize))
}

/// `cuStreamAddCallback` (`flags` must be 0).
pub fn add_callback(
    stream: usize,
    f: Option<StreamCallback>,
    user: *mut c_void,
    flags: u32,
) -> Result<(), CuStatus> {
    let f = f.ok_or(CuStatus::INVALID_VALUE)?;
    if flags != 0 {
        return Err(CuStatus::INVALID_VALUE);
    }
    post(stream, Call::Callback(f, stream, user as usize))
}
