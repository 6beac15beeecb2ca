//! `vgpu-smi`: the first thing to run to check a vGPU, in a layout an `nvidia-smi` user reads
//! at a glance: the device (name, UUID, PCI bus id, compute capability), the driver and CUDA
//! versions, device memory in use and in all, GPU utilisation, and the processes using it (their PD, queue,
//! windows and device memory), from vgpu-driver's status (STATUS_QUERY). `--json` prints the
//! status as the driver gives it. Exit status 1, with the reason, when the driver cannot be
//! reached.

use clap::Parser;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(version, about = "The vGPU, its memory and the processes using it")]
struct Args {
    /// vgpu-driver's control socket (default: $VGPU_SOCKET, else the driver's default).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print the driver's status as JSON.
    #[arg(long)]
    json: bool,
}

fn mib(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0) >> 20
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("?")
}

/// `s` cut to `n` characters (with `...` when cut), padded to `n`.
fn fit(s: &str, n: usize) -> String {
    let cut: String = if s.chars().count() > n {
        s.chars()
            .take(n.saturating_sub(3))
            .chain("...".chars())
            .collect()
    } else {
        s.to_string()
    };
    format!("{cut:<n$}")
}

/// Inner width of the table, and of its three device columns.
const W: usize = 86;
const COLS: [usize; 3] = [41, 23, W - 41 - 23 - 2];

fn line(inner: &str) -> String {
    format!("|{inner:<W$}|")
}

fn cells(a: &str, b: &str, c: &str) -> String {
    let [x, y, z] = COLS;
    line(&format!(
        " {a:<w1$}| {b:<w2$}| {c:<w3$}",
        w1 = x - 1,
        w2 = y - 1,
        w3 = z - 1
    ))
}

fn table(st: &Value) -> String {
    let rule = format!("+{}+", "-".repeat(W));
    let [x, y, z] = COLS;
    let mut out = vec![
        rule.clone(),
        line(&format!(
            " VGPU-SMI {:<12} Driver Version: {:<14} CUDA Version: {}",
            env!("CARGO_PKG_VERSION"),
            text(st, "driver_version"),
            text(st, "cuda_version")
        )),
        format!("|{}+{}+{}|", "-".repeat(x), "-".repeat(y), "-".repeat(z)),
        cells("GPU  Name", "Bus-Id", "Compute cap."),
        cells("     UUID", "Memory-Usage", "GPU-Util  Clients"),
        format!("|{}+{}+{}|", "=".repeat(x), "=".repeat(y), "=".repeat(z)),
        cells(
            &format!("  0  {}", fit(text(st, "device"), x - 7)),
            text(st, "pci_bus_id"),
            text(st, "compute_capability"),
        ),
        cells(
            &format!("     {}", fit(text(st, "uuid"), x - 7)),
            &format!(
                "{}MiB / {}MiB",
                mib(&st["mem_used"]),
                mib(&st["device_memory"])
            ),
            &format!(
                "{:>7}%  {} / {}",
                st["gpu_util"].as_u64().unwrap_or(0),
                st["clients"].as_array().map_or(0, Vec::len)
                    + st["other_clients"].as_u64().unwrap_or(0) as usize,
                st["max_clients"].as_u64().unwrap_or(0)
            ),
        ),
        rule.clone(),
        String::new(),
        rule.clone(),
        line(" Processes:"),
        line(&format!(
            " {:>3} {:>8} {:>6} {:>4} {:>5}  {:<24} {:>8}  {:<18}",
            "GPU", "PID", "UID", "PD", "Queue", "Process name", "Windows", "GPU Memory (quota)"
        )),
        format!("|{}|", "=".repeat(W)),
    ];
    let clients = st["clients"].as_array().cloned().unwrap_or_default();
    let others = st["other_clients"].as_u64().unwrap_or(0);
    if clients.is_empty() && others == 0 {
        out.push(line("  No processes are using the vGPU"));
    }
    for c in &clients {
        out.push(line(&format!(
            " {:>3} {:>8} {:>6} {:>4} {:>5}  {} {:>8}  {:<18}",
            0,
            c["pid"].as_i64().unwrap_or(0),
            c["uid"].as_u64().unwrap_or(0),
            c["pd"].as_u64().unwrap_or(0),
            c["queue"].as_u64().unwrap_or(0),
            fit(text(c, "name"), 24),
            format!("{}MiB", mib(&c["window_bytes"])),
            format!("{}MiB ({}MiB)", mib(&c["mem_bytes"]), mib(&c["mem_quota"]))
        )));
    }
    if others > 0 {
        out.push(line(&format!(
            "  {others} process(es) of other users not shown (run as root to see them)"
        )));
    }
    out.push(rule);
    out.join("\n")
}

fn main() {
    let args = Args::parse();
    let socket = args
        .socket
        .or_else(|| std::env::var_os("VGPU_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(vgpu_proto::control::DEFAULT_SOCKET));
    let status = match vgpu_driver::client::status(&socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "vgpu-smi: cannot reach vgpu-driver at {}: {e} (is it running? --socket or VGPU_SOCKET names its socket)",
                socket.display()
            );
            std::process::exit(1);
        }
    };
    if args.json {
        println!("{status}");
        return;
    }
    match serde_json::from_str::<Value>(&status) {
        Ok(v) => println!("{}", table(&v)),
        Err(e) => {
            eprintln!("vgpu-smi: the driver's status is not JSON ({e}): {status}");
            std::process::exit(1);
        }
    }
}
