//! PTX text to the syntax tree of [`crate::ast`]: a hand-written lexer and a
//! recursive-descent parser, one pass over the text that looks one token past the current
//! one.
//!
//! [`parse`] takes a whole module as nvcc (12, 13) and clang (16) emit it, PTX ISA 7.x to
//! 9.x, and returns an [`ast::Module`] or the first [`ParseError`], which names the 1-based
//! line and column, what was expected and what was found. It never panics, whatever the
//! input, and nesting (`{ }` blocks, braced initializers, vector and list operands) deeper
//! than [`MAX_DEPTH`] levels is an error rather than a deep recursion.
//!
//! # How the text maps onto the tree
//!
//! * `.version`, `.target` (a comma list) and `.address_size` fill [`ast::Module`];
//!   module-scope variables go to `globals`, `.entry`/`.func` (declarations included) to
//!   `functions`, both in the order of the text.
//! * A parameterized register declaration `.reg .b32 %r<13>;` is expanded to the names
//!   `%r0` ... `%r12`.
//! * A name that starts with `%`, and `_`, are [`Operand::Reg`]; so is a name without `%`
//!   that a `.reg` declaration of an enclosing scope (or a `.reg` parameter of the function)
//!   declared, as inline assembly does (`.reg .pred p; setp.ne.b32 p, %r1, 0;`). Any other
//!   bare name is an [`Operand::Symbol`] (a variable, a label, a function), or
//!   [`Operand::SymbolOffset`] when a constant follows (`sym+8`, `sym-4`).
//! * Literals: decimal, hex `0x`, octal `0`, binary `0b` integers (a `U` suffix is
//!   dropped; a leading `-` negates), `0f`/`0d` float bits (`-0f3F800000` flips the sign
//!   bit), decimal floats (`1.5`, `2e-3`, `.5`).
//! * A register's component is part of its name: `%tid.x`, `%ctaid.y`, `%v.x`.
//! * The destination pair `d|p` of `shfl.sync` (and of the other instructions that write a
//!   value and a predicate) is an [`Operand::Vector`] of the two registers `[d, p]`.
//! * Addresses: `[%rd1]`, `[%rd1+16]`, `[%rd1+-4]`, `[%rd1-4]`, `[sym+28]`, `[0x100]`; the
//!   constant terms are summed into `offset`.
//! * `call (r), f, (a, b), prototype;`: the parenthesized groups are [`Operand::List`].
//! * `.pragma "nounroll";` in a body is [`Statement::Pragma`] with the text between the
//!   quotes (several strings are joined with `", "`).
//! * `label: .branchtargets L1, L2;` is the [`Statement::Label`] followed by an
//!   [`Instruction`] whose opcode is `.branchtargets` (with its dot, so that it is never
//!   taken for a real opcode) and whose operands are the [`Operand::Symbol`]s of the targets.
//!
//! # What is dropped
//!
//! The debug directives `.file` and `.loc` (to the end of their line), `.section` with its
//! braced body, `.pragma` at module scope or among a function's performance directives, the
//! pointer attributes of a kernel parameter (`.ptr .global .align 16`: only a hint), a
//! variable's `.attribute(...)` (`.managed`: the memory is the same to this machine), and
//! the signature of `label: .callprototype ...;` (the label stays; a `call` carries its own
//! arguments).
//!
//! # What is refused
//!
//! Every form the tree cannot hold is a [`ParseError`] at its place: an address with a
//! coordinate vector (`tex.2d.v4.f32.f32 {..}, [tex, {%f1, %f2}];`, `suld`, the tensor
//! copies of `cp.async.bulk.tensor`), several names of one declaration with different array
//! sizes or with initializers, a parameterized register declaration of more than 2^20
//! registers (or more than 2^21 in a whole module), integers beyond 64 bits, `.alias` and
//! any other directive not named here, and of course anything that is not PTX.

use std::collections::HashSet;

use crate::ast::{
    self, Function, InitValue, Initializer, Instruction, Linkage, Operand, Space, Statement,
    Variable,
};

/// How deeply `{ }` blocks, braced initializers and vector or list operands may nest.
pub const MAX_DEPTH: usize = 64;

/// The most registers one parameterized declaration (`%r<N>`) may declare.
const MAX_PARAMETERIZED: u64 = 1 << 20;
/// Most register names all parameterized declarations of a module may expand to (the
/// largest module of a registry ggml-cuda build declares about 440,000).
pub const MAX_EXPANDED_REGISTERS: u64 = 1 << 21;

/// Performance directives that may follow a function's signature.
const PERFORMANCE_DIRECTIVES: &[&str] = &[
    "maxntid",
    "reqntid",
    "minnctapersm",
    "maxnctapersm",
    "maxnreg",
    "maxclusterrank",
    "noreturn",
    "explicitcluster",
    "reqnctapercluster",
    "blocksareclusters",
    "abi_preserve",
    "abi_preserve_control",
];

/// Why a text is not a PTX module this parser takes: where, and what was expected there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// Line of the offending token (1-based).
    pub line: u32,
    /// Column of its first character (1-based, in characters).
    pub column: u32,
    /// What was expected and what was found (`expected `;` ..., found `}``).
    pub message: String,
}

/// Parses a whole PTX module.
pub fn parse(text: &str) -> Result<ast::Module, ParseError> {
    Parser::new(text).module()
}

/// Where a kernel's body lies in the text of its module: its `{` and its `}` (bytes) and the
/// line of the `{`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodySpan {
    open: usize,
    close: usize,
    line: u32,
}

