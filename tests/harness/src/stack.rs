//! The whole host stack for tests: vgpu-stub (soft executor) and vgpu-driver on it, with the
//! driver's control socket in a temporary directory.
//!
//! In process ([`Stack::builder`]) the two are threads of the test, linked over a real
//! vfio-user socket ([`Link::VfioUser`]) or by direct calls ([`Link::InProcess`], with
//! [`Faults`] to inject); the driver can be stopped and started again on the same device.
//! As processes ([`ProcessStack`]) they are the built `vgpu-stub` and `vgpu-driver`
//! binaries, as the main job runs them. Every start waits until a connection succeeds, not
//! until a socket file exists (a socket file appears at bind, before the server listens).

use crate::backing::{Faults, InProcessBacking};
use crate::wait::retry;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;
use vgpu_driver::backing::{DeviceBacking, VfioUserBacking};
use vgpu_driver::server::{self, Driver, Limits};
use vgpu_stub::exec::soft::{SoftConfig, SoftExecutor};

/// How long a start waits for a server to accept.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How the driver reaches the device model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// A vfio-user connection, as with a VM.
    VfioUser,
    /// Direct calls ([`InProcessBacking`]).
    InProcess,
}

/// Dresses the driver's backing (to observe or alter what it does).
pub type Wrap = Box<dyn FnOnce(Box<dyn DeviceBacking>) -> Box<dyn DeviceBacking>>;

/// Options of an in-process stack.
pub struct StackBuilder {
    memory: u64,
    connections: usize,
    limits: Limits,
    link: Link,
    wrap: Option<Wrap>,
    faults: Option<Arc<Faults>>,
}

impl StackBuilder {
    /// Faults injected from the start (in-process link only), before the first driver
    /// brings the device up.
    pub fn faults(mut self, faults: Arc<Faults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Device memory of the soft executor (default 1 GiB).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }

    /// Driver connections the stub serves over vfio-user before it stops (default 1; each
    /// driver start is one).
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// The driver's limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The size of each client's first window.
    pub fn window_bytes(mut self, bytes: u64) -> Self {
        self.limits.window_bytes = bytes;
        self
    }

    /// How the driver reaches the device (default [`Link::VfioUser`]).
    pub fn link(mut self, link: Link) -> Self {
        self.link = link;
        self
    }

    /// Dresses the first driver's backing with `wrap`.
    pub fn wrap(
        mut self,
        wrap: impl FnOnce(Box<dyn DeviceBacking>) -> Box<dyn DeviceBacking> + 'static,
    ) -> Self {
        self.wrap = Some(Box::new(wrap));
        self
    }

    /// Starts the stub and a first driver.
    pub fn start(self) -> Stack {
        crate::init_logging();
        let dir = tempfile::tempdir().expect("temporary directory");
        let stub_sock = dir.path().join("stub.sock");
        let cfg = SoftConfig {
            memory: self.memory,
            ..Default::default()
        };
        let stub = Arc::new(vgpu_stub::device::Device::new(
            Default::default(),
            Arc::new(SoftExecutor::new(cfg)),
        ));
        let stub_thread = (self.link == Link::VfioUser).then(|| {
            let (s, p, n) = (stub.clone(), stub_sock.clone(), self.connections);
            std::thread::spawn(move || {
                vgpu_stub::server::serve(&p, s, Some(n)).expect("vgpu-stub serves")
            })
        });
        let mut st = Stack {
            control: dir.path().join("run/vgpu.sock"),
            dir,
            stub,
            stub_thread,
            link: self.link,
            faults: self.faults.unwrap_or_else(Faults::none),
            driver: None,
            driver_thread: None,
        };
        st.start_driver_on(self.limits, self.wrap.unwrap_or_else(|| Box::new(|b| b)));
        st
    }
}

/// A running stub and driver, in process.
pub struct Stack {
    /// The temporary directory holding the sockets.
    pub dir: tempfile::TempDir,
    /// The device model.
    pub stub: Arc<vgpu_stub::device::Device>,
    stub_thread: Option<std::thread::JoinHandle<()>>,
    link: Link,
    faults: Arc<Faults>,
    /// The running driver, if any.
    pub driver: Option<Arc<Driver>>,
    driver_thread: Option<std::thread::JoinHandle<()>>,
    control: PathBuf,
}

