//! `vgpu-bench`: measures the host stack (client core → vgpu-driver → vgpu-stub, soft
//! executor) against floors measured in the same run, prints a table and writes JSON.
//!
//! Usage: `cargo build --release -p vgpu-stub -p vgpu-driver -p vgpu-bench &&
//! target/release/vgpu-bench [--quick] [--json FILE]` (or `ci/bench.sh`).

// The drop-in libraries' exports are called through their C signatures (shims.rs): linked in.
extern crate vgpu_cuda;
extern crate vgpu_cudart;

mod floors;
mod ptx;
mod shims;

use clap::Parser;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vgpu_proto::cmd::*;
use vgpu_proto::{Command, Status};
use vgpu_shim::client::{ConnectOptions, Connection};
use vgpu_test_stack::ProcessStack;

/// Benchmarks of the vgpu host stack.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A short run (for CI: breakage, not timing).
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// Only the round-trip rows, repeated for at least this many seconds (for profiling:
    /// `perf record -a` while it runs).
    #[arg(long)]
    rtt_only: Option<u64>,
    /// Only the PTX interpreter row, measured for at least this many seconds (for
    /// profiling the interpreter; no daemons are started).
    #[arg(long)]
    ptx_only: Option<u64>,
    /// Only the small synchronous copies through libcuda, repeated for at least this many
    /// seconds (for profiling them).
    #[arg(long)]
    small_only: Option<u64>,
    /// Measure through the vgpu-driver already serving this control socket (inside a VM,
    /// say) instead of starting vgpu-stub and vgpu-driver.
    #[arg(long)]
    driver: Option<PathBuf>,
    /// Only the decode loop with a graph, for this many tokens.
    #[arg(long)]
    graph_only: Option<usize>,
    /// The module whose vecAdd the launch benchmark posts.
    #[arg(long, default_value = "fatbin/tests/fixtures/kernels.fatbin")]
    fatbin: PathBuf,
}

/// Loads `image` (header and image in the window at 0, the table after it) and returns
/// vecAdd's function handle.
fn load_vec_add(conn: &Connection, image: &[u8]) -> u64 {
    use vgpu_proto::payload::ModuleImageHeader;
    let w = conn.window(conn.first_window()).expect("window");
    let hash = sha256(image);
    let h = ModuleImageHeader {
        sha256: hash,
        image_len: image.len() as u64,
        rsv: 0,
    };
    w.write(0, bytemuck::bytes_of(&h)).expect("window write");
    w.write(48, image).expect("window write");
    let out_off = (48 + image.len()).next_multiple_of(256);
    let args = ModuleLoadArgs {
        out: OutRef {
            offset: out_off as u64,
            window: w.id(),
            len: 1 << 20,
        },
        ..bytemuck::Zeroable::zeroed()
    };
    let r = Request {
        cid: 0,
        notify: false,
        stream: 0,
        payload: Payload::Window {
            window: w.id(),
            offset: 0,
            len: (48 + image.len()) as u32,
        },
        command: Command::MODULE_LOAD(args),
    };
    let c = conn.queue().call(r, &[]).expect("module load");
    assert_eq!(c.status(), Status::SUCCESS, "module load");
    let mut table = vec![0u8; c.result1 as usize];
    w.read(out_off, &mut table).expect("window read");
    let (_, funcs) = vgpu_proto::info::decode_module_info(&table).expect("module table");
    funcs
        .iter()
        .find(|f| f.name == "_Z6vecAddPKfS0_Pfi")
        .expect("vecAdd")
        .record
        .handle
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    floor_name: String,
    floor: f64,
    /// True when smaller is better (latencies).
    lower_is_better: bool,
    target: Option<f64>,
    /// For latency rows: the 99th percentile (the value is the median).
    p99: Option<f64>,
}

impl Row {
    /// value / floor: for latencies how many times the floor, for bandwidths the fraction of it.
    fn ratio(&self) -> f64 {
        self.value / self.floor
    }
}

fn req(command: Command) -> Request {
    Request {
        cid: 0,
        notify: false,
        stream: 0,
        payload: Payload::None,
        command,
    }
}

