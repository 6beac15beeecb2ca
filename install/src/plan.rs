//! What installing and uninstalling do, and the manifest that ties them together.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where and what to install.
#[derive(Clone, Debug)]
pub struct Options {
    /// The root of the system changed.
    pub root: PathBuf,
    /// The folder of built libraries.
    pub shims: PathBuf,
    /// Ollama library folders (holding `cuda_v12`) besides the usual places, absolute or
    /// relative to the root.
    pub ollama: Vec<PathBuf>,
}

/// What was done, a line each.
#[derive(Debug, Default)]
pub struct Report {
    /// The lines.
    pub lines: Vec<String>,
}

/// Why installing or uninstalling stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A library to install is missing from the shims folder.
    #[error("{} is missing (build it with ci/build-shims.sh, or name the folder with --shims)", .0.display())]
    MissingShim(PathBuf),
    /// The manifest is not one this tool wrote.
    #[error("{}: line {line} is not understood: {text:?}", path.display())]
    BadManifest {
        /// The manifest.
        path: PathBuf,
        /// Its line number.
        line: usize,
        /// The line.
        text: String,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One recorded action (paths relative to the root).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// A file that existed was moved to a backup and replaced.
    Replaced { path: String, backup: String },
    /// A file that did not exist was added.
    Added { path: String },
    /// A folder was moved aside.
    Moved { from: String, to: String },
    /// A folder that did not exist was made.
    Made { path: String },
}

impl Entry {
    fn line(&self) -> String {
        match self {
            Entry::Replaced { path, backup } => format!("replaced\t{path}\t{backup}"),
            Entry::Added { path } => format!("added\t{path}"),
            Entry::Moved { from, to } => format!("moved\t{from}\t{to}"),
            Entry::Made { path } => format!("made\t{path}"),
        }
    }

    fn parse(s: &str) -> Option<Entry> {
        let f: Vec<&str> = s.split('\t').collect();
        match f.as_slice() {
            ["replaced", p, b] => Some(Entry::Replaced {
                path: p.to_string(),
                backup: b.to_string(),
            }),
            ["added", p] => Some(Entry::Added {
                path: p.to_string(),
            }),
            ["moved", a, b] => Some(Entry::Moved {
                from: a.to_string(),
                to: b.to_string(),
            }),
            ["made", p] => Some(Entry::Made {
                path: p.to_string(),
            }),
            _ => None,
        }
    }

    /// The path this entry owns.
    fn owns(&self) -> &str {
        match self {
            Entry::Replaced { path, .. } | Entry::Added { path } | Entry::Made { path } => path,
            Entry::Moved { from, .. } => from,
        }
    }
}

const MANIFEST: &str = "var/lib/vgpu/install.manifest";
const BACKUP: &str = "var/lib/vgpu/backup";
const OLLAMA_DIRS: [&str; 3] = [
    "usr/local/lib/ollama",
    "usr/lib/ollama",
    "opt/ollama/lib/ollama",
];
const LIB_DIRS: [&str; 3] = ["usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib"];
const UNITS: [&str; 3] = [
    "etc/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];
const DROP_IN: &str = "etc/systemd/system/ollama.service.d/vgpu.conf";
/// The unit drop-in for Ollama.
const DROP_IN_TEXT: &str = "\
# Written by `vgpu install`: Ollama runs on the vGPU once vgpu-driver serves it.
[Unit]
Wants=vgpu-driver.service
After=vgpu-driver.service

[Service]
Environment=VGPU_SOCKET=/run/vgpu/vgpu.sock
";

struct Run<'a> {
    opts: &'a Options,
    entries: Vec<Entry>,
    report: Report,
}

