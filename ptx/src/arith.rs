//! The arithmetic of the instructions, one lane at a time, on register values.
//!
//! A register holds its value in the low bits of a `u64`; each operation reads the low bits
//! of its operands' type (sign-extending signed types) and returns the result in the low
//! bits of its destination type. Floats are stored as their IEEE bits.

use crate::ir::{AtomOp, BinOp, Cmp, Round, Ty, UnOp};

fn f32_of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

fn bits32(f: f32) -> u64 {
    u64::from(f.to_bits())
}

fn f64_of(v: u64) -> f64 {
    f64::from_bits(v)
}

/// Flushes an f32 subnormal to a zero of the same sign.
fn flush(f: f32) -> f32 {
    if f.is_subnormal() {
        0.0f32.copysign(f)
    } else {
        f
    }
}

/// An f32 register value with a subnormal flushed to zero (`.ftz`).
pub fn flush_bits(v: u64) -> u64 {
    bits32(flush(f32_of(v)))
}

/// The signed value of the low bits of `v` as `ty`.
fn signed(ty: Ty, v: u64) -> i64 {
    match ty.size() {
        1 => v as u8 as i8 as i64,
        2 => v as u16 as i16 as i64,
        4 => v as u32 as i32 as i64,
        _ => v as i64,
    }
}

/// The unsigned value of the low bits of `v` as `ty`.
fn unsigned(ty: Ty, v: u64) -> u64 {
    match ty.size() {
        1 => v as u8 as u64,
        2 => v as u16 as u64,
        4 => v as u32 as u64,
        _ => v,
    }
}

/// Extends a value loaded from memory as `ty` to a register value.
pub fn extend(ty: Ty, v: u64) -> u64 {
    if ty.signed() {
        signed(ty, v) as u64
    } else {
        unsigned(ty, v)
    }
}

fn bits(ty: Ty) -> u32 {
    ty.size() * 8
}

/// `max`: a NaN operand gives the other one (two give NaN), and +0 is above -0 (the
/// host's `max` may give either zero).
fn max_num<F: PartialOrd + Copy + Signed0>(x: F, y: F) -> F {
    if x.nan() {
        y
    } else if y.nan() || x > y || (x == y && !x.negative()) {
        x
    } else {
        y
    }
}

/// `min`: a NaN operand gives the other one (two give NaN), and -0 is below +0.
fn min_num<F: PartialOrd + Copy + Signed0>(x: F, y: F) -> F {
    if x.nan() {
        y
    } else if y.nan() || x < y || (x == y && x.negative()) {
        x
    } else {
        y
    }
}

/// What [`max_num`] and [`min_num`] need of a float.
trait Signed0 {
    fn nan(self) -> bool;
    fn negative(self) -> bool;
}

impl Signed0 for f32 {
    fn nan(self) -> bool {
        self.is_nan()
    }
    fn negative(self) -> bool {
        self.is_sign_negative()
    }
}

impl Signed0 for f64 {
    fn nan(self) -> bool {
        self.is_nan()
    }
    fn negative(self) -> bool {
        self.is_sign_negative()
    }
}

fn float_bin(op: BinOp, a: f64, b: f64) -> f64 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::MulLo | BinOp::MulHi | BinOp::MulWide => a * b,
        BinOp::Div => a / b,
        BinOp::Rem => a % b,
        BinOp::Min => min_num(a, b),
        BinOp::Max => max_num(a, b),
        BinOp::CopySign => b.copysign(a),
        _ => f64::NAN,
    }
}

/// A binary operation.
pub fn bin(op: BinOp, ty: Ty, a: u64, b: u64, ftz: bool, sat: bool) -> u64 {
    match ty {
        Ty::F32 => {
            let (mut x, mut y) = (f32_of(a), f32_of(b));
            if ftz {
                (x, y) = (flush(x), flush(y));
            }
            let r = match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::MulLo | BinOp::MulHi | BinOp::MulWide => x * y,
                BinOp::Div => x / y,
                BinOp::Rem => x % y,
                BinOp::Min => min_num(x, y),
                BinOp::Max => max_num(x, y),
                // A bit operation: a NaN keeps its payload.
                BinOp::CopySign => return bits32(y.copysign(x)),
                // Bitwise operations on .f32 do not exist; the checker keeps them out.
                _ => f32::NAN,
            };
            f32_result(r, ftz, sat)
        }
        Ty::F64 => {
            let r = float_bin(op, f64_of(a), f64_of(b));
            let r = if sat {
                if r.is_nan() {
                    0.0
                } else {
                    r.clamp(0.0, 1.0)
                }
            } else {
                r
            };
            r.to_bits()
        }
        Ty::Pred => {
            let (x, y) = (a != 0, b != 0);
            u64::from(match op {
                BinOp::And => x && y,
                BinOp::Or => x || y,
                BinOp::Xor => x ^ y,
                _ => false,
            })
        }
        _ => int_bin(op, ty, a, b, sat),
    }
}

fn int_bin(op: BinOp, ty: Ty, a: u64, b: u64, sat: bool) -> u64 {
    let w = bits(ty);
    let s = ty.signed();
    let (sa, sb) = (signed(ty, a), signed(ty, b));
    let (ua, ub) = (unsigned(ty, a), unsigned(ty, b));
    let r: u64 = match op {
        BinOp::Add if sat && s && w == 32 => {
            (sa + sb).clamp(i32::MIN.into(), i32::MAX.into()) as u64
        }
        BinOp::Sub if sat && s && w == 32 => {
            (sa - sb).clamp(i32::MIN.into(), i32::MAX.into()) as u64
        }
        BinOp::Add => ua.wrapping_add(ub),
        BinOp::Sub => ua.wrapping_sub(ub),
        BinOp::MulLo => ua.wrapping_mul(ub),
        BinOp::MulHi => {
            if s {
                ((i128::from(sa) * i128::from(sb)) >> w) as u64
            } else {
                ((u128::from(ua) * u128::from(ub)) >> w) as u64
            }
        }
        BinOp::MulWide => {
            // The result is twice as wide: return it whole.
            if s {
                (sa.wrapping_mul(sb)) as u64
            } else {
                ua.wrapping_mul(ub)
            }
        }
        BinOp::Div => {
            if ub == 0 {
                u64::MAX
            } else if s {
                sa.wrapping_div(sb) as u64
            } else {
                ua / ub
            }
        }
        BinOp::Rem => {
            if ub == 0 {
                ua
            } else if s {
                sa.wrapping_rem(sb) as u64
            } else {
                ua % ub
            }
        }
        BinOp::Min => {
            if s {
                sa.min(sb) as u64
            } else {
                ua.min(ub)
            }
        }
        BinOp::Max => {
            if s {
                sa.max(sb) as u64
            } else {
                ua.max(ub)
            }
        }
        BinOp::And => a & b,
        BinOp::Or => a | b,
        BinOp::Xor => a ^ b,
        BinOp::Shl => {
            let n = b as u32;
            if n >= w {
                0
            } else {
                ua << n
            }
        }
        BinOp::Shr => {
            let n = (b as u32).min(w);
            if s {
                (sa >> n.min(63)) as u64
            } else if n >= w {
                0
            } else {
                ua >> n
            }
        }
        BinOp::CopySign => a,
    };
    if op == BinOp::MulWide {
        return r;
    }
    r & mask(w)
}

fn mask(w: u32) -> u64 {
    if w >= 64 {
        u64::MAX
    } else {
        (1u64 << w) - 1
    }
}

