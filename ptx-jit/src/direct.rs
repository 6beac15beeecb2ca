//! [`DirectMemory`]: device memory that compiled code loads from with plain machine loads,
//! and that the interpreter reaches without a lock.
//!
//! Every access to the memory, while a `DirectMemory` over it lives, is atomic: the
//! interpreter's through `std::sync::atomic` (relaxed, naturally aligned), compiled code's
//! through aligned machine loads, which the host's memory model makes single-copy atomic.
//! So blocks running at once on several host threads race only as threads of a GPU do,
//! with no undefined behaviour on the host.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use vgpu_ptx::exec::Memory;

/// One allocation: device addresses `[base, base + len)` at host address `host`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Span {
    pub(crate) base: u64,
    pub(crate) len: u64,
    pub(crate) host: *mut u8,
}

/// Device memory as host memory, for the length of a launch.
pub struct DirectMemory {
    /// Sorted by `base`, disjoint.
    spans: Vec<Span>,
    /// The memory [`DirectMemory::zeroed`] made, which its one span points into.
    _owned: Option<Box<[u64]>>,
}

// SAFETY: the spans point to memory that, by the contract of `new`, nothing but this value
// accesses while it lives, and every access it makes is atomic: sharing it between threads
// makes no data race.
unsafe impl Send for DirectMemory {}
// SAFETY: as for `Send`.
unsafe impl Sync for DirectMemory {}

impl DirectMemory {
    /// Memory made of `(device address, host address, bytes)` allocations. Fails if two
    /// overlap, or a device or host address is not a multiple of 8 (accesses aligned on
    /// the device must be aligned on the host).
    ///
    /// # Safety
    ///
    /// For as long as the result lives, each allocation's `bytes` at its host address must
    /// stay valid for reads and writes, and must not be accessed but through the result.
    pub unsafe fn new(
        allocations: impl IntoIterator<Item = (u64, *mut u8, usize)>,
    ) -> Result<DirectMemory, String> {
        let mut spans: Vec<Span> = Vec::new();
        for (base, host, len) in allocations {
            if base % 8 != 0 || host as usize % 8 != 0 {
                return Err(format!("allocation at {base:#x} is not 8-byte aligned"));
            }
            spans.push(Span {
                base,
                len: len as u64,
                host,
            });
        }
        spans.sort_by_key(|s| s.base);
        for w in spans.windows(2) {
            if w[0]
                .base
                .checked_add(w[0].len)
                .is_none_or(|end| end > w[1].base)
            {
                return Err(format!("allocations at {:#x} overlap", w[0].base));
            }
        }
        Ok(DirectMemory {
            spans,
            _owned: None,
        })
    }

    /// `len` zeroed bytes of memory of its own at device address `base` (a multiple of 8),
    /// for tests and benchmarks.
    pub fn zeroed(base: u64, len: usize) -> Result<DirectMemory, String> {
        let mut owned = vec![0u64; len.div_ceil(8)].into_boxed_slice();
        let host = owned.as_mut_ptr().cast::<u8>();
        // SAFETY: `owned` is kept in the result and never touched but through its span; a
        // box's memory does not move when the box does.
        let mut m = unsafe { DirectMemory::new([(base, host, len)])? };
        m._owned = Some(owned);
        Ok(m)
    }

    /// Copies `data` to device address `addr`; false outside every allocation.
    pub fn put(&self, addr: u64, data: &[u8]) -> bool {
        self.write(addr, data)
    }

    /// `n` bytes from device address `addr`, if they are inside one allocation.
    pub fn get(&self, addr: u64, n: usize) -> Option<Vec<u8>> {
        let mut b = vec![0; n];
        self.read(addr, &mut b).then_some(b)
    }

    /// The allocation holding `[addr, addr + size)`.
    pub(crate) fn span(&self, addr: u64, size: u64) -> Option<Span> {
        let i = self
            .spans
            .partition_point(|s| s.base <= addr)
            .checked_sub(1)?;
        let s = self.spans[i];
        let off = addr - s.base;
        (off.checked_add(size)? <= s.len).then_some(s)
    }

