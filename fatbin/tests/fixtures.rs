//! Checks the parser against real nvcc output (see tests/fixtures/README.md).

use object::{Object, ObjectSection};
use vgpu_fatbin::{
    host_fatbin_section, list_entries, parse_image, Compression, EntryKind, FatbinWrapper,
    ImageError, KernelInfo, ModuleImage, ParamLayout, FATBIN_MAGIC, FATBIN_WRAPPER_MAGIC,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const VECADD: &str = "_Z6vecAddPKfS0_Pfi";
const ODD: &str = "_Z10odd_params6ParamsPKixsPi";
const SHARED: &str = "_Z13shared_reducePKfPf";
const NOPARAMS: &str = "_Z9no_paramsv";
const HELPER: &str = "_Z12calls_helperPii";
const PLAIN: &str = "plain_c_kernel";

fn layout(k: &KernelInfo) -> Vec<(u32, u32, u32)> {
    k.params
        .iter()
        .map(|p: &ParamLayout| (p.ordinal, p.offset, p.size))
        .collect()
}

fn kernel<'a>(m: &'a ModuleImage, name: &str) -> &'a KernelInfo {
    m.kernel(name)
        .unwrap_or_else(|| panic!("kernel {name} missing from {m:#?}"))
}

/// The layouts every image built from kernels.cu must show (checked against `cuobjdump -elf`).
fn check_kernels_cu(m: &ModuleImage) {
    let mut names: Vec<_> = m.kernels.iter().map(|k| k.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, [ODD, HELPER, SHARED, VECADD, NOPARAMS, PLAIN]);

    let k = kernel(m, VECADD);
    assert_eq!(layout(k), [(0, 0, 8), (1, 8, 8), (2, 16, 8), (3, 24, 4)]);
    assert_eq!(k.param_bytes, 28);
    assert_eq!(k.max_threads_per_block, 1024);

    let k = kernel(m, ODD);
    assert_eq!(
        layout(k),
        [
            (0, 0x0, 0x20),
            (1, 0x20, 8),
            (2, 0x28, 8),
            (3, 0x30, 2),
            (4, 0x38, 8)
        ]
    );
    assert_eq!(k.param_bytes, 0x40);
    assert!(k.layout_known);

    let k = kernel(m, SHARED);
    assert_eq!(layout(k), [(0, 0, 8), (1, 8, 8)]);
    assert_eq!(k.param_bytes, 16);
    assert_eq!(k.max_threads_per_block, 256); // __launch_bounds__(256)
    assert!(k.shared_size_bytes >= 1064, "{k:?}"); // float[256] + int[10]

    let k = kernel(m, NOPARAMS);
    assert!(k.params.is_empty() && k.layout_known);
    assert_eq!(k.param_bytes, 0);
    assert_eq!(k.shared_size_bytes, 0);

    let k = kernel(m, HELPER);
    assert_eq!(layout(k), [(0, 0, 8), (1, 8, 4)]);
    assert_eq!((k.param_bytes, k.max_threads_per_block), (12, 128));

    let k = kernel(m, PLAIN);
    assert_eq!((layout(k), k.param_bytes), (vec![(0, 0, 4)], 4));

    for k in &m.kernels {
        assert_eq!(k.const_size_bytes, 64, "{k:?}"); // __constant__ int c_coeffs[16]
        assert_eq!(k.local_size_bytes, 0, "{k:?}");
    }
    let mut globals: Vec<_> = m
        .globals
        .iter()
        .map(|g| (g.name.as_str(), g.size))
        .collect();
    globals.sort_unstable();
    assert_eq!(
        globals,
        [("c_coeffs", 64), ("g_counter", 4), ("g_table", 148)]
    );
}

/// Cubin-only facts: register counts are known and sm_90 shared includes the reserved 1 KiB.
fn check_cubin_facts(m: &ModuleImage) {
    for k in &m.kernels {
        assert!(k.num_regs > 0 && k.num_regs <= 255, "{k:?}");
    }
    let shared = kernel(m, SHARED).shared_size_bytes;
    match m.arch {
        Some(80) => assert_eq!(shared, 1064),
        Some(90) => assert_eq!(shared, 1064 + 1024),
        a => panic!("unexpected arch {a:?}"),
    }
}

