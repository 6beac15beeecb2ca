//! `vgpu_ptx::lazy`: a module whose kernels are parsed and checked at their first use gives
//! the kernels, refusals and variables that loading it whole gives.

use vgpu_ptx::lazy::LazyProgram;
use vgpu_ptx::LoadError;

const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

/// Kernels whose bodies hold what the scan that skips them must read as the lexer does:
/// comments and strings with braces and line ends in them, nested blocks, a function they
/// call, module variables, and a kernel the checker refuses.
fn module() -> String {
    format!(
        "{HEADER}
.global .align 4 .u32 table[4] = {{1, 2, 3, 4}};
.shared .align 4 .b8 scratch[64];
.extern .func (.param .b32 r) vprintf(.param .b64 f, .param .b64 a);

.func (.param .b32 out) twice(.param .b32 x)
{{
    .reg .b32 %t<2>;
    ld.param.b32 %t0, [x];
    add.s32 %t1, %t0, %t0;
    st.param.b32 [out], %t1;
    ret;
}}

.visible .entry first(.param .u64 p)
{{
    // a comment with a closing brace }}
    .reg .b32 %r<4>;
    .reg .b64 %rd<2>;
    /* a block comment
       over lines, with a closing brace }} */
    ld.param.u64 %rd0, [p];
    ld.global.u32 %r0, [table+4];
    {{
        .reg .b32 inner;
        add.s32 inner, %r0, 1;
        mov.u32 %r1, inner;
    }}
    .pragma \"nounroll
}}\";
    {{
        .param .b32 a;
        .param .b32 r;
        st.param.b32 [a], %r1;
        call.uni (r), twice, (a);
        ld.param.b32 %r2, [r];
    }}
    st.shared.u32 [scratch], %r2;
    st.global.u32 [%rd0], %r2;
    ret;
}}

.visible .entry refused()
{{
    .reg .b32 %r<2>;
    bogus.op.u32 %r0, %r1;
    ret;
}}

// a }} between kernels
.visible .entry second(.param .u32 n)
{{
    .reg .pred %p<2>;
    .reg .b32 %r<3>;
    ld.param.u32 %r0, [n];
    mov.u32 %r1, %tid.x;
    setp.ge.u32 %p0, %r1, %r0;
    @%p0 bra DONE;
    add.u32 %r2, %r1, 1;
DONE:
    ret;
}}
"
    )
}

#[test]
fn kernels_checked_on_first_use_are_those_of_a_whole_load() {
    let text = module();
    let whole = vgpu_ptx::load(&text).expect("the module loads");
    let lazy = LazyProgram::new(&text).expect("the module indexes");
    assert_eq!(lazy.globals, whole.globals);
    let mut names: Vec<&str> = lazy.kernel_names().collect();
    names.sort_unstable();
    assert_eq!(names, ["first", "refused", "second"]);
    for name in ["first", "second"] {
        let k = lazy
            .kernel(name)
            .expect("a kernel")
            .as_ref()
            .expect("checked");
        // The same code with the same lines: the skipped bodies kept their line numbers.
        assert_eq!(Some(k), whole.kernels.get(name), "{name}");
    }
    match lazy.kernel("refused") {
        Some(Err(LoadError::Lower(e))) => assert_eq!(Some(e), whole.refused.get("refused")),
        other => panic!("refused: {other:?}"),
    }
    assert!(lazy.kernel("twice").is_none(), "a function is not a kernel");
    assert!(lazy.kernel("none").is_none());
    assert!(!lazy.has_kernel("twice") && lazy.has_kernel("second"));
}

/// A kernel whose body does not parse is refused alone, with the error a whole parse gives;
/// the module's other kernels run.
#[test]
fn a_body_that_does_not_parse_refuses_its_kernel_only() {
    let bad =
        ".visible .entry broken()\n{\n    .reg .b32 %r<2>;\n    add.s32 %r0, , %r1;\n    ret;\n}\n";
    let text = format!("{}{bad}", module());
    let whole = vgpu_ptx::load(&text).expect_err("a whole load fails");
    let lazy = LazyProgram::new(&text).expect("the module indexes");
    match lazy.kernel("broken") {
        Some(Err(e @ LoadError::Parse(_))) => assert_eq!(e, &whole),
        other => panic!("broken: {other:?}"),
    }
    assert!(matches!(lazy.kernel("second"), Some(Ok(_))));
}

/// What the module scope and the scan cannot read fails the whole module, as a whole parse
/// does.
#[test]
fn unclosed_bodies_and_module_errors_fail_the_module() {
    for text in [
        format!("{HEADER}.visible .entry k()\n{{\n    ret;\n"),
        format!("{HEADER}.visible .entry k()\n{{\n    /* never closed }}\n"),
        format!("{HEADER}.visible .entry k()\n{{\n    .pragma \"}}\n"),
        format!("{HEADER}.bogus;\n.visible .entry k()\n{{\n    ret;\n}}\n"),
    ] {
        assert!(LazyProgram::new(&text).is_err(), "{text}");
        assert!(vgpu_ptx::load(&text).is_err(), "{text}");
    }
    // A module-scope variable the checker cannot place fails both the same way.
    let text = format!("{HEADER}.local .u32 x;\n.visible .entry k()\n{{\n    ret;\n}}\n");
    assert_eq!(LazyProgram::new(&text).err(), vgpu_ptx::load(&text).err());
}

/// A kernel's body is bounded at its first use as a whole load bounds the module: more
/// register names than a parse may expand to refuse that kernel, and the others run.
#[test]
fn hostile_bodies_are_refused_at_first_use() {
    let text = format!(
        "{HEADER}.visible .entry many() {{ .reg .b32 %a<1048576>; .reg .b32 %b<1048576>; \
         .reg .b32 %c<1048576>; ret; }}\n.visible .entry fine() {{ ret; }}\n"
    );
    let lazy = LazyProgram::new(&text).expect("the module indexes");
    match lazy.kernel("many") {
        Some(Err(e)) => assert!(e.to_string().contains("registers in one module"), "{e}"),
        other => panic!("many: {other:?}"),
    }
    assert!(matches!(lazy.kernel("fine"), Some(Ok(_))));
}