/// Parses a module as [`parse`] does, but skips the body of each kernel (`.entry`) with a
/// scan for its closing brace that reads only comments, strings and braces: those kernels
/// have no `body` in the tree, and the result says where each body lies, by the kernel's
/// index in `functions`, for [`body`] to parse it when it is needed. Functions (`.func`)
/// are parsed whole. Every other error is found as [`parse`] finds it.
pub fn parse_skipping_kernels(
    text: &str,
) -> Result<(ast::Module, Vec<(usize, BodySpan)>), ParseError> {
    let mut p = Parser::new(text);
    p.skip_kernels = true;
    p.module_and_skipped()
}

/// Parses the body of kernel `f`, which [`parse_skipping_kernels`] skipped at `span` of
/// `text` (the same text). Its lines and errors are those [`parse`] gives it; an error too
/// if the body does not end at the `}` the scan found.
pub fn body(text: &str, f: &Function, span: BodySpan) -> Result<Vec<Statement>, ParseError> {
    let mut p = Parser::at(text, span.open, span.line);
    if !p.is(b'{') {
        return Err(p.unexpected("`{` opening the kernel's body"));
    }
    let open = p.bump();
    p.enter_function(f);
    let body = p.statements(open)?;
    // The token after the `}` the scan found is where this parse must have stopped. The
    // scan reads comments, strings and line ends as the lexer does, so this holds for any
    // text; the text comes from a guest, and a body that ran past its scan would be
    // refused rather than read from the wrong place.
    let after = Lexer {
        bytes: text.as_bytes(),
        pos: span.close.saturating_add(1),
        line: 0,
    }
    .clone_next();
    if p.tok.start != after {
        return Err(p.error(
            open,
            "the body's braces do not match the scan that skipped it".to_string(),
        ));
    }
    Ok(body)
}

type Result<T, E = ParseError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------

/// What the lexer could not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LexError {
    Char,
    Comment,
    String,
    Number,
    Range,
    Dot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A name: `foo`, `%r1`, `$L__BB0_2`, `_`.
    Ident,
    /// A dotted word: `.global`, `.L1::no_allocate`, `.2d` (the text keeps the dot).
    Dot,
    /// An integer literal; its value is in `Token::value`.
    Int,
    /// `0fXXXXXXXX`; the bits are in `Token::value`.
    F32,
    /// `0dXXXXXXXXXXXXXXXX`; the bits are in `Token::value`.
    F64,
    /// A decimal float literal (its text).
    Float,
    /// A string literal (the text keeps the quotes).
    Str,
    /// One punctuation character.
    Punct(u8),
    Eof,
    Bad(LexError),
}

#[derive(Clone, Copy, Debug)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    line: u32,
    value: u64,
}

struct Lexer<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: u32,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

impl<'a> Lexer<'a> {
    /// Where the next token starts.
    fn clone_next(mut self) -> usize {
        self.next().start
    }

    fn at(&self, i: usize) -> u8 {
        self.bytes.get(i).copied().unwrap_or(0)
    }

    fn skip_name(&mut self) {
        while is_name_byte(self.at(self.pos)) {
            self.pos += 1;
        }
    }

