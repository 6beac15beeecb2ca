//! GEMM: `MatMul`, the matrixmultiply kernel on compact column-major matrices (also used
//! by the Lt matmul), and BLAS_GEMM / BLAS_GEMM_BATCHED on operands in device memory.

use vgpu_proto::payload::GemmDesc;
use vgpu_proto::Status;

use super::plan::{batch_addr, dim, lead, plan, transposed, Plan, Precision};
use super::region::{read_ptr, zeros, Region};
use super::types::{scalar, Real};
use super::DeviceMemory;

/// `C = alpha·op(A)·op(B) + beta·C` on compact column-major matrices: op(A) is `m×k`
/// (stored `m×k`, or `k×m` when `ta`), op(B) is `k×n` (stored `k×n`, or `n×k` when `tb`),
/// C is `m×n`.
#[derive(Clone, Copy, Debug)]
pub(super) struct MatMul {
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) ta: bool,
    pub(super) tb: bool,
}

impl MatMul {
    pub(super) fn compute<T: Real>(
        &self,
        alpha: T,
        a: &[T],
        b: &[T],
        beta: T,
        c: &mut [T],
    ) -> Result<(), Status> {
        let MatMul { m, n, k, ta, tb } = *self;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 || alpha == T::ZERO {
            // C = beta·C without reading A, B (and without reading C when beta == 0).
            for v in c.iter_mut() {
                *v = if beta == T::ZERO { T::ZERO } else { beta * *v };
            }
            return Ok(());
        }
        if m.checked_mul(k) != Some(a.len())
            || k.checked_mul(n) != Some(b.len())
            || m.checked_mul(n) != Some(c.len())
        {
            return Err(Status::BLAS_INTERNAL_ERROR);
        }
        let (rsa, csa) = if ta { (k, 1) } else { (1, m) };
        let (rsb, csb) = if tb { (n, 1) } else { (1, k) };
        // Slices never exceed isize::MAX elements, and each stride is at most a length.
        let s = |v: usize| v as isize;
        // SAFETY: m, n, k >= 1 and a.len() == m·k, b.len() == k·n, c.len() == m·n (checked
        // above). With these strides the largest offsets the kernel forms are
        // A: (m-1)·rsa + (k-1)·csa = m·k - 1 (either layout), B: (k-1)·rsb + (n-1)·csb =
        // k·n - 1, C: (m-1)·1 + (n-1)·m = m·n - 1, so every access stays inside its slice.
        // C's strides (1, m) map distinct (i, j) to distinct elements, as the kernel
        // requires, and `c` is a unique borrow, so it aliases neither `a` nor `b`. The kernel
        // reads C only when beta != 0; `c` is initialised anyway.
        unsafe {
            (T::KERNEL)(
                m,
                k,
                n,
                alpha,
                a.as_ptr(),
                s(rsa),
                s(csa),
                b.as_ptr(),
                s(rsb),
                s(csb),
                beta,
                c.as_mut_ptr(),
                1,
                s(m),
            );
        }
        Ok(())
    }
}

/// Validated GEMM arguments.
#[derive(Clone, Copy, Debug)]
struct GemmArgs {
    mm: MatMul,
    lda: usize,
    ldb: usize,
    ldc: usize,
    batch: usize,
    plan: Plan,
}

fn gemm_args(what: &str, d: &GemmDesc) -> Result<GemmArgs, Status> {
    let ta = transposed(d.transa)?;
    let tb = transposed(d.transb)?;
    let (m, n, k) = (dim(d.m)?, dim(d.n)?, dim(d.k)?);
    let batch = dim(d.batch_count)?;
    let lda = lead(d.lda, if ta { k } else { m })?;
    let ldb = lead(d.ldb, if tb { n } else { k })?;
    let ldc = lead(d.ldc, m)?;
    let plan = plan(what, d.a_type, d.b_type, d.c_type, d.compute_type, true)?;
    Ok(GemmArgs {
        mm: MatMul { m, n, k, ta, tb },
        lda,
        ldb,
        ldc,
        batch,
        plan,
    })
}

