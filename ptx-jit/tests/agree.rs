//! Compiled runs compute what the interpreter computes: random programs of the
//! instructions a run may hold (every per-lane operation, and the warp-wide ones on
//! registers: shuffles, votes, `activemask`; random types, modifiers, operands, guards
//! and forward branches that split the warp) run once interpreted and once with
//! [`vgpu_ptx_jit::Jit`], over random register values (NaNs, infinities, subnormals and
//! integer edges among them), and every register of every lane must come out bit for bit
//! the same.

use std::time::{Duration, Instant};
use vgpu_ptx::exec::{run, Launch, Memory};
use vgpu_ptx::ir::*;
use vgpu_ptx_jit::DirectMemory;

const BASE: u64 = 0x7f00_0000_0000;
/// Registers the random instructions use (r2..r2+NR); r0 and r1 hold the lane's index and
/// its slice of memory.
const NR: u32 = 12;
/// Threads of a block, and blocks.
const BLOCK: [u32; 3] = [16, 2, 2];
const BLOCKS: u32 = 2;
const THREADS: u32 = 64 * BLOCKS;
/// Bytes of the kernel's parameters.
const PARAMS: u32 = 64;
/// Bytes of a block's shared memory (dynamic).
const SHARED: u64 = 512;
/// The register that holds the lane's index times 8 (no random instruction writes it).
const LANE8: Reg = 2 + NR;
/// A loop's counter and its condition (no random instruction writes them).
const COUNTER: Reg = 3 + NR;
const LOOP_P: Reg = 4 + NR;
/// The number of passes of a loop that differs between lanes: 1 + the lane's index mod 4.
const LOOP_N: Reg = 5 + NR;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    /// A register value: an edge of some type, or random bits.
    fn value(&mut self) -> u64 {
        let edges: [u64; 26] = [
            0x7C00,      // f16 infinity
            0x8001,      // f16 subnormal, negative
            0xFE01,      // f16 NaN with a payload
            0x0080_0000, // the smallest normal f32
            0,
            1,
            u64::MAX,
            0x8000_0000,
            0x7FFF_FFFF,
            0xFFFF_FFFF,
            f32::NAN.to_bits().into(),
            f32::INFINITY.to_bits().into(),
            (-1.5f32).to_bits().into(),
            1.0f32.to_bits().into(),
            0x0000_0001, // the smallest f32 subnormal
            0x7F7F_FFFF, // the largest f32, whose reciprocal is subnormal
            0x3C00_BC00, // f16x2: 1.0, -1.0
            f64::NAN.to_bits(),
            (-2.25f64).to_bits(),
            i64::MIN as u64,
            31,
            0x3F80_1000, // 1 + 2^-11: an f16 tie, kept even
            0x3F80_3000, // 1 + 3·2^-11: an f16 tie, rounded up
            0x477F_F000, // 65520: rounds to the f16 infinity
            0x3DCC_CCCD, // 0.1: rounded to f16
            0xFF80_0001, // a signalling f32 NaN, negative
        ];
        match self.below(3) {
            0 => self.pick(&edges),
            1 => self.below(70),
            _ => self.next(),
        }
    }
}

fn reg(rng: &mut Rng) -> Reg {
    2 + rng.below(u64::from(NR)) as Reg
}

fn src(rng: &mut Rng) -> Src {
    match rng.below(12) {
        0 => Src::Imm(rng.value()),
        1 => Src::Special(Special::LaneId),
        2 => Src::Special(Special::LaneMask(rng.below(5) as u8)),
        3 => {
            let d = rng.below(3) as u8;
            Src::Special(rng.pick(&[
                Special::Tid(d),
                Special::Ntid(d),
                Special::Ctaid(d),
                Special::Nctaid(d),
                Special::WarpId,
                Special::NWarpId,
                Special::DynSmem,
                Special::Zero,
            ]))
        }
        _ => Src::Reg(reg(rng)),
    }
}

/// Random programs run.
const CASES: usize = 300;

/// Bytes of the memory the kernels load from: each thread's registers in, then out.
const REGION: u64 = THREADS as u64 * NR as u64 * 8;

/// A warp-wide instruction on registers alone: a shuffle of any mode and clamp (register
/// or immediate lane and clamp operands), a vote, `activemask`.
fn warp_op(rng: &mut Rng) -> Op {
    let d = reg(rng);
    let plain = |rng: &mut Rng| {
        if rng.chance(2) {
            Src::Reg(reg(rng))
        } else {
            Src::Imm(rng.value())
        }
    };
    match rng.below(4) {
        0 | 1 => Op::Shfl {
            mode: rng.pick(&[ShflMode::Up, ShflMode::Down, ShflMode::Bfly, ShflMode::Idx]),
            d,
            p: rng.chance(2).then(|| reg(rng)),
            a: Src::Reg(reg(rng)),
            b: if rng.chance(2) {
                Src::Imm(rng.below(32))
            } else {
                plain(rng)
            },
            c: if rng.chance(2) {
                Src::Imm(rng.pick(&[0x1f, 0, 0x101f, 0x181f, 0x1c1f, 0x7]))
            } else {
                plain(rng)
            },
        },
        2 => Op::Vote {
            mode: rng.pick(&[
                VoteMode::All,
                VoteMode::Any,
                VoteMode::Uni,
                VoteMode::Ballot,
            ]),
            d,
            a: plain(rng),
            negate: rng.chance(2),
        },
        _ => Op::ActiveMask { d },
    }
}

/// The types loads are made of.
const LOAD_TYPES: [Ty; 9] = [
    Ty::U8,
    Ty::S8,
    Ty::U16,
    Ty::S16,
    Ty::U32,
    Ty::S32,
    Ty::U64,
    Ty::S64,
    Ty::F32,
];

/// A load from global memory: mostly inside it (r1, the thread's offset, plus a constant),
/// now and then at a random register (a fault, usually).
fn global_load(rng: &mut Rng) -> Op {
    let ty = rng.pick(&LOAD_TYPES);
    let n = rng.pick(&[1u8, 1, 2, 4]);
    let size = u64::from(ty.size());
    let mut d = [0; 4];
    for x in d.iter_mut().take(usize::from(n)) {
        *x = reg(rng);
    }
    let (base, offset) = if rng.chance(40) {
        (reg(rng), rng.below(64) as i64)
    } else {
        (1, (BASE + rng.below(REGION / size) * size) as i64)
    };
    // Now and then a generic load: of the same global memory, or in the shared window (at
    // the lane's own place, or past the block's shared memory), or in the local window
    // (these kernels have no local memory: a fault).
    if rng.chance(3) {
        use vgpu_ptx::exec::{LOCAL_WINDOW, SHARED_WINDOW};
        let (base, offset) = match rng.below(12) {
            0..=5 => (base, offset),
            6..=9 => (LANE8, (SHARED_WINDOW + rng.below(64 / size) * size) as i64),
            10 => (LANE8, (SHARED_WINDOW + SHARED) as i64),
            _ => (LANE8, LOCAL_WINDOW as i64),
        };
        return Op::Ld {
            space: MemSpace::Generic,
            ty,
            n,
            d,
            addr: Addr {
                base: Some(base),
                global: None,
                offset,
            },
        };
    }
    Op::Ld {
        space: MemSpace::Global,
        ty,
        n,
        d,
        addr: Addr {
            base: Some(base),
            global: None,
            offset,
        },
    }
}

/// A store to global memory of 1 to 4 random operands: mostly to the thread's own slice,
/// now and then to one place all the lanes store to (the last lane's value must win, as
/// interpreted), or at a random register (a fault, usually).
fn global_store(rng: &mut Rng) -> Op {
    let ty = rng.pick(&LOAD_TYPES);
    let n = rng.pick(&[1u8, 1, 2, 4]);
    let size = u64::from(ty.size());
    let mut a = [Src::Imm(0); 4];
    for x in a.iter_mut().take(usize::from(n)) {
        *x = src(rng);
    }
    let (base, offset) = match rng.below(40) {
        0 => (Some(reg(rng)), rng.below(64) as i64),
        1..=6 => (None, (BASE + rng.below(8) * 8) as i64),
        _ => (Some(1), (BASE + rng.below(REGION / size - 4) * size) as i64),
    };
    Op::St {
        space: MemSpace::Global,
        ty,
        n,
        a,
        addr: Addr {
            base,
            global: None,
            offset,
        },
    }
}

/// A load or store of 1 to 4 elements in the block's shared memory: at the lane's own
/// place (r14 = its lane index times 8, plus a constant), at one place all the lanes use,
/// or now and then at a random register (often outside, or misaligned).
fn shared_access(rng: &mut Rng) -> Op {
    let ty = rng.pick(&LOAD_TYPES);
    let n = rng.pick(&[1u8, 1, 2, 4]);
    let size = u64::from(ty.size());
    let (base, offset) = match rng.below(30) {
        0 => (Some(reg(rng)), rng.below(16) as i64),
        1..=14 => (Some(LANE8), (rng.below(64 / size) * size) as i64),
        _ => (None, (rng.below(SHARED / size - 4) * size) as i64),
    };
    let addr = Addr {
        base,
        global: None,
        offset,
    };
    if rng.chance(2) {
        let mut a = [Src::Imm(0); 4];
        for x in a.iter_mut().take(usize::from(n)) {
            *x = src(rng);
        }
        Op::St {
            space: MemSpace::Shared,
            ty,
            n,
            a,
            addr,
        }
    } else {
        let mut d = [0; 4];
        for x in d.iter_mut().take(usize::from(n)) {
            *x = reg(rng);
        }
        Op::Ld {
            space: MemSpace::Shared,
            ty,
            n,
            d,
            addr,
        }
    }
}

/// A load from the parameters at a constant offset, aligned and inside them.
fn param_load(rng: &mut Rng) -> Op {
    let ty = rng.pick(&LOAD_TYPES);
    let n = rng.pick(&[1u8, 1, 2, 4]);
    let bytes = u64::from(ty.size()) * u64::from(n);
    let slots = (u64::from(PARAMS) - bytes) / u64::from(ty.size()) + 1;
    let mut d = [0; 4];
    for x in d.iter_mut().take(usize::from(n)) {
        *x = reg(rng);
    }
    Op::Ld {
        space: MemSpace::Param,
        ty,
        n,
        d,
        addr: Addr {
            base: None,
            global: None,
            offset: (rng.below(slots) * u64::from(ty.size())) as i64,
        },
    }
}

fn round(rng: &mut Rng) -> Round {
    rng.pick(&[
        Round::Default,
        Round::Nearest,
        Round::Zero,
        Round::Down,
        Round::Up,
    ])
}

const INTS: [Ty; 6] = [Ty::U16, Ty::S16, Ty::U32, Ty::S32, Ty::U64, Ty::S64];

/// A random per-lane operation.
fn op(rng: &mut Rng) -> Op {
    let d = reg(rng);
    let (a, b, c) = (src(rng), src(rng), src(rng));
    match rng.below(28) {
        0 => Op::Mov { d, a },
        24 => global_store(rng),
        25..=27 => shared_access(rng),
        22 => warp_op(rng),
        23 => Op::Nop,
        19 => param_load(rng),
        20 | 21 => global_load(rng),
        1..=3 => {
            use BinOp::*;
            let (op, ty, ftz, sat, round, nan) = match rng.below(3) {
                0 => {
                    let ty = rng.pick(&INTS);
                    let op = rng.pick(&[
                        Add, Sub, MulLo, MulHi, Div, Rem, Min, Max, And, Or, Xor, Shl, Shr,
                    ]);
                    let op = if ty.size() <= 4 && rng.chance(8) {
                        MulWide
                    } else {
                        op
                    };
                    let sat = ty == Ty::S32 && matches!(op, Add | Sub) && rng.chance(2);
                    (op, ty, false, sat, Round::Default, false)
                }
                1 => {
                    let ty = rng.pick(&[Ty::F32, Ty::F32, Ty::F64]);
                    let op = rng.pick(&[Add, Sub, MulLo, Div, Min, Max, CopySign]);
                    let f32 = ty == Ty::F32;
                    let r = if f32 && matches!(op, Add | Sub | MulLo) {
                        round(rng)
                    } else {
                        Round::Default
                    };
                    let nan = matches!(op, Min | Max) && rng.chance(3);
                    (op, ty, f32 && rng.chance(3), rng.chance(5), r, nan)
                }
                _ => (
                    rng.pick(&[And, Or, Xor]),
                    Ty::Pred,
                    false,
                    false,
                    Round::Default,
                    false,
                ),
            };
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
            }
        }
        4 | 5 => {
            let (ty, mode) = match rng.below(3) {
                0 => {
                    let ty = rng.pick(&[Ty::U32, Ty::S32]);
                    (ty, rng.below(3) as u8)
                }
                1 => (rng.pick(&[Ty::U64, Ty::S64]), rng.below(2) as u8),
                _ => (rng.pick(&[Ty::F32, Ty::F32, Ty::F64]), 0),
            };
            let f32 = ty == Ty::F32;
            Op::Mad {
                ty,
                mode,
                d,
                a,
                b,
                c,
                ftz: f32 && rng.chance(3),
                sat: (f32 || (ty == Ty::S32 && mode == 0)) && rng.chance(4),
                round: if f32 { round(rng) } else { Round::Default },
            }
        }
        6 | 7 => {
            let ty = rng.pick(&[
                Ty::U16,
                Ty::S16,
                Ty::U32,
                Ty::S32,
                Ty::U64,
                Ty::S64,
                Ty::F32,
                Ty::F64,
            ]);
            let mut cmps = vec![Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge];
            if ty.float() {
                cmps.extend([Cmp::Unordered(rng.below(6) as u8), Cmp::Num, Cmp::Nan]);
            }
            let combine = rng.chance(3).then(|| {
                (
                    rng.pick(&[BoolOp::And, BoolOp::Or, BoolOp::Xor]),
                    src(rng),
                    rng.chance(2),
                )
            });
            Op::Setp {
                cmp: rng.pick(&cmps),
                ty,
                d,
                d2: rng.chance(3).then(|| reg(rng)),
                a,
                b,
                combine,
                ftz: ty == Ty::F32 && rng.chance(3),
            }
        }
        8 => Op::Selp { d, a, b, p: c },
        9 | 10 => {
            let all = [
                Ty::U8,
                Ty::S8,
                Ty::U16,
                Ty::S16,
                Ty::U32,
                Ty::S32,
                Ty::U64,
                Ty::S64,
                Ty::F16,
                Ty::BF16,
                Ty::F32,
                Ty::F64,
            ];
            let (dty, sty) = if rng.chance(2) {
                (rng.pick(&all[..8]), rng.pick(&all[..8]))
            } else {
                (rng.pick(&all), rng.pick(&all))
            };
            let float = dty.float() || sty.float();
            // A float to itself rounds to an integer when it has a rounding modifier.
            let r = if float && (dty != sty || rng.chance(2)) {
                rng.pick(&[
                    Round::Default,
                    Round::Nearest,
                    Round::Zero,
                    Round::Down,
                    Round::Up,
                ])
            } else {
                Round::Default
            };
            Op::Cvt {
                dty,
                sty,
                round: r,
                sat: rng.chance(3),
                ftz: (dty == Ty::F32 || sty == Ty::F32) && rng.chance(3),
                d,
                a,
            }
        }
        11 => {
            let (op, ty) = if rng.chance(2) {
                (
                    rng.pick(&[
                        UnOp::Neg,
                        UnOp::Abs,
                        UnOp::Not,
                        UnOp::Popc,
                        UnOp::Clz,
                        UnOp::Brev,
                    ]),
                    rng.pick(&[Ty::U32, Ty::S32, Ty::U64, Ty::S64]),
                )
            } else if rng.chance(8) {
                (rng.pick(&[UnOp::Not, UnOp::CNot]), Ty::Pred)
            } else {
                (
                    rng.pick(&[
                        UnOp::Neg,
                        UnOp::Abs,
                        UnOp::Sqrt,
                        UnOp::Rsqrt,
                        UnOp::Rcp,
                        UnOp::Sin,
                        UnOp::Cos,
                        UnOp::Lg2,
                        UnOp::Ex2,
                        UnOp::Tanh,
                    ]),
                    Ty::F32,
                )
            };
            Op::Un {
                op,
                ty,
                d,
                a,
                ftz: ty == Ty::F32 && rng.chance(2),
            }
        }
        12 => Op::Lop3 {
            d,
            a,
            b,
            c,
            lut: rng.below(256) as u8,
        },
        13 => Op::Prmt {
            d,
            a,
            b,
            c,
            mode: rng.below(7) as u8,
        },
        14 => {
            if rng.chance(2) {
                Op::Bfe {
                    ty: rng.pick(&[Ty::U32, Ty::S32, Ty::U64, Ty::S64]),
                    d,
                    a,
                    b,
                    c,
                }
            } else {
                Op::Bfi {
                    ty: rng.pick(&[Ty::U32, Ty::U64]),
                    d,
                    a,
                    b,
                    pos: c,
                    len: src(rng),
                }
            }
        }
        15 => {
            if rng.chance(2) {
                Op::Dp {
                    d,
                    a,
                    b,
                    c,
                    a_signed: rng.chance(2),
                    b_signed: rng.chance(2),
                    two: rng.chance(3),
                    hi: rng.chance(2),
                }
            } else {
                Op::Shf {
                    d,
                    a,
                    b,
                    c,
                    left: rng.chance(2),
                    clamp: rng.chance(2),
                }
            }
        }
        16 => match rng.below(3) {
            0 => Op::Pack {
                d,
                parts: vec![a, b],
                bits: rng.pick(&[16, 32]),
            },
            1 => Op::Unpack {
                ds: vec![d, reg(rng)],
                a,
                bits: rng.pick(&[16, 32]),
            },
            _ => Op::Cvta {
                d,
                a,
                space: rng.pick(&[MemSpace::Shared, MemSpace::Local, MemSpace::Global]),
                to_generic: rng.chance(2),
            },
        },
        17 => {
            let ty = rng.pick(&[Ty::F16, Ty::BF16, Ty::F16x2, Ty::BF16x2]);
            Op::Half {
                op: rng.pick(&[
                    HalfOp::Add,
                    HalfOp::Sub,
                    HalfOp::Mul,
                    HalfOp::Fma,
                    HalfOp::Min,
                    HalfOp::Max,
                    HalfOp::Neg,
                    HalfOp::Abs,
                ]),
                ty,
                d,
                a,
                b,
                c,
                ftz: rng.chance(4),
                sat: rng.chance(4),
            }
        }
        18 => Op::CvtPack {
            dty: rng.pick(&[Ty::F16x2, Ty::BF16x2]),
            d,
            a,
            b,
            relu: rng.chance(3),
        },
        _ => unreachable!(),
    }
}

/// A kernel of `code` with `regs` registers, `param_bytes` of parameters and no memory of
/// its own.
/// Each lane stores register `x` plus 100 plus its lane, 8 bytes at 8 times its lane
/// (using registers `y`, `lane`, `z` and `at`), and exits.
fn plus_100_and_lane_stored(x: Reg, [y, lane, z, at]: [Reg; 4]) -> Vec<Inst> {
    use BinOp::*;
    let r = Src::Reg;
    vec![
        inst_of(bin(Add, Ty::U64, y, r(x), Src::Imm(100))),
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(Add, Ty::U64, z, r(y), r(lane))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(store_u64(at, r(z))),
        inst_of(Op::Exit),
    ]
}

/// Runs `k` (ending as [`plus_100_and_lane_stored`] makes it) on one warp with `params`,
/// compiled by `native` if given, and checks that each lane stored `way` plus 100 plus its
/// lane.
fn lanes_hold_plus_100(
    k: &Kernel,
    params: &[u8],
    native: Option<&dyn vgpu_ptx::exec::Native>,
    way: u64,
    what: &str,
) {
    let mem = DirectMemory::zeroed(BASE, 256).expect("aligned memory");
    run(k, &launch((1, [32, 1, 1], 1), params, &mem, native)).expect("runs");
    let out = mem.get(BASE, 256).expect("inside");
    for (i, v) in out.chunks(8).enumerate() {
        let v = u64::from_le_bytes(v.try_into().expect("8 bytes"));
        assert_eq!(v, way + 100 + i as u64, "{what}, lane {i}");
    }
}

