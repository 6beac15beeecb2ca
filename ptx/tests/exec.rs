//! Kernels written in PTX, run on the virtual machine and checked against what the PTX ISA
//! says they compute: indexing, divergence and reconvergence, shared memory and barriers,
//! warp shuffles and votes, atomics from many blocks at once, local memory, and the faults
//! (an illegal address, a misaligned one, `trap`, the watchdog), and how the interpreter
//! asks compiled code (a fake of it) for runs.

use std::time::{Duration, Instant};
use vgpu_ptx::exec::{run, Fault, Launch, Memory};
use vgpu_ptx::host::HostMemory;

const BASE: u64 = 0x7f00_0000_0000;

/// One flat allocation of device memory at [`BASE`].
type Flat = HostMemory;

fn flat(len: usize) -> Flat {
    HostMemory::new(BASE, len)
}

fn params(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The parameters `(.u64 pointer, .u32 x)`.
fn pointer_and_u32(pointer: u64, x: u32) -> Vec<u8> {
    let mut v = params(&[pointer]);
    v.extend_from_slice(&x.to_le_bytes());
    v
}

/// A launch of `grid` blocks of `block` threads on two host threads, ending within 30 s.
fn launch_of<'a>(grid: u32, block: u32, mem: &'a Flat, params: &'a [u8]) -> Launch<'a> {
    Launch {
        grid: [grid, 1, 1],
        block: [block, 1, 1],
        dynamic_shared: 0,
        params,
        globals: &[],
        mem,
        threads: 2,
        deadline: Some(Instant::now() + Duration::from_secs(30)),
        cancel: None,
        native: None,
        pool: None,
    }
}

/// Runs kernel `name` of `ptx` and returns how it ended.
fn launch(ptx: &str, name: &str, grid: u32, block: u32, mem: &Flat, p: &[u8]) -> Result<(), Fault> {
    launch_with(
        ptx,
        name,
        [grid, 1, 1],
        [block, 1, 1],
        mem,
        p,
        Duration::from_secs(30),
    )
}

/// `ptx` loaded, every function of it accepted.
fn loaded(ptx: &str) -> vgpu_ptx::ir::Program {
    let program = vgpu_ptx::load(ptx).expect("the module loads");
    assert!(program.refused.is_empty(), "{:?}", program.refused);
    program
}

fn launch_with(
    ptx: &str,
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    mem: &Flat,
    p: &[u8],
    limit: Duration,
) -> Result<(), Fault> {
    let program = loaded(ptx);
    let k = &program.kernels[name];
    run(
        k,
        &Launch {
            grid,
            block,
            deadline: Some(Instant::now() + limit),
            ..launch_of(1, 1, mem, p)
        },
    )
}

const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

#[test]
fn vec_add_over_a_partial_last_block() {
    let ptx = format!(
        "{HEADER}
.visible .entry add(.param .u64 a, .param .u64 b, .param .u64 c, .param .u32 n)
{{
    .reg .pred %p<2>;
    .reg .f32 %f<4>;
    .reg .b32 %r<6>;
    .reg .b64 %rd<10>;
    ld.param.u64 %rd1, [a];
    ld.param.u64 %rd2, [b];
    ld.param.u64 %rd3, [c];
    ld.param.u32 %r2, [n];
    mov.u32 %r3, %ctaid.x;
    mov.u32 %r4, %ntid.x;
    mov.u32 %r5, %tid.x;
    mad.lo.s32 %r1, %r3, %r4, %r5;
    setp.ge.s32 %p1, %r1, %r2;
    @%p1 bra DONE;
    mul.wide.s32 %rd4, %r1, 4;
    add.s64 %rd5, %rd1, %rd4;
    add.s64 %rd6, %rd2, %rd4;
    add.s64 %rd7, %rd3, %rd4;
    ld.global.f32 %f1, [%rd5];
    ld.global.f32 %f2, [%rd6];
    add.f32 %f3, %f1, %f2;
    st.global.f32 [%rd7], %f3;
DONE:
    ret;
}}"
    );
    let n = 1000usize;
    let mem = flat(3 * 4096 + 64);
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 0.5 * i as f32).collect();
    mem.put_f32(0, &a);
    mem.put_f32(4096, &b);
    // Poison past the end: the last block must not write there.
    mem.put_f32(8192 + 4 * n, &[-1.0]);
    let p = params(&[BASE, BASE + 4096, BASE + 8192, n as u64]);
    launch(&ptx, "add", n.div_ceil(128) as u32, 128, &mem, &p).unwrap();
    let c = mem.f32s(8192, n + 1);
    for i in 0..n {
        assert_eq!(c[i], a[i] + b[i], "element {i}");
    }
    assert_eq!(c[n], -1.0);
}

