//! The process's connection to vgpu-driver, made once by `cuInit`.

use std::sync::{Arc, Mutex, OnceLock};
use vgpu_proto::info::DeviceInfo;
use vgpu_proto::Status;
use vgpu_shim::client::{ConnectOptions, Connection, QueuePair};

/// The connection, or why there is none.
pub struct Session {
    /// The connection (None when the driver could not be reached).
    pub conn: Option<Mutex<Connection>>,
    /// Its queue pair, kept here so that posting a command needs no lock of the connection.
    pub queue: Option<Arc<QueuePair>>,
    /// The device info received at connection.
    pub info: Option<DeviceInfo>,
    /// What cuInit reports.
    pub status: Status,
}

static SESSION: OnceLock<Session> = OnceLock::new();

fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().filter_or("VGPU_LOG", "warn"))
        .try_init();
}

/// Connects on first use.
pub fn session() -> &'static Session {
    SESSION.get_or_init(|| {
        init_logging();
        let opts = ConnectOptions::from_env();
        match Connection::connect(&opts) {
            Ok(c) => {
                let info = *c.device_info();
                log::info!(
                    "vgpu: connected to {} (PD {}): {}",
                    opts.socket.display(),
                    c.pd(),
                    info.name()
                );
                Session {
                    queue: Some(c.queue().clone()),
                    conn: Some(Mutex::new(c)),
                    info: Some(info),
                    status: Status::SUCCESS,
                }
            }
            Err(e) => {
                log::warn!(
                    "vgpu: no device: cannot reach vgpu-driver at {}: {e}",
                    opts.socket.display()
                );
                Session {
                    conn: None,
                    queue: None,
                    info: None,
                    status: e.status(),
                }
            }
        }
    })
}

/// The session if cuInit has run.
pub fn initialized() -> Option<&'static Session> {
    SESSION.get()
}

/// True when device 0 is visible under `CUDA_VISIBLE_DEVICES` (an index list or `GPU-<uuid>`
/// entries; unset means visible).
pub fn visible(info: &DeviceInfo) -> bool {
    let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") else {
        return true;
    };
    let first = v.split(',').next().unwrap_or("").trim();
    if first.is_empty() {
        return false;
    }
    if let Some(uuid) = first.strip_prefix("GPU-") {
        return info.uuid_string().starts_with(&uuid.to_ascii_lowercase());
    }
    first.parse::<i64>() == Ok(0)
}

/// Number of devices this process sees (0 or 1), once initialised.
pub fn device_count() -> i32 {
    match initialized().and_then(|s| s.info.as_ref()) {
        Some(info) if visible(info) => 1,
        _ => 0,
    }
}
