//! Structured payloads (spec §6): the fixed-layout structures that open (or make up) a
//! command's payload. Each is validated as strictly as the arguments are.

use crate::abi_struct;
use crate::cmd::{args_impl, Args};
use crate::error::{read_pod, DecodeError};

fn ensure(cond: bool, field: &'static str) -> Result<(), DecodeError> {
    if cond {
        Ok(())
    } else {
        Err(DecodeError::BadPayload(field))
    }
}

/// Reads and validates a structured payload from the front of `bytes`.
pub fn decode_payload<T: Args>(bytes: &[u8]) -> Result<T, DecodeError> {
    let v: T = read_pod(bytes)?;
    v.check().map_err(|e| match e {
        DecodeError::BadArgument(f) => DecodeError::BadPayload(f),
        other => other,
    })?;
    Ok(v)
}

/// Reads `count` launch attributes from the front of `bytes`.
pub fn decode_launch_attrs(bytes: &[u8], count: u16) -> Result<Vec<LaunchAttr>, DecodeError> {
    let size = core::mem::size_of::<LaunchAttr>();
    (0..usize::from(count))
        .map(|i| decode_payload::<LaunchAttr>(bytes.get(i * size..).unwrap_or(&[])))
        .collect()
}

/// Launch attribute ids (`CUlaunchAttributeID`) the ABI defines.
pub mod launch_attr {
    /// `CU_LAUNCH_ATTRIBUTE_COOPERATIVE`: v0 = 0 or 1.
    pub const COOPERATIVE: u32 = 2;
    /// `CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION`: v0, v1, v2 = cluster x, y, z.
    pub const CLUSTER_DIMENSION: u32 = 4;
    /// `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION`: v0 = 0 or 1.
    pub const PROGRAMMATIC_STREAM_SERIALIZATION: u32 = 6;
    /// `CU_LAUNCH_ATTRIBUTE_PRIORITY`: v0 = priority (i32 bits).
    pub const PRIORITY: u32 = 8;
    /// Largest id the ABI accepts; executors return NOT_SUPPORTED for ids they ignore.
    pub const MAX_ID: u32 = 32;
}

abi_struct! {
    /// One launch attribute: an id and up to three 32-bit values.
    LaunchAttr [16] { id: u32, v0: u32, v1: u32, v2: u32 } reserved []
}
args_impl!(LaunchAttr, |s| {
    ensure(s.id != 0 && s.id <= launch_attr::MAX_ID, "attr.id")
});

/// Direction of a 2-D copy.
pub mod copy_kind {
    /// Window to device.
    pub const HTOD: u32 = 1;
    /// Device to window.
    pub const DTOH: u32 = 2;
    /// Device to device.
    pub const DTOD: u32 = 3;
}

abi_struct! {
    /// MEMCPY_2D: `height` rows of `width` bytes. A host side names a window and an offset
    /// in it; a device side has window 0 and a device address.
    Copy2D [64] {
        kind: u32,
        src_window: u32,
        src: u64,
        src_pitch: u64,
        dst_window: u32,
        rsv0: u32,
        dst: u64,
        dst_pitch: u64,
        width: u64,
        height: u64,
    } reserved [rsv0]
}
args_impl!(Copy2D, |s| {
    let (src_host, dst_host) = match s.kind {
        copy_kind::HTOD => (true, false),
        copy_kind::DTOH => (false, true),
        copy_kind::DTOD => (false, false),
        _ => return Err(DecodeError::BadPayload("kind")),
    };
    ensure((s.src_window != 0) == src_host, "src_window")?;
    ensure((s.dst_window != 0) == dst_host, "dst_window")?;
    ensure(s.width != 0 && s.height != 0, "width")?;
    ensure(
        s.height == 1 || (s.src_pitch >= s.width && s.dst_pitch >= s.width),
        "pitch",
    )?;
    // The last byte touched on each side must be addressable.
    let span = |pitch: u64| {
        (s.height - 1)
            .checked_mul(pitch)
            .and_then(|v| v.checked_add(s.width))
    };
    ensure(
        span(s.src_pitch)
            .and_then(|v| v.checked_add(s.src))
            .is_some(),
        "src",
    )?;
    ensure(
        span(s.dst_pitch)
            .and_then(|v| v.checked_add(s.dst))
            .is_some(),
        "dst",
    )
});

