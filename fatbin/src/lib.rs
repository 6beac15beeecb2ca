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
//! arithmetic is checked, and decompression output is capped by [`MAX_UNCOMPRESSED_BYTES`].

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use object::read::elf::{ElfFile64, FileHeader, SectionHeader, Sym};
use object::{Endianness, Object, ObjectSection, ObjectSymbol};

/// Magic number at the start of a fatbin container (`fatBinaryHeader`).
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// Magic number of the `__fatBinC_Wrapper_t` struct passed to `__cudaRegisterFatBinary`.
pub const FATBIN_WRAPPER_MAGIC: u32 = 0x4662_43B1;
/// ELF `e_machine` of CUDA cubins.
pub const EM_CUDA: u16 = 190;
/// Largest uncompressed entry this module will allocate for.
pub const MAX_UNCOMPRESSED_BYTES: u64 = 1 << 30;

/// Fatbin entry kind: PTX text.
pub const ENTRY_KIND_PTX: u16 = 1;
/// Fatbin entry kind: ELF cubin.
pub const ENTRY_KIND_ELF: u16 = 2;
/// Fatbin entry kind: bundle of concatenated images (`fatbinary -concat`).
pub const ENTRY_KIND_BUNDLE: u16 = 0x100;

/// Entry flag: payload is one raw LZ4 block.
pub const FLAG_COMPRESSED_LZ4: u64 = 0x2000;
/// Entry flag: payload is one zstd frame.
pub const FLAG_COMPRESSED_ZSTD: u64 = 0x8000;
/// Entry flag: arch-specific image (`sm_90a`, `compute_90a`): usable only on that exact sm.
pub const FLAG_ARCH_SPECIFIC: u64 = 0x10_0000;

/// Size of the fixed part of a container header.
const CONTAINER_HEADER_LEN: usize = 16;
/// Size of the fixed part of an entry header (and of a bundle's sub-entry header).
const ENTRY_HEADER_LEN: usize = 64;

// EIATTR attribute numbers (second byte of each `.nv.info` record).
const EIATTR_MAX_THREADS: u8 = 0x05;
const EIATTR_PARAM_CBANK: u8 = 0x0a;
const EIATTR_REQNTID: u8 = 0x10;
const EIATTR_FRAME_SIZE: u8 = 0x11;
const EIATTR_KPARAM_INFO: u8 = 0x17;
const EIATTR_CBANK_PARAM_SIZE: u8 = 0x19;
const EIATTR_REGCOUNT: u8 = 0x2f;

// EIFMT record formats (first byte of each `.nv.info` record).
const EIFMT_NVAL: u8 = 0x01;
const EIFMT_BVAL: u8 = 0x02;
const EIFMT_HVAL: u8 = 0x03;
const EIFMT_SVAL: u8 = 0x04;

/// `st_other` bit marking a kernel entry point in a cubin.
const STO_CUDA_ENTRY: u8 = 0x10;
const STT_OBJECT: u8 = 1;
const STT_FUNC: u8 = 2;

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

/// Why an image could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Neither a fatbin, a CUDA ELF cubin nor PTX.
    #[error("not a CUDA module image (neither fatbin, CUDA ELF cubin nor PTX)")]
    NotAnImage,
    /// A structure is truncated or inconsistent.
    #[error("malformed CUDA module image: {0}")]
    Malformed(String),
    /// A compressed entry that could not be decompressed.
    #[error("cannot decompress fatbin entry (flags {flags:#x}): {what}")]
    Compressed { flags: u64, what: String },
    /// No cubin or PTX usable on the wanted sm.
    #[error("no binary for sm_{wanted} in image (available: {available:?})")]
    NoBinaryForArch { wanted: u32, available: Vec<u32> },
}

fn malformed(msg: impl Into<String>) -> ImageError {
    ImageError::Malformed(msg.into())
}

/// Kind of a fatbin entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Ptx,
    Elf,
    /// A `-concat` bundle that could not be expanded (its payload failed to decompress).
    Bundle,
    /// Some other kind (e.g. LTO IR); listed but never chosen.
    Other(u16),
}

/// Compression scheme of a fatbin entry, from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
    Zstd,
    /// Flagged or sized as compressed, but with no scheme this module knows.
    Unknown,
}

/// One entry of a fatbin container, as listed by [`list_entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// Index of the container (0-based) in the input.
    pub container: usize,
    /// Byte offset of the entry header in the input (for bundled images: of the bundle).
    pub offset: usize,
    pub kind: EntryKind,
    /// The sm (ELF) or virtual compute arch (PTX), e.g. 90.
    pub sm: u32,
    /// Raw 64-bit flags word of the entry header.
    pub flags: u64,
    pub compression: Compression,
    /// `sm_XXa` / `compute_XXa`: usable only on that exact sm.
    pub arch_specific: bool,
    /// Bytes stored in the container (padded; compressed size when compressed).
    pub stored_size: u64,
    /// Declared uncompressed size (0 for uncompressed entries).
    pub uncompressed_size: u64,
    /// True for images unpacked from a `-concat` bundle entry.
    pub bundled: bool,
}

/// The `__fatBinC_Wrapper_t` struct that `__cudaRegisterFatBinary` receives. Its `data` is a
/// pointer in the client's address space; the client has to send the container bytes itself
/// (use [`fatbin_container_len`] on the first 16 bytes to know how many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatbinWrapper {
    pub version: u32,
    pub data_ptr: u64,
    pub filename_or_fatbins_ptr: u64,
}

impl FatbinWrapper {
    /// Parse the 24-byte wrapper of a 64-bit (little-endian) process.
    pub fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        if read_u32(bytes, 0) != Some(FATBIN_WRAPPER_MAGIC) {
            return Err(ImageError::NotAnImage);
        }
        let version = read_u32(bytes, 4).ok_or_else(|| malformed("fatbin wrapper truncated"))?;
        let data_ptr = read_u64(bytes, 8).ok_or_else(|| malformed("fatbin wrapper truncated"))?;
        let filename_or_fatbins_ptr =
            read_u64(bytes, 16).ok_or_else(|| malformed("fatbin wrapper truncated"))?;
        Ok(Self {
            version,
            data_ptr,
            filename_or_fatbins_ptr,
        })
    }
}

