//! Surviving SIGBUS on guest memory.
//!
//! vgpu-stub maps the memfds a VMM hands it for DMA. If the VMM (or anyone holding the
//! memfd) shrinks one, an access to the lost part raises SIGBUS, whose default action ends
//! the process, and with it every tenant's device. The handler installed here turns such a
//! fault into a failed DMA access: when the faulting address lies in a range registered with
//! [`protect`], it maps a private anonymous page over the lost one and returns, so the
//! access completes (reading zeros, writing into the fresh page), and it counts the fault;
//! [`checked`] turns a count that moved during an access into an error. A SIGBUS anywhere
//! else keeps its default action.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

/// How many ranges can be registered at once (a VMM maps a few regions of guest RAM).
const SLOTS: usize = 1024;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
}

#[allow(
    clippy::declare_interior_mutable_const,
    reason = "used only to fill RANGES"
)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
};

static RANGES: [Slot; SLOTS] = [EMPTY; SLOTS];
static FAULTS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();
/// The action that was installed before ours (the standard library's), for faults that are
/// not ours.
static PREVIOUS: std::sync::OnceLock<Previous> = std::sync::OnceLock::new();

struct Previous(libc::sigaction);
// SAFETY: a sigaction is plain data (a handler address, flags and a mask), only read.
unsafe impl Sync for Previous {}
// SAFETY: as above.
unsafe impl Send for Previous {}

/// A registered range; dropping it unregisters the range.
#[derive(Debug)]
pub struct Guard(usize);

impl Drop for Guard {
    fn drop(&mut self) {
        RANGES[self.0].len.store(0, Ordering::Release);
        RANGES[self.0].start.store(0, Ordering::Release);
    }
}

/// Registers `[addr, addr + len)` (a mapping of guest memory) with the handler, installing
/// it on first use. `None` when every slot is taken or the handler cannot be installed (a
/// SIGBUS there then ends the process, as it would without this module).
pub fn protect(addr: usize, len: usize) -> Option<Guard> {
    INSTALL.call_once(install);
    for (i, slot) in RANGES.iter().enumerate() {
        if slot
            .start
            .compare_exchange(0, addr, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            slot.len.store(len, Ordering::Release);
            return Some(Guard(i));
        }
    }
    log::warn!("no slot left to guard guest memory at {addr:#x} against SIGBUS");
    None
}

/// SIGBUS faults on guest memory survived so far.
pub fn faults() -> u64 {
    FAULTS.load(Ordering::Acquire)
}

/// Runs the access `f`; if a guest-memory SIGBUS was survived meanwhile, the access failed:
/// `lost()` is returned instead.
pub fn checked<T, E>(f: impl FnOnce() -> Result<T, E>, lost: impl FnOnce() -> E) -> Result<T, E> {
    let before = faults();
    let r = f();
    if faults() != before {
        return Err(lost());
    }
    r
}

fn install() {
    // SAFETY: `on_sigbus` has the signature SA_SIGINFO expects; the sigaction struct is
    // zeroed and then filled in; the old action is not needed.
    let (rc, old) = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let mut old: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        (libc::sigaction(libc::SIGBUS, &sa, &mut old), old)
    };
    if rc == 0 {
        let _ = PREVIOUS.set(Previous(old));
    } else {
        log::warn!(
            "cannot install the SIGBUS handler for guest memory: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The handler: only atomics and `mmap`/`sigaction` system calls.
extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for a SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let inside = RANGES.iter().any(|s| {
        let start = s.start.load(Ordering::Acquire);
        let len = s.len.load(Ordering::Acquire);
        start != 0 && addr >= start && addr - start < len
    });
    if inside {
        // The page sizes guest memory may use: 4 KiB, 2 MiB and 1 GiB (hugetlb mappings
        // can only be replaced whole).
        for page in [4usize << 10, 2 << 20, 1 << 30] {
            let at = addr & !(page - 1);
            // SAFETY: `at..at + page` lies in a registered mapping of guest memory, which
            // only DMA accesses touch, through bounds-checked volatile copies; replacing its
            // lost page with a fresh one leaves every other mapping alone.
            let p = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                FAULTS.fetch_add(1, Ordering::AcqRel);
                return;
            }
        }
    }
    // Not ours (or not replaceable): the action from before ours (else the default) takes
    // the fault when the access faults again.
    // SAFETY: reinstalling a previously installed action, or the default one.
    unsafe {
        match PREVIOUS.get() {
            Some(p) => {
                libc::sigaction(libc::SIGBUS, &p.0, std::ptr::null_mut());
            }
            None => {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
            }
        }
    }
}
