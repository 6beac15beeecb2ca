//! Typed commands: argument structures, decoding a submission entry with complete
//! validation, and encoding one (spec §5.3, §7).
//!
//! Decoding checks, in this order (the first failure decides the status):
//!
//! 1. the opcode is defined;
//! 2. no reserved flag bit is set;
//! 3. the opcode belongs on this queue;
//! 4. its feature was accepted;
//! 5. the stream field obeys the opcode's stream rule;
//! 6. the payload descriptor is consistent and obeys the opcode's payload rule;
//! 7. reserved argument fields are zero;
//! 8. argument values are in range;
//! 9. opcode-specific checks that relate the arguments to the header.

use crate::error::{read_pod, DecodeError};
pub use crate::opcode::Command;
use crate::opcode::{Opcode, PayloadRule, QueueKind, StreamRule};
use crate::payload::LaunchAttr;
use crate::queue::{sqe_flags, Sqe, MAX_PARAM_BYTES};
use bytemuck::Pod;

/// Arguments (and structured payloads): a fixed-layout structure whose reserved fields must
/// be zero and whose values have ranges.
pub trait Args: Pod + core::fmt::Debug + PartialEq {
    /// Reserved fields: (name, byte offset, byte length).
    const RESERVED: &'static [(&'static str, usize, usize)];

    /// Range checks beyond the reserved fields.
    fn validate(&self) -> Result<(), DecodeError> {
        Ok(())
    }

    /// Reserved-field check followed by [`Args::validate`].
    fn check(&self) -> Result<(), DecodeError> {
        let bytes = bytemuck::bytes_of(self);
        for &(name, off, len) in Self::RESERVED {
            if bytes[off..off + len].iter().any(|b| *b != 0) {
                return Err(DecodeError::ReservedNonZero(name));
            }
        }
        self.validate()
    }
}

/// Size of the field that `f` projects to (for the reserved-field tables).
#[doc(hidden)]
pub const fn field_size<T, F>(_f: fn(&T) -> &F) -> usize {
    core::mem::size_of::<F>()
}

/// Declares a `#[repr(C)]` ABI structure of a given size, with its reserved fields.
#[macro_export]
#[doc(hidden)]
macro_rules! abi_struct {
    ($(#[$m:meta])* $name:ident [$size:expr] { $( $(#[$fm:meta])* $f:ident : $t:ty ),* $(,)? }
     reserved [ $($r:ident),* ]) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
        #[repr(C)]
        pub struct $name { $( $(#[$fm])* pub $f: $t ),* }
        const _: () = assert!(::core::mem::size_of::<$name>() == $size);
        impl $name {
            /// Reserved fields: (name, offset, length).
            pub const RESERVED_FIELDS: &'static [(&'static str, usize, usize)] = &[
                $( (stringify!($r), ::core::mem::offset_of!($name, $r),
                    $crate::cmd::field_size(|s: &$name| &s.$r)) ),*
            ];
            /// Every field: (name, offset, length), for the spec check.
            pub const FIELDS: &'static [(&'static str, usize, usize)] = &[
                $( (stringify!($f), ::core::mem::offset_of!($name, $f),
                    $crate::cmd::field_size(|s: &$name| &s.$f)) ),*
            ];
        }
    };
}

/// Implements [`Args`] for structures declared with [`abi_struct!`], with an optional
/// validation body.
macro_rules! args_impl {
    ($name:ident) => {
        impl Args for $name {
            const RESERVED: &'static [(&'static str, usize, usize)] = $name::RESERVED_FIELDS;
        }
    };
    ($name:ident, |$s:ident| $body:block) => {
        impl Args for $name {
            const RESERVED: &'static [(&'static str, usize, usize)] = $name::RESERVED_FIELDS;
            fn validate(&self) -> Result<(), DecodeError> {
                let $s = self;
                $body
            }
        }
    };
}
pub(crate) use args_impl;

fn ensure(cond: bool, field: &'static str) -> Result<(), DecodeError> {
    if cond {
        Ok(())
    } else {
        Err(DecodeError::BadArgument(field))
    }
}

abi_struct! {
    /// Where a command's output goes: `len` bytes at `offset` in window `window`.
    OutRef [16] {
        /// Offset in the window.
        offset: u64,
        /// Window id (nonzero).
        window: u32,
        /// Capacity in bytes (nonzero).
        len: u32,
    } reserved []
}