/// `mad`/`fma`: `mode` 0 = lo (or float), 1 = hi, 2 = wide.
pub fn mad(ty: Ty, mode: u8, a: u64, b: u64, c: u64, ftz: bool, sat: bool) -> u64 {
    match ty {
        Ty::F32 => {
            let (mut x, mut y, mut z) = (f32_of(a), f32_of(b), f32_of(c));
            if ftz {
                (x, y, z) = (flush(x), flush(y), flush(z));
            }
            f32_result(fma_f32(x, y, z), ftz, sat)
        }
        Ty::F64 => f64_of(a).mul_add(f64_of(b), f64_of(c)).to_bits(),
        _ => {
            let w = bits(ty);
            match mode {
                1 => {
                    let hi = int_bin(BinOp::MulHi, ty, a, b, false);
                    hi.wrapping_add(c) & mask(w)
                }
                2 => int_bin(BinOp::MulWide, ty, a, b, false).wrapping_add(c) & mask(2 * w),
                _ => {
                    if sat && ty.signed() && w == 32 {
                        let p = i64::from(a as i32) * i64::from(b as i32);
                        let lo = i64::from(p as i32);
                        return (lo + i64::from(c as i32)).clamp(i32::MIN.into(), i32::MAX.into())
                            as u64
                            & mask(32);
                    }
                    unsigned(ty, a)
                        .wrapping_mul(unsigned(ty, b))
                        .wrapping_add(c)
                        & mask(w)
                }
            }
        }
    }
}

/// The exact sum `a + b` as `(s, e)`: `s` rounded to nearest, `e` the error (TwoSum).
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// `x * y + z` rounded once to nearest even (f32 `fma`), in a few f64 operations instead
/// of a call into libm's software `fmaf`: the product is exact in f64, the sum's rounding
/// error is recovered exactly ([`two_sum`]), and a sum that fell exactly halfway between two
/// f32 values is moved towards the exact value by one f64 ulp before the final rounding,
/// so that it rounds as the exact value does. Subnormal results, and sums that round past
/// the f32 range, take libm's path.
pub fn fma_f32(x: f32, y: f32, z: f32) -> f32 {
    let (hi, lo) = two_sum(f64::from(x) * f64::from(y), f64::from(z));
    let n = hi as f32;
    if lo == 0.0 || lo.is_nan() {
        return n; // exact in f64 (one rounding), or infinities and NaNs
    }
    if !n.is_finite() || n.abs() < f32::MIN_POSITIVE {
        return x.mul_add(y, z);
    }
    // The 29 mantissa bits f32 drops are exactly one half: hi is a tie.
    if hi.to_bits() & 0x1FFF_FFFF == 0x1000_0000 {
        // One ulp away from zero when lo has hi's sign, else towards it (hi is normal).
        let b = hi.to_bits();
        let nudged = if (lo > 0.0) == (hi > 0.0) {
            b + 1
        } else {
            b - 1
        };
        return f64::from_bits(nudged) as f32;
    }
    n
}

/// Rounds the exact value `hi + lo` (a double-double) to f32 in direction `r`.
fn f32_directed(hi: f64, lo: f64, r: Round) -> f32 {
    let n = hi as f32;
    if n.is_nan() || n.is_infinite() {
        return n;
    }
    // Where the exact value lies against n: (hi - n) is exact, lo breaks ties.
    let d = (hi - f64::from(n)) + lo;
    if d == 0.0 {
        return n;
    }
    let above = d > 0.0;
    match r {
        Round::Zero if n > 0.0 || (n == 0.0 && above) => {
            if above {
                n
            } else {
                next_down(n)
            }
        }
        Round::Zero => {
            if above {
                next_up(n)
            } else {
                n
            }
        }
        Round::Down => {
            if above {
                n
            } else {
                next_down(n)
            }
        }
        Round::Up => {
            if above {
                next_up(n)
            } else {
                n
            }
        }
        _ => n,
    }
}

/// The NaN that f32 arithmetic gives, whatever NaNs went in (as NVIDIA GPUs do): the
/// result does not depend on which operand's payload the host's instruction keeps.
pub const CANONICAL_NAN_F32: u32 = 0x7FFF_FFFF;

/// The register value of an f32 arithmetic result, its NaN canonical.
fn arith32(r: f32) -> u64 {
    if r.is_nan() {
        CANONICAL_NAN_F32.into()
    } else {
        bits32(r)
    }
}

/// An f32 arithmetic result as a register value, saturated (`.sat`) and flushed (`.ftz`)
/// as asked, its NaN canonical.
fn f32_result(r: f32, ftz: bool, sat: bool) -> u64 {
    let r = if sat {
        if r.is_nan() {
            0.0
        } else {
            r.clamp(0.0, 1.0)
        }
    } else {
        r
    };
    arith32(if ftz { flush(r) } else { r })
}

/// [`bin_rounded`] as a plain function of the two operands, for the common cases whose
/// result needs none of the other arguments: integer add, sub, mul.lo, and, or, xor and
/// shifts of 32 and 64 bits without saturation, and f32 add, sub and mul rounded to
/// nearest without `.ftz`, `.sat` or `.NaN`. None for the rest. The interpreter picks it
/// once per warp instead of dispatching on every lane; it computes what [`bin_rounded`]
/// computes (tested against it).
pub fn bin_fn(
    op: BinOp,
    ty: Ty,
    ftz: bool,
    sat: bool,
    round: Round,
    nan: bool,
) -> Option<fn(u64, u64) -> u64> {
    use BinOp::*;
    let f: fn(u64, u64) -> u64 = match (bits(ty), ty.float(), op) {
        (_, _, _) if sat || nan => return None,
        (32, true, _) if ftz || !matches!(round, Round::Default | Round::Nearest) => return None,
        (32, true, Add) => |a, b| arith32(f32_of(a) + f32_of(b)),
        (32, true, Sub) => |a, b| arith32(f32_of(a) - f32_of(b)),
        (32, true, MulLo | MulHi | MulWide) => |a, b| arith32(f32_of(a) * f32_of(b)),
        (_, true, _) => return None,
        _ if ty == Ty::Pred => return None,
        (32, false, Add) => |a, b| u64::from((a as u32).wrapping_add(b as u32)),
        (32, false, Sub) => |a, b| u64::from((a as u32).wrapping_sub(b as u32)),
        (32, false, MulLo) => |a, b| u64::from((a as u32).wrapping_mul(b as u32)),
        (32, false, And) => |a, b| u64::from(a as u32 & b as u32),
        (32, false, Or) => |a, b| u64::from(a as u32 | b as u32),
        (32, false, Xor) => |a, b| u64::from(a as u32 ^ b as u32),
        (32, false, Shl) => |a, b| u64::from((a as u32).checked_shl(b as u32).unwrap_or(0)),
        (32, false, Shr) if ty.signed() => {
            |a, b| u64::from(((a as i32) >> (b as u32).min(31)) as u32)
        }
        (32, false, Shr) => |a, b| u64::from((a as u32).checked_shr(b as u32).unwrap_or(0)),
        (64, false, Add) => |a, b| a.wrapping_add(b),
        (64, false, Sub) => |a, b| a.wrapping_sub(b),
        (64, false, MulLo) => |a, b| a.wrapping_mul(b),
        (64, false, And) => |a, b| a & b,
        (64, false, Or) => |a, b| a | b,
        (64, false, Xor) => |a, b| a ^ b,
        (64, false, Shl) => |a, b| a.checked_shl(b as u32).unwrap_or(0),
        (64, false, Shr) if ty.signed() => |a, b| ((a as i64) >> (b as u32).min(63)) as u64,
        (64, false, Shr) => |a, b| a.checked_shr(b as u32).unwrap_or(0),
        _ => return None,
    };
    Some(f)
}

/// [`bin`] with a rounding mode (directed modes for f32 `add`/`sub`/`mul`) and `.NaN`.
#[allow(clippy::too_many_arguments)]
pub fn bin_rounded(
    op: BinOp,
    ty: Ty,
    a: u64,
    b: u64,
    ftz: bool,
    sat: bool,
    round: Round,
    nan: bool,
) -> u64 {
    if nan && ty.float() {
        let is_nan = |v: u64| match ty {
            Ty::F32 => f32_of(v).is_nan(),
            _ => f64_of(v).is_nan(),
        };
        if is_nan(a) || is_nan(b) {
            return if ty == Ty::F32 {
                bits32(f32::NAN)
            } else {
                f64::NAN.to_bits()
            };
        }
    }
    if ty != Ty::F32 || matches!(round, Round::Default | Round::Nearest) {
        return bin(op, ty, a, b, ftz, sat);
    }
    let (mut x, mut y) = (f32_of(a), f32_of(b));
    if ftz {
        (x, y) = (flush(x), flush(y));
    }
    let (x, y) = (f64::from(x), f64::from(y));
    let (hi, lo) = match op {
        BinOp::Add => two_sum(x, y),
        BinOp::Sub => two_sum(x, -y),
        // The product of two f32 is exact in f64.
        _ => (x * y, 0.0),
    };
    f32_result(f32_directed(hi, lo, round), ftz, sat)
}

