//! Cranelift code for one run: for each stretch of per-lane instructions, a loop over the
//! lanes of the mask, each lane running the whole stretch with its registers in SSA values
//! (loaded on first use, stored back once at the end of the lane if read after the run),
//! after the stretch's instructions that compute the same value in every lane
//! ([`uniform`]); between two stretches, the warp-wide instruction there: a shuffle inline
//! ([`shuffle`]), anything else by a call of the interpreter's warp-wide step. A stretch
//! also ends where running lane after lane could reorder memory accesses the lanes may
//! share ([`segments`]). A stretch with a vector form also gets one for the warps whose
//! lanes all run it ([`crate::vector`]), chosen when the run is called.

use crate::direct::{LoadCtx, Site, SITES};
use crate::Code;
use crate::{HashMap, HashSet};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F64, I16, I32, I32X4, I64, I64X2, I8, I8X16};
use cranelift_codegen::ir::{
    AbiParam, Block, BlockArg, Endianness, InstBuilder, MemFlags, SigRef, SourceLoc, Type, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Module, ModuleError};
use std::collections::BTreeSet;
use std::mem::offset_of;
use vgpu_ptx::constants::Facts;
use vgpu_ptx::exec::{Specials, CANONICAL_NAN_F32};
use vgpu_ptx::ir::{
    Addr, BinOp, BoolOp, Cmp, HalfOp, Inst, MemSpace, Op, Reg, Round, ShflMode, Special, Src, Ty,
    UnOp,
};
use vgpu_ptx::lower::SINK;

mod pass;

/// A code generator for this host's CPU.
pub(crate) fn module() -> Result<JITModule, String> {
    let mut flags = settings::builder();
    flags
        .set("opt_level", "speed")
        .map_err(|e| format!("cranelift flags: {e}"))?;
    // Cranelift's IR verifier costs about 40% of a compilation. Debug builds (the test
    // suites) run it on every function compiled; release builds skip it.
    flags
        .set(
            "enable_verifier",
            if cfg!(debug_assertions) {
                "true"
            } else {
                "false"
            },
        )
        .map_err(|e| format!("cranelift flags: {e}"))?;
    let isa = cranelift_native::builder()
        .map_err(|e| format!("no code generator for this CPU: {e}"))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| format!("code generator: {e}"))?;
    Ok(JITModule::new(JITBuilder::with_isa(
        isa,
        default_libcall_names(),
    )))
}

/// The most iterations one lane runs of a loop inside compiled code in one call; a lane
/// that would run more stops at the loop's start, and the interpreter calls the run again
/// (after checking the launch's watchdog as it does between runs).
pub(crate) const LOOP_BUDGET: i64 = 1 << 10;

/// The calling convention of the host functions compiled code calls (see `helpers!`).
fn helper_conv(module: &JITModule) -> CallConv {
    if cfg!(target_arch = "x86_64") {
        CallConv::WindowsFastcall
    } else {
        module.isa().default_call_conv()
    }
}

/// Registers whose slots lie too far for a load's offset are not compiled.
const MAX_REG: Reg = (i32::MAX / 256) as Reg;

/// One run of a region that [`compile`] makes one function of: the instructions
/// `start..end` of the kernel (ending with the run's branch, if it has one), where that
/// branch goes (`target`), whether it goes back to `start`, and the runs of the region (by
/// index) that the whole warp goes on to when every lane falls through (`fall`) or every
/// lane takes the branch (`jump`).
pub(crate) struct Sub {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) target: Option<u32>,
    pub(crate) looping: bool,
    pub(crate) fall: Option<usize>,
    pub(crate) jump: Option<usize>,
}

/// A run's compiled code, and what it touches.
pub(crate) struct Compiled {
    pub(crate) code: Code,
    /// Register slots: `(highest register + 1) * 32`.
    pub(crate) slots: usize,
    /// Bytes of the parameter buffer it reads.
    pub(crate) params: usize,
    /// Stretches with a vector form for whole warps.
    pub(crate) vector_stretches: usize,
    /// Whether the code is only for whole warps (a region with a pass).
    pub(crate) whole_warps: bool,
}

/// Why a run was not compiled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodegenError {
    /// Cranelift's IR verifier (on in debug builds) refused the function: a defect of
    /// the code built here.
    #[error("the IR verifier refused it: {0}")]
    Verifier(String),
    /// Anything else: a register out of reach, an operation with no compiled form, SIMD
    /// instructions the host lacks, the code memory.
    #[error("{0}")]
    Other(String),
}

impl From<String> for CodegenError {
    fn from(e: String) -> Self {
        CodegenError::Other(e)
    }
}

/// Compiles a run; gives its code, the register slots it touches, the bytes of
/// parameters it reads and how many of its stretches have a vector form
/// for whole warps ([`crate::vector`]; built only with `vectors`). `live(i, r)` says whether register `r` may be read after
/// `insts[i]` (by the rest of the run, or the code after it): a lane stores back only
/// those of the registers it wrote. `facts(i)` is what is known of the registers on every
/// path to `insts[i]`: values (a shuffle's known operands make it a move per lane) and
/// which hold no f32 subnormal (a `.ftz` operand read from one needs no flushing).
pub(crate) fn compile(
    module: &mut JITModule,
    code: &[Inst],
    subs: &[Sub],
    live_at: &dyn Fn(usize, Reg) -> bool,
    facts_at: &dyn Fn(usize) -> Option<Facts>,
    vectors: bool,
) -> Result<Compiled, CodegenError> {
    let ptr = module.target_config().pointer_type();
    let mut ctx = module.make_context();
    // The registers, the mask of lanes, the parameters, the specials, the `LoadCtx`: the
    // lanes that take the last branch.
    let sig = &mut ctx.func.signature;
    sig.params
        .extend([ptr, I32, ptr, ptr, ptr].map(AbiParam::new));
    sig.returns.push(AbiParam::new(I32));
    // The helpers compiled code calls: the `direct` lookups, the interpreter's
    // arithmetic (`lane_value`), its warp-wide step (`warp_step`), the host's math.
    let signature = |params: &[Type], returns: &[Type]| {
        let mut s = module.make_signature();
        s.call_conv = helper_conv(module);
        s.params.extend(params.iter().map(|&t| AbiParam::new(t)));
        s.returns.extend(returns.iter().map(|&t| AbiParam::new(t)));
        s
    };
    let find = signature(&[ptr, I64, I64, I64, I64], &[ptr]);
    let helper = signature(&[ptr, I64, I64, I64, I64], &[I64]);
    let warp = signature(&[ptr, ptr, ptr, I64], &[]);
    let math = signature(&[F64], &[F64]);

    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
    let helper = b.import_signature(helper);
    let math = b.import_signature(math);
    let find = b.import_signature(find);
    let warp = b.import_signature(warp);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let (regs, mask) = (b.block_params(entry)[0], b.block_params(entry)[1]);
    let (params, specials) = (b.block_params(entry)[2], b.block_params(entry)[3]);
    let loads = b.block_params(entry)[4];
    let call = crate::vector::Call {
        regs,
        params,
        specials,
        loads,
        find,
        math,
        helper,
        ptr,
    };
    let none = b.ins().iconst(I32, 0);

    let (mut top, mut sites, mut param_bytes) = (0, 0, 0);
    // A whole warp runs the region's first runs group by group where they allow it
    // (`pass`), and only whole warps call a region with a pass (`Run::run` declines the
    // others): its runs have no code but the pass's.
    let plan = vectors
        .then(|| pass::plan(code, subs, facts_at))
        .filter(|p| !p.runs.is_empty());
    let passing: Vec<usize> = plan.as_ref().map_or(Vec::new(), |p| p.runs.clone());
    // The runs of the region, one after the other, each entered from its branch's block
    // in the run before (the first from the function's entry), each returning when the
    // warp does not go on to another run of the region together.
    let heads: Vec<Block> = (0..subs.len())
        .map(|i| if i == 0 { entry } else { b.create_block() })
        .collect();
    let mut vector_stretches = passing.len();
    if let Some(plan) = plan {
        let hints: HashMap<usize, u64> = passing
            .iter()
            .flat_map(|&i| {
                let start = subs[i].start;
                coalesced(&code[start..subs[i].end], &|k| facts_at(start + k))
            })
            .collect();
        let mut needs = pass::Needs {
            call,
            live_at,
            hints: &hints,
            top,
            sites,
            param_bytes,
        };
        log::debug!(
            "pass of runs {:?}",
            passing
                .iter()
                .map(|&i| format!("{}-{}", subs[i].start, subs[i].end))
                .collect::<Vec<_>>()
        );
        b = pass::build(b, &mut needs, code, subs, plan, &heads)?;
        (top, param_bytes) = (needs.top, needs.param_bytes);
    }
    for (index, sub) in subs.iter().enumerate() {
        // Nothing but the pass goes to its runs.
        if passing.contains(&index) {
            continue;
        }
        if index > 0 {
            b.switch_to_block(heads[index]);
        }
        let insts = &code[sub.start..sub.end];
        let live = |i: usize, r: Reg| live_at(sub.start + i, r);
        let facts = |i: usize| facts_at(sub.start + i);
        // Stretches of per-lane instructions, each a loop over the lanes, with the warp-wide
        // instructions between them called once for the warp.
        let mut taken_out = none;
        let segs = segments(insts);
        // The accesses the vector forms test for coalesced lanes.
        let hints = if vectors {
            coalesced(insts, &facts)
        } else {
            HashMap::default()
        };
        let segments_count = segs.len();
        // A run that branches back to its own start, in one stretch with no stores, loops
        // inside the compiled code: each lane runs its iterations on its own.
        let looping = sub.looping
            && segments_count == 1
            && segs[0].1.is_none()
            && matches!(insts.last().map(|i| &i.op), Some(Op::Bra { .. }))
            && !insts
                .iter()
                .any(|i| matches!(crate::memory_access(&i.op), Some((_, true))));
        // A whole warp runs a butterfly reduction's stretches and shuffles in one vector
        // chain (`vector::chain`).
        let mut chained = None;
        if vectors && !looping {
            if let Some(parts) = chain_parts(insts, &segs, &facts, &live) {
                let (whole, some, done) = (b.create_block(), b.create_block(), b.create_block());
                b.append_block_param(done, I32);
                let all = b.ins().icmp_imm(IntCC::Equal, mask, -1);
                b.ins().brif(all, whole, &[], some, &[]);
                b.switch_to_block(whole);
                b.seal_block(whole);
                // The registers the same in every lane when the run starts, read once from
                // lane 0's slots (the whole warp runs the chain): every group shares them.
                let (normal_in, same_in, narrow_in) = stretch_in(insts, facts(0), false);
                let mut same_in: Vec<Reg> = same_in.into_iter().collect();
                same_in.sort_unstable();
                let uniform_vals: HashMap<Reg, Value> = same_in
                    .into_iter()
                    .map(|r| {
                        let flags = MemFlags::new().with_notrap();
                        (r, b.ins().load(I64, flags, call.regs, (r * 256) as i32))
                    })
                    .collect();
                let no_dirty = BTreeSet::new();
                let end = insts.len() - 1;
                let env = crate::vector::Env {
                    call,
                    sites,
                    uniform: &uniform_vals,
                    uniform_dirty: &no_dirty,
                    normal_in: &normal_in,
                    narrow_in: &narrow_in,
                    live: &|r| live(end, r),
                    coalesced: &hints,
                };
                let (bits, s) = crate::vector::chain(&mut b, &env, &parts);
                b.ins().jump(done, &[bits.into()]);
                b.switch_to_block(some);
                b.seal_block(some);
                chained = Some((done, s));
            }
        }
        for (range, warp_at) in segs {
            let (lane_part, warp_op) = (&insts[range.clone()], warp_at.map(|k| &insts[k]));
            if !lane_part.is_empty() {
                for inst in lane_part {
                    let r = highest_reg(inst);
                    if r > MAX_REG {
                        return Err(format!("register {r} is out of reach").into());
                    }
                }
                let (normal_in, same_in, narrow_in) =
                    stretch_in(lane_part, facts(range.start), looping);
                // The instructions whose values are the same in every lane, computed once
                // before the loop over the lanes, from the first lane's registers.
                let hoisted = uniform(lane_part, &same_in);
                // The first lane of the mask (any lane, when it is empty: then no lane runs the
                // stretch and what the hoisted code computes goes nowhere).
                let first32 = b.ins().ctz(mask);
                let first32 = b.ins().band_imm(first32, 31);
                let first = b.ins().uextend(I64, first32);
                let first_base = lane_slots(&mut b, ptr, regs, first);
                let mut u = Lane {
                    b,
                    ptr,
                    base: first_base,
                    params,
                    specials,
                    loads,
                    lane: first,
                    lane32: first32,
                    helper,
                    math,
                    find,
                    vals: HashMap::default(),
                    flushed: HashSet::default(),
                    normal_in: normal_in.clone(),
                    dirty: BTreeSet::new(),
                    top,
                    sites,
                    param_bytes,
                };
                for (inst, _) in lane_part.iter().zip(&hoisted).filter(|(_, &h)| h) {
                    u.op(&inst.op, None, inst.line)?;
                }
                let (uniform_vals, uniform_dirty) = (u.vals, u.dirty);
                (top, sites, param_bytes) = (u.top, u.sites, u.param_bytes);
                b = u.b;
                // The loop over the lanes, tested at its end (a shape whose invariant code
                // the code generator moves out of the loop).
                let body = b.create_block();
                let after = b.create_block();
                b.append_block_param(body, I32);
                b.append_block_param(body, I32);
                b.append_block_param(after, I32);
                let body_insts = unhoisted(lane_part, &hoisted);
                // A stretch whose every instruction is computed once for the warp stores
                // their values four lanes at a time (its lane loop only stored them).
                let vector = body_insts.is_empty() || crate::vector::vectorizable(&body_insts);
                // Which instructions keep a stretch lane by lane, for whoever makes the next
                // vector form.
                if !vector && log::log_enabled!(log::Level::Trace) {
                    for i in body_insts
                        .iter()
                        .filter(|i| !crate::vector::vectorizable(&[**i]))
                    {
                        log::trace!("no vector form: line {}: {:?}", i.line, i.op);
                    }
                }
                // The vector form numbers the stretch's sites as the lane code does.
                let mut vector_sites = sites;
                if vector {
                    vector_stretches += 1;
                }
                if vectors && vector {
                    // When the whole warp runs the stretch: four lanes at a time.
                    let (whole, some) = (b.create_block(), b.create_block());
                    let all = b.ins().icmp_imm(IntCC::Equal, mask, -1);
                    b.ins().brif(all, whole, &[], some, &[]);
                    b.switch_to_block(whole);
                    b.seal_block(whole);
                    let end = range.end - 1;
                    let env = crate::vector::Env {
                        call,
                        sites,
                        uniform: &uniform_vals,
                        uniform_dirty: &uniform_dirty,
                        normal_in: &normal_in,
                        narrow_in: &narrow_in,
                        live: &|r| live(end, r),
                        coalesced: &hints,
                    };
                    let (r, s) = crate::vector::build(&mut b, &env, &body_insts, looping, after);
                    top = top.max(r);
                    vector_sites = s;
                    b.switch_to_block(some);
                    b.seal_block(some);
                }
                b.ins().brif(
                    mask,
                    body,
                    &[mask.into(), none.into()],
                    after,
                    &[none.into()],
                );
                b.switch_to_block(body);
                let (m, taken) = (b.block_params(body)[0], b.block_params(body)[1]);
                let lane32 = b.ins().ctz(m);
                let below = b.ins().iadd_imm(m, -1);
                let rest = b.ins().band(m, below);
                let lane = b.ins().uextend(I64, lane32);
                let base = lane_slots(&mut b, ptr, regs, lane);
                let mut l = Lane {
                    b,
                    ptr,
                    base,
                    params,
                    specials,
                    loads,
                    lane,
                    lane32,
                    helper,
                    math,
                    find,
                    vals: uniform_vals,
                    flushed: HashSet::default(),
                    normal_in,
                    dirty: uniform_dirty,
                    top,
                    sites,
                    param_bytes,
                };
                let taken = if looping {
                    // The lane's branch: taken only where it stopped at the loop's start.
                    let uniform_vals = l.vals.clone();
                    let (last, rest_insts) =
                        body_insts.split_last().ok_or("an empty loop".to_string())?;
                    let cond =
                        l.lane_loop(rest_insts, last, &uniform_vals, &|r| live(range.end - 1, r))?;
                    l.take(taken, Some(cond))
                } else {
                    l.straight(&body_insts, taken)?
                };
                l.store_back(|r| live(range.end - 1, r));
                (top, param_bytes) = (l.top, l.param_bytes);
                // Both forms number the same sites; the larger count covers every slot read.
                sites = l.sites.max(vector_sites);
                b = l.b;
                b.ins().brif(
                    rest,
                    body,
                    &[rest.into(), taken.into()],
                    after,
                    &[taken.into()],
                );
                b.seal_block(body);
                b.switch_to_block(after);
                b.seal_block(after);
                taken_out = b.block_params(after)[0];
            }
            if let (Some(w), Some(k)) = (warp_op, warp_at) {
                let r = highest_reg(w);
                if r > MAX_REG {
                    return Err(format!("register {r} is out of reach").into());
                }
                top = top.max(r);
                // What is known where a shuffle starts (nothing else needs it).
                let f = matches!(w.op, Op::Shfl { .. }).then(|| facts(k)).flatten();
                let known = |r| f.as_ref()?.value(r);
                let (simd, live_after) = (vectors, |r| live(k, r));
                if shuffle(&mut b, (ptr, simd), regs, mask, w, &known, &live_after) {
                    continue;
                }
                let f = b.ins().iconst(ptr, warp_step as *const () as usize as i64);
                let i = b.ins().iconst(ptr, w as *const Inst as i64);
                let m = b.ins().uextend(I64, mask);
                b.ins().call_indirect(warp, f, &[loads, i, regs, m]);
            }
        }

        if let Some((done, s)) = chained {
            b.ins().jump(done, &[taken_out.into()]);
            b.switch_to_block(done);
            b.seal_block(done);
            taken_out = b.block_params(done)[0];
            sites = sites.max(s);
        }
        // The whole warp goes on to the run where its branch sends every lane, when the
        // region holds it; else the code returns, saying where the lanes stopped.
        let full = b.ins().icmp_imm(IntCC::Equal, mask, -1);
        for (next, all) in [(sub.fall, 0), (sub.jump, -1)] {
            let Some(next) = next else { continue };
            let same = b.ins().icmp_imm(IntCC::Equal, taken_out, all);
            let go = b.ins().band(full, same);
            let stay = b.create_block();
            b.ins().brif(go, heads[next], &[], stay, &[]);
            b.switch_to_block(stay);
            b.seal_block(stay);
        }
        let at = b.ins().iconst(I32, index as i64);
        let exit = offset_of!(LoadCtx, exit) as i32;
        b.ins().store(MemFlags::trusted(), at, loads, exit);
        b.ins().return_(&[taken_out]);
    }
    b.seal_all_blocks();
    b.finalize();

    let id = module
        .declare_anonymous_function(&ctx.func.signature)
        .map_err(|e| e.to_string())?;
    module.define_function(id, &mut ctx).map_err(|e| match e {
        ModuleError::Compilation(cranelift_codegen::CodegenError::Verifier(v)) => {
            CodegenError::Verifier(v.to_string())
        }
        e => CodegenError::Other(e.to_string()),
    })?;
    let len = ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
    // Where each PTX line's machine code is, for profiles.
    let lines: Vec<String> = if log::log_enabled!(log::Level::Trace) {
        ctx.compiled_code().map_or(Vec::new(), |c| {
            c.buffer
                .get_srclocs_sorted()
                .iter()
                .filter(|l| !l.loc.is_default())
                .map(|l| format!("{:x}-{:x}:{}", l.start, l.end, l.loc.bits()))
                .collect()
        })
    } else {
        Vec::new()
    };
    module.clear_context(&mut ctx);
    module.finalize_definitions().map_err(|e| e.to_string())?;
    let p = module.get_finalized_function(id);
    // Which PTX instructions each function holds, for profiles: Cranelift's own map for
    // `perf` (`/tmp/perf-PID.map`, written where `PERF_BUILDID_DIR` is set, as `perf record`
    // sets it) names its functions by number only.
    if log::log_enabled!(log::Level::Debug) {
        let runs: Vec<String> = subs
            .iter()
            .map(|s| format!("{}-{}", s.start, s.end))
            .collect();
        let kind = if vectors { "vector" } else { "lanes" };
        log::debug!("{kind} region {} at {p:?}, {len} bytes", runs.join(","));
        log::trace!("lines of the region at {p:?}: {}", lines.join(" "));
    }
    // SAFETY: `p` is the entry of the function just defined with the signature
    // (pointer, i32) -> i32 in the host's default calling convention, which is `Code`'s.
    let code = unsafe { std::mem::transmute::<*const u8, Code>(p) };
    Ok(Compiled {
        code,
        slots: (top as usize + 1) * 32,
        params: param_bytes,
        vector_stretches,
        whole_warps: !passing.is_empty(),
    })
}

