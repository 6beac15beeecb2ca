//! Memory, copies, memsets, streams, events and synchronisation of the driver API, on the
//! process's queue. Asynchronous work is posted with no round trip; synchronous calls wait
//! for their completion. Copies from pageable memory are staged through the first window in
//! chunks, several in flight at once, except small host-to-device ones, which travel in the
//! queue entry itself (asynchronous ones with no round trip); copies from pinned memory (a
//! window) go straight.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, OnceLock};
use vgpu_os::lock;
use vgpu_proto::cmd::*;
use vgpu_proto::{Command, Cqe};
use vgpu_shim::client::{ClientError, Connection, QueuePair, Window};

/// A CUresult.
pub type CuResult = u32;
/// Staging chunk for pageable copies.
pub const CHUNK: usize = 1 << 20;
/// Largest asynchronous pageable host-to-device copy carried inline in its queue entry (64
/// ring slots) instead of staged through the window: it needs no round trip.
pub const INLINE_COPY: usize = 4 << 10;
/// Largest synchronous one: past a few slots the window is faster (one copy on each side,
/// no ring slots to fill and empty).
pub const INLINE_COPY_SYNC: usize = 256;

/// Device allocations of this process (for pointer classification), base → size.
static ALLOCATIONS: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());
/// Serialises use of the staging window.
static STAGING: Mutex<()> = Mutex::new(());
/// Pinned allocations: host address → window id.
static PINNED: OnceLock<Mutex<BTreeMap<usize, (u32, usize)>>> = OnceLock::new();

fn pinned() -> MutexGuard<'static, BTreeMap<usize, (u32, usize)>> {
    lock(PINNED.get_or_init(|| Mutex::new(BTreeMap::new())))
}

/// The connection and its queue, or NOT_INITIALIZED / the no-device error.
pub fn conn() -> Result<(&'static Mutex<Connection>, &'static QueuePair), CuResult> {
    let s = crate::state::initialized().ok_or(3u32)?;
    match (&s.conn, &s.queue) {
        (Some(c), Some(q)) => Ok((c, q)),
        _ => Err(s.status.to_cuda()),
    }
}

fn req(command: Command, stream: u64) -> Request {
    Request {
        cid: 0,
        notify: false,
        stream,
        payload: Payload::None,
        command,
    }
}

fn client_err(e: ClientError) -> CuResult {
    log::warn!("vgpu: {e}");
    e.status().to_cuda()
}

fn status(c: &Cqe) -> Result<Cqe, CuResult> {
    if c.status().is_ok() {
        Ok(*c)
    } else {
        Err(c.status().to_cuda())
    }
}

/// Runs a synchronous command.
pub fn call(command: Command, stream: u64) -> Result<Cqe, CuResult> {
    let (_, q) = conn()?;
    let c = q.call(req(command, stream), &[]).map_err(client_err)?;
    status(&c)
}

/// Runs an asynchronous command and waits until it has executed (FLAG_NOTIFY).
pub fn call_async(command: Command, stream: u64) -> Result<Cqe, CuResult> {
    let (_, q) = conn()?;
    let mut r = req(command, stream);
    r.notify = true;
    let c = q.call(r, &[]).map_err(client_err)?;
    status(&c)
}

/// Posts an asynchronous command (no round trip); refusals arrive as events.
pub fn post(command: Command, stream: u64) -> Result<(), CuResult> {
    crate::handles::check_stream(stream)?;
    let (_, q) = conn()?;
    q.submit(req(command, stream), &[]).map_err(client_err)?;
    check_events(q)
}

/// Posts an asynchronous command with an inline payload (no round trip).
pub fn post_inline(command: Command, stream: u64, payload: &[u8]) -> Result<(), CuResult> {
    run_inline(command, stream, payload, false)
}

/// Runs an asynchronous command with an inline payload: posted with no round trip, or,
/// with `wait`, complete on return (FLAG_NOTIFY).
pub fn run_inline(
    command: Command,
    stream: u64,
    payload: &[u8],
    wait: bool,
) -> Result<(), CuResult> {
    crate::handles::check_stream(stream)?;
    let (_, q) = conn()?;
    let mut r = req(command, stream);
    if !payload.is_empty() {
        r.payload = Payload::Inline {
            len: payload.len() as u32,
        };
    }
    if wait {
        r.notify = true;
        let c = q.call(r, payload).map_err(client_err)?;
        return status(&c).map(|_| ());
    }
    q.submit(r, payload).map_err(client_err)?;
    check_events(q)
}

/// The staging window's lock (module loads use the window too).
pub fn staging_lock() -> MutexGuard<'static, ()> {
    lock(&STAGING)
}

