//! The opcode table (spec §7): every command with its queue class, completion behaviour,
//! payload rule, stream rule and the feature it needs.
//!
//! The table is the one place an opcode is declared; the [`Opcode`] enum, its metadata and
//! the typed [`crate::Command`] enum are generated from it.
//!
//! Opcode space: `0x0100..=0x01FF` admin, `0x0200..=0x7FFF` I/O, grouped by the high byte;
//! `0x8000..=0xFFFF` is never assigned by this specification (private experiments). An
//! incompatible change to a command is a new opcode, never a new meaning for an old one.

use crate::cmd::*;
use crate::regs::features;

/// Which queue an opcode may be submitted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// The admin queue (queue 0), owned by the driver.
    Admin,
    /// An I/O queue, bound to one protection domain.
    Io,
}

/// When the device posts a completion for a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Always completes, after the command's effect (and any wait it implies) is done.
    Sync,
    /// Completes only on a decode error, or when the entry has FLAG_NOTIFY; execution
    /// errors are latched on the stream and the PD (spec §8.3).
    Async,
}

/// What payload an opcode takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadRule {
    /// No payload: `payload_len` must be 0.
    None,
    /// A payload of any length, possibly none.
    Optional,
    /// A payload of at least this many bytes.
    Required(u32),
}

/// How an opcode uses the entry's `stream` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRule {
    /// Must be 0.
    None,
    /// The stream the command is ordered on; 0 is the NULL stream.
    Ordered,
    /// The stream the command acts on; must not be 0.
    Target,
}

/// Metadata of one opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpInfo {
    /// Name as in the spec.
    pub name: &'static str,
    /// The queue it may be submitted on.
    pub queue: QueueKind,
    /// Completion behaviour.
    pub completion: Completion,
    /// Payload rule.
    pub payload: PayloadRule,
    /// Stream rule.
    pub stream: StreamRule,
    /// Feature bit the driver must have accepted (0 = none).
    pub feature: u64,
}