/// The one-element global and shared accesses among a run's `insts` whose lanes' addresses
/// are most likely one after the other (4 or 8 bytes, their base register's stride,
/// [`Facts::stride`], the access's size), every other 4 bytes (loads of 4 bytes, stride
/// 8) or at one place (loads, their base's stride 0), by the addresses of their
/// instructions, with that stride: the vector code tests these for a coalesced access or
/// one for the four lanes.
fn coalesced(insts: &[Inst], facts: &dyn Fn(usize) -> Option<Facts>) -> HashMap<usize, u64> {
    let mut out = HashMap::default();
    for (i, inst) in insts.iter().enumerate() {
        let (space, ty, n, addr, load) = match &inst.op {
            Op::Ld {
                space, ty, n, addr, ..
            } => (space, ty, n, addr, true),
            Op::St {
                space, ty, n, addr, ..
            } => (space, ty, n, addr, false),
            _ => continue,
        };
        let Some(base) = addr.base.filter(|_| addr.global.is_none()) else {
            continue;
        };
        if *n != 1 || !matches!(space, MemSpace::Global | MemSpace::Shared) {
            continue;
        }
        let size = u64::from(ty.size());
        match facts(i).and_then(|f| f.stride(base)) {
            Some(k) if k == size && matches!(size, 4 | 8) => {
                out.insert(inst as *const Inst as usize, k);
            }
            // 8: also the first of a span of 8 bytes a lane (`vector::spans`).
            Some(k @ (0 | 8)) if load && (k == 0 || size <= 4) => {
                out.insert(inst as *const Inst as usize, k);
            }
            _ => {}
        }
    }
    out
}

/// The stretches of per-lane instructions of a run, each with the warp-wide instruction
/// that follows it, if any. Each lane runs a stretch on its own, lane after lane, so a
/// stretch ends before a memory access whose order against another lane's access in the
/// same stretch could matter: one that may see or overwrite a store of the stretch to the
/// same state space, or a store after a load. So within a stretch, a state space has either
/// loads only, or a single store, and the lanes' accesses happen in the order the
/// interpreter gives them (the lanes of one instruction in order, one instruction after
/// the other). Global and shared memory never overlap.
fn segments(insts: &[Inst]) -> Vec<(std::ops::Range<usize>, Option<usize>)> {
    let mut out = Vec::new();
    let mut start = 0;
    // Per state space (global, shared): loaded, stored.
    let mut seen = [[false; 2]; 2];
    for (k, i) in insts.iter().enumerate() {
        // A `nop` (a branch `Jit`'s `if_convert` took out, say) is a stretch's no-op.
        if vgpu_ptx::exec::is_warp_op(&i.op) && !matches!(i.op, Op::Nop) {
            out.push((start..k, Some(k)));
            start = k + 1;
            seen = [[false; 2]; 2];
            continue;
        }
        if let Some((space, store)) = crate::memory_access(&i.op) {
            // A generic load may read either space.
            let spaces: &[usize] = match space {
                MemSpace::Generic => &[0, 1],
                MemSpace::Shared => &[1],
                _ => &[0],
            };
            let clash = spaces.iter().any(|&s| {
                let s = seen[s];
                if store {
                    s[0] || s[1]
                } else {
                    s[1]
                }
            });
            if clash {
                out.push((start..k, None));
                start = k;
                seen = [[false; 2]; 2];
            }
            for &s in spaces {
                seen[s][usize::from(store)] = true;
            }
        }
    }
    if start < insts.len() {
        out.push((start..insts.len(), None));
    }
    out
}

/// The registers a stretch's instructions `lane_part` read that hold no f32 subnormal
/// when it starts, and those that hold the same value in every lane then (in a loop, only
/// those it does not write: a next pass would read what it wrote), from what is known
/// where it starts.
fn stretch_in(
    lane_part: &[Inst],
    known: Option<Facts>,
    looping: bool,
) -> (HashSet<Reg>, HashSet<Reg>, HashSet<Reg>) {
    let (mut normal_in, mut same_in) = (HashSet::default(), HashSet::default());
    let mut narrow_in = HashSet::default();
    let Some(f) = known else {
        return (normal_in, same_in, narrow_in);
    };
    let mut written = HashSet::default();
    for inst in lane_part {
        inst.clone().visit_regs(|r, def| {
            if def {
                written.insert(*r);
            }
        });
    }
    for inst in lane_part {
        inst.clone().visit_regs(|r, def| {
            if !def && f.normal(*r) {
                normal_in.insert(*r);
            }
            if !def && f.uniform(*r) && !(looping && written.contains(r)) {
                same_in.insert(*r);
            }
            if !def && f.narrow(*r) {
                narrow_in.insert(*r);
            }
        });
    }
    (normal_in, same_in, narrow_in)
}

/// Where in [`Specials`] the special register `sp` is, when it is one of those the same in
/// every lane of the warp (`%ntid`, `%ctaid`, `%nctaid`, `%warpid`, `%nwarpid`,
/// `%dynamic_smem_size`), a `u32`.
pub(crate) fn warp_special(sp: Special) -> Option<i32> {
    let field = |f: usize, d: u8| (f + 4 * usize::from(d)) as i32;
    Some(match sp {
        Special::Ntid(d) => field(offset_of!(Specials, ntid), d),
        Special::Ctaid(d) => field(offset_of!(Specials, ctaid), d),
        Special::Nctaid(d) => field(offset_of!(Specials, nctaid), d),
        Special::WarpId => offset_of!(Specials, warpid) as i32,
        Special::NWarpId => offset_of!(Specials, nwarpid) as i32,
        Special::DynSmem => offset_of!(Specials, dynamic_smem) as i32,
        _ => return None,
    })
}

