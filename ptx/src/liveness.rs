//! Register liveness, and the compaction of a kernel's register slots it allows.
//!
//! A compiler's PTX names a fresh virtual register for nearly every value: ggml's kernels
//! declare 150–360 registers a thread, of which a few dozen are live at once. Each
//! register is a slot of 32 lanes × 8 bytes in a warp's register file, so a block of
//! 1,024 threads of such a kernel would carry megabytes of registers, far more than the
//! host's caches hold. [`compact`] gives registers whose live ranges never overlap the same
//! slot, which is what a GPU's register allocator does too.
//!
//! The analysis is the classic one over the kernel's control-flow graph, for one thread:
//! each lane follows its own path through the code whatever the warp does, and the warp-wide
//! instructions read other lanes' registers only at the instruction the lanes execute
//! together, where those registers are live in every lane. Calls go to their callee and
//! `ret` goes back to every call's next instruction, a safe over-approximation. A guarded
//! write leaves the register as it was in lanes whose guard is false, so it counts as a
//! use too.
//!
//! Each register's live range is widened to one interval of instruction indices (from the
//! first instruction where it is live to the last), and registers whose intervals do not
//! meet share a slot, chosen by a linear scan. Intervals that touch at an instruction do
//! not share, so an instruction may read its sources and write its destinations in any
//! order.

use crate::ir::{Inst, Kernel, Op, Reg};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A set of registers.
#[derive(Clone, PartialEq)]
struct Set(Vec<u64>);

impl Set {
    fn new(regs: usize) -> Set {
        Set(vec![0; regs.div_ceil(64)])
    }
    fn insert(&mut self, r: Reg) {
        self.0[r as usize / 64] |= 1 << (r % 64);
    }
    fn contains(&self, r: Reg) -> bool {
        self.0[r as usize / 64] & (1 << (r % 64)) != 0
    }
    fn iter(&self) -> impl Iterator<Item = Reg> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            let mut b = bits;
            std::iter::from_fn(move || {
                (b != 0).then(|| {
                    let t = b.trailing_zeros();
                    b &= b - 1;
                    w as Reg * 64 + t
                })
            })
        })
    }
}

/// Whether control never falls through to the next instruction when `i` runs unguarded.
fn ends_flow(op: &Op) -> bool {
    matches!(
        op,
        Op::Bra { .. } | Op::Call { .. } | Op::Ret | Op::Exit | Op::Trap
    )
}

/// The basic blocks of `code` as `start..end` ranges, and each block's successors.
pub(crate) fn blocks(code: &[Inst]) -> (Vec<std::ops::Range<usize>>, Vec<Vec<usize>>) {
    let n = code.len();
    let mut leader = vec![false; n + 1];
    leader[0] = true;
    let mut returns = Vec::new();
    for (i, inst) in code.iter().enumerate() {
        match inst.op {
            Op::Bra { target } | Op::Call { target, .. } => {
                if let Some(l) = leader.get_mut(target as usize) {
                    *l = true;
                }
            }
            _ => {}
        }
        if matches!(inst.op, Op::Call { .. }) {
            returns.push(i + 1);
        }
        if ends_flow(&inst.op) {
            leader[i + 1] = true;
        }
    }
    let mut ranges = Vec::new();
    let mut block_of = vec![0usize; n + 1];
    let mut start = 0;
    for i in 1..=n {
        if leader[i] || i == n {
            for b in &mut block_of[start..i] {
                *b = ranges.len();
            }
            ranges.push(start..i);
            start = i;
        }
    }
    block_of[n] = usize::MAX;
    let succs = ranges
        .iter()
        .map(|r| {
            let last = &code[r.end - 1];
            let mut s = Vec::new();
            let mut to = |pc: usize| {
                if pc < n {
                    s.push(block_of[pc]);
                }
            };
            match last.op {
                Op::Bra { target } | Op::Call { target, .. } => to(target as usize),
                Op::Ret => returns.iter().for_each(|&pc| to(pc)),
                _ => {}
            }
            if !ends_flow(&last.op) || last.guard.is_some() {
                to(r.end);
            }
            s.sort_unstable();
            s.dedup();
            s
        })
        .collect();
    (ranges, succs)
}

/// The liveness of each block of some code: its blocks, and the registers live on entry to
/// and exit from each.
struct Flow {
    regs: usize,
    ranges: Vec<std::ops::Range<usize>>,
    live_in: Vec<Set>,
    live_out: Vec<Set>,
}

/// Calls `f` with the registers an instruction reads (a guarded write counts as a read:
/// lanes whose guard is false keep the old value) and those it surely writes.
fn uses_defs(inst: &mut Inst, mut f: impl FnMut(Reg, bool)) {
    let guarded = inst.guard.is_some();
    inst.visit_regs(|r, def| f(*r, def && !guarded));
}