    /// The host address of `[addr, addr + size)`, inside one allocation.
    fn host(&self, addr: u64, size: u64) -> Option<*mut u8> {
        let s = self.span(addr, size)?;
        // In bounds: `span` checked that the range lies inside the allocation.
        Some(s.host.wrapping_add((addr - s.base) as usize))
    }

    /// The host address of `[addr, addr + size)`, looked up in `last` (the allocation the
    /// previous access of a warp's run found) before the whole memory.
    fn host_near(&self, last: &mut Option<Span>, addr: u64, size: u32) -> Option<*mut u8> {
        let size = u64::from(size);
        let inside = |s: &Span| {
            addr.checked_sub(s.base)
                .and_then(|o| o.checked_add(size))
                .is_some_and(|end| end <= s.len)
        };
        let s = match *last {
            Some(s) if inside(&s) => s,
            _ => {
                let s = self.span(addr, size)?;
                *last = Some(s);
                s
            }
        };
        // In bounds: `inside` or `span` checked that the range lies in the allocation.
        Some(s.host.wrapping_add((addr - s.base) as usize))
    }

    /// The `size`-byte little-endian value at `addr` (`size` of 1, 2, 4 or 8).
    pub fn load(&self, addr: u64, size: u32) -> Option<u64> {
        let p = self.host(addr, u64::from(size))?;
        // SAFETY: `host` found the range inside an allocation of `self`.
        Some(unsafe { access(p, size, None) })
    }

    /// Stores the low `size` bytes of `v` at `addr`; false outside every allocation.
    pub fn store(&self, addr: u64, size: u32, v: u64) -> bool {
        match self.host(addr, u64::from(size)) {
            Some(p) => {
                // SAFETY: `host` found the range inside an allocation of `self`.
                unsafe { access(p, size, Some(v)) };
                true
            }
            None => false,
        }
    }

    /// Replaces the `size`-byte value at `addr` with `f(old)` atomically; gives `old`.
    /// `None` outside every allocation, or for an access not aligned to its size (which
    /// the interpreter refuses before it gets here).
    pub fn update(&self, addr: u64, size: u32, f: &mut dyn FnMut(u64) -> u64) -> Option<u64> {
        let p = self.host(addr, u64::from(size))?;
        if p as usize % size as usize != 0 {
            return None;
        }
        macro_rules! cas {
            ($atomic:ty, $t:ty) => {{
                // SAFETY: as in `load`.
                let a = unsafe { <$atomic>::from_ptr(p.cast()) };
                let mut old = a.load(Relaxed);
                loop {
                    let new = f(u64::from(old)) as $t;
                    match a.compare_exchange_weak(old, new, Relaxed, Relaxed) {
                        Ok(_) => return Some(u64::from(old)),
                        Err(now) => old = now,
                    }
                }
            }};
        }
        match size {
            1 => cas!(AtomicU8, u8),
            2 => cas!(AtomicU16, u16),
            4 => cas!(AtomicU32, u32),
            _ => cas!(AtomicU64, u64),
        }
    }
}

