//! ELF cubins (`EM_CUDA`): the sm a cubin was built for, its kernels (`STO_CUDA_ENTRY`
//! functions) with their parameter layouts, limits and register counts from the `EIATTR_*`
//! records of `.nv.info` / `.nv.info.<name>`, static shared memory, and its device globals.

use std::collections::{BTreeMap, HashMap};

use object::read::elf::{ElfFile64, FileHeader, SectionHeader, Sym};
use object::{Endianness, Object, ObjectSection, ObjectSymbol};

use crate::error::{malformed, ImageError};
use crate::read::{clamp_u32, read_u16, read_u32, read_u8, slice_at};
use crate::{GlobalInfo, KernelInfo, ParamLayout};

/// ELF `e_machine` of CUDA cubins.
pub const EM_CUDA: u16 = 190;

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

pub(crate) struct Cubin {
    pub(crate) sm: u32,
    pub(crate) kernels: Vec<KernelInfo>,
    pub(crate) globals: Vec<GlobalInfo>,
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

pub(crate) fn parse_cubin(data: &[u8]) -> Result<Cubin, ImageError> {
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

/// Can SASS built for `cubin_sm` run on `wanted`? Same major, minor not above; exact for `a`.
pub(crate) fn sm_usable(cubin_sm: u32, arch_specific: bool, wanted: u32) -> bool {
    if arch_specific {
        cubin_sm == wanted
    } else {
        cubin_sm / 10 == wanted / 10 && cubin_sm <= wanted
    }
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
}
