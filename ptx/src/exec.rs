//! The interpreter: runs a [`Kernel`] over a grid.
//!
//! Blocks are spread over host threads; the warps of a block run on one thread, each until
//! it reaches a barrier or ends, so `bar.sync` needs no locking. A warp executes one
//! instruction for all of its lanes that stand at the same instruction (the lanes with the
//! lowest program counter first), so divergent branches run one side after the other and
//! the lanes meet again where their paths join; warp-collective instructions (`shfl`,
//! `vote`) see exactly the lanes that execute together, as on a GPU. Each instruction is
//! decoded once and applied to every lane, registers stored lane by lane.
//!
//! Memory: global (and constant) addresses go to the user's [`Memory`], checked by it;
//! shared memory is the block's own buffer, local memory each thread's; the parameter buffer
//! is read-only. Generic addresses of shared and local memory live in two windows
//! ([`SHARED_WINDOW`], [`LOCAL_WINDOW`]) no device allocation can reach. Any access outside
//! what exists ends the launch with [`Fault::IllegalAddress`]; a misaligned one with
//! [`Fault::Misaligned`].
//!
//! Native code: where [`Launch::native`] has a compiled run for the instruction a warp's
//! lanes stand at ([`Native`], [`NativeRun`]), and no other lane of the warp waits inside
//! it, the lanes run it in one call; the interpreter then carries on after it. A run
//! computes what the interpreter would ([`lane_value`] is the arithmetic both share). Each
//! host thread of a launch holds the native code's state for the launch
//! ([`Native::state`]) and lends it to every run it calls.
//!
//! Block state: each host thread of a launch (a worker) has one block's registers, local
//! and shared memory, and runs its blocks in them one after another. A [`BlockPool`]
//! (given in [`Launch::pool`], one per tenant) keeps the workers' register files from one
//! launch to the next, cleared only where the kernel may read a register before writing
//! it ([`Kernel::read_first`]): a launch sees zeros there, as in a fresh file.
//!
//! Arithmetic follows the PTX ISA. `.approx` operations are computed in full precision
//! (never less accurate than a GPU); `.ftz` flushes f32 subnormal inputs and results to
//! zero. Integer division by zero gives all ones, as NVIDIA GPUs do.

pub use crate::arith::CANONICAL_NAN_F32;
use crate::ir::*;
use crate::lower::SINK;
use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Generic addresses of shared memory start here.
pub const SHARED_WINDOW: u64 = 0x1000_0000_0000;
/// Generic addresses of local memory start here.
pub const LOCAL_WINDOW: u64 = 0x2000_0000_0000;
/// Size of each window.
const WINDOW: u64 = 0x1000_0000_0000;

/// Where the generic addresses of a state space start: [`SHARED_WINDOW`], [`LOCAL_WINDOW`],
/// or 0 for global memory (what `cvta` adds or takes away).
pub fn window(space: MemSpace) -> u64 {
    match space {
        MemSpace::Shared => SHARED_WINDOW,
        MemSpace::Local => LOCAL_WINDOW,
        _ => 0,
    }
}

/// Device memory as a kernel sees it (global and constant space). Accesses come from
/// several host threads at once.
pub trait Memory: Sync {
    /// Reads `buf.len()` bytes at `addr`; `false` if they are not all inside one allocation.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
    /// Writes `data` at `addr`; `false` if it is not all inside one allocation.
    fn write(&self, addr: u64, data: &[u8]) -> bool;
    /// Atomically replaces the `size`-byte little-endian value at `addr` with `f(old)`;
    /// returns `old`, or `None` if the address is not inside an allocation.
    fn atomic(&self, addr: u64, size: u32, f: &mut dyn FnMut(u64) -> u64) -> Option<u64>;

    /// Reads the `size`-byte little-endian value at each of `addrs` into `out`: the loads
    /// of one warp instruction, so that an implementation can take its lock once. Fails
    /// with the index of the first address outside every allocation.
    fn read_many(&self, addrs: &[u64], size: u32, out: &mut [u64]) -> Result<(), usize> {
        for (k, (&a, o)) in addrs.iter().zip(out.iter_mut()).enumerate() {
            let mut b = [0u8; 8];
            if !self.read(a, &mut b[..size as usize]) {
                return Err(k);
            }
            *o = u64::from_le_bytes(b);
        }
        Ok(())
    }

    /// The memory as native code may reach it directly (`vgpu-ptx-jit`'s `DirectMemory`),
    /// when it can: native code then loads from and stores to global memory itself.
    fn direct(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        None
    }

    /// Writes `size` bytes of each of `values` at the matching address of `addrs` (the
    /// stores of one warp instruction, in lane order). Fails with the index of the first
    /// address outside every allocation; the stores before it are done.
    fn write_many(&self, addrs: &[u64], size: u32, values: &[u64]) -> Result<(), usize> {
        for (k, (&a, v)) in addrs.iter().zip(values).enumerate() {
            if !self.write(a, &v.to_le_bytes()[..size as usize]) {
                return Err(k);
            }
        }
        Ok(())
    }
}

/// Element `e` of a `wmma` fragment held in `regs` (`per` elements in all), as f64.
fn wmma_element(ty: Ty, regs: &[u64], e: usize, per: usize) -> f64 {
    let packed = (per / regs.len().max(1)).max(1);
    let reg = regs.get(e / packed).copied().unwrap_or(0);
    match ty {
        Ty::F16 => f64::from(half::f16::from_bits((reg >> (16 * (e % packed))) as u16).to_f32()),
        Ty::BF16 => f64::from(half::bf16::from_bits((reg >> (16 * (e % packed))) as u16).to_f32()),
        _ => f64::from(f32::from_bits(reg as u32)),
    }
}

/// The most accesses one warp instruction makes: 32 lanes, 4 elements each.
const MAX_ACCESSES: usize = 4 * LANES;

/// Why a launch ended early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// An access outside every allocation (or a window).
    #[error("illegal address {addr:#x} ({size} bytes) at line {line}")]
    IllegalAddress {
        /// The address.
        addr: u64,
        /// Its size.
        size: u32,
        /// PTX line.
        line: u32,
    },
    /// An access not aligned to its size.
    #[error("misaligned address {addr:#x} ({size} bytes) at line {line}")]
    Misaligned {
        /// The address.
        addr: u64,
        /// Its size.
        size: u32,
        /// PTX line.
        line: u32,
    },
    /// Calls nested deeper than [`MAX_CALL_DEPTH`].
    #[error("call stack overflow at line {line}")]
    StackOverflow {
        /// PTX line.
        line: u32,
    },
    /// `trap`.
    #[error("trap at line {line}")]
    Trap {
        /// PTX line.
        line: u32,
    },
    /// The block's state does not fit (CUDA's LAUNCH_OUT_OF_RESOURCES).
    #[error("out of resources: {0}")]
    OutOfResources(String),
    /// The launch ran past its deadline.
    #[error("the launch ran past its time limit")]
    Timeout,
    /// The launch's cancel flag was raised (its context is being torn down).
    #[error("the launch was cancelled")]
    Cancelled,
    /// The launch configuration does not fit the kernel.
    #[error("bad launch: {0}")]
    BadLaunch(String),
}

/// A launch.
pub struct Launch<'a> {
    /// Grid dimensions (blocks).
    pub grid: [u32; 3],
    /// Block dimensions (threads).
    pub block: [u32; 3],
    /// Bytes of dynamic shared memory.
    pub dynamic_shared: u32,
    /// The parameter buffer.
    pub params: &'a [u8],
    /// The device address of each of the program's globals.
    pub globals: &'a [u64],
    /// Global memory.
    pub mem: &'a dyn Memory,
    /// Host threads to use (at least 1).
    pub threads: usize,
    /// When the launch must give up.
    pub deadline: Option<Instant>,
    /// Raised when the launch must stop at once (checked as often as the deadline).
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
    /// Native code for runs of the kernel's instructions (a JIT), used where it has some.
    pub native: Option<&'a dyn Native>,
    /// Where the launch's workers take their register files from and leave them: those of
    /// the same tenant's earlier launches (`None`: each worker allocates and clears its
    /// own).
    pub pool: Option<&'a BlockPool>,
}

/// The register files of the workers of a tenant's last launches, kept for its next ones:
/// a block of 1,024 threads of one of ggml's kernels has a few megabytes of registers,
/// which a launch allocated and cleared for each of its workers, in a twentieth of a
/// short launch's time. A reused file is cleared only in the slots the kernel may read
/// before it writes them ([`Kernel::read_first`]), so that no launch sees what an earlier
/// one left in them, as with fresh zeroed ones. Each worker takes back the file it left
/// (the launching thread's, and each of its helpers'), which its core's caches still hold.
#[derive(Default)]
pub struct BlockPool(Mutex<Vec<Vec<Vec<u64>>>>);

/// Workers a [`BlockPool`] keeps a register file for at most.
const POOL_FILES: usize = 16;

/// The largest register file (all of a block's warps) a [`BlockPool`] keeps, in bytes.
const POOL_FILE_BYTES: usize = 32 << 20;

/// The calling worker's place in a [`BlockPool`]: 0 for the launching thread, one more
/// than its index for a helper.
fn worker_index() -> usize {
    rayon_core::current_thread_index().map_or(0, |i| i + 1)
}

