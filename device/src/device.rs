//! The VGPU-STUB function: BAR0 registers and the life cycle (spec §3–§4), tying together
//! configuration space, MSI-X, guest memory and the queue engine.

use crate::config::{ConfigSpace, Identity};
use crate::engine::{Engine, Env};
use crate::exec::Executor;
use crate::guest::GuestMemory;
use crate::msix::Msix;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vgpu_os::lock;
use vgpu_proto::info::ObjectCounts;
use vgpu_proto::regs::{self, control, fatal, features, status};

#[derive(Default)]
struct Regs {
    drv_features: u64,
    control: u32,
    status: u32,
    fatal: u32,
    admin_depth: u32,
    admin_base: u64,
    scratch: u32,
}

/// One VGPU-STUB function.
pub struct Device {
    identity: Identity,
    executor: Arc<dyn Executor>,
    /// Guest memory mapped for DMA.
    pub mem: Arc<GuestMemory>,
    /// MSI-X state.
    pub msix: Arc<Msix>,
    config: Mutex<ConfigSpace>,
    regs: Arc<Mutex<Regs>>,
    engine: Mutex<Option<Engine>>,
    /// Engines being torn down in the background after a reset or disable.
    teardowns: Mutex<Vec<std::thread::JoinHandle<()>>>,
    bus_master: Arc<AtomicBool>,
}

