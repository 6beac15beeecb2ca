//! Whole-warp stretches in vector registers. When every lane of the warp runs a stretch
//! whose per-lane instructions all have a vector form here ([`vectorizable`]: the
//! arithmetic, comparisons, conversions and memory accesses of reductions, address
//! updates and dot products, and loops of them), the stretch runs four lanes at a time in
//! SIMD registers instead of lane after lane: each register's four 64-bit slots are two
//! `i64x2` loads, f32 operations work on the four low halves as one `f32x4`, with `.ftz`
//! flushing and NaN canonicalisation done lane-wise as the lane code does them, and each
//! lane's memory access is checked as the lane code checks it. The lane loop stays for
//! the warps where some lanes do not run (`codegen`). A run whose stretches all have
//! vector forms, with shuffles of known sources between them (a butterfly reduction),
//! runs for a whole warp as one chain ([`chain`]): the eight groups keep their values in
//! SSA values from one stretch to the next, and a shuffle only moves them between groups
//! (renaming) or within one (a lane shuffle), where the stretch-by-stretch form stored
//! every register at each stretch's end and moved the shuffled one through memory. A
//! load or store whose four lanes' addresses the register analysis finds most likely one
//! after the other (or, for a load, at one place) is tested for that at run time and made
//! as one access with one check where it holds ([`Vector::coalesced_load`]), lane by lane
//! where not.

use crate::codegen::Checked;
use crate::{HashMap, HashSet};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, F64, F64X2, I32, I32X4, I64, I64X2, I8X16};
use cranelift_codegen::ir::{
    Block, BlockArg, ConstantData, Endianness, InstBuilder, MemFlags, SigRef, Type, Value,
};
use cranelift_frontend::FunctionBuilder;
use std::collections::BTreeSet;
use std::mem::offset_of;
use vgpu_ptx::exec::Specials;
use vgpu_ptx::exec::CANONICAL_NAN_F32;
use vgpu_ptx::ir::{
    Addr, BinOp, Cmp, HalfOp, Inst, MemSpace, Op, Reg, Round, Special, Src, Ty, UnOp,
};
use vgpu_ptx::lower::SINK;

/// The most instructions a vector stretch holds (its code is one more copy of the stretch).
const MAX_VECTOR: usize = 64;

/// The most instructions of a run built as one chain ([`chain`]): its code holds eight
/// copies of them, one per group of four lanes.
pub(crate) const MAX_CHAIN: usize = 96;

/// Whether a stretch (its per-lane instructions, not those computed once for the warp) has
/// a vector form: unguarded moves of registers, immediates, `%tid`, `%laneid` and the
/// special registers the same in every lane; f32 add, sub, mul, div, min, max and fma
/// (round to nearest, `.ftz` or not), f32 `rcp`, `sqrt`, `rsqrt`, `abs` and `neg`; `not`
/// of a predicate; 32- and 64-bit
/// integer add, sub, mul (`.lo`, and `.wide` of 32 bits), div and rem (but of signed 64
/// bits), min, max, and, or, xor, not, shifts by an
/// immediate, comparisons (`setp` with no predicate to combine) and `selp`; `dp4a`;
/// conversions between integers, to f32 from 32-bit and narrower integers and from f16,
/// from f32 to 32-bit integers and to integral f32; f16 and f16x2 add, sub and mul;
/// packing and unpacking; `cvta`; loads and stores of global and shared memory; and a branch
/// (guarded or not) at its end.
pub(crate) fn vectorizable(insts: &[&Inst]) -> bool {
    use BinOp::*;
    let reads_sink = |i: &Inst| {
        let mut sink = false;
        i.clone().visit_regs(|r, def| sink |= !def && *r == SINK);
        sink
    };
    let int = |t: &Ty| matches!(t, Ty::U32 | Ty::S32 | Ty::U64 | Ty::S64);
    let narrow_int = |t: &Ty| int(t) || matches!(t, Ty::U8 | Ty::S8 | Ty::U16 | Ty::S16);
    !insts.is_empty()
        && insts.len() <= MAX_VECTOR
        && insts.iter().enumerate().all(|(k, i)| {
            if reads_sink(i) {
                return false;
            }
            match &i.op {
                Op::Bra { .. } => k + 1 == insts.len(),
                // Of guarded instructions only stores (`Jit`'s `if_convert`), made by the
                // lanes whose guard holds: the `st` below.
                _ if i
                    .guard
                    .is_some_and(|(p, _)| p == SINK || !matches!(i.op, Op::St { .. })) =>
                {
                    false
                }
                Op::Nop => true,
                Op::Mov { a, .. } => match a {
                    Src::Special(Special::Tid(_) | Special::LaneId) => true,
                    Src::Special(sp) => crate::codegen::warp_special(*sp).is_some(),
                    a => operand(a),
                },
                Op::Bin {
                    op,
                    ty,
                    ftz,
                    sat: false,
                    nan: false,
                    round,
                    a,
                    b,
                    ..
                } if operand(a) && operand(b) => match ty {
                    Ty::F32 => {
                        matches!(op, Add | Sub | MulLo | Div | Min | Max)
                            && matches!(round, Round::Default | Round::Nearest)
                    }
                    // Predicates: their logic, on whether each is non-zero.
                    Ty::Pred => !ftz && matches!(op, And | Or | Xor),
                    t if int(t) => {
                        !ftz && (matches!(op, Add | Sub | And | Or | Xor | MulLo | Min | Max)
                            || matches!(op, Shl | Shr)
                            // Each lane on its own, as in the lane code.
                            || (matches!(op, Div | Rem) && (t.size() >= 4 || !t.signed()))
                            || (matches!(op, MulWide | MulHi) && t.size() == 4))
                    }
                    _ => false,
                },
                Op::Un {
                    op:
                        UnOp::Rcp
                        | UnOp::Sqrt
                        | UnOp::Rsqrt
                        | UnOp::Ex2
                        | UnOp::Lg2
                        | UnOp::Sin
                        | UnOp::Cos
                        | UnOp::Tanh,
                    ty: Ty::F32,
                    a,
                    ..
                } => operand(a),
                Op::Cvta { a, .. } => operand(a),
                // f16 add, sub and mul, as the lane code's: in f32, rounded once.
                Op::Half {
                    op: HalfOp::Add | HalfOp::Sub | HalfOp::Mul,
                    ty: Ty::F16 | Ty::F16x2,
                    ftz: false,
                    sat: false,
                    a,
                    b,
                    c,
                    ..
                } => operand(a) && operand(b) && operand(c),
                Op::Un {
                    op: UnOp::Not | UnOp::CNot,
                    ty: Ty::Pred,
                    a,
                    ..
                }
                | Op::Un {
                    op: UnOp::Abs | UnOp::Neg,
                    ty: Ty::F32,
                    a,
                    ..
                } => operand(a),
                Op::Un {
                    op: UnOp::Not,
                    ty,
                    a,
                    ..
                } => int(ty) && operand(a),
                Op::Mad {
                    ty: Ty::F32,
                    sat: false,
                    round: Round::Default | Round::Nearest,
                    a,
                    b,
                    c,
                    ..
                } => operand(a) && operand(b) && operand(c),
                // Integer `mad.lo`, and `mad.wide` of 32 bits.
                Op::Mad {
                    ty,
                    mode,
                    sat: false,
                    a,
                    b,
                    c,
                    ..
                } if int(ty) && (*mode == 0 || (*mode == 2 && ty.size() == 4)) => {
                    operand(a) && operand(b) && operand(c)
                }
                Op::Setp {
                    cmp: Cmp::Eq | Cmp::Ne | Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge,
                    ty,
                    combine: None,
                    a,
                    b,
                    ..
                } if int(ty) => operand(a) && operand(b),
                // f32 comparisons, every condition.
                Op::Setp {
                    ty: Ty::F32,
                    combine: None,
                    a,
                    b,
                    ..
                } => operand(a) && operand(b),
                Op::Selp { a, b, p, .. } => operand(a) && operand(b) && operand(p),
                // f32 to an integral f32.
                Op::Cvt {
                    dty: Ty::F32,
                    sty: Ty::F32,
                    sat: false,
                    round: Round::Nearest | Round::Zero | Round::Down | Round::Up,
                    a,
                    ..
                } => operand(a),
                Op::Cvt {
                    dty: Ty::F32,
                    sty,
                    sat: false,
                    round,
                    a,
                    ..
                } => {
                    operand(a)
                        && match sty {
                            Ty::F16 => *round == Round::Default,
                            t => {
                                narrow_int(t)
                                    && t.size() <= 4
                                    && matches!(round, Round::Default | Round::Nearest)
                            }
                        }
                }
                Op::Pack { parts, .. } => parts.iter().all(operand),
                Op::Unpack { a, .. } => operand(a),
                Op::Dp {
                    two: false,
                    a,
                    b,
                    c,
                    ..
                } => operand(a) && operand(b) && operand(c),
                Op::Ld { .. } => {
                    crate::memory_access(&i.op).is_some() || crate::param_load(&i.op).is_some()
                }
                Op::St { a, n, .. } => {
                    crate::memory_access(&i.op).is_some()
                        && a.iter().take(usize::from(*n)).all(operand)
                }
                // f32 to f16 rounded to nearest even, as the lane code's.
                Op::Cvt {
                    dty: Ty::F16,
                    sty: Ty::F32,
                    sat: false,
                    ftz: false,
                    round: Round::Default | Round::Nearest,
                    a,
                    ..
                } => operand(a),
                // f32 to a 32-bit integer, in any rounding, and f32 to an integral f32.
                Op::Cvt {
                    dty: Ty::S32 | Ty::U32,
                    sty: Ty::F32,
                    sat: false,
                    a,
                    ..
                } => operand(a),
                Op::Cvt {
                    dty,
                    sty,
                    sat: false,
                    a,
                    ..
                } => narrow_int(dty) && narrow_int(sty) && operand(a),
                _ => false,
            }
        })
}

/// The most bytes from the start of a span's first access to the start of its last
/// ([`spans`]).
const MAX_SPAN: i64 = 4096;

/// A global load's part in a *span*: the stretch's global loads of one access size at
/// constant offsets from the same value of one base register (nothing between them
/// writes it), a whole number of accesses apart (a block's fields, an unrolled loop's
/// elements, a vector load's). Each lane checks its whole span once, at the first load,
/// against that load's site; when every lane's span is inside, each load of the span
/// reads from there unchecked, else it checks its own accesses as before; a span of 2, 4
/// or 8 bytes is then read whole, in one access per lane, at its first load, and its
/// unsigned loads take their bytes from that ([`Spanned`]). A stretch with several global
/// loads stores nothing to global memory (`codegen::segments`), and no access of a span
/// can fault when its check passes, so the loads see what they saw.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Span {
    /// The first load of a span: the span's lowest offset and its length in accesses.
    First { lo: i64, count: u64 },
    /// A later load: the index in the stretch of its span's first.
    Later(usize),
}

/// The spans of a stretch's loads, by their index in it (loads in no span of two accesses
/// or more have none).
fn spans(insts: &[&Inst]) -> HashMap<usize, Span> {
    /// A span still open: its access size, its first load's offset, the lowest and
    /// highest offsets of its accesses, and its loads.
    struct Open {
        size: u32,
        offset: i64,
        lo: i64,
        hi: i64,
        loads: Vec<usize>,
    }
    fn close(o: Open, out: &mut HashMap<usize, Span>) {
        let count = (o.hi - o.lo) as u64 / u64::from(o.size) + 1;
        if count > 1 {
            out.insert(o.loads[0], Span::First { lo: o.lo, count });
            for &i in &o.loads[1..] {
                out.insert(i, Span::Later(o.loads[0]));
            }
        }
    }
    let mut open: HashMap<Reg, Open> = HashMap::default();
    let mut out = HashMap::default();
    for (i, inst) in insts.iter().enumerate() {
        if let Op::Ld {
            space: MemSpace::Global,
            ty,
            n,
            addr:
                Addr {
                    base: Some(r),
                    global: None,
                    offset,
                },
            ..
        } = &inst.op
        {
            let size = ty.size();
            let last = (i64::from(*n) - 1) * i64::from(size);
            let last = offset.checked_add(last);
            if let (true, Some(last)) = (size.is_power_of_two() && size <= 8, last) {
                let joins = |o: &Open| {
                    let apart = offset.checked_sub(o.offset)?;
                    let (lo, hi) = (o.lo.min(*offset), o.hi.max(last));
                    let fits = o.size == size
                        && apart % i64::from(size) == 0
                        && hi.checked_sub(lo)? <= MAX_SPAN;
                    fits.then_some((lo, hi))
                };
                match open.get_mut(r) {
                    Some(o) if joins(o).is_some() => {
                        (o.lo, o.hi) = joins(o).expect("it joins");
                        o.loads.push(i);
                    }
                    _ => {
                        if let Some(o) = open.remove(r) {
                            close(o, &mut out);
                        }
                        let o = Open {
                            size,
                            offset: *offset,
                            lo: *offset,
                            hi: last,
                            loads: vec![i],
                        };
                        open.insert(*r, o);
                    }
                }
            }
        }
        // A register written ends the spans based on it.
        (*inst).clone().visit_regs(|r, def| {
            if def {
                if let Some(o) = open.remove(r) {
                    close(o, &mut out);
                }
            }
        });
    }
    for (_, o) in open {
        close(o, &mut out);
    }
    out
}

/// What a span's first load found ([`spans`]): whether every lane's span is inside, each
/// lane's host address of its lowest offset, that offset, and, where the span is 2, 4 or 8
/// bytes, its bytes in each lane (two `i64x2`, read where every lane's span is inside):
/// the span's unsigned loads then take their values from there, with no access of their
/// own.
#[derive(Clone, Copy)]
struct Spanned {
    all: Value,
    hosts: [Value; 4],
    lo: i64,
    words: Option<(Value, Value)>,
    /// The four lanes' spans of 8 bytes lie one after the other from `hosts[0]` (checked
    /// as one run of 32 bytes): their bytes are two 16-byte reads.
    coalesced: bool,
}

/// What the accesses of one instruction's lanes loaded of what they are checked against:
/// the sites' slots and the shared memory's bounds.
#[derive(Default)]
struct Row {
    sites: Vec<(u32, [Value; 3])>,
    shared: Option<(Value, Value)>,
}

/// The flags of a vector access to register slots: they cannot trap (`Run::run` checks
/// the registers' length), but are only 8-byte aligned, so no instruction may assume 16.
fn slots() -> MemFlags {
    MemFlags::new().with_notrap()
}

fn operand(s: &Src) -> bool {
    matches!(s, Src::Reg(_) | Src::Imm(_))
}

/// Four lanes of a register: their 64-bit slots as two `i64x2`, and their low halves as
/// one `i32x4` once made.
#[derive(Clone, Copy)]
struct Quad {
    lo: Value,
    hi: Value,
    low32: Option<Value>,
    /// `lo` and `hi` hold 32-bit values zero-extended (a 32-bit result, or a register
    /// known to fit in 32 bits, `Env::narrow_in`): where runs of a pass join, such a
    /// register whose `low32` is made is passed as that one `i32x4`.
    zext: bool,
}

/// The builder of one vector stretch.
struct Vector<'a, 'f> {
    b: &'a mut FunctionBuilder<'f>,
    /// The address of the four lanes' slots of register 0.
    at: Value,
    /// The byte offset of the four lanes' slots in a register's row (32 per group).
    group: Value,
    /// The call's parameters, specials, `direct::LoadCtx`, helpers' signatures and
    /// pointer type.
    call: Call,
    /// The next global access's site (as the lane code numbers them, so that both use
    /// the same slot for the same access).
    sites: u32,
    vals: HashMap<Reg, Quad>,
    /// Values computed once for the warp, before the stretch.
    uniform: &'a HashMap<Reg, Value>,
    /// Registers with no f32 subnormal when the stretch starts.
    normal_in: &'a HashSet<Reg>,
    /// Registers whose values fit in 32 bits when the stretch starts.
    narrow_in: &'a HashSet<Reg>,
    /// Quads (by their `lo`) whose f32 halves hold no subnormal.
    flushed: HashSet<Value>,
    /// Of quads (by their `lo`) that f32 arithmetic made: its four f32 bits before their
    /// NaNs were made the canonical NaN ([`Vector::f32_out`]), for the operations whose
    /// result does not depend on which NaN an operand is ([`Vector::src_f32_any`]). Where
    /// no other instruction reads the quad, the code generator drops the canonical form.
    raw: HashMap<Value, Value>,
    /// Of `i32x4` values (a quad's `low32`) made of f16: the f32 bits of the f16 at bit 0
    /// and at bit 16 where the stretch has them already (the f16 arithmetic's and
    /// conversion's own results, before rounding to f16 bits), so that the next f16
    /// operation need not convert them again.
    halves: HashMap<Value, [Option<Value>; 2]>,
    /// Of predicates a 32-bit comparison of the stretch wrote (by their quad's `lo`): the
    /// comparison's `i32x4` mask (all ones where true), which a guard or a selection
    /// reads where it would otherwise compare both `i64x2` halves with 0 again. Defined
    /// next to the quad's `lo`, it is at hand wherever that is.
    masks: HashMap<Value, Value>,
    /// In a chain ([`chain`]): the instructions of the part being built after which their
    /// destination holds one value in the whole warp ([`warp_wide`]), whether the group
    /// being built is the first, and the first group's values there, which the others
    /// take ([`Vector::share`]).
    warp_wide: HashSet<usize>,
    first_group: bool,
    shared_values: HashMap<usize, Quad>,
    dirty: BTreeSet<Reg>,
    /// In a loop, the lanes still iterating (all ones), as two `i64x2`: the others' loads
    /// are not made (a false guard).
    active: Option<(Value, Value)>,
    /// The index in the stretch of the instruction being built, the spans of the
    /// stretch's loads ([`spans`]), and what each span's first load found: whether every
    /// lane's span is inside, each lane's host address of it, and its lowest offset.
    index: usize,
    spans: HashMap<usize, Span>,
    spanned: HashMap<usize, Spanned>,
    /// The accesses most likely coalesced or at one place, and how far apart their lanes'
    /// addresses are ([`Env::coalesced`]); and that of the one being built, if it is one.
    env_hints: &'a HashMap<usize, u64>,
    hinted: Option<u64>,
    /// In a chain ([`chain`]): the registers it never writes, whose slots are loaded
    /// where their values are first needed ([`Vector::reg`]: no store of the chain's can
    /// come between).
    clean: HashSet<Reg>,
}

