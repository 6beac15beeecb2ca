//! # vgpu-driver: the guest-side VFIO driver daemon
//!
//! Claims VGPU-STUB, brings it up (spec §4.2), and serves its queues and DMA memory to the
//! shim libraries of each application over a Unix-socket control plane (spec §9): every
//! client gets its own protection domain, I/O queue, windows, interrupt eventfd and
//! doorbell eventfd, and everything is reclaimed when the client goes away.
//!
//! * [`backing`]: device access behind a trait, and the vfio-user backing (vgpu-stub).
//! * [`kernel_vfio`]: the kernel VFIO backing, a type1 container behind an IOMMU (inside a
//!   VM, a virtual one), and what both kernel backings share (finding the device in sysfs).
//! * [`noiommu`]: the kernel VFIO backing with no IOMMU (unsafe mode), and
//!   [`physmem`], the physical addresses it gives the device.
//! * [`vfio_raw`]: the VFIO ioctls vfio-ioctls lacks, on vfio-bindings' types (the
//!   no-IOMMU container, and the IOVA ranges a type1 IOMMU reports).
//! * [`device`]: bring-up, the admin queue and DMA memory.
//! * [`server`]: the control plane: clients, admission limits, windows, cleanup.
//! * [`client`]: a minimal control-plane client (the `status` command, tests).
//! * [`iova`]: IOVA allocation.
//!
//! Errors are [`DriverError`]; what the host's setup must fix is a [`SetupError`] in it.
//!
//! Shared memory (queue regions and windows: memfds, on huge pages when they can be) is
//! [`vgpu_os::shm::SharedMemory`]; waiting on descriptors and adopting received ones is
//! [`vgpu_os::fd`].
//!
//! `unsafe` is denied in the crate except in [`vfio_raw`] (the ioctls, adopting the device
//! descriptor one returns, and BAR0 mapped into the process) and [`kernel_vfio`]
//! (vfio-ioctls' DMA map, which takes a raw host address, and borrowing the device's
//! descriptor for configuration-space reads and writes).

#![deny(unsafe_code)]

pub mod backing;
pub mod client;
pub mod device;
pub mod iova;
#[allow(
    unsafe_code,
    reason = "vfio-ioctls maps DMA by raw host address; the device descriptor is borrowed"
)]
pub mod kernel_vfio;
pub mod noiommu;
pub mod physmem;
pub mod server;
#[allow(
    unsafe_code,
    reason = "VFIO ioctls; adopts the device descriptor; maps BAR0"
)]
pub mod vfio_raw;

use std::path::PathBuf;
use std::time::Duration;
use vgpu_proto::{DecodeError, Opcode, Status};

/// Why the driver could not do something.
///
/// A variant that wraps a lower-level error keeps it as its
/// [`source`](std::error::Error::source) and leaves it out of its own message;
/// [`DriverError::report`] gives the message with its sources.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A vfio-user request to vgpu-stub failed, connecting included.
    #[error("{what} over vfio-user socket {}", socket.display())]
    VfioUser {
        /// The server's socket.
        socket: PathBuf,
        /// What the driver asked for.
        what: &'static str,
        /// The vfio-user client's error.
        #[source]
        source: vfio_user::Error,
    },
    /// A kernel VFIO call through vfio-ioctls failed (the type1 container and its device).
    #[error("VFIO: {what}")]
    Vfio {
        /// What the driver asked for.
        what: &'static str,
        /// vfio-ioctls' error.
        #[source]
        source: vfio_ioctls::VfioError,
    },
    /// A system call on a VFIO or sysfs file failed (the no-IOMMU container, its group and
    /// device); [`Io`](Self::Io) is the same without the context.
    #[error("{what}")]
    Os {
        /// What the driver was doing.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The host is not set up to hand the device to the driver, or an argument names
    /// nothing; the message says what to fix.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The device has no such MSI-X vector.
    #[error("MSI-X vector {vector} does not exist")]
    NoSuchVector {
        /// The vector asked for.
        vector: u16,
    },
    /// An access falls outside a region of the device (config space or BAR0).
    #[error("access of {len} bytes at {off:#x} is outside a region of {size:#x} bytes")]
    OutsideRegion {
        /// Offset of the access in the region.
        off: u64,
        /// Length of the access.
        len: usize,
        /// Size of the region.
        size: u64,
    },
    /// The device's MAGIC register does not hold VGPU-STUB's value.
    #[error("{vendor:04x}:{device:04x} is not a VGPU-STUB (magic {magic:#x})")]
    NotVgpuStub {
        /// PCI vendor ID.
        vendor: u16,
        /// PCI device ID.
        device: u16,
        /// What MAGIC holds.
        magic: u32,
    },
    /// The device's VERSION register names an ABI major version the driver does not speak.
    #[error("VGPU-STUB ABI {major}.{minor} is not supported (need major {need})")]
    UnsupportedAbi {
        /// The device's major version.
        major: u16,
        /// The device's minor version.
        minor: u16,
        /// The major version the driver speaks.
        need: u16,
    },
    /// Bus mastering and memory decoding did not stay on in the PCI command register.
    #[error("bus mastering could not be enabled (PCI command register {command:#06x})")]
    BusMasterOff {
        /// What the command register read back.
        command: u16,
    },
    /// The device did not become ready after enable: it reported a fatal error, or the
    /// wait ran out.
    #[error("{}", match .fatal_code {
        Some(code) => format!("device refused to enable (FATAL_CODE {code})"),
        None => format!("device did not become ready within {:?} (STATUS {:#x})", .waited, .status),
    })]
    NotReady {
        /// The STATUS register.
        status: u32,
        /// The FATAL_CODE register, when STATUS has FATAL set.
        fatal_code: Option<u32>,
        /// How long the driver waited.
        waited: Duration,
    },
    /// An admin command did not complete in time.
    #[error("admin command {opcode:?} timed out after {waited:?} (STATUS {status:#x})")]
    AdminTimeout {
        /// The command's opcode.
        opcode: Opcode,
        /// How long the driver waited.
        waited: Duration,
        /// The STATUS register after the wait (0 if it could not be read).
        status: u32,
    },
    /// The device stopped answering as VGPU-STUB (its link is gone, or it was removed: MAGIC
    /// reads something else) or entered its fatal state.
    #[error("the device was lost: {why}")]
    DeviceLost {
        /// What the liveness check saw.
        why: String,
    },
    /// The admin queue was torn down (the device was shut down).
    #[error("the admin queue is gone")]
    AdminQueueGone,
    /// IDENTIFY completed with a failing status during bring-up.
    #[error("IDENTIFY failed: {status}")]
    IdentifyFailed {
        /// The completion's status.
        status: Status,
    },
    /// IDENTIFY returned device information that does not check out.
    #[error("IDENTIFY returned bad device info")]
    BadDeviceInfo(#[source] DecodeError),
    /// The device refused an admin command.
    #[error("device refused the command: {0}")]
    Refused(Status),
    /// Shared memory (a memfd and its mapping) could not be made.
    #[error("cannot make shared memory")]
    Shm(#[from] vgpu_os::shm::ShmError),
    /// Memory or IOVA space ran out.
    #[error("out of memory: {0}")]
    NoMemory(String),
    /// What was asked cannot be done on this backing; the message says why.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// An operating-system call failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl DriverError {
    /// The message followed by those of its sources, each once: what the daemon prints,
    /// logs and sends to clients. (The errors of vfio-user and vfio-ioctls repeat their
    /// source's message in their own; it is not repeated again.)
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            let m = e.to_string();
            if !out.contains(&m) {
                out.push_str(": ");
                out.push_str(&m);
            }
            next = e.source();
        }
        out
    }
}