impl Device {
    /// A device in its reset state.
    pub fn new(identity: Identity, executor: Arc<dyn Executor>) -> Self {
        Device {
            identity,
            executor,
            mem: Arc::new(GuestMemory::new()),
            msix: Arc::new(Msix::new()),
            config: Mutex::new(ConfigSpace::new(identity)),
            regs: Arc::new(Mutex::new(Regs::default())),
            engine: Mutex::new(None),
            teardowns: Mutex::new(Vec::new()),
            bus_master: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Configuration-space read.
    pub fn config_read(&self, offset: u64, data: &mut [u8]) {
        lock(&self.config).read(offset, data);
    }

    /// Configuration-space write.
    pub fn config_write(&self, offset: u64, data: &[u8]) {
        let (bm, ctl) = {
            let mut c = lock(&self.config);
            c.write(offset, data);
            (c.bus_master(), c.msix_control())
        };
        self.bus_master.store(bm, Ordering::Release);
        use crate::config::msix_control::{ENABLE, FUNCTION_MASK};
        self.msix
            .set_control(ctl & ENABLE != 0, ctl & FUNCTION_MASK != 0, bm);
    }

    /// BAR0 read (registers and doorbells).
    pub fn bar0_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((reg, shift)) = self.register_for(offset, data.len()) else {
            return;
        };
        let r = lock(&self.regs);
        let v: u64 = match reg {
            regs::MAGIC => u64::from(regs::MAGIC_VALUE),
            regs::VERSION => u64::from(regs::VERSION_VALUE),
            regs::DEV_FEATURES => features::ALL,
            regs::DRV_FEATURES => r.drv_features,
            regs::CAPS => u64::from(regs::caps::VALUE),
            regs::NUM_VECTORS => u64::from(regs::pci::MSIX_VECTORS),
            regs::CONTROL => u64::from(r.control),
            regs::STATUS => u64::from(r.status),
            regs::FATAL_CODE => u64::from(r.fatal),
            regs::ADMIN_DEPTH => u64::from(r.admin_depth),
            regs::ADMIN_BASE => r.admin_base,
            regs::SCRATCH => u64::from(r.scratch),
            regs::IO_QUEUES => {
                drop(r);
                u64::from(lock(&self.engine).as_ref().map_or(0, |e| e.io_queues()))
            }
            _ => 0,
        };
        let bytes = (v >> shift).to_le_bytes();
        data.copy_from_slice(&bytes[..data.len()]);
    }

    /// Maps an access to (register offset, bit shift), or `None` for a malformed access or
    /// one outside the registers.
    fn register_for(&self, offset: u64, len: usize) -> Option<(u64, u32)> {
        if !(len == 4 || len == 8) || offset % len as u64 != 0 || offset >= regs::DOORBELL_BASE {
            if offset < regs::DOORBELL_BASE {
                log::debug!("BAR0 access of {len} bytes at {offset:#x} ignored");
            }
            return None;
        }
        if let Some(r) = regs::register_at(offset) {
            return (len <= r.width as usize).then_some((offset, 0));
        }
        // The high half of a 64-bit register.
        let r = regs::register_at(offset - 4).filter(|r| r.width == 8 && len == 4)?;
        Some((r.offset, 32))
    }

    /// BAR0 write.
    pub fn bar0_write(&self, offset: u64, data: &[u8]) {
        if offset >= regs::DOORBELL_BASE {
            let q = (offset - regs::DOORBELL_BASE) / regs::DOORBELL_STRIDE;
            if data.len() == 4 && offset % 4 == 0 && q <= u64::from(regs::caps::MAX_IO_QUEUES) {
                if let Some(e) = lock(&self.engine).as_ref() {
                    e.ring(q as u16);
                }
            }
            return;
        }
        let Some((reg, shift)) = self.register_for(offset, data.len()) else {
            return;
        };
        let mut raw = [0u8; 8];
        raw[..data.len()].copy_from_slice(data);
        let v = u64::from_le_bytes(raw);
        let merge = |old: u64| -> u64 {
            if data.len() == 8 {
                v
            } else {
                let mask = 0xFFFF_FFFFu64 << shift;
                (old & !mask) | ((v << shift) & mask)
            }
        };
        let mut r = lock(&self.regs);
        match reg {
            regs::DRV_FEATURES => r.drv_features = merge(r.drv_features),
            regs::ADMIN_DEPTH => r.admin_depth = v as u32,
            regs::ADMIN_BASE => r.admin_base = merge(r.admin_base),
            regs::SCRATCH => r.scratch = v as u32,
            regs::CONTROL => {
                drop(r);
                self.write_control(v as u32);
            }
            _ => log::debug!("write to read-only BAR0 register {reg:#x} ignored"),
        }
    }

    fn write_control(&self, v: u32) {
        if v & control::RESET != 0 {
            return self.reset();
        }
        let was = lock(&self.regs).control & control::ENABLE != 0;
        let now = v & control::ENABLE != 0;
        lock(&self.regs).control = v & control::ENABLE;
        match (was, now) {
            (false, true) => self.enable(),
            (true, false) => {
                self.stop_engine();
                lock(&self.regs).status = 0;
            }
            _ => {}
        }
    }

    fn enable(&self) {
        let (feat, depth, base) = {
            let r = lock(&self.regs);
            (r.drv_features, r.admin_depth, r.admin_base)
        };
        if feat & !features::ALL != 0 {
            return self.set_fatal(fatal::BAD_FEATURES);
        }
        let depth = match u8::try_from(depth) {
            Ok(d) => d,
            Err(_) => return self.set_fatal(fatal::BAD_ADMIN_CONFIG),
        };
        let regs = self.regs.clone();
        let msix = self.msix.clone();
        let env = Env {
            mem: self.mem.clone(),
            msix: self.msix.clone(),
            executor: self.executor.clone(),
            features: feat,
            bus_master: self.bus_master.clone(),
            on_fatal: Box::new(move |code| enter_fatal(&regs, &msix, code)),
        };
        match Engine::start(env, base, depth) {
            Ok(e) => {
                *lock(&self.engine) = Some(e);
                lock(&self.regs).status = status::READY;
                log::info!("device enabled (features {feat:#x}, admin queue at {base:#x}, depth 2^{depth})");
            }
            Err(code) => self.set_fatal(code),
        }
    }

    fn set_fatal(&self, code: u32) {
        enter_fatal(&self.regs, &self.msix, code);
    }

    /// Stops the engine. What must be over before the register write returns is done at
    /// once: every window is revoked and every queue stops posting, so the device no longer
    /// touches guest memory. The contexts are torn down on a thread of their own (bounded,
    /// spec §6.4), so that no vCPU's register write waits for them.
    fn stop_engine(&self) {
        let engine = lock(&self.engine).take();
        if let Some(e) = engine {
            e.quiesce();
            let mut teardowns = lock(&self.teardowns);
            teardowns.retain(|t| !t.is_finished());
            let spawned = std::thread::Builder::new()
                .name("vgpu-teardown".into())
                .spawn(move || e.shutdown());
            match spawned {
                Ok(t) => teardowns.push(t),
                Err(err) => log::error!("cannot start a teardown thread: {err}"),
            }
        }
    }

    /// Waits until every background teardown has ended (a disconnect, and tests).
    pub fn wait_teardowns(&self) {
        let teardowns = std::mem::take(&mut *lock(&self.teardowns));
        for t in teardowns {
            if t.join().is_err() {
                log::error!("a teardown thread panicked");
            }
        }
    }

    /// CONTROL.RESET: every PD, queue and object goes; registers return to reset values.
    pub fn reset(&self) {
        self.stop_engine();
        *lock(&self.regs) = Regs::default();
        self.msix.reset(false);
        log::info!("device reset");
    }

    /// The VMM went away: reset, and forget its DMA mappings and eventfds.
    pub fn disconnect(&self) {
        self.reset();
        // Not a vCPU's register write: the next connection finds every context gone.
        self.wait_teardowns();
        self.mem.clear();
        self.msix.reset(true);
        *lock(&self.config) = ConfigSpace::new(self.identity);
        self.bus_master.store(false, Ordering::Release);
    }

    /// Device totals of live objects (what PD_STATS of PD 0 reports).
    pub fn totals(&self) -> ObjectCounts {
        match lock(&self.engine).as_ref() {
            Some(e) => e.totals(),
            None => bytemuck::Zeroable::zeroed(),
        }
    }
}

fn enter_fatal(regs: &Mutex<Regs>, msix: &Msix, code: u32) {
    {
        let mut r = lock(regs);
        r.status = status::FATAL;
        r.fatal = code;
    }
    log::error!("device entered the fatal state (FATAL_CODE {code})");
    msix.signal(0);
}
