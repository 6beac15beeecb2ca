//! The status tables of the libraries: each status's value, C name and message, from which
//! the status type, its constants and the name/string functions (`cublasGetStatusName`,
//! `cublasGetStatusString`, …) are generated. The device's own status codes are
//! `vgpu_proto::Status`; its BLAS range is `0x2000 +` a [`CublasStatus`].

use crate::ptr::{BufferError, Null};
use crate::LibStatus;
use std::ffi::{c_char, CStr};

macro_rules! status_table {
    (
        $(#[$m:meta])* $ty:ident, unknown $uname:literal, $utext:literal, not_supported $ns:ident, bad_pointer $bad:ident {
            $( $name:ident = $val:literal, $cname:literal, $text:literal; )*
        }
    ) => {
        $(#[$m])*
        #[repr(transparent)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $ty(pub u32);

        impl $ty {
            $( #[doc = concat!("`", stringify!($name), "`.")] pub const $name: $ty = $ty($val); )*

            /// The C name (`…_SUCCESS`), if the value is known.
            pub fn name(self) -> Option<&'static CStr> {
                match self.0 { $( $val => Some($cname), )* _ => None }
            }

            /// The message, if the value is known.
            pub fn text(self) -> Option<&'static CStr> {
                match self.0 { $( $val => Some($text), )* _ => None }
            }

            /// The C name, or the library's name for unknown values, as a C string.
            pub fn name_ptr(self) -> *const c_char {
                self.name().unwrap_or($uname).as_ptr()
            }

            /// The message, or the library's text for unknown values, as a C string.
            pub fn text_ptr(self) -> *const c_char {
                self.text().unwrap_or($utext).as_ptr()
            }

            /// Every named value.
            pub const ALL: &'static [$ty] = &[ $( $ty($val) ),* ];
        }

        impl LibStatus for $ty {
            const SUCCESS: Self = $ty::SUCCESS;
            const NOT_SUPPORTED: Self = $ty::$ns;
        }

        /// A null pointer where one is needed.
        impl From<Null> for $ty {
            fn from(_: Null) -> Self {
                $ty::$bad
            }
        }
    };
}

status_table! {
    /// `cublasStatus_t`.
    CublasStatus, unknown c"CUBLAS_STATUS_UNKNOWN", c"CUBLAS_STATUS_UNKNOWN", not_supported NOT_SUPPORTED, bad_pointer INVALID_VALUE {
        SUCCESS = 0, c"CUBLAS_STATUS_SUCCESS", c"success";
        NOT_INITIALIZED = 1, c"CUBLAS_STATUS_NOT_INITIALIZED", c"the library was not initialized";
        ALLOC_FAILED = 3, c"CUBLAS_STATUS_ALLOC_FAILED", c"the resource allocation failed";
        INVALID_VALUE = 7, c"CUBLAS_STATUS_INVALID_VALUE", c"an invalid numeric value was used as an argument";
        ARCH_MISMATCH = 8, c"CUBLAS_STATUS_ARCH_MISMATCH", c"an absent device architectural feature is required";
        MAPPING_ERROR = 11, c"CUBLAS_STATUS_MAPPING_ERROR", c"an access to GPU memory space failed";
        EXECUTION_FAILED = 13, c"CUBLAS_STATUS_EXECUTION_FAILED", c"the GPU program failed to execute";
        INTERNAL_ERROR = 14, c"CUBLAS_STATUS_INTERNAL_ERROR", c"an internal operation failed";
        NOT_SUPPORTED = 15, c"CUBLAS_STATUS_NOT_SUPPORTED", c"the functionality requested is not supported";
        LICENSE_ERROR = 16, c"CUBLAS_STATUS_LICENSE_ERROR", c"error detected trying to check the license";
    }
}

