//! Initialisation (reference-counted, as NVML's), the device handle and the queries.

use std::sync::Mutex;
use vgpu_os::lock;
use vgpu_proto::info::{DeviceInfo, MgmtInfo};
use vgpu_shim_abi::libcuda::Libcuda;
use vgpu_shim_abi::ptr::{CStrIn, InOut, Out, OutArray, StrOut};
use vgpu_shim_abi::status::NvmlReturn;

/// `nvmlDevice_t` as the application holds it: a token, never dereferenced.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceHandle(usize);

/// The one device's handle.
const DEVICE: DeviceHandle = DeviceHandle(0x7e1a_0000_0100);

type R = Result<(), NvmlReturn>;

static INITS: Mutex<u32> = Mutex::new(0);

fn table() -> Result<Libcuda, NvmlReturn> {
    Libcuda::shared("libnvidia-ml").map_err(|_| NvmlReturn::DRIVER_NOT_LOADED)
}

/// `nvmlInit_v2` / `nvmlInitWithFlags`: DRIVER_NOT_LOADED without a vGPU.
pub fn init() -> R {
    table()?;
    *lock(&INITS) += 1;
    Ok(())
}

/// `nvmlShutdown`: UNINITIALIZED when not initialised.
pub fn shutdown() -> R {
    let mut n = lock(&INITS);
    if *n == 0 {
        return Err(NvmlReturn::UNINITIALIZED);
    }
    *n -= 1;
    Ok(())
}

fn initialized() -> Result<Libcuda, NvmlReturn> {
    if *lock(&INITS) == 0 {
        return Err(NvmlReturn::UNINITIALIZED);
    }
    table()
}

fn check<T>(r: Result<T, u32>) -> Result<T, NvmlReturn> {
    r.map_err(|e| {
        log::warn!("vgpu: libnvidia-ml: the device did not answer (CUresult {e})");
        NvmlReturn::GPU_IS_LOST
    })
}

/// The device info (initialised).
pub fn info() -> Result<DeviceInfo, NvmlReturn> {
    check(initialized()?.device_info())
}

/// The device info for a handle; INVALID_ARGUMENT for anything but the device's.
fn device(h: DeviceHandle) -> Result<DeviceInfo, NvmlReturn> {
    let info = info()?;
    if h != DEVICE {
        return Err(NvmlReturn::INVALID_ARGUMENT);
    }
    Ok(info)
}

/// MGMT_QUERY for a handle.
fn mgmt(h: DeviceHandle) -> Result<MgmtInfo, NvmlReturn> {
    device(h)?;
    check(initialized()?.mgmt_query())
}

/// A value the device reports as 0 when it does not know it: NOT_SUPPORTED then.
fn known(v: u32) -> Result<u32, NvmlReturn> {
    match v {
        0 => Err(NvmlReturn::NOT_SUPPORTED),
        v => Ok(v),
    }
}

/// `nvmlSystemGetDriverVersion`.
pub fn driver_version(buf: StrOut, len: u32) -> R {
    Ok(buf.write(len as usize, info()?.driver_version())?)
}

/// `nvmlSystemGetNVMLVersion`: `12.` and the driver version, as NVIDIA's NVML 12.
pub fn nvml_version(buf: StrOut, len: u32) -> R {
    let v = format!("12.{}", info()?.driver_version());
    Ok(buf.write(len as usize, &v)?)
}

/// `nvmlSystemGetCudaDriverVersion(_v2)`: what `cuDriverGetVersion` answers.
pub fn cuda_version(out: Out<i32>) -> R {
    initialized()?;
    Ok(out.write(vgpu_shim_abi::version::CUDA)?)
}

/// `nvmlDeviceGetCount(_v2)`.
pub fn count(out: Out<u32>) -> R {
    info()?;
    Ok(out.write(1)?)
}

