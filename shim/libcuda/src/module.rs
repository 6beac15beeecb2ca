//! Modules and launches of the driver API. A module is loaded on the device by content
//! hash (MODULE_LOAD with BY_HASH); only when the device does not have it is the image sent.
//! The function table that comes back gives every kernel's handle and parameter layout, so
//! a launch packs its parameter buffer locally and is posted with no round trip.

use crate::mem::{self, conn, CuResult};
use sha2::{Digest, Sha256};
// Handles are the device's integers: the Fx hash is enough for them and cheap per launch.
use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use vgpu_proto::cmd::*;
use vgpu_proto::info::decode_module_info;
use vgpu_proto::payload::{LaunchAttr, ModuleImageHeader};
use vgpu_proto::{Command, Status};

const INVALID_VALUE: CuResult = 1;
const INVALID_IMAGE: CuResult = 200;
const NOT_FOUND: CuResult = 500;
const NOT_SUPPORTED: CuResult = 801;

/// A kernel of a loaded module.
pub struct Function {
    /// Device handle.
    pub handle: u64,
    /// Parameter (offset, size) by ordinal.
    pub params: Vec<(u32, u32)>,
    /// Size of the parameter buffer.
    pub param_bytes: u32,
    /// False for kernels without a known layout.
    pub layout_known: bool,
}

#[derive(Default)]
struct Tables {
    /// Module handle → kernel name → function handle.
    modules: HashMap<u64, HashMap<String, u64>>,
    /// Function handle → function.
    functions: HashMap<u64, Arc<Function>>,
}

static TABLES: Mutex<Option<Tables>> = Mutex::new(None);

fn tables() -> MutexGuard<'static, Option<Tables>> {
    TABLES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Length of a module image that starts at `p`: a fatbin container (its header says), an
/// ELF cubin (its section headers end it) or NUL-terminated PTX.
///
/// # Safety
/// `p` must point to a readable module image (the CUDA contract of `cuModuleLoadData`).
pub unsafe fn image_len(p: *const u8) -> Option<usize> {
    // SAFETY: every image kind starts with at least 16 readable bytes (a fatbin header, an
    // ELF identification, or PTX text of which only a NUL-terminated prefix is read below).
    let head = unsafe { std::slice::from_raw_parts(p, 4) };
    if head == 0xBA55_ED50u32.to_le_bytes() {
        // SAFETY: a fatbin container header is 16 bytes.
        let h = unsafe { std::slice::from_raw_parts(p, 16) };
        let header = u16::from_le_bytes([h[6], h[7]]) as usize;
        let size = u64::from_le_bytes(h[8..16].try_into().ok()?) as usize;
        return header.checked_add(size);
    }
    if head == *b"\x7fELF" {
        // SAFETY: an ELF64 header is 64 bytes.
        let h = unsafe { std::slice::from_raw_parts(p, 64) };
        let shoff = u64::from_le_bytes(h[0x28..0x30].try_into().ok()?) as usize;
        let shentsize = u16::from_le_bytes([h[0x3A], h[0x3B]]) as usize;
        let shnum = u16::from_le_bytes([h[0x3C], h[0x3D]]) as usize;
        return shoff.checked_add(shentsize.checked_mul(shnum)?);
    }
    // SAFETY: PTX is NUL-terminated text.
    Some(
        unsafe { std::ffi::CStr::from_ptr(p.cast()) }
            .to_bytes_with_nul()
            .len(),
    )
}

/// The function behind a handle, if it is loaded.
pub fn function_info(func: u64) -> Option<Arc<Function>> {
    tables()
        .as_ref()
        .and_then(|t| t.functions.get(&func).cloned())
}

/// Loads `image`; returns the module handle.
pub fn load(image: &[u8]) -> Result<u64, CuResult> {
    let hash: [u8; 32] = Sha256::digest(image).into();
    let (c, q) = conn()?;
    let _staging = mem::staging_lock();
    let mut conn = c.lock().unwrap_or_else(|p| p.into_inner());
    let header_len = std::mem::size_of::<ModuleImageHeader>();
    // Payload (header and image) and the function table share one window.
    let need = header_len + image.len() + (1 << 20);
    let first = conn.first_window();
    let (window, temp) = match conn.window(first) {
        Some(w) if w.len() >= need => (first, false),
        _ => (
            conn.alloc_window(need as u64)
                .map_err(|e| e.status().to_cuda())?,
            true,
        ),
    };
    let result = (|| {
        let w = conn.window(window).ok_or(INVALID_VALUE)?;
        let out_offset = (header_len + image.len()).next_multiple_of(256);
        let out = OutRef {
            offset: out_offset as u64,
            window,
            len: (w.len() - out_offset) as u32,
        };
        let send = |by_hash: bool| -> Result<vgpu_proto::Cqe, CuResult> {
            let h = ModuleImageHeader {
                sha256: hash,
                image_len: if by_hash { 0 } else { image.len() as u64 },
                rsv: 0,
            };
            w.write(0, bytemuck::bytes_of(&h))
                .map_err(|_| INVALID_VALUE)?;
            if !by_hash {
                w.write(header_len, image).map_err(|_| INVALID_VALUE)?;
            }
            let len = if by_hash {
                header_len
            } else {
                header_len + image.len()
            };
            let args = ModuleLoadArgs {
                out,
                flags: u32::from(by_hash),
                ..bytemuck::Zeroable::zeroed()
            };
            let req = Request {
                cid: 0,
                notify: false,
                stream: 0,
                payload: Payload::Window {
                    window,
                    offset: 0,
                    len: len as u32,
                },
                command: Command::MODULE_LOAD(args),
            };
            q.call(req, &[]).map_err(|e| e.status().to_cuda())
        };
        let mut c = send(true)?;
        if c.status() == Status::NOT_FOUND {
            c = send(false)?;
        }
        if !c.status().is_ok() {
            log::warn!("vgpu: module load failed: {}", c.status());
            return Err(c.status().to_cuda());
        }
        let mut table = vec![0u8; c.result1 as usize];
        w.read(out_offset, &mut table).map_err(|_| INVALID_VALUE)?;
        let (info, funcs) = decode_module_info(&table).map_err(|_| INVALID_IMAGE)?;
        let mut t = tables();
        let t = t.get_or_insert_with(Tables::default);
        let mut names = HashMap::default();
        for f in funcs {
            let func = Function {
                handle: f.record.handle,
                params: f.params.iter().map(|p| (p.offset, p.size)).collect(),
                param_bytes: f.record.param_bytes,
                layout_known: f.record.flags & vgpu_proto::info::func_flags::LAYOUT_KNOWN != 0,
            };
            names.insert(f.name, f.record.handle);
            t.functions.insert(f.record.handle, Arc::new(func));
        }
        t.modules.insert(info.module, names);
        Ok(info.module)
    })();
    if temp {
        let _ = conn.free_window(window);
    }
    result
}

