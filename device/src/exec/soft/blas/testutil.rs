//! Test helpers shared by the soft BLAS tests: a fake device memory, random values,
//! matrices placed in that memory, the documented tolerances and the GEMM reference harness.

use std::cell::RefCell;

use half::{bf16, f16};
use vgpu_proto::payload::GemmDesc;
use vgpu_proto::Status;

use super::types::Elem;
use super::{compute_type, gemm, gemm_batched, DeviceMemory};

// ----- test double ------------------------------------------------------------------

/// Device memory over a few Vec<u8> allocations at fake addresses 4 GiB apart.
pub(super) struct VecMemory {
    allocs: RefCell<Vec<(u64, Vec<u8>)>>,
}

const BASE: u64 = 0x7f00_0000_0000;

impl VecMemory {
    pub(super) fn new() -> Self {
        VecMemory {
            allocs: RefCell::new(Vec::new()),
        }
    }
    pub(super) fn alloc(&self, len: usize) -> u64 {
        let mut a = self.allocs.borrow_mut();
        let base = BASE + ((a.len() as u64) << 32);
        a.push((base, vec![0; len]));
        base
    }
    pub(super) fn alloc_with(&self, bytes: &[u8]) -> u64 {
        let addr = self.alloc(bytes.len());
        self.write(addr, bytes).unwrap();
        addr
    }
    pub(super) fn ptr_array(&self, ptrs: &[u64]) -> u64 {
        let bytes: Vec<u8> = ptrs.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.alloc_with(&bytes)
    }
    fn locate(&self, addr: u64, len: usize) -> Result<(usize, usize), Status> {
        let a = self.allocs.borrow();
        for (idx, (base, v)) in a.iter().enumerate() {
            if addr >= *base {
                let off = addr - base;
                if off <= v.len() as u64 && len as u64 <= v.len() as u64 - off {
                    return Ok((idx, off as usize));
                }
            }
        }
        Err(Status::INVALID_VALUE)
    }
    pub(super) fn snapshot(&self) -> Vec<Vec<u8>> {
        self.allocs
            .borrow()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub(super) fn load(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.read(addr, &mut v).unwrap();
        v
    }
}

impl DeviceMemory for VecMemory {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Status> {
        let (idx, off) = self.locate(addr, out.len())?;
        out.copy_from_slice(&self.allocs.borrow()[idx].1[off..off + out.len()]);
        Ok(())
    }
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), Status> {
        let (idx, off) = self.locate(addr, data.len())?;
        self.allocs.borrow_mut()[idx].1[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// A named change to a valid descriptor.
pub(super) type Mutation<D> = (&'static str, Box<dyn Fn(&mut D)>);

/// `|err| <= tol`, false for NaN.
pub(super) fn within(err: f64, tol: f64) -> bool {
    err.abs() <= tol
}

// ----- values ----------------------------------------------------------------------

pub(super) struct Rng(pub(super) u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub(super) fn val(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

pub(super) fn enc(e: Elem, v: f64) -> Vec<u8> {
    match e {
        Elem::F32 => (v as f32).to_le_bytes().to_vec(),
        Elem::F64 => v.to_le_bytes().to_vec(),
        Elem::F16 => f16::from_f64(v).to_le_bytes().to_vec(),
        Elem::Bf16 => bf16::from_f64(v).to_le_bytes().to_vec(),
    }
}
pub(super) fn dec(e: Elem, b: &[u8]) -> f64 {
    match e {
        Elem::F32 => f64::from(f32::from_le_bytes(b.try_into().unwrap())),
        Elem::F64 => f64::from_le_bytes(b.try_into().unwrap()),
        Elem::F16 => f16::from_le_bytes(b.try_into().unwrap()).to_f64(),
        Elem::Bf16 => bf16::from_le_bytes(b.try_into().unwrap()).to_f64(),
    }
}
pub(super) fn scal(e: Elem, v: f64) -> [u8; 16] {
    let mut s = [0u8; 16];
    let b = enc(e, v);
    s[..b.len()].copy_from_slice(&b);
    s
}
/// Unit roundoff of an output type.
pub(super) fn unit(e: Elem) -> f64 {
    match e {
        Elem::F32 => 2f64.powi(-24),
        Elem::F64 => 2f64.powi(-53),
        Elem::F16 => 2f64.powi(-11),
        Elem::Bf16 => 2f64.powi(-8),
    }
}
/// Smallest positive subnormal of an output type.
pub(super) fn tiny(e: Elem) -> f64 {
    match e {
        Elem::F32 => 2f64.powi(-149),
        Elem::F64 => f64::from_bits(1),
        Elem::F16 => 2f64.powi(-24),
        Elem::Bf16 => 2f64.powi(-133),
    }
}
/// The documented GEMM bound.
pub(super) fn gemm_tol(k: usize, s: f64, reference: f64, u_c: f64, out: Elem) -> f64 {
    2.0 * (k as f64 + 4.0) * u_c * s + unit(out) * reference.abs() + tiny(out)
}
pub(super) fn scale_of(compute: u32) -> Elem {
    match compute {
        64 | 65 | 2 => Elem::F16,
        70 | 71 | 1 => Elem::F64,
        _ => Elem::F32,
    }
}
pub(super) fn u_compute(compute: u32) -> f64 {
    if scale_of(compute) == Elem::F64 {
        2f64.powi(-53)
    } else {
        2f64.powi(-24)
    }
}

// ----- matrices in the fake device memory -------------------------------------------

#[derive(Clone, Copy, Debug)]
pub(super) enum Placement {
    /// One allocation per batch (for pointer arrays).
    Separate,
    /// One allocation, batches `extent + pad` elements apart.
    Strided(usize),
    /// Every batch at the same address (stride 0).
    Broadcast,
}

/// A batch of column-major matrices written into a VecMemory.
pub(super) struct Mat {
    e: Elem,
    rows: usize,
    cols: usize,
    ld: usize,
    pub(super) stride: usize,
    pub(super) addrs: Vec<u64>,
}

impl Mat {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        mem: &VecMemory,
        e: Elem,
        rows: usize,
        cols: usize,
        ld: usize,
        batch: usize,
        place: Placement,
        mut val: impl FnMut() -> f64,
        pad: f64,
    ) -> Mat {
        let es = e.size();
        let extent = if rows * cols == 0 {
            0
        } else {
            (cols - 1) * ld + rows
        };
        let one = |mem: &VecMemory, n: usize| {
            let bytes: Vec<u8> = (0..n.max(1)).flat_map(|_| enc(e, pad)).collect();
            mem.alloc_with(&bytes)
        };
        let (stride, addrs) = match place {
            Placement::Separate => (0, (0..batch).map(|_| one(mem, extent)).collect()),
            Placement::Broadcast => {
                let a = one(mem, extent);
                (0, vec![a; batch])
            }
            Placement::Strided(p) => {
                let stride = extent + p;
                let a = one(mem, stride * (batch - 1) + extent);
                (
                    stride,
                    (0..batch).map(|b| a + (b * stride * es) as u64).collect(),
                )
            }
        };
        let m = Mat {
            e,
            rows,
            cols,
            ld,
            stride,
            addrs,
        };
        let distinct = if matches!(place, Placement::Broadcast) {
            1
        } else {
            batch
        };
        for b in 0..distinct {
            for j in 0..cols {
                for i in 0..rows {
                    mem.write(m.at(b, i, j), &enc(e, val())).unwrap();
                }
            }
        }
        m
    }
    fn at(&self, b: usize, i: usize, j: usize) -> u64 {
        self.addrs[b] + ((i + j * self.ld) * self.e.size()) as u64
    }
    pub(super) fn get(&self, mem: &VecMemory, b: usize, i: usize, j: usize) -> f64 {
        dec(self.e, &mem.load(self.at(b, i, j), self.e.size()))
    }
    /// All values, per batch, compact column-major.
    pub(super) fn values(&self, mem: &VecMemory) -> Vec<Vec<f64>> {
        (0..self.addrs.len())
            .map(|b| {
                let mut v = Vec::new();
                for j in 0..self.cols {
                    for i in 0..self.rows {
                        v.push(self.get(mem, b, i, j));
                    }
                }
                v
            })
            .collect()
    }
}

/// Checks that nothing but the elements of `out` changed between `before` and now.
pub(super) fn only_changed(mem: &VecMemory, before: &[Vec<u8>], out: &Mat) -> Result<(), String> {
    let after = mem.snapshot();
    let mut expect = before.to_vec();
    for b in 0..out.addrs.len() {
        for j in 0..out.cols {
            for i in 0..out.rows {
                let (idx, off) = mem.locate(out.at(b, i, j), out.e.size()).unwrap();
                let es = out.e.size();
                expect[idx][off..off + es].copy_from_slice(&after[idx][off..off + es]);
            }
        }
    }
    if expect != after {
        return Err("memory outside the output matrix changed".into());
    }
    Ok(())
}

pub(super) fn op_get(v: &[f64], rows: usize, trans: bool, i: usize, l: usize) -> f64 {
    // op(X)(i, l) of a compact stored matrix with `rows` rows
    if trans {
        v[l + i * rows]
    } else {
        v[i + l * rows]
    }
}

// ----- GEMM harness -----------------------------------------------------------------

#[derive(Clone, Debug)]
pub(super) struct Case {
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) ta: u32,
    pub(super) tb: u32,
    pub(super) pads: (usize, usize, usize),
    pub(super) batch: usize,
    pub(super) pointers: bool,
    pub(super) stride_pad: usize,
    pub(super) broadcast_a: bool,
    pub(super) ab: Elem,
    pub(super) c: Elem,
    pub(super) compute: u32,
    pub(super) alpha: f64,
    pub(super) beta: f64,
    pub(super) seed: u64,
}

pub(super) fn case(m: usize, n: usize, k: usize) -> Case {
    Case {
        m,
        n,
        k,
        ta: 0,
        tb: 0,
        pads: (0, 0, 0),
        batch: 1,
        pointers: false,
        stride_pad: 0,
        broadcast_a: false,
        ab: Elem::F32,
        c: Elem::F32,
        compute: compute_type::C32F,
        alpha: 1.0,
        beta: 0.0,
        seed: 1,
    }
}

pub(super) fn desc(m: i64, n: i64, k: i64) -> GemmDesc {
    GemmDesc {
        handle: 1,
        transa: 0,
        transb: 0,
        m,
        n,
        k,
        a: 0,
        lda: m.max(1),
        stride_a: 0,
        b: 0,
        ldb: k.max(1),
        stride_b: 0,
        c: 0,
        ldc: m.max(1),
        stride_c: 0,
        batch_count: 1,
        a_type: 0,
        b_type: 0,
        c_type: 0,
        compute_type: compute_type::C32F,
        algo: -1,
        math_mode: 0,
        alpha: scal(Elem::F32, 1.0),
        beta: scal(Elem::F32, 0.0),
        workspace: 0,
        workspace_size: 0,
    }
}

pub(super) fn run_gemm_case(c: &Case) -> Result<(), String> {
    let mem = VecMemory::new();
    let mut rng = Rng(c.seed);
    let (ta, tb) = (c.ta != 0, c.tb != 0);
    let (ar, ac) = if ta { (c.k, c.m) } else { (c.m, c.k) };
    let (br, bc) = if tb { (c.n, c.k) } else { (c.k, c.n) };
    let (lda, ldb, ldc) = (
        ar.max(1) + c.pads.0,
        br.max(1) + c.pads.1,
        c.m.max(1) + c.pads.2,
    );
    let place = |bcast: bool| {
        if c.pointers {
            Placement::Separate
        } else if bcast && c.batch > 1 {
            Placement::Broadcast
        } else {
            Placement::Strided(c.stride_pad)
        }
    };
    let nan = f64::NAN;
    let a = Mat::new(
        &mem,
        c.ab,
        ar,
        ac,
        lda,
        c.batch,
        place(c.broadcast_a),
        || rng.val(),
        nan,
    );
    let b = Mat::new(
        &mem,
        c.ab,
        br,
        bc,
        ldb,
        c.batch,
        place(false),
        || rng.val(),
        nan,
    );
    let beta0 = c.beta == 0.0;
    let cm = Mat::new(
        &mem,
        c.c,
        c.m,
        c.n,
        ldc,
        c.batch,
        place(false),
        || if beta0 { nan } else { rng.val() },
        nan,
    );
    let (av, bv, cv) = (a.values(&mem), b.values(&mem), cm.values(&mem));

    let scale = scale_of(c.compute);
    let mut d = desc(c.m as i64, c.n as i64, c.k as i64);
    d.transa = c.ta;
    d.transb = c.tb;
    d.lda = lda as i64;
    d.ldb = ldb as i64;
    d.ldc = ldc as i64;
    d.batch_count = c.batch as i64;
    d.a_type = c.ab.cuda();
    d.b_type = c.ab.cuda();
    d.c_type = c.c.cuda();
    d.compute_type = c.compute;
    d.alpha = scal(scale, c.alpha);
    d.beta = scal(scale, c.beta);
    if c.pointers {
        d.a = mem.ptr_array(&a.addrs);
        d.b = mem.ptr_array(&b.addrs);
        d.c = mem.ptr_array(&cm.addrs);
    } else {
        (d.a, d.b, d.c) = (a.addrs[0], b.addrs[0], cm.addrs[0]);
        (d.stride_a, d.stride_b, d.stride_c) = (a.stride as i64, b.stride as i64, cm.stride as i64);
    }
    let before = mem.snapshot();
    let r = if c.pointers {
        gemm_batched(&mem, &d)
    } else {
        gemm(&mem, &d)
    };
    r.map_err(|s| format!("gemm failed: {s}"))?;
    only_changed(&mem, &before, &cm)?;

    for bt in 0..c.batch {
        for j in 0..c.n {
            for i in 0..c.m {
                let (mut sum, mut abs) = (0.0, 0.0);
                for l in 0..c.k {
                    let p = op_get(&av[bt], ar, ta, i, l) * op_get(&bv[bt], br, tb, l, j);
                    sum += p;
                    abs += p.abs();
                }
                let c0 = if beta0 { 0.0 } else { cv[bt][i + j * c.m] };
                let reference = c.alpha * sum + c.beta * c0;
                let s = c.alpha.abs() * abs + c.beta.abs() * c0.abs();
                let tol = gemm_tol(c.k, s, reference, u_compute(c.compute), c.c);
                let got = cm.get(&mem, bt, i, j);
                if !within(got - reference, tol) {
                    return Err(format!(
                        "batch {bt} C({i},{j}) = {got}, expected {reference} ± {tol}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A valid 2×2×2 f32 GEMM with real buffers.
pub(super) fn small(mem: &VecMemory) -> GemmDesc {
    let mut d = desc(2, 2, 2);
    d.a = mem.alloc(16);
    d.b = mem.alloc(16);
    d.c = mem.alloc(16);
    d
}

// ----- property-test parameters (GEMM and Lt) ---------------------------------------

pub(super) const TYPES: [(Elem, Elem, u32); 12] = [
    (Elem::F32, Elem::F32, 68),
    (Elem::F32, Elem::F32, 0),
    (Elem::F32, Elem::F32, 77),
    (Elem::F16, Elem::F32, 68),
    (Elem::F16, Elem::F16, 68),
    (Elem::F16, Elem::F16, 74),
    (Elem::Bf16, Elem::F32, 68),
    (Elem::Bf16, Elem::Bf16, 75),
    (Elem::F16, Elem::F16, 64),
    (Elem::F16, Elem::F16, 2),
    (Elem::F64, Elem::F64, 70),
    (Elem::F64, Elem::F64, 1),
];
pub(super) const ALPHAS: [f64; 5] = [1.0, -1.5, 0.5, 0.0, 2.0];
pub(super) const BETAS: [f64; 4] = [0.0, 1.0, -0.5, 0.25];