/// What every stretch of a compiled call reads: the warp's registers, the parameters, the
/// special registers, the call's `direct::LoadCtx`, the signatures of the `direct`
/// lookups, the host's math functions and the interpreter's arithmetic, and the pointer
/// type.
#[derive(Clone, Copy)]
pub(crate) struct Call {
    pub(crate) regs: Value,
    pub(crate) params: Value,
    pub(crate) specials: Value,
    pub(crate) loads: Value,
    pub(crate) find: SigRef,
    pub(crate) math: SigRef,
    pub(crate) helper: SigRef,
    pub(crate) ptr: Type,
}

/// What a vector stretch reads besides its instructions: the call's values ([`Call`]; the
/// parameters as the lane code's same loads read them), the site of the stretch's first
/// global access, the registers computed (or read) once for the warp before it
/// (`uniform`) and those of them written (`uniform_dirty`), those with no f32 subnormal
/// when it starts (`normal_in`), and those `live` after it, which it stores back.
pub(crate) struct Env<'a> {
    pub(crate) call: Call,
    pub(crate) sites: u32,
    pub(crate) uniform: &'a HashMap<Reg, Value>,
    pub(crate) uniform_dirty: &'a BTreeSet<Reg>,
    pub(crate) normal_in: &'a HashSet<Reg>,
    /// The registers whose values fit in 32 bits when it starts (the high halves of
    /// their slots zero): loaded, they are quads of 32-bit values ([`Quad::zext`]).
    pub(crate) narrow_in: &'a HashSet<Reg>,
    pub(crate) live: &'a dyn Fn(Reg) -> bool,
    /// The accesses (by the addresses of their instructions) whose lanes' addresses are
    /// most likely one after the other or one place, and how far apart they are
    /// (`codegen::coalesced`): only these test for it.
    pub(crate) coalesced: &'a HashMap<usize, u64>,
}

/// Builds the stretch `insts` for all 32 lanes, four at a time, in the current block,
/// ending with a jump to `after` with the lanes that take the stretch's branch. With
/// `looping` (the stretch ends with a branch back to its start, and stores nothing), the
/// four lanes iterate together while any of them takes the branch, a lane that left
/// keeping its registers, up to `LOOP_BUDGET` times as the lane code: a lane takes the
/// branch only when the budget ran out. Returns the highest register touched and the
/// sites numbered so far (`env.sites` and those of the stretch's global accesses).
pub(crate) fn build(
    b: &mut FunctionBuilder<'_>,
    env: &Env<'_>,
    insts: &[&Inst],
    looping: bool,
    after: Block,
) -> (Reg, u32) {
    let head = b.create_block();
    b.append_block_param(head, I64);
    b.append_block_param(head, I32);
    let (zero64, zero32) = (b.ins().iconst(I64, 0), b.ins().iconst(I32, 0));
    b.ins().jump(head, &[zero64.into(), zero32.into()]);
    b.switch_to_block(head);
    let (group, taken) = (b.block_params(head)[0], b.block_params(head)[1]);
    let at = b.ins().iadd(env.call.regs, group);
    let mut v = Vector::new(b, env, at, group);
    let mut top = 0;
    for inst in insts {
        (*inst).clone().visit_regs(|r, _| {
            if *r != SINK {
                top = top.max(*r);
            }
        });
    }
    let bits = if looping {
        v.looped(insts, env.live)
    } else {
        v.straight(insts)
    };
    let flags = slots();
    for r in v.dirty.clone().into_iter().filter(|&r| (env.live)(r)) {
        let q = v.reg(r);
        v.b.ins().store(flags, q.lo, v.at, (r * 256) as i32);
        v.b.ins().store(flags, q.hi, v.at, (r * 256 + 16) as i32);
    }
    // Four lanes per 32 bytes of a register's row: this group's first lane is group / 8.
    let shift = v.b.ins().ushr_imm(group, 3);
    let shift = v.b.ins().ireduce(I32, shift);
    let bits = v.b.ins().ishl(bits, shift);
    let taken = v.b.ins().bor(taken, bits);
    let next = v.b.ins().iadd_imm(group, 32);
    let more = v.b.ins().icmp_imm(IntCC::UnsignedLessThan, next, 256);
    let sites = v.sites;
    b.ins().brif(
        more,
        head,
        &[next.into(), taken.into()],
        after,
        &[taken.into()],
    );
    b.seal_block(head);
    (top, sites)
}

/// What one group of four lanes carries from one run of a pass to the next
/// (`codegen::pass`): its registers' values so far (those the same in the four lanes, made
/// once for the group or the warp, as one scalar), the quads with no f32 subnormal, the
/// f32 values of f16 halves at hand, and the registers it wrote and has not stored.
#[derive(Clone, Default)]
pub(crate) struct Carried {
    vals: HashMap<Reg, Quad>,
    scalars: HashMap<Reg, Value>,
    flushed: HashSet<Value>,
    raw: HashMap<Value, Value>,
    halves: HashMap<Value, [Option<Value>; 2]>,
    dirty: BTreeSet<Reg>,
}

/// How a register comes to a run of a pass where runs join ([`Carried::joining`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joined {
    /// As two `i64x2`.
    Wide,
    /// As one `i32x4`: a 32-bit value zero-extended on every edge.
    Narrow,
    /// As one `i64`: the same in the group's four lanes on every edge.
    Scalar,
    /// As no parameter: this scalar on every edge (made where it is at hand on all of
    /// them, so at the join too).
    Same(Value),
}

impl Carried {
    /// The registers that some of `edges` (the states of the runs that lead to one run)
    /// wrote and did not store, and that the run there may read (`live`): what the run
    /// takes as block parameters ([`Carried::args`], [`Carried::joined`]), each with how
    /// it comes.
    pub(crate) fn joining(edges: &[&Carried], live: &dyn Fn(Reg) -> bool) -> Vec<(Reg, Joined)> {
        let regs: BTreeSet<Reg> = edges.iter().flat_map(|c| c.dirty.iter().copied()).collect();
        regs.into_iter()
            .filter(|&r| live(r))
            .map(|r| {
                let scalars: Option<Vec<Value>> =
                    edges.iter().map(|c| c.scalars.get(&r).copied()).collect();
                let narrow = || {
                    edges
                        .iter()
                        .all(|c| c.vals.get(&r).is_some_and(|q| q.zext && q.low32.is_some()))
                };
                let how = match scalars.as_deref() {
                    Some([x, rest @ ..]) if rest.iter().all(|y| y == x) => Joined::Same(*x),
                    Some(_) => Joined::Scalar,
                    None if narrow() => Joined::Narrow,
                    None => Joined::Wide,
                };
                (r, how)
            })
            .collect()
    }

    /// The block parameters' types for `regs` ([`Carried::joining`]).
    pub(crate) fn param_types(regs: &[(Reg, Joined)]) -> Vec<Type> {
        regs.iter()
            .flat_map(|&(_, how)| match how {
                Joined::Wide => vec![I64X2; 2],
                Joined::Narrow => vec![I32X4],
                Joined::Scalar => vec![I64],
                Joined::Same(_) => vec![],
            })
            .collect()
    }

    /// The four lanes of each of `regs` as this state has them and they are to come, as
    /// block arguments: loaded from the slots at `at` where it has not made them (they
    /// are then as the slots hold them).
    pub(crate) fn args(
        &self,
        b: &mut FunctionBuilder<'_>,
        at: Value,
        regs: &[(Reg, Joined)],
    ) -> Vec<Value> {
        let mut out = Vec::new();
        for &(r, how) in regs {
            match (how, self.vals.get(&r), self.scalars.get(&r)) {
                (Joined::Same(_), ..) => {}
                (Joined::Scalar, _, Some(&x)) => out.push(x),
                (
                    Joined::Narrow,
                    Some(&Quad {
                        low32: Some(v),
                        zext: true,
                        ..
                    }),
                    _,
                ) => out.push(v),
                (Joined::Wide, Some(q), _) => out.extend([q.lo, q.hi]),
                (Joined::Wide, None, Some(&x)) => {
                    let v = b.ins().splat(I64X2, x);
                    out.extend([v, v]);
                }
                (Joined::Wide, None, None) => {
                    let lo = b.ins().load(I64X2, slots(), at, (r * 256) as i32);
                    let hi = b.ins().load(I64X2, slots(), at, (r * 256 + 16) as i32);
                    out.extend([lo, hi]);
                }
                _ => unreachable!("`joining` makes a register come as every edge has it"),
            }
        }
        out
    }

    /// The state where runs join: `regs` in the block parameters `params`
    /// ([`Carried::param_types`]), written and not stored.
    pub(crate) fn joined(
        b: &mut FunctionBuilder<'_>,
        regs: &[(Reg, Joined)],
        params: &[Value],
    ) -> Carried {
        let mut c = Carried::default();
        let mut next = params.iter().copied();
        let mut param = || {
            next.next()
                .expect("a parameter for each of a register's parts")
        };
        for &(r, how) in regs {
            match how {
                Joined::Same(x) => {
                    c.scalars.insert(r, x);
                }
                Joined::Scalar => {
                    c.scalars.insert(r, param());
                }
                Joined::Narrow => {
                    let v = param();
                    let q = Quad {
                        lo: b.ins().uwiden_low(v),
                        hi: b.ins().uwiden_high(v),
                        low32: Some(v),
                        zext: true,
                    };
                    c.vals.insert(r, q);
                }
                Joined::Wide => {
                    let (lo, hi) = (param(), param());
                    let q = Quad {
                        lo,
                        hi,
                        low32: None,
                        zext: false,
                    };
                    c.vals.insert(r, q);
                }
            }
            c.dirty.insert(r);
        }
        c
    }

    /// Registers `vals` written, each the same in every lane (one scalar), and not
    /// stored: in place of what this state has of them.
    pub(crate) fn write_scalars(&mut self, vals: &[(Reg, Value)]) {
        for &(r, x) in vals {
            self.vals.remove(&r);
            self.scalars.insert(r, x);
            self.dirty.insert(r);
        }
    }

    /// Splits off the registers written that `now` says to store at once: gives them (as
    /// a state to store), and keeps the rest; those split off keep no value here.
    pub(crate) fn split_stores(&mut self, now: &dyn Fn(Reg) -> bool) -> Carried {
        let mut out = Carried::default();
        for r in self.dirty.clone() {
            if now(r) {
                self.dirty.remove(&r);
                if let Some(q) = self.vals.remove(&r) {
                    out.vals.insert(r, q);
                    out.dirty.insert(r);
                }
                if let Some(x) = self.scalars.remove(&r) {
                    out.scalars.insert(r, x);
                    out.dirty.insert(r);
                }
            }
        }
        out
    }

    /// The group's first lane's value of register `r`, where the group has made it.
    pub(crate) fn first_lane(&self, b: &mut FunctionBuilder<'_>, r: Reg) -> Option<Value> {
        if let Some(&x) = self.scalars.get(&r) {
            return Some(x);
        }
        let q = self.vals.get(&r)?;
        Some(b.ins().extractlane(q.lo, 0))
    }
}

/// Builds the stretch `insts` (straight, or `looping` as in [`build`]) for the one group of
/// four lanes whose slots of register 0 are at `at` (`group` bytes into each register's
/// row), going on from the values `carried` holds and leaving its own there: the next
/// run of the pass reads them where this one's end leads only to it. Every register it
/// wrote is then in `carried` as a value, for [`store_group`]. Gives the group's lanes
/// (bits 0 to 3) that take the stretch's branch, and the sites numbered so far.
pub(crate) fn group_stretch(
    b: &mut FunctionBuilder<'_>,
    env: &Env<'_>,
    (at, group): (Value, Value),
    carried: &mut Carried,
    insts: &[&Inst],
    looping: bool,
) -> (Value, u32) {
    let mut v = Vector::new(b, env, at, group);
    v.vals = std::mem::take(&mut carried.vals);
    // What was computed once for the group before the stretch replaces what it had.
    v.vals.retain(|r, _| !env.uniform.contains_key(r));
    // The registers carried as one scalar for the four lanes, as quads where read (and
    // as the scalar again at the end, where the stretch did not write them).
    let mut splats: HashMap<Reg, (Value, Value)> = HashMap::default();
    for (r, x) in std::mem::take(&mut carried.scalars) {
        if !env.uniform.contains_key(&r) {
            let q = v.splat(x);
            splats.insert(r, (x, q.lo));
            v.vals.insert(r, q);
        }
    }
    v.flushed = std::mem::take(&mut carried.flushed);
    v.raw = std::mem::take(&mut carried.raw);
    v.halves = std::mem::take(&mut carried.halves);
    v.dirty.append(&mut carried.dirty);
    let bits = if looping {
        v.looped(insts, env.live)
    } else {
        v.straight(insts)
    };
    // A register the loop wrote and nothing reads after it has no value any more.
    if looping {
        let vals = &v.vals;
        v.dirty
            .retain(|r| vals.contains_key(r) || v.uniform.contains_key(r));
    }
    // A register the same in the four lanes goes on as its one scalar: where runs join,
    // one machine register (or none, where every way brings the same), not two vectors.
    let mut scalars = HashMap::default();
    for r in v.dirty.clone() {
        let scalar = match v.vals.get(&r) {
            None => v.uniform.get(&r).copied(),
            Some(q) => splats.get(&r).filter(|s| s.1 == q.lo).map(|s| s.0),
        };
        match scalar {
            Some(x) => {
                scalars.insert(r, x);
            }
            None => {
                v.reg(r);
            }
        }
    }
    // Only what is not in the slots goes on: a value read from them is read again where
    // needed (carried, the code generator spilled it to the stack instead).
    carried.vals = std::mem::take(&mut v.vals);
    carried
        .vals
        .retain(|r, _| v.dirty.contains(r) && !scalars.contains_key(r));
    carried.scalars = scalars;
    carried.flushed = std::mem::take(&mut v.flushed);
    carried.raw = std::mem::take(&mut v.raw);
    carried.halves = std::mem::take(&mut v.halves);
    carried.dirty = std::mem::take(&mut v.dirty);
    (bits, v.sites)
}

/// Stores the registers of `carried` that the group wrote and that are `live`, into its
/// lanes' slots (of register 0 at `at`).
pub(crate) fn store_group(
    b: &mut FunctionBuilder<'_>,
    at: Value,
    carried: &Carried,
    live: &dyn Fn(Reg) -> bool,
) {
    let flags = slots();
    for &r in carried.dirty.iter().filter(|&&r| live(r)) {
        let (lo, hi) = match (carried.vals.get(&r), carried.scalars.get(&r)) {
            (Some(q), _) => (q.lo, q.hi),
            (None, Some(&x)) => {
                let v = b.ins().splat(I64X2, x);
                (v, v)
            }
            (None, None) => unreachable!("a register written has a value"),
        };
        b.ins().store(flags, lo, at, (r * 256) as i32);
        b.ins().store(flags, hi, at, (r * 256 + 16) as i32);
    }
}

/// A shuffle whose every lane's source lane is known (`shfl.sync` with immediate or known
/// lane and clamp operands, unguarded, its predicate read by nothing): the destination,
/// the operand, and each lane's source lane.
pub(crate) struct KnownShuffle {
    pub(crate) d: Reg,
    pub(crate) a: Src,
    pub(crate) source: [u8; 32],
}

/// For each part of a chain ([`chain`]), the instructions after which their one
/// destination holds the same value in all 32 lanes: a butterfly reduction's last step,
/// and what is computed from such values, immediates, parameters, the special
/// registers the same in every lane and the registers of `uniform` (the same in every lane
/// when the chain starts, read once) alone. A value's *symmetry* is the set of offsets `k`
/// (bit `log2 k`) for which every lane `i` holds what lane `i ^ k` holds. A butterfly
/// shuffle by `k` keeps its operand's symmetry; `x op y` where `y` is `x` shuffled by `k`
/// and `op` commutes (an integer or f32 add, product, min or max, an integer and, or,
/// xor) adds `k` to `x`'s (lane `i ^ k` computes `x[i ^ k] op x[i]`, the same bits: the
/// f32 operations' NaNs come out canonical); other pure unguarded instructions keep what
/// their operands share (a guard has no vector form). All five offsets: one value in the
/// warp, and the chain's groups share the first group's ([`Vector::share`]). (Values the
/// same in every group but not within one, after the steps across groups only, could be
/// shared too; sharing them kept more values live across the groups and cost `rms_norm`
/// 1% more.)
fn warp_wide(
    parts: &[(Vec<&Inst>, Option<KnownShuffle>)],
    uniform: &HashMap<Reg, Value>,
) -> Vec<HashSet<usize>> {
    const ALL: u8 = 0x1F;
    // Each register's value (numbered; a `mov` copies the number), each value's symmetry,
    // and the values made by a butterfly shuffle: of which value, by which offset.
    let mut value: HashMap<Reg, u32> = HashMap::default();
    let mut symmetry: Vec<u8> = Vec::new();
    let mut image: HashMap<u32, (u32, u8)> = HashMap::default();
    let fresh = |symmetry: &mut Vec<u8>, s: u8| {
        symmetry.push(s);
        (symmetry.len() - 1) as u32
    };
    // A source's symmetry: a register the chain has not written yet is the same in every
    // lane when it is one of `uniform`.
    let of = |value: &HashMap<Reg, u32>, symmetry: &[u8], s: &Src| match *s {
        Src::Imm(_) => ALL,
        Src::Special(sp) if sp.same_in_every_lane() => ALL,
        Src::Reg(r) => value
            .get(&r)
            .map_or(if uniform.contains_key(&r) { ALL } else { 0 }, |&v| {
                symmetry[v as usize]
            }),
        _ => 0,
    };
    let mut out = Vec::new();
    for (insts, shuffle) in parts {
        let mut complete = HashSet::default();
        for (i, inst) in insts.iter().enumerate() {
            let mut defs = Vec::new();
            (*inst).clone().visit_regs(|r, def| {
                if def && *r != SINK {
                    defs.push(*r);
                }
            });
            let new = match (&inst.op, inst.guard) {
                (Op::Mov { a: Src::Reg(a), .. }, None) if value.contains_key(a) => Some(value[a]),
                (
                    Op::Bin {
                        op:
                            BinOp::Add
                            | BinOp::MulLo
                            | BinOp::Min
                            | BinOp::Max
                            | BinOp::And
                            | BinOp::Or
                            | BinOp::Xor,
                        a: Src::Reg(x),
                        b: Src::Reg(y),
                        ..
                    },
                    None,
                ) => {
                    let (vx, vy) = (value.get(x).copied(), value.get(y).copied());
                    let step = |a: Option<u32>, b: Option<u32>| {
                        let (a, b) = (a?, b?);
                        image
                            .get(&b)
                            .filter(|&&(of, _)| of == a)
                            .map(|&(_, k)| (a, k))
                    };
                    match step(vx, vy).or_else(|| step(vy, vx)) {
                        Some((base, k)) => {
                            let s = symmetry[base as usize] | 1 << k;
                            Some(fresh(&mut symmetry, s))
                        }
                        None => None,
                    }
                }
                _ => None,
            };
            let new = new.unwrap_or_else(|| {
                let s = match (vgpu_ptx::constants::pure_sources(&inst.op), inst.guard) {
                    (Some(srcs), None) => {
                        srcs.iter().fold(ALL, |m, s| m & of(&value, &symmetry, s))
                    }
                    _ => 0,
                };
                fresh(&mut symmetry, s)
            });
            for &d in &defs {
                value.insert(d, new);
            }
            if defs.len() == 1 && symmetry[new as usize] == ALL {
                complete.insert(i);
            }
        }
        if let Some(sh) = shuffle {
            let bfly = (0..5u8).find(|&k| (0..32).all(|i| sh.source[i] as usize == i ^ 1 << k));
            let broadcast = sh.source.iter().all(|&l| l == sh.source[0]);
            let a = match sh.a {
                Src::Reg(r) => value.get(&r).copied(),
                _ => None,
            };
            let new = match (bfly, a) {
                _ if of(&value, &symmetry, &sh.a) == ALL => fresh(&mut symmetry, ALL),
                (Some(k), Some(a)) => {
                    let s = symmetry[a as usize];
                    let v = fresh(&mut symmetry, s);
                    image.insert(v, (a, k));
                    v
                }
                _ if broadcast => fresh(&mut symmetry, ALL),
                _ => fresh(&mut symmetry, 0),
            };
            if sh.d != SINK {
                value.insert(sh.d, new);
            }
        }
        out.push(complete);
    }
    out
}

