//! The exports of `libnvidia-ml.so.1`, one line each (`vgpu_shim_abi::exports!`): the C
//! signature, and the call that implements it.

use crate::device::{
    self as d, DeviceHandle as H, Memory, MemoryV2, PciInfo, ProcessInfo, Utilization,
};
use std::ffi::c_char;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::{CStrIn, InOut, Out, OutArray, StrOut};
use vgpu_shim_abi::status::NvmlReturn;

exports! {
    library "libnvidia-ml.so.1", status NvmlReturn;
    implemented fn nvmlInit_v2() => d::init();
    implemented fn nvmlInit() => d::init();
    /// `flags` (no-GPU and no-attach modes) change nothing here: there is one device.
    implemented fn nvmlInitWithFlags(_flags: u32) => d::init();
    implemented fn nvmlShutdown() => d::shutdown();
    plain fn nvmlErrorString(result: u32) -> *const c_char => NvmlReturn(result).text_ptr();
    implemented fn nvmlSystemGetDriverVersion(version: StrOut, length: u32) => d::driver_version(version, length);
    implemented fn nvmlSystemGetNVMLVersion(version: StrOut, length: u32) => d::nvml_version(version, length);
    implemented fn nvmlSystemGetCudaDriverVersion(version: Out<i32>) => d::cuda_version(version);
    implemented fn nvmlSystemGetCudaDriverVersion_v2(version: Out<i32>) => d::cuda_version(version);
    implemented fn nvmlDeviceGetCount_v2(count: Out<u32>) => d::count(count);
    implemented fn nvmlDeviceGetCount(count: Out<u32>) => d::count(count);
    implemented fn nvmlDeviceGetHandleByIndex_v2(index: u32, device: Out<H>) => d::by_index(index, device);
    implemented fn nvmlDeviceGetHandleByIndex(index: u32, device: Out<H>) => d::by_index(index, device);
    implemented fn nvmlDeviceGetHandleByUUID(uuid: CStrIn, device: Out<H>) => d::by_uuid(uuid, device);
    implemented fn nvmlDeviceGetHandleByPciBusId_v2(id: CStrIn, device: Out<H>) => d::by_bus_id(id, device);
    implemented fn nvmlDeviceGetHandleByPciBusId(id: CStrIn, device: Out<H>) => d::by_bus_id(id, device);
    implemented fn nvmlDeviceGetIndex(device: H, index: Out<u32>) => d::index(device, index);
    implemented fn nvmlDeviceGetMinorNumber(device: H, minor: Out<u32>) => d::index(device, minor);
    implemented fn nvmlDeviceGetName(device: H, name: StrOut, length: u32) => d::name(device, name, length);
    implemented fn nvmlDeviceGetUUID(device: H, uuid: StrOut, length: u32) => d::uuid(device, uuid, length);
    implemented fn nvmlDeviceGetSerial(device: H, serial: StrOut, length: u32) => d::serial(device, serial, length);
    implemented fn nvmlDeviceGetPciInfo_v3(device: H, pci: Out<PciInfo>) => d::pci_info(device, pci);
    implemented fn nvmlDeviceGetPciInfo_v2(device: H, pci: Out<PciInfo>) => d::pci_info(device, pci);
    implemented fn nvmlDeviceGetMemoryInfo(device: H, memory: Out<Memory>) => d::memory(device, memory);
    implemented fn nvmlDeviceGetMemoryInfo_v2(device: H, memory: InOut<MemoryV2>) => d::memory_v2(device, memory);
    implemented fn nvmlDeviceGetUtilizationRates(device: H, rates: Out<Utilization>) => d::utilization(device, rates);
    implemented fn nvmlDeviceGetTemperature(device: H, sensor: u32, temp: Out<u32>) => d::temperature(device, sensor, temp);
    implemented fn nvmlDeviceGetPowerUsage(device: H, power: Out<u32>) => d::power(device, power);
    implemented fn nvmlDeviceGetPowerManagementLimit(device: H, limit: Out<u32>) => d::power_limit(device, limit);
    implemented fn nvmlDeviceGetEnforcedPowerLimit(device: H, limit: Out<u32>) => d::power_limit(device, limit);
    implemented fn nvmlDeviceGetClockInfo(device: H, ty: u32, clock: Out<u32>) => d::clock(device, ty, clock);
    implemented fn nvmlDeviceGetMaxClockInfo(device: H, ty: u32, clock: Out<u32>) => d::max_clock(device, ty, clock);
    implemented fn nvmlDeviceGetComputeMode(device: H, mode: Out<i32>) => d::compute_mode(device, mode);
    implemented fn nvmlDeviceGetCudaComputeCapability(device: H, major: Out<i32>, minor: Out<i32>) => d::compute_capability(device, major, minor);
    implemented fn nvmlDeviceGetArchitecture(device: H, arch: Out<u32>) => d::architecture(device, arch);
    implemented fn nvmlDeviceGetPerformanceState(device: H, state: Out<u32>) => d::zero(device, state);
    implemented fn nvmlDeviceGetPersistenceMode(device: H, mode: Out<u32>) => d::zero(device, mode);
    implemented fn nvmlDeviceGetDisplayMode(device: H, mode: Out<u32>) => d::zero(device, mode);
    implemented fn nvmlDeviceGetDisplayActive(device: H, active: Out<u32>) => d::zero(device, active);
    implemented fn nvmlDeviceGetMultiGpuBoard(device: H, multi: Out<u32>) => d::zero(device, multi);
    implemented fn nvmlDeviceGetComputeRunningProcesses_v3(device: H, count: InOut<u32>, infos: OutArray<ProcessInfo>) => d::compute_processes(device, count, infos);
    implemented fn nvmlDeviceGetComputeRunningProcesses_v2(device: H, count: InOut<u32>, infos: OutArray<ProcessInfo>) => d::compute_processes(device, count, infos);
    implemented fn nvmlDeviceGetGraphicsRunningProcesses_v3(device: H, count: InOut<u32>, infos: OutArray<ProcessInfo>) => d::graphics_processes(device, count, infos);
    implemented fn nvmlDeviceGetGraphicsRunningProcesses_v2(device: H, count: InOut<u32>, infos: OutArray<ProcessInfo>) => d::graphics_processes(device, count, infos);
    // The old structure layouts, and what a vGPU does not have.
    not_supported fn nvmlDeviceGetPciInfo;
    not_supported fn nvmlDeviceGetComputeRunningProcesses;
    not_supported fn nvmlDeviceGetGraphicsRunningProcesses;
    not_supported fn nvmlDeviceGetFanSpeed;
    not_supported fn nvmlDeviceGetFanSpeed_v2;
    not_supported fn nvmlDeviceGetNumFans;
    not_supported fn nvmlDeviceGetEccMode;
    not_supported fn nvmlDeviceGetTotalEccErrors;
    not_supported fn nvmlDeviceGetBAR1MemoryInfo;
    not_supported fn nvmlDeviceGetBrand;
    not_supported fn nvmlDeviceGetBoardPartNumber;
    not_supported fn nvmlDeviceGetVbiosVersion;
    not_supported fn nvmlDeviceGetInforomVersion;
    not_supported fn nvmlDeviceGetCurrPcieLinkGeneration;
    not_supported fn nvmlDeviceGetCurrPcieLinkWidth;
    not_supported fn nvmlDeviceGetMaxPcieLinkGeneration;
    not_supported fn nvmlDeviceGetMaxPcieLinkWidth;
    not_supported fn nvmlDeviceGetPcieThroughput;
    not_supported fn nvmlDeviceGetEncoderUtilization;
    not_supported fn nvmlDeviceGetDecoderUtilization;
    not_supported fn nvmlDeviceGetPowerState;
    not_supported fn nvmlDeviceGetPowerManagementMode;
    not_supported fn nvmlDeviceGetTotalEnergyConsumption;
    not_supported fn nvmlDeviceGetMigMode;
    not_supported fn nvmlDeviceGetSupportedClocksThrottleReasons;
    not_supported fn nvmlDeviceGetCurrentClocksThrottleReasons;
    not_supported fn nvmlDeviceGetCurrentClocksEventReasons;
    not_supported fn nvmlDeviceGetTemperatureThreshold;
    not_supported fn nvmlDeviceGetTopologyCommonAncestor;
    not_supported fn nvmlDeviceGetP2PStatus;
    not_supported fn nvmlDeviceGetNvLinkState;
    not_supported fn nvmlDeviceGetAccountingMode;
    not_supported fn nvmlDeviceGetRetiredPages;
    not_supported fn nvmlDeviceGetProcessUtilization;
    not_supported fn nvmlDeviceGetSamples;
    not_supported fn nvmlDeviceSetComputeMode;
    not_supported fn nvmlDeviceSetPersistenceMode;
    not_supported fn nvmlDeviceSetPowerManagementLimit;
    not_supported fn nvmlDeviceGetVirtualizationMode;
    not_supported fn nvmlUnitGetCount;
    not_supported fn nvmlSystemGetProcessName;
    not_supported fn nvmlEventSetCreate;
    not_supported fn nvmlEventSetFree;
    not_supported fn nvmlDeviceRegisterEvents;
    not_supported fn nvmlEventSetWait_v2;
    not_supported fn nvmlInternalGetExportTable;
}
