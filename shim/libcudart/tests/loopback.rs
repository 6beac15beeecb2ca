//! The cuda executor without a GPU, by loop-back: `vgpu-stub --executor cuda` loads vgpu's
//! own `libcuda.so.1` and `libcublas.so.12` (`target/shims`), which reach a first vgpu-stub
//! on the soft executor through its driver. Applications on the second driver then drive
//! every path of the cuda executor (contexts per PD, memory checked against the PD's own
//! ranges, copies in one and two dimensions, memsets, modules and launches with their
//! parameter layouts from `cuFuncGetParamInfo`, cuBLAS) through a CUDA driver API it only
//! knows by its C entry points.

mod common;

use common::*;
use std::ffi::OsStr;
use std::process::Command;
use vgpu_test_stack::stack::bin_dir;
use vgpu_test_stack::{ProcessStack, Stack};

/// A soft stack (level 1) and, on top of it, vgpu-stub with the cuda executor on the shims
/// and vgpu-driver (level 2): applications use level 2's socket.
fn loopback() -> (Stack, ProcessStack) {
    assert_shims_current();
    let level1 = Stack::start(4 << 30, 64 << 20);
    let shims = root().join("target/shims");
    let level2 = ProcessStack::start_with_env(
        &[
            ("LD_LIBRARY_PATH", shims.as_os_str()),
            ("VGPU_SOCKET", level1.control().as_os_str()),
            ("VGPU_TIMEOUT_MS", OsStr::new("60000")),
        ],
        &["--executor", "cuda", "--allow-loopback"],
        Some(&[]),
    );
    (level1, level2)
}

#[test]
fn vgpus_own_libcuda_is_refused_without_permission() {
    assert_shims_current();
    let out = Command::new(bin_dir().join("vgpu-stub"))
        .args(["--socket", "/tmp/never.sock", "--executor", "cuda"])
        .env("LD_LIBRARY_PATH", root().join("target/shims"))
        .env_remove("VGPU_ALLOW_LOOPBACK")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("vgpu's own") && err.contains("loop back"),
        "{err}"
    );
    // --executor auto takes the soft executor instead, and says why.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin_dir().join("vgpu-stub"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args(["--executor", "auto", "--memory", "1G"])
        .env("LD_LIBRARY_PATH", root().join("target/shims"))
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !dir.path().join("s.sock").exists() && start.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("running the soft executor") && log.contains("vgpu's own"),
        "{log}"
    );
}

#[test]
fn samples_through_the_cuda_executor() {
    let (level1, level2) = loopback();
    let dir = tempfile::tempdir().unwrap();
    let fatbin = root().join("fatbin/tests/fixtures/kernels.fatbin");
    let fatbin = fatbin.to_str().unwrap();
    for (name, libs, args, want) in [
        (
            "device_query",
            &["cudart", "cuda"][..],
            &[][..],
            "agrees with the driver API",
        ),
        // Exit status 0 is every check passed; the line says host registration ran.
        (
            "memory",
            &["cudart"],
            &[],
            "memory: registered host memory checked",
        ),
        (
            "nvml",
            &["nvidia-ml", "cuda"],
            &[],
            "agrees with the driver API, all checks passed",
        ),
        (
            "launch",
            &["cudart"],
            &[fatbin],
            "launch: vecAdd over 1000 elements checked",
        ),
        (
            "driver_api",
            &["cuda"],
            &[fatbin],
            "driver_api: all checks passed",
        ),
    ] {
        let exe = build_sample(dir.path(), name, libs);
        let (code, out) = run_with_shims(&exe, &level2.control(), args);
        assert_eq!(code, 0, "{name}: {out}");
        assert!(out.contains(want), "{name}: {out}");
    }
    drop(level2);
    level1.finish();
}

/// Every GEMM variant (strided, batched by pointer arrays), batched TRSM and cuBLASLt
/// matmuls with epilogues, through cuBLAS and cuBLASLt, checked against float64.
#[test]
fn cublas_sample_through_the_cuda_executor() {
    let (level1, level2) = loopback();
    let dir = tempfile::tempdir().unwrap();
    let exe = build_sample(dir.path(), "cublas", &["cublas", "cublasLt", "cudart", "m"]);
    let (code, out) = run_with_shims(&exe, &level2.control(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("cublas: 48 cases checked against float64, all checks passed"),
        "{out}"
    );
    drop(level2);
    level1.finish();
}

#[test]
fn cudarc_client_through_the_cuda_executor() {
    let (level1, level2) = loopback();
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_cudarc-client"));
    let (code, text) = run_with_shims(exe, &level2.control(), &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("cudarc: all checks passed"), "{text}");
    drop(level2);
    level1.finish();
}

#[test]
fn real_cuda_programs_through_the_cuda_executor() {
    if !cuda_programs_built() {
        return;
    }
    for p in [
        "kernels_app.cuda12",
        "kernels_app.cuda13",
        "runtime_app.cuda12",
    ] {
        // A fresh pair each: runtime_app ends by making its context's error sticky.
        let (level1, level2) = loopback();
        let (ok, text) = run_cuda_program(p, &level2.control(), &[]);
        assert!(ok, "{p}: {text}");
        let want = if p.starts_with("kernels") {
            "kernels_app: all checks passed"
        } else {
            "runtime_app: all checks passed"
        };
        assert!(text.contains(want), "{p}: {text}");
        drop(level2);
        level1.finish();
    }
}