macro_rules! opcodes {
    ($( $(#[$m:meta])* $variant:ident = $val:literal : $args:ty, $queue:ident, $compl:ident,
        $payload:expr, $stream:ident, $feature:expr; )*) => {
        /// A command opcode.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        #[allow(non_camel_case_types)] // the spec's names, so code and spec read alike
        pub enum Opcode {
            $( $(#[$m])* $variant = $val, )*
        }

        impl Opcode {
            /// Every opcode, in table order.
            pub const ALL: &'static [Opcode] = &[ $( Opcode::$variant ),* ];

            /// The opcode with this value.
            pub const fn from_u16(v: u16) -> Option<Opcode> {
                match v { $( $val => Some(Opcode::$variant), )* _ => None }
            }

            /// Name of its argument structure.
            pub const fn args_type(self) -> &'static str {
                match self { $( Opcode::$variant => stringify!($args), )* }
            }

            /// Reserved fields of its arguments: (name, offset, length).
            pub fn reserved_args(self) -> &'static [(&'static str, usize, usize)] {
                match self { $( Opcode::$variant => <$args as crate::cmd::Args>::RESERVED, )* }
            }

            /// Its metadata.
            pub const fn info(self) -> OpInfo {
                match self { $( Opcode::$variant => OpInfo {
                    name: stringify!($variant),
                    queue: QueueKind::$queue,
                    completion: Completion::$compl,
                    payload: $payload,
                    stream: StreamRule::$stream,
                    feature: $feature,
                }, )* }
            }
        }

        /// A decoded command: the opcode with its typed arguments.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(non_camel_case_types)]
        pub enum Command {
            $( $(#[$m])* $variant($args), )*
        }

        impl Command {
            /// The opcode of this command.
            pub const fn opcode(&self) -> Opcode {
                match self { $( Command::$variant(_) => Opcode::$variant, )* }
            }

            /// The 32 argument bytes of this command.
            pub fn args_bytes(&self) -> [u8; 32] {
                match self { $( Command::$variant(a) => bytemuck::cast(*a), )* }
            }

            /// Decodes and validates the arguments of `op`.
            pub(crate) fn decode_args(op: Opcode, bytes: &[u8; 32]) -> Result<Command, crate::DecodeError> {
                match op { $( Opcode::$variant => {
                    let a: $args = bytemuck::cast(*bytes);
                    crate::cmd::Args::check(&a)?;
                    Ok(Command::$variant(a))
                } )* }
            }
        }
    };
}

use PayloadRule::{None as NoPayload, Optional, Required};

const fn req<T>() -> PayloadRule {
    Required(core::mem::size_of::<T>() as u32)
}

opcodes! {
    // ---- admin queue ----
    /// Completes at once; measures admin round trips.
    ADMIN_NOP = 0x0101: NoArgs, Admin, Sync, NoPayload, None, 0;
    /// Writes [`crate::info::DeviceInfo`] to an IOVA.
    IDENTIFY = 0x0102: IdentifyArgs, Admin, Sync, NoPayload, None, 0;
    /// Creates a protection domain; result0 = PD id.
    PD_CREATE = 0x0103: PdCreateArgs, Admin, Sync, NoPayload, None, 0;
    /// Destroys a PD and everything it owns (queues, windows, objects).
    PD_DESTROY = 0x0104: PdArgs, Admin, Sync, NoPayload, None, 0;
    /// Sets a PD's device-memory quota.
    PD_SET_QUOTA = 0x0105: PdQuotaArgs, Admin, Sync, NoPayload, None, 0;
    /// Writes [`crate::info::ObjectCounts`] of a PD (or of the device) to an IOVA.
    PD_STATS = 0x0106: PdStatsArgs, Admin, Sync, NoPayload, None, 0;
    /// Gives a PD a DMA window.
    WINDOW_REGISTER = 0x0107: WindowRegisterArgs, Admin, Sync, NoPayload, None, 0;
    /// Takes a window from a PD.
    WINDOW_UNREGISTER = 0x0108: WindowArgs, Admin, Sync, NoPayload, None, 0;
    /// Creates an I/O queue pair bound to a PD.
    QUEUE_CREATE = 0x0109: QueueCreateArgs, Admin, Sync, NoPayload, None, 0;
    /// Deletes an I/O queue pair.
    QUEUE_DELETE = 0x010A: QueueDeleteArgs, Admin, Sync, NoPayload, None, 0;

    // ---- general ----
    /// Completes at once; the round-trip fence.
    NOP = 0x0200: NoArgs, Io, Sync, NoPayload, None, 0;
    /// Writes [`crate::info::DeviceInfo`] into a window.
    DEVICE_INFO = 0x0201: OutArgs, Io, Sync, NoPayload, None, 0;
    /// result0 = free bytes, result1 = total bytes, both as seen by the PD (its quota).
    MEM_GET_INFO = 0x0202: NoArgs, Io, Sync, NoPayload, None, 0;
    /// Waits for every stream of the PD; reports the PD's latched error.
    CTX_SYNCHRONIZE = 0x0203: NoArgs, Io, Sync, NoPayload, None, 0;
    /// Destroys every GPU object of the PD and clears its latched errors.
    CTX_RESET = 0x0204: NoArgs, Io, Sync, NoPayload, None, 0;
    /// result0 = the value of a context limit.
    CTX_GET_LIMIT = 0x0205: LimitArgs, Io, Sync, NoPayload, None, 0;
    /// Sets a context limit.
    CTX_SET_LIMIT = 0x0206: LimitArgs, Io, Sync, NoPayload, None, 0;
    /// Writes [`crate::info::MgmtInfo`] into a window.
    MGMT_QUERY = 0x0207: OutArgs, Io, Sync, NoPayload, None, 0;

    // ---- memory ----
    /// Allocates device memory; result0 = device address.
    MEM_ALLOC = 0x0300: MemAllocArgs, Io, Sync, NoPayload, None, 0;
    /// Frees an allocation after all previously submitted work of the PD.
    MEM_FREE = 0x0301: HandleArgs, Io, Sync, NoPayload, None, 0;
    /// result0 = base, result1 = size of the allocation containing an address.
    MEM_GET_RANGE = 0x0302: HandleArgs, Io, Sync, NoPayload, None, 0;
    /// Copies host (window or inline payload) to device.
    MEMCPY_HTOD = 0x0303: CopyHtoDArgs, Io, Async, Optional, Ordered, 0;
    /// Copies device to a window.
    MEMCPY_DTOH = 0x0304: CopyDtoHArgs, Io, Async, NoPayload, Ordered, 0;
    /// Copies device to device.
    MEMCPY_DTOD = 0x0305: CopyDtoDArgs, Io, Async, NoPayload, Ordered, 0;
    /// 2-D copy described by a [`crate::payload::Copy2D`] payload.
    MEMCPY_2D = 0x0306: NoArgs, Io, Async, req::<crate::payload::Copy2D>(), Ordered, 0;
    /// Sets `count` elements of 1, 2 or 4 bytes.
    MEMSET = 0x0307: MemsetArgs, Io, Async, NoPayload, Ordered, 0;
    /// 2-D memset described by a [`crate::payload::Memset2D`] payload.
    MEMSET_2D = 0x0308: NoArgs, Io, Async, req::<crate::payload::Memset2D>(), Ordered, 0;

    // ---- modules and functions ----
    /// Loads a module (image in the payload, or by hash); result0 = module handle,
    /// result1 = bytes of [`crate::info::ModuleInfo`] written.
    MODULE_LOAD = 0x0400: ModuleLoadArgs, Io, Sync, req::<crate::payload::ModuleImageHeader>(), None, 0;
    /// Unloads a module.
    MODULE_UNLOAD = 0x0401: HandleArgs, Io, Sync, NoPayload, None, 0;
    /// Looks up a global by name (payload); result0 = address, result1 = size.
    MODULE_GET_GLOBAL = 0x0402: HandleArgs, Io, Sync, Required(1), None, 0;
    /// result0 = a function attribute (sign-extended i32).
    FUNC_GET_ATTRIBUTE = 0x0403: FuncAttrArgs, Io, Sync, NoPayload, None, 0;
    /// Sets a function attribute.
    FUNC_SET_ATTRIBUTE = 0x0404: FuncAttrArgs, Io, Sync, NoPayload, None, 0;

    // ---- launch ----
    /// Launches a kernel; payload = launch attributes then the parameter blob.
    LAUNCH = 0x0500: LaunchArgs, Io, Async, Optional, Ordered, 0;

    // ---- streams ----
    /// Creates a stream; result0 = handle.
    STREAM_CREATE = 0x0600: StreamCreateArgs, Io, Sync, NoPayload, None, 0;
    /// Destroys the stream named in `stream` once its work is done.
    STREAM_DESTROY = 0x0601: NoArgs, Io, Sync, NoPayload, Target, 0;
    /// Waits for the stream; reports its latched error.
    STREAM_SYNCHRONIZE = 0x0602: NoArgs, Io, Sync, NoPayload, Ordered, 0;
    /// SUCCESS if the stream is idle, NOT_READY otherwise.
    STREAM_QUERY = 0x0603: NoArgs, Io, Sync, NoPayload, Ordered, 0;
    /// Makes the stream wait for an event.
    STREAM_WAIT_EVENT = 0x0604: StreamWaitEventArgs, Io, Async, NoPayload, Ordered, 0;
    /// Starts capturing the stream into a graph.
    STREAM_BEGIN_CAPTURE = 0x0605: CaptureArgs, Io, Sync, NoPayload, Target, features::GRAPHS;
    /// Ends a capture; result0 = graph handle.
    STREAM_END_CAPTURE = 0x0606: NoArgs, Io, Sync, NoPayload, Target, features::GRAPHS;
    /// When the stream reaches it, the device posts a CALLBACK completion and holds the
    /// stream until HOST_FUNC_DONE with the same cookie.
    HOST_FUNC = 0x0607: HandleArgs, Io, Async, NoPayload, Ordered, features::HOST_FUNC;
    /// Releases a stream held by HOST_FUNC.
    HOST_FUNC_DONE = 0x0608: HandleArgs, Io, Async, NoPayload, None, features::HOST_FUNC;

    // ---- events ----
    /// Creates an event; result0 = handle.
    EVENT_CREATE = 0x0700: EventCreateArgs, Io, Sync, NoPayload, None, 0;
    /// Destroys an event.
    EVENT_DESTROY = 0x0701: HandleArgs, Io, Sync, NoPayload, None, 0;
    /// Records an event on a stream.
    EVENT_RECORD = 0x0702: HandleArgs, Io, Async, NoPayload, Ordered, 0;
    /// Waits for an event.
    EVENT_SYNCHRONIZE = 0x0703: HandleArgs, Io, Sync, NoPayload, None, 0;
    /// SUCCESS if the event has completed, NOT_READY otherwise.
    EVENT_QUERY = 0x0704: HandleArgs, Io, Sync, NoPayload, None, 0;
    /// result0 = milliseconds between two events as `f32` bits.
    EVENT_ELAPSED = 0x0705: EventElapsedArgs, Io, Sync, NoPayload, None, 0;

    // ---- graphs ----
    /// Instantiates a graph; result0 = executable graph handle.
    GRAPH_INSTANTIATE = 0x0800: GraphInstantiateArgs, Io, Sync, NoPayload, None, features::GRAPHS;
    /// Updates an executable graph from a graph; result0 = `CUgraphExecUpdateResult`.
    GRAPH_EXEC_UPDATE = 0x0801: GraphExecUpdateArgs, Io, Sync, NoPayload, None, features::GRAPHS;
    /// Launches an executable graph on a stream.
    GRAPH_LAUNCH = 0x0802: HandleArgs, Io, Async, NoPayload, Ordered, features::GRAPHS;
    /// Destroys a graph.
    GRAPH_DESTROY = 0x0803: HandleArgs, Io, Sync, NoPayload, None, features::GRAPHS;
    /// Destroys an executable graph.
    GRAPH_EXEC_DESTROY = 0x0804: HandleArgs, Io, Sync, NoPayload, None, features::GRAPHS;

    // ---- BLAS ----
    /// Creates a BLAS handle; result0 = handle.
    BLAS_CREATE = 0x0900: NoArgs, Io, Sync, NoPayload, None, features::BLAS;
    /// Destroys a BLAS handle.
    BLAS_DESTROY = 0x0901: HandleArgs, Io, Sync, NoPayload, None, features::BLAS;
    /// GEMM / strided-batched GEMM ([`crate::payload::GemmDesc`]).
    BLAS_GEMM = 0x0902: NoArgs, Io, Async, req::<crate::payload::GemmDesc>(), Ordered, features::BLAS;
    /// Batched GEMM over device arrays of pointers ([`crate::payload::GemmDesc`]).
    BLAS_GEMM_BATCHED = 0x0903: NoArgs, Io, Async, req::<crate::payload::GemmDesc>(), Ordered, features::BLAS;
    /// Batched triangular solve ([`crate::payload::TrsmBatchedDesc`]).
    BLAS_TRSM_BATCHED = 0x0904: NoArgs, Io, Async, req::<crate::payload::TrsmBatchedDesc>(), Ordered, features::BLAS;
    /// cuBLASLt matmul ([`crate::payload::LtMatmulDesc`]).
    BLASLT_MATMUL = 0x0905: NoArgs, Io, Async, req::<crate::payload::LtMatmulDesc>(), Ordered, features::BLASLT;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_sit_in_their_ranges() {
        for &op in Opcode::ALL {
            assert_eq!(Opcode::from_u16(op as u16), Some(op));
            let v = op as u16;
            match op.info().queue {
                QueueKind::Admin => assert!((0x0100..=0x01FF).contains(&v), "{op:?}"),
                QueueKind::Io => assert!((0x0200..=0x7FFF).contains(&v), "{op:?}"),
            }
        }
        assert_eq!(Opcode::from_u16(0), None);
        assert_eq!(Opcode::from_u16(0x8000), None);
    }

    #[test]
    fn async_commands_are_stream_ordered_or_release_a_stream() {
        for &op in Opcode::ALL {
            let i = op.info();
            if i.completion == Completion::Async && op != Opcode::HOST_FUNC_DONE {
                assert_eq!(i.stream, StreamRule::Ordered, "{}", i.name);
            }
        }
    }
}
