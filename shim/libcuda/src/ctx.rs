//! Contexts: `cuCtx*` and the primary context (`cuDevicePrimaryCtx*`).
//!
//! The process has one connection to vgpu-driver, one protection domain, and every context
//! is a view of it: allocations, modules and streams made in one context are usable in the
//! others (as between contexts of one device under unified addressing, though not isolated
//! from each other as a GPU's contexts are). What this module keeps is what programs see of
//! contexts: each thread's stack of current contexts, the primary context's retain count and
//! flags, the contexts made with `cuCtxCreate` and their flags, and CUDA's errors for using
//! them wrongly (INVALID_CONTEXT for no current context or a destroyed one). The other driver
//! calls do not require a current context: the runtime (`libcudart.so.12`) and ggml call them
//! without one.

use crate::state::{device_count, initialized};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use vgpu_os::lock;
use vgpu_shim_abi::ptr::Out;
use vgpu_shim_abi::status::CuStatus;

type R = Result<(), CuStatus>;

/// `CUcontext` as the application holds it: a token, never dereferenced.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CtxHandle(usize);

impl CtxHandle {
    const NULL: CtxHandle = CtxHandle(0);
}

/// The primary context of device 0.
const PRIMARY: CtxHandle = CtxHandle(0x7c0a_0000_1000);

/// The context API version of every context (that of CUDA's `_v2` contexts).
const API_VERSION: u32 = 3020;

struct Contexts {
    /// Contexts made by `cuCtxCreate`: handle → (flags, id).
    created: BTreeMap<CtxHandle, (u32, u64)>,
    next: usize,
    primary_refs: u32,
    primary_flags: u32,
}

static CONTEXTS: Mutex<Contexts> = Mutex::new(Contexts {
    created: BTreeMap::new(),
    next: 1,
    primary_refs: 0,
    primary_flags: 0,
});

thread_local! {
    static STACK: RefCell<Vec<CtxHandle>> = const { RefCell::new(Vec::new()) };
}

fn init() -> R {
    match initialized() {
        Some(s) if s.status.is_ok() => Ok(()),
        Some(s) => Err(CuStatus(s.status.to_cuda())),
        None => Err(CuStatus::NOT_INITIALIZED),
    }
}

fn device(dev: i32) -> R {
    init()?;
    if dev < 0 || dev >= device_count() {
        return Err(CuStatus::INVALID_DEVICE);
    }
    Ok(())
}

/// The flags and id of a live context; INVALID_CONTEXT otherwise.
fn live(c: &Contexts, h: CtxHandle) -> Result<(u32, u64), CuStatus> {
    if h == PRIMARY && c.primary_refs > 0 {
        return Ok((c.primary_flags, 1));
    }
    c.created.get(&h).copied().ok_or(CuStatus::INVALID_CONTEXT)
}

/// The calling thread's current context, if any.
pub fn current() -> Option<CtxHandle> {
    STACK.with(|s| s.borrow().last().copied())
}

/// The current context, which must be live; INVALID_CONTEXT otherwise.
fn current_live() -> Result<(CtxHandle, u32, u64), CuStatus> {
    init()?;
    let h = current().ok_or(CuStatus::INVALID_CONTEXT)?;
    let (flags, id) = live(&lock(&CONTEXTS), h)?;
    Ok((h, flags, id))
}

/// `cuCtxCreate_v2`: a new context, pushed on the calling thread's stack.
pub fn create(out: Out<CtxHandle>, flags: u32, dev: i32) -> R {
    device(dev)?;
    if out.is_null() {
        return Err(CuStatus::INVALID_VALUE);
    }
    let h = {
        let mut c = lock(&CONTEXTS);
        let id = c.next as u64 + 1;
        let h = CtxHandle(0x7c0b_0000_0000 + c.next * 16);
        c.next += 1;
        c.created.insert(h, (flags, id));
        h
    };
    STACK.with(|s| s.borrow_mut().push(h));
    Ok(out.write(h)?)
}

/// `cuCtxDestroy_v2`: the primary context is released with `cuDevicePrimaryCtxRelease`,
/// not destroyed.
pub fn destroy(h: CtxHandle) -> R {
    init()?;
    if lock(&CONTEXTS).created.remove(&h).is_none() {
        return Err(CuStatus::INVALID_CONTEXT);
    }
    STACK.with(|s| s.borrow_mut().retain(|&c| c != h));
    Ok(())
}

/// `cuCtxPushCurrent_v2`.
pub fn push(h: CtxHandle) -> R {
    init()?;
    live(&lock(&CONTEXTS), h)?;
    STACK.with(|s| s.borrow_mut().push(h));
    Ok(())
}

/// `cuCtxPopCurrent_v2`: INVALID_CONTEXT when the stack is empty.
pub fn pop(out: Out<CtxHandle>) -> R {
    init()?;
    let h = STACK
        .with(|s| s.borrow_mut().pop())
        .ok_or(CuStatus::INVALID_CONTEXT)?;
    if !out.is_null() {
        out.write(h)?;
    }
    Ok(())
}

