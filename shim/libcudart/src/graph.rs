//! Stream capture and graphs of the runtime API, lowered onto the driver API (the device
//! records and replays; see libcuda's `graph` module), one line each
//! (`vgpu_shim_abi::exports!`).

use crate::cu;
use crate::mem::drv;
use std::ffi::c_void;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::Out;
use vgpu_shim_abi::status::CudartStatus;

exports! {
    library "libcudart.so.12", status CudartStatus, on_error crate::ffi::record;
    /// `mode` is a `cudaStreamCaptureMode` (0 global, 1 thread-local, 2 relaxed; the
    /// driver's numbers).
    implemented fn cudaStreamBeginCapture(stream: usize, mode: u32) => drv(|d| cu!(d, stream_begin_capture(stream, mode)));
    implemented fn cudaStreamEndCapture(stream: usize, graph: Out<usize>) => drv(|d| cu!(d, stream_end_capture(stream, graph.as_ptr())));
    /// `cudaStreamCaptureStatus` (0 none, 1 active).
    implemented fn cudaStreamIsCapturing(stream: usize, status: Out<u32>) => drv(|d| cu!(d, stream_is_capturing(stream, status.as_ptr())));
    /// The CUDA 12 form with flags.
    implemented fn cudaGraphInstantiate(exec: Out<usize>, graph: usize, flags: u64) => drv(|d| cu!(d, graph_instantiate(exec.as_ptr(), graph, flags)));
    implemented fn cudaGraphInstantiateWithFlags(exec: Out<usize>, graph: usize, flags: u64) => drv(|d| cu!(d, graph_instantiate(exec.as_ptr(), graph, flags)));
    implemented fn cudaGraphLaunch(exec: usize, stream: usize) => drv(|d| cu!(d, graph_launch(exec, stream)));
    implemented fn cudaGraphDestroy(graph: usize) => drv(|d| cu!(d, graph_destroy(graph)));
    implemented fn cudaGraphExecDestroy(exec: usize) => drv(|d| cu!(d, graph_exec_destroy(exec)));
    /// CUDA 12's `cudaGraphExecUpdateResultInfo` (the driver's layout).
    implemented fn cudaGraphExecUpdate(exec: usize, graph: usize, info: Out<c_void>) => drv(|d| cu!(d, graph_exec_update(exec, graph, info.as_ptr())));
}
