//! The control plane between the shims and vgpu-driver (spec §9).
//!
//! A `SOCK_SEQPACKET` Unix socket: one message per packet, so message boundaries survive
//! and a short read is an error, not a partial message. A message is a 16-byte
//! [`MsgHeader`] followed by its body; file descriptors travel with the message as
//! `SCM_RIGHTS`. The driver checks the peer's credentials (`SO_PEERCRED`) on accept.

use crate::abi_struct;
use crate::cmd::{args_impl, Args};
use crate::error::{read_pod, DecodeError};
use crate::info::DeviceInfo;

/// Magic of every message: the bytes "VGCP".
pub const MAGIC: u32 = u32::from_le_bytes(*b"VGCP");
/// Control-plane protocol version.
pub const VERSION: u16 = 1;
/// Largest message (header and body).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most file descriptors one message may carry.
pub const MAX_FDS: usize = 4;
/// Default path of the driver's socket.
pub const DEFAULT_SOCKET: &str = "/run/vgpu/vgpu.sock";
/// Environment variable that overrides [`DEFAULT_SOCKET`] in the shims.
pub const SOCKET_ENV: &str = "VGPU_SOCKET";

abi_struct! {
    /// Header of every control message.
    MsgHeader [16] {
        magic: u32,
        version: u16,
        kind: u16,
        /// Bytes of body after the header.
        body_len: u32,
        /// Request number chosen by the client; a reply carries the request's number.
        seq: u32,
    } reserved []
}
args_impl!(MsgHeader);

/// Message kinds.
pub mod kind {
    /// Client → driver: first message on a connection.
    pub const HELLO: u16 = 1;
    /// Driver → client: the client's PD, queue and first window. Fds: queue region memfd,
    /// window memfd, interrupt eventfd, doorbell eventfd.
    pub const WELCOME: u16 = 2;
    /// Client → driver: more window memory.
    pub const WINDOW_ALLOC: u16 = 3;
    /// Driver → client: the new window. Fds: its memfd.
    pub const WINDOW_GRANTED: u16 = 4;
    /// Client → driver: give a window back.
    pub const WINDOW_FREE: u16 = 5;
    /// Driver → client: the request succeeded and has no other result.
    pub const OK: u16 = 6;
    /// Client → driver: ask for the driver's status.
    pub const STATUS_QUERY: u16 = 7;
    /// Driver → client: status as UTF-8 JSON.
    pub const STATUS_REPLY: u16 = 8;
    /// Driver → client: the request failed ([`ErrorBody`] then a UTF-8 message).
    pub const ERROR: u16 = 9;
    /// Client → driver: orderly goodbye; the driver destroys the PD and closes.
    pub const GOODBYE: u16 = 10;
    /// Client → driver: make part of a file the client has mapped `MAP_SHARED` a window
    /// (`cuMemHostRegister`). Fds: the file, open read-write.
    pub const HOST_REGISTER: u16 = 11;
    /// Driver → client: the window made by HOST_REGISTER ([`WindowGrantedBody`]); given back
    /// with WINDOW_FREE.
    pub const HOST_REGISTERED: u16 = 12;
}

/// Error codes of [`ErrorBody::code`].
pub mod error_code {
    /// The client speaks a protocol version the driver does not.
    pub const VERSION_MISMATCH: u32 = 1;
    /// The message was malformed.
    pub const BAD_MESSAGE: u32 = 2;
    /// The peer's credentials are not allowed.
    pub const NOT_PERMITTED: u32 = 3;
    /// No I/O queue (or PD) is free: the admission limit is reached.
    pub const NO_QUEUES: u32 = 4;
    /// The memory limit (per client or in total) would be exceeded.
    pub const NO_MEMORY: u32 = 5;
    /// The window does not exist or is not the client's.
    pub const UNKNOWN_WINDOW: u32 = 6;
    /// The device refused or failed (the message says how).
    pub const DEVICE_ERROR: u32 = 7;
    /// The message is not valid in this state (e.g. a second HELLO, or a request before
    /// HELLO).
    pub const BAD_STATE: u32 = 8;
    /// The driver cannot do this here (for example register host memory with no IOMMU).
    pub const NOT_SUPPORTED: u32 = 9;
    /// The request names something invalid (a descriptor that is not a read-write regular
    /// file, a range outside it).
    pub const INVALID: u32 = 10;
}

