//! Stream capture and graphs of the runtime API, lowered onto the driver API (the device
//! records and replays; see libcuda's `graph` module).

use crate::cu;
use crate::ffi::CudaError;
use crate::mem::call_driver;
use std::ffi::c_void;

/// `cudaStreamBeginCapture`: `mode` is a `cudaStreamCaptureMode` (0 global, 1 thread-local,
/// 2 relaxed; the driver's numbers).
#[no_mangle]
pub extern "C" fn cudaStreamBeginCapture(stream: usize, mode: u32) -> CudaError {
    call_driver(|d| cu!(d, stream_begin_capture(stream, mode)))
}

/// `cudaStreamEndCapture`.
#[no_mangle]
pub extern "C" fn cudaStreamEndCapture(stream: usize, graph: *mut usize) -> CudaError {
    call_driver(|d| cu!(d, stream_end_capture(stream, graph)))
}

/// `cudaStreamIsCapturing`: `cudaStreamCaptureStatus` (0 none, 1 active).
#[no_mangle]
pub extern "C" fn cudaStreamIsCapturing(stream: usize, status: *mut u32) -> CudaError {
    call_driver(|d| cu!(d, stream_is_capturing(stream, status)))
}

/// `cudaGraphInstantiate` (the CUDA 12 form with flags).
#[no_mangle]
pub extern "C" fn cudaGraphInstantiate(exec: *mut usize, graph: usize, flags: u64) -> CudaError {
    call_driver(|d| cu!(d, graph_instantiate(exec, graph, flags)))
}

/// `cudaGraphInstantiateWithFlags`.
#[no_mangle]
pub extern "C" fn cudaGraphInstantiateWithFlags(
    exec: *mut usize,
    graph: usize,
    flags: u64,
) -> CudaError {
    cudaGraphInstantiate(exec, graph, flags)
}

/// `cudaGraphLaunch`.
#[no_mangle]
pub extern "C" fn cudaGraphLaunch(exec: usize, stream: usize) -> CudaError {
    call_driver(|d| cu!(d, graph_launch(exec, stream)))
}

/// `cudaGraphDestroy`.
#[no_mangle]
pub extern "C" fn cudaGraphDestroy(graph: usize) -> CudaError {
    call_driver(|d| cu!(d, graph_destroy(graph)))
}

/// `cudaGraphExecDestroy`.
#[no_mangle]
pub extern "C" fn cudaGraphExecDestroy(exec: usize) -> CudaError {
    call_driver(|d| cu!(d, graph_exec_destroy(exec)))
}

/// `cudaGraphExecUpdate` (CUDA 12: `cudaGraphExecUpdateResultInfo`, the driver's
/// `CUgraphExecUpdateResultInfo` layout).
#[no_mangle]
pub extern "C" fn cudaGraphExecUpdate(exec: usize, graph: usize, info: *mut c_void) -> CudaError {
    call_driver(|d| cu!(d, graph_exec_update(exec, graph, info)))
}

/// Exported capture and graph functions (all implemented).
pub const IMPLEMENTED: &[&str] = &[
    "cudaStreamBeginCapture",
    "cudaStreamEndCapture",
    "cudaStreamIsCapturing",
    "cudaGraphInstantiate",
    "cudaGraphInstantiateWithFlags",
    "cudaGraphLaunch",
    "cudaGraphDestroy",
    "cudaGraphExecDestroy",
    "cudaGraphExecUpdate",
];
