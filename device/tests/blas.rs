//! BLAS through the device: GEMMs submitted on an I/O queue and computed by the soft
//! executor match a float64 reference within the tolerances documented in
//! `exec/soft/blas/mod.rs`.

use bytemuck::Zeroable;
use half::f16;
use std::time::Duration;
use vgpu_proto::cmd::*;
use vgpu_proto::payload::GemmDesc;
use vgpu_proto::{Command, Status};
use vgpu_test_stack::bare::*;

fn upload(d: &mut BareDriver, c: &mut PdClient, bytes: &[u8]) -> u64 {
    let addr = c.mem_alloc(bytes.len() as u64);
    d.write(c.window, bytes);
    c.copy_from_window(0, addr, bytes.len() as u64, 0);
    assert_eq!(c.synchronize(0), Status::SUCCESS);
    addr
}

fn download(d: &mut BareDriver, c: &mut PdClient, addr: u64, len: usize) -> Vec<u8> {
    c.copy_to_window(0, addr, len as u64, 0);
    assert_eq!(c.synchronize(0), Status::SUCCESS);
    d.read(c.window, len)
}

/// Column-major element (i, j) of op(X) where X is stored with leading dimension ld.
fn at(x: &[f64], ld: usize, trans: bool, i: usize, j: usize) -> f64 {
    if trans {
        x[j + i * ld]
    } else {
        x[i + j * ld]
    }
}

fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
}

#[test]
fn gemm_f32_and_f16_match_a_float64_reference() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 8 << 20, 0);
    let h = c
        .io(0, Command::BLAS_CREATE(Zeroable::zeroed()), &[])
        .result0;
    let mut seed = 7u64;
    for (m, n, k, ta, tb, batch, half) in [
        (17, 9, 13, false, false, 1, false),
        (8, 16, 5, true, false, 3, false),
        (12, 7, 33, false, true, 2, true),
        (5, 5, 64, true, true, 1, true),
    ] {
        let (lda, ldb, ldc) = (
            if ta { k } else { m } + 1,
            if tb { n } else { k } + 2,
            m + 3,
        );
        let (a_cols, b_cols) = (if ta { m } else { k }, if tb { k } else { n });
        let (sa, sb, sc) = (lda * a_cols, ldb * b_cols, ldc * n);
        let a: Vec<f64> = (0..sa * batch).map(|_| lcg(&mut seed)).collect();
        let b: Vec<f64> = (0..sb * batch).map(|_| lcg(&mut seed)).collect();
        let c0: Vec<f64> = (0..sc * batch).map(|_| lcg(&mut seed)).collect();
        let (alpha, beta) = (1.5f64, -0.5f64);
        // Round the inputs to the stored type so the reference sees what the device sees.
        let store = |v: &[f64]| -> (Vec<u8>, Vec<f64>) {
            if half {
                let h: Vec<f16> = v.iter().map(|x| f16::from_f64(*x)).collect();
                (
                    h.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    h.iter().map(|x| x.to_f64()).collect(),
                )
            } else {
                let f: Vec<f32> = v.iter().map(|x| *x as f32).collect();
                (
                    f.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    f.iter().map(|x| f64::from(*x)).collect(),
                )
            }
        };
        let ((ab, a), (bb, b), (cb, c0)) = (store(&a), store(&b), store(&c0));
        let (pa, pb, pc) = (
            upload(&mut d, &mut c, &ab),
            upload(&mut d, &mut c, &bb),
            upload(&mut d, &mut c, &cb),
        );
        let mut g = GemmDesc::zeroed();
        g.handle = h;
        (g.transa, g.transb) = (u32::from(ta), u32::from(tb));
        (g.m, g.n, g.k) = (m as i64, n as i64, k as i64);
        (g.a, g.lda, g.stride_a) = (pa, lda as i64, sa as i64);
        (g.b, g.ldb, g.stride_b) = (pb, ldb as i64, sb as i64);
        (g.c, g.ldc, g.stride_c) = (pc, ldc as i64, sc as i64);
        g.batch_count = batch as i64;
        let dt = if half { 2 } else { 0 };
        (g.a_type, g.b_type, g.c_type, g.compute_type) = (dt, dt, dt, 68);
        g.alpha[..4].copy_from_slice(&(alpha as f32).to_le_bytes());
        g.beta[..4].copy_from_slice(&(beta as f32).to_le_bytes());
        c.post(
            0,
            Command::BLAS_GEMM(Zeroable::zeroed()),
            bytemuck::bytes_of(&g),
            false,
        );
        let esize = if half { 2 } else { 4 };
        let out = download(&mut d, &mut c, pc, cb.len());
        let got: Vec<f64> = out
            .chunks_exact(esize)
            .map(|e| {
                if half {
                    f16::from_le_bytes([e[0], e[1]]).to_f64()
                } else {
                    f64::from(f32::from_le_bytes([e[0], e[1], e[2], e[3]]))
                }
            })
            .collect();
        let (uc, uo) = (
            2f64.powi(-24),
            if half { 2f64.powi(-11) } else { 2f64.powi(-24) },
        );
        for q in 0..batch {
            for j in 0..n {
                for i in 0..m {
                    let (mut r, mut s) = (0.0, 0.0);
                    for l in 0..k {
                        let x = at(&a[q * sa..], lda, ta, i, l) * at(&b[q * sb..], ldb, tb, l, j);
                        r += x;
                        s += x.abs();
                    }
                    let cij = c0[q * sc + i + j * ldc];
                    let reference = alpha * r + beta * cij;
                    let bound =
                        2.0 * (k as f64 + 4.0) * uc * (alpha.abs() * s + beta.abs() * cij.abs())
                            + uo * reference.abs()
                            + 1e-7;
                    let v = got[q * sc + i + j * ldc];
                    assert!(
                        (v - reference).abs() <= bound,
                        "m{m} n{n} k{k} batch {q} ({i},{j}): got {v}, want {reference} ± {bound}"
                    );
                }
                // Padding rows of C are untouched.
                for i in m..ldc {
                    assert_eq!(got[q * sc + i + j * ldc], c0[q * sc + i + j * ldc]);
                }
            }
        }
    }
    // Errors: a destroyed handle is refused at once; a bad ld is a BLAS status, latched.
    let mut g = GemmDesc::zeroed();
    g.handle = h;
    (g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.batch_count) = (4, 4, 4, 2, 4, 4, 1);
    let mut g0 = g;
    g0.a = 0x7f00_0000_0000;
    let cid = c.post(
        0,
        Command::BLAS_GEMM(Zeroable::zeroed()),
        bytemuck::bytes_of(&g0),
        true,
    );
    let r = c.next(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (r.cid, r.status()),
        (cid, Status::BLAS_INVALID_VALUE),
        "with NOTIFY the error is reported at once"
    );
    c.post(
        0,
        Command::BLAS_GEMM(Zeroable::zeroed()),
        bytemuck::bytes_of(&g0),
        false,
    );
    assert_eq!(c.synchronize(0), Status::BLAS_INVALID_VALUE);
    assert_eq!(
        c.io(
            0,
            Command::BLAS_DESTROY(HandleArgs {
                handle: h,
                ..Zeroable::zeroed()
            }),
            &[]
        )
        .status(),
        Status::SUCCESS
    );
    c.post(
        0,
        Command::BLAS_GEMM(Zeroable::zeroed()),
        bytemuck::bytes_of(&g),
        false,
    );
    let r = c.next(Duration::from_secs(5)).unwrap();
    assert_eq!(r.status(), Status::INVALID_HANDLE);
    drop((c, d));
    stub.join();
}