status_table! {
    /// `nvmlReturn_t`.
    NvmlReturn, unknown c"NVML_ERROR_UNKNOWN", c"Unknown Error", not_supported NOT_SUPPORTED, bad_pointer INVALID_ARGUMENT {
        SUCCESS = 0, c"NVML_SUCCESS", c"Success";
        UNINITIALIZED = 1, c"NVML_ERROR_UNINITIALIZED", c"Uninitialized";
        INVALID_ARGUMENT = 2, c"NVML_ERROR_INVALID_ARGUMENT", c"Invalid Argument";
        NOT_SUPPORTED = 3, c"NVML_ERROR_NOT_SUPPORTED", c"Not Supported";
        NO_PERMISSION = 4, c"NVML_ERROR_NO_PERMISSION", c"Insufficient Permissions";
        ALREADY_INITIALIZED = 5, c"NVML_ERROR_ALREADY_INITIALIZED", c"Already Initialized";
        NOT_FOUND = 6, c"NVML_ERROR_NOT_FOUND", c"Not Found";
        INSUFFICIENT_SIZE = 7, c"NVML_ERROR_INSUFFICIENT_SIZE", c"Insufficient Size";
        INSUFFICIENT_POWER = 8, c"NVML_ERROR_INSUFFICIENT_POWER", c"Insufficient External Power";
        DRIVER_NOT_LOADED = 9, c"NVML_ERROR_DRIVER_NOT_LOADED", c"Driver Not Loaded";
        TIMEOUT = 10, c"NVML_ERROR_TIMEOUT", c"Timeout";
        IRQ_ISSUE = 11, c"NVML_ERROR_IRQ_ISSUE", c"Interrupt request issue";
        LIBRARY_NOT_FOUND = 12, c"NVML_ERROR_LIBRARY_NOT_FOUND", c"NVML Shared Library Not Found";
        FUNCTION_NOT_FOUND = 13, c"NVML_ERROR_FUNCTION_NOT_FOUND", c"Function Not Found";
        CORRUPTED_INFOROM = 14, c"NVML_ERROR_CORRUPTED_INFOROM", c"Corrupted infoROM";
        GPU_IS_LOST = 15, c"NVML_ERROR_GPU_IS_LOST", c"GPU is lost";
        RESET_REQUIRED = 16, c"NVML_ERROR_RESET_REQUIRED", c"GPU requires restart";
        OPERATING_SYSTEM = 17, c"NVML_ERROR_OPERATING_SYSTEM", c"The operating system has blocked the request.";
        LIB_RM_VERSION_MISMATCH = 18, c"NVML_ERROR_LIB_RM_VERSION_MISMATCH", c"RM has detected an NVML/RM version mismatch.";
        IN_USE = 19, c"NVML_ERROR_IN_USE", c"In use by another client";
        MEMORY = 20, c"NVML_ERROR_MEMORY", c"Insufficient Memory";
        NO_DATA = 21, c"NVML_ERROR_NO_DATA", c"No data";
        INSUFFICIENT_RESOURCES = 23, c"NVML_ERROR_INSUFFICIENT_RESOURCES", c"Insufficient resources";
        ARGUMENT_VERSION_MISMATCH = 25, c"NVML_ERROR_ARGUMENT_VERSION_MISMATCH", c"Version mismatch between the argument and the API";
        NOT_READY = 27, c"NVML_ERROR_NOT_READY", c"Not ready";
        GPU_NOT_FOUND = 28, c"NVML_ERROR_GPU_NOT_FOUND", c"GPU not found";
        INVALID_STATE = 29, c"NVML_ERROR_INVALID_STATE", c"Invalid state";
        UNKNOWN = 999, c"NVML_ERROR_UNKNOWN", c"Unknown Error";
    }
}

