//! Fatbin containers (magic `0xBA55ED50`): container and entry headers, `fatbinary -concat`
//! bundles, LZ4 / zstd decompression of entries, the `__fatBinC_Wrapper_t` handed to
//! `__cudaRegisterFatBinary`, the `.nv_fatbin` section of a host ELF, and [`parse_image`], which
//! picks the cubin or PTX to read from each container (or reads a bare cubin or PTX image).

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeSet, HashSet};
use std::rc::Rc;

use object::{Object, ObjectSection};

use crate::cubin::{parse_cubin, sm_usable};
use crate::error::{malformed, ImageError};
use crate::ptx::{parse_ptx, ptx_text};
use crate::read::{read_u16, read_u32, read_u64, slice_at};
use crate::ModuleImage;

/// Magic number at the start of a fatbin container (`fatBinaryHeader`).
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// Magic number of the `__fatBinC_Wrapper_t` struct passed to `__cudaRegisterFatBinary`.
pub const FATBIN_WRAPPER_MAGIC: u32 = 0x4662_43B1;
/// Largest uncompressed entry this module will allocate for.
pub const MAX_UNCOMPRESSED_BYTES: u64 = 1 << 30;
/// Most bytes decompressed, or copied out of bundles, while reading one image: a small
/// image could otherwise expand many times over (overlapping bundle images, many
/// compressed entries), and every such byte is allocated.
pub const MAX_IMAGE_INFLATION: u64 = 1 << 30;

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
// Fatbin walking.

/// What is left of [`MAX_IMAGE_INFLATION`] for the image being read.
#[derive(Debug)]
struct Budget(Cell<u64>);

impl Budget {
    fn new() -> Rc<Budget> {
        Rc::new(Budget(Cell::new(MAX_IMAGE_INFLATION)))
    }

    /// Takes `n` bytes, or fails when the image has used up its budget.
    fn take(&self, n: u64) -> Result<(), ImageError> {
        let left = self.0.get();
        if n > left {
            return Err(ImageError::TooLarge(format!(
                "it expands past {MAX_IMAGE_INFLATION} bytes when decompressed"
            )));
        }
        self.0.set(left - n);
        Ok(())
    }
}

/// `n` zero bytes, allocated fallibly.
fn zeroed(n: u64) -> Result<Vec<u8>, ImageError> {
    let n = usize::try_from(n).map_err(|_| too_large(n as usize))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| too_large(n))?;
    v.resize(n, 0);
    Ok(v)
}

fn too_large(n: usize) -> ImageError {
    ImageError::TooLarge(format!("cannot allocate {n} bytes"))
}

/// One entry with its (still possibly compressed) payload.
struct RawEntry<'a> {
    info: EntryInfo,
    /// Exact stored bytes: for compressed entries only the compressed stream.
    stored: Cow<'a, [u8]>,
    /// The image's budget, shared by all its entries.
    budget: Rc<Budget>,
}

impl RawEntry<'_> {
    /// The uncompressed payload.
    fn payload(&self) -> Result<Cow<'_, [u8]>, ImageError> {
        decompress(&self.stored, &self.info, &self.budget)
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

fn decompress<'b>(
    stored: &'b [u8],
    info: &EntryInfo,
    budget: &Budget,
) -> Result<Cow<'b, [u8]>, ImageError> {
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
            budget.take(want)?;
            let mut out = zeroed(want)?;
            let n = lz4_flex::block::decompress_into(stored, &mut out)
                .map_err(|e| err(format!("LZ4 block: {e}")))?;
            out.truncate(n);
            Ok(Cow::Owned(out))
        }
        Compression::Zstd => {
            let cap = want.max(1);
            budget.take(cap)?;
            let mut out = zeroed(cap)?;
            let n = zstd::bulk::decompress_to_buffer(stored, &mut out)
                .map_err(|e| err(format!("zstd: {e}")))?;
            out.truncate(n);
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
    let budget = Budget::new();
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
        walk_container(body, body_base, container, &budget, &mut entries)?;
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
    budget: &Rc<Budget>,
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
            budget: budget.clone(),
        };
        if h.kind == ENTRY_KIND_BUNDLE {
            let hdr = rest.get(..hs).unwrap_or(&[]);
            match expand_bundle(&entry, hdr, h.ext_offset) {
                Ok(subs) => out.extend(subs),
                // An image past its budget is refused as a whole.
                Err(e @ ImageError::TooLarge(_)) => return Err(e),
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
        bundle.budget.take(stored.len() as u64)?;
        let mut copy = Vec::new();
        copy.try_reserve_exact(stored.len())
            .map_err(|_| too_large(stored.len()))?;
        copy.extend_from_slice(stored);
        subs.push(RawEntry {
            info,
            stored: Cow::Owned(copy),
            budget: bundle.budget.clone(),
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

/// Whether PTX for virtual architecture `compute_XX` (`ptx_sm`) can be compiled for a
/// device of compute capability `sm`: PTX runs on every later architecture (unlike SASS,
/// which needs the same major version), except the arch-specific `compute_XXa`, which
/// runs only on XX.
pub(crate) fn ptx_usable(ptx_sm: u32, arch_specific: bool, sm: u32) -> bool {
    if arch_specific {
        ptx_sm == sm
    } else {
        ptx_sm <= sm
    }
}

/// The PTX a device of compute capability `sm` runs from an image: for each container of a
/// fatbin, the text of its PTX entry with the highest `compute_XX` not above `sm` (an
/// arch-specific `compute_XXa` only when XX is `sm`); for an image that is PTX text, that
/// text; nothing for a bare cubin. Containers without usable PTX contribute nothing.
pub fn ptx_for(bytes: &[u8], sm: u32) -> Result<Vec<String>, ImageError> {
    if read_u32(bytes, 0) == Some(FATBIN_MAGIC) {
        let entries = walk(bytes)?;
        let containers: BTreeSet<usize> = entries.iter().map(|e| e.info.container).collect();
        let mut out = Vec::new();
        for c in containers {
            let best = entries
                .iter()
                .filter(|e| e.info.container == c && e.info.kind == EntryKind::Ptx)
                .filter(|e| ptx_usable(e.info.sm, e.info.arch_specific, sm))
                .max_by_key(|e| (e.info.sm, e.info.arch_specific));
            if let Some(e) = best {
                let payload = e.payload()?;
                let text =
                    ptx_text(&payload).ok_or_else(|| malformed("PTX entry is not PTX text"))?;
                out.push(text.to_string());
            }
        }
        return Ok(out);
    }
    if bytes.starts_with(b"\x7fELF") {
        return Ok(Vec::new());
    }
    Ok(ptx_text(bytes)
        .map(|t| vec![t.to_string()])
        .unwrap_or_default())
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
            .filter(|e| ptx_usable(e.info.sm, e.info.arch_specific, sm))
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

#[cfg(test)]
mod tests {
    use super::*;

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
            decompress(&[1, 2, 3, 4], &info, &Budget::new()),
            Err(ImageError::Compressed { .. })
        ));
        let info = EntryInfo {
            uncompressed_size: 1 << 20,
            ..info
        };
        assert!(matches!(
            decompress(&[1, 2, 3, 4], &info, &Budget::new()),
            Err(ImageError::Compressed { .. })
        ));
        let info = EntryInfo {
            compression: Compression::Zstd,
            uncompressed_size: 100,
            ..info
        };
        assert!(matches!(
            decompress(&[1, 2, 3, 4], &info, &Budget::new()),
            Err(ImageError::Compressed { .. })
        ));
    }
}