/// The address of lane `lane`'s slot of register 0 in the warp's registers at `regs`.
fn lane_slots(b: &mut FunctionBuilder<'_>, ptr: Type, regs: Value, lane: Value) -> Value {
    let off = b.ins().ishl_imm(lane, 3);
    let off = if ptr == I64 {
        off
    } else {
        b.ins().ireduce(ptr, off)
    };
    b.ins().iadd(regs, off)
}

/// Which instructions of a stretch compute the same value in every lane, so that they can be
/// computed once before the loop over the lanes: unguarded per-lane operations (loads from
/// the parameters among them, no other loads) whose operands are immediates, special
/// registers that are the same across a warp (`%ntid`, `%ctaid`, `%nctaid`, `%warpid`,
/// ...), registers such an instruction wrote earlier in the stretch, or registers of
/// `same_in` (the same in every lane when the stretch starts) not written before it in the
/// stretch. An instruction
/// qualifies only if no instruction left in the loop read or wrote its destinations
/// before it: the loop then starts from the values computed before it, which are what the
/// lanes would have computed at that point.
fn uniform(insts: &[Inst], same_in: &HashSet<Reg>) -> Vec<bool> {
    let mut same: HashMap<Reg, bool> = HashMap::default();
    let mut touched: BTreeSet<Reg> = BTreeSet::new();
    insts
        .iter()
        .map(|inst| {
            let pure = match &inst.op {
                Op::Ld { .. } => crate::param_load(&inst.op).is_some(),
                Op::Bra { .. } | Op::Nop | Op::St { .. } => false,
                op => crate::run_sources(op).is_some(),
            };
            let sources_same = crate::run_sources(&inst.op).is_some_and(|srcs| {
                srcs.iter().all(|s| match s {
                    Src::Imm(_) => true,
                    Src::Reg(r) => same.get(r).copied().unwrap_or(same_in.contains(r)),
                    Src::Special(sp) => sp.same_in_every_lane(),
                    Src::Global(..) => false,
                })
            });
            let (mut reads, mut writes) = (Vec::new(), Vec::new());
            inst.clone()
                .visit_regs(|r, def| if def { writes.push(*r) } else { reads.push(*r) });
            let hoist = pure
                && sources_same
                && inst.guard.is_none()
                && writes.iter().all(|d| !touched.contains(d));
            if hoist {
                writes.iter().for_each(|&d| {
                    same.insert(d, true);
                });
            } else {
                touched.extend(reads.iter().chain(&writes));
                writes.iter().for_each(|&d| {
                    same.insert(d, false);
                });
            }
            hoist
        })
        .collect()
}

/// The instructions of `insts` left for each lane (or four lanes) to run: those not
/// computed once before (`hoisted`, from [`uniform`]).
fn unhoisted<'c>(insts: &'c [Inst], hoisted: &[bool]) -> Vec<&'c Inst> {
    insts
        .iter()
        .zip(hoisted)
        .filter(|(_, &h)| !h)
        .map(|(i, _)| i)
        .collect()
}

/// The stretches of a run and the shuffles between them, when the whole warp can run them
/// as one vector chain (`vector::chain`): every stretch has a vector form, and every
/// warp-wide instruction is an unguarded shuffle whose lanes' sources are known, whose
/// predicate nothing reads, and whose destination is none of its sources; at least one.
fn chain_parts<'c>(
    insts: &'c [Inst],
    segs: &[(std::ops::Range<usize>, Option<usize>)],
    facts: &dyn Fn(usize) -> Option<Facts>,
    live: &dyn Fn(usize, Reg) -> bool,
) -> Option<Vec<(Vec<&'c Inst>, Option<crate::vector::KnownShuffle>)>> {
    if insts.len() > crate::vector::MAX_CHAIN {
        return None;
    }
    let mut parts = Vec::new();
    let mut shuffles = 0;
    for (range, warp_at) in segs {
        let part: Vec<&Inst> = insts[range.clone()].iter().collect();
        if !crate::vector::vectorizable(&part) {
            return None;
        }
        let shuffle = match warp_at {
            None => None,
            Some(k) => {
                let w = &insts[*k];
                let Op::Shfl {
                    mode,
                    d,
                    p,
                    a,
                    b: bs,
                    c,
                } = &w.op
                else {
                    return None;
                };
                let f = facts(*k);
                let value = |s: &Src| match *s {
                    Src::Imm(v) => Some(v),
                    Src::Reg(r) if r != SINK => f.as_ref()?.value(r),
                    _ => None,
                };
                let (bv, cv) = (value(bs)?, value(c)?);
                let a_reg = match a {
                    Src::Reg(r) => Some(*r),
                    Src::Imm(_) => None,
                    _ => return None,
                };
                let p_live = p.is_some_and(|p| p != SINK && live(*k, p));
                if w.guard.is_some() || *d == SINK || a_reg == Some(*d) || p_live {
                    return None;
                }
                let mut source = [0u8; 32];
                for (lane, s) in source.iter_mut().enumerate() {
                    *s = vgpu_ptx::exec::shuffle_source(*mode, lane, bv, cv).0 as u8;
                }
                shuffles += 1;
                Some(crate::vector::KnownShuffle {
                    d: *d,
                    a: *a,
                    source,
                })
            }
        };
        parts.push((part, shuffle));
    }
    (shuffles > 0).then_some(parts)
}

/// An unguarded `shfl.sync` compiled inline, as the interpreter's (`vgpu_ptx::exec`'s
/// `shuffle`): a loop over the lanes of `mask`, each reading its operands from the
/// registers the stretch before stored and writing its results. Only when the destinations
/// are none of the sources, so that no lane's write changes what a later lane reads; `false`
/// (and nothing built) otherwise, or for a guarded one.
fn shuffle(
    b: &mut FunctionBuilder<'_>,
    (ptr, simd): (Type, bool),
    regs: Value,
    mask: Value,
    w: &Inst,
    known: &dyn Fn(Reg) -> Option<u64>,
    live: &dyn Fn(Reg) -> bool,
) -> bool {
    let Op::Shfl {
        mode,
        d,
        p,
        a,
        b: bs,
        c,
    } = &w.op
    else {
        return false;
    };
    let reg_or_imm = |s: &Src| match *s {
        Src::Reg(r) => Some(Ok(r)),
        Src::Imm(v) => Some(Err(v)),
        _ => None,
    };
    // The lane and clamp operands as immediates where their registers are known.
    let value_of = |s: &Src| match *s {
        Src::Reg(r) if r != SINK => known(r).map_or(Some(Ok(r)), |v| Some(Err(v))),
        _ => reg_or_imm(s),
    };
    let (Some(a), Some(bs), Some(c)) = (reg_or_imm(a), value_of(bs), value_of(c)) else {
        return false;
    };
    let sources: Vec<Reg> = [a, bs, c].into_iter().filter_map(Result::ok).collect();
    // A predicate nothing reads after the shuffle is not written (a reduction's never are).
    let p = p.filter(|&p| p != SINK && live(p));
    let clash = |r: Reg| sources.contains(&r) || r == SINK;
    if w.guard.is_some() || clash(*d) || p.is_some_and(|p| clash(p) || p == *d) {
        return false;
    }
    let f = MemFlags::trusted();
    let head = b.create_block();
    let body = b.create_block();
    let after = b.create_block();
    b.append_block_param(head, I32);
    b.append_block_param(body, I32);
    if let (Err(bv), Err(cv)) = (bs, c) {
        // Lane and clamp operands known: when the whole warp runs, each lane's source lane
        // is known too, and the shuffle is a move per lane.
        let whole = b.create_block();
        let all = b.ins().icmp_imm(IntCC::Equal, mask, -1);
        b.ins().brif(all, whole, &[], head, &[mask.into()]);
        b.switch_to_block(whole);
        b.seal_block(whole);
        let source = |lane| vgpu_ptx::exec::shuffle_source(*mode, lane, bv, cv);
        let row = |r: Reg, lane: usize| (r as usize * 256 + lane * 8) as i32;
        for pair in 0..16usize {
            let (l0, l1) = (2 * pair, 2 * pair + 1);
            let ((j0, ok0), (j1, ok1)) = (source(l0), source(l1));
            // Two lanes whose sources are neighbours, in order (as most of a butterfly's
            // and every whole-warp `up` or `down`'s are), move in one 16-byte access.
            let two = simd && j1 == j0 + 1;
            for (lane, j) in [(l0, j0), (l1, j1)] {
                if two && lane == l1 {
                    continue;
                }
                let ty = if two { I64X2 } else { I64 };
                let v = match a {
                    Ok(r) => b.ins().load(ty, f, regs, row(r, j)),
                    Err(v) if two => {
                        let v = b.ins().iconst(I64, v as i64);
                        b.ins().splat(I64X2, v)
                    }
                    Err(v) => b.ins().iconst(I64, v as i64),
                };
                b.ins().store(f, v, regs, row(*d, lane));
            }
            if let Some(p) = p {
                for (lane, ok) in [(l0, ok0), (l1, ok1)] {
                    let ok = b.ins().iconst(I64, i64::from(ok));
                    b.ins().store(f, ok, regs, row(p, lane));
                }
            }
        }
        b.ins().jump(after, &[]);
    } else {
        b.ins().jump(head, &[mask.into()]);
    }
    b.switch_to_block(head);
    let m = b.block_params(head)[0];
    b.ins().brif(m, body, &[m.into()], after, &[]);
    b.switch_to_block(body);
    b.seal_block(body);
    let m = b.block_params(body)[0];
    let lane32 = b.ins().ctz(m);
    let below = b.ins().iadd_imm(m, -1);
    let rest = b.ins().band(m, below);
    let lane = b.ins().uextend(I64, lane32);
    let slot = |b: &mut FunctionBuilder<'_>, l: Value| {
        let off = b.ins().ishl_imm(l, 3);
        let off = if ptr == I64 {
            off
        } else {
            b.ins().ireduce(ptr, off)
        };
        b.ins().iadd(regs, off)
    };
    let mine = slot(b, lane);
    let value = |b: &mut FunctionBuilder<'_>, s: Result<Reg, u64>| match s {
        Ok(r) => b.ins().load(I64, f, mine, (r * 256) as i32),
        Err(v) => b.ins().iconst(I64, v as i64),
    };
    let bv = value(b, bs);
    let cv = value(b, c);
    let bval = b.ins().band_imm(bv, 0x1f);
    let cval = b.ins().band_imm(cv, 0x1f);
    let seg = b.ins().ushr_imm(cv, 8);
    let seg = b.ins().band_imm(seg, 0x1f);
    let min_lane = b.ins().band(lane, seg);
    let open = b.ins().band_not(cval, seg);
    let max_lane = b.ins().bor(min_lane, open);
    let (j, ok) = match mode {
        ShflMode::Up => {
            let j = b.ins().isub(lane, bval);
            (
                j,
                b.ins().icmp(IntCC::SignedGreaterThanOrEqual, j, max_lane),
            )
        }
        ShflMode::Down => {
            let j = b.ins().iadd(lane, bval);
            (j, b.ins().icmp(IntCC::SignedLessThanOrEqual, j, max_lane))
        }
        ShflMode::Bfly => {
            let j = b.ins().bxor(lane, bval);
            (j, b.ins().icmp(IntCC::SignedLessThanOrEqual, j, max_lane))
        }
        ShflMode::Idx => {
            let free = b.ins().band_not(bval, seg);
            let j = b.ins().bor(min_lane, free);
            (j, b.ins().icmp(IntCC::SignedLessThanOrEqual, j, max_lane))
        }
    };
    let j = b.ins().band_imm(j, 0x1f);
    let j = b.ins().select(ok, j, lane);
    // A source lane that does not execute the shuffle gives the lane its own value.
    let m64 = b.ins().uextend(I64, mask);
    let bit = b.ins().ushr(m64, j);
    let bit = b.ins().band_imm(bit, 1);
    let j = b.ins().select(bit, j, lane);
    let v = match a {
        Ok(r) => {
            let theirs = slot(b, j);
            b.ins().load(I64, f, theirs, (r * 256) as i32)
        }
        Err(v) => b.ins().iconst(I64, v as i64),
    };
    b.ins().store(f, v, mine, (*d * 256) as i32);
    if let Some(p) = p {
        let ok = b.ins().uextend(I64, ok);
        b.ins().store(f, ok, mine, (p * 256) as i32);
    }
    b.ins().jump(head, &[rest.into()]);
    b.seal_block(head);
    b.switch_to_block(after);
    b.seal_block(after);
    true
}

