//! PTX text: the `.target` sm, the `.entry` kernels with their parameter layouts (natural or
//! explicit `.align` alignment), launch bounds and static shared memory, and the `.global` /
//! `.const` globals.

use crate::error::{malformed, ImageError};
use crate::read::clamp_u32;
use crate::{GlobalInfo, KernelInfo, ParamLayout};

pub(crate) struct Ptx {
    pub(crate) target_sm: Option<u32>,
    pub(crate) kernels: Vec<KernelInfo>,
    pub(crate) globals: Vec<GlobalInfo>,
}

/// The PTX text of an image: up to the first NUL, UTF-8, with a `.version` directive.
pub(crate) fn ptx_text(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = std::str::from_utf8(bytes.get(..end)?).ok()?;
    text.contains(".version").then_some(text)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    Word(&'a str),
    Punct(char),
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.' | b'%')
}

/// The token at byte `i` of `text` (after blanks and comments, which are skipped, as are
/// string literals), and the byte after it; `None` at the end.
fn next_token(text: &str, mut i: usize) -> (Option<Tok<'_>>, usize) {
    let b = text.as_bytes();
    while let Some(&c) = b.get(i) {
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && matches!(b.get(i + 1), Some(b'/' | b'*')) {
            i = skip_comment(b, i);
        } else if c == b'"' {
            i += 1;
            while b.get(i).is_some_and(|&c| c != b'"') {
                i += if b.get(i) == Some(&b'\\') { 2 } else { 1 };
            }
            i += 1;
        } else if is_word(c) {
            let start = i;
            while b.get(i).is_some_and(|&c| is_word(c)) {
                i += 1;
            }
            return (text.get(start..i).map(Tok::Word), i);
        } else {
            // Punctuation, or any other (possibly multi-byte) character.
            let ch = text.get(i..).and_then(|s| s.chars().next()).unwrap_or('?');
            return (Some(Tok::Punct(ch)), i + ch.len_utf8().max(1));
        }
    }
    (None, i)
}

/// Tokenize PTX: words (directives, identifiers, numbers) and punctuation; comments and
/// string literals are dropped. Of what a top-level `{ }` holds (a body, an initializer),
/// only its `.shared` declarations are kept (with an `.extern` before them), between its
/// outer braces: nothing else there is read, and a body is most of a module's text.
fn tokenize(text: &str) -> Vec<Tok<'_>> {
    let mut toks = Vec::new();
    let mut i = 0usize;
    loop {
        let (t, next) = next_token(text, i);
        let Some(t) = t else {
            return toks;
        };
        toks.push(t.clone());
        i = next;
        if t == Tok::Punct('{') {
            i = braced(text, i, &mut toks);
        }
    }
}

/// The byte after the comment at `i` (`//` to its line's end, `/* */` past its `*/`), as
/// [`next_token`] skips it.
fn skip_comment(b: &[u8], mut i: usize) -> usize {
    if b.get(i + 1) == Some(&b'/') {
        while b.get(i).is_some_and(|&c| c != b'\n') {
            i += 1;
        }
        return i;
    }
    i += 2;
    while i < b.len() && !(b.get(i) == Some(&b'*') && b.get(i + 1) == Some(&b'/')) {
        i += 1;
    }
    i.saturating_add(2)
}

/// The word that ends, blanks aside, just before byte `i` of `text`.
fn preceding_word(text: &str, i: usize) -> Option<&str> {
    let before = text.get(..i)?.trim_end();
    let start = before
        .bytes()
        .rposition(|c| !is_word(c))
        .map_or(0, |p| p + 1);
    before.get(start..).filter(|w| !w.is_empty())
}

