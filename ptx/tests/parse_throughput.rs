//! How fast the parser reads: MB/s over the largest sample (nvcc's debug build of
//! tests/data/features.cu, a third of it instructions, the rest debug sections) and over
//! the largest sample without debug information. Run it in release to see the real figure:
//!   cargo test --release -p vgpu-ptx --test parse_throughput -- --nocapture
//! A release build must reach 30 MB/s on both.

use std::path::Path;
use std::time::{Duration, Instant};

/// MB/s over `name`, parsed again and again for at least half a second.
fn throughput(name: &str) -> f64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read_to_string(path).unwrap();
    vgpu_ptx::parse(&text).unwrap();
    let start = Instant::now();
    let mut bytes = 0usize;
    while start.elapsed() < Duration::from_millis(500) {
        let module = vgpu_ptx::parse(&text).unwrap();
        std::hint::black_box(module);
        bytes += text.len();
    }
    let mbs = bytes as f64 / 1e6 / start.elapsed().as_secs_f64();
    println!("{name} ({} KB): {mbs:.0} MB/s", text.len() / 1000);
    mbs
}

#[test]
fn parse_throughput() {
    let largest = throughput("features.nvcc13.debug.ptx");
    let code = throughput("features.nvcc13.compute_80.ptx");
    if !cfg!(debug_assertions) {
        assert!(
            largest >= 30.0 && code >= 30.0,
            "{largest:.0} MB/s, {code:.0} MB/s"
        );
    }
}