helpers! {
/// A warp-wide instruction between stretches of per-lane code: the interpreter's own
/// (`vgpu_ptx::exec::warp_op`). Should it refuse (it cannot: the instruction was checked when
/// compiled, and the registers before the call), `ctx` records it.
fn warp_step(ctx: *mut LoadCtx, inst: *const Inst, regs: *mut u64, mask: u64) {
    // SAFETY: compiled code passes the `LoadCtx` of the call (see `direct::find`), a
    // pointer into the `code` of the `Jit` that owns it (see `lane_value`), and the
    // registers `Run::run` lent to the call, `regs_len` of them, which compiled code does
    // not touch while this runs.
    let (ctx, inst, regs) = unsafe {
        let ctx = &mut *ctx;
        let regs = std::slice::from_raw_parts_mut(regs, ctx.regs_len);
        (ctx, &*inst, regs)
    };
    if !vgpu_ptx::exec::warp_op(inst, regs, mask as u32) && ctx.fault == 0 {
        (ctx.fault, ctx.fault_line) = (3, u64::from(inst.line));
    }
}
}

/// `div` (`quotient`) or `rem` of `x` by `y`, both of 32 bits (I32) or 64 (I64), as the
/// interpreter's: dividing by zero gives all ones (rem: the dividend), and the one signed
/// 64-bit division that overflows, the least value by -1, wraps (the least value, rem 0:
/// the dividend divided by 1). (A 32-bit signed division is made in 64 bits, where it
/// cannot overflow.)
pub(crate) fn divide(
    b: &mut FunctionBuilder<'_>,
    quotient: bool,
    signed: bool,
    x: Value,
    y: Value,
) -> Value {
    let t = b.func.dfg.value_type(x);
    let zero = b.ins().icmp_imm(IntCC::Equal, y, 0);
    let one = b.ins().iconst(t, 1);
    // Divided by 1 instead: by zero, and the least value by -1 in 64 bits.
    let by_one = if signed && t == I64 {
        let least = b.ins().icmp_imm(IntCC::Equal, x, i64::MIN);
        let minus_one = b.ins().icmp_imm(IntCC::Equal, y, -1);
        let overflow = b.ins().band(least, minus_one);
        b.ins().bor(zero, overflow)
    } else {
        zero
    };
    let safe = b.ins().select(by_one, one, y);
    let q = match (signed, t == I64, quotient) {
        (true, true, true) => b.ins().sdiv(x, safe),
        (true, true, false) => b.ins().srem(x, safe),
        (true, false, _) => {
            let (xs, ys) = (b.ins().sextend(I64, x), b.ins().sextend(I64, safe));
            let q = if quotient {
                b.ins().sdiv(xs, ys)
            } else {
                b.ins().srem(xs, ys)
            };
            b.ins().ireduce(I32, q)
        }
        (false, _, true) => b.ins().udiv(x, safe),
        (false, _, false) => b.ins().urem(x, safe),
    };
    let by_zero = if quotient { b.ins().iconst(t, -1) } else { x };
    b.ins().select(zero, by_zero, q)
}

/// `shl` (`left`) or `shr` of `x` by `y`, both of 32 bits (I32) or 64 (I64), as the
/// interpreter's: the amount is the low 32 bits of `y`; past the width, 0 (or the sign,
/// for a `signed` `shr`).
pub(crate) fn shift(
    b: &mut FunctionBuilder<'_>,
    left: bool,
    signed: bool,
    x: Value,
    y: Value,
) -> Value {
    let t = b.func.dfg.value_type(x);
    let w = t.bits();
    let n = if w == 32 { y } else { b.ins().ireduce(I32, y) };
    if !left && signed {
        let cap = b.ins().iconst(I32, i64::from(w - 1));
        let n = b.ins().umin(n, cap);
        return b.ins().sshr(x, n);
    }
    let v = if left {
        b.ins().ishl(x, n)
    } else {
        b.ins().ushr(x, n)
    };
    let past = b
        .ins()
        .icmp_imm(IntCC::UnsignedGreaterThanOrEqual, n, i64::from(w));
    let zero = b.ins().iconst(t, 0);
    b.ins().select(past, zero, v)
}

/// The f32 bits of every f16, by the interpreter's own `cvt.f32.f16`
/// ([`vgpu_ptx::exec::f16_table`]): compiled code converts f16 operands with one load.
pub(crate) fn f16_table() -> &'static [u32] {
    vgpu_ptx::exec::f16_table()
}

/// The host math library's function for an f32 `ex2`, `lg2`, `sin`, `cos` or `tanh` (see
/// [`math`]), which compiled code calls with the value in f64.
pub(crate) fn math_function(op: UnOp) -> *const () {
    match op {
        UnOp::Ex2 => math::ex2 as *const (),
        UnOp::Lg2 => math::lg2 as *const (),
        UnOp::Sin => math::sin as *const (),
        UnOp::Cos => math::cos as *const (),
        _ => math::tanh as *const (),
    }
}

/// The functions that the interpreter's f32 `ex2` (`vgpu_ptx::ex2_f32`), `lg2`, `sin`, `cos`
/// and `tanh` use (those of the host math library but `ex2`; `vgpu_ptx::exec::lane_value` of
/// a `Un`), for compiled code to call without going through the interpreter's dispatch: the
/// same functions, so the same bits.
mod math {
    helpers! {
    pub(super) fn ex2(x: f64) -> f64 {
        // Exact: the argument is an f32 widened.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the processor has the instructions `ex2_fma` is compiled for (just
            // checked).
            return f64::from(unsafe { ex2_fma(x as f32) });
        }
        f64::from(vgpu_ptx::ex2_f32(x as f32))
    }
    pub(super) fn lg2(x: f64) -> f64 {
        x.log2()
    }
    pub(super) fn sin(x: f64) -> f64 {
        x.sin()
    }
    pub(super) fn cos(x: f64) -> f64 {
        x.cos()
    }
    pub(super) fn tanh(x: f64) -> f64 {
        x.tanh()
    }
    }

    /// `vgpu_ptx::ex2_f32` with its fused multiply-adds made by the processor's
    /// instruction: the host's build of it, for any x86-64, calls a function for each (the
    /// same correctly rounded result, some fifty instructions each).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma")]
    fn ex2_fma(x: f32) -> f32 {
        vgpu_ptx::ex2_f32(x)
    }

    #[cfg(test)]
    mod tests {
        /// Compiled code's `ex2` gives the interpreter's bits: over the f32 from -160 to
        /// 140 (past both ends of the series' range) a step of 2^-12 (below 1) apart, and
        /// the infinities, zeros and a NaN.
        #[test]
        fn ex2_gives_the_interpreters_bits() {
            let specials = [f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, f32::NAN];
            let steps = (-160 * 4096..140 * 4096).map(|i| i as f32 / 4096.0);
            for x in steps.chain(specials) {
                let got = super::ex2(f64::from(x)) as f32;
                let want = vgpu_ptx::ex2_f32(x);
                assert_eq!(got.to_bits(), want.to_bits(), "ex2 {x}");
            }
        }
    }
}

/// [`lane_value`], for the vector code's calls.
pub(crate) fn lane_value_fn() -> *const () {
    lane_value as *const ()
}

helpers! {
/// The operations compiled code does not do inline: the interpreter's arithmetic.
fn lane_value(op: *const Op, a: u64, b: u64, c: u64, d: u64) -> u64 {
    // SAFETY: compiled code passes a pointer into the `code` of the `Jit` that owns it,
    // which outlives the code and is never changed.
    let op = unsafe { &*op };
    vgpu_ptx::exec::lane_value(op, [a, b, c, d])
}
}

/// A load or store as compiled: its state space, base register value, constant offset,
/// guard (a 64-bit 0 or 1), element size, PTX line and direction.
struct Access {
    shared: bool,
    generic: bool,
    base: Value,
    offset: i64,
    on: Value,
    size: u32,
    line: u32,
    store: bool,
}

/// The checked accesses to global and shared memory, built for one lane (the lane code)
/// or one lane of a group (the vector code).
pub(crate) struct Checked<'a, 'f> {
    pub(crate) b: &'a mut FunctionBuilder<'f>,
    pub(crate) ptr: Type,
    /// The `direct::LoadCtx` of the call.
    pub(crate) loads: Value,
    /// The signature of the `direct` lookups.
    pub(crate) find: SigRef,
    /// Whether the accesses are generic: a lookup then finds an address in the shared
    /// window in the block's shared memory.
    pub(crate) generic: bool,
}

