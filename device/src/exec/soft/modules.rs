//! Modules and functions of a soft context: loading images with `vgpu-fatbin`, globals in
//! device memory, function attributes, and launches through the CPU reference kernels.

use super::kernels::{self, Kernel};
use super::streams::Shared;
use std::collections::HashMap;
use std::sync::Arc;
use vgpu_fatbin::{ImageError, ParamLayout};
use vgpu_proto::info::{func_flags, FuncRecord, FunctionEntry, ParamInfo};
use vgpu_proto::Status;

/// `CUfunction_attribute` values.
pub mod func_attr {
    /// Most threads per block.
    pub const MAX_THREADS_PER_BLOCK: u32 = 0;
    /// Static shared memory.
    pub const SHARED_SIZE_BYTES: u32 = 1;
    /// Constant memory.
    pub const CONST_SIZE_BYTES: u32 = 2;
    /// Local memory per thread.
    pub const LOCAL_SIZE_BYTES: u32 = 3;
    /// Registers per thread.
    pub const NUM_REGS: u32 = 4;
    /// PTX version.
    pub const PTX_VERSION: u32 = 5;
    /// Binary version.
    pub const BINARY_VERSION: u32 = 6;
    /// Cache mode.
    pub const CACHE_MODE_CA: u32 = 7;
    /// Dynamic shared-memory limit.
    pub const MAX_DYNAMIC_SHARED_SIZE_BYTES: u32 = 8;
    /// Preferred shared-memory carveout.
    pub const PREFERRED_SHARED_MEMORY_CARVEOUT: u32 = 9;
}

/// Default dynamic shared memory a kernel may use without opting in.
const DEFAULT_DYN_SHARED: u32 = 48 * 1024;
/// Most shared memory per block with opt-in (an H100's 227 KiB).
pub const OPTIN_SHARED: u32 = 227 * 1024;

/// A loaded function.
pub struct Function {
    /// Mangled name.
    pub name: String,
    /// Owning module.
    pub module: u64,
    layout: Vec<ParamLayout>,
    param_bytes: u32,
    layout_known: bool,
    max_threads: u32,
    shared_static: u32,
    const_bytes: u32,
    local_bytes: u32,
    regs: u32,
    arch: u32,
    max_dyn_shared: std::sync::atomic::AtomicU32,
    carveout: std::sync::atomic::AtomicI32,
    kernel: Option<Kernel>,
    globals: Arc<HashMap<String, (u64, u64)>>,
}

/// A loaded module.
pub struct Module {
    functions: Vec<u64>,
    globals: Arc<HashMap<String, (u64, u64)>>,
}

/// The modules and functions of a context.
#[derive(Default)]
pub struct Modules {
    modules: HashMap<u64, Module>,
    functions: HashMap<u64, Arc<Function>>,
}

impl Modules {
    /// (modules, functions).
    pub fn counts(&self) -> (u32, u32) {
        (self.modules.len() as u32, self.functions.len() as u32)
    }

    /// Forgets everything (the memory of globals is freed with the context's memory).
    pub fn clear(&mut self) {
        self.modules.clear();
        self.functions.clear();
    }

    /// A function.
    pub fn function(&self, f: u64) -> Option<Arc<Function>> {
        self.functions.get(&f).cloned()
    }

    /// Looks up a global of a module.
    pub fn global(&self, module: u64, name: &str) -> Result<(u64, u64), Status> {
        let m = self.modules.get(&module).ok_or(Status::INVALID_HANDLE)?;
        m.globals.get(name).copied().ok_or(Status::NOT_FOUND)
    }

    /// True when the module exists.
    pub fn has_module(&self, module: u64) -> bool {
        self.modules.contains_key(&module)
    }
}

fn image_status(e: &ImageError) -> Status {
    match e {
        ImageError::NoBinaryForArch { .. } => Status::NO_BINARY_FOR_GPU,
        _ => Status::INVALID_IMAGE,
    }
}