/// Total length in bytes (header included) of the fatbin container starting at `header[0]`;
/// needs only the first 16 bytes.
pub fn fatbin_container_len(header: &[u8]) -> Result<usize, ImageError> {
    if read_u32(header, 0) != Some(FATBIN_MAGIC) {
        return Err(ImageError::NotAnImage);
    }
    let hs = read_u16(header, 6).ok_or_else(|| malformed("fatbin header truncated"))?;
    let size = read_u64(header, 8).ok_or_else(|| malformed("fatbin header truncated"))?;
    if usize::from(hs) < CONTAINER_HEADER_LEN {
        return Err(malformed(format!("fatbin header size {hs} < 16")));
    }
    u64::from(hs)
        .checked_add(size)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| malformed("fatbin container size overflows"))
}

// ---------------------------------------------------------------------------------------------
// Little helpers: bounds-checked little-endian reads.

fn read_u8(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    let s: [u8; 2] = b.get(off..off.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_le_bytes(s))
}

fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(off..off.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

fn slice_at(b: &[u8], off: usize, len: u64) -> Option<&[u8]> {
    let len = usize::try_from(len).ok()?;
    b.get(off..off.checked_add(len)?)
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// Fatbin walking.

/// One entry with its (still possibly compressed) payload.
struct RawEntry<'a> {
    info: EntryInfo,
    /// Exact stored bytes: for compressed entries only the compressed stream.
    stored: Cow<'a, [u8]>,
}

impl RawEntry<'_> {
    /// The uncompressed payload.
    fn payload(&self) -> Result<Cow<'_, [u8]>, ImageError> {
        decompress(&self.stored, &self.info)
    }
}

fn compression_of(flags: u64, uncompressed_size: u64) -> Compression {
    let lz4 = flags & FLAG_COMPRESSED_LZ4 != 0;
    let zstd = flags & FLAG_COMPRESSED_ZSTD != 0;
    match (lz4, zstd) {
        (true, true) => Compression::Unknown,
        (true, false) => Compression::Lz4,
        (false, true) => Compression::Zstd,
        (false, false) if uncompressed_size != 0 => Compression::Unknown,
        (false, false) => Compression::None,
    }
}

fn decompress<'b>(stored: &'b [u8], info: &EntryInfo) -> Result<Cow<'b, [u8]>, ImageError> {
    let err = |what: String| ImageError::Compressed {
        flags: info.flags,
        what,
    };
    let want = info.uncompressed_size;
    match info.compression {
        Compression::None => Ok(Cow::Borrowed(stored)),
        Compression::Unknown => Err(err(format!(
            "unknown compression scheme (flags {:#x}, {} bytes stored, {} declared uncompressed)",
            info.flags,
            stored.len(),
            want
        ))),
        Compression::Lz4 | Compression::Zstd if want > MAX_UNCOMPRESSED_BYTES => Err(err(format!(
            "declared uncompressed size {want} exceeds the limit"
        ))),
        Compression::Lz4 if want == 0 => Err(err("LZ4 entry declares no uncompressed size".into())),
        Compression::Lz4 => {
            // An LZ4 block expands at most ~255x; reject sizes the input cannot produce.
            let max = (stored.len() as u64).saturating_mul(256).saturating_add(64);
            if want > max {
                return Err(err(format!(
                    "declared uncompressed size {want} impossible for LZ4"
                )));
            }
            let mut out = vec![0u8; usize::try_from(want).map_err(|_| err("size".into()))?];
            let n = lz4_flex::block::decompress_into(stored, &mut out)
                .map_err(|e| err(format!("LZ4 block: {e}")))?;
            out.truncate(n);
            Ok(Cow::Owned(out))
        }
        Compression::Zstd => {
            let cap = usize::try_from(want.max(1)).map_err(|_| err("size".into()))?;
            let out = zstd::bulk::decompress(stored, cap).map_err(|e| err(format!("zstd: {e}")))?;
            if want != 0 && out.len() as u64 != want {
                log::debug!("zstd entry: {} bytes, header said {want}", out.len());
            }
            Ok(Cow::Owned(out))
        }
    }
}

/// Parse one 64-byte entry header (or bundle sub-header); `hdr` may be longer (extension).
struct EntryHeader {
    kind: u16,
    /// Header size (top-level entries) or offset into the bundle blob (sub-entries).
    word4: u32,
    payload_size: u64,
    compressed_size: u32,
    ext_offset: u32,
    sm: u32,
    flags: u64,
    uncompressed_size: u64,
}

fn parse_entry_header(hdr: &[u8]) -> Option<EntryHeader> {
    Some(EntryHeader {
        kind: read_u16(hdr, 0)?,
        word4: read_u32(hdr, 4)?,
        payload_size: read_u64(hdr, 8)?,
        compressed_size: read_u32(hdr, 16)?,
        ext_offset: read_u32(hdr, 20)?,
        sm: read_u32(hdr, 28)?,
        flags: read_u64(hdr, 40)?,
        uncompressed_size: read_u64(hdr, 56)?,
    })
}

fn kind_of(kind: u16) -> EntryKind {
    match kind {
        ENTRY_KIND_PTX => EntryKind::Ptx,
        ENTRY_KIND_ELF => EntryKind::Elf,
        ENTRY_KIND_BUNDLE => EntryKind::Bundle,
        k => EntryKind::Other(k),
    }
}

/// The exact stored stream of an entry: the compressed bytes when compressed.
fn stored_stream(payload: &[u8], compression: Compression, compressed_size: u32) -> &[u8] {
    let n = compressed_size as usize;
    if compression != Compression::None && n != 0 && n <= payload.len() {
        payload.get(..n).unwrap_or(payload)
    } else {
        payload
    }
}

/// Split `bytes` (one or more fatbin containers, possibly zero padded) into entries.
fn walk(bytes: &[u8]) -> Result<Vec<RawEntry<'_>>, ImageError> {
    let mut entries = Vec::new();
    let mut off = 0usize;
    let mut container = 0usize;
    loop {
        // Skip the zero padding the linker puts between containers.
        while bytes.get(off) == Some(&0) {
            off += 1;
        }
        if off >= bytes.len() {
            break;
        }
        let rest = bytes.get(off..).unwrap_or(&[]);
        if read_u32(rest, 0) != Some(FATBIN_MAGIC) {
            if container == 0 {
                return Err(ImageError::NotAnImage);
            }
            log::debug!(
                "ignoring {} trailing bytes after fatbin container(s)",
                rest.len()
            );
            break;
        }
        let total = fatbin_container_len(rest)?;
        let hs = usize::from(read_u16(rest, 6).unwrap_or(0));
        let body = rest.get(hs..total).ok_or_else(|| {
            malformed(format!(
                "fatbin container {container} at {off:#x} needs {total} bytes, {} present",
                rest.len()
            ))
        })?;
        let body_base = off + hs;
        walk_container(body, body_base, container, &mut entries)?;
        off = off
            .checked_add(total)
            .ok_or_else(|| malformed("fatbin container offset overflows"))?;
        container += 1;
    }
    if container == 0 {
        return Err(ImageError::NotAnImage);
    }
    Ok(entries)
}

