//! What is known of a kernel's registers at each instruction, on every path there: a value
//! set by a `mov` of an immediate, whether an f32 in the register needs no flushing, and
//! whether every lane of a warp holds the same value.
//!
//! Compilers keep a warp shuffle's lane and clamp operands in registers (`mov.u32 %r43, 16;`
//! … `shfl.sync.bfly.b32 %r45, %r41, %r43, %r42, %r44;`), often set far from the shuffles
//! that use them: ggml's block reductions set them once and shuffle again after a barrier.
//! Knowing them lets compiled code turn a shuffle into a move per lane. And the values of
//! `.ftz` arithmetic are never subnormal, so a later `.ftz` instruction need not flush them
//! again, wherever they were computed (compiled code otherwise flushes each operand it reads
//! from the register file).
//!
//! And compiled code runs each lane through a stretch of code on its own: what is the same
//! in every lane it can compute once for the warp, not once a lane. A register holds the
//! same value in every lane of a warp that runs an instruction together when on every
//! path its last write computed it from such values alone (immediates, the kernel's
//! parameters, `%ctaid`, `%ntid`, `%warpid` and the like; not `%tid`, `%laneid` or memory)
//! where all the warp's lanes run together, or when its value is known. Lanes may run
//! apart after a branch, call or return whose guard differs between them: a write in any
//! block after one, or under a guard that differs between lanes, makes a register differ.
//!
//! This is the classic forward analysis over the kernel's control-flow graph (the one of
//! [`crate::liveness`], calls and returns included), for one thread. A register's value is
//! known at an instruction when every path from the kernel's start sets it with an unguarded
//! `mov` of the same immediate and nothing writes it after; a guarded `mov` keeps it known
//! only where it writes the value the register already holds. A register needs no flushing
//! when on every path its last write is f32 `.ftz` arithmetic (`add`, `sub`, `mul`, `div`,
//! `rem`, `min`, `max`, `fma`/`mad` and the unary operations: their results are flushed),
//! a `mov` of such a register or of an immediate that is no subnormal, or a shuffle of
//! such a register (whichever lane it reads, the register holds such a value there too); a
//! guarded write keeps it so only when it writes such a value. Registers start unknown,
//! and needing flushing.
//!
//! And a hint for compiled code's memory accesses: a register's *stride*, what lane `i`
//! of each four (the lanes compiled code takes together, from lane 0, 4, 8, …) holds more
//! than the first of them, divided by `i`, as far as integer arithmetic on `%tid.x` or
//! `%laneid` and values the same in every lane tells (`%tid.x` counted as one apart from
//! lane to lane and `%tid.y`, `%tid.z` as the same in the four, as they are in a block a
//! multiple of four threads wide, and the four lanes' values taken to start at a
//! multiple of four strides, as they do from `%tid.x`). An
//! access whose address has a stride of its own size is most likely coalesced (the four
//! lanes' bytes one after the other), and one with a stride of 0 reads one place for the
//! four lanes; compiled code tests for these at run time, and the hint decides only
//! whether it tests.
//!
//! And whether a register's value fits in 32 bits, the high half of its 64-bit slot zero:
//! when on every path its last write is 32-bit (or narrower) integer arithmetic, which
//! keeps the low bits of its type alone (but a product widened past 32 bits), f32
//! arithmetic (its bits), a comparison (0 or 1), a load of 4 bytes or fewer extended
//! without sign, or a `mov` of such a register, of an immediate below 2^32 or of a 32-bit
//! special register. Compiled code then works on the register's low halves alone (a
//! shared access by it tests its four lanes' addresses in 32 bits).

use crate::ir::{Addr, BinOp, Inst, MemSpace, Op, Reg, Src, Ty};

/// What a register holds at a point: not reached yet, one known value, or anything.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Value {
    Unreached,
    Known(u64),
    Any,
}

impl Value {
    /// The value where two paths meet.
    fn meet(self, other: Value) -> Value {
        match (self, other) {
            (Value::Unreached, v) | (v, Value::Unreached) => v,
            (Value::Known(a), Value::Known(b)) if a == b => Value::Known(a),
            _ => Value::Any,
        }
    }
}

/// What is known of one register at a point.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fact {
    value: Value,
    /// No f32 subnormal in its low 32 bits (true where not reached yet).
    normal: bool,
    /// The same in every lane of a warp that runs the instruction together (true where
    /// not reached yet).
    uniform: bool,
    /// Its stride (the module's documentation): a hint, known or not.
    stride: Value,
    /// Its value fits in 32 bits: the high half of its 64-bit slot is zero (true where not
    /// reached yet).
    narrow: bool,
}

impl Fact {
    const UNREACHED: Fact = Fact {
        value: Value::Unreached,
        normal: true,
        uniform: true,
        stride: Value::Unreached,
        narrow: true,
    };
    const ANY: Fact = Fact {
        value: Value::Any,
        normal: false,
        uniform: false,
        stride: Value::Any,
        narrow: false,
    };

    fn meet(self, other: Fact) -> Fact {
        Fact {
            value: self.value.meet(other.value),
            normal: self.normal && other.normal,
            uniform: self.uniform && other.uniform,
            stride: self.stride.meet(other.stride),
            narrow: self.narrow && other.narrow,
        }
    }

    /// Whether every lane holds the same value: a known one, or one made the same.
    fn same(self) -> bool {
        self.uniform || matches!(self.value, Value::Known(_))
    }
}

/// The most register facts the analysis keeps for one kernel's blocks (12 MiB), and the
/// most registers it follows (each answer of [`Constants::at`] copies them: 96 KiB); a
/// kernel that would need more is not analysed, and nothing is known of its registers.
/// Compilers' kernels have a few hundred registers, and tens once compacted.
const MAX_FACTS: usize = 1 << 19;
const MAX_REGS: usize = 1 << 12;

/// What is known of a kernel's registers: each block's facts on entry, from which
/// [`Constants::at`] follows the block to the instruction asked about.
pub struct Constants {
    ranges: Vec<std::ops::Range<usize>>,
    /// For each instruction, its block.
    block_of: Vec<u32>,
    entry: Vec<Vec<Fact>>,
    /// For each block, whether lanes of a warp may reach it apart.
    diverged: Vec<bool>,
}

