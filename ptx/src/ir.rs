//! The executable form of a module: what [`crate::lower`] makes of the syntax tree once every
//! name is resolved and every instruction form is checked. Registers are slot numbers,
//! labels are instruction indices, types are enums: the interpreter ([`crate::exec`]) never
//! looks at a string.

use std::collections::HashMap;

/// A register slot of a function's frame (predicates included).
pub type Reg = u32;

/// A scalar type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// `.pred`.
    Pred,
    /// `.b8`, `.u8`.
    U8,
    /// `.s8`.
    S8,
    /// `.b16`, `.u16`.
    U16,
    /// `.s16`.
    S16,
    /// `.b32`, `.u32`.
    U32,
    /// `.s32`.
    S32,
    /// `.b64`, `.u64`.
    U64,
    /// `.s64`.
    S64,
    /// `.f16`.
    F16,
    /// `.bf16`.
    BF16,
    /// `.f32`.
    F32,
    /// `.f64`.
    F64,
    /// `.f16x2` (two f16 in 32 bits).
    F16x2,
    /// `.bf16x2`.
    BF16x2,
}

impl Ty {
    /// Size in bytes.
    pub fn size(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::U8 | Ty::S8 => 1,
            Ty::U16 | Ty::S16 | Ty::F16 | Ty::BF16 => 2,
            Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::BF16x2 => 4,
            Ty::U64 | Ty::S64 | Ty::F64 => 8,
        }
    }

    /// Signed integer.
    pub fn signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    /// Floating point (scalar).
    pub fn float(self) -> bool {
        matches!(self, Ty::F16 | Ty::BF16 | Ty::F32 | Ty::F64)
    }

    /// Parses a type name without its dot.
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "pred" => Ty::Pred,
            "b8" | "u8" => Ty::U8,
            "s8" => Ty::S8,
            "b16" | "u16" => Ty::U16,
            "s16" => Ty::S16,
            "b32" | "u32" => Ty::U32,
            "s32" => Ty::S32,
            "b64" | "u64" => Ty::U64,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "bf16" => Ty::BF16,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "f16x2" => Ty::F16x2,
            "bf16x2" => Ty::BF16x2,
            _ => return None,
        })
    }
}

/// A source operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Src {
    /// A register.
    Reg(Reg),
    /// An immediate, already in the register representation of the instruction's type
    /// (f32 as its bits in the low 32 bits, integers sign- or zero-extended).
    Imm(u64),
    /// A special register.
    Special(Special),
    /// The device address of module variable `n` ([`Program::globals`]), plus an offset.
    Global(u32, i64),
}

/// Special registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// `%tid.{x,y,z}`.
    Tid(u8),
    /// `%ntid.{x,y,z}`.
    Ntid(u8),
    /// `%ctaid.{x,y,z}`.
    Ctaid(u8),
    /// `%nctaid.{x,y,z}`.
    Nctaid(u8),
    /// `%laneid`.
    LaneId,
    /// `%warpid`.
    WarpId,
    /// `%nwarpid`.
    NWarpId,
    /// `%lanemask_{eq,le,lt,ge,gt}` (0..4 in that order).
    LaneMask(u8),
    /// `%clock`, `%clock64`, `%globaltimer`: a counter.
    Clock,
    /// `%smid`, `%nsmid`, `%gridid`, `%envreg*`, `%dynamic_smem_size`, `%total_smem_size`.
    Zero,
    /// `%dynamic_smem_size`.
    DynSmem,
}

impl Special {
    /// Whether every lane of a warp reads the same value (not `%tid`, `%laneid`, the lane
    /// masks, nor the clock).
    pub fn same_in_every_lane(self) -> bool {
        matches!(
            self,
            Special::Ntid(_)
                | Special::Ctaid(_)
                | Special::Nctaid(_)
                | Special::WarpId
                | Special::NWarpId
                | Special::DynSmem
                | Special::Zero
        )
    }
}

/// Memory state spaces the interpreter addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemSpace {
    /// Generic addressing: global, shared or local by the address window.
    Generic,
    /// `.global` (and `.const`, which lives in device memory here).
    Global,
    /// `.shared`: offsets into the block's shared memory.
    Shared,
    /// `.local`: offsets into the thread's local memory.
    Local,
    /// `.param` of a kernel: offsets into the parameter buffer.
    Param,
    /// `.param` of a function, and the argument and result variables of a call: offsets
    /// into the thread's call frames.
    Frame,
}

