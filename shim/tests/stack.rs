//! The client core against the real stack: vgpu-stub (soft executor) and vgpu-driver
//! (vfio-user backing), in this process, with no VM.

use bytemuck::Zeroable;
use std::time::Duration;
use vgpu_proto::cmd::*;
use vgpu_proto::{Command, Status};
use vgpu_shim::client::{ConnectOptions, Connection};

use vgpu_test_stack::Stack;

fn start() -> Stack {
    Stack::start(1 << 30, 8 << 20)
}

fn options(st: &Stack) -> ConnectOptions {
    ConnectOptions {
        socket: st.control().to_path_buf(),
        name: "shim-test".into(),
        queue_depth_log2: 8,
        window_bytes: 8 << 20,
        timeout: Duration::from_secs(30),
        spin: Duration::from_micros(50),
    }
}

fn req(command: Command, stream: u64) -> Request {
    Request {
        cid: 0,
        notify: false,
        stream,
        payload: Payload::None,
        command,
    }
}

#[test]
fn client_core_on_the_real_stack() {
    let st = start();
    let mut conn = Connection::connect(&options(&st)).unwrap();
    assert_eq!(conn.device_info().cc_major, 9);
    let q = conn.queue().clone();
    assert_eq!(
        q.call(req(Command::NOP(Zeroable::zeroed()), 0), &[])
            .unwrap()
            .status(),
        Status::SUCCESS
    );
    // Data both ways through the first window, 4 MiB.
    let len = 4u64 << 20;
    let ptr = q
        .call(
            req(
                Command::MEM_ALLOC(MemAllocArgs {
                    size: len,
                    ..Zeroable::zeroed()
                }),
                0,
            ),
            &[],
        )
        .unwrap()
        .result0;
    let w = conn.first_window();
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    conn.window(w).unwrap().write(0, &data).unwrap();
    q.submit(
        req(
            Command::MEMCPY_HTOD(CopyHtoDArgs {
                dst: ptr,
                len,
                src_window: w,
                rsv0: 0,
                src_offset: 0,
            }),
            0,
        ),
        &[],
    )
    .unwrap();
    q.submit(
        req(
            Command::MEMCPY_DTOH(CopyDtoHArgs {
                src: ptr,
                len,
                dst_window: w,
                rsv0: 0,
                dst_offset: len,
            }),
            0,
        ),
        &[],
    )
    .unwrap();
    assert_eq!(
        q.call(req(Command::STREAM_SYNCHRONIZE(Zeroable::zeroed()), 0), &[])
            .unwrap()
            .status(),
        Status::SUCCESS
    );
    let mut back = vec![0u8; len as usize];
    conn.window(w)
        .unwrap()
        .read(len as usize, &mut back)
        .unwrap();
    assert!(back == data, "data came back changed");
    // Many threads at once on one queue.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    assert_eq!(
                        q.call(req(Command::NOP(Zeroable::zeroed()), 0), &[])
                            .unwrap()
                            .status(),
                        Status::SUCCESS
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // More window memory, and the status query.
    let w2 = conn.alloc_window(2 << 20).unwrap();
    assert!(conn.window(w2).unwrap().len() >= 2 << 20);
    let status = conn.status().unwrap();
    assert!(status.contains("shim-test"), "{status}");
    conn.free_window(w2).unwrap();
    assert_eq!(st.stub.totals().pds, 1);
    drop(q);
    drop(conn);
    let t0 = std::time::Instant::now();
    while st.stub.totals().pds != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "PD not reclaimed after the client left"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    st.finish();
}

#[test]
fn no_driver_is_a_clear_error() {
    let opts = ConnectOptions {
        socket: "/nonexistent/vgpu.sock".into(),
        ..ConnectOptions::from_env()
    };
    let e = Connection::connect(&opts).err().unwrap();
    assert_eq!(e.status(), Status::NO_DEVICE);
}