/// Whether `bits` (the low 32 of them) are an f32 subnormal.
fn subnormal(bits: u64) -> bool {
    let b = bits as u32;
    b & 0x7F80_0000 == 0 && b & 0x007F_FFFF != 0
}

/// The sources of an instruction whose result is a function of them alone, the same in
/// every lane that has the same sources; `None` for any other.
pub fn pure_sources(op: &Op) -> Option<Vec<Src>> {
    Some(match op {
        Op::Mov { a, .. }
        | Op::Unpack { a, .. }
        | Op::Un { a, .. }
        | Op::Cvt { a, .. }
        | Op::Cvta { a, .. } => vec![*a],
        Op::Pack { parts, .. } => parts.clone(),
        Op::Prmt { a, b, c, .. }
        | Op::Bfe { a, b, c, .. }
        | Op::Dp { a, b, c, .. }
        | Op::Lop3 { a, b, c, .. }
        | Op::Shf { a, b, c, .. }
        | Op::Half { a, b, c, .. }
        | Op::Mad { a, b, c, .. } => vec![*a, *b, *c],
        Op::Selp { a, b, p, .. } => vec![*a, *b, *p],
        Op::Bfi { a, b, pos, len, .. } => vec![*a, *b, *pos, *len],
        Op::CvtPack { a, b, .. } | Op::Bin { a, b, .. } => vec![*a, *b],
        Op::Setp { a, b, combine, .. } => {
            let mut v = vec![*a, *b];
            v.extend(combine.map(|(_, p, _)| p));
            v
        }
        // The kernel's parameters, at a constant offset.
        Op::Ld {
            space: MemSpace::Param,
            addr:
                Addr {
                    base: None,
                    global: None,
                    ..
                },
            ..
        } => vec![],
        _ => return None,
    })
}

/// Whether what `inst` writes is the same in every lane that runs it together, from the
/// facts before it (`state`), in a block that lanes may reach apart (`diverged`) or not.
fn same_in_every_lane(inst: &Inst, state: &[Fact], diverged: bool) -> bool {
    let same = |s: &Src| match *s {
        Src::Imm(_) => true,
        Src::Reg(r) => state.get(r as usize).is_some_and(|f| f.same()),
        Src::Special(sp) => sp.same_in_every_lane(),
        Src::Global(..) => false,
    };
    !diverged && pure_sources(&inst.op).is_some_and(|srcs| srcs.iter().all(same))
}

/// What `inst` writes into its destination `d`, from the facts before it (`state`), in a
/// block that lanes may reach apart (`diverged`) or not.
fn written(inst: &Inst, d: Reg, state: &[Fact], diverged: bool) -> Fact {
    let mut fact = written_value(inst, d, state);
    fact.uniform = same_in_every_lane(inst, state, diverged);
    fact.stride = if fact.uniform {
        Value::Known(0)
    } else {
        stride(&inst.op, state)
    };
    fact
}

/// The stride (the module's documentation) of what `op` writes, from the facts before it.
fn stride(op: &Op, state: &[Fact]) -> Value {
    use crate::ir::Special;
    let of = |s: &Src| match *s {
        Src::Imm(_) => Value::Known(0),
        Src::Reg(r) => match state.get(r as usize) {
            Some(f) if f.same() => Value::Known(0),
            Some(f) => f.stride,
            None => Value::Any,
        },
        Src::Special(Special::Tid(0) | Special::LaneId) => Value::Known(1),
        // The same in each four lanes of a block whose rows are a multiple of four wide.
        Src::Special(Special::Tid(_)) => Value::Known(0),
        Src::Special(sp) if sp.same_in_every_lane() => Value::Known(0),
        _ => Value::Any,
    };
    let imm = |s: &Src| match *s {
        Src::Imm(v) => Some(v),
        Src::Reg(r) => match state.get(r as usize).map(|f| f.value) {
            Some(Value::Known(v)) => Some(v),
            _ => None,
        },
        _ => None,
    };
    let int = |t: &Ty| {
        matches!(
            t,
            Ty::U8 | Ty::S8 | Ty::U16 | Ty::S16 | Ty::U32 | Ty::S32 | Ty::U64 | Ty::S64
        )
    };
    let both = |a: &Src, b: &Src, f: fn(u64, u64) -> u64| match (of(a), of(b)) {
        (Value::Known(x), Value::Known(y)) => Value::Known(f(x, y)),
        (Value::Unreached, _) | (_, Value::Unreached) => Value::Unreached,
        _ => Value::Any,
    };
    // A stride times a known value (either operand).
    let times = |a: &Src, b: &Src| match (imm(a), imm(b)) {
        (_, Some(c)) => of(a).times(c),
        (Some(c), _) => of(b).times(c),
        _ => Value::Any,
    };
    // A function of sources of stride 0 (the same in every lane, as far as the hint
    // goes: where lanes run apart they may not be), has stride 0 too.
    if pure_sources(op).is_some_and(|srcs| srcs.iter().all(|s| of(s) == Value::Known(0))) {
        return Value::Known(0);
    }
    match op {
        Op::Mov { a, .. } | Op::Cvta { a, .. } => of(a),
        // One instruction's lanes that read one place read one value.
        Op::Ld {
            addr:
                Addr {
                    base: Some(r),
                    global: None,
                    ..
                },
            ..
        } => match of(&Src::Reg(*r)) {
            v @ (Value::Known(0) | Value::Unreached) => v,
            _ => Value::Any,
        },
        Op::Cvt { dty, sty, a, .. } if int(dty) && int(sty) => of(a),
        Op::Bin { op, ty, a, b, .. } if int(ty) => match op {
            BinOp::Add => both(a, b, u64::wrapping_add),
            BinOp::Sub => both(a, b, u64::wrapping_sub),
            BinOp::Shl => match imm(b) {
                Some(s) if s < 64 => of(a).times(1 << s),
                _ => Value::Any,
            },
            BinOp::MulLo | BinOp::MulWide => times(a, b),
            // Bits below the stride set or flipped in every lane (`4 * i | 1`): an add.
            BinOp::Or | BinOp::Xor => match (of(a), imm(b)) {
                (Value::Known(k), Some(c)) if k.is_power_of_two() && c < k => Value::Known(k),
                (v @ Value::Unreached, _) => v,
                _ => Value::Any,
            },
            // A mask that lets the four lanes' two bits of the lane index through keeps
            // the stride (`%tid.x & 31`, `(%tid.x << 2) & 124`); one that drops them
            // leaves the same value in the four (`%tid.x & ~3`).
            BinOp::And => match (of(a), imm(b)) {
                (Value::Known(k), Some(m)) if k.is_power_of_two() => {
                    match (m >> k.trailing_zeros()) & 3 {
                        3 => Value::Known(k),
                        0 => Value::Known(0),
                        _ => Value::Any,
                    }
                }
                (v @ Value::Unreached, _) => v,
                _ => Value::Any,
            },
            // Likewise a shift right: past the two bits, the same value in the four
            // (`%tid.x >> 2`); below them, a smaller stride.
            BinOp::Shr => match (of(a), imm(b)) {
                (Value::Known(k), Some(s)) if k.is_power_of_two() => {
                    let z = u64::from(k.trailing_zeros());
                    if s >= z + 2 {
                        Value::Known(0)
                    } else if s <= z {
                        Value::Known(k >> s)
                    } else {
                        Value::Any
                    }
                }
                (v @ Value::Unreached, _) => v,
                _ => Value::Any,
            },
            _ => Value::Any,
        },
        Op::Mad {
            ty,
            mode: 0,
            a,
            b,
            c,
            ..
        } if int(ty) => match (times(a, b), of(c)) {
            (Value::Known(x), Value::Known(y)) => Value::Known(x.wrapping_add(y)),
            (Value::Unreached, _) | (_, Value::Unreached) => Value::Unreached,
            _ => Value::Any,
        },
        _ => Value::Any,
    }
}