status_table! {
    /// `CUresult`, as `libcuda.so.1` names and describes it (`cuGetErrorName`,
    /// `cuGetErrorString`). The device's statuses in the CUDA range are these values.
    CuStatus, unknown c"CUDA_ERROR_UNKNOWN", c"unknown error", not_supported NOT_SUPPORTED, bad_pointer INVALID_VALUE {
        SUCCESS = 0, c"CUDA_SUCCESS", c"no error";
        INVALID_VALUE = 1, c"CUDA_ERROR_INVALID_VALUE", c"invalid argument";
        OUT_OF_MEMORY = 2, c"CUDA_ERROR_OUT_OF_MEMORY", c"out of memory";
        NOT_INITIALIZED = 3, c"CUDA_ERROR_NOT_INITIALIZED", c"initialization error";
        DEINITIALIZED = 4, c"CUDA_ERROR_DEINITIALIZED", c"driver shutting down";
        DEVICE_UNAVAILABLE = 46, c"CUDA_ERROR_DEVICE_UNAVAILABLE", c"CUDA-capable device(s) is/are busy or unavailable";
        NO_DEVICE = 100, c"CUDA_ERROR_NO_DEVICE", c"no CUDA-capable device is detected";
        INVALID_DEVICE = 101, c"CUDA_ERROR_INVALID_DEVICE", c"invalid device ordinal";
        INVALID_IMAGE = 200, c"CUDA_ERROR_INVALID_IMAGE", c"device kernel image is invalid";
        INVALID_CONTEXT = 201, c"CUDA_ERROR_INVALID_CONTEXT", c"invalid device context";
        NO_BINARY_FOR_GPU = 209, c"CUDA_ERROR_NO_BINARY_FOR_GPU", c"no kernel image is available for execution on the device";
        UNSUPPORTED_LIMIT = 215, c"CUDA_ERROR_UNSUPPORTED_LIMIT", c"limit is not supported on this architecture";
        INVALID_PTX = 218, c"CUDA_ERROR_INVALID_PTX", c"a PTX JIT compilation failed";
        FILE_NOT_FOUND = 301, c"CUDA_ERROR_FILE_NOT_FOUND", c"file not found";
        INVALID_HANDLE = 400, c"CUDA_ERROR_INVALID_HANDLE", c"invalid resource handle";
        NOT_FOUND = 500, c"CUDA_ERROR_NOT_FOUND", c"named symbol not found";
        NOT_READY = 600, c"CUDA_ERROR_NOT_READY", c"device not ready";
        ILLEGAL_ADDRESS = 700, c"CUDA_ERROR_ILLEGAL_ADDRESS", c"an illegal memory access was encountered";
        LAUNCH_OUT_OF_RESOURCES = 701, c"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", c"too many resources requested for launch";
        LAUNCH_TIMEOUT = 702, c"CUDA_ERROR_LAUNCH_TIMEOUT", c"the launch timed out and was terminated";
        PRIMARY_CONTEXT_ACTIVE = 708, c"CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE", c"primary context active";
        CONTEXT_IS_DESTROYED = 709, c"CUDA_ERROR_CONTEXT_IS_DESTROYED", c"context is destroyed";
        ASSERT = 710, c"CUDA_ERROR_ASSERT", c"device-side assert triggered";
        ILLEGAL_INSTRUCTION = 715, c"CUDA_ERROR_ILLEGAL_INSTRUCTION", c"an illegal instruction was encountered";
        MISALIGNED_ADDRESS = 716, c"CUDA_ERROR_MISALIGNED_ADDRESS", c"misaligned address";
        LAUNCH_FAILED = 719, c"CUDA_ERROR_LAUNCH_FAILED", c"unspecified launch failure";
        NOT_PERMITTED = 800, c"CUDA_ERROR_NOT_PERMITTED", c"operation not permitted";
        NOT_SUPPORTED = 801, c"CUDA_ERROR_NOT_SUPPORTED", c"operation not supported";
        STREAM_CAPTURE_UNSUPPORTED = 900, c"CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", c"operation not permitted when stream is capturing";
        STREAM_CAPTURE_INVALIDATED = 901, c"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", c"operation failed due to a previous error during capture";
        STREAM_CAPTURE_UNMATCHED = 903, c"CUDA_ERROR_STREAM_CAPTURE_UNMATCHED", c"capture was not ended in the same stream as it began";
        CAPTURED_EVENT = 907, c"CUDA_ERROR_CAPTURED_EVENT", c"operation not permitted on an event last recorded in a capturing stream";
        STREAM_CAPTURE_WRONG_THREAD = 908, c"CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD", c"attempt to terminate a thread-local capture sequence from another thread";
        TIMEOUT = 909, c"CUDA_ERROR_TIMEOUT", c"timeout expired";
        GRAPH_EXEC_UPDATE_FAILURE = 910, c"CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE", c"the graph update was not performed because it included changes which violated constraints specific to instantiated graph update";
        UNKNOWN = 999, c"CUDA_ERROR_UNKNOWN", c"unknown error";
    }
}