abi_struct! {
    /// HELLO body.
    HelloBody [64] {
        /// [`VERSION`] the client speaks.
        version: u32,
        /// Reserved flags (0).
        flags: u32,
        /// log2 depth of the I/O queue wanted (0 = the driver's default).
        queue_depth_log2: u32,
        /// The client's pid as it sees it (logged; the driver trusts SO_PEERCRED).
        pid: u32,
        /// Size of the first window wanted (0 = the driver's default).
        window_bytes: u64,
        rsv: u64,
        /// Program name, NUL-padded (logged).
        name: [u8; 32],
    } reserved [rsv]
}
args_impl!(HelloBody, |s| {
    if s.flags != 0 {
        return Err(DecodeError::BadMessage("hello.flags"));
    }
    if s.queue_depth_log2 > crate::regs::caps::MAX_IO_DEPTH_LOG2 {
        return Err(DecodeError::BadMessage("hello.queue_depth_log2"));
    }
    Ok(())
});

abi_struct! {
    /// WELCOME body (followed by nothing; the device info is part of it).
    WelcomeBody [4160] {
        /// The client's PD.
        pd: u32,
        /// Its I/O queue id (its doorbell and MSI-X vector).
        qid: u16,
        /// MSI-X vector of the queue.
        vector: u16,
        /// log2 depth of both rings.
        queue_depth_log2: u32,
        /// Window id of the first window.
        window: u32,
        /// Bytes of the queue region memfd.
        queue_bytes: u64,
        /// Bytes of the first window.
        window_bytes: u64,
        /// Most window bytes the client may hold in total.
        max_window_bytes: u64,
        /// DRV_FEATURES accepted by the driver.
        features: u64,
        rsv: [u64; 2],
        /// The device's info, as IDENTIFY returned it.
        device: DeviceInfo,
    } reserved [rsv]
}
args_impl!(WelcomeBody, |s| {
    if s.pd == 0 || s.qid == 0 || s.window == 0 {
        return Err(DecodeError::BadMessage("welcome ids"));
    }
    if s.queue_depth_log2 == 0 || s.queue_depth_log2 > crate::regs::caps::MAX_IO_DEPTH_LOG2 {
        return Err(DecodeError::BadMessage("welcome.queue_depth_log2"));
    }
    s.device
        .check()
        .map_err(|_| DecodeError::BadMessage("welcome.device"))
});

abi_struct! {
    /// WINDOW_ALLOC body.
    WindowAllocBody [16] { bytes: u64, flags: u32, rsv: u32 } reserved [rsv]
}
args_impl!(WindowAllocBody, |s| {
    if s.bytes == 0 || s.flags != 0 {
        return Err(DecodeError::BadMessage("window_alloc"));
    }
    Ok(())
});

abi_struct! {
    /// WINDOW_GRANTED body.
    WindowGrantedBody [16] { window: u32, rsv: u32, bytes: u64 } reserved [rsv]
}
args_impl!(WindowGrantedBody, |s| {
    if s.window == 0 || s.bytes == 0 {
        return Err(DecodeError::BadMessage("window_granted"));
    }
    Ok(())
});

abi_struct! {
    /// WINDOW_FREE body.
    WindowFreeBody [8] { window: u32, rsv: u32 } reserved [rsv]
}
args_impl!(WindowFreeBody, |s| {
    if s.window == 0 {
        return Err(DecodeError::BadMessage("window_free"));
    }
    Ok(())
});

