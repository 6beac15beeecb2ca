//! A client written against someone else's CUDA bindings: `cudarc`'s safe API (its own
//! dynamic loading of `libcuda.so` and `libcublas.so`), run against vgpu's libraries by
//! `tests/stack.rs`. It makes the primary context current as cudarc does (retain, set
//! current), allocates, copies both ways, loads a PTX module and launches a kernel from it,
//! runs a cuBLAS GEMM, and checks every result. Exit status 0 and "cudarc: all checks
//! passed" when they hold.

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::error::Error;

const PTX: &str = r#"
.version 7.0
.target sm_70
.address_size 64

.visible .entry scale(.param .u64 p_data, .param .f32 p_factor, .param .u32 p_n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<3>;
    .reg .b64 %rd<5>;
    ld.param.u64 %rd1, [p_data];
    ld.param.f32 %f1, [p_factor];
    ld.param.u32 %r2, [p_n];
    mov.u32 %r3, %ctaid.x;
    mov.u32 %r4, %ntid.x;
    mov.u32 %r5, %tid.x;
    mad.lo.s32 %r1, %r3, %r4, %r5;
    setp.ge.u32 %p1, %r1, %r2;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd2, %rd3;
    ld.global.f32 %f2, [%rd4];
    mul.f32 %f2, %f2, %f1;
    st.global.f32 [%rd4], %f2;
DONE:
    ret;
}
"#;

fn check(ok: bool, what: &str) -> Result<(), Box<dyn Error>> {
    if ok {
        println!("cudarc: {what}: checked");
        Ok(())
    } else {
        Err(format!("cudarc: {what}: FAILED").into())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let ctx = CudaContext::new(0)?;
    println!("cudarc: device 0 is {}", ctx.name()?);
    let (major, minor) = ctx.compute_capability()?;
    println!("cudarc: compute capability {major}.{minor}");
    let stream = ctx.new_stream()?;

    // Copies both ways, and a kernel from PTX.
    let n = 1000u32;
    let host: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let mut data = stream.clone_htod(&host)?;
    let module = ctx.load_module(Ptx::from_src(PTX))?;
    let scale = module.load_function("scale")?;
    let factor = 3.0f32;
    let mut launch = stream.launch_builder(&scale);
    launch.arg(&mut data).arg(&factor).arg(&n);
    // SAFETY: `scale` takes (float *, float, unsigned), as pushed, and touches n elements.
    unsafe { launch.launch(LaunchConfig::for_num_elems(n)) }?;
    let back = stream.clone_dtoh(&data)?;
    check(
        back.iter().zip(&host).all(|(b, h)| *b == h * factor),
        "copies and a PTX kernel over 1000 elements",
    )?;

    // A cuBLAS GEMM: C (m×n) = A (m×k) · B (k×n), column-major.
    let (m, k, nn) = (7usize, 5usize, 3usize);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..k * nn).map(|i| (i % 5) as f32 * 0.25).collect();
    let da = stream.clone_htod(&a)?;
    let db = stream.clone_htod(&b)?;
    let mut dc = stream.alloc_zeros::<f32>(m * nn)?;
    let blas = CudaBlas::new(stream.clone())?;
    let cfg = GemmConfig {
        transa: cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N,
        transb: cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N,
        m: m as i32,
        n: nn as i32,
        k: k as i32,
        alpha: 1.0f32,
        lda: m as i32,
        ldb: k as i32,
        beta: 0.0f32,
        ldc: m as i32,
    };
    // SAFETY: the three buffers hold m×k, k×n and m×n elements, as the configuration says.
    unsafe { blas.gemm(cfg, &da, &db, &mut dc) }?;
    let c = stream.clone_dtoh(&dc)?;
    let mut ok = true;
    for j in 0..nn {
        for i in 0..m {
            let want: f32 = (0..k).map(|l| a[l * m + i] * b[j * k + l]).sum();
            ok &= (c[j * m + i] - want).abs() <= 1e-5 * (1.0 + want.abs());
        }
    }
    check(ok, "cublasSgemm 7x3x5")?;

    // A second handle on the primary context: the retain count, then the release.
    let again = CudaContext::new(0)?;
    check(
        again.name()? == ctx.name()?,
        "the primary context retained twice",
    )?;
    drop(again);
    stream.synchronize()?;
    println!("cudarc: all checks passed");
    Ok(())
}
