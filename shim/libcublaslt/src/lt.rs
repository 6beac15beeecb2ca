//! cuBLASLt's objects and `cublasLtMatmul` over the device's BLASLT_MATMUL (spec §6.8).
//!
//! Handles, matmul descriptors, matrix layouts and preferences are kept here (keys into
//! registries, never dereferenced pointers); their attributes are read and written in the
//! sizes cuBLASLt documents. `cublasLtMatmulAlgoGetHeuristic` returns one algorithm (the
//! device has one); `cublasLtMatmul` checks the shapes as cuBLASLt does and posts the matmul
//! on the stream with no round trip. Scalars are read on the host
//! (`CUBLASLT_POINTER_MODE_HOST`); the device pointer modes, row-major and other orders, and
//! epilogues the device lacks (GELU, auxiliary outputs) are NOT_SUPPORTED, with a log line.

use std::ffi::c_void;
use vgpu_proto::payload::{LtMatmulDesc, MatrixLayout};
use vgpu_shim_abi::libcuda::Libcuda;
use vgpu_shim_abi::ptr::{DevPtr, In, Out, OutArray};
use vgpu_shim_abi::registry::Registry;
use vgpu_shim_abi::status::CublasStatus;

type R = Result<(), CublasStatus>;
const INVALID: CublasStatus = CublasStatus::INVALID_VALUE;

/// An opaque handle as the application holds it (`cublasLtHandle_t` and the descriptors).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle(usize);

fn driver() -> Result<Libcuda, CublasStatus> {
    Libcuda::shared("cuBLASLt").map_err(|_| CublasStatus::NOT_INITIALIZED)
}

fn unsupported(what: &str) -> CublasStatus {
    log::warn!("vgpu: cuBLASLt: {what} is not supported");
    CublasStatus::NOT_SUPPORTED
}

/// A matmul descriptor.
#[derive(Clone, Copy, Debug)]
struct Desc {
    compute: u32,
    scale: u32,
    transa: u32,
    transb: u32,
    epilogue: u32,
    bias: u64,
}

static HANDLES: Registry<u64> = Registry::new(0x7d10_0000_0000);
static DESCS: Registry<Desc> = Registry::new(0x7d20_0000_0000);
static LAYOUTS: Registry<(MatrixLayout, i64)> = Registry::new(0x7d30_0000_0000);
static PREFS: Registry<u64> = Registry::new(0x7d40_0000_0000);

fn put(out: Out<Handle>, h: usize) -> R {
    Ok(out.write(Handle(h))?)
}

/// `cublasLtCreate`: a BLAS handle of the device.
pub fn create(out: Out<Handle>) -> R {
    if out.is_null() {
        return Err(INVALID);
    }
    let dev = driver()?.blas_create().map_err(CublasStatus::from_cuda)?;
    put(out, HANDLES.insert(dev))
}

/// `cublasLtDestroy`.
pub fn destroy(h: Handle) -> R {
    let dev = HANDLES.remove(h.0).ok_or(CublasStatus::NOT_INITIALIZED)?;
    driver()?.blas_destroy(dev).map_err(CublasStatus::from_cuda)
}

/// Bytes of a scalar of `cudaDataType` `t`; None if unknown.
fn scale_bytes(t: u32) -> Option<usize> {
    match t {
        0 | 10 => Some(4), // CUDA_R_32F, CUDA_R_32I
        1 => Some(8),      // CUDA_R_64F
        2 | 14 => Some(2), // CUDA_R_16F, CUDA_R_16BF
        _ => None,
    }
}

/// `cublasLtMatmulDescCreate`.
pub fn desc_create(out: Out<Handle>, compute: u32, scale: u32) -> R {
    if out.is_null() {
        return Err(INVALID);
    }
    if scale_bytes(scale).is_none() {
        return Err(INVALID);
    }
    let d = Desc {
        compute,
        scale,
        transa: 0,
        transb: 0,
        epilogue: 1,
        bias: 0,
    };
    put(out, DESCS.insert(d))
}