#[test]
fn divergent_lanes_meet_again_and_barriers_order_shared_memory() {
    // Each block reverses 256 values through shared memory; odd lanes also add 1000 on a
    // divergent path before the barrier.
    let ptx = format!(
        "{HEADER}
.visible .entry rev(.param .u64 out)
{{
    .reg .pred %p<2>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<4>;
    .shared .align 4 .b8 tile[1024];
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    shl.b32 %r3, %r2, 8;
    add.s32 %r4, %r3, %r1;
    and.b32 %r5, %r1, 1;
    setp.eq.s32 %p1, %r5, 0;
    @%p1 bra EVEN;
    add.s32 %r4, %r4, 1000;
EVEN:
    mov.u32 %r6, tile;
    shl.b32 %r7, %r1, 2;
    add.s32 %r8, %r6, %r7;
    st.shared.u32 [%r8], %r4;
    bar.sync 0;
    mov.u32 %r9, 255;
    sub.s32 %r9, %r9, %r1;
    shl.b32 %r9, %r9, 2;
    add.s32 %r9, %r6, %r9;
    ld.shared.u32 %r10, [%r9];
    add.s32 %r11, %r3, %r1;
    mul.wide.u32 %rd2, %r11, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r10;
    ret;
}}"
    );
    let mem = flat(4 * 256 * 3);
    launch(&ptx, "rev", 3, 256, &mem, &params(&[BASE])).unwrap();
    let out = mem.u32s(0, 768);
    for b in 0..3u32 {
        for t in 0..256u32 {
            let src = 255 - t;
            let want = b * 256 + src + if src % 2 == 1 { 1000 } else { 0 };
            assert_eq!(out[(b * 256 + t) as usize], want, "block {b} thread {t}");
        }
    }
}

#[test]
fn lanes_that_left_early_or_wait_do_not_hold_back_the_others() {
    // A lane in four exits at once, so the lowest program counters of its warp belong to
    // lanes that are gone; of the others, one in three jumps ahead and one waits at the
    // barrier while the rest still loop: each of the rest must still run, and run first.
    // A warp of 40 threads also has a part-filled second warp.
    let ptx = format!(
        "{HEADER}
.visible .entry k(.param .u64 out)
{{
    .reg .pred %p<4>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    and.b32 %r2, %r1, 3;
    setp.eq.u32 %p1, %r2, 0;
    @%p1 exit;
    rem.u32 %r3, %r1, 3;
    setp.eq.u32 %p2, %r3, 0;
    @%p2 bra AHEAD;
    mov.u32 %r4, 0;
    mov.u32 %r5, 0;
LOOP:
    add.s32 %r5, %r5, %r1;
    add.s32 %r4, %r4, 1;
    setp.lt.u32 %p3, %r4, %r2;
    @%p3 bra LOOP;
    st.global.u32 [%rd3], %r5;
    bar.sync 0;
    exit;
AHEAD:
    add.s32 %r6, %r1, 7000;
    st.global.u32 [%rd3], %r6;
    bar.sync 0;
    exit;
}}"
    );
    let mem = flat(4 * 40);
    launch(&ptx, "k", 1, 40, &mem, &params(&[BASE])).unwrap();
    let out = mem.u32s(0, 40);
    for t in 0..40u32 {
        let want = if t % 4 == 0 {
            0
        } else if t % 3 == 0 {
            t + 7000
        } else {
            t * (t % 4)
        };
        assert_eq!(out[t as usize], want, "thread {t}");
    }
}

#[test]
fn warp_shuffles_and_votes() {
    // Butterfly sum of lane ids over each warp, a ballot of odd lanes, and an up-shuffle
    // whose lowest lanes keep their own value.
    let ptx = format!(
        "{HEADER}
.visible .entry warp(.param .u64 out)
{{
    .reg .pred %p<3>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %laneid;
    mov.u32 %r2, %r1;
    shfl.sync.bfly.b32 %r3, %r2, 16, 31, -1;
    add.s32 %r2, %r2, %r3;
    shfl.sync.bfly.b32 %r3, %r2, 8, 31, -1;
    add.s32 %r2, %r2, %r3;
    shfl.sync.bfly.b32 %r3, %r2, 4, 31, -1;
    add.s32 %r2, %r2, %r3;
    shfl.sync.bfly.b32 %r3, %r2, 2, 31, -1;
    add.s32 %r2, %r2, %r3;
    shfl.sync.bfly.b32 %r3, %r2, 1, 31, -1;
    add.s32 %r2, %r2, %r3;
    and.b32 %r4, %r1, 1;
    setp.ne.u32 %p1, %r4, 0;
    vote.sync.ballot.b32 %r5, %p1, -1;
    shfl.sync.up.b32 %r6|%p2, %r1, 3, 0, -1;
    selp.u32 %r7, 1, 0, %p2;
    mov.u32 %r8, %tid.x;
    mul.wide.u32 %rd2, %r8, 16;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v4.u32 [%rd3], {{%r2, %r5, %r6, %r7}};
    ret;
}}"
    );
    let mem = flat(16 * 64);
    launch(&ptx, "warp", 1, 64, &mem, &params(&[BASE])).unwrap();
    let out = mem.u32s(0, 4 * 64);
    for t in 0..64usize {
        let lane = (t % 32) as u32;
        assert_eq!(out[4 * t], (0..32).sum::<u32>(), "sum, thread {t}");
        assert_eq!(out[4 * t + 1], 0xAAAA_AAAA, "ballot, thread {t}");
        let (v, ok) = if lane >= 3 { (lane - 3, 1) } else { (lane, 0) };
        assert_eq!((out[4 * t + 2], out[4 * t + 3]), (v, ok), "up, thread {t}");
    }
}

