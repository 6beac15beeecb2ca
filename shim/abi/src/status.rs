//! The status tables of the libraries: each status's value, C name and message, from which
//! the status type, its constants and the name/string functions (`cublasGetStatusName`,
//! `cublasGetStatusString`, …) are generated. The device's own status codes are
//! `vgpu_proto::Status`; its BLAS range is `0x2000 +` a [`CublasStatus`].

use crate::ptr::Null;
use crate::LibStatus;
use std::ffi::{c_char, CStr};

macro_rules! status_table {
    (
        $(#[$m:meta])* $ty:ident, unknown $unknown:literal {
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
    };
}

status_table! {
    /// `cublasStatus_t`.
    CublasStatus, unknown c"CUBLAS_STATUS_UNKNOWN" {
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

impl LibStatus for CublasStatus {
    const SUCCESS: Self = CublasStatus::SUCCESS;
    const NOT_SUPPORTED: Self = CublasStatus::NOT_SUPPORTED;
}

impl From<Null> for CublasStatus {
    fn from(_: Null) -> Self {
        CublasStatus::INVALID_VALUE
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
    }
}
