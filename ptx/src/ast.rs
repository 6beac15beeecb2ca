//! The syntax tree of a PTX module, as the parser ([`mod@crate::parse`]) produces it: close to
//! the text, with nothing resolved. Names stay strings; instructions keep their opcode and
//! their dot-separated modifiers as written, so that the checker ([`crate::lower`]) can say
//! exactly which form it does not support, and where.

/// A parsed module.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Module {
    /// `.version major.minor`.
    pub version: (u32, u32),
    /// `.target` entries (`sm_90`, `texmode_independent`, ...).
    pub target: Vec<String>,
    /// `.address_size` (64 when absent).
    pub address_size: u32,
    /// Module-scope variables (`.global`, `.const`, `.shared`, ...), in order.
    pub globals: Vec<Variable>,
    /// Functions and kernels, in order (declarations without a body included).
    pub functions: Vec<Function>,
}

/// A state space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    /// `.reg`.
    Reg,
    /// `.sreg` (special registers).
    Sreg,
    /// `.const`.
    Const,
    /// `.global`.
    Global,
    /// `.local`.
    Local,
    /// `.param`.
    Param,
    /// `.shared`.
    Shared,
    /// `.tex`.
    Tex,
}

/// Linkage of a module-scope name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Linkage {
    /// None written.
    #[default]
    None,
    /// `.visible`.
    Visible,
    /// `.extern`.
    Extern,
    /// `.weak`.
    Weak,
    /// `.common`.
    Common,
}

/// A fundamental type, as written (`.u32`, `.f16x2`, `.pred`, ...), without the dot.
pub type TypeName = String;

/// A variable or register declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct Variable {
    /// State space.
    pub space: Space,
    /// Linkage (module scope only).
    pub linkage: Linkage,
    /// `.align N`.
    pub align: Option<u32>,
    /// Vector width (`.v2`, `.v4`), if any.
    pub vector: Option<u32>,
    /// Element type (`u32`, `b8`, `f32`, `pred`, ...).
    pub ty: TypeName,
    /// The declared names. A parameterized register declaration `%r<13>` is expanded to
    /// `%r0` ... `%r12`; the other forms list their names.
    pub names: Vec<String>,
    /// Array dimensions (`[148]`, `[]` → `None` for an unsized first dimension).
    pub array: Vec<Option<u64>>,
    /// Initializer, if any (module scope `.global`/`.const`).
    pub init: Option<Initializer>,
    /// Line of the declaration (1-based).
    pub line: u32,
}

/// A variable's initializer.
#[derive(Clone, Debug, PartialEq)]
pub enum Initializer {
    /// One value.
    Value(InitValue),
    /// A braced list (nested for multi-dimensional arrays).
    List(Vec<Initializer>),
}

/// One initializer value.
#[derive(Clone, Debug, PartialEq)]
pub enum InitValue {
    /// An integer literal (decimal, hex `0x`, octal `0`, binary `0b`; `U` suffix dropped).
    Int(i128),
    /// A float literal as f32 bits (`0fXXXXXXXX`).
    F32Bits(u32),
    /// A float literal as f64 bits (`0dXXXXXXXXXXXXXXXX`).
    F64Bits(u64),
    /// A decimal float literal (`1.5`).
    Float(f64),
    /// The address of a variable or function plus an offset (`sym`, `sym+8`, `generic(sym)+8`).
    Address {
        /// The symbol.
        symbol: String,
        /// Byte offset.
        offset: i64,
        /// Written as `generic(sym)`.
        generic: bool,
    },
}

/// A function or kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    /// Its name.
    pub name: String,
    /// `.entry` (a kernel) rather than `.func`.
    pub entry: bool,
    /// Linkage.
    pub linkage: Linkage,
    /// Return parameters (`.func (.param .b32 r) f(...)`).
    pub returns: Vec<Variable>,
    /// Parameters, in order.
    pub params: Vec<Variable>,
    /// Performance directives (`.maxntid 256, 1, 1` → ("maxntid", [256, 1, 1])), `.noreturn`.
    pub directives: Vec<(String, Vec<u64>)>,
    /// The body; `None` for a declaration (`.extern .func f(...);`).
    pub body: Option<Vec<Statement>>,
    /// Line of the `.entry`/`.func` keyword.
    pub line: u32,
}

/// One statement of a body.
#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    /// `.reg`, `.shared`, `.local`, `.param` declarations inside a body.
    Decl(Variable),
    /// `name:`.
    Label(String),
    /// An instruction.
    Instr(Instruction),
    /// A nested `{ ... }` scope (its declarations are local to it).
    Block(Vec<Statement>),
    /// A directive kept for what it says (`.pragma "nounroll"`); `.loc`, `.file` and other
    /// debug directives are dropped by the parser.
    Pragma(String),
}

/// One instruction.
#[derive(Clone, Debug, PartialEq)]
pub struct Instruction {
    /// `@p` / `@!p` guard: (predicate register, negated).
    pub guard: Option<(String, bool)>,
    /// Base opcode (`ld`, `mad`, `setp`, ...).
    pub opcode: String,
    /// Modifiers in order, without dots (`ld.global.nc.v4.f32` → `["global", "nc", "v4", "f32"]`).
    pub modifiers: Vec<String>,
    /// Operands in order.
    pub operands: Vec<Operand>,
    /// Line (1-based).
    pub line: u32,
}

/// An operand.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A register, including special registers (`%r1`, `%tid.x`, `%laneid`) and `_` (sink).
    Reg(String),
    /// A register with a negation (`!%p1`, as in `selp`/`setp` predicate operands).
    NotReg(String),
    /// An integer literal.
    Int(i128),
    /// An f32 literal as bits (`0f3F800000`).
    F32Bits(u32),
    /// An f64 literal as bits (`0d3FF0000000000000`).
    F64Bits(u64),
    /// A decimal float literal.
    Float(f64),
    /// A bare name: a variable's address, a label, or a function.
    Symbol(String),
    /// A symbol plus a constant offset used as a value (`sym+8`).
    SymbolOffset(String, i64),
    /// A memory address `[base+offset]`: base a register or a symbol (or none: `[0x1000]`).
    Address {
        /// Register or symbol, if any.
        base: Option<String>,
        /// Byte offset.
        offset: i64,
    },
    /// A vector of operands `{%r1, %r2, _}`.
    Vector(Vec<Operand>),
    /// A parenthesized list, as in `call (ret), f, (a, b);`.
    List(Vec<Operand>),
}
