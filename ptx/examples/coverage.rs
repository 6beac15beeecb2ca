//! Coverage of the PTX checker against a real library: which instruction forms in the PTX
//! of a CUDA host library (for example ggml's `libggml-cuda.so`) [`vgpu_ptx::lower`]
//! accepts, how many kernels each unsupported form blocks, and why kernels are refused.
//!
//! ```text
//! cargo run --release -p vgpu-ptx --example coverage -- LIB.so [--sm 90] \
//!     [--source "where LIB.so came from"] [--write ptx/COVERAGE.md] [--dump DIR] [--top 30]
//! ```
//!
//! It reads the host ELF's `.nv_fatbin` section, takes the PTX a device of compute
//! capability `--sm` would use (per container, the highest `compute_XX` not above it), and
//! parses and lowers each module. An instruction form is the opcode with its modifiers in
//! order (`ld.global.nc.v4.u32`); operands are not part of it. Each instruction of each
//! kernel is checked on its own ([`vgpu_ptx::lower::check_instructions`]), so a form is
//! classified even where an earlier instruction already refuses the kernel. A summary goes
//! to stdout; `--write` writes the Markdown table; `--dump` writes each module's PTX to
//! `DIR/module_N.ptx`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use vgpu_fatbin::EntryKind;
use vgpu_ptx::ast::{Function, Instruction, Operand};
use vgpu_ptx::lower::{self, LowerError};

struct Args {
    lib: String,
    sm: u32,
    source: Option<String>,
    write: Option<String>,
    dump: Option<String>,
    top: usize,
}

fn usage() -> ! {
    eprintln!("usage: coverage LIB.so [--sm 90] [--source TEXT] [--write FILE.md] [--dump DIR] [--top 30]");
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        lib: String::new(),
        sm: 90,
        source: None,
        write: None,
        dump: None,
        top: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match x.as_str() {
            "--sm" => a.sm = value().parse().unwrap_or_else(|_| usage()),
            "--source" => a.source = Some(value()),
            "--write" => a.write = Some(value()),
            "--dump" => a.dump = Some(value()),
            "--top" => a.top = value().parse().unwrap_or_else(|_| usage()),
            "-h" | "--help" => usage(),
            _ if a.lib.is_empty() && !x.starts_with('-') => a.lib = x,
            _ => usage(),
        }
    }
    if a.lib.is_empty() {
        usage()
    }
    a
}

/// What is known of one instruction form.
#[derive(Default)]
struct Form {
    /// Instructions of this form in kernel bodies.
    occurrences: u64,
    /// Of those, the ones the checker refuses.
    refused: u64,
    /// Kernels it appears in.
    kernels: u64,
    /// Kernels in which at least one instruction of this form is refused.
    blocked: u64,
    /// Kernels refused for this form alone.
    only_blocker: u64,
    /// Kernels whose first refused instruction has this form.
    first_blocker: u64,
    /// Why it is refused, with counts.
    reasons: HashMap<String, u64>,
    /// A refused declaration in a body rather than an instruction form.
    declaration: bool,
}

fn form(i: &Instruction) -> String {
    let mut t = i.opcode.clone();
    for m in &i.modifiers {
        t.push('.');
        t.push_str(m);
    }
    t
}

/// The message of a refused instruction without its leading form.
fn reason(form: &str, e: &LowerError) -> String {
    e.message
        .strip_prefix(form)
        .and_then(|r| r.strip_prefix(": "))
        .unwrap_or(&e.message)
        .to_string()
}

#[derive(Default)]
struct Totals {
    containers: usize,
    entries: BTreeMap<String, usize>,
    picked: BTreeMap<String, usize>,
    /// Modules `ptx_for` returns for each of [`DEVICE_SMS`].
    by_sm: Vec<(u32, usize)>,
    ptx_bytes: usize,
    modules: usize,
    parse_failed: Vec<String>,
    module_failed: Vec<String>,
    kernels: usize,
    accepted: usize,
    refused: usize,
    param_refused: usize,
    declarations_refused: u64,
    mismatched: usize,
    functions: usize,
    function_instructions: usize,
    instructions: u64,
    instructions_refused: u64,
    /// Kernels that call each function.
    callers: BTreeMap<String, usize>,
    /// Kernels of at most [`STUB_LEN`] instructions that call a function and trap.
    stubs: usize,
    extract: Duration,
    parse: Duration,
    lower: Duration,
    check: Duration,
}

