//! # vgpu-shim: the client core of the drop-in CUDA libraries
//!
//! The shims (`libcuda.so.1`, `libcudart.so.12`, `libcublas.so.12`, `libcublasLt.so.12`,
//! `libnvidia-ml.so.1`) forward CUDA calls to the VGPU-STUB device. This crate holds what
//! they share: the client side of the control plane and of the command queue
//! (`docs/vgpu-stub-spec.md` §5 and §9). The libraries themselves are not written yet.
//!
//! * [`client`]: [`client::Connection`] (one connection to vgpu-driver = one protection
//!   domain: HELLO/WELCOME, windows, status, GOODBYE) and [`client::QueuePair`] (submission
//!   with inline payloads, completion routing by cid, doorbells and interrupts with
//!   notification suppression, bounded waits). Errors are [`client::ClientError`], each
//!   with the CUDA status a shim reports.
//! * [`shm`]: mappings of memory shared with the device (the queue region and the
//!   windows), accessed only through atomics and bounds-checked copies.
//!
//! Configuration comes from the environment: `VGPU_SOCKET` (the driver's socket, default
//! `/run/vgpu/vgpu.sock`) and `VGPU_TIMEOUT_MS` (the bound on every wait, default 600 000).
//!
//! `unsafe` is denied in the crate except in [`shm`] (mapping and accessing shared memory)
//! and in the one function of the control module that adopts descriptors received with
//! `SCM_RIGHTS`.

#![deny(unsafe_code)]

pub mod client;
#[allow(unsafe_code)]
pub mod shm;

pub use client::{ClientError, ConnectOptions, Connection, QueuePair, Window};
