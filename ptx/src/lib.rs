//! # vgpu-ptx: a PTX virtual machine
//!
//! Runs NVIDIA PTX kernels on the host CPU, with the semantics of the PTX ISA, so that a
//! software device can execute the same kernels a GPU runs. It knows nothing of VGPU-STUB:
//! its users hand it PTX text, a launch configuration, a parameter buffer and the device
//! memory the kernel may touch.
//!
//! * [`ast`]: the syntax tree of a module, close to the text.
//! * [`mod@parse`]: PTX text to [`ast::Module`].
//! * [`lower`]: the load-time checker: a module to an [`ir::Program`], refusing each kernel
//!   it cannot run with the first unsupported instruction and its line.
//! * [`ir`]: the executable form.
//! * [`lazy`]: a module whose kernels are parsed and checked at their first use.
//! * [`liveness`]: register liveness; compacts a kernel's register slots at load.
//! * [`constants`]: what is known of a kernel's registers (values, flushing, the same in
//!   every lane, strides), for compiled code; `parting`: where lanes that part at a
//!   branch meet again, for it.
//! * [`exec`]: the interpreter, which runs a kernel over a grid on host threads, and the
//!   seam ([`exec::Native`]) through which native code (`vgpu-ptx-jit`) runs parts of it.
//! * [`mma`]: the warp-level matrix instructions and their fragment layouts.
//! * [`host`]: device memory in one host buffer, for tests and benchmarks.
//! * `arith`: the arithmetic of each instruction on register values ([`ex2_f32`], the f32
//!   `ex2` that compiled code computes with the same operations, is public).
//! * `printf`: device-side `printf` (`vprintf`), into the `vgpu_ptx::printf` log target.
//!
//! [`load`] does the first two steps at once. `unsafe` is not used in this crate.

#![forbid(unsafe_code)]

mod arith;
pub mod ast;
pub mod constants;
pub mod exec;
mod helpers;
pub mod host;
pub mod ir;
pub mod lazy;
pub mod liveness;
pub mod lower;
pub mod mma;
pub mod parse;
mod parting;
mod printf;

pub use arith::{ex2_f32, EX2_POLY, EX2_RANGE};
pub use parse::{parse, ParseError};

/// Why a module cannot be loaded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The text is not PTX this parser reads.
    #[error("PTX parse error: {0}")]
    Parse(#[from] ParseError),
    /// A module-scope declaration cannot be supported.
    #[error("PTX not supported: {0}")]
    Lower(#[from] lower::LowerError),
}

/// Parses and checks a module: its runnable kernels, and those refused with why.
pub fn load(text: &str) -> Result<ir::Program, LoadError> {
    Ok(lower::lower(&parse(text)?)?)
}
