//! # vgpu-ptx-jit: native code for the PTX virtual machine
//!
//! The interpreter of `vgpu-ptx` pays for every warp instruction: it finds the lanes that
//! run next, dispatches on the instruction, and moves each operand through a row of 32
//! lanes. This crate compiles *runs* of a kernel's instructions to native code with
//! Cranelift, and the interpreter calls them through [`vgpu_ptx::exec::Native`].
//!
//! A run is a stretch of straight-line code: per-lane instructions that touch nothing but
//! the lane's own registers, the kernel's parameters, special registers, global memory and
//! the block's shared memory (moves, the integer, float and half arithmetic, comparisons,
//! selections, conversions, bit manipulation such as `prmt`, `lop3`, `bfe`, `dp4a`, loads
//! and stores), and the warp-wide instructions that touch only registers (`shfl`, `vote`,
//! `activemask`, `bar.warp.sync`), optionally ending with a branch; loads by generic
//! address too, in kernels with no local memory. Local memory, generic stores (and loads
//! where a generic address may name local memory), barriers, atomics, calls and the clock
//! stay with the interpreter. The
//! per-lane stretches between two warp-wide instructions run one lane at a time: a lane's
//! registers stay in machine registers across the stretch; the warp-wide instructions
//! between them are compiled inline (an unguarded `shfl`) or the interpreter's own
//! ([`vgpu_ptx::exec::warp_op`]), called once for the warp. So the warp pays for its
//! scheduling once per run instead of once per instruction. Instructions whose value is
//! the same in every lane (from parameters, block indices, immediates and registers that
//! [`vgpu_ptx::constants`] finds the same in every lane, read from the first lane) run once
//! per stretch, before its loop over the lanes; a lane stores back only the registers that
//! are read after the run ([`vgpu_ptx::liveness::Liveness`]). When every lane of the warp
//! runs a stretch made only of moves and the plain f32 and integer arithmetic (the
//! butterfly steps of a reduction, say), it runs four lanes at a time in SIMD registers
//! instead ([`vector`]), bit for bit as lane by lane. A whole run of such stretches with
//! shuffles of known sources between them (a butterfly reduction) runs for the whole warp
//! as one chain, its values kept in SIMD registers across the shuffles
//! (`vector::chain`).
//!
//! Running lane after lane reorders the lanes' memory accesses against the interpreter,
//! which runs instruction after instruction. So a stretch also ends where that could be
//! seen: within one stretch, each state space has either loads only or a single store
//! (`codegen::segments`), and the result is the interpreter's, whatever the lanes share.
//!
//! * Runs start at *leaders* (the kernel's start, branch targets, the instruction after one
//!   the run cannot hold) and end before the next leader. A run is compiled alone the
//!   first time a warp reaches it ([`Jit::at`]); once whole warps have called it
//!   [`VECTOR_TIER`] times, again with the runs after it that a warp may go on to forward
//!   (a *region*, [`MAX_REGION`] runs at most): a whole warp whose lanes all fall through or
//!   all take a run's branch goes on to the next run inside the compiled code, as the
//!   interpreter would call it, without returning to it. A forward branch over a few
//!   stores (`if (lane == 0) shared[warp] = sum;`) is compiled as the stores under its
//!   opposite guard (`if_convert`), so that the warp's lanes do not part there.
//! * The integer and f32 arithmetic, f16 add/sub/mul, `dp4a`, comparisons and the common
//!   conversions are compiled inline (f16 operands through a table of every f16 made by the
//!   interpreter's own conversion, or, in vector form, converted in SIMD registers to the
//!   same bits; a vector stretch hands the f16 it made itself to the next
//!   f16 operation, packing or unpacking as its f32 value, not converted again), rare
//!   results (NaN, infinite or subnormal halves) aside;
//!   f32 `ex2` is computed inline by the interpreter's own operations
//!   ([`vgpu_ptx::ex2_f32`]), the other f32 transcendental functions call the host math
//!   library as the interpreter does;
//!   every other operation calls [`vgpu_ptx::exec::lane_value`], the interpreter's own
//!   arithmetic. Both are tested against the interpreter bit for bit
//!   (`tests/agree.rs`).
//! * Global loads and stores reach memory through [`DirectMemory`]: the context's
//!   allocations, lent for the launch, read and written atomically by the interpreter and
//!   by plain aligned accesses in compiled code, each access site checking an address
//!   against the allocation it found last before asking for a lookup. A generic load is a
//!   global one whose lookup, where no allocation holds its address, places it in the
//!   shared window as the interpreter does (no allocation reaches a window). Shared memory
//!   accesses are checked inline against the block's shared memory. A faulting access
//!   records the interpreter's fault; a store whose guard is false or that faults goes to
//!   a sink.
//!
//! `unsafe` is confined to [`Run::run`] (calling compiled code), the helpers compiled code
//! calls, [`Jit`]'s ownership of the code's memory and [`DirectMemory`]; each use says why
//! it holds.