abi_struct! {
    /// MEMSET_2D: `height` rows of `width` elements of `elem_size` bytes.
    Memset2D [48] {
        dst: u64,
        pitch: u64,
        width: u64,
        height: u64,
        value: u32,
        elem_size: u32,
        rsv: u64,
    } reserved [rsv]
}
args_impl!(Memset2D, |s| {
    ensure(matches!(s.elem_size, 1 | 2 | 4), "elem_size")?;
    ensure(
        s.elem_size == 4 || s.value >> (8 * s.elem_size) == 0,
        "value",
    )?;
    ensure(s.width != 0 && s.height != 0, "width")?;
    let row = s.width.checked_mul(u64::from(s.elem_size));
    ensure(row.is_some_and(|r| s.height == 1 || s.pitch >= r), "pitch")?;
    let span = row.and_then(|r| {
        (s.height - 1)
            .checked_mul(s.pitch)
            .and_then(|v| v.checked_add(r))
    });
    ensure(span.and_then(|v| v.checked_add(s.dst)).is_some(), "dst")
});

abi_struct! {
    /// Opens a MODULE_LOAD payload; `image_len` bytes of image follow it (none with
    /// BY_HASH). The image is a fatbin (one or more containers), an ELF cubin or PTX text.
    ModuleImageHeader [48] {
        /// SHA-256 of the image bytes.
        sha256: [u8; 32],
        image_len: u64,
        rsv: u64,
    } reserved [rsv]
}
args_impl!(ModuleImageHeader);

/// `cublasOperation_t`.
pub mod blas_op {
    /// `CUBLAS_OP_N`.
    pub const N: u32 = 0;
    /// `CUBLAS_OP_T`.
    pub const T: u32 = 1;
    /// `CUBLAS_OP_C`.
    pub const C: u32 = 2;
}

/// `cudaDataType` values the BLAS descriptors use.
pub mod data_type {
    /// `CUDA_R_32F`.
    pub const R_32F: u32 = 0;
    /// `CUDA_R_64F`.
    pub const R_64F: u32 = 1;
    /// `CUDA_R_16F`.
    pub const R_16F: u32 = 2;
    /// `CUDA_R_8I`.
    pub const R_8I: u32 = 3;
    /// `CUDA_C_32F`.
    pub const C_32F: u32 = 4;
    /// `CUDA_C_64F`.
    pub const C_64F: u32 = 5;
    /// `CUDA_C_16F`.
    pub const C_16F: u32 = 6;
    /// `CUDA_C_8I`.
    pub const C_8I: u32 = 7;
    /// `CUDA_R_8U`.
    pub const R_8U: u32 = 8;
    /// `CUDA_R_32I`.
    pub const R_32I: u32 = 10;
    /// `CUDA_R_16BF`.
    pub const R_16BF: u32 = 14;
}

/// `cublasComputeType_t` values.
pub mod compute_type {
    /// `CUBLAS_COMPUTE_16F`.
    pub const C16F: u32 = 64;
    /// `CUBLAS_COMPUTE_16F_PEDANTIC`.
    pub const C16F_PEDANTIC: u32 = 65;
    /// `CUBLAS_COMPUTE_32F`.
    pub const C32F: u32 = 68;
    /// `CUBLAS_COMPUTE_32F_PEDANTIC`.
    pub const C32F_PEDANTIC: u32 = 69;
    /// `CUBLAS_COMPUTE_64F`.
    pub const C64F: u32 = 70;
    /// `CUBLAS_COMPUTE_64F_PEDANTIC`.
    pub const C64F_PEDANTIC: u32 = 71;
    /// `CUBLAS_COMPUTE_32I` (not supported here).
    pub const C32I: u32 = 72;
    /// `CUBLAS_COMPUTE_32I_PEDANTIC` (not supported here).
    pub const C32I_PEDANTIC: u32 = 73;
    /// `CUBLAS_COMPUTE_32F_FAST_16F`.
    pub const C32F_FAST_16F: u32 = 74;
    /// `CUBLAS_COMPUTE_32F_FAST_16BF`.
    pub const C32F_FAST_16BF: u32 = 75;
    /// `CUBLAS_COMPUTE_32F_FAST_TF32`.
    pub const C32F_FAST_TF32: u32 = 77;
}

