//! Every opcode's example round-trips, and every kind of malformed entry is refused with
//! its own error.

use bytemuck::Zeroable;
use vgpu_proto::cmd::{DecodeContext, Payload, Request};
use vgpu_proto::examples::{context, payload, request};
use vgpu_proto::opcode::{Completion, PayloadRule, QueueKind, StreamRule};
use vgpu_proto::payload::{decode_structured, Structured};
use vgpu_proto::queue::sqe_flags;
use vgpu_proto::{decode_sqe, Command, DecodeError, Opcode, Sqe, Status};

fn ctx_for(op: Opcode) -> DecodeContext {
    context(op.info().queue)
}

fn encoded(op: Opcode) -> Sqe {
    request(op).encode()
}

fn decode(sqe: &Sqe, ctx: &DecodeContext) -> Result<Request, DecodeError> {
    decode_sqe(bytemuck::bytes_of(sqe), ctx)
}

#[test]
fn every_example_round_trips_and_its_payload_decodes() {
    for &op in Opcode::ALL {
        let req = request(op);
        let sqe = req.encode();
        assert_eq!(decode(&sqe, &ctx_for(op)), Ok(req), "{op:?}");
        let p = payload(op);
        let s = decode_structured(&req.command, &p).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        assert_eq!(matches!(s, Structured::None), p.is_empty(), "{op:?}");
    }
}

#[test]
fn window_payloads_round_trip() {
    let mut req = request(Opcode::LAUNCH);
    req.payload = Payload::Window {
        window: 3,
        offset: 4096,
        len: 32,
    };
    req.notify = true;
    let ctx = ctx_for(Opcode::LAUNCH);
    assert_eq!(decode(&req.encode(), &ctx), Ok(req));
}

#[test]
fn truncated_entry() {
    let sqe = encoded(Opcode::NOP);
    let e = decode_sqe(&bytemuck::bytes_of(&sqe)[..63], &context(QueueKind::Io));
    assert_eq!(e, Err(DecodeError::Truncated { need: 64, got: 63 }));
}

#[test]
fn unknown_opcode() {
    for v in [0u16, 0x00FF, 0x0100, 0x0209, 0x7FFF, 0x8000, 0xFFFF] {
        let mut sqe = encoded(Opcode::NOP);
        sqe.opcode = v;
        let e = decode(&sqe, &context(QueueKind::Io)).unwrap_err();
        assert_eq!(e, DecodeError::UnknownOpcode(v));
        assert_eq!(e.status(), Status::BAD_OPCODE);
    }
}

#[test]
fn reserved_flags() {
    for bit in 2..16 {
        let mut sqe = encoded(Opcode::NOP);
        sqe.flags |= 1 << bit;
        assert_eq!(
            decode(&sqe, &context(QueueKind::Io)),
            Err(DecodeError::ReservedFlags(1 << bit))
        );
    }
}

#[test]
fn wrong_queue() {
    for &op in Opcode::ALL {
        let other = match op.info().queue {
            QueueKind::Admin => QueueKind::Io,
            QueueKind::Io => QueueKind::Admin,
        };
        let e = decode(&encoded(op), &context(other)).unwrap_err();
        assert_eq!(e, DecodeError::WrongQueue(op as u16), "{op:?}");
        assert_eq!(e.status(), Status::WRONG_QUEUE);
    }
}

#[test]
fn feature_not_accepted() {
    for &op in Opcode::ALL {
        let feature = op.info().feature;
        if feature == 0 {
            continue;
        }
        let mut ctx = ctx_for(op);
        ctx.features &= !feature;
        assert_eq!(
            decode(&encoded(op), &ctx),
            Err(DecodeError::FeatureNotAccepted(feature)),
            "{op:?}"
        );
    }
    // Inline payloads need their own feature.
    let mut ctx = ctx_for(Opcode::LAUNCH);
    ctx.features = 0;
    assert_eq!(
        decode(&encoded(Opcode::LAUNCH), &ctx),
        Err(DecodeError::FeatureNotAccepted(
            vgpu_proto::regs::features::INLINE_PAYLOAD
        ))
    );
}