/// `rel` made relative to the root (absolute paths are taken as inside it).
fn rel(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

impl Run<'_> {
    fn at(&self, rel: &str) -> PathBuf {
        self.opts.root.join(rel)
    }

    fn manifest(&self) -> PathBuf {
        self.at(MANIFEST)
    }

    fn load(opts: &Options) -> Result<Run<'_>, Error> {
        let mut run = Run {
            opts,
            entries: Vec::new(),
            report: Report::default(),
        };
        let path = run.manifest();
        match fs::read_to_string(&path) {
            Ok(text) => {
                for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
                    let e = Entry::parse(l).ok_or_else(|| Error::BadManifest {
                        path: path.clone(),
                        line: i + 1,
                        text: l.to_string(),
                    })?;
                    run.entries.push(e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("reading", &path)(e)),
        }
        Ok(run)
    }

    fn save(&mut self) -> Result<(), Error> {
        let path = self.manifest();
        if self.entries.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", &path)(e)),
                _ => Ok(()),
            };
        }
        self.mkdirs(Path::new(MANIFEST).parent().unwrap_or(Path::new("")))?;
        let text: String = self.entries.iter().map(|e| e.line() + "\n").collect();
        fs::write(&path, text).map_err(io_err("writing", &path))
    }

    /// Makes the folder `rel` and those above it, recording each one made.
    fn mkdirs(&mut self, rel: &Path) -> Result<(), Error> {
        let mut at = PathBuf::new();
        for c in rel.components() {
            at.push(c);
            let full = self.opts.root.join(&at);
            if !full.is_dir() {
                fs::create_dir(&full).map_err(io_err("creating", &full))?;
                self.entries.push(Entry::Made {
                    path: at.to_string_lossy().into_owned(),
                });
            }
        }
        Ok(())
    }

    fn known(&self, rel: &str) -> bool {
        self.entries.iter().any(|e| e.owns() == rel)
    }

    /// Writes `bytes` at `rel`: the first time, what was there goes to the backup.
    fn place(&mut self, rel: &str, bytes: &[u8], mode: u32) -> Result<(), Error> {
        let path = self.at(rel);
        if !self.known(rel) {
            if fs::symlink_metadata(&path).is_ok() {
                let backup = format!("{BACKUP}/{rel}");
                let to = self.at(&backup);
                self.mkdirs(Path::new(&backup).parent().unwrap_or(Path::new("")))?;
                // A rename keeps the file (or link) exactly as it was.
                fs::rename(&path, &to).map_err(io_err("backing up", &path))?;
                self.entries.push(Entry::Replaced {
                    path: rel.to_string(),
                    backup,
                });
                self.report
                    .lines
                    .push(format!("replaced /{rel} (kept in /{BACKUP}/{rel})"));
            } else {
                self.entries.push(Entry::Added {
                    path: rel.to_string(),
                });
                self.report.lines.push(format!("added /{rel}"));
            }
        } else {
            self.report.lines.push(format!("updated /{rel}"));
        }
        // Written beside, then renamed over: a program loading it sees the old or the new.
        self.mkdirs(Path::new(rel).parent().unwrap_or(Path::new("")))?;
        let tmp = path.with_extension("vgpu-new");
        fs::write(&tmp, bytes).map_err(io_err("writing", &tmp))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .map_err(io_err("setting the mode of", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("installing", &path))
    }

    fn shim(&self, name: &str) -> Result<Vec<u8>, Error> {
        let p = self.opts.shims.join(name);
        fs::read(&p).map_err(|_| Error::MissingShim(p))
    }
}

/// The Ollama library folders under the root (relative), those given first.
fn ollama_dirs(opts: &Options) -> Vec<String> {
    let mut dirs: Vec<String> = opts
        .ollama
        .iter()
        .map(|p| rel(p).to_string_lossy().into_owned())
        .collect();
    for d in OLLAMA_DIRS {
        if opts.root.join(d).join("cuda_v12").is_dir() && !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_string());
        }
    }
    dirs
}

/// Runs a command of the installed system (root `/` only); a line of the report either way.
fn system(report: &mut Report, program: &str, args: &[&str]) {
    match std::process::Command::new(program).args(args).status() {
        Ok(s) if s.success() => report
            .lines
            .push(format!("ran {program} {}", args.join(" "))),
        Ok(s) => report.lines.push(format!(
            "warning: {program} {} exited with {s}",
            args.join(" ")
        )),
        Err(e) => report.lines.push(format!("note: {program} not run ({e})")),
    }
}

