//! The parser never panics: arbitrary text, soups of PTX tokens and mutated real PTX all
//! end in a module or in an error that points inside the text.

use std::path::Path;

use proptest::prelude::*;

/// Parses `text`; an error must name a line and column that exist.
fn parse_checked(text: &str) {
    if let Err(e) = vgpu_ptx::parse(text) {
        let lines = text.split('\n').count() as u32;
        assert!(e.line >= 1 && e.line <= lines, "{e} (of {lines} lines)");
        let line = text.split('\n').nth(e.line as usize - 1).unwrap_or("");
        assert!(
            e.column >= 1 && e.column <= line.chars().count() as u32 + 1,
            "{e}: {line:?}"
        );
        assert!(!e.message.is_empty());
    }
}

fn samples() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ptx"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

const TOKENS: &[&str] = &[
    ".version 8.0",
    ".target sm_80",
    ".entry",
    ".func",
    ".visible",
    ".extern",
    ".global",
    ".shared",
    ".reg",
    ".param",
    ".local",
    ".const",
    ".align",
    "8",
    ".b32",
    ".u64",
    ".pred",
    ".v4",
    "%r<4>",
    "%r1",
    "%p1",
    "%tid.x",
    "_",
    "k",
    "sym",
    "$L1",
    "generic",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ";",
    ":",
    "+",
    "-",
    "!",
    "@",
    "|",
    "<",
    ">",
    "=",
    "0x10",
    "017",
    "0b11",
    "0f3F800000",
    "0d3FF0000000000000",
    "1.5",
    ".5",
    "-1",
    "ld",
    "st",
    "mov",
    "call",
    ".sync",
    ".L1::no_allocate",
    "\"s\"",
    ".pragma",
    ".loc 1 2 3",
    ".file 1 \"f\"",
    "\n",
    ".section",
    ".maxntid",
    ".noreturn",
    ".callprototype",
    ".branchtargets",
    "/*",
    "*/",
    "//",
    ".ptr",
    ".attribute",
    ".managed",
    "[%rd1+-4]",
    "{%f1, %f2}",
    "é",
];

/// A mutation of a text: at a fraction of its length, delete, insert, duplicate or cut.
#[derive(Clone, Debug)]
enum Mutation {
    Delete(f64, usize),
    Insert(f64, String),
    Duplicate(f64, usize),
    Truncate(f64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop::sample::select(TOKENS).prop_map(String::from);
    prop_oneof![
        (0.0..1.0f64, 1..40usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (0.0..1.0f64, prop_oneof![token, any::<String>()])
            .prop_map(|(at, s)| Mutation::Insert(at, s)),
        (0.0..1.0f64, 1..200usize).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        (0.0..1.0f64).prop_map(Mutation::Truncate),
    ]
}

/// The char boundary at or before `fraction` of `text`.
fn boundary(text: &str, fraction: f64) -> usize {
    let mut i = ((text.len() as f64) * fraction) as usize;
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &mut String, m: &Mutation) {
    let end_of = |text: &str, at: usize, n: usize| {
        let mut end = (at + n).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        end
    };
    match m {
        Mutation::Delete(at, n) => {
            let at = boundary(text, *at);
            let end = end_of(text, at, *n);
            text.replace_range(at..end, "");
        }
        Mutation::Insert(at, s) => text.insert_str(boundary(text, *at), s),
        Mutation::Duplicate(at, n) => {
            let at = boundary(text, *at);
            let copy = text[at..end_of(text, at, *n)].to_string();
            text.insert_str(at, &copy);
        }
        Mutation::Truncate(at) => text.truncate(boundary(text, *at)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text(text in any::<String>()) {
        parse_checked(&text);
    }

    #[test]
    fn ptx_looking_bytes(text in "[ -~\n\t]{0,300}") {
        parse_checked(&text);
    }

    #[test]
    fn token_soup(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..300)) {
        parse_checked(&tokens.join(" "));
        parse_checked(&tokens.concat());
    }

    #[test]
    fn mutated_samples(index in any::<prop::sample::Index>(), mutations in prop::collection::vec(mutation(), 1..6)) {
        thread_local!(static SAMPLES: Vec<String> = samples());
        let mut text = SAMPLES.with(|s| s[index.index(s.len())].clone());
        for m in &mutations {
            apply(&mut text, m);
        }
        parse_checked(&text);
    }
}