    /// Skips blanks and comments; an unterminated `/*` comment is returned as an error
    /// token.
    fn skip_blanks(&mut self) -> Option<Token> {
        loop {
            match self.at(self.pos) {
                b'\n' => {
                    self.line = self.line.saturating_add(1);
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' | 0x0b | 0x0c => self.pos += 1,
                b'/' if self.at(self.pos + 1) == b'/' => {
                    let rest = &self.bytes[self.pos..];
                    self.pos += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                }
                b'/' if self.at(self.pos + 1) == b'*' => {
                    let (start, line) = (self.pos, self.line);
                    self.pos += 2;
                    loop {
                        match self.bytes.get(self.pos) {
                            None => {
                                return Some(self.bad(LexError::Comment, start, line));
                            }
                            Some(b'*') if self.at(self.pos + 1) == b'/' => {
                                self.pos += 2;
                                break;
                            }
                            Some(b'\n') => self.line = self.line.saturating_add(1),
                            Some(_) => {}
                        }
                        self.pos += 1;
                    }
                }
                _ => return None,
            }
        }
    }

    /// An error token from `start`; the lexer stops there (what follows reads as the end).
    fn bad(&mut self, error: LexError, start: usize, line: u32) -> Token {
        let end = self.pos.max(start);
        self.pos = self.bytes.len();
        Token {
            kind: Kind::Bad(error),
            start,
            end,
            line,
            value: 0,
        }
    }

    fn next(&mut self) -> Token {
        if let Some(bad) = self.skip_blanks() {
            return bad;
        }
        let (start, line) = (self.pos, self.line);
        let Some(&b) = self.bytes.get(start) else {
            return Token {
                kind: Kind::Eof,
                start,
                end: start,
                line,
                value: 0,
            };
        };
        self.pos += 1;
        let (kind, value) = match b {
            b'a'..=b'z' | b'A'..=b'Z' => {
                self.skip_name();
                (Kind::Ident, 0)
            }
            b'_' | b'$' | b'%' => {
                self.skip_name();
                if self.pos == start + 1 && b != b'_' {
                    return self.bad(LexError::Char, start, line);
                }
                (Kind::Ident, 0)
            }
            b'.' => {
                if !is_name_byte(self.at(self.pos)) {
                    return self.bad(LexError::Dot, start, line);
                }
                self.skip_name();
                // Modifiers such as `.L1::no_allocate` and `.mbarrier::complete_tx::bytes`.
                while self.at(self.pos) == b':'
                    && self.at(self.pos + 1) == b':'
                    && is_name_byte(self.at(self.pos + 2))
                {
                    self.pos += 2;
                    self.skip_name();
                }
                (Kind::Dot, 0)
            }
            b'0'..=b'9' => match self.number(start) {
                Ok(kv) => kv,
                Err(e) => {
                    // The whole malformed word, for the message.
                    self.skip_name();
                    return self.bad(e, start, line);
                }
            },
            b'"' => loop {
                match self.bytes.get(self.pos) {
                    None => return self.bad(LexError::String, start, line),
                    Some(b'"') => {
                        self.pos += 1;
                        break (Kind::Str, 0);
                    }
                    Some(b'\\') => {
                        if self.at(self.pos + 1) == b'\n' {
                            self.line = self.line.saturating_add(1);
                        }
                        self.pos += 2;
                    }
                    Some(b'\n') => {
                        self.line = self.line.saturating_add(1);
                        self.pos += 1;
                    }
                    Some(_) => self.pos += 1,
                }
            },
            b',' | b';' | b':' | b'{' | b'}' | b'(' | b')' | b'[' | b']' | b'+' | b'-' | b'!'
            | b'@' | b'|' | b'<' | b'>' | b'=' => (Kind::Punct(b), 0),
            _ => {
                self.pos = start;
                return self.bad(LexError::Char, start, line);
            }
        };
        Token {
            kind,
            start,
            end: self.pos,
            line,
            value,
        }
    }

    /// Reads `digits` in `radix` from `self.pos`; their value, or `Range` beyond 64 bits.
    fn digits(&mut self, radix: u32) -> Result<(u64, usize), LexError> {
        let (mut value, mut count) = (0u64, 0usize);
        while let Some(d) = (self.at(self.pos) as char).to_digit(radix) {
            value = value
                .checked_mul(u64::from(radix))
                .and_then(|v| v.checked_add(u64::from(d)))
                .ok_or(LexError::Range)?;
            count += 1;
            self.pos += 1;
        }
        Ok((value, count))
    }

    /// A number starting at `start` (its first digit already consumed).
    fn number(&mut self, start: usize) -> Result<(Kind, u64), LexError> {
        let second = self.at(self.pos);
        let result = if self.at(start) == b'0' && matches!(second, b'x' | b'X' | b'b' | b'B') {
            self.pos += 1;
            let radix = if matches!(second, b'x' | b'X') { 16 } else { 2 };
            match self.digits(radix)? {
                (_, 0) => Err(LexError::Number),
                (v, _) => Ok((Kind::Int, v)),
            }
        } else if self.at(start) == b'0' && matches!(second, b'f' | b'F' | b'd' | b'D') {
            self.pos += 1;
            let (kind, want) = if matches!(second, b'f' | b'F') {
                (Kind::F32, 8)
            } else {
                (Kind::F64, 16)
            };
            match self.digits(16)? {
                (v, n) if n == want => return self.end_number(Ok((kind, v)), false),
                _ => Err(LexError::Number),
            }
        } else {
            while self.at(self.pos).is_ascii_digit() {
                self.pos += 1;
            }
            let after = self.at(self.pos);
            let exponent =
                |l: &Self, i: usize| matches!(l.at(i), b'e' | b'E') && l.exponent_digits(i + 1);
            if (after == b'.' && self.at(self.pos + 1).is_ascii_digit()) || exponent(self, self.pos)
            {
                if after == b'.' {
                    self.pos += 1;
                    while self.at(self.pos).is_ascii_digit() {
                        self.pos += 1;
                    }
                }
                if exponent(self, self.pos) {
                    self.pos += 1;
                    if matches!(self.at(self.pos), b'+' | b'-') {
                        self.pos += 1;
                    }
                    while self.at(self.pos).is_ascii_digit() {
                        self.pos += 1;
                    }
                }
                return self.end_number(Ok((Kind::Float, 0)), false);
            }
            // A leading zero makes it octal.
            let octal = self.at(start) == b'0' && self.pos > start + 1;
            let end = self.pos;
            self.pos = if octal { start + 1 } else { start };
            match self.digits(if octal { 8 } else { 10 })? {
                (v, _) if self.pos == end => Ok((Kind::Int, v)),
                _ => Err(LexError::Number),
            }
        };
        self.end_number(result, true)
    }

    fn exponent_digits(&self, i: usize) -> bool {
        let i = if matches!(self.at(i), b'+' | b'-') {
            i + 1
        } else {
            i
        };
        self.at(i).is_ascii_digit()
    }

    /// Takes an integer's `U` suffix and refuses a number glued to a name.
    fn end_number(
        &mut self,
        result: Result<(Kind, u64), LexError>,
        suffix: bool,
    ) -> Result<(Kind, u64), LexError> {
        if suffix && result.is_ok() && matches!(self.at(self.pos), b'U' | b'u') {
            self.pos += 1;
        }
        if is_name_byte(self.at(self.pos)) {
            self.skip_name();
            return Err(LexError::Number);
        }
        result
    }
}

// ---------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------

/// A literal value, before it becomes an operand or an initializer.
enum Literal {
    Int(i128),
    F32(u32),
    F64(u64),
    Float(f64),
}

/// Where a declaration stands: what it may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DeclPlace {
    /// Module scope or a body: several names, initializers, `.attribute`.
    Scope,
    /// A function's parameter: one name, pointer attributes.
    Param,
}

struct Parser<'a> {
    src: &'a str,
    lexer: Lexer<'a>,
    tok: Token,
    ahead: Token,
    depth: usize,
    /// Per open scope, the names without `%` that its `.reg` declarations declared.
    bare_regs: Vec<HashSet<String>>,
    /// Register names parameterized declarations have expanded to so far.
    expanded: u64,
    /// Whether kernels' bodies are skipped ([`parse_skipping_kernels`]).
    skip_kernels: bool,
    /// The body the last [`Parser::function`] skipped.
    skipped: Option<BodySpan>,
    /// The bodies skipped so far, by the index of their kernel in the module's functions.
    spans: Vec<(usize, BodySpan)>,
}

