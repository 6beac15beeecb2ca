//! Floors: what the hardware and the kernel can do at best, measured in the same run as
//! the stack, so that every figure of the stack is read as a ratio.
//!
//! The two-process floors fork before the benchmark starts any thread. This module holds
//! the crate's `unsafe`: an anonymous shared mapping, atomics on it, and `fork`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Round-trip latencies in nanoseconds, sorted.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// An anonymous shared mapping: a page of flags, then `extra` bytes of data.
struct SharedPage {
    ptr: *mut libc::c_void,
    len: usize,
}

impl SharedPage {
    fn new() -> Self {
        Self::with_data(0)
    }

    fn with_data(extra: usize) -> Self {
        let len = 4096 + extra;
        // SAFETY: an anonymous shared mapping of `len` bytes; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap of the ping-pong page failed");
        SharedPage { ptr, len }
    }

    /// The data bytes after the flag page.
    fn data(&self) -> *mut u8 {
        // SAFETY: the mapping is at least one page long.
        unsafe { self.ptr.cast::<u8>().add(4096) }
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i < 1024);
        // SAFETY: inside the page, 4-byte aligned; the page is only accessed atomically.
        unsafe { &*(self.ptr as *const AtomicU32).add(i * 16) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `with_data`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

fn fork() -> libc::pid_t {
    // SAFETY: called before the benchmark starts any thread (the caller guarantees it), so
    // the child is a faithful single-threaded copy; the child only spins on atomics or
    // eventfds and then `_exit`s.
    unsafe { libc::fork() }
}

fn child_exit() -> ! {
    // SAFETY: ends the forked child without running the parent's destructors.
    unsafe { libc::_exit(0) }
}

/// Two processes bouncing a counter through shared memory, both spinning. Must run before
/// any thread exists.
pub fn spin_ping_pong(rounds: usize) -> Vec<u64> {
    handoff_ping_pong(0, rounds)
}

/// Two processes, both spinning, bouncing `size` bytes through shared memory: one writes
/// them from its heap into the shared buffer and publishes them; the other copies them
/// into its own heap and answers. One round trip that carries a copy across cores, as
/// every synchronous copy between a process and the device does (the bytes were last
/// written by another core). Must run before any thread exists.
pub fn handoff_ping_pong(size: usize, rounds: usize) -> Vec<u64> {
    let page = SharedPage::with_data(size);
    let (ping, pong) = (page.word(0), page.word(1));
    let shared = page.data();
    let src = vec![0x5Au8; size];
    let mut dst = vec![0u8; size];
    let pid = fork();
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        for i in 1..=rounds as u32 + 100 {
            while ping.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            // SAFETY: `size` bytes of the mapping after the flag page, published by the
            // parent's release store above; `dst` is this process's own buffer.
            unsafe { std::ptr::copy_nonoverlapping(shared, dst.as_mut_ptr(), size) };
            std::hint::black_box(&mut dst);
            pong.store(i, Ordering::Release);
        }
        child_exit();
    }
    let mut lat = Vec::with_capacity(rounds);
    for i in 1..=rounds as u32 + 100 {
        let t0 = Instant::now();
        // SAFETY: as above; the child reads the bytes only after the release store below,
        // and is done with the previous round's (it answered).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), shared, size) };
        ping.store(i, Ordering::Release);
        while pong.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        if i > 100 {
            lat.push(t0.elapsed().as_nanos() as u64);
        }
    }
    wait_child(pid);
    lat.sort_unstable();
    lat
}

fn wait_child(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

fn eventfd() -> i32 {
    // SAFETY: plain syscall; checked below.
    let fd = unsafe { libc::eventfd(0, 0) };
    assert!(fd >= 0, "eventfd failed");
    fd
}

fn efd_write(fd: i32) {
    let one = 1u64;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

fn efd_read(fd: i32) {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into a valid u64 from an eventfd (blocking).
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}

/// Two processes bouncing a token through two eventfds, both sleeping in `read`.
pub fn eventfd_ping_pong(rounds: usize) -> Vec<u64> {
    let (a, b) = (eventfd(), eventfd());
    let pid = fork();
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        for _ in 0..rounds + 100 {
            efd_read(a);
            efd_write(b);
        }
        child_exit();
    }
    let mut lat = Vec::with_capacity(rounds);
    for i in 0..rounds + 100 {
        let t0 = Instant::now();
        efd_write(a);
        efd_read(b);
        if i >= 100 {
            lat.push(t0.elapsed().as_nanos() as u64);
        }
    }
    wait_child(pid);
    // SAFETY: closes the two eventfds made above.
    unsafe {
        libc::close(a);
        libc::close(b);
    }
    lat.sort_unstable();
    lat
}

/// Bytes per second of `op`, which moves `bytes` each time: the best of three runs that
/// each repeat it for at least `min_time` and end with `settle` (waiting for work `op` left
/// in flight) before the clock stops.
pub fn best_rate(
    bytes: usize,
    min_time: Duration,
    mut op: impl FnMut(),
    mut settle: impl FnMut(),
) -> f64 {
    let mut best = 0f64;
    for _ in 0..3 {
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < min_time || n == 0 {
            op();
            n += 1;
        }
        settle();
        best = best.max(n as f64 * bytes as f64 / t0.elapsed().as_secs_f64());
    }
    best
}

/// Single-thread memcpy bandwidth in bytes per second for `size`-byte copies (best of a
/// few runs of at least `min_time`).
pub fn memcpy_bandwidth(size: usize, min_time: Duration) -> f64 {
    let src = vec![0x5Au8; size];
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src);
    let copy = || {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
    };
    best_rate(size, min_time, copy, || {})
}

/// Single-thread memcpy bandwidth between a shared-memory mapping (a memfd, as DMA windows
/// are) and ordinary heap memory, in bytes per second: `into_shared` copies heap → shared
/// (the direction of a device-to-host copy), else shared → heap (host-to-device). This is
/// the one copy a transfer through a window cannot avoid, between the same kinds of memory.
pub fn memcpy_shared_bandwidth(size: usize, min_time: Duration, into_shared: bool) -> f64 {
    // SAFETY: memfd_create with a NUL-terminated name; the fd is checked and closed below.
    let fd = unsafe { libc::memfd_create(c"vgpu-bench-floor".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: a fresh memfd we own.
    let sized = unsafe { libc::ftruncate(fd, size as libc::off_t) };
    assert_eq!(sized, 0, "ftruncate failed");
    // SAFETY: a shared mapping of the whole memfd; checked for failure below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED, "mmap of the memfd failed");
    // SAFETY: the mapping is ours, `size` bytes, and only this function uses it (as a byte
    // slice, until the munmap below).
    let shared = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), size) };
    // Both sides written first, so that no copy meets an unpopulated page (an untouched
    // zeroed heap buffer would be read from the shared zero page).
    shared.fill(0x5A);
    let mut heap = vec![0xA5u8; size];
    let copy = || {
        if into_shared {
            shared.copy_from_slice(&heap);
        } else {
            heap.copy_from_slice(shared);
        }
        std::hint::black_box(&mut heap);
    };
    let best = best_rate(size, min_time, copy, || {});
    // SAFETY: unmaps the mapping made above (no reference to it remains) and closes our fd.
    unsafe {
        libc::munmap(ptr, size);
        libc::close(fd);
    }
    best
}

/// Thread CPU time in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The least a client can spend posting one launch: write a 64-byte entry and a 64-byte
/// payload into a ring in shared memory, publish the tail (release), fence, read a flag.
/// CPU nanoseconds per post.
pub fn ring_post_floor(posts: usize) -> f64 {
    let page = SharedPage::new();
    let mut ring = vec![0u8; 64 * 1024];
    let entry = [0x5Au8; 128];
    let t0 = thread_cpu_ns();
    for i in 0..posts {
        let at = (i * 128) % ring.len();
        ring[at..at + 128].copy_from_slice(&entry);
        std::hint::black_box(&mut ring);
        page.word(0).store(i as u32, Ordering::Release);
        std::sync::atomic::fence(Ordering::SeqCst);
        std::hint::black_box(page.word(1).load(Ordering::Acquire));
    }
    (thread_cpu_ns() - t0) as f64 / posts as f64
}
