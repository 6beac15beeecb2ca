//! # vgpu shims (not implemented yet)
//!
//! The drop-in `libcuda.so.1`, `libcudart.so.12`, `libcublas.so.12`, `libcublasLt.so.12`
//! and `libnvidia-ml.so.1`, and the client core they share (control-plane connection,
//! queue pair, windows, handle tables).
//!
//! This crate is empty: no shim library exists yet, and nothing here claims to work.