fn rtt(q: &vgpu_shim::client::QueuePair, rounds: usize) -> Vec<u64> {
    let nop = || req(Command::NOP(bytemuck::Zeroable::zeroed()));
    for _ in 0..200 {
        q.call(nop(), &[]).expect("NOP failed");
    }
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        let c = q.call(nop(), &[]).expect("NOP failed");
        lat.push(t0.elapsed().as_nanos() as u64);
        assert_eq!(c.status(), Status::SUCCESS);
    }
    lat.sort_unstable();
    lat
}

/// Bytes per second of `count` copies of `size` bytes, one direction, ended by a synchronize.
fn bandwidth(
    conn: &Connection,
    window: u32,
    dev: u64,
    size: u64,
    htod: bool,
    min_time: Duration,
) -> f64 {
    let q = conn.queue();
    let sync = || {
        let s = q
            .call(
                req(Command::STREAM_SYNCHRONIZE(bytemuck::Zeroable::zeroed())),
                &[],
            )
            .expect("sync failed");
        assert_eq!(s.status(), Status::SUCCESS, "copies failed");
    };
    let command = if htod {
        Command::MEMCPY_HTOD(CopyHtoDArgs {
            dst: dev,
            len: size,
            src_window: window,
            rsv0: 0,
            src_offset: 0,
        })
    } else {
        Command::MEMCPY_DTOH(CopyDtoHArgs {
            src: dev,
            len: size,
            dst_window: window,
            rsv0: 0,
            dst_offset: 0,
        })
    };
    let mut n = 0u64;
    let copy = || {
        q.submit(req(command), &[]).expect("copy failed");
        n += 1;
        // A synchronize every 8 copies keeps the ring from filling.
        if n % 8 == 0 {
            sync();
        }
    };
    floors::best_rate(size as usize, min_time, copy, sync)
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn main() {
    let args = Args::parse();
    let rounds = if args.quick { 2_000 } else { 20_000 };
    let min_time = if args.quick {
        Duration::from_millis(30)
    } else {
        Duration::from_millis(300)
    };
    let sizes: Vec<u64> = if args.quick {
        vec![4 << 10, 1 << 20, 4 << 20]
    } else {
        vec![
            4 << 10,
            64 << 10,
            1 << 20,
            4 << 20,
            16 << 20,
            64 << 20,
            256 << 20,
        ]
    };
    let max = *sizes.iter().max().unwrap_or(&(4 << 20));
    if let Some(secs) = args.ptx_only {
        for r in ptx::interpreter(Duration::from_secs(secs)) {
            println!(
                "{}: {:.1} {} against {:.1} {} ({})",
                r.name, r.value, r.unit, r.floor, r.unit, r.floor_name
            );
        }
        return;
    }

    // The drop-in libraries (linked in) find the driver through VGPU_SOCKET; set it while
    // this process has one thread.
    let dir = std::env::temp_dir().join(format!("vgpu-bench-{}", std::process::id()));
    let drv_sock = args.driver.clone().unwrap_or_else(|| dir.join("vgpu.sock"));
    std::env::set_var("VGPU_SOCKET", &drv_sock);

    // Floors first: they fork, which must happen before any thread exists.
    let spin = floors::spin_ping_pong(rounds);
    let handoff: Vec<Vec<u64>> = shims::SMALL_SIZES
        .iter()
        .map(|&size| floors::handoff_ping_pong(size, rounds / 4))
        .collect();
    let efd = floors::eventfd_ping_pong(rounds);

    // The stack: vgpu-stub and vgpu-driver as processes, this process as the client (or
    // the driver given).
    std::fs::create_dir_all(&dir).expect("temp dir");
    let window = (max + (4 << 20)).to_string();
    let stack = args.driver.is_none().then(|| {
        ProcessStack::start_in(
            &dir,
            &["--executor", "auto", "--memory", "8G", "--connections", "1"],
            Some(&["--window-size", &window]),
        )
    });
    let opts = |spin: Duration| ConnectOptions {
        socket: drv_sock.clone(),
        name: "vgpu-bench".into(),
        queue_depth_log2: 10,
        window_bytes: max + (4 << 20),
        timeout: Duration::from_secs(120),
        spin,
    };
    let conn = Connection::connect(&opts(Duration::from_secs(1))).expect("connect to the driver");
    if let Some(secs) = args.rtt_only {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            let lat = rtt(conn.queue(), rounds);
            println!(
                "sync round trip p50 {:.2} µs, p99 {:.2} µs (shm ping-pong p50 {:.2} µs)",
                floors::percentile(&lat, 0.5) as f64 / 1000.0,
                floors::percentile(&lat, 0.99) as f64 / 1000.0,
                floors::percentile(&spin, 0.5) as f64 / 1000.0
            );
        }
        return;
    }
    let stack_spin = rtt(conn.queue(), rounds);
    if let Some(secs) = args.small_only {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            print_rows(&shims::small_copies(&handoff, rounds / 4));
        }
        return;
    }
    if let Some(tokens) = args.graph_only {
        let small = |i: usize| floors::percentile(&handoff[i], 0.5) as f64;
        print_rows(&shims::decode_graph(
            &args.fatbin,
            tokens,
            300,
            small(0),
            small(3),
        ));
        return;
    }
    let sleepy = Connection::connect(&opts(Duration::ZERO)).expect("second connection");
    let stack_sleep = rtt(sleepy.queue(), rounds / 4);
    drop(sleepy);
    let mut rows = Vec::new();
    let us = |ns: u64| ns as f64 / 1000.0;
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        rows.push(Row {
            name: format!("sync round trip, spinning, {name}"),
            value: us(floors::percentile(&stack_spin, p)),
            unit: "µs",
            floor_name: format!("shm ping-pong {name}"),
            floor: us(floors::percentile(&spin, p)),
            lower_is_better: true,
            target: (name == "p50").then_some(2.0),
            p99: None,
        });
    }
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        rows.push(Row {
            name: format!("sync round trip, sleeping, {name}"),
            value: us(floors::percentile(&stack_sleep, p)),
            unit: "µs",
            floor_name: format!("eventfd ping-pong {name}"),
            floor: us(floors::percentile(&efd, p)),
            lower_is_better: true,
            target: None,
            p99: None,
        });
    }
    let q = conn.queue();
    let dev = q
        .call(
            req(Command::MEM_ALLOC(MemAllocArgs {
                size: max,
                ..bytemuck::Zeroable::zeroed()
            })),
            &[],
        )
        .expect("alloc");
    assert_eq!(dev.status(), Status::SUCCESS, "device allocation");
    let w = conn.first_window();
    for &size in &sizes {
        for htod in [true, false] {
            let mc = floors::memcpy_shared_bandwidth(size as usize, min_time, !htod) / 1e9;
            let bw = bandwidth(&conn, w, dev.result0, size, htod, min_time) / 1e9;
            rows.push(Row {
                name: format!(
                    "{} pinned {}",
                    if htod { "HtoD" } else { "DtoH" },
                    human(size)
                ),
                value: bw,
                unit: "GB/s",
                floor_name: format!(
                    "memcpy {} {}",
                    if htod { "shm→heap" } else { "heap→shm" },
                    human(size)
                ),
                floor: mc,
                lower_is_better: false,
                target: (size >= 4 << 20).then_some(0.9),
                p99: None,
            });
        }
    }
    // Asynchronous launches: guest CPU per launch (posting batches that fit the ring, so no
    // post waits for room), launches per second, and completions received while posting
    // (each would be a round trip; there must be none).
    match std::fs::read(&args.fatbin) {
        Ok(image) => {
            let func = load_vec_add(&conn, &image);
            let q = conn.queue();
            let alloc = |n: u64| {
                q.call(
                    req(Command::MEM_ALLOC(MemAllocArgs {
                        size: n,
                        ..bytemuck::Zeroable::zeroed()
                    })),
                    &[],
                )
                .expect("alloc")
                .result0
            };
            let (a, b, c) = (alloc(4000), alloc(4000), alloc(4000));
            let mut blob = Vec::new();
            for p in [a, b, c] {
                blob.extend_from_slice(&p.to_le_bytes());
            }
            blob.extend_from_slice(&1000i32.to_le_bytes());
            let launch = LaunchArgs {
                func,
                grid_x: 4,
                grid_y: 1,
                grid_z: 1,
                block_x: 256,
                block_y: 1,
                block_z: 1,
                attr_count: 0,
                shared_mem: 0,
                rsv0: 0,
            };
            let batches = if args.quick { 4 } else { 40 };
            let per_batch = 500usize;
            let (mut cpu, mut posted) = (0u64, 0usize);
            let wall = Instant::now();
            for _ in 0..batches {
                let t0 = floors::thread_cpu_ns();
                for _ in 0..per_batch {
                    let r = Request {
                        cid: 0,
                        notify: false,
                        stream: 0,
                        payload: Payload::Inline {
                            len: blob.len() as u32,
                        },
                        command: Command::LAUNCH(launch),
                    };
                    q.submit(r, &blob).expect("launch");
                }
                cpu += floors::thread_cpu_ns() - t0;
                posted += per_batch;
                let s = q
                    .call(
                        req(Command::STREAM_SYNCHRONIZE(bytemuck::Zeroable::zeroed())),
                        &[],
                    )
                    .expect("sync");
                assert_eq!(s.status(), Status::SUCCESS, "launches failed");
            }
            let rate = posted as f64 / wall.elapsed().as_secs_f64();
            let events = q.take_events().len();
            let floor = floors::ring_post_floor(100_000) / 1000.0;
            rows.push(Row {
                name: "async launch, guest CPU per launch".into(),
                value: cpu as f64 / posted as f64 / 1000.0,
                unit: "µs",
                floor_name: "raw 128-byte ring post".into(),
                floor,
                lower_is_better: true,
                target: None,
                p99: None,
            });
            println!(
                "async launches: {:.3} µs guest CPU per launch (target ≤ 0.5 µs), {rate:.0} launches/s executed by the soft executor, {events} completions while posting {posted} launches (round trips per launch: {})",
                cpu as f64 / posted as f64 / 1000.0,
                events as f64 / posted as f64
            );
        }
        Err(e) => println!(
            "async launches: not measured ({}: {e})",
            args.fatbin.display()
        ),
    }
    drop(conn);

    // Through the drop-in libraries.
    rows.extend(shims::pageable(&sizes, min_time));
    rows.extend(shims::registered(&sizes, min_time));
    rows.extend(shims::small_copies(&handoff, rounds / 4));
    rows.push(shims::registration());
    rows.extend(ptx::interpreter(min_time));
    let ring_post_ns = floors::ring_post_floor(100_000);
    let ping_pong_ns = floors::percentile(&spin, 0.5) as f64;
    let tokens = if args.quick { 20 } else { 200 };
    rows.extend(shims::decode_loop(
        &args.fatbin,
        tokens,
        300,
        ring_post_ns,
        ping_pong_ns,
    ));

    let small = |size: usize| {
        shims::SMALL_SIZES
            .iter()
            .position(|&s| s == size)
            .map_or(0.0, |i| floors::percentile(&handoff[i], 0.5) as f64)
    };
    rows.extend(shims::decode_graph(
        &args.fatbin,
        tokens,
        300,
        small(4),
        small(shims::LOGITS),
    ));
    print_rows(&rows);
    let json_rows: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"measure\":\"{}\",\"value\":{:.4},\"unit\":\"{}\",\"floor\":\"{}\",\"floor_value\":{:.4},\"ratio\":{:.4},\"target\":{},\"p99\":{}}}",
                r.name,
                r.value,
                r.unit,
                r.floor_name,
                r.floor,
                r.ratio(),
                r.target.map_or("null".to_string(), |t| t.to_string()),
                r.p99.map_or("null".to_string(), |v| format!("{v:.4}"))
            )
        })
        .collect();
    let json = format!(
        "{{\"quick\":{},\"rounds\":{rounds},\"rows\":[{}]}}\n",
        args.quick,
        json_rows.join(",")
    );
    if let Err(e) = std::fs::write(&args.json, json) {
        eprintln!("vgpu-bench: cannot write {}: {e}", args.json.display());
        std::process::exit(1);
    }
    println!("results written to {}", args.json.display());
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prints `rows` as the benchmark's table.
fn print_rows(rows: &[Row]) {
    println!(
        "{:<36} {:>10} {:<6} {:<26} {:>10} {:>8} {:>8} {:>8}",
        "measure", "value", "unit", "floor", "floor", "ratio", "target", "p99"
    );
    for r in rows {
        let target = r.target.map_or("-".to_string(), |t| {
            if r.lower_is_better {
                format!("≤{t}×")
            } else {
                format!("≥{:.0}%", t * 100.0)
            }
        });
        let ratio = if r.lower_is_better {
            format!("{:.2}×", r.ratio())
        } else {
            format!("{:.0}%", r.ratio() * 100.0)
        };
        let p99 = r.p99.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{:<36} {:>10.2} {:<6} {:<26} {:>10.2} {:>8} {:>8} {:>8}",
            r.name, r.value, r.unit, r.floor_name, r.floor, ratio, target, p99
        );
    }
}
