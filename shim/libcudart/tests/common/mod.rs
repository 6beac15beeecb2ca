//! What the tests that run C samples and CUDA programs on the shims share: the paths, the
//! check that `target/shims` is current, building and running the samples.

#![allow(dead_code, reason = "each test file uses a part")]

use std::path::{Path, PathBuf};
use std::process::Command;
use vgpu_test_stack::Stack;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Panics unless `target/shims` was built from the current sources: libraries built before
/// a protocol change would talk past the device (and wait out every timeout).
pub fn assert_shims_current() {
    use sha2::Digest;
    let shims = root().join("target/shims");
    assert!(
        shims.join("libcudart.so.12").exists(),
        "the shims are not built: run ci/build-shims.sh first (ci/test.sh does)"
    );
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = [
        "os/src",
        "proto/src",
        "shim/src",
        "shim/abi/src",
        "shim/libcuda/src",
        "shim/libcudart/src",
        "shim/libcublas/src",
        "shim/libcublaslt/src",
        "shim/libnvml/src",
    ]
    .iter()
    .map(|d| root().join(d))
    .collect();
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p.strip_prefix(root()).unwrap().to_path_buf());
            }
        }
    }
    // The same order as `LC_ALL=C sort` of the paths in ci/build-shims.sh.
    files.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    let mut h = sha2::Sha256::new();
    for f in &files {
        h.update(std::fs::read(root().join(f)).unwrap());
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let built = std::fs::read_to_string(shims.join("SOURCES.sha256")).unwrap_or_default();
    assert_eq!(
        built.trim(),
        digest,
        "target/shims was built from other sources: run ci/build-shims.sh again"
    );
}

pub trait Samples {
    fn run_sample(&self, name: &str, libs: &[&str]) -> (i32, String);
    fn run_sample_args(&self, name: &str, libs: &[&str], args: &[&str]) -> (i32, String);
}

impl Samples for Stack {
    fn run_sample(&self, name: &str, libs: &[&str]) -> (i32, String) {
        self.run_sample_args(name, libs, &[])
    }

    fn run_sample_args(&self, name: &str, libs: &[&str], args: &[&str]) -> (i32, String) {
        let exe = build_sample(self.dir.path(), name, libs);
        run_with_shims(&exe, self.control(), args)
    }
}

/// Builds `tests/samples/NAME.c` into `dir`, linked against the shims `libs`.
pub fn build_sample(dir: &Path, name: &str, libs: &[&str]) -> PathBuf {
    assert_shims_current();
    let shims = root().join("target/shims");
    let exe = dir.join(name);
    let mut cc = Command::new("cc");
    cc.arg(root().join(format!("tests/samples/{name}.c")))
        .arg(format!("-L{}", shims.display()))
        .arg(format!("-Wl,-rpath-link,{}", shims.display()));
    for l in libs {
        cc.arg(format!("-l{l}"));
    }
    assert!(
        cc.arg("-o").arg(&exe).status().unwrap().success(),
        "cc failed for {name}"
    );
    exe
}

/// Runs `exe` with the shims on its library path against `socket`; (exit code, output).
pub fn run_with_shims(exe: &Path, socket: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(exe)
        .args(args)
        .env("LD_LIBRARY_PATH", root().join("target/shims"))
        .env("VGPU_SOCKET", socket)
        .env("VGPU_TIMEOUT_MS", "60000")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs `target/cuda-programs/NAME` with the shims against `socket`; (success, output).
pub fn run_cuda_program(name: &str, socket: &Path, args: &[&str]) -> (bool, String) {
    assert_shims_current();
    let exe = root().join("target/cuda-programs").join(name);
    let (code, text) = run_with_shims(&exe, socket, args);
    (code == 0, text)
}

/// True when `ci/build-cuda-programs.sh` has built the programs; a skip (with a message)
/// otherwise, unless `VGPU_REQUIRE_CUDA_PROGRAMS` is set (ci/test.sh sets it).
pub fn cuda_programs_built() -> bool {
    let dir = root().join("target/cuda-programs");
    let all = ["kernels_app", "runtime_app"].iter().all(|p| {
        ["cuda12", "cuda13"]
            .iter()
            .all(|abi| dir.join(format!("{p}.{abi}")).exists())
    });
    if !all {
        assert!(
            std::env::var_os("VGPU_REQUIRE_CUDA_PROGRAMS").is_none(),
            "the CUDA programs are not built: ci/build-cuda-programs.sh"
        );
        eprintln!("skipped: run ci/build-cuda-programs.sh to build the real CUDA programs");
    }
    all
}
