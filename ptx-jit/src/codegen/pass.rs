//! Passes: a region's runs for a whole warp, group by group. Where the first runs of a
//! region are each one vector stretch (no warp-wide instruction, every per-lane
//! instruction with a vector form), a whole warp runs them as one *pass*: each group of
//! four lanes goes through them in turn, from run to run as its own lanes' branch sends
//! them, its registers' values kept in SSA values from one run to the next
//! ([`crate::vector::group_stretch`]; where runs join, as block parameters; those the
//! same in the group's four lanes, computed once for it or for the warp, as one scalar:
//! no parameter at all where every way brings the same). The
//! run-by-run form stores every register a stretch wrote at its end, for all 32 lanes, and
//! loads it again in the next: the prologue of ggml's quantized mat-vec wrote some forty
//! registers that way before its loop read them back, and most were never read after
//! the loop.
//!
//! What a run wrote is stored at once when no later run of the pass reads it and every
//! way out of the pass from there reads it (carried to where the group stops, it would
//! stay live across the pass, and the code generator spill it to the stack on the way);
//! the rest when the group stops: where its four lanes part, where its run's branch leaves
//! the pass, or at the pass's end, then only what is read after. Groups that stop at
//! different runs leave each lane where it goes next
//! ([`vgpu_ptx::exec::NativeRun::parted`]); where they all stop at one run and go one way
//! to a run of the region outside the pass, the code goes on there.
//!
//! A pass's first runs that give a group nothing of its own to do (code computed once for
//! the warp, and branches whose guards that code makes, so that every group goes the way
//! the warp goes), but for the first run's per-lane code, are not gone through group by
//! group ([`uniform_prefix`]: `soft_max`'s divisions by 64 or 32 bits, its mask pointer
//! tested, its ALiBi slope): each group runs that code, then goes on from the last of
//! those runs' branch, taken as the warp takes it, with the warp's values of what they
//! wrote.
//!
//! Running group after group reorders the lanes' accesses across the runs, as running lane
//! after lane does within a stretch (`segments`), so a pass holds, per state space, loads
//! only or a single store outside any loop: the result is then the interpreter's.

use super::{highest_reg, segments, unhoisted, uniform, Lane, Sub};
use crate::direct::{LoadCtx, PARTED};
use crate::vector::{self, Call, Carried};
use crate::{HashMap, HashSet};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{
    Block, BlockArg, InstBuilder, InstructionData, MemFlags, Opcode, Value, ValueDef,
};
use cranelift_frontend::FunctionBuilder;
use std::collections::BTreeSet;
use std::mem::offset_of;
use vgpu_ptx::constants::Facts;
use vgpu_ptx::ir::{Inst, MemSpace, Op, Reg};

/// How one run of a pass is built: which of its instructions are computed once for the
/// group (`hoisted`), the registers it reads with no f32 subnormal when it starts
/// (`normal_in`) and those the same in every lane then (`same_in`), and whether it loops
/// inside the code.
struct Shape {
    hoisted: Vec<bool>,
    normal_in: HashSet<Reg>,
    same_in: HashSet<Reg>,
    narrow_in: HashSet<Reg>,
    looping: bool,
}

/// The shape of run `s` when it is one stretch with a vector form; `None` otherwise.
fn shape(code: &[Inst], s: &Sub, facts: &dyn Fn(usize) -> Option<Facts>) -> Option<Shape> {
    let insts = &code[s.start..s.end];
    let segs = segments(insts);
    if segs.len() != 1 || segs[0].1.is_some() {
        return None;
    }
    let stores = insts
        .iter()
        .any(|i| matches!(crate::memory_access(&i.op), Some((_, true))));
    let looping =
        s.looping && !stores && matches!(insts.last().map(|i| &i.op), Some(Op::Bra { .. }));
    let (normal_in, same_in, narrow_in) = super::stretch_in(insts, facts(s.start), looping);
    let hoisted = uniform(insts, &same_in);
    let body = unhoisted(insts, &hoisted);
    (body.is_empty() || vector::vectorizable(&body)).then_some(Shape {
        hoisted,
        normal_in,
        same_in,
        narrow_in,
        looping,
    })
}

/// The runs of a region that a whole warp runs as one pass ([`plan`]), and their shapes.
pub(super) struct Plan {
    /// Indices into `subs`, by their starts.
    pub(super) runs: Vec<usize>,
    shapes: HashMap<usize, Shape>,
}

/// The runs of a region (indices into `subs`, by their starts) that a whole warp runs as
/// one pass: the first, and each after it that has a vector form, is reached only from
/// runs of the pass, and keeps the pass's accesses to each state space to loads only or
/// one store outside any loop. Empty where fewer than two runs qualify.
pub(super) fn plan(code: &[Inst], subs: &[Sub], facts: &dyn Fn(usize) -> Option<Facts>) -> Plan {
    let mut order: Vec<usize> = (0..subs.len()).collect();
    order.sort_by_key(|&i| subs[i].start);
    let preds = predecessors(subs);
    let mut pass: Vec<usize> = Vec::new();
    let mut shapes = HashMap::default();
    // Per state space (global, shared): loads, stores.
    let mut seen = [[0usize; 2]; 2];
    for i in order {
        let s = &subs[i];
        if i > 0 && (preds[i].is_empty() || preds[i].iter().any(|p| !pass.contains(p))) {
            continue;
        }
        let Some(shape) = shape(code, s, facts) else {
            if i == 0 {
                return Plan {
                    runs: Vec::new(),
                    shapes,
                };
            }
            continue;
        };
        let mut counts = seen;
        for inst in &code[s.start..s.end] {
            if let Some((space, store)) = crate::memory_access(&inst.op) {
                let spaces: &[usize] = match space {
                    MemSpace::Generic => &[0, 1],
                    MemSpace::Shared => &[1],
                    _ => &[0],
                };
                for &sp in spaces {
                    counts[sp][usize::from(store)] += 1;
                }
            }
        }
        let orderly = counts
            .iter()
            .all(|&[loads, stores]| stores == 0 || (stores == 1 && loads == 0));
        if !orderly {
            if i == 0 {
                pass.clear();
                break;
            }
            continue;
        }
        seen = counts;
        pass.push(i);
        shapes.insert(i, shape);
    }
    if pass.len() < 2 {
        pass.clear();
    }
    Plan { runs: pass, shapes }
}