/// A load of one `ty` parameter at byte `offset` into register `d`.
fn ld_param(ty: Ty, d: Reg, offset: i64) -> Op {
    ld_one(MemSpace::Param, ty, d, offset)
}

/// A load of one `ty` of state space `space` at address `offset` into register `d`.
fn ld_one(space: MemSpace, ty: Ty, d: Reg, offset: i64) -> Op {
    Op::Ld {
        space,
        ty,
        n: 1,
        d: [d, 0, 0, 0],
        addr: Addr {
            base: None,
            global: None,
            offset,
        },
    }
}

fn small_kernel(name: &str, param_bytes: u32, regs: u32, code: Vec<Inst>) -> Kernel {
    Kernel {
        name: name.into(),
        params: vec![],
        param_bytes,
        regs,
        shared_bytes: 0,
        local_bytes: 0,
        frame_bytes: 0,
        read_first: None,
        code,
    }
}

/// An operation and its guard.
type Guarded = (Op, Option<(Reg, bool)>);

fn inst(op: Op, guard: Option<(Reg, bool)>) -> Inst {
    Inst { guard, op, line: 1 }
}

/// `code` with a counted loop around a short stretch of its random part (`start..end`):
/// the counter (COUNTER) set to 0 before the stretch, then after it incremented, compared
/// with 1 to 5 or with LOOP_N, which differs between lanes (into LOOP_P), and a guarded
/// branch back to the stretch's start. Branches
/// into the stretch land after the counter is set, except those to its first instruction,
/// which set it (the program's start sets it too, so that it is never read unset).
fn with_loop(rng: &mut Rng, code: Vec<Inst>, start: usize, end: usize) -> Vec<Inst> {
    let s = start + rng.below((end - start) as u64) as usize;
    let e = (s + rng.below(5) as usize).min(end - 1);
    let remap = |t: u32| {
        let t = t as usize;
        (if t <= s {
            t
        } else if t <= e {
            t + 1
        } else {
            t + 4
        }) as u32
    };
    let mut out: Vec<Inst> = Vec::with_capacity(code.len() + 4);
    for (i, mut ins) in code.into_iter().enumerate() {
        if let Op::Bra { target } = &mut ins.op {
            *target = remap(*target);
        }
        if i == s {
            out.push(inst_of(mov(COUNTER, Src::Imm(0))));
        }
        out.push(ins);
        if i == e {
            out.push(inst_of(Op::Bin {
                op: BinOp::Add,
                ty: Ty::U32,
                d: COUNTER,
                a: Src::Reg(COUNTER),
                b: Src::Imm(1),
                ftz: false,
                sat: false,
                round: Round::Default,
                nan: false,
            }));
            out.push(inst_of(Op::Setp {
                cmp: Cmp::Lt,
                ty: Ty::U32,
                d: LOOP_P,
                d2: None,
                a: Src::Reg(COUNTER),
                b: if rng.chance(2) {
                    Src::Reg(LOOP_N)
                } else {
                    Src::Imm(1 + rng.below(5))
                },
                combine: None,
                ftz: false,
            }));
            out.push(inst(
                Op::Bra {
                    target: s as u32 + 1,
                },
                Some((LOOP_P, false)),
            ));
        }
    }
    out
}

fn inst_of(op: Op) -> Inst {
    inst(op, None)
}

/// Sets, half the time, a shuffle's register lane or clamp operand with a `mov` of an
/// immediate (now and then guarded) somewhere before it (the instruction there replaced,
/// at or after `start`): just before it, in the same run, or further up, past branches,
/// guards and other writes, so that the value is sometimes known at the shuffle and
/// sometimes not.
fn known_shuffle_operands(rng: &mut Rng, code: &mut [Inst], start: usize) {
    for j in start..code.len() {
        let Op::Shfl { b, c, .. } = code[j].op else {
            continue;
        };
        for (s, clamp) in [(b, false), (c, true)] {
            let Src::Reg(r) = s else { continue };
            if j == start || !rng.chance(2) {
                continue;
            }
            let i = if rng.chance(2) {
                j - 1
            } else {
                start + rng.below((j - start) as u64) as usize
            };
            let v = if clamp {
                rng.pick(&[0x1f, 0, 0x101f, 0x181f, 0x1c1f, 0x7])
            } else {
                rng.below(32)
            };
            // Now and then guarded: known only where every lane holds that value already.
            let guard = rng.chance(4).then(|| (reg(rng), rng.chance(2)));
            code[i] = inst(
                Op::Mov {
                    d: r,
                    a: Src::Imm(v),
                },
                guard,
            );
        }
    }
}

/// A kernel: load NR registers per lane, `n` random instructions (with forward branches,
/// and half the time a loop around a few of them), store the NR registers back.
/// A random program of `n` instructions made by `gen`, one in `guard_one_in` guarded, with
/// forward branches, loops and the loads of the threads' registers before and their stores
/// after.
fn program(rng: &mut Rng, n: usize, gen: fn(&mut Rng) -> Op, guard_one_in: u64) -> Kernel {
    let bytes = u64::from(NR) * 8;
    // r0 = the thread's index in the grid (ctaid.x * 64 + warpid * 32 + laneid), r1 =
    // its offset in memory.
    let sp = |s| Src::Special(s);
    let u64op = |op, d, a, b| {
        inst(
            Op::Bin {
                op,
                ty: Ty::U64,
                d,
                a,
                b,
                ftz: false,
                sat: false,
                round: Round::Default,
                nan: false,
            },
            None,
        )
    };
    let mut code = vec![
        inst(
            Op::Mov {
                d: 0,
                a: sp(Special::Ctaid(0)),
            },
            None,
        ),
        u64op(BinOp::MulLo, 0, Src::Reg(0), Src::Imm(64)),
        inst(
            Op::Mov {
                d: 1,
                a: sp(Special::WarpId),
            },
            None,
        ),
        u64op(BinOp::MulLo, 1, Src::Reg(1), Src::Imm(32)),
        u64op(BinOp::Add, 0, Src::Reg(0), Src::Reg(1)),
        inst(
            Op::Mov {
                d: 1,
                a: sp(Special::LaneId),
            },
            None,
        ),
        u64op(BinOp::Add, 0, Src::Reg(0), Src::Reg(1)),
        u64op(BinOp::MulLo, 1, Src::Reg(0), Src::Imm(bytes)),
        inst(
            Op::Mov {
                d: LANE8,
                a: sp(Special::LaneId),
            },
            None,
        ),
        u64op(BinOp::MulLo, LANE8, Src::Reg(LANE8), Src::Imm(8)),
        inst(
            Op::Mov {
                d: LOOP_N,
                a: sp(Special::LaneId),
            },
            None,
        ),
        u64op(BinOp::And, LOOP_N, Src::Reg(LOOP_N), Src::Imm(3)),
        u64op(BinOp::Add, LOOP_N, Src::Reg(LOOP_N), Src::Imm(1)),
    ];
    for k in 0..NR {
        code.push(inst(
            Op::Ld {
                space: MemSpace::Global,
                ty: Ty::U64,
                n: 1,
                d: [2 + k, 0, 0, 0],
                addr: Addr {
                    base: Some(1),
                    global: None,
                    offset: (BASE + u64::from(k) * 8) as i64,
                },
            },
            None,
        ));
    }
    // The loop's counter starts at 0 for branches into the loop past where it is set.
    code.push(inst_of(mov(COUNTER, Src::Imm(0))));
    let start = code.len();
    let end = start + n;
    for i in start..end {
        let guard = rng.chance(guard_one_in).then(|| (reg(rng), rng.chance(2)));
        let op = if rng.chance(12) {
            // Forward only, so that every program ends.
            Op::Bra {
                target: (i + 1 + rng.below((end - i) as u64) as usize) as u32,
            }
        } else if rng.chance(25) {
            // An instruction no run holds, so that runs also start mid-program.
            Op::Mov {
                d: reg(rng),
                a: Src::Special(Special::Ctaid(0)),
            }
        } else {
            gen(rng)
        };
        code.push(inst(op, guard));
    }
    known_shuffle_operands(rng, &mut code, start);
    if rng.chance(2) {
        code = with_loop(rng, code, start, end);
    }
    let out = BASE + u64::from(THREADS) * bytes;
    for k in 0..NR {
        let mut a = [Src::Imm(0); 4];
        a[0] = Src::Reg(2 + k);
        code.push(inst(
            Op::St {
                space: MemSpace::Global,
                ty: Ty::U64,
                n: 1,
                a,
                addr: Addr {
                    base: Some(1),
                    global: None,
                    offset: (out + u64::from(k) * 8) as i64,
                },
            },
            None,
        ));
    }
    code.push(inst(Op::Exit, None));
    Kernel {
        name: "random".into(),
        params: vec![],
        param_bytes: PARAMS,
        regs: 6 + NR,
        shared_bytes: 0,
        local_bytes: 0,
        frame_bytes: 0,
        read_first: None,
        code,
    }
}

/// `d = a op b` in `ty`, with no modifiers.
/// `setp.lt.u64 d, a, b`.
fn lt_u64(d: Reg, a: Src, b: Src) -> Op {
    Op::Setp {
        cmp: Cmp::Lt,
        ty: Ty::U64,
        d,
        d2: None,
        a,
        b,
        combine: None,
        ftz: false,
    }
}

/// `ld.global.<ty> d, [at + BASE + offset]`.
fn load_at(ty: Ty, d: Reg, at: Reg, offset: u64) -> Op {
    Op::Ld {
        space: MemSpace::Global,
        ty,
        n: 1,
        d: [d, 0, 0, 0],
        addr: Addr {
            base: Some(at),
            global: None,
            offset: (BASE + offset) as i64,
        },
    }
}

/// `st.global.u64 [at + BASE], v`.
fn store_u64(at: Reg, v: Src) -> Op {
    store_u64_at(at, v, 0)
}

/// `st.global.u64 [at + BASE + offset], v`.
fn store_u64_at(at: Reg, v: Src, offset: u64) -> Op {
    Op::St {
        space: MemSpace::Global,
        ty: Ty::U64,
        n: 1,
        a: [v, Src::Imm(0), Src::Imm(0), Src::Imm(0)],
        addr: Addr {
            base: Some(at),
            global: None,
            offset: (BASE + offset) as i64,
        },
    }
}

/// Runs kernel `k` over `input` interpreted and compiled in vector form
/// (`Jit::eager`): neither faults, the memory that comes out is the same, and at least
/// `vector` of its stretches have a vector form (`what`: which ones, for the message).
fn agrees_in_vector_form(k: &Kernel, input: &[u8], vector: usize, what: &str) {
    let jit = vgpu_ptx_jit::Jit::eager(k).expect("a code generator for this host");
    let want = outcome(k, input, &[], None).expect("no fault interpreted");
    let got = outcome(k, input, &[], Some(&jit)).expect("no fault compiled");
    assert_eq!(want, got);
    assert!(jit.vector_stretches() >= vector, "{what} has a vector form");
}

/// Runs one warp of `k` compiled by `jit` over 256 bytes of memory that start as `input`
/// (zeros after it): the 32 64-bit values that come out, one a lane.
fn lane_values(k: &Kernel, jit: &vgpu_ptx_jit::Jit, input: &[u8]) -> Vec<u64> {
    let mem = DirectMemory::zeroed(BASE, 256).expect("aligned memory");
    assert!(mem.put(BASE, input));
    run(k, &launch((1, [32, 1, 1], 1), &[], &mem, Some(jit))).expect("runs");
    let out = mem.get(BASE, 256).expect("inside");
    out.chunks(8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .collect()
}

/// `st.global.u64 [at + BASE], v`, then `at` moved on to the next 256 bytes (a warp's
/// row of 64-bit values).
fn store_row(code: &mut Vec<Inst>, at: Reg, v: Reg) {
    code.push(inst_of(store_u64(at, Src::Reg(v))));
    code.push(inst_of(bin(
        BinOp::Add,
        Ty::U64,
        at,
        Src::Reg(at),
        Src::Imm(256),
    )));
}

/// `mov d, a`.
fn mov(d: Reg, a: Src) -> Op {
    Op::Mov { d, a }
}

fn bin(op: BinOp, ty: Ty, d: Reg, a: Src, b: Src) -> Op {
    Op::Bin {
        op,
        ty,
        d,
        a,
        b,
        ftz: false,
        sat: false,
        round: Round::Default,
        nan: false,
    }
}

/// A launch of `grid` blocks of `block` threads over `mem` on `threads` host threads,
/// interpreted or with `native`.
fn launch<'a>(
    (grid, block, threads): (u32, [u32; 3], usize),
    params: &'a [u8],
    mem: &'a DirectMemory,
    native: Option<&'a dyn vgpu_ptx::exec::Native>,
) -> Launch<'a> {
    Launch {
        grid: [grid, 1, 1],
        block,
        dynamic_shared: SHARED as u32,
        params,
        globals: &[],
        mem: mem as &dyn Memory,
        threads,
        deadline: Some(Instant::now() + Duration::from_secs(60)),
        cancel: None,
        native,
        pool: None,
    }
}

/// Runs `k` over `input`, interpreted or with `native`: the memory that comes out (the
/// input as the program's stores left it, then the registers stored at its end), or that
/// it faulted.
fn outcome(
    k: &Kernel,
    input: &[u8],
    params: &[u8],
    native: Option<&dyn vgpu_ptx::exec::Native>,
) -> Option<Vec<u8>> {
    let half = input.len();
    let mem = DirectMemory::zeroed(BASE, 2 * half).expect("aligned memory");
    assert!(mem.put(BASE, input));
    // One host thread: the programs load what other blocks store, which blocks running at
    // once would make a race.
    let r = run(k, &launch((BLOCKS, BLOCK, 1), params, &mem, native));
    r.ok()?;
    mem.get(BASE, 2 * half)
}

/// Runs [`CASES`] random programs of `gen`'s instructions (one in `guard_one_in`
/// guarded) interpreted and compiled, and panics where they differ. Gives how many runs
/// were compiled, how many programs faulted (both ways) and how many stretches were
/// compiled in vector form.
fn agree(
    seed: u64,
    gen: fn(&mut Rng) -> Op,
    guard_one_in: u64,
    jit: fn(&Kernel) -> Result<vgpu_ptx_jit::Jit, String>,
) -> (usize, usize, usize) {
    let mut rng = Rng(seed);
    let (mut compiled, mut faulted, mut vector) = (0, 0, 0);
    for case in 0..CASES {
        let k = program(&mut rng, 40, gen, guard_one_in);
        let input: Vec<u8> = (0..THREADS * NR)
            .flat_map(|_| rng.value().to_le_bytes())
            .collect();
        let params: Vec<u8> = (0..PARAMS / 8)
            .flat_map(|_| rng.value().to_le_bytes())
            .collect();
        let jit = jit(&k).expect("a code generator for this host");
        let want = outcome(&k, &input, &params, None);
        let got = outcome(&k, &input, &params, Some(&jit));
        compiled += jit.compiled();
        vector += jit.vector_stretches();
        let (Some(want), Some(got)) = (&want, &got) else {
            assert_eq!(
                want.is_some(),
                got.is_some(),
                "case {case}: only one of them faulted"
            );
            faulted += 1;
            continue;
        };
        if want != got {
            for (i, (w, g)) in want.chunks(8).zip(got.chunks(8)).enumerate() {
                if w != g {
                    let (part, i) = (i as u32 / (THREADS * NR), i as u32 % (THREADS * NR));
                    let (thread, r) = (i / NR, 2 + i % NR);
                    let what = ["input", "registers"][part as usize];
                    panic!(
                        "case {case}: {what} of thread {thread} register {r}: interpreted {:#x}, compiled {:#x}\n{:#?}",
                        u64::from_le_bytes(w.try_into().unwrap()),
                        u64::from_le_bytes(g.try_into().unwrap()),
                        k.code
                    );
                }
            }
        }
    }
    (compiled, faulted, vector)
}

#[test]
fn compiled_runs_agree_with_the_interpreter() {
    // Lane by lane: these launches are too short for a run to get its vector form.
    let (compiled, faulted, _) = agree(0x9E37_79B9_7F4A_7C15, op, 4, vgpu_ptx_jit::Jit::new);
    // Most programs hold several runs; all of them together must have compiled many.
    assert!(compiled > 300, "only {compiled} runs compiled");
    // Some programs load where nothing is, and both fault; most do not.
    assert!(
        (1..CASES / 5).contains(&faulted),
        "{faulted} programs faulted"
    );
}

/// An operation of those whole-warp stretches run in vector form (moves, f32 add, sub,
/// mul, div, min, max, fma, rcp, sqrt and rsqrt, integer arithmetic, logic, shifts,
/// comparisons, `selp`, `dp4a`, packing, conversions, loads and stores of global and
/// shared memory), now and then one that has none (other rounding, a
/// special register) or a shuffle, which ends a stretch.
fn vector_op(rng: &mut Rng) -> Op {
    use BinOp::*;
    let d = reg(rng);
    let operand = |rng: &mut Rng| {
        if rng.chance(5) {
            Src::Imm(rng.value())
        } else {
            Src::Reg(reg(rng))
        }
    };
    let (a, b) = (operand(rng), operand(rng));
    match rng.below(28) {
        0 | 1 => warp_op(rng),
        27 => bin(rng.pick(&[And, Or, Xor]), Ty::Pred, d, a, b),
        25 => param_load(rng),
        26 => Op::Mad {
            ty: rng.pick(&[Ty::U32, Ty::S32, Ty::U64, Ty::S64]),
            mode: rng.pick(&[0, 0, 1, 2]),
            d,
            a,
            b,
            c: operand(rng),
            ftz: false,
            sat: rng.chance(10),
            round: Round::Default,
        },
        2 => Op::Mov { d, a },
        21 => Op::Dp {
            d,
            a,
            b,
            c: operand(rng),
            a_signed: rng.chance(2),
            b_signed: rng.chance(2),
            two: rng.chance(8),
            hi: rng.chance(2),
        },
        // As lowering makes them: the parts fill at most 64 bits.
        22 if rng.chance(2) => Op::Pack {
            d,
            parts: vec![a, b],
            bits: rng.pick(&[16, 32]),
        },
        22 => Op::Pack {
            d,
            parts: vec![a, b, operand(rng), operand(rng)],
            bits: rng.pick(&[8, 16]),
        },
        23 => Op::Unpack {
            ds: vec![d, reg(rng)],
            a,
            bits: rng.pick(&[16, 32]),
        },
        24 if rng.chance(3) => Op::Cvt {
            dty: Ty::F16,
            sty: Ty::F32,
            round: rng.pick(&[Round::Default, Round::Nearest]),
            sat: false,
            ftz: false,
            d,
            a,
        },
        24 => Op::Cvt {
            dty: Ty::F32,
            sty: rng.pick(&[Ty::F16, Ty::U8, Ty::S16, Ty::U32, Ty::S32, Ty::U64, Ty::S64]),
            round: rng.pick(&[Round::Default, Round::Nearest, Round::Zero]),
            sat: rng.chance(10),
            ftz: rng.chance(2),
            d,
            a,
        },
        18 => global_load(rng),
        19 => global_store(rng),
        20 => shared_access(rng),
        3 if rng.chance(4) => Op::Half {
            op: rng.pick(&[HalfOp::Add, HalfOp::Sub, HalfOp::Mul]),
            ty: rng.pick(&[Ty::F16, Ty::F16x2]),
            d,
            a,
            b,
            c: Src::Imm(0),
            ftz: false,
            sat: false,
        },
        3 if rng.chance(2) => Op::Un {
            op: rng.pick(&VECTOR_UNARY),
            ty: Ty::F32,
            d,
            a,
            ftz: rng.chance(2),
        },
        3 => Op::Mov {
            d,
            a: match rng.below(5) {
                0..=2 => Src::Special(Special::Tid(rng.below(3) as u8)),
                3 => Src::Special(Special::LaneId),
                _ => src(rng),
            },
        },
        4 => Op::Mad {
            ty: Ty::F32,
            mode: 0,
            d,
            a,
            b,
            c: operand(rng),
            ftz: rng.chance(2),
            sat: false,
            round: rng.pick(&[Round::Default, Round::Nearest]),
        },
        5..=9 => Op::Bin {
            op: rng.pick(&[Add, Sub, MulLo, Div, Min, Max]),
            ty: Ty::F32,
            d,
            a,
            b,
            ftz: rng.chance(2),
            sat: false,
            round: if rng.chance(10) {
                round(rng)
            } else {
                rng.pick(&[Round::Default, Round::Nearest])
            },
            nan: false,
        },
        10 if rng.chance(4) => Op::Un {
            op: rng.pick(&[UnOp::Not, UnOp::CNot]),
            ty: Ty::Pred,
            d,
            a,
            ftz: false,
        },
        10 => Op::Un {
            op: UnOp::Not,
            ty: rng.pick(&[Ty::U32, Ty::S32, Ty::U64, Ty::S64]),
            d,
            a,
            ftz: false,
        },
        11 => {
            let ty = rng.pick(&[Ty::U32, Ty::S32, Ty::U64, Ty::S64, Ty::F32, Ty::F32]);
            let unordered = Cmp::Unordered(rng.below(6) as u8);
            Op::Setp {
                cmp: if rng.chance(9) {
                    unordered
                } else {
                    rng.pick(&ORDERED)
                },
                ty,
                d,
                d2: rng.chance(2).then(|| reg(rng)),
                a,
                b,
                combine: None,
                ftz: ty == Ty::F32 && rng.chance(2),
            }
        }
        12 => Op::Selp {
            d,
            a,
            b,
            p: Src::Reg(reg(rng)),
        },
        13 if rng.chance(3) => Op::Cvt {
            dty: rng.pick(&[Ty::S32, Ty::U32, Ty::F32]),
            sty: Ty::F32,
            round: rng.pick(&[
                Round::Default,
                Round::Nearest,
                Round::Zero,
                Round::Down,
                Round::Up,
            ]),
            sat: false,
            ftz: rng.chance(2),
            d,
            a,
        },
        13 => Op::Cvt {
            dty: rng.pick(&INT_TYPES),
            sty: rng.pick(&INT_TYPES),
            round: Round::Default,
            sat: rng.chance(10),
            ftz: false,
            d,
            a,
        },
        _ => {
            let ty = rng.pick(&[Ty::U32, Ty::S32, Ty::U64, Ty::S64]);
            let op = rng.pick(&[
                Add, Sub, And, Or, Xor, MulLo, MulWide, MulHi, Shl, Shr, Min, Max, Div, Rem,
            ]);
            let op = if matches!(op, MulWide | MulHi) && ty.size() == 8 && !rng.chance(8) {
                MulLo
            } else {
                op
            };
            let b = if matches!(op, Shl | Shr) && rng.chance(2) {
                Src::Imm(rng.below(70))
            } else {
                b
            };
            bin(op, ty, d, a, b)
        }
    }
}

