//! Warp-level matrix instructions: `mma.sync`, `ldmatrix` and `movmatrix`, with the
//! fragment layouts of the PTX ISA ("Matrix fragments for mma.m16n8k8" and the sections
//! after it). With `g` = lane / 4 and `t` = lane % 4, element `i` of a thread's fragment
//! (counting the elements packed in its registers from the low bits up) sits at a (row,
//! column) of the matrix that the functions below give.
//!
//! Products are summed exactly (f64 for floating point, i64 for integers) and rounded once
//! to the accumulator type: at least as accurate as the tensor cores, whose summation
//! order and intermediate precision the ISA leaves open.

use crate::ir::Ty;

/// The shapes and types `mma.sync` supports here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmaShape {
    /// Rows of A and D.
    pub m: usize,
    /// Columns of B and D.
    pub n: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Type of the A and B elements (`F16`, `BF16`, `S8`, `U8`).
    pub ab: Ty,
    /// Signedness of B when it differs from A (`.s8.u8` forms).
    pub b: Ty,
    /// Type of C and D (`F32`, `F16`, `S32`).
    pub cd: Ty,
}

impl MmaShape {
    /// The shape for `mXnYkZ` with these types, if supported.
    pub fn new(shape: &str, d: Ty, a: Ty, b: Ty, c: Ty) -> Result<MmaShape, String> {
        let (m, n, k) = match shape {
            "m16n8k8" => (16, 8, 8),
            "m16n8k16" => (16, 8, 16),
            "m8n8k16" => (8, 8, 16),
            "m16n8k32" => (16, 8, 32),
            other => return Err(format!("mma shape {other} is not supported")),
        };
        let float_ab = matches!(a, Ty::F16 | Ty::BF16);
        let int_ab = matches!(a, Ty::S8 | Ty::U8) && matches!(b, Ty::S8 | Ty::U8);
        let ok = match (m, n, k) {
            (16, 8, 8) | (16, 8, 16) if float_ab => {
                a == b && matches!(d, Ty::F32 | Ty::F16) && c == d
            }
            (8, 8, 16) | (16, 8, 16) | (16, 8, 32) if int_ab => d == Ty::S32 && c == Ty::S32,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "mma.{shape} with .{d:?}.{a:?}.{b:?}.{c:?} is not supported"
            ));
        }
        Ok(MmaShape {
            m,
            n,
            k,
            ab: a,
            b,
            cd: d,
        })
    }

    /// Elements of one operand packed in a 32-bit register.
    pub fn per_reg(ty: Ty) -> usize {
        match ty {
            Ty::F16 | Ty::BF16 => 2,
            Ty::S8 | Ty::U8 => 4,
            _ => 1,
        }
    }

    /// Registers of A, B and C/D per thread.
    pub fn regs(&self) -> (usize, usize, usize) {
        let per = Self::per_reg(self.ab);
        let cd = Self::per_reg(self.cd);
        (
            self.m * self.k / 32 / per,
            self.k * self.n / 32 / per,
            self.m * self.n / 32 / cd,
        )
    }

    /// (row, column) of A's element `i` in `lane`'s fragment.
    pub fn a_at(&self, lane: usize, i: usize) -> (usize, usize) {
        let (g, t) = (lane >> 2, lane & 3);
        match (self.m, self.k, Self::per_reg(self.ab)) {
            (16, 8, _) => (g + 8 * (i >> 1), t * 2 + (i & 1)),
            (16, 16, 2) => (g + 8 * ((i >> 1) & 1), t * 2 + (i & 1) + 8 * (i >> 2)),
            (8, 16, _) => (g, t * 4 + i),
            (16, 16, _) => (g + 8 * (i >> 2), t * 4 + (i & 3)),
            _ => (g + 8 * ((i >> 2) & 1), t * 4 + (i & 3) + 16 * (i >> 3)),
        }
    }

    /// (row, column) of B's element `i` in `lane`'s fragment.
    pub fn b_at(&self, lane: usize, i: usize) -> (usize, usize) {
        let (g, t) = (lane >> 2, lane & 3);
        let row = match (self.k, Self::per_reg(self.ab)) {
            (8, _) => t * 2 + i,
            (16, 2) => t * 2 + (i & 1) + 8 * (i >> 1),
            (16, _) => t * 4 + i,
            _ => t * 4 + (i & 3) + 16 * (i >> 2),
        };
        (row, g)
    }

    /// (row, column) of C's and D's element `i` in `lane`'s fragment.
    pub fn cd_at(&self, lane: usize, i: usize) -> (usize, usize) {
        let (g, t) = (lane >> 2, lane & 3);
        if self.m == 8 {
            (g, t * 2 + i)
        } else {
            (g + 8 * (i >> 1), t * 2 + (i & 1))
        }
    }
}

