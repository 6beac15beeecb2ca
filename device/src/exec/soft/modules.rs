//! Modules and functions of a soft context: loading images with `vgpu-fatbin`, globals in
//! device memory, function attributes, and launches.
//!
//! A kernel runs from its PTX on the `vgpu-ptx` virtual machine: at load, the PTX a device
//! of this compute capability would JIT (the highest `compute_XX` not above it, per fatbin
//! container) is parsed but for its kernels' bodies, and its variables are checked
//! (`vgpu_ptx::lazy`); each kernel is parsed and checked at its first launch, and runs from
//! its PTX if the checker accepts it. A kernel the checker refuses, or one whose image
//! carries no PTX, runs through its CPU reference implementation if it has one
//! (`kernels.rs`), else its launch fails with NOT_SUPPORTED and a log line that says why.

use super::kernels::{self, Kernel};
use super::SoftDevice;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    /// The kernel's PTX program, or why it cannot run from PTX.
    ptx: Result<Arc<PtxModule>, String>,
    /// Native code for the kernel's PTX, made at its first launch in any context of the
    /// PD's cache domain that loaded the same image ([`CachedProgram::native`]; `None`:
    /// none could be).
    native: Arc<NativeCell>,
    globals: Arc<HashMap<String, (u64, u64)>>,
    /// Host time a block of the kernel took at its last launch from PTX, in nanoseconds
    /// (0: not launched yet): what [`launch_threads`] decides the next launch's threads by.
    block_ns: std::sync::atomic::AtomicU64,
}

/// Below this much host time, measured by the kernel's last launch, a launch runs on the
/// launching thread alone: a helper thread woken for it starts tens of microseconds later
/// (on an idle CPU of a VM, 50–70 µs), and the launch waits for it to start even where the
/// launching thread ran every block by then (ggml's `quantize_q8_1` of a 1,024-value row,
/// 4 blocks: 0.032 ms on one thread, 0.067 ms with a helper).
const ALONE_BELOW_NS: u64 = 100_000;

/// How many host threads a launch of `blocks` blocks of `f` runs on, of `cpus`: one where
/// the kernel's last launch says the blocks take less than [`ALONE_BELOW_NS`] on one
/// thread, else all (and all at its first launch, which also compiles it).
fn launch_threads(f: &Function, blocks: u64, cpus: usize) -> usize {
    let per_block = f.block_ns.load(std::sync::atomic::Ordering::Relaxed);
    if per_block != 0 && per_block.saturating_mul(blocks) < ALONE_BELOW_NS {
        1
    } else {
        cpus
    }
}

/// Native code for one kernel, made at its first launch.
type NativeCell = std::sync::OnceLock<Option<vgpu_ptx_jit::Jit>>;

/// A checked program as the device keeps it, with the native code of its kernels: each
/// kernel is compiled once for the contexts of a cache domain (as a GPU driver keeps its
/// compiled kernels for the processes that load the same code), not once per process, and
/// kept as long as the program is. Within a domain, the runs' call counts that decide
/// when a run's region is compiled are shared too. Another domain compiles its own, so
/// that no tenant can tell from how fast a launch starts which kernels another one ran.
/// The code of at most [`CachedProgram::DOMAINS`] domains is kept, the oldest forgotten
/// first (its contexts keep what they hold), so that a guest naming ever new domains
/// cannot make the host keep ever more code.
pub(super) struct CachedProgram {
    program: Arc<vgpu_ptx::lazy::LazyProgram>,
    native: Mutex<NativeCells>,
}

/// Each kept domain's kernels' native code, and the domains, oldest first.
#[derive(Default)]
struct NativeCells {
    cells: HashMap<(u32, String), Arc<NativeCell>>,
    domains: std::collections::VecDeque<u32>,
}

impl CachedProgram {
    /// Cache domains whose compiled kernels one program keeps.
    const DOMAINS: usize = 16;

    fn new(program: vgpu_ptx::lazy::LazyProgram) -> CachedProgram {
        CachedProgram {
            program: Arc::new(program),
            native: Mutex::default(),
        }
    }

