//! Stream capture and graphs of the driver API. Capture happens on the device (spec §7.10,
//! §7.11): while a stream captures, the commands posted to it are recorded into a graph
//! there. This module keeps only which of the process's streams are capturing, so that
//! `cuStreamIsCapturing` answers locally and staged (pageable) copies, whose staging
//! buffer would be reused long before a graph replays them, are refused on them.

use crate::ffi::put;
use crate::handles::{self, Kind};
use crate::mem;
use rustc_hash::FxHashSet as HashSet;
use std::sync::Mutex;
use vgpu_proto::cmd::*;
use vgpu_proto::{Command, Status};

type CuResult = u32;
const SUCCESS: CuResult = 0;
const INVALID_VALUE: CuResult = 1;
/// `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`.
pub const CAPTURE_UNSUPPORTED: CuResult = 900;

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

fn result(r: Result<(), CuResult>) -> CuResult {
    r.err().unwrap_or(SUCCESS)
}

/// `cuStreamBeginCapture_v2`: `mode` is a `CUstreamCaptureMode` (0 global, 1 thread-local,
/// 2 relaxed).
#[no_mangle]
pub extern "C" fn cuStreamBeginCapture_v2(stream: usize, mode: u32) -> CuResult {
    let s = mem::stream(stream);
    let args = CaptureArgs {
        mode,
        ..bytemuck::Zeroable::zeroed()
    };
    if mode > 2 {
        return INVALID_VALUE;
    }
    match mem::call(Command::STREAM_BEGIN_CAPTURE(args), s) {
        Ok(_) => {
            capturing().get_or_insert_with(HashSet::default).insert(s);
            SUCCESS
        }
        Err(e) => e,
    }
}

/// `cuStreamBeginCapture` (the CUDA 10.0 name; global mode).
#[no_mangle]
pub extern "C" fn cuStreamBeginCapture(stream: usize, mode: u32) -> CuResult {
    cuStreamBeginCapture_v2(stream, mode)
}

/// `cuStreamEndCapture`: the captured graph.
#[no_mangle]
pub extern "C" fn cuStreamEndCapture(stream: usize, graph: *mut usize) -> CuResult {
    if graph.is_null() {
        return INVALID_VALUE;
    }
    let s = mem::stream(stream);
    let r = mem::call(Command::STREAM_END_CAPTURE(bytemuck::Zeroable::zeroed()), s);
    // The capture is over whatever the outcome (an invalidated capture ends too).
    if let Some(set) = capturing().as_mut() {
        set.remove(&s);
    }
    match r {
        Ok(c) => put(graph, c.result0 as usize),
        Err(e) => {
            let _ = put(graph, 0);
            e
        }
    }
}

/// `cuStreamIsCapturing`: `CU_STREAM_CAPTURE_STATUS_NONE` (0) or `_ACTIVE` (1).
#[no_mangle]
pub extern "C" fn cuStreamIsCapturing(stream: usize, status: *mut u32) -> CuResult {
    put(status, u32::from(is_capturing(mem::stream(stream))))
}

fn instantiate(exec: *mut usize, graph: usize, flags: u64) -> CuResult {
    if exec.is_null() || graph == 0 {
        return INVALID_VALUE;
    }
    let args = GraphInstantiateArgs {
        graph: graph as u64,
        flags,
        rsv: [0; 2],
    };
    match mem::call(Command::GRAPH_INSTANTIATE(args), 0) {
        Ok(c) => {
            handles::created(Kind::GraphExec, c.result0);
            put(exec, c.result0 as usize)
        }
        Err(e) => e,
    }
}

/// `cuGraphInstantiateWithFlags`.
#[no_mangle]
pub extern "C" fn cuGraphInstantiateWithFlags(
    exec: *mut usize,
    graph: usize,
    flags: u64,
) -> CuResult {
    instantiate(exec, graph, flags)
}

/// `cuGraphInstantiate_v2` (the CUDA 11 form with an error node and a log buffer; nothing
/// is written to them on success).
#[no_mangle]
pub extern "C" fn cuGraphInstantiate_v2(
    exec: *mut usize,
    graph: usize,
    _error_node: *mut usize,
    _log: *mut std::ffi::c_char,
    _log_size: usize,
) -> CuResult {
    instantiate(exec, graph, 0)
}

/// `cuGraphLaunch`: replays the executable graph on `stream` (no round trip).
#[no_mangle]
pub extern "C" fn cuGraphLaunch(exec: usize, stream: usize) -> CuResult {
    if exec == 0 {
        return INVALID_VALUE;
    }
    if let Err(e) = handles::check(Kind::GraphExec, exec as u64) {
        return e;
    }
    result(mem::post(
        Command::GRAPH_LAUNCH(handle(exec as u64)),
        mem::stream(stream),
    ))
}

/// `cuGraphDestroy`.
#[no_mangle]
pub extern "C" fn cuGraphDestroy(graph: usize) -> CuResult {
    result(mem::call(Command::GRAPH_DESTROY(handle(graph as u64)), 0).map(|_| ()))
}

/// `cuGraphExecDestroy`.
#[no_mangle]
pub extern "C" fn cuGraphExecDestroy(exec: usize) -> CuResult {
    let r = mem::call(Command::GRAPH_EXEC_DESTROY(handle(exec as u64)), 0);
    if r.is_ok() {
        handles::destroyed(Kind::GraphExec, exec as u64);
    }
    result(r.map(|_| ()))
}

/// `CUgraphExecUpdateResultInfo`.
#[repr(C)]
pub struct UpdateResultInfo {
    result: u32,
    error_node: usize,
    error_from_node: usize,
}

/// `cuGraphExecUpdate_v2`: updates `exec`'s node parameters from `graph`;
/// `CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE` with `info.result` = the reason when the
/// topology differs.
#[no_mangle]
pub extern "C" fn cuGraphExecUpdate_v2(
    exec: usize,
    graph: usize,
    info: *mut UpdateResultInfo,
) -> CuResult {
    if exec == 0 || graph == 0 {
        return INVALID_VALUE;
    }
    let args = GraphExecUpdateArgs {
        exec: exec as u64,
        graph: graph as u64,
        rsv: [0; 2],
    };
    let (code, reason) = match mem::call(Command::GRAPH_EXEC_UPDATE(args), 0) {
        Ok(c) => (SUCCESS, c.result0 as u32),
        // The device fails an update only when the topology differs (spec §7.11):
        // CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED.
        Err(e) if e == Status::GRAPH_EXEC_UPDATE_FAILURE.0 => (e, 2),
        // CU_GRAPH_EXEC_UPDATE_ERROR.
        Err(e) => (e, 1),
    };
    if !info.is_null() {
        let _ = put(
            info,
            UpdateResultInfo {
                result: reason,
                error_node: 0,
                error_from_node: 0,
            },
        );
    }
    code
}

/// Exported capture and graph functions (all implemented).
pub const IMPLEMENTED_GRAPH_FUNCTIONS: &[&str] = &[
    "cuStreamBeginCapture",
    "cuStreamBeginCapture_v2",
    "cuStreamEndCapture",
    "cuStreamIsCapturing",
    "cuGraphInstantiateWithFlags",
    "cuGraphInstantiate_v2",
    "cuGraphLaunch",
    "cuGraphDestroy",
    "cuGraphExecDestroy",
    "cuGraphExecUpdate_v2",
];