impl BlockPool {
    /// The register file (one a warp) this worker left at an earlier launch, or an empty
    /// one.
    fn take(&self) -> Vec<Vec<u64>> {
        let mut files = self.0.lock().unwrap_or_else(|p| p.into_inner());
        files
            .get_mut(worker_index())
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Drops every register file kept.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Keeps this worker's register file for a later launch, unless it is too large to
    /// keep idle (or the worker's index too high).
    fn put(&self, file: Vec<Vec<u64>>) {
        let bytes: usize = file.iter().map(|r| r.capacity() * 8).sum();
        let at = worker_index();
        if bytes > POOL_FILE_BYTES || at >= POOL_FILES {
            return;
        }
        let mut files = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if files.len() <= at {
            files.resize_with(at + 1, Vec::new);
        }
        files[at] = file;
    }
}

/// Register slots `n` for one warp of `k` from `spare` (an earlier launch's, possibly
/// empty): the slots `k` may read before writing them ([`Kernel::read_first`]) cleared,
/// and any it adds; all of them where the kernel has no such list.
fn warp_regs(k: &Kernel, mut spare: Vec<u64>, n: usize) -> Result<Vec<u64>, Fault> {
    let Some(first) = &k.read_first else {
        spare.clear();
        if spare.capacity() < n {
            return zeroed(n);
        }
        spare.resize(n, 0);
        return Ok(spare);
    };
    if spare.len() < n {
        spare
            .try_reserve_exact(n - spare.len())
            .map_err(|_| Fault::OutOfResources(format!("{n} values of block state")))?;
    }
    spare.resize(n, 0);
    for &r in first {
        if let Some(row) = spare.get_mut(r as usize * LANES..(r as usize + 1) * LANES) {
            row.fill(0);
        }
    }
    Ok(spare)
}

/// Compiled code for runs of a kernel's instructions, which the interpreter runs in place
/// of interpreting them (`vgpu-ptx-jit` implements it).
pub trait Native: Sync {
    /// The compiled run that starts at instruction `pc`, for the lanes of `mask`, or `None`
    /// to interpret it. (Code made for whole warps, which a partial warp could not use,
    /// is made only for the runs whole warps reach often.)
    fn at(&self, pc: u32, mask: u32) -> Option<&dyn NativeRun>;
    /// What the runs keep on one host thread for the length of one launch (the
    /// allocations their memory accesses found last): each host thread of a launch makes
    /// one, and hands it to every run it calls.
    fn state(&self) -> Box<dyn Any + Send>;
}

/// A compiled run of instructions that touch nothing but each lane's registers, the
/// kernel's parameters, the warp's special registers, global memory and the block's shared
/// memory, and the warp-wide instructions that touch only registers. The run orders its
/// memory accesses so that running each lane through a stretch of it on its own gives the
/// same result as running it instruction by instruction over the warp. It may end with a
/// branch. When the whole warp runs it and its branch sends every lane the same way, it may
/// go on with the run there, inside the compiled code, as the interpreter would call it.
pub trait NativeRun: Sync {
    /// Runs the instructions for the lanes of `mask` over a warp's registers (register `r`
    /// of lane `i` at `regs[r * 32 + i]`) and its block's shared memory. Returns where the
    /// lanes stopped, or `None` if `regs`, the parameters or the memory do not suit it (the
    /// interpreter then runs the instructions, and faults where they do). An access outside
    /// memory ends the launch with its fault, as it would interpreted (the registers of the
    /// warp and the memory are then left part way, which memory is after a fault on a GPU
    /// too). `state` is the calling thread's [`Native::state`] for the launch.
    fn run(
        &self,
        regs: &mut [u64],
        shared: &mut [u8],
        mask: u32,
        env: &WarpEnv<'_>,
        state: &mut (dyn Any + Send),
    ) -> Result<Option<Exit>, Fault>;
    /// The instruction after the run's first stretch of straight code (and its branch): no
    /// lane outside the mask may wait inside it.
    fn end(&self) -> u32;
    /// After a call on this thread (`state`) that returned a `parted` [`Exit`]: sets where
    /// each lane of `mask` goes next in `pcs`; `false` if `state` holds no such call.
    fn parted(&self, state: &mut (dyn Any + Send), mask: u32, pcs: &mut [u32; LANES]) -> bool;
}

/// Where the lanes of a [`NativeRun`] stopped: the last run they went through ended at
/// `end`, and its branch, if any, goes to `target`, which the lanes of `taken` took. When
/// the lanes stopped at different runs (`parted`), [`NativeRun::parted`] says where each
/// goes next (`taken` is then 0, and `end` the furthest of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub taken: u32,
    pub end: u32,
    pub target: Option<u32>,
    pub parted: bool,
}

/// What compiled code reads besides the lanes' registers.
pub struct WarpEnv<'a> {
    /// The kernel's parameter buffer.
    pub params: &'a [u8],
    /// The warp's special registers.
    pub specials: &'a Specials,
    /// Global memory.
    pub mem: &'a dyn Memory,
}

/// The special registers of a warp, laid out for compiled code to read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Specials {
    /// `%tid.x`, `%tid.y` and `%tid.z` of each lane.
    pub tid: [[u32; LANES]; 3],
    /// `%ntid`.
    pub ntid: [u32; 3],
    /// `%ctaid`.
    pub ctaid: [u32; 3],
    /// `%nctaid`.
    pub nctaid: [u32; 3],
    /// `%warpid`.
    pub warpid: u32,
    /// `%nwarpid`.
    pub nwarpid: u32,
    /// `%dynamic_smem_size`.
    pub dynamic_smem: u32,
}

/// The f32 bits of every f16, by `cvt.f32.f16` ([`lane_value`]): the interpreter's `mma`
/// and compiled code convert f16 with one load (256 KiB, made once for the process).
pub fn f16_table() -> &'static [u32] {
    static TABLE: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let cvt = Op::Cvt {
            dty: Ty::F32,
            sty: Ty::F16,
            round: Round::Default,
            sat: false,
            ftz: false,
            d: 0,
            a: Src::Reg(0),
        };
        (0..=u16::MAX)
            .map(|h| lane_value(&cvt, [u64::from(h), 0, 0, 0]) as u32)
            .collect()
    })
}

/// The value one lane gets from a per-lane operation with one result, given its operand
/// values in order (`a`, `b`, `c`, then `bfi`'s length): what the interpreter computes
/// (for `setp`, the comparison alone, before any combination with a predicate). Native
/// code calls it for the operations it does not compile inline. Operations that are not
/// per-lane, or have several results, give 0.
pub fn lane_value(op: &Op, v: [u64; 4]) -> u64 {
    use crate::arith;
    let [x, y, z, w] = v;
    match *op {
        Op::Prmt { mode, .. } => arith::prmt(x as u32, y as u32, z as u32, mode).into(),
        Op::Bfe { ty, .. } => arith::bfe(ty, x, y as u32, z as u32),
        Op::Bfi { ty, .. } => arith::bfi(ty, x, y, z as u32, w as u32),
        Op::Dp {
            a_signed,
            b_signed,
            two,
            hi,
            ..
        } => arith::dot(x as u32, y as u32, z as u32, a_signed, b_signed, two, hi).into(),
        Op::Lop3 { lut, .. } => arith::lop3(x as u32, y as u32, z as u32, lut).into(),
        Op::Shf { left, clamp, .. } => arith::shf(x as u32, y as u32, z as u32, left, clamp).into(),
        Op::CvtPack { dty, relu, .. } => arith::cvt_pack(dty, x, y, relu),
        Op::Half {
            op, ty, ftz, sat, ..
        } => arith::half(op, ty, x, y, z, ftz, sat),
        Op::Bin {
            op,
            ty,
            ftz,
            sat,
            round,
            nan,
            ..
        } => arith::bin_rounded(op, ty, x, y, ftz, sat, round, nan),
        Op::Mad {
            ty,
            mode,
            ftz,
            sat,
            round,
            ..
        } => arith::mad_rounded(ty, mode, x, y, z, ftz, sat, round),
        Op::Un { op, ty, ftz, .. } => arith::un(op, ty, x, ftz),
        Op::Setp { cmp, ty, ftz, .. } => {
            let (x, y) = if ftz && ty == Ty::F32 {
                (arith::flush_bits(x), arith::flush_bits(y))
            } else {
                (x, y)
            };
            u64::from(arith::compare(cmp, ty, x, y))
        }
        Op::Cvt {
            dty,
            sty,
            round,
            sat,
            ftz,
            ..
        } => arith::cvt(dty, sty, round, sat, ftz, x),
        _ => 0,
    }
}

/// Most threads of a block.
pub const MAX_BLOCK_THREADS: u64 = 1024;
/// Most shared memory of a block.
pub const MAX_SHARED: u64 = 228 << 10;
/// Deepest call nesting.
pub const MAX_CALL_DEPTH: usize = 64;
/// Most local memory of a thread.
pub const MAX_LOCAL: u32 = 512 << 10;
/// Most host memory one block's state may take (registers, local memory and call frames
/// of its threads, its shared memory); a launch that needs more fails with
/// [`Fault::OutOfResources`], as a GPU refuses a block it cannot fit.
pub const MAX_BLOCK_BYTES: u64 = 512 << 20;

/// `n` zeroed values, or [`Fault::OutOfResources`] when the host has no room for them.
fn zeroed<T: Clone + Default>(n: usize) -> Result<Vec<T>, Fault> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Fault::OutOfResources(format!("{n} values of block state")))?;
    v.resize(n, T::default());
    Ok(v)
}

/// Bytes of host memory a block of `threads` threads of `k` takes.
fn block_bytes(k: &Kernel, threads: u64, shared: u64) -> u64 {
    let per_thread = u64::from(k.regs) * 8 + u64::from(k.local_bytes) + u64::from(k.frame_bytes);
    threads.next_multiple_of(LANES as u64) * per_thread + shared
}

/// Runs `k` over the launch's grid.
pub fn run(k: &Kernel, l: &Launch<'_>) -> Result<(), Fault> {
    run_timed(k, l).map(|_| ())
}

