//! The linked shims (`ci/build-shims.sh` lays them out in `target/shims`) have the real
//! SONAMEs, version nodes and NEEDED entries, export every symbol real ggml-cuda builds reference, export
//! nothing else, and `shim/COVERAGE.md` matches the source. A C program finds no device,
//! cleanly, when no driver runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shims() -> PathBuf {
    let d = root().join("target/shims");
    assert!(
        LIBS.iter().all(|l| d.join(l).exists()),
        "the shims are not built: run ci/build-shims.sh first (ci/test.sh does)"
    );
    d
}

/// The linked libraries.
const LIBS: [&str; 5] = [
    "libcuda.so.1",
    "libcudart.so.12",
    "libcublas.so.12",
    "libcublasLt.so.12",
    "libnvidia-ml.so.1",
];

fn readelf(args: &[&str], lib: &Path) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(lib)
        .output()
        .expect("readelf (binutils) is needed");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn soname(lib: &Path) -> String {
    let d = readelf(&["-d"], lib);
    let line = d
        .lines()
        .find(|l| l.contains("(SONAME)"))
        .expect("no SONAME");
    line.split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or("")
        .to_string()
}

/// Defined dynamic symbols as `name` or `name@@version`.
fn exports(lib: &Path) -> BTreeSet<String> {
    readelf(&["--dyn-syms", "-W"], lib)
        .lines()
        .filter(|l| l.contains(" FUNC ") && l.contains(" GLOBAL ") && !l.contains(" UND "))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

fn reference_symbols() -> Vec<(String, Option<String>)> {
    let mut v = Vec::new();
    for f in [
        "ggml-cuda-undefined-symbols.txt",
        "ollama-v0.24-ggml-cuda-symbols.txt",
        "ollama-nvml-symbols.txt",
    ] {
        let text = std::fs::read_to_string(root().join("shim/symbols").join(f)).unwrap();
        for l in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (name, ver) = match l.split_once('@') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (l.to_string(), None),
            };
            v.push((name, ver));
        }
    }
    v
}

#[test]
fn sonames_and_version_nodes() {
    let d = shims();
    for lib in LIBS {
        assert_eq!(soname(&d.join(lib)), lib);
    }
    for lib in ["libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12"] {
        let v = readelf(&["-V"], &d.join(lib));
        assert!(
            v.contains(&format!("Name: {lib}")),
            "no version definition {lib}"
        );
    }
    // NEEDED libcublasLt.so.12, as NVIDIA's libcublas.so.12.
    let needed = readelf(&["-d"], &d.join("libcublas.so.12"));
    assert!(
        needed.contains("(NEEDED)") && needed.contains("[libcublasLt.so.12]"),
        "{needed}"
    );
}

#[test]
fn every_referenced_symbol_is_exported_with_the_right_version() {
    let d = shims();
    let cuda = exports(&d.join("libcuda.so.1"));
    let cudart = exports(&d.join("libcudart.so.12"));
    let cublas = exports(&d.join("libcublas.so.12"));
    let cublaslt = exports(&d.join("libcublasLt.so.12"));
    let nvml = exports(&d.join("libnvidia-ml.so.1"));
    let mut missing = Vec::new();
    for (name, _) in reference_symbols() {
        let ok = if name.starts_with("nvml") {
            nvml.contains(&name)
                && vgpu_nvml::ffi::EXPORTS
                    .iter()
                    .any(|e| e.name == name && e.state == vgpu_shim_abi::State::Implemented)
        } else if name.starts_with("cuda") || name.starts_with("__cuda") {
            cudart.contains(&format!("{name}@@libcudart.so.12"))
        } else if name.starts_with("cublasLt") {
            cublaslt.contains(&format!("{name}@@libcublasLt.so.12"))
        } else if name.starts_with("cublas") {
            cublas.contains(&format!("{name}@@libcublas.so.12"))
        } else if name.starts_with("cu") {
            cuda.contains(&name)
        } else {
            false
        };
        if !ok {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "missing or wrongly versioned: {missing:?}"
    );
    // Nothing but the API is exported.
    for s in cuda.iter().chain(cudart.iter()) {
        let name = s.split('@').next().unwrap_or(s);
        assert!(
            name.starts_with("cu") || name.starts_with("__cuda"),
            "stray export {s}"
        );
    }
    for s in &cudart {
        assert!(
            s.ends_with("@@libcudart.so.12"),
            "unversioned libcudart export {s}"
        );
    }
    // NVML: unversioned, as NVIDIA's.
    for s in exports(&d.join("libnvidia-ml.so.1")) {
        assert!(
            s.starts_with("nvml") && !s.contains('@'),
            "stray or versioned export {s}"
        );
    }
    for (set, prefix, node) in [
        (&cublas, "cublas", "@@libcublas.so.12"),
        (&cublaslt, "cublasLt", "@@libcublasLt.so.12"),
    ] {
        for s in set {
            assert!(
                s.starts_with(prefix) && s.ends_with(node),
                "stray or unversioned export {s}"
            );
        }
    }
}

/// The names of a generated table's exports in one state.
fn of(
    table: &'static [vgpu_shim_abi::Export],
    state: vgpu_shim_abi::State,
) -> impl Iterator<Item = &'static str> {
    table
        .iter()
        .filter(move |e| e.state == state)
        .map(|e| e.name)
}