/// `cublasLtMatmulDescDestroy`.
pub fn desc_destroy(d: Handle) -> R {
    DESCS.remove(d.0).map(|_| ()).ok_or(INVALID)
}

/// An attribute value from the caller's buffer of `size` bytes (which must be the
/// attribute's size, `want`).
fn value(buf: In<c_void>, size: usize, want: usize) -> Result<u64, CublasStatus> {
    if size != want {
        return Err(INVALID);
    }
    let b = buf.read_bytes(want)?;
    Ok(u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])))
}

/// Writes an attribute's `size`-byte value for a getter: the size needed to `written`
/// (when non-null), and the value to `buf` when it holds `size` bytes.
fn give(v: u64, size: usize, buf: OutArray<u8>, cap: usize, written: Out<usize>) -> R {
    let asked = !written.is_null();
    if asked {
        written.write(size)?;
    }
    if cap == 0 && asked {
        return Ok(());
    }
    if cap < size {
        return Err(INVALID);
    }
    buf.write_all(cap, v.to_le_bytes()[..size].iter().copied())
        .map_err(|_| INVALID)
}

/// `cublasLtMatmulDescAttributes_t` values this library knows, with their sizes.
fn desc_attr_size(attr: u32) -> Option<usize> {
    Some(match attr {
        0..=5 => 4, // compute type, scale type, pointer mode, transa, transb, transc
        7 => 4,     // epilogue
        8 => 8,     // bias pointer
        _ => return None,
    })
}

/// `cublasLtMatmulDescSetAttribute`.
pub fn desc_set(d: Handle, attr: u32, buf: In<c_void>, size: usize) -> R {
    let want = desc_attr_size(attr)
        .ok_or_else(|| unsupported(&format!("matmul descriptor attribute {attr}")))?;
    let v = value(buf, size, want)?;
    let v32 = v as u32;
    match attr {
        2 if v32 != 0 => return Err(unsupported("a device pointer mode")),
        3 | 4 if v32 > 2 => return Err(INVALID),
        5 if v32 != 0 => return Err(unsupported("CUBLASLT_MATMUL_DESC_TRANSC")),
        7 if !matches!(v32, 1 | 2 | 4 | 6) => {
            return Err(unsupported(&format!(
                "epilogue {v32} (DEFAULT, RELU, BIAS and RELU_BIAS are)"
            )))
        }
        _ => {}
    }
    DESCS
        .update(d.0, |x| match attr {
            0 => x.compute = v32,
            1 => x.scale = v32,
            3 => x.transa = v32,
            4 => x.transb = v32,
            7 => x.epilogue = v32,
            8 => x.bias = v,
            _ => {}
        })
        .ok_or(INVALID)
}

/// `cublasLtMatmulDescGetAttribute`.
pub fn desc_get(d: Handle, attr: u32, buf: OutArray<u8>, cap: usize, written: Out<usize>) -> R {
    let size = desc_attr_size(attr)
        .ok_or_else(|| unsupported(&format!("matmul descriptor attribute {attr}")))?;
    let x = DESCS.get(d.0).ok_or(INVALID)?;
    let v = match attr {
        0 => x.compute.into(),
        1 => x.scale.into(),
        3 => x.transa.into(),
        4 => x.transb.into(),
        7 => x.epilogue.into(),
        8 => x.bias,
        _ => 0,
    };
    give(v, size, buf, cap, written)
}

/// `cublasLtMatrixLayoutCreate`: column-major, one batch.
pub fn layout_create(out: Out<Handle>, ty: u32, rows: u64, cols: u64, ld: i64) -> R {
    if out.is_null() || ld < 1 || (ld as u64) < rows {
        return Err(INVALID);
    }
    let l = MatrixLayout {
        data_type: ty,
        order: 0,
        rows,
        cols,
        ld,
        batch_count: 1,
        rsv0: 0,
    };
    put(out, LAYOUTS.insert((l, 0)))
}

/// `cublasLtMatrixLayoutDestroy`.
pub fn layout_destroy(l: Handle) -> R {
    LAYOUTS.remove(l.0).map(|_| ()).ok_or(INVALID)
}