fn walk_container<'a>(
    body: &'a [u8],
    base: usize,
    container: usize,
    out: &mut Vec<RawEntry<'a>>,
) -> Result<(), ImageError> {
    let mut p = 0usize;
    while p < body.len() {
        let rest = body.get(p..).unwrap_or(&[]);
        if rest.iter().all(|&b| b == 0) {
            break; // trailing padding inside the container
        }
        let at = base + p;
        let h = parse_entry_header(rest)
            .ok_or_else(|| malformed(format!("fatbin entry header at {at:#x} truncated")))?;
        let hs = h.word4 as usize;
        if hs < ENTRY_HEADER_LEN || hs > rest.len() {
            return Err(malformed(format!(
                "fatbin entry at {at:#x}: bad header size {hs}"
            )));
        }
        let payload = slice_at(rest, hs, h.payload_size).ok_or_else(|| {
            malformed(format!(
                "fatbin entry at {at:#x}: payload of {} bytes runs past the container",
                h.payload_size
            ))
        })?;
        let compression = compression_of(h.flags, h.uncompressed_size);
        let stored = stored_stream(payload, compression, h.compressed_size);
        let info = EntryInfo {
            container,
            offset: at,
            kind: kind_of(h.kind),
            sm: h.sm,
            flags: h.flags,
            compression,
            arch_specific: h.flags & FLAG_ARCH_SPECIFIC != 0,
            stored_size: stored.len() as u64,
            uncompressed_size: h.uncompressed_size,
            bundled: false,
        };
        let entry = RawEntry {
            info,
            stored: Cow::Borrowed(stored),
        };
        if h.kind == ENTRY_KIND_BUNDLE {
            let hdr = rest.get(..hs).unwrap_or(&[]);
            match expand_bundle(&entry, hdr, h.ext_offset) {
                Ok(subs) => out.extend(subs),
                Err(e) => {
                    log::warn!("fatbin bundle entry at {at:#x} not expanded: {e}");
                    out.push(entry);
                }
            }
        } else {
            out.push(entry);
        }
        let next = hs
            .checked_add(payload.len())
            .ok_or_else(|| malformed("fatbin entry size overflows"))?;
        p = p
            .checked_add(next)
            .ok_or_else(|| malformed("fatbin entry size overflows"))?;
    }
    Ok(())
}

/// Unpack a kind-0x100 bundle: its header extension holds `count`, a length, then `count`
/// 64-byte sub-headers whose second word is the image's offset in the decompressed payload.
fn expand_bundle<'a>(
    bundle: &RawEntry<'a>,
    hdr: &[u8],
    ext_offset: u32,
) -> Result<Vec<RawEntry<'a>>, ImageError> {
    let blob = bundle.payload()?;
    let ext = if ext_offset == 0 {
        ENTRY_HEADER_LEN
    } else {
        ext_offset as usize
    };
    let count = read_u32(hdr, ext).ok_or_else(|| malformed("bundle header truncated"))?;
    let mut subs = Vec::new();
    for i in 0..count as usize {
        let sub_off = i
            .checked_mul(ENTRY_HEADER_LEN)
            .and_then(|n| n.checked_add(ext)?.checked_add(8))
            .ok_or_else(|| malformed("bundle header overflows"))?;
        let sh = hdr
            .get(sub_off..)
            .and_then(parse_entry_header)
            .ok_or_else(|| malformed(format!("bundle sub-header {i} truncated")))?;
        let data = slice_at(&blob, sh.word4 as usize, sh.payload_size)
            .ok_or_else(|| malformed(format!("bundle image {i} runs past the bundle payload")))?;
        let compression = compression_of(sh.flags, sh.uncompressed_size);
        let stored = stored_stream(data, compression, sh.compressed_size);
        let info = EntryInfo {
            container: bundle.info.container,
            offset: bundle.info.offset,
            kind: kind_of(sh.kind),
            sm: sh.sm,
            flags: sh.flags,
            compression,
            arch_specific: sh.flags & FLAG_ARCH_SPECIFIC != 0,
            stored_size: stored.len() as u64,
            uncompressed_size: sh.uncompressed_size,
            bundled: true,
        };
        subs.push(RawEntry {
            info,
            stored: Cow::Owned(stored.to_vec()),
        });
    }
    Ok(subs)
}

// ---------------------------------------------------------------------------------------------
// Public entry points.

/// List every entry of every container of a fatbin (bundles are listed as the images they hold).
pub fn list_entries(bytes: &[u8]) -> Result<Vec<EntryInfo>, ImageError> {
    Ok(walk(bytes)?.into_iter().map(|e| e.info).collect())
}

/// Extract the `.nv_fatbin` section of a host ELF (executable, shared object or object file).
pub fn host_fatbin_section(elf: &[u8]) -> Result<Vec<u8>, ImageError> {
    if !elf.starts_with(b"\x7fELF") {
        return Err(ImageError::NotAnImage);
    }
    let file = object::File::parse(elf).map_err(|e| malformed(format!("host ELF: {e}")))?;
    let section = file
        .section_by_name(".nv_fatbin")
        .ok_or_else(|| malformed("host ELF has no .nv_fatbin section"))?;
    let data = section
        .data()
        .map_err(|e| malformed(format!(".nv_fatbin section: {e}")))?;
    Ok(data.to_vec())
}