impl Value {
    /// A known value times `c` (wrapping); anything else as it is.
    fn times(self, c: u64) -> Value {
        match self {
            Value::Known(k) => Value::Known(k.wrapping_mul(c)),
            v => v,
        }
    }
}

/// [`written`] but for its `uniform`.
fn written_value(inst: &Inst, d: Reg, state: &[Fact]) -> Fact {
    let mut fact = written_unmasked(inst, d, state);
    fact.narrow = narrow(&inst.op, state);
    fact
}

/// Whether what `op` writes fits in 32 bits, from the facts before it: the results of
/// 32-bit (and narrower) integer arithmetic, which keeps its low bits alone, of f32
/// arithmetic (its bits), of comparisons and predicates (0 or 1), of loads of 4 bytes or
/// fewer extended without sign, and of the 32-bit special registers; moves of such values.
fn narrow(op: &Op, state: &[Fact]) -> bool {
    use crate::ir::Special;
    let of = |s: &Src| match *s {
        Src::Reg(r) => state.get(r as usize).is_some_and(|f| f.narrow),
        Src::Imm(v) => v >> 32 == 0,
        Src::Special(sp) => !matches!(sp, Special::Clock),
        Src::Global(..) => false,
    };
    match op {
        Op::Mov { a, .. } => of(a),
        Op::Bin { op, ty, .. } => match ty {
            Ty::F32 | Ty::Pred => true,
            Ty::F64 | Ty::F16 | Ty::F16x2 | Ty::BF16 | Ty::BF16x2 => false,
            _ if *op == BinOp::MulWide => ty.size() <= 2,
            _ => ty.size() <= 4,
        },
        Op::Setp { .. } => true,
        Op::Ld { ty, .. } => ty.size() <= 4 && !ty.signed(),
        _ => false,
    }
}

/// [`written_value`] but for its `narrow`.
fn written_unmasked(inst: &Inst, d: Reg, state: &[Fact]) -> Fact {
    let fact_of = |s: &Src| match *s {
        Src::Reg(r) => state.get(r as usize).copied().unwrap_or(Fact::ANY),
        Src::Imm(v) => Fact {
            value: Value::Known(v),
            normal: !subnormal(v),
            uniform: true,
            stride: Value::Known(0),
            narrow: v >> 32 == 0,
        },
        _ => Fact::ANY,
    };
    let flushed = Fact {
        value: Value::Any,
        normal: true,
        uniform: false,
        stride: Value::Any,
        narrow: false,
    };
    match &inst.op {
        Op::Mov { a, .. } => fact_of(a),
        Op::Bin {
            op:
                BinOp::Add
                | BinOp::Sub
                | BinOp::MulLo
                | BinOp::MulHi
                | BinOp::MulWide
                | BinOp::Div
                | BinOp::Rem
                | BinOp::Min
                | BinOp::Max,
            ty: Ty::F32,
            ftz: true,
            ..
        } => flushed,
        Op::Mad {
            ty: Ty::F32,
            ftz: true,
            ..
        } => flushed,
        // `neg`, `abs`, `sqrt`, `rsqrt`, `rcp`, `ex2`, `lg2`, `sin`, `cos`, `tanh`.
        Op::Un {
            ty: Ty::F32,
            ftz: true,
            ..
        } => flushed,
        // Integers and f16 values are never f32 subnormals (an f16's least magnitude,
        // 2^-24, is a normal f32); a bf16 can be one.
        Op::Cvt {
            dty: Ty::F32,
            sty:
                Ty::U8 | Ty::S8 | Ty::U16 | Ty::S16 | Ty::U32 | Ty::S32 | Ty::U64 | Ty::S64 | Ty::F16,
            ..
        } => flushed,
        Op::Shfl { d: sd, p, a, .. } if *sd == d && *p != Some(d) => Fact {
            value: Value::Any,
            normal: fact_of(a).normal,
            uniform: false,
            stride: Value::Any,
            narrow: false,
        },
        _ => Fact::ANY,
    }
}

/// `state` after `inst`, in a block that lanes may reach apart (`diverged`) or not.
fn step(inst: &Inst, state: &mut [Fact], diverged: bool) {
    let guarded = inst.guard.is_some();
    // A guard that differs between lanes writes some of them only.
    let guard_same = inst
        .guard
        .is_none_or(|(p, _)| state.get(p as usize).is_some_and(|f| f.same()));
    let mut defs = Vec::new();
    inst.clone().visit_regs(|r, def| {
        if def {
            defs.push(*r);
        }
    });
    let new: Vec<(Reg, Fact)> = defs
        .iter()
        .map(|&d| (d, written(inst, d, state, diverged)))
        .collect();
    for (d, fact) in new {
        let Some(slot) = state.get_mut(d as usize) else {
            continue;
        };
        *slot = if guarded { slot.meet(fact) } else { fact };
        slot.uniform &= guard_same;
    }
}

