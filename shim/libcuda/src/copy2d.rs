//! Copies and memsets in two dimensions (`cuMemcpy2D*`, `cuMemsetD2D*`) over MEMCPY_2D and
//! MEMSET_2D (spec §6.6). Device-to-device copies and copies whose host side lies in one
//! window (pinned memory) are one command; copies from or to pageable memory pack whole
//! rows into staging chunks, one MEMCPY_2D per chunk.

use crate::mem::{self, CuResult};
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::In;
use vgpu_shim_abi::status::CuStatus;

type R = Result<(), CuStatus>;
use bytemuck::bytes_of;
use vgpu_proto::payload::{copy_kind, Copy2D, Memset2D};
use vgpu_proto::Command;

const INVALID_VALUE: CuResult = 1;
const NOT_SUPPORTED: CuResult = 801;

/// One side of a 2-D copy.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    /// Host memory at this address (pinned or pageable).
    Host(usize),
    /// Device memory.
    Device(u64),
}

/// A 2-D copy: `height` rows of `width` bytes.
#[derive(Clone, Copy, Debug)]
pub struct Copy {
    /// Source.
    pub src: Side,
    /// Bytes between source rows.
    pub src_pitch: usize,
    /// Destination.
    pub dst: Side,
    /// Bytes between destination rows.
    pub dst_pitch: usize,
    /// Bytes per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl Copy {
    /// Bytes from the first to the last byte touched on a side with `pitch`.
    fn span(&self, pitch: usize) -> Option<usize> {
        (self.height - 1)
            .checked_mul(pitch)?
            .checked_add(self.width)
    }
}

fn payload(
    kind: u32,
    src: (u32, u64, usize),
    dst: (u32, u64, usize),
    width: usize,
    rows: usize,
) -> Copy2D {
    Copy2D {
        kind,
        src_window: src.0,
        src: src.1,
        src_pitch: src.2 as u64,
        dst_window: dst.0,
        rsv0: 0,
        dst: dst.1,
        dst_pitch: dst.2 as u64,
        width: width as u64,
        height: rows as u64,
    }
}

/// Runs a 2-D copy on `stream`: posted with no round trip when nothing host-side needs
/// the caller to wait (device to device, or pinned and `wait` false), else complete on
/// return.
pub fn copy(c: &Copy, stream: u64, wait: bool) -> Result<(), CuResult> {
    if c.width == 0 || c.height == 0 {
        return Ok(());
    }
    if c.height > 1 && (c.src_pitch < c.width || c.dst_pitch < c.width) {
        return Err(INVALID_VALUE);
    }
    let src_span = c.span(c.src_pitch).ok_or(INVALID_VALUE)?;
    let dst_span = c.span(c.dst_pitch).ok_or(INVALID_VALUE)?;
    let run = |p: Copy2D| {
        mem::run_inline(
            Command::MEMCPY_2D(bytemuck::Zeroable::zeroed()),
            stream,
            bytes_of(&p),
            wait,
        )
    };
    match (c.src, c.dst) {
        (Side::Device(s), Side::Device(d)) => run(payload(
            copy_kind::DTOD,
            (0, s, c.src_pitch),
            (0, d, c.dst_pitch),
            c.width,
            c.height,
        )),
        (Side::Host(s), Side::Host(d)) => {
            // Host to host: done here, after the stream's earlier work.
            if stream != 0 || wait {
                mem::call(Command::CTX_SYNCHRONIZE(bytemuck::Zeroable::zeroed()), 0)?;
            }
            for r in 0..c.height {
                // SAFETY: both sides hold their spans (CUDA's contract); rows lie within them.
                unsafe {
                    std::ptr::copy(
                        (s + r * c.src_pitch) as *const u8,
                        (d + r * c.dst_pitch) as *mut u8,
                        c.width,
                    )
                };
            }
            Ok(())
        }
        (Side::Host(h), Side::Device(d)) => {
            if let Some((w, off)) = pinned(h, src_span)? {
                return run(payload(
                    copy_kind::HTOD,
                    (w, off, c.src_pitch),
                    (0, d, c.dst_pitch),
                    c.width,
                    c.height,
                ));
            }
            staged(c, stream, true)
        }
        (Side::Device(s), Side::Host(h)) => {
            if let Some((w, off)) = pinned(h, dst_span)? {
                return run(payload(
                    copy_kind::DTOH,
                    (0, s, c.src_pitch),
                    (w, off, c.dst_pitch),
                    c.width,
                    c.height,
                ));
            }
            staged(c, stream, false)
        }
    }
}

