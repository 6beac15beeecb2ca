//! # vgpu-driver: the guest-side VFIO driver daemon
//!
//! Claims VGPU-STUB, brings it up (spec §4.2), and serves its queues and DMA memory to the
//! shim libraries of each application over a Unix-socket control plane (spec §9): every
//! client gets its own protection domain, I/O queue, windows, interrupt eventfd and
//! doorbell eventfd, and everything is reclaimed when the client goes away.
//!
//! * [`backing`]: device access behind a trait, and the vfio-user backing (vgpu-stub).
//! * [`kernel_vfio`]: the kernel VFIO backing (inside a VM, behind a virtual IOMMU).
//! * [`noiommu`]: the kernel VFIO backing with no IOMMU (unsafe mode), and what it needs:
//!   [`vfio_raw`] (VFIO ioctls on vfio-bindings) and [`physmem`] (physical addresses).
//! * [`device`]: bring-up, the admin queue and DMA memory.
//! * [`server`]: the control plane: clients, admission limits, windows, cleanup.
//! * [`client`]: a minimal control-plane client (the `status` command, tests).
//! * [`shm`]: memfd-backed shared memory (the crate's `unsafe` lives here).
//! * [`iova`]: IOVA allocation.

pub mod backing;
pub mod client;
pub mod device;
pub mod iova;
pub mod kernel_vfio;
pub mod noiommu;
pub mod physmem;
pub mod server;
pub mod shm;
pub mod vfio_raw;

use vgpu_proto::Status;

/// Why the driver could not do something.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The device is missing, misbehaves or refused bring-up.
    #[error("device: {0}")]
    Device(String),
    /// The device refused an admin command.
    #[error("device refused the command: {0}")]
    Refused(Status),
    /// Memory or IOVA space ran out.
    #[error("out of memory: {0}")]
    NoMemory(String),
    /// An operating-system call failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
