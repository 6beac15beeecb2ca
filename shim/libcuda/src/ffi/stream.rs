//! Streams, events and synchronisation: `cuCtxSynchronize`, `cuStreamCreate`,
//! `cuStreamDestroy_v2`, `cuStreamSynchronize`, `cuStreamQuery`, `cuStreamWaitEvent`,
//! `cuEventCreate`, `cuEventDestroy_v2`, `cuEventRecord`, `cuEventSynchronize`,
//! `cuEventQuery` and `cuEventElapsedTime` (listed in `IMPLEMENTED_MEMORY_FUNCTIONS`).

use super::{put, status_of, CuResult, INVALID_VALUE};
use crate::handles::{self, Kind};
use crate::mem;
use vgpu_proto::cmd::*;
use vgpu_proto::Command;

/// `cuCtxSynchronize`.
#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> CuResult {
    status_of(mem::call(Command::CTX_SYNCHRONIZE(bytemuck::Zeroable::zeroed()), 0).map(|_| ()))
}

/// `cuStreamCreate`.
#[no_mangle]
pub extern "C" fn cuStreamCreate(stream: *mut usize, flags: u32) -> CuResult {
    let flags = flags & stream_flags::NON_BLOCKING;
    let args = StreamCreateArgs {
        flags,
        ..bytemuck::Zeroable::zeroed()
    };
    match mem::call(Command::STREAM_CREATE(args), 0) {
        Ok(c) => {
            handles::created_with(Kind::Stream, c.result0, flags);
            put(stream, c.result0 as usize)
        }
        Err(e) => e,
    }
}

/// `cuStreamDestroy_v2`.
#[no_mangle]
pub extern "C" fn cuStreamDestroy_v2(stream: usize) -> CuResult {
    if stream <= 2 {
        return INVALID_VALUE;
    }
    let r = mem::call(
        Command::STREAM_DESTROY(bytemuck::Zeroable::zeroed()),
        stream as u64,
    );
    if r.is_ok() {
        handles::destroyed(Kind::Stream, stream as u64);
    }
    status_of(r.map(|_| ()))
}

/// `cuStreamSynchronize`.
#[no_mangle]
pub extern "C" fn cuStreamSynchronize(stream: usize) -> CuResult {
    status_of(
        mem::call(
            Command::STREAM_SYNCHRONIZE(bytemuck::Zeroable::zeroed()),
            mem::stream(stream),
        )
        .map(|_| ()),
    )
}

/// `cuStreamQuery`.
#[no_mangle]
pub extern "C" fn cuStreamQuery(stream: usize) -> CuResult {
    status_of(
        mem::call(
            Command::STREAM_QUERY(bytemuck::Zeroable::zeroed()),
            mem::stream(stream),
        )
        .map(|_| ()),
    )
}

/// `cuStreamWaitEvent`.
#[no_mangle]
pub extern "C" fn cuStreamWaitEvent(stream: usize, event: usize, flags: u32) -> CuResult {
    try_cu!(handles::check(Kind::Event, event as u64));
    let args = StreamWaitEventArgs {
        event: event as u64,
        flags,
        ..bytemuck::Zeroable::zeroed()
    };
    status_of(mem::post(
        Command::STREAM_WAIT_EVENT(args),
        mem::stream(stream),
    ))
}

/// `cuEventCreate`.
#[no_mangle]
pub extern "C" fn cuEventCreate(event: *mut usize, flags: u32) -> CuResult {
    match mem::call(
        Command::EVENT_CREATE(EventCreateArgs {
            flags,
            ..bytemuck::Zeroable::zeroed()
        }),
        0,
    ) {
        Ok(c) => {
            handles::created(Kind::Event, c.result0);
            put(event, c.result0 as usize)
        }
        Err(e) => e,
    }
}

fn event_call(f: fn(HandleArgs) -> Command, event: usize) -> Result<vgpu_proto::Cqe, CuResult> {
    mem::call(
        f(HandleArgs {
            handle: event as u64,
            ..bytemuck::Zeroable::zeroed()
        }),
        0,
    )
}

/// `cuEventDestroy_v2`.
#[no_mangle]
pub extern "C" fn cuEventDestroy_v2(event: usize) -> CuResult {
    let r = event_call(Command::EVENT_DESTROY, event);
    if r.is_ok() {
        handles::destroyed(Kind::Event, event as u64);
    }
    status_of(r.map(|_| ()))
}

/// `cuEventRecord`.
#[no_mangle]
pub extern "C" fn cuEventRecord(event: usize, stream: usize) -> CuResult {
    try_cu!(handles::check(Kind::Event, event as u64));
    status_of(mem::post(
        Command::EVENT_RECORD(HandleArgs {
            handle: event as u64,
            ..bytemuck::Zeroable::zeroed()
        }),
        mem::stream(stream),
    ))
}

/// `cuEventSynchronize`.
#[no_mangle]
pub extern "C" fn cuEventSynchronize(event: usize) -> CuResult {
    status_of(event_call(Command::EVENT_SYNCHRONIZE, event).map(|_| ()))
}

/// `cuEventQuery`.
#[no_mangle]
pub extern "C" fn cuEventQuery(event: usize) -> CuResult {
    status_of(event_call(Command::EVENT_QUERY, event).map(|_| ()))
}

/// `cuEventElapsedTime`.
#[no_mangle]
pub extern "C" fn cuEventElapsedTime(ms: *mut f32, start: usize, end: usize) -> CuResult {
    let args = EventElapsedArgs {
        start: start as u64,
        end: end as u64,
        ..bytemuck::Zeroable::zeroed()
    };
    match mem::call(Command::EVENT_ELAPSED(args), 0) {
        Ok(c) => put(ms, f32::from_bits(c.result0 as u32)),
        Err(e) => e,
    }
}