fn main() {
    let a = args();
    let t0 = Instant::now();
    let elf = std::fs::read(&a.lib).unwrap_or_else(|e| {
        eprintln!("{}: {e}", a.lib);
        std::process::exit(1)
    });
    let fatbin = vgpu_fatbin::host_fatbin_section(&elf).unwrap_or_else(|e| {
        eprintln!("{}: {e}", a.lib);
        std::process::exit(1)
    });
    drop(elf);
    let mut t = Totals::default();
    let entries = vgpu_fatbin::list_entries(&fatbin).expect("the fatbin lists");
    let mut best: BTreeMap<usize, (u32, bool)> = BTreeMap::new();
    for e in &entries {
        let name = match e.kind {
            EntryKind::Ptx => format!("compute_{}{}", e.sm, if e.arch_specific { "a" } else { "" }),
            EntryKind::Elf => format!("sm_{}{}", e.sm, if e.arch_specific { "a" } else { "" }),
            EntryKind::Bundle => "unexpanded bundle".to_string(),
            EntryKind::Other(k) => format!("kind {k:#x}"),
        };
        *t.entries.entry(name).or_default() += 1;
        // ptx_for's documented rule: the highest compute_XX not above sm; compute_XXa only
        // when XX is sm. What ptx_for returns is counted separately.
        let usable = if e.arch_specific {
            e.sm == a.sm
        } else {
            e.sm <= a.sm
        };
        if e.kind == EntryKind::Ptx && usable {
            let b = best.entry(e.container).or_insert((e.sm, e.arch_specific));
            *b = (*b).max((e.sm, e.arch_specific));
        }
    }
    t.containers = entries
        .iter()
        .map(|e| e.container)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    for (sm, arch) in best.values() {
        let name = format!("compute_{sm}{}", if *arch { "a" } else { "" });
        *t.picked.entry(name).or_default() += 1;
    }
    let te = Instant::now();
    let modules = vgpu_fatbin::ptx_for(&fatbin, a.sm).expect("PTX from the fatbin");
    t.extract = te.elapsed();
    t.modules = modules.len();
    // What ptx_for hands devices of common compute capabilities.
    for sm in DEVICE_SMS {
        let n = if sm == a.sm {
            modules.len()
        } else {
            vgpu_fatbin::ptx_for(&fatbin, sm).map_or(0, |m| m.len())
        };
        t.by_sm.push((sm, n));
    }
    drop(fatbin);

    let mut forms: HashMap<String, Form> = HashMap::new();
    let mut refusals: HashMap<String, u64> = HashMap::new();
    if let Some(dir) = &a.dump {
        std::fs::create_dir_all(dir).expect("the dump directory");
        for (n, text) in modules.iter().enumerate() {
            std::fs::write(format!("{dir}/module_{n}.ptx"), text).expect("a dumped module");
        }
    }
    let mut blocked_by: Vec<Vec<String>> = Vec::new();
    for (n, text) in modules.iter().enumerate() {
        t.ptx_bytes += text.len();
        let tp = Instant::now();
        let parsed = vgpu_ptx::parse(text);
        t.parse += tp.elapsed();
        let m = match parsed {
            Ok(m) => m,
            Err(e) => {
                t.parse_failed.push(format!("module {n}: {e}"));
                continue;
            }
        };
        let tl = Instant::now();
        let lowered = lower::lower(&m);
        t.lower += tl.elapsed();
        let prog = match lowered {
            Ok(p) => p,
            Err(e) => {
                t.module_failed.push(format!("module {n}: {e}"));
                continue;
            }
        };
        t.accepted += prog.kernels.len();
        t.refused += prog.refused.len();
        for e in prog.refused.values() {
            *refusals.entry(normalize(&e.message)).or_default() += 1;
        }
        let tc = Instant::now();
        for f in &m.functions {
            let Some(body) = &f.body else { continue };
            if !f.entry {
                t.functions += 1;
                t.function_instructions += count_instructions(body);
                continue;
            }
            t.kernels += 1;
            check_kernel(&m, f, &prog, &mut forms, &mut blocked_by, &mut t);
        }
        t.check += tc.elapsed();
    }
    let total = t0.elapsed();

    let mut rows: Vec<(&String, &Form)> = forms.iter().filter(|f| !f.1.declaration).collect();
    rows.sort_by(|x, y| y.1.occurrences.cmp(&x.1.occurrences).then(x.0.cmp(y.0)));
    let mut blockers: Vec<(&String, &Form)> = forms.iter().filter(|f| f.1.refused > 0).collect();
    blockers.sort_by(|x, y| {
        (y.1.blocked, y.1.refused)
            .cmp(&(x.1.blocked, x.1.refused))
            .then(x.0.cmp(y.0))
    });
    // Kernels accepted once the blockers down to each row (in this order) are supported.
    let rank: HashMap<&str, usize> = blockers
        .iter()
        .enumerate()
        .map(|(k, b)| (b.0.as_str(), k))
        .collect();
    let mut unblocked_at = vec![0usize; blockers.len()];
    for set in &blocked_by {
        let last = set
            .iter()
            .map(|f| rank[f.as_str()])
            .max()
            .expect("non-empty");
        unblocked_at[last] += 1;
    }
    let cumulative: Vec<usize> = unblocked_at
        .iter()
        .scan(t.accepted, |acc, n| {
            *acc += n;
            Some(*acc)
        })
        .collect();
    let mut reasons: Vec<(&String, &u64)> = refusals.iter().collect();
    reasons.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));

    print_summary(&a, &t, &rows, &blockers, &cumulative, total);
    if let Some(path) = &a.write {
        let md = markdown(&a, &t, &rows, &blockers, &cumulative, &reasons);
        std::fs::write(path, md).unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            std::process::exit(1)
        });
        println!("wrote {path}");
    }
}