/// Scans a top-level group from just after its `{` to just after its `}`, pushing the
/// tokens of each `.shared` declaration in it and then the `}`; returns where it ends.
fn braced<'a>(text: &'a str, mut i: usize, toks: &mut Vec<Tok<'a>>) -> usize {
    let b = text.as_bytes();
    let mut depth = 1usize;
    while let Some(&c) = b.get(i) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    toks.push(Tok::Punct('}'));
                    return i + 1;
                }
            }
            b'/' if matches!(b.get(i + 1), Some(b'/' | b'*')) => {
                i = skip_comment(b, i);
                continue;
            }
            b'"' => {
                i += 1;
                while b.get(i).is_some_and(|&c| c != b'"') {
                    i += if b.get(i) == Some(&b'\\') { 2 } else { 1 };
                }
            }
            b'.' if (i == 0 || !is_word(b[i - 1]))
                && text.get(i..).is_some_and(|s| s.starts_with(".shared"))
                && !b.get(i + 7).is_some_and(|&c| is_word(c)) =>
            {
                if preceding_word(text, i) == Some(".extern") {
                    toks.push(Tok::Word(".extern"));
                }
                // The declaration, to its `;` (or the group's end).
                loop {
                    let (t, next) = next_token(text, i);
                    match t {
                        None => return next,
                        Some(Tok::Punct('{' | '}')) => break,
                        Some(t) => {
                            i = next;
                            let end = t == Tok::Punct(';');
                            toks.push(t);
                            if end {
                                break;
                            }
                        }
                    }
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Byte size (= natural alignment) of a PTX fundamental type directive.
fn ptx_type_size(t: &str) -> Option<u32> {
    Some(match t {
        ".b8" | ".u8" | ".s8" | ".pred" | ".e4m3" | ".e5m2" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" | ".e4m3x2" | ".e5m2x2" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" | ".tf32" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" | ".texref" | ".samplerref" | ".surfref" => 8,
        ".b128" => 16,
        _ => return None,
    })
}

fn parse_int(w: &str) -> Option<u64> {
    let w = w.trim_end_matches(['U', 'u']);
    if let Some(h) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        w.parse().ok()
    }
}

/// A variable / parameter declaration: `[.align N] [.vN] .type [attrs] name [dims]`.
struct Decl<'a> {
    name: &'a str,
    align: u64,
    size: u64,
}

/// Parse the tokens of one declaration (without its state space and initializer).
fn parse_decl<'a>(toks: &[Tok<'a>], what: &str) -> Result<Decl<'a>, ImageError> {
    let mut align = None;
    let mut elem = None;
    let mut vec = 1u64;
    let mut name = None;
    let mut dims: u64 = 1;
    let mut after_ptr = false;
    let mut i = 0usize;
    while let Some(t) = toks.get(i) {
        match t {
            Tok::Word(".ptr") => after_ptr = true,
            Tok::Word(".align") => {
                let n = match toks.get(i + 1) {
                    Some(Tok::Word(w)) => parse_int(w),
                    _ => None,
                };
                let n = n.ok_or_else(|| malformed(format!("PTX {what}: bad .align")))?;
                // `.ptr .global .align N` is the pointee's alignment, not the parameter's.
                if !after_ptr {
                    align = Some(n);
                }
                i += 1;
            }
            Tok::Word(w @ (".v2" | ".v4" | ".v8")) => {
                vec = w.get(2..).and_then(parse_int).unwrap_or(1);
            }
            Tok::Word(w) if w.starts_with('.') => {
                if let Some(s) = ptx_type_size(w) {
                    elem = Some(u64::from(s));
                }
                // else: .ptr, .global/.const/... pointee attributes, linkage: ignored
            }
            Tok::Word(w) if name.is_none() => name = Some(*w),
            Tok::Punct('[') => {
                match (toks.get(i + 1), toks.get(i + 2)) {
                    (Some(Tok::Word(n)), Some(Tok::Punct(']'))) => {
                        let n = parse_int(n)
                            .ok_or_else(|| malformed(format!("PTX {what}: bad array size")))?;
                        dims = dims.saturating_mul(n);
                        i += 2;
                    }
                    (Some(Tok::Punct(']')), _) => {
                        dims = 0; // unsized (extern) array
                        i += 1;
                    }
                    _ => return Err(malformed(format!("PTX {what}: bad array declarator"))),
                }
            }
            _ => {}
        }
        i += 1;
    }
    let name = name.ok_or_else(|| malformed(format!("PTX {what}: declaration without a name")))?;
    let elem = elem.ok_or_else(|| malformed(format!("PTX {what}: no type for {name}")))?;
    let natural = elem.saturating_mul(vec);
    let size = natural.saturating_mul(dims);
    Ok(Decl {
        name,
        align: align.unwrap_or(natural).max(1),
        size,
    })
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    let a = a.max(1);
    v.checked_add(a - 1).map(|x| x / a * a)
}

