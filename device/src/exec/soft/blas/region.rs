//! Operands in device memory: column-major matrices ([`Region`]) copied between device
//! memory and compact host buffers in chunks, device arrays of pointers, and the host
//! buffers themselves.

use vgpu_proto::Status;

use super::plan::{batch_addr, INVALID};
use super::types::{Elem, Real};
use super::DeviceMemory;

/// Bytes copied per `DeviceMemory` call (small under test so that chunking is exercised).
const CHUNK_BYTES: usize = if cfg!(test) { 4096 } else { 1 << 20 };

/// Entry `i` of a device array of u64 pointers.
pub(super) fn read_ptr(mem: &dyn DeviceMemory, array: u64, i: usize) -> Result<u64, Status> {
    let addr = batch_addr(array, i, 1, 8)?;
    let mut b = [0u8; 8];
    mem.read(addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A Vec with room for `n` elements, or BLAS_ALLOC_FAILED.
fn with_capacity<T>(n: usize) -> Result<Vec<T>, Status> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Status::BLAS_ALLOC_FAILED)?;
    Ok(v)
}

pub(super) fn zeros<T: Real>(n: usize) -> Result<Vec<T>, Status> {
    let mut v = with_capacity(n)?;
    v.resize(n, T::ZERO);
    Ok(v)
}

/// A column-major `rows × cols` matrix at `addr` with leading dimension `ld`, whose byte
/// extent `((cols-1)·ld + rows)·size` has been checked to fit in 64-bit addresses.
#[derive(Clone, Copy, Debug)]
pub(super) struct Region {
    addr: u64,
    rows: usize,
    cols: usize,
    ld: usize,
    elem: Elem,
    /// Elements in the compact copy (`rows·cols`).
    pub(super) len: usize,
    /// Byte extent in device memory.
    span: usize,
}

impl Region {
    pub(super) fn new(
        addr: u64,
        rows: usize,
        cols: usize,
        ld: usize,
        elem: Elem,
    ) -> Result<Region, Status> {
        if ld < rows.max(1) {
            return Err(INVALID);
        }
        let len = rows.checked_mul(cols).ok_or(INVALID)?;
        let span = if len == 0 {
            0
        } else {
            (cols - 1)
                .checked_mul(ld)
                .and_then(|e| e.checked_add(rows))
                .and_then(|e| e.checked_mul(elem.size()))
                .ok_or(INVALID)?
        };
        addr.checked_add(u64::try_from(span).map_err(|_| INVALID)?)
            .ok_or(INVALID)?;
        Ok(Region {
            addr,
            rows,
            cols,
            ld,
            elem,
            len,
            span,
        })
    }

    /// Reads the first and the last element, so that a bad pointer or leading dimension
    /// fails before any host memory is reserved for the operand.
    pub(super) fn probe(&self, mem: &dyn DeviceMemory) -> Result<(), Status> {
        if self.len == 0 {
            return Ok(());
        }
        let es = self.elem.size();
        let mut b = [0u8; 8];
        mem.read(self.addr, &mut b[..es])?;
        // span >= es and addr + span fits (checked in new).
        mem.read(self.addr + (self.span - es) as u64, &mut b[..es])
    }

    /// Elements per staging chunk.
    fn chunk_elems(&self) -> usize {
        (CHUNK_BYTES / self.elem.size()).min(self.len)
    }

