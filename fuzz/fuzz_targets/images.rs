//! Fuzz target: CUDA module images as a guest hands them to MODULE_LOAD. Every reader of
//! `vgpu-fatbin` (fatbin containers, bundles, LZ4/zstd entries, ELF cubins, PTX) and the PTX
//! parser and checker of `vgpu-ptx` (a whole load, and a lazy one with each of its kernels
//! checked) must return, never panic, hang or allocate without bound, whatever the bytes.
#![no_main]

/// PTX text loaded whole and lazily, every kernel of the lazy program checked.
fn load(text: &str) {
    let _ = vgpu_ptx::load(text);
    if let Ok(p) = vgpu_ptx::lazy::LazyProgram::new(text) {
        let names: Vec<String> = p.kernel_names().map(str::to_string).collect();
        for name in names {
            let _ = p.kernel(&name);
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for sm in [75, 90] {
        let _ = vgpu_fatbin::parse_image(data, sm);
    }
    let _ = vgpu_fatbin::list_entries(data);
    if let Ok(texts) = vgpu_fatbin::ptx_for(data, 90) {
        for text in texts {
            load(&text);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        load(text);
    }
});
