//! The load-time checker: turns a parsed [`Module`] into a [`Program`], resolving every
//! name and checking every instruction form. What it cannot run it refuses, naming the
//! instruction as written and its line — a module is never half-understood.

use crate::ast::{self, InitValue, Initializer, Module, Operand, Space, Statement};
use crate::ir::*;
use std::collections::HashMap;

/// Why a module cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LowerError {
    /// Line in the PTX text.
    pub line: u32,
    /// What is not supported or wrong.
    pub message: String,
}

fn err<T>(line: u32, message: impl Into<String>) -> Result<T, LowerError> {
    Err(LowerError {
        line,
        message: message.into(),
    })
}

/// The names a module declares at module scope: each `.global`/`.const` variable's index
/// (in declaration order, as [`Program::globals`] holds them), the `.shared` variables, and
/// the functions that are not kernels. Fails for a state space that cannot be at module
/// scope here.
#[allow(clippy::type_complexity)]
fn module_names(
    m: &Module,
) -> Result<
    (
        HashMap<String, u32>,
        Vec<&ast::Variable>,
        HashMap<&str, &ast::Function>,
    ),
    LowerError,
> {
    let mut globals: HashMap<String, u32> = HashMap::new();
    let mut shared: Vec<&ast::Variable> = Vec::new();
    for v in &m.globals {
        match v.space {
            Space::Global | Space::Const => {
                for name in &v.names {
                    let n = globals.len() as u32;
                    globals.insert(name.clone(), n);
                }
            }
            Space::Shared => shared.push(v),
            other => {
                return err(
                    v.line,
                    format!("module-scope {other:?} variables are not supported"),
                )
            }
        }
    }
    let functions = m
        .functions
        .iter()
        .filter(|f| !f.entry)
        .map(|f| (f.name.as_str(), f))
        .collect();
    Ok((globals, shared, functions))
}

/// Checks and resolves `m`. A module-scope problem fails the whole module; a kernel that
/// cannot run is listed in [`Program::refused`] and the others are kept.
pub fn lower(m: &Module) -> Result<Program, LowerError> {
    let (globals, bad) = variables(m)?;
    let mut prog = Program {
        globals,
        ..Program::default()
    };
    for f in &m.functions {
        if !f.entry {
            continue;
        }
        let Some(body) = &f.body else {
            continue;
        };
        match kernel(m, &bad, f, body) {
            Ok(k) => {
                prog.kernels.insert(k.name.clone(), k);
            }
            Err(e) => {
                prog.refused.insert(f.name.clone(), e);
            }
        }
    }
    Ok(prog)
}

/// The module-scope variables of `m` that live in device memory, in declaration order (as
/// [`Program::globals`] holds them), and the errors of those a kernel cannot use, by index.
/// Fails for a module-scope problem.
pub(crate) fn variables(m: &Module) -> Result<(Vec<Global>, HashMap<u32, LowerError>), LowerError> {
    let (names, _, _) = module_names(m)?;
    let mut out = Vec::new();
    let mut bad: HashMap<u32, LowerError> = HashMap::new();
    let mut init_bytes = 0u64;
    for v in m
        .globals
        .iter()
        .filter(|v| matches!(v.space, Space::Global | Space::Const))
    {
        for name in &v.names {
            // A variable whose initializer cannot be represented is left zeroed, and every
            // kernel that uses it is refused.
            let g = match global(v, name, &names) {
                Ok(g) => g,
                Err(e) => {
                    bad.insert(out.len() as u32, e.clone());
                    Global {
                        name: name.clone(),
                        size: var_size(v)?,
                        align: 1,
                        init: Vec::new(),
                        constant: v.space == Space::Const,
                        external: false,
                    }
                }
            };
            init_bytes += g.init.len() as u64;
            if init_bytes > MAX_INIT_BYTES {
                return err(
                    v.line,
                    format!("more than {MAX_INIT_BYTES} bytes of initialized variables"),
                );
            }
            out.push(g);
        }
    }
    Ok((out, bad))
}

/// Checks and resolves kernel `f` of `m`, whose body is `body`; `bad` holds the errors of
/// the module's unusable variables ([`variables`]).
pub(crate) fn kernel(
    m: &Module,
    bad: &HashMap<u32, LowerError>,
    f: &ast::Function,
    body: &[Statement],
) -> Result<Kernel, LowerError> {
    let (globals, module_shared, functions) = module_names(m)?;
    Lowering::new(&globals, &module_shared, &functions)
        .kernel(f, body)
        .and_then(|k| uses_bad_global(&k, bad).map_or(Ok(k), Err))
}

/// The error of the first unusable module variable `k` refers to, if any.
fn uses_bad_global(k: &Kernel, bad: &HashMap<u32, LowerError>) -> Option<LowerError> {
    k.code.iter().find_map(|i| {
        let g = match &i.op {
            Op::Mov {
                a: Src::Global(g, _),
                ..
            } => Some(*g),
            Op::Ld { addr, .. } | Op::St { addr, .. } | Op::Atom { addr, .. } => addr.global,
            _ => None,
        }?;
        bad.get(&g).cloned()
    })
}

fn elem_size(v: &ast::Variable) -> Result<u64, LowerError> {
    let ty = Ty::parse(&v.ty).ok_or(LowerError {
        line: v.line,
        message: format!("unknown type .{}", v.ty),
    })?;
    Ok(u64::from(ty.size()) * u64::from(v.vector.unwrap_or(1)))
}

fn var_size(v: &ast::Variable) -> Result<u64, LowerError> {
    let mut n = elem_size(v)?;
    for d in &v.array {
        match d {
            Some(d) => {
                n = n.checked_mul(*d).ok_or(LowerError {
                    line: v.line,
                    message: "array too large".into(),
                })?
            }
            None => return Ok(0),
        }
    }
    Ok(n)
}

fn global(
    v: &ast::Variable,
    name: &str,
    known: &HashMap<String, u32>,
) -> Result<Global, LowerError> {
    let size = var_size(v)?;
    if size > 1 << 30 {
        return err(
            v.line,
            format!("{name}: a module variable of {size} bytes is too large"),
        );
    }
    // Initial bytes only where there is an initializer: a variable without one is zeroed
    // device memory, and nothing is allocated for it here.
    let mut init = Vec::new();
    if let Some(i) = &v.init {
        if size > MAX_INIT_BYTES {
            return err(
                v.line,
                format!("{name}: an initialized variable of {size} bytes is too large"),
            );
        }
        init = vec![0u8; size as usize];
        let es = elem_size(v)? as usize / v.vector.unwrap_or(1) as usize;
        let ty = Ty::parse(&v.ty).unwrap_or(Ty::U8);
        let mut values = Vec::new();
        flatten(i, &mut values);
        for (n, val) in values.iter().enumerate() {
            let at = n * es;
            if at + es > init.len() {
                return err(v.line, format!("{name}: more initializers than elements"));
            }
            let bits = match val {
                InitValue::Int(x) => *x as u64,
                InitValue::F32Bits(b) => u64::from(*b),
                InitValue::F64Bits(b) => *b,
                InitValue::Float(f) => match ty {
                    Ty::F32 => u64::from((*f as f32).to_bits()),
                    Ty::F64 => f.to_bits(),
                    _ => {
                        return err(
                            v.line,
                            format!("{name}: a float initializer of a .{} variable", v.ty),
                        )
                    }
                },
                InitValue::Address { symbol, .. } => {
                    let _ = known;
                    return err(
                        v.line,
                        format!(
                            "{name}: initializer with the address of {symbol} is not supported"
                        ),
                    );
                }
            };
            init[at..at + es].copy_from_slice(&bits.to_le_bytes()[..es]);
        }
    }
    Ok(Global {
        name: name.to_string(),
        size,
        align: v.align.unwrap_or(elem_size(v)? as u32).max(1),
        init,
        constant: v.space == Space::Const,
        external: v.linkage == ast::Linkage::Extern,
    })
}

fn flatten<'a>(i: &'a Initializer, out: &mut Vec<&'a InitValue>) {
    match i {
        Initializer::Value(v) => out.push(v),
        Initializer::List(l) => l.iter().for_each(|x| flatten(x, out)),
    }
}

/// Where a name in a body resolves to.
#[derive(Clone, Copy, Debug)]
enum Name {
    Reg(Reg, Ty),
    Param(u32),
    Frame(u32),
    Shared(u32),
    Local(u32),
    Global(u32),
}