    /// The native code of kernel `name` (one of the program's: the cells of a domain are
    /// at most its kernels) for the contexts of cache domain `domain`.
    fn native(&self, domain: u32, name: &str) -> Arc<NativeCell> {
        let mut n = vgpu_os::lock(&self.native);
        if !n.domains.contains(&domain) {
            if n.domains.len() >= Self::DOMAINS {
                if let Some(old) = n.domains.pop_front() {
                    n.cells.retain(|(d, _), _| *d != old);
                }
            }
            n.domains.push_back(domain);
        }
        n.cells
            .entry((domain, name.to_string()))
            .or_default()
            .clone()
    }
}

/// A PTX module and the device addresses of its variables.
pub struct PtxModule {
    cached: Arc<CachedProgram>,
    /// Device address of each of `cached.program.globals`.
    addrs: Vec<u64>,
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

pub(crate) fn image_status(e: &ImageError) -> Status {
    match e {
        ImageError::NoBinaryForArch { .. } => Status::NO_BINARY_FOR_GPU,
        ImageError::TooLarge(_) => Status::OUT_OF_MEMORY,
        _ => Status::INVALID_IMAGE,
    }
}

/// Parses `image` for compute capability `sm`, places its globals in device memory and
/// registers its functions. `next` hands out handles (module first). Returns the module
/// handle and the function table.
pub(super) fn load(
    sh: &SoftDevice,
    loader: &Loader<'_>,
    image: &[u8],
    sha256: &[u8; 32],
    next: &mut dyn FnMut(bool) -> u64,
    room: u64,
) -> Result<(u64, Vec<FunctionEntry>), Status> {
    let (sm, reference_kernels) = (loader.sm, loader.reference_kernels);
    let img = vgpu_fatbin::parse_image(image, sm).map_err(|e| {
        log::warn!("module image refused: {e}");
        image_status(&e)
    })?;
    let programs = loader.cache.programs(image, sha256, sm);
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
        // A cubin carries initial values; PTX alone carries them in its initializers.
        let init = if g.init.is_empty() {
            programs
                .iter()
                .flat_map(|p| p.program.globals.iter())
                .find(|pg| pg.name == g.name)
                .map_or(&[][..], |pg| &pg.init[..])
        } else {
            &g.init[..]
        };
        if !init.is_empty() {
            let mut mem = sh.memory();
            if let Ok(dst) = mem.slice_mut(addr, init.len().min(g.size as usize) as u64) {
                let n = dst.len();
                dst.copy_from_slice(&init[..n]);
            }
        }
        globals.insert(g.name.clone(), (addr, g.size));
    }
    let globals = Arc::new(globals);
    let ptx = link(&programs, &globals);
    let module = next(true);
    let arch = img.arch.unwrap_or(sm);
    let mut entries = Vec::new();
    let mut mods = sh.modules();
    let mut handles = Vec::new();
    for k in &img.kernels {
        let h = next(false);
        let kernel = if reference_kernels {
            kernels::lookup(&k.name)
        } else {
            None
        };
        let max_dyn = DEFAULT_DYN_SHARED.saturating_sub(k.shared_size_bytes);
        let program = ptx_of(&ptx, &k.name);
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
            native: match &program {
                Ok(m) => m.cached.native(loader.domain, &k.name),
                Err(_) => Arc::default(),
            },
            ptx: program,
            globals: globals.clone(),
            block_ns: 0.into(),
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
pub(super) fn unload(sh: &SoftDevice, module: u64) -> Result<(), Status> {
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
    if let (None, Err(why)) = (&f.kernel, f.ptx_kernel()) {
        log::warn!(
            "PD {pd}: kernel {} cannot run on the soft device: {why}",
            f.name
        );
        return Err(Status::NOT_SUPPORTED);
    }
    Ok(())
}

/// How a context loads modules.
pub struct Loader<'a> {
    /// The device's compute capability as an sm number.
    pub sm: u32,
    /// Whether kernels without PTX may run through their CPU reference.
    pub reference_kernels: bool,
    /// The device's checked programs.
    pub cache: &'a ProgramCache,
    /// The context's module-cache domain: whose compiled kernels it shares.
    pub domain: u32,
}

/// Checked PTX programs by image (its SHA-256 and the compute capability), shared by the
/// contexts of a device so that a module is parsed and checked once, not once per process
/// that loads it. Holds the programs of at most [`ProgramCache::CAPACITY`] images and
/// [`ProgramCache::MAX_IMAGE_BYTES`] of their images, forgetting the oldest.
#[derive(Default)]
pub struct ProgramCache {
    entries: std::sync::Mutex<CacheEntries>,
}

#[derive(Default)]
struct CacheEntries {
    programs: HashMap<ImageKey, Programs>,
    /// Oldest first, with each image's size.
    order: std::collections::VecDeque<(ImageKey, u64)>,
    bytes: u64,
}

/// An image's SHA-256 and the compute capability it was checked for.
type ImageKey = ([u8; 32], u32);
/// The programs of one image.
type Programs = Arc<[Arc<CachedProgram>]>;

impl ProgramCache {
    /// Images kept.
    pub const CAPACITY: usize = 512;
    /// Bytes of images whose programs are kept (the programs take a few times as much).
    pub const MAX_IMAGE_BYTES: u64 = 512 << 20;

