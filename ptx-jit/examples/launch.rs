//! Runs one kernel of a PTX file on made-up data, with the JIT, and prints what each launch
//! took: the tool for profiling a kernel apart from the stack (under `perf` or callgrind).
//!
//! ```text
//! PTX=module.ptx KERN=rms_norm GRID=32 BLOCK=1024 BUFS=131072,131072 FILL=f,f \
//!   PARAMS=p0,p1,1024,... [SHARED=0] [THREADS=1] [REPS=5] [EAGER=1] \
//!   cargo run --release -p vgpu-ptx-jit --example launch
//! ```
//!
//! * `KERN`: the first kernel (by sorted name) whose name holds this text.
//! * `GRID`, `BLOCK`: `x[,y[,z]]`. `SHARED`: bytes of dynamic shared memory.
//! * `BUFS`: the size in bytes of each buffer, allocated one after another (256-byte
//!   aligned) in one device memory. `FILL`: for each buffer, `f` (f32 in [-1, 1)), `h` (f16
//!   in [-1, 1)), `b` (bytes in [-8, 8)), `q0` or `q1` (blocks of ggml's q8_0 or q8_1, of
//!   34 or 36 bytes) or `0`; the rest stay zero.
//! * `PARAMS`: the kernel's parameters in order: `pN` or `pN+OFF` (buffer N's address), an
//!   integer (the parameter's size, little-endian) or `fX` (an f32). An item `@OFF=ITEM`
//!   writes 8 bytes (`pN`) or 4 (an integer, `fX`) at byte OFF of the parameter buffer
//!   instead (for the fields of a structure).
//! * `EAGER=1` compiles vector forms at a run's first call; `REPS` launches are timed.
//!   `GAP_US=N` sleeps N µs before each launch, as an application does between its
//!   launches (the helper threads of `THREADS` above 1 then sleep between launches too).
//! * `LIST=1` prints the kernel's instructions with their indices (the numbers the JIT's
//!   debug log gives its runs by) and lines.
//! * `JIT_DUMP=DIR` writes each compiled function's machine code to `DIR/ADDRESS.bin`
//!   (`objdump -D -b binary -m i386:x86-64 --adjust-vma=0xADDRESS`), the functions and
//!   addresses Cranelift names in `/tmp/perf-PID.map` (written since the tool sets
//!   `PERF_BUILDID_DIR`, as `perf record` does). With `RUST_LOG=vgpu_ptx_jit=debug`, the
//!   log says which PTX instructions each address holds; with `=trace`, also which
//!   machine-code ranges of each function come from which PTX line (`START-END:LINE`,
//!   offsets in hex; `LIST=1` maps lines to instructions), so that callgrind's counts per
//!   machine instruction (`--dump-instr=yes`) add up to a cost per PTX instruction. Code
//!   outside every range (moves between registers and the stack, the loop over a warp's
//!   groups of four lanes, the stores at a run's end) is no instruction's own.
//!   `ptx-jit/tools/costs.py` adds them up by region and by line (its documentation
//!   also has the settings of the ggml ops bench's three kernels).

use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use std::time::Instant;
use vgpu_ptx::exec::{run, BlockPool, Launch};
use vgpu_ptx_jit::{DirectMemory, Jit};

const BASE: u64 = 0x1000_0000;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

fn need(name: &str) -> String {
    env(name).unwrap_or_else(|| {
        eprintln!("launch: set {name} (see the example's documentation)");
        std::process::exit(2)
    })
}

fn dims(s: &str) -> [u32; 3] {
    let mut d = [1u32; 3];
    for (i, x) in s.split(',').enumerate().take(3) {
        d[i] = x.trim().parse().expect("a dimension");
    }
    d
}

/// Uniform in [-1, 1).
fn unit(rng: &mut TestRng) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// The bytes of one parameter item: `pN[+OFF]`, an integer or `fX`.
fn item(s: &str, size: usize, bufs: &[u64]) -> Vec<u8> {
    let v: u64 = if let Some(p) = s.strip_prefix('p') {
        let (n, off) = p.split_once('+').unwrap_or((p, "0"));
        let n: usize = n.parse().expect("a buffer number");
        bufs.get(n).expect("no such buffer in BUFS") + off.parse::<u64>().expect("an offset")
    } else if let Some(f) = s.strip_prefix('f') {
        let x: f32 = f.parse().expect("an f32");
        return x.to_le_bytes().to_vec();
    } else {
        s.parse::<i64>().expect("an integer") as u64
    };
    v.to_le_bytes()[..size.min(8)].to_vec()
}