struct Lowering<'a> {
    globals: &'a HashMap<String, u32>,
    module_shared: &'a [&'a ast::Variable],
    functions: &'a HashMap<&'a str, &'a ast::Function>,
    /// Frame layout of each function called: (parameters, results) as (offset, bytes).
    frames: HashMap<String, FrameLayout>,
    /// Entry of each function lowered so far.
    entries: HashMap<String, u32>,
    /// Calls to patch with their callee's entry: (instruction, callee, line).
    calls: Vec<(usize, String, u32)>,
    /// Call graph edges, to refuse recursion.
    edges: Vec<(String, String)>,
    /// The function being lowered (`None` for the kernel).
    current: Option<String>,
    frame: u32,
    scopes: Vec<HashMap<String, Name>>,
    regs: u32,
    shared: u32,
    local: u32,
    /// Offset of each name of each static `.shared` declaration the kernel may use,
    /// placed before any code is lowered (see [`Lowering::layout_shared`]).
    shared_at: HashMap<(*const ast::Variable, usize), u32>,
    /// Where dynamic shared memory starts: after all the static shared memory.
    dynamic_at: u32,
    labels: HashMap<String, u32>,
    fixups: Vec<(usize, String, u32)>,
    code: Vec<Inst>,
}

impl<'a> Lowering<'a> {
    fn new(
        globals: &'a HashMap<String, u32>,
        module_shared: &'a [&'a ast::Variable],
        functions: &'a HashMap<&'a str, &'a ast::Function>,
    ) -> Self {
        Lowering {
            globals,
            module_shared,
            functions,
            frames: HashMap::new(),
            entries: HashMap::new(),
            calls: Vec::new(),
            edges: Vec::new(),
            current: None,
            frame: 0,
            scopes: vec![HashMap::new()],
            regs: 0,
            shared: 0,
            local: 0,
            shared_at: HashMap::new(),
            dynamic_at: 0,
            labels: HashMap::new(),
            fixups: Vec::new(),
            code: Vec::new(),
        }
    }

    fn kernel(mut self, f: &ast::Function, body: &[Statement]) -> Result<Kernel, LowerError> {
        let (params, param_bytes) = self.declare_params(f)?;
        self.layout_shared(body)?;
        for v in self.module_shared {
            self.declare_memory(v)?;
        }
        self.body(body, f.line, Op::Exit)?;
        // The functions the kernel calls, and those they call, after its code.
        let mut next = 0;
        while next < self.calls.len() {
            let (_, callee, line) = self.calls[next].clone();
            next += 1;
            if self.entries.contains_key(&callee) {
                continue;
            }
            let func = self.functions[callee.as_str()];
            let Some(fbody) = &func.body else {
                return err(
                    line,
                    format!("call of {callee}, which this module only declares"),
                );
            };
            let entry = self.code.len() as u32;
            self.entries.insert(callee.clone(), entry);
            let saved = self.current.replace(callee.clone());
            let outer = std::mem::replace(&mut self.scopes, vec![HashMap::new()]);
            let layout = self.frames[&callee].clone();
            for (p, &(off, _)) in func.params.iter().zip(&layout.params) {
                for name in &p.names {
                    self.scopes[0].insert(name.clone(), Name::Frame(off));
                }
            }
            for (p, &(off, _)) in func.returns.iter().zip(&layout.rets) {
                for name in &p.names {
                    self.scopes[0].insert(name.clone(), Name::Frame(off));
                }
            }
            self.body(fbody, func.line, Op::Ret)?;
            self.scopes = outer;
            self.current = saved;
        }
        for (at, callee, _) in std::mem::take(&mut self.calls) {
            if let Op::Call { target, .. } = &mut self.code[at].op {
                *target = self.entries[&callee];
            }
        }
        if let Some((a, b)) = recursion(&self.edges) {
            return err(
                f.line,
                format!("recursive calls ({a} calls {b}) are not supported"),
            );
        }
        let mut k = Kernel {
            name: f.name.clone(),
            params,
            param_bytes,
            regs: self.regs,
            shared_bytes: self.dynamic_at,
            local_bytes: self.local,
            frame_bytes: self.frame,
            code: self.code,
            read_first: None,
        };
        crate::liveness::compact(&mut k);
        Ok(k)
    }

    /// Lowers one function body (the kernel's or a called function's) at the end of the
    /// code: its labels are its own, and falling off its end does `end`.
    fn body(&mut self, body: &[Statement], line: u32, end: Op) -> Result<(), LowerError> {
        let labels = std::mem::take(&mut self.labels);
        let fixups = std::mem::take(&mut self.fixups);
        let mut n = self.code.len() as u32;
        self.collect_labels(body, &mut n);
        self.block(body)?;
        self.code.push(Inst {
            guard: None,
            op: end,
            line,
        });
        for (at, label, line) in std::mem::take(&mut self.fixups) {
            let Some(&t) = self.labels.get(&label) else {
                return err(line, format!("branch to unknown label {label}"));
            };
            if let Op::Bra { target } = &mut self.code[at].op {
                *target = t;
            }
        }
        self.labels = labels;
        self.fixups = fixups;
        Ok(())
    }

    /// Places `size` bytes aligned to `align` in the call frames.
    fn frame_slot(&mut self, size: u64, align: u32, line: u32) -> Result<u32, LowerError> {
        place(&mut self.frame, size, align, "call frames", line)
    }

    /// The kernel's parameters, placed in the parameter buffer, and its size.
    fn declare_params(&mut self, f: &ast::Function) -> Result<(Vec<Param>, u32), LowerError> {
        let mut params = Vec::new();
        let mut offset = 0u32;
        for p in &f.params {
            let size = var_size(p)?;
            let align = p.align.unwrap_or(elem_size(p)? as u32).max(1);
            let at = place(&mut offset, size, align, "parameters", p.line)?;
            for name in &p.names {
                self.scopes[0].insert(name.clone(), Name::Param(at));
            }
            params.push(Param {
                offset: at,
                size: size as u32,
            });
        }
        Ok((params, offset))
    }

    /// Places every static `.shared` variable the kernel may use — the module's, those of
    /// its body and those of the module's functions (which it may call) — before any code
    /// is lowered, so that dynamic shared memory has its final offset from the start.
    fn layout_shared(&mut self, body: &[Statement]) -> Result<(), LowerError> {
        fn collect<'s>(body: &'s [Statement], out: &mut Vec<&'s ast::Variable>) {
            for s in body {
                match s {
                    Statement::Decl(v) if v.space == Space::Shared => out.push(v),
                    Statement::Block(b) => collect(b, out),
                    _ => {}
                }
            }
        }
        let mut decls: Vec<&ast::Variable> = self.module_shared.to_vec();
        collect(body, &mut decls);
        let mut functions: Vec<&ast::Function> = self.functions.values().copied().collect();
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        for f in functions {
            collect(f.body.as_deref().unwrap_or_default(), &mut decls);
        }
        for v in decls.into_iter().filter(|v| v.array.first() != Some(&None)) {
            let size = var_size(v)?;
            let align = v.align.unwrap_or(elem_size(v)? as u32).max(1);
            for i in 0..v.names.len() {
                let at = place(&mut self.shared, size, align, "shared memory", v.line)?;
                self.shared_at.insert((v as *const ast::Variable, i), at);
            }
        }
        // The static part is at most MAX_SPACE, so this cannot overflow.
        self.dynamic_at = self.shared.next_multiple_of(16);
        Ok(())
    }

    /// The frame layout of function `name`, placed on first use.
    fn layout(&mut self, name: &str, line: u32) -> Result<FrameLayout, LowerError> {
        if let Some(l) = self.frames.get(name) {
            return Ok(l.clone());
        }
        let Some(f) = self.functions.get(name).copied() else {
            return err(line, format!("call of unknown function {name}"));
        };
        let mut slots = |vars: &[ast::Variable]| -> Result<Vec<(u32, u32)>, LowerError> {
            let mut out = Vec::new();
            for v in vars {
                let size = var_size(v)? as u32;
                let align = v.align.unwrap_or(elem_size(v)? as u32).max(1);
                out.push((self.frame_slot(var_size(v)?, align, v.line)?, size));
            }
            Ok(out)
        };
        let params = slots(&f.params)?;
        let rets = slots(&f.returns)?;
        let l = FrameLayout { params, rets };
        self.frames.insert(name.to_string(), l.clone());
        Ok(l)
    }

    fn collect_labels(&mut self, body: &[Statement], n: &mut u32) {
        for s in body {
            match s {
                Statement::Label(l) => {
                    self.labels.insert(l.clone(), *n);
                }
                Statement::Instr(_) => *n += 1,
                Statement::Block(b) => self.collect_labels(b, n),
                _ => {}
            }
        }
    }

    fn declare_memory(&mut self, v: &ast::Variable) -> Result<(), LowerError> {
        let size = var_size(v)?;
        let align = v.align.unwrap_or(elem_size(v)? as u32).max(1);
        for (i, name) in v.names.iter().enumerate() {
            let name_kind = match v.space {
                Space::Shared if v.array.first() == Some(&None) => Name::Shared(self.dynamic_at),
                Space::Shared => match self.shared_at.get(&(v as *const ast::Variable, i)) {
                    Some(&at) => Name::Shared(at),
                    None => return err(v.line, format!("shared variable {name} was not laid out")),
                },
                Space::Local => {
                    Name::Local(place(&mut self.local, size, align, "local memory", v.line)?)
                }
                other => {
                    return err(
                        v.line,
                        format!("{other:?} variables in a kernel body are not supported"),
                    )
                }
            };
            self.scopes
                .last_mut()
                .expect("a scope")
                .insert(name.clone(), name_kind);
        }
        Ok(())
    }

    fn block(&mut self, body: &[Statement]) -> Result<(), LowerError> {
        for s in body {
            match s {
                Statement::Decl(v) => match v.space {
                    Space::Reg => {
                        let ty = Ty::parse(&v.ty).ok_or(LowerError {
                            line: v.line,
                            message: format!("unknown register type .{}", v.ty),
                        })?;
                        if v.vector.is_some() || !v.array.is_empty() {
                            return err(v.line, "vector or array registers are not supported");
                        }
                        for name in &v.names {
                            let r = self.regs;
                            if r >= MAX_REGISTERS {
                                return err(
                                    v.line,
                                    format!("more than {MAX_REGISTERS} registers in one kernel"),
                                );
                            }
                            self.regs += 1;
                            self.scopes
                                .last_mut()
                                .expect("a scope")
                                .insert(name.clone(), Name::Reg(r, ty));
                        }
                    }
                    Space::Shared | Space::Local => self.declare_memory(v)?,
                    Space::Param => {
                        let size = var_size(v)?;
                        let align = v.align.unwrap_or(elem_size(v)? as u32).max(1);
                        for name in &v.names {
                            let at = self.frame_slot(size, align, v.line)?;
                            self.scopes
                                .last_mut()
                                .expect("a scope")
                                .insert(name.clone(), Name::Frame(at));
                        }
                    }
                    other => {
                        return err(
                            v.line,
                            format!(".{other:?} declarations in a body are not supported"),
                        )
                    }
                },
                Statement::Label(_) | Statement::Pragma(_) => {}
                Statement::Block(b) => {
                    self.scopes.push(HashMap::new());
                    self.block(b)?;
                    self.scopes.pop();
                }
                Statement::Instr(i) => {
                    let inst = self.instruction(i)?;
                    self.code.push(inst);
                }
            }
        }
        Ok(())
    }

    fn lookup(&self, name: &str) -> Option<Name> {
        for s in self.scopes.iter().rev() {
            if let Some(n) = s.get(name) {
                return Some(*n);
            }
        }
        self.globals.get(name).map(|g| Name::Global(*g))
    }

    fn instruction(&mut self, i: &ast::Instruction) -> Result<Inst, LowerError> {
        let line = i.line;
        let text = || {
            let mut t = i.opcode.clone();
            for m in &i.modifiers {
                t.push('.');
                t.push_str(m);
            }
            t
        };
        let guard = match &i.guard {
            None => None,
            Some((p, neg)) => match self.lookup(p) {
                Some(Name::Reg(r, Ty::Pred)) => Some((r, *neg)),
                _ => return err(line, format!("guard {p} is not a predicate register")),
            },
        };
        if i.opcode == "call" {
            let op = self.call(i).map_err(|e| LowerError {
                line,
                message: format!("{}: {}", text(), e),
            })?;
            return Ok(Inst { guard, op, line });
        }
        if i.opcode == "ret" && self.current.is_some() {
            return Ok(Inst {
                guard,
                op: Op::Ret,
                line,
            });
        }
        let cx = Cx { l: self, i, line };
        let op = cx.op().map_err(|e| LowerError {
            line,
            message: format!("{}: {}", text(), e),
        })?;
        if let Op::Bra { .. } = op {
            let target = match i.operands.first() {
                Some(Operand::Symbol(s)) => s.clone(),
                _ => return err(line, format!("{}: expected a label", text())),
            };
            self.fixups.push((self.code.len(), target, line));
        }
        Ok(Inst { guard, op, line })
    }
}