/// The comparisons other than the unordered forms (`Cmp::Unordered`).
const ORDERED: [Cmp; 8] = [
    Cmp::Eq,
    Cmp::Ne,
    Cmp::Lt,
    Cmp::Le,
    Cmp::Gt,
    Cmp::Ge,
    Cmp::Num,
    Cmp::Nan,
];

/// The f32 unary operations that have a vector form.
const VECTOR_UNARY: [UnOp; 10] = [
    UnOp::Rcp,
    UnOp::Sqrt,
    UnOp::Rsqrt,
    UnOp::Ex2,
    UnOp::Lg2,
    UnOp::Sin,
    UnOp::Cos,
    UnOp::Tanh,
    UnOp::Abs,
    UnOp::Neg,
];

/// The integer types of conversions.
const INT_TYPES: [Ty; 8] = [
    Ty::U8,
    Ty::S8,
    Ty::U16,
    Ty::S16,
    Ty::U32,
    Ty::S32,
    Ty::U64,
    Ty::S64,
];

/// Whole warps run stretches four lanes at a time (`vector.rs`): random programs of the
/// operations that have a vector form, mostly unguarded, with the branches that split
/// warps (the stretches after them run lane by lane), agree with the interpreter.
#[test]
fn whole_warp_stretches_agree_with_the_interpreter() {
    let (compiled, _, vector) = agree(
        0x2545_F491_4F6C_DD1D,
        vector_op,
        20,
        vgpu_ptx_jit::Jit::eager,
    );
    assert!(compiled > 300, "only {compiled} runs compiled");
    assert!(vector > CASES, "only {vector} stretches in vector form");
}

/// In a loop run four lanes at a time, a lane that left makes no more accesses: lane `i`
/// loads at 64 - 8 (1 + i mod 4) + 8 k in pass k of its 1 + i mod 4, the last 8 bytes of
/// a 64-byte allocation at most, and a pass more would load past its end.
#[test]
fn lanes_that_left_a_loop_make_no_access() {
    use BinOp::*;
    let (n, k, p, acc, at) = (0, 1, 2, 3, 4);
    let r = Src::Reg;
    let code = vec![
        inst_of(mov(n, Src::Special(Special::LaneId))),
        inst_of(bin(And, Ty::U64, n, r(n), Src::Imm(3))),
        inst_of(bin(Add, Ty::U64, n, r(n), Src::Imm(1))),
        inst_of(mov(k, Src::Imm(0))),
        inst_of(mov(acc, Src::Imm(0))),
        // The loop, at 5.
        inst_of(bin(Add, Ty::U64, at, r(k), Src::Imm(8))),
        inst_of(bin(Sub, Ty::U64, at, r(at), r(n))),
        inst_of(bin(Shl, Ty::U64, at, r(at), Src::Imm(3))),
        inst_of(load_at(Ty::U64, 5, at, 0)),
        inst_of(bin(Add, Ty::U64, acc, r(acc), r(5))),
        inst_of(bin(Add, Ty::U64, k, r(k), Src::Imm(1))),
        inst_of(lt_u64(p, r(k), r(n))),
        inst(Op::Bra { target: 5 }, Some((p, false))),
        // Each lane's sum, at a place of its own or one it shares.
        inst_of(bin(And, Ty::U64, at, r(n), Src::Imm(7))),
        inst_of(bin(Shl, Ty::U64, at, r(at), Src::Imm(3))),
        inst_of(store_u64(at, r(acc))),
        inst_of(Op::Exit),
    ];
    let k = small_kernel("left", 0, 6, code);
    let input: Vec<u8> = (0..32u8).map(|b| b.wrapping_mul(37)).collect();
    agrees_in_vector_form(&k, &input, 1, "the loop");
}

/// A comparison's predicates (its result and the negation `d2`) read in the stretch that
/// compares: by selections, by the branch that ends the stretch under each guard, and by
/// a loop's branch back that lanes take apart (compiled code reads the comparison's own
/// mask there, `vector.rs`'s `masks`). Each lane's value from memory, in u32, s32 and f32
/// (a NaN among them).
#[test]
fn predicates_read_where_they_are_compared_agree_with_the_interpreter() {
    use BinOp::*;
    let (lane, at, x, p, q, s, t) = (0, 1, 2, 3, 4, 5, 6);
    let r = Src::Reg;
    let f = |v: f32| Src::Imm(u64::from(v.to_bits()));
    let mut input = Vec::new();
    for i in 0..32u32 {
        let v = if i == 5 {
            f32::NAN
        } else {
            (i as f32 - 10.0) * 0.75
        };
        input.extend_from_slice(&v.to_bits().to_le_bytes());
        input.extend_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
    }
    input.resize(512, 0);
    for ty in [Ty::U32, Ty::S32, Ty::F32] {
        // Integers from the second word of each lane's eight bytes, f32 from the first.
        let (offset, bound, step, end) = if ty == Ty::F32 {
            (0, f(1.5), f(1.0), f(4.0))
        } else {
            (4, Src::Imm(1 << 31), Src::Imm(1 << 28), Src::Imm(3 << 30))
        };
        for cmp in [Cmp::Lt, Cmp::Ge, Cmp::Ne] {
            for (guard, neg) in [(p, false), (p, true), (q, false), (q, true)] {
                let setp = |cmp: Cmp, b: Src| Op::Setp {
                    cmp,
                    ty,
                    d: p,
                    d2: Some(q),
                    a: r(x),
                    b,
                    combine: None,
                    ftz: false,
                };
                let count = |ty: Ty| Op::Bin {
                    op: Add,
                    ty,
                    d: x,
                    a: r(x),
                    b: step,
                    ftz: false,
                    sat: false,
                    round: Round::Default,
                    nan: false,
                };
                // The loop goes on while x < end, under the guard p, or not q.
                let (lp, lneg) = if guard == p { (p, false) } else { (q, true) };
                let code = vec![
                    inst_of(mov(lane, Src::Special(Special::LaneId))),
                    inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
                    inst_of(load_at(ty, x, at, offset)),
                    inst_of(setp(cmp, bound)),
                    inst_of(Op::Selp {
                        d: s,
                        a: Src::Imm(100),
                        b: Src::Imm(200),
                        p: r(p),
                    }),
                    inst_of(Op::Selp {
                        d: t,
                        a: Src::Imm(10),
                        b: Src::Imm(20),
                        p: r(q),
                    }),
                    inst_of(bin(Add, Ty::U64, s, r(s), r(t))),
                    inst(Op::Bra { target: 9 }, Some((guard, neg))),
                    inst_of(bin(Add, Ty::U64, s, r(s), Src::Imm(1000))),
                    // 9: each lane's way (past the input), then the loop at 10.
                    inst_of(store_u64_at(at, r(s), 512)),
                    inst_of(count(if ty == Ty::F32 { Ty::F32 } else { Ty::U32 })),
                    inst_of(setp(Cmp::Lt, end)),
                    inst(Op::Bra { target: 10 }, Some((lp, lneg))),
                    inst_of(bin(Add, Ty::U64, at, r(at), Src::Imm(768))),
                    inst_of(store_u64(at, r(x))),
                    inst_of(Op::Exit),
                ];
                let k = small_kernel("masks", 0, 7, code);
                let what = format!("{ty:?} {cmp:?}, the branch under {guard} ({neg})");
                agrees_in_vector_form(&k, &input, 2, &what);
            }
        }
    }
}

/// A vector loop's first pass is compiled apart from its other passes: four lanes go on
/// with the loop when any of them does. Lanes 1 and 3 of each four make a second pass,
/// lanes 0 and 2 leave after the first, and each lane adds 7 + %laneid to its sum in each
/// of its passes.
#[test]
fn a_vector_loop_goes_on_after_its_first_pass_for_any_lane() {
    use BinOp::*;
    let (lane, n, acc, k, p, at, x) = (0, 1, 2, 3, 4, 5, 6);
    let r = Src::Reg;
    let code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(And, Ty::U64, n, r(lane), Src::Imm(1))),
        inst_of(bin(Add, Ty::U64, n, r(n), Src::Imm(1))),
        inst_of(mov(acc, Src::Imm(0))),
        inst_of(mov(k, Src::Imm(0))),
        // The loop, at 5.
        inst_of(bin(Add, Ty::U64, x, r(lane), Src::Imm(7))),
        inst_of(bin(Add, Ty::U64, acc, r(acc), r(x))),
        inst_of(bin(Add, Ty::U64, k, r(k), Src::Imm(1))),
        inst_of(lt_u64(p, r(k), r(n))),
        inst(Op::Bra { target: 5 }, Some((p, false))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(store_u64(at, r(acc))),
        inst_of(Op::Exit),
    ];
    let k = small_kernel("again", 0, 7, code);
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    for (i, s) in lane_values(&k, &jit, &[]).into_iter().enumerate() {
        assert_eq!(s, (1 + (i as u64 & 1)) * (7 + i as u64), "lane {i}");
    }
    assert!(jit.vector_stretches() >= 1, "the loop has a vector form");
}

/// A region whose first runs have vector forms runs as a pass, group of four lanes by
/// group (`codegen::pass`): groups 1, 3, 5 and 7 (bit 2 of the lane) take the first run's
/// branch to a run with no vector form, outside the pass, while the others go on through
/// the next run and its branch past it. The groups stop at different runs, and each lane
/// must go on where its own branch sent it.
#[test]
fn groups_of_a_pass_that_part_go_on_where_their_lanes_went() {
    use BinOp::*;
    let (lane, b, x, p, at) = (0, 1, 2, 3, 4);
    let r = Src::Reg;
    let code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(And, Ty::U64, b, r(lane), Src::Imm(4))),
        inst_of(bin(Add, Ty::U64, x, r(lane), Src::Imm(1))),
        inst_of(lt_u64(p, Src::Imm(0), r(b))),
        inst(Op::Bra { target: 8 }, Some((p, false))),
        // Groups 0, 2, 4, 6: the next run of the pass.
        inst_of(bin(Add, Ty::U64, x, r(x), Src::Imm(100))),
        inst_of(bin(Add, Ty::U64, x, r(x), Src::Imm(1))),
        inst_of(Op::Bra { target: 10 }),
        // Groups 1, 3, 5, 7: a 64-bit high product has no vector form.
        inst_of(bin(MulHi, Ty::U64, x, r(x), Src::Imm(1 << 62))),
        inst_of(bin(Add, Ty::U64, x, r(x), Src::Imm(200))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(store_u64(at, r(x))),
        inst_of(Op::Exit),
    ];
    let k = small_kernel("parted", 0, 5, code);
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    for (i, v) in lane_values(&k, &jit, &[]).into_iter().enumerate() {
        let i = i as u64;
        let want = if i & 4 != 0 {
            (i + 1) / 4 + 200
        } else {
            i + 102
        };
        assert_eq!(v, want, "lane {i}");
    }
    assert!(
        jit.vector_stretches() >= 2,
        "the pass's runs have vector forms"
    );
}

/// Where two runs of a pass lead to one, the registers either wrote come to it as block
/// parameters, taken from the slots along the way that did not write them: `z`, loaded
/// before the barrier (another region), is rewritten only by groups 0, 2, 4 and 6 on
/// their way to the run where the ways join, which adds the lane to it.
#[test]
fn runs_of_a_pass_that_join_take_each_way_s_registers() {
    use BinOp::*;
    let (lane, at, z, b, p, w) = (0, 1, 2, 3, 4, 5);
    let r = Src::Reg;
    let code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(load_at(Ty::U64, z, at, 0)),
        inst_of(Op::Bar),
        inst_of(bin(And, Ty::U64, b, r(lane), Src::Imm(4))),
        inst_of(lt_u64(p, Src::Imm(0), r(b))),
        inst(Op::Bra { target: 9 }, Some((p, false))),
        inst_of(bin(Add, Ty::U64, z, r(z), Src::Imm(1000))),
        inst_of(bin(Add, Ty::U64, w, r(lane), Src::Imm(1))),
        // Where the ways join, at 9.
        inst_of(bin(Add, Ty::U64, z, r(z), r(lane))),
        inst_of(store_u64(at, r(z))),
        inst_of(Op::Exit),
    ];
    let k = small_kernel("joined", 0, 6, code);
    let input: Vec<u8> = (0..32u64).flat_map(|i| (i * 3 + 5).to_le_bytes()).collect();
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    for (i, v) in lane_values(&k, &jit, &input).into_iter().enumerate() {
        let i = i as u64;
        let added = if i & 4 != 0 { 0 } else { 1000 };
        assert_eq!(v, i * 3 + 5 + added + i, "lane {i}");
    }
    agrees_in_vector_form(&k, &input, 2, "the pass's runs");
}

/// A butterfly reduction's steps: `x` summed (u32) over the warp, through `y`.
fn butterfly_sum(code: &mut Vec<Inst>, x: Reg, y: Reg) {
    for m in [16, 8, 4, 2, 1] {
        code.push(shfl(y, x, ShflMode::Bfly, m));
        code.push(inst_of(bin(
            BinOp::Add,
            Ty::U32,
            x,
            Src::Reg(x),
            Src::Reg(y),
        )));
    }
}

/// Each lane's `%laneid` + 1 in `x`, summed over the warp (through `y`), with `at` its
/// row's place (`%laneid` × 8, `lane` the lane's index).
fn lane_sum(lane: Reg, at: Reg, x: Reg, y: Reg) -> Vec<Inst> {
    let r = Src::Reg;
    let mut code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(BinOp::Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(bin(BinOp::Add, Ty::U32, x, r(lane), Src::Imm(1))),
    ];
    butterfly_sum(&mut code, x, y);
    code
}

/// A butterfly reduction whose run ends with a branch some lanes take (the whole warp runs
/// it as one vector chain, `vector::chain`): every lane gets the sum of the 32 lanes'
/// values, and the lanes below 6 (all of the first group, half of the second) take the
/// branch and store the sum plus 1000.
#[test]
fn a_reduction_chain_ends_with_a_branch_of_its_own_lanes() {
    use BinOp::*;
    let (lane, at, x, y, p, z) = (0, 1, 2, 3, 4, 5);
    let r = Src::Reg;
    let mut code = lane_sum(lane, at, x, y);
    code.extend([
        inst_of(lt_u64(p, r(lane), Src::Imm(6))),
        inst(Op::Bra { target: 17 }, Some((p, false))),
        inst_of(store_u64(at, r(x))),
        inst_of(Op::Exit),
        inst_of(bin(Add, Ty::U64, z, r(x), Src::Imm(1000))),
        inst_of(store_u64(at, r(z))),
        inst_of(Op::Exit),
    ]);
    assert!(matches!(code[17].op, Op::Bin { .. }), "the branch's target");
    let k = small_kernel("chain", 0, 6, code);
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    for (i, s) in lane_values(&k, &jit, &[]).into_iter().enumerate() {
        assert_eq!(s, if i < 6 { 1528 } else { 528 }, "lane {i}");
    }
}

/// Two butterfly reductions (each a run the whole warp runs as one vector chain) read a
/// register neither writes, which a run between them changes: the second sums the lanes
/// with the register as that run left it. (A chain loads such a register where its value
/// is first needed, not where it is built; two chains' loads of the same slots are not
/// one.) Row 0 holds the sum of `2 × lane + 7`, 1216, row 1 that of `2 × lane + 107`, 4416.
#[test]
fn a_chain_reads_what_the_runs_before_it_left() {
    use BinOp::*;
    let (lane, at, x, y, c) = (0, 1, 2, 3, 4);
    let r = Src::Reg;
    let mut code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(bin(Add, Ty::U64, c, r(lane), Src::Imm(7))),
    ];
    // Each part a run of its own: a branch to the next instruction ends one.
    let next = |code: &mut Vec<Inst>| {
        let target = code.len() as u32 + 1;
        code.push(inst(Op::Bra { target }, None));
    };
    next(&mut code);
    let sum = |code: &mut Vec<Inst>| {
        code.push(inst_of(bin(Add, Ty::U32, x, r(lane), r(c))));
        butterfly_sum(code, x, y);
        store_row(code, at, x);
    };
    sum(&mut code);
    next(&mut code);
    code.push(inst_of(bin(Add, Ty::U64, c, r(c), Src::Imm(100))));
    next(&mut code);
    sum(&mut code);
    code.push(inst_of(Op::Exit));
    let k = small_kernel("two chains", 0, 5, code);
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    let mem = DirectMemory::zeroed(BASE, 512).expect("aligned memory");
    run(&k, &launch((1, [32, 1, 1], 1), &[], &mem, Some(&jit))).expect("runs");
    let out = mem.get(BASE, 512).expect("inside");
    assert!(jit.vector_stretches() >= 2, "the chains have vector forms");
    for (i, s) in out.chunks(8).enumerate() {
        let s = u64::from_le_bytes(s.try_into().expect("8 bytes"));
        assert_eq!(
            s,
            if i < 32 { 1216 } else { 4416 },
            "row {}, lane {}",
            i / 32,
            i % 32
        );
    }
}