/// Defines host functions that compiled code calls, in the convention of
/// [`codegen::helper_conv`]: on x86-64, Windows' (`win64`), which keeps `xmm6`–`xmm15`
/// across the call. A warp's vectors then stay in registers across a call on a rarely
/// taken path (an access its site's allocation does not hold, a rare operand), where
/// System V's convention, which keeps no vector register, made the code generator keep
/// them on the stack around it. Elsewhere, the C convention.
macro_rules! helpers {
    ($($(#[$m:meta])* $v:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block)*) => {$(
        #[cfg(target_arch = "x86_64")]
        $(#[$m])* $v extern "win64" fn $name($($a: $t),*) $(-> $r)? $body
        #[cfg(not(target_arch = "x86_64"))]
        $(#[$m])* $v extern "C" fn $name($($a: $t),*) $(-> $r)? $body
    )*};
}

mod codegen;
mod direct;
mod vector;

pub use direct::DirectMemory;

use cranelift_jit::JITModule;
use std::any::Any;
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use vgpu_ptx::constants::Constants;
use vgpu_ptx::exec::{Exit, Fault, Native, NativeRun, Specials, WarpEnv};
use vgpu_ptx::ir::{Addr, Inst, Kernel, MemSpace, Op, Reg, Special, Src};
use vgpu_ptx::liveness::Liveness;
use vgpu_ptx::lower::SINK;

/// The code generator's maps and sets hash with fixed keys: their order of iteration
/// decides the order in which it builds instructions, and so the registers the code
/// generator allocates, which then are the same in every process (host instructions a
/// launch can be compared from one run to the next).
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<DefaultHasher>>;
type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<DefaultHasher>>;

/// Compiled code: (the warp's registers, the lanes to run, the parameter buffer, the
/// warp's special registers, the context of its loads) → the lanes that take the run's
/// branch.
type Code =
    unsafe extern "C" fn(*mut u64, u32, *const u8, *const Specials, *mut direct::LoadCtx) -> u32;

/// The most instructions one run holds (longer stretches make several runs), and one
/// region.
pub const MAX_RUN: usize = 1024;

/// The most runs one region holds: [`SMALL_REGION`] whatever their size, up to sixteen
/// while they hold at most [`MAX_LONG_REGION`] instructions. With sixteen, a pass
/// (`codegen::pass`) holds the prologue of ggml's quantized mat-vec and the loop that reads
/// what it computed (12 runs, 145 instructions, compiled in 10 ms against 2.3 and 5.4 ms
/// for its two regions of eight): 9–11% fewer host instructions a launch (36.0 → 32.8 M),
/// `soft_max` 2% (13.0 → 12.8 M). But Cranelift's time grows faster than a region's size
/// (mostly its register allocator's): sixteen runs of any size of the LLM's fused mat-vec
/// (200–320 instructions) took 60–190 ms each to compile, against 80 ms for eight, and a
/// small LLM's 32 tokens, whose decode compiles them, came out slower (vector forms: 1.9 s
/// of compiling in all against 1.23 s). Kept to 160 instructions past eight runs, the tiny
/// llama of `ci/llm.sh` (f16 and q8_0, one stub) compiles its vector forms in 735 ms
/// against 657 ms (25 regions of more than eight runs, the longest 45 ms) and decodes as
/// fast as with eight, within this machine's spread between runs.
pub const MAX_REGION: usize = 16;

/// The runs a region holds whatever their size ([`MAX_REGION`]).
pub const SMALL_REGION: usize = 8;

/// The most instructions of a region of more than [`SMALL_REGION`] runs.
pub const MAX_LONG_REGION: usize = 160;

/// A compiled run of instructions.
pub struct Run {
    code: Code,
    /// Each run of the region: where it ends, and where its branch goes.
    exits: Vec<(u32, Option<u32>)>,
    /// Register slots the code touches: `(highest register + 1) * 32`.
    slots: usize,
    /// Bytes of the parameter buffer the code reads.
    params: usize,
    /// Whether the code touches global memory.
    global: bool,
    /// Stretches with a vector form for the whole warp.
    vector_stretches: usize,
    /// Whether the code runs only whole warps (its region has a pass, `codegen::pass`):
    /// other calls are declined.
    whole_warps: bool,
    /// Whether the second tier ([`VECTOR_TIER`]) would compile more: the run has a stretch
    /// with a vector form, or runs after it that a whole warp may go on to.
    hot: bool,
    /// Its number among the kernel's compiled runs: the index of its context in a
    /// [`State`].
    id: usize,
}

/// What a kernel's runs keep on one host thread for one launch ([`Native::state`]): each
/// run's `direct::LoadCtx`, whose sites remember across the run's calls the allocations
/// they found, so that only a thread's first call of a run looks its sites up. (A context
/// made for each call took a twentieth of a launch's host instructions in lookups.)
#[derive(Default)]
pub struct State {
    loads: Vec<Option<Box<direct::LoadCtx>>>,
}

// SAFETY: a `LoadCtx` holds pointers only into the launch's `DirectMemory` (which is `Sync`
// and outlives the launch's states), and into the shared memory of the block being run,
// which `Run::run` sets again at every call; nothing in it is tied to a thread.
unsafe impl Send for State {}

impl NativeRun for Run {
    fn run(
        &self,
        regs: &mut [u64],
        shared: &mut [u8],
        mask: u32,
        env: &WarpEnv<'_>,
        state: &mut (dyn Any + Send),
    ) -> Result<Option<Exit>, Fault> {
        if regs.len() < self.slots
            || env.params.len() < self.params
            || (self.whole_warps && mask != u32::MAX)
        {
            return Ok(None);
        }
        let mem = env
            .mem
            .direct()
            .and_then(|d| d.downcast_ref::<DirectMemory>());
        if self.global && mem.is_none() {
            return Ok(None);
        }
        let Some(state) = state.downcast_mut::<State>() else {
            return Ok(None);
        };
        let mem = mem.map_or(std::ptr::null(), |m| m as *const DirectMemory);
        let ctx = state.loads_of(self.id, mem);
        ctx.regs_len = regs.len();
        ctx.set_shared(shared);
        ctx.fault = 0;
        ctx.exit = 0;
        let (p, s) = (env.params.as_ptr(), env.specials as *const Specials);
        // SAFETY: the code reads and writes only `regs[r * 32 + lane]` for lanes below 32
        // and the registers `r` of its instructions, all below `slots / 32`; it reads the
        // parameters at constant offsets below `params`, fields of `Specials` (lane
        // indices below 32) and the static f16 table (`codegen::f16_table`, at indices
        // below its 65,536). Its accesses to global memory fall inside an allocation of
        // `mem` (present whenever the code touches global memory): one that a site of
        // `ctx` holds (empty, or found by `direct::find` in `mem` during this launch, as
        // `State::loads_of` ensures), with the address checked
        // against it inline, or where `direct::find` and `direct::find_store` point them
        // (such an allocation, a static zero for loads, `ctx.sink` for stores). Its
        // accesses to shared memory are checked inline against `ctx.shared_len`, the
        // length of `shared`, or go where `direct::find_shared` points them (inside
        // `shared`, or `ctx.sink`). Every access is thus inside what was checked just
        // above or borrowed for the call; the code keeps no pointer past the call and
        // calls nothing but `codegen::lane_value`, `codegen::warp_step` (on these
        // registers, with their length, while the code itself does not touch them) and
        // the `direct` lookups.
        let taken = unsafe { (self.code)(regs.as_mut_ptr(), mask, p, s, &mut *ctx) };
        match (ctx.fault, self.exits.get(ctx.exit as usize)) {
            (0, Some(&(end, target))) => Ok(Some(Exit {
                taken,
                end,
                target,
                parted: false,
            })),
            _ => self.stopped(ctx),
        }
    }

    fn end(&self) -> u32 {
        self.exits[0].0
    }

    /// The groups of four lanes of a pass (`codegen::pass`) stopped at different runs:
    /// each group's run times 16, plus its lanes that took the run's branch, are in the
    /// call's `LoadCtx::groups`.
    fn parted(&self, state: &mut (dyn Any + Send), mask: u32, pcs: &mut [u32; 32]) -> bool {
        let Some(state) = state.downcast_mut::<State>() else {
            return false;
        };
        let Some(Some(ctx)) = state.loads.get(self.id) else {
            return false;
        };
        for (g, &at) in ctx.groups.iter().enumerate() {
            let Some(&(end, target)) = self.exits.get((at >> 4) as usize) else {
                return false;
            };
            for i in 0..4 {
                let lane = 4 * g + i;
                if mask >> lane & 1 == 1 {
                    let took = at >> i & 1 == 1;
                    pcs[lane] = if took { target.unwrap_or(end) } else { end };
                }
            }
        }
        true
    }
}

impl Run {
    /// How a call ended that did not end at one of the runs' ends with no fault: its
    /// groups stopped at different runs, or its fault. (Out of line: most calls end at a
    /// run's end.)
    #[inline(never)]
    fn stopped(&self, ctx: &direct::LoadCtx) -> Result<Option<Exit>, Fault> {
        let (addr, size, line) = (ctx.fault_addr, ctx.fault_size, ctx.fault_line as u32);
        match ctx.fault {
            0 if ctx.exit == direct::PARTED => Ok(Some(Exit {
                taken: 0,
                end: self.furthest(&ctx.groups),
                target: None,
                parted: true,
            })),
            0 => Err(Fault::OutOfResources(format!(
                "compiled code at line {line} ended at run {} of {}",
                ctx.exit,
                self.exits.len()
            ))),
            2 => Err(Fault::Misaligned { addr, size, line }),
            3 => Err(Fault::OutOfResources(format!(
                "compiled code's registers at line {line}"
            ))),
            _ => Err(Fault::IllegalAddress { addr, size, line }),
        }
    }

    /// The furthest end of the runs where the groups of a pass stopped (`groups` as in
    /// `LoadCtx::groups`).
    fn furthest(&self, groups: &[u32; 8]) -> u32 {
        groups
            .iter()
            .filter_map(|&at| self.exits.get((at >> 4) as usize))
            .map(|&(end, _)| end)
            .max()
            .unwrap_or(0)
    }
}

/// The code memory of one kernel's runs.
struct CodeMemory(JITModule);

// SAFETY: a `JITModule` is not `Send` only because it holds raw pointers to the code memory
// it owns and a `RefCell` symbol table; it has no thread affinity. It is only ever used
// behind the `Mutex` of [`Jit`], one thread at a time.
unsafe impl Send for CodeMemory {}

/// Native code for one kernel: a run per leader, compiled on first use, and its region (with
/// the vector forms) once whole warps call it often.
pub struct Jit {
    /// The kernel's code, which compiled code points into (the operations it hands to
    /// `lane_value`): owned here so that it lives as long as the code.
    code: Vec<Inst>,
    /// Which registers each instruction leaves live: a run stores back only those.
    live: Liveness,
    /// What is known of the registers at each instruction (`None`: not analysed).
    known: Option<Constants>,
    leaders: Vec<bool>,
    /// The instructions a branch skipped before [`if_convert`] guarded them: no run ends
    /// before one of them, where the interpreter would go on without their guards.
    guarded: Vec<bool>,
    /// Each leader's run, lane by lane.
    slots: Vec<OnceLock<Option<Run>>>,
    /// Each leader's region with the vector forms of its stretches, compiled once the run
    /// has been called `tier` times (compiling costs time a cold run never wins back).
    vector: Vec<OnceLock<Option<Run>>>,
    calls: Vec<AtomicU32>,
    tier: u32,
    memory: Mutex<Option<CodeMemory>>,
    name: String,
    /// Runs compiled so far: the next run's [`Run::id`].
    runs: AtomicUsize,
}

/// The calls of a run (one warp's pass through it) after which its region, with the
/// vector forms of its stretches, is compiled. Compiling it costs more than a few hundred calls of a run win back: with the
/// vector forms compiled at once, a small LLM's prompt ran about 20% slower through the
/// soft device, and about the same as without them from 1,024 calls on.
pub const VECTOR_TIER: u32 = 1024;

impl Jit {
    /// Native code for `k`, none of it compiled yet: each run lane by lane first, with the
    /// vector forms of its stretches once it has been called [`VECTOR_TIER`] times. Fails
    /// when the host has no code generator for its CPU.
    pub fn new(k: &Kernel) -> Result<Jit, String> {
        Jit::tiered(k, VECTOR_TIER)
    }

    /// [`Jit::new`] with the vector forms compiled at a run's first call.
    pub fn eager(k: &Kernel) -> Result<Jit, String> {
        Jit::tiered(k, 0)
    }

    /// [`Jit::new`] with the vector forms compiled once a run has been called `tier` times.
    pub fn tiered(k: &Kernel, tier: u32) -> Result<Jit, String> {
        let module = codegen::module()?;
        let mut code = k.code.clone();
        // A generic address may name a lane's local memory, which compiled code does not
        // reach: in a kernel that has some, generic loads are the interpreter's (in the
        // copy compiled from, they read as the local loads they may be, which no run
        // holds). Elsewhere a generic load's address is global memory's or the shared
        // window's (`direct::find`), or no memory's.
        if k.local_bytes > 0 {
            for i in &mut code {
                if let Op::Ld {
                    space: space @ MemSpace::Generic,
                    ..
                } = &mut i.op
                {
                    *space = MemSpace::Local;
                }
            }
        }
        let guarded = if_convert(&mut code);
        let leaders = leaders(&code);
        let live = Liveness::of(&code);
        let known = Constants::of(&code);
        let slots = (0..code.len()).map(|_| OnceLock::new()).collect();
        let vector = (0..code.len()).map(|_| OnceLock::new()).collect();
        let calls = (0..code.len()).map(|_| AtomicU32::new(0)).collect();
        Ok(Jit {
            code,
            live,
            known,
            leaders,
            guarded,
            slots,
            vector,
            calls,
            tier,
            memory: Mutex::new(Some(CodeMemory(module))),
            name: k.name.clone(),
            runs: AtomicUsize::new(0),
        })
    }

    /// How many runs have been compiled so far (lane by lane; each region counts its runs).
    pub fn compiled(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| s.get()?.as_ref())
            .map(|r| r.exits.len())
            .sum()
    }

    /// How many stretches of the runs compiled so far in vector form have one.
    pub fn vector_stretches(&self) -> usize {
        self.vector
            .iter()
            .filter_map(|s| s.get()?.as_ref())
            .map(|r| r.vector_stretches)
            .sum()
    }

    /// The instructions of the run that would start at `pc`, and its branch.
    fn extent(&self, pc: usize) -> Option<(usize, Option<u32>)> {
        if !*self.leaders.get(pc)? {
            return None;
        }
        let mut end = pc;
        while end < self.code.len()
            && end - pc < MAX_RUN
            && (end == pc || !self.leaders[end])
            && in_run(&self.code[end])
        {
            end += 1;
        }
        // Not into stores that `if_convert` guarded: the run ends before their branch (a
        // `nop` here), which the interpreter then takes as the kernel has it.
        while end > pc && self.guarded.get(end) == Some(&true) {
            end -= 1;
        }
        let mut target = None;
        if let Some(Inst {
            op: Op::Bra { target: t },
            ..
        }) = self.code.get(end)
        {
            if end == pc || !self.leaders[end] {
                target = Some(*t);
                end += 1;
            }
        }
        // Even a single instruction, a lone branch included, costs less called than
        // interpreted, lane by lane.
        (end > pc).then_some((end, target))
    }

    /// The region that starts with the run at `pc`: that run, and the runs after it that
    /// the whole warp may go on to (only forward, so the warp leaves the region after at
    /// most one pass through each), as long as they hold at most `most` runs,
    /// [`MAX_RUN`] instructions ([`MAX_LONG_REGION`] past [`SMALL_REGION`] runs) and
    /// [`direct::SITES`] global accesses. Every run of a
    /// region starts at a leader, as it would alone.
    fn region(&self, pc: usize, most: usize) -> Option<Vec<codegen::Sub>> {
        let mut subs: Vec<codegen::Sub> = Vec::new();
        let (mut queue, mut size, mut accesses) = (std::collections::VecDeque::from([pc]), 0, 0);
        while let Some(start) = queue.pop_front() {
            if subs.len() >= most || subs.iter().any(|s| s.start == start) {
                continue;
            }
            let Some((end, target)) = self.extent(start) else {
                continue;
            };
            let global: usize = self.code[start..end]
                .iter()
                .filter(|i| global_access(&i.op))
                .map(|i| match i.op {
                    Op::Ld { n, .. } | Op::St { n, .. } => usize::from(n),
                    _ => 1,
                })
                .sum();
            if !subs.is_empty()
                && (size + end - start > MAX_RUN
                    || accesses + global > direct::SITES
                    || (subs.len() >= SMALL_REGION && size + end - start > MAX_LONG_REGION))
            {
                continue;
            }
            (size, accesses) = (size + end - start, accesses + global);
            subs.push(codegen::Sub {
                start,
                end,
                target,
                looping: target == Some(start as u32),
                fall: None,
                jump: None,
            });
            queue.push_back(end);
            if let Some(t) = target.filter(|&t| t as usize > start) {
                queue.push_back(t as usize);
            }
        }
        let index = |to: usize, from: usize| {
            (to > from)
                .then(|| subs.iter().position(|s| s.start == to))
                .flatten()
        };
        let links: Vec<(Option<usize>, Option<usize>)> = subs
            .iter()
            .map(|s| {
                (
                    index(s.end, s.start),
                    s.target.and_then(|t| index(t as usize, s.start)),
                )
            })
            .collect();
        for (s, (fall, jump)) in subs.iter_mut().zip(links) {
            (s.fall, s.jump) = (fall, jump);
        }
        (!subs.is_empty()).then_some(subs)
    }

    /// The run at `pc` lane by lane, or (`vectors`, the second tier) its region of up to
    /// [`MAX_REGION`] runs with the vector forms of their stretches; `None` where it cannot
    /// be compiled (or has no vector form that compiles). A cold run is compiled alone:
    /// regions cost more to compile than the few calls of a cold one win back.
    fn compile(&self, pc: usize, vectors: bool) -> Option<Run> {
        let subs = self.region(pc, if vectors { MAX_REGION } else { 1 })?;
        let hot = vectors || self.region(pc, 2).is_some_and(|r| r.len() > 1);
        let end = subs[0].end;
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let module = &mut memory.as_mut()?.0;
        let live = |i: usize, r: Reg| self.live.live_after(i, r);
        let facts = |i: usize| self.known.as_ref()?.at(&self.code, i);
        let compiled = codegen::compile(module, &self.code, &subs, &live, &facts, vectors);
        log::debug!(
            "kernel {}: instructions {pc}..{end}{}, {} runs of {} instructions, compiled in {} µs",
            self.name,
            if vectors { " (vector forms)" } else { "" },
            subs.len(),
            subs.iter().map(|s| s.end - s.start).sum::<usize>(),
            started.elapsed().as_micros()
        );
        match compiled {
            Ok(c) => Some(Run {
                code: c.code,
                exits: subs.iter().map(|s| (s.end as u32, s.target)).collect(),
                slots: c.slots,
                params: c.params,
                global: subs.iter().any(|s| {
                    self.code[s.start..s.end]
                        .iter()
                        .any(|i| global_access(&i.op))
                }),
                vector_stretches: c.vector_stretches,
                whole_warps: c.whole_warps,
                hot: hot || c.vector_stretches > 0,
                id: self.runs.fetch_add(1, Ordering::Relaxed),
            }),
            // The vector forms need SIMD instructions a host may lack: the run then stays
            // lane by lane. Code the IR verifier (on in debug builds) refuses is a defect
            // here, not a host's lack: the test suites stop on it.
            Err(e) if vectors => {
                debug_assert!(
                    !matches!(e, codegen::CodegenError::Verifier(_)),
                    "kernel {}: instructions {pc}..{end}: {e}",
                    self.name
                );
                log::debug!(
                    "kernel {}: instructions {pc}..{end}: no vector form ({e}), lane by lane",
                    self.name
                );
                None
            }
            Err(e) => {
                log::warn!(
                    "kernel {}: instructions {pc}..{end} not compiled, interpreted: {e}",
                    self.name
                );
                None
            }
        }
    }
}

impl State {
    /// The `LoadCtx` of run `id`, made (its sites empty) at the run's first call on this
    /// thread. Its sites hold only allocations of `mem`, the launch's memory: should a
    /// call bring other memory, they are emptied.
    fn loads_of(&mut self, id: usize, mem: *const DirectMemory) -> &mut direct::LoadCtx {
        if self.loads.len() <= id {
            self.loads.resize_with(id + 1, || None);
        }
        let ctx = self.loads[id].get_or_insert_with(|| Box::new(direct::LoadCtx::new(mem)));
        if ctx.mem != mem {
            **ctx = direct::LoadCtx::new(mem);
        }
        ctx
    }
}

impl Native for Jit {
    fn state(&self) -> Box<dyn Any + Send> {
        Box::new(State::default())
    }

    fn at(&self, pc: u32, mask: u32) -> Option<&dyn NativeRun> {
        let pc = pc as usize;
        let vector = self.vector.get(pc)?;
        if mask == u32::MAX {
            if let Some(Some(v)) = vector.get() {
                return Some(v);
            }
        }
        self.first_tier(pc, mask)
    }
}

impl Jit {
    /// [`Native::at`] where no second tier has been compiled for whole warps: the run lane
    /// by lane, compiled at its first call, or the second tier once whole warps called it
    /// often enough. (Out of line: the call that finds the second tier is most calls.)
    #[inline(never)]
    fn first_tier(&self, pc: usize, mask: u32) -> Option<&dyn NativeRun> {
        let vector = self.vector.get(pc)?;
        let run = self.slots[pc]
            .get_or_init(|| self.compile(pc, false))
            .as_ref()?;
        // Only whole warps use the second tier (its vector forms and its regions), and only
        // their calls count toward it.
        if mask != u32::MAX {
            return Some(run);
        }
        // A run with no stretch that has a vector form and no run to go on to never gets a
        // second tier. The count is read before it is bumped: once the tier is reached,
        // calls (from every host thread of the launch) only read its cache line and no
        // longer write it.
        let calls = &self.calls[pc];
        if !run.hot
            || (calls.load(Ordering::Relaxed) < self.tier
                && calls.fetch_add(1, Ordering::Relaxed) < self.tier)
        {
            return Some(run);
        }
        match vector.get_or_init(|| self.compile(pc, true)) {
            Some(v) => Some(v),
            None => Some(run),
        }
    }
}

impl Drop for Jit {
    fn drop(&mut self) {
        let memory = self.memory.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(CodeMemory(module)) = memory.take() {
            // SAFETY: every pointer to this memory is in a `Run` in `self.slots` or
            // `self.vector`, and runs
            // are lent out only for as long as `self` is borrowed: none is running or can
            // be called once `self` is being dropped.
            unsafe { module.free_memory() };
        }
    }
}

/// Whether a source operand is one compiled code reads: a register, an immediate, or a
/// special register other than the clock (which counts the interpreter's steps).
fn lane_src(s: &Src) -> bool {
    match s {
        Src::Reg(r) => *r != SINK,
        Src::Imm(_) => true,
        Src::Special(Special::Clock) => false,
        Src::Special(_) => true,
        Src::Global(..) => false,
    }
}

/// The byte range of a load from the parameters at a constant, aligned offset, which
/// compiled code may hold (`None` for any other load).
pub(crate) fn param_load(op: &Op) -> Option<std::ops::Range<usize>> {
    let Op::Ld {
        space: MemSpace::Param,
        ty,
        n,
        addr: Addr {
            base: None,
            global: None,
            offset,
        },
        ..
    } = op
    else {
        return None;
    };
    let size = u64::from(ty.size());
    let start = u64::try_from(*offset).ok()?;
    if start % size != 0 {
        return None;
    }
    let end = start.checked_add(size * u64::from(*n))?;
    (end <= u64::from(u32::MAX)).then_some(start as usize..end as usize)
}

/// The state space and direction (`true`: a store) of a load or store compiled code may
/// hold besides parameter loads: global or shared memory at a register plus a constant,
/// and generic loads (see [`Jit::tiered`]).
pub(crate) fn memory_access(op: &Op) -> Option<(MemSpace, bool)> {
    match op {
        Op::Ld {
            space: s @ (MemSpace::Global | MemSpace::Shared | MemSpace::Generic),
            addr: Addr { global: None, .. },
            ..
        } => Some((*s, false)),
        Op::St {
            space: s @ (MemSpace::Global | MemSpace::Shared),
            addr: Addr { global: None, .. },
            ..
        } => Some((*s, true)),
        _ => None,
    }
}

/// Whether compiled code makes `op` as an access of global memory through a load site
/// (a generic load is one).
fn global_access(op: &Op) -> bool {
    matches!(
        memory_access(op),
        Some((MemSpace::Global | MemSpace::Generic, _))
    )
}

/// The source operands of an operation a run may hold (a load's base register among
/// them); `None` for any other operation.
pub(crate) fn run_sources(op: &Op) -> Option<Vec<Src>> {
    Some(match op {
        Op::Nop => vec![],
        Op::Ld { addr, .. } if memory_access(op).is_some() || param_load(op).is_some() => {
            addr.base.map(Src::Reg).into_iter().collect()
        }
        Op::St { addr, a, n, .. } if memory_access(op).is_some() => {
            let mut v: Vec<Src> = a.iter().take(usize::from(*n)).copied().collect();
            v.extend(addr.base.map(Src::Reg));
            v
        }
        Op::Ld { .. } | Op::St { .. } => return None,
        op => return vgpu_ptx::constants::pure_sources(op),
    })
}

/// Whether an instruction touches nothing but the lane's registers, the parameters,
/// special registers, and global or shared memory (and so may be in a run).
fn per_lane(i: &Inst) -> bool {
    run_sources(&i.op).is_some_and(|s| s.iter().all(lane_src))
}

/// Whether a run may hold an instruction: a per-lane one, or a warp-wide one that touches
/// only the warp's registers (`shfl`, `vote`, `activemask`, the no-ops), which the code
/// calls the interpreter for between its stretches of per-lane code.
fn in_run(i: &Inst) -> bool {
    per_lane(i) || vgpu_ptx::exec::is_warp_op(&i.op)
}

/// The most stores a branch may skip for [`if_convert`] to guard them instead.
const MAX_GUARDED: usize = 4;

/// Turns each forward branch over at most [`MAX_GUARDED`] unguarded stores to global or
/// shared memory (`@p bra L; st …; L:`, the `if (lane == 0) shared[warp] = sum;` of a
/// block reduction) into those stores under the opposite guard, the branch into a `nop`,
/// where no other branch lands among the stores: the lanes that skipped them and those
/// that made them no longer part there, and compiled code goes on past them for the whole
/// warp (each lane's store made or not by its guard, as the lane that took the branch
/// made none), where the warp left its region and came back through the interpreter, the
/// one lane that stores, and a run of its own after them. Returns which instructions it
/// guarded. The interpreter keeps the kernel's own code: a run never ends before a
/// guarded store ([`Jit::extent`]), so the interpreter only ever takes over at the
/// branch, or after the stores.
fn if_convert(code: &mut [Inst]) -> Vec<bool> {
    let mut landed = vec![false; code.len() + 1];
    for i in code.iter() {
        if let Op::Bra { target } | Op::Call { target, .. } = &i.op {
            if let Some(t) = landed.get_mut(*target as usize) {
                *t = true;
            }
        }
    }
    let mut guarded = vec![false; code.len() + 1];
    for b in 0..code.len() {
        let Inst {
            guard: Some((p, neg)),
            op: Op::Bra { target },
            ..
        } = code[b]
        else {
            continue;
        };
        let body = b + 1..target as usize;
        let stores = |i: &Inst| {
            i.guard.is_none()
                && matches!(
                    memory_access(&i.op),
                    Some((MemSpace::Global | MemSpace::Shared, true))
                )
        };
        if body.is_empty()
            || body.len() > MAX_GUARDED
            || body.end > code.len()
            || body.clone().any(|k| landed[k] || guarded[k])
            || !code[body.clone()].iter().all(stores)
        {
            continue;
        }
        for k in body {
            code[k].guard = Some((p, !neg));
            guarded[k] = true;
        }
        code[b].op = Op::Nop;
        code[b].guard = None;
    }
    guarded
}

/// Which instructions start a run: the first, each branch target and call target, and
/// each instruction after a branch or after one that cannot be in a run.
fn leaders(code: &[Inst]) -> Vec<bool> {
    let mut l = vec![false; code.len() + 1];
    l[0] = true;
    for (i, inst) in code.iter().enumerate() {
        match &inst.op {
            Op::Bra { target } | Op::Call { target, .. } => {
                if let Some(t) = l.get_mut(*target as usize) {
                    *t = true;
                }
                l[i + 1] = true;
            }
            _ if !in_run(inst) => l[i + 1] = true,
            _ => {}
        }
    }
    l.truncate(code.len());
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu_ptx::ir::{Reg, Ty};

    fn kernel(code: Vec<Op>) -> Kernel {
        Kernel {
            name: "k".into(),
            params: vec![],
            param_bytes: 8,
            regs: 4,
            shared_bytes: 0,
            local_bytes: 0,
            frame_bytes: 0,
            read_first: None,
            code: code
                .into_iter()
                .map(|op| Inst {
                    guard: None,
                    op,
                    line: 1,
                })
                .collect(),
        }
    }

    fn mov(d: Reg) -> Op {
        Op::Mov { d, a: Src::Imm(7) }
    }

    /// `add.u32 d, a, b`.
    fn add(d: Reg, a: Reg, b: Src) -> Op {
        Op::Bin {
            op: vgpu_ptx::ir::BinOp::Add,
            ty: Ty::U32,
            d,
            a: Src::Reg(a),
            b,
            ftz: false,
            sat: false,
            round: Default::default(),
            nan: false,
        }
    }

    /// Calls `f` with what a warp of block 0 sees: eight zero bytes of parameters and
    /// eight bytes of global memory.
    fn with_env<R>(f: impl FnOnce(&WarpEnv<'_>) -> R) -> R {
        let mem = DirectMemory::zeroed(0x1000, 8).unwrap();
        let specials = Specials::default();
        f(&WarpEnv {
            params: &[0; 8],
            specials: &specials,
            mem: &mem,
        })
    }

    /// `st.shared.u32 [r1], r2`.
    fn store() -> Op {
        Op::St {
            space: MemSpace::Shared,
            ty: Ty::U32,
            n: 1,
            a: [Src::Reg(2), Src::Imm(0), Src::Imm(0), Src::Imm(0)],
            addr: Addr {
                base: Some(1),
                global: None,
                offset: 0,
            },
        }
    }

    /// `@p bra` (`@!p` with `neg`) to `target`.
    fn branch(target: u32, neg: bool) -> Inst {
        Inst {
            guard: Some((3, neg)),
            op: Op::Bra { target },
            line: 1,
        }
    }

    /// A branch over stores becomes those stores under the opposite guard and a `nop`; one
    /// over anything else, into which another branch lands, back, over stores already
    /// guarded or over too many stores stays.
    #[test]
    fn a_branch_over_a_few_stores_becomes_their_guard() {
        let mut code = kernel(vec![mov(3), Op::Nop, store(), store(), Op::Exit]).code;
        code[1] = branch(4, false);
        let guarded = if_convert(&mut code);
        assert_eq!(code[1].op, Op::Nop);
        assert_eq!(code[1].guard, None);
        assert_eq!(code[2].guard, Some((3, true)));
        assert_eq!(code[3].guard, Some((3, true)));
        assert_eq!(guarded, [false, false, true, true, false, false]);
        // `@!p bra`: the stores under `p`.
        let mut code = kernel(vec![Op::Nop, store(), Op::Exit]).code;
        code[0] = branch(2, true);
        if_convert(&mut code);
        assert_eq!((&code[0].op, code[1].guard), (&Op::Nop, Some((3, false))));
        // Left as they are.
        let unchanged = |code: Vec<Inst>| {
            let mut c = code.clone();
            assert!(!if_convert(&mut c).contains(&true));
            assert_eq!(c, code);
        };
        let mut code = kernel(vec![Op::Nop, add(1, 1, Src::Imm(1)), Op::Exit]).code;
        code[0] = branch(2, false);
        unchanged(code);
        let mut code = kernel(vec![Op::Nop, store(), store(), Op::Exit, Op::Nop]).code;
        code[0] = branch(3, false);
        code[4] = branch(2, false);
        unchanged(code);
        let mut code = kernel(vec![store(), Op::Nop, Op::Exit]).code;
        code[1] = branch(0, false);
        unchanged(code);
        let mut code = kernel(vec![Op::Nop, store(), Op::Exit]).code;
        code[0] = branch(2, false);
        code[1].guard = Some((2, false));
        unchanged(code);
        let mut code = kernel(vec![Op::Nop; MAX_GUARDED + 2]).code;
        code[0] = branch(MAX_GUARDED as u32 + 2, false);
        for i in &mut code[1..] {
            i.op = store();
        }
        unchanged(code);
    }

    /// A run never ends among the stores a branch was turned into the guard of (there the
    /// interpreter would make them unguarded): one that reaches [`MAX_RUN`] instructions
    /// inside them ends before their branch.
    #[test]
    fn no_run_ends_among_guarded_stores() {
        let mut ops = vec![mov(3); MAX_RUN - 2];
        ops.extend([Op::Nop, store(), store(), Op::Exit]);
        let mut k = kernel(ops);
        k.code[MAX_RUN - 2] = branch(MAX_RUN as u32 + 1, false);
        let jit = Jit::new(&k).unwrap();
        assert_eq!(jit.extent(0), Some((MAX_RUN - 2, None)));
        assert_eq!(jit.extent(MAX_RUN - 2), None, "no run starts at the branch");
    }

    /// Register numbers whose slots no load offset reaches are left to the interpreter
    /// (which refuses such a block as out of resources), not compiled.
    #[test]
    fn registers_out_of_reach_are_not_compiled() {
        let k = kernel(vec![mov(1), mov(u32::MAX - 1), Op::Exit]);
        let jit = Jit::new(&k).unwrap();
        assert!(jit.at(0, u32::MAX).is_none());
        assert_eq!(jit.compiled(), 0);
        // A guard's register too.
        let mut k = kernel(vec![mov(1), mov(2), Op::Exit]);
        k.code[1].guard = Some((u32::MAX - 1, false));
        let jit = Jit::new(&k).unwrap();
        assert!(jit.at(0, u32::MAX).is_none());
    }

    /// A run never touches registers or parameters past what it is lent: with too few, it
    /// declines and the interpreter runs the instructions.
    #[test]
    fn short_registers_and_parameters_are_declined() {
        let load = Op::Ld {
            space: MemSpace::Param,
            ty: Ty::U64,
            n: 1,
            d: [2, 0, 0, 0],
            addr: Addr {
                base: None,
                global: None,
                offset: 0,
            },
        };
        // Registers 2 and 3 are read after the run (which ends at the barrier).
        let read = |r| Op::Mov {
            d: 1,
            a: Src::Reg(r),
        };
        let k = kernel(vec![mov(3), load, Op::Bar, read(2), read(3), Op::Exit]);
        let jit = Jit::new(&k).unwrap();
        let run = jit.at(0, u32::MAX).expect("a run");
        let mem = DirectMemory::zeroed(0x1000, 8).unwrap();
        let specials = Specials::default();
        let params = [1u8; 8];
        let env = |params| WarpEnv {
            params,
            specials: &specials,
            mem: &mem,
        };
        let mut regs = vec![0u64; 4 * 32];
        assert_eq!(
            run.run(
                &mut regs[..3 * 32],
                &mut [],
                1,
                &env(&params),
                &mut State::default()
            ),
            Ok(None)
        );
        assert_eq!(
            run.run(
                &mut regs,
                &mut [],
                1,
                &env(&params[..4]),
                &mut State::default()
            ),
            Ok(None)
        );
        assert!(regs.iter().all(|&r| r == 0));
        let r = run.run(&mut regs, &mut [], 1, &env(&params), &mut State::default());
        assert_eq!(r.map(|e| e.map(|e| e.taken)), Ok(Some(0)));
        assert_eq!((regs[3 * 32], regs[2 * 32]), (7, 0x0101_0101_0101_0101));
    }

    /// A thread's state keeps each run's load sites from call to call, but never carries
    /// an allocation over to other memory: a call over other memory looks its sites up
    /// again. An access outside every allocation faults with its own line.
    #[test]
    fn sites_kept_across_calls_stay_with_their_memory() {
        let load = Op::Ld {
            space: MemSpace::Global,
            ty: Ty::U64,
            n: 1,
            d: [2, 0, 0, 0],
            addr: Addr {
                base: Some(1),
                global: None,
                offset: 0,
            },
        };
        let read = Op::Mov {
            d: 3,
            a: Src::Reg(2),
        };
        let mut k = kernel(vec![load, Op::Bar, read, Op::Exit]);
        k.code[0].line = 40;
        let jit = Jit::new(&k).unwrap();
        let run = jit.at(0, 1).expect("a run");
        // Two memories at the same device address, with different values there.
        let a = DirectMemory::zeroed(0x1000, 8).unwrap();
        let b = DirectMemory::zeroed(0x1000, 8).unwrap();
        assert!(a.put(0x1000, &7u64.to_le_bytes()) && b.put(0x1000, &9u64.to_le_bytes()));
        let specials = Specials::default();
        let mut state = State::default();
        let mut regs = vec![0u64; 4 * 32];
        for (mem, want) in [(&a, 7), (&a, 7), (&b, 9), (&a, 7)] {
            (regs[32], regs[64]) = (0x1000, 0);
            let env = WarpEnv {
                params: &[0; 8],
                specials: &specials,
                mem,
            };
            let r = run.run(&mut regs, &mut [], 1, &env, &mut state);
            assert_eq!(r.map(|e| e.map(|e| e.taken)), Ok(Some(0)));
            assert_eq!(regs[64], want);
        }
        regs[32] = 0x2000;
        let env = WarpEnv {
            params: &[0; 8],
            specials: &specials,
            mem: &a,
        };
        assert_eq!(
            run.run(&mut regs, &mut [], 1, &env, &mut state),
            Err(Fault::IllegalAddress {
                addr: 0x2000,
                size: 8,
                line: 40
            })
        );
    }

    /// A run stores back only the registers read after it: values nothing reads again stay
    /// in machine registers.
    #[test]
    fn dead_registers_are_not_stored() {
        // r1 is read after the run, r2 only inside it, r3 never.
        let read = Op::Mov {
            d: 1,
            a: Src::Reg(1),
        };
        let k = kernel(vec![
            mov(2),
            add(1, 2, Src::Imm(1)),
            mov(3),
            Op::Bar,
            read,
            Op::Exit,
        ]);
        let jit = Jit::new(&k).unwrap();
        let run = jit.at(0, u32::MAX).expect("a run");
        let mut regs = vec![0u64; 4 * 32];
        let r = with_env(|env| run.run(&mut regs, &mut [], 0b101, env, &mut State::default()));
        assert_eq!(r.map(|e| e.map(|e| e.taken)), Ok(Some(0)));
        for lane in 0..32 {
            let want = if lane == 0 || lane == 2 { 8 } else { 0 };
            assert_eq!(regs[32 + lane], want, "r1 of lane {lane}");
            assert_eq!(regs[2 * 32 + lane], 0, "r2 of lane {lane}");
            assert_eq!(regs[3 * 32 + lane], 0, "r3 of lane {lane}");
        }
    }

    /// A whole warp whose lanes all go the same way goes on to the next run of the region
    /// in the same call, and says where it stopped; part of a warp stops after the first
    /// run, at its branch.
    #[test]
    fn whole_warps_go_on_through_a_region() {
        let read = Op::Mov {
            d: 0,
            a: Src::Reg(1),
        };
        // 0: r1 = 7; 1: bra 3; 2: r2 = 7 (skipped); 3: r1 += 1; 4: bar (no run).
        let k = kernel(vec![
            mov(1),
            Op::Bra { target: 3 },
            mov(2),
            add(1, 1, Src::Imm(1)),
            Op::Bar,
            read,
            Op::Mov {
                d: 0,
                a: Src::Reg(2),
            },
            Op::Exit,
        ]);
        // Regions are the second tier: at once, here.
        let jit = Jit::eager(&k).unwrap();
        let run = jit.at(0, u32::MAX).expect("a region");
        assert_eq!(run.end(), 2);
        let mut regs = vec![0u64; 4 * 32];
        let r = with_env(|env| run.run(&mut regs, &mut [], u32::MAX, env, &mut State::default()));
        let stop = Exit {
            taken: 0,
            end: 4,
            target: None,
            parted: false,
        };
        assert_eq!(r, Ok(Some(stop)));
        assert!(regs[32..64].iter().all(|&v| v == 8), "r1 of every lane");
        assert!(regs[64..96].iter().all(|&v| v == 0), "r2 untouched");
        // Part of a warp: the region (a pass, for whole warps only) declines it, and the
        // run alone stops at its own branch.
        let mut regs = vec![0u64; 4 * 32];
        let r = with_env(|env| run.run(&mut regs, &mut [], 0b1, env, &mut State::default()));
        assert_eq!(r, Ok(None), "the region declines part of a warp");
        let alone = jit.at(0, 0b1).expect("the run alone");
        let r = with_env(|env| alone.run(&mut regs, &mut [], 0b1, env, &mut State::default()));
        let stop = Exit {
            taken: 0b1,
            end: 2,
            target: Some(3),
            parted: false,
        };
        assert_eq!(r, Ok(Some(stop)));
        assert_eq!((regs[32], regs[33]), (7, 0), "r1 of lanes 0 and 1");
    }

    /// A run that branches back to its own start loops inside compiled code: one call runs
    /// each lane's iterations until it leaves the loop.
    #[test]
    fn loops_run_inside_compiled_code() {
        let read = |r| Op::Mov {
            d: 0,
            a: Src::Reg(r),
        };
        // r1 = 0, r2 = laneid; loop: r1 += 3; r2 += 1; p3 = r2 < 5; @p3 bra loop.
        let mut k = kernel(vec![
            Op::Mov {
                d: 1,
                a: Src::Imm(0),
            },
            Op::Mov {
                d: 2,
                a: Src::Special(Special::LaneId),
            },
            Op::Bar,
            add(1, 1, Src::Imm(3)),
            add(2, 2, Src::Imm(1)),
            Op::Setp {
                cmp: vgpu_ptx::ir::Cmp::Lt,
                ty: Ty::U32,
                d: 3,
                d2: None,
                a: Src::Reg(2),
                b: Src::Imm(5),
                combine: None,
                ftz: false,
            },
            Op::Bra { target: 3 },
            Op::Bar,
            read(1),
            read(2),
            Op::Exit,
        ]);
        k.code[6].guard = Some((3, false));
        let jit = Jit::new(&k).unwrap();
        let run = jit.at(3, u32::MAX).expect("the loop compiled");
        let mut regs = vec![0u64; 4 * 32];
        for lane in 0..32 {
            regs[2 * 32 + lane] = lane as u64;
        }
        let r = with_env(|env| run.run(&mut regs, &mut [], u32::MAX, env, &mut State::default()));
        assert_eq!(r.map(|e| e.map(|e| e.taken)), Ok(Some(0)));
        for lane in 0..32 {
            let n = 5u64.saturating_sub(lane as u64).max(1);
            assert_eq!(regs[32 + lane], 3 * n, "r1 of lane {lane}");
            assert_eq!(regs[2 * 32 + lane], lane as u64 + n, "r2 of lane {lane}");
        }
    }
}
