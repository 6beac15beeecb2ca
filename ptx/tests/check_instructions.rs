//! `lower::check_instructions`: every instruction and body declaration gets a verdict, the
//! check goes on past refusals, and its first refusal is the one `lower` reports. The
//! refused forms are made up, so that support added later does not change the test.

use vgpu_ptx::lower::{check_instructions, lower};

const PTX: &str = r#"
.version 8.4
.target sm_75
.address_size 64

.visible .entry k(
    .param .u64 k_param_0
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    .reg .b64 %rd<3>;

    ld.param.u64 %rd1, [k_param_0];
    mov.u32 %r1, %tid.x;
    frobnicate.b32 %r2, %r1;
    {
    .reg .b32 inner;
    add.s32 inner, %r1, 1;
    unfrobnicate.s32 %r3, inner;
    }
    .reg .v2 .b32 %v;
    st.global.u32 [%rd1], %r3;
    ret;
}

.visible .entry ok()
{
    .reg .b32 %r<2>;
    mov.u32 %r1, %tid.x;
    ret;
}
"#;

#[test]
fn every_instruction_gets_a_verdict() {
    let m = vgpu_ptx::parse(PTX).unwrap();
    let k = m.functions.iter().find(|f| f.name == "k").unwrap();
    let c = check_instructions(&m, k).unwrap();
    let verdicts: Vec<(String, bool)> = c
        .instructions
        .iter()
        .map(|(i, e)| (i.opcode.clone(), e.is_none()))
        .collect();
    let expect = [
        ("ld", true),
        ("mov", true),
        ("frobnicate", false),
        ("add", true),
        ("unfrobnicate", false),
        ("st", true),
        ("ret", true),
    ];
    let expect: Vec<(String, bool)> = expect.iter().map(|(o, a)| (o.to_string(), *a)).collect();
    assert_eq!(verdicts, expect);
    assert_eq!(c.declarations.len(), 1, "the vector register");

    // The first refusal by line is what lower() reports for the kernel.
    let first = c
        .instructions
        .iter()
        .filter_map(|(_, e)| e.clone())
        .chain(c.declarations.iter().cloned())
        .min_by_key(|e| e.line)
        .unwrap();
    let prog = lower(&m).unwrap();
    assert_eq!(prog.refused["k"], first);
    assert!(prog.kernels.contains_key("ok"));

    let ok = m.functions.iter().find(|f| f.name == "ok").unwrap();
    let c = check_instructions(&m, ok).unwrap();
    assert!(c.instructions.iter().all(|(_, e)| e.is_none()));
    assert!(c.declarations.is_empty());
}
