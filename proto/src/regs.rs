//! PCI identity, BAR layout and the BAR0 register map of VGPU-STUB (spec §2–§3).

/// PCI identity of VGPU-STUB (spec §2.1). The IDs are defaults: both the device model and
/// the udev rule accept others. `pci-ids/README.md` explains the choice.
pub mod pci {
    /// Vendor ID 0x1234: the ID QEMU uses for emulated devices that have no PCI-SIG
    /// assignment; no in-kernel driver matches 0x1234 with our device ID.
    pub const VENDOR_ID: u16 = 0x1234;
    /// Device ID of VGPU-STUB.
    pub const DEVICE_ID: u16 = 0x7667;
    /// Subsystem vendor ID.
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x1234;
    /// Subsystem ID: identifies the ABI generation (1 = this specification, version 1.x).
    pub const SUBSYSTEM_ID: u16 = 0x0001;
    /// Revision ID.
    pub const REVISION: u8 = 0x01;
    /// Class code (base class, subclass, programming interface): 0x12 processing
    /// accelerator, subclass 0x00, interface 0x00.
    pub const CLASS_CODE: u32 = 0x12_00_00;
    /// BAR index of the register / doorbell window.
    pub const REG_BAR: u8 = 0;
    /// Size of BAR0 in bytes (32-bit, non-prefetchable memory).
    pub const REG_BAR_SIZE: u64 = 16 * 1024;
    /// BAR index holding the MSI-X table and PBA.
    pub const MSIX_BAR: u8 = 2;
    /// Size of BAR2 in bytes (32-bit, non-prefetchable memory).
    pub const MSIX_BAR_SIZE: u64 = 8 * 1024;
    /// Offset of the MSI-X table inside BAR2.
    pub const MSIX_TABLE_OFFSET: u32 = 0x0000;
    /// Offset of the MSI-X pending-bit array inside BAR2.
    pub const MSIX_PBA_OFFSET: u32 = 0x1000;
    /// Number of MSI-X vectors: vector 0 for the admin queue and device events, one per
    /// I/O queue after it.
    pub const MSIX_VECTORS: u16 = 256;
    /// Offset of the MSI-X capability in configuration space.
    pub const MSIX_CAP_OFFSET: u8 = 0x40;
}

/// The magic value read at [`MAGIC`]: the bytes "VGPU".
pub const MAGIC_VALUE: u32 = u32::from_le_bytes(*b"VGPU");
/// ABI major version: a driver must refuse a device whose major it does not know.
pub const VERSION_MAJOR: u16 = 1;
/// ABI minor version: additions that an older driver can ignore.
pub const VERSION_MINOR: u16 = 0;
/// The value read at [`VERSION`].
pub const VERSION_VALUE: u32 = ((VERSION_MAJOR as u32) << 16) | VERSION_MINOR as u32;

// ---- BAR0 register offsets (spec §3.1) ----
/// u32 RO: [`MAGIC_VALUE`].
pub const MAGIC: u64 = 0x000;
/// u32 RO: [`VERSION_VALUE`] (major << 16 | minor).
pub const VERSION: u64 = 0x004;
/// u64 RO: features the device offers ([`features`]).
pub const DEV_FEATURES: u64 = 0x008;
/// u64 RW: features the driver accepts; read by the device when ENABLE is set.
pub const DRV_FEATURES: u64 = 0x010;
/// u32 RO: limits ([`caps`]).
pub const CAPS: u64 = 0x018;
/// u32 RO: number of MSI-X vectors.
pub const NUM_VECTORS: u64 = 0x01C;
/// u32 RW: [`control`] bits.
pub const CONTROL: u64 = 0x020;
/// u32 RO: [`status`] bits.
pub const STATUS: u64 = 0x024;
/// u32 RO: why the device is in the fatal state ([`fatal`]); 0 otherwise.
pub const FATAL_CODE: u64 = 0x028;
/// u32 RW: log2 of the admin queue depth (1..=[`MAX_ADMIN_DEPTH_LOG2`]).
pub const ADMIN_DEPTH: u64 = 0x02C;
/// u64 RW: IOVA of the admin queue region (4096-byte aligned).
pub const ADMIN_BASE: u64 = 0x030;
/// u32 RW: scratch register with no effect, for access tests.
pub const SCRATCH: u64 = 0x038;
/// u32 RO: number of I/O queues that currently exist.
pub const IO_QUEUES: u64 = 0x03C;
/// First doorbell register; doorbell of queue `q` is at `DOORBELL_BASE + 4 * q`.
pub const DOORBELL_BASE: u64 = 0x1000;
/// Distance between two doorbells.
pub const DOORBELL_STRIDE: u64 = 4;