/// A lane whose shuffle reads a lane that does not execute it (here: an odd lane, which
/// branched away) gets its own value, whatever the other lane's registers hold; a source
/// lane that executes it gives its value.
#[test]
fn shuffles_from_inactive_lanes_give_the_own_value() {
    let ptx = format!(
        "{HEADER}
.visible .entry warp(.param .u64 out)
{{
    .reg .pred %p<3>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %laneid;
    add.u32 %r2, %r1, 100;
    and.b32 %r3, %r1, 1;
    setp.ne.u32 %p1, %r3, 0;
    @%p1 bra ODD;
    shfl.sync.idx.b32 %r4|%p2, %r2, 1, 31, 0x55555555;
    shfl.sync.idx.b32 %r5, %r2, 2, 31, 0x55555555;
    bra.uni DONE;
ODD:
    mov.u32 %r4, 7;
    mov.u32 %r5, 7;
DONE:
    mul.wide.u32 %rd2, %r1, 8;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v2.u32 [%rd3], {{%r4, %r5}};
    ret;
}}"
    );
    let mem = flat(8 * 32);
    launch(&ptx, "warp", 1, 32, &mem, &params(&[BASE])).unwrap();
    let out = mem.u32s(0, 2 * 32);
    for lane in 0..32u32 {
        let want = if lane % 2 == 1 {
            [7, 7]
        } else {
            [lane + 100, 102]
        };
        assert_eq!(out[2 * lane as usize..][..2], want, "lane {lane}");
    }
}

#[test]
fn atomics_from_many_blocks_lose_nothing() {
    let ptx = format!(
        "{HEADER}
.visible .entry count(.param .u64 ctr)
{{
    .reg .b32 %r<3>;
    .reg .b64 %rd<2>;
    .reg .f32 %f<2>;
    ld.param.u64 %rd1, [ctr];
    atom.global.add.u32 %r1, [%rd1], 1;
    red.global.add.f32 [%rd1+4], 0f3F000000;
    atom.global.max.u32 %r2, [%rd1+8], %r1;
    ret;
}}"
    );
    let mem = flat(16);
    launch(&ptx, "count", 64, 96, &mem, &params(&[BASE])).unwrap();
    let n = 64 * 96;
    assert_eq!(mem.u32s(0, 1)[0], n);
    assert_eq!(mem.f32s(4, 1)[0], n as f32 / 2.0);
    assert_eq!(
        mem.u32s(8, 1)[0],
        n - 1,
        "every old value was handed out once"
    );
}

#[test]
fn local_memory_is_per_thread() {
    let ptx = format!(
        "{HEADER}
.visible .entry loc(.param .u64 out)
{{
    .local .align 4 .b8 depot[64];
    .reg .b32 %r<6>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    mov.u64 %rd2, depot;
    cvta.local.u64 %rd3, %rd2;
    st.u32 [%rd3+8], %r1;
    st.local.u32 [%rd2+12], 7;
    ld.local.u32 %r2, [%rd2+8];
    ld.u32 %r3, [%rd3+12];
    add.s32 %r4, %r2, %r3;
    mul.wide.u32 %rd4, %r1, 4;
    add.s64 %rd5, %rd1, %rd4;
    st.global.u32 [%rd5], %r4;
    ret;
}}"
    );
    let mem = flat(4 * 40);
    launch(&ptx, "loc", 1, 40, &mem, &params(&[BASE])).unwrap();
    assert_eq!(
        mem.u32s(0, 40),
        (0..40).map(|t| t + 7).collect::<Vec<u32>>()
    );
}

#[test]
fn faults_end_the_launch_with_their_cause() {
    let ptx = format!(
        "{HEADER}
.visible .entry bad(.param .u64 p, .param .u32 mode)
{{
    .reg .pred %p<4>;
    .reg .b32 %r<3>;
    .reg .b64 %rd<3>;
    ld.param.u64 %rd1, [p];
    ld.param.u32 %r1, [mode];
    setp.eq.u32 %p1, %r1, 0;
    @%p1 bra OOB;
    setp.eq.u32 %p2, %r1, 1;
    @%p2 bra MIS;
    setp.eq.u32 %p3, %r1, 2;
    @%p3 bra TRAP;
SPIN:
    bra SPIN;
OOB:
    st.global.u32 [%rd1+64], 1;
    ret;
MIS:
    st.global.u32 [%rd1+2], 1;
    ret;
TRAP:
    trap;
}}"
    );
    let mem = flat(64);
    let p = |mode: u32| pointer_and_u32(BASE, mode);
    assert!(matches!(
        launch(&ptx, "bad", 1, 32, &mem, &p(0)),
        Err(Fault::IllegalAddress { addr, .. }) if addr == BASE + 64
    ));
    assert!(matches!(
        launch(&ptx, "bad", 1, 32, &mem, &p(1)),
        Err(Fault::Misaligned { .. })
    ));
    assert!(matches!(
        launch(&ptx, "bad", 1, 32, &mem, &p(2)),
        Err(Fault::Trap { .. })
    ));
    let t0 = Instant::now();
    let r = launch_with(
        &ptx,
        "bad",
        [2, 1, 1],
        [32, 1, 1],
        &mem,
        &p(3),
        Duration::from_millis(200),
    );
    assert_eq!(r, Err(Fault::Timeout));
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A raised cancel flag ends it long before its deadline.
    let program = vgpu_ptx::load(&ptx).expect("the module loads");
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let t0 = Instant::now();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let params = p(3);
        run(
            &program.kernels["bad"],
            &Launch {
                grid: [4, 1, 1],
                block: [32, 1, 1],
                deadline: Some(Instant::now() + Duration::from_secs(600)),
                cancel: Some(&cancel),
                ..launch_of(1, 1, &mem, &params)
            },
        )
    });
    assert_eq!(r, Err(Fault::Cancelled));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn unsupported_instructions_are_refused_with_their_line() {
    let ptx = format!(
        "{HEADER}
.visible .entry ok(.param .u64 p)
{{
    ret;
}}
.visible .entry nope(.param .u64 p)
{{
    .reg .b32 %r<3>;
    tex.1d.v4.s32.s32 {{%r1, %r2, %r1, %r2}}, [tx, {{%r1}}];
    ret;
}}"
    );
    match vgpu_ptx::load(&ptx) {
        Ok(p) => {
            assert!(p.kernels.contains_key("ok"));
            let e = &p.refused["nope"];
            assert_eq!(e.line, 12, "{e}");
            assert!(e.message.contains("tex"), "{e}");
        }
        // A parser may refuse what it cannot represent; then it names the line too.
        Err(e) => assert!(e.to_string().contains("line 12"), "{e}"),
    }
}