status_table! {
    /// `cudaError_t`, as `libcudart.so.12` names and describes it (`cudaGetErrorName`,
    /// `cudaGetErrorString`).
    CudartStatus, unknown c"cudaErrorUnknown", c"unrecognized error code", not_supported NOT_SUPPORTED, bad_pointer INVALID_VALUE {
        SUCCESS = 0, c"cudaSuccess", c"no error";
        INVALID_VALUE = 1, c"cudaErrorInvalidValue", c"invalid argument";
        MEMORY_ALLOCATION = 2, c"cudaErrorMemoryAllocation", c"out of memory";
        INITIALIZATION_ERROR = 3, c"cudaErrorInitializationError", c"initialization error";
        INVALID_SYMBOL = 13, c"cudaErrorInvalidSymbol", c"invalid device symbol";
        INVALID_MEMCPY_DIRECTION = 21, c"cudaErrorInvalidMemcpyDirection", c"invalid copy direction for memcpy";
        INSUFFICIENT_DRIVER = 35, c"cudaErrorInsufficientDriver", c"CUDA driver version is insufficient for CUDA runtime version";
        DEVICES_UNAVAILABLE = 46, c"cudaErrorDevicesUnavailable", c"CUDA-capable device(s) is/are busy or unavailable";
        INVALID_DEVICE_FUNCTION = 98, c"cudaErrorInvalidDeviceFunction", c"invalid device function";
        NO_DEVICE = 100, c"cudaErrorNoDevice", c"no CUDA-capable device is detected";
        INVALID_DEVICE = 101, c"cudaErrorInvalidDevice", c"invalid device ordinal";
        INVALID_KERNEL_IMAGE = 200, c"cudaErrorInvalidKernelImage", c"device kernel image is invalid";
        NO_KERNEL_IMAGE_FOR_DEVICE = 209, c"cudaErrorNoKernelImageForDevice", c"no kernel image is available for execution on the device";
        INVALID_RESOURCE_HANDLE = 400, c"cudaErrorInvalidResourceHandle", c"invalid resource handle";
        SYMBOL_NOT_FOUND = 500, c"cudaErrorSymbolNotFound", c"named symbol not found";
        NOT_READY = 600, c"cudaErrorNotReady", c"device not ready";
        ILLEGAL_ADDRESS = 700, c"cudaErrorIllegalAddress", c"an illegal memory access was encountered";
        PEER_ACCESS_NOT_ENABLED = 705, c"cudaErrorPeerAccessNotEnabled", c"peer access has not been enabled";
        LAUNCH_FAILURE = 719, c"cudaErrorLaunchFailure", c"unspecified launch failure";
        NOT_SUPPORTED = 801, c"cudaErrorNotSupported", c"operation not supported";
        STREAM_CAPTURE_UNSUPPORTED = 900, c"cudaErrorStreamCaptureUnsupported", c"operation not permitted when stream is capturing";
        STREAM_CAPTURE_INVALIDATED = 901, c"cudaErrorStreamCaptureInvalidated", c"operation failed due to a previous error during capture";
        STREAM_CAPTURE_UNMATCHED = 903, c"cudaErrorStreamCaptureUnmatched", c"capture was not ended in the same stream as it began";
        STREAM_CAPTURE_WRONG_THREAD = 908, c"cudaErrorStreamCaptureWrongThread", c"attempt to terminate a thread-local capture sequence from another thread";
        TIMEOUT = 909, c"cudaErrorTimeout", c"timeout expired";
        GRAPH_EXEC_UPDATE_FAILURE = 910, c"cudaErrorGraphExecUpdateFailure", c"the graph update was not performed because it included changes which violated constraints specific to instantiated graph update";
        UNKNOWN = 999, c"cudaErrorUnknown", c"unknown error";
    }
}