/// An address: base register (or none) plus a constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Addr {
    /// Base register.
    pub base: Option<Reg>,
    /// A module variable whose device address is added ([`Program::globals`]).
    pub global: Option<u32>,
    /// Constant offset (a resolved symbol's address included).
    pub offset: i64,
}

/// Integer and float binary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `add`.
    Add,
    /// `sub`.
    Sub,
    /// `mul.lo` (and float `mul`).
    MulLo,
    /// `mul.hi`.
    MulHi,
    /// `mul.wide` (the destination is twice as wide).
    MulWide,
    /// `div`.
    Div,
    /// `rem`.
    Rem,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `and`.
    And,
    /// `or`.
    Or,
    /// `xor`.
    Xor,
    /// `shl`.
    Shl,
    /// `shr` (arithmetic for signed types).
    Shr,
    /// `copysign` (`d = |b| with the sign of a`).
    CopySign,
}

/// Unary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// `neg`.
    Neg,
    /// `abs`.
    Abs,
    /// `not`.
    Not,
    /// `cnot`.
    CNot,
    /// `popc`.
    Popc,
    /// `clz`.
    Clz,
    /// `brev`.
    Brev,
    /// `sqrt`.
    Sqrt,
    /// `rsqrt`.
    Rsqrt,
    /// `rcp`.
    Rcp,
    /// `sin`.
    Sin,
    /// `cos`.
    Cos,
    /// `lg2`.
    Lg2,
    /// `ex2`.
    Ex2,
    /// `tanh`.
    Tanh,
}

/// Comparison of `setp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// eq.
    Eq,
    /// ne.
    Ne,
    /// lt (lo for unsigned).
    Lt,
    /// le (ls).
    Le,
    /// gt (hi).
    Gt,
    /// ge (hs).
    Ge,
    /// Unordered variants of the float comparisons: `equ`, `neu`, `ltu`, `leu`, `gtu`, `geu`.
    Unordered(u8),
    /// `num`: both are numbers.
    Num,
    /// `nan`: either is NaN.
    Nan,
}

/// Boolean combination of `setp`/`set` with a predicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoolOp {
    /// `.and`.
    And,
    /// `.or`.
    Or,
    /// `.xor`.
    Xor,
}

/// Rounding of a conversion or an arithmetic operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Round {
    /// No modifier (the default for the types involved).
    #[default]
    Default,
    /// `.rn` / `.rni`.
    Nearest,
    /// `.rz` / `.rzi`.
    Zero,
    /// `.rm` / `.rmi`.
    Down,
    /// `.rp` / `.rpi`.
    Up,
}

/// Atomic operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomOp {
    /// `add`.
    Add,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `and`.
    And,
    /// `or`.
    Or,
    /// `xor`.
    Xor,
    /// `exch`.
    Exch,
    /// `cas`.
    Cas,
    /// `inc` (wrapping at b).
    Inc,
    /// `dec`.
    Dec,
}

/// Half-precision operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfOp {
    /// `add`.
    Add,
    /// `sub`.
    Sub,
    /// `mul`.
    Mul,
    /// `fma`.
    Fma,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `neg`.
    Neg,
    /// `abs`.
    Abs,
    /// `ex2.approx`.
    Ex2,
    /// `tanh.approx`.
    Tanh,
}

/// The reduction of `bar.red`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarRed {
    /// `.and.pred`.
    And,
    /// `.or.pred`.
    Or,
    /// `.popc.u32`.
    Popc,
}

/// Shuffle modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShflMode {
    /// `.up`.
    Up,
    /// `.down`.
    Down,
    /// `.bfly`.
    Bfly,
    /// `.idx`.
    Idx,
}

/// Vote modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteMode {
    /// `.all`.
    All,
    /// `.any`.
    Any,
    /// `.uni`.
    Uni,
    /// `.ballot`.
    Ballot,
}

