//! `vgpu install` / `vgpu uninstall` (see the crate documentation).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vgpu_install::{install, uninstall, Options};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Installs vgpu's drop-in CUDA libraries into a guest (and Ollama)"
)]
struct Args {
    #[command(subcommand)]
    what: What,
    /// The root of the system to change (a mounted image, or a test tree).
    #[arg(long, global = true, default_value = "/")]
    root: PathBuf,
    /// The folder holding the built libraries (libcuda.so.1, libcudart.so.12, ...).
    #[arg(long, global = true, default_value = "/usr/lib/vgpu")]
    shims: PathBuf,
    /// An Ollama library folder (holding cuda_v12), besides the usual places.
    #[arg(long, global = true)]
    ollama: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Lays the libraries out (again: updates them).
    Install,
    /// Restores what installing replaced, and removes what it added.
    Uninstall,
}

fn main() {
    let args = Args::parse();
    let opts = Options {
        root: args.root,
        shims: args.shims,
        ollama: args.ollama,
    };
    let r = match args.what {
        What::Install => install(&opts),
        What::Uninstall => uninstall(&opts),
    };
    match r {
        Ok(report) => {
            for line in report.lines {
                println!("{line}");
            }
        }
        Err(e) => {
            eprintln!("vgpu: {e}");
            std::process::exit(1);
        }
    }
}