fn pinned(p: usize, n: usize) -> Result<Option<(u32, u64)>, CuResult> {
    let (conn, _) = mem::conn()?;
    let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
    Ok(mem::window_of(&conn, p, n))
}

/// A 2-D copy between pageable memory and the device, whole rows per staging chunk (rows
/// longer than a chunk go one by one through the 1-D path).
fn staged(c: &Copy, stream: u64, to_device: bool) -> Result<(), CuResult> {
    let (host, host_pitch, dev, dev_pitch) = match (c.src, c.dst) {
        (Side::Host(h), Side::Device(d)) => (h, c.src_pitch, d, c.dst_pitch),
        (Side::Device(d), Side::Host(h)) => (h, c.dst_pitch, d, c.src_pitch),
        _ => return Err(INVALID_VALUE),
    };
    if c.width > mem::CHUNK {
        for r in 0..c.height {
            let (h, d) = (host + r * host_pitch, dev + (r * dev_pitch) as u64);
            if to_device {
                mem::htod(d, h as *const u8, c.width, stream, true)?;
            } else {
                mem::dtoh(h as *mut u8, d, c.width, stream, true)?;
            }
        }
        return Ok(());
    }
    let w = c.width;
    let rows_of = |off: usize, len: usize| (off / w, len / w);
    mem::staged(
        w * c.height,
        w,
        |win, chunk, off, len| {
            let (r0, rows) = rows_of(off, len);
            let d = dev + (r0 * dev_pitch) as u64;
            let p = if to_device {
                for r in 0..rows {
                    // SAFETY: the host side holds its span (CUDA's contract); row r0 + r
                    // lies within it.
                    let row = unsafe {
                        std::slice::from_raw_parts((host + (r0 + r) * host_pitch) as *const u8, w)
                    };
                    win.write(chunk + r * w, row).map_err(|_| INVALID_VALUE)?;
                }
                payload(
                    copy_kind::HTOD,
                    (win.id(), chunk as u64, w),
                    (0, d, dev_pitch),
                    w,
                    rows,
                )
            } else {
                payload(
                    copy_kind::DTOH,
                    (0, d, dev_pitch),
                    (win.id(), chunk as u64, w),
                    w,
                    rows,
                )
            };
            Ok((
                Command::MEMCPY_2D(bytemuck::Zeroable::zeroed()),
                bytes_of(&p).to_vec(),
            ))
        },
        |win, chunk, off, len| {
            if to_device {
                return Ok(());
            }
            let (r0, rows) = rows_of(off, len);
            for r in 0..rows {
                // SAFETY: the host side holds its span (CUDA's contract); row r0 + r lies
                // within it.
                let row = unsafe {
                    std::slice::from_raw_parts_mut((host + (r0 + r) * host_pitch) as *mut u8, w)
                };
                win.read(chunk + r * w, row).map_err(|_| INVALID_VALUE)?;
            }
            Ok(())
        },
        stream,
    )
}

/// `CUmemorytype`.
const MEMORYTYPE_HOST: u32 = 1;
const MEMORYTYPE_DEVICE: u32 = 2;
const MEMORYTYPE_ARRAY: u32 = 3;
const MEMORYTYPE_UNIFIED: u32 = 4;

/// `CUDA_MEMCPY2D`, with its memory types as plain integers: a caller's value need not be
/// a valid variant of bindgen's enum (the layout test below pins it to cudarc's type).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Memcpy2D {
    src_x: usize,
    src_y: usize,
    src_type: u32,
    src_host: usize,
    src_device: u64,
    src_array: usize,
    src_pitch: usize,
    dst_x: usize,
    dst_y: usize,
    dst_type: u32,
    dst_host: usize,
    dst_device: u64,
    dst_array: usize,
    dst_pitch: usize,
    width: usize,
    height: usize,
}