impl Checked<'_, '_> {
    /// The host address of a load of `size` bytes at device address `at`: inline when the
    /// load site's last allocation holds it (and it is aligned), else by `direct::find`.
    /// Each site's slot holds a limit for its own access size, so a slot serves one site:
    /// loads past the first [`SITES`] always ask `direct::find`.
    /// A store's site also checks its guard `on` inline: a store whose guard is false goes
    /// to `direct::find_store`, which points it at the sink.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn find(
        &mut self,
        site: u32,
        at: Value,
        size: u32,
        line: u32,
        on: Value,
        store: bool,
    ) -> Value {
        self.find_in_row(&mut Vec::new(), site, at, size, line, on, store)
    }

    /// The call of `direct::find` (or, for a `store`, `direct::find_store`) for an access
    /// at site `site` (`None`: a site with no slot).
    fn lookup(
        &mut self,
        site: Option<u32>,
        at: Value,
        size: u32,
        line: u32,
        on: Value,
        store: bool,
    ) -> Value {
        let func = self.helper_fn(store);
        let size_v = self.b.ins().iconst(I64, i64::from(size));
        let where_v = self.where_v(at, line, site);
        let call =
            self.b
                .ins()
                .call_indirect(self.find, func, &[self.loads, at, size_v, where_v, on]);
        self.b.inst_results(call)[0]
    }

    /// What a lookup is told of the access: its PTX line, its site's slot (0xFF: none), and
    /// in bit 63 whether it is generic.
    /// The bits from 40 up are a tag of the call's own (the number of its address value),
    /// which the lookup ignores: equal constants would be shared by the calls, and the code
    /// generator then made them on the hot path, before the first, and kept them on the
    /// stack; each its own, they are made in the call's cold block.
    fn where_v(&mut self, at: Value, line: u32, site: Option<u32>) -> Value {
        let slot = site.map_or(0xFF, i64::from);
        let tag = i64::from(at.as_u32() & 0x7F_FFFF);
        let generic = i64::from(self.generic) << 63;
        self.b
            .ins()
            .iconst(I64, generic | (tag << 40) | (i64::from(line) << 8) | slot)
    }

    /// Whether an access of `size` bytes at `at` (a store's only where its guard `on` is
    /// true) falls inside the allocation `[base, lim, host]` of a site's slot, and its host
    /// address if it does.
    fn inline_check(
        &mut self,
        at: Value,
        [base, lim, host]: [Value; 3],
        size: u32,
        on: Value,
        store: bool,
    ) -> (Value, Value) {
        let off = self.b.ins().isub(at, base);
        let mut hit = self.aligned_below(off, lim, size);
        if store {
            let on = self.b.ins().icmp_imm(IntCC::NotEqual, on, 0);
            hit = self.b.ins().band(hit, on);
        }
        let off = self.address(off);
        (hit, self.b.ins().iadd(host, off))
    }

    /// Whether, from each address of `ats`, the `count` accesses of `size` bytes one
    /// after the other are all inside the allocation of site `site`'s slot and aligned
    /// (each as [`Checked::find`] checks one; the slot is left as it is), in one check per
    /// address, and each address's host address; `None` where the site has no slot.
    pub(crate) fn span(
        &mut self,
        site: u32,
        ats: &[Value],
        size: u32,
        count: u64,
    ) -> Option<(Value, Vec<Value>)> {
        if !(size.is_power_of_two() && size <= 8) || site as usize >= SITES {
            return None;
        }
        let more = i64::try_from(count.checked_sub(1)?).ok()?;
        let [base, lim, host] = self.site(site);
        let lim = self.first_of(lim, more);
        let zero = self.b.ins().iconst(I64, 0);
        let mut all = None;
        let mut hosts = Vec::new();
        for &at in ats {
            let (hit, p) = self.inline_check(at, [base, lim, host], size, zero, false);
            all = Some(match all {
                None => hit,
                Some(a) => self.b.ins().band(a, hit),
            });
            hosts.push(p);
        }
        Some((all?, hosts))
    }

    /// [`Checked::find`] for one of several accesses in a row: `slots` holds the sites'
    /// allocations as last loaded (`(site, [base, lim, host])`), so that a site's slot is
    /// loaded once for them all, and again only after a lookup (which may change it), in a
    /// block laid out apart.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn find_in_row(
        &mut self,
        slots: &mut Vec<(u32, [Value; 3])>,
        site: u32,
        at: Value,
        size: u32,
        line: u32,
        on: Value,
        store: bool,
    ) -> Value {
        // A slot's limit is counted in accesses of the site's size, a power of two.
        if !(size.is_power_of_two() && size <= 8) || site as usize >= SITES {
            return self.lookup(None, at, size, line, on, store);
        }
        let k = match slots.iter().position(|s| s.0 == site) {
            Some(k) => k,
            None => {
                let v = self.site(site);
                slots.push((site, v));
                slots.len() - 1
            }
        };
        let (hit, fast) = self.inline_check(at, slots[k].1, size, on, store);
        let [base, lim, host] = slots[k].1;
        let slow = self.b.create_block();
        let join = self.b.create_block();
        self.b.append_block_param(join, self.ptr);
        for t in [I64, I64, self.ptr] {
            self.b.append_block_param(join, t);
        }
        let args = [fast, base, lim, host].map(BlockArg::from);
        self.b.ins().brif(hit, join, &args, slow, &[]);
        self.b.switch_to_block(slow);
        self.b.seal_block(slow);
        self.b.set_cold_block(slow);
        let p = self.lookup(Some(site), at, size, line, on, store);
        let [base, lim, host] = self.site(site);
        let args = [p, base, lim, host].map(BlockArg::from);
        self.b.ins().jump(join, &args);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        let params = self.b.block_params(join).to_vec();
        slots[k].1 = [params[1], params[2], params[3]];
        params[0]
    }

    /// The allocation in the slot of load site `site`: its base, limit and host address.
    fn site(&mut self, site: u32) -> [Value; 3] {
        let slot = (std::mem::size_of::<Site>() * site as usize) as i32;
        let f = MemFlags::trusted();
        let at = |field: usize| slot + field as i32;
        [
            self.b
                .ins()
                .load(I64, f, self.loads, at(offset_of!(Site, base))),
            self.b
                .ins()
                .load(I64, f, self.loads, at(offset_of!(Site, lim))),
            self.b
                .ins()
                .load(self.ptr, f, self.loads, at(offset_of!(Site, host))),
        ]
    }

    /// The limit for the first of a run of accesses, `more` of them after it, where `lim`
    /// is that of one: the first is one of the first `lim - more` (none when fewer fit).
    fn first_of(&mut self, lim: Value, more: i64) -> Value {
        let short = self.b.ins().icmp_imm(IntCC::UnsignedLessThan, lim, more);
        let rest = self.b.ins().iadd_imm(lim, -more);
        let zero = self.b.ins().iconst(I64, 0);
        self.b.ins().select(short, zero, rest)
    }

    /// Whether the `count` accesses of `size` bytes (a power of two, at most 8) one after
    /// the other from byte `at` of the block's shared memory are all inside it and aligned
    /// (each as [`Checked::shared_in_row`] checks one), in one check, and the host address
    /// of the first.
    pub(crate) fn shared_span(&mut self, at: Value, size: u32, count: u64) -> (Value, Value) {
        let f = MemFlags::trusted();
        let host = self
            .b
            .ins()
            .load(self.ptr, f, self.loads, offset_of!(LoadCtx, shared) as i32);
        let log = size.trailing_zeros();
        let lim = if count == 4 && size.is_power_of_two() && log < 4 {
            // Worked out for the call (`LoadCtx::shared_fours`).
            let fours = offset_of!(LoadCtx, shared_fours) + 8 * log as usize;
            self.b.ins().load(I64, f, self.loads, fours as i32)
        } else {
            let len = self
                .b
                .ins()
                .load(I64, f, self.loads, offset_of!(LoadCtx, shared_len) as i32);
            let lim = self.b.ins().ushr_imm(len, i64::from(log));
            self.first_of(lim, count.saturating_sub(1) as i64)
        };
        let hit = self.aligned_below(at, lim, size);
        let off = self.address(at);
        (hit, self.b.ins().iadd(host, off))
    }

    /// [`Checked::shared`] for one of several accesses in a row: `row` holds the block's
    /// shared memory (its host address, and its length in accesses of `size` bytes), loaded
    /// once for them all; the lookup's block is laid out apart.
    pub(crate) fn shared_in_row(
        &mut self,
        row: &mut Option<(Value, Value)>,
        at: Value,
        size: u32,
        line: u32,
        on: Value,
        store: bool,
    ) -> Value {
        let (host, lim) = match *row {
            Some(r) => r,
            None => {
                let f = MemFlags::trusted();
                let len =
                    self.b
                        .ins()
                        .load(I64, f, self.loads, offset_of!(LoadCtx, shared_len) as i32);
                let host =
                    self.b
                        .ins()
                        .load(self.ptr, f, self.loads, offset_of!(LoadCtx, shared) as i32);
                let lim = self.b.ins().ushr_imm(len, i64::from(size.trailing_zeros()));
                *row = Some((host, lim));
                (host, lim)
            }
        };
        // Aligned, and at + size <= len: the access is one of the len / size whole
        // accesses that fit.
        let mut hit = if size.is_power_of_two() && size <= 8 {
            self.aligned_below(at, lim, size)
        } else {
            self.b.ins().iconst(I8, 0)
        };
        if store {
            let on = self.b.ins().icmp_imm(IntCC::NotEqual, on, 0);
            hit = self.b.ins().band(hit, on);
        }
        let off = self.address(at);
        let fast = self.b.ins().iadd(host, off);
        let func = self.b.ins().iconst(
            self.ptr,
            crate::direct::find_shared as *const () as usize as i64,
        );
        let size_v = self.b.ins().iconst(I64, i64::from(size));
        let where_v = self.b.ins().iconst(I64, i64::from(line) << 8);
        self.slow_path(hit, fast, func, [self.loads, at, size_v, where_v, on])
    }

    /// The lookup a global load (or a `store`) calls when its inline check fails.
    fn helper_fn(&mut self, store: bool) -> Value {
        let helper = if store {
            crate::direct::find_store as *const ()
        } else {
            crate::direct::find as *const ()
        };
        self.b.ins().iconst(self.ptr, helper as usize as i64)
    }

    /// Whether `off` is a multiple of `size` (a power of two) below `lim * size`, in one
    /// comparison: rotated right by log2(`size`), an offset that is not a multiple has
    /// its low bits at the top, above any limit.
    fn aligned_below(&mut self, off: Value, lim: Value, size: u32) -> Value {
        let k = size.trailing_zeros();
        let rot = if k == 0 {
            off
        } else {
            self.b.ins().rotr_imm(off, i64::from(k))
        };
        self.b.ins().icmp(IntCC::UnsignedLessThan, rot, lim)
    }

    /// `fast` where `hit`, else the result of calling `func` (a `direct` lookup) on `args`.
    fn slow_path(&mut self, hit: Value, fast: Value, func: Value, args: [Value; 5]) -> Value {
        let slow = self.b.create_block();
        let join = self.b.create_block();
        self.b.append_block_param(join, self.ptr);
        self.b.ins().brif(hit, join, &[fast.into()], slow, &[]);
        self.b.switch_to_block(slow);
        self.b.seal_block(slow);
        self.b.set_cold_block(slow);
        let call = self.b.ins().call_indirect(self.find, func, &args);
        let p = self.b.inst_results(call)[0];
        self.b.ins().jump(join, &[p.into()]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        self.b.block_params(join)[0]
    }

    /// The host address of an access of `size` bytes at byte `at` of the block's shared
    /// memory: inline when it is inside and aligned (and, for a store, its guard `on` is
    /// true), else by `direct::find_shared`.
    pub(crate) fn shared(
        &mut self,
        at: Value,
        size: u32,
        line: u32,
        on: Value,
        store: bool,
    ) -> Value {
        self.shared_in_row(&mut None, at, size, line, on, store)
    }

    /// The `size`-byte value at `p + at`, sign- or zero-extended to 64 bits.
    pub(crate) fn load(
        &mut self,
        f: MemFlags,
        p: Value,
        at: i32,
        size: u32,
        signed: bool,
    ) -> Value {
        match (size, signed) {
            (1, true) => self.b.ins().sload8(I64, f, p, at),
            (1, false) => self.b.ins().uload8(I64, f, p, at),
            (2, true) => self.b.ins().sload16(I64, f, p, at),
            (2, false) => self.b.ins().uload16(I64, f, p, at),
            (4, true) => self.b.ins().sload32(f, p, at),
            (4, false) => self.b.ins().uload32(f, p, at),
            _ => self.b.ins().load(I64, f, p, at),
        }
    }

    /// A 64-bit offset as a pointer-sized one.
    pub(crate) fn address(&mut self, v: Value) -> Value {
        if self.ptr == I64 {
            v
        } else {
            self.b.ins().ireduce(self.ptr, v)
        }
    }
}

/// The instructions of one lane, as they are built.
struct Lane<'f> {
    b: FunctionBuilder<'f>,
    ptr: Type,
    /// The address of the lane's slot of register 0.
    base: Value,
    /// The parameter buffer.
    params: Value,
    /// The warp's [`Specials`].
    specials: Value,
    /// The `direct::LoadCtx` of the call.
    loads: Value,
    lane: Value,
    lane32: Value,
    helper: SigRef,
    /// `(f64) -> f64`, of the functions in [`math`].
    math: SigRef,
    find: SigRef,
    /// Each register's value so far.
    vals: HashMap<Reg, Value>,
    /// Register values that are f32 results with no subnormal to flush (those of `.ftz`
    /// arithmetic): a `.ftz` operand among them needs no flushing again.
    flushed: HashSet<Value>,
    /// Registers that hold no f32 subnormal when the stretch starts: their values, loaded,
    /// join `flushed`.
    normal_in: HashSet<Reg>,
    /// Registers written, to store back.
    dirty: BTreeSet<Reg>,
    /// The highest register touched.
    top: Reg,
    /// Load sites so far.
    sites: u32,
    /// The end of the parameters read.
    param_bytes: usize,
}

impl<'f> Lane<'f> {
    fn reg(&mut self, r: Reg) -> Value {
        if let Some(v) = self.vals.get(&r) {
            return *v;
        }
        self.top = self.top.max(r);
        let v = self
            .b
            .ins()
            .load(I64, MemFlags::trusted(), self.base, (r * 256) as i32);
        self.vals.insert(r, v);
        if self.normal_in.contains(&r) {
            self.flushed.insert(v);
        }
        v
    }

    fn src(&mut self, s: &Src) -> Value {
        match *s {
            Src::Reg(r) => self.reg(r),
            Src::Imm(v) => self.b.ins().iconst(I64, v as i64),
            Src::Special(Special::LaneMask(k)) => {
                let one = self.b.ins().iconst(I32, 1);
                let bit = self.b.ins().ishl(one, self.lane32);
                let lt = self.b.ins().iadd_imm(bit, -1);
                let le = self.b.ins().bor(bit, lt);
                let m = match k {
                    0 => bit,
                    1 => le,
                    2 => lt,
                    3 => self.b.ins().bnot(lt),
                    _ => self.b.ins().bnot(le),
                };
                self.b.ins().uextend(I64, m)
            }
            Src::Special(Special::LaneId) => self.lane,
            Src::Special(Special::Tid(d)) => {
                // tid[d][lane]
                let off = self.b.ins().ishl_imm(self.lane, 2);
                let off = self.address(off);
                let p = self.b.ins().iadd(self.specials, off);
                self.b.ins().uload32(
                    MemFlags::trusted(),
                    p,
                    (offset_of!(Specials, tid) + 128 * usize::from(d)) as i32,
                )
            }
            Src::Special(sp) => match warp_special(sp) {
                Some(at) => self.b.ins().uload32(MemFlags::trusted(), self.specials, at),
                // `Zero`, and the clock, which `per_lane` keeps out of runs.
                None => self.b.ins().iconst(I64, 0),
            },
            // Module variables' addresses: `per_lane` keeps them out of runs.
            Src::Global(..) => self.b.ins().iconst(I64, 0),
        }
    }

    /// The builder of checked memory accesses.
    fn checked(&mut self) -> Checked<'_, 'f> {
        Checked {
            b: &mut self.b,
            ptr: self.ptr,
            loads: self.loads,
            find: self.find,
            generic: false,
        }
    }

    fn shared(&mut self, at: Value, size: u32, line: u32, on: Value, store: bool) -> Value {
        self.checked().shared(at, size, line, on, store)
    }

    fn load(&mut self, f: MemFlags, p: Value, at: i32, size: u32, signed: bool) -> Value {
        self.checked().load(f, p, at, size, signed)
    }

    fn address(&mut self, v: Value) -> Value {
        self.checked().address(v)
    }

    /// A load or store of `size`-byte elements at `addr` in `space` (global or shared),
    /// under the guard `on`.
    fn access(
        &mut self,
        space: MemSpace,
        addr: &Addr,
        on: Option<Value>,
        size: u32,
        line: u32,
        store: bool,
    ) -> Access {
        let base = match addr.base {
            Some(r) => self.reg(r),
            None => self.b.ins().iconst(I64, 0),
        };
        let on = match on {
            Some(c) => self.b.ins().uextend(I64, c),
            None => self.b.ins().iconst(I64, 1),
        };
        Access {
            shared: space == MemSpace::Shared,
            generic: space == MemSpace::Generic,
            base,
            offset: addr.offset,
            on,
            size,
            line,
            store,
        }
    }

    /// The host address of element `e` of an access.
    fn element(&mut self, a: &Access, e: usize) -> Value {
        let off = a.offset.wrapping_add(e as i64 * i64::from(a.size));
        let at = self.b.ins().iadd_imm(a.base, off);
        if a.shared {
            self.shared(at, a.size, a.line, a.on, a.store)
        } else {
            let site = self.sites;
            self.sites += 1;
            let mut c = self.checked();
            c.generic = a.generic;
            c.find(site, at, a.size, a.line, a.on, a.store)
        }
    }