/// Builds a whole run for all 32 lanes when its stretches all have vector forms and the
/// warp-wide instructions between them are shuffles with known sources (a butterfly
/// reduction's): stretch after stretch, each for the eight groups of four lanes in turn,
/// every group keeping its values in SSA values across the run; a shuffle moves the
/// groups' values between them (a group's own lanes by a lane shuffle, another group's by
/// renaming). Stores the registers `live` after the run once, at its end. Gives the lanes
/// that take the run's branch (bit `i` for lane `i`), and the sites numbered so far.
pub(crate) fn chain(
    b: &mut FunctionBuilder<'_>,
    env: &Env<'_>,
    parts: &[(Vec<&Inst>, Option<KnownShuffle>)],
) -> (Value, u32) {
    // The registers' rows come in as the parameter of a block of the chain's own: the
    // loads of the registers it never writes (`clean`) are made where their values are
    // first needed (the code generator places the chain's arithmetic there, and kept
    // where built, the loaded values of eight groups lived on until then, spilled), and
    // based on that parameter they are not merged with loads of the same slots elsewhere
    // in the function, before or after stores to them.
    let start = b.create_block();
    let ty = b.func.dfg.value_type(env.call.regs);
    let regs = b.append_block_param(start, ty);
    b.ins().jump(start, &[env.call.regs.into()]);
    b.seal_block(start);
    b.switch_to_block(start);
    let mut v = Vector::new(b, env, regs, regs);
    v.clean = clean(parts);
    let mut groups: Vec<Group> = (0..8)
        .map(|g| {
            let group = v.b.ins().iconst(I64, 32 * g);
            let at = v.b.ins().iadd(regs, group);
            Group {
                group,
                at,
                vals: HashMap::default(),
                dirty: BTreeSet::new(),
            }
        })
        .collect();
    let mut bits = v.b.ins().iconst(I32, 0);
    let wide = warp_wide(parts, env.uniform);
    for ((insts, shuffle), wide) in parts.iter().zip(wide) {
        let sites = v.sites;
        v.warp_wide = wide;
        v.shared_values.clear();
        for (g, state) in groups.iter_mut().enumerate() {
            v.sites = sites;
            v.first_group = g == 0;
            v.swap(state);
            let taken = v.straight(insts);
            if insts.last().is_some_and(|i| matches!(i.op, Op::Bra { .. })) {
                let t = v.b.ins().ishl_imm(taken, 4 * g as i64);
                bits = v.b.ins().bor(bits, t);
            }
            v.swap(state);
        }
        let Some(sh) = shuffle else { continue };
        // Each source's low halves made before the shuffle (a shuffle moves 32 bits): the
        // results have theirs at hand, and the sources' 64-bit slots need not live on.
        let mut from = Vec::new();
        for state in groups.iter_mut() {
            v.swap(state);
            let mut q = v.src(&sh.a);
            v.low32(&mut q);
            v.keep_low32(&sh.a, q);
            from.push(q);
            v.swap(state);
        }
        for (g, state) in groups.iter_mut().enumerate() {
            let lanes: Vec<usize> = (0..4).map(|k| sh.source[4 * g + k] as usize).collect();
            let pick = |v: &mut Vector<'_, '_>, l0: usize, l1: usize| {
                let half = |l: usize| {
                    let q = &from[l / 4];
                    if l % 4 < 2 {
                        q.lo
                    } else {
                        q.hi
                    }
                };
                let (x, y) = (half(l0), half(l1));
                let (i0, i1) = ((l0 % 2) as u8, (l1 % 2) as u8);
                let little = MemFlags::new().with_endianness(Endianness::Little);
                let (bx, by) = (
                    v.b.ins().bitcast(I8X16, little, x),
                    v.b.ins().bitcast(I8X16, little, y),
                );
                let second = if x == y { i1 } else { 2 + i1 };
                let pick = (8 * i0..8 * i0 + 8).chain(8 * second..8 * second + 8);
                let r = v.shuffle(bx, if x == y { bx } else { by }, pick);
                v.b.ins().bitcast(I64X2, little, r)
            };
            let lo = pick(&mut v, lanes[0], lanes[1]);
            let hi = pick(&mut v, lanes[2], lanes[3]);
            // The low halves, when the sources' are at hand in at most two vectors; and so
            // the f32 bits before NaNs were made canonical ([`Vector::raw`]).
            let low: Option<Vec<(Value, usize)>> = lanes
                .iter()
                .map(|&l| from[l / 4].low32.map(|x| (x, l % 4)))
                .collect();
            let low32 = low.and_then(|low| v.lanes32(&low));
            let raw: Option<Vec<(Value, usize)>> = lanes
                .iter()
                .map(|&l| v.raw.get(&from[l / 4].lo).map(|&x| (x, l % 4)))
                .collect();
            if let Some(raw) = raw.and_then(|raw| v.lanes32(&raw)) {
                v.raw.insert(lo, raw);
            }
            // Lanes taken from values with no f32 subnormal hold none either.
            if lanes.iter().all(|&l| v.flushed.contains(&from[l / 4].lo)) {
                v.flushed.insert(lo);
            }
            if sh.d != SINK {
                state.vals.insert(
                    sh.d,
                    Quad {
                        lo,
                        hi,
                        low32,
                        zext: false,
                    },
                );
                state.dirty.insert(sh.d);
            }
        }
    }
    let flags = slots();
    for state in groups.iter_mut() {
        v.swap(state);
        for r in v.dirty.clone().into_iter().filter(|&r| (env.live)(r)) {
            let q = v.reg(r);
            v.b.ins().store(flags, q.lo, v.at, (r * 256) as i32);
            v.b.ins().store(flags, q.hi, v.at, (r * 256 + 16) as i32);
        }
        v.swap(state);
    }
    (bits, v.sites)
}

/// The registers the parts of a chain read and never write (a shuffle writes its
/// destination).
fn clean(parts: &[(Vec<&Inst>, Option<KnownShuffle>)]) -> HashSet<Reg> {
    let (mut read, mut written) = (HashSet::default(), HashSet::default());
    for (insts, shuffle) in parts {
        for inst in insts {
            (*inst).clone().visit_regs(|r, def| {
                if def {
                    written.insert(*r);
                } else {
                    read.insert(*r);
                }
            });
        }
        if let Some(sh) = shuffle {
            written.insert(sh.d);
            if let Src::Reg(r) = sh.a {
                read.insert(r);
            }
        }
    }
    read.retain(|r| !written.contains(r));
    read
}

/// One group of four lanes in a [`chain`]: its offset in a register's row, the address of
/// its slots of register 0, its registers' values so far and those it wrote.
struct Group {
    group: Value,
    at: Value,
    vals: HashMap<Reg, Quad>,
    dirty: BTreeSet<Reg>,
}

impl<'a, 'f> Vector<'a, 'f> {
    /// A builder of the group whose slots of register 0 are at `at`, `group` bytes into
    /// each register's row, with nothing computed yet but the values of `env.uniform`
    /// (whose written registers, `env.uniform_dirty`, it stores at the end).
    fn new(b: &'a mut FunctionBuilder<'f>, env: &Env<'a>, at: Value, group: Value) -> Self {
        Vector {
            b,
            at,
            group,
            call: env.call,
            sites: env.sites,
            vals: HashMap::default(),
            uniform: env.uniform,
            normal_in: env.normal_in,
            narrow_in: env.narrow_in,
            flushed: HashSet::default(),
            raw: HashMap::default(),
            halves: HashMap::default(),
            masks: HashMap::default(),
            warp_wide: HashSet::default(),
            first_group: false,
            shared_values: HashMap::default(),
            dirty: env.uniform_dirty.clone(),
            active: None,
            index: 0,
            spans: HashMap::default(),
            spanned: HashMap::default(),
            clean: HashSet::default(),
            env_hints: env.coalesced,
            hinted: None,
        }
    }

    /// An `i32x4` of the four lanes `lanes` (each an `i32x4` and the lane of it to take),
    /// when they come from at most two vectors.
    fn lanes32(&mut self, lanes: &[(Value, usize)]) -> Option<Value> {
        let mut vs: Vec<Value> = lanes.iter().map(|x| x.0).collect();
        vs.sort_by_key(|x| x.as_u32());
        vs.dedup();
        if vs.len() > 2 {
            return None;
        }
        let little = MemFlags::new().with_endianness(Endianness::Little);
        let x = self.b.ins().bitcast(I8X16, little, vs[0]);
        let y = self
            .b
            .ins()
            .bitcast(I8X16, little, *vs.last().unwrap_or(&vs[0]));
        let bytes: Vec<u8> = lanes
            .iter()
            .flat_map(|&(val, k)| {
                let base = if val == vs[0] { 4 * k } else { 16 + 4 * k };
                (base..base + 4).map(|b| b as u8)
            })
            .collect();
        let r = self.shuffle(x, y, bytes.into_iter());
        Some(self.b.ins().bitcast(I32X4, little, r))
    }

    /// Makes `g` the group being built (its values and writes in, the last group's out):
    /// called again with the same `g`, puts things back.
    fn swap(&mut self, g: &mut Group) {
        std::mem::swap(&mut self.group, &mut g.group);
        std::mem::swap(&mut self.at, &mut g.at);
        std::mem::swap(&mut self.vals, &mut g.vals);
        std::mem::swap(&mut self.dirty, &mut g.dirty);
    }

    /// A store of `vals` (one per element) of type `ty` at `base` plus `offset` in
    /// `space`: one access for the four lanes where they are coalesced, else lane by lane
    /// (only the lanes that run it, [`Self::active`]).
    fn store(
        &mut self,
        (space, ty, offset, line): (MemSpace, Ty, i64, u32),
        base: Option<Quad>,
        vals: &[Quad],
    ) {
        let size = ty.size();
        let site = self.sites;
        if space == MemSpace::Global {
            self.sites += vals.len() as u32;
        }
        let access = (space, base, offset, line, site);
        if !(vals.len() == 1 && self.coalesced_store(access, size, vals[0])) {
            self.lane_stores(access, size, vals);
        }
    }

    /// A store under a guard (`vectorizable`, from `Jit`'s `if_convert`): made only by
    /// the lanes whose guard holds, as by those of a loop still in it, and by none of a
    /// group whose four lanes' guards are all false, which skip it (a block reduction's
    /// `if (lane == 0)` leaves one lane of the warp storing).
    fn guarded_store(&mut self, inst: &Inst, (p, neg): (Reg, bool)) {
        let Op::St {
            space,
            ty,
            n,
            a,
            addr,
        } = &inst.op
        else {
            unreachable!("`vectorizable` guards only stores");
        };
        // Everything the store reads, here, before the branch: what the store's block
        // makes is not at hand after it.
        let base = addr.base.map(|r| self.reg(r));
        let vals: Vec<Quad> = a
            .iter()
            .take(usize::from(*n))
            .map(|s| self.src(s))
            .collect();
        let zero = self.b.ins().iconst(I64, 0);
        let zero = self.b.ins().splat(I64X2, zero);
        let (mut lo, mut hi) = self.guard_mask((p, neg), zero);
        let outer = self.active;
        if let Some((alo, ahi)) = outer {
            lo = self.b.ins().band(lo, alo);
            hi = self.b.ins().band(hi, ahi);
        }
        // Whether any lane stores: from the comparison's one `i32x4` where it has one.
        let any = match (outer, self.guard_i32(p, neg)) {
            (None, Some(m)) => self.b.ins().vhigh_bits(I32, m),
            _ => {
                let any = self.b.ins().bor(lo, hi);
                self.b.ins().vhigh_bits(I32, any)
            }
        };
        let (stores, after) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(any, stores, &[], after, &[]);
        self.b.switch_to_block(stores);
        self.b.seal_block(stores);
        self.active = Some((lo, hi));
        self.store((*space, *ty, addr.offset, inst.line), base, &vals);
        self.active = outer;
        self.b.ins().jump(after, &[]);
        self.b.switch_to_block(after);
        self.b.seal_block(after);
    }

    /// Builds `inst` (no branch), with its access's hint ([`Env::coalesced`]).
    fn inst(&mut self, inst: &Inst) {
        let at = inst as *const Inst as usize;
        self.hinted = self.env_hints.get(&at).copied();
        // The PTX line, for profiles of the machine code (the `trace` log of `compile`).
        self.b
            .set_srcloc(cranelift_codegen::ir::SourceLoc::new(inst.line));
        match inst.guard {
            Some(guard) => self.guarded_store(inst, guard),
            None => self.op(&inst.op, inst.line),
        }
        self.b
            .set_srcloc(cranelift_codegen::ir::SourceLoc::default());
        self.hinted = None;
    }

    /// The instructions of a straight stretch; gives the group's lanes (bits 0 to 3) that
    /// take its branch.
    fn straight(&mut self, insts: &[&Inst]) -> Value {
        let mut bits = self.b.ins().iconst(I32, 0);
        self.spans = spans(insts);
        for (i, inst) in insts.iter().enumerate() {
            self.index = i;
            match &inst.op {
                Op::Bra { .. } => {
                    bits = match inst.guard {
                        None => self.b.ins().iconst(I32, 0xF),
                        Some((p, neg)) => self.guard_bits(p, neg),
                    };
                }
                _ => {
                    self.inst(inst);
                    self.share(i, inst);
                }
            }
        }
        bits
    }

    /// After instruction `i` of a chain's part, where its destination holds one value in
    /// the whole warp: the first group keeps its value, and the others take it instead of
    /// theirs (the same bits), so that what they compute from it is the same code on the
    /// same values, which the code generator makes once.
    fn share(&mut self, i: usize, inst: &Inst) {
        if !self.warp_wide.contains(&i) {
            return;
        }
        let mut d = None;
        inst.clone().visit_regs(|r, def| {
            if def && *r != SINK {
                d = Some(*r);
            }
        });
        let Some(d) = d else { return };
        if self.first_group {
            if let Some(&q) = self.vals.get(&d) {
                self.shared_values.insert(i, q);
            }
        } else if let Some(&q) = self.shared_values.get(&i) {
            self.vals.insert(d, q);
        }
    }