/// Reports an async refusal that came back (spec §8.2) as the call's error.
fn check_events(q: &QueuePair) -> Result<(), CuResult> {
    for e in q.take_events() {
        if e.flags & vgpu_proto::queue::cqe_flags::ASYNC_ERROR != 0 {
            log::warn!(
                "vgpu: an asynchronous command (opcode {:#06x}) was refused: {}",
                e.opcode,
                e.status()
            );
            return Err(e.status().to_cuda());
        }
    }
    Ok(())
}

/// Stream handle of the driver API → device stream (0 = NULL stream; the legacy and
/// per-thread default-stream handles map to the NULL stream).
pub fn stream(s: usize) -> u64 {
    match s {
        0..=2 => 0,
        s => s as u64,
    }
}

/// `cuMemAlloc`.
pub fn alloc(size: usize) -> Result<u64, CuResult> {
    let c = call(
        Command::MEM_ALLOC(MemAllocArgs {
            size: size as u64,
            ..bytemuck::Zeroable::zeroed()
        }),
        0,
    )?;
    lock(&ALLOCATIONS).insert(c.result0, size as u64);
    Ok(c.result0)
}

/// `cuMemFree`.
pub fn free(ptr: u64) -> Result<(), CuResult> {
    call(
        Command::MEM_FREE(HandleArgs {
            handle: ptr,
            ..bytemuck::Zeroable::zeroed()
        }),
        0,
    )?;
    lock(&ALLOCATIONS).remove(&ptr);
    Ok(())
}

/// Forgets every device allocation (after a context reset freed them).
pub fn forget_allocations() {
    lock(&ALLOCATIONS).clear();
}

/// True when `ptr` lies in a device allocation of this process.
/// The allocation holding `ptr`: (base, size).
pub fn allocation_of(ptr: u64) -> Option<(u64, u64)> {
    lock(&ALLOCATIONS)
        .range(..=ptr)
        .next_back()
        .filter(|(b, s)| ptr - **b < **s)
        .map(|(b, s)| (*b, *s))
}

/// True for an address inside a device allocation of this process.
pub fn is_device(ptr: u64) -> bool {
    lock(&ALLOCATIONS)
        .range(..=ptr)
        .next_back()
        .is_some_and(|(b, s)| ptr - b < *s)
}

/// The window and offset of pinned host memory `[p, p + n)`, if it is inside one window.
pub(crate) fn window_of(conn: &Connection, p: usize, n: usize) -> Option<(u32, u64)> {
    conn.windows().find_map(|w| {
        let base = w.as_ptr() as usize;
        (p >= base && p.checked_add(n)? <= base + w.len()).then(|| (w.id(), (p - base) as u64))
    })
}

/// Copies host to device; asynchronous (no wait) when `wait` is false and the source is
/// pinned or at most [`INLINE_COPY`] bytes (carried in the queue entry: the caller may
/// reuse its buffer at once, as after CUDA's staging), else staged and complete on return
/// (inline too up to [`INLINE_COPY_SYNC`] bytes).
pub(crate) fn htod(
    dst: u64,
    src: *const u8,
    n: usize,
    stream_: u64,
    wait: bool,
) -> Result<(), CuResult> {
    if n == 0 {
        return Ok(());
    }
    let (c, _) = conn()?;
    let pinned = window_of(&lock(c), src as usize, n);
    if let Some((window, offset)) = pinned {
        let args = CopyHtoDArgs {
            dst,
            len: n as u64,
            src_window: window,
            rsv0: 0,
            src_offset: offset,
        };
        return if wait {
            call_async(Command::MEMCPY_HTOD(args), stream_).map(|_| ())
        } else {
            post(Command::MEMCPY_HTOD(args), stream_)
        };
    }
    let inline_max = if wait { INLINE_COPY_SYNC } else { INLINE_COPY };
    if n <= inline_max && !crate::graph::is_capturing(stream_) {
        let (_, q) = conn()?;
        if n <= q.max_inline() as usize {
            // SAFETY: the caller's source holds `n` bytes (CUDA's contract).
            let data = unsafe { std::slice::from_raw_parts(src, n) };
            let args = CopyHtoDArgs {
                dst,
                len: n as u64,
                src_window: 0,
                rsv0: 0,
                src_offset: 0,
            };
            return run_inline(Command::MEMCPY_HTOD(args), stream_, data, wait);
        }
    }
    staged(
        n,
        1,
        |win, chunk, off, len| {
            // SAFETY: the caller's source holds `n` bytes (CUDA's contract); off + len <= n.
            let data = unsafe { std::slice::from_raw_parts(src.add(off), len) };
            win.write(chunk, data).map_err(|_| 1u32)?;
            let args = CopyHtoDArgs {
                dst: dst + off as u64,
                len: len as u64,
                src_window: win.id(),
                rsv0: 0,
                src_offset: chunk as u64,
            };
            Ok((Command::MEMCPY_HTOD(args), Vec::new()))
        },
        |_, _, _, _| Ok(()),
        stream_,
    )
}

