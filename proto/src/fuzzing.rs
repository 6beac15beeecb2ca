//! The one entry point for fuzzers: feeds arbitrary bytes to every decoder in the crate and
//! checks the invariants that must hold for whatever they accept. Used by the libFuzzer
//! target in `fuzz/` and by the corpus test that runs in CI.

use crate::cmd::{DecodeContext, Payload, Request};
use crate::control::{Message, MAX_FDS};
use crate::opcode::QueueKind;
use crate::payload::*;
use crate::queue::{Cqe, SQE_SIZE};
use crate::regs::features;
use crate::{cmd::Args, error::read_pod, info};

/// Runs every decoder on `data`. Panics only if an invariant is broken (which is a bug);
/// a decoder refusing the input is the expected outcome for most inputs.
pub fn decode_all(data: &[u8]) {
    for queue in [QueueKind::Admin, QueueKind::Io] {
        for (feat, max_inline) in [(features::ALL, 255 * 64), (0, 0), (features::ALL, 64)] {
            let ctx = DecodeContext {
                queue,
                features: feat,
                max_inline,
            };
            sqe(data, &ctx);
        }
    }
    let _ = read_pod::<Cqe>(data);
    for fds in 0..=MAX_FDS {
        if let Ok((seq, msg)) = Message::decode(data, fds) {
            assert_eq!(
                msg.encode(seq),
                data,
                "control message does not re-encode to its bytes"
            );
        }
    }
    let _ = info::decode_module_info(data);
    let _ = read_pod::<info::DeviceInfo>(data).map(|d| d.check());
    let _ = decode_payload::<Copy2D>(data);
    let _ = decode_payload::<Memset2D>(data);
    let _ = decode_payload::<GemmDesc>(data);
    let _ = decode_payload::<TrsmBatchedDesc>(data);
    let _ = decode_payload::<LtMatmulDesc>(data);
    let _ = decode_payload::<info::ObjectCounts>(data);
}

fn sqe(data: &[u8], ctx: &DecodeContext) {
    let Ok(req) = crate::decode_sqe(data, ctx) else {
        return;
    };
    let raw = req.encode();
    assert_eq!(
        bytemuck::bytes_of(&raw),
        &data[..SQE_SIZE],
        "accepted entry does not re-encode to its bytes"
    );
    assert_eq!(Request::decode(&raw, ctx), Ok(req));
    if let Payload::Inline { len } = req.payload {
        let rest = &data[SQE_SIZE..];
        if let Some(p) = rest.get(..len as usize) {
            let _ = decode_structured(&req.command, p);
        }
    }
}