/// Offset of the doorbell register of queue `qid` (0 = admin queue).
pub const fn doorbell(qid: u16) -> u64 {
    DOORBELL_BASE + DOORBELL_STRIDE * qid as u64
}

/// Width and access of one BAR0 register, as the spec's register table lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegDesc {
    /// Register name as in the spec.
    pub name: &'static str,
    /// Offset in BAR0.
    pub offset: u64,
    /// Width in bytes (4 or 8).
    pub width: u8,
    /// True when the driver may write it.
    pub writable: bool,
    /// Value after reset (for read-only registers: the fixed value, or 0 when it varies).
    pub reset: u64,
}

/// Every register below the doorbells, in offset order (spec §3.1).
pub const REGISTERS: &[RegDesc] = &[
    RegDesc {
        name: "MAGIC",
        offset: MAGIC,
        width: 4,
        writable: false,
        reset: MAGIC_VALUE as u64,
    },
    RegDesc {
        name: "VERSION",
        offset: VERSION,
        width: 4,
        writable: false,
        reset: VERSION_VALUE as u64,
    },
    RegDesc {
        name: "DEV_FEATURES",
        offset: DEV_FEATURES,
        width: 8,
        writable: false,
        reset: features::ALL,
    },
    RegDesc {
        name: "DRV_FEATURES",
        offset: DRV_FEATURES,
        width: 8,
        writable: true,
        reset: 0,
    },
    RegDesc {
        name: "CAPS",
        offset: CAPS,
        width: 4,
        writable: false,
        reset: caps::VALUE as u64,
    },
    RegDesc {
        name: "NUM_VECTORS",
        offset: NUM_VECTORS,
        width: 4,
        writable: false,
        reset: pci::MSIX_VECTORS as u64,
    },
    RegDesc {
        name: "CONTROL",
        offset: CONTROL,
        width: 4,
        writable: true,
        reset: 0,
    },
    RegDesc {
        name: "STATUS",
        offset: STATUS,
        width: 4,
        writable: false,
        reset: 0,
    },
    RegDesc {
        name: "FATAL_CODE",
        offset: FATAL_CODE,
        width: 4,
        writable: false,
        reset: 0,
    },
    RegDesc {
        name: "ADMIN_DEPTH",
        offset: ADMIN_DEPTH,
        width: 4,
        writable: true,
        reset: 0,
    },
    RegDesc {
        name: "ADMIN_BASE",
        offset: ADMIN_BASE,
        width: 8,
        writable: true,
        reset: 0,
    },
    RegDesc {
        name: "SCRATCH",
        offset: SCRATCH,
        width: 4,
        writable: true,
        reset: 0,
    },
    RegDesc {
        name: "IO_QUEUES",
        offset: IO_QUEUES,
        width: 4,
        writable: false,
        reset: 0,
    },
];

/// Looks up the register that starts at `offset`.
pub fn register_at(offset: u64) -> Option<&'static RegDesc> {
    REGISTERS.iter().find(|r| r.offset == offset)
}

/// Bits of the CONTROL register.
pub mod control {
    /// 0→1: validate DRV_FEATURES and the admin queue registers and start the device.
    /// 1→0: the same as RESET except that DRV_FEATURES and the admin registers are kept.
    pub const ENABLE: u32 = 1 << 0;
    /// Write 1: full reset (spec §4.1). Self-clearing: always reads 0.
    pub const RESET: u32 = 1 << 1;
    /// Bits that are not defined: written as 0, read as 0.
    pub const RESERVED: u32 = !(ENABLE | RESET);
}

/// Bits of the STATUS register.
pub mod status {
    /// The device is enabled and serving the admin queue.
    pub const READY: u32 = 1 << 0;
    /// The device is in the fatal state; FATAL_CODE says why. Only RESET leaves it.
    pub const FATAL: u32 = 1 << 1;
}