/// The runs at the start of pass `pass` that give a group nothing of its own to do but the
/// first run's per-lane code: each computed once for the warp but its branch, whose guard
/// that code makes (so every group goes the way the warp goes), and reached only from such
/// runs, so long as one of them (the last) is where every way out of them leaves, and every
/// way to its end writes the same registers. Gives those runs, the last, and the registers
/// they write but the first run's per-lane code ([`build`]: each group runs that code,
/// then goes on from the last run's branch with the warp's values of those registers).
/// `None` where the pass's first run is not one.
fn uniform_prefix(
    code: &[Inst],
    subs: &[Sub],
    pass: &[usize],
    shapes: &HashMap<usize, Shape>,
    ways: &Ways<'_>,
) -> Option<(HashSet<usize>, usize, Vec<Reg>)> {
    let first = *pass.first()?;
    // The runs a group goes on to from run `i`, where they are runs of the pass; `None`
    // where a way leaves the pass.
    let next = |i: usize| -> Option<Vec<usize>> {
        let s = &subs[i];
        let last = &code[s.end - 1];
        let branch = matches!(last.op, Op::Bra { .. });
        let mut out = Vec::new();
        if branch {
            out.push(s.jump.filter(|t| pass.contains(t))?);
        }
        if !branch || last.guard.is_some() {
            out.push(s.fall.filter(|t| pass.contains(t))?);
        }
        Some(out)
    };
    // The first run may have per-lane code (each group runs it first, `build`); the
    // others none; each's branch, if any, is decided for the warp.
    let eligible = |i: usize| -> bool {
        let (s, shape) = (&subs[i], &shapes[&i]);
        if shape.looping || !ways.early.contains_key(&i) {
            return false;
        }
        let insts = &code[s.start..s.end];
        let body = unhoisted(insts, &shape.hoisted);
        let (last, rest) = match body.split_last() {
            None => return true,
            Some((last, rest)) => (last, rest),
        };
        let decided = |x: &Inst| {
            std::ptr::eq(x, &insts[insts.len() - 1])
                && (x.guard.is_none() || ways.warp_guard(i).is_some())
        };
        if matches!(last.op, Op::Bra { .. }) {
            decided(last) && (rest.is_empty() || i == first)
        } else {
            i == first
        }
    };
    let mut prefix: HashSet<usize> = HashSet::default();
    // Per run of the prefix: the registers written on every way to its end.
    let mut every: HashMap<usize, BTreeSet<Reg>> = HashMap::default();
    let mut any: BTreeSet<Reg> = BTreeSet::new();
    for &i in pass {
        let from = ways.into(i);
        let reached = if i == first {
            true
        } else {
            !from.is_empty() && from.iter().all(|p| prefix.contains(p))
        };
        if !reached || !eligible(i) {
            if i == first {
                return None;
            }
            continue;
        }
        let own = &ways.writes.get(&i)?.0;
        let mut before: Option<BTreeSet<Reg>> = None;
        for p in &from {
            let e = every.get(p)?;
            before = Some(match before {
                None => e.clone(),
                Some(b) => b.intersection(e).copied().collect(),
            });
        }
        let mut all = before.unwrap_or_default();
        all.extend(own.iter().copied());
        any.extend(own.iter().copied());
        every.insert(i, all);
        prefix.insert(i);
    }
    // The one run of the prefix whose ways leave it, all of them.
    let mut last = None;
    for &i in &prefix {
        let ways_on = next(i)?;
        let out = ways_on.iter().filter(|t| !prefix.contains(t)).count();
        if out == 0 {
            continue;
        }
        if out < ways_on.len() || last.is_some() {
            return None;
        }
        last = Some(i);
    }
    // (A prefix of the first run alone spares nothing.)
    let last = last.filter(|_| prefix.len() > 1)?;
    let at_last = every.get(&last)?;
    // What the first run's per-lane code writes is each group's own: no other run of the
    // prefix may write it, and it is not among the warp's values.
    let lanes = &ways.writes.get(&first)?.1;
    let others = prefix
        .iter()
        .filter(|&&i| i != first)
        .any(|i| ways.writes.get(i).is_some_and(|w| !w.0.is_disjoint(lanes)));
    if others || !any.is_subset(at_last) {
        return None;
    }
    let regs = any.into_iter().filter(|r| !lanes.contains(r)).collect();
    Some((prefix, last, regs))
}

/// Each run's predecessors in the region: the runs whose fall-through or branch goes on
/// to it.
fn predecessors(subs: &[Sub]) -> Vec<Vec<usize>> {
    let mut preds = vec![Vec::new(); subs.len()];
    for (i, s) in subs.iter().enumerate() {
        for n in [s.fall, s.jump].into_iter().flatten() {
            if !preds[n].contains(&i) {
                preds[n].push(i);
            }
        }
    }
    preds
}

