//! Argument checks and type plans: the checks of operations, dimensions, leading
//! dimensions and batch addresses, and the choice of arithmetic for a type combination
//! (the table in the module doc).

use vgpu_proto::payload::blas_op;
use vgpu_proto::Status;

use super::types::{compute_type_name, data_type_name, Elem};
use super::{compute_type, data_type};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Precision {
    F32,
    F64,
}

/// How one GEMM is computed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub(super) prec: Precision,
    /// Type of alpha and beta.
    pub(super) scale: Elem,
    /// Type of A and B.
    pub(super) ab: Elem,
    /// Type of C (and D).
    pub(super) c: Elem,
}

pub(super) fn not_supported(what: &str, a: u32, b: u32, c: u32, compute: u32) -> Status {
    log::warn!(
        "soft BLAS: {what} with A {}, B {}, C {} and compute {} is not supported",
        data_type_name(a),
        data_type_name(b),
        data_type_name(c),
        compute_type_name(compute)
    );
    Status::BLAS_NOT_SUPPORTED
}

/// Chooses the arithmetic for a type combination (see the table in the module doc of
/// [`super`]).
pub(super) fn plan(
    what: &str,
    a_type: u32,
    b_type: u32,
    c_type: u32,
    compute: u32,
    allow_legacy: bool,
) -> Result<Plan, Status> {
    use compute_type::*;
    let fail = || not_supported(what, a_type, b_type, c_type, compute);
    let (prec, scale) = match compute {
        C32F | C32F_PEDANTIC | C32F_FAST_16F | C32F_FAST_16BF | C32F_FAST_TF32 => {
            (Precision::F32, Elem::F32)
        }
        C16F | C16F_PEDANTIC => (Precision::F32, Elem::F16),
        C64F | C64F_PEDANTIC => (Precision::F64, Elem::F64),
        data_type::R_32F if allow_legacy => (Precision::F32, Elem::F32),
        data_type::R_16F if allow_legacy => (Precision::F32, Elem::F16),
        data_type::R_64F if allow_legacy => (Precision::F64, Elem::F64),
        _ => return Err(fail()),
    };
    let (Some(a), Some(b), Some(c)) = (
        Elem::from_cuda(a_type),
        Elem::from_cuda(b_type),
        Elem::from_cuda(c_type),
    ) else {
        return Err(fail());
    };
    let ok = a == b
        && match scale {
            Elem::F32 => matches!(
                (a, c),
                (Elem::F32, Elem::F32)
                    | (Elem::F16, Elem::F16)
                    | (Elem::F16, Elem::F32)
                    | (Elem::Bf16, Elem::Bf16)
                    | (Elem::Bf16, Elem::F32)
            ),
            Elem::F16 => a == Elem::F16 && c == Elem::F16,
            Elem::F64 => a == Elem::F64 && c == Elem::F64,
            Elem::Bf16 => false,
        };
    if !ok {
        return Err(fail());
    }
    Ok(Plan {
        prec,
        scale,
        ab: a,
        c,
    })
}

pub(super) const INVALID: Status = Status::BLAS_INVALID_VALUE;

/// `cublasOperation_t` → transposed? (C is T for real types.)
pub(super) fn transposed(op: u32) -> Result<bool, Status> {
    match op {
        blas_op::N => Ok(false),
        blas_op::T | blas_op::C => Ok(true),
        _ => Err(INVALID),
    }
}

/// A non-negative dimension.
pub(super) fn dim(v: i64) -> Result<usize, Status> {
    usize::try_from(v).map_err(|_| INVALID)
}

/// A leading dimension, which must be at least `max(1, rows)`.
pub(super) fn lead(ld: i64, rows: usize) -> Result<usize, Status> {
    let ld = usize::try_from(ld).map_err(|_| INVALID)?;
    if ld < rows.max(1) {
        return Err(INVALID);
    }
    Ok(ld)
}