crate::assert_layout!(OutRef, size = 16, offset = 0, window = 8, len = 12);

impl OutRef {
    fn validate(&self) -> Result<(), DecodeError> {
        ensure(self.window != 0, "out.window")?;
        ensure(self.len != 0, "out.len")?;
        ensure(
            self.offset.checked_add(u64::from(self.len)).is_some(),
            "out.offset",
        )
    }
}

abi_struct! {
    /// No arguments: all 32 bytes reserved.
    NoArgs [32] { rsv: [u64; 4] } reserved [rsv]
}
args_impl!(NoArgs);

abi_struct! {
    /// One handle (or device address, or cookie); nonzero.
    HandleArgs [32] { handle: u64, rsv: [u64; 3] } reserved [rsv]
}
args_impl!(HandleArgs, |s| { ensure(s.handle != 0, "handle") });

abi_struct! {
    /// An output buffer in a window.
    OutArgs [32] { out: OutRef, rsv: [u64; 2] } reserved [rsv]
}
args_impl!(OutArgs, |s| { s.out.validate() });

abi_struct! {
    /// IDENTIFY: write device info to `iova` (`len` ≥ 4096).
    IdentifyArgs [32] { iova: u64, len: u32, rsv0: u32, rsv: [u64; 2] } reserved [rsv0, rsv]
}
args_impl!(IdentifyArgs, |s| {
    ensure(
        s.len as usize >= core::mem::size_of::<crate::info::DeviceInfo>(),
        "len",
    )?;
    ensure(s.iova.checked_add(u64::from(s.len)).is_some(), "iova")
});

abi_struct! {
    /// PD_CREATE: limits of the new PD (0 = the device's default).
    PdCreateArgs [32] {
        /// Device-memory quota in bytes.
        mem_quota: u64,
        /// Most live GPU objects (allocations, modules, streams, ...).
        max_objects: u32,
        /// Most windows.
        max_windows: u32,
        /// Module-cache domain: MODULE_LOAD BY_HASH finds only images loaded by PDs of the
        /// same domain (the driver gives each user its own).
        cache_domain: u32,
        rsv0: u32,
        rsv: u64,
    } reserved [rsv0, rsv]
}
args_impl!(PdCreateArgs);

abi_struct! {
    /// A PD id (nonzero).
    PdArgs [32] { pd: u32, rsv0: u32, rsv: [u64; 3] } reserved [rsv0, rsv]
}
args_impl!(PdArgs, |s| { ensure(s.pd != 0, "pd") });

abi_struct! {
    /// PD_SET_QUOTA.
    PdQuotaArgs [32] { pd: u32, rsv0: u32, mem_quota: u64, rsv: [u64; 2] } reserved [rsv0, rsv]
}
args_impl!(PdQuotaArgs, |s| { ensure(s.pd != 0, "pd") });

abi_struct! {
    /// PD_STATS: object counts of `pd` (0 = the whole device) to `iova`.
    PdStatsArgs [32] { pd: u32, len: u32, iova: u64, rsv: [u64; 2] } reserved [rsv]
}
args_impl!(PdStatsArgs, |s| {
    ensure(
        s.len as usize >= core::mem::size_of::<crate::info::ObjectCounts>(),
        "len",
    )?;
    ensure(s.iova.checked_add(u64::from(s.len)).is_some(), "iova")
});

/// Access bits of a window.
pub mod window_access {
    /// The device may read the window (host-to-device data, payloads).
    pub const READ: u32 = 1 << 0;
    /// The device may write the window (device-to-host data, outputs).
    pub const WRITE: u32 = 1 << 1;
}

abi_struct! {
    /// WINDOW_REGISTER: window `window` of `pd` covers `[iova, iova + len)`.
    WindowRegisterArgs [32] { pd: u32, window: u32, iova: u64, len: u64, access: u32, rsv0: u32 }
    reserved [rsv0]
}
args_impl!(WindowRegisterArgs, |s| {
    ensure(s.pd != 0, "pd")?;
    ensure(s.window != 0, "window")?;
    ensure(s.len != 0, "len")?;
    ensure(s.iova.checked_add(s.len).is_some(), "iova")?;
    let all = window_access::READ | window_access::WRITE;
    ensure(s.access != 0 && s.access & !all == 0, "access")
});

