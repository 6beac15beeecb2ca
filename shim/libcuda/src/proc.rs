//! `cuGetProcAddress`: the driver entry point a caller asks for by its base name and the
//! CUDA version it was built for. The answer is one of this library's own exports: the
//! newest `_vN` variant (`cuMemAlloc` → `cuMemAlloc_v2`), or the name CUDA 12 headers map
//! the base name to (`cuGraphInstantiate` → `cuGraphInstantiateWithFlags`). Lookups go
//! through `dlsym` on this library's own handle; that is this module's `unsafe`.

use std::ffi::{c_void, CString};
use std::sync::OnceLock;

use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::{CStrIn, Out};
use vgpu_shim_abi::status::CuStatus;

type R = Result<(), CuStatus>;

/// `CUdriverProcAddressQueryResult`.
const SYMBOL_SUCCESS: i32 = 0;
const SYMBOL_NOT_FOUND: i32 = 1;

/// Base names whose CUDA ≥ 12.0 entry point has another name.
const RENAMED_IN_12: &[(&str, &str)] = &[("cuGraphInstantiate", "cuGraphInstantiateWithFlags")];

/// This library's own handle (the object that holds this function).
fn own_handle() -> Option<usize> {
    static HANDLE: OnceLock<Option<usize>> = OnceLock::new();
    *HANDLE.get_or_init(|| {
        // SAFETY: Dl_info is plain pointers and integers; all-zero is valid.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        let here = own_handle as *const c_void;
        // SAFETY: dladdr reads the loader's tables for an address inside this object and
        // fills `info`; the path it returns stays valid while the object is loaded.
        if unsafe { libc::dladdr(here, &mut info) } == 0 || info.dli_fname.is_null() {
            return None;
        }
        // SAFETY: a NUL-terminated path from dladdr; RTLD_NOLOAD only returns the handle
        // of an object that is already loaded (this one), adding a reference to it.
        let h = unsafe { libc::dlopen(info.dli_fname, libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        (!h.is_null()).then_some(h as usize)
    })
}

fn lookup(name: &str) -> Option<*mut c_void> {
    let h = own_handle()?;
    let c = CString::new(name).ok()?;
    // SAFETY: a live handle and a NUL-terminated name.
    let p = unsafe { libc::dlsym(h as *mut c_void, c.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// The export that serves `symbol` for a caller built against `version`.
pub fn resolve(symbol: &str, version: i32) -> Option<*mut c_void> {
    if version >= 12000 {
        if let Some((_, to)) = RENAMED_IN_12.iter().find(|(from, _)| *from == symbol) {
            return lookup(to);
        }
    }
    ["_v3", "_v2", ""]
        .iter()
        .find_map(|suffix| lookup(&format!("{symbol}{suffix}")))
}

fn get(symbol: CStrIn, pfn: Out<*mut c_void>, version: i32, status: Out<i32>) -> R {
    let name = symbol.read()?;
    if pfn.is_null() {
        return Err(CuStatus::INVALID_VALUE);
    }
    let found = resolve(&name, version);
    pfn.write(found.unwrap_or(std::ptr::null_mut()))?;
    if !status.is_null() {
        status.write(if found.is_some() {
            SYMBOL_SUCCESS
        } else {
            SYMBOL_NOT_FOUND
        })?;
    }
    if found.is_none() {
        log::info!("vgpu: cuGetProcAddress({name}): no such entry point");
        return Err(CuStatus::NOT_FOUND);
    }
    Ok(())
}

exports! {
    library "libcuda.so.1", status CuStatus;
    /// `flags` (default, legacy or per-thread default stream) select nothing here: both
    /// default streams are the NULL stream.
    implemented fn cuGetProcAddress_v2(symbol: CStrIn, pfn: Out<*mut c_void>, version: i32, _flags: u64, status: Out<i32>) => get(symbol, pfn, version, status);
    /// The CUDA 11.3 – 11.8 form.
    implemented fn cuGetProcAddress(symbol: CStrIn, pfn: Out<*mut c_void>, version: i32, _flags: u64) => get(symbol, pfn, version, Out::null());
}