/// What the launching thread did in a launch ([`run_timed`]): how many blocks it ran and
/// the host time it spent on them (its helpers' share and any wait for them left out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Own {
    /// Blocks the launching thread ran.
    pub blocks: u64,
    /// From its start on the launch to its last block's end (its block state made and
    /// given back included).
    pub time: std::time::Duration,
}

/// [`run`], saying what the launching thread did: how long a block takes one thread,
/// without what waking or waiting for helper threads cost.
pub fn run_timed(k: &Kernel, l: &Launch<'_>) -> Result<Own, Fault> {
    let nthreads: u64 = l.block.iter().map(|&d| u64::from(d)).product();
    let nblocks: u64 = l.grid.iter().map(|&d| u64::from(d)).product();
    if nthreads == 0 || nthreads > MAX_BLOCK_THREADS || nblocks == 0 {
        return Err(Fault::BadLaunch(format!(
            "grid {:?} of blocks {:?}",
            l.grid, l.block
        )));
    }
    let shared = u64::from(k.shared_bytes) + u64::from(l.dynamic_shared);
    if shared > MAX_SHARED {
        return Err(Fault::BadLaunch(format!("{shared} bytes of shared memory")));
    }
    if k.local_bytes > MAX_LOCAL || k.frame_bytes > MAX_LOCAL {
        return Err(Fault::BadLaunch(format!(
            "{} bytes of local memory per thread",
            k.local_bytes
        )));
    }
    if (l.params.len() as u64) < u64::from(k.param_bytes) {
        return Err(Fault::BadLaunch(format!(
            "{} bytes of parameters, the kernel takes {}",
            l.params.len(),
            k.param_bytes
        )));
    }
    let bytes = block_bytes(k, nthreads, shared);
    if bytes > MAX_BLOCK_BYTES {
        return Err(Fault::OutOfResources(format!(
            "a block of {nthreads} threads needs {bytes} bytes of state"
        )));
    }
    let threads = l.threads.max(1).min(nblocks as usize);
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let fault: Mutex<Option<Fault>> = Mutex::new(None);
    let failed = |f: Fault| {
        stop.store(true, Ordering::Relaxed);
        let mut slot = fault.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(f);
    };
    // Each worker allocates its own block state (fallibly) and starts at once, the
    // helpers in parallel with the calling thread rather than after it made every
    // worker's state, and none waiting for the others (a helper's wake-up can take a
    // while on a busy host). One that cannot allocate stops the launch, as a fault does:
    // the launch fails with OutOfResources, the other workers ending after their block.
    let worker = || {
        let started = Instant::now();
        let mut own = 0;
        let mut block = match BlockState::new(k, l, shared as usize) {
            Ok(b) => b,
            Err(f) => {
                failed(f);
                return Own::default();
            }
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= nblocks {
                break;
            }
            let gx = u64::from(l.grid[0]);
            let gy = u64::from(l.grid[1]);
            let ctaid = [
                (b % gx) as u32,
                ((b / gx) % gy) as u32,
                (b / (gx * gy)) as u32,
            ];
            if let Err(f) = block.run(ctaid) {
                failed(f);
                break;
            }
            own += 1;
        }
        if let Some(pool) = l.pool {
            pool.put(block.warps.into_iter().map(|w| w.regs).collect());
        }
        Own {
            blocks: own,
            time: started.elapsed(),
        }
    };
    // The calling thread runs one share of the blocks itself, its helpers the others.
    let own = if threads == 1 {
        worker()
    } else {
        let worker = &worker;
        crate::helpers::with_helpers(l.threads - 1, |pool| match pool {
            Some(pool) => pool.in_place_scope(|s| {
                for _ in 1..threads {
                    s.spawn(move |_| {
                        worker();
                    });
                }
                worker()
            }),
            None => std::thread::scope(|s| {
                for _ in 1..threads {
                    s.spawn(worker);
                }
                worker()
            }),
        })
    };
    match fault.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(f) => Err(f),
        None => Ok(own),
    }
}

/// `%tid.x`, `%tid.y` and `%tid.z` of the 32 threads from number `first` of a block of
/// `block` threads (x fastest), counted on from the first's: three divisions a warp, where
/// three a thread were a launch's workers' largest cost in making their block state.
fn thread_ids(block: [u32; 3], first: u32) -> [[u32; LANES]; 3] {
    let [bx, by, _] = block.map(|d| d.max(1));
    let mut at = [first % bx, (first / bx) % by, first / (bx * by)];
    let mut tid = [[0; LANES]; 3];
    for i in 0..LANES {
        for (row, &v) in tid.iter_mut().zip(&at) {
            row[i] = v;
        }
        at[0] += 1;
        if at[0] == bx {
            at[0] = 0;
            at[1] += 1;
            if at[1] == by {
                at[1] = 0;
                at[2] += 1;
            }
        }
    }
    tid
}

/// Lanes of a warp.
pub const LANES: usize = 32;

struct Warp {
    regs: Vec<u64>,
    pc: [u32; LANES],
    /// Lanes that exist (the last warp of a block may be partial).
    valid: u32,
    exited: u32,
    at_bar: u32,
    /// Where the warp goes on and with which lanes, when it stopped knowing (with the
    /// lanes runnable then): at a block's start, and when all its runnable lanes reached
    /// a barrier together. Taken only where the runnable lanes are still those.
    resume: Option<(u32, u32, u32)>,
    local: Vec<u8>,
    /// Each lane's call frames (function parameters and call arguments).
    frame: Vec<u8>,
    /// Each lane's return stack: (return address, address of the call).
    stack: Vec<Vec<(u32, u32)>>,
    /// Whether a lane has called since the block started (its stack may hold something).
    called: bool,
    /// Thread index in the block of lane 0.
    first: u32,
    /// The special registers, for compiled code.
    specials: Specials,
}

struct BlockState<'k, 'l> {
    k: &'k Kernel,
    l: &'l Launch<'l>,
    shared: Vec<u8>,
    warps: Vec<Warp>,
    ctaid: [u32; 3],
    steps: u64,
    /// The `bar.red` in progress: (operation, count, and, or).
    red: Option<(BarRed, u32, bool, bool)>,
    /// Where its result goes: (warp, lane, register).
    red_dests: Vec<(usize, usize, Reg)>,
    /// The launch's native code's state on this thread ([`Native::state`]).
    native: Box<dyn Any + Send>,
}

/// The lane that lane `lane` of a shuffle with lane operand `b` and clamp operand `c` reads,
/// and whether that lane is in range; where it is not, the lane reads its own value (PTX
/// ISA, `shfl.sync`). Compiled code computes it too, for shuffles whose operands are known.
pub fn shuffle_source(mode: ShflMode, lane: usize, b: u64, c: u64) -> (usize, bool) {
    let bval = (b & 0x1f) as i64;
    let cval = (c & 0x1f) as i64;
    let seg = ((c >> 8) & 0x1f) as i64;
    let lane = (lane & (LANES - 1)) as i64;
    let min_lane = lane & seg;
    let max_lane = min_lane | (cval & !seg);
    let (j, ok) = match mode {
        ShflMode::Up => (lane - bval, lane - bval >= max_lane),
        ShflMode::Down => (lane + bval, lane + bval <= max_lane),
        ShflMode::Bfly => (lane ^ bval, (lane ^ bval) <= max_lane),
        ShflMode::Idx => {
            let j = min_lane | (bval & !seg);
            (j, j <= max_lane)
        }
    };
    let j = if ok {
        j as usize & (LANES - 1)
    } else {
        lane as usize
    };
    (j, ok)
}

/// `shfl.sync` over operand rows: for each lane of `on`, the value it gets and whether its
/// source lane was in range, 1 or 0 (when not, it gets its own value). A source lane that
/// does not execute the instruction (not in `on`) gives an undefined value on a GPU; here
/// the lane gets its own value, so that the result never depends on what an inactive
/// lane's registers hold (native code does not store registers nothing reads again).
fn shuffle(
    mode: ShflMode,
    av: &[u64; LANES],
    bv: &[u64; LANES],
    cv: &[u64; LANES],
    on: u32,
) -> ([u64; LANES], [u64; LANES]) {
    let (mut vals, mut oks) = ([0u64; LANES], [0u64; LANES]);
    for i in lanes(on) {
        let i = i & (LANES - 1);
        let (j, ok) = shuffle_source(mode, i, bv[i], cv[i]);
        let j = if on & (1 << j) != 0 { j } else { i };
        (vals[i], oks[i]) = (av[j], u64::from(ok));
    }
    (vals, oks)
}

/// Stores `v` into register `d` of the lanes of `on` (nothing for [`SINK`] or a register
/// outside `regs`).
#[inline]
fn put_row(regs: &mut [u64], d: Reg, on: u32, v: &[u64; LANES]) {
    if d == SINK {
        return;
    }
    let at = d as usize * LANES;
    if let Some(dst) = regs.get_mut(at..at + LANES) {
        for (i, (o, x)) in dst.iter_mut().zip(v).enumerate() {
            if on >> i & 1 != 0 {
                *o = *x;
            }
        }
    }
}

/// `vote.sync` over the lanes of `on`, given each lane's predicate.
fn vote(mode: VoteMode, av: &[u64; LANES], negate: bool, on: u32) -> u64 {
    let ballot = lanes(on)
        .filter(|&i| (av[i & (LANES - 1)] != 0) != negate)
        .fold(0u32, |m, i| m | 1 << i);
    match mode {
        VoteMode::Ballot => u64::from(ballot),
        VoteMode::All => u64::from(ballot == on),
        VoteMode::Any => u64::from(ballot != 0),
        VoteMode::Uni => u64::from(ballot == on || ballot == 0),
    }
}