/// A register loaded in one stretch and read in the next from its slots: its value fits
/// in 32 bits there (the vector code then takes its slots' high halves for zero) after an
/// unsigned 4-byte load, not after a signed one of a negative value, whose high half is
/// all ones. Each lane's value converted from its low 32 bits (`cvt.u64.u32`), plus the
/// value as it is, stored as 64 bits.
#[test]
fn a_register_loaded_in_one_stretch_is_read_whole_in_the_next() {
    use BinOp::*;
    let (lane, at4, at8, v, w) = (0, 1, 2, 3, 4);
    let r = Src::Reg;
    let input: Vec<u8> = (0..512u32).map(|b| (b * 53 + 128) as u8).collect();
    for ty in [Ty::U32, Ty::S32] {
        let mut code = vec![
            inst_of(mov(lane, Src::Special(Special::LaneId))),
            inst_of(bin(Shl, Ty::U64, at4, r(lane), Src::Imm(2))),
            inst_of(bin(Shl, Ty::U64, at8, r(lane), Src::Imm(3))),
            inst_of(load_at(ty, v, at4, 0)),
        ];
        // A branch to the next instruction ends the stretch.
        let target = code.len() as u32 + 1;
        code.push(inst(Op::Bra { target }, None));
        code.extend([
            inst_of(Op::Cvt {
                dty: Ty::U64,
                sty: Ty::U32,
                round: Round::Default,
                sat: false,
                ftz: false,
                d: w,
                a: r(v),
            }),
            inst_of(bin(Add, Ty::U64, w, r(w), r(v))),
            inst_of(store_u64_at(at8, r(w), 256)),
            inst_of(Op::Exit),
        ]);
        let k = small_kernel("narrow", 0, 5, code);
        agrees_in_vector_form(&k, &input, 1, &format!("a {ty:?} load"));
    }
}

/// A branch on a predicate a 32-bit comparison made before a barrier (read from its
/// slots, where it fits in 32 bits: the vector code tests its low halves alone), under
/// `@p` and `@!p`, that some lanes of the warp take: the lanes that take it store their
/// value in the second row, the others in the first.
#[test]
fn a_branch_on_a_predicate_made_before_a_barrier_goes_each_lane_its_way() {
    use BinOp::*;
    let (lane, p, at, x) = (0, 1, 2, 3);
    let r = Src::Reg;
    for neg in [false, true] {
        let mut compare = lt_u64(p, r(lane), Src::Imm(6));
        if let Op::Setp { ty, .. } = &mut compare {
            *ty = Ty::U32;
        }
        let code = vec![
            inst_of(mov(lane, Src::Special(Special::LaneId))),
            inst_of(compare),
            // A barrier ends the region: the next one reads the predicate from its slots.
            inst_of(Op::Bar),
            inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
            inst_of(bin(Add, Ty::U64, x, r(lane), Src::Imm(1000))),
            inst(Op::Bra { target: 8 }, Some((p, neg))),
            inst_of(store_u64(at, r(x))),
            inst_of(Op::Exit),
            inst_of(store_u64_at(at, r(x), 256)),
            inst_of(Op::Exit),
        ];
        let k = small_kernel("branch", 0, 4, code);
        agrees_in_vector_form(&k, &[0; 512], 1, &format!("the branch, neg {neg}"));
        let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
        let mem = DirectMemory::zeroed(BASE, 512).expect("aligned memory");
        run(&k, &launch((1, [32, 1, 1], 1), &[], &mem, Some(&jit))).expect("runs");
        let out = mem.get(BASE, 512).expect("inside");
        for (i, s) in out.chunks(8).enumerate() {
            let (row, l) = (i / 32, (i % 32) as u64);
            let took = (l < 6) != neg;
            let want = if (row == 1) == took { 1000 + l } else { 0 };
            let s = u64::from_le_bytes(s.try_into().expect("8 bytes"));
            assert_eq!(s, want, "row {row}, lane {l}, neg {neg}");
        }
    }
}

/// `shfl.sync.<mode> d, a, m, 0x1f` over the whole warp.
fn shfl(d: Reg, a: Reg, mode: ShflMode, m: u64) -> Inst {
    inst_of(Op::Shfl {
        mode,
        d,
        p: None,
        a: Src::Reg(a),
        b: Src::Imm(m),
        c: Src::Imm(0x1f),
    })
}

/// In a vector chain, the values a butterfly reduction leaves the same in all 32 lanes,
/// and what is computed from them alone, are the first group's for every group
/// (`vector::warp_wide`); values that still differ between groups must not be: a
/// reduction short of a step across groups, one whose step across groups does not
/// commute (`sub`), one whose step adds another register's value that is the same but
/// across that step's groups, and a shuffle across groups alone. Each lane starts from
/// lane² + 1, reduces, then computes 3 x + 7 and stores it.
#[test]
fn what_a_butterfly_leaves_one_value_is_shared_by_the_groups() {
    use BinOp::*;
    let (lane, at, x, y, z, w) = (0, 1, 2, 3, 4, 5);
    let r = Src::Reg;
    // `x = x op shfl.bfly(x, m)` for each (m, op).
    let steps = |list: &[(u64, BinOp)]| {
        list.iter()
            .flat_map(|&(m, op)| {
                [
                    shfl(y, x, ShflMode::Bfly, m),
                    inst_of(bin(op, Ty::U32, x, r(x), r(y))),
                ]
            })
            .collect::<Vec<_>>()
    };
    let whole = [(16, Add), (8, Add), (4, Add), (2, Add), (1, Add)];
    let mut other = vec![inst_of(bin(Add, Ty::U32, w, r(x), Src::Imm(9)))];
    for m in [16, 8, 2, 1] {
        other.push(shfl(y, w, ShflMode::Bfly, m));
        other.push(inst_of(bin(Add, Ty::U32, w, r(w), r(y))));
    }
    other.push(shfl(y, x, ShflMode::Bfly, 4));
    other.push(inst_of(bin(Add, Ty::U32, x, r(w), r(y))));
    let cases: Vec<(&str, Vec<Inst>)> = vec![
        ("a whole reduction", steps(&whole)),
        (
            "one within groups only",
            steps(&[(16, Add), (8, Add), (4, Add)]),
        ),
        (
            "a maximum, the other way round",
            steps(&[(1, Max), (2, Max), (4, Max), (8, Max), (16, Max)]),
        ),
        ("a broadcast", vec![shfl(x, x, ShflMode::Idx, 3)]),
        (
            "one short of a step across groups",
            steps(&[(16, Add), (8, Add), (2, Add), (1, Add)]),
        ),
        (
            "a step across groups that does not commute",
            steps(&[(16, Add), (8, Add), (2, Add), (1, Add), (4, Sub)]),
        ),
        ("a step with another register", other),
        ("a shuffle across groups alone", {
            let mut v = steps(&[(16, Add), (8, Add), (2, Add), (1, Add)]);
            v.push(shfl(y, x, ShflMode::Bfly, 4));
            v.push(inst_of(mov(x, r(y))));
            v
        }),
    ];
    for (what, reduce) in cases {
        let mut code = vec![
            inst_of(mov(lane, Src::Special(Special::LaneId))),
            inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
            inst_of(bin(MulLo, Ty::U32, x, r(lane), r(lane))),
            inst_of(bin(Add, Ty::U32, x, r(x), Src::Imm(1))),
        ];
        code.extend(reduce);
        code.extend([
            inst_of(bin(MulLo, Ty::U32, z, r(x), Src::Imm(3))),
            inst_of(bin(Add, Ty::U32, z, r(z), Src::Imm(7))),
            inst_of(store_u64(at, r(z))),
            inst_of(Op::Exit),
        ]);
        let k = small_kernel("shared", 0, 6, code);
        agrees_in_vector_form(&k, &[0; 256], 0, what);
    }
}

/// A vector chain after a barrier reads the registers the same in every lane when it
/// starts once, and what it computes from them and a butterfly's sum alone is the first
/// group's for every group; a register that differs between lanes (or one the same that
/// the chain makes differ before reading it) is each group's own. Before the barrier,
/// `c` = 5 in every lane, `d` = 7 lane; after it the lanes sum lane² + 1, then compute
/// `z` from the sum, `c` and `d`, and store it.
#[test]
fn registers_the_same_in_every_lane_join_a_chains_shared_values() {
    use BinOp::*;
    let (lane, at, x, y, z, c, d) = (0, 1, 2, 3, 4, 5, 6);
    let r = Src::Reg;
    let mut sum = Vec::new();
    butterfly_sum(&mut sum, x, y);
    let cases: Vec<(&str, Vec<Inst>)> = vec![
        (
            "the sum times the same register",
            vec![inst_of(bin(MulLo, Ty::U32, z, r(x), r(c)))],
        ),
        (
            "the sum plus a register that differs",
            vec![
                inst_of(bin(MulLo, Ty::U32, z, r(x), r(c))),
                inst_of(bin(Add, Ty::U32, z, r(z), r(d))),
            ],
        ),
        (
            "the same register shuffled",
            vec![
                shfl(z, c, ShflMode::Bfly, 4),
                inst_of(bin(Add, Ty::U32, z, r(z), r(x))),
            ],
        ),
        (
            "a register that differs shuffled",
            vec![
                shfl(z, d, ShflMode::Bfly, 4),
                inst_of(bin(Add, Ty::U32, z, r(z), r(x))),
            ],
        ),
        (
            "the same register made to differ",
            vec![
                inst_of(bin(Add, Ty::U32, c, r(c), r(lane))),
                inst_of(bin(MulLo, Ty::U32, z, r(x), r(c))),
            ],
        ),
    ];
    for (what, tail) in cases {
        let mut code = vec![
            inst_of(mov(lane, Src::Special(Special::LaneId))),
            inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
            inst_of(bin(MulLo, Ty::U32, x, r(lane), r(lane))),
            inst_of(mov(c, Src::Imm(5))),
            inst_of(bin(MulLo, Ty::U32, d, r(lane), Src::Imm(7))),
            inst_of(Op::Bar),
            inst_of(bin(Add, Ty::U32, x, r(x), Src::Imm(1))),
        ];
        code.extend(sum.iter().cloned());
        code.extend(tail);
        code.extend([
            inst_of(bin(Add, Ty::U32, z, r(z), Src::Imm(3))),
            inst_of(store_u64(at, r(z))),
            inst_of(Op::Exit),
        ]);
        let k = small_kernel("same", 0, 7, code);
        agrees_in_vector_form(&k, &[0; 256], 0, what);
    }
}

/// A shuffle in a vector chain passes on a subnormal it did not flush: the `add.ftz`
/// after it flushes it. Odd lanes load the subnormal 3 × 2^-149, even lanes 2^-126; each
/// lane adds its neighbour's value to 2^-126 with `.ftz`, so even lanes get 2^-126 (the
/// subnormal flushed, not 2^-126 + 3 × 2^-149) and odd lanes 2^-125.
#[test]
fn a_shuffled_subnormal_is_flushed_by_the_ftz_add_after_it() {
    use BinOp::*;
    let (lane, at, x, y, c, z) = (0, 1, 2, 3, 4, 5);
    let r = Src::Reg;
    let code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(load_at(Ty::U32, x, at, 0)),
        inst_of(Op::Shfl {
            mode: ShflMode::Bfly,
            d: y,
            p: None,
            a: r(x),
            b: Src::Imm(1),
            c: Src::Imm(0x1f),
        }),
        inst_of(mov(c, Src::Imm(0x0080_0000))),
        inst_of(Op::Bin {
            op: Add,
            ty: Ty::F32,
            d: z,
            a: r(y),
            b: r(c),
            ftz: true,
            sat: false,
            round: Round::Default,
            nan: false,
        }),
        inst_of(store_u64(at, r(z))),
        inst_of(Op::Exit),
    ];
    let k = small_kernel("flushed", 0, 6, code);
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    let input: Vec<u8> = (0..32u64)
        .flat_map(|i| (if i % 2 == 1 { 3u64 } else { 0x0080_0000 }).to_le_bytes())
        .collect();
    for (i, s) in lane_values(&k, &jit, &input).into_iter().enumerate() {
        let want = if i % 2 == 0 { 0x0080_0000 } else { 0x0100_0000 };
        assert_eq!(s, want, "lane {i}");
    }
}

/// Products by immediates in vector form, as the interpreter's: those of at most three
/// set bits are made of shifts and adds, so each kind is tried with such an immediate and
/// with one that only looks like one before it is extended (`mul.wide.s32` by
/// 0x8000_0000 is by -2^31).
#[test]
fn products_by_immediates_agree_with_the_interpreter() {
    use BinOp::*;
    let (lane, v, at, p) = (0, 1, 2, 3);
    let r = Src::Reg;
    let mut code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        // A value of each lane, negative in some as an s32 and wide as a u64.
        inst_of(bin(MulLo, Ty::U32, v, r(lane), Src::Imm(0x9E37_79B9))),
        inst_of(bin(Sub, Ty::U32, v, r(v), Src::Imm(5))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
    ];
    let products = [
        (MulWide, Ty::S32, 34),
        (MulWide, Ty::S32, 0x8000_0000),
        (MulWide, Ty::S32, 0x4000_0001),
        (MulWide, Ty::U32, 0x8000_0011),
        (MulWide, Ty::U32, 36),
        (MulLo, Ty::U64, 36),
        (MulLo, Ty::S64, 0x8000_0000_0000_0003),
        (MulLo, Ty::U64, 0),
    ];
    for (op, ty, c) in products {
        code.push(inst_of(bin(op, ty, p, r(v), Src::Imm(c))));
        store_row(&mut code, at, p);
    }
    code.push(inst_of(Op::Exit));
    let k = small_kernel("products", 0, 4, code);
    let input = vec![0u8; 256 * products.len()];
    agrees_in_vector_form(&k, &input, products.len(), "each product");
}

/// `cvta` in vector form, as the interpreter's: to and from the generic addresses of
/// global memory (the same address) and of shared memory (its window added or taken
/// away), of each lane's own value.
#[test]
fn cvta_has_a_vector_form_that_agrees_with_the_interpreter() {
    use BinOp::*;
    let (lane, v, at, p) = (0, 1, 2, 3);
    let r = Src::Reg;
    let mut code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(
            MulLo,
            Ty::U64,
            v,
            r(lane),
            Src::Imm(0x9E37_79B9_7F4A_7C15),
        )),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
    ];
    let kinds = [
        (MemSpace::Global, false),
        (MemSpace::Global, true),
        (MemSpace::Shared, false),
        (MemSpace::Shared, true),
    ];
    for (space, to_generic) in kinds {
        code.push(inst_of(Op::Cvta {
            d: p,
            a: r(v),
            space,
            to_generic,
        }));
        store_row(&mut code, at, p);
    }
    code.push(inst_of(Op::Exit));
    let k = small_kernel("cvta", 0, 4, code);
    let input = vec![0u8; 256 * kinds.len()];
    agrees_in_vector_form(&k, &input, kinds.len(), "each cvta");
}

/// Rounding f32 to integral f32 (`cvt.rni`, `.rzi`, `.rmi`, `.rpi`, with `.ftz` and
/// without) in vector form, as the interpreter's: halfway cases, negative subnormals
/// (which `.ftz` makes -0 before `.rmi` rounds them), infinities and a NaN's payload.
#[test]
fn integral_f32_conversions_agree_with_the_interpreter() {
    use BinOp::*;
    let (lane, at, x, y) = (0, 1, 2, 3);
    let r = Src::Reg;
    let values: [u32; 16] = [
        0.5f32.to_bits(),
        (-0.5f32).to_bits(),
        1.5f32.to_bits(),
        2.5f32.to_bits(),
        (-2.5f32).to_bits(),
        (-1.25f32).to_bits(),
        3.75f32.to_bits(),
        0x8000_0001,
        0x0000_0001,
        f32::INFINITY.to_bits(),
        f32::NEG_INFINITY.to_bits(),
        0x7F80_1234,
        (-0.0f32).to_bits(),
        16_777_215.0f32.to_bits(),
        (-7.5f32).to_bits(),
        1e30f32.to_bits(),
    ];
    let mut code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(load_at(Ty::U32, x, at, 0)),
    ];
    let mut outs = 0;
    for round in [Round::Nearest, Round::Zero, Round::Down, Round::Up] {
        for ftz in [false, true] {
            code.push(inst_of(bin(Add, Ty::U64, at, r(at), Src::Imm(256))));
            code.push(inst_of(Op::Cvt {
                dty: Ty::F32,
                sty: Ty::F32,
                round,
                sat: false,
                ftz,
                d: y,
                a: r(x),
            }));
            code.push(inst_of(store_u64(at, r(y))));
            outs += 1;
        }
    }
    code.push(inst_of(Op::Exit));
    let k = small_kernel("integral", 0, 4, code);
    let mut input = vec![0u8; 256 * (outs + 1)];
    for (i, v) in input.chunks_mut(8).take(32).enumerate() {
        v[..4].copy_from_slice(&values[i % 16].to_le_bytes());
    }
    agrees_in_vector_form(&k, &input, outs, "each conversion");
}

/// A value computed once for the warp at the top of a loop, which the loop then
/// overwrites and reads after it, starts every pass afresh in the loop's vector form too:
/// each lane adds 7 + %laneid to its sum in each of three passes, not a value that grows
/// from pass to pass.
#[test]
fn values_computed_once_start_every_pass_of_a_vector_loop() {
    use BinOp::*;
    let (lane, x, acc, k, p, at) = (0, 1, 2, 3, 4, 5);
    let r = Src::Reg;
    let code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(mov(acc, Src::Imm(0))),
        inst_of(mov(k, Src::Imm(0))),
        // The loop, at 3: x = 7, the same in every lane, then x += %laneid.
        inst_of(mov(x, Src::Imm(7))),
        inst_of(bin(Add, Ty::U64, x, r(x), r(lane))),
        inst_of(bin(Add, Ty::U64, acc, r(acc), r(x))),
        inst_of(bin(Add, Ty::U64, k, r(k), Src::Imm(1))),
        inst_of(lt_u64(p, r(k), Src::Imm(3))),
        inst(Op::Bra { target: 3 }, Some((p, false))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(bin(Add, Ty::U64, acc, r(acc), r(x))),
        inst_of(store_u64(at, r(acc))),
        inst_of(Op::Exit),
    ];
    let k = small_kernel("afresh", 0, 6, code);
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    for (i, s) in lane_values(&k, &jit, &[]).into_iter().enumerate() {
        assert_eq!(s, 4 * (7 + i as u64), "lane {i}");
    }
    assert!(jit.vector_stretches() >= 1, "the loop has a vector form");
}

/// Where the runs of a pass join, a register each way made the same in the four lanes of
/// a group (a constant, computed once), but a different one on each way, comes with the
/// value of the way the group took: lane `i` adds 5 or 9 (its group of four odd) to `i`.
#[test]
fn values_the_same_in_a_group_join_with_each_ways_own() {
    use BinOp::*;
    let (lane, c, p, x, y, at) = (0, 1, 2, 3, 4, 5);
    let r = Src::Reg;
    let code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(Shr, Ty::U64, c, r(lane), Src::Imm(2))),
        inst_of(bin(And, Ty::U64, c, r(c), Src::Imm(1))),
        inst_of(lt_u64(p, Src::Imm(0), r(c))),
        inst(Op::Bra { target: 7 }, Some((p, false))),
        inst_of(mov(x, Src::Imm(5))),
        inst_of(Op::Bra { target: 8 }),
        inst_of(mov(x, Src::Imm(9))),
        inst_of(bin(Add, Ty::U64, y, r(x), r(lane))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(store_u64(at, r(y))),
        inst_of(Op::Exit),
    ];
    let k = small_kernel("join", 0, 6, code);
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    for (i, v) in lane_values(&k, &jit, &[]).into_iter().enumerate() {
        let want = if (i / 4) % 2 == 1 { 9 } else { 5 } + i as u64;
        assert_eq!(v, want, "lane {i}");
    }
    assert!(jit.vector_stretches() >= 1, "the runs have vector forms");
}

