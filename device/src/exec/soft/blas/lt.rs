//! BLASLT_MATMUL: the cuBLASLt matmul (matrix layouts, strided batches, the RELU and BIAS
//! epilogues) computed with the GEMM kernel.

use vgpu_proto::payload::{LtMatmulDesc, MatrixLayout};
use vgpu_proto::Status;

use super::gemm::MatMul;
use super::plan::{batch_addr, lead, not_supported, plan, transposed, Plan, Precision, INVALID};
use super::region::{zeros, Region};
use super::types::{compute_type_name, data_type_name, scalar, Real};
use super::{lt_epilogue, DeviceMemory};

/// Validated Lt arguments.
#[derive(Clone, Copy, Debug)]
struct LtArgs {
    mm: MatMul,
    lda: usize,
    ldb: usize,
    ldc: usize,
    ldd: usize,
    batch: usize,
    relu: bool,
    bias: bool,
    plan: Plan,
}

/// (rows, cols, ld) of a column-major layout.
fn layout_dims(l: &MatrixLayout) -> Result<(usize, usize, usize), Status> {
    let rows = usize::try_from(l.rows).map_err(|_| INVALID)?;
    let cols = usize::try_from(l.cols).map_err(|_| INVALID)?;
    let ld = lead(l.ld, rows)?;
    Ok((rows, cols, ld))
}

fn lt_args(d: &LtMatmulDesc) -> Result<LtArgs, Status> {
    let ta = transposed(d.transa)?;
    let tb = transposed(d.transb)?;
    let layouts = [&d.a_layout, &d.b_layout, &d.c_layout, &d.d_layout];
    if let Some(l) = layouts.iter().find(|l| l.order != 0) {
        log::warn!(
            "soft BLAS: BLASLT_MATMUL with matrix order {} is not supported (column-major only)",
            l.order
        );
        return Err(Status::BLAS_NOT_SUPPORTED);
    }
    let (ar, ac, lda) = layout_dims(&d.a_layout)?;
    let (br, bc, ldb) = layout_dims(&d.b_layout)?;
    let (cr, cc, ldc) = layout_dims(&d.c_layout)?;
    let (m, n, ldd) = layout_dims(&d.d_layout)?;
    let (am, k) = if ta { (ac, ar) } else { (ar, ac) };
    let (bk, bn) = if tb { (bc, br) } else { (br, bc) };
    if am != m || bk != k || bn != n || cr != m || cc != n {
        return Err(INVALID);
    }
    let batch = d.d_layout.batch_count;
    if batch < 1 || layouts.iter().any(|l| l.batch_count != batch) {
        return Err(INVALID);
    }
    let batch = usize::try_from(batch).map_err(|_| INVALID)?;
    let (a_t, b_t, c_t, d_t) = (
        d.a_layout.data_type,
        d.b_layout.data_type,
        d.c_layout.data_type,
        d.d_layout.data_type,
    );
    if c_t != d_t {
        return Err(not_supported(
            "BLASLT_MATMUL (C and D types differ)",
            a_t,
            b_t,
            c_t,
            d.compute_type,
        ));
    }
    let plan = plan("BLASLT_MATMUL", a_t, b_t, d_t, d.compute_type, false)?;
    if d.scale_type != plan.scale.cuda() {
        log::warn!(
            "soft BLAS: BLASLT_MATMUL with compute {} and scale type {} is not supported",
            compute_type_name(d.compute_type),
            data_type_name(d.scale_type)
        );
        return Err(Status::BLAS_NOT_SUPPORTED);
    }
    let (relu, bias) = match d.epilogue {
        lt_epilogue::DEFAULT => (false, false),
        lt_epilogue::RELU => (true, false),
        lt_epilogue::BIAS => (false, true),
        lt_epilogue::RELU_BIAS => (true, true),
        e => {
            log::warn!("soft BLAS: BLASLT_MATMUL with epilogue {e} is not supported");
            return Err(Status::BLAS_NOT_SUPPORTED);
        }
    };
    if bias && d.bias == 0 {
        return Err(INVALID);
    }
    Ok(LtArgs {
        mm: MatMul { m, n, k, ta, tb },
        lda,
        ldb,
        ldc,
        ldd,
        batch,
        relu,
        bias,
        plan,
    })
}

