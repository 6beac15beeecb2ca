//! `vgpu-stub`: serves VGPU-STUB over vfio-user.

#![deny(unsafe_code)]

use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vgpu_stub::config::Identity;
use vgpu_stub::device::Device;
use vgpu_stub::exec::cuda::CudaExecutor;
use vgpu_stub::exec::soft::{SoftConfig, SoftExecutor};
use vgpu_stub::exec::Executor;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExecutorKind {
    /// The software device (CPU; kernels run from their PTX on an interpreter).
    Soft,
    /// The real GPU through CUDA.
    Cuda,
    /// cuda when a GPU is usable, soft otherwise.
    Auto,
}

/// The VGPU-STUB device model: a vfio-user server for QEMU's vfio-user-pci.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Unix socket to listen on.
    #[arg(long)]
    socket: PathBuf,
    /// Which executor runs the commands.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Auto)]
    executor: ExecutorKind,
    /// Device memory of the soft executor, e.g. 16G, 512M (default 80G).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// PCI vendor and device ID, e.g. 1234:7667.
    #[arg(long, value_parser = parse_ids)]
    ids: Option<Identity>,
    /// Compute capability the soft device reports, e.g. 9.0.
    #[arg(long, value_parser = parse_cc)]
    compute_capability: Option<(u32, u32)>,
    /// Device name the soft device reports.
    #[arg(long)]
    name: Option<String>,
    /// Streaming multiprocessors the soft device reports.
    #[arg(long)]
    sm_count: Option<u32>,
    /// UUID the soft device reports (32 hex digits, dashes allowed).
    #[arg(long, value_parser = parse_uuid)]
    uuid: Option<[u8; 16]>,
    /// PCI address the soft device reports to applications, DOMAIN:BUS:DEVICE.FUNCTION.
    #[arg(long, value_parser = parse_pci)]
    pci_address: Option<(u32, u8, u8, u8)>,
    /// Serve this many connections, then exit (default: forever).
    #[arg(long)]
    connections: Option<usize>,
    /// Soft device: run kernels only from their PTX, never through the CPU reference
    /// kernels (a kernel whose image carries no PTX then fails to launch).
    #[arg(long)]
    no_reference_kernels: bool,
    /// Soft device: interpret every PTX instruction, compiling none to native code.
    #[arg(long)]
    no_jit: bool,
    /// Soft device: seconds a kernel may run before its launch fails with
    /// CUDA_ERROR_LAUNCH_TIMEOUT (the watchdog a GPU has).
    #[arg(long, default_value_t = 120)]
    launch_timeout: u64,
    /// Soft device: queue workers park while their PD's kernels run, where by default they
    /// keep polling (yielding their CPU between polls), as with the cuda executor: polling
    /// answers the client's next command sooner and took no measurable time from the
    /// kernels.
    #[arg(long)]
    park_while_busy: bool,
    /// cuda executor: which GPU (CUDA ordinal).
    #[arg(long, default_value_t = 0)]
    gpu: i32,
    /// cuda executor: run even on vgpu's own libcuda.so.1, which loops back into another
    /// vGPU (for tests; also VGPU_ALLOW_LOOPBACK=1). Without it that library is refused.
    #[arg(long)]
    allow_loopback: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 4096, 512M, 16G)"))?;
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("size `{s}` is out of range"))
}

fn parse_ids(s: &str) -> Result<Identity, String> {
    let (v, d) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not VENDOR:DEVICE (example: 1234:7667)"))?;
    let hex = |x: &str| {
        u16::from_str_radix(x.trim_start_matches("0x"), 16)
            .map_err(|_| format!("`{x}` is not a 16-bit hex ID"))
    };
    Ok(Identity {
        vendor: hex(v)?,
        device: hex(d)?,
    })
}

fn parse_cc(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once('.')
        .ok_or_else(|| format!("`{s}` is not MAJOR.MINOR (example: 9.0)"))?;
    let p = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| format!("`{s}` is not MAJOR.MINOR"))
    };
    Ok((p(a)?, p(b)?))
}

fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return Err(format!("`{s}` is not a UUID (32 hex digits)"));
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("`{s}` is not a UUID"))?;
    }
    Ok(out)
}

fn parse_pci(s: &str) -> Result<(u32, u8, u8, u8), String> {
    let bad = || format!("`{s}` is not DOMAIN:BUS:DEVICE.FUNCTION (example: 0000:65:00.0)");
    let (dom, rest) = s.split_once(':').ok_or_else(bad)?;
    let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (dev, func) = rest.split_once('.').ok_or_else(bad)?;
    Ok((
        u32::from_str_radix(dom, 16).map_err(|_| bad())?,
        u8::from_str_radix(bus, 16).map_err(|_| bad())?,
        u8::from_str_radix(dev, 16).map_err(|_| bad())?,
        u8::from_str_radix(func, 16).map_err(|_| bad())?,
    ))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let allow_loopback =
        args.allow_loopback || std::env::var_os("VGPU_ALLOW_LOOPBACK").is_some_and(|v| v == "1");
    let executor: Arc<dyn Executor> = match args.executor {
        ExecutorKind::Cuda => match CudaExecutor::open(args.gpu, allow_loopback) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                log::error!("the cuda executor cannot run: {e}");
                eprintln!("vgpu-stub: --executor cuda cannot run: {e}");
                return ExitCode::from(2);
            }
        },
        ExecutorKind::Auto => match CudaExecutor::open(args.gpu, allow_loopback) {
            Ok(e) => {
                log::info!("executor auto: a GPU is usable, running the cuda executor");
                Arc::new(e)
            }
            Err(e) => {
                log::info!("executor auto: no usable GPU ({e}); running the soft executor");
                soft_executor(&args)
            }
        },
        ExecutorKind::Soft => soft_executor(&args),
    };
    let dev = Arc::new(Device::new(args.ids.unwrap_or_default(), executor));
    match vgpu_stub::server::serve(&args.socket, dev, args.connections) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vgpu-stub: cannot serve on {}: {e}", args.socket.display());
            ExitCode::FAILURE
        }
    }
}

/// The soft executor configured by the command line.
fn soft_executor(args: &Args) -> Arc<dyn Executor> {
    let mut cfg = SoftConfig::default();
    if let Some(m) = args.memory {
        cfg.memory = m;
    }
    if let Some(cc) = args.compute_capability {
        cfg.compute_capability = cc;
    }
    if let Some(n) = &args.name {
        cfg.name = n.clone();
    }
    if let Some(n) = args.sm_count {
        cfg.sm_count = n;
    }
    if let Some(u) = args.uuid {
        cfg.uuid = u;
    }
    if let Some(p) = args.pci_address {
        cfg.pci = p;
    }
    cfg.reference_kernels = !args.no_reference_kernels;
    cfg.jit = !args.no_jit;
    cfg.launch_timeout = std::time::Duration::from_secs(args.launch_timeout);
    cfg.poll_while_busy = !args.park_while_busy;
    warn_past_host_memory(cfg.memory);
    Arc::new(SoftExecutor::new(cfg))
}

/// The soft device keeps device memory in host RAM, up to `memory` bytes for all tenants
/// together; says so when that is more than the host has.
fn warn_past_host_memory(memory: u64) {
    let total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    if let Some(kib) = total_kib {
        if memory > kib * 1024 {
            log::warn!(
                "the soft device offers {} MiB of device memory, more than this host's {} MiB of RAM: tenants together could exhaust it (set --memory)",
                memory >> 20,
                kib >> 10
            );
        }
    }
}