/// Where two ways a branch the same in every lane chose between join, a value computed
/// once for the warp after the join from what each way made is the way the warp took:
/// the parameter picks 5 (zero) or 9, and every lane stores it plus 100 plus its lane.
#[test]
fn a_value_computed_once_after_a_join_is_the_way_the_warp_took() {
    let (c, p, x, y, lane, z, at) = (0, 1, 2, 3, 4, 5, 6);
    let r = Src::Reg;
    let mut code = vec![
        inst_of(ld_param(Ty::U64, c, 0)),
        inst_of(lt_u64(p, Src::Imm(0), r(c))),
        inst(Op::Bra { target: 5 }, Some((p, false))),
        inst_of(mov(x, Src::Imm(5))),
        inst_of(Op::Bra { target: 6 }),
        inst_of(mov(x, Src::Imm(9))),
    ];
    code.extend(plus_100_and_lane_stored(x, [y, lane, z, at]));
    let k = small_kernel("chosen", 8, 7, code);
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    for (param, way) in [(0u64, 5u64), (3, 9)] {
        let what = format!("parameter {param}");
        lanes_hold_plus_100(&k, &param.to_le_bytes(), Some(&jit), way, &what);
    }
    assert!(jit.vector_stretches() >= 1, "the runs have vector forms");
}