fn side(
    kind: u32,
    host: usize,
    device: u64,
    x: usize,
    y: usize,
    pitch: usize,
) -> Result<Side, CuResult> {
    let off = y
        .checked_mul(pitch)
        .and_then(|v| v.checked_add(x))
        .ok_or(INVALID_VALUE)?;
    match kind {
        MEMORYTYPE_HOST => Ok(Side::Host(host.checked_add(off).ok_or(INVALID_VALUE)?)),
        MEMORYTYPE_DEVICE => Ok(Side::Device(
            device.checked_add(off as u64).ok_or(INVALID_VALUE)?,
        )),
        // Unified addressing: the device pointer field holds the address, either kind.
        MEMORYTYPE_UNIFIED if mem::is_device(device) => Ok(Side::Device(device + off as u64)),
        MEMORYTYPE_UNIFIED => Ok(Side::Host(device as usize + off)),
        MEMORYTYPE_ARRAY => {
            log::warn!("vgpu: CUDA arrays are not supported");
            Err(NOT_SUPPORTED)
        }
        _ => Err(INVALID_VALUE),
    }
}

fn from_desc(d: Memcpy2D) -> Result<Copy, CuResult> {
    Ok(Copy {
        src: side(
            d.src_type,
            d.src_host,
            d.src_device,
            d.src_x,
            d.src_y,
            d.src_pitch,
        )?,
        src_pitch: d.src_pitch,
        dst: side(
            d.dst_type,
            d.dst_host,
            d.dst_device,
            d.dst_x,
            d.dst_y,
            d.dst_pitch,
        )?,
        dst_pitch: d.dst_pitch,
        width: d.width,
        height: d.height,
    })
}

fn memset(dst: u64, pitch: usize, value: u32, elem_size: u32, shape: (usize, usize)) -> Memset2D {
    Memset2D {
        dst,
        pitch: pitch as u64,
        width: shape.0 as u64,
        height: shape.1 as u64,
        value,
        elem_size,
        rsv: 0,
    }
}

/// Runs a MEMSET_2D on `stream`, complete on return with `wait`.
fn run_memset(p: Memset2D, stream: usize, wait: bool) -> R {
    if p.width == 0 || p.height == 0 {
        return Ok(());
    }
    let cmd = Command::MEMSET_2D(bytemuck::Zeroable::zeroed());
    Ok(mem::run_inline(
        cmd,
        mem::stream(stream),
        bytes_of(&p),
        wait,
    )?)
}

/// A 2-D copy; `stream` None: on the NULL stream and complete on return.
fn copy_2d(p: In<Memcpy2D>, stream: Option<usize>) -> R {
    let c = from_desc(p.read()?)?;
    match stream {
        None => Ok(copy(&c, 0, true)?),
        Some(s) => Ok(copy(&c, mem::stream(s), false)?),
    }
}

exports! {
    library "libcuda.so.1", status CuStatus;
    implemented fn cuMemcpy2D_v2(p: In<Memcpy2D>) => copy_2d(p, None);
    implemented fn cuMemcpy2DUnaligned_v2(p: In<Memcpy2D>) => copy_2d(p, None);
    implemented fn cuMemcpy2DAsync_v2(p: In<Memcpy2D>, stream: usize) => copy_2d(p, Some(stream));
    implemented fn cuMemsetD2D8_v2(dst: u64, pitch: usize, v: u8, width: usize, height: usize)
        => run_memset(memset(dst, pitch, v.into(), 1, (width, height)), 0, true);
    implemented fn cuMemsetD2D16_v2(dst: u64, pitch: usize, v: u16, width: usize, height: usize)
        => run_memset(memset(dst, pitch, v.into(), 2, (width, height)), 0, true);
    implemented fn cuMemsetD2D32_v2(dst: u64, pitch: usize, v: u32, width: usize, height: usize)
        => run_memset(memset(dst, pitch, v, 4, (width, height)), 0, true);
    implemented fn cuMemsetD2D8Async(dst: u64, pitch: usize, v: u8, width: usize, height: usize, stream: usize)
        => run_memset(memset(dst, pitch, v.into(), 1, (width, height)), stream, false);
    implemented fn cuMemsetD2D16Async(dst: u64, pitch: usize, v: u16, width: usize, height: usize, stream: usize)
        => run_memset(memset(dst, pitch, v.into(), 2, (width, height)), stream, false);
    implemented fn cuMemsetD2D32Async(dst: u64, pitch: usize, v: u32, width: usize, height: usize, stream: usize)
        => run_memset(memset(dst, pitch, v, 4, (width, height)), stream, false);
}
