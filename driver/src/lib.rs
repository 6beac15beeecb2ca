//! # vgpu-driver (not implemented yet)
//!
//! The guest side of vgpu: a userspace VFIO driver daemon that claims VGPU-STUB, sets up
//! its queues and DMA windows, and serves protection domains, I/O queues and windows to
//! the shims over a Unix-socket control plane (spec §9).
//!
//! This crate is empty: no driver exists yet, and nothing here claims to work.
