//! The BLAS commands' operands, checked before cuBLAS sees them: types cuBLAS takes,
//! dimensions within its `int`s, leading dimensions, and every matrix (every batch) inside
//! the PD's own memory ([`Ranges`]).

use super::api::{GemmCall, LtCall, LtMatrix, TrsmCall};
use super::ranges::Ranges;
use vgpu_proto::payload::{GemmDesc, LtMatmulDesc, MatrixLayout, TrsmBatchedDesc};
use vgpu_proto::Status;

/// Bytes per element of a `cudaDataType` cuBLAS takes, None for those vgpu does not pass.
pub fn data_type_size(t: u32) -> Option<u64> {
    Some(match t {
        0 => 4,       // CUDA_R_32F
        1 => 8,       // CUDA_R_64F
        2 | 14 => 2,  // CUDA_R_16F, CUDA_R_16BF
        3 | 8 => 1,   // CUDA_R_8I, CUDA_R_8U
        10 | 12 => 4, // CUDA_R_32I, CUDA_R_32U
        4 => 8,       // CUDA_C_32F
        5 => 16,      // CUDA_C_64F
        _ => return None,
    })
}

/// Most matrices a batched command may name by pointer array on the cuda executor: the
/// arrays are read into host memory and copied into the executor's own device memory, so
/// their size is bounded (8 MiB each).
pub const MAX_POINTER_BATCH: usize = 1 << 20;

/// Bytes of a pointer array of `batch` entries; BLAS_NOT_SUPPORTED past
/// [`MAX_POINTER_BATCH`].
pub fn pointer_array_bytes(batch: usize) -> Result<u64, Status> {
    if batch > MAX_POINTER_BATCH {
        log::warn!(
            "a batched BLAS command names {batch} matrices by pointer array; the cuda executor takes at most {MAX_POINTER_BATCH}"
        );
        return Err(Status::BLAS_NOT_SUPPORTED);
    }
    Ok(batch as u64 * 8)
}

fn bad(what: &str) -> Status {
    log::warn!("BLAS command refused: {what}");
    Status::BLAS_INVALID_VALUE
}

fn int(v: i64, what: &str) -> Result<i32, Status> {
    i32::try_from(v).map_err(|_| bad(what))
}

fn transposed(op: u32) -> Result<bool, Status> {
    match op {
        0 => Ok(false),
        1 | 2 => Ok(true),
        _ => Err(bad("transpose")),
    }
}

/// Bytes from the first element of a column-major `rows × cols` matrix with leading
/// dimension `ld` to one past its last.
fn matrix_bytes(rows: i64, cols: i64, ld: i64, es: u64) -> Result<u64, Status> {
    if ld < rows.max(1) {
        return Err(bad("leading dimension"));
    }
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    (cols - 1)
        .checked_mul(ld)
        .and_then(|v| v.checked_add(rows))
        .and_then(|v| (v as u64).checked_mul(es))
        .ok_or_else(|| bad("size"))
}

/// Bytes of `batch` matrices of `one` bytes, `stride` elements apart.
fn strided_bytes(one: u64, batch: i32, stride: i64, es: u64) -> Result<u64, Status> {
    if batch > 1 && stride < 0 {
        return Err(bad("negative stride"));
    }
    (i64::from(batch) - 1)
        .checked_mul(stride)
        .and_then(|v| (v as u64).checked_mul(es))
        .and_then(|v| v.checked_add(one))
        .ok_or_else(|| bad("size"))
}

/// A GEMM's dimensions and the bytes each of its matrices spans.
#[derive(Debug)]
pub struct GemmShape {
    m: i32,
    n: i32,
    k: i32,
    pub batch: i32,
    ab: u64,
    cs: u64,
    /// Bytes of one A, one B (0 when k = 0: not read) and one C.
    a_bytes: u64,
    b_bytes: u64,
    c_bytes: u64,
    lda: i32,
    ldb: i32,
    ldc: i32,
}

