//! # libnvidia-ml.so.1 (NVML) over vgpu
//!
//! Linked into `libnvidia-ml.so.1` (SONAME `libnvidia-ml.so.1`, unversioned exports) by
//! `ci/build-shims.sh`. NVML's answers come from the vGPU: the device info the process
//! received at connection and MGMT_QUERY (spec §6.9), both through the private export table
//! of `libcuda.so.1`, which this library opens at `nvmlInit`. So NVML and the driver API
//! agree: the same name, UUID (`GPU-…`), PCI bus id, and memory (the PD's quota, as
//! `cuMemGetInfo` reports it).
//!
//! * `ffi.rs`: the export table (every exported function, implemented or not supported);
//! * `device.rs`: initialisation, the one device handle, and the queries.
//!
//! There is one device; NVML sees it whatever `CUDA_VISIBLE_DEVICES` says, as NVIDIA's does.
//! Sensors the device does not report (temperature, power, clocks when 0) are
//! NOT_SUPPORTED, as NVIDIA's NVML answers for sensors a board lacks. Running compute
//! processes: this process only (other PDs' processes are not visible from a PD).

mod device;
pub mod ffi;