impl Stack {
    /// Options for an in-process stack.
    pub fn builder() -> StackBuilder {
        StackBuilder {
            memory: 1 << 30,
            connections: 1,
            limits: Limits::default(),
            link: Link::VfioUser,
            wrap: None,
            faults: None,
        }
    }

    /// A stub with `memory` bytes of device memory and a driver whose clients get first
    /// windows of `window_bytes`.
    pub fn start(memory: u64, window_bytes: u64) -> Stack {
        Stack::builder()
            .memory(memory)
            .window_bytes(window_bytes)
            .start()
    }

    /// The driver's control socket.
    pub fn control(&self) -> &Path {
        &self.control
    }

    /// The faults injected on an in-process link (none on a vfio-user link).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The running driver.
    pub fn driver(&self) -> &Arc<Driver> {
        self.driver.as_ref().expect("a driver is running")
    }

    /// Device totals of live objects.
    pub fn totals(&self) -> vgpu_proto::info::ObjectCounts {
        self.stub.totals()
    }

    fn backing(&self) -> Box<dyn DeviceBacking> {
        match self.link {
            Link::VfioUser => {
                let sock = self.dir.path().join("stub.sock");
                Box::new(retry("vgpu-stub to accept", START_TIMEOUT, || {
                    VfioUserBacking::connect(&sock)
                }))
            }
            Link::InProcess => Box::new(InProcessBacking::new(
                self.stub.clone(),
                self.faults.clone(),
            )),
        }
    }

    /// Starts a driver (after [`stop_driver`](Self::stop_driver)).
    pub fn start_driver(&mut self, limits: Limits) {
        self.start_driver_on(limits, Box::new(|b| b));
    }

    /// Starts a driver on the backing as `wrap` dresses it.
    pub fn start_driver_on(&mut self, limits: Limits, wrap: Wrap) {
        assert!(self.driver.is_none(), "a driver is already running");
        let dev = vgpu_driver::device::Device::bring_up(wrap(self.backing())).expect("bring-up");
        let listener = server::listen(&self.control, 0o660, None).expect("control socket");
        let driver = Driver::new(dev, limits);
        let d = driver.clone();
        self.driver_thread = Some(std::thread::spawn(move || server::serve(d, listener)));
        self.driver = Some(driver);
    }

    /// Stops the driver as a daemon exit does: stop accepting, reset the device, let go of
    /// the link.
    pub fn stop_driver(&mut self) {
        if let Some(d) = self.driver.take() {
            d.stop();
            if let Some(t) = self.driver_thread.take() {
                t.join().expect("driver thread");
            }
            d.device().shutdown();
        }
    }

    /// Stops the driver, then waits for the stub to finish its connections.
    pub fn finish(mut self) {
        self.stop_driver();
        if let Some(t) = self.stub_thread.take() {
            t.join().expect("stub thread");
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // A test that failed half-way still stops its driver thread.
        if let Some(d) = self.driver.take() {
            d.stop();
        }
    }
}

/// The built `vgpu-stub` and `vgpu-driver` binaries of this target directory, run as the
/// main job runs them; killed (driver first) on drop.
pub struct ProcessStack {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    children: Vec<Child>,
    /// Index of the running driver in `children`.
    driver: Option<usize>,
}

/// The directory holding the workspace's binaries (the profile directory of the running
/// test, benchmark or program).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().expect("executable directory");
    // Tests run from target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.parent().expect("profile directory").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

impl ProcessStack {
    /// Starts `vgpu-stub` with `stub_args` and, unless `driver_args` is `None`,
    /// `vgpu-driver` on it with `driver_args`; the sockets are added to the arguments.
    pub fn start(stub_args: &[&str], driver_args: Option<&[&str]>) -> ProcessStack {
        let temp = tempfile::tempdir().expect("temporary directory");
        let mut st = Self::start_in(temp.path(), stub_args, driver_args);
        st._temp = Some(temp);
        st
    }

