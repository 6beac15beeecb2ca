//! # vgpu-proto: the VGPU-STUB ABI as types
//!
//! This crate is the single source of truth, in code, for everything that crosses a
//! trust boundary in vgpu. Its companion is the specification `docs/vgpu-stub-spec.md`;
//! the tests in `tests/spec_tables.rs` read the tables of that document and check them
//! against the constants and layouts here, so the two cannot drift apart.
//!
//! * [`regs`]: PCI identity, BAR layout and the BAR0 register map.
//! * [`queue`]: the queue region (queue control block, submission and completion rings),
//!   ring arithmetic and the raw 64-byte submission / 32-byte completion entries.
//! * [`opcode`]: every command opcode with its class (admin / I/O), completion behaviour,
//!   payload rule and stream rule.
//! * [`cmd`]: typed commands: decoding a submission entry with complete validation, and
//!   encoding one.
//! * [`payload`]: structured payloads that follow an entry (launch attributes, 2-D copies,
//!   GEMM descriptors, module images...).
//! * [`info`]: structures the device writes into memory (device info, module function
//!   tables, object counts, management data).
//! * [`status`]: completion status codes (CUDA-compatible where they reach applications).
//! * [`control`]: the Unix-socket control plane between the shims and vgpu-driver.
//! * [`error`]: decode errors, one variant per kind of malformed input.
//! * [`examples`]: one valid request per opcode, for tests and fuzz seeds.
//! * [`fuzzing`]: the entry point the fuzz target and the corpus test share.
//!
//! Decoding never panics and never trusts a length: every function that takes bytes from
//! the other side returns `Result<_, DecodeError>`.
//!
//! All multi-byte fields are little-endian. The in-memory `#[repr(C)]` types are used
//! directly as the wire format, which is only correct on little-endian targets; the crate
//! refuses to build anywhere else.

#![forbid(unsafe_code)]

#[cfg(not(target_endian = "little"))]
compile_error!(
    "the VGPU-STUB ABI is little-endian; vgpu-proto only builds for little-endian targets"
);

pub mod cmd;
pub mod control;
pub mod error;
pub mod examples;
pub mod fuzzing;
pub mod info;
pub mod opcode;
pub mod payload;
pub mod queue;
pub mod regs;
pub mod status;

pub use cmd::{decode_sqe, Command, Request};
pub use error::DecodeError;
pub use opcode::Opcode;
pub use queue::{Cqe, Sqe};
pub use status::Status;

/// Asserts at compile time that a type has the given size and that each named field sits
/// at the given offset. Used for every ABI structure in this crate.
#[macro_export]
macro_rules! assert_layout {
    ($t:ty, size = $size:expr $(, $field:ident = $off:expr)* $(,)?) => {
        const _: () = {
            assert!(::core::mem::size_of::<$t>() == $size);
            $( assert!(::core::mem::offset_of!($t, $field) == $off); )*
        };
    };
}