/// The registers of one operand of `mma.sync` across the warp: `[lane][register]` (at most
/// four registers a lane for any supported shape; the unused ones are ignored).
pub type Fragments = [[u64; 4]; 32];

/// `mma.sync`: D = A·B + C over the warp. `a`, `b`, `c` hold each lane's registers (lanes
/// that do not take part hold zeros); the result is each lane's D registers. Allocates
/// nothing: every supported shape fits fixed arrays (`n` is 8 in all of them).
///
/// Each element of D is C's plus the products in order of `k`: in f64 for floating point
/// (then rounded once; a NaN canonical), in i32 with wrap-around for integers (the low 32
/// bits of the exact sum, which is what an `.s32` accumulator keeps). The loops run along
/// D's rows, eight columns at a time, which the compiler turns into vector instructions.
pub fn mma(s: &MmaShape, a: &Fragments, b: &Fragments, c: &Fragments) -> Fragments {
    let (ab, bt, cd) = (s.ab, s.b, s.cd);
    if cd == Ty::S32 {
        // As for floats: each operand's signedness chosen once.
        let s8 = |v: u64, e: usize| i32::from((v >> (8 * e)) as u8 as i8);
        let u8 = |v: u64, e: usize| i32::from((v >> (8 * e)) as u8);
        let s32 = |v: u64, _: usize| v as u32 as i32;
        let madd = |d: i32, a: i32, b: i32| d.wrapping_add(a.wrapping_mul(b));
        let d = match (ab, bt) {
            (Ty::S8, Ty::S8) => product::<i32, 32>(s, [a, b, c], s8, s8, s32, madd),
            (Ty::S8, _) => product::<i32, 32>(s, [a, b, c], s8, u8, s32, madd),
            (_, Ty::S8) => product::<i32, 32>(s, [a, b, c], u8, s8, s32, madd),
            _ => product::<i32, 32>(s, [a, b, c], u8, u8, s32, madd),
        };
        registers(s, |x, _| u64::from(d[x.0][x.1] as u32))
    } else {
        // Each operand type's conversion chosen once, outside the loops over the elements
        // (f16 by the table of every f16 `cvt.f32.f16` makes, `exec::f16_table`: `half`'s
        // own conversion asks for the host's f16 instructions at every call; a NaN's
        // payload is lost in the canonical NaN of the result either way).
        let table = crate::exec::f16_table();
        let f16 = move |v: u64, e: usize| {
            f64::from(f32::from_bits(table[usize::from((v >> (16 * e)) as u16)]))
        };
        let bf16 = |v: u64, e: usize| f64::from(f32::from_bits(((v >> (16 * e)) as u32) << 16));
        let f32 = |v: u64, _: usize| f64::from(f32::from_bits(v as u32));
        let madd = |d: f64, a: f64, b: f64| d + a * b;
        let d = match (ab, cd) {
            (Ty::BF16, Ty::F32) => product::<f64, 16>(s, [a, b, c], bf16, bf16, f32, madd),
            (Ty::BF16, _) => product::<f64, 16>(s, [a, b, c], bf16, bf16, f16, madd),
            (_, Ty::F32) => product::<f64, 16>(s, [a, b, c], f16, f16, f32, madd),
            _ => product::<f64, 16>(s, [a, b, c], f16, f16, f16, madd),
        };
        if cd == Ty::F32 {
            registers(s, |x, _| float_result(Ty::F32, d[x.0][x.1]))
        } else {
            registers(s, |x, e| float_result(Ty::F16, d[x.0][x.1]) << (16 * e))
        }
    }
}