    /// As [`start`](Self::start), with `env` added to `vgpu-stub`'s environment.
    pub fn start_with_env(
        env: &[(&str, &std::ffi::OsStr)],
        stub_args: &[&str],
        driver_args: Option<&[&str]>,
    ) -> ProcessStack {
        let temp = tempfile::tempdir().expect("temporary directory");
        let mut st = Self::start_env_in(temp.path(), env, stub_args, driver_args);
        st._temp = Some(temp);
        st
    }

    /// As [`start`](Self::start), with the sockets in `dir` (which must exist).
    pub fn start_in(dir: &Path, stub_args: &[&str], driver_args: Option<&[&str]>) -> ProcessStack {
        Self::start_env_in(dir, &[], stub_args, driver_args)
    }

    fn start_env_in(
        dir: &Path,
        env: &[(&str, &std::ffi::OsStr)],
        stub_args: &[&str],
        driver_args: Option<&[&str]>,
    ) -> ProcessStack {
        let mut st = ProcessStack {
            dir: dir.to_path_buf(),
            _temp: None,
            children: Vec::new(),
            driver: None,
        };
        let stub_sock = st.stub_socket();
        st.spawn(
            Command::new(bin_dir().join("vgpu-stub"))
                .envs(env.iter().copied())
                .arg("--socket")
                .arg(&stub_sock)
                .args(stub_args),
        );
        if let Some(driver_args) = driver_args {
            st.start_driver(driver_args);
        }
        st
    }

    /// Starts `vgpu-driver` on the stub with `driver_args` (the sockets are added) and
    /// waits until it accepts clients.
    pub fn start_driver(&mut self, driver_args: &[&str]) {
        let stub_sock = self.stub_socket();
        // The driver connects once: wait for the stub to listen (a connect to it would
        // use up one of its connections).
        retry("vgpu-stub to listen", START_TIMEOUT, || {
            self.check_running();
            listening(&stub_sock)
        });
        let control = self.control();
        self.spawn(
            Command::new(bin_dir().join("vgpu-driver"))
                .arg("--vfio-user")
                .arg(&stub_sock)
                .arg("--socket")
                .arg(&control)
                .args(driver_args),
        );
        self.driver = Some(self.children.len() - 1);
        retry("vgpu-driver to accept", START_TIMEOUT, || {
            self.check_running();
            vgpu_driver::client::connect(&control)
        });
    }

    /// Waits up to `timeout` for the driver to exit on its own; its exit status, or `None`
    /// if it is still running.
    pub fn wait_driver(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let i = self.driver?;
        let t0 = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.children[i].try_wait() {
                // Reaped already; wait() returns the same status at once.
                let _ = self.children.remove(i).wait();
                self.driver = None;
                return Some(status);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the driver (SIGKILL) and reaps it.
    pub fn kill_driver(&mut self) {
        if let Some(i) = self.driver.take() {
            let mut d = self.children.remove(i);
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// The stub's vfio-user socket.
    pub fn stub_socket(&self) -> PathBuf {
        self.dir.join("stub.sock")
    }

    /// The driver's control socket.
    pub fn control(&self) -> PathBuf {
        self.dir.join("vgpu.sock")
    }

    fn spawn(&mut self, cmd: &mut Command) {
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {cmd:?} ({e}): build the workspace's binaries first (cargo build)")
        });
        self.children.push(child);
    }

    /// Panics if a process of the stack has exited.
    pub fn check_running(&mut self) {
        for c in &mut self.children {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("a process of the stack exited: {status}");
            }
        }
    }

    /// The stub's process (to kill or wait for).
    pub fn stub(&mut self) -> &mut Child {
        &mut self.children[0]
    }
}

impl Drop for ProcessStack {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether a Unix stream socket at `path` is in the listening state, read from
/// `/proc/net/unix` so that no connection is made.
fn listening(path: &Path) -> Result<(), String> {
    let table = std::fs::read_to_string("/proc/net/unix").map_err(|e| e.to_string())?;
    let want = path.to_string_lossy();
    // Columns: Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 = __SO_ACCEPTCON.
    let found = table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8
            && f[7] == want
            && u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & 0x10000 != 0)
    });
    if found {
        Ok(())
    } else {
        Err(format!("{want} is not listening yet"))
    }
}
