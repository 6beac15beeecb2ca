//! # vgpu-shim-abi: the C boundary of the drop-in libraries
//!
//! Every drop-in library (`libcublas.so.12`, `libcublasLt.so.12`, …) declares its exports
//! in one table with [`exports!`]: per function its name, C parameters, and whether it is
//! implemented (and by which Rust function) or not supported. From that one declaration
//! the macro emits the `#[no_mangle] unsafe extern "C"` function and the [`Export`] list
//! from which the exports test checks the linked library and writes `shim/COVERAGE.md`.
//!
//! * [`ptr`]: caller pointers as typed parameters ([`ptr::Out`], [`ptr::In`],
//!   [`ptr::CStrIn`], [`ptr::DevPtr`]). They can only be made by a C caller, so the bodies
//!   behind the exports are safe Rust; every `unsafe` of the boundary is in that module.
//! * [`status`]: the status tables (names and strings) of the libraries.
//! * [`table`]: the private export table `libcuda.so.1` serves the other libraries
//!   through `cuGetExportTable`, so that they reach the device over the process's one
//!   connection; [`libcuda::open`] opens `libcuda.so.1` and asks it for the table.
//! * [`registry`]: the objects behind opaque handles; [`occupancy`]: CUDA's occupancy
//!   calculation.
//! * [`logging`]: each shared object has its own logger; [`logging::init`] starts it.
//! * [`version`]: the versions the libraries advertise.

pub mod libcuda;
pub mod logging;
pub mod occupancy;
pub mod ptr;
pub mod registry;
pub mod status;
pub mod table;
pub mod version;

/// Whether an exported function does its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Implemented.
    Implemented,
    /// Returns the library's NOT_SUPPORTED status and logs its name once.
    NotSupported,
}

/// One exported function of a library.
#[derive(Clone, Copy, Debug)]
pub struct Export {
    /// The symbol.
    pub name: &'static str,
    /// Its state.
    pub state: State,
}

/// A library's status type: what its exports return.
pub trait LibStatus: Copy {
    /// Success.
    const SUCCESS: Self;
    /// What a not-supported function returns.
    const NOT_SUPPORTED: Self;
}

/// The status of a body's result.
pub fn status_of<S: LibStatus>(r: Result<(), S>) -> S {
    match r {
        Ok(()) => S::SUCCESS,
        Err(s) => s,
    }
}

/// Logs once (per call site's `Once`) that `name` of `library` is not supported.
pub fn not_supported(once: &std::sync::Once, library: &str, name: &str) {
    once.call_once(|| {
        logging::init();
        log::warn!("vgpu: {library}: {name} is not supported");
    });
}

/// Declares a library's exports, one line each:
///
/// ```text
/// exports! {
///     library "libcublas.so.12", status CublasStatus;
///     /// Doc of the C function.
///     implemented fn cublasCreate_v2(handle: Out<HandleId>) => handle::create(handle);
///     plain fn cublasGetStatusString(s: u32) -> *const c_char => CublasStatus(s).text_ptr();
///     not_supported fn cublasZgemm_v2;
/// }
/// ```
///
/// * `implemented`: the body, an expression over the parameters of type
///   `Result<(), Status>`, runs; its error, or SUCCESS, is returned.
/// * `plain`: the body is of the C function's own return type (no status).
/// * `not_supported`: returns the status type's NOT_SUPPORTED and logs its name once. Its
///   C parameters are not declared: the C ABI lets a callee ignore its arguments (the
///   caller owns the argument area).
///
/// `on_error HOOK` after the status type names a function that every error returned
/// (implemented or not supported) is passed to first: the runtime's last error.
///
/// Parameters must be plain values or the typed pointers of [`ptr`]; the emitted function
/// is `unsafe extern "C"` with the C API's contract as its safety section. The macro also
/// emits `pub const EXPORTS: &[Export]`.
#[macro_export]
macro_rules! exports {
    (library $lib:literal, status $status:ty, on_error $hook:path; $($rest:tt)*) => {
        $crate::exports!(@list $lib, $status, [$hook]; $($rest)*);
    };
    (library $lib:literal, status $status:ty; $($rest:tt)*) => {
        $crate::exports!(@list $lib, $status, []; $($rest)*);
    };
    (
        @list $lib:literal, $status:ty, $hook:tt;
        $( $(#[$m:meta])* $kind:ident fn $name:ident $( ( $($arg:ident : $ty:ty),* $(,)? ) )? $(-> $ret:ty)? $(=> $body:expr)? ; )*
    ) => {
        $( $crate::exports!(@one $lib, $status, $hook; $(#[$m])* $kind $name $( ( $($arg : $ty),* ) )? $(-> $ret)? $(=> $body)?); )*

        /// Every exported function of this library and its state.
        pub const EXPORTS: &[$crate::Export] = &[
            $( $crate::Export { name: stringify!($name), state: $crate::exports!(@state $kind) }, )*
        ];
    };
    (@state implemented) => { $crate::State::Implemented };
    (@state plain) => { $crate::State::Implemented };
    (@state not_supported) => { $crate::State::NotSupported };
    (@one $lib:literal, $status:ty, [$($hook:path)?]; $(#[$m:meta])* implemented $name:ident ( $($arg:ident : $ty:ty),* ) => $body:expr) => {
        $(#[$m])*
        ///
        /// # Safety
        /// The C API's contract: pointer arguments are valid for what the function reads and
        /// writes through them, or null where the API allows.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $status {
            let r = (move || -> Result<(), $status> { $body })();
            $( if let Err(e) = r { $hook(e); } )?
            $crate::status_of(r)
        }
    };
    (@one $lib:literal, $status:ty, [$($hook:path)?]; $(#[$m:meta])* plain $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty => $body:expr) => {
        $(#[$m])*
        ///
        /// # Safety
        /// The C API's contract: pointer arguments are valid for what the function reads and
        /// writes through them, or null where the API allows.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            $body
        }
    };
    (@one $lib:literal, $status:ty, [$($hook:path)?]; $(#[$m:meta])* not_supported $name:ident) => {
        $(#[$m])*
        /// Not supported: returns NOT_SUPPORTED and logs its name once.
        #[no_mangle]
        pub extern "C" fn $name() -> $status {
            static ONCE: ::std::sync::Once = ::std::sync::Once::new();
            $crate::not_supported(&ONCE, $lib, stringify!($name));
            $( $hook(<$status as $crate::LibStatus>::NOT_SUPPORTED); )?
            <$status as $crate::LibStatus>::NOT_SUPPORTED
        }
    };
}