/// Whether [`warp_op`] does `op`: `shfl`, `vote`, `activemask` or a no-op, its operands
/// registers or immediates.
pub fn is_warp_op(op: &Op) -> bool {
    let plain = |s: &Src| matches!(s, Src::Reg(_) | Src::Imm(_));
    match op {
        Op::Shfl { a, b, c, .. } => [a, b, c].into_iter().all(plain),
        Op::Vote { a, .. } => plain(a),
        Op::ActiveMask { .. } | Op::Nop => true,
        _ => false,
    }
}

/// What the interpreter does for a warp-wide instruction that touches nothing but the
/// warp's registers ([`is_warp_op`]), on the registers alone (register `r` of lane `i` at
/// `regs[r * 32 + i]`): native code calls it between its stretches of per-lane code.
/// `mask`: the lanes that execute it together; the lanes of `mask` whose guard holds do
/// it. False, with nothing done, for any other instruction or registers out of `regs`.
pub fn warp_op(inst: &Inst, regs: &mut [u64], mask: u32) -> bool {
    if !is_warp_op(&inst.op) {
        return false;
    }
    let row = |regs: &[u64], s: &Src| -> Option<[u64; LANES]> {
        match *s {
            Src::Reg(r) => {
                let at = r as usize * LANES;
                regs.get(at..at + LANES)?.try_into().ok()
            }
            Src::Imm(v) => Some([v; LANES]),
            _ => None,
        }
    };
    let on = match inst.guard {
        None => mask,
        Some((p, neg)) => match row(regs, &Src::Reg(p)) {
            Some(pv) => lanes(mask)
                .filter(|&i| (pv[i & (LANES - 1)] != 0) != neg)
                .fold(0u32, |m, i| m | 1 << i),
            None => return false,
        },
    };
    let fits = |d: Reg| d == SINK || (d as usize + 1) * LANES <= regs.len();
    match &inst.op {
        Op::Shfl {
            mode,
            d,
            p,
            a,
            b,
            c,
        } => {
            let (Some(av), Some(bv), Some(cv)) = (row(regs, a), row(regs, b), row(regs, c)) else {
                return false;
            };
            if !fits(*d) || !p.is_none_or(fits) {
                return false;
            }
            let (vals, oks) = shuffle(*mode, &av, &bv, &cv, on);
            put_row(regs, *d, on, &vals);
            if let Some(p) = p {
                put_row(regs, *p, on, &oks);
            }
        }
        Op::Vote { mode, d, a, negate } => {
            let Some(av) = row(regs, a) else {
                return false;
            };
            if !fits(*d) {
                return false;
            }
            let r = vote(*mode, &av, *negate, on);
            put_row(regs, *d, on, &[r; LANES]);
        }
        Op::ActiveMask { d } => {
            if !fits(*d) {
                return false;
            }
            put_row(regs, *d, on, &[u64::from(mask); LANES]);
        }
        _ => {}
    }
    true
}

/// The `size`-byte (1, 2, 4 or 8) little-endian value at byte `off` of `buf`, if it is
/// inside.
fn get_le(buf: &[u8], off: u64, size: u32) -> Option<u64> {
    let o = usize::try_from(off).ok()?;
    let s = buf.get(o..o.checked_add(size as usize)?)?;
    Some(match size {
        1 => u64::from(s[0]),
        2 => u64::from(u16::from_le_bytes(s.try_into().ok()?)),
        4 => u64::from(u32::from_le_bytes(s.try_into().ok()?)),
        _ => u64::from_le_bytes(s.try_into().ok()?),
    })
}

/// Stores the low `size` bytes (1, 2, 4 or 8) of `v` at byte `off` of `buf`; false if
/// they are not inside.
fn put_le(buf: &mut [u8], off: u64, size: u32, v: u64) -> bool {
    let Some(s) = usize::try_from(off)
        .ok()
        .and_then(|o| buf.get_mut(o..o.checked_add(size as usize)?))
    else {
        return false;
    };
    match size {
        1 => s[0] = v as u8,
        2 => s.copy_from_slice(&(v as u16).to_le_bytes()),
        4 => s.copy_from_slice(&(v as u32).to_le_bytes()),
        _ => s.copy_from_slice(&v.to_le_bytes()),
    }
    true
}

/// The lanes that run next after a compiled run of the lanes `mask` (of the `runnable`
/// ones) sent those of `stay` to its end and those of `taken` to its branch's target,
/// and where, with `runnable`: when it is sure that no other runnable lane is there or
/// lower. The other runnable lanes wait at the run's end or further.
fn next_lanes(
    runnable: u32,
    mask: u32,
    (end, stay): (u32, u32),
    (target, taken): (u32, u32),
) -> Option<(u32, u32, u32)> {
    let (pc, lanes) = if taken == 0 {
        (end, stay)
    } else if stay == 0 || target < end {
        (target, taken)
    } else if end < target {
        (end, stay)
    } else {
        (end, mask)
    };
    // Other lanes may wait at `end`, or at a forward target.
    (mask == runnable || pc < end).then_some((pc, lanes, runnable))
}

/// Ends launch `l` if it ran past its deadline or was cancelled.
fn check_time(l: &Launch<'_>) -> Result<(), Fault> {
    if let Some(d) = l.deadline {
        if Instant::now() > d {
            return Err(Fault::Timeout);
        }
    }
    if l.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(Fault::Cancelled);
    }
    Ok(())
}

/// Sets the program counter of the lanes of `mask` to `pc`.
fn set_pcs(pcs: &mut [u32; LANES], mask: u32, pc: u32) {
    match mask {
        0 => {}
        u32::MAX => *pcs = [pc; LANES],
        // A few lanes one by one; many with no branch per lane (vector code): where lanes
        // part, one often goes its own way (a reduction's `if (lane == 0)`), and the
        // others are many.
        _ if mask.count_ones() <= 8 => lanes(mask).for_each(|i| pcs[i & (LANES - 1)] = pc),
        _ => {
            for (p, bit) in pcs.iter_mut().zip(LANE_BITS) {
                let on = 0u32.wrapping_sub(u32::from(mask & bit != 0));
                *p = (pc & on) | (*p & !on);
            }
        }
    }
}

/// Each lane's bit in a mask of lanes.
const LANE_BITS: [u32; LANES] = {
    let mut b = [0; LANES];
    let mut i = 0;
    while i < LANES {
        b[i] = 1 << i;
        i += 1;
    }
    b
};

/// The lowest program counter of the lanes of `runnable` (not empty), and those of its
/// lanes there, with no branch per lane: a pass that the compiler makes vector code finds
/// the lanes at the first runnable lane's counter, which is all of them after a barrier
/// and at a block's start; only otherwise does a second pass find the lowest counter. (A
/// pass lane by lane with branches took a twentieth of a launch's time.)
fn lowest(pcs: &[u32; LANES], runnable: u32) -> (u32, u32) {
    let at = |pc: u32| {
        let mut m = 0;
        for (i, &p) in pcs.iter().enumerate() {
            m |= u32::from(p == pc) << i;
        }
        m & runnable
    };
    let first = pcs[runnable.trailing_zeros() as usize & (LANES - 1)];
    let all = at(first);
    if all == runnable {
        return (first, all);
    }
    let mut pc = u32::MAX;
    for (i, &p) in pcs.iter().enumerate() {
        pc = pc.min(if runnable >> i & 1 != 0 { p } else { u32::MAX });
    }
    (pc, at(pc))
}

/// The lanes whose program counter is below `end`, with no branch per lane (vector code).
fn lanes_below(pcs: &[u32; LANES], end: u32) -> u32 {
    let mut m = 0;
    for (i, &p) in pcs.iter().enumerate() {
        m |= u32::from(p < end) << i;
    }
    m
}

fn lanes(mask: u32) -> impl Iterator<Item = usize> {
    let mut m = mask;
    std::iter::from_fn(move || {
        if m == 0 {
            None
        } else {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            Some(i)
        }
    })
}

impl<'k, 'l> BlockState<'k, 'l> {
    fn new(k: &'k Kernel, l: &'l Launch<'l>, shared: usize) -> Result<Self, Fault> {
        let n: u32 = l.block.iter().product();
        let nwarps = n.div_ceil(LANES as u32);
        let mut warps = Vec::new();
        warps
            .try_reserve_exact(nwarps as usize)
            .map_err(|_| Fault::OutOfResources(format!("{nwarps} warps")))?;
        let mut spare = l.pool.map(BlockPool::take).unwrap_or_default();
        for w in 0..nwarps {
            let count = (n - w * LANES as u32).min(LANES as u32);
            warps.push(Warp {
                regs: warp_regs(k, spare.pop().unwrap_or_default(), k.regs as usize * LANES)?,
                pc: [0; LANES],
                valid: if count == 32 {
                    u32::MAX
                } else {
                    (1 << count) - 1
                },
                exited: 0,
                at_bar: 0,
                resume: None,
                local: zeroed(k.local_bytes as usize * LANES)?,
                frame: zeroed(k.frame_bytes as usize * LANES)?,
                stack: vec![Vec::new(); LANES],
                called: false,
                first: w * LANES as u32,
                specials: Specials {
                    tid: thread_ids(l.block, w * LANES as u32),
                    ntid: l.block,
                    ctaid: [0; 3],
                    nctaid: l.grid,
                    warpid: w,
                    nwarpid: nwarps,
                    dynamic_smem: l.dynamic_shared,
                },
            });
        }
        Ok(BlockState {
            k,
            l,
            shared: zeroed(shared)?,
            warps,
            ctaid: [0; 3],
            steps: 0,
            red: None,
            red_dests: Vec::new(),
            native: match l.native {
                Some(n) => n.state(),
                None => Box::new(()),
            },
        })
    }

