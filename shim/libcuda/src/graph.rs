//! Stream capture and graphs of the driver API. Capture happens on the device (spec §7.10,
//! §7.11): while a stream captures, the commands posted to it are recorded into a graph
//! there. This module keeps only which of the process's streams are capturing, so that
//! `cuStreamIsCapturing` answers locally and staged (pageable) copies, whose staging
//! buffer would be reused long before a graph replays them, are refused on them.

use crate::handles::{self, Kind};
use crate::mem;
use rustc_hash::FxHashSet as HashSet;
use std::sync::Mutex;
use vgpu_proto::cmd::*;
use vgpu_proto::{Command, Status};

use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::Out;
use vgpu_shim_abi::status::CuStatus;

type R = Result<(), CuStatus>;
/// `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`.
pub const CAPTURE_UNSUPPORTED: u32 = 900;

/// Device streams of this process that are capturing.
static CAPTURING: Mutex<Option<HashSet<u64>>> = Mutex::new(None);

fn capturing() -> std::sync::MutexGuard<'static, Option<HashSet<u64>>> {
    CAPTURING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Forgets every capture (after a context reset destroyed the streams).
pub fn forget_all() {
    *capturing() = None;
}

/// True when device stream `stream` is capturing.
pub fn is_capturing(stream: u64) -> bool {
    capturing().as_ref().is_some_and(|s| s.contains(&stream))
}

fn handle(h: u64) -> HandleArgs {
    HandleArgs {
        handle: h,
        ..bytemuck::Zeroable::zeroed()
    }
}

/// `cuStreamBeginCapture_v2`: `mode` is a `CUstreamCaptureMode` (0 global, 1 thread-local,
/// 2 relaxed).
fn begin_capture(stream: usize, mode: u32) -> R {
    if mode > 2 {
        return Err(CuStatus::INVALID_VALUE);
    }
    let s = mem::stream(stream);
    let args = CaptureArgs {
        mode,
        ..bytemuck::Zeroable::zeroed()
    };
    mem::call(Command::STREAM_BEGIN_CAPTURE(args), s)?;
    capturing().get_or_insert_with(HashSet::default).insert(s);
    Ok(())
}

/// `cuStreamEndCapture`: the captured graph (NULL when the capture failed).
fn end_capture(stream: usize, graph: Out<usize>) -> R {
    if graph.is_null() {
        return Err(CuStatus::INVALID_VALUE);
    }
    let s = mem::stream(stream);
    let r = mem::call(Command::STREAM_END_CAPTURE(bytemuck::Zeroable::zeroed()), s);
    // The capture is over whatever the outcome (an invalidated capture ends too).
    if let Some(set) = capturing().as_mut() {
        set.remove(&s);
    }
    match r {
        Ok(c) => Ok(graph.write(c.result0 as usize)?),
        Err(e) => {
            let _ = graph.write(0);
            Err(CuStatus(e))
        }
    }
}

fn instantiate(exec: Out<usize>, graph: usize, flags: u64) -> R {
    if exec.is_null() || graph == 0 {
        return Err(CuStatus::INVALID_VALUE);
    }
    let args = GraphInstantiateArgs {
        graph: graph as u64,
        flags,
        rsv: [0; 2],
    };
    let c = mem::call(Command::GRAPH_INSTANTIATE(args), 0)?;
    handles::created(Kind::GraphExec, c.result0);
    log::debug!("vgpu: graph {graph:#x} instantiated as {:#x}", c.result0);
    Ok(exec.write(c.result0 as usize)?)
}

/// `cuGraphLaunch`: replays the executable graph on `stream` (no round trip).
fn launch(exec: usize, stream: usize) -> R {
    if exec == 0 {
        return Err(CuStatus::INVALID_VALUE);
    }
    handles::check(Kind::GraphExec, exec as u64)?;
    log::debug!("vgpu: graph launch {exec:#x}");
    Ok(mem::post(
        Command::GRAPH_LAUNCH(handle(exec as u64)),
        mem::stream(stream),
    )?)
}

fn exec_destroy(exec: usize) -> R {
    mem::call(Command::GRAPH_EXEC_DESTROY(handle(exec as u64)), 0)?;
    handles::destroyed(Kind::GraphExec, exec as u64);
    Ok(())
}

/// `CUgraphExecUpdateResultInfo`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UpdateResultInfo {
    result: u32,
    error_node: usize,
    error_from_node: usize,
}

/// `cuGraphExecUpdate_v2`: updates `exec`'s node parameters from `graph`;
/// `CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE` with `info.result` = the reason when the
/// topology differs.
fn exec_update(exec: usize, graph: usize, info: Out<UpdateResultInfo>) -> R {
    if exec == 0 || graph == 0 {
        return Err(CuStatus::INVALID_VALUE);
    }
    let args = GraphExecUpdateArgs {
        exec: exec as u64,
        graph: graph as u64,
        rsv: [0; 2],
    };
    let (r, reason) = match mem::call(Command::GRAPH_EXEC_UPDATE(args), 0) {
        Ok(c) => (Ok(()), c.result0 as u32),
        // The device fails an update only when the topology differs (spec §7.11):
        // CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED.
        Err(e) if e == Status::GRAPH_EXEC_UPDATE_FAILURE.0 => (Err(CuStatus(e)), 2),
        // CU_GRAPH_EXEC_UPDATE_ERROR.
        Err(e) => (Err(CuStatus(e)), 1),
    };
    if !info.is_null() {
        let _ = info.write(UpdateResultInfo {
            result: reason,
            error_node: 0,
            error_from_node: 0,
        });
    }
    r
}

exports! {
    library "libcuda.so.1", status CuStatus;
    implemented fn cuStreamBeginCapture_v2(stream: usize, mode: u32) => begin_capture(stream, mode);
    /// The CUDA 10.0 name.
    implemented fn cuStreamBeginCapture(stream: usize, mode: u32) => begin_capture(stream, mode);
    implemented fn cuStreamEndCapture(stream: usize, graph: Out<usize>) => end_capture(stream, graph);
    /// `CU_STREAM_CAPTURE_STATUS_NONE` (0) or `_ACTIVE` (1).
    implemented fn cuStreamIsCapturing(stream: usize, status: Out<u32>) => Ok(status.write(u32::from(is_capturing(mem::stream(stream))))?);
    implemented fn cuGraphInstantiateWithFlags(exec: Out<usize>, graph: usize, flags: u64) => instantiate(exec, graph, flags);
    /// The CUDA 11 form with an error node and a log buffer; nothing is written to them.
    implemented fn cuGraphInstantiate_v2(exec: Out<usize>, graph: usize, _error_node: Out<usize>, _log: Out<u8>, _log_size: usize) => instantiate(exec, graph, 0);
    implemented fn cuGraphLaunch(exec: usize, stream: usize) => launch(exec, stream);
    implemented fn cuGraphDestroy(graph: usize) => Ok(mem::call(Command::GRAPH_DESTROY(handle(graph as u64)), 0).map(|_| ())?);
    implemented fn cuGraphExecDestroy(exec: usize) => exec_destroy(exec);
    implemented fn cuGraphExecUpdate_v2(exec: usize, graph: usize, info: Out<UpdateResultInfo>) => exec_update(exec, graph, info);
}
