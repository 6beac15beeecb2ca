//! # vgpu-stub: the VGPU-STUB device model
//!
//! The host side of vgpu. It presents VGPU-STUB (`docs/vgpu-stub-spec.md`) to a VMM as a
//! vfio-user server and executes the commands the guest posts on its queues.
//!
//! * [`config`]: PCI configuration space.
//! * [`msix`]: the MSI-X table and interrupt delivery through eventfds.
//! * [`guest`]: guest memory mapped for DMA, addressed by IOVA.
//! * [`sigbus`]: surviving SIGBUS when memory mapped for DMA is taken away.
//! * [`device`]: BAR0 registers and the life cycle (enable, reset, fatal state).
//! * [`engine`]: the queue engine (admin and I/O queues, PDs, windows, handles, quotas).
//! * [`exec`]: the `Executor` seam and the executors behind it.
//! * [`server`]: the vfio-user backend and the connection loop.
//!
//! `unsafe` is denied in the crate except in [`exec::soft::blas`] (matrixmultiply's GEMM
//! kernels take raw pointers), in `exec::cuda::api` (the CUDA driver's, cuBLAS's and NVML's
//! C entry points), in [`sigbus`] (a signal handler that maps a page over a lost one), in
//! one function of [`guest`] (a DMA mapping as a region inside its file's one mapping), in
//! the soft device's kernel launch (which lends a context's locked memory to the kernel as
//! `vgpu_ptx_jit::DirectMemory`) and in the tests of [`msix`] (which adopt an eventfd's
//! descriptor as a file).

#![deny(unsafe_code)]

pub mod config;
pub mod device;
pub mod engine;
pub mod exec;
pub mod guest;
pub mod msix;
pub mod server;
#[allow(
    unsafe_code,
    reason = "installs a SIGBUS handler that maps a fresh page over lost guest memory"
)]
pub mod sigbus;