/// [`mad`] with a rounding mode (directed modes for f32 `fma`).
#[allow(clippy::too_many_arguments)]
pub fn mad_rounded(
    ty: Ty,
    mode: u8,
    a: u64,
    b: u64,
    c: u64,
    ftz: bool,
    sat: bool,
    round: Round,
) -> u64 {
    if ty != Ty::F32 || matches!(round, Round::Default | Round::Nearest) {
        return mad(ty, mode, a, b, c, ftz, sat);
    }
    let (mut x, mut y, mut z) = (f32_of(a), f32_of(b), f32_of(c));
    if ftz {
        (x, y, z) = (flush(x), flush(y), flush(z));
    }
    let (hi, lo) = two_sum(f64::from(x) * f64::from(y), f64::from(z));
    f32_result(f32_directed(hi, lo, round), ftz, sat)
}

/// The coefficients of 2^f for |f| <= 1/2 in [`ex2_f32`], lowest degree first: a
/// polynomial of degree 6 near the best (a Chebyshev fit made in 50-digit arithmetic),
/// its coefficients rounded to f32: within 2^-25.6 of 2^f (relative), a fifth of an ulp.
#[allow(clippy::excessive_precision)]
pub const EX2_POLY: [f32; 7] = [
    1.0,
    // The fit's coefficient rounds to ln 2's f32.
    std::f32::consts::LN_2,
    0.240_226_51,
    0.055_503_27,
    0.009_618_057,
    0.001_340_042_8,
    0.000_154_614_45,
];

/// The range [`ex2_f32`] clamps its argument to: beyond it, 2^x is 0 or infinite in f32
/// either way.
pub const EX2_RANGE: (f32, f32) = (-152.0, 130.0);

/// f32 `ex2` as the device computes it, in f32: with `n` the integer nearest `x` (ties to
/// even) and `f = x - n` (exact), 2^f by [`EX2_POLY`] (Horner's scheme, one fused
/// multiply-add at each step), times 2^h and then 2^(n-h) for h = n/2 rounded down (each
/// a normal f32; the first product is exact, the second rounds once, to a subnormal or
/// infinity where 2^x is one). Within an ulp of the correctly rounded result (against the
/// host's `exp2` over every f32 from -160 to 140: 0.62% an ulp away, none further); the GPU's
/// `ex2.approx` is within 2 ulp. A NaN gives itself, quieted. Compiled code computes it
/// with the same operations in the same order, four lanes to a vector, so to the same
/// bits.
#[inline]
pub fn ex2_f32(x: f32) -> f32 {
    if x.is_nan() {
        return f32::from_bits(x.to_bits() | 0x0040_0000);
    }
    let x = x.clamp(EX2_RANGE.0, EX2_RANGE.1);
    let n = x.round_ties_even();
    let f = x - n;
    let (last, lower) = EX2_POLY.split_last().expect("coefficients");
    let mut p = *last;
    for c in lower.iter().rev() {
        p = p.mul_add(f, *c);
    }
    // 2^h and 2^(n-h), exactly: n is an integer of the clamped range, h and n - h
    // within -76..=65.
    let n = n as i32;
    let h = n >> 1;
    let scale = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    p * scale(h) * scale(n - h)
}

/// A unary operation.
pub fn un(op: UnOp, ty: Ty, a: u64, ftz: bool) -> u64 {
    let float = |x: f64| -> f64 {
        match op {
            UnOp::Neg => -x,
            UnOp::Abs => x.abs(),
            UnOp::Sqrt => x.sqrt(),
            UnOp::Rsqrt => 1.0 / x.sqrt(),
            UnOp::Rcp => 1.0 / x,
            UnOp::Sin => x.sin(),
            UnOp::Cos => x.cos(),
            UnOp::Lg2 => x.log2(),
            UnOp::Ex2 => x.exp2(),
            UnOp::Tanh => x.tanh(),
            _ => f64::NAN,
        }
    };
    match ty {
        // f32 is computed in f64 and rounded once: correctly rounded for sqrt and rcp,
        // at least as accurate as the GPU's .approx forms for the others (`ex2` by the
        // polynomial of `ex2_f32`, the others by the host's math library).
        Ty::F32 => {
            let x = if ftz { flush(f32_of(a)) } else { f32_of(a) };
            let r = if op == UnOp::Ex2 {
                ex2_f32(x)
            } else {
                float(f64::from(x)) as f32
            };
            bits32(if ftz { flush(r) } else { r })
        }
        Ty::F64 => float(f64_of(a)).to_bits(),
        Ty::Pred => u64::from(match op {
            UnOp::Not | UnOp::CNot => a == 0,
            _ => a != 0,
        }),
        _ => {
            let w = bits(ty);
            let u = unsigned(ty, a);
            (match op {
                UnOp::Neg => (signed(ty, a).wrapping_neg()) as u64,
                UnOp::Abs => signed(ty, a).wrapping_abs() as u64,
                UnOp::Not => !u,
                UnOp::CNot => u64::from(u == 0),
                UnOp::Popc => u64::from(u.count_ones()),
                UnOp::Clz => u64::from(u.leading_zeros() - (64 - w)),
                UnOp::Brev => u.reverse_bits() >> (64 - w),
                _ => 0,
            }) & mask(w)
        }
    }
}

/// A `setp` comparison.
pub fn compare(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    if ty.float() {
        let (x, y) = match ty {
            Ty::F32 => (f64::from(f32_of(a)), f64::from(f32_of(b))),
            Ty::F16 => (
                f64::from(half::f16::from_bits(a as u16).to_f32()),
                f64::from(half::f16::from_bits(b as u16).to_f32()),
            ),
            Ty::BF16 => (
                f64::from(half::bf16::from_bits(a as u16).to_f32()),
                f64::from(half::bf16::from_bits(b as u16).to_f32()),
            ),
            _ => (f64_of(a), f64_of(b)),
        };
        let nan = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => x == y,
            Cmp::Ne => !nan && x != y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
            Cmp::Unordered(k) => {
                nan || match k {
                    0 => x == y,
                    1 => x != y,
                    2 => x < y,
                    3 => x <= y,
                    4 => x > y,
                    _ => x >= y,
                }
            }
            Cmp::Num => !nan,
            Cmp::Nan => nan,
        };
    }
    if ty.signed() {
        let (x, y) = (signed(ty, a), signed(ty, b));
        int_cmp(cmp, x.cmp(&y))
    } else {
        let (x, y) = (unsigned(ty, a), unsigned(ty, b));
        int_cmp(cmp, x.cmp(&y))
    }
}

fn int_cmp(cmp: Cmp, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match cmp {
        Cmp::Eq => o == Equal,
        Cmp::Ne => o != Equal,
        Cmp::Lt => o == Less,
        Cmp::Le => o != Greater,
        Cmp::Gt => o == Greater,
        Cmp::Ge => o != Less,
        _ => false,
    }
}

/// A float as f64, from a register value of type `ty`.
fn to_f64(ty: Ty, v: u64) -> f64 {
    match ty {
        Ty::F16 => f64::from(half::f16::from_bits(v as u16).to_f32()),
        Ty::BF16 => f64::from(half::bf16::from_bits(v as u16).to_f32()),
        Ty::F32 => f64::from(f32_of(v)),
        _ => f64_of(v),
    }
}

fn round_f64(x: f64, r: Round) -> f64 {
    match r {
        Round::Zero => x.trunc(),
        Round::Down => x.floor(),
        Round::Up => x.ceil(),
        Round::Nearest | Round::Default => x.round_ties_even(),
    }
}