/// `nvmlDeviceGetHandleByIndex(_v2)`.
pub fn by_index(index: u32, out: Out<DeviceHandle>) -> R {
    info()?;
    if index != 0 {
        return Err(NvmlReturn::INVALID_ARGUMENT);
    }
    Ok(out.write(DEVICE)?)
}

/// `nvmlDeviceGetHandleByUUID`: `GPU-` and the UUID, any case.
pub fn by_uuid(uuid: CStrIn, out: Out<DeviceHandle>) -> R {
    let info = info()?;
    let want = uuid.read()?;
    if !want.eq_ignore_ascii_case(&format!("GPU-{}", info.uuid_string())) {
        return Err(NvmlReturn::NOT_FOUND);
    }
    Ok(out.write(DEVICE)?)
}

fn bus_ids(info: &DeviceInfo) -> (String, String) {
    let (b, d, f) = (info.pci_bus, info.pci_device, info.pci_function);
    (
        format!("{:08X}:{b:02X}:{d:02X}.{f:X}", info.pci_domain),
        format!("{:04X}:{b:02X}:{d:02X}.{f:X}", info.pci_domain),
    )
}

/// `domain:bus:device.function` in hex, with any width of domain, as numbers.
fn parse_bus_id(s: &str) -> Option<(u32, u32, u32, u32)> {
    let (dom, rest) = s.trim().split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let hex = |x: &str| u32::from_str_radix(x, 16).ok();
    Some((hex(dom)?, hex(bus)?, hex(dev)?, hex(func)?))
}

/// `nvmlDeviceGetHandleByPciBusId(_v2)`.
pub fn by_bus_id(id: CStrIn, out: Out<DeviceHandle>) -> R {
    let info = info()?;
    let want = parse_bus_id(&id.read()?).ok_or(NvmlReturn::INVALID_ARGUMENT)?;
    let have = (
        info.pci_domain,
        info.pci_bus.into(),
        info.pci_device.into(),
        info.pci_function.into(),
    );
    if want != have {
        return Err(NvmlReturn::NOT_FOUND);
    }
    Ok(out.write(DEVICE)?)
}

/// `nvmlDeviceGetIndex`, `nvmlDeviceGetMinorNumber`.
pub fn index(h: DeviceHandle, out: Out<u32>) -> R {
    device(h)?;
    Ok(out.write(0)?)
}

/// `nvmlDeviceGetName`.
pub fn name(h: DeviceHandle, buf: StrOut, len: u32) -> R {
    Ok(buf.write(len as usize, device(h)?.name())?)
}

/// `nvmlDeviceGetUUID`: `GPU-` and the UUID, as `cuDeviceGetUuid` gives it.
pub fn uuid(h: DeviceHandle, buf: StrOut, len: u32) -> R {
    let s = format!("GPU-{}", device(h)?.uuid_string());
    Ok(buf.write(len as usize, &s)?)
}

/// `nvmlDeviceGetSerial`: 13 decimal digits derived from the UUID (the vGPU has no board
/// serial; this one is stable and unique as the UUID is).
pub fn serial(h: DeviceHandle, buf: StrOut, len: u32) -> R {
    let u = device(h)?.uuid;
    let n = u64::from_le_bytes([u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7]]);
    Ok(buf.write(len as usize, &format!("{:013}", n % 10_000_000_000_000))?)
}

/// `nvmlPciInfo_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PciInfo {
    bus_id_legacy: [u8; 16],
    domain: u32,
    bus: u32,
    device: u32,
    pci_device_id: u32,
    pci_subsystem_id: u32,
    bus_id: [u8; 32],
}