/// `cublasLtMatrixLayoutAttribute_t` values this library knows, with their sizes.
fn layout_attr_size(attr: u32) -> Option<usize> {
    Some(match attr {
        0 | 1 | 5 => 4, // type, order, batch count
        2..=4 | 6 => 8, // rows, cols, ld, strided batch offset
        _ => return None,
    })
}

/// `cublasLtMatrixLayoutSetAttribute`.
pub fn layout_set(l: Handle, attr: u32, buf: In<c_void>, size: usize) -> R {
    let want = layout_attr_size(attr)
        .ok_or_else(|| unsupported(&format!("matrix layout attribute {attr}")))?;
    let v = value(buf, size, want)?;
    if attr == 1 && v != 0 {
        return Err(unsupported("a matrix order other than column-major"));
    }
    if attr == 5 && (v as i32) < 1 {
        return Err(INVALID);
    }
    LAYOUTS
        .update(l.0, |(x, stride)| match attr {
            0 => x.data_type = v as u32,
            2 => x.rows = v,
            3 => x.cols = v,
            4 => x.ld = v as i64,
            5 => x.batch_count = v as i32,
            6 => *stride = v as i64,
            _ => {}
        })
        .ok_or(INVALID)
}

/// `cublasLtMatrixLayoutGetAttribute`.
pub fn layout_get(l: Handle, attr: u32, buf: OutArray<u8>, cap: usize, written: Out<usize>) -> R {
    let size = layout_attr_size(attr)
        .ok_or_else(|| unsupported(&format!("matrix layout attribute {attr}")))?;
    let (x, stride) = LAYOUTS.get(l.0).ok_or(INVALID)?;
    let v = match attr {
        0 => x.data_type.into(),
        1 => x.order.into(),
        2 => x.rows,
        3 => x.cols,
        4 => x.ld as u64,
        5 => x.batch_count as u64,
        _ => stride as u64,
    };
    give(v, size, buf, cap, written)
}

/// `cublasLtMatmulPreferenceCreate`.
pub fn pref_create(out: Out<Handle>) -> R {
    if out.is_null() {
        return Err(INVALID);
    }
    put(out, PREFS.insert(0))
}

/// `cublasLtMatmulPreferenceDestroy`.
pub fn pref_destroy(p: Handle) -> R {
    PREFS.remove(p.0).map(|_| ()).ok_or(INVALID)
}

/// `cublasLtMatmulPreferenceSetAttribute`: the search mode (0) and the workspace limit (1)
/// are kept; the device's one algorithm needs no workspace, so both only bound it.
pub fn pref_set(p: Handle, attr: u32, buf: In<c_void>, size: usize) -> R {
    let want = match attr {
        0 => 4,
        1 => 8,
        _ => return Err(unsupported(&format!("matmul preference attribute {attr}"))),
    };
    let v = value(buf, size, want)?;
    PREFS
        .update(p.0, |w| {
            if attr == 1 {
                *w = v
            }
        })
        .ok_or(INVALID)
}

/// `cublasLtMatmulHeuristicResult_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HeuristicResult {
    algo: [u64; 8],
    workspace_size: usize,
    state: u32,
    waves_count: f32,
    reserved: [i32; 4],
}

/// The one algorithm's marker in `cublasLtMatmulAlgo_t`.
const ALGO: u64 = 0x7667_7075_616c_676f;