abi_struct! {
    /// WINDOW_UNREGISTER.
    WindowArgs [32] { pd: u32, window: u32, rsv: [u64; 3] } reserved [rsv]
}
args_impl!(WindowArgs, |s| {
    ensure(s.pd != 0, "pd")?;
    ensure(s.window != 0, "window")
});

abi_struct! {
    /// QUEUE_CREATE: I/O queue `qid` of `pd`, region at `base`, interrupts on `vector`.
    QueueCreateArgs [32] {
        pd: u32,
        qid: u16,
        vector: u16,
        depth_log2: u8,
        rsv0: [u8; 7],
        base: u64,
        rsv: u64,
    } reserved [rsv0, rsv]
}
args_impl!(QueueCreateArgs, |s| {
    use crate::regs::{caps, pci};
    ensure(s.pd != 0, "pd")?;
    ensure(s.qid != 0 && u32::from(s.qid) <= caps::MAX_IO_QUEUES, "qid")?;
    ensure(s.vector < pci::MSIX_VECTORS, "vector")?;
    ensure(
        s.depth_log2 >= 1 && u32::from(s.depth_log2) <= caps::MAX_IO_DEPTH_LOG2,
        "depth_log2",
    )?;
    ensure(s.base % crate::queue::QUEUE_ALIGN == 0, "base")
});

abi_struct! {
    /// QUEUE_DELETE.
    QueueDeleteArgs [32] { qid: u16, rsv0: [u8; 6], rsv: [u64; 3] } reserved [rsv0, rsv]
}
args_impl!(QueueDeleteArgs, |s| {
    ensure(
        s.qid != 0 && u32::from(s.qid) <= crate::regs::caps::MAX_IO_QUEUES,
        "qid",
    )
});

abi_struct! {
    /// CTX_GET_LIMIT / CTX_SET_LIMIT: a `CUlimit` and (for set) its value.
    LimitArgs [32] { limit: u32, rsv0: u32, value: u64, rsv: [u64; 2] } reserved [rsv0, rsv]
}
args_impl!(LimitArgs);

abi_struct! {
    /// MEM_ALLOC.
    MemAllocArgs [32] { size: u64, flags: u32, rsv0: u32, rsv: [u64; 2] } reserved [rsv0, rsv]
}
args_impl!(MemAllocArgs, |s| {
    ensure(s.size != 0, "size")?;
    ensure(s.flags == 0, "flags")
});

abi_struct! {
    /// MEMCPY_HTOD: `len` bytes from window `src_window` at `src_offset` (or from the inline
    /// payload, when FLAG_INLINE is set) to device address `dst`.
    CopyHtoDArgs [32] { dst: u64, len: u64, src_window: u32, rsv0: u32, src_offset: u64 }
    reserved [rsv0]
}
args_impl!(CopyHtoDArgs, |s| {
    ensure(s.len != 0, "len")?;
    ensure(s.src_offset.checked_add(s.len).is_some(), "src_offset")
});

abi_struct! {
    /// MEMCPY_DTOH: `len` bytes from device address `src` to window `dst_window`.
    CopyDtoHArgs [32] { src: u64, len: u64, dst_window: u32, rsv0: u32, dst_offset: u64 }
    reserved [rsv0]
}
args_impl!(CopyDtoHArgs, |s| {
    ensure(s.len != 0, "len")?;
    ensure(s.dst_window != 0, "dst_window")?;
    ensure(s.dst_offset.checked_add(s.len).is_some(), "dst_offset")
});

abi_struct! {
    /// MEMCPY_DTOD.
    CopyDtoDArgs [32] { dst: u64, src: u64, len: u64, rsv: u64 } reserved [rsv]
}
args_impl!(CopyDtoDArgs, |s| { ensure(s.len != 0, "len") });

abi_struct! {
    /// MEMSET: `count` elements of `elem_size` (1, 2 or 4) bytes set to `value`.
    MemsetArgs [32] { dst: u64, count: u64, value: u32, elem_size: u8, rsv0: [u8; 3], rsv: u64 }
    reserved [rsv0, rsv]
}
args_impl!(MemsetArgs, |s| {
    ensure(matches!(s.elem_size, 1 | 2 | 4), "elem_size")?;
    ensure(s.count != 0, "count")?;
    ensure(
        s.elem_size == 4 || s.value >> (8 * u32::from(s.elem_size)) == 0,
        "value",
    )
});

