//! The soft executor's CPU reference kernels, keyed by mangled name.
//!
//! Kernels run from their PTX ([`super::modules`]). For an image that carries no PTX (a
//! fatbin built for `sm_XX` only), a launch looks the function's mangled name up here and,
//! if it is found, runs a CPU function with the kernel's semantics over the launch's grid.
//! The registry holds the kernels of the project's test programs and fixtures
//! (`fatbin/tests/fixtures/kernels.cu`); `SoftConfig::reference_kernels` turns it off.

use super::memory::Memory;
use std::collections::HashMap;
use vgpu_fatbin::ParamLayout;
use vgpu_proto::Status;

/// What a reference kernel sees of a launch.
pub struct Launch<'a> {
    /// Grid dimensions.
    pub grid: [u32; 3],
    /// Block dimensions.
    pub block: [u32; 3],
    /// The parameter buffer.
    pub params: &'a [u8],
    /// Its layout, by ordinal.
    pub layout: &'a [ParamLayout],
    /// Device memory of the context.
    pub mem: &'a mut Memory,
    /// The module's globals: name → (address, size).
    pub globals: &'a HashMap<String, (u64, u64)>,
}

impl Launch<'_> {
    fn param(&self, ordinal: usize, size: usize) -> Result<&[u8], Status> {
        let p = self.layout.get(ordinal).ok_or(Status::INVALID_VALUE)?;
        if p.size as usize != size {
            return Err(Status::INVALID_VALUE);
        }
        self.params
            .get(p.offset as usize..p.offset as usize + size)
            .ok_or(Status::INVALID_VALUE)
    }

    /// Parameter `i` as a `u64` (a pointer).
    pub fn ptr(&self, i: usize) -> Result<u64, Status> {
        Ok(u64::from_le_bytes(
            self.param(i, 8)?
                .try_into()
                .map_err(|_| Status::INVALID_VALUE)?,
        ))
    }

    /// Parameter `i` as an `i32`.
    pub fn i32(&self, i: usize) -> Result<i32, Status> {
        Ok(i32::from_le_bytes(
            self.param(i, 4)?
                .try_into()
                .map_err(|_| Status::INVALID_VALUE)?,
        ))
    }

    /// The raw bytes of parameter `i`.
    pub fn raw(&self, i: usize) -> Result<&[u8], Status> {
        let p = self.layout.get(i).ok_or(Status::INVALID_VALUE)?;
        self.param(i, p.size as usize)
    }

    /// Total threads in the grid along x.
    pub fn threads_x(&self) -> u64 {
        u64::from(self.grid[0]) * u64::from(self.block[0])
    }

    /// Address of global `name`.
    pub fn global(&self, name: &str) -> Result<u64, Status> {
        self.globals.get(name).map(|g| g.0).ok_or(Status::NOT_FOUND)
    }

    fn load<const N: usize>(&self, addr: u64) -> Result<[u8; N], Status> {
        self.mem
            .slice(addr, N as u64)?
            .try_into()
            .map_err(|_| Status::ILLEGAL_ADDRESS)
    }

    fn store(&mut self, addr: u64, v: &[u8]) -> Result<(), Status> {
        self.mem.slice_mut(addr, v.len() as u64)?.copy_from_slice(v);
        Ok(())
    }

    /// Loads an `f32` (an address outside every allocation is ILLEGAL_ADDRESS, as on a GPU).
    pub fn ld_f32(&self, addr: u64) -> Result<f32, Status> {
        self.load::<4>(addr)
            .map(f32::from_le_bytes)
            .map_err(|_| Status::ILLEGAL_ADDRESS)
    }

    /// Loads an `i32`.
    pub fn ld_i32(&self, addr: u64) -> Result<i32, Status> {
        self.load::<4>(addr)
            .map(i32::from_le_bytes)
            .map_err(|_| Status::ILLEGAL_ADDRESS)
    }

    /// Stores an `f32`.
    pub fn st_f32(&mut self, addr: u64, v: f32) -> Result<(), Status> {
        self.store(addr, &v.to_le_bytes())
            .map_err(|_| Status::ILLEGAL_ADDRESS)
    }

    /// Stores an `i32`.
    pub fn st_i32(&mut self, addr: u64, v: i32) -> Result<(), Status> {
        self.store(addr, &v.to_le_bytes())
            .map_err(|_| Status::ILLEGAL_ADDRESS)
    }

    /// Stores an `f64`.
    pub fn st_f64(&mut self, addr: u64, v: f64) -> Result<(), Status> {
        self.store(addr, &v.to_le_bytes())
            .map_err(|_| Status::ILLEGAL_ADDRESS)
    }
}