abi_struct! {
    /// HOST_REGISTER body: `bytes` bytes at `offset` of the file sent with it, both
    /// multiples of 4096.
    HostRegisterBody [24] { offset: u64, bytes: u64, flags: u32, rsv: u32 } reserved [rsv]
}
args_impl!(HostRegisterBody, |s| {
    if s.bytes == 0 || s.flags != 0 || s.offset % 4096 != 0 || s.bytes % 4096 != 0 {
        return Err(DecodeError::BadMessage("host_register"));
    }
    if s.offset.checked_add(s.bytes).is_none() {
        return Err(DecodeError::BadMessage("host_register range"));
    }
    Ok(())
});

abi_struct! {
    /// Opens an ERROR body; a UTF-8 message follows.
    ErrorBody [8] { code: u32, rsv: u32 } reserved [rsv]
}
args_impl!(ErrorBody);

/// A decoded control message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// [`kind::HELLO`].
    Hello(HelloBody),
    /// [`kind::WELCOME`].
    Welcome(Box<WelcomeBody>),
    /// [`kind::WINDOW_ALLOC`].
    WindowAlloc(WindowAllocBody),
    /// [`kind::WINDOW_GRANTED`].
    WindowGranted(WindowGrantedBody),
    /// [`kind::WINDOW_FREE`].
    WindowFree(WindowFreeBody),
    /// [`kind::OK`].
    Ok,
    /// [`kind::STATUS_QUERY`].
    StatusQuery,
    /// [`kind::STATUS_REPLY`].
    StatusReply(String),
    /// [`kind::ERROR`].
    Error {
        /// [`error_code`].
        code: u32,
        /// What went wrong.
        message: String,
    },
    /// [`kind::GOODBYE`].
    Goodbye,
    /// [`kind::HOST_REGISTER`].
    HostRegister(HostRegisterBody),
    /// [`kind::HOST_REGISTERED`].
    HostRegistered(WindowGrantedBody),
}

impl Message {
    /// The message kind.
    pub fn kind(&self) -> u16 {
        match self {
            Message::Hello(_) => kind::HELLO,
            Message::Welcome(_) => kind::WELCOME,
            Message::WindowAlloc(_) => kind::WINDOW_ALLOC,
            Message::WindowGranted(_) => kind::WINDOW_GRANTED,
            Message::WindowFree(_) => kind::WINDOW_FREE,
            Message::Ok => kind::OK,
            Message::StatusQuery => kind::STATUS_QUERY,
            Message::StatusReply(_) => kind::STATUS_REPLY,
            Message::Error { .. } => kind::ERROR,
            Message::Goodbye => kind::GOODBYE,
            Message::HostRegister(_) => kind::HOST_REGISTER,
            Message::HostRegistered(_) => kind::HOST_REGISTERED,
        }
    }

    /// How many file descriptors a message of kind `k` carries.
    pub fn fds_for(k: u16) -> usize {
        match k {
            kind::WELCOME => 4,
            kind::WINDOW_GRANTED | kind::HOST_REGISTER => 1,
            _ => 0,
        }
    }