/// A pass whose first runs give a group nothing of its own to do but the first run's
/// per-lane code (`%laneid`), their branches the same in every lane, runs them once for
/// the warp and each group only that code: the first parameter picks `x`, 5 (zero) or 9,
/// on two ways that join; the second sends the warp past or through a run of per-lane code
/// (`w`, 0 or the lane plus 1000) to the run where both ways join, where every lane stores
/// `x + w + 100` plus its lane; after a barrier (the pass's end), the second parameter
/// plus its lane (a register the first runs wrote, which no run of the pass reads after
/// them, from its slots). Each of the four choices as interpreted.
#[test]
fn runs_with_nothing_per_lane_at_a_pass_start_go_the_way_the_warp_takes() {
    use BinOp::*;
    let (c, p, x, lane, d, q, w, y, at) = (0, 1, 2, 3, 4, 5, 6, 7, 8);
    let r = Src::Reg;
    let code = vec![
        inst_of(ld_param(Ty::U64, c, 0)),
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(mov(w, Src::Imm(0))),
        inst_of(lt_u64(p, Src::Imm(0), r(c))),
        inst(Op::Bra { target: 7 }, Some((p, false))),
        inst_of(mov(x, Src::Imm(5))),
        inst_of(Op::Bra { target: 8 }),
        inst_of(mov(x, Src::Imm(9))),
        inst_of(ld_param(Ty::U64, d, 8)),
        inst_of(lt_u64(q, Src::Imm(0), r(d))),
        inst(Op::Bra { target: 13 }, Some((q, false))),
        inst_of(bin(Add, Ty::U64, w, r(w), r(lane))),
        inst_of(bin(Add, Ty::U64, w, r(w), Src::Imm(1000))),
        inst_of(bin(Add, Ty::U64, y, r(x), r(w))),
        inst_of(bin(Add, Ty::U64, y, r(y), Src::Imm(100))),
        inst_of(bin(Add, Ty::U64, y, r(y), r(lane))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(store_u64(at, r(y))),
        inst_of(Op::Bar),
        inst_of(bin(Add, Ty::U64, y, r(d), r(lane))),
        inst_of(store_u64_at(at, r(y), 256)),
        inst_of(Op::Exit),
    ];
    let k = small_kernel("prefix", 16, 9, code);
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    for (first, second) in [(0u64, 0u64), (3, 0), (0, 5), (3, 5)] {
        let mut params = first.to_le_bytes().to_vec();
        params.extend(second.to_le_bytes());
        for native in [None, Some(&jit as &dyn vgpu_ptx::exec::Native)] {
            let mem = DirectMemory::zeroed(BASE, 512).expect("aligned memory");
            run(&k, &launch((1, [32, 1, 1], 1), &params, &mem, native)).expect("runs");
            let out = mem.get(BASE, 512).expect("inside");
            let what = format!(
                "parameters {first}, {second}, compiled: {}",
                native.is_some()
            );
            for (i, v) in out.chunks(8).enumerate() {
                let v = u64::from_le_bytes(v.try_into().expect("8 bytes"));
                let lane = i as u64 % 32;
                let x = if first > 0 { 9 } else { 5 };
                let w = if second > 0 { 0 } else { lane + 1000 };
                let want = if i < 32 {
                    x + w + 100 + lane
                } else {
                    second + lane
                };
                assert_eq!(v, want, "{what}, lane {lane}, row {}", i / 32);
            }
        }
    }
    assert!(jit.vector_stretches() >= 1, "the runs have vector forms");
}

/// A way a branch the same in every lane may send the warp around, whose code computed
/// once for the warp calls the host's math library (an `ex2` of a parameter), runs that
/// code only where the warp goes through it; either way, what the warp makes after the
/// join is the way it took: the first parameter 0 sends it through the `ex2` (of 3.0: the
/// bits of 8.0), 3 around it (9), and every lane stores that plus 100 plus its lane.
#[test]
fn a_way_around_costly_code_computed_once_gives_the_way_the_warp_took() {
    let (c, p, x, y, lane, z, at, e) = (0, 1, 2, 3, 4, 5, 6, 7);
    let r = Src::Reg;
    let mut code = vec![
        inst_of(ld_param(Ty::U64, c, 0)),
        inst_of(ld_param(Ty::F32, e, 8)),
        inst_of(lt_u64(p, Src::Imm(0), r(c))),
        inst(Op::Bra { target: 6 }, Some((p, false))),
        inst_of(Op::Un {
            op: UnOp::Ex2,
            ty: Ty::F32,
            d: x,
            a: r(e),
            ftz: true,
        }),
        inst_of(Op::Bra { target: 7 }),
        inst_of(mov(x, Src::Imm(9))),
    ];
    code.extend(plus_100_and_lane_stored(x, [y, lane, z, at]));
    let k = small_kernel("around", 12, 8, code);
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    for (first, way) in [(0u64, u64::from(8f32.to_bits())), (3, 9)] {
        let mut params = first.to_le_bytes().to_vec();
        params.extend(3f32.to_bits().to_le_bytes());
        for native in [None, Some(&jit as &dyn vgpu_ptx::exec::Native)] {
            let what = format!("parameter {first}, compiled: {}", native.is_some());
            lanes_hold_plus_100(&k, &params, native, way, &what);
        }
    }
    assert!(jit.vector_stretches() >= 1, "the runs have vector forms");
}

/// The NaNs f32 arithmetic makes (here `x - x` of infinities and NaNs with payloads),
/// which vector code makes canonical only where an instruction reads their bits, come out
/// as the interpreter's wherever read: stored, moved, shuffled (within a group of four
/// lanes and across groups, then added), and read by the operations whose result keeps an operand's
/// NaN (`sqrt`, `rcp`, `ex2`, `neg`, `abs`, `cvt.rni`), as well as by those that do not
/// (`add`, `fma`, `max` and `min`, `setp` and `selp`, `cvt.rni.s32`).
#[test]
fn nans_of_f32_arithmetic_read_by_any_instruction_are_the_interpreters() {
    use BinOp::*;
    let bits: [u32; 8] = [
        f32::INFINITY.to_bits(),
        f32::NEG_INFINITY.to_bits(),
        0x7F80_0001,
        0xFFC0_1234,
        1.5f32.to_bits(),
        0x8000_0000,
        0x0000_0003,
        0x7FC0_0000,
    ];
    let mut input = vec![0u8; 256];
    for lane in 0..32 {
        input[8 * lane..8 * lane + 4]
            .copy_from_slice(&bits[(lane * 3 + lane / 8) % 8].to_le_bytes());
    }
    let (lane, at, x, a, y, t, p) = (0, 1, 2, 3, 4, 5, 6);
    let r = Src::Reg;
    let f32bin = |op, d, a, b| Op::Bin {
        op,
        ty: Ty::F32,
        d,
        a,
        b,
        ftz: true,
        sat: false,
        round: Round::Default,
        nan: false,
    };
    let un = |op| {
        vec![inst_of(Op::Un {
            op,
            ty: Ty::F32,
            d: y,
            a: r(a),
            ftz: true,
        })]
    };
    let cvt = |dty| Op::Cvt {
        dty,
        sty: Ty::F32,
        d: y,
        a: r(a),
        round: Round::Nearest,
        ftz: true,
        sat: false,
    };
    let one = Src::Imm(u64::from(1f32.to_bits()));
    let readers: Vec<(&str, Vec<Inst>)> = vec![
        ("a store", vec![inst_of(mov(y, r(a)))]),
        ("sqrt", un(UnOp::Sqrt)),
        ("rcp", un(UnOp::Rcp)),
        ("ex2", un(UnOp::Ex2)),
        ("neg", un(UnOp::Neg)),
        ("abs", un(UnOp::Abs)),
        ("cvt.rni.f32", vec![inst_of(cvt(Ty::F32))]),
        ("cvt.rni.s32", vec![inst_of(cvt(Ty::S32))]),
        ("add", vec![inst_of(f32bin(Add, y, r(a), one))]),
        (
            "fma",
            vec![inst_of(Op::Mad {
                ty: Ty::F32,
                mode: 0,
                d: y,
                a: r(a),
                b: one,
                c: r(x),
                ftz: true,
                sat: false,
                round: Round::Default,
            })],
        ),
        ("max", vec![inst_of(f32bin(Max, y, r(a), r(x)))]),
        ("min", vec![inst_of(f32bin(Min, y, r(x), r(a)))]),
        ("max of two", vec![inst_of(f32bin(Max, y, r(a), r(a)))]),
        (
            "setp and selp",
            vec![
                inst_of(Op::Setp {
                    cmp: Cmp::Nan,
                    ty: Ty::F32,
                    d: p,
                    d2: None,
                    a: r(a),
                    b: r(a),
                    combine: None,
                    ftz: true,
                }),
                inst_of(Op::Selp {
                    d: y,
                    a: r(a),
                    b: r(x),
                    p: r(p),
                }),
            ],
        ),
        (
            "shuffles",
            vec![
                shfl(t, a, ShflMode::Bfly, 1),
                shfl(y, t, ShflMode::Bfly, 16),
            ],
        ),
        (
            "shuffles and add",
            vec![
                shfl(t, a, ShflMode::Bfly, 1),
                inst_of(f32bin(Add, y, r(t), r(x))),
            ],
        ),
        (
            "shuffles and sqrt",
            vec![
                shfl(t, a, ShflMode::Bfly, 2),
                inst_of(Op::Un {
                    op: UnOp::Sqrt,
                    ty: Ty::F32,
                    d: y,
                    a: r(t),
                    ftz: true,
                }),
            ],
        ),
    ];
    for (what, read) in readers {
        let mut code = vec![
            inst_of(mov(lane, Src::Special(Special::LaneId))),
            inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
            inst_of(load_at(Ty::U64, x, at, 0)),
            inst_of(f32bin(Sub, a, r(x), r(x))),
        ];
        code.extend(read);
        code.push(inst_of(store_u64_at(at, r(y), 256)));
        code.push(inst_of(Op::Exit));
        let k = small_kernel("nans", 0, 7, code);
        agrees_in_vector_form(&k, &input, 1, what);
    }
}

/// f32 `ex2`, compiled lane by lane and in vector form, gives the interpreter's bits
/// (`vgpu_ptx::ex2_f32`): over the f32 from -160 to 140 a step of 2^-6 apart (past both
/// ends of the range it clamps to, through the subnormal results), the infinities, the
/// zeros, subnormals and NaNs with payloads; `.ftz` and not. Each lane takes four values,
/// 128 a launch.
#[test]
fn ex2_compiled_gives_the_interpreters_bits() {
    let specials = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        f32::from_bits(0x7F80_0001),
        f32::from_bits(0xFFC0_1234),
        -149.5,
        127.999_99,
    ];
    let steps = (-160 * 64..140 * 64).map(|i| i as f32 / 64.0);
    let values: Vec<f32> = specials.into_iter().chain(steps).collect();
    let (lane, at) = (0, 1);
    let r = Src::Reg;
    for ftz in [false, true] {
        let mut code = vec![
            inst_of(mov(lane, Src::Special(Special::LaneId))),
            inst_of(bin(BinOp::Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        ];
        for k in 0..4u32 {
            code.push(inst_of(load_at(Ty::U64, 2 + k, at, 256 * u64::from(k))));
        }
        for k in 0..4u32 {
            code.push(inst_of(Op::Un {
                op: UnOp::Ex2,
                ty: Ty::F32,
                d: 6 + k,
                a: r(2 + k),
                ftz,
            }));
        }
        for k in 0..4u32 {
            code.push(inst_of(store_u64_at(
                at,
                r(6 + k),
                1024 + 256 * u64::from(k),
            )));
        }
        code.push(inst_of(Op::Exit));
        let k = small_kernel("ex2", 0, 10, code);
        let jits = [
            (vgpu_ptx_jit::Jit::new(&k), "lane by lane"),
            (vgpu_ptx_jit::Jit::eager(&k), "in vector form"),
        ]
        .map(|(jit, how)| (jit.expect("a code generator for this host"), how));
        for chunk in values.chunks(128) {
            let mut input = vec![0u8; 1024];
            for (i, x) in chunk.iter().enumerate() {
                input[8 * i..8 * i + 4].copy_from_slice(&x.to_bits().to_le_bytes());
            }
            let want = outcome(&k, &input, &[], None).expect("no fault interpreted");
            for (i, x) in chunk.iter().enumerate() {
                let y = u32::from_le_bytes(want[1024 + 8 * i..1028 + 8 * i].try_into().unwrap());
                let mut e = vgpu_ptx::ex2_f32(if ftz && x.is_subnormal() { 0.0 } else { *x });
                if ftz && e.is_subnormal() {
                    e = 0.0;
                }
                assert_eq!(y, e.to_bits(), "interpreted ex2 {x}, ftz {ftz}");
            }
            for (jit, how) in &jits {
                let got = outcome(&k, &input, &[], Some(jit)).expect("no fault compiled");
                assert_eq!(want, got, "compiled {how}, ftz {ftz}, from {}", chunk[0]);
            }
        }
        assert!(jits[1].0.vector_stretches() >= 1, "ex2 has a vector form");
    }
}

/// Code computed once for the warp in a pass reads a register as the last run before it
/// that wrote it left it: `r` is written by the first run, written again by the second on
/// every way (first program) or on one way only (second program, the way a parameter
/// chooses), and read by the third's code computed once for the warp; every lane stores
/// twice `r` plus 100 plus its lane.
#[test]
fn code_computed_once_reads_the_last_write_of_the_runs_before_it() {
    use BinOp::*;
    let (c, r, lane, q, x, y, l2, z, at) = (0, 1, 2, 3, 4, 5, 6, 7, 8);
    let reg = Src::Reg;
    // Runs: 0..5 (`r = c + 1`, a branch no lane takes), 5..7 (`r = c + 7`), 7.. (the
    // reader). In the second program the first run's branch skips the second run where
    // `c < 5`.
    let program = |skip_where_small: bool| {
        let guard = if skip_where_small {
            lt_u64(q, reg(c), Src::Imm(5))
        } else {
            lt_u64(q, reg(lane), Src::Imm(0))
        };
        let mut code = vec![
            inst_of(ld_param(Ty::U64, c, 0)),
            inst_of(bin(Add, Ty::U64, r, reg(c), Src::Imm(1))),
            inst_of(mov(lane, Src::Special(Special::LaneId))),
            inst_of(guard),
            inst(Op::Bra { target: 7 }, Some((q, false))),
            inst_of(bin(Add, Ty::U64, r, reg(c), Src::Imm(7))),
            inst_of(Op::Bra { target: 7 }),
            inst_of(bin(Shl, Ty::U64, x, reg(r), Src::Imm(1))),
        ];
        code.extend(plus_100_and_lane_stored(x, [y, l2, z, at]));
        small_kernel("last_write", 8, 9, code)
    };
    for skip_where_small in [false, true] {
        let k = program(skip_where_small);
        let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
        for c in [3u64, 9] {
            let r = if skip_where_small && c < 5 {
                c + 1
            } else {
                c + 7
            };
            let params = c.to_le_bytes();
            for native in [None, Some(&jit as &dyn vgpu_ptx::exec::Native)] {
                let what = format!(
                    "c {c}, second run skipped where c < 5: {skip_where_small}, compiled: {}",
                    native.is_some()
                );
                lanes_hold_plus_100(&k, &params, native, 2 * r, &what);
            }
        }
        assert!(jit.vector_stretches() >= 1, "the runs have vector forms");
    }
}

/// Signed 64-bit division and remainder, compiled lane by lane and in vector form, give
/// the interpreter's results at their edges: the least value by -1 wraps (to itself,
/// remainder 0), dividing by zero gives all ones (remainder: the dividend), and the
/// rest truncate toward zero. Lane `i` divides the `i % 8`th pair.
#[test]
fn signed_64_bit_division_wraps_and_divides_by_zero_as_the_interpreters() {
    use BinOp::*;
    let pairs: [(i64, i64); 8] = [
        (i64::MIN, -1),
        (i64::MIN, 1),
        (7, 0),
        (i64::MIN, 0),
        (-7, 2),
        (7, -2),
        (-1, i64::MIN),
        (i64::MAX, -1),
    ];
    let mut input = vec![0u8; 512];
    for lane in 0..32 {
        let (x, y) = pairs[lane % 8];
        input[8 * lane..8 * lane + 8].copy_from_slice(&x.to_le_bytes());
        input[256 + 8 * lane..264 + 8 * lane].copy_from_slice(&y.to_le_bytes());
    }
    let (lane, at, x, y, q, m) = (0, 1, 2, 3, 4, 5);
    let r = Src::Reg;
    let code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
        inst_of(load_at(Ty::U64, x, at, 0)),
        inst_of(load_at(Ty::U64, y, at, 256)),
        inst_of(bin(Div, Ty::S64, q, r(x), r(y))),
        inst_of(bin(Rem, Ty::S64, m, r(x), r(y))),
        inst_of(store_u64_at(at, r(q), 512)),
        inst_of(store_u64_at(at, r(m), 768)),
        inst_of(Op::Exit),
    ];
    let k = small_kernel("divide", 0, 6, code);
    let want = outcome(&k, &input, &[], None).expect("no fault interpreted");
    let quotient =
        |i: usize| u64::from_le_bytes(want[512 + 8 * i..520 + 8 * i].try_into().unwrap());
    let remainder =
        |i: usize| u64::from_le_bytes(want[768 + 8 * i..776 + 8 * i].try_into().unwrap());
    assert_eq!(
        (quotient(0), remainder(0)),
        (i64::MIN as u64, 0),
        "the least value by -1"
    );
    assert_eq!((quotient(2), remainder(2)), (u64::MAX, 7), "by zero");
    assert_eq!((quotient(5), remainder(5)), (-3i64 as u64, 1), "7 by -2");
    // (`every_vector_operation_has_its_vector_form` checks that the vector form is made.)
    for (jit, how) in [
        (vgpu_ptx_jit::Jit::new(&k), "lane by lane"),
        (vgpu_ptx_jit::Jit::eager(&k), "in vector form"),
    ] {
        let jit = jit.expect("a code generator for this host");
        let got = outcome(&k, &input, &[], Some(&jit)).expect("no fault compiled");
        assert_eq!(want, got, "compiled {how}");
    }
}

/// Each operation that has a vector form compiles to it (none falls back, unseen, to lane
/// by lane for want of a SIMD instruction).
#[test]
fn every_vector_operation_has_its_vector_form() {
    use BinOp::*;
    let (x, y) = (Src::Reg(3), Src::Reg(4));
    let f32op = |op| Op::Bin {
        op,
        ty: Ty::F32,
        d: 2,
        a: x,
        b: y,
        ftz: true,
        sat: false,
        round: Round::Default,
        nan: false,
    };
    let mut ops: Vec<Op> = [Add, Sub, MulLo, Div, Min, Max].map(f32op).to_vec();
    for op in [UnOp::Not, UnOp::CNot] {
        ops.push(Op::Un {
            op,
            ty: Ty::Pred,
            d: 2,
            a: x,
            ftz: false,
        });
    }
    for ty in [Ty::U32, Ty::S32, Ty::U64, Ty::S64] {
        for op in [Add, Sub, And, Or, Xor, MulLo, Min, Max] {
            ops.push(bin(op, ty, 2, x, y));
        }
        for op in [Shl, Shr] {
            ops.push(bin(op, ty, 2, x, Src::Imm(5)));
            ops.push(bin(op, ty, 2, x, y));
        }
        // Each lane on its own.
        ops.push(bin(Div, ty, 2, x, y));
        ops.push(bin(Rem, ty, 2, x, y));
        ops.push(Op::Un {
            op: UnOp::Not,
            ty,
            d: 2,
            a: x,
            ftz: false,
        });
        for cmp in [Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge] {
            ops.push(Op::Setp {
                cmp,
                ty,
                d: 2,
                d2: Some(1),
                a: x,
                b: y,
                combine: None,
                ftz: false,
            });
        }
    }
    for ty in [Ty::U32, Ty::S32] {
        ops.push(bin(MulWide, ty, 2, x, y));
        ops.push(bin(MulHi, ty, 2, x, y));
    }
    for op in [And, Or, Xor] {
        ops.push(bin(op, Ty::Pred, 2, x, y));
    }
    let unordered = (0..6).map(Cmp::Unordered);
    let ordered = ORDERED;
    for cmp in ordered.into_iter().chain(unordered) {
        ops.push(Op::Setp {
            cmp,
            ty: Ty::F32,
            d: 2,
            d2: Some(1),
            a: x,
            b: y,
            combine: None,
            ftz: true,
        });
    }
    for (ty, mode) in [
        (Ty::U32, 0),
        (Ty::S32, 0),
        (Ty::U64, 0),
        (Ty::S64, 0),
        (Ty::U32, 2),
        (Ty::S32, 2),
    ] {
        ops.push(Op::Mad {
            ty,
            mode,
            d: 2,
            a: x,
            b: y,
            c: x,
            ftz: false,
            sat: false,
            round: Round::Default,
        });
    }
    // The parameters (the launch has 64 bytes of them).
    for (ty, n) in [(Ty::U64, 1), (Ty::S32, 2), (Ty::U16, 4)] {
        ops.push(Op::Ld {
            space: MemSpace::Param,
            ty,
            n,
            d: [2, 1, 5, 6],
            addr: Addr {
                base: None,
                global: None,
                offset: 8,
            },
        });
    }
    for dty in INT_TYPES {
        for sty in INT_TYPES {
            ops.push(Op::Cvt {
                dty,
                sty,
                round: Round::Default,
                sat: false,
                ftz: false,
                d: 2,
                a: x,
            });
        }
    }
    ops.push(Op::Selp {
        d: 2,
        a: x,
        b: y,
        p: Src::Reg(4),
    });
    for sty in [Ty::F16, Ty::U8, Ty::S16, Ty::U32, Ty::S32] {
        ops.push(Op::Cvt {
            dty: Ty::F32,
            sty,
            round: Round::Default,
            sat: false,
            ftz: false,
            d: 2,
            a: x,
        });
    }
    ops.push(Op::Cvt {
        dty: Ty::F16,
        sty: Ty::F32,
        round: Round::Nearest,
        sat: false,
        ftz: false,
        d: 2,
        a: x,
    });
    for op in [HalfOp::Add, HalfOp::Sub, HalfOp::Mul] {
        for ty in [Ty::F16, Ty::F16x2] {
            ops.push(Op::Half {
                op,
                ty,
                d: 2,
                a: x,
                b: y,
                c: Src::Imm(0),
                ftz: false,
                sat: false,
            });
        }
    }
    for dty in [Ty::S32, Ty::U32, Ty::F32] {
        for round in [Round::Nearest, Round::Zero, Round::Down, Round::Up] {
            ops.push(Op::Cvt {
                dty,
                sty: Ty::F32,
                round,
                sat: false,
                ftz: true,
                d: 2,
                a: x,
            });
        }
    }
    for (a_signed, b_signed) in [(true, true), (false, true), (true, false), (false, false)] {
        ops.push(Op::Dp {
            d: 2,
            a: x,
            b: y,
            c: x,
            a_signed,
            b_signed,
            two: false,
            hi: false,
        });
    }
    ops.push(Op::Pack {
        d: 2,
        parts: vec![x, y],
        bits: 16,
    });
    ops.push(Op::Unpack {
        ds: vec![2, 1],
        a: x,
        bits: 16,
    });
    // Each lane's byte of the 64 at BASE (%tid.x in r3).
    ops.push(load_at(Ty::U8, 2, 3, 0));
    for s in [
        Special::Tid(0),
        Special::Tid(2),
        Special::LaneId,
        Special::Ctaid(0),
        Special::Nctaid(1),
        Special::WarpId,
    ] {
        ops.push(Op::Mov {
            d: 2,
            a: Src::Special(s),
        });
    }
    for op in VECTOR_UNARY {
        for ftz in [true, false] {
            ops.push(Op::Un {
                op,
                ty: Ty::F32,
                d: 2,
                a: x,
                ftz,
            });
        }
    }
    ops.push(Op::Mad {
        ty: Ty::F32,
        mode: 0,
        d: 2,
        a: x,
        b: y,
        c: Src::Imm(0x3F80_0000),
        ftz: false,
        sat: false,
        round: Round::Nearest,
    });
    ops.push(Op::Mov { d: 2, a: x });
    for op in ops {
        let what = format!("{op:?}");
        // r3 = %tid.x and r4 its shuffle, different in every lane, then the operation in a
        // stretch of its own.
        let code = vec![
            inst_of(mov(3, Src::Special(Special::Tid(0)))),
            inst_of(Op::Shfl {
                mode: ShflMode::Bfly,
                d: 4,
                p: None,
                a: x,
                b: Src::Imm(1),
                c: Src::Imm(0x1f),
            }),
            // r2 written first, so that the operation is never computed once for the warp
            // (it writes r2), even when its operands are the same in every lane.
            inst_of(bin(Add, Ty::U32, 2, x, y)),
            inst_of(op),
            inst_of(Op::Exit),
        ];
        let k = small_kernel("vector", 64, 7, code);
        let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
        let mem = DirectMemory::zeroed(BASE, 64).expect("aligned memory");
        let params = [7u8; 64];
        run(&k, &launch((1, [32, 1, 1], 1), &params, &mem, Some(&jit))).expect(&what);
        // Both stretches (the move of %tid too): a run that fails to compile in vector
        // form is compiled lane by lane, with none.
        assert_eq!(jit.vector_stretches(), 2, "{what}");
    }
}

/// The conversions between f32 and f16 and the f16 arithmetic compiled code does inline,
/// against the interpreter over every f16 value and every sign, exponent and upper
/// mantissa of f32, with the halfway cases of rounding to f16 among them.
#[test]
fn f16_conversions_and_arithmetic_agree_on_every_f16() {
    const N: u32 = 1 << 16;
    let half = |op, d| Op::Half {
        op,
        ty: Ty::F16x2,
        d,
        a: Src::Reg(2),
        b: Src::Reg(3),
        c: Src::Imm(0),
        ftz: false,
        sat: false,
    };
    let cvt = |dty, sty, round, d, a| Op::Cvt {
        dty,
        sty,
        round,
        sat: false,
        ftz: false,
        d,
        a: Src::Reg(a),
    };
    let out = |k: u32, r: Reg| {
        let mut a = [Src::Imm(0); 4];
        a[0] = Src::Reg(r);
        Op::St {
            space: MemSpace::Global,
            ty: Ty::U64,
            n: 1,
            a,
            addr: Addr {
                base: Some(1),
                global: None,
                offset: (BASE + u64::from(N) * 8 * u64::from(k)) as i64,
            },
        }
    };
    let t = |d| Op::Mov {
        d,
        a: Src::Special(Special::Tid(0)),
    };
    let code = [
        // r0 = thread index, r1 = its offset; r2 = an f32 with the thread's top 16 bits
        // and a halfway low part, r3 = the f16 pair (t, !t): each f16 meets every other
        // in some lane (not a NaN, which would send its four lanes to the interpreter).
        Op::Mov {
            d: 0,
            a: Src::Special(Special::Ctaid(0)),
        },
        bin(BinOp::MulLo, Ty::U32, 0, Src::Reg(0), Src::Imm(256)),
        t(1),
        bin(BinOp::Add, Ty::U32, 0, Src::Reg(0), Src::Reg(1)),
        bin(BinOp::MulLo, Ty::U64, 1, Src::Reg(0), Src::Imm(8)),
        bin(BinOp::Shl, Ty::U32, 2, Src::Reg(0), Src::Imm(16)),
        bin(BinOp::And, Ty::U32, 4, Src::Reg(0), Src::Imm(3)),
        bin(BinOp::MulLo, Ty::U32, 4, Src::Reg(4), Src::Imm(0x1000)),
        bin(BinOp::Or, Ty::U32, 2, Src::Reg(2), Src::Reg(4)),
        bin(BinOp::Xor, Ty::U32, 3, Src::Reg(0), Src::Imm(0xFFFF)),
        bin(BinOp::Shl, Ty::U32, 3, Src::Reg(3), Src::Imm(16)),
        bin(BinOp::Or, Ty::U32, 3, Src::Reg(3), Src::Reg(0)),
        cvt(Ty::F16, Ty::F32, Round::Nearest, 5, 2),
        cvt(Ty::F32, Ty::F16, Round::Default, 6, 3),
        half(HalfOp::Add, 7),
        half(HalfOp::Mul, 8),
        half(HalfOp::Sub, 9),
        out(0, 5),
        out(1, 6),
        out(2, 7),
        out(3, 8),
        out(4, 9),
        Op::Exit,
    ];
    // The whole program, and the conversion to f16 alone, each in one stretch that has a
    // vector form (inline where all four lanes' results are normal f16 or zeros, else
    // through the interpreter's conversion or arithmetic).
    let (convert, store) = (code[..13].to_vec(), out(0, 5));
    // And the conversion from f16 alone (of every f16: each thread's own in r3's low half).
    let widen = [
        code[..12].to_vec(),
        vec![code[13].clone(), out(0, 6), Op::Exit],
    ]
    .concat();
    for (code, vector) in [
        (code.to_vec(), true),
        ([convert, vec![store, Op::Exit]].concat(), true),
        (widen, true),
    ] {
        let outs = code.iter().filter(|op| matches!(op, Op::St { .. })).count();
        let k = Kernel {
            name: "f16".into(),
            params: vec![],
            param_bytes: 0,
            regs: 10,
            shared_bytes: 0,
            local_bytes: 0,
            frame_bytes: 0,
            read_first: None,
            code: code.into_iter().map(|op| inst(op, None)).collect(),
        };
        let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
        let bytes = outs * N as usize * 8;
        let results = |native: Option<&dyn vgpu_ptx::exec::Native>| {
            let mem = DirectMemory::zeroed(BASE, bytes).expect("aligned memory");
            let l = launch((N / 256, [256, 1, 1], 2), &[], &mem, native);
            run(&k, &l).expect("the kernel runs");
            mem.get(BASE, bytes).expect("the results")
        };
        let (want, got) = (results(None), results(Some(&jit)));
        assert!(jit.compiled() > 0);
        assert!(
            !vector || jit.vector_stretches() > 0,
            "the conversion's vector form"
        );
        for (i, (w, g)) in want.chunks(8).zip(got.chunks(8)).enumerate() {
            assert_eq!(
                w,
                g,
                "result {} of thread {}",
                i / N as usize,
                i % N as usize
            );
        }
    }
}

/// A run with more loads than it has sites to remember allocations in: the later loads,
/// of another size, near the end of a small allocation, must fault as interpreted rather
/// than read past it.
#[test]
fn loads_past_the_sites_are_checked_in_full() {
    let ld = |ty: Ty, d: Reg, offset: u64| ld_one(MemSpace::Global, ty, d, (BASE + offset) as i64);
    // 40 byte loads of the last byte of a 20-byte allocation, then an 8-byte load that
    // starts inside it and ends 4 bytes past it.
    let mut code: Vec<Inst> = (0..40)
        .map(|i| inst(ld(Ty::U8, 1 + i % 4, 19), None))
        .collect();
    code.push(inst(ld(Ty::U64, 5, 16), None));
    code.push(inst(Op::Exit, None));
    let k = small_kernel("sites", 0, 6, code);
    let jit = vgpu_ptx_jit::Jit::new(&k).expect("a code generator for this host");
    for native in [None, Some(&jit as &dyn vgpu_ptx::exec::Native)] {
        let mem = DirectMemory::zeroed(BASE, 20).expect("aligned memory");
        let r = run(&k, &launch((1, [32, 1, 1], 1), &[], &mem, native));
        assert!(
            matches!(r, Err(vgpu_ptx::exec::Fault::IllegalAddress { addr, size: 8, .. }) if addr == BASE + 16),
            "{}: {r:?}",
            if native.is_some() {
                "compiled"
            } else {
                "interpreted"
            }
        );
    }
    assert_eq!(jit.compiled(), 1);
}

/// Lane `i` of a warp accesses `start + i * stride`, `size` bytes, in global memory (an
/// allocation of 64 bytes) or shared memory, or loads either by a generic address: lane 0
/// finds the allocation, and the later lanes are checked inline against what it found. The last whole access, the first one
/// past the end and misaligned ones must fault, or not, as interpreted.
#[test]
fn accesses_at_the_edges_fault_as_interpreted() {
    const LEN: u64 = 64;
    // Generic loads too, of global memory and of the shared window.
    let window = vgpu_ptx::exec::SHARED_WINDOW;
    for (space, origin, len) in [
        (MemSpace::Global, BASE, LEN),
        (MemSpace::Shared, 0, SHARED),
        (MemSpace::Generic, BASE, LEN),
        (MemSpace::Generic, window, SHARED),
    ] {
        for ty in [Ty::U8, Ty::U16, Ty::U32, Ty::U64] {
            let size = u64::from(ty.size());
            // Lanes 0-3 fit and lane 4 is just past the end; or lane 0 is aligned and
            // every other lane is not.
            let mut cases = vec![(len - 4 * size, size)];
            if size > 1 {
                cases.extend([(0, size + size / 2), (0, size / 2)]);
            }
            for (start, stride) in cases {
                for store in [false, true] {
                    if store && space == MemSpace::Generic {
                        continue;
                    }
                    let addr = Addr {
                        base: Some(0),
                        global: None,
                        offset: (origin + start) as i64,
                    };
                    let access = if store {
                        Op::St {
                            space,
                            ty,
                            n: 1,
                            a: [Src::Reg(0), Src::Imm(0), Src::Imm(0), Src::Imm(0)],
                            addr,
                        }
                    } else {
                        Op::Ld {
                            space,
                            ty,
                            n: 1,
                            d: [1, 0, 0, 0],
                            addr,
                        }
                    };
                    let code = vec![
                        inst(
                            Op::Mov {
                                d: 0,
                                a: Src::Special(Special::LaneId),
                            },
                            None,
                        ),
                        inst(
                            Op::Bin {
                                op: BinOp::MulLo,
                                ty: Ty::U64,
                                d: 0,
                                a: Src::Reg(0),
                                b: Src::Imm(stride),
                                ftz: false,
                                sat: false,
                                round: Round::Default,
                                nan: false,
                            },
                            None,
                        ),
                        inst(access, None),
                        inst(Op::Exit, None),
                    ];
                    let k = small_kernel("edges", 0, 2, code);
                    let jit = vgpu_ptx_jit::Jit::new(&k).expect("a code generator for this host");
                    let results: Vec<String> = [None, Some(&jit as &dyn vgpu_ptx::exec::Native)]
                        .into_iter()
                        .map(|native| {
                            let mem = DirectMemory::zeroed(BASE, LEN as usize).expect("memory");
                            let r = run(&k, &launch((1, [32, 1, 1], 1), &[], &mem, native));
                            format!("{r:?}")
                        })
                        .collect();
                    let case = format!(
                        "{space:?} {ty:?} store {store} at {origin:#x} + {start} + lane * {stride}"
                    );
                    assert_eq!(results[0], results[1], "{case}");
                    assert!(
                        results[0].starts_with("Err"),
                        "{case} faults: {}",
                        results[0]
                    );
                    assert_eq!(jit.compiled(), 1, "{case}");
                }
            }
        }
    }
}

/// A whole warp's loads in vector form, once the load's site holds the allocation (lanes
/// 0-3 fill it), meet the edge in lanes 4-7: lane 7 one access past the end, or lanes 4-7
/// misaligned by half an access. The first fault must be the interpreter's (a check made
/// for four lanes at once must not let one of them through).
#[test]
fn whole_warp_loads_at_the_edges_fault_as_interpreted() {
    use BinOp::*;
    const LEN: u64 = 64;
    for ty in [Ty::U8, Ty::U16, Ty::U32, Ty::U64] {
        let size = u64::from(ty.size());
        let mut cases = vec![(LEN - 7 * size, 0)];
        if size > 1 {
            cases.push((0, size / 2));
        }
        for (start, shift) in cases {
            // r0 = start + lane * size + ((lane >> 2) & 1) * shift.
            let r = Src::Reg;
            let code = vec![
                inst_of(mov(0, Src::Special(Special::LaneId))),
                inst_of(bin(Shr, Ty::U64, 1, r(0), Src::Imm(2))),
                inst_of(bin(And, Ty::U64, 1, r(1), Src::Imm(1))),
                inst_of(bin(MulLo, Ty::U64, 1, r(1), Src::Imm(shift))),
                inst_of(bin(MulLo, Ty::U64, 0, r(0), Src::Imm(size))),
                inst_of(bin(Add, Ty::U64, 0, r(0), r(1))),
                inst_of(Op::Ld {
                    space: MemSpace::Global,
                    ty,
                    n: 1,
                    d: [2, 0, 0, 0],
                    addr: Addr {
                        base: Some(0),
                        global: None,
                        offset: (BASE + start) as i64,
                    },
                }),
                inst_of(Op::Exit),
            ];
            let k = small_kernel("edges", 0, 3, code);
            let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
            let results: Vec<String> = [None, Some(&jit as &dyn vgpu_ptx::exec::Native)]
                .into_iter()
                .map(|native| {
                    let mem = DirectMemory::zeroed(BASE, LEN as usize).expect("memory");
                    let r = run(&k, &launch((1, [32, 1, 1], 1), &[], &mem, native));
                    format!("{r:?}")
                })
                .collect();
            let case = format!("{ty:?} at {start} + lane * {size}, lanes 4-7 + {shift}");
            assert_eq!(results[0], results[1], "{case}");
            assert!(results[0].starts_with("Err"), "{case}: {}", results[0]);
            assert_eq!(jit.vector_stretches(), 1, "{case}");
        }
    }
}

/// Compiled code computes once for the warp what is the same in every lane; what differs
/// between lanes must never be taken for that. Each kernel here leaves in register 4 a
/// value that differs between lanes only through a thread index, a branch that lanes take
/// apart, or a guard that differs between them, reaching compiled code through registers
/// written before it; each lane then stores it to its own place. Interpreted and compiled,
/// the memory must agree.
#[test]
fn what_differs_between_lanes_is_never_computed_once() {
    let param = Op::Ld {
        space: MemSpace::Param,
        ty: Ty::U32,
        n: 1,
        d: [3, 0, 0, 0],
        addr: Addr {
            base: None,
            global: None,
            offset: 0,
        },
    };
    let lane = Op::Mov {
        d: 0,
        a: Src::Special(Special::LaneId),
    };
    // r1: lane < 7, which lanes do not share.
    let apart = Op::Setp {
        cmp: Cmp::Lt,
        ty: Ty::U32,
        d: 1,
        d2: None,
        a: Src::Reg(0),
        b: Src::Imm(7),
        combine: None,
        ftz: false,
    };
    let plus_one = bin(BinOp::Add, Ty::U32, 3, Src::Reg(3), Src::Imm(1));
    // r4 = r3 * 3 + 11 and r5 = lane * 8, after a leader (so in a run of their own); then
    // each lane stores r4 at BASE + r5.
    let tail = |code: &mut Vec<Inst>| {
        code.push(inst(
            bin(BinOp::MulLo, Ty::U32, 4, Src::Reg(3), Src::Imm(3)),
            None,
        ));
        code.push(inst(
            bin(BinOp::Add, Ty::U32, 4, Src::Reg(4), Src::Imm(11)),
            None,
        ));
        code.push(inst(
            bin(BinOp::MulLo, Ty::U64, 5, Src::Reg(0), Src::Imm(8)),
            None,
        ));
        code.push(inst(
            Op::St {
                space: MemSpace::Global,
                ty: Ty::U32,
                n: 1,
                a: [Src::Reg(4), Src::Imm(0), Src::Imm(0), Src::Imm(0)],
                addr: Addr {
                    base: Some(5),
                    global: None,
                    offset: BASE as i64,
                },
            },
            None,
        ));
        code.push(inst(Op::Exit, None));
    };
    // After r0 = %laneid at 0, each kernel's own instructions, then `tail`.
    let plain = |ops: Vec<Op>| ops.into_iter().map(|op| (op, None)).collect::<Vec<_>>();
    let tid = Op::Mov {
        d: 3,
        a: Src::Special(Special::Tid(0)),
    };
    let lane0 = Op::Setp {
        cmp: Cmp::Eq,
        ty: Ty::U32,
        d: 1,
        d2: None,
        a: Src::Reg(0),
        b: Src::Imm(0),
        combine: None,
        ftz: false,
    };
    let kernels: Vec<(&str, Vec<Guarded>)> = vec![
        // A branch the lanes take apart, around a write of r3.
        (
            "a branch",
            vec![
                (param.clone(), None),
                (apart.clone(), None),
                (Op::Bra { target: 5 }, Some((1, false))),
                (plus_one.clone(), None),
            ],
        ),
        // The write two blocks into the lanes' ways, before they meet again.
        (
            "a write deeper into a branch",
            vec![
                (param.clone(), None),
                (apart.clone(), None),
                (Op::Bra { target: 6 }, Some((1, false))),
                (Op::Bra { target: 5 }, None),
                (plus_one.clone(), None),
            ],
        ),
        // A loop whose lanes leave it after different numbers of iterations (lane i after
        // i + 1), each adding one to r3.
        (
            "a loop the lanes leave apart",
            vec![
                (param.clone(), None),
                (plus_one.clone(), None),
                (bin(BinOp::Sub, Ty::U32, 6, Src::Reg(3), Src::Imm(40)), None),
                (
                    Op::Setp {
                        cmp: Cmp::Le,
                        ty: Ty::U32,
                        d: 1,
                        d2: None,
                        a: Src::Reg(6),
                        b: Src::Reg(0),
                        combine: None,
                        ftz: false,
                    },
                    None,
                ),
                (Op::Bra { target: 2 }, Some((1, false))),
            ],
        ),
        // A guard the lanes do not share, in a run before the one that reads r3.
        (
            "a guard",
            vec![
                (param.clone(), None),
                (apart.clone(), None),
                (plus_one.clone(), Some((1, false))),
                (Op::Bra { target: 5 }, None),
            ],
        ),
        // r3 from the thread's index.
        (
            "a thread index",
            plain(vec![tid.clone(), Op::Bra { target: 3 }]),
        ),
        // Lane 0 leaves, and the others then set r3 alike: the value is the same in every
        // lane that runs on, and it is theirs, not lane 0's, that compiled code must read.
        (
            "a lane that left",
            vec![
                (lane0.clone(), None),
                (Op::Exit, Some((1, false))),
                (param.clone(), None),
                (Op::Bra { target: 5 }, None),
                (plus_one.clone(), None),
            ],
        ),
        // Lanes part and meet again before r3 is written: it is the same in every lane.
        (
            "ways that meet again",
            vec![
                (param.clone(), None),
                (apart.clone(), None),
                (Op::Bra { target: 5 }, Some((1, false))),
                (
                    Op::Mov {
                        d: 7,
                        a: Src::Special(Special::Tid(0)),
                    },
                    None,
                ),
                (plus_one.clone(), None),
            ],
        ),
        // Lane 0 branches to the kernel's `exit` (the tail's last instruction), the others
        // set r3 alike past a block boundary.
        (
            "a lane that branched out",
            vec![
                (lane0.clone(), None),
                (Op::Bra { target: 10 }, Some((1, false))),
                (param.clone(), None),
                (Op::Bra { target: 5 }, None),
                (plus_one.clone(), None),
            ],
        ),
    ];
    for (what, own) in kernels {
        let mut code = vec![inst(lane.clone(), None)];
        code.extend(own.into_iter().map(|(op, guard)| inst(op, guard)));
        tail(&mut code);
        let k = small_kernel("apart", 4, 8, code);
        let jit = vgpu_ptx_jit::Jit::new(&k).expect("a code generator for this host");
        let params = 40u32.to_le_bytes();
        let memory: Vec<Vec<u8>> = [None, Some(&jit as &dyn vgpu_ptx::exec::Native)]
            .into_iter()
            .map(|native| {
                let mem = DirectMemory::zeroed(BASE, 256).expect("memory");
                run(&k, &launch((1, [32, 1, 1], 1), &params, &mem, native)).expect("runs");
                mem.get(BASE, 256).expect("memory")
            })
            .collect();
        assert_eq!(memory[0], memory[1], "{what}");
        let lane9 = &memory[0][8 * 9..8 * 9 + 4];
        if [
            "a lane that left",
            "ways that meet again",
            "a lane that branched out",
        ]
        .contains(&what)
        {
            assert_eq!(lane9, (41u32 * 3 + 11).to_le_bytes(), "{what}");
        } else {
            assert_ne!(memory[0][..4], *lane9, "{what}: lanes 0 and 9 differ");
        }
        assert!(jit.compiled() >= 2, "{what}");
    }
}

/// A kernel that loops forever inside compiled code still ends at the launch's deadline:
/// each call runs a bounded number of iterations and the interpreter checks the watchdog
/// between calls.
#[test]
fn endless_compiled_loops_meet_the_watchdog() {
    let add = Op::Bin {
        op: BinOp::Add,
        ty: Ty::U32,
        d: 2,
        a: Src::Reg(2),
        b: Src::Imm(1),
        ftz: false,
        sat: false,
        round: Round::Default,
        nan: false,
    };
    let k = Kernel {
        name: "spin".into(),
        params: vec![],
        param_bytes: 0,
        regs: 3,
        shared_bytes: 0,
        local_bytes: 0,
        frame_bytes: 0,
        read_first: None,
        code: vec![
            inst_of(Op::Bar),
            inst_of(add.clone()),
            inst_of(add),
            inst_of(Op::Bra { target: 1 }),
            inst_of(Op::Exit),
        ],
    };
    let jit = vgpu_ptx_jit::Jit::new(&k).expect("a code generator for this host");
    let mem = DirectMemory::zeroed(BASE, 64).expect("aligned memory");
    let mut l = launch((2, [64, 1, 1], 1), &[], &mem, Some(&jit));
    l.deadline = Some(Instant::now() + Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(run(&k, &l), Err(vgpu_ptx::exec::Fault::Timeout));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(jit.compiled() >= 1, "the loop ran compiled");
    assert!(jit.vector_stretches() >= 1, "the loop got its vector form");
}

/// A run gets its vector form only once it has been called the tier's number of times
/// (one warp's pass a call): a run that is not hot stays lane by lane.
#[test]
fn vector_forms_wait_for_hot_runs() {
    let code = vec![
        inst_of(mov(1, Src::Special(Special::Tid(0)))),
        inst_of(bin(BinOp::Add, Ty::U32, 2, Src::Reg(1), Src::Reg(1))),
        inst_of(Op::Exit),
    ];
    let k = small_kernel("hot", 0, 3, code);
    let jit = vgpu_ptx_jit::Jit::tiered(&k, 3).expect("a code generator for this host");
    let mem = DirectMemory::zeroed(BASE, 64).expect("aligned memory");
    for launch_no in 1..=5 {
        run(&k, &launch((1, [32, 1, 1], 1), &[], &mem, Some(&jit))).expect("no fault");
        let want = if launch_no <= 3 { 0 } else { 1 };
        assert_eq!(jit.vector_stretches(), want, "after {launch_no} launches");
    }
}

/// Ends `code`: the four 16-bit values of `v` packed into `v[0]` (the first lowest),
/// stored as 8 bytes at `at + offset`, then `exit`.
fn store_packed(code: &mut Vec<Inst>, v: [Reg; 4], at: Reg, offset: u64) {
    let r = Src::Reg;
    for (k, &x) in v.iter().enumerate().skip(1) {
        code.push(inst_of(bin(
            BinOp::Shl,
            Ty::U64,
            x,
            r(x),
            Src::Imm(16 * k as u64),
        )));
        code.push(inst_of(bin(BinOp::Or, Ty::U64, v[0], r(v[0]), r(x))));
    }
    code.push(inst_of(bin(
        BinOp::Add,
        Ty::U64,
        at,
        r(at),
        Src::Imm(offset),
    )));
    code.push(inst_of(store_u64(at, r(v[0]))));
    code.push(inst_of(Op::Exit));
}

/// Loads of one size at constant offsets from one base register are checked as one span
/// per lane in vector form (`vector::spans`): inside the allocation they load what the
/// interpreter loads (a span ends where its base register is written); when only the
/// last access of one lane is past its end,
/// the launch faults as interpreted, and when it is the allocation's last bytes, it does
/// not.
#[test]
fn a_span_of_loads_faults_only_where_one_of_its_accesses_does() {
    use BinOp::*;
    let (lane, at, out, v) = (0, 1, 2, [3, 4, 5, 6]);
    let r = Src::Reg;
    let u16_at = |d: [Reg; 4], n: u8, offset: u64| Op::Ld {
        space: MemSpace::Global,
        ty: Ty::U16,
        n,
        d,
        addr: Addr {
            base: Some(at),
            global: None,
            offset: (BASE + offset) as i64,
        },
    };
    // The input's 256 bytes, then 256 for the lanes' results: a 512-byte allocation.
    let input: Vec<u8> = (0..256u32).map(|i| (i * 37 + 11) as u8).collect();
    let program = |start: u64| {
        let mut code = vec![
            inst_of(mov(lane, Src::Special(Special::LaneId))),
            // Lane 4 the highest: the first lane of its four, which are not the first four
            // (those find the sites empty).
            inst_of(bin(Xor, Ty::U64, at, r(lane), Src::Imm(27))),
            inst_of(bin(Shl, Ty::U64, at, r(at), Src::Imm(1))),
            inst_of(bin(Shl, Ty::U64, out, r(lane), Src::Imm(3))),
            inst_of(u16_at([v[0], 0, 0, 0], 1, start)),
            inst_of(u16_at([v[1], 0, 0, 0], 1, start + 2)),
            // A new base value: a new span.
            inst_of(bin(Add, Ty::U64, at, r(at), Src::Imm(4))),
            inst_of(u16_at([v[2], v[3], 0, 0], 2, start + 4)),
        ];
        store_packed(&mut code, v, out, 256);
        small_kernel("span", 0, 7, code)
    };
    // Lane 4's accesses start at 62 bytes past `start`; its last ends 12 bytes later.
    for (start, faults) in [(0, false), (438, false), (440, true)] {
        let k = program(start);
        let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
        let want = outcome(&k, &input, &[], None);
        let got = outcome(&k, &input, &[], Some(&jit));
        assert_eq!(want.is_none(), faults, "from {start}: interpreted");
        assert_eq!(want, got, "from {start}");
        assert!(jit.vector_stretches() >= 1, "the loads have a vector form");
    }
}

/// A span of four 2-byte loads (8 bytes a lane) from a base the analysis finds 8 bytes
/// apart from lane to lane (`%tid.x` times 8: a quantized block's quants, two 32-bit
/// values a thread) is checked and read as one run of 32 bytes for each four lanes
/// (`vector::coalesced_span`) where they are one after the other and inside, else lane by
/// lane: inside, misaligned, ending at the allocation's last byte and one past it, and in
/// blocks two threads wide, whose four lanes are not one after the other.
#[test]
fn a_span_of_consecutive_lanes_agrees_with_the_interpreter() {
    use BinOp::*;
    let (tid, at, ty, v) = (0, 1, 2, [3, 4, 5, 6]);
    let r = Src::Reg;
    let program = |start: u64| {
        let u16_at = |d: Reg, offset: u64| Op::Ld {
            space: MemSpace::Global,
            ty: Ty::U16,
            n: 1,
            d: [d, 0, 0, 0],
            addr: Addr {
                base: Some(at),
                global: None,
                offset: (BASE + start + offset) as i64,
            },
        };
        let mut code = vec![
            inst_of(mov(tid, Src::Special(Special::Tid(0)))),
            inst_of(mov(ty, Src::Special(Special::Tid(1)))),
            inst_of(bin(Shl, Ty::U64, at, r(tid), Src::Imm(3))),
            inst_of(bin(MulLo, Ty::U64, ty, r(ty), Src::Imm(24))),
            inst_of(bin(Add, Ty::U64, at, r(at), r(ty))),
        ];
        for (k, &d) in v.iter().enumerate() {
            code.push(inst_of(u16_at(d, 2 * k as u64)));
        }
        store_packed(&mut code, v, at, 512);
        small_kernel("consecutive spans", 0, 7, code)
    };
    let input: Vec<u8> = (0..512u32).map(|i| (i * 53 + 7) as u8).collect();
    let run_one = |k: &Kernel, block: [u32; 3], native: Option<&dyn vgpu_ptx::exec::Native>| {
        let mem = DirectMemory::zeroed(BASE, 1024).expect("aligned memory");
        assert!(mem.put(BASE, &input));
        let r = run(k, &launch((BLOCKS, block, 1), &[], &mem, native));
        (r, mem.get(BASE, 1024))
    };
    // In blocks of 16 threads by 2, the last lane's span ends 152 bytes past `start`; in
    // blocks of 2 by 16, the lanes of each four are 0, 8, 24 and 32 bytes apart.
    for (start, faults) in [(0, false), (1, true), (872, false), (874, true)] {
        for block in [BLOCK, [2, 16, 2]] {
            let k = program(start);
            let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
            let want = run_one(&k, block, None);
            let got = run_one(&k, block, Some(&jit));
            let at = format!("from {start}, blocks of {block:?}");
            if block == BLOCK {
                assert_eq!(want.0.is_err(), faults, "{at}: interpreted");
            }
            assert_eq!(want, got, "{at}");
            assert!(jit.vector_stretches() >= 1, "the loads have a vector form");
        }
    }
}

/// f16x2 `add`, `sub` and `mul` in vector form where some lanes meet infinities, zeros
/// and the largest f16, the other results of their four lanes normal (a NaN or a
/// subnormal result sends the four lanes to the interpreter's arithmetic, the exhaustive
/// test's NaNs nearly always): `inf * 0` and `inf - inf` must come out NaN, as
/// interpreted, not as the products of huge finite numbers.
#[test]
fn f16x2_arithmetic_with_infinities_agrees_with_the_interpreter() {
    let (lane, at, x, y, r) = (0, 1, 2, 3, 4);
    let mut code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(BinOp::Shl, Ty::U64, at, Src::Reg(lane), Src::Imm(3))),
        inst_of(load_at(Ty::U32, x, at, 0)),
        inst_of(load_at(Ty::U32, y, at, 256)),
        inst_of(bin(BinOp::Add, Ty::U64, at, Src::Reg(at), Src::Imm(512))),
    ];
    for op in [HalfOp::Add, HalfOp::Sub, HalfOp::Mul] {
        code.push(inst_of(Op::Half {
            op,
            ty: Ty::F16x2,
            d: r,
            a: Src::Reg(x),
            b: Src::Reg(y),
            c: Src::Imm(0),
            ftz: false,
            sat: false,
        }));
        store_row(&mut code, at, r);
    }
    code.push(inst_of(Op::Exit));
    let k = small_kernel("infinities", 0, 5, code);
    // Per lane: its f16 pair of each operand (one lane of each four meets an infinity).
    const INF: u16 = 0x7C00;
    let pairs: [(u16, u16, u16, u16); 8] = [
        (INF, 0x3C00, 0x0000, 0x3C00),
        (0x3C00, 0x4000, 0x4000, 0x3C00),
        (0x7BFF, 0x3C00, 0x3C00, 0xBC00),
        (0x3555, 0xC000, 0x3C00, 0x4400),
        (0x3C00, INF, 0x3C00, INF),
        (0x8000, 0x3C00, 0x4000, 0x0000),
        (0xFC00, 0x3C00, 0x8000, 0x4000),
        (0x3C00, 0x7BFF, 0x3800, 0x7BFF),
    ];
    let mut input = vec![0u8; 256 * 5];
    for k in 0..32 {
        let (a0, a1, b0, b1) = pairs[k % 8];
        let a = u32::from(a0) | u32::from(a1) << 16;
        let b = u32::from(b0) | u32::from(b1) << 16;
        input[8 * k..8 * k + 4].copy_from_slice(&a.to_le_bytes());
        input[256 + 8 * k..256 + 8 * k + 4].copy_from_slice(&b.to_le_bytes());
    }
    agrees_in_vector_form(&k, &input, 2, "the arithmetic");
}