/// A CPU reference kernel.
pub type Kernel = fn(&mut Launch<'_>) -> Result<(), Status>;

/// The kernel registered under `mangled`, if any.
pub fn lookup(mangled: &str) -> Option<Kernel> {
    REGISTRY
        .iter()
        .find(|(n, _)| *n == mangled)
        .map(|(_, k)| *k)
}

/// Every registered kernel: (mangled name, CPU function).
pub const REGISTRY: &[(&str, Kernel)] = &[
    ("_Z6vecAddPKfS0_Pfi", fixture_vec_add),
    ("_Z10odd_params6ParamsPKixsPi", fixture_odd_params),
    ("_Z9no_paramsv", fixture_no_params),
    ("plain_c_kernel", fixture_plain_c),
    ("_Z12calls_helperPii", fixture_calls_helper),
    ("_Z12extra_kernelPdhf", fixture_extra_kernel),
];

/// `vecAdd(a, b, c, n)`: `c[i] = a[i] + b[i] + g_table[i % 37]`.
fn fixture_vec_add(l: &mut Launch<'_>) -> Result<(), Status> {
    let (a, b, c, n) = (l.ptr(0)?, l.ptr(1)?, l.ptr(2)?, l.i32(3)?);
    let table = l.global("g_table")?;
    for i in 0..l.threads_x().min(n.max(0) as u64) {
        let v = l.ld_f32(a + 4 * i)? + l.ld_f32(b + 4 * i)? + l.ld_f32(table + 4 * (i % 37))?;
        l.st_f32(c + 4 * i, v)?;
    }
    Ok(())
}

fn add_counter(l: &mut Launch<'_>, by: i32) -> Result<(), Status> {
    let g = l.global("g_counter")?;
    let v = l.ld_i32(g)?.wrapping_add(by);
    l.st_i32(g, v)
}

/// `odd_params(Params{int i; double d; char c[13]} p, const int* q, long long r, short s,
/// int* out)`: every thread writes `out[0] = p.i + (int)p.d + p.c[12] + q[0] + (int)r + s +
/// c_coeffs[s & 15]` and adds 1 to `g_counter`.
fn fixture_odd_params(l: &mut Launch<'_>) -> Result<(), Status> {
    let p = l.raw(0)?.to_vec();
    if p.len() != 32 {
        return Err(Status::INVALID_VALUE);
    }
    let pi = i32::from_le_bytes(p[0..4].try_into().unwrap_or_default());
    let pd = f64::from_le_bytes(p[8..16].try_into().unwrap_or_default());
    let pc12 = p[16 + 12] as i8;
    let q = l.ptr(1)?;
    let r = i64::from_le_bytes(l.raw(2)?.try_into().map_err(|_| Status::INVALID_VALUE)?);
    let s = i16::from_le_bytes(l.raw(3)?.try_into().map_err(|_| Status::INVALID_VALUE)?);
    let out = l.ptr(4)?;
    let coeffs = l.global("c_coeffs")?;
    let threads = l.threads_x()
        * u64::from(l.grid[1])
        * u64::from(l.grid[2])
        * u64::from(l.block[1])
        * u64::from(l.block[2]);
    let v = pi
        .wrapping_add(pd as i32)
        .wrapping_add(i32::from(pc12))
        .wrapping_add(l.ld_i32(q)?)
        .wrapping_add(r as i32)
        .wrapping_add(i32::from(s))
        .wrapping_add(l.ld_i32(coeffs + 4 * (s as u64 & 15))?);
    for _ in 0..threads {
        l.st_i32(out, v)?;
        add_counter(l, 1)?;
    }
    Ok(())
}

/// `no_params()`: every thread adds 2 to `g_counter`.
fn fixture_no_params(l: &mut Launch<'_>) -> Result<(), Status> {
    for _ in 0..all_threads(l) {
        add_counter(l, 2)?;
    }
    Ok(())
}

/// `plain_c_kernel(int x)`: if `x == 42`, every thread adds 1 to `g_counter`.
fn fixture_plain_c(l: &mut Launch<'_>) -> Result<(), Status> {
    if l.i32(0)? == 42 {
        for _ in 0..all_threads(l) {
            add_counter(l, 1)?;
        }
    }
    Ok(())
}

/// `calls_helper(int* out, int x)`: `out[threadIdx.x] = (x + threadIdx.x) * 3 + g_counter`.
fn fixture_calls_helper(l: &mut Launch<'_>) -> Result<(), Status> {
    let (out, x) = (l.ptr(0)?, l.i32(1)?);
    let counter = l.ld_i32(l.global("g_counter")?)?;
    for t in 0..l.block[0] {
        let v = x
            .wrapping_add(t as i32)
            .wrapping_mul(3)
            .wrapping_add(counter);
        l.st_i32(out + 4 * u64::from(t), v)?;
    }
    Ok(())
}

/// `extra_kernel(double* out, unsigned char tag, float scale)`: `out[threadIdx.x] = tag * scale`.
fn fixture_extra_kernel(l: &mut Launch<'_>) -> Result<(), Status> {
    let out = l.ptr(0)?;
    let tag = *l.raw(1)?.first().ok_or(Status::INVALID_VALUE)?;
    let scale = f32::from_le_bytes(l.raw(2)?.try_into().map_err(|_| Status::INVALID_VALUE)?);
    for t in 0..l.block[0] {
        l.st_f64(out + 8 * u64::from(t), f64::from(f32::from(tag) * scale))?;
    }
    Ok(())
}

fn all_threads(l: &Launch<'_>) -> u64 {
    l.grid
        .iter()
        .chain(l.block.iter())
        .map(|&v| u64::from(v))
        .product()
}