/// Loads the `size`-byte value at `p` (`None`), or stores the low bytes of `v` there
/// (`Some(v)`, giving 0): atomically, byte by byte where `p` is not aligned to `size`.
///
/// # Safety
///
/// `p` must point at `size` bytes inside an allocation of a live [`DirectMemory`].
unsafe fn access(p: *mut u8, size: u32, v: Option<u64>) -> u64 {
    if p as usize % size as usize != 0 {
        let mut b = v.unwrap_or(0).to_le_bytes();
        for (k, x) in b.iter_mut().take(size as usize).enumerate() {
            // SAFETY: byte `k` of the range the caller checked; bytes are always aligned,
            // and the memory is only accessed atomically (`DirectMemory::new`).
            let a = unsafe { AtomicU8::from_ptr(p.wrapping_add(k)) };
            match v {
                Some(_) => a.store(*x, Relaxed),
                None => *x = a.load(Relaxed),
            }
        }
        return if v.is_some() {
            0
        } else {
            u64::from_le_bytes(b)
        };
    }
    // SAFETY: `p` is inside an allocation (the caller checked), aligned to `size` (checked
    // just above), and the memory is only accessed atomically (`DirectMemory::new`).
    unsafe {
        match (size, v) {
            (1, None) => u64::from(AtomicU8::from_ptr(p).load(Relaxed)),
            (2, None) => u64::from(AtomicU16::from_ptr(p.cast()).load(Relaxed)),
            (4, None) => u64::from(AtomicU32::from_ptr(p.cast()).load(Relaxed)),
            (_, None) => AtomicU64::from_ptr(p.cast()).load(Relaxed),
            (1, Some(v)) => {
                AtomicU8::from_ptr(p).store(v as u8, Relaxed);
                0
            }
            (2, Some(v)) => {
                AtomicU16::from_ptr(p.cast()).store(v as u16, Relaxed);
                0
            }
            (4, Some(v)) => {
                AtomicU32::from_ptr(p.cast()).store(v as u32, Relaxed);
                0
            }
            (_, Some(v)) => {
                AtomicU64::from_ptr(p.cast()).store(v, Relaxed);
                0
            }
        }
    }
}

impl Memory for DirectMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if let n @ (1 | 2 | 4 | 8) = buf.len() {
            let Some(v) = self.load(addr, n as u32) else {
                return false;
            };
            buf.copy_from_slice(&v.to_le_bytes()[..n]);
            return true;
        }
        if self.host(addr, buf.len() as u64).is_none() {
            return false;
        }
        for (k, b) in buf.iter_mut().enumerate() {
            match self.load(addr + k as u64, 1) {
                Some(v) => *b = v as u8,
                None => return false,
            }
        }
        true
    }

    fn write(&self, addr: u64, data: &[u8]) -> bool {
        if let n @ (1 | 2 | 4 | 8) = data.len() {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(data);
            return self.store(addr, n as u32, u64::from_le_bytes(b));
        }
        if self.host(addr, data.len() as u64).is_none() {
            return false;
        }
        data.iter()
            .enumerate()
            .all(|(k, b)| self.store(addr + k as u64, 1, u64::from(*b)))
    }

    fn atomic(&self, addr: u64, size: u32, f: &mut dyn FnMut(u64) -> u64) -> Option<u64> {
        self.update(addr, size, f)
    }

    fn read_many(&self, addrs: &[u64], size: u32, out: &mut [u64]) -> Result<(), usize> {
        let mut last = None;
        for (k, (&a, o)) in addrs.iter().zip(out.iter_mut()).enumerate() {
            let p = self.host_near(&mut last, a, size).ok_or(k)?;
            // SAFETY: `host_near` found the range inside an allocation of `self`.
            *o = unsafe { access(p, size, None) };
        }
        Ok(())
    }

    fn write_many(&self, addrs: &[u64], size: u32, values: &[u64]) -> Result<(), usize> {
        let mut last = None;
        for (k, (&a, &v)) in addrs.iter().zip(values).enumerate() {
            let p = self.host_near(&mut last, a, size).ok_or(k)?;
            // SAFETY: `host_near` found the range inside an allocation of `self`.
            unsafe { access(p, size, Some(v)) };
        }
        Ok(())
    }

    fn direct(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        Some(self)
    }
}

/// The load sites of a run that keep their own last allocation (the later ones look theirs
/// up at every load: a slot's limit holds for its own site's access size only).
pub(crate) const SITES: usize = 32;