/// BLASLT_MATMUL: `D = epilogue(alpha·op(A)·op(B) + beta·C)` using the layouts
/// (column-major order only; `BLAS_NOT_SUPPORTED` for others). The shape is D's; A, B and
/// C must agree with it and all layouts must have D's batch count (batch `i` of each
/// operand is at `ptr + i·stride` elements). Epilogues: DEFAULT, RELU, BIAS, RELU_BIAS (the
/// bias vector has D's type and m elements); others give `BLAS_NOT_SUPPORTED`. C may be D.
pub fn lt_matmul(mem: &dyn DeviceMemory, d: &LtMatmulDesc) -> Result<(), Status> {
    let args = lt_args(d)?;
    if args.mm.m == 0 || args.mm.n == 0 {
        return Ok(());
    }
    match args.plan.prec {
        Precision::F32 => lt_typed::<f32>(mem, d, &args),
        Precision::F64 => lt_typed::<f64>(mem, d, &args),
    }
}

fn lt_typed<T: Real>(mem: &dyn DeviceMemory, d: &LtMatmulDesc, g: &LtArgs) -> Result<(), Status> {
    let alpha: T = scalar(g.plan.scale, &d.alpha);
    let beta: T = scalar(g.plan.scale, &d.beta);
    let MatMul { m, n, k, ta, tb } = g.mm;
    let (ab, ce) = (g.plan.ab, g.plan.c);
    let need_ab = alpha != T::ZERO && k > 0;
    let bias: Vec<T> = if g.bias {
        Region::new(d.bias, m, 1, m, ce)?.read(mem)?
    } else {
        Vec::new()
    };
    for i in 0..g.batch {
        let d_reg = Region::new(batch_addr(d.d, i, d.stride_d, ce.size())?, m, n, g.ldd, ce)?;
        let (av, bv) = if need_ab {
            let (ar, ac) = if ta { (k, m) } else { (m, k) };
            let (br, bc) = if tb { (n, k) } else { (k, n) };
            let a = batch_addr(d.a, i, d.stride_a, ab.size())?;
            let b = batch_addr(d.b, i, d.stride_b, ab.size())?;
            (
                Region::new(a, ar, ac, g.lda, ab)?.read::<T>(mem)?,
                Region::new(b, br, bc, g.ldb, ab)?.read::<T>(mem)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let mut acc = if beta == T::ZERO {
            d_reg.probe(mem)?;
            zeros(d_reg.len)?
        } else {
            let c = batch_addr(d.c, i, d.stride_c, ce.size())?;
            Region::new(c, m, n, g.ldc, ce)?.read(mem)?
        };
        g.mm.compute(alpha, &av, &bv, beta, &mut acc)?;
        if g.bias || g.relu {
            for col in acc.chunks_exact_mut(m) {
                for (r, v) in col.iter_mut().enumerate() {
                    if g.bias {
                        *v = *v + bias[r];
                    }
                    if g.relu {
                        *v = v.relu();
                    }
                }
            }
        }
        d_reg.write(mem, &acc)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::types::Elem;
    use super::super::{compute_type, data_type};
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    struct LtCase {
        m: usize,
        n: usize,
        k: usize,
        ta: u32,
        tb: u32,
        pads: (usize, usize, usize, usize),
        batch: usize,
        stride_pad: usize,
        ab: Elem,
        cd: Elem,
        compute: u32,
        alpha: f64,
        beta: f64,
        epilogue: u32,
        in_place: bool,
        seed: u64,
    }

    fn lt_case(m: usize, n: usize, k: usize) -> LtCase {
        LtCase {
            m,
            n,
            k,
            ta: 0,
            tb: 0,
            pads: (0, 0, 0, 0),
            batch: 1,
            stride_pad: 0,
            ab: Elem::F32,
            cd: Elem::F32,
            compute: compute_type::C32F,
            alpha: 1.0,
            beta: 0.0,
            epilogue: lt_epilogue::DEFAULT,
            in_place: false,
            seed: 7,
        }
    }

    fn layout(e: Elem, rows: usize, cols: usize, ld: usize, batch: usize) -> MatrixLayout {
        MatrixLayout {
            data_type: e.cuda(),
            order: 0,
            rows: rows as u64,
            cols: cols as u64,
            ld: ld as i64,
            batch_count: batch as i32,
            rsv0: 0,
        }
    }

    fn lt_desc(a: MatrixLayout, b: MatrixLayout, c: MatrixLayout, d: MatrixLayout) -> LtMatmulDesc {
        LtMatmulDesc {
            handle: 1,
            compute_type: compute_type::C32F,
            scale_type: data_type::R_32F,
            transa: 0,
            transb: 0,
            epilogue: lt_epilogue::DEFAULT,
            rsv0: 0,
            alpha: scal(Elem::F32, 1.0),
            beta: scal(Elem::F32, 0.0),
            a: 0,
            b: 0,
            c: 0,
            d: 0,
            bias: 0,
            workspace: 0,
            workspace_size: 0,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
            stride_d: 0,
            rsv1: 0,
            a_layout: a,
            b_layout: b,
            c_layout: c,
            d_layout: d,
        }
    }

    fn run_lt_case(c: &LtCase) -> Result<(), String> {
        let mem = VecMemory::new();
        let mut rng = Rng(c.seed);
        let (ta, tb) = (c.ta != 0, c.tb != 0);
        let (ar, ac) = if ta { (c.k, c.m) } else { (c.m, c.k) };
        let (br, bc) = if tb { (c.n, c.k) } else { (c.k, c.n) };
        let lda = ar.max(1) + c.pads.0;
        let ldb = br.max(1) + c.pads.1;
        let ldd = c.m.max(1) + c.pads.3;
        let ldc = if c.in_place {
            ldd
        } else {
            c.m.max(1) + c.pads.2
        };
        let place = Placement::Strided(c.stride_pad);
        let nan = f64::NAN;
        let beta0 = c.beta == 0.0;
        let a = Mat::new(&mem, c.ab, ar, ac, lda, c.batch, place, || rng.val(), nan);
        let b = Mat::new(&mem, c.ab, br, bc, ldb, c.batch, place, || rng.val(), nan);
        let dm = Mat::new(
            &mem,
            c.cd,
            c.m,
            c.n,
            ldd,
            c.batch,
            place,
            || if beta0 { nan } else { rng.val() },
            nan,
        );
        let cm = if c.in_place {
            None
        } else {
            Some(Mat::new(
                &mem,
                c.cd,
                c.m,
                c.n,
                ldc,
                c.batch,
                place,
                || rng.val(),
                nan,
            ))
        };
        let bias_on = matches!(c.epilogue, lt_epilogue::BIAS | lt_epilogue::RELU_BIAS);
        let relu = matches!(c.epilogue, lt_epilogue::RELU | lt_epilogue::RELU_BIAS);
        let bias = Mat::new(&mem, c.cd, c.m, 1, c.m.max(1), 1, place, || rng.val(), nan);
        let cvals = cm.as_ref().unwrap_or(&dm).values(&mem);
        let (av, bv, biasv) = (a.values(&mem), b.values(&mem), bias.values(&mem).remove(0));

        let mut d = lt_desc(
            layout(c.ab, ar, ac, lda, c.batch),
            layout(c.ab, br, bc, ldb, c.batch),
            layout(c.cd, c.m, c.n, ldc, c.batch),
            layout(c.cd, c.m, c.n, ldd, c.batch),
        );
        let scale = scale_of(c.compute);
        (d.compute_type, d.scale_type) = (c.compute, scale.cuda());
        (d.transa, d.transb, d.epilogue) = (c.ta, c.tb, c.epilogue);
        d.alpha = scal(scale, c.alpha);
        d.beta = scal(scale, c.beta);
        (d.a, d.b, d.d) = (a.addrs[0], b.addrs[0], dm.addrs[0]);
        (d.stride_a, d.stride_b, d.stride_d) = (a.stride as i64, b.stride as i64, dm.stride as i64);
        match &cm {
            // With beta == 0, C is not read: pass no C at all.
            Some(cm) if !beta0 => (d.c, d.stride_c) = (cm.addrs[0], cm.stride as i64),
            Some(_) => {}
            None => (d.c, d.stride_c) = (d.d, d.stride_d),
        }
        if bias_on {
            d.bias = bias.addrs[0];
        }
        let before = mem.snapshot();
        lt_matmul(&mem, &d).map_err(|s| format!("lt_matmul failed: {s}"))?;
        only_changed(&mem, &before, &dm)?;

        for bt in 0..c.batch {
            for j in 0..c.n {
                for i in 0..c.m {
                    let (mut sum, mut abs) = (0.0, 0.0);
                    for l in 0..c.k {
                        let p = op_get(&av[bt], ar, ta, i, l) * op_get(&bv[bt], br, tb, l, j);
                        sum += p;
                        abs += p.abs();
                    }
                    let c0 = if beta0 { 0.0 } else { cvals[bt][i + j * c.m] };
                    let bi = if bias_on { biasv[i] } else { 0.0 };
                    let mut reference = c.alpha * sum + c.beta * c0 + bi;
                    if relu {
                        reference = reference.max(0.0);
                    }
                    let s = c.alpha.abs() * abs + c.beta.abs() * c0.abs() + bi.abs();
                    let tol = gemm_tol(c.k, s, reference, u_compute(c.compute), c.cd);
                    let got = dm.get(&mem, bt, i, j);
                    if !within(got - reference, tol) {
                        return Err(format!(
                            "batch {bt} D({i},{j}) = {got}, expected {reference} ± {tol}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn lt_default_transposes_and_batches() {
        for ta in 0..3 {
            for tb in 0..3 {
                let c = LtCase {
                    ta,
                    tb,
                    pads: (1, 2, 0, 3),
                    batch: 3,
                    stride_pad: 2,
                    alpha: 1.5,
                    beta: -0.5,
                    ..lt_case(5, 4, 6)
                };
                run_lt_case(&c).unwrap();
                run_lt_case(&LtCase {
                    in_place: true,
                    ..c
                })
                .unwrap();
            }
        }
    }

    #[test]
    fn lt_epilogues() {
        use lt_epilogue::*;
        for epilogue in [DEFAULT, RELU, BIAS, RELU_BIAS] {
            for beta in [0.0, 0.5] {
                run_lt_case(&LtCase {
                    epilogue,
                    beta,
                    pads: (0, 1, 2, 1),
                    ..lt_case(6, 5, 4)
                })
                .unwrap();
                let c = LtCase {
                    epilogue,
                    beta,
                    ab: Elem::F16,
                    cd: Elem::F16,
                    compute: compute_type::C16F,
                    batch: 2,
                    ..lt_case(4, 3, 9)
                };
                run_lt_case(&c).unwrap();
            }
        }
    }

    #[test]
    fn lt_types() {
        use compute_type::*;
        for (ab, cd, compute) in [
            (Elem::Bf16, Elem::Bf16, C32F),
            (Elem::Bf16, Elem::F32, C32F_FAST_16BF),
            (Elem::F16, Elem::F32, C32F),
            (Elem::F64, Elem::F64, C64F),
            (Elem::F32, Elem::F32, C32F_FAST_TF32),
        ] {
            run_lt_case(&LtCase {
                ab,
                cd,
                compute,
                beta: 1.0,
                ta: 1,
                ..lt_case(5, 6, 7)
            })
            .unwrap();
        }
        run_lt_case(&LtCase {
            k: 0,
            beta: 2.0,
            ..lt_case(3, 3, 0)
        })
        .unwrap();
        run_lt_case(&LtCase {
            alpha: 0.0,
            beta: 0.0,
            ..lt_case(3, 3, 3)
        })
        .unwrap();
    }

    #[test]
    fn lt_errors() {
        let mem = VecMemory::new();
        let l = |rows, cols, ld| layout(Elem::F32, rows, cols, ld, 1);
        let mut base = lt_desc(l(2, 3, 2), l(3, 4, 3), l(2, 4, 2), l(2, 4, 2));
        base.a = mem.alloc(24);
        base.b = mem.alloc(48);
        base.d = mem.alloc(32);
        assert_eq!(lt_matmul(&mem, &base), Ok(()));
        let invalid: Vec<Mutation<LtMatmulDesc>> = vec![
            ("transa", Box::new(|d| d.transa = 3)),
            ("k mismatch", Box::new(|d| d.b_layout.rows = 2)),
            ("m mismatch", Box::new(|d| d.transa = 1)),
            ("c shape", Box::new(|d| d.c_layout.cols = 3)),
            ("ld < rows", Box::new(|d| d.a_layout.ld = 1)),
            ("batch mismatch", Box::new(|d| d.a_layout.batch_count = 2)),
            (
                "batch 0",
                Box::new(|d| {
                    for l in [
                        &mut d.a_layout,
                        &mut d.b_layout,
                        &mut d.c_layout,
                        &mut d.d_layout,
                    ] {
                        l.batch_count = 0;
                    }
                }),
            ),
            ("bias pointer", Box::new(|d| d.epilogue = lt_epilogue::BIAS)),
            ("ld overflow", Box::new(|d| d.d_layout.ld = i64::MAX)),
        ];
        for (name, f) in invalid {
            let mut d = base;
            f(&mut d);
            assert_eq!(
                lt_matmul(&mem, &d),
                Err(Status::BLAS_INVALID_VALUE),
                "{name}"
            );
        }
        let unsupported: Vec<Mutation<LtMatmulDesc>> = vec![
            ("row order", Box::new(|d| d.a_layout.order = 1)),
            ("col32 order", Box::new(|d| d.d_layout.order = 2)),
            ("gelu", Box::new(|d| d.epilogue = 32)),
            ("bgrad", Box::new(|d| d.epilogue = 256)),
            ("scale type", Box::new(|d| d.scale_type = data_type::R_64F)),
            (
                "legacy compute",
                Box::new(|d| d.compute_type = data_type::R_32F),
            ),
            (
                "c/d types",
                Box::new(|d| d.c_layout.data_type = data_type::R_16F),
            ),
            (
                "int8",
                Box::new(|d| {
                    d.a_layout.data_type = data_type::R_8I;
                    d.b_layout.data_type = data_type::R_8I;
                    d.compute_type = compute_type::C32I;
                }),
            ),
        ];
        for (name, f) in unsupported {
            let mut d = base;
            f(&mut d);
            assert_eq!(
                lt_matmul(&mem, &d),
                Err(Status::BLAS_NOT_SUPPORTED),
                "{name}"
            );
        }
        let mut d = base;
        d.b = 0;
        assert_eq!(lt_matmul(&mem, &d), Err(Status::INVALID_VALUE));
        let mut d = base;
        d.beta = scal(Elem::F32, 1.0); // C (null) is read now
        assert_eq!(lt_matmul(&mem, &d), Err(Status::INVALID_VALUE));
        let mut d = base;
        (d.d_layout.rows, d.c_layout.rows, d.a_layout.rows) = (0, 0, 0);
        d.d = 0;
        assert_eq!(lt_matmul(&mem, &d), Ok(()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn lt_matches_f64_reference(
            (m, n, k) in (0usize..7, 0usize..7, 0usize..7),
            (ta, tb) in (0u32..3, 0u32..3),
            pads in (0usize..2, 0usize..2, 0usize..2, 0usize..2),
            (batch, stride_pad) in (1usize..3, 0usize..3),
            t in prop::sample::select(vec![0usize, 3, 4, 6, 7, 8, 10]),
            (al, be) in (0..ALPHAS.len(), 0..BETAS.len()),
            epilogue in prop::sample::select(vec![1u32, 2, 4, 6]),
            in_place in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let (ab, cd, compute) = TYPES[t];
            let c = LtCase {
                m, n, k, ta, tb, pads, batch, stride_pad, ab, cd, compute,
                alpha: ALPHAS[al], beta: BETAS[be], epilogue, in_place, seed,
            };
            if let Err(e) = run_lt_case(&c) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