/// `base + i·stride` elements of `es` bytes, as a device address.
pub(super) fn batch_addr(base: u64, i: usize, stride: i64, es: usize) -> Result<u64, Status> {
    let off = i128::try_from(i)
        .ok()
        .and_then(|i| i.checked_mul(i128::from(stride)))
        .and_then(|o| o.checked_mul(es as i128))
        .and_then(|o| o.checked_add(i128::from(base)))
        .ok_or(INVALID)?;
    u64::try_from(off).map_err(|_| INVALID)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{compute_type, data_type, gemm, gemm_batched};
    use vgpu_proto::payload::GemmDesc;
    use vgpu_proto::Status;

    #[test]
    fn invalid_arguments() {
        let mem = VecMemory::new();
        let base = small(&mem);
        assert_eq!(gemm(&mem, &base), Ok(()));
        let cases: Vec<Mutation<GemmDesc>> = vec![
            ("transa", Box::new(|d| d.transa = 3)),
            ("transb", Box::new(|d| d.transb = 7)),
            ("m", Box::new(|d| d.m = -1)),
            ("n", Box::new(|d| d.n = -1)),
            ("k", Box::new(|d| d.k = -1)),
            ("batch", Box::new(|d| d.batch_count = -1)),
            ("lda", Box::new(|d| d.lda = 1)),
            ("lda 0", Box::new(|d| d.lda = 0)),
            ("lda T", Box::new(|d| (d.transa, d.m, d.lda) = (1, 4, 1))),
            ("ldb", Box::new(|d| d.ldb = 1)),
            (
                "ldb T",
                Box::new(|d| (d.transb, d.n, d.ldb, d.ldc) = (1, 3, 2, 2)),
            ),
            ("ldc", Box::new(|d| d.ldc = 1)),
            ("ldc m0", Box::new(|d| (d.m, d.ldc, d.lda) = (0, 0, 1))),
            ("lda overflow", Box::new(|d| d.lda = i64::MAX / 2)),
            ("ldc overflow", Box::new(|d| d.ldc = i64::MAX)),
            ("address overflow", Box::new(|d| d.c = u64::MAX - 8)),
            (
                "stride overflow",
                Box::new(|d| (d.batch_count, d.stride_a) = (2, i64::MAX)),
            ),
            (
                "negative address",
                Box::new(|d| (d.batch_count, d.stride_b) = (2, -(1 << 50))),
            ),
        ];
        for (name, f) in cases {
            let mut d = base;
            f(&mut d);
            assert_eq!(gemm(&mem, &d), Err(Status::BLAS_INVALID_VALUE), "{name}");
        }
        let mut d = base;
        d.m = -1;
        assert_eq!(gemm_batched(&mem, &d), Err(Status::BLAS_INVALID_VALUE));
    }

    #[test]
    fn unsupported_type_combinations() {
        use compute_type::*;
        use data_type::*;
        let mem = VecMemory::new();
        let base = small(&mem);
        let combos = [
            (R_8I, R_8I, R_32I, C32I),
            (R_8I, R_8I, R_32F, C32F),
            (C_32F, C_32F, C_32F, C32F),
            (C_64F, C_64F, C_64F, C64F),
            (R_16F, R_16BF, R_32F, C32F), // A and B differ
            (R_32F, R_32F, R_16F, C32F),  // f32 inputs, f16 output
            (R_32F, R_32F, R_32F, C16F),  // f32 with 16F compute
            (R_16F, R_16F, R_32F, C16F),  // 16F compute needs f16 C
            (R_16BF, R_16BF, R_16BF, C16F),
            (R_64F, R_64F, R_64F, C32F),
            (R_32F, R_32F, R_32F, C64F),
            (R_16F, R_16F, R_16BF, C32F),
            (R_32F, R_32F, R_32F, 999),
            (R_32F, R_32F, R_32F, R_8I), // legacy value that is no compute type
            (99, 99, 99, C32F),
        ];
        for (a, b, c, comp) in combos {
            let mut d = base;
            (d.a_type, d.b_type, d.c_type, d.compute_type) = (a, b, c, comp);
            assert_eq!(
                gemm(&mem, &d),
                Err(Status::BLAS_NOT_SUPPORTED),
                "{a} {b} {c} {comp}"
            );
            assert_eq!(gemm_batched(&mem, &d), Err(Status::BLAS_NOT_SUPPORTED));
        }
    }
}