#[derive(Clone, Debug)]
struct FrameLayout {
    params: Vec<(u32, u32)>,
    rets: Vec<(u32, u32)>,
}

impl Lowering<'_> {
    /// The frame offset of a call's `.param` variable.
    fn frame_var(&self, o: &Operand) -> R<u32> {
        match o {
            Operand::Symbol(s) | Operand::Reg(s) => match self.lookup(s) {
                Some(Name::Frame(at)) => Ok(at),
                _ => Err(format!("{s} is not a .param variable of a call")),
            },
            o => Err(format!("{o:?} is not a .param variable")),
        }
    }

    /// `call [(results),] f [, (arguments)] [, prototype]`.
    fn call(&mut self, i: &ast::Instruction) -> R<Op> {
        let mut ops = i.operands.iter();
        let mut rets: Vec<&Operand> = Vec::new();
        let first = ops.next().ok_or("no callee")?;
        let callee = match first {
            Operand::List(r) => {
                rets = r.iter().collect();
                ops.next().ok_or("no callee")?
            }
            o => o,
        };
        let Operand::Symbol(name) = callee else {
            return Err(format!("indirect calls ({callee:?}) are not supported"));
        };
        let args: Vec<&Operand> = match ops.next() {
            Some(Operand::List(a)) => a.iter().collect(),
            Some(o) => return Err(format!("unexpected {o:?}")),
            None => Vec::new(),
        };
        if name == "vprintf" {
            if args.len() != 2 || rets.len() > 1 {
                return Err("vprintf takes a format and an argument buffer".into());
            }
            return Ok(Op::Printf {
                fmt: self.frame_var(args[0])?,
                args: self.frame_var(args[1])?,
                ret: rets.first().map(|r| self.frame_var(r)).transpose()?,
            });
        }
        let layout = self.layout(name, i.line).map_err(|e| e.message)?;
        if args.len() != layout.params.len() || rets.len() != layout.rets.len() {
            return Err(format!(
                "{name} takes {} arguments and {} results",
                layout.params.len(),
                layout.rets.len()
            ));
        }
        let mut a = Vec::new();
        for (o, &(to, size)) in args.iter().zip(&layout.params) {
            a.push((self.frame_var(o)?, to, size));
        }
        let mut r = Vec::new();
        for (o, &(from, size)) in rets.iter().zip(&layout.rets) {
            r.push((from, self.frame_var(o)?, size));
        }
        let caller = self.current.clone().unwrap_or_default();
        self.edges.push((caller, name.clone()));
        self.calls.push((self.code.len(), name.clone(), i.line));
        Ok(Op::Call {
            target: 0,
            args: a,
            rets: r,
        })
    }
}

/// A cycle in the call graph, as one of its edges.
fn recursion(edges: &[(String, String)]) -> Option<(String, String)> {
    let mut graph: HashMap<&str, Vec<&str>> = HashMap::new();
    for (a, b) in edges {
        graph.entry(a.as_str()).or_default().push(b.as_str());
    }
    // Depth-first search with colours: 1 = on the path, 2 = done.
    fn visit<'g>(
        n: &'g str,
        graph: &HashMap<&'g str, Vec<&'g str>>,
        colour: &mut HashMap<&'g str, u8>,
    ) -> Option<(String, String)> {
        colour.insert(n, 1);
        for &m in graph.get(n).map_or(&[][..], |v| &v[..]) {
            match colour.get(m) {
                Some(1) => return Some((n.to_string(), m.to_string())),
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, graph, colour) {
                        return Some(c);
                    }
                }
            }
        }
        colour.insert(n, 2);
        None
    }
    let mut colour = HashMap::new();
    visit("", &graph, &mut colour)
}

/// Most registers of a kernel and the functions it calls (the largest kernel of a
/// registry ggml-cuda build declares about 42,000).
pub const MAX_REGISTERS: u32 = 1 << 17;

