//! C structures the cuda executor hands to the driver, declared with plain integer fields
//! (cudarc's bindgen'd twins carry Rust enums, which only valid variants may fill); a test
//! checks each against cudarc's size.

use super::api::DevPtr;
use std::ffi::c_void;

/// `CUuuid`.
#[repr(C)]
pub struct CuUuid {
    pub bytes: [u8; 16],
}

/// `CUmemorytype`: host memory.
pub const MEMORYTYPE_HOST: u32 = 1;
/// `CUmemorytype`: device memory.
pub const MEMORYTYPE_DEVICE: u32 = 2;

/// `CUDA_MEMCPY2D`.
#[repr(C)]
pub struct Cu2D {
    pub src_x_in_bytes: usize,
    pub src_y: usize,
    pub src_memory_type: u32,
    pub src_host: *const c_void,
    pub src_device: DevPtr,
    pub src_array: *mut c_void,
    pub src_pitch: usize,
    pub dst_x_in_bytes: usize,
    pub dst_y: usize,
    pub dst_memory_type: u32,
    pub dst_host: *mut c_void,
    pub dst_device: DevPtr,
    pub dst_array: *mut c_void,
    pub dst_pitch: usize,
    pub width_in_bytes: usize,
    pub height: usize,
}

impl Default for Cu2D {
    fn default() -> Self {
        Cu2D {
            src_x_in_bytes: 0,
            src_y: 0,
            src_memory_type: MEMORYTYPE_DEVICE,
            src_host: std::ptr::null(),
            src_device: 0,
            src_array: std::ptr::null_mut(),
            src_pitch: 0,
            dst_x_in_bytes: 0,
            dst_y: 0,
            dst_memory_type: MEMORYTYPE_DEVICE,
            dst_host: std::ptr::null_mut(),
            dst_device: 0,
            dst_array: std::ptr::null_mut(),
            dst_pitch: 0,
            width_in_bytes: 0,
            height: 0,
        }
    }
}

/// `CUlaunchAttribute`: an id and a 64-byte value, of which vgpu's attributes use the
/// first three 32-bit words.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct CuLaunchAttr {
    pub id: u32,
    pub pad: [u8; 4],
    pub value: [u32; 16],
}

/// `CUlaunchConfig`.
#[repr(C)]
pub struct CuLaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
    pub stream: *mut c_void,
    pub attrs: *const CuLaunchAttr,
    pub num_attrs: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cudarc::driver::sys as cu;
    use std::mem::{offset_of, size_of};

    #[test]
    fn structures_match_cudas() {
        assert_eq!(size_of::<Cu2D>(), size_of::<cu::CUDA_MEMCPY2D>());
        assert_eq!(
            offset_of!(Cu2D, dst_memory_type),
            offset_of!(cu::CUDA_MEMCPY2D, dstMemoryType)
        );
        assert_eq!(
            offset_of!(Cu2D, height),
            offset_of!(cu::CUDA_MEMCPY2D, Height)
        );
        assert_eq!(size_of::<CuUuid>(), size_of::<cu::CUuuid>());
        assert_eq!(
            size_of::<CuLaunchAttr>(),
            size_of::<cu::CUlaunchAttribute>()
        );
        assert_eq!(
            offset_of!(CuLaunchAttr, value),
            offset_of!(cu::CUlaunchAttribute, value)
        );
        assert_eq!(size_of::<CuLaunchConfig>(), size_of::<cu::CUlaunchConfig>());
        assert_eq!(
            offset_of!(CuLaunchConfig, stream),
            offset_of!(cu::CUlaunchConfig, hStream)
        );
        assert_eq!(
            offset_of!(CuLaunchConfig, num_attrs),
            offset_of!(cu::CUlaunchConfig, numAttrs)
        );
        assert_eq!(cu::CUmemorytype::CU_MEMORYTYPE_HOST as u32, MEMORYTYPE_HOST);
        assert_eq!(
            cu::CUmemorytype::CU_MEMORYTYPE_DEVICE as u32,
            MEMORYTYPE_DEVICE
        );
    }
}
