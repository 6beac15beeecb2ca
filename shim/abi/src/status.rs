//! The status tables of the libraries: each status's value, C name and message, from which
//! the status type, its constants and the name/string functions (`cublasGetStatusName`,
//! `cublasGetStatusString`, …) are generated. The device's own status codes are
//! `vgpu_proto::Status`; its BLAS range is `0x2000 +` a [`CublasStatus`].

use crate::ptr::{BufferError, Null};
use crate::LibStatus;
use std::ffi::{c_char, CStr};

macro_rules! status_table {
    (
        $(#[$m:meta])* $ty:ident, unknown $unknown:literal, not_supported $ns:ident, bad_pointer $bad:ident {
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
                self.name().unwrap_or($unknown).as_ptr()
            }

            /// The message, or the library's text for unknown values, as a C string.
            pub fn text_ptr(self) -> *const c_char {
                self.text().unwrap_or($unknown).as_ptr()
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
    CublasStatus, unknown c"CUBLAS_STATUS_UNKNOWN", not_supported NOT_SUPPORTED, bad_pointer INVALID_VALUE {
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
    NvmlReturn, unknown c"Unknown Error", not_supported NOT_SUPPORTED, bad_pointer INVALID_ARGUMENT {
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
