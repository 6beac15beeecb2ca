//! Caller pointers as typed parameters of the exported functions.
//!
//! The exports take these types where the C API takes pointers; each is
//! `#[repr(transparent)]` over the pointer, so the C ABI is unchanged. Their fields are
//! private and they have no constructors: a value can only come from a C caller of an
//! `unsafe extern "C"` export, whose contract (the C API's) is that a non-null pointer is
//! valid for what the function reads or writes. That contract is what the `unsafe` blocks
//! below rely on, and what lets the bodies of the exports be safe Rust. Rust code that
//! calls an export through its C signature (one library calling another's table) makes
//! them with the `unsafe` `from_raw`, taking on the same contract.

use std::ffi::{c_char, c_void, CStr};

/// A null pointer where the function needs one that is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Null;

/// An out-pointer: the function writes one `T` through it.
#[repr(transparent)]
#[derive(Debug)]
pub struct Out<T>(*mut T);

impl<T> Out<T> {
    /// An out-pointer made by Rust code that calls an export through its C signature.
    ///
    /// # Safety
    /// `p` is null or valid for a write of `T` for as long as the callee uses it.
    pub unsafe fn from_raw(p: *mut T) -> Out<T> {
        Out(p)
    }

    /// A null out-pointer, for an optional one a caller did not pass.
    pub fn null() -> Out<T> {
        Out(std::ptr::null_mut())
    }

    /// True for a null pointer.
    pub fn is_null(&self) -> bool {
        self.0.is_null()
    }

    /// Writes `v` (unaligned); [`Null`] for a null pointer.
    pub fn write(self, v: T) -> Result<(), Null> {
        if self.0.is_null() {
            return Err(Null);
        }
        // SAFETY: made only by a C caller whose contract makes a non-null out-pointer valid
        // for a write of T (module documentation); null was refused above.
        unsafe { self.0.write_unaligned(v) };
        Ok(())
    }

    /// The same pointer, as the C API's documented type for it.
    pub fn cast<U>(self) -> Out<U> {
        Out(self.0.cast())
    }

    /// The raw pointer, to hand on to a function that takes one (using it is `unsafe`).
    pub fn as_ptr(&self) -> *mut T {
        self.0
    }
}

/// An in-pointer: the function reads one `T` through it.
#[repr(transparent)]
#[derive(Debug)]
pub struct In<T>(*const T);

impl<T> Clone for In<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for In<T> {}

impl<T: Copy> In<T> {
    /// Reads the value (unaligned); [`Null`] for a null pointer.
    pub fn read(&self) -> Result<T, Null> {
        if self.0.is_null() {
            return Err(Null);
        }
        // SAFETY: made only by a C caller whose contract makes a non-null in-pointer valid
        // for a read of T (module documentation); null was refused above.
        Ok(unsafe { self.0.read_unaligned() })
    }
}

impl<T> In<T> {
    /// An in-pointer made by Rust code that calls an export through its C signature.
    ///
    /// # Safety
    /// `p` is null or valid for a read of `T` for as long as the callee uses it.
    pub unsafe fn from_raw(p: *const T) -> In<T> {
        In(p)
    }

    /// True for a null pointer.
    pub fn is_null(&self) -> bool {
        self.0.is_null()
    }

    /// The same pointer as the type the C API documents for it (for example a `void *`
    /// scalar whose type another parameter names).
    pub fn cast<U>(self) -> In<U> {
        In(self.0.cast())
    }

    /// The address, for messages.
    pub fn addr(&self) -> usize {
        self.0 as usize
    }

    /// The raw pointer, to hand on to a function that takes one (using it is `unsafe`).
    pub fn as_ptr(&self) -> *const T {
        self.0
    }
}

impl In<c_void> {
    /// Reads `n` bytes (n ≤ 16) into a zero-padded buffer; [`Null`] for a null pointer.
    pub fn read_bytes(&self, n: usize) -> Result<[u8; 16], Null> {
        let mut out = [0u8; 16];
        let n = n.min(16);
        if self.0.is_null() {
            return Err(Null);
        }
        // SAFETY: a C caller's in-pointer to a value of `n` bytes (the API names its type);
        // null was refused above; the destination holds 16 ≥ n bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.0.cast::<u8>(), out.as_mut_ptr(), n) };
        Ok(out)
    }
}

/// An in-out pointer: the function reads one `T` (for example a struct's version field, or
/// an array's capacity) and writes one back.
#[repr(transparent)]
#[derive(Debug)]
pub struct InOut<T>(*mut T);