/// `cuCtxSetCurrent`: replaces the top of the stack; NULL pops it.
pub fn set_current(h: CtxHandle) -> R {
    init()?;
    if h == CtxHandle::NULL {
        STACK.with(|s| s.borrow_mut().pop());
        return Ok(());
    }
    live(&lock(&CONTEXTS), h)?;
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        s.push(h);
    });
    Ok(())
}

/// `cuCtxGetCurrent`: NULL when none is current.
pub fn get_current(out: Out<CtxHandle>) -> R {
    init()?;
    Ok(out.write(current().unwrap_or(CtxHandle::NULL))?)
}

/// `cuCtxGetDevice`.
pub fn get_device(out: Out<i32>) -> R {
    current_live()?;
    Ok(out.write(0)?)
}

/// `cuCtxGetApiVersion`: of `h`, or of the current context for NULL.
pub fn api_version(h: CtxHandle, out: Out<u32>) -> R {
    init()?;
    let h = if h == CtxHandle::NULL {
        current().ok_or(CuStatus::INVALID_CONTEXT)?
    } else {
        h
    };
    live(&lock(&CONTEXTS), h)?;
    Ok(out.write(API_VERSION)?)
}

/// `cuCtxGetFlags`.
pub fn get_flags(out: Out<u32>) -> R {
    Ok(out.write(current_live()?.1)?)
}

/// `cuCtxSetFlags`: of the current context.
pub fn set_flags(flags: u32) -> R {
    let (h, _, _) = current_live()?;
    let mut c = lock(&CONTEXTS);
    if h == PRIMARY {
        c.primary_flags = flags;
    } else if let Some(e) = c.created.get_mut(&h) {
        e.0 = flags;
    }
    Ok(())
}

/// `cuCtxGetId`: of `h`, or of the current context for NULL.
pub fn get_id(h: CtxHandle, out: Out<u64>) -> R {
    init()?;
    let h = if h == CtxHandle::NULL {
        current().ok_or(CuStatus::INVALID_CONTEXT)?
    } else {
        h
    };
    Ok(out.write(live(&lock(&CONTEXTS), h)?.1)?)
}

/// `cuCtxGetLimit`: CTX_GET_LIMIT on the device.
pub fn get_limit(out: Out<usize>, limit: u32) -> R {
    current_live()?;
    let args = vgpu_proto::cmd::LimitArgs {
        limit,
        ..bytemuck::Zeroable::zeroed()
    };
    let c = crate::mem::call(vgpu_proto::Command::CTX_GET_LIMIT(args), 0).map_err(CuStatus)?;
    Ok(out.write(c.result0 as usize)?)
}

/// `cuCtxSetLimit`: CTX_SET_LIMIT on the device.
pub fn set_limit(limit: u32, value: usize) -> R {
    current_live()?;
    let args = vgpu_proto::cmd::LimitArgs {
        limit,
        value: value as u64,
        ..bytemuck::Zeroable::zeroed()
    };
    crate::mem::call(vgpu_proto::Command::CTX_SET_LIMIT(args), 0).map_err(CuStatus)?;
    Ok(())
}

/// `cuCtxGetStreamPriorityRange`: (0, 0), the device has one stream priority.
pub fn priority_range(least: Out<i32>, greatest: Out<i32>) -> R {
    current_live()?;
    if !least.is_null() {
        least.write(0)?;
    }
    if !greatest.is_null() {
        greatest.write(0)?;
    }
    Ok(())
}

/// `cuDevicePrimaryCtxRetain`.
pub fn primary_retain(out: Out<CtxHandle>, dev: i32) -> R {
    device(dev)?;
    if out.is_null() {
        return Err(CuStatus::INVALID_VALUE);
    }
    lock(&CONTEXTS).primary_refs += 1;
    Ok(out.write(PRIMARY)?)
}

/// `cuDevicePrimaryCtxRelease_v2`: INVALID_CONTEXT when it is not retained.
pub fn primary_release(dev: i32) -> R {
    device(dev)?;
    let mut c = lock(&CONTEXTS);
    if c.primary_refs == 0 {
        return Err(CuStatus::INVALID_CONTEXT);
    }
    c.primary_refs -= 1;
    Ok(())
}

/// `cuDevicePrimaryCtxGetState`.
pub fn primary_state(dev: i32, flags: Out<u32>, active: Out<i32>) -> R {
    device(dev)?;
    let c = lock(&CONTEXTS);
    flags.write(c.primary_flags)?;
    Ok(active.write(i32::from(c.primary_refs > 0))?)
}

/// `cuDevicePrimaryCtxSetFlags_v2`.
pub fn primary_set_flags(dev: i32, flags: u32) -> R {
    device(dev)?;
    lock(&CONTEXTS).primary_flags = flags;
    Ok(())
}