    /// The iterations of the group's lanes through a stretch that ends with a branch back
    /// to its start: see [`build`]. The registers the stretch writes that are `live` after
    /// its branch (read in a later pass before they are written, or after the loop) are
    /// carried around the loop in block parameters; the others are temporaries of one
    /// pass. The first pass is peeled off: every lane makes it, so it needs no mask of
    /// the lanes still iterating and carries nothing around the loop (ggml's loops mostly
    /// end after one pass, and the loop's carried registers outnumber the machine's).
    /// Gives the lanes that take the branch when they leave.
    fn looped(&mut self, insts: &[&Inst], live: &dyn Fn(Reg) -> bool) -> Value {
        let Some((last, body)) = insts.split_last() else {
            unreachable!("a loop ends with its branch")
        };
        // The registers the loop writes are carried around it. Those it only reads keep
        // the values they had before it, in their slots: each pass, and the code after the
        // loop, loads them where it first reads them (kept in machine registers across the
        // passes, they were spilled to the stack at every group, and reloaded from there).
        let mut written = BTreeSet::new();
        for i in insts {
            (*i).clone().visit_regs(|r, def| {
                if def && *r != SINK {
                    written.insert(*r);
                }
            });
        }
        let regs: Vec<Reg> = written.iter().copied().filter(|&r| live(r)).collect();
        let head = self.b.create_block();
        let exit = self.b.create_block();
        let ones = self.splat_of(I64X2, -1);
        let none = self.splat_of(I64X2, 0);
        for _ in 0..2 * regs.len() + 4 {
            self.b.append_block_param(head, I64X2);
        }
        self.b.append_block_param(head, I32);
        for _ in 0..2 * regs.len() + 2 {
            self.b.append_block_param(exit, I64X2);
        }
        // The first pass, by every lane; the same accesses use the same sites in both
        // copies of the body.
        let sites = self.sites;
        self.vals.retain(|r, _| !self.uniform.contains_key(r));
        // Registers an earlier run of a pass wrote and has not stored, which the loop only
        // reads: their values from before it, in every pass and after it.
        let kept: Vec<(Reg, Quad)> = self
            .vals
            .iter()
            .filter(|(r, _)| self.dirty.contains(r) && !written.contains(r))
            .map(|(&r, &q)| (r, q))
            .collect();
        self.spans = spans(body);
        for (i, inst) in body.iter().enumerate() {
            self.index = i;
            self.inst(inst);
        }
        self.sites = sites;
        let (clo, chi) = self.taken(last, ones, none);
        let mut after = Vec::new();
        for &r in &regs {
            let q = self.reg(r);
            after.extend([q.lo, q.hi]);
        }
        // On into the loop with the lanes that take the branch (lanes active, lanes that
        // took the branch when they left, passes so far), or out with none.
        let mut back = after.clone();
        let mut leave = after;
        const _: () = assert!(crate::codegen::LOOP_BUDGET > 1);
        let one = self.b.ins().iconst(I32, 1);
        back.extend([clo, chi, none, none, one]);
        leave.extend([none, none]);
        let any = self.b.ins().bor(clo, chi);
        let any = self.b.ins().vhigh_bits(I32, any);
        let back: Vec<BlockArg> = back.into_iter().map(BlockArg::from).collect();
        let leave: Vec<BlockArg> = leave.into_iter().map(BlockArg::from).collect();
        self.b.ins().brif(any, head, &back, exit, &leave);
        self.b.switch_to_block(head);
        let params = self.b.block_params(head).to_vec();
        let n = 2 * regs.len();
        let old: Vec<Quad> = params[..n]
            .chunks(2)
            .map(|c| Quad {
                lo: c[0],
                hi: c[1],
                low32: None,
                zext: false,
            })
            .collect();
        let (alo, ahi, tlo, thi, iter) = (
            params[n],
            params[n + 1],
            params[n + 2],
            params[n + 3],
            params[n + 4],
        );
        self.vals = regs.iter().copied().zip(old.iter().copied()).collect();
        self.vals.extend(kept.iter().copied());
        // Each pass starts with the values computed once for the warp, as the lane code's:
        // the instructions that computed them come before any other access to their
        // registers in the loop (`codegen::uniform`), even those the loop writes later.
        self.vals.retain(|r, _| !self.uniform.contains_key(r));
        self.flushed.clear();
        self.raw.clear();
        self.active = Some((alo, ahi));
        for (i, inst) in body.iter().enumerate() {
            self.index = i;
            self.inst(inst);
        }
        self.active = None;
        self.spans.clear();
        let (clo, chi) = self.taken(last, ones, none);
        let next = self.b.ins().iadd_imm(iter, 1);
        let more =
            self.b
                .ins()
                .icmp_imm(IntCC::UnsignedLessThan, next, crate::codegen::LOOP_BUDGET);
        let more = self.b.ins().select(more, ones, none);
        let again = [(alo, clo), (ahi, chi)].map(|(a, c)| {
            let a = self.b.ins().band(a, c);
            self.b.ins().band(a, more)
        });
        // A lane leaving now took the branch where its guard held (the budget ran out).
        let took = [(alo, clo, again[0], tlo), (ahi, chi, again[1], thi)].map(|(a, c, g, t)| {
            let leaving = self.b.ins().band_not(a, g);
            let took = self.b.ins().band(leaving, c);
            self.b.ins().bor(t, took)
        });
        let mut out = Vec::new();
        for (&r, o) in regs.iter().zip(&old) {
            let q = self.reg(r);
            out.push(self.b.ins().bitselect(alo, q.lo, o.lo));
            out.push(self.b.ins().bitselect(ahi, q.hi, o.hi));
        }
        let any = self.b.ins().bor(again[0], again[1]);
        let any = self.b.ins().vhigh_bits(I32, any);
        let mut back = out.clone();
        let mut leave = out;
        back.extend([again[0], again[1], took[0], took[1], next]);
        leave.extend([took[0], took[1]]);
        let back: Vec<BlockArg> = back.into_iter().map(BlockArg::from).collect();
        let leave: Vec<BlockArg> = leave.into_iter().map(BlockArg::from).collect();
        self.b.ins().brif(any, head, &back, exit, &leave);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        let params = self.b.block_params(exit).to_vec();
        self.vals = regs
            .iter()
            .copied()
            .zip(params[..n].chunks(2).map(|c| Quad {
                lo: c[0],
                hi: c[1],
                low32: None,
                zext: false,
            }))
            .collect();
        self.vals.extend(kept);
        self.flushed.clear();
        self.raw.clear();
        let lo = self.b.ins().vhigh_bits(I32, params[n]);
        let hi = self.b.ins().vhigh_bits(I32, params[n + 1]);
        let hi = self.b.ins().ishl_imm(hi, 2);
        self.b.ins().bor(lo, hi)
    }

    /// Each lane's branch `last`: taken (all ones) where its guard holds.
    fn taken(&mut self, last: &Inst, ones: Value, none: Value) -> (Value, Value) {
        match last.guard {
            None => (ones, ones),
            Some(guard) => self.guard_mask(guard, none),
        }
    }

    /// Each lane's guard `p` (`!p` with `neg`) as two `i64x2` masks, all ones where it
    /// holds (`none`: an `i64x2` of zeros).
    fn guard_mask(&mut self, (p, neg): (Reg, bool), none: Value) -> (Value, Value) {
        if let Some(m) = self.guard_i32(p, neg) {
            return (self.b.ins().swiden_low(m), self.b.ins().swiden_high(m));
        }
        let q = self.reg(p);
        let cc = if neg { IntCC::Equal } else { IntCC::NotEqual };
        (
            self.b.ins().icmp(cc, q.lo, none),
            self.b.ins().icmp(cc, q.hi, none),
        )
    }

    /// Guard `p` (`!p` with `neg`) as one `i32x4` mask, all ones where it holds, where a
    /// 32-bit comparison of the stretch wrote `p` (`masks`) or its value fits in 32 bits
    /// ([`Self::unset_i32`]).
    fn guard_i32(&mut self, p: Reg, neg: bool) -> Option<Value> {
        let q = self.reg(p);
        if let Some(&m) = self.masks.get(&q.lo) {
            return Some(if neg { self.b.ins().bnot(m) } else { m });
        }
        let unset = self.unset_i32(p, q)?;
        Some(if neg { unset } else { self.b.ins().bnot(unset) })
    }

    /// Where predicate `p`'s value `q` holds 32-bit values (0 or 1: [`Quad::zext`]), the
    /// lanes where it is 0 as one `i32x4` mask (all ones there), from its low halves
    /// alone: one comparison where its two 64-bit halves take two, each a comparison and
    /// a negation.
    fn unset_i32(&mut self, p: Reg, mut q: Quad) -> Option<Value> {
        if !q.zext {
            return None;
        }
        let v = self.low32(&mut q);
        self.keep_low32(&Src::Reg(p), q);
        let zero = self.splat_of(I32X4, 0);
        Some(self.b.ins().icmp(IntCC::Equal, v, zero))
    }

    fn splat(&mut self, x: Value) -> Quad {
        let v = self.b.ins().splat(I64X2, x);
        Quad {
            lo: v,
            hi: v,
            low32: None,
            zext: false,
        }
    }

    fn reg(&mut self, r: Reg) -> Quad {
        if let Some(q) = self.vals.get(&r) {
            return *q;
        }
        let q = match self.uniform.get(&r) {
            Some(&x) => self.splat(x),
            None => {
                let mut f = slots();
                if self.clean.contains(&r) {
                    f = f.with_readonly().with_can_move();
                }
                let lo = self.b.ins().load(I64X2, f, self.at, (r * 256) as i32);
                let hi = self.b.ins().load(I64X2, f, self.at, (r * 256 + 16) as i32);
                if self.normal_in.contains(&r) {
                    self.flushed.insert(lo);
                }
                Quad {
                    lo,
                    hi,
                    low32: None,
                    zext: self.narrow_in.contains(&r),
                }
            }
        };
        self.vals.insert(r, q);
        q
    }

    /// The four low halves of operand `s`, kept with its register for later uses.
    fn src_f32(&mut self, s: &Src, ftz: bool) -> Value {
        let mut q = self.src(s);
        let v = self.f32_in(&mut q, ftz);
        self.keep_low32(s, q);
        v
    }

    /// Keeps the low halves made of operand `s`'s value `q` with its register.
    fn keep_low32(&mut self, s: &Src, q: Quad) {
        if let Src::Reg(r) = s {
            if let Some(e) = self.vals.get_mut(r) {
                if e.lo == q.lo && e.hi == q.hi {
                    e.low32 = e.low32.or(q.low32);
                }
            }
        }
    }

    fn src(&mut self, s: &Src) -> Quad {
        match *s {
            Src::Reg(r) => self.reg(r),
            Src::Imm(x) => {
                let v = self.b.ins().iconst(I64, x as i64);
                let mut q = self.splat(v);
                let low = self.b.ins().iconst(I32, i64::from(x as u32));
                q.low32 = Some(self.b.ins().splat(I32X4, low));
                q.zext = x >> 32 == 0;
                q
            }
            Src::Special(Special::Tid(d)) => {
                // tid[d][lane] for the group's four lanes: 16 bytes per group.
                let off = self.b.ins().ushr_imm(self.group, 1);
                let p = self.b.ins().iadd(self.call.specials, off);
                let at = offset_of!(Specials, tid) + 128 * usize::from(d);
                let v = self.b.ins().load(I32X4, slots(), p, at as i32);
                self.widen(v)
            }
            Src::Special(Special::LaneId) => {
                let first = self.b.ins().ushr_imm(self.group, 3);
                let first = self.b.ins().ireduce(I32, first);
                let first = self.b.ins().splat(I32X4, first);
                let steps = self.constant(&[0u32, 1, 2, 3]);
                let v = self.b.ins().iadd(first, steps);
                self.widen(v)
            }
            Src::Special(sp) => {
                let Some(at) = crate::codegen::warp_special(sp) else {
                    unreachable!("a vector stretch reads no other special register")
                };
                let x = self.b.ins().uload32(slots(), self.call.specials, at);
                self.splat(x)
            }
            // `vectorizable` admits no other operand.
            _ => unreachable!("a vector stretch reads only registers, immediates, %tid, %laneid"),
        }
    }

    fn set(&mut self, d: Reg, q: Quad) {
        if d != SINK {
            self.vals.insert(d, q);
            self.dirty.insert(d);
        }
    }

    /// The lanes (bit `i` for the group's lane `i`) where predicate `p` is true, or false
    /// with `neg`.
    fn guard_bits(&mut self, p: Reg, neg: bool) -> Value {
        let q = self.reg(p);
        if let Some(&m) = self.masks.get(&q.lo) {
            let bits = self.b.ins().vhigh_bits(I32, m);
            return if neg {
                self.b.ins().bxor_imm(bits, 0xF)
            } else {
                bits
            };
        }
        if let Some(unset) = self.unset_i32(p, q) {
            let bits = self.b.ins().vhigh_bits(I32, unset);
            return if neg {
                bits
            } else {
                self.b.ins().bxor_imm(bits, 0xF)
            };
        }
        let zero = self.b.ins().iconst(I64, 0);
        let zero = self.b.ins().splat(I64X2, zero);
        let cc = if neg { IntCC::Equal } else { IntCC::NotEqual };
        let lo = self.b.ins().icmp(cc, q.lo, zero);
        let hi = self.b.ins().icmp(cc, q.hi, zero);
        let lo = self.b.ins().vhigh_bits(I32, lo);
        let hi = self.b.ins().vhigh_bits(I32, hi);
        let hi = self.b.ins().ishl_imm(hi, 2);
        self.b.ins().bor(lo, hi)
    }

    /// The low 32 bits of the four lanes.
    fn low32(&mut self, q: &mut Quad) -> Value {
        if let Some(v) = q.low32 {
            return v;
        }
        let little = MemFlags::new().with_endianness(Endianness::Little);
        let lo = self.b.ins().bitcast(I8X16, little, q.lo);
        let hi = self.b.ins().bitcast(I8X16, little, q.hi);
        let v = self.shuffle(lo, hi, [0u8, 8, 16, 24].into_iter().flat_map(|k| k..k + 4));
        let v = self.b.ins().bitcast(I32X4, little, v);
        q.low32 = Some(v);
        v
    }

    /// Four 32-bit lanes zero-extended into their 64-bit slots.
    fn widen(&mut self, v: Value) -> Quad {
        let lo = self.b.ins().uwiden_low(v);
        let hi = self.b.ins().uwiden_high(v);
        Quad {
            lo,
            hi,
            low32: Some(v),
            zext: true,
        }
    }

    /// The bits of four f32 with subnormals flushed to a zero of their sign: where the
    /// exponent is 0, all but the sign bit cleared.
    fn flush(&mut self, x: Value) -> Value {
        let exp = self.b.ins().iconst(I32, 0x7F80_0000);
        let exp = self.b.ins().splat(I32X4, exp);
        let exp = self.b.ins().band(x, exp);
        let zero = self.b.ins().iconst(I32, 0);
        let zero = self.b.ins().splat(I32X4, zero);
        let sub = self.b.ins().icmp(IntCC::Equal, exp, zero);
        let magnitude = self.b.ins().ushr_imm(sub, 1);
        self.b.ins().band_not(x, magnitude)
    }

    /// An f32 operand: four low halves, flushed under `.ftz` unless known normal.
    fn f32_in(&mut self, q: &mut Quad, ftz: bool) -> Value {
        let mut x = self.low32(q);
        if ftz && !self.flushed.contains(&q.lo) {
            x = self.flush(x);
        }
        let little = MemFlags::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(F32X4, little, x)
    }

    /// Four f32 results as register values: flushed under `.ftz`, NaNs made the
    /// canonical NaN, as the scalar code's.
    fn f32_out(&mut self, r: Value, ftz: bool) -> Quad {
        let nan = self.b.ins().fcmp(FloatCC::Unordered, r, r);
        let little = MemFlags::new().with_endianness(Endianness::Little);
        let mut bits = self.b.ins().bitcast(I32X4, little, r);
        if ftz {
            bits = self.flush(bits);
        }
        let raw = bits;
        let canonical = self.b.ins().iconst(I32, i64::from(CANONICAL_NAN_F32));
        let canonical = self.b.ins().splat(I32X4, canonical);
        let bits = self.b.ins().bitselect(nan, canonical, bits);
        let q = self.widen(bits);
        if ftz {
            self.flushed.insert(q.lo);
        }
        self.raw.insert(q.lo, raw);
        q
    }

    /// The four low halves of operand `s` for an operation whose result is the same
    /// whichever NaN an operand is (f32 add, sub, mul, div, `fma`, `min`, `max`, whose NaN
    /// results are made canonical, comparisons, conversions to integers, and `ex2` told
    /// so): where f32 arithmetic of the stretch made it, its bits before their NaNs were
    /// made canonical, so that the canonical form need not be made where nothing else
    /// reads it.
    fn src_f32_any(&mut self, s: &Src, ftz: bool) -> Value {
        self.src_f32_raw(s, ftz).0
    }

    /// [`Self::src_f32_any`]'s value, and whether it is those bits (its NaNs not yet made
    /// canonical).
    fn src_f32_raw(&mut self, s: &Src, ftz: bool) -> (Value, bool) {
        let q = self.src(s);
        let Some(&raw) = self.raw.get(&q.lo) else {
            return (self.src_f32(s, ftz), false);
        };
        let mut x = raw;
        if ftz && !self.flushed.contains(&q.lo) {
            x = self.flush(x);
        }
        let little = MemFlags::new().with_endianness(Endianness::Little);
        (self.b.ins().bitcast(F32X4, little, x), true)
    }

    /// `max` (or `min`) of four pairs of f32 as the scalar code's: a NaN gives the other
    /// operand, and +0 is above -0. The host's `maxps` (`minps`) gives its second operand
    /// where either is a NaN or they are equal: made both ways round, the two agree but
    /// where the operands are zeros of both signs (their bits' and, for `max`, is +0; or,
    /// for `min`, -0) or one is a NaN (`x` a NaN: `y` first; `y` a NaN: `x` first). So
    /// for `max` the and of the two, each first or'd with all ones where the operand the
    /// other gives for a NaN is one (`x` a NaN: `y` and ones; `y` a NaN: ones and `x`; two
    /// NaNs: all ones, a NaN, which [`Self::f32_out`] makes the canonical one); for `min`
    /// the or of the two, each first cleared there, and all ones where both are NaNs. No
    /// selection: a blend is three micro-operations and as many cycles on recent x86
    /// cores, twice in each step of a reduction's chain.
    fn min_max(&mut self, max: bool, x: Value, y: Value) -> Value {
        let little = MemFlags::new().with_endianness(Endianness::Little);
        // `bitselect(a < b, b, a)` (max) or `bitselect(a < b, a, b)` (min): the code
        // generator makes it one `maxps a, b` (`minps a, b`).
        let host = |v: &mut Self, a: Value, b: Value| {
            let (lt, pick) = if max {
                ((b, a), (a, b))
            } else {
                ((a, b), (a, b))
            };
            let less = v.b.ins().fcmp(FloatCC::LessThan, lt.0, lt.1);
            let less = v.b.ins().bitcast(F32X4, little, less);
            let r = v.b.ins().bitselect(less, pick.0, pick.1);
            v.b.ins().bitcast(I32X4, little, r)
        };
        let first = host(self, x, y);
        let second = host(self, y, x);
        let nx = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        let ny = self.b.ins().fcmp(FloatCC::Unordered, y, y);
        let r = if max {
            let first = self.b.ins().bor(first, ny);
            let second = self.b.ins().bor(second, nx);
            self.b.ins().band(first, second)
        } else {
            let first = self.b.ins().band_not(first, ny);
            let second = self.b.ins().band_not(second, nx);
            let r = self.b.ins().bor(first, second);
            let nans = self.b.ins().band(nx, ny);
            self.b.ins().bor(r, nans)
        };
        self.b.ins().bitcast(F32X4, little, r)
    }

