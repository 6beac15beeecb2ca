//! Completion status codes (spec §8).
//!
//! A status is a `u32` in one of three ranges:
//! * `0x0000..=0x0FFF`: a CUDA driver API `CUresult` value, passed to applications as is
//!   (the runtime shim maps it to the matching `cudaError_t`).
//! * `0x1000..=0x1FFF`: a protocol error: the entry or a reference in it was malformed.
//!   The shims report these to applications as `CUDA_ERROR_INVALID_VALUE` and log the
//!   precise name.
//! * `0x2000..=0x20FF`: `0x2000 + cublasStatus_t`, for BLAS commands.

use core::fmt;

/// A completion status. Any `u32` may arrive from the device, so this is an open set of
/// values rather than an enum; the named ones are associated constants.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct Status(pub u32);

macro_rules! statuses {
    ($( $(#[$m:meta])* $name:ident = $val:expr ),* $(,)?) => {
        impl Status {
            $( $(#[$m])* pub const $name: Status = Status($val); )*

            /// Every named status, in declaration order (used by tests and the spec check).
            pub const NAMED: &'static [(&'static str, Status)] = &[ $( (stringify!($name), Status($val)) ),* ];

            /// The name of a named status.
            pub fn name(self) -> Option<&'static str> {
                match self.0 { $( $val => Some(stringify!($name)), )* _ => None }
            }
        }
    };
}

statuses! {
    /// Success.
    SUCCESS = 0,
    /// `CUDA_ERROR_INVALID_VALUE`.
    INVALID_VALUE = 1,
    /// `CUDA_ERROR_OUT_OF_MEMORY`: device memory or the PD's quota is exhausted.
    OUT_OF_MEMORY = 2,
    /// `CUDA_ERROR_NOT_INITIALIZED`.
    NOT_INITIALIZED = 3,
    /// `CUDA_ERROR_DEVICE_UNAVAILABLE`: the device was lost (the driver went away or the
    /// device entered the fatal state). Produced by the client core, not the device.
    DEVICE_UNAVAILABLE = 46,
    /// `CUDA_ERROR_NO_DEVICE`.
    NO_DEVICE = 100,
    /// `CUDA_ERROR_INVALID_DEVICE`.
    INVALID_DEVICE = 101,
    /// `CUDA_ERROR_INVALID_IMAGE`: the module image could not be parsed.
    INVALID_IMAGE = 200,
    /// `CUDA_ERROR_INVALID_CONTEXT`.
    INVALID_CONTEXT = 201,
    /// `CUDA_ERROR_NO_BINARY_FOR_GPU`: the image has no code for this device.
    NO_BINARY_FOR_GPU = 209,
    /// `CUDA_ERROR_INVALID_PTX`.
    INVALID_PTX = 218,
    /// `CUDA_ERROR_UNSUPPORTED_LIMIT`: CTX_GET_LIMIT / CTX_SET_LIMIT on a limit the
    /// executor does not have.
    UNSUPPORTED_LIMIT = 215,
    /// `CUDA_ERROR_INVALID_HANDLE`: unknown, stale or wrong-kind handle.
    INVALID_HANDLE = 400,
    /// `CUDA_ERROR_ILLEGAL_STATE`.
    ILLEGAL_STATE = 401,
    /// `CUDA_ERROR_NOT_FOUND`: symbol or cached module not found.
    NOT_FOUND = 500,
    /// `CUDA_ERROR_NOT_READY`: queried work has not completed.
    NOT_READY = 600,
    /// `CUDA_ERROR_ILLEGAL_ADDRESS`: a device address outside any allocation. Sticky.
    ILLEGAL_ADDRESS = 700,
    /// `CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES`.
    LAUNCH_OUT_OF_RESOURCES = 701,
    /// `CUDA_ERROR_LAUNCH_TIMEOUT`. Sticky.
    LAUNCH_TIMEOUT = 702,
    /// `CUDA_ERROR_ASSERT`. Sticky.
    ASSERT = 710,
    /// `CUDA_ERROR_MISALIGNED_ADDRESS`. Sticky.
    MISALIGNED_ADDRESS = 716,
    /// `CUDA_ERROR_LAUNCH_FAILED`. Sticky.
    LAUNCH_FAILED = 719,
    /// `CUDA_ERROR_NOT_PERMITTED`.
    NOT_PERMITTED = 800,
    /// `CUDA_ERROR_NOT_SUPPORTED`: the operation is valid but this device or executor does
    /// not implement it. The device logs the operation's name.
    NOT_SUPPORTED = 801,
    /// `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`.
    STREAM_CAPTURE_UNSUPPORTED = 900,
    /// `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`.
    STREAM_CAPTURE_INVALIDATED = 901,
    /// `CUDA_ERROR_STREAM_CAPTURE_UNMATCHED`.
    STREAM_CAPTURE_UNMATCHED = 903,
    /// `CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD` (never produced by the device; listed for
    /// the shims).
    STREAM_CAPTURE_WRONG_THREAD = 908,
    /// `CUDA_ERROR_TIMEOUT`: a bounded wait on the device ran out.
    TIMEOUT = 909,
    /// `CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE`.
    GRAPH_EXEC_UPDATE_FAILURE = 910,
    /// `CUDA_ERROR_UNKNOWN`.
    UNKNOWN = 999,

    /// Protocol: the opcode is not defined.
    BAD_OPCODE = 0x1001,
    /// Protocol: a reserved flag bit is set.
    BAD_FLAGS = 0x1002,
    /// Protocol: a reserved field is not zero.
    RESERVED_NONZERO = 0x1003,
    /// Protocol: an admin opcode on an I/O queue or an I/O opcode on the admin queue.
    WRONG_QUEUE = 0x1004,
    /// Protocol: the stream field is set on an opcode that takes no stream.
    STREAM_NOT_ALLOWED = 0x1005,
    /// Protocol: a payload was given to an opcode that takes none.
    PAYLOAD_NOT_ALLOWED = 0x1006,
    /// Protocol: the opcode needs a payload (of at least a minimum size) and it is
    /// missing or shorter.
    PAYLOAD_TOO_SHORT = 0x1007,
    /// Protocol: the payload descriptor is inconsistent (inline with a window set,
    /// a window payload naming window 0, an offset without a length).
    BAD_PAYLOAD_DESCRIPTOR = 0x1008,
    /// Protocol: an inline payload longer than the ring allows.
    INLINE_TOO_LONG = 0x1009,
    /// Protocol: the tail published fewer slots than the inline payload needs.
    INLINE_TRUNCATED = 0x100A,
    /// Protocol: an argument is outside its allowed range.
    BAD_ARGUMENT = 0x100B,
    /// Protocol: a window id that the PD does not own.
    BAD_WINDOW = 0x100C,
    /// Protocol: an (offset, length) that leaves its window, or that the window's access
    /// rights do not allow.
    OUT_OF_BOUNDS = 0x100D,
    /// Protocol: an output buffer is too small; `result1` of the completion holds the
    /// size needed.
    BUFFER_TOO_SMALL = 0x100E,
    /// Protocol: a module image whose SHA-256 differs from the hash in its header.
    HASH_MISMATCH = 0x100F,
    /// Protocol: the command needs a feature the driver did not accept.
    FEATURE_NOT_ACCEPTED = 0x1010,
    /// Protocol: an admin command named a PD, queue or window that does not exist, or
    /// tried to create one that already exists.
    BAD_OBJECT = 0x1011,
    /// Protocol: a structured payload failed validation (see the log for the field).
    BAD_PAYLOAD = 0x1012,

    /// `CUBLAS_STATUS_NOT_INITIALIZED`.
    BLAS_NOT_INITIALIZED = 0x2001,
    /// `CUBLAS_STATUS_ALLOC_FAILED`.
    BLAS_ALLOC_FAILED = 0x2003,
    /// `CUBLAS_STATUS_INVALID_VALUE`.
    BLAS_INVALID_VALUE = 0x2007,
    /// `CUBLAS_STATUS_ARCH_MISMATCH`.
    BLAS_ARCH_MISMATCH = 0x2008,
    /// `CUBLAS_STATUS_MAPPING_ERROR`.
    BLAS_MAPPING_ERROR = 0x200B,
    /// `CUBLAS_STATUS_EXECUTION_FAILED`.
    BLAS_EXECUTION_FAILED = 0x200D,
    /// `CUBLAS_STATUS_INTERNAL_ERROR`.
    BLAS_INTERNAL_ERROR = 0x200E,
    /// `CUBLAS_STATUS_NOT_SUPPORTED`.
    BLAS_NOT_SUPPORTED = 0x200F,
}

/// The range a status value belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    /// A CUDA driver `CUresult`.
    Cuda,
    /// A protocol error (malformed entry or reference).
    Protocol,
    /// A cuBLAS status (`value - 0x2000`).
    Blas,
    /// Outside every defined range (a newer device, or corruption).
    Unknown,
}