/// Where the operands of batch `i` are.
enum Operands<'a> {
    Strided(&'a GemmDesc),
    Pointers(&'a GemmDesc),
}

impl Operands<'_> {
    /// (A, B, C) of batch `i`; A and B are 0 when they are not needed.
    fn get(
        &self,
        mem: &dyn DeviceMemory,
        i: usize,
        plan: &Plan,
        need_ab: bool,
    ) -> Result<(u64, u64, u64), Status> {
        match *self {
            Operands::Strided(d) => {
                let ab = plan.ab.size();
                Ok((
                    batch_addr(d.a, i, d.stride_a, ab)?,
                    batch_addr(d.b, i, d.stride_b, ab)?,
                    batch_addr(d.c, i, d.stride_c, plan.c.size())?,
                ))
            }
            Operands::Pointers(d) => {
                let (a, b) = if need_ab {
                    (read_ptr(mem, d.a, i)?, read_ptr(mem, d.b, i)?)
                } else {
                    (0, 0)
                };
                Ok((a, b, read_ptr(mem, d.c, i)?))
            }
        }
    }
}

fn gemm_common(
    mem: &dyn DeviceMemory,
    what: &str,
    d: &GemmDesc,
    ops: Operands<'_>,
) -> Result<(), Status> {
    let args = gemm_args(what, d)?;
    if args.mm.m == 0 || args.mm.n == 0 || args.batch == 0 {
        return Ok(());
    }
    match args.plan.prec {
        Precision::F32 => gemm_typed::<f32>(mem, d, &args, &ops),
        Precision::F64 => gemm_typed::<f64>(mem, d, &args, &ops),
    }
}

