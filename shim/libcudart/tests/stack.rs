//! C programs linked against the shims (`target/shims`, from `ci/build-shims.sh`) run
//! against vgpu-stub (soft executor) and vgpu-driver, started in this process.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Stack {
    dir: tempfile::TempDir,
    driver: Arc<vgpu_driver::server::Driver>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn start() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let stub_sock = dir.path().join("stub.sock");
    let cfg = vgpu_stub::exec::soft::SoftConfig {
        memory: 2 << 30,
        ..Default::default()
    };
    let stub = Arc::new(vgpu_stub::device::Device::new(
        Default::default(),
        Arc::new(vgpu_stub::exec::soft::SoftExecutor::new(cfg)),
    ));
    let p = stub_sock.clone();
    let t1 = std::thread::spawn(move || vgpu_stub::server::serve(&p, stub, Some(1)).unwrap());
    while !stub_sock.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let backing = vgpu_driver::backing::VfioUserBacking::connect(&stub_sock).unwrap();
    let dev = vgpu_driver::device::Device::bring_up(Box::new(backing)).unwrap();
    let listener = vgpu_driver::server::listen(&dir.path().join("vgpu.sock"), 0o660, None).unwrap();
    let driver = vgpu_driver::server::Driver::new(
        dev,
        vgpu_driver::server::Limits {
            window_bytes: 16 << 20,
            ..Default::default()
        },
    );
    let d = driver.clone();
    let t2 = std::thread::spawn(move || vgpu_driver::server::serve(d, listener));
    Stack {
        dir,
        driver,
        threads: vec![t1, t2],
    }
}

impl Stack {
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
            .env("VGPU_SOCKET", self.dir.path().join("vgpu.sock"))
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

    fn finish(mut self) {
        self.driver.stop();
        let t2 = self.threads.pop().unwrap();
        t2.join().unwrap();
        self.driver.device().shutdown();
        self.threads.pop().unwrap().join().unwrap();
    }
}

#[test]
fn device_query_and_memory_samples() {
    let st = start();
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
