//! Streams, events and synchronisation, one line each in the table at the end
//! (`vgpu_shim_abi::exports!`).

use crate::handles::{self, Kind};
use crate::mem;
use bytemuck::Zeroable;
use vgpu_proto::cmd::*;
use vgpu_proto::Command;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::Out;
use vgpu_shim_abi::status::CuStatus;

type R = Result<(), CuStatus>;

fn ctx_synchronize() -> R {
    mem::call(Command::CTX_SYNCHRONIZE(Zeroable::zeroed()), 0)?;
    Ok(())
}

/// `cuStreamCreate` (the flags are kept with the handle for `cuStreamGetFlags`).
pub(crate) fn stream_create(stream: Out<usize>, flags: u32) -> R {
    let flags = flags & stream_flags::NON_BLOCKING;
    let args = StreamCreateArgs {
        flags,
        ..Zeroable::zeroed()
    };
    let c = mem::call(Command::STREAM_CREATE(args), 0)?;
    handles::created_with(Kind::Stream, c.result0, flags);
    Ok(stream.write(c.result0 as usize)?)
}

fn stream_destroy(stream: usize) -> R {
    if stream <= 2 {
        return Err(CuStatus::INVALID_VALUE);
    }
    mem::call(Command::STREAM_DESTROY(Zeroable::zeroed()), stream as u64)?;
    handles::destroyed(Kind::Stream, stream as u64);
    Ok(())
}

fn on_stream(command: Command, stream: usize) -> R {
    mem::call(command, mem::stream(stream))?;
    Ok(())
}

fn stream_wait_event(stream: usize, event: usize, flags: u32) -> R {
    handles::check(Kind::Event, event as u64)?;
    let args = StreamWaitEventArgs {
        event: event as u64,
        flags,
        ..Zeroable::zeroed()
    };
    Ok(mem::post(
        Command::STREAM_WAIT_EVENT(args),
        mem::stream(stream),
    )?)
}

fn event_create(event: Out<usize>, flags: u32) -> R {
    let args = EventCreateArgs {
        flags,
        ..Zeroable::zeroed()
    };
    let c = mem::call(Command::EVENT_CREATE(args), 0)?;
    handles::created(Kind::Event, c.result0);
    Ok(event.write(c.result0 as usize)?)
}

fn handle(h: usize) -> HandleArgs {
    HandleArgs {
        handle: h as u64,
        ..Zeroable::zeroed()
    }
}

fn event_call(f: fn(HandleArgs) -> Command, event: usize) -> R {
    mem::call(f(handle(event)), 0)?;
    Ok(())
}

fn event_destroy(event: usize) -> R {
    event_call(Command::EVENT_DESTROY, event)?;
    handles::destroyed(Kind::Event, event as u64);
    Ok(())
}

fn event_record(event: usize, stream: usize) -> R {
    handles::check(Kind::Event, event as u64)?;
    Ok(mem::post(
        Command::EVENT_RECORD(handle(event)),
        mem::stream(stream),
    )?)
}

fn event_elapsed(ms: Out<f32>, start: usize, end: usize) -> R {
    let args = EventElapsedArgs {
        start: start as u64,
        end: end as u64,
        ..Zeroable::zeroed()
    };
    let c = mem::call(Command::EVENT_ELAPSED(args), 0)?;
    Ok(ms.write(f32::from_bits(c.result0 as u32))?)
}

exports! {
    library "libcuda.so.1", status CuStatus;
    implemented fn cuCtxSynchronize() => ctx_synchronize();
    implemented fn cuStreamCreate(stream: Out<usize>, flags: u32) => stream_create(stream, flags);
    implemented fn cuStreamDestroy_v2(stream: usize) => stream_destroy(stream);
    implemented fn cuStreamSynchronize(stream: usize) => on_stream(Command::STREAM_SYNCHRONIZE(Zeroable::zeroed()), stream);
    implemented fn cuStreamQuery(stream: usize) => on_stream(Command::STREAM_QUERY(Zeroable::zeroed()), stream);
    implemented fn cuStreamWaitEvent(stream: usize, event: usize, flags: u32) => stream_wait_event(stream, event, flags);
    implemented fn cuEventCreate(event: Out<usize>, flags: u32) => event_create(event, flags);
    implemented fn cuEventDestroy_v2(event: usize) => event_destroy(event);
    implemented fn cuEventRecord(event: usize, stream: usize) => event_record(event, stream);
    implemented fn cuEventSynchronize(event: usize) => event_call(Command::EVENT_SYNCHRONIZE, event);
    implemented fn cuEventQuery(event: usize) => event_call(Command::EVENT_QUERY, event);
    implemented fn cuEventElapsedTime(ms: Out<f32>, start: usize, end: usize) => event_elapsed(ms, start, end);
}
