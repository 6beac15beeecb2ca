//! Execution of I/O commands (spec §7.5–§7.12): resolving windows and payloads, gating on
//! the PD's sticky error, and turning each command into a context call.

use super::pd::Pd;
use super::queue::{Completion, Queue};
use super::{cache, Inner};
use crate::exec::{HostSource, Op, Outcome, Side2D, Ticket};
use std::sync::Arc;
use vgpu_os::lock;
use vgpu_proto::cmd::{module_flags, OutRef, Payload, Request};
use vgpu_proto::info::{encode_module_info, DeviceInfo, MgmtInfo};
use vgpu_proto::opcode::Completion as Kind;
use vgpu_proto::payload::{copy_kind, decode_structured, Structured};
use vgpu_proto::queue::cqe_flags;
use vgpu_proto::{Command, Opcode, Status};

/// Largest window payload the device copies in (module images are the big ones).
pub const MAX_WINDOW_PAYLOAD: u64 = 1 << 30;

/// Commands that still run while the PD has a sticky error (spec §8.3).
fn allowed_when_sticky(op: Opcode) -> bool {
    use Opcode::*;
    matches!(
        op,
        NOP | DEVICE_INFO
            | MEM_GET_INFO
            | MGMT_QUERY
            | CTX_RESET
            | MEM_FREE
            | MODULE_UNLOAD
            | STREAM_DESTROY
            | EVENT_DESTROY
            | GRAPH_DESTROY
            | GRAPH_EXEC_DESTROY
            | BLAS_DESTROY
    )
}

/// A ticket that posts the command's completion on `q`.
fn ticket(q: &Arc<Queue>, cid: u32, opcode: u16) -> Ticket {
    let q = q.clone();
    Ticket::new(move |o: Outcome| {
        Inner::post(
            &q,
            Completion {
                cid,
                opcode,
                status: o.status,
                result0: o.result0,
                result1: o.result1,
                flags: 0,
            },
        )
    })
}

fn payload_bytes(pd: &Pd, req: &Request, inline: Vec<u8>) -> Result<Vec<u8>, Status> {
    match req.payload {
        Payload::None => Ok(Vec::new()),
        Payload::Inline { .. } => Ok(inline),
        Payload::Window {
            window,
            offset,
            len,
        } => {
            if u64::from(len) > MAX_WINDOW_PAYLOAD {
                return Err(Status::BAD_PAYLOAD);
            }
            let r = pd.resolve(window, offset, u64::from(len), false)?;
            let mut v = Vec::new();
            v.try_reserve_exact(len as usize)
                .map_err(|_| Status::OUT_OF_MEMORY)?;
            v.resize(len as usize, 0);
            r.read(0, &mut v)?;
            Ok(v)
        }
    }
}

fn write_out(pd: &Pd, out: &OutRef, bytes: &[u8]) -> Result<u64, (Status, u64)> {
    if (out.len as usize) < bytes.len() {
        return Err((Status::BUFFER_TOO_SMALL, bytes.len() as u64));
    }
    let r = pd
        .resolve(out.window, out.offset, bytes.len() as u64, true)
        .map_err(|s| (s, 0))?;
    r.write(0, bytes).map_err(|s| (s, 0))?;
    Ok(bytes.len() as u64)
}

