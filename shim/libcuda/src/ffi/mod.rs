//! The exported driver API, one file per topic, each with its table of exports
//! (`vgpu_shim_abi::exports!`): initialisation, device queries, the primary context's reset
//! and the error strings (`device.rs`); memory, copies, memsets and pinned host memory
//! (`memory.rs`); streams, events and synchronisation (`stream.rs`); modules, launches and
//! function attributes (`module.rs`); contexts (`context.rs`); and the calls general
//! programs use beyond ggml's subset (`general.rs`). 2-D copies, graphs, `cuGetProcAddress`
//! and `cuGetExportTable` have modules of their own in the crate, with their tables. The
//! caller's pointers are the typed pointers of `vgpu_shim_abi::ptr`; the only `unsafe` left
//! here reads what `module.rs`'s entry points are given (module images, kernel parameters,
//! launch attributes).

pub mod context;
pub mod device;
pub mod general;
pub mod memory;
pub mod module;
pub mod stream;
