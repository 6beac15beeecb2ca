//! `vgpu-driver`: claims VGPU-STUB and serves it to the shims; `vgpu-driver status` prints
//! a running driver's status.

#![deny(unsafe_code)]

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use vgpu_driver::backing::{DeviceBacking, VfioUserBacking};
use vgpu_driver::device::Device;
use vgpu_driver::kernel_vfio::KernelVfioBacking;
use vgpu_driver::noiommu::NoIommuBacking;
use vgpu_driver::server::{self, Driver, Limits};

/// The VGPU-STUB driver daemon.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Drive vgpu-stub over vfio-user at this socket (no VM).
    #[arg(long, conflicts_with = "device")]
    vfio_user: Option<PathBuf>,
    /// The device through kernel VFIO: a PCI address (0000:00:03.0) or VENDOR:DEVICE.
    #[arg(long)]
    device: Option<String>,
    /// With --device: VFIO's no-IOMMU mode, for VMs without a virtual IOMMU. UNSAFE: the
    /// device can reach all guest memory. Needs a kernel with CONFIG_VFIO_NOIOMMU booted with
    /// vfio.enable_unsafe_noiommu_mode=1, reserved huge pages, and CAP_SYS_ADMIN/CAP_SYS_RAWIO.
    #[arg(long, requires = "device", conflicts_with = "vfio_user")]
    no_iommu: bool,
    /// Control socket.
    #[arg(long, default_value = vgpu_proto::control::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Group that may connect (the socket is mode 0660).
    #[arg(long)]
    group: Option<String>,
    /// Clients at once.
    #[arg(long, default_value_t = 64)]
    max_clients: usize,
    /// Clients at once per uid.
    #[arg(long, default_value_t = 16)]
    max_clients_per_uid: usize,
    /// log2 of each client's ring depth.
    #[arg(long, default_value_t = 10)]
    queue_depth_log2: u8,
    /// Size of each client's first window in bytes [default: 64 MiB; one huge page with
    /// --no-iommu, where a window must be physically contiguous].
    #[arg(long)]
    window_size: Option<u64>,
    /// Window memory per client in bytes.
    #[arg(long, default_value_t = 4 << 30)]
    max_window_bytes: u64,
    /// Window memory of all clients in bytes.
    #[arg(long, default_value_t = 16 << 30)]
    max_total_window_bytes: u64,
    /// Device-memory quota per client in bytes (0 = all of it).
    #[arg(long, default_value_t = 0)]
    device_memory_quota: u64,
    /// Most MSI-X vectors to route (1-256): queues past them wake their sleeping clients by
    /// a timer. Kernel VFIO asks for this many and takes fewer if the system refuses.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=256))]
    max_vectors: u16,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a running driver's status (clients, queues, windows, memory) as JSON.
    Status,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if let Some(Cmd::Status) = args.command {
        return status(&args.socket);
    }
    let backing: Box<dyn DeviceBacking> = match (&args.vfio_user, &args.device) {
        (Some(path), _) => match VfioUserBacking::connect(path) {
            Ok(b) => Box::new(b),
            Err(e) => return fail(&e.report()),
        },
        (None, Some(dev)) => {
            let opened = if args.no_iommu {
                NoIommuBacking::open(dev, args.max_vectors)
                    .map(|b| Box::new(b) as Box<dyn DeviceBacking>)
            } else {
                KernelVfioBacking::open(dev, args.max_vectors)
                    .map(|b| Box::new(b) as Box<dyn DeviceBacking>)
            };
            match opened {
                Ok(b) => b,
                Err(e) => return fail(&format!("cannot open {dev}: {}", e.report())),
            }
        }
        (None, None) => return fail("give --vfio-user SOCKET (or --device, for kernel VFIO)"),
    };
    let dev = match Device::bring_up(backing) {
        Ok(d) => d,
        Err(e) => return fail(&format!("bring-up failed: {}", e.report())),
    };
    let limits = Limits {
        max_clients: args.max_clients.min(255),
        max_clients_per_uid: args.max_clients_per_uid,
        queue_depth_log2: args.queue_depth_log2.clamp(1, 15),
        window_bytes: args.window_size.unwrap_or(if args.no_iommu {
            vgpu_os::shm::default_huge_page_size().map_or(2 << 20, |p| p as u64)
        } else {
            64 << 20
        }),
        max_window_bytes: args.max_window_bytes,
        max_total_window_bytes: args.max_total_window_bytes,
        pd_mem_quota: args.device_memory_quota,
        max_vectors: args.max_vectors,
    };
    let listener = match server::listen(&args.socket, 0o660, args.group.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            return fail(&format!(
                "cannot listen on {}: {}",
                args.socket.display(),
                e.report()
            ))
        }
    };
    let driver = Driver::new(dev, limits);
    let lost = watch_device(driver.clone());
    server::serve(driver.clone(), listener);
    if let Some(why) = lost.lock().unwrap_or_else(|p| p.into_inner()).take() {
        // Exiting closes every client's connection (they see the driver gone) and lets
        // the service manager start a new driver, which brings the device up again.
        return fail(&format!(
            "{}; exiting so that the driver is restarted",
            why.report()
        ));
    }
    driver.device().shutdown();
    ExitCode::SUCCESS
}

/// How often the driver checks that the device is still there.
const LIVENESS_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// Checks the device every [`LIVENESS_PERIOD`]; when it is lost, records why and stops the
/// driver's accept loop.
fn watch_device(driver: Arc<Driver>) -> Arc<Mutex<Option<vgpu_driver::DriverError>>> {
    let lost = Arc::new(Mutex::new(None));
    let seen = lost.clone();
    let spawned = std::thread::Builder::new()
        .name("vgpu-liveness".into())
        .spawn(move || loop {
            std::thread::sleep(LIVENESS_PERIOD);
            if let Err(e) = driver.device().check_alive() {
                log::error!("{}", e.report());
                *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                driver.stop();
                return;
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the device liveness check: {e}");
    }
    lost
}

fn fail(msg: &str) -> ExitCode {
    log::error!("{msg}");
    eprintln!("vgpu-driver: {msg}");
    ExitCode::FAILURE
}

fn status(socket: &std::path::Path) -> ExitCode {
    match vgpu_driver::client::status(socket) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("cannot query {}: {e}", socket.display())),
    }
}