/// Parses `image` for compute capability `sm`, places its globals in device memory and
/// registers its functions. `next` hands out handles (module first). Returns the module
/// handle and the function table.
pub(super) fn load(
    sh: &Shared,
    image: &[u8],
    sm: u32,
    next: &mut dyn FnMut(bool) -> u64,
    room: u64,
) -> Result<(u64, Vec<FunctionEntry>), Status> {
    let img = vgpu_fatbin::parse_image(image, sm).map_err(|e| {
        log::warn!("module image refused: {e}");
        image_status(&e)
    })?;
    let need = 1 + img.kernels.len() as u64 + img.globals.len() as u64;
    if need > room {
        log::warn!("module with {need} objects exceeds the PD's object limit");
        return Err(Status::OUT_OF_MEMORY);
    }
    let mut globals = HashMap::new();
    let mut placed = Vec::new();
    for g in &img.globals {
        let alloc = sh.memory().alloc(g.size.max(1));
        let addr = match alloc {
            Ok(a) => a,
            Err(s) => {
                let mut mem = sh.memory();
                for a in placed {
                    let _ = mem.free(a);
                }
                return Err(s);
            }
        };
        placed.push(addr);
        if !g.init.is_empty() {
            let mut mem = sh.memory();
            if let Ok(dst) = mem.slice_mut(addr, g.init.len() as u64) {
                dst.copy_from_slice(&g.init);
            }
        }
        globals.insert(g.name.clone(), (addr, g.size));
    }
    let globals = Arc::new(globals);
    let module = next(true);
    let arch = img.arch.unwrap_or(sm);
    let mut entries = Vec::new();
    let mut mods = sh.modules();
    let mut handles = Vec::new();
    for k in &img.kernels {
        let h = next(false);
        let kernel = kernels::lookup(&k.name);
        let max_dyn = DEFAULT_DYN_SHARED.saturating_sub(k.shared_size_bytes);
        let f = Function {
            name: k.name.clone(),
            module,
            layout: k.params.clone(),
            param_bytes: k.param_bytes,
            layout_known: k.layout_known,
            max_threads: k.max_threads_per_block,
            shared_static: k.shared_size_bytes,
            const_bytes: k.const_size_bytes,
            local_bytes: k.local_size_bytes,
            regs: k.num_regs,
            arch,
            max_dyn_shared: max_dyn.into(),
            carveout: (-1).into(),
            kernel,
            globals: globals.clone(),
        };
        let mut r: FuncRecord = bytemuck::Zeroable::zeroed();
        r.handle = h;
        r.param_bytes = f.param_bytes;
        r.flags = if f.layout_known {
            func_flags::LAYOUT_KNOWN
        } else {
            0
        };
        r.max_threads_per_block = f.max_threads as i32;
        r.shared_size_bytes = f.shared_static as i32;
        r.const_size_bytes = f.const_bytes as i32;
        r.local_size_bytes = f.local_bytes as i32;
        r.num_regs = f.regs as i32;
        r.ptx_version = arch as i32;
        r.binary_version = arch as i32;
        r.max_dynamic_shared_size_bytes = max_dyn as i32;
        let params = if f.layout_known {
            f.layout
                .iter()
                .map(|p| ParamInfo {
                    offset: p.offset,
                    size: p.size,
                })
                .collect()
        } else {
            Vec::new()
        };
        entries.push(FunctionEntry {
            record: r,
            name: f.name.clone(),
            params,
        });
        mods.functions.insert(h, Arc::new(f));
        handles.push(h);
    }
    mods.modules.insert(
        module,
        Module {
            functions: handles,
            globals,
        },
    );
    log::info!(
        "module {module:#x} loaded for sm_{arch}: {} kernels, {} globals",
        img.kernels.len(),
        img.globals.len()
    );
    Ok((module, entries))
}