/// D = A·B + C as matrices (rows of D, eight columns; A at most 16 by `K`): the elements of
/// `frags` (A, B, C) converted by `a`, `b` and `c` (from a register and the element's place
/// in it), each element of D summed as `madd(d, a, b)` in order of `k`.
fn product<T: Copy + Default, const K: usize>(
    s: &MmaShape,
    [fa, fb, fc]: [&Fragments; 3],
    a: impl Fn(u64, usize) -> T,
    b: impl Fn(u64, usize) -> T,
    c: impl Fn(u64, usize) -> T,
    madd: impl Fn(T, T, T) -> T,
) -> [[T; 8]; 16] {
    let (pa, pcd) = (MmaShape::per_reg(s.ab), MmaShape::per_reg(s.cd));
    let (na, nb, nc) = s.regs();
    let mut am = [[T::default(); K]; 16];
    let mut bm = [[T::default(); 8]; K];
    let mut dm = [[T::default(); 8]; 16];
    let (row, column) = ((0, 1), (1, 0));
    let layout = s.layout();
    each_element(fa, (na, pa), &layout.a, row, |r, x, v, e| {
        am[r & 15][x % K] = a(v, e)
    });
    each_element(fb, (nb, pa), &layout.b, column, |x, col, v, e| {
        bm[x % K][col & 7] = b(v, e)
    });
    each_element(fc, (nc, pcd), &layout.cd, row, |r, col, v, e| {
        dm[r & 15][col & 7] = c(v, e)
    });
    // The shape's bounds as constants, so that the loops unroll.
    match (s.m, s.k) {
        (16, 8) => products::<T, K, 16, 8>(&am, &bm, &mut dm, madd),
        (16, 16) => products::<T, K, 16, 16>(&am, &bm, &mut dm, madd),
        (8, 16) => products::<T, K, 8, 16>(&am, &bm, &mut dm, madd),
        _ => products::<T, K, 16, 32>(&am, &bm, &mut dm, madd),
    }
    dm
}

/// D += A·B for the first `M` rows of A and D and the first `KK` columns of A (rows of B),
/// in order of `k`.
fn products<T: Copy, const K: usize, const M: usize, const KK: usize>(
    am: &[[T; K]; 16],
    bm: &[[T; 8]; K],
    dm: &mut [[T; 8]; 16],
    madd: impl Fn(T, T, T) -> T,
) {
    for r in 0..M {
        // The row's eight sums kept in registers across `k`.
        let mut acc = dm[r];
        for k in 0..KK.min(K) {
            let av = am[r][k];
            for (d, &bv) in acc.iter_mut().zip(&bm[k]) {
                *d = madd(*d, av, bv);
            }
        }
        dm[r] = acc;
    }
}

/// Each lane's D registers: element `e` of a register (at (row, column) of D) is
/// `bits((row, column), e)`, already shifted to its place.
fn registers(s: &MmaShape, bits: impl Fn((usize, usize), usize) -> u64) -> Fragments {
    let pcd = MmaShape::per_reg(s.cd).min(4);
    let (_, _, nc) = s.regs();
    let places = &s.layout().cd;
    let mut out = [[0u64; 4]; 32];
    for lane in 0..32 {
        for r in 0..nc.min(4) {
            // A register's elements lie along a row of D.
            let (row, col) = places[lane][r];
            let (row, col) = (usize::from(row), usize::from(col));
            for e in 0..pcd {
                out[lane][r] |= bits((row & 15, (col + e) & 7), e);
            }
        }
    }
    out
}

