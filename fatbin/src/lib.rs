//! CUDA module images without a GPU: fatbin containers, ELF cubins and PTX.
//!
//! The host-side device model has to answer questions about a CUDA module (which kernels it
//! defines, how their parameter buffers are laid out, which `__device__` globals exist) when an
//! application calls `cuModuleLoadData` / `__cudaRegisterFatBinary`, before (or without) any real
//! driver sees the image. This module reads those images directly:
//!
//! * **Fatbin containers** (magic `0xBA55ED50`), as produced by `nvcc -fatbin` / `fatbinary` and
//!   as found in a host ELF's `.nv_fatbin` section, where one container per translation unit is
//!   concatenated (8-byte aligned, zero padded). Every container is walked. Entries may be
//!   uncompressed, LZ4-compressed (flag `0x2000`, raw LZ4 block), ZSTD-compressed (flag `0x8000`,
//!   one zstd frame), or packed into a "concatenated" bundle entry (kind `0x100`, from
//!   `fatbinary -concat`) whose decompressed payload holds several images.
//! * **ELF cubins** (`EM_CUDA` = 190, both the CUDA 12 layout, ELF ABI version 7, and the CUDA 13
//!   layout, ABI version 8): kernels are `STT_FUNC` symbols with the `STO_CUDA_ENTRY` bit (0x10)
//!   living in `.text.<name>`; their parameter layout, limits and register counts come from the
//!   `EIATTR_*` records of `.nv.info` and `.nv.info.<name>`; static shared memory from
//!   `.nv.shared.<name>`; device globals are `STT_OBJECT` symbols in `.nv.global`,
//!   `.nv.global.init` and `.nv.constant*`.
//! * **PTX** text (optionally NUL-terminated): `.entry` declarations give the kernels, the
//!   parameter layout is computed from the `.param` types with natural (or explicit `.align`)
//!   alignment, `.global` / `.const` declarations give the globals.
//!
//! Selection follows the driver: for each container, the cubin whose sm equals the wanted one,
//! else the highest sm with the same major that is not above it (arch-specific `sm_XXa` cubins
//! only on an exact match); if no cubin fits, the highest PTX whose target is not above the
//! wanted sm. Results from several containers are merged.
//!
//! The whole module is panic-free on arbitrary input: all reads are bounds checked, all
//! arithmetic is checked, decompression output is capped by [`MAX_UNCOMPRESSED_BYTES`] per entry
//! and, with the copies bundles make, by [`MAX_IMAGE_INFLATION`] per image; every allocation
//! the image drives is fallible ([`ImageError::TooLarge`]).

#![forbid(unsafe_code)]

mod container;
mod cubin;
mod error;
mod ptx;
mod read;

pub use container::{
    fatbin_container_len, host_fatbin_section, list_entries, parse_image, ptx_for, Compression,
    EntryInfo, EntryKind, FatbinWrapper, ENTRY_KIND_BUNDLE, ENTRY_KIND_ELF, ENTRY_KIND_PTX,
    FATBIN_MAGIC, FATBIN_WRAPPER_MAGIC, FLAG_ARCH_SPECIFIC, FLAG_COMPRESSED_LZ4,
    FLAG_COMPRESSED_ZSTD, MAX_IMAGE_INFLATION, MAX_UNCOMPRESSED_BYTES,
};
pub use cubin::EM_CUDA;
pub use error::ImageError;

/// One kernel (entry function) found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// Mangled name, e.g. `_Z6vecAddPKfS0_Pfi`.
    pub name: String,
    /// Parameters in ordinal order.
    pub params: Vec<ParamLayout>,
    /// Total size of the parameter buffer (`EIATTR_CBANK_PARAM_SIZE`, else end of last param).
    pub param_bytes: u32,
    /// False when the kernel has no `.nv.info.<name>` section to take the layout from.
    pub layout_known: bool,
    /// From `EIATTR_MAX_THREADS` / `EIATTR_REQNTID` (PTX: `.maxntid` / `.reqntid`), else 1024.
    pub max_threads_per_block: u32,
    /// From `EIATTR_REGCOUNT` (or the CUDA 12 `.text` `sh_info` high byte), else 0.
    pub num_regs: u32,
    /// Static shared memory: size of `.nv.shared.<name>` (PTX: the entry's `.shared` variables).
    /// On sm_90 cubins this section includes the 1 KiB the toolchain reserves for the system.
    pub shared_size_bytes: u32,
    /// User `__constant__` memory of the module (size of `.nv.constant3`; PTX: the `.const`
    /// variables), 0 if unknown.
    pub const_size_bytes: u32,
    /// Per-thread local memory (`EIATTR_FRAME_SIZE`), 0 if unknown.
    pub local_size_bytes: u32,
}

/// Where one kernel parameter lives in the parameter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamLayout {
    pub ordinal: u32,
    pub offset: u32,
    pub size: u32,
}

/// A device global (`__device__` / `__constant__` variable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalInfo {
    pub name: String,
    pub size: u64,
    /// Initial contents from the cubin (`.nv.global.init`, `.nv.constant*`); empty means
    /// zero-filled (`.nv.global`, and PTX, whose initialisers are not read).
    pub init: Vec<u8>,
}

/// What the device model needs to know about a loaded module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleImage {
    /// The sm of the cubin chosen (the highest one when several containers contributed);
    /// `None` when everything came from PTX.
    pub arch: Option<u32>,
    /// True when at least one container's kernels were derived from PTX.
    pub used_ptx: bool,
    pub kernels: Vec<KernelInfo>,
    pub globals: Vec<GlobalInfo>,
}

impl ModuleImage {
    /// Look a kernel up by its (mangled) name.
    pub fn kernel(&self, name: &str) -> Option<&KernelInfo> {
        self.kernels.iter().find(|k| k.name == name)
    }

    /// Look a global up by its (mangled) name.
    pub fn global(&self, name: &str) -> Option<&GlobalInfo> {
        self.globals.iter().find(|g| g.name == name)
    }
}