/// Parse an image as given to `cuModuleLoadData` / `__cudaRegisterFatBinary`: a fatbin
/// (possibly several containers back to back, as in an ELF `.nv_fatbin` section), a bare ELF
/// cubin, or (NUL-terminated) PTX text, and describe it for a device of compute capability
/// `sm` (e.g. 90 for 9.0).
pub fn parse_image(bytes: &[u8], sm: u32) -> Result<ModuleImage, ImageError> {
    match read_u32(bytes, 0) {
        Some(FATBIN_MAGIC) => return parse_fatbin(bytes, sm),
        Some(FATBIN_WRAPPER_MAGIC) => {
            return Err(malformed(
                "this is a __fatBinC_Wrapper_t (magic 0x466243b1) holding a host pointer; \
                 pass the fatbin container it points to",
            ))
        }
        _ => {}
    }
    if bytes.starts_with(b"\x7fELF") {
        let cubin = parse_cubin(bytes)?;
        if !sm_usable(cubin.sm, false, sm) {
            return Err(ImageError::NoBinaryForArch {
                wanted: sm,
                available: vec![cubin.sm],
            });
        }
        return Ok(ModuleImage {
            arch: Some(cubin.sm),
            used_ptx: false,
            kernels: cubin.kernels,
            globals: cubin.globals,
        });
    }
    let text = ptx_text(bytes).ok_or(ImageError::NotAnImage)?;
    let ptx = parse_ptx(text)?;
    if let Some(target) = ptx.target_sm {
        if target > sm {
            return Err(ImageError::NoBinaryForArch {
                wanted: sm,
                available: vec![target],
            });
        }
    }
    Ok(ModuleImage {
        arch: None,
        used_ptx: true,
        kernels: ptx.kernels,
        globals: ptx.globals,
    })
}

/// Can SASS built for `cubin_sm` run on `wanted`? Same major, minor not above; exact for `a`.
fn sm_usable(cubin_sm: u32, arch_specific: bool, wanted: u32) -> bool {
    if arch_specific {
        cubin_sm == wanted
    } else {
        cubin_sm / 10 == wanted / 10 && cubin_sm <= wanted
    }
}

fn parse_fatbin(bytes: &[u8], sm: u32) -> Result<ModuleImage, ImageError> {
    let entries = walk(bytes)?;
    let containers: BTreeSet<usize> = entries.iter().map(|e| e.info.container).collect();
    let mut image = ModuleImage {
        arch: None,
        used_ptx: false,
        kernels: vec![],
        globals: vec![],
    };
    let mut seen_kernels = HashSet::new();
    let mut seen_globals = HashSet::new();
    let mut any = false;
    for c in containers {
        let in_c = || entries.iter().filter(move |e| e.info.container == c);
        let elf = in_c()
            .filter(|e| e.info.kind == EntryKind::Elf)
            .filter(|e| sm_usable(e.info.sm, e.info.arch_specific, sm))
            .max_by_key(|e| (e.info.sm, e.info.arch_specific));
        let (kernels, globals) = if let Some(e) = elf {
            let cubin = parse_cubin(&e.payload()?)?;
            image.arch = Some(image.arch.map_or(e.info.sm, |a| a.max(e.info.sm)));
            (cubin.kernels, cubin.globals)
        } else if let Some(e) = in_c()
            .filter(|e| e.info.kind == EntryKind::Ptx)
            .filter(|e| {
                if e.info.arch_specific {
                    e.info.sm == sm
                } else {
                    e.info.sm <= sm
                }
            })
            .max_by_key(|e| (e.info.sm, e.info.arch_specific))
        {
            let payload = e.payload()?;
            let text = ptx_text(&payload).ok_or_else(|| {
                malformed(format!("PTX entry at {:#x} is not text", e.info.offset))
            })?;
            let ptx = parse_ptx(text)?;
            image.used_ptx = true;
            (ptx.kernels, ptx.globals)
        } else {
            log::debug!("fatbin container {c} has nothing usable on sm_{sm}");
            continue;
        };
        any = true;
        for k in kernels {
            if seen_kernels.insert(k.name.clone()) {
                image.kernels.push(k);
            }
        }
        for g in globals {
            if seen_globals.insert(g.name.clone()) {
                image.globals.push(g);
            }
        }
    }
    if any {
        return Ok(image);
    }
    // Nothing usable: an undecodable bundle may be hiding the right image.
    if let Some(b) = entries.iter().find(|e| e.info.kind == EntryKind::Bundle) {
        b.payload()?;
    }
    let available: BTreeSet<u32> = entries
        .iter()
        .filter(|e| matches!(e.info.kind, EntryKind::Elf | EntryKind::Ptx))
        .map(|e| e.info.sm)
        .collect();
    Err(ImageError::NoBinaryForArch {
        wanted: sm,
        available: available.into_iter().collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// ELF cubins.

struct Cubin {
    sm: u32,
    kernels: Vec<KernelInfo>,
    globals: Vec<GlobalInfo>,
}

/// One `.nv.info` record: SVAL data, or the 16-bit value of NVAL/BVAL/HVAL records.
struct EiAttr<'a> {
    attr: u8,
    sval: &'a [u8],
    hval: u16,
}

fn parse_eiattrs<'a>(sec: &'a [u8], what: &str) -> Result<Vec<EiAttr<'a>>, ImageError> {
    let mut out = Vec::new();
    let mut p = 0usize;
    while p < sec.len() {
        let (Some(fmt), Some(attr), Some(v)) =
            (read_u8(sec, p), read_u8(sec, p + 1), read_u16(sec, p + 2))
        else {
            return Err(malformed(format!("{what}: record at {p:#x} truncated")));
        };
        match fmt {
            EIFMT_NVAL | EIFMT_BVAL | EIFMT_HVAL => {
                let hval = if fmt == EIFMT_BVAL { v & 0xff } else { v };
                out.push(EiAttr {
                    attr,
                    sval: &[],
                    hval,
                });
                p += 4;
            }
            EIFMT_SVAL => {
                let data = slice_at(sec, p + 4, u64::from(v))
                    .ok_or_else(|| malformed(format!("{what}: record at {p:#x} truncated")))?;
                out.push(EiAttr {
                    attr,
                    sval: data,
                    hval: 0,
                });
                p += 4 + usize::from(v);
            }
            f => {
                return Err(malformed(format!(
                    "{what}: unknown record format {f:#x} at {p:#x}"
                )))
            }
        }
    }
    Ok(out)
}

/// Product of up to three u32 dimensions (0 treated as 1); `None` if there are none.
fn dims_product(data: &[u8]) -> Option<u32> {
    let mut n: u64 = 1;
    let mut any = false;
    for i in 0..3 {
        if let Some(d) = read_u32(data, i * 4) {
            any = true;
            n = n.saturating_mul(u64::from(d.max(1)));
        }
    }
    any.then(|| clamp_u32(n))
}

