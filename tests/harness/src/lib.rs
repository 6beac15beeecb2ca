//! # vgpu-test-stack: what the tests of every crate share
//!
//! * [`stack`]: vgpu-stub and vgpu-driver started for a test, in process (over vfio-user or
//!   by direct calls) or as processes, with limits and driver restarts.
//! * [`backing`]: the driver's device seam served in process, with injected faults.
//! * [`executor`]: a fake executor behind the device's executor seam, which records what
//!   the engine asks of it and answers as told.
//! * [`queue`]: the protocol-level queue client, written once.
//! * [`bare`]: a bare test driver that speaks the device protocol over vfio-user itself.
//! * [`control`]: a protocol-level client of vgpu-driver's control plane.
//! * [`wait`]: bounded waits.
//! * [`POKE`]: a PTX module for tests of module loading and launches.
//!
//! The shim crates keep an independent fake driver of their own (`shim/tests/common`): it
//! is a second reading of the protocol.

pub mod backing;
pub mod bare;
pub mod control;
pub mod executor;
pub mod queue;
pub mod stack;
pub mod wait;

pub use stack::{Link, ProcessStack, Stack};

/// A PTX module (text, NUL-terminated, as a module image) whose one kernel,
/// `poke(.param .u64 p)`, stores the 32-bit 1 through its pointer.
pub const POKE: &[u8] = b".version 8.0
.target sm_80
.address_size 64
.visible .entry poke(.param .u64 p)
{
    .reg .b64 %rd<2>;
    ld.param.u64 %rd1, [p];
    st.global.u32 [%rd1], 1;
    ret;
}
\0";

/// Sends the crates' logs to the test output (once per process).
pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}
