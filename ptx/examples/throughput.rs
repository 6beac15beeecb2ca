//! Interpreter throughput: lane-instructions per second on one host thread, for a loop of
//! float arithmetic with a global load per iteration (the shape of a mat-vec inner loop).
//!
//! `cargo run --release -p vgpu-ptx --example throughput`

use std::sync::Mutex;
use std::time::Instant;
use vgpu_ptx::exec::{run, Launch, Memory};

struct Flat(Mutex<Vec<u8>>);

const BASE: u64 = 0x7f00_0000_0000;

impl Memory for Flat {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let m = self.0.lock().unwrap();
        let o = (addr - BASE) as usize;
        match m.get(o..o + buf.len()) {
            Some(s) => {
                buf.copy_from_slice(s);
                true
            }
            None => false,
        }
    }
    fn write(&self, addr: u64, data: &[u8]) -> bool {
        let mut m = self.0.lock().unwrap();
        let o = (addr - BASE) as usize;
        match m.get_mut(o..o + data.len()) {
            Some(s) => {
                s.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
    fn atomic(&self, _: u64, _: u32, _: &mut dyn FnMut(u64) -> u64) -> Option<u64> {
        None
    }
}

const PTX: &str = ".version 8.0\n.target sm_80\n.address_size 64\n
.visible .entry loop(.param .u64 p, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [p];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
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

fn main() {
    let program = vgpu_ptx::load(PTX).expect("loads");
    let k = &program.kernels["loop"];
    let mem = Flat(Mutex::new(vec![0; 4 * 256]));
    let iters = 2000u32;
    let mut params = BASE.to_le_bytes().to_vec();
    params.extend_from_slice(&iters.to_le_bytes());
    let t0 = Instant::now();
    run(
        k,
        &Launch {
            grid: [4, 1, 1],
            block: [256, 1, 1],
            dynamic_shared: 0,
            params: &params,
            globals: &[],
            mem: &mem,
            threads: 1,
            deadline: None,
        },
    )
    .expect("runs");
    let secs = t0.elapsed().as_secs_f64();
    let lane_insts = 4.0 * 256.0 * (f64::from(iters) * 5.0 + 8.0);
    println!(
        "{:.1} M lane-instructions/s on one thread ({:.3} s)",
        lane_insts / secs / 1e6,
        secs
    );
}