/// f64 to f32 with a rounding mode.
fn f64_to_f32(x: f64, r: Round) -> f32 {
    let n = x as f32; // round to nearest even
    if n.is_nan() || n.is_infinite() || f64::from(n) == x {
        return n;
    }
    let up = f64::from(n) < x;
    match r {
        Round::Zero => {
            if (x > 0.0) == up {
                n
            } else {
                next_toward_zero(n)
            }
        }
        Round::Down => {
            if up {
                n
            } else {
                next_down(n)
            }
        }
        Round::Up => {
            if up {
                next_up(n)
            } else {
                n
            }
        }
        _ => n,
    }
}

/// The next f32 above `f` (the standard library's `next_up`, newer than this crate's MSRV).
fn next_up(f: f32) -> f32 {
    if f.is_nan() || f == f32::INFINITY {
        return f;
    }
    if f == 0.0 {
        return f32::from_bits(1);
    }
    let b = f.to_bits();
    f32::from_bits(if f > 0.0 { b + 1 } else { b - 1 })
}

/// The next f32 below `f`.
fn next_down(f: f32) -> f32 {
    -next_up(-f)
}

fn next_toward_zero(f: f32) -> f32 {
    if f > 0.0 {
        next_down(f)
    } else {
        next_up(f)
    }
}

/// `cvt`.
pub fn cvt(dty: Ty, sty: Ty, round: Round, sat: bool, ftz: bool, a: u64) -> u64 {
    let dfloat = dty.float();
    let sfloat = sty.float();
    match (dfloat, sfloat) {
        (false, false) => {
            // Integer to integer: extend from the source, then truncate or saturate.
            let v: i128 = if sty.signed() {
                i128::from(signed(sty, a))
            } else {
                i128::from(unsigned(sty, a))
            };
            let w = bits(dty);
            if sat {
                let (lo, hi) = if dty.signed() {
                    (-(1i128 << (w - 1)), (1i128 << (w - 1)) - 1)
                } else {
                    (0, (1i128 << w) - 1)
                };
                return (v.clamp(lo, hi) as u64) & mask(w);
            }
            if dty.signed() {
                // Sign-extended in the register, as a signed load would be.
                signed(dty, v as u64) as u64
            } else {
                (v as u64) & mask(w)
            }
        }
        (false, true) => {
            // Float to integer: round, then saturate (NaN gives 0).
            let mut x = to_f64(sty, a);
            if ftz && sty == Ty::F32 && f32_of(a).is_subnormal() {
                x = 0.0;
            }
            if x.is_nan() {
                return 0;
            }
            let x = round_f64(x, round);
            let w = bits(dty);
            if dty.signed() {
                let lo = -(2f64.powi(w as i32 - 1));
                let hi = 2f64.powi(w as i32 - 1) - 1.0;
                (x.clamp(lo, hi) as i64 as u64) & mask(w)
            } else {
                let hi = 2f64.powi(w as i32) - 1.0;
                (x.clamp(0.0, hi) as u64) & mask(w)
            }
        }
        (true, false) => {
            let v = if sty.signed() {
                signed(sty, a) as f64
            } else {
                unsigned(sty, a) as f64
            };
            // 64-bit integers are not exact in f64: convert them directly to f32.
            let r = match dty {
                Ty::F32 if sty.size() == 8 => {
                    let f = if sty.signed() {
                        a as i64 as f32
                    } else {
                        a as f32
                    };
                    return bits32(f);
                }
                _ => v,
            };
            from_f64(dty, r, round, sat, ftz)
        }
        (true, true) => {
            let mut x = to_f64(sty, a);
            if ftz && sty == Ty::F32 && f32_of(a).is_subnormal() {
                x = 0.0f64.copysign(x);
            }
            if dty == sty && round != Round::Default {
                // cvt.rni.f32.f32 and the like: round to an integer.
                return from_f64(dty, round_f64(x, round), Round::Default, sat, ftz);
            }
            from_f64(dty, x, round, sat, ftz)
        }
    }
}

fn from_f64(dty: Ty, x: f64, round: Round, sat: bool, ftz: bool) -> u64 {
    let x = if sat {
        if x.is_nan() {
            0.0
        } else {
            x.clamp(0.0, 1.0)
        }
    } else {
        x
    };
    match dty {
        Ty::F64 => x.to_bits(),
        Ty::F32 => {
            let f = f64_to_f32(x, round);
            bits32(if ftz { flush(f) } else { f })
        }
        Ty::F16 => u64::from(half_directed(x, round, false)),
        Ty::BF16 => u64::from(half_directed(x, round, true)),
        _ => 0,
    }
}

/// `x` to f16 (or bf16) bits, rounded in direction `r`.
fn half_directed(x: f64, r: Round, bf: bool) -> u16 {
    let (bits, back): (u16, fn(u16) -> f64) = if bf {
        (half::bf16::from_f64(x).to_bits(), |b| {
            f64::from(half::bf16::from_bits(b).to_f32())
        })
    } else {
        (half::f16::from_f64(x).to_bits(), |b| {
            f64::from(half::f16::from_bits(b).to_f32())
        })
    };
    let n = back(bits);
    if x.is_nan() || n == x || matches!(r, Round::Default | Round::Nearest) {
        return bits;
    }
    // One step of the 16-bit encoding toward the wanted side (sign-magnitude).
    let step = |b: u16, up: bool| -> u16 {
        let neg = b & 0x8000 != 0;
        if b & 0x7FFF == 0 {
            return if up { 1 } else { 0x8001 };
        }
        if up != neg {
            b + 1
        } else {
            b - 1
        }
    };
    let above = x > n;
    let want_up = match r {
        Round::Up => true,
        Round::Down => false,
        _ => x < 0.0,
    };
    if above == want_up {
        step(bits, want_up)
    } else {
        bits
    }
}

/// An atomic operation's new value from the old one.
pub fn atom(op: AtomOp, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let w = bits(ty);
    let r = match op {
        AtomOp::Add => match ty {
            Ty::F32 => bits32(f32_of(old) + f32_of(b)),
            Ty::F64 => (f64_of(old) + f64_of(b)).to_bits(),
            _ => old.wrapping_add(b),
        },
        AtomOp::Min | AtomOp::Max => {
            let less = if ty.float() {
                to_f64(ty, b) < to_f64(ty, old)
            } else if ty.signed() {
                signed(ty, b) < signed(ty, old)
            } else {
                unsigned(ty, b) < unsigned(ty, old)
            };
            if (op == AtomOp::Min) == less {
                b
            } else {
                old
            }
        }
        AtomOp::And => old & b,
        AtomOp::Or => old | b,
        AtomOp::Xor => old ^ b,
        AtomOp::Exch => b,
        AtomOp::Cas => {
            if unsigned(ty, old) == unsigned(ty, b) {
                c
            } else {
                old
            }
        }
        AtomOp::Inc => {
            if unsigned(ty, old) >= unsigned(ty, b) {
                0
            } else {
                old + 1
            }
        }
        AtomOp::Dec => {
            let o = unsigned(ty, old);
            if o == 0 || o > unsigned(ty, b) {
                b
            } else {
                o - 1
            }
        }
    };
    r & mask(w)
}

/// `prmt.b32`: picks bytes of `b:a` by the selector `c` (and the mode).
pub fn prmt(a: u32, b: u32, c: u32, mode: u8) -> u32 {
    let bytes = (u64::from(b) << 32 | u64::from(a)).to_le_bytes();
    let sel: [u32; 4] = match mode {
        0 => [c & 0xF, (c >> 4) & 0xF, (c >> 8) & 0xF, (c >> 12) & 0xF],
        _ => {
            let n = c & 3;
            match mode {
                1 => [n, (n + 1) & 7, (n + 2) & 7, (n + 3) & 7],
                2 => [n, (n + 7) & 7, (n + 6) & 7, (n + 5) & 7],
                3 => [n; 4],
                4 => [[0, 1, 2, 3], [1, 1, 2, 3], [2, 2, 2, 3], [3, 3, 3, 3]][n as usize],
                5 => [[0, 1, 2, 3], [0, 0, 1, 2], [0, 0, 0, 1], [0, 0, 0, 0]][n as usize],
                _ => {
                    let h = (c & 1) * 2;
                    [h, h + 1, h, h + 1]
                }
            }
        }
    };
    let mut r = 0u32;
    for (k, s) in sel.iter().enumerate() {
        let byte = bytes[(s & 7) as usize];
        // In the default mode bit 3 of a selector replicates the byte's sign.
        let byte = if mode == 0 && s & 8 != 0 {
            if byte & 0x80 != 0 {
                0xFF
            } else {
                0
            }
        } else {
            byte
        };
        r |= u32::from(byte) << (8 * k);
    }
    r
}