/// Executes one decoded I/O command of `pd` from queue `q`.
pub(super) fn execute(engine: &Inner, q: &Arc<Queue>, pd: &Arc<Pd>, req: Request, inline: Vec<u8>) {
    let op = req.command.opcode();
    let info = op.info();
    let asynchronous = info.completion == Kind::Async;
    // Set once work is queued on a stream: its completion (if NOTIFY) comes from the
    // executor, so nothing is posted here on success.
    let queued = std::cell::Cell::new(false);
    let done = |status: Status, r0: u64, r1: u64| {
        let post = if status.is_ok() {
            !asynchronous || (req.notify && !queued.get())
        } else {
            true
        };
        if post {
            let flags = if asynchronous && !req.notify && !status.is_ok() {
                cqe_flags::ASYNC_ERROR
            } else {
                0
            };
            Inner::post(
                q,
                Completion {
                    cid: req.cid,
                    opcode: op as u16,
                    status,
                    result0: r0,
                    result1: r1,
                    flags,
                },
            );
        }
    };
    if let Some(e) = pd.ctx().sticky_error() {
        if !allowed_when_sticky(op) {
            if !asynchronous || req.notify {
                Inner::post(q, Completion::status(req.cid, op as u16, e));
            }
            return;
        }
    }
    let payload = match payload_bytes(pd, &req, inline) {
        Ok(p) => p,
        Err(s) => return done(s, 0, 0),
    };
    let structured = match decode_structured(&req.command, &payload) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("PD {}: {} cid {}: {e}", pd.id, info.name, req.cid);
            return done(e.status(), 0, 0);
        }
    };
    let submit = |op_: Op| -> Result<(), Status> {
        let notify = req.notify.then(|| ticket(q, req.cid, op as u16));
        match pd.ctx().submit(req.stream, op_, notify) {
            Ok(()) => {
                queued.set(true);
                Ok(())
            }
            Err(refused) => {
                if let Some(t) = refused.notify {
                    t.disarm();
                }
                Err(refused.status)
            }
        }
    };
    let result: Result<(u64, u64), (Status, u64)> = match (req.command, structured) {
        (Command::NOP(_), _) => Ok((0, 0)),
        (Command::DEVICE_INFO(a), _) => {
            let info: DeviceInfo = engine.env.executor.device_info();
            write_out(pd, &a.out, bytemuck::bytes_of(&info)).map(|n| (n, 0))
        }
        (Command::MEM_GET_INFO(_), _) => {
            let (free, total) = pd.ctx().mem_info();
            Ok((free, total))
        }
        (Command::MGMT_QUERY(a), _) => {
            let (free, total) = pd.ctx().mem_info();
            let mut m: MgmtInfo = engine.env.executor.sensors();
            m.mem_total = total;
            m.mem_free = free;
            m.mem_used = total - free;
            m.processes = lock(&engine.pds).len() as u32;
            write_out(pd, &a.out, bytemuck::bytes_of(&m)).map(|n| (n, 0))
        }
        (Command::CTX_SYNCHRONIZE(_), _) => {
            pd.ctx().synchronize(ticket(q, req.cid, op as u16));
            return;
        }
        (Command::CTX_RESET(_), _) => {
            pd.ctx().reset();
            Ok((0, 0))
        }
        (Command::CTX_GET_LIMIT(a), _) => pd
            .ctx()
            .get_limit(a.limit)
            .map(|v| (v, 0))
            .map_err(|s| (s, 0)),
        (Command::CTX_SET_LIMIT(a), _) => pd
            .ctx()
            .set_limit(a.limit, a.value)
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::MEM_ALLOC(a), _) => pd
            .ctx()
            .mem_alloc(a.size)
            .map(|p| (p, 0))
            .map_err(|s| (s, 0)),
        (Command::MEM_FREE(a), _) => {
            pd.ctx().mem_free(a.handle, ticket(q, req.cid, op as u16));
            return;
        }
        (Command::MEM_GET_RANGE(a), _) => pd.ctx().mem_range(a.handle).map_err(|s| (s, 0)),
        (Command::MEMCPY_HTOD(a), s) => {
            let src = match s {
                Structured::Data(d) if !d.is_empty() => Ok(HostSource::Inline(d.to_vec())),
                _ => pd
                    .resolve(a.src_window, a.src_offset, a.len, false)
                    .map(HostSource::Range),
            };
            src.and_then(|src| submit(Op::CopyHtoD { dst: a.dst, src }))
                .map(|_| (0, 0))
                .map_err(|s| (s, 0))
        }
        (Command::MEMCPY_DTOH(a), _) => pd
            .resolve(a.dst_window, a.dst_offset, a.len, true)
            .and_then(|dst| submit(Op::CopyDtoH { src: a.src, dst }))
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::MEMCPY_DTOD(a), _) => submit(Op::CopyDtoD {
            dst: a.dst,
            src: a.src,
            len: a.len,
        })
        .map(|_| (0, 0))
        .map_err(|s| (s, 0)),
        (Command::MEMCPY_2D(_), Structured::Copy2D(c)) => {
            let side = |host: bool,
                        window: u32,
                        at: u64,
                        pitch: u64,
                        write: bool|
             -> Result<Side2D, Status> {
                if !host {
                    return Ok(Side2D::Device(at));
                }
                let span = (c.height - 1) * pitch + c.width;
                pd.resolve(window, at, span, write).map(Side2D::Host)
            };
            let (src_host, dst_host) = (c.kind == copy_kind::HTOD, c.kind == copy_kind::DTOH);
            side(src_host, c.src_window, c.src, c.src_pitch, false)
                .and_then(|src| Ok((src, side(dst_host, c.dst_window, c.dst, c.dst_pitch, true)?)))
                .and_then(|(src, dst)| {
                    let op_ = Op::Copy2D {
                        src,
                        src_pitch: c.src_pitch,
                        dst,
                        dst_pitch: c.dst_pitch,
                        width: c.width,
                        height: c.height,
                    };
                    submit(op_)
                })
                .map(|_| (0, 0))
                .map_err(|s| (s, 0))
        }
        (Command::MEMSET(a), _) => {
            let width = a.count;
            let op_ = Op::Memset {
                dst: a.dst,
                pitch: 0,
                width,
                height: 1,
                value: a.value,
                elem_size: u32::from(a.elem_size),
            };
            match memset_extent(a.dst, 0, width, 1, a.elem_size.into()) {
                None => Err((Status::INVALID_VALUE, 0)),
                Some(_) => submit(op_).map(|_| (0, 0)).map_err(|s| (s, 0)),
            }
        }
        (Command::MEMSET_2D(_), Structured::Memset2D(m)) => {
            let op_ = Op::Memset {
                dst: m.dst,
                pitch: m.pitch,
                width: m.width,
                height: m.height,
                value: m.value,
                elem_size: m.elem_size,
            };
            match memset_extent(m.dst, m.pitch, m.width, m.height, m.elem_size) {
                None => Err((Status::INVALID_VALUE, 0)),
                Some(_) => submit(op_).map(|_| (0, 0)).map_err(|s| (s, 0)),
            }
        }
        (Command::MODULE_LOAD(a), Structured::Module(header, image)) => {
            let image = if a.flags & module_flags::BY_HASH != 0 {
                lock(&engine.modules)
                    .get(pd.cache_domain, &header.sha256)
                    .ok_or((Status::NOT_FOUND, 0))
            } else if cache::sha256(image) != header.sha256 {
                log::warn!("PD {}: MODULE_LOAD image does not match its SHA-256", pd.id);
                Err((Status::HASH_MISMATCH, 0))
            } else {
                lock(&engine.modules).insert(pd.cache_domain, header.sha256, image);
                Ok(Arc::new(image.to_vec()))
            };
            let loaded = image.and_then(|img| {
                engine.env.executor.prepare_module(&img, &header.sha256);
                pd.ctx()
                    .module_load(&img, &header.sha256)
                    .map_err(|s| (s, 0))
            });
            match loaded {
                Ok((module, funcs)) => {
                    let table = encode_module_info(module, &funcs);
                    match write_out(pd, &a.out, &table) {
                        Ok(n) => Ok((module, n)),
                        Err(e) => {
                            pd.ctx().module_unload(module, Ticket::new(|_| {}));
                            Err(e)
                        }
                    }
                }
                Err(e) => Err(e),
            }
        }
        (Command::MODULE_UNLOAD(a), _) => {
            pd.ctx()
                .module_unload(a.handle, ticket(q, req.cid, op as u16));
            return;
        }
        (Command::MODULE_GET_GLOBAL(a), Structured::Symbol(name)) => {
            pd.ctx().module_global(a.handle, name).map_err(|s| (s, 0))
        }
        (Command::FUNC_GET_ATTRIBUTE(a), _) => pd
            .ctx()
            .func_get_attr(a.func, a.attr)
            .map(|v| (i64::from(v) as u64, 0))
            .map_err(|s| (s, 0)),
        (Command::FUNC_SET_ATTRIBUTE(a), _) => pd
            .ctx()
            .func_set_attr(a.func, a.attr, a.value)
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::LAUNCH(a), Structured::Launch(attrs, params)) => {
            let op_ = Op::Launch {
                func: a.func,
                grid: [a.grid_x, u32::from(a.grid_y), u32::from(a.grid_z)],
                block: [
                    u32::from(a.block_x),
                    u32::from(a.block_y),
                    u32::from(a.block_z),
                ],
                shared_mem: a.shared_mem,
                attrs,
                params: params.to_vec(),
            };
            submit(op_).map(|_| (0, 0)).map_err(|s| (s, 0))
        }
        (Command::STREAM_CREATE(a), _) => pd
            .ctx()
            .stream_create(a.flags, a.priority)
            .map(|h| (h, 0))
            .map_err(|s| (s, 0)),
        (Command::STREAM_DESTROY(_), _) => pd
            .ctx()
            .stream_destroy(req.stream)
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::STREAM_SYNCHRONIZE(_), _) => {
            pd.ctx()
                .stream_sync(req.stream, ticket(q, req.cid, op as u16));
            return;
        }
        (Command::STREAM_QUERY(_), _) => Err((pd.ctx().stream_query(req.stream), 0)),
        (Command::STREAM_WAIT_EVENT(a), _) => submit(Op::WaitEvent { event: a.event })
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::STREAM_BEGIN_CAPTURE(a), _) => pd
            .ctx()
            .begin_capture(req.stream, a.mode)
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::STREAM_END_CAPTURE(_), _) => pd
            .ctx()
            .end_capture(req.stream)
            .map(|g| (g, 0))
            .map_err(|s| (s, 0)),
        (Command::HOST_FUNC(a), _) => {
            lock(&pd.host_funcs).insert(a.handle, (q.qid, req.cid));
            submit(Op::HostFunc { cookie: a.handle })
                .map(|_| (0, 0))
                .map_err(|s| {
                    // Refused: nothing will ever ask for this callback.
                    lock(&pd.host_funcs).remove(&a.handle);
                    (s, 0)
                })
        }
        (Command::HOST_FUNC_DONE(a), _) => {
            pd.ctx().host_func_done(a.handle);
            Ok((0, 0))
        }
        (Command::EVENT_CREATE(a), _) => pd
            .ctx()
            .event_create(a.flags)
            .map(|h| (h, 0))
            .map_err(|s| (s, 0)),
        (Command::EVENT_DESTROY(a), _) => pd
            .ctx()
            .event_destroy(a.handle)
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::EVENT_RECORD(a), _) => submit(Op::EventRecord { event: a.handle })
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::EVENT_SYNCHRONIZE(a), _) => {
            pd.ctx().event_sync(a.handle, ticket(q, req.cid, op as u16));
            return;
        }
        (Command::EVENT_QUERY(a), _) => Err((pd.ctx().event_query(a.handle), 0)),
        (Command::EVENT_ELAPSED(a), _) => pd
            .ctx()
            .event_elapsed(a.start, a.end)
            .map(|ms| (u64::from(ms.to_bits()), 0))
            .map_err(|s| (s, 0)),
        (Command::GRAPH_INSTANTIATE(a), _) => pd
            .ctx()
            .graph_instantiate(a.graph, a.flags)
            .map(|h| (h, 0))
            .map_err(|s| (s, 0)),
        (Command::GRAPH_EXEC_UPDATE(a), _) => pd
            .ctx()
            .graph_exec_update(a.exec, a.graph)
            .map(|r| (r, 0))
            .map_err(|s| (s, 0)),
        (Command::GRAPH_LAUNCH(a), _) => submit(Op::GraphLaunch { exec: a.handle })
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::GRAPH_DESTROY(a), _) => pd
            .ctx()
            .graph_destroy(a.handle)
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::GRAPH_EXEC_DESTROY(a), _) => pd
            .ctx()
            .graph_exec_destroy(a.handle)
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::BLAS_CREATE(_), _) => pd.ctx().blas_create().map(|h| (h, 0)).map_err(|s| (s, 0)),
        (Command::BLAS_DESTROY(a), _) => pd
            .ctx()
            .blas_destroy(a.handle)
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::BLAS_GEMM(_), Structured::Gemm(g)) => {
            submit(Op::Gemm(g)).map(|_| (0, 0)).map_err(|s| (s, 0))
        }
        (Command::BLAS_GEMM_BATCHED(_), Structured::Gemm(g)) => submit(Op::GemmBatched(g))
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::BLAS_TRSM_BATCHED(_), Structured::Trsm(t)) => submit(Op::TrsmBatched(t))
            .map(|_| (0, 0))
            .map_err(|s| (s, 0)),
        (Command::BLASLT_MATMUL(_), Structured::LtMatmul(l)) => {
            submit(Op::LtMatmul(l)).map(|_| (0, 0)).map_err(|s| (s, 0))
        }
        (c, _) => {
            log::error!(
                "PD {}: {:?} reached the I/O path with a payload that does not match it",
                pd.id,
                c.opcode()
            );
            Err((Status::BAD_PAYLOAD, 0))
        }
    };
    match result {
        Ok((r0, r1)) => done(Status::SUCCESS, r0, r1),
        Err((s, r1)) => done(s, 0, r1),
    }
}

/// The end of a memset of `height` rows of `width` elements of `elem_size` bytes, `pitch`
/// apart, from `dst`; None when it does not fit in 64 bits (it names no memory).
fn memset_extent(dst: u64, pitch: u64, width: u64, height: u64, elem_size: u32) -> Option<u64> {
    let row = width.checked_mul(u64::from(elem_size))?;
    let last = height.checked_sub(1)?.checked_mul(pitch)?;
    dst.checked_add(last)?.checked_add(row)
}