/// Most bytes of initial values of a module's variables.
pub const MAX_INIT_BYTES: u64 = 64 << 20;

/// Most bytes of a kernel's parameters, shared memory, local memory or call frames.
const MAX_SPACE: u64 = 1 << 30;

/// Places `size` bytes aligned to `align` at the end of `counter` (a space being laid
/// out); refuses a space larger than [`MAX_SPACE`].
fn place(
    counter: &mut u32,
    size: u64,
    align: u32,
    what: &str,
    line: u32,
) -> Result<u32, LowerError> {
    let at = u64::from(*counter).next_multiple_of(u64::from(align.max(1)));
    match at.checked_add(size) {
        Some(end) if end <= MAX_SPACE => {
            *counter = end as u32;
            Ok(at as u32)
        }
        _ => err(
            line,
            format!("{what} of more than {MAX_SPACE} bytes is not supported"),
        ),
    }
}

/// Lowering of one instruction.
struct Cx<'l, 'a> {
    l: &'l Lowering<'a>,
    i: &'l ast::Instruction,
    line: u32,
}

type R<T> = Result<T, String>;

impl Cx<'_, '_> {
    fn has(&self, m: &str) -> bool {
        self.i.modifiers.iter().any(|x| x == m)
    }

    /// The last modifier that is a type.
    fn ty(&self) -> R<Ty> {
        self.i
            .modifiers
            .iter()
            .rev()
            .find_map(|m| Ty::parse(m))
            .ok_or_else(|| "no type".to_string())
    }

    /// The types among the modifiers, in order.
    fn types(&self) -> Vec<Ty> {
        self.i
            .modifiers
            .iter()
            .filter_map(|m| Ty::parse(m))
            .collect()
    }

    fn operand(&self, n: usize) -> R<&Operand> {
        self.i
            .operands
            .get(n)
            .ok_or_else(|| format!("operand {} missing", n + 1))
    }

    fn count(&self, n: usize) -> R<()> {
        if self.i.operands.len() == n {
            Ok(())
        } else {
            Err(format!(
                "expected {n} operands, found {}",
                self.i.operands.len()
            ))
        }
    }

    fn dst(&self, n: usize) -> R<Reg> {
        match self.operand(n)? {
            Operand::Reg(r) => match self.l.lookup(r) {
                Some(Name::Reg(x, _)) => Ok(x),
                _ => Err(format!("{r} is not a register")),
            },
            o => Err(format!("destination {o:?} is not a register")),
        }
    }

    fn src(&self, n: usize, ty: Ty) -> R<Src> {
        src_of(self.l, self.operand(n)?, ty)
    }

    fn addr(&self, n: usize, space: MemSpace) -> R<(Addr, MemSpace)> {
        match self.operand(n)? {
            Operand::Address { base, offset } => {
                let mut a = Addr {
                    base: None,
                    global: None,
                    offset: *offset,
                };
                let mut space = space;
                if let Some(b) = base {
                    match self.l.lookup(b) {
                        Some(Name::Reg(r, _)) => a.base = Some(r),
                        Some(Name::Param(p)) if matches!(space, MemSpace::Param) => {
                            a.offset += i64::from(p);
                        }
                        Some(Name::Frame(p)) if matches!(space, MemSpace::Param) => {
                            a.offset += i64::from(p);
                            space = MemSpace::Frame;
                        }
                        Some(Name::Shared(s))
                            if matches!(space, MemSpace::Shared | MemSpace::Generic) =>
                        {
                            a.offset += i64::from(s);
                            space = MemSpace::Shared;
                        }
                        Some(Name::Local(s))
                            if matches!(space, MemSpace::Local | MemSpace::Generic) =>
                        {
                            a.offset += i64::from(s);
                            space = MemSpace::Local;
                        }
                        Some(Name::Global(g))
                            if matches!(space, MemSpace::Global | MemSpace::Generic) =>
                        {
                            a.global = Some(g);
                        }
                        Some(other) => {
                            return Err(format!(
                                "{b} ({other:?}) cannot be addressed in this state space"
                            ))
                        }
                        None => return Err(format!("unknown name {b}")),
                    }
                }
                Ok((a, space))
            }
            o => Err(format!("expected an address, found {o:?}")),
        }
    }

    fn space(&self) -> R<MemSpace> {
        let mut s = MemSpace::Generic;
        for m in &self.i.modifiers {
            s = match m.as_str() {
                "global" | "const" => MemSpace::Global,
                "shared" | "shared::cta" => MemSpace::Shared,
                "local" => MemSpace::Local,
                "param" => MemSpace::Param,
                "shared::cluster" | "tex" | "surf" => return Err(format!(".{m} is not supported")),
                _ => continue,
            };
        }
        Ok(s)
    }

    /// Refuses modifiers outside `allowed` (types and the harmless cache and ordering hints
    /// always pass).
    fn only(&self, allowed: &[&str]) -> R<()> {
        for m in &self.i.modifiers {
            let harmless = Ty::parse(m).is_some()
                || m.contains("::")
                || matches!(
                    m.as_str(),
                    "ca" | "cg"
                        | "cs"
                        | "lu"
                        | "cv"
                        | "wb"
                        | "wt"
                        | "nc"
                        | "volatile"
                        | "relaxed"
                        | "acquire"
                        | "release"
                        | "acq_rel"
                        | "weak"
                        | "gpu"
                        | "cta"
                        | "sys"
                        | "cluster"
                        | "uni"
                        | "sync"
                        | "aligned"
                );
            if !harmless && !allowed.contains(&m.as_str()) {
                return Err(format!("modifier .{m} is not supported"));
            }
        }
        Ok(())
    }

    /// `wmma.load`, `wmma.mma` and `wmma.store` of the f16/bf16 shapes.
    fn wmma(&self) -> R<Op> {
        use crate::mma::{Fragment, WmmaShape};
        let i = self.i;
        let m = &i.modifiers;
        self.only(&[
            "load",
            "store",
            "mma",
            "a",
            "b",
            "c",
            "d",
            "row",
            "col",
            "global",
            "shared",
            "shared::cta",
            "m16n16k16",
            "m32n8k16",
            "m8n32k16",
        ])?;
        let shape = m
            .iter()
            .find_map(|x| WmmaShape::parse(x))
            .ok_or("only the m16n16k16, m32n8k16 and m8n32k16 shapes are supported")?;
        let regs = |n: usize, want: usize, ty: Ty| -> R<Vec<Src>> {
            match self.operand(n)? {
                Operand::Vector(v) if v.len() == want => {
                    v.iter().map(|o| src_of(self.l, o, ty)).collect()
                }
                o => Err(format!(
                    "operand {} must be a vector of {want}, found {o:?}",
                    n + 1
                )),
            }
        };
        let dregs = |n: usize, want: usize| -> R<Vec<Reg>> {
            match self.operand(n)? {
                Operand::Vector(v) if v.len() == want => {
                    v.iter().map(|o| sink_or_reg(self.l, o)).collect()
                }
                o => Err(format!(
                    "operand {} must be a vector of {want}, found {o:?}",
                    n + 1
                )),
            }
        };
        // Registers per lane: A and B 8 (two f16/bf16 each), C and D 8 f32 or 4 f16x2.
        let count = |f: Fragment, ty: Ty| match (f, ty) {
            (Fragment::C, Ty::F16) => 4,
            _ => 8,
        };
        let half_ab = |ty: Ty| matches!(ty, Ty::F16 | Ty::BF16);
        let cd_ok = |ty: Ty| matches!(ty, Ty::F32 | Ty::F16);
        match m.first().map(String::as_str) {
            Some("load") | Some("store") => {
                let store = m[0] == "store";
                let frag = match m.get(1).map(String::as_str) {
                    Some("a") => Fragment::A,
                    Some("b") => Fragment::B,
                    Some("c") | Some("d") => Fragment::C,
                    _ => return Err("no fragment".into()),
                };
                let ty = self.ty()?;
                let ok = match frag {
                    Fragment::C => cd_ok(ty),
                    _ => half_ab(ty),
                };
                if !ok || (store && frag != Fragment::C) {
                    return Err(format!("wmma fragments of .{ty:?} are not supported"));
                }
                let col = m.iter().any(|x| x == "col");
                let space = self.space()?;
                let stride = match i.operands.get(2) {
                    Some(_) => self.src(2, Ty::U32)?,
                    None => return Err("wmma without a stride is not supported".into()),
                };
                self.count(3)?;
                let n = count(frag, ty);
                if store {
                    let (addr, space) = self.addr(0, space)?;
                    Ok(Op::WmmaStore {
                        shape,
                        ty,
                        col,
                        space,
                        addr,
                        a: regs(1, n, if ty == Ty::F32 { Ty::F32 } else { Ty::U32 })?,
                        stride,
                    })
                } else {
                    let (addr, space) = self.addr(1, space)?;
                    Ok(Op::WmmaLoad {
                        shape,
                        frag,
                        ty,
                        col,
                        space,
                        d: dregs(0, n)?,
                        addr,
                        stride,
                    })
                }
            }
            Some("mma") => {
                self.count(4)?;
                let t = self.types();
                // wmma.mma.<layouts>.<shape>.<dtype>.<ctype> (A and B are f16 for these types)
                let [dty, cty] = t[..] else {
                    return Err("expected the D and C types".into());
                };
                if !cd_ok(dty) || !cd_ok(cty) {
                    return Err(format!("wmma.mma .{dty:?}.{cty:?} is not supported"));
                }
                let reg_ty = |ty: Ty| if ty == Ty::F32 { Ty::F32 } else { Ty::U32 };
                Ok(Op::WmmaMma {
                    shape,
                    ab: Ty::F16,
                    cty,
                    dty,
                    d: dregs(0, count(Fragment::C, dty))?,
                    a: regs(1, 8, Ty::U32)?,
                    b: regs(2, 8, Ty::U32)?,
                    c: regs(3, count(Fragment::C, cty), reg_ty(cty))?,
                })
            }
            _ => Err("unknown wmma operation".into()),
        }
    }