#[test]
fn plain_fatbin_layouts_and_arch_choice() {
    let bytes = fixture("kernels.fatbin");
    let entries = list_entries(&bytes).unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.container, e.kind, e.sm, e.flags))
        .collect();
    assert_eq!(
        summary,
        [
            (0, EntryKind::Elf, 80, 0x11),
            (0, EntryKind::Elf, 90, 0x11),
            (0, EntryKind::Ptx, 90, 0x11)
        ]
    );
    assert!(entries.iter().all(|e| e.compression == Compression::None));

    for (sm, arch) in [
        (90, Some(90)),
        (80, Some(80)),
        (86, Some(80)),
        (89, Some(80)),
        (100, None),
    ] {
        let m = parse_image(&bytes, sm).unwrap();
        assert_eq!(m.arch, arch, "sm {sm}");
        assert_eq!(m.used_ptx, arch.is_none());
        check_kernels_cu(&m);
        if arch.is_some() {
            check_cubin_facts(&m);
        }
    }
    assert_eq!(
        parse_image(&bytes, 75),
        Err(ImageError::NoBinaryForArch {
            wanted: 75,
            available: vec![80, 90]
        })
    );
}

#[test]
fn bare_cubins() {
    for name in ["kernels.sm_90.cubin", "kernels.sm_90.cuda12.cubin"] {
        let bytes = fixture(name);
        let m = parse_image(&bytes, 90).unwrap();
        assert_eq!(m.arch, Some(90), "{name}");
        check_kernels_cu(&m);
        check_cubin_facts(&m);
        // Same as the sm_90 cubin inside the fatbin.
        assert_eq!(
            m,
            parse_image(&fixture("kernels.fatbin"), 90).unwrap(),
            "{name}"
        );
        for wrong in [80, 89, 100] {
            assert_eq!(
                parse_image(&bytes, wrong),
                Err(ImageError::NoBinaryForArch {
                    wanted: wrong,
                    available: vec![90]
                })
            );
        }
        assert!(list_entries(&bytes).is_err());
    }
}

#[test]
fn ptx_text_matches_cubin_layouts() {
    let text = fixture("kernels.ptx");
    let m = parse_image(&text, 90).unwrap();
    assert_eq!((m.arch, m.used_ptx), (None, true));
    check_kernels_cu(&m);
    assert_eq!(kernel(&m, SHARED).shared_size_bytes, 1064);
    // NUL-terminated, as cuModuleLoadData gets it.
    let mut nul = text.clone();
    nul.extend_from_slice(b"\0garbage after the terminator");
    assert_eq!(parse_image(&nul, 90), Ok(m.clone()));
    // Every kernel's parameter layout equals what ptxas wrote into the cubin.
    let cubin = parse_image(&fixture("kernels.sm_90.cubin"), 90).unwrap();
    for k in &cubin.kernels {
        let p = kernel(&m, &k.name);
        assert_eq!(
            (&p.params, p.param_bytes),
            (&k.params, k.param_bytes),
            "{}",
            k.name
        );
        assert_eq!(
            p.max_threads_per_block, k.max_threads_per_block,
            "{}",
            k.name
        );
    }
    let shape = |g: &[vgpu_fatbin::GlobalInfo]| {
        g.iter()
            .map(|g| (g.name.clone(), g.size))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&m.globals), shape(&cubin.globals));
    // The cubin carries initial values (`g_table[37] = {1.0f}`); PTX initialisers are not read.
    let table = cubin.global("g_table").unwrap();
    assert_eq!(table.init.len(), 148);
    assert_eq!(&table.init[..8], &[0, 0, 0x80, 0x3f, 0, 0, 0, 0]);
    assert!(cubin.global("g_counter").unwrap().init.is_empty());
    // .target sm_90 PTX cannot be JIT-compiled for sm_80.
    assert_eq!(
        parse_image(&text, 80),
        Err(ImageError::NoBinaryForArch {
            wanted: 80,
            available: vec![90]
        })
    );
}

#[test]
fn reqntid_from_cubin_and_ptx() {
    for name in ["reqntid.sm_90.cubin", "reqntid.ptx"] {
        let m = parse_image(&fixture(name), 90).unwrap();
        let k = kernel(&m, "fixed_block");
        assert_eq!(layout(k), [(0, 0, 8), (1, 8, 4)], "{name}");
        assert_eq!(k.param_bytes, 12, "{name}");
        assert_eq!(k.max_threads_per_block, 128, "{name}"); // .reqntid 64, 2, 1
    }
}

#[test]
fn compressed_fatbins_parse_like_the_plain_one() {
    let plain = fixture("kernels.fatbin");
    for (name, scheme, flags) in [
        ("kernels.zstd.fatbin", Compression::Zstd, 0x8011),
        ("kernels.lz4.fatbin", Compression::Lz4, 0x2011),
    ] {
        let bytes = fixture(name);
        let entries = list_entries(&bytes).unwrap();
        assert_eq!(entries.len(), 3);
        for e in &entries {
            assert_eq!((e.compression, e.flags), (scheme, flags), "{name} {e:?}");
            assert!(e.stored_size < e.uncompressed_size, "{name} {e:?}");
        }
        let sizes: Vec<_> = entries.iter().map(|e| e.uncompressed_size).collect();
        assert_eq!(sizes, [14392, 15168, 6852], "{name}");
        for sm in [80, 86, 90, 100] {
            assert_eq!(
                parse_image(&bytes, sm),
                parse_image(&plain, sm),
                "{name} sm {sm}"
            );
        }
    }
}