/// Index just past the token that closes the bracket opened at `open` (`(`/`{`).
fn skip_group(toks: &[Tok<'_>], open: usize, l: char, r: char) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while let Some(t) = toks.get(i) {
        if *t == Tok::Punct(l) {
            depth += 1;
        } else if *t == Tok::Punct(r) {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    toks.len()
}

pub(crate) fn parse_ptx(text: &str) -> Result<Ptx, ImageError> {
    let toks = tokenize(text);
    let mut ptx = Ptx {
        target_sm: None,
        kernels: vec![],
        globals: vec![],
    };
    let mut i = 0usize;
    let mut is_extern = false;
    let mut const_bytes: u64 = 0;
    while let Some(t) = toks.get(i) {
        match t {
            Tok::Word(".target") => {
                if let Some(Tok::Word(w)) = toks.get(i + 1) {
                    let digits: String = w
                        .trim_start_matches("sm_")
                        .trim_start_matches("compute_")
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    ptx.target_sm = digits.parse().ok();
                }
                i += 1;
            }
            Tok::Word(".extern") => {
                is_extern = true;
                i += 1;
                continue;
            }
            Tok::Word(".entry") => {
                let (kernel, next) = parse_entry(&toks, i + 1)?;
                if let Some(k) = kernel.filter(|_| !is_extern) {
                    ptx.kernels.push(k);
                }
                i = next;
            }
            Tok::Word(w @ (".global" | ".const")) => {
                let end = toks
                    .iter()
                    .skip(i)
                    .position(|t| *t == Tok::Punct(';'))
                    .map_or(toks.len(), |n| i + n);
                let decl_end = toks
                    .get(i + 1..end)
                    .and_then(|d| d.iter().position(|t| *t == Tok::Punct('=')))
                    .map_or(end, |n| i + 1 + n);
                match parse_decl(toks.get(i + 1..decl_end).unwrap_or(&[]), w) {
                    Ok(d) if !is_extern && d.size > 0 => {
                        if *w == ".const" {
                            const_bytes = align_up(const_bytes, d.align)
                                .unwrap_or(u64::MAX)
                                .saturating_add(d.size);
                        }
                        ptx.globals.push(GlobalInfo {
                            name: d.name.to_string(),
                            size: d.size,
                            init: Vec::new(),
                        });
                    }
                    Ok(_) => {}
                    Err(e) => log::warn!("skipping PTX {w} declaration: {e}"),
                }
                i = end + 1;
            }
            // `.func` parameter lists and bodies, initializers: nothing to declare there.
            Tok::Punct('{') => i = skip_group(&toks, i, '{', '}'),
            Tok::Punct('(') => i = skip_group(&toks, i, '(', ')'),
            _ => i += 1,
        }
        is_extern = false;
    }
    // Like a cubin's `.nv.constant3`: the module's user constant bank.
    for k in &mut ptx.kernels {
        k.const_size_bytes = clamp_u32(const_bytes);
    }
    Ok(ptx)
}

/// Parse an `.entry` starting at its name; returns the kernel (None for a prototype) and the
/// index after it.
fn parse_entry(toks: &[Tok<'_>], start: usize) -> Result<(Option<KernelInfo>, usize), ImageError> {
    let Some(Tok::Word(name)) = toks.get(start) else {
        return Err(malformed("PTX .entry without a name"));
    };
    let mut k = KernelInfo {
        name: name.to_string(),
        params: vec![],
        param_bytes: 0,
        layout_known: true,
        max_threads_per_block: 1024,
        num_regs: 0,
        shared_size_bytes: 0,
        const_size_bytes: 0,
        local_size_bytes: 0,
    };
    let mut i = start + 1;
    if toks.get(i) == Some(&Tok::Punct('(')) {
        let close = skip_group(toks, i, '(', ')');
        let inner = toks.get(i + 1..close.saturating_sub(1)).unwrap_or(&[]);
        let mut end: u64 = 0;
        let decls = inner
            .split(|t| *t == Tok::Punct(','))
            .filter(|_| !inner.is_empty());
        for (ordinal, decl_toks) in decls.enumerate() {
            let decl_toks = match decl_toks.first() {
                Some(Tok::Word(".param")) => decl_toks.get(1..).unwrap_or(&[]),
                _ => return Err(malformed(format!("PTX {name}: parameter is not a .param"))),
            };
            let d = parse_decl(decl_toks, name)?;
            let offset = align_up(end, d.align).ok_or_else(|| malformed("PTX param overflow"))?;
            end = offset
                .checked_add(d.size)
                .ok_or_else(|| malformed("PTX param overflow"))?;
            k.params.push(ParamLayout {
                ordinal: clamp_u32(ordinal as u64),
                offset: clamp_u32(offset),
                size: clamp_u32(d.size),
            });
        }
        k.param_bytes = clamp_u32(end);
        i = close;
    }
    // Performance directives up to the body (or `;` for a prototype).
    let mut max_threads = None;
    let mut reqntid = None;
    while let Some(t) = toks.get(i) {
        match t {
            Tok::Punct(';') => return Ok((None, i + 1)),
            Tok::Punct('{') => break,
            Tok::Word(d @ (".maxntid" | ".reqntid")) => {
                let mut n: u64 = 1;
                let mut j = i + 1;
                while let Some(Tok::Word(w)) = toks.get(j) {
                    n = n.saturating_mul(parse_int(w).unwrap_or(1).max(1));
                    j += 1;
                    if toks.get(j) != Some(&Tok::Punct(',')) {
                        break;
                    }
                    j += 1;
                }
                if *d == ".maxntid" {
                    max_threads = Some(clamp_u32(n));
                } else {
                    reqntid = Some(clamp_u32(n));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(n) = max_threads.or(reqntid) {
        k.max_threads_per_block = n;
    }
    // Body: static `.shared` variables (not `.extern .shared`, which is dynamic).
    let body_end = skip_group(toks, i, '{', '}');
    let mut shared: u64 = 0;
    let mut j = i;
    while j < body_end {
        if toks.get(j) == Some(&Tok::Word(".shared"))
            && !matches!(toks.get(j.wrapping_sub(1)), Some(Tok::Word(".extern")))
        {
            let end = toks
                .iter()
                .skip(j)
                .position(|t| *t == Tok::Punct(';'))
                .map_or(body_end, |n| j + n);
            // Only declarations (`.shared .align 4 .b8 x[..];`), not `ld.shared` (one word).
            if let Ok(d) = parse_decl(toks.get(j + 1..end).unwrap_or(&[]), name) {
                shared = align_up(shared, d.align)
                    .unwrap_or(u64::MAX)
                    .saturating_add(d.size);
            }
            j = end;
        }
        j += 1;
    }
    k.shared_size_bytes = clamp_u32(shared);
    Ok((Some(k), body_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_layout_rules() {
        let ptx = r#"
            .version 8.0
            .target sm_75 // comment with .entry fake(
            .address_size 64
            /* .entry also_fake( */
            .file 1 "/tmp//x.cu"
            .extern .global .align 4 .u32 elsewhere;
            .visible .global .align 8 .v2 .f32 pair[3] = { 1.0, 2.0 };
            .const .align 4 .b8 tbl[40];
            .func (.param .b32 r) helper(.param .b32 a) { ret; }
            .visible .entry k(
                .param .u8 k_param_0,
                .param .u64 .ptr .global .align 16 k_param_1,
                .param .align 16 .b8 k_param_2[20],
                .param .v4 .u32 k_param_3,
                .param .u16 k_param_4
            )
            .reqntid 32, 2, 1
            {
                .shared .align 8 .b8 buf[10];
                .shared .align 4 .u32 one;
                .extern .shared .align 16 .b8 dyn[];
                ld.shared.u32 %r1, [one];
                { .reg .b32 %x; }
                ret;
            }
            .extern .entry proto(.param .u32 a);
            .entry noparams { ret; }
        "#;
        let p = parse_ptx(ptx).unwrap();
        assert_eq!(p.target_sm, Some(75));
        assert_eq!(p.kernels.len(), 2);
        let k = &p.kernels[0];
        assert_eq!(k.name, "k");
        let got: Vec<_> = k
            .params
            .iter()
            .map(|p| (p.ordinal, p.offset, p.size))
            .collect();
        assert_eq!(
            got,
            vec![(0, 0, 1), (1, 8, 8), (2, 16, 20), (3, 48, 16), (4, 64, 2)]
        );
        assert_eq!(k.param_bytes, 66);
        assert_eq!(k.max_threads_per_block, 64);
        assert_eq!(k.shared_size_bytes, 16);
        assert_eq!(k.const_size_bytes, 40);
        assert_eq!(p.kernels[1].name, "noparams");
        assert!(p.kernels[1].params.is_empty());
        let g: Vec<_> = p
            .globals
            .iter()
            .map(|g| (g.name.as_str(), g.size))
            .collect();
        assert_eq!(g, vec![("pair", 24), ("tbl", 40)]);
    }

    /// In a body only its `.shared` declarations are read: not those in comments or
    /// strings, nor `ld.shared`, nor the dynamic `.extern .shared`; those of nested blocks
    /// are, and braces in comments and strings do not end the body.
    #[test]
    fn bodies_are_read_for_their_shared_declarations_only() {
        let ptx = r#"
            .version 8.0
            .target sm_80
            .global .align 4 .u32 init[3] = { 1, 2, 3 };
            .visible .entry a(.param .u64 p)
            {
                // .shared .b8 commented[1000]; and a brace }
                /* .shared .b8 block[1000]; } */
                .pragma "} .shared .b8 quoted[1000];";
                .shared .align 4 .b8 one[12];
                .extern .shared .align 16 .b8 dynamic[64];
                ld.shared.u32 %r1, [one];
                { { .shared .align 8 .b8 nested[8]; } }
                .shared.u32 tight;
                ret;
            }
            .visible .entry b() .maxntid 128 { .shared .b8 x[3]; ret; }
            .global .u32 after;
        "#;
        let p = parse_ptx(ptx).unwrap();
        let got: Vec<_> = p
            .kernels
            .iter()
            .map(|k| {
                (
                    k.name.as_str(),
                    k.shared_size_bytes,
                    k.max_threads_per_block,
                )
            })
            .collect();
        assert_eq!(got, vec![("a", 24, 1024), ("b", 3, 128)]);
        let g: Vec<_> = p.globals.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(g, vec!["init", "after"]);
    }
}