/// The shape of a BLAS_GEMM or BLAS_GEMM_BATCHED; None when there is nothing to compute.
pub fn gemm_shape(d: &GemmDesc) -> Result<Option<GemmShape>, Status> {
    let (m, n, k) = (int(d.m, "m")?, int(d.n, "n")?, int(d.k, "k")?);
    let batch = int(d.batch_count, "batch_count")?;
    let ab = data_type_size(d.a_type).ok_or_else(|| bad("A type"))?;
    if d.b_type != d.a_type {
        return Err(bad("A and B types differ"));
    }
    let cs = data_type_size(d.c_type).ok_or_else(|| bad("C type"))?;
    let (ta, tb) = (transposed(d.transa)?, transposed(d.transb)?);
    let (m64, n64, k64) = (i64::from(m), i64::from(n), i64::from(k));
    let (ar, ac) = if ta { (k64, m64) } else { (m64, k64) };
    let (br, bc) = if tb { (n64, k64) } else { (k64, n64) };
    let shape = GemmShape {
        m,
        n,
        k,
        batch,
        ab,
        cs,
        a_bytes: matrix_bytes(ar, ac, d.lda, ab)?,
        b_bytes: matrix_bytes(br, bc, d.ldb, ab)?,
        c_bytes: matrix_bytes(m64, n64, d.ldc, cs)?,
        lda: int(d.lda, "lda")?,
        ldb: int(d.ldb, "ldb")?,
        ldc: int(d.ldc, "ldc")?,
    };
    Ok((m != 0 && n != 0 && batch != 0).then_some(shape))
}

impl GemmShape {
    /// Checks the matrices of a strided (or single) GEMM.
    pub fn check_strided(&self, d: &GemmDesc, ranges: &Ranges) -> Result<(), Status> {
        if self.k > 0 {
            let a = strided_bytes(self.a_bytes, self.batch, d.stride_a, self.ab)?;
            let b = strided_bytes(self.b_bytes, self.batch, d.stride_b, self.ab)?;
            ranges.check(d.a, a)?;
            ranges.check(d.b, b)?;
        }
        ranges.check(
            d.c,
            strided_bytes(self.c_bytes, self.batch, d.stride_c, self.cs)?,
        )
    }

    /// Checks the matrices a batched GEMM's pointer arrays name.
    pub fn check_pointers(
        &self,
        a: &[u64],
        b: &[u64],
        c: &[u64],
        ranges: &Ranges,
    ) -> Result<(), Status> {
        for i in 0..self.batch as usize {
            if self.k > 0 {
                ranges.check(a[i], self.a_bytes)?;
                ranges.check(b[i], self.b_bytes)?;
            }
            ranges.check(c[i], self.c_bytes)?;
        }
        Ok(())
    }

    /// The cuBLAS call with operands (or pointer arrays) `a`, `b`, `c`.
    pub fn call<'a>(&self, d: &'a GemmDesc, a: u64, b: u64, c: u64) -> GemmCall<'a> {
        GemmCall {
            transa: d.transa as i32,
            transb: d.transb as i32,
            m: self.m,
            n: self.n,
            k: self.k,
            alpha: &d.alpha,
            a,
            a_type: d.a_type as i32,
            lda: self.lda,
            stride_a: d.stride_a,
            b,
            b_type: d.b_type as i32,
            ldb: self.ldb,
            stride_b: d.stride_b,
            beta: &d.beta,
            c,
            c_type: d.c_type as i32,
            ldc: self.ldc,
            stride_c: d.stride_c,
            batch: self.batch,
            compute_type: d.compute_type as i32,
            algo: d.algo,
        }
    }
}

/// A batched TRSM's dimensions and the bytes its matrices span.
#[derive(Debug)]
pub struct TrsmShape {
    m: i32,
    n: i32,
    pub batch: i32,
    lda: i32,
    ldb: i32,
    a_bytes: u64,
    b_bytes: u64,
}

/// The shape of a BLAS_TRSM_BATCHED; None when there is nothing to solve.
pub fn trsm_shape(t: &TrsmBatchedDesc) -> Result<Option<TrsmShape>, Status> {
    let es = match t.data_type {
        0 => 4,
        1 => 8,
        _ => return Err(bad("TRSM data type")),
    };
    let (m, n) = (int(t.m, "m")?, int(t.n, "n")?);
    let batch = int(t.batch_count, "batch_count")?;
    transposed(t.trans)?;
    let side = if t.side == 0 { t.m } else { t.n };
    let shape = TrsmShape {
        m,
        n,
        batch,
        lda: int(t.lda, "lda")?,
        ldb: int(t.ldb, "ldb")?,
        a_bytes: matrix_bytes(side, side, t.lda, es)?,
        b_bytes: matrix_bytes(t.m, t.n, t.ldb, es)?,
    };
    Ok((m != 0 && n != 0 && batch != 0).then_some(shape))
}

impl TrsmShape {
    /// Checks the matrices the pointer arrays name.
    pub fn check_pointers(&self, a: &[u64], b: &[u64], ranges: &Ranges) -> Result<(), Status> {
        for i in 0..self.batch as usize {
            ranges.check(a[i], self.a_bytes)?;
            ranges.check(b[i], self.b_bytes)?;
        }
        Ok(())
    }