/// The allocation a load site found last, for compiled code to check an address against
/// inline. The site's accesses have one size, a power of two at most 8, and allocations
/// start 8-byte aligned; so an access is aligned and inside when `addr - base` (wrapping),
/// rotated right by log2(size), is below `lim`, the allocation's length in accesses
/// (0 for none).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Site {
    pub(crate) base: u64,
    pub(crate) lim: u64,
    pub(crate) host: usize,
}

/// What compiled code's loads need: the memory, each site's last allocation, and the first
/// fault.
#[repr(C)]
pub(crate) struct LoadCtx {
    pub(crate) sites: [Site; SITES],
    pub(crate) mem: *const DirectMemory,
    /// The length of the warp's registers.
    pub(crate) regs_len: usize,
    /// The block's shared memory, and its length.
    pub(crate) shared: *mut u8,
    pub(crate) shared_len: u64,
    /// For accesses of 1, 2, 4 and 8 bytes (by the log of the size): how many aligned
    /// places there are in the shared memory where four of them in a row fit (one group's
    /// coalesced access, `Checked::shared_span`), worked out once for the call.
    pub(crate) shared_fours: [u64; 4],
    /// Where a store whose guard is false, or that faults, goes.
    pub(crate) sink: [u64; 2],
    /// 0: none; 1: illegal address; 2: misaligned; 3: a warp-wide instruction refused.
    pub(crate) fault: u32,
    pub(crate) fault_size: u32,
    pub(crate) fault_addr: u64,
    pub(crate) fault_line: u64,
    /// The run of the region (its index) where the lanes stopped, or [`PARTED`].
    pub(crate) exit: u32,
    /// Where each group of four lanes stopped in a pass (`codegen::pass`): the run's index
    /// times 16, plus the group's lanes (bits 0 to 3) that took its branch.
    pub(crate) groups: [u32; 8],
}

/// `LoadCtx::exit` when the groups of a pass stopped at different runs: each group's own
/// is in `LoadCtx::groups`.
pub(crate) const PARTED: u32 = u32::MAX;

impl LoadCtx {
    /// Makes `shared` the block's shared memory for the next call.
    pub(crate) fn set_shared(&mut self, shared: &mut [u8]) {
        let (at, len) = (shared.as_mut_ptr(), shared.len() as u64);
        // The same block's memory as at the last call (every warp of a block, every call
        // of a thread's blocks: each worker keeps one block state).
        if (at, len) == (self.shared, self.shared_len) {
            return;
        }
        self.shared = at;
        self.shared_len = len;
        for (k, fours) in self.shared_fours.iter_mut().enumerate() {
            *fours = (self.shared_len >> k).saturating_sub(3);
        }
    }

    /// A context over memory `mem` with every site empty, no shared memory and no fault.
    pub(crate) fn new(mem: *const DirectMemory) -> LoadCtx {
        LoadCtx {
            sites: [Site::default(); SITES],
            mem,
            regs_len: 0,
            shared: std::ptr::null_mut(),
            shared_len: 0,
            shared_fours: [0; 4],
            sink: [0; 2],
            fault: 0,
            fault_size: 0,
            fault_addr: 0,
            fault_line: 0,
            exit: 0,
            groups: [0; 8],
        }
    }
}

/// Eight zero bytes: where a load that faults, or whose guard is false, reads.
static ZERO: u64 = 0;

