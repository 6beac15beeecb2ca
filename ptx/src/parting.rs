//! Where the lanes of a warp that part at a branch may be apart, for [`crate::constants`].
//!
//! Lanes that take different ways at a branch whose guard differs between them each follow
//! their own path. What they write on the way may differ from lane to lane; what they
//! write once every path has come together again, from registers nothing on the way
//! wrote, does not. So a split makes lanes apart in the blocks reachable from its
//! successors before the branch's immediate post-dominator (the first block every path
//! from it passes: where the paths meet), not in that block or after it. A loop whose
//! exit differs between lanes lies wholly before the exit's post-dominator, so what its
//! iterations write differs after it, as it must (lanes leave it after different numbers
//! of iterations).
//!
//! And where the ways never meet again (one of them only returns, the early
//! `if (i >= n) return;` of nearly every kernel), a lane on one way never runs an
//! instruction together with a lane on the other: the split makes no lanes apart at all.
//! Blocks that do nothing but return or exit count as meeting nowhere (nothing in them
//! reads a register). A guarded `ret` is such a split, its lanes leaving the kernel.
//!
//! Code with calls keeps the simple rule: every block reachable from a split's successors
//! may be reached apart (a `ret` goes back to every call, and paths through callees meet
//! in ways this does not follow).

use crate::ir::{Inst, Op};
use std::ops::Range;

/// The blocks a split at the end of a block makes lanes apart in (computed when asked).
pub(crate) struct Parting<'a> {
    succs: &'a [Vec<usize>],
    /// Each block's immediate post-dominator: a block, the kernel's exit (`succs.len()`)
    /// or `NONE` (a block from which no path leaves the kernel); made when first needed
    /// (most kernels' splits are early exits, whose ways never meet).
    ipdom: Option<Vec<usize>>,
    /// Blocks that do nothing but return or exit.
    exit_only: Vec<bool>,
    /// Whether the code calls: then the simple rule (the module's documentation).
    calls: bool,
    /// What the walks of the graph have cost so far, in blocks ([`MAX_WORK`]).
    work: usize,
}

/// The most blocks the walks for one kernel's splits may visit (each walk counted as
/// many as the kernel has blocks, for its table of those seen): past it, a split has no
/// answer and the caller takes every block as reached apart. A kernel's work grows with
/// its splits times its blocks; the registry ggml-cuda build's kernels take at most
/// 1.8 M, and a guest's kernel with hundreds of thousands of both would take minutes.
const MAX_WORK: usize = 1 << 26;

/// No post-dominator: no path from the block leaves the kernel.
const NONE: usize = usize::MAX;

impl<'a> Parting<'a> {
    /// For the blocks (`ranges`, `succs`, as [`crate::liveness::blocks`] gives them) of `code`.
    pub(crate) fn new(code: &[Inst], ranges: &[Range<usize>], succs: &'a [Vec<usize>]) -> Self {
        let calls = code.iter().any(|i| matches!(i.op, Op::Call { .. }));
        let exit_only = ranges
            .iter()
            .map(|r| {
                code[r.clone()]
                    .iter()
                    .all(|i| i.guard.is_none() && matches!(i.op, Op::Ret | Op::Exit))
            })
            .collect();
        Parting {
            succs,
            ipdom: None,
            exit_only,
            calls,
            work: 0,
        }
    }

    /// The blocks lanes may be apart in after they part at the end of block `b` (asked
    /// once a block: the caller marks them); `None` once the walks have cost
    /// [`MAX_WORK`].
    pub(crate) fn apart(&mut self, b: usize) -> Option<Vec<usize>> {
        let succs = &self.succs[b];
        if self.calls {
            return self.reach(succs, NONE, false);
        }
        // Ways that never meet (outside blocks that only leave the kernel).
        let ways: Vec<Vec<usize>> = succs
            .iter()
            .map(|&s| self.reach(&[s], NONE, true))
            .collect::<Option<_>>()?;
        let meet = ways.iter().enumerate().any(|(i, a)| {
            ways[i + 1..]
                .iter()
                .any(|w| w.iter().any(|x| a.binary_search(x).is_ok()))
        });
        if !meet {
            return Some(Vec::new());
        }
        let succs_all = self.succs;
        let ipdom = self.ipdom.get_or_insert_with(|| post_dominators(succs_all))[b];
        self.reach(succs, ipdom, false)
    }