    /// The rounding modifier of an arithmetic instruction: round to nearest always; the
    /// directed modes only where `directed` says this form computes them.
    fn rounding(&self, directed: bool) -> R<Round> {
        match self.round() {
            r @ (Round::Default | Round::Nearest) => Ok(r),
            r if directed => Ok(r),
            r => Err(format!(
                "rounding mode {r:?} is not supported for this form"
            )),
        }
    }

    /// Half-precision `op` over operands 1..=`srcs` (the others are zero).
    fn half(&self, op: HalfOp, ty: Ty, srcs: usize, sat: bool) -> R<Op> {
        self.rounding(false)?;
        let src = |n: usize| {
            if n <= srcs {
                self.src(n, ty)
            } else {
                Ok(Src::Imm(0))
            }
        };
        Ok(Op::Half {
            op,
            ty,
            d: self.dst(0)?,
            a: src(1)?,
            b: src(2)?,
            c: src(3)?,
            ftz: self.has("ftz"),
            sat,
        })
    }

    fn round(&self) -> Round {
        for m in &self.i.modifiers {
            match m.as_str() {
                "rn" | "rni" => return Round::Nearest,
                "rz" | "rzi" => return Round::Zero,
                "rm" | "rmi" => return Round::Down,
                "rp" | "rpi" => return Round::Up,
                _ => {}
            }
        }
        Round::Default
    }