/// Removes a module, its functions and its globals.
pub(super) fn unload(sh: &Shared, module: u64) -> Result<(), Status> {
    let m = sh
        .modules()
        .modules
        .remove(&module)
        .ok_or(Status::INVALID_HANDLE)?;
    {
        let mut mods = sh.modules();
        for f in &m.functions {
            mods.functions.remove(f);
        }
    }
    let mut mem = sh.memory();
    for (addr, _) in m.globals.values() {
        let _ = mem.free(*addr);
    }
    Ok(())
}

/// FUNC_GET_ATTRIBUTE.
pub fn get_attr(f: &Function, attr: u32) -> Result<i32, Status> {
    use func_attr::*;
    use std::sync::atomic::Ordering::Relaxed;
    Ok(match attr {
        MAX_THREADS_PER_BLOCK => f.max_threads as i32,
        SHARED_SIZE_BYTES => f.shared_static as i32,
        CONST_SIZE_BYTES => f.const_bytes as i32,
        LOCAL_SIZE_BYTES => f.local_bytes as i32,
        NUM_REGS => f.regs as i32,
        PTX_VERSION | BINARY_VERSION => f.arch as i32,
        CACHE_MODE_CA => 0,
        MAX_DYNAMIC_SHARED_SIZE_BYTES => f.max_dyn_shared.load(Relaxed) as i32,
        PREFERRED_SHARED_MEMORY_CARVEOUT => f.carveout.load(Relaxed),
        _ => return Err(Status::INVALID_VALUE),
    })
}

/// FUNC_SET_ATTRIBUTE.
pub fn set_attr(f: &Function, attr: u32, value: i32) -> Result<(), Status> {
    use std::sync::atomic::Ordering::Relaxed;
    match attr {
        func_attr::MAX_DYNAMIC_SHARED_SIZE_BYTES => {
            let max = OPTIN_SHARED.saturating_sub(f.shared_static);
            let v = u32::try_from(value).map_err(|_| Status::INVALID_VALUE)?;
            if v > max {
                return Err(Status::INVALID_VALUE);
            }
            f.max_dyn_shared.store(v, Relaxed);
        }
        func_attr::PREFERRED_SHARED_MEMORY_CARVEOUT if (-1..=100).contains(&value) => {
            f.carveout.store(value, Relaxed)
        }
        _ => return Err(Status::INVALID_VALUE),
    }
    Ok(())
}

/// Checks a launch before it is queued (CUDA reports these at the launch call).
pub fn check_launch(
    f: &Function,
    block: [u32; 3],
    shared_mem: u32,
    params: &[u8],
    pd: u32,
) -> Result<(), Status> {
    if !f.layout_known {
        log::warn!(
            "PD {pd}: {} has no known parameter layout and cannot be launched",
            f.name
        );
        return Err(Status::INVALID_VALUE);
    }
    if params.len() != f.param_bytes as usize {
        log::warn!(
            "PD {pd}: {} takes {} parameter bytes, launch gave {}",
            f.name,
            f.param_bytes,
            params.len()
        );
        return Err(Status::INVALID_VALUE);
    }
    let threads: u64 = block.iter().map(|&v| u64::from(v)).product();
    if threads > u64::from(f.max_threads) {
        return Err(Status::INVALID_VALUE);
    }
    if shared_mem > f.max_dyn_shared.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Status::INVALID_VALUE);
    }
    if f.kernel.is_none() {
        log::warn!(
            "PD {pd}: kernel {} has no CPU reference implementation; the soft executor runs only its registered kernels",
            f.name
        );
        return Err(Status::NOT_SUPPORTED);
    }
    Ok(())
}

/// Runs a launch on the CPU.
pub(super) fn launch(
    sh: &Shared,
    func: u64,
    grid: [u32; 3],
    block: [u32; 3],
    params: &[u8],
) -> Result<(), Status> {
    let f = sh.modules().function(func).ok_or(Status::INVALID_HANDLE)?;
    let kernel = f.kernel.ok_or(Status::NOT_SUPPORTED)?;
    let mut mem = sh.memory();
    let mut l = kernels::Launch {
        grid,
        block,
        params,
        layout: &f.layout,
        mem: &mut mem,
        globals: &f.globals,
    };
    kernel(&mut l)
}