fn main() {
    env_logger::init();
    let dump = env("JIT_DUMP");
    if dump.is_some() && std::env::var_os("PERF_BUILDID_DIR").is_none() {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("PERF_BUILDID_DIR", "/tmp") };
    }
    let text = std::fs::read_to_string(need("PTX")).expect("reading PTX");
    let program = vgpu_ptx::load(&text).expect("loading PTX");
    let want = need("KERN");
    let mut names: Vec<&String> = program.kernels.keys().collect();
    names.sort();
    let name = names
        .into_iter()
        .find(|n| n.contains(&want))
        .expect("no kernel holds KERN");
    let k = &program.kernels[name];
    eprintln!(
        "launch: {name}: {} instructions, {} params",
        k.code.len(),
        k.params.len()
    );

    if env("LIST").is_some() {
        for (i, inst) in k.code.iter().enumerate() {
            eprintln!("{i:5} {inst:?}");
        }
    }

    let sizes: Vec<usize> = need("BUFS")
        .split(',')
        .map(|s| s.trim().parse().expect("a size"))
        .collect();
    let mut bufs = Vec::new();
    let mut end = BASE;
    for s in &sizes {
        bufs.push(end);
        end += (*s as u64).div_ceil(256) * 256;
    }
    // The module's variables follow the buffers.
    let mut globals = Vec::new();
    for g in &program.globals {
        let align = u64::from(g.align.max(8));
        end = end.div_ceil(align) * align;
        globals.push(end);
        end += g.size.max(1);
    }
    let mem = DirectMemory::zeroed(BASE, (end - BASE) as usize).expect("memory");
    for (g, at) in program.globals.iter().zip(&globals) {
        assert!(mem.put(*at, &g.init));
    }
    let fills = env("FILL").unwrap_or_default();
    let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    for (i, f) in fills.split(',').enumerate().take(sizes.len()) {
        let data: Vec<u8> = match f {
            "f" => (0..sizes[i] / 4)
                .flat_map(|_| unit(&mut rng).to_le_bytes())
                .collect(),
            "h" => (0..sizes[i] / 2)
                .flat_map(|_| half(unit(&mut rng)).to_le_bytes())
                .collect(),
            "b" => (0..sizes[i])
                .map(|_| (rng.next_u64() % 16) as u8 - 8)
                .collect(),
            "q0" | "q1" => {
                // ggml's q8_0 (an f16 scale, 32 quants) or q8_1 (an f16 scale and sum).
                let head = if f == "q0" { 2 } else { 4 };
                let mut v = Vec::new();
                while v.len() + head + 32 <= sizes[i] {
                    for _ in 0..head / 2 {
                        v.extend(half(unit(&mut rng) / 64.0).to_le_bytes());
                    }
                    v.extend((0..32).map(|_| rng.next_u64() as u8));
                }
                v
            }
            _ => continue,
        };
        assert!(mem.put(bufs[i], &data));
    }

    let mut params = vec![0u8; k.param_bytes as usize];
    let mut next = 0;
    for it in need("PARAMS").split(',').map(str::trim) {
        if let Some(rest) = it.strip_prefix('@') {
            let (off, v) = rest.split_once('=').expect("@OFF=ITEM");
            let off: usize = off.parse().expect("an offset");
            let b = item(v, if v.starts_with('p') { 8 } else { 4 }, &bufs);
            params
                .get_mut(off..off + b.len())
                .expect("an @OFF inside the kernel's parameters")
                .copy_from_slice(&b);
            continue;
        }
        let p = k.params.get(next).expect("more PARAMS than parameters");
        next += 1;
        let b = item(it, p.size as usize, &bufs);
        params[p.offset as usize..p.offset as usize + b.len()].copy_from_slice(&b);
    }

    let jit = if env("EAGER").is_some() {
        Jit::eager(k)
    } else {
        Jit::new(k)
    }
    .expect("a code generator");
    let threads: usize = env("THREADS").map_or(1, |s| s.parse().expect("THREADS"));
    let reps: usize = env("REPS").map_or(5, |s| s.parse().expect("REPS"));
    // The launches reuse their register files, as the soft device's launches of one PD do.
    let pool = BlockPool::default();
    let launch = Launch {
        grid: dims(&need("GRID")),
        block: dims(&need("BLOCK")),
        dynamic_shared: env("SHARED").map_or(0, |s| s.parse().expect("SHARED")),
        params: &params,
        globals: &globals,
        mem: &mem,
        threads,
        deadline: None,
        cancel: None,
        native: Some(&jit),
        pool: Some(&pool),
    };
    let gap: u64 = env("GAP_US").map_or(0, |s| s.parse().expect("GAP_US"));
    for r in 0..reps {
        if gap > 0 {
            std::thread::sleep(std::time::Duration::from_micros(gap));
        }
        let t = Instant::now();
        run(k, &launch).expect("the launch");
        eprintln!("launch {r}: {:.3} ms", t.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!(
        "launch: {} runs compiled, {} vector stretches",
        jit.compiled(),
        jit.vector_stretches()
    );
    let sum: f64 = mem
        .get(bufs[bufs.len() - 1], sizes[sizes.len() - 1])
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as f64)
        .filter(|x| x.is_finite())
        .sum();
    eprintln!("launch: last buffer's finite f32 sum {sum}");
    if let Some(dir) = dump {
        dump_code(&dir);
    }
    drop(jit);
}

/// Copies each function of `/tmp/perf-PID.map` to `DIR/ADDRESS.bin`.
fn dump_code(dir: &str) {
    let map = std::fs::read_to_string(format!("/tmp/perf-{}.map", std::process::id()))
        .expect("the perf map");
    std::fs::create_dir_all(dir).expect("the dump folder");
    for line in map.lines() {
        let mut f = line.split_whitespace();
        let (Some(at), Some(len)) = (f.next(), f.next()) else {
            continue;
        };
        let (at, len) = (
            usize::from_str_radix(at, 16).expect("an address"),
            usize::from_str_radix(len, 16).expect("a length"),
        );
        // SAFETY: the map names code the JIT compiled in this process and still holds (it
        // is dropped after this call), mapped readable and executable.
        let code = unsafe { std::slice::from_raw_parts(at as *const u8, len) };
        std::fs::write(format!("{dir}/{at:x}.bin"), code).expect("writing code");
    }
}

/// `x` as an f16's bits (round toward zero; `x` in [-1, 1)).
fn half(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let e = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if e <= 0 {
        return sign;
    }
    sign | ((e as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}