fn gemm_typed<T: Real>(
    mem: &dyn DeviceMemory,
    d: &GemmDesc,
    g: &GemmArgs,
    ops: &Operands<'_>,
) -> Result<(), Status> {
    let alpha: T = scalar(g.plan.scale, &d.alpha);
    let beta: T = scalar(g.plan.scale, &d.beta);
    let MatMul { m, n, k, ta, tb } = g.mm;
    let need_ab = alpha != T::ZERO && k > 0;
    for i in 0..g.batch {
        let (a, b, c) = ops.get(mem, i, &g.plan, need_ab)?;
        let c_reg = Region::new(c, m, n, g.ldc, g.plan.c)?;
        let (av, bv) = if need_ab {
            let (ar, ac) = if ta { (k, m) } else { (m, k) };
            let (br, bc) = if tb { (n, k) } else { (k, n) };
            (
                Region::new(a, ar, ac, g.lda, g.plan.ab)?.read::<T>(mem)?,
                Region::new(b, br, bc, g.ldb, g.plan.ab)?.read::<T>(mem)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let mut cv = if beta == T::ZERO {
            c_reg.probe(mem)?;
            zeros(c_reg.len)?
        } else {
            c_reg.read(mem)?
        };
        g.mm.compute(alpha, &av, &bv, beta, &mut cv)?;
        c_reg.write(mem, &cv)?;
    }
    Ok(())
}

/// BLAS_GEMM (strided-batched when batch_count > 1) — column-major as cuBLAS.
pub fn gemm(mem: &dyn DeviceMemory, d: &GemmDesc) -> Result<(), Status> {
    gemm_common(mem, "BLAS_GEMM", d, Operands::Strided(d))
}

/// BLAS_GEMM_BATCHED: a, b, c are device arrays of batch_count u64 pointers (read them
/// through `mem`). The strides are ignored (the decoder requires them to be 0).
pub fn gemm_batched(mem: &dyn DeviceMemory, d: &GemmDesc) -> Result<(), Status> {
    gemm_common(mem, "BLAS_GEMM_BATCHED", d, Operands::Pointers(d))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::types::Elem;
    use super::super::{compute_type, data_type};
    use super::*;
    use proptest::prelude::*;

    // ----- GEMM: directed tests ---------------------------------------------------------

    #[test]
    fn all_transpose_combinations_non_square_padded() {
        for ta in 0..3 {
            for tb in 0..3 {
                let c = Case {
                    ta,
                    tb,
                    pads: (2, 1, 3),
                    alpha: 1.5,
                    beta: -0.5,
                    seed: u64::from(ta * 3 + tb),
                    ..case(5, 3, 4)
                };
                run_gemm_case(&c).unwrap();
            }
        }
    }

    #[test]
    fn alpha_beta_values() {
        for (alpha, beta) in [
            (1.0, 0.0),
            (0.0, 1.0),
            (0.0, 0.0),
            (-2.0, 0.25),
            (0.5, 1.0),
            (0.0, -3.0),
        ] {
            run_gemm_case(&Case {
                alpha,
                beta,
                pads: (1, 0, 2),
                ..case(4, 6, 3)
            })
            .unwrap();
        }
    }

    #[test]
    fn beta_zero_does_not_propagate_nan_in_c() {
        // run_gemm_case fills C with NaN when beta == 0.
        run_gemm_case(&Case {
            beta: 0.0,
            ..case(7, 5, 6)
        })
        .unwrap();
        run_gemm_case(&Case {
            alpha: 0.0,
            beta: 0.0,
            ..case(3, 3, 3)
        })
        .unwrap();
        run_gemm_case(&Case {
            beta: 0.0,
            k: 0,
            ..case(3, 3, 3)
        })
        .unwrap();
        run_gemm_case(&Case {
            beta: 0.0,
            compute: 64,
            ab: Elem::F16,
            c: Elem::F16,
            ..case(4, 2, 5)
        })
        .unwrap();
    }

    #[test]
    fn alpha_zero_reads_neither_a_nor_b() {
        let mem = VecMemory::new();
        let c = mem.alloc_with(&[1f32, 2., 3., 4.].map(f32::to_le_bytes).concat());
        let mut d = desc(2, 2, 2);
        (d.a, d.b, d.c) = (0, 0, c); // A and B are not valid device addresses
        d.alpha = scal(Elem::F32, 0.0);
        d.beta = scal(Elem::F32, 2.0);
        gemm(&mem, &d).unwrap();
        assert_eq!(
            mem.load(c, 16),
            [2f32, 4., 6., 8.].map(f32::to_le_bytes).concat()
        );
        // Same for pointer arrays: only C's array is read.
        let carr = mem.ptr_array(&[c]);
        d.c = carr;
        gemm_batched(&mem, &d).unwrap();
        assert_eq!(
            mem.load(c, 16),
            [4f32, 8., 12., 16.].map(f32::to_le_bytes).concat()
        );
    }

    #[test]
    fn k_zero_scales_c() {
        run_gemm_case(&Case {
            beta: -0.5,
            alpha: 3.0,
            ..case(3, 4, 0)
        })
        .unwrap();
        run_gemm_case(&Case {
            beta: 1.0,
            ta: 1,
            tb: 1,
            ..case(3, 4, 0)
        })
        .unwrap();
    }

    #[test]
    fn empty_result_touches_nothing() {
        let mem = VecMemory::new();
        for (m, n) in [(0, 5), (5, 0), (0, 0)] {
            let d = desc(m, n, 3); // all pointers are 0
            assert_eq!(gemm(&mem, &d), Ok(()));
            assert_eq!(gemm_batched(&mem, &d), Ok(()));
        }
        let mut d = desc(2, 2, 2);
        d.batch_count = 0;
        assert_eq!(gemm(&mem, &d), Ok(()));
    }

    #[test]
    fn strided_batches() {
        for (pad, bcast) in [(0, false), (3, false), (1, true)] {
            let c = Case {
                batch: 4,
                stride_pad: pad,
                broadcast_a: bcast,
                ta: 1,
                pads: (1, 1, 1),
                alpha: 0.5,
                beta: 1.0,
                ..case(3, 4, 5)
            };
            run_gemm_case(&c).unwrap();
        }
    }

    #[test]
    fn pointer_array_batches() {
        for (ta, tb) in [(0, 0), (1, 2), (2, 0)] {
            let c = Case {
                batch: 3,
                pointers: true,
                ta,
                tb,
                pads: (0, 2, 1),
                alpha: -1.0,
                beta: 0.5,
                ..case(4, 3, 5)
            };
            run_gemm_case(&c).unwrap();
        }
        run_gemm_case(&Case {
            batch: 2,
            pointers: true,
            ..case(3, 3, 3)
        })
        .unwrap();
    }

    #[test]
    fn half_precision_inputs() {
        use compute_type::*;
        let combos = [
            (Elem::F16, Elem::F32, C32F),
            (Elem::F16, Elem::F16, C32F),
            (Elem::F16, Elem::F16, C32F_FAST_16F),
            (Elem::Bf16, Elem::F32, C32F),
            (Elem::Bf16, Elem::Bf16, C32F_FAST_16BF),
            (Elem::Bf16, Elem::F32, C32F_PEDANTIC),
            (Elem::F16, Elem::F16, C16F),
            (Elem::F16, Elem::F16, C16F_PEDANTIC),
            (Elem::F16, Elem::F16, data_type::R_16F),
            (Elem::F16, Elem::F16, data_type::R_32F), // cublasSgemmEx-style
        ];
        for (ab, cty, compute) in combos {
            for (ta, tb) in [(0, 0), (1, 1)] {
                let c = Case {
                    ab,
                    c: cty,
                    compute,
                    ta,
                    tb,
                    alpha: 1.5,
                    beta: -0.25,
                    pads: (1, 0, 2),
                    batch: 2,
                    ..case(6, 5, 33)
                };
                run_gemm_case(&c).unwrap_or_else(|e| panic!("{ab:?}/{cty:?}/{compute}: {e}"));
            }
        }
    }

    #[test]
    fn f64_compute() {
        for compute in [
            compute_type::C64F,
            compute_type::C64F_PEDANTIC,
            data_type::R_64F,
        ] {
            let c = Case {
                ab: Elem::F64,
                c: Elem::F64,
                compute,
                ta: 2,
                pads: (1, 1, 1),
                alpha: 0.75,
                beta: 2.0,
                batch: 2,
                ..case(5, 4, 17)
            };
            run_gemm_case(&c).unwrap();
        }
    }

    #[test]
    fn legacy_and_fast_f32_compute() {
        for compute in [
            data_type::R_32F,
            compute_type::C32F_PEDANTIC,
            compute_type::C32F_FAST_TF32,
        ] {
            run_gemm_case(&Case {
                compute,
                beta: 1.0,
                tb: 1,
                ..case(4, 5, 6)
            })
            .unwrap();
        }
    }

    // ----- GEMM: property tests ---------------------------------------------------------

    fn gemm_cases(max_dim: usize) -> impl Strategy<Value = Case> {
        (
            (0..=max_dim, 0..=max_dim, 0..=max_dim),
            (0u32..3, 0u32..3),
            (0usize..3, 0usize..3, 0usize..3),
            (1usize..4, any::<bool>(), 0usize..4, any::<bool>()),
            0..TYPES.len(),
            (0..ALPHAS.len(), 0..BETAS.len()),
            any::<u64>(),
        )
            .prop_map(
                |(
                    (m, n, k),
                    (ta, tb),
                    pads,
                    (batch, pointers, stride_pad, broadcast_a),
                    t,
                    (al, be),
                    seed,
                )| {
                    let (ab, c, compute) = TYPES[t];
                    Case {
                        m,
                        n,
                        k,
                        ta,
                        tb,
                        pads,
                        batch,
                        pointers,
                        stride_pad,
                        broadcast_a,
                        ab,
                        c,
                        compute,
                        alpha: ALPHAS[al],
                        beta: BETAS[be],
                        seed,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn gemm_matches_f64_reference(c in gemm_cases(7)) {
            if let Err(e) = run_gemm_case(&c) {
                prop_assert!(false, "{}", e);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn gemm_matches_f64_reference_larger(c in gemm_cases(40)) {
            if let Err(e) = run_gemm_case(&c) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