/// The most words of register sets (64 registers a word) an analysis keeps for one
/// kernel's blocks or instructions: 16 MiB a table. A kernel that would need more (a
/// hostile one: hundreds of thousands of registers and of blocks) is not analysed: its
/// registers keep their slots, and every register counts as live everywhere.
const MAX_WORDS: usize = 1 << 21;

/// Register numbers past this are not analysed either (tables of one entry a register).
const MAX_REGS: usize = 1 << 20;

/// The liveness of `code`'s blocks, or `None` when its tables would pass [`MAX_WORDS`] or
/// it names registers past [`MAX_REGS`].
fn flow(code: &mut [Inst]) -> Option<Flow> {
    let mut regs = 0usize;
    for inst in code.iter_mut() {
        inst.visit_regs(|r, _| regs = regs.max(*r as usize + 1));
    }
    // Upward-exposed uses and unconditional writes of each block.
    let (ranges, succs) = blocks(code);
    if regs > MAX_REGS || regs.div_ceil(64).saturating_mul(ranges.len()) > MAX_WORDS {
        return None;
    }
    let (mut gen, mut kill) = (Vec::new(), Vec::new());
    for r in &ranges {
        let (mut g, mut kl) = (Set::new(regs), Set::new(regs));
        for inst in &mut code[r.clone()] {
            let mut defs = Vec::new();
            uses_defs(inst, |r, def| {
                if def {
                    defs.push(r);
                } else if !kl.contains(r) {
                    g.insert(r);
                }
            });
            defs.into_iter().for_each(|d| kl.insert(d));
        }
        gen.push(g);
        kill.push(kl);
    }
    // Live-in and live-out of each block, to a fixed point.
    let nb = ranges.len();
    let mut live_in: Vec<Set> = gen.clone();
    let mut live_out = vec![Set::new(regs); nb];
    let mut changed = true;
    while changed {
        changed = false;
        for b in (0..nb).rev() {
            let mut out = Set::new(regs);
            for &s in &succs[b] {
                for (o, i) in out.0.iter_mut().zip(&live_in[s].0) {
                    *o |= i;
                }
            }
            let mut inn = gen[b].clone();
            for ((x, o), kl) in inn.0.iter_mut().zip(&out.0).zip(&kill[b].0) {
                *x |= o & !kl;
            }
            if inn != live_in[b] {
                live_in[b] = inn;
                changed = true;
            }
            live_out[b] = out;
        }
    }
    Some(Flow {
        regs,
        ranges,
        live_in,
        live_out,
    })
}

/// The registers live after each instruction of some code: those that a later instruction
/// may read before writing them, on some path from there.
pub struct Liveness {
    words: usize,
    /// `words` words for each instruction.
    bits: Vec<u64>,
}

impl Liveness {
    /// The liveness of `code`.
    pub fn of(code: &[Inst]) -> Liveness {
        let everything = Liveness {
            words: 0,
            bits: Vec::new(),
        };
        let mut code = code.to_vec();
        let Some(f) = flow(&mut code) else {
            return everything;
        };
        let words = f.regs.div_ceil(64);
        if words.saturating_mul(code.len()) > MAX_WORDS {
            return everything;
        }
        let mut bits = vec![0u64; words * code.len()];
        for (b, range) in f.ranges.iter().enumerate() {
            let mut live = f.live_out[b].clone();
            for at in range.clone().rev() {
                bits[at * words..(at + 1) * words].copy_from_slice(&live.0);
                let mut uses = Vec::new();
                uses_defs(&mut code[at], |r, def| {
                    if def {
                        live.0[r as usize / 64] &= !(1 << (r % 64));
                    } else {
                        uses.push(r);
                    }
                });
                uses.into_iter().for_each(|r| live.insert(r));
            }
        }
        Liveness { words, bits }
    }

    /// Whether register `r` may be read after instruction `pc` before it is written again
    /// (`true` for anything this analysis did not see or did not analyse, to be safe).
    pub fn live_after(&self, pc: usize, r: Reg) -> bool {
        let w = r as usize / 64;
        if w >= self.words {
            return true;
        }
        self.bits
            .get(pc * self.words + w)
            .is_none_or(|b| b & (1 << (r % 64)) != 0)
    }
}

