//! # vgpu-stub (not implemented yet)
//!
//! The host side of vgpu: the VGPU-STUB PCI device model, served to QEMU (or to a
//! `vfio_user::Client` in tests) as a vfio-user server, with its queue engine and
//! executors (`soft` on the CPU, `cuda` on a real GPU). It implements
//! `docs/vgpu-stub-spec.md` using the types of `vgpu-proto`.
//!
//! This crate is empty: no device model exists yet, and nothing here claims to work.