/// The function `name` of `module`.
pub fn function(module: u64, name: &str) -> Result<u64, CuResult> {
    let t = tables();
    let m = t
        .as_ref()
        .and_then(|t| t.modules.get(&module))
        .ok_or(400u32)?;
    m.get(name).copied().ok_or(NOT_FOUND)
}

/// The device address and size of global `name` of `module`.
pub fn global(module: u64, name: &str) -> Result<(u64, u64), CuResult> {
    if tables()
        .as_ref()
        .is_none_or(|t| !t.modules.contains_key(&module))
    {
        return Err(400);
    }
    if name.is_empty() || name.len() > vgpu_proto::payload::MAX_SYMBOL_LEN {
        return Err(NOT_FOUND);
    }
    let args = HandleArgs {
        handle: module,
        ..bytemuck::Zeroable::zeroed()
    };
    let (_, q) = conn()?;
    let r = Request {
        cid: 0,
        notify: false,
        stream: 0,
        payload: Payload::Inline {
            len: name.len() as u32,
        },
        command: Command::MODULE_GET_GLOBAL(args),
    };
    let c = q
        .call(r, name.as_bytes())
        .map_err(|e| e.status().to_cuda())?;
    match c.status() {
        Status::SUCCESS => Ok((c.result0, c.result1)),
        s => Err(s.to_cuda()),
    }
}

/// Forgets every module and function (after a context reset destroyed them).
pub fn forget_all() {
    *tables() = None;
}

/// Unloads a module.
pub fn unload(module: u64) -> Result<(), CuResult> {
    mem::call(
        Command::MODULE_UNLOAD(HandleArgs {
            handle: module,
            ..bytemuck::Zeroable::zeroed()
        }),
        0,
    )?;
    let mut t = tables();
    if let Some(t) = t.as_mut() {
        if let Some(names) = t.modules.remove(&module) {
            for h in names.values() {
                t.functions.remove(h);
            }
        }
    }
    Ok(())
}

/// Packs the parameters and posts the launch (no round trip).
///
/// # Safety
/// `params` must hold one valid pointer per kernel parameter, each to a value of that
/// parameter's size (the CUDA contract of `cuLaunchKernel`).
pub unsafe fn launch(
    func: u64,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    stream: u64,
    params: *const *const u8,
    attrs: &[LaunchAttr],
) -> Result<(), CuResult> {
    let f = tables()
        .as_ref()
        .and_then(|t| t.functions.get(&func).cloned())
        .ok_or(400u32)?;
    if !f.layout_known {
        return Err(NOT_SUPPORTED);
    }
    if !f.params.is_empty() && params.is_null() {
        return Err(INVALID_VALUE);
    }
    let dims16 = |v: u32| u16::try_from(v).map_err(|_| INVALID_VALUE);
    let args = LaunchArgs {
        func,
        grid_x: grid[0],
        grid_y: dims16(grid[1])?,
        grid_z: dims16(grid[2])?,
        block_x: dims16(block[0])?,
        block_y: dims16(block[1])?,
        block_z: dims16(block[2])?,
        attr_count: u16::try_from(attrs.len()).map_err(|_| INVALID_VALUE)?,
        shared_mem: shared,
        rsv0: 0,
    };
    PAYLOAD.with(|buf| {
        let mut payload = buf.borrow_mut();
        // The payload: the launch attributes, then the parameter buffer.
        let attr_bytes = std::mem::size_of_val(attrs);
        payload.clear();
        payload.resize(attr_bytes + f.param_bytes as usize, 0);
        payload[..attr_bytes].copy_from_slice(bytemuck::cast_slice(attrs));
        let blob = &mut payload[attr_bytes..];
        for (i, &(off, size)) in f.params.iter().enumerate() {
            // SAFETY: per this function's contract, params[i] points to `size` readable
            // bytes.
            let src = unsafe { std::slice::from_raw_parts(*params.add(i), size as usize) };
            let dst = blob
                .get_mut(off as usize..(off + size) as usize)
                .ok_or(INVALID_VALUE)?;
            dst.copy_from_slice(src);
        }
        mem::post_inline(Command::LAUNCH(args), stream, &payload)
    })
}

thread_local! {
    /// The launch payload buffer, reused by each launch of the thread.
    static PAYLOAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
