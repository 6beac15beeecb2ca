//! Test support: vgpu-stub (soft executor) serving one vfio-user connection and vgpu-driver
//! on it, both in the calling process, with the driver's control socket in a temporary
//! directory. Used by the tests of the shim crates.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vgpu_driver::server::{self, Driver, Limits};
use vgpu_stub::exec::soft::{SoftConfig, SoftExecutor};

/// A running stub and driver.
pub struct Stack {
    /// The temporary directory holding both sockets.
    pub dir: tempfile::TempDir,
    /// The device model.
    pub stub: Arc<vgpu_stub::device::Device>,
    /// The driver.
    pub driver: Arc<Driver>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Stack {
    /// Starts a stub with `memory` bytes of device memory and a driver whose clients get
    /// first windows of `window_bytes`.
    pub fn start(memory: u64, window_bytes: u64) -> Stack {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().expect("temporary directory");
        let stub_sock = dir.path().join("stub.sock");
        let cfg = SoftConfig {
            memory,
            ..Default::default()
        };
        let stub = Arc::new(vgpu_stub::device::Device::new(
            Default::default(),
            Arc::new(SoftExecutor::new(cfg)),
        ));
        let (s, p) = (stub.clone(), stub_sock.clone());
        let t1 = std::thread::spawn(move || {
            vgpu_stub::server::serve(&p, s, Some(1)).expect("vgpu-stub serves")
        });
        let t0 = Instant::now();
        while !stub_sock.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "vgpu-stub did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let backing = vgpu_driver::backing::VfioUserBacking::connect(&stub_sock)
            .expect("vfio-user connection");
        let dev = vgpu_driver::device::Device::bring_up(Box::new(backing)).expect("bring-up");
        let listener =
            server::listen(&dir.path().join("vgpu.sock"), 0o660, None).expect("control socket");
        let driver = Driver::new(
            dev,
            Limits {
                window_bytes,
                ..Limits::default()
            },
        );
        let d = driver.clone();
        let t2 = std::thread::spawn(move || server::serve(d, listener));
        Stack {
            dir,
            stub,
            driver,
            threads: vec![t1, t2],
        }
    }

    /// The driver's control socket.
    pub fn control(&self) -> PathBuf {
        self.dir.path().join("vgpu.sock")
    }

    /// Stops the driver, resets the device, and waits for the stub to see the disconnect.
    pub fn finish(mut self) {
        self.driver.stop();
        if let Some(t) = self.threads.pop() {
            t.join().expect("driver thread");
        }
        self.driver.device().shutdown();
        if let Some(t) = self.threads.pop() {
            t.join().expect("stub thread");
        }
    }
}