    /// The blocks reachable from `from` without entering `stop`, skipping blocks that only
    /// leave the kernel where `skip_exits`; sorted. `None` past [`MAX_WORK`].
    fn reach(&mut self, from: &[usize], stop: usize, skip_exits: bool) -> Option<Vec<usize>> {
        self.work = self.work.saturating_add(self.succs.len());
        if self.work > MAX_WORK {
            return None;
        }
        let mut seen = vec![false; self.succs.len()];
        let mut work: Vec<usize> = from.to_vec();
        let mut out = Vec::new();
        while let Some(x) = work.pop() {
            if x == stop || seen[x] || (skip_exits && self.exit_only[x]) {
                continue;
            }
            seen[x] = true;
            out.push(x);
            work.extend(self.succs[x].iter().copied());
        }
        out.sort_unstable();
        Some(out)
    }
}

/// Each block's immediate post-dominator (`succs.len()` standing for the kernel's exit,
/// which blocks without successors go to; [`NONE`] where no path leaves the kernel): the
/// dominators of the reversed graph, by Cooper, Harvey and Kennedy's iteration.
fn post_dominators(succs: &[Vec<usize>]) -> Vec<usize> {
    let n = succs.len();
    let exit = n;
    let mut preds = vec![Vec::new(); n + 1];
    for (b, s) in succs.iter().enumerate() {
        if s.is_empty() {
            preds[exit].push(b);
        }
        for &t in s {
            preds[t].push(b);
        }
    }
    // Post-order of the reversed graph from the exit.
    let mut number = vec![NONE; n + 1];
    let mut order = Vec::with_capacity(n + 1);
    let mut stack = vec![(exit, 0usize)];
    let mut seen = vec![false; n + 1];
    seen[exit] = true;
    while let Some((x, next)) = stack.pop() {
        if let Some(&p) = preds[x].get(next) {
            stack.push((x, next + 1));
            if !seen[p] {
                seen[p] = true;
                stack.push((p, 0));
            }
        } else {
            number[x] = order.len();
            order.push(x);
        }
    }
    // In the reversed graph a block's predecessors are its successors (or the exit).
    let outs = |x: usize| -> Vec<usize> {
        if succs[x].is_empty() {
            vec![exit]
        } else {
            succs[x].clone()
        }
    };
    let mut idom = vec![NONE; n + 1];
    idom[exit] = exit;
    let mut changed = true;
    while changed {
        changed = false;
        for &x in order.iter().rev().filter(|&&x| x != exit) {
            let mut new = NONE;
            for s in outs(x) {
                if idom[s] == NONE {
                    continue;
                }
                new = if new == NONE {
                    s
                } else {
                    let (mut a, mut b) = (new, s);
                    while a != b {
                        while number[a] < number[b] {
                            a = idom[a];
                        }
                        while number[b] < number[a] {
                            b = idom[b];
                        }
                    }
                    a
                };
            }
            if new != idom[x] {
                idom[x] = new;
                changed = true;
            }
        }
    }
    idom.truncate(n);
    idom
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_dominators_of_a_diamond_a_loop_and_an_endless_loop() {
        // 0 -> 1, 2; 1 -> 3; 2 -> 3; 3 -> 4, 3 (a loop); 4 exits. 5 -> 5 forever.
        let succs = vec![vec![1, 2], vec![3], vec![3], vec![3, 4], vec![], vec![5]];
        let p = post_dominators(&succs);
        assert_eq!(p, vec![3, 3, 3, 4, 6, NONE]);
    }
}