    /// Parses and checks `image` for `sm` into the cache, if it is not there yet.
    pub(super) fn prepare(&self, image: &[u8], sha256: &[u8; 32], sm: u32) {
        self.programs(image, sha256, sm);
    }

    /// The checked programs of `image` (whose SHA-256 is `sha256`) for compute capability
    /// `sm`.
    fn programs(&self, image: &[u8], sha256: &[u8; 32], sm: u32) -> Programs {
        let key = (*sha256, sm);
        if let Some(p) = vgpu_os::lock(&self.entries).programs.get(&key) {
            return p.clone();
        }
        let programs: Programs = ptx_programs(image, sm)
            .into_iter()
            .map(|p| Arc::new(CachedProgram::new(p)))
            .collect();
        let size = image.len() as u64;
        let mut e = vgpu_os::lock(&self.entries);
        if size <= Self::MAX_IMAGE_BYTES && e.programs.insert(key, programs.clone()).is_none() {
            e.order.push_back((key, size));
            e.bytes += size;
            while e.order.len() > Self::CAPACITY || e.bytes > Self::MAX_IMAGE_BYTES {
                let Some((old, n)) = e.order.pop_front() else {
                    break;
                };
                e.programs.remove(&old);
                e.bytes -= n;
            }
        }
        programs
    }
}

/// The PTX programs of an image (one per fatbin container that has usable PTX), their
/// kernels to be checked at their first launch.
fn ptx_programs(image: &[u8], sm: u32) -> Vec<vgpu_ptx::lazy::LazyProgram> {
    let texts = match vgpu_fatbin::ptx_for(image, sm) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("module PTX unreadable: {e}");
            return Vec::new();
        }
    };
    texts
        .iter()
        .filter_map(|t| match vgpu_ptx::lazy::LazyProgram::new(t) {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("module PTX refused: {e}");
                None
            }
        })
        .collect()
}

/// Gives each program the device addresses of its variables.
fn link(
    programs: &[Arc<CachedProgram>],
    globals: &HashMap<String, (u64, u64)>,
) -> Vec<Result<Arc<PtxModule>, String>> {
    programs
        .iter()
        .cloned()
        .map(|cached| {
            let addrs = cached
                .program
                .globals
                .iter()
                .map(|g| {
                    globals
                        .get(&g.name)
                        .map(|&(a, _)| a)
                        .ok_or_else(|| format!("its module variable {} was not placed", g.name))
                })
                .collect::<Result<Vec<u64>, String>>()?;
            Ok(Arc::new(PtxModule { cached, addrs }))
        })
        .collect()
}

/// The PTX module that holds kernel `name` (checked at its first launch), or why there is
/// none.
fn ptx_of(
    modules: &[Result<Arc<PtxModule>, String>],
    name: &str,
) -> Result<Arc<PtxModule>, String> {
    let mut why = "its image carries no PTX for this device".to_string();
    for m in modules {
        match m {
            Ok(m) if m.cached.program.has_kernel(name) => return Ok(m.clone()),
            Ok(_) => {}
            Err(e) => why = e.clone(),
        }
    }
    Err(why)
}