fn c_chars<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N - 1);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// `nvmlDeviceGetPciInfo_v3` (and `_v2`, the same structure).
pub fn pci_info(h: DeviceHandle, out: Out<PciInfo>) -> R {
    use vgpu_proto::regs::pci;
    let info = device(h)?;
    let (long, legacy) = bus_ids(&info);
    Ok(out.write(PciInfo {
        bus_id_legacy: c_chars(&legacy),
        domain: info.pci_domain,
        bus: info.pci_bus.into(),
        device: info.pci_device.into(),
        pci_device_id: u32::from(pci::DEVICE_ID) << 16 | u32::from(pci::VENDOR_ID),
        pci_subsystem_id: u32::from(pci::SUBSYSTEM_ID) << 16 | u32::from(pci::SUBSYSTEM_VENDOR_ID),
        bus_id: c_chars(&long),
    })?)
}

/// `nvmlMemory_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MemoryV2 {
    version: u32,
    total: u64,
    reserved: u64,
    free: u64,
    used: u64,
}

/// `nvmlMemory_v2`: the structure's size and version 2, as NVML's headers make it.
const MEMORY_V2: u32 = std::mem::size_of::<MemoryV2>() as u32 | 2 << 24;

/// `nvmlDeviceGetMemoryInfo`: the PD's view, as `cuMemGetInfo` reports it.
pub fn memory(h: DeviceHandle, out: Out<Memory>) -> R {
    let m = mgmt(h)?;
    Ok(out.write(Memory {
        total: m.mem_total,
        free: m.mem_free,
        used: m.mem_used,
    })?)
}

/// `nvmlDeviceGetMemoryInfo_v2`: ARGUMENT_VERSION_MISMATCH unless the caller's structure
/// is `nvmlMemory_v2`.
pub fn memory_v2(h: DeviceHandle, io: InOut<MemoryV2>) -> R {
    if io.read()?.version != MEMORY_V2 {
        return Err(NvmlReturn::ARGUMENT_VERSION_MISMATCH);
    }
    let m = mgmt(h)?;
    Ok(io.write(MemoryV2 {
        version: MEMORY_V2,
        total: m.mem_total,
        reserved: 0,
        free: m.mem_free,
        used: m.mem_used,
    })?)
}

/// `nvmlUtilization_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Utilization {
    gpu: u32,
    memory: u32,
}

/// `nvmlDeviceGetUtilizationRates`.
pub fn utilization(h: DeviceHandle, out: Out<Utilization>) -> R {
    let m = mgmt(h)?;
    Ok(out.write(Utilization {
        gpu: m.gpu_util,
        memory: m.mem_util,
    })?)
}

/// `nvmlDeviceGetTemperature` (`NVML_TEMPERATURE_GPU`, 0, only).
pub fn temperature(h: DeviceHandle, sensor: u32, out: Out<u32>) -> R {
    let m = mgmt(h)?;
    if sensor != 0 {
        return Err(NvmlReturn::INVALID_ARGUMENT);
    }
    Ok(out.write(known(m.temperature_c)?)?)
}

/// `nvmlDeviceGetPowerUsage` (mW).
pub fn power(h: DeviceHandle, out: Out<u32>) -> R {
    Ok(out.write(known(mgmt(h)?.power_mw)?)?)
}

/// `nvmlDeviceGetPowerManagementLimit`, `nvmlDeviceGetEnforcedPowerLimit` (mW).
pub fn power_limit(h: DeviceHandle, out: Out<u32>) -> R {
    Ok(out.write(known(mgmt(h)?.power_limit_mw)?)?)
}

/// `nvmlClockType_t`: graphics 0, SM 1, memory 2, video 3.
fn clock_kind(ty: u32) -> Result<bool, NvmlReturn> {
    match ty {
        0 | 1 => Ok(false),
        2 => Ok(true),
        3 => Err(NvmlReturn::NOT_SUPPORTED),
        _ => Err(NvmlReturn::INVALID_ARGUMENT),
    }
}

/// `nvmlDeviceGetClockInfo` (MHz, now).
pub fn clock(h: DeviceHandle, ty: u32, out: Out<u32>) -> R {
    let m = mgmt(h)?;
    let v = if clock_kind(ty)? {
        m.mem_clock_mhz
    } else {
        m.sm_clock_mhz
    };
    Ok(out.write(known(v)?)?)
}

