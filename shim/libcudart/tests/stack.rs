//! C programs linked against the shims (`target/shims`, from `ci/build-shims.sh`) run
//! against vgpu-stub (soft executor) and vgpu-driver, started in this process.

use std::path::PathBuf;
use std::process::Command;
use vgpu_test_stack::Stack;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

trait Samples {
    fn run_sample(&self, name: &str, libs: &[&str]) -> (i32, String);
    fn run_sample_args(&self, name: &str, libs: &[&str], args: &[&str]) -> (i32, String);
}

impl Samples for Stack {
    fn run_sample(&self, name: &str, libs: &[&str]) -> (i32, String) {
        self.run_sample_args(name, libs, &[])
    }

    fn run_sample_args(&self, name: &str, libs: &[&str], args: &[&str]) -> (i32, String) {
        let shims = root().join("target/shims");
        assert!(
            shims.join("libcudart.so.12").exists(),
            "the shims are not built: run ci/build-shims.sh first (ci/test.sh does)"
        );
        let exe = self.dir.path().join(name);
        let mut cc = Command::new("cc");
        cc.arg(root().join(format!("tests/samples/{name}.c")))
            .arg(format!("-L{}", shims.display()));
        for l in libs {
            cc.arg(format!("-l{l}"));
        }
        assert!(
            cc.arg("-o").arg(&exe).status().unwrap().success(),
            "cc failed for {name}"
        );
        let out = Command::new(&exe)
            .args(args)
            .env("LD_LIBRARY_PATH", &shims)
            .env("VGPU_SOCKET", self.control())
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
}

#[test]
fn device_query_and_memory_samples() {
    let st = Stack::start(2 << 30, 16 << 20);
    let (code, out) = st.run_sample("device_query", &["cudart", "cuda"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("compute capability 9.0") && out.contains("agrees with the driver API"),
        "{out}"
    );
    let (code, out) = st.run_sample("memory", &["cudart"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("memory: all checks passed"), "{out}");
    // A kernel through the CUDA 12 launch ABI: registration, lazy load by hash, parameter
    // packing from the device's layout, the CPU reference kernel, and the result.
    let fatbin = root().join("fatbin/tests/fixtures/kernels.fatbin");
    let (code, out) = st.run_sample_args("launch", &["cudart"], &[fatbin.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("launch: vecAdd over 1000 elements checked"),
        "{out}"
    );
    st.finish();
}

/// Real CUDA programs (tests/cuda/), built by registry toolchains in both kernel-launch
/// ABIs by `ci/build-cuda-programs.sh`, run unchanged against the shims: vecAdd and a kernel
/// with a struct by value and mixed parameters, through the CPU reference kernels.
#[test]
fn real_cuda_programs_in_both_launch_abis() {
    let dir = root().join("target/cuda-programs");
    let programs = ["kernels_app.cuda12", "kernels_app.cuda13"];
    if !programs.iter().all(|p| dir.join(p).exists()) {
        assert!(
            std::env::var_os("VGPU_REQUIRE_CUDA_PROGRAMS").is_none(),
            "the CUDA programs are not built: ci/build-cuda-programs.sh"
        );
        eprintln!("skipped: run ci/build-cuda-programs.sh to build the real CUDA programs");
        return;
    }
    let st = Stack::start(2 << 30, 16 << 20);
    for p in programs {
        let out = Command::new(dir.join(p))
            .env("LD_LIBRARY_PATH", root().join("target/shims"))
            .env("VGPU_SOCKET", st.control())
            .env("VGPU_TIMEOUT_MS", "60000")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{p}: {text}");
        for want in [
            "device 0 has compute capability 9.0",
            "vecAdd: 100000 elements checked",
            "odd_params: struct by value and mixed parameters checked",
            "kernels_app: all checks passed",
        ] {
            assert!(text.contains(want), "{p}: no \"{want}\" in {text}");
        }
    }
    st.finish();
}