helpers! {
/// The host address compiled code loads `size` bytes of device address `addr` from, for
/// load site `at & 0xFF` of an instruction at PTX line `(at >> 8) & 0xFFFF_FFFF` (the
/// bits above are the call's own tag, `codegen::Checked::where_v`), when the site's last
/// allocation does not hold it; the site then remembers the allocation (sites past
/// [`SITES`] have no slot). When `on` is 0
/// (the guard is false), or the access faults (the first fault is recorded in `ctx`),
/// eight zero bytes.
pub(crate) fn find(
    ctx: *mut LoadCtx,
    addr: u64,
    size: u64,
    at: u64,
    on: u64,
) -> *const u8 {
    // SAFETY: compiled code passes the `LoadCtx` that `Run::run` lent the call (its
    // thread's, from the launch's `State`), which lives for the whole call, and nothing
    // else uses it meanwhile.
    let ctx = unsafe { &mut *ctx };
    let zero = &ZERO as *const u64 as *const u8;
    let (site, line) = ((at & 0xFF) as usize, (at >> 8) & 0xFFFF_FFFF);
    if on == 0 || ctx.fault != 0 || size == 0 {
        return zero;
    }
    if addr % size != 0 {
        (ctx.fault, ctx.fault_addr, ctx.fault_size, ctx.fault_line) = (2, addr, size as u32, line);
        return zero;
    }
    // A generic address (bit 63 of `at`) in the shared window is the block's shared
    // memory, as the interpreter places it; one in the local window is no allocation's
    // (compiled code makes generic accesses only for kernels with no local memory, where
    // the interpreter finds nothing there either).
    use vgpu_ptx::exec::{LOCAL_WINDOW, SHARED_WINDOW};
    if at >> 63 == 1 && (SHARED_WINDOW..LOCAL_WINDOW).contains(&addr) {
        let shared = addr - SHARED_WINDOW;
        if shared >= ctx.shared_len || ctx.shared_len - shared < size {
            (ctx.fault, ctx.fault_addr, ctx.fault_size, ctx.fault_line) =
                (1, addr, size as u32, line);
            return zero;
        }
        return ctx.shared.wrapping_add(shared as usize);
    }
    // SAFETY: `mem` is the `DirectMemory` that `Run::run` borrowed for the call.
    match unsafe { &*ctx.mem }.span(addr, size) {
        Some(s) => {
            if let Some(slot) = ctx.sites.get_mut(site).filter(|_| size.is_power_of_two()) {
                *slot = Site {
                    base: s.base,
                    lim: s.len >> size.trailing_zeros(),
                    host: s.host as usize,
                };
            }
            s.host.wrapping_add((addr - s.base) as usize)
        }
        None => {
            (ctx.fault, ctx.fault_addr, ctx.fault_size, ctx.fault_line) =
                (1, addr, size as u32, line);
            zero
        }
    }
}
}

helpers! {
/// [`find`] for a store: where a store whose guard is false or that faults goes is
/// `ctx.sink`, not the static zero.
pub(crate) fn find_store(
    ctx: *mut LoadCtx,
    addr: u64,
    size: u64,
    at: u64,
    on: u64,
) -> *mut u8 {
    let p = find(ctx, addr, size, at, on);
    if p == &ZERO as *const u64 as *const u8 {
        // SAFETY: as in `find`: the `LoadCtx` of the call, used by nothing else meanwhile.
        return unsafe { (*ctx).sink.as_mut_ptr() as *mut u8 };
    }
    p as *mut u8
}
}