/// `bfe`: `len` bits of `a` from `pos`, sign-extended for signed types.
pub fn bfe(ty: Ty, a: u64, pos: u32, len: u32) -> u64 {
    let w = bits(ty);
    let pos = pos & 0xFF;
    let len = len & 0xFF;
    let a = unsigned(ty, a);
    let sign = |p: u32| -> bool {
        let bit = p.min(w - 1);
        a >> bit & 1 != 0
    };
    let mut r = 0u64;
    for i in 0..w {
        let b = if i < len && pos + i < w {
            a >> (pos + i) & 1 != 0
        } else if ty.signed() && len != 0 {
            sign(pos + len - 1)
        } else {
            false
        };
        r |= u64::from(b) << i;
    }
    r & mask(w)
}

/// `bfi`: the low `len` bits of `a` inserted into `b` at `pos`.
pub fn bfi(ty: Ty, a: u64, b: u64, pos: u32, len: u32) -> u64 {
    let w = bits(ty);
    let (pos, len) = (pos & 0xFF, len & 0xFF);
    let mut r = unsigned(ty, b);
    for i in 0..len {
        if pos + i >= w {
            break;
        }
        let bit = a >> i & 1;
        r = (r & !(1 << (pos + i))) | bit << (pos + i);
    }
    r & mask(w)
}

/// `dp4a` and `dp2a`: dot products of packed bytes (and half-words) plus `c`.
pub fn dot(a: u32, b: u32, c: u32, a_signed: bool, b_signed: bool, two: bool, hi: bool) -> u32 {
    let byte = |v: u32, k: u32, s: bool| -> i64 {
        let x = (v >> (8 * k)) & 0xFF;
        if s {
            i64::from(x as u8 as i8)
        } else {
            i64::from(x)
        }
    };
    let mut acc = i64::from(c as i32);
    if two {
        for k in 0..2 {
            let x = (a >> (16 * k)) & 0xFFFF;
            let x = if a_signed {
                i64::from(x as u16 as i16)
            } else {
                i64::from(x)
            };
            acc += x * byte(b, k + if hi { 2 } else { 0 }, b_signed);
        }
    } else {
        for k in 0..4 {
            acc += byte(a, k, a_signed) * byte(b, k, b_signed);
        }
    }
    acc as u32
}

/// `lop3.b32`: any three-input logic function, given by its truth table.
pub fn lop3(a: u32, b: u32, c: u32, lut: u8) -> u32 {
    let mut r = 0u32;
    for k in 0..8u32 {
        if lut >> k & 1 != 0 {
            let ma = if k & 4 != 0 { a } else { !a };
            let mb = if k & 2 != 0 { b } else { !b };
            let mc = if k & 1 != 0 { c } else { !c };
            r |= ma & mb & mc;
        }
    }
    r
}

/// `shf`: the funnel shift of `b:a` by `c`.
pub fn shf(a: u32, b: u32, c: u32, left: bool, clamp: bool) -> u32 {
    let n = if clamp { c.min(32) } else { c & 31 };
    let v = u64::from(b) << 32 | u64::from(a);
    if left {
        ((v << n) >> 32) as u32
    } else {
        (v >> n) as u32
    }
}

/// `cvt.rn.{f16x2,bf16x2}.f32 d, a, b`: `a` into the upper half, `b` into the lower.
pub fn cvt_pack(dty: Ty, a: u64, b: u64, relu: bool) -> u64 {
    let one = |v: u64| -> u16 {
        let mut f = f32_of(v);
        if relu && !f.is_nan() && f < 0.0 {
            f = 0.0;
        }
        match dty {
            Ty::BF16x2 => half::bf16::from_f32(f).to_bits(),
            _ => half::f16::from_f32(f).to_bits(),
        }
    };
    u64::from(one(a)) << 16 | u64::from(one(b))
}