    fn run(&mut self, ctaid: [u32; 3]) -> Result<(), Fault> {
        // Registers, local and shared memory start zeroed for a launch's first block on
        // this host thread (registers: every slot the kernel may read before writing it,
        // see `warp_regs`), and hold what the previous block left for the next (a GPU
        // does not clear them either): clearing them for each block took a tenth of the
        // time of short kernels. What is left is the same launch's own data.
        self.ctaid = ctaid;
        self.red = None;
        self.red_dests.clear();
        for w in &mut self.warps {
            w.pc = [0; LANES];
            w.exited = !w.valid;
            w.at_bar = 0;
            w.resume = Some((0, w.valid, w.valid));
            // (Each lane's stack, only in a warp that called: clearing 32 stacks was a
            // tenth of the scheduling loop's time in blocks of a few warps.)
            if std::mem::take(&mut w.called) {
                w.stack.iter_mut().for_each(Vec::clear);
            }
            w.specials.ctaid = ctaid;
        }
        loop {
            let mut live = false;
            for i in 0..self.warps.len() {
                self.run_warp(i)?;
                live |= self.warps[i].exited != u32::MAX;
            }
            if !live {
                return Ok(());
            }
            // Every live lane waits at the barrier: release them, with the result of a
            // bar.red to each lane that took part in it.
            if let Some((op, count, all, any)) = self.red.take() {
                let v = match op {
                    BarRed::Popc => u64::from(count),
                    BarRed::And => u64::from(all),
                    BarRed::Or => u64::from(any),
                };
                for (wi, lane, d) in std::mem::take(&mut self.red_dests) {
                    self.write(wi, lane, d, v);
                }
            }
            for w in &mut self.warps {
                w.at_bar = 0;
            }
        }
    }

    /// Runs warp `wi` until all its lanes have exited or wait at a barrier.
    fn run_warp(&mut self, wi: usize) -> Result<(), Fault> {
        // The lanes that run next and where, when the last step knew them (with the lanes
        // that were runnable then): the next step needs no pass over the warp.
        let mut next: Option<(u32, u32, u32)> = self.warps[wi].resume.take();
        // Where a compiled run just ended and none starts for its lanes: not asked again.
        let mut no_run: Option<(u32, u32)> = None;
        loop {
            let w = &mut self.warps[wi];
            let runnable = !w.exited & !w.at_bar;
            if runnable == 0 {
                // All that ran stopped together at a barrier: after it, they go on together.
                w.resume = next;
                return Ok(());
            }
            // The lanes with the lowest program counter run next.
            let (mut pc, mask) = match next {
                Some((p, m, r)) if r == runnable => (p, m),
                _ => lowest(&w.pc, runnable),
            };
            next = None;
            // A compiled run, when one starts here and no other lane of the warp waits
            // inside it (those lanes would have joined these on the way).
            let native = match std::mem::take(&mut no_run) {
                Some(known) if known == (pc, mask) => None,
                _ => self.l.native.and_then(|n| n.at(pc, mask)),
            };
            if let Some(mut n) = native {
                let w = &mut self.warps[wi];
                let rest = runnable & !mask;
                let others = rest == 0 || lanes_below(&w.pc, n.end()) & rest == 0;
                if others {
                    let env = WarpEnv {
                        params: self.l.params,
                        specials: &w.specials,
                        mem: self.l.mem,
                    };
                    // While every runnable lane runs and they all go the same way, the run
                    // where they go is called at once: their program counters are written
                    // only when they part or stop at an instruction no run starts at. (When
                    // a run declines, the step below runs its first instruction from `pc`
                    // and sets the lanes' program counters.)
                    let mut declined = false;
                    loop {
                        let Some(exit) =
                            n.run(&mut w.regs, &mut self.shared, mask, &env, &mut *self.native)?
                        else {
                            declined = true;
                            break;
                        };
                        let (taken, end) = (exit.taken, exit.end);
                        let target = exit.target.unwrap_or(end);
                        let before = self.steps;
                        self.steps += u64::from(end.saturating_sub(pc));
                        if before >> 12 != self.steps >> 12 {
                            check_time(self.l)?;
                        }
                        // Lanes that parted inside the run: each where it goes next.
                        if exit.parted {
                            if !n.parted(&mut *self.native, mask, &mut w.pc) {
                                return Err(Fault::OutOfResources(format!(
                                    "compiled code at {pc} left no record of where its lanes stopped"
                                )));
                            }
                            break;
                        }
                        let to = if taken == 0 { end } else { target };
                        if mask == runnable && (taken == 0 || taken == mask) {
                            // Every lane waits at a barrier there or leaves the kernel: what
                            // that instruction's step would do, with no run asked for where
                            // none starts.
                            let at = self.k.code.get(to as usize);
                            let op = at.filter(|i| i.guard.is_none()).map(|i| &i.op);
                            let ret = matches!(op, Some(Op::Ret)) && !w.called;
                            if ret || matches!(op, Some(Op::Bar | Op::Exit)) {
                                self.steps += 1;
                                if self.steps & 0xFFF == 0 {
                                    check_time(self.l)?;
                                }
                                if matches!(op, Some(Op::Bar)) {
                                    w.at_bar |= mask;
                                } else {
                                    w.exited |= mask;
                                }
                                // (`ret` leaves its lanes' counters where they are.)
                                let after = if ret { to } else { to + 1 };
                                set_pcs(&mut w.pc, mask, after);
                                w.resume = (!ret).then_some((after, mask, runnable));
                                return Ok(());
                            }
                            if let Some(m) = self.l.native.and_then(|n| n.at(to, mask)) {
                                (n, pc) = (m, to);
                                continue;
                            }
                            no_run = Some((to, mask));
                        }
                        let stay = mask & !taken;
                        set_pcs(&mut w.pc, stay, end);
                        set_pcs(&mut w.pc, taken, target);
                        next = next_lanes(runnable, mask, (end, stay), (target, taken));
                        break;
                    }
                    if !declined {
                        continue;
                    }
                }
            }
            self.steps += 1;
            if self.steps & 0xFFF == 0 {
                self.check_time()?;
            }
            self.step(wi, pc, mask)?;
            // Every instruction but these sends all its lanes to the next one.
            let jumps = matches!(
                self.k.code.get(pc as usize).map(|i| &i.op),
                Some(Op::Bra { .. } | Op::Call { .. } | Op::Ret)
            );
            if mask == runnable && !jumps {
                next = Some((pc + 1, mask, runnable));
            }
        }
    }

    /// Ends the launch if it ran past its deadline or was cancelled.
    fn check_time(&self) -> Result<(), Fault> {
        check_time(self.l)
    }

    /// A lane's operand: registers and immediates here, inlined into every instruction's
    /// lane loop; the rest out of line ([`read_other`](Self::read_other)).
    #[inline(always)]
    fn read(&self, wi: usize, lane: usize, s: Src) -> u64 {
        match s {
            Src::Reg(r) => self.warps[wi].regs[r as usize * LANES + lane],
            Src::Imm(v) => v,
            s => self.read_other(wi, lane, s),
        }
    }

    /// Operand `s` on all the lanes of warp `wi` at once: a register's lanes copied out, an
    /// immediate repeated, anything else read lane by lane. A lane loop then reads it with
    /// no dispatch and no bounds checks.
    #[inline(always)]
    fn row(&self, wi: usize, s: Src) -> [u64; LANES] {
        match s {
            Src::Reg(r) => {
                let at = r as usize * LANES;
                self.warps[wi]
                    .regs
                    .get(at..at + LANES)
                    .and_then(|v| v.try_into().ok())
                    .unwrap_or([0; LANES])
            }
            Src::Imm(v) => [v; LANES],
            s => std::array::from_fn(|i| self.read_other(wi, i, s)),
        }
    }

    /// Stores `v` into register `d` on the lanes of `on`.
    #[inline(always)]
    fn put(&mut self, wi: usize, d: Reg, on: u32, v: &[u64; LANES]) {
        put_row(&mut self.warps[wi].regs, d, on, v);
    }

    /// `d = f(a)` lane by lane on the lanes of `on`.
    #[inline(always)]
    fn map1(&mut self, wi: usize, on: u32, d: Reg, a: Src, f: impl Fn(u64) -> u64) {
        let x = self.row(wi, a);
        let mut r = [0u64; LANES];
        for i in lanes(on) {
            let i = i & (LANES - 1);
            r[i] = f(x[i]);
        }
        self.put(wi, d, on, &r);
    }

    /// `d = f(a, b)` lane by lane on the lanes of `on`.
    #[inline(always)]
    fn map2(&mut self, wi: usize, on: u32, d: Reg, a: Src, b: Src, f: impl Fn(u64, u64) -> u64) {
        let (x, y) = (self.row(wi, a), self.row(wi, b));
        let mut r = [0u64; LANES];
        for i in lanes(on) {
            let i = i & (LANES - 1);
            r[i] = f(x[i], y[i]);
        }
        self.put(wi, d, on, &r);
    }