#[test]
fn concat_bundle_is_expanded() {
    let bytes = fixture("kernels.concat.fatbin");
    let entries = list_entries(&bytes).unwrap();
    let summary: Vec<_> = entries.iter().map(|e| (e.kind, e.sm, e.bundled)).collect();
    assert_eq!(
        summary,
        [
            (EntryKind::Ptx, 90, false),
            (EntryKind::Elf, 80, true),
            (EntryKind::Elf, 90, true)
        ]
    );
    let plain = fixture("kernels.fatbin");
    for sm in [80, 90, 100] {
        assert_eq!(parse_image(&bytes, sm), parse_image(&plain, sm), "sm {sm}");
    }
}

#[test]
fn arch_specific_cubin_only_on_exact_sm() {
    let bytes = fixture("kernels.sm_90a.fatbin");
    let entries = list_entries(&bytes).unwrap();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].arch_specific);
    assert_eq!(entries[0].flags, 0x10_8011);
    check_kernels_cu(&parse_image(&bytes, 90).unwrap());
    assert!(matches!(
        parse_image(&bytes, 100),
        Err(ImageError::NoBinaryForArch { .. })
    ));
}

#[test]
fn all_containers_are_walked() {
    let bytes = fixture("kernels.2containers.fatbin");
    let entries = list_entries(&bytes).unwrap();
    let summary: Vec<_> = entries.iter().map(|e| (e.container, e.sm)).collect();
    assert_eq!(summary, [(0, 80), (1, 90)]);
    // sm_90 code lives in the second container only.
    let m = parse_image(&bytes, 90).unwrap();
    assert_eq!(m.arch, Some(90));
    check_kernels_cu(&m);
    check_cubin_facts(&m);
    let m = parse_image(&bytes, 86).unwrap();
    assert_eq!(m.arch, Some(80));
    check_kernels_cu(&m);
    assert_eq!(
        parse_image(&bytes, 75),
        Err(ImageError::NoBinaryForArch {
            wanted: 75,
            available: vec![80, 90]
        })
    );
    // Zero padding between containers (as a linker leaves it) is skipped.
    let first_len = vgpu_fatbin::fatbin_container_len(&bytes).unwrap();
    let mut padded = bytes[..first_len].to_vec();
    padded.extend_from_slice(&[0; 24]);
    padded.extend_from_slice(&bytes[first_len..]);
    padded.extend_from_slice(&[0; 8]);
    assert_eq!(list_entries(&padded).unwrap().len(), 2);
    assert_eq!(parse_image(&padded, 90), parse_image(&bytes, 90));
}

#[test]
fn host_shared_object_nv_fatbin() {
    let so = fixture("libtwo.so");
    let section = host_fatbin_section(&so).unwrap();
    let entries = list_entries(&section).unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.container, e.sm, e.compression))
        .collect();
    assert_eq!(
        summary,
        [(0, 80, Compression::Zstd), (1, 90, Compression::Zstd)]
    );

    // sm_90: only extra.cu's container has usable code.
    let m = parse_image(&section, 90).unwrap();
    assert_eq!(m.arch, Some(90));
    assert_eq!(m.kernels.len(), 1);
    let k = kernel(&m, "_Z12extra_kernelPdhf");
    assert_eq!(layout(k), [(0, 0, 8), (1, 8, 1), (2, 12, 4)]);
    assert_eq!(k.param_bytes, 16);
    // sm_80: only kernels.cu's container.
    let m = parse_image(&section, 80).unwrap();
    assert_eq!(m.arch, Some(80));
    check_kernels_cu(&m);
    check_cubin_facts(&m);

    // Each registration wrapper in .nvFatBinSegment points at one container of .nv_fatbin.
    let file = object::File::parse(&*so).unwrap();
    let fatbin_addr = file.section_by_name(".nv_fatbin").unwrap().address();
    let seg = file.section_by_name(".nvFatBinSegment").unwrap();
    let seg = seg.data().unwrap();
    let wrappers: Vec<_> = seg
        .chunks(24)
        .map(|w| FatbinWrapper::parse(w).unwrap())
        .collect();
    assert_eq!(wrappers.len(), 2);
    let second = vgpu_fatbin::fatbin_container_len(&section).unwrap() as u64;
    assert_eq!(wrappers[0].data_ptr, fatbin_addr);
    assert_eq!(wrappers[1].data_ptr, fatbin_addr + second);
    assert!(wrappers.iter().all(|w| w.version == 1));
    assert_eq!(
        u32::from_le_bytes(seg[..4].try_into().unwrap()),
        FATBIN_WRAPPER_MAGIC
    );
    // The wrapper itself is not an image.
    assert!(matches!(
        parse_image(&seg[..24], 90),
        Err(ImageError::Malformed(_))
    ));

    // A host ELF without the section, and non-ELF input.
    assert!(matches!(
        host_fatbin_section(&fixture("kernels.sm_90.cubin")),
        Err(ImageError::Malformed(_))
    ));
    assert_eq!(host_fatbin_section(b"not elf"), Err(ImageError::NotAnImage));
    // A host ELF is not a module image.
    assert!(parse_image(&so, 90).is_err());
}