/// Copies device to host, complete on return (or, pinned and `wait` false, asynchronous).
pub(crate) fn dtoh(
    dst: *mut u8,
    src: u64,
    n: usize,
    stream_: u64,
    wait: bool,
) -> Result<(), CuResult> {
    if n == 0 {
        return Ok(());
    }
    let (c, _) = conn()?;
    let pinned = window_of(&lock(c), dst as usize, n);
    if let Some((window, offset)) = pinned {
        let args = CopyDtoHArgs {
            src,
            len: n as u64,
            dst_window: window,
            rsv0: 0,
            dst_offset: offset,
        };
        return if wait {
            call_async(Command::MEMCPY_DTOH(args), stream_).map(|_| ())
        } else {
            post(Command::MEMCPY_DTOH(args), stream_)
        };
    }
    staged(
        n,
        1,
        |win, chunk, off, len| {
            let args = CopyDtoHArgs {
                src: src + off as u64,
                len: len as u64,
                dst_window: win.id(),
                rsv0: 0,
                dst_offset: chunk as u64,
            };
            Ok((Command::MEMCPY_DTOH(args), Vec::new()))
        },
        |win, chunk, off, len| {
            // SAFETY: the caller's destination holds `n` bytes; off + len <= n.
            let out = unsafe { std::slice::from_raw_parts_mut(dst.add(off), len) };
            win.read(chunk, out).map_err(|_| 1u32)
        },
        stream_,
    )
}