/// Calls `f(row, column, register, e)` for each element `e` of each register of one
/// operand's fragments: `places` gives the (row, column) of each lane's register's first
/// element, `per` elements in each of its first `regs` registers. The elements of a
/// register lie next to each other, along a row (`step` = (0, 1): A, C and D) or down a
/// column (`step` = (1, 0): B), as the ISA lays them out
/// (`registers_hold_neighbouring_elements` checks it for every shape).
fn each_element(
    frags: &Fragments,
    (regs, per): (usize, usize),
    places: &Places,
    step: (usize, usize),
    mut f: impl FnMut(usize, usize, u64, usize),
) {
    let (regs, per) = (regs.min(4), per.min(4));
    for lane in 0..32 {
        for r in 0..regs {
            let (v, (row, col)) = (frags[lane][r], places[lane][r]);
            let (row, col) = (usize::from(row), usize::from(col));
            for e in 0..per {
                f(row + step.0 * e, col + step.1 * e, v, e);
            }
        }
    }
}

/// Each lane's registers' first elements: (row, column) by lane and register.
type Places = [[(u8, u8); 4]; 32];

/// Where the registers of A, B and C/D of one shape put their first elements.
struct Layout {
    a: Places,
    b: Places,
    cd: Places,
}

impl MmaShape {
    /// The shape's [`Layout`], worked out once for the process from `a_at`, `b_at` and
    /// `cd_at`.
    fn layout(&self) -> &'static Layout {
        static LAYOUTS: [std::sync::OnceLock<Layout>; 7] =
            [const { std::sync::OnceLock::new() }; 7];
        let (pa, pcd) = (Self::per_reg(self.ab), Self::per_reg(self.cd));
        let key = match (self.m, self.k, pa, pcd) {
            (16, 8, _, 1) => 0,
            (16, 8, ..) => 1,
            (16, 16, 2, 1) => 2,
            (16, 16, 2, _) => 3,
            (8, ..) => 4,
            (16, 16, ..) => 5,
            _ => 6,
        };
        LAYOUTS[key].get_or_init(|| {
            let places = |per: usize, at: &dyn Fn(usize, usize) -> (usize, usize)| {
                std::array::from_fn(|lane| {
                    std::array::from_fn(|r| {
                        let (row, col) = at(lane, r * per);
                        (row as u8, col as u8)
                    })
                })
            };
            Layout {
                a: places(pa, &|l, i| self.a_at(l, i)),
                b: places(pa, &|l, i| self.b_at(l, i)),
                cd: places(pcd, &|l, i| self.cd_at(l, i)),
            }
        })
    }
}

/// The register bits of an f32 or f16 element of D, rounded once from its f64 sum; a NaN is
/// the canonical one (`CANONICAL_NAN_F32`, or `0x7FFF` for f16), as NVIDIA GPUs give,
/// whatever NaNs went in, so that it does not depend on the order of the host's operations.
fn float_result(ty: Ty, x: f64) -> u64 {
    match ty {
        Ty::F32 if x.is_nan() => u64::from(crate::arith::CANONICAL_NAN_F32),
        Ty::F32 => u64::from((x as f32).to_bits()),
        _ if x.is_nan() => 0x7FFF,
        _ => u64::from(half::f16::from_f64(x).to_bits()),
    }
}

/// `ldmatrix.m8n8.xN.b16`: from each matrix's 8 rows of 8 16-bit elements (`rows[j][r]`),
/// the registers of `lane`: for matrix j, elements (lane/4, 2·(lane%4)) and the next, or
/// with `.trans` the transposed pair (the first `rows.len()` of the four; at most four
/// matrices).
pub fn ldmatrix_reg(rows: &[[[u16; 8]; 8]], lane: usize, trans: bool) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (o, m) in out.iter_mut().zip(rows) {
        let (r, c) = (lane / 4, (lane % 4) * 2);
        let (lo, hi) = if trans {
            (m[c][r], m[c + 1][r])
        } else {
            (m[r][c], m[r][c + 1])
        };
        *o = u64::from(lo) | u64::from(hi) << 16;
    }
    out
}

