//! Property tests: no input makes a decoder panic, and whatever is accepted re-encodes to
//! the same bytes.

use proptest::prelude::*;
use vgpu_proto::cmd::{DecodeContext, Request};
use vgpu_proto::control::{HelloBody, Message, VERSION};
use vgpu_proto::examples::{context, request};
use vgpu_proto::info::{
    decode_module_info, encode_module_info, FuncRecord, FunctionEntry, ParamInfo,
};
use vgpu_proto::opcode::QueueKind;
use vgpu_proto::queue::sqe_flags;
use vgpu_proto::{decode_sqe, DecodeError, Opcode, Sqe};

fn any_opcode() -> impl Strategy<Value = Opcode> {
    proptest::sample::select(Opcode::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// Arbitrary bytes never make any decoder panic.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..700)) {
        vgpu_proto::fuzzing::decode_all(&data);
    }

    /// An example entry with one byte changed either decodes to something that re-encodes
    /// to the same bytes or is refused; never a panic.
    #[test]
    fn mutated_examples(op in any_opcode(), at in 0usize..64, byte in any::<u8>()) {
        let mut raw = request(op).encode();
        bytemuck::bytes_of_mut(&mut raw)[at] = byte;
        let ctx = context(op.info().queue);
        if let Ok(req) = decode_sqe(bytemuck::bytes_of(&raw), &ctx) {
            prop_assert_eq!(req.encode(), raw);
        }
    }

    /// Random arguments with the reserved fields cleared: whatever decodes round-trips,
    /// and what is refused is refused for a value reason, never a reserved field.
    #[test]
    fn random_arguments(op in any_opcode(), mut args in any::<[u8; 32]>(), cid in any::<u32>(),
                        notify in any::<bool>(), stream in any::<u64>()) {
        for &(_, off, len) in op.reserved_args() {
            args[off..off + len].fill(0);
        }
        let mut raw: Sqe = request(op).encode();
        raw.args = args;
        raw.cid = cid;
        if notify { raw.flags |= sqe_flags::NOTIFY; }
        if op.info().stream != vgpu_proto::opcode::StreamRule::None { raw.stream = stream | 1; }
        let ctx = context(op.info().queue);
        match Request::decode(&raw, &ctx) {
            Ok(req) => {
                prop_assert_eq!(req.encode(), raw);
                prop_assert_eq!(req.cid, cid);
                prop_assert_eq!(req.notify, notify);
            }
            Err(e) => prop_assert!(!matches!(e, DecodeError::ReservedNonZero(_)), "{:?}", e),
        }
    }

    /// Inline payload lengths: accepted exactly up to the queue's limit.
    #[test]
    fn inline_limits(len in 1u32..70_000, max_inline in 0u32..70_000) {
        let mut raw = request(Opcode::LAUNCH).encode();
        raw.args = { let mut r = request(Opcode::LAUNCH); if let vgpu_proto::Command::LAUNCH(a) = &mut r.command { a.attr_count = 0; } r.command.args_bytes() };
        raw.payload_len = len;
        let ctx = DecodeContext { max_inline, ..context(QueueKind::Io) };
        let r = Request::decode(&raw, &ctx);
        if len > max_inline {
            prop_assert_eq!(r, Err(DecodeError::InlineTooLong { len, max: max_inline }));
        } else if len > 32 * 1024 {
            prop_assert_eq!(r, Err(DecodeError::BadArgument("params")));
        } else {
            prop_assert!(r.is_ok());
        }
    }

    /// HELLO bodies round-trip through the control-plane codec.
    #[test]
    fn hello_round_trip(pid in any::<u32>(), depth in 0u32..=15, bytes in any::<u64>(), seq in any::<u32>(),
                        name in any::<[u8; 32]>()) {
        let h = HelloBody { version: VERSION.into(), flags: 0, queue_depth_log2: depth, pid, window_bytes: bytes, rsv: 0, name };
        let m = Message::Hello(h);
        prop_assert_eq!(Message::decode(&m.encode(seq), 0), Ok((seq, m)));
    }

    /// Module tables round-trip, and cutting them short is always refused.
    #[test]
    fn module_tables(funcs in proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,40}", proptest::collection::vec((0u32..256, 1u32..64), 0..8)), 0..6),
                     cut in any::<prop::sample::Index>()) {
        let entries: Vec<FunctionEntry> = funcs.iter().enumerate().map(|(i, (name, params))| {
            let mut record: FuncRecord = bytemuck::Zeroable::zeroed();
            record.handle = i as u64 + 1;
            record.param_bytes = 512;
            FunctionEntry { record, name: name.clone(), params: params.iter().map(|&(offset, size)| ParamInfo { offset, size }).collect() }
        }).collect();
        let bytes = encode_module_info(9, &entries);
        let (info, back) = decode_module_info(&bytes).unwrap();
        prop_assert_eq!(info.func_count as usize, entries.len());
        for (a, b) in back.iter().zip(&entries) {
            prop_assert_eq!(&a.name, &b.name);
            prop_assert_eq!(&a.params, &b.params);
        }
        let n = cut.index(bytes.len());
        prop_assert!(decode_module_info(&bytes[..n]).is_err());
    }
}