impl Status {
    /// First value of the protocol range.
    pub const PROTOCOL_BASE: u32 = 0x1000;
    /// First value of the cuBLAS range.
    pub const BLAS_BASE: u32 = 0x2000;

    /// True for [`Status::SUCCESS`].
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Which range the value is in.
    pub const fn class(self) -> StatusClass {
        match self.0 {
            0..=0x0FFF => StatusClass::Cuda,
            0x1000..=0x1FFF => StatusClass::Protocol,
            0x2000..=0x20FF => StatusClass::Blas,
            _ => StatusClass::Unknown,
        }
    }

    /// A cuBLAS status as a device status.
    pub const fn from_blas(cublas_status: u32) -> Status {
        Status(Self::BLAS_BASE + (cublas_status & 0xFF))
    }

    /// True for errors that leave the PD's context unusable: once latched, every later
    /// command of the PD fails with the same status until CTX_RESET (CUDA's "sticky"
    /// errors, spec §8.3).
    pub const fn is_sticky(self) -> bool {
        matches!(self.0, 700 | 702 | 710 | 714 | 715 | 716 | 717 | 718 | 719)
    }

    /// The CUresult an application should see for this status.
    pub const fn to_cuda(self) -> u32 {
        match self.class() {
            StatusClass::Cuda => self.0,
            StatusClass::Protocol if self.0 == Status::FEATURE_NOT_ACCEPTED.0 => {
                Status::NOT_SUPPORTED.0
            }
            StatusClass::Protocol => Status::INVALID_VALUE.0,
            StatusClass::Blas | StatusClass::Unknown => Status::UNKNOWN.0,
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "Status({:#x})", self.0),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_classified() {
        let mut seen = std::collections::HashSet::new();
        for (name, s) in Status::NAMED {
            assert!(seen.insert(s.0), "{name} duplicates a value");
            assert_ne!(s.class(), StatusClass::Unknown, "{name}");
            assert_eq!(s.name(), Some(*name));
        }
    }

    #[test]
    fn protocol_errors_reach_applications_as_invalid_value() {
        assert_eq!(Status::BAD_OPCODE.to_cuda(), 1);
        assert_eq!(Status::FEATURE_NOT_ACCEPTED.to_cuda(), 801);
        assert_eq!(Status::OUT_OF_MEMORY.to_cuda(), 2);
        assert_eq!(Status::from_blas(15), Status::BLAS_NOT_SUPPORTED);
    }

    #[test]
    fn sticky_set() {
        assert!(Status::ILLEGAL_ADDRESS.is_sticky());
        assert!(Status::LAUNCH_FAILED.is_sticky());
        assert!(!Status::INVALID_VALUE.is_sticky());
        assert!(!Status::NOT_READY.is_sticky());
    }
}
