//! Fuzz target: sequences of I/O commands executed by the device, not only decoded. One
//! engine over the soft executor, with a PD, window 1 and an I/O queue in guest RAM, lives
//! across inputs. Each input is: a count byte, that many 64-byte submission entries (their
//! opcode folded onto an I/O opcode; cids and the INLINE flag set here), and bytes copied
//! into window 1 first (payloads, copy sources). The entries are submitted as a client
//! would, host functions are answered, and CTX_SYNCHRONIZE then CTX_RESET must complete
//! within seconds: a hang, a panic or an abort is a finding.
#![no_main]

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use vgpu_os::shm::SharedMemory;
use vgpu_proto::cmd::{HandleArgs, PdCreateArgs, QueueCreateArgs, WindowRegisterArgs};
use vgpu_proto::opcode::QueueKind;
use vgpu_proto::queue::{cqe_flags, sqe_flags, QueueLayout, SQE_SIZE};
use vgpu_proto::regs::features;
use vgpu_proto::{Command, Opcode};
use vgpu_stub::engine::{Engine, Env};
use vgpu_stub::exec::soft::{SoftConfig, SoftExecutor};
use vgpu_stub::guest::GuestMemory;
use vgpu_stub::msix::Msix;
use vgpu_test_stack::queue::QueueClient;

const IOVA: u64 = 0x1000_0000;
const RAM: u64 = 8 << 20;
const WINDOW: u64 = IOVA + (4 << 20);
const WINDOW_LEN: u64 = 1 << 20;
/// How long one input may take to settle before it counts as a hang.
const SETTLE: Duration = Duration::from_secs(20);

struct Rig {
    _engine: Arc<Engine>,
    ram: Arc<SharedMemory>,
    io: QueueClient,
    io_ops: Vec<Opcode>,
}

fn doorbell(engine: &Arc<Engine>, qid: u16) -> vgpu_test_stack::queue::Doorbell {
    let engine = Arc::downgrade(engine);
    Box::new(move |_| {
        if let Some(e) = engine.upgrade() {
            e.ring(qid)
        }
    })
}

impl Rig {
    fn start() -> Rig {
        let file = tempfile::tempfile().expect("guest RAM");
        file.set_len(RAM).expect("guest RAM size");
        let mem = Arc::new(GuestMemory::new());
        mem.map(IOVA, RAM, file.try_clone().expect("fd"), 0, true)
            .expect("guest RAM mapped");
        let ram = Arc::new(SharedMemory::from_file(file).expect("guest RAM mapped here"));
        let executor = SoftExecutor::new(SoftConfig {
            memory: 64 << 20,
            launch_timeout: Duration::from_secs(2),
            ..Default::default()
        });
        let env = Env {
            mem,
            msix: Arc::new(Msix::new()),
            executor: Arc::new(executor),
            features: features::ALL,
            bus_master: Arc::new(AtomicBool::new(true)),
            on_fatal: Box::new(|code| panic!("the device went fatal ({code})")),
        };
        let admin_layout = QueueLayout::new(4, 12).expect("admin layout");
        let engine = Arc::new(Engine::start(env, IOVA, admin_layout.depth_log2).expect("engine"));
        let mut admin =
            QueueClient::new(ram.clone(), 0, 0, admin_layout, doorbell(&engine, 0), None);
        let mut admin_ok = |c: Command| {
            let r = admin.call(c, 0, &[]);
            assert!(r.status().is_ok(), "{c:?}: {r:?}");
            r.result0
        };
        let pd = admin_ok(Command::PD_CREATE(PdCreateArgs {
            mem_quota: 32 << 20,
            ..bytemuck::Zeroable::zeroed()
        })) as u32;
        admin_ok(Command::WINDOW_REGISTER(WindowRegisterArgs {
            pd,
            window: 1,
            iova: WINDOW,
            len: WINDOW_LEN,
            access: 3,
            rsv0: 0,
        }));
        let layout = QueueLayout::new(7, 15).expect("I/O layout");
        let base = IOVA + (1 << 20);
        admin_ok(Command::QUEUE_CREATE(QueueCreateArgs {
            pd,
            qid: 1,
            vector: 1,
            depth_log2: layout.depth_log2,
            base,
            ..bytemuck::Zeroable::zeroed()
        }));
        let io = QueueClient::new(
            ram.clone(),
            (base - IOVA) as usize,
            1,
            layout,
            doorbell(&engine, 1),
            None,
        );
        let io_ops = Opcode::ALL
            .iter()
            .copied()
            .filter(|o| o.info().queue == QueueKind::Io)
            .collect();
        Rig {
            _engine: engine,
            ram,
            io,
            io_ops,
        }
    }

    /// Waits for the completion of `cid`, answering host functions on the way.
    fn settle(&mut self, cid: u32, what: &str) {
        let t0 = std::time::Instant::now();
        loop {
            let left = SETTLE.saturating_sub(t0.elapsed());
            let Some(c) = self.io.next(left.min(Duration::from_millis(200))) else {
                assert!(t0.elapsed() < SETTLE, "{what} never completed: a hang");
                continue;
            };
            if c.flags & cqe_flags::CALLBACK != 0 {
                let done = HandleArgs {
                    handle: c.result0,
                    ..bytemuck::Zeroable::zeroed()
                };
                self.io.submit(Command::HOST_FUNC_DONE(done), 0, &[], false);
            } else if c.cid == cid {
                return;
            }
        }
    }

    fn run(&mut self, data: &[u8]) {
        let Some((&count, rest)) = data.split_first() else {
            return;
        };
        let n = (usize::from(count) % 16 + 1).min(rest.len() / SQE_SIZE);
        let (entries, window) = rest.split_at(n * SQE_SIZE);
        let window = &window[..window.len().min(WINDOW_LEN as usize)];
        self.ram
            .write_bytes((WINDOW - IOVA) as usize, window)
            .expect("window inside guest RAM");
        for e in entries.chunks_exact(SQE_SIZE) {
            let mut sqe = [0u8; SQE_SIZE];
            sqe.copy_from_slice(e);
            let op = u16::from_le_bytes([sqe[0], sqe[1]]) as usize % self.io_ops.len();
            sqe[..2].copy_from_slice(&(self.io_ops[op] as u16).to_le_bytes());
            let flags = u16::from_le_bytes([sqe[2], sqe[3]]) & !sqe_flags::INLINE;
            sqe[2..4].copy_from_slice(&flags.to_le_bytes());
            let cid = self.io.cid();
            sqe[4..8].copy_from_slice(&cid.to_le_bytes());
            self.io.submit_raw(&sqe, &[]);
        }
        let sync = self.io.submit(
            Command::CTX_SYNCHRONIZE(bytemuck::Zeroable::zeroed()),
            0,
            &[],
            false,
        );
        self.settle(sync, "CTX_SYNCHRONIZE");
        let reset = self.io.submit(
            Command::CTX_RESET(bytemuck::Zeroable::zeroed()),
            0,
            &[],
            false,
        );
        self.settle(reset, "CTX_RESET");
    }
}

static RIG: OnceLock<Mutex<Rig>> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rig = RIG.get_or_init(|| Mutex::new(Rig::start()));
    rig.lock().unwrap_or_else(|p| p.into_inner()).run(data);
});