/// A chain of f16 work in one vector stretch, as ggml's f16 mat-vec makes it: f32 values
/// converted to f16, packed in pairs, multiplied and added as f16 pairs, unpacked and
/// widened again. The stretch hands each f16 result's f32 value to the next operation
/// instead of converting it back; the values at the edges of f16 (a NaN, 65504, what
/// rounds to 65504 or overflows, 2^-14 and what falls below it, ties) send some lanes'
/// groups to the interpreter, whose results must be handed on the same way.
#[test]
fn chained_f16_arithmetic_agrees_with_the_interpreter() {
    let (lane, at, x0, x1, w, h0, h1, p, m, a, u0, u1, v0, v1, d, f) =
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let cvt = |dty, sty, d, a| {
        inst_of(Op::Cvt {
            dty,
            sty,
            // f32 to f16 rounded to nearest; f16 to f32 exact.
            round: if dty == Ty::F16 {
                Round::Nearest
            } else {
                Round::Default
            },
            sat: false,
            ftz: false,
            d,
            a: Src::Reg(a),
        })
    };
    let half = |op, ty, d, a, b| {
        inst_of(Op::Half {
            op,
            ty,
            d,
            a: Src::Reg(a),
            b: Src::Reg(b),
            c: Src::Imm(0),
            ftz: false,
            sat: false,
        })
    };
    let mut code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(BinOp::Shl, Ty::U64, at, Src::Reg(lane), Src::Imm(3))),
        inst_of(load_at(Ty::U32, x0, at, 0)),
        inst_of(load_at(Ty::U32, x1, at, 256)),
        inst_of(load_at(Ty::U32, w, at, 512)),
        inst_of(bin(BinOp::Add, Ty::U64, at, Src::Reg(at), Src::Imm(768))),
        cvt(Ty::F16, Ty::F32, h0, x0),
        cvt(Ty::F16, Ty::F32, h1, x1),
        inst_of(Op::Pack {
            d: p,
            parts: vec![Src::Reg(h0), Src::Reg(h1)],
            bits: 16,
        }),
        half(HalfOp::Mul, Ty::F16x2, m, w, p),
        half(HalfOp::Add, Ty::F16x2, a, m, p),
        inst_of(Op::Unpack {
            ds: vec![u0, u1],
            a: Src::Reg(a),
            bits: 16,
        }),
        half(HalfOp::Sub, Ty::F16, d, u1, h0),
        inst_of(Op::Unpack {
            ds: vec![v0, v1],
            a: Src::Reg(m),
            bits: 16,
        }),
    ];
    // Each f16 widened as the stretch has it (a stretch ends at a store): its f32 value,
    // handed on.
    let halves = [u0, u1, h0, h1, v0, v1, d];
    for (k, &half) in halves.iter().enumerate() {
        code.push(cvt(Ty::F32, Ty::F16, f + k as Reg, half));
    }
    for r in [p, m, a, d].into_iter().chain(f..f + halves.len() as Reg) {
        store_row(&mut code, at, r);
    }
    code.push(inst_of(Op::Exit));
    let k = small_kernel("chained f16", 0, 23, code);
    // f32 bits: ordinary values and ties, then the edges.
    let ordinary: [u32; 8] = [
        0x3F80_0000, // 1
        0x3F80_1000, // 1 + 2^-11: a tie, to the even 1
        0x3F80_3000, // a tie to the even above
        0xC040_0000, // -3
        0x3E2A_AAAB, // 1/6
        0x4479_C000, // 999
        0x3880_0000, // 2^-14, f16's least normal
        0x8000_0000, // -0
    ];
    let edges: [u32; 8] = [
        0xFFFF_FFFF, // a NaN whose rounding would carry out
        0x477F_E000, // 65504
        0x477F_EFFF, // rounds to 65504
        0x477F_F000, // rounds to infinity
        0x387F_E000, // 2^-14 - 2^-25: an f16 subnormal
        0x3280_0000, // 2^-26: rounds to zero
        0x7F80_0000, // infinity
        0x0000_0001, // an f32 subnormal
    ];
    // Weights: f16 pairs (2, 1), (1/3, -1/2), (1, 14), (-3, 1.5).
    let weights: [u32; 4] = [0x3C00_4000, 0xB800_3555, 0x4B00_3C00, 0x3E00_C200];
    let mut input = vec![0u8; 256 * 14];
    for l in 0..32 {
        // Lanes 0-7 and 16-23 ordinary (their groups stay inline); in the others' groups,
        // one lane of four with two of the edges.
        let edge = (l / 16) * 2 + (l % 8) / 4;
        let (a, b) = if (l / 8) % 2 == 0 || l % 4 != 1 {
            (ordinary[l % 8], ordinary[(l + 3) % 8])
        } else {
            (edges[edge], edges[edge + 4])
        };
        input[8 * l..8 * l + 4].copy_from_slice(&a.to_le_bytes());
        input[256 + 8 * l..256 + 8 * l + 4].copy_from_slice(&b.to_le_bytes());
        let w = weights[l % 4];
        input[512 + 8 * l..512 + 8 * l + 4].copy_from_slice(&w.to_le_bytes());
    }
    agrees_in_vector_form(&k, &input, 1, "the f16 chain");
}