#[test]
fn packed_halves_and_vector_moves() {
    // Two f32 inputs packed to f16x2, added to themselves as f16x2, unpacked, widened back;
    // a 64-bit value split into two 32-bit halves and joined again swapped.
    let ptx = format!(
        "{HEADER}
.visible .entry halves(.param .u64 out)
{{
    .reg .b16 %h<3>;
    .reg .f32 %f<5>;
    .reg .b32 %r<5>;
    .reg .b64 %rd<5>;
    ld.param.u64 %rd1, [out];
    cvt.rn.f16x2.f32 %r1, 0f3FC00000, 0fC0200000;
    add.rn.f16x2 %r2, %r1, %r1;
    mov.b32 {{%h1, %h2}}, %r2;
    cvt.f32.f16 %f1, %h1;
    cvt.f32.f16 %f2, %h2;
    mov.b64 %rd2, 0x1111111122222222;
    mov.b64 {{%r3, %r4}}, %rd2;
    mov.b64 %rd3, {{%r4, %r3}};
    st.global.v2.f32 [%rd1], {{%f1, %f2}};
    st.global.u64 [%rd1+8], %rd3;
    ret;
}}"
    );
    let mem = flat(16);
    launch(&ptx, "halves", 1, 1, &mem, &params(&[BASE])).unwrap();
    assert_eq!(mem.f32s(0, 2), [-5.0, 3.0], "low half is the second source");
    assert_eq!(mem.u32s(8, 2), [0x1111_1111, 0x2222_2222]);
}

/// A real nvcc module: `calls_and_locals` calls a `__noinline__` device function 24 times,
/// keeps a local array and prints with `printf` (see `tests/data/features.cu`).
#[test]
fn device_functions_local_arrays_and_printf_from_nvcc() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/features.nvcc13.compute_80.ptx"
    ))
    .unwrap();
    let program = vgpu_ptx::load(&text).expect("the module loads");
    let name = "_Z16calls_and_localsPfii";
    let k = program
        .kernels
        .get(name)
        .unwrap_or_else(|| panic!("refused: {:?}", program.refused.get(name)));
    // Module variables live in device memory after the output array.
    let n = 64usize;
    let mem = flat(4 * n + 4096);
    let mut addrs = Vec::new();
    let mut at = BASE + 4 * n as u64;
    for g in &program.globals {
        at = at.next_multiple_of(u64::from(g.align.max(8)));
        mem.write(at, &g.init);
        addrs.push(at);
        at += g.size.max(1);
    }
    let inputs: Vec<f32> = (0..n).map(|i| i as f32 / 16.0).collect();
    mem.put_f32(0, &inputs);
    let k_arg = 3u32;
    let mut p = params(&[BASE]);
    p.extend_from_slice(&k_arg.to_le_bytes());
    p.extend_from_slice(&(n as u32).to_le_bytes());
    run(
        k,
        &Launch {
            globals: &addrs,
            ..launch_of(2, 32, &mem, &p)
        },
    )
    .expect("runs");
    // scale_by(x, k) = x * g_weights[k & 3] + c_offsets[k % 3] (features.cu).
    let w = [1.0f32, 0.5, 0.25, 0.125];
    let scale = |x: f32, k: u32| x * w[(k & 3) as usize] + [-1.0f32, 0.0, 1.0][(k % 3) as usize];
    let out = mem.f32s(0, n);
    for (i, &x) in inputs.iter().enumerate() {
        let j = (i as u32 + k_arg) % 24;
        let want = scale(j as f32, j + k_arg) + x.sin() + (-x).exp();
        assert!(
            (out[i] - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{i}: {} vs {want}",
            out[i]
        );
    }
}

