//! A module whose kernels are parsed and checked at their first use.
//!
//! A registry ggml-cuda module holds up to a few hundred kernels (each template
//! instantiation of a `.cu` file), of which a model runs a handful. [`crate::load`] parses
//! and checks them all; [`LazyProgram::new`] parses the module-scope declarations and the
//! functions, checks the variables, and skips each kernel's body
//! ([`parse::parse_skipping_kernels`]). [`LazyProgram::kernel`] parses and checks one
//! kernel the first time it is asked for, and keeps the result.
//!
//! The kernel is the one [`crate::load`] gives (same code, same lines, same refusals):
//! its body is parsed from the same text with the same line numbers, and checked by the
//! same [`lower::kernel`] against the same module-scope names. What differs is when an
//! error in a kernel's body is found: at its first use, and it refuses that kernel only,
//! where [`crate::load`] refuses the whole module.

use crate::ast;
use crate::ir::{Global, Kernel};
use crate::lower::{self, LowerError};
use crate::parse::{self, BodySpan};
use crate::LoadError;
use std::collections::HashMap;
use std::sync::OnceLock;

/// A module's text, its module scope checked, and each of its kernels checked once asked
/// for.
pub struct LazyProgram {
    text: String,
    /// The module without its kernels' bodies.
    module: ast::Module,
    /// Module-scope variables in device memory, in declaration order (as
    /// [`crate::ir::Program::globals`]).
    pub globals: Vec<Global>,
    /// Why each unusable variable cannot be used, by its index in `globals`.
    bad: HashMap<u32, LowerError>,
    /// Each kernel with a body: its index in `module.functions`, where its body lies, and
    /// the kernel once checked.
    kernels: HashMap<String, Lazy>,
}

struct Lazy {
    function: usize,
    span: BodySpan,
    kernel: OnceLock<Result<Kernel, LoadError>>,
}

impl LazyProgram {
    /// Parses `text` but for its kernels' bodies, and checks its module-scope variables.
    /// Fails as [`crate::load`] fails for the module scope and the functions.
    pub fn new(text: &str) -> Result<Self, LoadError> {
        let (module, spans) = parse::parse_skipping_kernels(text)?;
        let (globals, bad) = lower::variables(&module)?;
        let kernels = spans
            .into_iter()
            .filter_map(|(function, span)| {
                let name = module.functions.get(function)?.name.clone();
                let kernel = OnceLock::new();
                Some((
                    name,
                    Lazy {
                        function,
                        span,
                        kernel,
                    },
                ))
            })
            .collect();
        Ok(LazyProgram {
            text: text.to_string(),
            module,
            globals,
            bad,
            kernels,
        })
    }

    /// Whether the module has a kernel `name` with a body (checked or not yet).
    pub fn has_kernel(&self, name: &str) -> bool {
        self.kernels.contains_key(name)
    }

    /// The names of the module's kernels that have a body.
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> {
        self.kernels.keys().map(String::as_str)
    }

    /// Kernel `name`, parsed and checked at the first call (`None`: the module has no such
    /// kernel). A kernel that cannot run is an error, logged once.
    pub fn kernel(&self, name: &str) -> Option<&Result<Kernel, LoadError>> {
        let lazy = self.kernels.get(name)?;
        Some(lazy.kernel.get_or_init(|| {
            let r = self.check(lazy);
            if let Err(e) = &r {
                log::info!("kernel {name} cannot run from PTX: {e}");
            }
            r
        }))
    }

    fn check(&self, lazy: &Lazy) -> Result<Kernel, LoadError> {
        let f = &self.module.functions[lazy.function];
        let body = parse::body(&self.text, f, lazy.span)?;
        Ok(lower::kernel(&self.module, &self.bad, f, &body)?)
    }
}
