//! Fuzz target: every decoder of vgpu-proto on arbitrary bytes (see
//! `vgpu_proto::fuzzing::decode_all` for the invariants checked).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vgpu_proto::fuzzing::decode_all(data);
});