    /// `d = f(a, b, c)` lane by lane on the lanes of `on`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn map3(
        &mut self,
        wi: usize,
        on: u32,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
        f: impl Fn(u64, u64, u64) -> u64,
    ) {
        let (x, y, z) = (self.row(wi, a), self.row(wi, b), self.row(wi, c));
        let mut r = [0u64; LANES];
        for i in lanes(on) {
            let i = i & (LANES - 1);
            r[i] = f(x[i], y[i], z[i]);
        }
        self.put(wi, d, on, &r);
    }

    /// Module globals and special registers.
    #[inline(never)]
    fn read_other(&self, wi: usize, lane: usize, s: Src) -> u64 {
        let w = &self.warps[wi];
        match s {
            Src::Reg(r) => w.regs[r as usize * LANES + lane],
            Src::Imm(v) => v,
            Src::Global(g, off) => self
                .l
                .globals
                .get(g as usize)
                .map_or(0, |a| a.wrapping_add(off as u64)),
            Src::Special(sp) => {
                let t = w.first + lane as u32;
                let [bx, by, _] = self.l.block;
                let tid = [t % bx, (t / bx) % by, t / (bx * by)];
                u64::from(match sp {
                    Special::Tid(d) => tid[d as usize],
                    Special::Ntid(d) => self.l.block[d as usize],
                    Special::Ctaid(d) => self.ctaid[d as usize],
                    Special::Nctaid(d) => self.l.grid[d as usize],
                    Special::LaneId => lane as u32,
                    Special::WarpId => wi as u32,
                    Special::NWarpId => self.warps.len() as u32,
                    Special::LaneMask(m) => {
                        let bit = 1u32 << lane;
                        match m {
                            0 => bit,
                            1 => bit | (bit - 1),
                            2 => bit - 1,
                            3 => !(bit - 1),
                            _ => !(bit | (bit - 1)),
                        }
                    }
                    Special::Clock => (self.steps & 0xFFFF_FFFF) as u32,
                    Special::DynSmem => self.l.dynamic_shared,
                    Special::Zero => 0,
                })
            }
        }
    }

    fn read3(&self, wi: usize, lane: usize, a: Src, b: Src, c: Src) -> (u64, u64, u64) {
        (
            self.read(wi, lane, a),
            self.read(wi, lane, b),
            self.read(wi, lane, c),
        )
    }

    /// `d = f(a, b, c)` on every lane of `on`, for the 32-bit operations.
    fn map3_u32(
        &mut self,
        wi: usize,
        on: u32,
        d: Reg,
        [a, b, c]: [Src; 3],
        f: impl Fn(u32, u32, u32) -> u32,
    ) {
        for i in lanes(on) {
            let (x, y, z) = self.read3(wi, i, a, b, c);
            self.write(wi, i, d, f(x as u32, y as u32, z as u32).into());
        }
    }

    #[inline]
    fn write(&mut self, wi: usize, lane: usize, d: Reg, v: u64) {
        if d != SINK {
            self.warps[wi].regs[d as usize * LANES + lane] = v;
        }
    }

    fn addr(&self, wi: usize, lane: usize, a: &Addr) -> u64 {
        let mut v = a.offset as u64;
        if let Some(b) = a.base {
            v = v.wrapping_add(self.warps[wi].regs[b as usize * LANES + lane]);
        }
        if let Some(g) = a.global {
            v = v.wrapping_add(self.l.globals.get(g as usize).copied().unwrap_or(0));
        }
        v
    }

    fn step(&mut self, wi: usize, pc: u32, mask: u32) -> Result<(), Fault> {
        let k = self.k;
        let Some(inst) = k.code.get(pc as usize) else {
            // Running off the end is an exit.
            self.warps[wi].exited |= mask;
            return Ok(());
        };
        let line = inst.line;
        // Lanes whose guard holds.
        let on = match inst.guard {
            None => mask,
            Some((p, neg)) => lanes(mask)
                .filter(|&i| (self.warps[wi].regs[p as usize * LANES + i] != 0) != neg)
                .fold(0u32, |m, i| m | 1 << i),
        };
        let next = pc + 1;
        match &inst.op {
            Op::Mov { d, a } => {
                let v = self.row(wi, *a);
                self.put(wi, *d, on, &v);
            }
            Op::Pack { d, parts, bits } => {
                let m = if *bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
                for i in lanes(on) {
                    let mut v = 0u64;
                    for (k, p) in parts.iter().enumerate() {
                        v |= (self.read(wi, i, *p) & m) << (k as u32 * bits);
                    }
                    self.write(wi, i, *d, v);
                }
            }
            Op::Unpack { ds, a, bits } => {
                let m = if *bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
                for i in lanes(on) {
                    let v = self.read(wi, i, *a);
                    for (k, d) in ds.iter().enumerate() {
                        self.write(wi, i, *d, (v >> (k as u32 * bits)) & m);
                    }
                }
            }
            Op::Prmt { d, a, b, c, mode } => self.map3_u32(wi, on, *d, [*a, *b, *c], |x, y, z| {
                crate::arith::prmt(x, y, z, *mode)
            }),
            Op::Bfe { ty, d, a, b, c } => {
                for i in lanes(on) {
                    let (x, y, z) = self.read3(wi, i, *a, *b, *c);
                    self.write(wi, i, *d, crate::arith::bfe(*ty, x, y as u32, z as u32));
                }
            }
            Op::Bfi {
                ty,
                d,
                a,
                b,
                pos,
                len,
            } => {
                for i in lanes(on) {
                    let (x, y, p) = self.read3(wi, i, *a, *b, *pos);
                    let n = self.read(wi, i, *len);
                    self.write(wi, i, *d, crate::arith::bfi(*ty, x, y, p as u32, n as u32));
                }
            }
            Op::Dp {
                d,
                a,
                b,
                c,
                a_signed,
                b_signed,
                two,
                hi,
            } => {
                for i in lanes(on) {
                    let (x, y, z) = self.read3(wi, i, *a, *b, *c);
                    let r = crate::arith::dot(
                        x as u32, y as u32, z as u32, *a_signed, *b_signed, *two, *hi,
                    );
                    self.write(wi, i, *d, r.into());
                }
            }
            Op::Lop3 { d, a, b, c, lut } => self.map3_u32(wi, on, *d, [*a, *b, *c], |x, y, z| {
                crate::arith::lop3(x, y, z, *lut)
            }),
            Op::Shf {
                d,
                a,
                b,
                c,
                left,
                clamp,
            } => self.map3_u32(wi, on, *d, [*a, *b, *c], |x, y, z| {
                crate::arith::shf(x, y, z, *left, *clamp)
            }),
            Op::CvtPack { dty, d, a, b, relu } => {
                for i in lanes(on) {
                    let (x, y) = (self.read(wi, i, *a), self.read(wi, i, *b));
                    self.write(wi, i, *d, crate::arith::cvt_pack(*dty, x, y, *relu));
                }
            }
            Op::Half {
                op,
                ty,
                d,
                a,
                b,
                c,
                ftz,
                sat,
            } => {
                for i in lanes(on) {
                    let (x, y, z) = self.read3(wi, i, *a, *b, *c);
                    self.write(wi, i, *d, crate::arith::half(*op, *ty, x, y, z, *ftz, *sat));
                }
            }
            Op::Cvta {
                d,
                a,
                space,
                to_generic,
            } => {
                let base = window(*space);
                for i in lanes(on) {
                    let v = self.read(wi, i, *a);
                    let r = if *to_generic {
                        v.wrapping_add(base)
                    } else {
                        v.wrapping_sub(base)
                    };
                    self.write(wi, i, *d, r);
                }
            }
            Op::Bin {
                op,
                ty,
                d,
                a,
                b,
                ftz,
                sat,
                round,
                nan,
            } => {
                let (op, ty, ftz, sat, round, nan) = (*op, *ty, *ftz, *sat, *round, *nan);
                match crate::arith::bin_fn(op, ty, ftz, sat, round, nan) {
                    Some(f) => self.map2(wi, on, *d, *a, *b, f),
                    None => self.map2(wi, on, *d, *a, *b, |x, y| {
                        crate::arith::bin_rounded(op, ty, x, y, ftz, sat, round, nan)
                    }),
                }
            }
            Op::Mad {
                ty,
                mode,
                d,
                a,
                b,
                c,
                ftz,
                sat,
                round,
            } => {
                let (ty, mode, ftz, sat, round) = (*ty, *mode, *ftz, *sat, *round);
                self.map3(wi, on, *d, *a, *b, *c, |x, y, z| {
                    crate::arith::mad_rounded(ty, mode, x, y, z, ftz, sat, round)
                });
            }
            Op::Un { op, ty, d, a, ftz } => {
                let (op, ty, ftz) = (*op, *ty, *ftz);
                self.map1(wi, on, *d, *a, |x| crate::arith::un(op, ty, x, ftz));
            }
            Op::Setp {
                cmp,
                ty,
                d,
                d2,
                a,
                b,
                combine,
                ftz,
            } => {
                let (x, y) = (self.row(wi, *a), self.row(wi, *b));
                let q = combine.map(|(op, p, neg)| (op, self.row(wi, p), neg));
                let (mut r, mut r2) = ([0u64; LANES], [0u64; LANES]);
                for i in lanes(on) {
                    let i = i & (LANES - 1);
                    let (x, y) = if *ftz && *ty == Ty::F32 {
                        (
                            crate::arith::flush_bits(x[i]),
                            crate::arith::flush_bits(y[i]),
                        )
                    } else {
                        (x[i], y[i])
                    };
                    let t = crate::arith::compare(*cmp, *ty, x, y);
                    let (v, v2) = match &q {
                        None => (t, !t),
                        Some((op, p, neg)) => {
                            let q = (p[i] != 0) != *neg;
                            let f = |v: bool| match op {
                                BoolOp::And => v && q,
                                BoolOp::Or => v || q,
                                BoolOp::Xor => v ^ q,
                            };
                            (f(t), f(!t))
                        }
                    };
                    (r[i], r2[i]) = (u64::from(v), u64::from(v2));
                }
                self.put(wi, *d, on, &r);
                if let Some(d2) = d2 {
                    self.put(wi, *d2, on, &r2);
                }
            }
            Op::Selp { d, a, b, p } => {
                self.map3(wi, on, *d, *a, *b, *p, |x, y, q| if q != 0 { x } else { y });
            }
            Op::Cvt {
                dty,
                sty,
                round,
                sat,
                ftz,
                d,
                a,
            } => {
                let (dty, sty, round, sat, ftz) = (*dty, *sty, *round, *sat, *ftz);
                self.map1(wi, on, *d, *a, |x| {
                    crate::arith::cvt(dty, sty, round, sat, ftz, x)
                });
            }
            Op::Ld {
                space,
                ty,
                n,
                d,
                addr,
            } => {
                let size = ty.size();
                let nn = *n as usize;
                let mut addrs = [0u64; MAX_ACCESSES];
                match self.global_accesses(wi, on, *space, addr, nn, size, &mut addrs, line)? {
                    Some(count) => {
                        // All of them in global memory: one call for the warp.
                        let mut vals = [0u64; MAX_ACCESSES];
                        self.l
                            .mem
                            .read_many(&addrs[..count], size, &mut vals[..count])
                            .map_err(|k| Fault::IllegalAddress {
                                addr: addrs[k],
                                size,
                                line,
                            })?;
                        let mut c = 0;
                        for i in lanes(on) {
                            for &dst in d.iter().take(nn) {
                                self.write(wi, i, dst, crate::arith::extend(*ty, vals[c]));
                                c += 1;
                            }
                        }
                    }
                    None => {
                        for i in lanes(on) {
                            let base = self.addr(wi, i, addr);
                            for (e, &dst) in d.iter().take(nn).enumerate() {
                                let at = base.wrapping_add(e as u64 * u64::from(size));
                                let raw = self.load(wi, i, *space, at, size, line)?;
                                self.write(wi, i, dst, crate::arith::extend(*ty, raw));
                            }
                        }
                    }
                }
            }
            Op::St {
                space,
                ty,
                n,
                a,
                addr,
            } => {
                let size = ty.size();
                let nn = *n as usize;
                let mut addrs = [0u64; MAX_ACCESSES];
                match self.global_accesses(wi, on, *space, addr, nn, size, &mut addrs, line)? {
                    Some(count) => {
                        let mut vals = [0u64; MAX_ACCESSES];
                        let mut c = 0;
                        for i in lanes(on) {
                            for &src in a.iter().take(nn) {
                                vals[c] = self.read(wi, i, src);
                                c += 1;
                            }
                        }
                        self.l
                            .mem
                            .write_many(&addrs[..count], size, &vals[..count])
                            .map_err(|k| Fault::IllegalAddress {
                                addr: addrs[k],
                                size,
                                line,
                            })?;
                    }
                    None => {
                        for i in lanes(on) {
                            let base = self.addr(wi, i, addr);
                            for (e, &src) in a.iter().take(nn).enumerate() {
                                let at = base.wrapping_add(e as u64 * u64::from(size));
                                let v = self.read(wi, i, src);
                                self.store(wi, i, *space, at, size, v, line)?;
                            }
                        }
                    }
                }
            }
            Op::Atom {
                space,
                op,
                ty,
                d,
                addr,
                b,
                c,
            } => {
                let size = ty.size();
                for i in lanes(on) {
                    let at = self.addr(wi, i, addr);
                    let y = self.read(wi, i, *b);
                    let z = self.read(wi, i, *c);
                    let mut f = |old: u64| crate::arith::atom(*op, *ty, old, y, z);
                    let old = self.atomic(wi, i, *space, at, size, &mut f, line)?;
                    if let Some(d) = d {
                        self.write(wi, i, *d, crate::arith::extend(*ty, old));
                    }
                }
            }
            Op::Bra { target } => {
                // Lanes that branch go to the target; the others fall through.
                let w = &mut self.warps[wi];
                for i in lanes(mask) {
                    w.pc[i] = if on & (1 << i) != 0 { *target } else { pc + 1 };
                }
                return Ok(());
            }
            Op::Bar => {
                let w = &mut self.warps[wi];
                w.at_bar |= on;
            }
            Op::BarRed { op, d, p, negate } => {
                for i in lanes(on) {
                    let v = (self.read(wi, i, *p) != 0) != *negate;
                    let acc = self.red.get_or_insert((*op, 0, true, false));
                    acc.1 += u32::from(v);
                    acc.2 &= v;
                    acc.3 |= v;
                    self.red_dests.push((wi, i, *d));
                }
                self.warps[wi].at_bar |= on;
            }
            Op::Nop => {}
            Op::Shfl {
                mode,
                d,
                p,
                a,
                b,
                c,
            } => {
                // Every lane reads its source before any writes (d may be a).
                let (av, bv, cv) = (self.row(wi, *a), self.row(wi, *b), self.row(wi, *c));
                let (vals, oks) = shuffle(*mode, &av, &bv, &cv, on);
                self.put(wi, *d, on, &vals);
                if let Some(p) = p {
                    self.put(wi, *p, on, &oks);
                }
            }
            Op::Vote { mode, d, a, negate } => {
                let r = vote(*mode, &self.row(wi, *a), *negate, on);
                for i in lanes(on) {
                    self.write(wi, i, *d, r);
                }
            }
            Op::ActiveMask { d } => {
                for i in lanes(on) {
                    self.write(wi, i, *d, u64::from(mask));
                }
            }
            Op::Call { target, args, .. } => {
                let frame = self.k.frame_bytes as usize;
                let w = &mut self.warps[wi];
                for i in lanes(mask) {
                    if on & (1 << i) == 0 {
                        w.pc[i] = pc + 1;
                        continue;
                    }
                    if w.stack[i].len() >= MAX_CALL_DEPTH {
                        return Err(Fault::StackOverflow { line });
                    }
                    let f = &mut w.frame[i * frame..(i + 1) * frame];
                    for &(from, to, n) in args {
                        let (from, to, n) = (from as usize, to as usize, n as usize);
                        f.copy_within(from..from + n, to);
                    }
                    w.stack[i].push((pc + 1, pc));
                    w.called = true;
                    w.pc[i] = *target;
                }
                return Ok(());
            }
            Op::Ret => {
                let frame = self.k.frame_bytes as usize;
                let code = &self.k.code;
                let w = &mut self.warps[wi];
                for i in lanes(mask) {
                    if on & (1 << i) == 0 {
                        w.pc[i] = pc + 1;
                        continue;
                    }
                    let Some((back, call)) = w.stack[i].pop() else {
                        w.exited |= 1 << i;
                        continue;
                    };
                    if let Some(Inst {
                        op: Op::Call { rets, .. },
                        ..
                    }) = code.get(call as usize)
                    {
                        let f = &mut w.frame[i * frame..(i + 1) * frame];
                        for &(from, to, n) in rets {
                            let (from, to, n) = (from as usize, to as usize, n as usize);
                            f.copy_within(from..from + n, to);
                        }
                    }
                    w.pc[i] = back;
                }
                return Ok(());
            }
            Op::Printf { fmt, args, ret } => {
                for i in lanes(on) {
                    let f = self.load(wi, i, MemSpace::Frame, u64::from(*fmt), 8, line)?;
                    let a = self.load(wi, i, MemSpace::Frame, u64::from(*args), 8, line)?;
                    let text = crate::printf::format(
                        &mut |addr, size| self.load(wi, i, MemSpace::Generic, addr, size, line),
                        f,
                        a,
                    )?;
                    log::info!(target: "vgpu_ptx::printf", "{text}");
                    if let Some(r) = ret {
                        self.store(wi, i, MemSpace::Frame, u64::from(*r), 4, 0, line)?;
                    }
                }
            }
            Op::Mma { shape, d, a, b, c } => {
                let regs = |srcs: &[Src]| -> crate::mma::Fragments {
                    let mut f = [[0u64; 4]; LANES];
                    for i in lanes(on) {
                        for (v, &s) in f[i & (LANES - 1)].iter_mut().zip(srcs) {
                            *v = self.read(wi, i, s);
                        }
                    }
                    f
                };
                let (ra, rb, rc) = (regs(a), regs(b), regs(c));
                let out = crate::mma::mma(shape, &ra, &rb, &rc);
                for i in lanes(on) {
                    for (&dst, &v) in d.iter().zip(&out[i & (LANES - 1)]) {
                        self.write(wi, i, dst, v);
                    }
                }
            }
            Op::LdMatrix {
                space,
                trans,
                d,
                addr,
            } => {
                // Lanes 8j..8j+7 give the rows of matrix j: a row of shared memory at
                // once where all of it is inside, else element by element (which finds
                // the fault an element makes).
                let mut all = [[[0u16; 8]; 8]; 4];
                let mats = &mut all[..d.len().min(4)];
                for (j, m) in mats.iter_mut().enumerate() {
                    for (r, row) in m.iter_mut().enumerate() {
                        let lane = 8 * j + r;
                        let at = self.addr(wi, lane, addr);
                        let inside = match self.place(*space, at) {
                            (MemSpace::Shared, off) if at % 2 == 0 => usize::try_from(off)
                                .ok()
                                .and_then(|o| self.shared.get(o..o.checked_add(16)?)),
                            _ => None,
                        };
                        if let Some(bytes) = inside {
                            for (v, b) in row.iter_mut().zip(bytes.chunks_exact(2)) {
                                *v = u16::from_le_bytes([b[0], b[1]]);
                            }
                            continue;
                        }
                        for (c, v) in row.iter_mut().enumerate() {
                            let e = at.wrapping_add(2 * c as u64);
                            *v = self.load(wi, lane, *space, e, 2, line)? as u16;
                        }
                    }
                }
                for i in lanes(on) {
                    let vals = crate::mma::ldmatrix_reg(mats, i, *trans);
                    for (&dst, v) in d.iter().zip(vals) {
                        self.write(wi, i, dst, v);
                    }
                }
            }
            Op::MovMatrix { d, a } => {
                let mut regs = [0u64; 32];
                for (i, r) in regs.iter_mut().enumerate() {
                    *r = self.read(wi, i, *a);
                }
                let out = crate::mma::movmatrix(&regs);
                for i in lanes(on) {
                    self.write(wi, i, *d, out[i]);
                }
            }
            Op::WmmaLoad {
                shape,
                frag,
                ty,
                col,
                space,
                d,
                addr,
                stride,
            } => {
                let size = ty.size();
                let per = crate::mma::WmmaShape::per_lane(*frag);
                for i in lanes(on) {
                    let base = self.addr(wi, i, addr);
                    let stride = self.read(wi, i, *stride) & 0xFFFF_FFFF;
                    let mut regs = vec![0u64; d.len()];
                    for e in 0..per {
                        let (r, c) = shape.at(*frag, i, e);
                        let (r, c) = (r as u64, c as u64);
                        let elem = if *col { c * stride + r } else { r * stride + c };
                        let at = base.wrapping_add(elem.wrapping_mul(u64::from(size)));
                        let v = self.load(wi, i, *space, at, size, line)?;
                        let packed = (per / d.len()).max(1);
                        regs[e / packed] |= v << (32 / packed as u32 * (e % packed) as u32);
                    }
                    for (&dst, v) in d.iter().zip(regs) {
                        self.write(wi, i, dst, v);
                    }
                }
            }
            Op::WmmaMma {
                shape,
                ab,
                cty,
                dty,
                d,
                a,
                b,
                c,
            } => {
                use crate::mma::{Fragment, WmmaShape};
                let values = |srcs: &[Src], ty: Ty, f: Fragment| -> Vec<Vec<f64>> {
                    let per = WmmaShape::per_lane(f);
                    (0..LANES)
                        .map(|i| {
                            let regs: Vec<u64> = if on & (1 << i) == 0 {
                                vec![0; srcs.len()]
                            } else {
                                srcs.iter().map(|&s| self.read(wi, i, s)).collect()
                            };
                            (0..per).map(|e| wmma_element(ty, &regs, e, per)).collect()
                        })
                        .collect()
                };
                let out = crate::mma::wmma(
                    shape,
                    &values(a, *ab, Fragment::A),
                    &values(b, *ab, Fragment::B),
                    &values(c, *cty, Fragment::C),
                );
                for i in lanes(on) {
                    let mut regs = vec![0u64; d.len()];
                    let packed = out[i].len() / d.len();
                    for (e, &v) in out[i].iter().enumerate() {
                        let bits = match dty {
                            Ty::F16 => u64::from(half::f16::from_f64(v).to_bits()),
                            _ => u64::from((v as f32).to_bits()),
                        };
                        regs[e / packed] |=
                            bits << (16 * (e % packed) as u32 * u32::from(packed > 1));
                    }
                    for (&dst, v) in d.iter().zip(regs) {
                        self.write(wi, i, dst, v);
                    }
                }
            }
            Op::WmmaStore {
                shape,
                ty,
                col,
                space,
                addr,
                a,
                stride,
            } => {
                use crate::mma::{Fragment, WmmaShape};
                let size = ty.size();
                let per = WmmaShape::per_lane(Fragment::C);
                for i in lanes(on) {
                    let base = self.addr(wi, i, addr);
                    let stride = self.read(wi, i, *stride) & 0xFFFF_FFFF;
                    let regs: Vec<u64> = a.iter().map(|&s| self.read(wi, i, s)).collect();
                    let packed = per / regs.len();
                    for e in 0..per {
                        let (r, c) = shape.at(Fragment::C, i, e);
                        let (r, c) = (r as u64, c as u64);
                        let elem = if *col { c * stride + r } else { r * stride + c };
                        let at = base.wrapping_add(elem.wrapping_mul(u64::from(size)));
                        let v =
                            regs[e / packed] >> (16 * (e % packed) as u32 * u32::from(packed > 1));
                        self.store(wi, i, *space, at, size, v, line)?;
                    }
                }
            }
            Op::Exit => {
                self.warps[wi].exited |= on;
            }
            Op::Trap => {
                if on != 0 {
                    return Err(Fault::Trap { line });
                }
            }
        }
        set_pcs(&mut self.warps[wi].pc, mask, next);
        Ok(())
    }

    /// The addresses of a load's or store's accesses, lane by lane and element by element,
    /// when every one of them goes to global memory (checked for alignment); `None` when
    /// some go elsewhere (shared, local, parameters), which the per-lane path handles.
    #[allow(clippy::too_many_arguments)]
    fn global_accesses(
        &self,
        wi: usize,
        on: u32,
        space: MemSpace,
        addr: &Addr,
        n: usize,
        size: u32,
        out: &mut [u64; MAX_ACCESSES],
        line: u32,
    ) -> Result<Option<usize>, Fault> {
        if !matches!(space, MemSpace::Global | MemSpace::Generic) {
            return Ok(None);
        }
        let mut count = 0;
        for i in lanes(on) {
            let base = self.addr(wi, i, addr);
            for e in 0..n {
                let at = base.wrapping_add(e as u64 * u64::from(size));
                if self.place(space, at).0 != MemSpace::Global {
                    return Ok(None);
                }
                Self::check(at, size, line)?;
                out[count] = at;
                count += 1;
            }
        }
        Ok(Some(count))
    }

    /// Which memory an access goes to, and the offset in it.
    fn place(&self, space: MemSpace, addr: u64) -> (MemSpace, u64) {
        match space {
            MemSpace::Generic => {
                if (SHARED_WINDOW..SHARED_WINDOW + WINDOW).contains(&addr) {
                    (MemSpace::Shared, addr - SHARED_WINDOW)
                } else if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW).contains(&addr) {
                    (MemSpace::Local, addr - LOCAL_WINDOW)
                } else {
                    (MemSpace::Global, addr)
                }
            }
            s => (s, addr),
        }
    }

    fn buffer(&mut self, wi: usize, lane: usize, space: MemSpace) -> Option<&mut [u8]> {
        let local = self.k.local_bytes as usize;
        let frame = self.k.frame_bytes as usize;
        match space {
            MemSpace::Shared => Some(&mut self.shared),
            MemSpace::Local => Some(&mut self.warps[wi].local[lane * local..(lane + 1) * local]),
            MemSpace::Frame => Some(&mut self.warps[wi].frame[lane * frame..(lane + 1) * frame]),
            _ => None,
        }
    }

    fn check(addr: u64, size: u32, line: u32) -> Result<(), Fault> {
        if addr % u64::from(size) != 0 {
            return Err(Fault::Misaligned { addr, size, line });
        }
        Ok(())
    }

    fn load(
        &mut self,
        wi: usize,
        lane: usize,
        space: MemSpace,
        addr: u64,
        size: u32,
        line: u32,
    ) -> Result<u64, Fault> {
        Self::check(addr, size, line)?;
        let (space, off) = self.place(space, addr);
        let mut b = [0u8; 8];
        let n = size as usize;
        let bad = Fault::IllegalAddress { addr, size, line };
        match space {
            MemSpace::Global => {
                if !self.l.mem.read(off, &mut b[..n]) {
                    return Err(bad);
                }
            }
            MemSpace::Param => {
                let s = usize::try_from(off)
                    .ok()
                    .and_then(|o| self.l.params.get(o..o + n))
                    .ok_or(bad)?;
                b[..n].copy_from_slice(s);
            }
            _ => {
                let buf = self.buffer(wi, lane, space).ok_or(bad.clone())?;
                return get_le(buf, off, size).ok_or(bad);
            }
        }
        Ok(u64::from_le_bytes(b))
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        wi: usize,
        lane: usize,
        space: MemSpace,
        addr: u64,
        size: u32,
        v: u64,
        line: u32,
    ) -> Result<(), Fault> {
        Self::check(addr, size, line)?;
        let (space, off) = self.place(space, addr);
        let n = size as usize;
        let bytes = v.to_le_bytes();
        let bad = Fault::IllegalAddress { addr, size, line };
        match space {
            MemSpace::Global => {
                if !self.l.mem.write(off, &bytes[..n]) {
                    return Err(bad);
                }
            }
            MemSpace::Param => return Err(bad),
            _ => {
                let buf = self.buffer(wi, lane, space).ok_or(bad.clone())?;
                if !put_le(buf, off, size, v) {
                    return Err(bad);
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(
        &mut self,
        wi: usize,
        lane: usize,
        space: MemSpace,
        addr: u64,
        size: u32,
        f: &mut dyn FnMut(u64) -> u64,
        line: u32,
    ) -> Result<u64, Fault> {
        Self::check(addr, size, line)?;
        let (space, off) = self.place(space, addr);
        let bad = Fault::IllegalAddress { addr, size, line };
        match space {
            MemSpace::Global => self.l.mem.atomic(off, size, f).ok_or(bad),
            MemSpace::Param => Err(bad),
            _ => {
                // Shared and local memory belong to this host thread alone.
                let old = self.load(wi, lane, space, off, size, line)?;
                let new = f(old);
                self.store(wi, lane, space, off, size, new, line)?;
                Ok(old)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each thread's `%tid`, counted on from a warp's first, is the one its number gives by
    /// division, for blocks of one, two and three dimensions that warps cross rows of.
    #[test]
    fn thread_ids_are_those_of_each_threads_number() {
        for block in [
            [1024, 1, 1],
            [32, 4, 1],
            [5, 3, 7],
            [7, 1, 9],
            [1, 1, 64],
            [3, 11, 2],
        ] {
            let n: u32 = block.iter().product();
            for first in (0..n).step_by(LANES) {
                let tid = thread_ids(block, first);
                for i in 0..LANES as u32 {
                    let t = first + i;
                    let [bx, by, _] = block;
                    let want = [t % bx, (t / bx) % by, t / (bx * by)];
                    let got = [0, 1, 2].map(|d| tid[d][i as usize]);
                    // (Lanes past the block's last thread are not run.)
                    if t < n {
                        assert_eq!(got, want, "block {block:?}, thread {t}");
                    }
                }
            }
        }
    }
}