/// Each run of a pass's runs that are on every way to it from the pass's first (itself
/// among them).
fn dominators(pass: &[usize], preds: &[Vec<usize>]) -> HashMap<usize, HashSet<usize>> {
    let mut dom: HashMap<usize, HashSet<usize>> = HashMap::default();
    for &i in pass {
        let mut d: Option<HashSet<usize>> = None;
        for p in &preds[i] {
            let pd = dom.get(p).cloned().unwrap_or_default();
            d = Some(match d {
                None => pd,
                Some(d) => d.intersection(&pd).copied().collect(),
            });
        }
        let mut d = d.unwrap_or_default();
        d.insert(i);
        dom.insert(i, d);
    }
    dom
}

/// What building a pass needs besides its runs and their shapes: the call's values, the
/// liveness of the kernel, and the sites, registers and parameters counted so far.
pub(super) struct Needs<'a> {
    pub(super) call: Call,
    pub(super) live_at: &'a dyn Fn(usize, Reg) -> bool,
    pub(super) hints: &'a HashMap<usize, u64>,
    pub(super) top: Reg,
    pub(super) sites: u32,
    pub(super) param_bytes: usize,
}

/// The runs of a pass a group may go to run `x` from: those whose branch goes there, and
/// those it follows that do not end with a branch every lane takes.
fn into(code: &[Inst], subs: &[Sub], preds: &[Vec<usize>], x: usize) -> Vec<usize> {
    preds[x]
        .iter()
        .copied()
        .filter(|&y| {
            let s = &subs[y];
            let always = matches!(
                code[s.end - 1],
                Inst {
                    op: Op::Bra { .. },
                    guard: None,
                    ..
                }
            );
            s.jump == Some(x) || (s.fall == Some(x) && !always)
        })
        .collect()
}

/// A zero of type `ty` (an integer, f32 or f64 value, or a vector of them).
fn zero_of(b: &mut FunctionBuilder<'_>, ty: cranelift_codegen::ir::Type) -> Value {
    use cranelift_codegen::ir::types::{F32, F64};
    match ty {
        F32 => b.ins().f32const(0.0),
        F64 => b.ins().f64const(0.0),
        t if t.is_vector() => {
            let c = b
                .func
                .dfg
                .constants
                .insert(vec![0u8; t.bytes() as usize].into());
            b.ins().vconst(t, c)
        }
        t => b.ins().iconst(t, 0),
    }
}

/// Whether `inst`, built once for the warp, calls the host's math library (f32 `ex2`,
/// `lg2`, `sin`, `cos`, `tanh`): code worth not computing for a warp that does not get there.
fn calls_math(inst: &Inst) -> bool {
    use vgpu_ptx::ir::{Ty, UnOp};
    matches!(
        inst.op,
        Op::Un {
            op: UnOp::Ex2 | UnOp::Lg2 | UnOp::Sin | UnOp::Cos | UnOp::Tanh,
            ty: Ty::F32,
            ..
        }
    )
}

/// The values an instruction computed once for the group gives the vector code.
struct Hoisted {
    vals: HashMap<Reg, Value>,
    dirty: BTreeSet<Reg>,
}

impl Hoisted {
    /// What the vector code of a run of shape `shape` needs besides these values: the
    /// call's values, the sites numbered so far, which registers are read after it, and
    /// the accesses to test for coalesced lanes.
    fn env<'a>(
        &'a self,
        (call, sites): (Call, u32),
        shape: &'a Shape,
        live: &'a dyn Fn(Reg) -> bool,
        coalesced: &'a HashMap<usize, u64>,
    ) -> vector::Env<'a> {
        vector::Env {
            call,
            sites,
            uniform: &self.vals,
            uniform_dirty: &self.dirty,
            normal_in: &shape.normal_in,
            narrow_in: &shape.narrow_in,
            live,
            coalesced,
        }
    }
}

/// Builds the instructions of `insts` marked `hoisted` once, lane by lane, for the lane
/// whose slot of register 0 is at `base` (lane `lane`), reading the registers of `known`
/// from there rather than from the slots; gives their values (those of `known` only where
/// rewritten) and the registers they wrote.
fn hoist<'f>(
    b: FunctionBuilder<'f>,
    n: &mut Needs<'_>,
    (base, lane): (Value, Value),
    insts: &[Inst],
    shape: &Shape,
    known: HashMap<Reg, Value>,
) -> Result<(FunctionBuilder<'f>, Hoisted), String> {
    let mut b = b;
    let lane32 = b.ins().ireduce(I32, lane);
    let given: HashSet<Reg> = known.keys().copied().collect();
    let c = n.call;
    let mut u = Lane {
        b,
        ptr: c.ptr,
        base,
        params: c.params,
        specials: c.specials,
        loads: c.loads,
        lane,
        lane32,
        helper: c.helper,
        math: c.math,
        find: c.find,
        vals: known,
        flushed: HashSet::default(),
        normal_in: shape.normal_in.clone(),
        dirty: BTreeSet::new(),
        top: n.top,
        sites: n.sites,
        param_bytes: n.param_bytes,
    };
    for (inst, _) in insts.iter().zip(&shape.hoisted).filter(|(_, &h)| h) {
        u.op(&inst.op, None, inst.line)?;
    }
    (n.top, n.sites, n.param_bytes) = (u.top, u.sites, u.param_bytes);
    let dirty = u.dirty;
    let mut vals = u.vals;
    vals.retain(|r, _| !given.contains(r) || dirty.contains(r));
    Ok((u.b, Hoisted { vals, dirty }))
}