/// One executable instruction (the guard is kept beside it, in [`Inst`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `mov`.
    Mov { d: Reg, a: Src },
    /// `mov` of a vector into one register: `d = parts[0] | parts[1] << bits | ...`.
    Pack { d: Reg, parts: Vec<Src>, bits: u32 },
    /// `mov` of one register into a vector: `ds[i] = a >> (i * bits)`.
    Unpack { ds: Vec<Reg>, a: Src, bits: u32 },
    /// `prmt.b32` with its mode (0 = the default byte selector; 1..=6: f4e, b4e, rc8, ecl,
    /// ecr, rc16).
    Prmt {
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
        mode: u8,
    },
    /// `bfe`: extract `c` bits at position `b`.
    Bfe {
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `bfi`: insert the low `len` bits of `a` into `b` at `pos`.
    Bfi {
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        pos: Src,
        len: Src,
    },
    /// `dp4a` (`two` = false) or `dp2a.lo/hi` (`two` = true, `hi` picks the half of `b`).
    Dp {
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
        a_signed: bool,
        b_signed: bool,
        two: bool,
        hi: bool,
    },
    /// `lop3.b32` with its truth table.
    Lop3 {
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
        lut: u8,
    },
    /// `shf.l`/`shf.r` (funnel shift of `b:a` by `c`), wrapping or clamping the amount.
    Shf {
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
        left: bool,
        clamp: bool,
    },
    /// `cvt.rn.{f16x2,bf16x2}.f32 d, a, b`: `a` into the upper half, `b` into the lower.
    CvtPack {
        dty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        relu: bool,
    },
    /// Half-precision arithmetic (`.f16`, `.bf16`, `.f16x2`, `.bf16x2`): each 16-bit lane
    /// computed in f32 (f64 for `fma`) and rounded once to the type.
    Half {
        op: HalfOp,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
        ftz: bool,
        sat: bool,
    },
    /// Generic-to-space or space-to-generic conversion of an address.
    Cvta {
        d: Reg,
        a: Src,
        space: MemSpace,
        to_generic: bool,
    },
    /// Binary operations.
    Bin {
        op: BinOp,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        ftz: bool,
        sat: bool,
        /// Rounding of f32 `add`/`sub`/`mul` (directed modes only for those).
        round: Round,
        /// `min.NaN`/`max.NaN`: a NaN operand gives NaN.
        nan: bool,
    },
    /// `mad`/`fma` (`mode`: for integers 0 lo, 1 hi, 2 wide).
    Mad {
        ty: Ty,
        mode: u8,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
        ftz: bool,
        sat: bool,
        /// Rounding of f32 `fma` (directed modes only for f32).
        round: Round,
    },
    /// Unary operations.
    Un {
        op: UnOp,
        ty: Ty,
        d: Reg,
        a: Src,
        ftz: bool,
    },
    /// `setp`: `d = a cmp b [bop c]`, `d2 = !(a cmp b) [bop c]`.
    Setp {
        cmp: Cmp,
        ty: Ty,
        d: Reg,
        d2: Option<Reg>,
        a: Src,
        b: Src,
        combine: Option<(BoolOp, Src, bool)>,
        /// `.ftz`: f32 subnormal operands compare as zero.
        ftz: bool,
    },
    /// `selp`: `d = p ? a : b`.
    Selp { d: Reg, a: Src, b: Src, p: Src },
    /// `cvt`.
    Cvt {
        dty: Ty,
        sty: Ty,
        round: Round,
        sat: bool,
        ftz: bool,
        d: Reg,
        a: Src,
    },
    /// `ld` of `n` elements (vector loads fill `d[0..n]`).
    Ld {
        space: MemSpace,
        ty: Ty,
        n: u8,
        d: [Reg; 4],
        addr: Addr,
    },
    /// `st` of `n` elements.
    St {
        space: MemSpace,
        ty: Ty,
        n: u8,
        a: [Src; 4],
        addr: Addr,
    },
    /// `atom` (and `red` with `d = None`).
    Atom {
        space: MemSpace,
        op: AtomOp,
        ty: Ty,
        d: Option<Reg>,
        addr: Addr,
        b: Src,
        c: Src,
    },
    /// Branch to an instruction index.
    Bra { target: u32 },
    /// `bar.sync` / `barrier.sync` (`bar.arrive` waits too; the block's threads all take part).
    Bar,
    /// `bar.red`: a barrier that also reduces a predicate over the block's threads.
    BarRed {
        op: BarRed,
        d: Reg,
        p: Src,
        negate: bool,
    },
    /// `bar.warp.sync`, `membar`, `fence`, `nanosleep`: nothing to do in this execution
    /// model.
    Nop,
    /// `shfl.sync`: `d = a from the lane chosen by b and c`, `p` = whether it was in range.
    Shfl {
        mode: ShflMode,
        d: Reg,
        p: Option<Reg>,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `vote.sync`.
    Vote {
        mode: VoteMode,
        d: Reg,
        a: Src,
        negate: bool,
    },
    /// `activemask`.
    ActiveMask { d: Reg },
    /// `mma.sync.aligned.<shape>.row.col`: D = A·B + C over the warp ([`crate::mma`]).
    Mma {
        shape: crate::mma::MmaShape,
        d: Vec<Reg>,
        a: Vec<Src>,
        b: Vec<Src>,
        c: Vec<Src>,
    },
    /// `ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].b16`: `d.len()` 8×8 matrices whose
    /// rows' addresses the first `8·d.len()` lanes give.
    LdMatrix {
        space: MemSpace,
        trans: bool,
        d: Vec<Reg>,
        addr: Addr,
    },
    /// `movmatrix.sync.aligned.m8n8.trans.b16`.
    MovMatrix { d: Reg, a: Src },
    /// `wmma.load.{a,b,c}`: a fragment from memory laid out by rows (or by columns) with a
    /// stride in elements ([`crate::mma::WmmaShape::at`] says which lane holds what).
    WmmaLoad {
        shape: crate::mma::WmmaShape,
        frag: crate::mma::Fragment,
        ty: Ty,
        col: bool,
        space: MemSpace,
        d: Vec<Reg>,
        addr: Addr,
        stride: Src,
    },
    /// `wmma.mma`: D = A·B + C (`ab`: the type of A and B, `cty`/`dty`: of C and D).
    WmmaMma {
        shape: crate::mma::WmmaShape,
        ab: Ty,
        cty: Ty,
        dty: Ty,
        d: Vec<Reg>,
        a: Vec<Src>,
        b: Vec<Src>,
        c: Vec<Src>,
    },
    /// `wmma.store.d`.
    WmmaStore {
        shape: crate::mma::WmmaShape,
        ty: Ty,
        col: bool,
        space: MemSpace,
        addr: Addr,
        a: Vec<Src>,
        stride: Src,
    },
    /// `call` of a function of the module: copy the arguments into the callee's frame
    /// (`args`: from, to, bytes), remember where to return, jump to `target`.
    Call {
        target: u32,
        args: Vec<(u32, u32, u32)>,
        rets: Vec<(u32, u32, u32)>,
    },
    /// `ret` of a function: copy the results back (the `rets` of the call) and return.
    Ret,
    /// `call vprintf`: format the string at the address in frame slot `fmt` with the
    /// arguments at the address in slot `args`, into the device's log; 0 into `ret`.
    Printf {
        fmt: u32,
        args: u32,
        ret: Option<u32>,
    },
    /// `ret` of a kernel, and `exit`.
    Exit,
    /// `trap`.
    Trap,
}

/// An instruction with its guard and source line.
#[derive(Clone, Debug, PartialEq)]
pub struct Inst {
    /// `@p` (`false`) or `@!p` (`true`).
    pub guard: Option<(Reg, bool)>,
    /// The operation.
    pub op: Op,
    /// Line in the PTX text.
    pub line: u32,
}

/// One kernel parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// Offset in the parameter buffer.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A kernel, ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Its name.
    pub name: String,
    /// Parameters, in order.
    pub params: Vec<Param>,
    /// Bytes of the parameter buffer.
    pub param_bytes: u32,
    /// Register slots of a thread.
    pub regs: u32,
    /// Bytes of static shared memory (dynamic shared memory follows it).
    pub shared_bytes: u32,
    /// Bytes of local memory per thread.
    pub local_bytes: u32,
    /// Bytes of call frames (function parameters and call arguments) per thread.
    pub frame_bytes: u32,
    /// The code: the kernel's, then the functions it calls.
    pub code: Vec<Inst>,
    /// The register slots a lane may read before it writes them, sorted (`None`: any):
    /// those live where the kernel starts, and those of the instructions that read other
    /// lanes' registers. A launch clears only these: no other slot's value can reach
    /// anything the kernel computes.
    pub read_first: Option<Vec<Reg>>,
}

