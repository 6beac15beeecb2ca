//! BLAS_TRSM_BATCHED: triangular solves by forward or back substitution on compact copies
//! of A and B.

use vgpu_proto::payload::TrsmBatchedDesc;
use vgpu_proto::Status;

use super::plan::{dim, lead, transposed, INVALID};
use super::region::{read_ptr, zeros, Region};
use super::types::{data_type_name, scalar, Elem, Real};
use super::DeviceMemory;

/// Validated TRSM arguments.
#[derive(Clone, Copy, Debug)]
struct TrsmArgs {
    left: bool,
    upper: bool,
    trans: bool,
    unit: bool,
    m: usize,
    n: usize,
    /// Order of A.
    s: usize,
    lda: usize,
    ldb: usize,
    batch: usize,
    elem: Elem,
}

/// BLAS_TRSM_BATCHED: solves `op(A[i])·X = alpha·B[i]` (side 0, left) or
/// `X·op(A[i]) = alpha·B[i]` (side 1, right) in place in `B[i]`, with A triangular (uplo 0
/// lower, 1 upper; diag 1 = unit diagonal, not read). `a` and `b` are device arrays of
/// pointers; data type `CUDA_R_32F` or `CUDA_R_64F`. alpha == 0 sets B to 0 without reading
/// A. A zero on a non-unit diagonal gives infinities/NaNs, as on the GPU.
pub fn trsm_batched(mem: &dyn DeviceMemory, d: &TrsmBatchedDesc) -> Result<(), Status> {
    if d.side > 1 || d.uplo > 1 || d.diag > 1 {
        return Err(INVALID);
    }
    let trans = transposed(d.trans)?;
    let (m, n) = (dim(d.m)?, dim(d.n)?);
    let batch = dim(d.batch_count)?;
    let left = d.side == 0;
    let s = if left { m } else { n };
    let lda = lead(d.lda, s)?;
    let ldb = lead(d.ldb, m)?;
    let elem = match Elem::from_cuda(d.data_type) {
        Some(e @ (Elem::F32 | Elem::F64)) => e,
        _ => {
            log::warn!(
                "soft BLAS: BLAS_TRSM_BATCHED with data type {} is not supported",
                data_type_name(d.data_type)
            );
            return Err(Status::BLAS_NOT_SUPPORTED);
        }
    };
    if m == 0 || n == 0 || batch == 0 {
        return Ok(());
    }
    let t = TrsmArgs {
        left,
        upper: d.uplo == 1,
        trans,
        unit: d.diag == 1,
        m,
        n,
        s,
        lda,
        ldb,
        batch,
        elem,
    };
    match elem {
        Elem::F64 => trsm_typed::<f64>(mem, d, &t),
        _ => trsm_typed::<f32>(mem, d, &t),
    }
}

fn trsm_typed<T: Real>(
    mem: &dyn DeviceMemory,
    d: &TrsmBatchedDesc,
    t: &TrsmArgs,
) -> Result<(), Status> {
    let alpha: T = scalar(t.elem, &d.alpha);
    for i in 0..t.batch {
        let b_reg = Region::new(read_ptr(mem, d.b, i)?, t.m, t.n, t.ldb, t.elem)?;
        if alpha == T::ZERO {
            b_reg.probe(mem)?;
            b_reg.write(mem, &zeros::<T>(b_reg.len)?)?;
            continue;
        }
        let a_reg = Region::new(read_ptr(mem, d.a, i)?, t.s, t.s, t.lda, t.elem)?;
        let a = a_reg.read::<T>(mem)?;
        let mut b = b_reg.read::<T>(mem)?;
        solve(t, &a, &mut b, alpha)?;
        b_reg.write(mem, &b)?;
    }
    Ok(())
}

/// Solves one TRSM on compact matrices (A `s×s`, B `m×n`).
fn solve<T: Real>(t: &TrsmArgs, a: &[T], b: &mut [T], alpha: T) -> Result<(), Status> {
    let (m, n, s) = (t.m, t.n, t.s);
    if a.len() != s * s || b.len() != m * n {
        return Err(Status::BLAS_INTERNAL_ERROR);
    }
    // op(A)(i, l); only the stored triangle is ever asked for.
    let op_a = |i: usize, l: usize| if t.trans { a[l + i * s] } else { a[i + l * s] };
    // op(A) is lower triangular when A is lower and not transposed, or upper and transposed.
    let op_lower = t.upper == t.trans;
    let mut x = zeros::<T>(s)?;
    if t.left {
        // Column j of X solves op(A)·x = alpha·b_j.
        for j in 0..n {
            let col = &mut b[j * m..(j + 1) * m];
            for (xi, bi) in x.iter_mut().zip(col.iter()) {
                *xi = alpha * *bi;
            }
            substitute(&mut x, op_a, op_lower, t.unit);
            col.copy_from_slice(&x);
        }
    } else {
        // Row i of X solves op(A)ᵀ·x = alpha·(row i of B); op(A)ᵀ(r, l) = op(A)(l, r).
        for i in 0..m {
            for (j, xj) in x.iter_mut().enumerate() {
                *xj = alpha * b[i + j * m];
            }
            substitute(&mut x, |r, l| op_a(l, r), !op_lower, t.unit);
            for (j, xj) in x.iter().enumerate() {
                b[i + j * m] = *xj;
            }
        }
    }
    Ok(())
}