impl Function {
    /// The kernel's PTX module and checked program (parsed and checked at the first call),
    /// or why it cannot run from PTX.
    fn ptx_kernel(&self) -> Result<(&PtxModule, &vgpu_ptx::ir::Kernel), String> {
        let m = self.ptx.as_ref().map_err(String::clone)?;
        match m.cached.program.kernel(&self.name) {
            Some(Ok(k)) => Ok((m, k)),
            Some(Err(e)) => Err(format!("its PTX cannot run: {e}")),
            None => Err("its image carries no PTX for this device".to_string()),
        }
    }
}

/// Global memory of a context as a PTX kernel reads and writes it.
struct KernelMemory<'a>(std::sync::Mutex<&'a mut super::memory::Memory>);

impl<'a> KernelMemory<'a> {
    fn mem(&self) -> std::sync::MutexGuard<'_, &'a mut super::memory::Memory> {
        vgpu_os::lock(&self.0)
    }
}

impl vgpu_ptx::exec::Memory for KernelMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        match self.mem().slice(addr, buf.len() as u64) {
            Ok(s) => {
                buf.copy_from_slice(s);
                true
            }
            Err(_) => false,
        }
    }

    fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.mem().slice_mut(addr, data.len() as u64) {
            Ok(s) => {
                s.copy_from_slice(data);
                true
            }
            Err(_) => false,
        }
    }

    fn read_many(&self, addrs: &[u64], size: u32, out: &mut [u64]) -> Result<(), usize> {
        self.mem().read_many(addrs, size, out)
    }

    fn write_many(&self, addrs: &[u64], size: u32, values: &[u64]) -> Result<(), usize> {
        self.mem().write_many(addrs, size, values)
    }

    fn atomic(&self, addr: u64, size: u32, f: &mut dyn FnMut(u64) -> u64) -> Option<u64> {
        let mut m = self.mem();
        let s = m.slice_mut(addr, u64::from(size)).ok()?;
        let mut b = [0u8; 8];
        b[..s.len()].copy_from_slice(s);
        let old = u64::from_le_bytes(b);
        let new = f(old).to_le_bytes();
        let n = s.len();
        s.copy_from_slice(&new[..n]);
        Some(old)
    }
}

fn fault_status(f: &vgpu_ptx::exec::Fault) -> Status {
    use vgpu_ptx::exec::Fault;
    match f {
        Fault::IllegalAddress { .. } => Status::ILLEGAL_ADDRESS,
        Fault::Misaligned { .. } => Status::MISALIGNED_ADDRESS,
        Fault::Trap { .. } | Fault::StackOverflow { .. } => Status::LAUNCH_FAILED,
        Fault::Timeout => Status::LAUNCH_TIMEOUT,
        Fault::Cancelled => Status::UNKNOWN,
        Fault::BadLaunch(_) => Status::INVALID_VALUE,
        Fault::OutOfResources(_) => Status::LAUNCH_OUT_OF_RESOURCES,
    }
}