/// A module-scope variable the module needs in device memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Global {
    /// Its name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Alignment.
    pub align: u32,
    /// Initial bytes (empty when the variable has no initializer: it starts zeroed).
    pub init: Vec<u8>,
    /// `.const` rather than `.global`.
    pub constant: bool,
    /// Declared `.extern`: defined elsewhere (refused at load today).
    pub external: bool,
}

/// A checked module: its kernels and the variables they need.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    /// Kernels by name.
    pub kernels: HashMap<String, Kernel>,
    /// Module-scope variables in device memory, in declaration order.
    pub globals: Vec<Global>,
    /// Kernels the checker refused, with why (the rest of the module still runs).
    pub refused: HashMap<String, crate::lower::LowerError>,
}

impl Inst {
    /// Calls `f` on each register the instruction reads (`false`) and writes (`true`), its
    /// guard included, so that a pass can find or rename them all. [`crate::lower::SINK`]
    /// is not a register and is skipped. A vector's unused elements (past `n` of `ld` and
    /// `st`) are skipped too.
    pub fn visit_regs(&mut self, mut f: impl FnMut(&mut Reg, bool)) {
        let mut reg = |r: &mut Reg, def: bool| {
            if *r != crate::lower::SINK {
                f(r, def)
            }
        };
        if let Some((g, _)) = &mut self.guard {
            reg(g, false);
        }
        // Sources first, then destinations, in no particular order within each.
        macro_rules! uses {
            ($($s:expr),*) => {{ $(if let Src::Reg(r) = $s { reg(r, false); })* }};
        }
        macro_rules! uses_all {
            ($v:expr) => {{
                for s in $v.iter_mut() {
                    uses!(s);
                }
            }};
        }
        let base = |a: &mut Addr, reg: &mut dyn FnMut(&mut Reg, bool)| {
            if let Some(b) = &mut a.base {
                reg(b, false);
            }
        };
        match &mut self.op {
            Op::Mov { d, a }
            | Op::Un { d, a, .. }
            | Op::Cvt { d, a, .. }
            | Op::Cvta { d, a, .. }
            | Op::MovMatrix { d, a } => {
                uses!(a);
                reg(d, true);
            }
            Op::Pack { d, parts, .. } => {
                uses_all!(parts);
                reg(d, true);
            }
            Op::Unpack { ds, a, .. } => {
                uses!(a);
                ds.iter_mut().for_each(|d| reg(d, true));
            }
            Op::Prmt { d, a, b, c, .. }
            | Op::Bfe { d, a, b, c, .. }
            | Op::Dp { d, a, b, c, .. }
            | Op::Lop3 { d, a, b, c, .. }
            | Op::Shf { d, a, b, c, .. }
            | Op::Half { d, a, b, c, .. }
            | Op::Mad { d, a, b, c, .. } => {
                uses!(a, b, c);
                reg(d, true);
            }
            Op::Selp { d, a, b, p } => {
                uses!(a, b, p);
                reg(d, true);
            }
            Op::Bfi {
                d, a, b, pos, len, ..
            } => {
                uses!(a, b, pos, len);
                reg(d, true);
            }
            Op::CvtPack { d, a, b, .. } | Op::Bin { d, a, b, .. } => {
                uses!(a, b);
                reg(d, true);
            }
            Op::Setp {
                d,
                d2,
                a,
                b,
                combine,
                ..
            } => {
                uses!(a, b);
                if let Some((_, Src::Reg(p), _)) = combine {
                    reg(p, false);
                }
                reg(d, true);
                if let Some(d2) = d2 {
                    reg(d2, true);
                }
            }
            Op::Ld { n, d, addr, .. } => {
                base(addr, &mut reg);
                let n = usize::from(*n).min(d.len());
                d[..n].iter_mut().for_each(|d| reg(d, true));
            }
            Op::St { n, a, addr, .. } => {
                base(addr, &mut reg);
                let n = usize::from(*n).min(a.len());
                uses_all!(a[..n]);
            }
            Op::Atom { d, addr, b, c, .. } => {
                base(addr, &mut reg);
                uses!(b, c);
                if let Some(d) = d {
                    reg(d, true);
                }
            }
            Op::BarRed { d, p, .. } => {
                uses!(p);
                reg(d, true);
            }
            Op::Shfl { d, p, a, b, c, .. } => {
                uses!(a, b, c);
                reg(d, true);
                if let Some(p) = p {
                    reg(p, true);
                }
            }
            Op::Vote { d, a, .. } => {
                uses!(a);
                reg(d, true);
            }
            Op::ActiveMask { d } => reg(d, true),
            Op::Mma { d, a, b, c, .. } | Op::WmmaMma { d, a, b, c, .. } => {
                uses_all!(a);
                uses_all!(b);
                uses_all!(c);
                d.iter_mut().for_each(|d| reg(d, true));
            }
            Op::LdMatrix { d, addr, .. } => {
                base(addr, &mut reg);
                d.iter_mut().for_each(|d| reg(d, true));
            }
            Op::WmmaLoad {
                d, addr, stride, ..
            } => {
                base(addr, &mut reg);
                uses!(stride);
                d.iter_mut().for_each(|d| reg(d, true));
            }
            Op::WmmaStore {
                addr, a, stride, ..
            } => {
                base(addr, &mut reg);
                uses!(stride);
                uses_all!(a);
            }
            Op::Bra { .. }
            | Op::Bar
            | Op::Nop
            | Op::Call { .. }
            | Op::Ret
            | Op::Printf { .. }
            | Op::Exit
            | Op::Trap => {}
        }
    }
}