abi_struct! {
    /// BLAS_GEMM and BLAS_GEMM_BATCHED (column-major, as cuBLAS):
    /// `C[i] = alpha * op(A[i]) * op(B[i]) + beta * C[i]` for `i < batch_count`.
    /// For BLAS_GEMM, `A[i] = a + i * stride_a` elements (likewise B, C); for
    /// BLAS_GEMM_BATCHED, `a`, `b`, `c` are device arrays of `batch_count` pointers and the
    /// strides must be 0. Types are `cudaDataType`; `compute_type` is a
    /// `cublasComputeType_t` (or a legacy `cudaDataType`); `alpha`/`beta` hold one scalar of
    /// the scale type implied by the compute type, little-endian, zero-padded.
    GemmDesc [192] {
        handle: u64,
        transa: u32,
        transb: u32,
        m: i64,
        n: i64,
        k: i64,
        a: u64,
        lda: i64,
        stride_a: i64,
        b: u64,
        ldb: i64,
        stride_b: i64,
        c: u64,
        ldc: i64,
        stride_c: i64,
        batch_count: i64,
        a_type: u32,
        b_type: u32,
        c_type: u32,
        compute_type: u32,
        algo: i32,
        math_mode: u32,
        alpha: [u8; 16],
        beta: [u8; 16],
        workspace: u64,
        workspace_size: u64,
    } reserved []
}
args_impl!(GemmDesc, |s| {
    ensure(s.handle != 0, "handle")?;
    ensure(s.transa <= blas_op::C, "transa")?;
    ensure(s.transb <= blas_op::C, "transb")?;
    ensure(s.m >= 0 && s.n >= 0 && s.k >= 0, "dims")?;
    ensure(s.lda >= 1 && s.ldb >= 1 && s.ldc >= 1, "ld")?;
    ensure(s.batch_count >= 1, "batch_count")
});

abi_struct! {
    /// BLAS_TRSM_BATCHED: solves `op(A[i]) X = alpha B[i]` (side left) or
    /// `X op(A[i]) = alpha B[i]` (side right) in place in `B[i]`; `a` and `b` are device
    /// arrays of pointers. `data_type` is `CUDA_R_32F` or `CUDA_R_64F`.
    TrsmBatchedDesc [104] {
        handle: u64,
        side: u32,
        uplo: u32,
        trans: u32,
        diag: u32,
        m: i64,
        n: i64,
        a: u64,
        lda: i64,
        b: u64,
        ldb: i64,
        batch_count: i64,
        data_type: u32,
        rsv0: u32,
        alpha: [u8; 16],
    } reserved [rsv0]
}
args_impl!(TrsmBatchedDesc, |s| {
    ensure(s.handle != 0, "handle")?;
    ensure(s.side <= 1 && s.uplo <= 1 && s.diag <= 1, "mode")?;
    ensure(s.trans <= blas_op::C, "trans")?;
    ensure(s.m >= 0 && s.n >= 0, "dims")?;
    ensure(s.lda >= 1 && s.ldb >= 1, "ld")?;
    ensure(s.batch_count >= 1, "batch_count")
});

abi_struct! {
    /// A cuBLASLt matrix layout.
    MatrixLayout [40] {
        data_type: u32,
        /// `cublasLtOrder_t` (0 = column-major).
        order: u32,
        rows: u64,
        cols: u64,
        ld: i64,
        batch_count: i32,
        rsv0: u32,
    } reserved [rsv0]
}
args_impl!(MatrixLayout, |s| {
    ensure(s.ld >= 1 && s.batch_count >= 1, "layout")
});