/// `movmatrix.m8n8.trans.b16`: the registers of the warp (one each) after transposing the
/// 8×8 matrix they hold in the ldmatrix layout.
pub fn movmatrix(regs: &[u64; 32]) -> [u64; 32] {
    let mut m = [[0u16; 8]; 8];
    for (lane, &v) in regs.iter().enumerate() {
        let (r, c) = (lane / 4, (lane % 4) * 2);
        m[r][c] = v as u16;
        m[r][c + 1] = (v >> 16) as u16;
    }
    let mut out = [0u64; 32];
    for (lane, o) in out.iter_mut().enumerate() {
        let (r, c) = (lane / 4, (lane % 4) * 2);
        *o = u64::from(m[c][r]) | u64::from(m[c + 1][r]) << 16;
    }
    out
}

/// A `wmma` shape: `mMnNkK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WmmaShape {
    /// Rows of A and D.
    pub m: usize,
    /// Columns of B and D.
    pub n: usize,
    /// Columns of A, rows of B.
    pub k: usize,
}

/// Which `wmma` fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// `.a`: M×K.
    A,
    /// `.b`: K×N.
    B,
    /// `.c` / `.d`: M×N.
    C,
}

impl WmmaShape {
    /// The shape for `mMnNkK`, if it is one of the f16/bf16 shapes.
    pub fn parse(s: &str) -> Option<WmmaShape> {
        let (m, n, k) = match s {
            "m16n16k16" => (16, 16, 16),
            "m32n8k16" => (32, 8, 16),
            "m8n32k16" => (8, 32, 16),
            _ => return None,
        };
        Some(WmmaShape { m, n, k })
    }

    /// (rows, columns) of a fragment's matrix.
    pub fn dims(&self, f: Fragment) -> (usize, usize) {
        match f {
            Fragment::A => (self.m, self.k),
            Fragment::B => (self.k, self.n),
            Fragment::C => (self.m, self.n),
        }
    }

    /// Elements of a fragment each lane holds: 16 of A and B, 8 of C and D.
    pub fn per_lane(f: Fragment) -> usize {
        match f {
            Fragment::A | Fragment::B => 16,
            Fragment::C => 8,
        }
    }

    /// (row, column) of element `e` of `lane`'s fragment. The ISA leaves `wmma` fragments
    /// opaque: here lane `l` holds the row-major elements `l·E .. l·E + E` of the matrix
    /// (E elements per lane), wrapping around where a warp holds a small matrix more than
    /// once; loads, `mma` and stores agree on it, which is all a program can observe.
    pub fn at(&self, f: Fragment, lane: usize, e: usize) -> (usize, usize) {
        let (rows, cols) = self.dims(f);
        let idx = (lane * Self::per_lane(f) + e) % (rows * cols);
        (idx / cols, idx % cols)
    }
}