/// A real nvcc kernel: `ldmatrix.x2` from shared memory feeds `mma.m16n8k8` f16·f16+f32
/// (see `tests/data/tensor.cu`). The expected values come from the ISA's layouts written
/// out here: the A rows lanes 0–15 point at, B's element (k, n) in half k%2 of lane
/// 4n + k/2's word, D's element i of lane l at row l/4 + 8·(i/2), column 2·(l%4) + i%2.
#[test]
fn ldmatrix_feeds_mma_as_the_isa_lays_out() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/tensor.nvcc13.compute_80.ptx"
    ))
    .unwrap();
    let program = vgpu_ptx::load(&text).expect("the module loads");
    let name = "_Z12mma_ldmatrixPK6__halfPKjPf";
    let k = program
        .kernels
        .get(name)
        .unwrap_or_else(|| panic!("refused: {:?}", program.refused));
    let h = |f: f32| half::f16::from_f32(f).to_bits();
    let a: Vec<f32> = (0..256)
        .map(|i| ((i * 7) % 11) as f32 / 4.0 - 1.0)
        .collect();
    let b: Vec<[f32; 2]> = (0..32)
        .map(|l| {
            [
                ((l * 3) % 5) as f32 / 2.0,
                ((l * 5) % 7) as f32 / 8.0 - 0.25,
            ]
        })
        .collect();
    let mem = flat(512 + 128 + 512);
    for (i, &x) in a.iter().enumerate() {
        mem.put(2 * i, &h(x).to_le_bytes());
    }
    for (l, pair) in b.iter().enumerate() {
        let w = u32::from(h(pair[0])) | u32::from(h(pair[1])) << 16;
        mem.put(512 + 4 * l, &w.to_le_bytes());
    }
    let p = params(&[BASE, BASE + 512, BASE + 640]);
    run(k, &launch_of(1, 32, &mem, &p)).expect("runs");
    let d = mem.f32s(640, 128);
    let bk = |kk: usize, n: usize| b[4 * n + kk / 2][kk % 2];
    for l in 0..32 {
        for i in 0..4 {
            let (row, col) = (l / 4 + 8 * (i / 2), 2 * (l % 4) + i % 2);
            let mut want: f32 = (0..8).map(|kk| a[row * 16 + kk] * bk(kk, col)).sum();
            if i == 2 {
                // prmt(r0, r1, 0x3210) = r0: row l/4, columns 2(l%4) and +1 of the tile.
                let r0 = u32::from(h(a[(l / 4) * 16 + 2 * (l % 4)]))
                    | u32::from(h(a[(l / 4) * 16 + 2 * (l % 4) + 1])) << 16;
                want += r0 as f32;
            }
            assert_eq!(d[4 * l + i], want, "lane {l} element {i}");
        }
    }
}

#[test]
fn barrier_reductions_over_the_block() {
    // Thread 77 of 96 is the only one with the predicate set: or = 1, and = 0, popc = 1;
    // then every thread but 5 sets it: popc = 95.
    let ptx = format!(
        "{HEADER}
.visible .entry red(.param .u64 out)
{{
    .reg .pred %p<6>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    setp.eq.u32 %p1, %r1, 77;
    bar.red.or.pred %p2, 0, %p1;
    bar.red.and.pred %p3, 0, %p1;
    bar.red.popc.u32 %r2, 0, %p1;
    bar.warp.sync -1;
    bar.red.popc.u32 %r3, 0, !%p1;
    selp.u32 %r4, 1, 0, %p2;
    selp.u32 %r5, 1, 0, %p3;
    mul.wide.u32 %rd2, %r1, 16;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v4.u32 [%rd3], {{%r4, %r5, %r2, %r3}};
    ret;
}}"
    );
    let mem = flat(16 * 96);
    launch(&ptx, "red", 2, 96, &mem, &params(&[BASE])).unwrap();
    let out = mem.u32s(0, 4 * 96);
    for t in 0..96 {
        assert_eq!(&out[4 * t..4 * t + 4], &[1, 0, 1, 95], "thread {t}");
    }
}

/// A real nvcc kernel using `wmma` (16×16×16, A by rows, B by columns, C stored by rows):
/// the product must be the matrix product, whatever fragment layout the machine uses.
#[test]
fn wmma_computes_the_matrix_product() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/tensor.nvcc13.compute_80.ptx"
    ))
    .unwrap();
    let program = vgpu_ptx::load(&text).expect("the module loads");
    let name = "_Z10wmma_16x16PK6__halfS1_Pf";
    let k = program
        .kernels
        .get(name)
        .unwrap_or_else(|| panic!("refused: {:?}", program.refused.get(name)));
    let h = |f: f32| half::f16::from_f32(f).to_bits();
    let a: Vec<f32> = (0..256).map(|i| ((i * 5) % 9) as f32 / 4.0 - 1.0).collect();
    let b: Vec<f32> = (0..256)
        .map(|i| ((i * 7) % 13) as f32 / 8.0 - 0.75)
        .collect();
    let mem = flat(512 + 512 + 1024);
    for i in 0..256 {
        mem.put(2 * i, &h(a[i]).to_le_bytes());
        mem.put(512 + 2 * i, &h(b[i]).to_le_bytes());
    }
    let p = params(&[BASE, BASE + 512, BASE + 1024]);
    run(k, &launch_of(1, 32, &mem, &p)).expect("runs");
    let c = mem.f32s(1024, 256);
    for r in 0..16 {
        for col in 0..16 {
            // B is stored by columns: B[k][col] at col·16 + k.
            let want: f32 = (0..16).map(|x| a[r * 16 + x] * b[col * 16 + x]).sum();
            assert_eq!(c[r * 16 + col], want, "C[{r}][{col}]");
        }
    }
}