/// sm of a cubin from its ELF header: ABI version >= 8 (CUDA 13) keeps it in bits 8..16 of
/// `e_flags`, older cubins in bits 0..8.
fn cubin_sm(abi_version: u8, e_flags: u32) -> u32 {
    if abi_version >= 8 {
        (e_flags >> 8) & 0xff
    } else {
        e_flags & 0xff
    }
}

fn parse_cubin(data: &[u8]) -> Result<Cubin, ImageError> {
    if !data.starts_with(b"\x7fELF") {
        return Err(malformed("ELF entry does not start with an ELF header"));
    }
    if data.get(4) != Some(&2) {
        return Err(malformed("only 64-bit cubins are supported"));
    }
    let file: ElfFile64<'_, Endianness> =
        ElfFile64::parse(data).map_err(|e| malformed(format!("cubin ELF: {e}")))?;
    let endian = file.endian();
    let header = file.elf_header();
    let machine = header.e_machine(endian).0;
    if machine != EM_CUDA {
        return Err(malformed(format!(
            "ELF e_machine {machine} is not EM_CUDA (190)"
        )));
    }
    let sm = cubin_sm(header.e_ident().abi_version, header.e_flags(endian).0);

    // Sections by name: (index, size, data, sh_info).
    struct Sec<'d> {
        size: u64,
        data: &'d [u8],
        info: u32,
    }
    let mut secs: HashMap<String, Sec<'_>> = HashMap::new();
    let mut sec_names: HashMap<usize, String> = HashMap::new();
    for s in file.sections() {
        let Ok(name) = s.name() else { continue };
        let data = s.data().unwrap_or(&[]);
        let info = s.elf_section_header().sh_info(endian);
        sec_names.insert(s.index().0, name.to_string());
        secs.insert(
            name.to_string(),
            Sec {
                size: s.size(),
                data,
                info,
            },
        );
    }

    // Module-wide attributes from `.nv.info`, keyed by function symbol index.
    let mut regcount: HashMap<u32, u32> = HashMap::new();
    let mut frame_size: HashMap<u32, u32> = HashMap::new();
    if let Some(s) = secs.get(".nv.info") {
        for a in parse_eiattrs(s.data, ".nv.info")? {
            let (Some(sym), Some(val)) = (read_u32(a.sval, 0), read_u32(a.sval, 4)) else {
                continue;
            };
            match a.attr {
                EIATTR_REGCOUNT => {
                    regcount.insert(sym, val);
                }
                EIATTR_FRAME_SIZE => {
                    frame_size.insert(sym, val);
                }
                _ => {}
            }
        }
    }
    let const_size = secs.get(".nv.constant3").map_or(0, |s| clamp_u32(s.size));

    struct FuncSym {
        index: u32,
        name: String,
        entry: bool,
    }
    let mut funcs = Vec::new();
    let mut globals = Vec::new();
    for sym in file.symbols() {
        let raw = sym.elf_symbol();
        let st_type = raw.st_type().0;
        let st_other = raw.st_other().0;
        let Ok(name) = sym.name() else { continue };
        let Some(sec) = sym.section_index().and_then(|i| sec_names.get(&i.0)) else {
            continue;
        };
        if st_type == STT_FUNC && sec.strip_prefix(".text.") == Some(name) {
            let index = u32::try_from(sym.index().0).unwrap_or(u32::MAX);
            funcs.push(FuncSym {
                index,
                name: name.to_string(),
                entry: st_other & STO_CUDA_ENTRY != 0,
            });
        } else if st_type == STT_OBJECT
            && (sec == ".nv.global" || sec == ".nv.global.init" || sec.starts_with(".nv.constant"))
            && !name.is_empty()
        {
            let init = if sec == ".nv.global" {
                Vec::new()
            } else {
                sym.section_index()
                    .and_then(|i| file.section_by_index(i).ok())
                    .and_then(|s| s.data().ok())
                    .and_then(|d| {
                        let start = usize::try_from(sym.address()).ok()?;
                        let end = start.checked_add(usize::try_from(sym.size()).ok()?)?;
                        d.get(start..end).map(<[u8]>::to_vec)
                    })
                    .unwrap_or_default()
            };
            globals.push(GlobalInfo {
                name: name.to_string(),
                size: sym.size(),
                init,
            });
        }
    }
    // Kernels carry STO_CUDA_ENTRY; if no symbol does (unknown producer), take every function
    // that owns its `.text.<name>` section.
    let any_entry = funcs.iter().any(|f| f.entry);

    let mut kernels = Vec::new();
    for f in funcs.into_iter().filter(|f| f.entry || !any_entry) {
        let mut k = KernelInfo {
            name: f.name.clone(),
            params: vec![],
            param_bytes: 0,
            layout_known: false,
            max_threads_per_block: 1024,
            num_regs: 0,
            shared_size_bytes: 0,
            const_size_bytes: const_size,
            local_size_bytes: frame_size.get(&f.index).copied().unwrap_or(0),
        };
        k.num_regs = match regcount.get(&f.index) {
            Some(&r) => r,
            None => secs
                .get(&format!(".text.{}", f.name))
                .map_or(0, |s| s.info >> 24),
        };
        if let Some(s) = secs.get(&format!(".nv.shared.{}", f.name)) {
            k.shared_size_bytes = clamp_u32(s.size);
        }
        if let Some(s) = secs.get(&format!(".nv.info.{}", f.name)) {
            let what = format!(".nv.info.{}", f.name);
            let mut params: BTreeMap<u32, ParamLayout> = BTreeMap::new();
            let mut cbank_size = None;
            let mut param_cbank_size = None;
            let mut max_threads = None;
            let mut reqntid = None;
            for a in parse_eiattrs(s.data, &what)? {
                match a.attr {
                    EIATTR_KPARAM_INFO => {
                        let (Some(ordinal), Some(offset), Some(bits)) = (
                            read_u16(a.sval, 4),
                            read_u16(a.sval, 6),
                            read_u32(a.sval, 8),
                        ) else {
                            return Err(malformed(format!("{what}: short KPARAM_INFO")));
                        };
                        let p = ParamLayout {
                            ordinal: u32::from(ordinal),
                            offset: u32::from(offset),
                            size: (bits >> 18) & 0x3fff,
                        };
                        params.insert(p.ordinal, p);
                    }
                    EIATTR_CBANK_PARAM_SIZE => cbank_size = Some(u32::from(a.hval)),
                    EIATTR_PARAM_CBANK => param_cbank_size = read_u32(a.sval, 4).map(|v| v >> 16),
                    EIATTR_MAX_THREADS => max_threads = dims_product(a.sval),
                    EIATTR_REQNTID => reqntid = dims_product(a.sval),
                    _ => {}
                }
            }
            k.params = params.into_values().collect();
            let end = k
                .params
                .iter()
                .map(|p| p.offset.saturating_add(p.size))
                .max()
                .unwrap_or(0);
            k.param_bytes = cbank_size.or(param_cbank_size).unwrap_or(end);
            k.layout_known = true;
            if let Some(n) = max_threads.or(reqntid) {
                k.max_threads_per_block = n;
            }
        }
        kernels.push(k);
    }
    Ok(Cubin {
        sm,
        kernels,
        globals,
    })
}