/// Whether the lanes of a warp that run `inst` together may leave it apart: a branch, call
/// or return under a guard that differs between them (`state`: the facts before it).
fn splits(inst: &Inst, state: &[Fact]) -> bool {
    matches!(inst.op, Op::Bra { .. } | Op::Call { .. } | Op::Ret)
        && inst
            .guard
            .is_some_and(|(p, _)| !state.get(p as usize).is_some_and(|f| f.same()))
}

impl Constants {
    /// What is known of `code`'s registers, or `None` when it names registers past
    /// [`MAX_REGS`] or its tables would pass [`MAX_FACTS`].
    pub fn of(code: &[Inst]) -> Option<Constants> {
        let mut regs = 0usize;
        for inst in code {
            inst.clone()
                .visit_regs(|r, _| regs = regs.max(*r as usize + 1));
        }
        let (ranges, succs) = crate::liveness::blocks(code);
        if regs > MAX_REGS || regs.saturating_mul(ranges.len()) > MAX_FACTS {
            return None;
        }
        let mut block_of = vec![0; code.len()];
        for (b, r) in ranges.iter().enumerate() {
            block_of[r.clone()].iter_mut().for_each(|x| *x = b as u32);
        }
        let mut entry = vec![vec![Fact::UNREACHED; regs]; ranges.len()];
        if let Some(first) = entry.first_mut() {
            first.iter_mut().for_each(|v| *v = Fact::ANY);
        }
        // The blocks that lanes of a warp may reach apart: those after a branch whose lanes
        // may go different ways, until the ways meet again ([`crate::parting`]). Elsewhere
        // all the warp's lanes that run an instruction hold what the warp's lanes held
        // where they last ran together.
        let mut diverged = vec![false; ranges.len()];
        let mut parting = crate::parting::Parting::new(code, &ranges, &succs);
        let mut parted = vec![false; ranges.len()];
        // Each block's exit flows into its successors' entries, to a fixed point: a fact
        // only moves down (unreached, known, any; no flushing needed, needed; the same in
        // every lane, not), and a block once diverged stays so, so this ends.
        let mut work: Vec<usize> = (0..ranges.len()).rev().collect();
        let mut queued = vec![true; ranges.len()];
        while let Some(b) = work.pop() {
            queued[b] = false;
            let mut state = entry[b].clone();
            let mut split = false;
            for inst in &code[ranges[b].clone()] {
                split |= splits(inst, &state);
                step(inst, &mut state, diverged[b]);
            }
            // A split's blocks are marked once: they do not change.
            if split && !parted[b] {
                parted[b] = true;
                // Past the walks' budget, every block counts as reached apart.
                let apart = parting
                    .apart(b)
                    .unwrap_or_else(|| (0..ranges.len()).collect());
                for x in apart {
                    if !diverged[x] {
                        diverged[x] = true;
                        if !queued[x] {
                            queued[x] = true;
                            work.push(x);
                        }
                    }
                }
            }
            for &s in &succs[b] {
                let mut changed = false;
                for (e, &v) in entry[s].iter_mut().zip(&state) {
                    let m = e.meet(v);
                    changed |= m != *e;
                    *e = m;
                }
                if changed && !queued[s] {
                    queued[s] = true;
                    work.push(s);
                }
            }
        }
        Some(Constants {
            ranges,
            block_of,
            entry,
            diverged,
        })
    }

    /// What is known of the registers when instruction `i` of `code` (the code analysed)
    /// starts.
    pub fn at(&self, code: &[Inst], i: usize) -> Option<Facts> {
        let b = *self.block_of.get(i)? as usize;
        let mut state = self.entry[b].clone();
        for inst in code.get(self.ranges[b].start..i)? {
            step(inst, &mut state, self.diverged[b]);
        }
        Some(Facts(state))
    }
}

/// What is known of every register when one instruction starts ([`Constants::at`]).
pub struct Facts(Vec<Fact>);