fn count_instructions(body: &[vgpu_ptx::ast::Statement]) -> usize {
    use vgpu_ptx::ast::Statement;
    body.iter()
        .map(|s| match s {
            Statement::Instr(_) => 1,
            Statement::Block(b) => count_instructions(b),
            _ => 0,
        })
        .sum()
}

fn check_kernel(
    m: &vgpu_ptx::ast::Module,
    f: &Function,
    prog: &vgpu_ptx::ir::Program,
    forms: &mut HashMap<String, Form>,
    blocked_by: &mut Vec<Vec<String>>,
    t: &mut Totals,
) {
    let accepted = prog.kernels.contains_key(&f.name);
    let checked = match lower::check_instructions(m, f) {
        Ok(c) => c,
        Err(_) => {
            t.param_refused += 1;
            t.mismatched += usize::from(accepted);
            return;
        }
    };
    let mut called: Vec<String> = Vec::new();
    for (i, _) in &checked.instructions {
        if i.opcode == "call" {
            if let Some(Operand::Symbol(target)) =
                i.operands.iter().find(|o| matches!(o, Operand::Symbol(_)))
            {
                if !called.contains(target) {
                    called.push(target.clone());
                }
            }
        }
    }
    for c in &called {
        *t.callers.entry(c.clone()).or_default() += 1;
    }
    if !called.is_empty()
        && checked.instructions.len() <= STUB_LEN
        && checked.instructions.iter().any(|(i, _)| i.opcode == "trap")
    {
        t.stubs += 1;
    }
    // Per form in this kernel: (occurrences, refused).
    let mut here: HashMap<String, (u64, u64)> = HashMap::new();
    // The refusal with the lowest line: what lower() reports.
    let mut first: Option<(u32, String)> = None;
    let mut note_first = |line: u32, name: &str| {
        if first.as_ref().is_none_or(|(l, _)| line < *l) {
            first = Some((line, name.to_string()));
        }
    };
    for (i, verdict) in &checked.instructions {
        let name = form(i);
        let entry = forms.entry(name.clone()).or_default();
        entry.occurrences += 1;
        t.instructions += 1;
        let h = here.entry(name.clone()).or_default();
        h.0 += 1;
        if let Some(e) = verdict {
            entry.refused += 1;
            *entry
                .reasons
                .entry(normalize(&reason(&name, e)))
                .or_default() += 1;
            t.instructions_refused += 1;
            h.1 += 1;
            note_first(e.line, &name);
        }
    }
    for e in &checked.declarations {
        let space = e.message.split_whitespace().next().unwrap_or_default();
        let name = format!("{DECLARATION}{space}");
        let entry = forms.entry(name.clone()).or_default();
        entry.declaration = true;
        entry.occurrences += 1;
        entry.refused += 1;
        *entry.reasons.entry(normalize(&e.message)).or_default() += 1;
        t.declarations_refused += 1;
        let h = here.entry(name.clone()).or_default();
        h.0 += 1;
        h.1 += 1;
        note_first(e.line, &name);
    }
    let blocking: Vec<String> = here
        .iter()
        .filter(|h| h.1 .1 > 0)
        .map(|h| h.0.clone())
        .collect();
    for (name, (_, refused)) in &here {
        let entry = forms.get_mut(name).expect("counted above");
        entry.kernels += 1;
        if *refused > 0 {
            entry.blocked += 1;
            if blocking.len() == 1 {
                entry.only_blocker += 1;
            }
        }
    }
    if let Some((_, name)) = &first {
        forms.get_mut(name).expect("counted above").first_blocker += 1;
    }
    if !blocking.is_empty() {
        blocked_by.push(blocking);
    }
    // lower() refuses a kernel exactly when something in its body is refused, apart from
    // the checks after the body (branch targets).
    if accepted == first.is_some() {
        t.mismatched += 1;
    }
}

