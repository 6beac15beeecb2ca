//! [`ClientError`]: every way the client core can fail, with the CUDA status a shim reports
//! for it.

use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use vgpu_proto::control::error_code;
use vgpu_proto::Status;

use vgpu_os::shm::{OutOfBounds, ShmError};

/// An error of the client core.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the driver's socket: the file is missing (`ENOENT`), or it is a
    /// stale socket nobody accepts on (`ECONNREFUSED`). The shims report
    /// `CUDA_ERROR_NO_DEVICE`.
    #[error(
        "no vgpu driver at {}: {source} (is vgpu-driver running? VGPU_SOCKET names its socket)",
        path.display()
    )]
    NoDriver {
        /// The socket path tried.
        path: PathBuf,
        /// What `connect` said.
        source: Errno,
    },
    /// The socket exists but connecting failed for another reason (e.g. `EACCES`: the
    /// process is not in the socket's group).
    #[error("cannot connect to the vgpu driver at {}: {source}", path.display())]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// What `socket` or `connect` said.
        source: Errno,
    },
    /// A system call on the control socket or an eventfd failed.
    #[error("{op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: Errno,
    },
    /// The driver closed the control connection (or the connection was dropped): the
    /// device is gone for this process.
    #[error("the connection to the vgpu driver is closed")]
    Disconnected,
    /// The driver sent something that breaks the protocol (malformed message, wrong
    /// number of descriptors, wrong reply, impossible sizes), or the device broke the
    /// queue protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The driver answered ERROR.
    #[error("the vgpu driver refused: {} ({code}): {message}", error_code_name(*code))]
    Refused {
        /// The driver's error code ([`vgpu_proto::control::error_code`]).
        code: u32,
        /// The driver's explanation.
        message: String,
    },
    /// A memfd from the driver could not be mapped.
    #[error("cannot map the {what}: {source}")]
    Map {
        /// Which memfd.
        what: &'static str,
        /// Why.
        source: ShmError,
    },
    /// A bounded wait ran out (`ConnectOptions::timeout`, from `VGPU_TIMEOUT_MS`).
    #[error("{what}: no answer within {waited:?} (VGPU_TIMEOUT_MS)")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// How long it waited.
        waited: Duration,
    },
    /// The device stopped the queue because its indices were corrupt (spec §5.8).
    #[error("the device stopped the queue (QUEUE_ERROR = {0})")]
    QueueStopped(u32),
    /// An inline payload longer than the queue allows.
    #[error("inline payload of {len} bytes exceeds this queue's limit of {max} bytes")]
    InlineTooLong {
        /// Length given.
        len: usize,
        /// The queue's limit.
        max: u32,
    },
    /// The caller's request is inconsistent (e.g. the payload descriptor does not match the
    /// inline bytes given).
    #[error("invalid request: {0}")]
    BadRequest(&'static str),
    /// No window with this id belongs to the connection.
    #[error("no window {0}")]
    UnknownWindow(u32),
    /// A window access outside the window.
    #[error("window access out of bounds: {0}")]
    OutOfBounds(#[from] OutOfBounds),
}

/// The name of a control-plane error code (spec §9.5).
pub fn error_code_name(code: u32) -> &'static str {
    match code {
        error_code::VERSION_MISMATCH => "VERSION_MISMATCH",
        error_code::BAD_MESSAGE => "BAD_MESSAGE",
        error_code::NOT_PERMITTED => "NOT_PERMITTED",
        error_code::NO_QUEUES => "NO_QUEUES",
        error_code::NO_MEMORY => "NO_MEMORY",
        error_code::UNKNOWN_WINDOW => "UNKNOWN_WINDOW",
        error_code::DEVICE_ERROR => "DEVICE_ERROR",
        error_code::BAD_STATE => "BAD_STATE",
        error_code::NOT_SUPPORTED => "NOT_SUPPORTED",
        error_code::INVALID => "INVALID",
        _ => "unknown error code",
    }
}

impl ClientError {
    /// The CUDA driver status a shim reports for this error.
    ///
    /// * no driver, or not allowed to reach it: `NO_DEVICE`;
    /// * timeouts: `TIMEOUT`;
    /// * the driver's NO_MEMORY: `OUT_OF_MEMORY`; NO_QUEUES: `DEVICE_UNAVAILABLE` (the device
    ///   is busy with other clients); NOT_PERMITTED: `NOT_PERMITTED`;
    /// * the caller's mistakes (bad request, unknown window, out of bounds, inline too long,
    ///   UNKNOWN_WINDOW): `INVALID_VALUE`;
    /// * everything else (lost connection, protocol violations, stopped queue, failed system
    ///   calls): `DEVICE_UNAVAILABLE` (spec §8.4).
    pub fn status(&self) -> Status {
        match self {
            ClientError::NoDriver { .. } | ClientError::Connect { .. } => Status::NO_DEVICE,
            ClientError::Timeout { .. } => Status::TIMEOUT,
            ClientError::Refused { code, .. } => match *code {
                error_code::NO_MEMORY => Status::OUT_OF_MEMORY,
                error_code::NOT_PERMITTED => Status::NOT_PERMITTED,
                error_code::UNKNOWN_WINDOW | error_code::INVALID => Status::INVALID_VALUE,
                error_code::NOT_SUPPORTED => Status::NOT_SUPPORTED,
                error_code::VERSION_MISMATCH => Status::NO_DEVICE,
                _ => Status::DEVICE_UNAVAILABLE,
            },
            ClientError::InlineTooLong { .. }
            | ClientError::BadRequest(_)
            | ClientError::UnknownWindow(_)
            | ClientError::OutOfBounds(_) => Status::INVALID_VALUE,
            ClientError::Io { .. }
            | ClientError::Disconnected
            | ClientError::Protocol(_)
            | ClientError::Map { .. }
            | ClientError::QueueStopped(_) => Status::DEVICE_UNAVAILABLE,
        }
    }
}