    /// `1 / sqrt(x)` of four f32, each computed in f64 and rounded once to f32.
    fn rsqrt(&mut self, x: Value) -> Value {
        let little = MemFlags::new().with_endianness(Endianness::Little);
        let bytes = self.b.ins().bitcast(I8X16, little, x);
        let high = self.shuffle(bytes, bytes, (8u8..16).chain(8..16));
        let high = self.b.ins().bitcast(F32X4, little, high);
        let one = self.b.ins().f64const(1.0);
        let one = self.b.ins().splat(F64X2, one);
        let [lo, hi] = [x, high].map(|h| {
            let h = self.b.ins().fvpromote_low(h);
            let s = self.b.ins().sqrt(h);
            let r = self.b.ins().fdiv(one, s);
            let r = self.b.ins().fvdemote(r);
            self.b.ins().bitcast(I8X16, little, r)
        });
        let r = self.shuffle(lo, hi, (0u8..8).chain(16..24));
        self.b.ins().bitcast(F32X4, little, r)
    }

    /// The bytes `pick` of `x` (0 to 15) and `y` (16 to 31), two `i8x16`.
    fn shuffle(&mut self, x: Value, y: Value, pick: impl Iterator<Item = u8>) -> Value {
        let pick: Vec<u8> = pick.collect();
        // Every byte of `x` in its place (a shuffle between groups, which only renames): no
        // instruction.
        if pick.iter().copied().eq(0..16) {
            return x;
        }
        let pick = ConstantData::from(pick);
        let pick = self.b.func.dfg.immediates.push(pick);
        self.b.ins().shuffle(x, y, pick)
    }

    fn checked(&mut self) -> Checked<'_, 'f> {
        Checked {
            b: self.b,
            ptr: self.call.ptr,
            loads: self.call.loads,
            find: self.call.find,
            generic: false,
        }
    }

    /// The device address of element `e` of lane `k`'s access of `size` bytes at its base
    /// register's value (or 0) plus `offset`, and whether the lane runs it.
    fn lane_access(
        &mut self,
        base: Option<Quad>,
        (offset, k, e): (i64, usize, usize),
        size: u32,
    ) -> (Value, Value) {
        let off = offset.wrapping_add(e as i64 * i64::from(size));
        let at = match base {
            Some(q) => {
                let half = if k < 2 { q.lo } else { q.hi };
                let x = self.b.ins().extractlane(half, (k % 2) as u8);
                self.b.ins().iadd_imm(x, off)
            }
            None => self.b.ins().iconst(I64, off),
        };
        // Every lane of a whole-warp stretch runs it, but those that left a loop.
        let on = match self.active {
            None => self.b.ins().iconst(I64, 1),
            Some((lo, hi)) => {
                let half = if k < 2 { lo } else { hi };
                self.b.ins().extractlane(half, (k % 2) as u8)
            }
        };
        (at, on)
    }

    /// The host address of element `e` of lane `k`'s access (a `store` or a load): checked
    /// as the lane code checks it, a global access at the slot of `site + e`. `row` holds
    /// what the instruction's earlier accesses loaded of the sites' slots, or of the shared
    /// memory's bounds ([`Checked::find_in_row`], [`Checked::shared_in_row`]).
    #[allow(clippy::too_many_arguments)]
    fn lane_address(
        &mut self,
        space: MemSpace,
        base: Option<Quad>,
        (offset, k, e): (i64, usize, usize),
        size: u32,
        line: u32,
        (site, store): (u32, bool),
        row: &mut Row,
    ) -> Value {
        let (at, on) = self.lane_access(base, (offset, k, e), size);
        let mut c = self.checked();
        c.generic = space == MemSpace::Generic;
        if space == MemSpace::Shared {
            c.shared_in_row(&mut row.shared, at, size, line, on, store)
        } else {
            c.find_in_row(&mut row.sites, site + e as u32, at, size, line, on, store)
        }
    }

    /// The check of a span of `count` accesses of `size` bytes from offset `lo` of the
    /// four lanes' base `q`, against site `site`'s slot ([`Checked::span`]): whether every
    /// lane's is inside, each lane's host address of offset `lo`, and `lo`.
    fn span_check(
        &mut self,
        q: Quad,
        lo: i64,
        count: u64,
        size: u32,
        site: u32,
    ) -> Option<Spanned> {
        if count * u64::from(size) == 8
            && self.hinted == Some(8)
            && (site as usize) < crate::direct::SITES
        {
            return Some(self.coalesced_span(q, lo, count, size, site));
        }
        let ats: Vec<Value> = (0..4)
            .map(|k| {
                let half = if k < 2 { q.lo } else { q.hi };
                let x = self.b.ins().extractlane(half, (k % 2) as u8);
                self.b.ins().iadd_imm(x, lo)
            })
            .collect();
        let mut c = self.checked();
        let (all, hosts) = c.span(site, &ats, size, count)?;
        Some(Spanned {
            all,
            hosts: [hosts[0], hosts[1], hosts[2], hosts[3]],
            lo,
            words: None,
            coalesced: false,
        })
    }

    /// [`Self::span_check`] for spans of 8 bytes whose base the analysis finds most likely
    /// 8 bytes apart from lane to lane (a quantized block's quants, two 32-bit values a
    /// thread, read as four 16-bit loads): whether the four lanes' spans are one after the
    /// other (tested) and the 32 bytes from lane 0's inside, as one run of `4 * count`
    /// accesses of `size` bytes. Where they are not, the loads go lane by lane.
    fn coalesced_span(&mut self, q: Quad, lo: i64, count: u64, size: u32, site: u32) -> Spanned {
        let (together, at) = self.contiguous(MemSpace::Global, q, lo, 8);
        let (hit, host) = self.run_check(MemSpace::Global, at, (size, 4 * count), site);
        let all = self.b.ins().band(together, hit);
        let hosts = [0, 8, 16, 24].map(|k| self.b.ins().iadd_imm(host, k));
        Spanned {
            all,
            hosts,
            lo,
            words: None,
            coalesced: true,
        }
    }

    /// The form of a one-element access of `size` bytes in `space` by the four lanes at
    /// global site `site` ([`Self::coalesced_load`], [`Self::coalesced_store`]): how far
    /// apart the analysis finds their addresses most likely are ([`Env::coalesced`]): the
    /// access's size (4 or 8 bytes: coalesced), 8 for a load of 4 bytes (every other 4
    /// bytes), or 0 (a load of one place); `None` for none,
    /// and in a state space other than global (a site with a slot) and shared memory. (In
    /// a loop, the four lanes must also all be running it: [`Self::contiguous`].)
    fn coalescable(&self, space: MemSpace, n: usize, size: u32, site: u32) -> Option<u32> {
        let at = match space {
            MemSpace::Global => (site as usize) < crate::direct::SITES,
            MemSpace::Shared => true,
            _ => false,
        };
        let step = self.hinted?;
        let sized = match step {
            0 => size.is_power_of_two() && size <= 8,
            // 8 bytes one after the other, or every other 4 bytes (a thread's first or
            // second of two values).
            8 => size == 4 || size == 8,
            _ => step == u64::from(size) && size == 4,
        };
        (at && sized && n == 1).then_some(step as u32)
    }

    /// [`Self::contiguous`] for a shared access whose address register holds 32-bit values
    /// (zero-extended: made so in the stretch, or known to fit in 32 bits where it starts,
    /// `Env::narrow_in`), tested on their `i32x4`: each lane's value less its place times
    /// `size` equal to lane 0's (five instructions where the 64-bit test takes nine).
    /// Where that holds in 32 bits but not in 64 (lane 0's value within `3 * size` of
    /// 2^32, the others past it), lane 0's address (over 2^31, with `offset` under 2^30)
    /// is past any block's shared memory (`vgpu_ptx::exec::MAX_SHARED`, 228 KiB), so the
    /// range check that follows fails and the lanes go one by one.
    fn contiguous32(&mut self, q: Quad, offset: i64, size: u32) -> Option<(Value, Value)> {
        if !(q.zext && offset.unsigned_abs() < 1 << 30 && size > 0) || self.active.is_some() {
            return None;
        }
        let mut q = q;
        let low = self.low32(&mut q);
        let step = u64::from(size);
        let places = self.constant(&[0, 1, 2, 3].map(|k| (k * step) as u32));
        let less = self.b.ins().isub(low, places);
        let b0 = self.b.ins().extractlane(low, 0);
        // Lane 0's value in every lane, by one shuffle (a splat of the extracted lane
        // takes three instructions).
        let little = MemFlags::new().with_endianness(Endianness::Little);
        let bytes = self.b.ins().bitcast(I8X16, little, low);
        let first = self.shuffle(bytes, bytes, (0..4).flat_map(|_| 0..4));
        let first = self.b.ins().bitcast(I32X4, little, first);
        let same = self.b.ins().icmp(IntCC::Equal, less, first);
        let signs = self.b.ins().vhigh_bits(I32, same);
        let all = self.b.ins().icmp_imm(IntCC::Equal, signs, 0xF);
        let b0 = self.b.ins().uextend(I64, b0);
        Some((all, self.b.ins().iadd_imm(b0, offset)))
    }

    /// Whether the four lanes' addresses (`q` plus `offset`) in `space` are `size` bytes
    /// apart one after the other (the lanes of a coalesced access, as a GPU kernel mostly
    /// makes them; with `size` 0, one place), and all four lanes make the access (in a
    /// loop, all are still in it), and lane 0's address. In shared memory by 32-bit
    /// addresses, on their `i32x4` ([`Self::contiguous32`]).
    fn contiguous(&mut self, space: MemSpace, q: Quad, offset: i64, size: u32) -> (Value, Value) {
        if space == MemSpace::Shared {
            if let Some(r) = self.contiguous32(q, offset, size) {
                return r;
            }
        }
        let little = MemFlags::new().with_endianness(Endianness::Little);
        let b0 = self.b.ins().extractlane(q.lo, 0);
        // Each lane's address less its place times `size`: the four are one after the
        // other when these are all equal (to lane 0's address), each half equal to the
        // other and each half's two lanes to each other.
        let step = u64::from(size);
        let less = |v: &mut Self, half: Value, k: u64| {
            if step == 0 {
                return half;
            }
            let bytes: Vec<u8> = [k * step, (k + 1) * step]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            let c = v.b.func.dfg.constants.insert(ConstantData::from(bytes));
            let places = v.b.ins().vconst(I64X2, c);
            v.b.ins().isub(half, places)
        };
        let lo = less(self, q.lo, 0);
        let hi = less(self, q.hi, 2);
        let across = self.b.ins().icmp(IntCC::Equal, lo, hi);
        let bytes = self.b.ins().bitcast(I8X16, little, lo);
        let swapped = self.shuffle(bytes, bytes, (8..16).chain(0..8));
        let swapped = self.b.ins().bitcast(I64X2, little, swapped);
        let within = self.b.ins().icmp(IntCC::Equal, lo, swapped);
        let mut all = self.b.ins().band(across, within);
        if let Some((lo, hi)) = self.active {
            let running = self.b.ins().band(lo, hi);
            all = self.b.ins().band(all, running);
        }
        // Both lanes' sign bits set (`movmskpd`, where a test for all ones takes three
        // instructions).
        let signs = self.b.ins().vhigh_bits(I32, all);
        let all = self.b.ins().icmp_imm(IntCC::Equal, signs, 3);
        (all, self.b.ins().iadd_imm(b0, offset))
    }

    /// Whether the `count` accesses of `size` bytes from `at` one after the other are
    /// inside and aligned (global: the allocation of site `site`'s slot, as
    /// [`Checked::span`] checks; shared: the block's shared memory), and the host address
    /// of the first.
    fn run_check(
        &mut self,
        space: MemSpace,
        at: Value,
        (size, count): (u32, u64),
        site: u32,
    ) -> (Value, Value) {
        let mut c = self.checked();
        match space {
            MemSpace::Shared => c.shared_span(at, size, count),
            _ => match c.span(site, &[at], size, count) {
                Some((all, hosts)) => (all, hosts[0]),
                // `coalescable` admitted only sites with slots.
                None => unreachable!("a global site with no slot"),
            },
        }
    }

    /// A one-element load by the four lanes as one access where the analysis finds them
    /// most likely coalesced or at one place ([`Self::coalescable`]) and a test finds them
    /// so and inside: coalesced (4 or 8 bytes), one vector access and one check for the
    /// run of bytes, no lane's value gathered; at one place, one load and one check for
    /// the four. Else lane by lane as [`Self::checked_loads`] makes it (where a lane's
    /// access faults, or the lanes are elsewhere). `None`, with nothing built, where it
    /// has no such form.
    fn coalesced_load(
        &mut self,
        (space, base, offset, line, site): (MemSpace, Option<Quad>, i64, u32, u32),
        n: usize,
        size: u32,
        signed: bool,
    ) -> Option<Quad> {
        let q = base?;
        let step = self.coalescable(space, n, size, site)?;
        let (together, at) = self.contiguous(space, q, offset, step);
        let (check, fast, slow, join) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        // A 4-byte value comes as its `i32x4` alone, widened after the join where read so:
        // a block parameter nothing reads still costs its making on every path.
        if size == 4 {
            self.b.append_block_param(join, I32X4);
        } else {
            self.b.append_block_param(join, I64X2);
            self.b.append_block_param(join, I64X2);
        }
        self.b.ins().brif(together, check, &[], slow, &[]);
        self.b.switch_to_block(check);
        self.b.seal_block(check);
        // The accesses of `size` bytes from the first lane's to the last lane's.
        let count = u64::from(3 * step / size + 1);
        let (hit, host) = self.run_check(space, at, (size, count), site);
        self.b.ins().brif(hit, fast, &[], slow, &[]);
        self.b.switch_to_block(fast);
        self.b.seal_block(fast);
        // Aligned to the elements' size only.
        let f = MemFlags::new().with_notrap();
        let args = if step == 0 {
            let mut c = self.checked();
            let x = c.load(f, host, 0, size, signed);
            if size == 4 {
                let low = self.b.ins().ireduce(I32, x);
                vec![self.b.ins().splat(I32X4, low)]
            } else {
                let both = self.b.ins().splat(I64X2, x);
                vec![both, both]
            }
        } else if size == 4 {
            let v = if step == 4 {
                self.b.ins().load(I32X4, f, host, 0)
            } else {
                // Lanes 0 and 1 at bytes 0 and 8, lanes 2 and 3 at 16 and 24: read from 0
                // and from 12 (28 bytes, those checked), each lane's 4 bytes picked.
                let little = MemFlags::new().with_endianness(Endianness::Little);
                let w0 = self.b.ins().load(I8X16, f, host, 0);
                let w1 = self.b.ins().load(I8X16, f, host, 12);
                let pick = (0u8..4).chain(8..12).chain(20..24).chain(28..32);
                let v = self.shuffle(w0, w1, pick);
                self.b.ins().bitcast(I32X4, little, v)
            };
            vec![v]
        } else {
            let lo = self.b.ins().load(I64X2, f, host, 0);
            let hi = self.b.ins().load(I64X2, f, host, 16);
            vec![lo, hi]
        };
        let args: Vec<BlockArg> = args.into_iter().map(BlockArg::from).collect();
        self.b.ins().jump(join, &args);
        self.b.switch_to_block(slow);
        self.b.seal_block(slow);
        let vals = self.checked_loads((space, base, offset, line, site), 1, size, signed);
        let args = if size == 4 {
            vec![self.lanes_i32(vals[0])]
        } else {
            self.halves(&vals)
        };
        let args: Vec<BlockArg> = args.into_iter().map(BlockArg::from).collect();
        self.b.ins().jump(join, &args);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        let p = self.b.block_params(join).to_vec();
        Some(match p[..] {
            [v] => self.loaded_i32(v, signed),
            _ => Quad {
                lo: p[0],
                hi: p[1],
                low32: None,
                zext: false,
            },
        })
    }

    /// A one-element store of 4 or 8 bytes of `v` by the four lanes as one vector access,
    /// where their addresses lie one after the other and inside, else lane by lane as
    /// [`Self::lane_stores`] makes it; false, with nothing built, where it has no such
    /// form ([`Self::coalescable`]). The lanes' bytes do not overlap, so their order does
    /// not matter. The vector store is made on every path, to the call's sink where the
    /// lanes are not one after the other and inside (then followed by the lanes' own
    /// stores): a store only on one path had the code generator make the value there,
    /// where it makes a value at its first use, and again after the paths joined.
    fn coalesced_store(
        &mut self,
        (space, base, offset, line, site): (MemSpace, Option<Quad>, i64, u32, u32),
        size: u32,
        mut v: Quad,
    ) -> bool {
        // Stores at one place are left lane by lane: the last lane's value stays.
        let Some(q) = base.filter(|_| self.coalescable(space, 1, size, site) == Some(size)) else {
            return false;
        };
        let words = if size == 4 {
            vec![self.low32(&mut v)]
        } else {
            vec![v.lo, v.hi]
        };
        let (contig, at) = self.contiguous(space, q, offset, size);
        let (hit, host) = self.run_check(space, at, (size, 4), site);
        let ok = self.b.ins().band(contig, hit);
        let sink = offset_of!(crate::direct::LoadCtx, sink) as i64;
        let sink = self.b.ins().iadd_imm(self.call.loads, sink);
        let f = MemFlags::new().with_notrap();
        for (k, w) in words.iter().enumerate() {
            let at = self.b.ins().iadd_imm(host, 16 * k as i64);
            let p = self.b.ins().select(ok, at, sink);
            self.b.ins().store(f, *w, p, 0);
        }
        let (slow, join) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(ok, join, &[], slow, &[]);
        self.b.switch_to_block(slow);
        self.b.seal_block(slow);
        self.lane_stores((space, base, offset, line, site), size, &[v]);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        true
    }

    /// The four lanes' stores of the elements `vals` of `size` bytes of an access (its
    /// state space, base, offset, line and first site), lane after lane, each its elements
    /// in order, each checked as the lane code checks it.
    fn lane_stores(
        &mut self,
        (space, base, offset, line, site): (MemSpace, Option<Quad>, i64, u32, u32),
        size: u32,
        vals: &[Quad],
    ) {
        let mut row = Row::default();
        for k in 0..4 {
            for (e, q) in vals.iter().enumerate() {
                let at = (offset, k, e);
                let p = self.lane_address(space, base, at, size, line, (site, true), &mut row);
                let f = MemFlags::trusted();
                // The low halves where they are at hand (nothing else is stored).
                if let (4, Some(low)) = (size, q.low32) {
                    let v = self.b.ins().extractlane(low, k as u8);
                    self.b.ins().store(f, v, p, 0);
                    continue;
                }
                let half = if k < 2 { q.lo } else { q.hi };
                let v = self.b.ins().extractlane(half, (k % 2) as u8);
                match size {
                    1 => self.b.ins().istore8(f, v, p, 0),
                    2 => self.b.ins().istore16(f, v, p, 0),
                    4 => self.b.ins().istore32(f, v, p, 0),
                    _ => self.b.ins().store(f, v, p, 0),
                };
            }
        }
    }

