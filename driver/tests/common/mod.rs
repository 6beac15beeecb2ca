//! What only the driver's tests need beyond `vgpu-test-stack`: a backing that addresses
//! vgpu-stub by physical address, as the no-IOMMU mode does.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use vgpu_driver::backing::{AddressSpace, DeviceBacking, DmaRegion};
use vgpu_driver::DriverError;
pub use vgpu_test_stack::control::{hello_body, DriverClient};
pub use vgpu_test_stack::wait::eventually;
pub use vgpu_test_stack::{Link, Stack};

/// vgpu-stub reached as a device with no IOMMU is: the driver's DMA memory is locked huge
/// pages given by physical address (the no-IOMMU backing's own `lock_physical`), and the
/// vfio-user server maps each region at that address. Everything but the VFIO ioctls of
/// the no-IOMMU mode runs as it would in a VM.
pub struct PhysicalOverVfioUser {
    pub inner: Box<dyn DeviceBacking>,
    /// Every region mapped: (physical address, length).
    pub mapped: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl DeviceBacking for PhysicalOverVfioUser {
    fn describe(&self) -> String {
        format!("physical:{}", self.inner.describe())
    }
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), DriverError> {
        self.inner.config_read(off, buf)
    }
    fn config_write(&self, off: u64, data: &[u8]) -> Result<(), DriverError> {
        self.inner.config_write(off, data)
    }
    fn read32(&self, off: u64) -> Result<u32, DriverError> {
        self.inner.read32(off)
    }
    fn write32(&self, off: u64, v: u32) -> Result<(), DriverError> {
        self.inner.write32(off, v)
    }
    fn vector_eventfd(&self, vector: u16) -> Result<vmm_sys_util::eventfd::EventFd, DriverError> {
        self.inner.vector_eventfd(vector)
    }
    fn dma_map(&self, r: &DmaRegion<'_>) -> Result<u64, DriverError> {
        assert_eq!(r.iova, 0, "no IOVA is allocated with no IOMMU");
        let pa = vgpu_driver::noiommu::lock_physical(r.mem)?;
        self.inner.dma_map(&DmaRegion {
            iova: pa,
            mem: r.mem,
        })?;
        self.mapped.lock().unwrap().push((pa, r.bytes()));
        Ok(pa)
    }
    fn dma_unmap(&self, iova: u64, len: u64) -> Result<(), DriverError> {
        self.mapped.lock().unwrap().retain(|&(a, _)| a != iova);
        self.inner.dma_unmap(iova, len)
    }
    fn address_space(&self) -> AddressSpace {
        AddressSpace::Physical
    }
    fn close(&self) {
        self.inner.close()
    }
}

/// Free huge pages of the default size.
pub fn free_huge_pages() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
