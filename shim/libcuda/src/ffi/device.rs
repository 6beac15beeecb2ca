//! Initialisation, device queries, the primary context's reset and the error strings, one
//! line each in the table at the end (`vgpu_shim_abi::exports!`). The device queries are
//! answered locally, from the device info.

use crate::handles;
use crate::mem;
use crate::module;
use crate::state::{device_count, initialized, session};
use std::ffi::c_char;
use vgpu_proto::info::DeviceInfo;
use vgpu_proto::Command;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::{Out, StrOut};
use vgpu_shim_abi::status::CuStatus;

type R = Result<(), CuStatus>;

fn device(dev: i32) -> Result<&'static DeviceInfo, CuStatus> {
    let s = initialized().ok_or(CuStatus::NOT_INITIALIZED)?;
    let info = s.info.as_ref().ok_or(CuStatus::NOT_INITIALIZED)?;
    if dev < 0 || dev >= device_count() {
        return Err(CuStatus::INVALID_DEVICE);
    }
    Ok(info)
}

fn init(flags: u32) -> R {
    if flags != 0 {
        return Err(CuStatus::INVALID_VALUE);
    }
    match session().status.to_cuda() {
        0 => Ok(()),
        e => Err(CuStatus(e)),
    }
}

fn count(out: Out<i32>) -> R {
    if initialized().is_none() {
        return Err(CuStatus::NOT_INITIALIZED);
    }
    Ok(out.write(device_count())?)
}

fn get(out: Out<i32>, ordinal: i32) -> R {
    device(ordinal)?;
    Ok(out.write(ordinal)?)
}

/// A device attribute, from the device info; INVALID_VALUE for one it does not have.
pub(crate) fn attr(attrib: i32, dev: i32) -> Result<i32, CuStatus> {
    let info = device(dev)?;
    u32::try_from(attrib)
        .ok()
        .and_then(|a| info.attr(a))
        .ok_or(CuStatus::INVALID_VALUE)
}

fn name(out: StrOut, len: i32, dev: i32) -> R {
    let info = device(dev)?;
    Ok(out.write_truncated(len.max(0) as usize, info.name())?)
}

fn total_mem(out: Out<usize>, dev: i32) -> R {
    Ok(out.write(device(dev)?.total_mem as usize)?)
}

/// `cuDeviceGetPCIBusId`: `domain:bus:device.function`.
fn pci_bus_id(out: StrOut, len: i32, dev: i32) -> R {
    let info = device(dev)?;
    let s = format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        info.pci_domain, info.pci_bus, info.pci_device, info.pci_function
    );
    Ok(out.write_truncated(len.max(0) as usize, &s)?)
}

fn uuid(out: Out<[u8; 16]>, dev: i32) -> R {
    Ok(out.write(device(dev)?.uuid)?)
}

/// `cuDevicePrimaryCtxReset_v2`: the device destroys every GPU object of this process
/// (CTX_RESET: allocations, modules, streams, events, graphs) and clears its errors; the
/// local tables of them are forgotten. Pinned host memory (windows) stays.
fn primary_reset(dev: i32) -> R {
    device(dev)?;
    mem::call(Command::CTX_RESET(bytemuck::Zeroable::zeroed()), 0)?;
    mem::forget_allocations();
    module::forget_all();
    handles::forget_all();
    crate::graph::forget_all();
    Ok(())
}

/// `cuGetErrorString` / `cuGetErrorName`: INVALID_VALUE (and NULL) for an unknown code.
fn error_str(s: Option<&'static std::ffi::CStr>, out: Out<*const c_char>) -> R {
    match s {
        Some(s) => Ok(out.write(s.as_ptr())?),
        None => {
            let _ = out.write(std::ptr::null());
            Err(CuStatus::INVALID_VALUE)
        }
    }
}

exports! {
    library "libcuda.so.1", status CuStatus;
    implemented fn cuInit(flags: u32) => init(flags);
    /// The advertised version, fixed.
    implemented fn cuDriverGetVersion(version: Out<i32>) => Ok(version.write(crate::ADVERTISED_VERSION)?);
    implemented fn cuDeviceGetCount(count_: Out<i32>) => count(count_);
    implemented fn cuDeviceGet(dev: Out<i32>, ordinal: i32) => get(dev, ordinal);
    implemented fn cuDeviceGetAttribute(value: Out<i32>, attrib: i32, dev: i32) => Ok(value.write(attr(attrib, dev)?)?);
    implemented fn cuDeviceGetName(out: StrOut, len: i32, dev: i32) => name(out, len, dev);
    implemented fn cuDeviceTotalMem_v2(bytes: Out<usize>, dev: i32) => total_mem(bytes, dev);
    implemented fn cuDeviceTotalMem(bytes: Out<usize>, dev: i32) => total_mem(bytes, dev);
    implemented fn cuDeviceGetPCIBusId(out: StrOut, len: i32, dev: i32) => pci_bus_id(out, len, dev);
    implemented fn cuDeviceGetUuid(out: Out<[u8; 16]>, dev: i32) => uuid(out, dev);
    implemented fn cuDeviceGetUuid_v2(out: Out<[u8; 16]>, dev: i32) => uuid(out, dev);
    implemented fn cuDevicePrimaryCtxReset_v2(dev: i32) => primary_reset(dev);
    implemented fn cuGetErrorString(error: u32, text: Out<*const c_char>) => error_str(CuStatus(error).text(), text);
    implemented fn cuGetErrorName(error: u32, text: Out<*const c_char>) => error_str(CuStatus(error).name(), text);
}