// ---------------------------------------------------------------------------------------------
// PTX.

struct Ptx {
    target_sm: Option<u32>,
    kernels: Vec<KernelInfo>,
    globals: Vec<GlobalInfo>,
}

/// The PTX text of an image: up to the first NUL, UTF-8, with a `.version` directive.
fn ptx_text(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = std::str::from_utf8(bytes.get(..end)?).ok()?;
    text.contains(".version").then_some(text)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    Word(&'a str),
    Punct(char),
}

/// Tokenize PTX: words (directives, identifiers, numbers) and punctuation; comments and
/// string literals are dropped.
fn tokenize(text: &str) -> Vec<Tok<'_>> {
    let b = text.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0usize;
    let is_word = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.' | b'%');
    while let Some(&c) = b.get(i) {
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while b.get(i).is_some_and(|&c| c != b'\n') {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b.get(i) == Some(&b'*') && b.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i = i.saturating_add(2);
        } else if c == b'"' {
            i += 1;
            while b.get(i).is_some_and(|&c| c != b'"') {
                i += if b.get(i) == Some(&b'\\') { 2 } else { 1 };
            }
            i += 1;
        } else if is_word(c) {
            let start = i;
            while b.get(i).is_some_and(|&c| is_word(c)) {
                i += 1;
            }
            if let Some(w) = text.get(start..i) {
                toks.push(Tok::Word(w));
            }
        } else {
            // Punctuation, or any other (possibly multi-byte) character.
            let ch = text.get(i..).and_then(|s| s.chars().next()).unwrap_or('?');
            toks.push(Tok::Punct(ch));
            i += ch.len_utf8().max(1);
        }
    }
    toks
}

/// Byte size (= natural alignment) of a PTX fundamental type directive.
fn ptx_type_size(t: &str) -> Option<u32> {
    Some(match t {
        ".b8" | ".u8" | ".s8" | ".pred" | ".e4m3" | ".e5m2" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" | ".e4m3x2" | ".e5m2x2" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" | ".tf32" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" | ".texref" | ".samplerref" | ".surfref" => 8,
        ".b128" => 16,
        _ => return None,
    })
}

fn parse_int(w: &str) -> Option<u64> {
    let w = w.trim_end_matches(['U', 'u']);
    if let Some(h) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        w.parse().ok()
    }
}

/// A variable / parameter declaration: `[.align N] [.vN] .type [attrs] name [dims]`.
struct Decl<'a> {
    name: &'a str,
    align: u64,
    size: u64,
}

/// Parse the tokens of one declaration (without its state space and initializer).
fn parse_decl<'a>(toks: &[Tok<'a>], what: &str) -> Result<Decl<'a>, ImageError> {
    let mut align = None;
    let mut elem = None;
    let mut vec = 1u64;
    let mut name = None;
    let mut dims: u64 = 1;
    let mut after_ptr = false;
    let mut i = 0usize;
    while let Some(t) = toks.get(i) {
        match t {
            Tok::Word(".ptr") => after_ptr = true,
            Tok::Word(".align") => {
                let n = match toks.get(i + 1) {
                    Some(Tok::Word(w)) => parse_int(w),
                    _ => None,
                };
                let n = n.ok_or_else(|| malformed(format!("PTX {what}: bad .align")))?;
                // `.ptr .global .align N` is the pointee's alignment, not the parameter's.
                if !after_ptr {
                    align = Some(n);
                }
                i += 1;
            }
            Tok::Word(w @ (".v2" | ".v4" | ".v8")) => {
                vec = w.get(2..).and_then(parse_int).unwrap_or(1);
            }
            Tok::Word(w) if w.starts_with('.') => {
                if let Some(s) = ptx_type_size(w) {
                    elem = Some(u64::from(s));
                }
                // else: .ptr, .global/.const/... pointee attributes, linkage: ignored
            }
            Tok::Word(w) if name.is_none() => name = Some(*w),
            Tok::Punct('[') => {
                match (toks.get(i + 1), toks.get(i + 2)) {
                    (Some(Tok::Word(n)), Some(Tok::Punct(']'))) => {
                        let n = parse_int(n)
                            .ok_or_else(|| malformed(format!("PTX {what}: bad array size")))?;
                        dims = dims.saturating_mul(n);
                        i += 2;
                    }
                    (Some(Tok::Punct(']')), _) => {
                        dims = 0; // unsized (extern) array
                        i += 1;
                    }
                    _ => return Err(malformed(format!("PTX {what}: bad array declarator"))),
                }
            }
            _ => {}
        }
        i += 1;
    }
    let name = name.ok_or_else(|| malformed(format!("PTX {what}: declaration without a name")))?;
    let elem = elem.ok_or_else(|| malformed(format!("PTX {what}: no type for {name}")))?;
    let natural = elem.saturating_mul(vec);
    let size = natural.saturating_mul(dims);
    Ok(Decl {
        name,
        align: align.unwrap_or(natural).max(1),
        size,
    })
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    let a = a.max(1);
    v.checked_add(a - 1).map(|x| x / a * a)
}