/// Immediates are values, whatever their size: a 64-bit constant just above 2^32 is stored
/// unchanged, next to dynamic shared memory used through its symbol.
#[test]
fn large_immediates_and_dynamic_shared_memory() {
    let ptx = format!(
        "{HEADER}
.extern .shared .align 16 .b8 dyn[];
.visible .entry big(.param .u64 out)
{{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    .shared .align 4 .b8 fixed[20];
    ld.param.u64 %rd1, [out];
    mov.u64 %rd2, 4294967296;
    st.global.u64 [%rd1], %rd2;
    mov.u64 %rd3, 8589934000;
    st.global.u64 [%rd1+8], %rd3;
    mov.u32 %r1, dyn;
    mov.u32 %r2, fixed;
    st.shared.u32 [dyn+4], 77;
    ld.shared.u32 %r3, [%r1+4];
    st.global.v2.u32 [%rd1+16], {{%r1, %r3}};
    st.global.u32 [%rd1+24], %r2;
    ret;
}}"
    );
    let mem = flat(32);
    let program = vgpu_ptx::load(&ptx).unwrap();
    let k = &program.kernels["big"];
    run(
        k,
        &Launch {
            dynamic_shared: 64,
            ..launch_of(1, 1, &mem, &params(&[BASE]))
        },
    )
    .unwrap();
    let w = mem.u32s(0, 7);
    assert_eq!(u64::from(w[0]) | u64::from(w[1]) << 32, 4294967296);
    assert_eq!(u64::from(w[2]) | u64::from(w[3]) << 32, 8589934000);
    // Dynamic shared memory starts after the static 20 bytes, aligned to 16.
    assert_eq!((w[4], w[5], w[6]), (32, 77, 0));
}

/// What a hostile module asks for is bounded: register names, registers, shared memory,
/// initialized variables, and the state of a block are refused beyond their limits, with
/// an error, before anything that large is allocated.
#[test]
fn hostile_sizes_are_refused() {
    let load = |body: &str| vgpu_ptx::load(&format!("{HEADER}{body}"));
    // More register names than a module may declare.
    let many = ".visible .entry k() { .reg .b32 %a<1048576>; .reg .b32 %b<1048576>; \
                .reg .b32 %c<1048576>; ret; }";
    let e = load(many).expect_err("refused").to_string();
    assert!(e.contains("registers in one module"), "{e}");
    // More registers than a kernel may use: the kernel is refused, the module loads.
    let p = load(".visible .entry k() { .reg .b32 %r<131073>; ret; }").unwrap();
    assert!(
        p.refused["k"].message.contains("registers in one kernel"),
        "{:?}",
        p.refused
    );
    // Shared memory past 1 GiB, in u32 terms past the wrap-around.
    let p = load(".visible .entry k() { .shared .b8 s[4294967300]; ret; }").unwrap();
    assert!(
        p.refused["k"].message.contains("shared memory"),
        "{:?}",
        p.refused
    );
    // An initialized variable larger than a module may carry: kept zeroed and unallocated,
    // and the kernels that use it are refused.
    let p = load(
        ".global .u8 g[100000000] = {1};
         .visible .entry k() { .reg .b64 %rd1; mov.u64 %rd1, g; ret; }",
    )
    .unwrap();
    assert!(p.globals[0].init.is_empty());
    assert!(
        p.refused["k"].message.contains("too large"),
        "{:?}",
        p.refused
    );
    // A block whose state does not fit: the launch fails, nothing is allocated. (Registers
    // declared but never used take no room: the local memory is what does not fit.)
    let p = load(
        ".visible .entry k() { .local .b8 l[524288]; .reg .b64 %r<100000>;
         mov.u64 %r1, 5; st.local.u64 [l], %r1; ret; }",
    )
    .unwrap();
    let mem = flat(16);
    let r = run(&p.kernels["k"], &launch_of(1, 1024, &mem, &[]));
    assert!(matches!(r, Err(Fault::OutOfResources(_))), "{r:?}");
}