    /// Writes `v` to `d`, or keeps the old value where the guard `on` is false.
    fn set(&mut self, d: Reg, v: Value, on: Option<Value>) {
        if d == SINK {
            return;
        }
        let v = match on {
            Some(c) => {
                let old = self.reg(d);
                self.b.ins().select(c, v, old)
            }
            None => v,
        };
        self.top = self.top.max(d);
        self.vals.insert(d, v);
        self.dirty.insert(d);
    }

    /// The iterations of one lane through a run that branches back to its start: `body`,
    /// then the branch `last`, again while its guard holds, up to [`LOOP_BUDGET`] times.
    /// The registers it writes that are `live` after the branch (read in a later pass
    /// before they are written, or after the loop) are carried around it in block
    /// parameters; those it only reads are loaded once before it; the others are
    /// temporaries of one pass. The values computed before the loop over the lanes
    /// (`uniform`) are the same in every iteration. Gives whether the lane takes the branch
    /// when it leaves (true only when the budget ran out: the lane then resumes at the
    /// start).
    fn lane_loop(
        &mut self,
        body: &[&Inst],
        last: &Inst,
        uniform: &HashMap<Reg, Value>,
        live: &dyn Fn(Reg) -> bool,
    ) -> Result<Value, String> {
        let (mut read, mut written) = (BTreeSet::new(), BTreeSet::new());
        for i in body.iter().copied().chain([last]) {
            i.clone().visit_regs(|r, def| {
                if def { &mut written } else { &mut read }.insert(*r);
            });
        }
        for &r in read.difference(&written) {
            let v = self.reg(r);
            self.vals.insert(r, v);
        }
        let regs: Vec<Reg> = written.into_iter().filter(|&r| live(r)).collect();
        let entry: Vec<BlockArg> = regs.iter().map(|&r| self.reg(r).into()).collect();
        let head = self.b.create_block();
        let exit = self.b.create_block();
        for _ in &regs {
            self.b.append_block_param(head, I64);
            self.b.append_block_param(exit, I64);
        }
        self.b.append_block_param(head, I32);
        self.b.append_block_param(exit, I8);
        let zero = self.b.ins().iconst(I32, 0);
        let mut args = entry;
        args.push(zero.into());
        self.b.ins().jump(head, &args);
        self.b.switch_to_block(head);
        let params = self.b.block_params(head).to_vec();
        for (&r, &v) in regs.iter().zip(&params) {
            self.vals.insert(r, v);
        }
        for (&r, &v) in uniform {
            self.vals.insert(r, v);
        }
        let iter = params[regs.len()];
        for inst in body {
            let on = self.guard(inst);
            self.op(&inst.op, on, inst.line)?;
        }
        let cond = match self.guard(last) {
            Some(c) => c,
            None => self.b.ins().iconst(I8, 1),
        };
        let next = self.b.ins().iadd_imm(iter, 1);
        let more = self
            .b
            .ins()
            .icmp_imm(IntCC::UnsignedLessThan, next, LOOP_BUDGET);
        let again = self.b.ins().band(cond, more);
        let mut back: Vec<BlockArg> = regs.iter().map(|&r| self.reg(r).into()).collect();
        let mut out = back.clone();
        back.push(next.into());
        out.push(cond.into());
        self.b.ins().brif(again, head, &back, exit, &out);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        let params = self.b.block_params(exit).to_vec();
        for (&r, &v) in regs.iter().zip(&params) {
            self.vals.insert(r, v);
        }
        Ok(params[regs.len()])
    }

    /// The lane's pass over a straight stretch: its instructions, and its bit added to
    /// `taken` where the stretch's branch is taken.
    fn straight(&mut self, insts: &[&Inst], taken: Value) -> Result<Value, String> {
        let mut taken = taken;
        for inst in insts {
            let on = self.guard(inst);
            match &inst.op {
                Op::Bra { .. } => taken = self.take(taken, on),
                op => self.op(op, on, inst.line)?,
            }
        }
        Ok(taken)
    }

    /// `taken` with the lane's bit set, where `on` holds (always, without it).
    fn take(&mut self, taken: Value, on: Option<Value>) -> Value {
        let one = self.b.ins().iconst(I32, 1);
        let bit = self.b.ins().ishl(one, self.lane32);
        let bit = match on {
            Some(c) => {
                let none = self.b.ins().iconst(I32, 0);
                self.b.ins().select(c, bit, none)
            }
            None => bit,
        };
        self.b.ins().bor(taken, bit)
    }

    /// Stores the registers written that are `live` into the lane's slots.
    fn store_back(&mut self, live: impl Fn(Reg) -> bool) {
        for &r in self.dirty.iter().filter(|&&r| live(r)) {
            let v = self.vals[&r];
            self.b
                .ins()
                .store(MemFlags::trusted(), v, self.base, (r * 256) as i32);
        }
    }

    /// The guard of an instruction as a condition, if it has one.
    fn guard(&mut self, i: &Inst) -> Option<Value> {
        let (p, neg) = i.guard?;
        let v = self.reg(p);
        let cc = if neg { IntCC::Equal } else { IntCC::NotEqual };
        Some(self.b.ins().icmp_imm(cc, v, 0))
    }

    fn helper(&mut self, op: &Op, args: &[Value]) -> Value {
        let f = self
            .b
            .ins()
            .iconst(self.ptr, lane_value as *const () as usize as i64);
        let o = self.b.ins().iconst(self.ptr, op as *const Op as i64);
        let zero = self.b.ins().iconst(I64, 0);
        let mut all = vec![o];
        all.extend(args.iter().copied());
        all.resize(5, zero);
        let call = self.b.ins().call_indirect(self.helper, f, &all);
        self.b.inst_results(call)[0]
    }

    /// An f32 operand: the low 32 bits of `v`, a subnormal flushed to a zero of its sign
    /// under `.ftz`.
    fn f32_in(&mut self, v: Value, ftz: bool) -> Value {
        let mut x = self.lo32(v);
        if ftz && !self.flushed.contains(&v) {
            x = self.flush(x);
        }
        self.b.ins().bitcast(F32, MemFlags::new(), x)
    }

    /// An f32 rounded to an integer in direction `round` (to nearest even by default).
    fn round_f32(&mut self, f: Value, round: Round) -> Value {
        match round {
            Round::Zero => self.b.ins().trunc(f),
            Round::Down => self.b.ins().floor(f),
            Round::Up => self.b.ins().ceil(f),
            Round::Nearest | Round::Default => self.b.ins().nearest(f),
        }
    }

    /// The bits of an f32 with a subnormal flushed to a zero of its sign.
    fn flush(&mut self, x: Value) -> Value {
        let exp = self.b.ins().band_imm(x, 0x7F80_0000);
        let sub = self.b.ins().icmp_imm(IntCC::Equal, exp, 0);
        let sign = self.b.ins().band_imm(x, 0x8000_0000u32 as i32 as i64);
        self.b.ins().select(sub, sign, x)
    }

    /// An f32 arithmetic result as a register value: flushed under `.ftz`, a NaN made the
    /// canonical NaN, as the interpreter's.
    fn f32_out(&mut self, r: Value, ftz: bool) -> Value {
        let nan = self.b.ins().fcmp(FloatCC::Unordered, r, r);
        let mut bits = self.b.ins().bitcast(I32, MemFlags::new(), r);
        if ftz {
            bits = self.flush(bits);
        }
        let canonical = self.b.ins().iconst(I32, i64::from(CANONICAL_NAN_F32));
        let bits = self.b.ins().select(nan, canonical, bits);
        let v = self.b.ins().uextend(I64, bits);
        if ftz {
            self.flushed.insert(v);
        }
        v
    }

    /// `dp4a` (or `dp2a` with `two`) of 32-bit operands, wrapping as the interpreter's.
    #[allow(clippy::too_many_arguments)]
    fn dot(
        &mut self,
        x: Value,
        y: Value,
        z: Value,
        sa: bool,
        sb: bool,
        two: bool,
        hi: bool,
    ) -> Value {
        let part = |l: &mut Self, v: Value, k: u32, bits: u32, signed: bool| {
            let v = l.b.ins().ushr_imm(v, i64::from(k * bits));
            let t = if bits == 8 { I8 } else { I16 };
            let v = l.b.ins().ireduce(t, v);
            if signed {
                l.b.ins().sextend(I32, v)
            } else {
                l.b.ins().uextend(I32, v)
            }
        };
        let (x, y) = (self.lo32(x), self.lo32(y));
        let mut acc = self.lo32(z);
        if !two {
            // The four bytes of each operand widened into the lanes of a vector, multiplied
            // lane by lane and summed: exact in 32 bits, then added to `acc` wrapping.
            let bytes = |l: &mut Self, v: Value, signed: bool| {
                let v = l.b.ins().scalar_to_vector(I32X4, v);
                let little = MemFlags::new().with_endianness(Endianness::Little);
                let v = l.b.ins().bitcast(I8X16, little, v);
                let v = if signed {
                    l.b.ins().swiden_low(v)
                } else {
                    l.b.ins().uwiden_low(v)
                };
                // Each byte fits a signed 16 bits, so this widening keeps it either way.
                l.b.ins().swiden_low(v)
            };
            let (a, b) = (bytes(self, x, sa), bytes(self, y, sb));
            let p = self.b.ins().imul(a, b);
            let pairs = self.b.ins().iadd_pairwise(p, p);
            let lo = self.b.ins().extractlane(pairs, 0);
            let hi = self.b.ins().extractlane(pairs, 1);
            let sum = self.b.ins().iadd(lo, hi);
            let acc = self.b.ins().iadd(acc, sum);
            return self.b.ins().uextend(I64, acc);
        }
        for k in 0..2 {
            let a = part(self, x, k, 16, sa);
            let kb = if hi { k + 2 } else { k };
            let b = part(self, y, kb, 8, sb);
            let p = self.b.ins().imul(a, b);
            acc = self.b.ins().iadd(acc, p);
        }
        self.b.ins().uextend(I64, acc)
    }

    /// `cvt.f32.f16`: exact, by [`f16_table`].
    fn f16_to_f32(&mut self, x: Value) -> Value {
        let h = self.lo32(x);
        let (f, _) = self.f16_in(h);
        let bits = self.b.ins().bitcast(I32, MemFlags::new(), f);
        self.b.ins().uextend(I64, bits)
    }

    /// The f16 in the low 16 bits of `h` (an I32) as an f32, looked up in [`f16_table`]:
    /// exact for every f16 (a NaN as the interpreter's `cvt.f32.f16` gives it), so the
    /// second value, whether that was done here, is always true.
    fn f16_in(&mut self, h: Value) -> (Value, Value) {
        let h = self.b.ins().band_imm(h, 0xFFFF);
        let at = self.b.ins().uextend(I64, h);
        let at = self.b.ins().ishl_imm(at, 2);
        let at = self.address(at);
        let table = self
            .b
            .ins()
            .iconst(self.ptr, f16_table().as_ptr() as usize as i64);
        let p = self.b.ins().iadd(table, at);
        let bits = self
            .b
            .ins()
            .load(I32, MemFlags::trusted().with_readonly(), p, 0);
        let ok = self.b.ins().iconst(I8, 1);
        (self.b.ins().bitcast(F32, MemFlags::new(), bits), ok)
    }

    /// An f32 rounded to the nearest f16 (ties to even), in the low 16 bits of an I32, and
    /// whether that was done here: true when the result is a normal f16, a zero or an
    /// overflow of a normal f16 to infinity; false for subnormal results, infinities, NaNs.
    fn f16_out(&mut self, f: Value) -> (Value, Value) {
        let bits = self.b.ins().bitcast(I32, MemFlags::new(), f);
        let sign = self.b.ins().ushr_imm(bits, 16);
        let sign = self.b.ins().band_imm(sign, 0x8000);
        let abs = self.b.ins().band_imm(bits, 0x7FFF_FFFF);
        let exp = self.b.ins().ushr_imm(abs, 23);
        let mant = self.b.ins().band_imm(abs, 0x7F_FFFF);
        let h = self.b.ins().iadd_imm(exp, -112);
        let h = self.b.ins().ishl_imm(h, 10);
        let top = self.b.ins().ushr_imm(mant, 13);
        let h = self.b.ins().iadd(h, top);
        let rem = self.b.ins().band_imm(mant, 0x1FFF);
        let above = self
            .b
            .ins()
            .icmp_imm(IntCC::UnsignedGreaterThan, rem, 0x1000);
        let tie = self.b.ins().icmp_imm(IntCC::Equal, rem, 0x1000);
        let odd = self.b.ins().band_imm(h, 1);
        let odd = self.b.ins().icmp_imm(IntCC::NotEqual, odd, 0);
        let tie_up = self.b.ins().band(tie, odd);
        let up = self.b.ins().bor(above, tie_up);
        let up = self.b.ins().uextend(I32, up);
        // A carry out of the mantissa moves into the exponent (to infinity from the top).
        let h = self.b.ins().iadd(h, up);
        let zero = self.b.ins().icmp_imm(IntCC::Equal, abs, 0);
        let none = self.b.ins().iconst(I32, 0);
        let h = self.b.ins().select(zero, none, h);
        let r = self.b.ins().bor(sign, h);
        let from = self
            .b
            .ins()
            .icmp_imm(IntCC::UnsignedGreaterThanOrEqual, exp, 113);
        let to = self
            .b
            .ins()
            .icmp_imm(IntCC::UnsignedLessThanOrEqual, exp, 142);
        let normal = self.b.ins().band(from, to);
        (r, self.b.ins().bor(normal, zero))
    }