/// Renumbers the registers of `k` so that registers never live at once share a slot, and
/// sets `k.regs` to the slots used. The kernel computes exactly what it computed before.
pub fn compact(k: &mut Kernel) {
    let code = &mut k.code;
    if code.is_empty() {
        return;
    }
    let Some(Flow {
        regs,
        ranges,
        live_in,
        live_out,
    }) = flow(code)
    else {
        return;
    };
    // Each register's interval: every instruction where it is read or written, and the
    // ends of the blocks it is live into or out of.
    let mut lo = vec![u32::MAX; regs];
    let mut hi = vec![0u32; regs];
    let mut reach = |r: Reg, at: usize| {
        let (r, at) = (r as usize, at as u32);
        lo[r] = lo[r].min(at);
        hi[r] = hi[r].max(at);
    };
    for (b, range) in ranges.iter().enumerate() {
        live_in[b].iter().for_each(|r| reach(r, range.start));
        live_out[b].iter().for_each(|r| reach(r, range.end - 1));
        for at in range.clone() {
            code[at].visit_regs(|r, _| reach(*r, at));
        }
    }
    // Linear scan: a slot is free again once the interval holding it has ended.
    let mut order: Vec<Reg> = (0..regs as Reg)
        .filter(|&r| lo[r as usize] != u32::MAX)
        .collect();
    order.sort_unstable_by_key(|&r| (lo[r as usize], r));
    let mut slot = vec![0 as Reg; regs];
    let mut active: BinaryHeap<Reverse<(u32, Reg)>> = BinaryHeap::new();
    let mut free: Vec<Reg> = Vec::new();
    let mut slots = 0;
    for r in order {
        let start = lo[r as usize];
        while let Some(&Reverse((end, s))) = active.peek() {
            if end >= start {
                break;
            }
            active.pop();
            free.push(s);
        }
        let s = free.pop().unwrap_or_else(|| {
            slots += 1;
            slots - 1
        });
        slot[r as usize] = s;
        active.push(Reverse((hi[r as usize], s)));
    }
    // The slots a lane may read before writing them: those of the registers live where
    // the kernel starts, and of every register an instruction reads across lanes.
    let mut first: Vec<Reg> = live_in
        .first()
        .map(|s| s.iter().map(|r| slot[r as usize]).collect())
        .unwrap_or_default();
    for inst in code.iter_mut() {
        if reads_other_lanes(&inst.op) {
            inst.visit_regs(|r, _| first.push(slot[*r as usize]));
        }
        inst.visit_regs(|r, _| *r = slot[*r as usize]);
    }
    first.sort_unstable();
    first.dedup();
    k.regs = slots;
    k.read_first = Some(first);
}