/// `ldmatrix.x4` gives each lane the elements the ISA lays out from the rows the lanes
/// point at (a row of shared memory read at once), and a row that leaves shared memory or
/// is misaligned faults at its first bad element, as element by element.
#[test]
fn ldmatrix_rows_and_their_faults() {
    let ptx = format!(
        "{HEADER}
.visible .entry ldm(.param .u64 out, .param .u32 shift)
{{
    .reg .pred %p<2>;
    .reg .b16 %h<2>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<4>;
    .shared .align 16 .b8 tile[512];
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r9, [shift];
    mov.u32 %r1, %tid.x;
    // Each lane fills its 16 bytes: halves 8 * lane + k, k = 0..7.
    mov.u32 %r2, tile;
    shl.b32 %r3, %r1, 4;
    add.u32 %r4, %r2, %r3;
    shl.b32 %r5, %r1, 3;
    mov.u32 %r6, 0;
FILL:
    add.u32 %r7, %r5, %r6;
    cvt.u16.u32 %h1, %r7;
    shl.b32 %r8, %r6, 1;
    add.u32 %r8, %r4, %r8;
    st.shared.u16 [%r8], %h1;
    add.u32 %r6, %r6, 1;
    setp.lt.u32 %p1, %r6, 8;
    @%p1 bra FILL;
    bar.sync 0;
    // Lane i points at row (i + 5) % 32, moved by `shift` bytes.
    add.u32 %r10, %r1, 5;
    and.b32 %r10, %r10, 31;
    shl.b32 %r10, %r10, 4;
    add.u32 %r10, %r10, %r2;
    add.u32 %r10, %r10, %r9;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{%r0, %r1, %r2, %r3}}, [%r10];
    mov.u32 %r11, %tid.x;
    mul.wide.u32 %rd2, %r11, 16;
    add.u64 %rd3, %rd1, %rd2;
    st.global.v4.u32 [%rd3], {{%r0, %r1, %r2, %r3}};
}}"
    );
    let mem = flat(32 * 16);
    let p = |shift: u32| pointer_and_u32(BASE, shift);
    launch(&ptx, "ldm", 1, 32, &mem, &p(0)).expect("runs");
    let mut out = vec![0u8; 32 * 16];
    assert!(mem.read(BASE, &mut out));
    for lane in 0..32usize {
        for j in 0..4usize {
            // Matrix j's row lane / 4 is the row lane 8j + lane / 4 points at; this lane
            // holds its elements 2 (lane % 4) and the next.
            let row = (8 * j + lane / 4 + 5) % 32;
            let first = (8 * row + 2 * (lane % 4)) as u32;
            let want = first | (first + 1) << 16;
            let at = 16 * lane + 4 * j;
            let got = u32::from_le_bytes(out[at..at + 4].try_into().unwrap());
            assert_eq!(got, want, "lane {lane} matrix {j}");
        }
    }
    // Past the end: row 31 (lane 26's) moved by 16 bytes starts at byte 512.
    assert!(matches!(
        launch(&ptx, "ldm", 1, 32, &mem, &p(16)),
        Err(Fault::IllegalAddress {
            addr: 512,
            size: 2,
            ..
        })
    ));
    // Its last element only: moved by 2 bytes, byte 512 is its eighth element's.
    assert!(matches!(
        launch(&ptx, "ldm", 1, 32, &mem, &p(2)),
        Err(Fault::IllegalAddress {
            addr: 512,
            size: 2,
            ..
        })
    ));
    // Misaligned from the first row read: lane 0's, row 5 at byte 80, moved by one.
    assert!(matches!(
        launch(&ptx, "ldm", 1, 32, &mem, &p(1)),
        Err(Fault::Misaligned {
            addr: 81,
            size: 2,
            ..
        })
    ));
}

/// A lane that exits inside a device function leaves its return address behind; the next
/// block the same host thread runs on that warp starts with empty call stacks, so that
/// blocks after blocks that all end inside a call never overflow their lanes' stacks.
#[test]
fn a_block_starts_with_no_return_address_an_earlier_block_left() {
    let ptx = format!(
        "{HEADER}
.func leave()
{{
    exit;
}}
.visible .entry k(.param .u64 out)
{{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r2, %tid.x;
    mul.wide.u32 %rd2, %r2, 4;
    add.u64 %rd3, %rd1, %rd2;
    atom.global.add.u32 %r3, [%rd3], 1;
    call leave;
    ret;
}}"
    );
    let program = loaded(&ptx);
    let mem = flat(4 * 32);
    let p = params(&[BASE]);
    // More blocks than a lane's stack holds, one after the other on one host thread.
    let blocks = 300;
    let l = Launch {
        grid: [blocks, 1, 1],
        threads: 1,
        ..launch_of(blocks, 32, &mem, &p)
    };
    run(&program.kernels["k"], &l).expect("the launch runs");
    for t in 0..32u64 {
        let mut b = [0u8; 4];
        assert!(mem.read(BASE + 4 * t, &mut b));
        assert_eq!(u32::from_le_bytes(b), blocks, "thread {t}: once a block");
    }
}

/// Compiled code as a fake: a run at instruction 0 that touches nothing and ends at
/// instruction `end`, and a record of every instruction the interpreter asked for a run.
struct Asked {
    run: EndsAt,
    asked: std::sync::Mutex<Vec<u32>>,
}

struct EndsAt(u32);

impl vgpu_ptx::exec::NativeRun for EndsAt {
    fn run(
        &self,
        _regs: &mut [u64],
        _shared: &mut [u8],
        _mask: u32,
        _env: &vgpu_ptx::exec::WarpEnv<'_>,
        _state: &mut (dyn std::any::Any + Send),
    ) -> Result<Option<vgpu_ptx::exec::Exit>, Fault> {
        Ok(Some(vgpu_ptx::exec::Exit {
            taken: 0,
            end: self.0,
            target: None,
            parted: false,
        }))
    }
    fn end(&self) -> u32 {
        self.0
    }
    fn parted(
        &self,
        _state: &mut (dyn std::any::Any + Send),
        _mask: u32,
        _pcs: &mut [u32; 32],
    ) -> bool {
        false
    }
}