    /// The `size` bytes at byte `at` of each lane's span `words` (two `i64x2`), zero-extended.
    fn bytes_of(&mut self, words: (Value, Value), at: i64, size: u32) -> [Value; 2] {
        let mask = self.splat_of(I64X2, ((1u128 << (8 * size)) - 1) as i64);
        [words.0, words.1].map(|w| {
            let w = if at > 0 {
                self.b.ins().ushr_imm(w, 8 * at)
            } else {
                w
            };
            if size < 8 {
                self.b.ins().band(w, mask)
            } else {
                w
            }
        })
    }

    /// The four lanes' loads of the `n` elements of `size` bytes of an access (its state
    /// space, base, offset, line and first site), lane after lane, each its elements in
    /// order, each checked as the lane code checks it: by element, the four lanes' values.
    fn checked_loads(
        &mut self,
        (space, base, offset, line, site): (MemSpace, Option<Quad>, i64, u32, u32),
        n: usize,
        size: u32,
        signed: bool,
    ) -> Vec<[Value; 4]> {
        let mut vals = vec![[None; 4]; n];
        let mut row = Row::default();
        for k in 0..4 {
            for (e, val) in vals.iter_mut().enumerate() {
                let at = (offset, k, e);
                let p = self.lane_address(space, base, at, size, line, (site, false), &mut row);
                let mut c = self.checked();
                val[k] = Some(c.load(MemFlags::trusted(), p, 0, size, signed));
            }
        }
        vals.into_iter()
            .map(|v| v.map(|x| x.expect("every lane loaded")))
            .collect()
    }

    /// Four lanes' values (`i64`) cut to their low 32 bits, as one `i32x4`.
    fn lanes_i32(&mut self, vals: [Value; 4]) -> Value {
        let lanes = vals.map(|x| self.b.ins().ireduce(I32, x));
        let mut v = self.b.ins().scalar_to_vector(I32X4, lanes[0]);
        for (k, &x) in lanes.iter().enumerate().skip(1) {
            v = self.b.ins().insertlane(v, x, k as u8);
        }
        v
    }

    /// Four lanes of a loaded value of at most 4 bytes from its `i32x4`, extended as the
    /// load extends it. (Loads' paths join with the `i32x4` alone: the widened halves are
    /// made after the join, where something reads them; a block parameter nothing reads
    /// is still made on every path.)
    fn loaded_i32(&mut self, v: Value, signed: bool) -> Quad {
        if !signed {
            return self.widen(v);
        }
        Quad {
            lo: self.b.ins().swiden_low(v),
            hi: self.b.ins().swiden_high(v),
            low32: Some(v),
            zext: false,
        }
    }

    /// Each element's four lane values as two `i64x2`, one after the other.
    fn halves(&mut self, vals: &[[Value; 4]]) -> Vec<Value> {
        let mut out = Vec::new();
        for &[a, b, c, e] in vals {
            for (x, y) in [(a, b), (c, e)] {
                let v = self.b.ins().scalar_to_vector(I64X2, x);
                out.push(self.b.ins().insertlane(v, y, 1));
            }
        }
        out
    }

    /// `dp4a` of four lanes, as the lane code's: each lane's four byte products summed
    /// exactly in 32 bits, then added to `c` wrapping.
    fn dp4a(&mut self, a: &Src, b: &Src, c: &Src, sa: bool, sb: bool) -> Quad {
        let little = MemFlags::new().with_endianness(Endianness::Little);
        let (mut x, mut y, mut z) = (self.src(a), self.src(b), self.src(c));
        // Each lane's four bytes widened into an i32x4: lane k's in products[k].
        let widen = |v: &mut Self, q: &mut Quad, signed: bool| {
            let w = v.low32(q);
            let bytes = v.b.ins().bitcast(I8X16, little, w);
            let halves = if signed {
                [v.b.ins().swiden_low(bytes), v.b.ins().swiden_high(bytes)]
            } else {
                [v.b.ins().uwiden_low(bytes), v.b.ins().uwiden_high(bytes)]
            };
            // Each byte fits a signed 16 bits, so this widening keeps it either way.
            halves.map(|h| [v.b.ins().swiden_low(h), v.b.ins().swiden_high(h)])
        };
        let xs = widen(self, &mut x, sa);
        let ys = widen(self, &mut y, sb);
        let mut products = Vec::with_capacity(4);
        for h in 0..2 {
            for k in 0..2 {
                products.push(self.b.ins().imul(xs[h][k], ys[h][k]));
            }
        }
        let p01 = self.b.ins().iadd_pairwise(products[0], products[1]);
        let p23 = self.b.ins().iadd_pairwise(products[2], products[3]);
        let sums = self.b.ins().iadd_pairwise(p01, p23);
        let acc = self.low32(&mut z);
        let r = self.b.ins().iadd(acc, sums);
        self.widen(r)
    }

    /// A constant `i32x4`.
    fn constant(&mut self, lanes: &[u32; 4]) -> Value {
        let bytes: Vec<u8> = lanes.iter().flat_map(|l| l.to_le_bytes()).collect();
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        self.b.ins().vconst(I32X4, c)
    }