/// Flags of [`ModuleLoadArgs::flags`].
pub mod module_flags {
    /// The payload is only the header: look the module up by hash. NOT_FOUND when the
    /// device has no module with that hash.
    pub const BY_HASH: u32 = 1 << 0;
}

abi_struct! {
    /// MODULE_LOAD: the function table goes to `out`.
    ModuleLoadArgs [32] { out: OutRef, flags: u32, rsv0: u32, rsv: u64 } reserved [rsv0, rsv]
}
args_impl!(ModuleLoadArgs, |s| {
    s.out.validate()?;
    ensure(s.flags & !module_flags::BY_HASH == 0, "flags")
});

abi_struct! {
    /// FUNC_GET_ATTRIBUTE / FUNC_SET_ATTRIBUTE: a `CUfunction_attribute` of `func`
    /// (`value` is 0 for get).
    FuncAttrArgs [32] { func: u64, attr: u32, value: i32, rsv: [u64; 2] } reserved [rsv]
}
args_impl!(FuncAttrArgs, |s| { ensure(s.func != 0, "func") });

/// Most launch attributes one LAUNCH may carry.
pub const MAX_LAUNCH_ATTRS: u16 = 16;

abi_struct! {
    /// LAUNCH: grid and block shape, dynamic shared memory, and how many
    /// [`LaunchAttr`]s open the payload (the parameter blob follows them).
    LaunchArgs [32] {
        func: u64,
        grid_x: u32,
        grid_y: u16,
        grid_z: u16,
        block_x: u16,
        block_y: u16,
        block_z: u16,
        attr_count: u16,
        shared_mem: u32,
        rsv0: u32,
    } reserved [rsv0]
}
args_impl!(LaunchArgs, |s| {
    ensure(s.func != 0, "func")?;
    ensure(s.grid_x != 0 && s.grid_x <= i32::MAX as u32, "grid_x")?;
    ensure(s.grid_y != 0, "grid_y")?;
    ensure(s.grid_z != 0, "grid_z")?;
    ensure(s.block_x != 0, "block_x")?;
    ensure(s.block_y != 0, "block_y")?;
    ensure(s.block_z != 0 && s.block_z <= 64, "block_z")?;
    let threads = u64::from(s.block_x) * u64::from(s.block_y) * u64::from(s.block_z);
    ensure(threads <= 1024, "block")?;
    ensure(s.attr_count <= MAX_LAUNCH_ATTRS, "attr_count")
});

impl LaunchArgs {
    /// Bytes of launch attributes at the start of the payload.
    pub const fn attr_bytes(&self) -> u32 {
        self.attr_count as u32 * core::mem::size_of::<LaunchAttr>() as u32
    }
}

/// Flags of [`StreamCreateArgs::flags`].
pub mod stream_flags {
    /// `CU_STREAM_NON_BLOCKING`: no implicit synchronisation with the NULL stream.
    pub const NON_BLOCKING: u32 = 1;
}

abi_struct! {
    /// STREAM_CREATE.
    StreamCreateArgs [32] { flags: u32, priority: i32, rsv: [u64; 3] } reserved [rsv]
}
args_impl!(StreamCreateArgs, |s| {
    ensure(s.flags & !stream_flags::NON_BLOCKING == 0, "flags")
});

abi_struct! {
    /// STREAM_WAIT_EVENT.
    StreamWaitEventArgs [32] { event: u64, flags: u32, rsv0: u32, rsv: [u64; 2] } reserved [rsv0, rsv]
}
args_impl!(StreamWaitEventArgs, |s| {
    ensure(s.event != 0, "event")?;
    ensure(s.flags & !1 == 0, "flags")
});

abi_struct! {
    /// STREAM_BEGIN_CAPTURE: `mode` is a `CUstreamCaptureMode` (0 global, 1 thread-local,
    /// 2 relaxed).
    CaptureArgs [32] { mode: u32, rsv0: u32, rsv: [u64; 3] } reserved [rsv0, rsv]
}
args_impl!(CaptureArgs, |s| { ensure(s.mode <= 2, "mode") });