/// Runs a launch on the CPU: from PTX when the kernel has it, else its reference kernel.
#[allow(
    unsafe_code,
    reason = "lends the context's locked memory to the kernel as vgpu_ptx_jit::DirectMemory"
)]
pub(super) fn launch(
    sh: &SoftDevice,
    cancel: &std::sync::atomic::AtomicBool,
    func: u64,
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem: u32,
    params: &[u8],
) -> Result<(), Status> {
    let f = sh.modules().function(func).ok_or(Status::INVALID_HANDLE)?;
    if let Ok((m, k)) = f.ptx_kernel() {
        let native = if sh.jit {
            f.native
                .get_or_init(|| {
                    vgpu_ptx_jit::Jit::new(k)
                        .inspect_err(|e| log::warn!("kernel {}: interpreted: {e}", f.name))
                        .ok()
                })
                .as_ref()
                .map(|j| j as &dyn vgpu_ptx::exec::Native)
        } else {
            None
        };
        let mut mem = sh.memory();
        let spans = mem.allocations();
        // SAFETY: the allocations stay in `mem`, which is locked for the whole launch and
        // is not touched but through `direct` until `direct` is dropped, below.
        let direct = unsafe { vgpu_ptx_jit::DirectMemory::new(spans) }
            .inspect_err(|e| log::warn!("kernel {}: memory reached through a lock: {e}", f.name))
            .ok();
        let locked;
        let memory: &dyn vgpu_ptx::exec::Memory = match &direct {
            Some(d) => d,
            None => {
                locked = KernelMemory(std::sync::Mutex::new(&mut mem));
                &locked
            }
        };
        let blocks: u64 = grid.iter().map(|&g| u64::from(g)).product();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = launch_threads(&f, blocks, cpus);
        let l = vgpu_ptx::exec::Launch {
            grid,
            block,
            dynamic_shared: shared_mem,
            params,
            globals: &m.addrs,
            mem: memory,
            threads,
            deadline: Some(std::time::Instant::now() + sh.launch_timeout),
            cancel: Some(cancel),
            native,
            pool: Some(&sh.blocks),
        };
        let started = std::time::Instant::now();
        let r = vgpu_ptx::exec::run_timed(k, &l).map_err(|e| {
            log::warn!("kernel {} failed: {e}", f.name);
            fault_status(&e)
        });
        let took = started.elapsed();
        // The launching thread's time a block: one thread's, waits for helpers left out.
        if let Some(own) = r.as_ref().ok().filter(|own| own.blocks > 0) {
            let ns = own.time.as_nanos() / u128::from(own.blocks);
            f.block_ns.store(
                u64::try_from(ns).unwrap_or(u64::MAX).max(1),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        log::debug!(
            "launch {} grid {grid:?} block {block:?} ({} registers, {} B local a thread) on {threads} threads: {:.3} ms",
            f.name,
            k.regs,
            k.local_bytes,
            took.as_secs_f64() * 1e3
        );
        return r.map(|_| ());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    use vgpu_test_stack::POKE;

    /// A context of cache domain `domain` on the device's program cache `programs`.
    fn context(pd: u32, domain: u32, programs: &Arc<ProgramCache>) -> SoftDevice {
        SoftDevice {
            pd,
            mem: Mutex::new(super::super::memory::Memory::new(
                1 << 20,
                super::super::memory::Pool::new(1 << 20),
            )),
            modules: Mutex::default(),
            limits: Mutex::default(),
            launch_timeout: std::time::Duration::from_secs(10),
            pool: super::super::memory::Pool::new(1 << 20),
            sm: 80,
            reference_kernels: false,
            jit: true,
            programs: programs.clone(),
            cache_domain: domain,
            blocks: Default::default(),
        }
    }

    /// Loads `POKE` into `sh`: its function `poke`.
    fn poke(sh: &SoftDevice) -> Arc<Function> {
        let loader = Loader {
            sm: sh.sm,
            reference_kernels: false,
            cache: &sh.programs,
            domain: sh.cache_domain,
        };
        let mut handle = 0;
        let mut next = |_| {
            handle += 1;
            handle
        };
        let sha = crate::engine::cache::sha256(POKE);
        let (_, funcs) = load(sh, &loader, POKE, &sha, &mut next, 16).expect("loads");
        assert_eq!(funcs.len(), 1);
        sh.modules()
            .function(funcs[0].record.handle)
            .expect("the function")
    }

    /// The handle of `sh`'s function `f`.
    fn handle(sh: &SoftDevice, f: &Arc<Function>) -> u64 {
        let m = sh.modules();
        *m.functions
            .iter()
            .find(|(_, g)| Arc::ptr_eq(g, f))
            .expect("loaded")
            .0
    }

    /// Runs `poke` on a word of `sh`'s memory and checks that it wrote 1 there.
    fn run(sh: &SoftDevice, f: &Function, handle: u64) {
        let at = sh.memory().alloc(4).expect("memory");
        let params = at.to_le_bytes();
        launch(
            sh,
            &AtomicBool::new(false),
            handle,
            [1; 3],
            [1; 3],
            0,
            &params,
        )
        .expect("runs");
        let mut word = [0u8; 4];
        word.copy_from_slice(sh.memory().slice_mut(at, 4).expect("the word"));
        assert_eq!(u32::from_le_bytes(word), 1, "{} wrote", f.name);
    }

    /// A kernel's first launch runs on every CPU (nothing is known of it yet); after it, a
    /// launch whose blocks took the launching thread less than `ALONE_BELOW_NS` in all at
    /// the kernel's last launch runs on that thread alone, and a longer one on every CPU.
    #[test]
    fn launches_a_kernel_ran_quickly_before_take_one_thread() {
        let programs = Arc::new(ProgramCache::default());
        let sh = context(1, 7, &programs);
        let f = poke(&sh);
        assert_eq!(launch_threads(&f, 1, 4), 4, "not launched yet");
        // (The first launch compiles the kernel too; the second's block, of one thread, takes
        // far less than the bound, unless the host stalls it.)
        for _ in 0..2 {
            run(&sh, &f, handle(&sh, &f));
        }
        let per_block = f.block_ns.load(std::sync::atomic::Ordering::Relaxed);
        assert!(per_block > 0, "its block's time measured");
        if per_block < ALONE_BELOW_NS / 10 {
            assert_eq!(launch_threads(&f, 1, 4), 1, "{per_block} ns a block");
        }
        f.block_ns
            .store(1_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(launch_threads(&f, 99, 4), 1, "99 µs in all");
        assert_eq!(launch_threads(&f, 100, 4), 4, "100 µs in all");
        assert_eq!(launch_threads(&f, u64::MAX, 4), 4, "no overflow");
    }

    /// Two contexts of one cache domain that load the same image share its kernels'
    /// native code: the second finds it made by the first's launch. A context of another
    /// domain makes its own.
    #[test]
    fn contexts_of_a_domain_share_compiled_kernels() {
        let programs = Arc::new(ProgramCache::default());
        let (a, b, stranger) = (
            context(1, 7, &programs),
            context(2, 7, &programs),
            context(3, 8, &programs),
        );
        let (fa, fb, fs) = (poke(&a), poke(&b), poke(&stranger));
        assert!(
            Arc::ptr_eq(&fa.native, &fb.native),
            "one domain, one kernel's code"
        );
        assert!(!Arc::ptr_eq(&fa.native, &fs.native), "another domain's own");
        assert!(
            fb.native.get().is_none(),
            "made at the first launch, not at the load"
        );
        run(&a, &fa, handle(&a, &fa));
        assert!(
            matches!(fb.native.get(), Some(Some(_))),
            "the other context of the domain finds it compiled"
        );
        assert!(fs.native.get().is_none(), "not another domain's");
        run(&b, &fb, handle(&b, &fb));
        run(&stranger, &fs, handle(&stranger, &fs));
    }

    /// A guest naming ever new cache domains (up to `u32::MAX`) cannot make the device
    /// keep ever more compiled code: each program keeps the code of its last
    /// `CachedProgram::DOMAINS` domains. A context of a forgotten domain keeps and runs
    /// what it holds; a new context there compiles afresh.
    #[test]
    fn the_compiled_code_kept_is_bounded_whatever_domains_a_guest_names() {
        let programs = Arc::new(ProgramCache::default());
        let first = context(1, 0, &programs);
        let f0 = poke(&first);
        run(&first, &f0, handle(&first, &f0));
        let many = CachedProgram::DOMAINS as u32 + 4;
        for (pd, d) in (2..).zip((1..many).chain([u32::MAX])) {
            let sh = context(pd, d, &programs);
            let f = poke(&sh);
            run(&sh, &f, handle(&sh, &f));
        }
        let sha = crate::engine::cache::sha256(POKE);
        let cached = programs.programs(POKE, &sha, 80);
        let kept = vgpu_os::lock(&cached[0].native);
        assert_eq!(kept.domains.len(), CachedProgram::DOMAINS);
        assert!(
            kept.cells.len() <= CachedProgram::DOMAINS,
            "one kernel a domain"
        );
        assert!(!kept.domains.contains(&0), "the oldest domain forgotten");
        drop(kept);
        run(&first, &f0, handle(&first, &f0));
        let again = context(99, 0, &programs);
        let f = poke(&again);
        assert!(!Arc::ptr_eq(&f.native, &f0.native), "compiled afresh");
        assert!(f.native.get().is_none());
        run(&again, &f, handle(&again, &f));
    }
}
