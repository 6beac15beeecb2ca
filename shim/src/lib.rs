//! # vgpu-shim: the client core of the drop-in CUDA libraries
//!
//! The drop-in libraries stand in for NVIDIA's and forward CUDA calls to the VGPU-STUB
//! device. This crate is the client core they share: the client side of the control plane
//! and of the command queue (`docs/vgpu-stub-spec.md` §5 and §9). It lives inside
//! `libcuda.so.1`, which holds the process's one connection to vgpu-driver; the other
//! libraries reach the device through libcuda and do not link this crate:
//! `libcudart.so.12` through the driver API, `libcublas.so.12` and `libnvidia-ml.so.1`
//! through libcuda's private export table (`vgpu_shim_abi::table`).
//!
//! Where things are:
//!
//! * `shim/src` (this crate): the client core, below.
//! * `shim/libcuda` (crate `vgpu-libcuda`): `libcuda.so.1`, the CUDA driver API.
//! * `shim/libcudart` (crate `vgpu-libcudart`): `libcudart.so.12`, the CUDA runtime API,
//!   lowered onto the driver API of the `libcuda.so.1` it opens at first use.
//! * `shim/libcublas`, `shim/libcublaslt`, `shim/libnvml`: `libcublas.so.12`,
//!   `libcublasLt.so.12` and `libnvidia-ml.so.1`.
//! * `shim/abi` (crate `vgpu-shim-abi`): their C boundary (the `exports!` table, typed
//!   caller pointers, status tables, libcuda's private export table).
//! * `ci/build-shims.sh` links them into shared objects under their real names;
//!   `shim/COVERAGE.md` lists which of their exports are implemented.
//!
//! Its one module:
//!
//! * [`client`]: [`client::Connection`] (one connection to vgpu-driver = one protection
//!   domain: HELLO/WELCOME, windows, status, GOODBYE) and [`client::QueuePair`] (submission
//!   with inline payloads, completion routing by cid, doorbells and interrupts with
//!   notification suppression, bounded waits). Errors are [`client::ClientError`], each
//!   with the CUDA status a shim reports.
//!
//! The queue region and the windows are memory shared with the device,
//! [`vgpu_os::shm::SharedMemory`], which the crate accesses only through atomics and
//! bounds-checked copies; a window's address also goes to applications as pinned host
//! memory. Descriptors received from the driver are adopted by [`vgpu_os::fd::own_fds`].
//!
//! Configuration comes from the environment: `VGPU_SOCKET` (the driver's socket, default
//! `/run/vgpu/vgpu.sock`) and `VGPU_TIMEOUT_MS` (the bound on every wait, default 600 000 ms).
//!
//! The crate has no `unsafe` code: what needs it (mapping shared memory, adopting received
//! descriptors) is in `vgpu-os`.

#![forbid(unsafe_code)]

pub mod client;

pub use client::{ClientError, ConnectOptions, Connection, QueuePair, Window};
