//! `cudaDeviceProp` in the CUDA 12 layout (the bindgen'd type of `cudarc`), filled from the
//! driver's attributes, which libcuda.so.1 answers locally from the device info.

use crate::driver::Driver;
use cudarc::runtime::sys::cudaDeviceProp;

/// `CUdevice_attribute` → field, for the `int` fields.
fn int_fields(p: &mut cudaDeviceProp) -> Vec<(i32, &mut i32)> {
    vec![
        (12, &mut p.regsPerBlock),
        (10, &mut p.warpSize),
        (1, &mut p.maxThreadsPerBlock),
        (13, &mut p.clockRate),
        (75, &mut p.major),
        (76, &mut p.minor),
        (15, &mut p.deviceOverlap),
        (16, &mut p.multiProcessorCount),
        (17, &mut p.kernelExecTimeoutEnabled),
        (18, &mut p.integrated),
        (19, &mut p.canMapHostMemory),
        (20, &mut p.computeMode),
        (31, &mut p.concurrentKernels),
        (32, &mut p.ECCEnabled),
        (33, &mut p.pciBusID),
        (34, &mut p.pciDeviceID),
        (50, &mut p.pciDomainID),
        (35, &mut p.tccDriver),
        (40, &mut p.asyncEngineCount),
        (41, &mut p.unifiedAddressing),
        (36, &mut p.memoryClockRate),
        (37, &mut p.memoryBusWidth),
        (38, &mut p.l2CacheSize),
        (39, &mut p.maxThreadsPerMultiProcessor),
        (78, &mut p.streamPrioritiesSupported),
        (79, &mut p.globalL1CacheSupported),
        (80, &mut p.localL1CacheSupported),
        (82, &mut p.regsPerMultiprocessor),
        (83, &mut p.managedMemory),
        (84, &mut p.isMultiGpuBoard),
        (85, &mut p.multiGpuBoardGroupID),
        (88, &mut p.pageableMemoryAccess),
        (89, &mut p.concurrentManagedAccess),
        (90, &mut p.computePreemptionSupported),
        (91, &mut p.canUseHostPointerForRegisteredMem),
        (95, &mut p.cooperativeLaunch),
        (96, &mut p.cooperativeMultiDeviceLaunch),
        (100, &mut p.pageableMemoryAccessUsesHostPageTables),
        (101, &mut p.directManagedMemAccessFromHost),
        (106, &mut p.maxBlocksPerMultiProcessor),
        (115, &mut p.memoryPoolsSupported),
    ]
}

/// Fills `p` for device `dev`. Attributes the device does not report stay 0.
pub fn fill(d: &Driver, dev: i32, p: &mut cudaDeviceProp) -> Result<(), u32> {
    let attr = |a: i32| d.attribute(a, dev).unwrap_or(0);
    let mut name = [0 as std::ffi::c_char; 256];
    match d.name(&mut name, dev) {
        0 => p.name = name,
        e => return Err(e),
    }
    p.uuid.bytes = d.uuid(dev)?.map(|b| b as std::ffi::c_char);
    p.totalGlobalMem = d.total_mem(dev)?;
    for (a, field) in int_fields(p) {
        *field = attr(a);
    }
    p.maxThreadsDim = [attr(2), attr(3), attr(4)];
    p.maxGridSize = [attr(5), attr(6), attr(7)];
    let size = |v: i32| usize::try_from(v).unwrap_or(0);
    p.sharedMemPerBlock = size(attr(8));
    p.totalConstMem = size(attr(9));
    p.memPitch = size(attr(11));
    p.textureAlignment = size(attr(14));
    p.texturePitchAlignment = size(attr(51));
    p.sharedMemPerMultiprocessor = size(attr(81));
    p.sharedMemPerBlockOptin = size(attr(97));
    p.reservedSharedMemPerBlock = size(attr(111));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets a C program relies on (`tests/samples/device_query.c`) are the CUDA 12
    /// ones.
    #[test]
    fn cuda_12_layout() {
        assert_eq!(std::mem::size_of::<cudaDeviceProp>(), 1032);
        assert_eq!(std::mem::offset_of!(cudaDeviceProp, uuid), 256);
        assert_eq!(std::mem::offset_of!(cudaDeviceProp, totalGlobalMem), 288);
        assert_eq!(std::mem::offset_of!(cudaDeviceProp, major), 360);
        assert_eq!(std::mem::offset_of!(cudaDeviceProp, minor), 364);
        assert_eq!(
            std::mem::offset_of!(cudaDeviceProp, multiProcessorCount),
            388
        );
        assert_eq!(std::mem::offset_of!(cudaDeviceProp, integrated), 396);
    }
}
