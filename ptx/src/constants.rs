//! Registers that hold the same known value on every path to an instruction.
//!
//! Compilers keep a warp shuffle's lane and clamp operands in registers (`mov.u32 %r43, 16;`
//! … `shfl.sync.bfly.b32 %r45, %r41, %r43, %r42, %r44;`), often set far from the shuffles
//! that use them: ggml's block reductions set them once and shuffle again after a barrier.
//! Knowing them lets compiled code turn a shuffle into a move per lane. This is the classic
//! forward analysis over the kernel's control-flow graph (the one of
//! [`crate::liveness`], calls and returns included), for one thread: a register is known at
//! an instruction when every path from the kernel's start sets it with an unguarded
//! `mov` of the same immediate and nothing writes it after; a guarded `mov` keeps it known
//! only where it writes the value the register already holds. Registers start unknown.

use crate::ir::{Inst, Op, Reg, Src};

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

/// The most register values the analysis keeps for one kernel's blocks (16 MiB); a kernel
/// that would need more is not analysed, and no register is known in it.
const MAX_VALUES: usize = 1 << 20;

/// Known register values of a kernel's code, at its warp-wide instructions (the registers
/// each reads).
pub struct Constants {
    known: std::collections::HashMap<usize, Vec<(Reg, u64)>>,
}

/// `state` after `inst`.
fn step(inst: &Inst, state: &mut [Value]) {
    let guarded = inst.guard.is_some();
    let known = match inst.op {
        Op::Mov { d, a: Src::Imm(v) } => Some((d, v)),
        _ => None,
    };
    inst.clone().visit_regs(|r, def| {
        if !def {
            return;
        }
        let Some(slot) = state.get_mut(*r as usize) else {
            return;
        };
        *slot = match known {
            Some((d, v)) if d == *r && guarded => slot.meet(Value::Known(v)),
            Some((d, v)) if d == *r => Value::Known(v),
            _ => Value::Any,
        };
    });
}

impl Constants {
    /// The known values of `code`'s registers, or `None` when its tables would pass
    /// [`MAX_VALUES`].
    pub fn of(code: &[Inst]) -> Option<Constants> {
        let mut regs = 0usize;
        for inst in code {
            inst.clone()
                .visit_regs(|r, _| regs = regs.max(*r as usize + 1));
        }
        let (ranges, succs) = crate::liveness::blocks(code);
        if regs.saturating_mul(ranges.len()) > MAX_VALUES {
            return None;
        }
        let mut entry = vec![vec![Value::Unreached; regs]; ranges.len()];
        if let Some(first) = entry.first_mut() {
            first.iter_mut().for_each(|v| *v = Value::Any);
        }
        // Each block's exit flows into its successors' entries, to a fixed point: a value
        // only moves down (unreached, known, any), so this ends.
        let mut work: Vec<usize> = (0..ranges.len()).rev().collect();
        let mut queued = vec![true; ranges.len()];
        while let Some(b) = work.pop() {
            queued[b] = false;
            let mut state = entry[b].clone();
            for inst in &code[ranges[b].clone()] {
                step(inst, &mut state);
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
        // What the warp-wide instructions read, where it is known.
        let mut known = std::collections::HashMap::new();
        for (b, r) in ranges.iter().enumerate() {
            let mut state = entry[b].clone();
            for i in r.clone() {
                if crate::exec::is_warp_op(&code[i].op) {
                    let mut found = Vec::new();
                    code[i].clone().visit_regs(|r, def| {
                        if let (false, Some(Value::Known(v))) = (def, state.get(*r as usize)) {
                            found.push((*r, *v));
                        }
                    });
                    if !found.is_empty() {
                        known.insert(i, found);
                    }
                }
                step(&code[i], &mut state);
            }
        }
        Some(Constants { known })
    }

    /// The value register `r` holds when the warp-wide instruction `i` starts, on every
    /// path there, if one is known.
    pub fn at(&self, i: usize, r: Reg) -> Option<u64> {
        let found = self.known.get(&i)?;
        found.iter().find(|(x, _)| *x == r).map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinOp, ShflMode, Ty};

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
        Constants::of(&code(ops)).expect("analysed").at(at, r)
    }

    #[test]
    fn a_mov_of_an_immediate_is_known_at_later_shuffles() {
        let ops = vec![mov(1, 16), mov(2, 31), shfl(1, 2), shfl(1, 2)];
        assert_eq!(known(ops.clone(), 2, 1), Some(16));
        assert_eq!(known(ops.clone(), 2, 2), Some(31));
        assert_eq!(known(ops.clone(), 3, 1), Some(16));
        // Registers nothing set are not known, nor registers the shuffle does not read.
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

    #[test]
    fn huge_register_numbers_are_not_analysed() {
        let ops = vec![mov(1 << 22, 16), mov(2, 31), shfl(1 << 22, 2)];
        assert!(Constants::of(&code(ops)).is_none());
    }
}
