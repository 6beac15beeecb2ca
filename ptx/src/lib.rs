//! # vgpu-ptx: a PTX virtual machine
//!
//! Runs NVIDIA PTX kernels on the host CPU, with the semantics of the PTX ISA, so that a
//! software device can execute the same kernels a GPU runs. It knows nothing of VGPU-STUB:
//! its users hand it PTX text, a launch configuration, a parameter buffer and the device
//! memory the kernel may touch.
//!
//! * [`ast`]: the syntax tree of a module, close to the text.
//! * [`parse`](mod@parse): PTX text to [`ast::Module`]: [`parse()`], which fails with a
//!   [`ParseError`] naming the line, the column, what was expected and what was found.
//!
//! `unsafe` is not used in this crate.

#![forbid(unsafe_code)]

pub mod ast;
pub mod parse;

pub use parse::{parse, ParseError};