fn space_of(name: &str) -> Option<Space> {
    Some(match name {
        ".reg" => Space::Reg,
        ".sreg" => Space::Sreg,
        ".const" => Space::Const,
        ".global" => Space::Global,
        ".local" => Space::Local,
        ".param" => Space::Param,
        ".shared" => Space::Shared,
        ".tex" => Space::Tex,
        _ => return None,
    })
}

fn linkage_of(name: &str) -> Option<Linkage> {
    Some(match name {
        ".visible" => Linkage::Visible,
        ".extern" => Linkage::Extern,
        ".weak" => Linkage::Weak,
        ".common" => Linkage::Common,
        _ => return None,
    })
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self::at(src, 0, 1)
    }

    /// A parser of `src` from byte `pos`, which is on line `line`.
    fn at(src: &'a str, pos: usize, line: u32) -> Self {
        let mut lexer = Lexer {
            bytes: src.as_bytes(),
            pos,
            line,
        };
        let tok = lexer.next();
        let ahead = lexer.next();
        Parser {
            src,
            lexer,
            tok,
            ahead,
            depth: 0,
            bare_regs: Vec::new(),
            expanded: 0,
            skip_kernels: false,
            skipped: None,
            spans: Vec::new(),
        }
    }

    // --- tokens -----------------------------------------------------------------------

    fn bump(&mut self) -> Token {
        let t = self.tok;
        self.tok = self.ahead;
        self.ahead = self.lexer.next();
        t
    }

    fn text(&self, t: Token) -> &'a str {
        self.src.get(t.start..t.end).unwrap_or("")
    }

    fn is(&self, p: u8) -> bool {
        self.tok.kind == Kind::Punct(p)
    }

    fn eat(&mut self, p: u8) -> bool {
        let hit = self.is(p);
        if hit {
            self.bump();
        }
        hit
    }

    /// The current token's text when it is a dotted word (`.global`), else "".
    fn dot(&self) -> &'a str {
        if self.tok.kind == Kind::Dot {
            self.text(self.tok)
        } else {
            ""
        }
    }

    fn expect(&mut self, p: u8, context: &str) -> Result<Token> {
        if self.is(p) {
            Ok(self.bump())
        } else {
            Err(self.unexpected(&format!("`{}` {context}", p as char)))
        }
    }

    fn name(&mut self, what: &str) -> Result<&'a str> {
        if self.tok.kind == Kind::Ident {
            let t = self.bump();
            Ok(self.text(t))
        } else {
            Err(self.unexpected(what))
        }
    }

    fn int(&mut self, what: &str) -> Result<u64> {
        if self.tok.kind == Kind::Int {
            Ok(self.bump().value)
        } else {
            Err(self.unexpected(what))
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let t = self.tok;
        let v = self.int(what)?;
        u32::try_from(v).map_err(|_| self.error(t, format!("{what} out of range: {v}")))
    }

    /// Enters one more level of nesting, or refuses beyond [`MAX_DEPTH`].
    fn enter(&mut self) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(
                self.tok,
                format!("nesting deeper than {MAX_DEPTH} levels is not supported"),
            ));
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    // --- errors -----------------------------------------------------------------------

    fn error(&self, t: Token, message: String) -> ParseError {
        let before = self.src.get(..t.start).unwrap_or(self.src);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).unwrap_or("").chars().count();
        ParseError {
            line: t.line,
            column: u32::try_from(column).unwrap_or(u32::MAX).saturating_add(1),
            message,
        }
    }

    /// "expected {expected}, found {the current token}", or what the lexer could not read.
    fn unexpected(&self, expected: &str) -> ParseError {
        let t = self.tok;
        let text = self.text(t);
        let message = match t.kind {
            Kind::Bad(e) => {
                let what = match e {
                    LexError::Char => {
                        let c = self.src.get(t.start..).and_then(|s| s.chars().next());
                        format!("unexpected character {:?}", c.unwrap_or('\0'))
                    }
                    LexError::Comment => "unterminated `/*` comment".to_string(),
                    LexError::String => "unterminated string".to_string(),
                    LexError::Number => format!("malformed number `{}`", short(text)),
                    LexError::Range => format!("number `{}` does not fit in 64 bits", short(text)),
                    LexError::Dot => "a `.` without a name after it".to_string(),
                };
                format!("expected {expected}, found {what}")
            }
            Kind::Eof => format!("expected {expected}, found the end of the input"),
            Kind::Str => format!("expected {expected}, found the string {}", short(text)),
            _ => format!("expected {expected}, found `{}`", short(text)),
        };
        self.error(t, message)
    }

    // --- module -----------------------------------------------------------------------

    fn module(self) -> Result<ast::Module> {
        self.module_and_skipped().map(|(m, _)| m)
    }

    /// The module, and where the bodies it skipped lie.
    fn module_and_skipped(mut self) -> Result<(ast::Module, Vec<(usize, BodySpan)>)> {
        let mut module = ast::Module {
            address_size: 64,
            ..Default::default()
        };
        loop {
            match self.dot() {
                "" if self.tok.kind == Kind::Eof => return Ok((module, self.spans)),
                "" => return Err(self.unexpected("a directive (`.version`, `.entry`, ...)")),
                ".version" => {
                    self.bump();
                    module.version = self.version()?;
                }
                ".target" => {
                    self.bump();
                    loop {
                        let t = self.name("a target (`sm_90`, ...)")?;
                        module.target.push(t.to_string());
                        if !self.eat(b',') {
                            break;
                        }
                    }
                }
                ".address_size" => {
                    self.bump();
                    module.address_size = self.u32("an address size (32 or 64)")?;
                }
                ".file" | ".loc" => self.skip_line(),
                ".section" => self.skip_section()?,
                ".pragma" => {
                    self.pragma()?;
                }
                _ => self.module_declaration(&mut module)?,
            }
        }
    }

    fn version(&mut self) -> Result<(u32, u32)> {
        let t = self.tok;
        let parsed = match t.kind {
            Kind::Float => self
                .text(t)
                .split_once('.')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?))),
            _ => None,
        };
        let version = parsed.ok_or_else(|| self.unexpected("a version `major.minor`"))?;
        self.bump();
        Ok(version)
    }

    /// Skips a directive that ends with its line (`.loc`, `.file`).
    fn skip_line(&mut self) {
        let line = self.bump().line;
        while self.tok.line == line && !matches!(self.tok.kind, Kind::Eof | Kind::Bad(_)) {
            self.bump();
        }
    }

    /// Skips `.section name { ... }`.
    fn skip_section(&mut self) -> Result<()> {
        self.bump();
        while !self.is(b'{') {
            if matches!(self.tok.kind, Kind::Eof | Kind::Bad(_)) {
                return Err(self.unexpected("`{` opening the `.section` body"));
            }
            self.bump();
        }
        let mut open = 0usize;
        loop {
            match self.tok.kind {
                Kind::Punct(b'{') => open += 1,
                Kind::Punct(b'}') => {
                    open -= 1;
                    if open == 0 {
                        self.bump();
                        return Ok(());
                    }
                }
                Kind::Eof | Kind::Bad(_) => {
                    return Err(self.unexpected("`}` closing the `.section` body"))
                }
                _ => {}
            }
            self.bump();
        }
    }

    /// `.pragma "a", "b";` → `a, b`.
    fn pragma(&mut self) -> Result<String> {
        self.bump();
        let mut text = String::new();
        loop {
            if self.tok.kind != Kind::Str {
                return Err(self.unexpected("a string after `.pragma`"));
            }
            let t = self.bump();
            if !text.is_empty() {
                text.push_str(", ");
            }
            let s = self.text(t);
            let inner = s.strip_prefix('"').and_then(|s| s.strip_suffix('"'));
            text.push_str(inner.unwrap_or(""));
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b';', "after the `.pragma` string")?;
        Ok(text)
    }

    fn linkage(&mut self) -> Linkage {
        match linkage_of(self.dot()) {
            Some(l) => {
                self.bump();
                l
            }
            None => Linkage::None,
        }
    }

    fn module_declaration(&mut self, module: &mut ast::Module) -> Result<()> {
        let first = self.tok;
        let linkage = self.linkage();
        match self.dot() {
            ".entry" | ".func" => {
                let f = self.function(linkage)?;
                if let Some(span) = self.skipped.take() {
                    self.spans.push((module.functions.len(), span));
                }
                module.functions.push(f);
            }
            d => match space_of(d) {
                Some(space) => {
                    self.bump();
                    let v = self.variable(space, linkage, first.line, DeclPlace::Scope)?;
                    self.expect(b';', "after the declaration")?;
                    module.globals.push(v);
                }
                None => {
                    return Err(
                        self.unexpected("`.entry`, `.func` or a state space (`.global`, ...)")
                    )
                }
            },
        }
        Ok(())
    }

    // --- declarations -----------------------------------------------------------------

    /// The rest of a declaration once its linkage and state space are read: attributes,
    /// type, names with their array sizes and initializers (no `;`).
    fn variable(
        &mut self,
        space: Space,
        linkage: Linkage,
        line: u32,
        place: DeclPlace,
    ) -> Result<Variable> {
        let (mut align, mut vector) = (None, None);
        let ty = loop {
            match self.dot() {
                ".align" => {
                    self.bump();
                    align = Some(self.u32("an alignment after `.align`")?);
                }
                ".v2" | ".v4" | ".v8" => {
                    let v = self.bump();
                    vector = self.text(v)[2..].parse().ok();
                }
                ".attribute" if place == DeclPlace::Scope => {
                    self.bump();
                    self.expect(b'(', "after `.attribute`")?;
                    while self.tok.kind == Kind::Dot {
                        self.bump();
                    }
                    self.expect(b')', "closing `.attribute(`")?;
                }
                "" => return Err(self.unexpected("a type (`.u32`, `.b8`, ...)")),
                t => {
                    self.bump();
                    break t[1..].to_string();
                }
            }
        };
        if place == DeclPlace::Param && self.dot() == ".ptr" {
            self.bump();
            if space_of(self.dot()).is_some() {
                self.bump();
            }
            if self.dot() == ".align" {
                self.bump();
                self.u32("an alignment after `.align`")?;
            }
        }
        let mut v = Variable {
            space,
            linkage,
            align,
            vector,
            ty,
            names: Vec::new(),
            array: Vec::new(),
            init: None,
            line,
        };
        loop {
            let first = v.names.is_empty();
            let at = self.tok;
            let name = self.name("a name")?;
            if self.is(b'<') {
                self.bump();
                let at_count = self.tok;
                let count = self.int("a register count")?;
                if count > MAX_PARAMETERIZED {
                    return Err(self.error(
                        at_count,
                        format!("more than {MAX_PARAMETERIZED} registers in one declaration"),
                    ));
                }
                self.expanded += count;
                if self.expanded > MAX_EXPANDED_REGISTERS {
                    return Err(self.error(
                        at_count,
                        format!("more than {MAX_EXPANDED_REGISTERS} registers in one module"),
                    ));
                }
                self.expect(b'>', "closing the register count")?;
                v.names.extend((0..count).map(|i| format!("{name}{i}")));
            } else {
                v.names.push(name.to_string());
            }
            let mut array = Vec::new();
            while self.eat(b'[') {
                if self.eat(b']') {
                    array.push(None);
                } else {
                    array.push(Some(self.int("an array size")?));
                    self.expect(b']', "closing the array size")?;
                }
            }
            if first {
                v.array = array;
            } else if array != v.array {
                return Err(self.error(
                    at,
                    "names of one declaration with different array sizes are not supported"
                        .to_string(),
                ));
            }
            if place == DeclPlace::Scope && self.is(b'=') {
                let eq = self.bump();
                if !first || self.is(b',') {
                    return Err(self.error(
                        eq,
                        "an initializer is only supported in a declaration of one name".to_string(),
                    ));
                }
                v.init = Some(self.initializer()?);
                if self.is(b',') {
                    return Err(self.error(
                        self.tok,
                        "an initializer is only supported in a declaration of one name".to_string(),
                    ));
                }
            }
            if place == DeclPlace::Param || !self.eat(b',') {
                break;
            }
        }
        if space == Space::Reg {
            if let Some(scope) = self.bare_regs.last_mut() {
                let bare = v.names.iter().filter(|n| !n.starts_with('%'));
                scope.extend(bare.cloned());
            }
        }
        Ok(v)
    }

    fn initializer(&mut self) -> Result<Initializer> {
        if !self.is(b'{') {
            return Ok(Initializer::Value(self.init_value()?));
        }
        self.enter()?;
        self.bump();
        let mut items = Vec::new();
        if !self.is(b'}') {
            loop {
                items.push(self.initializer()?);
                if !self.eat(b',') {
                    break;
                }
            }
        }
        self.expect(b'}', "closing the initializer list")?;
        self.leave();
        Ok(Initializer::List(items))
    }

    fn init_value(&mut self) -> Result<InitValue> {
        if self.tok.kind == Kind::Ident {
            let generic = self.text(self.tok) == "generic" && self.ahead.kind == Kind::Punct(b'(');
            let symbol = if generic {
                self.bump();
                self.bump();
                let s = self.name("a name inside `generic(`")?;
                self.expect(b')', "closing `generic(`")?;
                s
            } else {
                self.name("a name")?
            };
            return Ok(InitValue::Address {
                symbol: symbol.to_string(),
                offset: self.offset()?,
                generic,
            });
        }
        Ok(match self.literal("an initializer value")? {
            Literal::Int(v) => InitValue::Int(v),
            Literal::F32(b) => InitValue::F32Bits(b),
            Literal::F64(b) => InitValue::F64Bits(b),
            Literal::Float(f) => InitValue::Float(f),
        })
    }

    /// The constant terms after a name: `+8`, `-4`, `+-4`, `+8+4`; 0 when none.
    fn offset(&mut self) -> Result<i64> {
        let mut offset = 0i64;
        while self.is(b'+') || self.is(b'-') {
            let sign = self.bump();
            let negative = sign.kind == Kind::Punct(b'-');
            let t = self.tok;
            let term = match self.literal("a constant offset")? {
                Literal::Int(v) if negative => -v,
                Literal::Int(v) => v,
                _ => return Err(self.error(t, "an offset must be an integer".to_string())),
            };
            offset = i64::try_from(term)
                .ok()
                .and_then(|term| offset.checked_add(term))
                .ok_or_else(|| self.error(t, "offset out of the 64-bit range".to_string()))?;
        }
        Ok(offset)
    }

    /// A literal with an optional leading `-`.
    fn literal(&mut self, what: &str) -> Result<Literal> {
        let negative = self.is(b'-');
        if negative {
            self.bump();
        }
        let t = self.tok;
        let lit = match t.kind {
            Kind::Int => Literal::Int(i128::from(t.value)),
            Kind::F32 => Literal::F32(t.value as u32),
            Kind::F64 => Literal::F64(t.value),
            Kind::Float => Literal::Float(self.float(t, self.text(t))?),
            // `.5`: a float without its leading zero.
            Kind::Dot if self.text(t)[1..].bytes().all(|b| b.is_ascii_digit()) => {
                Literal::Float(self.float(t, &format!("0{}", self.text(t)))?)
            }
            _ => return Err(self.unexpected(what)),
        };
        self.bump();
        Ok(match lit {
            Literal::Int(v) if negative => Literal::Int(-v),
            Literal::F32(b) if negative => Literal::F32(b ^ (1 << 31)),
            Literal::F64(b) if negative => Literal::F64(b ^ (1 << 63)),
            Literal::Float(f) if negative => Literal::Float(-f),
            lit => lit,
        })
    }

    fn float(&self, t: Token, text: &str) -> Result<f64> {
        text.parse()
            .map_err(|_| self.error(t, format!("malformed float `{}`", short(text))))
    }

    // --- functions --------------------------------------------------------------------

    fn function(&mut self, linkage: Linkage) -> Result<Function> {
        let kw = self.bump();
        let entry = self.text(kw) == ".entry";
        let returns = if !entry && self.is(b'(') {
            self.params()?
        } else {
            Vec::new()
        };
        let name = self.name("the function's name")?.to_string();
        let params = if self.is(b'(') {
            self.params()?
        } else {
            Vec::new()
        };
        let mut directives = Vec::new();
        loop {
            let d = self.dot();
            if d == ".pragma" {
                self.pragma()?;
            } else if PERFORMANCE_DIRECTIVES.contains(&d.get(1..).unwrap_or("")) {
                self.bump();
                let mut values = Vec::new();
                if self.tok.kind == Kind::Int {
                    loop {
                        values.push(self.int("a number")?);
                        if !self.eat(b',') {
                            break;
                        }
                    }
                }
                directives.push((d[1..].to_string(), values));
            } else {
                break;
            }
        }
        let mut f = Function {
            name,
            entry,
            linkage,
            returns,
            params,
            directives,
            body: None,
            line: kw.line,
        };
        if self.eat(b';') {
        } else if self.is(b'{') && entry && self.skip_kernels {
            self.skipped = Some(self.skip_body()?);
        } else if self.is(b'{') {
            let open = self.bump();
            self.enter_function(&f);
            let body = self.statements(open)?;
            self.bare_regs.pop();
            f.body = Some(body);
        } else {
            return Err(self.unexpected("`{`, `;` or a performance directive (`.maxntid`, ...)"));
        }
        Ok(f)
    }

    /// Opens the scope of a function's body: the names of its `.reg` parameters and
    /// return values that have no `%` are registers in it.
    fn enter_function(&mut self, f: &Function) {
        let regs = f
            .returns
            .iter()
            .chain(&f.params)
            .filter(|v| v.space == Space::Reg);
        let bare = regs.flat_map(|v| &v.names).filter(|n| !n.starts_with('%'));
        self.bare_regs.push(bare.cloned().collect());
    }

    /// Skips a body from its `{` (the current token) to its matching `}`, reading only
    /// comments, strings, braces and line ends, as the lexer reads them; the parser goes on
    /// after the `}`.
    fn skip_body(&mut self) -> Result<BodySpan> {
        let open = self.tok;
        let bytes = self.src.as_bytes();
        let at = |i: usize| bytes.get(i).copied();
        let (mut i, mut depth, mut line) = (open.start + 1, 1usize, open.line);
        let unclosed = |p: &Self, what: &str| {
            p.error(open, format!("{what} in the kernel's body is never closed"))
        };
        while depth > 0 {
            match at(i) {
                None => return Err(unclosed(self, "its `{`")),
                Some(b'{') => depth += 1,
                Some(b'}') => depth -= 1,
                Some(b'\n') => line = line.saturating_add(1),
                Some(b'/') if at(i + 1) == Some(b'/') => {
                    // To the end of the line (the line end itself is read next).
                    while !matches!(at(i + 1), None | Some(b'\n')) {
                        i += 1;
                    }
                }
                Some(b'/') if at(i + 1) == Some(b'*') => {
                    i += 2;
                    loop {
                        match at(i) {
                            None => return Err(unclosed(self, "a `/*` comment")),
                            Some(b'*') if at(i + 1) == Some(b'/') => break,
                            Some(b'\n') => line = line.saturating_add(1),
                            Some(_) => {}
                        }
                        i += 1;
                    }
                    i += 1;
                }
                Some(b'"') => loop {
                    i += 1;
                    match at(i) {
                        None => return Err(unclosed(self, "a string")),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            if at(i + 1) == Some(b'\n') {
                                line = line.saturating_add(1);
                            }
                            i += 1;
                        }
                        Some(b'\n') => line = line.saturating_add(1),
                        Some(_) => {}
                    }
                },
                Some(_) => {}
            }
            i += 1;
        }
        let close = i - 1;
        self.lexer.pos = i;
        self.lexer.line = line;
        self.tok = self.lexer.next();
        self.ahead = self.lexer.next();
        Ok(BodySpan {
            open: open.start,
            close,
            line: open.line,
        })
    }

    /// `( .param .u64 a, .reg .b32 b )`.
    fn params(&mut self) -> Result<Vec<Variable>> {
        self.bump();
        let mut params = Vec::new();
        if self.eat(b')') {
            return Ok(params);
        }
        loop {
            let t = self.tok;
            let space = match self.dot() {
                ".param" => Space::Param,
                ".reg" => Space::Reg,
                _ => return Err(self.unexpected("`.param` or `.reg` starting a parameter")),
            };
            self.bump();
            params.push(self.variable(space, Linkage::None, t.line, DeclPlace::Param)?);
            if !self.eat(b',') {
                break;
            }
        }
        self.expect(b')', "closing the parameter list")?;
        Ok(params)
    }

    /// The statements of a body up to its `}` (the `{` is `open`, already read).
    fn statements(&mut self, open: Token) -> Result<Vec<Statement>> {
        let mut out = Vec::new();
        loop {
            match self.tok.kind {
                Kind::Punct(b'}') => {
                    self.bump();
                    return Ok(out);
                }
                Kind::Punct(b'{') => {
                    self.enter()?;
                    let inner_open = self.bump();
                    self.bare_regs.push(HashSet::new());
                    let inner = self.statements(inner_open)?;
                    self.bare_regs.pop();
                    self.leave();
                    out.push(Statement::Block(inner));
                }
                Kind::Dot => self.body_directive(&mut out)?,
                Kind::Ident if self.ahead.kind == Kind::Punct(b':') => self.label(&mut out)?,
                Kind::Ident | Kind::Punct(b'@') => out.push(Statement::Instr(self.instruction()?)),
                Kind::Eof => {
                    return Err(
                        self.unexpected(&format!("`}}` closing the `{{` of line {}", open.line))
                    )
                }
                _ => return Err(self.unexpected("a statement")),
            }
        }
    }

    fn body_directive(&mut self, out: &mut Vec<Statement>) -> Result<()> {
        match self.dot() {
            ".pragma" => {
                let p = self.pragma()?;
                out.push(Statement::Pragma(p));
            }
            ".loc" | ".file" => self.skip_line(),
            _ => {
                let first = self.tok;
                let linkage = self.linkage();
                let Some(space) = space_of(self.dot()) else {
                    return Err(self.unexpected("a declaration, `.pragma` or an instruction"));
                };
                self.bump();
                let v = self.variable(space, linkage, first.line, DeclPlace::Scope)?;
                self.expect(b';', "after the declaration")?;
                out.push(Statement::Decl(v));
            }
        }
        Ok(())
    }

    /// `name:`, and what may only follow a label: `.callprototype`, `.branchtargets`.
    fn label(&mut self, out: &mut Vec<Statement>) -> Result<()> {
        let t = self.bump();
        self.bump();
        out.push(Statement::Label(self.text(t).to_string()));
        match self.dot() {
            ".callprototype" => {
                while !self.is(b';') {
                    if matches!(self.tok.kind, Kind::Eof | Kind::Bad(_)) {
                        return Err(self.unexpected("`;` ending the `.callprototype`"));
                    }
                    self.bump();
                }
                self.bump();
            }
            ".branchtargets" => {
                let kw = self.bump();
                let mut operands = Vec::new();
                loop {
                    let target = self.name("a label")?;
                    operands.push(Operand::Symbol(target.to_string()));
                    if !self.eat(b',') {
                        break;
                    }
                }
                self.expect(b';', "after the branch targets")?;
                out.push(Statement::Instr(Instruction {
                    guard: None,
                    opcode: ".branchtargets".to_string(),
                    modifiers: Vec::new(),
                    operands,
                    line: kw.line,
                }));
            }
            _ => {}
        }
        Ok(())
    }

    // --- instructions -----------------------------------------------------------------

    fn instruction(&mut self) -> Result<Instruction> {
        let line = self.tok.line;
        let guard = if self.eat(b'@') {
            let negated = self.eat(b'!');
            let p = self.name("a predicate register after `@`")?;
            Some((p.to_string(), negated))
        } else {
            None
        };
        let first = self.text(self.tok).bytes().next();
        if self.tok.kind != Kind::Ident || !first.is_some_and(|b| b.is_ascii_alphabetic()) {
            return Err(self.unexpected("an instruction"));
        }
        let t = self.bump();
        let opcode = self.text(t);
        let mut modifiers = Vec::new();
        while self.tok.kind == Kind::Dot {
            let m = self.bump();
            modifiers.push(self.text(m)[1..].to_string());
        }
        let mut operands = Vec::new();
        if !self.is(b';') {
            loop {
                let first = self.operand()?;
                operands.push(if self.eat(b'|') {
                    Operand::Vector(vec![first, self.operand()?])
                } else {
                    first
                });
                if !self.eat(b',') {
                    break;
                }
            }
        }
        if !self.is(b';') {
            let after = format!("`,` or `;` after an operand of `{opcode}` (line {line})");
            return Err(self.unexpected(&after));
        }
        self.bump();
        Ok(Instruction {
            guard,
            opcode: opcode.to_string(),
            modifiers,
            operands,
            line,
        })
    }

    /// Whether `name` is a register in the current scopes.
    fn is_reg(&self, name: &str) -> bool {
        name.starts_with('%')
            || name == "_"
            || self.bare_regs.iter().rev().any(|s| s.contains(name))
    }

    fn operand(&mut self) -> Result<Operand> {
        match self.tok.kind {
            Kind::Ident => {
                let t = self.bump();
                let name = self.text(t);
                if self.is_reg(name) {
                    let mut reg = name.to_string();
                    // A component: `%tid.x`, `%v.y`.
                    while self.tok.kind == Kind::Dot {
                        let c = self.bump();
                        reg.push_str(self.text(c));
                    }
                    Ok(Operand::Reg(reg))
                } else if self.is(b'+') || self.is(b'-') {
                    Ok(Operand::SymbolOffset(name.to_string(), self.offset()?))
                } else {
                    Ok(Operand::Symbol(name.to_string()))
                }
            }
            Kind::Punct(b'!') => {
                self.bump();
                Ok(Operand::NotReg(
                    self.name("a predicate register after `!`")?.to_string(),
                ))
            }
            Kind::Punct(b'[') => self.address(),
            Kind::Punct(b'{') => Ok(Operand::Vector(self.operand_group(b'}')?)),
            Kind::Punct(b'(') => Ok(Operand::List(self.operand_group(b')')?)),
            _ => Ok(match self.literal("an operand")? {
                Literal::Int(v) => Operand::Int(v),
                Literal::F32(b) => Operand::F32Bits(b),
                Literal::F64(b) => Operand::F64Bits(b),
                Literal::Float(f) => Operand::Float(f),
            }),
        }
    }

    /// `{a, b}` or `(a, b)`; a list may be empty.
    fn operand_group(&mut self, close: u8) -> Result<Vec<Operand>> {
        self.enter()?;
        self.bump();
        let mut items = Vec::new();
        if !(close == b')' && self.is(close)) {
            loop {
                items.push(self.operand()?);
                if !self.eat(b',') {
                    break;
                }
            }
        }
        self.expect(close, "closing the operand group")?;
        self.leave();
        Ok(items)
    }

    /// `[base]`, `[base+16]`, `[base+-4]`, `[0x100]`.
    fn address(&mut self) -> Result<Operand> {
        self.bump();
        let (base, offset) = if self.tok.kind == Kind::Ident {
            let t = self.bump();
            (Some(self.text(t).to_string()), self.offset()?)
        } else {
            let t = self.tok;
            let first = match self.literal("a register, a name or an address in `[ ]`")? {
                Literal::Int(v) => i64::try_from(v).ok(),
                _ => None,
            };
            let first =
                first.ok_or_else(|| self.error(t, "an address must be an integer".into()))?;
            let rest = self.offset()?;
            let sum = first.checked_add(rest);
            (
                None,
                sum.ok_or_else(|| self.error(t, "address out of the 64-bit range".into()))?,
            )
        };
        if self.is(b',') {
            return Err(self.error(
                self.tok,
                "an address with coordinates (`[tex, {...}]`, as texture, surface and tensor \
                 instructions write) is not supported"
                    .to_string(),
            ));
        }
        self.expect(b']', "closing the address")?;
        Ok(Operand::Address { base, offset })
    }
}

/// A token's text cut to a readable length for a message.
fn short(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}