/// The runs of a pass before one being built, and what the code computed once for the
/// warp made of them so far: where a warp's value of a register comes from at a run's end
/// ([`Ways::chosen`]).
struct Ways<'a> {
    code: &'a [Inst],
    subs: &'a [Sub],
    preds: &'a [Vec<usize>],
    early: &'a HashMap<usize, Hoisted>,
    /// Per run: the registers it writes, and those its per-lane code writes.
    writes: &'a HashMap<usize, (HashSet<Reg>, HashSet<Reg>)>,
    first: usize,
}

impl<'a> Ways<'a> {
    /// The ways of the pass whose first run is `first`, with what is known so far.
    fn new(
        (code, subs, preds): (&'a [Inst], &'a [Sub], &'a [Vec<usize>]),
        early: &'a HashMap<usize, Hoisted>,
        writes: &'a HashMap<usize, (HashSet<Reg>, HashSet<Reg>)>,
        first: usize,
    ) -> Self {
        Ways {
            code,
            subs,
            preds,
            early,
            writes,
            first,
        }
    }

    /// The warp's values of registers `regs` where run `i` starts, each chosen from the
    /// two ways into it by the branch of the run they part at: `i` is reached from a run
    /// `a` whose branch has a guard the code computed once for the warp has made, either
    /// way through a run reached from `a` alone or from `a` directly, and each way's value
    /// is known at its end. `None` where some register's is not.
    fn chosen(
        &self,
        b: &mut FunctionBuilder<'_>,
        regs: Value,
        i: usize,
        want: &[Reg],
    ) -> Option<HashMap<Reg, Value>> {
        let [p, q] = self.into(i)[..] else {
            return None;
        };
        // The run where the ways part, and the run each way comes through (or `a` itself).
        let from = |x: usize| match self.into(x)[..] {
            [a] => Some(a),
            _ => None,
        };
        let a = if from(p) == Some(q) {
            q
        } else if from(q) == Some(p) {
            p
        } else if from(p).is_some() && from(p) == from(q) {
            from(p)?
        } else {
            return None;
        };
        let s = &self.subs[a];
        let (guard, neg) = self.warp_guard(a)?;
        // The run the lanes that take the branch go through (or `a`), and the others.
        let way = |to: Option<usize>| match to {
            Some(t) if t == i => Some(a),
            Some(t) if t != a && (t == p || t == q) => Some(t),
            _ => None,
        };
        let (jump, fall) = (way(s.jump)?, way(s.fall)?);
        if jump == fall {
            return None;
        }
        let taken = b
            .ins()
            .icmp_imm(if neg { IntCC::Equal } else { IntCC::NotEqual }, guard, 0);
        let mut out = HashMap::default();
        for &r in want {
            let (x, y) = (
                self.at_end(b, regs, jump, r)?,
                self.at_end(b, regs, fall, r)?,
            );
            out.insert(r, b.ins().select(taken, x, y));
        }
        Some(out)
    }

    /// The runs of the pass a group may go to run `x` from ([`into`]).
    fn into(&self, x: usize) -> Vec<usize> {
        into(self.code, self.subs, self.preds, x)
    }

    /// Where run `i` is reached from one run alone, whose branch on a guard the code
    /// computed once for the warp made (`early`) goes either to `i` or to another run of
    /// the pass: that guard's value and whether the warp reaches `i` when it is non-zero.
    fn only_by(&self, i: usize) -> Option<(Value, bool)> {
        let [a] = self.into(i)[..] else {
            return None;
        };
        let s = &self.subs[a];
        if s.jump == s.fall || s.jump.is_none() || s.fall.is_none() {
            return None;
        }
        let (guard, neg) = self.warp_guard(a)?;
        // (The branch is taken where the guard, negated or not, holds.)
        Some((guard, (s.jump == Some(i)) != neg))
    }

    /// The guard of run `a`'s branch (not a loop's), as the code computed once for the warp
    /// made it there, and whether the branch negates it: the same in every lane, so that
    /// every group goes the way lane 0 goes.
    fn warp_guard(&self, a: usize) -> Option<(Value, bool)> {
        let s = &self.subs[a];
        let Inst {
            op: Op::Bra { .. },
            guard: Some((g, neg)),
            ..
        } = &self.code[s.end - 1]
        else {
            return None;
        };
        let h = self.early.get(&a)?;
        if s.looping || !h.dirty.contains(g) || self.writes.get(&a)?.1.contains(g) {
            return None;
        }
        Some((*h.vals.get(g)?, *neg))
    }

    /// The warp's value of register `r` at the end of run `x`: what its code computed once
    /// for the warp wrote, or, where it does not write it, the value where it starts (lane
    /// 0's slot at the pass's start; where two ways join before `x`, the one the warp
    /// took, as [`Ways::chosen`] finds it). `None` where its per-lane code writes it, or
    /// it writes it and was not computed once for the warp.
    fn at_end(&self, b: &mut FunctionBuilder<'_>, regs: Value, x: usize, r: Reg) -> Option<Value> {
        let (all, lanes) = self.writes.get(&x)?;
        if lanes.contains(&r) {
            return None;
        }
        if all.contains(&r) {
            let h = self.early.get(&x)?;
            return h.dirty.contains(&r).then(|| h.vals.get(&r).copied())?;
        }
        if let Some(&v) = self.early.get(&x).and_then(|h| h.vals.get(&r)) {
            return Some(v);
        }
        if x == self.first {
            return Some(
                b.ins()
                    .load(I64, MemFlags::trusted(), regs, (r * 256) as i32),
            );
        }
        match self.into(x)[..] {
            [y] => self.at_end(b, regs, y, r),
            // Where two ways join before `x`, as where they join before the run at hand.
            _ => self.chosen(b, regs, x, &[r])?.get(&r).copied(),
        }
    }
}

/// Builds the pass `plan` of the region `subs` in the current block, for a
/// whole warp: the eight groups in turn, then a return with the lanes that took the last
/// run's branch, that run's index in `LoadCtx::exit` (or [`PARTED`], each group's in
/// `LoadCtx::groups`).
pub(super) fn build<'f>(
    b: FunctionBuilder<'f>,
    n: &mut Needs<'_>,
    code: &[Inst],
    subs: &[Sub],
    plan: Plan,
    heads: &[Block],
) -> Result<FunctionBuilder<'f>, String> {
    let mut b = b;
    let (c, live_at, hints) = (n.call, n.live_at, n.hints);
    let (pass, shapes) = (&plan.runs[..], plan.shapes);
    let preds = predecessors(subs);
    let in_pass = |i: usize| pass.contains(&i);
    // Whether register `r` may be read from instruction `at` on.
    let live_in = |at: usize, r: Reg| {
        let mut read = false;
        if let Some(inst) = code.get(at) {
            inst.clone().visit_regs(|x, def| read |= !def && *x == r);
        }
        read || (at < code.len() && live_at(at, r))
    };
    // Where the group may leave the pass from each run on (the instructions it goes to).
    let mut exits_after: HashMap<usize, BTreeSet<usize>> = HashMap::default();
    for &i in pass.iter().rev() {
        let s = &subs[i];
        let mut set = BTreeSet::new();
        let unconditional = matches!(
            code[s.end - 1],
            Inst {
                op: Op::Bra { .. },
                guard: None,
                ..
            }
        );
        // A loop's own branch back leaves only when its budget runs out.
        let mut ways = Vec::new();
        if !(s.looping && shapes[&i].looping) {
            ways.push((s.jump, s.target.map(|t| t as usize)));
        }
        if !unconditional {
            ways.push((s.fall, Some(s.end)));
        }
        for (next, pc) in ways {
            match next.filter(|&n| in_pass(n)) {
                Some(n) => set.extend(exits_after.get(&n).into_iter().flatten().copied()),
                None => set.extend(pc),
            }
        }
        exits_after.insert(i, set);
    }
    // The registers the runs of the pass after each run may read.
    let mut reads_after: HashMap<usize, HashSet<Reg>> = HashMap::default();
    for &i in pass.iter().rev() {
        let mut set = HashSet::default();
        for to in [subs[i].fall, subs[i].jump]
            .into_iter()
            .flatten()
            .filter(|&t| in_pass(t))
        {
            if let Some(after) = reads_after.get(&to) {
                set.extend(after.iter().copied());
            }
            for inst in &code[subs[to].start..subs[to].end] {
                inst.clone().visit_regs(|r, def| {
                    if !def {
                        set.insert(*r);
                    }
                });
            }
        }
        reads_after.insert(i, set);
    }
    for &i in pass {
        for inst in &code[subs[i].start..subs[i].end] {
            n.top = n.top.max(highest_reg(inst));
        }
    }
    // The instructions the same in every lane, once for the warp (from lane 0's slots),
    // of each run whose such instructions read no register a run of the pass before it
    // writes: what they compute is then what the group would when it gets there (or
    // nothing anyone reads, if it does not: they are pure, and touch only registers and
    // the parameters).
    let first = pass[0];
    let zero = b.ins().iconst(I64, 0);
    // A register such code of an earlier run wrote is read from there, where that run
    // is on every way to this one and nothing else before this one writes it.
    let mut early: HashMap<usize, Hoisted> = HashMap::default();
    let dominators = dominators(pass, &preds);
    // Per register written so far: the run whose code computed once wrote it, or `None`
    // where a run's per-lane code (or more than one run) did.
    let mut writers: HashMap<Reg, Option<usize>> = HashMap::default();
    // The registers each run writes, and those its per-lane code writes.
    let mut writes: HashMap<usize, (HashSet<Reg>, HashSet<Reg>)> = HashMap::default();
    for &i in pass {
        let mut w = (HashSet::default(), HashSet::default());
        let insts = &code[subs[i].start..subs[i].end];
        for (inst, &h) in insts.iter().zip(&shapes[&i].hoisted) {
            inst.clone().visit_regs(|r, def| {
                if def {
                    w.0.insert(*r);
                    if !h {
                        w.1.insert(*r);
                    }
                }
            });
        }
        writes.insert(i, w);
    }
    for &i in pass {
        let insts = &code[subs[i].start..subs[i].end];
        let shape = &shapes[&i];
        let (mut reads, mut own) = (HashSet::default(), HashSet::default());
        for (inst, _) in insts.iter().zip(&shape.hoisted).filter(|(_, &h)| h) {
            inst.clone().visit_regs(|r, def| {
                if def {
                    own.insert(*r);
                } else if !own.contains(r) {
                    reads.insert(*r);
                }
            });
        }
        let mut known = HashMap::default();
        let mut ready = true;
        let mut merge = Vec::new();
        for &r in &reads {
            match writers.get(&r) {
                None => {}
                Some(Some(j)) if dominators[&i].contains(j) => {
                    match early.get(j).and_then(|h| h.vals.get(&r)) {
                        Some(&v) => {
                            known.insert(r, v);
                        }
                        None => ready = false,
                    }
                }
                Some(_) => merge.push(r),
            }
        }
        // A register the runs before this one wrote on two ways that a branch the same in
        // every lane chose between: the warp takes one of them, and the register is what
        // that way made (`soft_max`'s 64-bit remainders, by a divisor that may fit in 32
        // bits one way or the other, read by the address arithmetic after them).
        let ways = Ways::new((code, subs, &preds), &early, &writes, first);
        let mut merged = HashMap::default();
        if ready && !merge.is_empty() {
            match ways.chosen(&mut b, c.regs, i, &merge) {
                Some(m) => merged = m,
                None => ready = false,
            }
        }
        known.extend(merged.iter().map(|(&r, &v)| (r, v)));
        // A run that calls the host's math library, and that a branch the same in every lane
        // may send the warp around: its code computed once for the warp runs only where the
        // warp goes through it (`soft_max`'s ALiBi slope, an `ex2` and an `lg2` of a
        // `max_bias` that is 0 in most models, had been computed for every warp).
        let costly = insts
            .iter()
            .zip(&shape.hoisted)
            .any(|(inst, &h)| h && calls_math(inst));
        let only_by = if ready && costly {
            ways.only_by(i)
        } else {
            None
        };
        let around = only_by.map(|(guard, when_set)| {
            let (through, skip) = (b.create_block(), b.create_block());
            let cc = if when_set {
                IntCC::NotEqual
            } else {
                IntCC::Equal
            };
            let reach = b.ins().icmp_imm(cc, guard, 0);
            b.ins().brif(reach, through, &[], skip, &[]);
            b.seal_block(through);
            b.seal_block(skip);
            b.switch_to_block(through);
            skip
        });
        if ready {
            let (nb, mut h) = hoist(b, n, (c.regs, zero), insts, shape, known)?;
            b = nb;
            if let Some(skip) = around {
                // Every value it made, through a join: its own where the warp went through
                // it, zero where not (where the warp did not, no run after it reads them but
                // through the way the warp took, `Ways::chosen`).
                let join = b.create_block();
                let mut regs: Vec<Reg> = h.vals.keys().copied().collect();
                regs.sort_unstable();
                let mut own = Vec::with_capacity(regs.len());
                for r in &regs {
                    let v = h.vals[r];
                    b.append_block_param(join, b.func.dfg.value_type(v));
                    own.push(BlockArg::from(v));
                }
                b.ins().jump(join, &own);
                b.switch_to_block(skip);
                let none: Vec<BlockArg> = regs
                    .iter()
                    .map(|r| {
                        let ty = b.func.dfg.value_type(h.vals[r]);
                        BlockArg::from(zero_of(&mut b, ty))
                    })
                    .collect();
                b.ins().jump(join, &none);
                b.seal_block(join);
                b.switch_to_block(join);
                let params = b.block_params(join).to_vec();
                for (r, p) in regs.into_iter().zip(params) {
                    h.vals.insert(r, p);
                }
            }
            // What the join made, for the runs after it (those this run does not write).
            let own = writes.get(&i).map(|w| &w.0);
            merged.retain(|r, _| !own.is_some_and(|w| w.contains(r)));
            h.vals.extend(merged.iter().map(|(&r, &v)| (r, v)));
            early.insert(i, h);
        } else {
            merged.clear();
            // (Never made: `around` needs `ready`.)
            debug_assert!(around.is_none());
        }
        // This run's writes replace those of the runs before it: the runs of a pass go
        // forward only (a run joins the pass once every run before it on every way does),
        // so a writer that is the last so far and on every way to a later run is the last
        // on every way there. (Two writes in one run, or one by its per-lane code: `None`.)
        let mut mine: HashMap<Reg, Option<usize>> = HashMap::default();
        for (inst, &h) in insts.iter().zip(&shape.hoisted) {
            inst.clone().visit_regs(|r, def| {
                if def {
                    let by = (h && ready).then_some(i);
                    mine.entry(*r).and_modify(|w| *w = None).or_insert(by);
                }
            });
        }
        writers.extend(mine);
        for &r in merged.keys() {
            writers.insert(r, Some(i));
        }
    }
    // The runs at the pass's start with no per-lane code but the first run's, whose
    // branches the code computed once for the warp decides (every group goes the way the
    // warp goes), as far as the last of them ([`uniform_prefix`]): the groups run the first
    // run's per-lane code and go on from the last one's branch with the warp's values of
    // what those runs wrote, not through them one by one.
    let (skipped, (last, taken), start_state) = {
        let ways = Ways::new((code, subs, &preds), &early, &writes, first);
        let mut out = (HashSet::default(), (first, None), Vec::new());
        let found = uniform_prefix(code, subs, pass, &shapes, &ways);
        log::debug!(
            "prefix of the pass: {:?}",
            found.as_ref().map(|(p, l, r)| {
                let mut runs: Vec<usize> = p.iter().map(|&i| subs[i].start).collect();
                runs.sort_unstable();
                (runs, subs[*l].start, r.len())
            })
        );
        if let Some((prefix, last, regs)) = found {
            let mut vals = Vec::new();
            for &r in &regs {
                let Some(v) = ways.at_end(&mut b, c.regs, last, r) else {
                    break;
                };
                vals.push((r, v));
            }
            // The last run's branch, as the warp takes it.
            let s = &subs[last];
            let taken = match &code[s.end - 1] {
                Inst {
                    op: Op::Bra { .. },
                    guard: Some(_),
                    ..
                } => ways.warp_guard(last).map(|(g, neg)| {
                    let cc = if neg { IntCC::Equal } else { IntCC::NotEqual };
                    Some(b.ins().icmp_imm(cc, g, 0))
                }),
                _ => Some(None),
            };
            if let (true, Some(taken)) = (vals.len() == regs.len(), taken) {
                out = (prefix, (last, taken), vals);
            }
        }
        out
    };
    let mut start_state = Some(start_state);
    let head = b.create_block();
    b.append_block_param(head, I64);
    b.ins().jump(head, &[zero.into()]);
    b.switch_to_block(head);
    let group = b.block_params(head)[0];
    let at = b.ins().iadd(c.regs, group);
    let next = b.create_block();
    b.append_block_param(next, I32);
    let blocks: HashMap<usize, Block> = pass[1..].iter().map(|&i| (i, b.create_block())).collect();
    // Each run's state at its end, for the run it alone leads to.
    let mut after: HashMap<usize, Carried> = HashMap::default();
    // The edges into each run where runs join, and the state each brings.
    let mut pending: HashMap<usize, Vec<(Block, Carried)>> = HashMap::default();
    for &i in pass {
        if skipped.contains(&i) {
            if i == first {
                // The runs of the prefix, for a group: the first run's per-lane code, then
                // the warp's values of what the runs wrote, and on from the last one's
                // branch the way the warp takes it.
                let mut state = Carried::default();
                let f = &subs[first];
                let fshape = &shapes[&first];
                let finsts = &code[f.start..f.end];
                let body: Vec<&Inst> = unhoisted(finsts, &fshape.hoisted)
                    .into_iter()
                    .filter(|x| !matches!(x.op, Op::Bra { .. }))
                    .collect();
                if !body.is_empty() {
                    let h = early
                        .get(&first)
                        .ok_or("the first run's code for the warp")?;
                    let end = f.end - 1;
                    let live = |r: Reg| live_at(end, r);
                    let env = h.env((c, n.sites), fshape, &live, hints);
                    let (_, sites) =
                        vector::group_stretch(&mut b, &env, (at, group), &mut state, &body, false);
                    n.sites = sites;
                }
                let prefix = start_state.take().ok_or("a pass's start built twice")?;
                state.write_scalars(&prefix);
                let sl = &subs[last];
                // As each run stores what it wrote (below): what no run after the prefix
                // reads and every way out of the pass does, now.
                let (later, exits) = (&reads_after[&last], &exits_after[&last]);
                let now = state.split_stores(&|r| {
                    !later.contains(&r) && !exits.is_empty() && exits.iter().all(|&t| live_in(t, r))
                });
                let end = sl.end - 1;
                vector::store_group(&mut b, at, &now, &|r| live_at(end, r));
                let branch = matches!(code[sl.end - 1].op, Op::Bra { .. });
                let jump = sl.jump.filter(|&t| branch && in_pass(t));
                let fall = sl.fall.filter(|&t| in_pass(t));
                let mut edges = Vec::new();
                match (taken, jump, fall) {
                    (Some(t), Some(j), Some(f)) => {
                        let (ej, ef) = (b.create_block(), b.create_block());
                        b.ins().brif(t, ej, &[], ef, &[]);
                        edges.extend([(ej, j), (ef, f)]);
                    }
                    (None, Some(j), _) => edges.push((b.create_block(), j)),
                    (None, None, Some(f)) if !branch => edges.push((b.create_block(), f)),
                    _ => return Err("a prefix's last branch without its runs".into()),
                }
                if taken.is_none() {
                    b.ins().jump(edges[0].0, &[]);
                }
                go_on(&mut b, edges, &state, (&preds, &blocks), &mut pending);
                after.insert(last, state);
            }
            continue;
        }
        let s = &subs[i];
        let shape = &shapes[&i];
        let insts = &code[s.start..s.end];
        let mut carried = if i == first {
            Carried::default()
        } else {
            match preds[i][..] {
                [p] => {
                    b.switch_to_block(blocks[&i]);
                    after
                        .get(&p)
                        .cloned()
                        .ok_or("a pass's run before its predecessor")?
                }
                // Where runs join, the registers some of them wrote come as block
                // parameters (each edge passes its own, or the slots' where it has none).
                _ => {
                    let edges = pending.remove(&i).unwrap_or_default();
                    let states: Vec<&Carried> = edges.iter().map(|(_, c)| c).collect();
                    let regs = Carried::joining(&states, &|r| live_in(s.start, r));
                    for ty in Carried::param_types(&regs) {
                        b.append_block_param(blocks[&i], ty);
                    }
                    for (edge, state) in &edges {
                        b.switch_to_block(*edge);
                        let args: Vec<BlockArg> = state
                            .args(&mut b, at, &regs)
                            .into_iter()
                            .map(BlockArg::from)
                            .collect();
                        b.ins().jump(blocks[&i], &args);
                    }
                    b.switch_to_block(blocks[&i]);
                    let params = b.block_params(blocks[&i]).to_vec();
                    Carried::joined(&mut b, &regs, &params)
                }
            }
        };
        let hoisted = match early.remove(&i) {
            Some(h) => h,
            None => {
                // Once for the group, from its first lane, with what the group made so far.
                let lane = b.ins().ushr_imm(group, 3);
                let mut known = HashMap::default();
                for &r in &shape.same_in {
                    if let Some(v) = carried.first_lane(&mut b, r) {
                        known.insert(r, v);
                    }
                }
                let (nb, h) = hoist(b, n, (at, lane), insts, shape, known)?;
                b = nb;
                h
            }
        };
        let body = unhoisted(insts, &shape.hoisted);
        let end = s.end - 1;
        let live = |r: Reg| live_at(end, r);
        let env = hoisted.env((c, n.sites), shape, &live, hints);
        let (bits, sites) = vector::group_stretch(
            &mut b,
            &env,
            (at, group),
            &mut carried,
            &body,
            shape.looping,
        );
        n.sites = sites;
        // What the run wrote that no later run of the pass reads goes to the slots now, if
        // read after the pass: carried to where the group stops, it stayed live across the
        // pass, and the code generator spilled it to the stack on the way.
        let later = &reads_after[&i];
        let exits = &exits_after[&i];
        let now = carried.split_stores(&|r| {
            !later.contains(&r) && !exits.is_empty() && exits.iter().all(|&t| live_in(t, r))
        });
        vector::store_group(&mut b, at, &now, &live);
        // On to the runs of the pass where all four lanes go, else out.
        let stop = b.create_block();
        let fall = s.fall.filter(|&f| in_pass(f));
        let jump = s.jump.filter(|&j| in_pass(j));
        let mut edges = Vec::new();
        // Where the lanes go is known when the run ends with no branch (or one its guard
        // decides alike for every group): a jump, with no way out of the pass the code
        // generator would have to keep values ready for.
        let known = integer_constant(&b, bits);
        let mut stopped = true;
        for (to, all) in [(jump, 0xF), (fall, 0)] {
            let Some(to) = to else { continue };
            let edge = b.create_block();
            match known {
                Some(k) if k == all => {
                    b.ins().jump(edge, &[]);
                    edges.push((edge, to));
                    stopped = false;
                    break;
                }
                Some(_) => continue,
                None => {
                    let other = b.create_block();
                    let go = b.ins().icmp_imm(IntCC::Equal, bits, all);
                    b.ins().brif(go, edge, &[], other, &[]);
                    edges.push((edge, to));
                    b.switch_to_block(other);
                }
            }
        }
        if stopped {
            b.ins().jump(stop, &[]);
        }
        go_on(&mut b, edges, &carried, (&preds, &blocks), &mut pending);
        b.switch_to_block(stop);
        vector::store_group(&mut b, at, &carried, &live);
        let code_of = b.ins().bor_imm(bits, (i as i64) << 4);
        b.ins().jump(next, &[code_of.into()]);
        after.insert(i, carried);
    }
    // The group's stop, then the next group.
    b.switch_to_block(next);
    let stopped = b.block_params(next)[0];
    let slot = b.ins().ushr_imm(group, 3);
    let slot = if c.ptr == I64 {
        slot
    } else {
        b.ins().ireduce(c.ptr, slot)
    };
    let slot = b.ins().iadd(c.loads, slot);
    let groups = offset_of!(LoadCtx, groups) as i32;
    b.ins().store(MemFlags::trusted(), stopped, slot, groups);
    let following = b.ins().iadd_imm(group, 32);
    let more = b.ins().icmp_imm(IntCC::UnsignedLessThan, following, 256);
    let done = b.create_block();
    b.ins().brif(more, head, &[following.into()], done, &[]);
    // Where the groups stopped: one run for all, or each its own.
    b.switch_to_block(done);
    let mut same = b.ins().iconst(I32, 1);
    let mut taken = b.ins().iconst(I32, 0);
    let mut run0 = None;
    for g in 0..8 {
        let v = b
            .ins()
            .load(I32, MemFlags::trusted(), c.loads, groups + 4 * g);
        let run = b.ins().ushr_imm(v, 4);
        let r0 = *run0.get_or_insert(run);
        let eq = b.ins().icmp(IntCC::Equal, run, r0);
        let eq = b.ins().uextend(I32, eq);
        same = b.ins().band(same, eq);
        let lanes = b.ins().band_imm(v, 0xF);
        let lanes = b.ins().ishl_imm(lanes, 4 * i64::from(g));
        taken = b.ins().bor(taken, lanes);
    }
    let run0 = run0.ok_or("no group")?;
    let parted = b.ins().iconst(I32, i64::from(PARTED as i32));
    let none = b.ins().iconst(I32, 0);
    let same = b.ins().icmp_imm(IntCC::NotEqual, same, 0);
    let taken = b.ins().select(same, taken, none);
    // Where every lane stopped at one run and goes the same way, to a run of the region
    // outside the pass: on there, as the run-by-run code (`heads`) would go.
    for &i in pass {
        for (to, all) in [(subs[i].fall, 0), (subs[i].jump, -1)] {
            let Some(to) = to.filter(|t| !pass.contains(t)) else {
                continue;
            };
            let here = b.ins().icmp_imm(IntCC::Equal, run0, i as i64);
            let way = b.ins().icmp_imm(IntCC::Equal, taken, all);
            let go = b.ins().band(here, way);
            let go = b.ins().band(go, same);
            let stay = b.create_block();
            b.ins().brif(go, heads[to], &[], stay, &[]);
            b.switch_to_block(stay);
        }
    }
    let exit = b.ins().select(same, run0, parted);
    b.ins().store(
        MemFlags::trusted(),
        exit,
        c.loads,
        offset_of!(LoadCtx, exit) as i32,
    );
    b.ins().return_(&[taken]);
    Ok(b)
}

/// Sends a group in `state` along `edges` (each a block and the run it goes to): on to the
/// run's block where it is reached from one run alone; else the edge and `state` wait for
/// the run there to be built, once every run before it is, as one of the ways it joins.
fn go_on(
    b: &mut FunctionBuilder<'_>,
    edges: Vec<(Block, usize)>,
    state: &Carried,
    (preds, blocks): (&[Vec<usize>], &HashMap<usize, Block>),
    pending: &mut HashMap<usize, Vec<(Block, Carried)>>,
) {
    for (edge, to) in edges {
        if preds[to].len() > 1 {
            pending.entry(to).or_default().push((edge, state.clone()));
            continue;
        }
        b.switch_to_block(edge);
        b.ins().jump(blocks[&to], &[]);
    }
}

/// The value of `v` when the builder made it as an integer constant.
fn integer_constant(b: &FunctionBuilder<'_>, v: Value) -> Option<i64> {
    let ValueDef::Result(inst, _) = b.func.dfg.value_def(v) else {
        return None;
    };
    match b.func.dfg.insts[inst] {
        InstructionData::UnaryImm {
            opcode: Opcode::Iconst,
            imm,
        } => Some(imm.bits()),
        _ => None,
    }
}