fn coverage_markdown() -> String {
    use vgpu_shim_abi::State::{Implemented, NotSupported};
    let mut out = String::from(
        "# Shim coverage\n\nGenerated from the source by `shim/libcudart/tests/exports.rs` \
         (`VGPU_WRITE_COVERAGE=1` rewrites it). *not supported* functions return the library's \
         NOT_SUPPORTED error and log their name once.\n",
    );
    let section = |out: &mut String, lib: &str, yes: &[&str], no: &[&str]| {
        out.push_str(&format!("\n## {lib}\n\n| function | state |\n|---|---|\n"));
        let mut all: Vec<(&str, &str)> = yes
            .iter()
            .map(|n| (*n, "implemented"))
            .chain(no.iter().map(|n| (*n, "not supported")))
            .collect();
        all.sort();
        for (n, s) in all {
            out.push_str(&format!("| `{n}` | {s} |\n"));
        }
        out.push_str(&format!(
            "\n{} implemented, {} not supported.\n",
            yes.len(),
            no.len()
        ));
    };
    let tables = vgpu_cuda::EXPORT_TABLES;
    let cuda: Vec<&str> = tables.iter().flat_map(|t| of(t, Implemented)).collect();
    let cuda_no: Vec<&str> = tables.iter().flat_map(|t| of(t, NotSupported)).collect();
    section(&mut out, "libcuda.so.1", &cuda, &cuda_no);
    let tables = vgpu_cudart::EXPORT_TABLES;
    let cudart: Vec<&str> = tables.iter().flat_map(|t| of(t, Implemented)).collect();
    let cudart_no: Vec<&str> = tables.iter().flat_map(|t| of(t, NotSupported)).collect();
    section(&mut out, "libcudart.so.12", &cudart, &cudart_no);
    for (lib, table) in [
        ("libcublas.so.12", vgpu_cublas::ffi::EXPORTS),
        ("libcublasLt.so.12", vgpu_cublaslt::ffi::EXPORTS),
        ("libnvidia-ml.so.1", vgpu_nvml::ffi::EXPORTS),
    ] {
        section(
            &mut out,
            lib,
            &of(table, Implemented).collect::<Vec<_>>(),
            &of(table, NotSupported).collect::<Vec<_>>(),
        );
    }
    out
}

#[test]
fn every_export_is_in_the_coverage_table() {
    let d = shims();
    let table = coverage_markdown();
    for lib in LIBS {
        for s in exports(&d.join(lib)) {
            let name = s.split('@').next().unwrap_or(&s).to_string();
            assert!(
                table.contains(&format!("| `{name}` |")),
                "{name} ({lib}) is exported but not in COVERAGE.md"
            );
        }
    }
}

#[test]
fn coverage_table_matches_the_source() {
    let path = root().join("shim/COVERAGE.md");
    let want = coverage_markdown();
    if std::env::var_os("VGPU_WRITE_COVERAGE").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "shim/COVERAGE.md is out of date: rerun with VGPU_WRITE_COVERAGE=1"
    );
}

#[test]
fn no_driver_means_no_device_and_the_program_carries_on() {
    let d = shims();
    let exe = std::env::temp_dir().join(format!("vgpu-device-query-{}", std::process::id()));
    let cc = Command::new("cc")
        .arg(root().join("tests/samples/device_query.c"))
        .arg(format!("-L{}", d.display()))
        .args(["-lcudart", "-lcuda", "-o"])
        .arg(&exe)
        .status()
        .expect("cc");
    assert!(cc.success());
    let out = Command::new(&exe)
        .env("LD_LIBRARY_PATH", &d)
        .env("VGPU_SOCKET", "/nonexistent/vgpu.sock")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&exe);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("no CUDA-capable device is detected (error 100); count 0"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one clear log line: {stderr}");
    assert!(stderr.contains("cannot reach vgpu-driver"), "{stderr}");
}