    /// Calls `f(device address, index in the compact copy, element count)` for contiguous
    /// pieces of at most `CHUNK_BYTES`, in column-major order.
    fn for_each_chunk(
        &self,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), Status>,
    ) -> Result<(), Status> {
        if self.len == 0 {
            return Ok(());
        }
        let es = self.elem.size();
        let per_chunk = self.chunk_elems();
        let (runs, run_len, run_step) = if self.cols == 1 || self.ld == self.rows {
            (1, self.len, 0)
        } else {
            (self.cols, self.rows, self.ld)
        };
        let mut dst = 0;
        for r in 0..runs {
            let mut off = 0;
            while off < run_len {
                let n = (run_len - off).min(per_chunk);
                // r·run_step + off < (cols-1)·ld + rows, so the byte offset is < span,
                // which `new` checked to fit (and addr + span to fit in u64).
                let byte_off = (r * run_step + off) * es;
                f(self.addr + byte_off as u64, dst, n)?;
                dst += n;
                off += n;
            }
        }
        Ok(())
    }

    /// Copies the matrix out of device memory into a compact column-major Vec.
    pub(super) fn read<T: Real>(&self, mem: &dyn DeviceMemory) -> Result<Vec<T>, Status> {
        self.probe(mem)?;
        let es = self.elem.size();
        let dec = T::decoder(self.elem);
        let mut out = with_capacity(self.len)?;
        let mut buf = vec![0u8; self.chunk_elems() * es];
        self.for_each_chunk(|addr, _, n| {
            let bytes = &mut buf[..n * es];
            mem.read(addr, bytes)?;
            out.extend(bytes.chunks_exact(es).map(dec));
            Ok(())
        })?;
        Ok(out)
    }

    /// Copies a compact column-major matrix into device memory, converting to `elem`.
    pub(super) fn write<T: Real>(&self, mem: &dyn DeviceMemory, data: &[T]) -> Result<(), Status> {
        if data.len() != self.len {
            return Err(Status::BLAS_INTERNAL_ERROR);
        }
        let es = self.elem.size();
        let enc = T::encoder(self.elem);
        let mut buf = vec![0u8; self.chunk_elems() * es];
        self.for_each_chunk(|addr, dst, n| {
            let bytes = &mut buf[..n * es];
            for (v, o) in data[dst..dst + n].iter().zip(bytes.chunks_exact_mut(es)) {
                enc(*v, o);
            }
            mem.write(addr, bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::types::Elem;
    use super::super::{gemm, gemm_batched};
    use vgpu_proto::payload::GemmDesc;
    use vgpu_proto::Status;

    #[test]
    fn memory_errors_come_from_device_memory() {
        let mem = VecMemory::new();
        let base = small(&mem);
        let c_before = mem.load(base.c, 16);
        let cases: Vec<Mutation<GemmDesc>> = vec![
            ("null A", Box::new(|d| d.a = 0)),
            ("A one element short", Box::new(|d| d.lda = 3)), // needs 5 elements, has 4
            ("B past its end", Box::new(|d| d.b += 4)),
            ("C too small", Box::new(|d| d.ldc = 3)),
            ("huge lda", Box::new(|d| d.lda = 1 << 40)), // probed, nothing reserved
            (
                "second batch",
                Box::new(|d| (d.batch_count, d.stride_c) = (2, 4)),
            ),
            ("beta 0, bad C", Box::new(|d| d.c = 12)),
        ];
        for (name, f) in cases {
            let mut d = base;
            f(&mut d);
            assert_eq!(gemm(&mem, &d), Err(Status::INVALID_VALUE), "{name}");
        }
        // Pointer arrays that are not readable, or that hold a bad pointer.
        let mut d = base;
        let (a, b, c) = (d.a, d.b, d.c);
        (d.a, d.b, d.c) = (mem.ptr_array(&[a]), mem.ptr_array(&[b]), 0);
        assert_eq!(gemm_batched(&mem, &d), Err(Status::INVALID_VALUE));
        d.c = mem.ptr_array(&[c, c]);
        d.batch_count = 2;
        assert_eq!(gemm_batched(&mem, &d), Err(Status::INVALID_VALUE)); // a/b arrays too short
        d.c = mem.ptr_array(&[0xdead_0000]);
        d.batch_count = 1;
        assert_eq!(gemm_batched(&mem, &d), Err(Status::INVALID_VALUE));
        // The first batch's failure leaves C as it was (all zeros here anyway).
        assert_eq!(mem.load(base.c, 16), c_before);
    }

    #[test]
    fn large_operands_are_copied_in_chunks() {
        // CHUNK_BYTES is 4096 under test: these operands span many chunks, contiguous
        // (ld == rows) and not.
        for pads in [(0, 0, 0), (3, 1, 2)] {
            run_gemm_case(&Case {
                pads,
                beta: 0.5,
                ..case(70, 40, 50)
            })
            .unwrap();
            run_gemm_case(&Case {
                pads,
                ta: 1,
                ab: Elem::F16,
                c: Elem::F16,
                ..case(40, 70, 2000)
            })
            .unwrap();
        }
    }
}