/// A `CUresult` from the crates below the driver API (they keep statuses as plain `u32`).
impl From<u32> for CuStatus {
    fn from(r: u32) -> Self {
        CuStatus(r)
    }
}

/// A caller's buffer that is null or empty.
impl From<BufferError> for CuStatus {
    fn from(_: BufferError) -> Self {
        CuStatus::INVALID_VALUE
    }
}

impl From<BufferError> for NvmlReturn {
    fn from(e: BufferError) -> Self {
        match e {
            BufferError::Null => NvmlReturn::INVALID_ARGUMENT,
            BufferError::TooSmall => NvmlReturn::INSUFFICIENT_SIZE,
        }
    }
}

impl CublasStatus {
    /// The status for a `CUresult` from `libcuda.so.1` (a device or transport error).
    pub fn from_cuda(r: u32) -> CublasStatus {
        match vgpu_proto::Status(r) {
            vgpu_proto::Status::SUCCESS => CublasStatus::SUCCESS,
            vgpu_proto::Status::OUT_OF_MEMORY => CublasStatus::ALLOC_FAILED,
            vgpu_proto::Status::NOT_INITIALIZED
            | vgpu_proto::Status::NO_DEVICE
            | vgpu_proto::Status::DEVICE_UNAVAILABLE => CublasStatus::NOT_INITIALIZED,
            vgpu_proto::Status::NOT_SUPPORTED => CublasStatus::NOT_SUPPORTED,
            vgpu_proto::Status::INVALID_VALUE => CublasStatus::INVALID_VALUE,
            s if s.class() == vgpu_proto::status::StatusClass::Blas => {
                CublasStatus(s.0 - vgpu_proto::Status::BLAS_BASE)
            }
            _ => CublasStatus::EXECUTION_FAILED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_texts() {
        for s in CublasStatus::ALL {
            let n = s.name().unwrap().to_str().unwrap();
            assert!(n.starts_with("CUBLAS_STATUS_"), "{n}");
            assert!(!s.text().unwrap().is_empty());
        }
        assert_eq!(CublasStatus(99).name(), None);
        assert_eq!(
            CublasStatus::from_cuda(vgpu_proto::Status::BLAS_INVALID_VALUE.0),
            CublasStatus::INVALID_VALUE
        );
        assert_eq!(CublasStatus::from_cuda(700), CublasStatus::EXECUTION_FAILED);
        assert_eq!(CublasStatus::from_cuda(2), CublasStatus::ALLOC_FAILED);
        // Every runtime error the driver's results map to has a name.
        for s in [
            0, 1, 2, 3, 46, 98, 100, 101, 200, 209, 400, 500, 600, 700, 705, 719, 801, 900, 901,
            903, 908, 909, 910,
        ] {
            assert!(CudartStatus(s).name().is_some(), "{s}");
        }
        for s in NvmlReturn::ALL {
            let n = s.name().unwrap().to_str().unwrap();
            assert!(n.starts_with("NVML_"), "{n}");
        }
        assert_eq!(
            NvmlReturn(12345).text_ptr(),
            c"Unknown Error".as_ptr(),
            "unknown values get NVML's text"
        );
    }
}