abi_struct! {
    /// BLASLT_MATMUL: `D = alpha * op(A) op(B) + beta * C` with an epilogue.
    LtMatmulDesc [320] {
        handle: u64,
        compute_type: u32,
        scale_type: u32,
        transa: u32,
        transb: u32,
        /// `cublasLtEpilogue_t` (1 = default).
        epilogue: u32,
        rsv0: u32,
        alpha: [u8; 16],
        beta: [u8; 16],
        a: u64,
        b: u64,
        c: u64,
        d: u64,
        bias: u64,
        workspace: u64,
        workspace_size: u64,
        stride_a: i64,
        stride_b: i64,
        stride_c: i64,
        stride_d: i64,
        rsv1: u64,
        a_layout: MatrixLayout,
        b_layout: MatrixLayout,
        c_layout: MatrixLayout,
        d_layout: MatrixLayout,
    } reserved [rsv0, rsv1]
}
args_impl!(LtMatmulDesc, |s| {
    ensure(s.handle != 0, "handle")?;
    ensure(s.transa <= blas_op::C && s.transb <= blas_op::C, "trans")?;
    for l in [&s.a_layout, &s.b_layout, &s.c_layout, &s.d_layout] {
        l.check().map_err(|_| DecodeError::BadPayload("layout"))?;
    }
    Ok(())
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy2d_checks_sides() {
        let mut c = Copy2D {
            kind: copy_kind::HTOD,
            src_window: 1,
            src: 0,
            src_pitch: 64,
            dst_window: 0,
            rsv0: 0,
            dst: 0x1000,
            dst_pitch: 128,
            width: 64,
            height: 4,
        };
        assert_eq!(c.check(), Ok(()));
        c.dst_window = 2;
        assert_eq!(c.check(), Err(DecodeError::BadPayload("dst_window")));
        c.dst_window = 0;
        c.src_pitch = 32;
        assert_eq!(c.check(), Err(DecodeError::BadPayload("pitch")));
        c.src_pitch = 64;
        c.kind = 9;
        assert_eq!(c.check(), Err(DecodeError::BadPayload("kind")));
    }

    #[test]
    fn short_payload_is_truncated() {
        assert!(matches!(
            decode_payload::<GemmDesc>(&[0u8; 100]),
            Err(DecodeError::Truncated {
                need: 192,
                got: 100
            })
        ));
        let mut b = [0u8; 20];
        b[0] = launch_attr::COOPERATIVE as u8;
        assert_eq!(decode_launch_attrs(&b, 1).map(|v| v.len()), Ok(1));
        assert!(matches!(
            decode_launch_attrs(&b, 2),
            Err(DecodeError::Truncated { need: 16, got: 4 })
        ));
        assert_eq!(
            decode_launch_attrs(&[0u8; 16], 1),
            Err(DecodeError::BadPayload("attr.id"))
        );
    }
}

/// A command's payload, decoded according to its opcode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Structured<'a> {
    /// The opcode takes no payload.
    None,
    /// Raw bytes (MEMCPY_HTOD inline data).
    Data(&'a [u8]),
    /// MEMCPY_2D.
    Copy2D(Copy2D),
    /// MEMSET_2D.
    Memset2D(Memset2D),
    /// MODULE_LOAD: the header and the image bytes (empty for BY_HASH).
    Module(ModuleImageHeader, &'a [u8]),
    /// MODULE_GET_GLOBAL: the symbol name.
    Symbol(&'a str),
    /// LAUNCH: attributes and the parameter blob.
    Launch(Vec<LaunchAttr>, &'a [u8]),
    /// BLAS_GEMM / BLAS_GEMM_BATCHED.
    Gemm(GemmDesc),
    /// BLAS_TRSM_BATCHED.
    Trsm(TrsmBatchedDesc),
    /// BLASLT_MATMUL.
    LtMatmul(Box<LtMatmulDesc>),
}

/// Largest symbol name MODULE_GET_GLOBAL accepts.
pub const MAX_SYMBOL_LEN: usize = 4096;

/// Decodes the payload bytes of a validated command (spec §6). `bytes` must be exactly
/// the payload (`payload_len` bytes).
pub fn decode_structured<'a>(
    command: &crate::Command,
    bytes: &'a [u8],
) -> Result<Structured<'a>, DecodeError> {
    use crate::Command as C;
    Ok(match command {
        C::MEMCPY_HTOD(_) => Structured::Data(bytes),
        C::MEMCPY_2D(_) => Structured::Copy2D(exact(bytes)?),
        C::MEMSET_2D(_) => Structured::Memset2D(exact(bytes)?),
        C::MODULE_LOAD(a) => {
            let h: ModuleImageHeader = decode_payload(bytes)?;
            let image = &bytes[core::mem::size_of::<ModuleImageHeader>()..];
            let by_hash = a.flags & crate::cmd::module_flags::BY_HASH != 0;
            ensure(h.image_len == image.len() as u64, "image_len")?;
            ensure(by_hash == image.is_empty(), "image")?;
            Structured::Module(h, image)
        }
        C::MODULE_GET_GLOBAL(_) => {
            ensure(
                bytes.len() <= MAX_SYMBOL_LEN && !bytes.contains(&0),
                "symbol",
            )?;
            Structured::Symbol(
                core::str::from_utf8(bytes).map_err(|_| DecodeError::BadPayload("symbol"))?,
            )
        }
        C::LAUNCH(a) => {
            let attrs = decode_launch_attrs(bytes, a.attr_count)?;
            Structured::Launch(attrs, &bytes[a.attr_bytes() as usize..])
        }
        C::BLAS_GEMM(_) => Structured::Gemm(exact(bytes)?),
        C::BLAS_GEMM_BATCHED(_) => {
            let g: GemmDesc = exact(bytes)?;
            ensure(
                g.stride_a == 0 && g.stride_b == 0 && g.stride_c == 0,
                "stride",
            )?;
            Structured::Gemm(g)
        }
        C::BLAS_TRSM_BATCHED(_) => Structured::Trsm(exact(bytes)?),
        C::BLASLT_MATMUL(_) => Structured::LtMatmul(Box::new(exact(bytes)?)),
        _ if bytes.is_empty() => Structured::None,
        _ => return Err(DecodeError::PayloadNotAllowed),
    })
}

fn exact<T: Args>(bytes: &[u8]) -> Result<T, DecodeError> {
    ensure(bytes.len() == core::mem::size_of::<T>(), "length")?;
    decode_payload(bytes)
}