    /// The cuBLAS call with pointer arrays `a` and `b`.
    pub fn call<'a>(&self, t: &'a TrsmBatchedDesc, a: u64, b: u64) -> TrsmCall<'a> {
        TrsmCall {
            double: t.data_type == 1,
            side: t.side as i32,
            uplo: t.uplo as i32,
            trans: t.trans as i32,
            diag: t.diag as i32,
            m: self.m,
            n: self.n,
            alpha: &t.alpha,
            a,
            lda: self.lda,
            b,
            ldb: self.ldb,
            batch: self.batch,
        }
    }
}

/// `cublasLtEpilogue_t` values vgpu passes: DEFAULT, RELU, BIAS, RELU_BIAS.
const LT_EPILOGUES: [u32; 4] = [1, 2, 4, 6];

/// The cuBLASLt call for a BLASLT_MATMUL whose matrices (every batch), bias and workspace
/// lie in the PD's memory; None when D is empty.
pub fn lt_call<'a>(d: &'a LtMatmulDesc, ranges: &Ranges) -> Result<Option<LtCall<'a>>, Status> {
    let layouts = [&d.a_layout, &d.b_layout, &d.c_layout, &d.d_layout];
    if layouts.iter().any(|l| l.order != 0) {
        log::warn!("BLASLT_MATMUL with a row-major or tiled layout is not supported");
        return Err(Status::BLAS_NOT_SUPPORTED);
    }
    if !LT_EPILOGUES.contains(&d.epilogue) {
        log::warn!(
            "BLASLT_MATMUL with epilogue {} is not supported",
            d.epilogue
        );
        return Err(Status::BLAS_NOT_SUPPORTED);
    }
    let dim = |v: u64, what: &str| i64::try_from(v).map_err(|_| bad(what));
    let (ta, tb) = (transposed(d.transa)?, transposed(d.transb)?);
    let (m, n) = (dim(d.d_layout.rows, "rows")?, dim(d.d_layout.cols, "cols")?);
    let (ar, ac) = (dim(d.a_layout.rows, "rows")?, dim(d.a_layout.cols, "cols")?);
    let (br, bc) = (dim(d.b_layout.rows, "rows")?, dim(d.b_layout.cols, "cols")?);
    let (am, k) = if ta { (ac, ar) } else { (ar, ac) };
    let (bk, bn) = if tb { (bc, br) } else { (br, bc) };
    let (cr, cc) = (dim(d.c_layout.rows, "rows")?, dim(d.c_layout.cols, "cols")?);
    if am != m || bk != k || bn != n || cr != m || cc != n {
        return Err(bad("matrix shapes disagree"));
    }
    let batch = d.d_layout.batch_count;
    if layouts.iter().any(|l| l.batch_count != batch) {
        return Err(bad("batch counts disagree"));
    }
    if m == 0 || n == 0 {
        return Ok(None);
    }
    let strides = [d.stride_a, d.stride_b, d.stride_c, d.stride_d];
    let ptrs = [d.a, d.b, d.c, d.d];
    let mut mats = Vec::with_capacity(4);
    for (i, ((l, stride), ptr)) in layouts.iter().zip(strides).zip(ptrs).enumerate() {
        let es = data_type_size(l.data_type).ok_or_else(|| bad("data type"))?;
        let (rows, cols) = (dim(l.rows, "rows")?, dim(l.cols, "cols")?);
        let one = matrix_bytes(rows, cols, l.ld, es)?;
        // A and B are not read when k = 0.
        if k > 0 || i >= 2 {
            ranges.check(ptr, strided_bytes(one, batch, stride, es)?)?;
        }
        mats.push(matrix(l, ptr, stride));
    }
    let bias = if d.epilogue == 4 || d.epilogue == 6 {
        let es = data_type_size(d.d_layout.data_type).ok_or_else(|| bad("data type"))?;
        if d.bias == 0 {
            return Err(bad("no bias vector"));
        }
        ranges.check(
            d.bias,
            (m as u64).checked_mul(es).ok_or_else(|| bad("size"))?,
        )?;
        d.bias
    } else {
        0
    };
    let workspace = if d.workspace != 0 && d.workspace_size != 0 {
        ranges.check(d.workspace, d.workspace_size)?;
        Some((d.workspace, d.workspace_size))
    } else {
        None
    };
    let [a, b, c, dd]: [LtMatrix; 4] = mats.try_into().map_err(|_| bad("layouts"))?;
    Ok(Some(LtCall {
        compute_type: d.compute_type as i32,
        scale_type: d.scale_type as i32,
        transa: d.transa as i32,
        transb: d.transb as i32,
        epilogue: d.epilogue,
        bias,
        alpha: &d.alpha,
        beta: &d.beta,
        m: [a, b, c, dd],
        workspace,
    }))
}