/// Offset of the `n`th entry header's field in a single-container fatbin.
fn entry_field(bytes: &[u8], n: usize, field: usize) -> usize {
    let e = list_entries(bytes).unwrap();
    e[n].offset + field
}

#[test]
fn unknown_or_broken_compression_is_reported() {
    // Both LZ4 and ZSTD bits: no known scheme.
    let mut bytes = fixture("kernels.zstd.fatbin");
    let flags_at = entry_field(&bytes, 0, 40);
    bytes[flags_at + 1] |= 0x20; // 0x8011 -> 0xa011
    assert!(matches!(
        parse_image(&bytes, 80),
        Err(ImageError::Compressed { flags: 0xa011, .. })
    ));
    assert_eq!(
        list_entries(&bytes).unwrap()[0].compression,
        Compression::Unknown
    );
    // sm_90 does not need that entry.
    assert!(parse_image(&bytes, 90).is_ok());

    // An uncompressed-looking entry that declares an uncompressed size.
    let mut bytes = fixture("kernels.fatbin");
    let size_at = entry_field(&bytes, 1, 56);
    bytes[size_at] = 1;
    assert!(matches!(
        parse_image(&bytes, 90),
        Err(ImageError::Compressed { flags: 0x11, .. })
    ));

    // Damaged compressed streams.
    for name in ["kernels.zstd.fatbin", "kernels.lz4.fatbin"] {
        let mut bytes = fixture(name);
        let payload = entry_field(&bytes, 1, 64);
        for b in &mut bytes[payload..payload + 16] {
            *b ^= 0x5a;
        }
        match parse_image(&bytes, 90) {
            Err(ImageError::Compressed { .. } | ImageError::Malformed(_)) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn kernel_without_nv_info_has_unknown_layout() {
    let mut bytes = fixture("kernels.sm_90.cubin");
    let needle = b".nv.info._Z9no_paramsv\0";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at + 3] = b'X'; // rename the section: `.nvXinfo._Z9no_paramsv`
    let m = parse_image(&bytes, 90).unwrap();
    let k = kernel(&m, NOPARAMS);
    assert!(!k.layout_known);
    assert!(k.params.is_empty());
    assert_eq!(k.max_threads_per_block, 1024);
    assert!(k.num_regs > 0); // still from the module-wide .nv.info
    assert!(kernel(&m, VECADD).layout_known);
}

#[test]
fn not_images() {
    assert_eq!(parse_image(b"", 90), Err(ImageError::NotAnImage));
    assert!(matches!(
        parse_image(b"\x7fELF", 90),
        Err(ImageError::Malformed(_))
    ));
    assert_eq!(
        parse_image(b"just some text", 90),
        Err(ImageError::NotAnImage)
    );
    let mut magic_only = FATBIN_MAGIC.to_le_bytes().to_vec();
    assert!(matches!(
        parse_image(&magic_only, 90),
        Err(ImageError::Malformed(_))
    ));
    magic_only.extend_from_slice(&[1, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        parse_image(&magic_only, 90),
        Err(ImageError::NoBinaryForArch {
            wanted: 90,
            available: vec![]
        })
    );
}

/// PTX runs on every later architecture (it is compiled there), SASS only within its major
/// version: a device of compute capability 10.0 or 12.0 gets the compute_90 PTX, 8.6 none.
#[test]
fn ptx_for_later_architectures() {
    let image = fixture("kernels.fatbin");
    for sm in [90, 100, 120] {
        let ptx = vgpu_fatbin::ptx_for(&image, sm).unwrap();
        assert_eq!(ptx.len(), 1, "sm {sm}");
        assert!(ptx[0].contains(".target sm_90"), "sm {sm}");
    }
    assert!(vgpu_fatbin::ptx_for(&image, 86).unwrap().is_empty());
    // An arch-specific image is for its own architecture only.
    assert!(vgpu_fatbin::ptx_for(&fixture("kernels.sm_90a.fatbin"), 100)
        .unwrap()
        .is_empty());
    // PTX text is itself; a cubin carries none.
    let text = fixture("kernels.ptx");
    assert_eq!(vgpu_fatbin::ptx_for(&text, 90).unwrap().len(), 1);
    assert!(vgpu_fatbin::ptx_for(&fixture("kernels.sm_90.cubin"), 90)
        .unwrap()
        .is_empty());
}