/// The most instructions of a kernel counted as a stub that only reports an error (ggml's
/// `NO_DEVICE_CODE`: `vprintf` of "no device code compatible with CUDA arch", then `trap`).
const STUB_LEN: usize = 40;

/// The prefix of the pseudo-forms that stand for refused declarations in a body.
const DECLARATION: &str = "(declaration) ";

/// A refusal message with register names and operand spellings made generic, so that the
/// same reason groups: `Reg("%rs12")` → `Reg(..)`, `%rd7` → `%rdN`.
fn normalize(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(at) = rest.find(['"', '%']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(q) = tail.strip_prefix('"') {
            // A quoted name from an operand's Debug form.
            match q.find('"') {
                Some(end) => {
                    out.push_str("..");
                    rest = &q[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            let name_end = tail[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .map_or(tail.len(), |e| e + 1);
            let name = &tail[..name_end];
            let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
            out.push_str(stem);
            if stem.len() < name.len() {
                out.push('N');
            }
            rest = &tail[name_end..];
        }
    }
    out.push_str(rest);
    out
}

fn support(f: &Form) -> String {
    if f.refused == 0 {
        "yes".into()
    } else if f.refused == f.occurrences {
        "no".into()
    } else {
        format!("partly ({} of {} refused)", f.refused, f.occurrences)
    }
}

/// The most frequent refusal reason of a form.
fn main_reason(f: &Form) -> String {
    let mut r: Vec<(&String, &u64)> = f.reasons.iter().collect();
    r.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
    match r.as_slice() {
        [] => String::new(),
        [(only, _)] => (*only).clone(),
        [(most, n), rest @ ..] => format!(
            "{most} ({n} times; {} other reasons: {})",
            rest.len(),
            rest.iter()
                .take(3)
                .map(|(r, n)| format!("{r} ({n})"))
                .chain((rest.len() > 3).then(|| "…".to_string()))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn print_summary(
    a: &Args,
    t: &Totals,
    rows: &[(&String, &Form)],
    blockers: &[(&String, &Form)],
    cumulative: &[usize],
    total: Duration,
) {
    println!("library: {}", a.lib);
    println!(
        "fatbin: {} containers; entries: {}",
        t.containers,
        list(&t.entries)
    );
    println!(
        "highest PTX not above sm {}, per container: {}; ptx_for returned {} modules",
        a.sm,
        list(&t.picked),
        t.modules
    );
    if t.modules < t.picked.values().sum() {
        println!("warning: {}", short_note(a.sm));
    }
    println!("modules ptx_for returns by device sm: {}", by_sm(t));
    println!(
        "modules: {} ({:.1} MB of PTX); parse failures: {}; module-scope failures: {}",
        t.modules,
        t.ptx_bytes as f64 / 1e6,
        t.parse_failed.len(),
        t.module_failed.len()
    );
    for e in t.parse_failed.iter().chain(&t.module_failed) {
        println!("  {e}");
    }
    println!(
        "kernels: {}; accepted {}; refused {} ({} on a parameter); checker/lower disagreements: {}",
        t.kernels, t.accepted, t.refused, t.param_refused, t.mismatched
    );
    println!(
        "kernels calling a function: {}; error stubs (a call and a trap, at most {STUB_LEN} instructions): {}",
        list(&t.callers),
        t.stubs
    );
    println!(
        "non-kernel functions with a body: {} ({} instructions, not checked by lower)",
        t.functions, t.function_instructions
    );
    let supported = rows.iter().filter(|r| r.1.refused == 0).count();
    println!(
        "instructions: {} ({} refused); refused body declarations: {}; forms: {} ({} supported, {} not or partly)",
        t.instructions,
        t.instructions_refused,
        t.declarations_refused,
        rows.len(),
        supported,
        rows.len() - supported
    );
    println!(
        "time: extract+decompress {}, parse {}, lower {}, parse+lower {}, per-instruction check {}, total {}",
        ms(t.extract),
        ms(t.parse),
        ms(t.lower),
        ms(t.parse + t.lower),
        ms(t.check),
        ms(total)
    );
    println!("top unsupported forms by kernels blocked:");
    println!("  kernels  only  first  cumul.  refused  form: why");
    for ((name, f), c) in blockers.iter().zip(cumulative).take(a.top) {
        println!(
            "  {:7}  {:4}  {:5}  {:6}  {:7}  {name}: {}",
            f.blocked,
            f.only_blocker,
            f.first_blocker,
            c,
            f.refused,
            main_reason(f)
        );
    }
}

/// The last commit that changed the checker (`ptx/src`), as git tells it in the current
/// directory (with a note when `ptx/src` has uncommitted changes); `None` outside a git
/// checkout.
fn checker_revision() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = git(&["log", "-1", "--format=%h", "--", "ptx/src"])?;
    let dirty = git(&["status", "--porcelain", "--", "ptx/src"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{rev} with uncommitted changes in ptx/src")
    } else {
        rev
    })
}

/// Compute capabilities for which the report says how many modules `ptx_for` returns.
const DEVICE_SMS: [u32; 8] = [75, 80, 86, 89, 90, 100, 120, 121];

fn by_sm(t: &Totals) -> String {
    t.by_sm
        .iter()
        .map(|(sm, n)| format!("{sm}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// When `ptx_for` returns less PTX than the containers have at or below `sm`.
fn short_note(sm: u32) -> String {
    format!(
        "ptx_for(_, {sm}) returned PTX for fewer containers than have a compute_XX not above \
         {sm} (it takes PTX of the same major version only); run with --sm set to that \
         compute_XX to see that PTX"
    )
}

fn list(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn markdown(
    a: &Args,
    t: &Totals,
    rows: &[(&String, &Form)],
    blockers: &[(&String, &Form)],
    cumulative: &[usize],
    reasons: &[(&String, &u64)],
) -> String {
    let lib = std::path::Path::new(&a.lib)
        .file_name()
        .map_or(a.lib.clone(), |n| n.to_string_lossy().into_owned());
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "<!-- Generated by ptx/examples/coverage.rs; do not edit by hand. -->\n"
    );
    let _ = writeln!(w, "# PTX coverage of the checker: `{lib}`\n");
    let _ = writeln!(
        w,
        "Generated file. Regenerate with\n\n```sh\ncargo run --release -p vgpu-ptx --example coverage -- \\\n    \
         LIB.so --sm {} --source \"{}\" --write ptx/COVERAGE.md\n```\n",
        a.sm,
        a.source.as_deref().unwrap_or("…")
    );
    let _ = writeln!(
        w,
        "An instruction form is the opcode with its modifiers in order; operands are not part \
         of it. Each instruction of each kernel is checked on its own \
         (`vgpu_ptx::lower::check_instructions`), so a form is classified even where an earlier \
         instruction already refuses its kernel. A refused declaration in a kernel body counts \
         as a pseudo-form `(declaration) .Space`; the instructions that use the names it would \
         declare are then refused as unknown names. In the table of unsupported forms, \
         \"blocked\" counts the kernels in which at least one instruction of the form is \
         refused; \"only\" those refused for that form alone; \"first\" those whose first \
         refusal it is (what `lower` reports); the next column, the kernels accepted once it \
         and every form above it are supported.\n"
    );
    let _ = writeln!(w, "## Totals\n");
    if let Some(src) = &a.source {
        let _ = writeln!(w, "- Source: {src}");
    }
    let _ = writeln!(w, "- Library: `{lib}`");
    if let Some(rev) = checker_revision() {
        let _ = writeln!(w, "- Checker: `ptx/src` as of commit {rev}");
    }
    let _ = writeln!(
        w,
        "- Fatbin: {} containers; entries: {}",
        t.containers,
        list(&t.entries)
    );
    let _ = writeln!(
        w,
        "- Highest PTX not above sm {}, per container: {}; `vgpu_fatbin::ptx_for(_, {})` \
         returned {} modules",
        a.sm,
        list(&t.picked),
        a.sm,
        t.modules
    );
    if t.modules < t.picked.values().sum() {
        let _ = writeln!(w, "  - Note: {}", short_note(a.sm));
    }
    let _ = writeln!(
        w,
        "- Modules `vgpu_fatbin::ptx_for` returns by device compute capability: {}",
        by_sm(t)
    );
    let _ = writeln!(
        w,
        "- Modules: {} ({:.1} MB of PTX text); parse failures: {}; module-scope failures: {}",
        t.modules,
        t.ptx_bytes as f64 / 1e6,
        t.parse_failed.len(),
        t.module_failed.len()
    );
    for e in t.parse_failed.iter().chain(&t.module_failed) {
        let _ = writeln!(w, "  - {}", cell(e));
    }
    let _ = writeln!(
        w,
        "- Kernels: {}; accepted: {}; refused: {}",
        t.kernels, t.accepted, t.refused
    );
    let _ = writeln!(
        w,
        "- Kernels that call a function, by callee: {}; of them error stubs (a call and a \
         `trap`, at most {STUB_LEN} instructions — ggml's `NO_DEVICE_CODE` for what the PTX's \
         architecture lacks): {}",
        list(&t.callers),
        t.stubs
    );
    if t.functions > 0 {
        let _ = writeln!(
            w,
            "- Non-kernel functions with a body: {} ({} instructions; not counted below)",
            t.functions, t.function_instructions
        );
    }
    let supported = rows.iter().filter(|r| r.1.refused == 0).count();
    let partly = rows
        .iter()
        .filter(|r| r.1.refused > 0 && r.1.refused < r.1.occurrences)
        .count();
    let _ = writeln!(
        w,
        "- Instructions in kernels: {}; refused: {}; refused declarations in kernel bodies: {}",
        t.instructions, t.instructions_refused, t.declarations_refused
    );
    let _ = writeln!(
        w,
        "- Instruction forms: {}; supported: {}; partly: {}; not supported: {}\n",
        rows.len(),
        supported,
        partly,
        rows.len() - supported - partly
    );

    let _ = writeln!(w, "## Instruction forms by occurrences\n");
    let _ = writeln!(w, "| form | occurrences | kernels | supported |");
    let _ = writeln!(w, "|---|---:|---:|---|");
    for (name, f) in rows {
        let _ = writeln!(
            w,
            "| `{name}` | {} | {} | {} |",
            f.occurrences,
            f.kernels,
            support(f)
        );
    }

    let _ = writeln!(w, "\n## Unsupported forms by kernels blocked\n");
    let _ = writeln!(
        w,
        "| form | blocked | only | first | accepted with this and those above | refused occurrences | why |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---|");
    for ((name, f), c) in blockers.iter().zip(cumulative) {
        let _ = writeln!(
            w,
            "| `{name}` | {} | {} | {} | {c} | {} | {} |",
            f.blocked,
            f.only_blocker,
            f.first_blocker,
            f.refused,
            cell(&main_reason(f))
        );
    }

    let _ = writeln!(
        w,
        "\n## Refusal reasons (what `lower` reports per kernel)\n"
    );
    let _ = writeln!(w, "| kernels | reason |");
    let _ = writeln!(w, "|---:|---|");
    for (r, n) in reasons {
        let _ = writeln!(w, "| {n} | {} |", cell(r));
    }
    s
}