/// Whether an instruction may read the registers of lanes other than its own (of lanes
/// that exited or wait elsewhere, too): a shuffle, a vote, a warp's matrix operation.
fn reads_other_lanes(op: &Op) -> bool {
    matches!(
        op,
        Op::Shfl { .. }
            | Op::Vote { .. }
            | Op::Mma { .. }
            | Op::LdMatrix { .. }
            | Op::MovMatrix { .. }
            | Op::WmmaLoad { .. }
            | Op::WmmaMma { .. }
            | Op::WmmaStore { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Src;

    fn kernel(code: Vec<(Option<(Reg, bool)>, Op)>, regs: u32) -> Kernel {
        Kernel {
            name: "k".into(),
            params: vec![],
            param_bytes: 0,
            regs,
            shared_bytes: 0,
            local_bytes: 0,
            frame_bytes: 0,
            read_first: None,
            code: code
                .into_iter()
                .map(|(guard, op)| Inst { guard, op, line: 1 })
                .collect(),
        }
    }

    fn mov(d: Reg, a: Src) -> Op {
        Op::Mov { d, a }
    }

    fn add(d: Reg, a: Reg, b: Reg) -> Op {
        Op::Bin {
            op: crate::ir::BinOp::Add,
            ty: crate::ir::Ty::U32,
            d,
            a: Src::Reg(a),
            b: Src::Reg(b),
            ftz: false,
            sat: false,
            round: Default::default(),
            nan: false,
        }
    }

    /// Values used one after another share a slot; values live at once do not, nor do an
    /// instruction's sources and destination.
    #[test]
    fn sequential_values_share_slots() {
        let mut k = kernel(
            vec![
                (None, mov(10, Src::Imm(1))),
                (None, mov(11, Src::Imm(2))),
                (None, add(12, 10, 11)),
                (None, add(13, 12, 12)),
                (None, add(14, 13, 13)),
                (None, Op::Exit),
            ],
            20,
        );
        compact(&mut k);
        assert_eq!(k.regs, 3);
        let Op::Bin { d, a, b, .. } = &k.code[2].op else {
            panic!()
        };
        assert_ne!(a, b);
        assert_ne!(Src::Reg(*d), *a);
        assert_ne!(Src::Reg(*d), *b);
    }

    /// A value live around a loop's back edge keeps its slot through the whole loop, and a
    /// guarded write keeps the old value alive.
    #[test]
    fn loops_and_guarded_writes_keep_values_alive() {
        let mut k = kernel(
            vec![
                (None, mov(1, Src::Imm(0))),             // 0: acc
                (None, mov(2, Src::Imm(5))),             // 1: old value of 2
                (None, mov(3, Src::Imm(1))),             // 2: loop top: temp
                (None, add(1, 1, 3)),                    // 3: acc += temp
                (Some((4, false)), mov(2, Src::Imm(7))), // 4: guarded: 2 stays live
                (None, Op::Bra { target: 2 }),           // 5
                (None, add(5, 1, 2)),                    // 6: unreachable but read
                (None, Op::Exit),
            ],
            6,
        );
        compact(&mut k);
        let regs_at = |i: usize| {
            let mut v = Vec::new();
            k.code[i].clone().visit_regs(|r, _| v.push(*r));
            v
        };
        // acc (1), 2, the temp (3) and the guard (4) are live at once in the loop.
        let (acc, two, temp) = (regs_at(0)[0], regs_at(1)[0], regs_at(2)[0]);
        let guard = regs_at(4)[0];
        let mut all = vec![acc, two, temp, guard];
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4, "{all:?}");
    }

    /// What each instruction leaves live: values read later (around loops too), not values
    /// overwritten first or never read; a guarded write keeps the old value live.
    #[test]
    fn live_after_each_instruction() {
        let k = kernel(
            vec![
                (None, mov(1, Src::Imm(0))),             // 0
                (None, mov(2, Src::Imm(5))),             // 1: overwritten before read
                (None, mov(2, Src::Imm(6))),             // 2
                (None, add(1, 1, 2)),                    // 3: loop top
                (Some((3, false)), mov(2, Src::Imm(7))), // 4: guarded
                (None, Op::Bra { target: 3 }),           // 5
                (None, Op::Exit),                        // 6
            ],
            4,
        );
        let l = Liveness::of(&k.code);
        let live = |pc| (0..4).filter(|&r| l.live_after(pc, r)).collect::<Vec<_>>();
        assert_eq!(live(0), [1, 3]);
        assert_eq!(live(1), [1, 3]);
        assert_eq!(live(2), [1, 2, 3]);
        assert_eq!(live(3), [1, 2, 3]);
        assert_eq!(live(4), [1, 2, 3]);
        assert_eq!(live(5), [1, 2, 3]);
        assert!(live(6).is_empty());
        // Registers and places it never saw are live, to be safe.
        assert!(l.live_after(0, 1000));
        assert!(l.live_after(99, 0));
    }

    /// The slots a launch clears: those of registers some path reads before writing (a
    /// guarded write reads its register and its guard), and those an instruction reads
    /// from other lanes, written first or not; not those always written first.
    #[test]
    fn read_first_holds_what_a_lane_may_read_before_writing() {
        let mut k = kernel(
            vec![
                (Some((4, false)), mov(1, Src::Imm(7))), // 0: reads 1 and 4 first
                (None, add(2, 1, 1)),                    // 1: 2 written first
                (None, mov(6, Src::Imm(3))),             // 2: 6 written first...
                (
                    None,
                    Op::MovMatrix {
                        d: 5,
                        a: Src::Reg(6),
                    },
                ), // 3: ...read across lanes
                (None, add(3, 2, 5)),                    // 4
                (None, add(3, 3, 1)),                    // 5
                (Some((4, false)), mov(3, Src::Imm(0))), // 6
                (None, Op::Exit),
            ],
            7,
        );
        compact(&mut k);
        // The register an instruction writes: the last it names (its guard and sources
        // come first).
        let written = |i: usize| {
            let mut last = None;
            k.code[i].clone().visit_regs(|r, _| last = Some(*r));
            last.expect("a register")
        };
        let guard = k.code[0].guard.expect("a guard").0;
        let (one, two, six, five) = (written(0), written(1), written(2), written(3));
        let first = k.read_first.clone().expect("analysed");
        for r in [one, guard, six, five] {
            assert!(first.contains(&r), "{r} in {first:?}");
        }
        assert!(!first.contains(&two), "{two} in {first:?}");
        let mut plain = kernel(
            vec![
                (None, mov(1, Src::Imm(1))),
                (None, add(2, 1, 1)),
                (None, Op::Exit),
            ],
            3,
        );
        compact(&mut plain);
        assert_eq!(plain.read_first, Some(vec![]));
    }

    /// A kernel whose tables would be too large is left as it is, and everything in it
    /// counts as live: its analysis takes no more than a bounded amount of memory.
    #[test]
    fn huge_register_numbers_are_not_analysed() {
        let mut k = kernel(
            vec![
                (None, mov(u32::MAX - 1, Src::Imm(1))),
                (None, mov(3, Src::Reg(u32::MAX - 1))),
                (None, Op::Exit),
            ],
            4,
        );
        let before = k.clone();
        compact(&mut k);
        assert_eq!(k, before);
        let l = Liveness::of(&k.code);
        assert!(l.live_after(1, 3) && l.live_after(2, 0));
    }
}
