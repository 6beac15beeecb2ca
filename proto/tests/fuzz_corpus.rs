//! Runs the fuzz target's entry point over the committed corpus (`fuzz/corpus/decode`), so
//! every CI run exercises what fuzzing found, even where libFuzzer is not available.
//!
//! `VGPU_WRITE_CORPUS=1 cargo test -p vgpu-proto --test fuzz_corpus` (re)writes the seed
//! files: each opcode's example entry with its inline payload, control messages and a
//! module table.

use std::path::PathBuf;
use vgpu_proto::control::{HelloBody, Message, WindowAllocBody};
use vgpu_proto::examples::{payload, request};
use vgpu_proto::info::{encode_module_info, FuncRecord, FunctionEntry, ParamInfo};
use vgpu_proto::Opcode;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode")
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for &op in Opcode::ALL {
        let mut bytes = bytemuck::bytes_of(&request(op).encode()).to_vec();
        let mut p = payload(op);
        p.resize(p.len().div_ceil(64) * 64, 0);
        bytes.extend_from_slice(&p);
        out.push((format!("seed-sqe-{}", op.info().name.to_lowercase()), bytes));
    }
    let hello = HelloBody {
        version: 1,
        flags: 0,
        queue_depth_log2: 10,
        pid: 1,
        window_bytes: 1 << 26,
        rsv: 0,
        name: [0; 32],
    };
    out.push(("seed-ctl-hello".into(), Message::Hello(hello).encode(1)));
    out.push((
        "seed-ctl-alloc".into(),
        Message::WindowAlloc(WindowAllocBody {
            bytes: 4096,
            flags: 0,
            rsv: 0,
        })
        .encode(2),
    ));
    out.push((
        "seed-ctl-error".into(),
        Message::Error {
            code: 2,
            message: "bad".into(),
        }
        .encode(3),
    ));
    out.push((
        "seed-ctl-status".into(),
        Message::StatusReply("{\"clients\":0}".into()).encode(4),
    ));
    let mut r: FuncRecord = bytemuck::Zeroable::zeroed();
    r.handle = 1;
    r.param_bytes = 16;
    let f = FunctionEntry {
        record: r,
        name: "_Z3addPfS_".into(),
        params: vec![
            ParamInfo { offset: 0, size: 8 },
            ParamInfo { offset: 8, size: 8 },
        ],
    };
    out.push(("seed-module-info".into(), encode_module_info(1, &[f])));
    out
}

#[test]
fn corpus_replays_without_panics() {
    if std::env::var_os("VGPU_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(corpus_dir()).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(corpus_dir().join(name), bytes).unwrap();
        }
    }
    let mut n = 0;
    for entry in std::fs::read_dir(corpus_dir()).expect("fuzz/corpus/decode is missing") {
        let path = entry.unwrap().path();
        vgpu_proto::fuzzing::decode_all(&std::fs::read(&path).unwrap());
        n += 1;
    }
    // The seeds alone are more than 70 files: a near-empty corpus means it was lost.
    assert!(n >= seeds().len(), "corpus has only {n} files");
    for (_, bytes) in seeds() {
        vgpu_proto::fuzzing::decode_all(&bytes);
    }
}