/// The device descriptor of a matmul, checked as cuBLASLt checks it.
fn describe(
    h: Handle,
    d: Handle,
    layouts: [Handle; 4],
) -> Result<(LtMatmulDesc, usize), CublasStatus> {
    let dev = HANDLES.get(h.0).ok_or(CublasStatus::NOT_INITIALIZED)?;
    let x = DESCS.get(d.0).ok_or(INVALID)?;
    let mut ls = [(bytemuck::Zeroable::zeroed(), 0i64); 4];
    for (slot, l) in ls.iter_mut().zip(layouts) {
        *slot = LAYOUTS.get(l.0).ok_or(INVALID)?;
    }
    let [(a, sa), (b, sb), (c, sc), (dl, sd)] = ls;
    let (am, k) = if x.transa == 0 {
        (a.rows, a.cols)
    } else {
        (a.cols, a.rows)
    };
    let (bk, bn) = if x.transb == 0 {
        (b.rows, b.cols)
    } else {
        (b.cols, b.rows)
    };
    if am != dl.rows || bk != k || bn != dl.cols || c.rows != dl.rows || c.cols != dl.cols {
        return Err(INVALID);
    }
    if [a, b, c].iter().any(|l| l.batch_count != dl.batch_count) {
        return Err(INVALID);
    }
    let scale = scale_bytes(x.scale).ok_or(INVALID)?;
    if x.epilogue & 4 != 0 && x.bias == 0 {
        return Err(INVALID);
    }
    let desc = LtMatmulDesc {
        handle: dev,
        compute_type: x.compute,
        scale_type: x.scale,
        transa: x.transa,
        transb: x.transb,
        epilogue: x.epilogue,
        bias: x.bias,
        stride_a: sa,
        stride_b: sb,
        stride_c: sc,
        stride_d: sd,
        a_layout: a,
        b_layout: b,
        c_layout: c,
        d_layout: dl,
        ..bytemuck::Zeroable::zeroed()
    };
    Ok((desc, scale))
}

/// `cublasLtMatmulAlgoGetHeuristic`: the device's one algorithm, for a problem it takes.
#[allow(clippy::too_many_arguments)] // the C signature
pub fn heuristic(
    h: Handle,
    d: Handle,
    a: Handle,
    b: Handle,
    c: Handle,
    dd: Handle,
    pref: Handle,
    requested: i32,
    results: OutArray<HeuristicResult>,
    count: Out<i32>,
) -> R {
    PREFS.get(pref.0).ok_or(INVALID)?;
    if requested < 1 || count.is_null() {
        return Err(INVALID);
    }
    describe(h, d, [a, b, c, dd])?;
    let one = HeuristicResult {
        algo: [ALGO, 0, 0, 0, 0, 0, 0, 0],
        workspace_size: 0,
        state: 0,
        waves_count: 1.0,
        reserved: [0; 4],
    };
    results
        .write_all(requested as usize, std::iter::once(one))
        .map_err(|_| INVALID)?;
    Ok(count.write(1)?)
}

/// `cublasLtMatmul`: `D = epilogue(alpha·op(A)·op(B) + beta·C)` on the stream.
#[allow(clippy::too_many_arguments)] // the C signature
pub fn matmul(
    h: Handle,
    d: Handle,
    alpha: In<c_void>,
    a: DevPtr,
    al: Handle,
    b: DevPtr,
    bl: Handle,
    beta: In<c_void>,
    c: DevPtr,
    cl: Handle,
    dp: DevPtr,
    dl: Handle,
    algo: In<[u64; 8]>,
    workspace: DevPtr,
    workspace_size: usize,
    stream: usize,
) -> R {
    let (mut desc, scale) = describe(h, d, [al, bl, cl, dl])?;
    if !algo.is_null() && algo.read()?[0] != ALGO {
        return Err(INVALID);
    }
    if alpha.is_null() || beta.is_null() {
        return Err(INVALID);
    }
    desc.alpha = alpha.read_bytes(scale)?;
    desc.beta = beta.read_bytes(scale)?;
    desc.a = a.addr();
    desc.b = b.addr();
    desc.c = c.addr();
    desc.d = dp.addr();
    desc.workspace = workspace.addr();
    desc.workspace_size = workspace_size as u64;
    if desc.d_layout.rows == 0 || desc.d_layout.cols == 0 {
        return Ok(());
    }
    log::debug!(
        "vgpu: cuBLASLt: matmul {}x{} epilogue {}",
        desc.d_layout.rows,
        desc.d_layout.cols,
        desc.epilogue
    );
    driver()?
        .lt_matmul(&desc, stream)
        .map_err(CublasStatus::from_cuda)
}
