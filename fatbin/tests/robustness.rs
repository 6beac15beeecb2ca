//! Truncated and corrupted images must give errors (or some result), never a panic.

use proptest::prelude::*;
use vgpu_fatbin::{host_fatbin_section, list_entries, parse_image};

const FIXTURES: &[&str] = &[
    "kernels.fatbin",
    "kernels.zstd.fatbin",
    "kernels.lz4.fatbin",
    "kernels.concat.fatbin",
    "kernels.2containers.fatbin",
    "kernels.sm_90a.fatbin",
    "kernels.sm_90.cubin",
    "kernels.sm_90.cuda12.cubin",
    "kernels.ptx",
    "reqntid.sm_90.cubin",
    "reqntid.ptx",
    "libtwo.so",
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Run every entry point on `bytes`; the results do not matter, only that nothing panics.
fn exercise(bytes: &[u8]) {
    // Only a fatbin's selection depends on the sm; one call is enough for the rest.
    let sms: &[u32] = if bytes.starts_with(b"\x50\xed\x55\xba") {
        &[80, 90, 100]
    } else {
        &[90]
    };
    for &sm in sms {
        let _ = parse_image(bytes, sm);
    }
    let _ = list_entries(bytes);
    if let Ok(section) = host_fatbin_section(bytes) {
        let _ = parse_image(&section, 90);
        let _ = list_entries(&section);
    }
}

fn exercise_with_context(bytes: &[u8], what: impl Fn() -> String) {
    if std::panic::catch_unwind(|| exercise(bytes)).is_err() {
        panic!("panicked on {}", what());
    }
}

/// Offsets worth mutating densely: the start of the file, every entry header, the ELF section
/// header table of a bare cubin.
fn hot_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut v: Vec<usize> = (0..bytes.len().min(256)).collect();
    if let Ok(entries) = list_entries(bytes) {
        for e in entries {
            v.extend(e.offset..(e.offset + 96).min(bytes.len()));
        }
    }
    if bytes.starts_with(b"\x7fELF") && bytes.len() > 0x40 {
        let shoff = u64::from_le_bytes(bytes[0x28..0x30].try_into().unwrap()) as usize;
        let end = bytes.len().min(shoff.saturating_add(64 * 40));
        v.extend((shoff.min(bytes.len())..end).step_by(3));
    }
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn truncations_never_panic() {
    for name in FIXTURES {
        let bytes = fixture(name);
        let step = (bytes.len() / 1500).max(1);
        let mut lens: Vec<usize> = (0..bytes.len().min(512)).collect();
        lens.extend((512..bytes.len()).step_by(step));
        lens.extend(hot_offsets(&bytes));
        for len in lens {
            exercise_with_context(&bytes[..len.min(bytes.len())], || {
                format!("{name}[..{len}]")
            });
        }
    }
}

#[test]
fn header_byte_flips_never_panic() {
    for name in FIXTURES {
        let bytes = fixture(name);
        for at in hot_offsets(&bytes) {
            for f in [|_: u8| 0xffu8, |b: u8| b ^ 0x01, |b: u8| b ^ 0x80] {
                let mut m = bytes.clone();
                m[at] = f(m[at]);
                exercise_with_context(&m, || format!("{name} with byte {at:#x} = {:#x}", m[at]));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random multi-byte corruption anywhere in any fixture.
    #[test]
    fn random_mutations_never_panic(
        which in 0..FIXTURES.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = fixture(FIXTURES[which]);
        for (i, v) in &edits {
            let at = i.index(bytes.len());
            bytes[at] = *v;
        }
        if truncate {
            let len = cut.index(bytes.len());
            bytes.truncate(len);
        }
        exercise(&bytes);
    }

    /// Arbitrary bytes behind each of the recognised magics.
    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in prop::sample::select(vec![
            &b""[..], &b"\x50\xed\x55\xba"[..], &b"\x7fELF\x02\x01\x01"[..],
            &b"\xb1\x43\x62\x46"[..], &b".version 8.0\n.target sm_80\n.entry "[..],
        ]),
        tail in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(&tail);
        exercise(&bytes);
    }

    /// Random PTX-like token soup.
    #[test]
    fn ptx_soup_never_panics(
        words in prop::collection::vec(prop::sample::select(vec![
            ".entry", ".func", ".param", ".global", ".const", ".shared", ".extern", ".align",
            ".u64", ".b8", ".v4", ".ptr", ".maxntid", ".reqntid", "(", ")", "{", "}", "[", "]",
            ",", ";", "=", "k", "8", "0x10", "//", "/*", "*/", "\"", "\n",
        ]), 0..200),
    ) {
        let text = format!(".version 9.0\n.target sm_90\n{}", words.join(" "));
        exercise(text.as_bytes());
    }
}

/// A fatbin whose one bundle entry (LZ4, `blob` bytes of zeros) lists `count` images that
/// all cover the whole blob.
fn bundle_bomb(blob: usize, count: u32) -> Vec<u8> {
    let packed = lz4_flex::block::compress(&vec![0u8; blob]);
    let hs = 64 + 8 + 64 * count as usize;
    let mut entry = vec![0u8; hs];
    let put = |b: &mut [u8], at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(&mut entry, 0, &vgpu_fatbin::ENTRY_KIND_BUNDLE.to_le_bytes());
    put(&mut entry, 4, &(hs as u32).to_le_bytes());
    put(&mut entry, 8, &(packed.len() as u64).to_le_bytes());
    put(&mut entry, 16, &(packed.len() as u32).to_le_bytes());
    put(&mut entry, 20, &64u32.to_le_bytes());
    put(&mut entry, 28, &90u32.to_le_bytes());
    put(
        &mut entry,
        40,
        &vgpu_fatbin::FLAG_COMPRESSED_LZ4.to_le_bytes(),
    );
    put(&mut entry, 56, &(blob as u64).to_le_bytes());
    put(&mut entry, 64, &count.to_le_bytes());
    for i in 0..count as usize {
        let sub = 72 + 64 * i;
        put(&mut entry, sub, &vgpu_fatbin::ENTRY_KIND_ELF.to_le_bytes());
        put(&mut entry, sub + 8, &(blob as u64).to_le_bytes());
        put(&mut entry, sub + 28, &90u32.to_le_bytes());
    }
    entry.extend_from_slice(&packed);
    let mut out = vgpu_fatbin::FATBIN_MAGIC.to_le_bytes().to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(&(entry.len() as u64).to_le_bytes());
    out.extend_from_slice(&entry);
    out
}

#[test]
fn a_small_image_cannot_expand_without_bound() {
    // 4 images of 32 MiB read fine...
    let fine = bundle_bomb(32 << 20, 4);
    assert!(fine.len() < 1 << 20);
    assert_eq!(list_entries(&fine).map(|e| e.len()), Ok(4));
    // ...40 of them (1.25 GiB from a 150 KiB image) are refused, for every reader.
    let bomb = bundle_bomb(32 << 20, 40);
    let too_large = |r: Result<(), vgpu_fatbin::ImageError>| {
        assert!(
            matches!(r, Err(vgpu_fatbin::ImageError::TooLarge(_))),
            "{r:?}"
        )
    };
    too_large(list_entries(&bomb).map(|_| ()));
    too_large(parse_image(&bomb, 90).map(|_| ()));
    too_large(vgpu_fatbin::ptx_for(&bomb, 90).map(|_| ()));
}
