//! The context API and the device queries that go with it, one line each
//! (`vgpu_shim_abi::exports!`); the state is in `crate::ctx`.

use crate::ctx::{self, CtxHandle};
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::Out;
use vgpu_shim_abi::status::CuStatus;

type R = Result<(), CuStatus>;

fn attr(a: u32, dev: i32) -> Result<i32, CuStatus> {
    super::device::attr(a as i32, dev)
}

/// `CUdevprop`: attributes 1 to 14, in their order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DevProp([i32; 14]);

fn properties(out: Out<DevProp>, dev: i32) -> R {
    let mut p = [0i32; 14];
    for (i, v) in p.iter_mut().enumerate() {
        *v = attr(i as u32 + 1, dev)?;
    }
    Ok(out.write(DevProp(p))?)
}

fn compute_capability(major: Out<i32>, minor: Out<i32>, dev: i32) -> R {
    const MAJOR: u32 = 75;
    const MINOR: u32 = 76;
    let (a, b) = (attr(MAJOR, dev)?, attr(MINOR, dev)?);
    major.write(a)?;
    Ok(minor.write(b)?)
}

exports! {
    library "libcuda.so.1", status CuStatus;
    implemented fn cuCtxCreate_v2(ctx: Out<CtxHandle>, flags: u32, dev: i32) => ctx::create(ctx, flags, dev);
    implemented fn cuCtxDestroy_v2(ctx: CtxHandle) => ctx::destroy(ctx);
    implemented fn cuCtxPushCurrent_v2(ctx: CtxHandle) => ctx::push(ctx);
    implemented fn cuCtxPopCurrent_v2(ctx: Out<CtxHandle>) => ctx::pop(ctx);
    implemented fn cuCtxSetCurrent(ctx: CtxHandle) => ctx::set_current(ctx);
    implemented fn cuCtxGetCurrent(ctx: Out<CtxHandle>) => ctx::get_current(ctx);
    implemented fn cuCtxGetDevice(dev: Out<i32>) => ctx::get_device(dev);
    implemented fn cuCtxGetApiVersion(ctx: CtxHandle, version: Out<u32>) => ctx::api_version(ctx, version);
    implemented fn cuCtxGetFlags(flags: Out<u32>) => ctx::get_flags(flags);
    implemented fn cuCtxSetFlags(flags: u32) => ctx::set_flags(flags);
    implemented fn cuCtxGetId(ctx: CtxHandle, id: Out<u64>) => ctx::get_id(ctx, id);
    implemented fn cuCtxGetLimit(value: Out<usize>, limit: u32) => ctx::get_limit(value, limit);
    implemented fn cuCtxSetLimit(limit: u32, value: usize) => ctx::set_limit(limit, value);
    implemented fn cuCtxGetStreamPriorityRange(least: Out<i32>, greatest: Out<i32>) => ctx::priority_range(least, greatest);
    implemented fn cuDevicePrimaryCtxRetain(ctx: Out<CtxHandle>, dev: i32) => ctx::primary_retain(ctx, dev);
    implemented fn cuDevicePrimaryCtxRelease_v2(dev: i32) => ctx::primary_release(dev);
    implemented fn cuDevicePrimaryCtxGetState(dev: i32, flags: Out<u32>, active: Out<i32>) => ctx::primary_state(dev, flags, active);
    implemented fn cuDevicePrimaryCtxSetFlags_v2(dev: i32, flags: u32) => ctx::primary_set_flags(dev, flags);
    implemented fn cuDeviceGetProperties(prop: Out<DevProp>, dev: i32) => properties(prop, dev);
    implemented fn cuDeviceComputeCapability(major: Out<i32>, minor: Out<i32>, dev: i32) => compute_capability(major, minor, dev);
    // Execution-affinity and green contexts, and the long-removed attach/detach.
    not_supported fn cuCtxCreate_v3;
    not_supported fn cuCtxCreate_v4;
    not_supported fn cuCtxAttach;
    not_supported fn cuCtxDetach;
    not_supported fn cuCtxGetExecAffinity;
    not_supported fn cuCtxGetSharedMemConfig;
    not_supported fn cuCtxSetSharedMemConfig;
    not_supported fn cuCtxGetCacheConfig;
    not_supported fn cuCtxSetCacheConfig;
}
