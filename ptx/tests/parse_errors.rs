//! What the parser refuses, and that its errors say where and what: the line and column of
//! the offending token, what was expected there and what was found.

use vgpu_ptx::parse::MAX_DEPTH;
use vgpu_ptx::ParseError;

const HEAD: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

fn error(text: &str) -> ParseError {
    match vgpu_ptx::parse(text) {
        Ok(m) => panic!("parsed: {m:?}\n{text}"),
        Err(e) => e,
    }
}

/// The error of `body` inside a kernel whose `{` is on line 5, so its first line is 6.
fn body_error(body: &str) -> ParseError {
    error(&format!("{HEAD}.entry k()\n{{\n{body}\n}}\n"))
}

fn check(e: &ParseError, line: u32, column: u32, parts: &[&str]) {
    assert_eq!((e.line, e.column), (line, column), "{e}");
    for part in parts {
        assert!(e.message.contains(part), "{e}: no {part:?}");
    }
}

#[test]
fn display_names_line_and_column() {
    let e = error(".version 8.0\n.bogus\n");
    assert_eq!(
        e.to_string(),
        "line 2, column 1: expected `.entry`, `.func` or a state space (`.global`, ...), found `.bogus`"
    );
}

/// A text (in a kernel's body when `in_body`), the line and column of its error and parts
/// of the message.
type Case<'a> = (bool, &'a str, u32, u32, &'a [&'a str]);

fn check_all(cases: &[Case]) {
    for &(in_body, text, line, column, parts) in cases {
        let e = if in_body {
            body_error(text)
        } else {
            error(&format!("{HEAD}{text}"))
        };
        check(&e, line, column, parts);
    }
}

#[test]
fn missing_semicolon() {
    check_all(&[
        (
            true,
            "mov.u32 %r1, 1\nret;",
            7,
            1,
            &[
                "expected `,` or `;` after an operand of `mov` (line 6)",
                "found `ret`",
            ],
        ),
        (
            false,
            ".global .u32 x\n.global .u32 y;",
            5,
            1,
            &["expected `;` after the declaration", "found `.global`"],
        ),
    ]);
}

#[test]
fn lexical_errors() {
    check_all(&[
        (
            false,
            "  /* never closed\n.entry k() { }",
            4,
            3,
            &["unterminated `/*` comment"],
        ),
        (false, "#include <x>\n", 4, 1, &["unexpected character '#'"]),
        (
            true,
            "mov.u64 %rd1, 0x1ffffffffffffffff;",
            6,
            15,
            &[
                "expected an operand",
                "number `0x1ffffffffffffffff` does not fit in 64 bits",
            ],
        ),
        (
            true,
            "mov.f32 %f1, 0f3F80;",
            6,
            14,
            &["malformed number `0f3F80`"],
        ),
        (
            true,
            "mov.u32 %r1, 12abc;",
            6,
            14,
            &["malformed number `12abc`"],
        ),
        (true, "mov.u32 %r1, 08;", 6, 14, &["malformed number"]),
        (
            false,
            ".entry k() { .pragma \"open",
            4,
            22,
            &["unterminated string"],
        ),
    ]);
    // Columns count characters, not bytes.
    check(&error("/* ééé */ ?"), 1, 11, &["unexpected character '?'"]);
}

#[test]
fn structural_errors() {
    check_all(&[
        (
            false,
            ".entry k()\n{\nret;\n",
            7,
            1,
            &[
                "expected `}` closing the `{` of line 5",
                "found the end of the input",
            ],
        ),
        (true, ".reg %r1;", 6, 6, &["expected a type", "found `%r1`"]),
        (
            true,
            "%r1 = 5;",
            6,
            1,
            &["expected an instruction", "found `%r1`"],
        ),
        (
            true,
            "add.s32 %r1, , 1;",
            6,
            14,
            &["expected an operand", "found `,`"],
        ),
        (
            true,
            ".maxntid 1;",
            6,
            1,
            &[
                "expected a declaration, `.pragma` or an instruction",
                "found `.maxntid`",
            ],
        ),
        (false, ".alias a, b;", 4, 1, &["found `.alias`"]),
        (
            false,
            ".entry k() .maxntid 1 1 { }",
            4,
            23,
            &["expected `{`, `;` or a performance directive", "found `1`"],
        ),
        (
            false,
            ".entry k(.global .u32 x) { }",
            4,
            10,
            &["expected `.param` or `.reg`"],
        ),
        (
            true,
            "ld.u32 %r1, [%rd1;",
            6,
            18,
            &["expected `]` closing the address", "found `;`"],
        ),
        (
            true,
            "ld.u32 %r1, [%rd1+1.5];",
            6,
            19,
            &["an offset must be an integer"],
        ),
    ]);
    check(
        &error(".version 8\n"),
        1,
        10,
        &["expected a version `major.minor`", "found `8`"],
    );
}

#[test]
fn unrepresentable_forms_are_refused_where_they_stand() {
    check_all(&[
        (
            true,
            "mov.u32 %r1, 1;\ntex.2d.v4.f32.f32 {%f1, %f2, %f3, %f4}, [tex, {%f5, %f6}];",
            7,
            45,
            &["address with coordinates", "not supported"],
        ),
        (
            true,
            "cp.async.bulk.tensor.2d.shared::cluster.global [%r1], [%rd1, {%r2, %r3}], [%r4];",
            6,
            60,
            &["address with coordinates"],
        ),
        (
            false,
            ".global .u32 a[2], b[3];",
            4,
            20,
            &["different array sizes"],
        ),
        (
            false,
            ".global .u32 a = 1, b;",
            4,
            19,
            &["an initializer is only supported in a declaration of one name"],
        ),
        (
            true,
            ".reg .b32 %r<2000000>;",
            6,
            14,
            &["more than 1048576 registers"],
        ),
    ]);
}

#[test]
fn nesting_is_bounded() {
    let depth_ok = "{".repeat(MAX_DEPTH) + &"}".repeat(MAX_DEPTH);
    assert!(vgpu_ptx::parse(&format!("{HEAD}.entry k() {{ {depth_ok} }}")).is_ok());
    for n in [MAX_DEPTH + 1, 100_000] {
        let deep = "{".repeat(n) + &"}".repeat(n);
        let e = error(&format!("{HEAD}.entry k() {{ {deep} }}"));
        check(
            &e,
            4,
            14 + MAX_DEPTH as u32,
            &["nesting deeper than 64 levels"],
        );
        let e = error(&format!("{HEAD}.global .u32 x[1] = {deep};"));
        check(
            &e,
            4,
            21 + MAX_DEPTH as u32,
            &["nesting deeper than 64 levels"],
        );
        let e = body_error(&format!("mov.b32 {deep};"));
        check(
            &e,
            6,
            9 + MAX_DEPTH as u32,
            &["nesting deeper than 64 levels"],
        );
        let parens = "(".repeat(n);
        let e = body_error(&format!("call f, {parens};"));
        check(
            &e,
            6,
            9 + MAX_DEPTH as u32,
            &["nesting deeper than 64 levels"],
        );
    }
    // A `.section` body is skipped by counting, however deep.
    let deep = "{".repeat(100_000) + &"}".repeat(100_000);
    assert!(vgpu_ptx::parse(&format!("{HEAD}.section .debug_info {deep}")).is_ok());
}