/// `nvmlDeviceGetMaxClockInfo` (MHz): the device's clock-rate attributes.
pub fn max_clock(h: DeviceHandle, ty: u32, out: Out<u32>) -> R {
    const CLOCK_RATE: u32 = 13;
    const MEMORY_CLOCK_RATE: u32 = 36;
    let info = device(h)?;
    let attr = if clock_kind(ty)? {
        MEMORY_CLOCK_RATE
    } else {
        CLOCK_RATE
    };
    let khz = info.attr(attr).unwrap_or(0).max(0) as u32;
    Ok(out.write(known(khz / 1000)?)?)
}

/// `nvmlDeviceGetComputeMode`: the device's compute-mode attribute (0, default).
pub fn compute_mode(h: DeviceHandle, out: Out<i32>) -> R {
    const COMPUTE_MODE: u32 = 20;
    Ok(out.write(device(h)?.attr(COMPUTE_MODE).unwrap_or(0))?)
}

/// `nvmlDeviceGetCudaComputeCapability`.
pub fn compute_capability(h: DeviceHandle, major: Out<i32>, minor: Out<i32>) -> R {
    let info = device(h)?;
    major.write(info.cc_major as i32)?;
    Ok(minor.write(info.cc_minor as i32)?)
}

/// `nvmlDeviceGetArchitecture` from the compute capability.
pub fn architecture(h: DeviceHandle, out: Out<u32>) -> R {
    let info = device(h)?;
    let arch = match (info.cc_major, info.cc_minor) {
        (7, 5) => 6,      // Turing
        (7, _) => 5,      // Volta
        (8, 9) => 8,      // Ada
        (8, _) => 7,      // Ampere
        (9, _) => 9,      // Hopper
        (10.., _) => 10,  // Blackwell
        _ => 0xffff_ffff, // unknown
    };
    Ok(out.write(arch)?)
}

/// Fixed answers for a vGPU: P0, persistence and display off, not a multi-GPU board.
pub fn zero(h: DeviceHandle, out: Out<u32>) -> R {
    device(h)?;
    Ok(out.write(0)?)
}

/// `nvmlProcessInfo_t` (v2: with the instance ids).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessInfo {
    pid: u32,
    used_gpu_memory: u64,
    gpu_instance_id: u32,
    compute_instance_id: u32,
}

/// `nvmlDeviceGetComputeRunningProcesses_v3` (and `_v2`): this process, with the device
/// memory its PD holds; INSUFFICIENT_SIZE (and the count) when the array is too small.
pub fn compute_processes(h: DeviceHandle, count: InOut<u32>, infos: OutArray<ProcessInfo>) -> R {
    let m = mgmt(h)?;
    let cap = count.read()?;
    count.write(1)?;
    let me = ProcessInfo {
        pid: std::process::id(),
        used_gpu_memory: m.mem_used,
        gpu_instance_id: u32::MAX,
        compute_instance_id: u32::MAX,
    };
    Ok(infos.write_all(cap as usize, std::iter::once(me))?)
}

/// `nvmlDeviceGetGraphicsRunningProcesses_v3` (and `_v2`): none (the vGPU runs compute only).
pub fn graphics_processes(h: DeviceHandle, count: InOut<u32>, _infos: OutArray<ProcessInfo>) -> R {
    device(h)?;
    count.read()?;
    Ok(count.write(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_parse_in_every_width() {
        assert_eq!(parse_bus_id("00000000:3B:00.0"), Some((0, 0x3b, 0, 0)));
        assert_eq!(parse_bus_id("0000:3b:1f.7"), Some((0, 0x3b, 0x1f, 7)));
        assert_eq!(parse_bus_id("nonsense"), None);
        assert_eq!(MEMORY_V2, 0x0200_0028);
    }
}