/// What keeps the driver from reaching the device, or from serving it, that the host's
/// setup or the driver's arguments must fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `--device` is neither a PCI address nor `VENDOR:DEVICE`.
    #[error("`{spec}` is neither a PCI address nor VENDOR:DEVICE in hex")]
    BadDeviceSpec {
        /// What was given.
        spec: String,
    },
    /// No PCI device matches `--device`.
    #[error("no PCI device {spec} (is the VM's VGPU-STUB present?)")]
    NoSuchDevice {
        /// The address, or `VENDOR:DEVICE`, looked for.
        spec: String,
    },
    /// The device is not bound to vfio-pci.
    #[error(
        "{} is {}vfio-pci (install udev/70-vgpu-stub.rules)",
        device.display(),
        match .driver {
            Some(d) => format!("bound to {d}, not "),
            None => "not bound to ".to_string(),
        }
    )]
    NotBoundToVfio {
        /// The device's sysfs directory.
        device: PathBuf,
        /// The driver it is bound to, if any.
        driver: Option<String>,
    },
    /// The device's sysfs directory has no (readable) `iommu_group` link.
    #[error("{} has no IOMMU group", device.display())]
    NoIommuGroup {
        /// The device's sysfs directory.
        device: PathBuf,
        /// Why the link could not be read (none: it names no group number).
        #[source]
        source: Option<std::io::Error>,
    },
    /// The kernel has no VFIO no-IOMMU mode.
    #[error(
        "this kernel has no VFIO no-IOMMU mode (vfio is not loaded, or it was built without \
         CONFIG_VFIO_NOIOMMU); give the VM a virtual IOMMU and run without --no-iommu"
    )]
    NoIommuNotInKernel,
    /// VFIO's no-IOMMU mode is switched off.
    #[error(
        "VFIO's no-IOMMU mode is off: boot with vfio.enable_unsafe_noiommu_mode=1 (or write 1 \
         to /sys/module/vfio/parameters/enable_unsafe_noiommu_mode before the device is bound \
         to vfio-pci)"
    )]
    NoIommuOff,
    /// The VFIO container does not offer the no-IOMMU model.
    #[error("the VFIO container does not offer no-IOMMU mode")]
    NoIommuNotOffered,
    /// The kernel's VFIO API version is not the one the driver was built for.
    #[error("VFIO API version {version} is not supported (need {need})")]
    VfioApiVersion {
        /// The kernel's version.
        version: i32,
        /// The version the driver speaks.
        need: i32,
    },
    /// Not every device in the IOMMU group is bound to a VFIO driver.
    #[error("IOMMU group {group} is not viable: bind every device in it to vfio-pci")]
    GroupNotViable {
        /// The group number.
        group: u32,
    },
    /// The group given for the control socket does not exist.
    #[error("group {group} does not exist")]
    NoSuchGroup {
        /// The group name.
        group: String,
    },
}