    fn op(&self) -> R<Op> {
        let i = self.i;
        let ftz = self.has("ftz");
        let sat = self.has("sat");
        let _ = self.line;
        match i.opcode.as_str() {
            "mov" => {
                self.only(&[])?;
                self.count(2)?;
                let ty = self.ty()?;
                match (self.operand(0)?, self.operand(1)?) {
                    (Operand::Vector(ds), _) => {
                        let bits = ty.size() * 8 / ds.len() as u32;
                        Ok(Op::Unpack {
                            ds: ds
                                .iter()
                                .map(|o| sink_or_reg(self.l, o))
                                .collect::<R<_>>()?,
                            a: self.src(1, ty)?,
                            bits,
                        })
                    }
                    (_, Operand::Vector(parts)) => {
                        let bits = ty.size() * 8 / parts.len() as u32;
                        let pty = part_type(bits)?;
                        Ok(Op::Pack {
                            d: self.dst(0)?,
                            parts: parts
                                .iter()
                                .map(|o| src_of(self.l, o, pty))
                                .collect::<R<_>>()?,
                            bits,
                        })
                    }
                    _ => Ok(Op::Mov {
                        d: self.dst(0)?,
                        a: self.src(1, ty)?,
                    }),
                }
            }
            "prmt" => {
                self.only(&["f4e", "b4e", "rc8", "ecl", "ecr", "rc16"])?;
                self.count(4)?;
                let mode = ["f4e", "b4e", "rc8", "ecl", "ecr", "rc16"]
                    .iter()
                    .position(|m| self.has(m))
                    .map_or(0, |p| p as u8 + 1);
                Ok(Op::Prmt {
                    d: self.dst(0)?,
                    a: self.src(1, Ty::U32)?,
                    b: self.src(2, Ty::U32)?,
                    c: self.src(3, Ty::U32)?,
                    mode,
                })
            }
            "bfe" => {
                self.only(&[])?;
                self.count(4)?;
                let ty = self.ty()?;
                Ok(Op::Bfe {
                    ty,
                    d: self.dst(0)?,
                    a: self.src(1, ty)?,
                    b: self.src(2, Ty::U32)?,
                    c: self.src(3, Ty::U32)?,
                })
            }
            "bfi" => {
                self.only(&[])?;
                self.count(5)?;
                let ty = self.ty()?;
                Ok(Op::Bfi {
                    ty,
                    d: self.dst(0)?,
                    a: self.src(1, ty)?,
                    b: self.src(2, ty)?,
                    pos: self.src(3, Ty::U32)?,
                    len: self.src(4, Ty::U32)?,
                })
            }
            "dp4a" | "dp2a" => {
                self.only(&["lo", "hi"])?;
                self.count(4)?;
                let t = self.types();
                let [ta, tb] = t[..] else {
                    return Err("expected two types".into());
                };
                Ok(Op::Dp {
                    d: self.dst(0)?,
                    a: self.src(1, ta)?,
                    b: self.src(2, tb)?,
                    c: self.src(3, Ty::U32)?,
                    a_signed: ta.signed(),
                    b_signed: tb.signed(),
                    two: i.opcode == "dp2a",
                    hi: self.has("hi"),
                })
            }
            "lop3" => {
                self.only(&[])?;
                self.count(5)?;
                let lut = match self.operand(4)? {
                    Operand::Int(v) if (0..=255).contains(v) => *v as u8,
                    o => return Err(format!("truth table {o:?} is not a constant")),
                };
                Ok(Op::Lop3 {
                    d: self.dst(0)?,
                    a: self.src(1, Ty::U32)?,
                    b: self.src(2, Ty::U32)?,
                    c: self.src(3, Ty::U32)?,
                    lut,
                })
            }
            "shf" => {
                self.only(&["l", "r", "wrap", "clamp"])?;
                self.count(4)?;
                Ok(Op::Shf {
                    d: self.dst(0)?,
                    a: self.src(1, Ty::U32)?,
                    b: self.src(2, Ty::U32)?,
                    c: self.src(3, Ty::U32)?,
                    left: self.has("l"),
                    clamp: self.has("clamp"),
                })
            }
            "cvta" => {
                self.only(&["to", "global", "shared", "local", "const", "param"])?;
                let space = match self.space()? {
                    MemSpace::Generic => return Err("no state space".into()),
                    s => s,
                };
                Ok(Op::Cvta {
                    d: self.dst(0)?,
                    a: self.src(1, Ty::U64)?,
                    space,
                    to_generic: !self.has("to"),
                })
            }
            "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor"
            | "shl" | "shr" | "copysign" => {
                self.only(&[
                    "lo", "hi", "wide", "ftz", "sat", "rn", "rz", "rm", "rp", "approx", "full",
                    "NaN", "cc",
                ])?;
                if self.has("cc") {
                    return Err("carry (.cc) is not supported".into());
                }
                self.count(3)?;
                let ty = self.ty()?;
                let op = match i.opcode.as_str() {
                    "add" => BinOp::Add,
                    "sub" => BinOp::Sub,
                    "mul" if self.has("hi") => BinOp::MulHi,
                    "mul" if self.has("wide") => BinOp::MulWide,
                    "mul" => BinOp::MulLo,
                    "div" => BinOp::Div,
                    "rem" => BinOp::Rem,
                    "min" => BinOp::Min,
                    "max" => BinOp::Max,
                    "and" => BinOp::And,
                    "or" => BinOp::Or,
                    "xor" => BinOp::Xor,
                    "shl" => BinOp::Shl,
                    "shr" => BinOp::Shr,
                    _ => BinOp::CopySign,
                };
                if is_half(ty) {
                    let hop = match op {
                        BinOp::Add => HalfOp::Add,
                        BinOp::Sub => HalfOp::Sub,
                        BinOp::MulLo => HalfOp::Mul,
                        BinOp::Min => HalfOp::Min,
                        BinOp::Max => HalfOp::Max,
                        _ => return Err(format!("{} of .{ty:?} is not supported", i.opcode)),
                    };
                    return self.half(hop, ty, 2, sat);
                }
                let sty = match op {
                    BinOp::Shl | BinOp::Shr => Ty::U32,
                    _ => ty,
                };
                let directed_ok =
                    ty == Ty::F32 && matches!(op, BinOp::Add | BinOp::Sub | BinOp::MulLo);
                let nan = self.has("NaN");
                if nan && !(ty.float() && matches!(op, BinOp::Min | BinOp::Max)) {
                    return Err(".NaN goes with float min and max only".into());
                }
                Ok(Op::Bin {
                    op,
                    ty,
                    d: self.dst(0)?,
                    a: self.src(1, ty)?,
                    b: self.src(2, sty)?,
                    ftz,
                    sat,
                    round: self.rounding(directed_ok)?,
                    nan,
                })
            }
            "mad" | "fma" => {
                self.only(&["lo", "hi", "wide", "ftz", "sat", "rn", "rz", "rm", "rp"])?;
                self.count(4)?;
                let ty = self.ty()?;
                if is_half(ty) {
                    return self.half(HalfOp::Fma, ty, 3, sat);
                }
                let mode = if self.has("hi") {
                    1
                } else if self.has("wide") {
                    2
                } else {
                    0
                };
                let cty = if mode == 2 { wide(ty)? } else { ty };
                Ok(Op::Mad {
                    ty,
                    mode,
                    d: self.dst(0)?,
                    a: self.src(1, ty)?,
                    b: self.src(2, ty)?,
                    c: self.src(3, cty)?,
                    ftz,
                    sat,
                    round: self.rounding(ty == Ty::F32)?,
                })
            }
            "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "sqrt" | "rsqrt" | "rcp"
            | "sin" | "cos" | "lg2" | "ex2" | "tanh" => {
                self.only(&["ftz", "approx", "rn", "rz", "rm", "rp", "full"])?;
                self.rounding(false)?;
                self.count(2)?;
                let ty = self.ty()?;
                let op = match i.opcode.as_str() {
                    "neg" => UnOp::Neg,
                    "abs" => UnOp::Abs,
                    "not" => UnOp::Not,
                    "cnot" => UnOp::CNot,
                    "popc" => UnOp::Popc,
                    "clz" => UnOp::Clz,
                    "brev" => UnOp::Brev,
                    "sqrt" => UnOp::Sqrt,
                    "rsqrt" => UnOp::Rsqrt,
                    "rcp" => UnOp::Rcp,
                    "sin" => UnOp::Sin,
                    "cos" => UnOp::Cos,
                    "lg2" => UnOp::Lg2,
                    "ex2" => UnOp::Ex2,
                    _ => UnOp::Tanh,
                };
                if is_half(ty) {
                    let hop = match op {
                        UnOp::Neg => HalfOp::Neg,
                        UnOp::Abs => HalfOp::Abs,
                        UnOp::Ex2 => HalfOp::Ex2,
                        UnOp::Tanh => HalfOp::Tanh,
                        _ => return Err(format!("{} of .{ty:?} is not supported", i.opcode)),
                    };
                    return self.half(hop, ty, 1, false);
                }
                Ok(Op::Un {
                    op,
                    ty,
                    d: self.dst(0)?,
                    a: self.src(1, ty)?,
                    ftz,
                })
            }
            "setp" => {
                self.only(&[
                    "eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu",
                    "ltu", "leu", "gtu", "geu", "num", "nan", "and", "or", "xor", "ftz",
                ])?;
                let ty = self.ty()?;
                let mut cmp = None;
                let mut bop = None;
                for m in &i.modifiers {
                    let c = match m.as_str() {
                        "eq" => Cmp::Eq,
                        "ne" => Cmp::Ne,
                        "lt" | "lo" => Cmp::Lt,
                        "le" | "ls" => Cmp::Le,
                        "gt" | "hi" => Cmp::Gt,
                        "ge" | "hs" => Cmp::Ge,
                        "equ" => Cmp::Unordered(0),
                        "neu" => Cmp::Unordered(1),
                        "ltu" => Cmp::Unordered(2),
                        "leu" => Cmp::Unordered(3),
                        "gtu" => Cmp::Unordered(4),
                        "geu" => Cmp::Unordered(5),
                        "num" => Cmp::Num,
                        "nan" => Cmp::Nan,
                        "and" => {
                            bop = Some(BoolOp::And);
                            continue;
                        }
                        "or" => {
                            bop = Some(BoolOp::Or);
                            continue;
                        }
                        "xor" => {
                            bop = Some(BoolOp::Xor);
                            continue;
                        }
                        _ => continue,
                    };
                    cmp = Some(c);
                }
                let cmp = cmp.ok_or("no comparison")?;
                // d|d2 is parsed as a two-register vector.
                let (d, d2) = match self.operand(0)? {
                    Operand::Vector(v) if v.len() == 2 => {
                        (reg_of(self.l, &v[0])?, Some(reg_of(self.l, &v[1])?))
                    }
                    _ => (self.dst(0)?, None),
                };
                let combine = match bop {
                    None => {
                        self.count(3)?;
                        None
                    }
                    Some(b) => {
                        self.count(4)?;
                        let (p, neg) = pred_operand(self.l, self.operand(3)?)?;
                        Some((b, p, neg))
                    }
                };
                Ok(Op::Setp {
                    cmp,
                    ty,
                    d,
                    d2,
                    a: self.src(1, ty)?,
                    b: self.src(2, ty)?,
                    combine,
                    ftz,
                })
            }
            "selp" => {
                self.only(&[])?;
                self.count(4)?;
                let ty = self.ty()?;
                let (p, neg) = pred_operand(self.l, self.operand(3)?)?;
                if neg {
                    return Err("a negated selector".into());
                }
                Ok(Op::Selp {
                    d: self.dst(0)?,
                    a: self.src(1, ty)?,
                    b: self.src(2, ty)?,
                    p,
                })
            }
            "cvt" => {
                self.only(&[
                    "rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi", "ftz", "sat", "relu",
                ])?;
                let t = self.types();
                let [dty, sty] = t[..] else {
                    return Err("expected two types".into());
                };
                if matches!(dty, Ty::F16x2 | Ty::BF16x2) && sty == Ty::F32 && i.operands.len() == 3
                {
                    if !matches!(self.round(), Round::Nearest) {
                        return Err("packed conversions round to nearest only".into());
                    }
                    return Ok(Op::CvtPack {
                        dty,
                        d: self.dst(0)?,
                        a: self.src(1, Ty::F32)?,
                        b: self.src(2, Ty::F32)?,
                        relu: self.has("relu"),
                    });
                }
                if self.has("relu") {
                    return Err(".relu is not supported here".into());
                }
                let directed = matches!(self.round(), Round::Zero | Round::Down | Round::Up);
                if directed && dty == Ty::F64 && sty.size() == 8 && !sty.float() {
                    return Err(
                        "directed rounding of a 64-bit integer to f64 is not supported".into(),
                    );
                }
                self.count(2)?;
                if matches!(dty, Ty::F16x2 | Ty::BF16x2) || matches!(sty, Ty::F16x2 | Ty::BF16x2) {
                    return Err("packed conversions are not supported yet".into());
                }
                Ok(Op::Cvt {
                    dty,
                    sty,
                    round: self.round(),
                    sat,
                    ftz,
                    d: self.dst(0)?,
                    a: self.src(1, sty)?,
                })
            }
            "ld" | "ldu" => {
                self.only(&[
                    "global",
                    "shared",
                    "local",
                    "param",
                    "const",
                    "v2",
                    "v4",
                    "shared::cta",
                ])?;
                self.count(2)?;
                let ty = self.ty()?;
                let (addr, space) = self.addr(1, self.space()?)?;
                let mut d = [0; 4];
                let n = match self.operand(0)? {
                    Operand::Vector(v) => {
                        if v.len() > 4 {
                            return Err("vector of more than 4".into());
                        }
                        for (k, o) in v.iter().enumerate() {
                            d[k] = match o {
                                Operand::Reg(r) if r == "_" => SINK,
                                _ => reg_of(self.l, o)?,
                            };
                        }
                        v.len() as u8
                    }
                    _ => {
                        d[0] = self.dst(0)?;
                        1
                    }
                };
                Ok(Op::Ld {
                    space,
                    ty,
                    n,
                    d,
                    addr,
                })
            }
            "st" => {
                self.only(&[
                    "global",
                    "shared",
                    "local",
                    "param",
                    "v2",
                    "v4",
                    "shared::cta",
                ])?;
                self.count(2)?;
                let ty = self.ty()?;
                let (addr, space) = self.addr(0, self.space()?)?;
                let mut a = [Src::Imm(0); 4];
                let n = match self.operand(1)? {
                    Operand::Vector(v) => {
                        if v.len() > 4 {
                            return Err("vector of more than 4".into());
                        }
                        for (k, o) in v.iter().enumerate() {
                            a[k] = src_of(self.l, o, ty)?;
                        }
                        v.len() as u8
                    }
                    _ => {
                        a[0] = self.src(1, ty)?;
                        1
                    }
                };
                Ok(Op::St {
                    space,
                    ty,
                    n,
                    a,
                    addr,
                })
            }
            "atom" | "red" => {
                self.only(&[
                    "global", "shared", "add", "min", "max", "and", "or", "xor", "exch", "cas",
                    "inc", "dec", "noftz",
                ])?;
                let ty = self.ty()?;
                let op = [
                    ("add", AtomOp::Add),
                    ("min", AtomOp::Min),
                    ("max", AtomOp::Max),
                    ("and", AtomOp::And),
                    ("or", AtomOp::Or),
                    ("xor", AtomOp::Xor),
                    ("exch", AtomOp::Exch),
                    ("cas", AtomOp::Cas),
                    ("inc", AtomOp::Inc),
                    ("dec", AtomOp::Dec),
                ]
                .iter()
                .find(|(n, _)| self.has(n))
                .map(|(_, o)| *o)
                .ok_or("no operation")?;
                if matches!(ty, Ty::F16 | Ty::BF16 | Ty::F16x2 | Ty::BF16x2) {
                    return Err(format!(".{ty:?} atomics are not supported yet"));
                }
                let red = i.opcode == "red";
                let first = usize::from(!red);
                let want = first + 2 + usize::from(op == AtomOp::Cas);
                self.count(want)?;
                let (addr, space) = self.addr(first, self.space()?)?;
                Ok(Op::Atom {
                    space,
                    op,
                    ty,
                    d: if red { None } else { Some(self.dst(0)?) },
                    addr,
                    b: self.src(first + 1, ty)?,
                    c: if op == AtomOp::Cas {
                        self.src(first + 2, ty)?
                    } else {
                        Src::Imm(0)
                    },
                })
            }
            "bra" => {
                self.only(&[])?;
                Ok(Op::Bra { target: 0 })
            }
            "bar" | "barrier" => {
                if i.modifiers.iter().any(|m| m == "warp") {
                    // bar.warp.sync: the lanes of a warp run together here already.
                    return Ok(Op::Nop);
                }
                self.only(&[
                    "sync", "cta", "aligned", "arrive", "red", "and", "or", "popc",
                ])?;
                if self.has("arrive") {
                    return Err("bar.arrive is not supported".into());
                }
                let id_at = usize::from(self.has("red"));
                let id_ok = matches!(i.operands.get(id_at), None | Some(Operand::Int(0)));
                if !id_ok {
                    return Err("named barriers other than 0 are not supported".into());
                }
                if !self.has("red") {
                    if i.operands.len() > 1 {
                        return Err("barriers with a thread count are not supported".into());
                    }
                    return Ok(Op::Bar);
                }
                // bar.red.{and,or}.pred d, 0, [count,] p  /  bar.red.popc.u32 d, 0, [count,] p
                let op = if self.has("popc") {
                    BarRed::Popc
                } else if self.has("and") {
                    BarRed::And
                } else if self.has("or") {
                    BarRed::Or
                } else {
                    return Err("no reduction".into());
                };
                if i.operands.len() != 3 {
                    return Err("barriers with a thread count are not supported".into());
                }
                let (p, negate) = pred_operand(self.l, self.operand(2)?)?;
                Ok(Op::BarRed {
                    op,
                    d: self.dst(0)?,
                    p,
                    negate,
                })
            }
            "nanosleep" => Ok(Op::Nop),
            "membar" | "fence" => Ok(Op::Nop),
            "ret" | "exit" => Ok(Op::Exit),
            "trap" => Ok(Op::Trap),
            "shfl" => {
                self.only(&["up", "down", "bfly", "idx"])?;
                self.count(5)?;
                let mode = if self.has("up") {
                    ShflMode::Up
                } else if self.has("down") {
                    ShflMode::Down
                } else if self.has("bfly") {
                    ShflMode::Bfly
                } else if self.has("idx") {
                    ShflMode::Idx
                } else {
                    return Err("no mode".into());
                };
                let (d, p) = match self.operand(0)? {
                    Operand::Vector(v) if v.len() == 2 => {
                        (reg_of(self.l, &v[0])?, Some(reg_of(self.l, &v[1])?))
                    }
                    _ => (self.dst(0)?, None),
                };
                Ok(Op::Shfl {
                    mode,
                    d,
                    p,
                    a: self.src(1, Ty::U32)?,
                    b: self.src(2, Ty::U32)?,
                    c: self.src(3, Ty::U32)?,
                })
            }
            "vote" => {
                self.only(&["all", "any", "uni", "ballot"])?;
                self.count(3)?;
                let mode = if self.has("all") {
                    VoteMode::All
                } else if self.has("any") {
                    VoteMode::Any
                } else if self.has("uni") {
                    VoteMode::Uni
                } else {
                    VoteMode::Ballot
                };
                let (a, negate) = pred_operand(self.l, self.operand(1)?)?;
                Ok(Op::Vote {
                    mode,
                    d: self.dst(0)?,
                    a,
                    negate,
                })
            }
            "mma" => {
                self.only(&[
                    "row",
                    "col",
                    "satfinite",
                    "m16n8k8",
                    "m16n8k16",
                    "m8n8k16",
                    "m16n8k32",
                ])?;
                if !(self.has("row") && self.has("col")) || self.has("satfinite") {
                    return Err("only .row.col without .satfinite is supported".into());
                }
                let shape = i
                    .modifiers
                    .iter()
                    .find(|m| m.starts_with('m') && m.contains('n') && m.contains('k'))
                    .ok_or("no shape")?;
                let t = self.types();
                let [dt, at, bt, ct] = t[..] else {
                    return Err("expected four types".into());
                };
                let shape = crate::mma::MmaShape::new(shape, dt, at, bt, ct)?;
                let (ra, rb, rc) = shape.regs();
                let vec_of = |n: usize, want: usize| -> R<&Vec<Operand>> {
                    match self.operand(n)? {
                        Operand::Vector(v) if v.len() == want => Ok(v),
                        o => Err(format!(
                            "operand {} must be a vector of {want}, found {o:?}",
                            n + 1
                        )),
                    }
                };
                self.count(4)?;
                let reg_ty = |ty: Ty| if ty == Ty::F32 { Ty::F32 } else { Ty::U32 };
                Ok(Op::Mma {
                    shape,
                    d: vec_of(0, rc)?
                        .iter()
                        .map(|o| sink_or_reg(self.l, o))
                        .collect::<R<_>>()?,
                    a: vec_of(1, ra)?
                        .iter()
                        .map(|o| src_of(self.l, o, Ty::U32))
                        .collect::<R<_>>()?,
                    b: vec_of(2, rb)?
                        .iter()
                        .map(|o| src_of(self.l, o, Ty::U32))
                        .collect::<R<_>>()?,
                    c: vec_of(3, rc)?
                        .iter()
                        .map(|o| src_of(self.l, o, reg_ty(ct)))
                        .collect::<R<_>>()?,
                })
            }
            "ldmatrix" => {
                self.only(&["m8n8", "x1", "x2", "x4", "trans", "shared", "shared::cta"])?;
                self.count(2)?;
                let n = if self.has("x4") {
                    4
                } else if self.has("x2") {
                    2
                } else {
                    1
                };
                if self.ty()? != Ty::U16 {
                    return Err("only .b16 elements are supported".into());
                }
                let d: Vec<Reg> = match self.operand(0)? {
                    Operand::Vector(v) if v.len() == n => {
                        v.iter().map(|o| sink_or_reg(self.l, o)).collect::<R<_>>()?
                    }
                    o if n == 1 => vec![sink_or_reg(self.l, o)?],
                    o => return Err(format!("expected {n} destinations, found {o:?}")),
                };
                let (addr, space) = self.addr(1, self.space()?)?;
                Ok(Op::LdMatrix {
                    space,
                    trans: self.has("trans"),
                    d,
                    addr,
                })
            }
            "wmma" => self.wmma(),
            "movmatrix" => {
                self.only(&["m8n8", "trans"])?;
                self.count(2)?;
                if !self.has("trans") || self.ty()? != Ty::U16 {
                    return Err("only .m8n8.trans.b16 is supported".into());
                }
                Ok(Op::MovMatrix {
                    d: self.dst(0)?,
                    a: self.src(1, Ty::U32)?,
                })
            }
            "activemask" => {
                self.count(1)?;
                Ok(Op::ActiveMask { d: self.dst(0)? })
            }
            other => Err(format!("the instruction {other} is not supported")),
        }
    }
}