/// In a kernel with local memory, a generic address may name a lane's own local memory,
/// which compiled code does not reach: such loads are left to the interpreter, and read
/// what each lane stored there.
#[test]
fn generic_loads_of_local_memory_agree_with_the_interpreter() {
    let (lane, v, at) = (0, 1, 2);
    let local = |store: bool| {
        let addr = Addr {
            base: None,
            global: None,
            offset: 4,
        };
        if store {
            Op::St {
                space: MemSpace::Local,
                ty: Ty::U32,
                n: 1,
                a: [Src::Reg(lane), Src::Imm(0), Src::Imm(0), Src::Imm(0)],
                addr,
            }
        } else {
            Op::Ld {
                space: MemSpace::Generic,
                ty: Ty::U32,
                n: 1,
                d: [v, 0, 0, 0],
                addr: Addr {
                    offset: (vgpu_ptx::exec::LOCAL_WINDOW + 4) as i64,
                    ..addr
                },
            }
        }
    };
    let code = vec![
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(local(true)),
        inst_of(bin(BinOp::Shl, Ty::U64, at, Src::Reg(lane), Src::Imm(3))),
        inst_of(local(false)),
        inst_of(store_u64(at, Src::Reg(v))),
        inst_of(Op::Exit),
    ];
    let mut k = small_kernel("local", 0, 3, code);
    k.local_bytes = 8;
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    let got = lane_values(&k, &jit, &[]);
    let want: Vec<u64> = (0..32).collect();
    assert_eq!(got, want);
    assert!(jit.compiled() >= 1, "the other instructions are compiled");
}

#[test]
fn a_stretch_of_values_computed_once_stores_them_for_every_lane() {
    // A run of instructions the same in every lane, ended by a barrier: its one stretch
    // has nothing left for the lanes but to store the values, which the interpreter then
    // reads in every lane (a local store of each lane's copy, read back and stored).
    let (block, v, back, lane, at) = (0, 1, 2, 3, 4);
    let local = Addr {
        base: None,
        global: None,
        offset: 0,
    };
    let code = vec![
        inst_of(mov(block, Src::Special(Special::Ctaid(0)))),
        inst_of(bin(BinOp::Add, Ty::U64, v, Src::Reg(block), Src::Imm(7))),
        inst_of(bin(BinOp::MulLo, Ty::U64, v, Src::Reg(v), Src::Imm(3))),
        inst_of(Op::Bar),
        inst_of(Op::St {
            space: MemSpace::Local,
            ty: Ty::U64,
            n: 1,
            a: [Src::Reg(v), Src::Imm(0), Src::Imm(0), Src::Imm(0)],
            addr: local,
        }),
        inst_of(Op::Ld {
            space: MemSpace::Local,
            ty: Ty::U64,
            n: 1,
            d: [back, 0, 0, 0],
            addr: local,
        }),
        inst_of(mov(lane, Src::Special(Special::LaneId))),
        inst_of(bin(BinOp::Shl, Ty::U64, at, Src::Reg(lane), Src::Imm(3))),
        inst_of(store_u64(at, Src::Reg(back))),
        inst_of(Op::Exit),
    ];
    let mut k = small_kernel("once", 0, 5, code);
    k.local_bytes = 8;
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    let got = lane_values(&k, &jit, &[]);
    assert_eq!(got, vec![21; 32]);
    // This stretch and the one after the local accesses (the lane index and its store).
    assert_eq!(
        jit.vector_stretches(),
        2,
        "the stretch of values computed once has a vector form"
    );
}

/// Four lanes whose addresses the analysis takes for one place (`%tid.y`, the same in
/// each four lanes of rows four wide), in a block one thread wide where each lane is a
/// row: the test of the four finds them apart and loads lane by lane, where the lanes of
/// each half agree with the other half's (`(%tid.y & 1) * 8`: 0, 8, 0, 8) or the halves
/// differ (`(%tid.y & 2) * 4`: 0, 0, 8, 8). Each lane stores what it loaded.
#[test]
fn lanes_the_analysis_takes_for_one_place_are_tested_lane_by_lane() {
    use BinOp::*;
    let (y, at, v, out) = (0, 1, 2, 3);
    let r = Src::Reg;
    let input: Vec<u8> = (0..256u32).map(|i| (i * 37 + 11) as u8).collect();
    for (mask, shift) in [(1, 3), (2, 2)] {
        let code = vec![
            inst_of(mov(y, Src::Special(Special::Tid(1)))),
            inst_of(bin(And, Ty::U64, at, r(y), Src::Imm(mask))),
            inst_of(bin(Shl, Ty::U64, at, r(at), Src::Imm(shift))),
            inst_of(load_at(Ty::U64, v, at, 0)),
            inst_of(bin(Shl, Ty::U64, out, r(y), Src::Imm(3))),
            inst_of(store_u64_at(out, r(v), 256)),
            inst_of(Op::Exit),
        ];
        let k = small_kernel("apart", 0, 4, code);
        let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
        let mut got = Vec::new();
        for native in [None, Some(&jit as &dyn vgpu_ptx::exec::Native)] {
            let mem = DirectMemory::zeroed(BASE, 512).expect("aligned memory");
            assert!(mem.put(BASE, &input));
            run(&k, &launch((1, [1, 32, 1], 1), &[], &mem, native)).expect("runs");
            got.push(mem.get(BASE + 256, 256).expect("inside"));
        }
        for lane in 0..32u64 {
            let from = ((lane & mask) << shift) as usize;
            let want = u64::from_le_bytes(input[from..from + 8].try_into().unwrap());
            let at = 8 * lane as usize;
            let value = |m: &[u8]| u64::from_le_bytes(m[at..at + 8].try_into().unwrap());
            assert_eq!(value(&got[0]), want, "lane {lane} interpreted");
            assert_eq!(value(&got[1]), want, "lane {lane} compiled");
        }
        assert!(jit.vector_stretches() >= 1, "the load has a vector form");
    }
}

/// Loads and stores of 4 and 8 bytes whose addresses come from `%tid.x` times their size
/// (what the analysis takes for coalesced: `vector::coalesced_load`), in global and shared
/// memory (a 4-byte load also signed, its value added to one of 64 bits; the shared ones
/// also by a 32-bit address, whose lanes are tested on their `i32x4`): one vector
/// access where each four lanes' bytes lie one after the other and inside, else lane by
/// lane; a 4-byte load by `%tid.x` times 8 (every other 4 bytes: two
/// 16-byte reads); and a 2-byte load by `%tid.y` (taken for one place for each four
/// lanes): one load where it is. In blocks two threads wide the lanes are not one
/// after the other (and two store to each address: the later lane's value stays, as
/// interpreted), and `%tid.y` differs within four lanes; misaligned or partly outside,
/// the first lane that faults is the interpreter's, and nothing after it is stored.
#[test]
fn coalesced_accesses_agree_with_the_interpreter() {
    use BinOp::*;
    let (tid, at4, at8, v, w, x, ty, z, e, sv, a32) = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    let r = Src::Reg;
    let input: Vec<u8> = (0..512u32).map(|i| (i * 29 + 5) as u8).collect();
    let access = |store: bool, space, ty, d: Reg, base: Reg, offset: u64| {
        let addr = Addr {
            base: Some(base),
            global: None,
            offset: offset as i64,
        };
        match store {
            false => Op::Ld {
                space,
                ty,
                n: 1,
                d: [d, 0, 0, 0],
                addr,
            },
            true => Op::St {
                space,
                ty,
                n: 1,
                a: [r(d), Src::Imm(0), Src::Imm(0), Src::Imm(0)],
                addr,
            },
        }
    };
    let program = |(start, shared, one, pair): (u64, u64, u64, u64), wide: bool| {
        let g = MemSpace::Global;
        let sh = if wide { at4 } else { a32 };
        let code = vec![
            inst_of(mov(ty, Src::Special(Special::Tid(1)))),
            inst_of(bin(Shl, Ty::U64, ty, r(ty), Src::Imm(2))),
            inst_of(access(false, g, Ty::S16, z, ty, BASE + one)),
            inst_of(mov(tid, Src::Special(Special::Tid(0)))),
            inst_of(bin(Shl, Ty::U64, at4, r(tid), Src::Imm(2))),
            inst_of(bin(Shl, Ty::U64, at8, r(tid), Src::Imm(3))),
            inst_of(access(false, g, Ty::U32, v, at4, BASE + start)),
            inst_of(access(false, g, Ty::S32, sv, at4, BASE + start)),
            inst_of(access(false, g, Ty::U64, w, at8, BASE)),
            inst_of(access(false, g, Ty::U32, e, at8, BASE + pair)),
            // The shared address in 32 bits is made in the stretch of each access (a
            // global store after the global loads starts the load's), so that its
            // `i32x4` is at hand there.
            inst_of(bin(Shl, Ty::U32, a32, r(tid), Src::Imm(2))),
            inst_of(access(true, MemSpace::Shared, Ty::U32, ty, sh, shared)),
            inst_of(access(true, g, Ty::U32, v, at4, BASE + 512)),
            inst_of(bin(Shl, Ty::U32, a32, r(tid), Src::Imm(2))),
            inst_of(access(false, MemSpace::Shared, Ty::U32, x, sh, shared)),
            inst_of(access(true, g, Ty::U32, x, ty, BASE + 512)),
            inst_of(bin(Add, Ty::U64, w, r(w), r(z))),
            inst_of(bin(Add, Ty::U64, w, r(w), r(e))),
            inst_of(bin(Add, Ty::U64, w, r(w), r(sv))),
            inst_of(access(true, g, Ty::U64, w, at8, BASE + 768)),
            inst_of(Op::Exit),
        ];
        small_kernel("coalesced", 0, 11, code)
    };
    let run_one = |k: &Kernel, block: [u32; 3], native: Option<&dyn vgpu_ptx::exec::Native>| {
        let mem = DirectMemory::zeroed(BASE, 1024).expect("aligned memory");
        assert!(mem.put(BASE, &input));
        let r = run(k, &launch((BLOCKS, block, 1), &[], &mem, native));
        (r, mem.get(BASE, 1024))
    };
    // The 4-byte global loads from 0: inside; from 2: misaligned; from 964: that of the
    // threads with `%tid.x` 15 outside, the first lanes' inside (their four find the
    // site's allocation; the four with the last one outside must not be read at once).
    // (Only they fault: which of two instructions that fault in one stretch is reported
    // first is the order the lanes ran them in.) The shared accesses from 0: inside; from
    // 2: misaligned; from 484 (of 512 bytes): that of the threads with `%tid.x` 7 outside
    // (the last of its four), and the later. The 2-byte loads from 0: inside; from 1:
    // misaligned; from 1022: those with `%tid.y` 1 outside (the lanes after the first
    // sixteen). The loads of every other 4 bytes from 0 and 4: inside (each thread's first
    // and second); from 2: misaligned; from 904: the last lane's outside (of `%tid.x` 15:
    // its four must not be read at once). In blocks two threads wide, `%tid.x` is 0 or 1:
    // only the misaligned accesses and the 2-byte loads from 1022 fault.
    let cases = [
        (0, 0, 0, 0),
        (2, 0, 0, 0),
        (964, 0, 0, 0),
        (0, 2, 0, 0),
        (0, 484, 0, 0),
        (0, 0, 1, 0),
        (0, 0, 1022, 0),
        (0, 0, 0, 4),
        (0, 0, 0, 2),
        (0, 0, 0, 904),
    ];
    let blocks = [
        (BLOCK, true),
        (BLOCK, false),
        ([2, 16, 2], true),
        ([2, 16, 2], false),
    ];
    for (start, shared, one, pair) in cases {
        for (block, wide) in blocks {
            let misaligned = start == 2 || shared == 2 || one == 1 || pair == 2;
            let outside = one == 1022 || (block[0] == 16 && start + shared + pair > 4);
            let faults = misaligned || outside;
            let k = program((start, shared, one, pair), wide);
            let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
            let want = run_one(&k, block, None);
            let got = run_one(&k, block, Some(&jit));
            let at =
                format!("from {start}, {shared}, {one}, {pair}, blocks of {block:?}, wide {wide}");
            assert_eq!(want.0.is_err(), faults, "{at}: interpreted");
            assert_eq!(want, got, "{at}");
            assert!(
                jit.vector_stretches() >= 1,
                "the accesses have a vector form"
            );
        }
    }
}

/// A branch over a few stores (`@p bra L; st …; L:`, a block reduction's `if (lane == 0)
/// shared[warp] = sum;`) is compiled as the stores under the opposite guard, the warp
/// going on past them together: each lane's stores are made where the interpreter's lane
/// makes them, by one lane in four, by every lane, by none, under `@p` and `@!p`, `p`
/// compared in 64 bits or in 32 (whose comparison the vector code keeps as one mask), one
/// store or two, compiled lane by lane and in vector form.
#[test]
fn stores_a_branch_skips_are_made_by_the_lanes_that_do_not_take_it() {
    use BinOp::*;
    let (lane, at, p, v) = (0, 1, 2, 3);
    let r = Src::Reg;
    // p: lane % 4 < `below`; stores of `v` to the lane's own 8 bytes of the first row (and
    // of the second), skipped where p is `neg`; then every lane's value to the third row.
    let kernel = |below: u64, neg: bool, two: bool, ty: Ty| {
        let mut compare = lt_u64(p, r(v), Src::Imm(below));
        if let Op::Setp { ty: t, .. } = &mut compare {
            *t = ty;
        }
        let mut code = vec![
            inst_of(mov(lane, Src::Special(Special::LaneId))),
            inst_of(bin(And, Ty::U64, v, r(lane), Src::Imm(3))),
            inst_of(compare),
            inst_of(bin(Shl, Ty::U64, at, r(lane), Src::Imm(3))),
            inst_of(bin(Add, Ty::U64, v, r(lane), Src::Imm(1000))),
        ];
        let skip = code.len() as u32 + if two { 3 } else { 2 };
        code.push(inst(Op::Bra { target: skip }, Some((p, neg))));
        code.push(inst_of(store_u64(at, r(v))));
        if two {
            code.push(inst_of(Op::St {
                space: MemSpace::Global,
                ty: Ty::U64,
                n: 1,
                a: [r(lane), Src::Imm(0), Src::Imm(0), Src::Imm(0)],
                addr: Addr {
                    base: Some(at),
                    global: None,
                    offset: (BASE + 256) as i64,
                },
            }));
        }
        code.push(inst_of(bin(Add, Ty::U64, v, r(v), Src::Imm(1))));
        code.push(inst_of(bin(Add, Ty::U64, at, r(at), Src::Imm(512))));
        code.push(inst_of(store_u64(at, r(v))));
        code.push(inst_of(Op::Exit));
        small_kernel("skipped", 0, 4, code)
    };
    let input: Vec<u8> = (0..1024u32).map(|b| b.wrapping_mul(37) as u8).collect();
    let cases = [0, 1, 4]
        .into_iter()
        .flat_map(|b| [false, true].map(|n| (b, n)))
        .flat_map(|(b, n)| [false, true].map(|t| (b, n, t)));
    for (below, neg, two) in cases {
        for ty in [Ty::U64, Ty::U32] {
            let k = kernel(below, neg, two, ty);
            let what = format!("the stores under p = lane % 4 < {below} ({ty:?}), neg {neg}");
            agrees_in_vector_form(&k, &input, 1, &what);
            // Lane by lane too, as compiled for warps whose lanes do not all run.
            let jit = vgpu_ptx_jit::Jit::new(&k).expect("a code generator");
            let want = outcome(&k, &input, &[], None).expect("no fault interpreted");
            let got = outcome(&k, &input, &[], Some(&jit)).expect("no fault compiled");
            assert_eq!(want, got, "{what}, lane by lane");
            assert!(jit.compiled() > 0);
        }
    }
}

/// A butterfly reduction whose sum lane 0 alone stores (`@!p bra L; st …; L:`, the
/// stores compiled under a guard inside the reduction's chain), then every lane stores
/// its own: as interpreted, lane 0's 528 in the first row, each lane's 1528 in the
/// second.
#[test]
fn a_reduction_chain_stores_its_sum_from_one_lane() {
    use BinOp::*;
    let (lane, at, x, y, p) = (0, 1, 2, 3, 4);
    let r = Src::Reg;
    let mut code = lane_sum(lane, at, x, y);
    code.extend([
        inst_of(lt_u64(p, r(lane), Src::Imm(1))),
        inst(Op::Bra { target: 16 }, Some((p, true))),
        inst_of(store_u64(at, r(x))),
        inst_of(bin(Add, Ty::U64, x, r(x), Src::Imm(1000))),
        inst_of(bin(Add, Ty::U64, at, r(at), Src::Imm(256))),
        inst_of(store_u64(at, r(x))),
        inst_of(Op::Exit),
    ]);
    assert!(matches!(code[16].op, Op::Bin { .. }), "the branch's target");
    let k = small_kernel("one lane", 0, 5, code);
    agrees_in_vector_form(&k, &[0; 512], 1, "the reduction");
    let jit = vgpu_ptx_jit::Jit::eager(&k).expect("a code generator for this host");
    let out = outcome(&k, &[0; 512], &[], Some(&jit)).expect("no fault");
    for (i, s) in out.chunks(8).take(64).enumerate() {
        let s = u64::from_le_bytes(s.try_into().expect("8 bytes"));
        let want = match i {
            0 => 528,
            1..32 => 0,
            _ => 1528,
        };
        assert_eq!(s, want, "row {}, lane {}", i / 32, i % 32);
    }
}