fn matrix(l: &MatrixLayout, ptr: u64, stride: i64) -> LtMatrix {
    LtMatrix {
        ptr,
        data_type: l.data_type as i32,
        rows: l.rows,
        cols: l.cols,
        ld: l.ld,
        batch: l.batch_count,
        stride,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc() -> GemmDesc {
        let mut d: GemmDesc = bytemuck::Zeroable::zeroed();
        d.handle = 1;
        (d.m, d.n, d.k) = (4, 3, 2);
        (d.a, d.lda) = (0x1000, 4);
        (d.b, d.ldb) = (0x2000, 2);
        (d.c, d.ldc) = (0x3000, 4);
        d.batch_count = 1;
        d
    }

    fn ranges() -> Ranges {
        let mut r = Ranges::new(1 << 20);
        r.add_alloc(0x1000, 4 * 2 * 4);
        r.add_alloc(0x2000, 2 * 3 * 4);
        r.add_alloc(0x3000, 4 * 3 * 4);
        r
    }

    fn check(d: &GemmDesc) -> Result<(), Status> {
        match gemm_shape(d)? {
            Some(s) => s.check_strided(d, &ranges()),
            None => Ok(()),
        }
    }

    #[test]
    fn gemm_operands_must_lie_in_the_pds_memory() {
        assert_eq!(check(&desc()), Ok(()));
        let mut d = desc();
        d.ldc = 5; // C now runs 4 bytes past its allocation
        assert_eq!(check(&d), Err(Status::INVALID_VALUE));
        let mut d = desc();
        d.transa = 1; // op(A) = Aᵀ: 2×4 stored, lda ≥ 2
        d.lda = 2;
        assert_eq!(check(&d), Ok(()));
        let mut d = desc();
        d.batch_count = 2;
        d.stride_c = 12; // the second C lies outside
        assert_eq!(check(&d), Err(Status::INVALID_VALUE));
        let mut d = desc();
        d.b = 0x9000; // memory of no PD
        assert_eq!(check(&d), Err(Status::INVALID_VALUE));
        let mut d = desc();
        d.lda = 3; // below m
        assert_eq!(check(&d), Err(Status::BLAS_INVALID_VALUE));
        let mut d = desc();
        d.m = 1 << 40; // past cuBLAS's int
        assert_eq!(check(&d), Err(Status::BLAS_INVALID_VALUE));
        let mut d = desc();
        d.a_type = 77;
        assert_eq!(check(&d), Err(Status::BLAS_INVALID_VALUE));
        let mut d = desc();
        (d.k, d.a, d.b) = (0, 0, 0); // A and B are not read
        assert_eq!(check(&d), Ok(()));
    }

    #[test]
    fn batched_pointers_are_each_checked() {
        let mut d = desc();
        d.batch_count = 2;
        let s = gemm_shape(&d).unwrap().unwrap();
        let r = ranges();
        let (a, b) = ([0x1000, 0x1000], [0x2000, 0x2000]);
        assert_eq!(s.check_pointers(&a, &b, &[0x3000, 0x3000], &r), Ok(()));
        assert_eq!(
            s.check_pointers(&a, &b, &[0x3000, 0x3004], &r),
            Err(Status::INVALID_VALUE),
            "the second C runs past"
        );
    }

    #[test]
    fn pointer_arrays_are_bounded() {
        assert_eq!(pointer_array_bytes(3), Ok(24));
        assert_eq!(pointer_array_bytes(MAX_POINTER_BATCH), Ok(8 << 20));
        assert_eq!(
            pointer_array_bytes(i32::MAX as usize),
            Err(Status::BLAS_NOT_SUPPORTED),
            "2^31 pointers would be 16 GiB of host memory"
        );
    }

    #[test]
    fn trsm_operands_must_lie_in_the_pds_memory() {
        let mut t: TrsmBatchedDesc = bytemuck::Zeroable::zeroed();
        (t.handle, t.m, t.n, t.lda, t.ldb, t.batch_count) = (1, 2, 3, 2, 2, 1);
        let s = trsm_shape(&t).unwrap().unwrap();
        let mut r = Ranges::new(1 << 20);
        r.add_alloc(0x1000, 16);
        r.add_alloc(0x2000, 24);
        assert_eq!(s.check_pointers(&[0x1000], &[0x2000], &r), Ok(()));
        t.side = 1; // right: A is n×n = 3×3, lda 2 < 3
        assert_eq!(trsm_shape(&t).err(), Some(Status::BLAS_INVALID_VALUE));
        t.lda = 3;
        let s = trsm_shape(&t).unwrap().unwrap();
        assert_eq!(
            s.check_pointers(&[0x1000], &[0x2000], &r),
            Err(Status::INVALID_VALUE),
            "a 3×3 A does not fit 16 bytes"
        );
    }
}
