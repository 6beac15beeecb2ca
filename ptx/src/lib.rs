//! # vgpu-ptx: a PTX virtual machine
//!
//! Runs NVIDIA PTX kernels on the host CPU, with the semantics of the PTX ISA, so that a
//! software device can execute the same kernels a GPU runs. It knows nothing of VGPU-STUB:
//! its users hand it PTX text, a launch configuration, a parameter buffer and the device
//! memory the kernel may touch.
//!
//! * [`ast`]: the syntax tree of a module, close to the text.
//! * `parse`: PTX text to [`ast::Module`].
//! * [`lower`]: the load-time checker: a module to an [`ir::Program`], or the first
//!   instruction it cannot run, named with its line.
//! * [`ir`]: the executable form.
//! * [`exec`]: the interpreter, which runs a kernel over a grid on host threads.
//! * `arith`: the arithmetic of each instruction on register values.
//!
//! `unsafe` is not used in this crate.

#![forbid(unsafe_code)]

mod arith;
pub mod ast;
pub mod exec;
pub mod ir;
pub mod lower;
