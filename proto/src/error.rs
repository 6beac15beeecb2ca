//! Decode errors: one variant for each kind of malformed input (spec §8.2).
//!
//! Every variant maps to the protocol status the device puts in the error completion
//! ([`DecodeError::status`]), so a client learns exactly what was wrong.

use crate::status::Status;

/// Why bytes from the other side were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    #[error("truncated: need {need} bytes, got {got}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// The opcode is not defined.
    #[error("unknown opcode {0:#06x}")]
    UnknownOpcode(u16),
    /// A reserved flag bit is set.
    #[error("reserved flag bits set: {0:#06x}")]
    ReservedFlags(u16),
    /// An admin opcode on an I/O queue, or the other way round.
    #[error("opcode {0:#06x} is not allowed on this queue")]
    WrongQueue(u16),
    /// A reserved field is not zero.
    #[error("reserved field `{0}` is not zero")]
    ReservedNonZero(&'static str),
    /// The stream field is set on an opcode that takes no stream.
    #[error("opcode takes no stream but stream {0:#x} was given")]
    StreamNotAllowed(u64),
    /// A payload was given to an opcode that takes none.
    #[error("opcode takes no payload")]
    PayloadNotAllowed,
    /// The payload is missing or shorter than the opcode needs.
    #[error("payload too short: need at least {min} bytes, got {got}")]
    PayloadTooShort {
        /// Minimum length.
        min: u32,
        /// Length given.
        got: u32,
    },
    /// The payload descriptor contradicts itself.
    #[error("inconsistent payload descriptor: {0}")]
    BadPayloadDescriptor(&'static str),
    /// An inline payload longer than allowed.
    #[error("inline payload of {len} bytes exceeds the limit of {max}")]
    InlineTooLong {
        /// Length given.
        len: u32,
        /// Largest allowed.
        max: u32,
    },
    /// The published tail does not cover the inline payload.
    #[error("inline payload needs {need} slots but only {avail} were published")]
    InlineTruncated {
        /// Slots needed.
        need: u32,
        /// Slots published after the entry.
        avail: u32,
    },
    /// An argument outside its allowed range.
    #[error("argument `{0}` out of range")]
    BadArgument(&'static str),
    /// A feature the driver did not accept.
    #[error("command needs feature bit {0:#x}, which was not accepted")]
    FeatureNotAccepted(u64),
    /// A structured payload failed validation.
    #[error("payload field `{0}` is invalid")]
    BadPayload(&'static str),
    /// A control-plane message was malformed (spec §9); the string names what.
    #[error("malformed control message: {0}")]
    BadMessage(&'static str),
}

impl DecodeError {
    /// The completion status that reports this error.
    pub const fn status(&self) -> Status {
        match self {
            DecodeError::Truncated { .. } => Status::PAYLOAD_TOO_SHORT,
            DecodeError::UnknownOpcode(_) => Status::BAD_OPCODE,
            DecodeError::ReservedFlags(_) => Status::BAD_FLAGS,
            DecodeError::WrongQueue(_) => Status::WRONG_QUEUE,
            DecodeError::ReservedNonZero(_) => Status::RESERVED_NONZERO,
            DecodeError::StreamNotAllowed(_) => Status::STREAM_NOT_ALLOWED,
            DecodeError::PayloadNotAllowed => Status::PAYLOAD_NOT_ALLOWED,
            DecodeError::PayloadTooShort { .. } => Status::PAYLOAD_TOO_SHORT,
            DecodeError::BadPayloadDescriptor(_) => Status::BAD_PAYLOAD_DESCRIPTOR,
            DecodeError::InlineTooLong { .. } => Status::INLINE_TOO_LONG,
            DecodeError::InlineTruncated { .. } => Status::INLINE_TRUNCATED,
            DecodeError::BadArgument(_) => Status::BAD_ARGUMENT,
            DecodeError::FeatureNotAccepted(_) => Status::FEATURE_NOT_ACCEPTED,
            DecodeError::BadPayload(_) | DecodeError::BadMessage(_) => Status::BAD_PAYLOAD,
        }
    }
}

/// Reads a `T` from the front of `bytes`, refusing short input.
pub(crate) fn read_pod<T: bytemuck::AnyBitPattern>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = core::mem::size_of::<T>();
    match bytes.get(..need) {
        Some(b) => Ok(bytemuck::pod_read_unaligned(b)),
        None => Err(DecodeError::Truncated {
            need,
            got: bytes.len(),
        }),
    }
}