/// `wmma.mma`: D = A·B + C from the fragments' element values (`a[lane][e]` and so on,
/// as f64), as each lane's D elements.
pub fn wmma(s: &WmmaShape, a: &[Vec<f64>], b: &[Vec<f64>], c: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut am = vec![0f64; s.m * s.k];
    let mut bm = vec![0f64; s.k * s.n];
    let mut cm = vec![0f64; s.m * s.n];
    for lane in 0..32 {
        for (e, &v) in a[lane].iter().enumerate() {
            let (r, col) = s.at(Fragment::A, lane, e);
            am[r * s.k + col] = v;
        }
        for (e, &v) in b[lane].iter().enumerate() {
            let (r, col) = s.at(Fragment::B, lane, e);
            bm[r * s.n + col] = v;
        }
        for (e, &v) in c[lane].iter().enumerate() {
            let (r, col) = s.at(Fragment::C, lane, e);
            cm[r * s.n + col] = v;
        }
    }
    (0..32)
        .map(|lane| {
            (0..WmmaShape::per_lane(Fragment::C))
                .map(|e| {
                    let (r, col) = s.at(Fragment::C, lane, e);
                    (0..s.k).fold(cm[r * s.n + col], |acc, x| {
                        acc + am[r * s.k + x] * bm[x * s.n + col]
                    })
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element `e` of `reg` as the definition reads it.
    fn element(ty: Ty, reg: u64, e: usize) -> f64 {
        match ty {
            Ty::F16 => f64::from(half::f16::from_bits((reg >> (16 * e)) as u16).to_f32()),
            Ty::BF16 => f64::from(half::bf16::from_bits((reg >> (16 * e)) as u16).to_f32()),
            Ty::S8 => f64::from((reg >> (8 * e)) as u8 as i8),
            Ty::U8 => f64::from((reg >> (8 * e)) as u8),
            Ty::F32 => f64::from(f32::from_bits(reg as u32)),
            Ty::S32 => f64::from(reg as u32 as i32),
            _ => 0.0,
        }
    }

    /// Every element of A, B and C/D is held by exactly one (lane, element) of the warp.
    #[test]
    fn fragments_cover_each_matrix_once() {
        for (name, d, a, b, c) in FORMS {
            let s = MmaShape::new(name, d, a, b, c).unwrap();
            let (ra, rb, rc) = s.regs();
            let (pa, pc) = (MmaShape::per_reg(s.ab), MmaShape::per_reg(s.cd));
            for (what, per, regs, rows, cols, at) in [
                (
                    "A",
                    pa,
                    ra,
                    s.m,
                    s.k,
                    &(|l, i| s.a_at(l, i)) as &dyn Fn(usize, usize) -> (usize, usize),
                ),
                ("B", pa, rb, s.k, s.n, &|l, i| s.b_at(l, i)),
                ("C", pc, rc, s.m, s.n, &|l, i| s.cd_at(l, i)),
            ] {
                let mut seen = vec![0; rows * cols];
                for lane in 0..32 {
                    for i in 0..regs * per {
                        let (r, c) = at(lane, i);
                        assert!(r < rows && c < cols, "{name} {what}: ({r},{c})");
                        seen[r * cols + c] += 1;
                    }
                }
                assert!(seen.iter().all(|&n| n == 1), "{name} {what}: {seen:?}");
            }
        }
    }

    /// Every element of a wmma matrix is held by some lane; C and D by exactly one.
    #[test]
    fn wmma_fragments_cover_each_matrix() {
        for name in ["m16n16k16", "m32n8k16", "m8n32k16"] {
            let s = WmmaShape::parse(name).unwrap();
            for f in [Fragment::A, Fragment::B, Fragment::C] {
                let (rows, cols) = s.dims(f);
                let mut seen = vec![0; rows * cols];
                for lane in 0..32 {
                    for e in 0..WmmaShape::per_lane(f) {
                        let (r, c) = s.at(f, lane, e);
                        seen[r * cols + c] += 1;
                    }
                }
                assert!(seen.iter().all(|&n| n >= 1), "{name} {f:?}");
                if f == Fragment::C {
                    assert!(seen.iter().all(|&n| n == 1), "{name} {f:?}");
                }
            }
        }
    }

    /// Every form `MmaShape::new` accepts.
    const FORMS: [(&str, Ty, Ty, Ty, Ty); 11] = [
        ("m16n8k8", Ty::F32, Ty::F16, Ty::F16, Ty::F32),
        ("m16n8k8", Ty::F16, Ty::F16, Ty::F16, Ty::F16),
        ("m16n8k8", Ty::F32, Ty::BF16, Ty::BF16, Ty::F32),
        ("m16n8k16", Ty::F32, Ty::F16, Ty::F16, Ty::F32),
        ("m16n8k16", Ty::F16, Ty::F16, Ty::F16, Ty::F16),
        ("m16n8k16", Ty::F32, Ty::BF16, Ty::BF16, Ty::F32),
        ("m8n8k16", Ty::S32, Ty::S8, Ty::S8, Ty::S32),
        ("m16n8k16", Ty::S32, Ty::U8, Ty::S8, Ty::S32),
        ("m16n8k32", Ty::S32, Ty::S8, Ty::S8, Ty::S32),
        ("m16n8k32", Ty::S32, Ty::S8, Ty::U8, Ty::S32),
        ("m16n8k32", Ty::S32, Ty::U8, Ty::U8, Ty::S32),
    ];

    /// `mma.sync` as the ISA defines it, one element at a time: every product of A's row and
    /// B's column summed exactly (i64, or f64 in order of `k`) onto C's element.
    fn reference(s: &MmaShape, a: &Fragments, b: &Fragments, c: &Fragments) -> Fragments {
        let (pa, pcd) = (MmaShape::per_reg(s.ab), MmaShape::per_reg(s.cd));
        let (na, nb, nc) = s.regs();
        let mut am = vec![0f64; s.m * s.k];
        let mut bm = vec![0f64; s.k * s.n];
        let mut cm = vec![0f64; s.m * s.n];
        let mut im = vec![0i64; s.m * s.n];
        for lane in 0..32 {
            for (r, &v) in a[lane].iter().take(na).enumerate() {
                for e in 0..pa {
                    let (row, col) = s.a_at(lane, r * pa + e);
                    am[row * s.k + col] = element(s.ab, v, e);
                }
            }
            for (r, &v) in b[lane].iter().take(nb).enumerate() {
                for e in 0..pa {
                    let (row, col) = s.b_at(lane, r * pa + e);
                    bm[row * s.n + col] = element(s.b, v, e);
                }
            }
            for (r, &v) in c[lane].iter().take(nc).enumerate() {
                for e in 0..pcd {
                    let (row, col) = s.cd_at(lane, r * pcd + e);
                    cm[row * s.n + col] = element(s.cd, v, e);
                    im[row * s.n + col] = i64::from(v as u32 as i32);
                }
            }
        }
        let mut out = [[0u64; 4]; 32];
        for (lane, regs) in out.iter_mut().enumerate() {
            for (r, v) in regs.iter_mut().take(nc).enumerate() {
                for e in 0..pcd {
                    let (row, col) = s.cd_at(lane, r * pcd + e);
                    let (mut f, mut i) = (cm[row * s.n + col], im[row * s.n + col]);
                    for x in 0..s.k {
                        let (p, q) = (am[row * s.k + x], bm[x * s.n + col]);
                        if s.cd == Ty::S32 {
                            i += p as i64 * q as i64;
                        } else {
                            f += p * q;
                        }
                    }
                    *v |= match s.cd {
                        Ty::F32 if f.is_nan() => 0x7FFF_FFFF,
                        Ty::F32 => u64::from((f as f32).to_bits()),
                        Ty::F16 if f.is_nan() => 0x7FFF << (16 * e),
                        Ty::F16 => u64::from(half::f16::from_f64(f).to_bits()) << (16 * e),
                        _ => u64::from(i as i32 as u32),
                    };
                }
            }
        }
        out
    }

    /// Every supported shape and type, on random registers (NaNs, infinities and
    /// subnormals among the halves; accumulators that wrap), agrees bit for bit with the
    /// definition.
    #[test]
    fn every_shape_agrees_with_the_definition() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rng = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (shape, d, a, b, c) in FORMS {
            let s = MmaShape::new(shape, d, a, b, c).unwrap();
            for round in 0..50 {
                let mut frags = [[[0u64; 4]; 32]; 3];
                for f in frags.iter_mut() {
                    for lane in f.iter_mut() {
                        for r in lane.iter_mut() {
                            // 32-bit registers; small values now and then, so that sums
                            // are exact as often as not.
                            let v = rng() as u32;
                            *r = u64::from(if round % 2 == 0 { v & 0x3C3F_3C3F } else { v });
                        }
                    }
                }
                let [fa, fb, fc] = &frags;
                assert_eq!(
                    mma(&s, fa, fb, fc),
                    reference(&s, fa, fb, fc),
                    "{shape} .{d:?}.{a:?}.{b:?}.{c:?}, round {round}"
                );
            }
        }
    }

    /// The elements packed in one register lie next to each other: along a row of A, C and
    /// D, down a column of B (what `each_element` relies on).
    #[test]
    fn registers_hold_neighbouring_elements() {
        for (shape, d, a, b, c) in FORMS {
            let s = MmaShape::new(shape, d, a, b, c).unwrap();
            let (na, nb, nc) = s.regs();
            let (pa, pcd) = (MmaShape::per_reg(s.ab), MmaShape::per_reg(s.cd));
            for lane in 0..32 {
                for e in 0..pa {
                    for r in 0..na {
                        let (row, col) = s.a_at(lane, r * pa);
                        assert_eq!(s.a_at(lane, r * pa + e), (row, col + e), "{shape} A");
                    }
                    for r in 0..nb {
                        let (row, col) = s.b_at(lane, r * pa);
                        assert_eq!(s.b_at(lane, r * pa + e), (row + e, col), "{shape} B");
                    }
                }
                for e in 0..pcd {
                    for r in 0..nc {
                        let (row, col) = s.cd_at(lane, r * pcd);
                        assert_eq!(s.cd_at(lane, r * pcd + e), (row, col + e), "{shape} D");
                    }
                }
            }
        }
    }

    #[test]
    fn m16n8k8_multiplies() {
        let s = MmaShape::new("m16n8k8", Ty::F32, Ty::F16, Ty::F16, Ty::F32).unwrap();
        let av = |r: usize, c: usize| (r as f32 - c as f32) / 4.0;
        let bv = |r: usize, c: usize| (r * 3 + c) as f32 / 8.0;
        let h = |f: f32| u64::from(half::f16::from_f32(f).to_bits());
        let (ra, rb, rc) = s.regs();
        let mut a = [[0u64; 4]; 32];
        let mut b = [[0u64; 4]; 32];
        let mut c = [[0u64; 4]; 32];
        for lane in 0..32 {
            for i in 0..ra * 2 {
                let (r, col) = s.a_at(lane, i);
                a[lane][i / 2] |= h(av(r, col)) << (16 * (i % 2));
            }
            for i in 0..rb * 2 {
                let (r, col) = s.b_at(lane, i);
                b[lane][i / 2] |= h(bv(r, col)) << (16 * (i % 2));
            }
            for (i, reg) in c[lane].iter_mut().take(rc).enumerate() {
                let (r, col) = s.cd_at(lane, i);
                *reg = u64::from(((r * 8 + col) as f32).to_bits());
            }
        }
        let d = mma(&s, &a, &b, &c);
        for (lane, regs) in d.iter().enumerate() {
            for (i, &v) in regs.iter().take(rc).enumerate() {
                let (r, col) = s.cd_at(lane, i);
                let want: f32 =
                    (0..8).map(|x| av(r, x) * bv(x, col)).sum::<f32>() + (r * 8 + col) as f32;
                assert_eq!(f32::from_bits(v as u32), want, "D[{r}][{col}]");
            }
        }
    }

    #[test]
    fn ldmatrix_and_movmatrix_transpose() {
        let mut m = [[0u16; 8]; 8];
        for (r, row) in m.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = (r * 8 + c) as u16;
            }
        }
        let plain: Vec<u64> = (0..32).map(|l| ldmatrix_reg(&[m], l, false)[0]).collect();
        let trans: Vec<u64> = (0..32).map(|l| ldmatrix_reg(&[m], l, true)[0]).collect();
        assert_eq!(plain[5], 10 | (11 << 16), "row 1, columns 2 and 3");
        assert_eq!(trans[5], 17 | (25 << 16), "rows 2 and 3, column 1");
        let moved = movmatrix(&plain.clone().try_into().unwrap());
        assert_eq!(moved.to_vec(), trans);
    }
}