    /// Four f32 (their bits) rounded to nearest even f16, as the lane code's `f16_out`: the
    /// f16 bits, the lanes where they are right (a finite normal f16 or a zero; the others
    /// need the interpreter's conversion), and, in those lanes, the f32 bits of the f16.
    ///
    /// Rounded in place: the f32's mantissa rounded to f16's 10 bits (to nearest, ties to
    /// the even one, a carry moving into the exponent) is the f16's value as an f32, from
    /// which the f16's bits are its exponent rebiased and its mantissa moved down.
    fn f16_out(&mut self, bits: Value) -> (Value, Value, Value) {
        let odd = self.b.ins().ushr_imm(bits, 13);
        let one = self.splat_of(I32X4, 1);
        let odd = self.b.ins().band(odd, one);
        let below_half = self.splat_of(I32X4, 0xFFF);
        let up = self.b.ins().iadd(bits, below_half);
        let up = self.b.ins().iadd(up, odd);
        let m = self.splat_of(I32X4, !0x1FFF);
        let rounded = self.b.ins().band(up, m);
        let m = self.splat_of(I32X4, 0x7FFF_FFFF);
        let (abs, rabs) = (self.b.ins().band(bits, m), self.b.ins().band(rounded, m));
        let h = self.b.ins().ushr_imm(rabs, 13);
        let bias = self.splat_of(I32X4, 112 << 10);
        let h = self.b.ins().isub(h, bias);
        let none = self.splat_of(I32X4, 0);
        let zero = self.b.ins().icmp(IntCC::Equal, abs, none);
        let h = self.b.ins().band_not(h, zero);
        let sign = self.b.ins().ushr_imm(bits, 16);
        let m = self.splat_of(I32X4, 0x8000);
        let sign = self.b.ins().band(sign, m);
        let r = self.b.ins().bor(sign, h);
        // From 2^-14 (no f16 subnormal, no double rounding) to below 65520, which rounds
        // to f16's greatest, 65504, not to infinity (nor is it a NaN); the magnitudes are
        // below 2^31, so signed comparisons will do.
        let (lo, hi) = (
            self.splat_of(I32X4, 0x3880_0000),
            self.splat_of(I32X4, 0x477F_EFFF),
        );
        let from = self.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, abs, lo);
        let to = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, abs, hi);
        let normal = self.b.ins().band(from, to);
        (r, self.b.ins().bor(normal, zero), rounded)
    }

    /// A splat of `x` in `i64x2` or `i32x4`.
    fn splat_of(&mut self, ty: cranelift_codegen::ir::Type, x: i64) -> Value {
        let lane = ty.lane_type();
        let x = self.b.ins().iconst(lane, x);
        self.b.ins().splat(ty, x)
    }

    /// `q` with each lane's low `bits` sign- or zero-extended, as the scalar code's
    /// `extend`.
    fn extend(&mut self, mut q: Quad, bits: u32, signed: bool) -> Quad {
        match (bits, signed) {
            (64, _) => q,
            // Already its low 32 bits zero-extended.
            (32, false) if q.zext => q,
            (32, true) => {
                let v = self.low32(&mut q);
                Quad {
                    lo: self.b.ins().swiden_low(v),
                    hi: self.b.ins().swiden_high(v),
                    low32: Some(v),
                    zext: false,
                }
            }
            (32, false) => {
                let v = self.low32(&mut q);
                self.widen(v)
            }
            _ => {
                let n = i64::from(64 - bits);
                let f = |v: &mut Self, x: Value| {
                    let x = v.b.ins().ishl_imm(x, n);
                    if signed {
                        v.b.ins().sshr_imm(x, n)
                    } else {
                        v.b.ins().ushr_imm(x, n)
                    }
                };
                Quad {
                    lo: f(self, q.lo),
                    hi: f(self, q.hi),
                    low32: None,
                    zext: false,
                }
            }
        }
    }

    /// Comparison masks (all ones where true) made the values 1 and 0, and `!`.
    fn truth(&mut self, lo: Value, hi: Value) -> (Quad, Quad) {
        let one = self.splat_of(I64X2, 1);
        let t = Quad {
            lo: self.b.ins().band(lo, one),
            hi: self.b.ins().band(hi, one),
            low32: None,
            zext: false,
        };
        let f = Quad {
            lo: self.b.ins().band_not(one, lo),
            hi: self.b.ins().band_not(one, hi),
            low32: None,
            zext: false,
        };
        (t, f)
    }

    /// An integer operation of 32 or 64 bits (`ty`), as the scalar code's.
    fn int(&mut self, op: BinOp, ty: Ty, a: &Src, b: &Src) -> Quad {
        use BinOp::*;
        let w = ty.size() * 8;
        // A 64-bit product by an immediate of at most three set bits (the sizes of
        // structures in address arithmetic): shifts and adds, where a product of two
        // `i64x2` takes eight instructions.
        if op == MulWide || (op == MulLo && w == 64) {
            if let Some((s, c)) = match (a, b) {
                (_, Src::Imm(c)) => Some((a, *c)),
                (Src::Imm(c), _) => Some((b, *c)),
                _ => None,
            } {
                // The immediate as the 64-bit operand the product takes.
                let c = match (op, ty.signed()) {
                    (MulLo, _) => c,
                    (_, true) => c as u32 as i32 as i64 as u64,
                    _ => u64::from(c as u32),
                };
                if c.count_ones() <= 3 {
                    let x = self.src(s);
                    let x = self.extend(x, if op == MulLo { 64 } else { 32 }, ty.signed());
                    return self.times(x, c);
                }
            }
        }
        let (x, y) = (self.src(a), self.src(b));
        if matches!(op, MulWide | MulHi) {
            // Of 32 bits (`vectorizable`): the whole product, or its high half.
            let (x, y) = (
                self.extend(x, 32, ty.signed()),
                self.extend(y, 32, ty.signed()),
            );
            let (lo, hi) = (self.b.ins().imul(x.lo, y.lo), self.b.ins().imul(x.hi, y.hi));
            if op == MulHi {
                let (lo, hi) = (self.b.ins().ushr_imm(lo, 32), self.b.ins().ushr_imm(hi, 32));
                return self.low_bits(lo, hi, 32);
            }
            return Quad {
                lo,
                hi,
                low32: None,
                zext: false,
            };
        }
        if let (Shl | Shr, Src::Imm(n)) = (op, b) {
            // The amount is the low 32 bits of b; past the width, 0 (or the sign).
            let n = i64::from(*n as u32);
            let past = n >= i64::from(w);
            let n = n.min(i64::from(w) - 1);
            let shift = |v: &mut Self, x: Value| match op {
                Shl => v.b.ins().ishl_imm(x, n),
                _ if ty.signed() => v.b.ins().sshr_imm(x, n),
                _ => v.b.ins().ushr_imm(x, n),
            };
            if past && !(op == Shr && ty.signed()) {
                let zero = self.b.ins().iconst(I64, 0);
                return self.splat(zero);
            }
            if w == 32 {
                let mut x = x;
                let v = self.low32(&mut x);
                let v = shift(self, v);
                return self.widen(v);
            }
            return Quad {
                lo: shift(self, x.lo),
                hi: shift(self, x.hi),
                low32: None,
                zext: false,
            };
        }
        if matches!(op, Shl | Shr | Div | Rem) {
            // Shifts by a register, whose amount may differ between lanes (SSE shifts every
            // lane of a vector by one amount), and divisions (SSE has none of integers):
            // each lane on its own, as the lane code.
            let mut lanes = [None; 4];
            for (k, lane) in lanes.iter_mut().enumerate() {
                let (xh, yh) = if k < 2 { (x.lo, y.lo) } else { (x.hi, y.hi) };
                let xv = self.b.ins().extractlane(xh, (k % 2) as u8);
                let yv = self.b.ins().extractlane(yh, (k % 2) as u8);
                let f = |b: &mut FunctionBuilder<'_>, x: Value, y: Value| match op {
                    Div | Rem => crate::codegen::divide(b, op == Div, ty.signed(), x, y),
                    _ => crate::codegen::shift(b, op == Shl, ty.signed(), x, y),
                };
                *lane = Some(if w == 32 {
                    let (xv, yv) = (self.b.ins().ireduce(I32, xv), self.b.ins().ireduce(I32, yv));
                    let v = f(self.b, xv, yv);
                    self.b.ins().uextend(I64, v)
                } else {
                    f(self.b, xv, yv)
                });
            }
            let [a, b, c, e] = lanes.map(|l| l.expect("every lane shifted"));
            let lo = self.b.ins().scalar_to_vector(I64X2, a);
            let lo = self.b.ins().insertlane(lo, b, 1);
            let hi = self.b.ins().scalar_to_vector(I64X2, c);
            let hi = self.b.ins().insertlane(hi, e, 1);
            return Quad {
                lo,
                hi,
                low32: None,
                zext: false,
            };
        }
        if op == MulLo && w == 32 {
            let (mut x, mut y) = (x, y);
            let (x, y) = (self.low32(&mut x), self.low32(&mut y));
            let v = self.b.ins().imul(x, y);
            return self.widen(v);
        }
        if matches!(op, Min | Max) {
            let (max, signed) = (op == Max, ty.signed());
            if w == 32 {
                let (mut x, mut y) = (x, y);
                let (lx, ly) = (self.low32(&mut x), self.low32(&mut y));
                let v = match (max, signed) {
                    (false, true) => self.b.ins().smin(lx, ly),
                    (false, false) => self.b.ins().umin(lx, ly),
                    (true, true) => self.b.ins().smax(lx, ly),
                    (true, false) => self.b.ins().umax(lx, ly),
                };
                return self.widen(v);
            }
            // Of 64 bits: a comparison and a selection (SSE has no 64-bit min or max).
            let cc = match (max, signed) {
                (false, true) => IntCC::SignedLessThan,
                (false, false) => IntCC::UnsignedLessThan,
                (true, true) => IntCC::SignedGreaterThan,
                (true, false) => IntCC::UnsignedGreaterThan,
            };
            let mut pick = |a: Value, b: Value| {
                let c = self.b.ins().icmp(cc, a, b);
                self.b.ins().bitselect(c, a, b)
            };
            return Quad {
                lo: pick(x.lo, y.lo),
                hi: pick(x.hi, y.hi),
                low32: None,
                zext: false,
            };
        }
        let f = |v: &mut Self, x: Value, y: Value| match op {
            Add => v.b.ins().iadd(x, y),
            Sub => v.b.ins().isub(x, y),
            MulLo => v.b.ins().imul(x, y),
            And => v.b.ins().band(x, y),
            Or => v.b.ins().bor(x, y),
            _ => v.b.ins().bxor(x, y),
        };
        // Of 32 bits, with at most one operand's low halves still to be gathered: in one
        // `i32x4` (then zero-extended where the 64-bit slots are read), instead of two
        // `i64x2` and the masks that clear their high halves.
        if w == 32 && usize::from(x.low32.is_none()) + usize::from(y.low32.is_none()) <= 1 {
            let (mut x, mut y) = (x, y);
            let (lx, ly) = (self.low32(&mut x), self.low32(&mut y));
            self.keep_low32(a, x);
            self.keep_low32(b, y);
            let v = f(self, lx, ly);
            return self.widen(v);
        }
        let (lo, hi) = (f(self, x.lo, y.lo), f(self, x.hi, y.hi));
        self.low_bits(lo, hi, w)
    }

    /// The f32 bits (an `i32x4`) of the f16 at bit `shift` of each of four lanes' values
    /// `q`, computed in SIMD registers as the interpreter's conversion makes them (the
    /// tests compare them over every f16): the magnitude's bits moved to f32's place are
    /// an f32 2^112 times too small (a subnormal f16 an f32 subnormal), scaled exactly;
    /// infinities and NaNs (quieted, their payload kept) apart; the sign put back. (The
    /// four lanes' loads from the lane code's table of every f16 cost more: the q8_0
    /// mat-vec's two conversions 14 and 19 host instructions a group.)
    fn f32_of_f16_simd(&mut self, q: &mut Quad, shift: i64) -> Value {
        let v = self.low32(q);
        if let Some(f) = self.half_f32(v, shift) {
            return f;
        }
        self.f32_bits_of_f16(v, shift)
    }

    /// The f32 bits of the f16 at bit `shift` of `v`, where the stretch has them already
    /// (`halves`).
    fn half_f32(&self, v: Value, shift: i64) -> Option<Value> {
        self.halves.get(&v)?[shift as usize / 16]
    }

    /// The f32 bits of the f16 at bit `shift` of `v` (an `i32x4`), as
    /// [`Self::f32_of_f16_simd`] computes them.
    fn f32_bits_of_f16(&mut self, v: Value, shift: i64) -> Value {
        let h = if shift == 0 {
            v
        } else {
            self.b.ins().ushr_imm(v, shift)
        };
        let magnitude = self.splat_of(I32X4, 0x7FFF);
        let mag = self.b.ins().band(h, magnitude);
        let sign_bit = self.splat_of(I32X4, 0x8000);
        let sign = self.b.ins().band(h, sign_bit);
        let sign = self.b.ins().ishl_imm(sign, 16);
        let moved = self.b.ins().ishl_imm(mag, 13);
        let little = MemFlags::new().with_endianness(Endianness::Little);
        let f = self.b.ins().bitcast(F32X4, little, moved);
        let scale = self.b.ins().f32const(2f32.powi(112));
        let scale = self.b.ins().splat(F32X4, scale);
        let f = self.b.ins().fmul(f, scale);
        let scaled = self.b.ins().bitcast(I32X4, little, f);
        let (inf, exp) = (
            self.splat_of(I32X4, 0x7C00),
            self.splat_of(I32X4, 0x7F80_0000),
        );
        let quiet = self.splat_of(I32X4, 0x0040_0000);
        let infnan = self.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, mag, inf);
        let nan = self.b.ins().icmp(IntCC::SignedGreaterThan, mag, inf);
        // An infinity's or NaN's product has the f16's significand and an exponent below
        // the top: all its exponent bits set, it is the infinity or the NaN (quieted).
        let exp = self.b.ins().band(infnan, exp);
        let quiet = self.b.ins().band(nan, quiet);
        let r = self.b.ins().bor(scaled, exp);
        let r = self.b.ins().bor(r, quiet);
        self.b.ins().bor(r, sign)
    }

    /// `op` of four lanes by the interpreter's arithmetic (`codegen::lane_value`), each lane
    /// on its operands' values `args` (at most three): the low 32 bits of its results.
    fn by_interpreter(&mut self, op: &Op, args: &[Quad]) -> Value {
        let f = crate::codegen::lane_value_fn();
        let f = self.b.ins().iconst(self.call.ptr, f as usize as i64);
        let o = self.b.ins().iconst(self.call.ptr, op as *const Op as i64);
        let zero = self.b.ins().iconst(I64, 0);
        let lanes = [0u8, 1, 2, 3].map(|k| {
            let mut call_args = vec![o];
            for q in args {
                let half = if k < 2 { q.lo } else { q.hi };
                call_args.push(self.b.ins().extractlane(half, k % 2));
            }
            call_args.resize(5, zero);
            let call = self.b.ins().call_indirect(self.call.helper, f, &call_args);
            let v = self.b.inst_results(call)[0];
            self.b.ins().ireduce(I32, v)
        });
        self.gather(I32X4, lanes)
    }

    /// The f16 (or f16 pair) `fast` (an `i32x4`) where every lane of `ok` is all ones, else
    /// `op` of the four lanes by the interpreter ([`Self::by_interpreter`]), in a block
    /// laid out apart. `exact` holds the f32 bits of `fast`'s f16 at bit 0 (and at bit 16
    /// for a pair) where `ok`; the result's are recorded in `halves` (from the
    /// interpreter's result, converted, where it made it).
    fn fast_or_interpreter(
        &mut self,
        (fast, ok, exact): (Value, Value, &[Value]),
        op: &Op,
        args: &[Quad],
    ) -> Value {
        let all = self.b.ins().vall_true(ok);
        let (slow, join) = (self.b.create_block(), self.b.create_block());
        for _ in 0..=exact.len() {
            self.b.append_block_param(join, I32X4);
        }
        let fast_args: Vec<BlockArg> = std::iter::once(fast)
            .chain(exact.iter().copied())
            .map(BlockArg::from)
            .collect();
        self.b.ins().brif(all, join, &fast_args, slow, &[]);
        self.b.switch_to_block(slow);
        self.b.seal_block(slow);
        self.b.set_cold_block(slow);
        let r = self.by_interpreter(op, args);
        let mut slow_args = vec![BlockArg::from(r)];
        for k in 0..exact.len() {
            let f = self.f32_bits_of_f16(r, 16 * k as i64);
            slow_args.push(f.into());
        }
        self.b.ins().jump(join, &slow_args);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        let params = self.b.block_params(join).to_vec();
        let mut halves = [None; 2];
        for (h, &f) in halves.iter_mut().zip(&params[1..]) {
            *h = Some(f);
        }
        self.halves.insert(params[0], halves);
        params[0]
    }

    /// Four f32 (`x`, an `f32x4`) rounded to integers in direction `round` (to nearest,
    /// ties to even, by default), as the interpreter's `round_f64`.
    fn round(&mut self, round: Round, x: Value) -> Value {
        match round {
            Round::Zero => self.b.ins().trunc(x),
            Round::Down => self.b.ins().floor(x),
            Round::Up => self.b.ins().ceil(x),
            Round::Nearest | Round::Default => self.b.ins().nearest(x),
        }
    }

    /// A vector of type `ty` (four lanes) of the scalars `v`.
    fn gather(&mut self, ty: cranelift_codegen::ir::Type, v: [Value; 4]) -> Value {
        let mut r = self.b.ins().scalar_to_vector(ty, v[0]);
        for (k, &x) in v.iter().enumerate().skip(1) {
            r = self.b.ins().insertlane(r, x, k as u8);
        }
        r
    }

    /// Four f32 `ex2` (`x`, an `f32x4`), as `vgpu_ptx::ex2_f32` computes each: the same
    /// f32 operations in the same order. With `raw`, `x`'s NaNs stand for the canonical
    /// NaN ([`Self::src_f32_any`]), whose `ex2` is itself.
    fn ex2(&mut self, x: Value, raw: bool) -> Value {
        let little = MemFlags::new().with_endianness(Endianness::Little);
        let f32s = |v: &mut Self, c: f32| {
            let c = v.b.ins().f32const(c);
            v.b.ins().splat(F32X4, c)
        };
        let (low, high) = (
            f32s(self, vgpu_ptx::EX2_RANGE.0),
            f32s(self, vgpu_ptx::EX2_RANGE.1),
        );
        // As `f32::clamp` (a NaN lane's result is replaced below), in the forms the code
        // generator makes one `maxps` and one `minps` of: `x < low ? low : x`, then
        // `v < high ? v : high`.
        let below = self.b.ins().fcmp(FloatCC::LessThan, x, low);
        let below = self.b.ins().bitcast(F32X4, little, below);
        let v = self.b.ins().bitselect(below, low, x);
        let within = self.b.ins().fcmp(FloatCC::LessThan, v, high);
        let within = self.b.ins().bitcast(F32X4, little, within);
        let v = self.b.ins().bitselect(within, v, high);
        let n = self.b.ins().nearest(v);
        let f = self.b.ins().fsub(v, n);
        let (&last, lower) = vgpu_ptx::EX2_POLY.split_last().expect("coefficients");
        let mut p = f32s(self, last);
        for &c in lower.iter().rev() {
            let c = f32s(self, c);
            p = self.b.ins().fma(p, f, c);
        }
        // n + 1.5 * 2^23 holds the integer n in its low bits: less the bits of 1.5 * 2^23,
        // n itself.
        let magic = f32s(self, 12_582_912.0);
        let t = self.b.ins().fadd(n, magic);
        let t = self.b.ins().bitcast(I32X4, little, t);
        let magic_bits = self.splat_of(I32X4, 0x4B40_0000);
        let n = self.b.ins().isub(t, magic_bits);
        // 2^h and 2^(n - h), h = n >> 1: each exponent plus the bias, shifted in place.
        let h = self.b.ins().sshr_imm(n, 1);
        let rest = self.b.ins().isub(n, h);
        let bias = self.splat_of(I32X4, 127);
        let mut r = p;
        for k in [h, rest] {
            let e = self.b.ins().iadd(k, bias);
            let e = self.b.ins().ishl_imm(e, 23);
            let scale = self.b.ins().bitcast(F32X4, little, e);
            r = self.b.ins().fmul(r, scale);
        }
        let r = self.b.ins().bitcast(I32X4, little, r);
        // A NaN gives itself, quieted; one whose bits are not yet canonical (`raw`), the
        // canonical NaN, which gives itself.
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        let quiet = if raw {
            self.splat_of(I32X4, i64::from(CANONICAL_NAN_F32))
        } else {
            let bits = self.b.ins().bitcast(I32X4, little, x);
            let quiet = self.splat_of(I32X4, 0x0040_0000);
            self.b.ins().bor(bits, quiet)
        };
        let r = self.b.ins().bitselect(nan, quiet, r);
        self.b.ins().bitcast(F32X4, little, r)
    }

    /// `x` times `c` (wrapping), as the sum of `x` shifted by each set bit of `c`.
    fn times(&mut self, x: Quad, c: u64) -> Quad {
        let mut sum: Option<(Value, Value)> = None;
        for bit in (0..64).filter(|k| c >> k & 1 == 1) {
            let (lo, hi) = if bit == 0 {
                (x.lo, x.hi)
            } else {
                (
                    self.b.ins().ishl_imm(x.lo, bit),
                    self.b.ins().ishl_imm(x.hi, bit),
                )
            };
            sum = Some(match sum {
                None => (lo, hi),
                Some((l, h)) => (self.b.ins().iadd(l, lo), self.b.ins().iadd(h, hi)),
            });
        }
        match sum {
            Some((lo, hi)) => Quad {
                lo,
                hi,
                low32: None,
                zext: false,
            },
            None => {
                let zero = self.b.ins().iconst(I64, 0);
                self.splat(zero)
            }
        }
    }

    /// `and`, `or` or `xor` (`vectorizable`) of two predicates, as the interpreter's: on
    /// whether each is non-zero, giving 1 or 0.
    fn pred_logic(&mut self, op: BinOp, a: &Src, b: &Src) -> Quad {
        let (x, y) = (self.src(a), self.src(b));
        let zero = self.splat_of(I64X2, 0);
        let one = self.splat_of(I64X2, 1);
        let mut half = |p: Value, q: Value| {
            let p = self.b.ins().icmp(IntCC::NotEqual, p, zero);
            let q = self.b.ins().icmp(IntCC::NotEqual, q, zero);
            let r = match op {
                BinOp::And => self.b.ins().band(p, q),
                BinOp::Or => self.b.ins().bor(p, q),
                _ => self.b.ins().bxor(p, q),
            };
            self.b.ins().band(r, one)
        };
        Quad {
            lo: half(x.lo, y.lo),
            hi: half(x.hi, y.hi),
            low32: None,
            zext: false,
        }
    }

    /// Two `i64x2` of results of `w` bits: a 32-bit result is zero-extended into its slot.
    fn low_bits(&mut self, lo: Value, hi: Value, w: u32) -> Quad {
        if w == 32 {
            let m = self.splat_of(I64X2, 0xFFFF_FFFF);
            Quad {
                lo: self.b.ins().band(lo, m),
                hi: self.b.ins().band(hi, m),
                low32: None,
                zext: false,
            }
        } else {
            Quad {
                lo,
                hi,
                low32: None,
                zext: false,
            }
        }
    }

    /// An integer comparison of 32 or 64 bits, as the scalar code's `int_compare`, or an
    /// f32 one (its operands flushed with `ftz`), as its `float_compare`: all-ones masks
    /// in two `i64x2`, and in one `i32x4` where the comparison made that.
    fn compare(
        &mut self,
        cmp: Cmp,
        ty: Ty,
        ftz: bool,
        a: &Src,
        b: &Src,
    ) -> (Value, Value, Option<Value>) {
        if ty == Ty::F32 {
            let (x, y) = (self.src_f32_any(a, ftz), self.src_f32_any(b, ftz));
            let m = self.b.ins().fcmp(crate::codegen::float_cc(cmp), x, y);
            return (
                self.b.ins().swiden_low(m),
                self.b.ins().swiden_high(m),
                Some(m),
            );
        }
        let Some(cc) = crate::codegen::int_cc(cmp, ty.signed()) else {
            unreachable!("`vectorizable` admits only the integer comparisons")
        };
        let (mut x, mut y) = (self.src(a), self.src(b));
        if ty.size() == 4 {
            let (x, y) = (self.low32(&mut x), self.low32(&mut y));
            let m = self.b.ins().icmp(cc, x, y);
            (
                self.b.ins().swiden_low(m),
                self.b.ins().swiden_high(m),
                Some(m),
            )
        } else {
            (
                self.b.ins().icmp(cc, x.lo, y.lo),
                self.b.ins().icmp(cc, x.hi, y.hi),
                None,
            )
        }
    }

    fn op(&mut self, op: &Op, line: u32) {
        use BinOp::*;
        match op {
            Op::Mov { d, a } => {
                let q = self.src(a);
                self.set(*d, q);
            }
            // As the lane code's: each half in f32 (exact: converted in SIMD registers,
            // `f32_of_f16_simd`, where the lane code reads the table of every f16),
            // rounded once to f16; inline where every lane's results are normal f16 or zeros,
            // else every lane by the interpreter's arithmetic. Operands the stretch made
            // itself come as their f32 values (`halves`), and so do the results.
            Op::Half {
                op: hop,
                ty,
                d,
                a,
                b,
                c,
                ..
            } => {
                let (mut x, mut y, z) = (self.src(a), self.src(b), self.src(c));
                let mut r = self.splat_of(I32X4, 0);
                let mut ok = self.splat_of(I32X4, -1);
                let mut exact = vec![];
                for k in 0..if *ty == Ty::F16x2 { 2 } else { 1 } {
                    let little = MemFlags::new().with_endianness(Endianness::Little);
                    let [fx, fy] = [&mut x, &mut y].map(|q| {
                        let v = self.f32_of_f16_simd(q, 16 * k);
                        self.b.ins().bitcast(F32X4, little, v)
                    });
                    let f = match hop {
                        HalfOp::Add => self.b.ins().fadd(fx, fy),
                        HalfOp::Sub => self.b.ins().fsub(fx, fy),
                        _ => self.b.ins().fmul(fx, fy),
                    };
                    let bits = self.b.ins().bitcast(I32X4, little, f);
                    let (h, right, f) = self.f16_out(bits);
                    let h = self.b.ins().ishl_imm(h, 16 * k);
                    r = self.b.ins().bor(r, h);
                    ok = self.b.ins().band(ok, right);
                    exact.push(f);
                }
                let v = self.fast_or_interpreter((r, ok, &exact), op, &[x, y, z]);
                let q = self.widen(v);
                self.set(*d, q);
            }
            // The state space's window added or taken away, as the lane code's.
            Op::Cvta {
                d,
                a,
                space,
                to_generic,
            } => {
                let q = self.src(a);
                let base = vgpu_ptx::exec::window(*space) as i64;
                let q = if base == 0 {
                    q
                } else {
                    let w = self.splat_of(
                        I64X2,
                        if *to_generic {
                            base
                        } else {
                            base.wrapping_neg()
                        },
                    );
                    Quad {
                        lo: self.b.ins().iadd(q.lo, w),
                        hi: self.b.ins().iadd(q.hi, w),
                        low32: None,
                        zext: false,
                    }
                };
                self.set(*d, q);
            }
            Op::Bin {
                op: bop,
                ty,
                d,
                a,
                b,
                ftz,
                ..
            } => {
                let q = if *ty == Ty::F32 {
                    let (x, y) = (self.src_f32_any(a, *ftz), self.src_f32_any(b, *ftz));
                    let (r, operand) = match bop {
                        Add => (self.b.ins().fadd(x, y), false),
                        Sub => (self.b.ins().fsub(x, y), false),
                        Div => (self.b.ins().fdiv(x, y), false),
                        Min | Max => (self.min_max(*bop == Max, x, y), true),
                        _ => (self.b.ins().fmul(x, y), false),
                    };
                    // `min` and `max` give one of their operands, flushed already under
                    // `.ftz`: only a NaN is made canonical.
                    let q = self.f32_out(r, *ftz && !operand);
                    if *ftz && operand {
                        self.flushed.insert(q.lo);
                    }
                    q
                } else if *ty == Ty::Pred {
                    self.pred_logic(*bop, a, b)
                } else {
                    self.int(*bop, *ty, a, b)
                };
                self.set(*d, q);
            }
            Op::Un {
                op: UnOp::Not | UnOp::CNot,
                ty: Ty::Pred,
                d,
                a,
                ..
            } => {
                let x = self.src(a);
                let zero = self.splat_of(I64X2, 0);
                let lo = self.b.ins().icmp(IntCC::Equal, x.lo, zero);
                let hi = self.b.ins().icmp(IntCC::Equal, x.hi, zero);
                let (t, _) = self.truth(lo, hi);
                self.set(*d, t);
            }
            Op::Un {
                op: un @ (UnOp::Abs | UnOp::Neg),
                ty: Ty::F32,
                d,
                a,
                ftz,
            } => {
                // The sign bit cleared or flipped, and a NaN quieted, as the lane code's.
                let mut x = self.src(a);
                let mut bits = self.low32(&mut x);
                if *ftz && !self.flushed.contains(&x.lo) {
                    bits = self.flush(bits);
                }
                let r = if *un == UnOp::Abs {
                    let m = self.constant(&[0x7FFF_FFFF; 4]);
                    self.b.ins().band(bits, m)
                } else {
                    let m = self.constant(&[0x8000_0000; 4]);
                    self.b.ins().bxor(bits, m)
                };
                let m = self.constant(&[0x7FFF_FFFF; 4]);
                let mag = self.b.ins().band(bits, m);
                let inf = self.constant(&[0x7F80_0000; 4]);
                let nan = self.b.ins().icmp(IntCC::SignedGreaterThan, mag, inf);
                let q = self.constant(&[0x0040_0000; 4]);
                let quiet = self.b.ins().bor(r, q);
                let r = self.b.ins().bitselect(nan, quiet, r);
                let q = self.widen(r);
                self.set(*d, q);
            }
            Op::Un {
                op: UnOp::Not,
                ty,
                d,
                a,
                ..
            } => {
                let x = self.src(a);
                let (lo, hi) = (self.b.ins().bnot(x.lo), self.b.ins().bnot(x.hi));
                let q = self.low_bits(lo, hi, ty.size() * 8);
                self.set(*d, q);
            }
            Op::Setp {
                cmp,
                ty,
                d,
                d2,
                a,
                b,
                ftz,
                ..
            } => {
                let (lo, hi, m) = self.compare(*cmp, *ty, *ftz, a, b);
                let (t, f) = self.truth(lo, hi);
                if let Some(m) = m {
                    self.masks.insert(t.lo, m);
                    if d2.is_some() {
                        let not = self.b.ins().bnot(m);
                        self.masks.insert(f.lo, not);
                    }
                }
                self.set(*d, t);
                if let Some(d2) = d2 {
                    self.set(*d2, f);
                }
            }
            Op::Selp { d, a, b, p } => {
                let (x, y, c) = (self.src(a), self.src(b), self.src(p));
                let (clo, chi) = if let Some(&m) = self.masks.get(&c.lo) {
                    (self.b.ins().swiden_low(m), self.b.ins().swiden_high(m))
                } else {
                    let zero = self.splat_of(I64X2, 0);
                    let on = |v: &mut Self, c: Value| v.b.ins().icmp(IntCC::NotEqual, c, zero);
                    (on(self, c.lo), on(self, c.hi))
                };
                let q = Quad {
                    lo: self.b.ins().bitselect(clo, x.lo, y.lo),
                    hi: self.b.ins().bitselect(chi, x.hi, y.hi),
                    low32: None,
                    zext: false,
                };
                self.set(*d, q);
            }
            Op::Cvt {
                dty: Ty::F32,
                sty: Ty::F32,
                round,
                ftz,
                d,
                a,
                ..
            } => {
                // As the interpreter's: rounded to an integral f32 (`vectorizable`: a rounding
                // is given), a NaN keeping its payload, quieted.
                let x = self.src_f32(a, *ftz);
                let r = self.round(*round, x);
                let little = MemFlags::new().with_endianness(Endianness::Little);
                let bits = self.b.ins().bitcast(I32X4, little, r);
                let q = self.widen(bits);
                if *ftz {
                    // Integral or a zero: no subnormal.
                    self.flushed.insert(q.lo);
                }
                self.set(*d, q);
            }
            Op::Cvt {
                dty: Ty::F32,
                sty: Ty::F16,
                d,
                a,
                ..
            } => {
                let mut x = self.src(a);
                let v = self.f32_of_f16_simd(&mut x, 0);
                let q = self.widen(v);
                // An f16's least magnitude, 2^-24, is a normal f32.
                self.flushed.insert(q.lo);
                self.set(*d, q);
            }
            Op::Cvt {
                dty: Ty::F16,
                sty: Ty::F32,
                d,
                a,
                ..
            } => {
                // As the lane code's: inline where every lane's result is a normal f16 or
                // a zero, else every lane through the interpreter's conversion.
                let mut x = self.src(a);
                let bits = self.low32(&mut x);
                let (h, ok, f) = self.f16_out(bits);
                let v = self.fast_or_interpreter((h, ok, &[f]), op, &[x]);
                let q = self.widen(v);
                self.set(*d, q);
            }
            Op::Cvt {
                dty: Ty::F32,
                sty,
                d,
                a,
                ..
            } => {
                // Rounded to nearest, as the host's conversion does.
                let x = self.src(a);
                let mut x = self.extend(x, sty.size() * 8, sty.signed());
                let v = self.low32(&mut x);
                let f = if sty.signed() {
                    self.b.ins().fcvt_from_sint(F32X4, v)
                } else {
                    self.b.ins().fcvt_from_uint(F32X4, v)
                };
                let little = MemFlags::new().with_endianness(Endianness::Little);
                let bits = self.b.ins().bitcast(I32X4, little, f);
                let q = self.widen(bits);
                // An integer is never an f32 subnormal.
                self.flushed.insert(q.lo);
                self.set(*d, q);
            }
            // Of 32 bits at most (an f16 pair, say): in one `i32x4`.
            Op::Pack { d, parts, bits } if parts.len() as u32 * bits <= 32 => {
                let m =
                    (*bits < 32).then(|| self.splat_of(I32X4, crate::codegen::mask(*bits) as i64));
                let mut packed = self.splat_of(I32X4, 0);
                let mut halves = [None; 2];
                for (k, part) in parts.iter().enumerate() {
                    let mut x = self.src(part);
                    let v = self.low32(&mut x);
                    self.keep_low32(part, x);
                    if *bits == 16 {
                        halves[k] = self.half_f32(v, 0);
                    }
                    let v = m.map_or(v, |m| self.b.ins().band(v, m));
                    let v = match k as u32 * bits {
                        0 => v,
                        shift => self.b.ins().ishl_imm(v, i64::from(shift)),
                    };
                    packed = self.b.ins().bor(packed, v);
                }
                if halves.iter().any(Option::is_some) {
                    self.halves.insert(packed, halves);
                }
                let q = self.widen(packed);
                self.set(*d, q);
            }
            Op::Pack { d, parts, bits } => {
                let m = self.splat_of(I64X2, crate::codegen::mask(*bits) as i64);
                let mut packed: Option<(Value, Value)> = None;
                for (k, part) in parts.iter().enumerate() {
                    let x = self.src(part);
                    let shift = i64::from(k as u32 * bits);
                    // (The code generator keeps a vector shift by 0, and an or with 0.)
                    let f = |v: &mut Self, x: Value| {
                        let x = v.b.ins().band(x, m);
                        if shift == 0 {
                            x
                        } else {
                            v.b.ins().ishl_imm(x, shift)
                        }
                    };
                    let (xl, xh) = (f(self, x.lo), f(self, x.hi));
                    packed = Some(match packed {
                        None => (xl, xh),
                        Some((lo, hi)) => (self.b.ins().bor(lo, xl), self.b.ins().bor(hi, xh)),
                    });
                }
                let zero = self.splat_of(I64X2, 0);
                let (lo, hi) = packed.unwrap_or((zero, zero));
                self.set(
                    *d,
                    Quad {
                        lo,
                        hi,
                        low32: None,
                        zext: false,
                    },
                );
            }
            // Parts of the low 32 bits: from their `i32x4`.
            Op::Unpack { ds, a, bits } if ds.len() as u32 * bits <= 32 => {
                let m =
                    (*bits < 32).then(|| self.splat_of(I32X4, crate::codegen::mask(*bits) as i64));
                let mut x = self.src(a);
                let v = self.low32(&mut x);
                self.keep_low32(a, x);
                let halves = self.halves.get(&v).copied().filter(|_| *bits == 16);
                for (k, &d) in ds.iter().enumerate() {
                    let part = match k as u32 * bits {
                        0 => v,
                        shift => self.b.ins().ushr_imm(v, i64::from(shift)),
                    };
                    let part = m.map_or(part, |m| self.b.ins().band(part, m));
                    if let Some(f) = halves.and_then(|h| h[k]) {
                        self.halves.insert(part, [Some(f), None]);
                    }
                    let q = self.widen(part);
                    self.set(d, q);
                }
            }
            Op::Unpack { ds, a, bits } => {
                let m = self.splat_of(I64X2, crate::codegen::mask(*bits) as i64);
                let x = self.src(a);
                for (k, &d) in ds.iter().enumerate() {
                    let shift = i64::from(k as u32 * bits);
                    let f = |v: &mut Self, x: Value| {
                        let x = if shift == 0 {
                            x
                        } else {
                            v.b.ins().ushr_imm(x, shift)
                        };
                        v.b.ins().band(x, m)
                    };
                    let q = Quad {
                        lo: f(self, x.lo),
                        hi: f(self, x.hi),
                        low32: None,
                        zext: false,
                    };
                    self.set(d, q);
                }
            }
            Op::Dp {
                d,
                a,
                b,
                c,
                a_signed,
                b_signed,
                ..
            } => {
                let q = self.dp4a(a, b, c, *a_signed, *b_signed);
                self.set(*d, q);
            }
            Op::Cvt {
                dty: dty @ (Ty::S32 | Ty::U32),
                sty: Ty::F32,
                round,
                ftz,
                d,
                a,
                ..
            } => {
                // As the interpreter's: rounded to an integer, then saturated (NaN gives 0).
                let x = self.src_f32_any(a, *ftz);
                let r = self.round(*round, x);
                let v = if dty.signed() {
                    self.b.ins().fcvt_to_sint_sat(I32X4, r)
                } else {
                    self.b.ins().fcvt_to_uint_sat(I32X4, r)
                };
                let q = self.widen(v);
                self.set(*d, q);
            }
            Op::Cvt { dty, sty, d, a, .. } => {
                let x = self.src(a);
                let x = self.extend(x, sty.size() * 8, sty.signed());
                let q = self.extend(x, dty.size() * 8, dty.signed());
                self.set(*d, q);
            }
            Op::Un {
                op: un, d, a, ftz, ..
            } => {
                // As the scalar code's: correctly rounded (`rsqrt` computed in f64 and
                // rounded once), a NaN keeping its payload; `ex2` inline, by the operations
                // of `vgpu_ptx::ex2_f32`; the other transcendental functions lane by lane,
                // by the same host math function on the value in f64. (`ex2` takes the
                // operand's bits before their NaNs were made canonical, where the stretch
                // has them, and gives those NaNs' lanes the canonical NaN: the result of
                // the canonical NaN's `ex2`.)
                let (x, raw) = if *un == UnOp::Ex2 {
                    self.src_f32_raw(a, *ftz)
                } else {
                    (self.src_f32(a, *ftz), false)
                };
                let r = match un {
                    UnOp::Rcp => {
                        let one = self.b.ins().f32const(1.0);
                        let one = self.b.ins().splat(F32X4, one);
                        self.b.ins().fdiv(one, x)
                    }
                    UnOp::Sqrt => self.b.ins().sqrt(x),
                    UnOp::Rsqrt => self.rsqrt(x),
                    UnOp::Ex2 => self.ex2(x, raw),
                    un => {
                        let f = crate::codegen::math_function(*un);
                        let f = self.b.ins().iconst(self.call.ptr, f as usize as i64);
                        let lanes = [0u8, 1, 2, 3].map(|k| {
                            let v = self.b.ins().extractlane(x, k);
                            let v = self.b.ins().fpromote(F64, v);
                            let call = self.b.ins().call_indirect(self.call.math, f, &[v]);
                            let v = self.b.inst_results(call)[0];
                            self.b.ins().fdemote(F32, v)
                        });
                        self.gather(F32X4, lanes)
                    }
                };
                let little = MemFlags::new().with_endianness(Endianness::Little);
                let mut bits = self.b.ins().bitcast(I32X4, little, r);
                if *ftz {
                    bits = self.flush(bits);
                }
                let q = self.widen(bits);
                if *ftz {
                    self.flushed.insert(q.lo);
                }
                self.set(*d, q);
            }
            Op::Mad {
                ty,
                mode,
                d,
                a,
                b,
                c,
                ..
            } if *ty != Ty::F32 => {
                // `vectorizable`: `mad.lo` (mode 0), or `mad.wide` (2) of 32 bits.
                let (wide, w) = (*mode == 2, ty.size() * 8);
                let mut p = self.int(if wide { BinOp::MulWide } else { BinOp::MulLo }, *ty, a, b);
                let mut z = self.src(c);
                let q = if w == 32 && !wide {
                    let (x, y) = (self.low32(&mut p), self.low32(&mut z));
                    let v = self.b.ins().iadd(x, y);
                    self.widen(v)
                } else {
                    let lo = self.b.ins().iadd(p.lo, z.lo);
                    let hi = self.b.ins().iadd(p.hi, z.hi);
                    Quad {
                        lo,
                        hi,
                        low32: None,
                        zext: false,
                    }
                };
                self.set(*d, q);
            }
            Op::Mad {
                d, a, b, c, ftz, ..
            } => {
                let x = self.src_f32_any(a, *ftz);
                let y = self.src_f32_any(b, *ftz);
                let z = self.src_f32_any(c, *ftz);
                let r = self.b.ins().fma(x, y, z);
                let q = self.f32_out(r, *ftz);
                self.set(*d, q);
            }
            // A load from the parameters, the same for every lane; the lane code of the
            // same stretch counts the bytes it reads.
            Op::Ld { ty, n, d, .. } if crate::param_load(op).is_some() => {
                let start = crate::param_load(op).map_or(0, |r| r.start);
                let size = ty.size() as usize;
                for (e, &dst) in d.iter().take(usize::from(*n)).enumerate() {
                    let at = (start + e * size) as i32;
                    let f = MemFlags::new().with_notrap();
                    let params = self.call.params;
                    let mut c = self.checked();
                    let x = c.load(f, params, at, size as u32, ty.signed());
                    let q = self.splat(x);
                    self.set(dst, q);
                }
            }
            Op::Ld {
                space,
                ty,
                n,
                d,
                addr,
            } => {
                let size = ty.size();
                let n = usize::from(*n);
                let base = addr.base.map(|r| self.reg(r));
                let site = self.sites;
                if matches!(space, MemSpace::Global | MemSpace::Generic) {
                    self.sites += n as u32;
                }
                // Where a span is 2, 4 or 8 bytes, its first load reads each lane's whole
                // span at once, when every lane's is inside (as ggml's quantized blocks,
                // aligned to 2 bytes only, are read: 16-bit loads, packed in pairs).
                let mut words_of = None;
                let first = match self.spans.get(&self.index) {
                    Some(&Span::First { lo, count }) => {
                        self.spanned.remove(&self.index);
                        if let Some(q) = base {
                            if let Some(s) = self.span_check(q, lo, count, size, site) {
                                self.spanned.insert(self.index, s);
                                let bytes = count * u64::from(size);
                                words_of = matches!(bytes, 2 | 4 | 8).then_some(bytes as u32);
                            }
                        }
                        Some(self.index)
                    }
                    Some(&Span::Later(f)) => Some(f),
                    None => None,
                };
                let spanned = first.and_then(|f| self.spanned.get(&f).copied());
                let access = (*space, base, addr.offset, line, site);
                // By element, the four lanes' values as two `i64x2`.
                let halves = match spanned {
                    None => {
                        if let Some(q) = self.coalesced_load(access, n, size, ty.signed()) {
                            self.set(d[0], q);
                            return;
                        }
                        let vals = self.checked_loads(access, n, size, ty.signed());
                        self.halves(&vals)
                    }
                    Some(sp) => {
                        let (fast, slow, join) = (
                            self.b.create_block(),
                            self.b.create_block(),
                            self.b.create_block(),
                        );
                        // Elements of at most 4 bytes as one `i32x4` each
                        // ([`Self::loaded_i32`]).
                        let narrow = size <= 4;
                        let per = if narrow { 1 } else { 2 };
                        for _ in 0..n {
                            for _ in 0..per {
                                let t = if narrow { I32X4 } else { I64X2 };
                                self.b.append_block_param(join, t);
                            }
                        }
                        if words_of.is_some() {
                            self.b.append_block_param(join, I64X2);
                            self.b.append_block_param(join, I64X2);
                        }
                        self.b.ins().brif(sp.all, fast, &[], slow, &[]);
                        self.b.switch_to_block(fast);
                        self.b.seal_block(fast);
                        let f = MemFlags::trusted();
                        let words = match words_of {
                            Some(_) if sp.coalesced => {
                                // Aligned to its elements' size only.
                                let f = MemFlags::new().with_notrap();
                                let lo = self.b.ins().load(I64X2, f, sp.hosts[0], 0);
                                let hi = self.b.ins().load(I64X2, f, sp.hosts[0], 16);
                                Some((lo, hi))
                            }
                            Some(bytes) => {
                                // Aligned to its elements' size only.
                                let f = MemFlags::new().with_notrap();
                                let mut c = self.checked();
                                let w = sp.hosts.map(|p| c.load(f, p, 0, bytes, false));
                                let h = self.halves(&[w]);
                                Some((h[0], h[1]))
                            }
                            None => sp.words,
                        };
                        let mut args = Vec::new();
                        for e in 0..n {
                            let at = addr.offset + (e as i64) * i64::from(size) - sp.lo;
                            match words {
                                // A value of fewer than 8 bytes, zero-extended: its bytes.
                                Some(w) if !ty.signed() => {
                                    let [lo, hi] = self.bytes_of(w, at, size);
                                    if narrow {
                                        let mut q = Quad {
                                            lo,
                                            hi,
                                            low32: None,
                                            zext: true,
                                        };
                                        args.push(self.low32(&mut q));
                                    } else {
                                        args.extend([lo, hi]);
                                    }
                                }
                                _ => {
                                    let mut c = self.checked();
                                    let v = sp
                                        .hosts
                                        .map(|p| c.load(f, p, at as i32, size, ty.signed()));
                                    if narrow {
                                        args.push(self.lanes_i32(v));
                                    } else {
                                        args.extend(self.halves(&[v]));
                                    }
                                }
                            }
                        }
                        if let Some(w) = words.filter(|_| words_of.is_some()) {
                            args.extend([w.0, w.1]);
                        }
                        let args: Vec<BlockArg> = args.into_iter().map(BlockArg::from).collect();
                        self.b.ins().jump(join, &args);
                        self.b.switch_to_block(slow);
                        self.b.seal_block(slow);
                        self.b.set_cold_block(slow);
                        let vals = self.checked_loads(access, n, size, ty.signed());
                        let mut args = if narrow {
                            vals.iter().map(|&v| self.lanes_i32(v)).collect()
                        } else {
                            self.halves(&vals)
                        };
                        if words_of.is_some() {
                            // Never read: the span's later loads take the slow path too.
                            let zero = self.splat_of(I64X2, 0);
                            args.extend([zero, zero]);
                        }
                        let args: Vec<BlockArg> = args.into_iter().map(BlockArg::from).collect();
                        self.b.ins().jump(join, &args);
                        self.b.switch_to_block(join);
                        self.b.seal_block(join);
                        let params = self.b.block_params(join).to_vec();
                        if words_of.is_some() {
                            let w = (params[per * n], params[per * n + 1]);
                            if let Some(e) = self.spanned.get_mut(&self.index) {
                                e.words = Some(w);
                            }
                        }
                        if narrow {
                            for (&dst, &v) in d.iter().zip(&params[..n]) {
                                let q = self.loaded_i32(v, ty.signed());
                                self.set(dst, q);
                            }
                            return;
                        }
                        params[..2 * n].to_vec()
                    }
                };
                for (&dst, h) in d.iter().zip(halves.chunks(2)) {
                    let q = Quad {
                        lo: h[0],
                        hi: h[1],
                        low32: None,
                        zext: false,
                    };
                    self.set(dst, q);
                }
            }
            Op::St {
                space,
                ty,
                n,
                a,
                addr,
            } => {
                let n = usize::from(*n);
                let base = addr.base.map(|r| self.reg(r));
                let vals: Vec<Quad> = a.iter().take(n).map(|s| self.src(s)).collect();
                self.store((*space, *ty, addr.offset, line), base, &vals);
            }
            Op::Nop => {}
            // `vectorizable` admits nothing else.
            _ => unreachable!("not a vector instruction"),
        }
    }
}
