//! The parser, one written form at a time: what each becomes in the syntax tree.

use vgpu_ptx::ast::{Function, InitValue, Initializer, Instruction, Linkage, Module, Operand};
use vgpu_ptx::ast::{Space, Statement, Variable};

fn parse(text: &str) -> Module {
    vgpu_ptx::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The statements of `body` inside a kernel.
fn body(body: &str) -> Vec<Statement> {
    let m = parse(&format!(
        ".version 8.0\n.target sm_80\n.entry k()\n{{\n{body}\n}}\n"
    ));
    m.functions.into_iter().next().unwrap().body.unwrap()
}

/// The one instruction of `text` (declarations before it allowed).
fn instr(text: &str) -> Instruction {
    let mut found = body(text).into_iter().filter_map(|s| match s {
        Statement::Instr(i) => Some(i),
        _ => None,
    });
    found.next_back().unwrap()
}

fn decl(text: &str) -> Variable {
    match body(text).into_iter().next() {
        Some(Statement::Decl(v)) => v,
        other => panic!("{other:?}"),
    }
}

fn global(text: &str) -> Variable {
    parse(text).globals.into_iter().next().unwrap()
}

fn reg(name: &str) -> Operand {
    Operand::Reg(name.to_string())
}

fn sym(name: &str) -> Operand {
    Operand::Symbol(name.to_string())
}

fn addr(base: Option<&str>, offset: i64) -> Operand {
    Operand::Address {
        base: base.map(String::from),
        offset,
    }
}

fn value(v: InitValue) -> Initializer {
    Initializer::Value(v)
}

fn ints(values: &[i128]) -> Initializer {
    Initializer::List(values.iter().map(|&v| value(InitValue::Int(v))).collect())
}

#[test]
fn header_comments_and_debug_directives() {
    let m = parse(
        "// a comment\n/* a block\n comment */ .version 7.8 /* inline */\n\
         .target sm_75, texmode_independent, debug\n.address_size 32\n\
         .file 1 \"a.cu\", 1700000000, 42\n.pragma \"nounroll\";\n\
         .section .debug_info { .b32 12 .b8 0x5f, 1 $L__info:\n .b64 $L__func_begin0 { } }\n\
         .func f()\n{\n.loc 1 5 3, function_name $L__info, inlined_at 1 10 5\n\
         ret;\n}\n",
    );
    assert_eq!(m.version, (7, 8));
    assert_eq!(m.target, ["sm_75", "texmode_independent", "debug"]);
    assert_eq!(m.address_size, 32);
    assert!(m.globals.is_empty());
    let f = &m.functions[0];
    assert_eq!((f.name.as_str(), f.entry, f.line), ("f", false, 10));
    assert_eq!(f.body.as_ref().unwrap().len(), 1);
    assert_eq!(parse(".version 9.10\n.target sm_100a").version, (9, 10));
    assert_eq!(parse(".version 9.0").address_size, 64);
}

#[test]
fn module_variables() {
    let v = global(".visible .global .align 8 .v2 .u32 pair;");
    assert_eq!(
        (v.space, v.linkage, v.align, v.vector),
        (Space::Global, Linkage::Visible, Some(8), Some(2))
    );
    assert_eq!(
        (v.ty.as_str(), v.names.as_slice(), v.init.as_ref()),
        ("u32", &["pair".to_string()][..], None)
    );
    let v = global(".extern .shared .align 16 .b8 dyn[];");
    assert_eq!(
        (v.space, v.linkage, v.array.as_slice()),
        (Space::Shared, Linkage::Extern, &[None][..])
    );
    assert_eq!(global(".weak .const .f32 w;").linkage, Linkage::Weak);
    assert_eq!(global(".common .global .u8 c;").linkage, Linkage::Common);
    assert_eq!(
        global(".global .u32 m[2][3][4];").array,
        [Some(2), Some(3), Some(4)]
    );
    assert_eq!(
        global(".global .attribute(.managed) .align 4 .u32 managed;").align,
        Some(4)
    );
    assert_eq!(global(".tex .u32 t;").space, Space::Tex);
    assert_eq!(global(".global .texref tex;").ty, "texref");
    let v = global(".global .u32 a, b, c;");
    assert_eq!(v.names, ["a", "b", "c"]);
    assert_eq!(global(".global .u32 a[4], b[4];").array, [Some(4)]);
    let m = parse(".global .u32 x;\n.const .u64 y;");
    assert_eq!((m.globals[0].line, m.globals[1].line), (1, 2));
}

#[test]
fn initializers() {
    let init = |text: &str| global(text).init.unwrap();
    assert_eq!(init(".global .u32 x = 5;"), value(InitValue::Int(5)));
    assert_eq!(init(".global .s32 x = -7;"), value(InitValue::Int(-7)));
    assert_eq!(
        init(".global .u64 x[6] = {0x1F, 017, 0b101, 42U, 0xffffffffffffffff, -9223372036854775808};"),
        ints(&[31, 15, 5, 42, u64::MAX.into(), i64::MIN.into()])
    );
    assert_eq!(
        init(".const .f32 x[3] = {1, 2, 0f3F800000};"),
        Initializer::List(vec![
            value(InitValue::Int(1)),
            value(InitValue::Int(2)),
            value(InitValue::F32Bits(0x3F80_0000))
        ])
    );
    assert_eq!(
        init(".const .f64 d = 0d3FF0000000000000;"),
        value(InitValue::F64Bits(0x3FF0_0000_0000_0000))
    );
    assert_eq!(init(".const .f64 d = 1.5;"), value(InitValue::Float(1.5)));
    assert_eq!(
        init(".const .f64 d = -2.5e-3;"),
        value(InitValue::Float(-2.5e-3))
    );
    assert_eq!(init(".const .f32 d = .25;"), value(InitValue::Float(0.25)));
    assert_eq!(
        init(".global .u32 m[2][2] = {{1, 2}, {3, 4}};"),
        Initializer::List(vec![ints(&[1, 2]), ints(&[3, 4])])
    );
    let address = |symbol: &str, offset, generic| {
        value(InitValue::Address {
            symbol: symbol.into(),
            offset,
            generic,
        })
    };
    assert_eq!(
        init(".global .u64 vt[3] = {generic(sym)+8, sym, other-4};"),
        Initializer::List(vec![
            address("sym", 8, true),
            address("sym", 0, false),
            address("other", -4, false)
        ])
    );
    assert_eq!(init(".global .u32 e[1] = {};"), Initializer::List(vec![]));
}

#[test]
fn functions_and_parameters() {
    let m = parse(
        ".visible .func (.param .b32 r) f(.param .align 8 .b8 s[32], .reg .b32 x)\n.noreturn\n;\n\
         .extern .func g;\n\
         .visible .entry k(\n.param .u64 .ptr .global .align 16 p,\n.param .u32 n\n)\n\
         .maxntid 256, 1, 1\n.minnctapersm 2\n.maxnreg 64\n.pragma \"x\";\n{\n{\n}\nret;\n}\n\
         .entry e() .reqntid 32 .maxclusterrank 4 .explicitcluster .reqnctapercluster 2, 2 { }\n",
    );
    let f: &Function = &m.functions[0];
    assert_eq!(
        (f.entry, f.linkage, f.body.as_ref(), f.line),
        (false, Linkage::Visible, None, 1)
    );
    assert_eq!(
        (f.returns[0].space, f.returns[0].names[0].as_str()),
        (Space::Param, "r")
    );
    let s = &f.params[0];
    assert_eq!(
        (s.align, s.ty.as_str(), s.array.as_slice()),
        (Some(8), "b8", &[Some(32)][..])
    );
    assert_eq!(
        (f.params[1].space, f.params[1].ty.as_str()),
        (Space::Reg, "b32")
    );
    assert_eq!(f.directives, [("noreturn".to_string(), vec![])]);
    let g = &m.functions[1];
    assert_eq!(
        (g.name.as_str(), g.linkage, g.params.len()),
        ("g", Linkage::Extern, 0)
    );
    let k = &m.functions[2];
    assert_eq!((k.entry, k.line, k.params.len()), (true, 5, 2));
    assert_eq!((k.params[0].ty.as_str(), k.params[0].align), ("u64", None));
    let names: Vec<&str> = k.directives.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(names, ["maxntid", "minnctapersm", "maxnreg"]);
    assert_eq!(k.directives[0].1, [256, 1, 1]);
    let body = k.body.as_ref().unwrap();
    assert!(matches!(&body[..], [Statement::Block(b), Statement::Instr(_)] if b.is_empty()));
    let e = &m.functions[3];
    let d: Vec<(&str, &[u64])> = e
        .directives
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    assert_eq!(
        d,
        [
            ("reqntid", &[32][..]),
            ("maxclusterrank", &[4]),
            ("explicitcluster", &[]),
            ("reqnctapercluster", &[2, 2])
        ]
    );
    assert_eq!(e.body, Some(vec![]));
}

#[test]
fn body_declarations() {
    let v = decl(".reg .b32 %r<13>;");
    assert_eq!(
        (v.space, v.ty.as_str(), v.names.len()),
        (Space::Reg, "b32", 13)
    );
    assert_eq!((v.names[0].as_str(), v.names[12].as_str()), ("%r0", "%r12"));
    assert_eq!(decl(".reg .pred %p, %q;").names, ["%p", "%q"]);
    let v = decl(".reg .v2 .f32 %v;");
    assert_eq!((v.vector, v.ty.as_str()), (Some(2), "f32"));
    let v = decl(".shared .align 4 .b8 tile[1024];");
    assert_eq!(
        (v.space, v.align, v.array.as_slice()),
        (Space::Shared, Some(4), &[Some(1024)][..])
    );
    assert_eq!(
        decl(".local .align 8 .b8 __local_depot0[40];").space,
        Space::Local
    );
    assert_eq!(decl(".param .b64 param0;").space, Space::Param);
    let v = decl(".extern .shared .align 16 .b8 dyn[];");
    assert_eq!(
        (v.linkage, v.array.as_slice()),
        (Linkage::Extern, &[None][..])
    );
    assert_eq!(decl(".reg .b32 %r<0>;").names, Vec::<String>::new());
    assert_eq!(decl(".reg .b16 %rs<2>, %t;").names, ["%rs0", "%rs1", "%t"]);
}

#[test]
fn labels_guards_pragmas_and_blocks() {
    let b = body(
        "$L__BB0_2:\n@%p1 bra $L__BB0_2;\n@!%p2 bra.uni $L__BB0_2;\n.pragma \"nounroll\";\n\
         { .reg .b32 t; mov.b32 t, 1; }\nexit;",
    );
    assert_eq!(b[0], Statement::Label("$L__BB0_2".into()));
    let Statement::Instr(i) = &b[1] else { panic!() };
    assert_eq!(
        (i.guard.clone(), i.opcode.as_str(), i.line),
        (Some(("%p1".into(), false)), "bra", 6)
    );
    assert_eq!(i.operands, [sym("$L__BB0_2")]);
    let Statement::Instr(i) = &b[2] else { panic!() };
    assert_eq!(
        (i.guard.clone(), i.modifiers.as_slice()),
        (Some(("%p2".into(), true)), &["uni".to_string()][..])
    );
    assert_eq!(b[3], Statement::Pragma("nounroll".into()));
    let Statement::Block(inner) = &b[4] else {
        panic!()
    };
    assert!(matches!(&inner[1], Statement::Instr(i) if i.operands[0] == reg("t")));
    // Outside its block, `t` is a bare name again.
    assert!(matches!(&b[5], Statement::Instr(i) if i.opcode == "exit"));
}

#[test]
fn inline_assembly_registers_without_percent() {
    let b = body("{\n.reg .pred p;\nsetp.ne.b32 p, %r1, 0;\n@p st.global.b32 [%rd1], %r2;\nselp.b32 %r3, 1, 0, !p;\n}\nmov.u64 %rd2, p;");
    let Statement::Block(inner) = &b[0] else {
        panic!()
    };
    let Statement::Instr(setp) = &inner[1] else {
        panic!()
    };
    assert_eq!(setp.operands, [reg("p"), reg("%r1"), Operand::Int(0)]);
    let Statement::Instr(st) = &inner[2] else {
        panic!()
    };
    assert_eq!(st.guard, Some(("p".into(), false)));
    let Statement::Instr(selp) = &inner[3] else {
        panic!()
    };
    assert_eq!(selp.operands[3], Operand::NotReg("p".into()));
    let Statement::Instr(mov) = &b[1] else {
        panic!()
    };
    assert_eq!(mov.operands[1], sym("p"));
    // A `.reg` parameter of a function is a register in its body.
    let m = parse(".func f(.reg .b32 x) { add.s32 x, x, 1; }");
    let Statement::Instr(add) = &m.functions[0].body.as_ref().unwrap()[0] else {
        panic!()
    };
    assert_eq!(add.operands, [reg("x"), reg("x"), Operand::Int(1)]);
}

#[test]
fn opcodes_and_modifiers() {
    let i = instr("ld.global.nc.L1::no_allocate.v4.f32 {%f1, %f2, %f3, %f4}, [%rd1+16];");
    assert_eq!(i.opcode, "ld");
    assert_eq!(
        i.modifiers,
        ["global", "nc", "L1::no_allocate", "v4", "f32"]
    );
    assert_eq!(
        i.operands,
        [
            Operand::Vector(vec![reg("%f1"), reg("%f2"), reg("%f3"), reg("%f4")]),
            addr(Some("%rd1"), 16)
        ]
    );
    let i = instr("mbarrier.try_wait.parity.shared::cta.b64 %p1, [%r1], %r2;");
    assert_eq!(i.modifiers, ["try_wait", "parity", "shared::cta", "b64"]);
    let i = instr("tex.2d.v4.f32.f32 {%f1, %f2, %f3, %f4}, [%rd1];");
    assert_eq!(i.modifiers, ["2d", "v4", "f32", "f32"]);
    let i = instr("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%r1], [%rd1], %r2, [%r3];");
    assert_eq!(i.modifiers[4], "mbarrier::complete_tx::bytes");
    let i = instr("ret;");
    assert_eq!(
        (i.opcode.as_str(), i.modifiers.len(), i.operands.len()),
        ("ret", 0, 0)
    );
}

#[test]
fn register_and_immediate_operands() {
    let i = instr("mov.u32 %r1, %tid.x;");
    assert_eq!(i.operands, [reg("%r1"), reg("%tid.x")]);
    let regs = ["%ctaid.y", "%laneid", "%envreg3", "%clock64", "%v.x", "_"];
    for r in regs {
        assert_eq!(instr(&format!("mov.u32 %r1, {r};")).operands[1], reg(r));
    }
    let i = instr("selp.b32 %r1, 1, 0, !%p1;");
    assert_eq!(i.operands[3], Operand::NotReg("%p1".into()));
    let immediates = [
        ("-1", Operand::Int(-1)),
        ("0x3210", Operand::Int(0x3210)),
        ("0xFFFFFFFFU", Operand::Int(0xFFFF_FFFF)),
        ("017", Operand::Int(15)),
        ("0b1010", Operand::Int(10)),
        ("0", Operand::Int(0)),
        ("0f3F800000", Operand::F32Bits(0x3F80_0000)),
        ("-0f3F800000", Operand::F32Bits(0xBF80_0000)),
        ("0fBF800000", Operand::F32Bits(0xBF80_0000)),
        (
            "0d4000000000000000",
            Operand::F64Bits(0x4000_0000_0000_0000),
        ),
        ("1.5", Operand::Float(1.5)),
        ("1e3", Operand::Float(1000.0)),
        ("-0.25", Operand::Float(-0.25)),
    ];
    for (text, want) in immediates {
        assert_eq!(
            instr(&format!("mov.b32 %r1, {text};")).operands[1],
            want,
            "{text}"
        );
    }
    let i = instr("mov.u64 %rd1, $str;");
    assert_eq!(i.operands[1], sym("$str"));
    let i = instr("mov.u64 %rd1, table+8;");
    assert_eq!(i.operands[1], Operand::SymbolOffset("table".into(), 8));
    let i = instr("mov.u64 %rd1, table-8;");
    assert_eq!(i.operands[1], Operand::SymbolOffset("table".into(), -8));
}

#[test]
fn addresses() {
    let cases = [
        ("[%rd1]", addr(Some("%rd1"), 0)),
        ("[%rd1+16]", addr(Some("%rd1"), 16)),
        ("[%rd1+-4]", addr(Some("%rd1"), -4)),
        ("[%rd1-4]", addr(Some("%rd1"), -4)),
        ("[%rd1 + 0x10]", addr(Some("%rd1"), 16)),
        ("[sym]", addr(Some("sym"), 0)),
        ("[sym+28]", addr(Some("sym"), 28)),
        ("[0x100]", addr(None, 256)),
        ("[-4]", addr(None, -4)),
        ("[8+4]", addr(None, 12)),
    ];
    for (text, want) in cases {
        assert_eq!(
            instr(&format!("ld.u32 %r1, {text};")).operands[1],
            want,
            "{text}"
        );
    }
}

#[test]
fn vectors_pairs_and_calls() {
    let i = instr("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2}, {%r3}, {%f1, %f2, %f3, %f4};");
    assert_eq!(i.operands.len(), 4);
    assert_eq!(i.operands[2], Operand::Vector(vec![reg("%r3")]));
    let i = instr("shfl.sync.bfly.b32 %r1|%p1, %r2, 16, 31, -1;");
    assert_eq!(
        i.operands,
        [
            Operand::Vector(vec![reg("%r1"), reg("%p1")]),
            reg("%r2"),
            Operand::Int(16),
            Operand::Int(31),
            Operand::Int(-1)
        ]
    );
    let i = instr("mov.b64 {%r1, _}, %rd1;");
    assert_eq!(i.operands[0], Operand::Vector(vec![reg("%r1"), reg("_")]));
    let list = |names: &[&str]| Operand::List(names.iter().map(|n| sym(n)).collect());
    let i = instr("call.uni (retval0), _Z3foo, (param0, param1);");
    assert_eq!(
        i.operands,
        [
            list(&["retval0"]),
            sym("_Z3foo"),
            list(&["param0", "param1"])
        ]
    );
    let i = instr("call.uni _Z3foo, (p0);");
    assert_eq!(i.operands, [sym("_Z3foo"), list(&["p0"])]);
    let i = instr("call (r), %rd1, (a), prototype_1;");
    assert_eq!(
        i.operands,
        [list(&["r"]), reg("%rd1"), list(&["a"]), sym("prototype_1")]
    );
    let i = instr("call.uni f, ();");
    assert_eq!(i.operands, [sym("f"), list(&[])]);
}

#[test]
fn call_prototypes_and_branch_targets() {
    let b = body(
        "prototype_0 : .callprototype (.param .b32 _) _ (.param .b64 _, .param .b32 _);\n\
         ts: .branchtargets $L1, $L2, $L3;\nbrx.idx %r1, ts;\n$L1: $L2: $L3: ret;",
    );
    assert_eq!(b[0], Statement::Label("prototype_0".into()));
    assert_eq!(b[1], Statement::Label("ts".into()));
    let Statement::Instr(t) = &b[2] else { panic!() };
    assert_eq!(
        (t.opcode.as_str(), t.operands.as_slice()),
        (".branchtargets", &[sym("$L1"), sym("$L2"), sym("$L3")][..])
    );
    let Statement::Instr(brx) = &b[3] else {
        panic!()
    };
    assert_eq!(brx.operands, [reg("%r1"), sym("ts")]);
    assert_eq!(b.len(), 8);
}