    /// `fast` where `ok`, else what the interpreter's arithmetic gives for `op` on `args`
    /// (called only then).
    fn fast_or_helper(&mut self, fast: Value, ok: Value, op: &Op, args: &[Value]) -> Value {
        let slow = self.b.create_block();
        let join = self.b.create_block();
        self.b.append_block_param(join, I64);
        self.b.ins().brif(ok, join, &[fast.into()], slow, &[]);
        self.b.switch_to_block(slow);
        self.b.seal_block(slow);
        let v = self.helper(op, args);
        self.b.ins().jump(join, &[v.into()]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        self.b.block_params(join)[0]
    }

    /// `add`, `sub` or `mul` of `.f16` or `.f16x2` (no `.ftz`, `.sat`): each half in f32,
    /// rounded once to f16, inline when every result is a normal f16 or a zero; the
    /// interpreter's arithmetic for the rest. `None` for other half operations.
    fn half(&mut self, op: &Op, x: Value, y: Value, z: Value) -> Option<Value> {
        let Op::Half {
            op: hop,
            ty,
            ftz: false,
            sat: false,
            ..
        } = *op
        else {
            return None;
        };
        let halves = match ty {
            Ty::F16 => 1,
            Ty::F16x2 => 2,
            _ => return None,
        };
        if !matches!(hop, HalfOp::Add | HalfOp::Sub | HalfOp::Mul) {
            return None;
        }
        let (a, b) = (self.lo32(x), self.lo32(y));
        let mut ok = self.b.ins().iconst(I8, 1);
        let mut r = self.b.ins().iconst(I32, 0);
        for k in 0..halves {
            let (ha, hb) = (
                self.b.ins().ushr_imm(a, 16 * k),
                self.b.ins().ushr_imm(b, 16 * k),
            );
            let (fa, oka) = self.f16_in(ha);
            let (fb, okb) = self.f16_in(hb);
            let f = match hop {
                HalfOp::Add => self.b.ins().fadd(fa, fb),
                HalfOp::Sub => self.b.ins().fsub(fa, fb),
                _ => self.b.ins().fmul(fa, fb),
            };
            let (h, okr) = self.f16_out(f);
            let h = self.b.ins().ishl_imm(h, 16 * k);
            r = self.b.ins().bor(r, h);
            for o in [oka, okb, okr] {
                ok = self.b.ins().band(ok, o);
            }
        }
        let fast = self.b.ins().uextend(I64, r);
        Some(self.fast_or_helper(fast, ok, op, &[x, y, z]))
    }

    fn lo32(&mut self, v: Value) -> Value {
        self.b.ins().ireduce(I32, v)
    }

    /// The low `bits` of `v`, sign- or zero-extended to 64 bits.
    fn extend(&mut self, v: Value, bits: u32, signed: bool) -> Value {
        let t = match bits {
            8 => I8,
            16 => I16,
            32 => I32,
            _ => return v,
        };
        let n = self.b.ins().ireduce(t, v);
        if signed {
            self.b.ins().sextend(I64, n)
        } else {
            self.b.ins().uextend(I64, n)
        }
    }

    fn op(&mut self, op: &Op, on: Option<Value>, line: u32) -> Result<(), String> {
        // The PTX line, for profiles of the machine code (the `trace` log of `compile`).
        self.b.set_srcloc(SourceLoc::new(line));
        match op {
            Op::Nop => {}
            Op::Ld {
                space,
                ty,
                n,
                d,
                addr,
            } if crate::memory_access(op).is_some() => {
                let size = ty.size();
                let a = self.access(*space, addr, on, size, line, false);
                for (e, &dst) in d.iter().take(usize::from(*n)).enumerate() {
                    let p = self.element(&a, e);
                    let v = self.load(MemFlags::trusted(), p, 0, size, ty.signed());
                    self.set(dst, v, on);
                }
            }
            Op::St {
                space,
                ty,
                n,
                a,
                addr,
            } if crate::memory_access(op).is_some() => {
                let size = ty.size();
                let acc = self.access(*space, addr, on, size, line, true);
                for (e, src) in a.iter().take(usize::from(*n)).enumerate() {
                    let p = self.element(&acc, e);
                    let v = self.src(src);
                    let f = MemFlags::trusted();
                    match size {
                        1 => self.b.ins().istore8(f, v, p, 0),
                        2 => self.b.ins().istore16(f, v, p, 0),
                        4 => self.b.ins().istore32(f, v, p, 0),
                        _ => self.b.ins().store(f, v, p, 0),
                    };
                }
            }
            Op::Ld { ty, n, d, .. } => {
                let range = crate::param_load(op).ok_or("not a load from the parameters")?;
                self.param_bytes = self.param_bytes.max(range.end);
                let size = ty.size() as usize;
                for (e, &dst) in d.iter().take(usize::from(*n)).enumerate() {
                    let at = (range.start + e * size) as i32;
                    let p = self.params;
                    let v = self.load(
                        MemFlags::new().with_notrap(),
                        p,
                        at,
                        size as u32,
                        ty.signed(),
                    );
                    self.set(dst, v, on);
                }
            }
            Op::Mov { d, a } => {
                let v = self.src(a);
                self.set(*d, v, on);
            }
            Op::Pack { d, parts, bits } => {
                let m = mask(*bits);
                let mut v = self.b.ins().iconst(I64, 0);
                for (k, p) in parts.iter().enumerate() {
                    let x = self.src(p);
                    let x = self.b.ins().band_imm(x, m as i64);
                    let x = self.b.ins().ishl_imm(x, i64::from(k as u32 * bits));
                    v = self.b.ins().bor(v, x);
                }
                self.set(*d, v, on);
            }
            Op::Unpack { ds, a, bits } => {
                let m = mask(*bits);
                let x = self.src(a);
                for (k, d) in ds.iter().enumerate() {
                    let v = self.b.ins().ushr_imm(x, i64::from(k as u32 * bits));
                    let v = self.b.ins().band_imm(v, m as i64);
                    self.set(*d, v, on);
                }
            }
            Op::Cvta {
                d,
                a,
                space,
                to_generic,
            } => {
                let base = vgpu_ptx::exec::window(*space) as i64;
                let x = self.src(a);
                let v = self.b.ins().iadd_imm(
                    x,
                    if *to_generic {
                        base
                    } else {
                        base.wrapping_neg()
                    },
                );
                self.set(*d, v, on);
            }
            Op::Selp { d, a, b, p } => {
                let (x, y, q) = (self.src(a), self.src(b), self.src(p));
                let c = self.b.ins().icmp_imm(IntCC::NotEqual, q, 0);
                let v = self.b.ins().select(c, x, y);
                self.set(*d, v, on);
            }
            Op::Bin { d, a, b, .. } => {
                let (x, y) = (self.src(a), self.src(b));
                let v = match self.bin(op, x, y) {
                    Some(v) => v,
                    None => self.helper(op, &[x, y]),
                };
                self.set(*d, v, on);
            }
            Op::Mad {
                ty,
                mode,
                d,
                a,
                b,
                c,
                sat,
                ftz,
                round,
                ..
            } => {
                let (x, y, z) = (self.src(a), self.src(b), self.src(c));
                let w = ty.size() * 8;
                let int = !ty.float() && *ty != Ty::Pred && !sat;
                let v = match (int, w, mode) {
                    (true, 32, 0) => {
                        let (x, y, z) = (self.lo32(x), self.lo32(y), self.lo32(z));
                        let p = self.b.ins().imul(x, y);
                        let s = self.b.ins().iadd(p, z);
                        self.b.ins().uextend(I64, s)
                    }
                    (true, 64, 0) => {
                        let p = self.b.ins().imul(x, y);
                        self.b.ins().iadd(p, z)
                    }
                    (false, 32, _)
                        if *ty == Ty::F32
                            && !sat
                            && matches!(round, Round::Default | Round::Nearest) =>
                    {
                        let (x, y, z) = (
                            self.f32_in(x, *ftz),
                            self.f32_in(y, *ftz),
                            self.f32_in(z, *ftz),
                        );
                        let r = self.b.ins().fma(x, y, z);
                        self.f32_out(r, *ftz)
                    }
                    (true, 32, 2) => {
                        let x = self.extend(x, 32, ty.signed());
                        let y = self.extend(y, 32, ty.signed());
                        let p = self.b.ins().imul(x, y);
                        self.b.ins().iadd(p, z)
                    }
                    _ => self.helper(op, &[x, y, z]),
                };
                self.set(*d, v, on);
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
                let (x, y) = (self.src(a), self.src(b));
                let inline = match self.int_compare(*cmp, *ty, x, y) {
                    Some(t) => Some(t),
                    None => self.float_compare(*cmp, *ty, *ftz, x, y),
                };
                let t = match inline {
                    Some(t) => t,
                    None => {
                        let v = self.helper(op, &[x, y]);
                        self.b.ins().icmp_imm(IntCC::NotEqual, v, 0)
                    }
                };
                let nt = self.b.ins().bxor_imm(t, 1);
                let (v, v2) = match combine {
                    None => (t, nt),
                    Some((bop, p, neg)) => {
                        let q = self.src(p);
                        let cc = if *neg { IntCC::Equal } else { IntCC::NotEqual };
                        let q = self.b.ins().icmp_imm(cc, q, 0);
                        let f = |l: &mut Self, v: Value| match bop {
                            BoolOp::And => l.b.ins().band(v, q),
                            BoolOp::Or => l.b.ins().bor(v, q),
                            BoolOp::Xor => l.b.ins().bxor(v, q),
                        };
                        (f(self, t), f(self, nt))
                    }
                };
                let v = self.b.ins().uextend(I64, v);
                self.set(*d, v, on);
                if let Some(d2) = d2 {
                    let v2 = self.b.ins().uextend(I64, v2);
                    self.set(*d2, v2, on);
                }
            }
            Op::Cvt {
                dty,
                sty,
                sat,
                round,
                ftz,
                d,
                a,
            } => {
                let x = self.src(a);
                let int =
                    |t: &Ty| !t.float() && *t != Ty::Pred && !matches!(t, Ty::F16x2 | Ty::BF16x2);
                let nearest = matches!(round, Round::Default | Round::Nearest);
                let v = if int(dty) && int(sty) && !sat {
                    let v = self.extend(x, sty.size() * 8, sty.signed());
                    self.extend(v, dty.size() * 8, dty.signed())
                } else if *dty == Ty::F32 && int(sty) && !sat && nearest {
                    // Rounded to nearest, as the host's conversion does.
                    let v = self.extend(x, sty.size() * 8, sty.signed());
                    let f = if sty.signed() {
                        self.b.ins().fcvt_from_sint(F32, v)
                    } else {
                        self.b.ins().fcvt_from_uint(F32, v)
                    };
                    let bits = self.b.ins().bitcast(I32, MemFlags::new(), f);
                    let v = self.b.ins().uextend(I64, bits);
                    // An integer is never an f32 subnormal.
                    self.flushed.insert(v);
                    v
                } else if *dty == Ty::F32 && *sty == Ty::F16 && !sat && *round == Round::Default {
                    // Nor is an f16: its least magnitude, 2^-24, is a normal f32.
                    let v = self.f16_to_f32(x);
                    self.flushed.insert(v);
                    v
                } else if *dty == Ty::F16 && *sty == Ty::F32 && !sat && !ftz && nearest {
                    let f = self.f32_in(x, false);
                    let (h, ok) = self.f16_out(f);
                    let fast = self.b.ins().uextend(I64, h);
                    self.fast_or_helper(fast, ok, op, &[x])
                } else if *sty == Ty::F32 && int(dty) && dty.size() >= 4 {
                    // cvt.rzi.s32.f32 and the like, as the interpreter's: rounded to an
                    // integer, then clamped to the destination (a NaN gives 0); `.sat`
                    // changes nothing.
                    let f = self.f32_in(x, *ftz);
                    let f = self.round_f32(f, *round);
                    let ty = if dty.size() == 4 { I32 } else { I64 };
                    let v = if dty.signed() {
                        self.b.ins().fcvt_to_sint_sat(ty, f)
                    } else {
                        self.b.ins().fcvt_to_uint_sat(ty, f)
                    };
                    if ty == I32 {
                        self.b.ins().uextend(I64, v)
                    } else {
                        v
                    }
                } else if *dty == Ty::F32 && *sty == Ty::F32 && !sat && *round != Round::Default {
                    // cvt.rni.f32.f32 and the like: rounded to an integer, which is never
                    // subnormal (a NaN stays one, quieted, as the host's conversions
                    // leave the interpreter's).
                    let f = self.f32_in(x, *ftz);
                    let f = self.round_f32(f, *round);
                    let bits = self.b.ins().bitcast(I32, MemFlags::new(), f);
                    self.b.ins().uextend(I64, bits)
                } else {
                    self.helper(op, &[x])
                };
                self.set(*d, v, on);
            }
            Op::Un {
                op: un,
                ty,
                d,
                a,
                ftz,
            } => {
                let x = self.src(a);
                let v = match (un, ty.size(), ty.float() || *ty == Ty::Pred) {
                    (UnOp::Not | UnOp::CNot, _, true) if *ty == Ty::Pred => {
                        let z = self.b.ins().icmp_imm(IntCC::Equal, x, 0);
                        self.b.ins().uextend(I64, z)
                    }
                    (UnOp::Abs | UnOp::Neg, 4, true) if *ty == Ty::F32 => {
                        // The sign bit cleared or flipped, as the interpreter's (in f64,
                        // which quiets a NaN).
                        let mut bits = self.lo32(x);
                        if *ftz && !self.flushed.contains(&x) {
                            bits = self.flush(bits);
                        }
                        let r = if *un == UnOp::Abs {
                            self.b.ins().band_imm(bits, 0x7FFF_FFFF)
                        } else {
                            self.b.ins().bxor_imm(bits, 0x8000_0000u32 as i32 as i64)
                        };
                        let mag = self.b.ins().band_imm(bits, 0x7FFF_FFFF);
                        let nan =
                            self.b
                                .ins()
                                .icmp_imm(IntCC::UnsignedGreaterThan, mag, 0x7F80_0000);
                        let quiet = self.b.ins().bor_imm(r, 0x0040_0000);
                        let r = self.b.ins().select(nan, quiet, r);
                        self.b.ins().uextend(I64, r)
                    }
                    (UnOp::Not, 4, false) => {
                        let x = self.lo32(x);
                        let n = self.b.ins().bnot(x);
                        self.b.ins().uextend(I64, n)
                    }
                    (UnOp::Not, 8, false) => self.b.ins().bnot(x),
                    (UnOp::Rcp | UnOp::Sqrt, 4, true) if *ty == Ty::F32 => {
                        // Correctly rounded, as the interpreter's (computed in f64, rounded
                        // once); a NaN keeps its payload.
                        let x = self.f32_in(x, *ftz);
                        let r = if *un == UnOp::Rcp {
                            let one = self.b.ins().f32const(1.0);
                            self.b.ins().fdiv(one, x)
                        } else {
                            self.b.ins().sqrt(x)
                        };
                        let mut bits = self.b.ins().bitcast(I32, MemFlags::new(), r);
                        if *ftz {
                            bits = self.flush(bits);
                        }
                        self.b.ins().uextend(I64, bits)
                    }
                    (UnOp::Ex2 | UnOp::Lg2 | UnOp::Sin | UnOp::Cos | UnOp::Tanh, 4, true)
                        if *ty == Ty::F32 =>
                    {
                        // As the interpreter's: the same function of the host's math library
                        // on the value in f64, rounded once to f32.
                        let f = math_function(*un);
                        let x = self.f32_in(x, *ftz);
                        let x = self.b.ins().fpromote(F64, x);
                        let f = self.b.ins().iconst(self.ptr, f as usize as i64);
                        let call = self.b.ins().call_indirect(self.math, f, &[x]);
                        let r = self.b.inst_results(call)[0];
                        let r = self.b.ins().fdemote(F32, r);
                        let mut bits = self.b.ins().bitcast(I32, MemFlags::new(), r);
                        if *ftz {
                            bits = self.flush(bits);
                        }
                        self.b.ins().uextend(I64, bits)
                    }
                    (UnOp::Rsqrt, 4, true) if *ty == Ty::F32 => {
                        // As the interpreter's: 1 / sqrt in f64, rounded once to f32.
                        let x = self.f32_in(x, *ftz);
                        let x = self.b.ins().fpromote(F64, x);
                        let s = self.b.ins().sqrt(x);
                        let one = self.b.ins().f64const(1.0);
                        let r = self.b.ins().fdiv(one, s);
                        let r = self.b.ins().fdemote(F32, r);
                        let mut bits = self.b.ins().bitcast(I32, MemFlags::new(), r);
                        if *ftz {
                            bits = self.flush(bits);
                        }
                        self.b.ins().uextend(I64, bits)
                    }
                    _ => self.helper(op, &[x]),
                };
                self.set(*d, v, on);
            }
            Op::CvtPack { d, a, b, .. } => {
                let (x, y) = (self.src(a), self.src(b));
                let v = self.helper(op, &[x, y]);
                self.set(*d, v, on);
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
                let (x, y, z) = (self.src(a), self.src(b), self.src(c));
                let v = self.dot(x, y, z, *a_signed, *b_signed, *two, *hi);
                self.set(*d, v, on);
            }
            Op::Prmt { d, a, b, c, .. }
            | Op::Bfe { d, a, b, c, .. }
            | Op::Lop3 { d, a, b, c, .. }
            | Op::Shf { d, a, b, c, .. }
            | Op::Half { d, a, b, c, .. } => {
                let (x, y, z) = (self.src(a), self.src(b), self.src(c));
                let v = match self.half(op, x, y, z) {
                    Some(v) => v,
                    None => self.helper(op, &[x, y, z]),
                };
                self.set(*d, v, on);
            }
            Op::Bfi {
                d, a, b, pos, len, ..
            } => {
                let (x, y, p, n) = (self.src(a), self.src(b), self.src(pos), self.src(len));
                let v = self.helper(op, &[x, y, p, n]);
                self.set(*d, v, on);
            }
            other => return Err(format!("{other:?} is not a per-lane operation")),
        }
        Ok(())
    }

    /// A binary operation (`Op::Bin`) on `x` and `y` inline, where it has a plain machine
    /// form; `None` for the rest (`.sat`, `.NaN`, `.ftz` but for f32...).
    fn bin(&mut self, bin: &Op, x: Value, y: Value) -> Option<Value> {
        use BinOp::*;
        let Op::Bin {
            op,
            ty,
            ftz,
            sat,
            round,
            nan,
            ..
        } = *bin
        else {
            return None;
        };
        if sat || nan || (ftz && ty != Ty::F32) {
            return None;
        }
        let w = ty.size() * 8;
        let s = ty.signed();
        if ty == Ty::F32 {
            if !matches!(round, Round::Default | Round::Nearest) {
                return None;
            }
            let (x, y) = (self.f32_in(x, ftz), self.f32_in(y, ftz));
            let r = match op {
                Add => self.b.ins().fadd(x, y),
                Sub => self.b.ins().fsub(x, y),
                MulLo | MulHi | MulWide => self.b.ins().fmul(x, y),
                Div => self.b.ins().fdiv(x, y),
                Min | Max => self.min_max(op == Max, x, y),
                _ => return None,
            };
            return Some(self.f32_out(r, ftz));
        }
        if ty == Ty::Pred {
            let x = self.b.ins().icmp_imm(IntCC::NotEqual, x, 0);
            let y = self.b.ins().icmp_imm(IntCC::NotEqual, y, 0);
            let r = match op {
                And => self.b.ins().band(x, y),
                Or => self.b.ins().bor(x, y),
                Xor => self.b.ins().bxor(x, y),
                _ => return None,
            };
            return Some(self.b.ins().uextend(I64, r));
        }
        if ty.float() || !(w == 32 || w == 64) {
            return None;
        }
        if op == MulWide {
            if w != 32 {
                let r = self.b.ins().imul(x, y);
                return Some(r);
            }
            let x = self.extend(x, 32, s);
            let y = self.extend(y, 32, s);
            return Some(self.b.ins().imul(x, y));
        }
        let (x, y) = if w == 32 {
            (self.lo32(x), self.lo32(y))
        } else {
            (x, y)
        };
        let r = match op {
            // Dividing by zero gives all ones (rem: the dividend), as the interpreter's.
            Div | Rem => divide(&mut self.b, op == Div, s, x, y),
            Add => self.b.ins().iadd(x, y),
            Sub => self.b.ins().isub(x, y),
            MulLo => self.b.ins().imul(x, y),
            MulHi if s => self.b.ins().smulhi(x, y),
            MulHi => self.b.ins().umulhi(x, y),
            And => self.b.ins().band(x, y),
            Or => self.b.ins().bor(x, y),
            Xor => self.b.ins().bxor(x, y),
            Min if s => self.b.ins().smin(x, y),
            Min => self.b.ins().umin(x, y),
            Max if s => self.b.ins().smax(x, y),
            Max => self.b.ins().umax(x, y),
            Shl | Shr => shift(&mut self.b, op == Shl, s, x, y),
            _ => return None,
        };
        Some(if w == 32 {
            self.b.ins().uextend(I64, r)
        } else {
            r
        })
    }

    /// `max` (or `min`) of two floats as the interpreter's: a NaN gives the other operand,
    /// and +0 is above -0.
    fn min_max(&mut self, max: bool, x: Value, y: Value) -> Value {
        let nx = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        let ny = self.b.ins().fcmp(FloatCC::Unordered, y, y);
        let cc = if max {
            FloatCC::GreaterThan
        } else {
            FloatCC::LessThan
        };
        let beats = self.b.ins().fcmp(cc, x, y);
        let eq = self.b.ins().fcmp(FloatCC::Equal, x, y);
        let bits = self.b.ins().bitcast(I32, MemFlags::new(), x);
        let neg = self.b.ins().icmp_imm(IntCC::SignedLessThan, bits, 0);
        let zero_x = if max {
            self.b.ins().bxor_imm(neg, 1)
        } else {
            neg
        };
        let tie = self.b.ins().band(eq, zero_x);
        let take = self.b.ins().bor(ny, beats);
        let take = self.b.ins().bor(take, tie);
        let r = self.b.ins().select(take, x, y);
        self.b.ins().select(nx, y, r)
    }

    /// A float comparison of f32 (flushed under `.ftz`) or f64 inline (`None` for other
    /// types).
    fn float_compare(&mut self, cmp: Cmp, ty: Ty, ftz: bool, x: Value, y: Value) -> Option<Value> {
        let cc = float_cc(cmp);
        let (x, y) = match ty {
            Ty::F32 => (self.f32_in(x, ftz), self.f32_in(y, ftz)),
            Ty::F64 => (
                self.b.ins().bitcast(F64, MemFlags::new(), x),
                self.b.ins().bitcast(F64, MemFlags::new(), y),
            ),
            _ => return None,
        };
        Some(self.b.ins().fcmp(cc, x, y))
    }

    /// An integer comparison of 32 or 64 bits inline (`None` for the rest).
    fn int_compare(&mut self, cmp: Cmp, ty: Ty, x: Value, y: Value) -> Option<Value> {
        let w = ty.size() * 8;
        if ty.float() || ty == Ty::Pred || !(w == 32 || w == 64) {
            return None;
        }
        let cc = int_cc(cmp, ty.signed())?;
        let (x, y) = if w == 32 {
            (self.lo32(x), self.lo32(y))
        } else {
            (x, y)
        };
        Some(self.b.ins().icmp(cc, x, y))
    }
}

/// The condition of an integer comparison (`signed` or not); `None` for the float-only
/// ones.
pub(crate) fn int_cc(cmp: Cmp, signed: bool) -> Option<IntCC> {
    Some(match (cmp, signed) {
        (Cmp::Eq, _) => IntCC::Equal,
        (Cmp::Ne, _) => IntCC::NotEqual,
        (Cmp::Lt, true) => IntCC::SignedLessThan,
        (Cmp::Lt, false) => IntCC::UnsignedLessThan,
        (Cmp::Le, true) => IntCC::SignedLessThanOrEqual,
        (Cmp::Le, false) => IntCC::UnsignedLessThanOrEqual,
        (Cmp::Gt, true) => IntCC::SignedGreaterThan,
        (Cmp::Gt, false) => IntCC::UnsignedGreaterThan,
        (Cmp::Ge, true) => IntCC::SignedGreaterThanOrEqual,
        (Cmp::Ge, false) => IntCC::UnsignedGreaterThanOrEqual,
        _ => return None,
    })
}

/// The low `bits` bits set (all 64 from 64 on).
pub(crate) fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// The condition of a floating-point comparison (`ne` is ordered; the `u` forms, in
/// `Cmp::Unordered`'s order `equ`, `neu`, `ltu`, `leu`, `gtu`, `geu`, hold for NaNs too).
pub(crate) fn float_cc(cmp: Cmp) -> FloatCC {
    match cmp {
        Cmp::Eq => FloatCC::Equal,
        Cmp::Ne => FloatCC::OrderedNotEqual,
        Cmp::Lt => FloatCC::LessThan,
        Cmp::Le => FloatCC::LessThanOrEqual,
        Cmp::Gt => FloatCC::GreaterThan,
        Cmp::Ge => FloatCC::GreaterThanOrEqual,
        Cmp::Unordered(0) => FloatCC::UnorderedOrEqual,
        Cmp::Unordered(1) => FloatCC::NotEqual,
        Cmp::Unordered(2) => FloatCC::UnorderedOrLessThan,
        Cmp::Unordered(3) => FloatCC::UnorderedOrLessThanOrEqual,
        Cmp::Unordered(4) => FloatCC::UnorderedOrGreaterThan,
        Cmp::Unordered(_) => FloatCC::UnorderedOrGreaterThanOrEqual,
        Cmp::Num => FloatCC::Ordered,
        Cmp::Nan => FloatCC::Unordered,
    }
}

/// The highest register an instruction names (its guard included), or 0.
fn highest_reg(i: &Inst) -> Reg {
    let mut top = 0;
    i.clone().visit_regs(|r, _| top = top.max(*r));
    top
}