/// Lays the libraries out (see the crate documentation).
pub fn install(opts: &Options) -> Result<Report, Error> {
    let mut run = Run::load(opts)?;
    let libcuda = run.shim("libcuda.so.1")?;
    let nvml = run.shim("libnvidia-ml.so.1")?;
    let cudart = run.shim("libcudart.so.12")?;
    let cublas = run.shim("libcublas.so.12")?;
    let cublaslt = run.shim("libcublasLt.so.12")?;

    let libdir = LIB_DIRS
        .iter()
        .find(|d| opts.root.join(d).is_dir())
        .copied()
        .unwrap_or(LIB_DIRS[0]);
    run.place(&format!("{libdir}/libcuda.so.1"), &libcuda, 0o755)?;
    run.place(&format!("{libdir}/libnvidia-ml.so.1"), &nvml, 0o755)?;

    for dir in ollama_dirs(opts) {
        let v12 = format!("{dir}/cuda_v12");
        let listing =
            fs::read_dir(opts.root.join(&v12)).map_err(io_err("reading", &opts.root.join(&v12)))?;
        let mut names: Vec<String> = listing
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // Files this tool wrote before (installing again) count as well.
        for e in &run.entries {
            if let Some(n) = e.owns().strip_prefix(&format!("{v12}/")) {
                if !names.iter().any(|x| x == n) {
                    names.push(n.to_string());
                }
            }
        }
        for (prefix, bytes) in [
            ("libcudart.so.12", &cudart),
            ("libcublasLt.so.12", &cublaslt),
            ("libcublas.so.12", &cublas),
        ] {
            let mine: Vec<&String> = names.iter().filter(|n| n.starts_with(prefix)).collect();
            if mine.is_empty() {
                run.place(&format!("{v12}/{prefix}"), bytes, 0o755)?;
            }
            for n in mine {
                run.place(&format!("{v12}/{n}"), bytes, 0o755)?;
            }
        }
        let v13 = format!("{dir}/cuda_v13");
        if opts.root.join(&v13).is_dir() && !run.known(&v13) {
            let to = format!("{dir}/cuda_v13.vgpu-disabled");
            fs::rename(opts.root.join(&v13), opts.root.join(&to))
                .map_err(io_err("moving aside", &opts.root.join(&v13)))?;
            run.report.lines.push(format!(
                "moved /{v13} aside to /{to} (its CUDA 13 runtime cannot drive a vGPU, and Ollama prefers it)"
            ));
            run.entries.push(Entry::Moved { from: v13, to });
        }
    }

    if UNITS
        .iter()
        .any(|u| opts.root.join(u).join("ollama.service").is_file())
    {
        run.place(DROP_IN, DROP_IN_TEXT.as_bytes(), 0o644)?;
    }
    run.save()?;
    if opts.root == Path::new("/") {
        system(&mut run.report, "ldconfig", &[]);
        system(&mut run.report, "systemctl", &["daemon-reload"]);
        system(
            &mut run.report,
            "systemctl",
            &["enable", "vgpu-driver.service"],
        );
    }
    Ok(run.report)
}

/// Undoes what the manifest records, newest first.
pub fn uninstall(opts: &Options) -> Result<Report, Error> {
    let mut run = Run::load(opts)?;
    if run.entries.is_empty() {
        run.report.lines.push("nothing to undo".into());
        return Ok(run.report);
    }
    // Folders made are removed last, once the files in them (the manifest too) are gone.
    let made: Vec<String> = run
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::Made { path } => Some(path.clone()),
            _ => None,
        })
        .collect();
    run.entries.retain(|e| !matches!(e, Entry::Made { .. }));
    while let Some(e) = run.entries.pop() {
        match &e {
            Entry::Replaced { path, backup } => {
                let (p, b) = (run.at(path), run.at(backup));
                fs::rename(&b, &p).map_err(io_err("restoring", &p))?;
                run.report.lines.push(format!("restored /{path}"));
            }
            Entry::Added { path } => {
                let p = run.at(path);
                match fs::remove_file(&p) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err("removing", &p)(e))
                    }
                    _ => run.report.lines.push(format!("removed /{path}")),
                }
            }
            Entry::Moved { from, to } => {
                fs::rename(run.at(to), run.at(from)).map_err(io_err("moving back", &run.at(to)))?;
                run.report
                    .lines
                    .push(format!("moved /{to} back to /{from}"));
            }
            Entry::Made { .. } => {}
        }
        // Saved after each step (with the folders still listed): an interrupted uninstall
        // resumes where it stopped.
        let rest = run.entries.clone();
        run.entries
            .extend(made.iter().map(|p| Entry::Made { path: p.clone() }));
        run.save()?;
        run.entries = rest;
    }
    let path = run.manifest();
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("removing", &path)(e)),
        _ => {}
    }
    for p in made.iter().rev() {
        // Only when empty: something put there since stays, with its folder.
        let _ = fs::remove_dir(run.at(p));
    }
    if opts.root == Path::new("/") {
        system(&mut run.report, "ldconfig", &[]);
        system(&mut run.report, "systemctl", &["daemon-reload"]);
    }
    Ok(run.report)
}