/// Flags of [`EventCreateArgs::flags`] (`CUevent_flags`).
pub mod event_flags {
    /// `CU_EVENT_BLOCKING_SYNC`.
    pub const BLOCKING_SYNC: u32 = 1;
    /// `CU_EVENT_DISABLE_TIMING`.
    pub const DISABLE_TIMING: u32 = 2;
    /// `CU_EVENT_INTERPROCESS`.
    pub const INTERPROCESS: u32 = 4;
}

abi_struct! {
    /// EVENT_CREATE.
    EventCreateArgs [32] { flags: u32, rsv0: u32, rsv: [u64; 3] } reserved [rsv0, rsv]
}
args_impl!(EventCreateArgs, |s| { ensure(s.flags & !7 == 0, "flags") });

abi_struct! {
    /// EVENT_ELAPSED.
    EventElapsedArgs [32] { start: u64, end: u64, rsv: [u64; 2] } reserved [rsv]
}
args_impl!(EventElapsedArgs, |s| {
    ensure(s.start != 0, "start")?;
    ensure(s.end != 0, "end")
});

abi_struct! {
    /// GRAPH_INSTANTIATE: `flags` are `CUgraphInstantiate_flags`.
    GraphInstantiateArgs [32] { graph: u64, flags: u64, rsv: [u64; 2] } reserved [rsv]
}
args_impl!(GraphInstantiateArgs, |s| { ensure(s.graph != 0, "graph") });

abi_struct! {
    /// GRAPH_EXEC_UPDATE.
    GraphExecUpdateArgs [32] { exec: u64, graph: u64, rsv: [u64; 2] } reserved [rsv]
}
args_impl!(GraphExecUpdateArgs, |s| {
    ensure(s.exec != 0, "exec")?;
    ensure(s.graph != 0, "graph")
});

/// Where a command's payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// No payload.
    None,
    /// In the `inline_slots(len)` ring slots after the entry.
    Inline {
        /// Length in bytes.
        len: u32,
    },
    /// In a window.
    Window {
        /// Window id.
        window: u32,
        /// Offset in the window.
        offset: u64,
        /// Length in bytes.
        len: u32,
    },
}

impl Payload {
    /// Length in bytes.
    pub const fn len(&self) -> u32 {
        match *self {
            Payload::None => 0,
            Payload::Inline { len } | Payload::Window { len, .. } => len,
        }
    }

    /// True when there is no payload.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the decoder needs to know about the queue an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeContext {
    /// Admin or I/O queue.
    pub queue: QueueKind,
    /// DRV_FEATURES accepted at enable.
    pub features: u64,
    /// The queue's largest inline payload ([`crate::queue::QueueLayout::max_inline`]).
    pub max_inline: u32,
}

/// A validated submission entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Command id.
    pub cid: u32,
    /// FLAG_NOTIFY was set.
    pub notify: bool,
    /// The stream field.
    pub stream: u64,
    /// Where the payload is.
    pub payload: Payload,
    /// The command.
    pub command: Command,
}

impl Request {
    /// Encodes into a raw entry.
    pub fn encode(&self) -> Sqe {
        let (flags, payload_window, payload_offset) = match self.payload {
            Payload::None => (0, 0, 0),
            Payload::Inline { .. } => (sqe_flags::INLINE, 0, 0),
            Payload::Window { window, offset, .. } => (0, window, offset),
        };
        Sqe {
            opcode: self.command.opcode() as u16,
            flags: flags | if self.notify { sqe_flags::NOTIFY } else { 0 },
            cid: self.cid,
            stream: self.stream,
            payload_len: self.payload.len(),
            payload_window,
            payload_offset,
            args: self.command.args_bytes(),
        }
    }