#[test]
fn stream_rules() {
    for &op in Opcode::ALL {
        let mut sqe = encoded(op);
        match op.info().stream {
            StreamRule::None => {
                sqe.stream = 5;
                assert_eq!(
                    decode(&sqe, &ctx_for(op)),
                    Err(DecodeError::StreamNotAllowed(5)),
                    "{op:?}"
                );
            }
            StreamRule::Target => {
                sqe.stream = 0;
                assert_eq!(
                    decode(&sqe, &ctx_for(op)),
                    Err(DecodeError::BadArgument("stream")),
                    "{op:?}"
                );
            }
            StreamRule::Ordered => {
                sqe.stream = 0;
                assert!(
                    decode(&sqe, &ctx_for(op)).is_ok(),
                    "{op:?} on the NULL stream"
                );
            }
        }
    }
}

#[test]
fn payload_rules() {
    for &op in Opcode::ALL {
        let ctx = ctx_for(op);
        match op.info().payload {
            PayloadRule::None => {
                let mut sqe = encoded(op);
                sqe.flags |= sqe_flags::INLINE;
                sqe.payload_len = 8;
                assert_eq!(
                    decode(&sqe, &ctx),
                    Err(DecodeError::PayloadNotAllowed),
                    "{op:?}"
                );
            }
            PayloadRule::Required(min) => {
                let mut sqe = encoded(op);
                sqe.payload_len = min - 1;
                if min == 1 {
                    sqe.flags &= !sqe_flags::INLINE;
                }
                assert_eq!(
                    decode(&sqe, &ctx),
                    Err(DecodeError::PayloadTooShort { min, got: min - 1 }),
                    "{op:?}"
                );
            }
            PayloadRule::Optional => {}
        }
    }
}

