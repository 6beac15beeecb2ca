//! PCI configuration space of VGPU-STUB (spec §2): a 256-byte type-0 header with the MSI-X
//! capability, modelled as registers plus a mask of the bits the driver may write.

use vgpu_proto::regs::pci;

/// Size of the configuration space we model.
pub const CONFIG_SIZE: usize = 256;

const COMMAND: usize = 0x04;
const BAR0: usize = 0x10;
const BAR2: usize = 0x18;
const CAP_PTR: usize = 0x34;
const INTERRUPT_LINE: usize = 0x3C;
const CAP_ID_MSIX: u8 = 0x11;

/// PCI Command register bits we implement.
pub mod command {
    /// Memory Space Enable.
    pub const MEMORY: u16 = 1 << 1;
    /// Bus Master Enable.
    pub const BUS_MASTER: u16 = 1 << 2;
    /// INTx Disable (no effect: the device has no INTx).
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// MSI-X Message Control bits.
pub mod msix_control {
    /// MSI-X Enable.
    pub const ENABLE: u16 = 1 << 15;
    /// Function Mask.
    pub const FUNCTION_MASK: u16 = 1 << 14;
}

/// The identity presented in configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            vendor: pci::VENDOR_ID,
            device: pci::DEVICE_ID,
        }
    }
}

/// Configuration space: bytes and a per-byte write mask.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    writable: [u8; CONFIG_SIZE],
}

impl ConfigSpace {
    /// Configuration space in its reset state.
    pub fn new(id: Identity) -> Self {
        let mut c = ConfigSpace {
            bytes: [0; CONFIG_SIZE],
            writable: [0; CONFIG_SIZE],
        };
        c.put16(0x00, id.vendor);
        c.put16(0x02, id.device);
        c.put16(0x06, 1 << 4); // Status: capabilities list
        c.bytes[0x08] = pci::REVISION;
        let class = pci::CLASS_CODE.to_le_bytes();
        c.bytes[0x09..0x0C].copy_from_slice(&class[..3]);
        c.put16(0x2C, pci::SUBSYSTEM_VENDOR_ID);
        c.put16(0x2E, pci::SUBSYSTEM_ID);
        c.bytes[CAP_PTR] = pci::MSIX_CAP_OFFSET;
        // Command: memory, bus master, INTx disable are writable.
        let cmd = command::MEMORY | command::BUS_MASTER | command::INTX_DISABLE;
        c.writable[COMMAND..COMMAND + 2].copy_from_slice(&cmd.to_le_bytes());
        // BARs: memory, 32-bit, non-prefetchable; address bits writable above the size.
        for (off, size) in [(BAR0, pci::REG_BAR_SIZE), (BAR2, pci::MSIX_BAR_SIZE)] {
            let mask = !(size as u32 - 1);
            c.writable[off..off + 4].copy_from_slice(&mask.to_le_bytes());
        }
        c.writable[INTERRUPT_LINE] = 0xFF;
        // MSI-X capability: id, next = 0, message control, table and PBA offset/BIR.
        let cap = pci::MSIX_CAP_OFFSET as usize;
        c.bytes[cap] = CAP_ID_MSIX;
        c.bytes[cap + 1] = 0;
        c.put16(cap + 2, pci::MSIX_VECTORS - 1);
        let ctl_mask = msix_control::ENABLE | msix_control::FUNCTION_MASK;
        c.writable[cap + 2..cap + 4].copy_from_slice(&ctl_mask.to_le_bytes());
        c.put32(cap + 4, pci::MSIX_TABLE_OFFSET | u32::from(pci::MSIX_BAR));
        c.put32(cap + 8, pci::MSIX_PBA_OFFSET | u32::from(pci::MSIX_BAR));
        c
    }

    fn put16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn get16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]])
    }

    /// Reads `data.len()` bytes at `offset`; bytes beyond the modelled space read as 0.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset
                .checked_add(i as u64)
                .filter(|a| *a < CONFIG_SIZE as u64);
            *b = at.map_or(0, |a| self.bytes[a as usize]);
        }
    }

    /// Writes through the write mask; bytes beyond the modelled space are ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let Some(a) = offset
                .checked_add(i as u64)
                .filter(|a| *a < CONFIG_SIZE as u64)
            else {
                continue;
            };
            let a = a as usize;
            let m = self.writable[a];
            self.bytes[a] = (self.bytes[a] & !m) | (b & m);
        }
    }

    /// The Command register.
    pub fn command(&self) -> u16 {
        self.get16(COMMAND)
    }

    /// True when Bus Master Enable is set: the device may DMA and interrupt.
    pub fn bus_master(&self) -> bool {
        self.command() & command::BUS_MASTER != 0
    }

    /// MSI-X Message Control.
    pub fn msix_control(&self) -> u16 {
        self.get16(pci::MSIX_CAP_OFFSET as usize + 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read32(c: &ConfigSpace, off: u64) -> u32 {
        let mut b = [0; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn identity_and_capability() {
        let c = ConfigSpace::new(Identity::default());
        assert_eq!(read32(&c, 0), 0x7667_1234);
        assert_eq!(read32(&c, 8) >> 8, 0x12_00_00);
        assert_eq!(read32(&c, 8) & 0xFF, 1);
        assert_eq!(read32(&c, 0x2C), 0x0001_1234);
        assert_eq!(c.bytes[0x34], 0x40);
        assert_eq!(read32(&c, 0x40) & 0xFF, 0x11);
        assert_eq!((read32(&c, 0x40) >> 16) & 0x7FF, 255);
        assert_eq!(read32(&c, 0x44), 2);
        assert_eq!(read32(&c, 0x48), 0x1002);
    }

    #[test]
    fn bar_sizing_and_masks() {
        let mut c = ConfigSpace::new(Identity::default());
        c.write(0x10, &u32::MAX.to_le_bytes());
        assert_eq!(read32(&c, 0x10), !(16 * 1024 - 1));
        c.write(0x18, &u32::MAX.to_le_bytes());
        assert_eq!(read32(&c, 0x18), !(8 * 1024 - 1));
        c.write(0x14, &u32::MAX.to_le_bytes());
        assert_eq!(read32(&c, 0x14), 0, "BAR1 is not implemented");
        c.write(0, &[0xFF; 4]);
        assert_eq!(read32(&c, 0), 0x7667_1234, "IDs are read-only");
        c.write(4, &0xFFFFu16.to_le_bytes());
        assert_eq!(
            c.command(),
            command::MEMORY | command::BUS_MASTER | command::INTX_DISABLE
        );
        assert!(c.bus_master());
        c.write(0x42, &0xFFFFu16.to_le_bytes());
        assert_eq!(c.msix_control(), 0xC000 | 255);
        let mut big = [0xAA; 8];
        c.read(252, &mut big);
        assert_eq!(&big[4..], &[0; 4]);
    }
}