fn is_half(ty: Ty) -> bool {
    matches!(ty, Ty::F16x2 | Ty::BF16x2 | Ty::F16 | Ty::BF16)
}

fn part_type(bits: u32) -> R<Ty> {
    Ok(match bits {
        8 => Ty::U8,
        16 => Ty::U16,
        32 => Ty::U32,
        _ => return Err(format!("vector parts of {bits} bits")),
    })
}

fn sink_or_reg(l: &Lowering<'_>, o: &Operand) -> R<Reg> {
    match o {
        Operand::Reg(r) if r == "_" => Ok(SINK),
        o => reg_of(l, o),
    }
}

/// The register slot that sink destinations (`_`) write to: never read.
pub const SINK: Reg = u32::MAX;

fn wide(ty: Ty) -> R<Ty> {
    Ok(match ty {
        Ty::U16 => Ty::U32,
        Ty::S16 => Ty::S32,
        Ty::U32 => Ty::U64,
        Ty::S32 => Ty::S64,
        _ => return Err(format!(".wide of .{ty:?}")),
    })
}

fn reg_of(l: &Lowering<'_>, o: &Operand) -> R<Reg> {
    match o {
        Operand::Reg(r) => match l.lookup(r) {
            Some(Name::Reg(x, _)) => Ok(x),
            _ => Err(format!("{r} is not a register")),
        },
        o => Err(format!("{o:?} is not a register")),
    }
}