impl vgpu_ptx::exec::Native for Asked {
    fn at(&self, pc: u32, _mask: u32) -> Option<&dyn vgpu_ptx::exec::NativeRun> {
        self.asked.lock().expect("not poisoned").push(pc);
        (pc == 0).then_some(&self.run as &dyn vgpu_ptx::exec::NativeRun)
    }
    fn state(&self) -> Box<dyn std::any::Any + Send> {
        Box::new(())
    }
}

/// Where a compiled run ends and none starts, the interpreter asks for one there once,
/// not again before it runs the instruction itself; where it ends at a barrier, it asks
/// for none there (none starts at one), nor where it ends at `ret` or `exit`: each of
/// the two warps asks for a run at the start, at the `add` (not at the barrier) and at
/// the exit, once each.
#[test]
fn no_run_is_asked_for_twice_where_a_run_just_ended() {
    let asked = |body: &str, want: &[u32]| {
        let ptx = format!(
            "{HEADER}
.visible .entry k()
{{
    .reg .b32 %r<2>;
    mov.u32 %r1, %tid.x;
    {body}
    ret;
}}"
        );
        let program = loaded(&ptx);
        let k = &program.kernels["k"];
        let native = Asked {
            run: EndsAt(1),
            asked: std::sync::Mutex::new(Vec::new()),
        };
        let mem = flat(4);
        let l = Launch {
            threads: 1,
            native: Some(&native),
            ..launch_of(1, 64, &mem, &[])
        };
        run(k, &l).expect("the launch runs");
        let mut asked = native.asked.lock().expect("not poisoned").clone();
        asked.sort_unstable();
        assert_eq!(asked, want, "{body}: {:?}", k.code);
    };
    asked("add.u32 %r1, %r1, 1;", &[0, 0, 1, 1, 2, 2]);
    asked("bar.sync 0;", &[0, 0, 2, 2]);
    // Nor where it ends at the kernel's end.
    asked("", &[0, 0]);
    asked("exit;", &[0, 0]);
}

/// A register file a launch takes from a pool (one an earlier launch of another kernel
/// left, full of its values) reads as zero in every register the kernel may read before
/// writing it, as a fresh one does: here one that only a write no lane makes would set,
/// and one a shuffle reads from lanes that exited without writing it.
#[test]
fn a_pooled_register_file_is_cleared_where_the_kernel_reads_before_writing() {
    let ptx = format!(
        "{HEADER}
.visible .entry fill(.param .u64 out)
{{
    .reg .b32 %r<10>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, -1;
    add.u32 %r2, %r1, -2;
    add.u32 %r3, %r2, -3;
    add.u32 %r4, %r3, -4;
    add.u32 %r5, %r4, -5;
    add.u32 %r6, %r5, -6;
    add.u32 %r7, %r6, -7;
    add.u32 %r8, %r7, -8;
    xor.b32 %r9, %r1, %r2;
    xor.b32 %r9, %r9, %r3;
    xor.b32 %r9, %r9, %r4;
    xor.b32 %r9, %r9, %r5;
    xor.b32 %r9, %r9, %r6;
    xor.b32 %r9, %r9, %r7;
    xor.b32 %r9, %r9, %r8;
    cvt.u64.u32 %rd2, %r9;
    mov.u64 %rd3, -1;
    xor.b64 %rd2, %rd2, %rd3;
    st.global.u64 [%rd1], %rd2;
    mov.u64 %rd1, -1;
    ret;
}}
.visible .entry read(.param .u64 out)
{{
    .reg .pred %p<3>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    mov.u32 %r1, %tid.x;
    setp.gt.u32 %p1, %r1, 1000;
    @%p1 mov.u32 %r2, 7;
    setp.gt.u32 %p2, %r1, 15;
    @%p2 bra SHUFFLE;
    mov.u32 %r3, 5;
    ret;
SHUFFLE:
    shfl.sync.idx.b32 %r4, %r3, 0, 31, -1;
    mul.wide.u32 %rd2, %r1, 8;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v2.u32 [%rd3], {{%r2, %r4}};
    ret;
}}"
    );
    let program = loaded(&ptx);
    let mem = flat(8 * 32);
    let p = params(&[BASE]);
    let pool = vgpu_ptx::exec::BlockPool::default();
    let pooled = |name: &str| {
        let l = Launch {
            threads: 1,
            pool: Some(&pool),
            ..launch_of(1, 32, &mem, &p)
        };
        run(&program.kernels[name], &l)
    };
    pooled("fill").unwrap();
    assert_ne!(mem.u32s(0, 2), [0, 0], "the first kernel leaves values");
    pooled("read").unwrap();
    let out = mem.u32s(0, 2 * 32);
    for lane in 16..32 {
        assert_eq!(out[2 * lane..][..2], [0, 0], "lane {lane}");
    }
}