#[test]
fn payload_descriptors() {
    let ctx = context(QueueKind::Io);
    let base = encoded(Opcode::LAUNCH);
    type Mutation = (fn(&mut Sqe), &'static str);
    let cases: [Mutation; 5] = [
        (
            |s| {
                s.payload_len = 0;
            },
            "FLAG_INLINE without a payload",
        ),
        (
            |s| {
                s.payload_len = 0;
                s.flags = 0;
                s.payload_window = 1;
            },
            "window or offset without a payload",
        ),
        (
            |s| {
                s.payload_window = 2;
            },
            "inline payload names a window",
        ),
        (
            |s| {
                s.flags = 0;
                s.payload_window = 0;
                s.payload_offset = 8;
            },
            "window payload in window 0",
        ),
        (
            |s| {
                s.flags = 0;
                s.payload_window = 1;
                s.payload_offset = u64::MAX;
            },
            "payload offset overflows",
        ),
    ];
    for (mutate, what) in cases {
        let mut sqe = base;
        mutate(&mut sqe);
        let mut c = ctx;
        if what.contains("without a payload") {
            // A launch with no payload needs attr_count 0 to pass later checks.
            let mut r = request(Opcode::LAUNCH);
            if let Command::LAUNCH(a) = &mut r.command {
                a.attr_count = 0;
            }
            sqe.args = r.command.args_bytes();
            c = ctx;
        }
        let e = decode(&sqe, &c).unwrap_err();
        assert_eq!(e, DecodeError::BadPayloadDescriptor(what));
        assert_eq!(e.status(), Status::BAD_PAYLOAD_DESCRIPTOR);
    }
}

#[test]
fn inline_too_long() {
    let mut ctx = context(QueueKind::Io);
    ctx.max_inline = 64;
    let e = decode(&encoded(Opcode::MEMCPY_HTOD), &ctx).unwrap_err();
    assert_eq!(e, DecodeError::InlineTooLong { len: 100, max: 64 });
    assert_eq!(e.status(), Status::INLINE_TOO_LONG);
}

/// Flipping any byte of any reserved field of any opcode's arguments is refused with
/// ReservedNonZero naming that field.
#[test]
fn reserved_argument_bytes() {
    let mut checked = 0;
    for &op in Opcode::ALL {
        let sqe = encoded(op);
        for &(name, off, len) in op.reserved_args() {
            for i in off..off + len {
                let mut bad = sqe;
                bad.args[i] = 0x5A;
                assert_eq!(
                    decode(&bad, &ctx_for(op)),
                    Err(DecodeError::ReservedNonZero(name)),
                    "{op:?} byte {i}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "only {checked} reserved bytes checked");
}

#[test]
fn bad_arguments() {
    use vgpu_proto::cmd::*;
    let io = context(QueueKind::Io);
    let admin = context(QueueKind::Admin);
    let cases: Vec<(Command, DecodeContext, &str)> = vec![
        (
            Command::MEM_ALLOC(MemAllocArgs {
                size: 0,
                ..Zeroable::zeroed()
            }),
            io,
            "size",
        ),
        (Command::MEM_FREE(HandleArgs::zeroed()), io, "handle"),
        (
            Command::MEMSET(MemsetArgs {
                dst: 1,
                count: 1,
                value: 0,
                elem_size: 3,
                ..Zeroable::zeroed()
            }),
            io,
            "elem_size",
        ),
        (
            Command::MEMSET(MemsetArgs {
                dst: 1,
                count: 1,
                value: 0x1_0000,
                elem_size: 2,
                ..Zeroable::zeroed()
            }),
            io,
            "value",
        ),
        (
            Command::MEMCPY_DTOH(CopyDtoHArgs {
                src: 1,
                len: 8,
                dst_window: 0,
                rsv0: 0,
                dst_offset: 0,
            }),
            io,
            "dst_window",
        ),
        (
            Command::MEMCPY_DTOH(CopyDtoHArgs {
                src: 1,
                len: 8,
                dst_window: 1,
                rsv0: 0,
                dst_offset: u64::MAX,
            }),
            io,
            "dst_offset",
        ),
        (
            Command::QUEUE_CREATE(QueueCreateArgs {
                pd: 1,
                qid: 0,
                depth_log2: 4,
                ..Zeroable::zeroed()
            }),
            admin,
            "qid",
        ),
        (
            Command::QUEUE_CREATE(QueueCreateArgs {
                pd: 1,
                qid: 1,
                depth_log2: 16,
                ..Zeroable::zeroed()
            }),
            admin,
            "depth_log2",
        ),
        (
            Command::QUEUE_CREATE(QueueCreateArgs {
                pd: 1,
                qid: 1,
                depth_log2: 4,
                base: 0x1001,
                ..Zeroable::zeroed()
            }),
            admin,
            "base",
        ),
        (
            Command::WINDOW_REGISTER(WindowRegisterArgs {
                pd: 1,
                window: 1,
                iova: 0,
                len: 4096,
                access: 4,
                rsv0: 0,
            }),
            admin,
            "access",
        ),
        (
            Command::WINDOW_REGISTER(WindowRegisterArgs {
                pd: 1,
                window: 1,
                iova: u64::MAX,
                len: 2,
                access: 1,
                rsv0: 0,
            }),
            admin,
            "iova",
        ),
        (
            Command::IDENTIFY(IdentifyArgs {
                iova: 0,
                len: 100,
                ..Zeroable::zeroed()
            }),
            admin,
            "len",
        ),
        (
            Command::STREAM_CREATE(StreamCreateArgs {
                flags: 2,
                ..Zeroable::zeroed()
            }),
            io,
            "flags",
        ),
        (
            Command::EVENT_CREATE(EventCreateArgs {
                flags: 8,
                ..Zeroable::zeroed()
            }),
            io,
            "flags",
        ),
        (
            Command::DEVICE_INFO(OutArgs {
                out: OutRef {
                    offset: 0,
                    window: 0,
                    len: 8,
                },
                ..Zeroable::zeroed()
            }),
            io,
            "out.window",
        ),
    ];
    for (cmd, ctx, field) in cases {
        let req = Request {
            cid: 1,
            notify: false,
            stream: 0,
            payload: Payload::None,
            command: cmd,
        };
        let e = decode(&req.encode(), &ctx).unwrap_err();
        assert_eq!(e, DecodeError::BadArgument(field), "{cmd:?}");
        assert_eq!(e.status(), Status::BAD_ARGUMENT);
    }
}

#[test]
fn launch_shapes() {
    let ctx = context(QueueKind::Io);
    let mutate = |f: fn(&mut vgpu_proto::cmd::LaunchArgs)| {
        let mut r = request(Opcode::LAUNCH);
        if let Command::LAUNCH(a) = &mut r.command {
            f(a);
        }
        decode(&r.encode(), &ctx)
    };
    assert_eq!(
        mutate(|a| a.grid_y = 0),
        Err(DecodeError::BadArgument("grid_y"))
    );
    assert_eq!(
        mutate(|a| a.block_x = 1025),
        Err(DecodeError::BadArgument("block"))
    );
    assert_eq!(
        mutate(|a| {
            // The thread count must not overflow 32 bits while being checked.
            a.block_x = u16::MAX;
            a.block_y = u16::MAX;
            a.block_z = 64;
        }),
        Err(DecodeError::BadArgument("block"))
    );
    assert_eq!(
        mutate(|a| a.block_z = 65),
        Err(DecodeError::BadArgument("block_z"))
    );
    assert_eq!(
        mutate(|a| a.attr_count = 17),
        Err(DecodeError::BadArgument("attr_count"))
    );
    assert_eq!(
        mutate(|a| a.attr_count = 3),
        Err(DecodeError::PayloadTooShort { min: 48, got: 32 })
    );
    // Parameter blobs up to the CUDA limit are expressible (inline in a deep enough ring,
    // or in a window), and one byte more is refused.
    let mut r = request(Opcode::LAUNCH);
    r.payload = Payload::Window {
        window: 1,
        offset: 0,
        len: 16 + 32 * 1024,
    };
    assert!(decode(&r.encode(), &ctx).is_ok());
    r.payload = Payload::Window {
        window: 1,
        offset: 0,
        len: 16 + 32 * 1024 + 1,
    };
    assert_eq!(
        decode(&r.encode(), &ctx),
        Err(DecodeError::BadArgument("params"))
    );
    let big = DecodeContext {
        max_inline: 64 * 1024,
        ..ctx
    };
    r.payload = Payload::Inline {
        len: 16 + 32 * 1024,
    };
    assert!(decode(&r.encode(), &big).is_ok());
}

#[test]
fn htod_sources() {
    let ctx = context(QueueKind::Io);
    let mut r = request(Opcode::MEMCPY_HTOD);
    if let Command::MEMCPY_HTOD(a) = &mut r.command {
        a.len = 99;
    }
    assert_eq!(
        decode(&r.encode(), &ctx),
        Err(DecodeError::BadArgument("len"))
    );
    let mut r = request(Opcode::MEMCPY_HTOD);
    r.payload = Payload::None;
    assert_eq!(
        decode(&r.encode(), &ctx),
        Err(DecodeError::BadArgument("src_window"))
    );
    if let Command::MEMCPY_HTOD(a) = &mut r.command {
        a.src_window = 2;
        a.src_offset = 4096;
        a.len = 1 << 40; // any size is expressible from a window
    }
    assert!(decode(&r.encode(), &ctx).is_ok());
}

#[test]
fn async_opcodes_complete_only_on_request() {
    let asyncs: Vec<_> = Opcode::ALL
        .iter()
        .filter(|o| o.info().completion == Completion::Async)
        .collect();
    assert!(asyncs.contains(&&Opcode::LAUNCH) && asyncs.contains(&&Opcode::MEMCPY_HTOD));
    assert!(!asyncs.contains(&&Opcode::NOP));
}

#[test]
fn structured_payload_errors() {
    let r = request(Opcode::MODULE_LOAD);
    let mut p = payload(Opcode::MODULE_LOAD);
    p.push(0);
    assert_eq!(
        decode_structured(&r.command, &p),
        Err(DecodeError::BadPayload("image_len"))
    );
    let r = request(Opcode::MODULE_GET_GLOBAL);
    assert_eq!(
        decode_structured(&r.command, b"a\0b"),
        Err(DecodeError::BadPayload("symbol"))
    );
    assert_eq!(
        decode_structured(&r.command, &[0xFF, 0xFE]),
        Err(DecodeError::BadPayload("symbol"))
    );
    let r = request(Opcode::BLAS_GEMM_BATCHED);
    let mut g = vgpu_proto::examples::gemm();
    g.stride_a = 16;
    assert_eq!(
        decode_structured(&r.command, bytemuck::bytes_of(&g)),
        Err(DecodeError::BadPayload("stride"))
    );
    g.stride_a = 0;
    g.transa = 3;
    assert_eq!(
        decode_structured(&r.command, bytemuck::bytes_of(&g)),
        Err(DecodeError::BadPayload("transa"))
    );
}
