//! `vgpu install` / `vgpu uninstall` on a tree laid out like a guest with Ollama installed
//! (v0.30+: `lib/ollama/cuda_v12` holding the runtime and BLAS libraries under their
//! runtime-minor names with SONAME links, and `cuda_v13`; an `ollama.service` unit; a real
//! libcuda in the system library folder): installing twice, then uninstalling, leaves the tree
//! exactly as it was, byte for byte, links and modes included.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every entry under `root`: relative path → what it is (a file's bytes and mode, a link's
/// target, or a folder).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                let bytes = fs::read(&p).unwrap();
                format!("file {:o} {:?}", m.permissions().mode() & 0o7777, bytes)
            };
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), what);
        }
    }
    out
}

fn write(p: &Path, bytes: &[u8], mode: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn vgpu(root: &Path, shims: &Path, what: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vgpu"))
        .args([what, "--root"])
        .arg(root)
        .arg("--shims")
        .arg(shims)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vgpu {what}: {text}");
    text
}

#[test]
fn install_twice_then_uninstall_restores_everything() {
    let t = tempfile::tempdir().unwrap();
    let (root, shims) = (t.path().join("root"), t.path().join("shims"));
    // vgpu's libraries (stand-in bytes: the test is about files, not their contents).
    for name in [
        "libcuda.so.1",
        "libnvidia-ml.so.1",
        "libcudart.so.12",
        "libcublas.so.12",
        "libcublasLt.so.12",
    ] {
        write(&shims.join(name), format!("vgpu {name}").as_bytes(), 0o755);
    }
    // The guest: NVIDIA's libcuda (a versioned file and its SONAME link), Ollama's tree.
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    write(
        &libdir.join("libcuda.so.570.86.15"),
        b"nvidia libcuda",
        0o644,
    );
    symlink("libcuda.so.570.86.15", libdir.join("libcuda.so.1")).unwrap();
    write(&libdir.join("libc.so.6"), b"libc", 0o755);
    let v12 = root.join("usr/local/lib/ollama/cuda_v12");
    for (file, link) in [
        ("libcudart.so.12.8.90", "libcudart.so.12"),
        ("libcublas.so.12.8.4.1", "libcublas.so.12"),
        ("libcublasLt.so.12.8.4.1", "libcublasLt.so.12"),
    ] {
        write(&v12.join(file), format!("nvidia {file}").as_bytes(), 0o755);
        symlink(file, v12.join(link)).unwrap();
    }
    write(&v12.join("libggml-cuda.so"), b"ggml-cuda", 0o755);
    write(
        &root.join("usr/local/lib/ollama/cuda_v13/libcudart.so.13.0.48"),
        b"nvidia cudart 13",
        0o755,
    );
    write(
        &root.join("etc/systemd/system/ollama.service"),
        b"[Service]\nExecStart=/usr/local/bin/ollama serve\n",
        0o644,
    );
    let before = snapshot(&root);

    let first = vgpu(&root, &shims, "install");
    let second = vgpu(&root, &shims, "install");
    assert!(
        first.contains("replaced /usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        "{first}"
    );
    assert!(
        second.contains("updated /usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        "{second}"
    );
    assert!(
        !second.contains("replaced"),
        "installing again replaces nothing new: {second}"
    );
    let read = |p: &str| fs::read(root.join(p)).unwrap();
    assert_eq!(
        read("usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        b"vgpu libcuda.so.1"
    );
    assert_eq!(
        read("usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"),
        b"vgpu libnvidia-ml.so.1"
    );
    // The runtime-minor file names Ollama reads stay; their links now reach vgpu's libraries.
    assert_eq!(
        read("usr/local/lib/ollama/cuda_v12/libcudart.so.12.8.90"),
        b"vgpu libcudart.so.12"
    );
    assert_eq!(
        read("usr/local/lib/ollama/cuda_v12/libcudart.so.12"),
        b"vgpu libcudart.so.12"
    );
    assert_eq!(
        read("usr/local/lib/ollama/cuda_v12/libcublas.so.12"),
        b"vgpu libcublas.so.12"
    );
    assert_eq!(
        read("usr/local/lib/ollama/cuda_v12/libcublasLt.so.12"),
        b"vgpu libcublasLt.so.12"
    );
    assert_eq!(
        read("usr/local/lib/ollama/cuda_v12/libggml-cuda.so"),
        b"ggml-cuda"
    );
    assert!(!root.join("usr/local/lib/ollama/cuda_v13").exists());
    assert!(root
        .join("usr/local/lib/ollama/cuda_v13.vgpu-disabled")
        .is_dir());
    let drop_in = String::from_utf8(read("etc/systemd/system/ollama.service.d/vgpu.conf")).unwrap();
    assert!(drop_in.contains("After=vgpu-driver.service"), "{drop_in}");

    let undone = vgpu(&root, &shims, "uninstall");
    assert!(
        undone.contains("restored /usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        "{undone}"
    );
    assert_eq!(snapshot(&root), before, "the tree is not as it was");
    // Nothing left to undo.
    assert!(vgpu(&root, &shims, "uninstall").contains("nothing to undo"));
}

#[test]
fn missing_libraries_are_named_and_nothing_changes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write(
        &root.join("usr/lib/x86_64-linux-gnu/libc.so.6"),
        b"libc",
        0o755,
    );
    let before = snapshot(&root);
    let out = Command::new(env!("CARGO_BIN_EXE_vgpu"))
        .args(["install", "--root"])
        .arg(&root)
        .arg("--shims")
        .arg(t.path().join("no-shims"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("libcuda.so.1 is missing"), "{err}");
    assert_eq!(snapshot(&root), before);
}