/// Half-precision arithmetic on one value (`.f16`, `.bf16`) or two (`.f16x2`, `.bf16x2`).
pub fn half(op: crate::ir::HalfOp, ty: Ty, a: u64, b: u64, c: u64, ftz: bool, sat: bool) -> u64 {
    use crate::ir::HalfOp;
    let bf = matches!(ty, Ty::BF16 | Ty::BF16x2);
    let lanes = if matches!(ty, Ty::F16x2 | Ty::BF16x2) {
        2
    } else {
        1
    };
    let get = |v: u64, k: u32| -> f32 {
        let h = (v >> (16 * k)) as u16;
        let f = if bf {
            half::bf16::from_bits(h).to_f32()
        } else {
            half::f16::from_bits(h).to_f32()
        };
        // .ftz flushes f16 subnormals (bf16 has f32's range: its subnormals are f32's).
        if ftz && !bf && f != 0.0 && f.abs() < 6.103_515_6e-5 {
            0.0f32.copysign(f)
        } else {
            f
        }
    };
    let put = |f: f64| -> u16 {
        let f = if sat {
            if f.is_nan() {
                0.0
            } else {
                f.clamp(0.0, 1.0)
            }
        } else {
            f
        };
        if bf {
            half::bf16::from_f64(f).to_bits()
        } else {
            half::f16::from_f64(f).to_bits()
        }
    };
    let mut r = 0u64;
    for k in 0..lanes {
        let (x, y, z) = (
            f64::from(get(a, k)),
            f64::from(get(b, k)),
            f64::from(get(c, k)),
        );
        let v = match op {
            HalfOp::Add => f64::from((x + y) as f32),
            HalfOp::Sub => f64::from((x - y) as f32),
            HalfOp::Mul => f64::from((x * y) as f32),
            HalfOp::Fma => x.mul_add(y, z),
            HalfOp::Min => min_num(x, y),
            HalfOp::Max => max_num(x, y),
            HalfOp::Neg => -x,
            HalfOp::Abs => x.abs(),
            HalfOp::Ex2 => x.exp2(),
            HalfOp::Tanh => x.tanh(),
        };
        let h = match op {
            // neg and abs only flip bits; they are exact even for NaN payloads.
            HalfOp::Neg => ((a >> (16 * k)) as u16) ^ 0x8000,
            HalfOp::Abs => ((a >> (16 * k)) as u16) & 0x7FFF,
            _ => put(v),
        };
        r |= u64::from(h) << (16 * k);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f32) -> u64 {
        bits32(x)
    }

    /// `min`/`max` do not depend on the host: +0 is above -0 either way round, a NaN gives
    /// the other operand, two NaNs the canonical NaN; f32 arithmetic that makes a NaN
    /// gives the canonical NaN whatever NaNs went in.
    #[test]
    fn min_max_and_nans_are_defined() {
        let bin32 = |op, a: u64, b: u64| bin(op, Ty::F32, a, b, false, false);
        let (pz, nz) = (f(0.0), f(-0.0));
        for (a, b) in [(pz, nz), (nz, pz)] {
            assert_eq!(bin32(BinOp::Max, a, b), pz);
            assert_eq!(bin32(BinOp::Min, a, b), nz);
        }
        let qnan = 0x7FC0_1234u64;
        let neg_nan = 0xFFFF_FFFFu64;
        assert_eq!(bin32(BinOp::Max, qnan, f(2.0)), f(2.0));
        assert_eq!(bin32(BinOp::Min, f(2.0), qnan), f(2.0));
        assert_eq!(
            bin32(BinOp::Max, qnan, neg_nan),
            u64::from(CANONICAL_NAN_F32)
        );
        for op in [BinOp::Add, BinOp::MulLo, BinOp::Sub] {
            assert_eq!(bin32(op, qnan, neg_nan), u64::from(CANONICAL_NAN_F32));
            assert_eq!(bin32(op, neg_nan, qnan), u64::from(CANONICAL_NAN_F32));
            let fast = bin_fn(op, Ty::F32, false, false, Round::Default, false).unwrap();
            assert_eq!(fast(qnan, neg_nan), u64::from(CANONICAL_NAN_F32));
        }
        // copysign is a bit operation: the payload stays.
        assert_eq!(bin32(BinOp::CopySign, f(-1.0), qnan), qnan | 0x8000_0000);
        let f64max =
            |a: f64, b: f64| bin(BinOp::Max, Ty::F64, a.to_bits(), b.to_bits(), false, false);
        assert_eq!(f64max(-0.0, 0.0), 0.0f64.to_bits());
        assert_eq!(f64max(0.0, -0.0), 0.0f64.to_bits());
    }

    /// `fma_f32` rounds as libm's `fmaf` (one rounding) on random operands of every
    /// magnitude and on sums built to fall exactly halfway between two f32 values.
    #[test]
    fn fma_f32_rounds_once() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let same = |x: f32, y: f32, z: f32| {
            let (got, want) = (fma_f32(x, y, z), x.mul_add(y, z));
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "fma({x:e}, {y:e}, {z:e}) = {got:e}, libm says {want:e}"
            );
        };
        for _ in 0..200_000 {
            let r = next();
            let (x, y, z) = (
                f32::from_bits(r as u32),
                f32::from_bits((r >> 32) as u32),
                f32::from_bits(next() as u32),
            );
            same(x, y, z);
            // Near cancellation and nearby magnitudes, where ties and tiny errors live.
            same(x, y, -(x * y));
            same(
                1.0 + (r as u32 >> 9) as f32 * f32::EPSILON,
                1.0 + 2f32.powi(-23),
                z,
            );
        }
        // Exact ties of the f64 sum: 1 + 2^-24 (halfway between 1 and its successor) plus a
        // tiny product that decides the direction.
        for (x, y, z) in [
            (2f32.powi(-24), 1.0, 1.0),
            (2f32.powi(-24) + 2f32.powi(-60), 1.0, 1.0),
            (1.0 + 2f32.powi(-23), 2f32.powi(-24), 1.0),
            (-(1.0 + 2f32.powi(-23)), 2f32.powi(-24), 1.0),
            (3.0, 2f32.powi(-25), 1.0 + 2f32.powi(-22)),
            (f32::MAX, 2.0, -f32::MAX),
            (f32::MIN_POSITIVE, 0.5, 2f32.powi(-149)),
            (f32::INFINITY, 0.0, 1.0),
            (f32::INFINITY, 1.0, f32::NEG_INFINITY),
        ] {
            same(x, y, z);
        }
    }

    /// Every fast form of [`bin_fn`] computes what [`bin_rounded`] computes, on edge and
    /// random operands (shift counts past the width, signs, NaNs, high garbage bits).
    #[test]
    fn bin_fn_agrees_with_bin_rounded() {
        use BinOp::*;
        let ops = [
            Add, Sub, MulLo, MulHi, MulWide, And, Or, Xor, Shl, Shr, Div, Min,
        ];
        let tys = [
            Ty::U32,
            Ty::S32,
            Ty::U64,
            Ty::S64,
            Ty::F32,
            Ty::F64,
            Ty::F16,
            Ty::U16,
            Ty::S16,
            Ty::Pred,
        ];
        let mut vals = vec![
            0u64,
            1,
            31,
            32,
            33,
            63,
            64,
            65,
            u64::MAX,
            0x8000_0000,
            0x7FFF_FFFF,
        ];
        vals.extend([
            0xFFFF_FFFF,
            0x1_0000_0001,
            bits32(1.5),
            bits32(-2.25),
            bits32(f32::NAN),
        ]);
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            vals.push(seed);
        }
        let mut fast = 0;
        for op in ops {
            for ty in tys {
                for (ftz, sat, nan) in [
                    (false, false, false),
                    (true, false, false),
                    (false, true, false),
                    (false, false, true),
                ] {
                    let Some(f) = bin_fn(op, ty, ftz, sat, Round::Default, nan) else {
                        continue;
                    };
                    fast += 1;
                    for &a in &vals {
                        for &b in &vals {
                            let want = bin_rounded(op, ty, a, b, ftz, sat, Round::Default, nan);
                            let got = f(a, b);
                            let nan_both =
                                ty == Ty::F32 && f32_of(got).is_nan() && f32_of(want).is_nan();
                            assert!(
                                got == want || nan_both,
                                "{op:?}.{ty:?} {a:#x} {b:#x}: {got:#x}, not {want:#x}"
                            );
                        }
                    }
                }
            }
        }
        // 8 integer operations of 4 types (with and without .ftz, which they ignore), and
        // f32 add, sub and the three mul forms.
        assert_eq!(fast, 8 * 4 * 2 + 5, "the fast forms");
    }

    #[test]
    fn integer_arithmetic_wraps_and_extends_by_type() {
        assert_eq!(bin(BinOp::Add, Ty::U32, 0xFFFF_FFFF, 1, false, false), 0);
        assert_eq!(
            bin(BinOp::Add, Ty::S32, i32::MAX as u64, 1, false, true),
            i32::MAX as u64
        );
        assert_eq!(
            bin(BinOp::Sub, Ty::S32, i32::MIN as u32 as u64, 1, false, true),
            i32::MIN as u32 as u64
        );
        assert_eq!(
            bin(
                BinOp::MulHi,
                Ty::S32,
                (-2i32) as u32 as u64,
                3,
                false,
                false
            ),
            0xFFFF_FFFF
        );
        assert_eq!(bin(BinOp::MulHi, Ty::U32, 0x8000_0000, 4, false, false), 2);
        assert_eq!(
            bin(
                BinOp::MulWide,
                Ty::S32,
                (-3i32) as u32 as u64,
                5,
                false,
                false
            ),
            (-15i64) as u64
        );
        assert_eq!(
            bin(BinOp::MulWide, Ty::U32, 0xFFFF_FFFF, 2, false, false),
            0x1_FFFF_FFFE
        );
        assert_eq!(
            bin(BinOp::Div, Ty::S32, (-7i32) as u32 as u64, 2, false, false),
            (-3i32) as u32 as u64
        );
        assert_eq!(bin(BinOp::Div, Ty::U32, 7, 0, false, false), 0xFFFF_FFFF);
        assert_eq!(
            bin(BinOp::Rem, Ty::S32, (-7i32) as u32 as u64, 2, false, false),
            (-1i32) as u32 as u64
        );
        assert_eq!(
            bin(BinOp::Shr, Ty::S32, (-8i32) as u32 as u64, 1, false, false),
            (-4i32) as u32 as u64
        );
        assert_eq!(
            bin(BinOp::Shr, Ty::S32, (-8i32) as u32 as u64, 40, false, false),
            0xFFFF_FFFF
        );
        assert_eq!(bin(BinOp::Shr, Ty::U32, 0x8000_0000, 31, false, false), 1);
        assert_eq!(bin(BinOp::Shl, Ty::U32, 1, 32, false, false), 0);
        assert_eq!(
            bin(BinOp::Min, Ty::S32, (-1i32) as u32 as u64, 1, false, false),
            0xFFFF_FFFF
        );
        assert_eq!(
            bin(BinOp::Min, Ty::U32, (-1i32) as u32 as u64, 1, false, false),
            1
        );
        assert_eq!(mad(Ty::S32, 0, 3, 4, 5, false, false), 17);
        assert_eq!(
            mad(Ty::S32, 2, (-3i32) as u32 as u64, 4, 100, false, false),
            88
        );
        assert_eq!(un(UnOp::Clz, Ty::U32, 1, false), 31);
        assert_eq!(un(UnOp::Popc, Ty::U64, u64::MAX, false), 64);
        assert_eq!(un(UnOp::Brev, Ty::U32, 1, false), 0x8000_0000);
        assert_eq!(un(UnOp::Neg, Ty::S32, 5, false), (-5i32) as u32 as u64);
        assert_eq!(extend(Ty::S8, 0x80), (-128i64) as u64);
        assert_eq!(extend(Ty::U8, 0x1_80), 0x80);
    }

    #[test]
    fn float_arithmetic_and_flush_to_zero() {
        assert_eq!(
            bin(BinOp::Add, Ty::F32, f(1.5), f(2.25), false, false),
            f(3.75)
        );
        let tiny = f(f32::MIN_POSITIVE / 4.0);
        assert_eq!(bin(BinOp::Add, Ty::F32, tiny, f(0.0), false, false), tiny);
        assert_eq!(bin(BinOp::Add, Ty::F32, tiny, f(0.0), true, false), f(0.0));
        assert_eq!(
            bin(BinOp::Max, Ty::F32, f(f32::NAN), f(2.0), false, false),
            f(2.0)
        );
        assert_eq!(
            bin(BinOp::Add, Ty::F32, f(0.75), f(0.5), false, true),
            f(1.0)
        );
        assert_eq!(
            mad(Ty::F32, 0, f(2.0), f(3.0), f(1.0), false, false),
            f(7.0)
        );
        assert_eq!(un(UnOp::Rcp, Ty::F32, f(4.0), false), f(0.25));
        assert_eq!(un(UnOp::Ex2, Ty::F32, f(3.0), false), f(8.0));
        assert!(compare(Cmp::Unordered(0), Ty::F32, f(f32::NAN), f(1.0),));
        assert!(!compare(Cmp::Eq, Ty::F32, f(f32::NAN), f(f32::NAN)));
        assert!(!compare(Cmp::Ne, Ty::F32, f(f32::NAN), f(1.0)));
        assert!(compare(Cmp::Lt, Ty::S32, (-1i32) as u32 as u64, 0));
        assert!(!compare(Cmp::Lt, Ty::U32, (-1i32) as u32 as u64, 0));
    }

    /// `ex2_f32` against the host's `exp2` rounded to f32, over every 4093rd f32 and the
    /// edges: never more than an ulp apart, and the same but for under one in a hundred
    /// (over every f32 from -160 to 140: 0.62%).
    #[test]
    fn ex2_is_within_an_ulp_of_the_correctly_rounded_result() {
        let host = |x: f32| f64::from(x).exp2() as f32;
        let mut differ = 0;
        let mut n = 0;
        let edges = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            0.5,
            -0.5,
            127.0,
            127.999_99,
            128.0,
            200.0,
            -126.0,
            -149.0,
            -149.5,
            -150.0,
            -150.000_02,
            -151.0,
            -1000.0,
            1e-30,
            -1e-30,
        ];
        let sweep = (0..u32::MAX / 4093).map(|i| f32::from_bits(i * 4093));
        for x in edges.into_iter().chain(sweep) {
            if x.is_nan() {
                continue;
            }
            let (got, want) = (ex2_f32(x), host(x));
            n += 1;
            if got.to_bits() != want.to_bits() {
                differ += 1;
                let ulps = (i64::from(got.to_bits()) - i64::from(want.to_bits())).abs();
                assert!(ulps <= 1, "ex2({x:e}) = {got:e}, the host's {want:e}");
            }
        }
        assert!(differ * 100 <= n, "{differ} of {n} differ");
        assert_eq!(ex2_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(ex2_f32(f32::NEG_INFINITY).to_bits(), 0);
        assert_eq!(ex2_f32(10.0), 1024.0);
        assert_eq!(ex2_f32(-149.0).to_bits(), 1);
        let nan = f32::from_bits(0x7F80_0001);
        assert_eq!(ex2_f32(nan).to_bits(), 0x7FC0_0001);
    }

    #[test]
    fn conversions_round_and_saturate() {
        let c = |d, s, r, sat, v| cvt(d, s, r, sat, false, v);
        assert_eq!(
            c(Ty::S32, Ty::F32, Round::Zero, false, f(-2.7)),
            (-2i32) as u32 as u64
        );
        assert_eq!(c(Ty::S32, Ty::F32, Round::Nearest, false, f(2.5)), 2);
        assert_eq!(c(Ty::S32, Ty::F32, Round::Nearest, false, f(3.5)), 4);
        assert_eq!(
            c(Ty::S32, Ty::F32, Round::Down, false, f(-2.5)),
            (-3i32) as u32 as u64
        );
        assert_eq!(c(Ty::S32, Ty::F32, Round::Up, false, f(2.1)), 3);
        assert_eq!(
            c(Ty::S32, Ty::F32, Round::Zero, false, f(1e20)),
            i32::MAX as u64
        );
        assert_eq!(c(Ty::U8, Ty::F32, Round::Zero, false, f(-5.0)), 0);
        assert_eq!(c(Ty::S32, Ty::F32, Round::Zero, false, f(f32::NAN)), 0);
        assert_eq!(c(Ty::S8, Ty::S32, Round::Default, true, 300), 127);
        assert_eq!(
            c(Ty::U8, Ty::S32, Round::Default, true, (-3i32) as u32 as u64),
            0
        );
        assert_eq!(c(Ty::U8, Ty::U32, Round::Default, false, 0x1FF), 0xFF);
        assert_eq!(
            c(Ty::S32, Ty::S8, Round::Default, false, 0x80),
            (-128i64) as u64
        );
        assert_eq!(
            c(
                Ty::F32,
                Ty::S32,
                Round::Nearest,
                false,
                (-3i32) as u32 as u64
            ),
            f(-3.0)
        );
        assert_eq!(
            c(Ty::F32, Ty::U64, Round::Nearest, false, u64::MAX),
            f(u64::MAX as f32)
        );
        // f64 → f32 in each direction.
        let third = (1.0f64 / 3.0).to_bits();
        let n = c(Ty::F32, Ty::F64, Round::Nearest, false, third);
        let down = c(Ty::F32, Ty::F64, Round::Down, false, third);
        let up = c(Ty::F32, Ty::F64, Round::Up, false, third);
        assert!(f32_of(down) <= (1.0 / 3.0) as f32 && f64::from(f32_of(down)) < 1.0 / 3.0);
        assert!(f64::from(f32_of(up)) > 1.0 / 3.0);
        assert_eq!(f32_of(up).to_bits() - f32_of(down).to_bits(), 1);
        assert!(n == down || n == up);
        // f16 both ways, with round-to-nearest-even.
        let h = c(
            Ty::F16,
            Ty::F32,
            Round::Nearest,
            false,
            f(1.0 + 1.0 / 4096.0),
        );
        assert_eq!(h, u64::from(half::f16::from_f32(1.0).to_bits()));
        assert_eq!(c(Ty::F32, Ty::F16, Round::Default, false, 0x3C00), f(1.0));
        assert_eq!(c(Ty::F32, Ty::BF16, Round::Default, false, 0x3F80), f(1.0));
        // Round to an integer in the same type.
        assert_eq!(c(Ty::F32, Ty::F32, Round::Down, false, f(-1.5)), f(-2.0));
        assert_eq!(c(Ty::F32, Ty::F32, Round::Nearest, false, f(2.5)), f(2.0));
        assert_eq!(
            cvt(Ty::F32, Ty::F32, Round::Default, true, false, f(1.5)),
            f(1.0)
        );
    }

    #[test]
    fn directed_rounding_and_nan_propagation() {
        let tiny = f(2f32.powi(-30));
        let one = f(1.0);
        let up = |x: f32| f32::from_bits(x.to_bits() + 1);
        let down = |x: f32| f32::from_bits(x.to_bits() - 1);
        let add = |r, a, b| {
            f32_of(bin_rounded(
                BinOp::Add,
                Ty::F32,
                a,
                b,
                false,
                false,
                r,
                false,
            ))
        };
        assert_eq!(add(Round::Nearest, one, tiny), 1.0);
        assert_eq!(add(Round::Zero, one, tiny), 1.0);
        assert_eq!(add(Round::Up, one, tiny), up(1.0));
        assert_eq!(add(Round::Down, one, f(-2f32.powi(-30))), down(1.0));
        assert_eq!(add(Round::Zero, f(-1.0), f(-2f32.powi(-30))), -1.0);
        assert_eq!(add(Round::Down, f(-1.0), f(-2f32.powi(-30))), -up(1.0));
        // An exact result is never moved.
        assert_eq!(add(Round::Up, one, one), 2.0);
        let third = f(1.0 / 3.0);
        let mul = |r| {
            f32_of(bin_rounded(
                BinOp::MulLo,
                Ty::F32,
                third,
                f(3.0),
                false,
                false,
                r,
                false,
            ))
        };
        assert!(mul(Round::Down) < mul(Round::Up));
        let fma = |r| f32_of(mad_rounded(Ty::F32, 0, one, one, tiny, false, false, r));
        assert_eq!((fma(Round::Zero), fma(Round::Up)), (1.0, up(1.0)));
        let nan = bin_rounded(
            BinOp::Min,
            Ty::F32,
            f(f32::NAN),
            one,
            false,
            false,
            Round::Default,
            true,
        );
        assert!(f32_of(nan).is_nan());
        assert_eq!(
            bin_rounded(
                BinOp::Min,
                Ty::F32,
                f(f32::NAN),
                one,
                false,
                false,
                Round::Default,
                false
            ),
            one
        );
        // To f16 in each direction: 1 + 2^-12 lies between 1 and 1 + 2^-10.
        let x = f(1.0 + 2f32.powi(-12));
        let h = |r| cvt(Ty::F16, Ty::F32, r, false, false, x);
        assert_eq!(h(Round::Nearest), 0x3C00);
        assert_eq!(h(Round::Up), 0x3C01);
        assert_eq!(h(Round::Zero), 0x3C00);
        let nx = f(-1.0 - 2f32.powi(-12));
        assert_eq!(cvt(Ty::F16, Ty::F32, Round::Down, false, false, nx), 0xBC01);
        assert_eq!(
            cvt(Ty::F16, Ty::F32, Round::Zero, false, false, f(1e6)),
            0x7BFF
        );
    }

    #[test]
    fn atomics_compute_the_new_value() {
        assert_eq!(atom(AtomOp::Add, Ty::U32, 0xFFFF_FFFF, 2, 0), 1);
        assert_eq!(atom(AtomOp::Add, Ty::F32, f(1.5), f(2.0), 0), f(3.5));
        assert_eq!(
            atom(AtomOp::Min, Ty::S32, 5, (-1i32) as u32 as u64, 0),
            0xFFFF_FFFF
        );
        assert_eq!(atom(AtomOp::Max, Ty::U32, 5, 0xFFFF_FFFF, 0), 0xFFFF_FFFF);
        assert_eq!(atom(AtomOp::Cas, Ty::U32, 7, 7, 9), 9);
        assert_eq!(atom(AtomOp::Cas, Ty::U32, 7, 8, 9), 7);
        assert_eq!(atom(AtomOp::Inc, Ty::U32, 3, 3, 0), 0);
        assert_eq!(atom(AtomOp::Inc, Ty::U32, 2, 3, 0), 3);
        assert_eq!(atom(AtomOp::Dec, Ty::U32, 0, 3, 0), 3);
        assert_eq!(atom(AtomOp::Exch, Ty::U64, 1, 2, 0), 2);
    }

    #[test]
    fn bit_and_byte_operations() {
        // prmt: the default selector, sign replication, and the modes.
        assert_eq!(prmt(0x4433_2211, 0x8877_6655, 0x3210, 0), 0x4433_2211);
        assert_eq!(prmt(0x4433_2211, 0x8877_6655, 0x7654, 0), 0x8877_6655);
        assert_eq!(prmt(0x4433_2211, 0x8877_6655, 0x0004, 0), 0x1111_1155);
        assert_eq!(prmt(0x0000_0080, 0, 0x0008, 0), 0x8080_80FF);
        assert_eq!(prmt(0x4433_2211, 0x8877_6655, 1, 1), 0x5544_3322);
        assert_eq!(prmt(0x4433_2211, 0, 2, 3), 0x3333_3333);
        // bfe: unsigned and sign-extending, positions past the end.
        assert_eq!(bfe(Ty::U32, 0xF0F0_0000, 20, 8), 0x0F);
        assert_eq!(bfe(Ty::S32, 0x0000_0F00, 8, 4), 0xFFFF_FFFF);
        assert_eq!(bfe(Ty::S32, 0x0000_0700, 8, 4), 7);
        assert_eq!(bfe(Ty::U32, 0xFFFF_FFFF, 28, 8), 0xF);
        assert_eq!(bfe(Ty::U32, 0xFFFF_FFFF, 4, 0), 0);
        assert_eq!(bfi(Ty::U32, 0xAB, 0xFFFF_FFFF, 8, 8), 0xFFFF_ABFF);
        assert_eq!(bfi(Ty::U32, 0xFF, 0, 28, 8), 0xF000_0000);
        // dp4a: signed and unsigned bytes.
        assert_eq!(
            dot(0x0102_0304, 0x0101_0101, 10, false, false, false, false),
            20
        );
        assert_eq!(
            dot(0xFF00_0000, 0x0200_0000, 0, true, false, false, false),
            (-2i32) as u32
        );
        assert_eq!(
            dot(0x0002_0003, 0x0000_0504, 1, false, false, true, false),
            1 + 3 * 4 + 2 * 5
        );
        // lop3 of the common tables: a & b & c, a | b | c, a ^ b ^ c, (a & b) | c.
        let (a, b, c) = (0b1100_1010, 0b1010_0110, 0b1111_0000);
        assert_eq!(lop3(a, b, c, 0x80), a & b & c);
        assert_eq!(lop3(a, b, c, 0xFE), a | b | c);
        assert_eq!(lop3(a, b, c, 0x96), a ^ b ^ c);
        assert_eq!(lop3(a, b, c, 0xEA), (a & b) | c);
        assert_eq!(lop3(a, b, c, 0xF8), a | (b & c));
        // shf: funnel shifts, wrapping and clamping.
        assert_eq!(shf(0x8000_0000, 0x0000_0001, 1, true, false), 0x0000_0003);
        assert_eq!(shf(0x0000_0002, 0x0000_0001, 1, false, false), 0x8000_0001);
        assert_eq!(shf(1, 2, 33, true, false), 4);
        assert_eq!(shf(1, 2, 40, true, true), 1);
    }

    #[test]
    fn half_precision_rounds_once() {
        use crate::ir::HalfOp;
        let h = |f: f32| u64::from(half::f16::from_f32(f).to_bits());
        assert_eq!(
            half(HalfOp::Add, Ty::F16, h(1.0), h(2.5), 0, false, false),
            h(3.5)
        );
        assert_eq!(
            half(HalfOp::Mul, Ty::F16, h(3.0), h(-0.5), 0, false, false),
            h(-1.5)
        );
        assert_eq!(
            half(HalfOp::Fma, Ty::F16, h(2.0), h(3.0), h(1.0), false, false),
            h(7.0)
        );
        let two = h(1.0) << 16 | h(2.0);
        let three = h(10.0) << 16 | h(20.0);
        assert_eq!(
            half(HalfOp::Add, Ty::F16x2, two, three, 0, false, false),
            h(11.0) << 16 | h(22.0)
        );
        assert_eq!(
            half(HalfOp::Neg, Ty::F16, h(1.0), 0, 0, false, false),
            h(-1.0)
        );
        assert_eq!(
            half(HalfOp::Add, Ty::F16, h(0.75), h(0.75), 0, false, true),
            h(1.0)
        );
        let b = |f: f32| u64::from(half::bf16::from_f32(f).to_bits());
        assert_eq!(
            half(HalfOp::Mul, Ty::BF16, b(1.5), b(2.0), 0, false, false),
            b(3.0)
        );
        assert_eq!(
            cvt_pack(Ty::F16x2, bits32(1.0), bits32(-2.0), false),
            h(1.0) << 16 | h(-2.0)
        );
        assert_eq!(
            cvt_pack(Ty::F16x2, bits32(1.0), bits32(-2.0), true),
            h(1.0) << 16
        );
    }
}