helpers! {
/// The host address of a `size`-byte access to byte `addr` of the block's shared memory,
/// for an instruction at PTX line `at >> 8`, when compiled code's inline check failed or
/// the guard `on` is false: the address in shared memory when it is inside and aligned,
/// else `ctx.sink`, with the first fault recorded as the interpreter would report it
/// (misaligned, then illegal address).
pub(crate) fn find_shared(
    ctx: *mut LoadCtx,
    addr: u64,
    size: u64,
    at: u64,
    on: u64,
) -> *mut u8 {
    // SAFETY: as in `find`: the `LoadCtx` of the call, used by nothing else meanwhile.
    let ctx = unsafe { &mut *ctx };
    let sink = ctx.sink.as_mut_ptr() as *mut u8;
    let line = at >> 8;
    if on == 0 || ctx.fault != 0 || size == 0 || size > 8 {
        return sink;
    }
    if addr % size != 0 {
        (ctx.fault, ctx.fault_addr, ctx.fault_size, ctx.fault_line) = (2, addr, size as u32, line);
        return sink;
    }
    if addr >= ctx.shared_len || ctx.shared_len - addr < size {
        (ctx.fault, ctx.fault_addr, ctx.fault_size, ctx.fault_line) = (1, addr, size as u32, line);
        return sink;
    }
    ctx.shared.wrapping_add(addr as usize)
}
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x7f00_0000_0000;

    #[test]
    fn accesses_stay_inside_allocations() {
        let m = DirectMemory::zeroed(BASE, 20).unwrap();
        assert!(m.store(BASE + 8, 8, 0x1122_3344_5566_7788));
        assert_eq!(m.load(BASE + 8, 4), Some(0x5566_7788));
        assert_eq!(m.load(BASE + 12, 2), Some(0x3344));
        assert_eq!(m.load(BASE + 16, 4), Some(0));
        // One byte past the end, before the start, and where the sum wraps.
        assert_eq!(m.load(BASE + 17, 4), None);
        assert!(!m.store(BASE + 20, 1, 0));
        assert_eq!(m.load(BASE - 1, 1), None);
        assert_eq!(m.load(u64::MAX - 2, 8), None);
        // Unaligned plain accesses work byte by byte; unaligned atomics are refused.
        assert!(m.store(BASE + 3, 4, 0xAABB_CCDD));
        assert_eq!(m.load(BASE + 3, 4), Some(0xAABB_CCDD));
        assert_eq!(m.update(BASE + 3, 4, &mut |v| v + 1), None);
        assert_eq!(m.update(BASE + 8, 4, &mut |v| v + 1), Some(0x5566_7788));
        assert_eq!(m.load(BASE + 8, 4), Some(0x5566_7789));
        assert_eq!(m.get(BASE + 18, 2), Some(vec![0, 0]));
        assert_eq!(m.get(BASE + 18, 3), None);
    }

    #[test]
    fn allocations_must_be_aligned_and_disjoint() {
        let mut a = vec![0u64; 4];
        let p = a.as_mut_ptr().cast::<u8>();
        let try_new = |spans: &[(u64, usize, usize)]| {
            let spans = spans.iter().map(|&(b, at, n)| (b, p.wrapping_add(at), n));
            // SAFETY: `a` outlives the result, which is dropped at once, untouched.
            unsafe { DirectMemory::new(spans) }.is_ok()
        };
        assert!(!try_new(&[(BASE, 0, 16), (BASE + 8, 16, 8)]));
        assert!(!try_new(&[(BASE + 4, 0, 8)]));
        assert!(!try_new(&[(BASE, 4, 8)]));
        assert!(try_new(&[(BASE + 16, 0, 16), (BASE, 16, 16)]));
    }

    #[test]
    fn find_records_the_first_fault_and_skips_guarded_loads() {
        let m = DirectMemory::zeroed(BASE, 64).unwrap();
        assert!(m.store(BASE + 8, 4, 7));
        let mut ctx = ctx(&m, &mut []);
        let zero = &ZERO as *const u64 as *const u8;
        // A hit remembers its allocation in its site: 64 bytes hold 16 accesses of 4.
        let p = find(&mut ctx, BASE + 8, 4, 5 << 8 | 3, 1);
        assert_ne!(p, zero);
        let site = ctx.sites[3];
        assert_eq!((site.base, site.lim), (BASE, 16));
        // A false guard reads zeros and faults on nothing.
        assert_eq!(find(&mut ctx, 0, 4, 6 << 8, 0), zero);
        assert_eq!(ctx.fault, 0);
        assert_eq!(find(&mut ctx, BASE + 2, 4, 7 << 8, 1), zero);
        assert_eq!(
            (ctx.fault, ctx.fault_addr, ctx.fault_line),
            (2, BASE + 2, 7)
        );
        // The first fault stays.
        assert_eq!(find(&mut ctx, 8, 4, 9 << 8, 1), zero);
        assert_eq!((ctx.fault, ctx.fault_line), (2, 7));
        ctx.fault = 0;
        assert_eq!(find(&mut ctx, BASE + 64, 4, 9 << 8, 1), zero);
        assert_eq!(
            (ctx.fault, ctx.fault_addr, ctx.fault_size),
            (1, BASE + 64, 4)
        );
    }

    fn ctx(mem: *const DirectMemory, shared: &mut [u8]) -> LoadCtx {
        let mut ctx = LoadCtx::new(mem);
        ctx.set_shared(shared);
        ctx
    }

    /// Four accesses in a row of 1, 2, 4 or 8 bytes fit at `len / size - 3` aligned places
    /// of `len` bytes of shared memory (none where fewer than four fit).
    #[test]
    fn four_accesses_fit_where_the_last_one_ends_inside() {
        for (len, fours) in [
            (64, [61, 29, 13, 5]),
            (32, [29, 13, 5, 1]),
            (12, [9, 3, 0, 0]),
            (3, [0, 0, 0, 0]),
            (0, [0, 0, 0, 0]),
        ] {
            let mut shared = vec![0u8; len];
            let ctx = ctx(std::ptr::null(), &mut shared);
            assert_eq!(
                (ctx.shared_len, ctx.shared_fours),
                (len as u64, fours),
                "{len} bytes"
            );
        }
    }

    /// Stores whose guard is false or that fault go to the sink, never to the static zero
    /// loads read, and never into memory.
    #[test]
    fn stores_that_do_not_happen_go_to_the_sink() {
        let m = DirectMemory::zeroed(BASE, 64).unwrap();
        let mut c = ctx(&m, &mut []);
        let sink = c.sink.as_mut_ptr() as *mut u8;
        assert_eq!(find_store(&mut c, BASE + 8, 8, 1 << 8, 0), sink);
        assert_eq!(c.fault, 0);
        assert_eq!(find_store(&mut c, BASE + 64, 1, 2 << 8, 1), sink);
        assert_eq!((c.fault, c.fault_addr, c.fault_line), (1, BASE + 64, 2));
        c.fault = 0;
        let p = find_store(&mut c, BASE + 56, 8, 3 << 8, 1);
        assert_ne!(p, sink);
        assert_eq!(c.fault, 0);
    }

    /// Shared memory accesses: inside and aligned, or the interpreter's fault (misaligned
    /// before outside), with no wrap-around of `addr + size`.
    #[test]
    fn shared_accesses_are_checked_as_interpreted() {
        let mut shared = [0u8; 24];
        let start = shared.as_mut_ptr();
        let mut c = ctx(std::ptr::null(), &mut shared);
        let sink = c.sink.as_mut_ptr() as *mut u8;
        assert_eq!(
            find_shared(&mut c, 16, 8, 1 << 8, 1),
            start.wrapping_add(16)
        );
        assert_eq!(
            find_shared(&mut c, 23, 1, 1 << 8, 1),
            start.wrapping_add(23)
        );
        // A false guard touches nothing and faults on nothing.
        assert_eq!(find_shared(&mut c, 1 << 40, 4, 1 << 8, 0), sink);
        assert_eq!(c.fault, 0);
        for (addr, size, fault) in [
            (24, 1, 1),
            (20, 8, 2),
            (24, 8, 1),
            (u64::MAX - 3, 4, 1),
            (u64::MAX, 2, 2),
        ] {
            c.fault = 0;
            assert_eq!(find_shared(&mut c, addr, size, 7 << 8, 1), sink);
            assert_eq!(
                (c.fault, c.fault_addr, c.fault_size, c.fault_line),
                (fault, addr, size as u32, 7),
                "{addr:#x}+{size}"
            );
        }
        // The first fault stays.
        assert_eq!(find_shared(&mut c, 0, 4, 9 << 8, 1), sink);
        assert_eq!(c.fault_line, 7);
    }
}