/// Values of FATAL_CODE.
pub mod fatal {
    /// Not in the fatal state.
    pub const NONE: u32 = 0;
    /// ENABLE was set with ADMIN_DEPTH out of range or ADMIN_BASE misaligned.
    pub const BAD_ADMIN_CONFIG: u32 = 1;
    /// ENABLE was set with DRV_FEATURES not a subset of DEV_FEATURES.
    pub const BAD_FEATURES: u32 = 2;
    /// The admin queue region is not (or no longer) covered by DMA-mapped memory.
    pub const ADMIN_DMA_FAULT: u32 = 3;
    /// The executor can no longer run work (for example the host GPU was lost).
    pub const EXECUTOR_LOST: u32 = 4;
    /// An internal invariant of the device model failed.
    pub const INTERNAL: u32 = 5;
}

/// Feature bits of DEV_FEATURES / DRV_FEATURES (spec §3.3).
pub mod features {
    /// Inline payloads in the ring slots after an entry (FLAG_INLINE).
    pub const INLINE_PAYLOAD: u64 = 1 << 0;
    /// Module loading by content hash with a device-side cache (MODULE_LOAD_BY_HASH).
    pub const MODULE_CACHE: u64 = 1 << 1;
    /// Stream capture and graphs.
    pub const GRAPHS: u64 = 1 << 2;
    /// Host-function callbacks (HOST_FUNC).
    pub const HOST_FUNC: u64 = 1 << 3;
    /// The cuBLAS GEMM family (BLAS_* opcodes).
    pub const BLAS: u64 = 1 << 4;
    /// cuBLASLt matmul (BLASLT_MATMUL).
    pub const BLASLT: u64 = 1 << 5;
    /// Every feature this version of the ABI defines.
    pub const ALL: u64 = INLINE_PAYLOAD | MODULE_CACHE | GRAPHS | HOST_FUNC | BLAS | BLASLT;
}

/// Limits, as encoded in the CAPS register.
pub mod caps {
    /// Highest I/O queue id (I/O queues are 1..=MAX_IO_QUEUES).
    pub const MAX_IO_QUEUES: u32 = 255;
    /// Largest log2 depth of an I/O queue.
    pub const MAX_IO_DEPTH_LOG2: u32 = 15;
    /// Largest log2 depth of the admin queue.
    pub const MAX_ADMIN_DEPTH_LOG2: u32 = 12;
    /// CAPS = MAX_IO_QUEUES | MAX_IO_DEPTH_LOG2 << 16 | MAX_ADMIN_DEPTH_LOG2 << 24.
    pub const VALUE: u32 = MAX_IO_QUEUES | (MAX_IO_DEPTH_LOG2 << 16) | (MAX_ADMIN_DEPTH_LOG2 << 24);

    /// Splits a CAPS value into (max I/O queues, max I/O depth log2, max admin depth log2).
    pub const fn decode(v: u32) -> (u32, u32, u32) {
        (v & 0xFFFF, (v >> 16) & 0xFF, (v >> 24) & 0xFF)
    }
}

pub use caps::{MAX_ADMIN_DEPTH_LOG2, MAX_IO_DEPTH_LOG2, MAX_IO_QUEUES};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_reads_vgpu() {
        assert_eq!(MAGIC_VALUE.to_le_bytes(), *b"VGPU");
        assert_eq!(MAGIC_VALUE, 0x5550_4756);
    }

    #[test]
    fn registers_are_aligned_and_disjoint() {
        let mut end = 0;
        for r in REGISTERS {
            assert_eq!(r.offset % r.width as u64, 0, "{} misaligned", r.name);
            assert!(r.offset >= end, "{} overlaps", r.name);
            end = r.offset + r.width as u64;
        }
        assert!(end <= DOORBELL_BASE);
    }

    #[test]
    fn doorbells_fit_bar0() {
        assert_eq!(doorbell(0), 0x1000);
        assert!(doorbell(MAX_IO_QUEUES as u16) + 4 <= pci::REG_BAR_SIZE);
    }

    #[test]
    fn msix_fits_bar2() {
        let table = pci::MSIX_VECTORS as u32 * 16;
        assert!(pci::MSIX_TABLE_OFFSET + table <= pci::MSIX_PBA_OFFSET);
        assert!(
            pci::MSIX_PBA_OFFSET as u64 + (pci::MSIX_VECTORS as u64).div_ceil(64) * 8
                <= pci::MSIX_BAR_SIZE
        );
        assert_eq!(pci::MSIX_VECTORS as u32, MAX_IO_QUEUES + 1);
    }

    #[test]
    fn caps_round_trip() {
        assert_eq!(
            caps::decode(caps::VALUE),
            (MAX_IO_QUEUES, MAX_IO_DEPTH_LOG2, MAX_ADMIN_DEPTH_LOG2)
        );
    }
}