/// Index just past the token that closes the bracket opened at `open` (`(`/`{`).
fn skip_group(toks: &[Tok<'_>], open: usize, l: char, r: char) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while let Some(t) = toks.get(i) {
        if *t == Tok::Punct(l) {
            depth += 1;
        } else if *t == Tok::Punct(r) {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    toks.len()
}

fn parse_ptx(text: &str) -> Result<Ptx, ImageError> {
    let toks = tokenize(text);
    let mut ptx = Ptx {
        target_sm: None,
        kernels: vec![],
        globals: vec![],
    };
    let mut i = 0usize;
    let mut is_extern = false;
    let mut const_bytes: u64 = 0;
    while let Some(t) = toks.get(i) {
        match t {
            Tok::Word(".target") => {
                if let Some(Tok::Word(w)) = toks.get(i + 1) {
                    let digits: String = w
                        .trim_start_matches("sm_")
                        .trim_start_matches("compute_")
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    ptx.target_sm = digits.parse().ok();
                }
                i += 1;
            }
            Tok::Word(".extern") => {
                is_extern = true;
                i += 1;
                continue;
            }
            Tok::Word(".entry") => {
                let (kernel, next) = parse_entry(&toks, i + 1)?;
                if let Some(k) = kernel.filter(|_| !is_extern) {
                    ptx.kernels.push(k);
                }
                i = next;
            }
            Tok::Word(w @ (".global" | ".const")) => {
                let end = toks
                    .iter()
                    .skip(i)
                    .position(|t| *t == Tok::Punct(';'))
                    .map_or(toks.len(), |n| i + n);
                let decl_end = toks
                    .get(i + 1..end)
                    .and_then(|d| d.iter().position(|t| *t == Tok::Punct('=')))
                    .map_or(end, |n| i + 1 + n);
                match parse_decl(toks.get(i + 1..decl_end).unwrap_or(&[]), w) {
                    Ok(d) if !is_extern && d.size > 0 => {
                        if *w == ".const" {
                            const_bytes = align_up(const_bytes, d.align)
                                .unwrap_or(u64::MAX)
                                .saturating_add(d.size);
                        }
                        ptx.globals.push(GlobalInfo {
                            name: d.name.to_string(),
                            size: d.size,
                            init: Vec::new(),
                        });
                    }
                    Ok(_) => {}
                    Err(e) => log::warn!("skipping PTX {w} declaration: {e}"),
                }
                i = end + 1;
            }
            // `.func` parameter lists and bodies, initializers: nothing to declare there.
            Tok::Punct('{') => i = skip_group(&toks, i, '{', '}'),
            Tok::Punct('(') => i = skip_group(&toks, i, '(', ')'),
            _ => i += 1,
        }
        is_extern = false;
    }
    // Like a cubin's `.nv.constant3`: the module's user constant bank.
    for k in &mut ptx.kernels {
        k.const_size_bytes = clamp_u32(const_bytes);
    }
    Ok(ptx)
}

/// Parse an `.entry` starting at its name; returns the kernel (None for a prototype) and the
/// index after it.
fn parse_entry(toks: &[Tok<'_>], start: usize) -> Result<(Option<KernelInfo>, usize), ImageError> {
    let Some(Tok::Word(name)) = toks.get(start) else {
        return Err(malformed("PTX .entry without a name"));
    };
    let mut k = KernelInfo {
        name: name.to_string(),
        params: vec![],
        param_bytes: 0,
        layout_known: true,
        max_threads_per_block: 1024,
        num_regs: 0,
        shared_size_bytes: 0,
        const_size_bytes: 0,
        local_size_bytes: 0,
    };
    let mut i = start + 1;
    if toks.get(i) == Some(&Tok::Punct('(')) {
        let close = skip_group(toks, i, '(', ')');
        let inner = toks.get(i + 1..close.saturating_sub(1)).unwrap_or(&[]);
        let mut end: u64 = 0;
        let decls = inner
            .split(|t| *t == Tok::Punct(','))
            .filter(|_| !inner.is_empty());
        for (ordinal, decl_toks) in decls.enumerate() {
            let decl_toks = match decl_toks.first() {
                Some(Tok::Word(".param")) => decl_toks.get(1..).unwrap_or(&[]),
                _ => return Err(malformed(format!("PTX {name}: parameter is not a .param"))),
            };
            let d = parse_decl(decl_toks, name)?;
            let offset = align_up(end, d.align).ok_or_else(|| malformed("PTX param overflow"))?;
            end = offset
                .checked_add(d.size)
                .ok_or_else(|| malformed("PTX param overflow"))?;
            k.params.push(ParamLayout {
                ordinal: clamp_u32(ordinal as u64),
                offset: clamp_u32(offset),
                size: clamp_u32(d.size),
            });
        }
        k.param_bytes = clamp_u32(end);
        i = close;
    }
    // Performance directives up to the body (or `;` for a prototype).
    let mut max_threads = None;
    let mut reqntid = None;
    while let Some(t) = toks.get(i) {
        match t {
            Tok::Punct(';') => return Ok((None, i + 1)),
            Tok::Punct('{') => break,
            Tok::Word(d @ (".maxntid" | ".reqntid")) => {
                let mut n: u64 = 1;
                let mut j = i + 1;
                while let Some(Tok::Word(w)) = toks.get(j) {
                    n = n.saturating_mul(parse_int(w).unwrap_or(1).max(1));
                    j += 1;
                    if toks.get(j) != Some(&Tok::Punct(',')) {
                        break;
                    }
                    j += 1;
                }
                if *d == ".maxntid" {
                    max_threads = Some(clamp_u32(n));
                } else {
                    reqntid = Some(clamp_u32(n));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(n) = max_threads.or(reqntid) {
        k.max_threads_per_block = n;
    }
    // Body: static `.shared` variables (not `.extern .shared`, which is dynamic).
    let body_end = skip_group(toks, i, '{', '}');
    let mut shared: u64 = 0;
    let mut j = i;
    while j < body_end {
        if toks.get(j) == Some(&Tok::Word(".shared"))
            && !matches!(toks.get(j.wrapping_sub(1)), Some(Tok::Word(".extern")))
        {
            let end = toks
                .iter()
                .skip(j)
                .position(|t| *t == Tok::Punct(';'))
                .map_or(body_end, |n| j + n);
            // Only declarations (`.shared .align 4 .b8 x[..];`), not `ld.shared` (one word).
            if let Ok(d) = parse_decl(toks.get(j + 1..end).unwrap_or(&[]), name) {
                shared = align_up(shared, d.align)
                    .unwrap_or(u64::MAX)
                    .saturating_add(d.size);
            }
            j = end;
        }
        j += 1;
    }
    k.shared_size_bytes = clamp_u32(shared);
    Ok((Some(k), body_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec_sval(attr: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![EIFMT_SVAL, attr];
        v.extend_from_slice(&(data.len() as u16).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn eiattr_records() {
        let mut sec = rec_sval(
            EIATTR_KPARAM_INFO,
            &[0, 0, 0, 0, 3, 0, 0x30, 0, 0x00, 0xf0, 0x09, 0],
        );
        sec.extend_from_slice(&[EIFMT_HVAL, EIATTR_CBANK_PARAM_SIZE, 0x40, 0]);
        sec.extend_from_slice(&[EIFMT_BVAL, 0x4c, 1, 0]);
        sec.extend_from_slice(&[EIFMT_NVAL, 0x01, 0, 0]);
        let a = parse_eiattrs(&sec, "t").unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0].attr, EIATTR_KPARAM_INFO);
        assert_eq!((read_u32(a[0].sval, 8).unwrap() >> 18) & 0x3fff, 2);
        assert_eq!(a[1].hval, 0x40);
        assert_eq!(a[2].hval, 1);
        // truncated SVAL and unknown format are errors, not panics
        assert!(parse_eiattrs(&sec[..6], "t").is_err());
        assert!(parse_eiattrs(&[9, 9, 9, 9], "t").is_err());
        assert!(parse_eiattrs(&[4, 4], "t").is_err());
    }

    #[test]
    fn sm_rules() {
        assert!(sm_usable(90, false, 90));
        assert!(sm_usable(80, false, 86));
        assert!(!sm_usable(86, false, 80));
        assert!(!sm_usable(80, false, 90));
        assert!(!sm_usable(90, true, 91));
        assert!(sm_usable(90, true, 90));
        assert!(sm_usable(100, false, 103));
        assert!(!sm_usable(100, false, 120));
        assert_eq!(cubin_sm(8, 0x0600_5a04), 90);
        assert_eq!(cubin_sm(7, 0x005a_055a), 90);
    }

    #[test]
    fn ptx_layout_rules() {
        let ptx = r#"
            .version 8.0
            .target sm_75 // comment with .entry fake(
            .address_size 64
            /* .entry also_fake( */
            .file 1 "/tmp//x.cu"
            .extern .global .align 4 .u32 elsewhere;
            .visible .global .align 8 .v2 .f32 pair[3] = { 1.0, 2.0 };
            .const .align 4 .b8 tbl[40];
            .func (.param .b32 r) helper(.param .b32 a) { ret; }
            .visible .entry k(
                .param .u8 k_param_0,
                .param .u64 .ptr .global .align 16 k_param_1,
                .param .align 16 .b8 k_param_2[20],
                .param .v4 .u32 k_param_3,
                .param .u16 k_param_4
            )
            .reqntid 32, 2, 1
            {
                .shared .align 8 .b8 buf[10];
                .shared .align 4 .u32 one;
                .extern .shared .align 16 .b8 dyn[];
                ld.shared.u32 %r1, [one];
                { .reg .b32 %x; }
                ret;
            }
            .extern .entry proto(.param .u32 a);
            .entry noparams { ret; }
        "#;
        let p = parse_ptx(ptx).unwrap();
        assert_eq!(p.target_sm, Some(75));
        assert_eq!(p.kernels.len(), 2);
        let k = &p.kernels[0];
        assert_eq!(k.name, "k");
        let got: Vec<_> = k
            .params
            .iter()
            .map(|p| (p.ordinal, p.offset, p.size))
            .collect();
        assert_eq!(
            got,
            vec![(0, 0, 1), (1, 8, 8), (2, 16, 20), (3, 48, 16), (4, 64, 2)]
        );
        assert_eq!(k.param_bytes, 66);
        assert_eq!(k.max_threads_per_block, 64);
        assert_eq!(k.shared_size_bytes, 16);
        assert_eq!(k.const_size_bytes, 40);
        assert_eq!(p.kernels[1].name, "noparams");
        assert!(p.kernels[1].params.is_empty());
        let g: Vec<_> = p
            .globals
            .iter()
            .map(|g| (g.name.as_str(), g.size))
            .collect();
        assert_eq!(g, vec![("pair", 24), ("tbl", 40)]);
    }

    #[test]
    fn container_len_and_wrapper() {
        let mut h = Vec::new();
        h.extend_from_slice(&FATBIN_MAGIC.to_le_bytes());
        h.extend_from_slice(&[1, 0, 16, 0]);
        h.extend_from_slice(&100u64.to_le_bytes());
        assert_eq!(fatbin_container_len(&h).unwrap(), 116);
        assert!(fatbin_container_len(&h[..10]).is_err());
        let mut w = FATBIN_WRAPPER_MAGIC.to_le_bytes().to_vec();
        w.extend_from_slice(&1u32.to_le_bytes());
        w.extend_from_slice(&0x1234u64.to_le_bytes());
        w.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(FatbinWrapper::parse(&w).unwrap().data_ptr, 0x1234);
        assert!(matches!(parse_image(&w, 90), Err(ImageError::Malformed(_))));
    }

    #[test]
    fn not_an_image() {
        assert_eq!(parse_image(b"", 90), Err(ImageError::NotAnImage));
        assert_eq!(parse_image(b"hello world", 90), Err(ImageError::NotAnImage));
        assert_eq!(parse_image(&[0xff; 64], 90), Err(ImageError::NotAnImage));
        assert_eq!(list_entries(b"nope"), Err(ImageError::NotAnImage));
    }

    #[test]
    fn bogus_compressed_sizes_are_rejected() {
        let info = EntryInfo {
            container: 0,
            offset: 0,
            kind: EntryKind::Elf,
            sm: 90,
            flags: FLAG_COMPRESSED_LZ4,
            compression: Compression::Lz4,
            arch_specific: false,
            stored_size: 4,
            uncompressed_size: u64::MAX,
            bundled: false,
        };
        assert!(matches!(
            decompress(&[1, 2, 3, 4], &info),
            Err(ImageError::Compressed { .. })
        ));
        let info = EntryInfo {
            uncompressed_size: 1 << 20,
            ..info
        };
        assert!(matches!(
            decompress(&[1, 2, 3, 4], &info),
            Err(ImageError::Compressed { .. })
        ));
        let info = EntryInfo {
            compression: Compression::Zstd,
            uncompressed_size: 100,
            ..info
        };
        assert!(matches!(
            decompress(&[1, 2, 3, 4], &info),
            Err(ImageError::Compressed { .. })
        ));
    }
}