impl Facts {
    /// The value register `r` holds, on every path here, if one is known.
    pub fn value(&self, r: Reg) -> Option<u64> {
        match self.0.get(r as usize)?.value {
            Value::Known(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the low 32 bits of register `r` are no f32 subnormal, on every path here.
    pub fn normal(&self, r: Reg) -> bool {
        self.0.get(r as usize).is_some_and(|f| f.normal)
    }

    /// Whether register `r` holds the same value in every lane of a warp that runs this
    /// instruction together.
    pub fn uniform(&self, r: Reg) -> bool {
        self.0.get(r as usize).is_some_and(|f| f.same())
    }

    /// Whether register `r`'s value fits in 32 bits (the high half of its slot zero), on
    /// every path here.
    pub fn narrow(&self, r: Reg) -> bool {
        self.0.get(r as usize).is_some_and(|f| f.narrow)
    }

    /// Register `r`'s stride (the module's documentation), where known: a hint.
    pub fn stride(&self, r: Reg) -> Option<u64> {
        let f = self.0.get(r as usize)?;
        match f.stride {
            _ if f.same() => Some(0),
            Value::Known(k) => Some(k),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{ShflMode, Special, UnOp};

    fn code(ops: Vec<(Option<(Reg, bool)>, Op)>) -> Vec<Inst> {
        ops.into_iter()
            .map(|(guard, op)| Inst { guard, op, line: 1 })
            .collect()
    }

    fn mov(d: Reg, v: u64) -> (Option<(Reg, bool)>, Op) {
        (None, Op::Mov { d, a: Src::Imm(v) })
    }

    /// A butterfly shuffle of r0 with lane operand `b` and clamp operand `c`.
    fn shfl(b: Reg, c: Reg) -> (Option<(Reg, bool)>, Op) {
        let op = Op::Shfl {
            mode: ShflMode::Bfly,
            d: 9,
            p: None,
            a: Src::Reg(0),
            b: Src::Reg(b),
            c: Src::Reg(c),
        };
        (None, op)
    }

    fn bra(target: u32, guard: Option<(Reg, bool)>) -> (Option<(Reg, bool)>, Op) {
        (guard, Op::Bra { target })
    }

    fn known(ops: Vec<(Option<(Reg, bool)>, Op)>, at: usize, r: Reg) -> Option<u64> {
        let code = code(ops);
        let facts = Constants::of(&code).expect("analysed").at(&code, at);
        facts.expect("an instruction").value(r)
    }

    fn stride_at(ops: Vec<(Option<(Reg, bool)>, Op)>, at: usize, r: Reg) -> Option<u64> {
        let code = code(ops);
        let facts = Constants::of(&code).expect("analysed").at(&code, at);
        facts.expect("an instruction").stride(r)
    }

    #[test]
    fn an_address_made_from_the_thread_index_has_the_stride_of_its_arithmetic() {
        let bin = |op, ty, d, a: Src, b: Src| {
            let op = Op::Bin {
                op,
                ty,
                d,
                a,
                b,
                ftz: false,
                sat: false,
                round: crate::ir::Round::Default,
                nan: false,
            };
            (None, op)
        };
        let param = Op::Ld {
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
        let load = |d: Reg, base: Reg| Op::Ld {
            space: MemSpace::Global,
            ty: Ty::U32,
            n: 1,
            d: [d, 0, 0, 0],
            addr: Addr {
                base: Some(base),
                global: None,
                offset: 0,
            },
        };
        let cvt = Op::Cvt {
            dty: Ty::S64,
            sty: Ty::S32,
            round: crate::ir::Round::Default,
            sat: false,
            ftz: false,
            d: 1,
            a: Src::Reg(0),
        };
        let tid = Op::Mov {
            d: 0,
            a: Src::Special(Special::Tid(0)),
        };
        let ops = vec![
            (None, tid),
            (None, cvt),
            (None, param),
            bin(BinOp::Shl, Ty::U64, 3, Src::Reg(1), Src::Imm(2)),
            bin(BinOp::Add, Ty::S64, 4, Src::Reg(2), Src::Reg(3)),
            bin(BinOp::MulWide, Ty::S32, 5, Src::Reg(0), Src::Imm(8)),
            bin(BinOp::Sub, Ty::S64, 6, Src::Reg(5), Src::Reg(4)),
            bin(BinOp::Shr, Ty::U32, 7, Src::Reg(0), Src::Imm(1)),
            bin(BinOp::And, Ty::U32, 8, Src::Reg(3), Src::Imm(124)),
            bin(BinOp::And, Ty::U32, 10, Src::Reg(3), Src::Imm(36)),
            bin(BinOp::Shr, Ty::U32, 11, Src::Reg(3), Src::Imm(4)),
            bin(BinOp::And, Ty::U32, 12, Src::Reg(3), Src::Imm(!15)),
            bin(BinOp::Shr, Ty::U32, 13, Src::Reg(3), Src::Imm(1)),
            bin(BinOp::Or, Ty::U32, 14, Src::Reg(3), Src::Imm(2)),
            bin(BinOp::Or, Ty::U32, 15, Src::Reg(3), Src::Imm(4)),
            (None, load(16, 2)),
            (None, load(17, 4)),
            mov(18, 0),
        ];
        let at = ops.len() - 1;
        assert_eq!(stride_at(ops.clone(), at, 0), Some(1));
        assert_eq!(stride_at(ops.clone(), at, 1), Some(1));
        assert_eq!(stride_at(ops.clone(), at, 2), Some(0));
        assert_eq!(stride_at(ops.clone(), at, 3), Some(4));
        assert_eq!(stride_at(ops.clone(), at, 4), Some(4));
        assert_eq!(stride_at(ops.clone(), at, 5), Some(8));
        assert_eq!(stride_at(ops.clone(), at, 6), Some(4));
        // A mask that keeps the four lanes' bits keeps the stride; a shift right or a mask
        // that drops them leaves the same value in the four; a shift below them, a smaller
        // stride.
        assert_eq!(stride_at(ops.clone(), at, 8), Some(4));
        assert_eq!(stride_at(ops.clone(), at, 11), Some(0));
        assert_eq!(stride_at(ops.clone(), at, 12), Some(0));
        assert_eq!(stride_at(ops.clone(), at, 13), Some(2));
        // Setting bits below the stride adds to every lane alike; above, not.
        assert_eq!(stride_at(ops.clone(), at, 14), Some(4));
        assert_eq!(stride_at(ops.clone(), at, 15), None);
        // What the lanes load from one place is one value; from several, anything.
        assert_eq!(stride_at(ops.clone(), at, 16), Some(0));
        assert_eq!(stride_at(ops.clone(), at, 17), None);
        // A shift through them, a mask that keeps one of them, or a register nothing set,
        // has none known.
        assert_eq!(stride_at(ops.clone(), at, 7), None);
        assert_eq!(stride_at(ops.clone(), at, 10), None);
        assert_eq!(stride_at(ops, at, 9), None);
    }

    #[test]
    fn a_mov_of_an_immediate_is_known_at_later_shuffles() {
        let ops = vec![mov(1, 16), mov(2, 31), shfl(1, 2), shfl(1, 2)];
        assert_eq!(known(ops.clone(), 2, 1), Some(16));
        assert_eq!(known(ops.clone(), 2, 2), Some(31));
        assert_eq!(known(ops.clone(), 3, 1), Some(16));
        // Registers nothing set are not known.
        assert_eq!(known(ops.clone(), 2, 0), None);
        assert_eq!(known(ops, 2, 3), None);
    }

    #[test]
    fn other_writes_make_a_register_unknown() {
        let add = Op::Bin {
            op: BinOp::Add,
            ty: Ty::U32,
            d: 1,
            a: Src::Reg(1),
            b: Src::Imm(1),
            ftz: false,
            sat: false,
            round: crate::ir::Round::Default,
            nan: false,
        };
        let ops = vec![mov(1, 16), mov(2, 31), (None, add), shfl(1, 2)];
        assert_eq!(known(ops.clone(), 3, 1), None);
        assert_eq!(known(ops, 3, 2), Some(31));
        // A shuffle's own destination is not known after it.
        let ops = vec![mov(9, 4), mov(2, 31), shfl(9, 2), shfl(9, 2)];
        assert_eq!(known(ops.clone(), 2, 9), Some(4));
        assert_eq!(known(ops, 3, 9), None);
    }

    #[test]
    fn a_guarded_mov_keeps_a_register_known_only_with_the_same_value() {
        let guarded = |d, v| (Some((5, false)), Op::Mov { d, a: Src::Imm(v) });
        let ops = vec![mov(1, 16), mov(2, 31), guarded(1, 8), shfl(1, 2)];
        assert_eq!(known(ops, 3, 1), None);
        let ops = vec![mov(1, 16), mov(2, 31), guarded(1, 16), shfl(1, 2)];
        assert_eq!(known(ops, 3, 1), Some(16));
        // Nothing before the guarded write: the lanes whose guard is false hold anything.
        let ops = vec![mov(2, 31), guarded(1, 16), shfl(1, 2)];
        assert_eq!(known(ops, 2, 1), None);
    }

    #[test]
    fn paths_that_disagree_make_a_register_unknown() {
        // 0: r1 = 16; 1: @p bra 3; 2: r1 = V; 3: shuffle.
        let paths = |v| {
            vec![
                mov(1, 16),
                bra(3, Some((5, false))),
                mov(1, v),
                mov(2, 31),
                shfl(1, 2),
            ]
        };
        assert_eq!(known(paths(8), 4, 1), None);
        assert_eq!(known(paths(16), 4, 1), Some(16));
    }

    #[test]
    fn a_write_later_in_a_loop_makes_a_register_unknown_at_its_start() {
        // 0: r1 = 16; 1: r2 = 31; 2: shuffle; 3: r1 = 8; 4: @p bra 2; 5: exit.
        let ops = vec![
            mov(1, 16),
            mov(2, 31),
            shfl(1, 2),
            mov(1, 8),
            bra(2, Some((5, false))),
            (None, Op::Exit),
        ];
        assert_eq!(known(ops.clone(), 2, 1), None);
        assert_eq!(known(ops, 2, 2), Some(31));
    }

    /// `d = a + b` in f32, with or without `.ftz`.
    fn fadd(d: Reg, a: Reg, b: Reg, ftz: bool) -> (Option<(Reg, bool)>, Op) {
        let op = Op::Bin {
            op: BinOp::Add,
            ty: Ty::F32,
            d,
            a: Src::Reg(a),
            b: Src::Reg(b),
            ftz,
            sat: false,
            round: crate::ir::Round::Default,
            nan: false,
        };
        (None, op)
    }

    fn normal(ops: Vec<(Option<(Reg, bool)>, Op)>, at: usize, r: Reg) -> bool {
        let code = code(ops);
        let facts = Constants::of(&code).expect("analysed").at(&code, at);
        facts.expect("an instruction").normal(r)
    }

    #[test]
    fn ftz_results_need_no_flushing_again() {
        // r1 = r0 + r0 (.ftz); r2 = r1; r9 = shuffle of r0 (reads r1 below)...
        let ops = vec![
            fadd(1, 0, 0, true),
            (
                None,
                Op::Mov {
                    d: 2,
                    a: Src::Reg(1),
                },
            ),
            fadd(3, 0, 0, false),
            mov(4, 0x3F80_0000),
            mov(5, 1),
            (None, Op::Exit),
        ];
        assert!(normal(ops.clone(), 1, 1), "an .ftz sum");
        assert!(normal(ops.clone(), 2, 2), "a copy of one");
        assert!(!normal(ops.clone(), 3, 3), "a sum without .ftz");
        assert!(!normal(ops.clone(), 1, 0), "what the kernel starts with");
        assert!(normal(ops.clone(), 5, 4), "an immediate 1.0");
        assert!(!normal(ops, 5, 5), "an immediate that is a subnormal");
        // A shuffle moves what its source holds, in whichever lane.
        let shuffled = |ftz| {
            vec![
                fadd(0, 0, 0, ftz),
                mov(1, 1),
                mov(2, 31),
                shfl(1, 2),
                (None, Op::Exit),
            ]
        };
        assert!(normal(shuffled(true), 4, 9));
        assert!(!normal(shuffled(false), 4, 9));
        // A unary operation's result, with `.ftz` or not.
        let unary = |op, ftz| {
            vec![
                (
                    None,
                    Op::Un {
                        op,
                        ty: Ty::F32,
                        d: 1,
                        a: Src::Reg(0),
                        ftz,
                    },
                ),
                (None, Op::Exit),
            ]
        };
        for op in [UnOp::Rsqrt, UnOp::Ex2, UnOp::Abs] {
            assert!(normal(unary(op, true), 1, 1), "{op:?}.ftz");
            assert!(!normal(unary(op, false), 1, 1), "{op:?}");
        }
    }

    #[test]
    fn conversions_from_integers_and_f16_need_no_flushing() {
        let cvt = |d, sty| {
            (
                None,
                Op::Cvt {
                    dty: Ty::F32,
                    sty,
                    round: crate::ir::Round::Default,
                    sat: false,
                    ftz: false,
                    d,
                    a: Src::Reg(0),
                },
            )
        };
        let ops = vec![
            cvt(1, Ty::S32),
            cvt(2, Ty::U64),
            cvt(3, Ty::F16),
            cvt(4, Ty::BF16),
            cvt(5, Ty::F64),
            (None, Op::Exit),
        ];
        assert!(normal(ops.clone(), 5, 1), "from s32");
        assert!(normal(ops.clone(), 5, 2), "from u64");
        assert!(normal(ops.clone(), 5, 3), "from f16");
        assert!(!normal(ops.clone(), 5, 4), "a bf16 can be an f32 subnormal");
        assert!(!normal(ops, 5, 5), "so can an f64");
    }

    #[test]
    fn flushing_is_needed_where_a_path_or_a_guarded_write_brings_a_subnormal() {
        // 0: r1 = .ftz sum; 1: @p bra 3; 2: r1 = 1 (a subnormal's bits); 3: exit.
        let paths = |v| {
            vec![
                fadd(1, 0, 0, true),
                bra(3, Some((5, false))),
                mov(1, v),
                (None, Op::Exit),
            ]
        };
        assert!(!normal(paths(1), 3, 1));
        assert!(normal(paths(0x4000_0000), 3, 1));
        let guarded = |v| {
            vec![
                fadd(1, 0, 0, true),
                (
                    Some((5, false)),
                    Op::Mov {
                        d: 1,
                        a: Src::Imm(v),
                    },
                ),
                (None, Op::Exit),
            ]
        };
        assert!(!normal(guarded(1), 2, 1));
        assert!(normal(guarded(0), 2, 1));
    }

    fn uniform(ops: Vec<(Option<(Reg, bool)>, Op)>, at: usize, r: Reg) -> bool {
        let code = code(ops);
        let facts = Constants::of(&code).expect("analysed").at(&code, at);
        facts.expect("an instruction").uniform(r)
    }

    fn from(d: Reg, a: Src) -> (Option<(Reg, bool)>, Op) {
        (None, Op::Mov { d, a })
    }

    /// `d = a + b` in u32.
    fn add(d: Reg, a: Src, b: Src) -> (Option<(Reg, bool)>, Op) {
        let op = Op::Bin {
            op: BinOp::Add,
            ty: Ty::U32,
            d,
            a,
            b,
            ftz: false,
            sat: false,
            round: crate::ir::Round::Default,
            nan: false,
        };
        (None, op)
    }

    /// `p = a < b` in u32.
    fn less(p: Reg, a: Src, b: Src) -> (Option<(Reg, bool)>, Op) {
        let op = Op::Setp {
            cmp: crate::ir::Cmp::Lt,
            ty: Ty::U32,
            d: p,
            d2: None,
            a,
            b,
            combine: None,
            ftz: false,
        };
        (None, op)
    }

    #[test]
    fn values_the_same_in_every_lane() {
        let param = (
            None,
            Op::Ld {
                space: MemSpace::Param,
                ty: Ty::U32,
                n: 1,
                d: [1, 0, 0, 0],
                addr: Addr {
                    base: None,
                    global: None,
                    offset: 0,
                },
            },
        );
        let global = (
            None,
            Op::Ld {
                space: MemSpace::Global,
                ty: Ty::U32,
                n: 1,
                d: [6, 0, 0, 0],
                addr: Addr {
                    base: Some(1),
                    global: None,
                    offset: 0,
                },
            },
        );
        // 0: r1 = param; 1: r2 = ctaid.x + r1; 3: r3 = laneid; 4: r4 = r3 + 1; 5: a global
        // load; 6: p5 = r2 < 9 (the same everywhere); 7: @p5 bra 9; 8: r2 = r2 + 1;
        // 9: p7 = r3 < 9 (lanes apart); 10: @p7 bra 12; 11: r1 = r1 + 1 and r8 = 5;
        // 13: exit.
        let ops = vec![
            param,
            add(2, Src::Special(Special::Ctaid(0)), Src::Reg(1)),
            from(0, Src::Special(Special::Tid(0))),
            from(3, Src::Special(Special::LaneId)),
            add(4, Src::Reg(3), Src::Imm(1)),
            global,
            less(5, Src::Reg(2), Src::Imm(9)),
            bra(9, Some((5, false))),
            add(2, Src::Reg(2), Src::Imm(1)),
            less(7, Src::Reg(3), Src::Imm(9)),
            bra(12, Some((7, false))),
            add(1, Src::Reg(1), Src::Imm(1)),
            mov(8, 5),
            (None, Op::Exit),
        ];
        let at = |i, r| uniform(ops.clone(), i, r);
        assert!(at(2, 1) && at(2, 2), "a parameter, and a sum with %ctaid");
        assert!(
            !at(5, 0) && !at(5, 3) && !at(5, 4),
            "%tid, %laneid, a sum with it"
        );
        assert!(!at(6, 6), "a load from global memory");
        assert!(
            at(9, 2),
            "a branch the lanes take together, and a write behind it"
        );
        assert!(!at(10, 7), "a comparison with %laneid");
        assert!(at(11, 1), "before the lanes part, the same");
        assert!(!at(13, 1), "written where some lanes may be and others not");
        assert!(at(13, 2), "not written since");
        assert!(at(13, 8), "a known value, wherever written");
        // A write under a guard the lanes do not share.
        let guarded = vec![
            from(3, Src::Special(Special::LaneId)),
            less(7, Src::Reg(3), Src::Imm(9)),
            mov(1, 4),
            (Some((7, false)), add(1, Src::Reg(1), Src::Imm(1)).1),
            (None, Op::Exit),
        ];
        assert!(uniform(guarded.clone(), 3, 1));
        assert!(!uniform(guarded, 4, 1));
    }

    #[test]
    fn lanes_apart_after_a_split_until_their_ways_meet() {
        let lane = from(3, Src::Special(Special::LaneId));
        let apart = less(7, Src::Reg(3), Src::Imm(9));
        let ctaid = add(1, Src::Special(Special::Ctaid(0)), Src::Imm(1));
        // 3: the lanes part; 5, two blocks into one way, writes r1; the ways meet at 6.
        let ops = vec![
            lane.clone(),
            apart.clone(),
            ctaid.clone(),
            bra(6, Some((7, false))),
            bra(5, None),
            add(1, Src::Reg(1), Src::Imm(1)),
            add(4, Src::Special(Special::Ctaid(0)), Src::Imm(2)),
            (None, Op::Exit),
        ];
        assert!(uniform(ops.clone(), 3, 1), "written before they part");
        assert!(!uniform(ops.clone(), 6, 1), "written deeper into a way");
        assert!(uniform(ops, 7, 4), "written where the ways meet");
        // A loop that lanes leave after different numbers of iterations (2: its start).
        let ops = vec![
            lane.clone(),
            ctaid.clone(),
            add(1, Src::Reg(1), Src::Imm(1)),
            less(7, Src::Reg(1), Src::Reg(3)),
            bra(2, Some((7, false))),
            add(2, Src::Reg(1), Src::Imm(0)),
            (None, Op::Exit),
        ];
        assert!(!uniform(ops.clone(), 5, 1), "counted in the loop");
        assert!(!uniform(ops.clone(), 2, 1), "at the loop's start");
        assert!(!uniform(ops, 6, 2), "from what the loop counted");
        // A loop the lanes leave together, around a branch they take apart (2: its start).
        let ops = vec![
            lane.clone(),
            ctaid.clone(),
            apart.clone(),
            bra(5, Some((7, false))),
            add(2, Src::Reg(3), Src::Imm(1)),
            add(1, Src::Reg(1), Src::Imm(1)),
            less(6, Src::Reg(1), Src::Imm(100)),
            bra(2, Some((6, false))),
            (None, Op::Exit),
        ];
        assert!(uniform(ops.clone(), 2, 1), "at the loop's start");
        assert!(uniform(ops.clone(), 8, 1), "after the loop");
        assert!(!uniform(ops.clone(), 5, 2), "from the lane's number");
        // The same inside a function the kernel calls: the simple rule, every block after
        // the split apart.
        let mut called = ops.clone();
        called[8] = (None, Op::Ret);
        called.push((
            None,
            Op::Call {
                target: 0,
                args: vec![],
                rets: vec![],
            },
        ));
        called.push((None, Op::Exit));
        assert!(!uniform(called, 8, 1), "after the loop, with a call");
        // Lanes that leave the kernel (3, to 6) never meet the others again.
        let leaving = |last: Vec<(Option<(Reg, bool)>, Op)>| {
            let mut ops = vec![
                lane.clone(),
                apart.clone(),
                ctaid.clone(),
                bra(6, Some((7, false))),
                ctaid.clone(),
                add(2, Src::Reg(1), Src::Imm(1)),
            ];
            ops.extend(last);
            ops
        };
        let exit = leaving(vec![(None, Op::Exit)]);
        assert!(uniform(exit, 5, 1));
        let ret = leaving(vec![(None, Op::Ret)]);
        assert!(uniform(ret, 5, 1));
        // Unless where they go does more than leave: there the ways meet.
        let more = leaving(vec![add(4, Src::Reg(1), Src::Imm(0)), (None, Op::Exit)]);
        assert!(!uniform(more.clone(), 5, 1) && !uniform(more, 7, 4));
        // A guarded `ret` the lanes do not share: those that stay run on together.
        let ops = vec![
            lane,
            apart,
            (Some((7, false)), Op::Ret),
            ctaid,
            add(2, Src::Reg(1), Src::Imm(1)),
            (None, Op::Exit),
        ];
        assert!(uniform(ops, 5, 2));
    }

    /// A guest's kernel of thousands of splits whose ways all meet again would have the
    /// walks for them visit its blocks tens of millions of times over: past
    /// `parting::MAX_WORK` every block counts as reached apart (what is written after
    /// them differs, where below it, a write where the last split's ways meet does not).
    #[test]
    fn a_kernel_of_endless_splits_is_analysed_within_a_bound() {
        let ops = |n: usize| {
            let mut ops = vec![
                from(3, Src::Special(Special::LaneId)),
                less(7, Src::Reg(3), Src::Imm(9)),
            ];
            for _ in 0..n {
                let i = ops.len() as u32;
                ops.push(bra(i + 2, Some((7, false))));
                ops.push(add(2, Src::Special(Special::Ctaid(0)), Src::Imm(1)));
            }
            ops.push(add(4, Src::Special(Special::Ctaid(0)), Src::Imm(2)));
            ops.push((None, Op::Exit));
            ops
        };
        let few = ops(100);
        assert!(uniform(few.clone(), few.len() - 1, 4), "below the bound");
        let many = ops(5000);
        assert!(!uniform(many.clone(), many.len() - 1, 4), "past the bound");
    }

    /// A register fits in 32 bits after 32-bit arithmetic, a comparison, a load of 4 bytes
    /// extended without sign and a move of `%tid.x`; not after 64-bit arithmetic, a
    /// product widened to 64 bits, a sign-extending load, a 64-bit immediate or the clock;
    /// where two ways meet, only if it fits on both.
    #[test]
    fn a_register_fits_in_32_bits_where_every_way_writes_it_so() {
        let bin = |op, ty, d: Reg| {
            let op = Op::Bin {
                op,
                ty,
                d,
                a: Src::Imm(3),
                b: Src::Imm(5),
                ftz: false,
                sat: false,
                round: crate::ir::Round::Default,
                nan: false,
            };
            (None, op)
        };
        let load = |ty, d: Reg| {
            let op = Op::Ld {
                space: MemSpace::Global,
                ty,
                n: 1,
                d: [d, 0, 0, 0],
                addr: Addr {
                    base: Some(0),
                    global: None,
                    offset: 0,
                },
            };
            (None, op)
        };
        let ops = vec![
            from(0, Src::Special(Special::Tid(0))),
            bin(BinOp::Add, Ty::U32, 1),
            bin(BinOp::Add, Ty::U64, 2),
            bin(BinOp::MulWide, Ty::U32, 3),
            less(4, Src::Reg(0), Src::Imm(9)),
            load(Ty::U32, 5),
            load(Ty::S32, 6),
            mov(7, 1 << 32),
            from(8, Src::Special(Special::Clock)),
            mov(9, 7),
            bra(12, Some((4, false))),
            mov(9, 1 << 40),
            (None, Op::Exit),
        ];
        let at = |r| {
            let code = code(ops.clone());
            let facts = Constants::of(&code).expect("analysed").at(&code, 12);
            facts.expect("an instruction").narrow(r)
        };
        for r in [0, 1, 4, 5] {
            assert!(at(r), "register {r} fits in 32 bits");
        }
        for r in [2, 3, 6, 7, 8, 9] {
            assert!(!at(r), "register {r} does not");
        }
    }

    #[test]
    fn huge_register_numbers_are_not_analysed() {
        let ops = vec![mov(1 << 22, 16), mov(2, 31), shfl(1 << 22, 2)];
        assert!(Constants::of(&code(ops)).is_none());
        // Past MAX_REGS in one block too, whose table alone would fit.
        let ops = vec![mov(5000, 16), mov(2, 31), shfl(5000, 2)];
        assert!(Constants::of(&code(ops)).is_none());
        let ops = vec![mov(4000, 16), mov(2, 31), shfl(4000, 2)];
        assert!(Constants::of(&code(ops)).is_some());
    }
}