    /// Encodes header and body. The caller sends [`Message::fds_for`] descriptors with it.
    pub fn encode(&self, seq: u32) -> Vec<u8> {
        let body: Vec<u8> = match self {
            Message::Hello(b) => bytemuck::bytes_of(b).to_vec(),
            Message::Welcome(b) => bytemuck::bytes_of(b.as_ref()).to_vec(),
            Message::WindowAlloc(b) => bytemuck::bytes_of(b).to_vec(),
            Message::WindowGranted(b) => bytemuck::bytes_of(b).to_vec(),
            Message::WindowFree(b) => bytemuck::bytes_of(b).to_vec(),
            Message::HostRegister(b) => bytemuck::bytes_of(b).to_vec(),
            Message::HostRegistered(b) => bytemuck::bytes_of(b).to_vec(),
            Message::Ok | Message::StatusQuery | Message::Goodbye => Vec::new(),
            Message::StatusReply(s) => truncated(s, MAX_MESSAGE - 16).as_bytes().to_vec(),
            Message::Error { code, message } => {
                let mut v = bytemuck::bytes_of(&ErrorBody {
                    code: *code,
                    rsv: 0,
                })
                .to_vec();
                v.extend_from_slice(truncated(message, MAX_MESSAGE - 24).as_bytes());
                v
            }
        };
        let h = MsgHeader {
            magic: MAGIC,
            version: VERSION,
            kind: self.kind(),
            body_len: body.len() as u32,
            seq,
        };
        let mut out = bytemuck::bytes_of(&h).to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Decodes one packet that arrived with `fds` descriptors. Returns the request number
    /// and the message.
    pub fn decode(packet: &[u8], fds: usize) -> Result<(u32, Message), DecodeError> {
        if packet.len() > MAX_MESSAGE {
            return Err(DecodeError::BadMessage("message too long"));
        }
        let h: MsgHeader = read_pod(packet)?;
        if h.magic != MAGIC {
            return Err(DecodeError::BadMessage("magic"));
        }
        if h.version != VERSION {
            return Err(DecodeError::BadMessage("version"));
        }
        let body = &packet[16..];
        if body.len() != h.body_len as usize {
            return Err(DecodeError::BadMessage("body_len"));
        }
        if fds != Message::fds_for(h.kind) {
            return Err(DecodeError::BadMessage("file descriptor count"));
        }
        let msg = match h.kind {
            kind::HELLO => Message::Hello(exact(body)?),
            kind::WELCOME => Message::Welcome(Box::new(exact(body)?)),
            kind::WINDOW_ALLOC => Message::WindowAlloc(exact(body)?),
            kind::WINDOW_GRANTED => Message::WindowGranted(exact(body)?),
            kind::WINDOW_FREE => Message::WindowFree(exact(body)?),
            kind::HOST_REGISTER => Message::HostRegister(exact(body)?),
            kind::HOST_REGISTERED => Message::HostRegistered(exact(body)?),
            kind::OK => empty(body, Message::Ok)?,
            kind::STATUS_QUERY => empty(body, Message::StatusQuery)?,
            kind::GOODBYE => empty(body, Message::Goodbye)?,
            kind::STATUS_REPLY => Message::StatusReply(utf8(body)?),
            kind::ERROR => {
                let e: ErrorBody = read_pod(body)?;
                e.check()?;
                Message::Error {
                    code: e.code,
                    message: utf8(&body[8..])?,
                }
            }
            _ => return Err(DecodeError::BadMessage("unknown kind")),
        };
        Ok((h.seq, msg))
    }
}

fn exact<T: Args>(body: &[u8]) -> Result<T, DecodeError> {
    if body.len() != core::mem::size_of::<T>() {
        return Err(DecodeError::BadMessage("body length"));
    }
    let v: T = read_pod(body)?;
    v.check()?;
    Ok(v)
}

fn empty(body: &[u8], m: Message) -> Result<Message, DecodeError> {
    if body.is_empty() {
        Ok(m)
    } else {
        Err(DecodeError::BadMessage("body must be empty"))
    }
}

fn utf8(b: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::BadMessage("not UTF-8"))
}

fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn hello_round_trip() {
        let mut h = HelloBody::zeroed();
        h.version = VERSION.into();
        h.pid = 42;
        let bytes = Message::Hello(h).encode(7);
        assert_eq!(Message::decode(&bytes, 0), Ok((7, Message::Hello(h))));
        assert_eq!(
            Message::decode(&bytes, 1),
            Err(DecodeError::BadMessage("file descriptor count"))
        );
        assert_eq!(
            Message::decode(&bytes[..bytes.len() - 1], 0),
            Err(DecodeError::BadMessage("body_len"))
        );
    }

    #[test]
    fn error_carries_text() {
        let m = Message::Error {
            code: error_code::NO_QUEUES,
            message: "all 255 queues in use".into(),
        };
        assert_eq!(Message::decode(&m.encode(3), 0), Ok((3, m)));
    }
}