impl<T: Copy> InOut<T> {
    /// Reads the value (unaligned); [`Null`] for a null pointer.
    pub fn read(&self) -> Result<T, Null> {
        if self.0.is_null() {
            return Err(Null);
        }
        // SAFETY: made only by a C caller whose contract makes a non-null in-out pointer
        // valid for a read and a write of T (module documentation); null refused above.
        Ok(unsafe { self.0.read_unaligned() })
    }

    /// Writes `v` (unaligned); [`Null`] for a null pointer.
    pub fn write(&self, v: T) -> Result<(), Null> {
        if self.0.is_null() {
            return Err(Null);
        }
        // SAFETY: as for `read`.
        unsafe { self.0.write_unaligned(v) };
        Ok(())
    }
}

/// What a write into a caller's buffer can fail with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferError {
    /// The pointer is null.
    Null,
    /// The buffer holds fewer elements (or bytes) than the value needs.
    TooSmall,
}

/// A caller's array of `T`, whose capacity another parameter gives.
#[repr(transparent)]
#[derive(Debug)]
pub struct OutArray<T>(*mut T);

impl<T> OutArray<T> {
    /// Writes `items` at the start of the array of `capacity` elements: TooSmall if they
    /// do not fit, Null if the pointer is null and there is something to write.
    pub fn write_all(
        self,
        capacity: usize,
        items: impl ExactSizeIterator<Item = T>,
    ) -> Result<(), BufferError> {
        if items.len() > capacity {
            return Err(BufferError::TooSmall);
        }
        if items.len() > 0 && self.0.is_null() {
            return Err(BufferError::Null);
        }
        for (i, v) in items.enumerate() {
            // SAFETY: made only by a C caller whose contract makes a non-null array valid
            // for `capacity` elements; i < items.len() <= capacity; null refused above.
            unsafe { self.0.add(i).write_unaligned(v) };
        }
        Ok(())
    }
}

/// A caller's character buffer, whose length another parameter gives.
#[repr(transparent)]
#[derive(Debug)]
pub struct StrOut(*mut c_char);

impl StrOut {
    /// Writes `s` and a NUL into the buffer of `len` bytes; TooSmall (nothing written) if
    /// they do not fit.
    pub fn write(self, len: usize, s: &str) -> Result<(), BufferError> {
        if self.0.is_null() {
            return Err(BufferError::Null);
        }
        if s.len() + 1 > len {
            return Err(BufferError::TooSmall);
        }
        for (i, b) in s.bytes().chain(std::iter::once(0)).enumerate() {
            // SAFETY: made only by a C caller whose contract makes a non-null buffer valid
            // for `len` bytes; i <= s.len() < len; null refused above.
            unsafe { self.0.add(i).write(b as c_char) };
        }
        Ok(())
    }
}

impl StrOut {
    /// Writes as much of `s` as fits before a NUL into the buffer of `len` bytes (CUDA's
    /// way with names); Null for a null pointer or an empty buffer.
    pub fn write_truncated(self, len: usize, s: &str) -> Result<(), BufferError> {
        if self.0.is_null() || len == 0 {
            return Err(BufferError::Null);
        }
        let n = s.len().min(len - 1);
        for (i, b) in s.as_bytes()[..n]
            .iter()
            .copied()
            .chain(std::iter::once(0))
            .enumerate()
        {
            // SAFETY: made only by a C caller whose contract makes a non-null buffer valid
            // for `len` bytes; i <= n < len; null refused above.
            unsafe { self.0.add(i).write(b as c_char) };
        }
        Ok(())
    }
}

/// A NUL-terminated string from the caller.
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct CStrIn(*const c_char);

impl CStrIn {
    /// The string (lossily decoded); [`Null`] for a null pointer.
    pub fn read(&self) -> Result<String, Null> {
        if self.0.is_null() {
            return Err(Null);
        }
        // SAFETY: a C caller's NUL-terminated string (its contract); null refused above.
        Ok(unsafe { CStr::from_ptr(self.0) }
            .to_string_lossy()
            .into_owned())
    }
}

/// A device address passed where the C API takes a pointer (matrices, arrays of matrix
/// pointers in device memory). Never dereferenced on the host.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DevPtr(pub usize);

impl DevPtr {
    /// The device address.
    pub fn addr(self) -> u64 {
        self.0 as u64
    }
}

/// A static NUL-terminated string handed to C callers (status names and strings).
pub fn static_str(s: &'static CStr) -> *const c_char {
    s.as_ptr()
}
