//! The soft device's PTX interpreter (`vgpu-ptx`) on one host thread, alone and with the
//! instructions it can compile run as native code (`vgpu-ptx-jit`), against native code
//! doing the same work in the same run: a loop of a global load and an f32 fma per thread
//! (the shape of a mat-vec inner loop), counted in lane-instructions per second.

use crate::floors::best_rate;
use crate::Row;
use std::time::Duration;
use vgpu_ptx::exec::{run, Launch, Memory, Native};
use vgpu_ptx::host::HostMemory;
use vgpu_ptx_jit::{DirectMemory, Jit};

const BASE: u64 = 0x7f00_0000_0000;
const THREADS: usize = 1024;
/// Instructions of one iteration of the loop below.
const PER_ITERATION: usize = 5;

const PTX: &str = ".version 8.0\n.target sm_80\n.address_size 64\n
.visible .entry loop(.param .u64 p, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    .reg .f32 %f<3>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [p];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    mov.u32 %r3, %ctaid.x;
    mad.lo.s32 %r2, %r3, 256, %r2;
    mul.wide.u32 %rd2, %r2, 4;
    add.s64 %rd3, %rd1, %rd2;
    mov.u32 %r3, 0;
    mov.f32 %f1, 0f00000000;
LOOP:
    ld.global.f32 %f2, [%rd3];
    fma.rn.f32 %f1, %f2, 0f3F000000, %f1;
    add.s32 %r3, %r3, 1;
    setp.lt.u32 %p1, %r3, %r1;
    @%p1 bra LOOP;
    st.global.f32 [%rd3], %f1;
    ret;
}";

/// The same work natively: each thread's value summed `iters` times.
fn native(x: &mut [f32], iters: u32) {
    for v in x.iter_mut() {
        let mut acc = 0.0f32;
        for _ in 0..iters {
            acc = std::hint::black_box(*v).mul_add(0.5, acc);
        }
        *v = acc;
    }
}

/// Lane-instructions per second of the interpreter, then of the interpreter with the
/// compiled runs of `vgpu-ptx-jit`, each against native code.
pub fn interpreter(min_time: Duration) -> Vec<Row> {
    let program = vgpu_ptx::load(PTX).expect("the benchmark kernel loads");
    let k = &program.kernels["loop"];
    let iters = 500u32;
    let count = THREADS * iters as usize * PER_ITERATION;
    let mut params = BASE.to_le_bytes().to_vec();
    params.extend_from_slice(&iters.to_le_bytes());
    let host = HostMemory::new(BASE, 4 * THREADS);
    let direct = DirectMemory::zeroed(BASE, 4 * THREADS).expect("aligned memory");
    let jit = Jit::new(k).expect("a code generator for this host");
    let launch = |mem: &'_ dyn Memory, native: Option<&'_ dyn Native>| {
        let l = Launch {
            grid: [(THREADS / 256) as u32, 1, 1],
            block: [256, 1, 1],
            dynamic_shared: 0,
            params: &params,
            globals: &[],
            mem,
            threads: 1,
            deadline: None,
            cancel: None,
            native,
            pool: None,
        };
        run(k, &l).expect("the benchmark kernel runs")
    };
    let interp = best_rate(count, min_time, || launch(&host, None), || {});
    let compiled = best_rate(count, min_time, || launch(&direct, Some(&jit)), || {});
    let mut x = vec![1.0f32; THREADS];
    let floor = best_rate(count, min_time, || native(&mut x, iters), || {});
    let row = |name: &str, rate: f64| Row {
        name: name.into(),
        value: rate / 1e6,
        unit: "M/s",
        floor_name: "native code, same work".into(),
        floor: floor / 1e6,
        lower_is_better: false,
        target: None,
        p99: None,
    };
    vec![
        row("PTX interpreter, 1 thread", interp),
        row("PTX interpreter and JIT, 1 thread", compiled),
    ]
}