fn pred_operand(l: &Lowering<'_>, o: &Operand) -> R<(Src, bool)> {
    match o {
        Operand::NotReg(r) => Ok((Src::Reg(reg_of(l, &Operand::Reg(r.clone()))?), true)),
        Operand::Int(v) => Ok((Src::Imm(u64::from(*v != 0)), false)),
        o => Ok((Src::Reg(reg_of(l, o)?), false)),
    }
}

fn special(name: &str) -> Option<Special> {
    let dim = |s: &str| match s {
        "x" => Some(0),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    let (base, comp) = match name.split_once('.') {
        Some((b, c)) => (b, Some(c)),
        None => (name, None),
    };
    Some(match (base, comp) {
        ("%tid", Some(c)) => Special::Tid(dim(c)?),
        ("%ntid", Some(c)) => Special::Ntid(dim(c)?),
        ("%ctaid", Some(c)) => Special::Ctaid(dim(c)?),
        ("%nctaid", Some(c)) => Special::Nctaid(dim(c)?),
        ("%laneid", None) => Special::LaneId,
        ("%warpid", None) => Special::WarpId,
        ("%nwarpid", None) => Special::NWarpId,
        ("%lanemask_eq", None) => Special::LaneMask(0),
        ("%lanemask_le", None) => Special::LaneMask(1),
        ("%lanemask_lt", None) => Special::LaneMask(2),
        ("%lanemask_ge", None) => Special::LaneMask(3),
        ("%lanemask_gt", None) => Special::LaneMask(4),
        ("%clock" | "%clock64" | "%globaltimer", None) => Special::Clock,
        ("%dynamic_smem_size", None) => Special::DynSmem,
        ("%smid" | "%nsmid" | "%gridid", None) => Special::Zero,
        _ => return None,
    })
}

/// An integer immediate in the register representation of `ty`.
fn int_imm(v: i128, ty: Ty) -> u64 {
    match ty {
        Ty::F32 => u64::from((v as f32).to_bits()),
        Ty::F64 => (v as f64).to_bits(),
        _ => v as u64,
    }
}

fn src_of(l: &Lowering<'_>, o: &Operand, ty: Ty) -> R<Src> {
    Ok(match o {
        Operand::Reg(r) => {
            if let Some(s) = special(r) {
                return Ok(Src::Special(s));
            }
            match l.lookup(r) {
                Some(Name::Reg(x, _)) => Src::Reg(x),
                _ => return Err(format!("unknown register {r}")),
            }
        }
        Operand::Int(v) => Src::Imm(int_imm(*v, ty)),
        Operand::F32Bits(b) => match ty {
            Ty::F64 => Src::Imm(f64::from(f32::from_bits(*b)).to_bits()),
            _ => Src::Imm(u64::from(*b)),
        },
        Operand::F64Bits(b) => match ty {
            Ty::F32 => Src::Imm(u64::from((f64::from_bits(*b) as f32).to_bits())),
            _ => Src::Imm(*b),
        },
        Operand::Float(f) => match ty {
            Ty::F32 => Src::Imm(u64::from((*f as f32).to_bits())),
            _ => Src::Imm(f.to_bits()),
        },
        Operand::Symbol(s) => symbol(l, s, 0)?,
        Operand::SymbolOffset(s, off) => symbol(l, s, *off)?,
        o => return Err(format!("{o:?} cannot be a source here")),
    })
}

fn symbol(l: &Lowering<'_>, s: &str, off: i64) -> R<Src> {
    Ok(match l.lookup(s) {
        Some(Name::Global(g)) => Src::Global(g, off),
        Some(Name::Shared(at)) => Src::Imm((i64::from(at) + off) as u64),
        Some(Name::Local(at)) => Src::Imm((i64::from(at) + off) as u64),
        Some(Name::Param(at)) => Src::Imm((i64::from(at) + off) as u64),
        Some(Name::Frame(_)) => {
            return Err(format!("the address of call variable {s} is not supported"))
        }
        Some(Name::Reg(..)) => return Err(format!("{s} is a register")),
        None => return Err(format!("unknown name {s}")),
    })
}

/// What [`check_instructions`] finds in one kernel.
#[derive(Debug, Default)]
pub struct Checked<'m> {
    /// The instructions of the body in order, each with `None` when the checker accepts
    /// it or why it does not.
    pub instructions: Vec<(&'m ast::Instruction, Option<LowerError>)>,
    /// The declarations in the body it refuses (the names they declare stay unknown).
    pub declarations: Vec<LowerError>,
}

/// For coverage tools: checks every instruction and declaration of the body of kernel `f`
/// of module `m` as [`lower`] does, but goes on past the ones it refuses (the refusal with
/// the lowest line is the one [`lower`] reports). Fails as [`lower`] would for a
/// module-scope variable or a parameter it refuses. Branch targets are not resolved, the
/// bodies of the functions it calls are not checked, and a module variable whose
/// initializer [`lower`] cannot represent does not refuse the instructions that use it.
pub fn check_instructions<'m>(m: &Module, f: &'m ast::Function) -> Result<Checked<'m>, LowerError> {
    let (globals, module_shared, functions) = module_names(m)?;
    let mut l = Lowering::new(&globals, &module_shared, &functions);
    l.declare_params(f)?;
    l.layout_shared(f.body.as_deref().unwrap_or_default())?;
    for v in l.module_shared {
        l.declare_memory(v)?;
    }
    let mut out = Checked::default();
    l.check_block(f.body.as_deref().unwrap_or_default(), &mut out);
    Ok(out)
}

impl Lowering<'_> {
    /// [`Lowering::block`] for [`check_instructions`]: records each verdict and goes on.
    fn check_block<'m>(&mut self, body: &'m [Statement], out: &mut Checked<'m>) {
        for s in body {
            match s {
                Statement::Instr(i) => out.instructions.push((i, self.instruction(i).err())),
                Statement::Block(b) => {
                    self.scopes.push(HashMap::new());
                    self.check_block(b, out);
                    self.scopes.pop();
                }
                other => {
                    if let Err(e) = self.block(std::slice::from_ref(other)) {
                        out.declarations.push(e);
                    }
                }
            }
        }
    }
}
