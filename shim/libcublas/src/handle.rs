//! cuBLAS handles. A `cublasHandle_t` given to the application is a key into this table,
//! never a pointer this library dereferences: an unknown or destroyed handle is refused
//! with NOT_INITIALIZED instead of crashing. The state of a handle lives here and goes to
//! the device in each command (spec §7.12).

use crate::driver::driver;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use vgpu_os::lock;
use vgpu_shim_abi::ptr::{DevPtr, Out};
use vgpu_shim_abi::status::CublasStatus;

/// `cublasHandle_t` as the application holds it.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HandleId(usize);

/// `CUBLAS_POINTER_MODE_HOST`.
pub const POINTER_MODE_HOST: i32 = 0;
/// `CUBLAS_POINTER_MODE_DEVICE`.
pub const POINTER_MODE_DEVICE: i32 = 1;

/// What a handle holds.
#[derive(Clone, Copy, Debug)]
pub struct Handle {
    /// The device's BLAS handle.
    pub device: u64,
    /// `cudaStream_t` / `CUstream` (0: the NULL stream).
    pub stream: usize,
    /// `cublasMath_t`.
    pub math_mode: u32,
    /// `cublasPointerMode_t`.
    pub pointer_mode: i32,
    /// `cublasAtomicsMode_t`.
    pub atomics_mode: i32,
    /// The workspace set by `cublasSetWorkspace`.
    pub workspace: DevPtr,
    /// Its size.
    pub workspace_size: usize,
    /// 32 bytes of device memory for results read back to the host (at 0) and the constants
    /// 1.0f (at 8) and 1.0 (at 16); made at first use.
    pub scratch: u64,
}

/// Where the constants live in [`Handle::scratch`].
pub const ONE_F32: u64 = 8;
/// See [`ONE_F32`].
pub const ONE_F64: u64 = 16;

static HANDLES: Mutex<BTreeMap<HandleId, Handle>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicUsize = AtomicUsize::new(1);

/// `cublasCreate_v2`.
pub fn create(out: Out<HandleId>) -> Result<(), CublasStatus> {
    if out.is_null() {
        return Err(CublasStatus::INVALID_VALUE);
    }
    let device = driver()?.create()?;
    // Handles look like pointers (aligned, high) but are only keys.
    let id = HandleId(0x7b1a_0000_0000 + NEXT.fetch_add(1, Ordering::Relaxed) * 16);
    let h = Handle {
        device,
        stream: 0,
        math_mode: 0,
        pointer_mode: POINTER_MODE_HOST,
        atomics_mode: 0,
        workspace: DevPtr::default(),
        workspace_size: 0,
        scratch: 0,
    };
    lock(&HANDLES).insert(id, h);
    out.write(id)?;
    Ok(())
}

/// `cublasDestroy_v2`.
pub fn destroy(id: HandleId) -> Result<(), CublasStatus> {
    let h = lock(&HANDLES)
        .remove(&id)
        .ok_or(CublasStatus::NOT_INITIALIZED)?;
    let d = driver()?;
    if h.scratch != 0 {
        d.mem_free(h.scratch)?;
    }
    d.destroy(h.device)
}

/// The handle's scratch memory (see [`Handle::scratch`]), made at first use.
pub fn scratch(id: HandleId) -> Result<u64, CublasStatus> {
    let h = get(id)?;
    if h.scratch != 0 {
        return Ok(h.scratch);
    }
    let d = driver()?;
    let p = d.mem_alloc(32)?;
    let mut init = [0u8; 32];
    init[8..12].copy_from_slice(&1.0f32.to_le_bytes());
    init[16..24].copy_from_slice(&1.0f64.to_le_bytes());
    d.htod(p, &init, h.stream)?;
    // Another thread may have made one meanwhile: keep the first, free ours.
    let kept = {
        let mut all = lock(&HANDLES);
        let h = all.get_mut(&id).ok_or(CublasStatus::NOT_INITIALIZED)?;
        if h.scratch == 0 {
            h.scratch = p;
        }
        h.scratch
    };
    if kept != p {
        d.mem_free(p)?;
    }
    Ok(kept)
}

/// A copy of the handle's state; NOT_INITIALIZED for an unknown handle.
pub fn get(id: HandleId) -> Result<Handle, CublasStatus> {
    lock(&HANDLES)
        .get(&id)
        .copied()
        .ok_or(CublasStatus::NOT_INITIALIZED)
}

fn update(id: HandleId, f: impl FnOnce(&mut Handle)) -> Result<(), CublasStatus> {
    let mut all = lock(&HANDLES);
    let h = all.get_mut(&id).ok_or(CublasStatus::NOT_INITIALIZED)?;
    f(h);
    Ok(())
}

/// `cublasSetStream_v2`.
pub fn set_stream(id: HandleId, stream: usize) -> Result<(), CublasStatus> {
    update(id, |h| h.stream = stream)
}

/// `cublasGetStream_v2`.
pub fn get_stream(id: HandleId, out: Out<usize>) -> Result<(), CublasStatus> {
    Ok(out.write(get(id)?.stream)?)
}

/// `cublasSetMathMode`: `CUBLAS_DEFAULT_MATH`, `TENSOR_OP`, `PEDANTIC` or `TF32_TENSOR_OP`,
/// with or without `CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION` (16).
pub fn set_math_mode(id: HandleId, mode: u32) -> Result<(), CublasStatus> {
    if mode & !16 > 3 {
        return Err(CublasStatus::INVALID_VALUE);
    }
    update(id, |h| h.math_mode = mode)
}

/// `cublasGetMathMode`.
pub fn get_math_mode(id: HandleId, out: Out<u32>) -> Result<(), CublasStatus> {
    Ok(out.write(get(id)?.math_mode)?)
}

/// `cublasSetPointerMode_v2`.
pub fn set_pointer_mode(id: HandleId, mode: i32) -> Result<(), CublasStatus> {
    if mode != POINTER_MODE_HOST && mode != POINTER_MODE_DEVICE {
        return Err(CublasStatus::INVALID_VALUE);
    }
    update(id, |h| h.pointer_mode = mode)
}

/// `cublasGetPointerMode_v2`.
pub fn get_pointer_mode(id: HandleId, out: Out<i32>) -> Result<(), CublasStatus> {
    Ok(out.write(get(id)?.pointer_mode)?)
}

/// `cublasSetAtomicsMode` (a hint: the device's results do not depend on it).
pub fn set_atomics_mode(id: HandleId, mode: i32) -> Result<(), CublasStatus> {
    if !(0..=1).contains(&mode) {
        return Err(CublasStatus::INVALID_VALUE);
    }
    update(id, |h| h.atomics_mode = mode)
}

/// `cublasGetAtomicsMode`.
pub fn get_atomics_mode(id: HandleId, out: Out<i32>) -> Result<(), CublasStatus> {
    Ok(out.write(get(id)?.atomics_mode)?)
}

/// `cublasSetWorkspace_v2`: a null workspace with size 0 returns to none.
pub fn set_workspace(id: HandleId, ws: DevPtr, size: usize) -> Result<(), CublasStatus> {
    if ws.0 == 0 && size != 0 {
        return Err(CublasStatus::INVALID_VALUE);
    }
    update(id, |h| {
        h.workspace = ws;
        h.workspace_size = size;
    })
}