/// Moves `n` bytes in chunks through the staging window, up to four chunks in flight:
/// `before` fills a chunk and returns the command (its window id is filled in here),
/// `after` empties it once the device is done.
///
/// Chunks are whole multiples of `unit` bytes (`unit` ≤ the chunk size; 1 for 1-D copies,
/// the row length for 2-D ones). A capturing stream refuses staging: the chunk would be
/// reused long before the graph replays the copy.
pub(crate) fn staged(
    n: usize,
    unit: usize,
    mut before: impl FnMut(&Window, usize, usize, usize) -> Result<(Command, Vec<u8>), CuResult>,
    mut after: impl FnMut(&Window, usize, usize, usize) -> Result<(), CuResult>,
    stream_: u64,
) -> Result<(), CuResult> {
    if crate::graph::is_capturing(stream_) {
        log::warn!("vgpu: a copy from or to pageable memory cannot be captured");
        return Err(crate::graph::CAPTURE_UNSUPPORTED);
    }
    crate::handles::check_stream(stream_)?;
    let (c, q) = conn()?;
    let _staging = lock(&STAGING);
    let conn = lock(c);
    let win = conn.window(conn.first_window()).ok_or(999u32)?;
    let slots = (win.len() / CHUNK).clamp(1, 8);
    let chunk_len = CHUNK.min(win.len()) / unit.max(1) * unit.max(1);
    if chunk_len == 0 {
        return Err(1);
    }
    let mut inflight: std::collections::VecDeque<(u32, usize, usize, usize)> = Default::default();
    let mut off = 0;
    let mut slot = 0;
    let mut first_err: Option<CuResult> = None;
    let mut drain_one = |inflight: &mut std::collections::VecDeque<(u32, usize, usize, usize)>| -> Result<(), CuResult> {
        if let Some((cid, chunk, o, len)) = inflight.pop_front() {
            let r = q.wait(cid).map_err(client_err).and_then(|c| status(&c).map(|_| ()));
            r.and_then(|_| after(win, chunk, o, len))?;
        }
        Ok(())
    };
    while off < n && first_err.is_none() {
        if inflight.len() == slots {
            if let Err(e) = drain_one(&mut inflight) {
                first_err = Some(e);
                break;
            }
        }
        let len = chunk_len.min(n - off);
        let chunk = slot * chunk_len;
        let (cmd, payload) = match before(win, chunk, off, len) {
            Ok(c) => c,
            Err(e) => {
                first_err = Some(e);
                break;
            }
        };
        let mut r = req(cmd, stream_);
        r.notify = true;
        if !payload.is_empty() {
            r.payload = Payload::Inline {
                len: payload.len() as u32,
            };
        }
        match q.submit(r, &payload) {
            Ok(cid) => inflight.push_back((cid, chunk, off, len)),
            Err(e) => {
                first_err = Some(client_err(e));
                break;
            }
        }
        off += len;
        slot = (slot + 1) % slots;
    }
    while !inflight.is_empty() {
        if let Err(e) = drain_one(&mut inflight) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Pinned host memory of `size` bytes: a new window (≥ 256-byte aligned: windows are
/// page aligned).
pub fn alloc_host(size: usize) -> Result<*mut u8, CuResult> {
    let (c, _) = conn()?;
    let mut conn = lock(c);
    let id = conn.alloc_window(size.max(1) as u64).map_err(client_err)?;
    let w = conn.window(id).ok_or(999u32)?;
    let p = w.as_ptr();
    pinned().insert(p as usize, (id, size));
    Ok(p)
}

/// Host memory registered with [`register_host`]: the address registered → (window id,
/// first page, bytes of whole pages).
static REGISTERED: Mutex<BTreeMap<usize, (u32, usize, usize)>> = Mutex::new(BTreeMap::new());

/// `cuMemHostRegister`: `size` bytes at `p`, which must be part of a `MAP_SHARED` mapping
/// of a file, become window memory (whole pages), so that copies from and to them go
/// straight (see [`crate::hostreg`]). Flags: `PORTABLE` and `DEVICEMAP` change nothing
/// (every context sees window memory), `READ_ONLY` is accepted, `IOMEMORY` is not
/// supported.
pub fn register_host(p: *mut u8, size: usize, flags: u32) -> Result<(), CuResult> {
    const IOMEMORY: u32 = 4;
    const ALREADY_REGISTERED: CuResult = 712;
    const NOT_SUPPORTED: CuResult = 801;
    const PAGE: usize = 4096;
    let at = p as usize;
    let end = at
        .checked_add(size)
        .and_then(|e| e.checked_next_multiple_of(PAGE));
    let (Some(end), false, 0) = (end, p.is_null() || size == 0, flags & !0xF) else {
        return Err(1); // INVALID_VALUE
    };
    if flags & IOMEMORY != 0 {
        log::warn!("vgpu: cuMemHostRegister with CU_MEMHOSTREGISTER_IOMEMORY is not supported");
        return Err(NOT_SUPPORTED);
    }
    let (c, _) = conn()?;
    let refuse = |why: String| {
        log::warn!("vgpu: cuMemHostRegister of {size} bytes at {p:p} is not supported: {why}; copies from and to it are staged");
        NOT_SUPPORTED
    };
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| refuse(format!("/proc/self/maps: {e}")))?;
    let maps = crate::hostreg::parse_maps(&maps);
    let (vma, _) = crate::hostreg::locate(&maps, at - at % PAGE, end).map_err(refuse)?;
    let file = crate::hostreg::open_file(&vma).map_err(refuse)?;
    // Whole pages of the file: huge pages for hugetlb memory.
    let page = vgpu_os::shm::file_page_size(std::os::fd::AsFd::as_fd(&file)).unwrap_or(PAGE);
    let start = at - at % page;
    let end = end.checked_next_multiple_of(page).ok_or(1u32)?;
    let (_, offset) = crate::hostreg::locate(&maps, start, end).map_err(refuse)?;
    let size_of_file = file.metadata().map_or(0, |m| m.len());
    if offset + (end - start) as u64 > size_of_file {
        return Err(refuse(
            "the range reaches into the partial page past the end of its file".into(),
        ));
    }
    // Held until the range is recorded, so that two threads cannot both register it. The
    // connection's lock is taken under it here, and nowhere is this one taken under that.
    let mut registered = lock(&REGISTERED);
    let overlaps = registered
        .values()
        .any(|&(_, s, n)| s < end && start < s + n);
    if overlaps || window_of(&lock(c), at, size).is_some() {
        return Err(ALREADY_REGISTERED);
    }
    let id = lock(c)
        .register_host(file.into(), offset, (end - start) as u64, start)
        .map_err(client_err)?;
    registered.insert(at, (id, start, end - start));
    log::debug!("vgpu: {size} bytes at {p:p} registered as window {id}");
    Ok(())
}

/// `cuMemHostUnregister` of an address [`register_host`] registered, once work that may
/// still use it is done.
pub fn unregister_host(p: *mut u8) -> Result<(), CuResult> {
    const NOT_REGISTERED: CuResult = 713;
    let (id, ..) = *lock(&REGISTERED).get(&(p as usize)).ok_or(NOT_REGISTERED)?;
    let (c, _) = conn()?;
    call(Command::CTX_SYNCHRONIZE(bytemuck::Zeroable::zeroed()), 0)?;
    lock(c).free_window(id).map_err(client_err)?;
    lock(&REGISTERED).remove(&(p as usize));
    Ok(())
}

/// Frees pinned host memory from [`alloc_host`].
pub fn free_host(p: *mut u8) -> Result<(), CuResult> {
    let (id, _) = pinned().remove(&(p as usize)).ok_or(1u32)?;
    let (c, _) = conn()?;
    // Work that still uses the window must finish first.
    call(Command::CTX_SYNCHRONIZE(bytemuck::Zeroable::zeroed()), 0)?;
    lock(c).free_window(id).map_err(client_err)
}