/// Forward (lower) or back (upper) substitution of `M·x = rhs`, `x` holding `rhs` on entry.
fn substitute<T: Real>(x: &mut [T], mat: impl Fn(usize, usize) -> T, lower: bool, unit: bool) {
    let s = x.len();
    let mut step = |i: usize, others: core::ops::Range<usize>| {
        let mut v = x[i];
        for l in others {
            v = v - mat(i, l) * x[l];
        }
        x[i] = if unit { v } else { v / mat(i, i) };
    };
    if lower {
        for i in 0..s {
            step(i, 0..i);
        }
    } else {
        for i in (0..s).rev() {
            step(i, i + 1..s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::data_type;
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    struct TrsmCase {
        side: u32,
        uplo: u32,
        trans: u32,
        diag: u32,
        m: usize,
        n: usize,
        pads: (usize, usize),
        batch: usize,
        f64: bool,
        alpha: f64,
        seed: u64,
    }

    fn trsm_desc() -> TrsmBatchedDesc {
        TrsmBatchedDesc {
            handle: 1,
            side: 0,
            uplo: 0,
            trans: 0,
            diag: 0,
            m: 2,
            n: 2,
            a: 0,
            lda: 2,
            b: 0,
            ldb: 2,
            batch_count: 1,
            data_type: 0,
            rsv0: 0,
            alpha: scal(Elem::F32, 1.0),
        }
    }

    fn run_trsm_case(c: &TrsmCase) -> Result<(), String> {
        let mem = VecMemory::new();
        let mut rng = Rng(c.seed);
        let e = if c.f64 { Elem::F64 } else { Elem::F32 };
        let left = c.side == 0;
        let s = if left { c.m } else { c.n };
        let (lda, ldb) = (s.max(1) + c.pads.0, c.m.max(1) + c.pads.1);
        let nan = f64::NAN;
        // A: the unreferenced triangle (and a unit diagonal) is NaN; the diagonal is
        // ±[1, 2) and the off-diagonal entries are small, so A is well conditioned.
        let (mut i, mut j) = (0, 0);
        let a = Mat::new(
            &mem,
            e,
            s,
            s,
            lda,
            c.batch,
            Placement::Separate,
            || {
                let v = if i == j {
                    if c.diag == 1 {
                        nan
                    } else {
                        let x = rng.val();
                        x.signum() * (1.0 + x.abs())
                    }
                } else if (i > j) == (c.uplo == 0) {
                    rng.val() / s as f64
                } else {
                    nan
                };
                i += 1;
                if i == s {
                    (i, j) = (0, (j + 1) % s);
                }
                v
            },
            nan,
        );
        let b = Mat::new(
            &mem,
            e,
            c.m,
            c.n,
            ldb,
            c.batch,
            Placement::Separate,
            || rng.val(),
            nan,
        );
        let (av, bv) = (a.values(&mem), b.values(&mem));
        let mut d = trsm_desc();
        (d.side, d.uplo, d.trans, d.diag) = (c.side, c.uplo, c.trans, c.diag);
        (d.m, d.n, d.lda, d.ldb) = (c.m as i64, c.n as i64, lda as i64, ldb as i64);
        d.batch_count = c.batch as i64;
        d.data_type = e.cuda();
        d.alpha = scal(e, c.alpha);
        d.a = mem.ptr_array(&a.addrs);
        d.b = mem.ptr_array(&b.addrs);
        let before = mem.snapshot();
        trsm_batched(&mem, &d).map_err(|st| format!("trsm failed: {st}"))?;
        only_changed(&mem, &before, &b)?;

        let u = unit(e);
        let trans = c.trans != 0;
        for bt in 0..c.batch {
            let x = &b.values(&mem)[bt];
            // op(A)(i, l) with the unit diagonal made explicit
            let op = |i: usize, l: usize| {
                if i == l && c.diag == 1 {
                    1.0
                } else {
                    let (r, q) = if trans { (l, i) } else { (i, l) };
                    if r == q || (r > q) == (c.uplo == 0) {
                        av[bt][r + q * s]
                    } else {
                        0.0
                    }
                }
            };
            for j in 0..c.n {
                for i in 0..c.m {
                    let (mut res, mut abs) = (0.0, 0.0);
                    for l in 0..s {
                        let p = if left {
                            op(i, l) * x[l + j * c.m]
                        } else {
                            x[i + l * c.m] * op(l, j)
                        };
                        res += p;
                        abs += p.abs();
                    }
                    let rhs = c.alpha * bv[bt][i + j * c.m];
                    let tol = 2.0 * (s as f64 + 2.0) * u * (abs + rhs.abs());
                    if !within(res - rhs, tol) {
                        return Err(format!(
                            "batch {bt} residual ({i},{j}) = {} > {tol} for {c:?}",
                            res - rhs
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn trsm_all_modes() {
        let mut seed = 0;
        for f64 in [false, true] {
            for side in 0..2 {
                for uplo in 0..2 {
                    for trans in 0..3 {
                        for diag in 0..2 {
                            seed += 1;
                            let c = TrsmCase {
                                side,
                                uplo,
                                trans,
                                diag,
                                m: 5,
                                n: 3,
                                pads: (2, 1),
                                batch: 2,
                                f64,
                                alpha: -1.5,
                                seed,
                            };
                            run_trsm_case(&c).unwrap();
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn trsm_alpha_zero_and_empty() {
        let mem = VecMemory::new();
        let b = mem.alloc_with(&[1f32, 2., 3., 4.].map(f32::to_le_bytes).concat());
        let mut d = trsm_desc();
        d.b = mem.ptr_array(&[b]);
        d.a = 0; // not read
        d.alpha = scal(Elem::F32, 0.0);
        trsm_batched(&mem, &d).unwrap();
        assert_eq!(mem.load(b, 16), [0u8; 16]);
        let mut d = trsm_desc(); // pointers 0: nothing is touched
        d.m = 0;
        assert_eq!(trsm_batched(&mem, &d), Ok(()));
        d.m = 2;
        d.batch_count = 0;
        assert_eq!(trsm_batched(&mem, &d), Ok(()));
    }

    #[test]
    fn trsm_invalid_and_unsupported() {
        let mem = VecMemory::new();
        let cases: Vec<Mutation<TrsmBatchedDesc>> = vec![
            ("side", Box::new(|d| d.side = 2)),
            ("uplo", Box::new(|d| d.uplo = 2)),
            ("diag", Box::new(|d| d.diag = 2)),
            ("trans", Box::new(|d| d.trans = 3)),
            ("m", Box::new(|d| d.m = -1)),
            ("n", Box::new(|d| d.n = -1)),
            ("batch", Box::new(|d| d.batch_count = -1)),
            ("lda left", Box::new(|d| (d.m, d.ldb) = (3, 3))),
            ("lda right", Box::new(|d| (d.side, d.n) = (1, 3))),
            ("ldb", Box::new(|d| d.ldb = 1)),
        ];
        for (name, f) in cases {
            let mut d = trsm_desc();
            f(&mut d);
            assert_eq!(
                trsm_batched(&mem, &d),
                Err(Status::BLAS_INVALID_VALUE),
                "{name}"
            );
        }
        for t in [data_type::R_16F, data_type::R_16BF, data_type::C_32F, 77] {
            let mut d = trsm_desc();
            d.data_type = t;
            assert_eq!(trsm_batched(&mem, &d), Err(Status::BLAS_NOT_SUPPORTED));
        }
        // bad pointer array
        let mut d = trsm_desc();
        d.b = mem.ptr_array(&[0x1000]);
        d.a = mem.ptr_array(&[0x2000]);
        assert_eq!(trsm_batched(&mem, &d), Err(Status::INVALID_VALUE));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn trsm_residual_is_small(
            (side, uplo, trans, diag) in (0u32..2, 0u32..2, 0u32..3, 0u32..2),
            (m, n) in (0usize..8, 0usize..8),
            pads in (0usize..3, 0usize..3),
            batch in 1usize..3,
            f64 in any::<bool>(),
            alpha in prop::sample::select(vec![1.0, -2.0, 0.5, 0.0]),
            seed in any::<u64>(),
        ) {
            let c = TrsmCase { side, uplo, trans, diag, m, n, pads, batch, f64, alpha, seed };
            if let Err(e) = run_trsm_case(&c) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