    /// Decodes and validates a raw entry (see the module docs for the order of checks).
    pub fn decode(sqe: &Sqe, ctx: &DecodeContext) -> Result<Request, DecodeError> {
        let op = Opcode::from_u16(sqe.opcode).ok_or(DecodeError::UnknownOpcode(sqe.opcode))?;
        if sqe.flags & !sqe_flags::DEFINED != 0 {
            return Err(DecodeError::ReservedFlags(sqe.flags & !sqe_flags::DEFINED));
        }
        let info = op.info();
        if info.queue != ctx.queue {
            return Err(DecodeError::WrongQueue(sqe.opcode));
        }
        if info.feature != 0 && ctx.features & info.feature == 0 {
            return Err(DecodeError::FeatureNotAccepted(info.feature));
        }
        match info.stream {
            StreamRule::None if sqe.stream != 0 => {
                return Err(DecodeError::StreamNotAllowed(sqe.stream))
            }
            StreamRule::Target if sqe.stream == 0 => {
                return Err(DecodeError::BadArgument("stream"))
            }
            _ => {}
        }
        let payload = decode_payload_descriptor(sqe, ctx)?;
        match info.payload {
            PayloadRule::None if !payload.is_empty() => return Err(DecodeError::PayloadNotAllowed),
            PayloadRule::Required(min) if payload.len() < min => {
                return Err(DecodeError::PayloadTooShort {
                    min,
                    got: payload.len(),
                })
            }
            _ => {}
        }
        let command = Command::decode_args(op, &sqe.args)?;
        cross_check(&command, &payload)?;
        Ok(Request {
            cid: sqe.cid,
            notify: sqe.flags & sqe_flags::NOTIFY != 0,
            stream: sqe.stream,
            payload,
            command,
        })
    }
}

fn decode_payload_descriptor(sqe: &Sqe, ctx: &DecodeContext) -> Result<Payload, DecodeError> {
    let inline = sqe.flags & sqe_flags::INLINE != 0;
    let len = sqe.payload_len;
    if len == 0 {
        if inline {
            return Err(DecodeError::BadPayloadDescriptor(
                "FLAG_INLINE without a payload",
            ));
        }
        if sqe.payload_window != 0 || sqe.payload_offset != 0 {
            return Err(DecodeError::BadPayloadDescriptor(
                "window or offset without a payload",
            ));
        }
        return Ok(Payload::None);
    }
    if inline {
        if sqe.payload_window != 0 || sqe.payload_offset != 0 {
            return Err(DecodeError::BadPayloadDescriptor(
                "inline payload names a window",
            ));
        }
        if ctx.features & crate::regs::features::INLINE_PAYLOAD == 0 {
            return Err(DecodeError::FeatureNotAccepted(
                crate::regs::features::INLINE_PAYLOAD,
            ));
        }
        if len > ctx.max_inline {
            return Err(DecodeError::InlineTooLong {
                len,
                max: ctx.max_inline,
            });
        }
        return Ok(Payload::Inline { len });
    }
    if sqe.payload_window == 0 {
        return Err(DecodeError::BadPayloadDescriptor(
            "window payload in window 0",
        ));
    }
    if sqe.payload_offset.checked_add(u64::from(len)).is_none() {
        return Err(DecodeError::BadPayloadDescriptor(
            "payload offset overflows",
        ));
    }
    Ok(Payload::Window {
        window: sqe.payload_window,
        offset: sqe.payload_offset,
        len,
    })
}

fn cross_check(command: &Command, payload: &Payload) -> Result<(), DecodeError> {
    match command {
        Command::MEMCPY_HTOD(a) => match payload {
            Payload::Inline { len } => {
                ensure(a.src_window == 0, "src_window")?;
                ensure(a.src_offset == 0, "src_offset")?;
                ensure(a.len == u64::from(*len), "len")
            }
            Payload::Window { .. } => Err(DecodeError::BadPayloadDescriptor(
                "MEMCPY_HTOD data in a window goes in the arguments",
            )),
            Payload::None => ensure(a.src_window != 0, "src_window"),
        },
        Command::LAUNCH(a) => {
            let attrs = a.attr_bytes();
            if payload.len() < attrs {
                return Err(DecodeError::PayloadTooShort {
                    min: attrs,
                    got: payload.len(),
                });
            }
            ensure(payload.len() - attrs <= MAX_PARAM_BYTES, "params")
        }
        _ => Ok(()),
    }
}

/// Reads the raw entry at the front of `bytes`.
pub fn read_sqe(bytes: &[u8]) -> Result<Sqe, DecodeError> {
    read_pod(bytes)
}

/// Reads and decodes the entry at the front of `bytes`.
pub fn decode_sqe(bytes: &[u8], ctx: &DecodeContext) -> Result<Request, DecodeError> {
    Request::decode(&read_sqe(bytes)?, ctx)
}
